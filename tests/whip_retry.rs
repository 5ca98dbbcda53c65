//! The retry policy seen from the server: POST times under scripted answers, on loopback.

mod common;

use common::{Daemon, Receiver, serial, test_config};
use serde_json::{Value, json};
use std::time::Duration;

fn post_times(stats: &Value) -> Vec<f64> {
    stats["posts"]
        .as_array()
        .map(|p| p.iter().filter_map(|x| x["t"].as_f64()).collect())
        .unwrap_or_default()
}

fn gaps(times: &[f64]) -> Vec<f64> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

/// Scenario 5: 503 three times, then 201. The POSTs come at once, after 1 s, after 2 s (±10 %
/// jitter, plus the few ms an attempt takes), then the box is live.
#[test]
fn three_503s_follow_the_immediate_1s_2s_schedule_then_live() {
    let _serial = serial();
    let receiver = Receiver::start("127.0.0.1", Some("k"), None);
    receiver.script(json!([{"status": 503}, {"status": 503}, {"status": 503}]));
    let daemon = Daemon::start(
        test_config(&receiver.whip_url(), Some("k"), json!({})),
        None,
    );
    let (decoding, stats) = receiver.wait_for(Duration::from_secs(20), |s| {
        s["frames_decoded"].as_u64().unwrap_or(0) > 0
    });
    assert!(decoding, "never live: {stats:#}\n{}", daemon.log());
    let times = post_times(&stats);
    assert_eq!(times.len(), 4, "three refusals then one success: {times:?}");
    let g = gaps(&times);
    eprintln!("scenario 5: POST gaps {g:.3?} s");
    const SLACK: f64 = 0.25;
    assert!(g[0] < SLACK, "first retry not immediate: {g:?}");
    assert!(
        (0.9..=1.1 + SLACK).contains(&g[1]),
        "second wait not 1 s ±10%: {g:?}"
    );
    assert!(
        (1.8..=2.2 + SLACK).contains(&g[2]),
        "third wait not 2 s ±10%: {g:?}"
    );
    let (live, s) = daemon.wait_status(Duration::from_secs(5), |s| s["state"] == "live");
    assert!(live, "{s:#}");
}

/// Scenario 7: a server that accepts the connection and never answers. Each attempt ends at
/// `connect_timeout_ms` and the backoff goes on.
#[test]
fn a_server_that_never_answers_times_out_and_the_backoff_goes_on() {
    let _serial = serial();
    let receiver = Receiver::start("127.0.0.1", Some("k"), None);
    receiver.script(json!([{"hang": true}, {"hang": true}, {"hang": true}]));
    let daemon = Daemon::start(
        test_config(
            &receiver.whip_url(),
            Some("k"),
            json!({"reconnect": {"connect_timeout_ms": 2000, "jitter": 0.0}}),
        ),
        None,
    );
    let (timed_out, s) = daemon.wait_status(Duration::from_secs(10), |s| {
        s["last_error"].as_str().unwrap_or("").contains("timed out")
    });
    assert!(timed_out, "{s:#}\n{}", daemon.log());
    let (decoding, stats) = receiver.wait_for(Duration::from_secs(25), |s| {
        s["frames_decoded"].as_u64().unwrap_or(0) > 0
    });
    assert!(
        decoding,
        "never live after the hangs: {stats:#}\n{}",
        daemon.log()
    );
    let times = post_times(&stats);
    assert_eq!(times.len(), 4, "{times:?}");
    let g = gaps(&times);
    eprintln!("scenario 7: POST gaps {g:.3?} s (timeout 2 s; waits 0, 1, 2 s)");
    let near = |x: f64, want: f64| (want - 0.05..=want + 0.3).contains(&x);
    assert!(near(g[0], 2.0), "timeout then immediate retry: {g:?}");
    assert!(near(g[1], 3.0), "timeout then 1 s: {g:?}");
    assert!(near(g[2], 4.0), "timeout then 2 s: {g:?}");
    // The hung requests were given up by the box, not left open.
    let hung_closed = stats["posts"]
        .as_array()
        .map(|p| {
            p.iter()
                .filter(|x| x["hung"] == true && !x["hang_end_t"].is_null())
                .count()
        })
        .unwrap_or(0);
    assert_eq!(
        hung_closed, 3,
        "hung requests must be closed by the box: {stats:#}"
    );
}
