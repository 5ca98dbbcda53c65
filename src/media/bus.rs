//! What every media pipeline does with its bus, its start and its end, in one place: the
//! capture, the encoder, and the sound's capture and encoder are separate pipelines that start,
//! fail and stop alike.

use super::assemble::{ElementError, PipelineError};
use futures_util::StreamExt;
use gstreamer as gst;
use gstreamer::prelude::*;

/// The element and its words, for an error message; `None` for any other message.
pub fn error(msg: &gst::Message) -> Option<ElementError> {
    match msg.view() {
        gst::MessageView::Error(err) => Some(ElementError {
            element: msg.src().map(|s| s.name().to_string()).unwrap_or_default(),
            message: err.error().to_string(),
        }),
        _ => None,
    }
}

/// The first error waiting on a bus (why a state change failed).
pub fn first_error(bus: &gst::Bus) -> Option<ElementError> {
    bus.pop_filtered(&[gst::MessageType::Error])
        .and_then(|msg| error(&msg))
}

/// Sets a built pipeline playing and returns its bus. If it will not play, the first error an
/// element posted says why (else GStreamer's own word), and the pipeline is set back to NULL.
pub fn start(pipeline: &gst::Pipeline) -> Result<gst::Bus, PipelineError> {
    let bus = pipeline.bus().ok_or_else(|| PipelineError::NoBus {
        pipeline: pipeline.name().to_string(),
    })?;
    if let Err(source) = pipeline.set_state(gst::State::Playing) {
        let err = match first_error(&bus) {
            Some(e) => PipelineError::Element(e),
            None => PipelineError::Refused {
                pipeline: pipeline.name().to_string(),
                source,
            },
        };
        let _ = pipeline.set_state(gst::State::Null);
        return Err(err);
    }
    Ok(bus)
}

/// The next message on a running pipeline's bus; with no pipeline running, never.
pub async fn next_message(bus: Option<&mut gst::bus::BusStream>) -> Option<gst::Message> {
    match bus {
        Some(b) => b.next().await,
        None => std::future::pending().await,
    }
}

/// Sets a pipeline to NULL off the async threads: a device can block that for seconds.
pub async fn stop(pipeline: gst::Pipeline) {
    let _ = tokio::task::spawn_blocking(move || {
        let _ = pipeline.set_state(gst::State::Null);
    })
    .await;
}
