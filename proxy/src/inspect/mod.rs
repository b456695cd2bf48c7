//! TLS inspection's machinery: the operator's CA, the leaf certificates minted with it, and the
//! two TLS configurations an inspected connection uses (client-facing, and upstream with its
//! certificate verdict).
//!
//! This module owns the inspection CA in use ([`ca`]), the leaf-certificate cache, the two TLS
//! configurations, the ALPN helpers and what a failed handshake on either side means. It does
//! no per-connection work of its own: `crate::dispatch` decides whether a connection is
//! inspected (`allow` with inspection on; `bypass` is never terminated), `crate::intercept`
//! runs the handshakes and `crate::forward` the requests inside.
//!
//! ALPN is chosen upstream first: the gateway offers the upstream the HTTP protocols the client
//! offered (`h2`, `http/1.1`, in the client's order), then offers the client exactly what the
//! upstream picked, so both sides speak the same HTTP version. When the upstream handshake fails
//! the client handshake still completes, so that every request can be answered with a `502`
//! page that names the reason.

pub mod ca;

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hostgate_matcher::Host;
use moka::future::Cache;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{ClientHello as RustlsHello, ResolvesServerCert, StoresServerSessions};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::config::InspectConfig;
use crate::metrics::{CertResult, Metrics};
use crate::outcome::{Failure, Outcome};

pub use ca::{Authority, CaError, LeafName};

/// The ALPN protocol id of HTTP/2, which the gateway can serve inside an inspected connection.
pub(crate) const H2: &[u8] = b"h2";
/// The ALPN protocol id of HTTP/1.1.
pub(crate) const HTTP11: &[u8] = b"http/1.1";

/// Everything inspection needs, loaded with a generation: the CA, the leaf cache (kept across
/// reloads while the CA and the leaf settings stay the same), the upstream TLS configuration.
pub(crate) struct Inspector {
    config: InspectConfig,
    authority: Arc<Authority>,
    certs: Cache<String, Arc<CertifiedKey>>,
    upstream: Arc<ClientConfig>,
    provider: Arc<CryptoProvider>,
    sessions: Arc<dyn StoresServerSessions>,
    roots: usize,
    metrics: Arc<Metrics>,
}

impl fmt::Debug for Inspector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inspector")
            .field("ca", &self.authority.subject())
            .field("cached_certificates", &self.certs.entry_count())
            .field("roots", &self.roots)
            .field("insecure_skip_upstream_verify", &self.config.insecure_skip_upstream_verify)
            .finish()
    }
}

impl Inspector {
    /// Loads the CA and the upstream trust anchors for `[inspect]`. The leaf cache of `previous`
    /// is kept when it was minted by the same CA with the same settings.
    ///
    /// # Errors
    /// A [`CaError`] naming the file: the CA does not load or validate, a root file is unreadable
    /// or holds no certificate, or there is no trust anchor at all.
    pub(crate) fn load(
        cfg: &InspectConfig,
        previous: Option<&Inspector>,
        metrics: Arc<Metrics>,
    ) -> Result<Inspector, CaError> {
        let authority = Authority::load(&cfg.ca_cert, &cfg.ca_key)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| CaError { file: None, message: format!("upstream TLS configuration: {e}") })?;
        let (upstream, roots) = if cfg.insecure_skip_upstream_verify {
            let verifier = Arc::new(AcceptAnyCertificate(provider.clone()));
            (builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth(), 0)
        } else {
            let roots = trust_anchors(cfg)?;
            let count = roots.len();
            let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| CaError { file: None, message: format!("upstream certificate verifier: {e}") })?;
            (builder.with_webpki_verifier(verifier).with_no_client_auth(), count)
        };
        let certs = match previous {
            Some(p)
                if p.authority.same_files_as(&authority)
                    && p.config.leaf_validity == cfg.leaf_validity
                    && p.config.cert_cache == cfg.cert_cache =>
            {
                p.certs.clone()
            }
            _ => Cache::builder()
                .max_capacity(cfg.cert_cache as u64)
                // A cached leaf always has at least half its validity left when it is served.
                .time_to_live(cfg.leaf_validity / 2)
                .build(),
        };
        Ok(Inspector {
            config: cfg.clone(),
            authority: Arc::new(authority),
            certs,
            upstream: Arc::new(upstream),
            provider,
            sessions: rustls::server::ServerSessionMemoryCache::new(4096),
            roots,
            metrics,
        })
    }

    /// The CA's subject, for logs.
    pub(crate) fn ca_subject(&self) -> &str {
        self.authority.subject()
    }

    /// When the CA certificate expires.
    pub(crate) fn ca_not_after(&self) -> std::time::SystemTime {
        self.authority.not_after()
    }

    /// How many upstream trust anchors are loaded (0 with `insecure_skip_upstream_verify`).
    pub(crate) fn roots(&self) -> usize {
        self.roots
    }

    /// The settings it was loaded from.
    pub(crate) fn config(&self) -> &InspectConfig {
        &self.config
    }

    /// The leaf certificate for `name`: from the cache, or minted now. Concurrent first requests
    /// for one name wait for one mint.
    ///
    /// # Errors
    /// `internal` when minting fails.
    pub(crate) async fn leaf(&self, name: &Host) -> Result<Arc<CertifiedKey>, Failure> {
        let key = name.as_str();
        let minted = AtomicBool::new(false);
        let result = self
            .certs
            .try_get_with_by_ref(key, async {
                minted.store(true, Ordering::Relaxed);
                let started = Instant::now();
                let leaf = match key.parse::<IpAddr>() {
                    Ok(ip) => LeafName::Ip(ip),
                    Err(_) => LeafName::Dns(key.to_string()),
                };
                let r = self.authority.mint(&leaf, self.config.leaf_validity);
                self.metrics.mint_latency(started.elapsed());
                r
            })
            .await;
        match result {
            Ok(leaf) => {
                let how = if minted.load(Ordering::Relaxed) { CertResult::Minted } else { CertResult::Cached };
                self.metrics.certificate(how);
                Ok(leaf)
            }
            Err(e) => {
                self.metrics.certificate(CertResult::Failed);
                Err(Failure::new(Outcome::Internal, format!("minting a certificate for {key}: {e}")))
            }
        }
    }

    /// The client-facing TLS configuration for one connection: `leaf`, and `alpn` offered.
    pub(crate) fn server_config(
        &self,
        leaf: Arc<CertifiedKey>,
        alpn: Vec<Vec<u8>>,
    ) -> Result<Arc<ServerConfig>, Failure> {
        let mut cfg = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Failure::new(Outcome::Internal, format!("client TLS configuration: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(leaf)));
        cfg.alpn_protocols = alpn;
        cfg.session_storage = self.sessions.clone();
        Ok(Arc::new(cfg))
    }

    /// The TLS handshake with the upstream for `name`, offering `alpn`, within `timeout`.
    ///
    /// # Errors
    /// `upstream-certificate` when its certificate does not verify, `upstream-tls` for any other
    /// handshake failure.
    pub(crate) async fn connect_upstream(
        &self,
        tcp: TcpStream,
        name: &Host,
        alpn: Vec<Vec<u8>>,
        timeout: Duration,
    ) -> Result<TlsStream<TcpStream>, Failure> {
        let server_name = ServerName::try_from(name.as_str().to_string()).map_err(|e| {
            Failure::new(Outcome::UpstreamTls, format!("{} is not a TLS server name: {e}", name.as_str()))
        })?;
        let mut cfg = (*self.upstream).clone();
        cfg.alpn_protocols = alpn;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        match tokio::time::timeout(timeout, connector.connect(server_name, tcp)).await {
            Ok(Ok(tls)) => Ok(tls),
            Ok(Err(e)) => Err(upstream_handshake_failure(&e)),
            Err(_) => Err(Failure::new(
                Outcome::UpstreamTls,
                format!("upstream TLS handshake: no answer within {} ms", timeout.as_millis()),
            )),
        }
    }
}

/// Reads the upstream trust anchors: the system's, then `extra_roots`.
fn trust_anchors(cfg: &InspectConfig) -> Result<RootCertStore, CaError> {
    let mut roots = RootCertStore::empty();
    if cfg.system_roots {
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::warn!(error = %e, "inspect: a system trust anchor could not be read");
        }
        let (_added, ignored) = roots.add_parsable_certificates(native.certs);
        if ignored > 0 {
            tracing::warn!(ignored, "inspect: system trust anchors that are not valid certificates were skipped");
        }
    }
    for path in &cfg.extra_roots {
        let err = |message: String| CaError { file: Some(path.clone()), message };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| err(format!("cannot read trust anchors: {e}")))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(format!("not a PEM certificate file: {e}")))?;
        if certs.is_empty() {
            return Err(err("no certificate in the file".to_string()));
        }
        for c in certs {
            roots.add(c).map_err(|e| err(format!("not a usable trust anchor: {e}")))?;
        }
    }
    if roots.is_empty() {
        return Err(CaError {
            file: None,
            message: "inspect: no trust anchor for upstream certificates (system_roots found none and \
                      extra_roots is empty)"
                .to_string(),
        });
    }
    Ok(roots)
}

/// Maps a failed upstream handshake to `upstream-certificate` or `upstream-tls`, with a reason
/// the 502 page can show (it comes from the upstream, never from the client).
fn upstream_handshake_failure(e: &std::io::Error) -> Failure {
    let tls = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(err @ rustls::Error::InvalidCertificate(_)) => {
            Failure::new(Outcome::UpstreamCertificate, format!("upstream TLS handshake: {err}"))
        }
        Some(rustls::Error::AlertReceived(a)) => Failure::new(
            Outcome::UpstreamTls,
            format!(
                "the upstream refused the TLS handshake (alert {a:?}); an endpoint that only accepts \
                 particular TLS versions or cipher suites needs a bypass rule"
            ),
        ),
        Some(other) => Failure::new(Outcome::UpstreamTls, format!("upstream TLS handshake: {other}")),
        None => Failure::new(Outcome::UpstreamTls, format!("upstream TLS handshake: {e}")),
    }
}

/// What a client's failed handshake with the gateway most likely means.
pub(crate) fn client_handshake_failure(e: &std::io::Error) -> Failure {
    use rustls::AlertDescription as A;
    let tls = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let detail = match tls {
        Some(rustls::Error::AlertReceived(a @ (A::UnknownCA | A::BadCertificate | A::CertificateUnknown))) => {
            format!(
                "the client rejected the inspection certificate (alert {a:?}): is the inspection CA \
                 installed as a trusted root on it?"
            )
        }
        Some(other) => format!("client TLS handshake: {other}"),
        None => format!("client TLS handshake: {e}"),
    };
    Failure::new(Outcome::ClientError, detail)
}

/// A server certificate resolver that always answers with one certificate: the leaf minted for
/// the connection's name before the handshake.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: RustlsHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// `insecure_skip_upstream_verify`: any certificate is accepted, but the handshake signatures
/// are still checked (the peer must hold the key of the certificate it sent).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The HTTP protocols among a client's ALPN offer, in its order; `None` when it offered ALPN but
/// no HTTP protocol (the connection does not carry HTTP).
pub(crate) fn http_alpn(offered: &[String]) -> Option<Vec<Vec<u8>>> {
    let http: Vec<Vec<u8>> =
        offered.iter().map(String::as_bytes).filter(|p| *p == H2 || *p == HTTP11).map(<[u8]>::to_vec).collect();
    if http.is_empty() && !offered.is_empty() {
        None
    } else {
        Some(http)
    }
}
