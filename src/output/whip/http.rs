//! The HTTP half of WHIP (RFC 9725): POST the offer, DELETE the session, and what each server
//! answer means for the watchdog.
//!
//! Broadcast Box answers 201 with a *relative* `Location`, refuses a second publisher on a live
//! key with 400 "session already has a host" until the old session is DELETEd, and uses 401 for
//! a bad key. The resource URL is remembered on disk so a restarted daemon can DELETE the
//! session its previous life left behind.

use crate::lock::lock;
use crate::output::FailureClass;
use crate::secret::{Secret, SecretUrl};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Longest piece of a server's error body we repeat in a message.
const BODY_SNIPPET: usize = 160;

#[derive(Debug, thiserror::Error)]
pub enum WhipError {
    #[error("WHIP server answered {status}{detail}")]
    Status {
        status: StatusCode,
        detail: String,
        retry_after: Option<Duration>,
    },
    #[error("WHIP server answered {0} without a Location header")]
    NoLocation(StatusCode),
    #[error("WHIP server's Location header is not a usable URL")]
    BadLocation,
    #[error("WHIP server's answer is not an SDP answer: {0}")]
    NotSdp(String),
    #[error("cannot reach the WHIP server: {0}")]
    Http(String),
    #[error("WebRTC: {0}")]
    WebRtc(String),
    #[error("ICE/DTLS did not connect: {0}")]
    Transport(String),
    #[error("attempt cancelled")]
    Cancelled,
}

impl WhipError {
    /// What the watchdog should do about it. 401/403 mean the key is wrong: retrying cannot
    /// help. 429/503 may say when to come back. Everything else, including Broadcast Box's
    /// 400 "session already has a host" (the old session is still being torn down), follows the
    /// backoff.
    pub fn class(&self) -> FailureClass {
        match self {
            WhipError::Status {
                status,
                retry_after,
                ..
            } => match status.as_u16() {
                401 | 403 => FailureClass::Permanent,
                429 | 503 => match retry_after {
                    Some(d) => FailureClass::RetryAfter(*d),
                    None => FailureClass::Transient,
                },
                _ => FailureClass::Transient,
            },
            _ => FailureClass::Transient,
        }
    }
}

fn http_error(e: reqwest::Error) -> WhipError {
    // reqwest's message names the URL, which may carry a token in its query.
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    WhipError::Http(text)
}

/// `Retry-After` as delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A server's error body, trimmed to one printable line with the token blanked out.
fn snippet(body: &str, token: Option<&Secret>) -> String {
    let mut line: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(BODY_SNIPPET)
        .collect();
    if let Some(t) = token
        && !t.is_empty()
    {
        line = line.replace(t.expose(), crate::secret::REDACTED);
    }
    let line = line.trim();
    if line.is_empty() {
        String::new()
    } else {
        format!(": {line}")
    }
}

/// The WHIP endpoint and the session it may have left on the server.
pub struct WhipHttp {
    client: reqwest::Client,
    endpoint: Url,
    endpoint_display: String,
    token: Option<Secret>,
    remembered: Mutex<Option<Url>>,
    memory_file: Option<PathBuf>,
}

impl WhipHttp {
    pub fn new(
        endpoint: &SecretUrl,
        token: Option<Secret>,
        state_dir: &Path,
    ) -> Result<WhipHttp, WhipError> {
        // rustls needs its crypto provider chosen once per process (ring, so the box does not
        // carry aws-lc); a second install is refused harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // No idle connections kept: one opened over an uplink that is gone (or with its
            // old source address) would swallow the next DELETE or POST after a path switch.
            .pool_max_idle_per_host(0)
            .build()
            .map_err(http_error)?;
        let endpoint = Url::parse(endpoint.expose())
            .map_err(|e| WhipError::Http(format!("bad WHIP URL: {e}")))?;
        let memory_file = Some(state_dir.join("whip-resource"));
        let remembered = memory_file
            .as_deref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|s| Url::parse(s.trim()).ok());
        if let Some(r) = &remembered {
            log::info!(
                "whip: a previous run left session {} on the server; it will be deleted first",
                SecretUrl::new(r.as_str(), 0)
            );
        }
        Ok(WhipHttp {
            client,
            endpoint_display: SecretUrl::new(endpoint.as_str(), 0).redacted(),
            endpoint,
            token,
            remembered: Mutex::new(remembered),
            memory_file,
        })
    }

    pub fn endpoint_display(&self) -> &str {
        &self.endpoint_display
    }

    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.header(AUTHORIZATION, format!("Bearer {}", t.expose())),
            None => req,
        }
    }

    /// POSTs the offer; on 201 returns the answer SDP and the resource URL, which is also
    /// remembered (in memory and on disk) until it is deleted.
    pub async fn post_offer(&self, offer_sdp: String) -> Result<(String, Url), WhipError> {
        let req = self
            .client
            .post(self.endpoint.clone())
            .header(CONTENT_TYPE, "application/sdp")
            .body(offer_sdp);
        let resp = self.authorize(req).send().await.map_err(http_error)?;
        let status = resp.status();
        if status != StatusCode::CREATED {
            let retry_after = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            let body = resp.text().await.unwrap_or_default();
            return Err(WhipError::Status {
                status,
                detail: snippet(&body, self.token.as_ref()),
                retry_after,
            });
        }
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or(WhipError::NoLocation(status))?;
        // Broadcast Box sends a relative path; resolve it against the URL we posted to.
        let resource = self
            .endpoint
            .join(&location)
            .map_err(|_| WhipError::BadLocation)?;
        // Remember before anything else can fail, so the session is always cleaned up.
        self.remember(Some(resource.clone()));
        let body = resp.text().await.map_err(http_error)?;
        if !body.trim_start().starts_with("v=0") {
            return Err(WhipError::NotSdp(format!(
                "body starts with {:?}",
                body.chars().take(24).collect::<String>()
            )));
        }
        Ok((body, resource))
    }

    /// DELETEs the remembered session, if any, within `timeout`. Forgets it when the server
    /// confirms (2xx) or no longer knows it (404/410); keeps it for later otherwise.
    pub async fn delete_remembered(&self, timeout: Duration) {
        let Some(resource) = lock(&self.remembered).clone() else {
            return;
        };
        let req = self.authorize(self.client.delete(resource.clone()));
        let shown = SecretUrl::new(resource.as_str(), 0);
        match tokio::time::timeout(timeout, req.send()).await {
            Ok(Ok(resp))
                if resp.status().is_success() || matches!(resp.status().as_u16(), 404 | 410) =>
            {
                log::info!("whip: deleted session {shown} ({})", resp.status());
                self.forget(&resource);
            }
            Ok(Ok(resp)) => log::warn!("whip: DELETE {shown} answered {}", resp.status()),
            Ok(Err(e)) => log::warn!("whip: DELETE {shown} failed: {}", http_error(e)),
            Err(_) => log::warn!("whip: DELETE {shown} timed out after {timeout:?}"),
        }
    }

    pub fn remembered(&self) -> Option<Url> {
        lock(&self.remembered).clone()
    }

    fn forget(&self, resource: &Url) {
        let mut r = lock(&self.remembered);
        if r.as_ref() == Some(resource) {
            *r = None;
            drop(r);
            self.persist(None);
        }
    }

    fn remember(&self, resource: Option<Url>) {
        *lock(&self.remembered) = resource.clone();
        self.persist(resource.as_ref());
    }

    fn persist(&self, resource: Option<&Url>) {
        let Some(file) = &self.memory_file else {
            return;
        };
        let result = match resource {
            Some(url) => write_atomically(file, url.as_str()),
            None => match std::fs::remove_file(file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        };
        if let Err(e) = result {
            log::warn!(
                "whip: cannot record the session in {}: {e} (a restart may find the key busy)",
                file.display()
            );
        }
    }
}

fn write_atomically(file: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, retry_after: Option<Duration>) -> WhipError {
        WhipError::Status {
            status: StatusCode::from_u16(code).unwrap(),
            detail: String::new(),
            retry_after,
        }
    }

    #[test]
    fn rejected_key_is_permanent_everything_else_retries() {
        assert_eq!(status(401, None).class(), FailureClass::Permanent);
        assert_eq!(status(403, None).class(), FailureClass::Permanent);
        for code in [400, 404, 405, 500, 502, 503, 429] {
            assert_eq!(
                status(code, None).class(),
                FailureClass::Transient,
                "{code}"
            );
        }
        assert_eq!(
            status(503, Some(Duration::from_secs(3))).class(),
            FailureClass::RetryAfter(Duration::from_secs(3))
        );
        assert_eq!(
            WhipError::NoLocation(StatusCode::CREATED).class(),
            FailureClass::Transient
        );
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn error_bodies_never_echo_the_token() {
        let t = Secret::new("sk_live_42");
        let s = snippet("invalid key sk_live_42\n\tgo away", Some(&t));
        assert!(!s.contains("sk_live_42"), "{s}");
        assert!(s.contains("invalid key ***"), "{s}");
        assert_eq!(snippet("   ", None), "");
    }

    #[test]
    fn resource_is_remembered_across_instances() {
        let dir = tempfile::tempdir().unwrap();
        let url = SecretUrl::new("http://127.0.0.1:9/api/whip", 0);
        let a = WhipHttp::new(&url, None, dir.path()).unwrap();
        let r = Url::parse("http://127.0.0.1:9/api/whip/abc").unwrap();
        a.remember(Some(r.clone()));
        let b = WhipHttp::new(&url, None, dir.path()).unwrap();
        assert_eq!(b.remembered(), Some(r.clone()));
        b.forget(&r);
        let c = WhipHttp::new(&url, None, dir.path()).unwrap();
        assert_eq!(c.remembered(), None);
    }
}
