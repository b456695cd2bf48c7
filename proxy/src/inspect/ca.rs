//! The TLS-inspection certificate authority: creating one (`hostgate ca init`), loading and
//! validating one, and minting the leaf certificates the gateway presents to inspected clients.
//!
//! This module owns the CA's two files, the checks a CA must pass before the gateway signs with
//! it, and the shape of every leaf certificate. It does not decide which connections are
//! inspected, cache minted certificates, watch the files for changes, or do any I/O besides
//! reading and writing the CA's files.
//!
//! An [`Authority`] generates one ECDSA P-256 key pair when it is loaded and certifies it for
//! every name it mints (as mitmproxy does): minting costs one signature and no key generation,
//! and the key never leaves the process. Leaf certificates carry exactly one subject alternative
//! name, the one asked for, and never outlive the CA.
//!
//! ```
//! use std::time::Duration;
//! use hostgate_proxy::inspect::ca::{self, Authority, InitOptions, LeafName};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let files = ca::init(dir.path(), &InitOptions::default()).unwrap();
//! let authority = Authority::load(&files.cert, &files.key).unwrap();
//! assert_eq!(authority.subject(), "CN=hostgate inspection CA, O=hostgate");
//! let leaf = authority.mint(&LeafName::Dns("example.com".into()), Duration::from_secs(86400)).unwrap();
//! assert_eq!(leaf.cert.len(), 2); // the leaf, then the CA
//! ```

use std::fmt;
use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, GeneralSubtree, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, NameConstraints, SanType, SerialNumber,
};
use rustls::crypto::SecureRandom;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::{CertifiedKey, SigningKey};
use x509_parser::time::ASN1Time;

/// The certificate's file name in the directory given to [`init`].
pub const CERT_FILE: &str = "hostgate-ca.pem";
/// The private key's file name in the directory given to [`init`].
pub const KEY_FILE: &str = "hostgate-ca.key";

/// How far back `not_before` is set, so that clients whose clocks run slow accept a new
/// certificate.
const BACKDATE: i64 = 3600;
/// The longest common name X.509 allows (`ub-common-name`), in bytes.
const MAX_COMMON_NAME: usize = 64;

/// Where a CA's files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// The private key (PKCS#8 PEM).
    pub key: PathBuf,
}

impl CaFiles {
    /// The files [`init`] writes in `dir`.
    pub fn in_dir(dir: &Path) -> CaFiles {
        CaFiles { cert: dir.join(CERT_FILE), key: dir.join(KEY_FILE) }
    }
}

/// Options of `hostgate ca init`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitOptions {
    /// The subject's common name (1 to 64 bytes).
    pub common_name: String,
    /// Days from now until the certificate expires (at least 1).
    pub validity_days: u32,
    /// DNS subtrees the CA may certify (critical NameConstraints); empty: any name.
    pub permitted_dns: Vec<String>,
    /// Replace existing files instead of refusing to.
    pub force: bool,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            common_name: "hostgate inspection CA".to_owned(),
            validity_days: 3650,
            permitted_dns: Vec::new(),
            force: false,
        }
    }
}

/// An error about a CA: which file (if any) and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaError {
    /// The file at fault, if one is.
    pub file: Option<PathBuf>,
    /// What is wrong.
    pub message: String,
}

impl CaError {
    fn at(file: &Path, message: impl Into<String>) -> CaError {
        CaError { file: Some(file.to_path_buf()), message: message.into() }
    }

    fn new(message: impl Into<String>) -> CaError {
        CaError { file: None, message: message.into() }
    }
}

impl fmt::Display for CaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}: {}", file.display(), self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for CaError {}

/// Creates a new CA in `dir` (created if missing): `hostgate-ca.pem`, the self-signed
/// certificate (mode 0644), and `hostgate-ca.key`, its ECDSA P-256 private key (PKCS#8 PEM,
/// mode 0600 from its creation on).
///
/// The certificate's subject is `CN=<common_name>, O=hostgate`; it is a CA that may sign leaf
/// certificates only (pathlen 0), valid from an hour ago for `validity_days` days, with a random
/// serial. Existing files are not replaced unless `opts.force`; nothing is written when the
/// options are invalid.
pub fn init(dir: &Path, opts: &InitOptions) -> Result<CaFiles, CaError> {
    let files = CaFiles::in_dir(dir);
    let common_name = opts.common_name.trim();
    if common_name.is_empty() || common_name.len() > MAX_COMMON_NAME {
        return Err(CaError::new(format!(
            "the common name must be 1 to {MAX_COMMON_NAME} bytes (got {})",
            common_name.len()
        )));
    }
    if opts.validity_days == 0 {
        return Err(CaError::new("the validity must be at least one day"));
    }
    let permitted = opts.permitted_dns.iter().map(|d| permitted_domain(d)).collect::<Result<Vec<_>, _>>()?;
    if !opts.force {
        for file in [&files.cert, &files.key] {
            // `symlink_metadata`: a dangling symbolic link is in the way too.
            if file.symlink_metadata().is_ok() {
                return Err(CaError::at(file, "already exists; not replaced (--force replaces it)"));
            }
        }
    }

    let rng = random_source();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| CaError::new(format!("cannot generate the CA key ({e})")))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.distinguished_name.push(DnType::OrganizationName, "hostgate");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.serial_number = Some(random_serial(rng)?);
    let now = unix_secs(SystemTime::now());
    params.not_before = asn1_time(now - BACKDATE)?.to_datetime();
    params.not_after = asn1_time(now.saturating_add(i64::from(opts.validity_days) * 86_400))?.to_datetime();
    if !permitted.is_empty() {
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: permitted.into_iter().map(GeneralSubtree::DnsName).collect(),
            excluded_subtrees: Vec::new(),
        });
    }
    // rcgen adds the subject key identifier to every CA certificate.
    let cert = params.self_signed(&key).map_err(|e| CaError::new(format!("cannot sign the CA certificate ({e})")))?;

    std::fs::create_dir_all(dir).map_err(|e| CaError::at(dir, format!("cannot create the directory ({e})")))?;
    write_new(&files.key, key.serialize_pem().as_bytes(), 0o600, opts.force)?;
    write_new(&files.cert, cert.pem().as_bytes(), 0o644, opts.force)?;
    Ok(files)
}

/// A permitted DNS subtree: a host name as the policy normalises it (lowercase, punycode, no
/// trailing dot), and not an IP address.
fn permitted_domain(domain: &str) -> Result<String, CaError> {
    let bad = |why: String| CaError::new(format!("permitted DNS name {domain:?}: {why}"));
    if domain.parse::<IpAddr>().is_ok() {
        return Err(bad("an IP address, not a domain name".to_owned()));
    }
    let host = hostgate_matcher::Host::new(domain).map_err(|e| bad(e.to_string()))?;
    Ok(host.as_str().to_owned())
}

/// Creates `file` with `mode` and writes `bytes` to it. With `replace`, an existing file is
/// removed first, so that the mode is the new file's and never an old file's.
fn write_new(file: &Path, bytes: &[u8], mode: u32, replace: bool) -> Result<(), CaError> {
    if replace {
        match std::fs::remove_file(file) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(CaError::at(file, format!("cannot remove the old file ({e})"))),
        }
    }
    let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(file).map_err(|e| {
        if e.kind() == ErrorKind::AlreadyExists {
            CaError::at(file, "already exists; not replaced (--force replaces it)")
        } else {
            CaError::at(file, format!("cannot create ({e})"))
        }
    })?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|e| CaError::at(file, format!("cannot write ({e})")))
}

/// The name a leaf certificate is minted for: its only subject alternative name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LeafName {
    /// A DNS name, as the client asked for it (normalised by the caller).
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
}

impl fmt::Display for LeafName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeafName::Dns(name) => f.write_str(name),
            LeafName::Ip(ip) => ip.fmt(f),
        }
    }
}

/// A loaded, validated inspection CA that mints leaf certificates.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    subject: String,
    not_before: i64,
    not_after: i64,
    /// The key pair every leaf certifies, as rcgen's (to build certificates) and as rustls'
    /// (to sign handshakes).
    leaf_key: KeyPair,
    leaf_signer: Arc<dyn SigningKey>,
    rng: &'static dyn SecureRandom,
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the keys.
        f.debug_struct("Authority")
            .field("subject", &self.subject)
            .field("not_after", &format_utc(self.not_after()))
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// Reads the CA certificate (PEM) and its private key (PEM: PKCS#8, SEC1 or PKCS#1) and
    /// checks that the certificate is a CA (basicConstraints cA), may sign certificates (if it
    /// has a keyUsage), is valid now, and certifies this key. Then generates the leaf key pair.
    pub fn load(cert: &Path, key: &Path) -> Result<Authority, CaError> {
        let cert_pem = std::fs::read(cert).map_err(|e| CaError::at(cert, format!("cannot read ({e})")))?;
        let cert_der = CertificateDer::from_pem_slice(&cert_pem).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                CaError::at(cert, "no certificate in this file (expected a PEM `BEGIN CERTIFICATE` block)")
            }
            // Its Display prints the marker as a list of bytes.
            rustls::pki_types::pem::Error::MissingSectionEnd { .. } => {
                CaError::at(cert, "not a PEM certificate (a `BEGIN` line without its `END` line)")
            }
            e => CaError::at(cert, format!("not a PEM certificate ({e})")),
        })?;
        let key_pem = std::fs::read_to_string(key).map_err(|e| CaError::at(key, format!("cannot read ({e})")))?;
        let ca_key =
            KeyPair::from_pem(&key_pem).map_err(|e| CaError::at(key, format!("not a usable private key ({e})")))?;

        let (subject, not_before, not_after) = {
            let (_, x509) = x509_parser::parse_x509_certificate(&cert_der)
                .map_err(|e| CaError::at(cert, format!("not an X.509 certificate ({e})")))?;
            match x509.basic_constraints() {
                Ok(Some(bc)) if bc.value.ca => {}
                Ok(_) => return Err(CaError::at(cert, "not a CA certificate (basicConstraints cA is not set)")),
                Err(e) => return Err(CaError::at(cert, format!("bad basicConstraints ({e})"))),
            }
            match x509.key_usage() {
                Ok(Some(ku)) if !ku.value.key_cert_sign() => {
                    return Err(CaError::at(cert, "its keyUsage does not allow signing certificates (keyCertSign)"))
                }
                Ok(_) => {}
                Err(e) => return Err(CaError::at(cert, format!("bad keyUsage ({e})"))),
            }
            let validity = x509.validity();
            let (not_before, not_after) = (validity.not_before.timestamp(), validity.not_after.timestamp());
            let now = unix_secs(SystemTime::now());
            if now < not_before {
                return Err(CaError::at(
                    cert,
                    format!(
                        "not valid yet: valid from {} (now {})",
                        format_utc(system_time(not_before)),
                        format_utc(system_time(now))
                    ),
                ));
            }
            if now > not_after {
                return Err(CaError::at(
                    cert,
                    format!("expired on {} (now {})", format_utc(system_time(not_after)), format_utc(system_time(now))),
                ));
            }
            if x509.public_key().subject_public_key.data.as_ref() != ca_key.public_key_raw() {
                return Err(CaError::at(key, format!("is not the private key of {}", cert.display())));
            }
            (x509.subject().to_string(), not_before, not_after)
        };
        let issuer = Issuer::from_ca_cert_der(&cert_der, ca_key)
            .map_err(|e| CaError::at(cert, format!("cannot be used to sign ({e})")))?;

        let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CaError::new(format!("cannot generate the leaf key ({e})")))?;
        let leaf_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let leaf_signer = rustls::crypto::ring::sign::any_ecdsa_type(&leaf_der)
            .map_err(|e| CaError::new(format!("cannot use the leaf key ({e})")))?;

        Ok(Authority { issuer, cert_der, subject, not_before, not_after, leaf_key, leaf_signer, rng: random_source() })
    }

    /// A leaf certificate for `name`, chained to this CA and certifying the shared leaf key.
    ///
    /// Its only subject alternative name is `name`; the subject is `CN=name` when the name fits
    /// (64 bytes), empty otherwise. It is a TLS server certificate (serverAuth,
    /// digitalSignature, not a CA) with a random 16-byte serial, valid from an hour ago (never
    /// before the CA) for `validity`, and never after the CA.
    pub fn mint(&self, name: &LeafName, validity: Duration) -> Result<Arc<CertifiedKey>, CaError> {
        let now = unix_secs(SystemTime::now());
        if now >= self.not_after {
            return Err(CaError::new(format!(
                "the inspection CA ({}) expired on {}",
                self.subject,
                format_utc(self.not_after())
            )));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let text = name.to_string();
        if text.len() <= MAX_COMMON_NAME {
            params.distinguished_name.push(DnType::CommonName, text.as_str());
        }
        params.subject_alt_names = vec![match name {
            LeafName::Dns(dns) => SanType::DnsName(
                dns.as_str().try_into().map_err(|e| CaError::new(format!("cannot certify {dns:?} ({e})")))?,
            ),
            LeafName::Ip(ip) => SanType::IpAddress(*ip),
        }];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial(self.rng)?);
        let validity = i64::try_from(validity.as_secs()).unwrap_or(i64::MAX);
        params.not_before = asn1_time((now - BACKDATE).max(self.not_before))?.to_datetime();
        params.not_after = asn1_time(now.saturating_add(validity).min(self.not_after))?.to_datetime();
        let cert = params
            .signed_by(&self.leaf_key, &self.issuer)
            .map_err(|e| CaError::new(format!("cannot sign a certificate for {name} ({e})")))?;
        Ok(Arc::new(CertifiedKey::new(vec![cert.der().clone(), self.cert_der.clone()], self.leaf_signer.clone())))
    }

    /// The CA certificate (DER).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA's subject, e.g. `CN=hostgate inspection CA, O=hostgate`.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// When the CA certificate expires.
    pub fn not_after(&self) -> SystemTime {
        system_time(self.not_after)
    }

    /// Whether `other` was loaded from the same certificate and the same private key (so that
    /// certificates minted by one are as good as the other's, e.g. across a reload).
    pub fn same_files_as(&self, other: &Authority) -> bool {
        self.cert_der == other.cert_der && self.issuer.key().serialized_der() == other.issuer.key().serialized_der()
    }
}

/// `t` in UTC as `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339), for messages.
pub fn format_utc(t: SystemTime) -> String {
    let secs = unix_secs(t);
    match ASN1Time::from_timestamp(secs) {
        Ok(t) => {
            let t = t.to_datetime();
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        }
        Err(_) => format!("{secs} s after the Unix epoch"),
    }
}

/// The operating system's random numbers, through the crypto provider rustls uses.
fn random_source() -> &'static dyn SecureRandom {
    rustls::crypto::ring::default_provider().secure_random
}

/// A random, positive, 16-byte serial number (the top bit clear, the next one set, so that it
/// is always encoded in exactly 16 bytes).
fn random_serial(rng: &dyn SecureRandom) -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes).map_err(|_| CaError::new("no random numbers from the operating system"))?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// Seconds since the Unix epoch (negative before it).
fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// The inverse of [`unix_secs`] for certificate times (years 0 to 9999, which never overflow).
fn system_time(secs: i64) -> SystemTime {
    let d = Duration::from_secs(secs.unsigned_abs());
    let t = if secs >= 0 { UNIX_EPOCH.checked_add(d) } else { UNIX_EPOCH.checked_sub(d) };
    t.unwrap_or(UNIX_EPOCH)
}

/// A certificate time, or an error when it cannot be encoded (past year 9999).
fn asn1_time(secs: i64) -> Result<ASN1Time, CaError> {
    ASN1Time::from_timestamp(secs)
        .map_err(|_| CaError::new(format!("{secs} s after the Unix epoch cannot be a certificate time")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use rustls::client::danger::ServerCertVerifier;
    use rustls::client::WebPkiServerVerifier;
    use rustls::pki_types::{ServerName, UnixTime};
    use rustls::RootCertStore;

    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn new_ca(opts: &InitOptions) -> (tempfile::TempDir, CaFiles, Authority) {
        let dir = tempfile::tempdir().unwrap();
        let files = init(dir.path(), opts).unwrap();
        let authority = Authority::load(&files.cert, &files.key).unwrap();
        (dir, files, authority)
    }

    fn dns(name: &str) -> LeafName {
        LeafName::Dns(name.to_owned())
    }

    /// What a rustls client trusting only `authority` says of `leaf` for `server_name`.
    fn verify(authority: &Authority, leaf: &CertifiedKey, server_name: &str) -> Result<(), rustls::Error> {
        let mut roots = RootCertStore::empty();
        roots.add(authority.cert_der().clone()).unwrap();
        let verifier = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let name = ServerName::try_from(server_name.to_owned()).unwrap();
        verifier.verify_server_cert(&leaf.cert[0], &leaf.cert[1..], &name, &[], UnixTime::now()).map(|_| ())
    }

    /// Writes `params`, self-signed with a new key, as a CA's two files.
    fn write_self_signed(dir: &Path, params: &CertificateParams) -> CaFiles {
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let files = CaFiles::in_dir(dir);
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    fn load_err(files: &CaFiles) -> String {
        Authority::load(&files.cert, &files.key).unwrap_err().to_string()
    }

    #[test]
    fn init_then_load() {
        let (_dir, files, authority) = new_ca(&InitOptions::default());
        assert_eq!(files.cert.file_name().unwrap(), CERT_FILE);
        assert_eq!(files.key.file_name().unwrap(), KEY_FILE);
        assert_eq!(authority.subject(), "CN=hostgate inspection CA, O=hostgate");
        let left = authority.not_after().duration_since(SystemTime::now()).unwrap();
        assert!(left > 3649 * DAY && left <= 3650 * DAY, "{left:?}");
        assert!(std::fs::read_to_string(&files.key).unwrap().starts_with("-----BEGIN PRIVATE KEY-----"));
        let debug = format!("{authority:?}");
        assert!(debug.contains("hostgate inspection CA") && !debug.contains("key"), "{debug}");

        let again = Authority::load(&files.cert, &files.key).unwrap();
        assert!(authority.same_files_as(&again));
        let (_other_dir, _, other) = new_ca(&InitOptions::default());
        assert!(!authority.same_files_as(&other));
    }

    #[test]
    fn the_ca_certificate_is_shaped_as_documented() {
        let opts = InitOptions { common_name: "Acme inspection".into(), validity_days: 30, ..InitOptions::default() };
        let (_dir, _, authority) = new_ca(&opts);
        let (_, x509) = x509_parser::parse_x509_certificate(authority.cert_der()).unwrap();
        assert_eq!(x509.subject().to_string(), "CN=Acme inspection, O=hostgate");
        assert_eq!(x509.issuer(), x509.subject());
        let bc = x509.basic_constraints().unwrap().unwrap();
        assert!(bc.critical && bc.value.ca);
        assert_eq!(bc.value.path_len_constraint, Some(0));
        let ku = x509.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign() && ku.digital_signature());
        assert!(x509.iter_extensions().any(|e| matches!(
            e.parsed_extension(),
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(_)
        )));
        assert!(x509.name_constraints().unwrap().is_none());
        assert_eq!(x509.raw_serial().len(), 16);
        let now = unix_secs(SystemTime::now());
        let v = x509.validity();
        assert!((now - BACKDATE - v.not_before.timestamp()).abs() < 60);
        assert!((now + 30 * 86_400 - v.not_after.timestamp()).abs() < 60);
    }

    #[test]
    fn key_is_0600_and_certificate_0644() {
        let dir = tempfile::tempdir().unwrap();
        let files = init(&dir.path().join("new/sub"), &InitOptions::default()).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&files.key), 0o600);
        // The test process's umask may clear group or other bits, never add them.
        assert_eq!(mode(&files.cert) & !0o644, 0);
        assert_eq!(mode(&files.cert) & 0o600, 0o600);
    }

    #[test]
    fn init_refuses_to_overwrite_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let files = init(dir.path(), &InitOptions::default()).unwrap();
        let (cert, key) = (std::fs::read(&files.cert).unwrap(), std::fs::read(&files.key).unwrap());

        let err = init(dir.path(), &InitOptions::default()).unwrap_err();
        assert_eq!(err.file.as_deref(), Some(files.cert.as_path()), "{err}");
        assert!(err.to_string().contains("already exists"), "{err}");
        // Only the key there: still refused, and the key is untouched.
        std::fs::remove_file(&files.cert).unwrap();
        let err = init(dir.path(), &InitOptions::default()).unwrap_err();
        assert_eq!(err.file.as_deref(), Some(files.key.as_path()), "{err}");
        assert!(!files.cert.exists());
        assert_eq!(std::fs::read(&files.key).unwrap(), key);

        // Forced: replaced, and the key's mode is the new file's even if the old one was looser.
        std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o644)).unwrap();
        init(dir.path(), &InitOptions { force: true, ..InitOptions::default() }).unwrap();
        assert_ne!(std::fs::read(&files.cert).unwrap(), cert);
        assert_ne!(std::fs::read(&files.key).unwrap(), key);
        assert_eq!(std::fs::metadata(&files.key).unwrap().permissions().mode() & 0o777, 0o600);
        Authority::load(&files.cert, &files.key).unwrap();
    }

    #[test]
    fn init_rejects_bad_options_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let bad = [
            InitOptions { common_name: " ".into(), ..InitOptions::default() },
            InitOptions { common_name: "x".repeat(65), ..InitOptions::default() },
            InitOptions { validity_days: 0, ..InitOptions::default() },
            InitOptions { permitted_dns: vec!["a..b".into()], ..InitOptions::default() },
            InitOptions { permitted_dns: vec!["*.example.com".into()], ..InitOptions::default() },
            InitOptions { permitted_dns: vec!["10.0.0.1".into()], ..InitOptions::default() },
        ];
        for opts in bad {
            let err = init(dir.path(), &opts).unwrap_err();
            assert_eq!(err.file, None, "{err}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn load_rejects_a_certificate_that_is_not_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_self_signed(dir.path(), &CertificateParams::new(vec!["leaf.test".to_owned()]).unwrap());
        let err = load_err(&files);
        assert!(err.starts_with(&files.cert.display().to_string()), "{err}");
        assert!(err.contains("not a CA certificate"), "{err}");

        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let files = write_self_signed(dir.path(), &params);
        assert!(load_err(&files).contains("keyCertSign"), "{}", load_err(&files));
    }

    #[test]
    fn load_rejects_a_key_that_does_not_match() {
        let (_dir, files, _) = new_ca(&InitOptions::default());
        std::fs::write(&files.key, KeyPair::generate().unwrap().serialize_pem()).unwrap();
        let err = load_err(&files);
        assert_eq!(err, format!("{}: is not the private key of {}", files.key.display(), files.cert.display()));
    }

    #[test]
    fn load_rejects_garbage() {
        let (_dir, files, _) = new_ca(&InitOptions::default());
        let key = std::fs::read(&files.key).unwrap();
        std::fs::write(&files.cert, "hello\n").unwrap();
        let err = load_err(&files);
        assert!(err.starts_with(&format!("{}: no certificate", files.cert.display())), "{err}");
        // A key where the certificate should be.
        std::fs::write(&files.cert, &key).unwrap();
        assert!(load_err(&files).contains("no certificate"));
        // A PEM certificate block whose content is not a certificate.
        std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n").unwrap();
        assert!(load_err(&files).contains("not an X.509 certificate"), "{}", load_err(&files));

        let (_dir, files, _) = new_ca(&InitOptions::default());
        std::fs::write(&files.key, "-----BEGIN PRIVATE KEY-----\naGVsbG8=\n-----END PRIVATE KEY-----\n").unwrap();
        let err = load_err(&files);
        assert!(err.starts_with(&format!("{}: not a usable private key", files.key.display())), "{err}");
    }

    #[test]
    fn load_names_a_missing_file() {
        let (dir, files, _) = new_ca(&InitOptions::default());
        let missing = dir.path().join("nope.pem");
        let err = Authority::load(&missing, &files.key).unwrap_err();
        assert_eq!(err.file.as_deref(), Some(missing.as_path()));
        assert!(err.to_string().starts_with(&format!("{}: cannot read", missing.display())), "{err}");
        let err = Authority::load(&files.cert, &missing).unwrap_err();
        assert_eq!(err.file.as_deref(), Some(missing.as_path()));
    }

    #[test]
    fn load_rejects_an_expired_or_future_ca() {
        let dir = tempfile::tempdir().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        let err = load_err(&write_self_signed(dir.path(), &params));
        assert!(err.contains("expired on 2001-01-01T00:00:00Z (now "), "{err}");

        params.not_before = rcgen::date_time_ymd(9000, 1, 1);
        params.not_after = rcgen::date_time_ymd(9001, 1, 1);
        let err = load_err(&write_self_signed(dir.path(), &params));
        assert!(err.contains("not valid yet: valid from 9000-01-01T00:00:00Z"), "{err}");
    }

    #[test]
    fn a_minted_leaf_verifies_for_its_name_only() {
        let (_dir, _, authority) = new_ca(&InitOptions::default());
        let leaf = authority.mint(&dns("www.example.com"), DAY).unwrap();
        assert_eq!(leaf.cert.len(), 2);
        assert_eq!(&leaf.cert[1], authority.cert_der());
        leaf.keys_match().unwrap();
        verify(&authority, &leaf, "www.example.com").unwrap();
        assert!(verify(&authority, &leaf, "example.com").is_err());
        assert!(verify(&authority, &leaf, "www.example.org").is_err());

        // Another CA's client does not trust it.
        let (_other_dir, _, other) = new_ca(&InitOptions::default());
        assert!(verify(&other, &leaf, "www.example.com").is_err());
    }

    #[test]
    fn an_ip_leaf_verifies_for_that_ip() {
        let (_dir, _, authority) = new_ca(&InitOptions::default());
        for ip in ["192.0.2.7", "2001:db8::7"] {
            let leaf = authority.mint(&LeafName::Ip(ip.parse().unwrap()), DAY).unwrap();
            verify(&authority, &leaf, ip).unwrap();
            assert!(verify(&authority, &leaf, "192.0.2.8").is_err());
        }
    }

    #[test]
    fn the_leaf_certificate_is_shaped_as_documented() {
        let (_dir, _, authority) = new_ca(&InitOptions { validity_days: 2, ..InitOptions::default() });
        let a = authority.mint(&dns("a.example.com"), 7 * DAY).unwrap();
        let b = authority.mint(&dns("b.example.com"), DAY).unwrap();
        // One key for every leaf.
        assert!(Arc::ptr_eq(&a.key, &b.key));

        let (_, x509) = x509_parser::parse_x509_certificate(&a.cert[0]).unwrap();
        assert_eq!(x509.subject().to_string(), "CN=a.example.com");
        assert_eq!(x509.issuer().to_string(), "CN=hostgate inspection CA, O=hostgate");
        let san = x509.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(format!("{:?}", san.general_names), r#"[DNSName("a.example.com")]"#);
        assert!(!x509.basic_constraints().unwrap().unwrap().value.ca);
        let ku = x509.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && !ku.key_cert_sign());
        let eku = x509.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        assert!(x509.iter_extensions().any(|e| matches!(
            e.parsed_extension(),
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(_)
        )));
        assert_eq!(x509.raw_serial().len(), 16);
        let (_, other) = x509_parser::parse_x509_certificate(&b.cert[0]).unwrap();
        assert_ne!(x509.raw_serial(), other.raw_serial());
        // Seven days asked, two left on the CA: the CA's end.
        assert_eq!(x509.validity().not_after.timestamp(), unix_secs(authority.not_after()));
        let now = unix_secs(SystemTime::now());
        assert!((now - BACKDATE - x509.validity().not_before.timestamp()).abs() < 60);
        let (_, short) = x509_parser::parse_x509_certificate(&b.cert[0]).unwrap();
        assert!((now + 86_400 - short.validity().not_after.timestamp()).abs() < 60);
    }

    #[test]
    fn a_long_name_has_no_common_name() {
        let (_dir, _, authority) = new_ca(&InitOptions::default());
        let long = format!("{}.{}.example.com", "a".repeat(40), "b".repeat(40));
        let leaf = authority.mint(&dns(&long), DAY).unwrap();
        let (_, x509) = x509_parser::parse_x509_certificate(&leaf.cert[0]).unwrap();
        assert_eq!(x509.subject().iter_common_name().count(), 0);
        verify(&authority, &leaf, &long).unwrap();
    }

    #[test]
    fn name_constraints_are_enforced_by_clients() {
        let opts = InitOptions { permitted_dns: vec!["Example.COM.".into()], ..InitOptions::default() };
        let (_dir, _, authority) = new_ca(&opts);
        let (_, x509) = x509_parser::parse_x509_certificate(authority.cert_der()).unwrap();
        let nc = x509.name_constraints().unwrap().unwrap();
        assert!(nc.critical);
        let permitted = nc.value.permitted_subtrees.as_ref().unwrap();
        assert_eq!(format!("{:?}", permitted[0].base), r#"DNSName("example.com")"#);

        let inside = authority.mint(&dns("a.example.com"), DAY).unwrap();
        verify(&authority, &inside, "a.example.com").unwrap();
        let outside = authority.mint(&dns("evil.test"), DAY).unwrap();
        assert!(verify(&authority, &outside, "evil.test").is_err());
    }

    #[test]
    fn authority_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Authority>();
    }

    #[test]
    fn format_utc_is_rfc3339() {
        assert_eq!(format_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(UNIX_EPOCH + Duration::from_secs(2_000_000_000)), "2033-05-18T03:33:20Z");
    }
}
