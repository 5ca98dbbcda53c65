//! The `reconnect` section: the watchdog's retry policy (backoff, jitter, attempts) and the
//! liveness deadlines. The one section SIGHUP applies without dropping the stream.

use super::ConfigError;
use super::ranges::ms_in_range;
use serde::Deserialize;
use std::time::Duration;

/// The longest wait between attempts, and the longest a connection must stay up to count as
/// stable: an hour. Longer is a typo (an unbounded value once read as 213503982334 days, and
/// the box never retried).
pub const MAX_DELAY_MS: u64 = 3_600_000;
/// The longest one attempt, or the server's silence, may last: ten minutes.
pub const MAX_DEADLINE_MS: u64 = 600_000;

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
        // Every duration has a floor of 1 ms and a ceiling, so none can overflow a clock.
        let ms = |key: &str, value: Option<u64>, default: Duration, max: u64| {
            ms_in_range(key, value, default.as_millis() as u64, 1, max)
        };
        let initial_delay = ms(
            "reconnect.initial_delay_ms",
            self.initial_delay_ms,
            d.initial_delay,
            MAX_DELAY_MS,
        )?;
        let max_delay = ms(
            "reconnect.max_delay_ms",
            self.max_delay_ms,
            d.max_delay,
            MAX_DELAY_MS,
        )?;
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
            connect_timeout: ms(
                "reconnect.connect_timeout_ms",
                self.connect_timeout_ms,
                d.connect_timeout,
                MAX_DEADLINE_MS,
            )?,
            stable_after: ms(
                "reconnect.stable_after_ms",
                self.stable_after_ms,
                d.stable_after,
                MAX_DELAY_MS,
            )?,
            dead_after: ms(
                "reconnect.dead_after_ms",
                self.dead_after_ms,
                d.dead_after,
                MAX_DEADLINE_MS,
            )?,
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

    #[test]
    fn every_duration_has_a_ceiling() {
        let huge = u64::MAX.to_string();
        let mut cases = Vec::new();
        for (key, max) in [
            ("initial_delay_ms", super::MAX_DELAY_MS),
            ("max_delay_ms", super::MAX_DELAY_MS),
            ("stable_after_ms", super::MAX_DELAY_MS),
            ("connect_timeout_ms", super::MAX_DEADLINE_MS),
            ("dead_after_ms", super::MAX_DEADLINE_MS),
        ] {
            // The ceiling itself is fine (max_delay_ms must not be below initial_delay_ms).
            let at_max = if key == "max_delay_ms" {
                format!(r#"{{"reconnect": {{"{key}": {max}}}}}"#)
            } else {
                format!(
                    r#"{{"reconnect": {{"{key}": {max}, "max_delay_ms": {}}}}}"#,
                    super::MAX_DELAY_MS
                )
            };
            crate::config::Config::parse(&crate::config::test_support::with(&at_max))
                .unwrap_or_else(|e| panic!("{key} = {max}: {e}"));
            cases.push((format!(r#"{{"reconnect": {{"{key}": {}}}}}"#, max + 1), key));
            cases.push((format!(r#"{{"reconnect": {{"{key}": {huge}}}}}"#), key));
        }
        let cases: Vec<(&str, String)> = cases
            .iter()
            .map(|(patch, key)| (patch.as_str(), format!("reconnect.{key}")))
            .collect();
        let cases: Vec<(&str, &str)> = cases.iter().map(|(p, k)| (*p, k.as_str())).collect();
        assert_refusals_name(&cases);
    }
}
