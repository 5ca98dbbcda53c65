//! Shared harness for the integration tests: the real `onair` binary, the independent WHIP
//! receiver (tests/peers/whip_receiver.py), and small helpers to talk to them.
//!
//! Everything here starts real processes and cleans them up in `Drop`, so a failing test
//! leaves nothing running. All waits are bounded.

#![allow(dead_code)]

use onair::config::{EncoderConfig, EncoderKind};
use onair::media::{BitrateHandle, Door, KeyframeRequester};
use onair::output::adapt::Adaptation;
use onair::output::{Attempt, EventSender, OutputStats};
use onair::recorder::FlightRecorder;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python that has the receiver's packages (scripts/setup.sh creates `.venv`).
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("ONAIR_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = repo_root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/setup.sh (it creates the receiver's virtualenv)",
        venv.display()
    );
    venv
}

pub fn onair_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_onair"))
}

/// Held while a media-heavy test runs; see [`serial`].
pub struct Serial {
    _in_process: MutexGuard<'static, ()>,
    _across_processes: Option<nix::fcntl::Flock<std::fs::File>>,
}

/// Media-heavy tests share two cores; running them one at a time keeps timings meaningful.
/// One at a time within this test binary (a mutex) and across the test binaries of any
/// checkout on this machine (an flock on a file in the temp dir), so two `cargo test` runs
/// side by side do not distort each other's timings.
pub fn serial() -> Serial {
    static LOCK: Mutex<()> = Mutex::new(());
    let in_process = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let path = std::env::temp_dir().join("onair-media-tests.lock");
    let across = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .ok()
        .and_then(|f| nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).ok());
    Serial {
        _in_process: in_process,
        _across_processes: across,
    }
}

pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// CLOCK_MONOTONIC seconds: the receiver reports its times on this clock.
pub fn mono_now() -> f64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available on Linux");
    ts.tv_sec() as f64 + ts.tv_nsec() as f64 / 1e9
}

/// Runs `cmd` (optionally inside a network namespace) and returns stdout; panics with stderr
/// on failure.
pub fn run_in(netns: Option<&str>, cmd: &[&str]) -> String {
    let mut c = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]);
            c.args(cmd);
            c
        }
        None => {
            let mut c = Command::new(cmd[0]);
            c.args(&cmd[1..]);
            c
        }
    };
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn spawn_in(netns: Option<&str>, program: &Path, args: &[&str]) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]);
            c.arg(program);
            c.args(args);
            c
        }
        None => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
    }
}

/// Waits up to `within` for the first line a helper process prints on its piped stdout, which
/// must be `READY` and `N` words (addresses it listens on); returns the words. Anything else —
/// another line, silence, an early exit — kills the helper and fails the test, naming `what`,
/// the line and the helper's log at `log`.
pub fn await_ready<const N: usize>(
    child: &mut Child,
    within: Duration,
    what: &str,
    log: Option<&Path>,
) -> [String; N] {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(within).unwrap_or_default();
    let mut words = line.split_whitespace();
    let ready = if words.next() == Some("READY") {
        let words: Vec<String> = words.take(N).map(str::to_string).collect();
        <[String; N]>::try_from(words).ok()
    } else {
        None
    };
    match ready {
        Some(words) => words,
        None => {
            let _ = child.kill();
            let log = log
                .map(|p| format!("\n{}", std::fs::read_to_string(p).unwrap_or_default()))
                .unwrap_or_default();
            panic!("{what} did not become ready: {line:?}{log}");
        }
    }
}

/// One WHIP attempt's parts (an x264 encoder at 600 kbit/s, 5 s liveness), with nobody
/// listening to its events: for tests that drive `WhipOutput::connect` directly.
pub fn whip_attempt() -> Attempt {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    Attempt {
        number: 1,
        door: Door::new(),
        keyframes: KeyframeRequester::new(),
        events: EventSender::new(1, tx),
        stats: Arc::new(OutputStats::default()),
        adaptation: Arc::new(Adaptation::new(
            &EncoderConfig {
                kind: EncoderKind::X264,
                bitrate_kbps: 600,
                min_bitrate_kbps: 300,
                adapt: true,
                keyframe_interval_ms: 2000,
            },
            BitrateHandle::new(600),
            FlightRecorder::new(),
        )),
        dead_after: tokio::sync::watch::channel(Duration::from_secs(5)).1,
        local_address: None,
        cancel: CancellationToken::new(),
    }
}

/// Which independent receiver: aiortc (receiver reports and REMB, like a small server) or
/// GStreamer's webrtcbin (transport-wide congestion control feedback, like Broadcast Box).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiverKind {
    /// aiortc, asking once per new gap for everything missing.
    Aiortc,
    /// aiortc asking like Broadcast Box (pion): every 100 ms for every packet still missing;
    /// its receiver reports carry no timestamps (LSR = 0), like Broadcast Box's.
    AiortcPion,
    /// GStreamer's webrtcbin, asking for gaps only.
    Webrtcbin,
    /// webrtcbin with rtpjitterbuffer's defaults (`rtx-next-seqnum`: also for late packets).
    WebrtcbinDefault,
}

/// The independent WHIP receiver, running until dropped.
pub struct Receiver {
    child: Child,
    pub base: String,
    netns: Option<String>,
    stderr_log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Receiver {
    /// Starts the receiver on `host` (an IP; port chosen by the receiver) and waits for READY.
    pub fn start(host: &str, token: Option<&str>, netns: Option<&str>) -> Receiver {
        Self::start_on(&format!("{host}:0"), token, netns)
    }

    pub fn start_on(listen: &str, token: Option<&str>, netns: Option<&str>) -> Receiver {
        Self::start_kind(ReceiverKind::Aiortc, listen, token, netns)
    }

    pub fn start_kind(
        kind: ReceiverKind,
        listen: &str,
        token: Option<&str>,
        netns: Option<&str>,
    ) -> Receiver {
        let dir = tempfile::tempdir().expect("temp dir");
        let stderr_log = dir.path().join("receiver.log");
        let (script, py) = match kind {
            ReceiverKind::Aiortc | ReceiverKind::AiortcPion => {
                (repo_root().join("tests/peers/whip_receiver.py"), python())
            }
            // webrtcbin comes from Debian's GStreamer through PyGObject: the system Python.
            ReceiverKind::Webrtcbin | ReceiverKind::WebrtcbinDefault => (
                repo_root().join("tests/peers/webrtcbin_receiver.py"),
                PathBuf::from("/usr/bin/python3"),
            ),
        };
        let mut args = vec![script.to_str().expect("utf-8 path"), "--listen", listen];
        if let Some(t) = token {
            args.push("--token");
            args.push(t);
        }
        match kind {
            ReceiverKind::Aiortc => args.extend(["--connect-timeout", "15"]),
            ReceiverKind::AiortcPion => args.extend(["--connect-timeout", "15", "--nack", "pion"]),
            ReceiverKind::Webrtcbin => {}
            ReceiverKind::WebrtcbinDefault => args.extend(["--nack", "gstreamer"]),
        }
        let mut child = spawn_in(netns, &py, &args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_log).expect("log file"))
            .spawn()
            .expect("start whip_receiver.py");
        let [base] = await_ready(
            &mut child,
            Duration::from_secs(30),
            "receiver",
            Some(&stderr_log),
        );
        Receiver {
            child,
            base,
            netns: netns.map(str::to_string),
            stderr_log,
            _dir: dir,
        }
    }

    pub fn whip_url(&self) -> String {
        format!("{}/api/whip", self.base)
    }

    fn curl(&self, method: &str, path: &str, body: Option<&str>) -> Value {
        let url = format!("{}{}", self.base, path);
        let mut cmd = vec![
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-X",
            method,
            url.as_str(),
        ];
        if let Some(b) = body {
            cmd.extend(["-H", "Content-Type: application/json", "--data-binary", b]);
        }
        let out = run_in(self.netns.as_deref(), &cmd);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("receiver answered {out:?}: {e}"))
    }

    pub fn stats(&self) -> Value {
        self.curl("GET", "/control/stats", None)
    }

    pub fn script(&self, posts: Value) {
        let body = serde_json::json!({ "posts": posts, "replace": true }).to_string();
        self.curl("POST", "/control/script", Some(&body));
    }

    pub fn reset(&self) {
        self.curl("POST", "/control/reset", Some("{}"));
    }

    /// Ends every live session from the server side (the box must notice and come back).
    pub fn drop_sessions(&self) {
        self.curl("POST", "/control/drop", Some("{}"));
    }

    pub fn pli_flood(&self, duration_s: f64, interval_ms: u64) -> Value {
        let body =
            serde_json::json!({"duration_s": duration_s, "interval_ms": interval_ms}).to_string();
        self.curl("POST", "/control/pli_flood", Some(&body))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// Everything the (aiortc) receiver sends leaves `ms` late: a longer path back to the box.
    pub fn set_path_delay(&self, ms: u64) {
        let body = serde_json::json!({ "delay_ms": ms }).to_string();
        self.curl("POST", "/control/path", Some(&body));
    }

    /// Polls the stats until `pred` holds or `timeout` passes; returns the last stats.
    pub fn wait_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> (bool, Value) {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.stats();
            if pred(&s) {
                return (true, s);
            }
            if Instant::now() >= deadline {
                return (false, s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the receiver at once (a server that dies without a goodbye).
    pub fn kill(&mut self) {
        kill_tree(&mut self.child);
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        kill_tree(&mut self.child);
    }
}

/// `ip netns exec` execs the program, so the child pid is the program itself.
fn kill_tree(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A running `onair run` with its config and state in a temp dir.
pub struct Daemon {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub socket: PathBuf,
    log_path: PathBuf,
}

/// A config for the test source streaming to `url`. `extra` is merged on top (objects merge
/// key by key).
pub fn test_config(url: &str, token: Option<&str>, extra: Value) -> Value {
    let mut output = serde_json::json!({"kind": "whip", "url": url});
    if let Some(t) = token {
        output["token"] = Value::String(t.into());
    }
    let mut v = serde_json::json!({
        "source": {"kind": "test", "width": 320, "height": 240, "fps": 30},
        "encoder": {"kind": "x264", "bitrate_kbps": 600, "keyframe_interval_ms": 2000},
        "output": output,
    });
    merge(&mut v, extra);
    v
}

pub fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

impl Daemon {
    pub fn start(config: Value, netns: Option<&str>) -> Daemon {
        Self::start_with_env(config, netns, &[])
    }

    pub fn start_with_env(mut config: Value, netns: Option<&str>, env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("status.sock");
        merge(
            &mut config,
            serde_json::json!({
                "state_dir": dir.path().join("state"),
                "status": {"socket": socket},
            }),
        );
        // Outside a lab's namespace the daemon leaves the machine's routing alone: one
        // steering daemon per namespace, and tests (of other checkouts too) run side by side.
        if netns.is_none() && config.pointer("/network/paths").is_none() {
            merge(
                &mut config,
                serde_json::json!({"network": {"paths": "follow"}}),
            );
        }
        let config_path = dir.path().join("onair.json");
        std::fs::write(
            &config_path,
            serde_json::to_vec_pretty(&config).expect("json"),
        )
        .expect("write config");
        let log_path = dir.path().join("onair.log");
        let mut cmd = spawn_in(
            netns,
            &onair_bin(),
            &["run", "--config", config_path.to_str().expect("utf-8 path")],
        );
        cmd.env("RUST_LOG", "warn,onair=debug,rtc_dtls=error")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).expect("log file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start onair");
        Daemon {
            child: Some(child),
            dir,
            config_path,
            socket,
            log_path,
        }
    }

    /// The daemon's pid while it runs. Never 0: `kill(0, ..)` would hit this test's own
    /// process group.
    pub fn pid(&self) -> Option<i32> {
        self.child
            .as_ref()
            .map(|c| c.id() as i32)
            .filter(|&p| p > 0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Merges `patch` into the daemon's config file (for a SIGHUP to read).
    pub fn patch_config(&self, patch: Value) {
        let mut config: Value =
            serde_json::from_slice(&std::fs::read(&self.config_path).expect("read config"))
                .expect("the test wrote valid JSON");
        merge(&mut config, patch);
        std::fs::write(&self.config_path, config.to_string()).expect("write config");
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(pid) = self.pid() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
    }

    /// SIGTERM, then waits up to `within`; returns the exit code and how long it took.
    pub fn stop(&mut self, within: Duration) -> (Option<i32>, Duration) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let Some(mut child) = self.child.take() else {
            return (None, Duration::ZERO);
        };
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return (status.code(), start.elapsed());
            }
            if start.elapsed() > within {
                let _ = child.kill();
                let _ = child.wait();
                return (None, start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let start = Instant::now();
        while start.elapsed() < within {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// `onair status --json` against this daemon, parsed.
    pub fn status(&self) -> Option<Value> {
        let out = Command::new(onair_bin())
            .args(["status", "--json", "--socket"])
            .arg(&self.socket)
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// `onair status` for a person, as printed.
    pub fn status_text(&self) -> String {
        Command::new(onair_bin())
            .args(["status", "--socket"])
            .arg(&self.socket)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// `onair status --history` for a person, as printed.
    pub fn history_text(&self) -> String {
        Command::new(onair_bin())
            .args(["status", "--history", "--socket"])
            .arg(&self.socket)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Polls `status` until `pred` holds; returns the last status seen.
    pub fn wait_status(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> (bool, Value) {
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        loop {
            if let Some(s) = self.status() {
                if pred(&s) {
                    return (true, s);
                }
                last = s;
            }
            if Instant::now() >= deadline {
                return (false, last);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Open file descriptors and resident memory (kB) of the daemon, from /proc.
    pub fn fds_and_rss(&self) -> (usize, u64) {
        let Some(pid) = self.pid() else {
            return (0, 0);
        };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0);
        let mut status = String::new();
        let _ = std::fs::File::open(format!("/proc/{pid}/status"))
            .and_then(|mut f| f.read_to_string(&mut status));
        let rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        (fds, rss)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_tree(&mut child);
        }
    }
}

/// The receiver's decoded frame times (CLOCK_MONOTONIC seconds).
pub fn frame_times(stats: &Value) -> Vec<f64> {
    stats["frame_times"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

/// The first decoded frame at or after `t`.
pub fn first_frame_after(stats: &Value, t: f64) -> Option<f64> {
    frame_times(stats).into_iter().find(|&f| f >= t)
}
