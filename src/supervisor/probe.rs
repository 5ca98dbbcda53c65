//! When to look whether the server is back, and what an answer means: pure, time passed in.
//!
//! The backoff schedule (`backoff.rs`) rules the real attempts, and after a long outage its
//! waits are long: a server down 23 s was back 11 s before the box's next attempt. So while
//! the machine waits out a step longer than [`PROBE_WHEN_WAIT_OVER`], the driver makes a cheap
//! probe (a TCP connect to the server's port) at most every [`PROBE_EVERY`]. A probe that finds
//! the server answering *after one in the same wait found it silent* means it came back: the
//! machine then makes its next attempt at once (`Event::ServerBack`, jittered there). A server
//! whose port answered all along is not "back": the attempt failed for another reason, and
//! the schedule goes on as it was.

use std::time::Duration;
use tokio::time::Instant;

/// Waits shorter than this are not probed: the real attempt comes soon enough.
pub const PROBE_WHEN_WAIT_OVER: Duration = Duration::from_secs(2);
/// At most one probe this often.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProbePlan {
    /// The wait being probed: when the machine's next attempt is due, and the last probe
    /// (or the wait's start).
    wait: Option<(Instant, Instant)>,
    /// A probe in this wait found the server silent.
    seen_down: bool,
    /// A probe is out and has not answered.
    in_flight: bool,
}

impl ProbePlan {
    pub fn new() -> Self {
        Self::default()
    }

    /// The machine's next attempt is due at `retry_at` (`None`: it is not waiting). A new
    /// wait starts a new plan.
    pub fn waiting(&mut self, now: Instant, retry_at: Option<Instant>) {
        match (retry_at, self.wait) {
            (Some(at), Some((due, _))) if at == due => {}
            (Some(at), _) if at.saturating_duration_since(now) > PROBE_WHEN_WAIT_OVER => {
                self.wait = Some((at, now));
                self.seen_down = false;
            }
            _ => {
                self.wait = None;
                self.seen_down = false;
            }
        }
    }

    /// When the next probe should go out, if one should.
    pub fn next_probe(&self) -> Option<Instant> {
        let (due, last) = self.wait?;
        let at = last + PROBE_EVERY;
        (!self.in_flight && at + PROBE_EVERY <= due).then_some(at)
    }

    /// A probe goes out now.
    pub fn probing(&mut self, now: Instant) {
        if let Some((_, last)) = &mut self.wait {
            *last = now;
            self.in_flight = true;
        }
    }

    /// The probe answered: whether the server `answers`. Returns whether it is back (silent
    /// earlier in this wait, answering now).
    pub fn answered(&mut self, answers: bool) -> bool {
        self.in_flight = false;
        if self.wait.is_none() {
            return false;
        }
        if !answers {
            self.seen_down = true;
            return false;
        }
        let back = self.seen_down;
        if back {
            // The machine is told; no more probes in this wait.
            self.wait = None;
            self.seen_down = false;
        }
        back
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(t0: Instant, s: f64) -> Instant {
        t0 + Duration::from_secs_f64(s)
    }

    #[tokio::test(start_paused = true)]
    async fn short_waits_are_not_probed() {
        let t0 = Instant::now();
        let mut p = ProbePlan::new();
        p.waiting(t0, Some(secs(t0, 2.0)));
        assert_eq!(p.next_probe(), None);
        p.waiting(t0, None);
        assert_eq!(p.next_probe(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_wait_is_probed_once_a_second_until_the_server_is_back() {
        let t0 = Instant::now();
        let mut p = ProbePlan::new();
        let due = secs(t0, 16.0);
        p.waiting(t0, Some(due));
        let mut probes = vec![];
        let mut back_at = None;
        // The server comes back 7.3 s into the wait.
        while let Some(at) = p.next_probe() {
            p.probing(at);
            probes.push(at);
            assert_eq!(p.next_probe(), None, "one probe at a time");
            // The same wait reported again changes nothing.
            p.waiting(at, Some(due));
            if p.answered(at >= secs(t0, 7.3)) {
                back_at = Some(at);
                break;
            }
        }
        assert_eq!(back_at, Some(secs(t0, 8.0)));
        for w in probes.windows(2) {
            assert!(w[1] - w[0] >= PROBE_EVERY, "{probes:?}");
        }
        assert_eq!(probes.len(), 8);
        assert_eq!(p.next_probe(), None, "told once, then quiet");
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_answered_all_along_is_not_back() {
        let t0 = Instant::now();
        let mut p = ProbePlan::new();
        let due = secs(t0, 4.5);
        p.waiting(t0, Some(due));
        let mut probes = 0;
        while let Some(at) = p.next_probe() {
            p.probing(at);
            probes += 1;
            assert!(!p.answered(true));
        }
        // At 1, 2, 3 s; not at 4 s, half a second before the real attempt.
        assert_eq!(probes, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_wait_starts_afresh() {
        let t0 = Instant::now();
        let mut p = ProbePlan::new();
        p.waiting(t0, Some(secs(t0, 8.0)));
        let at = p.next_probe().expect("a probe");
        p.probing(at);
        assert!(!p.answered(false));
        // The attempt came (by the schedule), failed, and a new wait began: silence seen in
        // the old wait does not count.
        let t1 = secs(t0, 8.5);
        p.waiting(t1, Some(secs(t1, 16.0)));
        let at = p.next_probe().expect("a probe");
        assert_eq!(at, secs(t1, 1.0));
        p.probing(at);
        assert!(!p.answered(true));
    }
}
