//! The box goes live: the real daemon streams the test pattern over WHIP to an independent
//! receiver that decodes it, and stops cleanly (DELETE, exit 0 within 3 s).

mod common;

use common::{Daemon, Receiver, serial, test_config};
use std::time::Duration;

const FPS: f64 = 30.0;

#[test]
fn test_pattern_is_decoded_at_the_configured_size_and_stop_deletes_the_session() {
    let _serial = serial();
    let receiver = Receiver::start("127.0.0.1", Some("live-key_1"), None);
    let config = test_config(
        &receiver.whip_url(),
        Some("live-key_1"),
        serde_json::json!({"source": {"width": 640, "height": 360, "fps": 30}}),
    );
    let mut daemon = Daemon::start(config, None);

    let (decoding, _) = receiver.wait_for(Duration::from_secs(20), |s| {
        s["frames_decoded"].as_u64().unwrap_or(0) > 0
    });
    assert!(decoding, "no frame decoded within 20 s\n{}", daemon.log());
    std::thread::sleep(Duration::from_secs(6));

    let (code, took) = daemon.stop(Duration::from_secs(5));
    assert_eq!(code, Some(0), "exit code\n{}", daemon.log());
    assert!(took <= Duration::from_secs(3), "stop took {took:?}");

    let stats = receiver.stats();
    let sessions = stats["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 1, "one session: {stats:#}");
    let s = &sessions[0];
    assert_eq!(
        s["end_reason"], "deleted",
        "stop must DELETE the session: {s:#}"
    );
    assert_eq!(
        (s["width"].as_u64(), s["height"].as_u64()),
        (Some(640), Some(360))
    );
    let first = s["first_frame_t"].as_f64().expect("first frame");
    let last = s["last_frame_t"].as_f64().expect("last frame");
    let decoded = s["frames_decoded"].as_u64().unwrap_or(0) as f64;
    let sent = (last - first) * FPS + 1.0;
    assert!(last - first > 5.0, "streamed only {:.1} s", last - first);
    assert!(
        decoded >= 0.8 * sent,
        "decoded {decoded} of ~{sent:.0} frames ({:.0}%)",
        100.0 * decoded / sent
    );
    let posts = stats["posts"].as_array().expect("posts");
    assert_eq!(posts.len(), 1, "one POST, no retries: {posts:?}");
    assert_eq!(posts[0]["content_type"], "application/sdp");
}

/// Broadcast Box floods PLIs while its viewers wait for a key frame. The box answers with at
/// most one forced key frame per 500 ms instead of a key-frame storm.
#[test]
fn a_pli_flood_is_answered_with_coalesced_key_frames() {
    let _serial = serial();
    let receiver = Receiver::start("127.0.0.1", Some("k"), None);
    let mut daemon = Daemon::start(
        test_config(
            &receiver.whip_url(),
            Some("k"),
            // Natural key frames far apart, so the ones counted are the forced ones.
            serde_json::json!({"encoder": {"keyframe_interval_ms": 30000}}),
        ),
        None,
    );
    let (decoding, _) = receiver.wait_for(Duration::from_secs(20), |s| {
        s["frames_decoded"].as_u64().unwrap_or(0) > 30
    });
    assert!(decoding, "{}", daemon.log());
    let flood = receiver.pli_flood(3.0, 5);
    let (start, until) = (
        flood["start_t"].as_f64().unwrap(),
        flood["until_t"].as_f64().unwrap(),
    );
    std::thread::sleep(Duration::from_millis(3500));
    let stats = receiver.stats();
    let session = &stats["sessions"][0];
    let keys: Vec<f64> = session["keyframe_times"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_f64())
        .filter(|&t| t >= start && t <= until + 0.3)
        .collect();
    let plis = stats["plis_sent"].as_u64().unwrap_or(0);
    let forced = daemon.status().map(|s| s["keyframes_forced"].clone());
    eprintln!(
        "PLI flood: {plis} PLIs in 3 s -> {} key frames decoded ({keys:.2?}); forced total {forced:?}",
        keys.len()
    );
    assert!(plis >= 300, "the flood sent only {plis} PLIs");
    assert!(!keys.is_empty(), "the box ignored the PLIs");
    assert!(
        keys.len() <= 7,
        "key-frame storm: {} key frames in 3 s",
        keys.len()
    );
    for w in keys.windows(2) {
        assert!(
            w[1] - w[0] >= 0.4,
            "key frames {:.3} s apart: {keys:?}",
            w[1] - w[0]
        );
    }
    let (code, _) = daemon.stop(Duration::from_secs(5));
    assert_eq!(code, Some(0));
}

/// SIGHUP with only `reconnect` changed keeps the stream (same session, no new POST); a
/// change elsewhere restarts it with the new settings.
#[test]
fn sighup_applies_reconnect_settings_without_dropping_the_stream() {
    let _serial = serial();
    let receiver = Receiver::start("127.0.0.1", Some("k"), None);
    let daemon = Daemon::start(
        test_config(&receiver.whip_url(), Some("k"), serde_json::json!({})),
        None,
    );
    let (live, s) = daemon.wait_status(Duration::from_secs(20), |s| s["state"] == "live");
    assert!(live, "{s:#}");

    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&daemon.config_path).unwrap()).unwrap();
    config["reconnect"] = serde_json::json!({"max_attempts": 5, "initial_delay_ms": 500});
    std::fs::write(&daemon.config_path, config.to_string()).unwrap();
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    std::thread::sleep(Duration::from_secs(2));
    let stats = receiver.stats();
    assert_eq!(
        stats["posts"].as_array().unwrap().len(),
        1,
        "the stream was dropped: {stats:#}"
    );
    assert_eq!(stats["live_sessions"].as_array().unwrap().len(), 1);
    assert_eq!(daemon.status().unwrap()["state"], "live");

    // An invalid config is refused and the running one kept.
    std::fs::write(&daemon.config_path, "{ not json").unwrap();
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(daemon.status().unwrap()["state"], "live");
    assert!(
        daemon.log().contains("keeping the running config"),
        "{}",
        daemon.log()
    );

    config["encoder"]["bitrate_kbps"] = serde_json::json!(400);
    std::fs::write(&daemon.config_path, config.to_string()).unwrap();
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    let (restarted, stats) = receiver.wait_for(Duration::from_secs(15), |s| {
        s["posts"].as_array().map(Vec::len).unwrap_or(0) == 2
            && s["live_sessions"].as_array().map(Vec::len).unwrap_or(0) == 1
    });
    assert!(
        restarted,
        "a bitrate change must restart the stream: {stats:#}\n{}",
        daemon.log()
    );
    assert_eq!(
        stats["deletes"][0]["status"], 204,
        "the old session was DELETEd first"
    );
}
