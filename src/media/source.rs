//! The capture chain: camera, HDMI bridge or test pattern, delivering raw I420 video at the
//! configured size. Whatever size and rate the input has (an HDMI source switching from 1080p60
//! to 720p50, a webcam's default mode), it is scaled (keeping its aspect, with borders) and
//! thinned to at most the configured rate here; the frame pump evens the rate out. So the
//! encoder and the connection never see the input change.
//!
//! Elements are created by name with typed properties, never from a launch string assembled
//! from user input, so a device path cannot inject pipeline syntax.

use super::bridge::Pin;
use crate::config::{SourceConfig, SourceFormat, SourceKind, TestPattern};
use gstreamer as gst;
use gstreamer::prelude::*;

/// Element names in the source chain start with this, so a person reading an error sees at
/// once that it came from the capture side.
pub const NAME_PREFIX: &str = "source";

/// The source chain, in link order, ending in raw I420 video of the configured size. `pin` is
/// the size and format the device must be asked for, when it cannot adapt (a media-controller
/// pipeline set up for the HDMI source's timing).
pub fn build(
    config: &SourceConfig,
    pin: Option<Pin>,
) -> Result<Vec<gst::Element>, gst::glib::BoolError> {
    let raw_caps = gst::Caps::builder("video/x-raw")
        .field("width", config.width as i32)
        .field("height", config.height as i32)
        .field("framerate", gst::Fraction::new(config.fps as i32, 1))
        .build();
    let sized_caps = gst::Caps::builder("video/x-raw")
        .field("width", config.width as i32)
        .field("height", config.height as i32)
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
        .build();
    let mut chain = Vec::new();
    match config.kind {
        SourceKind::Test => {
            chain.push(test_pattern(config.pattern)?);
            chain.push(
                named("capsfilter", "caps")
                    .property("caps", raw_caps)
                    .build()?,
            );
            chain.push(named("videoconvert", "convert").build()?);
        }
        SourceKind::V4l2 | SourceKind::Libcamera => {
            let src = if config.kind == SourceKind::V4l2 {
                let mut b = named("v4l2src", "capture");
                if let Some(device) = &config.device {
                    b = b.property("device", device.to_string_lossy().to_string());
                }
                b.build()?
            } else {
                named("libcamerasrc", "capture").build()?
            };
            chain.push(src);
            if let Some(pin) = pin {
                let device_caps = gst::Caps::builder("video/x-raw")
                    .field("format", pin.format)
                    .field("width", pin.width as i32)
                    .field("height", pin.height as i32)
                    .build();
                chain.push(
                    named("capsfilter", "devicecaps")
                        .property("caps", device_caps)
                        .build()?,
                );
            }
            if config.format == SourceFormat::Mjpeg {
                // USB HDMI dongles deliver JPEG at useful sizes; ask for it explicitly so the
                // device is not negotiated into a low-rate raw mode.
                let jpeg_caps = gst::Caps::builder("image/jpeg")
                    .field("width", config.width as i32)
                    .field("height", config.height as i32)
                    .build();
                chain.push(
                    named("capsfilter", "jpegcaps")
                        .property("caps", jpeg_caps)
                        .build()?,
                );
                chain.push(named("jpegdec", "jpegdec").build()?);
            }
            // Thin a faster input first (less to convert), never duplicate: the pump holds
            // the last picture when the input is slower than the configured rate.
            chain.push(
                named("videorate", "rate")
                    .property("drop-only", true)
                    .property("max-rate", config.fps as i32)
                    .build()?,
            );
            chain.push(named("videoconvert", "convert").build()?);
            chain.push(
                named("videoscale", "scale")
                    .property("add-borders", true)
                    .build()?,
            );
            chain.push(
                named("capsfilter", "caps")
                    .property("caps", sized_caps)
                    .build()?,
            );
        }
    }
    let i420 = gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .build();
    chain.push(
        named("capsfilter", "format")
            .property("caps", i420)
            .build()?,
    );
    Ok(chain)
}

/// The test source for a pattern. Today each is a `videotestsrc` pattern; one that needs more
/// (a picture and a sound that must stay in step) gets its own arm here.
fn test_pattern(pattern: TestPattern) -> Result<gst::Element, gst::glib::BoolError> {
    let src = named("videotestsrc", "capture")
        .property("is-live", true)
        .build()?;
    let name = match pattern {
        TestPattern::Smpte => "smpte",
        TestPattern::Ball => "ball",
        // Every pixel new in every frame: incompressible, so the encoder spends what it is
        // allowed and the uplink carries the configured rate.
        TestPattern::Noise => "snow",
        // The sync pattern is black; its flashes are put in by the frame pump, on the
        // pipeline clock the audio beeps are timed by (`feeder.rs`).
        TestPattern::Sync => "black",
    };
    src.set_property_from_str("pattern", name);
    Ok(src)
}

fn named(factory: &'static str, role: &str) -> gst::element_factory::ElementBuilder<'static> {
    gst::ElementFactory::make(factory).name(format!("{NAME_PREFIX}-{role}"))
}

/// The GStreamer element a source kind needs, for a clear "not installed" message.
pub fn capture_factory(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Test => "videotestsrc",
        SourceKind::V4l2 => "v4l2src",
        SourceKind::Libcamera => "libcamerasrc",
    }
}
