//! Runs the audio side: the encoding pipeline for the daemon's life, the capture restarted as
//! the health machine says, and the pump between them that keeps the encoder fed with sound or
//! silence every 20 ms.

use super::capture::{self, CaptureRun, TestSound};
use super::encode::{self, EncodeRun};
use super::health::{Action, AudioHealth, AudioHealthSettings, Observation};
use super::timeline::PcmTimeline;
use super::{AudioCodec, AudioStats, AudioStatus, RATE};
use crate::config::{AudioConfig, AudioKind};
use crate::lock::lock;
use crate::media::bus;
use crate::media::clock::MediaClock;
use crate::media::door::Door;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The pump hands the encoder 20 ms at a time (one Opus frame)…
const CHUNK: Duration = Duration::from_millis(20);
/// …of the sound captured up to 40 ms ago: capture buffers (10 ms) arrive well within that,
/// so live sound is not mistaken for a gap.
const HOLDBACK: Duration = Duration::from_millis(40);
/// The most sound held between capture and pump: a device running fast cannot grow memory.
const MAX_HOLD: Duration = Duration::from_millis(500);
/// Health checks and the encoder's restart wait.
const TICK: Duration = Duration::from_millis(200);
const ENCODER_RESTART: Duration = Duration::from_secs(2);

/// Why the audio side cannot start at all (a device that does not work is no error: silence is
/// sent and the device retried).
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("GStreamer failed to initialise: {0}")]
    Init(#[source] gst::glib::Error),
    #[error(transparent)]
    NoEncoder(#[from] encode::NoEncoder),
    #[error("cannot start the audio pump: {0}")]
    Pump(#[source] std::io::Error),
}

/// The running audio side. Stopped by cancelling the shutdown token; await [`Audio::stopped`].
pub struct Audio {
    pub stats: Arc<AudioStats>,
    task: JoinHandle<()>,
}

impl Audio {
    /// Starts audio for `config` (`None` when `audio.kind` is `none`). An encoder that does not
    /// exist is an error (a broken install, found at start); a device that does not work is
    /// not (silence is sent, the device retried).
    pub fn start(
        config: &AudioConfig,
        codec: AudioCodec,
        test: TestSound,
        clock: MediaClock,
        door: Door,
        shutdown: CancellationToken,
    ) -> Result<Option<Audio>, AudioError> {
        if config.kind == AudioKind::None {
            return Ok(None);
        }
        gst::init().map_err(AudioError::Init)?;
        let element = encode::choose(codec, |f| gst::ElementFactory::find(f).is_some())?;
        let source = match config.kind {
            AudioKind::Alsa => config.device.clone(),
            _ => "test".to_string(),
        };
        let stats = Arc::new(AudioStats::new(AudioStatus {
            source,
            codec: Some(format!("{} ({element})", codec.as_str())),
            state: "starting",
            reason: None,
            since: Instant::now(),
            peak_dbfs: None,
            dropouts: 0,
            channels: encode::sent_channels(codec, config),
            bitrate_kbps: config.bitrate_kbps,
            offset_ms: config.offset_ms,
        }));
        log::info!(
            "audio: {} from {} -> {} ({element}) {} ch {} kbps, offset {} ms",
            config.kind.as_str(),
            if config.kind == AudioKind::Alsa {
                config.device.as_str()
            } else {
                "the test source"
            },
            codec.as_str(),
            encode::sent_channels(codec, config),
            config.bitrate_kbps,
            config.offset_ms
        );
        let timeline = Arc::new(Mutex::new(PcmTimeline::new(
            RATE,
            2 * config.channels as usize,
            MAX_HOLD,
        )));
        let pump = Pump::start(clock.clone(), timeline.clone()).map_err(AudioError::Pump)?;
        let runner = Runner {
            config: config.clone(),
            codec,
            element,
            test,
            clock,
            door,
            stats: stats.clone(),
            timeline,
            pump,
            capture: None,
            encode: None,
            retry_at: None,
            encoder_restart_at: None,
        };
        let task = tokio::spawn(runner.run(shutdown));
        Ok(Some(Audio { stats, task }))
    }

    /// Waits until the runner has stopped (both pipelines in NULL state).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

struct Runner {
    config: AudioConfig,
    codec: AudioCodec,
    element: &'static str,
    test: TestSound,
    clock: MediaClock,
    door: Door,
    stats: Arc<AudioStats>,
    timeline: Arc<Mutex<PcmTimeline>>,
    pump: Pump,
    capture: Option<CaptureRun>,
    encode: Option<EncodeRun>,
    retry_at: Option<Instant>,
    encoder_restart_at: Option<Instant>,
}

enum Wake {
    Shutdown,
    CaptureBus(Option<gst::Message>),
    EncodeBus(Option<gst::Message>),
    Tick,
    RetryDue,
    EncoderRestartDue,
}

impl Runner {
    async fn run(mut self, shutdown: CancellationToken) {
        self.start_encoder();
        let (mut health, actions) =
            AudioHealth::new(AudioHealthSettings::default(), Instant::now());
        self.actions(&mut health, actions).await;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = tokio::select! {
                _ = shutdown.cancelled() => Wake::Shutdown,
                m = bus::next_message(self.capture.as_mut().map(|r| &mut r.bus)) => Wake::CaptureBus(m),
                m = bus::next_message(self.encode.as_mut().map(|r| &mut r.bus)) => Wake::EncodeBus(m),
                _ = tick.tick() => Wake::Tick,
                _ = sleep_until(self.retry_at) => Wake::RetryDue,
                _ = sleep_until(self.encoder_restart_at) => Wake::EncoderRestartDue,
            };
            let now = Instant::now();
            match wake {
                Wake::Shutdown => break,
                Wake::CaptureBus(m) => {
                    let end = match m {
                        None => Some("the capture's bus closed".to_string()),
                        Some(m) => capture::bus_end(&m),
                    };
                    if let Some(why) = end {
                        let actions = health.handle(now, Observation::Ended(why));
                        self.actions(&mut health, actions).await;
                    }
                }
                Wake::EncodeBus(m) => {
                    let end = match &m {
                        None => Some("the encoder's bus closed".to_string()),
                        Some(m) => {
                            if let Some(db) = encode::peak_dbfs(m) {
                                self.stats.set_level(db);
                            }
                            encode::bus_end(m)
                        }
                    };
                    if let Some(why) = end {
                        log::warn!(
                            "audio: the encoder failed: {why}; restarting it in {} s",
                            ENCODER_RESTART.as_secs()
                        );
                        self.stop_encoder().await;
                        self.encoder_restart_at = Some(now + ENCODER_RESTART);
                    }
                }
                Wake::Tick => {
                    if let Some(run) = &self.capture {
                        let last_sound = *lock(&run.last_sound);
                        let actions = health.handle(now, Observation::Tick { last_sound });
                        self.actions(&mut health, actions).await;
                    }
                }
                Wake::RetryDue => {
                    self.retry_at = None;
                    let actions = health.handle(now, Observation::RetryDue);
                    self.actions(&mut health, actions).await;
                }
                Wake::EncoderRestartDue => {
                    self.encoder_restart_at = None;
                    self.start_encoder();
                }
            }
        }
        self.pump.connect(None);
        if let Some(run) = self.capture.take() {
            capture::stop(run).await;
        }
        self.stop_encoder().await;
    }

    fn start_encoder(&mut self) {
        match encode::start(
            self.codec,
            self.element,
            &self.config,
            &self.clock,
            self.door.clone(),
        ) {
            Ok(run) => {
                self.pump.connect(Some(run.appsrc.clone()));
                self.encode = Some(run);
            }
            Err(e) => {
                log::warn!(
                    "audio: the encoder {} did not start: {e}; retrying in {} s",
                    self.element,
                    ENCODER_RESTART.as_secs()
                );
                self.encoder_restart_at = Some(Instant::now() + ENCODER_RESTART);
            }
        }
    }

    async fn stop_encoder(&mut self) {
        self.pump.connect(None);
        if let Some(run) = self.encode.take() {
            encode::stop(run).await;
        }
    }

    async fn actions(&mut self, health: &mut AudioHealth, mut actions: Vec<Action>) {
        while !actions.is_empty() {
            let mut next = Vec::new();
            for action in actions {
                if let Some(o) = self.action(action).await {
                    next.extend(health.handle(Instant::now(), o));
                }
            }
            actions = next;
        }
    }

    async fn action(&mut self, action: Action) -> Option<Observation> {
        match action {
            Action::StartCapture => {
                if let Some(run) = self.capture.take() {
                    capture::stop(run).await;
                }
                let (config, test, clock, timeline) = (
                    self.config.clone(),
                    self.test,
                    self.clock.clone(),
                    self.timeline.clone(),
                );
                // Opening a device can block: off the async threads.
                let started = tokio::task::spawn_blocking(move || {
                    capture::start(&config, test, &clock, timeline)
                })
                .await;
                return Some(match started {
                    Ok(Ok(run)) => {
                        self.capture = Some(run);
                        Observation::Started
                    }
                    Ok(Err(why)) => Observation::StartFailed(why.to_string()),
                    Err(e) => Observation::StartFailed(format!("capture start panicked: {e}")),
                });
            }
            Action::StopCapture => {
                if let Some(run) = self.capture.take() {
                    capture::stop(run).await;
                }
            }
            Action::RetryAt(at) => self.retry_at = Some(at),
            Action::Live => {
                let was = self.stats.status().state;
                self.stats.update(|s| {
                    s.state = "live";
                    s.reason = None;
                    s.since = Instant::now();
                });
                if was == "silence" {
                    log::info!("audio: {} is back: its sound is sent", self.source());
                } else {
                    log::info!("audio: {} live", self.source());
                }
            }
            Action::Silence(why) => {
                self.stats.update(|s| {
                    s.state = "silence";
                    s.reason = Some(why.clone());
                    s.since = Instant::now();
                    s.dropouts += 1;
                });
                log::warn!(
                    "audio: {}: {why}; sending silence, retrying every {} s",
                    self.source(),
                    AudioHealthSettings::default().retry.as_secs()
                );
            }
        }
        None
    }

    fn source(&self) -> String {
        match self.config.kind {
            AudioKind::Alsa => format!("ALSA device {}", self.config.device),
            _ => "the test source".into(),
        }
    }
}

/// The thread that feeds the encoder 20 ms of PCM every 20 ms, paced by the media clock.
struct Pump {
    entrance: Arc<Mutex<Option<gst_app::AppSrc>>>,
    stop: Arc<AtomicBool>,
    clock_id: gst::ClockId,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pump {
    fn start(clock: MediaClock, timeline: Arc<Mutex<PcmTimeline>>) -> std::io::Result<Pump> {
        let entrance: Arc<Mutex<Option<gst_app::AppSrc>>> = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let system = gst::SystemClock::obtain();
        let period = gst::ClockTime::from_nseconds(CHUNK.as_nanos() as u64);
        let clock_id: gst::ClockId = system
            .new_periodic_id(system.time() + period, period)
            .into();
        let thread = {
            let (entrance, stop, id) = (entrance.clone(), stop.clone(), clock_id.clone());
            std::thread::Builder::new()
                .name("onair-audio".into())
                .spawn(move || pump(&clock, &timeline, &entrance, &stop, &id))?
        };
        Ok(Pump {
            entrance,
            stop,
            clock_id,
            thread: Some(thread),
        })
    }

    fn connect(&self, appsrc: Option<gst_app::AppSrc>) {
        *lock(&self.entrance) = appsrc;
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.clock_id.unschedule();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn pump(
    clock: &MediaClock,
    timeline: &Mutex<PcmTimeline>,
    entrance: &Mutex<Option<gst_app::AppSrc>>,
    stop: &AtomicBool,
    id: &gst::ClockId,
) {
    let frames = (u64::from(RATE) * CHUNK.as_nanos() as u64 / 1_000_000_000) as usize;
    let mut next: Option<Duration> = None;
    loop {
        let (result, _) = id.wait();
        if stop.load(Ordering::SeqCst) || result == Err(gst::ClockError::Unscheduled) {
            return;
        }
        let Some(target) = clock.now().checked_sub(HOLDBACK) else {
            continue;
        };
        let mut at = *next.get_or_insert(target);
        // Far behind (the thread was starved): skip ahead rather than burst.
        if target.saturating_sub(at) > Duration::from_millis(500) {
            at = target;
        }
        while at + CHUNK <= target {
            let chunk = lock(timeline).take(at, frames);
            let mut buffer = gst::Buffer::from_mut_slice(chunk.data);
            {
                let b = buffer.get_mut().expect("a new buffer is writable");
                b.set_pts(gst::ClockTime::from_nseconds(at.as_nanos() as u64));
                b.set_duration(gst::ClockTime::from_nseconds(CHUNK.as_nanos() as u64));
            }
            if let Some(appsrc) = lock(entrance).as_ref() {
                let _ = appsrc.push_buffer(buffer);
            }
            at += CHUNK;
        }
        next = Some(at);
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
