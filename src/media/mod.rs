//! Capture and encoding: a GStreamer pipeline that turns the camera, HDMI input or test
//! pattern into H.264 access units, and keeps doing so while outputs come and go.

pub mod bitrate;
pub mod door;
pub mod encoder;
pub mod health;
pub mod keyframes;
pub mod pipeline;
pub mod source;
pub mod sync;

use bytes::Bytes;
use std::time::Duration;

pub use bitrate::{BitrateHandle, BitrateSetter};
pub use door::{Door, Tap};
pub use keyframes::{KeyframeRequester, Urgency};
pub use pipeline::{Media, MediaError, MediaEvent, MediaStats};
pub use sync::KeyframeSync;

/// One encoded picture in Annex-B byte-stream form (start codes, SPS/PPS before every IDR).
#[derive(Debug, Clone)]
pub struct AccessUnit {
    pub data: Bytes,
    /// Counts every unit the encoder produced; a gap seen by a tap means units were dropped at
    /// the door and the receiver must resync at a key frame.
    pub seq: u64,
    /// Presentation time from the pipeline's running time (restarts with the pipeline).
    pub pts: Duration,
    pub duration: Duration,
    pub keyframe: bool,
}
