//! WHIP output (RFC 9725): publish the access units to a WebRTC ingest server such as
//! Glimesh Broadcast Box.
//!
//! One attempt = DELETE any session a previous connection left behind (Broadcast Box refuses a
//! second publisher on a live key), build a peer connection, POST the offer, apply the answer,
//! wait for ICE + DTLS. The resulting connection pulls access units from the door, starts with
//! a key frame, and watches for death from both sides: the peer connection's state, the
//! server closing DTLS, and the server going silent for longer than its own cadence allows
//! (`output/liveness.rs`, capped by `dead_after`).

pub mod abs_send_time;
pub mod feedback;
pub mod gcc;
pub mod http;
mod nack_gate;
mod nack_loss;
mod pacer;
mod pass_through;
pub mod peer;
mod peer_setup;
mod repair_flow;
pub mod retransmit;
pub mod rtcp_watch;

use super::pump::{self, Delivery, LivenessProbe, PumpSettings, UnitWriter};
use super::{Attempt, Connection, Failure, FailureClass, Output};
use crate::clock::{Clock, ClockVerdict};
use crate::media::AccessUnit;
use crate::media::audio::AudioUnit;
use crate::output::liveness::Cadence;
use crate::secret::{Secret, SecretUrl};
use feedback::FeedbackProbe;
use http::{WhipError, WhipHttp};
use peer::{Peer, PeerEvent};
use rtc::media::Sample;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCDtlsTransportState;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::peer_connection::transport::DtlsTransport;
use webrtc::peer_connection::{PeerConnection, StatsSelector};

/// The encoder's share of WHIP's estimates; the rest is room for RTP/SRTP/UDP/IP headers.
/// Every WHIP estimate is a rate the path has carried from us: GCC backs off to 85 % of what
/// arrived on its own, and a receiver's REMB (aiortc, libwebrtc) grows past the capacity it
/// knows only once more than that arrives and never above 1.5 times what arrives. Sending 85 %
/// of it kept aiortc's REMB creeping up additively for the whole 30 s after an uplink was
/// freed, in two of three runs; 95 % let it find the freed uplink in 23 s.
pub const ENCODER_SHARE: f64 = 0.95;

/// A DELETE must not hold up a reconnect or a shutdown for long.
const DELETE_TIMEOUT: Duration = Duration::from_millis(1000);

pub struct WhipOutput {
    http: Arc<WhipHttp>,
    /// Asked when the server's certificate is refused (it may be the box's clock).
    clock: Option<Arc<Clock>>,
    server_ip: Option<IpAddr>,
    /// The endpoint's host and port, for the reachability probe.
    host_port: Option<(String, u16)>,
    settings: PumpSettings,
    /// Offer an Opus track beside the video.
    audio: bool,
    /// How long after its media time each unit is sent, with audio.
    pacing: Duration,
}

/// With audio, every unit leaves this long after its media time (see `Pacer`): longer than
/// the sound's own path (40 ms behind the clock, 20 ms frames, the encoder) exceeds the
/// pictures', so both tracks leave in step and the sender reports map them alike.
const AV_PACING: Duration = Duration::from_millis(120);

impl WhipOutput {
    pub fn new(
        url: &SecretUrl,
        token: Option<Secret>,
        state_dir: &Path,
    ) -> Result<WhipOutput, WhipError> {
        let http = Arc::new(WhipHttp::new(url, token, state_dir)?);
        let server_ip = url.host().and_then(|h| h.parse::<IpAddr>().ok());
        Ok(WhipOutput {
            http,
            clock: None,
            server_ip,
            host_port: url.host().zip(url.port()),
            settings: PumpSettings::default(),
            audio: false,
            pacing: AV_PACING,
        })
    }

    /// A refused certificate is taken to the clock: while it is not synchronized, the server
    /// may be asked for the time (`crate::clock`) and the attempt reported as `ClockBehind`.
    pub fn with_clock(mut self, clock: Arc<Clock>) -> WhipOutput {
        self.clock = Some(clock);
        self
    }

    /// Offer a sendonly Opus track beside the video, fed from the door's audio lane.
    /// `advance`: how far `audio.offset_ms` moves the sound earlier (a negative offset); the
    /// pacing waits that much longer, so such sound is still sent on time.
    pub fn with_audio(mut self, audio: bool, advance: Duration) -> WhipOutput {
        self.audio = audio;
        self.pacing = AV_PACING + advance;
        self
    }

    async fn attempt(&self, attempt: &Attempt) -> Result<WhipConnection, WhipError> {
        // The server frees a key only when the old session is gone.
        self.http.delete_remembered(DELETE_TIMEOUT).await;
        let adaptation = &attempt.adaptation;
        let start = adaptation.start_kbps(attempt.local_address, Instant::now());
        let (initial, min, max) = adaptation.estimator_range(start);
        let mut peer = peer::build(
            self.server_ip,
            attempt.local_address,
            attempt.dead_after_now(),
            attempt.keyframes.clone(),
            self.audio,
            peer::EstimatorRange { initial, min, max },
            adaptation.send_rate(),
        )
        .await?;
        let result = self.negotiate(&mut peer, attempt).await;
        match result {
            Ok(()) => {
                WhipConnection::start(
                    peer,
                    self.http.clone(),
                    attempt,
                    &self.settings,
                    self.pacing,
                )
                .await
            }
            Err(e) => {
                peer::close_quietly(&peer.pc).await;
                Err(e)
            }
        }
    }

    async fn negotiate(&self, peer: &mut Peer, attempt: &Attempt) -> Result<(), WhipError> {
        let offer = peer.offer().await?;
        log::debug!(
            "whip: attempt {}: POST {}",
            attempt.number,
            self.http.endpoint_display()
        );
        let (answer, resource) = self.http.post_offer(offer).await?;
        log::info!(
            "whip: attempt {}: session {} created",
            attempt.number,
            self.http.show(&resource)
        );
        peer.apply_answer(answer).await?;
        peer.connected().await
    }
}

#[async_trait::async_trait]
impl Output for WhipOutput {
    async fn connect(&self, attempt: Attempt) -> Result<Box<dyn Connection>, Failure> {
        let cancel = attempt.cancel.clone();
        let result = tokio::select! {
            r = self.attempt(&attempt) => r,
            _ = cancel.cancelled() => Err(WhipError::Cancelled),
        };
        let e = match result {
            Ok(conn) => return Ok(Box::new(conn)),
            Err(e) => e,
        };
        let mut failure = Failure {
            class: e.class(),
            // Server words may be in it (and the WebRTC stack's errors may quote the answer).
            message: self.http.scrub(&e.to_string()),
        };
        if let (Some(refusal), Some(clock)) = (e.certificate_refusal(), &self.clock) {
            let verdict = tokio::select! {
                v = clock.certificate_refused(self.http.endpoint(), refusal) => v,
                _ = cancel.cancelled() => ClockVerdict::NotTheClock,
            };
            if let ClockVerdict::Behind(why) = verdict {
                failure = Failure {
                    class: FailureClass::ClockBehind,
                    message: self.http.scrub(&why),
                };
            }
        }
        Err(failure)
    }

    async fn release(&self) {
        self.http.delete_remembered(DELETE_TIMEOUT).await;
    }

    async fn reachable(&self) -> Option<bool> {
        let (host, port) = self.host_port.as_ref()?;
        Some(super::tcp_answers(host, *port).await)
    }
}

/// A live WHIP session. Owns the peer connection and its three tasks.
pub struct WhipConnection {
    pc: Arc<dyn PeerConnection>,
    http: Arc<WhipHttp>,
    stop: CancellationToken,
    pump: JoinHandle<()>,
    liveness: JoinHandle<WhipLiveness>,
    adaptation: JoinHandle<()>,
}

impl WhipConnection {
    async fn start(
        peer: Peer,
        http: Arc<WhipHttp>,
        attempt: &Attempt,
        settings: &PumpSettings,
        pacing: Duration,
    ) -> Result<WhipConnection, WhipError> {
        let payload_type = match peer.payload_type().await {
            Ok(pt) => pt,
            Err(e) => {
                peer::close_quietly(&peer.pc).await;
                return Err(e);
            }
        };
        // The server's close_notify closes the DTLS transport without changing the peer
        // connection's state, so the liveness probe looks at the transport itself.
        let mut dtls = None;
        for sender in peer.pc.get_senders().await {
            if let Ok(Some(t)) = sender.transport().await {
                dtls = Some(t);
                break;
            }
        }
        let audio = match &peer.audio {
            None => None,
            Some((track, ssrc)) => match peer.audio_payload_type().await {
                Ok(Some(pt)) => Some((track.clone(), *ssrc, pt)),
                Ok(None) => {
                    log::warn!("whip: the server takes no Opus audio; sending pictures only");
                    None
                }
                Err(e) => {
                    peer::close_quietly(&peer.pc).await;
                    return Err(e);
                }
            },
        };
        let stop = CancellationToken::new();
        let writer = TrackWriter {
            track: peer.track.clone(),
            ssrc: peer.ssrc,
            payload_type,
            pacing: audio.is_some().then_some(pacing),
            audio,
        };
        // The encoder is at this connection's starting target before the first unit goes out.
        let adaptation = pump::spawn_adaptation(
            FeedbackProbe(peer.feedback.clone()),
            attempt,
            settings,
            stop.clone(),
        );
        let (pump, _) = pump::spawn_pump(writer, attempt, settings, stop.clone());
        let probe = WhipLiveness {
            peer_events: peer.events,
            dtls,
            pc: peer.pc.clone(),
            received: 0,
            feedback: peer.feedback.clone(),
            consent_answers: 0,
            cadence: Cadence::new(Instant::now(), Some(peer.consent_interval)),
        };
        let liveness = pump::spawn_liveness(probe, attempt, settings, stop.clone());
        Ok(WhipConnection {
            pc: peer.pc,
            http,
            stop,
            pump,
            liveness,
            adaptation,
        })
    }
}

#[async_trait::async_trait]
impl Connection for WhipConnection {
    async fn close(self: Box<Self>, polite: bool) {
        self.stop.cancel();
        // The tasks end at their next await once `stop` is cancelled.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.pump).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.liveness).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.adaptation).await;
        // DELETE while the peer connection still stands: the server then ends the session
        // because we asked, not because the transport vanished under it.
        if polite {
            self.http.delete_remembered(DELETE_TIMEOUT).await;
        }
        peer::close_quietly(&self.pc).await;
    }
}

/// Writes access units to the track as samples (webrtc-rs packetizes them).
struct TrackWriter {
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    payload_type: u8,
    /// The Opus track, its SSRC and payload type.
    audio: Option<(Arc<TrackLocalStaticSample>, u32, u8)>,
    pacing: Option<Duration>,
}

#[async_trait::async_trait]
impl UnitWriter for TrackWriter {
    fn pacing(&self) -> Option<Duration> {
        self.pacing
    }

    async fn write_audio(&mut self, unit: AudioUnit) -> Result<(), String> {
        let Some((track, ssrc, pt)) = &self.audio else {
            return Ok(());
        };
        let sample = Sample {
            data: unit.data,
            duration: unit.duration,
            ..Sample::new(std::time::Instant::now())
        };
        track
            .sample_writer(*ssrc, *pt)
            .write_sample(&sample)
            .await
            .map_err(|e| e.to_string())
    }

    async fn write(&mut self, unit: AccessUnit) -> Result<Delivery, String> {
        let sample = Sample {
            data: unit.data,
            duration: unit.duration,
            ..Sample::new(std::time::Instant::now())
        };
        self.track
            .sample_writer(self.ssrc, self.payload_type)
            .write_sample(&sample)
            .await
            .map(|()| Delivery::OnTheWire)
            .map_err(|e| e.to_string())
    }
}

/// A WHIP connection is dead when the peer connection fails, the server closes DTLS, or the
/// server has been silent for longer than its cadence allows (capped by `dead_after`).
struct WhipLiveness {
    peer_events: mpsc::UnboundedReceiver<PeerEvent>,
    dtls: Option<Arc<dyn DtlsTransport>>,
    pc: Arc<dyn PeerConnection>,
    /// Packets the transport had received (STUN, DTLS, RTCP alike) at the last check.
    received: u64,
    /// Where the consent checks' round trip goes (the fallback for servers whose receiver
    /// reports carry no timestamps: `feedback.rs`).
    feedback: Arc<std::sync::Mutex<feedback::PathFeedback>>,
    /// Consent checks answered, as of the last check.
    consent_answers: u64,
    cadence: Cadence,
}

impl WhipLiveness {
    /// Every packet the server sends counts as a sign of life, whatever it is: RTCP, ICE
    /// consent answers, DTLS. The same statistics carry the latest consent check's round trip.
    async fn packets_received(&mut self, now: Instant) -> Option<u64> {
        let stats = self
            .pc
            .get_stats(std::time::Instant::now(), StatsSelector::None)
            .await;
        if let Some(pair) = stats.candidate_pairs().max_by_key(|p| p.responses_received)
            && pair.responses_received > self.consent_answers
        {
            self.consent_answers = pair.responses_received;
            let rtt = pair.current_round_trip_time;
            if rtt.is_finite() && rtt > 0.0 && rtt < 60.0 {
                crate::lock::lock(&self.feedback).on_ice_rtt(now, Duration::from_secs_f64(rtt));
            }
        }
        stats.transport().map(|t| t.packets_received)
    }
}

#[async_trait::async_trait]
impl LivenessProbe for WhipLiveness {
    async fn next_event(&mut self) -> Option<String> {
        match self.peer_events.recv().await {
            Some(PeerEvent::State(
                s @ (RTCPeerConnectionState::Failed
                | RTCPeerConnectionState::Disconnected
                | RTCPeerConnectionState::Closed),
            )) => Some(format!("peer connection {s}")),
            Some(_) => None,
            None => Some("peer connection driver stopped".into()),
        }
    }

    async fn check(&mut self, now: Instant, dead_after: Duration) -> Option<String> {
        if let Some(t) = &self.dtls
            && let Ok(state @ (RTCDtlsTransportState::Closed | RTCDtlsTransportState::Failed)) =
                t.state().await
        {
            return Some(format!("the server closed the session (DTLS {state})"));
        }
        if let Some(received) = self.packets_received(now).await
            && received > self.received
        {
            self.received = received;
            self.cadence.heard(now);
        }
        self.cadence
            .judge(now, dead_after)
            .map(|dead| dead.to_string())
    }
}
