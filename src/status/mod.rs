//! Diagnostics for SSH: the status socket, its client and the flight recorder.

pub mod recorder;
