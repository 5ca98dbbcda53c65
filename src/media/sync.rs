//! What a connection may send: nothing until a key frame, and after any gap nothing until the
//! next one.
//!
//! Every output needs this rule — a decoder fed P-frames without their key frame shows garbage
//! — so it lives once, next to the door that causes the gaps. The key frames it waits for are
//! requested from the encoder rather than waited out for a whole GOP.

use super::{AccessUnit, KeyframeRequester, Urgency};
use std::time::Duration;
use tokio::time::Instant;

pub struct KeyframeSync {
    keyframes: KeyframeRequester,
    nudge: Duration,
    synced: bool,
    expected_seq: Option<u64>,
    waiting_since: Instant,
}

impl KeyframeSync {
    /// Asks for a key frame at once: a new connection must start with one. While waiting,
    /// asks again every `nudge` (a request can be lost when capture restarts).
    pub fn new(keyframes: KeyframeRequester, nudge: Duration, now: Instant) -> Self {
        keyframes.request(Urgency::NewConnection);
        KeyframeSync {
            keyframes,
            nudge,
            synced: false,
            expected_seq: None,
            waiting_since: now,
        }
    }

    /// Whether `unit`, arriving at `now`, may be sent.
    pub fn admit(&mut self, unit: &AccessUnit, now: Instant) -> bool {
        if self.expected_seq.is_some_and(|e| e != unit.seq) {
            // Units were dropped at the door.
            self.lose_sync(Urgency::ServerRequest, now);
        }
        self.expected_seq = Some(unit.seq + 1);
        if !self.synced {
            if !unit.keyframe {
                if now.saturating_duration_since(self.waiting_since) > self.nudge {
                    self.keyframes.request(Urgency::NewConnection);
                    self.waiting_since = now;
                }
                return false;
            }
            self.synced = true;
        }
        true
    }

    /// The connection itself had to drop a unit (its own backlog): wait for the next key frame.
    pub fn resync(&mut self, now: Instant) {
        self.lose_sync(Urgency::ServerRequest, now);
    }

    fn lose_sync(&mut self, urgency: Urgency, now: Instant) {
        if self.synced {
            self.keyframes.request(urgency);
        }
        self.synced = false;
        self.waiting_since = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::keyframes::KeyframeForcer;
    use bytes::Bytes;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn au(seq: u64, keyframe: bool) -> AccessUnit {
        AccessUnit {
            data: Bytes::new(),
            seq,
            pts: Duration::ZERO,
            duration: Duration::from_millis(33),
            keyframe,
        }
    }

    fn admitted(sync: &mut KeyframeSync, units: &[(u64, bool)]) -> Vec<u64> {
        let now = Instant::now();
        units
            .iter()
            .filter(|(s, k)| sync.admit(&au(*s, *k), now))
            .map(|(s, _)| *s)
            .collect()
    }

    fn new_sync(keyframes: KeyframeRequester) -> KeyframeSync {
        KeyframeSync::new(keyframes, Duration::from_secs(1), Instant::now())
    }

    /// Counts the key frames the sync actually asks the encoder for.
    struct Count(AtomicU32);
    impl KeyframeForcer for Count {
        fn force(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting_requester() -> (KeyframeRequester, Arc<Count>) {
        let r = KeyframeRequester::new();
        let c = Arc::new(Count(AtomicU32::new(0)));
        r.set_forcer(Some(c.clone()));
        (r, c)
    }

    #[test]
    fn starts_at_the_first_key_frame() {
        let mut s = new_sync(KeyframeRequester::new());
        let got = admitted(&mut s, &[(5, false), (6, false), (7, true), (8, false)]);
        assert_eq!(got, vec![7, 8]);
    }

    #[test]
    fn a_gap_waits_for_the_next_key_frame() {
        let mut s = new_sync(KeyframeRequester::new());
        let got = admitted(
            &mut s,
            &[
                (1, true),
                (2, false),
                (4, false),
                (5, false),
                (6, true),
                (7, false),
            ],
        );
        assert_eq!(got, vec![1, 2, 6, 7]);
    }

    #[test]
    fn resync_drops_to_the_next_key_frame() {
        let mut s = new_sync(KeyframeRequester::new());
        assert!(s.admit(&au(1, true), Instant::now()));
        s.resync(Instant::now());
        assert_eq!(admitted(&mut s, &[(2, false), (3, true)]), vec![3]);
    }

    /// A new connection asks once; while no key frame reaches it, it asks again every `nudge`
    /// (the key frame may have gone to nobody while capture restarted), and never faster.
    #[test]
    fn waiting_for_a_key_frame_nudges_the_encoder_once_per_interval() {
        let (keyframes, forced) = counting_requester();
        let forced = || forced.0.load(Ordering::SeqCst);
        let t0 = Instant::now();
        let mut s = KeyframeSync::new(keyframes.clone(), Duration::from_secs(1), t0);
        assert_eq!(forced(), 1, "asked at once");
        let mut seq = 0;
        let mut admit = |ms: u64, key: bool| {
            // The encoder answers every request, but its key frames are lost before this
            // connection sees them; only the unit passed here arrives.
            keyframes.key_frame_seen();
            seq += 1;
            s.admit(&au(seq, key), t0 + Duration::from_millis(ms))
        };
        for ms in (33..=990).step_by(33) {
            assert!(!admit(ms, false));
        }
        assert_eq!(forced(), 1, "no nudge within the first second");
        assert!(!admit(1023, false));
        assert_eq!(forced(), 2, "nudged once a second has passed");
        for ms in (1056..=2000).step_by(33) {
            assert!(!admit(ms, false));
        }
        assert_eq!(forced(), 2, "not again within the next second");
        assert!(!admit(2040, false));
        assert_eq!(forced(), 3, "and again after it");
        assert!(admit(2073, true), "the key frame starts the stream");
        assert!(admit(2106, false));
        assert!(admit(9000, false), "synced: no nudge however long");
        assert_eq!(forced(), 3);
    }
}
