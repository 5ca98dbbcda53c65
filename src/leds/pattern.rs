//! What the two LEDs show for each stream state, and when each pattern's level changes.
//!
//! Kept pure (no I/O, no clock: elapsed time is an argument) so the table a person reads in
//! README and the blink timing can be tested exactly, and so the renderer only has to ask
//! "what level now, and when is the next edge?".

use crate::supervisor::StreamState;
use std::fmt;
use std::time::Duration;

/// The two lights on the box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Led {
    /// Green: "the picture is reaching the server".
    Live,
    /// Red: "something needs attention or is in progress".
    Status,
}

impl Led {
    pub const ALL: [Led; 2] = [Led::Live, Led::Status];

    pub fn as_str(self) -> &'static str {
        match self {
            Led::Live => "live",
            Led::Status => "status",
        }
    }
}

impl fmt::Display for Led {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one LED behaves over time. Every cycle starts with the LED on, so a state change is
/// visible at once rather than after an off phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    Off,
    On,
    /// Equal on and off halves; `period` is one whole on+off cycle.
    Blink {
        period: Duration,
    },
    /// Two short flashes and a long pause: tells "offline" apart from a plain blink across a
    /// room without needing a third colour.
    DoubleBlink,
    /// One short flash every 2 s: a standing fault beside the state (see
    /// [`patterns_with_fault`]).
    Flash,
}

/// 1 Hz: slow enough to read as "busy, be patient" next to the 2 Hz of a connection attempt.
pub const SLOW_BLINK: Pattern = Pattern::Blink {
    period: Duration::from_millis(1000),
};
/// 2 Hz: "trying to reach the server".
pub const FAST_BLINK: Pattern = Pattern::Blink {
    period: Duration::from_millis(500),
};

/// Double-blink segments, alternating on/off starting with on: 200 ms flashes, 200 ms gap,
/// then a 1.4 s pause so the pair reads as one signal repeated every 2 s.
const DOUBLE_BLINK_SEGMENTS: [Duration; 4] = [
    Duration::from_millis(200),
    Duration::from_millis(200),
    Duration::from_millis(200),
    Duration::from_millis(1400),
];

/// Flash: 150 ms on, then dark for the rest of 2 s.
const FLASH_SEGMENTS: [Duration; 2] = [Duration::from_millis(150), Duration::from_millis(1850)];

impl Pattern {
    /// Durations of the alternating on/off segments of one cycle, starting with on; empty for
    /// a steady pattern. Always an even count, so the cycle ends off and wraps to on.
    fn segments(self) -> ([Duration; 4], usize) {
        match self {
            Pattern::Off | Pattern::On => ([Duration::ZERO; 4], 0),
            Pattern::Blink { period } => {
                let half = period / 2;
                // An odd-nanosecond period gives the remainder to the off half.
                ([half, period - half, Duration::ZERO, Duration::ZERO], 2)
            }
            Pattern::DoubleBlink => (DOUBLE_BLINK_SEGMENTS, 4),
            Pattern::Flash => (
                [
                    FLASH_SEGMENTS[0],
                    FLASH_SEGMENTS[1],
                    Duration::ZERO,
                    Duration::ZERO,
                ],
                2,
            ),
        }
    }

    /// Length of one cycle, or `None` for a steady pattern (or a degenerate zero period,
    /// which is shown as steady on rather than spinning the renderer).
    fn period(self) -> Option<Duration> {
        let (segments, n) = self.segments();
        let period: Duration = segments[..n].iter().sum();
        (n > 0 && segments[..n].iter().all(|d| !d.is_zero())).then_some(period)
    }

    /// Whether the LED is lit `elapsed` after the pattern started.
    pub fn level_at(self, elapsed: Duration) -> bool {
        match self {
            Pattern::Off => false,
            Pattern::On => true,
            _ => {
                let Some(period) = self.period() else {
                    return true;
                };
                let (segments, n) = self.segments();
                let mut phase = nanos(elapsed) % nanos(period);
                for (i, segment) in segments[..n].iter().enumerate() {
                    let len = nanos(*segment);
                    if phase < len {
                        return i % 2 == 0;
                    }
                    phase -= len;
                }
                unreachable!("phase is below the sum of the segments")
            }
        }
    }

    /// The elapsed time (since the pattern started) of the first level change strictly after
    /// `elapsed`, or `None` if the level never changes.
    pub fn next_change(self, elapsed: Duration) -> Option<Duration> {
        let period = self.period()?;
        let (segments, n) = self.segments();
        let period_ns = nanos(period);
        let now = nanos(elapsed);
        let cycle_start = now - now % period_ns;
        let mut boundary = cycle_start;
        for segment in &segments[..n] {
            boundary += nanos(*segment);
            if boundary > now {
                return Some(from_nanos(boundary));
            }
        }
        unreachable!("the last boundary is the end of the current cycle, which is after now")
    }
}

fn nanos(d: Duration) -> u128 {
    d.as_nanos()
}

fn from_nanos(n: u128) -> Duration {
    // u64 nanoseconds cover 584 years of uptime; saturating keeps a bug from becoming a panic.
    Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Off => f.write_str("off"),
            Pattern::On => f.write_str("on"),
            Pattern::Blink { period } => write!(f, "blink {} Hz", 1.0 / period.as_secs_f64()),
            Pattern::DoubleBlink => f.write_str("double-blink"),
            Pattern::Flash => f.write_str("flash every 2 s"),
        }
    }
}

/// What both LEDs show at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedPair {
    pub live: Pattern,
    pub status: Pattern,
}

impl LedPair {
    /// Both dark: what the box shows when the daemon is not running.
    pub const DARK: LedPair = LedPair {
        live: Pattern::Off,
        status: Pattern::Off,
    };

    pub fn get(self, led: Led) -> Pattern {
        match led {
            Led::Live => self.live,
            Led::Status => self.status,
        }
    }

    /// The earliest level change of either LED strictly after `elapsed`.
    pub fn next_change(self, elapsed: Duration) -> Option<Duration> {
        match (
            self.live.next_change(elapsed),
            self.status.next_change(elapsed),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The default table: green LIVE LED, red STATUS LED. Green means only one thing (on air, or
/// blinking: on air would be possible but there is no picture); red carries everything else.
pub const fn patterns(state: StreamState) -> LedPair {
    let (live, status) = match state {
        StreamState::Starting => (Pattern::Off, SLOW_BLINK),
        StreamState::Connecting | StreamState::Reconnecting => (Pattern::Off, FAST_BLINK),
        StreamState::Live => (Pattern::On, Pattern::Off),
        StreamState::Offline => (Pattern::Off, Pattern::DoubleBlink),
        StreamState::NoInput => (SLOW_BLINK, Pattern::Off),
        StreamState::Failed => (Pattern::Off, Pattern::On),
    };
    LedPair { live, status }
}

/// The table with a standing fault to show as well — today the data partition that could not be
/// used at boot (the box streams, but keeps nothing across a reboot): the red LED, where the
/// state leaves it dark (`live`, `no_input`), flashes once every 2 s. Where red already says
/// something, that is more urgent and stays as it is; the flash appears once it is dealt with.
pub const fn patterns_with_fault(state: StreamState, fault: bool) -> LedPair {
    let pair = patterns(state);
    match (fault, pair.status) {
        (true, Pattern::Off) => LedPair {
            live: pair.live,
            status: Pattern::Flash,
        },
        _ => pair,
    }
}

/// A person's reading of each state, for the README table next to the patterns.
pub fn meaning(state: StreamState) -> &'static str {
    match state {
        StreamState::Starting => "starting capture and encoder",
        StreamState::Connecting => "connecting to the server",
        StreamState::Live => "on air: the server is receiving the picture",
        StreamState::Reconnecting => "connection lost, retrying",
        StreamState::Offline => "no network; retries resume when a link comes back",
        StreamState::Failed => "gave up (rejected stream key or too many attempts)",
        StreamState::NoInput => {
            "no camera/HDMI signal: on air with the slate (`on_loss: slate`), or off air (`disconnect`)"
        }
    }
}

/// The whole table as data, one row per state in the order of `StreamState::ALL`.
pub fn table() -> [(StreamState, LedPair); 7] {
    StreamState::ALL.map(|s| (s, patterns(s)))
}

/// The table as Markdown, so README can show exactly what the code does.
pub fn markdown_table() -> String {
    let mut out =
        String::from("| State | LIVE (green) | STATUS (red) | Meaning |\n|---|---|---|---|\n");
    for (state, pair) in table() {
        out.push_str(&format!(
            "| `{state}` | {} | {} | {} |\n",
            pair.live,
            pair.status,
            meaning(state)
        ));
    }
    out.push_str("| daemon stopped | off | off | |\n");
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Double-blink's edges over its first 4 s after the start (on at 0): two 200 ms flashes
    /// 200 ms apart every 2 s. The LED driver's test expects the same timeline.
    pub(crate) const DOUBLE_BLINK_EDGES_MS: [(u128, bool); 8] = [
        (200, false),
        (400, true),
        (600, false),
        (2000, true),
        (2200, false),
        (2400, true),
        (2600, false),
        (4000, true),
    ];

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn every_state_has_its_documented_pattern() {
        let expect = |state, live, status| {
            assert_eq!(
                patterns(state),
                LedPair { live, status },
                "patterns for {state}"
            );
        };
        expect(StreamState::Starting, Pattern::Off, SLOW_BLINK);
        expect(StreamState::Connecting, Pattern::Off, FAST_BLINK);
        expect(StreamState::Reconnecting, Pattern::Off, FAST_BLINK);
        expect(StreamState::Live, Pattern::On, Pattern::Off);
        expect(StreamState::Offline, Pattern::Off, Pattern::DoubleBlink);
        expect(StreamState::NoInput, SLOW_BLINK, Pattern::Off);
        expect(StreamState::Failed, Pattern::Off, Pattern::On);
    }

    #[test]
    fn blink_rates_are_what_the_issue_asks_for() {
        // "Slow" must be 1 Hz or slower, "connecting" exactly 2 Hz.
        let Pattern::Blink { period } = patterns(StreamState::Starting).status else {
            panic!("starting should blink red");
        };
        assert!(period >= ms(1000), "slow blink period {period:?}");
        assert_eq!(
            patterns(StreamState::Connecting).status,
            Pattern::Blink { period: ms(500) }
        );
    }

    #[test]
    fn only_live_lights_green_steadily() {
        // Green steady is the promise "you are on air"; no other state may make it.
        for state in StreamState::ALL {
            let steady_green = patterns(state).live == Pattern::On;
            assert_eq!(steady_green, state == StreamState::Live, "{state}");
        }
    }

    #[test]
    fn states_that_mean_different_things_look_different() {
        // connecting and reconnecting are the same situation to a person; every other pair of
        // states must be told apart by looking at the LEDs.
        for a in StreamState::ALL {
            for b in StreamState::ALL {
                let same_meaning = a == b
                    || matches!(
                        (a, b),
                        (StreamState::Connecting, StreamState::Reconnecting)
                            | (StreamState::Reconnecting, StreamState::Connecting)
                    );
                if !same_meaning {
                    assert_ne!(patterns(a), patterns(b), "{a} and {b} look the same");
                }
            }
        }
    }

    #[test]
    fn a_standing_fault_is_seen_wherever_red_is_dark() {
        for state in StreamState::ALL {
            let plain = patterns(state);
            let faulty = patterns_with_fault(state, true);
            assert_eq!(patterns_with_fault(state, false), plain, "{state}");
            assert_eq!(faulty.live, plain.live, "{state}: green keeps its meaning");
            if plain.status == Pattern::Off {
                assert_eq!(faulty.status, Pattern::Flash, "{state}");
            } else {
                assert_eq!(faulty, plain, "{state}: red already says more");
            }
            // Never taken for another state, with or without the fault.
            for other in StreamState::ALL {
                if other != state && plain.status == Pattern::Off {
                    assert_ne!(
                        faulty,
                        patterns(other),
                        "{state} with a fault looks like {other}"
                    );
                }
            }
        }
        // 150 ms on, every 2 s.
        let p = Pattern::Flash;
        assert!(p.level_at(ms(0)) && p.level_at(ms(149)) && !p.level_at(ms(150)));
        assert_eq!(p.next_change(ms(0)), Some(ms(150)));
        assert_eq!(p.next_change(ms(150)), Some(ms(2000)));
    }

    #[test]
    fn steady_patterns_never_change() {
        for t in [ms(0), ms(1), ms(999), ms(123_456)] {
            assert!(Pattern::On.level_at(t));
            assert!(!Pattern::Off.level_at(t));
            assert_eq!(Pattern::On.next_change(t), None);
            assert_eq!(Pattern::Off.next_change(t), None);
        }
    }

    #[test]
    fn two_hz_blink_levels_and_edges() {
        let p = FAST_BLINK;
        let levels: Vec<bool> = [0, 100, 249, 250, 400, 499, 500, 749, 750]
            .iter()
            .map(|&t| p.level_at(ms(t)))
            .collect();
        assert_eq!(
            levels,
            [true, true, true, false, false, false, true, true, false]
        );
        assert_eq!(p.next_change(ms(0)), Some(ms(250)));
        assert_eq!(p.next_change(ms(249)), Some(ms(250)));
        // Strictly after: standing on an edge yields the following one.
        assert_eq!(p.next_change(ms(250)), Some(ms(500)));
        assert_eq!(p.next_change(ms(10_100)), Some(ms(10_250)));
    }

    #[test]
    fn double_blink_levels_and_edges() {
        let p = Pattern::DoubleBlink;
        let mut t = Duration::ZERO;
        let mut edges = vec![];
        while let Some(next) = p.next_change(t) {
            if next > ms(4000) {
                break;
            }
            edges.push((next.as_millis(), p.level_at(next)));
            t = next;
        }
        assert_eq!(edges, DOUBLE_BLINK_EDGES_MS);
        assert!(p.level_at(ms(0)));
        assert!(!p.level_at(ms(1000)));
    }

    #[test]
    fn pair_reports_the_earliest_edge_of_either_led() {
        let pair = LedPair {
            live: SLOW_BLINK,
            status: Pattern::DoubleBlink,
        };
        assert_eq!(pair.next_change(ms(0)), Some(ms(200)));
        assert_eq!(pair.next_change(ms(450)), Some(ms(500)));
        assert_eq!(LedPair::DARK.next_change(ms(0)), None);
    }

    #[test]
    fn zero_period_blink_is_steady_not_a_busy_loop() {
        let p = Pattern::Blink {
            period: Duration::ZERO,
        };
        assert_eq!(p.next_change(ms(5)), None);
        assert!(p.level_at(ms(5)));
    }

    #[test]
    fn readme_table_text() {
        let expected = "\
| State | LIVE (green) | STATUS (red) | Meaning |
|---|---|---|---|
| `starting` | off | blink 1 Hz | starting capture and encoder |
| `connecting` | off | blink 2 Hz | connecting to the server |
| `live` | on | off | on air: the server is receiving the picture |
| `reconnecting` | off | blink 2 Hz | connection lost, retrying |
| `offline` | off | double-blink | no network; retries resume when a link comes back |
| `failed` | off | on | gave up (rejected stream key or too many attempts) |
| `no_input` | blink 1 Hz | off | no camera/HDMI signal: on air with the slate (`on_loss: slate`), or off air (`disconnect`) |
| daemon stopped | off | off | |
";
        assert_eq!(markdown_table(), expected);
    }
}
