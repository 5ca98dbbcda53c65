//! Google Congestion Control as libwebrtc runs it, assembled from `rtc-interceptor`'s parts.
//!
//! `rtc-interceptor` 0.21.1 ships a `Gcc` whose delay half does not serve a sender that follows
//! its estimate: behind a 1 Mbit/s uplink it never sees the queue, so its estimate is the loss
//! half's alone, probing up until the queue overflows (`sim.rs` runs both through the same
//! simulated bottleneck). Here the delay half is libwebrtc's, one part a file, each saying why it
//! replaces the library's: `arrival.rs` (packet groups), `trendline.rs` (the delay trend),
//! `detector.rs` (overuse against an adaptive threshold), `capacity.rs` (the uplink's capacity).
//! The library's own are the received-rate window, the AIMD rate controller, the loss controller
//! and `min` of the two halves; what this file changes in driving them is said where it does it.

mod arrival;
mod capacity;
mod detector;
#[cfg(test)]
mod sim;
mod trendline;

use arrival::ArrivalGroups;
use capacity::LinkCapacity;
use detector::{Detector, MAX_DELTAS};
use rtc::interceptor::{
    BandwidthEstimator, EstimatorStats, LossController, PacketReport, RateCalculator,
    RateController, Usage,
};
use std::time::{Duration, Instant};
use trendline::Trendline;

/// At most one delay-based cut per this interval. The cut backs off to 85 % of what arrived,
/// and what arrives follows the encoder, which follows the estimate: cut after cut while the
/// detector still reads overuse would spiral down to the floor (libwebrtc waits for a round
/// trip before cutting again; the library's rate controller cuts on every report).
const CUT_EVERY: Duration = Duration::from_millis(500);

/// GCC as libwebrtc runs it: the delay half from the parts beside this file, the rate and
/// loss controllers `rtc-interceptor`'s.
pub struct Gcc {
    groups: ArrivalGroups,
    trendline: Trendline,
    detector: Detector,
    /// What arrived, measured on the receiver's arrival times (as libwebrtc's acknowledged
    /// bitrate is): the library measures it on the box's clock as feedback comes in, and
    /// feedback that comes in clumps makes that rate jump.
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
    /// The detector's count of overuse confirmations when it last cut: a further cut needs a
    /// fresh one.
    cut_on: u64,
    /// What the uplink carried when the detector cut: while the rate stays within its error
    /// band the rate controller approaches it additively (the library's rule after a cut).
    capacity: LinkCapacity,
    min: f64,
    max: f64,
    target: f64,
}

impl Gcc {
    /// An estimator starting at `initial`, held within `min..=max` (bit/s).
    pub fn new(initial: f64, min: f64, max: f64) -> Self {
        let initial = initial.clamp(min, max);
        Gcc {
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

impl BandwidthEstimator for Gcc {
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
