//! Which NACKed packets are worth sending again: the decision, pure and clocked by its caller.
//!
//! A real server asks again: pion's NACK generator (Broadcast Box) repeats every 100 ms its
//! request for every packet still missing. A sender that answers every request multiplies a
//! loss episode — behind a 1 Mbit/s uplink the box once offered 30 Mbit/s of old packets. The
//! anchor is libwebrtc's sender (`RtpPacketHistory`, `RTPSender::OnReceivedNack`): a packet
//! still waiting in the pacer is not queued again, a packet is not resent within one round
//! trip of its last resending, the history keeps a packet for three times the longer of 1 s
//! and three round trips (3 s on a short path), and all retransmissions pass a rate limiter
//! (as much as the whole target over 500 ms). Here, a packet is resent only when all of these
//! hold:
//! - it is in the recent history (we sent it, on the media SSRC);
//! - it has left the pacer, and no earlier resending of it is still waiting there (a request
//!   for a packet on its way — GStreamer asks for a packet as soon as it is late — would
//!   only send it twice);
//! - it is still useful: it left at most [`useful_for`] ago. A receiver that still asks for
//!   an older packet has not moved past it — aiortc's jitter buffer holds every later frame
//!   behind it until 512 packets have passed, pion asks for as far back — and a libwebrtc
//!   receiver stops asking for what a key frame made useless. libwebrtc keeps 3 s on a short
//!   path, but may spend the whole target on repairs; within a quarter of it, the 50–60 holes
//!   an uplink that halves under the box leaves take up to 4 s to repair, so the horizon is
//!   5 s (nine round trips on a long path, as libwebrtc's);
//! - it was not resent within the last round trip ([`UNKNOWN_RTT`] while none is known, never
//!   less than [`MIN_INTERVAL`]), so a request that crossed our last answer on the way does
//!   not cost the packet twice (the first request is always answered: libwebrtc's rule too);
//! - the retransmissions of the last [`BUDGET_WINDOW`] plus this one stay within
//!   [`BUDGET_SHARE`] of the current target (or of the path's estimate, when that is lower:
//!   with adaptation off the target can be far above what the path carries), and within what
//!   has accrued at that share (a token bucket [`BURST`] of the window's budget deep). Without
//!   the bucket a loss burst spends the whole window at once and then nothing for half a
//!   second: a receiver stuck behind its oldest hole (aiortc) froze for 0.4–0.5 s every
//!   500 ms while the holes were repaired. The same budget spread out repairs them a few at a
//!   time, each time pion asks.
//!
//! Its caller asks in the order the receiver listed the packets, oldest first, as libwebrtc
//! answers: a receiver's buffer is stuck behind its oldest hole, and that hole's deadline is
//! the nearest.
//!
//! webrtc-rs's NACK responder keeps the packets and builds the answer (on the media SSRC, or
//! as RTX where the server negotiated it); [`super::nack_gate`] sits wire-ward of it and hands
//! it only the requests this gate lets through, and tells it when each packet really left.

pub use crate::output::adapt::Retransmissions as Counts;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// A packet is useful this long after it left…
pub const USEFUL: Duration = Duration::from_secs(5);
/// …or this many round trips, when that is longer (libwebrtc's horizon on a long path).
const USEFUL_RTTS: u32 = 9;
/// The least time between two resendings of one packet while no round trip is known (libwebrtc
/// starts from the same 100 ms).
pub const UNKNOWN_RTT: Duration = Duration::from_millis(100);
/// …and whatever the round trip: a measured 1 ms is not a promise that the last answer has
/// arrived 1 ms later. GStreamer's jitter buffer asks again after about twice its own round
/// trip, which on a short path is a few milliseconds; a floor much above that costs its
/// viewers frames (in the lab, 50 ms: 2 % of them under 5 % loss).
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// All retransmissions together stay within this share of the target… (what they take of it
/// is kept off the encoder's share: `media/bitrate.rs`).
pub const BUDGET_SHARE: f64 = 0.3;
/// …over any window this long…
pub const BUDGET_WINDOW: Duration = Duration::from_millis(500);
/// …and at most this share of the window's budget at once (then as it accrues). A packet may
/// go whenever anything has accrued, so a packet larger than what is left never waits for
/// more than that: at the 300 kbit/s floor a quarter of the window's budget is 1 406 bytes.
pub const BURST: f64 = 0.25;
/// A packet handed to the pacer and not seen leaving after this long is taken as gone (the
/// pacer refuses pictures when its queue is full); a key frame takes at most a fifth of a
/// second of the target to leave at 2.5 times the target.
const LONGEST_QUEUED: Duration = Duration::from_millis(1000);
/// Packets remembered: several seconds of the ceiling's packets (2500 kbit/s ≈ 230 per second),
/// a power of two so a sequence number indexes it. webrtc-rs's NACK responder keeps as many
/// (`peer.rs`), so a packet this history knows, it still has.
pub const HISTORY: usize = 2048;

/// How long after it left a packet is still worth resending, for a round trip `rtt`.
pub fn useful_for(rtt: Option<Duration>) -> Duration {
    USEFUL.max(rtt.unwrap_or(Duration::ZERO) * USEFUL_RTTS)
}

/// What became of one requested packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Resend,
    /// Still waiting in the pacer, or sent again within the last round trip.
    TooSoon,
    /// Left longer than [`useful_for`] ago.
    TooOld,
    /// The retransmission budget is spent.
    OverBudget,
    /// Not in the history (never sent, or long forgotten).
    Unknown,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    seq: u16,
    /// Handed to the pacer.
    queued: Instant,
    /// Left the pacer (the first time).
    left: Option<Instant>,
    /// A resending handed to the pacer and not yet gone.
    resend_queued: Option<Instant>,
    /// When the last resending left.
    resent: Option<Instant>,
    bytes: u32,
}

impl Sent {
    fn waiting(&self, now: Instant) -> bool {
        let recent = |at: Instant| now.saturating_duration_since(at) < LONGEST_QUEUED;
        (self.left.is_none() && recent(self.queued)) || self.resend_queued.is_some_and(recent)
    }
}

/// The history of one media stream and the retransmissions' spending.
pub struct RetransmitGate {
    history: Vec<Option<Sent>>,
    /// Retransmissions of the last window: when, and how many bytes.
    spent: VecDeque<(Instant, u32)>,
    spent_bytes: u64,
    /// The bucket that spreads the budget: bytes that may go now (below zero after a packet
    /// larger than what was left), and when it was last filled.
    tokens: f64,
    filled: Option<Instant>,
    counts: Counts,
}

impl Default for RetransmitGate {
    fn default() -> Self {
        Self::new()
    }
}

impl RetransmitGate {
    pub fn new() -> Self {
        RetransmitGate {
            history: vec![None; HISTORY],
            spent: VecDeque::new(),
            spent_bytes: 0,
            tokens: f64::INFINITY,
            filled: None,
            counts: Counts::default(),
        }
    }

    fn slot(seq: u16) -> usize {
        usize::from(seq) % HISTORY
    }

    fn get(&self, seq: u16) -> Option<Sent> {
        self.history[Self::slot(seq)].filter(|s| s.seq == seq)
    }

    /// A packet of the media stream was handed to the pacer (`bytes` on the wire).
    pub fn on_queued(&mut self, now: Instant, seq: u16, bytes: u32) {
        self.history[Self::slot(seq)] = Some(Sent {
            seq,
            queued: now,
            left: None,
            resend_queued: None,
            resent: None,
            bytes,
        });
    }

    /// A packet of the media stream left the pacer: for the first time, or a resending of it.
    pub fn on_left(&mut self, now: Instant, seq: u16, resending: bool) {
        let slot = Self::slot(seq);
        if let Some(sent) = self.history[slot].as_mut().filter(|s| s.seq == seq) {
            if resending {
                sent.resend_queued = None;
                sent.resent = Some(now);
            } else if sent.left.is_none() {
                sent.left = Some(now);
            }
        }
    }

    /// When a packet left (or, not seen leaving, was handed over).
    pub fn left_at(&self, seq: u16) -> Option<(Instant, u32)> {
        self.get(seq).map(|s| (s.left.unwrap_or(s.queued), s.bytes))
    }

    /// The server asks for `seq` again. `rtt`: the round trip, when known; `target_bps`: what
    /// the connection may send now.
    pub fn decide(
        &mut self,
        now: Instant,
        seq: u16,
        rtt: Option<Duration>,
        target_bps: f64,
    ) -> Verdict {
        let verdict = self.judge(now, seq, rtt, target_bps);
        let c = &mut self.counts;
        match verdict {
            Verdict::Resend => c.resent += 1,
            Verdict::TooSoon => c.too_soon += 1,
            // Forgotten is too old too (or never ours: a confused server).
            Verdict::TooOld | Verdict::Unknown => c.too_old += 1,
            Verdict::OverBudget => c.over_budget += 1,
        }
        verdict
    }

    fn judge(&mut self, now: Instant, seq: u16, rtt: Option<Duration>, target_bps: f64) -> Verdict {
        let Some(sent) = self.get(seq) else {
            return Verdict::Unknown;
        };
        if sent.waiting(now) {
            return Verdict::TooSoon;
        }
        let left = sent.left.unwrap_or(sent.queued);
        if now.saturating_duration_since(left) > useful_for(rtt) {
            return Verdict::TooOld;
        }
        if let Some(last) = sent.resent
            && now.saturating_duration_since(last) < rtt.unwrap_or(UNKNOWN_RTT).max(MIN_INTERVAL)
        {
            return Verdict::TooSoon;
        }
        self.forget_spent_before(now);
        let per_second = BUDGET_SHARE * target_bps.max(0.0) / 8.0;
        let allowed = per_second * BUDGET_WINDOW.as_secs_f64();
        if (self.spent_bytes + u64::from(sent.bytes)) as f64 > allowed {
            return Verdict::OverBudget;
        }
        let depth = allowed * BURST;
        let since = self
            .filled
            .map_or(Duration::MAX, |at| now.saturating_duration_since(at));
        self.tokens = (self.tokens + per_second * since.as_secs_f64()).min(depth);
        self.filled = Some(now);
        if self.tokens <= 0.0 {
            return Verdict::OverBudget;
        }
        self.tokens -= f64::from(sent.bytes);
        self.spent.push_back((now, sent.bytes));
        self.spent_bytes += u64::from(sent.bytes);
        self.history[Self::slot(seq)] = Some(Sent {
            resend_queued: Some(now),
            ..sent
        });
        Verdict::Resend
    }

    fn forget_spent_before(&mut self, now: Instant) {
        while let Some(&(at, bytes)) = self.spent.front() {
            if now.saturating_duration_since(at) < BUDGET_WINDOW {
                break;
            }
            self.spent.pop_front();
            self.spent_bytes -= u64::from(bytes);
        }
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;
    /// 1 Mbit/s: 30 % over 500 ms is 18 750 bytes, 15 packets of 1 250.
    const TARGET: f64 = 1_000_000.0;

    /// Packets handed over and gone at `t0`.
    fn gate_with(t0: Instant, packets: std::ops::Range<u16>) -> RetransmitGate {
        let mut g = RetransmitGate::new();
        for seq in packets {
            g.on_queued(t0, seq, 1250);
            g.on_left(t0, seq, false);
        }
        g
    }

    /// What the gate answers, each resending taken to leave at once.
    fn ask(g: &mut RetransmitGate, at: Instant, seq: u16, rtt: Option<Duration>) -> Verdict {
        let v = g.decide(at, seq, rtt, TARGET);
        if v == Verdict::Resend {
            g.on_left(at, seq, true);
        }
        v
    }

    #[tokio::test(start_paused = true)]
    async fn a_packet_is_resent_at_most_once_per_round_trip() {
        let t0 = Instant::now();
        let mut g = gate_with(t0, 0..10);
        // The first request is answered however soon it comes.
        let rtt = Some(MS(150));
        assert_eq!(ask(&mut g, t0 + MS(10), 3, rtt), Verdict::Resend);
        // pion asks again 100 ms later, within the round trip of 150 ms: not answered.
        assert_eq!(ask(&mut g, t0 + MS(110), 3, rtt), Verdict::TooSoon);
        assert_eq!(ask(&mut g, t0 + MS(160), 3, rtt), Verdict::Resend);
        assert_eq!(ask(&mut g, t0 + MS(260), 3, rtt), Verdict::TooSoon);
        // Without a round trip, 100 ms; under a very short one, the floor.
        assert_eq!(ask(&mut g, t0 + MS(300), 3, None), Verdict::Resend);
        assert_eq!(ask(&mut g, t0 + MS(340), 3, None), Verdict::TooSoon);
        assert_eq!(ask(&mut g, t0 + MS(360), 3, Some(MS(1))), Verdict::Resend);
        assert_eq!(ask(&mut g, t0 + MS(365), 3, Some(MS(1))), Verdict::TooSoon);
        assert_eq!(g.counts().resent, 4);
        assert_eq!(g.counts().too_soon, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_packet_still_in_the_pacer_is_not_queued_again() {
        let t0 = Instant::now();
        let mut g = RetransmitGate::new();
        g.on_queued(t0, 7, 1250);
        // Asked for while it waits behind a key frame: it is on its way.
        assert_eq!(g.decide(t0 + MS(30), 7, None, TARGET), Verdict::TooSoon);
        g.on_left(t0 + MS(40), 7, false);
        assert_eq!(g.decide(t0 + MS(50), 7, None, TARGET), Verdict::Resend);
        // Its resending has not left yet: asked again, it is not queued a second time, however
        // long the round trip rule would allow.
        assert_eq!(
            g.decide(t0 + MS(200), 7, Some(MS(1)), TARGET),
            Verdict::TooSoon
        );
        g.on_left(t0 + MS(210), 7, true);
        assert_eq!(
            g.decide(t0 + MS(215), 7, Some(MS(1)), TARGET),
            Verdict::TooSoon
        );
        assert_eq!(
            g.decide(t0 + MS(225), 7, Some(MS(1)), TARGET),
            Verdict::Resend
        );
        // A packet never seen leaving (the pacer refused it) is not waited for forever.
        g.on_queued(t0, 8, 1250);
        assert_eq!(g.decide(t0 + MS(1001), 8, None, TARGET), Verdict::Resend);
    }

    #[tokio::test(start_paused = true)]
    async fn a_packet_is_useful_for_five_seconds_or_nine_round_trips() {
        assert_eq!(useful_for(None), MS(5000));
        assert_eq!(useful_for(Some(MS(20))), MS(5000));
        assert_eq!(useful_for(Some(MS(700))), MS(6300));
        let t0 = Instant::now();
        let mut g = gate_with(t0, 0..10);
        assert_eq!(ask(&mut g, t0 + MS(4999), 4, None), Verdict::Resend);
        assert_eq!(ask(&mut g, t0 + MS(5001), 5, None), Verdict::TooOld);
        assert_eq!(
            ask(&mut g, t0 + MS(6000), 6, Some(MS(700))),
            Verdict::Resend
        );
        assert_eq!(ask(&mut g, t0 + MS(200), 99, None), Verdict::Unknown);
        // Overwritten by a packet HISTORY later: the old number is forgotten.
        g.on_queued(t0 + MS(100), 7 + HISTORY as u16, 1250);
        assert_eq!(ask(&mut g, t0 + MS(200), 7, None), Verdict::Unknown);
        let c = g.counts();
        assert_eq!((c.too_old, c.resent), (3, 2));
    }

    /// Asks for `seqs` at `at`; the packets resent.
    fn resent(g: &mut RetransmitGate, at: Instant, seqs: std::ops::Range<u16>) -> Vec<u16> {
        seqs.filter(|&s| ask(g, at, s, None) == Verdict::Resend)
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn retransmissions_stay_within_their_share_of_the_target_and_are_spread_out() {
        // 1 Mbit/s: 30 % over 500 ms is 18 750 bytes (15 packets of 1 250), a quarter of that
        // at once (4 687: three packets, and a fourth on what is left), then 3 750 bytes every
        // 100 ms.
        let t0 = Instant::now();
        let mut g = gate_with(t0, 0..200);
        let at = t0 + MS(200);
        assert_eq!(resent(&mut g, at, 0..40), (0..4).collect::<Vec<_>>());
        assert_eq!(g.counts().over_budget, 36);
        // pion asks again every 100 ms: a few more each time, the oldest first, until the
        // window's 12 packets are spent; then more once the first have left it.
        let per_tick: Vec<usize> = (1..=5u16)
            .map(|i| resent(&mut g, at + MS(100 * u64::from(i)), 0..40).len())
            .collect();
        assert_eq!(per_tick, [3, 3, 3, 2, 4]);
        // Over any second of this, no more than a quarter of the target.
        let mut g = gate_with(t0, 0..2000);
        let mut bytes = 0u64;
        for tick in 0..10u64 {
            let first = (tick * 10) as u16;
            bytes += 1250 * resent(&mut g, t0 + MS(100 * tick), first..first + 100).len() as u64;
        }
        assert!(
            bytes as f64 <= BUDGET_SHARE * TARGET / 8.0,
            "{bytes} bytes in a second"
        );
        // A lower target, a smaller budget: at 300 kbit/s two packets at once (one, and one
        // on what is left), then one as soon as a little has accrued.
        let mut g = gate_with(t0, 0..100);
        let low = |g: &mut RetransmitGate, at, s| g.decide(at, s, None, 300_000.0);
        assert_eq!(low(&mut g, at, 0), Verdict::Resend);
        assert_eq!(low(&mut g, at, 1), Verdict::Resend);
        assert_eq!(low(&mut g, at, 2), Verdict::OverBudget);
        assert_eq!(low(&mut g, at + MS(40), 2), Verdict::OverBudget);
        assert_eq!(low(&mut g, at + MS(100), 2), Verdict::Resend);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pion_like_receiver_cannot_multiply_a_loss() {
        // 100 packets lost at once; the receiver asks for all of them every 100 ms for a second
        // while the round trip is 300 ms (a full queue). The answers stay within the budget.
        let t0 = Instant::now();
        let mut g = gate_with(t0, 0..100);
        let mut resent_bytes = 0u64;
        for round in 1..=10u64 {
            for seq in 0..100 {
                if ask(&mut g, t0 + MS(100 * round), seq, Some(MS(300))) == Verdict::Resend {
                    resent_bytes += 1250;
                }
            }
        }
        let allowed_per_second = BUDGET_SHARE * TARGET / 8.0;
        assert!(
            resent_bytes as f64 <= allowed_per_second * 1.01,
            "{resent_bytes} bytes resent in a second (allowed {allowed_per_second})"
        );
        // And nothing was resent twice within 300 ms: at most 4 sendings per packet in 1 s.
        assert!(g.counts().resent <= 100 * 4);
        assert!(g.counts().too_soon > 0 && g.counts().over_budget > 0);
    }
}
