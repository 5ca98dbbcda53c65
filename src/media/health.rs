//! The media pipeline's lifecycle decisions: observations in (with `now`), actions out. No
//! GStreamer, no clock of its own — the pipeline runner (`pipeline.rs`) does the I/O.
//!
//! The rules: a started pipeline must deliver its first access unit within
//! `first_frame_timeout`, and then keep delivering (a gap of `stall_timeout` is a stall). Any
//! end of a run has a typed [`Cause`]. With `encoder.kind = auto` an encoder that fails before
//! it ever produced a frame is skipped for the next candidate at once; when none is left the
//! media side is dead ([`Action::Fatal`]). Everything else — the input gone or stalled, or a
//! proven encoder failing — is announced once as lost, and the pipeline is rebuilt every
//! `restart_delay` until pictures flow again ([`Action::Ready`]).

use std::fmt;
use std::time::Duration;
use tokio::time::Instant;

/// Timing of the pipeline's health rules. Fixed in code; the defaults are the documented values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthSettings {
    /// Wait between attempts to bring a lost input back. Default 2 s.
    pub restart_delay: Duration,
    /// How long a freshly started pipeline may take to deliver its first access unit (a USB
    /// camera or the Pi's codec can take seconds to open). Default 8 s.
    pub first_frame_timeout: Duration,
    /// No access unit for this long on a running pipeline means it stalled. Default 3 s.
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

/// Which half of the pipeline an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Capture: camera, HDMI bridge, test source, and the conversion before the encoder.
    Input,
    /// The encoder and what follows it.
    Encoder,
}

/// Why a pipeline run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The capture side failed, ended or is not there (unplugged, element missing).
    InputLost(String),
    /// Pictures stopped arriving at the encoder for `stall_timeout`.
    InputStalled(Duration),
    /// A fresh pipeline delivered nothing within `first_frame_timeout`, and the encoder was
    /// not to blame (no pictures reached it either).
    NoFirstFrame(Duration),
    /// The encoder side failed, or stopped producing while pictures still reached it.
    EncoderFailed(String),
}

impl Cause {
    pub fn side(&self) -> Side {
        match self {
            Cause::EncoderFailed(_) => Side::Encoder,
            _ => Side::Input,
        }
    }

    /// An error reported by one side of the pipeline.
    pub fn error(side: Side, text: impl Into<String>) -> Cause {
        match side {
            Side::Input => Cause::InputLost(text.into()),
            Side::Encoder => Cause::EncoderFailed(text.into()),
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::InputLost(text) | Cause::EncoderFailed(text) => f.write_str(text),
            Cause::InputStalled(d) => write!(f, "no pictures for {} s", d.as_secs()),
            Cause::NoFirstFrame(d) => write!(f, "no pictures within {} s of start", d.as_secs()),
        }
    }
}

/// What the runner saw.
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

/// The streaming side's counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flow {
    /// When the last access unit left the encoder in this run, if any did.
    pub last_unit: Option<Instant>,
    /// Raw pictures that reached the encoder in this run.
    pub pictures_in: u64,
    /// Access units that left it in this run.
    pub units_out: u64,
}

/// What the runner must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Build and start a pipeline with encoder candidate `candidate` (an index).
    Start { candidate: usize },
    /// Stop the running pipeline (set it to NULL).
    Stop,
    /// Observe `RestartDue` at this time (replaces an earlier one).
    RestartAt(Instant),
    /// Pictures flow: install this candidate's key-frame forcer and tell the supervisor.
    /// `first` is true when the candidate has just proven itself (log and show it).
    Ready { candidate: usize, first: bool },
    /// Tell the supervisor the input is lost (once per loss, not per retry).
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
                let cause = self.blame(flow, Cause::InputStalled(self.settings.stall_timeout));
                self.end_run(now, cause, true, out);
            }
            None if now.saturating_duration_since(since) > self.settings.first_frame_timeout => {
                let cause =
                    self.blame(flow, Cause::NoFirstFrame(self.settings.first_frame_timeout));
                self.end_run(now, cause, true, out);
            }
            _ => {}
        }
    }

    /// A stall is the encoder's fault if pictures kept reaching it without coming out.
    fn blame(&self, flow: Flow, input_cause: Cause) -> Cause {
        if flow.pictures_in > flow.units_out + 10 {
            Cause::EncoderFailed(format!(
                "{input_cause} (the encoder is not producing output)"
            ))
        } else {
            input_cause
        }
    }

    fn end_run(&mut self, now: Instant, cause: Cause, running: bool, out: &mut Vec<Action>) {
        if running {
            out.push(Action::Stop);
        }
        if cause.side() == Side::Encoder && !self.proven {
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

        fn t(&self, secs: f64) -> Instant {
            self.t0 + Duration::from_secs_f64(secs)
        }
    }

    /// Pictures flowing until `until` seconds, then nothing.
    fn flowing_until(t0: Instant, until: f64) -> impl FnMut(Duration) -> Flow {
        move |now| {
            let at = now.as_secs_f64().min(until);
            let n = (at * 30.0) as u64;
            Flow {
                last_unit: Some(t0 + Duration::from_secs_f64(at)),
                pictures_in: n,
                units_out: n,
            }
        }
    }

    fn nothing(_: Duration) -> Flow {
        Flow::default()
    }

    #[test]
    fn first_pictures_make_it_ready_and_prove_the_encoder() {
        let mut s = Sim::new(2);
        let t0 = s.t0;
        s.run_for(Duration::from_secs(1), flowing_until(t0, 100.0));
        assert_eq!(s.starts, vec![(Duration::ZERO, 0)]);
        assert_eq!(s.ready, vec![(0, true)]);
        assert!(s.lost.is_empty());
    }

    #[test]
    fn a_stall_is_input_lost_then_restarts_every_restart_delay_until_pictures_return() {
        let mut s = Sim::new(1);
        let t0 = s.t0;
        // Flowing for 5 s, then the camera goes quiet.
        s.run_for(Duration::from_secs(5), flowing_until(t0, 5.0));
        s.run_for(Duration::from_secs(3), flowing_until(t0, 5.0));
        assert!(s.lost.is_empty(), "3 s of silence is not yet a stall");
        s.run_for(Duration::from_millis(400), flowing_until(t0, 5.0));
        assert_eq!(s.lost, vec![Cause::InputStalled(Duration::from_secs(3))]);
        assert_eq!(s.stops, 1);
        let lost_at = s.now;
        // Each restarted pipeline delivers nothing: first-frame deadline 8 s, then 2 s wait.
        s.run_for(Duration::from_secs(25), nothing);
        let restarts: Vec<f64> = s
            .starts
            .iter()
            .skip(1)
            .map(|(t, _)| (t0 + *t - lost_at).as_secs_f64())
            .collect();
        assert_eq!(restarts.len(), 3, "{restarts:?}");
        // Restart after 2 s; each failed run lasts the first-frame deadline (8 s, noticed at
        // the next tick) plus the 2 s wait.
        assert!((restarts[0] - 2.0).abs() < 0.21, "{restarts:?}");
        assert!(
            (restarts[1] - restarts[0] - 10.2).abs() < 0.21,
            "{restarts:?}"
        );
        assert_eq!(s.lost.len(), 1, "lost is said once, not per retry");
        // Pictures come back on the next start.
        let back = s.now;
        s.run_for(Duration::from_secs(12), move |now| Flow {
            last_unit: Some(t0 + now),
            pictures_in: 1,
            units_out: 1,
        });
        assert_eq!(
            s.ready,
            vec![(0, true), (0, false)],
            "input back, not a new encoder"
        );
        assert!(s.now > back);
    }

    #[test]
    fn no_first_frame_within_the_deadline_is_input_trouble_when_nothing_reached_the_encoder() {
        let mut s = Sim::new(2);
        s.run_for(Duration::from_secs(8), nothing);
        assert!(s.lost.is_empty(), "8 s are allowed");
        s.run_for(Duration::from_millis(200), nothing);
        assert_eq!(s.lost, vec![Cause::NoFirstFrame(Duration::from_secs(8))]);
        assert_eq!(
            s.starts.iter().map(|(_, c)| *c).collect::<Vec<_>>(),
            vec![0],
            "input trouble never skips the encoder"
        );
        assert_eq!(s.restart_at, Some(s.now + Duration::from_secs(2)));
    }

    #[test]
    fn an_encoder_that_never_produces_is_skipped_for_the_next_at_once() {
        let mut s = Sim::new(2);
        // Pictures reach the encoder, nothing comes out.
        s.run_for(Duration::from_secs(9), |now| Flow {
            last_unit: None,
            pictures_in: (now.as_secs_f64() * 30.0) as u64,
            units_out: 0,
        });
        assert_eq!(s.starts.len(), 2);
        assert_eq!(s.starts[1].1, 1, "next candidate");
        assert!(
            s.starts[1].0 <= Duration::from_millis(8200),
            "at the first-frame deadline, without the restart wait: {:?}",
            s.starts[1].0
        );
        assert!(
            s.lost.is_empty(),
            "trying another encoder is not an input loss"
        );
    }

    #[test]
    fn the_last_encoder_failing_is_fatal_with_every_reason() {
        let mut s = Sim::new(2);
        s.obs(Observation::Ended(Cause::error(
            Side::Encoder,
            "x264: boom",
        )));
        s.obs(Observation::StartFailed(Cause::error(
            Side::Encoder,
            "openh264: no",
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
        s.obs(Observation::Ended(Cause::error(
            Side::Encoder,
            "encoder: error",
        )));
        assert_eq!(s.lost, vec![Cause::EncoderFailed("encoder: error".into())]);
        s.run_for(Duration::from_secs(3), nothing);
        assert_eq!(s.starts.last().unwrap().1, 0, "the proven encoder stays");
        assert!(s.fatal.is_none());
    }

    #[test]
    fn input_errors_and_missing_elements_restart_on_the_cadence() {
        let mut s = Sim::new(1);
        s.obs(Observation::StartFailed(Cause::InputLost(
            "GStreamer element v4l2src is not installed".into(),
        )));
        assert_eq!(s.stops, 0, "nothing was running");
        assert_eq!(s.restart_at, Some(s.t(2.0)));
        s.run_for(Duration::from_millis(2000), nothing);
        assert_eq!(s.starts.len(), 2);
        // A bus message of the old pipeline arriving late changes nothing.
        s.obs(Observation::Ended(Cause::InputLost("late".into())));
        s.obs(Observation::StartFailed(Cause::InputLost(
            "still gone".into(),
        )));
        assert_eq!(s.lost.len(), 1);
    }

    #[test]
    fn a_stall_with_pictures_still_arriving_blames_the_encoder() {
        let mut s = Sim::new(2);
        let t0 = s.t0;
        s.run_for(Duration::from_secs(1), flowing_until(t0, 1.0));
        s.run_for(Duration::from_secs(4), move |now| Flow {
            last_unit: Some(t0 + Duration::from_secs(1)),
            pictures_in: (now.as_secs_f64() * 30.0) as u64,
            units_out: 30,
        });
        assert!(
            matches!(s.lost.as_slice(), [Cause::EncoderFailed(m)] if m.contains("not producing"))
        );
        assert_eq!(s.starts.len(), 1, "proven: no skip, a restart later");
    }
}
