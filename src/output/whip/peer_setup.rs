//! What a WHIP peer connection is built from, chosen apart from building it: the address its
//! socket binds, ICE's timing, and what it offers (codecs, sendonly tracks). Pure, so unit
//! tested; `peer.rs` hands the choices to webrtc-rs.

use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_RTX,
};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpRtxParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Constrained baseline, packetization-mode 1: what Broadcast Box and browsers accept.
const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
const H264_PAYLOAD_TYPE: u8 = 102;
/// Its repair flow (RFC 4588): resendings on an SSRC of their own, so a receiver can tell a
/// resending from a late packet (GStreamer's jitter buffer learns the round trip from them).
/// webrtc-rs's responder sends them where the answer accepts the format, on the media SSRC
/// otherwise (Broadcast Box registers no RTX format, so its answer never accepts it).
const RTX_PAYLOAD_TYPE: u8 = 103;
const OPUS_PAYLOAD_TYPE: u8 = 111;
const OPUS_FMTP: &str = "minptime=10;useinbandfec=1;stereo=1;sprop-stereo=1";
/// The media stream both tracks belong to, so players sync them.
const STREAM_ID: &str = "onair";

/// The one address to gather on. `local` (the path's source address) pins the socket to the
/// uplink the path names (the steering's `from ADDRESS` rule); a server on this machine is
/// reached over loopback; otherwise every interface of the server's address family.
pub fn bind_address(server: Option<IpAddr>, local: Option<IpAddr>) -> SocketAddr {
    match (server, local) {
        (Some(ip), _) if ip.is_loopback() => SocketAddr::new(ip, 0),
        (Some(ip), Some(local)) if ip.is_ipv4() == local.is_ipv4() => SocketAddr::new(local, 0),
        (None, Some(local)) => SocketAddr::new(local, 0),
        (Some(IpAddr::V6(_)), _) => SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0),
        _ => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0),
    }
}

/// ICE's timing and candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IceSettings {
    /// ICE says "disconnected", then "failed", after this long without an answer.
    pub give_up_after: Duration,
    /// How often consent checks go out.
    pub consent_interval: Duration,
    /// Gather loopback candidates (only for a server on this machine).
    pub include_loopback: bool,
}

impl IceSettings {
    /// Consent checks 2.5 times a second: their answers give the liveness rule a cadence of its
    /// own making, whatever the server's RTCP habits. ICE itself gives up after `dead_after` of
    /// silence, the rule's ceiling.
    pub fn new(server: Option<IpAddr>, dead_after: Duration) -> Self {
        IceSettings {
            give_up_after: dead_after,
            consent_interval: (dead_after / 5)
                .clamp(Duration::from_millis(200), Duration::from_millis(400)),
            include_loopback: server.is_some_and(|ip| ip.is_loopback()),
        }
    }
}

/// The codecs to offer, in order: H.264 and its repair flow always, Opus with audio.
pub fn codecs(audio: bool) -> Vec<(RTCRtpCodecParameters, RtpCodecKind)> {
    let mut codecs = vec![
        (
            RTCRtpCodecParameters {
                rtp_codec: h264_codec(),
                payload_type: H264_PAYLOAD_TYPE,
            },
            RtpCodecKind::Video,
        ),
        (
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_RTX.to_owned(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line: format!("apt={H264_PAYLOAD_TYPE}"),
                    rtcp_feedback: vec![],
                },
                payload_type: RTX_PAYLOAD_TYPE,
            },
            RtpCodecKind::Video,
        ),
    ];
    if audio {
        codecs.push((
            RTCRtpCodecParameters {
                rtp_codec: opus_codec(),
                payload_type: OPUS_PAYLOAD_TYPE,
            },
            RtpCodecKind::Audio,
        ));
    }
    codecs
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

/// The H.264 track, sent as `ssrc`, resendings as `rtx_ssrc` where the answer accepts RTX.
pub fn video_track(ssrc: u32, rtx_ssrc: u32) -> MediaStreamTrack {
    track(
        "onair-video",
        "video",
        RtpCodecKind::Video,
        h264_codec(),
        RTCRtpCodingParameters {
            ssrc: Some(ssrc),
            rtx: Some(RTCRtpRtxParameters { ssrc: rtx_ssrc }),
            ..Default::default()
        },
    )
}

/// The Opus track (48 kHz stereo, what Broadcast Box takes), sent as `ssrc`.
pub fn audio_track(ssrc: u32) -> MediaStreamTrack {
    track(
        "onair-audio",
        "audio",
        RtpCodecKind::Audio,
        opus_codec(),
        RTCRtpCodingParameters {
            ssrc: Some(ssrc),
            ..Default::default()
        },
    )
}

fn track(
    id: &str,
    label: &str,
    kind: RtpCodecKind,
    codec: RTCRtpCodec,
    coding: RTCRtpCodingParameters,
) -> MediaStreamTrack {
    MediaStreamTrack::new(
        STREAM_ID.to_owned(),
        id.to_owned(),
        label.to_owned(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: coding,
            codec,
            ..Default::default()
        }],
    )
}

/// WHIP publishes: a plain offer would be sendrecv.
pub fn sendonly() -> RTCRtpTransceiverInit {
    RTCRtpTransceiverInit {
        direction: RTCRtpTransceiverDirection::Sendonly,
        streams: vec![],
        send_encodings: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn the_socket_binds_the_path_s_source_address_or_the_server_s_family() {
        let v4 = ip("192.0.2.10");
        let local = ip("198.51.100.7");
        let v6 = ip("2001:db8::10");
        let local_v6 = ip("2001:db8::7");
        let bind = |server, local| bind_address(server, local).to_string();
        // A server on this machine: loopback, whatever the path says.
        assert_eq!(bind(Some(ip("127.0.0.1")), Some(local)), "127.0.0.1:0");
        assert_eq!(bind(Some(ip("::1")), None), "[::1]:0");
        // The path's source address, when it is of the server's family.
        assert_eq!(bind(Some(v4), Some(local)), "198.51.100.7:0");
        assert_eq!(bind(Some(v6), Some(local_v6)), "[2001:db8::7]:0");
        assert_eq!(bind(None, Some(local)), "198.51.100.7:0");
        // Otherwise every interface of the server's family.
        assert_eq!(bind(Some(v6), Some(local)), "[::]:0");
        assert_eq!(bind(Some(v4), Some(local_v6)), "0.0.0.0:0");
        assert_eq!(bind(Some(v6), None), "[::]:0");
        assert_eq!(bind(Some(v4), None), "0.0.0.0:0");
        assert_eq!(bind(None, None), "0.0.0.0:0");
    }

    #[test]
    fn consent_checks_go_out_every_fifth_of_dead_after_within_200_to_400_ms() {
        let secs = |s: f64| Duration::from_secs_f64(s);
        let every = |dead_after| IceSettings::new(None, dead_after).consent_interval;
        assert_eq!(every(secs(5.0)), secs(0.4));
        assert_eq!(every(secs(1.5)), secs(0.3));
        assert_eq!(every(secs(0.5)), secs(0.2));
        let ice = IceSettings::new(Some(ip("192.0.2.10")), secs(5.0));
        assert_eq!(ice.give_up_after, secs(5.0));
        assert!(!ice.include_loopback);
        assert!(IceSettings::new(Some(ip("127.0.0.1")), secs(5.0)).include_loopback);
        assert!(!IceSettings::new(None, secs(5.0)).include_loopback);
    }

    #[test]
    fn h264_is_offered_always_with_its_feedback_and_repair_flow_and_opus_only_with_audio() {
        let video = codecs(false);
        assert_eq!(video.len(), 2);
        let (rtx, kind) = &video[1];
        assert_eq!(*kind, RtpCodecKind::Video);
        assert_eq!(rtx.rtp_codec.mime_type, MIME_TYPE_RTX);
        assert_eq!(
            (rtx.payload_type, rtx.rtp_codec.sdp_fmtp_line.as_str()),
            (103, "apt=102")
        );
        let (h264, kind) = &video[0];
        assert_eq!(*kind, RtpCodecKind::Video);
        assert_eq!(h264.payload_type, 102);
        assert_eq!(h264.rtp_codec.mime_type, MIME_TYPE_H264);
        assert!(
            h264.rtp_codec
                .sdp_fmtp_line
                .contains("packetization-mode=1")
        );
        let feedback: Vec<_> = h264
            .rtp_codec
            .rtcp_feedback
            .iter()
            .map(|f| format!("{} {}", f.typ, f.parameter))
            .collect();
        for wanted in ["nack pli", "ccm fir", "goog-remb ", "transport-cc "] {
            assert!(
                feedback.iter().any(|f| f == wanted),
                "{wanted}: {feedback:?}"
            );
        }
        let both = codecs(true);
        assert_eq!(both.len(), 3);
        let (opus, kind) = &both[2];
        assert_eq!(*kind, RtpCodecKind::Audio);
        assert_eq!(opus.payload_type, 111);
        assert_eq!(opus.rtp_codec.mime_type, MIME_TYPE_OPUS);
        assert_eq!(
            (opus.rtp_codec.clock_rate, opus.rtp_codec.channels),
            (48_000, 2)
        );
    }

    #[test]
    fn both_tracks_share_one_stream_and_carry_their_own_ssrc_and_codec() {
        let video = video_track(7, 9);
        let audio = audio_track(8);
        assert_eq!(video.stream_id(), audio.stream_id());
        assert_ne!(video.track_id(), audio.track_id());
        assert_eq!(video.kind(), RtpCodecKind::Video);
        assert_eq!(audio.kind(), RtpCodecKind::Audio);
        let coding = |t: &MediaStreamTrack| {
            let c = &t.codings()[0];
            (c.rtp_coding_parameters.ssrc, c.codec.mime_type.clone())
        };
        assert_eq!(coding(&video), (Some(7), MIME_TYPE_H264.to_owned()));
        assert_eq!(coding(&audio), (Some(8), MIME_TYPE_OPUS.to_owned()));
        let rtx = |t: &MediaStreamTrack| t.codings()[0].rtp_coding_parameters.rtx.clone();
        assert_eq!(rtx(&video).map(|r| r.ssrc), Some(9));
        assert!(rtx(&audio).is_none());
        assert_eq!(sendonly().direction, RTCRtpTransceiverDirection::Sendonly);
    }
}
