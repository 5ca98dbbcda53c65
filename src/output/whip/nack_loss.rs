//! What the server's NACKs say about the path: pure, clocked by its caller.
//!
//! When an uplink shrinks under the box, the first word of it is not an estimate: a receiver
//! that reports only every second or so (aiortc's reports; its REMB falls over half a second
//! or more) lets the box pour its old rate into the bottleneck meanwhile, and every packet
//! lost then is a hole that must be repaired before the viewer's picture moves on. The NACKs
//! say it first — pion asks every 100 ms for everything missing, a gap-watching receiver as
//! soon as it sees the gap. When one NACK names a large share of the packets that left over
//! the stretch it covers, what got through over that stretch is what the bottleneck carries;
//! the box then sends no more than [`DRAIN`] of it (GCC's back-off, so the queue drains),
//! pictures and resendings together (what resendings take is kept off the encoder's share).
//!
//! Ordinary loss never speaks here: it takes at least [`MIN_NAMED`] packets named for the first
//! time in one NACK, and [`HEAVY`] of the stretch between the first and the last of them. At
//! 5 % random loss, eight new holes in one NACK need some 160 packets between two of pion's
//! NACKs, 100 ms apart (13 Mbit/s); at 2.5 Mbit/s (25 packets) it is about one chance in
//! 10 000.

use super::retransmit::HISTORY;
use std::time::Duration;
use tokio::time::Instant;

/// A NACK speaks for the path when it names at least this many packets for the first time…
pub const MIN_NAMED: usize = 8;
/// …and they are at least this share of the stretch they span.
pub const HEAVY: f64 = 0.25;
/// The rate to send at, as a share of what got through.
pub const DRAIN: f64 = 0.85;
/// A stretch shorter than this is counted as this long: a burst that left at once says
/// nothing about a rate.
const MIN_SPAN: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy)]
struct Left {
    seq: u16,
    at: Instant,
    bytes: u32,
    named: bool,
}

/// The packets that left lately, and which of them a NACK has named.
pub struct NackLoss {
    ring: Vec<Option<Left>>,
}

impl Default for NackLoss {
    fn default() -> Self {
        Self::new()
    }
}

impl NackLoss {
    pub fn new() -> Self {
        NackLoss {
            ring: vec![None; HISTORY],
        }
    }

    fn get(&self, seq: u16) -> Option<Left> {
        self.ring[usize::from(seq) % HISTORY].filter(|l| l.seq == seq)
    }

    /// A packet of the media stream left for the first time.
    pub fn on_left(&mut self, now: Instant, seq: u16, bytes: u32) {
        self.ring[usize::from(seq) % HISTORY] = Some(Left {
            seq,
            at: now,
            bytes,
            named: false,
        });
    }

    /// A NACK named `seqs` (in its order, oldest first). Returns the rate (bit/s) to send at
    /// when it shows heavy loss.
    pub fn on_nack(&mut self, seqs: &[u16]) -> Option<f64> {
        let mut new = seqs.iter().copied().filter(|&s| {
            let slot = usize::from(s) % HISTORY;
            match self.ring[slot].as_mut().filter(|l| l.seq == s && !l.named) {
                Some(l) => {
                    l.named = true;
                    true
                }
                None => false,
            }
        });
        let first = new.next()?;
        let (count, last) = new.fold((1, first), |(n, _), s| (n + 1, s));
        let length = usize::from(last.wrapping_sub(first)) + 1;
        if count < MIN_NAMED || length > HISTORY / 2 {
            return None;
        }
        let stretch: Vec<Left> = (0..length)
            .filter_map(|i| self.get(first.wrapping_add(i as u16)))
            .collect();
        let named = stretch.iter().filter(|l| l.named).count();
        if (named as f64) < HEAVY * stretch.len() as f64 {
            return None;
        }
        let from = stretch.iter().map(|l| l.at).min()?;
        let to = stretch.iter().map(|l| l.at).max()?;
        let span = to.saturating_duration_since(from).max(MIN_SPAN);
        let through: u64 = stretch
            .iter()
            .filter(|l| !l.named)
            .map(|l| u64::from(l.bytes))
            .sum();
        // Nothing through says nothing about a rate (the next NACK will).
        (through > 0).then(|| DRAIN * through as f64 * 8.0 / span.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// `n` packets of 1 250 bytes leaving every 4 ms (2.5 Mbit/s) from `t0`.
    fn sent(t0: Instant, n: u16) -> NackLoss {
        let mut l = NackLoss::new();
        for seq in 0..n {
            l.on_left(t0 + MS(4 * u64::from(seq)), seq, 1250);
        }
        l
    }

    #[tokio::test(start_paused = true)]
    async fn a_nack_naming_most_of_a_stretch_gives_what_got_through() {
        let t0 = Instant::now();
        let mut l = sent(t0, 100);
        // A 1 Mbit/s bucket behind a 2.5 Mbit/s sender: three packets of every five dropped.
        let lost: Vec<u16> = (20..60).filter(|s| s % 5 < 3).collect();
        let bps = l.on_nack(&lost).expect("heavy loss speaks");
        // From 20 to 57: 38 packets over 148 ms, 14 of them through (946 kbit/s); 85 % of it.
        let through = 14.0 * 1250.0 * 8.0 / 0.148;
        assert!((bps - DRAIN * through).abs() < 1000.0, "{bps}");
        // Asked again (pion repeats every 100 ms): nothing new, nothing said.
        assert_eq!(l.on_nack(&lost), None);
        // Ten of twelve, as the first NACK after an uplink shrank named them: heavy enough.
        let lost: Vec<u16> = (70..84).filter(|s| s % 7 < 5).collect();
        assert!(l.on_nack(&lost).is_some(), "{lost:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn ordinary_loss_says_nothing() {
        let t0 = Instant::now();
        let mut l = sent(t0, 200);
        // One packet here and there, or a few far apart.
        assert_eq!(l.on_nack(&[10]), None);
        assert_eq!(l.on_nack(&[30, 31]), None);
        assert_eq!(l.on_nack(&[40, 70, 100]), None);
        // Seven at once: not enough to judge a rate by.
        assert_eq!(l.on_nack(&(150..157).collect::<Vec<_>>()), None);
        // Eight, but a small share of what they span.
        assert_eq!(l.on_nack(&(160..200).step_by(5).collect::<Vec<_>>()), None);
        // Packets never sent (or forgotten) are not counted.
        assert_eq!(l.on_nack(&(1000..1040).collect::<Vec<_>>()), None);
        // A stretch with nothing through gives no rate.
        assert_eq!(l.on_nack(&(180..195).collect::<Vec<_>>()), None);
    }
}
