//! Stamps each RTP packet with its send time (the abs-send-time header extension).
//!
//! A server that estimates the rate on its own side and tells the box in REMB (aiortc, older
//! libwebrtc) needs to know when each packet left, to tell queueing on the path from the
//! sender's own pacing. webrtc-rs writes no such stamp, so this interceptor does, for every
//! stream that negotiated the extension. It sits next to the wire, below the transport-wide
//! sequence numbers and the retransmitter, so a retransmission is stamped when it leaves too.

use super::pass_through::Tap;
use rtc::interceptor::{Packet, StreamInfo, TaggedPacket};
use rtc::rtp::extension::abs_send_time_extension::AbsSendTimeExtension;
use rtc::sdp::extmap::ABS_SEND_TIME_URI;
use rtc::shared::marshal::Marshal;
use std::collections::HashMap;
use std::time::Instant;

pub struct AbsSendTime {
    /// The time the stamps count from; only differences matter to the receiver.
    epoch: Instant,
    /// Header extension id per local stream that negotiated it.
    streams: HashMap<u32, u8>,
}

impl AbsSendTime {
    pub fn new(epoch: Instant) -> Self {
        AbsSendTime {
            epoch,
            streams: HashMap::new(),
        }
    }
}

/// 6.18 fixed-point seconds, wrapping every 64 s.
pub fn stamp(since_epoch: std::time::Duration) -> u64 {
    ((since_epoch.as_secs_f64() * f64::from(1u32 << 18)) as u64) & 0x00ff_ffff
}

impl Tap for AbsSendTime {
    fn outbound(&mut self, msg: &mut TaggedPacket) {
        if let Packet::Rtp(packet) = &mut msg.message.packet
            && let Some(&id) = self.streams.get(&packet.header.ssrc)
        {
            let extension = AbsSendTimeExtension {
                timestamp: stamp(msg.now.saturating_duration_since(self.epoch)),
            };
            // Only fails for an id the negotiation could not have produced; the packet then
            // goes out unstamped.
            if let Ok(bytes) = extension.marshal() {
                let _ = packet.header.set_extension(id, bytes.freeze());
            }
        }
    }

    fn bind_local_stream(&mut self, info: &StreamInfo) {
        if let Some(ext) = info
            .rtp_header_extensions
            .iter()
            .find(|e| e.uri == ABS_SEND_TIME_URI)
            && let Ok(id) = u8::try_from(ext.id)
            && id != 0
        {
            self.streams.insert(info.ssrc, id);
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.streams.remove(&info.ssrc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stamps_are_six_point_eighteen_seconds_wrapping_at_64() {
        assert_eq!(stamp(Duration::ZERO), 0);
        assert_eq!(stamp(Duration::from_secs(1)), 1 << 18);
        assert_eq!(stamp(Duration::from_millis(500)), 1 << 17);
        assert_eq!(stamp(Duration::from_secs(64)), 0);
        assert_eq!(stamp(Duration::from_secs(65)), 1 << 18);
    }
}
