//! The transparent listener: connections redirected by an iptables/nftables `REDIRECT` rule.
//!
//! This phase owns recovering the original destination (`SO_ORIGINAL_DST`, IPv4 and IPv6),
//! refusing connections that were not redirected (so the gateway never loops into itself),
//! and dispatching on what the sniffer found: TLS and unknown bytes to [`crate::tunnel`],
//! plain HTTP to [`crate::http`].

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::Arc;

use bytes::BytesMut;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use nix::sys::socket::{getsockopt, sockopt};
use tokio::net::TcpStream;

use crate::access::Access;
use crate::config::ListenerKind;
use crate::gateway::Shared;
use crate::http::{Conn, Mode};
use crate::io::Prefixed;
use crate::outcome::Outcome;
use crate::sniff::{sniff_until, Sniffed};
use crate::tunnel::{self, Dest};

/// Serves one redirected connection.
///
/// Until the client sends its first byte the connection costs its socket and this small future:
/// the sniff buffer and the rest are allocated when there is something to read, in a box. The
/// `sniff.timeout` deadline runs from the accept, the wait for the first byte included.
pub(crate) async fn serve(shared: Arc<Shared>, stream: TcpStream, client: SocketAddr, listener: SocketAddr) {
    let deadline = tokio::time::Instant::now() + shared.sniff.timeout;
    let original = original_destination(&stream, listener);
    // A connection that was not redirected is refused at once.
    let readable = original.is_err() || crate::io::first_byte(&stream, deadline).await;
    Box::pin(serve_readable(shared, stream, client, listener, original, deadline, readable)).await;
}

async fn serve_readable(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    client: SocketAddr,
    listener: SocketAddr,
    original: Result<SocketAddr, String>,
    deadline: tokio::time::Instant,
    readable: bool,
) {
    let mut access = Access::new(listener, ListenerKind::Transparent, client, shared.metrics.clone());
    access.generation = shared.generation;
    let original = match original {
        Ok(original) => original,
        Err(detail) => {
            // Not redirected: a plain close (no alert: the client may not even speak TLS).
            access.refused(Outcome::NotRedirected, detail);
            tunnel::close(stream).await;
            access.emit();
            return;
        }
    };
    access.dst = Some(original.to_string());
    // The sniff phase's duration counts from the accept.
    let accepted = deadline.into_std().checked_sub(shared.sniff.timeout).unwrap_or_else(std::time::Instant::now);
    if !readable {
        shared.metrics.sniff_latency(accepted.elapsed());
        tunnel::refuse(access, stream, crate::sniff::timed_out(&shared.sniff, 0)).await;
        return;
    }
    let mut buf = BytesMut::new();
    let sniffed = sniff_until(&mut stream, &mut buf, &shared.sniff, deadline).await;
    shared.metrics.sniff_latency(accepted.elapsed());
    match sniffed {
        Err(f) => tunnel::refuse(access, stream, f).await,
        Ok(Sniffed::Tls(hello)) => {
            tunnel::tls(shared, access, stream, buf, hello, Dest::Transparent { original }).await
        }
        Ok(Sniffed::Unknown) => tunnel::opaque(shared, access, stream, buf, Dest::Transparent { original }).await,
        Ok(Sniffed::Http) => {
            let timeout = shared.sniff.timeout;
            let conn = Arc::new(Conn::new(shared, access, Mode::Transparent { original }));
            let svc = {
                let conn = conn.clone();
                service_fn(move |req| conn.clone().handle(req))
            };
            let io = TokioIo::new(Prefixed::new(buf.freeze(), stream));
            // Boxed: hyper's connection future would make every connection's task as large.
            conn.ended(Box::pin(crate::http::server(timeout).serve_connection(io, svc)).await);
        }
    }
}

/// The destination the client asked for before the `REDIRECT`, or why there is none.
///
/// A connection that was not redirected has no NAT entry (`ENOENT`) or reports the listener's
/// own address; both are refused, so a client pointed straight at the listener cannot make the
/// gateway connect to itself. `listener` is the listening socket's address: a connection's own
/// address is that, unless the listener is bound to the unspecified address (then it is asked).
pub(crate) fn original_destination(stream: &TcpStream, listener: SocketAddr) -> Result<SocketAddr, String> {
    let local = if listener.ip().is_unspecified() {
        stream.local_addr().map_err(|e| format!("local address: {e}"))?
    } else {
        listener
    };
    // A dual-stack socket reports IPv4 clients as IPv4-mapped IPv6; their NAT entry is IPv4.
    let ipv4 = match local {
        SocketAddr::V4(_) => true,
        SocketAddr::V6(v6) => v6.ip().to_ipv4_mapped().is_some(),
    };
    let local = match local {
        SocketAddr::V6(v6) if ipv4 => v6.ip().to_ipv4_mapped().map_or(local, |ip| SocketAddr::from((ip, v6.port()))),
        _ => local,
    };
    let original = match ipv4 {
        true => getsockopt(stream, sockopt::OriginalDst).map(|sin| {
            SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            ))
        }),
        false => getsockopt(stream, sockopt::Ip6tOriginalDst).map(|sin6| {
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            ))
        }),
    }
    .map_err(|e| format!("no original destination (SO_ORIGINAL_DST: {e}); the connection was not redirected"))?;
    if original == local {
        return Err(format!(
            "original destination {original} is the listener itself; the connection was not redirected"
        ));
    }
    Ok(original)
}
