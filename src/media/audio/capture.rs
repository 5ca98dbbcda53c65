//! The audio capture: `alsasrc` (or `audiotestsrc`) ▸ audioconvert ▸ audioresample ▸ appsink,
//! on the media clock, delivering 16-bit PCM at 48 kHz and the configured channels into the
//! pump's timeline. One run per attempt to open the device; the runner stops it on trouble and
//! starts a new one on the retry cadence.

use super::RATE;
use super::timeline::PcmTimeline;
use crate::config::{AudioConfig, AudioKind};
use crate::lock::lock;
use crate::media::assemble::{self, PipelineError};
use crate::media::bus;
use crate::media::clock::{MediaClock, running_time};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Capture buffers of 10 ms: small enough that the pump's 40 ms behind the clock covers them.
const BUFFER: Duration = Duration::from_millis(10);
/// The sync pattern's beep.
pub const BEEP_HZ: f64 = 1000.0;
pub const BEEP: Duration = Duration::from_millis(100);

pub struct CaptureRun {
    pub pipeline: gst::Pipeline,
    pub bus: gst::bus::BusStream,
    /// When the run last delivered sound.
    pub last_sound: Arc<Mutex<Option<Instant>>>,
}

/// What the test source plays.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TestSound {
    /// A steady 440 Hz tone at -20 dBFS.
    Tone,
    /// 1 kHz for 100 ms from each whole second of the media clock, silence between.
    SyncBeeps,
}

/// The PCM caps everything after the capture works in.
pub fn pcm_caps(channels: u32) -> gst::Caps {
    gst::Caps::builder("audio/x-raw")
        .field("format", "S16LE")
        .field("layout", "interleaved")
        .field("rate", RATE as i32)
        .field("channels", channels as i32)
        .build()
}

pub fn factory(kind: AudioKind) -> &'static str {
    match kind {
        AudioKind::Alsa => "alsasrc",
        _ => "audiotestsrc",
    }
}

/// The package that has [`factory`]'s element.
fn package(kind: AudioKind) -> &'static str {
    match kind {
        AudioKind::Alsa => "gstreamer1.0-alsa",
        _ => "gstreamer1.0-plugins-base",
    }
}

/// Builds the capture and sets it playing; sound goes into `timeline`.
pub fn start(
    config: &AudioConfig,
    test: TestSound,
    clock: &MediaClock,
    timeline: Arc<Mutex<PcmTimeline>>,
) -> Result<CaptureRun, PipelineError> {
    let src = source(config, test)?;
    let caps = assemble::make("capsfilter", None)?;
    caps.set_property("caps", pcm_caps(config.channels));
    let sink = gst_app::AppSink::builder()
        .name("audio-capture-out")
        .sync(false)
        .max_buffers(20)
        .drop(true)
        .build();
    let pipeline = gst::Pipeline::builder().name("onair-audio-capture").build();
    clock.adopt(&pipeline);
    let chain = [
        src,
        assemble::make("audioconvert", None)?,
        assemble::make("audioresample", None)?,
        caps.clone(),
        sink.clone().upcast(),
    ];
    assemble::add_and_link(&pipeline, &chain)?;
    if config.kind == AudioKind::Test && test == TestSound::SyncBeeps {
        gate_beeps_after(&caps, config.channels);
    }
    let last_sound = install_sink(&sink, timeline);
    let bus = bus::start(&pipeline)?;
    Ok(CaptureRun {
        bus: bus.stream(),
        pipeline,
        last_sound,
    })
}

/// The device (small periods) or the test source (a tone, or beeps to be gated).
fn source(config: &AudioConfig, test: TestSound) -> Result<gst::Element, PipelineError> {
    let factory = assemble::require(factory(config.kind), Some(package(config.kind)))?;
    // Named so its streaming thread says what it is ("audio-src:src" in top and the bench).
    let src = assemble::make(factory, Some("audio-src"))?;
    match config.kind {
        AudioKind::Alsa => {
            src.set_property("device", &config.device);
            // Small periods: sound reaches the pump well within its 40 ms.
            src.set_property("latency-time", BUFFER.as_micros() as i64);
            src.set_property("buffer-time", (BUFFER * 8).as_micros() as i64);
        }
        _ => {
            src.set_property("is-live", true);
            src.set_property("samplesperbuffer", (RATE / 100) as i32);
            src.set_property_from_str("wave", "sine");
            let (freq, volume) = match test {
                TestSound::Tone => (440.0, 0.1),
                TestSound::SyncBeeps => (BEEP_HZ, 0.5),
            };
            src.set_property("freq", freq);
            src.set_property("volume", volume);
        }
    }
    Ok(src)
}

/// Gates the test tone into beeps as it leaves `element` (once it is PCM at the sent layout).
fn gate_beeps_after(element: &gst::Element, channels: u32) {
    let Some(pad) = element.static_pad("src") else {
        return;
    };
    let frame_bytes = 2 * channels as usize;
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(gst::PadProbeData::Buffer(buffer)) = info.data.as_mut() {
            gate_beeps(buffer, frame_bytes);
        }
        gst::PadProbeReturn::Ok
    });
}

/// Feeds each buffer into `timeline` at its media time; returns when sound last arrived.
fn install_sink(
    sink: &gst_app::AppSink,
    timeline: Arc<Mutex<PcmTimeline>>,
) -> Arc<Mutex<Option<Instant>>> {
    let last_sound = Arc::new(Mutex::new(None));
    let seen = last_sound.clone();
    assemble::on_sample(sink, move |sample, buffer| {
        let Some(pts) = running_time(sample, buffer.pts()) else {
            return Ok(());
        };
        let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
        lock(&timeline).feed(pts, map.as_slice());
        *lock(&seen) = Some(Instant::now());
        Ok(())
    });
    last_sound
}

/// Silences the test tone outside the first 100 ms of every whole second of its timestamps
/// (which are media time): the beeps start exactly where the flashes are centred.
fn gate_beeps(buffer: &mut gst::Buffer, frame_bytes: usize) {
    let Some(pts) = buffer.pts() else { return };
    let b = buffer.make_mut();
    let Ok(mut map) = b.map_writable() else {
        return;
    };
    let data = map.as_mut_slice();
    let ns_per_frame = 1_000_000_000 / u64::from(RATE);
    for (i, frame) in data.chunks_mut(frame_bytes).enumerate() {
        let t = pts.nseconds() + i as u64 * ns_per_frame;
        if t % 1_000_000_000 >= BEEP.as_nanos() as u64 {
            frame.fill(0);
        }
    }
}

/// What a capture bus message means: an error or end of stream ends the run.
pub fn bus_end(msg: &gst::Message) -> Option<String> {
    match msg.view() {
        gst::MessageView::Error(err) => Some(err.error().to_string()),
        gst::MessageView::Eos(_) => Some("the device ended".into()),
        _ => None,
    }
}

pub async fn stop(run: CaptureRun) {
    bus::stop(run.pipeline).await;
}
