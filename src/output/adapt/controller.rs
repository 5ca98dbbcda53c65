//! The pure decision: from an estimate of what the path carries to the encoder's target.
//!
//! The estimators (GCC, REMB, loss, the RTMP backlog) say what the path can take now; this says
//! what the encoder should do about it, between a floor and a ceiling. Cuts are made at once and
//! in full (a congested path gets worse every second it is fed too much). Raises go only as high
//! as the estimate has stayed for the last two seconds (so a cut is never undone by the next
//! wobble, and a bouncing estimate keeps the encoder at its low side), one a second at most, in
//! steps of at most a quarter. Changes smaller than a few per cent are not made at all. Time is
//! an argument.

use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Fixed in code; the defaults are the documented values.
#[derive(Debug, Clone, PartialEq)]
pub struct ControllerSettings {
    /// `encoder.min_bitrate_kbps`.
    pub floor_kbps: u32,
    /// `encoder.bitrate_kbps`.
    pub ceiling_kbps: u32,
    /// The encoder's share of the estimate: the rest is room for packet headers and whatever
    /// else the output's estimate counts. Default 0.85; each output sets its own
    /// (`whip::ENCODER_SHARE`, `rtmp::ENCODER_SHARE`), as what its estimates mean differs.
    pub share: f64,
    /// What else the connection carries at a steady rate (the sound's encoder bitrate): the
    /// estimate covers everything sent, so this much of it is not the picture's. Default 0.
    pub reserved_kbps: u32,
    /// A change smaller than this fraction of the target is not made (unless it reaches the
    /// floor or the ceiling). Default 0.05.
    pub deadband: f64,
    /// The most one raise adds, as a fraction of the target. Default 0.25.
    pub max_raise: f64,
    /// At most one raise per this interval. Default 1 s.
    pub raise_every: Duration,
    /// A raise goes no higher than the lowest estimate of this last stretch of time (so none
    /// comes sooner than this after a cut, while the path's queue drains). Default 2 s.
    pub raise_window: Duration,
}

impl ControllerSettings {
    pub fn new(floor_kbps: u32, ceiling_kbps: u32) -> Self {
        ControllerSettings {
            floor_kbps: floor_kbps.min(ceiling_kbps),
            ceiling_kbps,
            share: 0.85,
            reserved_kbps: 0,
            deadband: 0.05,
            max_raise: 0.25,
            raise_every: Duration::from_secs(1),
            raise_window: Duration::from_secs(2),
        }
    }

    /// The estimate (bit/s) at which the encoder would get exactly `kbps`.
    pub fn estimate_for(&self, kbps: u32) -> f64 {
        f64::from(kbps.saturating_add(self.reserved_kbps)) * 1000.0 / self.share
    }

    /// What the encoder should run at for an estimate, before deadband and pacing of raises.
    pub fn wanted_kbps(&self, estimate_bps: f64) -> u32 {
        let kbps = (estimate_bps * self.share / 1000.0 - f64::from(self.reserved_kbps)).round();
        if !kbps.is_finite() {
            return self.floor_kbps;
        }
        (kbps.max(0.0) as u32).clamp(self.floor_kbps, self.ceiling_kbps)
    }
}

/// One change of the encoder's target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub from_kbps: u32,
    pub to_kbps: u32,
}

impl Step {
    pub fn is_cut(&self) -> bool {
        self.to_kbps < self.from_kbps
    }
}

#[derive(Debug, Clone)]
pub struct Controller {
    settings: ControllerSettings,
    target_kbps: u32,
    last_raise: Option<Instant>,
    /// The estimates of the last `raise_window`, oldest first.
    recent: VecDeque<(Instant, f64)>,
}

/// Estimates kept for the raise window at most (a caller observing far more often than every
/// 50 ms gets a shorter memory, never an unbounded one).
const MAX_RECENT: usize = 64;

impl Controller {
    /// A controller whose encoder runs at `start_kbps` (clamped to floor..=ceiling).
    pub fn new(settings: ControllerSettings, start_kbps: u32) -> Self {
        let target_kbps = start_kbps.clamp(settings.floor_kbps, settings.ceiling_kbps);
        Controller {
            settings,
            target_kbps,
            last_raise: None,
            recent: VecDeque::new(),
        }
    }

    pub fn target_kbps(&self) -> u32 {
        self.target_kbps
    }

    pub fn settings(&self) -> &ControllerSettings {
        &self.settings
    }

    /// Folds in the current estimate (bit/s); returns the change to make, if any.
    pub fn observe(&mut self, now: Instant, estimate_bps: f64) -> Option<Step> {
        let estimate_bps = if estimate_bps.is_finite() {
            estimate_bps
        } else {
            0.0
        };
        while self.recent.len() >= MAX_RECENT
            || self.recent.front().is_some_and(|(at, _)| {
                now.saturating_duration_since(*at) > self.settings.raise_window
            })
        {
            self.recent.pop_front();
        }
        self.recent.push_back((now, estimate_bps));
        let target = self.target_kbps;
        let settings = &self.settings;
        let bound = |kbps: u32| kbps == settings.floor_kbps || kbps == settings.ceiling_kbps;
        let big = |diff: u32| f64::from(diff) >= f64::from(target) * settings.deadband;

        let now_wanted = settings.wanted_kbps(estimate_bps);
        let to = if now_wanted < target {
            if !(big(target - now_wanted) || bound(now_wanted)) {
                return None;
            }
            now_wanted
        } else {
            let lowest = self.recent.iter().map(|(_, e)| *e).fold(f64::MAX, f64::min);
            let held = settings.wanted_kbps(lowest);
            if held <= target || !(big(held - target) || bound(held)) {
                return None;
            }
            if self
                .last_raise
                .is_some_and(|at| now.saturating_duration_since(at) < settings.raise_every)
            {
                return None;
            }
            self.last_raise = Some(now);
            let most = (f64::from(target) * (1.0 + settings.max_raise)).ceil() as u32;
            held.min(most.max(target + 1))
        };
        self.target_kbps = to;
        Some(Step {
            from_kbps: target,
            to_kbps: to,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ControllerSettings {
        ControllerSettings::new(300, 2500)
    }

    /// The estimate (bit/s) that asks for exactly `kbps`.
    fn asks(kbps: u32) -> f64 {
        settings().estimate_for(kbps)
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let s = settings();
        assert_eq!((s.floor_kbps, s.ceiling_kbps), (300, 2500));
        assert_eq!(s.share, 0.85);
        assert_eq!(s.deadband, 0.05);
        assert_eq!(s.max_raise, 0.25);
        assert_eq!(s.raise_every, Duration::from_secs(1));
        assert_eq!(s.raise_window, Duration::from_secs(2));
        // The floor never lies above the ceiling.
        assert_eq!(ControllerSettings::new(800, 500).floor_kbps, 500);
    }

    #[test]
    fn the_sound_s_bitrate_is_taken_off_the_picture_s_share() {
        let mut s = ControllerSettings::new(300, 2500);
        s.reserved_kbps = 128;
        // 1 Mbit/s of path: 850 kbit/s for media, 128 of it the sound's.
        assert_eq!(s.wanted_kbps(1_000_000.0), 722);
        assert_eq!(s.estimate_for(722), 1_000_000.0);
        // A path too thin for both still leaves the picture its floor.
        assert_eq!(s.wanted_kbps(300_000.0), 300);
    }

    #[test]
    fn the_encoder_gets_its_share_of_the_estimate_within_floor_and_ceiling() {
        let s = settings();
        assert_eq!(s.wanted_kbps(1_000_000.0), 850);
        assert_eq!(s.wanted_kbps(100_000.0), 300, "the floor holds");
        assert_eq!(s.wanted_kbps(50_000_000.0), 2500, "the ceiling holds");
        assert_eq!(s.wanted_kbps(f64::NAN), 300);
        assert_eq!(s.wanted_kbps(-1.0), 300);
        assert_eq!(s.wanted_kbps(asks(1234)), 1234);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_is_made_at_once_and_in_full() {
        let t0 = Instant::now();
        let mut c = Controller::new(settings(), 2500);
        let step = c.observe(t0, 1_000_000.0).expect("a cut");
        assert_eq!(
            step,
            Step {
                from_kbps: 2500,
                to_kbps: 850
            }
        );
        assert!(step.is_cut());
        // A further fall 100 ms later is followed at once too.
        let step = c.observe(t0 + Duration::from_millis(100), asks(600));
        assert_eq!(step.map(|s| s.to_kbps), Some(600));
        assert_eq!(c.target_kbps(), 600);
    }

    #[tokio::test(start_paused = true)]
    async fn small_changes_are_not_made() {
        let t0 = Instant::now();
        let mut c = Controller::new(settings(), 1000);
        for (i, kbps) in [980u32, 1020, 960, 1040, 990].into_iter().enumerate() {
            let at = t0 + Duration::from_secs(5 * (i as u64 + 1));
            assert_eq!(c.observe(at, asks(kbps)), None, "{kbps}");
        }
        assert_eq!(c.target_kbps(), 1000);
        // But the floor and the ceiling are reached even by a small step.
        let mut c = Controller::new(settings(), 2450);
        assert_eq!(
            c.observe(t0 + Duration::from_secs(1), asks(3000))
                .map(|s| s.to_kbps),
            Some(2500)
        );
        let mut c = Controller::new(settings(), 310);
        assert_eq!(
            c.observe(t0 + Duration::from_secs(1), asks(100))
                .map(|s| s.to_kbps),
            Some(300)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn raises_wait_out_the_window_after_a_cut_and_come_one_a_second_in_steps() {
        let t0 = Instant::now();
        let mut c = Controller::new(settings(), 2500);
        c.observe(t0, asks(800)).expect("cut");
        // The path recovers at once: nothing while the low estimate is in the window.
        let mut steps = vec![];
        for tick in 1..=200u64 {
            let t = t0 + Duration::from_millis(100 * tick);
            if let Some(s) = c.observe(t, asks(2500)) {
                steps.push((tick * 100, s.to_kbps));
            }
        }
        // Then one step of at most 25 % a second, up to the ceiling.
        assert_eq!(
            steps,
            vec![
                (2100, 1000),
                (3100, 1250),
                (4100, 1563),
                (5100, 1954),
                (6100, 2443),
                (7100, 2500)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_estimate_holds_the_target_and_a_slow_climb_is_followed() {
        // GCC near a known ceiling climbs by about 60 kbit/s a second; the controller follows
        // in steps of at least the deadband.
        let t0 = Instant::now();
        let mut c = Controller::new(settings(), 800);
        let mut estimate = asks(800);
        let mut changes = 0;
        for tick in 1..=300u64 {
            let t = t0 + Duration::from_millis(100 * tick);
            estimate += 6_000.0;
            if c.observe(t, estimate).is_some() {
                changes += 1;
            }
        }
        let wanted = settings().wanted_kbps(estimate);
        assert!(
            c.target_kbps() <= wanted && c.target_kbps() as f64 >= wanted as f64 * 0.94,
            "target {} for an estimate asking {wanted}",
            c.target_kbps()
        );
        assert!(changes <= 30, "{changes} changes in 30 s");
    }

    #[tokio::test(start_paused = true)]
    async fn an_oscillating_estimate_does_not_make_the_encoder_oscillate_upwards() {
        // An estimate bouncing between 1.0 and 1.3 Mbit/s every 300 ms: the first fall is
        // followed, and no rise lasts the window, so the target stays at the low side.
        let t0 = Instant::now();
        let mut c = Controller::new(settings(), 2500);
        let mut raises = 0;
        for tick in 0..100u64 {
            let t = t0 + Duration::from_millis(300 * tick);
            let estimate = if tick % 2 == 0 {
                1_000_000.0
            } else {
                1_300_000.0
            };
            if let Some(s) = c.observe(t, estimate)
                && !s.is_cut()
            {
                raises += 1;
            }
        }
        assert_eq!(raises, 0, "raised while the estimate kept falling back");
        assert_eq!(c.target_kbps(), 850);
    }
}
