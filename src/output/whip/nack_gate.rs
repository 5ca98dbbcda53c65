//! The NACK gate: webrtc-rs's NACK responder, told only of the requests worth answering.
//!
//! The responder (rtc-interceptor's, at its slot 4 000) keeps the sent packets and answers a
//! NACK by resending them, on the media SSRC or as RTX where the server negotiated it — but it
//! answers every request, every time, which a server that asks again every 100 ms (pion's
//! generator, Broadcast Box) turns into a flood. Its buffer is private and it has no knob for
//! this, so rather than keep a second copy of every packet, two interceptors share the books
//! of [`RetransmitGate`] (the decision, pure: `retransmit.rs`) and [`NackLoss`] (what the
//! requests say about the path: `nack_loss.rs`):
//! - [`NackGate`], wire-ward of the responder (slot 3 500), notes each media packet as it is
//!   handed to the pacer, and rewrites each NACK on the way in to name only the packets the
//!   gate lets through, oldest first, dropping a NACK that names none;
//! - [`Departures`], wire-ward of the pacer, notes when each packet and each resending really
//!   left: a packet still queued is on its way, and a round trip counts from its leaving.

use super::feedback::PathFeedback;
use super::nack_loss::NackLoss;
use super::pass_through::Tap;
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

/// What a packet costs on the wire beyond the RTP bytes the gate sees: IPv4 + UDP + the SRTP
/// tag, the header extensions stamped wire-ward of it (transport-wide sequence number and
/// abs-send-time, and their block's header), and a resending's original sequence number as
/// RTX carries it.
const WIRE_OVERHEAD: u32 = 20 + 8 + 10 + (3 + 4 + 4) + 2;

/// What both interceptors keep about the video stream's packets.
#[derive(Default)]
pub struct Books {
    gate: RetransmitGate,
    loss: NackLoss,
}

impl Books {
    fn on_left(&mut self, now: Instant, seq: u16, resending: bool) {
        self.gate.on_left(now, seq, resending);
        if !resending && let Some((_, bytes)) = self.gate.left_at(seq) {
            self.loss.on_left(now, seq, bytes);
        }
    }
}

/// The video stream's SSRCs: the media's, and the repair flow's (RFC 4588), which carries a
/// resending only where the answer accepted RTX.
#[derive(Debug, Clone, Copy)]
pub struct VideoSsrcs {
    pub media: u32,
    pub rtx: u32,
}

pub struct NackGate {
    ssrc: u32,
    books: Arc<Mutex<Books>>,
    /// The round trip comes from here; the counts go there, for the status.
    feedback: Arc<Mutex<PathFeedback>>,
    rate: SendRate,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl NackGate {
    /// The gate, and the departures' tap that goes with it (wire-ward of the pacer).
    pub fn new(
        ssrcs: VideoSsrcs,
        feedback: Arc<Mutex<PathFeedback>>,
        rate: SendRate,
    ) -> (NackGate, Departures) {
        let books = Arc::new(Mutex::new(Books::default()));
        let gate = NackGate {
            ssrc: ssrcs.media,
            books: books.clone(),
            feedback,
            rate,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        };
        (gate, Departures { ssrcs, books })
    }

    /// The NACK with only the packets worth resending, or `None` when there are none.
    fn filter(&mut self, now: Instant, nack: &TransportLayerNack) -> Option<TransportLayerNack> {
        let asked: Vec<u16> = nack.nacks.iter().flat_map(|p| p.packet_list()).collect();
        // What the NACK says about the path counts for its own answers already.
        let heavy = lock(&self.books).loss.on_nack(&asked);
        if let Some(bps) = heavy {
            log::debug!(
                "whip: a NACK names {} packets, most of a stretch: sending at most {:.0} kbit/s",
                asked.len(),
                bps / 1000.0
            );
        }
        let (rtt, estimate) = {
            let mut f = lock(&self.feedback);
            if let Some(bps) = heavy {
                f.on_nack_loss(now, bps);
            }
            (f.rtt(now), f.report(now).estimate.map(|e| e.bps))
        };
        // What the connection may send, but no more than the path is judged to carry: with
        // adaptation off the target can be far above it, and a retransmission the path drops
        // helps no one.
        let target = estimate.map_or(self.rate.bps(), |e| e.min(self.rate.bps()));
        // In the receiver's order, oldest first (libwebrtc answers so): its buffer is stuck
        // behind the oldest hole, whose deadline is also the nearest.
        let (keep, counts, bytes) = {
            let mut books = lock(&self.books);
            let keep: Vec<u16> = asked
                .iter()
                .copied()
                .filter(|&seq| books.gate.decide(now, seq, rtt, target) == Verdict::Resend)
                .collect();
            let bytes: Vec<u32> = keep
                .iter()
                .filter_map(|&seq| books.gate.left_at(seq).map(|(_, b)| b))
                .collect();
            (keep, books.gate.counts(), bytes)
        };
        {
            let mut f = lock(&self.feedback);
            f.on_retransmissions(counts);
            for b in bytes {
                f.on_resent(now, b);
            }
        }
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
            lock(&self.books).gate.on_queued(
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

/// Notes, wire-ward of the pacer, when each video packet and each resending of one left.
pub struct Departures {
    ssrcs: VideoSsrcs,
    books: Arc<Mutex<Books>>,
}

impl Tap for Departures {
    fn outbound(&mut self, msg: &mut TaggedPacket) {
        let Packet::Rtp(rtp) = &msg.message.packet else {
            return;
        };
        let resending = msg.message.has(&Attribute::Retransmission);
        let seq = match rtp.header.ssrc {
            s if s == self.ssrcs.media => rtp.header.sequence_number,
            // RFC 4588: the repair packet's payload starts with the original sequence number.
            s if s == self.ssrcs.rtx && resending => match rtp.payload.get(..2) {
                Some(&[hi, lo]) => u16::from_be_bytes([hi, lo]),
                _ => return,
            },
            _ => return,
        };
        lock(&self.books).on_left(Instant::from_std(msg.now), seq, resending);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::BitrateHandle;
    use crate::output::whip::pass_through::PassThrough;
    use rtc::interceptor::AttributedPacket;
    use rtc::rtp;
    use rtc::shared::TransportContext;
    use std::time::Duration;

    const SSRC: u32 = 0x1234;
    const RTX: u32 = 0x5678;

    fn tagged(now: std::time::Instant, packet: Packet) -> TaggedPacket {
        TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(packet),
        }
    }

    fn rtp(ssrc: u32, seq: u16, payload: Vec<u8>) -> Packet {
        Packet::Rtp(rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                ssrc,
                sequence_number: seq,
                ..Default::default()
            },
            payload: payload.into(),
        })
    }

    fn media(seq: u16) -> Packet {
        rtp(SSRC, seq, vec![0u8; 1200])
    }

    /// A resending as the responder makes it: on the media SSRC, or as RTX.
    fn resending(now: std::time::Instant, seq: u16, as_rtx: bool) -> TaggedPacket {
        let packet = if as_rtx {
            let mut payload = seq.to_be_bytes().to_vec();
            payload.extend([0u8; 1200]);
            rtp(RTX, 900 + seq, payload)
        } else {
            media(seq)
        };
        TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(packet).with(Attribute::Retransmission),
        }
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

    type Chain = (NackGate, PassThrough<Departures>, Arc<Mutex<PathFeedback>>);

    /// The gate at 1 Mbit/s: four packets of 1 263 bytes at once (`retransmit.rs`).
    fn chain() -> Chain {
        let feedback = Arc::new(Mutex::new(PathFeedback::new(1e6, 1e5, 1e6)));
        let rate = SendRate::new(BitrateHandle::new(1000), 0);
        let ssrcs = VideoSsrcs {
            media: SSRC,
            rtx: RTX,
        };
        let (gate, departures) = NackGate::new(ssrcs, feedback.clone(), rate);
        (gate, PassThrough::new(departures), feedback)
    }

    /// `msg` handed to the gate, and on to the wire through the departures' tap at `left`.
    fn send(c: &mut Chain, msg: TaggedPacket, left: std::time::Instant) {
        c.0.handle_write(msg).expect("write");
        let mut msg = c.0.poll_write().expect("passed on");
        msg.now = left;
        c.1.handle_write(msg).expect("write");
        assert!(c.1.poll_write().is_some());
    }

    fn ask(c: &mut Chain, at: std::time::Instant, seqs: &[u16]) -> Vec<u16> {
        c.0.handle_read(tagged(at, nack(seqs))).expect("read");
        c.0.poll_read().map(|m| asked(&m)).unwrap_or_default()
    }

    #[tokio::test(start_paused = true)]
    async fn the_responder_hears_only_the_requests_worth_answering_oldest_first() {
        let mut c = chain();
        let t0 = std::time::Instant::now();
        for seq in 0..10 {
            send(&mut c, tagged(t0, media(seq)), t0);
        }
        let later = t0 + Duration::from_millis(50);
        assert_eq!(
            ask(&mut c, later, &[1, 2, 3, 4, 5]),
            vec![1, 2, 3, 4],
            "over budget after four, the oldest first"
        );
        // Asked again at once: the four are still waiting to leave, the fifth over budget.
        assert!(ask(&mut c, later, &[1, 2, 3, 4, 5]).is_empty());
        let counts = lock(&c.2).report(Instant::now()).retransmissions;
        let c2 = counts.expect("counts");
        assert_eq!((c2.resent, c2.too_soon, c2.over_budget), (4, 4, 2));
        // Other RTCP and other streams' NACKs pass untouched.
        let other = Packet::Rtcp(vec![Box::new(TransportLayerNack {
            sender_ssrc: 1,
            media_ssrc: 99,
            nacks: nack_pairs_from_sequence_numbers(&[1]),
        })]);
        c.0.handle_read(tagged(later, other)).expect("read");
        assert!(c.0.poll_read().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_packet_counts_as_sent_when_it_leaves_the_pacer_and_so_does_its_resending() {
        let mut c = chain();
        let t0 = std::time::Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // Handed over at once; the pacer lets the second out 80 ms later.
        c.0.handle_write(tagged(t0, media(0))).expect("write");
        c.0.handle_write(tagged(t0, media(1))).expect("write");
        let first = c.0.poll_write().expect("first");
        let second = c.0.poll_write().expect("second");
        c.1.handle_write(first).expect("write");
        assert!(ask(&mut c, ms(40), &[1]).is_empty(), "still in the pacer");
        let mut second = second;
        second.now = ms(80);
        c.1.handle_write(second).expect("write");
        assert_eq!(ask(&mut c, ms(90), &[1]), vec![1]);
        // Its resending leaves as RTX at 100 ms; the round trip (100 ms while unknown) counts
        // from there.
        send(&mut c, resending(ms(90), 1, true), ms(100));
        assert!(ask(&mut c, ms(195), &[1]).is_empty());
        assert_eq!(ask(&mut c, ms(205), &[1]), vec![1]);
        // On the media SSRC as well.
        send(&mut c, resending(ms(205), 1, false), ms(210));
        assert!(ask(&mut c, ms(300), &[1]).is_empty());
        assert_eq!(ask(&mut c, ms(311), &[1]), vec![1]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_nack_naming_most_of_a_stretch_caps_the_estimate() {
        let mut c = chain();
        let t0 = std::time::Instant::now();
        for seq in 0..60u16 {
            let at = t0 + Duration::from_millis(4 * u64::from(seq));
            send(&mut c, tagged(at, media(seq)), at);
        }
        let lost: Vec<u16> = (10..50).filter(|s| s % 2 == 0).collect();
        ask(&mut c, t0 + Duration::from_millis(300), &lost);
        let e = lock(&c.2)
            .report(Instant::now())
            .estimate
            .expect("an estimate");
        // 39 packets over 152 ms, 19 through (1.26 Mbit/s with the headers); 85 % of it.
        assert!((e.bps - 1_073_000.0).abs() < 5_000.0, "{e:?}");
    }
}
