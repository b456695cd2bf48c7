//! The transparent listener: connections redirected by an iptables/nftables `REDIRECT` rule.
//!
//! This module owns recovering the original destination (`SO_ORIGINAL_DST`, IPv4 and IPv6),
//! refusing connections that were not redirected (so the gateway never loops into itself), and
//! the sniff under the deadline set at the accept; what was sniffed goes to
//! [`crate::dispatch`].

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use bytes::BytesMut;
use nix::sys::socket::{getsockopt, sockopt};
use tokio::net::TcpStream;

use crate::access::Dst;
use crate::conn::Conn;
use crate::dispatch::Dest;
use crate::outcome::{Failure, Outcome};
use crate::relay::{refuse, Relay};

/// Serves one redirected connection.
///
/// Until the client sends its first byte the connection costs its socket and this small future:
/// the sniff buffer and the rest are allocated when there is something to read, in a box. The
/// `sniff.timeout` deadline runs from the accept, the wait for the first byte included.
pub(crate) async fn serve(conn: Conn, stream: TcpStream) {
    let original = original_destination(&stream, conn.listener().local);
    // A connection that was not redirected is refused at once. The client's first bytes are
    // usually there already; otherwise wait for them.
    let early = if original.is_ok() { crate::stream::early_bytes(&stream) } else { None };
    let readable = original.is_err() || early.is_some() || crate::stream::first_byte(&stream, conn.deadline).await;
    // The phases before the relay run boxed and hand back what is to be relayed, which runs on a
    // task of its own: an open tunnel keeps only the relay's state.
    if let Some(relay) = Box::pin(serve_readable(conn, stream, original, readable, early)).await {
        relay.spawn();
    }
}

async fn serve_readable(
    mut conn: Conn,
    stream: TcpStream,
    original: Result<SocketAddr, String>,
    readable: bool,
    early: Option<BytesMut>,
) -> Option<Relay<TcpStream>> {
    let original = match original {
        Ok(original) => original,
        // Not redirected: a plain close (no alert: the client may not even speak TLS).
        Err(detail) => {
            refuse(conn, stream, Failure::new(Outcome::NotRedirected, detail), false).await;
            return None;
        }
    };
    conn.access.dst = Some(Dst::Addr(original));
    crate::dispatch::sniff_and_dispatch(conn, stream, readable, early, Dest::Transparent { original }).await
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
