//! The daemon's policy routing, owned and given back: a daemon killed with SIGKILL leaves its
//! rules and routes behind, and what the service runs when the daemon has stopped
//! (`ExecStopPost=` in onair.service) removes exactly those — an administrator's own rule at
//! the same priority stays — so the server is reachable again through the other uplink; and a
//! second daemon in the same network namespace refuses to start, naming the first.
//!
//! The two-uplink lab of tests/lab (eth0 192.0.2.2, wlan0 198.51.100.2, the server on the far
//! side's `lo` at 203.0.113.1). Needs root; skips with a printed reason otherwise.

mod common;
mod lab;

use common::{Daemon, Receiver, onair_bin, repo_root, test_config};
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};

const TOKEN: &str = "route-key_7";
const PORT: u16 = 8080;
/// An administrator's rule at one of the daemon's priorities, without the daemon's mark.
const ADMIN_RULE: [&str; 6] = ["priority", "8501", "from", "192.0.2.99", "lookup", "main"];

fn far_url() -> String {
    format!("http://{}:{PORT}/api/whip", lab::FAR_SERVER_IP)
}

fn in_box(lab: &lab::TwoUplinks, args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", &lab.box_ns])
        .args(args)
        .output()
        .expect("ip netns exec runs")
}

/// `ip rule` and `ip route show table all proto 111` in the box: the routing the daemon may
/// touch.
fn routing(lab: &lab::TwoUplinks) -> (String, String) {
    (
        lab.box_ip_output(&["rule"]),
        lab.box_ip_output(&["route", "show", "table", "all", "proto", "111"]),
    )
}

/// The server answers an HTTP request from the box within 3 s (the receiver's control API).
fn server_reachable(lab: &lab::TwoUplinks) -> bool {
    let url = format!("http://{}:{PORT}/control/stats", lab::FAR_SERVER_IP);
    in_box(
        lab,
        &["curl", "-sS", "-o", "/dev/null", "--max-time", "3", &url],
    )
    .status
    .success()
}

/// What onair.service runs once the daemon has stopped, with the binary under test.
fn exec_stop_post() -> Vec<String> {
    let unit = std::fs::read_to_string(
        repo_root().join("board/common/rootfs-overlay/usr/lib/systemd/system/onair.service"),
    )
    .expect("the unit file");
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStopPost="))
        .expect("onair.service cleans up after the daemon (ExecStopPost=)");
    let mut words: Vec<String> = line
        .trim_start_matches('-')
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(words[0], "/usr/bin/onair", "{line}");
    words[0] = onair_bin().to_string_lossy().into_owned();
    words
}

/// Waits until the daemon's steering is in the kernel (the rule to the server).
fn wait_steered(lab: &lab::TwoUplinks, daemon: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !lab.box_ip_output(&["rule"]).contains("8502:") {
        assert!(
            Instant::now() < deadline,
            "never steered: {}\n{}",
            lab.box_ip_output(&["rule"]),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn steering_config() -> serde_json::Value {
    test_config(
        &far_url(),
        Some(TOKEN),
        json!({"network": {"prefer": ["eth0", "wlan0"]}}),
    )
}

#[test]
fn what_the_service_runs_after_a_sigkill_leaves_routing_as_before_and_the_server_reachable() {
    let _serial = common::serial();
    let lab = two_uplinks_or_skip!(true);
    let added = in_box(
        &lab,
        &[&["ip", "rule", "add"][..], &ADMIN_RULE[..]].concat(),
    );
    assert!(added.status.success(), "{added:?}");
    let before = routing(&lab);
    let _receiver = Receiver::start_on(
        &format!("{}:{PORT}", lab::FAR_SERVER_IP),
        Some(TOKEN),
        Some(&lab.server_ns),
    );
    let mut daemon = Daemon::start(steering_config(), Some(&lab.box_ns));
    wait_steered(&lab, &daemon);
    let (ok, status) = daemon.wait_status(Duration::from_secs(20), |s| {
        s["state"] == "live" && s["network"]["path"]["interface"] == "eth0"
    });
    assert!(ok, "live on eth0: {status:#}\n{}", daemon.log());

    daemon.signal(nix::sys::signal::Signal::SIGKILL);
    daemon.wait_exit(Duration::from_secs(5));
    assert!(daemon.pid().is_none(), "killed");
    // eth0's cable is pulled, and the network manager drops its route: the main table would
    // reach the server through wlan0, but the daemon's leftovers send it to dead eth0.
    lab.carrier(&lab.primary, false);
    let dropped = in_box(
        &lab,
        &["ip", "route", "del", "default", "via", lab.primary.gateway],
    );
    assert!(dropped.status.success(), "{dropped:?}");
    let left = routing(&lab);
    assert!(
        left.0.contains("8502:") && left.1.contains("table 1100"),
        "SIGKILL leaves the steering behind: {left:?}"
    );
    let route = lab.box_ip_output(&["route", "get", lab::FAR_SERVER_IP]);
    assert!(
        route.contains("dev eth0"),
        "the dead uplink is chosen: {route}"
    );
    assert!(!server_reachable(&lab), "the leftovers block the server");

    let command = exec_stop_post();
    let args: Vec<&str> = command.iter().map(String::as_str).collect();
    let cleanup = in_box(&lab, &args);
    let said = String::from_utf8_lossy(&cleanup.stdout);
    println!("{}: {said}", command.join(" "));
    assert!(
        cleanup.status.success(),
        "{}",
        String::from_utf8_lossy(&cleanup.stderr)
    );
    assert_eq!(
        routing(&lab),
        before,
        "exactly what the daemon made is gone"
    );
    let route = lab.box_ip_output(&["route", "get", lab::FAR_SERVER_IP]);
    assert!(route.contains("dev wlan0"), "{route}");
    assert!(
        server_reachable(&lab),
        "the server is reachable through wlan0"
    );
    // Nothing left: a second run removes nothing and says so.
    let again = in_box(&lab, &args);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("removed 0 rules and 0 routes"),
        "{again:?}"
    );
}

#[test]
fn a_second_daemon_in_the_same_namespace_refuses_naming_the_first() {
    let _serial = common::serial();
    let lab = two_uplinks_or_skip!(true);
    let added = in_box(
        &lab,
        &[&["ip", "rule", "add"][..], &ADMIN_RULE[..]].concat(),
    );
    assert!(added.status.success(), "{added:?}");
    let before = routing(&lab);
    let mut first = Daemon::start(steering_config(), Some(&lab.box_ns));
    let first_pid = first.pid().expect("runs");
    wait_steered(&lab, &first);
    let steered = routing(&lab);

    let mut second = Daemon::start(steering_config(), Some(&lab.box_ns));
    let code = second.wait_exit(Duration::from_secs(10));
    let log = second.log();
    println!("second daemon: exit {code:?}: {}", log.trim());
    assert_eq!(code, Some(1), "refused: {log}");
    assert!(
        log.contains(&format!("pid {first_pid}")),
        "names the first: {log}"
    );
    assert!(log.contains("network.paths"), "says what to do: {log}");
    // Nor may the cleanup touch a running daemon's routing.
    let cleanup = in_box(
        &lab,
        &[onair_bin().to_str().expect("utf-8 path"), "cleanup-routes"],
    );
    assert_eq!(cleanup.status.code(), Some(1), "{cleanup:?}");
    assert!(String::from_utf8_lossy(&cleanup.stderr).contains(&format!("pid {first_pid}")));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(routing(&lab).0, steered.0, "the first one's rules stand");
    assert!(first.pid().is_some());

    let (code, _) = first.stop(Duration::from_secs(5));
    assert_eq!(code, Some(0), "{}", first.log());
    assert_eq!(
        routing(&lab),
        before,
        "its own rules and routes removed, nothing else"
    );
}
