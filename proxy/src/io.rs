//! Byte plumbing shared by the phases: the wait for a new connection's first byte, a stream that
//! first replays the bytes the sniffer read, and a stream that counts its bytes and when they
//! last moved.
//!
//! Sniffing reads the client's first bytes into a buffer instead of peeking, so nothing is
//! lost: [`Prefixed`] hands those bytes to whoever reads next (hyper, the relay) before reading
//! the socket again. It does not interpret them.

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
pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    /// Wraps `inner`, replaying `prefix` first.
    pub fn new(prefix: Bytes, inner: S) -> Prefixed<S> {
        Prefixed { prefix, inner }
    }

    /// The inner stream and the part of the prefix not yet read.
    pub fn into_parts(self) -> (Bytes, S) {
        (self.prefix, self.inner)
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

/// Byte counts both ways and the time of the last byte, shared between a [`Counting`] stream
/// and whoever logs or watches it.
#[derive(Clone, Debug)]
pub struct Counters(Arc<CountersInner>);

#[derive(Debug)]
struct CountersInner {
    up: AtomicU64,
    down: AtomicU64,
    started: Instant,
    /// Milliseconds since `started` of the last byte either way.
    last: AtomicU64,
}

impl Default for Counters {
    fn default() -> Counters {
        Counters(Arc::new(CountersInner {
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            started: Instant::now(),
            last: AtomicU64::new(0),
        }))
    }
}

impl Counters {
    /// Bytes read from the stream (client to gateway).
    pub fn up(&self) -> u64 {
        self.0.up.load(Ordering::Relaxed)
    }

    /// Bytes written to the stream (gateway to client).
    pub fn down(&self) -> u64 {
        self.0.down.load(Ordering::Relaxed)
    }

    /// How long since a byte last moved either way.
    pub fn idle_for(&self) -> Duration {
        self.0.started.elapsed().saturating_sub(Duration::from_millis(self.0.last.load(Ordering::Relaxed)))
    }

    fn add(&self, counter: &AtomicU64, n: usize) {
        if n > 0 {
            counter.fetch_add(n as u64, Ordering::Relaxed);
            let now = u64::try_from(self.0.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.0.last.store(now, Ordering::Relaxed);
        }
    }
}

/// A stream that counts the bytes read from and written to it into [`Counters`].
#[derive(Debug)]
pub struct Counting<S> {
    inner: S,
    counters: Counters,
}

impl<S> Counting<S> {
    /// Wraps `inner`, counting into `counters`.
    pub fn new(inner: S, counters: Counters) -> Counting<S> {
        Counting { inner, counters }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counting<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let n = buf.filled().len() - before;
            self.counters.add(&self.counters.0.up, n);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counting<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.counters.add(&self.counters.0.down, n);
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
            self.counters.add(&self.counters.0.down, n);
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
        let counters = Counters::default();
        let mut c = Counting::new(a, counters.clone());
        c.write_all(b"abc").await.unwrap();
        b.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!((counters.up(), counters.down()), (5, 3));
        assert!(counters.idle_for() < Duration::from_secs(5));
    }
}
