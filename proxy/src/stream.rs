//! Byte streams around a client or upstream socket: the wait for a new connection's first byte
//! ([`first_byte`]), a stream that first replays the bytes the sniffer read ([`Prefixed`]), and
//! one that counts its bytes ([`Counting`]) into a [`Meter`], the byte counts and last-byte clock
//! that the relays and inspected sessions watch for idleness.
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

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Waits until the client has sent something (or closed, or reset: those are for the reader to
/// find and log like any other ending), at most until `deadline`; false when it sent nothing
/// in time. A peek, not `readable()`: a new socket starts out "ready" in tokio, so only a read
/// attempt that would block makes the wait real. One `recvfrom(MSG_PEEK)` per connection.
pub(crate) async fn first_byte(stream: &tokio::net::TcpStream, deadline: tokio::time::Instant) -> bool {
    let mut one = [0u8; 1];
    tokio::time::timeout_at(deadline, stream.peek(&mut one)).await.is_ok()
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
