//! What `onair status` shows of the picture side: the encoder's counters and bitrate (written
//! by the encoding pipeline's streaming thread), the input's state (written by the runner in
//! `pipeline.rs`) and the frame pump's counters. Apart from both, so that the pipeline that
//! writes the counters and the runner that owns them need not know each other.

use super::feeder::FeederStats;
use crate::config::OnLoss;
use crate::lock::lock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// What `onair status` shows of the input.
#[derive(Debug, Clone, PartialEq)]
pub struct InputStatus {
    /// `starting`, `live` or `lost`.
    pub signal: &'static str,
    /// `input` or `slate`: what the encoder gets.
    pub showing: &'static str,
    pub since: Instant,
    /// Losses since start.
    pub losses: u64,
    /// The input's own format at the device (before scaling), while live.
    pub format: Option<String>,
    /// Why the input is lost, while it is.
    pub reason: Option<String>,
    /// What the slate is (`card "NO SIGNAL"`, `image /data/...`).
    pub slate: String,
    pub on_loss: &'static str,
    /// The timings an HDMI source sends (`1920x1080p30.00`), while there is a signal.
    pub timing: Option<String>,
    /// The EDID an HDMI bridge holds (`shipped (...)` or the file), once loaded.
    pub edid: Option<String>,
    /// Why no EDID could be loaded into the bridge, while that is so.
    pub edid_error: Option<String>,
}

impl Default for InputStatus {
    fn default() -> Self {
        InputStatus {
            signal: "starting",
            showing: "slate",
            since: Instant::now(),
            losses: 0,
            format: None,
            reason: None,
            slate: String::new(),
            on_loss: OnLoss::default().as_str(),
            timing: None,
            edid: None,
            edid_error: None,
        }
    }
}

/// Counters for `onair status`, updated on the streaming threads.
#[derive(Default)]
pub struct MediaStats {
    frames: AtomicU64,
    bytes: AtomicU64,
    pub(super) encoder: Mutex<Option<String>>,
    bitrate: Mutex<BitrateWindow>,
    pub(super) input: Mutex<InputStatus>,
    pub(super) feeder: Arc<FeederStats>,
}

#[derive(Default)]
struct BitrateWindow {
    start: Option<Instant>,
    bytes: u64,
    last_kbps: u32,
}

impl MediaStats {
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The encoder element running (or last run), e.g. `x264enc`.
    pub fn encoder(&self) -> Option<String> {
        lock(&self.encoder).clone()
    }

    /// Encoded bitrate over the last full second.
    pub fn bitrate_kbps(&self) -> u32 {
        let w = lock(&self.bitrate);
        match w.start {
            // A window that has not closed for 2 s means nothing is being encoded.
            Some(start) if start.elapsed() > Duration::from_secs(2) => 0,
            _ => w.last_kbps,
        }
    }

    pub fn input(&self) -> InputStatus {
        lock(&self.input).clone()
    }

    /// Slate pictures fed to the encoder since start.
    pub fn slate_frames(&self) -> u64 {
        self.feeder.slate_frames.load(Ordering::Relaxed)
    }

    pub(super) fn record(&self, len: usize) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(len as u64, Ordering::Relaxed);
        let mut w = lock(&self.bitrate);
        let now = Instant::now();
        let start = *w.start.get_or_insert(now);
        let elapsed = now.duration_since(start);
        if elapsed >= Duration::from_secs(1) {
            w.last_kbps = (w.bytes * 8 / elapsed.as_millis().max(1) as u64) as u32;
            w.start = Some(now);
            w.bytes = 0;
        }
        w.bytes += len as u64;
    }
}
