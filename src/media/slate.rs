//! The slate: the picture the encoder gets while the input is lost, so the connection and the
//! viewers stay. It is made once at start, at exactly the configured size, and then sent again
//! and again by the frame pump (one shared buffer: it costs the encoding of a still picture).
//!
//! From `source.slate_image` (a PNG or JPEG on the data partition, scaled with borders to fit)
//! when it is set and readable; otherwise the built-in card: a plain dark colour with
//! `source.slate_text` drawn by `textoverlay` (pango). Without `textoverlay` the card is the
//! plain colour, and the log says so.

use super::assemble::{self, PipelineError};
use super::bus;
use crate::config::SourceConfig;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use std::path::Path;
use std::time::Duration;

/// A slate image larger than this is refused (the data partition is small; a person who put a
/// photo there by mistake gets a clear message).
pub const MAX_IMAGE_BYTES: u64 = 16 * 1024 * 1024;
/// Making the slate must not hold up the start for long.
const RENDER_TIMEOUT: Duration = Duration::from_secs(10);
/// The card's colour (dark slate blue), as ARGB for videotestsrc and as limited-range BT.601
/// Y'CbCr for the plain fallback.
const CARD_ARGB: u32 = 0xff1e_2a3a;
const CARD_YUV: (u8, u8, u8) = (50, 137, 122);

/// The slate picture and a description for the log and `onair status`.
pub struct Slate {
    pub buffer: gst::Buffer,
    pub what: String,
}

/// Makes the slate for this source config. Never fails: the last resort is a plain colour.
pub fn make(config: &SourceConfig) -> Slate {
    let info = video_info(config);
    if let Some(path) = &config.slate_image {
        match from_image(path, &info) {
            Ok(buffer) => {
                return Slate {
                    buffer,
                    what: format!("image {}", path.display()),
                };
            }
            Err(e) => log::warn!(
                "media: slate image {} not used ({e}); using the built-in card",
                path.display()
            ),
        }
    }
    let text = (!config.slate_text.is_empty()).then_some(config.slate_text.as_str());
    let has_text = text.is_some() && gst::ElementFactory::find("textoverlay").is_some();
    if text.is_some() && !has_text {
        log::warn!(
            "media: textoverlay (pango) is not installed: the slate is a plain card without text"
        );
    }
    match card(&info, text.filter(|_| has_text)) {
        Ok(buffer) => Slate {
            buffer,
            what: if has_text {
                format!("card \"{}\"", config.slate_text)
            } else {
                "plain card".into()
            },
        },
        Err(e) => {
            log::warn!("media: cannot draw the slate card ({e}); using a plain colour");
            Slate {
                buffer: plain(&info),
                what: "plain card".into(),
            }
        }
    }
}

/// The raw format the encoder is fed: I420 at the configured size and rate, square pixels.
pub fn video_info(config: &SourceConfig) -> gst_video::VideoInfo {
    gst_video::VideoInfo::builder(gst_video::VideoFormat::I420, config.width, config.height)
        .fps(gst::Fraction::new(config.fps as i32, 1))
        .par(gst::Fraction::new(1, 1))
        .build()
        .expect("config validation keeps width, height and fps in range")
}

/// A picture in `info`'s exact layout: buffers whose planes are laid out differently (a
/// device's stride, a decoder's padding) are copied into the default layout, the only one the
/// encoder's caps describe.
pub fn normalize(
    buffer: gst::Buffer,
    caps: Option<&gst::CapsRef>,
    info: &gst_video::VideoInfo,
) -> Option<gst::Buffer> {
    let meta_layout = buffer.meta::<gst_video::VideoMeta>().is_some();
    if !meta_layout && buffer.size() == info.size() {
        return Some(buffer);
    }
    let src_info = match caps.map(gst_video::VideoInfo::from_caps) {
        Some(Ok(i)) if i.width() == info.width() && i.height() == info.height() => i,
        _ => return None,
    };
    let src = gst_video::VideoFrame::from_buffer_readable(buffer, &src_info).ok()?;
    let out = gst::Buffer::with_size(info.size()).ok()?;
    let mut dst = gst_video::VideoFrame::from_buffer_writable(out, info).ok()?;
    src.copy(&mut dst).ok()?;
    Some(dst.into_buffer())
}

/// The sync pattern's flash: one white picture in the encoder's layout.
pub fn white(config: &SourceConfig) -> gst::Buffer {
    filled(&video_info(config), (235, 128, 128))
}

fn plain(info: &gst_video::VideoInfo) -> gst::Buffer {
    filled(info, CARD_YUV)
}

fn filled(info: &gst_video::VideoInfo, (y, u, v): (u8, u8, u8)) -> gst::Buffer {
    let mut buffer =
        gst::Buffer::with_size(info.size()).expect("a buffer of one small picture can be made");
    {
        let b = buffer.get_mut().expect("a new buffer is writable");
        let mut map = b.map_writable().expect("a new buffer can be mapped");
        let data = map.as_mut_slice();
        let planes = [
            (
                info.offset()[0],
                info.height() as usize * info.stride()[0] as usize,
                y,
            ),
            (
                info.offset()[1],
                info.height().div_ceil(2) as usize * info.stride()[1] as usize,
                u,
            ),
            (
                info.offset()[2],
                info.height().div_ceil(2) as usize * info.stride()[2] as usize,
                v,
            ),
        ];
        for (offset, len, value) in planes {
            data[offset..offset + len].fill(value);
        }
    }
    buffer
}

/// Why a slate picture could not be made: the log says so, and the next fallback is used.
#[derive(Debug, thiserror::Error)]
enum SlateError {
    #[error("{0}")]
    Read(#[source] std::io::Error),
    #[error("not a file")]
    NotAFile,
    #[error("{bytes} bytes is more than {MAX_IMAGE_BYTES}")]
    TooLarge { bytes: u64 },
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The decoder's word, e.g. for a file that is no image.
    #[error("{0}")]
    Decode(#[source] gst::glib::Error),
    #[error("no picture came out")]
    NoPicture,
    #[error("a sample without a buffer")]
    NoBuffer,
    #[error("unexpected picture layout")]
    Layout,
}

fn card(info: &gst_video::VideoInfo, text: Option<&str>) -> Result<gst::Buffer, SlateError> {
    let src = assemble::make("videotestsrc", None)?;
    src.set_property("num-buffers", 1i32);
    src.set_property("foreground-color", CARD_ARGB);
    src.set_property_from_str("pattern", "solid-color");
    let mut chain = vec![src, caps_filter(info.to_caps())?];
    if let Some(text) = text {
        // About a tenth of the picture height, and always readable on a small one.
        let px = (info.height() / 10).max(10);
        let overlay = assemble::make("textoverlay", None)?;
        overlay.set_property("text", text);
        overlay.set_property("font-desc", format!("Sans Bold {px}px"));
        overlay.set_property("shaded-background", false);
        overlay.set_property_from_str("valignment", "center");
        overlay.set_property_from_str("halignment", "center");
        chain.push(overlay);
        chain.push(assemble::make("videoconvert", None)?);
    }
    one_picture(chain, info)
}

fn from_image(path: &Path, info: &gst_video::VideoInfo) -> Result<gst::Buffer, SlateError> {
    let meta = std::fs::metadata(path).map_err(SlateError::Read)?;
    if !meta.is_file() {
        return Err(SlateError::NotAFile);
    }
    if meta.len() > MAX_IMAGE_BYTES {
        return Err(SlateError::TooLarge { bytes: meta.len() });
    }
    let filesrc = assemble::make("filesrc", None)?;
    filesrc.set_property("location", path.to_string_lossy().to_string());
    let decode = assemble::make("decodebin", None)?;
    let convert = assemble::make("videoconvert", None)?;
    let scale = assemble::make("videoscale", None)?;
    scale.set_property("add-borders", true);
    // Still images come without a rate; the caps ask only for size and layout.
    let caps = gst_video::VideoCapsBuilder::new()
        .format(gst_video::VideoFormat::I420)
        .width(info.width() as i32)
        .height(info.height() as i32)
        .pixel_aspect_ratio(gst::Fraction::new(1, 1))
        .build();
    let filter = caps_filter(Ok(caps))?;
    let pipeline = gst::Pipeline::new();
    let sink = sink();
    // decodebin's source pad comes once it knows the file: the rest is linked then.
    assemble::add_and_link(&pipeline, &[filesrc, decode.clone()])?;
    assemble::add_and_link(
        &pipeline,
        &[convert.clone(), scale, filter, sink.clone().upcast()],
    )?;
    let convert_weak = convert.downgrade();
    decode.connect_pad_added(move |_, pad| {
        if let Some(convert) = convert_weak.upgrade()
            && let Some(sink_pad) = convert.static_pad("sink")
            && !sink_pad.is_linked()
        {
            let _ = pad.link(&sink_pad);
        }
    });
    pull_one(&pipeline, &sink, info)
}

fn caps_filter(
    caps: Result<gst::Caps, gst::glib::BoolError>,
) -> Result<gst::Element, PipelineError> {
    let caps = caps.map_err(|source| PipelineError::Make {
        factory: "capsfilter".into(),
        source,
    })?;
    let filter = assemble::make("capsfilter", None)?;
    filter.set_property("caps", caps);
    Ok(filter)
}

fn sink() -> gst_app::AppSink {
    gst_app::AppSink::builder()
        .sync(false)
        .max_buffers(1)
        .build()
}

/// Runs `chain ! appsink` until one picture comes out.
fn one_picture(
    chain: Vec<gst::Element>,
    info: &gst_video::VideoInfo,
) -> Result<gst::Buffer, SlateError> {
    let pipeline = gst::Pipeline::new();
    let sink = sink();
    let mut all = chain;
    all.push(sink.clone().upcast());
    assemble::add_and_link(&pipeline, &all)?;
    pull_one(&pipeline, &sink, info)
}

fn pull_one(
    pipeline: &gst::Pipeline,
    sink: &gst_app::AppSink,
    info: &gst_video::VideoInfo,
) -> Result<gst::Buffer, SlateError> {
    let result = (|| {
        let bus = bus::start(pipeline)?;
        let deadline = std::time::Instant::now() + RENDER_TIMEOUT;
        // A picture, or the decoder's error (a file that is no image), whichever comes first.
        let sample = loop {
            if let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) {
                break sample;
            }
            if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error])
                && let gst::MessageView::Error(e) = msg.view()
            {
                return Err(SlateError::Decode(e.error()));
            }
            if sink.is_eos() || std::time::Instant::now() > deadline {
                return Err(SlateError::NoPicture);
            }
        };
        let buffer = sample.buffer_owned().ok_or(SlateError::NoBuffer)?;
        normalize(buffer, sample.caps(), info).ok_or(SlateError::Layout)
    })();
    let _ = pipeline.set_state(gst::State::Null);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config(extra: &str) -> SourceConfig {
        let text = format!(
            r#"{{"source": {{"kind": "test", "width": 320, "height": 240, "fps": 15 {extra}}},
                "output": {{"kind": "whip", "url": "http://127.0.0.1:9/api/whip"}}}}"#
        );
        Config::parse(&text).expect("a valid test config").source
    }

    fn mean_luma(buffer: &gst::Buffer, info: &gst_video::VideoInfo) -> f64 {
        let map = buffer.map_readable().unwrap();
        let y = &map.as_slice()[..(info.stride()[0] as usize * info.height() as usize)];
        y.iter().map(|&v| f64::from(v)).sum::<f64>() / y.len() as f64
    }

    #[test]
    fn the_built_in_card_is_the_configured_size_and_dark() {
        gst::init().expect("GStreamer must initialise for this test");
        let c = config("");
        let info = video_info(&c);
        let slate = make(&c);
        assert_eq!(slate.buffer.size(), info.size());
        let luma = mean_luma(&slate.buffer, &info);
        // The dark card (Y 50) with or without light text; far below a test pattern's ~110.
        assert!((45.0..80.0).contains(&luma), "{luma}");
        if gst::ElementFactory::find("textoverlay").is_some() {
            assert!(slate.what.contains("NO SIGNAL"), "{}", slate.what);
            assert!(luma > 51.0, "the text lightens the card: {luma}");
        }
    }

    #[test]
    fn an_unusable_image_falls_back_to_the_card() {
        gst::init().expect("GStreamer must initialise for this test");
        let dir = tempfile::tempdir().unwrap();
        let bogus = dir.path().join("slate.png");
        std::fs::write(&bogus, b"not a picture").unwrap();
        let c = config(&format!(r#", "slate_image": "{}""#, bogus.display()));
        let slate = make(&c);
        assert!(slate.what.contains("card"), "{}", slate.what);
        assert_eq!(slate.buffer.size(), video_info(&c).size());
    }

    #[test]
    fn an_image_is_scaled_to_the_configured_size() {
        gst::init().expect("GStreamer must initialise for this test");
        if gst::ElementFactory::find("pngenc").is_none() {
            return;
        }
        // A white 64x48 PNG made by GStreamer itself.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("white.png");
        let src = gst::ElementFactory::make("videotestsrc")
            .property("num-buffers", 1i32)
            .build()
            .unwrap();
        src.set_property_from_str("pattern", "white");
        let caps = gst::ElementFactory::make("capsfilter")
            .property(
                "caps",
                gst::Caps::builder("video/x-raw")
                    .field("width", 64)
                    .field("height", 48)
                    .build(),
            )
            .build()
            .unwrap();
        let convert = gst::ElementFactory::make("videoconvert").build().unwrap();
        let enc = gst::ElementFactory::make("pngenc").build().unwrap();
        let file = gst::ElementFactory::make("filesink")
            .property("location", path.to_string_lossy().to_string())
            .build()
            .unwrap();
        let p = gst::Pipeline::new();
        p.add_many([&src, &caps, &convert, &enc, &file]).unwrap();
        gst::Element::link_many([&src, &caps, &convert, &enc, &file]).unwrap();
        p.set_state(gst::State::Playing).unwrap();
        let bus = p.bus().unwrap();
        bus.timed_pop_filtered(
            gst::ClockTime::from_seconds(10),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        );
        p.set_state(gst::State::Null).unwrap();

        let c = config(&format!(r#", "slate_image": "{}""#, path.display()));
        let info = video_info(&c);
        let slate = make(&c);
        assert!(slate.what.starts_with("image"), "{}", slate.what);
        assert_eq!(slate.buffer.size(), info.size());
        assert!(mean_luma(&slate.buffer, &info) > 200.0, "white, scaled");
    }
}
