//! `onair status`, `retry` and `check-config` as a person over SSH runs them: the real binary,
//! its exit codes, the text it prints, and a real daemon streaming a test picture at a WHIP
//! server that is not there.
//!
//! The token in the config must never show up in anything printed, by the CLI or in the
//! daemon's log: the assertions are on the raw bytes. Every wait is bounded, and a daemon left
//! running by a failed assertion is killed by its guard.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const ONAIR: &str = env!("CARGO_BIN_EXE_onair");
const TOKEN: &str = "s3cret-TOKEN-xyz";

struct Ran {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Ran {
    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Runs `onair args…` to completion, killed after `limit`.
fn onair_within(limit: Duration, args: &[&str]) -> Ran {
    let child = Command::new(ONAIR)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the onair binary runs");
    let pid = Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(out)) => Ran {
            code: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
        },
        Ok(Err(e)) => panic!("waiting for onair {args:?}: {e}"),
        Err(_) => {
            let _ = kill(pid, Signal::SIGKILL);
            panic!("onair {args:?} did not finish within {limit:?}");
        }
    }
}

fn onair(args: &[&str]) -> Ran {
    onair_within(Duration::from_secs(10), args)
}

fn s(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("onair.json");
    std::fs::write(&path, text).expect("write the config");
    path
}

/// A localhost port nobody listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local address").port()
}

fn daemon_config(dir: &Path, port: u16) -> String {
    serde_json::json!({
        "source": {"kind": "test", "width": 320, "height": 240, "fps": 15},
        "output": {
            "kind": "whip",
            "url": format!("http://127.0.0.1:{port}/api/whip"),
            "token": TOKEN,
        },
        // One quick failure, then a long wait in `reconnecting`, so `onair retry` has
        // something to cut short.
        "reconnect": {"initial_delay_ms": 60000, "max_delay_ms": 60000},
        "network": {"netlink": false},
        "state_dir": dir.join("state"),
        "status": {"socket": dir.join("run").join("status.sock")},
    })
    .to_string()
}

/// A running `onair run`; killed on drop, so a failed assertion leaves nothing behind.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(config: &Path, log: PathBuf) -> Daemon {
        let stderr = File::create(&log).expect("create the daemon log");
        let child = Command::new(ONAIR)
            .args(["run", "--config", s(config)])
            // Everything the daemon could log, so a leak at any level is caught.
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("onair run starts");
        Daemon { child, log }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn log(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_end(&mut bytes);
        }
        bytes
    }

    fn wait_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
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

/// Polls `probe` until it returns something, for at most `limit`.
fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn status_without_a_daemon_exits_3_with_one_line() {
    for args in [
        &["status", "--socket", "/nonexistent/x.sock"][..],
        &["status", "--json", "--socket", "/nonexistent/x.sock"],
        &["status", "--history", "--socket", "/nonexistent/x.sock"],
        &["retry", "--socket", "/nonexistent/x.sock"],
    ] {
        let r = onair(args);
        assert_eq!(r.code, Some(3), "{args:?}: {}", r.stderr());
        assert!(r.stdout.is_empty(), "{args:?} printed {}", r.stdout());
        assert_eq!(
            r.stderr(),
            "onair: no daemon is running: nothing answers on /nonexistent/x.sock (no socket file)\n",
            "{args:?}"
        );
    }
}

#[test]
fn a_stale_socket_means_not_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("status.sock");
    // What a killed daemon leaves behind: a socket file nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&sock).expect("bind"));
    let r = onair(&["status", "--socket", s(&sock)]);
    assert_eq!(r.code, Some(3), "{}", r.stderr());
    assert_eq!(r.stderr().lines().count(), 1, "{}", r.stderr());
    assert!(r.stderr().contains("stale socket"), "{}", r.stderr());
}

#[test]
fn the_socket_is_found_through_the_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("elsewhere.sock");
    let config = write_config(
        dir.path(),
        &serde_json::json!({
            "source": {"kind": "test"},
            "output": {"kind": "whip", "url": "http://127.0.0.1:9/api/whip"},
            "status": {"socket": sock},
        })
        .to_string(),
    );
    let r = onair(&["status", "--config", s(&config)]);
    assert_eq!(r.code, Some(3), "{}", r.stderr());
    assert!(r.stderr().contains(s(&sock)), "{}", r.stderr());
}

#[test]
fn status_with_a_bad_config_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        r#"{"source": {"kind": "test"},
            "output": {"kind": "whip", "url": "http://127.0.0.1:9/api/whip"},
            "status": {"socket": 42}}"#,
    );
    for cmd in ["status", "retry"] {
        let r = onair(&[cmd, "--config", s(&config)]);
        assert_eq!(r.code, Some(2), "{cmd}: {}", r.stderr());
        assert!(r.stdout.is_empty());
        assert_eq!(r.stderr().lines().count(), 1, "{}", r.stderr());
        assert!(
            r.stderr().contains("`status.socket`"),
            "{cmd}: {}",
            r.stderr()
        );
    }
}

#[test]
fn check_config_exit_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write_config(dir.path(), &daemon_config(dir.path(), 9));
    let r = onair(&["check-config", s(&good)]);
    assert_eq!(r.code, Some(0), "{}", r.stderr());
    assert_eq!(r.stdout(), format!("{}: ok\n", s(&good)));
    assert!(!contains(&r.stdout, TOKEN) && !contains(&r.stderr, TOKEN));

    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        format!(
            r#"{{"source": {{"kind": "test", "fps": 0}},
                "output": {{"kind": "whip", "url": "http://h/api/whip", "token": "{TOKEN}"}}}}"#
        ),
    )
    .expect("write");
    let r = onair(&["check-config", s(&bad)]);
    assert_eq!(r.code, Some(2), "{}", r.stderr());
    assert!(r.stderr().contains("`source.fps`"), "{}", r.stderr());
    assert!(!contains(&r.stderr, TOKEN), "{}", r.stderr());

    let r = onair(&["check-config", "/nonexistent/onair.json"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr());
    assert!(r.stderr().contains("/nonexistent/onair.json"));
}

#[test]
fn a_running_daemon_answers_and_never_shows_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = closed_port();
    let config = write_config(dir.path(), &daemon_config(dir.path(), port));
    let sock = dir.path().join("run").join("status.sock");
    let url = format!("http://127.0.0.1:{port}/api/whip");
    let mut daemon = Daemon::start(&config, dir.path().join("daemon.log"));
    let mut printed: Vec<u8> = Vec::new();

    // Through the config, as a person who knows only where the config is would ask.
    let json: Value = wait_for(
        "the daemon to fail its first attempt",
        Duration::from_secs(30),
        || {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!(
                    "the daemon exited early with {status}:\n{}",
                    String::from_utf8_lossy(&daemon.log())
                );
            }
            let r = onair(&["status", "--json", "--config", s(&config)]);
            printed.extend_from_slice(&r.stdout);
            printed.extend_from_slice(&r.stderr);
            if r.code != Some(0) {
                return None;
            }
            let v: Value = serde_json::from_slice(&r.stdout)
                .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {}", r.stdout()));
            let state = v["state"].as_str().unwrap_or_default();
            let attempt = v["attempt"].as_u64().unwrap_or_default();
            (["connecting", "reconnecting"].contains(&state) && attempt >= 1).then_some(v)
        },
    );
    assert_eq!(json["output"]["kind"], "whip");
    assert_eq!(json["output"]["url"], url.as_str());
    assert_eq!(json["source"], "test 320x240@15");
    assert_eq!(json["pid"], daemon.child.id());

    // Wait until it sits out the long backoff, so `retry` has something to cut short.
    let state = wait_for("the backoff wait", Duration::from_secs(15), || {
        let r = onair(&["status", "--json", "--socket", s(&sock)]);
        printed.extend_from_slice(&r.stdout);
        let v: Value = serde_json::from_slice(&r.stdout).ok()?;
        let state = v["state"].as_str().unwrap_or_default();
        (["connecting", "reconnecting"].contains(&state) && v["next_retry_ms"].is_u64())
            .then(|| state.to_string())
    });

    let r = onair(&["status", "--socket", s(&sock)]);
    printed.extend_from_slice(&r.stdout);
    printed.extend_from_slice(&r.stderr);
    assert_eq!(r.code, Some(0), "{}", r.stderr());
    let text = r.stdout();
    assert!(
        text.starts_with(&format!("state       {state} for ")),
        "{text}"
    );
    assert!(text.contains(", next in "), "{text}");
    assert!(text.contains("\nsource      test 320x240@15\n"), "{text}");
    assert!(
        text.contains(&format!("\noutput      whip {url}\n")),
        "{text}"
    );
    assert!(text.contains("\nlast error  "), "{text}");
    assert!(!text.contains("\nlast error  none"), "{text}");
    assert!(
        text.contains(&format!("\ndaemon      pid {}, onair ", daemon.child.id())),
        "{text}"
    );

    let r = onair(&["retry", "--socket", s(&sock)]);
    printed.extend_from_slice(&r.stdout);
    printed.extend_from_slice(&r.stderr);
    assert_eq!(r.code, Some(0), "{}", r.stderr());
    let said = r.stdout();
    assert!(
        said.starts_with(&format!("retry sent; the daemon was {state} and had "))
            && said.ends_with(" to wait; it tries to connect now\n"),
        "{said}"
    );

    // The watchdog acted on it: a new streak starts, so attempt 1 fails a second time (the
    // 60 s backoff rules out any other cause).
    let history = wait_for("the retried attempt", Duration::from_secs(10), || {
        let r = onair(&["status", "--history", "--socket", s(&sock)]);
        printed.extend_from_slice(&r.stdout);
        printed.extend_from_slice(&r.stderr);
        assert_eq!(r.code, Some(0), "{}", r.stderr());
        let text = r.stdout();
        (text.matches("  error: attempt 1: ").count() == 2).then_some(text)
    });
    // Whichever of the input's first picture and the encoder's first unit came last.
    assert!(
        history.contains("starting -> connecting  input ready")
            || history.contains("starting -> connecting  encoder ready"),
        "{history}"
    );
    for line in history.lines() {
        // `2025-03-01 14:02:07.120  …`
        let (stamp, rest) = line.split_at(23);
        assert!(
            stamp.as_bytes()[4] == b'-'
                && stamp.as_bytes()[10] == b' '
                && stamp.as_bytes()[19] == b'.',
            "{line}"
        );
        assert!(rest.starts_with("  "), "{line}");
        assert!(
            rest.contains(" -> ")
                || rest.starts_with("  error: ")
                || rest.starts_with("  input: ")
                || rest == "  retry requested (onair retry)",
            "{line}"
        );
    }
    let r = onair(&["status", "--history", "--json", "--socket", s(&sock)]);
    printed.extend_from_slice(&r.stdout);
    let records: Value = serde_json::from_slice(&r.stdout).expect("history --json is JSON");
    assert!(
        records.as_array().is_some_and(|a| a.len() >= 3),
        "{records}"
    );

    // A second daemon on the same socket refuses, and leaves the first one's socket alone.
    let second = onair_within(Duration::from_secs(20), &["run", "--config", s(&config)]);
    assert_eq!(second.code, Some(1), "{}", second.stderr());
    assert!(
        second
            .stderr()
            .contains("another onair daemon is already answering on it"),
        "{}",
        second.stderr()
    );
    printed.extend_from_slice(&second.stderr);
    let r = onair(&["status", "--json", "--socket", s(&sock)]);
    assert_eq!(
        r.code,
        Some(0),
        "the first daemon lost its socket: {}",
        r.stderr()
    );
    printed.extend_from_slice(&r.stdout);

    kill(daemon.pid(), Signal::SIGTERM).expect("SIGTERM the daemon");
    let status = daemon
        .wait_within(Duration::from_secs(3))
        .expect("the daemon stops within 3 s of SIGTERM");
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&daemon.log())
    );
    assert!(!sock.exists(), "the socket file is left behind");
    let r = onair(&["status", "--socket", s(&sock)]);
    assert_eq!(r.code, Some(3), "{}", r.stderr());

    assert!(
        !contains(&printed, TOKEN),
        "the token was printed:\n{}",
        String::from_utf8_lossy(&printed)
    );
    let log = daemon.log();
    assert!(!log.is_empty(), "the daemon logged nothing");
    assert!(
        !contains(&log, TOKEN),
        "the token is in the daemon's log:\n{}",
        String::from_utf8_lossy(&log)
    );
}

#[test]
fn a_daemon_without_its_socket_warns_and_streams_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The socket's directory cannot be created: a regular file is in the way.
    std::fs::write(dir.path().join("run"), "").expect("write");
    let config = write_config(dir.path(), &daemon_config(dir.path(), closed_port()));
    let mut daemon = Daemon::start(&config, dir.path().join("daemon.log"));
    let log = wait_for(
        "the daemon's first attempt",
        Duration::from_secs(30),
        || {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!(
                    "the daemon exited with {status}:\n{}",
                    String::from_utf8_lossy(&daemon.log())
                );
            }
            let log = String::from_utf8_lossy(&daemon.log()).into_owned();
            log.contains("attempt 1 failed").then_some(log)
        },
    );
    let warning = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("status socket"))
        .unwrap_or_else(|| panic!("no warning about the status socket:\n{log}"));
    assert!(
        warning.contains("cannot create its directory")
            && warning.ends_with("streaming on without `onair status`"),
        "{warning}"
    );
    kill(daemon.pid(), Signal::SIGTERM).expect("SIGTERM the daemon");
    let status = daemon
        .wait_within(Duration::from_secs(3))
        .expect("the daemon stops within 3 s of SIGTERM");
    assert_eq!(status.code(), Some(0));
    assert!(!contains(&daemon.log(), TOKEN));
}
