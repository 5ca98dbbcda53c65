//! The `audio` section: where the sound comes from (none, a test tone, an ALSA device), its
//! channels, bitrate and offset against the picture.

use super::ConfigError;
use super::ranges::check_range;
use serde::Deserialize;

/// Where the sound comes from (`audio.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AudioKind {
    /// No audio track at all (the behaviour before audio).
    #[default]
    None,
    /// A generated tone (or the sync beeps with `source.pattern: "sync"`).
    Test,
    /// An ALSA capture device: HDMI audio (USB dongle or the TC358743's I2S card), a USB
    /// microphone or interface.
    Alsa,
}

impl AudioKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AudioKind::None => "none",
            AudioKind::Test => "test",
            AudioKind::Alsa => "alsa",
        }
    }
}

/// The `audio` block. Audio is always sent as 48 kHz; `channels` is what is captured and sent.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioConfig {
    pub kind: AudioKind,
    /// ALSA device name (`hw:CARD=MS2109,DEV=0`, `plughw:1,0`, `default`); `alsa` only.
    pub device: String,
    /// 1 or 2. Default 2 (Broadcast Box takes Opus stereo only; mono is sent as stereo there).
    pub channels: u32,
    /// Encoder bitrate. Default 128.
    pub bitrate_kbps: u32,
    /// Added to the audio timestamps: positive delays the sound (a source whose sound is
    /// early), negative advances it. Default 0.
    pub offset_ms: i32,
}

impl Default for AudioConfig {
    fn default() -> Self {
        AudioConfig {
            kind: AudioKind::None,
            device: DEFAULT_AUDIO_DEVICE.to_string(),
            channels: 2,
            bitrate_kbps: 128,
            offset_ms: 0,
        }
    }
}

pub const DEFAULT_AUDIO_DEVICE: &str = "default";
/// Longest accepted ALSA device name.
const MAX_AUDIO_DEVICE: usize = 128;
/// Largest `audio.offset_ms` either way: more is a wrong device, not a late one.
pub const MAX_AUDIO_OFFSET_MS: i32 = 1000;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudio {
    #[serde(default)]
    kind: AudioKind,
    device: Option<String>,
    channels: Option<u32>,
    bitrate_kbps: Option<u32>,
    offset_ms: Option<i32>,
}

impl RawAudio {
    pub(super) fn validate(self) -> Result<AudioConfig, ConfigError> {
        let d = AudioConfig::default();
        let device = match self.device {
            None => d.device,
            Some(dev) => {
                if dev.is_empty() {
                    return Err(ConfigError::invalid("audio.device", "is empty"));
                }
                if dev.chars().count() > MAX_AUDIO_DEVICE {
                    return Err(ConfigError::invalid(
                        "audio.device",
                        format!("is longer than {MAX_AUDIO_DEVICE} characters"),
                    ));
                }
                // ALSA names: `hw:CARD=MS2109,DEV=0`, `plughw:1,0`, `default`, `sysdefault:CARD=x`.
                if !dev
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-:=,.".contains(c))
                {
                    return Err(ConfigError::invalid(
                        "audio.device",
                        "is not an ALSA device name (letters, digits and _-:=,. only)",
                    ));
                }
                dev
            }
        };
        let channels = check_range("audio.channels", self.channels.unwrap_or(d.channels), 1, 2)?;
        let bitrate_kbps = check_range(
            "audio.bitrate_kbps",
            self.bitrate_kbps.unwrap_or(d.bitrate_kbps),
            16,
            320,
        )?;
        let offset_ms = self.offset_ms.unwrap_or(0);
        if !(-MAX_AUDIO_OFFSET_MS..=MAX_AUDIO_OFFSET_MS).contains(&offset_ms) {
            return Err(ConfigError::invalid(
                "audio.offset_ms",
                format!(
                    "{offset_ms} is out of range -{MAX_AUDIO_OFFSET_MS}..={MAX_AUDIO_OFFSET_MS}"
                ),
            ));
        }
        Ok(AudioConfig {
            kind: self.kind,
            device,
            channels,
            bitrate_kbps,
            offset_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{refused_key, with};
    use crate::config::{Config, TestPattern};

    #[test]
    fn audio_keys_are_read_and_bad_values_name_the_key() {
        let c = Config::parse(&with(
            r#"{"source": {"pattern": "sync"}, "audio": {"kind": "alsa", "device": "hw:CARD=MS2109,DEV=0",
                "channels": 1, "bitrate_kbps": 96, "offset_ms": -40}}"#,
        ))
        .unwrap();
        assert_eq!(c.source.pattern, TestPattern::Sync);
        assert_eq!(
            c.audio,
            AudioConfig {
                kind: AudioKind::Alsa,
                device: "hw:CARD=MS2109,DEV=0".into(),
                channels: 1,
                bitrate_kbps: 96,
                offset_ms: -40,
            }
        );
        for (patch, key) in [
            (r#"{"audio": {"kind": "pulse"}}"#, "audio.kind"),
            (r#"{"audio": {"device": ""}}"#, "audio.device"),
            (r#"{"audio": {"device": "hw:0 ; rm"}}"#, "audio.device"),
            (r#"{"audio": {"channels": 3}}"#, "audio.channels"),
            (r#"{"audio": {"channels": 0}}"#, "audio.channels"),
            (r#"{"audio": {"bitrate_kbps": 8}}"#, "audio.bitrate_kbps"),
            (r#"{"audio": {"offset_ms": 1001}}"#, "audio.offset_ms"),
            (r#"{"audio": {"offset_ms": "5"}}"#, "audio.offset_ms"),
            (r#"{"audio": {"rate": 44100}}"#, "audio.rate"),
            (r#"{"source": {"pattern": "zebra"}}"#, "source.pattern"),
        ] {
            assert_eq!(refused_key(&with(patch)), key, "{patch}");
        }
    }
}
