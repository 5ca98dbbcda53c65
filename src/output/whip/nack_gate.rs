//! The NACK gate: webrtc-rs's NACK responder, told only of the requests worth answering.
//!
//! The responder (rtc-interceptor's, at its slot 4 000) keeps the sent packets and answers a
//! NACK by resending them, on the media SSRC or as RTX where the server negotiated it — but it
//! answers every request, every time, which a server that asks again every 100 ms (pion's
//! generator, Broadcast Box) turns into a flood. Its buffer is private and it has no knob for
//! this, so rather than keep a second copy of every packet, this interceptor sits wire-ward
//! of it (slot 3 500): on the way out it notes when each media packet first left and its size;
//! on the way in it rewrites each NACK to name only the packets [`RetransmitGate`] lets
//! through, and drops a NACK that names none. The decision (`retransmit.rs`) is pure; this is
//! the plumbing.

use super::feedback::PathFeedback;
use super::retransmit::{RetransmitGate, Verdict};
use crate::lock::lock;
use crate::output::adapt::SendRate;
use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    TransportLayerNack, nack_pairs_from_sequence_numbers,
};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::marshal::MarshalSize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// What a packet costs on the wire beyond its RTP bytes: IPv4 + UDP + the SRTP tag.
const WIRE_OVERHEAD: u32 = 20 + 8 + 10;

pub struct NackGate {
    /// The media stream whose packets may be resent (the video).
    ssrc: u32,
    gate: RetransmitGate,
    /// The round trip comes from here; the counts go there, for the status.
    feedback: Arc<Mutex<PathFeedback>>,
    rate: SendRate,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl NackGate {
    pub fn new(ssrc: u32, feedback: Arc<Mutex<PathFeedback>>, rate: SendRate) -> Self {
        NackGate {
            ssrc,
            gate: RetransmitGate::new(),
            feedback,
            rate,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }

    /// The NACK with only the packets worth resending, or `None` when there are none.
    fn filter(&mut self, now: Instant, nack: &TransportLayerNack) -> Option<TransportLayerNack> {
        let (rtt, estimate) = {
            let f = lock(&self.feedback);
            (f.rtt(now), f.report(now).estimate.map(|e| e.bps))
        };
        // What the connection may send, but no more than the path is judged to carry: with
        // adaptation off the target can be far above it, and a retransmission the path drops
        // helps no one.
        let target = estimate.map_or(self.rate.bps(), |e| e.min(self.rate.bps()));
        // Newest first: when the budget cannot cover every request, the packets nearest the
        // present are the ones a viewer still waits for (a receiver's buffer is stuck behind
        // its newest hole the longest).
        let asked: Vec<u16> = nack.nacks.iter().flat_map(|p| p.packet_list()).collect();
        let mut keep = vec![];
        for &seq in asked.iter().rev() {
            if self.gate.decide(now, seq, rtt, target) == Verdict::Resend {
                keep.push(seq);
            }
        }
        keep.reverse();
        lock(&self.feedback).on_retransmissions(self.gate.counts());
        (!keep.is_empty()).then(|| TransportLayerNack {
            sender_ssrc: nack.sender_ssrc,
            media_ssrc: nack.media_ssrc,
            nacks: nack_pairs_from_sequence_numbers(&keep),
        })
    }

    fn inbound(&mut self, mut msg: TaggedPacket) -> Option<TaggedPacket> {
        let now = Instant::from_std(msg.now);
        let Packet::Rtcp(packets) = &mut msg.message.packet else {
            return Some(msg);
        };
        let names_ours = packets.iter().any(|p| {
            p.as_any()
                .downcast_ref::<TransportLayerNack>()
                .is_some_and(|n| n.media_ssrc == self.ssrc)
        });
        if !names_ours {
            return Some(msg);
        }
        let mut kept: Vec<Box<dyn rtc::rtcp::Packet>> = Vec::with_capacity(packets.len());
        for p in std::mem::take(packets) {
            match p.as_any().downcast_ref::<TransportLayerNack>() {
                Some(n) if n.media_ssrc == self.ssrc => {
                    if let Some(filtered) = self.filter(now, n) {
                        kept.push(Box::new(filtered));
                    }
                }
                _ => kept.push(p),
            }
        }
        // An empty compound packet means "attributes only" to the chain: pass one on only
        // when it carries some.
        if kept.is_empty() && msg.message.attributes.is_empty() {
            return None;
        }
        msg.message.packet = Packet::Rtcp(kept);
        Some(msg)
    }

    fn outbound(&mut self, msg: &TaggedPacket) {
        if let Packet::Rtp(rtp) = &msg.message.packet
            && rtp.header.ssrc == self.ssrc
            && !msg.message.has(&Attribute::Retransmission)
        {
            let bytes = u32::try_from(rtp.marshal_size()).unwrap_or(u32::MAX);
            self.gate.on_sent(
                Instant::from_std(msg.now),
                rtp.header.sequence_number,
                bytes.saturating_add(WIRE_OVERHEAD),
            );
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for NackGate {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = std::time::Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Some(msg) = self.inbound(msg) {
            self.read_queue.push_back(msg);
        }
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.outbound(&msg);
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for NackGate {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::BitrateHandle;
    use rtc::interceptor::AttributedPacket;
    use rtc::rtp;
    use rtc::shared::TransportContext;
    use std::time::Duration;

    const SSRC: u32 = 0x1234;

    fn tagged(now: std::time::Instant, packet: Packet) -> TaggedPacket {
        TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(packet),
        }
    }

    fn media(seq: u16) -> Packet {
        Packet::Rtp(rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                ssrc: SSRC,
                sequence_number: seq,
                ..Default::default()
            },
            payload: vec![0u8; 1200].into(),
        })
    }

    fn nack(seqs: &[u16]) -> Packet {
        Packet::Rtcp(vec![Box::new(TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: SSRC,
            nacks: nack_pairs_from_sequence_numbers(seqs),
        })])
    }

    fn asked(msg: &TaggedPacket) -> Vec<u16> {
        let Packet::Rtcp(packets) = &msg.message.packet else {
            panic!("not RTCP")
        };
        packets
            .iter()
            .filter_map(|p| p.as_any().downcast_ref::<TransportLayerNack>())
            .flat_map(|n| n.nacks.iter().flat_map(|p| p.packet_list()))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn the_responder_hears_only_the_requests_worth_answering() {
        let feedback = Arc::new(Mutex::new(PathFeedback::new(1e6, 1e5, 1e6)));
        // 200 kbit/s: 30 % over 500 ms is 3 750 bytes, three packets of 1 250.
        let rate = SendRate::new(BitrateHandle::new(200), 0);
        let mut g = NackGate::new(SSRC, feedback.clone(), rate);
        let t0 = std::time::Instant::now();
        for seq in 0..10 {
            g.handle_write(tagged(t0, media(seq))).expect("write");
        }
        assert_eq!(std::iter::from_fn(|| g.poll_write()).count(), 10);
        let later = t0 + Duration::from_millis(50);
        g.handle_read(tagged(later, nack(&[1, 2, 3, 4, 5])))
            .expect("read");
        let passed = g.poll_read().expect("a NACK for the responder");
        assert_eq!(
            asked(&passed),
            vec![3, 4, 5],
            "over budget after three, the newest first"
        );
        // Asked again at once: too soon for 1–3, still over budget for the rest: dropped whole.
        g.handle_read(tagged(later, nack(&[1, 2, 3, 4, 5])))
            .expect("read");
        assert!(g.poll_read().is_none());
        let counts = lock(&feedback).report(Instant::now()).retransmissions;
        let c = counts.expect("counts");
        assert_eq!((c.resent, c.too_soon, c.over_budget), (3, 3, 4));
        // Other RTCP and other streams' NACKs pass untouched.
        let mut other = nack(&[1]);
        if let Packet::Rtcp(p) = &mut other {
            p[0] = Box::new(TransportLayerNack {
                sender_ssrc: 1,
                media_ssrc: 99,
                nacks: nack_pairs_from_sequence_numbers(&[1]),
            });
        }
        g.handle_read(tagged(later, other)).expect("read");
        assert!(g.poll_read().is_some());
    }
}
