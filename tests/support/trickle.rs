//! A stream wrapper that writes its first bytes one at a time with a pause between them, so that
//! (with `TCP_NODELAY`) each byte of a ClientHello travels in its own TCP segment and the
//! gateway's sniffer must reassemble it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Writes the first `n` bytes one per `poll_write`, `delay` apart; everything after, as given.
pub struct Trickle<T> {
    inner: T,
    remaining: usize,
    delay: Duration,
    pause: Option<Pin<Box<Sleep>>>,
    written: usize,
}

impl<T> Trickle<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, n: usize, delay: Duration) -> Trickle<T> {
        Trickle { inner, remaining: n, delay, pause: None, written: 0 }
    }

    /// Bytes written one at a time so far.
    pub fn trickled(&self) -> usize {
        self.written
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Trickle<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Trickle<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.remaining == 0 || buf.is_empty() {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        if let Some(pause) = this.pause.as_mut() {
            if pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.pause = None;
        }
        let n = match Pin::new(&mut this.inner).poll_write(cx, &buf[..1]) {
            Poll::Ready(Ok(n)) => n,
            other => return other,
        };
        this.remaining -= n;
        this.written += n;
        this.pause = Some(Box::pin(tokio::time::sleep(this.delay)));
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
