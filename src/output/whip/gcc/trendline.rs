//! The delay trend: how fast the queue on the path grows, as libwebrtc's `TrendlineEstimator`
//! reads it from the group deltas.
//!
//! It replaces the library's Kalman filter (`SlopeEstimator`), which, scaled as libwebrtc
//! scales, lags: its gain is a few percent per group, so one burst of delay (a queue, or a
//! receiver that stamped a few packets late) keeps the filtered gradient above the threshold
//! for seconds after the delay stopped growing, and each cut lands on a received rate the
//! previous cut already lowered, down to the floor. A window of the last 20 groups forgets a
//! burst as soon as it leaves the window.

use std::collections::VecDeque;

/// Groups in the trend's window, the smoothing of the accumulated delay, and the gain the trend
/// is multiplied by before it meets the threshold (libwebrtc's `TrendlineEstimator` defaults).
const TREND_WINDOW: usize = 20;
const TREND_SMOOTHING: f64 = 0.9;
const TREND_GAIN: f64 = 4.0;
const TREND_MIN_POINTS: usize = 3;

/// libwebrtc's trendline estimator: the least-squares slope of the smoothed
/// accumulated delay against arrival time over the last [`TREND_WINDOW`] groups.
#[derive(Debug, Clone, Default)]
pub(super) struct Trendline {
    accumulated_ms: f64,
    smoothed_ms: f64,
    first_arrival_ms: Option<f64>,
    /// (arrival ms since the first, smoothed accumulated delay ms).
    window: VecDeque<(f64, f64)>,
    trend: f64,
}

impl Trendline {
    /// One more group delta; the trend (ms of delay per ms) times [`TREND_GAIN`].
    pub(super) fn update(&mut self, arrival_ms: f64, delay_ms: f64) -> f64 {
        let first = *self.first_arrival_ms.get_or_insert(arrival_ms);
        self.accumulated_ms += delay_ms;
        self.smoothed_ms =
            TREND_SMOOTHING * self.smoothed_ms + (1.0 - TREND_SMOOTHING) * self.accumulated_ms;
        self.window
            .push_back((arrival_ms - first, self.smoothed_ms));
        if self.window.len() > TREND_WINDOW {
            self.window.pop_front();
        }
        // libwebrtc waits for a full window; a sender that starts above its uplink fills the
        // queue before 20 groups have arrived, so the first groups speak for themselves (their
        // weight is small anyway: the detector scales the trend by the number of deltas).
        if self.window.len() >= TREND_MIN_POINTS
            && let Some(slope) = slope(&self.window)
        {
            self.trend = slope;
        }
        self.trend * TREND_GAIN
    }
}

/// The least-squares slope of `points`, if they are not all at one x.
fn slope(points: &VecDeque<(f64, f64)>) -> Option<f64> {
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (
            num + (x - mean_x) * (y - mean_y),
            den + (x - mean_x) * (x - mean_x),
        )
    });
    (den != 0.0).then(|| num / den)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` groups 33 ms apart from `from`, each `delay_ms` later than the last.
    fn feed(t: &mut Trendline, from: u32, n: u32, delay_ms: f64) -> Vec<f64> {
        (from..from + n)
            .map(|i| t.update(f64::from(i) * 33.0, delay_ms))
            .collect()
    }

    #[test]
    fn a_steadily_growing_delay_reads_as_its_slope_times_the_gain() {
        let mut t = Trendline::default();
        // 1 ms more delay every 33 ms group.
        let trend = *feed(&mut t, 0, 100, 1.0).last().expect("100 groups");
        assert!((trend - TREND_GAIN / 33.0).abs() < 1e-3, "trend {trend}");
    }

    #[test]
    fn a_burst_of_delay_is_forgotten_once_it_leaves_the_window() {
        let mut t = Trendline::default();
        feed(&mut t, 0, 5, 0.0);
        feed(&mut t, 5, 5, 10.0);
        let quiet = feed(&mut t, 10, 40, 0.0);
        let peak = quiet.iter().copied().fold(0.0, f64::max);
        assert!(peak > 0.25, "peak {peak}");
        // The window has held only quiet groups for 20 groups; what is left is the smoothing.
        let last = *quiet.last().expect("40 groups");
        assert!(last < peak / 10.0, "trend {last} after a peak of {peak}");
    }

    #[test]
    fn groups_at_one_instant_give_no_slope() {
        let mut t = Trendline::default();
        for _ in 0..5 {
            assert_eq!(t.update(7.0, 3.0), 0.0);
        }
    }
}
