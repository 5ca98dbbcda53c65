//! One RTMP connection's own small GStreamer pipeline:
//! `appsrc ! h264parse ! flvmux streamable=true ! rtmp2sink`.
//!
//! Why a pipeline per connection rather than a tee branch on the capture pipeline: the
//! capture pipeline is never touched (no pad blocking, no unlink/relink, no state changes
//! racing the encoder), an error on this bus can never reach capture, and a new connection
//! gets a new flvmux, so FLV timestamps start at 0 on every reconnect. The price is one
//! pointer hand-over per access unit (the door's `Bytes` become the buffer's memory, no copy).
//!
//! With audio, a second `appsrc` (AAC, raw, from the media side's encoder) is linked to
//! flvmux's `audio` pad: `appsrc ! flvmux.audio`, stamped on the same timeline as the video
//! (see `BranchWriter` in the parent module).

use super::location::Location;
use super::verdict::RtmpError;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::time::Duration;

/// How the branch is built. Fixed in code, not config: they are protocol tuning, not choices
/// an operator makes.
#[derive(Debug, Clone)]
pub struct BranchSettings {
    /// RTMP chunk size announced to the server. Default 4096 (as OBS): rtmp2sink's own default
    /// of 128 adds a chunk header every 128 bytes.
    pub chunk_size: u32,
    /// rtmp2sink's I/O timeout in whole seconds: TCP connect, handshake, and any single write
    /// that cannot proceed. Default: `dead_after` rounded up (at least 1).
    pub io_timeout_s: u32,
}

impl BranchSettings {
    pub fn new(dead_after: Duration) -> BranchSettings {
        BranchSettings {
            chunk_size: 4096,
            io_timeout_s: dead_after.as_secs_f64().ceil().max(1.0) as u32,
        }
    }
}

/// (element, where it comes from) — checked once at start so a missing plugin is a clear
/// start-up error, not a retry loop.
pub const ELEMENTS: [(&str, &str); 4] = [
    ("appsrc", "gstreamer1.0-plugins-base"),
    ("h264parse", "gstreamer1.0-plugins-bad"),
    ("flvmux", "gstreamer1.0-plugins-good"),
    ("rtmp2sink", "gstreamer1.0-plugins-bad"),
];

pub fn check_elements() -> Result<(), RtmpError> {
    for (element, hint) in ELEMENTS {
        if gst::ElementFactory::find(element).is_none() {
            return Err(RtmpError::MissingElement { element, hint });
        }
    }
    Ok(())
}

/// The running branch. Dropping it sets the pipeline to NULL on a helper thread, so a
/// cancelled attempt releases its socket even when nobody calls [`Branch::shutdown`].
pub struct Branch {
    pipeline: Option<gst::Pipeline>,
    appsrc: gst_app::AppSrc,
    audio: Option<gst_app::AppSrc>,
    sink: gst::Element,
}

/// The AAC caps flvmux gets; `codec_data` (the AudioSpecificConfig) once the encoder's first
/// frame brings it.
pub fn aac_caps(channels: u32, codec_data: Option<&[u8]>) -> gst::Caps {
    let mut b = gst::Caps::builder("audio/mpeg")
        .field("mpegversion", 4i32)
        .field("stream-format", "raw")
        .field("rate", crate::media::audio::RATE as i32)
        .field("channels", channels as i32);
    if let Some(data) = codec_data {
        b = b.field("codec_data", gst::Buffer::from_slice(data.to_vec()));
    }
    b.build()
}

impl Branch {
    pub fn build(
        location: &Location,
        settings: &BranchSettings,
        attempt: u32,
        audio_channels: Option<u32>,
    ) -> Result<(Branch, gst::bus::BusStream), RtmpError> {
        let appsrc = video_source();
        let parse = element("h264parse")?;
        let mux = element("flvmux")?;
        mux.set_property("streamable", true);
        let sink = rtmp_sink(location, settings)?;
        let pipeline = gst::Pipeline::builder()
            .name(format!("onair-rtmp-{attempt}"))
            .build();
        link_video(&pipeline, &appsrc, &parse, &mux, &sink)?;
        let audio = audio_channels
            .map(|channels| add_audio(&pipeline, &mux, channels))
            .transpose()?;
        let bus = pipeline
            .bus()
            .ok_or_else(|| RtmpError::Build("pipeline has no bus".into()))?;
        let stream = bus.stream();
        Ok((
            Branch {
                pipeline: Some(pipeline),
                appsrc,
                audio,
                sink,
            },
            stream,
        ))
    }

    /// Starts the branch: rtmp2sink begins TCP, handshake, connect and publish at once.
    pub fn start(&self) -> Result<(), RtmpError> {
        let Some(p) = &self.pipeline else {
            return Err(RtmpError::Build("branch already shut down".into()));
        };
        p.set_state(gst::State::Playing)
            .map(|_| ())
            .map_err(|e| RtmpError::Build(format!("cannot start the RTMP branch: {e}")))
    }

    pub fn appsrc(&self) -> gst_app::AppSrc {
        self.appsrc.clone()
    }

    pub fn audio_appsrc(&self) -> Option<gst_app::AppSrc> {
        self.audio.clone()
    }

    pub fn sink(&self) -> gst::Element {
        self.sink.clone()
    }

    /// Sets the branch to NULL. `polite`: first send EOS, so rtmp2sink tells the server the
    /// stream is over (FCUnpublish, deleteStream), and wait for it briefly on `bus`.
    pub async fn shutdown(mut self, polite: bool, bus: Option<gst::bus::BusStream>) {
        if polite && let Some(mut bus) = bus {
            use futures_util::StreamExt;
            let _ = self.appsrc.end_of_stream();
            if let Some(audio) = &self.audio {
                let _ = audio.end_of_stream();
            }
            let _ = tokio::time::timeout(EOS_WAIT, async {
                while let Some(msg) = bus.next().await {
                    if matches!(
                        msg.view(),
                        gst::MessageView::Eos(_) | gst::MessageView::Error(_)
                    ) {
                        return;
                    }
                }
            })
            .await;
        }
        // Taken only now: if this future is dropped during the EOS wait, `Drop` still stops
        // the pipeline.
        let Some(pipeline) = self.pipeline.take() else {
            return;
        };
        let stopping = tokio::task::spawn_blocking(move || {
            let _ = pipeline.set_state(gst::State::Null);
        });
        if tokio::time::timeout(NULL_WAIT, stopping).await.is_err() {
            log::warn!(
                "rtmp: the branch took more than {NULL_WAIT:?} to stop; left to finish alone"
            );
        }
    }
}

fn element(factory: &'static str) -> Result<gst::Element, RtmpError> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|e| RtmpError::Build(format!("{factory}: {e}")))
}

/// Where the connection's access units enter: H.264 byte-stream, one unit a buffer.
fn video_source() -> gst_app::AppSrc {
    let caps = gst::Caps::builder("video/x-h264")
        .field("stream-format", "byte-stream")
        .field("alignment", "au")
        .build();
    gst_app::AppSrc::builder()
        .name("video")
        .caps(&caps)
        .is_live(true)
        .format(gst::Format::Time)
        // Timestamps come from the encoder, rebased per connection (see `Timeline`).
        .do_timestamp(false)
        // Never block the writer task; it bounds the backlog itself.
        .block(false)
        .build()
}

/// rtmp2sink aimed at `location`.
fn rtmp_sink(location: &Location, settings: &BranchSettings) -> Result<gst::Element, RtmpError> {
    let sink = element("rtmp2sink")?;
    sink.set_property_from_str("scheme", location.scheme.nick());
    sink.set_property("host", &location.host);
    sink.set_property("port", i32::from(location.port));
    sink.set_property("application", &location.app);
    sink.set_property("stream", location.expose_key());
    sink.set_property("chunk-size", settings.chunk_size);
    sink.set_property("timeout", settings.io_timeout_s);
    // Units arrive at the encoder's pace already; waiting on the clock adds only latency.
    sink.set_property("sync", false);
    Ok(sink)
}

/// `appsrc ! h264parse ! flvmux.video`, `flvmux ! rtmp2sink`, in `pipeline`.
fn link_video(
    pipeline: &gst::Pipeline,
    appsrc: &gst_app::AppSrc,
    parse: &gst::Element,
    mux: &gst::Element,
    sink: &gst::Element,
) -> Result<(), RtmpError> {
    pipeline
        .add_many([appsrc.upcast_ref(), parse, mux, sink])
        .map_err(|e| RtmpError::Build(e.to_string()))?;
    appsrc
        .link(parse)
        .map_err(|e| RtmpError::Build(format!("appsrc ! h264parse: {e}")))?;
    let video_pad = mux
        .request_pad_simple("video")
        .ok_or_else(|| RtmpError::Build("flvmux has no video pad".into()))?;
    let parse_src = parse
        .static_pad("src")
        .ok_or_else(|| RtmpError::Build("h264parse has no src pad".into()))?;
    parse_src
        .link(&video_pad)
        .map_err(|e| RtmpError::Build(format!("h264parse ! flvmux: {e:?}")))?;
    mux.link(sink)
        .map_err(|e| RtmpError::Build(format!("flvmux ! rtmp2sink: {e}")))?;
    Ok(())
}

/// The AAC source, `appsrc ! flvmux.audio`, in `pipeline`.
fn add_audio(
    pipeline: &gst::Pipeline,
    mux: &gst::Element,
    channels: u32,
) -> Result<gst_app::AppSrc, RtmpError> {
    let src = gst_app::AppSrc::builder()
        .name("audio")
        .caps(&aac_caps(channels, None))
        .is_live(true)
        .format(gst::Format::Time)
        .do_timestamp(false)
        .block(false)
        .build();
    // About two seconds of AAC; beyond that the oldest goes (the video's backlog rule decides
    // whether the connection is stuck).
    src.set_property("max-buffers", 100u64);
    src.set_property_from_str("leaky-type", "downstream");
    pipeline
        .add(&src)
        .map_err(|e| RtmpError::Build(e.to_string()))?;
    let pad = mux
        .request_pad_simple("audio")
        .ok_or_else(|| RtmpError::Build("flvmux has no audio pad".into()))?;
    src.static_pad("src")
        .ok_or_else(|| RtmpError::Build("appsrc has no src pad".into()))?
        .link(&pad)
        .map_err(|e| RtmpError::Build(format!("appsrc ! flvmux.audio: {e:?}")))?;
    Ok(src)
}

/// How long a polite close waits for the EOS to pass through.
const EOS_WAIT: Duration = Duration::from_millis(500);
/// Setting NULL joins rtmp2sink's connection thread; it must not hold up a reconnect.
const NULL_WAIT: Duration = Duration::from_secs(2);

impl Drop for Branch {
    fn drop(&mut self) {
        if let Some(pipeline) = self.pipeline.take() {
            // Reached when an attempt future is dropped mid-way. Setting NULL can block
            // briefly (it joins rtmp2sink's thread); keep that off the async threads.
            std::thread::spawn(move || {
                let _ = pipeline.set_state(gst::State::Null);
            });
        }
    }
}

/// Bytes rtmp2sink has written to its socket, and whether it ever had a published
/// connection. Before the publish is accepted rtmp2sink reports all-zero stats; afterwards the
/// live (or, once closed, the last) connection's counters.
pub fn sink_stats(sink: &gst::Element) -> SinkStats {
    let stats = sink.property::<gst::Structure>("stats");
    let field = |name: &str| -> u64 {
        stats
            .get::<u64>(name)
            .or_else(|_| stats.get::<u32>(name).map(u64::from))
            .unwrap_or(0)
    };
    let out = field("out-bytes-total");
    let inb = field("in-bytes-total");
    SinkStats {
        bytes_out: out,
        published: out > 0 || inb > 0,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkStats {
    pub bytes_out: u64,
    pub published: bool,
}

/// An error message's text and its debug detail (GStreamer's source location and the GIO
/// error domain and code: for the debug log, too noisy for status). Not yet scrubbed.
pub fn error_text(msg: &gst::MessageRef) -> Option<(String, String)> {
    match msg.view() {
        gst::MessageView::Error(e) => Some((
            e.error().to_string(),
            e.debug()
                .map(|d| d.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
        )),
        _ => None,
    }
}
