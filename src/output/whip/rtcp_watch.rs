//! Watches the RTCP the server sends back for its key-frame requests.
//!
//! PLI/FIR are the server asking for a key frame. They are seen here, in an interceptor placed
//! next to the wire, and handed to the (coalescing) key-frame requester without waiting.
//! Nothing is forwarded to the application. (Whether the server is still there is judged from
//! every packet it sends, RTCP or not: see `output/liveness.rs`.)

use super::pass_through::Tap;
use crate::media::{KeyframeRequester, Urgency};
use rtc::interceptor::{Packet, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many key-frame requests the server sent, readable from any task.
#[derive(Clone, Default)]
pub struct RtcpClock {
    key_requests: Arc<AtomicU64>,
}

impl RtcpClock {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn key_requests(&self) -> u64 {
        self.key_requests.load(Ordering::Relaxed)
    }
}

/// Sees the server's PLI/FIR on the way in.
pub struct RtcpWatch {
    clock: RtcpClock,
    keyframes: KeyframeRequester,
}

impl RtcpWatch {
    pub fn new(clock: RtcpClock, keyframes: KeyframeRequester) -> Self {
        RtcpWatch { clock, keyframes }
    }
}

impl Tap for RtcpWatch {
    fn inbound(&mut self, msg: &TaggedPacket) {
        if let Packet::Rtcp(packets) = &msg.message.packet
            && !packets.is_empty()
        {
            let wants_key = packets.iter().any(|p| {
                let any = p.as_any();
                any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
            });
            if wants_key {
                self.clock.key_requests.fetch_add(1, Ordering::Relaxed);
                self.keyframes.request(Urgency::ServerRequest);
            }
        }
    }
}
