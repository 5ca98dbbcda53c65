//! The text file beside each recording: when it started, every time the stream went off or
//! back on the air while it ran, and when it ended. It is appended to as things happen (a power
//! cut loses at most the last line), readable on a laptop, and what `onair recordings` reads
//! the windows the viewers missed from, so the gap can be found and uploaded afterwards.
//!
//! ```text
//! # onair recording onair-20261206T140322Z.mkv (Unix seconds, then UTC)
//! start 1796565802.123 2026-12-06T14:03:22.123Z live
//! not_live 1796565830.500 2026-12-06T14:03:50.5Z
//! live 1796565860.700 2026-12-06T14:04:20.7Z
//! end 1796566102.000 2026-12-06T14:08:22Z
//! ```
//!
//! Parsing and the windows are pure; reading and writing the file is the lane's.

use super::names;
use serde::{Deserialize, Serialize};

/// The most of a sidecar that is read: a day of flapping every few seconds fits.
pub const MAX_SIDECAR_BYTES: u64 = 256 * 1024;

/// What a sidecar says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sidecar {
    pub start: Option<f64>,
    /// Whether the stream was live when the recording started.
    pub start_live: bool,
    /// Each change: the time and whether the stream is live from then on.
    pub changes: Vec<(f64, bool)>,
    pub end: Option<f64>,
}

/// A stretch of a recording during which the stream was not live (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub from: f64,
    pub to: f64,
}

pub fn header(media: &str) -> String {
    format!("# onair recording {media} (Unix seconds, then UTC)\n")
}

pub fn start_line(t: f64, live: bool) -> String {
    format!(
        "start {} {}\n",
        stamp(t),
        if live { "live" } else { "not_live" }
    )
}

pub fn change_line(t: f64, live: bool) -> String {
    format!("{} {}\n", if live { "live" } else { "not_live" }, stamp(t))
}

pub fn end_line(t: f64) -> String {
    format!("end {}\n", stamp(t))
}

fn stamp(t: f64) -> String {
    let utc = names::from_unix(t)
        .map(|ts| ts.to_string())
        .unwrap_or_default();
    format!("{t:.3} {utc}")
}

/// Reads what it can: unknown or broken lines (a line cut by a power cut) are skipped.
pub fn parse(text: &str) -> Sidecar {
    let mut s = Sidecar::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(kind), Some(t)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(t) = t.parse::<f64>() else { continue };
        if !t.is_finite() {
            continue;
        }
        match kind {
            "start" => {
                s.start = Some(t);
                // The state is the last word (after the UTC time).
                s.start_live = words.last() == Some("live");
            }
            "live" => s.changes.push((t, true)),
            "not_live" => s.changes.push((t, false)),
            "end" => s.end = Some(t),
            _ => {}
        }
    }
    s
}

/// The stretches between `start` and `end` when the stream was not live, in order. A change
/// outside the recording's span is clamped to it; repeated states are one stretch.
pub fn not_live_windows(
    start: f64,
    start_live: bool,
    changes: &[(f64, bool)],
    end: f64,
) -> Vec<Window> {
    let mut windows = Vec::new();
    let mut off_since = (!start_live).then_some(start);
    for &(t, live) in changes {
        let t = t.clamp(start, end.max(start));
        match (live, off_since) {
            (true, Some(from)) => {
                if t > from {
                    windows.push(Window { from, to: t });
                }
                off_since = None;
            }
            (false, None) => off_since = Some(t),
            _ => {}
        }
    }
    if let Some(from) = off_since
        && end > from
    {
        windows.push(Window { from, to: end });
    }
    windows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_a_torn_last_line_is_skipped() {
        let text = [
            header("onair-20261206T140322Z.mkv"),
            start_line(1000.25, true),
            change_line(1030.5, false),
            change_line(1060.75, true),
            end_line(1300.0),
        ]
        .concat();
        assert!(text.contains("2026") || text.contains("1970"), "{text}");
        let s = parse(&text);
        assert_eq!(
            s,
            Sidecar {
                start: Some(1000.25),
                start_live: true,
                changes: vec![(1030.5, false), (1060.75, true)],
                end: Some(1300.0),
            }
        );
        let torn = parse("start 1000.0 x not_live\nnot_live 1010.0 y\nliv");
        assert_eq!(torn.start, Some(1000.0));
        assert!(!torn.start_live);
        assert_eq!(torn.changes, vec![(1010.0, false)]);
        assert_eq!(torn.end, None);
        assert_eq!(parse("start NaN\nend inf\n"), Sidecar::default());
    }

    #[test]
    fn windows_are_the_stretches_off_the_air() {
        let w = |from, to| Window { from, to };
        assert_eq!(
            not_live_windows(0.0, true, &[(30.0, false), (60.0, true)], 100.0),
            vec![w(30.0, 60.0)]
        );
        assert_eq!(
            not_live_windows(0.0, false, &[(5.0, true), (90.0, false)], 100.0),
            vec![w(0.0, 5.0), w(90.0, 100.0)],
            "off at the start and still off at the end"
        );
        assert_eq!(
            not_live_windows(
                10.0,
                true,
                &[(5.0, false), (20.0, false), (30.0, true)],
                40.0
            ),
            vec![w(10.0, 30.0)],
            "a change before the start is clamped, a repeated state ignored"
        );
        assert_eq!(not_live_windows(0.0, true, &[], 100.0), vec![]);
    }
}
