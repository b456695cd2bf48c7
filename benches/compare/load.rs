//! The load generator and the upstream it talks to through each proxy.
//!
//! The upstream reads the client's ClientHello (whole records, parsed with hostgate's own parser
//! only to learn the SNI) and answers by name: [`BULK`] gets `--bulk-mib` of data, a name ending
//! in [`HOLD_SUFFIX`] gets one byte and is then held open until the client closes (an idle
//! tunnel), and every other name gets [`RESPONSE_LEN`] bytes starting with [`MARKER`], then a
//! close. No TLS handshake is completed: what is timed is the proxy's work (accept, sniff,
//! decide, connect, relay, close), not the cryptography at the two ends.
//!
//! The client sends a real rustls ClientHello for each name (built once per name) and sorts
//! what comes back: the marker response is [`Seen::Forwarded`]; a close or reset with nothing
//! but (at most) a TLS alert is [`Seen::Refused`]; anything else is an error by kind.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The length of the upstream's answer to an ordinary name.
pub(crate) const RESPONSE_LEN: usize = 1024;
/// The first bytes of that answer.
pub(crate) const MARKER: &[u8] = b"HGUP";
/// The name whose connection carries the long transfer.
pub(crate) const BULK: &str = "bulk.bench.test";
/// Names ending in this are held open after one byte (idle tunnels).
pub(crate) const HOLD_SUFFIX: &str = ".hold.bench.test";
/// The name the idle tunnels use.
pub(crate) const HOLD: &str = "t.hold.bench.test";

/// A real rustls ClientHello for `name` (ALPN h2 and http/1.1, TLS 1.3 and 1.2), in one record.
pub(crate) fn client_hello(name: &str) -> Vec<u8> {
    crate::hello::rustls_client_hello(name, &[b"h2", b"http/1.1"])
}

/// Starts the upstream on its own thread and current-thread runtime; returns its address.
pub(crate) fn start_upstream(bulk_bytes: u64) -> SocketAddr {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the upstream");
    std_listener.set_nonblocking(true).expect("nonblocking");
    let addr = std_listener.local_addr().expect("upstream address");
    std::thread::Builder::new()
        .name("upstream".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("listener");
                loop {
                    match listener.accept().await {
                        Ok((s, _)) => {
                            tokio::spawn(serve(s, bulk_bytes));
                        }
                        // Out of descriptors or the like: back off instead of spinning.
                        Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
            });
        })
        .expect("upstream thread");
    addr
}

async fn serve(mut s: TcpStream, bulk_bytes: u64) {
    let mut buf = Vec::with_capacity(2048);
    let sni = loop {
        match hostgate_proxy::sniff::tls::parse_client_hello(&buf, 16 * 1024) {
            Ok(hostgate_proxy::sniff::tls::Progress::Done(hello)) => break hello.sni.unwrap_or_default(),
            Ok(hostgate_proxy::sniff::tls::Progress::NeedMore) => {}
            Err(_) => return,
        }
        match s.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    };
    if sni == BULK {
        let _ = s.set_nodelay(true);
        let chunk = vec![0x5a_u8; 256 * 1024];
        let mut left = bulk_bytes;
        while left > 0 {
            let n = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            if s.write_all(&chunk[..n]).await.is_err() {
                return;
            }
            left -= n as u64;
        }
    } else if sni.ends_with(HOLD_SUFFIX) {
        if s.write_all(b"R").await.is_err() {
            return;
        }
        let mut sink = [0u8; 64];
        while let Ok(n) = s.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    } else {
        let mut answer = vec![b'.'; RESPONSE_LEN];
        answer[..MARKER.len()].copy_from_slice(MARKER);
        if s.write_all(&answer).await.is_err() {
            return;
        }
        // The client closes first (with a reset, see `exchange`): no TIME_WAIT here to collide
        // with a later connection from the same port.
        let mut sink = [0u8; 64];
        let _ = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(n) = s.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
}

/// What a client saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// The upstream's answer, whole.
    Forwarded,
    /// A close or reset with nothing, or only a TLS alert.
    Refused,
    /// Anything else.
    Error(&'static str),
}

/// One name to connect for, and what the policy says should happen.
#[derive(Clone, Debug)]
pub(crate) struct Probe {
    pub(crate) name: String,
    pub(crate) hello: Vec<u8>,
    pub(crate) forward: bool,
}

impl Probe {
    pub(crate) fn new(name: &str, forward: bool) -> Probe {
        Probe { name: name.to_string(), hello: client_hello(name), forward }
    }
}

/// One connection: connect, send the hello, read to the end. The duration runs from before the
/// connect to the end of the answer.
pub(crate) async fn once(addr: SocketAddr, hello: &[u8], timeout: Duration) -> (Seen, Duration) {
    let start = Instant::now();
    let seen = match tokio::time::timeout(timeout, exchange(addr, hello)).await {
        Ok(seen) => seen,
        Err(_) => Seen::Error("timeout"),
    };
    (seen, start.elapsed())
}

async fn exchange(addr: SocketAddr, hello: &[u8]) -> Seen {
    let mut s = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return Seen::Error(connect_error(&e)),
    };
    let seen = answer(&mut s, hello).await;
    // Close with a reset: neither end keeps the connection in TIME_WAIT, so the load can go on
    // for minutes without running out of ports or meeting its own old connections.
    let _ = s.set_zero_linger();
    seen
}

/// What a failed connect to the proxy met, as the report names it.
fn connect_error(e: &std::io::Error) -> &'static str {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => "connect refused",
        ErrorKind::ConnectionReset => "connect reset",
        ErrorKind::TimedOut => "connect timed out",
        ErrorKind::AddrNotAvailable => "connect: no local address",
        ErrorKind::AddrInUse => "connect: address in use",
        _ => "connect",
    }
}

async fn answer(s: &mut TcpStream, hello: &[u8]) -> Seen {
    if s.write_all(hello).await.is_err() {
        // A proxy that has already refused may reset before the hello is written.
        return Seen::Refused;
    }
    let mut buf = [0u8; RESPONSE_LEN];
    let mut got = 0usize;
    while got < RESPONSE_LEN {
        match s.read(&mut buf[got..]).await {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return if got == 0 || buf[0] == 0x15 { Seen::Refused } else { Seen::Error("reset mid-answer") };
            }
            Err(_) => return Seen::Error("read"),
        }
    }
    if got == RESPONSE_LEN && buf.starts_with(MARKER) {
        Seen::Forwarded
    } else if got == 0 || (buf[0] == 0x15 && got < 64) {
        Seen::Refused
    } else {
        Seen::Error("unexpected bytes")
    }
}

/// What a timed run saw.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Connections that ended as the policy says.
    pub(crate) right: u64,
    /// Forwarded where the policy denies, or refused where it allows.
    pub(crate) wrong: u64,
    pub(crate) forwarded: u64,
    pub(crate) refused: u64,
    pub(crate) errors: BTreeMap<&'static str, u64>,
    /// Durations of forwarded connections, in microseconds.
    pub(crate) latency_us: Vec<u32>,
    pub(crate) elapsed: Duration,
}

impl Stats {
    fn record(&mut self, probe: &Probe, seen: Seen, took: Duration) {
        match seen {
            Seen::Forwarded => {
                self.forwarded += 1;
                self.latency_us.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
            }
            Seen::Refused => self.refused += 1,
            Seen::Error(kind) => *self.errors.entry(kind).or_default() += 1,
        }
        match (seen, probe.forward) {
            (Seen::Forwarded, true) | (Seen::Refused, false) => self.right += 1,
            (Seen::Forwarded, false) | (Seen::Refused, true) => self.wrong += 1,
            (Seen::Error(_), _) => {}
        }
    }

    /// Adds another run's counts, errors and durations to these (not its `elapsed`).
    pub(crate) fn merge(&mut self, other: Stats) {
        self.right += other.right;
        self.wrong += other.wrong;
        self.forwarded += other.forwarded;
        self.refused += other.refused;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.latency_us.extend(other.latency_us);
    }

    pub(crate) fn connections(&self) -> u64 {
        self.forwarded + self.refused + self.error_count()
    }

    pub(crate) fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub(crate) fn rate(&self) -> f64 {
        self.connections() as f64 / self.elapsed.as_secs_f64()
    }

    /// The `q` quantile (0..=1) of forwarded connections' durations, in microseconds.
    pub(crate) fn quantile_us(&mut self, q: f64) -> Option<u32> {
        if self.latency_us.is_empty() {
            return None;
        }
        self.latency_us.sort_unstable();
        let i = ((self.latency_us.len() - 1) as f64 * q).round() as usize;
        Some(self.latency_us[i])
    }

    pub(crate) fn errors_text(&self) -> String {
        if self.errors.is_empty() {
            return "0".into();
        }
        self.errors.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", ")
    }
}

/// `concurrency` clients, each connecting again as soon as its last connection ends, cycling
/// through `probes` (each client from its own offset); `warmup` first, untimed.
pub(crate) async fn closed_loop(
    addr: SocketAddr,
    probes: Arc<Vec<Probe>>,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> Stats {
    let timeout = Duration::from_secs(10);
    let begin = Instant::now();
    let measure_from = begin + warmup;
    let end = measure_from + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for c in 0..concurrency {
        let probes = probes.clone();
        tasks.push(tokio::spawn(async move {
            let mut stats = Stats::default();
            let mut i = c * 7919;
            loop {
                let probe = &probes[i % probes.len()];
                i += 1;
                let started = Instant::now();
                if started >= end {
                    break;
                }
                let (seen, took) = once(addr, &probe.hello, timeout).await;
                if started >= measure_from {
                    stats.record(probe, seen, took);
                }
            }
            stats
        }));
    }
    let mut total = Stats::default();
    for t in tasks {
        if let Ok(s) = t.await {
            total.merge(s);
        }
    }
    total.elapsed = Instant::now().saturating_duration_since(measure_from).min(duration + timeout);
    total.elapsed = total.elapsed.max(duration);
    total
}

/// How long before an arrival the pacer stops sleeping and spins. A `std::thread::sleep` ends
/// late by the kernel's timer slack (50 µs for an ordinary thread) plus the wake-up, by a varying
/// amount; sleeping to this much before the instant and spinning the rest puts the arrival on its
/// instant to within a few microseconds, as long as the pacer has a CPU when it wants one.
const SPIN: Duration = Duration::from_micros(100);

/// One arrival handed from the pacer thread to the runtime: its index and its scheduled instant.
type Arrival = (usize, Instant);

/// What one open-loop connection saw: arrival index, outcome, duration from the scheduled
/// arrival, how late its task started the connect after that instant, and whether it is counted.
type Outcome = (usize, Seen, Duration, Duration, bool);

/// How well an open-loop run kept its schedule: for the log, to tell the harness's own lateness
/// from the proxy's.
#[derive(Debug, Default)]
pub(crate) struct Pacing {
    /// For each counted arrival, from its scheduled instant to its task starting the connect
    /// (the pacer's lateness, the hand-off and the runtime's queueing), in microseconds.
    pub(crate) start_lag_us: Vec<u32>,
    /// The pacer thread's CPU time (from `/proc/thread-self/schedstat`; `None` where the kernel
    /// does not keep it), warm-up included.
    pub(crate) pacer_cpu: Option<Duration>,
    /// How long the pacer ran, warm-up included (to turn `pacer_cpu` into a share of a CPU).
    pub(crate) pacer_span: Duration,
}

impl Pacing {
    /// Adds another run's lags and pacer time to these.
    pub(crate) fn merge(&mut self, other: Pacing) {
        self.start_lag_us.extend(other.start_lag_us);
        self.pacer_cpu = match (self.pacer_cpu, other.pacer_cpu) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.pacer_span += other.pacer_span;
    }

    /// One line for the log: the start lag's p50, p99 and maximum, and the pacer's CPU share.
    pub(crate) fn summary(&mut self) -> String {
        let mut line = if self.start_lag_us.is_empty() {
            "no arrivals counted".to_string()
        } else {
            self.start_lag_us.sort_unstable();
            let at = |q: f64| self.start_lag_us[((self.start_lag_us.len() - 1) as f64 * q).round() as usize];
            format!("start lag p50 {} / p99 {} / max {} µs", at(0.5), at(0.99), at(1.0))
        };
        if let Some(cpu) = self.pacer_cpu.filter(|_| !self.pacer_span.is_zero()) {
            line.push_str(&format!(
                ", pacer thread {:.0}% of a CPU",
                cpu.as_secs_f64() * 100.0 / self.pacer_span.as_secs_f64()
            ));
        }
        line
    }
}

/// Connections started at a steady `rate` per second, cycling through `probes`, for `duration`
/// after `warmup` (open loop: a slow answer does not slow the arrivals).
///
/// The arrivals are scheduled at `begin + i / rate` by [`pace`] on a thread of its own, not by a
/// tokio timer: the timer has a resolution of a millisecond, so at thousands of connections per
/// second a "steady" rate came as a burst every millisecond, and it ran on the same runtime as the
/// connections it paced. Each arrival is handed to this runtime through a channel and a task
/// makes the connection with [`once`]. A connection's duration is counted from its **scheduled**
/// instant, not from the connect: whatever makes the harness late (the pacer not getting a CPU,
/// the hand-off, the runtime busy with other connections) counts against every proxy and the
/// direct baseline the same way, and an arrival the harness started late is not measured as if
/// it had been on time (coordinated omission). How late the connects started is in [`Pacing`].
pub(crate) async fn open_loop(
    addr: SocketAddr,
    probes: Arc<Vec<Probe>>,
    rate: f64,
    warmup: Duration,
    duration: Duration,
) -> (Stats, Pacing) {
    let timeout = Duration::from_secs(10);
    let begin = Instant::now();
    let measure_from = begin + warmup;
    let end = measure_from + duration;
    let (arrival_tx, mut arrivals) = tokio::sync::mpsc::unbounded_channel::<Arrival>();
    let pacer = std::thread::Builder::new()
        .name("pacer".into())
        .spawn(move || pace(begin, rate, end, &arrival_tx))
        .expect("pacer thread");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Outcome>();
    // Ends when the pacer is past `end` and drops its sender.
    while let Some((n, at)) = arrivals.recv().await {
        let tx = tx.clone();
        let probes2 = probes.clone();
        tokio::spawn(async move {
            let probe = &probes2[n % probes2.len()];
            let lag = Instant::now().saturating_duration_since(at);
            let (seen, took) = once(addr, &probe.hello, timeout).await;
            let _ = tx.send((n, seen, lag + took, lag, at >= measure_from));
        });
    }
    drop(tx);
    let mut stats = Stats::default();
    let mut pacing = Pacing::default();
    while let Some((n, seen, took, lag, counted)) = rx.recv().await {
        if counted {
            stats.record(&probes[n % probes.len()], seen, took);
            pacing.start_lag_us.push(u32::try_from(lag.as_micros()).unwrap_or(u32::MAX));
        }
    }
    // The pacer has returned (its sender is gone): the join does not wait.
    pacing.pacer_cpu = pacer.join().ok().flatten();
    pacing.pacer_span = warmup + duration;
    stats.elapsed = duration;
    (stats, pacing)
}

/// The pacer: hands arrival `i` to `tx` at `begin + i / rate` (computed from `begin` each time, so
/// no rounding of the period adds up) until `end`. It sleeps until [`SPIN`] before each instant and
/// spins the rest, checking the clock. An arrival it is late for (it did not get the CPU in time)
/// goes at once, with its scheduled instant, and the ones after keep their own instants: late
/// arrivals come in a burst rather than moving the schedule. Returns its own CPU time.
fn pace(begin: Instant, rate: f64, end: Instant, tx: &tokio::sync::mpsc::UnboundedSender<Arrival>) -> Option<Duration> {
    let cpu0 = thread_cpu();
    for i in 0usize.. {
        let at = begin + Duration::from_secs_f64(i as f64 / rate);
        if at >= end {
            break;
        }
        loop {
            let left = at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if left > SPIN {
                std::thread::sleep(left - SPIN);
            } else {
                std::hint::spin_loop();
            }
        }
        if tx.send((i, at)).is_err() {
            break;
        }
    }
    Some(thread_cpu()?.saturating_sub(cpu0?))
}

/// The calling thread's CPU time so far: the first field of `/proc/thread-self/schedstat`, in
/// nanoseconds.
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(stat.split_whitespace().next()?.parse().ok()?))
}

/// One long transfer of the [`BULK`] name: bytes per second from the first byte to the end.
pub(crate) async fn bulk(addr: SocketAddr, hello: &[u8]) -> Result<(u64, Duration), String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    s.write_all(hello).await.map_err(|e| format!("hello: {e}"))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    let mut first: Option<Instant> = None;
    loop {
        let n = s.read(&mut buf).await.map_err(|e| format!("read after {got} bytes: {e}"))?;
        if n == 0 {
            break;
        }
        first.get_or_insert_with(Instant::now);
        got += n as u64;
    }
    let took = first.map_or(Duration::ZERO, |f| f.elapsed());
    Ok((got, took))
}

/// Opens `n` idle tunnels for [`HOLD`] (each established: the upstream's byte has come back),
/// `parallel` at a time. Returns the open connections.
pub(crate) async fn idle_tunnels(
    addr: SocketAddr,
    hello: Arc<Vec<u8>>,
    n: usize,
    parallel: usize,
) -> Result<Vec<TcpStream>, String> {
    let mut tasks = Vec::new();
    let per = n.div_ceil(parallel);
    for p in 0..parallel {
        let count = per.min(n.saturating_sub(p * per));
        let hello = hello.clone();
        tasks.push(tokio::spawn(async move {
            let mut open = Vec::with_capacity(count);
            for _ in 0..count {
                let mut s = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
                s.write_all(&hello).await.map_err(|e| format!("hello: {e}"))?;
                let mut b = [0u8; 1];
                let got = tokio::time::timeout(Duration::from_secs(20), s.read(&mut b))
                    .await
                    .map_err(|_| "no answer within 20 s".to_string())?
                    .map_err(|e| format!("read: {e}"))?;
                if got != 1 || b[0] != b'R' {
                    return Err(format!("tunnel {} not established (read {got} bytes)", open.len()));
                }
                open.push(s);
            }
            Ok::<_, String>(open)
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await.map_err(|e| e.to_string())??);
    }
    Ok(all)
}

/// Every probe once, `parallel` at a time: what each saw.
pub(crate) async fn closed_loop_once(addr: SocketAddr, probes: Arc<Vec<Probe>>, parallel: usize) -> Vec<(Probe, Seen)> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..parallel {
        let (probes, next) = (probes.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(p) = probes.get(i) else { break };
                let (seen, _) = once(addr, &p.hello, Duration::from_secs(10)).await;
                out.push((i, seen));
            }
            out
        }));
    }
    let mut all = Vec::with_capacity(probes.len());
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(i, s)| (probes[i].clone(), s)).collect()
}
