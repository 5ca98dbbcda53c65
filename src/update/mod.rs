//! Field updates: a thin front over RAUC plus the decision to keep a new system.
//!
//! The box has two system slots (A and B). `onair update FILE` ([`install`]) has RAUC check the
//! bundle's signature and write the inactive slot while the stream goes on, then reboots into
//! it once (the firmware's tryboot). At every boot `onair update-check` ([`check`]) settles
//! the update [`record`] on the data partition and, on a trial boot, watches the daemon until
//! the pure [`verdict`] keeps the new system (RAUC marks it good: it becomes the default) or
//! leaves it (a reboot returns to the old one, as any reboot before the mark would). The
//! outcome reaches `onair status` through the document in `crate::status::update`.
//!
//! Nothing of this is in the stream path: the daemon only reads that document.

pub mod check;
pub mod install;
pub mod rauc;
pub mod record;
pub mod verdict;

use std::io::Read;

/// Where the image says what it is (`version=` among `board=` and the like).
pub const BUILD_INFO: &str = "/etc/onair/build-info";

/// Seconds since the Unix epoch, for records a person reads later.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The running image's own version, for a slot RAUC never wrote (the one the card came with).
pub fn image_version() -> Option<String> {
    let mut text = String::new();
    std::fs::File::open(BUILD_INFO)
        .ok()?
        .take(4096)
        .read_to_string(&mut text)
        .ok()?;
    version_in_build_info(&text)
}

fn version_in_build_info(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("version="))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_version_is_its_build_info_line() {
        assert_eq!(
            version_in_build_info("board=rpi4\nversion=2026.12.07-g1a2b3c\nonair=g1a2b3c\n"),
            Some("2026.12.07-g1a2b3c".into())
        );
        assert_eq!(version_in_build_info("board=rpi4\nversion=\n"), None);
        assert_eq!(version_in_build_info(""), None);
    }
}
