//! How picture and sound stay in sync, in one place.
//!
//! Both are stamped on the one media clock (`clock.rs`): a picture and a sound captured at the
//! same instant carry the same time, whichever pipeline made them and however often either was
//! restarted. Two things then move the sound, and only the sound, as it leaves its encoder:
//!
//! - `audio.offset_ms`, for a capture path whose picture and sound arrive at different delays
//!   (a camera's picture late behind a USB microphone's sound wants a positive offset);
//! - AAC's priming: an AAC decoder plays the encoder's priming samples before the first real
//!   one, and FLV has no field to say so, so the frames are stamped that much earlier and the
//!   sound is heard on time.
//!
//! A sound moved earlier can be due before it was made: the outputs send everything that much
//! later (the `advance` `daemon.rs` gives them for a negative offset).

use super::audio::{AudioCodec, RATE};
use std::time::Duration;

/// Samples an AAC-LC encoder puts before the first input sample.
pub const AAC_PRIMING_SAMPLES: u32 = 1024;

/// Where an encoded sound frame whose first sample was captured at `encoded` (media time) goes
/// on the media timeline. `None` before the timeline's start: only the first frames, with a
/// negative offset or AAC's priming.
pub fn sound_pts(encoded: Duration, codec: AudioCodec, offset_ms: i32) -> Option<Duration> {
    let priming_ns = match codec {
        AudioCodec::Aac => i128::from(AAC_PRIMING_SAMPLES) * 1_000_000_000 / i128::from(RATE),
        AudioCodec::Opus => 0,
    };
    let ns = encoded.as_nanos() as i128 + i128::from(offset_ms) * 1_000_000 - priming_ns;
    u64::try_from(ns).ok().map(Duration::from_nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    /// 1024 samples at 48 kHz, to the nanosecond below.
    const AAC_PRIMING: Duration = Duration::from_nanos(21_333_333);

    #[test]
    fn opus_without_an_offset_keeps_its_media_time() {
        assert_eq!(sound_pts(MS * 1000, AudioCodec::Opus, 0), Some(MS * 1000));
        assert_eq!(
            sound_pts(Duration::ZERO, AudioCodec::Opus, 0),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn aac_is_stamped_its_priming_earlier() {
        assert_eq!(
            sound_pts(MS * 1000, AudioCodec::Aac, 0),
            Some(MS * 1000 - AAC_PRIMING)
        );
        assert_eq!(sound_pts(MS * 21, AudioCodec::Aac, 0), None);
        assert_eq!(
            sound_pts(AAC_PRIMING, AudioCodec::Aac, 0),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn the_offset_moves_the_sound_later_or_earlier() {
        assert_eq!(sound_pts(MS * 1000, AudioCodec::Opus, 40), Some(MS * 1040));
        assert_eq!(sound_pts(MS * 1000, AudioCodec::Opus, -100), Some(MS * 900));
        assert_eq!(
            sound_pts(MS * 1000, AudioCodec::Aac, 30),
            Some(MS * 1030 - AAC_PRIMING)
        );
    }

    #[test]
    fn sound_due_before_the_timeline_starts_is_none() {
        assert_eq!(sound_pts(MS * 50, AudioCodec::Opus, -100), None);
        assert_eq!(
            sound_pts(MS * 100, AudioCodec::Opus, -100),
            Some(Duration::ZERO)
        );
    }
}
