//! The recording lane: one task that takes every unit from the door's recording tap and keeps
//! a file being written — starting one at a key frame, rolling to the next every
//! `record.segment_s`, moving to the USB disk when it appears and back to the data partition
//! when it fails, deleting the oldest recordings before the disk fills, and noting in each
//! file's sidecar when the stream goes off and on the air.
//!
//! It never waits for a disk: every disk operation (opening a file, a look at the free space,
//! deletions, mounting) runs on a thread of its own under a deadline, and the writes happen on
//! the segment's own streaming thread ([`super::segment`]). A disk that misses a deadline or
//! holds a write too long is given up on. Plain threads rather than the runtime's blocking pool:
//! one stuck on a hung disk must not hold up the runtime's shutdown.

use super::RecordingStats;
use super::catalog::{self, Item};
use super::disk;
use super::names;
use super::rules::{self, Dest, UsbGate};
use super::segment::{AudioSpec, FINISH_BUDGET, Opening, Pushed, Segment};
use super::sidecar;
use super::space;
use crate::config::{RecordConfig, RecordTo};
use crate::lock::lock;
use crate::media::audio::AudioUnit;
use crate::media::{AccessUnit, Door, MediaClock};
use crate::recorder::{Entry, FlightRecorder};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the lane looks at its segment, the free space and the USB disk.
const TICK: Duration = Duration::from_millis(250);
/// Free space and the USB disk's presence are looked at this often.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// A write or sync that has waited this long means the disk hangs.
const STALL_AFTER: Duration = Duration::from_secs(3);
/// Deadlines of the disk operations run off the task.
const OPEN_DEADLINE: Duration = Duration::from_secs(3);
const LOOK_DEADLINE: Duration = Duration::from_secs(3);
const MOUNT_DEADLINE: Duration = Duration::from_secs(10);
/// The recording's tap holds this much (pictures; twice as many sound frames): the lane's
/// whole buffer against a moment of slow disk.
const TAP_SECONDS: usize = 3;
/// After a roll, sound stamped before the new file's first picture still goes to the old one,
/// for at most this long.
const SOUND_CATCH_UP: Duration = Duration::from_millis(500);
/// Space kept for what is written between two looks: at least this, or three seconds of the
/// rate measured.
const MIN_RESERVE: u64 = 2 << 20;
/// Where recordings go on the USB disk.
const USB_DIR: &str = "recordings";

/// What the lane needs from the rest of the daemon.
pub struct RecordingInputs {
    pub config: RecordConfig,
    /// The USB disk is mounted on `state_dir/usb`.
    pub state_dir: PathBuf,
    pub door: Door,
    pub fps: u32,
    /// The sound as the output carries it, when there is sound.
    pub audio: Option<AudioSpec>,
    pub clock: MediaClock,
    /// Whether the stream is on the air (from the supervisor's view).
    pub on_air: watch::Receiver<bool>,
    pub recorder: FlightRecorder,
}

/// The running lane. Stopped by the shutdown token; await [`Recording::stopped`].
pub struct Recording {
    pub stats: Arc<RecordingStats>,
    task: JoinHandle<()>,
}

impl Recording {
    /// Starts the lane when `record.enabled`; `None` otherwise.
    pub fn start(inputs: RecordingInputs, shutdown: CancellationToken) -> Option<Recording> {
        if !inputs.config.enabled {
            return None;
        }
        let stats = Arc::new(RecordingStats::new(
            inputs.config.to.as_str(),
            inputs.config.min_free_mb,
            inputs.door.clone(),
        ));
        let tap = inputs
            .door
            .open_recording(inputs.fps.max(1) as usize * TAP_SECONDS);
        log::info!(
            "recording: on, to {} ({}), a file every {} s, keeping {} MiB free",
            inputs.config.to.as_str(),
            match inputs.config.to {
                RecordTo::Usb => format!(
                    "USB disk {}, else {}",
                    inputs.config.usb_label,
                    inputs.config.dir.display()
                ),
                RecordTo::Data => inputs.config.dir.display().to_string(),
            },
            inputs.config.segment.as_secs(),
            inputs.config.min_free_mb
        );
        let live = *inputs.on_air.borrow();
        let lane = Lane {
            mount_at: inputs.state_dir.join("usb"),
            cfg: inputs.config,
            audio: inputs.audio,
            clock: inputs.clock,
            stats: stats.clone(),
            recorder: inputs.recorder,
            live,
            place: None,
            usb: None,
            usb_gate: UsbGate::default(),
            data_retry_at: None,
            segment: None,
            closing: None,
            finishing: JoinSet::new(),
            need_key: true,
            last_seq: None,
            budget: 0,
            last_look: None,
            rate: RateMeter::default(),
            usb_busy: Arc::default(),
            data_busy: Arc::default(),
        };
        let task = tokio::spawn(lane.run(tap, inputs.on_air, shutdown));
        Some(Recording { stats, task })
    }

    /// Waits until the lane has closed its files (a hung disk is given up on in about a
    /// second).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

/// Where the lane records now.
#[derive(Debug, Clone, PartialEq)]
struct Place {
    dest: Dest,
    dir: PathBuf,
}

/// The USB disk while the lane has it mounted.
struct Mounted {
    device: PathBuf,
    fs: &'static str,
}

/// A file whose successor has started, taking the sound stamped before the successor's first
/// picture until that sound has come.
struct Closing {
    segment: Segment,
    until: Instant,
}

/// Bytes written per second, over the last look.
#[derive(Default)]
struct RateMeter {
    last: Option<(Instant, u64)>,
    per_s: u64,
}

impl RateMeter {
    fn update(&mut self, now: Instant, total: u64) {
        if let Some((at, bytes)) = self.last {
            let dt = now.saturating_duration_since(at).as_secs_f64();
            if dt > 0.1 {
                self.per_s = (total.saturating_sub(bytes) as f64 / dt) as u64;
            }
        }
        self.last = Some((now, total));
    }

    fn reserve(&self) -> u64 {
        MIN_RESERVE.max(self.per_s.saturating_mul(3))
    }
}

struct Lane {
    cfg: RecordConfig,
    mount_at: PathBuf,
    audio: Option<AudioSpec>,
    clock: MediaClock,
    stats: Arc<RecordingStats>,
    recorder: FlightRecorder,
    live: bool,
    place: Option<Place>,
    usb: Option<Mounted>,
    usb_gate: UsbGate,
    data_retry_at: Option<Instant>,
    segment: Option<Segment>,
    closing: Option<Closing>,
    finishing: JoinSet<()>,
    /// Pictures are dropped until the next key frame (the start, or units were dropped).
    need_key: bool,
    last_seq: Option<u64>,
    /// What the next file may write, from the last look at the free space.
    budget: u64,
    last_look: Option<Instant>,
    rate: RateMeter,
    /// An operation on the disk is under way (see [`off_task`]).
    usb_busy: Arc<AtomicBool>,
    data_busy: Arc<AtomicBool>,
}

/// What a disk operation run off the task came back with.
enum Off<T> {
    Done(T),
    /// The deadline passed: the disk hangs (the thread is left to it).
    Hung,
}

/// Runs `f` on a thread of its own and waits for it at most `deadline`. With `busy` (the
/// disk's own flag), nothing is started while an earlier operation on that disk is still
/// stuck: a disk that hangs for hours holds one thread, not one per retry.
async fn off_task<T: Send + 'static>(
    name: &str,
    deadline: Duration,
    busy: Option<&Arc<AtomicBool>>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Off<T> {
    if let Some(busy) = busy
        && busy.swap(true, Ordering::AcqRel)
    {
        return Off::Hung;
    }
    let busy = busy.cloned();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let result = f();
            // Free before the answer: the lane may start the next operation the moment it hears.
            if let Some(busy) = busy {
                busy.store(false, Ordering::Release);
            }
            let _ = tx.send(result);
        });
    if spawned.is_err() {
        return Off::Hung;
    }
    match tokio::time::timeout(deadline, rx).await {
        Ok(Ok(v)) => Off::Done(v),
        _ => Off::Hung,
    }
}

/// One look at the free space: the plan, carried out.
struct Look {
    free: u64,
    deleted: Vec<String>,
    room: bool,
    budget: u64,
}

fn look_at_space(
    dir: &Path,
    min_free: u64,
    reserve: u64,
    deletable: &[(String, u64)],
) -> std::io::Result<Look> {
    let free = disk::free_bytes(dir)?;
    let plan = space::plan(free, min_free, reserve, deletable);
    let mut deleted = Vec::new();
    for name in &plan.delete {
        let media = dir.join(name);
        match std::fs::remove_file(&media) {
            Ok(()) => deleted.push(name.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => deleted.push(name.clone()),
            Err(e) => log::warn!("recording: cannot delete {}: {e}", media.display()),
        }
        let _ = std::fs::remove_file(dir.join(names::sidecar_name(name)));
    }
    if deleted.is_empty() {
        return Ok(Look {
            free,
            deleted,
            room: plan.room,
            budget: plan.budget,
        });
    }
    disk::commit(dir);
    let free = disk::free_bytes(dir)?;
    Ok(Look {
        free,
        deleted,
        room: free >= min_free.saturating_add(reserve),
        budget: free.saturating_sub(min_free),
    })
}

fn wall_now() -> f64 {
    names::unix(jiff::Timestamp::now())
}

impl Lane {
    async fn run(
        mut self,
        mut tap: crate::media::Tap,
        mut on_air: watch::Receiver<bool>,
        shutdown: CancellationToken,
    ) {
        self.begin().await;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut on_air_open = true;
        loop {
            let (video, audio) = tap.lanes();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                unit = video.recv() => match unit {
                    Some(unit) => self.on_video(unit).await,
                    None => break,
                },
                Some(unit) = audio.recv() => self.on_audio(&unit),
                changed = on_air.changed(), if on_air_open => match changed {
                    Ok(()) => {
                        let live = *on_air.borrow_and_update();
                        self.on_air(live);
                    }
                    Err(_) => on_air_open = false,
                },
                _ = tick.tick() => self.tick().await,
                Some(_) = self.finishing.join_next(), if !self.finishing.is_empty() => {}
            }
        }
        drop(tap);
        self.end().await;
    }

    /// The first place: the USB disk if it is there and wanted, else the data partition. The
    /// data partition's recordings are read either way (they are listed).
    async fn begin(&mut self) {
        self.scan_data().await;
        if self.cfg.to == RecordTo::Usb {
            self.look_for_usb().await;
        }
        self.choose_place().await;
    }

    /// Reads the data partition's recordings into the catalog (a missing directory is empty).
    async fn scan_data(&mut self) {
        let dir = self.cfg.dir.clone();
        let busy = self.busy(Dest::Data);
        match off_task("rec-scan", LOOK_DEADLINE, Some(&busy), move || {
            catalog::scan(&dir, Dest::Data)
        })
        .await
        {
            Off::Done(Ok(items)) => self.stats.catalog().replace(Dest::Data, items),
            Off::Done(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Off::Done(Err(e)) => {
                log::warn!("recording: cannot read {}: {e}", self.cfg.dir.display())
            }
            Off::Hung => log::warn!(
                "recording: reading {} took more than {} s",
                self.cfg.dir.display(),
                LOOK_DEADLINE.as_secs()
            ),
        }
    }

    /// Where to record now; when it changes, the new place is made ready (directory, space)
    /// and the file moves there at the next key frame.
    async fn choose_place(&mut self) {
        let now = Instant::now();
        let dest = rules::choose(self.cfg.to, self.usb.is_some(), self.data_retry_at, now);
        let place = dest.map(|dest| Place {
            dest,
            dir: match dest {
                Dest::Usb => self.mount_at.join(USB_DIR),
                Dest::Data => self.cfg.dir.clone(),
            },
        });
        if place == self.place {
            return;
        }
        self.place = place.clone();
        self.last_look = None;
        let Some(place) = place else {
            self.stats.update(|s| {
                s.location = None;
                s.dir = None;
            });
            let why = lock(&self.stats.status)
                .last_error
                .clone()
                .unwrap_or_else(|| "no place to record".into());
            self.stats.set_state("stopped", Some(why));
            return;
        };
        self.data_retry_at = None;
        let dir = place.dir.clone();
        let busy = self.busy(place.dest);
        match off_task("rec-mkdir", OPEN_DEADLINE, Some(&busy), move || {
            std::fs::create_dir_all(&dir)
        })
        .await
        {
            Off::Done(Ok(())) => {}
            Off::Done(Err(e)) => {
                let why = format!("cannot create {}: {e}", place.dir.display());
                return Box::pin(self.fault(place.dest, why, false)).await;
            }
            Off::Hung => {
                let why = format!("{} did not answer", place.dir.display());
                return Box::pin(self.fault(place.dest, why, false)).await;
            }
        }
        log::info!(
            "recording: recording to {} ({})",
            place.dest.as_str(),
            place.dir.display()
        );
        self.stats.update(|s| {
            s.location = Some(place.dest);
            s.dir = Some(place.dir.display().to_string());
        });
        if self.segment.is_none() {
            self.stats
                .set_state("waiting", Some("for a key frame".into()));
        }
        Box::pin(self.look()).await;
    }

    async fn on_video(&mut self, unit: AccessUnit) {
        if self.last_seq.is_some_and(|last| unit.seq != last + 1) {
            // The door dropped units: the file resumes at the next key frame.
            self.need_key = true;
        }
        self.last_seq = Some(unit.seq);
        if self.need_key && !unit.keyframe {
            return;
        }
        let moving = match (&self.segment, &self.place) {
            (Some(seg), Some(place)) => seg.dir != place.dir,
            (Some(_), None) => true,
            _ => false,
        };
        if let Some(seg) = &self.segment {
            let ran = unit.pts.saturating_sub(seg.base);
            let bytes = seg.shared.bytes.load(Ordering::Relaxed);
            if rules::roll_due(unit.keyframe, ran, self.cfg.segment, bytes, moving) {
                self.roll(unit.pts);
            }
        }
        if self.segment.is_none() {
            if !unit.keyframe || self.place.is_none() {
                return;
            }
            self.open(&unit).await;
        }
        let Some(seg) = self.segment.as_mut() else {
            return;
        };
        match seg.push_video(&unit) {
            Pushed::Queued => self.need_key = false,
            Pushed::Full => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                self.need_key = true;
            }
        }
    }

    fn on_audio(&mut self, unit: &AudioUnit) {
        let stats = &self.stats;
        let push = |seg: &mut Segment| {
            if seg.push_audio(unit) == Pushed::Full {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        };
        if let (Some(closing), Some(seg)) = (&mut self.closing, &self.segment)
            && unit.pts < seg.base
        {
            push(&mut closing.segment);
            return;
        }
        if let Some(seg) = &mut self.segment {
            push(seg);
        }
        // Sound has reached the new file's start: the old one has all of its own.
        if let Some(closing) = self.closing.take() {
            self.finish(closing.segment);
        }
    }

    fn on_air(&mut self, live: bool) {
        if live == self.live {
            return;
        }
        self.live = live;
        let t = wall_now();
        self.stats.catalog().change(t, live);
        for seg in self
            .segment
            .iter()
            .chain(self.closing.iter().map(|c| &c.segment))
        {
            seg.shared.note(sidecar::change_line(t, live));
        }
    }

    /// The current file ends at this picture; the next starts with it.
    fn roll(&mut self, at: Duration) {
        let Some(seg) = self.segment.take() else {
            return;
        };
        if let Some(older) = self.closing.take() {
            self.finish(older.segment);
        }
        log::debug!(
            "recording: {} ends at {:.3} s",
            seg.name,
            at.saturating_sub(seg.base).as_secs_f64()
        );
        if self.audio.is_some() {
            self.closing = Some(Closing {
                segment: seg,
                until: Instant::now() + SOUND_CATCH_UP,
            });
        } else {
            self.finish(seg);
        }
    }

    /// Ends a file cleanly in the background; the catalog and the log hear when it is done.
    fn finish(&mut self, seg: Segment) {
        let stats = self.stats.clone();
        self.finishing.spawn(async move {
            let name = seg.name.clone();
            let shared = seg.shared.clone();
            let clean = seg.finish(FINISH_BUDGET).await;
            let bytes = shared.bytes.load(Ordering::Relaxed);
            {
                let mut catalog = stats.catalog();
                catalog.set_bytes(&name, bytes);
                catalog.close(&name, wall_now());
            }
            if clean {
                log::info!("recording: closed {name} ({:.1} MB)", bytes as f64 / 1e6);
            } else {
                log::warn!("recording: {name} could not be closed cleanly (the disk did not answer); it plays up to its last synced second");
            }
        });
    }

    /// Opens a file at this key frame in the current place.
    async fn open(&mut self, unit: &AccessUnit) {
        let Some(place) = self.place.clone() else {
            return;
        };
        // The picture's wall-clock time: now, less how long ago it was taken on the media clock.
        let age = self.clock.now().saturating_sub(unit.pts);
        let start = wall_now() - age.as_secs_f64();
        let newest = self.stats.catalog().newest();
        let stamp = names::from_unix(start).unwrap_or_else(jiff::Timestamp::now);
        let name = names::media_name(names::next_start(stamp, newest));
        let (dir, name_owned, live, audio, total) = (
            place.dir.clone(),
            name.clone(),
            self.live,
            self.audio,
            self.stats.total.clone(),
        );
        let (base, budget) = (unit.pts, self.budget);
        let busy = self.busy(place.dest);
        let opened = off_task("rec-open", OPEN_DEADLINE, Some(&busy), move || {
            Segment::open(Opening {
                dir: &dir,
                name: &name_owned,
                start,
                live,
                base,
                audio,
                budget,
                total,
            })
        })
        .await;
        match opened {
            Off::Done(Ok(seg)) => {
                *lock(&self.stats.current) = Some(seg.shared.clone());
                self.stats.catalog().add(Item {
                    dest: place.dest,
                    dir: place.dir.clone(),
                    name: name.clone(),
                    start,
                    start_live: live,
                    changes: vec![],
                    end: None,
                    bytes: 0,
                    writing: true,
                });
                self.stats.update(|s| s.file = Some(name.clone()));
                self.stats.set_state("recording", None);
                let message = format!(
                    "recording: new file {name} on {} ({})",
                    place.dest.as_str(),
                    place.dir.display()
                );
                log::info!("{message}");
                self.recorder.record(Entry::Note { message });
                self.segment = Some(seg);
            }
            Off::Done(Err(e)) => self.fault(place.dest, e.to_string(), false).await,
            Off::Hung => {
                let why = format!(
                    "opening a file on {} took more than {} s",
                    place.dir.display(),
                    OPEN_DEADLINE.as_secs()
                );
                self.fault(place.dest, why, false).await;
            }
        }
    }

    async fn tick(&mut self) {
        let now = Instant::now();
        // The file being written: an error from its writer, or a write that hangs.
        let fault = self.segment.as_mut().and_then(|seg| {
            let stalled = seg.shared.stalled_for();
            if let Some((why, no_room)) = seg.shared.fault() {
                Some((why, no_room))
            } else if stalled >= STALL_AFTER {
                Some((
                    format!(
                        "the disk has held a write for {:.0} s",
                        stalled.as_secs_f64()
                    ),
                    false,
                ))
            } else {
                seg.bus_error().map(|e| (e, false))
            }
        });
        if let (Some((why, no_room)), Some(seg)) = (fault, &self.segment) {
            let dest = self.dest_of(seg);
            self.fault(dest, why, no_room).await;
        }
        if let Some(closing) = &self.closing
            && now >= closing.until
            && let Some(closing) = self.closing.take()
        {
            self.finish(closing.segment);
        }
        if let Some(seg) = &self.segment {
            let bytes = seg.shared.bytes.load(Ordering::Relaxed);
            self.stats.catalog().set_bytes(&seg.name, bytes);
        }
        if self
            .last_look
            .is_none_or(|at| now.duration_since(at) >= LOOK_EVERY)
        {
            self.rate
                .update(now, self.stats.total.load(Ordering::Relaxed));
            if self.cfg.to == RecordTo::Usb {
                self.look_for_usb().await;
            }
            self.choose_place().await;
            self.look().await;
        }
    }

    /// The USB disk: mounted when its label appears (unless it failed and was not unplugged
    /// since), given up when its label goes.
    async fn look_for_usb(&mut self) {
        let label = self.cfg.usb_label.clone();
        // A look in /dev (udev's links): never on a disk, so on the task.
        let device = disk::by_label(&label);
        if let Some(m) = &self.usb
            && device.as_ref() != Some(&m.device)
        {
            let why = format!("the USB disk {} was unplugged", self.cfg.usb_label);
            self.fault(Dest::Usb, why, false).await;
            return;
        }
        let usable = self.usb_gate.may_use(device.is_some());
        let (Some(device), true, None) = (device, usable, &self.usb) else {
            return;
        };
        let (dev, at) = (device.clone(), self.mount_at.clone());
        let usb_dir = self.mount_at.join(USB_DIR);
        let busy = self.busy(Dest::Usb);
        let mounted = off_task("rec-mount", MOUNT_DEADLINE, Some(&busy), move || {
            let fs = disk::mount(&dev, &at)?;
            std::fs::create_dir_all(&usb_dir).map_err(|source| disk::DiskError::MountPoint {
                at: usb_dir.clone(),
                source,
            })?;
            let items = catalog::scan(&usb_dir, Dest::Usb).unwrap_or_default();
            Ok::<_, disk::DiskError>((fs, items))
        })
        .await;
        match mounted {
            Off::Done(Ok((fs, items))) => {
                self.stats.catalog().replace(Dest::Usb, items);
                let message = format!(
                    "recording: USB disk {} ({}, {fs}) mounted on {}",
                    self.cfg.usb_label,
                    device.display(),
                    self.mount_at.display()
                );
                log::info!("{message}");
                self.recorder.record(Entry::Note { message });
                self.usb = Some(Mounted { device, fs });
            }
            Off::Done(Err(e)) => {
                self.usb_gate.failed();
                self.note_error(format!("USB disk {}: {e}", self.cfg.usb_label));
            }
            Off::Hung => {
                self.usb_gate.failed();
                self.note_error(format!(
                    "USB disk {}: mounting took more than {} s",
                    self.cfg.usb_label,
                    MOUNT_DEADLINE.as_secs()
                ));
            }
        }
    }

    /// A look at the free space where the lane records: the oldest go if needed, the writer's
    /// budget is renewed, and no room at all is a fault of that place.
    async fn look(&mut self) {
        let Some(place) = self.place.clone() else {
            return;
        };
        self.last_look = Some(Instant::now());
        let deletable = self.stats.catalog().deletable(place.dest);
        let min_free = self.cfg.min_free_mb << 20;
        let reserve = self.rate.reserve();
        let written_before = self.stats.total.load(Ordering::Relaxed);
        let dir = place.dir.clone();
        let busy = self.busy(place.dest);
        let look = off_task("rec-space", LOOK_DEADLINE, Some(&busy), move || {
            look_at_space(&dir, min_free, reserve, &deletable)
        })
        .await;
        let look = match look {
            Off::Done(Ok(look)) => look,
            Off::Done(Err(e)) => {
                let why = format!("cannot read the free space of {}: {e}", place.dir.display());
                return self.fault(place.dest, why, false).await;
            }
            Off::Hung => {
                let why = format!(
                    "{} did not say its free space within {} s",
                    place.dir.display(),
                    LOOK_DEADLINE.as_secs()
                );
                return self.fault(place.dest, why, false).await;
            }
        };
        for name in &look.deleted {
            self.stats.catalog().remove(name);
            let message = format!(
                "recording: deleted the oldest recording {name} to keep {} MiB free on {}",
                self.cfg.min_free_mb,
                place.dest.as_str()
            );
            log::info!("{message}");
            self.recorder.record(Entry::Note { message });
        }
        self.stats.update(|s| s.free_bytes = Some(look.free));
        // What was written while the look ran is already spent.
        let spent = self
            .stats
            .total
            .load(Ordering::Relaxed)
            .saturating_sub(written_before);
        self.budget = look.budget.saturating_sub(spent);
        if let Some(seg) = &self.segment
            && seg.dir == place.dir
        {
            seg.shared.set_budget(self.budget);
        }
        if !look.room {
            let why = format!(
                "{} is full: {} MiB free, record.min_free_mb is {}, and no older recording is left to delete",
                place.dir.display(),
                look.free >> 20,
                self.cfg.min_free_mb
            );
            self.fault(place.dest, why, true).await;
        }
    }

    /// A place failed: its files are let go, and the recording moves to the fallback or stops.
    async fn fault(&mut self, dest: Dest, why: String, no_room: bool) {
        let message = format!("recording: {} disk: {why}", dest.as_str());
        log::warn!("{message}");
        self.recorder.record(Entry::Error { message });
        self.stats.update(|s| s.last_error = Some(why.clone()));
        if let Some(seg) = self.segment.take() {
            if self.dest_of(&seg) == dest {
                *lock(&self.stats.current) = None;
                self.let_go(seg, no_room);
            } else {
                self.segment = Some(seg);
            }
        }
        if let Some(closing) = self.closing.take() {
            if self.dest_of(&closing.segment) == dest {
                self.let_go(closing.segment, no_room);
            } else {
                self.closing = Some(closing);
            }
        }
        match dest {
            Dest::Usb => {
                self.usb_gate.failed();
                if self.usb.take().is_some() {
                    let at = self.mount_at.clone();
                    // Lazy: a write stuck on the disk keeps its file, not the mount.
                    let _ = off_task("rec-umount", LOOK_DEADLINE, None, move || {
                        disk::unmount(&at)
                    })
                    .await;
                    self.stats.catalog().forget(Dest::Usb);
                }
            }
            Dest::Data => self.data_retry_at = Some(Instant::now() + rules::RETRY_AFTER),
        }
        self.need_key = true;
        self.place = None;
        self.stats.update(|s| {
            s.location = None;
            s.file = None;
        });
        Box::pin(self.choose_place()).await;
        if self.place.is_none() {
            self.stats.set_state("stopped", Some(why));
        } else if self.segment.is_none() {
            self.stats
                .set_state("waiting", Some(format!("moved after: {why}")));
        }
    }

    /// The flag of `dest`'s disk: an operation on it is under way (or stuck).
    fn busy(&self, dest: Dest) -> Arc<AtomicBool> {
        match dest {
            Dest::Usb => self.usb_busy.clone(),
            Dest::Data => self.data_busy.clone(),
        }
    }

    fn dest_of(&self, seg: &Segment) -> Dest {
        if seg.dir.starts_with(&self.mount_at) {
            Dest::Usb
        } else {
            Dest::Data
        }
    }

    /// A file on a failed disk: closed if the disk still answers, else abandoned to a thread
    /// of its own (which waits as long as the disk does).
    fn let_go(&mut self, seg: Segment, no_room: bool) {
        let name = seg.name.clone();
        self.stats.catalog().close(&name, wall_now());
        if no_room {
            // The disk answers; the end line and last sync still fit in what min_free keeps.
            seg.shared.set_budget(u64::MAX);
            self.finish(seg);
        } else {
            seg.abandon();
        }
    }

    fn note_error(&self, why: String) {
        log::warn!("recording: {why}");
        self.recorder.record(Entry::Error {
            message: format!("recording: {why}"),
        });
        self.stats.update(|s| s.last_error = Some(why));
    }

    /// The daemon stops: the files are closed (a hung disk is given up on), the USB disk
    /// unmounted.
    async fn end(mut self) {
        if let Some(closing) = self.closing.take() {
            self.finish(closing.segment);
        }
        if let Some(seg) = self.segment.take() {
            self.finish(seg);
        }
        let finishing = std::mem::take(&mut self.finishing);
        let _ = tokio::time::timeout(FINISH_BUDGET * 2, finishing.join_all()).await;
        if let Some(m) = self.usb.take() {
            let at = self.mount_at.clone();
            let _ = off_task("rec-umount", LOOK_DEADLINE, None, move || {
                disk::unmount(&at)
            })
            .await;
            log::info!(
                "recording: USB disk {} ({}) unmounted",
                self.cfg.usb_label,
                m.fs
            );
        }
        *lock(&self.stats.current) = None;
        self.stats
            .set_state("stopped", Some("the daemon stopped".into()));
    }
}
