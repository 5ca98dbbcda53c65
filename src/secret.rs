//! Secrets (stream keys, bearer tokens) and URLs that may carry them.
//!
//! The box prints its configuration, errors and status for people over SSH; none of those may
//! ever show a stream key. Wrapping the value in a type whose `Debug`/`Display` are redacted makes
//! the safe thing the default: the only way to the raw text is `expose()`, called where the
//! secret is sent to the server.

use serde::{Deserialize, Deserializer};
use std::fmt;

/// Replacement text shown wherever a secret would have been printed.
pub const REDACTED: &str = "***";

/// A value that must never be printed.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The raw value, for the one place that sends it to the server.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `text` with this secret replaced by [`REDACTED`] wherever a server could have echoed it:
    /// as it is, and percent-encoded (as it appears in a URL).
    pub fn scrub(&self, text: &str) -> String {
        scrub_all(text, [self.0.as_str()])
    }
}

/// Replaces each secret (as it is and percent-encoded, upper or lower case hex) by
/// [`REDACTED`]. Longest first, so a secret that contains another is removed whole.
pub fn scrub_all<'a>(text: &str, secrets: impl IntoIterator<Item = &'a str>) -> String {
    let mut forms: Vec<String> = Vec::new();
    for s in secrets.into_iter().filter(|s| !s.is_empty()) {
        let upper = percent_encode(s, false);
        let lower = percent_encode(s, true);
        forms.push(s.to_string());
        forms.push(upper);
        forms.push(lower);
    }
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms.dedup();
    let mut out = text.to_string();
    for f in &forms {
        if out.contains(f.as_str()) {
            out = out.replace(f.as_str(), REDACTED);
        }
    }
    out
}

/// Every byte outside RFC 3986's unreserved set as `%XX`.
fn percent_encode(s: &str, lower_hex: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else if lower_hex {
            out.push_str(&format!("%{b:02x}"));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `text` as one printable line: control characters (newlines, escape sequences, NUL) are
/// shown escaped, so a server or a file cannot forge log lines or drive the terminal.
pub fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// A URL that may carry a secret: RTMP stream keys live in the last path segment, and some
/// WHIP servers take a token in the query string or in user info. Printing goes through
/// [`redact_url`]; the raw text only through `expose()`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl {
    raw: String,
    /// How many trailing path segments are secret (1 for `rtmp://host/app/KEY`, 0 for WHIP).
    secret_segments: usize,
}

impl SecretUrl {
    pub fn new(raw: impl Into<String>, secret_segments: usize) -> Self {
        SecretUrl {
            raw: raw.into(),
            secret_segments,
        }
    }

    pub fn expose(&self) -> &str {
        &self.raw
    }

    pub fn redacted(&self) -> String {
        redact_url(&self.raw, self.secret_segments)
    }

    /// The server's host (an IPv6 literal without brackets), which is never secret: what the
    /// network monitor asks a route for and what a WHIP peer binds its sockets towards.
    /// The port, given or the scheme's (80 for http, 443 for https).
    pub fn port(&self) -> Option<u16> {
        reqwest::Url::parse(&self.raw)
            .ok()
            .and_then(|u| u.port_or_known_default())
    }

    pub fn host(&self) -> Option<String> {
        reqwest::Url::parse(&self.raw)
            .ok()
            .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_string()))
            .filter(|h| !h.is_empty())
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Redacts user info, every query value and the last `secret_segments` path segments of a URL.
///
/// Works on text rather than a parsed URL so that even a URL that fails to parse is printed
/// safely (the error message for a bad URL must not leak the key either).
pub fn redact_url(raw: &str, secret_segments: usize) -> String {
    let (before_fragment, _) = raw.split_once('#').unwrap_or((raw, ""));
    let (before_query, query) = match before_fragment.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (before_fragment, None),
    };
    let (scheme, rest) = match before_query.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, before_query),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("{REDACTED}@{host}"),
        None => authority.to_string(),
    };
    let mut segments: Vec<&str> = path.split('/').collect();
    // The last `secret_segments` segments that have text are secret, and so is anything after
    // them: `rtmp://host/app/KEY/` must not show KEY because of the slash after it.
    let mut to_hide = secret_segments;
    for seg in segments.iter_mut().skip(1).rev() {
        if to_hide == 0 {
            break;
        }
        if !seg.is_empty() {
            *seg = REDACTED;
            to_hide -= 1;
        }
    }
    let mut out = String::new();
    if let Some(s) = scheme {
        out.push_str(s);
        out.push_str("://");
    }
    out.push_str(&authority);
    out.push_str(&segments.join("/"));
    if let Some(q) = query {
        let redacted: Vec<String> = q
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) => format!("{k}={REDACTED}"),
                None => pair.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&redacted.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints_its_value() {
        let s = Secret::new("live_abc123");
        assert_eq!(format!("{s}"), REDACTED);
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(s.expose(), "live_abc123");
    }

    #[test]
    fn rtmp_key_is_redacted() {
        assert_eq!(
            redact_url("rtmp://live.twitch.tv/app/live_123_abc", 1),
            "rtmp://live.twitch.tv/app/***"
        );
    }

    #[test]
    fn query_values_and_userinfo_are_redacted() {
        assert_eq!(
            redact_url("https://user:pw@host:8080/api/whip?token=abc&x", 0),
            "https://***@host:8080/api/whip?token=***&x"
        );
    }

    #[test]
    fn whip_path_is_kept() {
        assert_eq!(
            redact_url("http://127.0.0.1:8080/api/whip", 0),
            "http://127.0.0.1:8080/api/whip"
        );
    }

    #[test]
    fn a_trailing_slash_does_not_uncover_the_key() {
        assert_eq!(
            redact_url("rtmp://host/app/KEY/", 1),
            "rtmp://host/app/***/"
        );
        assert_eq!(
            redact_url("rtmp://host/app/KEY//", 1),
            "rtmp://host/app/***//"
        );
    }

    #[test]
    fn scrub_removes_plain_and_percent_encoded_forms() {
        let s = Secret::new("key with/slash");
        assert_eq!(
            s.scrub("a key with/slash b key%20with%2Fslash c key%20with%2fslash"),
            "a *** b *** c ***"
        );
        assert_eq!(Secret::new("").scrub("unchanged"), "unchanged");
    }

    #[test]
    fn printable_escapes_control_characters() {
        assert_eq!(printable("plain text"), "plain text");
        assert_eq!(
            printable("line\nforged\u{1b}[31m"),
            "line\\nforged\\u{1b}[31m"
        );
    }

    #[test]
    fn short_paths_do_not_panic() {
        assert_eq!(redact_url("rtmp://host", 1), "rtmp://host");
        assert_eq!(redact_url("rtmp://host/", 1), "rtmp://host/");
        assert_eq!(redact_url("garbage", 1), "garbage");
    }
}
