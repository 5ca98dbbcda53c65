//! The network monitor against real kernel events, in network namespaces.
//!
//! Each test builds its own pair of namespaces (names include the pid, so parallel runs and
//! other engineers' namespace tests do not collide): a "box" with veth `vbox` 192.0.2.2/24 and
//! a default route via 192.0.2.1, and a "server" holding the peer `vsrv` 192.0.2.1/24. Taking
//! `vsrv` down takes the carrier away from `vbox`, like pulling the cable out of the switch.
//! No traffic leaves these namespaces.
//!
//! The monitor runs inside the box namespace in a child process: this test binary re-executed
//! under `ip netns exec`, running only the ignored `netwatch_child` test, which prints one
//! `NETWATCH|<status>` line per reported change (what `examples/netwatch.rs` does for a
//! person). Needs root and iproute2; skips with a printed reason when not root.

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
    /// The child's log (stderr), also passed through to ours.
    log: Arc<Mutex<Vec<String>>>,
}

impl Watcher {
    fn start(lab: &Lab, server: Option<&str>, ignore: &[&str]) -> (Watcher, Report) {
        let exe = std::env::current_exe().expect("path of the running test binary");
        let exe = exe.to_str().expect("test binary path is UTF-8");
        let mut command = Command::new("ip");
        #[rustfmt::skip]
        command
            .args(["netns", "exec", &lab.box_ns, exe,
                   "netwatch_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, "1")
            .env(IGNORE_ENV, ignore.join(","))
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
            log,
        };
        let (_, first) = watcher
            .next(START_WITHIN)
            .expect("the monitor reported its initial status");
        (watcher, first)
    }

    /// The next reported status, if one comes within `timeout`.
    fn next(&mut self, timeout: Duration) -> Option<(Instant, Report)> {
        match self.lines.recv_timeout(timeout) {
            Ok((at, line)) if line == "stopped" => panic!("monitor stopped unexpectedly at {at:?}"),
            Ok((at, line)) => Some((at, Report::parse(&line))),
            Err(_) => None,
        }
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
        use onair::config::NetworkConfig;
        use onair::net::{NetworkMonitor, ServerAddr};
        use tokio_util::sync::CancellationToken;

        let ignore = std::env::var(IGNORE_ENV).unwrap_or_default();
        let config = NetworkConfig {
            interfaces: vec![],
            ignore: ignore
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            netlink: true,
        };
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
            println!("{LINE_PREFIX}{}", *status.borrow_and_update());
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
