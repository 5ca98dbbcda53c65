//! What every media pipeline does with its bus and its end, in one place: the capture, the
//! encoder, and the sound's capture and encoder are separate pipelines that fail and stop alike.

use gstreamer as gst;
use gstreamer::prelude::*;

/// `element: what went wrong`, for an error message; `None` for any other message.
pub fn error_text(msg: &gst::Message) -> Option<String> {
    match msg.view() {
        gst::MessageView::Error(err) => {
            let element = msg.src().map(|s| s.name().to_string()).unwrap_or_default();
            Some(format!("{element}: {}", err.error()))
        }
        _ => None,
    }
}

/// The first error waiting on a bus (why a state change failed), as [`error_text`] says it.
pub fn first_error(bus: &gst::Bus) -> Option<String> {
    bus.pop_filtered(&[gst::MessageType::Error])
        .and_then(|msg| error_text(&msg))
}

/// Sets a pipeline to NULL off the async threads: a device can block that for seconds.
pub async fn stop(pipeline: gst::Pipeline) {
    let _ = tokio::task::spawn_blocking(move || {
        let _ = pipeline.set_state(gst::State::Null);
    })
    .await;
}
