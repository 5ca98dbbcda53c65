//! The `leds` section: which LED backend (GPIO pins, sysfs LED class, console, none) shows
//! the box's state, and its pins or names.

use super::ConfigError;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LedBackendKind {
    Gpio,
    Sysfs,
    Console,
    #[default]
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LedConfig {
    pub backend: LedBackendKind,
    /// BCM GPIO numbers for the gpio backend.
    pub live_pin: u8,
    pub status_pin: u8,
    pub active_low: bool,
    /// LED class directory for the sysfs backend (tests point it at a temporary tree).
    pub sysfs_dir: PathBuf,
    pub live_name: String,
    pub status_name: String,
}

impl Default for LedConfig {
    fn default() -> Self {
        LedConfig {
            backend: LedBackendKind::None,
            live_pin: 17,
            status_pin: 27,
            active_low: false,
            sysfs_dir: PathBuf::from("/sys/class/leds"),
            live_name: "onair-live".into(),
            status_name: "onair-status".into(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLeds {
    #[serde(default)]
    backend: LedBackendKind,
    live_pin: Option<u8>,
    status_pin: Option<u8>,
    #[serde(default)]
    active_low: bool,
    sysfs_dir: Option<PathBuf>,
    live_name: Option<String>,
    status_name: Option<String>,
}

impl RawLeds {
    pub(super) fn validate(self) -> Result<LedConfig, ConfigError> {
        let d = LedConfig::default();
        let live_pin = self.live_pin.unwrap_or(d.live_pin);
        let status_pin = self.status_pin.unwrap_or(d.status_pin);
        if live_pin > 27 {
            return Err(ConfigError::invalid(
                "leds.live_pin",
                "the Pi header has BCM GPIO 0..=27",
            ));
        }
        if status_pin > 27 {
            return Err(ConfigError::invalid(
                "leds.status_pin",
                "the Pi header has BCM GPIO 0..=27",
            ));
        }
        if self.backend == LedBackendKind::Gpio && live_pin == status_pin {
            return Err(ConfigError::invalid(
                "leds.status_pin",
                "must differ from leds.live_pin",
            ));
        }
        let name = |key: &str, v: Option<String>, default: String| match v {
            Some(n) if n.is_empty() || n.contains('/') => Err(ConfigError::invalid(
                key,
                "must be a LED class name (no '/')",
            )),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        Ok(LedConfig {
            backend: self.backend,
            live_pin,
            status_pin,
            active_low: self.active_low,
            sysfs_dir: self.sysfs_dir.unwrap_or(d.sysfs_dir),
            live_name: name("leds.live_name", self.live_name, d.live_name)?,
            status_name: name("leds.status_name", self.status_name, d.status_name)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::assert_refusals_name;

    #[test]
    fn refusals_name_the_key() {
        assert_refusals_name(&[
            (
                r#"{"leds": {"backend": "gpio", "live_pin": 40}}"#,
                "leds.live_pin",
            ),
            (r#"{"leds": {"backend": "blink"}}"#, "leds.backend"),
        ]);
    }
}
