//! The EDID the box shows an HDMI source through its HDMI-to-CSI bridge (TC358743). A source
//! reads it to choose what to send, and a bridge without one shows the source nothing at all.
//!
//! Either the shipped one — `scripts/make-edid.py` wrote it, offering only what the Pi's two
//! CSI-2 lanes carry (1080p30 and below; the file is also in the image as
//! `/usr/share/onair/hdmi-edid.bin`) — or the owner's file named by `source.edid`, checked here
//! as an EDID before anything uses it: whole 128-byte blocks, at most 256 of them, the base
//! block's header and extension count, and every block's checksum.

use super::load::{FileRefusal, read_regular_file};
use std::fmt;
use std::path::Path;

/// One EDID block.
pub const EDID_BLOCK: usize = 128;
/// The base block's extension count is one byte: 255 extensions at most.
pub const MAX_EDID_BLOCKS: usize = 256;
/// A file larger than this is not an EDID and is refused before it is read.
pub const MAX_EDID_BYTES: u64 = (EDID_BLOCK * MAX_EDID_BLOCKS) as u64;

const HEADER: [u8; 8] = [0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00];

static SHIPPED: &[u8] =
    include_bytes!("../../board/common/rootfs-overlay/usr/share/onair/hdmi-edid.bin");

/// What the shipped EDID offers, for the log and `onair status`.
pub const SHIPPED_OFFERS: &str =
    "1080p30/25/24, 720p60/50/30/25/24, 576p50, 480p60, 640x480p60; LPCM stereo 48 kHz";

/// A checked EDID: whole blocks, each summing to zero, the base block first.
#[derive(Clone, PartialEq, Eq)]
pub struct Edid(Vec<u8>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EdidError {
    #[error("is empty")]
    Empty,
    #[error("is {0} bytes: an EDID is whole blocks of 128 bytes")]
    NotBlocks(usize),
    #[error("has {0} blocks, more than an EDID can have ({MAX_EDID_BLOCKS})")]
    TooManyBlocks(usize),
    #[error("does not start with the EDID header (00 FF FF FF FF FF FF 00)")]
    Header,
    #[error("block {block} has a wrong checksum (its bytes sum to {sum:#04x} modulo 256, not 0)")]
    Checksum { block: usize, sum: u8 },
    #[error("its base block announces {announced} extension block(s) but {present} follow")]
    Extensions { announced: usize, present: usize },
}

impl Edid {
    /// Checks `bytes` as an EDID.
    pub fn parse(bytes: Vec<u8>) -> Result<Edid, EdidError> {
        if bytes.is_empty() {
            return Err(EdidError::Empty);
        }
        if !bytes.len().is_multiple_of(EDID_BLOCK) {
            return Err(EdidError::NotBlocks(bytes.len()));
        }
        let blocks = bytes.len() / EDID_BLOCK;
        if blocks > MAX_EDID_BLOCKS {
            return Err(EdidError::TooManyBlocks(blocks));
        }
        if bytes[..8] != HEADER {
            return Err(EdidError::Header);
        }
        for (block, chunk) in bytes.chunks(EDID_BLOCK).enumerate() {
            let sum = chunk.iter().fold(0u8, |a, b| a.wrapping_add(*b));
            if sum != 0 {
                return Err(EdidError::Checksum { block, sum });
            }
        }
        let announced = usize::from(bytes[126]);
        if announced != blocks - 1 {
            return Err(EdidError::Extensions {
                announced,
                present: blocks - 1,
            });
        }
        Ok(Edid(bytes))
    }

    /// The EDID the image ships (see the module's comment).
    pub fn shipped() -> Edid {
        Edid::parse(SHIPPED.to_vec()).expect("the shipped EDID is checked by its unit test")
    }

    /// Reads and checks an EDID file (a regular file of at most [`MAX_EDID_BYTES`]).
    pub fn read(path: &Path) -> Result<Edid, String> {
        let bytes = read_regular_file(path, MAX_EDID_BYTES).map_err(|refusal| match refusal {
            FileRefusal::TooLarge(size) => {
                format!("is {size} bytes, more than an EDID can be ({MAX_EDID_BYTES})")
            }
            other => other.to_string(),
        })?;
        Edid::parse(bytes).map_err(|e| e.to_string())
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether `held`, what a receiver reports it holds, is this EDID. A receiver with CEC may
    /// write the physical address it gives its input into the HDMI block of what it reports
    /// (vivid does, as do the adv76xx bridges), fixing that block's checksum: those three
    /// bytes are not compared.
    pub fn matches(&self, held: &[u8]) -> bool {
        if held.len() != self.0.len() {
            return false;
        }
        let skip = phys_addr_offset(&self.0)
            .map(|at| [at, at + 1, (at / EDID_BLOCK) * EDID_BLOCK + EDID_BLOCK - 1]);
        self.0
            .iter()
            .zip(held)
            .enumerate()
            .all(|(i, (a, b))| a == b || skip.is_some_and(|s| s.contains(&i)))
    }

    pub fn blocks(&self) -> usize {
        self.0.len() / EDID_BLOCK
    }
}

/// Where the HDMI physical address sits: the two bytes after the IEEE OUI 00-0C-03 of the HDMI
/// vendor-specific data block in a CTA-861 extension block.
fn phys_addr_offset(bytes: &[u8]) -> Option<usize> {
    for (n, block) in bytes.chunks(EDID_BLOCK).enumerate().skip(1) {
        if block[0] != 0x02 {
            continue;
        }
        let end = usize::from(block[2]).clamp(4, EDID_BLOCK - 1);
        let mut i = 4;
        while i < end {
            let tag = block[i] >> 5;
            let len = usize::from(block[i] & 0x1F);
            if tag == 3
                && len >= 5
                && i + 5 < EDID_BLOCK
                && block[i + 1..i + 4] == [0x03, 0x0C, 0x00]
            {
                return Some(n * EDID_BLOCK + i + 4);
            }
            i += 1 + len;
        }
    }
    None
}

impl fmt::Debug for Edid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Edid({} blocks)", self.blocks())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A timing the shipped EDID offers: active size, frames per second (the CTA-861 VIC's
    /// integer rate), and where it came from.
    #[derive(Debug, Clone, Copy, PartialEq)]
    struct Offered {
        width: u32,
        height: u32,
        fps: f64,
    }

    /// The CTA-861 VICs the shipped EDID may name, as the standard defines them.
    fn vic(code: u8) -> Offered {
        let (width, height, fps) = match code {
            1 => (640, 480, 60.0),
            2 | 3 => (720, 480, 60.0),
            4 => (1280, 720, 60.0),
            17 | 18 => (720, 576, 50.0),
            19 => (1280, 720, 50.0),
            32 => (1920, 1080, 24.0),
            33 => (1920, 1080, 25.0),
            34 => (1920, 1080, 30.0),
            60 => (1280, 720, 24.0),
            61 => (1280, 720, 25.0),
            62 => (1280, 720, 30.0),
            other => panic!("VIC {other} is not one this test knows"),
        };
        Offered { width, height, fps }
    }

    /// An 18-byte detailed timing descriptor (a pixel clock of 0 marks a display descriptor).
    fn dtd(d: &[u8]) -> Option<Offered> {
        let clock_hz = f64::from(u16::from_le_bytes([d[0], d[1]])) * 10_000.0;
        if clock_hz == 0.0 {
            return None;
        }
        let hact = u32::from(d[2]) | (u32::from(d[4] >> 4) << 8);
        let hblank = u32::from(d[3]) | (u32::from(d[4] & 0xF) << 8);
        let vact = u32::from(d[5]) | (u32::from(d[7] >> 4) << 8);
        let vblank = u32::from(d[6]) | (u32::from(d[7] & 0xF) << 8);
        assert_eq!(d[17] & 0x80, 0, "an interlaced detailed timing");
        Some(Offered {
            width: hact,
            height: vact,
            fps: clock_hz / f64::from((hact + hblank) * (vact + vblank)),
        })
    }

    /// Every timing in the base block's detailed descriptors, established timings and the CTA
    /// extension's video data block, and whether the CTA block carries an HDMI vendor block
    /// and LPCM at 48 kHz only.
    fn decode(edid: &Edid) -> (Vec<Offered>, bool, Vec<u8>) {
        let b = edid.bytes();
        let mut offered: Vec<Offered> = b[54..126].chunks(18).filter_map(dtd).collect();
        assert_eq!(b[35], 0x20, "established timings: 640x480@60 only");
        assert_eq!(
            (b[36], b[37]),
            (0, 0),
            "established timings: 640x480@60 only"
        );
        assert!(
            b[38..54].chunks(2).all(|s| s == [1, 1]),
            "no standard timings"
        );
        offered.push(vic(1));
        let cta = &b[128..256];
        assert_eq!((cta[0], cta[1]), (0x02, 0x03), "a CTA-861 revision 3 block");
        let dtd_start = usize::from(cta[2]);
        assert!(
            cta[dtd_start..127].iter().all(|&x| x == 0),
            "no detailed timings in the CTA block"
        );
        let (mut hdmi, mut audio) = (false, Vec::new());
        let mut i = 4;
        while i < dtd_start {
            let tag = cta[i] >> 5;
            let len = usize::from(cta[i] & 0x1F);
            let body = &cta[i + 1..i + 1 + len];
            match tag {
                1 => audio.extend_from_slice(body),
                2 => offered.extend(body.iter().map(|&v| vic(v & 0x7F))),
                3 => hdmi = body[..3] == [0x03, 0x0C, 0x00],
                _ => {}
            }
            i += 1 + len;
        }
        (offered, hdmi, audio)
    }

    #[test]
    fn the_shipped_edid_offers_only_what_two_csi_lanes_carry() {
        let edid = Edid::shipped();
        assert_eq!(edid.blocks(), 2);
        let (offered, hdmi, audio) = decode(&edid);
        // UYVY is 16 bits a pixel; the tc358743 overlay's default link frequency gives two
        // lanes 2 x 972 Mbit/s. 1080p30 (995 Mbit/s of picture) is the most the Pi's
        // documentation promises for two lanes: nothing may ask for more pixels a second.
        let limit = 1920.0 * 1080.0 * 30.0 * 1.001;
        for o in &offered {
            let rate = f64::from(o.width * o.height) * o.fps;
            assert!(rate <= limit, "{o:?} is more than 1080p30's pixel rate");
        }
        let has = |w, h, fps: f64| {
            offered
                .iter()
                .any(|o| o.width == w && o.height == h && (o.fps - fps).abs() < 0.1)
        };
        for (w, h, fps) in [
            (1920, 1080, 30.0),
            (1920, 1080, 25.0),
            (1920, 1080, 24.0),
            (1280, 720, 60.0),
            (1280, 720, 50.0),
        ] {
            assert!(has(w, h, fps), "{w}x{h}p{fps} is not offered: {offered:?}");
        }
        // The first detailed timing is the preferred one: 1080p30.
        let preferred = dtd(&edid.bytes()[54..72]).expect("a detailed timing");
        assert_eq!((preferred.width, preferred.height), (1920, 1080));
        assert!((preferred.fps - 30.0).abs() < 0.01, "{preferred:?}");
        assert!(
            hdmi,
            "an HDMI vendor block, or sources send DVI without sound"
        );
        assert_eq!(
            audio,
            vec![0x09, 0x04, 0x07],
            "LPCM stereo at 48 kHz only, 16/20/24 bit"
        );
    }

    #[test]
    fn edids_are_checked_block_by_block() {
        let good = Edid::shipped().bytes().to_vec();
        assert_eq!(Edid::parse(vec![]), Err(EdidError::Empty));
        assert_eq!(
            Edid::parse(good[..200].to_vec()),
            Err(EdidError::NotBlocks(200))
        );
        let mut bad = good.clone();
        bad[0] = 1;
        bad[127] = bad[127].wrapping_sub(1);
        assert_eq!(Edid::parse(bad), Err(EdidError::Header));
        let mut bad = good.clone();
        bad[200] ^= 0x10;
        assert!(matches!(
            Edid::parse(bad),
            Err(EdidError::Checksum { block: 1, .. })
        ));
        // The base block alone, still announcing its extension.
        assert_eq!(
            Edid::parse(good[..128].to_vec()),
            Err(EdidError::Extensions {
                announced: 1,
                present: 0
            })
        );
        assert_eq!(
            Edid::parse(vec![0; 257 * EDID_BLOCK]),
            Err(EdidError::TooManyBlocks(257))
        );
        assert_eq!(Edid::parse(good.clone()).map(|e| e.blocks()), Ok(2));
    }

    #[test]
    fn a_receiver_may_report_its_own_physical_address() {
        let shipped = Edid::shipped();
        let at = phys_addr_offset(shipped.bytes()).expect("an HDMI block");
        assert_eq!(&shipped.bytes()[at..at + 2], &[0x10, 0x00], "1.0.0.0");
        // As vivid reports it: physical address 0.0.0.0, the block's checksum fixed.
        let mut held = shipped.bytes().to_vec();
        held[at] = 0;
        held[255] = held[255].wrapping_add(0x10);
        assert!(Edid::parse(held.clone()).is_ok());
        assert!(shipped.matches(&held));
        assert!(shipped.matches(shipped.bytes()));
        // Anything else differing, or another length, is another EDID.
        let mut other = held.clone();
        other[200] ^= 1;
        assert!(!shipped.matches(&other));
        assert!(!shipped.matches(&held[..128]));
    }

    #[test]
    fn files_are_read_within_limits() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("edid.bin");
        std::fs::write(&file, Edid::shipped().bytes()).unwrap();
        assert_eq!(Edid::read(&file), Ok(Edid::shipped()));
        std::fs::write(&file, b"not an edid").unwrap();
        assert!(Edid::read(&file).unwrap_err().contains("whole blocks"));
        let big = dir.path().join("big.bin");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_EDID_BYTES + 1)
            .unwrap();
        assert!(Edid::read(&big).unwrap_err().contains("more than an EDID"));
        assert!(
            Edid::read(Path::new("/dev/zero"))
                .unwrap_err()
                .contains("device")
        );
        assert!(Edid::read(dir.path()).unwrap_err().contains("directory"));
    }
}
