//! Coalescing of netlink bursts.
//!
//! A link flap or a DHCP renewal produces a burst of netlink messages within a few
//! milliseconds. Re-reading the kernel's state once per burst (not once per message) keeps the
//! log and the supervisor quiet, but the report must still come fast: the fault lab wants
//! frames back within 1 s of link-up. So a burst ends after [`QUIET`] without a message, and
//! never later than [`MAX_DELAY`] after its first message, however long it goes on.
//!
//! Pure: the caller passes the time in.

use std::time::Duration;
use tokio::time::Instant;

/// A burst is over when no message came for this long.
pub const QUIET: Duration = Duration::from_millis(15);
/// Upper bound between the first message of a burst and its evaluation.
pub const MAX_DELAY: Duration = Duration::from_millis(50);

#[derive(Debug, Clone)]
pub struct Debounce {
    quiet: Duration,
    max_delay: Duration,
    /// First and latest message of the burst being collected.
    burst: Option<(Instant, Instant)>,
}

impl Default for Debounce {
    fn default() -> Self {
        Debounce::new(QUIET, MAX_DELAY)
    }
}

impl Debounce {
    pub fn new(quiet: Duration, max_delay: Duration) -> Self {
        Debounce {
            quiet,
            max_delay,
            burst: None,
        }
    }

    /// A message arrived at `now`.
    pub fn event(&mut self, now: Instant) {
        self.burst = match self.burst {
            Some((first, _)) => Some((first, now)),
            None => Some((now, now)),
        };
    }

    /// When the burst must be evaluated; `None` when no message is pending.
    pub fn deadline(&self) -> Option<Instant> {
        self.burst
            .map(|(first, last)| (last + self.quiet).min(first + self.max_delay))
    }

    /// Whether the burst is due at `now`; if so it is consumed and the next message starts a
    /// new burst.
    pub fn fire(&mut self, now: Instant) -> bool {
        match self.deadline() {
            Some(deadline) if deadline <= now => {
                self.burst = None;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn idle_has_no_deadline() {
        let mut d = Debounce::default();
        assert_eq!(d.deadline(), None);
        assert!(!d.fire(Instant::now()));
    }

    #[test]
    fn single_message_is_evaluated_after_the_quiet_time() {
        let t0 = Instant::now();
        let mut d = Debounce::default();
        d.event(t0);
        assert_eq!(d.deadline(), Some(t0 + QUIET));
        assert!(!d.fire(t0 + QUIET - ms(1)));
        assert!(d.fire(t0 + QUIET));
        assert_eq!(d.deadline(), None, "fired burst is consumed");
    }

    #[test]
    fn burst_is_coalesced_into_one_evaluation() {
        let t0 = Instant::now();
        let mut d = Debounce::default();
        for i in 0..5 {
            d.event(t0 + ms(i * 2));
        }
        assert_eq!(d.deadline(), Some(t0 + ms(8) + QUIET));
        assert!(d.fire(t0 + ms(8) + QUIET));
        assert!(!d.fire(t0 + ms(100)));
    }

    #[test]
    fn endless_burst_is_still_evaluated_within_max_delay() {
        let t0 = Instant::now();
        let mut d = Debounce::default();
        let mut fired = Vec::new();
        // A message every 5 ms for 300 ms: never quiet.
        for i in 0..=60 {
            let now = t0 + ms(i * 5);
            if d.fire(now) {
                fired.push(now - t0);
            }
            d.event(now);
        }
        assert!(!fired.is_empty());
        let mut previous = Duration::ZERO;
        for at in fired {
            assert!(
                at - previous <= MAX_DELAY + ms(5),
                "{at:?} after {previous:?}"
            );
            previous = at;
        }
    }
}
