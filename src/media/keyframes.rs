//! Forced key frames, coalesced.
//!
//! A viewer (or a new connection) needs a key frame to show a picture. Broadcast Box sends a
//! PLI for every non-key-frame packet while its viewers wait, with no rate limit; forcing a
//! key frame for each would make a key-frame storm that eats the bitrate. So requests from the
//! server are coalesced: at most one forced key frame per `MIN_INTERVAL`, and none while one is
//! already on its way. A new connection's request skips the interval (it must start with a key
//! frame) but still joins a pending one.

use crate::lock::lock;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// At most one forced key frame per this interval in answer to server requests.
pub const MIN_INTERVAL: Duration = Duration::from_millis(500);
/// A request the encoder never answered stops counting as pending after this long, so a lost
/// request cannot block key frames forever.
pub const PENDING_TIMEOUT: Duration = Duration::from_millis(1000);

/// Who asked for a key frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// PLI/FIR from the server: rate-limited.
    ServerRequest,
    /// A new connection: must start with a key frame, not rate-limited.
    NewConnection,
    /// The picture switches between the input and the slate: the key frame must come at the
    /// switch, so neither the interval nor a request still pending holds it back.
    InputSwitch,
}

/// The pure decision: should this request force a key frame now?
#[derive(Debug, Default)]
pub struct KeyframeGate {
    last_forced: Option<Instant>,
    pending_since: Option<Instant>,
}

impl KeyframeGate {
    pub fn should_force(&mut self, now: Instant, urgency: Urgency) -> bool {
        if urgency == Urgency::InputSwitch {
            self.last_forced = Some(now);
            self.pending_since = Some(now);
            return true;
        }
        if let Some(since) = self.pending_since {
            if now.saturating_duration_since(since) < PENDING_TIMEOUT {
                return false;
            }
            self.pending_since = None;
        }
        if urgency == Urgency::ServerRequest
            && let Some(last) = self.last_forced
            && now.saturating_duration_since(last) < MIN_INTERVAL
        {
            return false;
        }
        self.last_forced = Some(now);
        self.pending_since = Some(now);
        true
    }

    /// A key frame left the encoder (forced or natural): nothing is pending any more.
    pub fn key_frame_seen(&mut self) {
        self.pending_since = None;
    }
}

/// Something that can make the encoder emit a key frame now.
pub trait KeyframeForcer: Send + Sync {
    fn force(&self);
}

/// The handle outputs and the supervisor hold. Cheap to clone; safe to call from any thread
/// (PLIs arrive on the WebRTC driver's task).
#[derive(Clone)]
pub struct KeyframeRequester {
    inner: Arc<Inner>,
}

struct Inner {
    gate: Mutex<KeyframeGate>,
    forcer: Mutex<Option<Arc<dyn KeyframeForcer>>>,
    forced: std::sync::atomic::AtomicU64,
}

impl Default for KeyframeRequester {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyframeRequester {
    pub fn new() -> Self {
        KeyframeRequester {
            inner: Arc::new(Inner {
                gate: Mutex::new(KeyframeGate::default()),
                forcer: Mutex::new(None),
                forced: Default::default(),
            }),
        }
    }

    /// The pipeline installs the current encoder's forcer (it changes when capture restarts).
    pub fn set_forcer(&self, forcer: Option<Arc<dyn KeyframeForcer>>) {
        *lock(&self.inner.forcer) = forcer;
    }

    /// Asks for a key frame; returns whether one was actually forced.
    pub fn request(&self, urgency: Urgency) -> bool {
        let go = lock(&self.inner.gate).should_force(Instant::now(), urgency);
        if !go {
            return false;
        }
        let forcer = lock(&self.inner.forcer).clone();
        match forcer {
            Some(f) => {
                f.force();
                self.inner
                    .forced
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                true
            }
            None => {
                // No encoder right now (capture restarting): nothing is pending.
                lock(&self.inner.gate).key_frame_seen();
                false
            }
        }
    }

    pub fn key_frame_seen(&self) {
        lock(&self.inner.gate).key_frame_seen();
    }

    /// Total key frames forced since start (for `onair status`).
    pub fn forced_count(&self) -> u64 {
        self.inner.forced.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn pli_flood_is_coalesced_to_two_per_second() {
        let mut g = KeyframeGate::default();
        let t0 = Instant::now();
        let mut forced = 0;
        // A PLI every 5 ms for 2 s; the encoder answers each forced request 40 ms later.
        let mut answer_at = None;
        for i in 0..400 {
            let now = t0 + ms(i * 5);
            if let Some(at) = answer_at
                && now >= at
            {
                g.key_frame_seen();
                answer_at = None;
            }
            if g.should_force(now, Urgency::ServerRequest) {
                forced += 1;
                answer_at = Some(now + ms(40));
            }
        }
        assert_eq!(forced, 4, "2 s of flood at one per 500 ms");
    }

    #[test]
    fn nothing_while_pending() {
        let mut g = KeyframeGate::default();
        let t0 = Instant::now();
        assert!(g.should_force(t0, Urgency::NewConnection));
        assert!(!g.should_force(t0 + ms(600), Urgency::ServerRequest));
        assert!(!g.should_force(t0 + ms(600), Urgency::NewConnection));
        g.key_frame_seen();
        assert!(g.should_force(t0 + ms(600), Urgency::ServerRequest));
    }

    #[test]
    fn new_connection_skips_the_interval() {
        let mut g = KeyframeGate::default();
        let t0 = Instant::now();
        assert!(g.should_force(t0, Urgency::ServerRequest));
        g.key_frame_seen();
        assert!(!g.should_force(t0 + ms(100), Urgency::ServerRequest));
        assert!(g.should_force(t0 + ms(100), Urgency::NewConnection));
    }

    #[test]
    fn an_input_switch_is_never_held_back() {
        let mut g = KeyframeGate::default();
        let t0 = Instant::now();
        assert!(g.should_force(t0, Urgency::ServerRequest));
        assert!(g.should_force(t0 + ms(10), Urgency::InputSwitch), "pending");
        assert!(
            g.should_force(t0 + ms(20), Urgency::InputSwitch),
            "interval"
        );
        assert!(
            !g.should_force(t0 + ms(30), Urgency::ServerRequest),
            "and it counts as pending for the others"
        );
    }

    #[test]
    fn unanswered_request_expires() {
        let mut g = KeyframeGate::default();
        let t0 = Instant::now();
        assert!(g.should_force(t0, Urgency::ServerRequest));
        assert!(!g.should_force(t0 + ms(999), Urgency::ServerRequest));
        assert!(g.should_force(t0 + ms(1000), Urgency::ServerRequest));
    }

    struct Count(std::sync::atomic::AtomicU32);
    impl KeyframeForcer for Count {
        fn force(&self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn requester_forces_through_the_installed_encoder() {
        let r = KeyframeRequester::new();
        assert!(!r.request(Urgency::NewConnection), "no encoder yet");
        let c = Arc::new(Count(Default::default()));
        r.set_forcer(Some(c.clone()));
        assert!(r.request(Urgency::NewConnection));
        assert!(!r.request(Urgency::ServerRequest), "pending");
        r.key_frame_seen();
        assert!(!r.request(Urgency::ServerRequest), "within 500 ms");
        assert_eq!(c.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(r.forced_count(), 1);
    }
}
