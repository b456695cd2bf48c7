//! Adversarial clients and upstreams against a gateway on real sockets: slowloris heads and
//! ClientHellos, thousands of idle connections (memory per connection measured), half-closed,
//! reset and silent peers in the middle of a tunnel, HTTP request smuggling and oversized heads,
//! IP literals and IPv6 forms of private addresses, pins mixing private and public addresses,
//! descriptor exhaustion of the real binary, and reloads that fail in every way a file can.
//!
//! Every test checks what the client sees and what the access log says. The tests of this file
//! run one at a time (a process-wide lock): each counts the process's open descriptors before
//! and after (the in-process gateway's sockets are this process's) and checks that no gateway
//! task panicked.
//!
//! `HOSTGATE_ADV_IDLE` sets the number of idle connections (2,000 by default; the issue asks
//! for 10,000, which needs about 20,500 descriptors: the test raises its own limit with
//! `prlimit` when it can).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use hostgate_proxy::access::AccessEvent;
use hostgate_proxy::outcome::Outcome;
use hostgate_proxy::policy::Action;
use hyper::Method;
use serde_json::Value;
use support::gateway::{metric, pins_many};
use support::http::{
    assert_alert_or_nothing, assert_reason_token, connect_tunnel, get_absolute, read_connect_answer, read_response,
    read_until_closed, send_connect, tls_handshake, tunnel,
};
use support::process::Hostgate;
use support::resources::{open_fds, raise_nofile, rss_kib};
use support::upstream::{RawUpstream, Resetting};
use support::{
    assert_logged_deny, assert_rule, dst, pins, ClientHello, Closed, HttpConn, HttpUpstream, Response, TestCa,
    TestGateway, TlsUpstream, LOCAL_UPSTREAM, STEP,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{Mutex, MutexGuard};
use tokio::task::JoinSet;

// ---------------------------------------------------------------------------------------------
// One case at a time: descriptors and panics.

/// Held by the running test: the descriptor and panic accounting needs the process to itself.
static SERIAL: Mutex<()> = Mutex::const_new(());
/// Panics on the runtime's worker threads (the gateway's tasks; the tests' own assertions run on
/// the test thread and are not counted).
static TASK_PANICS: AtomicUsize = AtomicUsize::new(0);
static PANIC_HOOK: Once = Once::new();

/// The process's open descriptors by kind: `tcp` (sockets other than Unix sockets), `pipe`,
/// `file`. Left out: event polls and event fds, and Unix sockets, because each test's runtime
/// has its own (tokio's signal driver keeps a Unix socket per runtime) and the next test's
/// thread builds its runtime while this test runs.
fn fd_census() -> BTreeMap<&'static str, usize> {
    let unix: std::collections::HashSet<String> = std::fs::read_to_string("/proc/net/unix")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(6).map(str::to_string))
        .collect();
    let mut kinds = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return kinds };
    for entry in dir.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else { continue };
        let target = target.to_string_lossy().into_owned();
        let kind = if let Some(inode) = target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) {
            if unix.contains(inode) {
                continue;
            }
            "tcp"
        } else if target.starts_with("pipe:") {
            "pipe"
        } else if target.starts_with("anon_inode:") {
            continue;
        } else {
            "file"
        };
        *kinds.entry(kind).or_insert(0) += 1;
    }
    kinds
}

/// This process's TCP sockets that are not listening: (state, local, remote), from
/// `/proc/net/tcp{,6}` (addresses in its hex notation).
fn tcp_connections() -> Vec<(String, String, String)> {
    let mut by_inode = BTreeMap::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table).unwrap_or_default().lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[3] != "0A" {
                by_inode.insert(f[9].to_string(), (f[3].to_string(), f[1].to_string(), f[2].to_string()));
            }
        }
    }
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|t| {
            let t = t.to_string_lossy().into_owned();
            t.strip_prefix("socket:[").and_then(|i| i.strip_suffix(']')).and_then(|i| by_inode.get(i).cloned())
        })
        .collect()
}

/// Waits (up to 5 s) until this process has no TCP connection open: with every client gone and
/// the gateway still running, whatever is left is a connection the gateway (or an upstream)
/// kept.
async fn assert_no_connections_left(what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut left = tcp_connections();
    while !left.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        left = tcp_connections();
    }
    assert!(left.is_empty(), "{what}: TCP connections still open (state, local, remote): {left:?}");
}

fn fd_total(census: &BTreeMap<&'static str, usize>) -> usize {
    census.values().sum()
}

/// One test's claim on the process.
struct Case {
    name: &'static str,
    fds: BTreeMap<&'static str, usize>,
    panics: usize,
    _serial: MutexGuard<'static, ()>,
}

impl Case {
    async fn begin(name: &'static str) -> Case {
        let serial = SERIAL.lock().await;
        PANIC_HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if std::thread::current().name().is_some_and(|n| n.starts_with("tokio-runtime-worker")) {
                    TASK_PANICS.fetch_add(1, Ordering::SeqCst);
                }
                previous(info);
            }));
        });
        Case { name, fds: fd_census(), panics: TASK_PANICS.load(Ordering::SeqCst), _serial: serial }
    }

    /// After everything the case opened is dropped (the gateway shut down): waits up to 5 s for
    /// the descriptors to come back to their number before the case, then asserts that they
    /// did and that no task panicked.
    async fn end(self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let before = fd_total(&self.fds);
        let mut now = fd_census();
        while fd_total(&now) > before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            now = fd_census();
        }
        eprintln!("[{}] descriptors before {:?}, after {:?} (all: {})", self.name, self.fds, now, open_fds());
        assert!(fd_total(&now) <= before, "[{}] descriptors leaked: before {:?}, after {:?}", self.name, self.fds, now);
        let panics = TASK_PANICS.load(Ordering::SeqCst) - self.panics;
        assert_eq!(panics, 0, "[{}] {panics} task(s) panicked (see the output above)", self.name);
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// `hostgate_active_connections` of a listener.
fn active(gw: &TestGateway, listener: SocketAddr) -> f64 {
    let key = format!("hostgate_active_connections{{listener=\"{listener}\"}}");
    metric(&gw.metrics(), &key).unwrap_or(0.0)
}

/// Polls `cond` every 10 ms until it holds or `limit` passes; returns whether it held.
async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Writes `bytes` one at a time, `every` apart, until done or a write fails; returns the write
/// half (so that dropping it does not half-close early) and how many bytes went.
async fn trickle(mut wr: OwnedWriteHalf, bytes: Vec<u8>, every: Duration) -> (OwnedWriteHalf, usize) {
    let mut sent = 0;
    for b in bytes {
        if wr.write_all(&[b]).await.is_err() {
            break;
        }
        sent += 1;
        tokio::time::sleep(every).await;
    }
    (wr, sent)
}

/// Reads exactly `n` bytes within [`STEP`].
async fn read_n<R: AsyncReadExt + Unpin>(r: &mut R, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(STEP, r.read_exact(&mut buf)).await.expect("read timed out").unwrap();
    buf
}

/// Reads to end of stream within [`STEP`].
async fn read_to_end<R: AsyncReadExt + Unpin>(r: &mut R) -> Vec<u8> {
    let mut buf = Vec::new();
    tokio::time::timeout(STEP, r.read_to_end(&mut buf)).await.expect("no end of stream").unwrap();
    buf
}

/// Every complete HTTP/1 response in `bytes`, in order.
async fn responses(bytes: &[u8]) -> Vec<Response> {
    let mut rest = bytes;
    let mut out = Vec::new();
    while !rest.is_empty() {
        match read_response(&mut rest, true).await {
            Ok(r) => out.push(r),
            Err(_) => break,
        }
    }
    out
}

/// The detail of an event, lowercase (empty when absent).
fn detail(ev: &AccessEvent) -> String {
    ev.detail.as_deref().unwrap_or_default().to_ascii_lowercase()
}

// ---------------------------------------------------------------------------------------------
// Slowloris.

/// Clients that send one byte per second: a ClientHello in a CONNECT tunnel, an HTTP head in a
/// CONNECT tunnel to port 80 (both still being sniffed), an HTTP head to the explicit proxy and
/// the rest of a head after its method in a port-80 tunnel (both read by hyper). Every one is
/// closed at `sniff.timeout` (2 s) from its start, however steadily it trickles: the deadline is
/// for the whole head, not per read. The two sniffed ones are logged `timeout`; the two hyper
/// reads are not logged at all (see the ignored test below).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_one_byte_per_second_is_closed_at_the_sniff_timeout() {
    let case = Case::begin("slowloris").await;
    async {
        let raw = RawUpstream::start().await;
        let h = HttpUpstream::start("H").await;
        let extra = format!(
            "{LOCAL_UPSTREAM}[sniff]\ntimeout = \"2s\"\n{}",
            pins(&[("slow.test", raw.addr()), ("site.test", h.addr())])
        );
        let gw = TestGateway::start("allow slow.test\nallow site.test\n", &extra).await;
        let proxy = gw.connect_addr();
        let second = Duration::from_secs(1);
        let head = b"GET / HTTP/1.1\r\nHost: site.test\r\nUser-Agent: slowloris\r\n\r\n".to_vec();

        // Each client: connected (and its tunnel open), then trickling; how long until closed.
        let tls = async {
            let tcp = tunnel(proxy, "slow.test:443").await;
            let client = tcp.local_addr().unwrap();
            let (mut rd, wr) = tcp.into_split();
            let start = Instant::now();
            let writer = tokio::spawn(trickle(wr, ClientHello::new("slow.test").to_bytes(), second));
            let closed = read_until_closed(&mut rd, Duration::from_secs(10)).await;
            writer.abort();
            (client, start.elapsed(), closed)
        };
        let http_sniffed = async {
            let tcp = tunnel(proxy, "site.test:80").await;
            let client = tcp.local_addr().unwrap();
            let (mut rd, wr) = tcp.into_split();
            let start = Instant::now();
            let writer = tokio::spawn(trickle(wr, head.clone(), second));
            let closed = read_until_closed(&mut rd, Duration::from_secs(10)).await;
            writer.abort();
            (client, start.elapsed(), closed)
        };
        let http_proxy = async {
            let tcp = TcpStream::connect(proxy).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let client = tcp.local_addr().unwrap();
            let (mut rd, wr) = tcp.into_split();
            let start = Instant::now();
            let absolute = b"GET http://site.test/ HTTP/1.1\r\nHost: site.test\r\n\r\n".to_vec();
            let writer = tokio::spawn(trickle(wr, absolute, second));
            let closed = read_until_closed(&mut rd, Duration::from_secs(10)).await;
            writer.abort();
            (client, start.elapsed(), closed)
        };
        let http_after_method = async {
            let tcp = tunnel(proxy, "site.test:80").await;
            let client = tcp.local_addr().unwrap();
            let (mut rd, mut wr) = tcp.into_split();
            let start = Instant::now();
            wr.write_all(b"GET ").await.unwrap();
            let writer = tokio::spawn(trickle(wr, head[4..].to_vec(), second));
            let closed = read_until_closed(&mut rd, Duration::from_secs(10)).await;
            writer.abort();
            (client, start.elapsed(), closed)
        };
        // Silent for most of the timeout, then trickling: the deadline runs from the accept (the
        // gateway allocates nothing for the connection until its first byte, but the wait for
        // it counts), so the first byte does not buy another full timeout.
        let http_proxy_late = async {
            let start = Instant::now();
            let tcp = TcpStream::connect(proxy).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let client = tcp.local_addr().unwrap();
            let (mut rd, wr) = tcp.into_split();
            tokio::time::sleep(Duration::from_millis(1200)).await;
            let absolute = b"GET http://site.test/ HTTP/1.1\r\nHost: site.test\r\n\r\n".to_vec();
            let writer = tokio::spawn(trickle(wr, absolute, Duration::from_millis(300)));
            let closed = read_until_closed(&mut rd, Duration::from_secs(10)).await;
            writer.abort();
            (client, start.elapsed(), closed)
        };
        let (tls, http_sniffed, http_proxy, http_after_method, http_proxy_late) =
            tokio::join!(tls, http_sniffed, http_proxy, http_after_method, http_proxy_late);
        let waited = http_proxy_late.1;
        eprintln!("slowloris, HTTP head to the proxy after 1.2 s of silence: closed after {waited:?}");
        // Restarted at the first byte, the deadline would be 3.2 s after the connect.
        assert!(waited >= Duration::from_millis(1900), "silent, then trickling: closed after {waited:?}");
        assert!(waited < Duration::from_millis(2900), "silent, then trickling: still open after {waited:?}");
        let ev = gw.wait_access(|e| e.client == http_proxy_late.0).await;
        assert_eq!(ev.outcome, Outcome::Timeout, "{ev:#?}");
        assert_eq!(detail(&ev), "no complete request head within 2000 ms", "{ev:#?}");

        for (what, (_, waited, closed)) in [
            ("ClientHello in a tunnel", &tls),
            ("HTTP head in a port-80 tunnel", &http_sniffed),
            ("HTTP head to the proxy", &http_proxy),
            ("HTTP head after its method, in a port-80 tunnel", &http_after_method),
        ] {
            eprintln!("slowloris, {what}: closed after {waited:?}, {closed:?}");
            assert!(*waited >= Duration::from_millis(1900), "{what}: closed after {waited:?}, before the timeout");
            assert!(*waited < Duration::from_secs(4), "{what}: still open {waited:?} after its start");
            assert!(
                closed.bytes.is_empty(),
                "{what}: the gateway answered {:?}",
                String::from_utf8_lossy(&closed.bytes)
            );
            assert_alert_or_nothing(closed);
        }
        assert_eq!(h.count(), 0, "a trickled request reached the upstream");

        // The ClientHello: the tunnel was connected upstream before the 200, and not one byte
        // went there; the gateway closed that side too.
        let mut up = raw.next().await;
        let upstream_side = read_until_closed(&mut up, STEP).await;
        assert!(upstream_side.bytes.is_empty(), "{upstream_side:?}");
        for (what, client) in [("ClientHello", &tls.0), ("HTTP head", &http_sniffed.0)] {
            let ev = gw.wait_access(|e| e.client == *client).await;
            assert_eq!(ev.outcome, Outcome::Timeout, "{what}: {ev:#?}");
            let d = detail(&ev);
            assert!(d.contains("within 2000 ms"), "{what}: {ev:#?}");
            // A byte or two got in before the deadline: the deadline did not restart with them.
            let read: u64 = d.split('(').nth(1).and_then(|s| s.split(' ').next()).and_then(|n| n.parse().ok()).unwrap();
            assert!((1..=3).contains(&read), "{what}: {read} bytes read: {ev:#?}");
            assert_eq!(ev.method, Some(Method::CONNECT), "{what}: {ev:#?}");
            assert_logged_deny(&ev);
        }
        drop(up);
        assert_no_connections_left("slowloris").await;
        gw.shutdown().await;
    }
    .await;
    case.end().await;
}

// ---------------------------------------------------------------------------------------------
// Many idle connections.

/// N connections (`HOSTGATE_ADV_IDLE`, 2,000 by default) to the explicit proxy that never send a
/// byte: all are held until `sniff.timeout` (the connect listener's header-read timeout) and then
/// closed, the memory they cost is bounded (measured as the process's resident set, gateway and
/// client sides together), each close is logged (`timeout`, `no complete request head`, action
/// `deny`) under its client's address, and the gateway serves a normal request afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_connections_are_closed_by_the_sniff_timeout() {
    let case = Case::begin("idle").await;
    async {
        let mut n: usize = std::env::var("HOSTGATE_ADV_IDLE").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
        // Two descriptors per connection (the client's and the gateway's), and room for the rest.
        let want = 2 * n as u64 + 512;
        let limit = raise_nofile(want);
        if limit < want {
            let fit = (limit.saturating_sub(512) / 2) as usize;
            eprintln!("RLIMIT_NOFILE is {limit}: {fit} idle connections instead of {n}");
            n = fit;
        }
        assert!(n >= 100, "room for only {n} connections");
        // Long enough to open them all before the first is closed (10,000 take about 4 s).
        let timeout = Duration::from_secs(5 + n as u64 / 2500);
        let h = HttpUpstream::start("H").await;
        let extra = format!(
            "{LOCAL_UPSTREAM}[sniff]\ntimeout = \"{}s\"\n[limits]\nmax_connections = {}\n{}",
            timeout.as_secs(),
            n + 64,
            pins(&[("site.test", h.addr())])
        );
        let gw = TestGateway::start_with(&[("connect", "127.0.0.1:0")], "allow site.test\n", &extra).await;
        let proxy = gw.connect_addr();

        // Warm: one request served, so that what is allocated once is not counted.
        let mut conn = HttpConn::connect(proxy).await;
        assert_eq!(conn.request(&get_absolute("site.test", "/warm", "site.test")).await.status, 200);
        drop(conn);
        assert!(eventually(STEP, || active(&gw, proxy) == 0.0).await, "the warm-up connection is still open");
        let rss_before = rss_kib();

        let start = Instant::now();
        let mut idle = Vec::with_capacity(n);
        while idle.len() < n {
            let mut batch = JoinSet::new();
            for _ in 0..(n - idle.len()).min(256) {
                batch.spawn(TcpStream::connect(proxy));
            }
            while let Some(r) = batch.join_next().await {
                idle.push(r.unwrap().unwrap_or_else(|e| panic!("connect {}: {e}", idle.len())));
            }
        }
        let opened = start.elapsed();
        let all_in = eventually(timeout - Duration::from_millis(200), || active(&gw, proxy) == n as f64).await;
        let held = active(&gw, proxy);
        assert!(all_in, "{held} of {n} connections held (opened in {opened:?})");
        let rss_held = rss_kib();

        // Closed by the gateway, at the timeout and not before.
        tokio::time::sleep((start + timeout).saturating_duration_since(Instant::now() + Duration::from_millis(500)))
            .await;
        assert_eq!(active(&gw, proxy), n as f64, "closed before the timeout ({:?})", start.elapsed());
        assert!(
            eventually(timeout + Duration::from_secs(10), || active(&gw, proxy) == 0.0).await,
            "{} connections still open {:?} after the first",
            active(&gw, proxy),
            start.elapsed()
        );
        let all_closed = start.elapsed();
        let clients: std::collections::BTreeSet<SocketAddr> =
            idle.iter().map(|tcp| tcp.local_addr().unwrap()).collect();
        let mut reads = JoinSet::new();
        for mut tcp in idle {
            reads.spawn(async move {
                let mut b = [0u8; 16];
                // Generous: with thousands of connections on a loaded 2-core machine the sniff
                // timeout's closes can take a few seconds to reach every client.
                tokio::time::timeout(Duration::from_secs(20), tcp.read(&mut b)).await
            });
        }
        let mut eof = 0;
        while let Some(r) = reads.join_next().await {
            match r.unwrap() {
                Ok(Ok(0)) | Ok(Err(_)) => eof += 1,
                Ok(Ok(k)) => panic!("an idle client was sent {k} bytes"),
                Err(_) => {}
            }
        }
        assert_eq!(eof, n, "clients that saw their connection end");
        let rss_after = rss_kib();

        // One access event per idle connection, each saying why it ended.
        let logged = |e: &AccessEvent| clients.contains(&e.client);
        assert!(
            eventually(STEP, || gw.access_events(logged).len() >= n).await,
            "{} of {n} idle connections logged",
            gw.access_events(logged).len()
        );
        let events = gw.access_events(logged);
        assert_eq!(events.len(), n, "events for {n} idle connections");
        for ev in &events {
            assert_eq!(ev.outcome, Outcome::Timeout, "{ev:#?}");
            assert!(detail(ev).starts_with("no complete request head within"), "{ev:#?}");
            assert_logged_deny(ev);
        }

        // And the gateway still serves.
        let mut conn = HttpConn::connect(proxy).await;
        let client = conn.local_addr();
        let r = conn.request(&get_absolute("site.test", "/after", "site.test")).await;
        assert_eq!(r.text(), "upstream=H host=site.test path=/after method=GET");
        // By path too: the client's port may be one an idle connection had (and logged).
        let ev = gw.wait_access(|e| e.client == client && e.path.as_deref() == Some("/after")).await;
        assert_eq!(ev.outcome, Outcome::Ok, "{ev:#?}");

        let per_connection = rss_held.saturating_sub(rss_before) * 1024 / n as u64;
        eprintln!(
            "{n} idle connections: opened in {opened:?}, all closed {all_closed:?} after the first; resident set \
             {rss_before} KiB before, {rss_held} KiB with them ({per_connection} bytes each, gateway and client \
             sides together), {rss_after} KiB after"
        );
        assert!(per_connection < 64 * 1024, "{per_connection} bytes of resident memory per idle connection");
        drop(conn);
        assert_no_connections_left("idle").await;
        gw.shutdown().await;
    }
    .await;
    case.end().await;
}

// ---------------------------------------------------------------------------------------------
// Half-closed, reset and silent peers in a tunnel.

const RAW_RULES: &str = "allow raw.test\nallow site.test\nallow reset.test\n";

/// A gateway whose `raw.test` goes to a [`RawUpstream`], `site.test` to an [`HttpUpstream`] and
/// `reset.test` to a [`Resetting`] server, with `extra` after the `[upstream]` lines.
async fn raw_setup(upstream_extra: &str) -> (RawUpstream, HttpUpstream, Resetting, TestGateway) {
    let raw = RawUpstream::start().await;
    let h = HttpUpstream::start("H").await;
    let reset = Resetting::start().await;
    let extra = format!(
        "{LOCAL_UPSTREAM}{upstream_extra}{}",
        pins(&[("raw.test", raw.addr()), ("site.test", h.addr()), ("reset.test", reset.addr())])
    );
    let gw = TestGateway::start(RAW_RULES, &extra).await;
    (raw, h, reset, gw)
}

/// A tunnel to `raw.test` carrying a ClientHello, and the upstream's side of it once the hello
/// has arrived there: (client, client address, upstream side, hello length).
async fn raw_tunnel(gw: &TestGateway, raw: &RawUpstream) -> (TcpStream, SocketAddr, TcpStream, u64) {
    let mut tcp = tunnel(gw.connect_addr(), "raw.test:443").await;
    let client = tcp.local_addr().unwrap();
    let hello = ClientHello::new("raw.test").to_bytes();
    tcp.write_all(&hello).await.unwrap();
    let mut up = raw.next().await;
    assert_eq!(read_n(&mut up, hello.len()).await, hello, "the hello arrived changed");
    (tcp, client, up, hello.len() as u64)
}

/// A client that shuts down its write side mid-tunnel: the upstream sees the end of stream and
/// its answer still reaches the client. An upstream that shuts down its write side: the client
/// gets the rest and the end, and what it sends afterwards still reaches the upstream. Each
/// tunnel is logged `ok` only when both directions have ended, with exact byte counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_closed_tunnels_carry_the_other_direction_to_the_end() {
    let case = Case::begin("half-close").await;
    async {
        let (raw, _h, _reset, gw) = raw_setup("").await;

        // The client half-closes.
        let (mut c, client, mut up, hello) = raw_tunnel(&gw, &raw).await;
        c.write_all(b"ping").await.unwrap();
        c.shutdown().await.unwrap();
        assert_eq!(read_to_end(&mut up).await, b"ping", "the upstream got the bytes, then the end");
        assert!(gw.access_events(|e| e.client == client).is_empty(), "logged while the upstream still sends");
        up.write_all(b"pong").await.unwrap();
        up.shutdown().await.unwrap();
        assert_eq!(read_to_end(&mut c).await, b"pong", "the answer after the client's FIN");
        let ev = gw.wait_access(|e| e.client == client).await;
        assert_eq!(ev.outcome, Outcome::Ok, "{ev:#?}");
        assert_rule(&ev, "allow raw.test", 1);
        assert_eq!((ev.bytes_up, ev.bytes_down), (hello + 4, 4), "{ev:#?}");
        assert_eq!(ev.upstream, Some(raw.addr()), "{ev:#?}");
        drop((c, up));

        // The upstream half-closes.
        let (mut c, client, mut up, hello) = raw_tunnel(&gw, &raw).await;
        up.write_all(b"early").await.unwrap();
        up.shutdown().await.unwrap();
        assert_eq!(read_to_end(&mut c).await, b"early", "the client got the rest, then the end");
        assert!(gw.access_events(|e| e.client == client).is_empty(), "logged while the client still sends");
        c.write_all(b"late").await.unwrap();
        assert_eq!(read_n(&mut up, 4).await, b"late", "sent after the upstream's FIN");
        c.shutdown().await.unwrap();
        assert_eq!(read_to_end(&mut up).await, b"", "the client's FIN");
        let ev = gw.wait_access(|e| e.client == client).await;
        assert_eq!(ev.outcome, Outcome::Ok, "{ev:#?}");
        assert_eq!((ev.bytes_up, ev.bytes_down), (hello + 4, 5), "{ev:#?}");
        drop((c, up));
        assert!(eventually(STEP, || active(&gw, gw.connect_addr()) == 0.0).await, "connections left open");
        assert_no_connections_left("after the tunnels").await;
        gw.shutdown().await;
    }
    .await;
    case.end().await;
}

/// A client that resets its tunnel (`SO_LINGER` 0): logged `client-error`, and the upstream
/// connection is closed too. An upstream that resets: logged `upstream-error`, and the client
/// connection is closed. Neither hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_in_the_middle_of_a_tunnel_closes_the_other_side() {
    let case = Case::begin("reset").await;
    async {
        let (raw, _h, _reset, gw) = raw_setup("").await;

        // The client resets.
        let (mut c, client, mut up, hello) = raw_tunnel(&gw, &raw).await;
        c.write_all(b"x").await.unwrap();
        assert_eq!(read_n(&mut up, 1).await, b"x");
        up.write_all(b"y").await.unwrap();
        assert_eq!(read_n(&mut c, 1).await, b"y");
        c.set_zero_linger().unwrap();
        drop(c);
        let upstream_side = read_until_closed(&mut up, STEP).await;
        assert!(upstream_side.bytes.is_empty(), "{upstream_side:?}");
        let ev = gw.wait_access(|e| e.client == client).await;
        assert_eq!(ev.outcome, Outcome::ClientError, "{ev:#?}");
        assert!(detail(&ev).contains("reset"), "{ev:#?}");
        assert_eq!((ev.bytes_up, ev.bytes_down), (hello + 1, 1), "{ev:#?}");
        assert_rule(&ev, "allow raw.test", 1);
        drop(up);

        // The upstream resets.
        let (mut c, client, mut up, _) = raw_tunnel(&gw, &raw).await;
        up.write_all(b"z").await.unwrap();
        assert_eq!(read_n(&mut c, 1).await, b"z");
        up.set_zero_linger().unwrap();
        drop(up);
        let client_side = read_until_closed(&mut c, STEP).await;
        assert!(client_side.bytes.is_empty(), "{client_side:?}");
        let ev = gw.wait_access(|e| e.client == client).await;
        assert_eq!(ev.outcome, Outcome::UpstreamError, "{ev:#?}");
        assert!(detail(&ev).contains("reset"), "{ev:#?}");
        assert_eq!(ev.action, Some(Action::Allow), "an upstream failure keeps the decision: {ev:#?}");
        drop(c);
        assert!(eventually(STEP, || active(&gw, gw.connect_addr()) == 0.0).await, "connections left open");
        assert_no_connections_left("after the tunnels").await;
        gw.shutdown().await;
    }
    .await;
    case.end().await;
}

/// An upstream that accepts and never answers. In a tunnel: closed after `upstream.idle_timeout`
/// (1 s) without a byte either way, logged `idle-timeout`, both sides closed. Plain HTTP: the
/// request waits (no response timeout, see the ignored test below); when the client gives up,
/// the gateway lets go of the upstream connection and of the client's slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_answers() {
    let case = Case::begin("silent upstream").await;
    async {
        let (raw, _h, _reset, gw) = raw_setup("idle_timeout = \"1s\"\n").await;

        let (mut c, client, mut up, hello) = raw_tunnel(&gw, &raw).await;
        let start = Instant::now();
        let closed = read_until_closed(&mut c, Duration::from_secs(10)).await;
        let waited = start.elapsed();
        assert!(closed.bytes.is_empty(), "{closed:?}");
        assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(5), "closed after {waited:?}");
        assert!(read_until_closed(&mut up, STEP).await.bytes.is_empty());
        let ev = gw.wait_access(|e| e.client == client).await;
        assert_eq!(ev.outcome, Outcome::IdleTimeout, "{ev:#?}");
        assert!(detail(&ev).contains("1000 ms"), "{ev:#?}");
        assert_eq!((ev.bytes_up, ev.bytes_down), (hello, 0), "{ev:#?}");
        drop((c, up));

        // Plain HTTP: the request reaches the upstream, which says nothing; the client gives up.
        let mut conn = HttpConn::connect(gw.connect_addr()).await;
        conn.send(get_absolute("raw.test", "/silent", "raw.test").as_bytes()).await;
        let up = raw.next().await;
        let mut up = BufReader::new(up);
        let mut line = String::new();
        tokio::time::timeout(STEP, up.read_line(&mut line)).await.unwrap().unwrap();
        assert_eq!(line, "GET /silent HTTP/1.1\r\n");
        drop(conn);
        let upstream_side = read_until_closed(&mut up, STEP).await;
        eprintln!("silent HTTP upstream after the client left: {upstream_side:?}");
        assert!(eventually(STEP, || active(&gw, gw.connect_addr()) == 0.0).await, "the client's slot is still held");
        drop(up);
        assert_no_connections_left("after the silent upstream").await;
        gw.shutdown().await;
    }
    .await;
    case.end().await;
}

/// A plain HTTP request whose upstream accepts and never answers gets `504` after
/// `upstream.idle_timeout` without a response head, logged `upstream-timeout`. (Found by this
/// suite: the request used to wait forever, with no event.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_a_silent_upstream_gets_a_504() {
    let case = Case::begin("silent upstream, HTTP").await;
    async {
        let (raw, _h, _reset, gw) = raw_setup("idle_timeout = \"1s\"\n").await;
        let mut conn = HttpConn::connect(gw.connect_addr()).await;
        let client = conn.local_addr();
        conn.send(get_absolute("raw.test", "/silent", "raw.test").as_bytes()).await;
        let _up = raw.next().await;
        let r = tokio::time::timeout(Duration::from_secs(4), conn.read_response()).await;
        let r = r.unwrap_or_else(|_| panic!("no answer 4 s after the request (idle_timeout 1 s)")).unwrap();
        assert_eq!(r.status, 504, "{r:?}");
        let ev = gw.wait_access(|e| e.client == client).await;
        assert!(matches!(ev.outcome, Outcome::IdleTimeout | Outcome::UpstreamTimeout), "{ev:#?}");
        gw.shutdown().await;
    }
    .await;
    case.end().await;
}

/// An upstream that resets every connection at once: plain HTTP gets `502` (`upstream-error`,
/// or `upstream-refused` when the reset beats the connect) and the client connection stays
/// usable; a CONNECT tunnel is answered `200` (the TCP connect succeeded) and then closed,
/// logged `upstream-error` (or, when the reset beats the connect, `502` `upstream-refused`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_resets_at_once() {
    let case = Case::begin("resetting upstream").await;
    async {
        let (_raw, h, reset, gw) = raw_setup("").await;
        let mut conn = HttpConn::connect(gw.connect_addr()).await;
        let client = conn.local_addr();
        let r = conn.request(&get_absolute("reset.test", "/r", "reset.test")).await;
        assert_eq!(r.status, 502, "{r:?}");
        // The reset can beat the connect's completion (`upstream-refused`) or come after it.
        let reason = r.header("x-hostgate-reason").map(str::to_string);
        assert!(matches!(reason.as_deref(), Some("upstream-error" | "upstream-refused")), "{r:?}");
        let r = conn.request(&get_absolute("site.test", "/next", "site.test")).await;
        assert_eq!(r.text(), "upstream=H host=site.test path=/next method=GET", "the connection is still usable");
        let ev = gw.wait_access(|e| e.client == client && e.path.as_deref() == Some("/r")).await;
        assert_eq!(Some(ev.outcome.as_str()), reason.as_deref(), "{ev:#?}");
        assert!(!detail(&ev).is_empty(), "{ev:#?}");
        assert_eq!(ev.status, Some(502), "{ev:#?}");
        assert_eq!(ev.action, Some(Action::Allow), "{ev:#?}");
        assert_eq!(h.count(), 1);

        let (mut tcp, answer) = connect_tunnel(gw.connect_addr(), "reset.test:443").await;
        let client = tcp.local_addr().unwrap();
        if answer.status == 200 {
            let _ = tcp.write_all(&ClientHello::new("reset.test").to_bytes()).await;
            let closed = read_until_closed(&mut tcp, STEP).await;
            assert!(closed.bytes.is_empty(), "{closed:?}");
            let ev = gw.wait_access(|e| e.client == client).await;
            assert_eq!(ev.outcome, Outcome::UpstreamError, "{ev:#?}");
            assert_eq!(ev.sni.as_deref(), Some("reset.test"), "{ev:#?}");
        } else {
            // The reset beat the connect: refused before the tunnel.
            assert_eq!(
                (answer.status, answer.header("x-hostgate-reason")),
                (502, Some("upstream-refused")),
                "{answer:?}"
            );
            let ev = gw.wait_access(|e| e.client == client).await;
            assert_eq!(ev.outcome, Outcome::UpstreamRefused, "{ev:#?}");
            assert!(detail(&ev).contains("reset"), "{ev:#?}");
        }
        assert!(reset.accepted() >= 2, "{}", reset.accepted());
        drop((conn, tcp));
        assert!(eventually(STEP, || active(&gw, gw.connect_addr()) == 0.0).await, "connections left open");
        assert_no_connections_left("after the tunnels").await;
        gw.shutdown().await;
    }
    .await;
    case.end().await;
}

// ---------------------------------------------------------------------------------------------
// Request smuggling and oversized heads.

const HTTP_RULES: &str = "allow site.test\ndeny denied.test\n";

/// How a case's requests reach the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// Absolute-form to the explicit proxy.
    Proxy,
    /// Origin-form inside `CONNECT site.test:80`.
    Tunnel,
}

impl Via {
    /// The request-target prefix.
    fn prefix(self) -> &'static str {
        match self {
            Via::Proxy => "http://site.test",
            Via::Tunnel => "",
        }
    }
}

/// What a smuggling case must get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    /// `400` first (then a close), nothing upstream.
    Rejected,
    /// Forwarded: a `200` first.
    Forwarded,
}

/// A raw request for a request-target prefix ([`Via::prefix`]).
type RequestFor = Box<dyn Fn(&str) -> String>;

/// Writes `raw` and then a `Connection: close` sentinel request on a new connection (or tunnel),
/// reads until the gateway closes, and returns the client address, the responses and the end.
async fn exchange(gw: &TestGateway, via: Via, raw: Vec<u8>) -> (SocketAddr, Vec<Response>, Closed) {
    let tcp = match via {
        Via::Proxy => {
            let tcp = TcpStream::connect(gw.connect_addr()).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            tcp
        }
        Via::Tunnel => tunnel(gw.connect_addr(), "site.test:80").await,
    };
    let client = tcp.local_addr().unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    let sentinel = format!("GET {}/sentinel HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n", via.prefix());
    // The writer may be cut off (the gateway closes after a 400): its errors do not matter.
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&raw).await;
        let _ = wr.write_all(sentinel.as_bytes()).await;
        wr
    });
    let closed = read_until_closed(&mut rd, STEP).await;
    let _wr = writer.await.unwrap();
    (client, responses(&closed.bytes).await, closed)
}

/// The smuggling invariant: every request the upstream received since `before` was decided and
/// logged by the gateway for this client (same path, `allow`), and carries exactly one Host,
/// the decided one.
async fn assert_nothing_smuggled(what: &str, gw: &TestGateway, h: &HttpUpstream, before: usize, client: SocketAddr) {
    let received = h.received()[before..].to_vec();
    for r in &received {
        let path = r.target.clone();
        let ev = gw.wait_access(|e| e.client == client && e.path.as_deref() == Some(path.as_str())).await;
        assert_eq!(ev.action, Some(Action::Allow), "{what}: the upstream got {r:?}, the gateway logged {ev:#?}");
        let hosts: Vec<&str> = r.headers.iter().filter(|(n, _)| n == "host").map(|(_, v)| v.as_str()).collect();
        assert_eq!(hosts, ["site.test"], "{what}: the upstream got these Host headers: {r:?}");
        assert!(!r.target.contains("smuggled"), "{what}: a hidden request reached the upstream: {r:?}");
    }
}

/// Smuggling attempts, absolute-form to the explicit proxy and origin-form in a port-80 tunnel:
/// conflicting framing (Content-Length with Transfer-Encoding, two Content-Lengths, a
/// Transfer-Encoding that is not chunked, or chunked on HTTP/1.0), obs-fold continuations, a
/// request-target with whitespace, a NUL. Each is refused with `400` or forwarded with one
/// framing the upstream agrees on: the upstream never sees a request the gateway did not decide
/// and log (each connection ends with a sentinel request that exposes a desync).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_smuggling_attempts_are_refused_or_reframed() {
    let case = Case::begin("smuggling").await;
    async {
        let h = HttpUpstream::start("H").await;
        let gw = TestGateway::start(HTTP_RULES, &format!("{LOCAL_UPSTREAM}{}", pins(&[("site.test", h.addr())]))).await;
        let smuggled = |t: &str| format!("GET {t}/smuggled HTTP/1.1\r\nHost: site.test\r\n\r\n");
        let cases: Vec<(&str, Want, RequestFor)> = vec![
            (
                "Content-Length then Transfer-Encoding",
                Want::Forwarded,
                Box::new(move |t| {
                    let hidden = smuggled(t);
                    format!(
                        "POST {t}/cl-te HTTP/1.1\r\nHost: site.test\r\nContent-Length: {}\r\n\
                         Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{hidden}",
                        5 + hidden.len()
                    )
                }),
            ),
            (
                "Transfer-Encoding then Content-Length",
                Want::Forwarded,
                Box::new(move |t| {
                    format!(
                        "POST {t}/te-cl HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\
                         Content-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n{}",
                        smuggled(t)
                    )
                }),
            ),
            (
                "two different Content-Lengths",
                Want::Rejected,
                Box::new(move |t| {
                    format!(
                        "POST {t}/cl-cl HTTP/1.1\r\nHost: site.test\r\nContent-Length: 0\r\nContent-Length: 45\r\n\r\n{}",
                        smuggled(t)
                    )
                }),
            ),
            (
                "Content-Length as a list",
                Want::Rejected,
                Box::new(move |t| {
                    format!("POST {t}/cl-list HTTP/1.1\r\nHost: site.test\r\nContent-Length: 5, 0\r\n\r\nhello")
                }),
            ),
            (
                "Content-Length with a sign",
                Want::Rejected,
                Box::new(move |t| format!("POST {t}/cl-sign HTTP/1.1\r\nHost: site.test\r\nContent-Length: +5\r\n\r\nhello")),
            ),
            (
                "Transfer-Encoding not ending in chunked",
                Want::Rejected,
                Box::new(move |t| {
                    format!(
                        "POST {t}/te-identity HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n\
                         0\r\n\r\n{}",
                        smuggled(t)
                    )
                }),
            ),
            (
                "an obfuscated Transfer-Encoding",
                Want::Rejected,
                Box::new(move |t| {
                    format!(
                        "POST {t}/te-x HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\n\
                         0\r\n\r\n{}",
                        smuggled(t)
                    )
                }),
            ),
            (
                "a space before the colon of Transfer-Encoding",
                Want::Rejected,
                Box::new(move |t| {
                    format!(
                        "POST {t}/te-space HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n\
                         0\r\n\r\n{}",
                        smuggled(t)
                    )
                }),
            ),
            (
                "chunked on HTTP/1.0",
                Want::Rejected,
                Box::new(move |t| {
                    format!(
                        "POST {t}/te-10 HTTP/1.0\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{}",
                        smuggled(t)
                    )
                }),
            ),
            (
                "an obs-fold continuation",
                Want::Rejected,
                Box::new(move |t| format!("GET {t}/fold HTTP/1.1\r\nHost: site.test\r\nX-Folded: a\r\n b\r\n\r\n")),
            ),
            (
                "an obs-fold continuation of Host",
                Want::Rejected,
                Box::new(move |t| format!("GET {t}/fold-host HTTP/1.1\r\nHost: site.test\r\n denied.test\r\n\r\n")),
            ),
            (
                "a space in the request-target",
                Want::Rejected,
                Box::new(move |t| format!("GET {t}/a b HTTP/1.1\r\nHost: site.test\r\n\r\n")),
            ),
            (
                "a space and a second request line in the request-target",
                Want::Rejected,
                Box::new(move |t| format!("GET {t}/a HTTP/1.1 {t}/smuggled HTTP/1.1\r\nHost: site.test\r\n\r\n")),
            ),
            (
                "a NUL in a header value",
                Want::Rejected,
                Box::new(move |t| format!("GET {t}/nul HTTP/1.1\r\nHost: site.test\r\nX-Nul: a\0b\r\n\r\n")),
            ),
            (
                "two equal Content-Lengths, then a pipelined request (decided on its own)",
                Want::Forwarded,
                Box::new(move |t| {
                    format!(
                        "POST {t}/cl-twice HTTP/1.1\r\nHost: site.test\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n\
                         helloGET {t}/pipelined HTTP/1.1\r\nHost: site.test\r\n\r\n"
                    )
                }),
            ),
            (
                "bare LF line ends",
                Want::Forwarded,
                Box::new(move |t| format!("GET {t}/lf HTTP/1.1\nHost: site.test\n\n")),
            ),
        ];

        for via in [Via::Proxy, Via::Tunnel] {
            for (name, want, build) in &cases {
                let what = format!("{name} ({via:?})");
                let before = h.count();
                let (client, responses, closed) = exchange(&gw, via, build(via.prefix()).into_bytes()).await;
                eprintln!(
                    "{what}: {:?}, then {:?}",
                    responses.iter().map(|r| r.status).collect::<Vec<_>>(),
                    closed.error
                );
                let first = responses.first().map(|r| r.status);
                match want {
                    Want::Rejected => {
                        assert_eq!(first, Some(400), "{what}: {responses:?}");
                        assert_eq!(h.count(), before, "{what}: a refused request reached the upstream");
                    }
                    Want::Forwarded => assert_eq!(first, Some(200), "{what}: {responses:?}"),
                }
                assert_nothing_smuggled(&what, &gw, &h, before, client).await;
            }
        }
        // A request for another host than the tunnel's, inside a port-80 tunnel.
        let raw = "GET http://denied.test/x HTTP/1.1\r\nHost: site.test\r\n\r\n".to_string().into_bytes();
        let before = h.count();
        let (client, responses, _) = exchange(&gw, Via::Tunnel, raw).await;
        assert!(matches!(responses.first().map(|r| r.status), Some(400 | 403)), "{responses:?}");
        let ev = gw.wait_access(|e| e.client == client && e.path.as_deref() == Some("/x")).await;
        assert_eq!(ev.outcome, Outcome::Mismatch, "{ev:#?}");
        assert_nothing_smuggled("another host in a tunnel", &gw, &h, before, client).await;
        assert_no_connections_left("smuggling").await;
        gw.shutdown().await;
    }
    .await;
    case.end().await;
}

/// Host headers the gateway and an upstream may read differently are refused with `400` (RFC
/// 9112 §3.2): two Host headers (the gateway used to decide by the first and forward both, so an
/// upstream taking the last served `denied.test`), and a Host with userinfo
/// (`denied.test@site.test`, which used to be decided as `site.test` and forwarded verbatim).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_host_headers_are_refused() {
    let case = Case::begin("ambiguous Host").await;
    async {
        let h = HttpUpstream::start("H").await;
        let gw = TestGateway::start(HTTP_RULES, &format!("{LOCAL_UPSTREAM}{}", pins(&[("site.test", h.addr())]))).await;
        let mut wrong = Vec::new();
        for via in [Via::Proxy, Via::Tunnel] {
            for (name, raw) in [
                (
                    "two Host headers",
                    format!("GET {}/dup HTTP/1.1\r\nHost: site.test\r\nHost: denied.test\r\n\r\n", via.prefix()),
                ),
                (
                    "a Host with userinfo",
                    format!("GET {}/userinfo HTTP/1.1\r\nHost: denied.test@site.test\r\n\r\n", via.prefix()),
                ),
            ] {
                let before = h.count();
                let (_, responses, _) = exchange(&gw, via, raw.into_bytes()).await;
                let first = responses.first().map(|r| r.status);
                if first != Some(400) {
                    let got: Vec<_> =
                        h.received()[before..].iter().map(|r| (r.target.clone(), r.headers.clone())).collect();
                    wrong.push(format!("{name} ({via:?}): {first:?}; the upstream got {got:?}"));
                }
            }
        }
        assert!(wrong.is_empty(), "not refused:\n{}", wrong.join("\n"));
        gw.shutdown().await;
    }
    .await;
    case.end().await;
}

/// Heads well over the 64 KiB cap (one 200 KiB header, 200 KiB in 100 headers, a 200 KiB
/// request-target) and more headers than hyper parses (150): `431` (or `414`), and nothing
/// reaches the upstream, on the explicit proxy and in a port-80 tunnel. A 60 KiB header, under
/// the cap, is forwarded whole. (Between 64 and about 128 KiB the cap is soft on the explicit
/// proxy: see the ignored test below.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_get_431_and_never_reach_the_upstream() {
    let case = Case::begin("oversized").await;
    async {
        let h = HttpUpstream::start("H").await;
        let gw = TestGateway::start(HTTP_RULES, &format!("{LOCAL_UPSTREAM}{}", pins(&[("site.test", h.addr())]))).await;
        let big = |n: usize| "a".repeat(n);
        let many =
            |count: usize, size: usize| (0..count).map(|i| format!("X-H{i}: {}\r\n", big(size))).collect::<String>();
        for via in [Via::Proxy, Via::Tunnel] {
            let t = via.prefix();
            for (what, raw) in [
                (
                    "one 200 KiB header",
                    format!("GET {t}/big HTTP/1.1\r\nHost: site.test\r\nX-Big: {}\r\n\r\n", big(200 << 10)),
                ),
                ("200 KiB in 99 headers", format!("GET {t}/big HTTP/1.1\r\nHost: site.test\r\n{}\r\n", many(99, 2070))),
                ("150 small headers", format!("GET {t}/big HTTP/1.1\r\nHost: site.test\r\n{}\r\n", many(150, 4))),
                ("a 200 KiB request-target", format!("GET {t}/{} HTTP/1.1\r\nHost: site.test\r\n\r\n", big(200 << 10))),
            ] {
                let what = format!("{what} ({via:?})");
                let before = h.count();
                let (client, responses, closed) = exchange(&gw, via, raw.into_bytes()).await;
                let first = responses.first().map(|r| r.status);
                eprintln!("{what}: {first:?} then {:?}", closed.error);
                assert!(
                    matches!(first, Some(431 | 414)) || (first.is_none() && closed.bytes.is_empty()),
                    "{what}: {responses:?}"
                );
                assert_eq!(h.count(), before, "{what}: reached the upstream");
                // hyper answered (or closed) before the gateway saw a request; the gateway logs
                // why (`requests_the_http_parser_refuses_are_logged` covers the kinds).
                let ev = gw.wait_access(|e| e.client == client).await;
                assert_eq!(ev.outcome, Outcome::HeadTooLarge, "{what}: {ev:#?}");
                let logged =
                    gw.access_events(|e| e.client == client && e.path.as_deref().is_some_and(|p| p != "/sentinel"));
                assert!(logged.iter().all(|e| e.outcome != Outcome::Ok), "{what}: {logged:#?}");
            }
            // Just under the cap: forwarded whole (and the sentinel after it).
            let value = big(60 << 10);
            let before = h.count();
            let raw = format!("GET {t}/under HTTP/1.1\r\nHost: site.test\r\nX-Big: {value}\r\n\r\n");
            let (client, responses, _) = exchange(&gw, via, raw.into_bytes()).await;
            assert_eq!(responses.first().map(|r| r.status), Some(200), "{responses:?}");
            let got = &h.received()[before];
            assert_eq!(got.header("x-big").map(str::len), Some(value.len()), "the header arrived cut");
            let ev = gw.wait_access(|e| e.client == client && e.path.as_deref() == Some("/under")).await;
            assert_eq!(ev.outcome, Outcome::Ok, "{ev:#?}");
        }
        assert_no_connections_left("oversized").await;
        gw.shutdown().await;
    }
    .await;
    case.end().await;
}

/// The 64 KiB head cap holds however the head arrives. hyper's `max_buf_size` is only checked
/// between reads, so on the explicit proxy a 65–127 KiB head sent in one burst used to be
/// forwarded; the gateway now measures every head itself (`http::head_fits`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_64_kib_head_cap_holds_on_the_explicit_proxy() {
    let case = Case::begin("64 KiB cap").await;
    async {
        let h = HttpUpstream::start("H").await;
        let gw = TestGateway::start(HTTP_RULES, &format!("{LOCAL_UPSTREAM}{}", pins(&[("site.test", h.addr())]))).await;
        let mut forwarded = Vec::new();
        for kib in [65usize, 70, 100, 120] {
            for via in [Via::Proxy, Via::Tunnel] {
                let raw = format!(
                    "GET {}/big HTTP/1.1\r\nHost: site.test\r\nX-Big: {}\r\n\r\n",
                    via.prefix(),
                    "a".repeat(kib << 10)
                );
                let before = h.count();
                let (_, responses, _) = exchange(&gw, via, raw.into_bytes()).await;
                // The sentinel request after it may go through; the big one may not.
                let big_forwarded = h.received()[before..].iter().any(|r| r.target.ends_with("/big"));
                if big_forwarded || responses.first().map(|r| r.status) != Some(431) {
                    forwarded.push(format!(
                        "{kib} KiB ({via:?}): {:?}",
                        responses.iter().map(|r| r.status).collect::<Vec<_>>()
                    ));
                }
            }
        }
        assert!(forwarded.is_empty(), "heads over 64 KiB forwarded: {forwarded:#?}");
        gw.shutdown().await;
    }
    .await;
    case.end().await;
}

/// A request whose chunked body is malformed (a chunk size that overflows) is the client's
/// fault: `400`, logged `bad-request` (it used to be `502` `upstream-error`). Nothing reaches the
/// upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_request_body_is_blamed_on_the_client() {
    let case = Case::begin("malformed body").await;
    async {
        let h = HttpUpstream::start("H").await;
        let gw = TestGateway::start(HTTP_RULES, &format!("{LOCAL_UPSTREAM}{}", pins(&[("site.test", h.addr())]))).await;
        for via in [Via::Proxy, Via::Tunnel] {
            let raw = format!(
                "POST {}/chunk-overflow HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\r\n\
                 10000000000000001\r\nx\r\n0\r\n\r\n",
                via.prefix()
            );
            let before = h.count();
            let (client, responses, _) = exchange(&gw, via, raw.into_bytes()).await;
            let ev = gw.wait_access(|e| e.client == client && e.path.as_deref() == Some("/chunk-overflow")).await;
            assert_nothing_smuggled("chunk overflow", &gw, &h, before, client).await;
            assert_eq!(responses.first().map(|r| r.status), Some(400), "{via:?}: {responses:?}; {ev:#?}");
            assert!(matches!(ev.outcome, Outcome::BadRequest | Outcome::ClientError), "{via:?}: {ev:#?}");
        }
        gw.shutdown().await;
    }
    .await;
    case.end().await;
}

/// What hyper refuses before the gateway sees a request (a malformed head: `400`; an oversized
/// one: `431`; a head not complete within the header timeout: a close) is logged, on the
/// explicit proxy and inside a port-80 tunnel alike (it used to leave no event at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_http_parser_refuses_are_logged() {
    let case = Case::begin("parser refusals logged").await;
    async {
        let h = HttpUpstream::start("H").await;
        let extra = format!("{LOCAL_UPSTREAM}[sniff]\ntimeout = \"1s\"\n{}", pins(&[("site.test", h.addr())]));
        let gw = TestGateway::start(HTTP_RULES, &extra).await;
        let mut clients = Vec::new();
        for via in [Via::Proxy, Via::Tunnel] {
            let t = via.prefix();
            for (what, raw, outcome) in [
                ("a malformed head", format!("GET {t}/a b HTTP/1.1\r\nHost: site.test\r\n\r\n"), Outcome::BadRequest),
                (
                    "an oversized head",
                    format!("GET {t}/big HTTP/1.1\r\nHost: site.test\r\nX-Big: {}\r\n\r\n", "a".repeat(200 << 10)),
                    Outcome::HeadTooLarge,
                ),
            ] {
                let (client, _, _) = exchange(&gw, via, raw.into_bytes()).await;
                clients.push((format!("{what} ({via:?})"), client, outcome));
            }
        }
        // A head that never ends: to the proxy, and after the method in a tunnel.
        let mut tcp = TcpStream::connect(gw.connect_addr()).await.unwrap();
        tcp.write_all(b"GET http://site.test/ HTTP/1.1\r\nHost: site").await.unwrap();
        clients.push(("an unfinished head (Proxy)".into(), tcp.local_addr().unwrap(), Outcome::Timeout));
        read_until_closed(&mut tcp, STEP).await;
        let mut tcp = tunnel(gw.connect_addr(), "site.test:80").await;
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: site").await.unwrap();
        clients.push(("an unfinished head (Tunnel)".into(), tcp.local_addr().unwrap(), Outcome::Timeout));
        read_until_closed(&mut tcp, STEP).await;
        // A record is written when its connection's task ends, on the worker that served it:
        // shortly after the client sees the close, not necessarily before.
        let missing = || {
            let mut missing = Vec::new();
            for (what, client, outcome) in &clients {
                let found = gw.access_events(|e| e.client == *client);
                if !found.iter().any(|e| e.outcome == *outcome) {
                    missing.push(format!("{what}: want outcome {outcome:?}, logged {found:?}"));
                }
            }
            missing
        };
        eventually(STEP, || missing().is_empty()).await;
        let missing = missing();
        assert!(missing.is_empty(), "not logged:\n{}", missing.join("\n"));
        gw.shutdown().await;
    }
    .await;
    case.end().await;
}

// ---------------------------------------------------------------------------------------------
// IP literals and private addresses in disguise.

/// Names pinned to IPv6 forms of 127.0.0.1, each on the port of a local upstream that would
/// accept the connection if the gateway made it; and the word the guard's detail must contain.
fn disguised(port: u16) -> Vec<(&'static str, String, &'static str)> {
    vec![
        ("v4mapped.test", format!("[::ffff:127.0.0.1]:{port}"), "ipv4-mapped loopback"),
        ("compatible.test", format!("[::127.0.0.1]:{port}"), "ipv4-compatible loopback"),
        ("nat64.test", format!("[64:ff9b::7f00:1]:{port}"), "nat64 loopback"),
        ("localnat64.test", format!("[64:ff9b:1::7f00:1]:{port}"), "local-use nat64 loopback"),
        ("sixtofour.test", format!("[2002:7f00:1::]:{port}"), "6to4 loopback"),
        // Teredo: the client address is the last 32 bits, inverted (127.0.0.1 → 80ff:fffe).
        ("teredo.test", format!("[2001:0:4136:e378:8000:63bf:80ff:fffe]:{port}"), "teredo loopback"),
        ("metadata.test", "[::ffff:169.254.169.254]:80".to_string(), "ipv4-mapped link-local"),
    ]
}

/// CONNECT to IP literals and to names pinned to IPv6 forms that embed a private IPv4 address:
/// without `allow_private`, `403` `ssrf` even where a rule allows the name or the literal, and
/// nothing is connected to; an IPv6 literal cannot be a CONNECT host at all (`400`). With
/// `allow_private = ["127.0.0.0/8"]`, the embedded forms of loopback are allowed too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_literals_and_embedded_private_addresses_are_refused_by_the_guard() {
    let case = Case::begin("ssrf literals").await;
    async {
        let raw = RawUpstream::start().await;
        let port = raw.addr().port();
        let names = disguised(port);
        let mut rules = String::from("allow 127.0.0.1\n");
        for (name, _, _) in &names {
            rules.push_str(&format!("allow {name}\n"));
        }
        let pinned: Vec<(&str, Vec<&str>)> = names.iter().map(|(n, a, _)| (*n, vec![a.as_str()])).collect();
        let pinned: Vec<(&str, &[&str])> = pinned.iter().map(|(n, a)| (*n, a.as_slice())).collect();
        let resolve = pins_many(&pinned);

        let gw = TestGateway::start(&rules, &format!("[upstream]\nconnect_timeout = \"500ms\"\n{resolve}")).await;
        for (name, addr, range) in &names {
            let (tcp, r) = connect_tunnel(gw.connect_addr(), &format!("{name}:443")).await;
            assert_eq!(r.status, 403, "{name} → {addr}: {r:?}");
            assert_eq!(r.header("x-hostgate-reason"), Some("ssrf"), "{name}: {r:?}");
            let ev = gw.wait_access(|e| e.client == tcp.local_addr().unwrap()).await;
            assert_eq!(ev.outcome, Outcome::Ssrf, "{name}: {ev:#?}");
            assert!(detail(&ev).contains(range), "{name}: want {range:?} in {ev:#?}");
            assert_eq!(ev.upstream, None, "{name}: {ev:#?}");
            assert_logged_deny(&ev);
        }
        // Plain HTTP is guarded the same way.
        let mut conn = HttpConn::connect(gw.connect_addr()).await;
        let r = conn.request(&get_absolute("v4mapped.test", "/m", "v4mapped.test")).await;
        assert_eq!((r.status, r.header("x-hostgate-reason")), (403, Some("ssrf")), "{r:?}");
        // IP literals: a rule allowing the literal does not get it past the guard; without a
        // rule, the policy refuses first; an IPv6 literal is not a host name the gateway takes.
        for (authority, status, outcome) in [
            (format!("127.0.0.1:{port}"), 403, Outcome::Ssrf),
            ("10.0.0.1:443".to_string(), 403, Outcome::Denied),
            (format!("[::1]:{port}"), 400, Outcome::BadRequest),
            (format!("[::ffff:127.0.0.1]:{port}"), 400, Outcome::BadRequest),
            ("[2001:db8::1]:443".to_string(), 400, Outcome::BadRequest),
        ] {
            let (tcp, r) = connect_tunnel(gw.connect_addr(), &authority).await;
            assert_eq!(r.status, status, "CONNECT {authority}: {r:?}");
            assert_reason_token(&r);
            let ev = gw.wait_access(|e| e.client == tcp.local_addr().unwrap()).await;
            assert_eq!(ev.outcome, outcome, "CONNECT {authority}: {ev:#?}");
            assert_eq!(dst(&ev).as_deref(), Some(authority.as_str()), "{ev:#?}");
        }
        assert_eq!(raw.accepted(), 0, "the gateway connected to loopback");
        drop(conn);
        assert_no_connections_left("ssrf").await;
        gw.shutdown().await;

        // With loopback allowed: the literal and its IPv4-mapped form connect; the translated
        // forms are let through the guard and fail to connect (nothing answers there).
        let gw = TestGateway::start(
            &rules,
            &format!("[upstream]\nallow_private = [\"127.0.0.0/8\"]\nconnect_timeout = \"500ms\"\n{resolve}"),
        )
        .await;
        for authority in [format!("127.0.0.1:{port}"), "v4mapped.test:443".to_string()] {
            let (tcp, r) = connect_tunnel(gw.connect_addr(), &authority).await;
            assert_eq!(r.status, 200, "CONNECT {authority}: {r:?}");
            let _up = raw.next().await;
            let client = tcp.local_addr().unwrap();
            drop(tcp);
            // Connected; the client then left without a byte.
            let ev = gw.wait_access(|e| e.client == client).await;
            assert_eq!(ev.outcome, Outcome::ClientError, "{ev:#?}");
            assert_eq!(ev.rule.as_deref().map(|r| r.starts_with("allow ")), Some(true), "{ev:#?}");
            assert!(ev.upstream.is_some_and(|u| u.port() == port), "{ev:#?}");
        }
        for name in ["nat64.test", "sixtofour.test"] {
            let (tcp, r) = connect_tunnel(gw.connect_addr(), &format!("{name}:443")).await;
            assert!(matches!(r.status, 502 | 504), "{name}: {r:?}");
            let ev = gw.wait_access(|e| e.client == tcp.local_addr().unwrap()).await;
            assert!(matches!(ev.outcome, Outcome::UpstreamRefused | Outcome::UpstreamTimeout), "{name}: {ev:#?}");
        }
        assert_eq!(raw.accepted(), 2);
        assert_no_connections_left("ssrf, loopback allowed").await;
        gw.shutdown().await;
    }
    .await;
    case.end().await;
}

/// A name pinned to a loopback and a public (TEST-NET, unrouted) address, in either order, with
/// no `allow_private`: the loopback address is never connected to; the public one is tried and
/// fails (`upstream-timeout` within the 300 ms connect timeout, or `upstream-refused` when there
/// is no route), for CONNECT and plain HTTP. Only private addresses: `ssrf`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_mixing_private_and_public_addresses_never_reach_the_private_one() {
    let case = Case::begin("mixed pins").await;
    async {
        let raw = RawUpstream::start().await;
        let local = raw.addr().to_string();
        let resolve = pins_many(&[
            ("mixed.test", &[local.as_str(), "192.0.2.1:443"]),
            ("mixed-rev.test", &["192.0.2.1:443", local.as_str()]),
            ("private.test", &["10.1.2.3:443", local.as_str()]),
        ]);
        let rules = "allow mixed.test\nallow mixed-rev.test\nallow private.test\n";
        let gw = TestGateway::start(rules, &format!("[upstream]\nconnect_timeout = \"300ms\"\n{resolve}")).await;
        for name in ["mixed.test", "mixed-rev.test"] {
            let (tcp, r) = connect_tunnel(gw.connect_addr(), &format!("{name}:443")).await;
            assert!(matches!(r.status, 502 | 504), "{name}: {r:?}");
            let ev = gw.wait_access(|e| e.client == tcp.local_addr().unwrap()).await;
            assert!(matches!(ev.outcome, Outcome::UpstreamTimeout | Outcome::UpstreamRefused), "{name}: {ev:#?}");
            assert!(detail(&ev).contains("192.0.2.1:443"), "{name}: the public address was the one tried: {ev:#?}");
            assert_eq!(ev.upstream, None, "{ev:#?}");
            assert_eq!(ev.action, Some(Action::Allow), "an upstream failure, not a refusal: {ev:#?}");

            let mut conn = HttpConn::connect(gw.connect_addr()).await;
            let r = conn.request(&get_absolute(name, "/p", name)).await;
            assert!(matches!(r.status, 502 | 504), "{name}: {r:?}");
            let ev = gw.wait_access(|e| e.client == conn.local_addr()).await;
            assert!(detail(&ev).contains("192.0.2.1:443"), "{name}: {ev:#?}");
        }
        let (tcp, r) = connect_tunnel(gw.connect_addr(), "private.test:443").await;
        assert_eq!((r.status, r.header("x-hostgate-reason")), (403, Some("ssrf")), "{r:?}");
        let ev = gw.wait_access(|e| e.client == tcp.local_addr().unwrap()).await;
        assert_eq!(ev.outcome, Outcome::Ssrf, "{ev:#?}");
        assert_eq!(raw.accepted(), 0, "the gateway connected to the loopback pin");
        drop(tcp);
        assert_no_connections_left("mixed pins").await;
        gw.shutdown().await;
    }
    .await;
    case.end().await;
}

// ---------------------------------------------------------------------------------------------
// Descriptor exhaustion of the real binary.

/// `hostgate run` under `prlimit --nofile=64:64` (tests/binary.rs checks the accept back-off
/// itself). Beyond it: a tunnel established before the exhaustion keeps working during it; a
/// client accepted with the very last descriptor, whose upstream connect then fails for lack of
/// one, gets `503` and is logged as `local-resources` (the gateway's shortage, not the upstream's
/// refusal), with the errno; released, the gateway
/// serves normally; nothing panics and SIGTERM still exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptor_exhaustion_of_the_binary() {
    let case = Case::begin("EMFILE").await;
    async {
        const BACKING_OFF: &str = "accept: out of resources; backing off";
        let ca = TestCa::new();
        let up = TlsUpstream::start(&ca, &["allowed.test"], "A").await;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("hostgate.toml");
        std::fs::write(dir.path().join("test.rules"), "allow allowed.test\ndeny denied.test\n").unwrap();
        std::fs::write(
            &config,
            format!(
                "[[listener]]\nkind = \"connect\"\naddress = \"127.0.0.1:0\"\n\n\
                 [policy]\ndefault = \"deny\"\n[[policy.source]]\npath = \"test.rules\"\n\n\
                 [log]\nformat = \"json\"\nlevel = \"info\"\n\n[sniff]\ntimeout = \"60s\"\n\
                 [runtime]\nshutdown_grace = \"2s\"\nworkers = 1\n{LOCAL_UPSTREAM}{}",
                pins(&[("allowed.test", up.addr())])
            ),
        )
        .unwrap();
        // One worker: one accept queue, so the clients waiting in it are taken in order as
        // descriptors come free (with several workers each has its own queue, and which waiting
        // client a freed descriptor goes to depends on which worker retries first).
        let mut hg = Hostgate::spawn(&["prlimit", "--nofile=64:64"], &config);
        let addr = hg.listening("connect").await;

        // A tunnel with a TLS session in it, before the trouble.
        let tcp = tunnel(addr, "allowed.test:443").await;
        let mut established = tls_handshake(tcp, "allowed.test", ca.client_config()).await.unwrap();

        // Fill every descriptor with kept-alive clients (a denied CONNECT costs one: no upstream),
        // until one is not answered: it waits in the backlog.
        let mut held = Vec::new();
        let pending = loop {
            assert!(held.len() < 100, "100 clients served under a limit of 64");
            let mut tcp = send_connect(addr, "denied.test:443").await;
            let mut first = [0u8; 1];
            match tokio::time::timeout(Duration::from_millis(700), tcp.read_exact(&mut first)).await {
                Ok(Ok(_)) => {
                    let mut rest = Vec::new();
                    while !rest.ends_with(b"\r\n\r\n") {
                        rest.push(tcp.read_u8().await.unwrap());
                    }
                    held.push(tcp);
                }
                Ok(Err(e)) => panic!("client {}: {e}", held.len()),
                Err(_) => break tcp,
            }
        };
        let warn = hg.wait_json(|v| v["message"] == BACKING_OFF, STEP).await;
        assert!(warn["error"].as_str().is_some_and(|e| e.contains("os error 24")), "{warn:#}");
        eprintln!("{} clients held when accept ran out of descriptors", held.len());

        // Behind the pending client, one that needs an upstream connection.
        let mut needs_upstream = send_connect(addr, "allowed.test:443").await;
        // One descriptor freed: the pending client gets it (and its 403)…
        drop(held.pop());
        let mut pending = pending;
        let answer = read_connect_answer(&mut pending, "denied.test:443").await;
        assert_eq!(answer.status, 403, "{answer:?}");
        // …another: the next client is accepted with it, and its upstream connect finds none.
        drop(held.pop());
        let answer = read_connect_answer(&mut needs_upstream, "allowed.test:443").await;
        assert_eq!(answer.status, 503, "{answer:?}");
        assert_eq!(answer.header("x-hostgate-reason"), Some("local-resources"), "{answer:?}");
        let ev = hg.wait_json(|v| v["target"] == "access" && v["status"] == 503, STEP).await;
        assert_eq!(ev["outcome"], "local-resources", "{ev:#}");
        assert!(ev["detail"].as_str().is_some_and(|d| d.contains("os error 24")), "{ev:#}");
        assert_eq!(ev["action"], "allow", "{ev:#}");

        // Still exhausted: the established tunnel works.
        established
            .write_all(b"GET /during HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let closed = read_until_closed(&mut established, STEP).await;
        let text = String::from_utf8_lossy(&closed.bytes).into_owned();
        assert!(text.ends_with("upstream=A sni=allowed.test path=/during"), "{text:?}");
        assert!(hg.alive(), "hostgate died; stderr:\n{}", hg.lines().join("\n"));

        // Released: served normally.
        drop((held, pending, needs_upstream, established));
        let tcp = tunnel(addr, "allowed.test:443").await;
        let mut tls = tls_handshake(tcp, "allowed.test", ca.client_config()).await.unwrap();
        tls.write_all(b"GET /after HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n").await.unwrap();
        let text = String::from_utf8_lossy(&read_until_closed(&mut tls, STEP).await.bytes).into_owned();
        assert!(text.ends_with("upstream=A sni=allowed.test path=/after"), "{text:?}");
        drop(tls);
        hg.wait_json(|v| v["target"] == "access" && v["outcome"] == "ok" && v["bytes_down"].as_u64() > Some(0), STEP)
            .await;

        hg.signal("TERM");
        let (status, lines) = hg.wait().await;
        let all = lines.join("\n");
        assert!(status.success(), "exit status {status} after SIGTERM; stderr:\n{all}");
        assert!(!all.contains("panicked"), "{all}");
        let backoffs = lines.iter().filter(|l| l.contains(BACKING_OFF)).count();
        let events: Vec<Value> = lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"] == "access")
            .collect();
        eprintln!("{backoffs} back-off warnings, {} access events", events.len());
    }
    .await;
    case.end().await;
}

// ---------------------------------------------------------------------------------------------
// Reloads that fail.

/// A failed reload: what is broken, the configuration text, the rule file (its bytes, or `None`
/// for a directory in its place), and what the error must name.
type BrokenReload<'a> = (&'a str, String, Option<&'a [u8]>, Vec<String>);

/// One failed reload per kind of broken file: a TOML syntax error, an unknown field, a bad value,
/// a bad pin, a bad rule line, a rule file that is missing, unreadable (a directory) or not
/// UTF-8, a configuration file that is unreadable, and an `[inspect]` CA that is garbage or
/// missing. Each `reload()` returns an error naming the file (and the line where there is one),
/// the generation stays 1, and requests keep being decided by generation 1's rules, although
/// the rule file (when it is not the broken one) already says otherwise. Then a good reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_reloads_of_every_kind_keep_the_old_generation() {
    let case = Case::begin("failed reloads").await;
    async {
        let h = HttpUpstream::start("H").await;
        let extra = format!("{LOCAL_UPSTREAM}{}", pins(&[("old.test", h.addr()), ("new.test", h.addr())]));
        let gw = TestGateway::start("allow old.test\n", &extra).await;
        let dir = gw.config_dir().to_path_buf();
        let config_path = dir.join("hostgate.toml");
        let rules_path = dir.join("test.rules");
        let good = std::fs::read_to_string(&config_path).unwrap();
        let line_of = |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
        std::fs::write(dir.join("garbage.pem"), "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();

        // Each request is decided by a generation; its event says which.
        let check = |name: &'static str, status: u16, generation: u64| {
            let gw = &gw;
            async move {
                let mut conn = HttpConn::connect(gw.connect_addr()).await;
                let r = conn.request(&get_absolute(name, "/g", name)).await;
                assert_eq!(r.status, status, "{name}: {r:?}");
                let ev = gw.wait_access(|e| e.client == conn.local_addr()).await;
                assert_eq!(ev.generation, generation, "{name}: {ev:#?}");
            }
        };
        check("old.test", 200, 1).await;
        check("new.test", 403, 1).await;

        let inspect = |cert: &str| {
            format!(
                "{good}\n[inspect]\nca_cert = \"{}\"\nca_key = \"{}\"\n",
                dir.join(cert).display(),
                dir.join(cert).display()
            )
        };
        let unknown = format!("{good}\n[sniff]\ntimeuot = \"1s\"\n");
        let bad_value = format!("{good}\n[limits]\nmax_connections = 0\n");
        let bad_pin = format!("{good}\"bad.test\" = [\"not-an-address\"]\n");
        let syntax = good.replacen("[policy]", "[policy", 1);
        let new_rules: &[u8] = b"deny old.test\nallow new.test\n";
        let cases: Vec<BrokenReload<'_>> = vec![
            (
                "a TOML syntax error",
                syntax.clone(),
                Some(new_rules),
                vec![format!("hostgate.toml:{}:", line_of(&syntax, "[policy"))],
            ),
            (
                "an unknown field",
                unknown.clone(),
                Some(new_rules),
                vec![format!("hostgate.toml:{}:", line_of(&unknown, "timeuot")), "unknown field".into()],
            ),
            (
                "a bad value",
                bad_value.clone(),
                Some(new_rules),
                vec![
                    format!("hostgate.toml:{}:", line_of(&bad_value, "max_connections")),
                    "limits.max_connections".into(),
                ],
            ),
            (
                "a bad pin",
                bad_pin.clone(),
                Some(new_rules),
                vec![format!("hostgate.toml:{}:", line_of(&bad_pin, "not-an-address")), "bad.test".into()],
            ),
            (
                "a bad rule line",
                good.clone(),
                Some(b"deny old.test\nallow *.*bad[\nallow new.test\n"),
                vec![format!("{}:2", rules_path.display()), "*.*bad[".into()],
            ),
            (
                "a rule file that is not UTF-8",
                good.clone(),
                Some(b"deny old.test\nallow n\xffw.test\n"),
                vec![rules_path.display().to_string()],
            ),
            ("a rule file that is a directory", good.clone(), None, vec![rules_path.display().to_string()]),
            (
                "a missing rule file",
                good.replace("path = \"test.rules\"", "path = \"missing.rules\""),
                Some(new_rules),
                vec![
                    dir.join("missing.rules").display().to_string(),
                    format!("hostgate.toml:{}", line_of(&good, "test.rules")),
                ],
            ),
            (
                "an [inspect] CA that is not a certificate",
                inspect("garbage.pem"),
                Some(new_rules),
                vec![dir.join("garbage.pem").display().to_string()],
            ),
            (
                "a missing [inspect] CA",
                inspect("missing-ca.pem"),
                Some(new_rules),
                vec![dir.join("missing-ca.pem").display().to_string()],
            ),
        ];
        let mut failures = 0;
        for (what, config, rules, names) in &cases {
            std::fs::write(&config_path, config).unwrap();
            std::fs::remove_file(&rules_path).or_else(|_| std::fs::remove_dir(&rules_path)).unwrap();
            match rules {
                Some(bytes) => std::fs::write(&rules_path, bytes).unwrap(),
                None => std::fs::create_dir(&rules_path).unwrap(),
            }
            let err = match gw.gateway().reload().await {
                Ok(r) => panic!("{what}: the reload succeeded: {r:?}"),
                Err(e) => e.to_string(),
            };
            failures += 1;
            eprintln!("{what}: {err}");
            for name in names {
                assert!(err.contains(name.as_str()), "{what}: the error does not name {name:?}: {err}");
            }
            assert_eq!(gw.gateway().generation(), 1, "{what}: the generation moved");
            check("old.test", 200, 1).await;
            check("new.test", 403, 1).await;
        }
        // The configuration file itself unreadable.
        std::fs::write(&rules_path, new_rules).ok();
        std::fs::remove_file(&config_path).unwrap();
        std::fs::create_dir(&config_path).unwrap();
        let err = gw.gateway().reload().await.map(|_| ()).unwrap_err().to_string();
        failures += 1;
        assert!(err.contains(&config_path.display().to_string()), "{err}");
        assert_eq!(gw.gateway().generation(), 1);
        check("old.test", 200, 1).await;
        std::fs::remove_dir(&config_path).unwrap();

        let failed = metric(&gw.metrics(), "hostgate_reloads_total{result=\"failure\"}");
        assert_eq!(failed, Some(failures as f64), "{}", gw.metrics());

        // Fixed: everything applies at once.
        std::fs::write(&config_path, &good).unwrap();
        let _ = std::fs::remove_dir(&rules_path);
        std::fs::write(&rules_path, new_rules).unwrap();
        let r = gw.gateway().reload().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.generation, 2, "{r:?}");
        check("old.test", 403, 2).await;
        check("new.test", 200, 2).await;
        assert_no_connections_left("reloads").await;
        gw.shutdown().await;
    }
    .await;
    case.end().await;
}
