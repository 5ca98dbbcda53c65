//! `onair run`: the composition root. It wires media, output, network monitor, LEDs and status
//! around the watchdog, and owns start-up and shutdown order.
//!
//! One run reads as start → run → stop: [`Parts::start`] starts everything in order and hands
//! back the watchdog; the watchdog runs until an `Event::Stop` says why the run ends (a signal,
//! a reload that needs a restart, media that cannot work); [`Parts::stop`] stops everything in
//! the reverse order, so the server hears a DELETE before the pipeline stops. Every task started
//! here is stopped here: one cancellation token goes down to all of them.

use crate::clock::Clock;
use crate::clock::watch::ClockChange;
use crate::config::{
    AudioKind, Config, ConfigError, OutputConfig, PathsMode, SourceKind, TestPattern,
};
use crate::leds;
use crate::media::audio::capture::TestSound;
use crate::media::audio::{Audio, AudioCodec, AudioError};
use crate::media::encoder::{self, CodecWait};
use crate::media::{BitrateHandle, Door, KeyframeRequester, Media, MediaError, MediaEvent};
use crate::net::{
    self, ClaimError, NetworkMonitor, NetworkStatus, RoutingClaim, ServerAddr, StatusChange,
    claim_routing,
};
use crate::output::adapt::Adaptation;
use crate::output::rtmp::RtmpOutput;
use crate::output::whip::WhipOutput;
use crate::output::{Output, OutputStats};
use crate::recorder::FlightRecorder;
use crate::recording::{AudioSpec, Recording, RecordingInputs};
use crate::status::{DataPartition, StatusContext, StatusError, StatusServer, StatusSources};
use crate::supervisor::{
    Driver, DriverParts, Event, Heartbeat, Machine, MachineView, StopCause, StreamState, notify,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("media: {0}")]
    Media(#[from] MediaError),
    /// Capture and encoding stopped working for good while running (no encoder works).
    #[error("{0}")]
    MediaFailed(String),
    #[error("output: {0}")]
    Output(String),
    #[error("audio: {0}")]
    Audio(#[from] AudioError),
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error("network: {0}")]
    Routing(#[from] ClaimError),
}

/// How long the stop may spend on DELETEing a session the watchdog could not close politely.
const RELEASE_BUDGET: Duration = Duration::from_millis(800);

/// Runs until SIGINT/SIGTERM. Restarts its parts in place when SIGHUP brings a config that
/// changes more than what applies in place (the reconnect policy, the field uplinks).
/// `network_files`: where the operating system's Wi-Fi and modem files live (`onair
/// network-files` wrote them at boot); a SIGHUP renders them again from the new config and
/// the radios read them. `None`: the daemon leaves them alone (tests, a development machine).
pub async fn run(
    config_path: PathBuf,
    mut config: Config,
    network_files: Option<PathBuf>,
) -> Result<(), DaemonError> {
    // One recorder for the daemon's life, so `--history` keeps what happened before a
    // SIGHUP restart.
    let recorder = FlightRecorder::new();
    // Before anything else: from here on a signal is an event, never its default action
    // (which would end the process without a DELETE or removing the socket).
    let signals = Signals::install();
    // Held across restarts in place, so that a restart never finds its own claim still held.
    // Claimed before the codec wait, so a second daemon is refused at once.
    let mut routing = None;
    claim_routing_if_steering(&config, &mut routing)?;
    if !wait_for_codec(&config, &signals).await {
        return Ok(());
    }
    loop {
        claim_routing_if_steering(&config, &mut routing)?;
        let (parts, watchdog) = Parts::start(
            &config_path,
            config,
            network_files.as_deref(),
            &recorder,
            &signals,
        )
        .await?;
        let cause = watchdog.run().await;
        if !matches!(cause, StopCause::Restart(_)) {
            notify::stopping();
        }
        parts.stop().await;
        match cause {
            StopCause::Signal(_) | StopCause::InputsClosed => return Ok(()),
            StopCause::Restart(new) => {
                log::info!("config changed beyond reconnect settings: restarting the stream");
                config = *new;
            }
            StopCause::MediaFatal(reason) => {
                log_flight_recorder(&recorder, &reason);
                return Err(DaemonError::MediaFailed(reason));
            }
        }
    }
}

/// A daemon that steers claims the network namespace's policy routing first, before it
/// touches a camera or a server: a second one stops here, naming the first, instead of
/// fighting it over the routes. Released when the config stops steering.
fn claim_routing_if_steering(
    config: &Config,
    claim: &mut Option<RoutingClaim>,
) -> Result<(), DaemonError> {
    let steers = config.network.netlink && config.network.paths == PathsMode::Steer;
    match (steers, claim.is_some()) {
        (true, false) => *claim = Some(claim_routing()?.answer_askers()),
        (false, true) => *claim = None,
        _ => {}
    }
    Ok(())
}

/// Before the first start: a board whose hardware codec may appear after the daemon (the Pi 4)
/// gets a bounded wait for it, so the encoder choice sees it (`media::encoder::CODEC_WAIT`
/// says why the choice is made once, at start). A SIGINT or SIGTERM meanwhile stops the
/// daemon at once: returns false.
async fn wait_for_codec(config: &Config, signals: &Signals) -> bool {
    let wait = encoder::wait_for_codec(config.encoder.kind, Path::new("/"), encoder::CODEC_WAIT);
    let outcome = match &signals.0 {
        None => wait.await,
        Some(streams) => {
            let mut streams = streams.lock().await;
            let SignalStreams { int, term, .. } = &mut *streams;
            tokio::select! {
                outcome = wait => outcome,
                _ = int.recv() => { log::info!("SIGINT: stopping"); return false; }
                _ = term.recv() => { log::info!("SIGTERM: stopping"); return false; }
            }
        }
    };
    match outcome {
        CodecWait::NotExpected | CodecWait::Present(_) => {}
        CodecWait::Appeared(node, after) => log::info!(
            "encoder: waited {:.1} s at start for the hardware codec ({}) before choosing the \
             encoder (chosen once, at start)",
            after.as_secs_f64(),
            node.display()
        ),
        CodecWait::Missing(limit) => log::warn!(
            "encoder: this board's hardware codec did not appear within {} s of start; \
             choosing from the encoders there are (chosen once, at start: restart the daemon \
             once the codec is there)",
            limit.as_secs()
        ),
    }
    true
}

/// The watchdog of one run and the channel every event reaches it by.
struct Watchdog {
    driver: Driver,
    events: mpsc::Receiver<Event>,
}

/// What the watchdog publishes after every event.
struct Views {
    /// Its whole view, for `onair status`.
    machine: watch::Receiver<MachineView>,
    /// Just the public state, for the LEDs.
    state: watch::Receiver<StreamState>,
}

impl Watchdog {
    fn new(
        config: &Config,
        network: &watch::Receiver<NetworkStatus>,
        output: Arc<dyn Output>,
        shared: &Shared,
        recorder: &FlightRecorder,
        events: mpsc::Receiver<Event>,
    ) -> (Watchdog, Views) {
        let online = network.borrow().online;
        let machine = Machine::new(&config.reconnect, online, rand::random(), Instant::now())
            .on_input_loss(config.source.on_loss);
        let (view_tx, view_rx) = watch::channel(machine.view());
        let (state_tx, state_rx) = watch::channel(StreamState::Starting);
        let parts = DriverParts {
            output,
            door: shared.door.clone(),
            keyframes: shared.keyframes.clone(),
            stats: shared.output_stats.clone(),
            adaptation: shared.adaptation.clone(),
            dead_after: watch::Sender::new(config.reconnect.dead_after),
            // Bound to the path's source address, a connection leaves by the uplink the
            // path names; `ignore` keeps the old way (every interface).
            path: (config.network.paths != PathsMode::Ignore).then(|| network.clone()),
            recorder: recorder.clone(),
            view: view_tx,
            state: state_tx,
            heartbeat: Heartbeat::from_env(),
        };
        let watchdog = Watchdog {
            driver: Driver::new(machine, parts),
            events,
        };
        let views = Views {
            machine: view_rx,
            state: state_rx,
        };
        (watchdog, views)
    }

    async fn run(self) -> StopCause {
        self.driver.run(self.events).await
    }
}

/// The handles the media pipeline and every connection share.
struct Shared {
    door: Door,
    keyframes: KeyframeRequester,
    bitrate: BitrateHandle,
    adaptation: Arc<Adaptation>,
    output_stats: Arc<OutputStats>,
}

impl Shared {
    fn new(config: &Config, recorder: &FlightRecorder) -> Shared {
        let bitrate = BitrateHandle::new(config.encoder.bitrate_kbps);
        Shared {
            door: Door::new(),
            keyframes: KeyframeRequester::new(),
            adaptation: Arc::new(
                Adaptation::new(&config.encoder, bitrate.clone(), recorder.clone())
                    .sharing(match config.output {
                        OutputConfig::Whip { .. } => crate::output::whip::ENCODER_SHARE,
                        OutputConfig::Rtmp { .. } => crate::output::rtmp::ENCODER_SHARE,
                    })
                    .reserving(match config.audio.kind {
                        AudioKind::None => 0,
                        AudioKind::Test | AudioKind::Alsa => config.audio.bitrate_kbps,
                    }),
            ),
            bitrate,
            output_stats: Arc::new(OutputStats::default()),
        }
    }
}

/// Everything one run started besides the watchdog, in start order.
struct Parts {
    shutdown: CancellationToken,
    output: Arc<dyn Output>,
    media: Media,
    audio: Option<Audio>,
    monitor: Option<NetworkMonitor>,
    recording: Option<Recording>,
    leds: JoinHandle<()>,
    status: Option<JoinHandle<()>>,
    signals: JoinHandle<()>,
}

impl Parts {
    /// Starts everything in order: what can refuse to start first, then the data path, then
    /// what shows the state, then the signals that can stop it all.
    async fn start(
        config_path: &Path,
        config: Config,
        network_files: Option<&Path>,
        recorder: &FlightRecorder,
        signals: &Signals,
    ) -> Result<(Parts, Watchdog), DaemonError> {
        // The status socket first: a second daemon started by mistake stops here, before it
        // touches the camera or the server session of the one already running.
        let status_server = bind_status(&config).await?;
        let shutdown = CancellationToken::new();
        let clock = Clock::system(&config.state_dir);
        let output = build_output(&config, &clock)?;
        log_what_runs(&config);
        let (events, events_rx) = mpsc::channel::<Event>(64);
        let shared = Shared::new(&config, recorder);
        let media = start_media(&config, &shared, events.clone(), &shutdown)?;
        let audio = start_audio(&config, &shared, &media, &shutdown)?;
        let (network, monitor) = start_network(&config, &events, &shutdown).await;
        watch_clock(&clock, &events, &shutdown);
        let (watchdog, views) = Watchdog::new(
            &config,
            &network,
            output.clone(),
            &shared,
            recorder,
            events_rx,
        );
        // What onair-data found at boot: a data partition that could not be used is said in
        // `onair status` and on the LEDs for as long as the box runs so.
        let data_partition = DataPartition::read(&config.state_dir);
        let fault = data_partition
            .as_ref()
            .is_some_and(DataPartition::unusable)
            .then_some("data partition unusable: /data is a RAM disk");
        let recording = start_recording(
            &config,
            &shared,
            &media,
            on_air(views.machine.clone(), &shutdown),
            recorder,
            &shutdown,
        );
        let leds = tokio::spawn(leds::run(
            config.leds.clone(),
            views.state,
            fault,
            shutdown.child_token(),
        ));
        let status = status_server.map(|server| {
            let context = StatusContext {
                sources: status_sources(
                    &config,
                    &shared,
                    Lanes {
                        media: &media,
                        audio: audio.as_ref(),
                        recording: recording.as_ref(),
                    },
                    network,
                    views.machine,
                    BoxFacts {
                        data_partition,
                        clock: &clock,
                    },
                ),
                recorder: recorder.clone(),
                events: events.clone(),
            };
            tokio::spawn(server.serve(context, shutdown.child_token()))
        });
        // The last sender moves into the signal task: once every producer is gone the
        // watchdog hears `InputsClosed`.
        let field = network_files.map(|dir| FieldFiles {
            dir: dir.to_path_buf(),
            reconfigured: monitor.as_ref().and_then(NetworkMonitor::reconfigured),
        });
        let signals = handle_signals(
            config_path.to_path_buf(),
            config,
            field,
            events,
            signals.clone(),
            &shutdown,
        );
        let parts = Parts {
            shutdown,
            output,
            media,
            audio,
            monitor,
            recording,
            leds,
            status,
            signals,
        };
        Ok((parts, watchdog))
    }

    /// Stops what `start` started, in reverse order. The watchdog has already closed the
    /// connection (DELETE included) on its way out.
    async fn stop(self) {
        // Catches a session that could not be deleted then, within a small budget.
        let _ = tokio::time::timeout(RELEASE_BUDGET, self.output.release()).await;
        self.shutdown.cancel();
        self.signals.abort();
        // The socket file is gone before a restart binds it again, or the process exits.
        if let Some(status) = self.status {
            let _ = status.await;
        }
        // The LEDs go dark (and sysfs triggers are restored) before the process exits.
        let _ = self.leds.await;
        if let Some(monitor) = self.monitor {
            monitor.join().await;
        }
        if let Err(e) = self.media.stopped().await {
            log::debug!("media stopped with: {e}");
        }
        if let Some(audio) = self.audio {
            audio.stopped().await;
        }
        // Its files were closed (or given up on a hung disk) while the rest stopped.
        if let Some(recording) = self.recording {
            recording.stopped().await;
        }
    }
}

/// Anything wrong with the status socket only costs `onair status` (streaming matters more),
/// except another daemon answering on it.
async fn bind_status(config: &Config) -> Result<Option<StatusServer>, DaemonError> {
    match StatusServer::bind(&config.status.socket).await {
        Ok(server) => Ok(Some(server)),
        Err(e) if e.is_already_running() => Err(e.into()),
        Err(e) => {
            log::warn!("{e}; streaming on without `onair status`");
            Ok(None)
        }
    }
}

fn build_output(config: &Config, clock: &Arc<Clock>) -> Result<Arc<dyn Output>, DaemonError> {
    let audio = config.audio.kind != AudioKind::None;
    // A negative offset sends sound earlier than it was captured: the outputs wait that much
    // longer before sending anything.
    let advance = Duration::from_millis(u64::from((-config.audio.offset_ms).max(0).unsigned_abs()));
    match &config.output {
        OutputConfig::Whip { url, token } => Ok(Arc::new(
            WhipOutput::new(url, token.clone(), &config.state_dir)
                .map_err(|e| DaemonError::Output(e.to_string()))?
                .with_clock(clock.clone())
                .with_audio(audio, advance),
        )),
        OutputConfig::Rtmp { url } => Ok(Arc::new(
            RtmpOutput::new(url)
                .map_err(|e| DaemonError::Output(e.to_string()))?
                .with_clock(clock.clone())
                .with_audio(audio.then_some(config.audio.channels), advance),
        )),
    }
}

fn source_line(config: &Config) -> String {
    let s = &config.source;
    let pattern = match (s.kind, s.pattern) {
        (SourceKind::Test, p) if p != TestPattern::default() => format!(" {}", p.as_str()),
        _ => String::new(),
    };
    format!("{}{pattern} {}x{}@{}", s.kind, s.width, s.height, s.fps)
}

fn log_what_runs(config: &Config) {
    log::info!(
        "onair: {} -> {} {}",
        source_line(config),
        config.output.kind(),
        config.output.url()
    );
}

/// Starts capture and encoding; what the pipeline reports reaches the watchdog as events.
fn start_media(
    config: &Config,
    shared: &Shared,
    events: mpsc::Sender<Event>,
    shutdown: &CancellationToken,
) -> Result<Media, DaemonError> {
    let (media_tx, media_rx) = mpsc::channel(8);
    let media = Media::start(
        config.source.clone(),
        config.encoder.clone(),
        shared.door.clone(),
        shared.keyframes.clone(),
        shared.bitrate.clone(),
        media_tx,
        shutdown.child_token(),
    )?;
    tokio::spawn(forward_media(media_rx, events));
    Ok(media)
}

/// The codec each output carries sound in.
fn audio_codec(output: &OutputConfig) -> AudioCodec {
    match output {
        OutputConfig::Whip { .. } => AudioCodec::Opus,
        OutputConfig::Rtmp { .. } => AudioCodec::Aac,
    }
}

/// Starts the sound on the media clock (nothing when `audio.kind` is `none`).
fn start_audio(
    config: &Config,
    shared: &Shared,
    media: &Media,
    shutdown: &CancellationToken,
) -> Result<Option<Audio>, DaemonError> {
    let test = if config.source.pattern == crate::config::TestPattern::Sync {
        TestSound::SyncBeeps
    } else {
        TestSound::Tone
    };
    Audio::start(
        &config.audio,
        audio_codec(&config.output),
        test,
        media.clock.clone(),
        shared.door.clone(),
        shutdown.child_token(),
    )
    .map_err(DaemonError::Audio)
}

/// What status shows of the box itself, beside the stream: how its storage and its clock are.
struct BoxFacts<'a> {
    data_partition: Option<DataPartition>,
    clock: &'a Clock,
}

/// The media side's lanes whose counters status shows: the picture, the sound, the recording.
struct Lanes<'a> {
    media: &'a Media,
    audio: Option<&'a Audio>,
    recording: Option<&'a Recording>,
}

fn status_sources(
    config: &Config,
    shared: &Shared,
    lanes: Lanes,
    network: watch::Receiver<NetworkStatus>,
    view: watch::Receiver<MachineView>,
    facts: BoxFacts,
) -> StatusSources {
    StatusSources {
        view,
        network,
        media: lanes.media.stats.clone(),
        output_stats: shared.output_stats.clone(),
        keyframes: shared.keyframes.clone(),
        audio: lanes.audio.map(|a| a.stats.clone()),
        recording: lanes.recording.map(|r| r.stats.clone()),
        adaptation: shared.adaptation.clone(),
        clock: facts.clock.subscribe(),
        started: Instant::now(),
        source: source_line(config),
        output_kind: config.output.kind().to_string(),
        output_url: config.output.url().redacted(),
        data_partition: facts.data_partition,
        state_dir: config.state_dir.clone(),
    }
}

/// Starts the recording lane beside the connection (nothing unless `record.enabled`): the
/// same units from the door, the sound as the output carries it.
fn start_recording(
    config: &Config,
    shared: &Shared,
    media: &Media,
    on_air: watch::Receiver<bool>,
    recorder: &FlightRecorder,
    shutdown: &CancellationToken,
) -> Option<Recording> {
    let codec = audio_codec(&config.output);
    let audio = (config.audio.kind != AudioKind::None).then(|| AudioSpec {
        codec,
        channels: crate::media::audio::encode::sent_channels(codec, &config.audio),
    });
    Recording::start(
        RecordingInputs {
            config: config.record.clone(),
            state_dir: config.state_dir.clone(),
            door: shared.door.clone(),
            fps: config.source.fps,
            audio,
            clock: media.clock.clone(),
            on_air,
            recorder: recorder.clone(),
        },
        shutdown.child_token(),
    )
}

/// Whether the stream is on the air, for the recording's sidecars (the windows `onair
/// recordings` shows): the watchdog's view has `live_since` while a connection carries the
/// stream, the slate included.
fn on_air(
    mut view: watch::Receiver<MachineView>,
    shutdown: &CancellationToken,
) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(view.borrow().live_since.is_some());
    let shutdown = shutdown.child_token();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = view.changed() => if changed.is_err() { return },
            }
            let live = view.borrow_and_update().live_since.is_some();
            tx.send_if_modified(|was| std::mem::replace(was, live) != live);
        }
    });
    rx
}

/// The network monitor's verdict as a watch channel, its changes forwarded to the watchdog.
/// If the netlink socket cannot be opened (a container without NETLINK_ROUTE, say) the box
/// assumes it is online and relies on the backoff alone, and says so.
async fn start_network(
    config: &Config,
    events: &mpsc::Sender<Event>,
    shutdown: &CancellationToken,
) -> (watch::Receiver<NetworkStatus>, Option<NetworkMonitor>) {
    let server = config.output.host().map(|h| ServerAddr::from_host(&h));
    let (network, monitor) =
        match NetworkMonitor::start(&config.network, server, shutdown.child_token()).await {
            Ok(monitor) => (monitor.subscribe(), Some(monitor)),
            Err(e) => {
                log::warn!("network: monitor unavailable ({e}); relying on the retry timer alone");
                let (tx, rx) = watch::channel(NetworkStatus {
                    online: true,
                    ..NetworkStatus::default()
                });
                // Keep the channel open for the daemon's lifetime.
                let token = shutdown.child_token();
                tokio::spawn(async move {
                    token.cancelled().await;
                    drop(tx);
                });
                (rx, None)
            }
        };
    tokio::spawn(forward_network(
        network.clone(),
        config.network.paths != PathsMode::Ignore,
        events.clone(),
        shutdown.child_token(),
    ));
    (network, monitor)
}

/// Watches the clock for the run; a step or NTP's synchronization reaches the watchdog (a
/// wait after a "clock behind" refusal ends at once).
fn watch_clock(clock: &Arc<Clock>, events: &mpsc::Sender<Event>, shutdown: &CancellationToken) {
    let (tx, mut rx) = mpsc::channel::<ClockChange>(4);
    tokio::spawn(crate::clock::watch::run(
        clock.clone(),
        tx,
        shutdown.child_token(),
    ));
    let events = events.clone();
    tokio::spawn(async move {
        while let Some(change) = rx.recv().await {
            let event = Event::ClockChanged {
                reason: change.reason().to_string(),
            };
            if events.send(event).await.is_err() {
                return;
            }
        }
    });
}

async fn forward_media(mut rx: mpsc::Receiver<MediaEvent>, events: mpsc::Sender<Event>) {
    while let Some(ev) = rx.recv().await {
        let event = match ev {
            MediaEvent::Ready => Event::MediaReady,
            MediaEvent::Stalled(reason) => Event::MediaLost { reason },
            MediaEvent::InputLive => Event::InputReady,
            MediaEvent::InputLost(reason) => Event::InputLost { reason },
            MediaEvent::InputNote(message) => Event::InputNote { message },
            MediaEvent::Fatal(reason) => Event::Stop(StopCause::MediaFatal(reason)),
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
}

/// Turns the monitor's status into the watchdog's events ([`NetworkStatus::changes_since`]):
/// a path change reconnects unless `network.paths` is `ignore`.
async fn forward_network(
    mut rx: watch::Receiver<NetworkStatus>,
    follow_path: bool,
    events: mpsc::Sender<Event>,
    shutdown: CancellationToken,
) {
    let mut last = rx.borrow_and_update().clone();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
        let now = rx.borrow_and_update().clone();
        let changes = now.changes_since(&last, follow_path);
        last = now;
        for change in changes {
            let event = match change {
                StatusChange::Network { online } => Event::NetworkChanged { online },
                StatusChange::Path { reason } => Event::PathChanged {
                    reason,
                    reconnect: follow_path,
                },
            };
            if events.send(event).await.is_err() {
                return;
            }
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP, taken over for the daemon's whole life: installed once before
/// the first part starts, so a signal during start-up (or between two runs) waits for the
/// signal task instead of killing the process; each run's signal task borrows them.
#[derive(Clone)]
struct Signals(Option<Arc<tokio::sync::Mutex<SignalStreams>>>);

struct SignalStreams {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Signals {
        // SIGUSR1 (the test source's signal) and SIGUSR2 (a test hook) are listened to by
        // parts that start after the slate is made, which can take a second; until then their
        // default action would end the daemon. Taken over here, they are ignored until those
        // parts listen (tokio keeps a signal's handler for the process's life once installed).
        for kind in [SignalKind::user_defined1(), SignalKind::user_defined2()] {
            if let Err(e) = signal(kind) {
                log::warn!("cannot take over signal {}: {e}", kind.as_raw_value());
            }
        }
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(int), Ok(term), Ok(hup)) => {
                Signals(Some(Arc::new(tokio::sync::Mutex::new(SignalStreams {
                    int,
                    term,
                    hup,
                }))))
            }
            _ => {
                log::error!("cannot install signal handlers; stop the daemon with SIGKILL");
                Signals(None)
            }
        }
    }
}

/// Where a SIGHUP renders the operating system's Wi-Fi and modem files, and whom it tells.
struct FieldFiles {
    dir: PathBuf,
    reconfigured: Option<net::field::Reconfigured>,
}

/// How long rendering the field files and telling the radios may hold the signal task up.
const FIELD_FILES_TIMEOUT: Duration = Duration::from_secs(3);

impl FieldFiles {
    /// Renders `config`'s files and has the radios read them if they changed; logs what it
    /// did. A failure costs the new Wi-Fi settings only (the running ones stay).
    async fn apply(&self, config: &Config) {
        let ctrl_dir = Path::new(net::field::WPA_CTRL_DIR);
        let applied = tokio::time::timeout(
            FIELD_FILES_TIMEOUT,
            net::field::apply(
                &config.network,
                &self.dir,
                ctrl_dir,
                self.reconfigured.as_ref(),
            ),
        )
        .await;
        match applied {
            Ok(Ok(a)) if a.written.wifi_changed => {
                let told = if a.reconfigured.is_empty() {
                    "no radio is running to read them".to_string()
                } else {
                    format!("{} read them again", a.reconfigured.join(", "))
                };
                log::info!(
                    "SIGHUP: the Wi-Fi settings changed ({} network(s)); {told}",
                    config.network.wifi.len()
                );
                for failure in a.failed {
                    log::warn!("SIGHUP: cannot tell wpa_supplicant of {failure}");
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => log::error!("SIGHUP: {e}; the radios keep their settings"),
            Err(_) => log::error!(
                "SIGHUP: the Wi-Fi settings took more than {} s to apply",
                FIELD_FILES_TIMEOUT.as_secs()
            ),
        }
    }
}

/// Turns signals into events: SIGINT/SIGTERM stop the run, SIGHUP reloads the config.
fn handle_signals(
    config_path: PathBuf,
    current: Config,
    field: Option<FieldFiles>,
    events: mpsc::Sender<Event>,
    signals: Signals,
    shutdown: &CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(signal_events(
        config_path,
        current,
        field,
        events,
        signals,
        shutdown.child_token(),
    ))
}

/// How long a SIGHUP's config read may take. The loader refuses FIFOs and devices without
/// waiting, so this only guards against a file system that hangs; the signal task never waits
/// for it either way.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(2);

async fn signal_events(
    config_path: PathBuf,
    mut current: Config,
    field: Option<FieldFiles>,
    events: mpsc::Sender<Event>,
    signals: Signals,
    shutdown: CancellationToken,
) {
    let Some(signals) = signals.0 else {
        return;
    };
    // The previous run's task is aborted before this one starts; the lock is free by then.
    let mut streams = signals.lock().await;
    let SignalStreams { int, term, hup } = &mut *streams;
    // The config being read for a SIGHUP, if any. Reading happens off this task, so SIGTERM
    // is heard while it runs, however long it takes.
    let mut reloading: Option<(Instant, Reload)> = None;
    // A SIGHUP came while reading: what is being read may predate the change it announces.
    let mut read_again = false;
    let start_reading = || {
        let deadline = Instant::now() + RELOAD_TIMEOUT;
        Some((deadline, load_in_background(config_path.clone())))
    };
    loop {
        let batch = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = int.recv() => stop_for("SIGINT"),
            _ = term.recv() => stop_for("SIGTERM"),
            _ = hup.recv() => {
                if reloading.is_some() {
                    log::info!("SIGHUP: the config is being read; it will be read again after");
                    read_again = true;
                } else {
                    reloading = start_reading();
                }
                vec![]
            }
            loaded = async {
                match reloading.as_mut() {
                    Some((deadline, rx)) => tokio::time::timeout_at(*deadline, rx).await,
                    None => std::future::pending().await,
                }
            } => {
                reloading = None;
                match loaded {
                    _ if read_again => {
                        read_again = false;
                        reloading = start_reading();
                        vec![]
                    }
                    Ok(Ok(result)) => {
                        if let (Ok(new), Some(field)) = (&result, &field) {
                            field.apply(new).await;
                        }
                        reload(result, &mut current)
                    }
                    Ok(Err(_)) => {
                        log::error!("SIGHUP: the config reader stopped; keeping the running config");
                        vec![]
                    }
                    Err(_) => {
                        log::error!(
                            "SIGHUP: reading {} took more than {} s; keeping the running config",
                            config_path.display(),
                            RELOAD_TIMEOUT.as_secs()
                        );
                        vec![]
                    }
                }
            }
        };
        for event in batch {
            if events.send(event).await.is_err() {
                return;
            }
        }
    }
}

/// The config a SIGHUP asked for, on its way.
type Reload = tokio::sync::oneshot::Receiver<Result<Config, ConfigError>>;

/// Reads the config on a thread of its own. A plain thread rather than the runtime's blocking
/// pool: one stuck in a hung file system must not hold up the runtime's shutdown.
fn load_in_background(path: PathBuf) -> Reload {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("onair-reload".into())
        .spawn(move || {
            let _ = tx.send(Config::load(&path));
        });
    if let Err(e) = spawned {
        // The sender was moved into the closure and dropped with it: the receiver reports it.
        log::error!("SIGHUP: cannot start a thread to read the config: {e}");
    }
    rx
}

fn stop_for(signal: &'static str) -> Vec<Event> {
    log::info!("{signal}: stopping");
    vec![Event::Stop(StopCause::Signal(signal))]
}

/// What a SIGHUP means: nothing (the new file is invalid: the running config stays), new
/// reconnect settings applied in place (and a retry now), or a restart with the new config.
fn reload(loaded: Result<Config, ConfigError>, current: &mut Config) -> Vec<Event> {
    match loaded {
        Err(e) => {
            log::error!("SIGHUP: keeping the running config: {e}");
            vec![]
        }
        Ok(new) if new == *current || current.applies_in_place(&new) => {
            log::info!("SIGHUP: config reloaded; retrying now");
            let policy = new.reconnect.clone();
            *current = new;
            vec![
                Event::PolicyChanged(policy),
                Event::RetryNow {
                    reason: "SIGHUP".into(),
                },
            ]
        }
        Ok(new) => vec![Event::Stop(StopCause::Restart(Box::new(new)))],
    }
}

/// A daemon dying of a fatal error leaves what led to it in the journal.
fn log_flight_recorder(recorder: &FlightRecorder, reason: &str) {
    log::error!("fatal: {reason}; flight recorder follows");
    for r in recorder.snapshot() {
        log::error!(
            "  {:.3} {}",
            r.at,
            serde_json::to_string(&r.entry).unwrap_or_default()
        );
    }
}
