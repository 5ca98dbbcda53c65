//! Capture and encoding: GStreamer pipelines that turn the camera, HDMI input or test pattern
//! into H.264 access units, and keep doing so while outputs come and go and while the input
//! itself is lost (a slate takes its place).

pub mod assemble;
pub mod audio;
pub mod av_offset;
pub mod bitrate;
pub mod bridge;
pub mod bus;
pub mod capture;
pub mod clock;
pub mod door;
pub mod encode;
pub mod encoder;
pub mod feeder;
pub mod health;
pub mod input;
pub mod keyframes;
pub mod pipeline;
pub mod slate;
pub mod source;
pub mod stats;
pub mod sync;
pub mod v4l2;
pub mod watch;

use bytes::Bytes;
use std::time::Duration;

pub use bitrate::{BitrateHandle, BitrateSetter};
pub use clock::MediaClock;
pub use door::{Door, Tap};
pub use keyframes::{KeyframeRequester, Urgency};
pub use pipeline::{Media, MediaError, MediaEvent};
pub use stats::{InputStatus, MediaStats};
pub use sync::KeyframeSync;

/// One encoded picture in Annex-B byte-stream form (start codes, SPS/PPS before every IDR).
#[derive(Debug, Clone)]
pub struct AccessUnit {
    pub data: Bytes,
    /// Counts every unit the encoder produced; a gap seen by a tap means units were dropped at
    /// the door and the receiver must resync at a key frame.
    pub seq: u64,
    /// Presentation time on the media clock (`clock.rs`): time since media started, carried on
    /// across restarts of the encoding pipeline, and the same as a sound's made at that instant.
    pub pts: Duration,
    pub duration: Duration,
    pub keyframe: bool,
}
