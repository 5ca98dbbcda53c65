//! Capture and encoding: a GStreamer pipeline that turns the camera, HDMI input or test
//! pattern into H.264 access units.

use bytes::Bytes;
use std::time::Duration;

/// One encoded picture in Annex-B byte-stream form (start codes, SPS/PPS before every IDR).
#[derive(Debug, Clone)]
pub struct AccessUnit {
    pub data: Bytes,
    /// Presentation time from the pipeline's running time.
    pub pts: Duration,
    pub duration: Duration,
    pub keyframe: bool,
}
