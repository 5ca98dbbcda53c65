//! Google Congestion Control, assembled from `rtc-interceptor`'s own parts, with the
//! corrections that make its delay half work for a sender that follows its estimate.
//!
//! `rtc-interceptor` 0.21.1 ships `Gcc`: the delay gradient between packet groups filtered by a
//! Kalman filter (`SlopeEstimator`), an overuse detector with an adaptive threshold, AIMD rate
//! control (`RateController`) and a loss controller (`LossController`). On the box's uplink it
//! does not serve (the tests below put both through the same simulated bottleneck):
//!
//! 1. Its detector compares the filtered gradient (ms per group) with the threshold (12.5 ms at
//!    first). libwebrtc's `OveruseDetector::Detect` and aiortc after it compare the gradient
//!    *times the number of deltas seen, up to 60*. Unscaled, the queue behind a 1 Mbit/s uplink
//!    fed at 2.5 Mbit/s reads about 10 ms at its peak and never crosses: the delay half never
//!    acts, the estimate is the loss half's alone, which probes up by 5 % every 200 ms until
//!    the queue overflows, and the viewers see a freeze at every overflow.
//! 2. Its threshold rises with gain 0.01 and falls with 0.00018 (the draft's numbers): one
//!    burst of jitter leaves it high, and the detector blind, for tens of seconds. libwebrtc
//!    lets it fall quickly (0.039) and rise slowly (0.0087). [`Detector`] is that detector:
//!    scaled trend, libwebrtc's gains, the library's 10 ms / two-readings confirmation.
//! 3. Its rate controller cuts on every report while overuse lasts, each time to 85 % of what
//!    arrived. What arrives follows the encoder, which follows the estimate, so the cuts feed
//!    each other down to the floor. Here at most one cut per 500 ms (libwebrtc waits about a
//!    round trip before it cuts again).
//! 4. Its rate controller approaches the rate of its last cut additively (60 kbit/s per
//!    second) for good. After an uplink grows back, that is half a minute from 1 to 2.5
//!    Mbit/s. Here that memory is dropped 5 s after the last cut (libwebrtc drops it once the
//!    throughput leaves its error band), and growth is multiplicative again (8 % a second).
//!
//! Everything else is the library's: arrival groups and the Kalman filter, the received-rate
//! window, the AIMD rules, the loss controller, and `min` of the two halves.

use rtc::interceptor::{
    BandwidthEstimator, EstimatorStats, LossController, PacketReport, RateCalculator,
    RateController, SlopeEstimator, Usage,
};
use std::time::{Duration, Instant};

/// The draft's cap on the number of deltas the trend is multiplied by.
const MAX_DELTAS: u32 = 60;
/// At most one delay-based cut per this interval. The cut backs off to 85 % of what arrived,
/// and what arrives follows the encoder, which follows the estimate: cut after cut while the
/// detector still reads overuse would spiral down to the floor (libwebrtc waits for a round
/// trip before cutting again; the library's rate controller cuts on every report).
const CUT_EVERY: Duration = Duration::from_millis(500);
/// A rate that caused a cut is approached additively (the library's rule) for this long after
/// that cut, then forgotten: the uplink may have grown (libwebrtc forgets it once the
/// throughput leaves its error band; the library's rate controller never does, and climbs by
/// 60 kbit/s a second for good).
const CEILING_FOR: Duration = Duration::from_secs(5);

pub struct FixedGcc {
    slope: SlopeEstimator,
    detector: Detector,
    rate: RateCalculator,
    delay_control: RateController,
    loss_control: LossController,
    /// Group deltas seen so far (capped).
    deltas: u32,
    last_cut: Option<Instant>,
    /// Whether the rate controller still remembers the rate of the last cut.
    ceiling: bool,
    min: f64,
    max: f64,
    target: f64,
}

impl FixedGcc {
    /// An estimator starting at `initial`, held within `min..=max` (bit/s).
    pub fn new(initial: f64, min: f64, max: f64) -> Self {
        let initial = initial.clamp(min, max);
        FixedGcc {
            slope: SlopeEstimator::new(),
            detector: Detector::new(),
            rate: RateCalculator::default(),
            delay_control: RateController::new(initial, min, max),
            loss_control: LossController::new(initial, min, max),
            deltas: 0,
            last_cut: None,
            ceiling: false,
            min,
            max,
            target: initial,
        }
    }
}

impl BandwidthEstimator for FixedGcc {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        if reports.is_empty() {
            return;
        }
        let mut usage = self.detector.usage;
        for report in reports {
            if report.arrived {
                self.rate.add(now, report.size);
            }
            if let Some(trend) = self.slope.accumulate(report) {
                self.deltas = (self.deltas + 1).min(MAX_DELTAS);
                usage = self
                    .detector
                    .update(trend.at, trend.estimate_ms, self.deltas);
            }
        }
        let since_cut = self.last_cut.map(|at| now.saturating_duration_since(at));
        if usage == Usage::Over && since_cut.is_some_and(|d| d < CUT_EVERY) {
            // Hold (what an underuse reading does) until the last cut has had its effect.
            usage = Usage::Under;
        }
        if self.ceiling && since_cut.is_some_and(|d| d >= CEILING_FOR) {
            self.delay_control =
                RateController::new(self.delay_control.target(), self.min, self.max);
            self.ceiling = false;
        }
        let received = self.rate.rate_bits_per_second(now);
        let delay_target = self.delay_control.update(now, usage, received);
        if usage == Usage::Over && received.is_some() {
            self.last_cut = Some(now);
            self.ceiling = true;
        }
        let lost = reports.iter().filter(|r| !r.arrived).count();
        let loss_target = self.loss_control.update(now, lost, reports.len());
        let target = delay_target.min(loss_target).clamp(self.min, self.max);
        if target < self.target * 0.8 {
            // Which half cut, for whoever tunes this on a real uplink.
            log::debug!(
                "gcc: {:.0} -> {:.0} kbit/s: delay half {:.0} ({usage:?}, received {:.0}), loss half {:.0} ({lost} of {} lost)",
                self.target / 1000.0,
                target / 1000.0,
                delay_target / 1000.0,
                received.unwrap_or_default() / 1000.0,
                loss_target / 1000.0,
                reports.len()
            );
        }
        self.target = target;
    }

    fn target_bitrate(&self) -> f64 {
        self.target
    }

    fn stats(&self) -> EstimatorStats {
        let mut stats = EstimatorStats::default();
        stats.delay_based_bitrate = Some(self.delay_control.target());
        stats.loss_based_bitrate = Some(self.loss_control.target());
        stats.packet_loss = self.loss_control.average_loss();
        stats
    }
}

/// The overuse detector as libwebrtc runs it (corrections 1 and 2 above): the filtered trend
/// times the number of deltas against an adaptive threshold that rises slowly towards large
/// trends and falls quickly back.
#[derive(Debug, Clone)]
struct Detector {
    threshold_ms: f64,
    last_update: Option<Instant>,
    last_group: Option<Instant>,
    /// How long (ms of group spacing) the trend has been above the threshold.
    over_for_ms: Option<f64>,
    over_count: u32,
    previous_trend: f64,
    usage: Usage,
}

/// The threshold's start and bounds (ms), and how far outside it a trend may be and still move
/// it.
const THRESHOLD_START: f64 = 12.5;
const THRESHOLD_MIN: f64 = 6.0;
const THRESHOLD_MAX: f64 = 600.0;
const THRESHOLD_IGNORE_BEYOND: f64 = 15.0;
const GAIN_UP: f64 = 0.0087;
const GAIN_DOWN: f64 = 0.039;
/// Overuse is declared once the trend has been above the threshold for this long.
const OVERUSE_TIME_MS: f64 = 10.0;

impl Detector {
    fn new() -> Self {
        Detector {
            threshold_ms: THRESHOLD_START,
            last_update: None,
            last_group: None,
            over_for_ms: None,
            over_count: 0,
            previous_trend: 0.0,
            usage: Usage::Normal,
        }
    }

    /// One more group: `trend_ms` is the filtered delay gradient, `at` the group's departure.
    fn update(&mut self, at: Instant, trend_ms: f64, deltas: u32) -> Usage {
        let spacing_ms = self
            .last_group
            .map(|last| at.saturating_duration_since(last).as_secs_f64() * 1000.0)
            .unwrap_or(0.0);
        self.last_group = Some(at);
        if deltas < 2 {
            return self.usage;
        }
        let scaled = trend_ms * f64::from(deltas.min(MAX_DELTAS));
        if scaled > self.threshold_ms {
            let over = self
                .over_for_ms
                .map_or(spacing_ms / 2.0, |o| o + spacing_ms);
            self.over_for_ms = Some(over);
            self.over_count += 1;
            if over > OVERUSE_TIME_MS && self.over_count > 1 && trend_ms >= self.previous_trend {
                self.over_for_ms = Some(0.0);
                self.over_count = 0;
                self.usage = Usage::Over;
            }
        } else {
            self.over_for_ms = None;
            self.over_count = 0;
            self.usage = if scaled < -self.threshold_ms {
                Usage::Under
            } else {
                Usage::Normal
            };
        }
        self.previous_trend = trend_ms;
        self.adapt_threshold(at, scaled);
        self.usage
    }

    fn adapt_threshold(&mut self, at: Instant, scaled: f64) {
        let last = *self.last_update.get_or_insert(at);
        self.last_update = Some(at);
        let magnitude = scaled.abs();
        // A wild trend says something odd happened, not where the threshold belongs.
        if magnitude > self.threshold_ms + THRESHOLD_IGNORE_BEYOND {
            return;
        }
        let gain = if magnitude < self.threshold_ms {
            GAIN_DOWN
        } else {
            GAIN_UP
        };
        let elapsed_ms = at
            .saturating_duration_since(last)
            .min(Duration::from_millis(100))
            .as_secs_f64()
            * 1000.0;
        self.threshold_ms = (self.threshold_ms
            + gain * (magnitude - self.threshold_ms) * elapsed_ms)
            .clamp(THRESHOLD_MIN, THRESHOLD_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::Gcc;
    use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;
    use std::collections::VecDeque;

    /// What a closed loop of encoder, bottleneck and estimator did.
    struct Run {
        /// (seconds, estimate bit/s) at each feedback.
        estimates: Vec<(f64, f64)>,
        /// (seconds, delay-based estimate bit/s) at each feedback.
        delay_half: Vec<(f64, f64)>,
        /// (departure seconds, arrived) of every packet.
        packets: Vec<(f64, bool)>,
    }

    impl Run {
        fn loss_between(&self, from: f64, to: f64) -> f64 {
            let sent: Vec<_> = self
                .packets
                .iter()
                .filter(|(t, _)| (from..to).contains(t))
                .collect();
            sent.iter().filter(|(_, arrived)| !arrived).count() as f64 / sent.len() as f64
        }

        fn estimates_between(&self, from: f64, to: f64) -> impl Iterator<Item = f64> + '_ {
            self.estimates
                .iter()
                .filter(move |(t, _)| (from..to).contains(t))
                .map(|(_, e)| *e)
        }

        fn mean_estimate_between(&self, from: f64, to: f64) -> f64 {
            let e: Vec<f64> = self.estimates_between(from, to).collect();
            e.iter().sum::<f64>() / e.len() as f64
        }

        fn first_at_least(&self, from: f64, bps: f64) -> Option<f64> {
            self.estimates
                .iter()
                .find(|(t, e)| *t >= from && *e >= bps)
                .map(|(t, _)| *t)
        }
    }

    /// 30 fps video whose encoder follows 85 % of the estimate (at most 2.5 Mbit/s) into an
    /// uplink of `link(t)` bit/s with 300 ms of queue and 20 ms one way, TWCC feedback every
    /// 100 ms, for `secs`.
    fn bottleneck(
        estimator: &mut dyn BandwidthEstimator,
        link: impl Fn(f64) -> f64,
        secs: f64,
    ) -> Run {
        const PACKET: usize = 1200;
        const QUEUE: f64 = 0.3;
        const ONE_WAY: f64 = 0.02;
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let mut run = Run {
            estimates: vec![],
            delay_half: vec![],
            packets: vec![],
        };
        let mut link_free = 0.0f64;
        let mut in_flight: VecDeque<PacketReport> = VecDeque::new();
        let mut next_feedback = 0.1;
        let mut id = 0u64;
        for frame in 0..(secs * 30.0) as u64 {
            let t = frame as f64 / 30.0;
            while next_feedback <= t {
                let now = next_feedback;
                let mut batch = vec![];
                while let Some(r) = in_flight.front() {
                    let due = match r.arrival {
                        Some(a) => a.as_secs_f64() <= now,
                        None => {
                            r.departure.saturating_duration_since(t0).as_secs_f64() + QUEUE <= now
                        }
                    };
                    if !due {
                        break;
                    }
                    batch.push(in_flight.pop_front().expect("checked"));
                }
                estimator.on_reports(at(now), &batch);
                run.estimates.push((now, estimator.target_bitrate()));
                if let Some(d) = estimator.stats().delay_based_bitrate {
                    run.delay_half.push((now, d));
                }
                next_feedback += 0.1;
            }
            let rate = (estimator.target_bitrate() * 0.85).min(2_500_000.0);
            let mut frame_bytes = (rate / 8.0 / 30.0) as usize;
            let mut k = 0;
            while frame_bytes > 0 {
                let size = frame_bytes.min(PACKET);
                frame_bytes -= size;
                let departure = t + k as f64 * 0.0001;
                k += 1;
                let start = link_free.max(departure);
                let arrived = start - departure <= QUEUE;
                let arrival = start + (size * 8) as f64 / link(departure);
                if arrived {
                    link_free = arrival;
                }
                run.packets.push((departure, arrived));
                in_flight.push_back(PacketReport {
                    ssrc: 1,
                    id,
                    rtp_sequence_number: id as u16,
                    is_twcc: true,
                    twcc_sequence_number: id as u16,
                    size,
                    arrived,
                    departure: at(departure),
                    arrival: arrived.then(|| Duration::from_secs_f64(arrival + ONE_WAY)),
                    ecn: Ecn::default(),
                });
                id += 1;
            }
        }
        run
    }

    const START: f64 = 2_941_000.0;
    const MIN: f64 = 353_000.0;
    const ONE_MEGABIT: f64 = 1_000_000.0;

    #[test]
    fn the_library_gcc_never_sees_the_queue_and_the_uplink_keeps_overflowing() {
        let mut gcc = Gcc::new(START, MIN, START);
        let run = bottleneck(&mut gcc, |_| ONE_MEGABIT, 20.0);
        assert!(
            run.delay_half.iter().all(|(_, d)| *d >= START * 0.99),
            "the library's delay half reacted after all: {:?}",
            run.delay_half.iter().find(|(_, d)| *d < START * 0.99)
        );
        let loss = run.loss_between(10.0, 20.0);
        assert!(loss > 0.05, "loss {loss}");
    }

    #[test]
    fn fixed_it_finds_the_uplink_at_once_and_keeps_its_queue_from_overflowing() {
        let mut gcc = FixedGcc::new(START, MIN, START);
        let run = bottleneck(&mut gcc, |_| ONE_MEGABIT, 20.0);
        let first_cut = run
            .delay_half
            .iter()
            .find(|(_, d)| *d < START * 0.99)
            .map(|(t, _)| *t)
            .expect("the delay half reacts");
        assert!(first_cut < 1.0, "first delay-based cut after {first_cut} s");
        let loss = run.loss_between(5.0, 20.0);
        assert!(loss < 0.01, "loss {loss} once settled");
        let mean = run.mean_estimate_between(5.0, 20.0);
        assert!(
            (850_000.0..=1_300_000.0).contains(&mean),
            "mean estimate {mean} on a 1 Mbit/s uplink"
        );
        // Cuts never spiral down: the lowest estimate stays well above the floor.
        let lowest = run.estimates_between(5.0, 20.0).fold(f64::MAX, f64::min);
        assert!(lowest > 800_000.0, "lowest estimate {lowest}");
    }

    #[test]
    fn fixed_it_keeps_the_ceiling_on_a_wide_uplink() {
        let mut gcc = FixedGcc::new(START, MIN, START);
        let run = bottleneck(&mut gcc, |_| 10_000_000.0, 10.0);
        assert!(
            run.estimates.iter().all(|(_, e)| *e >= START * 0.99),
            "an uplink with room to spare made it back off"
        );
        assert_eq!(run.loss_between(0.0, 10.0), 0.0);
    }

    #[test]
    fn fixed_it_climbs_back_once_the_uplink_grows() {
        let mut gcc = FixedGcc::new(START, MIN, START);
        let run = bottleneck(
            &mut gcc,
            |t| if t < 15.0 { ONE_MEGABIT } else { 10_000_000.0 },
            45.0,
        );
        // Back to what lets the encoder run at 2 Mbit/s (80 % of its 2.5 Mbit/s ceiling).
        let back = run
            .first_at_least(15.0, 2_000_000.0 / 0.85)
            .expect("the estimate climbs back")
            - 15.0;
        assert!(back < 20.0, "back after {back:.1} s");
    }

    #[test]
    fn the_detector_scales_the_trend_and_lets_a_raised_threshold_fall_back() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut d = Detector::new();
        // A small steady gradient (0.5 ms per group): unscaled it is far below 12.5 ms; once
        // enough deltas have been seen, scaled, it is overuse.
        let mut usage = Usage::Normal;
        for i in 0..40u32 {
            usage = d.update(at(u64::from(i) * 33), 0.5, i + 1);
        }
        assert_eq!(usage, Usage::Over);
        // A moderate trend raises the threshold; a quiet path brings it straight back down.
        let mut d = Detector::new();
        d.update(at(0), 0.0, 60);
        d.update(at(33), 0.4, 60);
        let raised = d.threshold_ms;
        assert!(raised > THRESHOLD_START, "{raised}");
        for i in 2..40u64 {
            d.update(at(i * 33), 0.0, 60);
        }
        assert!(
            d.threshold_ms < THRESHOLD_MIN + 1.0,
            "threshold still {} on a quiet path",
            d.threshold_ms
        );
    }
}
