//! A hostile WHIP server (tests/peers/hostile_whip.py): bodies without end, sessions placed on
//! another origin, the token echoed back, answers without usable video, and a session file in
//! `state_dir` that is not a file. Each attempt must end by itself with a classified failure
//! that says why, the token must reach nobody but the configured origin and no log line or
//! status field, and the daemon's memory must stay where it was.

mod common;

use common::{Daemon, test_config, whip_attempt};
use onair::output::whip::WhipOutput;
use onair::output::whip::http::{ANSWER_DEADLINE, MAX_ANSWER_BYTES, SESSION_FILE, WhipHttp};
use onair::output::{Failure, FailureClass, Output};
use onair::secret::{Secret, SecretUrl};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "hostile-Tk-4711";
/// What an endless body may push before the box hangs up, as a cap for runs against builds
/// without the limit (they read all of it).
const ENDLESS_CAP: u64 = 256 * 1024 * 1024;

/// The hostile server, killed on drop.
struct Hostile {
    child: Child,
    home: String,
    other: String,
}

impl Hostile {
    fn start() -> Hostile {
        let script = common::repo_root().join("tests/peers/hostile_whip.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--listen", "127.0.0.1:0", "--max-body-bytes"])
            .arg(ENDLESS_CAP.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start hostile_whip.py");
        let [home, other] =
            common::await_ready(&mut child, Duration::from_secs(10), "hostile_whip.py", None);
        Hostile { home, other, child }
    }

    fn whip_url(&self) -> String {
        format!("{}/api/whip", self.home)
    }

    fn curl(&self, args: &[&str]) -> String {
        common::run_in(None, &[&["curl", "-sS", "--max-time", "5"], args].concat())
    }

    fn script(&self, steps: Value) {
        let body = json!({ "posts": steps }).to_string();
        let url = format!("{}/control/script", self.home);
        self.curl(&["-X", "POST", "--data-binary", &body, &url]);
    }

    /// Every request either port has seen (the control requests included).
    fn requests(&self) -> Vec<Value> {
        let out = self.curl(&[&format!("{}/control/log", self.home)]);
        let v: Value = serde_json::from_str(&out).expect("the log is JSON");
        v["requests"].as_array().cloned().unwrap_or_default()
    }

    fn posts(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r["method"] == "POST" && r["path"] == "/api/whip")
            .collect()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn output(url: &str, token: &str, state: &Path) -> WhipOutput {
    WhipOutput::new(&SecretUrl::new(url, 0), Some(Secret::new(token)), state).expect("output")
}

/// One attempt that must fail by itself within `within`; returns the failure and its time.
async fn failing_attempt(out: &WhipOutput, within: Duration) -> (Failure, Duration) {
    let started = Instant::now();
    let result = tokio::time::timeout(within, out.connect(whip_attempt()))
        .await
        .unwrap_or_else(|_| panic!("the attempt did not end within {within:?}"));
    match result {
        Ok(conn) => {
            conn.close(true).await;
            panic!("the attempt succeeded against a hostile server");
        }
        Err(f) => (f, started.elapsed()),
    }
}

fn assert_clean(what: &str, text: &str) {
    assert!(!text.contains(TOKEN), "{what} carries the token: {text}");
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "{what} carries control characters: {text:?}"
    );
}

/// The token only ever went to HOME.
fn assert_nothing_reached_other(h: &Hostile) {
    let strays: Vec<Value> = h
        .requests()
        .into_iter()
        .filter(|r| r["listener"] == "other")
        .collect();
    assert!(
        strays.is_empty(),
        "requests reached the other origin: {strays:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_on_another_origin_is_refused_and_never_contacted() {
    let h = Hostile::start();
    let dir = tempfile::tempdir().unwrap();
    let out = output(&h.whip_url(), TOKEN, dir.path());
    let protocol_relative = h.other.trim_start_matches("http:").to_string();
    let other_scheme = h.home.replacen("http:", "https:", 1);
    let locations = [
        format!("{}/api/whip/s1", h.other),
        format!("{protocol_relative}/api/whip/s2"),
        format!("{other_scheme}/api/whip/s3"),
    ];
    for location in &locations {
        h.script(json!([{"status": 201, "location": location, "body": "v=0\r\nnot an answer"}]));
        let (f, took) = failing_attempt(&out, Duration::from_secs(5)).await;
        assert_eq!(f.class, FailureClass::Permanent, "{location}: {f:?}");
        assert!(
            f.message.contains("another origin"),
            "{location}: {}",
            f.message
        );
        assert_clean("the failure", &f.message);
        println!("Location {location}: refused after {took:?}: {}", f.message);
        out.release().await;
    }
    assert_nothing_reached_other(&h);
    assert!(
        !dir.path().join(SESSION_FILE).exists(),
        "a session on another origin was remembered"
    );
}

/// After the URL and the token change, the session remembered from the old server is not
/// DELETEd (let alone with the new token).
#[tokio::test(flavor = "multi_thread")]
async fn a_session_from_the_previous_server_is_left_alone() {
    let h = Hostile::start();
    let dir = tempfile::tempdir().unwrap();
    // The box streamed to OTHER with the old token, then died without a DELETE.
    let old = output(&format!("{}/api/whip", h.other), "old-token-1", dir.path());
    h.script(json!([{"status": 201, "location": "/api/whip/old-session", "body": "no answer"}]));
    let (f, _) = failing_attempt(&old, Duration::from_secs(5)).await;
    assert!(f.message.contains("not an SDP answer"), "{}", f.message);
    drop(old);
    assert!(
        dir.path().join(SESSION_FILE).exists(),
        "the session is remembered"
    );
    // The config now points at HOME with a new token.
    let new = output(&h.whip_url(), TOKEN, dir.path());
    h.script(json!([{"status": 500, "body": "busy"}]));
    let (f, _) = failing_attempt(&new, Duration::from_secs(5)).await;
    assert!(f.message.contains("500"), "{}", f.message);
    new.release().await;
    let to_other: Vec<Value> = h
        .requests()
        .into_iter()
        .filter(|r| r["listener"] == "other" && r["method"] != "POST")
        .collect();
    assert!(
        to_other.is_empty(),
        "the old server's session was contacted from the new config: {to_other:#?}"
    );
    let new_token_elsewhere = h.requests().into_iter().any(|r| {
        r["listener"] == "other"
            && r["authorization"]
                .as_str()
                .is_some_and(|a| a.contains(TOKEN))
    });
    assert!(!new_token_elsewhere, "the new token went to the old server");
}

#[tokio::test(flavor = "multi_thread")]
async fn endless_bodies_end_the_attempt_at_their_limit() {
    let h = Hostile::start();
    let dir = tempfile::tempdir().unwrap();
    let out = output(&h.whip_url(), TOKEN, dir.path());
    let larger = format!("larger than {MAX_ANSWER_BYTES} bytes");
    let cases = [
        (
            json!({"status": 201, "location": "/api/whip/e1", "endless": "close"}),
            larger.as_str(),
        ),
        (
            json!({"status": 201, "location": "/api/whip/e2", "endless": "chunked"}),
            larger.as_str(),
        ),
        (
            json!({"status": 500, "endless": "chunked", "body": "overloaded "}),
            "500",
        ),
        (json!({"status": 500, "endless": "close"}), "500"),
    ];
    for (step, says) in cases {
        h.script(json!([step.clone()]));
        let (f, took) = failing_attempt(&out, Duration::from_secs(8)).await;
        assert_eq!(f.class, FailureClass::Transient, "{step}: {f:?}");
        assert!(f.message.contains(says), "{step}: {}", f.message);
        assert!(took < Duration::from_secs(3), "{step}: took {took:?}");
        let posts = h.posts();
        let sent = posts.last().and_then(|p| p["endless_bytes"].as_u64());
        println!(
            "{step}: failed after {took:?} ({}), the server pushed {sent:?} bytes",
            f.message
        );
    }
}

/// An answer that starts and then stops coming ends the attempt at the answer's deadline,
/// well inside the attempt's own.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_answer_ends_the_attempt_at_its_deadline() {
    let h = Hostile::start();
    let dir = tempfile::tempdir().unwrap();
    let out = output(&h.whip_url(), TOKEN, dir.path());
    h.script(json!([{"status": 201, "location": "/api/whip/slow", "endless": "stall"}]));
    let (f, took) = failing_attempt(&out, Duration::from_secs(9)).await;
    println!("a stalled answer: failed after {took:?}: {}", f.message);
    assert_eq!(f.class, FailureClass::Transient, "{f:?}");
    assert!(f.message.contains("did not arrive within"), "{}", f.message);
    assert!(
        took >= ANSWER_DEADLINE && took < ANSWER_DEADLINE + Duration::from_secs(2),
        "took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_without_h264_video_fail_at_once_with_the_reason() {
    let h = Hostile::start();
    let dir = tempfile::tempdir().unwrap();
    let out = output(&h.whip_url(), TOKEN, dir.path());
    for (answer, says) in [("vp8", "only VP8"), ("no_video", "no video section")] {
        h.script(json!([{"status": 201, "location": "/api/whip/v", "answer": answer}]));
        let (f, took) = failing_attempt(&out, Duration::from_secs(5)).await;
        assert!(f.message.contains(says), "{answer}: {}", f.message);
        assert_eq!(f.class, FailureClass::Permanent, "{answer}: {f:?}");
        assert!(took < Duration::from_secs(2), "{answer}: took {took:?}");
        println!("{answer} answer: failed after {took:?}: {}", f.message);
    }
    // The sessions those answers created are DELETEd (on HOME, with the token).
    out.release().await;
    let deletes: Vec<Value> = h
        .requests()
        .into_iter()
        .filter(|r| r["method"] == "DELETE")
        .collect();
    assert!(!deletes.is_empty(), "the refused sessions were not deleted");
    assert_nothing_reached_other(&h);
}

#[tokio::test(flavor = "multi_thread")]
async fn token_echoes_never_reach_a_failure_message() {
    let h = Hostile::start();
    let dir = tempfile::tempdir().unwrap();
    let out = output(&h.whip_url(), TOKEN, dir.path());
    let straddle = format!("{}{TOKEN}", "x".repeat(150));
    let steps = [
        json!({"status": 201, "location": format!("/api/whip/{TOKEN}/s"), "body": format!("{TOKEN}\u{1b}[31m not sdp")}),
        json!({"status": 500, "body": straddle}),
        json!({"status": 400, "body": format!("denied\r\nX-Forged: {TOKEN}\u{7}")}),
        json!({"status": 201, "location": "/api/whip/q", "body": format!("v=0\r\n{TOKEN}=1\r\n")}),
    ];
    for step in steps {
        h.script(json!([step.clone()]));
        let (f, _) = failing_attempt(&out, Duration::from_secs(5)).await;
        assert_clean("the failure", &f.message);
        println!("{}", f.message);
    }
}

/// A session file in `state_dir` that is a FIFO, a link to /dev/zero, a directory or huge is
/// refused at once, without waiting on it or reading it.
#[test]
fn a_session_file_that_is_not_a_file_is_refused_at_once() {
    let url = SecretUrl::new("http://127.0.0.1:9/api/whip", 0);
    type Make = fn(&Path);
    let cases: [(&str, Make); 4] = [
        ("a FIFO", |p| {
            nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap()
        }),
        ("a link to /dev/zero", |p| {
            std::os::unix::fs::symlink("/dev/zero", p).unwrap()
        }),
        ("a directory", |p| std::fs::create_dir(p).unwrap()),
        ("a 100 MB file", |p| {
            std::fs::File::create(p)
                .unwrap()
                .set_len(100_000_000)
                .unwrap()
        }),
    ];
    for (what, make) in cases {
        let dir = tempfile::tempdir().unwrap();
        make(&dir.path().join(SESSION_FILE));
        let (tx, rx) = std::sync::mpsc::channel();
        let (url, state) = (url.clone(), dir.path().to_path_buf());
        std::thread::spawn(move || {
            let http = WhipHttp::new(&url, Some(Secret::new(TOKEN)), &state);
            let _ = tx.send(http.map(|h| h.remembered()).map_err(|e| e.to_string()));
        });
        let got = rx
            .recv_timeout(Duration::from_secs(2))
            .unwrap_or_else(|_| panic!("{what}: start-up waits on the session file"));
        assert_eq!(got, Ok(None), "{what}");
    }
}

fn vm_kib(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn daemon_config(h: &Hostile) -> Value {
    test_config(
        &h.whip_url(),
        Some(TOKEN),
        json!({"reconnect": {"initial_delay_ms": 100, "max_delay_ms": 200, "jitter": 0.0}}),
    )
}

/// Waits until the hostile server has seen `n` POSTs and every endless body has been hung up on.
fn wait_posts(h: &Hostile, d: &Daemon, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let posts = h.posts();
        let ended = posts
            .iter()
            .all(|p| p["step"]["endless"].is_null() || !p["endless_end_t"].is_null());
        if posts.len() >= n && ended {
            // A beat for the attempt's failure to reach the watchdog.
            std::thread::sleep(Duration::from_millis(300));
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} POSTs within {within:?}; log:\n{}",
            posts.len(),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The real daemon, answered with bodies that never end: its peak memory (VmHWM) stays within a
/// few MiB of where it was before, and every attempt ends at once.
#[test]
fn endless_answers_cost_the_daemon_no_memory() {
    let _serial = common::serial();
    let h = Hostile::start();
    // A plain refusal first, to see the daemon's memory with its pipeline up.
    h.script(json!([
        {"status": 503, "headers": {"Retry-After": "1"}, "body": "warming up"},
        {"status": 201, "location": "/api/whip/e1", "endless": "close"},
        {"status": 500, "endless": "chunked", "body": "overloaded "},
        {"status": 201, "location": "/api/whip/e2", "endless": "chunked"},
        {"status": 500, "endless": "close"},
    ]));
    let mut d = Daemon::start(daemon_config(&h), None);
    let pid = d.pid().expect("running");
    wait_posts(&h, &d, 1, Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(1000));
    let before = vm_kib(pid, "VmHWM:");
    wait_posts(&h, &d, 5, Duration::from_secs(20));
    let after = vm_kib(pid, "VmHWM:");
    let rss = vm_kib(pid, "VmRSS:");
    let posts = h.posts();
    let pushed: u64 = posts
        .iter()
        .filter_map(|p| p["endless_bytes"].as_u64())
        .sum();
    let took: Vec<String> = posts
        .windows(2)
        .map(|w| {
            let (a, b) = (
                w[0]["t"].as_f64().unwrap_or(0.0),
                w[1]["t"].as_f64().unwrap_or(0.0),
            );
            format!("{:.2}", b - a)
        })
        .collect();
    println!(
        "VmHWM {before} kB before the endless answers, {after} kB after (VmRSS {rss} kB); \
         the server pushed {:.1} MiB in all; seconds between POSTs: {took:?}",
        pushed as f64 / 1048576.0
    );
    let status = d.status().expect("status answers");
    println!("last_error: {}", status["last_error"]);
    assert!(
        after.saturating_sub(before) < 16 * 1024,
        "peak memory grew by {} kB under endless bodies",
        after - before
    );
    let (code, _) = d.stop(Duration::from_secs(5));
    assert_eq!(code, Some(0), "{}", d.log());
}

/// The real daemon, answered by a server that echoes the token: the daemon's log, its status
/// and its history never carry it, nor control characters.
#[test]
fn an_echoed_token_reaches_no_log_and_no_status() {
    let _serial = common::serial();
    let h = Hostile::start();
    h.script(json!([
        {"status": 201, "location": format!("/api/whip/{TOKEN}/s1"), "body": format!("{TOKEN}\u{1b}[2J not sdp")},
        {"status": 500, "body": format!("{}{TOKEN}", "y".repeat(150))},
        {"status": 201, "location": format!("/api/whip/s2?k={TOKEN}"), "answer": "vp8"},
    ]));
    let mut d = Daemon::start(daemon_config(&h), None);
    wait_posts(&h, &d, 3, Duration::from_secs(20));
    let status = d.status_text();
    let json = d.status().expect("status answers");
    let history = Command::new(common::onair_bin())
        .args(["status", "--history", "--socket"])
        .arg(&d.socket)
        .output()
        .expect("onair status --history");
    let history = String::from_utf8_lossy(&history.stdout).into_owned();
    assert_eq!(
        json["state"], "failed",
        "the VP8-only answer is permanent: {json:#}"
    );
    let (code, _) = d.stop(Duration::from_secs(5));
    assert_eq!(code, Some(0));
    let log = d.log();
    if std::env::var_os("SHOW_LOG").is_some() {
        println!("{log}");
    }
    // The daemon did hear all of it: the refusals are in its log, only without the token.
    assert!(log.contains("not an SDP answer"), "{log}");
    assert!(log.contains("only VP8"), "{log}");
    assert_clean("the log", &log);
    assert_clean("onair status", &status);
    assert_clean("onair status --json", &json.to_string());
    assert_clean("onair status --history", &history);
    // And the sessions it was told about were DELETEd, on HOME only.
    assert!(
        h.requests().iter().any(|r| r["method"] == "DELETE"),
        "no DELETE"
    );
    assert_nothing_reached_other(&h);
}
