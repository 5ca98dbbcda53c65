//! The thin front over RAUC's command line: bundle information, install, status, mark.
//!
//! RAUC (an established, audited update engine) does the real work: it checks the bundle's
//! signature against the box's keyring, writes the inactive slot and asks the bootloader
//! backend to try it. Its command line is a client of the RAUC service (D-Bus); that service
//! runs the install, niced so the stream goes on. Every call here is bounded in time and in
//! how much of its output is kept, and RAUC's own words reach the person, shortened.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

/// How much of a command's output is kept (its end, where RAUC puts the reason).
const MAX_OUTPUT_BYTES: usize = 64 << 10;

/// `rauc info` checks the signature over the manifest (verity bundles) in seconds.
pub const INFO_TIMEOUT: Duration = Duration::from_secs(120);
/// Status and marks are quick; the service may need to start first (D-Bus activation).
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(60);
/// An install writes a whole system; on a slow card or under emulation that takes minutes.
pub const INSTALL_TIMEOUT: Duration = Duration::from_secs(45 * 60);

#[derive(Debug, thiserror::Error)]
pub enum RaucError {
    #[error("cannot run {program}: {source} (is this an onair image with RAUC?)")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`rauc {what}` did not finish within {} s", after.as_secs())]
    Timeout { what: String, after: Duration },
    /// RAUC said no; `message` is its reason, shortened.
    #[error("{message}")]
    Failed { what: String, message: String },
    #[error("`rauc {what}` answered with something that is not its JSON: {message}")]
    BadOutput { what: String, message: String },
}

/// A bundle as `rauc info` describes it, after checking its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleInfo {
    pub compatible: String,
    pub version: String,
}

/// The system as `rauc status` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemStatus {
    pub compatible: String,
    /// The bootname of the slot this system booted (`A`).
    pub booted: String,
    /// The bootname of the slot the bootloader boots by default.
    pub primary: Option<String>,
    /// The bootable slots (those with a bootname), by bootname.
    pub slots: Vec<SlotStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotStatus {
    pub name: String,
    pub bootname: String,
    pub device: String,
    /// The version of the bundle RAUC last installed into it, if it did.
    pub version: Option<String>,
}

impl SystemStatus {
    /// The slot an install writes: the one that is not booted.
    pub fn other(&self) -> Option<&SlotStatus> {
        self.slots.iter().find(|s| s.bootname != self.booted)
    }

    pub fn slot(&self, bootname: &str) -> Option<&SlotStatus> {
        self.slots.iter().find(|s| s.bootname == bootname)
    }
}

/// The `rauc` program (a path, for tests and other installs).
#[derive(Debug, Clone)]
pub struct Rauc {
    program: PathBuf,
}

impl Default for Rauc {
    fn default() -> Self {
        Rauc {
            program: PathBuf::from("rauc"),
        }
    }
}

impl Rauc {
    pub fn at(program: impl Into<PathBuf>) -> Rauc {
        Rauc {
            program: program.into(),
        }
    }

    /// Checks the bundle's signature against the box's keyring and reads its manifest.
    pub async fn info(&self, bundle: &Path) -> Result<BundleInfo, RaucError> {
        let out = self
            .run(
                "info",
                &[
                    "info".as_ref(),
                    "--output-format=json".as_ref(),
                    bundle.as_os_str(),
                ],
                INFO_TIMEOUT,
            )
            .await?;
        parse_info(&out).map_err(|message| RaucError::BadOutput {
            what: "info".into(),
            message,
        })
    }

    pub async fn status(&self) -> Result<SystemStatus, RaucError> {
        let args = ["status", "--detailed", "--output-format=json"];
        let out = self
            .run("status", &args.map(AsRef::as_ref), STATUS_TIMEOUT)
            .await?;
        parse_status(&out).map_err(|message| RaucError::BadOutput {
            what: "status".into(),
            message,
        })
    }

    /// Installs the bundle into the inactive slot. RAUC's progress lines go to `progress` as
    /// they come (the person's terminal).
    pub async fn install(
        &self,
        bundle: &Path,
        progress: impl Fn(&str) + Send + 'static,
    ) -> Result<(), RaucError> {
        let mut child = self.spawn(&["install".as_ref(), bundle.as_os_str()])?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let lines = tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                progress(&one_line(&line, 200));
            }
        });
        let err = tokio::spawn(read_tail(stderr));
        let finished = tokio::time::timeout(INSTALL_TIMEOUT, child.wait()).await;
        let status = match finished {
            Ok(status) => status.map_err(|source| self.spawn_error(source))?,
            Err(_) => {
                let _ = child.kill().await;
                return Err(RaucError::Timeout {
                    what: "install".into(),
                    after: INSTALL_TIMEOUT,
                });
            }
        };
        let _ = lines.await;
        let stderr = err.await.unwrap_or_default();
        if status.success() {
            Ok(())
        } else {
            Err(RaucError::Failed {
                what: "install".into(),
                message: reason(&stderr),
            })
        }
    }

    /// `rauc status mark-good` / `mark-bad` for the booted slot.
    pub async fn mark(&self, good: bool) -> Result<(), RaucError> {
        let verb = if good { "mark-good" } else { "mark-bad" };
        self.run(verb, &["status".as_ref(), verb.as_ref()], STATUS_TIMEOUT)
            .await
            .map(|_| ())
    }

    fn spawn(&self, args: &[&std::ffi::OsStr]) -> Result<tokio::process::Child, RaucError> {
        // Where exec is emulated (qemu-user, as on the cross-test host) a missing program is
        // not an error from spawn but an exit 127 with nothing said; looking first names it.
        if self.program.components().count() > 1 {
            std::fs::metadata(&self.program).map_err(|source| self.spawn_error(source))?;
        }
        Command::new(&self.program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| self.spawn_error(source))
    }

    fn spawn_error(&self, source: std::io::Error) -> RaucError {
        RaucError::Spawn {
            program: self.program.display().to_string(),
            source,
        }
    }

    /// Runs one command to its end; its stdout on success, RAUC's reason otherwise.
    async fn run(
        &self,
        what: &str,
        args: &[&std::ffi::OsStr],
        limit: Duration,
    ) -> Result<String, RaucError> {
        let mut child = self.spawn(args)?;
        let stdout = tokio::spawn(read_tail(child.stdout.take().expect("stdout is piped")));
        let stderr = tokio::spawn(read_tail(child.stderr.take().expect("stderr is piped")));
        let status = match tokio::time::timeout(limit, child.wait()).await {
            Ok(status) => status.map_err(|source| self.spawn_error(source))?,
            Err(_) => {
                let _ = child.kill().await;
                return Err(RaucError::Timeout {
                    what: what.into(),
                    after: limit,
                });
            }
        };
        let stdout = stdout.await.unwrap_or_default();
        let stderr = stderr.await.unwrap_or_default();
        if status.success() {
            Ok(stdout)
        } else {
            let text = if stderr.trim().is_empty() {
                stdout
            } else {
                stderr
            };
            Err(RaucError::Failed {
                what: what.into(),
                message: reason(&text),
            })
        }
    }
}

/// Reads a stream to its end, keeping at most its last [`MAX_OUTPUT_BYTES`].
async fn read_tail(mut from: impl AsyncRead + Unpin) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > MAX_OUTPUT_BYTES {
                    kept.drain(..kept.len() - MAX_OUTPUT_BYTES);
                }
            }
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// RAUC's reason in one line: its last non-empty line (where it says why), without the
/// program's prefixes.
pub fn reason(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter(|l| !l.starts_with("installing") && !l.contains("% "))
        .collect();
    let tail = &lines[lines.len().saturating_sub(1)..];
    let text = tail
        .iter()
        .map(|l| {
            l.trim_start_matches("rauc-Message: ")
                .trim_start_matches("rauc: ")
        })
        .collect::<Vec<_>>()
        .join(" ");
    if text.is_empty() {
        "RAUC failed without saying why".into()
    } else {
        one_line(&text, 400)
    }
}

/// Control characters out, cut to `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match flat.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &flat[..i]),
        None => flat,
    }
}

fn field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

pub fn parse_info(json: &str) -> Result<BundleInfo, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Ok(BundleInfo {
        compatible: field(&v, "compatible").ok_or("no compatible")?.into(),
        version: field(&v, "version").unwrap_or("unknown").into(),
    })
}

/// `rauc status --detailed --output-format=json` (RAUC 1.8): `booted` is a bootname,
/// `boot_primary` a slot name, `slots` an array of one-key objects.
pub fn parse_status(json: &str) -> Result<SystemStatus, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let booted = field(&v, "booted").ok_or("no booted slot")?.to_string();
    let mut slots = Vec::new();
    let mut primary_name = field(&v, "boot_primary").map(str::to_string);
    for entry in v.get("slots").and_then(Value::as_array).ok_or("no slots")? {
        let Some(obj) = entry.as_object() else {
            continue;
        };
        for (name, slot) in obj {
            let Some(bootname) = field(slot, "bootname") else {
                continue;
            };
            if primary_name.as_deref() == Some(name.as_str()) {
                primary_name = Some(bootname.to_string());
            }
            slots.push(SlotStatus {
                name: name.clone(),
                bootname: bootname.to_string(),
                device: field(slot, "device").unwrap_or_default().to_string(),
                version: slot
                    .pointer("/slot_status/bundle/version")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            });
        }
    }
    slots.sort_by(|a, b| a.bootname.cmp(&b.bootname));
    let primary = primary_name.filter(|p| slots.iter().any(|s| &s.bootname == p));
    Ok(SystemStatus {
        compatible: field(&v, "compatible").unwrap_or_default().to_string(),
        booted,
        primary,
        slots,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As RAUC 1.8 prints it on the emulated box (trimmed).
    const STATUS: &str = r#"{"compatible":"onair-qemu-debian","variant":"","booted":"B",
        "boot_primary":"rootfs.0","slots":[
        {"rootfs.1":{"class":"rootfs","device":"/dev/vdd","type":"ext4","bootname":"B",
          "state":"booted","parent":null,"mountpoint":"/","boot_status":"good",
          "slot_status":{"bundle":{"compatible":"onair-qemu-debian","version":"2"},
          "status":"ok"}}},
        {"rootfs.0":{"class":"rootfs","device":"/dev/vda","type":"ext4","bootname":"A",
          "state":"inactive","parent":null,"mountpoint":null,"boot_status":"good"}},
        {"boot.0":{"class":"boot","device":"/dev/mmcblk0p2","type":"vfat","bootname":null,
          "state":"inactive","parent":"rootfs.0"}}]}"#;

    #[test]
    fn status_names_the_booted_and_primary_slots_by_bootname() {
        let s = parse_status(STATUS).expect("parses");
        assert_eq!(s.booted, "B");
        assert_eq!(s.primary.as_deref(), Some("A"));
        assert_eq!(s.compatible, "onair-qemu-debian");
        assert_eq!(
            s.slots
                .iter()
                .map(|s| (s.bootname.as_str(), s.version.as_deref()))
                .collect::<Vec<_>>(),
            [("A", None), ("B", Some("2"))],
            "child slots without a bootname are left out"
        );
        assert_eq!(s.other().map(|s| s.device.as_str()), Some("/dev/vda"));
    }

    #[test]
    fn status_without_a_primary_or_in_another_shape_is_said_so() {
        let s =
            parse_status(&STATUS.replace(r#""boot_primary":"rootfs.0""#, r#""boot_primary":null"#))
                .expect("parses");
        assert_eq!(s.primary, None);
        assert!(parse_status("{}").is_err());
        assert!(parse_status("rauc: not json").is_err());
    }

    #[test]
    fn info_gives_the_version() {
        let i = parse_info(r#"{"compatible":"onair-rpi4","version":"2026.12.07","hooks":[]}"#)
            .expect("parses");
        assert_eq!(
            i,
            BundleInfo {
                compatible: "onair-rpi4".into(),
                version: "2026.12.07".into()
            }
        );
    }

    #[test]
    fn reasons_are_rauc_last_words_on_one_line() {
        assert_eq!(
            reason(
                "rauc-Message: 12:00:01.000: Reading bundle\nrauc: Failed to verify bundle signature: signature verification failed: certificate verify error\n"
            ),
            "Failed to verify bundle signature: signature verification failed: certificate verify \
             error"
        );
        assert_eq!(reason("\n\n"), "RAUC failed without saying why");
        let long = "x".repeat(1000);
        assert_eq!(reason(&long).chars().count(), 401);
        assert_eq!(reason("a\x1b[31mb"), "a [31mb");
    }

    #[tokio::test]
    async fn a_missing_rauc_is_said_plainly() {
        let err = Rauc::at("/nonexistent/rauc")
            .status()
            .await
            .expect_err("no such program");
        assert!(
            err.to_string()
                .starts_with("cannot run /nonexistent/rauc: No such file or directory"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_command_that_fails_gives_its_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = dir.path().join("rauc");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho 'rauc: Failed to check bundle: invalid signature' >&2\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let err = Rauc::at(&fake)
            .info(Path::new("/x.raucb"))
            .await
            .expect_err("fails");
        assert_eq!(err.to_string(), "Failed to check bundle: invalid signature");
    }
}
