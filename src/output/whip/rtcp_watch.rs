//! Watches the RTCP the server sends back for its key-frame requests.
//!
//! PLI/FIR are the server asking for a key frame. They are seen here, in an interceptor placed
//! next to the wire, and handed to the (coalescing) key-frame requester without waiting.
//! Nothing is forwarded to the application. (Whether the server is still there is judged from
//! every packet it sends, RTCP or not: see `output/liveness.rs`.)

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
