//! The `network` section's field uplinks: the Wi-Fi networks the box may join
//! (`network.wifi`), the regulatory country its radio obeys (`network.wifi_country`) and the
//! settings of a USB modem's data connection (`network.modem`).
//!
//! The operating system brings these uplinks up (wpa_supplicant, ModemManager); the daemon
//! only renders their settings into the files those read (net/field/render.rs). So this file
//! refuses everything those files could not carry or a person never means: an SSID the radio
//! cannot send, a passphrase WPA cannot take, an APN that is not one. The passphrases, the
//! SIM PIN and the modem password are [`Secret`]s: no refusal repeats them (scrub.rs also
//! finds them in a refused file's text), and they are never printed.

use super::ConfigError;
use crate::secret::Secret;
use serde::Deserialize;

/// A Wi-Fi network the box may join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WifiNetwork {
    /// 1 to 32 bytes (UTF-8 as written).
    pub ssid: String,
    pub security: WifiSecurity,
    /// Not broadcast by the access point: probed for by name.
    pub hidden: bool,
    /// Among networks in range, the higher is joined first (0–1000).
    pub priority: u32,
}

/// How the box proves it may join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WifiSecurity {
    /// WPA2-Personal: a passphrase of 8 to 63 printable ASCII characters, or the 256-bit key
    /// itself as 64 hex digits. A passphrase also joins a WPA3 (SAE) network that takes it.
    Psk(Secret),
    /// WPA3-Personal only (SAE, protected management frames required).
    Sae(Secret),
}

/// A USB modem's data connection (ModemManager's simple connect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModemConfig {
    /// The operator's access point name.
    pub apn: String,
    /// The SIM's PIN, when it has one.
    pub pin: Option<Secret>,
    pub user: Option<String>,
    pub password: Option<Secret>,
}

/// More networks than this is a mistake in the file, not a list of venues.
pub const MAX_WIFI_NETWORKS: usize = 32;
pub const MAX_WIFI_PRIORITY: u32 = 1000;
const MAX_SSID_BYTES: usize = 32;
const MAX_SAE_PASSWORD: usize = 128;
/// 3GPP TS 23.003: an APN's network identifier is at most 100 octets.
const MAX_APN: usize = 100;
const MAX_MODEM_CREDENTIAL: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWifi {
    ssid: Option<String>,
    psk: Option<Secret>,
    sae_password: Option<Secret>,
    #[serde(default)]
    hidden: bool,
    priority: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawModem {
    apn: Option<String>,
    pin: Option<Secret>,
    user: Option<String>,
    password: Option<Secret>,
}

pub(super) fn validate_wifi(raw: Vec<RawWifi>) -> Result<Vec<WifiNetwork>, ConfigError> {
    if raw.len() > MAX_WIFI_NETWORKS {
        return Err(ConfigError::invalid(
            "network.wifi",
            format!(
                "{} networks is more than the box keeps ({MAX_WIFI_NETWORKS})",
                raw.len()
            ),
        ));
    }
    let mut out: Vec<WifiNetwork> = Vec::with_capacity(raw.len());
    for (i, w) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("network.wifi[{i}].{field}");
        let Some(ssid) = w.ssid else {
            return Err(ConfigError::invalid(&key("ssid"), "is missing"));
        };
        if ssid.is_empty() || ssid.len() > MAX_SSID_BYTES {
            return Err(ConfigError::invalid(
                &key("ssid"),
                format!("must be 1 to {MAX_SSID_BYTES} bytes long"),
            ));
        }
        if ssid.chars().any(char::is_control) {
            return Err(ConfigError::invalid(
                &key("ssid"),
                "contains control characters",
            ));
        }
        if let Some(j) = out.iter().position(|n| n.ssid == ssid) {
            return Err(ConfigError::invalid(
                &key("ssid"),
                format!("names the same network as network.wifi[{j}]"),
            ));
        }
        let security = match (w.psk, w.sae_password) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    &format!("network.wifi[{i}]"),
                    "has both psk and sae_password: give one (a psk passphrase also joins \
                     WPA3 networks that take it)",
                ));
            }
            (None, None) => {
                return Err(ConfigError::invalid(
                    &format!("network.wifi[{i}]"),
                    "needs psk (WPA2) or sae_password (WPA3): open networks are not joined",
                ));
            }
            (Some(psk), None) => {
                check_psk(&key("psk"), psk.expose())?;
                WifiSecurity::Psk(psk)
            }
            (None, Some(password)) => {
                check_printable(&key("sae_password"), password.expose(), MAX_SAE_PASSWORD)?;
                WifiSecurity::Sae(password)
            }
        };
        let priority = w.priority.unwrap_or(0);
        if priority > MAX_WIFI_PRIORITY {
            return Err(ConfigError::invalid(
                &key("priority"),
                format!("{priority} is out of range 0..={MAX_WIFI_PRIORITY}"),
            ));
        }
        out.push(WifiNetwork {
            ssid,
            security,
            hidden: w.hidden,
            priority,
        });
    }
    Ok(out)
}

/// WPA's two forms of a pre-shared key (IEEE 802.11 Annex J.4): a passphrase of 8 to 63
/// printable ASCII characters, or the key as 64 hex digits. The value is never quoted back.
fn check_psk(key: &str, psk: &str) -> Result<(), ConfigError> {
    let hex_key = psk.len() == 64 && psk.bytes().all(|b| b.is_ascii_hexdigit());
    let passphrase =
        (8..=63).contains(&psk.len()) && psk.bytes().all(|b| (0x20..0x7f).contains(&b));
    if hex_key || passphrase {
        return Ok(());
    }
    Err(ConfigError::invalid(
        key,
        "must be a passphrase of 8 to 63 printable ASCII characters, or 64 hex digits",
    ))
}

/// 1 to `max` printable ASCII characters (what wpa_supplicant's and mmcli's quoted strings
/// carry as written).
fn check_printable(key: &str, value: &str, max: usize) -> Result<(), ConfigError> {
    if value.is_empty() || value.len() > max {
        return Err(ConfigError::invalid(
            key,
            format!("must be 1 to {max} characters long"),
        ));
    }
    if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(ConfigError::invalid(
            key,
            "may hold printable ASCII characters only",
        ));
    }
    Ok(())
}

/// ISO 3166-1 alpha-2, upper case, as the regulatory database names countries.
pub(super) fn validate_country(raw: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let code = raw.to_ascii_uppercase();
    if code == "UK" {
        return Err(ConfigError::invalid(
            "network.wifi_country",
            "the United Kingdom's ISO 3166 code is GB",
        ));
    }
    if code.len() != 2 || !ISO_3166_ALPHA_2.split(' ').any(|c| c == code) {
        return Err(ConfigError::invalid(
            "network.wifi_country",
            "must be a country's two-letter ISO 3166 code, such as DE, US or JP",
        ));
    }
    Ok(Some(code))
}

pub(super) fn validate_modem(raw: Option<RawModem>) -> Result<Option<ModemConfig>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let Some(apn) = raw.apn else {
        return Err(ConfigError::invalid("network.modem.apn", "is missing"));
    };
    // Labels of letters, digits and hyphens between dots (3GPP TS 23.003 9.1).
    let apn_ok = (1..=MAX_APN).contains(&apn.len())
        && apn.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !apn_ok {
        return Err(ConfigError::invalid(
            "network.modem.apn",
            format!(
                "must be up to {MAX_APN} letters, digits and hyphens in dot-separated labels \
                 (such as internet or web.provider.com)"
            ),
        ));
    }
    if let Some(pin) = &raw.pin
        && !((4..=8).contains(&pin.expose().len())
            && pin.expose().bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(ConfigError::invalid(
            "network.modem.pin",
            "must be the SIM's PIN: 4 to 8 digits, written as a string",
        ));
    }
    // mmcli takes them as double-quoted values: everything printable but the quote.
    for (key, value) in [
        ("network.modem.user", raw.user.as_deref()),
        (
            "network.modem.password",
            raw.password.as_ref().map(Secret::expose),
        ),
    ] {
        if let Some(value) = value {
            check_printable(key, value, MAX_MODEM_CREDENTIAL)?;
            if value.contains('"') {
                return Err(ConfigError::invalid(key, "may not contain a double quote"));
            }
        }
    }
    Ok(Some(ModemConfig {
        apn,
        pin: raw.pin,
        user: raw.user,
        password: raw.password,
    }))
}

/// The officially assigned ISO 3166-1 alpha-2 codes.
const ISO_3166_ALPHA_2: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ \
    BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ \
    CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ \
    EC EE EG EH ER ES ET FI FJ FK FM FO FR \
    GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU \
    ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ \
    LA LB LC LI LK LR LS LT LU LV LY \
    MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ \
    NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA \
    RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ \
    TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ \
    VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::test_support::{refused_key, with};

    fn parse(patch: &str) -> Config {
        Config::parse(&with(patch)).unwrap_or_else(|e| panic!("{patch}: {e}"))
    }

    #[test]
    fn wifi_networks_are_read_with_their_defaults() {
        let c = parse(
            r#"{"network": {"wifi_country": "de", "wifi": [
                {"ssid": "Venue Guest", "psk": "correct horse battery"},
                {"ssid": "Backstage", "sae_password": "s", "hidden": true, "priority": 10},
                {"ssid": "Phone", "psk": "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"}
            ]}}"#,
        );
        let n = &c.network;
        assert_eq!(n.wifi_country.as_deref(), Some("DE"));
        assert_eq!(n.wifi.len(), 3);
        assert_eq!(n.wifi[0].ssid, "Venue Guest");
        assert!(
            matches!(&n.wifi[0].security, WifiSecurity::Psk(p) if p.expose() == "correct horse battery")
        );
        assert_eq!((n.wifi[0].hidden, n.wifi[0].priority), (false, 0));
        assert!(matches!(&n.wifi[1].security, WifiSecurity::Sae(p) if p.expose() == "s"));
        assert_eq!((n.wifi[1].hidden, n.wifi[1].priority), (true, 10));
        assert_eq!(n.modem, None);
        // Nothing of a secret in the config's debug form.
        let debug = format!("{:?}", c.network);
        assert!(!debug.contains("correct horse"), "{debug}");
        // No Wi-Fi at all is the default.
        let c = parse("{}");
        assert!(c.network.wifi.is_empty() && c.network.wifi_country.is_none());
    }

    #[test]
    fn wifi_refusals_name_the_key_and_never_the_secret() {
        let long_ssid = "x".repeat(33);
        let cases = [
            (
                r#"{"ssid": "", "psk": "password1"}"#.to_string(),
                "network.wifi[0].ssid",
            ),
            (
                format!(r#"{{"ssid": "{long_ssid}", "psk": "password1"}}"#),
                "network.wifi[0].ssid",
            ),
            // 11 characters, 33 bytes.
            (
                r#"{"ssid": "ééééééééééééééééé", "psk": "password1"}"#.to_string(),
                "network.wifi[0].ssid",
            ),
            (
                r#"{"ssid": "a\u0007b", "psk": "password1"}"#.to_string(),
                "network.wifi[0].ssid",
            ),
            (
                r#"{"psk": "password1"}"#.to_string(),
                "network.wifi[0].ssid",
            ),
            (
                r#"{"ssid": "v", "psk": "seven77"}"#.to_string(),
                "network.wifi[0].psk",
            ),
            (
                format!(r#"{{"ssid": "v", "psk": "{}"}}"#, "p".repeat(64)),
                "network.wifi[0].psk",
            ),
            (
                format!(r#"{{"ssid": "v", "psk": "{}"}}"#, "a".repeat(65)),
                "network.wifi[0].psk",
            ),
            (
                r#"{"ssid": "v", "psk": "tab\there-secret"}"#.to_string(),
                "network.wifi[0].psk",
            ),
            (
                r#"{"ssid": "v", "psk": "ümlaut-secret"}"#.to_string(),
                "network.wifi[0].psk",
            ),
            (
                r#"{"ssid": "v", "psk": 12345678}"#.to_string(),
                "network.wifi[0].psk",
            ),
            (
                r#"{"ssid": "v", "sae_password": ""}"#.to_string(),
                "network.wifi[0].sae_password",
            ),
            (
                r#"{"ssid": "v", "psk": "password1", "sae_password": "password2"}"#.to_string(),
                "network.wifi[0]",
            ),
            (r#"{"ssid": "v"}"#.to_string(), "network.wifi[0]"),
            (
                r#"{"ssid": "v", "psk": "password1", "priority": 1001}"#.to_string(),
                "network.wifi[0].priority",
            ),
            (
                r#"{"ssid": "v", "psk": "password1", "channel": 6}"#.to_string(),
                "network.wifi[0].channel",
            ),
        ];
        for (entry, key) in cases {
            let text = with(&format!(r#"{{"network": {{"wifi": [{entry}]}}}}"#));
            let err = Config::parse(&text).unwrap_err();
            assert_eq!(err.key(), Some(key), "{entry}: {err}");
            let message = err.to_string();
            for secret in [
                "password1",
                "password2",
                "seven77",
                "here-secret",
                "mlaut-secret",
                "12345678",
                "ppppppppp",
                "aaaaaaaaa",
            ] {
                assert!(!message.contains(secret), "{entry}: {message}");
            }
        }
        let twice = r#"{"network": {"wifi": [{"ssid": "v", "psk": "password1"}, {"ssid": "v", "psk": "password2"}]}}"#;
        assert_eq!(refused_key(&with(twice)), "network.wifi[1].ssid");
        let many: Vec<String> = (0..=MAX_WIFI_NETWORKS)
            .map(|i| format!(r#"{{"ssid": "n{i}", "psk": "password1"}}"#))
            .collect();
        let many = format!(r#"{{"network": {{"wifi": [{}]}}}}"#, many.join(","));
        assert_eq!(refused_key(&with(&many)), "network.wifi");
    }

    #[test]
    fn the_country_is_an_iso_code() {
        assert_eq!(ISO_3166_ALPHA_2.split(' ').count(), 249);
        assert_eq!(
            parse(r#"{"network": {"wifi_country": "GB"}}"#)
                .network
                .wifi_country
                .as_deref(),
            Some("GB")
        );
        for bad in [r#""UK""#, r#""XX""#, r#""D""#, r#""DEU""#, r#""00""#, "49"] {
            let text = with(&format!(r#"{{"network": {{"wifi_country": {bad}}}}}"#));
            assert_eq!(refused_key(&text), "network.wifi_country", "{bad}");
        }
        let err = Config::parse(&with(r#"{"network": {"wifi_country": "uk"}}"#)).unwrap_err();
        assert!(err.to_string().contains("GB"), "{err}");
    }

    #[test]
    fn the_modem_section() {
        let c = parse(
            r#"{"network": {"modem": {"apn": "web.provider.com", "pin": "1234", "user": "u", "password": "pw-secret"}}}"#,
        );
        let m = c.network.modem.expect("modem");
        assert_eq!(m.apn, "web.provider.com");
        assert_eq!(m.pin.as_ref().map(Secret::expose), Some("1234"));
        assert_eq!(m.user.as_deref(), Some("u"));
        assert!(!format!("{m:?}").contains("pw-secret"));
        assert_eq!(
            parse(r#"{"network": {"modem": {"apn": "internet"}}}"#)
                .network
                .modem
                .map(|m| m.pin),
            Some(None)
        );
        for (modem, key) in [
            (r#"{}"#, "network.modem.apn"),
            (r#"{"apn": ""}"#, "network.modem.apn"),
            (r#"{"apn": "in ternet"}"#, "network.modem.apn"),
            (r#"{"apn": "a..b"}"#, "network.modem.apn"),
            (r#"{"apn": "internet", "pin": "12a4"}"#, "network.modem.pin"),
            (r#"{"apn": "internet", "pin": "123"}"#, "network.modem.pin"),
            (r#"{"apn": "internet", "pin": 4321}"#, "network.modem.pin"),
            (
                r#"{"apn": "internet", "password": "has\"quote"}"#,
                "network.modem.password",
            ),
            (r#"{"apn": "internet", "user": ""}"#, "network.modem.user"),
            (
                r#"{"apn": "internet", "roaming": true}"#,
                "network.modem.roaming",
            ),
        ] {
            let text = with(&format!(r#"{{"network": {{"modem": {modem}}}}}"#));
            let err = Config::parse(&text).unwrap_err();
            assert_eq!(err.key(), Some(key), "{modem}: {err}");
            for secret in ["4321", "has\"quote", "12a4"] {
                assert!(!err.to_string().contains(secret), "{modem}: {err}");
            }
        }
        let long = format!(
            r#"{{"network": {{"modem": {{"apn": "{}"}}}}}}"#,
            "a".repeat(101)
        );
        assert_eq!(refused_key(&with(&long)), "network.modem.apn");
    }
}
