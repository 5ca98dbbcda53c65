//! Sound: capture (ALSA device or a test tone) → an unbroken PCM stream on the media clock →
//! Opus (for WHIP) or AAC (for RTMP) → the door's audio lane.
//!
//! ```text
//!  capture (capture.rs: alsasrc|audiotestsrc ▸ audioconvert ▸ audioresample ▸ appsink)
//!     restarted on trouble            │ buffers at their media time
//!                                     ▼
//!  pump (runner.rs: every 20 ms, 40 ms behind the clock; timeline.rs fills gaps with silence)
//!                                     │
//!                                     ▼
//!  encode (encode.rs: appsrc ▸ level ▸ audioconvert ▸ opusenc|AAC encoder ▸ appsink) ──▶ door
//!     runs for the daemon's life
//! ```
//!
//! The capture is apart from the encoder, as the video's is: a missing, unplugged or stalled
//! device only ever stops and restarts the capture (`health.rs` decides when), and the encoder
//! meanwhile encodes silence at the same format, so the track never stops and never changes.

pub mod capture;
pub mod encode;
pub mod health;
pub mod runner;
pub mod timeline;

use crate::lock::lock;
use bytes::Bytes;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

pub use runner::{Audio, AudioError};

/// Every audio path runs at this rate (Opus's, and what Broadcast Box takes).
pub const RATE: u32 = 48_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCodec {
    Opus,
    Aac,
}

impl AudioCodec {
    pub fn as_str(self) -> &'static str {
        match self {
            AudioCodec::Opus => "opus",
            AudioCodec::Aac => "aac",
        }
    }

    /// The caps a muxer takes this codec's frames with, as the encoder made them: Opus 48 kHz
    /// (the muxer writes its header from these), or raw AAC with the AudioSpecificConfig that
    /// the encoder's frames carry (`AudioUnit::codec_data`).
    pub fn mux_caps(self, channels: u32, codec_data: Option<&[u8]>) -> gstreamer::Caps {
        let b = match self {
            AudioCodec::Opus => {
                gstreamer::Caps::builder("audio/x-opus").field("channel-mapping-family", 0i32)
            }
            AudioCodec::Aac => gstreamer::Caps::builder("audio/mpeg")
                .field("mpegversion", 4i32)
                .field("stream-format", "raw"),
        };
        let mut b = b
            .field("rate", RATE as i32)
            .field("channels", channels as i32);
        if let Some(data) = codec_data {
            b = b.field("codec_data", gstreamer::Buffer::from_slice(data.to_vec()));
        }
        b.build()
    }
}

/// One encoded audio frame.
#[derive(Debug, Clone)]
pub struct AudioUnit {
    pub data: Bytes,
    /// On the media clock, like the pictures' (`media/clock.rs`), moved as `media/av_offset.rs`
    /// says (`audio.offset_ms`, AAC's priming).
    pub pts: Duration,
    pub duration: Duration,
    pub codec: AudioCodec,
    /// AAC's AudioSpecificConfig (the muxer needs it before the first frame); `None` for Opus.
    pub codec_data: Option<Bytes>,
}

/// What `onair status` shows of the sound. Absent when `audio.kind` is `none`.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioStatus {
    /// `test` or the ALSA device name.
    pub source: String,
    /// `opus (opusenc)`, `aac (voaacenc)`, … once the encoder runs.
    pub codec: Option<String>,
    /// `starting`, `live` (the device's sound) or `silence` (substituted).
    pub state: &'static str,
    /// Why silence is sent, while it is.
    pub reason: Option<String>,
    pub since: Instant,
    /// Peak level over the last second, dBFS (the loudest channel); `None` before the first
    /// second or when nothing has been measured for 2 s.
    pub peak_dbfs: Option<f64>,
    /// Times the sound was replaced by silence since start.
    pub dropouts: u64,
    pub channels: u32,
    pub bitrate_kbps: u32,
    pub offset_ms: i32,
}

/// Counters and state for status, written by the audio runner and the streaming threads.
pub struct AudioStats {
    status: Mutex<AudioStatus>,
    /// (peak dBFS, when measured).
    level: Mutex<Option<(f64, Instant)>>,
}

impl AudioStats {
    pub(crate) fn new(status: AudioStatus) -> AudioStats {
        AudioStats {
            status: Mutex::new(status),
            level: Mutex::new(None),
        }
    }

    pub fn status(&self) -> AudioStatus {
        let mut s = lock(&self.status).clone();
        s.peak_dbfs = match *lock(&self.level) {
            Some((db, at)) if at.elapsed() < Duration::from_secs(2) => Some(db),
            _ => None,
        };
        s
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut AudioStatus)) {
        f(&mut lock(&self.status));
    }

    pub(crate) fn set_level(&self, peak_dbfs: f64) {
        *lock(&self.level) = Some((peak_dbfs, Instant::now()));
    }
}
