//! The config's interface-name patterns read as network policy: which interfaces count
//! towards "online", and where each uplink stands in the preference order.
//!
//! The config only stores the patterns (`network.interfaces`, `ignore`, `prefer`); what they
//! mean for a link the kernel reports is a network decision, so it lives here beside the
//! decisions that use it (decide.rs, uplinks.rs). Pure: names in, answers out.

use crate::config::NetworkConfig;

/// `eth0` matches itself; `wlan*` matches by prefix.
fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Whether an interface counts towards "online".
pub fn watches(config: &NetworkConfig, name: &str) -> bool {
    let matches = |pattern: &String| pattern_matches(pattern, name);
    if config.ignore.iter().any(matches) {
        return false;
    }
    if config.interfaces.is_empty() {
        name != "lo"
    } else {
        config.interfaces.iter().any(matches)
    }
}

/// Position of `name` in the preference order: the index of the first `prefer` pattern
/// it matches, or `prefer.len()` for an uplink that matches none.
pub fn preference(config: &NetworkConfig, name: &str) -> usize {
    config
        .prefer
        .iter()
        .position(|p| pattern_matches(p, name))
        .unwrap_or(config.prefer.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_patterns() {
        let n = NetworkConfig {
            ignore: vec!["docker*".into()],
            ..NetworkConfig::default()
        };
        assert!(watches(&n, "eth0"));
        assert!(!watches(&n, "lo"));
        assert!(!watches(&n, "docker0"));
        let n = NetworkConfig {
            interfaces: vec!["wlan*".into(), "eth0".into()],
            ..NetworkConfig::default()
        };
        assert!(watches(&n, "wlan1") && watches(&n, "eth0") && !watches(&n, "eth1"));
    }

    #[test]
    fn uplink_preferences() {
        let n = NetworkConfig {
            prefer: vec!["eth*".into(), "wlan0".into()],
            ..NetworkConfig::default()
        };
        assert_eq!(
            (
                preference(&n, "eth1"),
                preference(&n, "wlan0"),
                preference(&n, "wwan0")
            ),
            (0, 1, 2)
        );
    }
}
