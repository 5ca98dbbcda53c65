//! What an RTMP uplink carries, judged from the send backlog.
//!
//! RTMP has no feedback channel: the server never says what arrives. But the connection's own
//! branch shows it: access units wait in the branch (appsrc ▸ flvmux ▸ rtmp2sink) when the
//! socket takes less than the encoder makes, and what the socket takes per second is then
//! what the uplink carries. So: a backlog of 300 ms or more means the uplink is full, and the
//! rate the socket took over the last two seconds is the estimate; a backlog that has stayed
//! under 100 ms for two seconds means there is room, and the estimate grows; in between it
//! holds. Before the first backlog there is no estimate: the encoder stays where the connection
//! started.
//!
//! The growth is AIMD's, as in GCC: by 8 % a second (multiplicative) while the estimate is well
//! below the rate last measured full, by 3 % a second from 0.9 to 2 times it, and by 8 %
//! again above that (the uplink has grown: 23 s from the rate measured to twice it; what the
//! socket takes while the backlog stands reads low, as TCP recovers from the uplink's drops,
//! so the band is wide). The queue in front of the backlog (the kernel's send buffer, the uplink's own
//! queue) hides a full uplink for a second or more, so probing at full speed past the last
//! measured rate would overshoot by that much every time.
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
    /// A backlog this long means the uplink is full. Default 300 ms.
    pub full: Duration,
    /// A backlog under this means the uplink has room... Default 100 ms.
    pub room: Duration,
    /// ...once it has stayed there this long. Default 2 s.
    pub room_for: Duration,
    /// What the socket took is measured over this window. Default 2 s.
    pub window: Duration,
    /// Growth per second while there is room, below `near` times the rate last measured
    /// full. Default 1.08.
    pub growth: f64,
    /// Growth per second near and above the rate last measured full. Default 1.03.
    pub near_growth: f64,
    /// Growth is `near_growth` from `near` to `far` times the rate last measured full.
    /// Defaults 0.9 and 2.
    pub near: f64,
    pub far: f64,
}

impl Default for BacklogSettings {
    fn default() -> Self {
        BacklogSettings {
            full: Duration::from_millis(300),
            room: Duration::from_millis(100),
            room_for: Duration::from_secs(2),
            window: Duration::from_secs(2),
            growth: 1.08,
            near_growth: 1.03,
            near: 0.9,
            far: 2.0,
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
    /// What the uplink carried when it was last measured full (bit/s).
    full_bps: Option<f64>,
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
            full_bps: None,
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
                // While the backlog stands, the socket takes what the uplink carries.
                let taken = taken.clamp(self.min_bps, self.max_bps);
                self.estimate = Some(taken);
                self.full_bps = Some(taken);
            }
        } else if backlog <= self.settings.room {
            let since = *self.room_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= self.settings.room_for
                && let Some(e) = self.estimate.as_mut()
            {
                let s = &self.settings;
                let near = self
                    .full_bps
                    .is_some_and(|full| (full * s.near..full * s.far).contains(e));
                let growth = if near { s.near_growth } else { s.growth };
                *e = (*e * growth.powf(elapsed.as_secs_f64())).min(self.max_bps);
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

    /// A simulated branch: the encoder makes `make_bps`; the socket takes it into a send
    /// buffer of `HIDDEN_BITS` (the kernel's, and the uplink's own queue: invisible to the
    /// branch), which the uplink drains at `link_bps`; the backlog is what the socket has not
    /// taken yet. Sampled every 200 ms.
    struct Branch {
        queued_bits: f64,
        hidden_bits: f64,
        sent_bytes: u64,
    }

    const HIDDEN_BITS: f64 = 800_000.0;

    impl Branch {
        fn new() -> Self {
            Branch {
                queued_bits: 0.0,
                hidden_bits: 0.0,
                sent_bytes: 0,
            }
        }

        fn step(&mut self, make_bps: f64, link_bps: f64, dt: f64) {
            self.hidden_bits = (self.hidden_bits - link_bps * dt).max(0.0);
            let offered = self.queued_bits + make_bps * dt;
            let taken = offered.min(HIDDEN_BITS - self.hidden_bits);
            self.hidden_bits += taken;
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
        let mut branch = Branch::new();
        // The encoder follows 85 % of the estimate (2.5 Mbit/s before there is one); the
        // uplink carries 1 Mbit/s for 60 s, then 10.
        let mut make = 2_500_000.0;
        let mut first = None;
        let (mut made, mut samples, mut worst_backlog) = (0.0, 0, Duration::ZERO);
        let mut ceiling_again = None;
        for i in 1..=600u64 {
            let t = i as f64 * 0.2;
            let link = if t < 60.0 { 1_000_000.0 } else { 10_000_000.0 };
            branch.step(make, link, 0.2);
            let at = t0 + Duration::from_millis(200 * i);
            let backlog = branch.backlog(make);
            if let Some(est) = e.observe(at, backlog, branch.sent_bytes) {
                assert_eq!(est.source, EstimateSource::Backlog);
                first.get_or_insert((t, est.bps));
                make = (est.bps * 0.85).min(2_500_000.0);
                if t >= 60.0 && est.bps >= MAX {
                    ceiling_again.get_or_insert(t - 60.0);
                }
            }
            if (10.0..60.0).contains(&t) {
                made += make;
                samples += 1;
                worst_backlog = worst_backlog.max(backlog);
            }
        }
        let (first_t, first_bps) = first.expect("an estimate once the backlog built");
        assert!(first_t <= 3.0, "first estimate after {first_t} s");
        assert!(
            (900_000.0..=1_500_000.0).contains(&first_bps),
            "first estimate {first_bps} on a 1 Mbit/s uplink"
        );
        // While the uplink is narrow, the encoder saws just under it: measured, probed slowly
        // a little above, measured again; the backlog stays short.
        let mean = made / f64::from(samples);
        assert!(
            (750_000.0..=1_000_000.0).contains(&mean),
            "the encoder made {mean} bit/s on average into 1 Mbit/s"
        );
        assert!(
            worst_backlog <= Duration::from_millis(1500),
            "backlog up to {worst_backlog:?}"
        );
        // Once it widens, the estimate climbs to the ceiling.
        let top = ceiling_again.expect("the ceiling again");
        assert!(top < 40.0, "back at the ceiling {top:.1} s after");
    }
}
