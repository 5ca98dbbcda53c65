//! The tasks that read the field uplinks' facts: one per Wi-Fi interface (its wpa_supplicant's
//! control socket: `STATUS` and `SIGNAL_POLL` every few seconds, events as they come) and one
//! for the modems (ModemManager's `mmcli -J`, while there is a modem interface). The network
//! monitor tells them which interfaces there are; they publish what they read on one watch
//! channel, which the monitor folds into the status of each uplink.
//!
//! They run beside the monitor, never inside its loop: a wpa_supplicant or ModemManager that
//! is slow to answer (each request has its deadline) holds up these facts, not the netlink
//! events that move the stream.

use super::modem::{self, ModemStatus};
use super::wpa::{self, Tracker, WifiStatus};
use super::wpa_ctrl::Ctrl;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often a Wi-Fi interface's state and signal are read (events cut it short).
const WIFI_POLL: Duration = Duration::from_secs(2);
/// How often ModemManager is asked (each mmcli run costs a process and a D-Bus round trip).
const MODEM_POLL: Duration = Duration::from_secs(10);
/// One mmcli run, start to exit.
const MMCLI_TIMEOUT: Duration = Duration::from_secs(5);
/// mmcli's JSON for one modem is a few KiB.
const MAX_MMCLI_OUTPUT: u64 = 64 * 1024;
/// At most this many Wi-Fi interfaces are watched (each has a task and two sockets).
const MAX_WIFI: usize = 8;

/// The interfaces to read facts for, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interfaces {
    pub wifi: BTreeSet<String>,
    pub modems: BTreeSet<String>,
}

/// What the watchers read, by interface name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldFacts {
    pub wifi: BTreeMap<String, WifiStatus>,
    pub modems: BTreeMap<String, ModemStatus>,
}

/// Starts the watchers' owner task. It follows `interfaces`, tells the Wi-Fi watchers when
/// their networks were read again (`reconfigured` changes), and stops with `shutdown`,
/// stopping every watcher first.
pub fn start(
    ctrl_dir: PathBuf,
    interfaces: watch::Receiver<Interfaces>,
    reconfigured: watch::Receiver<u64>,
    shutdown: CancellationToken,
) -> (watch::Receiver<FieldFacts>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(FieldFacts::default());
    let task = tokio::spawn(own(ctrl_dir, interfaces, reconfigured, tx, shutdown));
    (rx, task)
}

struct Running {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

async fn own(
    ctrl_dir: PathBuf,
    mut interfaces: watch::Receiver<Interfaces>,
    reconfigured: watch::Receiver<u64>,
    tx: watch::Sender<FieldFacts>,
    shutdown: CancellationToken,
) {
    let mut wifi: BTreeMap<String, Running> = BTreeMap::new();
    let mut modems: Option<(Running, watch::Sender<BTreeSet<String>>)> = None;
    loop {
        let wanted = interfaces.borrow_and_update().clone();
        // Gone interfaces: stop their watchers and forget their facts.
        let gone: Vec<String> = wifi
            .keys()
            .filter(|n| !wanted.wifi.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            if let Some(r) = wifi.remove(&name) {
                r.stop.cancel();
                let _ = r.task.await;
            }
            tx.send_if_modified(|f| f.wifi.remove(&name).is_some());
        }
        for name in wanted.wifi.iter().take(MAX_WIFI) {
            if !wifi.contains_key(name) {
                let stop = shutdown.child_token();
                let task = tokio::spawn(watch_wifi(
                    name.clone(),
                    ctrl_dir.join(name),
                    tx.clone(),
                    reconfigured.clone(),
                    stop.clone(),
                ));
                wifi.insert(name.clone(), Running { stop, task });
            }
        }
        match (&modems, wanted.modems.is_empty()) {
            (None, false) => {
                let stop = shutdown.child_token();
                let (names_tx, names_rx) = watch::channel(wanted.modems.clone());
                let task = tokio::spawn(watch_modems(names_rx, tx.clone(), stop.clone()));
                modems = Some((Running { stop, task }, names_tx));
            }
            (Some((_, names)), false) => {
                names.send_if_modified(|n| {
                    let changed = *n != wanted.modems;
                    *n = wanted.modems.clone();
                    changed
                });
            }
            (Some(_), true) => {
                if let Some((r, _)) = modems.take() {
                    r.stop.cancel();
                    let _ = r.task.await;
                }
                tx.send_if_modified(|f| {
                    let had = !f.modems.is_empty();
                    f.modems.clear();
                    had
                });
            }
            (None, true) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = interfaces.changed() => if changed.is_err() { break },
        }
    }
    for (_, r) in wifi {
        r.stop.cancel();
        let _ = r.task.await;
    }
    if let Some((r, _)) = modems {
        r.stop.cancel();
        let _ = r.task.await;
    }
}

/// One Wi-Fi interface: a request connection and an attached one for events.
async fn watch_wifi(
    name: String,
    path: PathBuf,
    tx: watch::Sender<FieldFacts>,
    mut reconfigured: watch::Receiver<u64>,
    stop: CancellationToken,
) {
    let mut tracker = Tracker::default();
    let mut conn: Option<(Ctrl, Ctrl)> = None;
    let mut tick = tokio::time::interval(WIFI_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    reconfigured.borrow_and_update();
    let mut said_missing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            message = next_event(&conn) => match message {
                Ok(message) => match wpa::parse_event(&message) {
                    Some(event) => tracker.event(&event),
                    // Scans and the like: nothing to read again for.
                    None => continue,
                },
                Err(_) => conn = None,
            },
            changed = reconfigured.changed() => {
                if changed.is_err() {
                    // Its sender goes with the monitor that started this watcher.
                    return;
                }
                tracker.reconfigured();
            }
        }
        if conn.is_none() {
            conn = connect(&path).await;
        }
        let status = match &conn {
            Some((requests, _)) => match poll(requests, &mut tracker).await {
                Some(status) => status,
                None => {
                    conn = None;
                    WifiStatus::no_supplicant()
                }
            },
            None => WifiStatus::no_supplicant(),
        };
        if status.state == wpa::WifiState::NoSupplicant && !said_missing {
            log::info!(
                "network: {name}: no wpa_supplicant answers at {}",
                path.display()
            );
            said_missing = true;
        } else if status.state != wpa::WifiState::NoSupplicant {
            said_missing = false;
        }
        tx.send_if_modified(|f| {
            if f.wifi.get(&name) == Some(&status) {
                return false;
            }
            f.wifi.insert(name.clone(), status);
            true
        });
    }
}

async fn connect(path: &Path) -> Option<(Ctrl, Ctrl)> {
    let requests = Ctrl::connect(path).ok()?;
    let events = Ctrl::connect(path).ok()?;
    events.attach().await.ok()?;
    Some((requests, events))
}

async fn next_event(conn: &Option<(Ctrl, Ctrl)>) -> Result<String, super::wpa_ctrl::CtrlError> {
    match conn {
        Some((_, events)) => events.next_event().await,
        None => std::future::pending().await,
    }
}

/// `STATUS`, and `SIGNAL_POLL` while connected; `None` when wpa_supplicant does not answer.
async fn poll(requests: &Ctrl, tracker: &mut Tracker) -> Option<WifiStatus> {
    let status = wpa::parse_status(&requests.request("STATUS").await.ok()?);
    let signal = if status.wpa_state == "COMPLETED" {
        requests
            .request("SIGNAL_POLL")
            .await
            .ok()
            .map(|text| wpa::parse_signal_poll(&text))
    } else {
        None
    };
    Some(tracker.status(&status, signal.as_ref()))
}

/// The modems, through ModemManager's command-line client.
async fn watch_modems(
    mut names: watch::Receiver<BTreeSet<String>>,
    tx: watch::Sender<FieldFacts>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(MODEM_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut said_missing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            changed = names.changed() => if changed.is_err() { return },
        }
        let wanted = names.borrow_and_update().clone();
        let found = match read_modems().await {
            Ok(found) => {
                said_missing = false;
                found
            }
            Err(e) => {
                if !said_missing {
                    log::info!("network: cannot ask ModemManager about the modems: {e}");
                    said_missing = true;
                }
                BTreeMap::new()
            }
        };
        let facts: BTreeMap<String, ModemStatus> = found
            .into_iter()
            .filter(|(name, _)| wanted.contains(name))
            .collect();
        tx.send_if_modified(|f| {
            let changed = f.modems != facts;
            f.modems = facts;
            changed
        });
    }
}

async fn read_modems() -> Result<BTreeMap<String, ModemStatus>, String> {
    let mut out = BTreeMap::new();
    for path in modem::parse_list(&mmcli(&["-L", "-J"]).await?) {
        if let Some((interfaces, status)) = modem::parse_modem(&mmcli(&["-m", &path, "-J"]).await?)
        {
            for name in interfaces {
                out.insert(name, status.clone());
            }
        }
    }
    Ok(out)
}

/// Runs mmcli with a deadline and a bound on what it prints; killed when either is passed.
async fn mmcli(args: &[&str]) -> Result<String, String> {
    let mut child = tokio::process::Command::new("mmcli")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("mmcli: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("mmcli: no output")?;
    let run = async {
        let mut text = Vec::new();
        (&mut stdout)
            .take(MAX_MMCLI_OUTPUT)
            .read_to_end(&mut text)
            .await
            .map_err(|e| format!("mmcli: {e}"))?;
        let status = child.wait().await.map_err(|e| format!("mmcli: {e}"))?;
        if !status.success() {
            return Err(format!("mmcli {} exited with {status}", args.join(" ")));
        }
        Ok(String::from_utf8_lossy(&text).into_owned())
    };
    tokio::time::timeout(MMCLI_TIMEOUT, run)
        .await
        .map_err(|_| format!("mmcli did not answer within {MMCLI_TIMEOUT:?}"))?
}

#[cfg(test)]
mod tests {
    use super::super::wpa::WifiState;
    use super::super::wpa_ctrl::fake::FakeSupplicant;
    use super::*;

    async fn wait_for(
        rx: &mut watch::Receiver<FieldFacts>,
        what: impl Fn(&FieldFacts) -> bool,
    ) -> FieldFacts {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if what(&rx.borrow_and_update()) {
                    return rx.borrow().clone();
                }
                rx.changed().await.expect("watchers alive");
            }
        })
        .await
        .expect("the facts in time")
    }

    #[tokio::test]
    async fn a_wifi_interface_from_scanning_to_a_wrong_password_to_connected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wpa = FakeSupplicant::start(dir.path().join("wlan0"));
        wpa.answer("STATUS", "wpa_state=SCANNING\n");
        let (ifaces_tx, ifaces_rx) = watch::channel(Interfaces::default());
        let (reconf_tx, reconf_rx) = watch::channel(0u64);
        let shutdown = CancellationToken::new();
        let (mut facts, task) = start(dir.path().into(), ifaces_rx, reconf_rx, shutdown.clone());
        ifaces_tx.send_modify(|i| {
            i.wifi.insert("wlan0".into());
            i.wifi.insert("wlan1".into());
        });
        let f = wait_for(&mut facts, |f| f.wifi.len() == 2).await;
        assert_eq!(f.wifi["wlan0"].state, WifiState::Scanning);
        assert_eq!(f.wifi["wlan1"].state, WifiState::NoSupplicant);
        // The wrong password, said by an event: named at once, not at the next poll.
        wait_for(&mut facts, |_| wpa.commands().contains(&"ATTACH".into())).await;
        let said = std::time::Instant::now();
        wpa.event("<3>CTRL-EVENT-SSID-TEMP-DISABLED id=0 ssid=\"venue\" auth_failures=1 duration=10 reason=WRONG_KEY");
        let f = wait_for(&mut facts, |f| {
            f.wifi["wlan0"].state == WifiState::AuthenticationFailed
        })
        .await;
        assert!(said.elapsed() < WIFI_POLL, "{:?}", said.elapsed());
        assert_eq!(f.wifi["wlan0"].reason.as_deref(), Some("wrong password"));
        // The config corrected: the refusal is forgotten, and the radio connects.
        reconf_tx.send_modify(|g| *g += 1);
        wait_for(&mut facts, |f| f.wifi["wlan0"].state == WifiState::Scanning).await;
        wpa.answer("STATUS", "wpa_state=COMPLETED\nssid=venue\n");
        wpa.answer("SIGNAL_POLL", "RSSI=-48\nLINKSPEED=72\n");
        let f = wait_for(&mut facts, |f| {
            f.wifi["wlan0"].state == WifiState::Connected
        })
        .await;
        assert_eq!(
            (
                f.wifi["wlan0"].signal_dbm,
                f.wifi["wlan0"].rate_mbps,
                f.wifi["wlan0"].ssid.as_deref()
            ),
            (Some(-48), Some(72), Some("venue"))
        );
        // An interface that goes away takes its facts with it.
        ifaces_tx.send_modify(|i| {
            i.wifi.remove("wlan1");
        });
        wait_for(&mut facts, |f| !f.wifi.contains_key("wlan1")).await;
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(3), task)
            .await
            .expect("stops in time")
            .expect("no panic");
    }
}
