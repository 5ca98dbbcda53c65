//! The slate: the picture the encoder gets while the input is lost, so the connection and the
//! viewers stay. It is made once at start, at exactly the configured size, and then sent again
//! and again by the frame pump (one shared buffer: it costs the encoding of a still picture).
//!
//! From `source.slate_image` (a PNG or JPEG on the data partition, scaled with borders to fit)
//! when it is set and usable; otherwise the built-in card: a plain dark colour with
//! `source.slate_text` drawn by `textoverlay` (pango) as plain text. Without `textoverlay` the
//! card is the plain colour, and the log says so.
//!
//! The slate is made at every start, so an image must not be able to stop the daemon from
//! starting: its picture size is read from its header before anything decodes it, and one
//! larger than [`MAX_IMAGE_PIXELS`] is refused (a 1.2 MB PNG can hold 20000x20000 black
//! pixels, 1.6 GB decoded: an out-of-memory kill at every start). Neither GStreamer decoder
//! can decode at a reduced scale (jpegdec does not expose libjpeg's scaling, PNG has none), so
//! the bound is on the full picture; the decoded picture is scaled in its own format first and
//! only the small result converted.

use super::assemble::{self, PipelineError};
use super::bus;
use crate::config::SourceConfig;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

/// A slate image larger than this is refused (the data partition is small; a person who put a
/// photo there by mistake gets a clear message).
pub const MAX_IMAGE_BYTES: u64 = 16 * 1024 * 1024;
/// The most pixels a slate image may have: a 4K UHD picture (3840x2160), 33 MB decoded at 8
/// bits per channel with alpha (66 MB at 16 bits). More is refused before decoding.
pub const MAX_IMAGE_PIXELS: u64 = 3840 * 2160;
/// The longest side a slate image may have (a 8192x1012 banner is fine, 8193 wide is not).
pub const MAX_IMAGE_SIDE: u32 = 8192;
/// How much of the file is read to find the picture size: a JPEG's frame header may come after
/// tens of kilobytes of metadata (EXIF, ICC profile).
const HEADER_BYTES: u64 = 256 * 1024;
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
    /// Why the configured image is not the slate (already logged once, as a warning).
    pub image_not_used: Option<String>,
}

impl Slate {
    /// What `onair status` says: what the slate is and, if the image was refused, why.
    pub fn description(&self) -> String {
        match &self.image_not_used {
            Some(why) => format!("{}; {why}", self.what),
            None => self.what.clone(),
        }
    }
}

/// Makes the slate for this source config. Never fails: the last resort is a plain colour.
pub fn make(config: &SourceConfig) -> Slate {
    let info = video_info(config);
    let mut not_used = None;
    if let Some(path) = &config.slate_image {
        match from_image(path, &info) {
            Ok(buffer) => {
                return Slate {
                    buffer,
                    what: format!("image {}", path.display()),
                    image_not_used: None,
                };
            }
            Err(e) => {
                log::warn!(
                    "media: slate image {} not used ({e}); using the built-in card",
                    path.display()
                );
                not_used = Some(format!("image {} not used: {e}", path.display()));
            }
        }
    }
    Slate {
        image_not_used: not_used,
        ..card_slate(config, &info)
    }
}

fn card_slate(config: &SourceConfig, info: &gst_video::VideoInfo) -> Slate {
    let text = (!config.slate_text.is_empty()).then_some(config.slate_text.as_str());
    let has_text = text.is_some() && gst::ElementFactory::find("textoverlay").is_some();
    if text.is_some() && !has_text {
        log::warn!(
            "media: textoverlay (pango) is not installed: the slate is a plain card without text"
        );
    }
    // textoverlay reads its text as Pango markup: "Tom & Jerry <3" would be a markup error and
    // an empty card. Escaped, it is drawn as written, as status shows it.
    let markup = text
        .filter(|_| has_text)
        .map(|t| gst::glib::markup_escape_text(t).to_string());
    match card(info, markup.as_deref()) {
        Ok(buffer) => Slate {
            buffer,
            what: if has_text {
                format!("card \"{}\"", config.slate_text)
            } else {
                "plain card".into()
            },
            image_not_used: None,
        },
        Err(e) => {
            log::warn!("media: cannot draw the slate card ({e}); using a plain colour");
            Slate {
                buffer: plain(info),
                what: "plain card".into(),
                image_not_used: None,
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
    #[error("its picture size cannot be read from its header (a PNG or JPEG is needed)")]
    UnknownSize,
    #[error(
        "{width}x{height} pixels is more than a slate image may have \
         ({MAX_IMAGE_PIXELS} pixels, e.g. 3840x2160, and at most {MAX_IMAGE_SIDE} on a side)"
    )]
    TooManyPixels { width: u32, height: u32 },
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

/// The dark card, with `markup` (Pango markup: escape plain text first) drawn on it.
fn card(info: &gst_video::VideoInfo, markup: Option<&str>) -> Result<gst::Buffer, SlateError> {
    let src = assemble::make("videotestsrc", None)?;
    src.set_property("num-buffers", 1i32);
    src.set_property("foreground-color", CARD_ARGB);
    src.set_property_from_str("pattern", "solid-color");
    let mut chain = vec![src, caps_filter(info.to_caps())?];
    if let Some(markup) = markup {
        // About a tenth of the picture height, and always readable on a small one.
        let px = (info.height() / 10).max(10);
        let overlay = assemble::make("textoverlay", None)?;
        overlay.set_property("text", markup);
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
    let mut head = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(HEADER_BYTES).read_to_end(&mut head))
        .map_err(SlateError::Read)?;
    let (width, height) = picture_size(&head).ok_or(SlateError::UnknownSize)?;
    if !size_allowed(width, height) {
        return Err(SlateError::TooManyPixels { width, height });
    }
    let filesrc = assemble::make("filesrc", None)?;
    filesrc.set_property("location", path.to_string_lossy().to_string());
    let decode = assemble::make("decodebin", None)?;
    // A second line behind the header check: a decoder whose picture is larger than the
    // bound fails to negotiate before it allocates the picture.
    let bounded = caps_filter(Ok(gst::Caps::builder("video/x-raw")
        .field("width", gst::IntRange::new(1, MAX_IMAGE_SIDE as i32))
        .field("height", gst::IntRange::new(1, MAX_IMAGE_SIDE as i32))
        .build()))?;
    let scale = assemble::make("videoscale", None)?;
    scale.set_property("add-borders", true);
    // Scaled in the decoder's format first: only the small picture is converted. Still images
    // come without a rate; the caps ask only for size and layout.
    let sized = caps_filter(Ok(gst::Caps::builder("video/x-raw")
        .field("width", info.width() as i32)
        .field("height", info.height() as i32)
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
        .build()))?;
    let convert = assemble::make("videoconvert", None)?;
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
        &[
            bounded.clone(),
            scale,
            sized,
            convert,
            filter,
            sink.clone().upcast(),
        ],
    )?;
    let first_weak = bounded.downgrade();
    decode.connect_pad_added(move |_, pad| {
        if let Some(first) = first_weak.upgrade()
            && let Some(sink_pad) = first.static_pad("sink")
            && !sink_pad.is_linked()
        {
            let _ = pad.link(&sink_pad);
        }
    });
    pull_one(&pipeline, &sink, info)
}

/// Whether a picture of this size may be decoded.
fn size_allowed(width: u32, height: u32) -> bool {
    width <= MAX_IMAGE_SIDE
        && height <= MAX_IMAGE_SIDE
        && u64::from(width) * u64::from(height) <= MAX_IMAGE_PIXELS
}

/// The picture size a file's first bytes declare, without decoding anything: a PNG's IHDR
/// (the first chunk, fixed place), or what GStreamer's type finder reads from a JPEG's frame
/// header. `None` for anything else.
fn picture_size(head: &[u8]) -> Option<(u32, u32)> {
    const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if let Some(rest) = head.strip_prefix(PNG_SIGNATURE) {
        // Chunk length (4 bytes), "IHDR", then width and height, big-endian.
        let ihdr = rest.get(4..16).filter(|c| c.starts_with(b"IHDR"))?;
        let width = u32::from_be_bytes(ihdr[4..8].try_into().ok()?);
        let height = u32::from_be_bytes(ihdr[8..12].try_into().ok()?);
        return Some((width, height));
    }
    let (caps, _) =
        gst_app::gst_base::functions::type_find_helper_for_data(None::<&gst::Object>, head).ok()?;
    let s = caps.structure(0)?;
    if s.name() != "image/jpeg" {
        return None;
    }
    let width = s.get::<i32>("width").ok()?;
    let height = s.get::<i32>("height").ok()?;
    Some((u32::try_from(width).ok()?, u32::try_from(height).ok()?))
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

    /// "Tom & Jerry <3" is drawn as written: the card equals one drawn from the escaped markup
    /// by hand, and is not the plain card (as a markup error leaves it).
    #[test]
    fn slate_text_is_drawn_as_plain_text() {
        gst::init().expect("GStreamer must initialise for this test");
        if gst::ElementFactory::find("textoverlay").is_none() {
            eprintln!("SKIPPED: no textoverlay (gstreamer1.0-x)");
            return;
        }
        let c = config(r#", "slate_text": "Tom & Jerry <3""#);
        let info = video_info(&c);
        let slate = make(&c);
        assert_eq!(slate.what, "card \"Tom & Jerry <3\"", "as status shows it");
        let bytes = |b: &gst::Buffer| b.map_readable().unwrap().as_slice().to_vec();
        let expected = card(&info, Some("Tom &amp; Jerry &lt;3")).unwrap();
        let plain = card(&info, None).unwrap();
        let without = card(&info, Some("Tom  Jerry 3")).unwrap();
        let got = bytes(&slate.buffer);
        assert!(got != bytes(&plain), "the text is on the card");
        assert!(got != bytes(&without), "`&` and `<` are on the card");
        assert!(got == bytes(&expected), "drawn as the escaped text is");
    }

    /// A PNG that declares 20000x20000 pixels (1.6 GB decoded) is refused from its header and
    /// the card used, saying why; the bound's own size is still read.
    #[test]
    fn an_image_too_large_to_decode_is_refused_from_its_header() {
        gst::init().expect("GStreamer must initialise for this test");
        let png_head = |w: u32, h: u32| {
            let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
            b.extend(w.to_be_bytes());
            b.extend(h.to_be_bytes());
            b.extend([8, 6, 0, 0, 0, 0, 0, 0, 0]);
            b
        };
        assert_eq!(
            picture_size(&png_head(20_000, 20_000)),
            Some((20_000, 20_000))
        );
        assert!(!size_allowed(20_000, 20_000));
        assert!(size_allowed(3840, 2160) && size_allowed(8192, 1012));
        assert!(!size_allowed(8193, 10) && !size_allowed(3841, 2160));
        assert_eq!(picture_size(b"not a picture"), None);
        let dir = tempfile::tempdir().unwrap();
        let huge = dir.path().join("huge.png");
        let mut bytes = png_head(20_000, 20_000);
        bytes.extend([0u8; 64]);
        std::fs::write(&huge, bytes).unwrap();
        let c = config(&format!(r#", "slate_image": "{}""#, huge.display()));
        let started = std::time::Instant::now();
        let slate = make(&c);
        assert!(started.elapsed() < Duration::from_secs(2));
        // "plain card" where textoverlay is missing (the arm64 plugins under qemu-user).
        assert!(slate.what.contains("card"), "{}", slate.what);
        let said = slate.description();
        assert!(said.contains("not used: 20000x20000"), "{said}");
        assert_eq!(slate.buffer.size(), video_info(&c).size());
    }

    #[test]
    fn a_jpegs_size_is_read_from_its_frame_header_behind_metadata() {
        gst::init().expect("GStreamer must initialise for this test");
        if gst::ElementFactory::find("jpegenc").is_none() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jpg");
        encode_one("jpegenc", 96, 64, &path);
        let jpeg = std::fs::read(&path).unwrap();
        assert_eq!(picture_size(&jpeg), Some((96, 64)));
        // Two 60 KB APP1 segments (EXIF-sized) between the start marker and the frame header.
        let mut app1 = vec![0xff, 0xe1, 0xea, 0x60];
        app1.resize(2 + 60_000, b'E');
        let padded = [&jpeg[..2], &app1, &app1, &jpeg[2..]].concat();
        assert_eq!(picture_size(&padded), Some((96, 64)));
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
        encode_one("pngenc", 64, 48, &path);
        assert_eq!(picture_size(&std::fs::read(&path).unwrap()), Some((64, 48)));

        let c = config(&format!(r#", "slate_image": "{}""#, path.display()));
        let info = video_info(&c);
        let slate = make(&c);
        assert!(slate.what.starts_with("image"), "{}", slate.what);
        assert_eq!(slate.buffer.size(), info.size());
        assert!(mean_luma(&slate.buffer, &info) > 200.0, "white, scaled");
    }

    /// One white picture of `width`x`height`, encoded by `encoder` into `path`.
    fn encode_one(encoder: &str, width: i32, height: i32, path: &std::path::Path) {
        let src = gst::ElementFactory::make("videotestsrc")
            .property("num-buffers", 1i32)
            .build()
            .unwrap();
        src.set_property_from_str("pattern", "white");
        let caps = gst::ElementFactory::make("capsfilter")
            .property(
                "caps",
                gst::Caps::builder("video/x-raw")
                    .field("width", width)
                    .field("height", height)
                    .build(),
            )
            .build()
            .unwrap();
        let convert = gst::ElementFactory::make("videoconvert").build().unwrap();
        let enc = gst::ElementFactory::make(encoder).build().unwrap();
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
    }
}
