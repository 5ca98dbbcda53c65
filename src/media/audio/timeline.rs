//! The audio pump's pure core: whatever the capture does, the encoder gets one unbroken
//! stream of PCM on the media clock. Capture buffers are placed at their timestamps; the pump
//! takes fixed chunks at a steady pace, and any stretch the capture did not cover (a device
//! missing, unplugged, stalled, or just late) is silence at the same format.

use std::collections::VecDeque;
use std::time::Duration;

/// A capture buffer this far from where the previous one ended starts a new run (a restarted
/// capture, or clock drift grown too large): what was held is dropped.
const REANCHOR: Duration = Duration::from_millis(30);

pub struct PcmTimeline {
    rate: u64,
    frame_bytes: usize,
    /// Media time of the first frame held.
    start: Option<Duration>,
    held: VecDeque<u8>,
    max_bytes: usize,
}

/// One chunk taken for the encoder.
#[derive(Debug, PartialEq)]
pub struct Chunk {
    pub data: Vec<u8>,
    /// Frames of it that came from the capture (the rest is silence).
    pub live_frames: usize,
}

impl PcmTimeline {
    /// `frame_bytes`: bytes of one frame (all channels); `max_hold`: the most held before the
    /// oldest is dropped.
    pub fn new(rate: u32, frame_bytes: usize, max_hold: Duration) -> PcmTimeline {
        let rate = u64::from(rate);
        PcmTimeline {
            rate,
            frame_bytes,
            start: None,
            held: VecDeque::new(),
            max_bytes: frames_in(rate, max_hold) * frame_bytes,
        }
    }

    fn held_frames(&self) -> usize {
        self.held.len() / self.frame_bytes
    }

    fn span(&self, frames: usize) -> Duration {
        Duration::from_nanos((frames as u64).saturating_mul(1_000_000_000) / self.rate)
    }

    /// A capture buffer stamped `pts` (media time of its first frame).
    pub fn feed(&mut self, pts: Duration, data: &[u8]) {
        let whole = data.len() - data.len() % self.frame_bytes;
        let data = &data[..whole];
        let end = self.start.map(|s| s + self.span(self.held_frames()));
        let contiguous = end.is_some_and(|e| e.abs_diff(pts) <= REANCHOR);
        if !contiguous {
            self.held.clear();
            self.start = Some(pts);
        }
        self.held.extend(data);
        let over = self.held.len().saturating_sub(self.max_bytes);
        if over > 0 {
            let over = over.div_ceil(self.frame_bytes) * self.frame_bytes;
            self.held.drain(..over.min(self.held.len()));
            self.start = self.start.map(|s| s + self.span(over / self.frame_bytes));
        }
    }

    /// The `frames` frames starting at media time `at`: captured sound where there is some,
    /// silence elsewhere. Anything held from before `at` is dropped.
    pub fn take(&mut self, at: Duration, frames: usize) -> Chunk {
        let fb = self.frame_bytes;
        let mut data = vec![0u8; frames * fb];
        let mut live_frames = 0;
        if let Some(start) = self.start {
            if start < at {
                let stale = frames_in(self.rate, at - start).min(self.held_frames());
                self.held.drain(..stale * fb);
                self.start = Some(start + self.span(stale));
            }
            let start = self.start.unwrap_or(at);
            let lead = if start > at {
                frames_in(self.rate, start - at)
            } else {
                0
            };
            if lead < frames {
                let n = (frames - lead).min(self.held_frames());
                for (dst, src) in data[lead * fb..(lead + n) * fb]
                    .iter_mut()
                    .zip(self.held.drain(..n * fb))
                {
                    *dst = src;
                }
                live_frames = n;
                self.start = Some(start + self.span(n));
            }
            if self.held.is_empty() {
                self.start = None;
            }
        }
        Chunk { data, live_frames }
    }
}

fn frames_in(rate: u64, d: Duration) -> usize {
    ((d.as_nanos() as u64).saturating_mul(rate) / 1_000_000_000) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Mono 16-bit at 1 kHz: one frame per millisecond, 2 bytes each.
    fn t() -> PcmTimeline {
        PcmTimeline::new(1000, 2, Duration::from_millis(200))
    }

    fn ones(frames: usize) -> Vec<u8> {
        vec![1u8; frames * 2]
    }

    #[test]
    fn nothing_captured_is_silence_of_the_right_size() {
        let mut t = t();
        let c = t.take(Duration::ZERO, 20);
        assert_eq!((c.data.len(), c.live_frames), (40, 0));
        assert!(c.data.iter().all(|&b| b == 0));
    }

    #[test]
    fn capture_is_placed_at_its_timestamp_and_gaps_are_silence() {
        let mut t = t();
        t.feed(MS * 105, &ones(10));
        let c = t.take(MS * 100, 20);
        assert_eq!(c.live_frames, 10);
        assert!(
            c.data[..10].iter().all(|&b| b == 0),
            "5 ms of silence first"
        );
        assert!(c.data[10..30].iter().all(|&b| b == 1));
        assert!(c.data[30..].iter().all(|&b| b == 0), "then silence again");
    }

    #[test]
    fn contiguous_buffers_join_and_stale_sound_is_dropped() {
        let mut t = t();
        t.feed(MS * 100, &ones(20));
        t.feed(MS * 121, &ones(20)); // 1 ms late: still one run
        let c = t.take(MS * 110, 20);
        assert_eq!(c.live_frames, 20, "10 ms from before `at` dropped");
        let c = t.take(MS * 130, 20);
        assert_eq!(c.live_frames, 10);
    }

    #[test]
    fn a_restarted_capture_reanchors() {
        let mut t = t();
        t.feed(MS * 100, &ones(20));
        t.feed(MS * 500, &ones(20));
        let c = t.take(MS * 100, 20);
        assert_eq!(c.live_frames, 0, "the old run was dropped");
        let c = t.take(MS * 500, 20);
        assert_eq!(c.live_frames, 20);
    }

    #[test]
    fn memory_is_bounded() {
        let mut t = t();
        for i in 0..100u64 {
            t.feed(MS * (i as u32 * 10), &ones(10));
        }
        assert!(t.held.len() <= 200 * 2);
        let c = t.take(MS * 990, 10);
        assert_eq!(c.live_frames, 10, "the newest sound is kept");
    }
}
