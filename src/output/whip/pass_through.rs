//! The interceptor shell our watches share. rtc-interceptor feeds each interceptor its packets
//! and passes on only what it queued, so one that only reads packets (or stamps them) must
//! still queue every one, in order, both ways. [`PassThrough`] does that around a [`Tap`],
//! which sees each packet on its way.

use rtc::interceptor::{Interceptor, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use std::collections::VecDeque;
use std::time::Instant;

/// What sees the packets a [`PassThrough`] passes on.
pub trait Tap: Send + Sync {
    /// A packet on its way from the wire to the application.
    fn inbound(&mut self, _packet: &TaggedPacket) {}
    /// A packet on its way from the application to the wire; it may be stamped.
    fn outbound(&mut self, _packet: &mut TaggedPacket) {}
    /// A stream we send has been negotiated.
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    /// A stream we send is gone.
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
}

/// An interceptor that passes every packet on, in order, after its [`Tap`] has seen it.
pub struct PassThrough<T> {
    tap: T,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl<T: Tap> PassThrough<T> {
    pub fn new(tap: T) -> Self {
        PassThrough {
            tap,
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }
}

impl<T: Tap> Protocol<TaggedPacket, TaggedPacket, ()> for PassThrough<T> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.tap.inbound(&msg);
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        self.tap.outbound(&mut msg);
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl<T: Tap> Interceptor for PassThrough<T> {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.tap.bind_local_stream(info);
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.tap.unbind_local_stream(info);
    }

    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::{AttributedPacket, Packet};
    use rtc::shared::TransportContext;
    use std::time::Duration;

    /// Counts what it sees and stamps each outbound packet with the time it left.
    #[derive(Default)]
    struct Counter {
        inbound: usize,
        outbound: usize,
    }

    impl Tap for Counter {
        fn inbound(&mut self, _packet: &TaggedPacket) {
            self.inbound += 1;
        }

        fn outbound(&mut self, packet: &mut TaggedPacket) {
            self.outbound += 1;
            packet.now += Duration::from_secs(1);
        }
    }

    fn packet(now: Instant) -> TaggedPacket {
        TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtcp(vec![])),
        }
    }

    #[test]
    fn every_packet_passes_in_order_both_ways_after_the_tap_saw_it() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut chain = PassThrough::new(Counter::default());
        for ms in 0..3 {
            chain.handle_read(packet(at(ms))).expect("read");
            chain.handle_write(packet(at(10 + ms))).expect("write");
        }
        let read: Vec<_> = std::iter::from_fn(|| chain.poll_read())
            .map(|p| p.now)
            .collect();
        let written: Vec<_> = std::iter::from_fn(|| chain.poll_write())
            .map(|p| p.now)
            .collect();
        assert_eq!(read, [at(0), at(1), at(2)]);
        // Stamped on the way out by the tap.
        assert_eq!(written, [at(1010), at(1011), at(1012)]);
        assert_eq!((chain.tap.inbound, chain.tap.outbound), (3, 3));
    }
}
