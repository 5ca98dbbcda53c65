//! The few V4L2 ioctls the box needs besides what `v4l2src` does: the digital-video timings of
//! an HDMI bridge (TC358743 and friends: query what the source sends, set it before capturing)
//! and the `SOURCE_CHANGE` event (signal lost or back, new timings).
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

#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<RawEvent>() == 136);
const _: () = assert!(std::mem::size_of::<RawDvTimings>() == 132);
const _: () = assert!(std::mem::size_of::<RawSubscription>() == 32);

nix::ioctl_read!(vidioc_g_input, b'V', 38, nix::libc::c_int);
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
    }
}
