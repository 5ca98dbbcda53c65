//! `onair update-check`: run once at every boot (onair-update-check.service). It settles the
//! update record, tells status which system runs, and, when this boot is the one try of a new
//! system, watches the daemon until [`Trial`] decides: kept (RAUC marks the slot good, which
//! makes it the firmware's default) or left (the checker exits with failure and systemd's
//! `FailureAction=reboot` boots the old system; a crash or hang of the checker does the same).

use super::rauc::{Rauc, SystemStatus};
use super::record::{self, Boot, Record};
use super::verdict::{Observation, Rules, Trial, Verdict};
use crate::status::client;
use crate::status::update::{self as doc, Phase, UpdateSnapshot};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct Check {
    pub rauc: Rauc,
    pub socket: PathBuf,
    pub record: PathBuf,
    /// Where the status document goes (the daemon's state directory).
    pub state_dir: PathBuf,
    pub rules: Rules,
    /// Where interfaces are looked up (`/sys/class/net`).
    pub net_dir: PathBuf,
    pub poll: Duration,
}

/// How the check ended; anything but [`Outcome::Left`] exits 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A normal boot: nothing to judge.
    Normal,
    /// The system on trial was kept.
    Kept(String),
    /// The system on trial was left: reboot into the old one.
    Left(String),
    /// RAUC could not say which system runs; nothing was judged.
    Unknown(String),
}

impl Check {
    pub async fn run(&self, say: impl Fn(&str)) -> Outcome {
        let system = match self.rauc.status().await {
            Ok(s) => s,
            Err(e) => {
                // Without knowing the slots nothing can be judged; a reboot could loop, so
                // the box runs on (a trial that is never kept ends at the next reboot).
                say(&format!("cannot read the system's slots: {e}"));
                return Outcome::Unknown(e.to_string());
            }
        };
        let booted = system.booted.clone();
        let primary = system.primary.clone().unwrap_or_else(|| booted.clone());
        let version = booted_version(&system);
        let old = record::read(&self.record);
        let mut current = old.clone();
        if let Some(settled) = record::settle(
            old.as_ref(),
            &booted,
            version.as_deref(),
            &primary,
            super::unix_now(),
        ) {
            if settled.last.phase != Phase::Trying {
                say(&format!(
                    "last update: {} {} (slot {}): {}",
                    settled.last.phase.as_str(),
                    settled.last.version,
                    settled.last.slot,
                    settled.last.reason.as_deref().unwrap_or("")
                ));
            }
            self.save(&settled, &say);
            current = Some(settled);
        }
        let boot = Boot::of(&booted, &primary);
        self.publish(
            &booted,
            &version,
            boot == Boot::Trial,
            current.as_ref(),
            &say,
        );
        if boot == Boot::Normal {
            say(&format!(
                "slot {booted} (version {}) is the default: nothing to judge",
                version.as_deref().unwrap_or("unknown")
            ));
            return Outcome::Normal;
        }
        let mut rec = current.expect("settle writes a record for every trial");
        say(&format!(
            "slot {booted} (version {}) is on trial: kept once {}, else the next boot is slot \
             {primary}",
            rec.last.version,
            if rec.was_live {
                format!(
                    "it is live again (within {} s; network down for {} s also keeps it)",
                    self.rules.live_within.as_secs(),
                    self.rules.offline_grace.as_secs()
                )
            } else {
                format!(
                    "its daemon is ready (within {} s)",
                    self.rules.live_within.as_secs()
                )
            }
        ));
        let verdict = self.judge(&rec).await;
        let (phase, reason, outcome) = match verdict {
            Verdict::Good(reason) => match self.rauc.mark(true).await {
                Ok(()) => (Phase::Updated, reason.clone(), Outcome::Kept(reason)),
                Err(e) => {
                    let reason = format!("healthy ({reason}) but it could not be kept: {e}");
                    (Phase::RolledBack, reason.clone(), Outcome::Left(reason))
                }
            },
            Verdict::Bad(reason) => {
                // The firmware forgets the trial by itself; the mark only informs RAUC.
                if let Err(e) = self.rauc.mark(false).await {
                    say(&format!("(rauc mark-bad: {e})"));
                }
                (Phase::RolledBack, reason.clone(), Outcome::Left(reason))
            }
            Verdict::Wait => unreachable!("judge returns a decision"),
        };
        rec.last.phase = phase;
        rec.last.reason = Some(reason);
        rec.last.at = super::unix_now();
        self.save(&rec, &say);
        match &outcome {
            Outcome::Kept(_) => {
                self.publish(&booted, &version, false, Some(&rec), &say);
                say(&format!(
                    "kept slot {booted} (version {}): {}",
                    rec.last.version,
                    rec.last.reason.as_deref().unwrap_or_default()
                ));
            }
            _ => say(&format!(
                "leaving slot {booted}: {}; rebooting into slot {primary}",
                rec.last.reason.as_deref().unwrap_or_default()
            )),
        }
        outcome
    }

    /// Observes the daemon every `poll` until the trial decides.
    async fn judge(&self, rec: &Record) -> Verdict {
        let mut trial = Trial::new(self.rules, Instant::now(), rec.was_live);
        loop {
            let daemon = client::status(&self.socket).await.ok().map(|s| s.state);
            let missing_uplinks = rec
                .uplinks
                .iter()
                .filter(|u| !self.net_dir.join(u).exists())
                .cloned()
                .collect();
            let seen = Observation {
                daemon,
                missing_uplinks,
            };
            match trial.observe(Instant::now(), &seen) {
                Verdict::Wait => tokio::time::sleep(self.poll).await,
                decided => return decided,
            }
        }
    }

    fn save(&self, rec: &Record, say: &impl Fn(&str)) {
        if let Err(e) = record::write(&self.record, rec) {
            say(&format!("{e}"));
        }
    }

    fn publish(
        &self,
        booted: &str,
        version: &Option<String>,
        trial: bool,
        rec: Option<&Record>,
        say: &impl Fn(&str),
    ) {
        let snapshot = UpdateSnapshot {
            slot: Some(booted.to_string()),
            version: version.clone(),
            trial,
            last: rec.map(|r| r.last.clone()),
        };
        if let Err(e) = doc::write(&self.state_dir, &snapshot) {
            say(&format!(
                "cannot write {}: {e}",
                self.state_dir.join(doc::FILE_NAME).display()
            ));
        }
    }
}

/// The booted system's version: its bundle's as RAUC recorded it, else the image's own.
fn booted_version(system: &SystemStatus) -> Option<String> {
    system
        .slot(&system.booted)
        .and_then(|s| s.version.clone())
        .or_else(super::image_version)
}

pub fn default_net_dir() -> PathBuf {
    Path::new("/sys/class/net").to_path_buf()
}
