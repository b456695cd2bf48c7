//! Soak: the real `hostgate` binary under steady mixed traffic for a long time, with a reload
//! every 10 seconds and a broken reload every minute. Not part of `cargo test`.
//!
//! ```sh
//! cargo build --release                                        # the binary under test
//! cargo run --release --example soak -- --minutes 30 --rate 40
//! ```
//!
//! Options: `--minutes M` (30; fractions allowed), `--rate N` (new connections per second, 40),
//! `--bin PATH` (default `$CARGO_TARGET_DIR/release/hostgate`, else `target/release/hostgate` of
//! this workspace), `--warmup S` (seconds before the "start" RSS/fd sample, 60), `--keep` (keep
//! the working directory, which holds the configuration and the gateway's log, also on success).
//!
//! What runs, all on loopback:
//! - in this process, an HTTPS upstream (tokio-rustls + hyper HTTP/1.1, certificate from a
//!   throw-away rcgen CA for every test name) and a plain HTTP upstream (hyper);
//! - `hostgate run` as a child process, with a configuration written to a temporary directory: a
//!   connect listener and the admin listener on `127.0.0.1:0` (their addresses are read from the
//!   gateway's `listening` and `admin listener` log lines, so no port is guessed), JSON logs on
//!   standard error (parsed here and copied to `gateway.log`), `[resolve]` pins for every test
//!   name, loopback exempt from the SSRF guard, and TLS inspection with a CA made by
//!   `hostgate ca init` and the upstream CA as the only trust anchor;
//! - traffic: `--rate` new connections a second, one task each, cycling through the kinds below;
//!   every 10 s the rules file is rewritten with `flip.test` toggled between allow and deny and
//!   the gateway gets SIGHUP (`kill -HUP`); every 60 s the file gets a bad rule line instead, and
//!   the reload must fail and keep the generation (log line and `/metrics`).
//!
//! | kind | request | expected |
//! |---|---|---|
//! | `bypass` | CONNECT bypass.test, TLS trusting the upstream CA, GET | 200 from the upstream, not inspected |
//! | `allow` | CONNECT allow.test, TLS trusting hostgate's CA, GET | 200 from the upstream, inspected |
//! | `allow-denied-path` | the same, GET /admin/… | 403 from the gateway |
//! | `deny` | CONNECT deny.test | 403 |
//! | `http-allow` | GET http://plain.test/… (absolute form) | 200 from the upstream |
//! | `http-deny` | GET http://blocked.test/… or http://plain.test/admin/… | 403 |
//! | `flip` | CONNECT flip.test, then as `allow` | what the generation that decided it says |
//!
//! Each connection is checked twice: by what the client saw, and by the gateway's access event
//! for it (found by the client's address): its action, and for `flip.test` its `generation`,
//! looked up in the map generation → rules-file version that the reloads build (the version
//! written before each SIGHUP, keyed by the generation of the `reloaded` line that follows).
//! The upstreams also count requests that should never have reached them. The child's RSS and
//! open file descriptors are sampled every 10 s. At the end: a summary table, and exit status 1
//! if any check failed.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::{TlsAcceptor, TlsConnector};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

/// The gateway's log messages this program waits for.
const RELOADED: &str = "reloaded; new connections use the new generation";
const RELOAD_FAILED: &str = "reload failed; the current generation keeps serving";

/// Names served by the HTTPS upstream (one certificate for all of them).
const TLS_NAMES: &[&str] = &["bypass.test", "allow.test", "deny.test", "flip.test"];
/// Names served by the plain HTTP upstream.
const HTTP_NAMES: &[&str] = &["plain.test", "blocked.test"];

/// How often the rules are reloaded, and every how many reloads one is broken on purpose.
const RELOAD_EVERY: Duration = Duration::from_secs(10);
const BROKEN_EVERY: u64 = 6;
/// How long one connection may take, end to end, before it counts as failed.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(20);
/// How long after a connection ends its access event may take to show up in the log.
const EVENT_TIMEOUT: Duration = Duration::from_secs(15);
/// File descriptors the gateway may hold at the end beyond the start sample before it counts as
/// a leak (the start sample is taken under load, so a few connections' sockets are in it).
const FD_SLACK: i64 = 32;

// ------------------------------------------------------------------------------------------------
// Command line.

#[derive(Debug)]
struct Args {
    minutes: f64,
    rate: f64,
    bin: PathBuf,
    warmup: Duration,
    keep: bool,
}

impl Args {
    fn parse() -> Result<Args> {
        let mut args =
            Args { minutes: 30.0, rate: 40.0, bin: default_bin(), warmup: Duration::from_secs(60), keep: false };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
            match arg.as_str() {
                "--minutes" => args.minutes = value("--minutes")?.parse()?,
                "--rate" => args.rate = value("--rate")?.parse()?,
                "--bin" => args.bin = PathBuf::from(value("--bin")?),
                "--warmup" => args.warmup = Duration::from_secs_f64(value("--warmup")?.parse()?),
                "--keep" => args.keep = true,
                "-h" | "--help" => {
                    println!(
                        "usage: soak [--minutes 30] [--rate 40] [--bin PATH] [--warmup SECONDS] [--keep]\n\
                         (build the binary first: cargo build --release; default --bin {})",
                        default_bin().display()
                    );
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other:?} (try --help)").into()),
            }
        }
        if !(args.minutes > 0.0 && args.rate > 0.0) {
            return Err("--minutes and --rate must be positive".into());
        }
        if !args.bin.is_file() {
            return Err(format!(
                "no hostgate binary at {}: run `cargo build --release` first, or pass --bin",
                args.bin.display()
            )
            .into());
        }
        Ok(args)
    }
}

/// `$CARGO_TARGET_DIR/release/hostgate`, else this workspace's `target/release/hostgate`.
fn default_bin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("release").join("hostgate")
}

// ------------------------------------------------------------------------------------------------
// The kinds of traffic, and decisions.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Bypass,
    Allow,
    AllowDeniedPath,
    Deny,
    HttpAllow,
    HttpDeny,
    Flip,
}

/// The order new connections cycle through: `flip` twice, every other kind once.
const CYCLE: [Kind; 8] = [
    Kind::Bypass,
    Kind::Allow,
    Kind::Flip,
    Kind::HttpAllow,
    Kind::Deny,
    Kind::AllowDeniedPath,
    Kind::Flip,
    Kind::HttpDeny,
];

const KINDS: [Kind; 7] =
    [Kind::Bypass, Kind::Allow, Kind::AllowDeniedPath, Kind::Deny, Kind::HttpAllow, Kind::HttpDeny, Kind::Flip];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Bypass => "bypass",
            Kind::Allow => "allow",
            Kind::AllowDeniedPath => "allow-denied-path",
            Kind::Deny => "deny",
            Kind::HttpAllow => "http-allow",
            Kind::HttpDeny => "http-deny",
            Kind::Flip => "flip",
        }
    }

    /// Whether the client should get the upstream's answer (`flip`: depends on the generation).
    fn expected(self) -> Option<Seen> {
        match self {
            Kind::Bypass | Kind::Allow | Kind::HttpAllow => Some(Seen::Allowed),
            Kind::AllowDeniedPath | Kind::Deny | Kind::HttpDeny => Some(Seen::Denied),
            Kind::Flip => None,
        }
    }

    /// The `action` of the access event that decided the connection (for `allow-denied-path`,
    /// the connection's; its request's is `deny`).
    fn expected_action(self) -> Option<&'static str> {
        match self {
            Kind::Bypass => Some("bypass"),
            Kind::Allow | Kind::AllowDeniedPath | Kind::HttpAllow => Some("allow"),
            Kind::Deny | Kind::HttpDeny => Some("deny"),
            Kind::Flip => None,
        }
    }

    /// CONNECT kinds end with a connection-level event (`method` CONNECT); plain HTTP with one
    /// request event.
    fn is_connect(self) -> bool {
        !matches!(self, Kind::HttpAllow | Kind::HttpDeny)
    }
}

/// What the client saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    /// The upstream's answer.
    Allowed,
    /// A 403 from the gateway.
    Denied,
}

impl Seen {
    fn as_action(self) -> &'static str {
        match self {
            Seen::Allowed => "allow",
            Seen::Denied => "deny",
        }
    }
}

/// The rules file, with `flip.test` allowed or denied, optionally with a bad line at the end.
fn rules(flip_allowed: bool, broken: bool) -> String {
    let flip = if flip_allowed { "allow" } else { "deny" };
    let bad = if broken { "allow *.*bad[\n" } else { "" };
    format!(
        "# hostgate soak (examples/soak.rs); rewritten every 10 s\n\
         bypass bypass.test\n\
         allow allow.test\n\
         deny https://allow.test/admin\n\
         deny deny.test\n\
         allow http://plain.test\n\
         deny http://plain.test/admin\n\
         deny blocked.test\n\
         {flip} flip.test\n\
         {bad}"
    )
}

// ------------------------------------------------------------------------------------------------
// State shared by the log reader, the traffic and the main loop.

#[derive(Debug, Default)]
struct KindStats {
    total: u64,
    ok: u64,
    /// The connection did not complete as a decided connection should (error, timeout, an
    /// unexpected status).
    failed: u64,
    /// The client or the access log saw the opposite decision.
    wrong: u64,
    /// No access event showed up for it.
    unlogged: u64,
    /// `flip`: how many were allowed and denied.
    allowed: u64,
    denied: u64,
    millis: Vec<u32>,
}

#[derive(Debug)]
struct ReloadEvent {
    ok: bool,
    generation: u64,
    line: Value,
}

#[derive(Debug, Default)]
struct Shared {
    /// Access events not yet claimed by a connection, by client address, in log order.
    events: Mutex<HashMap<String, Vec<Value>>>,
    /// Generation → whether `flip.test` was allowed by the rules it loaded.
    flips: Mutex<BTreeMap<u64, bool>>,
    /// The `flip.test` value of the rules file written before the pending SIGHUP.
    pending_flip: Mutex<bool>,
    connect_addr: Mutex<Option<SocketAddr>>,
    admin_addr: Mutex<Option<SocketAddr>>,
    stats: Mutex<BTreeMap<Kind, KindStats>>,
    /// The first problems, for the summary.
    problems: Mutex<Vec<String>>,
    problem_count: AtomicU64,
    /// WARN and ERROR log lines other than the expected reload failures, by message.
    warnings: Mutex<BTreeMap<String, u64>>,
    log_lines: AtomicU64,
    /// Requests that reached an upstream although the policy denies them.
    leaks: AtomicU64,
    https_requests: AtomicU64,
    http_requests: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn problem(&self, what: String) {
        let n = self.problem_count.fetch_add(1, Ordering::Relaxed);
        if n < 40 {
            eprintln!("soak: problem: {what}");
            lock(&self.problems).push(what);
        }
    }

    /// Waits for the access event that closes a connection from `client` and takes it, with the
    /// events logged before it for the same client.
    async fn claim_events(&self, client: &str, connect: bool) -> Option<Vec<Value>> {
        let closes = |v: &Value| if connect { v["method"] == "CONNECT" } else { v["protocol"] == "http" };
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            {
                let mut events = lock(&self.events);
                if let Some(list) = events.get_mut(client) {
                    if let Some(i) = list.iter().position(closes) {
                        let claimed: Vec<Value> = list.drain(..=i).collect();
                        if list.is_empty() {
                            events.remove(client);
                        }
                        return Some(claimed);
                    }
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether `generation` allowed `flip.test` (waiting a little: the access event of a
    /// connection decided by a new generation can be written before the `reloaded` line).
    async fn flip_of(&self, generation: u64) -> Option<bool> {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            if let Some(v) = lock(&self.flips).get(&generation) {
                return Some(*v);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Upstreams.

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A throw-away CA and one server certificate for every test name.
struct UpstreamCa {
    pem: String,
    server: ServerConfig,
}

impl UpstreamCa {
    fn new() -> Result<UpstreamCa> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, "hostgate soak upstream CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_key = KeyPair::generate()?;
        let ca_cert = params.self_signed(&ca_key)?;
        let issuer = Issuer::new(params, ca_key);
        let names: Vec<String> = TLS_NAMES.iter().map(|n| n.to_string()).collect();
        let mut leaf = CertificateParams::new(names)?;
        leaf.distinguished_name.push(DnType::CommonName, "hostgate soak upstream");
        let key = KeyPair::generate()?;
        let cert = leaf.signed_by(&key, &issuer)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone(), ca_cert.der().clone()], key)?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(UpstreamCa { pem: ca_cert.pem(), server })
    }
}

/// The HTTPS upstream: HTTP/1.1 over TLS; `200 upstream=https sni=… path=…`.
async fn start_https_upstream(config: ServerConfig, shared: Arc<Shared>) -> Result<SocketAddr> {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let (acceptor, shared) = (acceptor.clone(), shared.clone());
            tokio::spawn(async move {
                let Ok(Ok(tls)) = tokio::time::timeout(CONNECTION_TIMEOUT, acceptor.accept(tcp)).await else {
                    return;
                };
                let sni: Arc<str> = Arc::from(tls.get_ref().1.server_name().unwrap_or("-"));
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (shared, sni) = (shared.clone(), sni.clone());
                    async move {
                        shared.https_requests.fetch_add(1, Ordering::Relaxed);
                        let path = req.uri().path().to_string();
                        if path.starts_with("/admin") || *sni == *"deny.test" {
                            shared.leaks.fetch_add(1, Ordering::Relaxed);
                            shared.problem(format!("the HTTPS upstream got a denied request: sni={sni} path={path}"));
                        }
                        let body = format!("upstream=https sni={sni} path={path}");
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await;
            });
        }
    });
    Ok(addr)
}

/// The plain HTTP upstream: `200 upstream=http host=… path=…`.
async fn start_http_upstream(shared: Arc<Shared>) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let shared = shared.clone();
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let shared = shared.clone();
                async move {
                    shared.http_requests.fetch_add(1, Ordering::Relaxed);
                    let host = req.headers().get("host").and_then(|h| h.to_str().ok()).unwrap_or("-").to_string();
                    let path = req.uri().path().to_string();
                    if path.starts_with("/admin") || host.starts_with("blocked.test") {
                        shared.leaks.fetch_add(1, Ordering::Relaxed);
                        shared.problem(format!("the HTTP upstream got a denied request: host={host} path={path}"));
                    }
                    let body = format!("upstream=http host={host} path={path}");
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
            });
        }
    });
    Ok(addr)
}

// ------------------------------------------------------------------------------------------------
// The gateway process.

struct Gateway {
    child: Child,
    pid: u32,
    reader: tokio::task::JoinHandle<()>,
}

impl Gateway {
    /// Starts `bin run --config CONFIG`; standard error goes to [`read_log`].
    fn spawn(
        bin: &Path,
        config: &Path,
        log: &Path,
        shared: Arc<Shared>,
        reloads: mpsc::UnboundedSender<ReloadEvent>,
    ) -> Result<Gateway> {
        let mut child = Command::new(bin)
            .arg("run")
            .arg("--config")
            .arg(config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let pid = child.id().ok_or("the gateway exited at once")?;
        let stderr = child.stderr.take().ok_or("no stderr pipe")?;
        let file = std::io::LineWriter::new(std::fs::File::create(log)?);
        let reader = tokio::spawn(read_log(stderr, file, shared, reloads));
        Ok(Gateway { child, pid, reader })
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// RSS (KiB) and open file descriptors, from `/proc`.
    fn sample(&self) -> Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or("no VmRSS in /proc/PID/status")?;
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.pid))?.count() as u64;
        Ok((rss, fds))
    }
}

/// Sends `signal` (a `kill` name: `HUP`, `TERM`) to `pid` with `kill(1)`.
fn signal(pid: u32, signal: &str) -> Result<()> {
    let status = std::process::Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status()?;
    if !status.success() {
        return Err(format!("kill -{signal} {pid}: {status}").into());
    }
    Ok(())
}

/// Copies the gateway's standard error to `file` and dispatches its JSON lines: access events to
/// [`Shared::events`], listener addresses, reload results.
async fn read_log(
    stderr: tokio::process::ChildStderr,
    mut file: std::io::LineWriter<std::fs::File>,
    shared: Arc<Shared>,
    reloads: mpsc::UnboundedSender<ReloadEvent>,
) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let _ = writeln!(file, "{line}");
        shared.log_lines.fetch_add(1, Ordering::Relaxed);
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            *lock(&shared.warnings).entry(format!("not JSON: {line}")).or_default() += 1;
            continue;
        };
        if v["target"] == "access" {
            let client = v["client"].as_str().unwrap_or("-").to_string();
            lock(&shared.events).entry(client).or_default().push(v);
            continue;
        }
        let message = v["message"].as_str().unwrap_or("");
        let address = || v["address"].as_str().and_then(|a| a.parse::<SocketAddr>().ok());
        if message == "listening" && v["kind"] == "connect" {
            *lock(&shared.connect_addr) = address();
        } else if message.starts_with("admin listener") {
            *lock(&shared.admin_addr) = address();
        } else if message == RELOADED || message == RELOAD_FAILED {
            let ok = message == RELOADED;
            let generation = v["generation"].as_u64().unwrap_or(0);
            if ok {
                let flip = *lock(&shared.pending_flip);
                lock(&shared.flips).insert(generation, flip);
            }
            let _ = reloads.send(ReloadEvent { ok, generation, line: v.clone() });
            continue;
        }
        if v["level"] == "WARN" || v["level"] == "ERROR" {
            *lock(&shared.warnings).entry(message.to_string()).or_default() += 1;
        }
    }
    let _ = file.flush();
}

/// `GET path` on the admin listener: status and body.
async fn admin_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let fetch = async {
        let tcp = TcpStream::connect(addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        let req = Request::get(path).header("host", addr.to_string()).body(Empty::<Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok::<_, Error>((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), fetch).await.map_err(|_| format!("GET {path}: timed out"))?
}

/// The sum of the samples of metric `series` (a name, or a name with its labels in braces).
fn metric(text: &str, series: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else { continue };
        let bare = name.split('{').next().unwrap_or(name);
        if name == series || bare == series {
            if let Ok(v) = value.parse::<f64>() {
                *found.get_or_insert(0.0) += v;
            }
        }
    }
    found
}

// ------------------------------------------------------------------------------------------------
// Clients.

/// What one connection needs.
struct Client {
    proxy: SocketAddr,
    /// Trusts only the upstream CA: a bypassed connection must show the upstream's certificate.
    upstream_trust: TlsConnector,
    /// Trusts only hostgate's CA: an inspected connection must show a minted certificate.
    gateway_trust: TlsConnector,
    shared: Arc<Shared>,
}

fn tls_client(pem: &[u8]) -> Result<TlsConnector> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        roots.add(cert?)?;
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Reads a response head one byte at a time (nothing after it is consumed); returns the status
/// and the header lines.
async fn read_head<S: AsyncRead + Unpin>(io: &mut S) -> Result<(u16, Vec<(String, String)>)> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err("response head over 16 KiB".into());
        }
        let mut b = [0u8; 1];
        if io.read(&mut b).await? == 0 {
            return Err(format!("closed inside the response head ({:?})", String::from_utf8_lossy(&head)).into());
        }
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok((status, headers))
}

/// Reads a response (head and body; the body by length, chunks or to the end).
async fn read_response<S: AsyncRead + Unpin>(io: &mut S) -> Result<(u16, Vec<u8>)> {
    let (status, headers) = read_head(io).await?;
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let mut body = Vec::new();
    if let Some(len) = header("content-length") {
        body.resize(len.parse()?, 0);
        io.read_exact(&mut body).await?;
    } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut io = BufReader::new(io);
        loop {
            let mut line = String::new();
            io.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)?;
            if size == 0 {
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            io.read_exact(&mut body[start..]).await?;
            let mut crlf = [0u8; 2];
            io.read_exact(&mut crlf).await?;
        }
    } else {
        // Framed by the end of the connection; an end without close_notify is fine here.
        let mut buf = [0u8; 4096];
        while let Ok(n) = io.read(&mut buf).await {
            if n == 0 {
                break;
            }
            body.extend_from_slice(&buf[..n]);
        }
    }
    Ok((status, body))
}

/// `GET path` with `Connection: close` over `io`.
async fn get<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S, target: &str, host: &str) -> Result<(u16, Vec<u8>)> {
    let request =
        format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: hostgate-soak\r\nConnection: close\r\n\r\n");
    io.write_all(request.as_bytes()).await?;
    io.flush().await?;
    read_response(io).await
}

impl Client {
    /// Runs one connection of `kind`: the client's address (when it got one) and what it saw.
    async fn run(&self, kind: Kind, seq: u64) -> (Option<String>, Result<Seen>) {
        let mut tcp = match TcpStream::connect(self.proxy).await {
            Ok(tcp) => tcp,
            Err(e) => return (None, Err(format!("connect to the gateway: {e}").into())),
        };
        let _ = tcp.set_nodelay(true);
        let client = tcp.local_addr().ok().map(|a| a.to_string());
        let result = tokio::time::timeout(CONNECTION_TIMEOUT, self.exchange(&mut tcp, kind, seq)).await;
        let result = result.unwrap_or_else(|_| Err(format!("no result within {CONNECTION_TIMEOUT:?}").into()));
        (client, result)
    }

    async fn exchange(&self, tcp: &mut TcpStream, kind: Kind, seq: u64) -> Result<Seen> {
        let path = format!("/soak/{seq}");
        match kind {
            Kind::HttpAllow => {
                let (status, body) = get(tcp, &format!("http://plain.test{path}"), "plain.test").await?;
                http_seen(status, &body, "upstream=http host=plain.test")
            }
            Kind::HttpDeny => {
                let (host, path) =
                    if seq % 2 == 0 { ("blocked.test", path) } else { ("plain.test", format!("/admin{path}")) };
                let (status, body) = get(tcp, &format!("http://{host}{path}"), host).await?;
                http_seen(status, &body, "upstream=http")
            }
            Kind::Bypass => self.tunnel(tcp, "bypass.test", &path, &self.upstream_trust).await,
            Kind::Allow | Kind::Flip => {
                let host = if kind == Kind::Allow { "allow.test" } else { "flip.test" };
                self.tunnel(tcp, host, &path, &self.gateway_trust).await
            }
            Kind::AllowDeniedPath => {
                self.tunnel(tcp, "allow.test", &format!("/admin{path}"), &self.gateway_trust).await
            }
            Kind::Deny => self.tunnel(tcp, "deny.test", &path, &self.gateway_trust).await,
        }
    }

    /// CONNECT `host:443`; on 200, TLS trusting `tls` and `GET path`.
    async fn tunnel(&self, tcp: &mut TcpStream, host: &str, path: &str, tls: &TlsConnector) -> Result<Seen> {
        let connect = format!("CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\nUser-Agent: hostgate-soak\r\n\r\n");
        tcp.write_all(connect.as_bytes()).await?;
        let (status, headers) = read_head(tcp).await?;
        match status {
            200 => {}
            403 => return Ok(Seen::Denied),
            other => {
                let reason = headers.iter().find(|(n, _)| n == "x-hostgate-reason").map_or("-", |(_, v)| v.as_str());
                return Err(format!("CONNECT {host}: {other} (x-hostgate-reason {reason})").into());
            }
        }
        let name = ServerName::try_from(host.to_string())?;
        let mut stream = tls.connect(name, tcp).await.map_err(|e| format!("TLS to {host}: {e}"))?;
        let (status, body) = get(&mut stream, path, host).await.map_err(|e| format!("GET {host}{path}: {e}"))?;
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
        let want = format!("upstream=https sni={host} path={path}");
        match status {
            200 if body == want.as_bytes() => Ok(Seen::Allowed),
            403 => Ok(Seen::Denied),
            other => Err(format!("GET {host}{path}: {other} {:?}", String::from_utf8_lossy(&body)).into()),
        }
    }

    /// Runs one connection and checks it against what the client should see and the gateway's
    /// access events; counts it.
    async fn run_and_check(self: Arc<Self>, kind: Kind, seq: u64) {
        let started = Instant::now();
        let (client, seen) = self.run(kind, seq).await;
        let millis = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
        let shared = &self.shared;
        let events = match &client {
            Some(c) => shared.claim_events(c, kind.is_connect()).await,
            None => None,
        };
        let mut failed = false;
        let mut wrong = false;
        let mut unlogged = false;
        let name = kind.name();
        let closing = events.as_ref().and_then(|e| e.last());
        let client = client.as_deref().unwrap_or("-");
        // What the decision should have been: fixed, or for flip.test the generation's.
        let expected = match kind.expected() {
            Some(e) => Some(e),
            None => match closing.and_then(|e| e["generation"].as_u64()) {
                Some(g) => match shared.flip_of(g).await {
                    Some(true) => Some(Seen::Allowed),
                    Some(false) => Some(Seen::Denied),
                    None => {
                        shared.problem(format!("{name} #{seq}: generation {g} is not one this program loaded"));
                        wrong = true;
                        None
                    }
                },
                None => None,
            },
        };
        match &seen {
            Err(e) => {
                failed = true;
                shared.problem(format!("{name} #{seq} (client {client}): failed: {e}"));
            }
            Ok(s) => {
                if let Some(expected) = expected {
                    if *s != expected {
                        wrong = true;
                        shared.problem(format!("{name} #{seq} (client {client}): saw {s:?}, expected {expected:?}"));
                    }
                }
            }
        }
        match closing {
            None => {
                unlogged = true;
                shared.problem(format!("{name} #{seq} (client {client}): no access event within {EVENT_TIMEOUT:?}"));
            }
            Some(event) => {
                let want = kind.expected_action().or(expected.map(Seen::as_action));
                if want.is_some_and(|w| event["action"] != w) {
                    wrong = true;
                    shared.problem(format!(
                        "{name} #{seq}: access event action {} (want {want:?}): {event}",
                        event["action"]
                    ));
                }
                if let (Some(events), Ok(seen)) = (&events, &seen) {
                    if let Some(problem) = check_events(kind, *seen, events) {
                        wrong = true;
                        shared.problem(format!("{name} #{seq}: {problem}: {events:?}"));
                    }
                }
            }
        }
        let mut stats = lock(&shared.stats);
        let s = stats.entry(kind).or_default();
        s.total += 1;
        s.millis.push(millis);
        match seen {
            Ok(Seen::Allowed) => s.allowed += 1,
            Ok(Seen::Denied) => s.denied += 1,
            Err(_) => {}
        }
        s.failed += u64::from(failed);
        s.wrong += u64::from(wrong);
        s.unlogged += u64::from(unlogged);
        s.ok += u64::from(!(failed || wrong || unlogged));
    }
}

/// A plain-HTTP answer: the upstream's (`marker` in the body) or the gateway's 403.
fn http_seen(status: u16, body: &[u8], marker: &str) -> Result<Seen> {
    match status {
        200 if String::from_utf8_lossy(body).starts_with(marker) => Ok(Seen::Allowed),
        403 => Ok(Seen::Denied),
        other => Err(format!("{other} {:?}", String::from_utf8_lossy(body)).into()),
    }
}

/// The access events of a connection the client completed, beyond the closing event's action:
/// the inspection field, and the request event of an inspected connection.
fn check_events(kind: Kind, seen: Seen, events: &[Value]) -> Option<String> {
    let closing = events.last()?;
    let inspected =
        matches!(kind, Kind::Allow | Kind::AllowDeniedPath) || (kind == Kind::Flip && seen == Seen::Allowed);
    if kind == Kind::Bypass && closing["inspection"] != "bypass" {
        return Some(format!("inspection {} on a bypass connection", closing["inspection"]));
    }
    if inspected {
        if closing["inspection"] != "inspected" {
            return Some(format!("inspection {} on an allowed TLS connection", closing["inspection"]));
        }
        let want = if kind == Kind::AllowDeniedPath { "deny" } else { "allow" };
        let requests: Vec<&Value> = events.iter().filter(|e| e["protocol"] == "https").collect();
        if requests.len() != 1 || requests[0]["action"] != want {
            return Some(format!("want one request event with action {want}"));
        }
    }
    None
}

// ------------------------------------------------------------------------------------------------
// Reloads.

#[derive(Debug, Default)]
struct Reloads {
    /// Good reloads that applied (log line, generation + 1 in the log and /metrics).
    ok: u64,
    /// Broken reloads that were refused and kept the generation.
    refused: u64,
    /// Anything else: a good reload that failed, a broken one that applied, a missing log line,
    /// /metrics disagreeing.
    bad: u64,
    took_ms: Vec<u64>,
}

struct Reloader {
    pid: u32,
    shared: Arc<Shared>,
    rules: PathBuf,
    admin: SocketAddr,
    results: mpsc::UnboundedReceiver<ReloadEvent>,
    generation: u64,
    flip: bool,
    failures_metric: f64,
    stats: Reloads,
}

impl Reloader {
    async fn tick(&mut self, broken: bool) {
        match self.reload(broken).await {
            Ok(()) if broken => self.stats.refused += 1,
            Ok(()) => self.stats.ok += 1,
            Err(e) => {
                self.stats.bad += 1;
                let what = if broken { "broken reload" } else { "reload" };
                self.shared.problem(format!("{what} after generation {}: {e}", self.generation));
            }
        }
    }

    async fn reload(&mut self, broken: bool) -> Result<()> {
        if let Ok(stale) = self.results.try_recv() {
            return Err(format!("a reload nobody asked for: {}", stale.line).into());
        }
        let next = !self.flip;
        write_atomic(&self.rules, &rules(next, broken))?;
        *lock(&self.shared.pending_flip) = next;
        signal(self.pid, "HUP")?;
        let result = tokio::time::timeout(Duration::from_secs(15), self.results.recv())
            .await
            .map_err(|_| "no reload line within 15 s")?
            .ok_or("the log ended")?;
        let (status, metrics) = admin_get(self.admin, "/metrics").await?;
        if status != 200 {
            return Err(format!("/metrics: {status}").into());
        }
        let gauge = metric(&metrics, "hostgate_policy_generation").ok_or("no hostgate_policy_generation")?;
        let failures = metric(&metrics, "hostgate_reloads_total{result=\"failure\"}").unwrap_or(0.0);
        if broken {
            if result.ok || result.generation != self.generation {
                return Err(format!("the broken rules file was not refused: {}", result.line).into());
            }
            let error = result.line["error"].as_str().unwrap_or("");
            if !error.contains(&format!("{}:10", self.rules.display())) {
                return Err(format!("the failure does not name the bad line (rules:10): {}", result.line).into());
            }
            let want = self.failures_metric + 1.0;
            // Said once: later reloads are checked against what /metrics says now.
            self.failures_metric = failures;
            if gauge != self.generation as f64 || failures != want {
                return Err(format!(
                    "/metrics after a failed reload: generation {gauge} (want {}), failures {failures} (want {want})",
                    self.generation
                )
                .into());
            }
        } else {
            if !result.ok || result.generation != self.generation + 1 {
                return Err(format!("want generation {}: {}", self.generation + 1, result.line).into());
            }
            if gauge != result.generation as f64 {
                return Err(format!("/metrics says generation {gauge}, the log {}", result.generation).into());
            }
            self.generation = result.generation;
            self.flip = next;
            if let Some(ms) = result.line["took_ms"].as_u64() {
                self.stats.took_ms.push(ms);
            }
        }
        Ok(())
    }
}

/// Writes `text` to `path` through a temporary file and a rename, so that a reload never reads
/// a half-written file.
fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Main.

#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: u64,
}

fn main() -> ExitCode {
    let args = match Args::parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("soak: runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(soak(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Sets up, runs the traffic and the reloads, prints the summary; `Ok(true)` when every check
/// passed.
async fn soak(args: Args) -> Result<bool> {
    let dir = tempfile::Builder::new().prefix("hostgate-soak-").tempdir()?;
    let root = dir.path().to_path_buf();
    let shared = Arc::new(Shared::default());

    // Upstreams.
    let upstream_ca = UpstreamCa::new()?;
    std::fs::write(root.join("upstream-ca.pem"), &upstream_ca.pem)?;
    let https = start_https_upstream(upstream_ca.server.clone(), shared.clone()).await?;
    let http = start_http_upstream(shared.clone()).await?;

    // hostgate's CA, by the binary.
    let out = std::process::Command::new(&args.bin).args(["ca", "init", "--out"]).arg(root.join("ca")).output()?;
    if !out.status.success() {
        return Err(format!("hostgate ca init: {}: {}", out.status, String::from_utf8_lossy(&out.stderr)).into());
    }
    let gateway_ca = std::fs::read(root.join("ca").join("hostgate-ca.pem"))?;

    // Configuration.
    let mut pins = String::from("[resolve]\n");
    for name in TLS_NAMES {
        writeln!(pins, "\"{name}\" = [\"{https}\"]")?;
    }
    for name in HTTP_NAMES {
        writeln!(pins, "\"{name}\" = [\"{http}\"]")?;
    }
    let config = format!(
        "# hostgate soak (examples/soak.rs)\n\
         [[listener]]\nkind = \"connect\"\naddress = \"127.0.0.1:0\"\n\n\
         [policy]\ndefault = \"deny\"\n[[policy.source]]\npath = \"soak.rules\"\n\n\
         [upstream]\nallow_private = [\"127.0.0.0/8\"]\nconnect_timeout = \"5s\"\n\n\
         {pins}\n\
         [inspect]\nca_cert = \"ca/hostgate-ca.pem\"\nca_key = \"ca/hostgate-ca.key\"\n\
         system_roots = false\nextra_roots = [\"upstream-ca.pem\"]\n\n\
         [admin]\naddress = \"127.0.0.1:0\"\n\n\
         [runtime]\nshutdown_grace = \"10s\"\n\n\
         [log]\nlevel = \"info\"\nformat = \"json\"\n"
    );
    let config_path = root.join("hostgate.toml");
    let rules_path = root.join("soak.rules");
    std::fs::write(&config_path, config)?;
    write_atomic(&rules_path, &rules(true, false))?;
    lock(&shared.flips).insert(1, true);
    *lock(&shared.pending_flip) = true;

    // The gateway.
    let log_path = root.join("gateway.log");
    let (reload_tx, reload_rx) = mpsc::unbounded_channel();
    let mut gateway = Gateway::spawn(&args.bin, &config_path, &log_path, shared.clone(), reload_tx)?;
    let started = Instant::now();
    let (proxy, admin) = loop {
        if let (Some(p), Some(a)) = (*lock(&shared.connect_addr), *lock(&shared.admin_addr)) {
            break (p, a);
        }
        if let Some(status) = gateway.exited() {
            return Err(format!("hostgate exited at start ({status}); see {}", log_path.display()).into());
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!("hostgate did not log its listeners within 30 s; see {}", log_path.display()).into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (status, _) = admin_get(admin, "/readyz").await?;
    if status != 200 {
        return Err(format!("/readyz: {status}").into());
    }
    let bin_age = std::fs::metadata(&args.bin)?.modified()?.elapsed().unwrap_or_default();
    println!(
        "soak: hostgate {} (built {} min ago), pid {}, connect {proxy}, admin {admin}, dir {}",
        args.bin.display(),
        bin_age.as_secs() / 60,
        gateway.pid,
        root.display()
    );
    println!(
        "soak: {} min at {} new connections/s; reload every {RELOAD_EVERY:?}, broken every {BROKEN_EVERY}th",
        args.minutes, args.rate
    );

    let client = Arc::new(Client {
        proxy,
        upstream_trust: tls_client(upstream_ca.pem.as_bytes())?,
        gateway_trust: tls_client(&gateway_ca)?,
        shared: shared.clone(),
    });

    // Traffic: one task per connection, `rate` a second, until the deadline; then wait for the
    // ones in flight.
    let duration = Duration::from_secs_f64(args.minutes * 60.0);
    let t0 = Instant::now();
    let deadline = t0 + duration;
    let traffic = {
        let client = client.clone();
        let period = Duration::from_secs_f64(1.0 / args.rate);
        tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            let mut interval = tokio::time::interval(period);
            let mut seq = 0u64;
            let mut peak = 0usize;
            while Instant::now() < deadline {
                interval.tick().await;
                let kind = CYCLE[(seq % CYCLE.len() as u64) as usize];
                tasks.spawn(client.clone().run_and_check(kind, seq));
                seq += 1;
                while tasks.try_join_next().is_some() {}
                peak = peak.max(tasks.len());
            }
            let drained =
                tokio::time::timeout(Duration::from_secs(60), async { while tasks.join_next().await.is_some() {} })
                    .await
                    .is_ok();
            (seq, peak, drained)
        })
    };

    // Samples and reloads every 10 s; progress every minute.
    let mut samples: Vec<Sample> = Vec::new();
    let (status, metrics) = admin_get(admin, "/metrics").await?;
    if status != 200 {
        return Err(format!("/metrics: {status}").into());
    }
    let mut reloader = Reloader {
        pid: gateway.pid,
        shared: shared.clone(),
        rules: rules_path.clone(),
        admin,
        results: reload_rx,
        generation: 1,
        flip: true,
        failures_metric: metric(&metrics, "hostgate_reloads_total{result=\"failure\"}").unwrap_or(0.0),
        stats: Reloads::default(),
    };
    let mut tick = 0u64;
    let mut died = None;
    loop {
        tick += 1;
        let at = t0 + RELOAD_EVERY * u32::try_from(tick).unwrap_or(u32::MAX);
        if at >= deadline {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        if let Some(status) = gateway.exited() {
            died = Some(status);
            break;
        }
        match gateway.sample() {
            Ok((rss_kib, fds)) => samples.push(Sample { at: t0.elapsed(), rss_kib, fds }),
            Err(e) => {
                shared.problem(format!("sampling the gateway: {e}"));
                break;
            }
        }
        reloader.tick(tick % BROKEN_EVERY == 0).await;
        if tick % 6 == 0 {
            progress(&shared, &reloader.stats, samples.last(), t0.elapsed());
        }
    }
    let reloads = std::mem::take(&mut reloader.stats);
    let generation = reloader.generation;
    let (connections, peak_in_flight, drained) = traffic.await?;
    let traffic_secs = t0.elapsed().as_secs_f64();
    if let Some(status) = gateway.exited().or(died) {
        shared.problem(format!("hostgate exited during the run: {status}"));
    }

    // The end: every connection closed on the gateway side, the last sample, then SIGTERM.
    let mut open = None;
    let mut tunnels = None;
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(15) {
        if let Ok((200, m)) = admin_get(admin, "/metrics").await {
            open = metric(&m, "hostgate_active_connections");
            tunnels = metric(&m, "hostgate_active_tunnels");
            if open == Some(0.0) && tunnels.unwrap_or(0.0) == 0.0 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let end = gateway.sample().map(|(rss_kib, fds)| Sample { at: t0.elapsed(), rss_kib, fds });
    if let Ok(s) = end {
        samples.push(s);
    }
    signal(gateway.pid, "TERM")?;
    let exit = tokio::time::timeout(Duration::from_secs(30), gateway.child.wait()).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), &mut gateway.reader).await;

    // Summary.
    let mut pass = true;
    let mut report = String::new();
    let stats = std::mem::take(&mut *lock(&shared.stats));
    writeln!(report, "\n== hostgate soak summary ==")?;
    writeln!(
        report,
        "duration {:.1} min, target rate {}/s, achieved {:.1}/s ({connections} connections), peak in flight {peak_in_flight}",
        traffic_secs / 60.0,
        args.rate,
        connections as f64 / traffic_secs
    )?;
    writeln!(report, "| kind | connections | ok | failed | wrong decision | no access event | allowed | denied | p50 ms | p99 ms | max ms |")?;
    writeln!(report, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    let mut totals = KindStats::default();
    for kind in KINDS {
        let Some(s) = stats.get(&kind) else { continue };
        let mut ms = s.millis.clone();
        ms.sort_unstable();
        let pct = |p: f64| ms.get(((ms.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0);
        writeln!(
            report,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            kind.name(),
            s.total,
            s.ok,
            s.failed,
            s.wrong,
            s.unlogged,
            s.allowed,
            s.denied,
            pct(0.5),
            pct(0.99),
            ms.last().copied().unwrap_or(0)
        )?;
        totals.total += s.total;
        totals.ok += s.ok;
        totals.failed += s.failed;
        totals.wrong += s.wrong;
        totals.unlogged += s.unlogged;
        totals.allowed += s.allowed;
        totals.denied += s.denied;
    }
    writeln!(
        report,
        "| **all** | {} | {} | {} | {} | {} | {} | {} | | | |",
        totals.total, totals.ok, totals.failed, totals.wrong, totals.unlogged, totals.allowed, totals.denied
    )?;
    let should_succeed: u64 =
        [Kind::Bypass, Kind::Allow, Kind::HttpAllow].iter().filter_map(|k| stats.get(k)).map(|s| s.failed).sum();
    let leaks = shared.leaks.load(Ordering::Relaxed);
    let mut took = reloads.took_ms.clone();
    took.sort_unstable();
    writeln!(
        report,
        "reloads: {} ok, {} broken ones refused (generation kept), {} bad; last generation {generation}; reload took_ms median {} max {}",
        reloads.ok,
        reloads.refused,
        reloads.bad,
        took.get(took.len() / 2).copied().unwrap_or(0),
        took.last().copied().unwrap_or(0)
    )?;
    writeln!(
        report,
        "upstream requests: https {}, http {}; denied requests that reached an upstream: {leaks}",
        shared.https_requests.load(Ordering::Relaxed),
        shared.http_requests.load(Ordering::Relaxed)
    )?;
    let after_warmup: Vec<Sample> = {
        let w: Vec<Sample> = samples.iter().copied().filter(|s| s.at >= args.warmup).collect();
        if w.is_empty() {
            samples.clone()
        } else {
            w
        }
    };
    let mib = |kib: u64| kib as f64 / 1024.0;
    if let (Some(first), Some(last)) = (after_warmup.first(), after_warmup.last()) {
        let rss_min = after_warmup.iter().map(|s| s.rss_kib).min().unwrap_or(0);
        let rss_max = after_warmup.iter().map(|s| s.rss_kib).max().unwrap_or(0);
        let fd_min = after_warmup.iter().map(|s| s.fds).min().unwrap_or(0);
        let fd_max = after_warmup.iter().map(|s| s.fds).max().unwrap_or(0);
        writeln!(
            report,
            "RSS (MiB): start {:.1} (at {} s), end {:.1}, min {:.1}, max {:.1}; samples {} (every {RELOAD_EVERY:?})",
            mib(first.rss_kib),
            first.at.as_secs(),
            mib(last.rss_kib),
            mib(rss_min),
            mib(rss_max),
            samples.len()
        )?;
        writeln!(report, "fds: start {}, end {}, min {fd_min}, max {fd_max}", first.fds, last.fds)?;
        if last.fds as i64 > first.fds as i64 + FD_SLACK {
            pass = false;
            writeln!(report, "FAIL: {} file descriptors at the end, {} at the start", last.fds, first.fds)?;
        }
    }
    writeln!(
        report,
        "open at the end: hostgate_active_connections {}, hostgate_active_tunnels {}",
        open.map_or("?".to_string(), |v| v.to_string()),
        tunnels.map_or("?".to_string(), |v| v.to_string())
    )?;
    let exit_text = match &exit {
        Ok(Ok(s)) => s.to_string(),
        Ok(Err(e)) => format!("wait failed: {e}"),
        Err(_) => "still running 30 s after SIGTERM".to_string(),
    };
    writeln!(
        report,
        "gateway exit after SIGTERM: {exit_text}; log lines {}",
        shared.log_lines.load(Ordering::Relaxed)
    )?;
    let warnings = lock(&shared.warnings).clone();
    if !warnings.is_empty() {
        writeln!(report, "gateway WARN/ERROR lines (other than the expected reload failures):")?;
        for (message, n) in warnings.iter().take(20) {
            writeln!(report, "  {n} × {message}")?;
        }
    }

    let problems = shared.problem_count.load(Ordering::Relaxed);
    let mut fails: Vec<String> = Vec::new();
    let mut fail = |cond: bool, what: String| {
        if cond {
            fails.push(what);
        }
    };
    fail(should_succeed > 0, format!("{should_succeed} failed connections that should have succeeded"));
    fail(totals.failed > should_succeed, format!("{} other failed connections", totals.failed - should_succeed));
    fail(totals.wrong > 0, format!("{} wrong decisions", totals.wrong));
    fail(totals.unlogged > 0, format!("{} connections without an access event", totals.unlogged));
    fail(leaks > 0, format!("{leaks} denied requests reached an upstream"));
    fail(reloads.bad > 0, format!("{} reloads misbehaved", reloads.bad));
    fail(reloads.ok == 0 && duration > RELOAD_EVERY * 2, "no reload applied".to_string());
    fail(!drained, "connections still in flight 60 s after the end".to_string());
    fail(open != Some(0.0), format!("hostgate_active_connections at the end: {open:?}"));
    fail(!matches!(&exit, Ok(Ok(s)) if s.success()), format!("the gateway's exit: {exit_text}"));
    if problems > 0 && pass && fails.is_empty() {
        fails.push(format!("{problems} other problems"));
    }
    for f in &fails {
        pass = false;
        writeln!(report, "FAIL: {f}")?;
    }
    let problem_list = lock(&shared.problems).clone();
    if !problem_list.is_empty() {
        writeln!(report, "first problems ({problems} in all):")?;
        for p in problem_list.iter().take(20) {
            writeln!(report, "  {p}")?;
        }
    }
    writeln!(report, "RESULT: {}", if pass { "PASS" } else { "FAIL" })?;
    println!("{report}");
    if args.keep || !pass {
        let kept = dir.keep();
        println!("soak: kept {} (gateway.log, hostgate.toml, soak.rules)", kept.display());
    }
    Ok(pass)
}

/// One progress line.
fn progress(shared: &Shared, reloads: &Reloads, sample: Option<&Sample>, elapsed: Duration) {
    let (mut total, mut failed, mut wrong, mut unlogged) = (0, 0, 0, 0);
    for s in lock(&shared.stats).values() {
        total += s.total;
        failed += s.failed;
        wrong += s.wrong;
        unlogged += s.unlogged;
    }
    let (rss, fds) = sample.map_or((0.0, 0), |s| (s.rss_kib as f64 / 1024.0, s.fds));
    println!(
        "soak: {:>5.1} min: {total} connections ({:.1}/s), failed {failed}, wrong {wrong}, unlogged {unlogged}; \
         reloads ok {} refused {} bad {}; RSS {rss:.1} MiB, fds {fds}",
        elapsed.as_secs_f64() / 60.0,
        total as f64 / elapsed.as_secs_f64(),
        reloads.ok,
        reloads.refused,
        reloads.bad
    );
}
