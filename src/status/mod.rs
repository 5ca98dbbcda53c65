//! Diagnostics for SSH: the status socket and its client (the flight recorder they serve lives
//! in [`crate::recorder`], where the supervisor writes it).
//!
//! The daemon serves ([`server`]) what `onair status` asks for ([`client`]) over a one-line
//! protocol ([`protocol`]); [`render`] turns the answers into text for a person.

pub mod client;
pub mod data_partition;
pub mod protocol;
pub mod render;
pub mod server;
pub mod snapshot;
pub mod update;

pub use crate::recorder::FlightRecorder;
pub use data_partition::DataPartition;
pub use server::{StatusContext, StatusError, StatusServer};
pub use snapshot::{StatusSnapshot, StatusSources};
