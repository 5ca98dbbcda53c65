//! One recording file: its own small GStreamer pipeline that muxes the encoded pictures and
//! sound as they are — no second encoder — into Matroska, and the writer that puts the bytes on
//! the disk so that a power cut loses at most the last second.
//!
//! ```text
//!  appsrc "rec-video" (H.264 byte-stream, one access unit a buffer) ▸ h264parse ─┐
//!                                                                                ├▸ matroskamux ▸ appsink ▸ file
//!  appsrc "rec-audio" (Opus or raw AAC, as the output carries it) ──────────────┘
//! ```
//!
//! Why Matroska, written as a stream (`streamable=true`): each frame is written the moment it
//! comes (a block in a cluster), nothing is held back to be rewritten at the end (no index, no
//! duration, no seeking back), so a file cut anywhere — a power cut, `kill -9`, a pulled disk —
//! plays up to its last whole block. Clusters are at most 1 s (`max-cluster-duration`).
//! Fragmented MP4 would hold each fragment back until it is complete; GStreamer 1.22's
//! `splitmuxsink` finalises files by seeking back. The writer calls `fdatasync` every
//! [`SYNC_EVERY`], so what has reached the disk is never more than that behind.
//!
//! The pipeline never waits for the lane: the lane checks how much is queued before it pushes
//! and drops (and resyncs at the next key frame) when the disk does not keep up. All disk I/O
//! happens on the pipeline's streaming thread, so a disk that hangs blocks only that thread;
//! the lane notices it from [`Shared::stalled_for`] and abandons the segment.

use super::sidecar;
use crate::lock::lock;
use crate::media::AccessUnit;
use crate::media::assemble::{self, PipelineError};
use crate::media::audio::{AudioCodec, AudioUnit};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often written data is forced to the disk: a power cut loses at most this, plus what
/// the lane and the muxer held (a few frames).
pub const SYNC_EVERY: Duration = Duration::from_millis(500);
/// Matroska clusters are at most this long.
pub const MAX_CLUSTER: Duration = Duration::from_secs(1);
/// The most waiting in front of the muxer, per stream, before the lane drops instead.
const MAX_QUEUED_BYTES: u64 = 4 << 20;
/// How long a clean end (EOS through the muxer, the last sync) may take.
pub const FINISH_BUDGET: Duration = Duration::from_secs(1);

/// The sound the recording carries, as the output does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioSpec {
    pub codec: AudioCodec,
    pub channels: u32,
}

/// Why a segment could not start.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("cannot create {}: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

/// What the writer (on the streaming thread) and the lane share.
pub struct Shared {
    /// Bytes in the file so far.
    pub bytes: AtomicU64,
    /// Bytes every segment wrote (the status total).
    total: Arc<AtomicU64>,
    /// Bytes the writer may still write before the disk would fall below `min_free_mb`.
    budget: AtomicU64,
    /// When the write or sync in progress began.
    busy_since: Mutex<Option<Instant>>,
    /// The first write error, as a person reads it.
    fault: Mutex<Option<String>>,
    /// The budget ran out (as opposed to an I/O error).
    no_room: AtomicBool,
    /// Sidecar lines waiting for the next sync.
    lines: Mutex<Vec<String>>,
    /// The end of stream reached the file: everything is on the disk.
    finished: AtomicBool,
}

impl Shared {
    /// How long the write in progress has been waiting for the disk.
    pub fn stalled_for(&self) -> Duration {
        lock(&self.busy_since)
            .map(|s| s.elapsed())
            .unwrap_or_default()
    }

    /// The write error that ended this file, and whether it was the space running out.
    pub fn fault(&self) -> Option<(String, bool)> {
        lock(&self.fault)
            .clone()
            .map(|f| (f, self.no_room.load(Ordering::Relaxed)))
    }

    /// Sets what may still be written (after a look at the free space).
    pub fn set_budget(&self, bytes: u64) {
        self.budget.store(bytes, Ordering::Relaxed);
    }

    /// A line for the sidecar, written with the next sync.
    pub fn note(&self, line: String) {
        lock(&self.lines).push(line);
    }

    fn fail(&self, why: String, no_room: bool) {
        let mut fault = lock(&self.fault);
        if fault.is_none() {
            self.no_room.store(no_room, Ordering::Relaxed);
            *fault = Some(why);
        }
    }
}

/// Whether a unit was queued for the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// The disk is behind: the unit was dropped.
    Full,
}

pub struct Segment {
    pub name: String,
    pub dir: PathBuf,
    pub shared: Arc<Shared>,
    /// Media time of its first picture: the file's time 0.
    pub base: Duration,
    /// Media time of the latest picture.
    pub last_pts: Duration,
    pipeline: gst::Pipeline,
    video: gst_app::AppSrc,
    audio: Option<(gst_app::AppSrc, AudioSpec, bool)>,
    bus: gst::bus::BusStream,
}

/// What a new segment needs.
pub struct Opening<'a> {
    pub dir: &'a Path,
    pub name: &'a str,
    /// Wall-clock time of its first picture (Unix seconds) and whether the stream is live.
    pub start: f64,
    pub live: bool,
    pub base: Duration,
    pub audio: Option<AudioSpec>,
    pub budget: u64,
    pub total: Arc<AtomicU64>,
}

impl Segment {
    /// Creates the file and its sidecar and starts the pipeline. Blocking (the lane runs it off
    /// its task).
    pub fn open(o: Opening<'_>) -> Result<Segment, SegmentError> {
        let media_path = o.dir.join(o.name);
        let sidecar_path = o.dir.join(super::names::sidecar_name(o.name));
        let create = |path: &Path| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(|source| SegmentError::Create {
                    path: path.to_path_buf(),
                    source,
                })
        };
        let media = create(&media_path)?;
        let mut side = create(&sidecar_path)?;
        let head = [
            sidecar::header(o.name),
            sidecar::start_line(o.start, o.live),
        ]
        .concat();
        side.write_all(head.as_bytes())
            .map_err(|source| SegmentError::Create {
                path: sidecar_path.clone(),
                source,
            })?;
        let shared = Arc::new(Shared {
            bytes: AtomicU64::new(0),
            total: o.total,
            budget: AtomicU64::new(o.budget),
            busy_since: Mutex::new(None),
            fault: Mutex::new(None),
            no_room: AtomicBool::new(false),
            lines: Mutex::new(Vec::new()),
            finished: AtomicBool::new(false),
        });
        let built = build(o.audio, Files::new(media, side), shared.clone());
        let (pipeline, video, audio, sink) = match built {
            Ok(b) => b,
            Err(e) => {
                let _ = std::fs::remove_file(&media_path);
                let _ = std::fs::remove_file(&sidecar_path);
                return Err(e.into());
            }
        };
        let _ = sink;
        let bus = crate::media::bus::start(&pipeline)?;
        Ok(Segment {
            name: o.name.to_string(),
            dir: o.dir.to_path_buf(),
            shared,
            base: o.base,
            last_pts: o.base,
            pipeline,
            video,
            audio: audio.map(|src| (src, o.audio.expect("built with audio"), false)),
            bus: bus.stream(),
        })
    }

    /// Queues a picture (the first must be a key frame).
    pub fn push_video(&mut self, unit: &AccessUnit) -> Pushed {
        if self.video.current_level_bytes() > MAX_QUEUED_BYTES {
            return Pushed::Full;
        }
        self.last_pts = self.last_pts.max(unit.pts);
        let mut buffer = gst::Buffer::from_slice(unit.data.clone());
        {
            let b = buffer.get_mut().expect("a new buffer is writable");
            let pts =
                gst::ClockTime::from_nseconds(unit.pts.saturating_sub(self.base).as_nanos() as u64);
            b.set_pts(pts);
            b.set_dts(pts);
            b.set_duration(gst::ClockTime::from_nseconds(
                unit.duration.as_nanos() as u64
            ));
            if !unit.keyframe {
                b.set_flags(gst::BufferFlags::DELTA_UNIT);
            }
        }
        match self.video.push_buffer(buffer) {
            Ok(_) => Pushed::Queued,
            Err(_) => Pushed::Full,
        }
    }

    /// Queues a sound frame stamped at or after the first picture.
    pub fn push_audio(&mut self, unit: &AudioUnit) -> Pushed {
        let Some((src, spec, caps_set)) = &mut self.audio else {
            return Pushed::Queued;
        };
        if unit.pts < self.base {
            return Pushed::Queued;
        }
        if !*caps_set {
            // Raw AAC needs its AudioSpecificConfig, which comes with the frames.
            src.set_caps(Some(
                &spec
                    .codec
                    .mux_caps(spec.channels, unit.codec_data.as_deref()),
            ));
            *caps_set = true;
        }
        if src.current_level_bytes() > MAX_QUEUED_BYTES {
            return Pushed::Full;
        }
        let mut buffer = gst::Buffer::from_slice(unit.data.clone());
        {
            let b = buffer.get_mut().expect("a new buffer is writable");
            b.set_pts(gst::ClockTime::from_nseconds(
                (unit.pts - self.base).as_nanos() as u64,
            ));
            b.set_duration(gst::ClockTime::from_nseconds(
                unit.duration.as_nanos() as u64
            ));
        }
        match src.push_buffer(buffer) {
            Ok(_) => Pushed::Queued,
            Err(_) => Pushed::Full,
        }
    }

    /// How long the file runs so far.
    pub fn ran(&self) -> Duration {
        self.last_pts.saturating_sub(self.base)
    }

    /// An error on the pipeline's bus, if one is waiting.
    pub fn bus_error(&mut self) -> Option<String> {
        use futures_util::FutureExt;
        use futures_util::StreamExt;
        while let Some(Some(msg)) = self.bus.next().now_or_never() {
            if let Some(e) = crate::media::bus::error(&msg) {
                return Some(e.to_string());
            }
        }
        None
    }

    /// Ends the file cleanly: end of stream through the muxer, the last bytes and the
    /// sidecar's end line synced. Gives up after `budget` (a disk that hangs) and leaves the
    /// pipeline to stop on its own. Returns whether everything reached the disk.
    pub async fn finish(mut self, budget: Duration) -> bool {
        use futures_util::StreamExt;
        let _ = self.video.end_of_stream();
        if let Some((src, _, _)) = &self.audio {
            let _ = src.end_of_stream();
        }
        let shared = self.shared.clone();
        let _ = tokio::time::timeout(budget, async {
            while let Some(msg) = self.bus.next().await {
                if matches!(
                    msg.view(),
                    gst::MessageView::Eos(_) | gst::MessageView::Error(_)
                ) {
                    return;
                }
            }
        })
        .await;
        let done = shared.finished.load(Ordering::Relaxed);
        if done {
            // A thread of its own, not the runtime's blocking pool: see `abandon`.
            let (tx, rx) = tokio::sync::oneshot::channel();
            let pipeline = self.pipeline.clone();
            let spawned = std::thread::Builder::new()
                .name("rec-stop".into())
                .spawn(move || {
                    let _ = pipeline.set_state(gst::State::Null);
                    let _ = tx.send(());
                });
            if spawned.is_ok() {
                let _ = tokio::time::timeout(budget, rx).await;
            }
        } else {
            self.abandon();
        }
        done
    }

    /// Lets go of a segment whose disk failed or hangs: the pipeline is stopped on a thread of
    /// its own, which may wait as long as the disk does; nobody waits for it (a thread in the
    /// runtime's blocking pool would hold up the runtime's shutdown as long).
    pub fn abandon(self) {
        let pipeline = self.pipeline;
        let spawned = std::thread::Builder::new()
            .name("rec-abandon".into())
            .spawn(move || {
                let _ = pipeline.set_state(gst::State::Null);
            });
        if let Err(e) = spawned {
            log::warn!("recording: cannot start a thread to stop an abandoned file: {e}");
        }
    }
}

type Built = (
    gst::Pipeline,
    gst_app::AppSrc,
    Option<gst_app::AppSrc>,
    gst_app::AppSink,
);

fn build(
    audio: Option<AudioSpec>,
    files: Files,
    shared: Arc<Shared>,
) -> Result<Built, PipelineError> {
    let pipeline = gst::Pipeline::builder().name("onair-record").build();
    let video = source(
        "rec-video",
        Some(
            gst::Caps::builder("video/x-h264")
                .field("stream-format", "byte-stream")
                .field("alignment", "au")
                .build(),
        ),
    );
    let parse = assemble::make("h264parse", Some("rec-parse"))?;
    let mux = assemble::make("matroskamux", Some("rec-mux"))?;
    mux.set_property("streamable", true);
    mux.set_property("max-cluster-duration", MAX_CLUSTER.as_nanos() as i64);
    mux.set_property("writing-app", "onair");
    let sink = gst_app::AppSink::builder()
        .name("rec-file")
        .sync(false)
        .async_(false)
        .build();
    assemble::add_and_link(
        &pipeline,
        &[
            video.clone().upcast(),
            parse,
            mux.clone(),
            sink.clone().upcast(),
        ],
    )?;
    let audio = match audio {
        None => None,
        Some(_) => {
            // Caps are set with the first frame (AAC's configuration comes with it).
            let src = source("rec-audio", None);
            let name = || pipeline.name().to_string();
            pipeline.add(&src).map_err(|source| PipelineError::Add {
                pipeline: name(),
                source,
            })?;
            // By name: with no caps yet, a link by caps could take a video pad.
            let pad = mux.request_pad_simple("audio_%u");
            let linked = pad
                .ok_or_else(|| gst::glib::bool_error!("matroskamux has no audio pad"))
                .and_then(|pad| {
                    src.static_pad("src")
                        .ok_or_else(|| gst::glib::bool_error!("appsrc has no src pad"))?
                        .link(&pad)
                        .map(|_| ())
                        .map_err(|e| gst::glib::bool_error!("{e:?}"))
                });
            linked.map_err(|source| PipelineError::Link {
                pipeline: name(),
                source,
            })?;
            Some(src)
        }
    };
    install_writer(&sink, files, shared);
    Ok((pipeline, video, audio, sink))
}

fn source(name: &str, caps: Option<gst::Caps>) -> gst_app::AppSrc {
    let src = gst_app::AppSrc::builder()
        .name(name)
        .format(gst::Format::Time)
        .is_live(false)
        .do_timestamp(false)
        // The lane checks the level before pushing; never block it.
        .block(false)
        .build();
    if let Some(caps) = caps {
        src.set_caps(Some(&caps));
    }
    src
}

/// The two files of a segment, written on the pipeline's streaming thread.
struct Files {
    media: File,
    sidecar: File,
    /// The sidecar has bytes not yet synced (its first lines, written at the start).
    sidecar_dirty: bool,
    last_sync: Instant,
}

impl Files {
    fn new(media: File, sidecar: File) -> Files {
        Files {
            media,
            sidecar,
            sidecar_dirty: true,
            last_sync: Instant::now(),
        }
    }

    fn write(&mut self, data: &[u8], shared: &Shared) -> Result<(), (String, bool)> {
        let len = data.len() as u64;
        if shared
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(len)
            })
            .is_err()
        {
            return Err(("no room left above record.min_free_mb".into(), true));
        }
        *lock(&shared.busy_since) = Some(Instant::now());
        let written = self.media.write_all(data).map_err(|e| {
            (
                format!("write: {e}"),
                e.raw_os_error() == Some(nix::libc::ENOSPC),
            )
        });
        let synced = written.and_then(|()| {
            if self.last_sync.elapsed() >= SYNC_EVERY {
                self.sync(shared)
            } else {
                Ok(())
            }
        });
        *lock(&shared.busy_since) = None;
        synced?;
        shared.bytes.fetch_add(len, Ordering::Relaxed);
        shared.total.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    /// The sidecar's waiting lines, then both files to the disk.
    fn sync(&mut self, shared: &Shared) -> Result<(), (String, bool)> {
        let lines: Vec<String> = std::mem::take(&mut *lock(&shared.lines));
        if !lines.is_empty() || self.sidecar_dirty {
            self.sidecar
                .write_all(lines.concat().as_bytes())
                .and_then(|()| self.sidecar.sync_data())
                .map_err(|e| (format!("sidecar: {e}"), false))?;
            self.sidecar_dirty = false;
        }
        self.media.sync_data().map_err(|e| {
            (
                format!("fdatasync: {e}"),
                e.raw_os_error() == Some(nix::libc::ENOSPC),
            )
        })?;
        self.last_sync = Instant::now();
        Ok(())
    }
}

fn install_writer(sink: &gst_app::AppSink, files: Files, shared: Arc<Shared>) {
    let files = Arc::new(Mutex::new(files));
    let (on_sample, on_eos) = (files.clone(), files);
    let (shared_sample, shared_eos) = (shared.clone(), shared);
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let Some(buffer) = sample.buffer() else {
                    return Ok(gst::FlowSuccess::Ok);
                };
                let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                let mut files = lock(&on_sample);
                match files.write(map.as_slice(), &shared_sample) {
                    Ok(()) => Ok(gst::FlowSuccess::Ok),
                    Err((why, no_room)) => {
                        shared_sample.fail(why, no_room);
                        Err(gst::FlowError::Error)
                    }
                }
            })
            .eos(move |_| {
                let mut files = lock(&on_eos);
                shared_eos.note(sidecar::end_line(
                    super::names::unix(jiff::Timestamp::now()),
                ));
                match files.sync(&shared_eos) {
                    Ok(()) => shared_eos.finished.store(true, Ordering::Relaxed),
                    Err((why, no_room)) => shared_eos.fail(why, no_room),
                }
            })
            .build(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// Encoded units from a real encoder: `n` pictures (160x120@30, a key frame every 30) and
    /// the Opus frames of the same stretch.
    fn encoded(n: u32) -> (Vec<AccessUnit>, Vec<AudioUnit>) {
        gst::init().unwrap();
        let pull = |desc: &str| -> Vec<(Bytes, Duration, Duration, bool)> {
            let p = gst::parse::launch(desc)
                .unwrap()
                .downcast::<gst::Pipeline>()
                .unwrap();
            let sink = p
                .by_name("out")
                .unwrap()
                .downcast::<gst_app::AppSink>()
                .unwrap();
            p.set_state(gst::State::Playing).unwrap();
            let mut out = Vec::new();
            while let Ok(s) = sink.pull_sample() {
                let b = s.buffer().unwrap();
                let pts = crate::media::clock::running_time(&s, b.pts()).unwrap();
                out.push((
                    Bytes::copy_from_slice(&b.map_readable().unwrap()),
                    pts,
                    Duration::from_nanos(b.duration().map(|d| d.nseconds()).unwrap_or(0)),
                    !b.flags().contains(gst::BufferFlags::DELTA_UNIT),
                ));
            }
            p.set_state(gst::State::Null).unwrap();
            out
        };
        let video = pull(&format!(
            "videotestsrc num-buffers={n} ! video/x-raw,width=160,height=120,framerate=30/1 \
             ! x264enc tune=zerolatency key-int-max=30 ! h264parse config-interval=-1 \
             ! video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=out sync=false"
        ));
        let audio = pull(&format!(
            "audiotestsrc num-buffers={} samplesperbuffer=960 ! audio/x-raw,rate=48000,channels=2 \
             ! opusenc frame-size=20 ! appsink name=out sync=false",
            n * 50 / 30
        ));
        let video = video
            .into_iter()
            .enumerate()
            .map(|(i, (data, pts, duration, keyframe))| AccessUnit {
                data,
                seq: i as u64,
                pts,
                duration,
                keyframe,
            })
            .collect();
        let audio = audio
            .into_iter()
            .map(|(data, pts, duration, _)| AudioUnit {
                data,
                pts,
                duration,
                codec: AudioCodec::Opus,
                codec_data: None,
            })
            .collect();
        (video, audio)
    }

    /// (video frames, audio frames) ffprobe decodes from `path`.
    fn probe(path: &Path) -> (u64, u64) {
        let count = |stream: &str| {
            let out = std::process::Command::new("ffprobe")
                .args(["-v", "error", "-count_frames", "-select_streams", stream])
                .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
                .arg(path)
                .output()
                .expect("ffprobe (scripts/setup.sh installs ffmpeg)");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u64>()
                .unwrap_or(0)
        };
        (count("v:0"), count("a:0"))
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn pictures_and_sound_are_muxed_as_they_are_and_a_cut_file_still_plays() {
        let (video, audio) = encoded(90);
        assert_eq!(video.len(), 90);
        let dir = tempfile::tempdir().unwrap();
        let base = video[0].pts;
        let mut seg = Segment::open(Opening {
            dir: dir.path(),
            name: "onair-20261206T140322Z.mkv",
            start: 1000.0,
            live: true,
            base,
            audio: Some(AudioSpec {
                codec: AudioCodec::Opus,
                channels: 2,
            }),
            budget: u64::MAX,
            total: Arc::new(AtomicU64::new(0)),
        })
        .unwrap();
        seg.shared.note(sidecar::change_line(1001.0, false));
        let mut a = audio.iter().peekable();
        for v in &video {
            assert_eq!(seg.push_video(v), Pushed::Queued);
            while let Some(s) = a.next_if(|s| s.pts <= v.pts) {
                assert_eq!(seg.push_audio(s), Pushed::Queued);
            }
        }
        for s in a {
            seg.push_audio(s);
        }
        assert!(seg.ran() >= Duration::from_millis(2900), "{:?}", seg.ran());
        let shared = seg.shared.clone();
        assert!(seg.finish(Duration::from_secs(5)).await, "a clean end");
        let path = dir.path().join("onair-20261206T140322Z.mkv");
        let bytes = std::fs::metadata(&path).unwrap().len();
        assert_eq!(shared.bytes.load(Ordering::Relaxed), bytes);
        let (frames, sounds) = probe(&path);
        assert_eq!(frames, 90, "every picture, not re-encoded");
        assert!(sounds >= 140, "sound present: {sounds} Opus frames");
        let side = sidecar::parse(
            &std::fs::read_to_string(dir.path().join("onair-20261206T140322Z.txt")).unwrap(),
        );
        assert_eq!(side.start, Some(1000.0));
        assert_eq!(side.changes, vec![(1001.0, false)]);
        assert!(side.end.is_some(), "the end line is written at the end");

        // Cut anywhere (a power cut), the file plays up to where it was cut.
        let cut = dir.path().join("cut.mkv");
        std::fs::write(
            &cut,
            &std::fs::read(&path).unwrap()[..bytes as usize * 2 / 3],
        )
        .unwrap();
        let (frames, sounds) = probe(&cut);
        assert!(
            (50..90).contains(&frames),
            "{frames} pictures from two thirds"
        );
        assert!(sounds > 50, "{sounds}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_budget_is_never_overrun() {
        let (video, _) = encoded(30);
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::open(Opening {
            dir: dir.path(),
            name: "onair-20261206T140322Z.mkv",
            start: 1000.0,
            live: true,
            base: video[0].pts,
            audio: None,
            budget: 20_000,
            total: Arc::new(AtomicU64::new(0)),
        })
        .unwrap();
        for v in &video {
            seg.push_video(v);
        }
        let shared = seg.shared.clone();
        let deadline = Instant::now() + Duration::from_secs(5);
        while shared.fault().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            shared.fault().map(|f| f.1),
            Some(true),
            "no room, not an I/O error"
        );
        let bytes = std::fs::metadata(dir.path().join("onair-20261206T140322Z.mkv"))
            .unwrap()
            .len();
        assert!(bytes <= 20_000, "{bytes}");
        seg.abandon();
    }
}
