//! The one media clock: every pipeline that stamps media (the encoder's, the audio's) runs on
//! GStreamer's monotonic system clock with the same base time, fixed when media starts. A
//! timestamp is then "time since media started" whichever pipeline made it, and whichever run
//! of a restarted pipeline: pictures and sound stamped at the same instant carry the same
//! value, which is what lip sync is built on (`output/whip` turns it into RTP timestamps, the
//! RTMP output into FLV ones).

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
