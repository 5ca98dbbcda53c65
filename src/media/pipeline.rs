//! Runs the capture → encode → access-unit pipeline and keeps it running.
//!
//! The pipeline is built by code, element by element. It is started once and keeps running
//! across network trouble (outputs come and go at the `Door`). Only input trouble restarts it:
//! a camera unplugged, an HDMI source without signal, a device that stalls. Then it reports
//! `Lost`, retries every `RESTART_DELAY`, and reports `Ready` when pictures flow again. With
//! `encoder.kind = auto`, an encoder that fails before its first frame is skipped for the next
//! candidate; once one has worked, it stays.

use super::AccessUnit;
use super::door::Door;
use super::encoder::{self, Candidate, ElementForcer};
use super::keyframes::KeyframeRequester;
use super::source;
use crate::config::{EncoderConfig, SourceConfig};
use bytes::Bytes;
use futures_util::StreamExt;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Wait between attempts to bring a lost input back.
pub const RESTART_DELAY: Duration = Duration::from_secs(2);
/// How long a freshly started pipeline may take to deliver its first access unit (a USB
/// camera or the Pi's codec can take seconds to open).
pub const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(8);
/// No access unit for this long on a running pipeline means the input stalled.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(3);

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
            events,
            stats: stats.clone(),
            seq: Arc::new(AtomicU64::new(0)),
        };
        let task = tokio::spawn(runner.run(candidates, shutdown));
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
    events: mpsc::Sender<MediaEvent>,
    stats: Arc<MediaStats>,
    seq: Arc<AtomicU64>,
}

/// Why a pipeline run ended.
#[derive(Debug)]
enum Ended {
    Shutdown,
    /// The capture side failed or delivered nothing: input trouble.
    Input(String),
    /// The encoder side failed while pictures were arriving.
    Encoder(String),
}

impl Runner {
    async fn run(
        self,
        candidates: Vec<Candidate>,
        shutdown: CancellationToken,
    ) -> Result<(), MediaError> {
        let mut index = 0;
        let mut proven = false;
        let mut lost = false;
        let mut encoder_failures: Vec<String> = Vec::new();
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            let candidate = &candidates[index];
            let ended = match self.build(candidate) {
                Ok(run) => {
                    let ended = self
                        .watch(&run, candidate, &mut proven, &mut lost, &shutdown)
                        .await;
                    self.keyframes.set_forcer(None);
                    stop_pipeline(run.pipeline).await;
                    ended
                }
                Err(ended) => ended,
            };
            match ended {
                Ended::Shutdown => return Ok(()),
                Ended::Encoder(reason) if !proven => {
                    log::warn!(
                        "media: encoder {} failed before its first frame: {reason}",
                        candidate.element.factory()
                    );
                    encoder_failures.push(format!("{}: {reason}", candidate.element.factory()));
                    index += 1;
                    if index == candidates.len() {
                        let err = MediaError::AllEncodersFailed(encoder_failures.join("; "));
                        let _ = self.events.send(MediaEvent::Fatal(err.to_string())).await;
                        return Err(err);
                    }
                    continue;
                }
                Ended::Input(reason) | Ended::Encoder(reason) => {
                    if !lost {
                        lost = true;
                        log::warn!(
                            "media: input lost: {reason}; retrying every {}s",
                            RESTART_DELAY.as_secs()
                        );
                        let _ = self.events.send(MediaEvent::Lost(reason)).await;
                    } else {
                        log::debug!("media: still no input: {reason}");
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(RESTART_DELAY) => {}
            }
        }
    }

    fn build(&self, candidate: &Candidate) -> Result<Running, Ended> {
        let capture = source::capture_factory(self.source.kind);
        if gst::ElementFactory::find(capture).is_none() {
            return Err(Ended::Input(format!(
                "GStreamer element {capture} is not installed"
            )));
        }
        let source_chain =
            source::build(&self.source).map_err(|e| Ended::Input(format!("source: {e}")))?;
        let (enc, enc_caps) = encoder::build(candidate.element, &self.encoder, self.source.fps)
            .map_err(|e| Ended::Encoder(e.to_string()))?;
        let make = |factory: &str, name: &str| {
            gst::ElementFactory::make(factory)
                .name(name)
                .build()
                .map_err(|e| Ended::Encoder(format!("{factory}: {e}")))
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
        let mut chain: Vec<gst::Element> = source_chain;
        chain.push(queue);
        chain.push(enc.clone());
        chain.push(enc_filter);
        chain.push(parse);
        chain.push(sink.clone().upcast());
        pipeline
            .add_many(&chain)
            .map_err(|e| Ended::Encoder(e.to_string()))?;
        gst::Element::link_many(&chain).map_err(|e| Ended::Encoder(format!("link: {e}")))?;

        // Raw frames reaching the encoder tell input trouble from encoder trouble.
        let raw_in = Arc::new(AtomicU64::new(0));
        if let Some(pad) = enc.static_pad("sink") {
            let raw_in = raw_in.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                raw_in.fetch_add(1, Ordering::Relaxed);
                gst::PadProbeReturn::Ok
            });
        }
        let last_au = Arc::new(Mutex::new(None::<Instant>));
        self.install_sink(&sink, last_au.clone());
        let bus = pipeline
            .bus()
            .ok_or_else(|| Ended::Encoder("pipeline has no bus".into()))?;
        let run = Running {
            pipeline,
            encoder: enc,
            bus,
            raw_in,
            last_au,
        };
        if let Err(e) = run.pipeline.set_state(gst::State::Playing) {
            // The bus says who failed; read it before giving up on this run.
            let reason = first_error(&run.bus).unwrap_or_else(|| (true, e.to_string()));
            let ended = if reason.0 {
                Ended::Input(reason.1)
            } else {
                Ended::Encoder(reason.1)
            };
            let _ = run.pipeline.set_state(gst::State::Null);
            return Err(ended);
        }
        Ok(run)
    }

    fn install_sink(&self, sink: &gst_app::AppSink, last_au: Arc<Mutex<Option<Instant>>>) {
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
                    *lock(&last_au) = Some(Instant::now());
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

    /// Watches a running pipeline until it fails, stalls or shutdown is asked.
    async fn watch(
        &self,
        run: &Running,
        candidate: &Candidate,
        proven: &mut bool,
        lost: &mut bool,
        shutdown: &CancellationToken,
    ) -> Ended {
        let started = Instant::now();
        let mut flowing = false;
        let mut bus = run.bus.stream();
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ended::Shutdown,
                msg = bus.next() => {
                    let Some(msg) = msg else {
                        return Ended::Encoder("pipeline bus closed".into());
                    };
                    match msg.view() {
                        gst::MessageView::Error(err) => {
                            let from_source = msg
                                .src()
                                .is_some_and(|s| s.name().starts_with(source::NAME_PREFIX));
                            let reason = format!(
                                "{}: {}",
                                msg.src().map(|s| s.name().to_string()).unwrap_or_default(),
                                err.error()
                            );
                            return if from_source {
                                Ended::Input(reason)
                            } else {
                                Ended::Encoder(reason)
                            };
                        }
                        gst::MessageView::Eos(_) => return Ended::Input("capture ended".into()),
                        gst::MessageView::Warning(w) => {
                            log::debug!("media: warning from {:?}: {}", msg.src().map(|s| s.name()), w.error());
                        }
                        _ => {}
                    }
                }
                _ = tick.tick() => {
                    let last = *lock(&run.last_au);
                    match last {
                        Some(_) if !flowing => {
                            flowing = true;
                            if !*proven {
                                *proven = true;
                                *lock(&self.stats.encoder) = Some(candidate.element.factory().to_string());
                                log::info!("media: encoder {} ({})", candidate.element.factory(), candidate.why);
                            }
                            self.keyframes.set_forcer(Some(Arc::new(ElementForcer::new(
                                candidate.element,
                                run.encoder.clone(),
                                &self.encoder,
                                self.source.fps,
                            ))));
                            if *lost {
                                log::info!("media: input back");
                            }
                            *lost = false;
                            let _ = self.events.send(MediaEvent::Ready).await;
                        }
                        Some(at) if at.elapsed() > STALL_TIMEOUT => {
                            return self.stalled(run, &format!("no pictures for {} s", STALL_TIMEOUT.as_secs()));
                        }
                        None if started.elapsed() > FIRST_FRAME_TIMEOUT => {
                            return self.stalled(run, &format!("no pictures within {} s of start", FIRST_FRAME_TIMEOUT.as_secs()));
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// A stall is the encoder's fault if raw frames were still reaching it lately.
    fn stalled(&self, run: &Running, what: &str) -> Ended {
        let before = run.raw_in.load(Ordering::Relaxed);
        // The counter is cumulative; compare against the frames that became access units.
        if before > self.stats.frames() + 10 {
            Ended::Encoder(format!("{what} (the encoder is not producing output)"))
        } else {
            Ended::Input(what.to_string())
        }
    }
}

struct Running {
    pipeline: gst::Pipeline,
    encoder: gst::Element,
    bus: gst::Bus,
    raw_in: Arc<AtomicU64>,
    last_au: Arc<Mutex<Option<Instant>>>,
}

/// The first error waiting on the bus: (came from the capture side, text).
fn first_error(bus: &gst::Bus) -> Option<(bool, String)> {
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
        if let gst::MessageView::Error(err) = msg.view() {
            let from_source = msg
                .src()
                .is_some_and(|s| s.name().starts_with(source::NAME_PREFIX));
            return Some((from_source, err.error().to_string()));
        }
    }
    None
}

/// Setting NULL can block on a device; keep it off the async threads.
async fn stop_pipeline(pipeline: gst::Pipeline) {
    let _ = tokio::task::spawn_blocking(move || {
        let _ = pipeline.set_state(gst::State::Null);
    })
    .await;
}

/// See `keyframes::lock`.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
