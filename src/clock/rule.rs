//! The clock's decisions, without a clock of their own: is the box's time trustworthy, may a
//! TLS refusal be "the box's clock is behind", and may a server's `Date` set the clock.
//!
//! Everything here is a function of facts read elsewhere (timesyncd's flag, the kernel's NTP
//! status, the image's build date, the server's answer), so each rule is tested on its own.
//! README "The clock" says what the box does with them; "Threat model" why they are safe.

use std::time::{Duration, SystemTime};

/// The kernel's NTP status bit that says no NTP daemon disciplines the clock (`adjtimex`).
pub const STA_UNSYNC: i32 = 0x0040;
/// Beyond this estimated error (µs) the kernel itself gives up on a synchronized clock
/// (`NTP_PHASE_LIMIT`, 16 s); `timedatectl` reads it the same way.
pub const MAX_SYNCED_ERROR_US: i64 = 16_000_000;
/// A server's time must be at least this far ahead of the box's clock to be worth a step:
/// `Date` has whole seconds, and a step is a discontinuity every timer notices.
pub const MIN_STEP: Duration = Duration::from_secs(2);

/// How the box's clock got its present time, as `onair status` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetBy {
    /// An NTP server (systemd-timesyncd), and the kernel still counts the clock as synchronized.
    Ntp,
    /// The `Date` of an HTTPS answer from the configured server (this daemon, `https_date`).
    HttpsDate,
    /// The time the box last saved on /data (timesyncd's clock file, restored at boot).
    SavedClockFile,
    /// The image's build date: systemd's floor (`/usr/lib/clock-epoch`).
    BuildFloor,
    /// A battery-backed real-time clock (the Pi 5 has one; the Pi 4 does not).
    Rtc,
    /// Nothing recorded how (a host without onair's boot scripts).
    Unknown,
}

impl SetBy {
    pub const ALL: [SetBy; 6] = [
        SetBy::Ntp,
        SetBy::HttpsDate,
        SetBy::SavedClockFile,
        SetBy::BuildFloor,
        SetBy::Rtc,
        SetBy::Unknown,
    ];

    /// The name in status and in the record file (`onair-clock` writes the same names).
    pub fn as_str(self) -> &'static str {
        match self {
            SetBy::Ntp => "ntp",
            SetBy::HttpsDate => "https-date",
            SetBy::SavedClockFile => "saved-clock-file",
            SetBy::BuildFloor => "build-floor",
            SetBy::Rtc => "rtc",
            SetBy::Unknown => "unknown",
        }
    }

    pub fn parse(name: &str) -> Option<SetBy> {
        SetBy::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for SetBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the kernel says of its clock (`adjtimex` with no change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelClock {
    pub status: i32,
    /// Estimated maximum error, µs.
    pub maxerror: i64,
}

/// Whether the box's time is synchronized: timesyncd says it reached an NTP server
/// (`/run/systemd/timesync/synchronized`), or the kernel's clock is disciplined by one (what
/// `timedatectl` calls "System clock synchronized"). A clock the daemon set from a server's
/// `Date` is not synchronized: stepping it marks the kernel's clock unsynchronized.
pub fn is_synchronized(timesyncd_flag: bool, kernel: Option<KernelClock>) -> bool {
    timesyncd_flag
        || kernel.is_some_and(|k| k.status & STA_UNSYNC == 0 && k.maxerror < MAX_SYNCED_ERROR_US)
}

/// How a TLS handshake refused a server's certificate, as far as the output could tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsRefusal {
    /// rustls: the certificate's `notBefore` is after the box's clock.
    NotValidYet,
    /// The certificate was refused without a reason the box can read (GIO's "Unacceptable
    /// TLS certificate" for rtmps): possibly the clock, the probe's own handshake will say.
    Unexplained,
    /// Refused for something a clock cannot cause (unknown issuer, wrong name, expired).
    NotTheClock,
}

/// The certificate refusal somewhere in an error's chain of causes (reqwest → hyper → the
/// TLS stream's `io::Error` → rustls), if the error is one.
pub fn certificate_refusal(error: &(dyn std::error::Error + 'static)) -> Option<TlsRefusal> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return refusal_of(tls);
        }
        // io::Error's `source` skips the error it carries (and hyper-rustls wraps tokio-rustls'
        // io::Error in another): step into it instead.
        cause = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

fn refusal_of(e: &rustls::Error) -> Option<TlsRefusal> {
    use rustls::CertificateError::{NotValidYet, NotValidYetContext};
    match e {
        rustls::Error::InvalidCertificate(NotValidYet | NotValidYetContext { .. }) => {
            Some(TlsRefusal::NotValidYet)
        }
        rustls::Error::InvalidCertificate(_) => Some(TlsRefusal::NotTheClock),
        _ => None,
    }
}

/// Whether a refusal is worth asking the server for its time: only while the clock is not
/// synchronized. With NTP's time a certificate that is "not valid yet" is the server's fault,
/// and an ordinary transient failure.
pub fn may_be_clock_behind(refusal: TlsRefusal, synchronized: bool) -> bool {
    !synchronized && matches!(refusal, TlsRefusal::NotValidYet | TlsRefusal::Unexplained)
}

/// The time at which the probe first checks a server's chain: the box's clock, but never
/// before the image's build date (a clock below the floor is a clock systemd could not fix).
pub fn verification_time(box_now: SystemTime, floor: SystemTime) -> SystemTime {
    box_now.max(floor)
}

/// What a server's `Date` does to the box's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DateVerdict {
    /// Step the clock to this time (forward).
    StepTo(SystemTime),
    /// Leave the clock alone, for this reason.
    Keep(&'static str),
}

/// Judges the `Date` of an answer received `age` ago over a connection whose chain verified
/// at that date (the probe checks that before it asks). The clock only ever moves forward,
/// never to before the image's build date, and not for a difference `Date`'s whole seconds
/// cannot tell from rounding.
pub fn judge_server_date(
    box_now: SystemTime,
    floor: SystemTime,
    date: SystemTime,
    age: Duration,
) -> DateVerdict {
    let at = date + age;
    if at < floor {
        return DateVerdict::Keep("the server's time is before the image's build date");
    }
    if at < box_now + MIN_STEP {
        return DateVerdict::Keep("the server's time is not ahead of the box's clock");
    }
    DateVerdict::StepTo(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn t(days: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_780_000_000) + DAY * days as u32
    }

    #[test]
    fn synchronized_by_timesyncd_or_by_the_kernel() {
        let synced = KernelClock {
            status: 0x2001, // STA_PLL | STA_NANO
            maxerror: 16_500,
        };
        let unsynced = KernelClock {
            status: STA_UNSYNC,
            maxerror: 16_000_000,
        };
        assert!(is_synchronized(false, Some(synced)));
        assert!(is_synchronized(true, Some(unsynced)));
        assert!(is_synchronized(true, None));
        assert!(!is_synchronized(false, Some(unsynced)));
        assert!(!is_synchronized(false, None));
        // The kernel itself lets a synchronized clock go after 16 s of estimated error.
        let drifted = KernelClock {
            status: 0x2001,
            maxerror: MAX_SYNCED_ERROR_US,
        };
        assert!(!is_synchronized(false, Some(drifted)));
    }

    #[test]
    fn only_an_unsynchronized_clock_may_be_behind() {
        for refusal in [TlsRefusal::NotValidYet, TlsRefusal::Unexplained] {
            assert!(may_be_clock_behind(refusal, false), "{refusal:?}");
            assert!(!may_be_clock_behind(refusal, true), "{refusal:?}");
        }
        assert!(!may_be_clock_behind(TlsRefusal::NotTheClock, false));
    }

    #[test]
    fn certificate_refusals_are_found_inside_io_errors() {
        use rustls::CertificateError;
        let not_yet = rustls::Error::InvalidCertificate(CertificateError::NotValidYet);
        let wrapped = std::io::Error::new(std::io::ErrorKind::InvalidData, not_yet);
        assert_eq!(certificate_refusal(&wrapped), Some(TlsRefusal::NotValidYet));
        // As hyper-rustls hands tokio-rustls' error on.
        let twice = std::io::Error::other(wrapped);
        assert_eq!(certificate_refusal(&twice), Some(TlsRefusal::NotValidYet));
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert_eq!(certificate_refusal(&unknown), Some(TlsRefusal::NotTheClock));
        let other = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(certificate_refusal(&other), None);
        let handshake = rustls::Error::HandshakeNotComplete;
        assert_eq!(certificate_refusal(&handshake), None);
    }

    #[test]
    fn verification_never_happens_before_the_floor() {
        assert_eq!(verification_time(t(0), t(5)), t(5));
        assert_eq!(verification_time(t(9), t(5)), t(9));
    }

    #[test]
    fn the_clock_only_moves_forward_and_never_below_the_floor() {
        let floor = t(0);
        let now = t(1);
        let age = Duration::from_millis(300);
        // A year ahead: stepped, to the date plus the answer's age.
        assert_eq!(
            judge_server_date(now, floor, t(366), age),
            DateVerdict::StepTo(t(366) + age)
        );
        // Behind the box's clock, or within Date's rounding: left alone.
        assert!(matches!(
            judge_server_date(now, floor, t(0), age),
            DateVerdict::Keep(_)
        ));
        assert!(matches!(
            judge_server_date(now, floor, now + Duration::from_secs(1), age),
            DateVerdict::Keep(_)
        ));
        assert!(matches!(
            judge_server_date(now, floor, now + Duration::from_secs(3), age),
            DateVerdict::StepTo(_)
        ));
        // Before the build date, even when ahead of a clock that is below it.
        let below = floor - DAY * 30;
        assert_eq!(
            judge_server_date(below, floor, floor - DAY, age),
            DateVerdict::Keep("the server's time is before the image's build date")
        );
    }

    #[test]
    fn set_by_names_round_trip() {
        for s in SetBy::ALL {
            assert_eq!(SetBy::parse(s.as_str()), Some(s));
        }
        assert_eq!(SetBy::parse("sundial"), None);
    }
}
