//! TLS inspection benchmark: what terminating and re-originating TLS costs a client, against a
//! spliced (`bypass`) tunnel and against no gateway at all.
//!
//! Groups (criterion ids `group/function`), one new client connection per iteration, each doing a
//! rustls TLS 1.3 handshake (ALPN `http/1.1`, session resumption disabled on the client), one
//! HTTP/1.1 `GET /` (hyper) and reading the whole 1 KiB answer, then closing:
//!
//! * `inspect_handshake/direct`: straight to the HTTPS upstream (tokio-rustls + hyper), no gateway.
//! * `inspect_handshake/bypass`: through the gateway's CONNECT listener (`CONNECT name:443`, `200`)
//!   for a name with a `bypass` rule: the client's TLS goes to the upstream untouched (the client
//!   trusts only the upstream's CA, so a completed handshake proves it was spliced).
//! * `inspect_handshake/inspect_cached`: the same, for a name with an `allow` rule and `[inspect]`
//!   on: the gateway terminates the client's TLS with a leaf from its CA (the client trusts only
//!   that CA), does its own handshake to the upstream (verified against `extra_roots`) and serves
//!   the request with hyper. The leaf is in the cache (warmed before timing).
//! * `inspect_handshake/inspect_cached_full_upstream`: like `inspect_cached`, against a second
//!   upstream that issues no session tickets and keeps no sessions, so the gateway's upstream
//!   handshake is always a full one (against the first upstream it is resumed: the gateway's
//!   upstream client keeps TLS sessions per name, and the name repeats).
//! * `inspect_handshake/inspect_mint`: like `inspect_cached`, but every connection asks for a name
//!   never asked for before (`n<i>.mint.test`, rule `allow *.mint.test`), so every connection
//!   mints a leaf. `[resolve]` takes exact names only, so `MINT_POOL` names are pinned up front;
//!   the gateway's `hostgate_inspect_certificates_total{result="minted"}` counter is checked
//!   against the number of connections made.
//!
//! Throughput is in handshakes (`Throughput::Elements(1)`). Printed before timing: `mint_cost`,
//! `Authority::mint` alone over `MINTS` distinct names; and `interleaved`, the median time of each
//! variant when they take turns connection by connection (see [`interleaved`]). Printed after
//! timing: how many of the upstream handshakes were full and how many resumed, per function, and
//! the mean time of the mints inside the gateway (its `hostgate_inspect_mint_seconds`).

#[path = "support/median.rs"]
mod median;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use hostgate_proxy::config::{Config, ListenerKind};
use hostgate_proxy::gateway::Gateway;
use hostgate_proxy::inspect::ca::{Authority, InitOptions, LeafName};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, HandshakeKind, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const BYPASS: &str = "bypass.test";
const CACHED: &str = "cached.test";
const FULL: &str = "full.test";
/// Names pinned for `inspect_mint`: more than a full run asks for (about 1.5 ms a connection here,
/// 12 s of warm-up and measurement: ~9,000, plus 600 interleaved), so that no name is asked for
/// twice. The count of mints is checked after timing.
const MINT_POOL: usize = 40_000;
const MINTS: usize = 2000;
const BODY_LEN: usize = 1024;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The upstream's CA (rcgen, ECDSA P-256, like hostgate's), its certificate also in `ca.pem`.
struct UpstreamCa {
    issuer: Issuer<'static, KeyPair>,
    cert: CertificateDer<'static>,
}

impl UpstreamCa {
    fn new(dir: &Path) -> UpstreamCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, "bench upstream CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA cert");
        std::fs::write(dir.join("ca.pem"), cert.pem()).expect("write ca.pem");
        UpstreamCa { issuer: Issuer::new(params, key), cert: cert.der().clone() }
    }

    /// A server config for `names`, offering `http/1.1`.
    fn server_config(&self, names: &[&str]) -> ServerConfig {
        let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("params");
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone(), self.cert.clone()], key)
            .expect("server config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    }
}

/// Upstream TLS handshakes completed, by kind.
#[derive(Default)]
struct Handshakes {
    full: AtomicUsize,
    resumed: AtomicUsize,
}

impl Handshakes {
    fn get(&self) -> (usize, usize) {
        (self.full.load(Ordering::Relaxed), self.resumed.load(Ordering::Relaxed))
    }
}

/// An HTTPS server (tokio-rustls, hyper HTTP/1.1) answering every request with 1 KiB.
async fn https_upstream(config: ServerConfig) -> (SocketAddr, Arc<Handshakes>) {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
    let addr = listener.local_addr().expect("upstream addr");
    let handshakes = Arc::new(Handshakes::default());
    let counts = handshakes.clone();
    let body = Bytes::from(vec![b'x'; BODY_LEN]);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, counts, body) = (acceptor.clone(), counts.clone(), body.clone());
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                match tls.get_ref().1.handshake_kind() {
                    Some(HandshakeKind::Resumed) => counts.resumed.fetch_add(1, Ordering::Relaxed),
                    _ => counts.full.fetch_add(1, Ordering::Relaxed),
                };
                let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    let body = body.clone();
                    async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await;
            });
        }
    });
    (addr, handshakes)
}

/// A client config trusting only `roots`: TLS 1.3, ALPN `http/1.1`, no session resumption.
fn client_config(roots: RootCertStore) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = Resumption::disabled();
    Arc::new(config)
}

struct Setup {
    upstream: SocketAddr,
    gateway_addr: SocketAddr,
    handshakes: Arc<Handshakes>,
    handshakes_no_resume: Arc<Handshakes>,
    /// Trusts the upstream's CA only.
    upstream_client: Arc<ClientConfig>,
    /// Trusts hostgate's inspection CA only.
    inspect_client: Arc<ClientConfig>,
    ca_cert: std::path::PathBuf,
    ca_key: std::path::PathBuf,
    gateway: Gateway,
    _dir: tempfile::TempDir,
}

fn mint_name(i: usize) -> String {
    format!("n{i}.mint.test")
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let upstream_ca = UpstreamCa::new(dir.path());
    let (upstream, handshakes) = https_upstream(upstream_ca.server_config(&[BYPASS, CACHED, "*.mint.test"])).await;
    let mut no_resume = upstream_ca.server_config(&[FULL]);
    no_resume.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    no_resume.send_tls13_tickets = 0;
    let (upstream_no_resume, handshakes_no_resume) = https_upstream(no_resume).await;
    let ca = hostgate_proxy::inspect::ca::init(dir.path(), &InitOptions::default()).expect("ca init");

    std::fs::write(
        dir.path().join("bench.rules"),
        format!("bypass {BYPASS}\nallow {CACHED}\nallow {FULL}\nallow *.mint.test\n"),
    )
    .expect("rules");
    let mut toml = format!(
        "[[listener]]\nkind = \"connect\"\naddress = \"127.0.0.1:0\"\n[policy]\ndefault = \"deny\"\n\
         [[policy.source]]\npath = \"bench.rules\"\n[upstream]\nallow_private = [\"127.0.0.0/8\"]\n\
         [inspect]\nca_cert = \"{}\"\nca_key = \"{}\"\nsystem_roots = false\nextra_roots = [\"ca.pem\"]\n\
         [resolve]\n\"{BYPASS}\" = [\"{upstream}\"]\n\"{CACHED}\" = [\"{upstream}\"]\n\
         \"{FULL}\" = [\"{upstream_no_resume}\"]\n",
        ca.cert.display(),
        ca.key.display()
    );
    for i in 0..MINT_POOL {
        toml.push_str(&format!("\"{}\" = [\"{upstream}\"]\n", mint_name(i)));
    }
    let path = dir.path().join("hostgate.toml");
    std::fs::write(&path, toml).expect("config");
    let gateway = Gateway::start(Config::load(&path).expect("config")).await.expect("gateway");
    let gateway_addr = gateway.local_addr(ListenerKind::Connect).expect("connect listener");

    let mut roots = RootCertStore::empty();
    roots.add(upstream_ca.cert.clone()).expect("upstream root");
    let upstream_client = client_config(roots);
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(&ca.cert).expect("hostgate CA pem")).expect("hostgate root");
    let inspect_client = client_config(roots);
    Setup {
        upstream,
        gateway_addr,
        handshakes,
        handshakes_no_resume,
        upstream_client,
        inspect_client,
        ca_cert: ca.cert,
        ca_key: ca.key,
        gateway,
        _dir: dir,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Variant {
    Direct,
    Bypass,
    InspectCached,
    InspectCachedFullUpstream,
    InspectMint,
}

impl Variant {
    const ALL: [Variant; 5] = [
        Variant::Direct,
        Variant::Bypass,
        Variant::InspectCached,
        Variant::InspectCachedFullUpstream,
        Variant::InspectMint,
    ];

    fn id(self) -> &'static str {
        match self {
            Variant::Direct => "direct",
            Variant::Bypass => "bypass",
            Variant::InspectCached => "inspect_cached",
            Variant::InspectCachedFullUpstream => "inspect_cached_full_upstream",
            Variant::InspectMint => "inspect_mint",
        }
    }
}

/// One client connection along `variant` for `name`: (CONNECT,) TLS handshake, `GET /`, the whole
/// body, close.
async fn fetch(s: &Setup, variant: Variant, name: &str) {
    let (addr, config) = match variant {
        Variant::Direct => (s.upstream, &s.upstream_client),
        Variant::Bypass => (s.gateway_addr, &s.upstream_client),
        Variant::InspectCached | Variant::InspectCachedFullUpstream | Variant::InspectMint => {
            (s.gateway_addr, &s.inspect_client)
        }
    };
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    if variant != Variant::Direct {
        tcp.write_all(format!("CONNECT {name}:443 HTTP/1.1\r\nHost: {name}:443\r\n\r\n").as_bytes())
            .await
            .expect("CONNECT");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            tcp.read_exact(&mut byte).await.expect("CONNECT response");
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));
    }
    let server_name = ServerName::try_from(name.to_string()).expect("server name");
    let tls = TlsConnector::from(config.clone()).connect(server_name, tcp).await.expect("TLS handshake");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.expect("http1");
    let req = Request::get("/").header("host", name).body(Empty::<Bytes>::new()).expect("request");
    let get = async move {
        let resp = sender.send_request(req).await.expect("response");
        assert_eq!(resp.status(), 200, "{variant:?} {name}");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        // `sender` is dropped here, so that `conn` closes the connection.
        body.len()
    };
    let (len, closed) = tokio::join!(get, conn);
    closed.expect("connection");
    assert_eq!(black_box(len), BODY_LEN, "{variant:?} {name}");
}

/// The gateway's `hostgate_inspect_certificates_total{result="minted"}`.
fn minted(s: &Setup) -> u64 {
    metric(s, "hostgate_inspect_certificates_total{result=\"minted\"}") as u64
}

/// The gateway's metric `name` (a line `name value`).
fn metric(s: &Setup, name: &str) -> f64 {
    let text = s.gateway.metrics();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in the metrics"))
}

/// `Authority::mint` alone, over `MINTS` distinct names.
fn mint_cost(s: &Setup) {
    let authority = Authority::load(&s.ca_cert, &s.ca_key).expect("authority");
    let names: Vec<LeafName> = (0..MINTS).map(|i| LeafName::Dns(format!("m{i}.mint.test"))).collect();
    let validity = Duration::from_secs(86_400);
    black_box(authority.mint(&names[0], validity).expect("mint"));
    let t = Instant::now();
    for n in &names {
        black_box(authority.mint(n, validity).expect("mint"));
    }
    let per = t.elapsed() / MINTS as u32;
    println!("mint_cost: Authority::mint, {MINTS} distinct names: {:.1} µs per mint", per.as_secs_f64() * 1e6);
}

/// One connection of every variant per round, `ROUNDS` rounds, each connection timed alone: load
/// that comes and goes on the machine then lands on every variant alike (criterion measures one
/// variant after the other). Prints the median of each and its ratio to `bypass`.
async fn interleaved(s: &Setup, next_mint: &mut usize) {
    const ROUNDS: usize = 600;
    let mut times = vec![Vec::with_capacity(ROUNDS); Variant::ALL.len()];
    for _ in 0..ROUNDS {
        for (v, t) in Variant::ALL.iter().zip(&mut times) {
            let name = name(*v, next_mint);
            let started = Instant::now();
            fetch(s, *v, &name).await;
            t.push(started.elapsed());
        }
    }
    let medians = median::medians(&mut times);
    let bypass = Variant::ALL.iter().zip(&medians).find(|(v, _)| **v == Variant::Bypass).map(|(_, m)| m);
    let bypass = bypass.expect("bypass is measured").as_secs_f64();
    let line: Vec<String> = Variant::ALL
        .iter()
        .zip(&medians)
        .map(|(v, m)| format!("{} {:.0} µs ({:.2})", v.id(), m.as_secs_f64() * 1e6, m.as_secs_f64() / bypass))
        .collect();
    println!("interleaved: median per connection over {ROUNDS} rounds (ratio to bypass): {}", line.join(", "));
}

/// The name `variant` asks for; for `InspectMint`, the next unused one of the pool.
fn name(variant: Variant, next_mint: &mut usize) -> String {
    match variant {
        Variant::Direct | Variant::Bypass => BYPASS.to_string(),
        Variant::InspectCached => CACHED.to_string(),
        Variant::InspectCachedFullUpstream => FULL.to_string(),
        Variant::InspectMint => {
            *next_mint += 1;
            mint_name((*next_mint - 1) % MINT_POOL)
        }
    }
}

/// Upstream handshakes so far, both upstreams: (full, resumed).
fn upstream_handshakes(s: &Setup) -> (usize, usize) {
    let (a, b) = (s.handshakes.get(), s.handshakes_no_resume.get());
    (a.0 + b.0, a.1 + b.1)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let s = rt.block_on(setup());
    let mut next_mint = 0usize;

    // Check each path once (this also puts the cached names' leaves in the cache), that a new
    // name mints while a cached one does not, and that the no-ticket upstream is never resumed.
    rt.block_on(async {
        for v in Variant::ALL {
            let before = minted(&s);
            fetch(&s, v, &name(v, &mut next_mint)).await;
            let mints = u64::from(matches!(
                v,
                Variant::InspectCached | Variant::InspectCachedFullUpstream | Variant::InspectMint
            ));
            assert_eq!(minted(&s) - before, mints, "{v:?}: mints");
        }
        for v in [Variant::InspectCached, Variant::InspectCachedFullUpstream] {
            let before = minted(&s);
            fetch(&s, v, &name(v, &mut next_mint)).await;
            assert_eq!(minted(&s), before, "{v:?}: a cached name minted again");
        }
        assert_eq!(s.handshakes_no_resume.get(), (2, 0), "the no-ticket upstream");
    });

    let mut c = Criterion::default().configure_from_args();
    let listing = std::env::args().any(|a| a == "--list");
    if !listing {
        mint_cost(&s);
        rt.block_on(interleaved(&s, &mut next_mint));
    }

    let mut handshakes = BTreeMap::new();
    let mut mint_connections = 0u64;
    let minted_before = minted(&s);
    let mint_seconds_before = metric(&s, "hostgate_inspect_mint_seconds_sum");
    let mut g = c.benchmark_group("inspect_handshake");
    g.throughput(Throughput::Elements(1))
        .sample_size(30)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10));
    for v in Variant::ALL {
        g.bench_function(v.id(), |b| {
            b.iter_custom(|iters| {
                let (full0, resumed0) = upstream_handshakes(&s);
                let elapsed = rt.block_on(async {
                    let t = Instant::now();
                    for _ in 0..iters {
                        fetch(&s, v, &name(v, &mut next_mint)).await;
                    }
                    t.elapsed()
                });
                let (full1, resumed1) = upstream_handshakes(&s);
                let e: &mut (usize, usize) = handshakes.entry(v).or_default();
                e.0 += full1 - full0;
                e.1 += resumed1 - resumed0;
                if v == Variant::InspectMint {
                    mint_connections += iters;
                }
                elapsed
            })
        });
    }
    g.finish();

    if !listing {
        for (v, (full, resumed)) in &handshakes {
            println!("upstream handshakes during {}: {full} full, {resumed} resumed", v.id());
        }
        let minted = minted(&s) - minted_before;
        let seconds = metric(&s, "hostgate_inspect_mint_seconds_sum") - mint_seconds_before;
        println!(
            "inspect_mint: {mint_connections} connections, {minted} leaves minted{}, {:.1} µs per mint inside the \
             gateway (hostgate_inspect_mint_seconds)",
            if minted == mint_connections { "" } else { " (NOT one per connection: the name pool wrapped)" },
            seconds * 1e6 / minted.max(1) as f64
        );
    }
    c.final_summary();
}
