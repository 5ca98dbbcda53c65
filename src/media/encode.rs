//! The encoding pipeline: `appsrc` (fed by the frame pump) ▸ H.264 encoder ▸ h264parse ▸
//! appsink, whose access units go to the door. It is built once and runs for the daemon's life
//! — through input loss, resolution changes and reconnects — and is only rebuilt if the encoder
//! itself fails. Its caps never change: one size, one rate, I420.
//!
//! It runs on the media clock (`clock.rs`), as the audio pipeline does, so pictures and sound
//! stamped at the same instant carry the same timestamp.

use super::AccessUnit;
use super::assemble::{self, PipelineError};
use super::bus;
use super::clock::{MediaClock, running_time};
use super::door::Door;
use super::encoder::{self, Candidate};
use super::health::{Cause, Flow};
use super::keyframes::KeyframeRequester;
use super::slate;
use super::stats::MediaStats;
use crate::config::{EncoderConfig, SourceConfig};
use crate::lock::lock;
use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Pictures waiting in front of the encoder; beyond this the oldest is dropped, so a slow
/// encoder never makes the pump (or the camera) wait.
const MAX_WAITING: u64 = 2;

/// One run's output counters, written on GStreamer's threads.
#[derive(Default)]
pub struct UnitCounters {
    units_out: AtomicU64,
    last_unit: Mutex<Option<Instant>>,
}

impl UnitCounters {
    pub fn flow(&self) -> Flow {
        Flow {
            last_unit: *lock(&self.last_unit),
            units_out: self.units_out.load(Ordering::Relaxed),
        }
    }
}

pub struct EncodeRun {
    pub pipeline: gst::Pipeline,
    pub appsrc: gst_app::AppSrc,
    pub encoder: gst::Element,
    pub bus: gst::bus::BusStream,
    pub counters: Arc<UnitCounters>,
}

/// What every encoding run shares: where units go and how they are counted.
#[derive(Clone)]
pub struct Outlet {
    pub door: Door,
    pub keyframes: KeyframeRequester,
    pub stats: Arc<MediaStats>,
    /// Counts every unit across runs, so a gap seen at the door means units were dropped.
    pub seq: Arc<AtomicU64>,
    pub clock: MediaClock,
}

/// Builds the encoding pipeline for this candidate and sets it playing.
pub fn start(
    candidate: &Candidate,
    source: &SourceConfig,
    config: &EncoderConfig,
    outlet: &Outlet,
) -> Result<EncodeRun, Cause> {
    let failed = |e: String| Cause::EncoderFailed(e);
    let built = |e: PipelineError| Cause::EncoderFailed(e.to_string());
    let info = slate::video_info(source);
    let appsrc = gst_app::AppSrc::builder()
        .name("pictures")
        .caps(&info.to_caps().map_err(|e| failed(e.to_string()))?)
        .format(gst::Format::Time)
        .is_live(true)
        .do_timestamp(false)
        .block(false)
        .build();
    // By name: these properties exist since GStreamer 1.20, and the bindings gate them.
    appsrc.set_property("max-buffers", MAX_WAITING);
    appsrc.set_property_from_str("leaky-type", "downstream");
    let (enc, enc_caps) =
        encoder::build(candidate.element, config, source.fps).map_err(|e| failed(e.to_string()))?;
    let enc_filter = assemble::make("capsfilter", Some("enccaps")).map_err(built)?;
    enc_filter.set_property("caps", &enc_caps);
    let parse = assemble::make("h264parse", Some("parse")).map_err(built)?;
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

    let pipeline = gst::Pipeline::builder().name("onair-encode").build();
    outlet.clock.adopt(&pipeline);
    let chain: Vec<gst::Element> = vec![
        appsrc.clone().upcast(),
        enc.clone(),
        enc_filter,
        parse,
        sink.clone().upcast(),
    ];
    assemble::add_and_link(&pipeline, &chain).map_err(built)?;

    let counters = Arc::new(UnitCounters::default());
    install_sink(&sink, outlet, counters.clone(), source.fps);
    let bus = bus::start(&pipeline).map_err(built)?;
    Ok(EncodeRun {
        bus: bus.stream(),
        pipeline,
        appsrc,
        encoder: enc,
        counters,
    })
}

fn install_sink(sink: &gst_app::AppSink, outlet: &Outlet, counters: Arc<UnitCounters>, fps: u32) {
    let outlet = outlet.clone();
    let frame = Duration::from_secs(1) / fps.max(1);
    assemble::on_sample(sink, move |sample, buffer| {
        let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
        let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
        if keyframe {
            outlet.keyframes.key_frame_seen();
        }
        outlet.stats.record(map.len());
        counters.units_out.fetch_add(1, Ordering::Relaxed);
        *lock(&counters.last_unit) = Some(Instant::now());
        outlet.door.offer(AccessUnit {
            data: Bytes::copy_from_slice(map.as_slice()),
            seq: outlet.seq.fetch_add(1, Ordering::Relaxed),
            pts: running_time(sample, buffer.pts()).unwrap_or_default(),
            duration: buffer
                .duration()
                .map(|t| Duration::from_nanos(t.nseconds()))
                .unwrap_or(frame),
            keyframe,
        });
        Ok(())
    });
}

/// What an encoding bus message means: any error or end of stream ends the run.
pub fn bus_cause(msg: &gst::Message) -> Option<Cause> {
    match msg.view() {
        gst::MessageView::Error(_) => bus::error(msg).map(|e| Cause::EncoderFailed(e.to_string())),
        gst::MessageView::Eos(_) => Some(Cause::EncoderFailed("encoder ended".into())),
        gst::MessageView::Warning(w) => {
            log::debug!(
                "media: encoder warning from {:?}: {}",
                msg.src().map(|s| s.name()),
                w.error()
            );
            None
        }
        _ => None,
    }
}

/// Setting NULL can block on a device (the Pi's codec); keep it off the async threads.
pub async fn stop(run: EncodeRun) {
    bus::stop(run.pipeline).await;
}
