//! Noticing that the clock changed, so that a wait for it ends at once: a step (timesyncd
//! correcting a large offset, this daemon's https-date, `date -s`) through a timerfd armed with
//! `TFD_TIMER_CANCEL_ON_SET`, which the kernel cancels whenever CLOCK_REALTIME is set; and NTP's
//! synchronization (which may only slew the clock) by reading the facts every second.

use super::Clock;
use nix::errno::Errno;
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often the synchronized flag is read.
pub const POLL: Duration = Duration::from_secs(1);
/// The timer's expiry: far beyond any certificate's validity, so only a change of the clock
/// ever wakes it (about the year 2242).
const NEVER: i64 = 8_600_000_000;

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockChange {
    /// CLOCK_REALTIME was set.
    Stepped,
    /// NTP synchronized the clock.
    Synchronized,
}

impl ClockChange {
    pub fn reason(self) -> &'static str {
        match self {
            ClockChange::Stepped => "clock stepped",
            ClockChange::Synchronized => "clock synchronized by NTP",
        }
    }
}

/// Reports the clock's changes until `cancel`; keeps `clock`'s view current.
pub async fn run(clock: Arc<Clock>, changes: mpsc::Sender<ClockChange>, cancel: CancellationToken) {
    let mut steps = match StepWatch::new() {
        Ok(w) => Some(w),
        Err(e) => {
            log::warn!(
                "clock: cannot watch for clock steps ({e}); reading the facts every second only"
            );
            None
        }
    };
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let change = tokio::select! {
            _ = cancel.cancelled() => return,
            stepped = next_step(&mut steps) => match stepped {
                Ok(()) => {
                    clock.refresh();
                    Some(ClockChange::Stepped)
                }
                Err(e) => {
                    log::warn!("clock: the step watch failed ({e}); reading the facts every second only");
                    steps = None;
                    None
                }
            },
            _ = tick.tick() => clock.refresh().then_some(ClockChange::Synchronized),
        };
        if let Some(change) = change
            && changes.send(change).await.is_err()
        {
            return;
        }
    }
}

async fn next_step(steps: &mut Option<StepWatch>) -> std::io::Result<()> {
    match steps {
        Some(w) => w.stepped().await,
        None => std::future::pending().await,
    }
}

/// A timerfd on CLOCK_REALTIME that only a clock change wakes.
struct StepWatch {
    fd: AsyncFd<Timer>,
}

struct Timer(TimerFd);

impl AsRawFd for Timer {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl StepWatch {
    fn new() -> std::io::Result<StepWatch> {
        let timer = TimerFd::new(
            ClockId::CLOCK_REALTIME,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        arm(&timer)?;
        // SAFETY: the TimerFd owns its descriptor, open and the same for the AsyncFd's life.
        let fd = unsafe { AsyncFd::register_with_interest(Timer(timer), Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(StepWatch { fd })
    }

    /// Waits for the next time the clock is set.
    async fn stepped(&mut self) -> std::io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            let timer = &self.fd.get_ref().0;
            match nix::unistd::read(timer, &mut [0u8; 8]) {
                // The kernel cancelled the timer: the clock was set. Armed again for the next.
                Err(Errno::ECANCELED) | Ok(_) => {
                    arm(timer)?;
                    return Ok(());
                }
                Err(Errno::EAGAIN) => guard.clear_ready(),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn arm(timer: &TimerFd) -> nix::Result<()> {
    timer.set(
        Expiration::OneShot(TimeSpec::new(NEVER, 0)),
        TimerSetTimeFlags::TFD_TIMER_ABSTIME | TimerSetTimeFlags::TFD_TIMER_CANCEL_ON_SET,
    )
}
