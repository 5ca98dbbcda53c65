//! The system and its updates as `onair status` shows them: the slot the box booted, that
//! system's version, and how the last update ended.
//!
//! The daemon knows nothing of updates (nothing of them is in the stream path): `onair
//! update-check` writes this document to the state directory at every boot and again once it
//! has judged a system on trial, and the daemon reads it for each status request. The field
//! names are a public contract, like the rest of the status document.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// Name of the document in the daemon's state directory (`/run/onair`).
pub const FILE_NAME: &str = "update.json";

/// The largest document read; a real one is a few hundred bytes.
const MAX_BYTES: u64 = 16 << 10;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct UpdateSnapshot {
    /// The slot this system booted from: `A` or `B`.
    pub slot: Option<String>,
    /// That system's version (its bundle's, or the image's own for the slot the card came with).
    pub version: Option<String>,
    /// This boot is the one try of a freshly installed system, not yet kept.
    #[serde(default)]
    pub trial: bool,
    /// How the last update ended, or where it is.
    pub last: Option<UpdateOutcome>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateOutcome {
    pub phase: Phase,
    /// The bundle's version.
    pub version: String,
    /// The slot it went to.
    pub slot: String,
    /// Why it ended so (`not live within 120 s`), or what is under way.
    pub reason: Option<String>,
    /// When this phase began, Unix seconds.
    pub at: f64,
}

/// Where an update is, and how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Being written to the inactive slot.
    Installing,
    /// Installed; the box boots it once to judge it.
    Trying,
    /// Judged healthy and kept.
    Updated,
    /// Tried and left; the box is back on the old system.
    RolledBack,
    /// Refused, or the install did not finish; the box never left the old system.
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Installing => "installing",
            Phase::Trying => "trying",
            Phase::Updated => "updated",
            Phase::RolledBack => "rolled back",
            Phase::Failed => "failed",
        }
    }
}

/// Reads the document from `dir`; `None` when there is none (a box without updates, a
/// development machine) or it is not one: it is a report, never worth an error.
pub fn read(dir: &Path) -> Option<UpdateSnapshot> {
    // Not opened blocking: a FIFO left at the path must not hang whoever asks.
    let text = crate::config::read_regular_file(&dir.join(FILE_NAME), MAX_BYTES).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Writes the document to `dir` as a new file renamed into place, so a reader never sees half.
pub fn write(dir: &Path, snapshot: &UpdateSnapshot) -> std::io::Result<()> {
    let text = serde_json::to_vec(snapshot).map_err(std::io::Error::other)?;
    let tmp = dir.join(format!(".{FILE_NAME}.new"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(FILE_NAME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_then_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read(dir.path()), None, "no document yet");
        let doc = UpdateSnapshot {
            slot: Some("B".into()),
            version: Some("2026.12.07".into()),
            trial: false,
            last: Some(UpdateOutcome {
                phase: Phase::RolledBack,
                version: "2026.12.08".into(),
                slot: "A".into(),
                reason: Some("not live within 120 s (state connecting)".into()),
                at: 1_765_000_000.0,
            }),
        };
        write(dir.path(), &doc).expect("write");
        assert_eq!(read(dir.path()), Some(doc));
        let json = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert!(json.contains(r#""phase":"rolled_back""#), "{json}");
    }

    #[test]
    fn junk_a_directory_a_fifo_or_a_huge_file_is_no_document() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(FILE_NAME), "not json").unwrap();
        assert_eq!(read(dir.path()), None);
        std::fs::remove_file(dir.path().join(FILE_NAME)).unwrap();
        std::fs::create_dir(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(read(dir.path()), None);
        std::fs::remove_dir(dir.path().join(FILE_NAME)).unwrap();
        let huge = format!(r#"{{"slot":"A","version":"{}"}}"#, "x".repeat(20_000));
        std::fs::write(dir.path().join(FILE_NAME), huge).unwrap();
        assert_eq!(read(dir.path()), None);
        std::fs::remove_file(dir.path().join(FILE_NAME)).unwrap();
        // A FIFO with no writer: a blocking open would wait forever.
        nix::unistd::mkfifo(
            &dir.path().join(FILE_NAME),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .expect("mkfifo");
        assert_eq!(read(dir.path()), None);
    }
}
