//! What every connection does the same way, whatever the protocol: take access units from the
//! door, start at a key frame (and resync at the next one after any gap), hand them to the
//! output's writer; and watch the connection for death, reporting it once.
//!
//! An output supplies only what differs: a [`UnitWriter`] (how a unit goes on the wire, and
//! whether the transport is backed up), a [`LivenessProbe`] (which transport events mean
//! death, and what to check periodically) and a [`CapacityProbe`] (what the connection knows
//! about its path, for the bitrate adaptation). New per-connection concerns — a second
//! stream — belong here, once, not in each output.

use super::adapt::{Adaptation, PathReport};
use super::{Attempt, ConnectionEvent, EventSender, OutputStats};
use crate::media::audio::AudioUnit;
use crate::media::{AccessUnit, Door, KeyframeRequester, KeyframeSync};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Per-connection tuning shared by the outputs. Fixed in code; the defaults are the documented
/// values.
#[derive(Debug, Clone, PartialEq)]
pub struct PumpSettings {
    /// Access units a connection's tap may hold while its writer catches up (about a second).
    /// Default 32.
    pub tap_capacity: usize,
    /// A new connection that has seen no key frame this long asks again. Default 1 s.
    pub keyframe_nudge: Duration,
    /// How often the liveness checks run. Default 100 ms.
    pub live_poll: Duration,
    /// How often the path's estimate is read and the encoder's target reconsidered. Default
    /// 200 ms.
    pub adapt_poll: Duration,
}

impl Default for PumpSettings {
    fn default() -> Self {
        PumpSettings {
            tap_capacity: 32,
            keyframe_nudge: Duration::from_millis(1000),
            live_poll: Duration::from_millis(100),
            adapt_poll: Duration::from_millis(200),
        }
    }
}

/// Where a written unit is once `write` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Sent to the server: the first one means media flows.
    OnTheWire,
    /// Queued inside the output; the output reports `MediaFlowing` itself when it leaves.
    Queued,
}

/// How an output puts one access unit on its transport.
#[async_trait::async_trait]
pub trait UnitWriter: Send + 'static {
    /// The transport is not keeping up: the unit is dropped here and the stream resyncs at the
    /// next key frame, so memory stays bounded while a socket is stuck.
    fn backed_up(&self) -> bool {
        false
    }

    /// Writes one unit. An error is logged once per connection; the liveness probe reports
    /// why the transport failed.
    async fn write(&mut self, unit: AccessUnit) -> Result<Delivery, String>;

    /// Writes one audio frame. Sound reaches it only once the pictures have started (at a
    /// key frame), and none from before the first picture: both tracks start together.
    /// Outputs without audio drop it.
    async fn write_audio(&mut self, unit: AudioUnit) -> Result<(), String> {
        let _ = unit;
        Ok(())
    }

    /// `Some(delay)`: send every unit, picture or sound, `delay` after its media time (taking
    /// the connection's first picture as the reference), so both tracks leave in step whatever
    /// each path's latency. WHIP needs it: the RTCP sender reports tie each track's RTP clock
    /// to the moment its packets are sent. `None` (the default): send as units come.
    fn pacing(&self) -> Option<Duration> {
        None
    }
}

/// A unit waiting for its moment (paced outputs only).
enum Waiting {
    Video(AccessUnit),
    Audio(AudioUnit),
}

/// When each unit is due on a paced connection: the first picture's media time and arrival
/// are the reference, every unit leaves `delay` after its media time on that reference.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    reference: Option<(Duration, Instant)>,
    delay: Duration,
}

impl Pacer {
    pub fn new(delay: Duration) -> Pacer {
        Pacer {
            reference: None,
            delay,
        }
    }

    /// Sets the reference from the first picture of the connection.
    pub fn start(&mut self, pts: Duration, now: Instant) {
        self.reference.get_or_insert((pts, now));
    }

    /// When a unit of media time `pts` is due; `None` before the first picture, or for sound
    /// from before it (dropped: both tracks start together).
    pub fn due(&self, pts: Duration) -> Option<Instant> {
        let (ref_pts, ref_at) = self.reference?;
        Some(ref_at + pts.checked_sub(ref_pts)? + self.delay)
    }
}

/// What the pump counts, for the liveness probe.
#[derive(Default)]
pub struct PumpCounters {
    /// Access units the door handed to this connection (written or dropped).
    offered: AtomicU64,
}

impl PumpCounters {
    pub fn offered(&self) -> u64 {
        self.offered.load(Ordering::Relaxed)
    }
}

/// Starts the task that feeds `writer` from the door until `stop`.
pub fn spawn_pump<W: UnitWriter>(
    writer: W,
    attempt: &Attempt,
    settings: &PumpSettings,
    stop: CancellationToken,
) -> (JoinHandle<()>, Arc<PumpCounters>) {
    let counters = Arc::new(PumpCounters::default());
    let pump = Pump {
        door: attempt.door.clone(),
        keyframes: attempt.keyframes.clone(),
        events: attempt.events.clone(),
        stats: attempt.stats.clone(),
        counters: counters.clone(),
        settings: settings.clone(),
    };
    (tokio::spawn(pump.run(writer, stop)), counters)
}

struct Pump {
    door: Door,
    keyframes: KeyframeRequester,
    events: EventSender,
    stats: Arc<OutputStats>,
    counters: Arc<PumpCounters>,
    settings: PumpSettings,
}

impl Pump {
    async fn run<W: UnitWriter>(self, mut writer: W, stop: CancellationToken) {
        let mut tap = self.door.open(self.settings.tap_capacity);
        let mut sync = KeyframeSync::new(
            self.keyframes.clone(),
            self.settings.keyframe_nudge,
            Instant::now(),
        );
        let mut state = PumpState {
            flowing: false,
            backlog_drops: 0,
            write_errors: 0,
            started: None,
        };
        let mut pacer = writer.pacing().map(Pacer::new);
        let mut waiting: VecDeque<(Instant, Waiting)> = VecDeque::new();
        let (video_lane, audio_lane) = tap.lanes();
        loop {
            let next_due = waiting.front().map(|(at, _)| *at);
            tokio::select! {
                _ = stop.cancelled() => return,
                u = video_lane.recv() => {
                    let Some(unit) = u else { return };
                    self.counters.offered.fetch_add(1, Ordering::Relaxed);
                    if !sync.admit(&unit, Instant::now()) {
                        continue;
                    }
                    if writer.backed_up() {
                        state.backlog_drops += 1;
                        if state.backlog_drops == 1 {
                            log::debug!("output: transport backed up; dropping to a key frame");
                        }
                        sync.resync(Instant::now());
                        continue;
                    }
                    state.started.get_or_insert(unit.pts);
                    match pacer.as_mut() {
                        Some(p) => {
                            p.start(unit.pts, Instant::now());
                            let due = p.due(unit.pts).unwrap_or_else(Instant::now);
                            insert(&mut waiting, due, Waiting::Video(unit));
                        }
                        None => self.video(&mut writer, unit, &mut state).await,
                    }
                }
                a = audio_lane.recv() => {
                    let Some(unit) = a else { return };
                    // Nothing before the first picture: both tracks start together.
                    let Some(first) = state.started else { continue };
                    if unit.pts < first {
                        continue;
                    }
                    match pacer.as_ref() {
                        Some(p) => {
                            if let Some(due) = p.due(unit.pts) {
                                insert(&mut waiting, due, Waiting::Audio(unit));
                            }
                        }
                        None => self.audio(&mut writer, unit, &mut state).await,
                    }
                }
                _ = sleep_until(next_due) => {
                    let now = Instant::now();
                    while waiting.front().is_some_and(|(at, _)| *at <= now) {
                        match waiting.pop_front().map(|(_, w)| w) {
                            Some(Waiting::Video(u)) => self.video(&mut writer, u, &mut state).await,
                            Some(Waiting::Audio(u)) => self.audio(&mut writer, u, &mut state).await,
                            None => break,
                        }
                    }
                }
            }
        }
    }

    async fn video<W: UnitWriter>(&self, writer: &mut W, unit: AccessUnit, state: &mut PumpState) {
        match writer.write(unit).await {
            Ok(delivery) => {
                self.stats.frame_sent();
                if delivery == Delivery::OnTheWire && !state.flowing {
                    state.flowing = true;
                    self.events.send(ConnectionEvent::MediaFlowing);
                }
            }
            Err(e) => {
                // Writes fail while the transport is going down; the liveness probe
                // reports that, so one log line is enough.
                state.write_errors += 1;
                if state.write_errors == 1 {
                    log::debug!("output: write failed: {e}");
                }
            }
        }
    }

    async fn audio<W: UnitWriter>(&self, writer: &mut W, unit: AudioUnit, state: &mut PumpState) {
        match writer.write_audio(unit).await {
            Ok(()) => self.stats.audio_frame_sent(),
            Err(e) => {
                state.write_errors += 1;
                if state.write_errors == 1 {
                    log::debug!("output: audio write failed: {e}");
                }
            }
        }
    }
}

struct PumpState {
    flowing: bool,
    backlog_drops: u64,
    write_errors: u64,
    /// Media time of the connection's first picture.
    started: Option<Duration>,
}

/// Keeps the waiting units in due order (each track's are in order already; they interleave).
fn insert(waiting: &mut VecDeque<(Instant, Waiting)>, due: Instant, unit: Waiting) {
    let at = waiting.partition_point(|(d, _)| *d <= due);
    waiting.insert(at, (due, unit));
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How an output tells that its connection died.
#[async_trait::async_trait]
pub trait LivenessProbe: Send + 'static {
    /// Waits for the transport's next event (peer state, bus message); `Some(reason)` when it
    /// means the connection is dead.
    async fn next_event(&mut self) -> Option<String>;

    /// Runs every `live_poll`; `Some(reason)` when the connection is dead (no sign of life
    /// from the server for `dead_after`, a closed transport).
    async fn check(&mut self, now: Instant, dead_after: Duration) -> Option<String>;
}

/// Starts the task that watches a connection and reports it lost, once. It runs until `stop`
/// and hands the probe back (an output may need what it holds for a polite close).
pub fn spawn_liveness<P: LivenessProbe>(
    probe: P,
    attempt: &Attempt,
    settings: &PumpSettings,
    stop: CancellationToken,
) -> JoinHandle<P> {
    tokio::spawn(watch_liveness(
        probe,
        attempt.dead_after.clone(),
        settings.live_poll,
        attempt.events.clone(),
        stop,
    ))
}

async fn watch_liveness<P: LivenessProbe>(
    mut probe: P,
    dead_after: watch::Receiver<Duration>,
    poll: Duration,
    events: EventSender,
    stop: CancellationToken,
) -> P {
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported = false;
    loop {
        let dead = tokio::select! {
            _ = stop.cancelled() => return probe,
            reason = probe.next_event(), if !reported => reason,
            _ = tick.tick(), if !reported => {
                let dead_after = *dead_after.borrow();
                probe.check(Instant::now(), dead_after).await
            }
        };
        if let Some(reason) = dead {
            reported = true;
            events.send(ConnectionEvent::Lost(reason));
        }
    }
}

/// How an output tells what its path carries.
pub trait CapacityProbe: Send + 'static {
    /// What the connection knows about its path at `now`.
    fn report(&mut self, now: Instant) -> PathReport;

    /// Woken when the path has news that should not wait for the next poll (a cut).
    fn urgent(&self) -> Option<Arc<Notify>> {
        None
    }
}

/// Starts the task that adapts the encoder's bitrate to what this connection's path carries,
/// until `stop`. The encoder is set to the connection's starting target before this returns,
/// so the first key frame is already encoded at it.
pub fn spawn_adaptation<P: CapacityProbe>(
    probe: P,
    attempt: &Attempt,
    settings: &PumpSettings,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let adaptation = attempt.adaptation.clone();
    let session = adaptation.begin(attempt.local_address, Instant::now());
    tokio::spawn(adapt_loop(
        probe,
        adaptation,
        session,
        settings.adapt_poll,
        stop,
    ))
}

async fn adapt_loop<P: CapacityProbe>(
    mut probe: P,
    adaptation: Arc<Adaptation>,
    mut session: super::adapt::Session,
    poll: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let urgent = probe.urgent().unwrap_or_default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
            _ = urgent.notified() => {}
        }
        let now = Instant::now();
        let report = probe.report(now);
        adaptation.observe(&mut session, now, report);
    }
    adaptation.end(&session, Instant::now());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paced_units_leave_a_fixed_delay_after_their_media_time() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Duration::from_millis(120));
        assert_eq!(
            p.due(Duration::from_secs(5)),
            None,
            "nothing before the first picture"
        );
        // The first picture (media time 5 s) arrives at t0.
        p.start(Duration::from_secs(5), t0);
        p.start(Duration::from_secs(6), t0 + Duration::from_secs(1));
        assert_eq!(
            p.due(Duration::from_secs(5)),
            Some(t0 + Duration::from_millis(120))
        );
        // Sound stamped 40 ms later leaves 40 ms later, however late it arrived.
        assert_eq!(
            p.due(Duration::from_millis(5040)),
            Some(t0 + Duration::from_millis(160))
        );
        assert_eq!(
            p.due(Duration::from_millis(4990)),
            None,
            "sound from before the start"
        );
    }
}
