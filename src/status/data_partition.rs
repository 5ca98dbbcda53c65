//! What became of the data partition at boot, as `onair-data` wrote it to the state directory
//! (`data-partition`: `state=`, `device=`, `label=`, `detail=` lines): mounted, repaired by the
//! boot's check, or unusable — then `/data` is a RAM disk and nothing the box keeps survives a
//! reboot, which `onair status` and the LEDs must tell the owner.

use crate::config::read_regular_file;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The report's name in the state directory (`/run/onair`).
pub const REPORT_FILE: &str = "data-partition";
/// A report is a few lines; anything larger is not one.
const MAX_REPORT_BYTES: u64 = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPartition {
    /// `mounted`, `repaired` (by `e2fsck -p` at boot, then mounted) or `ram_disk` (it could
    /// not be used: `/data` is a RAM disk).
    pub state: String,
    /// The partition's device, when it was found.
    pub device: Option<String>,
    /// What the check repaired, or why it cannot be used.
    pub detail: Option<String>,
}

impl DataPartition {
    /// Reads the report in `state_dir`; `None` when there is none (a daemon not started by the
    /// image) or it is not a report.
    pub fn read(state_dir: &Path) -> Option<DataPartition> {
        let bytes = read_regular_file(&state_dir.join(REPORT_FILE), MAX_REPORT_BYTES).ok()?;
        DataPartition::parse(&String::from_utf8_lossy(&bytes))
    }

    pub fn parse(text: &str) -> Option<DataPartition> {
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
                .map(|v| crate::secret::printable(v.trim()))
                .filter(|v| !v.is_empty())
        };
        let state = field("state")?;
        matches!(state.as_str(), "mounted" | "repaired" | "ram_disk").then(|| DataPartition {
            state,
            device: field("device"),
            detail: field("detail"),
        })
    }

    /// Whether `/data` is a RAM disk instead of the partition.
    pub fn unusable(&self) -> bool {
        self.state == "ram_disk"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn onair_datas_report_is_read() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(DataPartition::read(dir.path()), None);
        std::fs::write(
            dir.path().join(REPORT_FILE),
            "state=ram_disk\ndevice=/dev/mmcblk0p3\nlabel=onair-data\n\
             detail=e2fsck -p cannot repair it unattended (exit 4)\n",
        )
        .unwrap();
        let report = DataPartition::read(dir.path()).expect("a report");
        assert!(report.unusable());
        assert_eq!(report.device.as_deref(), Some("/dev/mmcblk0p3"));
        assert_eq!(
            report.detail.as_deref(),
            Some("e2fsck -p cannot repair it unattended (exit 4)")
        );
        let mounted = DataPartition::parse("state=mounted\ndevice=/dev/vdc\ndetail=\n").unwrap();
        assert!(!mounted.unusable());
        assert_eq!(mounted.detail, None);
        assert_eq!(DataPartition::parse("state=on fire\n"), None);
        assert_eq!(DataPartition::parse("garbage"), None);
    }
}
