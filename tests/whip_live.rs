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
