//! No secret and no control character in a refusal. A refused config has no typed form, so
//! the secrets it may hold (the token, the RTMP stream key, a URL's user info and query
//! values, the Wi-Fi passphrases, the SIM PIN and the modem password) are found in the text
//! itself and blanked out of every message; serde's messages, which quote the offending
//! value, lose the quotation first.

use super::ConfigError;

/// Secrets a refused config may hold: the token and the RTMP stream key (and, for any URL,
/// its user info and query values). Found in the text itself, since a refused config has no
/// typed form.
fn secrets_in(text: &str) -> Vec<String> {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    let output = &value["output"];
    let mut secrets = Vec::new();
    if let Some(url) = output["url"].as_str() {
        let before_fragment = url.split('#').next().unwrap_or(url);
        let (before_query, query) = match before_fragment.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (before_fragment, None),
        };
        if output["kind"].as_str() != Some("whip") {
            // RTMP: the key is the last path segment with text (the query belongs to it).
            if let Some(last) = before_query
                .split('/')
                .skip(3)
                .filter(|s| !s.is_empty())
                .last()
            {
                secrets.push(last.to_string());
                if let Some(q) = query {
                    secrets.push(format!("{last}?{q}"));
                }
            }
        }
        if let Some(q) = query {
            secrets.extend(
                q.split('&')
                    .filter_map(|pair| pair.split_once('=').map(|(_, v)| v.to_string())),
            );
        }
        if let Some((_, rest)) = before_query.split_once("://")
            && let Some((userinfo, _)) = rest.split('/').next().unwrap_or("").rsplit_once('@')
        {
            secrets.push(userinfo.to_string());
            if let Some((_, password)) = userinfo.split_once(':') {
                secrets.push(password.to_string());
            }
        }
    }
    // A query value like `1` would blank out ordinary words; such short values are kept out
    // of messages by never quoting values in the first place.
    secrets.retain(|s| s.len() >= 3);
    if let Some(token) = secret_text(&output["token"]).filter(|t| t.len() >= 2) {
        secrets.push(token);
    }
    let network = &value["network"];
    let mut fields: Vec<&serde_json::Value> = Vec::new();
    if let Some(networks) = network["wifi"].as_array() {
        for n in networks {
            fields.extend([&n["psk"], &n["sae_password"]]);
        }
    }
    fields.extend([&network["modem"]["pin"], &network["modem"]["password"]]);
    secrets.extend(
        fields
            .into_iter()
            .filter_map(secret_text)
            .filter(|s| s.len() >= 3),
    );
    secrets
}

/// A secret's text as serde would quote it: a string, or a number written without quotes (a
/// numeric PIN or passphrase, which serde's "invalid type" message repeats).
fn secret_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Last line of defence for every refusal of `text`: no secret of it, no control character.
pub(super) fn scrub_error(error: ConfigError, text: &str) -> ConfigError {
    let secrets = secrets_in(text);
    let clean = |s: &str| {
        crate::secret::printable(&crate::secret::scrub_all(
            s,
            secrets.iter().map(String::as_str),
        ))
    };
    match error {
        ConfigError::Invalid { key, message } => ConfigError::Invalid {
            key: clean(&key),
            message: clean(&message),
        },
        ConfigError::Syntax { path, message } => ConfigError::Syntax {
            path,
            message: clean(&message),
        },
        other => other,
    }
}

/// serde's messages quote the offending value; for a token that would print the secret.
pub(super) fn scrub_serde_message(message: &str) -> String {
    let (head, tail) = match message.find(" at line ") {
        Some(i) => message.split_at(i),
        None => (message, ""),
    };
    let head = match head.strip_prefix("unknown variant `") {
        Some(rest) => match rest.split_once('`') {
            Some((_, expected)) => format!("unknown value{expected}"),
            None => "unknown value".to_string(),
        },
        None => strip_quoted_values(head),
    };
    format!("{head}{tail}")
}

/// Replaces `invalid value: string "..."`-style quoted values so no user text is echoed.
fn strip_quoted_values(message: &str) -> String {
    match message.find("string \"") {
        Some(start) => {
            let after = &message[start + 8..];
            match after.find('"') {
                Some(end) => format!(
                    "{}string{}",
                    &message[..start],
                    strip_quoted_values(&after[end + 1..])
                ),
                None => message[..start].to_string() + "string",
            }
        }
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::config::test_support::with;

    #[test]
    fn errors_never_echo_the_token_or_key() {
        let bad_token = with(r#"{"output": {"token": 12345}}"#);
        let msg = Config::parse(&bad_token).unwrap_err().to_string();
        assert!(msg.contains("output.token"), "{msg}");
        let bad_kind = r#"{"source": {"kind": "test"}, "output": {"kind": "rtmp", "url": "http://h/app/SECRETKEY"}}"#;
        let msg = Config::parse(bad_kind).unwrap_err().to_string();
        assert!(!msg.contains("SECRETKEY"), "{msg}");
        let unknown_variant = with(r#"{"output": {"kind": "s3cret-key"}}"#);
        let msg = Config::parse(&unknown_variant).unwrap_err().to_string();
        assert!(!msg.contains("s3cret-key"), "{msg}");
        // A numeric token, PIN or passphrase, written without quotes, is quoted back by serde.
        for (patch, secret) in [
            (r#"{"output": {"token": 9876543}}"#, "9876543"),
            (
                r#"{"network": {"modem": {"apn": "internet", "pin": 4321}}}"#,
                "4321",
            ),
            (
                r#"{"network": {"wifi": [{"ssid": "v", "psk": 31415926}]}}"#,
                "31415926",
            ),
            (
                r#"{"network": {"wifi": [{"ssid": "v", "sae_password": 2718281}]}}"#,
                "2718281",
            ),
            (
                r#"{"network": {"modem": {"apn": "internet", "password": 55501234}}}"#,
                "55501234",
            ),
        ] {
            let msg = Config::parse(&with(patch)).unwrap_err().to_string();
            assert!(!msg.contains(secret), "{patch}: {msg}");
        }
        // A passphrase that a later refusal of another key happens to contain.
        let text = with(
            r#"{"network": {"wifi": [{"ssid": "v", "psk": "network.settle_ms"}], "settle_ms": -1}}"#,
        );
        let msg = Config::parse(&text).unwrap_err().to_string();
        assert!(!msg.contains("network.settle_ms"), "{msg}");
    }

    #[test]
    fn control_characters_never_reach_a_refusal() {
        let err = Config::parse(&with(r#"{"source": {"\u001b[31mred": 1}}"#)).unwrap_err();
        assert!(!err.to_string().chars().any(char::is_control), "{err:?}");
        let err = Config::parse("{\"source\": \u{1b}").unwrap_err();
        assert!(!err.to_string().chars().any(char::is_control), "{err:?}");
    }
}
