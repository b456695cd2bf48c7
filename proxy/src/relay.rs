//! Relaying: after a decision, the sniffed bytes go upstream first, then bytes are copied both
//! ways until both sides are done.
//!
//! This phase owns the copy loops, half-close (a client's FIN becomes a FIN upstream while the
//! other direction keeps flowing), the idle timeout (no bytes either way) and the byte
//! counters. It does not decide, connect or log.
//!
//! Memory per tunnel: two [`BUF_SIZE`] buffers (one per direction) plus the task's state; the
//! figure is measured in BENCHMARKS.md.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The copy buffer per direction (the same as `tokio::io::copy`'s).
pub const BUF_SIZE: usize = 8 * 1024;

/// How a relay ended and what it carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relayed {
    /// Bytes written upstream (the replayed prefix included).
    pub up: u64,
    /// Bytes written to the client.
    pub down: u64,
    /// How it ended.
    pub end: End,
}

/// How a relay ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Both directions reached end of stream.
    Done,
    /// No bytes moved either way for the idle timeout.
    Idle,
    /// The client side failed.
    ClientError(String),
    /// The upstream side failed.
    UpstreamError(String),
}

/// Writes `prefix` upstream, then copies both ways until both directions end, one side
/// fails, or nothing moves for `idle`.
pub async fn relay<C, U>(client: C, upstream: U, prefix: bytes::Bytes, idle: Duration) -> Relayed
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut ur, mut uw) = tokio::io::split(upstream);
    let up = AtomicU64::new(0);
    let down = AtomicU64::new(0);
    let started = Instant::now();
    // Milliseconds since `started` of the last byte moved, either way.
    let last = AtomicU64::new(0);
    let touch = || last.store(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);

    let upward = async {
        if !prefix.is_empty() {
            uw.write_all(&prefix).await.map_err(Side::Upstream)?;
            up.fetch_add(prefix.len() as u64, Ordering::Relaxed);
        }
        // The sniffed bytes are upstream now: free them for the life of the tunnel.
        drop(prefix);
        copy(&mut cr, &mut uw, &up, &touch, Side::Client, Side::Upstream).await
    };
    let downward = copy(&mut ur, &mut cw, &down, &touch, Side::Upstream, Side::Client);
    let both = async { tokio::try_join!(upward, downward) };
    let watchdog = async {
        loop {
            let idle_for = started.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
            if idle_for >= idle {
                return;
            }
            tokio::time::sleep(idle - idle_for).await;
        }
    };
    let end = tokio::select! {
        r = both => match r {
            Ok(_) => End::Done,
            Err(Side::Client(e)) => End::ClientError(e.to_string()),
            Err(Side::Upstream(e)) => End::UpstreamError(e.to_string()),
        },
        () = watchdog => End::Idle,
    };
    Relayed { up: up.load(Ordering::Relaxed), down: down.load(Ordering::Relaxed), end }
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
    async fn idle_timeout() {
        let (_client, client_side) = pair().await;
        let (upstream_side, _server) = pair().await;
        let r = relay(client_side, upstream_side, bytes::Bytes::new(), Duration::from_millis(100)).await;
        assert_eq!(r.end, End::Idle);
    }
}
