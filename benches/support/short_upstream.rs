//! The short upstream of the connection-rate and allocation benches: reads the client's first
//! TLS record, answers `len` bytes and closes. Included with `#[path]`.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Starts it on `127.0.0.1:0` on the current runtime; its address.
pub(crate) async fn short_upstream(len: usize) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind short upstream");
    let addr = l.local_addr().expect("short upstream addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.set_nodelay(true);
                let mut head = [0u8; 5];
                if s.read_exact(&mut head).await.is_err() {
                    return;
                }
                let mut record = vec![0u8; usize::from(u16::from_be_bytes([head[3], head[4]]))];
                if s.read_exact(&mut record).await.is_err() {
                    return;
                }
                let _ = s.write_all(&vec![0x17; len]).await;
            });
        }
    });
    addr
}
