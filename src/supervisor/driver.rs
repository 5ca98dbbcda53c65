//! The one task that runs the watchdog: feeds events into the pure machine and carries its
//! actions out (start an attempt, close a connection, arm the timer, force a key frame, report).
//!
//! It owns the connection in flight and the live one, so nothing is ever left open: a torn-down
//! attempt is cancelled and awaited, a late result from an old attempt is closed on arrival.

use super::machine::{Action, Event, Machine, MachineView, RetryAnswer, StopCause, Transition};
use super::notify::{self, Beat, Heartbeat};
use super::probe::ProbePlan;
use super::state::StreamState;
use crate::media::{Door, KeyframeRequester, Urgency};
use crate::net::NetworkStatus;
use crate::output::adapt::Adaptation;
use crate::output::{
    Attempt, Connection, ConnectionEvent, EventSender, Failure, Output, OutputStats,
};
use crate::recorder::{Entry, FlightRecorder};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a cancelled attempt gets to clean up before the next one starts.
const CANCEL_GRACE: Duration = Duration::from_secs(3);

type AttemptResult = (u64, Result<Box<dyn Connection>, Failure>);

struct InFlight {
    generation: u64,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// What the driver needs from the rest of the daemon.
pub struct DriverParts {
    pub output: Arc<dyn Output>,
    pub door: Door,
    pub keyframes: KeyframeRequester,
    pub stats: Arc<OutputStats>,
    /// The bitrate adaptation every connection shares.
    pub adaptation: Arc<Adaptation>,
    /// The liveness deadline every connection reads (the driver owns it; a reconnect-only
    /// reload changes it for the live connection too).
    pub dead_after: watch::Sender<Duration>,
    pub recorder: FlightRecorder,
    /// The network monitor's status, when attempts bind to the path's source address
    /// (`None`: they bind to every interface).
    pub path: Option<watch::Receiver<NetworkStatus>>,
    /// The machine's view after every event (for `onair status`).
    pub view: watch::Sender<MachineView>,
    /// Just the public state (for the LEDs).
    pub state: watch::Sender<StreamState>,
    /// systemd's service watchdog: pinged from this loop only, so a stuck loop gets restarted.
    pub heartbeat: Heartbeat,
}

pub struct Driver {
    machine: Machine,
    parts: DriverParts,
    generation: u64,
    in_flight: Option<InFlight>,
    live: Option<(u64, Box<dyn Connection>)>,
    attempt_tx: mpsc::UnboundedSender<AttemptResult>,
    attempt_rx: mpsc::UnboundedReceiver<AttemptResult>,
    conn_tx: mpsc::UnboundedSender<(u64, ConnectionEvent)>,
    conn_rx: mpsc::UnboundedReceiver<(u64, ConnectionEvent)>,
    timer: Option<(u64, Instant)>,
    current_attempt: u32,
    /// The reachability probes of a long wait (`probe.rs`), and their answers.
    probes: ProbePlan,
    probe_tx: mpsc::UnboundedSender<bool>,
    probe_rx: mpsc::UnboundedReceiver<bool>,
    probe_task: Option<JoinHandle<()>>,
}

impl Driver {
    pub fn new(machine: Machine, parts: DriverParts) -> Driver {
        let (attempt_tx, attempt_rx) = mpsc::unbounded_channel();
        let (conn_tx, conn_rx) = mpsc::unbounded_channel();
        let (probe_tx, probe_rx) = mpsc::unbounded_channel();
        Driver {
            machine,
            parts,
            generation: 0,
            in_flight: None,
            live: None,
            attempt_tx,
            attempt_rx,
            conn_tx,
            conn_rx,
            timer: None,
            current_attempt: 0,
            probes: ProbePlan::new(),
            probe_tx,
            probe_rx,
            probe_task: None,
        }
    }

    /// Runs until the machine says `Exit` (after `Event::Stop`, or when every input is gone)
    /// and returns why the run ended.
    pub async fn run(mut self, mut inputs: mpsc::Receiver<Event>) -> StopCause {
        self.publish();
        self.parts.heartbeat.ready(self.machine.view().state);
        loop {
            let timer_at = self.timer.map(|(_, at)| at);
            let probe_at = self.probes.next_probe();
            let event = tokio::select! {
                ev = inputs.recv() => match ev {
                    Some(ev) => ev,
                    None => Event::Stop(StopCause::InputsClosed),
                },
                Some((generation, result)) = self.attempt_rx.recv() => {
                    match self.attempt_finished(generation, result).await {
                        Some(ev) => ev,
                        None => continue,
                    }
                }
                Some((generation, ev)) = self.conn_rx.recv() => {
                    if self.live.as_ref().map(|(g, _)| *g) != Some(generation)
                        && self.in_flight.as_ref().map(|f| f.generation) != Some(generation)
                    {
                        continue;
                    }
                    match ev {
                        ConnectionEvent::MediaFlowing => Event::MediaFlowing,
                        ConnectionEvent::Lost(reason) => Event::ConnectionLost { reason },
                    }
                }
                _ = sleep_until(timer_at) => {
                    let (id, _) = self.timer.take().expect("the timer branch only runs while armed");
                    Event::TimerFired { id }
                }
                _ = sleep_until(probe_at) => {
                    self.start_probe();
                    continue;
                }
                Some(answers) = self.probe_rx.recv() => {
                    self.probe_task = None;
                    if !self.probes.answered(answers) {
                        continue;
                    }
                    log::info!("the server answers again: next attempt now");
                    Event::ServerBack
                }
                // The service watchdog's ping: only served while this loop turns.
                beat = self.parts.heartbeat.due() => {
                    match beat {
                        Beat::Ping => self.parts.heartbeat.ping(),
                        Beat::Stall => notify::stall().await,
                    }
                    continue;
                }
            };
            self.note_event(&event);
            if let Event::PolicyChanged(policy) = &event {
                // The machine owns the retry schedule and the attempt deadlines; the liveness
                // deadline is read by the connections from this watch, the live one included.
                self.parts.dead_after.send_replace(policy.dead_after);
            }
            let actions = self.machine.handle(Instant::now(), event);
            // The decision is made: status and LEDs show it now, not after the teardown I/O.
            self.publish();
            let mut exit = None;
            for action in actions {
                if let Some(cause) = self.execute(action).await {
                    exit = Some(cause);
                }
            }
            self.publish();
            self.probes
                .waiting(Instant::now(), self.machine.view().next_retry_at);
            if let Some(cause) = exit {
                if let Some(task) = self.probe_task.take() {
                    task.abort();
                }
                return cause;
            }
        }
    }

    fn note_event(&self, event: &Event) {
        match event {
            Event::ConnectFailed { reason, .. } => {
                log::warn!("attempt {} failed: {reason}", self.current_attempt);
                self.parts.recorder.record(Entry::Error {
                    message: format!("attempt {}: {reason}", self.current_attempt),
                });
            }
            Event::ConnectionLost { reason } => {
                log::warn!("connection lost: {reason}");
                self.parts.recorder.record(Entry::Error {
                    message: format!("connection lost: {reason}"),
                });
            }
            Event::InputLost { reason } => {
                self.parts.recorder.record(Entry::Error {
                    message: format!("input lost: {reason}"),
                });
            }
            Event::PathChanged { reason, reconnect } => {
                log::info!(
                    "path changed: {reason}{}",
                    if *reconnect {
                        "; reconnecting over the new path"
                    } else {
                        " (network.paths: ignore)"
                    }
                );
                self.parts.recorder.record(Entry::PathSwitch {
                    message: reason.clone(),
                });
            }
            Event::MediaLost { reason } => {
                self.parts.recorder.record(Entry::Error {
                    message: format!("encoder failed: {reason}"),
                });
            }
            Event::InputNote { message } => {
                log::info!("input: {message}");
                self.parts.recorder.record(Entry::Note {
                    message: format!("input: {message}"),
                });
            }
            Event::ClockChanged { reason } => {
                log::info!("{reason}");
                self.parts.recorder.record(Entry::Note {
                    message: reason.clone(),
                });
            }
            Event::RetryNow { reason } => {
                log::info!("retry requested ({reason})");
                self.parts.recorder.record(Entry::Note {
                    message: format!("retry requested ({reason})"),
                });
            }
            _ => {}
        }
    }

    async fn attempt_finished(
        &mut self,
        generation: u64,
        result: Result<Box<dyn Connection>, Failure>,
    ) -> Option<Event> {
        let current = self.in_flight.as_ref().map(|f| f.generation) == Some(generation);
        if !current {
            // An attempt that finished after it was torn down: close what it opened.
            if let Ok(conn) = result {
                conn.close(self.machine.view().network_up).await;
            }
            return None;
        }
        let in_flight = self.in_flight.take().expect("checked just above");
        let _ = in_flight.task.await;
        match result {
            Ok(conn) => {
                self.live = Some((generation, conn));
                Some(Event::Connected)
            }
            Err(f) => Some(Event::ConnectFailed {
                class: f.class,
                reason: f.message,
            }),
        }
    }

    /// Carries out one action; returns the cause on `Exit`.
    async fn execute(&mut self, action: Action) -> Option<StopCause> {
        match action {
            Action::Connect { attempt } => self.start_attempt(attempt),
            Action::TearDown { reason } => self.tear_down(&reason).await,
            Action::ArmTimer { id, after } => self.timer = Some((id, Instant::now() + after)),
            Action::CancelTimer => self.timer = None,
            Action::ForceKeyframe => {
                self.parts.keyframes.request(Urgency::NewConnection);
            }
            Action::Report(t) => self.report(&t),
            Action::Exit(cause) => return Some(cause),
            Action::AnswerRetry { answer, reply } => {
                self.note_retry_answer(answer);
                reply.send(answer);
            }
        }
        None
    }

    /// One probe, in its own task so the loop keeps turning; bounded by `PROBE_TIMEOUT`.
    fn start_probe(&mut self) {
        self.probes.probing(Instant::now());
        let output = self.parts.output.clone();
        let answers = self.probe_tx.clone();
        self.probe_task = Some(tokio::spawn(async move {
            // An output that cannot probe reads as "answers": never seen silent, never "back".
            let _ = answers.send(output.reachable().await.unwrap_or(true));
        }));
    }

    /// A request that changed something goes to the log and the history; a refused one only
    /// to the debug log, so that a flood of them cannot wash the history out.
    fn note_retry_answer(&self, answer: RetryAnswer) {
        let what = match answer {
            RetryAnswer::Started => "connecting now",
            RetryAnswer::NothingToDo => "nothing to cut short",
            RetryAnswer::ServerAskedToWait { remaining } => {
                log::debug!("onair retry refused: the server's Retry-After has {remaining:?} left");
                return;
            }
            RetryAnswer::TooSoon { again_in } => {
                log::debug!("onair retry refused: another is allowed in {again_in:?}");
                return;
            }
        };
        log::info!("retry requested (onair retry): {what}");
        self.parts.recorder.record(Entry::Note {
            message: "retry requested (onair retry)".into(),
        });
    }

    fn start_attempt(&mut self, number: u32) {
        self.generation += 1;
        self.current_attempt = number;
        let generation = self.generation;
        let cancel = CancellationToken::new();
        let attempt = Attempt {
            number,
            door: self.parts.door.clone(),
            keyframes: self.parts.keyframes.clone(),
            events: EventSender::new(generation, self.conn_tx.clone()),
            stats: self.parts.stats.clone(),
            adaptation: self.parts.adaptation.clone(),
            dead_after: self.parts.dead_after.subscribe(),
            local_address: self
                .parts
                .path
                .as_ref()
                .and_then(|status| status.borrow().path.as_ref().and_then(|p| p.local)),
            cancel: cancel.clone(),
        };
        let output = self.parts.output.clone();
        let results = self.attempt_tx.clone();
        match attempt.local_address {
            Some(local) => log::info!("attempt {number}: connecting from {local}"),
            None => log::info!("attempt {number}: connecting"),
        }
        let task = tokio::spawn(async move {
            let result = output.connect(attempt).await;
            let _ = results.send((generation, result));
        });
        self.in_flight = Some(InFlight {
            generation,
            cancel,
            task,
        });
    }

    async fn tear_down(&mut self, reason: &str) {
        let polite = self.machine.view().network_up;
        if let Some(f) = self.in_flight.take() {
            log::debug!("cancelling attempt {}: {reason}", self.current_attempt);
            f.cancel.cancel();
            if tokio::time::timeout(CANCEL_GRACE, f.task).await.is_err() {
                log::warn!(
                    "attempt {} did not stop within {CANCEL_GRACE:?}",
                    self.current_attempt
                );
            }
            // The attempt may have succeeded just before the cancel: close what it returned
            // before anything new starts.
            while let Ok((_, result)) = self.attempt_rx.try_recv() {
                if let Ok(conn) = result {
                    conn.close(polite).await;
                }
            }
        }
        if let Some((_, conn)) = self.live.take() {
            conn.close(polite).await;
        }
    }

    fn report(&self, t: &Transition) {
        let view = self.machine.view();
        let retry = view
            .next_retry_at
            .map(|at| {
                format!(
                    "; next attempt in {:.1} s",
                    at.saturating_duration_since(Instant::now()).as_secs_f64()
                )
            })
            .unwrap_or_default();
        log::info!("state: {} -> {} ({}){retry}", t.from, t.to, t.reason);
        self.parts.recorder.record(Entry::Transition {
            from: t.from.to_string(),
            to: t.to.to_string(),
            reason: t.reason.clone(),
        });
    }

    fn publish(&mut self) {
        let view = self.machine.view();
        self.parts.heartbeat.status(view.state);
        self.parts.state.send_replace(view.state);
        self.parts.view.send_replace(view);
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
