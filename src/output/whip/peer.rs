//! The WebRTC half of WHIP: one sendonly H.264 track on a webrtc-rs peer connection, and with
//! audio on a sendonly Opus track beside it (48 kHz stereo, what Broadcast Box takes) in the
//! same connection and the same offer.
//!
//! Built fresh for every attempt and closed on every teardown, so a reconnect leaves no socket
//! or driver task behind. Its UDP socket is bound to the source address of the path to the
//! server, so it leaves by the uplink that path names (the steering's `from ADDRESS` rule).
//! ICE consent checks go out every 0.4 s: their answers are part of the cadence the liveness
//! rule judges silence by; ICE's own timeouts follow `dead_after`, the rule's ceiling.
//!
//! Its interceptors, wire to application: our RTCP watch (PLI/FIR), webrtc-rs's congestion
//! control interceptor (the send history, matched against the server's TWCC feedback) driving
//! Google Congestion Control (`gcc/`), the feedback watch reading REMB and receiver reports
//! (`feedback.rs`), the abs-send-time stamp (for servers that send REMB), the transport-wide
//! sequence numbers, and webrtc-rs's defaults (NACK, reports). No pacer: the encoder itself is
//! held below the estimate; the library's pacer paces at exactly the estimate (no headroom for
//! a key frame), and paced at 1.5 times it in the lab it made the estimate no steadier while
//! adding a queue of its own at every cut.

use super::abs_send_time::AbsSendTime;
use super::feedback::{FeedbackWatch, ObservedGcc, PathFeedback};
use super::gcc::Gcc;
use super::http::WhipError;
use crate::media::KeyframeRequester;
use crate::output::rtcp_watch::{RtcpClock, RtcpWatch};
use rtc::interceptor::{CongestionControlBuilder, Registry, Slot, TwccSenderBuilder};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MediaEngine,
};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
    register_default_interceptors,
};

/// Constrained baseline, packetization-mode 1: what Broadcast Box and browsers accept.
const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
const H264_PAYLOAD_TYPE: u8 = 102;
const OPUS_PAYLOAD_TYPE: u8 = 111;
const OPUS_FMTP: &str = "minptime=10;useinbandfec=1;stereo=1;sprop-stereo=1";
/// Our interceptor only observes; next to the wire it sees inbound RTCP before anything else.
const RTCP_WATCH_SLOT: usize = 500;
/// Application-ward of the congestion controller (1000), so the targets it attaches to
/// feedback on the read leg are there to read; wire-ward of every RTCP generator, so our own
/// sender reports pass it on the write leg.
const FEEDBACK_WATCH_SLOT: usize = 1500;
/// Below the transport-wide sequence numbers (2000) and the NACK responder: every packet that
/// leaves, retransmissions included, is stamped as it leaves; above the send history, which
/// then counts the stamp's bytes.
const ABS_SEND_TIME_SLOT: usize = 1600;

/// What the peer connection tells us, in order.
#[derive(Debug)]
pub enum PeerEvent {
    GatheringComplete,
    State(RTCPeerConnectionState),
}

struct Handler {
    tx: mpsc::UnboundedSender<PeerEvent>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.tx.send(PeerEvent::GatheringComplete);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.tx.send(PeerEvent::State(state));
    }
}

pub struct Peer {
    pub pc: Arc<dyn PeerConnection>,
    pub track: Arc<TrackLocalStaticSample>,
    pub ssrc: u32,
    /// The Opus track and its SSRC, when audio is on.
    pub audio: Option<(Arc<TrackLocalStaticSample>, u32)>,
    pub events: mpsc::UnboundedReceiver<PeerEvent>,
    pub rtcp: RtcpClock,
    /// What the server says about the path (congestion control, REMB, receiver reports).
    pub feedback: Arc<Mutex<PathFeedback>>,
    /// How often ICE consent checks go out: the server answers each, so it is the gap the
    /// liveness rule expects until it has seen the server's own cadence.
    pub consent_interval: Duration,
}

fn h264_codec() -> RTCRtpCodec {
    let fb = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.into(),
        parameter: parameter.into(),
    };
    RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: H264_FMTP.to_owned(),
        // transport-cc (and nack) are also added by the default interceptors; goog-remb asks a
        // server that estimates on its side to say so.
        rtcp_feedback: vec![
            fb("nack", ""),
            fb("nack", "pli"),
            fb("ccm", "fir"),
            fb("goog-remb", ""),
            fb("transport-cc", ""),
        ],
    }
}

fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: OPUS_FMTP.to_owned(),
        rtcp_feedback: vec![],
    }
}

/// GCC's range and start, in bit/s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EstimatorRange {
    pub initial: f64,
    pub min: f64,
    pub max: f64,
}

fn webrtc_error(e: impl std::fmt::Display) -> WhipError {
    WhipError::WebRtc(e.to_string())
}

/// Builds the peer connection with its one sendonly video track. `local` (the path's source
/// address) is the one address to gather on; without it, `server` decides: loopback for a
/// server on this machine, otherwise every interface of the server's address family.
pub async fn build(
    server: Option<IpAddr>,
    local: Option<IpAddr>,
    dead_after: Duration,
    keyframes: KeyframeRequester,
    audio: bool,
    range: EstimatorRange,
) -> Result<Peer, WhipError> {
    let mut media_engine = MediaEngine::default();
    media_engine
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: h264_codec(),
                payload_type: H264_PAYLOAD_TYPE,
            },
            RtpCodecKind::Video,
        )
        .map_err(webrtc_error)?;
    if audio {
        media_engine
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: opus_codec(),
                    payload_type: OPUS_PAYLOAD_TYPE,
                },
                RtpCodecKind::Audio,
            )
            .map_err(webrtc_error)?;
    }
    // The defaults negotiate transport-cc (the header extension and the feedback type).
    let registry =
        register_default_interceptors(Registry::new(), &mut media_engine).map_err(webrtc_error)?;
    media_engine
        .register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: rtc::sdp::extmap::ABS_SEND_TIME_URI.to_owned(),
            },
            RtpCodecKind::Video,
            None,
        )
        .map_err(webrtc_error)?;
    let ssrc = rand::random::<u32>();
    let rtcp = RtcpClock::new();
    let feedback = Arc::new(Mutex::new(PathFeedback::new(
        range.initial,
        range.min,
        range.max,
    )));
    let registry = registry
        .with(
            Slot::from(RTCP_WATCH_SLOT),
            RtcpWatch::new(rtcp.clone(), keyframes),
        )
        .with(
            Slot::CongestionControl,
            CongestionControlBuilder::new(ObservedGcc::new(
                Gcc::new(range.initial, range.min, range.max),
                feedback.clone(),
            ))
            .build(),
        )
        .with(
            Slot::from(FEEDBACK_WATCH_SLOT),
            FeedbackWatch::new(feedback.clone(), ssrc),
        )
        .with(
            Slot::from(ABS_SEND_TIME_SLOT),
            AbsSendTime::new(Instant::now()),
        )
        .with(Slot::TwccSender, TwccSenderBuilder::new().build());

    let loopback = server.is_some_and(|ip| ip.is_loopback());
    let bind = match (server, local) {
        (Some(ip), _) if ip.is_loopback() => format!("{}", std::net::SocketAddr::new(ip, 0)),
        (Some(ip), Some(local)) if ip.is_ipv4() == local.is_ipv4() => {
            format!("{}", std::net::SocketAddr::new(local, 0))
        }
        (None, Some(local)) => format!("{}", std::net::SocketAddr::new(local, 0)),
        (Some(IpAddr::V6(_)), _) => "[::]:0".to_string(),
        _ => "0.0.0.0:0".to_string(),
    };
    // Consent checks 2.5 times a second: their answers give the liveness rule a cadence
    // of its own making, whatever the server's RTCP habits. ICE itself says "disconnected"
    // after dead_after of silence, the rule's ceiling.
    let keepalive = (dead_after / 5).clamp(Duration::from_millis(200), Duration::from_millis(400));
    let settings = SettingEngineBuilder::new()
        .with_ice_timeouts(Some(dead_after), Some(dead_after), Some(keepalive))
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .with_include_loopback_candidate(loopback)
        .build();
    // No STUN/TURN servers: the box talks to its ingest server directly; nothing else may be
    // contacted.
    let configuration = RTCConfigurationBuilder::new().build();
    let (tx, events) = mpsc::unbounded_channel();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(configuration)
        .with_media_engine(media_engine)
        .with_setting_engine(settings)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler { tx }))
        .with_udp_addrs(vec![bind])
        .build()
        .await
        .map_err(webrtc_error)?;
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);

    let track = match TrackLocalStaticSample::new(
        Instant::now(),
        MediaStreamTrack::new(
            "onair".to_owned(),
            "onair-video".to_owned(),
            "video".to_owned(),
            RtpCodecKind::Video,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: h264_codec(),
                ..Default::default()
            }],
        ),
    ) {
        Ok(t) => Arc::new(t),
        Err(e) => {
            close_quietly(&pc).await;
            return Err(webrtc_error(e));
        }
    };
    // WHIP publishes: a plain offer would be sendrecv.
    if let Err(e) = pc
        .add_transceiver_from_track(
            Arc::clone(&track) as Arc<dyn TrackLocal>,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                streams: vec![],
                send_encodings: vec![],
            }),
        )
        .await
    {
        close_quietly(&pc).await;
        return Err(webrtc_error(e));
    }
    let audio = if audio {
        match add_audio(&pc).await {
            Ok(a) => Some(a),
            Err(e) => {
                close_quietly(&pc).await;
                return Err(e);
            }
        }
    } else {
        None
    };
    Ok(Peer {
        pc,
        track,
        ssrc,
        audio,
        events,
        rtcp,
        feedback,
        consent_interval: keepalive,
    })
}

/// The sendonly Opus track, in the same stream as the video (so players sync them).
async fn add_audio(
    pc: &Arc<dyn PeerConnection>,
) -> Result<(Arc<TrackLocalStaticSample>, u32), WhipError> {
    let ssrc = rand::random::<u32>();
    let track = Arc::new(
        TrackLocalStaticSample::new(
            Instant::now(),
            MediaStreamTrack::new(
                "onair".to_owned(),
                "onair-audio".to_owned(),
                "audio".to_owned(),
                RtpCodecKind::Audio,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
                        ..Default::default()
                    },
                    codec: opus_codec(),
                    ..Default::default()
                }],
            ),
        )
        .map_err(webrtc_error)?,
    );
    pc.add_transceiver_from_track(
        Arc::clone(&track) as Arc<dyn TrackLocal>,
        Some(RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Sendonly,
            streams: vec![],
            send_encodings: vec![],
        }),
    )
    .await
    .map_err(webrtc_error)?;
    Ok((track, ssrc))
}

impl Peer {
    /// Creates the offer and waits for ICE gathering to finish (WHIP without trickle sends all
    /// candidates in the offer).
    pub async fn offer(&mut self) -> Result<String, WhipError> {
        let offer = self.pc.create_offer(None).await.map_err(webrtc_error)?;
        self.pc
            .set_local_description(offer)
            .await
            .map_err(webrtc_error)?;
        loop {
            match self.events.recv().await {
                Some(PeerEvent::GatheringComplete) => break,
                Some(PeerEvent::State(RTCPeerConnectionState::Failed)) | None => {
                    return Err(WhipError::Transport(
                        "failed while gathering candidates".into(),
                    ));
                }
                Some(PeerEvent::State(_)) => {}
            }
        }
        let local = self
            .pc
            .local_description()
            .await
            .ok_or_else(|| WhipError::WebRtc("no local description after gathering".into()))?;
        Ok(local.sdp)
    }

    pub async fn apply_answer(&self, sdp: String) -> Result<(), WhipError> {
        let answer =
            RTCSessionDescription::answer(sdp).map_err(|e| WhipError::NotSdp(e.to_string()))?;
        self.pc
            .set_remote_description(answer)
            .await
            .map_err(|e| WhipError::NotSdp(e.to_string()))
    }

    /// Waits until ICE and DTLS are up.
    pub async fn connected(&mut self) -> Result<(), WhipError> {
        loop {
            match self.events.recv().await {
                Some(PeerEvent::State(RTCPeerConnectionState::Connected)) => return Ok(()),
                Some(PeerEvent::State(
                    s @ (RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed),
                )) => return Err(WhipError::Transport(format!("peer connection {s}"))),
                Some(_) => {}
                None => {
                    return Err(WhipError::Transport(
                        "peer connection driver stopped".into(),
                    ));
                }
            }
        }
    }

    /// The payload type the answer settled on for our video codec.
    pub async fn payload_type(&self) -> Result<u8, WhipError> {
        self.negotiated(MIME_TYPE_H264)
            .await?
            .ok_or_else(|| WhipError::NotSdp("the answer accepts no H.264 we offered".into()))
    }

    /// The payload type the answer settled on for Opus; `None`: the server takes no audio.
    pub async fn audio_payload_type(&self) -> Result<Option<u8>, WhipError> {
        self.negotiated(MIME_TYPE_OPUS).await
    }

    async fn negotiated(&self, mime: &str) -> Result<Option<u8>, WhipError> {
        for transceiver in self.pc.get_transceivers().await {
            if let Ok(Some(sender)) = transceiver.sender().await {
                let params = sender.get_parameters().await.map_err(webrtc_error)?;
                if let Some(codec) = params.rtp_parameters.codecs.first()
                    && codec.rtp_codec.mime_type.eq_ignore_ascii_case(mime)
                {
                    return Ok(Some(codec.payload_type));
                }
            }
        }
        Ok(None)
    }
}

/// Close errors are only logged: the connection is being thrown away either way.
pub async fn close_quietly(pc: &Arc<dyn PeerConnection>) {
    if let Err(e) = pc.close().await {
        log::debug!("whip: closing peer connection: {e}");
    }
}
