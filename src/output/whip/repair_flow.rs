//! An interceptor that also treats the repair flow (RFC 4588 RTX) as a stream of its own.
//!
//! Where the server's answer accepts RTX, webrtc-rs's NACK responder resends on the repair
//! flow's SSRC, but webrtc-rs binds only the media SSRC to its interceptors, and those that keep
//! per-stream state ignore the rest: the transport-wide sequence numbers would skip every
//! resending (the server could not report on it, and the congestion controller's send history,
//! which also keys on the SSRC, would not count its bytes — a path that loses would look as if
//! it carried less than it does), and abs-send-time would not stamp it. libwebrtc numbers and
//! stamps its RTX packets like any other; [`WithRepairFlow`] makes the wrapped interceptor do
//! the same, by binding the repair flow beside the media stream when the answer negotiated one.

use rtc::interceptor::{Interceptor, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use std::time::Instant;

pub struct WithRepairFlow<I>(pub I);

/// The repair flow's own stream, when the answer negotiated one (an SSRC and a payload type).
fn repair_flow(info: &StreamInfo) -> Option<StreamInfo> {
    let ssrc = info.ssrc_rtx?;
    let payload_type = info.payload_type_rtx?;
    Some(StreamInfo {
        ssrc,
        payload_type,
        ssrc_rtx: None,
        payload_type_rtx: None,
        ..info.clone()
    })
}

impl<I: Interceptor> Protocol<TaggedPacket, TaggedPacket, ()> for WithRepairFlow<I> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.0.handle_read(msg)
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.0.poll_read()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        self.0.handle_write(msg)
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.0.poll_write()
    }

    fn handle_event(&mut self, evt: ()) -> Result<(), Error> {
        self.0.handle_event(evt)
    }

    fn poll_event(&mut self) -> Option<()> {
        self.0.poll_event()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        self.0.handle_timeout(now)
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.0.poll_timeout()
    }

    fn close(&mut self) -> Result<(), Error> {
        self.0.close()
    }
}

impl<I: Interceptor> Interceptor for WithRepairFlow<I> {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.0.bind_local_stream(info);
        if let Some(repair) = repair_flow(info) {
            self.0.bind_local_stream(&repair);
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.0.unbind_local_stream(info);
        if let Some(repair) = repair_flow(info) {
            self.0.unbind_local_stream(&repair);
        }
    }

    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.0.bind_remote_stream(info);
    }

    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.0.unbind_remote_stream(info);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::whip::abs_send_time::AbsSendTime;
    use crate::output::whip::pass_through::PassThrough;
    use rtc::interceptor::{AttributedPacket, Packet, RTPHeaderExtension};
    use rtc::rtp;
    use rtc::sdp::extmap::ABS_SEND_TIME_URI;
    use rtc::shared::TransportContext;

    fn info(rtx_payload_type: Option<u8>) -> StreamInfo {
        StreamInfo {
            ssrc: 1,
            payload_type: 102,
            ssrc_rtx: Some(2),
            payload_type_rtx: rtx_payload_type,
            rtp_header_extensions: vec![RTPHeaderExtension {
                uri: ABS_SEND_TIME_URI.to_owned(),
                id: 3,
            }],
            ..Default::default()
        }
    }

    /// Whether a packet on `ssrc` leaves stamped.
    fn stamped(chain: &mut WithRepairFlow<PassThrough<AbsSendTime>>, ssrc: u32) -> bool {
        let packet = Packet::Rtp(rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                ssrc,
                ..Default::default()
            },
            payload: vec![0u8; 10].into(),
        });
        chain
            .handle_write(TaggedPacket {
                now: Instant::now(),
                transport: TransportContext::default(),
                message: AttributedPacket::new(packet),
            })
            .expect("write");
        match chain.poll_write().map(|m| m.message.packet) {
            Some(Packet::Rtp(p)) => p.header.get_extension(3).is_some(),
            _ => panic!("the packet did not pass"),
        }
    }

    #[test]
    fn the_repair_flow_is_treated_as_a_stream_only_where_the_answer_negotiated_it() {
        let mut chain = WithRepairFlow(PassThrough::new(AbsSendTime::new(Instant::now())));
        chain.bind_local_stream(&info(Some(103)));
        assert!(stamped(&mut chain, 1));
        assert!(stamped(&mut chain, 2), "the repair flow is stamped too");
        chain.unbind_local_stream(&info(Some(103)));
        assert!(!stamped(&mut chain, 2));
        // The answer refused RTX: the SSRC is still in the offer's parameters, the payload
        // type is not; nothing but the media stream is bound.
        let mut chain = WithRepairFlow(PassThrough::new(AbsSendTime::new(Instant::now())));
        chain.bind_local_stream(&info(None));
        assert!(stamped(&mut chain, 1));
        assert!(!stamped(&mut chain, 2));
    }
}
