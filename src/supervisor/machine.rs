//! The watchdog's decisions: state × event → state + actions, with no I/O and no clock.
//!
//! Everything that decides when to connect, tear down, wait or give up lives here, so it can
//! be tested exhaustively with an injected clock (str0m's sans-I/O habit). The driver in
//! `supervisor/driver.rs` turns actions into I/O and I/O into events. Nothing but this machine
//! decides to connect, tear down or give up.

use super::backoff::BackoffPolicy;
use super::state::StreamState;
use crate::config::{Config, OnLoss, ReconnectConfig};
use crate::lock::lock;
use crate::output::FailureClass;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// The longest `Retry-After` we honour; beyond this a misconfigured server would park the box
/// for hours. `onair retry --force` (root only) still cuts any wait short.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
/// A server that is back gets the next attempt within this (random) delay, so a fleet of boxes
/// waiting on it does not arrive in the same instant.
pub const SERVER_BACK_JITTER: Duration = Duration::from_millis(200);

/// At most one attempt per this long is started by `onair retry`, however many requests come:
/// each attempt shows the server the stream key, and a server that is asked too often may
/// rate-limit or ban it.
pub const RETRY_REQUEST_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The encoder produces access units (of the input or of the slate).
    MediaReady,
    /// The encoder stopped producing; the media side is restarting it.
    MediaLost { reason: String },
    /// The input's pictures are what the encoder gets (first time, or back after a loss).
    InputReady,
    /// The capture device vanished, has no signal or stopped delivering pictures. With
    /// `source.on_loss = slate` the encoder gets the slate and the connection stays.
    InputLost { reason: String },
    /// Something happened to the input worth the flight recorder; it changes no decision.
    InputNote { message: String },
    /// The network monitor's verdict changed (or a usable interface came or went while up).
    NetworkChanged { online: bool },
    /// The path to the server changed while the box stayed online (another uplink, another
    /// source address, another gateway). With `reconnect` the connection, bound to a path
    /// that no longer exists, is dropped and made again at once over the new one; without,
    /// the change is only reported.
    PathChanged { reason: String, reconnect: bool },
    /// The transport of the current attempt is up (ICE + DTLS, or the RTMP handshake).
    Connected,
    /// The first key frame went out on the current connection.
    MediaFlowing,
    /// The current attempt failed before media flowed.
    ConnectFailed { class: FailureClass, reason: String },
    /// An established connection died (peer state, RTCP silence, write stall, server close).
    ConnectionLost { reason: String },
    /// The timer armed by `Action::ArmTimer { id, .. }` fired.
    TimerFired { id: u64 },
    /// The box's clock was set or became synchronized (`crate::clock::watch`). A wait after a
    /// "clock behind" refusal ends at once.
    ClockChanged { reason: String },
    /// Retry now: SIGHUP (root, or a new config) — obeyed at once.
    RetryNow { reason: String },
    /// While waiting, a probe found the server answering again after finding it silent
    /// (`probe.rs`): the next attempt comes at once, a little jittered.
    ServerBack,
    /// `onair retry` over the status socket: obeyed at most once per
    /// [`RETRY_REQUEST_INTERVAL`], and while the server's `Retry-After` runs only with
    /// `force` (which the socket grants to root only). The answer goes to `reply`.
    RetryRequested { force: bool, reply: Reply },
    /// New reconnect settings (SIGHUP with only `reconnect` changed).
    PolicyChanged(ReconnectConfig),
    /// The daemon's run ends, and why.
    Stop(StopCause),
}

/// Why a run of the daemon ends. It travels with `Event::Stop` through the machine and comes
/// back out of `Action::Exit`, so the daemon learns it from the one event channel.
#[derive(Debug, Clone, PartialEq)]
pub enum StopCause {
    /// SIGINT or SIGTERM (the signal's name).
    Signal(&'static str),
    /// SIGHUP brought a config that changes more than the reconnect policy: run again with it.
    Restart(Box<Config>),
    /// Capture and encoding cannot work at all (no encoder works): stop and say why.
    MediaFatal(String),
    /// Every producer of events is gone: the daemon is being torn down without a signal.
    InputsClosed,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start connection attempt number `attempt` (1-based within the current streak).
    Connect {
        attempt: u32,
    },
    /// Close the current connection or cancel the attempt in flight, if any. Idempotent.
    TearDown {
        reason: String,
    },
    /// (Re)arm the single timer; an earlier armed timer is forgotten.
    ArmTimer {
        id: u64,
        after: Duration,
    },
    CancelTimer,
    /// Ask the encoder for a key frame now (a new connection must start with one).
    ForceKeyframe,
    /// The public state changed.
    Report(Transition),
    /// Stop everything and end the run, for this cause.
    Exit(StopCause),
    /// Tell whoever asked for a retry what came of it.
    AnswerRetry {
        answer: RetryAnswer,
        reply: Reply,
    },
}

/// What came of an `onair retry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAnswer {
    /// An attempt starts now.
    Started,
    /// Nothing to cut short: live, an attempt under way, or waiting for the input or the
    /// network (it connects when they are back).
    NothingToDo,
    /// Refused: the server asked the box to stay away this much longer (`Retry-After`).
    ServerAskedToWait { remaining: Duration },
    /// Refused: a retry was started less than [`RETRY_REQUEST_INTERVAL`] ago.
    TooSoon { again_in: Duration },
}

/// Where the answer to a request goes. The machine only hands it on, with its answer, in
/// [`Action::AnswerRetry`]; the driver sends it.
#[derive(Clone)]
pub struct Reply(Arc<Mutex<Option<oneshot::Sender<RetryAnswer>>>>);

impl Reply {
    pub fn new() -> (Reply, oneshot::Receiver<RetryAnswer>) {
        let (tx, rx) = oneshot::channel();
        (Reply(Arc::new(Mutex::new(Some(tx)))), rx)
    }

    /// Sends the answer (once; a requester that gave up is no one's concern).
    pub fn send(&self, answer: RetryAnswer) {
        if let Some(tx) = lock(&self.0).take() {
            let _ = tx.send(answer);
        }
    }
}

impl PartialEq for Reply {
    fn eq(&self, other: &Reply) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reply")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub from: StreamState,
    pub to: StreamState,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not connecting: waiting for input or network (the public state says which).
    Idle,
    /// An attempt is in flight (from `Connect` until media flows or it fails).
    Connecting {
        transport_up: bool,
    },
    Live,
    /// Waiting out a backoff delay.
    Waiting,
    Failed,
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    Starting,
    Ok,
    Lost,
}

/// What `onair status` shows of the watchdog.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineView {
    pub state: StreamState,
    pub since: Instant,
    pub attempt: u32,
    pub next_retry_at: Option<Instant>,
    pub reconnects: u64,
    pub live_total: Duration,
    pub live_since: Option<Instant>,
    pub last_error: Option<String>,
    pub network_up: bool,
}

pub struct Machine {
    on_loss: OnLoss,
    /// Access units flow from the encoder.
    media: bool,
    policy: BackoffPolicy,
    max_attempts: u32,
    connect_timeout: Duration,
    stable_after: Duration,
    phase: Phase,
    input: Input,
    network_up: bool,
    /// Consecutive failures, a drop from `live` included; drives the delay.
    streak: u32,
    /// Consecutive failed attempts; drives `max_attempts`.
    failed_attempts: u32,
    /// Number of the attempt in flight or last made in this streak.
    attempt: u32,
    been_live: bool,
    /// The present wait follows a "clock behind" refusal: a clock change ends it.
    clock_wait: bool,
    /// The clock changed while the attempt in flight was under way.
    clock_changed_in_attempt: bool,
    timer_seq: u64,
    armed: Option<u64>,
    rng: SmallRng,
    state: StreamState,
    since: Instant,
    next_retry_at: Option<Instant>,
    reconnects: u64,
    live_total: Duration,
    live_since: Option<Instant>,
    last_error: Option<String>,
    /// The server asked the box to stay away until then (`Retry-After`).
    server_hold_until: Option<Instant>,
    /// When `onair retry` last started an attempt.
    last_requested_retry: Option<Instant>,
}

impl Machine {
    /// `seed` makes the jitter reproducible in tests; the daemon passes a random one. An input
    /// loss disconnects unless [`Machine::on_input_loss`] says otherwise.
    pub fn new(config: &ReconnectConfig, network_up: bool, seed: u64, now: Instant) -> Machine {
        Machine {
            on_loss: OnLoss::Disconnect,
            media: false,
            policy: BackoffPolicy::from(config),
            max_attempts: config.max_attempts,
            connect_timeout: config.connect_timeout,
            stable_after: config.stable_after,
            phase: Phase::Idle,
            input: Input::Starting,
            network_up,
            streak: 0,
            failed_attempts: 0,
            attempt: 0,
            been_live: false,
            clock_wait: false,
            clock_changed_in_attempt: false,
            timer_seq: 0,
            armed: None,
            rng: SmallRng::seed_from_u64(seed),
            state: StreamState::Starting,
            since: now,
            next_retry_at: None,
            reconnects: 0,
            live_total: Duration::ZERO,
            live_since: None,
            last_error: None,
            server_hold_until: None,
            last_requested_retry: None,
        }
    }

    /// What an input loss does: keep the connection on the slate, or disconnect.
    pub fn on_input_loss(mut self, on_loss: OnLoss) -> Machine {
        self.on_loss = on_loss;
        self
    }

    pub fn state(&self) -> StreamState {
        self.state
    }

    pub fn view(&self) -> MachineView {
        MachineView {
            state: self.state,
            since: self.since,
            attempt: self.attempt,
            next_retry_at: self.next_retry_at,
            reconnects: self.reconnects,
            live_total: self.live_total,
            live_since: self.live_since,
            last_error: self.last_error.clone(),
            network_up: self.network_up,
        }
    }

    /// Feeds one event in; returns the actions to carry out, in order.
    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        let reason = self.apply(now, event, &mut out);
        self.report(now, reason, &mut out);
        out
    }

    /// One handler per event; each returns the reason a state change it causes is reported
    /// with (empty: nothing worth saying).
    fn apply(&mut self, now: Instant, event: Event, out: &mut Vec<Action>) -> String {
        if self.phase == Phase::Stopped {
            return String::new();
        }
        match event {
            Event::MediaReady => self.on_media_ready(out),
            Event::MediaLost { reason } => self.on_media_lost(now, reason, out),
            Event::InputReady => self.on_input_ready(out),
            Event::InputLost { reason } => self.on_input_lost(now, reason, out),
            Event::InputNote { .. } => String::new(),
            Event::NetworkChanged { online: false } => self.on_network_down(now, out),
            Event::NetworkChanged { online: true } => self.on_network_up(out),
            Event::PathChanged { reason, reconnect } => {
                self.on_path_changed(now, reason, reconnect, out)
            }
            Event::Connected => self.on_connected(out),
            Event::MediaFlowing => self.on_media_flowing(now, out),
            Event::ConnectFailed { class, reason } => {
                self.on_connect_failed(now, class, reason, out)
            }
            Event::ConnectionLost { reason } => self.on_connection_lost(now, reason, out),
            Event::TimerFired { id } => self.on_timer(now, id, out),
            Event::ClockChanged { reason } => self.on_clock_changed(reason, out),
            Event::RetryNow { reason } => self.on_retry_now(reason, out),
            Event::ServerBack => self.on_server_back(now, out),
            Event::RetryRequested { force, reply } => {
                self.on_retry_requested(now, force, reply, out)
            }
            Event::PolicyChanged(config) => self.on_policy_changed(&config),
            Event::Stop(cause) => self.on_stop(now, cause, out),
        }
    }

    fn on_media_ready(&mut self, out: &mut Vec<Action>) -> String {
        self.media = true;
        if self.phase == Phase::Idle {
            self.try_connect(out);
        }
        "encoder ready".into()
    }

    fn on_media_lost(&mut self, now: Instant, reason: String, out: &mut Vec<Action>) -> String {
        self.media = false;
        self.last_error = Some(format!("encoder: {reason}"));
        if self.phase != Phase::Failed {
            self.go_idle(now, &format!("encoder failed: {reason}"), out);
        }
        format!("encoder failed: {reason}")
    }

    fn on_input_ready(&mut self, out: &mut Vec<Action>) -> String {
        let was_lost = std::mem::replace(&mut self.input, Input::Ok) == Input::Lost;
        if self.phase == Phase::Idle {
            self.try_connect(out);
        }
        if was_lost {
            "input back".into()
        } else {
            "input ready".into()
        }
    }

    fn on_input_lost(&mut self, now: Instant, reason: String, out: &mut Vec<Action>) -> String {
        self.input = Input::Lost;
        self.last_error = Some(format!("input: {reason}"));
        match self.on_loss {
            // The slate keeps the connection: nothing to tear down, and a box that
            // was waiting for its input may connect now.
            OnLoss::Slate => {
                if self.phase == Phase::Idle {
                    self.try_connect(out);
                }
            }
            OnLoss::Disconnect => {
                if self.phase != Phase::Failed {
                    self.go_idle(now, &format!("input lost: {reason}"), out);
                }
            }
        }
        format!("input lost: {reason}")
    }

    fn on_network_down(&mut self, now: Instant, out: &mut Vec<Action>) -> String {
        self.network_up = false;
        if self.phase != Phase::Failed {
            self.go_idle(now, "network down", out);
        }
        "network down".into()
    }

    fn on_network_up(&mut self, out: &mut Vec<Action>) -> String {
        let was_up = std::mem::replace(&mut self.network_up, true);
        match self.phase {
            // A link event is one of the things that may fix a permanent error (a
            // captive portal, a different uplink), so it earns one more try.
            Phase::Failed => self.restart_streak(out),
            // Cancel the pending wait: the network, not the server, was the problem.
            Phase::Waiting | Phase::Idle => self.restart_streak(out),
            Phase::Connecting { .. } | Phase::Live | Phase::Stopped => {}
        }
        if was_up {
            "network changed".into()
        } else {
            "network up".into()
        }
    }

    fn on_path_changed(
        &mut self,
        now: Instant,
        reason: String,
        reconnect: bool,
        out: &mut Vec<Action>,
    ) -> String {
        if reconnect && self.network_up {
            self.path_changed(now, &reason, out);
        }
        format!("path changed: {reason}")
    }

    fn on_connected(&mut self, out: &mut Vec<Action>) -> String {
        if let Phase::Connecting { transport_up } = &mut self.phase {
            *transport_up = true;
            out.push(Action::ForceKeyframe);
        }
        "connected".into()
    }

    fn on_media_flowing(&mut self, now: Instant, out: &mut Vec<Action>) -> String {
        if matches!(self.phase, Phase::Connecting { .. }) {
            if self.been_live {
                self.reconnects += 1;
            }
            self.been_live = true;
            self.failed_attempts = 0;
            self.server_hold_until = None;
            self.phase = Phase::Live;
            self.live_since = Some(now);
            self.next_retry_at = None;
            self.arm(self.stable_after, out);
        }
        "media flowing".into()
    }

    fn on_connect_failed(
        &mut self,
        now: Instant,
        class: FailureClass,
        reason: String,
        out: &mut Vec<Action>,
    ) -> String {
        if matches!(self.phase, Phase::Connecting { .. }) {
            self.attempt_failed(now, class, &reason, out);
        }
        reason
    }

    fn on_connection_lost(
        &mut self,
        now: Instant,
        reason: String,
        out: &mut Vec<Action>,
    ) -> String {
        match self.phase {
            Phase::Live => {
                self.end_live(now);
                self.last_error = Some(reason.clone());
                out.push(Action::TearDown {
                    reason: reason.clone(),
                });
                // The drop is the first failure of a new streak (or extends a streak that
                // never became stable).
                self.streak += 1;
                self.attempt = 0;
                self.schedule(now, None, out);
                format!("connection lost: {reason}")
            }
            Phase::Connecting { .. } => {
                self.attempt_failed(now, FailureClass::Transient, &reason, out);
                reason
            }
            _ => reason,
        }
    }

    fn on_timer(&mut self, now: Instant, id: u64, out: &mut Vec<Action>) -> String {
        if self.armed != Some(id) {
            return String::new();
        }
        self.armed = None;
        match self.phase {
            Phase::Connecting { .. } => {
                let reason = format!(
                    "attempt timed out after {} ms",
                    self.connect_timeout.as_millis()
                );
                self.attempt_failed(now, FailureClass::Transient, &reason, out);
                reason
            }
            Phase::Live => {
                // Stable long enough: the next drop gets an immediate retry again.
                self.streak = 0;
                "stable".into()
            }
            Phase::Waiting => {
                self.try_connect(out);
                "retry timer".into()
            }
            _ => String::new(),
        }
    }

    fn on_clock_changed(&mut self, reason: String, out: &mut Vec<Action>) -> String {
        match self.phase {
            // The attempt may fail on the clock it started with: it is then retried at once.
            Phase::Connecting { .. } => self.clock_changed_in_attempt = true,
            Phase::Waiting if self.clock_wait => self.restart_streak(out),
            _ => {}
        }
        reason
    }

    fn on_retry_now(&mut self, reason: String, out: &mut Vec<Action>) -> String {
        match self.phase {
            Phase::Failed | Phase::Waiting | Phase::Idle => self.restart_streak(out),
            Phase::Connecting { .. } | Phase::Live | Phase::Stopped => {}
        }
        reason
    }

    /// The wait is cut short, nothing else: the streak (and so the waits after a failure of
    /// this attempt) stays as the schedule made it.
    fn on_server_back(&mut self, now: Instant, out: &mut Vec<Action>) -> String {
        // A server that asked to be left alone (`Retry-After`) is not asked earlier because
        // it accepts connections: that is what it asked for.
        let held = self.server_hold_until.is_some_and(|until| until > now);
        if self.phase != Phase::Waiting || held {
            return String::new();
        }
        let jitter = SERVER_BACK_JITTER.mul_f64(self.rng.random_range(0.0..=1.0));
        if self.next_retry_at.is_some_and(|at| at <= now + jitter) {
            return String::new();
        }
        self.next_retry_at = Some(now + jitter);
        self.arm(jitter, out);
        "the server answers again".into()
    }

    fn on_retry_requested(
        &mut self,
        now: Instant,
        force: bool,
        reply: Reply,
        out: &mut Vec<Action>,
    ) -> String {
        let would_connect = matches!(self.phase, Phase::Failed | Phase::Waiting | Phase::Idle)
            && self.has_picture()
            && self.network_up;
        let held = self
            .server_hold_until
            .map(|until| until.saturating_duration_since(now))
            .filter(|left| !left.is_zero());
        let too_soon = self
            .last_requested_retry
            .map(|at| (at + RETRY_REQUEST_INTERVAL).saturating_duration_since(now))
            .filter(|left| !left.is_zero());
        let answer = match (would_connect, held, too_soon) {
            (false, _, _) => {
                // Leaves `failed` to wait for the input or the network, as before.
                self.on_retry_now(String::new(), out);
                RetryAnswer::NothingToDo
            }
            (true, Some(remaining), _) if !force => RetryAnswer::ServerAskedToWait { remaining },
            (true, _, Some(again_in)) => RetryAnswer::TooSoon { again_in },
            (true, _, None) => {
                self.last_requested_retry = Some(now);
                self.restart_streak(out);
                RetryAnswer::Started
            }
        };
        out.push(Action::AnswerRetry { answer, reply });
        match answer {
            RetryAnswer::Started | RetryAnswer::NothingToDo => "onair retry".into(),
            _ => String::new(),
        }
    }

    fn on_policy_changed(&mut self, config: &ReconnectConfig) -> String {
        self.policy = BackoffPolicy::from(config);
        self.max_attempts = config.max_attempts;
        self.connect_timeout = config.connect_timeout;
        self.stable_after = config.stable_after;
        "reconnect settings changed".into()
    }

    fn on_stop(&mut self, now: Instant, cause: StopCause, out: &mut Vec<Action>) -> String {
        self.end_live(now);
        out.push(Action::TearDown {
            reason: "stopping".into(),
        });
        self.cancel_timer(out);
        self.phase = Phase::Stopped;
        out.push(Action::Exit(cause));
        "stopping".into()
    }

    /// The connection (or the attempt) is bound to a path that is gone: drop it and try at
    /// once over the new one. Not a failure: the schedule is not advanced and no attempt is
    /// counted against `max_attempts`.
    fn path_changed(&mut self, now: Instant, reason: &str, out: &mut Vec<Action>) {
        match self.phase {
            Phase::Live | Phase::Connecting { .. } => {
                self.end_live(now);
                out.push(Action::TearDown {
                    reason: format!("path changed: {reason}"),
                });
                self.cancel_timer(out);
                self.attempt = 0;
                self.phase = Phase::Idle;
                self.try_connect(out);
            }
            // Like a link event: the waits (and a permanent error) may have been the old
            // path's fault.
            Phase::Waiting | Phase::Failed => self.restart_streak(out),
            Phase::Idle | Phase::Stopped => {}
        }
    }

    /// A fresh schedule, then an attempt at once if input and network allow.
    fn restart_streak(&mut self, out: &mut Vec<Action>) {
        self.streak = 0;
        self.failed_attempts = 0;
        self.attempt = 0;
        self.cancel_timer(out);
        self.phase = Phase::Idle;
        self.try_connect(out);
    }

    /// Whether there is something to send: units flow, of the input — or of the slate, when
    /// the slate stands in for a lost input.
    fn has_picture(&self) -> bool {
        self.media
            && match self.input {
                Input::Ok => true,
                Input::Lost => self.on_loss == OnLoss::Slate,
                Input::Starting => false,
            }
    }

    fn try_connect(&mut self, out: &mut Vec<Action>) {
        self.next_retry_at = None;
        self.clock_wait = false;
        self.clock_changed_in_attempt = false;
        if !self.has_picture() || !self.network_up {
            self.cancel_timer(out);
            self.phase = Phase::Idle;
            return;
        }
        self.attempt += 1;
        self.phase = Phase::Connecting {
            transport_up: false,
        };
        out.push(Action::Connect {
            attempt: self.attempt,
        });
        self.arm(self.connect_timeout, out);
    }

    fn attempt_failed(
        &mut self,
        now: Instant,
        class: FailureClass,
        reason: &str,
        out: &mut Vec<Action>,
    ) {
        self.last_error = Some(reason.to_string());
        out.push(Action::TearDown {
            reason: reason.to_string(),
        });
        if class == FailureClass::Permanent {
            self.cancel_timer(out);
            self.phase = Phase::Failed;
            return;
        }
        if class == FailureClass::ClockBehind {
            // Not the server's fault and not hopeless: the clock gets fixed (NTP, or the
            // server's own Date) and the next attempt can succeed. The streak still grows, so
            // a clock that stays behind is not asked about at every second.
            self.streak += 1;
            if std::mem::take(&mut self.clock_changed_in_attempt) {
                self.try_connect(out);
            } else {
                self.schedule(now, None, out);
                self.clock_wait = self.phase == Phase::Waiting;
            }
            return;
        }
        self.failed_attempts += 1;
        self.streak += 1;
        if self.max_attempts > 0 && self.failed_attempts >= self.max_attempts {
            self.cancel_timer(out);
            self.phase = Phase::Failed;
            self.last_error = Some(format!(
                "gave up after {} attempts; last error: {reason}",
                self.failed_attempts
            ));
            return;
        }
        let retry_after = match class {
            FailureClass::RetryAfter(d) => Some(d.min(MAX_RETRY_AFTER)),
            _ => None,
        };
        if let Some(hold) = retry_after {
            self.server_hold_until = Some(now + hold);
        }
        self.schedule(now, retry_after, out);
    }

    /// Waits out the backoff delay for the current streak (at least `retry_after`), or tries
    /// at once when the delay is zero.
    fn schedule(&mut self, now: Instant, retry_after: Option<Duration>, out: &mut Vec<Action>) {
        let unit = self.rng.random_range(-1.0..=1.0);
        let mut delay = self.policy.delay(self.streak, unit);
        if let Some(at_least) = retry_after {
            delay = delay.max(at_least);
        }
        if delay.is_zero() {
            self.try_connect(out);
        } else {
            self.phase = Phase::Waiting;
            self.next_retry_at = Some(now + delay);
            self.arm(delay, out);
        }
    }

    fn go_idle(&mut self, now: Instant, reason: &str, out: &mut Vec<Action>) {
        self.clock_wait = false;
        if matches!(
            self.phase,
            Phase::Connecting { .. } | Phase::Live | Phase::Waiting
        ) {
            self.end_live(now);
            out.push(Action::TearDown {
                reason: reason.to_string(),
            });
            self.cancel_timer(out);
        }
        self.next_retry_at = None;
        self.phase = Phase::Idle;
    }

    fn end_live(&mut self, now: Instant) {
        if let Some(start) = self.live_since.take() {
            self.live_total += now.saturating_duration_since(start);
        }
    }

    fn arm(&mut self, after: Duration, out: &mut Vec<Action>) {
        self.timer_seq += 1;
        self.armed = Some(self.timer_seq);
        out.push(Action::ArmTimer {
            id: self.timer_seq,
            after,
        });
    }

    fn cancel_timer(&mut self, out: &mut Vec<Action>) {
        if self.armed.take().is_some() {
            out.push(Action::CancelTimer);
        }
    }

    fn public_state(&self) -> StreamState {
        match self.phase {
            Phase::Stopped => self.state,
            Phase::Failed => StreamState::Failed,
            _ if self.input == Input::Lost => StreamState::NoInput,
            _ if self.input == Input::Starting || !self.media => StreamState::Starting,
            _ if !self.network_up => StreamState::Offline,
            Phase::Live => StreamState::Live,
            Phase::Connecting { .. } | Phase::Waiting | Phase::Idle => {
                if self.been_live {
                    StreamState::Reconnecting
                } else {
                    StreamState::Connecting
                }
            }
        }
    }

    fn report(&mut self, now: Instant, reason: String, out: &mut Vec<Action>) {
        let to = self.public_state();
        if to != self.state {
            let from = std::mem::replace(&mut self.state, to);
            self.since = now;
            out.push(Action::Report(Transition { from, to, reason }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use StreamState::*;

    /// Drives the machine with a simulated clock that jumps to the armed timer, like str0m's
    /// tests: no sockets, no sleeping.
    struct Sim {
        m: Machine,
        now: Instant,
        start: Instant,
        timer: Option<(u64, Instant)>,
        connects: Vec<(Duration, u32)>,
        teardowns: usize,
        keyframes: usize,
        states: Vec<StreamState>,
        exited: bool,
        answers: Vec<RetryAnswer>,
    }

    impl Sim {
        /// A machine whose encoder already produces (most tests are about what follows).
        fn new(config: ReconnectConfig, network_up: bool) -> Sim {
            let mut s = Sim::bare(config, network_up, OnLoss::Disconnect);
            s.ev(Event::MediaReady);
            s
        }

        fn bare(config: ReconnectConfig, network_up: bool, on_loss: OnLoss) -> Sim {
            let now = Instant::now();
            Sim {
                m: Machine::new(&config, network_up, 7, now).on_input_loss(on_loss),
                now,
                start: now,
                timer: None,
                connects: vec![],
                teardowns: 0,
                keyframes: 0,
                states: vec![Starting],
                exited: false,
                answers: vec![],
            }
        }

        fn live_on_slate_box() -> Sim {
            let mut s = Sim::bare(no_jitter(), true, OnLoss::Slate);
            s.ev(Event::MediaReady);
            s.ev(Event::InputReady);
            s.ev(Event::Connected);
            s.ev(Event::MediaFlowing);
            assert_eq!(s.m.state(), Live);
            s
        }

        fn live_box() -> Sim {
            let mut s = Sim::new(no_jitter(), true);
            s.ev(Event::InputReady);
            s.ev(Event::Connected);
            s.ev(Event::MediaFlowing);
            assert_eq!(s.m.state(), Live);
            s
        }

        fn ev(&mut self, e: Event) {
            for a in self.m.handle(self.now, e) {
                match a {
                    Action::Connect { attempt } => {
                        self.connects.push((self.now - self.start, attempt))
                    }
                    Action::TearDown { .. } => self.teardowns += 1,
                    Action::ArmTimer { id, after } => self.timer = Some((id, self.now + after)),
                    Action::CancelTimer => self.timer = None,
                    Action::ForceKeyframe => self.keyframes += 1,
                    Action::Report(t) => {
                        assert_eq!(Some(&t.from), self.states.last());
                        self.states.push(t.to)
                    }
                    Action::Exit(_) => self.exited = true,
                    Action::AnswerRetry { answer, reply } => {
                        reply.send(answer);
                        self.answers.push(answer);
                    }
                }
            }
        }

        fn advance(&mut self, d: Duration) {
            let target = self.now + d;
            while let Some((id, at)) = self.timer {
                if at > target {
                    break;
                }
                self.now = at;
                self.timer = None;
                self.ev(Event::TimerFired { id });
            }
            self.now = target;
        }

        fn fail(&mut self, class: FailureClass) {
            self.ev(Event::ConnectFailed {
                class,
                reason: "nope".into(),
            });
        }

        /// Fails the attempt in flight and runs the clock to the next attempt.
        fn fail_until_next_attempt(&mut self) {
            let before = self.connects.len();
            self.fail(FailureClass::Transient);
            if self.connects.len() == before {
                let (_, at) = self.timer.expect("a failed attempt arms the retry timer");
                self.advance(at - self.now);
            }
            assert_eq!(self.connects.len(), before + 1, "exactly one new attempt");
        }

        fn connect_times_ms(&self) -> Vec<u128> {
            self.connects.iter().map(|(t, _)| t.as_millis()).collect()
        }
    }

    fn no_jitter() -> ReconnectConfig {
        ReconnectConfig {
            jitter: 0.0,
            ..ReconnectConfig::default()
        }
    }

    #[test]
    fn starts_connects_and_goes_live_with_a_key_frame() {
        let mut s = Sim::new(ReconnectConfig::default(), true);
        assert_eq!(s.m.state(), Starting);
        s.ev(Event::InputReady);
        assert_eq!(s.m.state(), Connecting);
        assert_eq!(s.connects.len(), 1);
        s.ev(Event::Connected);
        assert_eq!(s.keyframes, 1, "a new connection starts with a key frame");
        assert_eq!(s.m.state(), Connecting, "live only once media flows");
        s.ev(Event::MediaFlowing);
        assert_eq!(s.m.state(), Live);
        assert_eq!(s.states, vec![Starting, Connecting, Live]);
    }

    #[test]
    fn failed_attempts_follow_immediate_1s_2s_schedule() {
        let mut s = Sim::new(no_jitter(), true);
        s.ev(Event::InputReady);
        for _ in 0..3 {
            s.fail_until_next_attempt();
        }
        // t=0 first try, immediate retry, +1 s, +2 s.
        assert_eq!(s.connect_times_ms(), vec![0, 0, 1000, 3000]);
        assert_eq!(s.m.state(), Connecting);
    }

    #[test]
    fn drop_retries_at_once_then_backs_off_and_caps() {
        let mut s = Sim::live_box();
        s.advance(Duration::from_secs(11)); // stable
        let t0 = s.now - s.start;
        s.ev(Event::ConnectionLost {
            reason: "ice failed".into(),
        });
        assert_eq!(s.m.state(), Reconnecting);
        assert_eq!(s.connects.last().unwrap().0, t0, "first retry is immediate");
        let mut gaps = vec![];
        for _ in 0..8 {
            s.fail_until_next_attempt();
        }
        for w in s.connects.windows(2).skip(1) {
            gaps.push((w[1].0 - w[0].0).as_millis());
        }
        assert_eq!(
            gaps,
            vec![1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
    }

    #[test]
    fn jittered_waits_stay_within_ten_percent() {
        let mut s = Sim::new(ReconnectConfig::default(), true);
        s.ev(Event::InputReady);
        for _ in 0..12 {
            s.fail_until_next_attempt();
        }
        let expected = [
            0u64, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000, 30000,
        ];
        let mut saw_jitter = false;
        for (w, base) in s.connects.windows(2).zip(expected) {
            let gap = (w[1].0 - w[0].0).as_millis() as u64;
            assert!(
                gap * 10 >= base * 9 && gap * 10 <= base * 11,
                "gap {gap} vs {base}"
            );
            assert!(gap <= 30000);
            saw_jitter |= gap != base;
        }
        assert!(saw_jitter, "jitter must actually vary the waits");
    }

    #[test]
    fn stable_connection_resets_the_schedule_but_a_short_one_does_not() {
        let mut s = Sim::new(no_jitter(), true);
        s.ev(Event::InputReady);
        s.fail(FailureClass::Transient); // immediate
        s.fail(FailureClass::Transient); // wait 1 s
        s.advance(Duration::from_secs(1));
        s.ev(Event::Connected);
        s.ev(Event::MediaFlowing);
        s.advance(Duration::from_secs(2)); // not yet stable
        let n = s.connects.len();
        s.ev(Event::ConnectionLost { reason: "x".into() });
        assert_eq!(
            s.connects.len(),
            n,
            "an unstable drop extends the streak: no instant retry"
        );
        assert_eq!(
            s.m.view().next_retry_at,
            Some(s.now + Duration::from_secs(2))
        );
        s.advance(Duration::from_secs(2));
        s.ev(Event::Connected);
        s.ev(Event::MediaFlowing);
        s.advance(Duration::from_secs(10)); // stable_after
        let n = s.connects.len();
        s.ev(Event::ConnectionLost { reason: "x".into() });
        assert_eq!(
            s.connects.len(),
            n + 1,
            "after a stable period the retry is immediate"
        );
    }

    #[test]
    fn permanent_error_fails_at_once_and_waits_for_a_reason() {
        let mut s = Sim::new(ReconnectConfig::default(), true);
        s.ev(Event::InputReady);
        s.fail(FailureClass::Permanent);
        assert_eq!(s.m.state(), Failed);
        s.advance(Duration::from_secs(3600));
        assert_eq!(s.connects.len(), 1, "no further attempt without a reason");
        s.ev(Event::RetryNow {
            reason: "SIGHUP".into(),
        });
        assert_eq!(s.connects.len(), 2);
        assert_eq!(s.m.state(), Connecting);
        s.fail(FailureClass::Permanent);
        s.ev(Event::NetworkChanged { online: false });
        assert_eq!(s.m.state(), Failed, "failed outranks offline");
        s.ev(Event::NetworkChanged { online: true });
        assert_eq!(s.connects.len(), 3, "a link event earns another try");
    }

    #[test]
    fn max_attempts_gives_up_and_says_so() {
        let mut s = Sim::new(
            ReconnectConfig {
                max_attempts: 3,
                ..no_jitter()
            },
            true,
        );
        s.ev(Event::InputReady);
        for _ in 0..3 {
            s.fail(FailureClass::Transient);
            s.advance(Duration::from_secs(5));
        }
        assert_eq!(s.connects.len(), 3);
        assert_eq!(s.m.state(), Failed);
        let err = s.m.view().last_error.unwrap();
        assert!(err.contains("gave up after 3 attempts"), "{err}");
    }

    fn clock_changed() -> Event {
        Event::ClockChanged {
            reason: "clock stepped".into(),
        }
    }

    #[test]
    fn a_clock_behind_never_fails_and_a_clock_change_retries_at_once() {
        let mut s = Sim::new(
            ReconnectConfig {
                max_attempts: 2,
                ..no_jitter()
            },
            true,
        );
        s.ev(Event::InputReady);
        // Far more refusals than max_attempts: the box waits for its clock, it never gives up.
        for _ in 0..6 {
            s.fail(FailureClass::ClockBehind);
            assert_ne!(s.m.state(), Failed);
            if let Some((_, at)) = s.timer {
                s.advance(at - s.now);
            }
        }
        assert_eq!(s.connects.len(), 7);
        assert_eq!(s.m.state(), Connecting);
        // Refused again: the backoff (at its 30 s cap by now) is cut short by the clock's change.
        s.fail(FailureClass::ClockBehind);
        let wait = s.m.view().next_retry_at.expect("waiting") - s.now;
        assert_eq!(wait, Duration::from_secs(30));
        s.advance(Duration::from_millis(300));
        s.ev(clock_changed());
        assert_eq!(s.connects.len(), 8, "retried as soon as the clock changed");
        assert_eq!(s.connects[7].0, s.now - s.start);
        // And it counts for nothing toward max_attempts: two ordinary failures still may come.
        s.fail(FailureClass::Transient);
        assert_ne!(s.m.state(), Failed);
    }

    #[test]
    fn a_clock_set_during_the_attempt_retries_at_once() {
        let mut s = Sim::new(no_jitter(), true);
        s.ev(Event::InputReady);
        s.fail_until_next_attempt();
        s.fail_until_next_attempt(); // attempt 3 in flight; the next wait would be 2 s
        // The attempt stepped the clock (the server's Date) before it reported the refusal.
        s.ev(clock_changed());
        s.fail(FailureClass::ClockBehind);
        assert_eq!(s.connects.len(), 4, "no wait: the clock is right now");
        assert_eq!(s.connect_times_ms(), vec![0, 0, 1000, 1000]);
        // Without a change, the next refusal waits its turn.
        s.fail(FailureClass::ClockBehind);
        assert_eq!(s.connects.len(), 4);
        assert!(s.m.view().next_retry_at.is_some());
    }

    #[test]
    fn a_clock_change_does_not_cut_an_ordinary_wait_short() {
        let mut s = Sim::new(no_jitter(), true);
        s.ev(Event::InputReady);
        s.fail_until_next_attempt();
        s.fail(FailureClass::Transient); // waiting 1 s for the server
        s.ev(clock_changed());
        assert_eq!(s.connects.len(), 2);
        let mut live = Sim::live_box();
        live.ev(clock_changed());
        assert_eq!((live.m.state(), live.teardowns), (Live, 0));
    }

    #[test]
    fn zero_max_attempts_never_gives_up() {
        let mut s = Sim::new(ReconnectConfig::default(), true);
        s.ev(Event::InputReady);
        for _ in 0..500 {
            s.fail_until_next_attempt();
        }
        assert_eq!(s.m.state(), Connecting);
        assert_eq!(s.connects.len(), 501);
    }

    #[test]
    fn retry_after_is_honoured() {
        let mut s = Sim::new(no_jitter(), true);
        s.ev(Event::InputReady);
        s.fail(FailureClass::RetryAfter(Duration::from_secs(7)));
        s.advance(Duration::from_millis(6999));
        assert_eq!(s.connects.len(), 1);
        s.advance(Duration::from_millis(1));
        assert_eq!(s.connect_times_ms(), vec![0, 7000]);
    }

    #[test]
    fn offline_pauses_attempts_and_link_up_retries_at_once_with_fresh_schedule() {
        let mut s = Sim::new(no_jitter(), true);
        s.ev(Event::InputReady);
        for _ in 0..5 {
            s.fail(FailureClass::Transient);
            s.advance(Duration::from_millis(100));
        }
        assert!(s.m.view().next_retry_at.is_some());
        s.ev(Event::NetworkChanged { online: false });
        assert_eq!(s.m.state(), Offline);
        let n = s.connects.len();
        s.advance(Duration::from_secs(45));
        assert_eq!(s.connects.len(), n, "no attempts while offline");
        s.ev(Event::NetworkChanged { online: true });
        assert_eq!(s.connects.len(), n + 1, "link-up retries immediately");
        assert_eq!(s.connects.last().unwrap().1, 1, "with a fresh schedule");
        s.fail(FailureClass::Transient);
        assert_eq!(
            s.connects.len(),
            n + 2,
            "fresh schedule: next retry immediate"
        );
    }

    #[test]
    fn network_down_while_live_tears_down_and_reports_offline() {
        let mut s = Sim::live_box();
        s.ev(Event::NetworkChanged { online: false });
        assert_eq!(s.m.state(), Offline);
        assert_eq!(s.teardowns, 1);
        s.ev(Event::NetworkChanged { online: true });
        assert_eq!(s.m.state(), Reconnecting);
        s.ev(Event::Connected);
        s.ev(Event::MediaFlowing);
        assert_eq!(s.m.state(), Live);
        assert_eq!(s.m.view().reconnects, 1);
        assert_eq!(s.keyframes, 2, "every connection started with a key frame");
    }

    #[test]
    fn starts_offline_when_no_network() {
        let mut s = Sim::new(ReconnectConfig::default(), false);
        s.ev(Event::InputReady);
        assert_eq!(s.m.state(), Offline);
        assert!(s.connects.is_empty());
        s.ev(Event::NetworkChanged { online: true });
        assert_eq!(s.connects.len(), 1);
    }

    #[test]
    fn attempt_deadline_fails_the_attempt() {
        let mut s = Sim::new(no_jitter(), true);
        s.ev(Event::InputReady);
        s.advance(Duration::from_millis(10_000));
        assert_eq!(
            s.connect_times_ms(),
            vec![0, 10_000],
            "timeout, then immediate retry"
        );
        assert!(s.m.view().last_error.unwrap().contains("timed out"));
        s.advance(Duration::from_millis(10_000));
        s.advance(Duration::from_millis(1_000));
        assert_eq!(s.connect_times_ms(), vec![0, 10_000, 21_000]);
    }

    #[test]
    fn input_loss_tears_down_and_recovers() {
        let mut s = Sim::live_box();
        s.ev(Event::InputLost {
            reason: "device gone".into(),
        });
        assert_eq!(s.m.state(), NoInput);
        assert_eq!(s.teardowns, 1);
        s.advance(Duration::from_secs(100));
        assert_eq!(s.connects.len(), 1, "no attempts without input");
        s.ev(Event::InputReady);
        assert_eq!(s.connects.len(), 2);
        assert_eq!(s.m.state(), Reconnecting);
    }

    #[test]
    fn with_the_slate_an_input_loss_keeps_the_connection_and_shows_no_input() {
        let mut s = Sim::live_on_slate_box();
        s.ev(Event::InputLost {
            reason: "no signal".into(),
        });
        assert_eq!(s.m.state(), NoInput, "the LEDs and status say so");
        assert_eq!(s.teardowns, 0, "the viewers stay");
        assert!(s.m.view().live_since.is_some(), "still on air");
        s.advance(Duration::from_secs(60));
        assert_eq!(s.connects.len(), 1, "nothing to reconnect");
        s.ev(Event::InputReady);
        assert_eq!(s.m.state(), Live);
        assert_eq!(s.connects.len(), 1);
        assert_eq!(s.states, vec![Starting, Connecting, Live, NoInput, Live]);
        assert_eq!(s.m.view().reconnects, 0, "no reconnect happened");
        assert_eq!(
            s.m.view().live_total + (s.now - s.m.view().live_since.unwrap()),
            Duration::from_secs(60),
            "the slate's time on air counts as live time"
        );
    }

    #[test]
    fn with_the_slate_a_box_without_its_camera_goes_on_air_with_the_slate() {
        let mut s = Sim::bare(no_jitter(), true, OnLoss::Slate);
        s.ev(Event::MediaReady);
        assert_eq!(s.connects.len(), 0, "waits for the input's verdict");
        assert_eq!(s.m.state(), Starting);
        s.ev(Event::InputLost {
            reason: "/dev/video0: no such device".into(),
        });
        assert_eq!(s.connects.len(), 1, "the slate is worth sending");
        s.ev(Event::Connected);
        s.ev(Event::MediaFlowing);
        assert_eq!(
            s.m.state(),
            NoInput,
            "on air, but the input is what needs a person"
        );
        s.ev(Event::ConnectionLost {
            reason: "ice failed".into(),
        });
        assert_eq!(
            s.connects.len(),
            2,
            "a drop on the slate is retried like any drop"
        );
    }

    #[test]
    fn with_disconnect_a_box_without_its_camera_stays_off_air() {
        let mut s = Sim::bare(no_jitter(), true, OnLoss::Disconnect);
        s.ev(Event::MediaReady);
        s.ev(Event::InputLost {
            reason: "gone".into(),
        });
        s.advance(Duration::from_secs(30));
        assert!(s.connects.is_empty());
        assert_eq!(s.m.state(), NoInput);
        s.ev(Event::InputReady);
        assert_eq!(s.connects.len(), 1);
    }

    #[test]
    fn nothing_connects_before_the_encoder_produces_and_an_encoder_failure_tears_down() {
        let mut s = Sim::bare(no_jitter(), true, OnLoss::Slate);
        s.ev(Event::InputReady);
        assert!(s.connects.is_empty(), "the input alone is not enough");
        assert_eq!(s.m.state(), Starting);
        s.ev(Event::MediaReady);
        assert_eq!(s.connects.len(), 1);
        s.ev(Event::Connected);
        s.ev(Event::MediaFlowing);
        s.ev(Event::MediaLost {
            reason: "x264enc: error".into(),
        });
        assert_eq!(s.teardowns, 1);
        assert_eq!(s.m.state(), Starting, "the encoder is being restarted");
        assert!(s.m.view().last_error.unwrap().contains("x264enc"));
        s.ev(Event::MediaReady);
        assert_eq!(s.connects.len(), 2);
        assert_eq!(s.m.state(), Reconnecting);
    }

    #[test]
    fn input_notes_change_nothing() {
        let mut s = Sim::live_on_slate_box();
        let before = (s.states.clone(), s.connects.len(), s.teardowns);
        s.ev(Event::InputNote {
            message: "/dev/video0 went away".into(),
        });
        assert_eq!((s.states.clone(), s.connects.len(), s.teardowns), before);
    }

    #[test]
    fn stale_timer_is_ignored() {
        let mut s = Sim::new(no_jitter(), true);
        s.ev(Event::InputReady);
        s.fail(FailureClass::Transient);
        s.fail(FailureClass::Transient); // waiting 1 s, timer id k
        let (old, _) = s.timer.unwrap();
        s.ev(Event::RetryNow {
            reason: "onair retry".into(),
        });
        let n = s.connects.len();
        s.ev(Event::TimerFired { id: old });
        assert_eq!(s.connects.len(), n, "a forgotten timer does nothing");
    }

    #[test]
    fn retry_now_cuts_a_wait_short() {
        let mut s = Sim::new(no_jitter(), true);
        s.ev(Event::InputReady);
        for _ in 0..6 {
            s.fail(FailureClass::Transient);
            s.advance(Duration::from_millis(1));
        }
        let n = s.connects.len();
        s.ev(Event::RetryNow {
            reason: "onair retry".into(),
        });
        assert_eq!(s.connects.len(), n + 1);
    }

    fn request_retry(s: &mut Sim, force: bool) -> RetryAnswer {
        let (reply, mut rx) = Reply::new();
        s.ev(Event::RetryRequested { force, reply });
        rx.try_recv().expect("every request is answered")
    }

    /// 300 `onair retry` while the server's `Retry-After: 600` runs start nothing; forced,
    /// one attempt per 5 s at most.
    #[test]
    fn retry_requests_honour_retry_after_and_are_paced() {
        let mut s = Sim::new(no_jitter(), true);
        s.ev(Event::InputReady);
        s.fail(FailureClass::RetryAfter(Duration::from_secs(600)));
        assert_eq!(s.connects.len(), 1);
        for _ in 0..300 {
            let answer = request_retry(&mut s, false);
            assert!(
                matches!(answer, RetryAnswer::ServerAskedToWait { remaining }
                    if remaining > Duration::from_secs(590)),
                "{answer:?}"
            );
            s.advance(Duration::from_millis(5));
        }
        assert_eq!(s.connects.len(), 1, "the server's wait is honoured");
        assert_eq!(s.m.state(), Connecting, "a refusal changes no state");

        // Forced (root): at once, then not again within 5 s; each forced attempt gets 429.
        let mut started = 0;
        for _ in 0..300 {
            if request_retry(&mut s, true) == RetryAnswer::Started {
                started += 1;
                s.fail(FailureClass::RetryAfter(Duration::from_secs(600)));
            }
            s.advance(Duration::from_millis(50));
        }
        // 300 requests over 15 s: at 0, 5 and 10 s; the others told when to come back.
        assert_eq!(started, 3);
        assert_eq!(s.connects.len(), 4);
        let too_soon = s
            .answers
            .iter()
            .filter(|a| matches!(a, RetryAnswer::TooSoon { again_in } if *again_in <= RETRY_REQUEST_INTERVAL))
            .count();
        assert_eq!(too_soon, 297);
    }

    /// Without a `Retry-After` a request cuts the backoff wait short, once per 5 s; while live
    /// or without the input it has nothing to do, and a live connection ends the server's hold.
    #[test]
    fn retry_requests_cut_waits_short_once_per_interval() {
        let mut s = Sim::new(no_jitter(), true);
        s.ev(Event::InputReady);
        for _ in 0..6 {
            s.fail(FailureClass::Transient);
            s.advance(Duration::from_millis(1));
        }
        let n = s.connects.len();
        assert_eq!(request_retry(&mut s, false), RetryAnswer::Started);
        assert_eq!(s.connects.len(), n + 1);
        s.fail(FailureClass::Transient);
        s.fail(FailureClass::Transient);
        assert!(matches!(
            request_retry(&mut s, false),
            RetryAnswer::TooSoon { .. }
        ));
        s.advance(RETRY_REQUEST_INTERVAL);
        // The backoff timer started an attempt meanwhile; it fails, and the box waits again.
        s.fail(FailureClass::Transient);
        let n = s.connects.len();
        assert_eq!(request_retry(&mut s, false), RetryAnswer::Started);
        assert_eq!(s.connects.len(), n + 1);
        s.ev(Event::Connected);
        s.ev(Event::MediaFlowing);
        assert_eq!(request_retry(&mut s, false), RetryAnswer::NothingToDo);

        let mut s = Sim::new(no_jitter(), true);
        s.ev(Event::InputReady);
        s.fail(FailureClass::RetryAfter(Duration::from_secs(30)));
        s.advance(Duration::from_secs(31));
        s.ev(Event::Connected);
        s.ev(Event::MediaFlowing);
        s.ev(Event::ConnectionLost {
            reason: "gone".into(),
        });
        s.fail(FailureClass::Transient);
        assert_eq!(
            request_retry(&mut s, false),
            RetryAnswer::Started,
            "an old Retry-After holds nothing back"
        );

        let mut s = Sim::new(no_jitter(), false);
        s.ev(Event::InputReady);
        assert_eq!(request_retry(&mut s, false), RetryAnswer::NothingToDo);
        assert!(s.connects.is_empty());
    }

    #[test]
    fn a_server_back_cuts_a_long_wait_short_without_resetting_the_schedule() {
        let mut s = Sim::new(ReconnectConfig::default(), true);
        s.ev(Event::InputReady);
        // Attempts at 0, 0 (immediate retry), then waits of 1, 2, 4, 8 s: now in the 8 s wait.
        for _ in 0..5 {
            s.fail_until_next_attempt();
        }
        s.fail(FailureClass::Transient);
        let wait = s.m.view().next_retry_at.expect("waiting") - s.now;
        assert!(wait > Duration::from_secs(7), "{wait:?}");
        let n = s.connects.len();
        s.advance(Duration::from_secs(3));
        s.ev(Event::ServerBack);
        let soon = s.m.view().next_retry_at.expect("still waiting, briefly") - s.now;
        assert!(soon <= SERVER_BACK_JITTER, "{soon:?}");
        s.advance(SERVER_BACK_JITTER);
        assert_eq!(s.connects.len(), n + 1, "the attempt came at once");
        // It fails too: the schedule goes on where it was (16 s next, ±10 %), not from 0.
        s.fail(FailureClass::Transient);
        let next = s.m.view().next_retry_at.expect("waiting") - s.now;
        assert!(next >= Duration::from_millis(14_400), "{next:?}");
        // Outside a wait it means nothing.
        s.advance(next);
        let n = s.connects.len();
        s.ev(Event::ServerBack);
        assert_eq!(s.connects.len(), n);
    }

    #[test]
    fn a_server_back_does_not_cut_its_own_retry_after_short() {
        let mut s = Sim::new(ReconnectConfig::default(), true);
        s.ev(Event::InputReady);
        s.fail(FailureClass::RetryAfter(Duration::from_secs(60)));
        let wait = s.m.view().next_retry_at.expect("waiting") - s.now;
        assert!(wait >= Duration::from_secs(60), "{wait:?}");
        s.advance(Duration::from_secs(5));
        s.ev(Event::ServerBack);
        let still = s.m.view().next_retry_at.expect("still waiting") - s.now;
        assert!(still >= Duration::from_secs(55), "{still:?}");
    }

    #[test]
    fn stop_tears_down_and_exits_from_any_state() {
        let mut s = Sim::live_box();
        s.ev(Event::Stop(StopCause::Signal("SIGTERM")));
        assert!(s.exited);
        assert_eq!(s.teardowns, 1);
        assert!(s.timer.is_none());
        let before = s.connects.len();
        s.ev(Event::NetworkChanged { online: true });
        s.ev(Event::InputReady);
        assert_eq!(s.connects.len(), before, "nothing happens after stop");
    }

    #[test]
    fn live_time_is_accounted() {
        let mut s = Sim::live_box();
        s.advance(Duration::from_secs(30));
        s.ev(Event::NetworkChanged { online: false });
        s.advance(Duration::from_secs(5));
        let v = s.m.view();
        assert_eq!(v.live_total, Duration::from_secs(30));
        assert_eq!(v.live_since, None);
    }

    fn path_changed() -> Event {
        Event::PathChanged {
            reason: "eth0 lost carrier".into(),
            reconnect: true,
        }
    }

    #[test]
    fn path_change_while_live_reconnects_at_once_without_advancing_the_schedule() {
        let mut s = Sim::live_box();
        s.advance(Duration::from_secs(3)); // not yet stable: a drop would wait
        s.ev(path_changed());
        assert_eq!(s.teardowns, 1);
        assert_eq!(s.connects.len(), 2, "the new path is tried at once");
        assert_eq!(s.m.state(), Reconnecting);
        assert_eq!(s.m.view().last_error, None, "a path change is no error");
        s.ev(Event::Connected);
        s.ev(Event::MediaFlowing);
        assert_eq!(s.m.view().reconnects, 1);
        assert_eq!(s.keyframes, 2, "the new connection starts with a key frame");
        // Two path changes in a row (back to the preferred uplink): both immediate.
        s.ev(path_changed());
        assert_eq!(s.connects.len(), 3);
        s.ev(Event::Connected);
        s.ev(Event::MediaFlowing);
        // The schedule was not advanced: the first failure after it retries at once, the
        // second waits the first step.
        s.advance(Duration::from_secs(11));
        s.ev(Event::ConnectionLost { reason: "x".into() });
        assert_eq!(s.connects.len(), 4, "immediate retry after a stable period");
        s.fail(FailureClass::Transient);
        assert_eq!(
            s.m.view().next_retry_at,
            Some(s.now + Duration::from_secs(1)),
            "then 1 s"
        );
    }

    #[test]
    fn path_change_during_an_attempt_restarts_it_and_does_not_count_it() {
        let mut s = Sim::new(
            ReconnectConfig {
                max_attempts: 2,
                ..no_jitter()
            },
            true,
        );
        s.ev(Event::InputReady);
        s.fail(FailureClass::Transient); // attempt 1 failed; 2 in flight
        assert_eq!(s.connects.len(), 2);
        s.ev(path_changed());
        assert_eq!(s.connects.len(), 3, "the attempt is made again at once");
        assert_eq!(s.m.state(), Connecting, "not counted against max_attempts");
        assert_eq!(s.teardowns, 2);
    }

    #[test]
    fn path_change_cuts_a_wait_short_and_is_ignored_when_only_reported() {
        let mut s = Sim::new(no_jitter(), true);
        s.ev(Event::InputReady);
        for _ in 0..4 {
            s.fail(FailureClass::Transient);
            s.advance(Duration::from_millis(1));
        }
        assert!(s.m.view().next_retry_at.is_some());
        let n = s.connects.len();
        s.ev(path_changed());
        assert_eq!(s.connects.len(), n + 1, "a new path is worth a try now");

        let mut s = Sim::live_box();
        s.ev(Event::PathChanged {
            reason: "wlan0 is preferred".into(),
            reconnect: false,
        });
        assert_eq!(s.teardowns, 0, "paths: ignore leaves the connection alone");
        assert_eq!(s.m.state(), Live);
        s.ev(Event::NetworkChanged { online: false });
        s.ev(path_changed());
        assert_eq!(s.connects.len(), 1, "offline: nothing to reconnect");
    }

    #[test]
    fn policy_change_applies_to_the_next_wait() {
        let mut s = Sim::new(no_jitter(), true);
        s.ev(Event::InputReady);
        s.ev(Event::PolicyChanged(ReconnectConfig {
            initial_delay: Duration::from_millis(200),
            ..no_jitter()
        }));
        s.fail(FailureClass::Transient);
        s.fail(FailureClass::Transient);
        s.advance(Duration::from_secs(1));
        assert_eq!(s.connect_times_ms(), vec![0, 0, 200]);
    }
}
