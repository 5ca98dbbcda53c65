//! What an RTMP attempt's observations mean: connected, still pending, or failed — and if
//! failed, whether retrying can help.
//!
//! `rtmp2sink` (GStreamer 1.22) has no "published" signal. Its `stats` property turns non-zero
//! once the handshake, `connect`, `createStream` and `publish` have all succeeded; failures
//! arrive as error messages on the bus whose text names the step that failed ("'publish' cmd
//! failed: …", "Connection refused", "publish denied: …"). This module turns those
//! observations into a decision, without GStreamer or a clock of its own, so every rule is
//! tested on its own. The rules are RTMP policy; the supervisor only sees the class.
//!
//! One quirk shapes the design: nginx-rtmp answers a `deny publish` rule with
//! `NetStream.Publish.Start` and closes the connection a moment later. So "connected" means
//! the publish was accepted *and* the server kept the connection open for a short settle
//! time; a close inside that window is a rejection.

use crate::output::FailureClass;
use std::time::Duration;
use tokio::time::Instant;

/// Why an RTMP attempt or connection failed, with the class the supervisor acts on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtmpError {
    #[error("{0}")]
    Url(#[from] super::location::LocationError),
    /// A GStreamer element is not installed: retrying cannot help.
    #[error("GStreamer element {element} is not installed ({hint})")]
    MissingElement {
        element: &'static str,
        hint: &'static str,
    },
    #[error("cannot build the RTMP branch: {0}")]
    Build(String),
    /// The server refused the app, the key or the publish: retrying cannot help until the
    /// config or the server changes.
    #[error("server rejected the stream: {0}")]
    Rejected(String),
    /// The server still has a publisher on this key (typically our own previous connection
    /// that it has not noticed is dead): it goes away by itself.
    #[error("stream key busy on the server (an earlier session is still open there): {0}")]
    KeyBusy(String),
    /// Refused, reset, timed out, DNS, TLS: worth another try on the backoff schedule.
    #[error("{0}")]
    Transport(String),
    #[error("attempt cancelled")]
    Cancelled,
}

impl RtmpError {
    pub fn class(&self) -> FailureClass {
        match self {
            RtmpError::Url(_) | RtmpError::MissingElement { .. } | RtmpError::Rejected(_) => {
                FailureClass::Permanent
            }
            RtmpError::Build(_)
            | RtmpError::KeyBusy(_)
            | RtmpError::Transport(_)
            | RtmpError::Cancelled => FailureClass::Transient,
        }
    }
}

/// Classifies an error reported while connecting (before the publish was accepted). `text`
/// is the scrubbed error message plus its debug detail.
pub fn classify_connect_error(text: &str) -> RtmpError {
    let lower = text.to_ascii_lowercase();
    let timed_out = lower.contains("timed out") || lower.contains("timeout");
    if lower.contains("already exists") || lower.contains("publish.badname") {
        return RtmpError::KeyBusy(text.to_string());
    }
    if lower.contains("tls support is not available") {
        // GIO has no TLS backend: rtmps cannot work until glib-networking is installed.
        return RtmpError::Rejected(format!("{text} (install glib-networking for rtmps)"));
    }
    if timed_out {
        return RtmpError::Transport(text.to_string());
    }
    // The server answered a command of ours with an error status, or hung up on it: a
    // decision about our app, key or credentials, not a network accident.
    let refused_command = lower.contains("cmd failed") || lower.contains("cmd returned");
    let denied = lower.contains("publish denied")
        || lower.contains("not authorized")
        || lower.contains("permission denied")
        || lower.contains("requires securetoken")
        || lower.contains("connect.rejected");
    if refused_command || denied {
        return RtmpError::Rejected(text.to_string());
    }
    RtmpError::Transport(text.to_string())
}

/// What the connect loop saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// `stats` turned non-zero: the publish was accepted.
    Published,
    /// An error message from the branch (scrubbed text with debug detail). `after_publish`:
    /// `stats` already showed the publish accepted when the error was read (the server can
    /// accept and hang up within the same millisecond, before the next poll).
    Error { text: String, after_publish: bool },
    /// The branch ended its stream.
    Eos,
    /// Time passed.
    Tick,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Pending,
    Connected,
    Failed(RtmpError),
}

/// The attempt's phase. An observation that makes no sense in a phase is an error, not
/// something to paper over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// TCP, handshake, connect, createStream, publish.
    Handshaking,
    /// The publish was accepted at this instant; waiting out the settle time.
    Settling(Instant),
    Done,
}

#[derive(Debug)]
pub struct ConnectVerdict {
    phase: Phase,
    settle: Duration,
}

impl ConnectVerdict {
    pub fn new(settle: Duration) -> ConnectVerdict {
        ConnectVerdict {
            phase: Phase::Handshaking,
            settle,
        }
    }

    pub fn observe(&mut self, now: Instant, obs: Observation) -> Progress {
        let progress = match (self.phase, obs) {
            (Phase::Done, obs) => Progress::Failed(RtmpError::Build(format!(
                "observation {obs:?} after the attempt was decided"
            ))),
            (Phase::Handshaking, Observation::Published) => {
                self.phase = Phase::Settling(now);
                self.settled(now)
            }
            (Phase::Settling(_), Observation::Published) => self.settled(now),
            (Phase::Handshaking, Observation::Tick) => Progress::Pending,
            (Phase::Settling(_), Observation::Tick) => self.settled(now),
            (
                Phase::Handshaking,
                Observation::Error {
                    text,
                    after_publish: false,
                },
            ) => Progress::Failed(classify_connect_error(&text)),
            (Phase::Handshaking | Phase::Settling(_), Observation::Error { text, .. }) => {
                // Accepted, then dropped before any media: the server changed its mind about
                // this publisher (nginx-rtmp `deny publish` does exactly this).
                Progress::Failed(if text.to_ascii_lowercase().contains("timed out") {
                    RtmpError::Transport(text)
                } else {
                    RtmpError::Rejected(format!(
                        "the server closed the connection right after accepting the publish: {text}"
                    ))
                })
            }
            (_, Observation::Eos) => Progress::Failed(RtmpError::Transport(
                "the RTMP branch ended before it was connected".into(),
            )),
        };
        if !matches!(progress, Progress::Pending) {
            self.phase = Phase::Done;
        }
        progress
    }

    fn settled(&self, now: Instant) -> Progress {
        match self.phase {
            Phase::Settling(since) if now.saturating_duration_since(since) >= self.settle => {
                Progress::Connected
            }
            _ => Progress::Pending,
        }
    }
}

/// Watches the bytes the sink has written to its socket. The kernel accepts writes until the
/// socket's send buffer is full, so "no bytes for `dead_after` while we kept feeding" means
/// the server (or the path to it) stopped taking data.
#[derive(Debug)]
pub struct StallWatch {
    last_bytes: u64,
    last_progress: Instant,
    /// Units offered for sending when the byte count last moved.
    offered_at_progress: u64,
}

impl StallWatch {
    /// `offered` counts the access units the connection received from the door, whether it
    /// could push them or had to drop them because the branch was backed up.
    pub fn new(now: Instant, bytes: u64, offered: u64) -> StallWatch {
        StallWatch {
            last_bytes: bytes,
            last_progress: now,
            offered_at_progress: offered,
        }
    }

    /// Returns how long writing has been stuck once that reaches `dead_after` (passed on
    /// every call: a reload may change it while the connection is live).
    pub fn observe(
        &mut self,
        now: Instant,
        dead_after: Duration,
        bytes: u64,
        offered: u64,
    ) -> Option<Duration> {
        if bytes != self.last_bytes || offered == self.offered_at_progress {
            // Bytes moved, or there was nothing new to send (the input paused): not a stall.
            self.last_bytes = bytes;
            self.last_progress = now;
            self.offered_at_progress = offered;
            return None;
        }
        let stuck = now.saturating_duration_since(self.last_progress);
        (stuck >= dead_after).then_some(stuck)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTLE: Duration = Duration::from_millis(500);

    fn class_of(text: &str) -> FailureClass {
        classify_connect_error(text).class()
    }

    // Texts as GStreamer 1.22's rtmp2sink reports them (seen against nginx-rtmp 1.2.2).
    #[test]
    fn refused_reset_and_timeouts_are_transient() {
        for text in [
            "Connection refused: Could not connect to 127.0.0.1: Connection refused",
            "Failed to connect: Error resolving “example.invalid”: Name or service not known",
            "Connection error: connection closed remotely",
            "Failed to connect: Error receiving data: Connection reset by peer",
            "Failed to connect: 'connect' cmd failed: Socket I/O timed out",
            "Failed to connect: Unacceptable TLS certificate",
        ] {
            assert_eq!(class_of(text), FailureClass::Transient, "{text}");
        }
    }

    #[test]
    fn a_server_that_refuses_a_command_is_permanent() {
        for text in [
            // nginx-rtmp, unknown application
            "Failed to connect: 'connect' cmd failed: connection closed remotely",
            // nginx-rtmp, on_publish answered 403
            "Failed to connect: 'publish' cmd failed: connection closed remotely",
            "Failed to connect: publish denied: {\"code\": \"NetStream.Publish.Denied\"}",
            "Not authorized to connect: 'connect' cmd returned 'NetConnection.Connect.Rejected'",
            "Failed to connect: server requires secureToken but no token provided",
        ] {
            assert_eq!(class_of(text), FailureClass::Permanent, "{text}");
        }
    }

    #[test]
    fn a_busy_key_is_retried() {
        let e = classify_connect_error(
            "Failed to connect: publish denied; stream already exists: {\"code\": \"NetStream.Publish.BadName\"}",
        );
        assert!(matches!(e, RtmpError::KeyBusy(_)));
        assert_eq!(e.class(), FailureClass::Transient);
    }

    #[test]
    fn connected_only_after_the_settle_time() {
        let t0 = Instant::now();
        let mut v = ConnectVerdict::new(SETTLE);
        assert_eq!(v.observe(t0, Observation::Tick), Progress::Pending);
        assert_eq!(v.observe(t0, Observation::Published), Progress::Pending);
        assert_eq!(
            v.observe(t0 + SETTLE / 2, Observation::Tick),
            Progress::Pending
        );
        assert_eq!(
            v.observe(t0 + SETTLE, Observation::Tick),
            Progress::Connected
        );
    }

    #[test]
    fn zero_settle_connects_on_publish() {
        let t0 = Instant::now();
        let mut v = ConnectVerdict::new(Duration::ZERO);
        assert_eq!(v.observe(t0, Observation::Published), Progress::Connected);
    }

    #[test]
    fn close_right_after_publish_is_a_rejection() {
        let t0 = Instant::now();
        let mut v = ConnectVerdict::new(SETTLE);
        v.observe(t0, Observation::Published);
        let p = v.observe(
            t0 + Duration::from_millis(1),
            Observation::Error {
                text: "Connection error: connection closed remotely".into(),
                after_publish: true,
            },
        );
        match p {
            Progress::Failed(e) => assert_eq!(e.class(), FailureClass::Permanent, "{e}"),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn close_seen_together_with_the_publish_is_a_rejection() {
        let mut v = ConnectVerdict::new(SETTLE);
        let p = v.observe(
            Instant::now(),
            Observation::Error {
                text: "Connection error: connection closed remotely".into(),
                after_publish: true,
            },
        );
        assert!(
            matches!(p, Progress::Failed(RtmpError::Rejected(_))),
            "{p:?}"
        );
    }

    #[test]
    fn errors_while_handshaking_are_classified() {
        let mut v = ConnectVerdict::new(SETTLE);
        let p = v.observe(
            Instant::now(),
            Observation::Error {
                text: "Connection refused: Could not connect".into(),
                after_publish: false,
            },
        );
        assert!(matches!(p, Progress::Failed(RtmpError::Transport(_))));
    }

    #[test]
    fn nothing_is_accepted_after_a_decision() {
        let t0 = Instant::now();
        let mut v = ConnectVerdict::new(Duration::ZERO);
        assert_eq!(v.observe(t0, Observation::Published), Progress::Connected);
        assert!(matches!(
            v.observe(t0, Observation::Tick),
            Progress::Failed(RtmpError::Build(_))
        ));
    }

    #[test]
    fn stall_needs_pending_data_and_no_bytes_for_dead_after() {
        let t0 = Instant::now();
        let dead = Duration::from_secs(5);
        let mut w = StallWatch::new(t0, 100, 0);
        let s = |n| t0 + Duration::from_secs(n);
        // Bytes move: fine.
        assert_eq!(w.observe(s(1), dead, 200, 30), None);
        // Input paused: nothing pushed, nothing sent — not a stall however long.
        assert_eq!(w.observe(s(10), dead, 200, 30), None);
        // More to send, bytes stuck.
        assert_eq!(w.observe(s(11), dead, 200, 40), None);
        assert_eq!(w.observe(s(14), dead, 200, 100), None);
        assert_eq!(
            w.observe(s(15), dead, 200, 130),
            Some(Duration::from_secs(5))
        );
    }
}
