//! Allocations per connection in the gateway: how many heap allocations (and bytes) the gateway's
//! own threads make for one connection, by kind of connection. Not timed: a count, the same on
//! every run up to a few allocations of tokio's own bookkeeping.
//!
//! The gateway's one data-path worker thread is marked at start (`gateway::on_worker_start`); a
//! counting global allocator counts only on marked threads. The clients and the upstream run on
//! the main thread's runtime and are not counted. Each kind is warmed up first (thread-local
//! scratch buffers, pooled relay buffers, metric label sets are made once), then `N` connections
//! are made four at a time and the counts divided by `N`. No tracing subscriber is installed, so
//! access events are built but not formatted (as in the datapath bench); a subscriber's own
//! formatting is the sink's cost, not the record's.
//!
//! Lines printed (`alloc/<kind>: A allocations, B bytes per connection`):
//!
//! * `access_record_denied_tls`: only the access record of a denied TLS connection: made, given the
//!   ClientHello (moved in), the decision and the refusal, then counted in the metrics and emitted
//!   to the tracing sink. Counted on the main thread.
//! * `denied_tls_transparent`: a ClientHello for a denied name through an iptables `REDIRECT` to the
//!   transparent listener (sniff, decision, `access_denied` alert, close).
//! * `bypass_tls_transparent`: an allowed (`bypass`) ClientHello through the transparent listener,
//!   relayed to a local upstream that answers 1 KiB and closes.
//! * `denied_connect`: `CONNECT denied.test:443` answered `403`.
//! * `bypass_connect`: a `CONNECT` tunnel for an allowed name with the same 1 KiB exchange.
//!
//! The transparent kinds need root, `ip` and `iptables` (the process moves into its own network
//! namespace, as the datapath bench does); without them they are skipped.

#[path = "support/hello.rs"]
mod hello;

#[path = "support/netns.rs"]
mod netns;

#[path = "support/short_upstream.rs"]
mod short_upstream;
use short_upstream::short_upstream;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hostgate_proxy::access::{Access, AccessSink, Listener, TracingSink};
use hostgate_proxy::config::{Config, ListenerKind};
use hostgate_proxy::gateway::Gateway;
use hostgate_proxy::metrics::{AccessSample, Metrics};
use hostgate_proxy::outcome::Outcome;
use hostgate_proxy::policy::{Action, Decision};
use hostgate_proxy::sniff::tls::{parse_client_hello, Progress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connections measured per kind.
const N: u64 = 2000;
/// Connections in flight at once.
const IN_FLIGHT: u64 = 4;
const ALLOWED: &str = "rate.test";
const DENIED: &str = "denied.test";
const REDIRECTED: &str = "127.0.0.2:443";
const RESPONSE_LEN: usize = 1024;

thread_local! {
    /// Whether this thread's allocations are counted.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

/// Counts the allocations (and their bytes) of marked threads; everything else is the system
/// allocator.
struct Counting;

fn count(size: usize) {
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size as u64, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the counters
// have no effect on the memory handed out, and the thread-local is const-initialised (reading it
// never allocates).
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counts() -> (u64, u64) {
    (ALLOCS.load(Ordering::Relaxed), BYTES.load(Ordering::Relaxed))
}

fn report(kind: &str, before: (u64, u64), after: (u64, u64), n: u64) {
    let allocs = (after.0 - before.0) as f64 / n as f64;
    let bytes = (after.1 - before.1) as f64 / n as f64;
    println!("alloc/{kind}: {allocs:.1} allocations, {bytes:.0} bytes per connection (N = {n})");
}

/// The access record of a denied TLS connection, on this thread, counted.
fn access_record() {
    let hello = hello::rustls_client_hello(DENIED, &[b"h2", b"http/1.1"]);
    let listener = Arc::new(Listener::new(ListenerKind::Transparent, "127.0.0.1:15001".parse().expect("addr")));
    let metrics = Metrics::new();
    let decision = Decision { action: Action::Deny, rule: None, path_unenforced: false, tie: false, would_deny: false };
    let one = |hello: hostgate_proxy::sniff::tls::ClientHello| {
        let mut a = Access::new(listener.clone(), "127.0.0.1:40000".parse().expect("addr"), 1);
        a.hello(hello);
        a.decided(&decision);
        a.refused(Outcome::Denied, "policy");
        a.bytes_down = 7;
        metrics.access(&AccessSample {
            listener: &a.listener.label,
            kind: "transparent",
            protocol: a.protocol.as_str(),
            action: a.action_str(),
            outcome: a.outcome.as_str(),
            source: None,
            bytes_up: a.bytes_up,
            bytes_down: a.bytes_down,
            would_deny: a.would_deny,
        });
        TracingSink.emit(&a, None);
    };
    let parsed = || match parse_client_hello(&hello, 16 * 1024) {
        Ok(Progress::Done(h)) => h,
        other => panic!("not a ClientHello: {other:?}"),
    };
    one(parsed()); // the metric's label set is made once
    let hellos: Vec<_> = (0..N).map(|_| parsed()).collect();
    let before = counts();
    COUNTED.set(true);
    for h in hellos {
        one(h);
    }
    COUNTED.set(false);
    report("access_record_denied_tls", before, counts(), N);
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Transparent(SocketAddr),
    Connect(SocketAddr),
}

/// One connection: (CONNECT and its answer, then) the ClientHello, then everything until the
/// close.
async fn one(kind: Kind, name: &str, hello: &[u8]) {
    let mut s = match kind {
        Kind::Transparent(addr) => TcpStream::connect(addr).await.expect("connect"),
        Kind::Connect(addr) => {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(format!("CONNECT {name}:443 HTTP/1.1\r\nHost: {name}:443\r\n\r\n").as_bytes())
                .await
                .expect("CONNECT");
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if s.read(&mut byte).await.expect("answer") == 0 {
                    return;
                }
                head.push(byte[0]);
            }
            if !head.starts_with(b"HTTP/1.1 200") {
                // A refusal: the connection stays open for another request; this client is done.
                return;
            }
            s
        }
    };
    s.write_all(hello).await.expect("hello");
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink).await;
}

/// `N` connections of `kind` for `name`, `IN_FLIGHT` at a time, after a warm-up; counted on the
/// gateway's threads.
async fn measure(label: &str, kind: Kind, name: &'static str) {
    let hello: Arc<[u8]> = hello::rustls_client_hello(name, &[b"h2", b"http/1.1"]).into();
    let batch = |n: u64| {
        let hello = hello.clone();
        async move {
            let per = n / IN_FLIGHT;
            let tasks: Vec<_> = (0..IN_FLIGHT)
                .map(|_| {
                    let hello = hello.clone();
                    tokio::spawn(async move {
                        for _ in 0..per {
                            one(kind, name, &hello).await;
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("client task");
            }
            // The gateway emits a record after the client has seen the close; let it finish.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    batch(200).await;
    let before = counts();
    batch(N).await;
    report(label, before, counts(), N);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let netns = match netns::enter_netns() {
        Ok(()) => true,
        Err(why) => {
            println!("alloc/*_transparent: skipped: {why}");
            false
        }
    };
    access_record();
    let clients = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("client runtime");
    // The gateway's connections run on its worker threads (one, see the configuration below);
    // its control plane runs on this runtime and is not counted.
    let gateway_rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("gateway runtime");
    assert!(hostgate_proxy::gateway::on_worker_start(|| COUNTED.set(true)), "a worker hook was set already");
    let upstream = clients.block_on(short_upstream(RESPONSE_LEN));
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("bench.rules"), format!("bypass {ALLOWED}\ndeny {DENIED}\n")).expect("rules");
    let transparent = if netns { "[[listener]]\nkind = \"transparent\"\naddress = \"127.0.0.1:0\"\n" } else { "" };
    let toml = format!(
        "[[listener]]\nkind = \"connect\"\naddress = \"127.0.0.1:0\"\n{transparent}\
         [policy]\ndefault = \"deny\"\n[[policy.source]]\npath = \"bench.rules\"\n\
         [upstream]\nallow_private = [\"127.0.0.0/8\"]\n[runtime]\nworkers = 1\n\
         [resolve]\n\"{ALLOWED}\" = [\"{upstream}\"]\n"
    );
    let path = dir.path().join("hostgate.toml");
    std::fs::write(&path, toml).expect("config");
    let config = Config::load(&path).expect("config");
    let gateway = gateway_rt.block_on(async { Gateway::start(config).await.expect("gateway") });
    let connect = gateway.local_addr(ListenerKind::Connect).expect("connect listener");
    let redirected = gateway.local_addr(ListenerKind::Transparent).map(|l| netns::redirect(REDIRECTED, l));
    clients.block_on(async {
        match redirected {
            Some(Ok(addr)) => {
                measure("denied_tls_transparent", Kind::Transparent(addr), DENIED).await;
                measure("bypass_tls_transparent", Kind::Transparent(addr), ALLOWED).await;
            }
            Some(Err(e)) => println!("alloc/*_transparent: skipped: {e}"),
            None => {}
        }
        measure("denied_connect", Kind::Connect(connect), DENIED).await;
        measure("bypass_connect", Kind::Connect(connect), ALLOWED).await;
    });
    gateway_rt.block_on(gateway.shutdown(Duration::from_secs(1)));
}
