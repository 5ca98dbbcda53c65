//! Recording: the box keeps what it streams, through every outage.
//!
//! A third lane out of the media side's door (`media/door.rs`), beside the connection's and
//! independent of it: the encoded pictures and sound, exactly as they are sent, muxed without
//! re-encoding into Matroska files that survive a power cut (`segment.rs`), one every
//! `record.segment_s`, named by their wall-clock start (`names.rs`). It records while the box is
//! offline, reconnecting or showing the slate, and never slows the live path: the door drops a
//! unit for the recording alone when the recording's tap is full, and the lane drops (and waits
//! for the next key frame) when the disk does not keep up.
//!
//! Where (`rules.rs`): a USB disk found by its label, which the daemon mounts itself
//! (`disk.rs` says why), with `record.dir` on the data partition as the fallback — or the data
//! partition only. Space (`space.rs`): the oldest recordings go before the disk falls below
//! `record.min_free_mb`. A disk that fails, hangs or is pulled: the recording moves to the
//! fallback or stops with a reason; the stream never notices.
//!
//! What is known about the recordings lives in memory (`catalog.rs`), with the windows when the
//! stream was not live read from each file's sidecar (`sidecar.rs`); `onair recordings` and the
//! status read it without touching a disk. The lane itself (`lane.rs`) is one task; every disk
//! operation runs on a thread of its own under a deadline.
//!
//! The supervisor only reports it: the daemon feeds the lane whether the stream is on the air,
//! and the status shows what the lane says.

pub mod catalog;
pub mod disk;
mod lane;
pub mod names;
pub mod rules;
pub mod segment;
pub mod sidecar;
pub mod space;

pub use catalog::{Listing, RecordingEntry};
pub use lane::{Recording, RecordingInputs};
pub use segment::AudioSpec;

use crate::lock::lock;
use catalog::Catalog;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;

/// What `onair status` shows of the recording (`record` in the JSON; absent when
/// `record.enabled` is false). A public contract, as the rest of the status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RecordingSnapshot {
    /// `starting`, `recording`, `waiting` (for a key frame after a move or a fault) or
    /// `stopped` (nowhere to record; see `reason`).
    pub state: String,
    /// Why it is stopped or waiting.
    pub reason: Option<String>,
    /// Seconds in the current state.
    pub since: f64,
    /// `record.to`: `usb` or `data`.
    pub to: String,
    /// Where it records now: `usb` or `data` (null while stopped).
    pub location: Option<String>,
    pub dir: Option<String>,
    /// The file being written.
    pub file: Option<String>,
    /// Its size so far.
    pub file_bytes: u64,
    /// Bytes written to recordings since the daemon started.
    pub bytes_written: u64,
    /// Free space on the disk recorded to, MiB (from the last look, once a second).
    pub free_mb: Option<u64>,
    pub min_free_mb: u64,
    /// Recordings known on the disks in use.
    pub files: usize,
    /// Pictures and sound frames the recording dropped because the disk did not keep up
    /// (the stream lost none of them).
    pub dropped: u64,
    pub last_error: Option<String>,
}

/// The lane's state for the status.
#[derive(Debug, Clone)]
struct Status {
    state: &'static str,
    reason: Option<String>,
    since: Instant,
    location: Option<rules::Dest>,
    dir: Option<String>,
    file: Option<String>,
    free_bytes: Option<u64>,
    last_error: Option<String>,
}

/// Shared between the lane (which writes it) and the status server (which reads it).
pub struct RecordingStats {
    status: Mutex<Status>,
    catalog: Mutex<Catalog>,
    to: &'static str,
    min_free_mb: u64,
    total: Arc<AtomicU64>,
    /// Units the lane dropped in front of the muxer.
    dropped: AtomicU64,
    /// The door, for what it dropped at the recording's tap.
    door: crate::media::Door,
    /// The file being written: its size lives with its writer.
    current: Mutex<Option<Arc<segment::Shared>>>,
}

impl RecordingStats {
    fn new(to: &'static str, min_free_mb: u64, door: crate::media::Door) -> RecordingStats {
        RecordingStats {
            status: Mutex::new(Status {
                state: "starting",
                reason: None,
                since: Instant::now(),
                location: None,
                dir: None,
                file: None,
                free_bytes: None,
                last_error: None,
            }),
            catalog: Mutex::new(Catalog::default()),
            to,
            min_free_mb,
            total: Arc::new(AtomicU64::new(0)),
            dropped: AtomicU64::new(0),
            door,
            current: Mutex::new(None),
        }
    }

    fn update(&self, f: impl FnOnce(&mut Status)) {
        f(&mut lock(&self.status));
    }

    /// Sets the state, keeping `since` when it does not change.
    fn set_state(&self, state: &'static str, reason: Option<String>) {
        let mut s = lock(&self.status);
        if s.state != state {
            s.since = Instant::now();
        }
        s.state = state;
        s.reason = reason;
    }

    fn catalog(&self) -> std::sync::MutexGuard<'_, Catalog> {
        lock(&self.catalog)
    }

    pub fn snapshot(&self) -> RecordingSnapshot {
        let s = lock(&self.status).clone();
        let file_bytes = lock(&self.current)
            .as_ref()
            .map(|c| c.bytes.load(Ordering::Relaxed))
            .unwrap_or(0);
        RecordingSnapshot {
            state: s.state.to_string(),
            reason: s.reason,
            since: s.since.elapsed().as_secs_f64(),
            to: self.to.to_string(),
            location: s.location.map(|d| d.as_str().to_string()),
            dir: s.dir,
            file: s.file,
            file_bytes,
            bytes_written: self.total.load(Ordering::Relaxed),
            free_mb: s.free_bytes.map(|b| b >> 20),
            min_free_mb: self.min_free_mb,
            files: self.catalog().len(),
            dropped: self.dropped.load(Ordering::Relaxed) + self.door.recording_dropped(),
            last_error: s.last_error,
        }
    }

    /// What `onair recordings` lists.
    pub fn listing(&self) -> Listing {
        let now = names::unix(jiff::Timestamp::now());
        let mut listing = self.catalog().listing(now);
        for entry in listing.recordings.iter_mut().filter(|e| e.recording) {
            if let Some(current) = lock(&self.current).as_ref() {
                entry.bytes = entry.bytes.max(current.bytes.load(Ordering::Relaxed));
            }
        }
        listing.enabled = true;
        listing
    }
}
