//! Diagnostics for SSH: the status socket, its client and the flight recorder.

pub mod recorder;
pub mod snapshot;

pub use recorder::FlightRecorder;
pub use snapshot::{StatusSnapshot, StatusSources};
