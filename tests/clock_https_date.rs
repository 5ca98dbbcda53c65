//! The clock's HTTPS-date rule against a real TLS server (tests/peers/dated_https.py) whose
//! certificate was issued after the box's clock — a box's clock faked a year behind, never
//! the host's: the clock is reached through `TimeSource`, and the fake records the steps.
//!
//! - a box a year behind, NTP unreachable: the server's verified `Date` sets the clock forward,
//!   status and the record say `https-date` from the origin;
//! - a synchronized clock is never second-guessed;
//! - a `Date` outside the server's own certificate, one before the image's build date, a
//!   missing `Date`, a certificate for another name: the clock is left alone;
//! - a chain valid at the box's own time: the refusal was not the clock's;
//! - the WHIP output's real handshake, refused "not valid yet", reaches the clock and comes
//!   back as `FailureClass::ClockBehind` (in a child process that trusts the test CA).

mod common;

use onair::clock::https_date::HttpsDate;
use onair::clock::rule::{KernelClock, STA_UNSYNC};
use onair::clock::{Clock, ClockFiles, ClockVerdict, SetBy, TimeSource, TlsRefusal};
use onair::output::whip::WhipOutput;
use onair::output::{FailureClass, Output};
use onair::secret::SecretUrl;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use reqwest::Url;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

const DAY: Duration = Duration::from_secs(86_400);

/// A box clock that is not the host's: a base that runs with real time, moved only by steps.
struct FakeTime {
    base: Mutex<SystemTime>,
    started: Instant,
    steps: Mutex<Vec<SystemTime>>,
}

impl FakeTime {
    fn at(now: SystemTime) -> Arc<FakeTime> {
        Arc::new(FakeTime {
            base: Mutex::new(now),
            started: Instant::now(),
            steps: Mutex::new(vec![]),
        })
    }

    fn steps(&self) -> Vec<SystemTime> {
        self.steps.lock().unwrap().clone()
    }
}

impl TimeSource for FakeTime {
    fn now(&self) -> SystemTime {
        *self.base.lock().unwrap() + self.started.elapsed()
    }

    fn step_to(&self, to: SystemTime) -> Result<(), String> {
        *self.base.lock().unwrap() = to - self.started.elapsed();
        self.steps.lock().unwrap().push(to);
        Ok(())
    }

    fn kernel(&self) -> Option<KernelClock> {
        Some(KernelClock {
            status: STA_UNSYNC,
            maxerror: 16_000_000,
        })
    }
}

/// A test CA and a leaf for 127.0.0.1 valid for 90 days from `not_before`, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
    verifier: Arc<dyn ServerCertVerifier>,
}

impl Pki {
    fn issue(not_before: SystemTime) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.not_before = offset(SystemTime::now() - DAY * 3650);
        ca_params.not_after = offset(SystemTime::now() + DAY * 3650);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let mut leaf_params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        leaf_params.not_before = offset(not_before);
        leaf_params.not_after = offset(not_before + DAY * 90);
        let key = KeyPair::generate().unwrap();
        let leaf = leaf_params.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.path().join("leaf.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
        Pki { dir, verifier }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn offset(t: SystemTime) -> time::OffsetDateTime {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    time::OffsetDateTime::from_unix_timestamp(secs as i64).unwrap()
}

/// dated_https.py with the PKI's leaf, killed on drop.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(pki: &Pki, date: &str) -> Server {
        let mut child = Command::new("python3")
            .arg(common::repo_root().join("tests/peers/dated_https.py"))
            .args(["--listen", "127.0.0.1:0", "--date", date, "--cert"])
            .arg(pki.file("leaf.pem"))
            .arg("--key")
            .arg(pki.file("key.pem"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dated_https.py");
        let [url] = common::await_ready(&mut child, Duration::from_secs(10), "dated_https", None);
        Server { child, url }
    }

    fn origin(&self) -> Url {
        Url::parse(&self.url).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A box: its clock, its files (the floor's mtime is the build date), a probe trusting `pki`.
struct TestBox {
    clock: Clock,
    time: Arc<FakeTime>,
    files: ClockFiles,
    _dir: tempfile::TempDir,
}

impl TestBox {
    fn new(pki: &Pki, now: SystemTime, floor: SystemTime) -> TestBox {
        let dir = tempfile::tempdir().unwrap();
        let files = ClockFiles {
            floor: dir.path().join("clock-epoch"),
            timesyncd_flag: dir.path().join("synchronized"),
            record: dir.path().join("clock-set"),
        };
        std::fs::File::create(&files.floor)
            .unwrap()
            .set_modified(floor)
            .unwrap();
        let time = FakeTime::at(now);
        let verifier = pki.verifier.clone();
        let clock = Clock::new(
            files.clone(),
            time.clone(),
            Box::new(move || Ok(HttpsDate::with_verifier(verifier.clone(), provider()))),
        );
        TestBox {
            clock,
            time,
            files,
            _dir: dir,
        }
    }

    async fn refused(&self, origin: &Url, refusal: TlsRefusal) -> ClockVerdict {
        self.clock.certificate_refused(origin, refusal).await
    }
}

fn behind(verdict: ClockVerdict) -> String {
    match verdict {
        ClockVerdict::Behind(why) => why,
        other => panic!("expected the clock to be behind, got {other:?}"),
    }
}

fn secs_apart(a: SystemTime, b: SystemTime) -> f64 {
    match a.duration_since(b) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

#[tokio::test]
async fn a_box_a_year_behind_is_set_from_the_servers_date() {
    let now = SystemTime::now();
    // Issued today; the box believes it is a year ago, its image built 400 days ago.
    let pki = Pki::issue(now - Duration::from_secs(60));
    let server = Server::start(&pki, "now");
    let b = TestBox::new(&pki, now - DAY * 365, now - DAY * 400);
    let why = behind(b.refused(&server.origin(), TlsRefusal::NotValidYet).await);
    assert!(why.contains("clock set to"), "{why}");
    let steps = b.time.steps();
    assert_eq!(steps.len(), 1, "{why}");
    let error = secs_apart(steps[0], SystemTime::now());
    assert!(
        error.abs() < 3.0,
        "stepped {error:+.1} s from the true time: {why}"
    );
    let view = b.clock.view();
    assert!(!view.synchronized, "a server's Date is not NTP");
    assert_eq!(view.set_by, SetBy::HttpsDate);
    let origin = server.origin().origin().ascii_serialization();
    assert_eq!(view.set_from.as_deref(), Some(origin.as_str()));
    assert_eq!(
        b.files.read_record(),
        Some((SetBy::HttpsDate, Some(origin)))
    );
    // Asked again (the next attempt): the chain is valid at the box's time now.
    assert_eq!(
        b.refused(&server.origin(), TlsRefusal::Unexplained).await,
        ClockVerdict::NotTheClock
    );
    assert_eq!(b.time.steps().len(), 1);
}

#[tokio::test]
async fn a_synchronized_clock_is_not_second_guessed() {
    let now = SystemTime::now();
    let pki = Pki::issue(now - Duration::from_secs(60));
    let server = Server::start(&pki, "now");
    let b = TestBox::new(&pki, now - DAY * 365, now - DAY * 400);
    std::fs::write(&b.files.timesyncd_flag, "").unwrap();
    assert_eq!(
        b.refused(&server.origin(), TlsRefusal::NotValidYet).await,
        ClockVerdict::NotTheClock
    );
    assert!(b.time.steps().is_empty());
    assert_eq!(b.clock.view().set_by, SetBy::Ntp);
}

#[tokio::test]
async fn a_date_outside_the_servers_own_certificate_is_not_used() {
    let now = SystemTime::now();
    let pki = Pki::issue(now - Duration::from_secs(60));
    // 200 days on: after the 90-day leaf expired.
    let far = (now + DAY * 200)
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let server = Server::start(&pki, &far.to_string());
    let b = TestBox::new(&pki, now - DAY * 365, now - DAY * 400);
    let why = behind(b.refused(&server.origin(), TlsRefusal::NotValidYet).await);
    assert!(
        why.contains("outside its own certificate's validity"),
        "{why}"
    );
    assert!(b.time.steps().is_empty());
    assert_eq!(b.clock.view().set_by, SetBy::Unknown);
}

#[tokio::test]
async fn a_date_before_the_build_date_is_not_used() {
    let now = SystemTime::now();
    // Issued long ago and still valid; the image says it was built 10 days from now, and
    // the box's clock is below that (as systemd would never leave it).
    let pki = Pki::issue(now - DAY * 30);
    let server = Server::start(&pki, "now");
    let b = TestBox::new(&pki, now - DAY * 365, now + DAY * 10);
    let why = behind(b.refused(&server.origin(), TlsRefusal::NotValidYet).await);
    assert!(why.contains("before the image's build date"), "{why}");
    assert!(b.time.steps().is_empty());
}

#[tokio::test]
async fn no_date_no_step() {
    let now = SystemTime::now();
    let pki = Pki::issue(now - Duration::from_secs(60));
    let server = Server::start(&pki, "none");
    let b = TestBox::new(&pki, now - DAY * 365, now - DAY * 400);
    let why = behind(b.refused(&server.origin(), TlsRefusal::NotValidYet).await);
    assert!(why.contains("without a usable Date"), "{why}");
    assert!(why.contains("waiting for NTP"), "{why}");
    // GIO's unexplained refusal (rtmps): the probe's handshake shows the clock is behind, even
    // though the server gives no time.
    let why = behind(b.refused(&server.origin(), TlsRefusal::Unexplained).await);
    assert!(why.contains("without a usable Date"), "{why}");
    assert!(b.time.steps().is_empty());
}

#[tokio::test]
async fn a_certificate_for_another_name_moves_nothing() {
    let now = SystemTime::now();
    let pki = Pki::issue(now - Duration::from_secs(60));
    let server = Server::start(&pki, "now");
    let port = server.origin().port().unwrap();
    // The leaf names 127.0.0.1 only.
    let elsewhere = Url::parse(&format!("https://localhost:{port}/")).unwrap();
    let b = TestBox::new(&pki, now - DAY * 365, now - DAY * 400);
    let why = behind(b.refused(&elsewhere, TlsRefusal::NotValidYet).await);
    assert!(
        why.contains("asking the server for the time failed"),
        "{why}"
    );
    assert!(b.time.steps().is_empty());
    // GIO's unexplained refusal (rtmps) is not blamed on the clock when the probe cannot tell.
    assert_eq!(
        b.refused(&elsewhere, TlsRefusal::Unexplained).await,
        ClockVerdict::NotTheClock
    );
}

#[tokio::test]
async fn a_chain_valid_at_the_box_time_is_not_the_clock() {
    let now = SystemTime::now();
    let pki = Pki::issue(now - Duration::from_secs(60));
    let server = Server::start(&pki, "now");
    let b = TestBox::new(&pki, now, now - DAY * 400);
    assert_eq!(
        b.refused(&server.origin(), TlsRefusal::Unexplained).await,
        ClockVerdict::NotTheClock
    );
    assert!(b.time.steps().is_empty());
}

/// The WHIP output with its real TLS stack: the host's clock (the true time) is "behind" a
/// certificate issued for tomorrow, the server says it is tomorrow, an hour after that. Run
/// in a child process whose trust store is the test CA (SSL_CERT_FILE, read when reqwest
/// loads the system's roots), so the host's environment is never changed.
#[test]
fn whip_takes_a_refused_certificate_to_the_clock() {
    let now = SystemTime::now();
    let tomorrow = now + DAY;
    let pki = Pki::issue(tomorrow);
    let date = (tomorrow + Duration::from_secs(3600))
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let server = Server::start(&pki, &date.to_string());
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "whip_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SSL_CERT_FILE", pki.file("ca.pem"))
        .env("ONAIR_TEST_WHIP_URL", format!("{}/api/whip", server.url))
        .env("ONAIR_TEST_CA_DIR", pki.dir.path())
        .env("ONAIR_TEST_SERVER_DATE", date.to_string())
        .output()
        .expect("run the child test");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("whip_child ... ok"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
#[ignore = "run by whip_takes_a_refused_certificate_to_the_clock in its own process"]
async fn whip_child() {
    let url = std::env::var("ONAIR_TEST_WHIP_URL").expect("run by the parent test");
    let date: u64 = std::env::var("ONAIR_TEST_SERVER_DATE")
        .unwrap()
        .parse()
        .unwrap();
    let ca = std::fs::read(Path::new(&std::env::var("ONAIR_TEST_CA_DIR").unwrap()).join("ca.pem"))
        .unwrap();
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(&ca).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let pki = Pki {
        dir: tempfile::tempdir().unwrap(),
        verifier: WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap(),
    };
    let now = SystemTime::now();
    let b = TestBox::new(&pki, now, now - DAY * 30);
    let state = tempfile::tempdir().unwrap();
    let output = WhipOutput::new(&SecretUrl::new(&url, 0), None, state.path())
        .unwrap()
        .with_clock(Arc::new(b.clock));
    let failure = match output.connect(common::whip_attempt()).await {
        Ok(_) => panic!("a certificate issued for tomorrow was accepted today"),
        Err(f) => f,
    };
    assert_eq!(failure.class, FailureClass::ClockBehind, "{failure:?}");
    assert!(failure.message.contains("clock set to"), "{failure:?}");
    let steps = b.time.steps();
    assert_eq!(steps.len(), 1, "{failure:?}");
    let wanted = SystemTime::UNIX_EPOCH + Duration::from_secs(date);
    let error = secs_apart(steps[0], wanted);
    assert!(
        (0.0..3.0).contains(&error),
        "{error:+.1} s from the server's Date"
    );
}
