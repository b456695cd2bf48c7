//! A parent proxy (`[upstream] parent`): every upstream connection is a `CONNECT` through it,
//! for tunnels and plain HTTP alike (as smokescreen, g3proxy's escapers and Squid's
//! `cache_peer` do). The gateway has decided already; the parent may refuse on its own.
//!
//! This module owns the exchange with the parent: the connect (each of its addresses within the
//! connect timeout), `CONNECT authority` with `Proxy-Authorization: Basic` when credentials are
//! configured (never logged), and its answer: `2xx` opens the tunnel (the stream is handed back
//! positioned after the answer's head, nothing of the tunnel consumed), anything else is
//! `parent-refused`, and a parent that cannot be reached or answers nothing is
//! `parent-unreachable`.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::ParentProxy;
use crate::metrics::Metrics;
use crate::outcome::{Failure, Outcome};

/// The most bytes of the parent's answer head read.
const MAX_HEAD: usize = 16 * 1024;

/// A configured parent.
pub(crate) struct Parent {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `host:port`, as logged.
    pub(crate) authority: String,
    /// `Proxy-Authorization: Basic …\r\n`, or nothing.
    authorization: String,
}

impl std::fmt::Debug for Parent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parent").field("authority", &self.authority).finish_non_exhaustive()
    }
}

impl Parent {
    pub(crate) fn new(p: &ParentProxy) -> Parent {
        let authorization = p.credentials.as_ref().map_or_else(String::new, |c| {
            format!("Proxy-Authorization: Basic {}\r\n", base64::engine::general_purpose::STANDARD.encode(c))
        });
        Parent { host: p.host.clone(), port: p.port, authority: p.authority(), authorization }
    }

    /// Opens a tunnel to `authority` through the parent at one of `addrs`.
    pub(crate) async fn connect(
        &self,
        addrs: &[SocketAddr],
        authority: &str,
        timeout: Duration,
        metrics: &Metrics,
    ) -> Result<(TcpStream, SocketAddr), Failure> {
        let mut last = Failure::new(Outcome::ParentUnreachable, format!("parent {}: no address", self.authority));
        for &addr in addrs {
            let started = std::time::Instant::now();
            let result = tokio::time::timeout(timeout, TcpStream::connect(addr)).await;
            metrics.upstream_connect(started.elapsed(), matches!(result, Ok(Ok(_))));
            let mut stream = match result {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    last = Failure::new(Outcome::ParentUnreachable, format!("parent {} ({addr}): {e}", self.authority));
                    continue;
                }
                Err(_) => {
                    last = Failure::new(
                        Outcome::ParentUnreachable,
                        format!("parent {} ({addr}): no answer within {} ms", self.authority, timeout.as_millis()),
                    );
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let request = format!(
                "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{}User-Agent: hostgate\r\n\r\n",
                self.authorization
            );
            let exchange = async {
                stream.write_all(request.as_bytes()).await?;
                read_head(&mut stream).await
            };
            return match tokio::time::timeout(timeout, exchange).await {
                Ok(Ok(Some((status, _)))) if (200..300).contains(&status) => Ok((stream, addr)),
                Ok(Ok(Some((status, reason)))) => Err(Failure::new(
                    Outcome::ParentRefused,
                    format!("parent {} answered CONNECT {authority} with {status} {reason}", self.authority),
                )),
                Ok(Ok(None)) => Err(Failure::new(
                    Outcome::ParentRefused,
                    format!("parent {}: not an HTTP answer to CONNECT {authority}", self.authority),
                )),
                Ok(Err(e)) => {
                    Err(Failure::new(Outcome::ParentUnreachable, format!("parent {} ({addr}): {e}", self.authority)))
                }
                Err(_) => Err(Failure::new(
                    Outcome::ParentUnreachable,
                    format!("parent {}: no answer to CONNECT within {} ms", self.authority, timeout.as_millis()),
                )),
            };
        }
        Err(last)
    }
}

/// Reads the parent's answer head, and nothing after it (the tunnel's first bytes stay in the
/// socket): the status and its reason, or `None` for something that is not an HTTP answer.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<(u16, String)>> {
    let mut buf = vec![0u8; MAX_HEAD];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before answering"));
        }
        if let Some(end) = buf[..n].windows(4).position(|w| w == b"\r\n\r\n") {
            let mut head = vec![0u8; end + 4];
            stream.read_exact(&mut head).await?;
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut res = httparse::Response::new(&mut headers);
            return Ok(match res.parse(&head) {
                Ok(httparse::Status::Complete(_)) => {
                    res.code.map(|c| (c, res.reason.unwrap_or("").chars().filter(|c| !c.is_control()).collect()))
                }
                _ => None,
            });
        }
        if n == MAX_HEAD {
            return Ok(None);
        }
        // The head is not all here yet: wait a moment (a peek does not consume readiness).
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
