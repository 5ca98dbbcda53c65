//! What the operating system says of its clock, and the one change the daemon makes to it:
//! the kernel's NTP status, timesyncd's flag, the image's build date, the record of how the
//! time was set, and stepping the clock forward. Tests put [`TimeSource`] fakes in its place.

use super::rule::{KernelClock, SetBy};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// systemd advances the clock at boot to this file's mtime (set when the image is built).
pub const FLOOR_FILE: &str = "/usr/lib/clock-epoch";
/// timesyncd touches this once it has reached an NTP server.
pub const TIMESYNCD_FLAG: &str = "/run/systemd/timesync/synchronized";
/// In the state directory: how the time was last set (the boot's `onair-clock` writes it first).
pub const RECORD_FILE: &str = "clock-set";
/// A floor when the image has none: 2026-12-01, before this code was written. No time before
/// it can be right.
pub const FALLBACK_FLOOR: Duration = Duration::from_secs(1_796_083_200);
/// The record holds a name and an origin.
const MAX_RECORD_BYTES: u64 = 1024;

/// The box's clock as the daemon reads and changes it.
pub trait TimeSource: Send + Sync {
    fn now(&self) -> SystemTime;
    /// Sets the clock (the caller decided it moves forward).
    fn step_to(&self, to: SystemTime) -> Result<(), String>;
    /// The kernel's NTP status; `None` when it cannot be read.
    fn kernel(&self) -> Option<KernelClock>;
}

/// The real clock: `CLOCK_REALTIME` and `adjtimex`. Setting it needs CAP_SYS_TIME (the daemon
/// runs as root on the box).
pub struct SystemTimeSource;

impl TimeSource for SystemTimeSource {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn step_to(&self, to: SystemTime) -> Result<(), String> {
        let since = to
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_err(|_| "a time before 1970".to_string())?;
        nix::time::clock_settime(
            nix::time::ClockId::CLOCK_REALTIME,
            nix::sys::time::TimeSpec::from_duration(since),
        )
        .map_err(|e| e.desc().to_string())
    }

    fn kernel(&self) -> Option<KernelClock> {
        // SAFETY: a timex is plain integers, so all zeroes is a valid value; with `modes` 0
        // adjtimex only reads the kernel's state into it.
        let mut t: nix::libc::timex = unsafe { std::mem::zeroed() };
        // SAFETY: `t` is a valid, writable timex for the call's duration.
        let state = unsafe { nix::libc::adjtimex(&mut t) };
        (state >= 0).then_some(KernelClock {
            status: t.status,
            maxerror: t.maxerror,
        })
    }
}

/// Where the facts are read and the record written.
#[derive(Debug, Clone)]
pub struct ClockFiles {
    pub floor: PathBuf,
    pub timesyncd_flag: PathBuf,
    pub record: PathBuf,
}

impl ClockFiles {
    /// The box's paths, with the record in the daemon's state directory.
    pub fn system(state_dir: &Path) -> ClockFiles {
        ClockFiles {
            floor: PathBuf::from(FLOOR_FILE),
            timesyncd_flag: PathBuf::from(TIMESYNCD_FLAG),
            record: state_dir.join(RECORD_FILE),
        }
    }

    /// The image's build date (never before [`FALLBACK_FLOOR`]).
    pub fn floor(&self) -> SystemTime {
        let fallback = SystemTime::UNIX_EPOCH + FALLBACK_FLOOR;
        std::fs::metadata(&self.floor)
            .and_then(|m| m.modified())
            .map_or(fallback, |t| t.max(fallback))
    }

    pub fn timesyncd_synchronized(&self) -> bool {
        self.timesyncd_flag.exists()
    }

    /// How the time was set, if the record says and is one we wrote: a link is not followed, a
    /// FIFO not waited on, a large file not read.
    pub fn read_record(&self) -> Option<(SetBy, Option<String>)> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits())
            .open(&self.record)
            .ok()?;
        let meta = f.metadata().ok()?;
        if !meta.file_type().is_file() || meta.len() > MAX_RECORD_BYTES {
            return None;
        }
        let mut bytes = Vec::new();
        f.take(MAX_RECORD_BYTES).read_to_end(&mut bytes).ok()?;
        let record: Record = serde_json::from_slice(&bytes).ok()?;
        let set_by = SetBy::parse(&record.set_by)?;
        let from = record
            .from
            .map(|f| crate::secret::printable(&f).chars().take(200).collect());
        Some((set_by, from))
    }

    /// Records how the time was set, for `onair status` after a daemon restart. A new file
    /// beside the record (created exclusively, never through a link) renamed over it.
    pub fn write_record(&self, set_by: SetBy, from: Option<&str>) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(&Record {
            set_by: set_by.as_str().to_string(),
            from: from.map(str::to_string),
        })
        .map_err(std::io::Error::other)?;
        let dir = self
            .record
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = dir.join(format!(".{RECORD_FILE}.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&tmp)
            .and_then(|mut f| f.write_all(&bytes));
        let result = written.and_then(|()| std::fs::rename(&tmp, &self.record));
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    set_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<String>,
}

/// How long the box has been up (CLOCK_BOOTTIME: it counts suspend too, and no step moves it).
pub fn uptime() -> Option<Duration> {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .ok()
        .map(Duration::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> ClockFiles {
        ClockFiles {
            floor: dir.join("clock-epoch"),
            timesyncd_flag: dir.join("synchronized"),
            record: dir.join(RECORD_FILE),
        }
    }

    #[test]
    fn the_record_round_trips_and_the_boot_scripts_form_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        assert_eq!(f.read_record(), None);
        f.write_record(SetBy::HttpsDate, Some("https://192.0.2.1:8443"))
            .unwrap();
        assert_eq!(
            f.read_record(),
            Some((SetBy::HttpsDate, Some("https://192.0.2.1:8443".into())))
        );
        // What board/common/rootfs-overlay/usr/libexec/onair/onair-clock writes.
        std::fs::write(&f.record, "{\"set_by\": \"saved-clock-file\"}\n").unwrap();
        assert_eq!(f.read_record(), Some((SetBy::SavedClockFile, None)));
        std::fs::write(&f.record, "{\"set_by\": \"sundial\"}").unwrap();
        assert_eq!(f.read_record(), None);
    }

    #[test]
    fn the_record_is_not_read_or_written_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "{\"set_by\": \"ntp\"}").unwrap();
        std::os::unix::fs::symlink(&victim, &f.record).unwrap();
        assert_eq!(f.read_record(), None);
        f.write_record(SetBy::BuildFloor, None).unwrap();
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "{\"set_by\": \"ntp\"}"
        );
        assert_eq!(f.read_record(), Some((SetBy::BuildFloor, None)));
    }

    #[test]
    fn the_floor_is_the_files_mtime_but_never_before_the_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        let fallback = SystemTime::UNIX_EPOCH + FALLBACK_FLOOR;
        assert_eq!(f.floor(), fallback);
        let file = std::fs::File::create(&f.floor).unwrap();
        let later = fallback + Duration::from_secs(86_400 * 40);
        file.set_modified(later).unwrap();
        assert_eq!(f.floor(), later);
        file.set_modified(fallback - Duration::from_secs(86_400))
            .unwrap();
        assert_eq!(f.floor(), fallback);
    }
}
