//! Status LEDs: two lights that tell a person across the room what the box is doing.
//!
//! One task owns the LEDs. It follows the supervisor's state through a watch channel, turns
//! the state into patterns (`pattern`, pure) and drives whichever backend the config names.
//! LEDs are a courtesy, never a reason to stop streaming: a backend that cannot open logs one
//! warning and the task ends; a write that fails later is logged once and the task carries on.

mod console;
mod gpio;
pub mod pattern;
mod sysfs;

pub use console::ConsoleLeds;
pub use gpio::GpioLeds;
pub use pattern::{Led, LedPair, Pattern, markdown_table, patterns, patterns_with_fault};
pub use sysfs::SysfsLeds;

use crate::config::{LedBackendKind, LedConfig};
use crate::supervisor::StreamState;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Why a backend could not open or write, in words a person can act on.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LedError(pub String);

/// Something that can light two LEDs. Calls are synchronous because every backend is a
/// register write or a tiny sysfs write that the kernel completes at once.
pub trait LedBackend: Send {
    /// Short name for log lines ("gpio", "sysfs", ...).
    fn name(&self) -> &'static str;

    /// Claims the hardware. Called once before any `set`; an error means "no LEDs on this box".
    fn open(&mut self) -> Result<(), LedError>;

    /// Lights or darkens one LED. Only called when the level actually changes.
    fn set(&mut self, led: Led, on: bool) -> Result<(), LedError>;

    /// Told once per change of what is shown (not per blink), for backends that describe
    /// rather than drive, like the console. `reason` is e.g. "state live" or "exiting".
    fn announce(&mut self, _pair: LedPair, _reason: &str) -> Result<(), LedError> {
        Ok(())
    }

    /// Gives the hardware back as it was found (restores kernel triggers, releases pins).
    /// The renderer has already turned both LEDs off.
    fn close(&mut self) -> Result<(), LedError>;
}

/// The backend the config asks for; `None` for `backend: none`.
pub fn backend_for(config: &LedConfig) -> Option<Box<dyn LedBackend>> {
    match config.backend {
        LedBackendKind::Gpio => Some(Box::new(GpioLeds::new(
            config.live_pin,
            config.status_pin,
            config.active_low,
        ))),
        LedBackendKind::Sysfs => Some(Box::new(SysfsLeds::new(
            &config.sysfs_dir,
            &config.live_name,
            &config.status_name,
        ))),
        LedBackendKind::Console => Some(Box::new(ConsoleLeds::stdout())),
        LedBackendKind::None => None,
    }
}

/// The daemon's entry point: shows `states` on the configured LEDs until `shutdown` is
/// cancelled or the state sender is dropped, then turns both LEDs off and gives the hardware
/// back. `fault` names a standing fault to show beside the state (see
/// [`patterns_with_fault`]). Returns at once (after one warning) if the LEDs cannot be opened,
/// so the caller's state sender must not treat "no receivers" as an error.
pub async fn run(
    config: LedConfig,
    states: watch::Receiver<StreamState>,
    fault: Option<&'static str>,
    shutdown: CancellationToken,
) {
    let Some(backend) = backend_for(&config) else {
        log::debug!("leds: backend none, not showing state on LEDs");
        return;
    };
    let _ = Renderer::new(backend)
        .with_fault(fault)
        .run(states, shutdown)
        .await;
}

/// Drives any backend (tests pass a recording one). Same contract as [`run`], no fault.
pub async fn render(
    backend: Box<dyn LedBackend>,
    states: watch::Receiver<StreamState>,
    shutdown: CancellationToken,
) {
    let _ = Renderer::new(backend).run(states, shutdown).await;
}

/// Warnings the renderer has logged. Kept so tests can check that a person reading the log
/// sees one line per problem, not one per blink.
#[derive(Debug, Default)]
struct Warnings(Vec<String>);

impl Warnings {
    fn warn(&mut self, message: String) {
        log::warn!("{message}");
        self.0.push(message);
    }
}

struct Renderer {
    backend: Box<dyn LedBackend>,
    /// Last level written per LED (`None` before the first write), so only edges reach the
    /// hardware.
    shown: [Option<bool>; 2],
    write_failed: bool,
    warnings: Warnings,
    /// A standing fault shown beside the state, and what it is.
    fault: Option<&'static str>,
}

impl Renderer {
    fn new(backend: Box<dyn LedBackend>) -> Self {
        Renderer {
            backend,
            shown: [None, None],
            write_failed: false,
            warnings: Warnings::default(),
            fault: None,
        }
    }

    fn with_fault(mut self, fault: Option<&'static str>) -> Self {
        self.fault = fault;
        self
    }

    fn pair(&self, state: StreamState) -> LedPair {
        patterns_with_fault(state, self.fault.is_some())
    }

    fn reason(&self, state: StreamState) -> String {
        match self.fault {
            Some(fault) => format!("state {state}, {fault}"),
            None => format!("state {state}"),
        }
    }

    async fn run(
        mut self,
        mut states: watch::Receiver<StreamState>,
        shutdown: CancellationToken,
    ) -> Warnings {
        if let Err(e) = self.backend.open() {
            self.warnings.warn(format!(
                "leds: {} backend unavailable, streaming without LEDs: {e}",
                self.backend.name()
            ));
            return self.warnings;
        }
        log::info!("leds: {} backend open", self.backend.name());

        let mut state = *states.borrow_and_update();
        let mut pair = self.pair(state);
        // The pattern clock restarts on every change of pattern so a new blink starts with
        // its on phase immediately: the change is visible at once, not after an off phase.
        let mut since = Instant::now();
        self.announce(pair, &self.reason(state));

        loop {
            let elapsed = Instant::now().saturating_duration_since(since);
            for led in Led::ALL {
                self.show(led, pair.get(led).level_at(elapsed));
            }
            let next_edge = pair.next_change(elapsed).map(|t| since + t);
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                changed = states.changed() => {
                    if changed.is_err() {
                        log::debug!("leds: state sender gone, turning LEDs off");
                        break;
                    }
                    let new_state = *states.borrow_and_update();
                    if new_state == state {
                        continue;
                    }
                    state = new_state;
                    let new_pair = self.pair(state);
                    if new_pair != pair {
                        pair = new_pair;
                        since = Instant::now();
                    }
                    // connecting -> reconnecting keeps its rhythm but still says why.
                    self.announce(pair, &self.reason(state));
                }
                () = sleep_until_edge(next_edge) => {}
            }
        }

        for led in Led::ALL {
            self.show(led, false);
        }
        self.announce(LedPair::DARK, "exiting");
        if let Err(e) = self.backend.close() {
            self.warnings.warn(format!(
                "leds: {} backend did not close cleanly: {e}",
                self.backend.name()
            ));
        }
        self.warnings
    }

    fn show(&mut self, led: Led, on: bool) {
        let slot = &mut self.shown[led as usize];
        if *slot == Some(on) {
            return;
        }
        match self.backend.set(led, on) {
            // Only a write that landed counts as shown, so a transient failure is retried at
            // the next edge or state change.
            Ok(()) => *slot = Some(on),
            Err(e) => self.write_failed(e),
        }
    }

    fn announce(&mut self, pair: LedPair, reason: &str) {
        if let Err(e) = self.backend.announce(pair, reason) {
            self.write_failed(e);
        }
    }

    fn write_failed(&mut self, e: LedError) {
        if !self.write_failed {
            self.write_failed = true;
            self.warnings.warn(format!(
                "leds: {} write failed, LEDs may be wrong (further LED errors not logged): {e}",
                self.backend.name()
            ));
        }
    }
}

async fn sleep_until_edge(edge: Option<Instant>) {
    match edge {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// What a person would have seen: every level change with its time since the test began.
    #[derive(Debug, Clone, Default)]
    struct Log {
        edges: Vec<(Duration, Led, bool)>,
        announced: Vec<String>,
        opened: bool,
        closed: bool,
    }

    struct Recorder {
        log: Arc<Mutex<Log>>,
        t0: Instant,
        fail_open: bool,
        fail_writes: bool,
    }

    impl Recorder {
        fn new() -> (Self, Arc<Mutex<Log>>) {
            let log = Arc::new(Mutex::new(Log::default()));
            let recorder = Recorder {
                log: log.clone(),
                t0: Instant::now(),
                fail_open: false,
                fail_writes: false,
            };
            (recorder, log)
        }
    }

    impl LedBackend for Recorder {
        fn name(&self) -> &'static str {
            "recorder"
        }
        fn open(&mut self) -> Result<(), LedError> {
            if self.fail_open {
                return Err(LedError("no such LEDs".into()));
            }
            self.log.lock().unwrap().opened = true;
            Ok(())
        }
        fn set(&mut self, led: Led, on: bool) -> Result<(), LedError> {
            self.log
                .lock()
                .unwrap()
                .edges
                .push((self.t0.elapsed(), led, on));
            if self.fail_writes {
                return Err(LedError("write refused".into()));
            }
            Ok(())
        }
        fn announce(&mut self, pair: LedPair, reason: &str) -> Result<(), LedError> {
            self.log.lock().unwrap().announced.push(format!(
                "live={} status={} ({reason})",
                pair.live, pair.status
            ));
            Ok(())
        }
        fn close(&mut self) -> Result<(), LedError> {
            self.log.lock().unwrap().closed = true;
            Ok(())
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Edges of one LED as (milliseconds, level).
    fn edges_of(log: &Log, led: Led) -> Vec<(u128, bool)> {
        log.edges
            .iter()
            .filter(|(_, l, _)| *l == led)
            .map(|(t, _, on)| (t.as_millis(), *on))
            .collect()
    }

    struct Harness {
        tx: watch::Sender<StreamState>,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<Warnings>,
        log: Arc<Mutex<Log>>,
    }

    fn start(state: StreamState, configure: impl FnOnce(&mut Recorder)) -> Harness {
        let (mut recorder, log) = Recorder::new();
        configure(&mut recorder);
        let (tx, rx) = watch::channel(state);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(Renderer::new(Box::new(recorder)).run(rx, shutdown.clone()));
        Harness {
            tx,
            shutdown,
            task,
            log,
        }
    }

    impl Harness {
        async fn stop(self) -> (Log, Warnings) {
            self.shutdown.cancel();
            let warnings = self.task.await.expect("renderer task panicked");
            let log = self.log.lock().unwrap().clone();
            (log, warnings)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_standing_fault_flashes_red_while_live() {
        let (recorder, log) = Recorder::new();
        let (_tx, rx) = watch::channel(StreamState::Live);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(
            Renderer::new(Box::new(recorder))
                .with_fault(Some("data partition unusable"))
                .run(rx, shutdown.clone()),
        );
        tokio::time::sleep(ms(4100)).await;
        shutdown.cancel();
        task.await.expect("renderer");
        let log = log.lock().unwrap().clone();
        assert_eq!(edges_of(&log, Led::Live)[0], (0, true), "green: on air");
        let red: Vec<_> = edges_of(&log, Led::Status)
            .into_iter()
            .take_while(|(t, _)| *t <= 4000)
            .collect();
        assert_eq!(
            red,
            vec![
                (0, true),
                (150, false),
                (2000, true),
                (2150, false),
                (4000, true)
            ]
        );
        assert_eq!(
            log.announced[0],
            "live=on status=flash every 2 s (state live, data partition unusable)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn two_hz_blink_edges_at_the_right_instants() {
        let h = start(StreamState::Connecting, |_| {});
        tokio::time::sleep(ms(1100)).await;
        let (log, warnings) = h.stop().await;
        assert_eq!(
            edges_of(&log, Led::Status),
            [
                (0, true),
                (250, false),
                (500, true),
                (750, false),
                (1000, true),
                // shutdown at 1100 ms: dark on exit
                (1100, false),
            ]
        );
        assert_eq!(edges_of(&log, Led::Live), [(0, false)]);
        assert!(log.opened && log.closed);
        assert!(warnings.0.is_empty(), "{:?}", warnings.0);
    }

    #[tokio::test(start_paused = true)]
    async fn double_blink_edges_at_the_right_instants() {
        let h = start(StreamState::Offline, |_| {});
        tokio::time::sleep(ms(4100)).await;
        let (log, _) = h.stop().await;
        // On at once, the pattern's timeline, off when the driver stops at 4.1 s.
        let mut expected = vec![(0, true)];
        expected.extend(crate::leds::pattern::tests::DOUBLE_BLINK_EDGES_MS);
        expected.push((4100, false));
        assert_eq!(edges_of(&log, Led::Status), expected);
        assert_eq!(edges_of(&log, Led::Live), [(0, false)]);
    }

    #[tokio::test(start_paused = true)]
    async fn state_change_switches_pattern_within_100ms() {
        let h = start(StreamState::Connecting, |_| {});
        // Mid off-phase of the 2 Hz blink, so a renderer waiting for its next edge would be late.
        tokio::time::sleep(ms(300)).await;
        h.tx.send(StreamState::Live).unwrap();
        tokio::time::sleep(ms(100)).await;
        let snapshot = h.log.lock().unwrap().clone();
        let live = edges_of(&snapshot, Led::Live);
        let (t, on) = *live.last().expect("live LED never written");
        assert!(on, "live LED should be on after going live: {live:?}");
        assert!(
            (300..=400).contains(&t),
            "live LED lit at {t} ms, state changed at 300 ms"
        );
        // Status was off (blink off phase) and stays off: no stray edges after the change.
        let status_after: Vec<_> = edges_of(&snapshot, Led::Status)
            .into_iter()
            .filter(|(t, _)| *t >= 300)
            .collect();
        assert!(status_after.is_empty(), "{status_after:?}");

        // Going to a blink starts with its on phase at once, not wherever its cycle would
        // have been had it started earlier (t = 1000 is mid-pause of a double-blink).
        tokio::time::sleep(ms(600)).await; // t = 1000
        h.tx.send(StreamState::Offline).unwrap();
        tokio::time::sleep(ms(300)).await;
        let (log, _) = h.stop().await;
        let status: Vec<_> = edges_of(&log, Led::Status)
            .into_iter()
            .filter(|(t, _)| *t >= 1000)
            .collect();
        assert_eq!(status, [(1000, true), (1200, false)]);
        assert!(edges_of(&log, Led::Live).contains(&(1000, false)));
    }

    #[tokio::test(start_paused = true)]
    async fn same_pattern_keeps_rhythm_but_is_announced() {
        let h = start(StreamState::Connecting, |_| {});
        tokio::time::sleep(ms(600)).await;
        h.tx.send(StreamState::Reconnecting).unwrap();
        tokio::time::sleep(ms(300)).await;
        let (log, _) = h.stop().await;
        // No restart at 600: the edges stay on the 250 ms grid.
        assert_eq!(
            edges_of(&log, Led::Status),
            [(0, true), (250, false), (500, true), (750, false)]
        );
        assert_eq!(
            log.announced,
            [
                "live=off status=blink 2 Hz (state connecting)",
                "live=off status=blink 2 Hz (state reconnecting)",
                "live=off status=off (exiting)",
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn sender_dropped_turns_leds_off_and_returns() {
        let h = start(StreamState::Live, |_| {});
        tokio::time::sleep(ms(50)).await;
        drop(h.tx);
        let warnings = tokio::time::timeout(ms(100), h.task)
            .await
            .expect("renderer kept running after its state sender was dropped")
            .expect("renderer task panicked");
        let log = h.log.lock().unwrap().clone();
        assert_eq!(edges_of(&log, Led::Live), [(0, true), (50, false)]);
        assert!(log.closed);
        assert!(warnings.0.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn failed_open_warns_once_and_returns_without_touching_leds() {
        let h = start(StreamState::Live, |r| r.fail_open = true);
        let warnings = tokio::time::timeout(ms(10), h.task)
            .await
            .expect("renderer should give up at once when its backend cannot open")
            .expect("renderer task panicked");
        let log = h.log.lock().unwrap().clone();
        assert!(log.edges.is_empty());
        assert_eq!(warnings.0.len(), 1, "{:?}", warnings.0);
        assert!(
            warnings.0[0].contains("streaming without LEDs") && warnings.0[0].contains("no such"),
            "{}",
            warnings.0[0]
        );
        // The daemon's sender may still be alive; it must not be needed.
        drop(h.tx);
    }

    #[tokio::test(start_paused = true)]
    async fn failing_writes_are_logged_once_and_blinking_goes_on() {
        let h = start(StreamState::Connecting, |r| r.fail_writes = true);
        tokio::time::sleep(ms(2000)).await;
        let (log, warnings) = h.stop().await;
        // The renderer keeps trying on every edge (a flaky LED recovers)...
        let attempts = edges_of(&log, Led::Status);
        assert!(attempts.len() >= 8, "{attempts:?}");
        // ...but a person reading the log sees the problem once.
        assert_eq!(warnings.0.len(), 1, "{:?}", warnings.0);
        assert!(warnings.0[0].contains("write refused"));
    }

    #[tokio::test(start_paused = true)]
    async fn every_state_renders_its_table_row() {
        // What each state looks like through the renderer at t = 0 and t = 300 ms.
        for state in StreamState::ALL {
            let h = start(state, |_| {});
            tokio::time::sleep(ms(300)).await;
            let (log, _) = h.stop().await;
            let level_at = |led: Led, t: u128| {
                edges_of(&log, led)
                    .into_iter()
                    .rev()
                    .find(|(at, _)| *at <= t)
                    .map(|(_, on)| on)
            };
            for led in Led::ALL {
                let p = patterns(state).get(led);
                assert_eq!(level_at(led, 0), Some(p.level_at(ms(0))), "{state} {led}");
                assert_eq!(
                    level_at(led, 299),
                    Some(p.level_at(ms(299))),
                    "{state} {led}"
                );
            }
        }
    }

    #[tokio::test]
    async fn gpio_backend_off_a_pi_returns_promptly() {
        if rppal::gpio::Gpio::new().is_ok() {
            eprintln!("skipped: this machine has Raspberry Pi GPIO; the test needs it absent");
            return;
        }
        let config = LedConfig {
            backend: LedBackendKind::Gpio,
            ..LedConfig::default()
        };
        let (tx, rx) = watch::channel(StreamState::Live);
        let shutdown = CancellationToken::new();
        // Neither cancelled nor dropped: only the failed open may end the task.
        tokio::time::timeout(
            Duration::from_secs(2),
            run(config, rx, None, shutdown.clone()),
        )
        .await
        .expect("run with an unusable gpio backend must return by itself");
        assert!(!shutdown.is_cancelled());
        drop(tx);
    }

    #[tokio::test]
    async fn backend_none_returns_at_once() {
        let (_tx, rx) = watch::channel(StreamState::Live);
        tokio::time::timeout(
            Duration::from_secs(1),
            run(LedConfig::default(), rx, None, CancellationToken::new()),
        )
        .await
        .expect("backend none should not wait for shutdown");
    }
}
