//! What an RTMP uplink carries, judged from the send backlog.
//!
//! RTMP has no feedback channel: the server never says what arrives. But the connection's own
//! branch shows it: access units wait in the branch (appsrc ▸ flvmux ▸ rtmp2sink) when the
//! socket takes less than the encoder makes, and what the socket takes per second is then
//! what the uplink carries. So: a backlog of half a second or more means the uplink is full,
//! and the rate the socket took over the last two seconds is the estimate; a backlog that has
//! stayed under 100 ms for two seconds means there is room, and the estimate grows by 8 % a
//! second (GCC's multiplicative increase) towards the ceiling; in between it holds. Before
//! the first backlog there is no estimate: the encoder stays where the connection started.
//!
//! Pure: the connection samples the backlog (appsrc's queued time) and rtmp2sink's byte count;
//! time is an argument.

use crate::output::adapt::{Estimate, EstimateSource};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Fixed in code; the defaults are the documented values.
#[derive(Debug, Clone, PartialEq)]
pub struct BacklogSettings {
    /// A backlog this long means the uplink is full. Default 500 ms.
    pub full: Duration,
    /// A backlog under this means the uplink has room... Default 100 ms.
    pub room: Duration,
    /// ...once it has stayed there this long. Default 2 s.
    pub room_for: Duration,
    /// What the socket took is measured over this window. Default 2 s.
    pub window: Duration,
    /// Growth per second while there is room. Default 1.08.
    pub growth: f64,
}

impl Default for BacklogSettings {
    fn default() -> Self {
        BacklogSettings {
            full: Duration::from_millis(500),
            room: Duration::from_millis(100),
            room_for: Duration::from_secs(2),
            window: Duration::from_secs(2),
            growth: 1.08,
        }
    }
}

pub struct BacklogEstimator {
    settings: BacklogSettings,
    /// The estimate never leaves this range (bit/s).
    min_bps: f64,
    max_bps: f64,
    estimate: Option<f64>,
    /// (when, bytes the socket had taken), oldest first, covering `window`.
    sent: VecDeque<(Instant, u64)>,
    room_since: Option<Instant>,
    last: Option<Instant>,
}

impl BacklogEstimator {
    pub fn new(settings: BacklogSettings, min_bps: f64, max_bps: f64) -> Self {
        BacklogEstimator {
            settings,
            min_bps,
            max_bps: max_bps.max(min_bps),
            estimate: None,
            sent: VecDeque::new(),
            room_since: None,
            last: None,
        }
    }

    /// What the socket took per second over the window, once the window is half full.
    fn taken_bps(&self) -> Option<f64> {
        let (first_at, first) = *self.sent.front()?;
        let (last_at, last) = *self.sent.back()?;
        let span = last_at.saturating_duration_since(first_at);
        (span >= self.settings.window / 2)
            .then(|| last.saturating_sub(first) as f64 * 8.0 / span.as_secs_f64())
    }

    /// One sample: how long the queued access units would play (`backlog`), and the bytes the
    /// socket has taken so far. Returns the estimate, if there is one yet.
    pub fn observe(
        &mut self,
        now: Instant,
        backlog: Duration,
        sent_bytes: u64,
    ) -> Option<Estimate> {
        let elapsed = self
            .last
            .map(|at| now.saturating_duration_since(at))
            .unwrap_or_default();
        self.last = Some(now);
        while self
            .sent
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > self.settings.window)
        {
            self.sent.pop_front();
        }
        self.sent.push_back((now, sent_bytes));
        if backlog >= self.settings.full {
            self.room_since = None;
            if let Some(taken) = self.taken_bps() {
                // What the uplink carried; never more than the last estimate, so a backlog that
                // is only draining slowly cannot raise it.
                let taken = self.estimate.map_or(taken, |e| taken.min(e));
                self.estimate = Some(taken.clamp(self.min_bps, self.max_bps));
            }
        } else if backlog <= self.settings.room {
            let since = *self.room_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= self.settings.room_for
                && let Some(e) = self.estimate.as_mut()
            {
                *e = (*e * self.settings.growth.powf(elapsed.as_secs_f64())).min(self.max_bps);
            }
        } else {
            self.room_since = None;
        }
        self.estimate.map(|bps| Estimate {
            bps,
            source: EstimateSource::Backlog,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: f64 = 350_000.0;
    const MAX: f64 = 2_940_000.0;

    /// A simulated branch: the encoder makes `make_bps`, the uplink takes `link_bps`, the
    /// backlog is what has not gone yet. Sampled every 200 ms.
    struct Branch {
        queued_bits: f64,
        sent_bytes: u64,
    }

    impl Branch {
        fn step(&mut self, make_bps: f64, link_bps: f64, dt: f64) {
            let offered = self.queued_bits + make_bps * dt;
            let taken = offered.min(link_bps * dt);
            self.queued_bits = offered - taken;
            self.sent_bytes += (taken / 8.0) as u64;
        }

        fn backlog(&self, make_bps: f64) -> Duration {
            Duration::from_secs_f64(self.queued_bits / make_bps.max(1.0))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_backlog_no_estimate() {
        let t0 = Instant::now();
        let mut e = BacklogEstimator::new(BacklogSettings::default(), MIN, MAX);
        for i in 0..50u64 {
            let at = t0 + Duration::from_millis(200 * i);
            assert_eq!(e.observe(at, Duration::ZERO, i * 50_000), None);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_uplink_is_measured_and_room_is_probed_back() {
        let t0 = Instant::now();
        let mut e = BacklogEstimator::new(BacklogSettings::default(), MIN, MAX);
        let mut branch = Branch {
            queued_bits: 0.0,
            sent_bytes: 0,
        };
        // The encoder follows 85 % of the estimate (2.5 Mbit/s before there is one); the
        // uplink carries 1 Mbit/s for 20 s, then 10.
        let mut make = 2_500_000.0;
        let mut estimates = vec![];
        for i in 1..=300u64 {
            let t = i as f64 * 0.2;
            let link = if t < 20.0 { 1_000_000.0 } else { 10_000_000.0 };
            branch.step(make, link, 0.2);
            let at = t0 + Duration::from_millis(200 * i);
            if let Some(est) = e.observe(at, branch.backlog(make), branch.sent_bytes) {
                assert_eq!(est.source, EstimateSource::Backlog);
                make = (est.bps * 0.85).min(2_500_000.0);
                estimates.push((t, est.bps));
            }
        }
        let first = estimates
            .first()
            .expect("an estimate once the backlog built");
        assert!(first.0 <= 2.0, "first estimate after {} s", first.0);
        assert!(
            (900_000.0..=1_100_000.0).contains(&first.1),
            "first estimate {} on a 1 Mbit/s uplink",
            first.1
        );
        // While the uplink is narrow, the estimate saws around it: measured, probed a little
        // above, measured again.
        let narrow: Vec<f64> = estimates
            .iter()
            .filter(|(t, _)| (5.0..20.0).contains(t))
            .map(|(_, e)| *e)
            .collect();
        assert!(
            narrow.iter().all(|e| (900_000.0..=1_400_000.0).contains(e)),
            "{narrow:?}"
        );
        let mean = narrow.iter().sum::<f64>() / narrow.len() as f64;
        assert!(mean < 1_200_000.0, "mean {mean}");
        // Once it widens, the estimate climbs to the ceiling.
        let top = estimates
            .iter()
            .find(|(_, e)| *e >= MAX)
            .map(|(t, _)| *t)
            .expect("the ceiling again");
        assert!(
            top - 20.0 < 25.0,
            "back at the ceiling {:.1} s after",
            top - 20.0
        );
    }
}
