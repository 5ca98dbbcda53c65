//! Runs the capture → encode → access-unit pipeline and keeps it running.
//!
//! The pipeline is built by code, element by element. It is started once and keeps running
//! across network trouble (outputs come and go at the `Door`). Only input trouble restarts it:
//! a camera unplugged, an HDMI source without signal, a device that stalls. When to start,
//! stop, restart, skip an encoder or give up is decided by the pure [`Health`] machine; this
//! runner only builds pipelines, reads their bus and counters, and carries the actions out.

use super::AccessUnit;
use super::bitrate::BitrateHandle;
use super::door::Door;
use super::encoder::{self, Candidate, ElementForcer};
use super::health::{Action, Cause, Flow, Health, HealthSettings, Observation, Side};
use super::keyframes::KeyframeRequester;
use super::source;
use crate::config::{EncoderConfig, SourceConfig};
use crate::lock::lock;
use bytes::Bytes;
use futures_util::StreamExt;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often a running pipeline's counters are read.
const HEALTH_TICK: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("GStreamer failed to initialise: {0}")]
    Init(String),
    #[error("no H.264 encoder available for encoder.kind={kind}: {hint}")]
    NoEncoder { kind: String, hint: String },
    #[error("no H.264 encoder works: {0}")]
    AllEncodersFailed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// Access units are flowing (first start, or input back after `Lost`).
    Ready,
    /// The input is gone or stalled; the pipeline is being restarted.
    Lost(String),
    /// No encoder works at all: the daemon cannot stream and should say so and stop.
    Fatal(String),
}

/// Counters for `onair status`, updated on the streaming thread.
#[derive(Default)]
pub struct MediaStats {
    frames: AtomicU64,
    bytes: AtomicU64,
    encoder: Mutex<Option<String>>,
    bitrate: Mutex<BitrateWindow>,
}

#[derive(Default)]
struct BitrateWindow {
    start: Option<Instant>,
    bytes: u64,
    last_kbps: u32,
}

impl MediaStats {
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The encoder element running (or last run), e.g. `x264enc`.
    pub fn encoder(&self) -> Option<String> {
        lock(&self.encoder).clone()
    }

    /// Encoded bitrate over the last full second.
    pub fn bitrate_kbps(&self) -> u32 {
        let w = lock(&self.bitrate);
        match w.start {
            // A window that has not closed for 2 s means nothing is being encoded.
            Some(start) if start.elapsed() > Duration::from_secs(2) => 0,
            _ => w.last_kbps,
        }
    }

    fn record(&self, len: usize) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(len as u64, Ordering::Relaxed);
        let mut w = lock(&self.bitrate);
        let now = Instant::now();
        let start = *w.start.get_or_insert(now);
        let elapsed = now.duration_since(start);
        if elapsed >= Duration::from_secs(1) {
            w.last_kbps = (w.bytes * 8 / elapsed.as_millis().max(1) as u64) as u32;
            w.start = Some(now);
            w.bytes = 0;
        }
        w.bytes += len as u64;
    }
}

/// The running media side. Dropping it does not stop the pipeline; cancel the shutdown token
/// and await [`Media::stopped`].
pub struct Media {
    pub stats: Arc<MediaStats>,
    task: tokio::task::JoinHandle<Result<(), MediaError>>,
}

impl Media {
    /// Checks that an encoder exists and starts the pipeline runner. Pictures may take a
    /// moment: `MediaEvent::Ready` says when they flow.
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
        let runner = Runner {
            source,
            encoder,
            door,
            keyframes,
            bitrate,
            events,
            stats: stats.clone(),
            seq: Arc::new(AtomicU64::new(0)),
            candidates,
            settings: HealthSettings::default(),
            current: None,
            restart_at: None,
        };
        let task = tokio::spawn(runner.run(shutdown));
        Ok(Media { stats, task })
    }

    /// Waits until the runner has stopped (after shutdown the pipeline is in NULL state).
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
    door: Door,
    keyframes: KeyframeRequester,
    bitrate: BitrateHandle,
    events: mpsc::Sender<MediaEvent>,
    stats: Arc<MediaStats>,
    seq: Arc<AtomicU64>,
    candidates: Vec<Candidate>,
    settings: HealthSettings,
    /// The pipeline of the current run, while one runs.
    current: Option<Running>,
    restart_at: Option<Instant>,
}

impl Runner {
    async fn run(mut self, shutdown: CancellationToken) -> Result<(), MediaError> {
        let (mut health, mut actions) = Health::new(self.settings, self.candidates.len());
        let mut tick = tokio::time::interval(HEALTH_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut next = None;
            for action in actions {
                // `Start` is always the last action of a step; its outcome is observed next.
                next = self.execute(action).await?;
            }
            let observation = match next {
                Some(o) => o,
                None => tokio::select! {
                    _ = shutdown.cancelled() => break,
                    o = self.observe(&mut tick) => o,
                },
            };
            actions = health.handle(Instant::now(), observation);
        }
        self.stop_current().await;
        Ok(())
    }

    /// Waits for the next thing worth telling the health machine.
    async fn observe(&mut self, tick: &mut tokio::time::Interval) -> Observation {
        let restart_at = self.restart_at;
        let observation = match self.current.as_mut() {
            None => {
                sleep_until(restart_at).await;
                Observation::RestartDue
            }
            Some(run) => loop {
                tokio::select! {
                    _ = sleep_until(restart_at) => break Observation::RestartDue,
                    msg = run.bus.next() => match msg {
                        None => break Observation::Ended(Cause::EncoderFailed("pipeline bus closed".into())),
                        Some(msg) => if let Some(cause) = bus_cause(&msg, &run.input) {
                            break Observation::Ended(cause);
                        },
                    },
                    _ = tick.tick() => break Observation::Tick(run.flow()),
                }
            },
        };
        if observation == Observation::RestartDue {
            self.restart_at = None;
        }
        observation
    }

    /// Carries out one action; a `Start` returns what came of it.
    async fn execute(&mut self, action: Action) -> Result<Option<Observation>, MediaError> {
        match action {
            Action::Start { candidate } => {
                self.stop_current().await;
                return Ok(Some(match self.build(&self.candidates[candidate]) {
                    Ok(run) => {
                        self.current = Some(run);
                        Observation::Started
                    }
                    Err(cause) => Observation::StartFailed(cause),
                }));
            }
            Action::Stop => self.stop_current().await,
            Action::RestartAt(at) => self.restart_at = Some(at),
            Action::Ready { candidate, first } => self.ready(candidate, first).await,
            Action::Lost(cause) => {
                log::warn!(
                    "media: input lost: {cause}; retrying every {} s",
                    self.settings.restart_delay.as_secs()
                );
                let _ = self.events.send(MediaEvent::Lost(cause.to_string())).await;
            }
            Action::Skip { candidate, cause } => log::warn!(
                "media: encoder {} failed before its first frame: {cause}",
                self.candidates[candidate].element.factory()
            ),
            Action::Fatal(failures) => {
                self.stop_current().await;
                let reasons: Vec<String> = failures
                    .iter()
                    .map(|(c, cause)| format!("{}: {cause}", self.candidates[*c].element.factory()))
                    .collect();
                let err = MediaError::AllEncodersFailed(reasons.join("; "));
                let _ = self.events.send(MediaEvent::Fatal(err.to_string())).await;
                return Err(err);
            }
        }
        Ok(None)
    }

    async fn ready(&mut self, candidate: usize, first: bool) {
        let chosen = &self.candidates[candidate];
        if first {
            *lock(&self.stats.encoder) = Some(chosen.element.factory().to_string());
            log::info!(
                "media: encoder {} ({})",
                chosen.element.factory(),
                chosen.why
            );
        } else {
            log::info!("media: input back");
        }
        if let Some(run) = &self.current {
            let control = Arc::new(ElementForcer::new(
                chosen.element,
                run.encoder.clone(),
                &self.encoder,
                self.source.fps,
            ));
            self.keyframes.set_forcer(Some(control.clone()));
            self.bitrate.set_encoder(Some(control));
        }
        let _ = self.events.send(MediaEvent::Ready).await;
    }

    async fn stop_current(&mut self) {
        if let Some(run) = self.current.take() {
            self.keyframes.set_forcer(None);
            self.bitrate.set_encoder(None);
            stop_pipeline(run.pipeline).await;
        }
    }

    fn build(&self, candidate: &Candidate) -> Result<Running, Cause> {
        let capture = source::capture_factory(self.source.kind);
        if gst::ElementFactory::find(capture).is_none() {
            return Err(Cause::InputLost(format!(
                "GStreamer element {capture} is not installed"
            )));
        }
        let input =
            source::build(&self.source).map_err(|e| Cause::InputLost(format!("source: {e}")))?;
        let (enc, enc_caps) = encoder::build(candidate.element, &self.encoder, self.source.fps)
            .map_err(|e| Cause::EncoderFailed(e.to_string()))?;
        let make = |factory: &str, name: &str| {
            gst::ElementFactory::make(factory)
                .name(name)
                .build()
                .map_err(|e| Cause::EncoderFailed(format!("{factory}: {e}")))
        };
        // A short leaky queue between capture and encoder: if the encoder falls behind, old
        // raw frames are dropped instead of stalling the camera.
        let queue = make("queue", "encqueue")?;
        queue.set_property("max-size-buffers", 3u32);
        queue.set_property("max-size-bytes", 0u32);
        queue.set_property("max-size-time", 0u64);
        queue.set_property_from_str("leaky", "downstream");
        let enc_filter = make("capsfilter", "enccaps")?;
        enc_filter.set_property("caps", &enc_caps);
        let parse = make("h264parse", "parse")?;
        // SPS/PPS before every IDR: a new connection or viewer can start at any key frame.
        parse.set_property("config-interval", -1i32);
        let au_caps = gst::Caps::builder("video/x-h264")
            .field("stream-format", "byte-stream")
            .field("alignment", "au")
            .build();
        let sink = gst_app::AppSink::builder()
            .name("aus")
            .caps(&au_caps)
            .sync(false)
            .max_buffers(8)
            .drop(true)
            .build();

        let pipeline = gst::Pipeline::builder().name("onair-media").build();
        let mut chain: Vec<gst::Element> = input.clone();
        chain.push(queue);
        chain.push(enc.clone());
        chain.push(enc_filter);
        chain.push(parse);
        chain.push(sink.clone().upcast());
        pipeline
            .add_many(&chain)
            .map_err(|e| Cause::EncoderFailed(e.to_string()))?;
        gst::Element::link_many(&chain).map_err(|e| Cause::EncoderFailed(format!("link: {e}")))?;

        let counters = Arc::new(RunCounters::default());
        // Raw pictures reaching the encoder tell input trouble from encoder trouble.
        if let Some(pad) = enc.static_pad("sink") {
            let counters = counters.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                counters.pictures_in.fetch_add(1, Ordering::Relaxed);
                gst::PadProbeReturn::Ok
            });
        }
        self.install_sink(&sink, counters.clone());
        let bus = pipeline
            .bus()
            .ok_or_else(|| Cause::EncoderFailed("pipeline has no bus".into()))?;
        if let Err(e) = pipeline.set_state(gst::State::Playing) {
            // The bus says who failed; read it before giving up on this run.
            let cause =
                first_error(&bus, &input).unwrap_or_else(|| Cause::InputLost(e.to_string()));
            let _ = pipeline.set_state(gst::State::Null);
            return Err(cause);
        }
        Ok(Running {
            bus: bus.stream(),
            pipeline,
            input,
            encoder: enc,
            counters,
        })
    }

    fn install_sink(&self, sink: &gst_app::AppSink, counters: Arc<RunCounters>) {
        let door = self.door.clone();
        let keyframes = self.keyframes.clone();
        let stats = self.stats.clone();
        let seq = self.seq.clone();
        let frame = Duration::from_secs(1) / self.source.fps.max(1);
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let Some(buffer) = sample.buffer() else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                    let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
                    if keyframe {
                        keyframes.key_frame_seen();
                    }
                    stats.record(map.len());
                    counters.unit_out(Instant::now());
                    door.offer(AccessUnit {
                        data: Bytes::copy_from_slice(map.as_slice()),
                        seq: seq.fetch_add(1, Ordering::Relaxed),
                        pts: buffer
                            .pts()
                            .map(|t| Duration::from_nanos(t.nseconds()))
                            .unwrap_or_default(),
                        duration: buffer
                            .duration()
                            .map(|t| Duration::from_nanos(t.nseconds()))
                            .unwrap_or(frame),
                        keyframe,
                    });
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
    }
}

/// One run's streaming-side counters, written on GStreamer's threads.
#[derive(Default)]
struct RunCounters {
    pictures_in: AtomicU64,
    units_out: AtomicU64,
    last_unit: Mutex<Option<Instant>>,
}

impl RunCounters {
    fn unit_out(&self, now: Instant) {
        self.units_out.fetch_add(1, Ordering::Relaxed);
        *lock(&self.last_unit) = Some(now);
    }
}

struct Running {
    pipeline: gst::Pipeline,
    /// The capture side's elements: an error from one of them is input trouble.
    input: Vec<gst::Element>,
    encoder: gst::Element,
    bus: gst::bus::BusStream,
    counters: Arc<RunCounters>,
}

impl Running {
    fn flow(&self) -> Flow {
        Flow {
            last_unit: *lock(&self.counters.last_unit),
            pictures_in: self.counters.pictures_in.load(Ordering::Relaxed),
            units_out: self.counters.units_out.load(Ordering::Relaxed),
        }
    }
}

/// What a bus message means for the run: an error (blamed on the side of the element that
/// posted it) or the end of the capture.
fn bus_cause(msg: &gst::Message, input: &[gst::Element]) -> Option<Cause> {
    match msg.view() {
        gst::MessageView::Error(err) => {
            let element = msg.src().map(|s| s.name().to_string()).unwrap_or_default();
            Some(Cause::error(
                side_of(msg, input),
                format!("{element}: {}", err.error()),
            ))
        }
        gst::MessageView::Eos(_) => Some(Cause::InputLost("capture ended".into())),
        gst::MessageView::Warning(w) => {
            log::debug!(
                "media: warning from {:?}: {}",
                msg.src().map(|s| s.name()),
                w.error()
            );
            None
        }
        _ => None,
    }
}

/// Which side posted a message: one of the capture elements, or anything else.
fn side_of(msg: &gst::Message, input: &[gst::Element]) -> Side {
    match msg.src() {
        Some(src) if input.iter().any(|e| e.upcast_ref::<gst::Object>() == src) => Side::Input,
        _ => Side::Encoder,
    }
}

/// The first error waiting on the bus, blamed on its side.
fn first_error(bus: &gst::Bus, input: &[gst::Element]) -> Option<Cause> {
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
        if let gst::MessageView::Error(err) = msg.view() {
            return Some(Cause::error(side_of(&msg, input), err.error().to_string()));
        }
    }
    None
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Setting NULL can block on a device; keep it off the async threads.
async fn stop_pipeline(pipeline: gst::Pipeline) {
    let _ = tokio::task::spawn_blocking(move || {
        let _ = pipeline.set_state(gst::State::Null);
    })
    .await;
}
