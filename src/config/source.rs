//! The `source` section: the picture the box captures (test pattern, V4L2, libcamera), its
//! size and rate, and what happens when the input is lost (slate or disconnect).

use super::ConfigError;
use super::edid::{Edid, SHIPPED_OFFERS};
use super::ranges::{check_range, ms_in_range};
use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Test,
    V4l2,
    Libcamera,
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

/// The EDID an HDMI bridge is given (`source.edid`): the shipped one, or the owner's file,
/// read and checked with the config (a SIGHUP reads it again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdidChoice {
    /// The owner's file; `None` for the shipped EDID.
    pub file: Option<PathBuf>,
    pub edid: Edid,
}

impl EdidChoice {
    /// `shipped (1080p30/25/24, ...)` or the file's path, for the log and `onair status`.
    pub fn describe(&self) -> String {
        match &self.file {
            None => format!("shipped ({SHIPPED_OFFERS})"),
            Some(path) => path.display().to_string(),
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
    /// What an HDMI bridge (a device that takes an EDID) is given before every capture.
    pub edid: EdidChoice,
}

/// The longest slate message: it must fit on a small picture in one line.
pub const MAX_SLATE_TEXT: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
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
    edid: Option<PathBuf>,
}

impl RawSource {
    pub(super) fn validate(self) -> Result<SourceConfig, ConfigError> {
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
        let edid = match (self.kind, self.edid) {
            (_, None) => EdidChoice {
                file: None,
                edid: Edid::shipped(),
            },
            (SourceKind::V4l2, Some(path)) if path.as_os_str().is_empty() => {
                return Err(ConfigError::invalid("source.edid", "path is empty"));
            }
            (SourceKind::V4l2, Some(path)) => {
                let edid = Edid::read(&path).map_err(|why| {
                    ConfigError::invalid("source.edid", format!("{}: {why}", path.display()))
                })?;
                EdidChoice {
                    file: Some(path),
                    edid,
                }
            }
            (_, Some(_)) => {
                return Err(ConfigError::invalid(
                    "source.edid",
                    "only a v4l2 source (an HDMI bridge) takes an EDID",
                ));
            }
        };
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
            edid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::test_support::{assert_refusals_name, with};
    use std::path::Path;

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
    fn an_edid_file_is_read_and_checked_with_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("edid.bin");
        std::fs::write(&file, Edid::shipped().bytes()).unwrap();
        let v4l2 = |path: &Path| {
            with(&format!(
                r#"{{"source": {{"kind": "v4l2", "edid": {}}}}}"#,
                serde_json::to_string(&path.display().to_string()).unwrap()
            ))
        };
        let c = Config::parse(&v4l2(&file)).unwrap();
        assert_eq!(c.source.edid.file.as_deref(), Some(file.as_path()));
        assert_eq!(c.source.edid.edid, Edid::shipped());
        assert_eq!(c.source.edid.describe(), file.display().to_string());
        // Without the key: the shipped EDID.
        let c = Config::parse(&with(r#"{"source": {"kind": "v4l2"}}"#)).unwrap();
        assert_eq!(c.source.edid.file, None);
        assert!(c.source.edid.describe().starts_with("shipped (1080p30"));
        // A file that is not an EDID is refused naming the key, the file and why.
        let mut broken = Edid::shipped().bytes().to_vec();
        broken[130] ^= 1;
        std::fs::write(&file, &broken).unwrap();
        let err = Config::parse(&v4l2(&file)).unwrap_err();
        assert_eq!(err.key(), Some("source.edid"), "{err}");
        assert!(
            err.to_string().contains("block 1 has a wrong checksum"),
            "{err}"
        );
        let err = Config::parse(&v4l2(Path::new("/dev/zero"))).unwrap_err();
        assert!(err.to_string().contains("a device"), "{err}");
    }

    #[test]
    fn refusals_name_the_key() {
        assert_refusals_name(&[
            (r#"{"source": {"fps": 0}}"#, "source.fps"),
            (r#"{"source": {"width": 641}}"#, "source.width"),
            (r#"{"source": {"kind": "hdmi"}}"#, "source.kind"),
            (r#"{"source": {"fps": "30"}}"#, "source.fps"),
            (r#"{"source": {"colour": 1}}"#, "source"),
            (r#"{"source": {"pattern": "plaid"}}"#, "source.pattern"),
            (
                r#"{"source": {"kind": "v4l2", "pattern": "noise"}}"#,
                "source.pattern",
            ),
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
            (r#"{"source": {"edid": "/data/edid.bin"}}"#, "source.edid"),
            (
                r#"{"source": {"kind": "v4l2", "edid": "/nonexistent/edid.bin"}}"#,
                "source.edid",
            ),
            (r#"{"source": {"kind": "v4l2", "edid": ""}}"#, "source.edid"),
        ]);
    }
}
