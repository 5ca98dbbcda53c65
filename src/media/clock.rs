//! The one media clock: every pipeline that stamps media (the encoder's, the audio's) runs on
//! GStreamer's monotonic system clock with the same base time, fixed when media starts. A
//! timestamp is then "time since media started" whichever pipeline made it, and whichever run
//! of a restarted pipeline: pictures and sound stamped at the same instant carry the same
//! value, which is what lip sync is built on (`output/whip` turns it into RTP timestamps, the
//! RTMP output into FLV ones). What then moves the sound alone is `av_offset.rs`.

use gstreamer as gst;
use gstreamer::prelude::*;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct MediaClock {
    clock: gst::Clock,
    epoch: gst::ClockTime,
}

impl MediaClock {
    /// Starts the media timeline now. GStreamer must be initialised.
    pub fn start() -> MediaClock {
        let clock: gst::Clock = gst::SystemClock::obtain();
        let epoch = clock.time();
        MediaClock { clock, epoch }
    }

    /// Makes `pipeline` stamp on this timeline: the system clock, the shared base time, and no
    /// new base time when it goes to PLAYING. Call before it starts.
    pub fn adopt(&self, pipeline: &gst::Pipeline) {
        pipeline.use_clock(Some(&self.clock));
        pipeline.set_start_time(gst::ClockTime::NONE);
        pipeline.set_base_time(self.epoch);
    }

    /// Time on the media timeline now.
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.clock.time().saturating_sub(self.epoch).nseconds())
    }
}

/// A buffer time as running time (media clock time) by the sample's segment. Not the buffer's
/// own stamp: elements may shift their segment (x264enc adds 1000 hours so that DTS never goes
/// negative).
pub fn running_time(sample: &gst::Sample, pts: Option<gst::ClockTime>) -> Option<Duration> {
    let pts = pts?;
    let t = sample
        .segment()
        .and_then(|s| s.downcast_ref::<gst::ClockTime>())
        .and_then(|s| s.to_running_time(pts))
        .unwrap_or(pts);
    Some(Duration::from_nanos(t.nseconds()))
}
