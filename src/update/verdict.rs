//! Whether a system on trial has proved itself: the "mark good" decision, pure and clocked by
//! its caller.
//!
//! After an update the box boots the new slot once (the firmware's tryboot). Only a system
//! that shows it can do the box's job is kept; anything else is left, and the next boot — by
//! the checker's reboot, the watchdog or a power cut — returns to the old slot. What counts:
//!
//! - **ready**: the daemon answers on its status socket in a state other than `starting`
//!   (its capture and encoder run; the supervisor loop turns).
//! - **live again**, when the box was live before the update: the state `live`.
//! - **network down**: the daemon says `offline` (no uplink has a route to the server) and
//!   every interface the stream used before the update exists again. While that lasts the
//!   live deadline waits; after [`Rules::offline_grace`] of it the system is kept with the
//!   reason saying so, since the old system could do no better without a network and an
//!   owner far away would rather not lose the update to a cable. An interface that is gone
//!   (the new system lost its driver) is not a network that is down: it rolls back.
//!
//! Each live deadline counts from the later of the trial's start and the last moment the
//! network was seen down, so a network that returns late still gets the full time.

use crate::supervisor::StreamState;
use std::time::Duration;
use tokio::time::Instant;

/// How long a system on trial has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// From the trial's start (or the network's return) to `live` — or to ready, for a box
    /// that was not live before the update.
    pub live_within: Duration,
    /// How long the network may be down before the system is kept without having shown it
    /// goes live.
    pub offline_grace: Duration,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            live_within: Duration::from_secs(120),
            offline_grace: Duration::from_secs(600),
        }
    }
}

/// What the checker saw at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The daemon's state, or `None` when nothing answered on its status socket.
    pub daemon: Option<StreamState>,
    /// Interfaces the stream used before the update that do not exist now.
    pub missing_uplinks: Vec<String>,
}

/// The decision after an observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not decided yet: observe again.
    Wait,
    /// Keep this system (mark its slot good). The text says why, for status and the log.
    Good(String),
    /// Leave this system (the next boot is the old slot). The text says why.
    Bad(String),
}

/// One trial, from the checker's start to its verdict.
#[derive(Debug, Clone)]
pub struct Trial {
    rules: Rules,
    started: Instant,
    /// The box was live when the update was installed: it must be live again.
    was_live: bool,
    /// The last moment the network was seen down (the live deadline counts from it).
    offline_seen: Option<Instant>,
    /// The last state the daemon answered with, for the reason.
    last: Option<StreamState>,
}

impl Trial {
    pub fn new(rules: Rules, started: Instant, was_live: bool) -> Trial {
        Trial {
            rules,
            started,
            was_live,
            offline_seen: None,
            last: None,
        }
    }

    /// Decides on what was seen at `now`.
    pub fn observe(&mut self, now: Instant, seen: &Observation) -> Verdict {
        if seen.daemon.is_some() {
            self.last = seen.daemon;
        }
        let elapsed = now.saturating_duration_since(self.started);
        let ready = matches!(seen.daemon, Some(s) if s != StreamState::Starting);
        if ready && !self.was_live {
            return Verdict::Good(format!("daemon ready after {}", secs(elapsed)));
        }
        if seen.daemon == Some(StreamState::Live) {
            return Verdict::Good(format!("live again {} after boot", secs(elapsed)));
        }
        let network_down = seen.daemon == Some(StreamState::Offline);
        if network_down && seen.missing_uplinks.is_empty() {
            self.offline_seen = Some(now);
            if elapsed >= self.rules.offline_grace {
                return Verdict::Good(format!(
                    "network down (offline) for {} with the daemon ready: kept without \
                     having seen it live",
                    secs(elapsed)
                ));
            }
            return Verdict::Wait;
        }
        let from = self.offline_seen.unwrap_or(self.started);
        if now.saturating_duration_since(from) < self.rules.live_within {
            return Verdict::Wait;
        }
        let limit = secs(self.rules.live_within);
        let what = if self.was_live { "live" } else { "ready" };
        let detail = match self.last {
            None => "the daemon never answered on its status socket".to_string(),
            Some(state) if !seen.missing_uplinks.is_empty() => {
                format!("state {state}; {} missing", seen.missing_uplinks.join(", "))
            }
            Some(state) => format!("state {state}"),
        };
        Verdict::Bad(format!("not {what} within {limit} ({detail})"))
    }
}

/// `120 s`: whole seconds, as a person reads a deadline.
fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn seen(state: Option<StreamState>) -> Observation {
        Observation {
            daemon: state,
            missing_uplinks: Vec::new(),
        }
    }

    /// Feeds `(second, state)` observations in order and returns the first decision with the
    /// second it came at.
    fn run(was_live: bool, steps: &[(u64, Option<StreamState>)]) -> (u64, Verdict) {
        let t0 = Instant::now();
        let mut trial = Trial::new(Rules::default(), t0, was_live);
        for &(at, state) in steps {
            match trial.observe(t0 + S * at as u32, &seen(state)) {
                Verdict::Wait => {}
                v => return (at, v),
            }
        }
        (u64::MAX, Verdict::Wait)
    }

    /// One observation a second from 0 to `until`, the state given by `state_at`.
    fn every_second(
        until: u64,
        state_at: impl Fn(u64) -> Option<StreamState>,
    ) -> Vec<(u64, Option<StreamState>)> {
        (0..=until).map(|t| (t, state_at(t))).collect()
    }

    use StreamState::*;

    #[test]
    fn live_again_is_kept_at_once() {
        let steps = every_second(200, |t| match t {
            0..=9 => None,
            10..=14 => Some(Starting),
            15..=20 => Some(Connecting),
            _ => Some(Live),
        });
        assert_eq!(
            run(true, &steps),
            (21, Verdict::Good("live again 21 s after boot".into()))
        );
    }

    #[test]
    fn a_box_that_was_not_live_needs_only_a_ready_daemon() {
        let steps = every_second(200, |t| match t {
            0..=9 => None,
            10..=14 => Some(Starting),
            _ => Some(Failed),
        });
        assert_eq!(
            run(false, &steps),
            (15, Verdict::Good("daemon ready after 15 s".into()))
        );
    }

    #[test]
    fn never_live_is_left_at_the_deadline_naming_the_last_state() {
        let steps = every_second(300, |t| if t < 20 { None } else { Some(Connecting) });
        assert_eq!(
            run(true, &steps),
            (
                120,
                Verdict::Bad("not live within 120 s (state connecting)".into())
            )
        );
    }

    #[test]
    fn a_daemon_that_never_answers_is_left_at_the_deadline() {
        let steps = every_second(300, |_| None);
        assert_eq!(
            run(false, &steps),
            (
                120,
                Verdict::Bad(
                    "not ready within 120 s (the daemon never answered on its status socket)"
                        .into()
                )
            )
        );
        // A daemon stuck in `starting` (no encoder) is not ready either.
        let steps = every_second(300, |_| Some(Starting));
        assert_eq!(
            run(false, &steps),
            (
                120,
                Verdict::Bad("not ready within 120 s (state starting)".into())
            )
        );
    }

    #[test]
    fn a_crash_looping_daemon_reports_the_last_state_it_answered() {
        // It answers now and then between restarts, never live.
        let steps = every_second(300, |t| if t % 10 < 5 { None } else { Some(Connecting) });
        let (at, verdict) = run(true, &steps);
        assert_eq!(at, 120);
        assert_eq!(
            verdict,
            Verdict::Bad("not live within 120 s (state connecting)".into())
        );
    }

    #[test]
    fn network_down_waits_then_keeps_the_system_after_the_grace() {
        let steps = every_second(1000, |t| if t < 20 { None } else { Some(Offline) });
        let (at, verdict) = run(true, &steps);
        assert_eq!(at, 600, "{verdict:?}");
        let Verdict::Good(reason) = verdict else {
            panic!("{verdict:?}")
        };
        assert!(
            reason.starts_with("network down (offline) for 600 s"),
            "{reason}"
        );
    }

    #[test]
    fn a_network_that_returns_late_gets_the_full_live_time_from_its_return() {
        // Offline until 300 s, then connecting: live at 400 s is kept (within 120 s of the
        // return), although 400 s is long past the first deadline.
        let steps = every_second(1000, |t| match t {
            0..=19 => None,
            20..=300 => Some(Offline),
            301..=399 => Some(Connecting),
            _ => Some(Live),
        });
        assert_eq!(
            run(true, &steps),
            (400, Verdict::Good("live again 400 s after boot".into()))
        );
        // Never live after the return: left 120 s after the last offline moment.
        let steps = every_second(1000, |t| match t {
            0..=19 => None,
            20..=300 => Some(Offline),
            _ => Some(Reconnecting),
        });
        assert_eq!(
            run(true, &steps),
            (
                420,
                Verdict::Bad("not live within 120 s (state reconnecting)".into())
            )
        );
    }

    #[test]
    fn offline_with_an_uplink_gone_is_not_a_network_that_is_down() {
        let t0 = Instant::now();
        let mut trial = Trial::new(Rules::default(), t0, true);
        let gone = Observation {
            daemon: Some(Offline),
            missing_uplinks: vec!["eth0".into()],
        };
        for t in 0..120 {
            assert_eq!(trial.observe(t0 + S * t, &gone), Verdict::Wait, "at {t} s");
        }
        assert_eq!(
            trial.observe(t0 + 120 * S, &gone),
            Verdict::Bad("not live within 120 s (state offline; eth0 missing)".into())
        );
    }

    #[test]
    fn the_rules_can_be_shortened_for_a_test_box() {
        let t0 = Instant::now();
        let rules = Rules {
            live_within: Duration::from_secs(45),
            offline_grace: Duration::from_secs(90),
        };
        let mut trial = Trial::new(rules, t0, true);
        assert_eq!(
            trial.observe(t0 + 44 * S, &seen(Some(Connecting))),
            Verdict::Wait
        );
        assert_eq!(
            trial.observe(t0 + 45 * S, &seen(Some(Connecting))),
            Verdict::Bad("not live within 45 s (state connecting)".into())
        );
    }
}
