//! Packets gathered into groups, and each group's delay against the one before it: the
//! delay gradient's input.
//!
//! The library forms groups on departure alone. A receiver that stalls (its CPU busy) then
//! stamps the packets it caught up on together, and read by departure alone that looks like
//! delay growing and then vanishing. libwebrtc's `InterArrival` folds packets that arrive in a
//! burst (within 5 ms of the group, sooner than they were sent, at most 100 ms of them) into
//! the group, so a stall reads as one late group; so does this.

use std::time::{Duration, Instant};

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
pub(super) struct GroupDelta {
    /// Arrival spacing minus departure spacing (ms).
    pub(super) delay_ms: f64,
    /// The group's last arrival, on the receiver's clock (ms).
    pub(super) arrival_ms: f64,
    /// The group's last departure.
    pub(super) departure: Instant,
}

/// Packets grouped as libwebrtc's `InterArrival` groups them.
#[derive(Debug, Clone, Default)]
pub(super) struct ArrivalGroups {
    current: Option<Group>,
    previous: Option<Group>,
}

impl ArrivalGroups {
    /// One more packet that arrived; the delta of the group it closed, if it closed one.
    pub(super) fn add(&mut self, departure: Instant, arrival: Duration) -> Option<GroupDelta> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: f64) -> Duration {
        Duration::from_secs_f64(ms / 1000.0)
    }

    /// Every delta `add` returned while taking `packets` (departure ms, arrival ms).
    fn deltas(groups: &mut ArrivalGroups, t0: Instant, packets: &[(f64, f64)]) -> Vec<GroupDelta> {
        packets
            .iter()
            .filter_map(|&(departure, arrival)| groups.add(t0 + ms(departure), ms(arrival)))
            .collect()
    }

    #[test]
    fn a_frame_s_packets_form_one_group_and_its_delta_is_the_growth_of_the_delay() {
        // Frames every 33 ms, two packets 1 ms apart; each frame waits 2 ms longer than the last.
        let t0 = Instant::now();
        let packets: Vec<(f64, f64)> = (0..4)
            .flat_map(|k| {
                let sent = f64::from(k) * 33.0;
                let delay = 20.0 + f64::from(k) * 2.0;
                [(sent, sent + delay), (sent + 1.0, sent + 1.0 + delay)]
            })
            .collect();
        let mut groups = ArrivalGroups::default();
        let d = deltas(&mut groups, t0, &packets);
        // Frame 3 is still open; frame 0 only serves as the reference for frame 1.
        assert_eq!(d.len(), 2, "{d:?}");
        assert!((d[0].delay_ms - 2.0).abs() < 1e-6, "{d:?}");
        assert!((d[0].arrival_ms - (34.0 + 22.0)).abs() < 1e-6, "{d:?}");
        assert_eq!(d[0].departure, t0 + ms(34.0));
        assert!((d[1].delay_ms - 2.0).abs() < 1e-6, "{d:?}");
    }

    #[test]
    fn what_a_stalled_receiver_stamps_at_once_is_one_late_group() {
        // Three frames the receiver stamped together at about 130 ms after a stall, then the
        // path as before (20 ms one way).
        let t0 = Instant::now();
        let packets = [
            (0.0, 20.0),
            (33.0, 130.0),
            (66.0, 130.5),
            (99.0, 131.0),
            (132.0, 152.0),
            (165.0, 185.0),
        ];
        let mut groups = ArrivalGroups::default();
        let d = deltas(&mut groups, t0, &packets);
        // Read on departure alone, the stall would be three deltas (+77, -32.5, -32.5 ms).
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(
            (d[0].delay_ms - (131.0 - 20.0 - 99.0)).abs() < 1e-6,
            "{d:?}"
        );
        assert_eq!(d[0].departure, t0 + ms(99.0));
        assert!(
            (d[1].delay_ms - (152.0 - 131.0 - 33.0)).abs() < 1e-6,
            "{d:?}"
        );
    }

    #[test]
    fn a_burst_is_folded_into_its_group_for_at_most_100_ms() {
        // Sent every 10 ms, caught up on 2 ms apart: the arrivals 100 ms after the group's first
        // begin a group of their own.
        let t0 = Instant::now();
        let packets: Vec<(f64, f64)> = (0..60)
            .map(|i| (f64::from(i) * 10.0, 400.0 + f64::from(i) * 2.0))
            .collect();
        let mut groups = ArrivalGroups::default();
        deltas(&mut groups, t0, &packets);
        let previous = groups.previous.expect("the burst's group closed");
        let current = groups.current.expect("a group is open");
        assert_eq!(previous.first_departure, t0);
        assert_eq!(previous.departure, t0 + ms(490.0));
        assert_eq!(current.first_departure, t0 + ms(500.0));
    }

    #[test]
    fn a_packet_reordered_behind_its_group_is_left_out() {
        let t0 = Instant::now();
        let mut groups = ArrivalGroups::default();
        deltas(&mut groups, t0, &[(0.0, 20.0), (33.0, 53.0)]);
        let before = groups.current.expect("a group is open");
        assert!(groups.add(t0 + ms(10.0), ms(60.0)).is_none());
        let after = groups.current.expect("a group is open");
        assert_eq!(
            (after.first_departure, after.departure, after.arrival),
            (before.first_departure, before.departure, before.arrival)
        );
    }
}
