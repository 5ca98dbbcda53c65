//! Where the access units go: a WHIP server or an RTMP server.
//!
//! An [`Output`] makes connection attempts; each success is a [`Connection`] value that owns
//! everything it opened (sockets, tasks, GStreamer elements) and releases it all in `close`.
//! The supervisor drops and recreates connections; the capture pipeline never notices.
//!
//! This module is the outputs' contract with the supervisor: what an attempt gets
//! ([`Attempt`]), what it reports ([`ConnectionEvent`], [`Failure`] with its [`FailureClass`]).
//! Protocol knowledge — which server answer is permanent, which is worth a retry — lives in
//! each output and reaches the supervisor only as a class. What every output does the same
//! way (door → key-frame sync → writer, the liveness loop, the bitrate adaptation loop) is in
//! [`pump`]; the adaptation's decisions are in [`adapt`].

pub mod adapt;
pub mod liveness;
pub mod pump;
pub mod rtmp;
pub mod whip;

use crate::media::{Door, KeyframeRequester};
use adapt::Adaptation;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// How an output classifies a failed attempt. Protocol knowledge (which HTTP status or RTMP
/// answer means what) lives in the outputs; the supervisor only knows these classes.
#[derive(Debug, Clone, PartialEq)]
pub enum FailureClass {
    /// Worth retrying on the backoff schedule (timeouts, refused connections, 5xx, …).
    Transient,
    /// Retrying cannot help until something changes (rejected stream key): go to `failed`.
    Permanent,
    /// The server said when to come back (429/503 with `Retry-After`).
    RetryAfter(Duration),
    /// The server's certificate is not valid yet by the box's clock, which is not
    /// synchronized (`crate::clock`): retried as soon as the clock changes, on the backoff
    /// schedule meanwhile, and never counted toward `max_attempts`.
    ClockBehind,
}

/// A failed attempt, classified.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub class: FailureClass,
    pub message: String,
}

/// What a connection reports after `connect` returned it.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectionEvent {
    /// The first key frame went out: media flows.
    MediaFlowing,
    /// The connection died; the reason is for people.
    Lost(String),
}

/// A connection's way to talk to the supervisor. Tagged with the attempt's generation so that
/// a late event from an old connection is recognised and ignored.
#[derive(Clone)]
pub struct EventSender {
    generation: u64,
    tx: mpsc::UnboundedSender<(u64, ConnectionEvent)>,
}

impl EventSender {
    pub fn new(generation: u64, tx: mpsc::UnboundedSender<(u64, ConnectionEvent)>) -> Self {
        EventSender { generation, tx }
    }

    pub fn send(&self, event: ConnectionEvent) {
        // The supervisor gone means the daemon is stopping; nobody needs the event then.
        let _ = self.tx.send((self.generation, event));
    }
}

/// Counters shared by every connection of one output, for `onair status`.
#[derive(Default)]
pub struct OutputStats {
    frames_sent: AtomicU64,
    audio_frames_sent: AtomicU64,
}

impl OutputStats {
    pub fn frame_sent(&self) {
        self.frames_sent.fetch_add(1, Ordering::Relaxed);
    }

    pub fn frames_sent(&self) -> u64 {
        self.frames_sent.load(Ordering::Relaxed)
    }

    pub fn audio_frame_sent(&self) {
        self.audio_frames_sent.fetch_add(1, Ordering::Relaxed);
    }

    pub fn audio_frames_sent(&self) -> u64 {
        self.audio_frames_sent.load(Ordering::Relaxed)
    }
}

/// Everything one attempt needs from the rest of the daemon.
pub struct Attempt {
    pub number: u32,
    pub door: Door,
    pub keyframes: KeyframeRequester,
    pub events: EventSender,
    pub stats: Arc<OutputStats>,
    /// The bitrate adaptation every connection of this run shares.
    pub adaptation: Arc<Adaptation>,
    /// No sign of life from the server for this long means the connection is dead. A watch,
    /// because a SIGHUP may change it while the connection is live; the liveness loop reads
    /// the current value on every check.
    pub dead_after: watch::Receiver<Duration>,
    /// The source address of the path to the server when the attempt starts: sockets bound
    /// to it leave by that uplink. `None`: bind to every interface. (RTMP cannot bind; the
    /// route to the server steers it.)
    pub local_address: Option<std::net::IpAddr>,
    /// Cancelled when the supervisor tears the attempt down; the attempt must clean up what it
    /// opened and return promptly.
    pub cancel: CancellationToken,
}

impl Attempt {
    /// `dead_after` as it is now (for what is fixed when a connection is built).
    pub fn dead_after_now(&self) -> Duration {
        *self.dead_after.borrow()
    }
}

#[async_trait::async_trait]
pub trait Output: Send + Sync {
    /// Makes one attempt. Returns once the transport is up; from then on the connection pulls
    /// access units from the door and reports `MediaFlowing` and `Lost` as events.
    async fn connect(&self, attempt: Attempt) -> Result<Box<dyn Connection>, Failure>;

    /// Releases server-side state left by an earlier run or a connection that could not be
    /// closed politely (WHIP: DELETE the remembered resource). Called at stop.
    async fn release(&self) {}

    /// A cheap look at whether the server answers at all (a TCP connect to its port, bounded
    /// by [`PROBE_TIMEOUT`]), for the supervisor's waits; `None`: this output cannot tell.
    async fn reachable(&self) -> Option<bool> {
        None
    }
}

/// A probe that has not connected within this is a "no".
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// Whether a TCP connection to `host:port` opens within [`PROBE_TIMEOUT`] (name resolution
/// included). It is closed at once; nothing is sent.
pub async fn tcp_answers(host: &str, port: u16) -> bool {
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect((host, port))).await,
        Ok(Ok(_))
    )
}

#[async_trait::async_trait]
pub trait Connection: Send {
    /// Stops media, closes everything this connection opened, and — when `polite` (the
    /// network is up) — tells the server the session is over. Bounded in time.
    async fn close(self: Box<Self>, polite: bool);
}
