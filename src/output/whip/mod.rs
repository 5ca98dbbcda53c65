//! WHIP output (RFC 9725): publish the access units to a WebRTC ingest server such as
//! Glimesh Broadcast Box.
//!
//! One attempt = DELETE any session a previous connection left behind (Broadcast Box refuses a
//! second publisher on a live key), build a peer connection, POST the offer, apply the answer,
//! wait for ICE + DTLS. The resulting connection pulls access units from the door, starts with
//! a key frame, and watches for death from both sides: the peer connection's state and the
//! server's RTCP going silent for `dead_after`.

pub mod http;
pub mod peer;

use super::{Attempt, Connection, ConnectionEvent, EventSender, Failure, Output, OutputStats};
use crate::media::{Door, KeyframeRequester, KeyframeSync};
use crate::output::rtcp_watch::RtcpClock;
use crate::secret::{Secret, SecretUrl};
use http::{WhipError, WhipHttp};
use peer::{Peer, PeerEvent};
use rtc::media::Sample;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::RTCDtlsTransportState;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::peer_connection::PeerConnection;
use webrtc::peer_connection::transport::DtlsTransport;

/// A DELETE must not hold up a reconnect or a shutdown for long.
const DELETE_TIMEOUT: Duration = Duration::from_millis(1000);
/// Access units a connection may hold while its writer catches up (about a second).
const TAP_CAPACITY: usize = 32;
/// A new connection that has seen no key frame this long asks again.
const KEYFRAME_NUDGE: Duration = Duration::from_millis(1000);

pub struct WhipOutput {
    http: Arc<WhipHttp>,
    server_ip: Option<IpAddr>,
}

impl WhipOutput {
    pub fn new(
        url: &SecretUrl,
        token: Option<Secret>,
        state_dir: &Path,
    ) -> Result<WhipOutput, WhipError> {
        let http = Arc::new(WhipHttp::new(url, token, state_dir)?);
        let server_ip = reqwest::Url::parse(url.expose())
            .ok()
            .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_string()))
            .and_then(|h| h.parse::<IpAddr>().ok());
        Ok(WhipOutput { http, server_ip })
    }

    async fn attempt(&self, attempt: &Attempt) -> Result<WhipConnection, WhipError> {
        // The server frees a key only when the old session is gone.
        self.http.delete_remembered(DELETE_TIMEOUT).await;
        let mut peer = peer::build(
            self.server_ip,
            attempt.dead_after,
            attempt.keyframes.clone(),
        )
        .await?;
        let result = self.negotiate(&mut peer, attempt).await;
        match result {
            Ok(()) => Ok(WhipConnection::start(peer, self.http.clone(), attempt).await?),
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
            SecretUrl::new(resource.as_str(), 0)
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
        match result {
            Ok(conn) => Ok(Box::new(conn)),
            Err(e) => Err(Failure {
                class: e.class(),
                message: e.to_string(),
            }),
        }
    }

    async fn release(&self) {
        self.http.delete_remembered(DELETE_TIMEOUT).await;
    }
}

/// A live WHIP session. Owns the peer connection and its two tasks.
pub struct WhipConnection {
    pc: Arc<dyn PeerConnection>,
    http: Arc<WhipHttp>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl WhipConnection {
    async fn start(
        peer: Peer,
        http: Arc<WhipHttp>,
        attempt: &Attempt,
    ) -> Result<WhipConnection, WhipError> {
        let payload_type = match peer.payload_type().await {
            Ok(pt) => pt,
            Err(e) => {
                peer::close_quietly(&peer.pc).await;
                return Err(e);
            }
        };
        // The server's close_notify closes the DTLS transport without changing the peer
        // connection's state, so the liveness watch looks at the transport itself.
        let mut dtls = None;
        for sender in peer.pc.get_senders().await {
            if let Ok(Some(t)) = sender.transport().await {
                dtls = Some(t);
                break;
            }
        }
        let stop = CancellationToken::new();
        peer.rtcp.reset();
        let writer = tokio::spawn(write_media(
            attempt.door.clone(),
            peer.track.clone(),
            peer.ssrc,
            payload_type,
            attempt.keyframes.clone(),
            attempt.events.clone(),
            attempt.stats.clone(),
            stop.clone(),
        ));
        let watchdog = tokio::spawn(watch_liveness(
            peer.events,
            dtls,
            peer.rtcp,
            attempt.dead_after,
            attempt.events.clone(),
            stop.clone(),
        ));
        Ok(WhipConnection {
            pc: peer.pc,
            http,
            stop,
            tasks: vec![writer, watchdog],
        })
    }
}

#[async_trait::async_trait]
impl Connection for WhipConnection {
    async fn close(self: Box<Self>, polite: bool) {
        self.stop.cancel();
        for task in self.tasks {
            // Both tasks end at the next await once `stop` is cancelled.
            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        }
        // DELETE while the peer connection still stands: the server then ends the session
        // because we asked, not because the transport vanished under it.
        if polite {
            self.http.delete_remembered(DELETE_TIMEOUT).await;
        }
        peer::close_quietly(&self.pc).await;
    }
}

/// Pulls access units from the door and writes them to the track, starting at a key frame and
/// resyncing at the next one after any gap.
#[allow(clippy::too_many_arguments)]
async fn write_media(
    door: Door,
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    payload_type: u8,
    keyframes: KeyframeRequester,
    events: EventSender,
    stats: Arc<OutputStats>,
    stop: CancellationToken,
) {
    let mut tap = door.open(TAP_CAPACITY);
    let mut sync = KeyframeSync::new(keyframes, KEYFRAME_NUDGE);
    let mut flowing = false;
    let mut write_errors = 0u32;
    loop {
        let unit = tokio::select! {
            _ = stop.cancelled() => return,
            u = tap.recv() => match u { Some(u) => u, None => return },
        };
        if !sync.admit(&unit) {
            continue;
        }
        let sample = Sample {
            data: unit.data,
            duration: unit.duration,
            ..Sample::new(Instant::now())
        };
        match track
            .sample_writer(ssrc, payload_type)
            .write_sample(&sample)
            .await
        {
            Ok(()) => {
                stats.frame_sent();
                if !flowing {
                    flowing = true;
                    events.send(ConnectionEvent::MediaFlowing);
                }
            }
            Err(e) => {
                // Writes fail while the transport is going down; the liveness watch reports
                // that, so one log line is enough.
                write_errors += 1;
                if write_errors == 1 {
                    log::debug!("whip: write failed: {e}");
                }
            }
        }
    }
}

/// Reports the connection lost when the peer connection fails, the server closes DTLS, or the
/// server's RTCP goes silent for `dead_after`.
async fn watch_liveness(
    mut peer_events: tokio::sync::mpsc::UnboundedReceiver<PeerEvent>,
    dtls: Option<Arc<dyn DtlsTransport>>,
    rtcp: RtcpClock,
    dead_after: Duration,
    events: EventSender,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            ev = peer_events.recv() => match ev {
                Some(PeerEvent::State(
                    s @ (RTCPeerConnectionState::Failed
                    | RTCPeerConnectionState::Disconnected
                    | RTCPeerConnectionState::Closed),
                )) => {
                    events.send(ConnectionEvent::Lost(format!("peer connection {s}")));
                    return;
                }
                Some(_) => {}
                None => {
                    events.send(ConnectionEvent::Lost("peer connection driver stopped".into()));
                    return;
                }
            },
            _ = tick.tick() => {
                if let Some(t) = &dtls
                    && let Ok(state @ (RTCDtlsTransportState::Closed | RTCDtlsTransportState::Failed)) = t.state().await
                {
                    events.send(ConnectionEvent::Lost(format!("the server closed the session (DTLS {state})")));
                    return;
                }
                let silence = rtcp.silence();
                if silence >= dead_after {
                    events.send(ConnectionEvent::Lost(format!(
                        "no RTCP from the server for {:.1} s",
                        silence.as_secs_f64()
                    )));
                    return;
                }
            }
        }
    }
}
