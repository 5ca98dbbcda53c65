//! The field uplinks: Wi-Fi, a phone on USB, a USB modem.
//!
//! Bringing them up is the operating system's job (systemd-networkd runs DHCP, wpa_supplicant
//! joins Wi-Fi, ModemManager connects a modem); this module gives it the config's settings
//! and reads back what the daemon shows:
//!
//! - `render.rs` (pure): the config's Wi-Fi networks and modem settings as the files
//!   wpa_supplicant and ModemManager's client read; `files.rs` writes them (0600, whole);
//!   [`apply`] does both and tells the radios to read them again (on SIGHUP; at boot
//!   `onair network-files` writes them before wpa_supplicant starts).
//! - `kind.rs` (pure): wired, Wi-Fi, tether or modem from what sysfs says (`sysfs.rs`), and
//!   the route metric each kind gets from the image's networkd files.
//! - `wpa.rs` (pure): wpa_supplicant's answers and events as Wi-Fi facts, a wrong password
//!   named; `wpa_ctrl.rs` its control socket.
//! - `modem.rs` (pure): ModemManager's JSON as a modem's facts.
//! - `watch.rs`: the tasks that read those facts beside the network monitor.

mod files;
mod kind;
mod modem;
mod render;
mod sysfs;
mod watch;
mod wpa;
mod wpa_ctrl;

pub use files::{FilesError, Written};
pub use kind::{LinkFacts, MODEM_DRIVERS, TETHER_DRIVERS, UplinkKind};
pub use modem::ModemStatus;
pub use render::{MODEM_CONNECT_FILE, NetworkFiles, WPA_CTRL_DIR, WPA_SUPPLICANT_FILE, render};
pub use sysfs::{SYS_CLASS_NET, read_facts};
pub(super) use watch::{FieldFacts, Interfaces, start as start_watchers};
pub use wpa::{WifiState, WifiStatus};

use crate::config::NetworkConfig;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::watch as channel;

/// Writes the files for `config` into `dir` (what `onair network-files` does at boot).
pub fn write_files(config: &NetworkConfig, dir: &Path) -> Result<Written, FilesError> {
    files::write(dir, &render(config))
}

/// Tells the Wi-Fi watchers of a running monitor that the radios read their networks again
/// (a refusal of the old password is then no longer news).
#[derive(Clone, Debug)]
pub struct Reconfigured(pub(super) Arc<channel::Sender<u64>>);

impl Reconfigured {
    pub(super) fn new() -> (Reconfigured, channel::Receiver<u64>) {
        let (tx, rx) = channel::channel(0);
        (Reconfigured(Arc::new(tx)), rx)
    }

    fn notify(&self) {
        self.0.send_modify(|generation| *generation += 1);
    }
}

/// What [`apply`] did, for the log.
#[derive(Debug)]
pub struct Applied {
    pub written: Written,
    /// Interfaces whose wpa_supplicant read the new networks.
    pub reconfigured: Vec<String>,
    /// Interfaces whose wpa_supplicant could not be told, and why.
    pub failed: Vec<String>,
}

/// At most this many control sockets are told (one per radio).
const MAX_RADIOS: usize = 16;

/// Renders `config`'s files into `dir`; when the Wi-Fi file changed, every wpa_supplicant
/// with a control socket in `ctrl_dir` is told to read it again (`RECONFIGURE`), and the
/// watchers of `reconfigured` forget the old refusals. Bounded: one answer per radio, each
/// within the control socket's deadline.
pub async fn apply(
    config: &NetworkConfig,
    dir: &Path,
    ctrl_dir: &Path,
    reconfigured: Option<&Reconfigured>,
) -> Result<Applied, FilesError> {
    let written = write_files(config, dir)?;
    let mut applied = Applied {
        written,
        reconfigured: Vec::new(),
        failed: Vec::new(),
    };
    if !applied.written.wifi_changed {
        return Ok(applied);
    }
    let mut sockets: Vec<_> = match std::fs::read_dir(ctrl_dir) {
        Ok(entries) => entries
            .flatten()
            .filter(|e| {
                use std::os::unix::fs::FileTypeExt;
                e.file_type().is_ok_and(|t| t.is_socket())
            })
            .take(MAX_RADIOS)
            .collect(),
        // No radio running (or none at all): they read the file when they start.
        Err(_) => Vec::new(),
    };
    sockets.sort_by_key(|e| e.file_name());
    for entry in sockets {
        let name = crate::secret::printable(&entry.file_name().to_string_lossy());
        let told = async {
            let ctrl = wpa_ctrl::Ctrl::connect(&entry.path())?;
            ctrl.command("RECONFIGURE").await
        };
        match told.await {
            Ok(()) => applied.reconfigured.push(name),
            Err(e) => applied.failed.push(format!("{name}: {e}")),
        }
    }
    if let Some(r) = reconfigured {
        r.notify();
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::wpa_ctrl::fake::FakeSupplicant;
    use super::*;
    use crate::config::Config;

    #[tokio::test]
    async fn apply_writes_and_tells_the_radios_only_when_the_networks_changed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (dir, ctrl_dir) = (tmp.path().join("network"), tmp.path().join("wpa"));
        std::fs::create_dir(&ctrl_dir).expect("mkdir");
        let wlan0 = FakeSupplicant::start(ctrl_dir.join("wlan0"));
        let wlan1 = FakeSupplicant::start(ctrl_dir.join("wlan1"));
        wlan1.answer("RECONFIGURE", "FAIL\n");
        std::fs::write(ctrl_dir.join("not-a-socket"), "").expect("write");
        let config = |psk: &str| {
            let text = format!(
                r#"{{"source": {{"kind": "test"}}, "output": {{"kind": "whip", "url": "http://192.0.2.1/w"}},
                    "network": {{"wifi": [{{"ssid": "venue", "psk": "{psk}"}}]}}}}"#
            );
            Config::parse(&text).expect("valid").network
        };
        let (reconfigured, mut generation) = Reconfigured::new();
        let a = apply(&config("password1"), &dir, &ctrl_dir, Some(&reconfigured))
            .await
            .expect("apply");
        assert!(a.written.wifi_changed);
        assert_eq!(a.reconfigured, ["wlan0"]);
        assert_eq!(a.failed.len(), 1, "{:?}", a.failed);
        assert!(a.failed[0].starts_with("wlan1: "), "{:?}", a.failed);
        assert!(generation.has_changed().expect("alive"));
        generation.borrow_and_update();
        let text = std::fs::read_to_string(&a.written.wpa_supplicant).expect("read");
        assert!(text.contains("psk=\"password1\""));
        // Nothing new: nobody is bothered.
        let b = apply(&config("password1"), &dir, &ctrl_dir, Some(&reconfigured))
            .await
            .expect("apply");
        assert!(!b.written.wifi_changed && b.reconfigured.is_empty());
        assert!(!generation.has_changed().expect("alive"));
        assert_eq!(
            wlan0
                .commands()
                .iter()
                .filter(|c| *c == "RECONFIGURE")
                .count(),
            1
        );
        // Without any radio running the files are still written.
        let c = apply(&config("password2"), &dir, &tmp.path().join("none"), None)
            .await
            .expect("apply");
        assert!(c.written.wifi_changed && c.reconfigured.is_empty() && c.failed.is_empty());
    }
}
