//! The box's clock: whether its time can be trusted, how it was set, and what to do when a TLS
//! server is refused because the box's clock is behind.
//!
//! The Pi 4, 400 and CM4 have no real-time clock. A box boots at the time it saved on /data at
//! its last run (timesyncd's clock file, restored by `onair-clock`), or at the image's build
//! date (systemd's floor, `/usr/lib/clock-epoch`), and NTP (systemd-timesyncd: servers from
//! DHCP, then a pool) corrects it once a server answers. Where UDP 123 is blocked, a server
//! certificate issued after the box's time is refused as "not valid yet". Then — only while
//! the clock is not synchronized — the box asks the server it was refused by for the time over
//! a connection whose chain and name are verified ([`https_date`]), and steps its clock
//! forward to it ([`rule`] decides). README "The clock" tells the owner; "Threat model" has the
//! trust argument.
//!
//! Outputs report such a refusal as `FailureClass::ClockBehind`: the supervisor retries as soon
//! as the clock steps ([`watch`]), never gives up on it. An `http://` server never meets any
//! of this.

pub mod https_date;
pub mod rule;
pub mod system;
pub mod watch;

use https_date::{Answer, HttpsDate, HttpsDateError};
use reqwest::Url;
use rule::DateVerdict;
pub use rule::{SetBy, TlsRefusal};
use std::sync::Arc;
use std::time::SystemTime;
pub use system::{ClockFiles, SystemTimeSource, TimeSource};
use tokio::sync::watch as tokio_watch;
use tokio::time::Instant;

/// What `onair status` shows of the clock.
#[derive(Debug, Clone, PartialEq)]
pub struct ClockView {
    pub synchronized: bool,
    /// When `synchronized` took its present value as the daemon saw it (a clock that was
    /// unsynchronized when the daemon started counts from the boot).
    pub since: Instant,
    pub set_by: SetBy,
    /// The origin whose `Date` set the clock, for `https-date`.
    pub set_from: Option<String>,
}

/// What a certificate refusal turned out to mean.
#[derive(Debug, Clone, PartialEq)]
pub enum ClockVerdict {
    /// Not the clock's doing: the output's own failure class applies.
    NotTheClock,
    /// The box's clock is behind the server's certificate; the message says what was done
    /// about it (the clock set from the server, or why not).
    Behind(String),
}

/// Makes the probe for one refusal (the system's roots; tests: a test root).
pub type ProbeMaker = Box<dyn Fn() -> Result<HttpsDate, HttpsDateError> + Send + Sync>;

/// The daemon's view of the clock, and the one place that changes it.
pub struct Clock {
    files: ClockFiles,
    time: Arc<dyn TimeSource>,
    probe: ProbeMaker,
    view: tokio_watch::Sender<ClockView>,
    /// One probe at a time: a second refusal waits for the first one's answer.
    probing: tokio::sync::Mutex<()>,
}

impl Clock {
    /// The box's clock, with its facts in the usual places and the record in `state_dir`.
    pub fn system(state_dir: &std::path::Path) -> Arc<Clock> {
        Arc::new(Clock::new(
            ClockFiles::system(state_dir),
            Arc::new(SystemTimeSource),
            Box::new(HttpsDate::system),
        ))
    }

    pub fn new(files: ClockFiles, time: Arc<dyn TimeSource>, probe: ProbeMaker) -> Clock {
        let recorded = files.read_record().unwrap_or((SetBy::Unknown, None));
        let synchronized = rule::is_synchronized(files.timesyncd_synchronized(), time.kernel());
        let now = Instant::now();
        let since = if synchronized {
            now
        } else {
            system::uptime()
                .and_then(|up| now.checked_sub(up))
                .unwrap_or(now)
        };
        let (set_by, set_from) = if synchronized {
            (SetBy::Ntp, None)
        } else {
            recorded
        };
        let (view, _) = tokio_watch::channel(ClockView {
            synchronized,
            since,
            set_by,
            set_from,
        });
        Clock {
            files,
            time,
            probe,
            view,
            probing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn subscribe(&self) -> tokio_watch::Receiver<ClockView> {
        self.view.subscribe()
    }

    pub fn view(&self) -> ClockView {
        self.view.borrow().clone()
    }

    /// Reads the facts again and publishes the view. Returns whether the clock just became
    /// synchronized.
    pub fn refresh(&self) -> bool {
        let synchronized =
            rule::is_synchronized(self.files.timesyncd_synchronized(), self.time.kernel());
        let mut became_synchronized = false;
        let mut record_ntp = false;
        self.view.send_if_modified(|v| {
            let mut changed = false;
            if v.synchronized != synchronized {
                v.synchronized = synchronized;
                v.since = Instant::now();
                became_synchronized = synchronized;
                changed = true;
            }
            if synchronized && v.set_by != SetBy::Ntp {
                v.set_by = SetBy::Ntp;
                v.set_from = None;
                record_ntp = true;
                changed = true;
            }
            changed
        });
        if record_ntp {
            log::info!("clock: synchronized by NTP");
            self.remember(SetBy::Ntp, None);
        }
        became_synchronized
    }

    /// An output's TLS handshake with `origin` refused the server's certificate. While the
    /// clock is not synchronized, asks the origin for its time and steps the clock forward to
    /// it when the rules allow; says whether the refusal was the clock's doing.
    pub async fn certificate_refused(&self, origin: &Url, refusal: TlsRefusal) -> ClockVerdict {
        let _one = self.probing.lock().await;
        self.refresh();
        if !rule::may_be_clock_behind(refusal, self.view().synchronized) {
            return ClockVerdict::NotTheClock;
        }
        let shown = origin.origin().ascii_serialization();
        let floor = self.files.floor();
        let box_now = self.time.now();
        let answer = match (self.probe)() {
            Ok(probe) => probe.ask(origin, box_now, floor).await,
            Err(e) => Err(e),
        };
        match answer {
            Ok(Answer::ValidAtBoxTime) => ClockVerdict::NotTheClock,
            Ok(Answer::ServerTime {
                valid_from,
                date,
                received,
            }) => {
                let box_now = self.time.now();
                let behind = format!(
                    "{shown}'s certificate is valid from {}, the box's unsynchronized clock says {}",
                    httpdate::fmt_http_date(valid_from),
                    httpdate::fmt_http_date(box_now)
                );
                match rule::judge_server_date(box_now, floor, date, received.elapsed()) {
                    DateVerdict::StepTo(to) => ClockVerdict::Behind(self.step(&behind, &shown, to)),
                    DateVerdict::Keep(why) => {
                        log::warn!(
                            "clock: {behind}; {shown} says {} but {why}: clock left alone; waiting for NTP",
                            httpdate::fmt_http_date(date)
                        );
                        ClockVerdict::Behind(format!(
                            "{behind}; not set from the server ({why}); waiting for NTP"
                        ))
                    }
                }
            }
            Err(e) if refusal == TlsRefusal::NotValidYet || e.shows_clock_behind() => {
                log::warn!(
                    "clock: the box's unsynchronized clock is behind {shown}'s certificate, and asking it for the time failed: {e}; waiting for NTP"
                );
                ClockVerdict::Behind(format!(
                    "{shown}'s certificate is not valid yet by the box's unsynchronized clock; asking the server for the time failed ({e}); waiting for NTP"
                ))
            }
            Err(e) => {
                log::info!("clock: could not tell whether the clock caused {shown}'s refusal: {e}");
                ClockVerdict::NotTheClock
            }
        }
    }

    /// Steps the clock to `to` and says so.
    fn step(&self, behind: &str, origin: &str, to: SystemTime) -> String {
        match self.time.step_to(to) {
            Ok(()) => {
                log::info!(
                    "clock: {behind}: set to {} from {origin}'s Date (https-date)",
                    httpdate::fmt_http_date(to)
                );
                self.remember(SetBy::HttpsDate, Some(origin));
                self.view.send_modify(|v| {
                    v.set_by = SetBy::HttpsDate;
                    v.set_from = Some(origin.to_string());
                });
                format!(
                    "{behind}: clock set to {} from {origin}; retrying",
                    httpdate::fmt_http_date(to)
                )
            }
            Err(e) => {
                log::error!("clock: {behind}: cannot set the clock: {e}");
                format!("{behind}; cannot set the clock ({e}); waiting for NTP")
            }
        }
    }

    fn remember(&self, set_by: SetBy, from: Option<&str>) {
        if let Err(e) = self.files.write_record(set_by, from) {
            log::warn!(
                "clock: cannot record how the time was set in {}: {e}",
                self.files.record.display()
            );
        }
    }
}
