//! The box's JSON configuration, parsed into typed, validated values.
//!
//! The config is written by a person on a laptop (it is imported from the SD card's boot
//! partition), so every refusal names the key at fault in one line. Parsing and validation
//! happen before anything starts: a config either becomes a [`Config`] or a [`ConfigError`].
//! Keys are a public contract documented in README; unknown keys are refused so that a typo
//! is not silently ignored.

use crate::secret::{Secret, SecretUrl};
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a config was refused. `key` is the dotted path of the offending key (empty when the
/// whole file is at fault).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    fn invalid(key: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// The dotted key at fault, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub source: SourceConfig,
    pub encoder: EncoderConfig,
    pub output: OutputConfig,
    pub reconnect: ReconnectConfig,
    pub network: NetworkConfig,
    pub leds: LedConfig,
    pub status: StatusConfig,
    /// Where the daemon keeps small state that must survive a restart (the WHIP resource URL
    /// to DELETE). `/run` survives a daemon restart but not a reboot, which is what we want.
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Test,
    V4l2,
    Libcamera,
}

/// What the capture device delivers. `raw` lets caps negotiation pick; `mjpeg` is for USB
/// HDMI dongles (MS2109 and friends) that only deliver JPEG at useful sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    #[default]
    Raw,
    Mjpeg,
}

/// What the box does when its input is lost (`source.on_loss`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnLoss {
    /// The encoder gets a slate instead and the connection stays up: viewers keep the stream.
    #[default]
    Slate,
    /// The connection is closed until the input returns (the behaviour before the slate).
    Disconnect,
}

impl OnLoss {
    pub fn as_str(self) -> &'static str {
        match self {
            OnLoss::Slate => "slate",
            OnLoss::Disconnect => "disconnect",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    pub kind: SourceKind,
    pub device: Option<PathBuf>,
    /// The output picture: every input is scaled and rated to this.
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub format: SourceFormat,
    pub on_loss: OnLoss,
    /// An image (PNG or JPEG) shown instead of the built-in card while the input is lost.
    pub slate_image: Option<PathBuf>,
    /// The message on the built-in card.
    pub slate_text: String,
    /// Wait between attempts to bring a lost input back (events cut it short).
    pub retry: Duration,
    /// No picture from the input for this long means it is lost (the last picture is held
    /// until then).
    pub lost_after: Duration,
}

/// The longest slate message: it must fit on a small picture in one line.
pub const MAX_SLATE_TEXT: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncoderKind {
    Auto,
    V4l2,
    X264,
    Openh264,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    pub kind: EncoderKind,
    pub bitrate_kbps: u32,
    pub keyframe_interval_ms: u32,
}

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

/// The watchdog's retry policy and liveness deadlines.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconnectConfig {
    pub initial_delay: Duration,
    pub max_delay: Duration,
    pub multiplier: f64,
    pub jitter: f64,
    /// Consecutive failed attempts before giving up; 0 = never give up.
    pub max_attempts: u32,
    pub connect_timeout: Duration,
    pub stable_after: Duration,
    pub dead_after: Duration,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig {
            initial_delay: Duration::from_millis(1000),
            max_delay: Duration::from_millis(30_000),
            multiplier: 2.0,
            jitter: 0.1,
            max_attempts: 0,
            connect_timeout: Duration::from_millis(10_000),
            stable_after: Duration::from_millis(10_000),
            dead_after: Duration::from_millis(5_000),
        }
    }
}

/// Which interfaces count for "is the box online". Empty `interfaces` = all but loopback.
/// Entries ending in `*` match by prefix (`wlan*`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NetworkConfig {
    pub interfaces: Vec<String>,
    pub ignore: Vec<String>,
    /// Off only for benchmarks that compare against the backoff timer alone.
    pub netlink: bool,
}

impl NetworkConfig {
    /// Whether an interface counts towards "online".
    pub fn watches(&self, name: &str) -> bool {
        let matches = |pattern: &String| match pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => pattern == name,
        };
        if self.ignore.iter().any(matches) {
            return false;
        }
        if self.interfaces.is_empty() {
            name != "lo"
        } else {
            self.interfaces.iter().any(matches)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LedBackendKind {
    Gpio,
    Sysfs,
    Console,
    #[default]
    None,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LedConfig {
    pub backend: LedBackendKind,
    /// BCM GPIO numbers for the gpio backend.
    pub live_pin: u8,
    pub status_pin: u8,
    pub active_low: bool,
    /// LED class directory for the sysfs backend (tests point it at a temporary tree).
    pub sysfs_dir: PathBuf,
    pub live_name: String,
    pub status_name: String,
}

impl Default for LedConfig {
    fn default() -> Self {
        LedConfig {
            backend: LedBackendKind::None,
            live_pin: 17,
            status_pin: 27,
            active_low: false,
            sysfs_dir: PathBuf::from("/sys/class/leds"),
            live_name: "onair-live".into(),
            status_name: "onair-status".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatusConfig {
    pub socket: PathBuf,
}

pub const DEFAULT_STATUS_SOCKET: &str = "/run/onair/status.sock";
pub const DEFAULT_STATE_DIR: &str = "/run/onair";

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            socket: PathBuf::from(DEFAULT_STATUS_SOCKET),
        }
    }
}

// ---- raw serde shapes: every field optional where the contract has a default ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    source: RawSource,
    #[serde(default)]
    encoder: RawEncoder,
    output: RawOutput,
    #[serde(default)]
    reconnect: RawReconnect,
    #[serde(default)]
    network: RawNetwork,
    #[serde(default)]
    leds: RawLeds,
    #[serde(default)]
    status: RawStatus,
    state_dir: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    kind: SourceKind,
    device: Option<PathBuf>,
    width: Option<u32>,
    height: Option<u32>,
    fps: Option<u32>,
    #[serde(default)]
    format: SourceFormat,
    #[serde(default)]
    on_loss: OnLoss,
    slate_image: Option<PathBuf>,
    slate_text: Option<String>,
    retry_ms: Option<u64>,
    lost_after_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEncoder {
    kind: Option<EncoderKind>,
    bitrate_kbps: Option<u32>,
    keyframe_interval_ms: Option<u32>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum OutputKind {
    Whip,
    Rtmp,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    kind: OutputKind,
    url: Option<String>,
    token: Option<Secret>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawReconnect {
    initial_delay_ms: Option<u64>,
    max_delay_ms: Option<u64>,
    multiplier: Option<f64>,
    jitter: Option<f64>,
    max_attempts: Option<u32>,
    connect_timeout_ms: Option<u64>,
    stable_after_ms: Option<u64>,
    dead_after_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    #[serde(default)]
    interfaces: Vec<String>,
    #[serde(default)]
    ignore: Vec<String>,
    netlink: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLeds {
    #[serde(default)]
    backend: LedBackendKind,
    live_pin: Option<u8>,
    status_pin: Option<u8>,
    #[serde(default)]
    active_low: bool,
    sysfs_dir: Option<PathBuf>,
    live_name: Option<String>,
    status_name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStatus {
    socket: Option<PathBuf>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Syntax { message, .. } => ConfigError::Syntax {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates config text. Syntax errors carry an empty path; `load` fills it.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let raw: RawConfig = match serde_path_to_error::deserialize(de) {
            Ok(raw) => raw,
            Err(err) => {
                let path = err.path().to_string();
                let inner = err.into_inner();
                let message = scrub_serde_message(&inner.to_string());
                // A JSON syntax error has no meaningful key; a type or unknown-field error does.
                if inner.is_syntax() || inner.is_eof() {
                    return Err(ConfigError::Syntax {
                        path: PathBuf::new(),
                        message,
                    });
                }
                // serde reports a missing field at the parent's path; name the field itself.
                let key = match missing_field(&message) {
                    Some(field) if path == "." => field.to_string(),
                    Some(field) => format!("{path}.{field}"),
                    None => path,
                };
                return Err(ConfigError::invalid(&key, message));
            }
        };
        raw.validate()
    }

    /// Whether `new` differs from `self` only in settings the watchdog can apply without
    /// touching the stream (reconnect policy), so SIGHUP need not drop the stream.
    pub fn differs_only_in_reconnect(&self, new: &Config) -> bool {
        let mut same = new.clone();
        same.reconnect = self.reconnect.clone();
        &same == self
    }
}

fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split_once('`').map(|(field, _)| field)
}

/// serde's messages quote the offending value; for a token that would print the secret.
fn scrub_serde_message(message: &str) -> String {
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

fn nonzero_ms(key: &str, value: Option<u64>, default: Duration) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(0) => Err(ConfigError::invalid(key, "must be greater than 0")),
        Some(ms) => Ok(Duration::from_millis(ms)),
    }
}

fn ms_in_range(
    key: &str,
    value: Option<u64>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<Duration, ConfigError> {
    let ms = value.unwrap_or(default);
    if !(min..=max).contains(&ms) {
        return Err(ConfigError::invalid(
            key,
            format!("{ms} is out of range {min}..={max}"),
        ));
    }
    Ok(Duration::from_millis(ms))
}

fn check_range(key: &str, value: u32, min: u32, max: u32) -> Result<u32, ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::invalid(
            key,
            format!("{value} is out of range {min}..={max}"),
        ));
    }
    Ok(value)
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let source = self.source.validate()?;
        let encoder = self.encoder.validate(source.fps)?;
        let output = self.output.validate()?;
        let reconnect = self.reconnect.validate()?;
        for (i, name) in self.network.interfaces.iter().enumerate() {
            if name.is_empty() {
                return Err(ConfigError::invalid(
                    &format!("network.interfaces[{i}]"),
                    "interface name is empty",
                ));
            }
        }
        let network = NetworkConfig {
            interfaces: self.network.interfaces,
            ignore: self.network.ignore,
            netlink: self.network.netlink.unwrap_or(true),
        };
        let leds = self.leds.validate()?;
        let status = StatusConfig {
            socket: self
                .status
                .socket
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATUS_SOCKET)),
        };
        if status.socket.as_os_str().is_empty() {
            return Err(ConfigError::invalid("status.socket", "path is empty"));
        }
        Ok(Config {
            source,
            encoder,
            output,
            reconnect,
            network,
            leds,
            status,
            state_dir: self
                .state_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
        })
    }
}

impl RawSource {
    fn validate(self) -> Result<SourceConfig, ConfigError> {
        let width = check_range("source.width", self.width.unwrap_or(1280), 16, 7680)?;
        let height = check_range("source.height", self.height.unwrap_or(720), 16, 4320)?;
        if width % 2 != 0 {
            return Err(ConfigError::invalid("source.width", "must be even (4:2:0)"));
        }
        if height % 2 != 0 {
            return Err(ConfigError::invalid(
                "source.height",
                "must be even (4:2:0)",
            ));
        }
        let fps = check_range("source.fps", self.fps.unwrap_or(30), 1, 120)?;
        let device = match (self.kind, self.device) {
            (SourceKind::V4l2, None) => Some(PathBuf::from("/dev/video0")),
            (_, Some(d)) if d.as_os_str().is_empty() => {
                return Err(ConfigError::invalid("source.device", "path is empty"));
            }
            (_, d) => d,
        };
        if self
            .slate_image
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(ConfigError::invalid("source.slate_image", "path is empty"));
        }
        let slate_text = self.slate_text.unwrap_or_else(|| "NO SIGNAL".into());
        if slate_text.chars().count() > MAX_SLATE_TEXT {
            return Err(ConfigError::invalid(
                "source.slate_text",
                format!("is longer than {MAX_SLATE_TEXT} characters"),
            ));
        }
        if slate_text.chars().any(char::is_control) {
            return Err(ConfigError::invalid(
                "source.slate_text",
                "contains control characters (one line of text)",
            ));
        }
        let retry = ms_in_range("source.retry_ms", self.retry_ms, 2000, 100, 60_000)?;
        let lost_after = ms_in_range(
            "source.lost_after_ms",
            self.lost_after_ms,
            2000,
            200,
            30_000,
        )?;
        Ok(SourceConfig {
            kind: self.kind,
            device,
            width,
            height,
            fps,
            format: self.format,
            on_loss: self.on_loss,
            slate_image: self.slate_image,
            slate_text,
            retry,
            lost_after,
        })
    }
}

impl RawEncoder {
    fn validate(self, fps: u32) -> Result<EncoderConfig, ConfigError> {
        let bitrate_kbps = check_range(
            "encoder.bitrate_kbps",
            self.bitrate_kbps.unwrap_or(2500),
            50,
            50_000,
        )?;
        let keyframe_interval_ms = check_range(
            "encoder.keyframe_interval_ms",
            self.keyframe_interval_ms.unwrap_or(2000),
            100,
            60_000,
        )?;
        // The Pi encoder hangs with an I-frame period of 1 (PLATFORM_NOTES), and a GOP of one
        // frame is never what a person meant.
        if u64::from(keyframe_interval_ms) * u64::from(fps) < 2000 {
            return Err(ConfigError::invalid(
                "encoder.keyframe_interval_ms",
                format!("{keyframe_interval_ms} ms is less than two frames at {fps} fps"),
            ));
        }
        Ok(EncoderConfig {
            kind: self.kind.unwrap_or(EncoderKind::Auto),
            bitrate_kbps,
            keyframe_interval_ms,
        })
    }
}

impl RawOutput {
    fn validate(self) -> Result<OutputConfig, ConfigError> {
        let Some(url) = self.url else {
            return Err(ConfigError::invalid("output.url", "is missing"));
        };
        let secret_segments = match self.kind {
            OutputKind::Whip => 0,
            OutputKind::Rtmp => 1,
        };
        // Never echo the URL itself in an error: it may carry the key.
        let parsed = reqwest::Url::parse(&url).map_err(|e| {
            ConfigError::invalid(
                "output.url",
                format!(
                    "is not a valid URL ({e}): {}",
                    SecretUrl::new(&url, secret_segments)
                ),
            )
        })?;
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(ConfigError::invalid("output.url", "has no host"));
        }
        match self.kind {
            OutputKind::Whip => {
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(ConfigError::invalid(
                        "output.url",
                        format!(
                            "a WHIP URL must be http or https, not `{}`",
                            parsed.scheme()
                        ),
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
                        format!(
                            "an RTMP URL must be rtmp or rtmps, not `{}`",
                            parsed.scheme()
                        ),
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
                Ok(OutputConfig::Rtmp {
                    url: SecretUrl::new(url, secret_segments),
                })
            }
        }
    }
}

impl RawReconnect {
    fn validate(self) -> Result<ReconnectConfig, ConfigError> {
        let d = ReconnectConfig::default();
        let initial_delay = nonzero_ms(
            "reconnect.initial_delay_ms",
            self.initial_delay_ms,
            d.initial_delay,
        )?;
        let max_delay = nonzero_ms("reconnect.max_delay_ms", self.max_delay_ms, d.max_delay)?;
        if max_delay < initial_delay {
            return Err(ConfigError::invalid(
                "reconnect.max_delay_ms",
                "must not be less than reconnect.initial_delay_ms",
            ));
        }
        let multiplier = self.multiplier.unwrap_or(d.multiplier);
        if !multiplier.is_finite() || !(1.0..=10.0).contains(&multiplier) {
            return Err(ConfigError::invalid(
                "reconnect.multiplier",
                "must be between 1.0 and 10.0",
            ));
        }
        let jitter = self.jitter.unwrap_or(d.jitter);
        if !jitter.is_finite() || !(0.0..=0.5).contains(&jitter) {
            return Err(ConfigError::invalid(
                "reconnect.jitter",
                "must be between 0.0 and 0.5 (a fraction of the delay)",
            ));
        }
        Ok(ReconnectConfig {
            initial_delay,
            max_delay,
            multiplier,
            jitter,
            max_attempts: self.max_attempts.unwrap_or(d.max_attempts),
            connect_timeout: nonzero_ms(
                "reconnect.connect_timeout_ms",
                self.connect_timeout_ms,
                d.connect_timeout,
            )?,
            stable_after: nonzero_ms(
                "reconnect.stable_after_ms",
                self.stable_after_ms,
                d.stable_after,
            )?,
            dead_after: nonzero_ms("reconnect.dead_after_ms", self.dead_after_ms, d.dead_after)?,
        })
    }
}

impl RawLeds {
    fn validate(self) -> Result<LedConfig, ConfigError> {
        let d = LedConfig::default();
        let live_pin = self.live_pin.unwrap_or(d.live_pin);
        let status_pin = self.status_pin.unwrap_or(d.status_pin);
        if live_pin > 27 {
            return Err(ConfigError::invalid(
                "leds.live_pin",
                "the Pi header has BCM GPIO 0..=27",
            ));
        }
        if status_pin > 27 {
            return Err(ConfigError::invalid(
                "leds.status_pin",
                "the Pi header has BCM GPIO 0..=27",
            ));
        }
        if self.backend == LedBackendKind::Gpio && live_pin == status_pin {
            return Err(ConfigError::invalid(
                "leds.status_pin",
                "must differ from leds.live_pin",
            ));
        }
        let name = |key: &str, v: Option<String>, default: String| match v {
            Some(n) if n.is_empty() || n.contains('/') => Err(ConfigError::invalid(
                key,
                "must be a LED class name (no '/')",
            )),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        Ok(LedConfig {
            backend: self.backend,
            live_pin,
            status_pin,
            active_low: self.active_low,
            sysfs_dir: self.sysfs_dir.unwrap_or(d.sysfs_dir),
            live_name: name("leds.live_name", self.live_name, d.live_name)?,
            status_name: name("leds.status_name", self.status_name, d.status_name)?,
        })
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceKind::Test => "test",
            SourceKind::V4l2 => "v4l2",
            SourceKind::Libcamera => "libcamera",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{
        "source": {"kind": "test"},
        "output": {"kind": "whip", "url": "http://127.0.0.1:8080/api/whip", "token": "s3cret-key"}
    }"#;

    fn with(patch: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(MINIMAL).unwrap();
        let p: serde_json::Value = serde_json::from_str(patch).unwrap();
        merge(&mut v, p);
        v.to_string()
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn refused_key(text: &str) -> String {
        match Config::parse(text) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected a refusal naming a key, got {other:?}"),
        }
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(
            (c.source.width, c.source.height, c.source.fps),
            (1280, 720, 30)
        );
        assert_eq!(c.encoder.kind, EncoderKind::Auto);
        assert_eq!(c.encoder.bitrate_kbps, 2500);
        assert_eq!(c.reconnect, ReconnectConfig::default());
        assert_eq!(c.reconnect.max_attempts, 0);
        assert_eq!(c.status.socket, PathBuf::from("/run/onair/status.sock"));
        assert!(c.network.netlink);
        assert_eq!(c.source.on_loss, OnLoss::Slate);
        assert_eq!(c.source.slate_text, "NO SIGNAL");
        assert_eq!(c.source.slate_image, None);
        assert_eq!(c.source.retry, Duration::from_secs(2));
        assert_eq!(c.source.lost_after, Duration::from_secs(2));
    }

    #[test]
    fn input_loss_keys_are_read() {
        let c = Config::parse(&with(
            r#"{"source": {"on_loss": "disconnect", "slate_image": "/data/slate.png",
                "slate_text": "Back soon", "retry_ms": 500, "lost_after_ms": 800}}"#,
        ))
        .unwrap();
        assert_eq!(c.source.on_loss, OnLoss::Disconnect);
        assert_eq!(
            c.source.slate_image.as_deref(),
            Some(Path::new("/data/slate.png"))
        );
        assert_eq!(c.source.slate_text, "Back soon");
        assert_eq!(c.source.retry, Duration::from_millis(500));
        assert_eq!(c.source.lost_after, Duration::from_millis(800));
    }

    #[test]
    fn refusals_name_the_key() {
        let cases = [
            (r#"{"source": {"fps": 0}}"#, "source.fps"),
            (r#"{"source": {"width": 641}}"#, "source.width"),
            (r#"{"source": {"kind": "hdmi"}}"#, "source.kind"),
            (r#"{"source": {"fps": "30"}}"#, "source.fps"),
            (r#"{"source": {"colour": 1}}"#, "source"),
            (r#"{"bogus": 1}"#, "bogus"),
            (r#"{"output": {"url": null}}"#, "output.url"),
            (r#"{"output": {"url": "ftp://x/y"}}"#, "output.url"),
            (r#"{"output": {"url": "not a url"}}"#, "output.url"),
            (r#"{"output": {"token": ""}}"#, "output.token"),
            (r#"{"encoder": {"kind": "nvenc"}}"#, "encoder.kind"),
            (
                r#"{"encoder": {"bitrate_kbps": 0}}"#,
                "encoder.bitrate_kbps",
            ),
            (
                r#"{"encoder": {"keyframe_interval_ms": 10}}"#,
                "encoder.keyframe_interval_ms",
            ),
            (r#"{"reconnect": {"jitter": 2.0}}"#, "reconnect.jitter"),
            (
                r#"{"reconnect": {"max_delay_ms": 10, "initial_delay_ms": 100}}"#,
                "reconnect.max_delay_ms",
            ),
            (
                r#"{"reconnect": {"connect_timeout_ms": 0}}"#,
                "reconnect.connect_timeout_ms",
            ),
            (
                r#"{"reconnect": {"max_attempts": -1}}"#,
                "reconnect.max_attempts",
            ),
            (
                r#"{"leds": {"backend": "gpio", "live_pin": 40}}"#,
                "leds.live_pin",
            ),
            (r#"{"leds": {"backend": "blink"}}"#, "leds.backend"),
            (r#"{"source": {"on_loss": "hang_up"}}"#, "source.on_loss"),
            (r#"{"source": {"slate_image": ""}}"#, "source.slate_image"),
            (r#"{"source": {"slate_text": "a\nb"}}"#, "source.slate_text"),
            (
                r#"{"source": {"slate_text": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}"#,
                "source.slate_text",
            ),
            (r#"{"source": {"retry_ms": 0}}"#, "source.retry_ms"),
            (
                r#"{"source": {"lost_after_ms": 60000}}"#,
                "source.lost_after_ms",
            ),
        ];
        for (patch, key) in cases {
            let text = with(patch);
            let got = match Config::parse(&text) {
                Err(ConfigError::Invalid { key, .. }) => key,
                other => panic!("{patch}: expected refusal of {key}, got {other:?}"),
            };
            assert!(
                got.starts_with(key),
                "{patch}: expected key {key}, got {got}"
            );
        }
    }

    #[test]
    fn missing_required_blocks_are_refused() {
        assert_eq!(refused_key(r#"{"source": {"kind": "test"}}"#), "output");
        let no_kind = r#"{"source": {}, "output": {"kind": "whip", "url": "http://h/api/whip"}}"#;
        assert_eq!(refused_key(no_kind), "source.kind");
    }

    #[test]
    fn rtmp_needs_app_and_key_and_redacts_it() {
        let ok = r#"{"source": {"kind": "test"}, "output": {"kind": "rtmp", "url": "rtmp://127.0.0.1/live/key123"}}"#;
        let c = Config::parse(ok).unwrap();
        assert_eq!(c.output.url().to_string(), "rtmp://127.0.0.1/live/***");
        let no_key = r#"{"source": {"kind": "test"}, "output": {"kind": "rtmp", "url": "rtmp://127.0.0.1/live"}}"#;
        assert_eq!(refused_key(no_key), "output.url");
    }

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
    }

    #[test]
    fn syntax_error_is_not_a_panic() {
        assert!(matches!(
            Config::parse("{ not json"),
            Err(ConfigError::Syntax { .. })
        ));
        assert!(matches!(Config::parse(""), Err(ConfigError::Syntax { .. })));
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let err = Config::load(Path::new("/nonexistent/onair.json")).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(err.to_string().contains("/nonexistent/onair.json"));
    }

    #[test]
    fn interface_patterns() {
        let n = NetworkConfig {
            interfaces: vec![],
            ignore: vec!["docker*".into()],
            netlink: true,
        };
        assert!(n.watches("eth0"));
        assert!(!n.watches("lo"));
        assert!(!n.watches("docker0"));
        let n = NetworkConfig {
            interfaces: vec!["wlan*".into(), "eth0".into()],
            ignore: vec![],
            netlink: true,
        };
        assert!(n.watches("wlan1") && n.watches("eth0") && !n.watches("eth1"));
    }

    #[test]
    fn reconnect_only_changes_are_detected() {
        let a = Config::parse(MINIMAL).unwrap();
        let mut b = a.clone();
        b.reconnect.max_attempts = 5;
        assert!(a.differs_only_in_reconnect(&b));
        b.encoder.bitrate_kbps = 1000;
        assert!(!a.differs_only_in_reconnect(&b));
    }
}
