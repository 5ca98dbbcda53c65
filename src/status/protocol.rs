//! The status socket's wire protocol, shared by the daemon's server and the `onair` client.
//!
//! It is deliberately tiny so that a person can speak it with `socat` when the CLI is not at
//! hand: the client connects, writes one request line (`status`, `history`, `retry` or
//! `retry force`, `recordings`, ending
//! in `\n` or in the end of its writing half), and the server answers with one JSON document
//! followed by `\n`, then closes. A refused request is answered with `{"error": "..."}`.
//!
//! ```text
//! $ echo status | socat - UNIX-CONNECT:/run/onair/status.sock
//! {"state":"live","since":12.5,...}
//! ```

use crate::supervisor::StreamState;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The longest request line the server reads; anything longer is refused unread.
pub const MAX_REQUEST_BYTES: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// The live [`StatusSnapshot`](super::StatusSnapshot).
    Status,
    /// The flight recorder, oldest first (a JSON array of [`Record`](crate::recorder::Record)).
    History,
    /// Ask the watchdog to leave `failed` (or cut a backoff wait short) now: [`RetryReply`],
    /// or an error naming why not (the server's `Retry-After` runs, or a retry was started a
    /// moment ago: at most one per 5 s).
    Retry,
    /// `retry`, overriding the server's `Retry-After` (`onair retry --force`); root only.
    RetryForce,
    /// The recordings on the disks in use ([`Listing`](crate::recording::Listing)).
    Recordings,
}

impl Request {
    pub fn as_str(self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::History => "history",
            Request::Retry => "retry",
            Request::RetryForce => "retry force",
            Request::Recordings => "recordings",
        }
    }

    /// Parses one request line; surrounding whitespace (the `\n`, a `\r` from a terminal) is
    /// ignored.
    pub fn parse(line: &str) -> Option<Request> {
        match line.trim() {
            "status" => Some(Request::Status),
            "history" => Some(Request::History),
            "retry" => Some(Request::Retry),
            "retry force" => Some(Request::RetryForce),
            "recordings" => Some(Request::Recordings),
            _ => None,
        }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer to `retry`: the request was handed to the watchdog, which decides what to do
/// with it (it leaves `failed` or a backoff wait; while `live` or `connecting` it does nothing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryReply {
    pub requested: bool,
    /// The public state when the request was handed over.
    pub state: StreamState,
    /// The attempt number at that moment.
    pub attempt: u32,
    /// Milliseconds the watchdog still had to wait before its next attempt, if it was waiting.
    pub next_retry_ms: Option<u64>,
}

/// The answer to a request the server could not serve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_tolerate_line_endings() {
        for r in [
            Request::Status,
            Request::History,
            Request::Retry,
            Request::RetryForce,
            Request::Recordings,
        ] {
            assert_eq!(Request::parse(r.as_str()), Some(r));
            assert_eq!(Request::parse(&format!("{r}\r\n")), Some(r));
        }
        assert_eq!(Request::parse("STATUS"), None);
        assert_eq!(Request::parse("status please"), None);
        assert_eq!(Request::parse(""), None);
    }
}
