//! Whether the sound is the device's or substituted silence, and when to try the device again:
//! a pure machine with the time passed in. The runner (`runner.rs`) carries its actions out.
//!
//! A device that cannot be opened, ends, errors, or stops delivering is replaced by silence at
//! once (the pump fills it in anyway: nothing waits for this machine), and is retried every
//! `retry`. The picture never depends on any of it.

use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AudioHealthSettings {
    /// Between attempts to open the device again. Default 2 s.
    pub retry: Duration,
    /// No sound from a running capture for this long means it stalled. Default 1 s.
    pub stall_after: Duration,
    /// A capture that has delivered nothing this long after starting has failed. Default 3 s.
    pub first_sound: Duration,
}

impl Default for AudioHealthSettings {
    fn default() -> Self {
        AudioHealthSettings {
            retry: Duration::from_secs(2),
            stall_after: Duration::from_secs(1),
            first_sound: Duration::from_secs(3),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    Started,
    StartFailed(String),
    /// The capture's bus reported an error or end of stream.
    Ended(String),
    /// Periodic: when the capture last delivered sound.
    Tick {
        last_sound: Option<Instant>,
    },
    RetryDue,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    StartCapture,
    StopCapture,
    RetryAt(Instant),
    /// The device's sound is what is sent.
    Live,
    /// Silence is sent instead, for this reason.
    Silence(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Capture started at this instant; no sound yet.
    Starting(Instant),
    Live,
    /// Waiting to retry.
    Silent,
}

pub struct AudioHealth {
    settings: AudioHealthSettings,
    state: State,
    /// Silence already reported for the current trouble (retries that fail again stay quiet).
    reported: bool,
}

impl AudioHealth {
    pub fn new(settings: AudioHealthSettings, now: Instant) -> (AudioHealth, Vec<Action>) {
        (
            AudioHealth {
                settings,
                state: State::Starting(now),
                reported: false,
            },
            vec![Action::StartCapture],
        )
    }

    pub fn handle(&mut self, now: Instant, observation: Observation) -> Vec<Action> {
        match (self.state, observation) {
            (State::Starting(_), Observation::Started) => {
                self.state = State::Starting(now);
                vec![]
            }
            (State::Starting(_) | State::Live, Observation::StartFailed(why))
            | (State::Starting(_) | State::Live, Observation::Ended(why)) => self.fail(now, why),
            (State::Starting(since), Observation::Tick { last_sound }) => {
                if last_sound.is_some_and(|t| now.duration_since(t) < self.settings.stall_after) {
                    self.state = State::Live;
                    self.reported = false;
                    vec![Action::Live]
                } else if now.duration_since(since) >= self.settings.first_sound {
                    self.fail(now, "no sound from the device".into())
                } else {
                    vec![]
                }
            }
            (State::Live, Observation::Tick { last_sound }) => {
                let silent_for = last_sound.map(|t| now.duration_since(t));
                if silent_for.is_none_or(|d| d >= self.settings.stall_after) {
                    self.fail(
                        now,
                        format!(
                            "the device stalled (no sound for {:.1} s)",
                            silent_for.unwrap_or_default().as_secs_f64()
                        ),
                    )
                } else {
                    vec![]
                }
            }
            (State::Silent, Observation::RetryDue) => {
                self.state = State::Starting(now);
                vec![Action::StartCapture]
            }
            // Stale: a tick or an end from a capture already given up, a retry not due.
            _ => vec![],
        }
    }

    fn fail(&mut self, now: Instant, why: String) -> Vec<Action> {
        self.state = State::Silent;
        let mut actions = vec![Action::StopCapture];
        if !self.reported {
            self.reported = true;
            actions.push(Action::Silence(why));
        }
        actions.push(Action::RetryAt(now + self.settings.retry));
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s() -> AudioHealthSettings {
        AudioHealthSettings::default()
    }

    #[tokio::test(start_paused = true)]
    async fn sound_makes_it_live_a_stall_makes_it_silent_and_it_comes_back() {
        let t0 = Instant::now();
        let (mut h, a) = AudioHealth::new(s(), t0);
        assert_eq!(a, vec![Action::StartCapture]);
        assert!(h.handle(t0, Observation::Started).is_empty());
        let t = t0 + Duration::from_millis(200);
        assert_eq!(
            h.handle(
                t,
                Observation::Tick {
                    last_sound: Some(t)
                }
            ),
            vec![Action::Live]
        );
        // Sound stops: silent once stall_after has passed, not before.
        let last = t;
        let t = last + Duration::from_millis(900);
        assert!(
            h.handle(
                t,
                Observation::Tick {
                    last_sound: Some(last)
                }
            )
            .is_empty()
        );
        let t = last + Duration::from_millis(1000);
        let a = h.handle(
            t,
            Observation::Tick {
                last_sound: Some(last),
            },
        );
        assert_eq!(a[0], Action::StopCapture);
        assert!(matches!(&a[1], Action::Silence(why) if why.contains("stalled")));
        assert_eq!(a[2], Action::RetryAt(t + Duration::from_secs(2)));
        // The retry finds the device again.
        let t = t + Duration::from_secs(2);
        assert_eq!(
            h.handle(t, Observation::RetryDue),
            vec![Action::StartCapture]
        );
        h.handle(t, Observation::Started);
        assert_eq!(
            h.handle(
                t,
                Observation::Tick {
                    last_sound: Some(t)
                }
            ),
            vec![Action::Live]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_device_is_silence_at_once_and_retried_quietly_on_the_cadence() {
        let t0 = Instant::now();
        let (mut h, _) = AudioHealth::new(s(), t0);
        let a = h.handle(t0, Observation::StartFailed("no such device".into()));
        assert_eq!(
            a,
            vec![
                Action::StopCapture,
                Action::Silence("no such device".into()),
                Action::RetryAt(t0 + Duration::from_secs(2))
            ]
        );
        let t = t0 + Duration::from_secs(2);
        assert_eq!(
            h.handle(t, Observation::RetryDue),
            vec![Action::StartCapture]
        );
        assert_eq!(
            h.handle(t, Observation::StartFailed("no such device".into())),
            vec![
                Action::StopCapture,
                Action::RetryAt(t + Duration::from_secs(2))
            ],
            "the same trouble is not reported again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_capture_that_never_delivers_fails_after_first_sound() {
        let t0 = Instant::now();
        let (mut h, _) = AudioHealth::new(s(), t0);
        h.handle(t0, Observation::Started);
        let t = t0 + Duration::from_millis(2900);
        assert!(
            h.handle(t, Observation::Tick { last_sound: None })
                .is_empty()
        );
        let t = t0 + Duration::from_secs(3);
        let a = h.handle(t, Observation::Tick { last_sound: None });
        assert!(matches!(&a[1], Action::Silence(why) if why == "no sound from the device"));
        // A late tick or bus end of the abandoned capture changes nothing.
        assert!(h.handle(t, Observation::Ended("eos".into())).is_empty());
        assert!(
            h.handle(
                t,
                Observation::Tick {
                    last_sound: Some(t)
                }
            )
            .is_empty()
        );
    }
}
