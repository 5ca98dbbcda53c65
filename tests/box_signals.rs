//! What a person across the room and one at the keyboard see from the real daemon: the LEDs
//! (through a temporary Linux LED class tree) follow the stream's state, and a missing camera
//! is reported as `no_input` instead of crashing (tests/input_loss.rs: the same box on the
//! slate).

mod common;

use common::{Daemon, Receiver, serial, test_config};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

fn fake_led(root: &Path, name: &str) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("brightness"), "0\n").unwrap();
    std::fs::write(dir.join("max_brightness"), "255\n").unwrap();
    std::fs::write(dir.join("trigger"), "none [heartbeat] timer\n").unwrap();
}

fn level(root: &Path, name: &str) -> u32 {
    std::fs::read_to_string(root.join(name).join("brightness"))
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Samples both LEDs for `d`; returns the distinct (live, status) levels seen.
fn watch(root: &Path, d: Duration) -> Vec<(u32, u32)> {
    let start = Instant::now();
    let mut seen = vec![];
    while start.elapsed() < d {
        let pair = (level(root, "onair-live"), level(root, "onair-status"));
        if !seen.contains(&pair) {
            seen.push(pair);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    seen
}

#[test]
fn leds_show_live_then_reconnecting_then_go_dark_with_triggers_restored() {
    let _serial = serial();
    let leds = tempfile::tempdir().unwrap();
    fake_led(leds.path(), "onair-live");
    fake_led(leds.path(), "onair-status");
    let mut receiver = Receiver::start("127.0.0.1", Some("k"), None);
    let mut daemon = Daemon::start(
        test_config(
            &receiver.whip_url(),
            Some("k"),
            json!({"leds": {"backend": "sysfs", "sysfs_dir": leds.path()}}),
        ),
        None,
    );
    let (live, s) = daemon.wait_status(Duration::from_secs(20), |s| s["state"] == "live");
    assert!(live, "{s:#}");
    let trigger = std::fs::read_to_string(leds.path().join("onair-live/trigger")).unwrap();
    assert_eq!(
        trigger.trim(),
        "none",
        "the daemon owns the LED while it runs"
    );
    assert_eq!(
        watch(leds.path(), Duration::from_millis(600)),
        vec![(255, 0)],
        "live: green on, red off"
    );

    receiver.kill();
    let (reconnecting, s) =
        daemon.wait_status(Duration::from_secs(10), |s| s["state"] == "reconnecting");
    assert!(reconnecting, "{s:#}");
    let seen = watch(leds.path(), Duration::from_millis(1200));
    assert!(
        seen.contains(&(0, 255)) && seen.contains(&(0, 0)) && !seen.iter().any(|p| p.0 != 0),
        "reconnecting: green off, red blinking; saw {seen:?}"
    );

    let (code, _) = daemon.stop(Duration::from_secs(5));
    assert_eq!(code, Some(0));
    assert_eq!(
        (
            level(leds.path(), "onair-live"),
            level(leds.path(), "onair-status")
        ),
        (0, 0)
    );
    let trigger = std::fs::read_to_string(leds.path().join("onair-status/trigger")).unwrap();
    assert_eq!(
        trigger.trim(),
        "heartbeat",
        "the board's trigger is given back on exit"
    );
}

#[test]
fn a_missing_camera_is_no_input_and_the_daemon_stays_up() {
    let _serial = serial();
    let leds = tempfile::tempdir().unwrap();
    fake_led(leds.path(), "onair-live");
    fake_led(leds.path(), "onair-status");
    let receiver = Receiver::start("127.0.0.1", Some("k"), None);
    let mut daemon = Daemon::start(
        test_config(
            &receiver.whip_url(),
            Some("k"),
            json!({
                "source": {"kind": "v4l2", "device": "/dev/video-onair-missing", "on_loss": "disconnect"},
                "leds": {"backend": "sysfs", "sysfs_dir": leds.path()}
            }),
        ),
        None,
    );
    let (no_input, s) = daemon.wait_status(Duration::from_secs(15), |s| s["state"] == "no_input");
    assert!(no_input, "{s:#}\n{}", daemon.log());
    assert!(
        s["last_error"].as_str().unwrap_or("").contains("input"),
        "the reason names the input: {s:#}"
    );
    let seen = watch(leds.path(), Duration::from_millis(1500));
    assert!(
        seen.contains(&(255, 0)) && seen.contains(&(0, 0)) && !seen.iter().any(|p| p.1 != 0),
        "no_input: green blinking, red off; saw {seen:?}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        daemon.status().expect("still answering")["state"],
        "no_input"
    );
    assert_eq!(
        receiver.stats()["posts"].as_array().map(Vec::len),
        Some(0),
        "nothing to stream with on_loss=disconnect, so no session is opened"
    );
    let (code, took) = daemon.stop(Duration::from_secs(5));
    assert_eq!(code, Some(0), "{}", daemon.log());
    assert!(took <= Duration::from_secs(3));
}

/// Off a Raspberry Pi the GPIO backend cannot open: one clear warning, and the box streams on
/// without LEDs.
#[test]
fn a_gpio_backend_that_cannot_open_does_not_stop_the_stream() {
    let _serial = serial();
    let receiver = Receiver::start("127.0.0.1", Some("k"), None);
    let mut daemon = Daemon::start(
        test_config(
            &receiver.whip_url(),
            Some("k"),
            json!({"leds": {"backend": "gpio"}}),
        ),
        None,
    );
    let (live, s) = daemon.wait_status(Duration::from_secs(20), |s| s["state"] == "live");
    assert!(live, "{s:#}\n{}", daemon.log());
    let (decoding, _) = receiver.wait_for(Duration::from_secs(10), |s| {
        s["frames_decoded"].as_u64().unwrap_or(0) > 10
    });
    assert!(decoding);
    let log = daemon.log();
    let warnings = log
        .lines()
        .filter(|l| l.contains("gpio backend unavailable"))
        .count();
    assert_eq!(warnings, 1, "one warning about the LEDs, not more:\n{log}");
    let (code, _) = daemon.stop(Duration::from_secs(5));
    assert_eq!(code, Some(0));
}
