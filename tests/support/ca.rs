//! A throw-away certificate authority: issues server certificates for test names, and gives
//! rustls clients (and curl / openssl, through a PEM file) a root store that trusts it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tempfile::TempDir;

/// The crypto provider of every test config (the workspace builds rustls with `ring` only).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A CA whose certificate is also written to `ca.pem` in a temporary directory.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert: CertificateDer<'static>,
    dir: TempDir,
    pem_path: PathBuf,
}

impl TestCa {
    /// A new CA (ECDSA P-256).
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "hostgate test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pem_path = dir.path().join("ca.pem");
        std::fs::write(&pem_path, cert.pem()).unwrap();
        TestCa { issuer: Issuer::new(params, key), cert: cert.der().clone(), dir, pem_path }
    }

    /// A certificate for `names` (DNS names) signed by this CA, and its private key.
    pub fn certify(&self, names: &[&str]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("hostgate test"));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (vec![cert.der().clone(), self.cert.clone()], key)
    }

    /// A server config presenting a certificate for `names` (no ALPN).
    pub fn issue(&self, names: &[&str]) -> ServerConfig {
        let (chain, key) = self.certify(names);
        ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap()
    }

    /// The CA certificate in PEM, for `curl --cacert` and `openssl s_client -CAfile`.
    pub fn ca_pem_path(&self) -> &Path {
        &self.pem_path
    }

    /// The directory holding `ca.pem`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A root store holding only this CA.
    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        roots
    }

    /// A client config trusting only this CA (no ALPN).
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots())
            .with_no_client_auth()
    }
}
