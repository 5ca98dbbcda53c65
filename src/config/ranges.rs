//! Range checks the sections share: each refusal names the key and the range it must be in,
//! in the same words whichever section asks.

use super::ConfigError;
use std::time::Duration;

pub(super) fn ms_in_range(
    key: &str,
    value: Option<u64>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<Duration, ConfigError> {
    let ms = value.unwrap_or(default);
    if !(min..=max).contains(&ms) {
        return Err(ConfigError::invalid(
            key,
            format!("{ms} is out of range {min}..={max}"),
        ));
    }
    Ok(Duration::from_millis(ms))
}

pub(super) fn check_range(key: &str, value: u32, min: u32, max: u32) -> Result<u32, ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::invalid(
            key,
            format!("{value} is out of range {min}..={max}"),
        ));
    }
    Ok(value)
}
