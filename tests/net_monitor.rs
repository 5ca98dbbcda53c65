//! The network monitor against real kernel events, in network namespaces.
//!
//! Each test builds its own pair of namespaces (names include the pid, so parallel runs and
//! other engineers' namespace tests do not collide): a "box" with veth `vbox` 192.0.2.2/24 and
//! a default route via 192.0.2.1, and a "server" holding the peer `vsrv` 192.0.2.1/24. Taking
//! `vsrv` down takes the carrier away from `vbox`, like pulling the cable out of the switch.
//! No traffic leaves these namespaces.
//!
//! The uplink tests add a second pair, `vwl` 198.51.100.2/24 via 198.51.100.1, and give the
//! server namespace 203.0.113.1 on its `lo`, reachable through both: the box's route to it is
//! the path the monitor reports and steers.
//!
//! The monitor runs inside the box namespace in a child process: this test binary re-executed
//! under `ip netns exec`, running only the ignored `netwatch_child` test, which prints one
//! `NETWATCH|<status>|<status as JSON>` line per reported change (what `examples/netwatch.rs`
//! does for a person). Needs root and iproute2; skips with a printed reason when not root.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One namespace test at a time in this binary: they measure latencies.
static SERIAL: Mutex<()> = Mutex::new(());
static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// The bound the supervisor relies on (the fault lab wants frames within 1 s of link-up).
const REPORT_WITHIN: Duration = Duration::from_millis(200);
/// How long to wait for the child's first line (process start plus initial dump).
const START_WITHIN: Duration = Duration::from_secs(10);

const CHILD_ENV: &str = "ONAIR_NETWATCH_CHILD";
const SERVER_ENV: &str = "ONAIR_NETWATCH_SERVER";
const IGNORE_ENV: &str = "ONAIR_NETWATCH_IGNORE";
const PREFER_ENV: &str = "ONAIR_NETWATCH_PREFER";
const SETTLE_ENV: &str = "ONAIR_NETWATCH_SETTLE_MS";
const PATHS_ENV: &str = "ONAIR_NETWATCH_PATHS";
/// The server address of the uplink tests (on the server namespace's `lo`).
const FAR_SERVER: &str = "203.0.113.1";
const LINE_PREFIX: &str = "NETWATCH|";

/// Root check and lock; `None` (after saying why) when these tests cannot run here.
fn lab_guard() -> Option<MutexGuard<'static, ()>> {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipping: network namespace tests need root (CI runs them as root)");
        return None;
    }
    // A failed test poisons the lock; the next test still runs.
    Some(
        SERIAL
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    )
}

fn run_ip(args: &[&str], stdin: Option<&str>) {
    let mut command = Command::new("ip");
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `ip` (iproute2 installed?): {e}"));
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .expect("writing an ip -batch script to a live child");
    }
    let output = child.wait_with_output().expect("waiting for ip");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// The two namespaces and the veth between them; deleted on drop, also when a test fails.
struct Lab {
    box_ns: String,
    server_ns: String,
}

impl Lab {
    fn new() -> Lab {
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let lab = Lab {
            box_ns: format!("onair-net-{pid}-{n}-box"),
            server_ns: format!("onair-net-{pid}-{n}-srv"),
        };
        run_ip(&["netns", "add", &lab.box_ns], None);
        run_ip(&["netns", "add", &lab.server_ns], None);
        lab.in_box(&["link", "set", "lo", "up"]);
        lab.in_server(&["link", "set", "lo", "up"]);
        lab.add_veth();
        lab
    }

    /// The veth pair with its addresses and the box's default route. Explicit, different
    /// interface indices: the kernel reports carrier changes of a device whose index equals
    /// its peer's index ("non-urgent") at most once per second (linkwatch), which would
    /// measure the kernel's rate limit instead of the monitor.
    fn add_veth(&self) {
        #[rustfmt::skip]
        self.in_box(&["link", "add", "vbox", "index", "7001", "type", "veth",
                      "peer", "name", "vsrv", "index", "7002", "netns", &self.server_ns]);
        self.in_box(&["addr", "add", "192.0.2.2/24", "dev", "vbox"]);
        self.in_server(&["addr", "add", "192.0.2.1/24", "dev", "vsrv"]);
        self.in_server(&["link", "set", "vsrv", "up"]);
        self.in_box(&["link", "set", "vbox", "up"]);
        self.in_box(&["route", "replace", "default", "via", "192.0.2.1"]);
    }

    fn in_box(&self, args: &[&str]) {
        let mut all = vec!["-n", self.box_ns.as_str()];
        all.extend_from_slice(args);
        run_ip(&all, None);
    }

    fn in_server(&self, args: &[&str]) {
        let mut all = vec!["-n", self.server_ns.as_str()];
        all.extend_from_slice(args);
        run_ip(&all, None);
    }

    /// Runs many commands in the server namespace in one `ip -batch` (microseconds apart).
    fn server_batch(&self, script: &str) {
        run_ip(&["-n", &self.server_ns, "-batch", "-"], Some(script));
    }

    fn carrier(&self, on: bool) {
        self.in_server(&["link", "set", "vsrv", if on { "up" } else { "down" }]);
    }

    /// A second uplink, `vwl`, whose default route the kernel prefers (metric 100 against
    /// `vbox`'s 200), and the far server address reachable through both.
    fn add_second_uplink(&self) {
        #[rustfmt::skip]
        self.in_box(&["link", "add", "vwl", "index", "7003", "type", "veth",
                      "peer", "name", "vsw", "index", "7004", "netns", &self.server_ns]);
        self.in_box(&["addr", "add", "198.51.100.2/24", "dev", "vwl"]);
        self.in_server(&["addr", "add", "198.51.100.1/24", "dev", "vsw"]);
        self.in_server(&["addr", "add", &format!("{FAR_SERVER}/32"), "dev", "lo"]);
        self.in_server(&["link", "set", "vsw", "up"]);
        self.in_box(&["link", "set", "vwl", "up"]);
        self.in_box(&["route", "del", "default"]);
        #[rustfmt::skip]
        self.in_box(&["route", "add", "default", "via", "192.0.2.1", "dev", "vbox", "metric", "200"]);
        #[rustfmt::skip]
        self.in_box(&["route", "add", "default", "via", "198.51.100.1", "dev", "vwl", "metric", "100"]);
    }

    /// What `ip` prints in the box namespace.
    fn box_output(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.box_ns])
            .args(args)
            .output()
            .expect("running ip");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// How the child's monitor is configured beyond the server and the ignored interfaces.
#[derive(Default)]
struct Options {
    prefer: Vec<&'static str>,
    settle_ms: Option<u64>,
    /// `network.paths`; default `steer`, as in the daemon.
    paths: Option<&'static str>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.box_ns, &self.server_ns] {
            let deleted = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
            if !deleted.is_ok_and(|s| s.success()) {
                eprintln!("warning: could not delete network namespace {ns}");
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Report {
    online: bool,
    interfaces: Vec<String>,
}

impl Report {
    fn parse(text: &str) -> Report {
        let text = text.split('|').next().unwrap_or_default();
        let text = text.split(" (path").next().unwrap_or_default();
        let mut words = text.split_whitespace();
        let online = match words.next() {
            Some("online") => true,
            Some("offline") => false,
            _ => panic!("unexpected status line from the child: {text:?}"),
        };
        let interfaces = words
            .next()
            .map(|list| list.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        Report { online, interfaces }
    }
}

/// The monitor running in the box namespace; stopped (stdin closed, then killed if it hangs)
/// on drop.
struct Watcher {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<(Instant, String)>,
    /// The last full status seen (JSON), for the uplink tests.
    last: serde_json::Value,
    /// The child's log (stderr), also passed through to ours.
    log: Arc<Mutex<Vec<String>>>,
}

impl Watcher {
    fn start(lab: &Lab, server: Option<&str>, ignore: &[&str]) -> (Watcher, Report) {
        Self::start_with(lab, server, ignore, Options::default())
    }

    fn start_with(
        lab: &Lab,
        server: Option<&str>,
        ignore: &[&str],
        options: Options,
    ) -> (Watcher, Report) {
        let exe = std::env::current_exe().expect("path of the running test binary");
        let exe = exe.to_str().expect("test binary path is UTF-8");
        let mut command = Command::new("ip");
        #[rustfmt::skip]
        command
            .args(["netns", "exec", &lab.box_ns, exe,
                   "netwatch_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, "1")
            .env(IGNORE_ENV, ignore.join(","))
            .env(PREFER_ENV, options.prefer.join(","))
            .env(SETTLE_ENV, options.settle_ms.map(|m| m.to_string()).unwrap_or_default())
            .env(PATHS_ENV, options.paths.unwrap_or("steer"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match server {
            Some(server) => command.env(SERVER_ENV, server),
            None => command.env_remove(SERVER_ENV),
        };
        let mut child = command.spawn().expect("spawning the monitor child");
        let stdout = child.stdout.take().expect("child stdout was piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest may print "test netwatch_child ... " before our first line.
                if let Some(at) = line.find(LINE_PREFIX)
                    && tx
                        .send((Instant::now(), line[at + LINE_PREFIX.len()..].to_string()))
                        .is_err()
                {
                    break;
                }
            }
        });
        let stderr = child.stderr.take().expect("child stderr was piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let log_writer = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("  child: {line}");
                log_writer
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push(line);
            }
        });
        let stdin = child.stdin.take();
        let mut watcher = Watcher {
            child,
            stdin,
            lines,
            last: serde_json::Value::Null,
            log,
        };
        let (_, first) = watcher.next(START_WITHIN).unwrap_or_else(|| {
            panic!(
                "the monitor reported no initial status; its log:\n{}",
                watcher.log.lock().map(|l| l.join("\n")).unwrap_or_default()
            )
        });
        (watcher, first)
    }

    /// The next reported status, if one comes within `timeout`.
    fn next(&mut self, timeout: Duration) -> Option<(Instant, Report)> {
        match self.lines.recv_timeout(timeout) {
            Ok((at, line)) if line == "stopped" => panic!("monitor stopped unexpectedly at {at:?}"),
            Ok((at, line)) => {
                if let Some((_, json)) = line.split_once('|') {
                    self.last = serde_json::from_str(json).expect("the child prints JSON");
                }
                Some((at, Report::parse(&line)))
            }
            Err(_) => None,
        }
    }

    /// Waits until the full status satisfies `pred`; returns it with its latency from
    /// `since`. Fails the test if that takes longer than `within`.
    fn expect_status(
        &mut self,
        since: Instant,
        within: Duration,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> (Duration, serde_json::Value) {
        if pred(&self.last) {
            return (Duration::ZERO, self.last.clone());
        }
        let deadline = since + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some((at, _)) if pred(&self.last) => return (at - since, self.last.clone()),
                Some(_) => continue,
                None => panic!(
                    "no status with {what} within {within:?}; last: {:#}",
                    self.last
                ),
            }
        }
    }

    /// Every full status reported until none came for `quiet` (bounded by `max`).
    fn drain_full(&mut self, quiet: Duration, max: Duration) -> Vec<serde_json::Value> {
        let end = Instant::now() + max;
        let mut all = Vec::new();
        while Instant::now() < end {
            match self.next(quiet) {
                Some(_) => all.push(self.last.clone()),
                None => break,
            }
        }
        all
    }

    /// Waits for a report with `online` and returns it with its latency from `since`. Fails
    /// the test if it takes longer than `within`.
    fn expect(&mut self, online: bool, since: Instant, within: Duration) -> (Duration, Report) {
        let deadline = since + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some((at, report)) if report.online == online => return (at - since, report),
                Some(_) => continue,
                None => panic!(
                    "no `{}` report within {within:?}",
                    if online { "online" } else { "offline" }
                ),
            }
        }
    }

    /// Waits until the child logged a line containing `needle`.
    fn expect_log(&self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let log = self
                .log
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if log.iter().any(|line| line.contains(needle)) {
                return;
            }
            drop(log);
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the monitor did not log {needle:?} within {within:?}");
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = i32::try_from(self.child.id()).expect("pids fit in i32");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
            .unwrap_or_else(|e| panic!("cannot send {signal} to the monitor child: {e}"));
    }

    /// Every report until none came for `quiet` (bounded by `max`).
    fn drain(&mut self, quiet: Duration, max: Duration) -> Vec<Report> {
        let end = Instant::now() + max;
        let mut reports = Vec::new();
        while Instant::now() < end {
            match self.next(quiet) {
                Some((_, report)) => reports.push(report),
                None => break,
            }
        }
        reports
    }

    /// Closes the child's stdin (its shutdown signal) and waits for it to say it stopped.
    fn stop(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((_, line)) if line == "stopped" => break,
                Ok(_) => continue,
                Err(_) => panic!("the monitor did not stop within 3 s of shutdown"),
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("warning: monitor child did not exit; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[test]
fn carrier_loss_and_return_are_reported_within_200ms() {
    let Some(_serial) = lab_guard() else { return };
    let lab = Lab::new();
    let (mut watcher, first) = Watcher::start(&lab, Some("192.0.2.1"), &[]);
    assert_eq!(
        first,
        Report {
            online: true,
            interfaces: vec!["vbox".into()]
        }
    );
    for round in 0..3 {
        let since = Instant::now();
        lab.carrier(false);
        let (down, report) = watcher.expect(false, since, REPORT_WITHIN);
        assert!(report.interfaces.is_empty(), "{report:?}");

        let since = Instant::now();
        lab.carrier(true);
        let (up, report) = watcher.expect(true, since, REPORT_WITHIN);
        assert_eq!(report.interfaces, vec!["vbox"]);
        eprintln!(
            "round {round}: link down -> offline {}, link up -> online {}",
            ms(down),
            ms(up)
        );
    }
    assert_eq!(
        watcher.drain(Duration::from_millis(300), Duration::from_secs(2)),
        vec![],
        "no further reports once the link is stable"
    );
    watcher.stop();
}

#[test]
fn address_removal_goes_offline_and_restoring_it_comes_back() {
    let Some(_serial) = lab_guard() else { return };
    let lab = Lab::new();
    let (mut watcher, first) = Watcher::start(&lab, Some("192.0.2.1"), &[]);
    assert!(first.online);

    let since = Instant::now();
    lab.in_box(&["addr", "del", "192.0.2.2/24", "dev", "vbox"]);
    let (latency, report) = watcher.expect(false, since, REPORT_WITHIN);
    assert!(
        report.interfaces.is_empty(),
        "link-local IPv6 alone is not usable"
    );
    eprintln!("address removed -> offline {}", ms(latency));

    let since = Instant::now();
    lab.in_box(&["addr", "add", "192.0.2.2/24", "dev", "vbox"]);
    lab.in_box(&["route", "replace", "default", "via", "192.0.2.1"]);
    let (latency, _) = watcher.expect(true, since, REPORT_WITHIN);
    eprintln!("address restored -> online {}", ms(latency));
}

#[test]
fn link_flaps_settle_in_the_right_state_with_few_reports() {
    let Some(_serial) = lab_guard() else { return };
    let lab = Lab::new();
    let (mut watcher, first) = Watcher::start(&lab, Some("192.0.2.1"), &[]);
    assert!(first.online);
    let cycles = "link set vsrv down\nlink set vsrv up\n".repeat(20);

    // 20 cycles within microseconds (one ip -batch), ending up.
    lab.server_batch(&cycles);
    let fast = watcher.drain(Duration::from_millis(300), Duration::from_secs(3));
    assert!(fast.len() <= 2, "fast flap reported {} times", fast.len());
    assert!(fast.last().is_none_or(|r| r.online), "{fast:?}");

    // 20 cycles spread over ~100 ms (one ip process per change), ending down.
    let since = Instant::now();
    for _ in 0..20 {
        lab.carrier(false);
        lab.carrier(true);
    }
    lab.carrier(false);
    let spread = since.elapsed();
    let slow = watcher.drain(Duration::from_millis(300), Duration::from_secs(5));
    eprintln!(
        "20 flaps over {}: {} reports (fast batch: {} reports)",
        ms(spread),
        slow.len(),
        fast.len()
    );
    assert!(
        !slow.is_empty() && !slow[slow.len() - 1].online,
        "final state offline: {slow:?}"
    );
    // At most one report per 50 ms coalescing window, plus the final one.
    let bound = 2 + (spread.as_millis() / 40) as usize;
    assert!(slow.len() <= bound, "{} reports > {bound}", slow.len());

    let since = Instant::now();
    lab.carrier(true);
    watcher.expect(true, since, REPORT_WITHIN);
}

#[test]
fn ignored_interface_does_not_count() {
    let Some(_serial) = lab_guard() else { return };
    let lab = Lab::new();
    let (mut watcher, first) = Watcher::start(&lab, Some("192.0.2.1"), &["vb*"]);
    assert_eq!(
        first,
        Report {
            online: false,
            interfaces: vec![]
        },
        "the only route to the server is via an ignored interface"
    );
    lab.carrier(false);
    lab.carrier(true);
    assert_eq!(
        watcher.drain(Duration::from_millis(300), Duration::from_secs(2)),
        vec![],
        "changes on an ignored interface change nothing"
    );
}

#[test]
fn interface_removed_and_recreated() {
    let Some(_serial) = lab_guard() else { return };
    let lab = Lab::new();
    let (mut watcher, first) = Watcher::start(&lab, Some("192.0.2.1"), &[]);
    assert!(first.online);

    let since = Instant::now();
    lab.in_box(&["link", "del", "vbox"]);
    let (gone, _) = watcher.expect(false, since, REPORT_WITHIN);

    let since = Instant::now();
    lab.add_veth();
    let (back, report) = watcher.expect(true, since, REPORT_WITHIN);
    assert_eq!(report.interfaces, vec!["vbox"]);
    eprintln!(
        "interface deleted -> offline {}, recreated -> online {}",
        ms(gone),
        ms(back)
    );
}

#[test]
fn loopback_server_stays_online_without_any_interface() {
    let Some(_serial) = lab_guard() else { return };
    let lab = Lab::new();
    let (mut watcher, first) = Watcher::start(&lab, Some("127.0.0.1"), &[]);
    assert!(first.online);
    lab.carrier(false);
    let reports = watcher.drain(Duration::from_millis(300), Duration::from_secs(2));
    assert_eq!(
        reports,
        vec![Report {
            online: true,
            interfaces: vec![]
        }],
        "vbox stops being usable, the box stays online via lo"
    );
}

#[test]
fn default_route_decides_when_no_server_is_known() {
    let Some(_serial) = lab_guard() else { return };
    let lab = Lab::new();
    let (mut watcher, first) = Watcher::start(&lab, None, &[]);
    assert!(first.online);

    let since = Instant::now();
    lab.in_box(&["route", "del", "default"]);
    watcher.expect(false, since, REPORT_WITHIN);

    let since = Instant::now();
    lab.in_box(&["route", "add", "default", "via", "192.0.2.1"]);
    watcher.expect(true, since, REPORT_WITHIN);

    let since = Instant::now();
    lab.carrier(false);
    watcher.expect(false, since, REPORT_WITHIN);
}

#[test]
fn overrun_is_survived_by_re_reading_the_state() {
    let Some(_serial) = lab_guard() else { return };
    let lab = Lab::new();
    let (mut watcher, first) = Watcher::start(&lab, Some("192.0.2.1"), &[]);
    assert!(first.online);

    // Freeze the monitor, make the kernel send far more than its receive buffer holds
    // (each address brings an address and a local-route message), and take the carrier away
    // while it cannot read: the carrier message itself is lost in the overrun.
    watcher.signal(nix::sys::signal::Signal::SIGSTOP);
    // 198.18.0.0/15 is reserved for benchmarks (RFC 2544), big enough and never routed.
    let mut script = String::new();
    for i in 0..3000u32 {
        script.push_str(&format!(
            "addr add 198.18.{}.{}/32 dev vbox\n",
            i / 250,
            i % 250 + 1
        ));
    }
    run_ip(&["-n", &lab.box_ns, "-batch", "-"], Some(&script));
    lab.carrier(false);
    let since = Instant::now();
    watcher.signal(nix::sys::signal::Signal::SIGCONT);

    let (latency, _) = watcher.expect(false, since, Duration::from_secs(2));
    watcher.expect_log("netlink messages lost", Duration::from_secs(1));
    eprintln!(
        "after an overrun: offline reported {} after resuming",
        ms(latency)
    );

    let since = Instant::now();
    lab.carrier(true);
    watcher.expect(true, since, REPORT_WITHIN);
}

#[test]
fn host_name_is_resolved_and_its_route_decides() {
    let Some(_serial) = lab_guard() else { return };
    let lab = Lab::new();
    // "localhost" resolves from /etc/hosts: no DNS query leaves the machine.
    let (mut watcher, first) = Watcher::start(&lab, Some("localhost"), &[]);
    assert!(
        first.online,
        "before it resolves, the default route via vbox decides"
    );
    watcher.expect_log(
        "network: server localhost resolves to",
        Duration::from_secs(5),
    );

    // Resolved: the route to the server goes via lo, so losing vbox does not matter.
    lab.carrier(false);
    let reports = watcher.drain(Duration::from_millis(300), Duration::from_secs(2));
    assert_eq!(
        reports,
        vec![Report {
            online: true,
            interfaces: vec![]
        }]
    );
}

fn path_of(status: &serde_json::Value) -> (String, String) {
    (
        status["path"]["interface"]
            .as_str()
            .unwrap_or("-")
            .to_string(),
        status["path"]["local"].as_str().unwrap_or("-").to_string(),
    )
}

fn uplink<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["uplinks"]
        .as_array()
        .and_then(|a| a.iter().find(|u| u["name"] == name))
        .unwrap_or(&serde_json::Value::Null)
}

#[test]
fn the_path_is_reported_and_changes_beside_it_leave_it_alone() {
    let Some(_serial) = lab_guard() else { return };
    let lab = Lab::new();
    let (mut watcher, first) = Watcher::start(&lab, Some("192.0.2.1"), &[]);
    assert!(first.online);
    assert_eq!(
        path_of(&watcher.last),
        ("vbox".into(), "192.0.2.2".into()),
        "{:#}",
        watcher.last
    );
    assert_eq!(watcher.last["path"]["gateway"], serde_json::Value::Null);
    assert_eq!(
        watcher.last["steered"], false,
        "one uplink: no policy routing"
    );

    // An extra address and an unrelated interface: the path to the server stays.
    lab.in_box(&["addr", "add", "192.0.2.99/24", "dev", "vbox"]);
    #[rustfmt::skip]
    lab.in_box(&["link", "add", "vx0", "index", "7005", "type", "veth", "peer", "name", "vx1"]);
    lab.in_box(&["addr", "add", "203.0.113.77/24", "dev", "vx0"]);
    lab.in_box(&["link", "set", "vx0", "up"]);
    lab.in_box(&["link", "set", "vx1", "up"]);
    let reports = watcher.drain_full(Duration::from_millis(300), Duration::from_secs(3));
    for r in &reports {
        assert_eq!(path_of(r), ("vbox".into(), "192.0.2.2".into()), "{r:#}");
        assert_eq!(r["switches"], 0, "{r:#}");
    }

    // The address changes (a new DHCP lease): the path's source address follows, and that
    // is one switch.
    let since = Instant::now();
    run_ip(
        &["-n", &lab.box_ns, "-batch", "-"],
        // Deleting the primary address takes the secondary 192.0.2.99 and the default route
        // with it, as a DHCP client's release would.
        Some(
            "addr del 192.0.2.2/24 dev vbox\naddr add 192.0.2.3/24 dev vbox\nroute replace default via 192.0.2.1\n",
        ),
    );
    let (latency, status) = watcher.expect_status(since, REPORT_WITHIN, "source 192.0.2.3", |s| {
        path_of(s) == ("vbox".into(), "192.0.2.3".into())
    });
    eprintln!(
        "address changed -> path {} after {}; switches {}",
        status["path"],
        ms(latency),
        status["switches"]
    );
}

#[test]
fn two_uplinks_are_steered_to_the_preferred_one_and_back_after_it_settles() {
    let Some(_serial) = lab_guard() else { return };
    let lab = Lab::new();
    lab.add_second_uplink();
    let (mut watcher, first) = Watcher::start_with(
        &lab,
        Some(FAR_SERVER),
        &[],
        Options {
            prefer: vec!["vbox"],
            settle_ms: Some(1000),
            ..Options::default()
        },
    );
    assert!(first.online);
    // The kernel prefers vwl (metric 100); the preference order says vbox.
    let (_, s) = watcher.expect_status(Instant::now(), REPORT_WITHIN, "path vbox", |s| {
        path_of(s).0 == "vbox"
    });
    assert_eq!(s["steered"], true, "{s:#}");
    let route = lab.box_output(&["route", "get", FAR_SERVER]);
    assert!(
        route.contains("dev vbox"),
        "the kernel's own answer: {route}"
    );
    let rules = lab.box_output(&["rule"]);
    assert!(
        rules.contains("8500:") && rules.contains("8501:") && rules.contains("8502:"),
        "{rules}"
    );
    // A socket bound to the other uplink's address leaves by that uplink.
    let from_wl = lab.box_output(&["route", "get", FAR_SERVER, "from", "198.51.100.2"]);
    assert!(from_wl.contains("dev vwl"), "{from_wl}");

    // The kernel skips routes through an interface without carrier (as if a network manager
    // had removed them): a socket still bound to vbox's address must then fail on the box,
    // not leak out of vwl with the wrong source address.
    run_ip(
        &[
            "netns",
            "exec",
            &lab.box_ns,
            "sysctl",
            "-qw",
            "net.ipv4.conf.all.ignore_routes_with_linkdown=1",
        ],
        None,
    );
    let since = Instant::now();
    lab.carrier(false);
    let (moved, s) = watcher.expect_status(since, REPORT_WITHIN, "path vwl", |s| {
        path_of(s) == ("vwl".into(), "198.51.100.2".into())
    });
    let leak = lab.box_output(&["route", "get", FAR_SERVER, "from", "192.0.2.2"]);
    assert!(
        !leak.contains("vwl"),
        "vbox's address leaks out of vwl: {leak}"
    );
    assert_eq!(s["switches"], 1, "{s:#}");
    assert_eq!(uplink(&s, "vbox")["state"], "no_carrier", "{s:#}");
    assert_eq!(uplink(&s, "vbox")["flaps"], 1, "{s:#}");
    assert!(
        s["last_switch"]
            .as_str()
            .unwrap_or("")
            .contains("vbox lost carrier"),
        "{s:#}"
    );

    let since = Instant::now();
    lab.carrier(true);
    let (_, s) = watcher.expect_status(since, REPORT_WITHIN, "vbox settling", |s| {
        uplink(s, "vbox")["state"] == "settling"
    });
    assert_eq!(path_of(&s).0, "vwl", "not back before it settled");
    let (back, s) = watcher.expect_status(since, Duration::from_secs(3), "path vbox", |s| {
        path_of(s).0 == "vbox"
    });
    assert!(
        back >= Duration::from_millis(1000),
        "returned after {} (settle 1000 ms)",
        ms(back)
    );
    assert_eq!(s["switches"], 2, "{s:#}");
    assert!(
        s["last_switch"]
            .as_str()
            .unwrap_or("")
            .contains("preferred"),
        "{s:#}"
    );
    eprintln!(
        "carrier lost -> path on vwl after {}; carrier back -> on vbox after {} (settle 1 s)",
        ms(moved),
        ms(back)
    );

    // On stop the box routes as it did before: no rule, no route of ours is left.
    watcher.stop();
    let rules = lab.box_output(&["rule"]);
    assert!(!rules.contains("850"), "{rules}");
    let ours = lab.box_output(&["route", "show", "table", "all", "proto", "111"]);
    assert_eq!(ours.trim(), "", "routes left behind");
}

#[test]
fn a_flapping_preferred_uplink_does_not_bounce_the_path() {
    let Some(_serial) = lab_guard() else { return };
    let lab = Lab::new();
    lab.add_second_uplink();
    let (mut watcher, _) = Watcher::start_with(
        &lab,
        Some(FAR_SERVER),
        &[],
        Options {
            prefer: vec!["vbox"],
            settle_ms: Some(1000),
            ..Options::default()
        },
    );
    let start = Instant::now();
    let mut switches_seen = vec![];
    for i in 0..16 {
        lab.carrier(i % 2 == 1);
        let until = Instant::now() + Duration::from_millis(300);
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            if watcher.next(left).is_some() {
                switches_seen.push((path_of(&watcher.last).0, watcher.last["switches"].clone()));
            }
        }
    }
    // Ends down (the 16th toggle is i = 15: up; one more down).
    lab.carrier(false);
    let reports = watcher.drain_full(Duration::from_millis(300), Duration::from_secs(3));
    let last = reports.last().unwrap_or(&watcher.last).clone();
    eprintln!(
        "flapping for {}: path/switch reports {switches_seen:?}; vbox flapped {}",
        ms(start.elapsed()),
        uplink(&last, "vbox")["flaps"]
    );
    assert_eq!(path_of(&last).0, "vwl", "{last:#}");
    assert_eq!(last["switches"], 1, "one switch away, none back: {last:#}");
    assert!(
        uplink(&last, "vbox")["flaps"].as_u64().unwrap_or(0) >= 8,
        "{last:#}"
    );
}

#[test]
fn without_a_preference_the_kernels_order_is_steered_and_leftovers_are_cleared() {
    let Some(_serial) = lab_guard() else { return };
    let lab = Lab::new();
    lab.add_second_uplink();
    // What a killed daemon might have left: a rule at our priority towards a stale table,
    // marked as ours; and an administrator's rule at another of our priorities, unmarked.
    #[rustfmt::skip]
    lab.in_box(&["rule", "add", "priority", "8502", "to", FAR_SERVER, "lookup", "1100", "protocol", "111"]);
    #[rustfmt::skip]
    lab.in_box(&["rule", "add", "priority", "8501", "from", "192.0.2.99", "lookup", "main"]);
    #[rustfmt::skip]
    lab.in_box(&["route", "add", FAR_SERVER, "via", "192.0.2.1", "dev", "vbox", "table", "1100", "proto", "111"]);
    let (mut watcher, _) = Watcher::start(&lab, Some(FAR_SERVER), &[]);
    let (_, s) = watcher.expect_status(Instant::now(), REPORT_WITHIN, "path vwl", |s| {
        path_of(s).0 == "vwl"
    });
    assert_eq!(s["steered"], true);
    let rules = lab.box_output(&["rule"]);
    assert_eq!(
        (
            rules.matches("8501:").count(),
            rules.matches("8502:").count()
        ),
        (3, 1),
        "from each uplink and the administrator's, to the server; the stale one replaced: {rules}"
    );
    assert!(
        rules.contains("8501:\tfrom 192.0.2.99 lookup main\n"),
        "{rules}"
    );
    let routes = lab.box_output(&["route", "show", "table", "1100"]);
    assert!(
        routes.contains("dev vwl") && !routes.contains("dev vbox"),
        "{routes}"
    );
    watcher.stop();
    let rules = lab.box_output(&["rule"]);
    assert!(
        !rules.contains("proto 111") && rules.contains("8501:\tfrom 192.0.2.99 lookup main\n"),
        "ours removed at stop, the administrator's kept: {rules}"
    );
}

#[test]
fn follow_mode_reports_the_kernels_path_and_never_touches_routing() {
    let Some(_serial) = lab_guard() else { return };
    let lab = Lab::new();
    lab.add_second_uplink();
    let (mut watcher, _) = Watcher::start_with(
        &lab,
        Some(FAR_SERVER),
        &[],
        Options {
            prefer: vec!["vbox"],
            paths: Some("follow"),
            ..Options::default()
        },
    );
    let (_, s) = watcher.expect_status(Instant::now(), REPORT_WITHIN, "path vwl", |s| {
        path_of(s).0 == "vwl"
    });
    assert_eq!(s["steered"], false);
    assert!(!lab.box_output(&["rule"]).contains("850"));
    // The kernel's own switch (its preferred route removed) is reported as one.
    let since = Instant::now();
    lab.in_box(&["route", "del", "default", "via", "198.51.100.1"]);
    let (latency, s) = watcher.expect_status(since, REPORT_WITHIN, "path vbox", |s| {
        path_of(s).0 == "vbox"
    });
    assert_eq!(s["switches"], 1);
    eprintln!(
        "follow: route removed -> path {} after {}",
        s["path"],
        ms(latency)
    );
    watcher.stop();
}

/// Not a test of its own: the monitor process that the tests above start inside the box
/// namespace. Does nothing unless started by them.
#[test]
#[ignore = "helper process for the namespace tests; does nothing when run directly"]
fn netwatch_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let _ = env_logger::Builder::from_env(env_logger::Env::default()).try_init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a tokio runtime in the child");
    runtime.block_on(async {
        use onair::config::{NetworkConfig, PathsMode};
        use onair::net::{NetworkMonitor, ServerAddr};
        use tokio_util::sync::CancellationToken;

        let list = |var: &str| -> Vec<String> {
            std::env::var(var)
                .unwrap_or_default()
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        let mut config = NetworkConfig {
            ignore: list(IGNORE_ENV),
            prefer: list(PREFER_ENV),
            paths: match std::env::var(PATHS_ENV).as_deref() {
                Ok("follow") => PathsMode::Follow,
                Ok("ignore") => PathsMode::Ignore,
                _ => PathsMode::Steer,
            },
            ..NetworkConfig::default()
        };
        if let Ok(ms) = std::env::var(SETTLE_ENV)
            && let Ok(ms) = ms.parse()
        {
            config.settle = Duration::from_millis(ms);
        }
        let server = std::env::var(SERVER_ENV)
            .ok()
            .map(|s| ServerAddr::from_host(&s));
        let shutdown = CancellationToken::new();
        // The parent closes our stdin to stop us.
        let stop = shutdown.clone();
        tokio::task::spawn_blocking(move || {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
            stop.cancel();
        });
        let monitor = NetworkMonitor::start(&config, server, shutdown.clone())
            .await
            .expect("starting the network monitor in the box namespace");
        let mut status = monitor.subscribe();
        loop {
            let now = status.borrow_and_update().clone();
            println!(
                "{LINE_PREFIX}{now}|{}",
                serde_json::to_string(&now).expect("a status serializes")
            );
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = status.changed() => if changed.is_err() { break },
            }
        }
        monitor.join().await;
        println!("{LINE_PREFIX}stopped");
    });
    // The stdin reader thread is blocked in read(); do not wait for it.
    runtime.shutdown_background();
}
