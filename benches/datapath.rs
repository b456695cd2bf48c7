//! Data-path benchmark (formerly `relay`): what going through the gateway costs, against a direct
//! connection and against the relay a user would write by hand (`tokio::io::copy_bidirectional`
//! behind a plain accept loop, which decides nothing). Everything is on loopback, in this process,
//! on one 2-worker tokio runtime shared by the clients, the gateway and the upstreams.
//!
//! Groups (criterion ids `group/function`):
//!
//! * `tunnel_setup/{direct,naive_relay,hostgate_connect}`: from TCP connect to the echoed
//!   ClientHello coming back, one connection per iteration. For `hostgate_connect` that is the
//!   CONNECT exchange, the upstream connect, the sniff of a real rustls ClientHello, the policy
//!   decision and the replay; the upstream is a local echo server.
//! * `tunnel_throughput/{direct,naive_relay,hostgate_connect}`: 8 MiB each way at once over an
//!   established tunnel (set up outside the timing). Throughput is in bytes.
//! * `connection_rate/{direct,naive_relay,hostgate_connect,hostgate_transparent}`: new
//!   connections per second, `CONCURRENCY` (16) in flight at all times. Each connection sends a real rustls ClientHello
//!   (SNI `rate.test`) and reads until the upstream closes; the upstream reads the client's first
//!   TLS record, writes 1 KiB and closes (`short_upstream`). `direct` connects straight to it;
//!   `naive_relay` goes through a naive relay to it (two TCP connections per connection, as
//!   through the gateway, and nothing else: the floor for any relay on this machine);
//!   `hostgate_connect` sends `CONNECT rate.test:443` to the connect listener and waits for the
//!   `200` first (the gateway decides the host, resolves the `[resolve]` pin, connects upstream,
//!   answers, sniffs the hello, decides again, replays it, relays the 1 KiB and the close);
//!   `hostgate_transparent` connects to `127.0.0.2:443`, which an iptables `REDIRECT` rule sends to
//!   the transparent listener (`SO_ORIGINAL_DST`, sniff, decision on the SNI, a connect to the
//!   name's pin, relay). Throughput is in connections, so criterion prints connections/s. The
//!   clients run on the same two cores, so this is the machine's rate with the gateway's work
//!   added, not the gateway's alone. No tracing subscriber is installed, so access events are
//!   built but not formatted or written.
//!
//! The transparent case needs root, `ip` and `iptables`: the process then moves itself into a new
//! network namespace at start (`unshare(CLONE_NEWNET)`, before any thread exists, so every thread
//! and child inherits it), brings its `lo` up and adds `iptables -t nat -A OUTPUT -p tcp -d
//! 127.0.0.2 --dport 443 -j REDIRECT --to-ports <transparent listener port>` there; the namespace
//! and its rule vanish with the process. With the rule in place conntrack follows every connection
//! in the namespace, the other functions' too, so all of them pay it alike. Without root, `ip` or
//! `iptables` it prints that the case is skipped and runs the rest in the current namespace.
//!
//! Printed before timing: `tunnel_memory`, the heap held per open tunnel by the gateway, measured
//! with a counting allocator as (heap with N tunnels through the gateway - heap with N direct
//! connections to the same echo server) / N, after each tunnel has carried a round trip; and
//! `interleaved` lines, where the functions of each group take turns (one connection each for
//! `tunnel_setup`, one 8 MiB transfer each for `tunnel_throughput`, one batch of `RATE_BATCH`
//! connections each for `connection_rate`), with the median of each and its ratio to `direct`
//! (load that comes and goes on the machine then falls on every function alike).

#[path = "support/hello.rs"]
mod hello;

#[path = "support/median.rs"]
mod median;

#[path = "support/netns.rs"]
mod netns;

#[path = "support/short_upstream.rs"]
mod short_upstream;
use short_upstream::short_upstream;
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

use hello::rustls_client_hello;

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
/// The name of `connection_rate`, pinned to the short upstream.
const RATE_NAME: &str = "rate.test";
/// What `short_upstream` answers with.
const RESPONSE_LEN: usize = 1024;
/// Connections in flight during `connection_rate`.
const CONCURRENCY: usize = 16;
/// Connections per turn in `connection_rate`'s interleaved measurement.
const RATE_BATCH: u64 = 256;
/// The address the transparent case's clients connect to; REDIRECTed to the listener.
const REDIRECTED: &str = "127.0.0.2:443";

struct Setup {
    echo: SocketAddr,
    naive: SocketAddr,
    gateway: SocketAddr,
    hello: Vec<u8>,
    rate: Arc<Rate>,
    _gateway: Gateway,
    _dir: tempfile::TempDir,
}

/// What `connection_rate`'s clients need (shared with their tasks).
struct Rate {
    /// The short upstream.
    upstream: SocketAddr,
    /// A naive relay to it.
    naive: SocketAddr,
    /// The gateway's connect listener.
    connect: SocketAddr,
    /// `REDIRECTED`, when the transparent case is set up.
    transparent: Option<SocketAddr>,
    /// A rustls ClientHello for `RATE_NAME`.
    hello: Vec<u8>,
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

async fn setup(netns: bool) -> Setup {
    let echo = echo_server().await;
    let naive = naive_relay(echo).await;
    let short = short_upstream(RESPONSE_LEN).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("bench.rules"), format!("allow {NAME}\nallow {RATE_NAME}\n")).expect("rules");
    let transparent_listener =
        if netns { "[[listener]]\nkind = \"transparent\"\naddress = \"127.0.0.1:0\"\n" } else { "" };
    let toml = format!(
        "[[listener]]\nkind = \"connect\"\naddress = \"127.0.0.1:0\"\n{transparent_listener}\
         [policy]\ndefault = \"deny\"\n\
         [[policy.source]]\npath = \"bench.rules\"\n[upstream]\nallow_private = [\"127.0.0.0/8\"]\n\
         [resolve]\n\"{NAME}\" = [\"{echo}\"]\n\"{RATE_NAME}\" = [\"{short}\"]\n"
    );
    let path = dir.path().join("hostgate.toml");
    std::fs::write(&path, toml).expect("config");
    let gateway = Gateway::start(Config::load(&path).expect("config")).await.expect("gateway");
    let addr = gateway.local_addr(ListenerKind::Connect).expect("connect listener");
    let transparent = match gateway.local_addr(ListenerKind::Transparent) {
        None => None,
        Some(listener) => match netns::redirect(REDIRECTED, listener) {
            Ok(addr) => Some(addr),
            Err(e) => {
                println!("connection_rate/hostgate_transparent: skipped: {e}");
                None
            }
        },
    };
    let naive_short = naive_relay(short).await;
    let rate = Arc::new(Rate {
        upstream: short,
        naive: naive_short,
        connect: addr,
        transparent,
        hello: rustls_client_hello(RATE_NAME, &[]),
    });
    Setup { echo, naive, gateway: addr, hello: rustls_client_hello(NAME, &[]), rate, _gateway: gateway, _dir: dir }
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RatePath {
    Direct,
    Naive,
    Connect,
    Transparent,
}

impl RatePath {
    fn id(self) -> &'static str {
        match self {
            RatePath::Direct => "direct",
            RatePath::Naive => "naive_relay",
            RatePath::Connect => "hostgate_connect",
            RatePath::Transparent => "hostgate_transparent",
        }
    }
}

/// Reads a response head (up to its empty line) and nothing more: the gateway sends nothing after
/// the `200` until the upstream does, and the upstream waits for the ClientHello.
async fn read_head(c: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 256];
    while !head.ends_with(b"\r\n\r\n") {
        let n = c.read(&mut buf).await.expect("CONNECT response");
        assert!(n > 0, "closed before the CONNECT response ended: {}", String::from_utf8_lossy(&head));
        head.extend_from_slice(&buf[..n]);
    }
    head
}

/// One `connection_rate` connection: connect (and CONNECT), ClientHello, read the upstream's
/// answer until it closes, close.
async fn short_connection(r: &Rate, path: RatePath) {
    let addr = match path {
        RatePath::Direct => r.upstream,
        RatePath::Naive => r.naive,
        RatePath::Connect => r.connect,
        RatePath::Transparent => r.transparent.expect("transparent case set up"),
    };
    let mut c = TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("{}: connect {addr}: {e}", path.id()));
    c.set_nodelay(true).expect("nodelay");
    if path == RatePath::Connect {
        c.write_all(format!("CONNECT {RATE_NAME}:443 HTTP/1.1\r\nHost: {RATE_NAME}:443\r\n\r\n").as_bytes())
            .await
            .expect("CONNECT");
        let head = read_head(&mut c).await;
        assert!(head.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));
    }
    c.write_all(&r.hello).await.expect("hello");
    let mut buf = [0u8; 2 * RESPONSE_LEN];
    let mut got = 0;
    loop {
        match c.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => panic!("{}: reading the response after {got} bytes: {e}", path.id()),
        }
    }
    assert_eq!(got, RESPONSE_LEN, "{}", path.id());
}

/// Makes `n` connections along `path`, `CONCURRENCY` at a time; returns the time they took.
async fn connection_burst(r: &Arc<Rate>, path: RatePath, n: u64) -> Duration {
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY.min(n as usize) {
        let (r, next) = (r.clone(), next.clone());
        tasks.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                short_connection(&r, path).await;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("client task");
    }
    t.elapsed()
}

/// `measure` for every function in turn, `rounds` rounds; prints the median of each (in `unit`,
/// from its `Duration` through `scale`) and its ratio to the first (`direct`).
fn interleaved<P: Copy>(
    title: &str,
    paths: &[(&'static str, P)],
    rounds: usize,
    unit: &str,
    scale: impl Fn(Duration) -> f64,
    mut measure: impl FnMut(P) -> Duration,
) {
    let mut times = vec![Vec::with_capacity(rounds); paths.len()];
    for _ in 0..rounds {
        for ((_, p), t) in paths.iter().zip(&mut times) {
            t.push(measure(*p));
        }
    }
    let medians = median::medians(&mut times);
    let first = medians[0].as_secs_f64();
    let line: Vec<String> = paths
        .iter()
        .zip(&medians)
        .map(|((name, _), m)| format!("{name} {:.1} {unit} ({:.2})", scale(*m), m.as_secs_f64() / first))
        .collect();
    println!(
        "interleaved {title}: median over {rounds} rounds ({unit}; time ratio to {}): {}",
        paths[0].0,
        line.join(", ")
    );
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
    let args: Vec<String> = std::env::args().collect();
    // Criterion's own rule: without `--bench` (as under `cargo test`), or with `--test`, it runs
    // each benchmark once as a smoke test.
    let test_mode = args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench");
    let listing = args.iter().any(|a| a == "--list");
    // Before the runtime starts its threads (see `enter_netns`).
    let netns = if listing {
        false
    } else {
        match netns::enter_netns() {
            Ok(()) => true,
            Err(why) => {
                println!("connection_rate/hostgate_transparent: skipped: {why}");
                false
            }
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let s = rt.block_on(setup(netns));
    let mut rate_paths =
        vec![("direct", RatePath::Direct), ("naive_relay", RatePath::Naive), ("hostgate_connect", RatePath::Connect)];
    if s.rate.transparent.is_some() {
        rate_paths.push(("hostgate_transparent", RatePath::Transparent));
    }
    // Every path works once before anything is timed.
    rt.block_on(async {
        for (_, p) in &rate_paths {
            short_connection(&s.rate, *p).await;
        }
    });
    let paths = [("direct", Path::Direct), ("naive_relay", Path::Naive), ("hostgate_connect", Path::Hostgate)];
    let chunk = vec![0x5au8; 64 * 1024];
    let mut c = Criterion::default().configure_from_args();
    if !listing && !test_mode {
        tunnel_memory(&rt, &s);
        let micros = |d: Duration| d.as_secs_f64() * 1e6;
        interleaved("tunnel_setup", &paths, 300, "µs", micros, |path| {
            rt.block_on(async {
                let t = Instant::now();
                black_box(open(&s, path).await);
                t.elapsed()
            })
        });
        let mib_s = |d: Duration| PAYLOAD as f64 / (1024.0 * 1024.0) / d.as_secs_f64();
        interleaved("tunnel_throughput", &paths, 20, "MiB/s", mib_s, |path| {
            rt.block_on(async {
                let conn = open(&s, path).await;
                let t = Instant::now();
                transfer(conn, &chunk).await;
                t.elapsed()
            })
        });
        let per_s = |d: Duration| RATE_BATCH as f64 / d.as_secs_f64();
        interleaved(
            &format!("connection_rate ({RATE_BATCH} connections per turn, {CONCURRENCY} in flight)"),
            &rate_paths,
            40,
            "connections/s",
            per_s,
            |path| rt.block_on(connection_burst(&s.rate, path, RATE_BATCH)),
        );
    }

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

    let mut g = c.benchmark_group("connection_rate");
    g.throughput(Throughput::Elements(1));
    for (name, path) in &rate_paths {
        g.bench_function(*name, |b| b.iter_custom(|iters| rt.block_on(connection_burst(&s.rate, *path, iters))));
    }
    g.finish();
    c.final_summary();
}
