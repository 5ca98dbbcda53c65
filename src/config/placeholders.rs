//! What the shipped example says instead of real values: an example host, the placeholder
//! stream key. A separate check from parsing (`check-config` and the boot import make it,
//! `run` does not), so it lives apart from the validation every config gets.

use super::{Config, ConfigError, OutputConfig};

/// The stream key of the shipped `onair.json.example`.
pub const PLACEHOLDER_TOKEN: &str = "REPLACE-ME";

impl Config {
    /// Refuses a config that still carries a value of the shipped example where the box needs
    /// a real one: an example host in `output.url` (the reserved names of RFC 2606 and 6761,
    /// `example.invalid` in the example file), or the placeholder stream key `REPLACE-ME` (or a
    /// `<key>`-style one) in `output.token` or at the end of an RTMP URL. `check-config` (and so
    /// the first-boot import) refuses such a file: a card copied without editing must not
    /// replace a working config with one that streams nowhere. `run` still accepts it, because
    /// the image's own default config is the example.
    pub fn check_no_placeholders(&self) -> Result<(), ConfigError> {
        let url = self.output.url();
        if let Some(host) = url.host()
            && is_example_host(&host)
        {
            return Err(ConfigError::invalid(
                "output.url",
                format!(
                    "still names the example host {host}: set the address of your {} server",
                    self.output.kind().to_uppercase()
                ),
            ));
        }
        match &self.output {
            OutputConfig::Whip {
                token: Some(token), ..
            } if is_placeholder_key(token.expose()) => Err(ConfigError::invalid(
                "output.token",
                "is still the example's placeholder: put your stream key here",
            )),
            OutputConfig::Rtmp { url }
                if rtmp_key(url.expose()).is_some_and(is_placeholder_key) =>
            {
                Err(ConfigError::invalid(
                    "output.url",
                    "still ends in the example's placeholder stream key: put your stream key there",
                ))
            }
            _ => Ok(()),
        }
    }
}

/// Host names that can never be a real server: RFC 2606 / RFC 6761 reserve them for examples.
fn is_example_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let under = |domain: &str| host == domain || host.ends_with(&format!(".{domain}"));
    [
        "example.com",
        "example.net",
        "example.org",
        "example",
        "invalid",
    ]
    .iter()
    .any(|d| under(d))
}

fn is_placeholder_key(key: &str) -> bool {
    let key = key.trim();
    key.eq_ignore_ascii_case(PLACEHOLDER_TOKEN) || (key.starts_with('<') && key.ends_with('>'))
}

/// The stream key of an RTMP URL: its last path segment, before any query.
fn rtmp_key(url: &str) -> Option<&str> {
    let path = url.split(['?', '#']).next()?;
    let key = path.rsplit('/').next()?;
    (!key.is_empty()).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whip(url: &str, token: &str) -> Config {
        Config::parse(&format!(
            r#"{{"source": {{"kind": "test"}},
                "output": {{"kind": "whip", "url": "{url}", "token": "{token}"}}}}"#
        ))
        .expect("a valid config")
    }

    fn rtmp(url: &str) -> Config {
        Config::parse(&format!(
            r#"{{"source": {{"kind": "test"}}, "output": {{"kind": "rtmp", "url": "{url}"}}}}"#
        ))
        .expect("a valid config")
    }

    fn refused_key(c: &Config) -> Option<String> {
        c.check_no_placeholders()
            .err()
            .and_then(|e| e.key().map(str::to_string))
    }

    #[test]
    fn the_shipped_example_is_refused_naming_the_url_first() {
        let c = whip("https://example.invalid/api/whip", "REPLACE-ME");
        let e = c.check_no_placeholders().unwrap_err();
        assert_eq!(e.key(), Some("output.url"));
        assert_eq!(
            e.to_string(),
            "config key `output.url`: still names the example host example.invalid: set the \
             address of your WHIP server"
        );
    }

    #[test]
    fn a_real_url_with_the_placeholder_token_is_refused_naming_the_token() {
        for token in ["REPLACE-ME", "replace-me", "<stream-key>"] {
            let c = whip("https://live.broadcast.box/api/whip", token);
            assert_eq!(refused_key(&c).as_deref(), Some("output.token"), "{token}");
            let text = c.check_no_placeholders().unwrap_err().to_string();
            assert!(!text.contains(token), "the token is never printed: {text}");
        }
    }

    #[test]
    fn example_hosts_are_refused_real_ones_pass() {
        for url in [
            "https://broadcast.example.org/api/whip",
            "http://example.com/api/whip",
            "https://WHIP.EXAMPLE.NET./api/whip",
            "https://box.example/api/whip",
            "https://x.invalid/api/whip",
        ] {
            assert_eq!(
                refused_key(&whip(url, "k")).as_deref(),
                Some("output.url"),
                "{url}"
            );
        }
        for url in [
            "http://192.0.2.1:8080/api/whip",
            "https://example.com.evil.tld/api/whip",
            "https://myexample.com/api/whip",
            "https://broadcast.example-tv.de/api/whip",
        ] {
            assert_eq!(refused_key(&whip(url, "k")), None, "{url}");
        }
    }

    #[test]
    fn rtmp_placeholder_keys_are_refused() {
        assert_eq!(
            refused_key(&rtmp("rtmp://192.168.1.10/live/REPLACE-ME")).as_deref(),
            Some("output.url")
        );
        assert_eq!(
            refused_key(&rtmp("rtmp://a.rtmp.youtube.com/live2/<key>")).as_deref(),
            Some("output.url")
        );
        assert_eq!(
            refused_key(&rtmp("rtmps://a.rtmps.example.com:443/live2/abcd")).as_deref(),
            Some("output.url")
        );
        assert_eq!(
            refused_key(&rtmp("rtmp://192.168.1.10/live/abcd-1234")),
            None
        );
        let text = rtmp("rtmp://10.0.0.1/live/REPLACE-ME")
            .check_no_placeholders()
            .unwrap_err()
            .to_string();
        assert!(!text.contains("REPLACE-ME"), "{text}");
    }

    #[test]
    fn no_token_is_not_a_placeholder() {
        let c = Config::parse(
            r#"{"source": {"kind": "test"},
                "output": {"kind": "whip", "url": "http://192.0.2.1/api/whip"}}"#,
        )
        .unwrap();
        assert!(c.check_no_placeholders().is_ok());
    }
}
