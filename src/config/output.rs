//! The `output` section: WHIP or RTMP, the server's URL and the token. The URL and token are
//! secrets: they are held as [`SecretUrl`] and [`Secret`], and a refusal never repeats them.
//! What the RTMP output would refuse at start-up is refused here first.

use super::ConfigError;
use crate::secret::{Secret, SecretUrl};
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq)]
pub enum OutputConfig {
    Whip {
        url: SecretUrl,
        token: Option<Secret>,
    },
    Rtmp {
        url: SecretUrl,
    },
}

impl OutputConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            OutputConfig::Whip { .. } => "whip",
            OutputConfig::Rtmp { .. } => "rtmp",
        }
    }

    pub fn url(&self) -> &SecretUrl {
        match self {
            OutputConfig::Whip { url, .. } | OutputConfig::Rtmp { url } => url,
        }
    }

    /// Host of the server, for the network monitor's "is there a route to it" question.
    pub fn host(&self) -> Option<String> {
        self.url().host()
    }
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum OutputKind {
    Whip,
    Rtmp,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutput {
    kind: OutputKind,
    url: Option<String>,
    token: Option<Secret>,
}

impl RawOutput {
    pub(super) fn validate(self) -> Result<OutputConfig, ConfigError> {
        let Some(url) = self.url else {
            return Err(ConfigError::invalid("output.url", "is missing"));
        };
        // URL parsing forgives these (it trims the ends and drops tabs); the RTMP output and
        // servers do not. A person never means them.
        if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(ConfigError::invalid(
                "output.url",
                "contains spaces or control characters",
            ));
        }
        let secret_segments = match self.kind {
            OutputKind::Whip => 0,
            OutputKind::Rtmp => 1,
        };
        // Never echo text that does not parse as a URL: it may be a key pasted in the wrong
        // place, and redaction needs a URL's shape to know what to hide.
        let parsed = reqwest::Url::parse(&url)
            .map_err(|e| ConfigError::invalid("output.url", format!("is not a valid URL ({e})")))?;
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(ConfigError::invalid("output.url", "has no host"));
        }
        // `user:password@` would go out as a second `Authorization` header beside the
        // token's, and a server that reads the first refuses the key.
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(ConfigError::invalid(
                "output.url",
                match self.kind {
                    OutputKind::Whip => {
                        "has user info (user:password@): remove it; the stream key goes in output.token"
                    }
                    OutputKind::Rtmp => {
                        "has user info (user:password@): remove it; the stream key goes at the end of the URL"
                    }
                },
            ));
        }
        // A scheme is named back only when it is short and plain, as a typo would be.
        let scheme = match parsed.scheme() {
            s if s.len() <= 8 && s.bytes().all(|b| b.is_ascii_lowercase()) => format!("`{s}`"),
            _ => "something else".to_string(),
        };
        match self.kind {
            OutputKind::Whip => {
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(ConfigError::invalid(
                        "output.url",
                        format!("a WHIP URL must be http or https, not {scheme}"),
                    ));
                }
                let token = match self.token {
                    Some(t) if t.is_empty() => {
                        return Err(ConfigError::invalid(
                            "output.token",
                            "is empty (omit the key for a server without auth)",
                        ));
                    }
                    Some(t) if t.expose().chars().any(|c| c.is_control() || c == ' ') => {
                        return Err(ConfigError::invalid(
                            "output.token",
                            "contains spaces or control characters",
                        ));
                    }
                    t => t,
                };
                Ok(OutputConfig::Whip {
                    url: SecretUrl::new(url, secret_segments),
                    token,
                })
            }
            OutputKind::Rtmp => {
                if !matches!(parsed.scheme(), "rtmp" | "rtmps") {
                    return Err(ConfigError::invalid(
                        "output.url",
                        format!("an RTMP URL must be rtmp or rtmps, not {scheme}"),
                    ));
                }
                if self.token.is_some() {
                    return Err(ConfigError::invalid(
                        "output.token",
                        "is not used by RTMP: put the stream key at the end of output.url",
                    ));
                }
                let segments = parsed
                    .path_segments()
                    .map(|s| s.filter(|p| !p.is_empty()).count())
                    .unwrap_or(0);
                if segments < 2 {
                    return Err(ConfigError::invalid(
                        "output.url",
                        "an RTMP URL needs an app and a stream key: rtmp://host/app/KEY",
                    ));
                }
                check_rtmp_split(&url).map_err(|reason| {
                    ConfigError::invalid(
                        "output.url",
                        format!("{reason}: {}", SecretUrl::new(&url, secret_segments)),
                    )
                })?;
                Ok(OutputConfig::Rtmp {
                    url: SecretUrl::new(url, secret_segments),
                })
            }
        }
    }
}

/// The RTMP output splits the URL's text itself (`scheme://authority/app/KEY`, the key being
/// everything after the last `/`); what that split refuses at start-up is refused here first,
/// so that a config the boot import installs never makes `run` exit. tests/config_fuzz.rs
/// checks that whatever this accepts, the output accepts.
fn check_rtmp_split(raw: &str) -> Result<(), &'static str> {
    let needs = "needs a host, an app and a stream key: rtmp://host/app/KEY";
    let (scheme, rest) = raw.split_once("://").ok_or(needs)?;
    if !matches!(scheme.to_ascii_lowercase().as_str(), "rtmp" | "rtmps") {
        return Err("the scheme must be rtmp or rtmps");
    }
    let (authority, path) = rest.split_once('/').ok_or(needs)?;
    if authority.contains('@') {
        return Err("user info (user:password@) is not supported");
    }
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or("bad host")?;
        match after {
            "" => host,
            p => {
                p.strip_prefix(':')
                    .and_then(|p| p.parse::<u16>().ok())
                    .ok_or("bad port")?;
                host
            }
        }
    } else {
        match authority.split_once(':') {
            None => authority,
            Some((host, port)) => {
                port.parse::<u16>().map_err(|_| "bad port")?;
                host
            }
        }
    };
    let (app, key) = path.rsplit_once('/').ok_or(needs)?;
    if host.is_empty() || app.is_empty() {
        return Err(needs);
    }
    if key.is_empty() {
        return Err("the stream key after the last `/` is empty (a `/` at the end?)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::config::test_support::{assert_refusals_name, refused_key};

    #[test]
    fn rtmp_needs_app_and_key_and_redacts_it() {
        let ok = r#"{"source": {"kind": "test"}, "output": {"kind": "rtmp", "url": "rtmp://127.0.0.1/live/key123"}}"#;
        let c = Config::parse(ok).unwrap();
        assert_eq!(c.output.url().to_string(), "rtmp://127.0.0.1/live/***");
        let no_key = r#"{"source": {"kind": "test"}, "output": {"kind": "rtmp", "url": "rtmp://127.0.0.1/live"}}"#;
        assert_eq!(refused_key(no_key), "output.url");
    }

    #[test]
    fn rtmp_urls_the_output_refuses_are_refused_here_without_the_key() {
        for url in [
            "rtmp://127.0.0.1/live/SECRETKEY/",
            "rtmp://user:pw@127.0.0.1/live/SECRETKEY",
            "rtmp://127.0.0.1:/live/SECRETKEY",
        ] {
            let text = format!(
                r#"{{"source": {{"kind": "test"}}, "output": {{"kind": "rtmp", "url": "{url}"}}}}"#
            );
            let err = Config::parse(&text).unwrap_err();
            assert_eq!(err.key(), Some("output.url"), "{url}: {err}");
            assert!(!err.to_string().contains("SECRETKEY"), "{url}: {err}");
            assert!(!err.to_string().contains("pw@"), "{url}: {err}");
        }
    }

    #[test]
    fn refusals_name_the_key() {
        assert_refusals_name(&[
            (r#"{"output": {"url": null}}"#, "output.url"),
            (r#"{"output": {"url": "ftp://x/y"}}"#, "output.url"),
            (r#"{"output": {"url": "not a url"}}"#, "output.url"),
            (r#"{"output": {"token": ""}}"#, "output.token"),
        ]);
    }

    #[test]
    fn user_info_in_a_whip_url_is_refused_without_repeating_it() {
        for url in [
            "http://user:pa55word@127.0.0.1/api/whip",
            "https://user@127.0.0.1/api/whip",
            "https://:pa55word@127.0.0.1/api/whip",
        ] {
            let text = format!(
                r#"{{"source": {{"kind": "test"}}, "output": {{"kind": "whip", "url": "{url}"}}}}"#
            );
            let err = Config::parse(&text).unwrap_err();
            assert_eq!(err.key(), Some("output.url"), "{url}: {err}");
            let message = err.to_string();
            assert!(message.contains("output.token"), "{url}: {message}");
            assert!(!message.contains("pa55word"), "{url}: {message}");
        }
    }
}
