//! The pacer: every packet leaves at most at [`PACING_FACTOR`] × what the connection may send
//! now, in bursts of a few milliseconds; sound first, then retransmissions, then pictures.
//!
//! Without it a key frame, or a batch of retransmissions, leaves at line rate and lands in the
//! uplink's queue all at once. rtc-interceptor has a pacer, and its leaky bucket
//! ([`rtc::interceptor::Pacer`], pure: time is an argument) is reused here as it is. Its
//! interceptor is not: it paces at exactly the congestion controller's estimate (no room for a
//! key frame above the average, and the estimate is not what the encoder was told: the target
//! is a share of it, and with adaptation off the estimate means nothing to the sender), and
//! it has one queue, so an Opus packet would wait behind a key frame's packets. libwebrtc's
//! pacer is the model: 2.5 × the target, audio before video, retransmissions before new
//! video.
//!
//! Sits at the library's pacer slot (3 000): every generator — the NACK responder's
//! retransmissions included — is application-ward of it, and the transport-wide sequence
//! numbers and the send history are wire-ward, so they see the moment a packet really left.
//! RTCP is not paced: it is small and only useful while fresh.

use crate::output::adapt::SendRate;
use rtc::interceptor::{Attribute, Interceptor, PACER_MIN_BURST_BITS, Packet, StreamInfo};
use rtc::interceptor::{Pacer as LeakyBucket, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::marshal::MarshalSize;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// libwebrtc's factor: room for a key frame several times the average frame.
pub const PACING_FACTOR: f64 = 2.5;
/// How much may leave at once: this long at the pacing rate…
const BURST: Duration = Duration::from_millis(5);
/// …but never less than two full packets.
const MIN_BURST_BITS: f64 = 2.0 * PACER_MIN_BURST_BITS;
/// Packets held at most (about 2.5 s of the ceiling's); beyond it new pictures are refused
/// rather than queued behind seconds of old ones.
const QUEUE_LIMIT: usize = 2048;

/// The three lanes, served in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Sound,
    Retransmission,
    Picture,
}

pub struct SendPacer {
    bucket: LeakyBucket,
    rate: SendRate,
    /// The Opus stream's SSRC, when there is one.
    sound_ssrc: Option<u32>,
    lanes: [VecDeque<TaggedPacket>; 3],
    /// Pictures refused because the queue was full.
    dropped: u64,
    released: VecDeque<TaggedPacket>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl SendPacer {
    pub fn new(rate: SendRate, sound_ssrc: Option<u32>) -> Self {
        let bps = PACING_FACTOR * rate.bps();
        SendPacer {
            bucket: LeakyBucket::new(bps).with_burst_bits(burst_bits(bps)),
            rate,
            sound_ssrc,
            lanes: Default::default(),
            dropped: 0,
            released: VecDeque::new(),
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }

    /// Follows the target: the rate and the burst that goes with it.
    fn follow_target(&mut self) {
        let bps = PACING_FACTOR * self.rate.bps();
        if (bps - self.bucket.target_bitrate()).abs() > 1.0 {
            let bucket = std::mem::replace(&mut self.bucket, LeakyBucket::new(0.0));
            let mut bucket = bucket.with_burst_bits(burst_bits(bps));
            bucket.set_target_bitrate(bps);
            self.bucket = bucket;
        }
    }

    fn lane(&self, msg: &TaggedPacket) -> Lane {
        match &msg.message.packet {
            Packet::Rtp(rtp) if Some(rtp.header.ssrc) == self.sound_ssrc => Lane::Sound,
            _ if msg.message.has(&Attribute::Retransmission) => Lane::Retransmission,
            _ => Lane::Picture,
        }
    }

    fn queued(&self) -> usize {
        self.lanes.iter().map(VecDeque::len).sum()
    }

    fn head(&self) -> Option<&TaggedPacket> {
        self.lanes.iter().find_map(VecDeque::front)
    }
}

fn burst_bits(bps: f64) -> f64 {
    (bps * BURST.as_secs_f64()).max(MIN_BURST_BITS)
}

fn bits_of(msg: &TaggedPacket) -> f64 {
    match &msg.message.packet {
        Packet::Rtp(rtp) => (rtp.marshal_size() * 8) as f64,
        _ => 0.0,
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for SendPacer {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if !matches!(msg.message.packet, Packet::Rtp(_)) {
            self.write_queue.push_back(msg);
            return Ok(());
        }
        self.follow_target();
        // Kept current at enqueue, so the next release time is never in the past.
        self.bucket.refill(msg.now);
        let lane = self.lane(&msg);
        if lane == Lane::Picture && self.queued() >= QUEUE_LIMIT {
            self.dropped += 1;
            if self.dropped.is_power_of_two() {
                log::debug!(
                    "whip: pacer queue full, {} pictures' packets refused",
                    self.dropped
                );
            }
            return Ok(());
        }
        self.lanes[lane as usize].push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue
            .pop_front()
            .or_else(|| self.released.pop_front())
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        self.follow_target();
        self.bucket.refill(now);
        while let Some(head) = self.head() {
            let bits = bits_of(head);
            if !self.bucket.can_release(bits) {
                break;
            }
            let lane = self
                .lanes
                .iter_mut()
                .find(|l| !l.is_empty())
                .expect("a head means a lane with packets");
            let mut msg = lane.pop_front().expect("the lane is not empty");
            self.bucket.consume(bits);
            // It leaves now: what is wire-ward (the send history) must see this moment.
            msg.now = now;
            self.released.push_back(msg);
        }
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        let head = self.head()?;
        self.bucket.releasable_at(bits_of(head))
    }
}

impl Interceptor for SendPacer {
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

    const VIDEO: u32 = 1;
    const AUDIO: u32 = 2;

    fn packet(now: Instant, ssrc: u32, seq: u16, bytes: usize) -> TaggedPacket {
        TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    ssrc,
                    sequence_number: seq,
                    ..Default::default()
                },
                payload: vec![0u8; bytes].into(),
            })),
        }
    }

    /// Runs the pacer's timer for `secs`, returning (release time, ssrc, seq) of every packet.
    fn run(p: &mut SendPacer, from: Instant, secs: f64) -> Vec<(Duration, u32, u16)> {
        let mut out = vec![];
        let end = from + Duration::from_secs_f64(secs);
        let mut now = from;
        loop {
            p.handle_timeout(now).expect("timeout");
            while let Some(m) = p.poll_write() {
                if let Packet::Rtp(r) = &m.message.packet {
                    out.push((m.now - from, r.header.ssrc, r.header.sequence_number));
                }
            }
            match p.poll_timeout() {
                Some(at) if at <= end => now = at.max(now),
                _ => break,
            }
        }
        out
    }

    #[test]
    fn a_key_frame_leaves_at_two_and_a_half_times_the_target_in_small_bursts() {
        // 1000 kbit/s: paced at 2.5 Mbit/s, 5 ms bursts (12 500 bits, floored at 24 000).
        let rate = SendRate::new(BitrateHandle::new(1000), 0);
        let mut p = SendPacer::new(rate, None);
        let t0 = Instant::now();
        // A key frame of 100 packets of 1 200 bytes (~0.97 Mbit) handed over at once.
        for seq in 0..100 {
            p.handle_write(packet(t0, VIDEO, seq, 1188)).expect("write");
        }
        let sent = run(&mut p, t0, 2.0);
        assert_eq!(sent.len(), 100);
        let last = sent.last().expect("packets").0.as_secs_f64();
        let bits = 100.0 * 1200.0 * 8.0;
        // Started with a full burst (24 000 bits); the rest at 2.5 Mbit/s.
        let expected = (bits - 24_000.0) / 2_500_000.0;
        assert!(
            (last - expected).abs() < 0.01,
            "last packet at {last:.3} s, expected {expected:.3} s"
        );
        // No 10 ms carried more than the burst plus a packet.
        for w in sent.windows(4) {
            let span = w[3].0 - w[0].0;
            assert!(span >= Duration::from_millis(5), "{w:?}");
        }
    }

    #[test]
    fn sound_never_waits_behind_a_picture_burst() {
        let rate = SendRate::new(BitrateHandle::new(300), 0);
        let mut p = SendPacer::new(rate, Some(AUDIO));
        let t0 = Instant::now();
        for seq in 0..50 {
            p.handle_write(packet(t0, VIDEO, seq, 1188)).expect("write");
        }
        // A key frame at 750 kbit/s takes ~0.6 s; sound arrives 100 ms into it.
        let t1 = t0 + Duration::from_millis(100);
        let before = run(&mut p, t0, 0.1);
        p.handle_write(packet(t1, AUDIO, 7, 100)).expect("write");
        let after = run(&mut p, t1, 1.0);
        let sound = after
            .iter()
            .find(|(_, ssrc, _)| *ssrc == AUDIO)
            .expect("the sound left");
        assert!(
            sound.0 <= Duration::from_millis(20),
            "sound waited {:?} behind pictures",
            sound.0
        );
        assert_eq!(before.len() + after.len(), 51);
    }

    #[test]
    fn the_rate_follows_the_target() {
        let handle = BitrateHandle::new(2000);
        let mut p = SendPacer::new(SendRate::new(handle.clone(), 0), None);
        let t0 = Instant::now();
        handle.set_target(400);
        for seq in 0..60 {
            p.handle_write(packet(t0, VIDEO, seq, 1188)).expect("write");
        }
        let sent = run(&mut p, t0, 5.0);
        let last = sent.last().expect("packets").0.as_secs_f64();
        // 60 × 9 600 bits at 1 Mbit/s: about 0.55 s after the first burst.
        assert!((0.5..0.62).contains(&last), "{last}");
    }
}
