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
    #[error("config file {path}: is {what}, not a regular file")]
    NotAFile { path: PathBuf, what: &'static str },
    #[error(
        "config file {path}: {size} bytes is more than a config can be ({MAX_CONFIG_BYTES} bytes)"
    )]
    TooLarge { path: PathBuf, size: u64 },
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
    pub audio: AudioConfig,
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

/// What the test source (`kind: test`, `source.pattern`) shows. Each pattern is meant to
/// exercise something: `smpte` is the familiar still picture (it costs the encoder almost
/// nothing), `ball` moves, `noise` changes every pixel of every frame, so no encoder can squeeze
/// it below the configured rate and the uplink carries what the config asks for, and `sync` is
/// the A/V-sync clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TestPattern {
    /// Colour bars.
    #[default]
    Smpte,
    Ball,
    Noise,
    /// Black, one white frame per second; with `audio.kind: "test"` a 1 kHz beep of 100 ms
    /// starts at the same instant: the usual A/V-sync clip.
    Sync,
}

impl TestPattern {
    pub fn as_str(self) -> &'static str {
        match self {
            TestPattern::Smpte => "smpte",
            TestPattern::Ball => "ball",
            TestPattern::Noise => "noise",
            TestPattern::Sync => "sync",
        }
    }
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
    /// What the test source draws; only for `kind: test`.
    pub pattern: TestPattern,
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

/// Where the sound comes from (`audio.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AudioKind {
    /// No audio track at all (the behaviour before audio).
    #[default]
    None,
    /// A generated tone (or the sync beeps with `source.pattern: "sync"`).
    Test,
    /// An ALSA capture device: HDMI audio (USB dongle or the TC358743's I2S card), a USB
    /// microphone or interface.
    Alsa,
}

impl AudioKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AudioKind::None => "none",
            AudioKind::Test => "test",
            AudioKind::Alsa => "alsa",
        }
    }
}

/// The `audio` block. Audio is always sent as 48 kHz; `channels` is what is captured and sent.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioConfig {
    pub kind: AudioKind,
    /// ALSA device name (`hw:CARD=MS2109,DEV=0`, `plughw:1,0`, `default`); `alsa` only.
    pub device: String,
    /// 1 or 2. Default 2 (Broadcast Box takes Opus stereo only; mono is sent as stereo there).
    pub channels: u32,
    /// Encoder bitrate. Default 128.
    pub bitrate_kbps: u32,
    /// Added to the audio timestamps: positive delays the sound (a source whose sound is
    /// early), negative advances it. Default 0.
    pub offset_ms: i32,
}

impl Default for AudioConfig {
    fn default() -> Self {
        AudioConfig {
            kind: AudioKind::None,
            device: DEFAULT_AUDIO_DEVICE.to_string(),
            channels: 2,
            bitrate_kbps: 128,
            offset_ms: 0,
        }
    }
}

pub const DEFAULT_AUDIO_DEVICE: &str = "default";
/// Longest accepted ALSA device name.
const MAX_AUDIO_DEVICE: usize = 128;
/// Largest `audio.offset_ms` either way: more is a wrong device, not a late one.
pub const MAX_AUDIO_OFFSET_MS: i32 = 1000;

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
    /// The bitrate a connection starts at, and the most adaptation ever asks for.
    pub bitrate_kbps: u32,
    /// The least adaptation ever asks for.
    pub min_bitrate_kbps: u32,
    /// Whether the bitrate follows what the uplink carries (congestion control on WHIP, the
    /// send backlog on RTMP), or stays at `bitrate_kbps`.
    pub adapt: bool,
    pub keyframe_interval_ms: u32,
}

/// The floor adaptation keeps to unless the config names one (or `bitrate_kbps`, if lower).
pub const DEFAULT_MIN_BITRATE_KBPS: u32 = 300;

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

/// Which interfaces count for "is the box online", and how the stream follows the path to
/// its server. Empty `interfaces` = all but loopback. Entries ending in `*` match by prefix
/// (`wlan*`), in `interfaces`, `ignore` and `prefer` alike.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    pub interfaces: Vec<String>,
    pub ignore: Vec<String>,
    /// Off only for benchmarks that compare against the backoff timer alone.
    pub netlink: bool,
    /// Uplinks in order of preference (patterns); uplinks matching none come after, in the
    /// kernel's order (route metric). Empty: the kernel's order alone.
    pub prefer: Vec<String>,
    /// How long a preferred uplink that came back must stay usable before the stream returns
    /// to it (longer for an uplink that keeps flapping).
    pub settle: Duration,
    pub paths: PathsMode,
    /// The daemon's routing table for `PathsMode::Steer`; each uplink's own table is this
    /// number plus its interface index.
    pub route_table: u32,
}

/// What a change of the path to the server (outgoing interface, source address, gateway)
/// does to the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PathsMode {
    /// The daemon picks the uplink (`prefer`, `settle`) and steers the server's traffic to it
    /// with policy routing; a path change reconnects at once over the new path.
    #[default]
    Steer,
    /// The kernel's routes pick the uplink; a path change reconnects at once.
    Follow,
    /// Path changes do not touch the connection (the liveness checks notice a dead path).
    Ignore,
}

pub const DEFAULT_SETTLE: Duration = Duration::from_millis(5_000);
pub const DEFAULT_ROUTE_TABLE: u32 = 1100;
/// Tables above this are left to other software (and `route_table + ifindex` must fit).
const MAX_ROUTE_TABLE: u32 = 0x7fff_0000;

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            interfaces: Vec::new(),
            ignore: Vec::new(),
            netlink: true,
            prefer: Vec::new(),
            settle: DEFAULT_SETTLE,
            paths: PathsMode::Steer,
            route_table: DEFAULT_ROUTE_TABLE,
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

/// A config is a few KiB; a file larger than this is a mistake (or `/dev/zero` behind a name),
/// never a config, and is refused before it is read.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

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
    #[serde(default)]
    audio: RawAudio,
    state_dir: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAudio {
    #[serde(default)]
    kind: AudioKind,
    device: Option<String>,
    channels: Option<u32>,
    bitrate_kbps: Option<u32>,
    offset_ms: Option<i32>,
}

impl RawAudio {
    fn validate(self) -> Result<AudioConfig, ConfigError> {
        let d = AudioConfig::default();
        let device = match self.device {
            None => d.device,
            Some(dev) => {
                if dev.is_empty() {
                    return Err(ConfigError::invalid("audio.device", "is empty"));
                }
                if dev.chars().count() > MAX_AUDIO_DEVICE {
                    return Err(ConfigError::invalid(
                        "audio.device",
                        format!("is longer than {MAX_AUDIO_DEVICE} characters"),
                    ));
                }
                // ALSA names: `hw:CARD=MS2109,DEV=0`, `plughw:1,0`, `default`, `sysdefault:CARD=x`.
                if !dev
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-:=,.".contains(c))
                {
                    return Err(ConfigError::invalid(
                        "audio.device",
                        "is not an ALSA device name (letters, digits and _-:=,. only)",
                    ));
                }
                dev
            }
        };
        let channels = check_range("audio.channels", self.channels.unwrap_or(d.channels), 1, 2)?;
        let bitrate_kbps = check_range(
            "audio.bitrate_kbps",
            self.bitrate_kbps.unwrap_or(d.bitrate_kbps),
            16,
            320,
        )?;
        let offset_ms = self.offset_ms.unwrap_or(0);
        if !(-MAX_AUDIO_OFFSET_MS..=MAX_AUDIO_OFFSET_MS).contains(&offset_ms) {
            return Err(ConfigError::invalid(
                "audio.offset_ms",
                format!(
                    "{offset_ms} is out of range -{MAX_AUDIO_OFFSET_MS}..={MAX_AUDIO_OFFSET_MS}"
                ),
            ));
        }
        Ok(AudioConfig {
            kind: self.kind,
            device,
            channels,
            bitrate_kbps,
            offset_ms,
        })
    }
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
    pattern: Option<TestPattern>,
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
    min_bitrate_kbps: Option<u32>,
    adapt: Option<bool>,
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
    #[serde(default)]
    prefer: Vec<String>,
    settle_ms: Option<u64>,
    paths: Option<PathsMode>,
    route_table: Option<u32>,
}

/// Longest settle time accepted: beyond an hour a preferred uplink would in effect never
/// be returned to.
const MAX_SETTLE_MS: u64 = 3_600_000;

impl RawNetwork {
    fn validate(self) -> Result<NetworkConfig, ConfigError> {
        for (list, names) in [
            ("interfaces", &self.interfaces),
            ("ignore", &self.ignore),
            ("prefer", &self.prefer),
        ] {
            for (i, name) in names.iter().enumerate() {
                if name.is_empty() || name == "*" && list == "prefer" {
                    return Err(ConfigError::invalid(
                        &format!("network.{list}[{i}]"),
                        if name.is_empty() {
                            "interface name is empty"
                        } else {
                            "`*` alone prefers nothing over anything"
                        },
                    ));
                }
            }
        }
        let settle = match self.settle_ms {
            None => DEFAULT_SETTLE,
            Some(ms) if ms > MAX_SETTLE_MS => {
                return Err(ConfigError::invalid(
                    "network.settle_ms",
                    format!("{ms} is out of range 0..={MAX_SETTLE_MS}"),
                ));
            }
            Some(ms) => Duration::from_millis(ms),
        };
        let route_table = match self.route_table {
            None => DEFAULT_ROUTE_TABLE,
            Some(t @ (0 | 253..=255)) => {
                return Err(ConfigError::invalid(
                    "network.route_table",
                    format!("{t} is reserved by the kernel (unspec, default, main, local)"),
                ));
            }
            Some(t) if t > MAX_ROUTE_TABLE => {
                return Err(ConfigError::invalid(
                    "network.route_table",
                    format!("{t} is out of range 1..={MAX_ROUTE_TABLE}"),
                ));
            }
            Some(t) => t,
        };
        Ok(NetworkConfig {
            interfaces: self.interfaces,
            ignore: self.ignore,
            netlink: self.netlink.unwrap_or(true),
            prefer: self.prefer,
            settle,
            paths: self.paths.unwrap_or_default(),
            route_table,
        })
    }
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
    /// Reads and validates a config file. Only a regular file of at most [`MAX_CONFIG_BYTES`]
    /// is read: a FIFO, a device or a directory is refused without waiting on it.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read_config_file(path)?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Syntax { message, .. } => ConfigError::Syntax {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates config text. Syntax errors carry an empty path; `load` fills it.
    ///
    /// No refusal repeats a secret of the text: the token and the RTMP stream key are blanked
    /// out of every message and key, and an unknown key is named only when its name looks
    /// like a key (a token pasted as a key name is not repeated).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_unscrubbed(text).map_err(|e| scrub_error(e, text))
    }

    fn parse_unscrubbed(text: &str) -> Result<Config, ConfigError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let raw: RawConfig = match serde_path_to_error::deserialize(&mut de) {
            Ok(raw) => raw,
            Err(err) => {
                let segments: Vec<_> = err.path().iter().cloned().collect();
                let inner = err.into_inner();
                // A JSON syntax error has no meaningful key; a type or unknown-field error does.
                if inner.is_syntax() || inner.is_eof() {
                    // serde_json reports a wrong type where an enum's string belongs (`"kind":
                    // false`) as a syntax error; in valid JSON it is the key's fault.
                    if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() {
                        return Err(serde_refusal(
                            &segments,
                            "has a value of the wrong type (expected a string)",
                        ));
                    }
                    return Err(ConfigError::Syntax {
                        path: PathBuf::new(),
                        message: scrub_serde_message(&inner.to_string()),
                    });
                }
                return Err(serde_refusal(&segments, &inner.to_string()));
            }
        };
        // One JSON object and nothing after it: a second object or a stray character is a
        // mistake the person should see, not text to ignore.
        if let Err(e) = de.end() {
            return Err(ConfigError::Syntax {
                path: PathBuf::new(),
                message: format!("text after the end of the config object ({e})"),
            });
        }
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

/// Opens without waiting for a FIFO's writer (O_NONBLOCK), checks what the path is on the open
/// file itself (no race with a rename), and reads at most [`MAX_CONFIG_BYTES`] (a file may
/// grow after the check).
fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let read_error = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(read_error)?;
    let meta = file.metadata().map_err(read_error)?;
    let kind = meta.file_type();
    let not_a_file = |what| {
        Err(ConfigError::NotAFile {
            path: path.to_path_buf(),
            what,
        })
    };
    if kind.is_dir() {
        return not_a_file("a directory");
    } else if kind.is_fifo() {
        return not_a_file("a FIFO (named pipe)");
    } else if kind.is_char_device() || kind.is_block_device() {
        return not_a_file("a device");
    } else if kind.is_socket() {
        return not_a_file("a socket");
    } else if !kind.is_file() {
        return not_a_file("something else");
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
        });
    }
    String::from_utf8(bytes).map_err(|_| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: "is not UTF-8 text".into(),
    })
}

/// Whether an unknown key's name may be repeated in a refusal: letters, `_` and `-`, as a
/// person's typo would be. Anything else (digits, dots, spaces, control characters, long
/// strings) may be a stream key pasted in the wrong place and is not shown.
fn shows_as_key(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphabetic() || b == b'_' || b == b'-')
}

/// A type, value or unknown-key refusal from serde, naming the key at fault.
fn serde_refusal(segments: &[serde_path_to_error::Segment], message: &str) -> ConfigError {
    use serde_path_to_error::Segment;
    let mut key = String::new();
    let mut hidden = false;
    for segment in segments {
        match segment {
            Segment::Seq { index } => key.push_str(&format!("[{index}]")),
            Segment::Map { key: name } | Segment::Enum { variant: name } => {
                if !shows_as_key(name) {
                    // Only ever the last segment: serde descends into known keys alone.
                    hidden = true;
                    break;
                }
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(name);
            }
            Segment::Unknown => {
                hidden = true;
                break;
            }
        }
    }
    if let Some(expected) = unknown_field_expectation(message) {
        let message = if hidden {
            format!(
                "has a key whose name is not shown (it is not a config key and may be a secret){expected}"
            )
        } else {
            format!("is not a config key{expected}")
        };
        let key = if key.is_empty() { ".".to_string() } else { key };
        return ConfigError::invalid(&key, message);
    }
    let message = scrub_serde_message(message);
    // serde reports a missing field at the parent's path; name the field itself.
    let key = match (missing_field(&message), key.is_empty()) {
        (Some(field), true) => field.to_string(),
        (Some(field), false) => format!("{key}.{field}"),
        (None, true) => ".".to_string(),
        (None, false) => key,
    };
    ConfigError::invalid(&key, message)
}

/// For serde's "unknown field `x`, expected one of `a`, `b`", the part after the name (it lists
/// our own keys only).
fn unknown_field_expectation(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    for tail in ["`, expected ", "`, there are no fields"] {
        if let Some(i) = rest.rfind(tail) {
            let after = &rest[i + 1..];
            let after = after.split(" at line ").next().unwrap_or(after);
            return Some(after.to_string());
        }
    }
    Some(String::new())
}

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
    if let Some(token) = output["token"].as_str().filter(|t| t.len() >= 2) {
        secrets.push(token.to_string());
    }
    secrets
}

/// Last line of defence for every refusal of `text`: no secret of it, no control character.
fn scrub_error(error: ConfigError, text: &str) -> ConfigError {
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
        let network = self.network.validate()?;
        let leds = self.leds.validate()?;
        let audio = self.audio.validate()?;
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
            audio,
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
        let pattern = match (self.kind, self.pattern) {
            (SourceKind::Test, p) => p.unwrap_or_default(),
            (_, None) => TestPattern::default(),
            (_, Some(_)) => {
                return Err(ConfigError::invalid(
                    "source.pattern",
                    "only the test source (kind: test) has a pattern",
                ));
            }
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
            pattern,
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
        let min_bitrate_kbps = match self.min_bitrate_kbps {
            None => DEFAULT_MIN_BITRATE_KBPS.min(bitrate_kbps),
            Some(min) if min > bitrate_kbps => {
                return Err(ConfigError::invalid(
                    "encoder.min_bitrate_kbps",
                    format!("{min} is above encoder.bitrate_kbps ({bitrate_kbps})"),
                ));
            }
            Some(min) => check_range("encoder.min_bitrate_kbps", min, 50, 50_000)?,
        };
        Ok(EncoderConfig {
            kind: self.kind.unwrap_or(EncoderKind::Auto),
            bitrate_kbps,
            min_bitrate_kbps,
            adapt: self.adapt.unwrap_or(true),
            keyframe_interval_ms,
        })
    }
}

impl RawOutput {
    fn validate(self) -> Result<OutputConfig, ConfigError> {
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

// ---- placeholders: what the shipped example says instead of real values ----

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
        assert_eq!(c.encoder.min_bitrate_kbps, 300);
        assert!(c.encoder.adapt);
        assert_eq!(c.source.pattern, TestPattern::Smpte);
        assert_eq!(c.reconnect, ReconnectConfig::default());
        assert_eq!(c.reconnect.max_attempts, 0);
        assert_eq!(c.status.socket, PathBuf::from("/run/onair/status.sock"));
        assert!(c.network.netlink);
        assert_eq!(c.source.on_loss, OnLoss::Slate);
        assert_eq!(c.source.slate_text, "NO SIGNAL");
        assert_eq!(c.source.slate_image, None);
        assert_eq!(c.source.retry, Duration::from_secs(2));
        assert_eq!(c.source.lost_after, Duration::from_secs(2));
        assert_eq!(c.source.pattern, TestPattern::Smpte);
        assert_eq!(c.audio, AudioConfig::default());
        assert_eq!(c.audio.kind, AudioKind::None);
        assert_eq!(
            (
                c.audio.device.as_str(),
                c.audio.channels,
                c.audio.bitrate_kbps,
                c.audio.offset_ms
            ),
            ("default", 2, 128, 0)
        );
    }

    #[test]
    fn audio_keys_are_read_and_bad_values_name_the_key() {
        let c = Config::parse(&with(
            r#"{"source": {"pattern": "sync"}, "audio": {"kind": "alsa", "device": "hw:CARD=MS2109,DEV=0",
                "channels": 1, "bitrate_kbps": 96, "offset_ms": -40}}"#,
        ))
        .unwrap();
        assert_eq!(c.source.pattern, TestPattern::Sync);
        assert_eq!(
            c.audio,
            AudioConfig {
                kind: AudioKind::Alsa,
                device: "hw:CARD=MS2109,DEV=0".into(),
                channels: 1,
                bitrate_kbps: 96,
                offset_ms: -40,
            }
        );
        for (patch, key) in [
            (r#"{"audio": {"kind": "pulse"}}"#, "audio.kind"),
            (r#"{"audio": {"device": ""}}"#, "audio.device"),
            (r#"{"audio": {"device": "hw:0 ; rm"}}"#, "audio.device"),
            (r#"{"audio": {"channels": 3}}"#, "audio.channels"),
            (r#"{"audio": {"channels": 0}}"#, "audio.channels"),
            (r#"{"audio": {"bitrate_kbps": 8}}"#, "audio.bitrate_kbps"),
            (r#"{"audio": {"offset_ms": 1001}}"#, "audio.offset_ms"),
            (r#"{"audio": {"offset_ms": "5"}}"#, "audio.offset_ms"),
            (r#"{"audio": {"rate": 44100}}"#, "audio.rate"),
            (r#"{"source": {"pattern": "zebra"}}"#, "source.pattern"),
        ] {
            assert_eq!(refused_key(&with(patch)), key, "{patch}");
        }
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
    fn adaptation_keys_and_test_patterns() {
        let c = Config::parse(&with(
            r#"{"encoder": {"bitrate_kbps": 2500, "min_bitrate_kbps": 200, "adapt": false},
                "source": {"pattern": "noise"}}"#,
        ))
        .unwrap();
        assert_eq!(c.encoder.min_bitrate_kbps, 200);
        assert!(!c.encoder.adapt);
        assert_eq!(c.source.pattern, TestPattern::Noise);
        // The default floor never lies above the ceiling.
        let c = Config::parse(&with(r#"{"encoder": {"bitrate_kbps": 200}}"#)).unwrap();
        assert_eq!(c.encoder.min_bitrate_kbps, 200);
        for (name, pattern) in [("smpte", TestPattern::Smpte), ("ball", TestPattern::Ball)] {
            let c =
                Config::parse(&with(&format!(r#"{{"source": {{"pattern": "{name}"}}}}"#))).unwrap();
            assert_eq!(c.source.pattern, pattern);
            assert_eq!(pattern.as_str(), name);
        }
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
            (
                r#"{"encoder": {"min_bitrate_kbps": 3000}}"#,
                "encoder.min_bitrate_kbps",
            ),
            (
                r#"{"encoder": {"min_bitrate_kbps": 10}}"#,
                "encoder.min_bitrate_kbps",
            ),
            (r#"{"encoder": {"adapt": "yes"}}"#, "encoder.adapt"),
            (r#"{"source": {"pattern": "plaid"}}"#, "source.pattern"),
            (
                r#"{"source": {"kind": "v4l2", "pattern": "noise"}}"#,
                "source.pattern",
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
    fn text_after_the_object_is_refused() {
        for tail in ["\n{}", " x", "{\"source\": 1}", "]", "\n// comment"] {
            let text = format!("{MINIMAL}{tail}");
            match Config::parse(&text) {
                Err(ConfigError::Syntax { message, .. }) => {
                    assert!(message.contains("after the end"), "{tail:?}: {message}")
                }
                other => panic!("{tail:?}: expected a refusal, got {other:?}"),
            }
        }
        // Whitespace after the object is fine.
        assert!(Config::parse(&format!("{MINIMAL}\n\r\n  \t")).is_ok());
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
    fn a_token_pasted_as_a_key_name_is_not_repeated() {
        // Where the token is also set, it is blanked out wherever it appears.
        let text = with(r#"{"output": {"s3cret-key": 1}}"#);
        let err = Config::parse(&text).unwrap_err();
        assert_eq!(err.key(), Some("output"), "{err}");
        assert!(!err.to_string().contains("s3cret-key"), "{err}");
        // Without a token to compare with, a name that does not look like a key is not shown.
        let text = r#"{"source": {"kind": "test"}, "output": {"kind": "whip", "url": "http://h/w", "sk_live_51Hx": true}}"#;
        let err = Config::parse(text).unwrap_err();
        assert_eq!(err.key(), Some("output"), "{err}");
        assert!(!err.to_string().contains("sk_live_51Hx"), "{err}");
        assert!(err.to_string().contains("not shown"), "{err}");
        // A typo is still named.
        let err = Config::parse(&with(r#"{"source": {"colour": 1}}"#)).unwrap_err();
        assert_eq!(err.key(), Some("source.colour"), "{err}");
        assert!(err.to_string().contains("expected one of"), "{err}");
    }

    #[test]
    fn control_characters_never_reach_a_refusal() {
        let err = Config::parse(&with(r#"{"source": {"\u001b[31mred": 1}}"#)).unwrap_err();
        assert!(!err.to_string().chars().any(char::is_control), "{err:?}");
        let err = Config::parse("{\"source\": \u{1b}").unwrap_err();
        assert!(!err.to_string().chars().any(char::is_control), "{err:?}");
    }

    #[test]
    fn files_that_are_not_files_are_refused_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        for (path, what) in [
            (fifo.as_path(), "FIFO"),
            (Path::new("/dev/zero"), "device"),
            (dir.path(), "directory"),
        ] {
            let err = Config::load(path).unwrap_err();
            assert!(
                matches!(err, ConfigError::NotAFile { .. }) && err.to_string().contains(what),
                "{}: {err}",
                path.display()
            );
        }
        let big = dir.path().join("big.json");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(MAX_CONFIG_BYTES + 1).unwrap();
        assert!(matches!(
            Config::load(&big).unwrap_err(),
            ConfigError::TooLarge { .. }
        ));
    }

    #[test]
    fn uplink_preferences_and_paths() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.network, NetworkConfig::default());
        assert_eq!(c.network.paths, PathsMode::Steer);
        assert_eq!(c.network.settle, Duration::from_secs(5));
        let c = Config::parse(&with(
            r#"{"network": {"prefer": ["eth*", "wlan0"], "settle_ms": 0, "paths": "follow", "route_table": 2000}}"#,
        ))
        .unwrap();
        assert_eq!(c.network.settle, Duration::ZERO);
        assert_eq!(c.network.paths, PathsMode::Follow);
        assert_eq!(c.network.route_table, 2000);
        // What the patterns rank is net's to say (net/interface_patterns.rs); here, that they
        // are read in order.
        assert_eq!(c.network.prefer, ["eth*", "wlan0"]);
        for (patch, key) in [
            (r#"{"network": {"prefer": [""]}}"#, "network.prefer[0]"),
            (
                r#"{"network": {"prefer": ["eth0", "*"]}}"#,
                "network.prefer[1]",
            ),
            (
                r#"{"network": {"settle_ms": 3600001}}"#,
                "network.settle_ms",
            ),
            (r#"{"network": {"settle_ms": -1}}"#, "network.settle_ms"),
            (r#"{"network": {"paths": "bond"}}"#, "network.paths"),
            (
                r#"{"network": {"route_table": 254}}"#,
                "network.route_table",
            ),
            (r#"{"network": {"route_table": 0}}"#, "network.route_table"),
            (
                r#"{"network": {"route_table": 4294967295}}"#,
                "network.route_table",
            ),
            (
                r#"{"network": {"interfaces": [""]}}"#,
                "network.interfaces[0]",
            ),
        ] {
            assert_eq!(refused_key(&with(patch)), key, "{patch}");
        }
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

#[cfg(test)]
mod placeholder_tests {
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
