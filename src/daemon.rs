//! `onair run`: wires media, output, network monitor, LEDs and status around the watchdog, and
//! owns start-up and shutdown order.
//!
//! Every task started here is stopped here: one cancellation token goes down to all of them,
//! and shutdown waits for each part in the order that lets the server hear a DELETE before the
//! pipeline stops.

use crate::config::{Config, ConfigError, OutputConfig};
use crate::media::{Door, KeyframeRequester, Media, MediaError, MediaEvent};
use crate::net::{NetworkMonitor, NetworkStatus, ServerAddr};
use crate::output::rtmp::RtmpOutput;
use crate::output::whip::WhipOutput;
use crate::output::{Output, OutputStats};
use crate::status::recorder::FlightRecorder;
use crate::status::{StatusContext, StatusError, StatusServer, StatusSources};
use crate::supervisor::{Driver, DriverParts, Event, Machine, StreamState};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("media: {0}")]
    Media(#[from] MediaError),
    #[error("output: {0}")]
    Output(String),
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error("{0}")]
    Setup(String),
}

/// How one run of the daemon ended.
enum Outcome {
    Stopped,
    /// SIGHUP brought a config that changes more than the reconnect policy.
    Restart(Box<Config>),
    Fatal(String),
}

/// Runs until SIGINT/SIGTERM. Restarts its parts in place when SIGHUP brings a config that
/// changes more than the reconnect settings.
pub async fn run(config_path: PathBuf, mut config: Config) -> Result<(), DaemonError> {
    // One recorder for the daemon's life, so `--history` keeps what happened before a
    // SIGHUP restart.
    let recorder = FlightRecorder::new();
    loop {
        match run_once(&config_path, config, &recorder).await? {
            Outcome::Stopped => return Ok(()),
            Outcome::Restart(new) => {
                log::info!("config changed beyond reconnect settings: restarting the stream");
                config = *new;
            }
            Outcome::Fatal(reason) => return Err(DaemonError::Setup(reason)),
        }
    }
}

fn build_output(config: &Config) -> Result<Arc<dyn Output>, DaemonError> {
    match &config.output {
        OutputConfig::Whip { url, token } => Ok(Arc::new(
            WhipOutput::new(url, token.clone(), &config.state_dir)
                .map_err(|e| DaemonError::Output(e.to_string()))?,
        )),
        OutputConfig::Rtmp { url } => Ok(Arc::new(
            RtmpOutput::new(url).map_err(|e| DaemonError::Output(e.to_string()))?,
        )),
    }
}

async fn run_once(
    config_path: &Path,
    config: Config,
    recorder: &FlightRecorder,
) -> Result<Outcome, DaemonError> {
    // The status socket first: a second daemon started by mistake stops here, before it
    // touches the camera or the server session of the one already running. Anything else
    // wrong with the socket only costs `onair status`; streaming matters more.
    let status_server = match StatusServer::bind(&config.status.socket).await {
        Ok(server) => Some(server),
        Err(e) if e.is_already_running() => return Err(e.into()),
        Err(e) => {
            log::warn!("{e}; streaming on without `onair status`");
            None
        }
    };
    let shutdown = CancellationToken::new();
    let door = Door::new();
    let keyframes = KeyframeRequester::new();
    let output_stats = Arc::new(OutputStats::default());
    let output = build_output(&config)?;
    log::info!(
        "onair: {} {}x{}@{} -> {} {}",
        config.source.kind,
        config.source.width,
        config.source.height,
        config.source.fps,
        config.output.kind(),
        config.output.url()
    );

    let (events_tx, events_rx) = mpsc::channel::<Event>(64);
    let fatal: Arc<Mutex<Option<String>>> = Arc::default();

    let (media_tx, media_rx) = mpsc::channel(8);
    let media = Media::start(
        config.source.clone(),
        config.encoder.clone(),
        door.clone(),
        keyframes.clone(),
        media_tx,
        shutdown.child_token(),
    )?;
    tokio::spawn(forward_media(media_rx, events_tx.clone(), fatal.clone()));

    let (network, monitor) = start_network(&config, &shutdown).await;
    let online = network.borrow().online;
    tokio::spawn(forward_network(
        network.clone(),
        events_tx.clone(),
        shutdown.child_token(),
    ));

    let machine = Machine::new(
        &config.reconnect,
        online,
        rand::random(),
        tokio::time::Instant::now(),
    );
    let (view_tx, view_rx) = watch::channel(machine.view());
    let (state_tx, state_rx) = watch::channel(StreamState::Starting);
    let leds = tokio::spawn(crate::leds::run(
        config.leds.clone(),
        state_rx,
        shutdown.child_token(),
    ));
    let status_sources = StatusSources {
        view: view_rx,
        network: network.clone(),
        media: media.stats.clone(),
        output_stats: output_stats.clone(),
        keyframes: keyframes.clone(),
        started: tokio::time::Instant::now(),
        source: format!(
            "{} {}x{}@{}",
            config.source.kind, config.source.width, config.source.height, config.source.fps
        ),
        output_kind: config.output.kind().to_string(),
        output_url: config.output.url().redacted(),
    };
    let status = status_server.map(|server| {
        tokio::spawn(server.serve(
            StatusContext {
                sources: status_sources,
                recorder: recorder.clone(),
                events: events_tx.clone(),
            },
            shutdown.child_token(),
        ))
    });

    let restart: Arc<Mutex<Option<Config>>> = Arc::default();
    let signals = tokio::spawn(handle_signals(
        config_path.to_path_buf(),
        config.clone(),
        events_tx.clone(),
        restart.clone(),
        shutdown.child_token(),
    ));

    let driver = Driver::new(
        machine,
        DriverParts {
            output: output.clone(),
            door,
            keyframes,
            stats: output_stats,
            dead_after: config.reconnect.dead_after,
            recorder: recorder.clone(),
            view: view_tx,
            state: state_tx,
        },
    );
    drop(events_tx);
    driver.run(events_rx).await;

    // The driver closed the connection (DELETE included) on its way out; this catches a
    // session that could not be deleted then, within the same small budget.
    let _ = tokio::time::timeout(Duration::from_millis(800), output.release()).await;
    shutdown.cancel();
    signals.abort();
    // The socket file is gone before a restart binds it again, or before the process exits.
    if let Some(status) = status {
        let _ = status.await;
    }
    // The LEDs go dark (and sysfs triggers are restored) before the process exits.
    let _ = leds.await;
    if let Some(m) = monitor {
        m.join().await;
    }
    if let Err(e) = media.stopped().await {
        log::debug!("media stopped with: {e}");
    }

    if let Some(reason) = lock(&fatal).take() {
        log::error!("fatal: {reason}; flight recorder follows");
        for r in recorder.snapshot() {
            log::error!(
                "  {:.3} {}",
                r.at,
                serde_json::to_string(&r.entry).unwrap_or_default()
            );
        }
        return Ok(Outcome::Fatal(reason));
    }
    if let Some(new) = lock(&restart).take() {
        return Ok(Outcome::Restart(Box::new(new)));
    }
    Ok(Outcome::Stopped)
}

/// The network monitor's verdict as a watch channel. If the netlink socket cannot be opened
/// (a container without NETLINK_ROUTE, say) the box assumes it is online and relies on the
/// backoff alone, and says so.
async fn start_network(
    config: &Config,
    shutdown: &CancellationToken,
) -> (watch::Receiver<NetworkStatus>, Option<NetworkMonitor>) {
    let server = config.output.host().map(|h| ServerAddr::from_host(&h));
    match NetworkMonitor::start(&config.network, server, shutdown.child_token()).await {
        Ok(monitor) => (monitor.subscribe(), Some(monitor)),
        Err(e) => {
            log::warn!("network: monitor unavailable ({e}); relying on the retry timer alone");
            let (tx, rx) = watch::channel(NetworkStatus {
                online: true,
                interfaces: vec![],
            });
            // Keep the channel open for the daemon's lifetime.
            let token = shutdown.child_token();
            tokio::spawn(async move {
                token.cancelled().await;
                drop(tx);
            });
            (rx, None)
        }
    }
}

async fn forward_media(
    mut rx: mpsc::Receiver<MediaEvent>,
    events: mpsc::Sender<Event>,
    fatal: Arc<Mutex<Option<String>>>,
) {
    while let Some(ev) = rx.recv().await {
        let event = match ev {
            MediaEvent::Ready => Event::InputReady,
            MediaEvent::Lost(reason) => Event::InputLost { reason },
            MediaEvent::Fatal(reason) => {
                *lock(&fatal) = Some(reason);
                Event::Stop
            }
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
}

async fn forward_network(
    mut rx: watch::Receiver<NetworkStatus>,
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
        if now == last {
            continue;
        }
        // A new usable interface while already online is also worth telling the watchdog:
        // a waiting retry may succeed on it.
        let event = Event::NetworkChanged { online: now.online };
        last = now;
        if events.send(event).await.is_err() {
            return;
        }
    }
}

async fn handle_signals(
    config_path: PathBuf,
    mut current: Config,
    events: mpsc::Sender<Event>,
    restart: Arc<Mutex<Option<Config>>>,
    shutdown: CancellationToken,
) {
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        log::error!("cannot install signal handlers; stop the daemon with SIGKILL");
        return;
    };
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = int.recv() => { log::info!("SIGINT: stopping"); Event::Stop }
            _ = term.recv() => { log::info!("SIGTERM: stopping"); Event::Stop }
            _ = hup.recv() => match Config::load(&config_path) {
                Err(e) => {
                    log::error!("SIGHUP: keeping the running config: {e}");
                    continue;
                }
                Ok(new) if new == current || current.differs_only_in_reconnect(&new) => {
                    log::info!("SIGHUP: config reloaded; retrying now");
                    let policy = new.reconnect.clone();
                    current = new;
                    if events.send(Event::PolicyChanged(policy)).await.is_err() {
                        return;
                    }
                    Event::RetryNow { reason: "SIGHUP".into() }
                }
                Ok(new) => {
                    *lock(&restart) = Some(new);
                    Event::Stop
                }
            },
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
}

/// See `media::keyframes::lock`.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
