//! The box records what it streams, through every outage: the real daemon records while the
//! receiver says what the viewers got, and the files are checked apart from the daemon, by
//! ffprobe decoding them.
//!
//! - a 30 s server outage (the cable pulled, root): the receiver has the gap, the recording has
//!   none — its frames at the configured rate (±1 %) across it, sound present — and
//!   `onair recordings` shows the outage as a window off the air;
//! - `kill -9` of the daemon mid-file: the file decodes up to at most 1 s before the kill;
//! - a small file system (tmpfs, root) filled: the oldest recordings go, the free space never
//!   drops below `min_free_mb`, the live stream keeps ≥ 99 % of its frames;
//! - a disk that stalls (a FUSE file system whose writes block, root, Debian's python3-fusepy):
//!   the live stream keeps ≥ 99 % of its frames, the recording says why it stopped, and the
//!   daemon still stops in time.

mod common;
mod lab;

use common::{Daemon, Receiver, frame_times, mono_now, serial, test_config};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const TOKEN: &str = "rec-key_7";
const FPS: f64 = 30.0;

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// Timestamps (s) of the frames ffprobe decodes from `stream` ("v:0", "a:0") of `file`.
fn decoded_times(file: &Path, stream: &str) -> Vec<f64> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", stream])
        .args(["-show_entries", "frame=pts_time", "-of", "csv=p=0"])
        .arg(file)
        .output()
        .expect("ffprobe (scripts/setup.sh installs ffmpeg)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse::<f64>().ok())
        .collect()
}

/// The recordings of `dir`, sorted (names sort by time).
fn recordings(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "mkv"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The wall-clock start a sidecar gives its recording.
fn sidecar_start(media: &Path) -> f64 {
    let text = std::fs::read_to_string(media.with_extension("txt")).expect("sidecar");
    text.lines()
        .find_map(|l| l.strip_prefix("start "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .expect("a start line")
}

fn recordings_json(daemon: &Daemon) -> Value {
    let out = Command::new(common::onair_bin())
        .args(["recordings", "--json", "--socket"])
        .arg(&daemon.socket)
        .output()
        .expect("onair recordings");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn record_status(daemon: &Daemon) -> Value {
    daemon
        .status()
        .map(|s| s["record"].clone())
        .unwrap_or(Value::Null)
}

/// Frames the receiver decoded in [from, to] (CLOCK_MONOTONIC), as a share of `FPS`.
fn decoded_share(receiver: &Receiver, from: f64, to: f64) -> f64 {
    let n = frame_times(&receiver.stats())
        .into_iter()
        .filter(|&t| t >= from && t <= to)
        .count();
    n as f64 / ((to - from) * FPS)
}

/// Scenario 1: every uplink gone for 30 s while recording. The viewers lose those 30 s; the
/// recording does not.
#[test]
fn a_30s_outage_is_a_gap_for_the_viewers_and_none_in_the_recording() {
    let _serial = serial();
    let lab = lab_or_skip!();
    let receiver = Receiver::start_on(
        &format!("{}:8080", lab::SERVER_IP),
        Some(TOKEN),
        Some(&lab.server_ns),
    );
    let rec_dir = tempfile::tempdir().expect("temp dir");
    let daemon = Daemon::start(
        test_config(
            &format!("http://{}:8080/api/whip", lab::SERVER_IP),
            Some(TOKEN),
            json!({
                "audio": {"kind": "test"},
                "record": {"enabled": true, "to": "data", "dir": rec_dir.path().join("rec"),
                           "segment_s": 300, "min_free_mb": 16},
            }),
        ),
        Some(&lab.box_ns),
    );
    let (live, s) = daemon.wait_status(Duration::from_secs(20), |s| {
        s["state"] == "live" && s["record"]["state"] == "recording"
    });
    assert!(live, "never live and recording: {s:#}\n{}", daemon.log());
    std::thread::sleep(Duration::from_secs(3));

    let (t_cut, wall_cut) = (mono_now(), unix_now());
    lab.cut();
    let (offline, _) = daemon.wait_status(Duration::from_secs(5), |s| s["state"] == "offline");
    assert!(offline, "the box never noticed the cable\n{}", daemon.log());
    std::thread::sleep(Duration::from_secs(30) - Duration::from_secs_f64(mono_now() - t_cut));
    let (t_back, wall_back) = (mono_now(), unix_now());
    lab.restore();
    let (live, s) = daemon.wait_status(Duration::from_secs(15), |s| s["state"] == "live");
    assert!(
        live,
        "not live again after the outage: {s:#}\n{}",
        daemon.log()
    );
    std::thread::sleep(Duration::from_secs(3));
    let listing = recordings_json(&daemon);
    let status = record_status(&daemon);
    let mut daemon = daemon;
    let (code, _) = daemon.stop(Duration::from_secs(5));
    assert_eq!(code, Some(0), "{}", daemon.log());

    // The viewers: nothing decoded during the outage.
    let frames = frame_times(&receiver.stats());
    let during = frames
        .iter()
        .filter(|&&t| t > t_cut + 1.0 && t < t_back)
        .count();
    assert_eq!(
        during, 0,
        "the receiver decoded frames while the cable was out"
    );

    // The recording: one file, pictures at the configured rate across the outage, sound too.
    let files = recordings(&rec_dir.path().join("rec"));
    assert_eq!(files.len(), 1, "{files:?}");
    let start = sidecar_start(&files[0]);
    let video = decoded_times(&files[0], "v:0");
    let audio = decoded_times(&files[0], "a:0");
    let (from, to) = (wall_cut - start, wall_back - start);
    let in_outage = video.iter().filter(|&&t| t >= from && t < to).count();
    let rate = in_outage as f64 / (to - from);
    let longest = video.windows(2).map(|w| w[1] - w[0]).fold(0.0f64, f64::max);
    let sound = audio.iter().filter(|&&t| t >= from && t < to).count() as f64 * 0.020;
    eprintln!(
        "outage: {:.1} s; the recording has {in_outage} pictures in it ({rate:.2} fps), longest \
         gap between pictures {longest:.3} s over {} pictures, {sound:.1} s of sound in it; \
         status {status}",
        to - from,
        video.len()
    );
    assert!(
        (rate - FPS).abs() <= FPS * 0.01,
        "{rate:.2} fps across the outage (want {FPS} ±1 %)"
    );
    // The recording has what the encoder made, and nothing was dropped on its way to the disk:
    // a frame pump late under load (two CPUs shared with the receiver's decoding) makes a gap
    // of a few frame times; a hole would be seconds.
    assert_eq!(
        status["dropped"], 0,
        "the recording dropped units: {status:#}"
    );
    assert!(longest < 0.5, "a gap of {longest:.3} s in the recording");
    assert!(
        sound >= (to - from) * 0.99,
        "{sound:.1} s of sound across the outage"
    );

    // `onair recordings`: the outage is a window off the air in that file (the file may also
    // start with one: it was recording before the first connection went live).
    let entry = &listing["recordings"][0];
    let windows: Vec<(f64, f64)> = entry["not_live"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| Some((w["from"].as_f64()?, w["to"].as_f64()?)))
        .filter(|&(f, t)| t > wall_cut && f < wall_back)
        .collect();
    assert_eq!(windows.len(), 1, "{listing:#}");
    let (w_from, w_to) = windows[0];
    assert!(
        w_from >= wall_cut - 0.5 && w_from <= wall_cut + 6.0,
        "off the air from {:.1} s after the cut",
        w_from - wall_cut
    );
    assert!(
        w_to >= wall_back && w_to <= wall_back + 10.0,
        "back on the air {:.1} s after the cable",
        w_to - wall_back
    );
}

/// Scenario 2: `kill -9` in the middle of a file: it plays up to at most 1 s before the kill.
#[test]
fn kill_9_mid_file_leaves_a_file_that_plays_to_within_1s_of_the_kill() {
    let _serial = serial();
    let rec_dir = tempfile::tempdir().expect("temp dir");
    // Nobody listens: the box records while it cannot reach the server.
    let mut daemon = Daemon::start(
        test_config(
            "http://127.0.0.1:9/api/whip",
            Some(TOKEN),
            json!({
                "audio": {"kind": "test"},
                "record": {"enabled": true, "to": "usb", "usb_label": "ONAIR-TEST-NONE",
                           "dir": rec_dir.path().join("rec"), "segment_s": 300},
            }),
        ),
        None,
    );
    let (recording, s) = daemon.wait_status(Duration::from_secs(20), |s| {
        s["record"]["state"] == "recording" && s["record"]["file_bytes"].as_u64() > Some(0)
    });
    assert!(recording, "never recording: {s:#}\n{}", daemon.log());
    assert_eq!(s["record"]["location"], "data", "no USB disk: the fallback");
    std::thread::sleep(Duration::from_millis(5300));
    let killed_at = unix_now();
    daemon.signal(nix::sys::signal::Signal::SIGKILL);
    assert_eq!(daemon.wait_exit(Duration::from_secs(5)), None, "killed");

    let files = recordings(&rec_dir.path().join("rec"));
    assert_eq!(files.len(), 1, "{files:?}");
    let start = sidecar_start(&files[0]);
    let video = decoded_times(&files[0], "v:0");
    let audio = decoded_times(&files[0], "a:0");
    let last = start + video.last().copied().unwrap_or(0.0);
    eprintln!(
        "kill -9: {} pictures, {} sound frames decoded; the last picture {:.2} s before the kill",
        video.len(),
        audio.len(),
        killed_at - last
    );
    assert!(
        killed_at - last <= 1.0,
        "the file ends {:.2} s before the kill",
        killed_at - last
    );
    assert!(
        video.len() as f64 >= (last - start) * FPS * 0.99,
        "{} pictures over {:.1} s",
        video.len(),
        last - start
    );
    assert!(!audio.is_empty(), "sound in the file");
}

/// A tmpfs of `mib` MiB mounted on a new temp dir, unmounted when dropped.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(mib: u32) -> Result<SmallFs, String> {
        if !common::is_root() {
            return Err("not root: mounting a tmpfs needs CAP_SYS_ADMIN".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m"),
                "onair-rec-test",
            ])
            .arg(dir.path())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(SmallFs { dir })
    }

    fn free(&self) -> u64 {
        let st = nix::sys::statvfs::statvfs(self.dir.path()).expect("statvfs");
        st.blocks_available() as u64 * st.fragment_size() as u64
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Scenario 3: a small disk fills: the oldest recordings go, the free space never drops below
/// `min_free_mb`, and the viewers notice nothing.
#[test]
fn a_full_disk_deletes_the_oldest_and_never_goes_below_min_free() {
    let _serial = serial();
    let fs = match SmallFs::mount(12) {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    const MIN_FREE_MIB: u64 = 4;
    let receiver = Receiver::start("127.0.0.1", Some(TOKEN), None);
    let daemon = Daemon::start(
        test_config(
            &receiver.whip_url(),
            Some(TOKEN),
            json!({
                "source": {"pattern": "noise"},
                "encoder": {"bitrate_kbps": 2500, "adapt": false},
                "record": {"enabled": true, "to": "data", "dir": fs.dir.path().join("rec"),
                           "segment_s": 2, "min_free_mb": MIN_FREE_MIB},
            }),
        ),
        None,
    );
    let (live, s) = daemon.wait_status(Duration::from_secs(20), |s| {
        s["state"] == "live" && s["record"]["state"] == "recording"
    });
    assert!(live, "never live and recording: {s:#}\n{}", daemon.log());
    let t0 = mono_now();
    let start = Instant::now();
    let mut lowest = u64::MAX;
    let mut seen = std::collections::BTreeSet::new();
    while start.elapsed() < Duration::from_secs(30) {
        lowest = lowest.min(fs.free());
        for f in recordings(&fs.dir.path().join("rec")) {
            seen.insert(f);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let t1 = mono_now();
    let status = record_status(&daemon);
    let left = recordings(&fs.dir.path().join("rec"));
    let share = decoded_share(&receiver, t0, t1);
    let deleted: Vec<_> = seen.iter().filter(|f| !left.contains(f)).collect();
    eprintln!(
        "12 MiB tmpfs, min_free_mb {MIN_FREE_MIB}: {} files made, {} deleted, {} left; lowest free \
         {:.2} MiB; {:.1} MB written; live stream {:.1} % of the frames; status {status}",
        seen.len(),
        deleted.len(),
        left.len(),
        lowest as f64 / 1048576.0,
        status["bytes_written"].as_u64().unwrap_or(0) as f64 / 1e6,
        share * 100.0
    );
    assert!(
        lowest >= MIN_FREE_MIB << 20,
        "free space fell to {lowest} bytes, below min_free_mb"
    );
    assert!(
        deleted.len() >= 3,
        "the oldest were not deleted: {deleted:?}"
    );
    assert!(
        left.iter().all(|f| deleted.iter().all(|d| *d < f)),
        "not the oldest went: deleted {deleted:?}, left {left:?}"
    );
    assert_eq!(status["state"], "recording", "{status:#}");
    assert!(
        status["bytes_written"].as_u64().unwrap_or(0) > (12 - MIN_FREE_MIB) << 20,
        "wrote less than the room it had: {status:#}"
    );
    assert!(
        share >= 0.99,
        "the live stream kept {:.1} % of its frames",
        share * 100.0
    );
}

/// A FUSE file system over a directory whose writes block while a flag file exists
/// (tests/peers/stall_fs.py); unmounted and stopped when dropped.
struct StallFs {
    child: Child,
    mount: PathBuf,
    flag: PathBuf,
    _dir: tempfile::TempDir,
}

impl StallFs {
    fn start() -> Result<StallFs, String> {
        if !common::is_root() {
            return Err("not root: mounting FUSE without fusermount needs CAP_SYS_ADMIN".into());
        }
        if !Path::new("/dev/fuse").exists() {
            return Err("no /dev/fuse".into());
        }
        let probe = Command::new("/usr/bin/python3")
            .args(["-c", "import fusepy"])
            .status()
            .map_err(|e| e.to_string())?;
        if !probe.success() {
            return Err("python3-fusepy is missing: run scripts/setup.sh".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (back, mount, flag) = (
            dir.path().join("back"),
            dir.path().join("mnt"),
            dir.path().join("stall"),
        );
        std::fs::create_dir(&back).map_err(|e| e.to_string())?;
        std::fs::create_dir(&mount).map_err(|e| e.to_string())?;
        let mut child = Command::new("/usr/bin/python3")
            .arg(common::repo_root().join("tests/peers/stall_fs.py"))
            .args([&back, &mount, &flag])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| e.to_string())?;
        common::await_ready::<0>(&mut child, Duration::from_secs(15), "stall_fs.py", None);
        Ok(StallFs {
            child,
            mount,
            flag,
            _dir: dir,
        })
    }

    fn stall(&self, on: bool) {
        if on {
            std::fs::write(&self.flag, b"").expect("flag");
        } else {
            let _ = std::fs::remove_file(&self.flag);
        }
    }
}

/// Ends the stall when dropped.
struct Unstall<'a>(&'a StallFs);

impl Drop for Unstall<'_> {
    fn drop(&mut self) {
        self.0.stall(false);
    }
}

impl Drop for StallFs {
    fn drop(&mut self) {
        self.stall(false);
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Scenario 4: the disk stops taking writes. The viewers notice nothing, the recording says
/// why it stopped, and SIGTERM still stops the daemon in time while the disk hangs.
#[test]
fn a_disk_that_stalls_never_slows_the_live_stream() {
    let _serial = serial();
    let disk = match StallFs::start() {
        Ok(d) => d,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let receiver = Receiver::start("127.0.0.1", Some(TOKEN), None);
    let mut daemon = Daemon::start(
        test_config(
            &receiver.whip_url(),
            Some(TOKEN),
            json!({
                "audio": {"kind": "test"},
                "record": {"enabled": true, "to": "data", "dir": disk.mount.join("rec"),
                           "segment_s": 300},
            }),
        ),
        None,
    );
    let (live, s) = daemon.wait_status(Duration::from_secs(20), |s| {
        s["state"] == "live" && s["record"]["file_bytes"].as_u64() > Some(0)
    });
    assert!(live, "never live and recording: {s:#}\n{}", daemon.log());
    std::thread::sleep(Duration::from_secs(2));

    let t0 = mono_now();
    disk.stall(true);
    // Dropped before the daemon: a failed assertion must not leave the daemon's drop waiting
    // on the hung disk.
    let _unstall = Unstall(&disk);
    let (noticed, status) = daemon.wait_status(Duration::from_secs(10), |s| {
        s["record"]["state"] == "stopped"
    });
    let noticed_after = mono_now() - t0;
    std::thread::sleep(
        Duration::from_secs(10).saturating_sub(Duration::from_secs_f64(noticed_after)),
    );
    let t1 = mono_now();
    let share = decoded_share(&receiver, t0, t1);
    let s = daemon.status().unwrap_or(Value::Null);
    eprintln!(
        "stalled disk: noticed after {noticed_after:.1} s; live stream {:.1} % of the frames over \
         {:.0} s; record {}",
        share * 100.0,
        t1 - t0,
        s["record"]
    );
    assert!(
        noticed,
        "the recording never gave up on the disk: {status:#}"
    );
    assert!(
        s["record"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("held a write") || e.contains("did not")),
        "{s:#}"
    );
    assert_eq!(s["state"], "live", "{s:#}");
    assert!(
        share >= 0.99,
        "the live stream kept {:.1} % of its frames",
        share * 100.0
    );

    // SIGTERM while the disk still hangs: the daemon does not wait for the disk — the stream
    // ends at once (its session is DELETEd, the status socket goes). The process itself is
    // reaped only once the disk answers: the kernel waits out a write the disk has taken
    // (README, "Recording").
    let deletes_before = receiver.stats()["deletes"].as_array().map_or(0, Vec::len);
    let t_term = Instant::now();
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let deadline = t_term + Duration::from_secs(3);
    while daemon.socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stopped_after = t_term.elapsed();
    let deletes = receiver.stats()["deletes"].as_array().map_or(0, Vec::len);
    disk.stall(false);
    let code = daemon.wait_exit(Duration::from_secs(10));
    eprintln!(
        "SIGTERM while the disk hangs: the status socket gone after {:.2} s, {} DELETE; exit {code:?} once the disk answered",
        stopped_after.as_secs_f64(),
        deletes - deletes_before
    );
    assert!(
        !daemon.socket.exists(),
        "still running 3 s after SIGTERM\n{}",
        daemon.log()
    );
    assert_eq!(deletes, deletes_before + 1, "the session was not ended");
    assert_eq!(code, Some(0), "{}", daemon.log());
}
