//! What systemd hears from the daemon (`Type=notify`, `WatchdogSec=` in `onair.service`):
//! `READY=1` when the supervisor's loop starts, `WATCHDOG=1` while it keeps turning,
//! `STATUS=<state>` when the stream state changes, `STOPPING=1` on the way out.
//!
//! `Restart=always` brings back a daemon that dies; a daemon that hangs (a blocked runtime, a
//! GStreamer state change that never returns) stays "running" and the box stays dark. With the
//! service watchdog systemd kills and restarts a daemon that stops pinging. The pings come from
//! the supervisor's own loop (`Driver::run` selects on [`Heartbeat::due`]), never from a timer
//! task of their own, so they stop exactly when that loop stops: a separate task would go on
//! pinging for a daemon whose supervisor is stuck.
//!
//! Off systemd (no `NOTIFY_SOCKET`: tests, a developer's shell) nothing is sent, and without
//! `WATCHDOG_USEC` no ping is ever due.
//!
//! Test hook: with `ONAIR_TEST_HOOKS=1` in the daemon's environment, SIGUSR2 stops the
//! supervisor's loop for good, so a test can show systemd restarting a hung daemon. Nothing on
//! the box sets that variable; without it SIGUSR2 is logged and ignored.

use super::state::StreamState;
use std::time::Duration;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::time::{Interval, MissedTickBehavior};

/// The environment variable that arms the test hook; only this exact value does.
pub const TEST_HOOKS_ENV: &str = "ONAIR_TEST_HOOKS";

/// What [`Heartbeat::due`] says the loop should do now.
#[derive(Debug, PartialEq, Eq)]
pub enum Beat {
    /// Tell systemd the loop is alive.
    Ping,
    /// The test hook fired: stop the loop (never returns from [`stall`]).
    Stall,
}

/// The supervisor loop's link to systemd. Owned by the driver; one per run of the loop.
pub struct Heartbeat {
    /// Half the watchdog period (systemd's advice), when systemd watches the daemon.
    pings: Option<Interval>,
    usr2: Option<Signal>,
    test_hooks: bool,
    last_status: Option<StreamState>,
    /// So a socket that refuses every datagram is reported once, not at every ping.
    send_failing: bool,
}

impl Heartbeat {
    /// Reads what systemd passed (`WATCHDOG_USEC`, `WATCHDOG_PID`) and `ONAIR_TEST_HOOKS`.
    /// Needs a tokio runtime (timer and signal).
    pub fn from_env() -> Heartbeat {
        let test_hooks = std::env::var(TEST_HOOKS_ENV).is_ok_and(|v| v == "1");
        Heartbeat::new(sd_notify::watchdog_enabled(), test_hooks)
    }

    /// A heartbeat that pings every `watchdog / 2` (none without a watchdog).
    pub fn new(watchdog: Option<Duration>, test_hooks: bool) -> Heartbeat {
        let pings = watchdog.filter(|w| !w.is_zero()).map(|w| {
            let mut interval = tokio::time::interval(w / 2);
            // After a long action the loop pings once and goes on; a burst would hide the delay.
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            interval
        });
        if let Some(w) = watchdog {
            log::debug!(
                "systemd watchdog: {w:?}; the supervisor loop pings every {:?}",
                w / 2
            );
        }
        let usr2 = match signal(SignalKind::user_defined2()) {
            Ok(s) => Some(s),
            Err(e) => {
                log::warn!("cannot listen for SIGUSR2 ({e}); it would end the daemon");
                None
            }
        };
        if test_hooks {
            log::warn!(
                "{TEST_HOOKS_ENV}=1: test hooks are on, SIGUSR2 stops the supervisor loop \
                 (never set this on a box in service)"
            );
        }
        Heartbeat {
            pings,
            usr2,
            test_hooks,
            last_status: None,
            send_failing: false,
        }
    }

    /// Resolves when the loop should ping (or, with the test hook armed, stall). Pending
    /// forever when systemd does not watch the daemon and no hook is armed.
    pub async fn due(&mut self) -> Beat {
        loop {
            tokio::select! {
                _ = tick(&mut self.pings) => return Beat::Ping,
                Some(()) = recv(&mut self.usr2) => {
                    if self.test_hooks {
                        return Beat::Stall;
                    }
                    log::warn!("SIGUSR2 ignored (it is a test hook, off unless {TEST_HOOKS_ENV}=1)");
                }
            }
        }
    }

    /// The loop is up: the daemon is started.
    pub fn ready(&mut self, state: StreamState) {
        self.last_status = Some(state);
        let status = format!("{state}");
        self.send(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&status),
        ]);
    }

    /// The loop turned since the last ping.
    pub fn ping(&mut self) {
        self.send(&[sd_notify::NotifyState::Watchdog]);
    }

    /// `systemctl status onair` shows the stream state; sent only when it changes.
    pub fn status(&mut self, state: StreamState) {
        if self.last_status == Some(state) {
            return;
        }
        self.last_status = Some(state);
        let status = format!("{state}");
        self.send(&[sd_notify::NotifyState::Status(&status)]);
    }

    fn send(&mut self, states: &[sd_notify::NotifyState]) {
        match sd_notify::notify(states) {
            Ok(()) => self.send_failing = false,
            Err(e) => {
                if !self.send_failing {
                    log::warn!("cannot notify systemd: {e}");
                }
                self.send_failing = true;
            }
        }
    }
}

/// The daemon is on its way out (a stop signal or a fatal error, not a restart in place).
pub fn stopping() {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Stopping]) {
        log::debug!("cannot notify systemd: {e}");
    }
}

/// What the supervisor loop does when the test hook fires: it stops turning, for good.
pub async fn stall() {
    log::warn!(
        "test hook (SIGUSR2): the supervisor loop stops here; systemd's watchdog must restart the daemon"
    );
    std::future::pending::<()>().await
}

async fn tick(interval: &mut Option<Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn recv(signal: &mut Option<Signal>) -> Option<()> {
    match signal {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pings_every_half_watchdog_period() {
        let mut hb = Heartbeat::new(Some(Duration::from_secs(20)), false);
        let start = tokio::time::Instant::now();
        // The first ping is due at once (right after READY=1), then every 10 s.
        let mut at = Vec::new();
        for _ in 0..3 {
            assert_eq!(hb.due().await, Beat::Ping);
            at.push(start.elapsed());
        }
        assert_eq!(
            at,
            [
                Duration::ZERO,
                Duration::from_secs(10),
                Duration::from_secs(20)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn never_due_without_a_watchdog() {
        let mut hb = Heartbeat::new(None, false);
        let waited = tokio::time::timeout(Duration::from_secs(3600), hb.due()).await;
        assert!(waited.is_err(), "no watchdog, no ping: {waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_loop_pings_once_then_keeps_the_period() {
        let mut hb = Heartbeat::new(Some(Duration::from_secs(2)), false);
        let start = tokio::time::Instant::now();
        assert_eq!(hb.due().await, Beat::Ping);
        // The loop was busy for 5 s: one ping now, the next a full period later.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(hb.due().await, Beat::Ping);
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(hb.due().await, Beat::Ping);
        assert_eq!(start.elapsed(), Duration::from_secs(6));
    }
}
