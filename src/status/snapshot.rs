//! What `onair status` shows: one JSON document assembled on request from the live parts.
//!
//! The field names are a public contract (scripts read them); change them only with README.
//! Nothing here may carry a secret: the output URL is the redacted form.

use super::data_partition::DataPartition;
use super::update::UpdateSnapshot;
use crate::clock::ClockView;
use crate::media::audio::AudioStats;
use crate::media::{KeyframeRequester, MediaStats};
use crate::net::{NetworkStatus, Path, UplinkStatus};
use crate::output::OutputStats;
use crate::output::adapt::{AdaptStatus, Adaptation};
use crate::recording::{Listing, RecordingSnapshot, RecordingStats};
use crate::supervisor::{MachineView, StreamState};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    pub state: StreamState,
    /// Seconds in the current state.
    pub since: f64,
    /// Number of the attempt in flight or last made in the current streak (0 before the first).
    pub attempt: u32,
    /// Milliseconds until the next attempt, while waiting out a backoff delay.
    pub next_retry_ms: Option<u64>,
    /// Times the stream came back after a drop.
    pub reconnects: u64,
    pub uptime_s: f64,
    /// Total seconds live since start.
    pub live_s: f64,
    pub last_error: Option<String>,
    pub network: NetworkSnapshot,
    /// The box's clock: synchronized by NTP or not, and how it got its time.
    #[serde(default)]
    pub clock: ClockSnapshot,
    /// The encoder element running, once one has produced a frame.
    pub encoder: Option<String>,
    /// e.g. `test 1280x720@30`.
    pub source: String,
    /// The input: live or lost, and what the encoder gets.
    #[serde(default)]
    pub input: InputSnapshot,
    /// Encoded bitrate over the last second.
    pub bitrate_kbps: u32,
    /// The bitrate adaptation: the encoder's target, the path's estimate and where it came
    /// from, loss and round trip.
    #[serde(default)]
    pub adapt: AdaptStatus,
    pub frames_encoded: u64,
    pub frames_sent: u64,
    pub keyframes_forced: u64,
    /// The sound; absent when `audio.kind` is `none`.
    #[serde(default)]
    pub audio: Option<AudioSnapshot>,
    /// The recording; absent when `record.enabled` is false.
    #[serde(default)]
    pub record: Option<RecordingSnapshot>,
    pub output: OutputSnapshot,
    /// What became of the data partition at boot; `null` when the daemon was not started by
    /// the image (no report from `onair-data`).
    #[serde(default)]
    pub data_partition: Option<DataPartition>,
    pub pid: u32,
    pub version: String,
    /// The slot the box booted, its version and the last update's outcome; absent where
    /// nothing wrote them (no A/B system, a development machine).
    #[serde(default)]
    pub update: Option<UpdateSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkSnapshot {
    pub up: bool,
    pub interfaces: Vec<String>,
    /// The path to the server in use: interface, local (source) address, gateway.
    pub path: Option<Path>,
    /// The uplinks known, best first, each with its state and whether it is usable.
    pub uplinks: Vec<UplinkStatus>,
    /// Times the path changed while the box stayed online.
    pub switches: u64,
    /// The daemon steers the server's traffic with policy routing (`network.paths: steer`).
    pub steered: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ClockSnapshot {
    /// NTP (systemd-timesyncd) set the clock and the kernel still counts it synchronized.
    pub synchronized: bool,
    /// Seconds in the present `synchronized` state (an unsynchronized clock the daemon found
    /// at its start counts from the boot).
    pub since: f64,
    /// How the clock got its time: `ntp`, `https-date`, `saved-clock-file`, `build-floor`,
    /// `rtc` or `unknown`.
    pub set_by: String,
    /// For `https-date`: the origin whose `Date` set the clock.
    pub set_from: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct InputSnapshot {
    /// `starting`, `live` or `lost`.
    pub signal: String,
    /// `input` or `slate`: what the encoder gets.
    pub showing: String,
    /// Seconds in the current `signal`.
    pub since: f64,
    /// Losses since start.
    pub losses: u64,
    /// The input's own format at the device before scaling (e.g. `640x480 YUY2 @60`), while
    /// live.
    pub format: Option<String>,
    /// Why the input is lost, while it is.
    pub reason: Option<String>,
    /// `slate` or `disconnect` (`source.on_loss`).
    pub on_loss: String,
    /// What the slate is: `card "NO SIGNAL"`, `image /data/onair/slate.png`, `plain card`.
    pub slate: String,
    /// Slate pictures given to the encoder since start.
    pub slate_frames: u64,
    /// The timings an HDMI source sends (`1920x1080p30.00`), while there is a signal; `null`
    /// for inputs without (webcams, the test source).
    #[serde(default)]
    pub timing: Option<String>,
    /// The EDID the HDMI bridge holds (`shipped (...)` or the `source.edid` file); `null` when
    /// the input takes none or none is loaded.
    #[serde(default)]
    pub edid: Option<String>,
    /// Why no EDID could be loaded into the bridge, while that is so.
    #[serde(default)]
    pub edid_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AudioSnapshot {
    /// `test` or the ALSA device name.
    pub source: String,
    /// e.g. `opus (opusenc)`, `aac (voaacenc)`.
    pub codec: Option<String>,
    /// `starting`, `live` (the device's sound is sent) or `silence` (substituted).
    pub state: String,
    /// Why silence is sent, while it is.
    pub reason: Option<String>,
    /// Seconds in the current `state`.
    pub since: f64,
    /// Peak level over the last second in dBFS (loudest channel; -inf is sent as null).
    pub peak_dbfs: Option<f64>,
    /// Times the sound was replaced by silence since start.
    pub dropouts: u64,
    pub channels: u32,
    pub bitrate_kbps: u32,
    pub offset_ms: i32,
    /// Encoded audio frames handed to connections since start.
    pub frames_sent: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputSnapshot {
    pub kind: String,
    /// Redacted: no token, no stream key.
    pub url: String,
}

/// Everything a snapshot is read from. Cheap to clone into each client's task.
#[derive(Clone)]
pub struct StatusSources {
    pub view: watch::Receiver<MachineView>,
    pub network: watch::Receiver<NetworkStatus>,
    pub media: Arc<MediaStats>,
    pub output_stats: Arc<OutputStats>,
    pub keyframes: KeyframeRequester,
    pub audio: Option<Arc<AudioStats>>,
    pub recording: Option<Arc<RecordingStats>>,
    pub adaptation: Arc<Adaptation>,
    pub clock: watch::Receiver<ClockView>,
    pub started: Instant,
    pub source: String,
    pub output_kind: String,
    pub output_url: String,
    pub data_partition: Option<DataPartition>,
    /// The daemon's state directory, where `onair update-check` leaves the update document.
    pub state_dir: PathBuf,
}

impl StatusSources {
    fn input(&self, now: Instant) -> InputSnapshot {
        let i = self.media.input();
        InputSnapshot {
            signal: i.signal.to_string(),
            showing: i.showing.to_string(),
            since: now.saturating_duration_since(i.since).as_secs_f64(),
            losses: i.losses,
            format: i.format,
            reason: i.reason,
            on_loss: i.on_loss.to_string(),
            slate: i.slate,
            slate_frames: self.media.slate_frames(),
            timing: i.timing,
            edid: i.edid,
            edid_error: i.edid_error,
        }
    }

    fn clock(&self, now: Instant) -> ClockSnapshot {
        let c = self.clock.borrow().clone();
        ClockSnapshot {
            synchronized: c.synchronized,
            since: now.saturating_duration_since(c.since).as_secs_f64(),
            set_by: c.set_by.to_string(),
            set_from: c.set_from,
        }
    }

    fn audio(&self, now: Instant) -> Option<AudioSnapshot> {
        let a = self.audio.as_ref()?.status();
        Some(AudioSnapshot {
            source: a.source,
            codec: a.codec,
            state: a.state.to_string(),
            reason: a.reason,
            since: now.saturating_duration_since(a.since).as_secs_f64(),
            // JSON has no -inf: digital silence is reported as the floor level's null.
            peak_dbfs: a
                .peak_dbfs
                .filter(|db| db.is_finite())
                .map(|db| (db * 10.0).round() / 10.0),
            dropouts: a.dropouts,
            channels: a.channels,
            bitrate_kbps: a.bitrate_kbps,
            offset_ms: a.offset_ms,
            frames_sent: self.output_stats.audio_frames_sent(),
        })
    }

    /// What `onair recordings` lists (from memory: no disk is touched).
    pub fn recordings(&self) -> Listing {
        self.recording
            .as_ref()
            .map(|r| r.listing())
            .unwrap_or_default()
    }

    pub fn snapshot(&self) -> StatusSnapshot {
        let now = Instant::now();
        let view = self.view.borrow().clone();
        let network = self.network.borrow().clone();
        let live_now = view
            .live_since
            .map(|s| now.saturating_duration_since(s))
            .unwrap_or_default();
        StatusSnapshot {
            state: view.state,
            since: now.saturating_duration_since(view.since).as_secs_f64(),
            attempt: view.attempt,
            next_retry_ms: view
                .next_retry_at
                .map(|at| at.saturating_duration_since(now).as_millis() as u64),
            reconnects: view.reconnects,
            uptime_s: now.saturating_duration_since(self.started).as_secs_f64(),
            live_s: (view.live_total + live_now).as_secs_f64(),
            last_error: view.last_error,
            network: NetworkSnapshot {
                up: view.network_up,
                interfaces: network.interfaces,
                path: network.path,
                uplinks: network.uplinks,
                switches: network.switches,
                steered: network.steered,
            },
            clock: self.clock(now),
            encoder: self.media.encoder(),
            source: self.source.clone(),
            input: self.input(now),
            bitrate_kbps: self.media.bitrate_kbps(),
            adapt: self.adaptation.status(),
            frames_encoded: self.media.frames(),
            frames_sent: self.output_stats.frames_sent(),
            keyframes_forced: self.keyframes.forced_count(),
            audio: self.audio(now),
            record: self.recording.as_ref().map(|r| r.snapshot()),
            output: OutputSnapshot {
                kind: self.output_kind.clone(),
                url: self.output_url.clone(),
            },
            data_partition: self.data_partition.clone(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            update: super::update::read(&self.state_dir),
        }
    }
}
