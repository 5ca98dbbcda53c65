//! Watches the RTCP the server sends back: the proof that it is alive, and its key-frame
//! requests.
//!
//! A server that vanishes silently (its host crashed, a firewall started dropping) leaves ICE
//! looking fine for a while; its receiver reports stopping is the earliest sign. And PLI/FIR
//! are the server asking for a key frame. Both are seen here, in an interceptor placed next to
//! the wire, and handed on without waiting: the time of the last RTCP packet as an atomic, key
//! frame requests to the (coalescing) requester. Nothing is forwarded to the application.

use crate::media::{KeyframeRequester, Urgency};
use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::time::Instant as TokioInstant;

/// When the server last sent RTCP, readable from any task. The interceptor stamps arrivals
/// with the clock as it reads them; readers pass their own `now`.
#[derive(Clone)]
pub struct RtcpClock {
    epoch: TokioInstant,
    last_ms: Arc<AtomicU64>,
    key_requests: Arc<AtomicU64>,
}

impl RtcpClock {
    /// Starts counting silence from now (a new connection gets `dead_after` for its first
    /// report).
    pub fn new() -> Self {
        RtcpClock {
            epoch: TokioInstant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
            key_requests: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self, now: TokioInstant) {
        let ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Restarts the silence count (when the transport comes up).
    pub fn reset(&self, now: TokioInstant) {
        self.touch(now);
    }

    /// How long since the last RTCP packet (or since `new`/`reset`) at `now`.
    pub fn silence(&self, now: TokioInstant) -> std::time::Duration {
        let last = self.last_ms.load(Ordering::Relaxed);
        let now = now.saturating_duration_since(self.epoch).as_millis() as u64;
        std::time::Duration::from_millis(now.saturating_sub(last))
    }

    pub fn key_requests(&self) -> u64 {
        self.key_requests.load(Ordering::Relaxed)
    }
}

impl Default for RtcpClock {
    fn default() -> Self {
        Self::new()
    }
}

pub struct RtcpWatch {
    clock: RtcpClock,
    keyframes: KeyframeRequester,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl RtcpWatch {
    pub fn new(clock: RtcpClock, keyframes: KeyframeRequester) -> Self {
        RtcpWatch {
            clock,
            keyframes,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RtcpWatch {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet
            && !packets.is_empty()
        {
            self.clock.touch(TokioInstant::now());
            let wants_key = packets.iter().any(|p| {
                let any = p.as_any();
                any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
            });
            if wants_key {
                self.clock.key_requests.fetch_add(1, Ordering::Relaxed);
                self.keyframes.request(Urgency::ServerRequest);
            }
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for RtcpWatch {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
