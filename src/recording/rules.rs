//! The lane's choices, apart from its I/O (pure; time passed in): where to record, when a new
//! file starts, when a disk that failed may be tried again.

use crate::config::RecordTo;
use std::time::Duration;
use tokio::time::Instant;

/// The two places a recording can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    /// The USB disk labelled `record.usb_label`.
    Usb,
    /// `record.dir` on the data partition.
    Data,
}

impl Dest {
    pub fn as_str(self) -> &'static str {
        match self {
            Dest::Usb => "usb",
            Dest::Data => "data",
        }
    }
}

/// A file on vfat cannot pass 4 GiB; a new one starts well before (at 1 Mbit/s an hour is
/// 450 MB, so only a long `segment_s` at a high bitrate gets here).
pub const MAX_FILE_BYTES: u64 = 2 << 30;

/// After a fault on the data partition (full, stalled, failing), recording is tried again
/// this long after.
pub const RETRY_AFTER: Duration = Duration::from_secs(15);

/// Where to record now: the USB disk when it is wanted and usable, else the data partition
/// when it is usable (the fallback), else nowhere.
pub fn choose(
    to: RecordTo,
    usb_usable: bool,
    data_usable_at: Option<Instant>,
    now: Instant,
) -> Option<Dest> {
    let data = data_usable_at.is_none_or(|at| now >= at);
    match to {
        RecordTo::Usb if usb_usable => Some(Dest::Usb),
        _ if data => Some(Dest::Data),
        _ => None,
    }
}

/// Whether a new file starts at this picture: only at a key frame, once the file has run its
/// length or grown too large, or when the recording is to move to another place.
pub fn roll_due(
    keyframe: bool,
    ran: Duration,
    segment: Duration,
    bytes: u64,
    moving: bool,
) -> bool {
    // Key frames an exact interval apart land a rounding error short of it (60 frames of
    // 33.333 ms are 1.99998 s): within half a frame counts as there.
    let ran = ran + ROUNDING;
    keyframe && (moving || ran >= segment || bytes >= MAX_FILE_BYTES)
}

const ROUNDING: Duration = Duration::from_millis(15);

/// A USB disk that failed (an I/O error, a stall, no room) is not mounted again until it has
/// been unplugged: its label's link must disappear first. Otherwise a broken stick would be
/// mounted, fail and be dropped every few seconds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UsbGate {
    blocked: bool,
}

impl UsbGate {
    pub fn failed(&mut self) {
        self.blocked = true;
    }

    /// Whether the disk, `present` or not, may be used now.
    pub fn may_use(&mut self, present: bool) -> bool {
        if !present {
            self.blocked = false;
        }
        present && !self.blocked
    }

    pub fn blocked(&self) -> bool {
        self.blocked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usb_first_when_wanted_and_usable_else_the_data_partition() {
        let now = Instant::now();
        assert_eq!(choose(RecordTo::Usb, true, None, now), Some(Dest::Usb));
        assert_eq!(choose(RecordTo::Usb, false, None, now), Some(Dest::Data));
        assert_eq!(choose(RecordTo::Data, true, None, now), Some(Dest::Data));
        let later = now + RETRY_AFTER;
        assert_eq!(choose(RecordTo::Data, false, Some(later), now), None);
        assert_eq!(
            choose(RecordTo::Usb, true, Some(later), now),
            Some(Dest::Usb)
        );
        assert_eq!(
            choose(RecordTo::Data, false, Some(later), later),
            Some(Dest::Data),
            "tried again once the wait is over"
        );
    }

    #[test]
    fn files_roll_at_key_frames_only() {
        let seg = Duration::from_secs(300);
        assert!(!roll_due(true, Duration::from_secs(299), seg, 0, false));
        assert!(roll_due(
            true,
            Duration::from_micros(299_999_980),
            seg,
            0,
            false
        ));
        assert!(roll_due(true, seg, seg, 0, false));
        assert!(!roll_due(false, Duration::from_secs(400), seg, 0, false));
        assert!(roll_due(true, Duration::ZERO, seg, MAX_FILE_BYTES, false));
        assert!(roll_due(true, Duration::ZERO, seg, 0, true), "moving");
        assert!(!roll_due(false, Duration::ZERO, seg, 0, true));
    }

    #[test]
    fn a_failed_usb_disk_waits_for_an_unplug() {
        let mut gate = UsbGate::default();
        assert!(gate.may_use(true));
        gate.failed();
        assert!(!gate.may_use(true), "still the broken disk");
        assert!(!gate.may_use(false));
        assert!(gate.may_use(true), "plugged in again");
    }
}
