//! When a path is dead rather than lossy: the server's silence judged against the cadence at
//! which it actually sends.
//!
//! A WHIP server sends the box a steady trickle: receiver reports (about once a second),
//! answers to the box's ICE consent checks (2.5 a second), transport-wide congestion feedback
//! (Broadcast Box: ten a second). A fixed timeout has to be long enough for the sparsest
//! server and the lossiest path, so it is slow everywhere. Here the silence counts against
//! the gaps this connection has seen: the connection is dead once nothing has arrived for
//! [`FACTOR`] × the 90th percentile of its recent gaps — on a path that still works, that
//! many expected packets in a row would all have to be lost (at 5 % loss and three packets a
//! second: less than one chance in a million per second) — but never sooner than [`FLOOR`] (a
//! Wi-Fi roam or a burst of loss is not a death) and never later than `dead_after`
//! (`reconnect.dead_after_ms`). Until enough gaps are known the expected gap stands in (the
//! WHIP peer's consent-check interval: every ICE agent must answer those), or, without one,
//! `dead_after`. A lossy path makes its own gaps longer, and so its own limit.
//!
//! Pure: the caller says when something arrived and what time it is.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;
use tokio::time::Instant;

/// Silence of this many typical gaps means the path is dead.
pub const FACTOR: u32 = 4;
/// Never dead sooner than this.
pub const FLOOR: Duration = Duration::from_millis(2000);
/// Gaps needed before the cadence is trusted (until then the expected gap, or `dead_after`,
/// applies): about 1.5 s into a connection.
pub const MIN_GAPS: usize = 4;
/// Gaps remembered (about twenty seconds at three packets a second).
pub const WINDOW: usize = 64;

/// What bounds the silence a connection may keep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// `FACTOR` × the typical gap (this gap).
    Cadence(Duration),
    /// The cadence would allow less than the floor.
    Floor,
    /// `dead_after`: the cadence would allow more, or is not known yet.
    DeadAfter,
}

/// Why a connection is judged dead.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dead {
    pub silence: Duration,
    pub limit: Duration,
    pub basis: Limit,
}

impl fmt::Display for Dead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "nothing from the server for {:.2} s (limit {:.2} s: ",
            self.silence.as_secs_f64(),
            self.limit.as_secs_f64()
        )?;
        match self.basis {
            Limit::Cadence(gap) => {
                write!(f, "{FACTOR} × its usual gap of {:.2} s)", gap.as_secs_f64())
            }
            Limit::Floor => f.write_str("the floor)"),
            Limit::DeadAfter => f.write_str("reconnect.dead_after_ms)"),
        }
    }
}

/// The arrivals of one connection.
#[derive(Debug, Clone)]
pub struct Cadence {
    last: Instant,
    gaps: VecDeque<Duration>,
    expected: Option<Duration>,
}

impl Cadence {
    /// Counting starts now (the transport just came up). `expected`: the gap to assume until
    /// enough are seen (`None`: `dead_after` applies until then).
    pub fn new(now: Instant, expected: Option<Duration>) -> Self {
        Cadence {
            last: now,
            gaps: VecDeque::with_capacity(WINDOW),
            expected,
        }
    }

    /// Something arrived from the server at `now` (or since the caller last looked).
    pub fn heard(&mut self, now: Instant) {
        let gap = now.saturating_duration_since(self.last);
        if gap.is_zero() {
            return;
        }
        if self.gaps.len() == WINDOW {
            self.gaps.pop_front();
        }
        self.gaps.push_back(gap);
        self.last = now;
    }

    pub fn silence(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last)
    }

    /// The 90th percentile of the recent gaps, once there are enough of them; the expected
    /// gap before.
    pub fn typical_gap(&self) -> Option<Duration> {
        if self.gaps.len() < MIN_GAPS {
            return self.expected;
        }
        let mut sorted: Vec<Duration> = self.gaps.iter().copied().collect();
        sorted.sort_unstable();
        let rank = (sorted.len() * 9).div_ceil(10).saturating_sub(1);
        Some(sorted[rank])
    }

    /// The longest silence allowed now, and what sets it.
    pub fn limit(&self, dead_after: Duration) -> (Duration, Limit) {
        let Some(gap) = self.typical_gap() else {
            return (dead_after, Limit::DeadAfter);
        };
        let by_cadence = gap.saturating_mul(FACTOR);
        let (limit, basis) = if by_cadence < FLOOR {
            (FLOOR, Limit::Floor)
        } else {
            (by_cadence, Limit::Cadence(gap))
        };
        if limit >= dead_after {
            (dead_after, Limit::DeadAfter)
        } else {
            (limit, basis)
        }
    }

    /// `Some` once the silence at `now` has reached the limit.
    pub fn judge(&self, now: Instant, dead_after: Duration) -> Option<Dead> {
        let silence = self.silence(now);
        let (limit, basis) = self.limit(dead_after);
        (silence >= limit).then_some(Dead {
            silence,
            limit,
            basis,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{RngExt, SeedableRng};

    const DEAD_AFTER: Duration = Duration::from_millis(5000);
    const TICK: Duration = Duration::from_millis(100);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn dead_after_applies_until_the_cadence_is_known() {
        let t0 = Instant::now();
        let c = Cadence::new(t0, None);
        assert_eq!(c.limit(DEAD_AFTER), (DEAD_AFTER, Limit::DeadAfter));
        assert!(c.judge(t0 + ms(4999), DEAD_AFTER).is_none());
        assert!(c.judge(t0 + ms(5000), DEAD_AFTER).is_some());
        // With an expected gap (the consent-check interval), that gap stands in.
        let mut c = Cadence::new(t0, Some(ms(400)));
        assert_eq!(c.limit(DEAD_AFTER), (FLOOR, Limit::Floor));
        let mut sparse = Cadence::new(t0, Some(ms(400)));
        for i in 1..=(MIN_GAPS as u64) {
            c.heard(t0 + ms(300 * i));
            sparse.heard(t0 + ms(1000 * i));
        }
        assert_eq!(c.limit(DEAD_AFTER), (FLOOR, Limit::Floor));
        assert_eq!(
            sparse.limit(DEAD_AFTER),
            (ms(4000), Limit::Cadence(ms(1000))),
            "what is seen replaces what was expected"
        );
    }

    #[test]
    fn a_steady_server_is_judged_by_its_cadence() {
        let t0 = Instant::now();
        let mut c = Cadence::new(t0, None);
        // One packet a second (receiver reports only).
        for i in 1..=10 {
            c.heard(t0 + ms(1000 * i));
        }
        let last = t0 + ms(10_000);
        assert_eq!(c.typical_gap(), Some(ms(1000)));
        assert_eq!(c.limit(DEAD_AFTER), (ms(4000), Limit::Cadence(ms(1000))));
        assert!(c.judge(last + ms(3999), DEAD_AFTER).is_none());
        let dead = c.judge(last + ms(4000), DEAD_AFTER).expect("dead");
        assert_eq!(
            dead.to_string(),
            "nothing from the server for 4.00 s (limit 4.00 s: 4 × its usual gap of 1.00 s)"
        );
    }

    #[test]
    fn a_chatty_server_is_held_to_the_floor_and_dead_after_caps_everything() {
        let t0 = Instant::now();
        let mut c = Cadence::new(t0, None);
        for i in 1..=50 {
            c.heard(t0 + ms(100 * i));
        }
        assert_eq!(c.limit(DEAD_AFTER), (FLOOR, Limit::Floor));
        // dead_after below the floor wins: it is the person's own ceiling.
        assert_eq!(
            c.limit(ms(1000)),
            (ms(1000), Limit::DeadAfter),
            "dead_after is the ceiling"
        );
        let mut sparse = Cadence::new(t0, None);
        for i in 1..=10 {
            sparse.heard(t0 + ms(3000 * i));
        }
        assert_eq!(sparse.limit(DEAD_AFTER), (DEAD_AFTER, Limit::DeadAfter));
    }

    #[test]
    fn the_window_forgets_old_gaps() {
        let t0 = Instant::now();
        let mut c = Cadence::new(t0, None);
        let mut t = t0;
        for _ in 0..WINDOW {
            t += ms(1000);
            c.heard(t);
        }
        for _ in 0..WINDOW {
            t += ms(200);
            c.heard(t);
        }
        assert_eq!(c.typical_gap(), Some(ms(200)));
        c.heard(t); // nothing new at the same instant
        assert_eq!(c.typical_gap(), Some(ms(200)));
    }

    /// What the WHIP probe sees: answers to consent checks every 400 ms and receiver reports
    /// every 0.5–1.5 s (aiortc), each lost with probability `loss` (a consent check needs the
    /// request and the answer through), sampled every 100 ms. Returns the first judgement of
    /// death after `start`, with the time of the last arrival before it.
    fn simulate(
        seed: u64,
        loss: f64,
        seconds: u64,
        cut_at: Option<Duration>,
    ) -> Option<(Duration, Dead)> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let t0 = Instant::now();
        let mut c = Cadence::new(t0, Some(ms(400)));
        let mut arrivals: Vec<Duration> = Vec::new();
        let mut t = ms(0);
        while t < Duration::from_secs(seconds) {
            t += ms(400);
            if rng.random::<f64>() >= 1.0 - (1.0 - loss) * (1.0 - loss) {
                arrivals.push(t + ms(20));
            }
        }
        let mut t = ms(0);
        while t < Duration::from_secs(seconds) {
            t += ms(rng.random_range(500..1500));
            if rng.random::<f64>() >= loss {
                arrivals.push(t);
            }
        }
        if let Some(cut) = cut_at {
            arrivals.retain(|&a| a < cut);
        }
        arrivals.sort();
        let mut next = 0;
        let mut last = ms(0);
        let mut now = ms(0);
        while now < Duration::from_secs(seconds) {
            now += TICK;
            let before = next;
            while next < arrivals.len() && arrivals[next] <= now {
                last = arrivals[next];
                next += 1;
            }
            if next > before {
                c.heard(t0 + now);
            }
            if let Some(dead) = c.judge(t0 + now, DEAD_AFTER) {
                return Some((now - last, dead));
            }
        }
        None
    }

    #[test]
    fn five_percent_loss_for_hours_is_never_judged_dead() {
        for seed in 0..20 {
            let verdict = simulate(seed, 0.05, 600, None);
            assert_eq!(verdict, None, "seed {seed}: a lossy path was judged dead");
        }
    }

    #[test]
    fn a_silent_path_is_judged_dead_within_3_s_of_the_last_packet() {
        for seed in 0..20 {
            let cut = Duration::from_secs(30) + ms(seed * 37);
            let (after_last, dead) =
                simulate(seed, 0.0, 60, Some(cut)).expect("a dead path is noticed");
            assert!(
                after_last <= ms(2200),
                "seed {seed}: {after_last:?} after the last packet ({dead})"
            );
            let (after_last, _) =
                simulate(seed, 0.05, 60, Some(cut)).expect("a dead lossy path is noticed");
            assert!(after_last <= ms(3000), "seed {seed}: {after_last:?}");
        }
    }
}
