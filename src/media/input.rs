//! The input's lifecycle decisions: when the camera or HDMI input counts as lost or back, when
//! the slate replaces it and when its pictures replace the slate, and when the capture is
//! (re)started. Observations in (with `now`), actions out; no GStreamer, no clock of its own.
//!
//! The capture is the only part that fails and restarts on input trouble: the encoder and the
//! connection keep running on the slate. The rules:
//! - No picture from the input for `lost_after` while it was live, an error or end of the
//!   capture, a capture that cannot start (device missing, no signal) or that delivers nothing
//!   within `first_frame_timeout`: the input is lost. The slate is shown (once per loss) and
//!   the capture is retried every `retry`.
//! - Events cut the wait short: a device node that appears, or a V4L2 source change (a signal
//!   back, new timings), starts the capture at once. A source change on a live input restarts
//!   the capture so it picks up the new timings; that is no loss unless the pictures stay away
//!   for `lost_after` (until then the last picture is held).
//! - A device node that goes away ends the capture at once.
//! - The first picture of a run on a lost (or not yet seen) input shows the input again.

use super::health::Cause;
use std::time::Duration;
use tokio::time::Instant;

/// Timing of the input's rules (`source.retry_ms`, `source.lost_after_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputSettings {
    /// Wait between attempts to bring a lost input back. Default 2 s.
    pub retry: Duration,
    /// No picture for this long on a live input means it is lost. Default 2 s.
    pub lost_after: Duration,
    /// How long a freshly started capture may take to deliver its first picture (a USB
    /// camera can take seconds to open). 8 s.
    pub first_frame_timeout: Duration,
}

impl Default for InputSettings {
    fn default() -> Self {
        InputSettings {
            retry: Duration::from_secs(2),
            lost_after: Duration::from_secs(2),
            first_frame_timeout: Duration::from_secs(8),
        }
    }
}

/// Something the device told us, apart from the pictures themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputEvent {
    /// The device reported a change of its input: signal lost or back, new timings (V4L2
    /// `SOURCE_CHANGE`), or the test source's simulated signal came back.
    SourceChanged,
    /// The device node appeared (plugged in, driver loaded).
    DeviceAppeared,
    /// The device node went away (unplugged, driver unloaded).
    DeviceGone,
}

/// What the runner saw of the capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The capture asked for by `Action::StartCapture` is playing.
    Started,
    /// It could not be prepared, built or set playing (device missing, no signal, ...).
    StartFailed(Cause),
    /// An error or end of stream on the running capture's bus.
    Ended(Cause),
    /// The running capture's counters.
    Tick(CaptureFlow),
    /// The time given by the last `Action::RetryAt` has come.
    RetryDue,
    Event(InputEvent),
}

/// The capture's counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CaptureFlow {
    /// When the last picture arrived in this run, if any did.
    pub last_frame: Option<Instant>,
}

/// What the runner must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Prepare the device (V4L2 DV timings: query and set) and start a capture.
    StartCapture,
    /// Stop the running capture and close the device.
    StopCapture,
    /// Observe `RetryDue` at this time (replaces an earlier one).
    RetryAt(Instant),
    /// The input's pictures replace the slate (with a key frame); the input is back.
    ShowInput,
    /// The slate replaces the input (with a key frame); the input is lost, and why.
    ShowSlate(Cause),
}

/// Whether the input delivers, as the rest of the box sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Not yet decided (the first capture is starting).
    Starting,
    Live,
    Lost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Capture {
    Stopped,
    Running { since: Instant, flowing: bool },
}

#[derive(Debug)]
pub struct InputHealth {
    settings: InputSettings,
    capture: Capture,
    signal: Signal,
    /// The last picture seen from any run: a restart on a live input is judged from it.
    last_picture: Option<Instant>,
}

impl InputHealth {
    /// The first action is to start the capture.
    pub fn new(settings: InputSettings) -> (InputHealth, Vec<Action>) {
        let health = InputHealth {
            settings,
            capture: Capture::Stopped,
            signal: Signal::Starting,
            last_picture: None,
        };
        (health, vec![Action::StartCapture])
    }

    pub fn signal(&self) -> Signal {
        self.signal
    }

    pub fn handle(&mut self, now: Instant, observation: Observation) -> Vec<Action> {
        let mut out = Vec::new();
        match (self.capture, observation) {
            (_, Observation::Started) => {
                self.capture = Capture::Running {
                    since: now,
                    flowing: false,
                }
            }
            (_, Observation::StartFailed(cause)) => {
                self.capture = Capture::Stopped;
                self.lose(cause, &mut out);
                out.push(Action::RetryAt(now + self.settings.retry));
            }
            (Capture::Running { .. }, Observation::Ended(cause)) => {
                self.end_run(now, cause, &mut out)
            }
            (Capture::Running { since, flowing }, Observation::Tick(flow)) => {
                self.judge(now, since, flowing, flow, &mut out)
            }
            (Capture::Stopped, Observation::RetryDue) => out.push(Action::StartCapture),
            (Capture::Running { .. }, Observation::Event(InputEvent::SourceChanged)) => {
                // New timings (or a signal gone) take a fresh capture: stop, query, set, start.
                out.push(Action::StopCapture);
                out.push(Action::StartCapture);
            }
            (
                Capture::Stopped,
                Observation::Event(InputEvent::SourceChanged | InputEvent::DeviceAppeared),
            ) => out.push(Action::StartCapture),
            (Capture::Running { .. }, Observation::Event(InputEvent::DeviceGone)) => self.end_run(
                now,
                Cause::InputLost("the capture device was removed".into()),
                &mut out,
            ),
            (Capture::Stopped, Observation::Event(InputEvent::DeviceGone)) => self.lose(
                Cause::InputLost("the capture device was removed".into()),
                &mut out,
            ),
            // Late bus messages or ticks of a capture already stopped, a stale timer, a
            // device appearing while a capture already runs.
            _ => {}
        }
        out
    }

    fn judge(
        &mut self,
        now: Instant,
        since: Instant,
        flowing: bool,
        flow: CaptureFlow,
        out: &mut Vec<Action>,
    ) {
        if let Some(at) = flow.last_frame {
            self.last_picture = Some(self.last_picture.map_or(at, |p| p.max(at)));
            if !flowing {
                self.capture = Capture::Running {
                    since,
                    flowing: true,
                };
                if self.signal != Signal::Live {
                    self.signal = Signal::Live;
                    out.push(Action::ShowInput);
                }
                return;
            }
        }
        let quiet = self
            .last_picture
            .map(|at| now.saturating_duration_since(at))
            .unwrap_or(Duration::MAX);
        if self.signal == Signal::Live && quiet > self.settings.lost_after {
            let cause = Cause::InputStalled(self.settings.lost_after);
            if flowing {
                self.end_run(now, cause, out);
            } else {
                // A restarted capture still opening: the slate goes up now, the run keeps its
                // own first-frame deadline.
                self.lose(cause, out);
            }
            return;
        }
        if !flowing && now.saturating_duration_since(since) > self.settings.first_frame_timeout {
            self.end_run(
                now,
                Cause::NoFirstFrame(self.settings.first_frame_timeout),
                out,
            );
        }
    }

    fn end_run(&mut self, now: Instant, cause: Cause, out: &mut Vec<Action>) {
        out.push(Action::StopCapture);
        self.capture = Capture::Stopped;
        self.lose(cause, out);
        out.push(Action::RetryAt(now + self.settings.retry));
    }

    /// The slate goes up once per loss, not per retry.
    fn lose(&mut self, cause: Cause, out: &mut Vec<Action>) {
        if self.signal != Signal::Lost {
            self.signal = Signal::Lost;
            out.push(Action::ShowSlate(cause));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The machine against a simulated capture under a simulated clock: the test says when
    /// pictures arrive; the runner's 200 ms tick and the retry timer are simulated.
    struct Sim {
        h: InputHealth,
        t0: Instant,
        now: Instant,
        retry_at: Option<Instant>,
        /// Whether the simulated device can start (false: missing or no signal).
        startable: bool,
        running: bool,
        /// Pictures arrive while this returns true for the time since t0.
        pictures: Box<dyn Fn(f64) -> bool>,
        last_frame: Option<Instant>,
        starts: Vec<f64>,
        stops: Vec<f64>,
        shown: Vec<(f64, &'static str)>,
        causes: Vec<Cause>,
    }

    impl Sim {
        fn new(settings: InputSettings) -> Sim {
            let now = Instant::now();
            let (h, first) = InputHealth::new(settings);
            let mut s = Sim {
                h,
                t0: now,
                now,
                retry_at: None,
                startable: true,
                running: false,
                pictures: Box::new(|_| true),
                last_frame: None,
                starts: vec![],
                stops: vec![],
                shown: vec![],
                causes: vec![],
            };
            s.apply(first);
            s
        }

        fn t(&self) -> f64 {
            (self.now - self.t0).as_secs_f64()
        }

        fn apply(&mut self, actions: Vec<Action>) {
            for a in actions {
                match a {
                    Action::StartCapture => {
                        self.starts.push(self.t());
                        self.last_frame = None;
                        let o = if self.startable {
                            self.running = true;
                            Observation::Started
                        } else {
                            Observation::StartFailed(Cause::InputLost("no signal".into()))
                        };
                        self.obs(o);
                    }
                    Action::StopCapture => {
                        self.stops.push(self.t());
                        self.running = false;
                    }
                    Action::RetryAt(at) => self.retry_at = Some(at),
                    Action::ShowInput => self.shown.push((self.t(), "input")),
                    Action::ShowSlate(c) => {
                        self.shown.push((self.t(), "slate"));
                        self.causes.push(c);
                    }
                }
            }
        }

        fn obs(&mut self, o: Observation) {
            let actions = self.h.handle(self.now, o);
            self.apply(actions);
        }

        fn event(&mut self, e: InputEvent) {
            self.obs(Observation::Event(e));
        }

        /// Advances in 40 ms steps (pictures at 25 fps), ticking the machine every 200 ms.
        fn run_for(&mut self, secs: f64) {
            let end = self.now + Duration::from_secs_f64(secs);
            let mut step = 0u32;
            while self.now < end {
                self.now += Duration::from_millis(40);
                step += 1;
                if self.running && (self.pictures)(self.t()) {
                    self.last_frame = Some(self.now);
                }
                if let Some(at) = self.retry_at
                    && self.now >= at
                {
                    self.retry_at = None;
                    self.obs(Observation::RetryDue);
                }
                if step.is_multiple_of(5) && self.running {
                    let flow = CaptureFlow {
                        last_frame: self.last_frame,
                    };
                    self.obs(Observation::Tick(flow));
                }
            }
        }
    }

    fn approx(a: f64, b: f64) -> bool {
        (a - b).abs() < 0.25
    }

    #[test]
    fn the_first_picture_shows_the_input_once() {
        let mut s = Sim::new(InputSettings::default());
        s.run_for(2.0);
        assert_eq!(s.starts, vec![0.0]);
        assert_eq!(s.shown.len(), 1);
        assert_eq!(s.shown[0].1, "input");
        assert!(s.shown[0].0 <= 0.2, "at the first tick: {:?}", s.shown);
        assert_eq!(s.h.signal(), Signal::Live);
    }

    #[test]
    fn a_stall_puts_the_slate_up_after_lost_after_and_retries_on_the_cadence() {
        let mut s = Sim::new(InputSettings::default());
        s.pictures = Box::new(|t| !(3.0..20.0).contains(&t));
        s.run_for(4.8);
        assert_eq!(s.shown.len(), 1, "2 s without pictures is not yet a loss");
        s.run_for(0.4);
        assert_eq!(s.shown.last().unwrap().1, "slate");
        assert!(approx(s.shown[1].0, 5.0), "{:?}", s.shown);
        assert_eq!(s.causes, vec![Cause::InputStalled(Duration::from_secs(2))]);
        assert_eq!(s.stops.len(), 1, "the stalled capture is stopped");
        // Restarts: +2 s, then each run waits 8 s for its first picture, then +2 s.
        s.run_for(20.0);
        let restarts: Vec<f64> = s.starts[1..].to_vec();
        assert!(approx(restarts[0], s.stops[0] + 2.0), "{restarts:?}");
        assert!(approx(restarts[1] - restarts[0], 10.2), "{restarts:?}");
        assert_eq!(
            s.shown.iter().filter(|(_, w)| *w == "slate").count(),
            1,
            "the slate goes up once per loss, not per retry"
        );
        // Pictures came back at 20 s; the run started at ~17.4 s shows them at once.
        let back = s.shown.last().unwrap();
        assert_eq!(back.1, "input");
        assert!(approx(back.0, 20.0), "{:?}", s.shown);
    }

    #[test]
    fn a_missing_device_is_lost_at_once_and_its_return_starts_the_capture_at_once() {
        let mut s = Sim::new(InputSettings {
            retry: Duration::from_millis(500),
            ..InputSettings::default()
        });
        // The first start ran before the test could make it fail: replay it as missing.
        s.obs(Observation::Ended(Cause::InputLost("gone".into())));
        s.startable = false;
        s.run_for(3.0);
        assert_eq!(s.shown, vec![(0.0, "slate")]);
        let retries = s.starts.len() - 1;
        assert!((5..=6).contains(&retries), "every 500 ms: {:?}", s.starts);
        s.run_for(0.1);
        let t = s.t();
        s.startable = true;
        s.event(InputEvent::DeviceAppeared);
        assert_eq!(*s.starts.last().unwrap(), t, "started at the event");
        s.run_for(0.3);
        assert_eq!(s.shown.last().unwrap().1, "input");
    }

    #[test]
    fn no_first_picture_at_boot_is_a_loss_after_the_deadline() {
        let mut s = Sim::new(InputSettings::default());
        s.pictures = Box::new(|_| false);
        s.run_for(8.0);
        assert!(s.shown.is_empty(), "8 s are allowed to open a camera");
        s.run_for(0.4);
        assert_eq!(s.shown.len(), 1);
        assert!(
            s.shown[0].1 == "slate" && approx(s.shown[0].0, 8.2),
            "{:?}",
            s.shown
        );
        assert_eq!(s.causes, vec![Cause::NoFirstFrame(Duration::from_secs(8))]);
    }

    #[test]
    fn a_source_change_on_a_live_input_restarts_the_capture_without_a_loss() {
        let mut s = Sim::new(InputSettings::default());
        s.run_for(3.0);
        // New timings: the capture restarts and its pictures come 1 s later.
        s.pictures = Box::new(|t| !(3.0..4.0).contains(&t));
        s.event(InputEvent::SourceChanged);
        assert_eq!(s.stops, vec![3.0]);
        assert_eq!(s.starts, vec![0.0, 3.0]);
        s.run_for(3.0);
        assert_eq!(
            s.shown.iter().map(|(_, w)| *w).collect::<Vec<_>>(),
            vec!["input"],
            "the last picture is held over a short restart: no slate, no second switch"
        );
    }

    #[test]
    fn a_source_change_whose_restart_takes_too_long_puts_the_slate_up_meanwhile() {
        let mut s = Sim::new(InputSettings::default());
        s.run_for(3.0);
        s.pictures = Box::new(|t| !(3.0..6.0).contains(&t));
        s.event(InputEvent::SourceChanged);
        s.run_for(4.0);
        let shown: Vec<_> = s.shown.iter().map(|(_, w)| *w).collect();
        assert_eq!(shown, vec!["input", "slate", "input"]);
        assert!(
            approx(s.shown[1].0, 5.2),
            "lost_after after the last picture (3.0 s): {:?}",
            s.shown
        );
        assert!(approx(s.shown[2].0, 6.0), "{:?}", s.shown);
        assert_eq!(s.starts.len(), 2, "the slow run was not restarted");
    }

    #[test]
    fn a_signal_lost_event_puts_the_slate_up_at_once_and_its_return_brings_the_input_back() {
        let mut s = Sim::new(InputSettings::default());
        s.run_for(2.0);
        // The device reports the signal gone: the restart's query finds no signal.
        s.startable = false;
        s.event(InputEvent::SourceChanged);
        assert_eq!(s.shown.last().unwrap(), &(2.0, "slate"));
        assert_eq!(s.causes, vec![Cause::InputLost("no signal".into())]);
        s.run_for(10.0);
        assert_eq!(
            s.starts.len(),
            1 + 1 + 5,
            "tries at the event, then every 2 s"
        );
        s.startable = true;
        s.event(InputEvent::SourceChanged);
        s.run_for(0.2);
        let back = s.shown.last().unwrap();
        assert!(back.1 == "input" && approx(back.0, 12.2), "{:?}", s.shown);
    }

    #[test]
    fn an_unplugged_device_ends_the_capture_at_once() {
        let mut s = Sim::new(InputSettings::default());
        s.run_for(1.0);
        s.startable = false;
        s.event(InputEvent::DeviceGone);
        assert_eq!(s.stops, vec![1.0]);
        assert_eq!(s.shown.last().unwrap(), &(1.0, "slate"));
        s.run_for(10.0);
        s.startable = true;
        s.event(InputEvent::DeviceAppeared);
        s.run_for(0.2);
        assert_eq!(s.shown.last().unwrap().1, "input");
        assert_eq!(s.shown.len(), 3);
    }

    #[test]
    fn stale_timers_and_late_messages_change_nothing() {
        let mut s = Sim::new(InputSettings::default());
        s.run_for(1.0);
        s.obs(Observation::RetryDue);
        s.event(InputEvent::DeviceAppeared);
        assert_eq!(s.starts.len(), 1, "a running capture is not started again");
        s.obs(Observation::Ended(Cause::InputLost("capture ended".into())));
        assert_eq!(s.shown.last().unwrap().1, "slate");
        let n = (s.shown.len(), s.stops.len());
        s.obs(Observation::Ended(Cause::InputLost("late".into())));
        s.obs(Observation::Tick(CaptureFlow::default()));
        assert_eq!((s.shown.len(), s.stops.len()), n);
    }
}
