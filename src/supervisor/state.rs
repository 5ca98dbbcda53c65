//! The stream's states as the outside world sees them.
//!
//! These names are a public contract: `onair status`, the LEDs and scripts read them. Change
//! them only on purpose, with README in the same commit.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamState {
    /// The daemon is bringing up capture and encoder.
    Starting,
    /// First connection attempt (or an attempt after a reset schedule) is under way.
    Connecting,
    /// Media is flowing to the server.
    Live,
    /// The connection dropped; attempts follow the backoff schedule.
    Reconnecting,
    /// No usable network: attempts are paused until a link comes back.
    Offline,
    /// Gave up (max attempts) or a permanent error such as a rejected stream key.
    Failed,
    /// The capture device is missing or delivers no signal.
    NoInput,
}

impl StreamState {
    pub const ALL: [StreamState; 7] = [
        StreamState::Starting,
        StreamState::Connecting,
        StreamState::Live,
        StreamState::Reconnecting,
        StreamState::Offline,
        StreamState::Failed,
        StreamState::NoInput,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StreamState::Starting => "starting",
            StreamState::Connecting => "connecting",
            StreamState::Live => "live",
            StreamState::Reconnecting => "reconnecting",
            StreamState::Offline => "offline",
            StreamState::Failed => "failed",
            StreamState::NoInput => "no_input",
        }
    }
}

impl fmt::Display for StreamState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
