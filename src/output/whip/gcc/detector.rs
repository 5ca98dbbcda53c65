//! The overuse detector: the delay trend against an adaptive threshold, as libwebrtc's
//! `OveruseDetector` runs it.
//!
//! Two differences from the library's detector, each of which left the delay half blind
//! behind the box's uplink:
//! - libwebrtc (and aiortc after it) compares the trend *times the number of deltas seen, up to
//!   60* with the threshold. Unscaled, the queue behind a 1 Mbit/s uplink fed at 2.5 Mbit/s
//!   reads about 10 ms at its peak and never crosses 12.5 ms: only the loss half acts, probing
//!   up until the queue overflows, and viewers see a freeze at every overflow.
//! - The library's threshold rises with gain 0.01 and falls with 0.00018 (the draft's numbers),
//!   so one burst of jitter leaves it high, and the detector blind, for tens of seconds.
//!   libwebrtc lets it fall quickly (0.039) and rise slowly (0.0087).
//!
//! The confirmation (above the threshold for 10 ms and two readings) is the library's.

use rtc::interceptor::Usage;
use std::time::{Duration, Instant};

/// The draft's cap on the number of deltas the trend is multiplied by.
pub(super) const MAX_DELTAS: u32 = 60;

/// The trend times the number of deltas against a threshold that rises slowly towards large
/// trends and falls quickly back.
#[derive(Debug, Clone)]
pub(super) struct Detector {
    threshold_ms: f64,
    last_update: Option<Instant>,
    last_group: Option<Instant>,
    /// How long (ms of group spacing) the trend has been above the threshold.
    over_for_ms: Option<f64>,
    over_count: u32,
    previous_trend: f64,
    pub(super) usage: Usage,
    /// Overuse confirmations so far (a rising trend above the threshold for long enough).
    pub(super) overuses: u64,
}

/// The threshold's start and bounds (ms), and how far outside it a trend may be and still move
/// it.
const THRESHOLD_START: f64 = 12.5;
const THRESHOLD_MIN: f64 = 6.0;
const THRESHOLD_MAX: f64 = 600.0;
const THRESHOLD_IGNORE_BEYOND: f64 = 15.0;
const GAIN_UP: f64 = 0.0087;
const GAIN_DOWN: f64 = 0.039;
/// Overuse is declared once the trend has been above the threshold for this long.
const OVERUSE_TIME_MS: f64 = 10.0;

impl Detector {
    pub(super) fn new() -> Self {
        Detector {
            threshold_ms: THRESHOLD_START,
            last_update: None,
            last_group: None,
            over_for_ms: None,
            over_count: 0,
            previous_trend: 0.0,
            usage: Usage::Normal,
            overuses: 0,
        }
    }

    /// One more group: `trend_ms` is the (gained) delay trend, `at` the group's departure.
    pub(super) fn update(&mut self, at: Instant, trend_ms: f64, deltas: u32) -> Usage {
        let spacing_ms = self
            .last_group
            .map(|last| at.saturating_duration_since(last).as_secs_f64() * 1000.0)
            .unwrap_or(0.0);
        self.last_group = Some(at);
        if deltas < 2 {
            return self.usage;
        }
        let scaled = trend_ms * f64::from(deltas.min(MAX_DELTAS));
        if scaled > self.threshold_ms {
            let over = self
                .over_for_ms
                .map_or(spacing_ms / 2.0, |o| o + spacing_ms);
            self.over_for_ms = Some(over);
            self.over_count += 1;
            if over > OVERUSE_TIME_MS && self.over_count > 1 && trend_ms >= self.previous_trend {
                self.over_for_ms = Some(0.0);
                self.over_count = 0;
                self.usage = Usage::Over;
                self.overuses += 1;
            }
        } else {
            self.over_for_ms = None;
            self.over_count = 0;
            self.usage = if scaled < -self.threshold_ms {
                Usage::Under
            } else {
                Usage::Normal
            };
        }
        self.previous_trend = trend_ms;
        self.adapt_threshold(at, scaled);
        self.usage
    }

    fn adapt_threshold(&mut self, at: Instant, scaled: f64) {
        let last = *self.last_update.get_or_insert(at);
        self.last_update = Some(at);
        let magnitude = scaled.abs();
        // A wild trend says something odd happened, not where the threshold belongs.
        if magnitude > self.threshold_ms + THRESHOLD_IGNORE_BEYOND {
            return;
        }
        let gain = if magnitude < self.threshold_ms {
            GAIN_DOWN
        } else {
            GAIN_UP
        };
        let elapsed_ms = at
            .saturating_duration_since(last)
            .min(Duration::from_millis(100))
            .as_secs_f64()
            * 1000.0;
        self.threshold_ms = (self.threshold_ms
            + gain * (magnitude - self.threshold_ms) * elapsed_ms)
            .clamp(THRESHOLD_MIN, THRESHOLD_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_detector_scales_the_trend_and_lets_a_raised_threshold_fall_back() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut d = Detector::new();
        // A small steady gradient (0.5 ms per group): unscaled it is far below 12.5 ms; once
        // enough deltas have been seen, scaled, it is overuse.
        let mut usage = Usage::Normal;
        for i in 0..40u32 {
            usage = d.update(at(u64::from(i) * 33), 0.5, i + 1);
        }
        assert_eq!(usage, Usage::Over);
        // A moderate trend raises the threshold; a quiet path brings it straight back down.
        let mut d = Detector::new();
        d.update(at(0), 0.0, 60);
        d.update(at(33), 0.4, 60);
        let raised = d.threshold_ms;
        assert!(raised > THRESHOLD_START, "{raised}");
        for i in 2..40u64 {
            d.update(at(i * 33), 0.0, 60);
        }
        assert!(
            d.threshold_ms < THRESHOLD_MIN + 1.0,
            "threshold still {} on a quiet path",
            d.threshold_ms
        );
    }
}
