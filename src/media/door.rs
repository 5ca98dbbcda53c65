//! The output's door: where access units leave the media pipeline.
//!
//! Media never waits for the network. The encoder's streaming thread offers each access unit
//! here; if a connection has opened a tap and has room, it gets the unit, otherwise the unit is
//! dropped on the spot (and the tap learns it must resync at the next key frame). Each
//! connection opens its own tap and the tap closes when the connection drops it, so a torn-down
//! connection can never hold media back or receive the next connection's frames.
//!
//! Audio leaves by the same door in a lane of its own: a tap opens both lanes at once, so a
//! new connection gets sound and pictures from the same moment, and while no tap is open the
//! sound is dropped like the pictures.
//!
//! Recording leaves by a third way out, a tap of its own ([`Door::open_recording`]) that does not
//! depend on any connection: it gets every unit while it is open, whether a connection is up or
//! not, and when it is full (a slow or stalled disk) the unit is dropped for the recording only,
//! on the spot, exactly as for a connection. The live path never waits for the recording.

use super::AccessUnit;
use super::audio::AudioUnit;
use crate::lock::lock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

#[derive(Clone, Default)]
pub struct Door {
    inner: Arc<DoorInner>,
}

#[derive(Default)]
struct DoorInner {
    tap: Mutex<Option<Lanes>>,
    /// The recording's tap, apart from the connection's.
    recording: Mutex<Option<Lanes>>,
    next_id: AtomicU64,
    offered: AtomicU64,
    dropped: AtomicU64,
    audio_dropped: AtomicU64,
    recording_dropped: AtomicU64,
}

/// Which way out a tap is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    Connection,
    Recording,
}

struct Lanes {
    id: u64,
    video: mpsc::Sender<AccessUnit>,
    audio: mpsc::Sender<AudioUnit>,
}

/// A connection's end of the door. Receives access units in order; a gap in `seq` means units
/// were dropped at the door and the receiver must wait for a key frame. Dropping the tap closes
/// it.
pub struct Tap {
    id: u64,
    way: Way,
    door: Door,
    rx: mpsc::Receiver<AccessUnit>,
    audio: mpsc::Receiver<AudioUnit>,
}

impl Tap {
    pub async fn recv(&mut self) -> Option<AccessUnit> {
        self.rx.recv().await
    }

    /// The next encoded audio frame (never ends while the tap is open, even without audio).
    pub async fn recv_audio(&mut self) -> Option<AudioUnit> {
        self.audio.recv().await
    }

    /// Both lanes, to wait on them together.
    pub fn lanes(
        &mut self,
    ) -> (
        &mut mpsc::Receiver<AccessUnit>,
        &mut mpsc::Receiver<AudioUnit>,
    ) {
        (&mut self.rx, &mut self.audio)
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let mut tap = lock(self.door.slot(self.way));
        if tap.as_ref().is_some_and(|l| l.id == self.id) {
            *tap = None;
        }
    }
}

impl Door {
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens a tap holding at most `capacity` units (about a second of video is plenty: more
    /// would only add latency). Replaces any tap still open.
    pub fn open(&self, capacity: usize) -> Tap {
        self.open_way(Way::Connection, capacity)
    }

    /// Opens the recording's tap, holding at most `capacity` units (the recording's whole
    /// buffer against a slow disk), beside whatever connection tap is open or not. Replaces any
    /// recording tap still open.
    pub fn open_recording(&self, capacity: usize) -> Tap {
        self.open_way(Way::Recording, capacity)
    }

    fn open_way(&self, way: Way, capacity: usize) -> Tap {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        // Audio frames are 20 ms (Opus) to 21 ms (AAC): the same stretch of time as the
        // pictures' lane holds.
        let (audio_tx, audio) = mpsc::channel(capacity.max(1) * 2);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        *lock(self.slot(way)) = Some(Lanes {
            id,
            video: tx,
            audio: audio_tx,
        });
        Tap {
            id,
            way,
            door: self.clone(),
            rx,
            audio,
        }
    }

    fn slot(&self, way: Way) -> &Mutex<Option<Lanes>> {
        match way {
            Way::Connection => &self.inner.tap,
            Way::Recording => &self.inner.recording,
        }
    }

    /// Called on the streaming thread for every access unit; never blocks.
    pub fn offer(&self, unit: AccessUnit) {
        self.inner.offered.fetch_add(1, Ordering::Relaxed);
        if let Some(lanes) = lock(&self.inner.recording).as_ref()
            && lanes.video.try_send(unit.clone()).is_err()
        {
            self.inner.recording_dropped.fetch_add(1, Ordering::Relaxed);
        }
        let tap = lock(&self.inner.tap);
        if let Some(lanes) = tap.as_ref()
            && lanes.video.try_send(unit).is_err()
        {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Called on the audio streaming thread for every encoded frame; never blocks.
    pub fn offer_audio(&self, unit: AudioUnit) {
        if let Some(lanes) = lock(&self.inner.recording).as_ref()
            && lanes.audio.try_send(unit.clone()).is_err()
        {
            self.inner.recording_dropped.fetch_add(1, Ordering::Relaxed);
        }
        let tap = lock(&self.inner.tap);
        if let Some(lanes) = tap.as_ref()
            && lanes.audio.try_send(unit).is_err()
        {
            self.inner.audio_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Units (pictures and sound) dropped at the recording's tap because it was full.
    pub fn recording_dropped(&self) -> u64 {
        self.inner.recording_dropped.load(Ordering::Relaxed)
    }

    pub fn is_open(&self) -> bool {
        lock(&self.inner.tap).is_some()
    }

    /// Units offered since start, and units dropped because the open tap was full.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.inner.offered.load(Ordering::Relaxed),
            self.inner.dropped.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;

    fn au(seq: u64) -> AccessUnit {
        AccessUnit {
            data: Bytes::from_static(b"\0\0\0\x01\x65"),
            seq,
            pts: Duration::from_millis(seq * 33),
            duration: Duration::from_millis(33),
            keyframe: seq == 0,
        }
    }

    #[tokio::test]
    async fn closed_door_drops_and_full_tap_drops_without_blocking() {
        let door = Door::new();
        door.offer(au(0));
        let mut tap = door.open(2);
        for i in 1..=5 {
            door.offer(au(i));
        }
        assert_eq!(tap.recv().await.unwrap().seq, 1);
        assert_eq!(tap.recv().await.unwrap().seq, 2);
        assert_eq!(door.counts(), (6, 3));
    }

    #[tokio::test]
    async fn audio_is_dropped_while_closed_and_flows_with_the_tap() {
        use crate::media::audio::{AudioCodec, AudioUnit};
        let unit = |n: u64| AudioUnit {
            data: Bytes::from_static(b"opus"),
            pts: Duration::from_millis(n * 20),
            duration: Duration::from_millis(20),
            codec: AudioCodec::Opus,
            codec_data: None,
        };
        let door = Door::new();
        door.offer_audio(unit(0));
        let mut tap = door.open(2);
        door.offer_audio(unit(1));
        assert_eq!(
            tap.recv_audio().await.unwrap().pts,
            Duration::from_millis(20)
        );
        drop(tap);
        door.offer_audio(unit(2));
        let mut tap = door.open(2);
        door.offer_audio(unit(3));
        assert_eq!(
            tap.recv_audio().await.unwrap().pts,
            Duration::from_millis(60),
            "nothing queued while no connection was up"
        );
    }

    #[tokio::test]
    async fn the_recording_gets_every_unit_with_or_without_a_connection_and_never_blocks_it() {
        let door = Door::new();
        let mut rec = door.open_recording(3);
        door.offer(au(0));
        let mut conn = door.open(8);
        for i in 1..=5 {
            door.offer(au(i));
        }
        assert_eq!(rec.recv().await.unwrap().seq, 0, "recorded while offline");
        assert_eq!(rec.recv().await.unwrap().seq, 1);
        assert_eq!(rec.recv().await.unwrap().seq, 2);
        assert_eq!(
            door.recording_dropped(),
            3,
            "a full recording drops its own units"
        );
        for i in 1..=5 {
            assert_eq!(
                conn.recv().await.unwrap().seq,
                i,
                "the connection lost nothing"
            );
        }
        assert_eq!(door.counts(), (6, 0));
        drop(conn);
        door.offer(au(6));
        assert_eq!(
            rec.recv().await.unwrap().seq,
            6,
            "a dropped connection leaves it open"
        );
        drop(rec);
        assert!(!door.is_open());
    }

    #[tokio::test]
    async fn dropping_a_tap_closes_only_that_tap() {
        let door = Door::new();
        let old = door.open(4);
        let mut new = door.open(4);
        drop(old);
        assert!(door.is_open(), "the old tap must not close the new one");
        door.offer(au(7));
        assert_eq!(new.recv().await.unwrap().seq, 7);
        drop(new);
        assert!(!door.is_open());
    }
}
