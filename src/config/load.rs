//! From a file or text to a [`Config`] or a [`ConfigError`]: the file is read within its limits
//! (a regular file, at most [`MAX_CONFIG_BYTES`], no waiting on a FIFO), the text parsed into
//! the raw serde mirror, serde's refusals turned into one naming the key at fault, and every
//! refusal scrubbed of the text's secrets before it leaves.

use super::scrub::{scrub_error, scrub_serde_message};
use super::{Config, ConfigError, RawConfig};
use std::path::{Path, PathBuf};

/// A config is a few KiB; a file larger than this is a mistake (or `/dev/zero` behind a name),
/// never a config, and is refused before it is read.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

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
}

/// Reads the config file within its limits (see [`read_regular_file`]) as UTF-8 text.
fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    let bytes = read_regular_file(path, MAX_CONFIG_BYTES).map_err(|refusal| match refusal {
        FileRefusal::Io(source) => ConfigError::Read {
            path: path.to_path_buf(),
            source,
        },
        FileRefusal::NotAFile(what) => ConfigError::NotAFile {
            path: path.to_path_buf(),
            what,
        },
        FileRefusal::TooLarge(size) => ConfigError::TooLarge {
            path: path.to_path_buf(),
            size,
        },
    })?;
    String::from_utf8(bytes).map_err(|_| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: "is not UTF-8 text".into(),
    })
}

/// Why a file a config names (or the config itself, or another small file the daemon reads)
/// was not read.
#[derive(Debug)]
pub enum FileRefusal {
    Io(std::io::Error),
    /// What it is instead: `a directory`, `a FIFO (named pipe)`, `a device`, ...
    NotAFile(&'static str),
    /// Its size in bytes, over the limit.
    TooLarge(u64),
}

impl std::fmt::Display for FileRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileRefusal::Io(e) => write!(f, "cannot be read: {e}"),
            FileRefusal::NotAFile(what) => write!(f, "is {what}, not a regular file"),
            FileRefusal::TooLarge(size) => write!(f, "is too large ({size} bytes)"),
        }
    }
}

/// Opens without waiting for a FIFO's writer (O_NONBLOCK), checks what the path is on the open
/// file itself (no race with a rename), and reads at most `max` bytes (a file may grow after
/// the check).
pub fn read_regular_file(path: &Path, max: u64) -> Result<Vec<u8>, FileRefusal> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(FileRefusal::Io)?;
    let meta = file.metadata().map_err(FileRefusal::Io)?;
    let kind = meta.file_type();
    if kind.is_dir() {
        return Err(FileRefusal::NotAFile("a directory"));
    } else if kind.is_fifo() {
        return Err(FileRefusal::NotAFile("a FIFO (named pipe)"));
    } else if kind.is_char_device() || kind.is_block_device() {
        return Err(FileRefusal::NotAFile("a device"));
    } else if kind.is_socket() {
        return Err(FileRefusal::NotAFile("a socket"));
    } else if !kind.is_file() {
        return Err(FileRefusal::NotAFile("something else"));
    }
    if meta.len() > max {
        return Err(FileRefusal::TooLarge(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(FileRefusal::Io)?;
    if bytes.len() as u64 > max {
        return Err(FileRefusal::TooLarge(bytes.len() as u64));
    }
    Ok(bytes)
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

fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split_once('`').map(|(field, _)| field)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{MINIMAL, with};

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
}
