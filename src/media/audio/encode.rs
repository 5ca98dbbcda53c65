//! The audio encoding pipeline: `appsrc` (fed by the pump, an unbroken PCM stream) ▸ level ▸
//! audioconvert ▸ Opus or AAC encoder ▸ appsink, whose frames go to the door's audio lane. It
//! runs on the media clock for the daemon's life, through any capture trouble.
//!
//! Which codec: Opus 48 kHz stereo for WHIP (the one audio codec Broadcast Box and browsers
//! take), AAC for RTMP (flvmux and every RTMP ingest). AAC encoders differ by platform, so the
//! first that exists is used: `fdkaacenc` (Buildroot), `voaacenc` (Debian's plugins-bad),
//! `avenc_aac` (libav).

use super::capture::pcm_caps;
use super::{AudioCodec, AudioUnit, RATE};
use crate::config::AudioConfig;
use crate::media::assemble::{self, PipelineError};
use crate::media::av_offset;
use crate::media::bus;
use crate::media::clock::{MediaClock, running_time};
use crate::media::door::Door;
use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::time::Duration;

/// AAC encoders in order of preference, with the package that has each.
pub const AAC_ENCODERS: [(&str, &str); 3] = [
    ("fdkaacenc", "gst1-plugins-bad with fdk-aac"),
    ("voaacenc", "gstreamer1.0-plugins-bad"),
    ("avenc_aac", "gstreamer1.0-libav"),
];

/// No encoder for the codec the output carries: a broken install, found at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoEncoder {
    #[error("no Opus encoder: install opusenc (gstreamer1.0-plugins-base)")]
    Opus,
    #[error("no AAC encoder: install one of {}", aac_choices())]
    Aac,
}

fn aac_choices() -> String {
    let all: Vec<String> = AAC_ENCODERS
        .iter()
        .map(|(e, p)| format!("{e} ({p})"))
        .collect();
    all.join(", ")
}

/// The encoder element for `codec`: the first that exists.
pub fn choose(codec: AudioCodec, exists: impl Fn(&str) -> bool) -> Result<&'static str, NoEncoder> {
    match codec {
        AudioCodec::Opus if exists("opusenc") => Ok("opusenc"),
        AudioCodec::Opus => Err(NoEncoder::Opus),
        AudioCodec::Aac => AAC_ENCODERS
            .iter()
            .find(|(e, _)| exists(e))
            .map(|(e, _)| *e)
            .ok_or(NoEncoder::Aac),
    }
}

pub struct EncodeRun {
    pub pipeline: gst::Pipeline,
    pub appsrc: gst_app::AppSrc,
    pub bus: gst::bus::BusStream,
}

/// Channels sent: Opus is always stereo (what Broadcast Box accepts), AAC as captured.
pub fn sent_channels(codec: AudioCodec, config: &AudioConfig) -> u32 {
    match codec {
        AudioCodec::Opus => 2,
        AudioCodec::Aac => config.channels,
    }
}

/// Builds the encoding pipeline and sets it playing; its frames go to the door's audio lane.
pub fn start(
    codec: AudioCodec,
    element: &str,
    config: &AudioConfig,
    clock: &MediaClock,
    door: Door,
) -> Result<EncodeRun, PipelineError> {
    let appsrc = pcm_entrance(config);
    let sink = frames_exit(codec);
    let pipeline = gst::Pipeline::builder().name("onair-audio-encode").build();
    clock.adopt(&pipeline);
    let mut chain = vec![appsrc.clone().upcast()];
    chain.extend(encoding_chain(codec, element, config)?);
    chain.push(sink.clone().upcast());
    assemble::add_and_link(&pipeline, &chain)?;
    install_sink(&sink, codec, config.offset_ms, door);
    let bus = bus::start(&pipeline)?;
    Ok(EncodeRun {
        bus: bus.stream(),
        pipeline,
        appsrc,
    })
}

/// Where the pump's PCM goes in; a slow encoder drops the oldest rather than hold the pump.
fn pcm_entrance(config: &AudioConfig) -> gst_app::AppSrc {
    let appsrc = gst_app::AppSrc::builder()
        // Its streaming thread ("audio-pcm:src") runs the level meter and the encoder.
        .name("audio-pcm")
        .caps(&pcm_caps(config.channels))
        .format(gst::Format::Time)
        .is_live(true)
        .do_timestamp(false)
        .block(false)
        .build();
    appsrc.set_property("max-buffers", 10u64);
    appsrc.set_property_from_str("leaky-type", "downstream");
    appsrc
}

/// level (the status's peak, once a second) ▸ audioconvert ▸ the channels sent ▸ the encoder.
fn encoding_chain(
    codec: AudioCodec,
    element: &str,
    config: &AudioConfig,
) -> Result<[gst::Element; 4], PipelineError> {
    let level = assemble::make("level", None)?;
    level.set_property("interval", gst::ClockTime::SECOND.nseconds());
    level.set_property("post-messages", true);
    let convert = assemble::make("audioconvert", None)?;
    let caps = assemble::make("capsfilter", None)?;
    caps.set_property("caps", pcm_caps(sent_channels(codec, config)));
    let enc = assemble::make(element, None)?;
    let bps = config.bitrate_kbps * 1000;
    // By string: the property is an int in some encoders and an int64 in libav's.
    enc.set_property_from_str("bitrate", &bps.to_string());
    if element == "opusenc" {
        enc.set_property_from_str("frame-size", "20");
    }
    Ok([level, convert, caps, enc])
}

/// Where the encoded frames come out: Opus, or raw AAC (what flvmux takes).
fn frames_exit(codec: AudioCodec) -> gst_app::AppSink {
    let caps = match codec {
        AudioCodec::Opus => gst::Caps::builder("audio/x-opus").build(),
        AudioCodec::Aac => gst::Caps::builder("audio/mpeg")
            .field("mpegversion", 4i32)
            .field("stream-format", "raw")
            .build(),
    };
    gst_app::AppSink::builder()
        .name("audio-out")
        .caps(&caps)
        .sync(false)
        .max_buffers(20)
        .drop(true)
        .build()
}

/// Hands each frame to the door, moved on the media timeline as `av_offset.rs` says.
fn install_sink(sink: &gst_app::AppSink, codec: AudioCodec, offset_ms: i32, door: Door) {
    let nominal = match codec {
        AudioCodec::Opus => Duration::from_millis(20),
        AudioCodec::Aac => Duration::from_nanos(1024 * 1_000_000_000 / u64::from(RATE)),
    };
    assemble::on_sample(sink, move |sample, buffer| {
        let Some(pts) = running_time(sample, buffer.pts())
            .and_then(|encoded| av_offset::sound_pts(encoded, codec, offset_ms))
        else {
            return Ok(());
        };
        let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
        door.offer_audio(AudioUnit {
            data: Bytes::copy_from_slice(map.as_slice()),
            pts,
            duration: buffer
                .duration()
                .map(|d| Duration::from_nanos(d.nseconds()))
                .unwrap_or(nominal),
            codec,
            codec_data: codec_data(sample),
        });
        Ok(())
    });
}

/// AAC's AudioSpecificConfig, from the caps the encoder set; `None` for Opus.
fn codec_data(sample: &gst::Sample) -> Option<Bytes> {
    let caps = sample.caps()?;
    let buffer = caps.structure(0)?.get::<gst::Buffer>("codec_data").ok()?;
    let map = buffer.map_readable().ok()?;
    Some(Bytes::copy_from_slice(&map))
}

/// At or below this, `level`'s peak is digital silence: it does not report all-zero samples
/// as -inf but as a floor (-350 dB with GStreamer 1.22, seen with the emulated box's loopback
/// card), which status would otherwise show as a level.
const DIGITAL_SILENCE_DB: f64 = -300.0;

/// The loudest channel's peak from a `level` message, in dBFS (-inf for digital silence).
pub fn peak_dbfs(msg: &gst::Message) -> Option<f64> {
    let gst::MessageView::Element(e) = msg.view() else {
        return None;
    };
    let s = e.structure()?;
    if s.name() != "level" {
        return None;
    }
    let peaks = s.get::<gst::glib::ValueArray>("peak").ok()?;
    loudest(peaks.iter().filter_map(|v| v.get::<f64>().ok()))
}

/// The loudest of the channels' peaks (dB), with `level`'s floor as -inf.
fn loudest(peaks: impl Iterator<Item = f64>) -> Option<f64> {
    peaks.reduce(f64::max).map(|db| {
        if db <= DIGITAL_SILENCE_DB {
            f64::NEG_INFINITY
        } else {
            db
        }
    })
}

/// An error or end of stream ends the encoding run.
pub fn bus_end(msg: &gst::Message) -> Option<String> {
    match msg.view() {
        gst::MessageView::Error(_) => bus::error(msg).map(|e| e.to_string()),
        gst::MessageView::Eos(_) => Some("the audio encoder ended".into()),
        _ => None,
    }
}

pub async fn stop(run: EncodeRun) {
    bus::stop(run.pipeline).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_aac_encoder_that_exists_is_chosen() {
        assert_eq!(
            choose(AudioCodec::Aac, |e| e == "voaacenc" || e == "avenc_aac"),
            Ok("voaacenc")
        );
        assert_eq!(choose(AudioCodec::Aac, |_| true), Ok("fdkaacenc"));
        let err = choose(AudioCodec::Aac, |_| false).unwrap_err().to_string();
        assert!(
            err.contains("voaacenc") && err.contains("fdkaacenc"),
            "{err}"
        );
        assert_eq!(choose(AudioCodec::Opus, |e| e == "opusenc"), Ok("opusenc"));
        assert!(choose(AudioCodec::Opus, |_| false).is_err());
    }

    #[test]
    fn the_loudest_channel_is_the_peak_and_levels_floor_is_digital_silence() {
        let l = |p: &[f64]| loudest(p.iter().copied());
        assert_eq!(l(&[-350.0, -6.5]), Some(-6.5));
        assert_eq!(l(&[-80.0, -120.0]), Some(-80.0));
        assert_eq!(l(&[-350.0, -350.0]), Some(f64::NEG_INFINITY));
        assert_eq!(l(&[f64::NEG_INFINITY]), Some(f64::NEG_INFINITY));
        assert_eq!(l(&[]), None);
    }
}
