//! What the server tells the box about the path, gathered for the bitrate adaptation.
//!
//! Three kinds of server, three kinds of evidence:
//! - servers that send transport-wide congestion control feedback (Broadcast Box, browsers,
//!   GStreamer's webrtcbin): webrtc-rs's congestion control interceptor runs Google Congestion
//!   Control (`gcc/`) on it and attaches each new target to the feedback packet
//!   (`Attribute::TargetBitrateChanged`); [`FeedbackWatch`], application-ward of it, reads it;
//! - servers that estimate the rate themselves and say so in REMB (aiortc, from the
//!   abs-send-time stamps the box adds);
//! - every server's receiver reports: the loss they count feeds the loss half of GCC
//!   (`LossController`, the library's, reused as it is), and their timestamps give the round
//!   trip — when they carry them: pion's receiver reports (Broadcast Box) say LSR = 0, "no
//!   sender report received", because Broadcast Box never reads the RTCP of the tracks it
//!   receives, so pion's report interceptor never sees ours. The round trip then comes from
//!   the ICE consent checks the box sends 2.5 times a second (their answers' delay, as
//!   webrtc-rs measures it), which cross the same queues as the media.
//!
//! [`PathFeedback`] keeps the latest of each and decides which one speaks for the path: fresh
//! TWCC when there is any (GCC weighs delay and loss itself); otherwise the lower of REMB and
//! the loss-based estimate; and for a second after a NACK that shows heavy loss
//! (`nack_loss.rs`), no more than that NACK says: it comes before REMB or a receiver report
//! can. Not beside fresh TWCC: GCC sees every packet arrive or not, while a receiver that asks
//! for packets merely late (GStreamer's default) can name most of a stretch that is still on
//! its way. Time is an argument, so the choice is unit tested.

use super::pass_through::Tap;
use crate::lock::lock;
use crate::output::adapt::{Estimate, EstimateSource, PathReport, Retransmissions};
use crate::output::pump::CapacityProbe;
use rtc::interceptor::{
    BandwidthEstimator, EstimatorStats, LossController, Packet, PacketReport, TaggedPacket,
};
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// TWCC feedback comes many times a second; this long without any and it no longer counts.
const TWCC_FRESH: Duration = Duration::from_secs(2);
/// REMB comes about once a second while the server's estimate moves.
const REMB_FRESH: Duration = Duration::from_secs(5);
/// Receiver reports come every one to five seconds.
const REPORTS_FRESH: Duration = Duration::from_secs(12);
/// Sender reports remembered for matching the receiver reports' round-trip fields.
const SENT_REPORTS: usize = 16;
/// A round trip from the receiver reports counts this long; the consent checks' after it.
const RTT_FRESH: Duration = Duration::from_secs(12);
/// What a NACK showing heavy loss says holds this long: until the estimators have caught up
/// (the adaptation raises no higher than the lowest estimate of the last 2 s anyway).
const NACK_FRESH: Duration = Duration::from_secs(1);
/// What resendings take is their bytes over this last stretch (the budget's window).
const RESENDING_WINDOW: Duration = super::retransmit::BUDGET_WINDOW;

/// The latest word from the server about the path.
pub struct PathFeedback {
    /// GCC's target: where it started, then each change it announced.
    gcc_bps: f64,
    twcc_seen: Option<Instant>,
    gcc_stats: EstimatorStats,
    remb: Option<(f64, Instant)>,
    loss: LossController,
    reports_seen: Option<Instant>,
    /// (extended highest sequence number, cumulative lost) of the last report on our stream.
    last_block: Option<(u32, u32)>,
    rtt: Option<(Duration, Instant)>,
    /// The round trip of the latest ICE consent check.
    ice_rtt: Option<(Duration, Instant)>,
    /// What became of the server's NACKs (`nack_gate.rs`).
    retransmissions: Option<Retransmissions>,
    /// The rate a NACK showing heavy loss said to send at, and when (`nack_loss.rs`).
    nack_cap: Option<(f64, Instant)>,
    /// Wakes the adaptation when that must not wait for its next poll.
    urgent: Arc<Notify>,
    /// The resendings of the last window: when, and their bytes on the wire.
    resent: VecDeque<(Instant, u32)>,
    /// Our sender reports: the middle 32 bits of their NTP time, and when they left.
    sent: VecDeque<(u32, Instant)>,
}

impl PathFeedback {
    /// `initial`, `min` and `max` in bit/s, as GCC was given them.
    pub fn new(initial: f64, min: f64, max: f64) -> Self {
        PathFeedback {
            gcc_bps: initial,
            twcc_seen: None,
            gcc_stats: EstimatorStats::default(),
            remb: None,
            loss: LossController::new(initial, min, max),
            reports_seen: None,
            last_block: None,
            rtt: None,
            ice_rtt: None,
            retransmissions: None,
            nack_cap: None,
            urgent: Arc::new(Notify::new()),
            resent: VecDeque::new(),
            sent: VecDeque::new(),
        }
    }

    /// GCC has digested the server's latest transport-wide feedback.
    pub fn on_gcc(&mut self, now: Instant, target_bps: f64, stats: EstimatorStats) {
        self.twcc_seen = Some(now);
        if target_bps.is_finite() && target_bps > 0.0 {
            self.gcc_bps = target_bps;
        }
        self.gcc_stats = stats;
    }

    pub fn on_remb(&mut self, now: Instant, bps: f64) {
        if bps.is_finite() && bps > 0.0 {
            self.remb = Some((bps, now));
        }
    }

    /// One of our sender reports left (its 64-bit NTP time).
    pub fn on_sender_report(&mut self, now: Instant, ntp_time: u64) {
        if self.sent.len() == SENT_REPORTS {
            self.sent.pop_front();
        }
        self.sent.push_back(((ntp_time >> 16) as u32, now));
    }

    /// A report block about our stream: the loss since the last one feeds the loss-based
    /// estimator, its timestamps the round trip (RFC 3550 §6.4.1: now − LSR − DLSR).
    pub fn on_report_block(&mut self, now: Instant, block: &ReceptionReport) {
        self.reports_seen = Some(now);
        let seq = block.last_sequence_number;
        // The cumulative count is 24 bits, signed: duplicates can make it negative.
        let lost = block.total_lost & 0x00ff_ffff;
        if let Some((last_seq, last_lost)) = self.last_block {
            let expected = seq.wrapping_sub(last_seq);
            // A report that goes backwards, or jumps absurdly, starts the count afresh.
            if expected > 0 && expected < 1 << 20 {
                let lost_now = lost.wrapping_sub(last_lost) & 0x00ff_ffff;
                let lost_now = if lost_now > expected { 0 } else { lost_now };
                self.loss
                    .update(now.into_std(), lost_now as usize, expected as usize);
            }
        }
        self.last_block = Some((seq, lost));
        if block.last_sender_report != 0
            && let Some((_, sent_at)) = self
                .sent
                .iter()
                .find(|(mid, _)| *mid == block.last_sender_report)
        {
            let held = Duration::from_secs_f64(f64::from(block.delay) / 65536.0);
            if let Some(rtt) = now.saturating_duration_since(*sent_at).checked_sub(held) {
                self.rtt = Some((rtt, now));
            }
        }
    }

    /// An ICE consent check was answered after `rtt`.
    pub fn on_ice_rtt(&mut self, now: Instant, rtt: Duration) {
        self.ice_rtt = Some((rtt, now));
    }

    pub fn on_retransmissions(&mut self, counts: Retransmissions) {
        self.retransmissions = Some(counts);
    }

    /// A packet was resent (`bytes` on the wire).
    pub fn on_resent(&mut self, now: Instant, bytes: u32) {
        self.forget_resent_before(now);
        self.resent.push_back((now, bytes));
    }

    fn forget_resent_before(&mut self, now: Instant) {
        while self
            .resent
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= RESENDING_WINDOW)
        {
            self.resent.pop_front();
        }
    }

    /// What resendings take now, in bit/s.
    fn resending_bps(&self, now: Instant) -> f64 {
        let bytes: u64 = self
            .resent
            .iter()
            .filter(|(at, _)| now.saturating_duration_since(*at) < RESENDING_WINDOW)
            .map(|(_, b)| u64::from(*b))
            .sum();
        bytes as f64 * 8.0 / RESENDING_WINDOW.as_secs_f64()
    }

    /// A NACK showed heavy loss: send at most `bps` for a while. The first such NACK of an
    /// episode measures the bottleneck best, while the box still overfills it; those that
    /// follow within the while are the aftermath (the box's own lower rate into a queue still
    /// full), and taking them would ratchet the figure down (measured: 609, then 446 kbit/s
    /// on a 1 Mbit/s uplink).
    pub fn on_nack_loss(&mut self, now: Instant, bps: f64) {
        if !bps.is_finite() || bps <= 0.0 {
            return;
        }
        let current = self
            .nack_cap
            .filter(|(_, at)| now.saturating_duration_since(*at) <= NACK_FRESH);
        if current.is_none() {
            self.nack_cap = Some((bps, now));
            self.urgent.notify_one();
        }
    }

    /// The round trip: from the receiver reports while they give one, otherwise from the
    /// consent checks.
    pub fn rtt(&self, now: Instant) -> Option<Duration> {
        let fresh = |(rtt, at): (Duration, Instant)| {
            (now.saturating_duration_since(at) <= RTT_FRESH).then_some(rtt)
        };
        self.rtt
            .and_then(fresh)
            .or_else(|| self.ice_rtt.and_then(fresh))
    }

    /// What the path looks like now, and which estimate speaks for it.
    pub fn report(&self, now: Instant) -> PathReport {
        let fresh = |at: Option<Instant>, within| {
            at.is_some_and(|at| now.saturating_duration_since(at) <= within)
        };
        let estimate = if fresh(self.twcc_seen, TWCC_FRESH) {
            Some(Estimate {
                bps: self.gcc_bps,
                source: EstimateSource::Twcc,
            })
        } else {
            let remb = self
                .remb
                .filter(|(_, at)| fresh(Some(*at), REMB_FRESH))
                .map(|(bps, _)| Estimate {
                    bps,
                    source: EstimateSource::Remb,
                });
            let loss = fresh(self.reports_seen, REPORTS_FRESH)
                .then_some(())
                .and(self.loss.average_loss())
                .map(|_| Estimate {
                    bps: self.loss.target(),
                    source: EstimateSource::Loss,
                });
            let estimate = match (remb, loss) {
                (Some(r), Some(l)) => Some(if l.bps < r.bps { l } else { r }),
                (r, l) => r.or(l),
            };
            let nack = self
                .nack_cap
                .filter(|(_, at)| fresh(Some(*at), NACK_FRESH))
                .map(|(bps, _)| Estimate {
                    bps,
                    source: EstimateSource::Loss,
                });
            match (estimate, nack) {
                (Some(e), Some(n)) => Some(if n.bps < e.bps { n } else { e }),
                (e, n) => e.or(n),
            }
        };
        PathReport {
            estimate,
            loss: self.loss.average_loss(),
            rtt: self.rtt(now),
            retransmissions: self.retransmissions,
            resending_bps: Some(self.resending_bps(now)),
        }
    }
}

/// A congestion controller, with what it concluded copied into the shared feedback after
/// every batch of transport-wide feedback (the interceptor that drives it keeps it out of
/// reach otherwise).
pub struct ObservedGcc<E> {
    gcc: E,
    feedback: Arc<Mutex<PathFeedback>>,
}

impl<E: BandwidthEstimator> ObservedGcc<E> {
    pub fn new(gcc: E, feedback: Arc<Mutex<PathFeedback>>) -> Self {
        ObservedGcc { gcc, feedback }
    }
}

impl<E: BandwidthEstimator> BandwidthEstimator for ObservedGcc<E> {
    fn on_reports(&mut self, now: std::time::Instant, reports: &[PacketReport]) {
        self.gcc.on_reports(now, reports);
        lock(&self.feedback).on_gcc(
            Instant::from_std(now),
            self.gcc.target_bitrate(),
            self.gcc.stats(),
        );
    }

    fn target_bitrate(&self) -> f64 {
        self.gcc.target_bitrate()
    }

    fn handle_timeout(&mut self, now: std::time::Instant) {
        self.gcc.handle_timeout(now);
    }

    fn poll_timeout(&self) -> Option<std::time::Instant> {
        self.gcc.poll_timeout()
    }

    fn stats(&self) -> EstimatorStats {
        self.gcc.stats()
    }
}

/// The connection's side of the shared feedback: read by the adaptation loop.
#[derive(Clone)]
pub struct FeedbackProbe(pub Arc<Mutex<PathFeedback>>);

impl CapacityProbe for FeedbackProbe {
    fn report(&mut self, now: Instant) -> PathReport {
        lock(&self.0).report(now)
    }

    fn urgent(&self) -> Option<Arc<Notify>> {
        Some(lock(&self.0).urgent.clone())
    }
}

/// Reads the congestion controller's targets, REMB and receiver reports on the way in, and our
/// own sender reports on the way out. Changes nothing.
pub struct FeedbackWatch {
    feedback: Arc<Mutex<PathFeedback>>,
    ssrc: u32,
}

impl FeedbackWatch {
    /// `ssrc`: our video stream, the one whose report blocks count.
    pub fn new(feedback: Arc<Mutex<PathFeedback>>, ssrc: u32) -> Self {
        FeedbackWatch { feedback, ssrc }
    }
}

impl Tap for FeedbackWatch {
    fn inbound(&mut self, msg: &TaggedPacket) {
        let now = Instant::from_std(msg.now);
        if let Packet::Rtcp(packets) = &msg.message.packet
            && !packets.is_empty()
        {
            let mut feedback = lock(&self.feedback);
            for p in packets {
                let any = p.as_any();
                if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                    feedback.on_remb(now, f64::from(remb.bitrate));
                } else if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
                    for block in rr.reports.iter().filter(|b| b.ssrc == self.ssrc) {
                        feedback.on_report_block(now, block);
                    }
                } else if let Some(sr) = any.downcast_ref::<SenderReport>() {
                    for block in sr.reports.iter().filter(|b| b.ssrc == self.ssrc) {
                        feedback.on_report_block(now, block);
                    }
                }
            }
        }
    }

    fn outbound(&mut self, msg: &mut TaggedPacket) {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            for p in packets {
                if let Some(sr) = p.as_any().downcast_ref::<SenderReport>()
                    && sr.ssrc == self.ssrc
                {
                    lock(&self.feedback).on_sender_report(Instant::from_std(msg.now), sr.ntp_time);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: f64 = 2_941_000.0;

    fn feedback() -> PathFeedback {
        PathFeedback::new(START, 353_000.0, START)
    }

    fn block(seq: u32, lost: u32) -> ReceptionReport {
        ReceptionReport {
            ssrc: 7,
            last_sequence_number: seq,
            total_lost: lost,
            ..Default::default()
        }
    }

    fn secs(t0: Instant, s: f64) -> Instant {
        t0 + Duration::from_secs_f64(s)
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_heard_means_no_estimate() {
        let f = feedback();
        let r = f.report(Instant::now());
        assert_eq!(
            r,
            PathReport {
                resending_bps: Some(0.0),
                ..PathReport::default()
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn what_resendings_take_is_their_last_half_second() {
        let t0 = Instant::now();
        let mut f = feedback();
        for i in 0..10 {
            f.on_resent(secs(t0, 0.05 * f64::from(i)), 1250);
        }
        // 12 500 bytes in half a second: 200 kbit/s.
        assert_eq!(f.report(secs(t0, 0.46)).resending_bps, Some(200_000.0));
        assert_eq!(f.report(secs(t0, 0.75)).resending_bps, Some(80_000.0));
        assert_eq!(f.report(secs(t0, 1.0)).resending_bps, Some(0.0));
    }

    #[tokio::test(start_paused = true)]
    async fn fresh_twcc_speaks_for_the_path_and_stale_twcc_does_not() {
        let t0 = Instant::now();
        let mut f = feedback();
        f.on_gcc(t0, START, EstimatorStats::default());
        let e = f.report(t0).estimate.expect("an estimate");
        assert_eq!((e.bps, e.source), (START, EstimateSource::Twcc));
        f.on_gcc(secs(t0, 1.0), 900_000.0, EstimatorStats::default());
        assert_eq!(
            f.report(secs(t0, 1.5)).estimate.map(|e| e.bps),
            Some(900_000.0)
        );
        // REMB is there too, but TWCC wins while it is fresh.
        f.on_remb(secs(t0, 1.5), 400_000.0);
        assert_eq!(
            f.report(secs(t0, 2.0)).estimate.map(|e| e.source),
            Some(EstimateSource::Twcc)
        );
        // TWCC stops (the server stopped sending it): REMB takes over.
        let e = f.report(secs(t0, 3.1)).estimate.expect("an estimate");
        assert_eq!((e.bps, e.source), (400_000.0, EstimateSource::Remb));
        // And REMB goes stale too.
        assert_eq!(f.report(secs(t0, 7.0)).estimate, None);
    }

    #[tokio::test(start_paused = true)]
    async fn without_twcc_the_lower_of_remb_and_loss_wins() {
        let t0 = Instant::now();
        let mut f = feedback();
        f.on_remb(t0, 5_000_000.0);
        f.on_report_block(t0, &block(1000, 0));
        // One report: no loss figure yet, so REMB alone.
        assert_eq!(
            f.report(t0).estimate.map(|e| e.source),
            Some(EstimateSource::Remb)
        );
        // 30 % loss over the next 100 packets, a report a second: the loss half backs off
        // below REMB.
        let mut seq = 1000;
        let mut lost = 0;
        for i in 1..=5 {
            seq += 100;
            lost += 30;
            let t = secs(t0, f64::from(i));
            f.on_remb(t, 5_000_000.0);
            f.on_report_block(t, &block(seq, lost));
        }
        let r = f.report(secs(t0, 5.0));
        let e = r.estimate.expect("an estimate");
        assert_eq!(e.source, EstimateSource::Loss);
        assert!(e.bps < START * 0.6, "{}", e.bps);
        assert!((r.loss.expect("loss") - 0.3).abs() < 0.01, "{:?}", r.loss);
        // REMB falls below it: REMB wins.
        f.on_remb(secs(t0, 5.5), 300_000.0);
        assert_eq!(
            f.report(secs(t0, 5.5)).estimate.map(|e| (e.bps, e.source)),
            Some((300_000.0, EstimateSource::Remb))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_nack_showing_heavy_loss_caps_remb_for_a_second_but_not_twcc() {
        let t0 = Instant::now();
        let mut f = feedback();
        f.on_remb(t0, 2_500_000.0);
        f.on_nack_loss(secs(t0, 0.1), 800_000.0);
        let e = f.report(secs(t0, 0.2)).estimate.expect("an estimate");
        assert_eq!((e.bps, e.source), (800_000.0, EstimateSource::Loss));
        // Within the second the figure stands, higher or lower.
        f.on_nack_loss(secs(t0, 0.3), 1_200_000.0);
        f.on_nack_loss(secs(t0, 0.4), 700_000.0);
        assert_eq!(
            f.report(secs(t0, 0.5)).estimate.map(|e| e.bps),
            Some(800_000.0)
        );
        // Once the estimators have had a second, they speak again.
        f.on_remb(secs(t0, 1.3), 900_000.0);
        let e = f.report(secs(t0, 1.3)).estimate.expect("an estimate");
        assert_eq!((e.bps, e.source), (900_000.0, EstimateSource::Remb));
        // Alone (no estimator has spoken yet), it still caps.
        let mut f = feedback();
        f.on_nack_loss(t0, 600_000.0);
        assert_eq!(f.report(t0).estimate.map(|e| e.bps), Some(600_000.0));
        // Beside fresh TWCC it does not: GCC knows what arrived.
        let mut f = feedback();
        f.on_gcc(t0, 2_500_000.0, EstimatorStats::default());
        f.on_nack_loss(t0, 600_000.0);
        assert_eq!(f.report(t0).estimate.map(|e| e.bps), Some(2_500_000.0));
    }

    #[tokio::test(start_paused = true)]
    async fn clean_reports_let_the_loss_half_climb_back() {
        let t0 = Instant::now();
        let mut f = PathFeedback::new(1_000_000.0, 353_000.0, START);
        f.on_report_block(t0, &block(0, 0));
        for i in 1..=10u32 {
            f.on_report_block(secs(t0, f64::from(i)), &block(i * 100, 0));
        }
        let e = f.report(secs(t0, 10.0)).estimate.expect("an estimate");
        assert_eq!(e.source, EstimateSource::Loss);
        // 5 % per report (the library's rule) for 10 reports.
        assert!(e.bps > 1_500_000.0 && e.bps < 1_700_000.0, "{}", e.bps);
        assert_eq!(f.report(secs(t0, 10.0)).loss, Some(0.0));
    }

    #[tokio::test(start_paused = true)]
    async fn odd_report_blocks_do_not_poison_the_loss() {
        let t0 = Instant::now();
        let mut f = feedback();
        f.on_report_block(t0, &block(500, 10));
        // Backwards (a reordered or reset report): ignored, counting starts again from it.
        f.on_report_block(secs(t0, 1.0), &block(400, 10));
        // More lost than expected (duplicates, a restart): not counted as loss.
        f.on_report_block(secs(t0, 2.0), &block(450, 200));
        // A negative 24-bit cumulative count (duplicates) wraps without panicking.
        f.on_report_block(secs(t0, 3.0), &block(550, 0x00ff_fff0));
        assert!(f.report(secs(t0, 3.0)).loss.unwrap_or(0.0) < 0.01);
    }

    #[tokio::test(start_paused = true)]
    async fn the_round_trip_comes_from_our_own_sender_reports() {
        let t0 = Instant::now();
        let mut f = feedback();
        let ntp: u64 = 0xE000_1234_5678_0000;
        f.on_sender_report(t0, ntp);
        let mut b = block(100, 0);
        b.last_sender_report = (ntp >> 16) as u32;
        // The server held our report for 0.5 s (32768 / 65536) before answering.
        b.delay = 32768;
        f.on_report_block(secs(t0, 0.540), &b);
        let rtt = f.report(secs(t0, 0.6)).rtt.expect("a round trip");
        assert!(
            (rtt.as_secs_f64() - 0.040).abs() < 0.001,
            "{rtt:?} instead of 40 ms"
        );
        // A report naming a sender report we never sent leaves it alone.
        b.last_sender_report = 99;
        f.on_report_block(secs(t0, 1.0), &b);
        assert_eq!(f.report(secs(t0, 1.0)).rtt, Some(rtt));
    }

    #[tokio::test(start_paused = true)]
    async fn without_report_timestamps_the_consent_checks_give_the_round_trip() {
        let t0 = Instant::now();
        let mut f = feedback();
        // pion: receiver reports with LSR = 0 ("no sender report received").
        f.on_sender_report(t0, 0xE000_1234_5678_0000);
        f.on_report_block(secs(t0, 0.5), &block(100, 0));
        assert_eq!(f.report(secs(t0, 0.5)).rtt, None);
        f.on_ice_rtt(secs(t0, 0.6), Duration::from_millis(31));
        assert_eq!(f.rtt(secs(t0, 0.7)), Some(Duration::from_millis(31)));
        // A receiver report that carries the timestamps wins while it is fresh…
        let mut b = block(200, 0);
        b.last_sender_report = 0x1234_5678;
        f.on_report_block(secs(t0, 0.540), &b);
        assert_eq!(f.rtt(secs(t0, 1.0)), Some(Duration::from_millis(540)));
        // …and the consent checks take over again when it is not.
        f.on_ice_rtt(secs(t0, 20.0), Duration::from_millis(40));
        assert_eq!(f.rtt(secs(t0, 20.0)), Some(Duration::from_millis(40)));
        // Neither fresh: no round trip.
        assert_eq!(f.rtt(secs(t0, 40.0)), None);
    }
}
