//! Which NACKed packets are worth sending again: the decision, pure and clocked by its caller.
//!
//! A real server asks again: pion's NACK generator (Broadcast Box) repeats every 100 ms its
//! request for every packet still missing. A sender that answers every request multiplies a
//! loss episode — behind a 1 Mbit/s uplink the box once offered 30 Mbit/s of old packets. The
//! anchor is libwebrtc's sender: a packet is not resent within one round trip of its last
//! sending, and all retransmissions pass a rate limiter tied to the target. Here, a packet is
//! resent only when all of these hold:
//! - it is in the recent history (we sent it, on the media SSRC);
//! - it is still useful: sent first at most [`MAX_AGE`] ago (a live viewer has moved past an
//!   older packet: its jitter buffer has given up on it and waits for a key frame);
//! - it was not resent within the last round trip ([`UNKNOWN_RTT`] while none is known, never
//!   less than [`MIN_INTERVAL`]), so a request that crossed our last answer on the way does
//!   not cost the packet twice (the first request is always answered: libwebrtc's rule too);
//! - the retransmissions of the last [`BUDGET_WINDOW`] plus this one stay within
//!   [`BUDGET_SHARE`] of the current target (or of the path's estimate, when that is lower:
//!   with adaptation off the target can be far above what the path carries).
//!
//! webrtc-rs's NACK responder keeps the packets and builds the answer (on the media SSRC, or
//! as RTX where the server negotiated it); [`super::nack_gate`] sits wire-ward of it and hands
//! it only the requests this gate lets through.

pub use crate::output::adapt::Retransmissions as Counts;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// A packet first sent longer ago than this is not resent (the receiver's latency budget).
pub const MAX_AGE: Duration = Duration::from_millis(1000);
/// The least time between two resendings of one packet while no round trip is known (libwebrtc
/// starts from the same 100 ms).
pub const UNKNOWN_RTT: Duration = Duration::from_millis(100);
/// …and whatever the round trip: a measured 1 ms is not a promise that the last answer has
/// arrived 1 ms later. GStreamer's jitter buffer asks again after about twice its own round
/// trip, which on a short path is a few milliseconds; a floor much above that costs its
/// viewers frames (in the lab, 50 ms: 2 % of them under 5 % loss).
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// All retransmissions together stay within this share of the target…
pub const BUDGET_SHARE: f64 = 0.3;
/// …over any window this long.
pub const BUDGET_WINDOW: Duration = Duration::from_millis(500);
/// Packets remembered: a second and more of the ceiling's packets (2500 kbit/s ≈ 230 per
/// second), a power of two so a sequence number indexes it.
const HISTORY: usize = 2048;

/// What became of one requested packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Resend,
    /// Sent again (or first) within the last round trip.
    TooSoon,
    /// First sent longer than [`MAX_AGE`] ago.
    TooOld,
    /// The retransmission budget is spent.
    OverBudget,
    /// Not in the history (never sent, or long forgotten).
    Unknown,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    seq: u16,
    first: Instant,
    /// When it was last resent.
    resent: Option<Instant>,
    bytes: u32,
}

/// The history of one media stream and the retransmissions' spending.
pub struct RetransmitGate {
    history: Vec<Option<Sent>>,
    /// Retransmissions of the last window: when, and how many bytes.
    spent: VecDeque<(Instant, u32)>,
    spent_bytes: u64,
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
            counts: Counts::default(),
        }
    }

    /// A packet of the media stream went out for the first time (`bytes` on the wire).
    pub fn on_sent(&mut self, now: Instant, seq: u16, bytes: u32) {
        self.history[usize::from(seq) % HISTORY] = Some(Sent {
            seq,
            first: now,
            resent: None,
            bytes,
        });
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
        let slot = usize::from(seq) % HISTORY;
        let Some(sent) = self.history[slot].filter(|s| s.seq == seq) else {
            return Verdict::Unknown;
        };
        if now.saturating_duration_since(sent.first) > MAX_AGE {
            return Verdict::TooOld;
        }
        if let Some(last) = sent.resent
            && now.saturating_duration_since(last) < rtt.unwrap_or(UNKNOWN_RTT).max(MIN_INTERVAL)
        {
            return Verdict::TooSoon;
        }
        self.forget_spent_before(now);
        let allowed = BUDGET_SHARE * target_bps.max(0.0) / 8.0 * BUDGET_WINDOW.as_secs_f64();
        if (self.spent_bytes + u64::from(sent.bytes)) as f64 > allowed {
            return Verdict::OverBudget;
        }
        self.spent.push_back((now, sent.bytes));
        self.spent_bytes += u64::from(sent.bytes);
        self.history[slot] = Some(Sent {
            resent: Some(now),
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

    fn gate_with(t0: Instant, packets: std::ops::Range<u16>) -> RetransmitGate {
        let mut g = RetransmitGate::new();
        for seq in packets {
            g.on_sent(t0, seq, 1250);
        }
        g
    }

    #[tokio::test(start_paused = true)]
    async fn a_packet_is_resent_at_most_once_per_round_trip() {
        let t0 = Instant::now();
        let mut g = gate_with(t0, 0..10);
        // The first request is answered however soon it comes.
        let rtt = Some(MS(150));
        assert_eq!(g.decide(t0 + MS(10), 3, rtt, TARGET), Verdict::Resend);
        // pion asks again 100 ms later, within the round trip of 150 ms: not answered.
        assert_eq!(g.decide(t0 + MS(110), 3, rtt, TARGET), Verdict::TooSoon);
        assert_eq!(g.decide(t0 + MS(160), 3, rtt, TARGET), Verdict::Resend);
        assert_eq!(g.decide(t0 + MS(260), 3, rtt, TARGET), Verdict::TooSoon);
        // Without a round trip, 100 ms; under a very short one, the floor.
        assert_eq!(g.decide(t0 + MS(300), 3, None, TARGET), Verdict::Resend);
        assert_eq!(g.decide(t0 + MS(340), 3, None, TARGET), Verdict::TooSoon);
        assert_eq!(
            g.decide(t0 + MS(360), 3, Some(MS(1)), TARGET),
            Verdict::Resend
        );
        assert_eq!(
            g.decide(t0 + MS(365), 3, Some(MS(1)), TARGET),
            Verdict::TooSoon
        );
        assert_eq!(g.counts().resent, 4);
        assert_eq!(g.counts().too_soon, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn an_old_packet_or_one_never_sent_is_not_resent() {
        let t0 = Instant::now();
        let mut g = gate_with(t0, 0..10);
        assert_eq!(g.decide(t0 + MS(1001), 4, None, TARGET), Verdict::TooOld);
        assert_eq!(g.decide(t0 + MS(200), 99, None, TARGET), Verdict::Unknown);
        // Overwritten by a packet HISTORY later: the old number is forgotten.
        g.on_sent(t0 + MS(100), 5 + HISTORY as u16, 1250);
        assert_eq!(g.decide(t0 + MS(200), 5, None, TARGET), Verdict::Unknown);
        let c = g.counts();
        assert_eq!((c.too_old, c.resent), (3, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn retransmissions_stay_within_their_share_of_the_target() {
        let t0 = Instant::now();
        let mut g = gate_with(t0, 0..100);
        let at = t0 + MS(200);
        let verdicts: Vec<_> = (0..20).map(|s| g.decide(at, s, None, TARGET)).collect();
        assert_eq!(
            verdicts.iter().filter(|v| **v == Verdict::Resend).count(),
            15,
            "{verdicts:?}"
        );
        assert_eq!(g.counts().over_budget, 5);
        // The window moves on: room again 500 ms later.
        assert_eq!(
            g.decide(at + MS(499), 50, None, TARGET),
            Verdict::OverBudget
        );
        assert_eq!(g.decide(at + MS(500), 50, None, TARGET), Verdict::Resend);
        // A lower target, a smaller budget: 300 kbit/s allows 4 packets per window.
        let mut g = gate_with(t0, 0..100);
        let n = (0..20)
            .filter(|&s| g.decide(at, s, None, 300_000.0) == Verdict::Resend)
            .count();
        assert_eq!(n, 4);
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
                if g.decide(t0 + MS(100 * round), seq, Some(MS(300)), TARGET) == Verdict::Resend {
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
