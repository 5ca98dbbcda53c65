//! What wpa_supplicant's control socket says, read as the Wi-Fi facts `onair status` shows:
//! the network joined, the state (scanning, associating, connected, authentication failed),
//! the signal and the link rate.
//!
//! Pure: the answers to `STATUS` and `SIGNAL_POLL` and the event lines of an attached
//! monitor come in as text, a [`WifiStatus`] comes out. A wrong password is only ever said by
//! an event (`CTRL-EVENT-SSID-TEMP-DISABLED ... reason=WRONG_KEY`): wpa_supplicant goes on
//! scanning and retrying as if nothing happened, so the failure is remembered here until
//! the radio connects or its networks are read again.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A Wi-Fi interface's state. The names are a public contract (`onair status --json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WifiState {
    /// Looking for a network of the config (none in range yet, or between attempts).
    Scanning,
    /// Joining one: authentication, association, the key handshake.
    Associating,
    Connected,
    /// The last attempt was refused; `reason` says why (a wrong password, most often).
    AuthenticationFailed,
    /// Nothing to join: no Wi-Fi network in the config.
    Inactive,
    /// The radio is off (rfkill) or the interface disabled.
    Disabled,
    /// No wpa_supplicant answers for this interface.
    NoSupplicant,
}

impl WifiState {
    pub fn as_str(self) -> &'static str {
        match self {
            WifiState::Scanning => "scanning",
            WifiState::Associating => "associating",
            WifiState::Connected => "connected",
            WifiState::AuthenticationFailed => "authentication_failed",
            WifiState::Inactive => "inactive",
            WifiState::Disabled => "disabled",
            WifiState::NoSupplicant => "no_supplicant",
        }
    }
}

impl fmt::Display for WifiState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One Wi-Fi interface as `onair status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WifiStatus {
    pub state: WifiState,
    /// The network joined or being joined (printable; the radio's own text, escaped).
    pub ssid: Option<String>,
    /// Why the last attempt failed (`wrong password`), while `authentication_failed`.
    pub reason: Option<String>,
    /// Received signal strength, while connected.
    pub signal_dbm: Option<i32>,
    /// The link's transmit rate, while connected.
    pub rate_mbps: Option<u32>,
}

impl WifiStatus {
    pub fn no_supplicant() -> WifiStatus {
        WifiStatus {
            state: WifiState::NoSupplicant,
            ssid: None,
            reason: None,
            signal_dbm: None,
            rate_mbps: None,
        }
    }
}

/// The fields of a `STATUS` answer that matter here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub wpa_state: String,
    pub ssid: Option<String>,
}

/// The fields of a `SIGNAL_POLL` answer that matter here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignalPoll {
    pub rssi_dbm: Option<i32>,
    pub linkspeed_mbps: Option<u32>,
}

/// An event line of an attached monitor that changes what is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A network was put aside after failed attempts; `reason` as wpa_supplicant says it
    /// (`WRONG_KEY`, `AUTH_FAILED`, `CONN_FAILED`, ...).
    TempDisabled {
        ssid: Option<String>,
        reason: String,
    },
    Connected,
}

/// SSIDs are at most 32 bytes; escaped, at most four times that.
const MAX_SSID_TEXT: usize = 128;

/// `key=value` lines, as `STATUS` answers.
pub fn parse_status(text: &str) -> Status {
    let mut status = Status::default();
    for line in text.lines() {
        match line.split_once('=') {
            Some(("wpa_state", v)) => status.wpa_state = v.trim().to_string(),
            Some(("ssid", v)) => status.ssid = Some(ssid_text(v)),
            _ => {}
        }
    }
    status
}

/// `RSSI=-43`, `LINKSPEED=54` lines, as `SIGNAL_POLL` answers (`FAIL` when not connected).
pub fn parse_signal_poll(text: &str) -> SignalPoll {
    let mut poll = SignalPoll::default();
    for line in text.lines() {
        match line.split_once('=') {
            // wpa_supplicant prints -9999 when the driver does not know.
            Some(("RSSI", v)) => {
                poll.rssi_dbm = v
                    .trim()
                    .parse()
                    .ok()
                    .filter(|&d: &i32| (-150..=0).contains(&d))
            }
            Some(("LINKSPEED", v)) => {
                poll.linkspeed_mbps = v.trim().parse().ok().filter(|&r: &u32| r > 0)
            }
            _ => {}
        }
    }
    poll
}

/// An unsolicited message of an attached monitor (`<3>CTRL-EVENT-...`), if it is one of
/// those that matter.
pub fn parse_event(message: &str) -> Option<Event> {
    let line = message.trim_end();
    // The priority prefix: `<3>`.
    let line = match line.strip_prefix('<').and_then(|l| l.split_once('>')) {
        Some((_, rest)) => rest,
        None => line,
    };
    if line.starts_with("CTRL-EVENT-CONNECTED") {
        return Some(Event::Connected);
    }
    let rest = line.strip_prefix("CTRL-EVENT-SSID-TEMP-DISABLED ")?;
    let reason = field(rest, "reason=")
        .map(|r| r.split_whitespace().next().unwrap_or_default().to_string())?;
    let ssid = field(rest, "ssid=\"").and_then(|s| s.rfind('"').map(|end| ssid_text(&s[..end])));
    Some(Event::TempDisabled { ssid, reason })
}

/// The text after `key` in an event's fields.
fn field<'a>(fields: &'a str, key: &str) -> Option<&'a str> {
    let at = fields.find(key)?;
    // Only at the start of a field.
    if at > 0 && !fields[..at].ends_with(' ') {
        return None;
    }
    Some(&fields[at + key.len()..])
}

/// wpa_supplicant prints SSIDs escaped (`\\`, `\"`, `\e`, `\n`, `\r`, `\t`, `\xNN`): read
/// back into bytes and shown as printable text, bounded.
fn ssid_text(escaped: &str) -> String {
    let mut bytes = Vec::new();
    let mut chars = escaped.bytes().take(MAX_SSID_TEXT);
    while let Some(b) = chars.next() {
        if b != b'\\' {
            bytes.push(b);
            continue;
        }
        match chars.next() {
            Some(b'n') => bytes.push(b'\n'),
            Some(b'r') => bytes.push(b'\r'),
            Some(b't') => bytes.push(b'\t'),
            Some(b'e') => bytes.push(0x1b),
            Some(b'x') => {
                let hi = chars.next();
                let lo = chars.next();
                let parsed = hi.zip(lo).and_then(|(h, l)| {
                    u8::from_str_radix(std::str::from_utf8(&[h, l]).ok()?, 16).ok()
                });
                bytes.extend(parsed);
            }
            Some(other) => bytes.push(other),
            None => {}
        }
    }
    crate::secret::printable(&String::from_utf8_lossy(&bytes))
}

/// What a refusal means, for a person.
fn reason_text(reason: &str) -> String {
    match reason {
        "WRONG_KEY" => "wrong password".to_string(),
        "AUTH_FAILED" => "the access point refused the box".to_string(),
        "CONN_FAILED" => "the access point did not answer".to_string(),
        other => {
            let other: String = other.chars().take(32).collect();
            crate::secret::printable(&other.to_ascii_lowercase().replace('_', " "))
        }
    }
}

/// One interface's Wi-Fi facts over time: the last refusal, kept until the radio connects or
/// is told to read its networks again.
#[derive(Debug, Default)]
pub struct Tracker {
    failure: Option<(Option<String>, String)>,
}

impl Tracker {
    pub fn event(&mut self, event: &Event) {
        match event {
            Event::TempDisabled { ssid, reason } => {
                self.failure = Some((ssid.clone(), reason_text(reason)));
            }
            Event::Connected => self.failure = None,
        }
    }

    /// The networks were read again (the config changed): an old refusal says nothing of
    /// the new password.
    pub fn reconfigured(&mut self) {
        self.failure = None;
    }

    /// The status from a `STATUS` answer and, while connected, a `SIGNAL_POLL` one.
    pub fn status(&mut self, status: &Status, poll: Option<&SignalPoll>) -> WifiStatus {
        let mut state = match status.wpa_state.as_str() {
            "COMPLETED" => WifiState::Connected,
            "AUTHENTICATING" | "ASSOCIATING" | "ASSOCIATED" | "4WAY_HANDSHAKE"
            | "GROUP_HANDSHAKE" => WifiState::Associating,
            "INACTIVE" => WifiState::Inactive,
            "INTERFACE_DISABLED" => WifiState::Disabled,
            // SCANNING, DISCONNECTED, and anything newer.
            _ => WifiState::Scanning,
        };
        let mut ssid = status.ssid.clone();
        let mut reason = None;
        if state == WifiState::Connected {
            self.failure = None;
        } else if let Some((failed_ssid, why)) = &self.failure {
            state = WifiState::AuthenticationFailed;
            reason = Some(why.clone());
            ssid = failed_ssid.clone().or(ssid);
        }
        let connected = state == WifiState::Connected;
        let poll = poll.filter(|_| connected).copied().unwrap_or_default();
        WifiStatus {
            state,
            ssid,
            reason,
            signal_dbm: poll.rssi_dbm,
            rate_mbps: poll.linkspeed_mbps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // As wpa_supplicant 2.10 answers over hwsim (the emulated box's radios).
    const CONNECTED: &str = "bssid=02:00:00:00:01:00\nfreq=2412\nssid=onair-venue\nid=0\n\
        mode=station\nwifi_generation=4\npairwise_cipher=CCMP\ngroup_cipher=CCMP\n\
        key_mgmt=WPA2-PSK\nwpa_state=COMPLETED\nip_address=198.51.100.10\n\
        address=02:00:00:00:00:00\nuuid=0b1f0a1e-0000-5000-8000-000000000000\n";
    const SIGNAL: &str = "RSSI=-30\nLINKSPEED=54\nNOISE=9999\nFREQUENCY=2412\nWIDTH=20 MHz\n\
        CENTER_FRQ1=2412\nAVG_RSSI=-30\n";

    #[test]
    fn connected_with_signal_and_rate() {
        let mut t = Tracker::default();
        let s = t.status(&parse_status(CONNECTED), Some(&parse_signal_poll(SIGNAL)));
        assert_eq!(
            s,
            WifiStatus {
                state: WifiState::Connected,
                ssid: Some("onair-venue".into()),
                reason: None,
                signal_dbm: Some(-30),
                rate_mbps: Some(54),
            }
        );
        // A driver that does not know: nothing rather than -9999.
        let unknown = parse_signal_poll("RSSI=-9999\nLINKSPEED=0\n");
        assert_eq!(unknown, SignalPoll::default());
        assert_eq!(parse_signal_poll("FAIL\n"), SignalPoll::default());
    }

    #[test]
    fn states_by_wpa_state() {
        for (wpa_state, state) in [
            ("SCANNING", WifiState::Scanning),
            ("DISCONNECTED", WifiState::Scanning),
            ("AUTHENTICATING", WifiState::Associating),
            ("ASSOCIATING", WifiState::Associating),
            ("4WAY_HANDSHAKE", WifiState::Associating),
            ("GROUP_HANDSHAKE", WifiState::Associating),
            ("INACTIVE", WifiState::Inactive),
            ("INTERFACE_DISABLED", WifiState::Disabled),
            ("SOMETHING_NEW", WifiState::Scanning),
        ] {
            let text = format!("wpa_state={wpa_state}\naddress=02:00:00:00:00:00\n");
            let s =
                Tracker::default().status(&parse_status(&text), Some(&parse_signal_poll(SIGNAL)));
            assert_eq!(s.state, state, "{wpa_state}");
            // Signal and rate only while connected.
            assert_eq!((s.signal_dbm, s.rate_mbps), (None, None), "{wpa_state}");
        }
    }

    #[test]
    fn a_wrong_password_is_named_until_the_radio_connects_or_is_reconfigured() {
        let mut t = Tracker::default();
        let scanning = parse_status("wpa_state=SCANNING\n");
        let handshake = parse_status("wpa_state=4WAY_HANDSHAKE\nssid=onair-venue\n");
        let event = parse_event(
            "<3>CTRL-EVENT-SSID-TEMP-DISABLED id=0 ssid=\"onair-venue\" auth_failures=1 duration=10 reason=WRONG_KEY",
        )
        .expect("an event");
        assert_eq!(
            event,
            Event::TempDisabled {
                ssid: Some("onair-venue".into()),
                reason: "WRONG_KEY".into()
            }
        );
        t.event(&event);
        for status in [&scanning, &handshake] {
            let s = t.status(status, None);
            assert_eq!(s.state, WifiState::AuthenticationFailed);
            assert_eq!(s.reason.as_deref(), Some("wrong password"));
            assert_eq!(s.ssid.as_deref(), Some("onair-venue"));
        }
        // The config was corrected and read again: joining, then connected.
        t.reconfigured();
        assert_eq!(t.status(&handshake, None).state, WifiState::Associating);
        t.event(&event);
        assert_eq!(
            t.status(&handshake, None).state,
            WifiState::AuthenticationFailed
        );
        // Connected (by event or by state) clears it.
        t.event(&parse_event("<3>CTRL-EVENT-CONNECTED - Connection to 02:00:00:00:01:00 completed [id=0 id_str=]").expect("event"));
        assert_eq!(t.status(&scanning, None).state, WifiState::Scanning);
        t.event(&event);
        assert_eq!(
            t.status(&parse_status(CONNECTED), None).state,
            WifiState::Connected
        );
        assert_eq!(t.status(&scanning, None).state, WifiState::Scanning);
        // Other refusals in words.
        let other = parse_event("<3>CTRL-EVENT-SSID-TEMP-DISABLED id=1 ssid=\"x\" auth_failures=2 duration=20 reason=AUTH_FAILED").expect("event");
        t.event(&other);
        assert_eq!(
            t.status(&scanning, None).reason.as_deref(),
            Some("the access point refused the box")
        );
        let odd = parse_event(
            "<3>CTRL-EVENT-SSID-TEMP-DISABLED id=1 ssid=\"x\" reason=SOME_NEW_REASON\x1b[31m",
        )
        .expect("event");
        t.event(&odd);
        let reason = t.status(&scanning, None).reason.expect("reason");
        assert!(!reason.chars().any(char::is_control), "{reason:?}");
    }

    #[test]
    fn events_that_do_not_matter_and_odd_text() {
        assert_eq!(parse_event("<3>CTRL-EVENT-SCAN-STARTED "), None);
        assert_eq!(
            parse_event("<3>CTRL-EVENT-SSID-TEMP-DISABLED id=0 ssid=\"x\""),
            None
        );
        assert_eq!(parse_event("OK"), None);
        // Escaped SSIDs are shown as text, control characters escaped, bounded.
        let s = parse_status("wpa_state=COMPLETED\nssid=caf\\xc3\\xa9 \\\"q\\\" \\e[31m\n");
        assert_eq!(s.ssid.as_deref(), Some("café \"q\" \\u{1b}[31m"));
        let long = format!("ssid={}\n", "\\x41".repeat(200));
        assert!(parse_status(&long).ssid.expect("ssid").len() <= MAX_SSID_TEXT);
        // The field names must start a field: `bssid=` is not `ssid=`.
        let e = parse_event("<3>CTRL-EVENT-SSID-TEMP-DISABLED id=0 bssid=\"no\" reason=WRONG_KEY")
            .expect("event");
        assert_eq!(
            e,
            Event::TempDisabled {
                ssid: None,
                reason: "WRONG_KEY".into()
            }
        );
    }
}
