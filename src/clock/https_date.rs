//! Asking the server the box was refused by for the time: an HTTPS `HEAD /` on the same origin
//! whose certificate chain and name are verified, and its `Date`.
//!
//! A box whose clock is behind refuses a certificate issued after its clock ("not valid yet")
//! and cannot tell the time from NTP where UDP 123 is blocked. The chain itself says when it
//! becomes valid: the verifier the box always uses (the system's roots, the same one reqwest
//! uses for WHIP) is called with a time of the probe's choosing instead of the box's clock —
//! the box's clock if the chain is valid then, else the `notBefore` the refusal names, never
//! before the image's build date. A chain valid at no such time (another name, an unknown
//! issuer, expired before the build date) ends the handshake as it always would. Over the
//! verified connection the server's `Date` is read, and the same chain must also verify at
//! that date: a server cannot move the box's clock outside its own certificate's validity.
//! What the clock does with the answer is `rule::judge_server_date`'s decision.
//!
//! The probe sends nothing secret (no token, the origin's root path, no cookies), follows no
//! redirect (another origin is not the server the box was refused by), reads no body and is
//! bounded in time.

use crate::lock::lock;
use reqwest::Url;
use reqwest::header::DATE;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// The TCP connection to the server, as for WHIP.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The whole probe: handshake and the answer's headers. Well inside an attempt's deadline
/// (`reconnect.connect_timeout`, 10 s by default), which it runs in.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(4);
/// A chain is a leaf and a few intermediates: each refusal may name a later `notBefore`.
const MAX_VALIDITY_STEPS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum HttpsDateError {
    #[error("cannot load the trusted certificates: {0}")]
    Roots(String),
    #[error("{origin} refused or not reached: {reason}")]
    Unreachable { origin: String, reason: String },
    #[error("{origin} proved its certificate but gave no HTTP answer: {reason}")]
    NoAnswer { origin: String, reason: String },
    #[error("{origin} answered without a usable Date header")]
    NoDate { origin: String },
    #[error(
        "{origin} says it is {date}, which is outside its own certificate's validity: not used"
    )]
    DateOutsideCertificate { origin: String, date: String },
}

impl HttpsDateError {
    /// The handshake got far enough to show that the chain is valid only after the box's clock
    /// (it verified, later): whatever went wrong afterwards, the clock is behind.
    pub fn shows_clock_behind(&self) -> bool {
        matches!(
            self,
            HttpsDateError::NoAnswer { .. }
                | HttpsDateError::NoDate { .. }
                | HttpsDateError::DateOutsideCertificate { .. }
        )
    }
}

/// What the server's verified answer says.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The chain verifies at the box's own time: whatever was refused, it was not the clock.
    ValidAtBoxTime,
    /// The chain verifies from `valid_from` on (after the box's clock); the server said it
    /// is `date` (the chain verifies then too), in an answer that arrived at `received`.
    ServerTime {
        valid_from: SystemTime,
        date: SystemTime,
        received: Instant,
    },
}

/// Asks servers for the time through a certificate verifier.
#[derive(Debug, Clone)]
pub struct HttpsDate {
    inner: Arc<dyn ServerCertVerifier>,
    provider: Arc<CryptoProvider>,
}

impl HttpsDate {
    /// With the system's trusted roots, through the verifier reqwest uses for every other
    /// HTTPS connection of the daemon: the probe trusts exactly what the WHIP request trusts.
    pub fn system() -> Result<HttpsDate, HttpsDateError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner = rustls_platform_verifier::Verifier::new(provider.clone())
            .map_err(|e| HttpsDateError::Roots(e.to_string()))?;
        Ok(HttpsDate::with_verifier(Arc::new(inner), provider))
    }

    /// With any verifier (tests: a WebPKI verifier over a test root).
    pub fn with_verifier(
        inner: Arc<dyn ServerCertVerifier>,
        provider: Arc<CryptoProvider>,
    ) -> HttpsDate {
        HttpsDate { inner, provider }
    }

    /// Asks `origin` (its scheme, host and port; the rest of the URL is ignored) for its time.
    /// `box_now` is the box's clock, `floor` the image's build date.
    pub async fn ask(
        &self,
        origin: &Url,
        box_now: SystemTime,
        floor: SystemTime,
    ) -> Result<Answer, HttpsDateError> {
        let shown = origin.origin().ascii_serialization();
        let from = unix(super::rule::verification_time(box_now, floor));
        let verifier = Arc::new(LaterVerifier {
            inner: self.inner.clone(),
            from,
            checked: Mutex::new(None),
        });
        let client = self
            .client(verifier.clone())
            .map_err(|reason| HttpsDateError::Roots(reason.clone()))?;
        let root = Url::parse(&format!("{shown}/")).map_err(|e| HttpsDateError::Unreachable {
            origin: shown.clone(),
            reason: e.to_string(),
        })?;
        let result = client.head(root).send().await;
        let received = Instant::now();
        let checked = lock(&verifier.checked).take();
        let (checked, response) = match (checked, result) {
            (None, result) => {
                return Err(HttpsDateError::Unreachable {
                    origin: shown,
                    reason: match result {
                        Err(e) => error_text(e),
                        Ok(_) => "no certificate was presented".into(),
                    },
                });
            }
            (Some(c), _) if c.at == unix(box_now) => return Ok(Answer::ValidAtBoxTime),
            (Some(_), Err(e)) => {
                return Err(HttpsDateError::NoAnswer {
                    origin: shown,
                    reason: error_text(e),
                });
            }
            (Some(c), Ok(response)) => (c, response),
        };
        let date = response
            .headers()
            .get(DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .ok_or_else(|| HttpsDateError::NoDate {
                origin: shown.clone(),
            })?;
        if checked.verify_at(&*self.inner, unix(date)).is_err() {
            return Err(HttpsDateError::DateOutsideCertificate {
                origin: shown,
                date: httpdate::fmt_http_date(date),
            });
        }
        Ok(Answer::ServerTime {
            valid_from: system_time(checked.at),
            date,
            received,
        })
    }

    fn client(&self, verifier: Arc<LaterVerifier>) -> Result<reqwest::Client, String> {
        let config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(ANSWER_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            // One connection, the one whose chain the verifier recorded.
            .pool_max_idle_per_host(0)
            .build()
            .map_err(error_text)
    }
}

/// A chain the verifier accepted, kept to check it again at the server's `Date`.
#[derive(Debug)]
struct Checked {
    /// The time it verified at.
    at: UnixTime,
    end_entity: CertificateDer<'static>,
    intermediates: Vec<CertificateDer<'static>>,
    server_name: ServerName<'static>,
    ocsp: Vec<u8>,
}

impl Checked {
    fn verify_at(&self, inner: &dyn ServerCertVerifier, at: UnixTime) -> Result<(), rustls::Error> {
        inner
            .verify_server_cert(
                &self.end_entity,
                &self.intermediates,
                &self.server_name,
                &self.ocsp,
                at,
            )
            .map(|_| ())
    }
}

/// The verifier the probe's handshake runs: `inner`'s full check (roots, chain, name, usage),
/// at the first time from `from` on at which the chain is valid. Signatures are `inner`'s.
#[derive(Debug)]
struct LaterVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    from: UnixTime,
    checked: Mutex<Option<Checked>>,
}

impl ServerCertVerifier for LaterVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let at = first_valid_time(
            &*self.inner,
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            self.from,
        )?;
        *lock(&self.checked) = Some(Checked {
            at,
            end_entity: end_entity.clone().into_owned(),
            intermediates: intermediates
                .iter()
                .map(|c| c.clone().into_owned())
                .collect(),
            server_name: server_name.to_owned(),
            ocsp: ocsp_response.to_vec(),
        });
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

/// The first time from `from` on at which `inner` accepts the chain: `from` itself, or the
/// later `notBefore` a refusal names (an intermediate's may be later than the leaf's). Any
/// other refusal is the handshake's answer.
fn first_valid_time(
    inner: &dyn ServerCertVerifier,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    server_name: &ServerName<'_>,
    ocsp_response: &[u8],
    from: UnixTime,
) -> Result<UnixTime, rustls::Error> {
    let mut at = from;
    for _ in 0..MAX_VALIDITY_STEPS {
        match inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, at) {
            Ok(_) => return Ok(at),
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidYetContext {
                not_before,
                ..
            })) if not_before > at => at = not_before,
            Err(e) => return Err(e),
        }
    }
    Err(rustls::Error::InvalidCertificate(
        CertificateError::NotValidYet,
    ))
}

fn unix(t: SystemTime) -> UnixTime {
    UnixTime::since_unix_epoch(t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default())
}

fn system_time(t: UnixTime) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(t.as_secs())
}

/// A reqwest error with its causes, on one line (the URL is the origin's root: no secret).
fn error_text(e: reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    crate::secret::printable(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use rustls::client::WebPkiServerVerifier;

    const DAY: u64 = 86_400;
    /// 2026-12-06, the day these tests were written.
    const ISSUED: u64 = 1_796_515_200;

    fn date(secs: u64) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(secs as i64).unwrap()
    }

    fn at(secs: u64) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(secs))
    }

    struct Pki {
        verifier: Arc<dyn ServerCertVerifier>,
        chain: Vec<CertificateDer<'static>>,
    }

    /// A root valid for decades, an intermediate valid from `intermediate_from`, and a leaf
    /// for `name` valid for 90 days from `leaf_from`.
    fn pki(name: &str, intermediate_from: u64, leaf_from: u64) -> Pki {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut root_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root_params.not_before = date(ISSUED - 3650 * DAY);
        root_params.not_after = date(ISSUED + 3650 * DAY);
        let root = CertifiedIssuer::self_signed(root_params, KeyPair::generate().unwrap()).unwrap();
        let mut mid_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        mid_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        mid_params.not_before = date(intermediate_from);
        mid_params.not_after = date(ISSUED + 1000 * DAY);
        let mid =
            CertifiedIssuer::signed_by(mid_params, KeyPair::generate().unwrap(), &root).unwrap();
        let mut leaf_params = CertificateParams::new(vec![name.to_string()]).unwrap();
        leaf_params.not_before = date(leaf_from);
        leaf_params.not_after = date(leaf_from + 90 * DAY);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &mid).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root.der().clone()).unwrap();
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();
        Pki {
            verifier,
            chain: vec![leaf.der().clone(), mid.der().clone()],
        }
    }

    fn first(p: &Pki, name: &str, from: u64) -> Result<UnixTime, rustls::Error> {
        first_valid_time(
            &*p.verifier,
            &p.chain[0],
            &p.chain[1..],
            &ServerName::try_from(name.to_string()).unwrap(),
            &[],
            at(from),
        )
    }

    #[test]
    fn a_chain_issued_after_the_box_clock_verifies_at_its_not_before() {
        let p = pki("whip.example", ISSUED - 400 * DAY, ISSUED);
        // The box a year behind: the chain is checked at the day it was issued.
        assert_eq!(
            first(&p, "whip.example", ISSUED - 365 * DAY),
            Ok(at(ISSUED))
        );
        // The box's clock inside the validity: checked at the box's clock.
        let later = ISSUED + 10 * DAY;
        assert_eq!(first(&p, "whip.example", later), Ok(at(later)));
    }

    #[test]
    fn an_intermediate_issued_later_than_the_leaf_is_followed() {
        let p = pki("whip.example", ISSUED + 5 * DAY, ISSUED);
        assert_eq!(
            first(&p, "whip.example", ISSUED - 365 * DAY),
            Ok(at(ISSUED + 5 * DAY))
        );
    }

    #[test]
    fn no_time_makes_a_wrong_name_or_an_expired_chain_acceptable() {
        let p = pki("whip.example", ISSUED - 400 * DAY, ISSUED);
        let name = first(&p, "other.example", ISSUED - 365 * DAY).unwrap_err();
        assert!(
            matches!(name, rustls::Error::InvalidCertificate(_)),
            "{name:?}"
        );
        // Expired before the verification time (the floor): refused, never searched backward.
        let expired = first(&p, "whip.example", ISSUED + 200 * DAY).unwrap_err();
        assert!(
            matches!(
                expired,
                rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { .. })
            ),
            "{expired:?}"
        );
    }

    #[test]
    fn an_unknown_issuer_is_refused_at_any_time() {
        let p = pki("whip.example", ISSUED - 400 * DAY, ISSUED);
        let stranger = pki("whip.example", ISSUED - 400 * DAY, ISSUED);
        let e = first_valid_time(
            &*p.verifier,
            &stranger.chain[0],
            &stranger.chain[1..],
            &ServerName::try_from("whip.example").unwrap(),
            &[],
            at(ISSUED - 365 * DAY),
        )
        .unwrap_err();
        // Both test roots have the same (empty) name, so webpki finds the issuer by name and
        // refuses its signature; with another name it would be UnknownIssuer.
        assert!(
            matches!(
                e,
                rustls::Error::InvalidCertificate(
                    CertificateError::UnknownIssuer | CertificateError::BadSignature
                )
            ),
            "{e:?}"
        );
    }

    #[test]
    fn the_recorded_chain_checks_the_servers_date() {
        let p = pki("whip.example", ISSUED - 400 * DAY, ISSUED);
        let v = LaterVerifier {
            inner: p.verifier.clone(),
            from: at(ISSUED - 365 * DAY),
            checked: Mutex::new(None),
        };
        v.verify_server_cert(
            &p.chain[0],
            &p.chain[1..],
            &ServerName::try_from("whip.example").unwrap(),
            &[],
            at(0),
        )
        .expect("verified at its notBefore");
        let checked = lock(&v.checked).take().expect("recorded");
        assert_eq!(checked.at, at(ISSUED));
        assert!(checked.verify_at(&*p.verifier, at(ISSUED + DAY)).is_ok());
        // A Date a year after the leaf expired, or before it was issued: outside its validity.
        assert!(
            checked
                .verify_at(&*p.verifier, at(ISSUED + 400 * DAY))
                .is_err()
        );
        assert!(checked.verify_at(&*p.verifier, at(ISSUED - DAY)).is_err());
    }
}
