//! The `reconnect` section: the watchdog's retry policy (backoff, jitter, attempts) and the
//! liveness deadlines. The one section SIGHUP applies without dropping the stream.

use super::ConfigError;
use super::ranges::nonzero_ms;
use serde::Deserialize;
use std::time::Duration;

/// The watchdog's retry policy and liveness deadlines.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconnectConfig {
    pub initial_delay: Duration,
    pub max_delay: Duration,
    pub multiplier: f64,
    pub jitter: f64,
    /// Consecutive failed attempts before giving up; 0 = never give up.
    pub max_attempts: u32,
    pub connect_timeout: Duration,
    pub stable_after: Duration,
    pub dead_after: Duration,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig {
            initial_delay: Duration::from_millis(1000),
            max_delay: Duration::from_millis(30_000),
            multiplier: 2.0,
            jitter: 0.1,
            max_attempts: 0,
            connect_timeout: Duration::from_millis(10_000),
            stable_after: Duration::from_millis(10_000),
            dead_after: Duration::from_millis(5_000),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReconnect {
    initial_delay_ms: Option<u64>,
    max_delay_ms: Option<u64>,
    multiplier: Option<f64>,
    jitter: Option<f64>,
    max_attempts: Option<u32>,
    connect_timeout_ms: Option<u64>,
    stable_after_ms: Option<u64>,
    dead_after_ms: Option<u64>,
}

impl RawReconnect {
    pub(super) fn validate(self) -> Result<ReconnectConfig, ConfigError> {
        let d = ReconnectConfig::default();
        let initial_delay = nonzero_ms(
            "reconnect.initial_delay_ms",
            self.initial_delay_ms,
            d.initial_delay,
        )?;
        let max_delay = nonzero_ms("reconnect.max_delay_ms", self.max_delay_ms, d.max_delay)?;
        if max_delay < initial_delay {
            return Err(ConfigError::invalid(
                "reconnect.max_delay_ms",
                "must not be less than reconnect.initial_delay_ms",
            ));
        }
        let multiplier = self.multiplier.unwrap_or(d.multiplier);
        if !multiplier.is_finite() || !(1.0..=10.0).contains(&multiplier) {
            return Err(ConfigError::invalid(
                "reconnect.multiplier",
                "must be between 1.0 and 10.0",
            ));
        }
        let jitter = self.jitter.unwrap_or(d.jitter);
        if !jitter.is_finite() || !(0.0..=0.5).contains(&jitter) {
            return Err(ConfigError::invalid(
                "reconnect.jitter",
                "must be between 0.0 and 0.5 (a fraction of the delay)",
            ));
        }
        Ok(ReconnectConfig {
            initial_delay,
            max_delay,
            multiplier,
            jitter,
            max_attempts: self.max_attempts.unwrap_or(d.max_attempts),
            connect_timeout: nonzero_ms(
                "reconnect.connect_timeout_ms",
                self.connect_timeout_ms,
                d.connect_timeout,
            )?,
            stable_after: nonzero_ms(
                "reconnect.stable_after_ms",
                self.stable_after_ms,
                d.stable_after,
            )?,
            dead_after: nonzero_ms("reconnect.dead_after_ms", self.dead_after_ms, d.dead_after)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::assert_refusals_name;

    #[test]
    fn refusals_name_the_key() {
        assert_refusals_name(&[
            (r#"{"reconnect": {"jitter": 2.0}}"#, "reconnect.jitter"),
            (
                r#"{"reconnect": {"max_delay_ms": 10, "initial_delay_ms": 100}}"#,
                "reconnect.max_delay_ms",
            ),
            (
                r#"{"reconnect": {"connect_timeout_ms": 0}}"#,
                "reconnect.connect_timeout_ms",
            ),
            (
                r#"{"reconnect": {"max_attempts": -1}}"#,
                "reconnect.max_attempts",
            ),
        ]);
    }
}
