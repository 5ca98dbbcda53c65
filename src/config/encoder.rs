//! The `encoder` section: which H.264 encoder, the bitrate a connection starts at and the
//! floor adaptation keeps to, and the key-frame interval (checked against `source.fps`).

use super::ConfigError;
use super::ranges::check_range;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncoderKind {
    Auto,
    V4l2,
    X264,
    Openh264,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    pub kind: EncoderKind,
    /// The bitrate a connection starts at, and the most adaptation ever asks for.
    pub bitrate_kbps: u32,
    /// The least adaptation ever asks for.
    pub min_bitrate_kbps: u32,
    /// Whether the bitrate follows what the uplink carries (congestion control on WHIP, the
    /// send backlog on RTMP), or stays at `bitrate_kbps`.
    pub adapt: bool,
    pub keyframe_interval_ms: u32,
}

/// The floor adaptation keeps to unless the config names one (or `bitrate_kbps`, if lower).
pub const DEFAULT_MIN_BITRATE_KBPS: u32 = 300;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEncoder {
    kind: Option<EncoderKind>,
    bitrate_kbps: Option<u32>,
    min_bitrate_kbps: Option<u32>,
    adapt: Option<bool>,
    keyframe_interval_ms: Option<u32>,
}

impl RawEncoder {
    pub(super) fn validate(self, fps: u32) -> Result<EncoderConfig, ConfigError> {
        let bitrate_kbps = check_range(
            "encoder.bitrate_kbps",
            self.bitrate_kbps.unwrap_or(2500),
            50,
            50_000,
        )?;
        let keyframe_interval_ms = check_range(
            "encoder.keyframe_interval_ms",
            self.keyframe_interval_ms.unwrap_or(2000),
            100,
            60_000,
        )?;
        // The Pi encoder hangs with an I-frame period of 1 (PLATFORM_NOTES), and a GOP of one
        // frame is never what a person meant.
        if u64::from(keyframe_interval_ms) * u64::from(fps) < 2000 {
            return Err(ConfigError::invalid(
                "encoder.keyframe_interval_ms",
                format!("{keyframe_interval_ms} ms is less than two frames at {fps} fps"),
            ));
        }
        let min_bitrate_kbps = match self.min_bitrate_kbps {
            None => DEFAULT_MIN_BITRATE_KBPS.min(bitrate_kbps),
            Some(min) if min > bitrate_kbps => {
                return Err(ConfigError::invalid(
                    "encoder.min_bitrate_kbps",
                    format!("{min} is above encoder.bitrate_kbps ({bitrate_kbps})"),
                ));
            }
            Some(min) => check_range("encoder.min_bitrate_kbps", min, 50, 50_000)?,
        };
        Ok(EncoderConfig {
            kind: self.kind.unwrap_or(EncoderKind::Auto),
            bitrate_kbps,
            min_bitrate_kbps,
            adapt: self.adapt.unwrap_or(true),
            keyframe_interval_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{assert_refusals_name, with};
    use crate::config::{Config, TestPattern};

    #[test]
    fn adaptation_keys_and_test_patterns() {
        let c = Config::parse(&with(
            r#"{"encoder": {"bitrate_kbps": 2500, "min_bitrate_kbps": 200, "adapt": false},
                "source": {"pattern": "noise"}}"#,
        ))
        .unwrap();
        assert_eq!(c.encoder.min_bitrate_kbps, 200);
        assert!(!c.encoder.adapt);
        assert_eq!(c.source.pattern, TestPattern::Noise);
        // The default floor never lies above the ceiling.
        let c = Config::parse(&with(r#"{"encoder": {"bitrate_kbps": 200}}"#)).unwrap();
        assert_eq!(c.encoder.min_bitrate_kbps, 200);
        for (name, pattern) in [("smpte", TestPattern::Smpte), ("ball", TestPattern::Ball)] {
            let c =
                Config::parse(&with(&format!(r#"{{"source": {{"pattern": "{name}"}}}}"#))).unwrap();
            assert_eq!(c.source.pattern, pattern);
            assert_eq!(pattern.as_str(), name);
        }
    }

    #[test]
    fn refusals_name_the_key() {
        assert_refusals_name(&[
            (r#"{"encoder": {"kind": "nvenc"}}"#, "encoder.kind"),
            (
                r#"{"encoder": {"bitrate_kbps": 0}}"#,
                "encoder.bitrate_kbps",
            ),
            (
                r#"{"encoder": {"keyframe_interval_ms": 10}}"#,
                "encoder.keyframe_interval_ms",
            ),
            (
                r#"{"encoder": {"min_bitrate_kbps": 3000}}"#,
                "encoder.min_bitrate_kbps",
            ),
            (
                r#"{"encoder": {"min_bitrate_kbps": 10}}"#,
                "encoder.min_bitrate_kbps",
            ),
            (r#"{"encoder": {"adapt": "yes"}}"#, "encoder.adapt"),
        ]);
    }
}
