//! systemd's service watchdog, from systemd's side of the socket: the real daemon runs with
//! `NOTIFY_SOCKET` pointing at a Unix datagram socket this test binds (as systemd does for a
//! `Type=notify` unit) and `WATCHDOG_USEC` set (as `WatchdogSec=` does).
//!
//! What the box relies on: `READY=1` once the daemon is up, `WATCHDOG=1` more often than the
//! watchdog period while the supervisor's loop turns, and no ping at all once that loop is stuck
//! (here stopped by the test hook, SIGUSR2 with `ONAIR_TEST_HOOKS=1`), so systemd kills and
//! restarts it. Without the hook variable SIGUSR2 must change nothing. The emulated boot test
//! (scripts/qemu/watchdog-check.sh) shows systemd itself doing the restart.

mod common;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::fs::File;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The watchdog period given to the daemon; it must ping at least this often (it aims for half).
const WATCHDOG: Duration = Duration::from_secs(2);

/// A localhost port nobody listens on: the daemon keeps retrying, its loop keeps turning.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local address").port()
}

/// systemd's end: the notification socket and what arrived on it, with arrival times.
struct Systemd {
    socket: UnixDatagram,
    start: Instant,
    got: Vec<(Duration, String)>,
}

impl Systemd {
    fn bind(path: &Path) -> Systemd {
        let socket = UnixDatagram::bind(path).expect("bind the notification socket");
        Systemd {
            socket,
            start: Instant::now(),
            got: Vec::new(),
        }
    }

    /// Collects datagrams for `span`; returns those that arrived in it.
    fn listen(&mut self, span: Duration) -> Vec<(Duration, String)> {
        let until = Instant::now() + span;
        let mut new = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return new;
            }
            self.socket
                .set_read_timeout(Some(left))
                .expect("set a read timeout");
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let msg = (
                        self.start.elapsed(),
                        String::from_utf8_lossy(&buf[..n]).into_owned(),
                    );
                    self.got.push(msg.clone());
                    new.push(msg);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return new;
                }
                Err(e) => panic!("reading the notification socket: {e}"),
            }
        }
    }

    /// Waits (at most `limit`) for a datagram carrying `line`; returns its whole text.
    fn wait_for(&mut self, line: &str, limit: Duration) -> String {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            for (_, msg) in self.listen(Duration::from_millis(200)) {
                if msg.lines().any(|l| l == line) {
                    return msg;
                }
            }
        }
        panic!("no {line} within {limit:?}; got {:?}", self.got);
    }
}

fn pings(msgs: &[(Duration, String)]) -> Vec<Duration> {
    msgs.iter()
        .filter(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1"))
        .map(|(at, _)| *at)
        .collect()
}

fn max_gap(times: &[Duration]) -> Duration {
    times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

struct Daemon {
    child: Child,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(dir: &Path, notify_socket: &Path, test_hooks: bool) -> Daemon {
        let config = dir.join("onair.json");
        let text = serde_json::json!({
            "source": {"kind": "test", "width": 160, "height": 120, "fps": 10},
            "encoder": {"kind": "x264", "bitrate_kbps": 200},
            "output": {"kind": "whip", "url": format!("http://127.0.0.1:{}/api/whip", closed_port())},
            "reconnect": {"initial_delay_ms": 300, "max_delay_ms": 600},
            "network": {"netlink": false},
            "state_dir": dir.join("state"),
            "status": {"socket": dir.join("status.sock")},
        });
        std::fs::write(&config, text.to_string()).expect("write the config");
        let log = dir.join("onair.log");
        let mut cmd = Command::new(common::onair_bin());
        cmd.args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .env("NOTIFY_SOCKET", notify_socket)
            .env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string())
            .env_remove("WATCHDOG_PID")
            .env_remove("ONAIR_TEST_HOOKS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("create the log"));
        if test_hooks {
            cmd.env("ONAIR_TEST_HOOKS", "1");
        }
        let child = cmd.spawn().expect("onair run starts");
        Daemon { child, log }
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal the daemon");
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn pings_while_the_loop_turns_and_stop_when_it_is_stuck() {
    let _serial = common::serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("notify.sock");
    let mut systemd = Systemd::bind(&sock);
    let mut daemon = Daemon::start(dir.path(), &sock, true);

    let ready = systemd.wait_for("READY=1", Duration::from_secs(30));
    assert!(
        ready.lines().any(|l| l.starts_with("STATUS=")),
        "READY=1 should come with the state: {ready:?}"
    );
    let alive = systemd.listen(WATCHDOG * 3);
    let before = pings(&alive);
    println!(
        "while the loop turns: {} pings in {:?}, largest gap {:?} (watchdog {WATCHDOG:?})",
        before.len(),
        WATCHDOG * 3,
        max_gap(&before)
    );
    assert!(
        before.len() >= 4,
        "expected a ping every {:?}, got {before:?}",
        WATCHDOG / 2
    );
    assert!(
        max_gap(&before) < WATCHDOG,
        "pings further apart than the watchdog period: {before:?}"
    );
    let states: Vec<&str> = systemd
        .got
        .iter()
        .flat_map(|(_, m)| m.lines())
        .filter_map(|l| l.strip_prefix("STATUS="))
        .collect();
    assert!(
        states.contains(&"reconnecting") || states.contains(&"connecting"),
        "STATUS= should follow the stream state: {states:?}"
    );

    // The test hook stops the supervisor's loop: from then on systemd hears nothing.
    let stalled_at = systemd.start.elapsed();
    daemon.signal(Signal::SIGUSR2);
    let after = pings(&systemd.listen(WATCHDOG * 2));
    // A ping already on its way when the signal landed may still arrive.
    let late: Vec<&Duration> = after
        .iter()
        .filter(|t| **t > stalled_at + Duration::from_millis(300))
        .collect();
    println!(
        "after SIGUSR2: {} pings in {:?} (last before it at {:?})",
        late.len(),
        WATCHDOG * 2,
        before.last()
    );
    assert!(
        late.is_empty(),
        "the stuck loop still pinged at {late:?} (SIGUSR2 at {stalled_at:?})"
    );
    assert!(
        daemon.running(),
        "the daemon must hang, not die:\n{}",
        daemon.log()
    );
    assert!(
        daemon.log().contains("test hook (SIGUSR2)"),
        "the log should say the loop was stopped on purpose:\n{}",
        daemon.log()
    );
}

#[test]
fn sigusr2_without_test_hooks_changes_nothing_and_stop_says_stopping() {
    let _serial = common::serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("notify.sock");
    let mut systemd = Systemd::bind(&sock);
    let mut daemon = Daemon::start(dir.path(), &sock, false);

    systemd.wait_for("READY=1", Duration::from_secs(30));
    daemon.signal(Signal::SIGUSR2);
    let after = pings(&systemd.listen(WATCHDOG * 2));
    assert!(
        after.len() >= 3 && daemon.running(),
        "without {}=1, SIGUSR2 must neither stop the pings nor the daemon: {after:?}\n{}",
        "ONAIR_TEST_HOOKS",
        daemon.log()
    );
    assert!(
        daemon.log().contains("SIGUSR2 ignored"),
        "the log should say SIGUSR2 was ignored:\n{}",
        daemon.log()
    );

    daemon.signal(Signal::SIGTERM);
    systemd.wait_for("STOPPING=1", Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(5);
    while daemon.running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = daemon.child.try_wait().expect("try_wait");
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM: expected exit 0 within 5 s, got {status:?}\n{}",
        daemon.log()
    );
}
