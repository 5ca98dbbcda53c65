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
use crate::media::{AccessUnit, Door, KeyframeRequester, KeyframeSync};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
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
        let mut flowing = false;
        let mut backlog_drops = 0u64;
        let mut write_errors = 0u64;
        loop {
            let unit = tokio::select! {
                _ = stop.cancelled() => return,
                u = tap.recv() => match u { Some(u) => u, None => return },
            };
            self.counters.offered.fetch_add(1, Ordering::Relaxed);
            if !sync.admit(&unit, Instant::now()) {
                continue;
            }
            if writer.backed_up() {
                backlog_drops += 1;
                if backlog_drops == 1 {
                    log::debug!("output: transport backed up; dropping to a key frame");
                }
                sync.resync(Instant::now());
                continue;
            }
            match writer.write(unit).await {
                Ok(delivery) => {
                    self.stats.frame_sent();
                    if delivery == Delivery::OnTheWire && !flowing {
                        flowing = true;
                        self.events.send(ConnectionEvent::MediaFlowing);
                    }
                }
                Err(e) => {
                    // Writes fail while the transport is going down; the liveness probe
                    // reports that, so one log line is enough.
                    write_errors += 1;
                    if write_errors == 1 {
                        log::debug!("output: write failed: {e}");
                    }
                }
            }
        }
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
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        let report = probe.report(now);
        adaptation.observe(&mut session, now, report);
    }
    adaptation.end(&session, Instant::now());
}
