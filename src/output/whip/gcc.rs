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
//! 3. Its Kalman filter, scaled as libwebrtc scales, lags: its gain is a few percent per group,
//!    so one burst of delay (a queue, or a receiver that stamped a few packets late because its
//!    CPU was busy) keeps the filtered gradient above the threshold for seconds after the delay
//!    stopped growing, the detector reads overuse all that time, and each cut lands on a
//!    received rate the previous cut already lowered, down to the floor. [`Trendline`] is
//!    libwebrtc's replacement for it: the slope of the smoothed accumulated delay over the last
//!    20 groups, which forgets a burst as soon as it leaves the window.
//! 4. Its arrival groups are formed on departure alone. A receiver that stalls stamps the
//!    packets it then catches up on together; libwebrtc (`InterArrival`) folds packets that
//!    arrive within 5 ms of the group and sooner than they were sent into the group (at most
//!    100 ms of them), so a stall reads as one late group, not as delay. [`ArrivalGroups`]
//!    does that.
//! 5. Its rate controller cuts on every report while overuse lasts, each time to 85 % of what
//!    arrived, and it measures what arrived on the box's clock, at the feedback's arrival:
//!    feedback that comes in clumps makes that rate jump. Here at most one cut per 500 ms
//!    (libwebrtc waits about a round trip before it cuts again), a further cut only once the
//!    detector has confirmed overuse afresh (a rising trend, not one that is falling because
//!    the last cut worked), and the received rate is measured on the receiver's arrival times
//!    (as libwebrtc's acknowledged bitrate is).
//! 6. Its rate controller approaches the rate of its last cut additively (60 kbit/s per
//!    second) for good. After an uplink grows back, that is half a minute from 1 to 2.5
//!    Mbit/s. Here the uplink's capacity is kept as libwebrtc's `LinkCapacityEstimator` keeps
//!    it (a running mean of the rates received at each cut, and their spread), and forgotten
//!    with the additive approach once what arrives leaves mean ± 3 deviations: above it, the
//!    uplink grew and growth is multiplicative again (8 % a second); below it at a cut, the
//!    uplink shrank.
//!
//! Everything else is the library's: the received-rate window, the AIMD rules, the loss
//! controller, and `min` of the two halves.

use rtc::interceptor::{
    BandwidthEstimator, EstimatorStats, LossController, PacketReport, RateCalculator,
    RateController, Usage,
};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The draft's cap on the number of deltas the trend is multiplied by.
const MAX_DELTAS: u32 = 60;
/// At most one delay-based cut per this interval. The cut backs off to 85 % of what arrived,
/// and what arrives follows the encoder, which follows the estimate: cut after cut while the
/// detector still reads overuse would spiral down to the floor (libwebrtc waits for a round
/// trip before cutting again; the library's rate controller cuts on every report).
const CUT_EVERY: Duration = Duration::from_millis(500);

pub struct FixedGcc {
    groups: ArrivalGroups,
    trendline: Trendline,
    detector: Detector,
    rate: RateCalculator,
    /// Where the receiver's clock (the reports' `arrival`) starts, as an `Instant` for `rate`.
    arrival_origin: Instant,
    /// The latest arrival reported, on the receiver's clock.
    latest_arrival: Option<Duration>,
    delay_control: RateController,
    loss_control: LossController,
    /// Group deltas seen so far (capped).
    deltas: u32,
    last_cut: Option<Instant>,
    /// The detector's count of overuse confirmations when it last cut.
    cut_on: u64,
    /// What the uplink carried when the detector cut: while the rate stays within its error
    /// band the rate controller approaches it additively (the library's rule after a cut).
    capacity: LinkCapacity,
    min: f64,
    max: f64,
    target: f64,
}

impl FixedGcc {
    /// An estimator starting at `initial`, held within `min..=max` (bit/s).
    pub fn new(initial: f64, min: f64, max: f64) -> Self {
        let initial = initial.clamp(min, max);
        FixedGcc {
            groups: ArrivalGroups::default(),
            trendline: Trendline::default(),
            detector: Detector::new(),
            rate: RateCalculator::default(),
            arrival_origin: Instant::now(),
            latest_arrival: None,
            delay_control: RateController::new(initial, min, max),
            loss_control: LossController::new(initial, min, max),
            deltas: 0,
            last_cut: None,
            cut_on: 0,
            capacity: LinkCapacity::default(),
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
            let Some(arrival) = report.arrival.filter(|_| report.arrived) else {
                continue;
            };
            self.rate.add(self.arrival_origin + arrival, report.size);
            self.latest_arrival = self.latest_arrival.max(Some(arrival));
            if let Some(delta) = self.groups.add(report.departure, arrival) {
                self.deltas = (self.deltas + 1).min(MAX_DELTAS);
                let trend = self.trendline.update(delta.arrival_ms, delta.delay_ms);
                usage = self.detector.update(delta.departure, trend, self.deltas);
            }
        }
        let since_cut = self.last_cut.map(|at| now.saturating_duration_since(at));
        if usage == Usage::Over
            && (since_cut.is_some_and(|d| d < CUT_EVERY) || self.detector.overuses == self.cut_on)
        {
            // Hold (what an underuse reading does) until the last cut has had its effect, and
            // cut again only on fresh evidence: the detector stays `Over` while the trend is
            // above the threshold, also while it falls because the last cut worked.
            usage = Usage::Under;
        }
        let received = self
            .latest_arrival
            .and_then(|a| self.rate.rate_bits_per_second(self.arrival_origin + a));
        if let Some(received) = received {
            let above = usage != Usage::Over && self.capacity.upper().is_some_and(|u| received > u);
            let below = usage == Usage::Over && self.capacity.lower().is_some_and(|l| received < l);
            if above || below {
                // The uplink changed: forget its old capacity, and with it the rate controller's
                // additive approach to it (it grows multiplicatively again).
                self.capacity = LinkCapacity::default();
                self.delay_control =
                    RateController::new(self.delay_control.target(), self.min, self.max);
            }
        }
        let delay_target = self.delay_control.update(now, usage, received);
        if let (Usage::Over, Some(received)) = (usage, received) {
            self.last_cut = Some(now);
            self.cut_on = self.detector.overuses;
            self.capacity.on_overuse(received);
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

/// The uplink's capacity as libwebrtc's `LinkCapacityEstimator` keeps it: a running mean of
/// the rates received when the detector saw overuse, and their spread relative to the mean.
/// A received rate outside mean ± 3 deviations says the uplink is no longer what it was.
#[derive(Debug, Clone, Copy)]
struct LinkCapacity {
    /// kbit/s.
    mean: Option<f64>,
    /// Variance over the mean (kbit/s), held within libwebrtc's 0.4..=2.5.
    variance: f64,
}

impl Default for LinkCapacity {
    fn default() -> Self {
        LinkCapacity {
            mean: None,
            variance: 0.4,
        }
    }
}

impl LinkCapacity {
    const ALPHA: f64 = 0.05;

    fn on_overuse(&mut self, received_bps: f64) {
        let sample = received_bps / 1000.0;
        let mean = match self.mean {
            None => sample,
            Some(m) => (1.0 - Self::ALPHA) * m + Self::ALPHA * sample,
        };
        let error = mean - sample;
        self.variance = ((1.0 - Self::ALPHA) * self.variance
            + Self::ALPHA * error * error / mean.max(1.0))
        .clamp(0.4, 2.5);
        self.mean = Some(mean);
    }

    fn deviation(&self, mean: f64) -> f64 {
        (self.variance * mean).sqrt()
    }

    /// bit/s.
    fn upper(&self) -> Option<f64> {
        self.mean.map(|m| (m + 3.0 * self.deviation(m)) * 1000.0)
    }

    /// bit/s.
    fn lower(&self) -> Option<f64> {
        self.mean.map(|m| (m - 3.0 * self.deviation(m)) * 1000.0)
    }
}

/// Packets sent within this long of a group's first form one group (libwebrtc, the library).
const GROUP_SPAN: Duration = Duration::from_millis(5);
/// A packet that arrives within this long of its group's last, and sooner after it than it was
/// sent, arrived in a burst (the receiver caught up) and joins the group (libwebrtc).
const BURST_GAP: Duration = Duration::from_millis(5);
/// A burst is folded into its group for at most this long (libwebrtc).
const BURST_MAX: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy)]
struct Group {
    first_departure: Instant,
    departure: Instant,
    first_arrival: Duration,
    arrival: Duration,
}

/// One group's delay relative to the group before it.
#[derive(Debug, Clone, Copy)]
struct GroupDelta {
    /// Arrival spacing minus departure spacing (ms).
    delay_ms: f64,
    /// The group's last arrival, on the receiver's clock (ms).
    arrival_ms: f64,
    /// The group's last departure.
    departure: Instant,
}

/// Packets grouped as libwebrtc's `InterArrival` groups them (correction 4).
#[derive(Debug, Clone, Default)]
struct ArrivalGroups {
    current: Option<Group>,
    previous: Option<Group>,
}

impl ArrivalGroups {
    /// One more packet that arrived; the delta of the group it closed, if it closed one.
    fn add(&mut self, departure: Instant, arrival: Duration) -> Option<GroupDelta> {
        let fresh = Group {
            first_departure: departure,
            departure,
            first_arrival: arrival,
            arrival,
        };
        let Some(current) = self.current.as_mut() else {
            self.current = Some(fresh);
            return None;
        };
        if departure < current.first_departure {
            // Reordered behind its group: it says nothing about the path's trend.
            return None;
        }
        let sent_after = departure.saturating_duration_since(current.departure);
        let burst = arrival >= current.arrival
            && arrival - current.arrival <= BURST_GAP
            && arrival - current.arrival < sent_after
            && arrival.saturating_sub(current.first_arrival) < BURST_MAX;
        if departure.saturating_duration_since(current.first_departure) <= GROUP_SPAN
            || sent_after.is_zero()
            || burst
        {
            current.departure = current.departure.max(departure);
            current.arrival = current.arrival.max(arrival);
            return None;
        }
        let closed = *current;
        self.current = Some(fresh);
        let delta = self.previous.map(|previous| GroupDelta {
            delay_ms: (closed.arrival.as_secs_f64()
                - previous.arrival.as_secs_f64()
                - closed
                    .departure
                    .saturating_duration_since(previous.departure)
                    .as_secs_f64())
                * 1000.0,
            arrival_ms: closed.arrival.as_secs_f64() * 1000.0,
            departure: closed.departure,
        });
        self.previous = Some(closed);
        delta
    }
}

/// Groups in the trend's window, the smoothing of the accumulated delay, and the gain the trend
/// is multiplied by before it meets the threshold (libwebrtc's `TrendlineEstimator` defaults).
const TREND_WINDOW: usize = 20;
const TREND_SMOOTHING: f64 = 0.9;
const TREND_GAIN: f64 = 4.0;
const TREND_MIN_POINTS: usize = 3;

/// libwebrtc's trendline estimator (correction 3): the least-squares slope of the smoothed
/// accumulated delay against arrival time over the last [`TREND_WINDOW`] groups.
#[derive(Debug, Clone, Default)]
struct Trendline {
    accumulated_ms: f64,
    smoothed_ms: f64,
    first_arrival_ms: Option<f64>,
    /// (arrival ms since the first, smoothed accumulated delay ms).
    window: VecDeque<(f64, f64)>,
    trend: f64,
}

impl Trendline {
    /// One more group delta; the trend (ms of delay per ms) times [`TREND_GAIN`].
    fn update(&mut self, arrival_ms: f64, delay_ms: f64) -> f64 {
        let first = *self.first_arrival_ms.get_or_insert(arrival_ms);
        self.accumulated_ms += delay_ms;
        self.smoothed_ms =
            TREND_SMOOTHING * self.smoothed_ms + (1.0 - TREND_SMOOTHING) * self.accumulated_ms;
        self.window
            .push_back((arrival_ms - first, self.smoothed_ms));
        if self.window.len() > TREND_WINDOW {
            self.window.pop_front();
        }
        // libwebrtc waits for a full window; a sender that starts above its uplink fills the
        // queue before 20 groups have arrived, so the first groups speak for themselves (their
        // weight is small anyway: the detector scales the trend by the number of deltas).
        if self.window.len() >= TREND_MIN_POINTS
            && let Some(slope) = slope(&self.window)
        {
            self.trend = slope;
        }
        self.trend * TREND_GAIN
    }
}

/// The least-squares slope of `points`, if they are not all at one x.
fn slope(points: &VecDeque<(f64, f64)>) -> Option<f64> {
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (
            num + (x - mean_x) * (y - mean_y),
            den + (x - mean_x) * (x - mean_x),
        )
    });
    (den != 0.0).then(|| num / den)
}

/// The overuse detector as libwebrtc runs it (corrections 1 and 2 above): the trend
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
    /// Overuse confirmations so far (a rising trend above the threshold for long enough).
    overuses: u64,
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
            overuses: 0,
        }
    }

    /// One more group: `trend_ms` is the (gained) delay trend, `at` the group's departure.
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
                self.overuses += 1;
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
        bottleneck_stamped(estimator, link, secs, |arrival| arrival)
    }

    /// [`bottleneck`] with a receiver that stamps a packet that arrived at `a` s with
    /// `stamp(a)` (not before an earlier packet's stamp).
    fn bottleneck_stamped(
        estimator: &mut dyn BandwidthEstimator,
        link: impl Fn(f64) -> f64,
        secs: f64,
        stamp: impl FnMut(f64) -> f64,
    ) -> Run {
        bottleneck_with(estimator, link, secs, stamp, 0.0, &mut |_, e| {
            (e * 0.85).min(2_500_000.0)
        })
    }

    /// [`bottleneck_stamped`] with a key frame every 2 s that takes `key_frame_ms` of the
    /// encoder's rate (the rest of the GOP shares what is left, so the mean rate is the same;
    /// 0 = every frame alike).
    fn bottleneck_with(
        estimator: &mut dyn BandwidthEstimator,
        link: impl Fn(f64) -> f64,
        secs: f64,
        mut stamp: impl FnMut(f64) -> f64,
        key_frame_ms: f64,
        encoder: &mut dyn FnMut(Instant, f64) -> f64,
    ) -> Run {
        const GOP: u64 = 60;
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
        let mut stamped = 0.0f64;
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
            let rate = encoder(at(t), estimator.target_bitrate());
            let gop_bytes = rate / 8.0 * GOP as f64 / 30.0;
            let key_bytes = (rate / 8.0 * key_frame_ms / 1000.0).min(gop_bytes);
            let mut frame_bytes = if key_frame_ms == 0.0 {
                (gop_bytes / GOP as f64) as usize
            } else if frame % GOP == 0 {
                key_bytes as usize
            } else {
                ((gop_bytes - key_bytes) / (GOP - 1) as f64) as usize
            };
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
                    stamped = stamp(arrival + ONE_WAY).max(stamped + 0.000_001);
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
                    arrival: arrived.then(|| Duration::from_secs_f64(stamped)),
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

    /// A receiver whose CPU is busy: now and then it stops stamping arrivals for 10 to 200 ms,
    /// then stamps what it caught up on within 2 ms, in order. No queue anywhere.
    fn busy_receiver(seed: u64) -> impl FnMut(f64) -> f64 {
        use rand::rngs::SmallRng;
        use rand::{RngExt, SeedableRng};
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut stalls = vec![];
        let mut at = 0.0;
        while at < 120.0 {
            at += rng.random_range(0.1..1.0);
            let len = rng.random_range(0.01..0.2);
            stalls.push((at, at + len));
            at += len;
        }
        move |arrival| {
            stalls
                .iter()
                .find(|(from, to)| (*from..*to).contains(&arrival))
                .map_or(arrival, |(from, to)| to + (arrival - from) * 0.01)
        }
    }

    #[test]
    fn fixed_it_does_not_spiral_down_behind_a_busy_receiver() {
        for seed in 1..=5 {
            let mut gcc = FixedGcc::new(START, MIN, START);
            let run = bottleneck_stamped(&mut gcc, |_| ONE_MEGABIT, 40.0, busy_receiver(seed));
            let lowest = run.estimates_between(5.0, 40.0).fold(f64::MAX, f64::min);
            let mean = run.mean_estimate_between(5.0, 40.0);
            let loss = run.loss_between(5.0, 40.0);
            eprintln!("seed {seed}: lowest {lowest:.0}, mean {mean:.0}, loss {loss:.3}");
            assert!(
                lowest > 600_000.0,
                "seed {seed}: lowest estimate {lowest:.0}"
            );
            assert!(loss < 0.01, "seed {seed}: loss {loss}");
        }
    }

    #[test]
    fn fixed_it_climbs_back_behind_a_busy_receiver() {
        for seed in 1..=5 {
            let mut gcc = FixedGcc::new(START, MIN, START);
            let run = bottleneck_stamped(
                &mut gcc,
                |t| if t < 15.0 { ONE_MEGABIT } else { 10_000_000.0 },
                45.0,
                busy_receiver(seed),
            );
            let back = run
                .first_at_least(15.0, 2_000_000.0 / 0.85)
                .map(|t| t - 15.0);
            assert!(
                back.is_some_and(|b| b < 20.0),
                "seed {seed}: back after {back:?} s"
            );
            let back = back.expect("asserted just above");
            let lowest_after = run
                .estimates_between(15.0 + back, 45.0)
                .fold(f64::MAX, f64::min);
            eprintln!("seed {seed}: back after {back:.1} s, lowest after {lowest_after:.0}");
            // Once back, a busy receiver on a wide uplink does not knock it down again.
            assert!(
                lowest_after >= 2_000_000.0 / 0.85,
                "seed {seed}: back down to {lowest_after:.0}"
            );
        }
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

    /// The encoder as the box drives it: the adaptation's controller between the estimate and
    /// the encoder's bitrate.
    fn controlled(share: f64) -> impl FnMut(Instant, f64) -> f64 {
        use crate::output::adapt::controller::{Controller, ControllerSettings};
        let mut settings = ControllerSettings::new(300, 2500);
        settings.share = share;
        let mut controller = Controller::new(settings, 2500);
        move |now, estimate| {
            controller.observe(tokio::time::Instant::from_std(now), estimate);
            f64::from(controller.target_kbps()) * 1000.0
        }
    }

    /// The encoder's key frames are bursts the bottleneck must queue. Bounded to 100 ms of the
    /// rate they leave the estimate near the uplink and lose nothing; at x264enc's default
    /// rate buffer (600 ms), a key frame on a full uplink overflows its 300 ms queue every 2 s.
    /// (The box bounds x264's to 200 ms: `media/encoder.rs` says why not less.)
    #[test]
    fn key_frames_within_a_tenth_of_a_second_fit_the_queue() {
        let run_with = |key_frame_ms: f64| {
            let mut gcc = FixedGcc::new(START, MIN, START);
            let mut encoder = controlled(crate::output::whip::ENCODER_SHARE);
            let run = bottleneck_with(
                &mut gcc,
                |_| ONE_MEGABIT,
                60.0,
                |a| a,
                key_frame_ms,
                &mut encoder,
            );
            let lowest = run.estimates_between(10.0, 60.0).fold(f64::MAX, f64::min);
            let mean = run.mean_estimate_between(10.0, 60.0);
            let loss = run.loss_between(10.0, 60.0);
            eprintln!(
                "key frames of {key_frame_ms} ms: lowest {lowest:.0}, mean {mean:.0}, loss {loss:.4}"
            );
            (lowest, mean, loss)
        };
        let (lowest, mean, loss) = run_with(100.0);
        assert!(loss < 0.01, "loss {loss}");
        assert!(mean > 850_000.0, "mean estimate {mean}");
        assert!(lowest > 650_000.0, "lowest estimate {lowest}");
        let (_, _, loss) = run_with(600.0);
        assert!(
            loss > 0.02,
            "600 ms key frames fitted after all: loss {loss}"
        );
    }

    #[test]
    fn the_uplink_s_capacity_is_forgotten_only_outside_its_error_band() {
        let mut c = LinkCapacity::default();
        assert_eq!((c.upper(), c.lower()), (None, None));
        for _ in 0..20 {
            c.on_overuse(1_000_000.0);
        }
        // Steady cuts at 1 Mbit/s: the spread stays at its floor (0.4), three deviations are
        // sqrt(0.4 x 1000) x 3 = 60 kbit/s.
        let upper = c.upper().expect("a mean");
        let lower = c.lower().expect("a mean");
        assert!((upper - 1_060_000.0).abs() < 1000.0, "upper {upper}");
        assert!((lower - 940_000.0).abs() < 1000.0, "lower {lower}");
        // Cuts that scatter widen the band (up to the ceiling of 2.5).
        for i in 0..40 {
            c.on_overuse(if i % 2 == 0 { 700_000.0 } else { 1_300_000.0 });
        }
        assert!(c.upper().expect("a mean") - c.lower().expect("a mean") > 200_000.0);
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
