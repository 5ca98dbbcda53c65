//! Runs capture and encoding and keeps them running.
//!
//! Two GStreamer pipelines joined by the frame pump (`feeder.rs`):
//!
//! ```text
//!  capture (capture.rs: source chain ▸ appsink)  ──mailbox──▶  pump  ──▶  encode (encode.rs:
//!  restarted on input trouble                        slate ──▶         appsrc ▸ encoder ▸ h264parse ▸ appsink ──▶ door)
//!                                                                       runs for the daemon's life
//! ```
//!
//! Input trouble (a camera unplugged, an HDMI source without signal or with new timings, a
//! device that stalls) only ever stops and restarts the capture; the pump shows the slate
//! meanwhile, and the encoder, the door and the connection behind it go on. What to do is
//! decided by two pure machines — [`InputHealth`] for the capture, [`Health`] for the encoder —
//! and this runner carries their actions out, reads the buses, counters and device events, and
//! reports to the supervisor.

use super::bitrate::BitrateHandle;
use super::bridge::{EdidState, Prepared};
use super::bus;
use super::capture::{self, CaptureRun, TestSignal};
use super::clock::MediaClock;
use super::door::Door;
use super::encode::{self, EncodeRun, Outlet};
use super::encoder::{self, Candidate, ElementForcer};
use super::feeder::{Feeder, Show};
use super::health::{self, Health, HealthSettings};
use super::input::{self, InputEvent, InputHealth, InputSettings};
use super::keyframes::KeyframeRequester;
use super::slate;
use super::stats::MediaStats;
use super::watch;
use crate::config::{EncoderConfig, SourceConfig, SourceKind, TestPattern};
use crate::lock::lock;
use gstreamer as gst;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the running pipelines' counters are read.
const HEALTH_TICK: Duration = Duration::from_millis(200);
/// Source changes closer together than this are one burst (vivid sends one per control; an
/// HDMI bridge one for the signal and one for the timings).
const SOURCE_CHANGE_SETTLE: Duration = Duration::from_millis(150);

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("GStreamer failed to initialise: {0}")]
    Init(String),
    #[error("no H.264 encoder available for encoder.kind={kind}: {hint}")]
    NoEncoder { kind: String, hint: String },
    #[error("no H.264 encoder works: {0}")]
    AllEncodersFailed(String),
    #[error("cannot start the frame pump: {0}")]
    Pump(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// Encoded units flow (first start, or the encoder back after a failure).
    Ready,
    /// The encoder stopped producing; it is being restarted.
    Stalled(String),
    /// The input's pictures are shown (first time, or back after a loss).
    InputLive,
    /// The input is lost and the slate is shown instead; retries follow.
    InputLost(String),
    /// Something happened to the input that belongs in the flight recorder (device gone or
    /// back, a source change, the input's format).
    InputNote(String),
    /// No encoder works at all: the daemon cannot stream and should say so and stop.
    Fatal(String),
}

/// The running media side. Dropping it does not stop the pipelines; cancel the shutdown
/// token and await [`Media::stopped`].
pub struct Media {
    pub stats: Arc<MediaStats>,
    /// The timeline every media pipeline stamps on (audio joins it).
    pub clock: MediaClock,
    task: JoinHandle<Result<(), MediaError>>,
}

impl Media {
    /// Checks that an encoder exists, makes the slate and starts the runner. Pictures may take
    /// a moment: `MediaEvent::Ready` says when units flow, `InputLive`/`InputLost` what of.
    pub fn start(
        source: SourceConfig,
        encoder: EncoderConfig,
        door: Door,
        keyframes: KeyframeRequester,
        bitrate: BitrateHandle,
        events: mpsc::Sender<MediaEvent>,
        shutdown: CancellationToken,
    ) -> Result<Media, MediaError> {
        gst::init().map_err(|e| MediaError::Init(e.to_string()))?;
        let candidates =
            encoder::candidates(encoder.kind, |f| gst::ElementFactory::find(f).is_some());
        if candidates.is_empty() {
            return Err(MediaError::NoEncoder {
                kind: format!("{:?}", encoder.kind).to_lowercase(),
                hint: "install the GStreamer plugin that provides it (x264enc is in gstreamer1.0-plugins-ugly)".into(),
            });
        }
        let stats = Arc::new(MediaStats::default());
        let slate = slate::make(&source);
        log::info!(
            "media: slate: {} (on input loss: {})",
            slate.what,
            source.on_loss.as_str()
        );
        {
            let mut input = lock(&stats.input);
            input.slate = slate.description();
            input.on_loss = source.on_loss.as_str();
        }
        let clock = MediaClock::start();
        let flash = (source.kind == SourceKind::Test && source.pattern == TestPattern::Sync)
            .then(|| slate::white(&source));
        let feeder = Feeder::start(
            source.fps,
            slate.buffer,
            flash,
            keyframes.clone(),
            stats.feeder.clone(),
        )
        .map_err(|e| MediaError::Pump(e.to_string()))?;
        let (first_frame_tx, first_frame_rx) = mpsc::unbounded_channel();
        let (input_tx, input_rx) = mpsc::channel(16);
        let runner = Runner {
            outlet: Outlet {
                door,
                keyframes,
                stats: stats.clone(),
                seq: Arc::new(AtomicU64::new(0)),
                clock: clock.clone(),
            },
            input_settings: InputSettings {
                retry: source.retry,
                lost_after: source.lost_after,
                ..InputSettings::default()
            },
            source,
            encoder,
            bitrate,
            events,
            stats: stats.clone(),
            candidates,
            settings: HealthSettings::default(),
            feeder,
            encode: None,
            capture: None,
            restart_at: None,
            retry_at: None,
            test_signal: TestSignal::default(),
            first_frame_tx,
            first_frame_rx,
            input_tx,
            input_rx,
        };
        let task = tokio::spawn(runner.run(shutdown));
        Ok(Media { stats, clock, task })
    }

    /// Waits until the runner has stopped (after shutdown both pipelines are in NULL state).
    pub async fn stopped(self) -> Result<(), MediaError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(MediaError::AllEncodersFailed(format!(
                "media task ended abnormally: {e}"
            ))),
        }
    }
}

struct Runner {
    source: SourceConfig,
    encoder: EncoderConfig,
    outlet: Outlet,
    bitrate: BitrateHandle,
    events: mpsc::Sender<MediaEvent>,
    stats: Arc<MediaStats>,
    candidates: Vec<Candidate>,
    settings: HealthSettings,
    input_settings: InputSettings,
    feeder: Feeder,
    /// The encoding pipeline, while one runs.
    encode: Option<EncodeRun>,
    /// The capture of the current run, while one runs.
    capture: Option<CaptureRun>,
    restart_at: Option<Instant>,
    retry_at: Option<Instant>,
    test_signal: TestSignal,
    first_frame_tx: mpsc::UnboundedSender<()>,
    first_frame_rx: mpsc::UnboundedReceiver<()>,
    input_tx: mpsc::Sender<InputEvent>,
    input_rx: mpsc::Receiver<InputEvent>,
}

/// What woke the runner.
enum Wake {
    Shutdown,
    EncoderBus(Option<health::Cause>),
    CaptureBus(Option<health::Cause>),
    Tick,
    RestartDue,
    RetryDue,
    FirstFrame,
    Input(InputEvent),
    TestSignal,
}

impl Runner {
    async fn run(mut self, shutdown: CancellationToken) -> Result<(), MediaError> {
        let (mut health, actions) = Health::new(self.settings, self.candidates.len());
        let result = self.run_loop(&mut health, actions, &shutdown).await;
        self.stop_capture().await;
        self.stop_encoder().await;
        result
    }

    async fn run_loop(
        &mut self,
        health: &mut Health,
        first: Vec<health::Action>,
        shutdown: &CancellationToken,
    ) -> Result<(), MediaError> {
        // The encoder first, so the pump has somewhere to put the slate; then the input.
        self.encoder_actions(health, first).await?;
        let (mut input, actions) = InputHealth::new(self.input_settings);
        self.input_actions(&mut input, actions).await;
        let _watch = self.watch_device(shutdown);
        let mut test_signal = self.test_signal_stream();
        let mut tick = tokio::time::interval(HEALTH_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            match self.wait(shutdown, &mut tick, test_signal.as_mut()).await {
                Wake::Shutdown => return Ok(()),
                wake => self.handle(wake, health, &mut input).await?,
            }
        }
    }

    /// Until something needs the runner.
    async fn wait(
        &mut self,
        shutdown: &CancellationToken,
        tick: &mut tokio::time::Interval,
        test_signal: Option<&mut tokio::signal::unix::Signal>,
    ) -> Wake {
        tokio::select! {
            _ = shutdown.cancelled() => Wake::Shutdown,
            msg = bus::next_message(self.encode.as_mut().map(|r| &mut r.bus)) => {
                Wake::EncoderBus(match msg {
                    None => Some(health::Cause::EncoderFailed("pipeline bus closed".into())),
                    Some(m) => encode::bus_cause(&m),
                })
            }
            msg = bus::next_message(self.capture.as_mut().map(|r| &mut r.bus)) => {
                Wake::CaptureBus(match msg {
                    None => Some(health::Cause::InputLost("capture bus closed".into())),
                    Some(m) => capture::bus_cause(&m),
                })
            }
            _ = tick.tick() => Wake::Tick,
            _ = sleep_until(self.restart_at) => Wake::RestartDue,
            _ = sleep_until(self.retry_at) => Wake::RetryDue,
            Some(()) = self.first_frame_rx.recv() => Wake::FirstFrame,
            Some(e) = self.input_rx.recv() => Wake::Input(e),
            Some(()) = next_signal(test_signal) => Wake::TestSignal,
        }
    }

    /// What a wake means for the encoder's machine or the input's, carried out.
    async fn handle(
        &mut self,
        wake: Wake,
        health: &mut Health,
        input: &mut InputHealth,
    ) -> Result<(), MediaError> {
        let now = Instant::now();
        match wake {
            Wake::Shutdown | Wake::EncoderBus(None) | Wake::CaptureBus(None) => {}
            Wake::EncoderBus(Some(cause)) => {
                let actions = health.handle(now, health::Observation::Ended(cause));
                self.encoder_actions(health, actions).await?;
            }
            Wake::CaptureBus(Some(cause)) => {
                let actions = input.handle(now, input::Observation::Ended(cause));
                self.input_actions(input, actions).await;
            }
            Wake::Tick => {
                self.encoder_tick(health, now).await?;
                self.capture_tick(input, now).await;
            }
            Wake::FirstFrame => self.capture_tick(input, now).await,
            Wake::RestartDue => {
                self.restart_at = None;
                let actions = health.handle(now, health::Observation::RestartDue);
                self.encoder_actions(health, actions).await?;
            }
            Wake::RetryDue => {
                self.retry_at = None;
                let actions = input.handle(now, input::Observation::RetryDue);
                self.input_actions(input, actions).await;
            }
            Wake::Input(event) => self.device_events(input, event).await,
            Wake::TestSignal => self.toggle_test_signal(input, now).await,
        }
        Ok(())
    }

    async fn encoder_tick(&mut self, health: &mut Health, now: Instant) -> Result<(), MediaError> {
        let Some(run) = &self.encode else {
            return Ok(());
        };
        let flow = run.counters.flow();
        let actions = health.handle(now, health::Observation::Tick(flow));
        self.encoder_actions(health, actions).await
    }

    /// A device event, noted and handed to the input's machine. A bridge reports a change as a
    /// burst (timings, then signal): it is acted on once.
    async fn device_events(&mut self, input: &mut InputHealth, event: InputEvent) {
        let (event, next) = self.coalesce(event).await;
        for event in std::iter::once(event).chain(next) {
            self.note(match event {
                InputEvent::SourceChanged => "the device reports a source change".into(),
                InputEvent::DeviceAppeared => format!("{} appeared", self.device_name()),
                InputEvent::DeviceGone => format!("{} went away", self.device_name()),
            })
            .await;
            let actions = input.handle(Instant::now(), input::Observation::Event(event));
            self.input_actions(input, actions).await;
        }
    }

    /// SIGUSR1: the test source's signal cut or back.
    async fn toggle_test_signal(&mut self, input: &mut InputHealth, now: Instant) {
        let lost = self.test_signal.toggle();
        self.note(format!(
            "SIGUSR1: the test source's signal is {}",
            if lost { "cut" } else { "back" }
        ))
        .await;
        if !lost {
            // As an HDMI bridge reports its signal back: no need to wait for the next retry.
            let event = input::Observation::Event(InputEvent::SourceChanged);
            let actions = input.handle(now, event);
            self.input_actions(input, actions).await;
        }
    }

    /// Source changes that follow one another within `SOURCE_CHANGE_SETTLE` are one; returns
    /// the event and the different one that ended the burst, if any.
    async fn coalesce(&mut self, event: InputEvent) -> (InputEvent, Option<InputEvent>) {
        if event != InputEvent::SourceChanged {
            return (event, None);
        }
        let until = Instant::now() + SOURCE_CHANGE_SETTLE;
        loop {
            match tokio::time::timeout_at(until, self.input_rx.recv()).await {
                Ok(Some(InputEvent::SourceChanged)) => continue,
                Ok(Some(other)) => return (event, Some(other)),
                Ok(None) | Err(_) => return (event, None),
            }
        }
    }

    async fn capture_tick(&mut self, input: &mut InputHealth, now: Instant) {
        let Some(run) = &self.capture else { return };
        let flow = input::CaptureFlow {
            last_frame: run.counters.last_frame(),
        };
        let format = run.counters.format();
        let actions = input.handle(now, input::Observation::Tick(flow));
        self.input_actions(input, actions).await;
        // A capture restarted on a live input (new timings) shows its new format.
        let changed = {
            let mut s = lock(&self.stats.input);
            let changed = s.signal == "live" && format.is_some() && s.format != format;
            if changed {
                s.format = format.clone();
            }
            changed
        };
        if changed && let Some(format) = format {
            self.note(format!("input now {format}")).await;
        }
    }

    /// Carries out the encoder machine's actions; a `Start`'s outcome is fed straight back.
    async fn encoder_actions(
        &mut self,
        health: &mut Health,
        mut actions: Vec<health::Action>,
    ) -> Result<(), MediaError> {
        while !actions.is_empty() {
            let mut next = Vec::new();
            for action in actions {
                if let Some(observation) = self.encoder_action(action).await? {
                    next.extend(health.handle(Instant::now(), observation));
                }
            }
            actions = next;
        }
        Ok(())
    }

    async fn encoder_action(
        &mut self,
        action: health::Action,
    ) -> Result<Option<health::Observation>, MediaError> {
        use health::Action;
        match action {
            Action::Start { candidate } => {
                self.stop_encoder().await;
                let chosen = &self.candidates[candidate];
                return Ok(Some(
                    match encode::start(chosen, &self.source, &self.encoder, &self.outlet) {
                        Ok(run) => {
                            self.feeder
                                .connect(Some((run.appsrc.clone(), run.pipeline.clone())));
                            self.encode = Some(run);
                            health::Observation::Started
                        }
                        Err(cause) => health::Observation::StartFailed(cause),
                    },
                ));
            }
            Action::Stop => self.stop_encoder().await,
            Action::RestartAt(at) => self.restart_at = Some(at),
            Action::Ready { candidate, first } => {
                let chosen = &self.candidates[candidate];
                if first {
                    *lock(&self.stats.encoder) = Some(chosen.element.factory().to_string());
                    log::info!(
                        "media: encoder {} ({})",
                        chosen.element.factory(),
                        chosen.why
                    );
                } else {
                    log::info!("media: encoder back");
                }
                if let Some(run) = &self.encode {
                    let control = Arc::new(ElementForcer::new(
                        chosen.element,
                        run.encoder.clone(),
                        &self.encoder,
                        self.source.fps,
                    ));
                    self.outlet.keyframes.set_forcer(Some(control.clone()));
                    self.bitrate.set_encoder(Some(control));
                }
                self.send(MediaEvent::Ready).await;
            }
            Action::Lost(cause) => {
                log::warn!(
                    "media: the encoder failed: {cause}; restarting it every {} s",
                    self.settings.restart_delay.as_secs()
                );
                self.send(MediaEvent::Stalled(cause.to_string())).await;
            }
            Action::Skip { candidate, cause } => log::warn!(
                "media: encoder {} failed before its first frame: {cause}",
                self.candidates[candidate].element.factory()
            ),
            Action::Fatal(failures) => {
                self.stop_encoder().await;
                let reasons: Vec<String> = failures
                    .iter()
                    .map(|(c, cause)| format!("{}: {cause}", self.candidates[*c].element.factory()))
                    .collect();
                let err = MediaError::AllEncodersFailed(reasons.join("; "));
                self.send(MediaEvent::Fatal(err.to_string())).await;
                return Err(err);
            }
        }
        Ok(None)
    }

    /// Carries out the input machine's actions; a `StartCapture`'s outcome is fed back.
    async fn input_actions(&mut self, input: &mut InputHealth, mut actions: Vec<input::Action>) {
        while !actions.is_empty() {
            let mut next = Vec::new();
            for action in actions {
                if let Some(observation) = self.input_action(action).await {
                    next.extend(input.handle(Instant::now(), observation));
                }
            }
            actions = next;
        }
    }

    async fn input_action(&mut self, action: input::Action) -> Option<input::Observation> {
        use input::Action;
        match action {
            Action::StartCapture => {
                self.stop_capture().await;
                let source = self.source.clone();
                let mailbox = self.feeder.mailbox();
                let test_signal = self.test_signal.clone();
                let first_frame = self.first_frame_tx.clone();
                // Device ioctls, media-ctl and opening the device can block: off the async
                // threads. The bridge is made ready first, so the capture only ever starts
                // after its EDID is loaded.
                let started = tokio::task::spawn_blocking(move || {
                    let prepared = capture::prepare(&source);
                    let pin = match prepared.as_ref().map(|p| p.outcome.clone()) {
                        Some(Err(cause)) => return (prepared, Err(cause)),
                        Some(Ok(pin)) => pin,
                        None => None,
                    };
                    let run = capture::start(&source, pin, mailbox, &test_signal, first_frame);
                    (prepared, run)
                })
                .await;
                return Some(match started {
                    Ok((prepared, run)) => {
                        if let Some(prepared) = prepared {
                            self.device_report(prepared).await;
                        }
                        match run {
                            Ok(run) => {
                                self.capture = Some(run);
                                input::Observation::Started
                            }
                            Err(cause) => {
                                log::debug!("media: capture did not start: {cause}");
                                input::Observation::StartFailed(cause)
                            }
                        }
                    }
                    Err(e) => input::Observation::StartFailed(health::Cause::InputLost(format!(
                        "capture start panicked: {e}"
                    ))),
                });
            }
            Action::StopCapture => self.stop_capture().await,
            Action::RetryAt(at) => self.retry_at = Some(at),
            Action::ShowInput => {
                self.feeder.show(Show::Input);
                let format = self.capture.as_ref().and_then(|r| r.counters.format());
                let was = {
                    let mut s = lock(&self.stats.input);
                    let was = s.signal;
                    s.signal = "live";
                    s.showing = "input";
                    s.since = Instant::now();
                    s.reason = None;
                    s.format = format.clone();
                    was
                };
                // The note is logged where it is recorded (the watchdog's driver).
                let format = format.unwrap_or_else(|| "unknown format".into());
                if was == "starting" {
                    self.note(format!("input live: {format}")).await;
                } else {
                    self.note(format!("input back: {format}; slate off")).await;
                }
                self.send(MediaEvent::InputLive).await;
            }
            Action::ShowSlate(cause) => {
                self.feeder.show(Show::Slate);
                {
                    let mut s = lock(&self.stats.input);
                    s.signal = "lost";
                    s.showing = "slate";
                    s.since = Instant::now();
                    s.losses += 1;
                    s.reason = Some(cause.to_string());
                    s.format = None;
                }
                log::warn!(
                    "media: input lost: {cause}; showing the slate, retrying every {:.1} s",
                    self.input_settings.retry.as_secs_f64()
                );
                self.send(MediaEvent::InputLost(cause.to_string())).await;
            }
        }
        None
    }

    /// What getting an HDMI bridge ready found: its EDID and timing go to `onair status`, what
    /// it did (an EDID loaded, timings set, a pipeline configured) to the log and the flight
    /// recorder, and an EDID that cannot be loaded is a warning, once per reason.
    async fn device_report(&mut self, prepared: Prepared) {
        let (edid, edid_error) = match prepared.edid {
            EdidState::NotABridge => (None, None),
            EdidState::Loaded(what) => (Some(what), None),
            EdidState::Failed(why) => (None, Some(why)),
        };
        let new_error = {
            let mut s = lock(&self.stats.input);
            let new_error = edid_error.is_some() && s.edid_error != edid_error;
            s.edid = edid;
            s.edid_error = edid_error.clone();
            s.timing = prepared.timing;
            new_error
        };
        if new_error && let Some(why) = edid_error {
            log::warn!("media: {}: {why}", self.device_name());
        }
        // The notes are logged where they are recorded (the watchdog's driver).
        for note in prepared.notes {
            self.note(format!("{}: {note}", self.device_name())).await;
        }
    }

    fn watch_device(&self, shutdown: &CancellationToken) -> Option<JoinHandle<()>> {
        if self.source.kind != SourceKind::V4l2 {
            return None;
        }
        let device = self.source.device.clone()?;
        Some(watch::spawn(
            device,
            self.input_tx.clone(),
            shutdown.child_token(),
        ))
    }

    /// SIGUSR1 cuts and restores the test source's signal (tests and demonstrations).
    fn test_signal_stream(&self) -> Option<tokio::signal::unix::Signal> {
        if self.source.kind != SourceKind::Test {
            return None;
        }
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) {
            Ok(s) => Some(s),
            Err(e) => {
                log::warn!("media: cannot listen for SIGUSR1 ({e})");
                None
            }
        }
    }

    fn device_name(&self) -> String {
        match (&self.source.kind, &self.source.device) {
            (SourceKind::V4l2, Some(d)) => d.display().to_string(),
            (kind, _) => format!("the {kind} source"),
        }
    }

    async fn note(&self, message: String) {
        self.send(MediaEvent::InputNote(message)).await;
    }

    async fn send(&self, event: MediaEvent) {
        let _ = self.events.send(event).await;
    }

    async fn stop_capture(&mut self) {
        if let Some(run) = self.capture.take() {
            capture::stop(run).await;
        }
        // A first-frame notice of the run just stopped must not count for the next one.
        while self.first_frame_rx.try_recv().is_ok() {}
    }

    async fn stop_encoder(&mut self) {
        if let Some(run) = self.encode.take() {
            self.feeder.connect(None);
            self.outlet.keyframes.set_forcer(None);
            self.bitrate.set_encoder(None);
            encode::stop(run).await;
        }
    }
}

async fn next_signal(s: Option<&mut tokio::signal::unix::Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
