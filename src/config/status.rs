//! The `status` section: where the status socket (`onair status`, scripts) listens.

use super::ConfigError;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq)]
pub struct StatusConfig {
    pub socket: PathBuf,
}

pub const DEFAULT_STATUS_SOCKET: &str = "/run/onair/status.sock";

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            socket: PathBuf::from(DEFAULT_STATUS_SOCKET),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStatus {
    socket: Option<PathBuf>,
}

impl RawStatus {
    pub(super) fn validate(self) -> Result<StatusConfig, ConfigError> {
        let status = StatusConfig {
            socket: self
                .socket
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATUS_SOCKET)),
        };
        if status.socket.as_os_str().is_empty() {
            return Err(ConfigError::invalid("status.socket", "path is empty"));
        }
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::assert_refusals_name;

    #[test]
    fn refusals_name_the_key() {
        assert_refusals_name(&[(r#"{"status": {"socket": ""}}"#, "status.socket")]);
    }
}
