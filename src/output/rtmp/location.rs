//! Where an RTMP stream goes, split the way the server sees it, and how to keep its key out of
//! every message.
//!
//! The URL is split here rather than handed to `rtmp2sink`'s `location` property so that the
//! key only ever travels in the one property that sends it (`stream`), and so that the split
//! (app = everything between host and the last `/`, key = the rest, query included, as
//! GStreamer and OBS do it) is tested on its own. GStreamer's messages can still quote the
//! stream name or the URL, so every text that comes out of the branch goes through
//! [`Scrubber`] before anyone prints it.

use crate::secret::{REDACTED, SecretUrl};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Rtmp,
    Rtmps,
}

impl Scheme {
    /// The nick of rtmp2sink's `scheme` enum property.
    pub fn nick(self) -> &'static str {
        match self {
            Scheme::Rtmp => "rtmp",
            Scheme::Rtmps => "rtmps",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Rtmp => 1935,
            Scheme::Rtmps => 443,
        }
    }
}

/// An RTMP publish point. Its `Debug` never shows the stream key.
#[derive(Clone, PartialEq, Eq)]
pub struct Location {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// The application path, possibly with slashes (`live`, `app`, `live2`, `a/b`).
    pub app: String,
    /// The stream key (with any `?query` the service wants). Secret.
    key: String,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(
            f,
            "{}://{}:{}/{}/{REDACTED}",
            self.scheme.nick(),
            host,
            self.port,
            self.app
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("RTMP URL {url}: {reason}")]
pub struct LocationError {
    /// Redacted.
    pub url: String,
    pub reason: &'static str,
}

impl Location {
    pub fn parse(url: &SecretUrl) -> Result<Location, LocationError> {
        let raw = url.expose();
        let fail = |reason| LocationError {
            url: url.redacted(),
            reason,
        };
        let (scheme, rest) = raw
            .split_once("://")
            .ok_or_else(|| fail("needs a scheme: rtmp://host/app/KEY"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "rtmp" => Scheme::Rtmp,
            "rtmps" => Scheme::Rtmps,
            _ => return Err(fail("the scheme must be rtmp or rtmps")),
        };
        let (authority, path) = rest
            .split_once('/')
            .ok_or_else(|| fail("needs an app and a stream key: rtmp://host/app/KEY"))?;
        if authority.contains('@') {
            // rtmp2sink would take user:password from here, but nothing in the config
            // redacts them as secrets yet; refuse rather than leak them.
            return Err(fail("user info (user:password@) is not supported"));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| fail("bad host or port"))?;
        let (app, key) = path
            .rsplit_once('/')
            .ok_or_else(|| fail("needs an app and a stream key: rtmp://host/app/KEY"))?;
        if app.is_empty() || key.is_empty() || host.is_empty() {
            return Err(fail("needs a host, an app and a stream key"));
        }
        Ok(Location {
            scheme,
            port: port.unwrap_or(scheme.default_port()),
            host: host.to_string(),
            app: app.to_string(),
            key: key.to_string(),
        })
    }

    /// The key, for the one property that sends it to the server.
    pub fn expose_key(&self) -> &str {
        &self.key
    }
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            p => Some((host, Some(p.strip_prefix(':')?.parse().ok()?))),
        };
    }
    match authority.split_once(':') {
        None => Some((authority, None)),
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
    }
}

/// Removes the URL and the stream key from texts that came from GStreamer.
#[derive(Clone)]
pub struct Scrubber {
    /// (secret text, replacement), longest first so the full URL wins over the key in it.
    pairs: Vec<(String, String)>,
}

impl Scrubber {
    pub fn new(url: &SecretUrl, location: Option<&Location>) -> Scrubber {
        let mut pairs = vec![(url.expose().to_string(), url.redacted())];
        if let Some(l) = location {
            pairs.push((l.key.clone(), REDACTED.to_string()));
            // The key without its query (the server may echo just the stream name).
            if let Some((name, _)) = l.key.split_once('?')
                && !name.is_empty()
            {
                pairs.push((name.to_string(), REDACTED.to_string()));
            }
        }
        pairs.retain(|(secret, _)| !secret.is_empty());
        pairs.sort_by_key(|(secret, _)| std::cmp::Reverse(secret.len()));
        Scrubber { pairs }
    }

    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (secret, replacement) in &self.pairs {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), replacement);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Location, LocationError> {
        Location::parse(&SecretUrl::new(raw, 1))
    }

    #[test]
    fn splits_host_port_app_and_key() {
        let l = parse("rtmp://127.0.0.1:19350/live/key_1").unwrap();
        assert_eq!(l.scheme, Scheme::Rtmp);
        assert_eq!((l.host.as_str(), l.port), ("127.0.0.1", 19350));
        assert_eq!((l.app.as_str(), l.expose_key()), ("live", "key_1"));
    }

    #[test]
    fn default_ports_follow_the_scheme() {
        assert_eq!(
            parse("rtmp://a.rtmp.youtube.com/live2/k").unwrap().port,
            1935
        );
        let l = parse("rtmps://a.rtmps.youtube.com/live2/k").unwrap();
        assert_eq!((l.scheme, l.port), (Scheme::Rtmps, 443));
    }

    #[test]
    fn app_may_have_slashes_and_key_keeps_its_query() {
        let l = parse("rtmp://host/app/inner/live_123?bandwidthtest=true").unwrap();
        assert_eq!(l.app, "app/inner");
        assert_eq!(l.expose_key(), "live_123?bandwidthtest=true");
    }

    #[test]
    fn ipv6_hosts() {
        let l = parse("rtmp://[::1]:1936/live/k").unwrap();
        assert_eq!((l.host.as_str(), l.port), ("::1", 1936));
        assert_eq!(l.to_string(), "rtmp://[::1]:1936/live/***");
    }

    #[test]
    fn refusals_never_show_the_key() {
        for raw in [
            "rtmp://host/onlyapp",
            "rtmp://host:99999/live/SECRET",
            "rtmp://user:pw@host/live/SECRET",
            "http://host/live/SECRET",
            "rtmp://host/live/",
        ] {
            let e = parse(raw).unwrap_err();
            assert!(!e.to_string().contains("SECRET"), "{e}");
            assert!(!e.to_string().contains("pw"), "{e}");
        }
    }

    #[test]
    fn display_and_debug_are_redacted() {
        let l = parse("rtmp://host/live/SECRET").unwrap();
        assert_eq!(l.to_string(), "rtmp://host:1935/live/***");
        assert!(!format!("{l:?}").contains("SECRET"));
    }

    #[test]
    fn scrubber_removes_url_key_and_bare_stream_name() {
        let url = SecretUrl::new("rtmp://host/live/SECRET?x=1", 1);
        let l = Location::parse(&url).unwrap();
        let s = Scrubber::new(&url, Some(&l));
        assert_eq!(
            s.scrub("cannot publish to rtmp://host/live/SECRET?x=1"),
            "cannot publish to rtmp://host/live/***?x=***"
        );
        assert_eq!(
            s.scrub("publish denied: {\"description\": \"SECRET is busy\"}"),
            "publish denied: {\"description\": \"*** is busy\"}"
        );
        assert_eq!(s.scrub("stream 'SECRET?x=1'"), "stream '***'");
    }
}
