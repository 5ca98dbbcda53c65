//! `onair update FILE`: check the bundle, install it into the inactive slot while the stream
//! goes on, and reboot into it once (the firmware's tryboot). The new system judges itself at
//! boot (`onair update-check`); until it is kept, any reboot returns to this one.

use super::rauc::{Rauc, RaucError};
use super::record::{self, Record};
use crate::status::client;
use crate::status::update::{self as doc, Phase, UpdateOutcome};
use std::path::{Path, PathBuf};

/// What `onair update` needs to know about the box.
#[derive(Debug, Clone)]
pub struct Install {
    pub bundle: PathBuf,
    pub rauc: Rauc,
    /// The daemon's status socket: was the box live?
    pub socket: PathBuf,
    pub record: PathBuf,
    /// The daemon's state directory: `onair status` shows the update's progress from there.
    pub state_dir: PathBuf,
    /// Reboot into the new system at the end (the default); without, the next plain reboot
    /// stays on this one.
    pub reboot: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("refused {}: {reason}", bundle.display())]
    Refused { bundle: PathBuf, reason: String },
    #[error("the install failed: {0}; the box stays on its current system")]
    Failed(String),
    #[error(transparent)]
    Record(#[from] record::RecordError),
    #[error(
        "cannot reboot into the new system: {0} (run `systemctl reboot --reboot-argument='0 tryboot'`)"
    )]
    Reboot(String),
}

/// RAUC's refusal of a bundle, in words an owner acts on.
pub fn refusal(message: &str) -> String {
    let m = message.to_lowercase();
    let what = if m.contains("compatible") {
        "it is for another kind of box"
    } else if m.contains("signature") && (m.contains("size") || m.contains("exceed"))
        || m.contains("truncat")
        || m.contains("too small")
        || m.contains("bundle size")
        || m.contains("invalid bundle")
        || m.contains("squashfs")
        || m.contains("unexpected end")
        || m.contains("short")
    {
        "it is not a whole bundle (truncated or damaged: copy it again)"
    } else if m.contains("signature")
        || m.contains("certificate")
        || m.contains("verif")
        || m.contains("keyring")
        || m.contains("cms")
    {
        "it is not signed by a key this box trusts"
    } else if m.contains("no such file") || m.contains("not found") {
        "there is no such file"
    } else {
        "RAUC cannot use it"
    };
    format!("{what} (RAUC: {message})")
}

impl Install {
    /// Runs the whole update; `say` prints one line for the person.
    pub async fn run(
        &self,
        say: impl Fn(&str) + Send + Sync + Clone + 'static,
    ) -> Result<(), InstallError> {
        let refused = |reason: String| InstallError::Refused {
            bundle: self.bundle.clone(),
            reason,
        };
        if !self.bundle.is_file() {
            return Err(refused("there is no such file".into()));
        }
        let system =
            self.rauc.status().await.map_err(|e| {
                InstallError::Failed(format!("cannot read the system's slots: {e}"))
            })?;
        if system.primary.as_deref() != Some(system.booted.as_str()) {
            return Err(refused(format!(
                "the box is trying an update right now (slot {}); wait until it has judged it \
                 (`onair status`)",
                system.booted
            )));
        }
        let target = system
            .other()
            .ok_or_else(|| InstallError::Failed("RAUC names no other slot to write".into()))?
            .bootname
            .clone();
        let info = match self.rauc.info(&self.bundle).await {
            Ok(info) => info,
            Err(RaucError::Failed { message, .. }) => {
                let reason = refusal(&message);
                self.remember_refusal(&system.booted, &target, "unknown", &reason, &say);
                return Err(refused(reason));
            }
            Err(e) => return Err(InstallError::Failed(e.to_string())),
        };
        if info.compatible != system.compatible {
            let reason = format!(
                "it is for another kind of box ({}; this box is {})",
                info.compatible, system.compatible
            );
            self.remember_refusal(&system.booted, &target, &info.version, &reason, &say);
            return Err(refused(reason));
        }
        let (was_live, uplinks) = self.daemon_now().await;
        say(&format!(
            "installing {} (version {}) into slot {target}; the box stays on slot {} and {} \
             meanwhile",
            self.bundle.display(),
            info.version,
            system.booted,
            if was_live {
                "streams on"
            } else {
                "goes on as it is"
            }
        ));
        let booted_version = system
            .slot(&system.booted)
            .and_then(|s| s.version.clone())
            .or_else(super::image_version);
        let mut rec = Record {
            last: UpdateOutcome {
                phase: Phase::Installing,
                version: info.version.clone(),
                slot: target.clone(),
                reason: None,
                at: super::unix_now(),
            },
            from_slot: system.booted.clone(),
            from_version: booted_version,
            was_live,
            uplinks,
        };
        self.save(&rec)?;
        let started = std::time::Instant::now();
        let progress = say.clone();
        if let Err(e) = self.rauc.install(&self.bundle, move |l| progress(l)).await {
            let message = e.to_string();
            rec.last.phase = Phase::Failed;
            rec.last.reason = Some(match &e {
                RaucError::Failed { .. } => refusal(&message),
                _ => message.clone(),
            });
            rec.last.at = super::unix_now();
            self.save(&rec)?;
            return Err(match e {
                RaucError::Failed { message, .. } => refused(refusal(&message)),
                other => InstallError::Failed(other.to_string()),
            });
        }
        rec.last.phase = Phase::Trying;
        rec.last.reason = Some(format!(
            "installed in {} s; booting it once to judge it",
            started.elapsed().as_secs()
        ));
        rec.last.at = super::unix_now();
        self.save(&rec)?;
        say(&format!(
            "installed version {} into slot {target} in {} s",
            info.version,
            started.elapsed().as_secs()
        ));
        if !self.reboot {
            say(
                "not rebooting (--no-reboot): `systemctl reboot --reboot-argument='0 tryboot'` tries it; a plain reboot stays on this system",
            );
            return Ok(());
        }
        say(&format!(
            "rebooting into slot {target} once (tryboot): it is kept only if it {}; otherwise \
             the box comes back to slot {} by itself",
            if was_live {
                "goes live again"
            } else {
                "starts"
            },
            system.booted
        ));
        reboot_tryboot().await
    }

    /// Whether the daemon is live now, and the interface it streams over.
    async fn daemon_now(&self) -> (bool, Vec<String>) {
        match client::status(&self.socket).await {
            Ok(s) => {
                let live = s.state == crate::supervisor::StreamState::Live;
                let uplinks = s
                    .network
                    .path
                    .map(|p| vec![p.interface])
                    .filter(|_| live)
                    .unwrap_or_default();
                (live, uplinks)
            }
            Err(_) => (false, Vec::new()),
        }
    }

    /// A refused bundle is the last update's outcome too (`onair status` says why); failing
    /// to write that is not worth hiding the refusal behind.
    fn remember_refusal(
        &self,
        booted: &str,
        target: &str,
        version: &str,
        reason: &str,
        say: &impl Fn(&str),
    ) {
        let rec = Record {
            last: UpdateOutcome {
                phase: Phase::Failed,
                version: version.to_string(),
                slot: target.to_string(),
                reason: Some(format!("refused: {reason}")),
                at: super::unix_now(),
            },
            from_slot: booted.to_string(),
            from_version: None,
            was_live: false,
            uplinks: Vec::new(),
        };
        if let Err(e) = self.save(&rec) {
            say(&format!("(could not record the refusal: {e})"));
        }
    }

    /// Writes the record, and shows its outcome in `onair status` at once (the checker
    /// writes the rest of that document at boot).
    fn save(&self, rec: &Record) -> Result<(), record::RecordError> {
        record::write(&self.record, rec)?;
        let mut shown = doc::read(&self.state_dir).unwrap_or_default();
        shown.last = Some(rec.last.clone());
        // Status is a report: the record above is what counts.
        let _ = doc::write(&self.state_dir, &shown);
        Ok(())
    }
}

/// `reboot '0 tryboot'`: systemd passes the argument to reboot(2) (`--reboot-argument`, systemd
/// 252 and later; the positional form is deprecated), the Pi's firmware driver
/// turns it into the one-shot tryboot flag (the emulated box's harness reads it from the
/// kernel's last words).
async fn reboot_tryboot() -> Result<(), InstallError> {
    let out = tokio::process::Command::new("systemctl")
        .args(["reboot", "--reboot-argument=0 tryboot"])
        .stdin(std::process::Stdio::null())
        .output();
    match tokio::time::timeout(std::time::Duration::from_secs(60), out).await {
        Ok(Ok(o)) if o.status.success() => Ok(()),
        Ok(Ok(o)) => Err(InstallError::Reboot(
            String::from_utf8_lossy(&o.stderr).trim().to_string(),
        )),
        Ok(Err(e)) => Err(InstallError::Reboot(e.to_string())),
        Err(_) => Err(InstallError::Reboot("systemctl did not answer".into())),
    }
}

/// The default paths on the box.
pub fn default_record() -> PathBuf {
    Path::new(record::DEFAULT_PATH).to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A `rauc` that answers as RAUC 1.8 does on a box booted from `booted` with `primary` the
    /// default, refuses bundles whose name says so, and logs every call.
    fn fake_rauc(dir: &Path, booted: &str, primary: &str) -> PathBuf {
        let slot = |name: &str, bootname: &str| {
            format!(
                r#"{{"{name}":{{"class":"rootfs","device":"/dev/x{bootname}","bootname":"{bootname}","state":"inactive"}}}}"#
            )
        };
        let status = format!(
            r#"{{"compatible":"onair-test","booted":"{booted}","boot_primary":"rootfs.{}","slots":[{},{}]}}"#,
            if primary == "A" { 0 } else { 1 },
            slot("rootfs.0", "A"),
            slot("rootfs.1", "B")
        );
        let script = format!(
            r#"#!/bin/sh
echo "$*" >>"{log}"
case "$1 $2" in
"status --detailed") echo '{status}' ;;
info*)
    case $3 in
    *other-key*) echo "rauc-Message: Reading bundle: $3" >&2
        echo "signature verification failed: Verify error: self-signed certificate" >&2; exit 1 ;;
    *) echo '{{"compatible":"onair-test","version":"2"}}' ;;
    esac ;;
install*) echo " 20% Checking bundle"; echo " 80% Copying image to rootfs.1"; echo "Installing done." ;;
*) exit 1 ;;
esac
"#,
            log = dir.join("calls").display()
        );
        let path = dir.join("rauc");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        path
    }

    fn install(dir: &Path, bundle: &str, booted: &str, primary: &str) -> Install {
        let file = dir.join(bundle);
        std::fs::write(&file, "a bundle").unwrap();
        std::fs::create_dir_all(dir.join("run")).unwrap();
        Install {
            bundle: file,
            rauc: Rauc::at(fake_rauc(dir, booted, primary)),
            socket: dir.join("no-daemon.sock"),
            record: dir.join("data/update.json"),
            state_dir: dir.join("run"),
            reboot: false,
        }
    }

    fn said() -> (
        Arc<Mutex<Vec<String>>>,
        impl Fn(&str) + Send + Sync + Clone + 'static,
    ) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        (lines, move |s: &str| l.lock().unwrap().push(s.to_string()))
    }

    #[tokio::test]
    async fn a_good_bundle_is_installed_into_the_other_slot_and_recorded_as_trying() {
        let dir = tempfile::tempdir().expect("tempdir");
        let job = install(dir.path(), "good.raucb", "A", "A");
        let (lines, say) = said();
        job.run(say).await.expect("installed");
        let rec = record::read(&job.record).expect("a record");
        assert_eq!(rec.last.phase, Phase::Trying);
        assert_eq!(
            (rec.last.slot.as_str(), rec.last.version.as_str()),
            ("B", "2")
        );
        assert_eq!(rec.from_slot, "A");
        assert!(!rec.was_live, "no daemon answered");
        let shown = doc::read(&job.state_dir).expect("status document");
        assert_eq!(shown.last.map(|l| l.phase), Some(Phase::Trying));
        let calls = std::fs::read_to_string(dir.path().join("calls")).unwrap();
        assert!(calls.contains("install "), "{calls}");
        let lines = lines.lock().unwrap().join("\n");
        assert!(
            lines.contains(" 80% Copying image to rootfs.1"),
            "RAUC's progress shown: {lines}"
        );
        assert!(lines.contains("installed version 2 into slot B"), "{lines}");
    }

    #[tokio::test]
    async fn a_bundle_signed_by_another_key_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let job = install(dir.path(), "other-key.raucb", "A", "A");
        let (_, say) = said();
        let err = job.run(say).await.expect_err("refused");
        assert!(
            err.to_string()
                .contains("other-key.raucb: it is not signed by a key this box trusts"),
            "{err}"
        );
        let calls = std::fs::read_to_string(dir.path().join("calls")).unwrap();
        assert!(
            !calls.contains("install "),
            "RAUC never asked to install: {calls}"
        );
        let rec = record::read(&job.record).expect("the refusal is recorded");
        assert_eq!(rec.last.phase, Phase::Failed);
        assert!(
            rec.last
                .reason
                .as_deref()
                .is_some_and(|r| r.starts_with("refused: it is not signed"))
        );
        assert_eq!(
            doc::read(&job.state_dir)
                .and_then(|d| d.last)
                .map(|l| l.phase),
            Some(Phase::Failed),
            "onair status says so at once"
        );
    }

    #[tokio::test]
    async fn no_update_while_another_is_on_trial() {
        let dir = tempfile::tempdir().expect("tempdir");
        let job = install(dir.path(), "good.raucb", "B", "A");
        let (_, say) = said();
        let err = job.run(say).await.expect_err("refused");
        assert!(
            err.to_string()
                .contains("trying an update right now (slot B)"),
            "{err}"
        );
        let calls = std::fs::read_to_string(dir.path().join("calls")).unwrap();
        assert!(!calls.contains("install "), "{calls}");
    }

    #[test]
    fn refusals_say_what_to_do() {
        let signed = refusal(
            "Failed to verify bundle: signature verification failed: \
             Verify error:unable to get local issuer certificate",
        );
        assert!(
            signed.starts_with("it is not signed by a key this box trusts (RAUC: Failed"),
            "{signed}"
        );
        let cut = refusal("Failed to load bundle: signature size (2011) exceeds bundle size");
        assert!(cut.starts_with("it is not a whole bundle"), "{cut}");
        let other = refusal(
            "Compatible mismatch: Expected 'onair-rpi4' but bundle manifest has 'onair-rpi5'",
        );
        assert!(
            other.starts_with("it is for another kind of box"),
            "{other}"
        );
    }
}
