//! The operating system's files for the field uplinks, rendered from the config: the
//! wpa_supplicant configuration every Wi-Fi interface's wpa_supplicant reads (the networks,
//! the regulatory country, the control socket the daemon reads it by) and the settings of a
//! modem's data connection that ModemManager gets (`mmcli --simple-connect`).
//!
//! Pure: config in, text out. The config has refused what these files could not carry
//! (config/uplinks.rs), so nothing here escapes: SSIDs are written in hex, the passphrases
//! are printable ASCII in quotes (wpa_supplicant takes the text up to the last quote), and
//! the modem's values are either of a safe alphabet or double-quoted without a quote inside.

use crate::config::{ModemConfig, NetworkConfig, WifiNetwork, WifiSecurity};
use std::fmt::Write;

/// Where every wpa_supplicant of the box puts its control socket (one per interface, named
/// after it); the daemon reads Wi-Fi facts there.
pub const WPA_CTRL_DIR: &str = "/run/wpa_supplicant";

/// The files, by name in the output directory. Each holds secrets: written 0600.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkFiles {
    /// `wpa_supplicant.conf`: always written (no networks: the radios stay idle, and their
    /// state is still read).
    pub wpa_supplicant: String,
    /// `modem-connect`: the `--simple-connect` argument; `None` without `network.modem` (the
    /// file is then removed, and no modem is connected).
    pub modem_connect: Option<String>,
}

pub const WPA_SUPPLICANT_FILE: &str = "wpa_supplicant.conf";
pub const MODEM_CONNECT_FILE: &str = "modem-connect";

pub fn render(config: &NetworkConfig) -> NetworkFiles {
    NetworkFiles {
        wpa_supplicant: wpa_supplicant_conf(config),
        modem_connect: config.modem.as_ref().map(modem_connect),
    }
}

fn wpa_supplicant_conf(config: &NetworkConfig) -> String {
    let mut out = String::new();
    out.push_str(
        "# Written by onair from its config (network.wifi, network.wifi_country) at every boot\n\
         # and SIGHUP: change the config, not this file.\n",
    );
    // `write!` to a String cannot fail.
    let _ = writeln!(out, "ctrl_interface={WPA_CTRL_DIR}");
    out.push_str("update_config=0\n");
    match &config.wifi_country {
        Some(country) => {
            let _ = writeln!(out, "country={country}");
        }
        None => out.push_str(
            "# No network.wifi_country: the radio stays in the world regulatory domain (fewer\n\
             # channels, and passive scans only where the rules ask for them).\n",
        ),
    }
    // WPA3's SAE: both ways of deriving the password element (hunting-and-pecking and
    // hash-to-element), so both older and newer access points are joined.
    out.push_str("sae_pwe=2\n");
    out.push_str("p2p_disabled=1\n");
    for network in &config.wifi {
        network_block(&mut out, network);
    }
    out
}

fn network_block(out: &mut String, n: &WifiNetwork) {
    out.push_str("\nnetwork={\n");
    let _ = writeln!(out, "\tssid={}", hex(n.ssid.as_bytes()));
    if n.hidden {
        out.push_str("\tscan_ssid=1\n");
    }
    match &n.security {
        WifiSecurity::Psk(psk) if psk.expose().len() == 64 => {
            // The key itself: SAE needs the passphrase, so WPA2 only.
            out.push_str("\tkey_mgmt=WPA-PSK WPA-PSK-SHA256\n\tieee80211w=1\n");
            let _ = writeln!(out, "\tpsk={}", psk.expose());
        }
        WifiSecurity::Psk(psk) => {
            // A passphrase joins WPA2, WPA3 and transition-mode access points alike.
            out.push_str("\tkey_mgmt=WPA-PSK WPA-PSK-SHA256 SAE\n\tieee80211w=1\n");
            let _ = writeln!(out, "\tpsk=\"{}\"", psk.expose());
        }
        WifiSecurity::Sae(password) => {
            out.push_str("\tkey_mgmt=SAE\n\tieee80211w=2\n");
            let _ = writeln!(out, "\tsae_password=\"{}\"", password.expose());
        }
    }
    if n.priority > 0 {
        let _ = writeln!(out, "\tpriority={}", n.priority);
    }
    out.push_str("}\n");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `apn=internet,pin=1234,user="u",password="p"`: ModemManager's key-value list.
fn modem_connect(m: &ModemConfig) -> String {
    let mut parts = vec![format!("apn={}", m.apn)];
    if let Some(pin) = &m.pin {
        parts.push(format!("pin={}", pin.expose()));
    }
    if let Some(user) = &m.user {
        parts.push(format!("user=\"{user}\""));
    }
    if let Some(password) = &m.password {
        parts.push(format!("password=\"{}\"", password.expose()));
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn network(patch: &str) -> NetworkConfig {
        let text = format!(
            r#"{{"source": {{"kind": "test"}}, "output": {{"kind": "whip", "url": "http://192.0.2.1/w"}}, "network": {patch}}}"#
        );
        Config::parse(&text).expect("valid").network
    }

    #[test]
    fn wpa_supplicant_conf_for_each_kind_of_network() {
        let n = network(
            r#"{"wifi_country": "DE", "wifi": [
                {"ssid": "Venue \"Guest\" #1", "psk": "pass \"word\" # not a comment"},
                {"ssid": "Backstage", "sae_password": "wpa3-only", "hidden": true, "priority": 5},
                {"ssid": "Raw", "psk": "00112233445566778899AABBCCDDEEFF00112233445566778899aabbccddeeff"}
            ]}"#,
        );
        let conf = render(&n).wpa_supplicant;
        let expected =
            "# Written by onair from its config (network.wifi, network.wifi_country) at every boot
# and SIGHUP: change the config, not this file.
ctrl_interface=/run/wpa_supplicant
update_config=0
country=DE
sae_pwe=2
p2p_disabled=1

network={
\tssid=56656e75652022477565737422202331
\tkey_mgmt=WPA-PSK WPA-PSK-SHA256 SAE
\tieee80211w=1
\tpsk=\"pass \"word\" # not a comment\"
}

network={
\tssid=4261636b7374616765
\tscan_ssid=1
\tkey_mgmt=SAE
\tieee80211w=2
\tsae_password=\"wpa3-only\"
\tpriority=5
}

network={
\tssid=526177
\tkey_mgmt=WPA-PSK WPA-PSK-SHA256
\tieee80211w=1
\tpsk=00112233445566778899AABBCCDDEEFF00112233445566778899aabbccddeeff
}
";
        assert_eq!(conf, expected);
        // The SSID in hex is the bytes as written, UTF-8 included.
        let utf8 = render(&network(
            r#"{"wifi": [{"ssid": "Café", "psk": "password1"}]}"#,
        ));
        assert!(utf8.wpa_supplicant.contains("\tssid=436166c3a9\n"));
    }

    #[test]
    fn without_networks_or_country() {
        let files = render(&network("{}"));
        assert!(!files.wpa_supplicant.contains("network={"));
        assert!(!files.wpa_supplicant.contains("\ncountry="));
        assert!(files.wpa_supplicant.contains("world regulatory domain"));
        assert!(
            files
                .wpa_supplicant
                .contains("ctrl_interface=/run/wpa_supplicant\n")
        );
        assert_eq!(files.modem_connect, None);
    }

    #[test]
    fn modem_settings() {
        let files = render(&network(
            r#"{"modem": {"apn": "web.provider.com", "pin": "0000", "user": "a b,c", "password": "p'w=x,y"}}"#,
        ));
        assert_eq!(
            files.modem_connect.as_deref(),
            Some(r#"apn=web.provider.com,pin=0000,user="a b,c",password="p'w=x,y""#)
        );
        let files = render(&network(r#"{"modem": {"apn": "internet"}}"#));
        assert_eq!(files.modem_connect.as_deref(), Some("apn=internet"));
    }
}
