//! The box's JSON configuration, parsed into typed, validated values.
//!
//! The config is written by a person on a laptop (it is imported from the SD card's boot
//! partition), so every refusal names the key at fault in one line. Parsing and validation
//! happen before anything starts: a config either becomes a [`Config`] or a [`ConfigError`].
//! Keys are a public contract documented in README; unknown keys are refused so that a typo
//! is not silently ignored.
//!
//! One section, one file: `source.rs` (with `edid.rs`, the EDID it names), `audio.rs`, `encoder.rs`, `output.rs`, `reconnect.rs`,
//! `network.rs` (with `uplinks.rs` for its Wi-Fi and modem keys), `leds.rs`, `status.rs`, `record.rs` each hold the section's public type, its raw serde
//! mirror (every field optional where the contract has a default), the validation from one to
//! the other and its tests. A new section is a new such file plus a field in [`Config`] and
//! `RawConfig`, a line in `RawConfig::validate`, its re-exports below and its keys in README.
//! The rest is shared: `load.rs` (file and text to `Config`, serde's refusals), `scrub.rs`
//! (no secret in a refusal), `ranges.rs` (range checks), `placeholders.rs` (the example's
//! values, refused by `check-config`).

mod audio;
mod edid;
mod encoder;
mod leds;
mod load;
mod network;
mod output;
mod placeholders;
mod ranges;
mod reconnect;
mod record;
mod scrub;
mod source;
mod status;
#[cfg(test)]
mod test_support;
mod uplinks;

pub use audio::{AudioConfig, AudioKind, DEFAULT_AUDIO_DEVICE, MAX_AUDIO_OFFSET_MS};
pub use edid::{EDID_BLOCK, Edid, EdidError, MAX_EDID_BYTES, SHIPPED_OFFERS};
pub use encoder::{DEFAULT_MIN_BITRATE_KBPS, EncoderConfig, EncoderKind};
pub use leds::{LedBackendKind, LedConfig};
pub use load::{FileRefusal, MAX_CONFIG_BYTES, read_regular_file};
pub use network::{DEFAULT_ROUTE_TABLE, DEFAULT_SETTLE, NetworkConfig, PathsMode};
pub use output::OutputConfig;
pub use placeholders::PLACEHOLDER_TOKEN;
pub use reconnect::ReconnectConfig;
pub use record::{DEFAULT_RECORD_DIR, DEFAULT_USB_LABEL, RecordConfig, RecordTo};
pub use source::{
    EdidChoice, MAX_SLATE_TEXT, OnLoss, SourceConfig, SourceFormat, SourceKind, TestPattern,
};
pub use status::{DEFAULT_STATUS_SOCKET, StatusConfig};
pub use uplinks::{MAX_WIFI_NETWORKS, MAX_WIFI_PRIORITY, ModemConfig, WifiNetwork, WifiSecurity};

use serde::Deserialize;
use std::path::PathBuf;

/// Why a config was refused. `key` is the dotted path of the offending key (empty when the
/// whole file is at fault).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config file {path}: is {what}, not a regular file")]
    NotAFile { path: PathBuf, what: &'static str },
    #[error(
        "config file {path}: {size} bytes is more than a config can be ({MAX_CONFIG_BYTES} bytes)"
    )]
    TooLarge { path: PathBuf, size: u64 },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    fn invalid(key: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// The dotted key at fault, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub source: SourceConfig,
    pub encoder: EncoderConfig,
    pub output: OutputConfig,
    pub reconnect: ReconnectConfig,
    pub network: NetworkConfig,
    pub leds: LedConfig,
    pub status: StatusConfig,
    pub audio: AudioConfig,
    /// Recording what is streamed (off by default).
    pub record: RecordConfig,
    /// Where the daemon keeps small state that must survive a restart (the WHIP resource URL
    /// to DELETE). `/run` survives a daemon restart but not a reboot, which is what we want.
    pub state_dir: PathBuf,
}

pub const DEFAULT_STATE_DIR: &str = "/run/onair";

impl Config {
    /// Whether `new` differs from `self` only in settings that apply without touching the
    /// stream, so SIGHUP need not drop it: the reconnect policy (the watchdog takes it) and
    /// the field uplinks' settings (the operating system's Wi-Fi and modem files, rendered
    /// again; the stream follows whatever uplink they bring up).
    pub fn applies_in_place(&self, new: &Config) -> bool {
        let mut same = new.clone();
        same.reconnect = self.reconnect.clone();
        same.network.wifi = self.network.wifi.clone();
        same.network.wifi_country = self.network.wifi_country.clone();
        same.network.modem = self.network.modem.clone();
        &same == self
    }
}

/// The file's top level as serde reads it; each section's raw mirror lives in its file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    source: source::RawSource,
    #[serde(default)]
    encoder: encoder::RawEncoder,
    output: output::RawOutput,
    #[serde(default)]
    reconnect: reconnect::RawReconnect,
    #[serde(default)]
    network: network::RawNetwork,
    #[serde(default)]
    leds: leds::RawLeds,
    #[serde(default)]
    status: status::RawStatus,
    #[serde(default)]
    audio: audio::RawAudio,
    #[serde(default)]
    record: record::RawRecord,
    state_dir: Option<PathBuf>,
}

impl RawConfig {
    /// Sections are checked in this order (the encoder's check needs the source's fps):
    /// a config with several faults is refused for the first.
    fn validate(self) -> Result<Config, ConfigError> {
        let source = self.source.validate()?;
        let encoder = self.encoder.validate(source.fps)?;
        let output = self.output.validate()?;
        let reconnect = self.reconnect.validate()?;
        let network = self.network.validate()?;
        let leds = self.leds.validate()?;
        let audio = self.audio.validate()?;
        let status = self.status.validate()?;
        let record = self.record.validate()?;
        Ok(Config {
            source,
            encoder,
            output,
            reconnect,
            network,
            leds,
            status,
            audio,
            record,
            state_dir: self
                .state_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{MINIMAL, assert_refusals_name, refused_key};
    use std::time::Duration;

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(
            (c.source.width, c.source.height, c.source.fps),
            (1280, 720, 30)
        );
        assert_eq!(c.encoder.kind, EncoderKind::Auto);
        assert_eq!(c.encoder.bitrate_kbps, 2500);
        assert_eq!(c.encoder.min_bitrate_kbps, 300);
        assert!(c.encoder.adapt);
        assert_eq!(c.source.pattern, TestPattern::Smpte);
        assert_eq!(c.reconnect, ReconnectConfig::default());
        assert_eq!(c.reconnect.max_attempts, 0);
        assert_eq!(c.status.socket, PathBuf::from("/run/onair/status.sock"));
        assert!(c.network.netlink);
        assert_eq!(c.source.on_loss, OnLoss::Slate);
        assert_eq!(c.source.slate_text, "NO SIGNAL");
        assert_eq!(c.source.slate_image, None);
        assert_eq!(c.source.retry, Duration::from_secs(2));
        assert_eq!(c.source.lost_after, Duration::from_secs(2));
        assert_eq!(c.source.pattern, TestPattern::Smpte);
        assert_eq!(c.audio, AudioConfig::default());
        assert_eq!(c.audio.kind, AudioKind::None);
        assert_eq!(
            (
                c.audio.device.as_str(),
                c.audio.channels,
                c.audio.bitrate_kbps,
                c.audio.offset_ms
            ),
            ("default", 2, 128, 0)
        );
    }

    #[test]
    fn refusals_name_the_key() {
        assert_refusals_name(&[(r#"{"bogus": 1}"#, "bogus")]);
    }

    #[test]
    fn missing_required_blocks_are_refused() {
        assert_eq!(refused_key(r#"{"source": {"kind": "test"}}"#), "output");
        let no_kind = r#"{"source": {}, "output": {"kind": "whip", "url": "http://h/api/whip"}}"#;
        assert_eq!(refused_key(no_kind), "source.kind");
    }

    #[test]
    fn reconnect_and_field_uplink_changes_apply_in_place() {
        let a = Config::parse(MINIMAL).unwrap();
        let mut b = a.clone();
        b.reconnect.max_attempts = 5;
        assert!(a.applies_in_place(&b));
        b.network.wifi_country = Some("FR".into());
        b.network.wifi.push(WifiNetwork {
            ssid: "venue".into(),
            security: WifiSecurity::Psk(crate::secret::Secret::new("password1")),
            hidden: false,
            priority: 0,
        });
        assert!(a.applies_in_place(&b));
        b.network.settle = Duration::ZERO;
        assert!(!a.applies_in_place(&b));
        let mut c = a.clone();
        c.encoder.bitrate_kbps = 1000;
        assert!(!a.applies_in_place(&c));
    }
}
