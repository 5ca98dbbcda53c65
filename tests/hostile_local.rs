//! Hostile input from the box itself: config files that are not files, a SIGHUP that reads a
//! FIFO, a session file in `state_dir` that is a FIFO, and idle connections piling up on the
//! status socket. The real binary each time; nothing may hang, and the token never shows.

mod common;

use common::{Daemon, onair_bin, test_config};
use nix::sys::signal::Signal;
use serde_json::json;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const TOKEN: &str = "local-Tk-0815";

/// `onair check-config PATH`: (exit code, stderr, how long it took); killed after `limit`.
fn check_config(path: &Path, limit: Duration) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let mut child = Command::new(onair_bin())
        .arg("check-config")
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("onair runs");
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(child.stderr.as_mut().expect("piped"), &mut err);
            return (status.code(), err, started.elapsed());
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return (None, "killed: did not finish".into(), started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A WHIP URL with user info (it would go out as a second `Authorization` header beside the
/// token's) and durations of 2^64 − 1 and 2^64 ms (status once said "next in 213503982334d"):
/// each refused with exit 2, one line naming the key, the secret in none.
#[test]
fn check_config_refuses_user_info_and_endless_delays() {
    let dir = tempfile::tempdir().unwrap();
    let user_info = test_config(
        &format!("http://box:{TOKEN}@127.0.0.1:9/api/whip"),
        None,
        json!({}),
    );
    let mut cases = vec![(user_info.to_string(), "output.url".to_string())];
    for key in [
        "initial_delay_ms",
        "max_delay_ms",
        "connect_timeout_ms",
        "stable_after_ms",
        "dead_after_ms",
    ] {
        // As text: 2^64 fits no JSON library's integers, and must be refused all the same.
        for value in ["18446744073709551615", "18446744073709551616"] {
            let text = test_config("http://127.0.0.1:9/api/whip", Some(TOKEN), json!({}))
                .to_string()
                .replacen('{', &format!(r#"{{"reconnect": {{"{key}": {value}}},"#), 1);
            cases.push((text, format!("reconnect.{key}")));
        }
    }
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("case{i}.json"));
        std::fs::write(&path, text).unwrap();
        let (code, err, _) = check_config(&path, Duration::from_secs(5));
        println!("{key}: exit {code:?}: {}", err.trim());
        assert_eq!(code, Some(2), "{text}: {err}");
        assert!(err.contains(key.as_str()), "{text}: {err}");
        assert!(!err.contains(TOKEN), "the secret leaked: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
}

#[test]
fn check_config_refuses_what_is_not_a_config_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.json");
    mkfifo(&fifo);
    let big = dir.path().join("big.json");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(64 * 1024 * 1024)
        .unwrap();
    let good = test_config("http://127.0.0.1:9/api/whip", Some(TOKEN), json!({})).to_string();
    let twice = dir.path().join("twice.json");
    std::fs::write(&twice, format!("{good}\n{good}\n")).unwrap();
    let slash = dir.path().join("rtmp-slash.json");
    let rtmp = test_config(
        "x",
        None,
        json!({"output": {"kind": "rtmp", "url": format!("rtmp://127.0.0.1/live/{TOKEN}/")}}),
    );
    std::fs::write(&slash, rtmp.to_string()).unwrap();
    let key_name = dir.path().join("token-as-key.json");
    let mut v = test_config("http://127.0.0.1:9/api/whip", None, json!({}));
    v["output"][TOKEN] = json!(true);
    std::fs::write(&key_name, v.to_string()).unwrap();
    let cases: [(&Path, &str); 8] = [
        (&fifo, "FIFO"),
        (Path::new("/dev/zero"), "device"),
        (Path::new("/dev/urandom"), "device"),
        (dir.path(), "directory"),
        (&big, "more than a config"),
        (&twice, "after the end"),
        (&slash, "output.url"),
        (&key_name, "output"),
    ];
    for (path, says) in cases {
        let (code, err, took) = check_config(path, Duration::from_secs(5));
        println!(
            "{}: exit {code:?} after {took:?}: {}",
            path.display(),
            err.trim()
        );
        assert_eq!(code, Some(2), "{}: {err}", path.display());
        assert!(err.contains(says), "{}: {err}", path.display());
        assert!(
            !err.contains(TOKEN),
            "{}: the token leaked: {err}",
            path.display()
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(
            took < Duration::from_secs(2),
            "{}: took {took:?}",
            path.display()
        );
    }
}

fn daemon() -> Daemon {
    Daemon::start(
        test_config("http://127.0.0.1:9/api/whip", Some(TOKEN), json!({})),
        None,
    )
}

fn wait_up(d: &Daemon) {
    let (up, _) = d.wait_status(Duration::from_secs(15), |_| true);
    assert!(
        up,
        "the daemon never answered on its status socket:\n{}",
        d.log()
    );
}

/// SIGHUP while the config is a FIFO nobody writes to: the daemon keeps running on the old
/// config and a SIGTERM still stops it, cleanly and at once.
#[test]
fn a_sighup_that_finds_a_fifo_does_not_stop_sigterm() {
    let _serial = common::serial();
    let mut d = daemon();
    wait_up(&d);
    std::fs::remove_file(&d.config_path).unwrap();
    mkfifo(&d.config_path);
    d.signal(Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        d.status().is_some(),
        "the daemon stopped answering after SIGHUP:\n{}",
        d.log()
    );
    let (code, took) = d.stop(Duration::from_secs(10));
    println!("SIGTERM after a SIGHUP on a FIFO: exit {code:?} after {took:?}");
    assert_eq!(code, Some(0), "{}", d.log());
    assert!(took < Duration::from_secs(3), "stopping took {took:?}");
    let log = d.log();
    assert!(log.contains("keeping the running config"), "{log}");
    assert!(log.contains("FIFO"), "{log}");
    assert!(!log.contains(TOKEN));
    assert!(!d.socket.exists(), "the status socket was left behind");
}

/// `onair run` on a config written into `dir` (status socket `dir/status.sock`), not waited for.
struct Run {
    child: std::process::Child,
    socket: std::path::PathBuf,
    log_path: std::path::PathBuf,
}

impl Run {
    fn start(dir: &Path, extra: serde_json::Value) -> Run {
        let socket = dir.join("status.sock");
        let mut config = test_config("http://127.0.0.1:9/api/whip", Some(TOKEN), extra);
        common::merge(&mut config, json!({"status": {"socket": socket}}));
        let config_path = dir.join("onair.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log_path = dir.join("onair.log");
        let child = Command::new(onair_bin())
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "warn,onair=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .expect("onair runs");
        Run {
            child,
            socket,
            log_path,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// SIGTERM; the exit code (None: killed after 5 s, or ended by the signal itself).
    fn terminate(&mut self) -> (Option<i32>, Duration) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
        let stopping = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status.code(), stopping.elapsed());
            }
            if stopping.elapsed() > Duration::from_secs(5) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return (None, stopping.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A FIFO where the WHIP session file belongs: start-up does not wait on it, the daemon runs,
/// and SIGTERM stops it cleanly.
#[test]
fn a_fifo_for_the_session_file_does_not_hang_start_up() {
    let _serial = common::serial();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    mkfifo(&state.join("whip-resource"));
    let mut run = Run::start(dir.path(), json!({"state_dir": state}));
    let started = Instant::now();
    let up = loop {
        let out = Command::new(onair_bin())
            .args(["status", "--json", "--socket"])
            .arg(&run.socket)
            .output()
            .expect("onair status");
        if out.status.success() {
            break true;
        }
        if started.elapsed() > Duration::from_secs(10) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (code, took) = run.terminate();
    println!("with a FIFO as the session file: up {up}, exit {code:?} {took:?} after SIGTERM");
    assert!(up, "start-up hung on the FIFO:\n{}", run.log());
    assert_eq!(code, Some(0), "{}", run.log());
    assert!(run.log().contains("whip-resource"), "{}", run.log());
    assert!(!run.socket.exists(), "the status socket was left behind");
}

/// SIGTERM while the daemon is still starting (the moment its status socket appears, before
/// the media pipeline is up): it stops cleanly, not by the signal's default action.
#[test]
fn a_sigterm_during_start_up_still_stops_cleanly() {
    let _serial = common::serial();
    for round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let mut run = Run::start(dir.path(), json!({}));
        let started = Instant::now();
        while !run.socket.exists() && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let (code, took) = run.terminate();
        println!(
            "round {round}: SIGTERM {:?} after start: exit {code:?} after {took:?}",
            started.elapsed()
        );
        assert_eq!(code, Some(0), "round {round}: {}", run.log());
        assert!(
            !run.socket.exists(),
            "round {round}: the status socket was left behind"
        );
    }
}

/// 20 idle connections, reopened as fast as the daemon closes them: `onair status` still
/// answers every time.
#[test]
fn status_answers_while_twenty_idle_connections_are_held() {
    let _serial = common::serial();
    let d = daemon();
    wait_up(&d);
    let stop = Arc::new(AtomicBool::new(false));
    let socket = d.socket.clone();
    let attacker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut held: Vec<UnixStream> = Vec::new();
            let mut opened = 0u32;
            while !stop.load(Ordering::Relaxed) {
                // Keep the ones the daemon has neither answered nor closed.
                held.retain(|s| {
                    use nix::sys::socket::{MsgFlags, recv};
                    use std::os::fd::AsRawFd;
                    let mut b = [0u8; 1];
                    let peek = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
                    matches!(
                        recv(s.as_raw_fd(), &mut b, peek),
                        Err(nix::errno::Errno::EAGAIN)
                    )
                });
                while held.len() < 20 {
                    match UnixStream::connect(&socket) {
                        Ok(s) => {
                            held.push(s);
                            opened += 1;
                        }
                        Err(_) => break,
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            opened
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let mut answered = 0;
    for _ in 0..5 {
        let started = Instant::now();
        let out = Command::new(onair_bin())
            .args(["status", "--json", "--socket"])
            .arg(&d.socket)
            .output()
            .expect("onair status");
        let took = started.elapsed();
        assert!(
            out.status.success(),
            "onair status failed while idle connections are held: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(took < Duration::from_secs(2), "took {took:?}");
        answered += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let opened = attacker.join().expect("attacker thread");
    println!(
        "onair status answered {answered} of 5 times; the attacker opened {opened} idle connections"
    );
    let _ = std::io::stdout().flush();
}
