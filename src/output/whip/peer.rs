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
//! sequence numbers, and webrtc-rs's defaults (reports, the NACK responder — with a history as
//! long as the NACK gate's); between the NACK responder and the wire our NACK gate
//! (`nack_gate.rs`: which requests are worth answering, and when each packet really left) and
//! our pacer (`pacer.rs`: 2.5 × the target, sound first). The video offers a repair flow (RTX,
//! RFC 4588); where the answer accepts it, the send history, the transport-wide sequence
//! numbers and the abs-send-time stamp treat it as a stream of its own (`repair_flow.rs`).

use super::abs_send_time::AbsSendTime;
use super::feedback::{FeedbackWatch, ObservedGcc, PathFeedback};
use super::gcc::Gcc;
use super::http::WhipError;
use super::nack_gate::{NackGate, VideoSsrcs};
use super::pacer::SendPacer;
use super::pass_through::PassThrough;
use super::peer_setup::{self, IceSettings};
use super::repair_flow::WithRepairFlow;
use super::retransmit;
use super::rtcp_watch::{RtcpClock, RtcpWatch};
use crate::media::KeyframeRequester;
use crate::output::adapt::SendRate;
use rtc::interceptor::{
    CongestionControlBuilder, NackResponderBuilder, Registry, Slot, TwccSenderBuilder,
};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MediaEngine,
};
use rtc::rtp_transceiver::rtp_sender::{RTCRtpHeaderExtensionCapability, RtpCodecKind};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
};

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
/// Wire-ward of the NACK responder (4000), so it hears the NACKs first and passes on only
/// those worth answering; application-ward of the pacer (3000), so it notes each packet when
/// it is handed over, before any queueing.
const NACK_GATE_SLOT: usize = 3500;
/// Wire-ward of the pacer (3000), so it sees each packet when it really leaves; above the
/// transport-wide sequence numbers (2000), which is all it needs.
const DEPARTURES_SLOT: usize = 2500;

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

/// Builds the peer connection with its one sendonly video track (and the audio track with
/// `audio`). `local` (the path's source address) is the one address to gather on; without it,
/// `server` decides: loopback for a server on this machine, otherwise every interface of the
/// server's address family.
pub async fn build(
    server: Option<IpAddr>,
    local: Option<IpAddr>,
    dead_after: Duration,
    keyframes: KeyframeRequester,
    audio: bool,
    range: EstimatorRange,
    rate: SendRate,
) -> Result<Peer, WhipError> {
    let ssrc = rand::random::<u32>();
    let rtx_ssrc = rand::random::<u32>();
    let audio_ssrc = audio.then(rand::random::<u32>);
    let rtcp = RtcpClock::new();
    let feedback = Arc::new(Mutex::new(PathFeedback::new(
        range.initial,
        range.min,
        range.max,
    )));
    let (media_engine, registry) = media_engine(audio)?;
    let streams = Streams {
        video: VideoSsrcs {
            media: ssrc,
            rtx: rtx_ssrc,
        },
        audio: audio_ssrc,
    };
    let registry =
        with_our_interceptors(registry, streams, range, &rtcp, keyframes, &feedback, rate);
    let ice = IceSettings::new(server, dead_after);
    let (tx, events) = mpsc::unbounded_channel();
    let pc = peer_connection(
        media_engine,
        registry,
        ice,
        peer_setup::bind_address(server, local),
        Handler { tx },
    )
    .await?;
    let (track, audio) = match add_tracks(&pc, streams).await {
        Ok(tracks) => tracks,
        Err(e) => {
            close_quietly(&pc).await;
            return Err(e);
        }
    };
    Ok(Peer {
        pc,
        track,
        ssrc,
        audio,
        events,
        rtcp,
        feedback,
        consent_interval: ice.consent_interval,
    })
}

/// The codecs, webrtc-rs's default interceptors and the abs-send-time header extension.
fn media_engine(audio: bool) -> Result<(MediaEngine, Registry), WhipError> {
    let mut media_engine = MediaEngine::default();
    for (codec, kind) in peer_setup::codecs(audio) {
        media_engine
            .register_codec(codec, kind)
            .map_err(webrtc_error)?;
    }
    // webrtc-rs's defaults (`register_default_interceptors`) but for the NACK side: the box
    // receives no media to ask about (no generator), and its responder keeps as many packets
    // as the NACK gate judges (its default keeps 1 024, under 4 s at the ceiling's rate). The
    // H.264 format lists the nack feedback itself. transport-cc is negotiated here (the header
    // extension and the feedback type).
    configure_simulcast_extension_headers(&mut media_engine).map_err(webrtc_error)?;
    let registry =
        configure_twcc_receiver_only(Registry::new(), &mut media_engine).map_err(webrtc_error)?;
    let registry = configure_rtcp_reports(registry).with(
        Slot::NackResponder,
        NackResponderBuilder::new()
            .with_size(retransmit::HISTORY as u16)
            .build(),
    );
    media_engine
        .register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: rtc::sdp::extmap::ABS_SEND_TIME_URI.to_owned(),
            },
            RtpCodecKind::Video,
            None,
        )
        .map_err(webrtc_error)?;
    Ok((media_engine, registry))
}

/// Ours beside webrtc-rs's defaults: the module's header says what each is for, the slots'
/// constants why each sits where it does.
fn with_our_interceptors(
    registry: Registry,
    streams: Streams,
    range: EstimatorRange,
    rtcp: &RtcpClock,
    keyframes: KeyframeRequester,
    feedback: &Arc<Mutex<PathFeedback>>,
    rate: SendRate,
) -> Registry {
    let ssrc = streams.video.media;
    let (nack_gate, departures) = NackGate::new(streams.video, feedback.clone(), rate.clone());
    registry
        .with(
            Slot::from(RTCP_WATCH_SLOT),
            PassThrough::new(RtcpWatch::new(rtcp.clone(), keyframes)),
        )
        .with(
            Slot::CongestionControl,
            WithRepairFlow(
                CongestionControlBuilder::new(ObservedGcc::new(
                    Gcc::new(range.initial, range.min, range.max),
                    feedback.clone(),
                ))
                .build(),
            ),
        )
        .with(
            Slot::from(FEEDBACK_WATCH_SLOT),
            PassThrough::new(FeedbackWatch::new(feedback.clone(), ssrc)),
        )
        .with(
            Slot::from(ABS_SEND_TIME_SLOT),
            WithRepairFlow(PassThrough::new(AbsSendTime::new(Instant::now()))),
        )
        .with(
            Slot::TwccSender,
            WithRepairFlow(TwccSenderBuilder::new().build()),
        )
        .with(Slot::from(DEPARTURES_SLOT), PassThrough::new(departures))
        .with(Slot::Pacer, SendPacer::new(rate, streams.audio))
        .with(Slot::from(NACK_GATE_SLOT), nack_gate)
}

/// Our SSRCs: the video's (and its repair flow's), and the sound's when there is sound.
#[derive(Debug, Clone, Copy)]
struct Streams {
    video: VideoSsrcs,
    audio: Option<u32>,
}

/// The peer connection itself, its one socket bound to `bind`.
async fn peer_connection(
    media_engine: MediaEngine,
    registry: Registry,
    ice: IceSettings,
    bind: SocketAddr,
    handler: Handler,
) -> Result<Arc<dyn PeerConnection>, WhipError> {
    let settings = SettingEngineBuilder::new()
        .with_ice_timeouts(
            Some(ice.give_up_after),
            Some(ice.give_up_after),
            Some(ice.consent_interval),
        )
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .with_include_loopback_candidate(ice.include_loopback)
        .build();
    // No STUN/TURN servers: the box talks to its ingest server directly; nothing else may be
    // contacted.
    let configuration = RTCConfigurationBuilder::new().build();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(configuration)
        .with_media_engine(media_engine)
        .with_setting_engine(settings)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(handler))
        .with_udp_addrs(vec![bind])
        .build()
        .await
        .map_err(webrtc_error)?;
    Ok(Arc::new(pc))
}

/// The video track, and the audio track with its SSRC.
type Tracks = (
    Arc<TrackLocalStaticSample>,
    Option<(Arc<TrackLocalStaticSample>, u32)>,
);

/// The sendonly video track, and with `audio` the Opus track in the same stream.
async fn add_tracks(pc: &Arc<dyn PeerConnection>, streams: Streams) -> Result<Tracks, WhipError> {
    let video = streams.video;
    let video = add_sendonly(pc, peer_setup::video_track(video.media, video.rtx)).await?;
    let audio = match streams.audio {
        Some(ssrc) => Some((add_sendonly(pc, peer_setup::audio_track(ssrc)).await?, ssrc)),
        None => None,
    };
    Ok((video, audio))
}

async fn add_sendonly(
    pc: &Arc<dyn PeerConnection>,
    track: MediaStreamTrack,
) -> Result<Arc<TrackLocalStaticSample>, WhipError> {
    let track = Arc::new(TrackLocalStaticSample::new(Instant::now(), track).map_err(webrtc_error)?);
    pc.add_transceiver_from_track(
        Arc::clone(&track) as Arc<dyn TrackLocal>,
        Some(peer_setup::sendonly()),
    )
    .await
    .map_err(webrtc_error)?;
    Ok(track)
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
