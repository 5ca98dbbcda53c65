//! Sound: the real daemon sends Opus beside the pictures to the independent receiver, which
//! decodes both and measures, on the sender's wall clock (its RTCP sender reports), how far the
//! sync pattern's beeps are from its flashes — before and after the server drops the session.
//! A missing ALSA device costs the sound, not the stream.

mod common;

use common::{Daemon, Receiver, serial, test_config};
use serde_json::{Value, json};
use std::time::Duration;

const TOKEN: &str = "sk_audio_Secret-Token_77";
/// Lip sync tolerance at the receiver (flash vs beep onset).
const MAX_OFFSET_MS: f64 = 45.0;

fn sync_config(url: &str) -> Value {
    test_config(
        url,
        Some(TOKEN),
        json!({
            "source": {"pattern": "sync", "width": 320, "height": 240, "fps": 30},
            "audio": {"kind": "test"},
        }),
    )
}

fn session(stats: &Value, i: usize) -> Value {
    stats["sessions"].as_array().expect("sessions")[i].clone()
}

/// Asserts the beeps line up with the flashes in one session; returns the offsets.
fn assert_in_sync(s: &Value, what: &str) -> Vec<f64> {
    let offsets: Vec<f64> = s["av_offsets_ms"]
        .as_array()
        .expect("av_offsets_ms")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    let flashes = s["video_flashes"].as_array().map_or(0, Vec::len);
    assert!(
        offsets.len() >= 5 && offsets.len() + 2 >= flashes,
        "{what}: too few flash/beep pairs ({} of {flashes} flashes): {s:#}",
        offsets.len()
    );
    let worst = offsets.iter().fold(0.0f64, |m, o| m.max(o.abs()));
    assert!(
        worst <= MAX_OFFSET_MS,
        "{what}: A/V offsets {offsets:?} ms exceed ±{MAX_OFFSET_MS} ms"
    );
    offsets
}

#[test]
fn opus_beside_h264_in_sync_before_and_after_a_server_drop() {
    let _serial = serial();
    let receiver = Receiver::start("127.0.0.1", Some(TOKEN), None);
    let daemon = Daemon::start(sync_config(&receiver.whip_url()), None);
    let (ok, _) = receiver.wait_for(Duration::from_secs(20), |s| {
        s["sessions"][0]["audio_samples"].as_u64().unwrap_or(0) > 0
    });
    assert!(ok, "no audio decoded within 20 s\n{}", daemon.log());
    std::thread::sleep(Duration::from_secs(20));

    // 1. Opus, 48 kHz, 2 channels, ≥ 95 % of the samples over 20 s, in sync.
    let stats = receiver.stats();
    let s = session(&stats, 0);
    assert_eq!(s["audio_rate"].as_u64(), Some(48_000), "{s:#}");
    assert_eq!(s["audio_channels"].as_u64(), Some(2), "{s:#}");
    let span = s["last_audio_t"].as_f64().unwrap() - s["first_audio_t"].as_f64().unwrap();
    let expected = span * 48_000.0;
    let got = s["audio_samples"].as_f64().unwrap();
    eprintln!(
        "audio: {got} samples over {span:.2} s ({:.1} % of {expected:.0})",
        100.0 * got / expected
    );
    assert!(span >= 19.0, "audio over only {span:.1} s: {s:#}");
    assert!(
        got >= 0.95 * expected,
        "decoded {got} of ~{expected:.0} samples ({:.1} %)",
        100.0 * got / expected
    );
    let peak = s["audio_peak_dbfs"].as_f64().expect("a level");
    assert!(
        (-9.0..=-3.0).contains(&peak),
        "the beeps are -6 dBFS, got {peak}"
    );
    let before = assert_in_sync(&s, "first session");
    eprintln!("A/V offsets before the drop (ms): {before:?}");

    // 2. What `onair status` says of the sound.
    let st = daemon.status().expect("status");
    let a = &st["audio"];
    assert_eq!(a["state"], "live", "{st:#}");
    assert_eq!(a["source"], "test");
    assert!(a["codec"].as_str().unwrap_or("").starts_with("opus"), "{a}");
    assert_eq!(a["channels"], 2);
    let peak = a["peak_dbfs"].as_f64().expect("status level");
    assert!((-9.0..=-3.0).contains(&peak), "status peak {peak}");
    assert!(a["frames_sent"].as_u64().unwrap_or(0) > 500, "{a}");
    let text = daemon.status_text();
    assert!(text.contains("audio       test live for"), "{text}");

    // 3. The server drops the session: a new one starts both tracks together, in sync.
    receiver.drop_sessions();
    let (ok, _) = receiver.wait_for(Duration::from_secs(20), |s| {
        s["sessions"]
            .as_array()
            .and_then(|v| v.get(1))
            .and_then(|s| s["video_flashes"].as_array().map(Vec::len))
            .unwrap_or(0)
            >= 9
    });
    assert!(
        ok,
        "no second session with 9 flashes within 20 s\n{}",
        daemon.log()
    );
    let stats = receiver.stats();
    let s = session(&stats, 1);
    let after = assert_in_sync(&s, "after the reconnect");
    eprintln!("A/V offsets after the reconnect (ms): {after:?}");
    // Both tracks from the same moment: sound starts within 200 ms of the pictures.
    let first_audio = s["first_audio_t"]
        .as_f64()
        .expect("audio on the new session");
    let first_frame = s["first_frame_t"]
        .as_f64()
        .expect("video on the new session");
    assert!(
        (first_audio - first_frame).abs() < 0.2,
        "tracks started {:.3} s apart",
        first_audio - first_frame
    );

    // 4. The token reaches no log line, status or history, with audio on.
    for (what, text) in [
        ("log", daemon.log()),
        ("status", daemon.status_text()),
        (
            "status --json",
            daemon.status().map(|v| v.to_string()).unwrap_or_default(),
        ),
        ("history", daemon.history_text()),
    ] {
        assert!(!text.contains(TOKEN), "the token is in the {what}:\n{text}");
    }
}

#[test]
fn a_missing_alsa_device_is_silence_and_a_warning_while_the_stream_goes_on() {
    let _serial = serial();
    let receiver = Receiver::start("127.0.0.1", Some(TOKEN), None);
    let config = test_config(
        &receiver.whip_url(),
        Some(TOKEN),
        json!({"audio": {"kind": "alsa", "device": "hw:CARD=NoSuchCard,DEV=0"}}),
    );
    let daemon = Daemon::start(config, None);
    let (ok, st) = daemon.wait_status(Duration::from_secs(20), |s| {
        s["state"] == "live" && s["audio"]["state"] == "silence"
    });
    assert!(
        ok,
        "not live with silence within 20 s: {st:#}\n{}",
        daemon.log()
    );
    let reason = st["audio"]["reason"].as_str().unwrap_or("");
    assert!(!reason.is_empty(), "silence says why: {st:#}");
    let text = daemon.status_text();
    assert!(
        text.contains("audio       hw:CARD=NoSuchCard,DEV=0 SILENCE for"),
        "{text}"
    );
    std::thread::sleep(Duration::from_secs(5));
    let stats = receiver.stats();
    let s = session(&stats, 0);
    // Pictures go on, and the sound track carries silence at the same format.
    assert!(s["frames_decoded"].as_u64().unwrap_or(0) >= 100, "{s:#}");
    assert_eq!(s["audio_rate"].as_u64(), Some(48_000), "{s:#}");
    assert!(
        s["audio_samples"].as_u64().unwrap_or(0) >= 4 * 48_000,
        "{s:#}"
    );
    assert!(s["audio_peak_dbfs"].is_null(), "silence, not sound: {s:#}");
    assert_eq!(
        stats["sessions"].as_array().map(Vec::len),
        Some(1),
        "no reconnect"
    );
    let log = daemon.log();
    assert!(
        log.contains("audio: ALSA device hw:CARD=NoSuchCard,DEV=0")
            && log.contains("sending silence"),
        "{log}"
    );
    let st = daemon.status().expect("status");
    assert_eq!(st["audio"]["state"], "silence", "still retrying: {st:#}");
}
