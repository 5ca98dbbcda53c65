//! The update record on the data partition: what `onair update` started and how it ended,
//! kept across the reboots an update takes (`/data/onair/update.json`).
//!
//! Each boot's checker reads it to learn what was being tried, with what expectations (was
//! the box live before?), and settles it: [`settle`] is the pure rule that turns the record
//! and the slot the box booted into an outcome — including the outcomes nobody lived to write
//! (a power cut in the middle of an install, a new system that never got as far as judging
//! itself).

use crate::status::update::{Phase, UpdateOutcome};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Where the record lives on the box.
pub const DEFAULT_PATH: &str = "/data/onair/update.json";

/// The largest record read (a real one is a few hundred bytes).
const MAX_BYTES: u64 = 16 << 10;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Where the update is, as status shows it.
    pub last: UpdateOutcome,
    /// The slot the box ran when the update began.
    pub from_slot: String,
    /// That system's version.
    pub from_version: Option<String>,
    /// The box was live when the update began: the new system must be live again.
    pub was_live: bool,
    /// The interfaces the stream used then; one missing afterwards is not "network down".
    #[serde(default)]
    pub uplinks: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot write the update record {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Reads the record; `None` when there is none or it is unreadable (a record is advice: a
/// box whose record was lost still judges its trials, with no expectation of live).
pub fn read(path: &Path) -> Option<Record> {
    // Not opened blocking: a FIFO left at the path must not hang whoever asks.
    let text = crate::config::read_regular_file(path, MAX_BYTES).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Writes the record as a new file, flushed, renamed into place and the directory flushed:
/// the reboot that follows must find it, whatever happens to the power.
pub fn write(path: &Path, record: &Record) -> Result<(), RecordError> {
    let err = |source| RecordError::Write {
        path: path.display().to_string(),
        source,
    };
    let text = serde_json::to_vec_pretty(record).map_err(|e| err(std::io::Error::other(e)))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = dir.join(".update.json.new");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&text).map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err)
}

/// What a boot finds, from the slot it booted and the slot the firmware boots by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// The default slot: a normal boot.
    Normal,
    /// Not the default slot: the one try of an installed system, to be judged.
    Trial,
}

impl Boot {
    pub fn of(booted: &str, primary: &str) -> Boot {
        if booted == primary {
            Boot::Normal
        } else {
            Boot::Trial
        }
    }
}

/// The record as this boot must leave it: an update whose outcome nobody wrote gets the one
/// the boot shows, and a trial nobody announced gets a record of its own. `now` is Unix time.
/// Returns `None` when there is nothing to write.
pub fn settle(
    record: Option<&Record>,
    booted: &str,
    booted_version: Option<&str>,
    primary: &str,
    now: f64,
) -> Option<Record> {
    let boot = Boot::of(booted, primary);
    let ended = |r: &Record, phase: Phase, reason: String| {
        let mut r = r.clone();
        r.last.phase = phase;
        r.last.reason = Some(reason);
        r.last.at = now;
        r
    };
    match (boot, record) {
        (Boot::Trial, Some(r)) if r.last.phase == Phase::Trying && r.last.slot == booted => None,
        // A trial nobody announced (`rauc install` and a tryboot by hand, or a record lost):
        // judged all the same, with no expectation that the box goes live.
        (Boot::Trial, _) => Some(Record {
            last: UpdateOutcome {
                phase: Phase::Trying,
                version: booted_version.unwrap_or("unknown").to_string(),
                slot: booted.to_string(),
                reason: None,
                at: now,
            },
            from_slot: primary.to_string(),
            from_version: None,
            was_live: false,
            uplinks: Vec::new(),
        }),
        (Boot::Normal, None) => None,
        (Boot::Normal, Some(r)) => match r.last.phase {
            Phase::Installing => Some(ended(
                r,
                Phase::Failed,
                format!(
                    "the install into slot {} did not finish (power lost or the box restarted); \
                     still on slot {booted}",
                    r.last.slot
                ),
            )),
            // Marked good, but the box went down before the record said so.
            Phase::Trying if r.last.slot == booted => Some(ended(
                r,
                Phase::Updated,
                "kept (marked good before the record was written)".to_string(),
            )),
            Phase::Trying => Some(ended(
                r,
                Phase::RolledBack,
                "the new system did not judge itself (it did not start, hung, or lost power)"
                    .to_string(),
            )),
            Phase::Updated | Phase::RolledBack | Phase::Failed => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(phase: Phase, slot: &str) -> Record {
        Record {
            last: UpdateOutcome {
                phase,
                version: "2".into(),
                slot: slot.into(),
                reason: None,
                at: 100.0,
            },
            from_slot: if slot == "A" { "B" } else { "A" }.into(),
            from_version: Some("1".into()),
            was_live: true,
            uplinks: vec!["eth0".into()],
        }
    }

    #[test]
    fn a_normal_boot_without_an_update_writes_nothing() {
        assert_eq!(settle(None, "A", Some("1"), "A", 200.0), None);
        for phase in [Phase::Updated, Phase::RolledBack, Phase::Failed] {
            assert_eq!(
                settle(Some(&record(phase, "B")), "A", Some("1"), "A", 200.0),
                None,
                "{phase:?} is already settled"
            );
        }
    }

    #[test]
    fn the_announced_trial_is_judged_as_recorded() {
        let r = record(Phase::Trying, "B");
        assert_eq!(settle(Some(&r), "B", Some("2"), "A", 200.0), None);
    }

    #[test]
    fn an_interrupted_install_failed_and_the_box_stayed() {
        let r = record(Phase::Installing, "B");
        let out = settle(Some(&r), "A", Some("1"), "A", 200.0).expect("settled");
        assert_eq!(out.last.phase, Phase::Failed);
        assert_eq!(out.last.at, 200.0);
        assert_eq!(
            out.last.reason.as_deref(),
            Some(
                "the install into slot B did not finish (power lost or the box restarted); \
                 still on slot A"
            )
        );
        assert!(out.was_live, "the rest of the record is kept");
    }

    #[test]
    fn a_trial_back_on_the_old_slot_rolled_back_unless_it_said_why() {
        let r = record(Phase::Trying, "B");
        let out = settle(Some(&r), "A", Some("1"), "A", 200.0).expect("settled");
        assert_eq!(out.last.phase, Phase::RolledBack);
        assert!(
            out.last
                .reason
                .as_deref()
                .is_some_and(|t| t.starts_with("the new system did not judge itself")),
            "{out:?}"
        );
        // The trial's own checker wrote why before it rebooted: that reason stays.
        let mut said = record(Phase::RolledBack, "B");
        said.last.reason = Some("not live within 120 s (state connecting)".into());
        assert_eq!(settle(Some(&said), "A", Some("1"), "A", 200.0), None);
    }

    #[test]
    fn a_trial_slot_that_became_the_default_was_kept() {
        let r = record(Phase::Trying, "B");
        let out = settle(Some(&r), "B", Some("2"), "B", 200.0).expect("settled");
        assert_eq!(out.last.phase, Phase::Updated);
    }

    #[test]
    fn an_unannounced_trial_gets_a_record_without_expectations() {
        let out = settle(None, "B", Some("7"), "A", 200.0).expect("a record");
        assert_eq!(out.last.phase, Phase::Trying);
        assert_eq!(out.last.slot, "B");
        assert_eq!(out.last.version, "7");
        assert_eq!(out.from_slot, "A");
        assert!(!out.was_live);
        // A stale record about another slot is replaced the same way.
        let stale = record(Phase::Updated, "A");
        let out = settle(Some(&stale), "B", None, "A", 200.0).expect("a record");
        assert_eq!(
            (out.last.phase, out.last.version.as_str()),
            (Phase::Trying, "unknown")
        );
    }

    #[test]
    fn written_records_read_back_and_junk_reads_as_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("onair/update.json");
        assert_eq!(read(&path), None);
        let r = record(Phase::Trying, "B");
        write(&path, &r).expect("write");
        assert_eq!(read(&path), Some(r));
        std::fs::write(&path, "{").unwrap();
        assert_eq!(read(&path), None);
    }
}
