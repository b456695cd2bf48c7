//! The SNI listener (`kind = "sni"`): connections addressed to the gateway itself, as a site
//! that steers names to the gateway with DNS makes them (sniproxy's deployment, nginx's
//! `ssl_preread`). There is no original destination to recover: the connection is sniffed,
//! decided on the SNI (TLS) or the `Host` (HTTP), and connected to the **name**, resolved by the
//! gateway, on the listener's `upstream_port` (its own port by default).
//!
//! This module owns only the accept-side difference from the transparent listener (no
//! `SO_ORIGINAL_DST`, no "not redirected" refusal) and the loop guard; what was sniffed goes to
//! [`crate::dispatch`] like any other connection.

use tokio::net::TcpStream;

use crate::conn::Conn;
use crate::dispatch::Dest;
use crate::relay::Relay;

/// Serves one connection of an SNI listener. As on the transparent listener, until the client
/// sends its first byte the connection costs its socket and this small future.
pub(crate) async fn serve(conn: Conn, stream: TcpStream) {
    let early = crate::stream::early_bytes(&stream);
    let readable = early.is_some() || crate::stream::first_byte(&stream, conn.deadline).await;
    if let Some(relay) = Box::pin(serve_readable(conn, stream, readable, early)).await {
        relay.spawn();
    }
}

async fn serve_readable(
    conn: Conn,
    stream: TcpStream,
    readable: bool,
    early: Option<bytes::BytesMut>,
) -> Option<Relay<TcpStream>> {
    // The gateway's own address as this client reached it: an upstream that resolves to it
    // would loop back into the gateway.
    let local = stream.local_addr().ok();
    let port = conn.listener().upstream_port;
    crate::dispatch::sniff_and_dispatch(conn, stream, readable, early, Dest::Steered { port, local }).await
}
