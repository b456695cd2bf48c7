//! Data-path benchmark: what a tunnel through the gateway costs, against a direct connection and
//! against the relay a user would write by hand (`tokio::io::copy_bidirectional` behind a plain
//! accept loop, which decides nothing).
//!
//! Groups (criterion ids `group/function`):
//!
//! * `tunnel_setup/{direct,naive_relay,hostgate_connect}`: from TCP connect to the echoed
//!   ClientHello coming back, one connection per iteration. For `hostgate_connect` that is the
//!   CONNECT exchange, the upstream connect, the sniff of a real rustls ClientHello, the policy
//!   decision and the replay; the upstream is a local echo server.
//! * `tunnel_throughput/{direct,naive_relay,hostgate_connect}`: 8 MiB each way at once over an
//!   established tunnel (set up outside the timing). Throughput is in bytes.
//!
//! * `clienthello_parse/{hostgate,rustls_acceptor}`: from the bytes of a real rustls ClientHello
//!   (one record) to its server name: `hostgate_proxy::sniff::tls::parse_client_hello` against
//!   rustls' own `server::Acceptor` (what a user of rustls would reach for); and
//!   `clienthello_parse/hostgate_64B_records`: the same hello split into 64-byte records.
//!
//! Before timing, `tunnel_memory` is printed: the heap held per open tunnel by the gateway,
//! measured with a counting allocator as (heap with N tunnels through the gateway - heap with N
//! direct connections to the same echo server) / N, after each tunnel has carried a round trip.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use hostgate_proxy::config::{Config, ListenerKind};
use hostgate_proxy::gateway::Gateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

/// Counts live heap bytes; everything else is the system allocator.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the counter
// has no effect on the memory handed out.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const PAYLOAD: usize = 8 << 20;
const NAME: &str = "bench.test";

struct Setup {
    echo: SocketAddr,
    naive: SocketAddr,
    gateway: SocketAddr,
    hello: Vec<u8>,
    _gateway: Gateway,
    _dir: tempfile::TempDir,
}

async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = l.local_addr().expect("echo addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// The relay a user would write: accept, connect to a fixed upstream, copy both ways.
async fn naive_relay(upstream: SocketAddr) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind naive");
    let addr = l.local_addr().expect("naive addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                if let Ok(mut u) = TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut s, &mut u).await;
                }
            });
        }
    });
    addr
}

/// A real rustls ClientHello for `NAME`.
fn client_hello() -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(NAME).expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write_tls");
    }
    out
}

async fn setup() -> Setup {
    let echo = echo_server().await;
    let naive = naive_relay(echo).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("bench.rules"), format!("allow {NAME}\n")).expect("rules");
    let toml = format!(
        "[[listener]]\nkind = \"connect\"\naddress = \"127.0.0.1:0\"\n[policy]\ndefault = \"deny\"\n\
         [[policy.source]]\npath = \"bench.rules\"\n[upstream]\nallow_private = [\"127.0.0.0/8\"]\n\
         [resolve]\n\"{NAME}\" = [\"{echo}\"]\n"
    );
    let path = dir.path().join("hostgate.toml");
    std::fs::write(&path, toml).expect("config");
    let gateway = Gateway::start(Config::load(&path).expect("config")).await.expect("gateway");
    let addr = gateway.local_addr(ListenerKind::Connect).expect("connect listener");
    Setup { echo, naive, gateway: addr, hello: client_hello(), _gateway: gateway, _dir: dir }
}

#[derive(Clone, Copy)]
enum Path {
    Direct,
    Naive,
    Hostgate,
}

/// Opens a connection along `path` and completes the first round trip (the ClientHello echoed).
async fn open(s: &Setup, path: Path) -> TcpStream {
    let addr = match path {
        Path::Direct => s.echo,
        Path::Naive => s.naive,
        Path::Hostgate => s.gateway,
    };
    let mut c = TcpStream::connect(addr).await.expect("connect");
    c.set_nodelay(true).expect("nodelay");
    if let Path::Hostgate = path {
        c.write_all(format!("CONNECT {NAME}:443 HTTP/1.1\r\nHost: {NAME}:443\r\n\r\n").as_bytes())
            .await
            .expect("CONNECT");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            c.read_exact(&mut byte).await.expect("CONNECT response");
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));
    }
    c.write_all(&s.hello).await.expect("hello");
    let mut back = vec![0u8; s.hello.len()];
    c.read_exact(&mut back).await.expect("echo");
    assert_eq!(back, s.hello);
    c
}

/// Re-frames a one-record handshake into records of `size` payload bytes.
fn split_records(hello: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in hello[5..].chunks(size) {
        out.extend_from_slice(&hello[..3]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// Sends `PAYLOAD` bytes while reading them back.
async fn transfer(c: TcpStream, chunk: &[u8]) {
    let (mut r, mut w) = c.into_split();
    let writer = async {
        let mut sent = 0;
        while sent < PAYLOAD {
            w.write_all(chunk).await.expect("write");
            sent += chunk.len();
        }
    };
    let reader = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        while got < PAYLOAD {
            let n = r.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed early");
            got += n;
        }
    };
    tokio::join!(writer, reader);
}

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn tunnel_memory(rt: &Runtime, s: &Setup) {
    const N: usize = 500;
    let measure = |path: Path| {
        rt.block_on(async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let before = live();
            let mut conns = Vec::with_capacity(N);
            for _ in 0..N {
                conns.push(open(s, path).await);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let held = live() - before;
            drop(conns);
            tokio::time::sleep(Duration::from_millis(300)).await;
            held
        })
    };
    let direct = measure(Path::Direct);
    let hostgate = measure(Path::Hostgate);
    let naive = measure(Path::Naive);
    println!(
        "tunnel_memory: heap per open tunnel, over a direct connection: hostgate_connect {} B, naive_relay {} B \
         (N = {N}; direct total {} B)",
        (hostgate - direct) / N as isize,
        (naive - direct) / N as isize,
        direct
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let s = rt.block_on(setup());
    let mut c = Criterion::default().configure_from_args();
    if !std::env::args().any(|a| a == "--list") {
        tunnel_memory(&rt, &s);
    }
    let paths = [("direct", Path::Direct), ("naive_relay", Path::Naive), ("hostgate_connect", Path::Hostgate)];

    let mut g = c.benchmark_group("tunnel_setup");
    for (name, path) in paths {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let t = Instant::now();
                    for _ in 0..iters {
                        black_box(open(&s, path).await);
                    }
                    t.elapsed()
                })
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("clienthello_parse");
    let split = split_records(&s.hello, 64);
    for (name, bytes) in [("hostgate", &s.hello), ("hostgate_64B_records", &split)] {
        g.bench_function(name, |b| {
            b.iter(|| match hostgate_proxy::sniff::tls::parse_client_hello(black_box(bytes), 16 * 1024) {
                Ok(hostgate_proxy::sniff::tls::Progress::Done(h)) => black_box(h.sni.map(|s| s.len())),
                other => panic!("{other:?}"),
            })
        });
    }
    g.bench_function("rustls_acceptor", |b| {
        b.iter(|| {
            let mut acceptor = rustls::server::Acceptor::default();
            let mut rd: &[u8] = black_box(&s.hello);
            acceptor.read_tls(&mut rd).expect("read_tls");
            match acceptor.accept() {
                Ok(Some(accepted)) => black_box(accepted.client_hello().server_name().map(str::len)),
                _ => panic!("no ClientHello"),
            }
        })
    });
    g.finish();

    let chunk = vec![0x5au8; 64 * 1024];
    let mut g = c.benchmark_group("tunnel_throughput");
    g.throughput(Throughput::Bytes(PAYLOAD as u64)).sample_size(20).measurement_time(Duration::from_secs(10));
    for (name, path) in paths {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let conn = open(&s, path).await;
                        let t = Instant::now();
                        transfer(conn, &chunk).await;
                        total += t.elapsed();
                    }
                    total
                })
            })
        });
    }
    g.finish();
    c.final_summary();
}
