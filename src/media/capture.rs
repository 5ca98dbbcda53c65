//! One run of the capture: the device prepared (an HDMI bridge's EDID loaded, its timings queried
//! and set: `bridge.rs`), the
//! source chain from `source.rs` ending in an appsink that hands each picture to the frame
//! pump's mailbox. A run is started and stopped as a whole (on loss, on new timings); the
//! encoder behind the pump never notices.

use super::assemble::{self, PipelineError};
use super::bridge::{self, Pin, Prepared};
use super::bus;
use super::feeder::Mailbox;
use super::health::Cause;
use super::slate;
use super::source;
use crate::config::{SourceConfig, SourceKind};
use crate::lock::lock;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What the process environment must say before GStreamer starts (`main` sets it while the
/// process is still single-threaded, unless the person running it did).
///
/// GStreamer 1.22's v4l2src, on an in-stream source change (new timings, signal lost), orphans
/// its buffer pool and never frees it: on vivid every change left one more handle on the device
/// (and its capture buffers) in the daemon, and those handles keep an unplugged driver from
/// unloading. `GST_V4L2_FORCE_DRAIN` makes it stop the pool normally instead; measured on vivid,
/// the handles then stay at one per capture.
pub const GST_ENVIRONMENT: &[(&str, &str)] = &[("GST_V4L2_FORCE_DRAIN", "1")];

/// The test source's simulated signal: while lost, its pictures are dropped before the
/// capture's end, as a stalled camera's never arrive (`source.kind = test` only; toggled by
/// SIGUSR1 for tests and demonstrations).
#[derive(Clone, Default)]
pub struct TestSignal(Arc<AtomicBool>);

impl TestSignal {
    pub fn toggle(&self) -> bool {
        !self.0.fetch_xor(true, Ordering::SeqCst)
    }

    pub fn lost(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What a run learned of its input, for the log and `onair status`.
#[derive(Default)]
pub struct RunCounters {
    last_frame: Mutex<Option<Instant>>,
    /// The input's own format as negotiated at the device, e.g. `640x480 YUY2 60/1`.
    format: Mutex<Option<String>>,
}

impl RunCounters {
    pub fn last_frame(&self) -> Option<Instant> {
        *lock(&self.last_frame)
    }

    pub fn format(&self) -> Option<String> {
        lock(&self.format).clone()
    }
}

pub struct CaptureRun {
    pub pipeline: gst::Pipeline,
    pub bus: gst::bus::BusStream,
    pub counters: Arc<RunCounters>,
}

/// Before a capture starts: an HDMI bridge gets its EDID and is set to the timings its source
/// sends (V4L2 requires the timings to be set before streaming; they are what `v4l2src` then
/// negotiates), see `bridge.rs`. No signal is a failed start. Nothing to do for other sources.
/// Blocking ioctls: call it off the async threads.
pub fn prepare(config: &SourceConfig) -> Option<Prepared> {
    if config.kind != SourceKind::V4l2 {
        return None;
    }
    let device = config.device.as_ref()?;
    Some(bridge::prepare(device, &config.edid))
}

/// Builds the capture and sets it playing. `first_frame` hears once when the first picture of
/// the run arrives, so the switch from the slate does not wait for the next health tick.
pub fn start(
    config: &SourceConfig,
    pin: Option<Pin>,
    mailbox: Mailbox,
    test_signal: &TestSignal,
    first_frame: mpsc::UnboundedSender<()>,
) -> Result<CaptureRun, Cause> {
    let lost = |e: PipelineError| Cause::InputLost(e.to_string());
    assemble::require(source::capture_factory(config.kind), None).map_err(lost)?;
    let chain = source::build(config, pin).map_err(|e| Cause::InputLost(format!("source: {e}")))?;
    let info = slate::video_info(config);
    let sink = gst_app::AppSink::builder()
        .name(format!("{}-out", source::NAME_PREFIX))
        .caps(
            &gst_video::VideoCapsBuilder::new()
                .format(gst_video::VideoFormat::I420)
                .width(config.width as i32)
                .height(config.height as i32)
                .build(),
        )
        .sync(false)
        .max_buffers(1)
        .drop(true)
        .build();
    let pipeline = gst::Pipeline::builder().name("onair-capture").build();
    let mut all = chain.clone();
    all.push(sink.clone().upcast());
    assemble::add_and_link(&pipeline, &all).map_err(lost)?;

    if config.kind == SourceKind::Test
        && let Some(pad) = chain[0].static_pad("src")
    {
        let signal = test_signal.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            if signal.lost() {
                gst::PadProbeReturn::Drop
            } else {
                gst::PadProbeReturn::Ok
            }
        });
    }

    let counters = Arc::new(RunCounters::default());
    let device_pad = chain[0].static_pad("src");
    let run_counters = counters.clone();
    let mut first = Some(first_frame);
    assemble::on_sample(&sink, move |sample, buffer| {
        *lock(&run_counters.last_frame) = Some(Instant::now());
        if let Some(tx) = first.take() {
            *lock(&run_counters.format) = device_pad
                .as_ref()
                .and_then(|p| p.current_caps())
                .map(|c| describe(&c));
            let _ = tx.send(());
        }
        if let Some(picture) = slate::normalize(buffer.to_owned(), sample.caps(), &info) {
            mailbox.offer(picture);
        }
        Ok(())
    });

    let bus = bus::start(&pipeline).map_err(lost)?;
    Ok(CaptureRun {
        bus: bus.stream(),
        pipeline,
        counters,
    })
}

/// What a capture bus message means: an error or the end of the capture ends the run.
pub fn bus_cause(msg: &gst::Message) -> Option<Cause> {
    match msg.view() {
        gst::MessageView::Error(_) => bus::error(msg).map(|e| Cause::InputLost(e.to_string())),
        gst::MessageView::Eos(_) => Some(Cause::InputLost("capture ended".into())),
        gst::MessageView::Warning(w) => {
            log::debug!(
                "media: capture warning from {:?}: {}",
                msg.src().map(|s| s.name()),
                w.error()
            );
            None
        }
        _ => None,
    }
}

/// `640x480 YUY2 @60/1` from the device's negotiated caps.
fn describe(caps: &gst::CapsRef) -> String {
    let Some(s) = caps.structure(0) else {
        return caps.to_string();
    };
    let w = s.get::<i32>("width").unwrap_or(0);
    let h = s.get::<i32>("height").unwrap_or(0);
    let format = s
        .get::<&str>("format")
        .map(str::to_string)
        .unwrap_or_else(|_| s.name().to_string());
    match s.get::<gst::Fraction>("framerate") {
        Ok(f) if f.numer() > 0 && f.denom() == 1 => format!("{w}x{h} {format} @{}", f.numer()),
        Ok(f) if f.numer() > 0 => format!(
            "{w}x{h} {format} @{:.2}",
            f64::from(f.numer()) / f64::from(f.denom())
        ),
        _ => format!("{w}x{h} {format}"),
    }
}

pub async fn stop(run: CaptureRun) {
    bus::stop(run.pipeline).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::media::feeder::{Feeder, FeederStats};
    use crate::media::keyframes::KeyframeRequester;

    /// A stopped capture leaves nothing alive: a device's handle lives as long as its element.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_stopped_capture_is_freed() {
        gst::init().expect("GStreamer must initialise for this test");
        let config = Config::parse(
            r#"{"source": {"kind": "test", "width": 160, "height": 120, "fps": 30},
                "output": {"kind": "whip", "url": "http://127.0.0.1:9/api/whip"}}"#,
        )
        .expect("valid")
        .source;
        let slate = slate::make(&config);
        let feeder = Feeder::start(
            30,
            slate.buffer,
            None,
            KeyframeRequester::new(),
            Arc::new(FeederStats::default()),
        )
        .expect("pump");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let run =
            start(&config, None, feeder.mailbox(), &TestSignal::default(), tx).expect("start");
        tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
            .await
            .expect("a first frame");
        let weak_pipeline = run.pipeline.downgrade();
        let weak_source = run
            .pipeline
            .by_name("source-capture")
            .expect("the source")
            .downgrade();
        stop(run).await;
        assert!(weak_pipeline.upgrade().is_none(), "the pipeline lives on");
        assert!(
            weak_source.upgrade().is_none(),
            "the source element lives on"
        );
    }
}
