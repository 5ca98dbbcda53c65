//! The HTTP half of WHIP (RFC 9725): POST the offer, DELETE the session, and what each server
//! answer means for the watchdog.
//!
//! Broadcast Box answers 201 with a *relative* `Location`, refuses a second publisher on a live
//! key with 400 "session already has a host" until the old session is DELETEd, and uses 401 for
//! a bad key. The resource URL is remembered on disk so a restarted daemon can DELETE the
//! session its previous life left behind.
//!
//! The server is not trusted beyond its origin: the token goes only to the origin of the
//! configured URL (a session placed anywhere else is refused and never contacted), every body
//! is read under a size and a time limit, every text the server sends is scrubbed of the token
//! and of control characters before anyone logs or shows it, and the file that remembers the
//! session is read and written without following links or waiting on FIFOs.

use crate::clock::TlsRefusal;
use crate::clock::rule::certificate_refusal;
use crate::lock::lock;
use crate::output::FailureClass;
use crate::secret::{Secret, SecretUrl};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Longest piece of a server's error body we repeat in a message.
const BODY_SNIPPET: usize = 160;
/// Longest server-provided URL we repeat in a message.
const URL_SNIPPET: usize = 200;
/// An SDP answer is a few KiB (Broadcast Box: about 1.5 KiB with its candidates); more than
/// this is not an answer and ends the attempt.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Of an error body only the first line is shown; the rest is not read.
pub const MAX_ERROR_BODY_BYTES: usize = 4 * 1024;
/// Once the headers are in, the answer must arrive within this.
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(5);
/// An error body is only decoration: the status says what happened.
const ERROR_BODY_DEADLINE: Duration = Duration::from_secs(1);
/// The remembered-session file holds two URLs.
pub const MAX_SESSION_FILE_BYTES: u64 = 4 * 1024;
/// Name of the remembered-session file in `state_dir`.
pub const SESSION_FILE: &str = "whip-resource";

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
    #[error(
        "WHIP server put the session on another origin ({foreign}); the token is only sent to \
         {configured}, so the box refuses the session (point output.url at that server)"
    )]
    ForeignLocation { foreign: String, configured: String },
    #[error("WHIP server's answer is not an SDP answer: {0}")]
    NotSdp(String),
    #[error("WHIP server's answer is larger than {MAX_ANSWER_BYTES} bytes: not an SDP answer")]
    AnswerTooLarge,
    #[error("WHIP server's answer did not arrive within {} s of its headers", ANSWER_DEADLINE.as_secs())]
    AnswerTooSlow,
    #[error("WHIP server's answer has no video the box can send: {0}")]
    NoUsableVideo(String),
    #[error("cannot reach the WHIP server: {0}")]
    Http(String),
    /// The TLS handshake refused the server's certificate (the box's clock may be behind it).
    #[error("cannot reach the WHIP server: {text}")]
    Certificate { refusal: TlsRefusal, text: String },
    #[error("WebRTC: {0}")]
    WebRtc(String),
    #[error("ICE/DTLS did not connect: {0}")]
    Transport(String),
    #[error("attempt cancelled")]
    Cancelled,
}

impl WhipError {
    /// How the TLS handshake refused the server's certificate, if that is what happened.
    pub fn certificate_refusal(&self) -> Option<TlsRefusal> {
        match self {
            WhipError::Certificate { refusal, .. } => Some(*refusal),
            _ => None,
        }
    }

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
            // The server will answer the same way next time: only a config change (or a
            // change on the server, with `onair retry`) helps.
            WhipError::ForeignLocation { .. } | WhipError::NoUsableVideo(_) => {
                FailureClass::Permanent
            }
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
    match certificate_refusal(&e) {
        Some(refusal) => WhipError::Certificate { refusal, text },
        None => WhipError::Http(text),
    }
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

/// A server's error body, trimmed to one printable line with every secret blanked out. The
/// secrets go first, so a cut cannot leave half a token behind.
fn snippet(body: &str, scrub: &Scrub) -> String {
    let clean = scrub.secrets(body);
    let line: String = clean
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(BODY_SNIPPET)
        .collect();
    let line = line.trim();
    if line.is_empty() {
        String::new()
    } else {
        format!(": {line}")
    }
}

/// What must never be repeated from a server's text: the token, and the secrets the configured
/// URL may carry (user info, query values).
#[derive(Clone, Default)]
struct Scrub {
    secrets: Vec<String>,
}

impl Scrub {
    fn new(token: Option<&Secret>, endpoint: &Url) -> Scrub {
        let mut secrets: Vec<String> = endpoint
            .query_pairs()
            .map(|(_, v)| v.into_owned())
            .filter(|v| v.len() >= 3)
            .collect();
        if let Some(p) = endpoint.password() {
            secrets.push(p.to_string());
        }
        if !endpoint.username().is_empty() {
            secrets.push(endpoint.username().to_string());
        }
        if let Some(t) = token {
            secrets.push(t.expose().to_string());
        }
        secrets.retain(|s| !s.is_empty());
        Scrub { secrets }
    }

    /// The secrets blanked out; control characters left alone.
    fn secrets(&self, text: &str) -> String {
        crate::secret::scrub_all(text, self.secrets.iter().map(String::as_str))
    }

    /// Safe to log: no secret, no control character.
    fn line(&self, text: &str) -> String {
        crate::secret::printable(&self.secrets(text))
    }

    /// A URL from the server (or built from what it said), redacted and shortened for a log.
    fn url(&self, url: &str) -> String {
        let shown = self.line(&SecretUrl::new(url, 0).redacted());
        shorten(&shown, URL_SNIPPET)
    }
}

fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// Why a body was not read whole.
enum BodyError {
    TooLarge,
    TooSlow,
    Http(reqwest::Error),
}

/// Reads a body of at most `limit` bytes within `deadline`, chunk by chunk, so a server that
/// sends without end costs at most `limit` bytes of memory. On `TooLarge`/`TooSlow` the bytes
/// read so far are in `into`.
async fn read_body(
    resp: &mut reqwest::Response,
    limit: usize,
    deadline: Duration,
    into: &mut Vec<u8>,
) -> Result<(), BodyError> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let read = async {
        while let Some(chunk) = resp.chunk().await.map_err(BodyError::Http)? {
            let room = limit - into.len();
            if chunk.len() > room {
                into.extend_from_slice(&chunk[..room]);
                return Err(BodyError::TooLarge);
            }
            into.extend_from_slice(&chunk);
        }
        Ok(())
    };
    match tokio::time::timeout(deadline, read).await {
        Ok(result) => result,
        Err(_) => Err(BodyError::TooSlow),
    }
}

/// Checks the answer before it is applied: it must keep a video section and settle on H.264,
/// the only codec the box sends. Otherwise the peer connection would wait out the attempt's
/// deadline for media that can never flow.
fn check_answer(sdp: &str, scrub: &Scrub) -> Result<(), WhipError> {
    use rtc::sdp::SessionDescription;
    let parsed = SessionDescription::try_from(sdp.to_string())
        .map_err(|e| WhipError::NotSdp(shorten(&scrub.line(&e.to_string()), BODY_SNIPPET)))?;
    let videos: Vec<_> = parsed
        .media_descriptions
        .iter()
        .filter(|m| m.media_name.media.eq_ignore_ascii_case("video"))
        .collect();
    if videos.is_empty() {
        return Err(WhipError::NoUsableVideo(
            "the answer has no video section".into(),
        ));
    }
    let accepted: Vec<_> = videos
        .iter()
        .filter(|m| m.media_name.port.value != 0)
        .collect();
    if accepted.is_empty() {
        return Err(WhipError::NoUsableVideo(
            "the server rejected the video section (port 0)".into(),
        ));
    }
    let mut names: Vec<String> = Vec::new();
    for m in accepted {
        let codecs = m.codecs();
        for format in &m.media_name.formats {
            let Ok(pt) = format.parse::<u8>() else {
                continue;
            };
            let Some(codec) = codecs.get(&pt) else {
                continue;
            };
            if codec.name.eq_ignore_ascii_case("H264") {
                return Ok(());
            }
            let name = shorten(&scrub.line(&codec.name), 16);
            if !names.contains(&name) && names.len() < 5 {
                names.push(name);
            }
        }
    }
    let offered = if names.is_empty() {
        "no codec".to_string()
    } else {
        names.join(", ")
    };
    Err(WhipError::NoUsableVideo(format!(
        "it accepts only {offered} for video; the box sends H.264"
    )))
}

/// The WHIP endpoint and the session it may have left on the server.
pub struct WhipHttp {
    client: reqwest::Client,
    endpoint: Url,
    endpoint_display: String,
    token: Option<Secret>,
    scrub: Scrub,
    remembered: Mutex<Option<Url>>,
    memory_file: Option<PathBuf>,
}

/// The remembered-session file: the session and the origin it was created on (the configured
/// origin at the time), so that a box pointed at another server never cleans up there.
#[derive(serde::Serialize, serde::Deserialize)]
struct SessionRecord {
    origin: String,
    resource: String,
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
        let scrub = Scrub::new(token.as_ref(), &endpoint);
        let memory_file = Some(state_dir.join(SESSION_FILE));
        let remembered = memory_file
            .as_deref()
            .and_then(|f| recall(f, &endpoint, &scrub));
        if let Some(r) = &remembered {
            log::info!(
                "whip: a previous run left session {} on the server; it will be deleted first",
                scrub.url(r.as_str())
            );
        }
        Ok(WhipHttp {
            client,
            endpoint_display: SecretUrl::new(endpoint.as_str(), 0).redacted(),
            endpoint,
            token,
            scrub,
            remembered: Mutex::new(remembered),
            memory_file,
        })
    }

    /// The configured URL (secrets and all: only its origin may leave this module).
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    pub fn endpoint_display(&self) -> &str {
        &self.endpoint_display
    }

    /// `text` (a server's words, or an error built from them) safe to log or show: without
    /// the token or the URL's secrets, on one line.
    pub fn scrub(&self, text: &str) -> String {
        self.scrub.line(text)
    }

    /// A resource URL as it may be logged.
    pub fn show(&self, resource: &Url) -> String {
        self.scrub.url(resource.as_str())
    }

    /// Whether `url` is on the configured origin: the only place the token may go.
    fn is_home(&self, url: &Url) -> bool {
        url.origin() == self.endpoint.origin()
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
        let mut resp = self.authorize(req).send().await.map_err(http_error)?;
        let status = resp.status();
        if status != StatusCode::CREATED {
            let retry_after = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            // Best effort: whatever of the first few KiB arrives in time.
            let mut body = Vec::new();
            let _ = read_body(
                &mut resp,
                MAX_ERROR_BODY_BYTES,
                ERROR_BODY_DEADLINE,
                &mut body,
            )
            .await;
            return Err(WhipError::Status {
                status,
                detail: snippet(&String::from_utf8_lossy(&body), &self.scrub),
                retry_after,
            });
        }
        let location = match resp.headers().get(LOCATION) {
            None => return Err(WhipError::NoLocation(status)),
            Some(v) => v.to_str().map_err(|_| WhipError::BadLocation)?.to_owned(),
        };
        // Broadcast Box sends a relative path; resolve it against the URL that answered.
        let resource = resp
            .url()
            .join(&location)
            .map_err(|_| WhipError::BadLocation)?;
        if !self.is_home(&resource) {
            // Never contacted, never remembered: the session stays on the server until its
            // ICE times out, which is the price of not handing the token to a stranger.
            return Err(WhipError::ForeignLocation {
                foreign: self.scrub.url(&resource.origin().ascii_serialization()),
                configured: self.endpoint.origin().ascii_serialization(),
            });
        }
        // Remember before anything else can fail, so the session is always cleaned up.
        self.remember(Some(resource.clone()));
        let mut body = Vec::new();
        match read_body(&mut resp, MAX_ANSWER_BYTES, ANSWER_DEADLINE, &mut body).await {
            Ok(()) => {}
            Err(BodyError::TooLarge) => return Err(WhipError::AnswerTooLarge),
            Err(BodyError::TooSlow) => return Err(WhipError::AnswerTooSlow),
            Err(BodyError::Http(e)) => return Err(self.scrubbed(http_error(e))),
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        if !body.trim_start().starts_with("v=0") {
            let start: String = self.scrub.secrets(&body).chars().take(24).collect();
            return Err(WhipError::NotSdp(format!("body starts with {start:?}")));
        }
        check_answer(&body, &self.scrub)?;
        Ok((body, resource))
    }

    fn scrubbed(&self, e: WhipError) -> WhipError {
        match e {
            WhipError::Http(text) => WhipError::Http(self.scrub.line(&text)),
            WhipError::Certificate { refusal, text } => WhipError::Certificate {
                refusal,
                text: self.scrub.line(&text),
            },
            other => other,
        }
    }

    /// DELETEs the remembered session, if any, within `timeout`. Forgets it when the server
    /// confirms (2xx) or no longer knows it (404/410); keeps it for later otherwise.
    pub async fn delete_remembered(&self, timeout: Duration) {
        let Some(resource) = lock(&self.remembered).clone() else {
            return;
        };
        let shown = self.scrub.url(resource.as_str());
        if !self.is_home(&resource) {
            // Cannot happen (only sessions on the configured origin are remembered), but the
            // token must not depend on that.
            log::warn!("whip: not deleting session {shown}: it is not on the configured origin");
            self.forget(&resource);
            return;
        }
        let req = self.authorize(self.client.delete(resource.clone()));
        match tokio::time::timeout(timeout, req.send()).await {
            Ok(Ok(resp))
                if resp.status().is_success() || matches!(resp.status().as_u16(), 404 | 410) =>
            {
                log::info!("whip: deleted session {shown} ({})", resp.status());
                self.forget(&resource);
            }
            Ok(Ok(resp)) => log::warn!("whip: DELETE {shown} answered {}", resp.status()),
            Ok(Err(e)) => log::warn!(
                "whip: DELETE {shown} failed: {}",
                self.scrubbed(http_error(e))
            ),
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
            Some(url) => serde_json::to_vec(&SessionRecord {
                origin: self.endpoint.origin().ascii_serialization(),
                resource: url.to_string(),
            })
            .map_err(std::io::Error::other)
            .and_then(|bytes| write_atomically(file, &bytes)),
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

/// The session a previous run remembered, if the file is one we wrote and the session is on
/// the configured origin. Anything else is logged, removed and ignored: a FIFO is not waited
/// on, a link not followed, a large file not read.
fn recall(file: &Path, endpoint: &Url, scrub: &Scrub) -> Option<Url> {
    let record = match read_session_file(file) {
        Ok(None) => return None,
        Ok(Some(record)) => record,
        Err(why) => {
            log::warn!(
                "whip: ignoring {}: {why}; a session a previous run left on the server is not deleted",
                file.display()
            );
            let _ = std::fs::remove_file(file);
            return None;
        }
    };
    let resource = Url::parse(&record.resource).ok();
    let home = endpoint.origin();
    match resource {
        Some(r) if record.origin == home.ascii_serialization() && r.origin() == home => Some(r),
        _ => {
            log::info!(
                "whip: the session a previous run remembered ({}) is not on the configured \
                 origin {}; it is left alone (the token is only sent to the configured server)",
                scrub.url(&record.resource),
                home.ascii_serialization()
            );
            let _ = std::fs::remove_file(file);
            None
        }
    }
}

/// `Ok(None)` when there is no file.
fn read_session_file(file: &Path) -> Result<Option<SessionRecord>, String> {
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits())
        .open(file);
    let f = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err("it is a symbolic link".into());
        }
        Err(e) => return Err(e.to_string()),
    };
    let meta = f.metadata().map_err(|e| e.to_string())?;
    if !meta.file_type().is_file() {
        return Err("it is not a regular file".into());
    }
    if meta.len() > MAX_SESSION_FILE_BYTES {
        return Err(format!(
            "{} bytes is more than a session record ({MAX_SESSION_FILE_BYTES} bytes)",
            meta.len()
        ));
    }
    let mut bytes = Vec::new();
    f.take(MAX_SESSION_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|_| "it is not a session record".into())
}

/// Writes a new file beside `file` (created exclusively, so never through a link someone left
/// there) and renames it over `file`: a crash leaves the old record or the new one.
fn write_atomically(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes));
    let result = written.and_then(|()| std::fs::rename(&tmp, file));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
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

    fn scrub_for(token: &str) -> Scrub {
        Scrub::new(
            Some(&Secret::new(token)),
            &Url::parse("http://127.0.0.1:9/api/whip").unwrap(),
        )
    }

    #[test]
    fn error_bodies_never_echo_the_token() {
        let t = scrub_for("sk_live_42");
        let s = snippet("invalid key sk_live_42\n\tgo away", &t);
        assert!(!s.contains("sk_live_42"), "{s}");
        assert!(s.contains("invalid key ***"), "{s}");
        assert_eq!(snippet("   ", &Scrub::default()), "");
        // A token that straddles the cut is blanked out before the cut.
        let long = format!("{}sk_live_42", "x".repeat(BODY_SNIPPET - 4));
        let s = snippet(&long, &t);
        assert!(!s.contains("sk_li"), "{s}");
    }

    #[test]
    fn urls_from_the_server_are_scrubbed_and_shortened() {
        let t = scrub_for("sk_live_42");
        assert_eq!(
            t.url("http://127.0.0.1:9/api/whip/sk_live_42/x"),
            "http://127.0.0.1:9/api/whip/***/x"
        );
        let long = format!("http://h/{}", "a".repeat(1000));
        assert!(t.url(&long).chars().count() <= URL_SNIPPET + 1);
    }

    #[test]
    fn answers_without_h264_video_are_refused_with_the_reason() {
        let t = Scrub::default();
        let head = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
        let vp8 = format!(
            "{head}m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 VP8/90000\r\n"
        );
        let e = check_answer(&vp8, &t).unwrap_err();
        assert!(e.to_string().contains("only VP8"), "{e}");
        assert_eq!(e.class(), FailureClass::Permanent);
        let audio = format!(
            "{head}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n"
        );
        let e = check_answer(&audio, &t).unwrap_err();
        assert!(e.to_string().contains("no video section"), "{e}");
        let rejected = format!(
            "{head}m=video 0 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:102 H264/90000\r\n"
        );
        let e = check_answer(&rejected, &t).unwrap_err();
        assert!(e.to_string().contains("port 0"), "{e}");
        let h264 = format!(
            "{head}m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n"
        );
        check_answer(&h264, &t).expect("H.264 among the video codecs");
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

    #[test]
    fn a_session_on_another_origin_is_not_recalled() {
        let dir = tempfile::tempdir().unwrap();
        let old = SecretUrl::new("http://127.0.0.1:9/api/whip", 0);
        let a = WhipHttp::new(&old, None, dir.path()).unwrap();
        a.remember(Some(Url::parse("http://127.0.0.1:9/api/whip/abc").unwrap()));
        for other in [
            "http://127.0.0.1:10/api/whip",
            "https://127.0.0.1:9/api/whip",
            "http://localhost:9/api/whip",
        ] {
            let b = WhipHttp::new(&SecretUrl::new(other, 0), None, dir.path()).unwrap();
            assert_eq!(b.remembered(), None, "{other}");
            a.remember(Some(Url::parse("http://127.0.0.1:9/api/whip/abc").unwrap()));
        }
        // A hand-made record whose origin line lies about its resource is not used either.
        std::fs::write(
            dir.path().join(SESSION_FILE),
            r#"{"origin": "http://127.0.0.1:9", "resource": "http://198.51.100.1/x"}"#,
        )
        .unwrap();
        assert_eq!(
            WhipHttp::new(&old, None, dir.path()).unwrap().remembered(),
            None
        );
    }

    #[test]
    fn the_session_file_is_written_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let file = dir.path().join(SESSION_FILE);
        std::os::unix::fs::symlink(&victim, &file).unwrap();
        std::os::unix::fs::symlink(&victim, file.with_extension("tmp")).unwrap();
        let url = SecretUrl::new("http://127.0.0.1:9/api/whip", 0);
        let a = WhipHttp::new(&url, None, dir.path()).unwrap();
        assert_eq!(a.remembered(), None);
        a.remember(Some(Url::parse("http://127.0.0.1:9/api/whip/abc").unwrap()));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(std::fs::symlink_metadata(&file).unwrap().is_file());
    }
}
