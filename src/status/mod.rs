//! Diagnostics for SSH: the status socket, its client and the flight recorder.
//!
//! The daemon serves ([`server`]) what `onair status` asks for ([`client`]) over a one-line
//! protocol ([`protocol`]); [`render`] turns the answers into text for a person.

pub mod client;
pub mod protocol;
pub mod recorder;
pub mod render;
pub mod server;
pub mod snapshot;

pub use recorder::FlightRecorder;
pub use server::{StatusContext, StatusError, StatusServer};
pub use snapshot::{StatusSnapshot, StatusSources};
