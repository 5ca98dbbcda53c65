//! A modem's facts as ModemManager gives them (`mmcli -J`, JSON): which network interfaces
//! are its own, its state, the operator and the signal. Pure: JSON text in, facts out. Every
//! text from there is bounded and printable (an operator name is whatever the network sends).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One modem as `onair status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ModemStatus {
    /// ModemManager's state: `locked` (the SIM wants its PIN), `registered`, `connecting`,
    /// `connected`, `searching`, `disabled`, `failed`, ...
    pub state: Option<String>,
    pub operator: Option<String>,
    /// Signal quality, 0–100 %.
    pub signal_pct: Option<u8>,
    /// The radio technology in use (`lte`, `umts`, ...).
    pub access: Option<String>,
}

/// At most this many characters of any text ModemManager passes on.
const MAX_TEXT: usize = 64;

/// The modems' D-Bus paths from `mmcli -L -J`.
pub fn parse_list(json: &str) -> Vec<String> {
    let Ok(value) = serde_json::from_str::<Value>(json) else {
        return Vec::new();
    };
    value["modem-list"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .filter(|p| p.starts_with("/org/freedesktop/ModemManager1/Modem/"))
                .take(8)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// From `mmcli -m PATH -J`: the modem's network interfaces and its facts.
pub fn parse_modem(json: &str) -> Option<(Vec<String>, ModemStatus)> {
    let value: Value = serde_json::from_str(json).ok()?;
    let modem = &value["modem"];
    let generic = &modem["generic"];
    // `"ports": ["cdc-wdm0 (qmi)", "wwan0 (net)"]`
    let interfaces = generic["ports"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|p| p.strip_suffix(" (net)"))
        .map(str::to_string)
        .collect();
    let status = ModemStatus {
        state: text(&generic["state"]),
        operator: text(&modem["3gpp"]["operator-name"]),
        signal_pct: text(&generic["signal-quality"]["value"])
            .and_then(|v| v.parse::<u8>().ok())
            .filter(|&v| v <= 100),
        access: generic["access-technologies"]
            .as_array()
            .and_then(|a| a.iter().find_map(text)),
    };
    Some((interfaces, status))
}

/// mmcli's text for a value, `None` for its "--" (unknown) and empty strings.
fn text(value: &Value) -> Option<String> {
    let s = value.as_str()?.trim();
    if s.is_empty() || s == "--" {
        return None;
    }
    let s: String = s.chars().take(MAX_TEXT).collect();
    Some(crate::secret::printable(&s))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The shape of ModemManager 1.20's `mmcli -m 0 -J` (trimmed), as its documentation and
    // mmcli's output module write it.
    const QMI_MODEM: &str = r#"{"modem": {
        "3gpp": {"imei": "--", "operator-code": "26202", "operator-name": "Vodafone.de",
                 "registration-state": "home"},
        "dbus-path": "/org/freedesktop/ModemManager1/Modem/0",
        "generic": {
            "access-technologies": ["lte"],
            "ports": ["cdc-wdm0 (qmi)", "ttyUSB0 (at)", "wwan0 (net)"],
            "primary-port": "cdc-wdm0",
            "signal-quality": {"recent": "yes", "value": "73"},
            "state": "connected",
            "unlock-required": "--"
        }
    }}"#;

    #[test]
    fn a_modem_and_its_interface() {
        let (interfaces, status) = parse_modem(QMI_MODEM).expect("parsed");
        assert_eq!(interfaces, ["wwan0"]);
        assert_eq!(
            status,
            ModemStatus {
                state: Some("connected".into()),
                operator: Some("Vodafone.de".into()),
                signal_pct: Some(73),
                access: Some("lte".into()),
            }
        );
        assert_eq!(
            parse_list(
                r#"{"modem-list": ["/org/freedesktop/ModemManager1/Modem/0", "/elsewhere/1", 7]}"#
            ),
            ["/org/freedesktop/ModemManager1/Modem/0"]
        );
        assert!(parse_list(r#"{"modem-list": []}"#).is_empty());
        assert!(parse_list("not json").is_empty());
    }

    #[test]
    fn unknown_and_odd_values() {
        let locked = r#"{"modem": {"3gpp": {"operator-name": "--"}, "generic": {
            "ports": ["cdc-wdm0 (mbim)", "wwan0 (net)"], "state": "locked",
            "signal-quality": {"value": "0"}, "access-technologies": []}}}"#;
        let (_, status) = parse_modem(locked).expect("parsed");
        assert_eq!(status.state.as_deref(), Some("locked"));
        assert_eq!(
            (status.operator, status.signal_pct, status.access),
            (None, Some(0), None)
        );
        let hostile = format!(
            r#"{{"modem": {{"3gpp": {{"operator-name": "\u001b[2J{}"}}, "generic": {{"ports": [], "signal-quality": {{"value": "250"}}}}}}}}"#,
            "x".repeat(500)
        );
        let (interfaces, status) = parse_modem(&hostile).expect("parsed");
        assert!(interfaces.is_empty());
        let operator = status.operator.expect("operator");
        assert!(
            !operator.chars().any(char::is_control) && operator.len() < 80,
            "{operator}"
        );
        assert_eq!(status.signal_pct, None);
        assert_eq!(parse_modem("{}"), None);
    }
}
