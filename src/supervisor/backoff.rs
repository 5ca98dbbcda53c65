//! The retry schedule, as a pure function of "how many failures in a row".
//!
//! The box's users were promised: the first retry after a drop is immediate; if that fails,
//! wait `initial_delay` (1 s); each later wait multiplies (×2), capped at `max_delay` (30 s);
//! every wait is jittered (±10 %) so a fleet of boxes does not stampede a server that comes
//! back. Time and randomness are arguments, so the schedule is tested without clocks.

use crate::config::ReconnectConfig;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct BackoffPolicy {
    pub initial_delay: Duration,
    pub max_delay: Duration,
    pub multiplier: f64,
    pub jitter: f64,
}

impl From<&ReconnectConfig> for BackoffPolicy {
    fn from(c: &ReconnectConfig) -> Self {
        BackoffPolicy {
            initial_delay: c.initial_delay,
            max_delay: c.max_delay,
            multiplier: c.multiplier,
            jitter: c.jitter,
        }
    }
}

impl BackoffPolicy {
    /// The un-jittered wait before the next attempt after `streak` failures in a row.
    ///
    /// A drop from `live` counts as the first failure of a streak, and so does a failed first
    /// connection: streak 1 → retry at once; 2 → `initial_delay`; 3 → `initial_delay ×
    /// multiplier`; … capped at `max_delay`.
    pub fn base_delay(&self, streak: u32) -> Duration {
        if streak <= 1 {
            return Duration::ZERO;
        }
        let exponent = (streak - 2).min(64) as i32;
        let secs = self.initial_delay.as_secs_f64() * self.multiplier.powi(exponent);
        let cap = self.max_delay.as_secs_f64();
        Duration::from_secs_f64(secs.min(cap))
    }

    /// The wait with jitter applied. `unit` is a uniform sample from [-1, 1]; the result stays
    /// within ±`jitter` of the base and never exceeds `max_delay`. Zero stays zero: an
    /// immediate retry is not delayed by jitter.
    pub fn delay(&self, streak: u32, unit: f64) -> Duration {
        let base = self.base_delay(streak);
        if base.is_zero() {
            return base;
        }
        let factor = 1.0 + self.jitter * unit.clamp(-1.0, 1.0);
        let jittered = base.as_secs_f64() * factor;
        Duration::from_secs_f64(jittered.min(self.max_delay.as_secs_f64()).max(0.0))
    }

    /// The schedule as an iterator of un-jittered waits, for printing and tests.
    pub fn schedule(&self) -> impl Iterator<Item = Duration> + '_ {
        (1..).map(|streak| self.base_delay(streak))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BackoffPolicy {
        BackoffPolicy::from(&ReconnectConfig::default())
    }

    #[test]
    fn promised_schedule() {
        let waits: Vec<u64> = policy()
            .schedule()
            .take(9)
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(
            waits,
            vec![0, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
    }

    #[test]
    fn jitter_stays_within_bounds_and_cap() {
        let p = policy();
        for streak in 1..40 {
            let base = p.base_delay(streak).as_secs_f64();
            for i in 0..=20 {
                let unit = -1.0 + f64::from(i) / 10.0;
                let d = p.delay(streak, unit).as_secs_f64();
                assert!(d <= 30.0 + 1e-9, "streak {streak}: {d} exceeds the cap");
                assert!(d >= base * 0.9 - 1e-9, "streak {streak}: {d} below -10%");
                assert!(d <= base * 1.1 + 1e-9, "streak {streak}: {d} above +10%");
            }
        }
    }

    #[test]
    fn immediate_retry_is_not_jittered() {
        assert_eq!(policy().delay(1, 1.0), Duration::ZERO);
        assert_eq!(policy().delay(0, -1.0), Duration::ZERO);
    }

    #[test]
    fn jitter_spreads_a_fleet() {
        let p = policy();
        assert!(p.delay(3, -1.0) < p.delay(3, 1.0));
        assert_eq!(p.delay(3, -1.0), Duration::from_millis(1800));
    }

    #[test]
    fn huge_streaks_do_not_overflow() {
        assert_eq!(policy().base_delay(u32::MAX), Duration::from_secs(30));
    }
}
