//! Putting a media pipeline together, the same way for all of them (the capture, the encoder,
//! the sound's capture and encoder, the slate's one-picture pipelines): making the elements,
//! adding and linking them, handing each buffer at the end to the code that wants it — and, when
//! any of it or the start fails, one typed error that says which element or pipeline and why.

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

/// Why a media pipeline could not be built or set playing. What a person reads of it (the log,
/// `input.reason`, `audio.reason`) is its text.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PipelineError {
    /// The element's plugin is not installed.
    #[error("GStreamer element {factory} is not installed{}", package_hint(.package))]
    Missing {
        factory: &'static str,
        /// The package that has it, when there is one to name.
        package: Option<&'static str>,
    },
    /// The factory is there but would not make the element (or its caps).
    #[error("{factory}: {source}")]
    Make {
        factory: String,
        #[source]
        source: gst::glib::BoolError,
    },
    #[error("{pipeline}: {source}")]
    Add {
        pipeline: String,
        #[source]
        source: gst::glib::BoolError,
    },
    #[error("{pipeline}: link: {source}")]
    Link {
        pipeline: String,
        #[source]
        source: gst::glib::BoolError,
    },
    #[error("pipeline {pipeline} has no bus")]
    NoBus { pipeline: String },
    /// It would not play, and an element said why on the bus.
    #[error("{0}")]
    Element(#[from] ElementError),
    /// It would not play, and no element said why.
    #[error("{pipeline} did not start: {source}")]
    Refused {
        pipeline: String,
        #[source]
        source: gst::StateChangeError,
    },
}

fn package_hint(package: &Option<&'static str>) -> String {
    package.map(|p| format!(" ({p})")).unwrap_or_default()
}

/// An error an element posted on its pipeline's bus: `element: what went wrong`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{element}: {message}")]
pub struct ElementError {
    pub element: String,
    pub message: String,
}

/// `factory` if it is installed; `package` is where a person gets it.
pub fn require(
    factory: &'static str,
    package: Option<&'static str>,
) -> Result<&'static str, PipelineError> {
    match gst::ElementFactory::find(factory) {
        Some(_) => Ok(factory),
        None => Err(PipelineError::Missing { factory, package }),
    }
}

/// A new element from `factory`, named `name` (else GStreamer numbers it: `audioconvert0`).
/// A name shows in bus errors and on the element's streaming thread.
pub fn make(factory: &str, name: Option<&str>) -> Result<gst::Element, PipelineError> {
    gst::ElementFactory::make(factory)
        .name_if_some(name)
        .build()
        .map_err(|source| PipelineError::Make {
            factory: factory.to_string(),
            source,
        })
}

/// Adds `chain` to `pipeline` and links it, first to last.
pub fn add_and_link(pipeline: &gst::Pipeline, chain: &[gst::Element]) -> Result<(), PipelineError> {
    let name = || pipeline.name().to_string();
    pipeline
        .add_many(chain)
        .map_err(|source| PipelineError::Add {
            pipeline: name(),
            source,
        })?;
    gst::Element::link_many(chain).map_err(|source| PipelineError::Link {
        pipeline: name(),
        source,
    })
}

/// Calls `each` with every sample that reaches `sink` with a buffer, on the sink's streaming
/// thread. An error from `each` goes upstream as the pipeline's flow error.
pub fn on_sample<F>(sink: &gst_app::AppSink, mut each: F)
where
    F: FnMut(&gst::Sample, &gst::BufferRef) -> Result<(), gst::FlowError> + Send + 'static,
{
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                if let Some(buffer) = sample.buffer() {
                    each(&sample, buffer)?;
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
}
