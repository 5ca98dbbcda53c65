//! What a connection may send: nothing until a key frame, and after any gap nothing until the
//! next one.
//!
//! Every output needs this rule — a decoder fed P-frames without their key frame shows garbage
//! — so it lives once, next to the door that causes the gaps. The key frames it waits for are
//! requested from the encoder rather than waited out for a whole GOP.

use super::{AccessUnit, KeyframeRequester, Urgency};
use std::time::{Duration, Instant};

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
    pub fn new(keyframes: KeyframeRequester, nudge: Duration) -> Self {
        keyframes.request(Urgency::NewConnection);
        KeyframeSync {
            keyframes,
            nudge,
            synced: false,
            expected_seq: None,
            waiting_since: Instant::now(),
        }
    }

    /// Whether `unit` may be sent.
    pub fn admit(&mut self, unit: &AccessUnit) -> bool {
        if self.expected_seq.is_some_and(|e| e != unit.seq) {
            // Units were dropped at the door.
            self.lose_sync(Urgency::ServerRequest);
        }
        self.expected_seq = Some(unit.seq + 1);
        if !self.synced {
            if !unit.keyframe {
                if self.waiting_since.elapsed() > self.nudge {
                    self.keyframes.request(Urgency::NewConnection);
                    self.waiting_since = Instant::now();
                }
                return false;
            }
            self.synced = true;
        }
        true
    }

    /// The connection itself had to drop a unit (its own backlog): wait for the next key frame.
    pub fn resync(&mut self) {
        self.lose_sync(Urgency::ServerRequest);
    }

    fn lose_sync(&mut self, urgency: Urgency) {
        if self.synced {
            self.keyframes.request(urgency);
        }
        self.synced = false;
        self.waiting_since = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

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
        units
            .iter()
            .filter(|(s, k)| sync.admit(&au(*s, *k)))
            .map(|(s, _)| *s)
            .collect()
    }

    #[test]
    fn starts_at_the_first_key_frame() {
        let mut s = KeyframeSync::new(KeyframeRequester::new(), Duration::from_secs(1));
        let got = admitted(&mut s, &[(5, false), (6, false), (7, true), (8, false)]);
        assert_eq!(got, vec![7, 8]);
    }

    #[test]
    fn a_gap_waits_for_the_next_key_frame() {
        let mut s = KeyframeSync::new(KeyframeRequester::new(), Duration::from_secs(1));
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
        let mut s = KeyframeSync::new(KeyframeRequester::new(), Duration::from_secs(1));
        assert!(s.admit(&au(1, true)));
        s.resync();
        assert_eq!(admitted(&mut s, &[(2, false), (3, true)]), vec![3]);
    }
}
