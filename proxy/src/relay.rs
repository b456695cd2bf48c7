//! How a byte-stream connection ends: relayed (after a decision, the sniffed bytes go upstream
//! first, then bytes are copied both ways until both sides are done) or refused; and its record
//! saying which.
//!
//! This phase owns the copy loops, half-close (a client's FIN becomes a FIN upstream while the
//! other direction keeps flowing), the idle timeout (no bytes either way), the byte counters,
//! and the end of a connection's record ([`Relay::run`], [`refuse`]). It does not decide or
//! connect.
//!
//! Two copy loops. [`relay`] is generic (TLS sessions of an inspected connection): one
//! [`BUF_SIZE`] buffer per direction for the life of the tunnel. [`relay_tcp`], for the common
//! case of a TCP client spliced to a TCP upstream, holds no buffer while a direction is idle: it
//! waits for the socket to be readable, takes a 64 KiB buffer from a small per-thread pool ([`Pooled`]),
//! moves everything the socket has, and gives the buffer back before it waits again. An idle
//! tunnel then costs its task and its two sockets, and a busy one moves 64 KiB per system call
//! instead of 8. The figures are in BENCHMARKS.md.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::conn::Conn;
use crate::outcome::{refuse_stream_with, Failure, Outcome, TLS_ACCESS_DENIED};
use crate::stream::{Meter, Pooled};

/// The copy buffer per direction of [`relay`] (the same as `tokio::io::copy`'s).
pub(crate) const BUF_SIZE: usize = 8 * 1024;

/// How a relay ended and what it carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Relayed {
    /// Bytes written upstream (the replayed prefix included).
    pub(crate) up: u64,
    /// Bytes written to the client.
    pub(crate) down: u64,
    /// How it ended.
    pub(crate) end: End,
}

/// How a relay ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// Both directions reached end of stream.
    Done,
    /// No bytes moved either way for the idle timeout.
    Idle,
    /// The client side failed.
    ClientError(String),
    /// The upstream side failed.
    UpstreamError(String),
    /// The client reset the connection (`ECONNRESET`): the upstream is reset too.
    ClientReset(String),
    /// The upstream reset the connection: the client is reset too.
    UpstreamReset(String),
}

/// Writes `prefix` upstream, then copies both ways until both directions end, one side
/// fails, or nothing moves for `idle`.
pub(crate) async fn relay<C, U>(client: C, upstream: U, prefix: bytes::Bytes, idle: Duration) -> Relayed
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut ur, mut uw) = tokio::io::split(upstream);
    let meter = Meter::default();
    let touch = || meter.touch();
    let upward = async {
        replay(&meter, &mut uw, prefix).await?;
        copy(&mut cr, &mut uw, &meter.up, &touch, Side::Client, Side::Upstream).await
    };
    let downward = copy(&mut ur, &mut cw, &meter.down, &touch, Side::Upstream, Side::Client);
    drive(&meter, async { tokio::try_join!(upward, downward) }, idle).await
}

/// Writes the sniffed bytes upstream and counts them, then frees them for the life of the
/// tunnel.
async fn replay<W: AsyncWrite + Unpin>(meter: &Meter, upstream: &mut W, prefix: bytes::Bytes) -> Result<(), Side> {
    if !prefix.is_empty() {
        upstream.write_all(&prefix).await.map_err(Side::Upstream)?;
        meter.up.fetch_add(prefix.len() as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// Runs both directions until they end, one fails, or nothing moves for `idle`.
async fn drive(
    meter: &Meter,
    both: impl std::future::Future<Output = Result<((), ()), Side>>,
    idle: Duration,
) -> Relayed {
    let end = tokio::select! {
        r = both => match r {
            Ok(_) => End::Done,
            Err(Side::Client(e)) if e.kind() == io::ErrorKind::ConnectionReset => End::ClientReset(e.to_string()),
            Err(Side::Upstream(e)) if e.kind() == io::ErrorKind::ConnectionReset => End::UpstreamReset(e.to_string()),
            Err(Side::Client(e)) => End::ClientError(e.to_string()),
            Err(Side::Upstream(e)) => End::UpstreamError(e.to_string()),
        },
        () = meter.idle(idle) => End::Idle,
    };
    Relayed { up: meter.up(), down: meter.down(), end }
}

/// A stream that may be a plain TCP socket: [`relay_tcp`] is used when both sides are.
pub(crate) trait IntoTcp: Sized {
    /// The socket itself, or `self` back when it is something else (a TLS session, an upgraded
    /// HTTP connection).
    fn into_tcp(self) -> Result<TcpStream, Self> {
        Err(self)
    }

    /// The socket itself, when it is one.
    fn as_tcp(&self) -> Option<&TcpStream> {
        None
    }
}

impl IntoTcp for TcpStream {
    fn into_tcp(self) -> Result<TcpStream, Self> {
        Ok(self)
    }

    fn as_tcp(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl<S> IntoTcp for tokio_rustls::server::TlsStream<S> {}
impl<S> IntoTcp for tokio_rustls::client::TlsStream<S> {}
impl<S> IntoTcp for crate::stream::Prefixed<S> {}
impl<S> IntoTcp for hyper_util::rt::TokioIo<S> {}

/// [`relay`] for a TCP client and a TCP upstream, without a buffer per idle direction (see the
/// module documentation). Same contract: `prefix` goes upstream first; half-closes are passed
/// on; the relay ends when both directions have, one side fails, or nothing moves for `idle`.
/// A reset from one side is passed on as a reset of the other (`SO_LINGER` 0 before the close),
/// as a router would: the other end learns at once that the connection is gone, and neither
/// the gateway nor it goes through a FIN exchange and `TIME_WAIT` for a connection whose peer
/// has already aborted.
///
/// A hand-written future ([`TcpRelay`]), not `async` code: an open tunnel holds this state for
/// its whole life, and the compiler's layout of nested `async` blocks (two copy loops, a
/// `try_join`, a `select` with the idle timer) made it 3.4 KB where the fields need a few
/// hundred bytes.
pub(crate) fn relay_tcp(client: TcpStream, upstream: TcpStream, prefix: bytes::Bytes, idle: Duration) -> TcpRelay {
    TcpRelay::new(client, upstream, prefix, idle)
}

/// The state of [`relay_tcp`]: both sockets, each direction's progress, the counts and the idle
/// clock.
pub(crate) struct TcpRelay {
    client: TcpStream,
    upstream: TcpStream,
    /// Client to upstream; starts by writing the sniffed bytes.
    up: Direction,
    /// Upstream to client.
    down: Direction,
    /// No bytes either way for this long ends the relay.
    idle: Duration,
    /// When a byte last moved.
    last: tokio::time::Instant,
    /// Fires at `last + idle` (re-armed when bytes moved meanwhile). Boxed: `Sleep` is not
    /// `Unpin`, and one allocation per tunnel keeps this future movable.
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

/// One direction of a [`TcpRelay`].
struct Direction {
    state: Flow,
    /// Bytes written to the destination (the replayed prefix included).
    count: u64,
}

enum Flow {
    /// Writing `buf[at..]`, then back to reading. The buffer is the sniffed prefix (first
    /// direction only) or a pooled one, held only while its bytes are in flight.
    Writing { buf: Held, at: usize, len: usize },
    /// Waiting for the source to be readable, holding no buffer.
    Reading,
    /// The source ended: passing the FIN on.
    Closing,
    /// Done.
    Done,
}

/// Bytes being written.
enum Held {
    Prefix(bytes::Bytes),
    Pooled(Pooled),
}

impl Held {
    fn bytes(&self, len: usize) -> &[u8] {
        match self {
            Held::Prefix(b) => b,
            Held::Pooled(p) => &p.0[..len],
        }
    }
}

impl TcpRelay {
    fn new(client: TcpStream, upstream: TcpStream, prefix: bytes::Bytes, idle: Duration) -> TcpRelay {
        let last = tokio::time::Instant::now();
        let up = if prefix.is_empty() {
            Flow::Reading
        } else {
            Flow::Writing { len: prefix.len(), buf: Held::Prefix(prefix), at: 0 }
        };
        TcpRelay {
            client,
            upstream,
            up: Direction { state: up, count: 0 },
            down: Direction { state: Flow::Reading, count: 0 },
            idle,
            last,
            timer: Box::pin(tokio::time::sleep_until(last + idle)),
        }
    }
}

/// Moves what `from` has to `to` until `from` ends (then passes the FIN on) or blocks. `Ready`
/// when the direction is done or failed; `moved` is set when bytes moved.
fn poll_direction(
    dir: &mut Direction,
    from: &mut TcpStream,
    to: &mut TcpStream,
    cx: &mut std::task::Context<'_>,
    moved: &mut bool,
) -> std::task::Poll<Result<(), (bool, io::Error)>> {
    use std::task::Poll;
    // Errors say whether they came from the source (`true`) or the destination.
    loop {
        match &mut dir.state {
            Flow::Done => return Poll::Ready(Ok(())),
            Flow::Closing => {
                match std::pin::Pin::new(&mut *to).poll_shutdown(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(r) => r.or_else(ignore_not_connected).map_err(|e| (false, e))?,
                }
                dir.state = Flow::Done;
            }
            Flow::Writing { buf, at, len } => {
                let data = &buf.bytes(*len)[*at..];
                let n = match std::pin::Pin::new(&mut *to).poll_write(cx, data) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err((false, io::ErrorKind::WriteZero.into()))),
                    Poll::Ready(Ok(n)) => n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err((false, e))),
                };
                *at += n;
                dir.count += n as u64;
                *moved = true;
                if *at == *len {
                    // The pooled buffer goes back now, before the next wait.
                    dir.state = Flow::Reading;
                }
            }
            Flow::Reading => {
                match from.poll_read_ready(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err((true, e))),
                    Poll::Ready(Ok(())) => {}
                }
                let mut pooled = Pooled::take();
                let mut read = tokio::io::ReadBuf::new(&mut pooled.0);
                // A read that does not fill the buffer tells tokio the socket is drained, so the
                // next wait goes straight to epoll.
                match std::pin::Pin::new(&mut *from).poll_read(cx, &mut read) {
                    // Readiness was stale: the buffer goes back, the waker is registered.
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err((true, e))),
                    Poll::Ready(Ok(())) => {}
                }
                let n = read.filled().len();
                if n == 0 {
                    dir.state = Flow::Closing;
                    continue;
                }
                *moved = true;
                dir.state = Flow::Writing { buf: Held::Pooled(pooled), at: 0, len: n };
            }
        }
    }
}

impl std::future::Future for TcpRelay {
    type Output = Relayed;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Relayed> {
        use std::task::Poll;
        let this = &mut *self;
        let mut moved = false;
        let up = poll_direction(&mut this.up, &mut this.client, &mut this.upstream, cx, &mut moved);
        let down = poll_direction(&mut this.down, &mut this.upstream, &mut this.client, cx, &mut moved);
        let failed = match (up, down) {
            (Poll::Ready(Err((source, e))), _) => Some(if source { Side::Client(e) } else { Side::Upstream(e) }),
            (_, Poll::Ready(Err((source, e)))) => Some(if source { Side::Upstream(e) } else { Side::Client(e) }),
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => return Poll::Ready(this.relayed(End::Done)),
            _ => None,
        };
        if let Some(side) = failed {
            let end = match side {
                Side::Client(e) if e.kind() == io::ErrorKind::ConnectionReset => End::ClientReset(e.to_string()),
                Side::Upstream(e) if e.kind() == io::ErrorKind::ConnectionReset => End::UpstreamReset(e.to_string()),
                Side::Client(e) => End::ClientError(e.to_string()),
                Side::Upstream(e) => End::UpstreamError(e.to_string()),
            };
            return Poll::Ready(this.relayed(end));
        }
        let now = tokio::time::Instant::now();
        if moved {
            this.last = now;
        }
        // The idle clock: re-armed only when it fires and bytes moved since it was set.
        while this.timer.as_mut().poll(cx).is_ready() {
            if now.saturating_duration_since(this.last) >= this.idle {
                return Poll::Ready(this.relayed(End::Idle));
            }
            this.timer.as_mut().reset(this.last + this.idle);
        }
        Poll::Pending
    }
}

impl TcpRelay {
    /// The result, with the reset passed on to the side that did not fail.
    fn relayed(&mut self, end: End) -> Relayed {
        match end {
            End::ClientReset(_) => {
                let _ = self.upstream.set_zero_linger();
            }
            End::UpstreamReset(_) => {
                let _ = self.client.set_zero_linger();
            }
            _ => {}
        }
        Relayed { up: self.up.count, down: self.down.count, end }
    }
}

/// Which side an I/O error came from.
#[derive(Debug)]
enum Side {
    Client(io::Error),
    Upstream(io::Error),
}

async fn copy<R, W>(
    r: &mut R,
    w: &mut W,
    count: &AtomicU64,
    touch: &impl Fn(),
    from: fn(io::Error) -> Side,
    to: fn(io::Error) -> Side,
) -> Result<(), Side>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let n = r.read(&mut buf).await.map_err(from)?;
        if n == 0 {
            // Half-close: pass the FIN on and let the other direction finish.
            return w.shutdown().await.or_else(ignore_not_connected).map_err(to);
        }
        touch();
        w.write_all(&buf[..n]).await.map_err(to)?;
        count.fetch_add(n as u64, Ordering::Relaxed);
        touch();
    }
}

fn ignore_not_connected(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotConnected {
        Ok(())
    } else {
        Err(e)
    }
}

/// A connection let through and connected, ready to relay: what the dispatch after the sniff
/// hands back, so that the relay (the state an open tunnel keeps for its whole life) runs at
/// the top of the connection's task, not under the frames of the phases that led to it.
#[derive(Debug)]
pub(crate) struct Relay<C, U = TcpStream> {
    /// The connection's context (its record is emitted when the relay ends).
    pub(crate) conn: Conn,
    /// The client side.
    pub(crate) client: C,
    /// The upstream side.
    pub(crate) upstream: U,
    /// The sniffed bytes, written upstream first.
    pub(crate) prefix: bytes::Bytes,
}

impl<C, U> Relay<C, U>
where
    C: AsyncRead + AsyncWrite + Unpin + IntoTcp,
    U: AsyncRead + AsyncWrite + Unpin + IntoTcp,
{
    /// Runs [`Relay::run`] on a task of its own, which ends with it or when the shutdown grace
    /// period does. The caller's task, sized for the phases that led here (sniff, decision,
    /// connect), ends now: an open tunnel holds only the relay's task.
    pub(crate) fn spawn(self)
    where
        C: Send + 'static,
        U: Send + 'static,
    {
        let stop = self.conn.slot.clone();
        tokio::spawn(crate::conn::until_stopped(self.run(), stop));
    }

    /// Relays to the end, then emits the record with how it ended and the bytes relayed.
    pub(crate) async fn run(mut self) {
        let open = self.conn.gen.metrics.tunnel(&self.conn.access.listener.label);
        // TCP on both sides (every bypass and uninspected tunnel): the relay that holds no
        // buffer while idle and moves 64 KiB per call.
        let idle = self.conn.gen.idle_timeout;
        let r = match (self.client.into_tcp(), self.upstream.into_tcp()) {
            (Ok(c), Ok(u)) => relay_tcp(c, u, self.prefix, idle).await,
            (Ok(c), Err(u)) => Box::pin(relay(c, u, self.prefix, idle)).await,
            (Err(c), Ok(u)) => Box::pin(relay(c, u, self.prefix, idle)).await,
            (Err(c), Err(u)) => Box::pin(relay(c, u, self.prefix, idle)).await,
        };
        drop(open);
        let conn = &mut self.conn;
        conn.access.bytes_up = r.up;
        conn.access.bytes_down = r.down;
        match r.end {
            End::Done => conn.finish(),
            End::Idle => conn.failed(Outcome::IdleTimeout, format!("no bytes for {} ms", idle.as_millis())),
            End::ClientError(e) | End::ClientReset(e) => conn.failed(Outcome::ClientError, e),
            End::UpstreamError(e) | End::UpstreamReset(e) => conn.failed(Outcome::UpstreamError, e),
        }
    }
}

/// Refuses a client on its byte stream (an `access_denied` alert first when `alert`, then a
/// lingering close) and emits the record.
///
/// On a TCP socket the alert is sent with `MSG_MORE`, so that the FIN of the close that follows
/// goes out in the same segment: one packet for the client to take in, not two.
pub(crate) async fn refuse<C: AsyncRead + AsyncWrite + Unpin + IntoTcp>(
    mut conn: Conn,
    client: C,
    f: Failure,
    alert: bool,
) {
    let mut rest: &[u8] = if alert { &TLS_ACCESS_DENIED } else { &[] };
    if let (false, Some(tcp)) = (rest.is_empty(), client.as_tcp()) {
        let sent = tcp.try_io(tokio::io::Interest::WRITABLE, || {
            socket2::SockRef::from(tcp).send_with_flags(rest, nix::libc::MSG_MORE)
        });
        if let Ok(n) = sent {
            conn.access.bytes_down += n as u64;
            rest = &rest[n.min(rest.len())..];
        }
    }
    conn.access.bytes_down += refuse_stream_with(client, rest).await;
    conn.refused(f);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn prefix_half_close_and_counts() {
        let (mut client, client_side) = pair().await;
        let (upstream_side, mut server) = pair().await;
        let task = tokio::spawn(async move {
            relay(client_side, upstream_side, bytes::Bytes::from_static(b"hello "), Duration::from_secs(5)).await
        });
        client.write_all(b"world").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello world");
        // The other direction still works after the client's FIN.
        server.write_all(b"reply").await.unwrap();
        server.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"reply");
        let r = task.await.unwrap();
        assert_eq!(r, Relayed { up: 11, down: 5, end: End::Done });
    }

    #[tokio::test]
    async fn tcp_prefix_half_close_counts_and_pool() {
        let (mut client, client_side) = pair().await;
        let (upstream_side, mut server) = pair().await;
        let task = tokio::spawn(async move {
            relay_tcp(client_side, upstream_side, bytes::Bytes::from_static(b"hello "), Duration::from_secs(5)).await
        });
        // More than one pooled buffer's worth, in odd pieces.
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let big = big.clone();
            async move {
                for chunk in big.chunks(7_777) {
                    client.write_all(chunk).await.unwrap();
                }
                client.shutdown().await.unwrap();
                client
            }
        };
        let reader = async {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            got
        };
        let (mut client, got) = tokio::join!(writer, reader);
        assert_eq!(&got[..6], b"hello ");
        assert_eq!(&got[6..], &big[..]);
        // The other direction still works after the client's FIN.
        server.write_all(b"reply").await.unwrap();
        server.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"reply");
        let r = task.await.unwrap();
        assert_eq!(r, Relayed { up: 6 + big.len() as u64, down: 5, end: End::Done });
        // Buffers went back to a pool (the relay's task may have run on another thread of the
        // test's runtime), and no pool grows past its bound.
        assert!(crate::stream::pooled_here() <= crate::stream::POOL_KEEP);
    }

    #[tokio::test]
    async fn tcp_idle_timeout_and_reset() {
        let (_client, client_side) = pair().await;
        let (upstream_side, _server) = pair().await;
        let r = relay_tcp(client_side, upstream_side, bytes::Bytes::new(), Duration::from_millis(100)).await;
        assert_eq!(r.end, End::Idle);

        let (client, client_side) = pair().await;
        let (upstream_side, _server) = pair().await;
        client.set_zero_linger().unwrap();
        drop(client);
        let r = relay_tcp(client_side, upstream_side, bytes::Bytes::new(), Duration::from_secs(5)).await;
        assert!(matches!(r.end, End::ClientReset(_) | End::ClientError(_) | End::Done), "{r:?}");
    }

    /// A reset from either side reaches the other as a reset, not as a clean end of stream.
    #[tokio::test]
    async fn a_reset_is_passed_on() {
        for client_resets in [true, false] {
            let (mut client, client_side) = pair().await;
            let (upstream_side, mut server) = pair().await;
            let task = tokio::spawn(relay_tcp(client_side, upstream_side, bytes::Bytes::new(), Duration::from_secs(5)));
            let (resetter, survivor) =
                if client_resets { (&mut client, &mut server) } else { (&mut server, &mut client) };
            resetter.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            survivor.read_exact(&mut one).await.unwrap();
            resetter.set_zero_linger().unwrap();
            let (resetter, survivor) = if client_resets { (client, server) } else { (server, client) };
            drop(resetter);
            let r = task.await.unwrap();
            let expected = if client_resets { "ClientReset" } else { "UpstreamReset" };
            assert!(format!("{:?}", r.end).starts_with(expected), "{r:?}");
            let mut survivor = survivor;
            let mut rest = Vec::new();
            let e = survivor.read_to_end(&mut rest).await.expect_err("the other side must see a reset");
            assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
        }
    }

    /// What a connection's task holds stays small: until the client sends, the listener's
    /// future (the phases after the first byte are boxed); once relayed, only the relay's task
    /// (`Relay::spawn`). `async` nesting that keeps a second copy of its state shows up here.
    #[test]
    fn a_connection_holds_little() {
        fn future_of<A, B, Fut, F: FnOnce(A, B) -> Fut>(_: F) -> usize {
            std::mem::size_of::<Fut>()
        }
        fn future_of1<A, Fut, F: FnOnce(A) -> Fut>(_: F) -> usize {
            std::mem::size_of::<Fut>()
        }
        use crate::conn::until_stopped;
        let relay = future_of(|a: TcpStream, b: TcpStream| relay_tcp(a, b, bytes::Bytes::new(), Duration::ZERO));
        let tunnel = future_of1(|r: Relay<TcpStream>| {
            let stop = r.conn.slot.clone();
            until_stopped(r.run(), stop)
        });
        let accepted = future_of(|c: Conn, s: TcpStream| {
            let stop = c.slot.clone();
            until_stopped(crate::listen::transparent::serve(c, s), stop)
        });
        let proxy = future_of(|c: Conn, s: TcpStream| {
            let stop = c.slot.clone();
            until_stopped(crate::listen::connect::serve(c, s), stop)
        });
        eprintln!("relay {relay} B, tunnel task {tunnel} B, accepted {accepted} B, proxy {proxy} B");
        assert!(relay <= 512, "the TCP relay's state is {relay} bytes");
        assert!(tunnel <= 2048, "an open tunnel's task is {tunnel} bytes");
        assert!(accepted <= 2048, "a redirected connection's task is {accepted} bytes");
        assert!(proxy <= 2048, "a proxy connection's task is {proxy} bytes");
    }

    #[tokio::test]
    async fn idle_timeout() {
        let (_client, client_side) = pair().await;
        let (upstream_side, _server) = pair().await;
        let r = relay(client_side, upstream_side, bytes::Bytes::new(), Duration::from_millis(100)).await;
        assert_eq!(r.end, End::Idle);
    }
}
