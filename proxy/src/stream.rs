//! Byte streams around a client or upstream socket: the wait for a new connection's first byte
//! ([`first_byte`]), the per-thread pool of copy buffers ([`Pooled`]), a stream that first
//! replays the bytes the sniffer read ([`Prefixed`]), and one that counts its bytes
//! ([`Counting`]) into a [`Meter`], the byte counts and last-byte clock that the relays and
//! inspected sessions watch for idleness.
//!
//! Sniffing reads the client's first bytes into a buffer instead of peeking, so nothing is
//! lost: [`Prefixed`] hands those bytes to whoever reads next (hyper, the relay) before reading
//! the socket again. Nothing here interprets bytes, decides or logs.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Waits until the client has sent something (or closed, or reset: those are for the reader to
/// find and log like any other ending), at most until `deadline`; false when it sent nothing
/// in time. A peek, not `readable()`: a new socket starts out "ready" in tokio, so only a read
/// attempt that would block makes the wait real. One `recvfrom(MSG_PEEK)` per connection; a
/// caller that has tried [`early_bytes`] first, and found none, has made the wait real already.
pub(crate) async fn first_byte(stream: &tokio::net::TcpStream, deadline: tokio::time::Instant) -> bool {
    let mut one = [0u8; 1];
    tokio::time::timeout_at(deadline, stream.peek(&mut one)).await.is_ok()
}

/// What the client has sent already, read without waiting: most clients send their first bytes
/// (a ClientHello) right after the handshake, so they are usually there when the connection is
/// accepted, and one read takes them. `None` when nothing is there yet (the read would block:
/// tokio then knows the socket is not readable, and [`first_byte`] waits for real), and
/// `Some` of an empty buffer when the client has closed or reset already (the sniff's own
/// read reports that). A connection that waits holds no buffer (the read's is freed at once).
pub(crate) fn early_bytes(stream: &tokio::net::TcpStream) -> Option<BytesMut> {
    // Read straight into the buffer's spare capacity: nothing zeroed, nothing copied.
    let mut first = BytesMut::with_capacity(EARLY);
    match stream.try_read_buf(&mut first) {
        Ok(_) => Some(first),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(_) => Some(BytesMut::new()),
    }
}

/// How much [`early_bytes`] reads at once: more than most ClientHellos (a hybrid post-quantum key
/// share makes Chrome's about 1.8 KB); a longer one is read on by the sniffer.
const EARLY: usize = 4096;

/// The capacity of a [`Pooled`] buffer: what one read may move.
pub(crate) const POOL_BUF: usize = 64 * 1024;

/// Free buffers kept for reuse per thread; more are freed (4 MiB at most stays allocated on
/// each worker).
pub(crate) const POOL_KEEP: usize = 64;

thread_local! {
    /// This thread's free [`POOL_BUF`] buffers. Per thread, so taking one is a plain `Vec::pop`
    /// (a connection stays on the worker that accepted it).
    static POOL: std::cell::RefCell<Vec<Box<[u8]>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A [`POOL_BUF`]-byte buffer from this thread's pool (the relay's copies, the drain of a refused
/// client); it goes back to the pool of the thread that drops it, however the copy ends (an
/// error included). Zeroed once, when the pool makes it, not at every use.
pub(crate) struct Pooled(pub(crate) Box<[u8]>);

impl Pooled {
    /// A buffer of [`POOL_BUF`] bytes (their contents are whatever its last user left).
    pub(crate) fn take() -> Pooled {
        let pooled = POOL.with(|p| p.borrow_mut().pop());
        Pooled(pooled.unwrap_or_else(|| vec![0u8; POOL_BUF].into_boxed_slice()))
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.0);
        // `try_with`: a buffer dropped while the thread's locals are being destroyed is freed.
        let _ = POOL.try_with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < POOL_KEEP {
                p.push(buf);
            }
        });
    }
}

/// How many free buffers this thread's pool holds.
#[cfg(test)]
pub(crate) fn pooled_here() -> usize {
    POOL.with(|p| p.borrow().len())
}

/// A stream whose reads return `prefix` first, then the inner stream's bytes. Writes go
/// straight to the inner stream.
#[derive(Debug)]
pub(crate) struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    /// Wraps `inner`, replaying `prefix` first.
    pub(crate) fn new(prefix: Bytes, inner: S) -> Prefixed<S> {
        Prefixed { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Byte counts both ways and the time of the last byte moved: what a relay or an inspected
/// session reports, and what its idle watchdog ([`Meter::idle`]) reads.
#[derive(Debug)]
pub(crate) struct Meter {
    /// Bytes towards the upstream (read from the client).
    pub(crate) up: AtomicU64,
    /// Bytes towards the client.
    pub(crate) down: AtomicU64,
    started: Instant,
    /// Milliseconds since `started` of the last byte either way.
    last: AtomicU64,
}

impl Default for Meter {
    fn default() -> Meter {
        Meter { up: AtomicU64::new(0), down: AtomicU64::new(0), started: Instant::now(), last: AtomicU64::new(0) }
    }
}

impl Meter {
    /// Bytes towards the upstream.
    pub(crate) fn up(&self) -> u64 {
        self.up.load(Ordering::Relaxed)
    }

    /// Bytes towards the client.
    pub(crate) fn down(&self) -> u64 {
        self.down.load(Ordering::Relaxed)
    }

    /// Notes that a byte moved now.
    pub(crate) fn touch(&self) {
        self.last.store(u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Counts `n` bytes into `counter` (one of [`Meter::up`]'s or [`Meter::down`]'s fields) and
    /// notes the time.
    pub(crate) fn add(&self, counter: &AtomicU64, n: usize) {
        if n > 0 {
            counter.fetch_add(n as u64, Ordering::Relaxed);
            self.touch();
        }
    }

    /// How long since a byte last moved either way.
    pub(crate) fn idle_for(&self) -> Duration {
        self.started.elapsed().saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }

    /// Resolves once no byte has moved for `limit`: the idle watchdog of relays and inspected
    /// sessions.
    pub(crate) async fn idle(&self, limit: Duration) {
        loop {
            let idle_for = self.idle_for();
            if idle_for >= limit {
                return;
            }
            tokio::time::sleep(limit - idle_for).await;
        }
    }
}

/// A stream that counts the bytes read from it (up) and written to it (down) into a shared
/// [`Meter`].
#[derive(Debug)]
pub(crate) struct Counting<S> {
    inner: S,
    meter: Arc<Meter>,
}

impl<S> Counting<S> {
    /// Wraps `inner`, counting into `meter`.
    pub(crate) fn new(inner: S, meter: Arc<Meter>) -> Counting<S> {
        Counting { inner, meter }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counting<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let n = buf.filled().len() - before;
            self.meter.add(&self.meter.up, n);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counting<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.meter.add(&self.meter.down, n);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            self.meter.add(&self.meter.down, n);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn prefix_then_inner() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b" world").await.unwrap();
        drop(a);
        let mut p = Prefixed::new(Bytes::from_static(b"hello"), b);
        let mut out = String::new();
        p.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }

    /// A client's first bytes are taken at once when they are there; otherwise the first-byte
    /// wait is a real wait: a silent client keeps it waiting until the deadline, and one that
    /// sends later is seen then, its bytes unread.
    #[tokio::test]
    async fn early_bytes_then_a_real_wait() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();

        let mut early = tokio::net::TcpStream::connect(addr).await.unwrap();
        early.write_all(b"\x16\x03\x01").await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(early_bytes(&accepted).as_deref(), Some(&b"\x16\x03\x01"[..]));

        let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert_eq!(early_bytes(&accepted), None);
        let soon = tokio::time::Instant::now() + Duration::from_millis(200);
        assert!(!first_byte(&accepted, soon).await, "a silent client must not look readable");

        let mut late = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert_eq!(early_bytes(&accepted), None);
        let send = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            late.write_all(b"x").await.unwrap();
            late
        });
        assert!(first_byte(&accepted, tokio::time::Instant::now() + Duration::from_secs(5)).await);
        let _late = send.await.unwrap();
        assert_eq!(early_bytes(&accepted).as_deref(), Some(&b"x"[..]));

        let closed = tokio::net::TcpStream::connect(addr).await.unwrap();
        drop(closed);
        let (accepted, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(early_bytes(&accepted).as_deref(), Some(&b""[..]));
    }

    #[tokio::test]
    async fn counting_both_ways() {
        let (a, mut b) = tokio::io::duplex(64);
        let meter = Arc::new(Meter::default());
        let mut c = Counting::new(a, meter.clone());
        c.write_all(b"abc").await.unwrap();
        b.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!((meter.up(), meter.down()), (5, 3));
        assert!(meter.idle_for() < Duration::from_secs(5));
    }
}
