//! Bitrate that follows the uplink.
//!
//! Each connection measures its path its own way (WHIP: the Google Congestion Control assembled
//! in `output/whip/gcc/`, fed by the server's TWCC feedback, or the server's REMB and receiver
//! reports; RTMP: the send backlog) and reports an [`Estimate`]; the pure [`Controller`] turns
//! it into the encoder's target, which reaches the running encoder through the media side's
//! [`BitrateHandle`]. [`Adaptation`] is what every connection of a run shares: the settings, the
//! handle, the memory that lets a reconnect start from the last target, and what
//! `onair status` shows.

pub mod controller;

pub use controller::{Controller, ControllerSettings, Step};

use crate::config::EncoderConfig;
use crate::lock::lock;
use crate::media::BitrateHandle;
use crate::recorder::{Entry, FlightRecorder};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Where an estimate of the path's capacity came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EstimateSource {
    /// Google Congestion Control on the server's transport-wide congestion control feedback.
    Twcc,
    /// The server's own estimate (RTCP REMB).
    Remb,
    /// The loss the server's receiver reports tell of.
    Loss,
    /// RTMP: what the socket takes while a backlog builds up.
    Backlog,
}

impl EstimateSource {
    pub fn as_str(self) -> &'static str {
        match self {
            EstimateSource::Twcc => "twcc",
            EstimateSource::Remb => "remb",
            EstimateSource::Loss => "loss",
            EstimateSource::Backlog => "backlog",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Bits per second the path is judged to carry.
    pub bps: f64,
    pub source: EstimateSource,
}

/// What became of the server's requests to send packets again (NACKs), counted per packet
/// asked for. Field names are a public contract (README, `onair status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retransmissions {
    /// Packets sent again.
    pub resent: u64,
    /// Requests ignored: the packet was resent less than a round trip ago.
    pub too_soon: u64,
    /// Requests ignored: the packet is older than the viewers' latency budget (or forgotten).
    pub too_old: u64,
    /// Requests ignored: the retransmissions' share of the target was spent.
    pub over_budget: u64,
}

impl std::ops::Add for Retransmissions {
    type Output = Retransmissions;
    fn add(self, o: Retransmissions) -> Retransmissions {
        Retransmissions {
            resent: self.resent + o.resent,
            too_soon: self.too_soon + o.too_soon,
            too_old: self.too_old + o.too_old,
            over_budget: self.over_budget + o.over_budget,
        }
    }
}

/// What a connection knows about its path right now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PathReport {
    pub estimate: Option<Estimate>,
    /// Fraction of packets lost on the way (0–1), from the receiver's reports.
    pub loss: Option<f64>,
    pub rtt: Option<Duration>,
    /// This connection's answers to the server's NACKs so far (WHIP).
    pub retransmissions: Option<Retransmissions>,
    /// What its resendings take now, in bit/s (WHIP): kept off the encoder's share.
    pub resending_bps: Option<f64>,
}

/// What a connection may send now, in bit/s: the encoder's target and what is reserved beside
/// it (the sound). The pacer and the retransmissions' budget follow it.
#[derive(Clone)]
pub struct SendRate {
    encoder: BitrateHandle,
    reserved_kbps: u32,
}

impl SendRate {
    pub fn new(encoder: BitrateHandle, reserved_kbps: u32) -> Self {
        SendRate {
            encoder,
            reserved_kbps,
        }
    }

    pub fn bps(&self) -> f64 {
        f64::from(
            self.encoder
                .target_kbps()
                .saturating_add(self.reserved_kbps),
        ) * 1000.0
    }
}

/// `onair status`'s view of the adaptation. Field names are a public contract (README).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct AdaptStatus {
    /// `encoder.adapt`.
    pub enabled: bool,
    /// What the connection may send now (the encoder gets it less what resendings take).
    pub target_kbps: u32,
    pub min_kbps: u32,
    pub max_kbps: u32,
    /// The live connection's estimate of its path, and where it came from.
    pub estimate_kbps: Option<u32>,
    pub estimate_source: Option<EstimateSource>,
    pub loss_pct: Option<f64>,
    pub rtt_ms: Option<u32>,
    /// Changes of the target since start.
    pub steps: u64,
    /// The answers to the server's NACKs since start, over every connection (WHIP).
    pub retransmissions: Retransmissions,
}

/// A target is remembered for the next connection this long after its connection ended.
pub const REMEMBER_FOR: Duration = Duration::from_secs(120);
/// A change of the target by at least this fraction since the last one recorded goes to the
/// log at info level and into the flight recorder.
const LARGE_STEP: f64 = 0.25;

/// The last target of an earlier connection, and over which path it was reached.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Memory {
    pub kbps: u32,
    pub at: Instant,
    pub path: Option<IpAddr>,
}

/// Where a new connection starts: where the last one on the same path left off, if that was
/// recently; otherwise at the ceiling. A connection that died of congestion would only congest
/// its path again if it came back at the ceiling; a new path, or the same one much later, is
/// unknown, and the estimator finds its level within seconds from the top.
pub fn start_kbps(
    memory: Option<&Memory>,
    path: Option<IpAddr>,
    now: Instant,
    settings: &ControllerSettings,
) -> u32 {
    match memory {
        Some(m) if m.path == path && now.saturating_duration_since(m.at) <= REMEMBER_FOR => {
            m.kbps.clamp(settings.floor_kbps, settings.ceiling_kbps)
        }
        _ => settings.ceiling_kbps,
    }
}

/// What every connection of a run shares.
pub struct Adaptation {
    enabled: bool,
    settings: ControllerSettings,
    encoder: BitrateHandle,
    recorder: FlightRecorder,
    state: Mutex<State>,
}

struct State {
    memory: Option<Memory>,
    /// The retransmission counts of the connections that ended.
    earlier_retransmissions: Retransmissions,
    status: AdaptStatus,
    /// The target last written to the log and the flight recorder.
    logged_kbps: u32,
}

/// One connection's adaptation: its controller and its path.
pub struct Session {
    controller: Controller,
    path: Option<IpAddr>,
    /// The connection's retransmission counts, as last reported.
    retransmissions: Retransmissions,
}

impl Session {
    pub fn target_kbps(&self) -> u32 {
        self.controller.target_kbps()
    }
}

impl Adaptation {
    pub fn new(config: &EncoderConfig, encoder: BitrateHandle, recorder: FlightRecorder) -> Self {
        let settings = ControllerSettings::new(config.min_bitrate_kbps, config.bitrate_kbps);
        let status = AdaptStatus {
            enabled: config.adapt,
            target_kbps: config.bitrate_kbps,
            min_kbps: settings.floor_kbps,
            max_kbps: settings.ceiling_kbps,
            ..AdaptStatus::default()
        };
        Adaptation {
            enabled: config.adapt,
            settings,
            encoder,
            recorder,
            state: Mutex::new(State {
                memory: None,
                earlier_retransmissions: Retransmissions::default(),
                status,
                logged_kbps: config.bitrate_kbps,
            }),
        }
    }

    /// Gives the encoder `share` of every estimate (the output's: what its estimates mean).
    pub fn sharing(mut self, share: f64) -> Self {
        self.settings.share = share;
        self
    }

    /// Keeps `kbps` of every estimate for what the connection sends beside the picture at a
    /// steady rate (the sound), so the picture and the sound together fit the path.
    pub fn reserving(mut self, kbps: u32) -> Self {
        self.settings.reserved_kbps = kbps;
        self
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// What a connection may send now (the encoder's target and the reserve beside it).
    pub fn send_rate(&self) -> SendRate {
        SendRate::new(self.encoder.clone(), self.settings.reserved_kbps)
    }

    pub fn settings(&self) -> &ControllerSettings {
        &self.settings
    }

    pub fn status(&self) -> AdaptStatus {
        lock(&self.state).status.clone()
    }

    /// The target a connection over `path` would start at now.
    pub fn start_kbps(&self, path: Option<IpAddr>, now: Instant) -> u32 {
        if !self.enabled {
            return self.settings.ceiling_kbps;
        }
        start_kbps(lock(&self.state).memory.as_ref(), path, now, &self.settings)
    }

    /// The estimators' range (bit/s): starting where the encoder starts, and wide enough that
    /// the encoder's share of it reaches from the floor to the ceiling.
    pub fn estimator_range(&self, start_kbps: u32) -> (f64, f64, f64) {
        let s = &self.settings;
        (
            s.estimate_for(start_kbps),
            s.estimate_for(s.floor_kbps),
            s.estimate_for(s.ceiling_kbps),
        )
    }

    /// A connection over `path` begins: the encoder is set to where it starts.
    pub fn begin(&self, path: Option<IpAddr>, now: Instant) -> Session {
        let start = self.start_kbps(path, now);
        let session = Session {
            controller: Controller::new(self.settings.clone(), start),
            path,
            retransmissions: Retransmissions::default(),
        };
        if self.enabled {
            self.apply(start, "new connection");
        }
        session
    }

    /// Folds in what the connection knows about its path now.
    pub fn observe(&self, session: &mut Session, now: Instant, report: PathReport) {
        let step = match (self.enabled, report.estimate) {
            (true, Some(e)) => session.controller.observe(now, e.bps).map(|s| (s, e)),
            _ => None,
        };
        {
            let mut guard = lock(&self.state);
            let state = &mut *guard;
            let status = &mut state.status;
            status.estimate_kbps = report.estimate.map(|e| (e.bps / 1000.0).round() as u32);
            status.estimate_source = report.estimate.map(|e| e.source);
            status.loss_pct = report.loss.map(|l| (l * 1000.0).round() / 10.0);
            status.rtt_ms = report
                .rtt
                .map(|d| d.as_millis().min(u128::from(u32::MAX)) as u32);
            if let Some(r) = report.retransmissions {
                session.retransmissions = r;
                status.retransmissions = state.earlier_retransmissions + r;
            }
            if self.enabled {
                state.memory = Some(Memory {
                    kbps: session.controller.target_kbps(),
                    at: now,
                    path: session.path,
                });
            }
        }
        if let Some((step, estimate)) = step {
            let why = format!(
                "{} estimate {} kbit/s",
                estimate.source.as_str(),
                (estimate.bps / 1000.0).round()
            );
            self.apply(step.to_kbps, &why);
        }
        if self.enabled {
            self.protect(report.resending_bps.unwrap_or(0.0));
        }
    }

    /// Keeps what resendings take (bit/s) off the encoder's share, as libwebrtc keeps its
    /// protection off the encoder's: pictures and repairs together then stay within what the
    /// connection may send, and a repair after a loss burst neither overfills the path nor
    /// waits for a budget the pictures crowd out. The encoder never goes below the floor;
    /// changes of less than the controller's deadband are not made.
    fn protect(&self, resending_bps: f64) {
        let target = self.encoder.target_kbps();
        let room = target.saturating_sub(self.settings.floor_kbps);
        let wanted = ((resending_bps.max(0.0) / 1000.0).round() as u32).min(room);
        let now = self.encoder.protection_kbps();
        let small = f64::from(wanted.abs_diff(now)) < f64::from(target) * self.settings.deadband;
        if wanted != now && (wanted == 0 || !small) {
            self.encoder.set_protection(wanted);
        }
    }

    /// The connection ended: its path measurements are gone; its target is remembered.
    pub fn end(&self, session: &Session, now: Instant) {
        self.encoder.set_protection(0);
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        let status = &mut state.status;
        status.estimate_kbps = None;
        status.estimate_source = None;
        status.loss_pct = None;
        status.rtt_ms = None;
        state.earlier_retransmissions = state.earlier_retransmissions + session.retransmissions;
        if self.enabled {
            state.memory = Some(Memory {
                kbps: session.controller.target_kbps(),
                at: now,
                path: session.path,
            });
        }
    }

    /// Sets the encoder's target, counts it, and logs it when it is a large step.
    fn apply(&self, kbps: u32, why: &str) {
        let from = self.encoder.target_kbps();
        if from == kbps {
            return;
        }
        self.encoder.set_target(kbps);
        let large = {
            let mut state = lock(&self.state);
            state.status.target_kbps = kbps;
            state.status.steps += 1;
            let logged = state.logged_kbps;
            let large = f64::from(kbps.abs_diff(logged)) >= f64::from(logged) * LARGE_STEP
                || (kbps != logged
                    && (kbps == self.settings.floor_kbps || kbps == self.settings.ceiling_kbps));
            if large {
                state.logged_kbps = kbps;
            }
            large.then_some(logged)
        };
        match large {
            Some(logged) => {
                log::info!("bitrate: {logged} -> {kbps} kbit/s ({why})");
                self.recorder.record(Entry::Bitrate {
                    from_kbps: logged,
                    to_kbps: kbps,
                    reason: why.to_string(),
                });
            }
            None => log::debug!("bitrate: {from} -> {kbps} kbit/s ({why})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EncoderKind;
    use std::net::Ipv4Addr;

    fn config(adapt: bool) -> EncoderConfig {
        EncoderConfig {
            kind: EncoderKind::X264,
            bitrate_kbps: 2500,
            min_bitrate_kbps: 300,
            adapt,
            keyframe_interval_ms: 2000,
        }
    }

    const ETH: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)));
    const WLAN: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)));

    fn twcc(kbps: f64) -> PathReport {
        PathReport {
            estimate: Some(Estimate {
                bps: kbps * 1000.0,
                source: EstimateSource::Twcc,
            }),
            loss: Some(0.012),
            rtt: Some(Duration::from_millis(23)),
            retransmissions: None,
            resending_bps: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconnect_starts_where_the_last_connection_on_that_path_left_off() {
        let settings = ControllerSettings::new(300, 2500);
        let t0 = Instant::now();
        assert_eq!(
            start_kbps(None, ETH, t0, &settings),
            2500,
            "first: the ceiling"
        );
        let m = Memory {
            kbps: 900,
            at: t0,
            path: ETH,
        };
        let later = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(start_kbps(Some(&m), ETH, later(5), &settings), 900);
        assert_eq!(start_kbps(Some(&m), ETH, later(120), &settings), 900);
        assert_eq!(
            start_kbps(Some(&m), ETH, later(121), &settings),
            2500,
            "too long ago: the ceiling"
        );
        assert_eq!(
            start_kbps(Some(&m), WLAN, later(5), &settings),
            2500,
            "another path: the ceiling"
        );
        let low = Memory { kbps: 100, ..m };
        assert_eq!(start_kbps(Some(&low), ETH, later(5), &settings), 300);
    }

    #[tokio::test(start_paused = true)]
    async fn connections_drive_the_encoder_and_the_status_and_hand_over_their_target() {
        let encoder = BitrateHandle::new(2500);
        let recorder = FlightRecorder::new();
        let a = Adaptation::new(&config(true), encoder.clone(), recorder.clone());
        let t0 = Instant::now();
        let mut first = a.begin(ETH, t0);
        assert_eq!(encoder.target_kbps(), 2500);
        a.observe(&mut first, t0 + Duration::from_millis(200), twcc(1000.0));
        assert_eq!(encoder.target_kbps(), 850);
        let s = a.status();
        assert_eq!(
            (s.target_kbps, s.estimate_kbps, s.estimate_source),
            (850, Some(1000), Some(EstimateSource::Twcc))
        );
        assert_eq!((s.loss_pct, s.rtt_ms, s.steps), (Some(1.2), Some(23), 1));
        // The large step is in the flight recorder.
        let history = recorder.snapshot();
        assert!(
            matches!(
                &history[..],
                [r] if r.entry == Entry::Bitrate {
                    from_kbps: 2500,
                    to_kbps: 850,
                    reason: "twcc estimate 1000 kbit/s".into()
                }
            ),
            "{history:?}"
        );
        a.end(&first, t0 + Duration::from_secs(1));
        let s = a.status();
        assert_eq!((s.estimate_kbps, s.loss_pct, s.rtt_ms), (None, None, None));
        assert_eq!(
            s.target_kbps, 850,
            "the encoder keeps its target between connections"
        );

        // The next connection on the same path starts there; on another path at the ceiling.
        let second = a.begin(ETH, t0 + Duration::from_secs(3));
        assert_eq!(second.target_kbps(), 850);
        assert_eq!(encoder.target_kbps(), 850);
        let third = a.begin(WLAN, t0 + Duration::from_secs(4));
        assert_eq!(third.target_kbps(), 2500);
        assert_eq!(encoder.target_kbps(), 2500);
    }

    #[tokio::test(start_paused = true)]
    async fn small_steps_are_logged_but_not_recorded() {
        let encoder = BitrateHandle::new(2500);
        let recorder = FlightRecorder::new();
        let a = Adaptation::new(&config(true), encoder.clone(), recorder.clone());
        let t0 = Instant::now();
        let mut session = a.begin(ETH, t0);
        // 2500 → 2000 → 1700 → 1500: steps of 20, 15 and 12 %; the first two add up to a large
        // one (32 % below the last recorded 2500), the third does not (12 % below 1700).
        for (i, kbps) in [2000.0, 1700.0, 1500.0].into_iter().enumerate() {
            let at = t0 + Duration::from_secs(i as u64 + 1);
            a.observe(&mut session, at, twcc(kbps / 0.85));
        }
        assert_eq!(encoder.target_kbps(), 1500);
        let recorded: Vec<_> = recorder
            .snapshot()
            .into_iter()
            .map(|r| match r.entry {
                Entry::Bitrate {
                    from_kbps, to_kbps, ..
                } => (from_kbps, to_kbps),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(recorded, vec![(2500, 1700)]);
        assert_eq!(a.status().steps, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn what_resendings_take_is_kept_off_the_encoder_s_share() {
        let encoder = BitrateHandle::new(2500);
        let a = Adaptation::new(&config(true), encoder.clone(), FlightRecorder::new());
        let t0 = Instant::now();
        let mut session = a.begin(ETH, t0);
        let at = |ms| t0 + Duration::from_millis(ms);
        let repairing = |bps| PathReport {
            resending_bps: Some(bps),
            ..twcc(1000.0)
        };
        a.observe(&mut session, at(200), repairing(200_000.0));
        assert_eq!(
            (encoder.target_kbps(), encoder.encoder_kbps()),
            (850, 650),
            "the connection's target stands; the encoder gets the rest"
        );
        assert_eq!(a.status().target_kbps, 850);
        // Small changes are not made; the end of the repairs is.
        a.observe(&mut session, at(400), repairing(180_000.0));
        assert_eq!(encoder.encoder_kbps(), 650);
        a.observe(&mut session, at(600), repairing(0.0));
        assert_eq!(encoder.encoder_kbps(), 850);
        // Never below the floor.
        a.observe(&mut session, at(800), repairing(800_000.0));
        assert_eq!(encoder.encoder_kbps(), 300);
        // The connection ends: nothing is being repaired any more.
        a.end(&session, at(1000));
        assert_eq!(encoder.encoder_kbps(), 850);
    }

    #[tokio::test(start_paused = true)]
    async fn switched_off_it_only_watches() {
        let encoder = BitrateHandle::new(2500);
        let a = Adaptation::new(&config(false), encoder.clone(), FlightRecorder::new());
        let t0 = Instant::now();
        let mut session = a.begin(ETH, t0);
        let repairing = PathReport {
            resending_bps: Some(300_000.0),
            ..twcc(500.0)
        };
        a.observe(&mut session, t0 + Duration::from_secs(1), repairing);
        assert_eq!(encoder.target_kbps(), 2500);
        assert_eq!(
            encoder.encoder_kbps(),
            2500,
            "the bitrate stays as configured"
        );
        let s = a.status();
        assert!(!s.enabled);
        assert_eq!(
            (s.target_kbps, s.estimate_kbps, s.steps),
            (2500, Some(500), 0)
        );
        a.end(&session, t0 + Duration::from_secs(2));
        assert_eq!(a.start_kbps(ETH, t0 + Duration::from_secs(3)), 2500);
    }
}
