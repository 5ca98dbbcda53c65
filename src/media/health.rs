//! The encoder's lifecycle decisions: observations in (with `now`), actions out. No
//! GStreamer, no clock of its own — the pipeline runner (`pipeline.rs`) does the I/O.
//!
//! The encoding pipeline is fed by the frame pump at the configured rate whatever the input
//! does (the input's picture, the last picture held, or the slate), so an encoder that stops
//! producing is the encoder's fault, never the camera's: input trouble is decided apart, in
//! `input.rs`. The rules: a started encoder must deliver its first access unit within
//! `first_frame_timeout`, and then keep delivering (a gap of `stall_timeout` is a stall). With
//! `encoder.kind = auto` an encoder that fails before it ever produced a frame is skipped for
//! the next candidate at once; when none is left the media side is dead ([`Action::Fatal`]).
//! A proven encoder that fails is announced once as lost and rebuilt every `restart_delay`
//! until units flow again ([`Action::Ready`]).

use std::fmt;
use std::time::Duration;
use tokio::time::Instant;

/// Timing of the encoder's health rules. Fixed in code; the defaults are the documented values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthSettings {
    /// Wait between attempts to bring a failed encoder back. Default 2 s.
    pub restart_delay: Duration,
    /// How long a freshly started encoder may take to deliver its first access unit (the
    /// Pi's codec can take seconds to open). Default 8 s.
    pub first_frame_timeout: Duration,
    /// No access unit for this long on a running encoder means it stalled. Default 3 s.
    pub stall_timeout: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            restart_delay: Duration::from_secs(2),
            first_frame_timeout: Duration::from_secs(8),
            stall_timeout: Duration::from_secs(3),
        }
    }
}

/// Why a run of the capture or of the encoder ended. Shared by this machine and the input's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The capture failed, ended, has no signal or is not there (unplugged, element missing).
    InputLost(String),
    /// Pictures stopped arriving from the capture for this long.
    InputStalled(Duration),
    /// A fresh run delivered nothing within this long.
    NoFirstFrame(Duration),
    /// The encoder failed, or stopped producing while the pump kept feeding it.
    EncoderFailed(String),
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::InputLost(text) | Cause::EncoderFailed(text) => f.write_str(text),
            Cause::InputStalled(d) => write!(f, "no pictures for {:.1} s", d.as_secs_f64()),
            Cause::NoFirstFrame(d) => {
                write!(f, "no pictures within {:.1} s of start", d.as_secs_f64())
            }
        }
    }
}

/// What the runner saw of the encoding pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The pipeline asked for by `Action::Start` is playing.
    Started,
    /// It could not be built or set playing.
    StartFailed(Cause),
    /// An error or end of stream on the running pipeline's bus.
    Ended(Cause),
    /// The running pipeline's counters, read periodically.
    Tick(Flow),
    /// The time given by the last `Action::RestartAt` has come.
    RestartDue,
}

/// The encoder's counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flow {
    /// When the last access unit left the encoder in this run, if any did.
    pub last_unit: Option<Instant>,
    /// Access units that left it in this run.
    pub units_out: u64,
}

/// What the runner must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Build and start the encoding pipeline with encoder candidate `candidate` (an index).
    Start { candidate: usize },
    /// Stop the running pipeline (set it to NULL).
    Stop,
    /// Observe `RestartDue` at this time (replaces an earlier one).
    RestartAt(Instant),
    /// Units flow: install this candidate's key-frame forcer and tell the supervisor.
    /// `first` is true when the candidate has just proven itself (log and show it).
    Ready { candidate: usize, first: bool },
    /// Tell the supervisor no units flow any more (once per failure, not per retry).
    Lost(Cause),
    /// This candidate failed before its first frame and is given up (a `Start` of the next
    /// one, or `Fatal`, follows).
    Skip { candidate: usize, cause: Cause },
    /// No encoder works: the media side cannot run. Every candidate and why it failed.
    Fatal(Vec<(usize, Cause)>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running { since: Instant, flowing: bool },
    Waiting,
    Dead,
}

#[derive(Debug)]
pub struct Health {
    settings: HealthSettings,
    candidates: usize,
    candidate: usize,
    proven: bool,
    lost: bool,
    encoder_failures: Vec<(usize, Cause)>,
    phase: Phase,
}

impl Health {
    /// The first action is to start candidate 0.
    pub fn new(settings: HealthSettings, candidates: usize) -> (Health, Vec<Action>) {
        let health = Health {
            settings,
            candidates,
            candidate: 0,
            proven: false,
            lost: false,
            encoder_failures: Vec::new(),
            phase: Phase::Waiting,
        };
        let start = if candidates == 0 {
            vec![Action::Fatal(vec![])]
        } else {
            vec![Action::Start { candidate: 0 }]
        };
        (health, start)
    }

    /// The encoder candidate in use (or being tried).
    pub fn candidate(&self) -> usize {
        self.candidate
    }

    pub fn handle(&mut self, now: Instant, observation: Observation) -> Vec<Action> {
        let mut out = Vec::new();
        match (self.phase, observation) {
            (Phase::Dead, _) => {}
            (_, Observation::Started) => {
                self.phase = Phase::Running {
                    since: now,
                    flowing: false,
                }
            }
            (_, Observation::StartFailed(cause)) => self.end_run(now, cause, false, &mut out),
            (Phase::Running { .. }, Observation::Ended(cause)) => {
                self.end_run(now, cause, true, &mut out)
            }
            (Phase::Running { since, flowing }, Observation::Tick(flow)) => {
                self.judge_flow(now, since, flowing, flow, &mut out)
            }
            (Phase::Waiting, Observation::RestartDue) => out.push(Action::Start {
                candidate: self.candidate,
            }),
            // Late bus messages or ticks of a pipeline already stopped, a stale timer.
            _ => {}
        }
        out
    }

    fn judge_flow(
        &mut self,
        now: Instant,
        since: Instant,
        flowing: bool,
        flow: Flow,
        out: &mut Vec<Action>,
    ) {
        match flow.last_unit {
            Some(_) if !flowing => {
                self.phase = Phase::Running {
                    since,
                    flowing: true,
                };
                let first = !std::mem::replace(&mut self.proven, true);
                self.lost = false;
                out.push(Action::Ready {
                    candidate: self.candidate,
                    first,
                });
            }
            Some(at) if now.saturating_duration_since(at) > self.settings.stall_timeout => {
                let cause = Cause::EncoderFailed(format!(
                    "the encoder produced nothing for {} s while fed",
                    self.settings.stall_timeout.as_secs()
                ));
                self.end_run(now, cause, true, out);
            }
            None if now.saturating_duration_since(since) > self.settings.first_frame_timeout => {
                let cause = Cause::EncoderFailed(format!(
                    "the encoder produced nothing within {} s of start",
                    self.settings.first_frame_timeout.as_secs()
                ));
                self.end_run(now, cause, true, out);
            }
            _ => {}
        }
    }

    fn end_run(&mut self, now: Instant, cause: Cause, running: bool, out: &mut Vec<Action>) {
        if running {
            out.push(Action::Stop);
        }
        if !self.proven {
            out.push(Action::Skip {
                candidate: self.candidate,
                cause: cause.clone(),
            });
            self.encoder_failures.push((self.candidate, cause));
            self.candidate += 1;
            if self.candidate == self.candidates {
                self.phase = Phase::Dead;
                out.push(Action::Fatal(std::mem::take(&mut self.encoder_failures)));
            } else {
                self.phase = Phase::Waiting;
                out.push(Action::Start {
                    candidate: self.candidate,
                });
            }
            return;
        }
        if !std::mem::replace(&mut self.lost, true) {
            out.push(Action::Lost(cause));
        }
        self.phase = Phase::Waiting;
        out.push(Action::RestartAt(now + self.settings.restart_delay));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the machine against a simulated pipeline under a simulated clock, like the
    /// supervisor's tests: no GStreamer, no sleeping.
    struct Sim {
        h: Health,
        now: Instant,
        t0: Instant,
        restart_at: Option<Instant>,
        running: Option<usize>,
        starts: Vec<(Duration, usize)>,
        stops: usize,
        ready: Vec<(usize, bool)>,
        lost: Vec<Cause>,
        fatal: Option<Vec<(usize, Cause)>>,
        skipped: Vec<usize>,
    }

    impl Sim {
        fn new(candidates: usize) -> Sim {
            let now = Instant::now();
            let (h, first) = Health::new(HealthSettings::default(), candidates);
            let mut s = Sim {
                h,
                now,
                t0: now,
                restart_at: None,
                running: None,
                starts: vec![],
                stops: 0,
                ready: vec![],
                lost: vec![],
                fatal: None,
                skipped: vec![],
            };
            s.apply(first);
            s
        }

        fn apply(&mut self, actions: Vec<Action>) {
            for a in actions {
                match a {
                    Action::Start { candidate } => {
                        self.starts.push((self.now - self.t0, candidate));
                        self.running = Some(candidate);
                        let more = self.h.handle(self.now, Observation::Started);
                        self.apply(more);
                    }
                    Action::Stop => {
                        self.stops += 1;
                        self.running = None;
                    }
                    Action::RestartAt(at) => self.restart_at = Some(at),
                    Action::Ready { candidate, first } => self.ready.push((candidate, first)),
                    Action::Lost(c) => self.lost.push(c),
                    Action::Skip { candidate, .. } => self.skipped.push(candidate),
                    Action::Fatal(m) => self.fatal = Some(m),
                }
            }
        }

        fn obs(&mut self, o: Observation) {
            let actions = self.h.handle(self.now, o);
            self.apply(actions);
        }

        /// Advances the clock in 200 ms ticks (the runner's cadence), feeding `flow(t)` and
        /// firing the restart timer when due.
        fn run_for(&mut self, d: Duration, mut flow: impl FnMut(Duration) -> Flow) {
            let end = self.now + d;
            while self.now < end {
                self.now += Duration::from_millis(200);
                if let Some(at) = self.restart_at
                    && self.now >= at
                {
                    self.restart_at = None;
                    self.obs(Observation::RestartDue);
                }
                if self.running.is_some() {
                    let f = flow(self.now - self.t0);
                    self.obs(Observation::Tick(f));
                }
            }
        }
    }

    /// Units flowing until `until` seconds, then nothing.
    fn flowing_until(t0: Instant, until: f64) -> impl FnMut(Duration) -> Flow {
        move |now| {
            let at = now.as_secs_f64().min(until);
            Flow {
                last_unit: Some(t0 + Duration::from_secs_f64(at)),
                units_out: (at * 30.0) as u64,
            }
        }
    }

    fn nothing(_: Duration) -> Flow {
        Flow::default()
    }

    #[test]
    fn first_units_make_it_ready_and_prove_the_encoder() {
        let mut s = Sim::new(2);
        let t0 = s.t0;
        s.run_for(Duration::from_secs(1), flowing_until(t0, 100.0));
        assert_eq!(s.starts, vec![(Duration::ZERO, 0)]);
        assert_eq!(s.ready, vec![(0, true)]);
        assert!(s.lost.is_empty());
    }

    #[test]
    fn a_proven_encoder_that_stalls_is_lost_once_and_restarted_on_the_cadence() {
        let mut s = Sim::new(2);
        let t0 = s.t0;
        s.run_for(Duration::from_secs(5), flowing_until(t0, 5.0));
        s.run_for(Duration::from_secs(3), flowing_until(t0, 5.0));
        assert!(s.lost.is_empty(), "3 s of silence is not yet a stall");
        s.run_for(Duration::from_millis(400), flowing_until(t0, 5.0));
        assert!(
            matches!(s.lost.as_slice(), [Cause::EncoderFailed(m)] if m.contains("produced nothing")),
            "{:?}",
            s.lost
        );
        assert_eq!(s.stops, 1);
        let lost_at = s.now;
        // Each restarted encoder delivers nothing: first-frame deadline 8 s, then 2 s wait.
        s.run_for(Duration::from_secs(25), nothing);
        let restarts: Vec<f64> = s
            .starts
            .iter()
            .skip(1)
            .map(|(t, _)| (t0 + *t - lost_at).as_secs_f64())
            .collect();
        assert_eq!(restarts.len(), 3, "{restarts:?}");
        assert!((restarts[0] - 2.0).abs() < 0.21, "{restarts:?}");
        assert!(
            (restarts[1] - restarts[0] - 10.2).abs() < 0.21,
            "{restarts:?}"
        );
        assert_eq!(s.lost.len(), 1, "lost is said once, not per retry");
        assert!(
            s.starts.iter().all(|(_, c)| *c == 0),
            "a proven encoder is never skipped"
        );
        let t_back = s.now - t0;
        s.run_for(Duration::from_secs(12), move |now| Flow {
            last_unit: Some(t0 + now.max(t_back)),
            units_out: 1,
        });
        assert_eq!(s.ready, vec![(0, true), (0, false)]);
    }

    #[test]
    fn an_encoder_that_never_produces_is_skipped_for_the_next_at_once() {
        let mut s = Sim::new(2);
        s.run_for(Duration::from_secs(9), nothing);
        assert_eq!(s.starts.len(), 2);
        assert_eq!(s.starts[1].1, 1, "next candidate");
        assert!(
            s.starts[1].0 <= Duration::from_millis(8200),
            "at the first-frame deadline, without the restart wait: {:?}",
            s.starts[1].0
        );
        assert!(s.lost.is_empty(), "trying another encoder is not a loss");
    }

    #[test]
    fn the_last_encoder_failing_is_fatal_with_every_reason() {
        let mut s = Sim::new(2);
        s.obs(Observation::Ended(Cause::EncoderFailed(
            "x264: boom".into(),
        )));
        s.obs(Observation::StartFailed(Cause::EncoderFailed(
            "openh264: no".into(),
        )));
        let fatal = s.fatal.clone().expect("fatal");
        assert_eq!(
            fatal,
            vec![
                (0, Cause::EncoderFailed("x264: boom".into())),
                (1, Cause::EncoderFailed("openh264: no".into()))
            ]
        );
        assert_eq!(s.skipped, vec![0, 1]);
        let n = s.starts.len();
        s.obs(Observation::RestartDue);
        assert_eq!(s.starts.len(), n, "nothing after fatal");
    }

    #[test]
    fn a_proven_encoder_failing_is_a_loss_not_a_skip() {
        let mut s = Sim::new(2);
        let t0 = s.t0;
        s.run_for(Duration::from_secs(1), flowing_until(t0, 100.0));
        s.obs(Observation::Ended(Cause::EncoderFailed(
            "encoder: error".into(),
        )));
        assert_eq!(s.lost, vec![Cause::EncoderFailed("encoder: error".into())]);
        s.run_for(Duration::from_secs(3), nothing);
        assert_eq!(s.starts.last().unwrap().1, 0, "the proven encoder stays");
        assert!(s.fatal.is_none());
        // A bus message of the old pipeline arriving late changes nothing.
        let n = s.lost.len();
        s.obs(Observation::Ended(Cause::EncoderFailed("late".into())));
        s.obs(Observation::RestartDue);
        assert_eq!(s.lost.len(), n);
    }
}
