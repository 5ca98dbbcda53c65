//! The `record` section: whether the box records what it streams, where (a USB disk found by
//! its label, with the data partition as the fallback, or the data partition alone), how long
//! each file runs and how much space it always leaves free.

use super::ConfigError;
use super::ranges::check_range;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where recordings go (`record.to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RecordTo {
    /// A USB disk labelled `record.usb_label` while one is plugged in, the data partition's
    /// `record.dir` otherwise (and when the disk fails or is pulled).
    #[default]
    Usb,
    /// The data partition's `record.dir` only.
    Data,
}

impl RecordTo {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordTo::Usb => "usb",
            RecordTo::Data => "data",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RecordConfig {
    pub enabled: bool,
    pub to: RecordTo,
    /// The data partition's recordings directory: with `to: data` the only place, with
    /// `to: usb` the fallback.
    pub dir: PathBuf,
    /// The label of the USB disk to record to (vfat, exFAT or ext4).
    pub usb_label: String,
    /// A new file is started at the first key frame after this long.
    pub segment: Duration,
    /// Space the recordings never take: the oldest are deleted before the free space on the
    /// disk they are on drops below this, and recording stops if that is not enough.
    pub min_free_mb: u64,
}

pub const DEFAULT_RECORD_DIR: &str = "/data/recordings";
pub const DEFAULT_USB_LABEL: &str = "ONAIR-REC";
pub const DEFAULT_SEGMENT_S: u32 = 300;
pub const DEFAULT_MIN_FREE_MB: u64 = 64;
/// Longest label any of the three file systems takes (ext4: 16 bytes; exFAT 15 characters,
/// vfat 11).
pub const MAX_USB_LABEL: usize = 16;

impl Default for RecordConfig {
    fn default() -> Self {
        RecordConfig {
            enabled: false,
            to: RecordTo::Usb,
            dir: PathBuf::from(DEFAULT_RECORD_DIR),
            usb_label: DEFAULT_USB_LABEL.into(),
            segment: Duration::from_secs(u64::from(DEFAULT_SEGMENT_S)),
            min_free_mb: DEFAULT_MIN_FREE_MB,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRecord {
    #[serde(default)]
    enabled: bool,
    #[serde(default)]
    to: RecordTo,
    dir: Option<PathBuf>,
    usb_label: Option<String>,
    segment_s: Option<u32>,
    min_free_mb: Option<u64>,
}

impl RawRecord {
    pub(super) fn validate(self) -> Result<RecordConfig, ConfigError> {
        let d = RecordConfig::default();
        let dir = self.dir.unwrap_or(d.dir);
        check_dir(&dir)?;
        let usb_label = self.usb_label.unwrap_or(d.usb_label);
        check_label(&usb_label)?;
        let segment_s = check_range(
            "record.segment_s",
            self.segment_s.unwrap_or(DEFAULT_SEGMENT_S),
            2,
            3600,
        )?;
        let min_free_mb = self.min_free_mb.unwrap_or(DEFAULT_MIN_FREE_MB);
        if !(1..=1 << 20).contains(&min_free_mb) {
            return Err(ConfigError::invalid(
                "record.min_free_mb",
                format!("{min_free_mb} is out of range 1..=1048576"),
            ));
        }
        Ok(RecordConfig {
            enabled: self.enabled,
            to: self.to,
            dir,
            usb_label,
            segment: Duration::from_secs(u64::from(segment_s)),
            min_free_mb,
        })
    }
}

/// A directory of its own: recordings are deleted from it when space runs short, so it must
/// not be the data partition's top (where the config and the SSH keys live) or `/`.
fn check_dir(dir: &Path) -> Result<(), ConfigError> {
    let key = "record.dir";
    if !dir.is_absolute() {
        return Err(ConfigError::invalid(key, "must be an absolute path"));
    }
    let parts = dir.components().count();
    if parts < 2 || dir == Path::new("/data") || dir == Path::new("/data/") {
        return Err(ConfigError::invalid(
            key,
            "must be a directory of its own, such as /data/recordings",
        ));
    }
    if dir
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(ConfigError::invalid(key, "must not contain `..`"));
    }
    Ok(())
}

fn check_label(label: &str) -> Result<(), ConfigError> {
    let key = "record.usb_label";
    if label.is_empty() || label.len() > MAX_USB_LABEL {
        return Err(ConfigError::invalid(
            key,
            format!("must be 1 to {MAX_USB_LABEL} bytes (vfat takes 11)"),
        ));
    }
    // udev names the link after the label; '/' cannot be in it and the rest is kept simple.
    if !label
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ConfigError::invalid(
            key,
            "may hold letters, digits, '-', '_' and '.' only",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::test_support::{MINIMAL, assert_refusals_name, with};

    #[test]
    fn recording_is_off_by_default_and_keys_are_read() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.record, RecordConfig::default());
        assert!(!c.record.enabled);
        assert_eq!(c.record.to, RecordTo::Usb);
        assert_eq!(c.record.dir, PathBuf::from("/data/recordings"));
        assert_eq!(c.record.segment, Duration::from_secs(300));
        let c = Config::parse(&with(
            r#"{"record": {"enabled": true, "to": "data", "dir": "/mnt/rec",
                "usb_label": "SHOW_2", "segment_s": 60, "min_free_mb": 512}}"#,
        ))
        .unwrap();
        assert!(c.record.enabled);
        assert_eq!(c.record.to, RecordTo::Data);
        assert_eq!(c.record.dir, PathBuf::from("/mnt/rec"));
        assert_eq!(c.record.usb_label, "SHOW_2");
        assert_eq!(c.record.segment, Duration::from_secs(60));
        assert_eq!(c.record.min_free_mb, 512);
    }

    #[test]
    fn refusals_name_the_key() {
        assert_refusals_name(&[
            (r#"{"record": {"to": "cloud"}}"#, "record.to"),
            (r#"{"record": {"enabled": "yes"}}"#, "record.enabled"),
            (r#"{"record": {"dir": "recordings"}}"#, "record.dir"),
            (r#"{"record": {"dir": "/data"}}"#, "record.dir"),
            (r#"{"record": {"dir": "/"}}"#, "record.dir"),
            (r#"{"record": {"dir": "/data/../etc"}}"#, "record.dir"),
            (r#"{"record": {"usb_label": ""}}"#, "record.usb_label"),
            (r#"{"record": {"usb_label": "A/B"}}"#, "record.usb_label"),
            (
                r#"{"record": {"usb_label": "A-VERY-LONG-LABEL-X"}}"#,
                "record.usb_label",
            ),
            (r#"{"record": {"segment_s": 1}}"#, "record.segment_s"),
            (r#"{"record": {"segment_s": 7200}}"#, "record.segment_s"),
            (r#"{"record": {"min_free_mb": 0}}"#, "record.min_free_mb"),
            (r#"{"record": {"min_free_mb": -5}}"#, "record.min_free_mb"),
            (r#"{"record": {"keep": 3}}"#, "record"),
        ]);
    }
}
