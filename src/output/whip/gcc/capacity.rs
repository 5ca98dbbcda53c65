//! What the uplink carried when the detector saw overuse, kept as libwebrtc's
//! `LinkCapacityEstimator` keeps it, so the assembled controller can tell when the uplink changed.
//!
//! The library's rate controller approaches the rate of its last cut additively (60 kbit/s per
//! second) for good: after an uplink grows back from 1 to 2.5 Mbit/s that is half a minute.
//! libwebrtc forgets the old capacity once what arrives leaves its error band, and grows
//! multiplicatively again; `mod.rs` does the same with this.

/// The uplink's capacity as libwebrtc's `LinkCapacityEstimator` keeps it: a running mean of
/// the rates received when the detector saw overuse, and their spread relative to the mean.
/// A received rate outside mean ± 3 deviations says the uplink is no longer what it was.
#[derive(Debug, Clone, Copy)]
pub(super) struct LinkCapacity {
    /// kbit/s.
    mean: Option<f64>,
    /// Variance over the mean (kbit/s), held within libwebrtc's 0.4..=2.5.
    variance: f64,
}

impl Default for LinkCapacity {
    fn default() -> Self {
        LinkCapacity {
            mean: None,
            variance: 0.4,
        }
    }
}

impl LinkCapacity {
    const ALPHA: f64 = 0.05;

    pub(super) fn on_overuse(&mut self, received_bps: f64) {
        let sample = received_bps / 1000.0;
        let mean = match self.mean {
            None => sample,
            Some(m) => (1.0 - Self::ALPHA) * m + Self::ALPHA * sample,
        };
        let error = mean - sample;
        self.variance = ((1.0 - Self::ALPHA) * self.variance
            + Self::ALPHA * error * error / mean.max(1.0))
        .clamp(0.4, 2.5);
        self.mean = Some(mean);
    }

    fn deviation(&self, mean: f64) -> f64 {
        (self.variance * mean).sqrt()
    }

    /// bit/s.
    pub(super) fn upper(&self) -> Option<f64> {
        self.mean.map(|m| (m + 3.0 * self.deviation(m)) * 1000.0)
    }

    /// bit/s.
    pub(super) fn lower(&self) -> Option<f64> {
        self.mean.map(|m| (m - 3.0 * self.deviation(m)) * 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uplink_s_capacity_is_forgotten_only_outside_its_error_band() {
        let mut c = LinkCapacity::default();
        assert_eq!((c.upper(), c.lower()), (None, None));
        for _ in 0..20 {
            c.on_overuse(1_000_000.0);
        }
        // Steady cuts at 1 Mbit/s: the spread stays at its floor (0.4), three deviations are
        // sqrt(0.4 x 1000) x 3 = 60 kbit/s.
        let upper = c.upper().expect("a mean");
        let lower = c.lower().expect("a mean");
        assert!((upper - 1_060_000.0).abs() < 1000.0, "upper {upper}");
        assert!((lower - 940_000.0).abs() < 1000.0, "lower {lower}");
        // Cuts that scatter widen the band (up to the ceiling of 2.5).
        for i in 0..40 {
            c.on_overuse(if i % 2 == 0 { 700_000.0 } else { 1_300_000.0 });
        }
        assert!(c.upper().expect("a mean") - c.lower().expect("a mean") > 200_000.0);
    }
}
