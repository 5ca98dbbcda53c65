//! What recordings are called: `onair-20261206T140322Z.mkv` (the UTC time its first picture was
//! taken), with its sidecar `onair-20261206T140322Z.txt` beside it. Names sort by wall-clock
//! time, so a directory listing is the show in order and "the oldest" is the first name.
//!
//! A box without a battery-backed clock can start with its clock behind the last recording's
//! (before NTP answers). A new name is then placed just after the newest one instead, so names
//! keep sorting in the order things were recorded and the space rule never deletes the newest
//! file as "the oldest".

use jiff::Timestamp;

pub const PREFIX: &str = "onair-";
pub const MEDIA_EXT: &str = ".mkv";
pub const SIDECAR_EXT: &str = ".txt";

/// `onair-YYYYMMDDTHHMMSSZ`, the part both files share.
pub fn stem(start: Timestamp) -> String {
    format!("{PREFIX}{}", start.strftime("%Y%m%dT%H%M%SZ"))
}

pub fn media_name(start: Timestamp) -> String {
    format!("{}{MEDIA_EXT}", stem(start))
}

pub fn sidecar_name(media: &str) -> String {
    format!(
        "{}{SIDECAR_EXT}",
        media.strip_suffix(MEDIA_EXT).unwrap_or(media)
    )
}

/// The start time a recording's name says, if it is one of ours.
pub fn parse(name: &str) -> Option<Timestamp> {
    let time = name.strip_prefix(PREFIX)?.strip_suffix(MEDIA_EXT)?;
    let time = jiff::fmt::strtime::parse("%Y%m%dT%H%M%SZ", time).ok()?;
    time.to_datetime()
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// The time to name a new recording by: `now` to the second, or one second after the newest
/// existing name when the clock is not past it.
pub fn next_start(now: Timestamp, newest: Option<Timestamp>) -> Timestamp {
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    match newest {
        Some(newest) if newest >= now => {
            Timestamp::from_second(newest.as_second().saturating_add(1)).unwrap_or(newest)
        }
        _ => now,
    }
}

/// Unix seconds (with fractions) for JSON and the sidecar.
pub fn unix(t: Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

pub fn from_unix(s: f64) -> Option<Timestamp> {
    Timestamp::from_millisecond((s * 1000.0).round() as i64).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn names_say_the_utc_start_and_read_back() {
        let start = t("2026-12-06T14:03:22.750Z");
        assert_eq!(media_name(start), "onair-20261206T140322Z.mkv");
        assert_eq!(
            sidecar_name("onair-20261206T140322Z.mkv"),
            "onair-20261206T140322Z.txt"
        );
        assert_eq!(
            parse("onair-20261206T140322Z.mkv"),
            Some(t("2026-12-06T14:03:22Z"))
        );
        assert_eq!(parse("onair-20261206T140322Z.txt"), None);
        assert_eq!(parse("holiday.mkv"), None);
        assert_eq!(parse("onair-2026.mkv"), None);
    }

    #[test]
    fn names_sort_by_time() {
        let mut names: Vec<String> = [
            "2026-12-06T14:03:22Z",
            "2026-12-06T09:59:59Z",
            "2027-01-01T00:00:00Z",
        ]
        .iter()
        .map(|s| media_name(t(s)))
        .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "onair-20261206T095959Z.mkv",
                "onair-20261206T140322Z.mkv",
                "onair-20270101T000000Z.mkv"
            ]
        );
    }

    #[test]
    fn a_clock_behind_the_newest_recording_names_the_next_one_after_it() {
        let newest = t("2026-12-06T14:03:22Z");
        assert_eq!(
            next_start(t("2026-01-01T00:00:00Z"), Some(newest)),
            t("2026-12-06T14:03:23Z"),
            "a box booted with its image's date"
        );
        assert_eq!(
            next_start(newest, Some(newest)),
            t("2026-12-06T14:03:23Z"),
            "two files in one second"
        );
        assert_eq!(
            next_start(t("2026-12-06T15:00:00.400Z"), Some(newest)),
            t("2026-12-06T15:00:00Z")
        );
        assert_eq!(next_start(newest, None), newest);
        let u = unix(t("2026-12-06T14:03:22.250Z"));
        assert_eq!(from_unix(u), Some(t("2026-12-06T14:03:22.250Z")));
    }
}
