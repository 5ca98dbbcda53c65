//! The few V4L2 ioctls the box needs besides what `v4l2src` does: which driver a node belongs
//! to, the EDID and the digital-video timings of an HDMI bridge (TC358743 and friends: give the
//! source an EDID, query what it sends, set it before capturing) and the `SOURCE_CHANGE` event
//! (signal lost or back, new timings). The same ioctls work on a video node that passes them
//! to its bridge (the Pi 4's unicam in video-node mode, vivid) and on the bridge's own subdev
//! node (`/dev/v4l-subdevN`, the Pi 5's media-controller capture).
//!
//! Written to the kernel's documented interface (`linux/videodev2.h`, V4L2 "Digital Video
//! Timings" and "Event Interface"). The structures are kept as byte arrays of the exact
//! kernel size and read at documented offsets, so no packed-struct field is ever referenced.

use nix::errno::Errno;
use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// `struct v4l2_dv_timings`: a `__u32 type` and a 128-byte union, packed (132 bytes).
#[repr(C)]
pub struct RawDvTimings([u8; 132]);

/// `struct v4l2_event_subscription`: type, id, flags, reserved[5].
#[repr(C)]
pub struct RawSubscription {
    kind: u32,
    id: u32,
    flags: u32,
    reserved: [u32; 5],
}

/// `struct v4l2_event` on a 64-bit ABI: the union holds an `__s64`, so it starts at offset 8.
#[repr(C)]
pub struct RawEvent {
    kind: u32,
    u: [u64; 8],
    pending: u32,
    sequence: u32,
    timestamp: nix::libc::timespec,
    id: u32,
    reserved: [u32; 8],
}

/// `struct v4l2_capability`: driver[16], card[32], bus_info[32], version, capabilities,
/// device_caps, reserved[3].
#[repr(C)]
pub struct RawCapability([u8; 104]);

/// `struct v4l2_edid`: pad, start_block, blocks, reserved[5], then a pointer to the blocks.
#[repr(C)]
pub struct RawEdid {
    pad: u32,
    start_block: u32,
    blocks: u32,
    reserved: [u32; 5],
    edid: *mut u8,
}

#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<RawEvent>() == 136);
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<RawEdid>() == 40);
const _: () = assert!(std::mem::size_of::<RawCapability>() == 104);
const _: () = assert!(std::mem::size_of::<RawDvTimings>() == 132);
const _: () = assert!(std::mem::size_of::<RawSubscription>() == 32);

nix::ioctl_read!(vidioc_querycap, b'V', 0, RawCapability);
nix::ioctl_read!(vidioc_g_input, b'V', 38, nix::libc::c_int);
nix::ioctl_readwrite!(vidioc_g_edid, b'V', 40, RawEdid);
nix::ioctl_readwrite!(vidioc_s_edid, b'V', 41, RawEdid);
nix::ioctl_readwrite!(vidioc_s_dv_timings, b'V', 87, RawDvTimings);
nix::ioctl_readwrite!(vidioc_g_dv_timings, b'V', 88, RawDvTimings);
nix::ioctl_read!(vidioc_dqevent, b'V', 89, RawEvent);
nix::ioctl_write_ptr!(vidioc_subscribe_event, b'V', 90, RawSubscription);
nix::ioctl_read!(vidioc_query_dv_timings, b'V', 99, RawDvTimings);

const V4L2_DV_BT_656_1120: u32 = 0;
const V4L2_EVENT_SOURCE_CHANGE: u32 = 5;

/// The BT.656/1120 timings of a digital video signal, as the kernel describes them.
#[derive(Clone, PartialEq, Eq)]
pub struct DvTimings {
    raw: [u8; 132],
}

impl DvTimings {
    fn u32_at(&self, offset: usize) -> u32 {
        let b: [u8; 4] = self.raw[offset..offset + 4]
            .try_into()
            .expect("a 4-byte slice of a fixed-size array");
        u32::from_ne_bytes(b)
    }

    fn u64_at(&self, offset: usize) -> u64 {
        let b: [u8; 8] = self.raw[offset..offset + 8]
            .try_into()
            .expect("an 8-byte slice of a fixed-size array");
        u64::from_ne_bytes(b)
    }

    pub fn width(&self) -> u32 {
        self.u32_at(4)
    }

    pub fn height(&self) -> u32 {
        self.u32_at(8)
    }

    pub fn interlaced(&self) -> bool {
        self.u32_at(12) != 0
    }

    /// Frames (or fields, interlaced) per second, from the pixel clock and the totals.
    pub fn rate(&self) -> f64 {
        let pixelclock = self.u64_at(20) as f64;
        let htotal = self.width() + self.u32_at(28) + self.u32_at(32) + self.u32_at(36);
        let vtotal = self.height() + self.u32_at(40) + self.u32_at(44) + self.u32_at(48);
        let total = f64::from(htotal) * f64::from(vtotal);
        if total == 0.0 {
            0.0
        } else {
            pixelclock / total
        }
    }
}

impl fmt::Display for DvTimings {
    /// As v4l2-ctl and people write it: `1920x1080p60.00`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scan = if self.interlaced() { 'i' } else { 'p' };
        write!(
            f,
            "{}x{}{scan}{:.2}",
            self.width(),
            self.height(),
            self.rate()
        )
    }
}

impl fmt::Debug for DvTimings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DvTimings({self})")
    }
}

/// What the device says about its input signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalQuery {
    /// A digital-video device locked to a signal with these timings.
    Locked(DvTimings),
    /// A digital-video device without a usable signal, and why (`ENOLINK`: no cable or no
    /// signal, `ENOLCK`: cannot lock, `ERANGE`: out of range).
    NoSignal(&'static str),
    /// Not a digital-video device (a webcam, a camera sensor): nothing to query or set.
    NotDv,
}

/// VIDIOC_QUERYCAP: the name of the driver behind a video node (`unicam`, `rp1-cfe`,
/// `vivid`, `uvcvideo`).
pub fn driver(fd: &OwnedFd) -> Result<String, Errno> {
    let mut cap = RawCapability([0; 104]);
    // SAFETY: the fd is open and `cap` has the size the ioctl number encodes.
    unsafe { vidioc_querycap(fd.as_raw_fd(), &mut cap) }?;
    let name = &cap.0[..16];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Ok(String::from_utf8_lossy(&name[..end]).into_owned())
}

/// What a node holds for an EDID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdidRead {
    /// These blocks (128 bytes each).
    Blocks(Vec<u8>),
    /// An EDID receiver with no EDID set (an HDMI source sees no sink).
    Empty,
    /// Not a node that takes an EDID (a webcam, a camera sensor).
    Unsupported,
}

/// The largest EDID asked for: what an EDID can be (255 extensions).
const MAX_EDID_BLOCKS: u32 = 256;

/// VIDIOC_G_EDID for `pad` (a video node's input index, or a subdev's pad).
pub fn read_edid(fd: &OwnedFd, pad: u32) -> Result<EdidRead, Errno> {
    // Asked for no blocks, the driver says how many it holds.
    let mut probe = RawEdid {
        pad,
        start_block: 0,
        blocks: 0,
        reserved: [0; 5],
        edid: std::ptr::null_mut(),
    };
    // SAFETY: the fd is open; with blocks = 0 the kernel writes only the struct itself.
    match unsafe { vidioc_g_edid(fd.as_raw_fd(), &mut probe) } {
        Ok(_) => {}
        Err(Errno::ENODATA) => return Ok(EdidRead::Empty),
        Err(Errno::ENOTTY | Errno::EINVAL) => return Ok(EdidRead::Unsupported),
        Err(e) => return Err(e),
    }
    let blocks = probe.blocks.min(MAX_EDID_BLOCKS);
    if blocks == 0 {
        return Ok(EdidRead::Empty);
    }
    let mut buffer = vec![0u8; blocks as usize * 128];
    let mut get = RawEdid {
        pad,
        start_block: 0,
        blocks,
        reserved: [0; 5],
        edid: buffer.as_mut_ptr(),
    };
    // SAFETY: `buffer` holds `blocks` blocks of 128 bytes and outlives the call; the kernel
    // writes at most that many (it lowers `blocks` when it holds fewer).
    match unsafe { vidioc_g_edid(fd.as_raw_fd(), &mut get) } {
        Ok(_) => {}
        Err(Errno::ENODATA) => return Ok(EdidRead::Empty),
        Err(e) => return Err(e),
    }
    buffer.truncate(get.blocks.min(blocks) as usize * 128);
    Ok(if buffer.is_empty() {
        EdidRead::Empty
    } else {
        EdidRead::Blocks(buffer)
    })
}

/// Why an EDID could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EdidWriteError {
    #[error("the device takes at most {max} EDID blocks, this EDID has {blocks}")]
    TooLarge { max: u32, blocks: u32 },
    #[error("{}", .0.desc())]
    Ioctl(Errno),
}

/// VIDIOC_S_EDID: gives `pad` these blocks (a bridge raises its hot-plug line for the source,
/// which then reads them). Fails with EBUSY while the node streams.
pub fn write_edid(fd: &OwnedFd, pad: u32, blocks: &[u8]) -> Result<(), EdidWriteError> {
    debug_assert!(blocks.len().is_multiple_of(128));
    let count = (blocks.len() / 128) as u32;
    let mut copy = blocks.to_vec();
    let mut set = RawEdid {
        pad,
        start_block: 0,
        blocks: count,
        reserved: [0; 5],
        edid: copy.as_mut_ptr(),
    };
    // SAFETY: `copy` holds `count` blocks and outlives the call; the kernel only reads them.
    match unsafe { vidioc_s_edid(fd.as_raw_fd(), &mut set) } {
        Ok(_) => Ok(()),
        // The kernel says how many it takes.
        Err(Errno::E2BIG) => Err(EdidWriteError::TooLarge {
            max: set.blocks,
            blocks: count,
        }),
        Err(e) => Err(EdidWriteError::Ioctl(e)),
    }
}

/// Opens a device node for ioctls only (no streaming).
pub fn open(path: &Path) -> Result<OwnedFd, Errno> {
    use nix::fcntl::{OFlag, open};
    use nix::sys::stat::Mode;
    open(
        path,
        OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// VIDIOC_QUERY_DV_TIMINGS: what the source sends now.
pub fn query_signal(fd: &OwnedFd) -> Result<SignalQuery, Errno> {
    let mut t = RawDvTimings([0; 132]);
    // SAFETY: the fd is open and `t` has the size the ioctl number encodes.
    match unsafe { vidioc_query_dv_timings(fd.as_raw_fd(), &mut t) } {
        Ok(_) => Ok(SignalQuery::Locked(DvTimings { raw: t.0 })),
        Err(Errno::ENOLINK) => Ok(SignalQuery::NoSignal("no signal")),
        Err(Errno::ENOLCK) => Ok(SignalQuery::NoSignal("cannot lock to the signal")),
        Err(Errno::ERANGE) => Ok(SignalQuery::NoSignal("signal out of range")),
        Err(Errno::ENOTTY | Errno::ENODATA | Errno::EINVAL) => Ok(SignalQuery::NotDv),
        Err(e) => Err(e),
    }
}

/// VIDIOC_G_DV_TIMINGS: what the receiver is set to.
pub fn current_timings(fd: &OwnedFd) -> Result<DvTimings, Errno> {
    let mut t = RawDvTimings([0; 132]);
    // SAFETY: as in `query_signal`.
    unsafe { vidioc_g_dv_timings(fd.as_raw_fd(), &mut t) }?;
    Ok(DvTimings { raw: t.0 })
}

/// VIDIOC_S_DV_TIMINGS: makes the receiver capture these timings (fails with EBUSY while
/// someone streams from it).
pub fn set_timings(fd: &OwnedFd, timings: &DvTimings) -> Result<(), Errno> {
    let mut t = RawDvTimings(timings.raw);
    debug_assert_eq!(
        u32::from_ne_bytes(t.0[0..4].try_into().expect("4 bytes")),
        V4L2_DV_BT_656_1120
    );
    // SAFETY: as in `query_signal`.
    unsafe { vidioc_s_dv_timings(fd.as_raw_fd(), &mut t) }?;
    Ok(())
}

/// The input the device captures from (events are subscribed per input).
pub fn current_input(fd: &OwnedFd) -> Result<u32, Errno> {
    let mut input: nix::libc::c_int = 0;
    // SAFETY: the fd is open; the ioctl writes one int.
    unsafe { vidioc_g_input(fd.as_raw_fd(), &mut input) }?;
    Ok(input.max(0) as u32)
}

/// Subscribes this file handle to `SOURCE_CHANGE` events of `input`.
pub fn subscribe_source_change(fd: &OwnedFd, input: u32) -> Result<(), Errno> {
    let sub = RawSubscription {
        kind: V4L2_EVENT_SOURCE_CHANGE,
        id: input,
        flags: 0,
        reserved: [0; 5],
    };
    // SAFETY: the fd is open and `sub` is a complete v4l2_event_subscription.
    unsafe { vidioc_subscribe_event(fd.as_raw_fd(), &sub) }?;
    Ok(())
}

/// Dequeues one event; `Ok(None)` when none is pending. `Some(true)` for a source change.
pub fn dequeue_event(fd: &OwnedFd) -> Result<Option<bool>, Errno> {
    // SAFETY: an all-zero v4l2_event is a valid value to be overwritten by the kernel.
    let mut ev: RawEvent = unsafe { std::mem::zeroed() };
    // SAFETY: the fd is open and `ev` has the size the ioctl number encodes.
    match unsafe { vidioc_dqevent(fd.as_raw_fd(), &mut ev) } {
        Ok(_) => Ok(Some(ev.kind == V4L2_EVENT_SOURCE_CHANGE)),
        Err(Errno::ENOENT | Errno::EAGAIN) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CEA-861 1280x720p60 as the kernel's V4L2_DV_BT_CEA_1280X720P60 fills it in.
    fn cea_720p60() -> DvTimings {
        let mut raw = [0u8; 132];
        let mut put = |off: usize, v: u32| raw[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        put(0, V4L2_DV_BT_656_1120);
        put(4, 1280);
        put(8, 720);
        put(12, 0);
        put(28, 110);
        put(32, 40);
        put(36, 220);
        put(40, 5);
        put(44, 5);
        put(48, 20);
        raw[20..28].copy_from_slice(&74_250_000u64.to_ne_bytes());
        DvTimings { raw }
    }

    #[test]
    fn timings_read_size_and_rate_at_the_documented_offsets() {
        let t = cea_720p60();
        assert_eq!((t.width(), t.height(), t.interlaced()), (1280, 720, false));
        assert!((t.rate() - 60.0).abs() < 0.01, "{}", t.rate());
        assert_eq!(t.to_string(), "1280x720p60.00");
    }

    #[test]
    fn ioctl_numbers_match_videodev2_h() {
        // _IOR('V', 99, struct v4l2_dv_timings) etc., as the kernel headers compute them.
        assert_eq!(
            nix::request_code_read!(b'V', 99, std::mem::size_of::<RawDvTimings>()),
            0x8084_5663
        );
        assert_eq!(
            nix::request_code_readwrite!(b'V', 87, std::mem::size_of::<RawDvTimings>()),
            0xc084_5657
        );
        assert_eq!(
            nix::request_code_write!(b'V', 90, std::mem::size_of::<RawSubscription>()),
            0x4020_565a
        );
        #[cfg(target_pointer_width = "64")]
        assert_eq!(
            nix::request_code_read!(b'V', 89, std::mem::size_of::<RawEvent>()),
            0x8088_5659
        );
        // VIDIOC_G_EDID / VIDIOC_S_EDID on a 64-bit ABI, and VIDIOC_QUERYCAP.
        #[cfg(target_pointer_width = "64")]
        {
            assert_eq!(
                nix::request_code_readwrite!(b'V', 40, std::mem::size_of::<RawEdid>()),
                0xc028_5628
            );
            assert_eq!(
                nix::request_code_readwrite!(b'V', 41, std::mem::size_of::<RawEdid>()),
                0xc028_5629
            );
        }
        assert_eq!(
            nix::request_code_read!(b'V', 0, std::mem::size_of::<RawCapability>()),
            0x8068_5600
        );
    }
}
