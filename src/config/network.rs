//! The `network` section: which interfaces count for "online", the uplinks' preference order
//! and settle time, and how the stream follows a change of path (steer, follow, ignore).
//!
//! Only the patterns are stored and checked here; what they mean for a link the kernel
//! reports is net's decision (net/interface_patterns.rs). The field uplinks the operating
//! system brings up from the config (Wi-Fi networks, the radio's country, a modem's APN) are
//! checked in uplinks.rs.

use super::ConfigError;
use super::uplinks::{self, ModemConfig, RawModem, RawWifi, WifiNetwork};
use serde::Deserialize;
use std::time::Duration;

/// Which interfaces count for "is the box online", and how the stream follows the path to
/// its server. Empty `interfaces` = all but loopback. Entries ending in `*` match by prefix
/// (`wlan*`), in `interfaces`, `ignore` and `prefer` alike.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    pub interfaces: Vec<String>,
    pub ignore: Vec<String>,
    /// Off only for benchmarks that compare against the backoff timer alone.
    pub netlink: bool,
    /// Uplinks in order of preference (patterns); uplinks matching none come after, in the
    /// kernel's order (route metric). Empty: the kernel's order alone.
    pub prefer: Vec<String>,
    /// How long a preferred uplink that came back must stay usable before the stream returns
    /// to it (longer for an uplink that keeps flapping).
    pub settle: Duration,
    pub paths: PathsMode,
    /// The daemon's routing table for `PathsMode::Steer`; each uplink's own table is this
    /// number plus its interface index.
    pub route_table: u32,
    /// Wi-Fi networks the box may join (wpa_supplicant's, rendered by net/field/render.rs).
    pub wifi: Vec<WifiNetwork>,
    /// The regulatory country of the radio (ISO 3166 alpha-2, upper case); `None`: the
    /// world domain, with fewer channels and passive scans only on some.
    pub wifi_country: Option<String>,
    /// A USB modem's data connection (ModemManager's).
    pub modem: Option<ModemConfig>,
}

/// What a change of the path to the server (outgoing interface, source address, gateway)
/// does to the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PathsMode {
    /// The daemon picks the uplink (`prefer`, `settle`) and steers the server's traffic to it
    /// with policy routing; a path change reconnects at once over the new path.
    #[default]
    Steer,
    /// The kernel's routes pick the uplink; a path change reconnects at once.
    Follow,
    /// Path changes do not touch the connection (the liveness checks notice a dead path).
    Ignore,
}

pub const DEFAULT_SETTLE: Duration = Duration::from_millis(5_000);
pub const DEFAULT_ROUTE_TABLE: u32 = 1100;
/// Tables above this are left to other software (and `route_table + ifindex` must fit).
const MAX_ROUTE_TABLE: u32 = 0x7fff_0000;

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            interfaces: Vec::new(),
            ignore: Vec::new(),
            netlink: true,
            prefer: Vec::new(),
            settle: DEFAULT_SETTLE,
            paths: PathsMode::Steer,
            route_table: DEFAULT_ROUTE_TABLE,
            wifi: Vec::new(),
            wifi_country: None,
            modem: None,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNetwork {
    #[serde(default)]
    interfaces: Vec<String>,
    #[serde(default)]
    ignore: Vec<String>,
    netlink: Option<bool>,
    #[serde(default)]
    prefer: Vec<String>,
    settle_ms: Option<u64>,
    paths: Option<PathsMode>,
    route_table: Option<u32>,
    #[serde(default)]
    wifi: Vec<RawWifi>,
    wifi_country: Option<String>,
    modem: Option<RawModem>,
}

/// Longest settle time accepted: beyond an hour a preferred uplink would in effect never
/// be returned to.
const MAX_SETTLE_MS: u64 = 3_600_000;

impl RawNetwork {
    pub(super) fn validate(self) -> Result<NetworkConfig, ConfigError> {
        for (list, names) in [
            ("interfaces", &self.interfaces),
            ("ignore", &self.ignore),
            ("prefer", &self.prefer),
        ] {
            for (i, name) in names.iter().enumerate() {
                if name.is_empty() || name == "*" && list == "prefer" {
                    return Err(ConfigError::invalid(
                        &format!("network.{list}[{i}]"),
                        if name.is_empty() {
                            "interface name is empty"
                        } else {
                            "`*` alone prefers nothing over anything"
                        },
                    ));
                }
            }
        }
        let settle = match self.settle_ms {
            None => DEFAULT_SETTLE,
            Some(ms) if ms > MAX_SETTLE_MS => {
                return Err(ConfigError::invalid(
                    "network.settle_ms",
                    format!("{ms} is out of range 0..={MAX_SETTLE_MS}"),
                ));
            }
            Some(ms) => Duration::from_millis(ms),
        };
        let route_table = match self.route_table {
            None => DEFAULT_ROUTE_TABLE,
            Some(t @ (0 | 253..=255)) => {
                return Err(ConfigError::invalid(
                    "network.route_table",
                    format!("{t} is reserved by the kernel (unspec, default, main, local)"),
                ));
            }
            Some(t) if t > MAX_ROUTE_TABLE => {
                return Err(ConfigError::invalid(
                    "network.route_table",
                    format!("{t} is out of range 1..={MAX_ROUTE_TABLE}"),
                ));
            }
            Some(t) => t,
        };
        Ok(NetworkConfig {
            interfaces: self.interfaces,
            ignore: self.ignore,
            netlink: self.netlink.unwrap_or(true),
            prefer: self.prefer,
            settle,
            paths: self.paths.unwrap_or_default(),
            route_table,
            wifi: uplinks::validate_wifi(self.wifi)?,
            wifi_country: uplinks::validate_country(self.wifi_country)?,
            modem: uplinks::validate_modem(self.modem)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::test_support::{MINIMAL, refused_key, with};

    #[test]
    fn uplink_preferences_and_paths() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.network, NetworkConfig::default());
        assert_eq!(c.network.paths, PathsMode::Steer);
        assert_eq!(c.network.settle, Duration::from_secs(5));
        let c = Config::parse(&with(
            r#"{"network": {"prefer": ["eth*", "wlan0"], "settle_ms": 0, "paths": "follow", "route_table": 2000}}"#,
        ))
        .unwrap();
        assert_eq!(c.network.settle, Duration::ZERO);
        assert_eq!(c.network.paths, PathsMode::Follow);
        assert_eq!(c.network.route_table, 2000);
        // What the patterns rank is net's to say (net/interface_patterns.rs); here, that they
        // are read in order.
        assert_eq!(c.network.prefer, ["eth*", "wlan0"]);
        for (patch, key) in [
            (r#"{"network": {"prefer": [""]}}"#, "network.prefer[0]"),
            (
                r#"{"network": {"prefer": ["eth0", "*"]}}"#,
                "network.prefer[1]",
            ),
            (
                r#"{"network": {"settle_ms": 3600001}}"#,
                "network.settle_ms",
            ),
            (r#"{"network": {"settle_ms": -1}}"#, "network.settle_ms"),
            (r#"{"network": {"paths": "bond"}}"#, "network.paths"),
            (
                r#"{"network": {"route_table": 254}}"#,
                "network.route_table",
            ),
            (r#"{"network": {"route_table": 0}}"#, "network.route_table"),
            (
                r#"{"network": {"route_table": 4294967295}}"#,
                "network.route_table",
            ),
            (
                r#"{"network": {"interfaces": [""]}}"#,
                "network.interfaces[0]",
            ),
        ] {
            assert_eq!(refused_key(&with(patch)), key, "{patch}");
        }
    }
}
