//! Input loss, seen from the far end: the real daemon streams the test pattern to the
//! independent WHIP receiver, its source is made to stall (SIGUSR1 cuts the test source's
//! signal: its pictures stop, as a stalled camera's do), and the receiver says what a viewer
//! got — frames decoded per second, which picture (the receiver's mean luma tells the dark
//! slate from the bright test pattern), on which session, and when.

mod common;

use common::{Daemon, Receiver, frame_times, mono_now, serial, test_config};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use std::time::Duration;

const FPS: f64 = 30.0;
/// The test pattern's mean luma is about 110, the slate's about 55.
const BRIGHT: f64 = 85.0;

fn lumas(stats: &Value) -> Vec<f64> {
    stats["frame_lumas"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

/// (time, luma) of every decoded frame.
fn frames(stats: &Value) -> Vec<(f64, f64)> {
    frame_times(stats).into_iter().zip(lumas(stats)).collect()
}

fn posts(stats: &Value) -> usize {
    stats["posts"].as_array().map(Vec::len).unwrap_or(0)
}

fn live_sessions(stats: &Value) -> Vec<Value> {
    stats["sessions"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|s| s["ended_t"].is_null())
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// The longest gap between decoded frames within [from, to], and where it ended.
fn longest_gap(f: &[(f64, f64)], from: f64, to: f64) -> (f64, f64) {
    let times: Vec<f64> = f
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| (from..=to).contains(t))
        .collect();
    let edges = std::iter::once(from)
        .chain(times)
        .chain(std::iter::once(to));
    let v: Vec<f64> = edges.collect();
    v.windows(2)
        .map(|w| (w[1] - w[0], w[1]))
        .fold((0.0, from), |a, b| if b.0 > a.0 { b } else { a })
}

fn start(extra: Value) -> (Receiver, Daemon) {
    let receiver = Receiver::start("127.0.0.1", Some("k"), None);
    let daemon = Daemon::start(test_config(&receiver.whip_url(), Some("k"), extra), None);
    let (live, s) = daemon.wait_status(Duration::from_secs(20), |s| s["state"] == "live");
    assert!(live, "{s:#}\n{}", daemon.log());
    let (bright, st) = receiver.wait_for(Duration::from_secs(10), |st| {
        frames(st).iter().filter(|(_, y)| *y > BRIGHT).count() >= 30
    });
    assert!(bright, "the test pattern is decoded: {:?}", lumas(&st));
    (receiver, daemon)
}

#[test]
fn a_stalled_source_shows_the_slate_on_the_same_session_and_the_picture_comes_back() {
    let _serial = serial();
    let (receiver, mut daemon) = start(json!({}));
    let posts_before = posts(&receiver.stats());

    let t_cut = mono_now();
    daemon.signal(Signal::SIGUSR1);
    let (lost, s) = daemon.wait_status(Duration::from_secs(5), |s| {
        s["state"] == "no_input" && s["input"]["showing"] == "slate"
    });
    assert!(lost, "lost_after (2 s) after the last picture: {s:#}");
    assert_eq!(s["input"]["signal"], "lost");
    assert!(
        s["input"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("no pictures"),
        "{s:#}"
    );
    std::thread::sleep(Duration::from_secs(6));
    let t_back = mono_now();
    daemon.signal(Signal::SIGUSR1);
    let (back, st) = receiver.wait_for(Duration::from_secs(5), |st| {
        frames(st).iter().any(|(t, y)| *t > t_back && *y > BRIGHT)
    });
    assert!(back, "the picture came back at the receiver");
    drop(st);
    std::thread::sleep(Duration::from_secs(2));
    let st = receiver.stats();
    let f = frames(&st);

    // Same session, no new POST: the viewers never left.
    assert_eq!(posts(&st), posts_before, "no new POST");
    let sessions = live_sessions(&st);
    assert_eq!(sessions.len(), 1, "{st:#}");

    // Pictures throughout the loss at the configured rate (the last picture held, then the
    // slate), with no gap a viewer would see as a freeze of the stream itself.
    let during = f
        .iter()
        .filter(|(t, _)| (t_cut..t_back).contains(t))
        .count();
    let expected = FPS * (t_back - t_cut);
    assert!(
        during as f64 >= 0.9 * expected,
        "{during} frames decoded in {:.1} s of loss, expected >= 90 % of {expected:.0}",
        t_back - t_cut
    );
    let until = st["now"].as_f64().unwrap_or(t_back).min(t_back + 2.0);
    let (gap, gap_end) = longest_gap(&f, t_cut, until);
    assert!(
        gap < 0.5,
        "longest gap {gap:.2} s, ending {:.2} s after the cut (the return was at {:.2} s): {:?}",
        gap_end - t_cut,
        t_back - t_cut,
        f.iter()
            .filter(|(t, _)| (gap_end - 1.0..gap_end + 0.5).contains(t))
            .map(|(t, y)| (((t - t_cut) * 100.0).round() / 100.0, *y))
            .collect::<Vec<_>>()
    );

    // The slate was what they saw.
    let first_slate = f
        .iter()
        .find(|(t, y)| *t > t_cut && *y < BRIGHT)
        .map(|(t, _)| *t)
        .expect("the slate was decoded");
    let slate_frames = f
        .iter()
        .filter(|(t, y)| (first_slate..t_back).contains(t) && *y < BRIGHT)
        .count();
    assert!(
        slate_frames as f64 >= 0.9 * FPS * (t_back - first_slate),
        "{slate_frames} slate frames in {:.1} s",
        t_back - first_slate
    );
    assert!(
        first_slate - t_cut < 3.0,
        "slate up {:.2} s after the cut",
        first_slate - t_cut
    );

    // The live picture back within 2 s of the signal's return, every frame after it live.
    let first_live = f
        .iter()
        .find(|(t, y)| *t > t_back && *y > BRIGHT)
        .map(|(t, _)| *t)
        .expect("checked above");
    assert!(
        first_live - t_back <= 2.0,
        "live picture {:.2} s after the signal returned",
        first_live - t_back
    );
    assert!(
        f.iter()
            .filter(|(t, _)| *t > first_live + 0.1)
            .all(|(_, y)| *y > BRIGHT),
        "no slate after the return"
    );

    // A key frame at each switch (the receiver decodes from it at once).
    let keys: Vec<f64> = sessions[0]["keyframe_times"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    for (what, at) in [("slate", first_slate), ("input", first_live)] {
        assert!(
            keys.iter().any(|k| (at - 0.05..=at + 0.3).contains(k)),
            "a key frame at the switch to the {what} ({at:.2}); key frames: {keys:?}"
        );
    }

    let (live, s) = daemon.wait_status(Duration::from_secs(3), |s| s["state"] == "live");
    assert!(live, "{s:#}");
    assert_eq!(s["input"]["signal"], "live");
    assert_eq!(s["input"]["losses"], 1);
    assert_eq!(s["reconnects"], 0);
    assert!(s["input"]["slate_frames"].as_u64().unwrap_or(0) as f64 >= 0.9 * FPS * 4.0);
    let history = std::process::Command::new(common::onair_bin())
        .args(["status", "--history", "--socket"])
        .arg(&daemon.socket)
        .output()
        .expect("onair status --history");
    let history = String::from_utf8_lossy(&history.stdout);
    assert!(
        history.contains("live -> no_input") && history.contains("no_input -> live"),
        "{history}"
    );
    assert!(history.contains("input back"), "{history}");
    eprintln!(
        "loss {:.1} s: {during} frames ({:.0} % of {FPS} fps), slate {:.2} s after the cut, \
         live picture {:.2} s after the return, longest gap {gap:.2} s",
        t_back - t_cut,
        100.0 * during as f64 / expected,
        first_slate - t_cut,
        first_live - t_back
    );
    let (code, _) = daemon.stop(Duration::from_secs(5));
    assert_eq!(code, Some(0), "{}", daemon.log());
}

#[test]
fn with_on_loss_disconnect_the_session_ends_and_a_new_one_starts_when_the_input_is_back() {
    let _serial = serial();
    let (receiver, mut daemon) = start(json!({"source": {"on_loss": "disconnect"}}));
    daemon.signal(Signal::SIGUSR1);
    let (lost, s) = daemon.wait_status(Duration::from_secs(5), |s| s["state"] == "no_input");
    assert!(lost, "{s:#}");
    let (ended, st) = receiver.wait_for(Duration::from_secs(5), |st| live_sessions(st).is_empty());
    assert!(ended, "the session is closed: {st:#}");
    let deleted = st["deletes"].as_array().map(Vec::len).unwrap_or(0);
    assert!(deleted >= 1, "closed politely with a DELETE: {st:#}");
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        posts(&receiver.stats()),
        1,
        "no attempt while the input is lost"
    );
    let t_back = mono_now();
    daemon.signal(Signal::SIGUSR1);
    let (back, st) = receiver.wait_for(Duration::from_secs(15), |st| {
        frames(st).iter().any(|(t, y)| *t > t_back && *y > BRIGHT)
    });
    assert!(back, "{st:#}\n{}", daemon.log());
    assert_eq!(posts(&st), 2, "a new session");
    assert!(
        !frames(&st).iter().any(|(t, y)| *t > t_back && *y < BRIGHT),
        "the slate never reaches a viewer in disconnect mode"
    );
    let (code, _) = daemon.stop(Duration::from_secs(5));
    assert_eq!(code, Some(0), "{}", daemon.log());
}

#[test]
fn a_box_without_its_camera_goes_on_air_with_the_slate() {
    let _serial = serial();
    let receiver = Receiver::start("127.0.0.1", Some("k"), None);
    let mut daemon = Daemon::start(
        test_config(
            &receiver.whip_url(),
            Some("k"),
            json!({"source": {"kind": "v4l2", "device": "/dev/video-onair-missing", "retry_ms": 500}}),
        ),
        None,
    );
    let (on_air, st) = receiver.wait_for(Duration::from_secs(20), |st| {
        frames(st).iter().filter(|(_, y)| *y < BRIGHT).count() >= 30
    });
    assert!(on_air, "{st:#}\n{}", daemon.log());
    let s = daemon.status().expect("status");
    assert_eq!(s["state"], "no_input", "{s:#}");
    assert_eq!(s["input"]["showing"], "slate");
    assert!(
        s["input"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("/dev/video-onair-missing"),
        "the reason names the device: {s:#}"
    );
    assert_eq!(posts(&st), 1);
    assert_eq!(
        (st["width"].as_u64(), st["height"].as_u64()),
        (Some(320), Some(240)),
        "the slate has the configured size"
    );
    let (code, _) = daemon.stop(Duration::from_secs(5));
    assert_eq!(code, Some(0), "{}", daemon.log());
}
