//! An inspected TLS connection: the upstream handshake, then the client's with a leaf minted
//! for the name, then the HTTP inside served by the request pipeline until the client is done;
//! and the connection's own record at the end.
//!
//! This module owns the order of the two handshakes (upstream first, so that the client is
//! offered exactly the protocol the upstream picked), the client handshake's deadline, the
//! check that the bytes inside are HTTP (a client that offered no ALPN), the relay of a
//! terminated connection that is not HTTP (`inspect.non_http`), and the idle watchdog of the
//! session. It does not decide whether a connection is inspected ([`crate::dispatch`]), mint
//! or verify certificates ([`crate::inspect`]) or decide requests ([`crate::forward`]).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::access::Inspection;
use crate::config::NonHttp;
use crate::conn::Conn;
use crate::forward::{handshake, Pipeline, Scope, TlsUpstream, MAX_HEAD};
use crate::inspect::{client_handshake_failure, H2, HTTP11};
use crate::outcome::{close, Failure, Outcome};
use crate::relay::{refuse, IntoTcp, Relay};
use crate::sniff::{sniff, Sniffed};
use crate::stream::{Counting, Meter, Prefixed};

type ClientTls<C> = tokio_rustls::server::TlsStream<Counting<Prefixed<C>>>;
type UpstreamTls = tokio_rustls::client::TlsStream<TcpStream>;

/// Inspects an allowed TLS connection for `scope`'s name whose upstream TCP connection is open:
/// the upstream handshake offering `alpn`, then the client's, then HTTP inside.
pub(crate) async fn intercept<C>(
    mut conn: Conn,
    client: C,
    buf: BytesMut,
    alpn: Vec<Vec<u8>>,
    scope: Scope,
    tcp: TcpStream,
) where
    C: AsyncRead + AsyncWrite + Unpin + Send + IntoTcp + 'static,
{
    conn.access.inspection = Some(Inspection::Inspected);
    let Scope::Inspected { name, .. } = &scope else {
        return refuse(conn, client, Failure::new(Outcome::Internal, "inspection without a name"), false).await;
    };
    let Some(inspector) = conn.gen.inspect.clone() else {
        return refuse(conn, client, Failure::new(Outcome::Internal, "inspection is off"), false).await;
    };
    let leaf = match inspector.leaf(name).await {
        Ok(leaf) => leaf,
        Err(f) => {
            let alert = f.outcome.tls_alert();
            return refuse(conn, client, f, alert).await;
        }
    };
    let timeout = conn.gen.connector.connect_timeout();
    let upstream_tls = inspector.connect_upstream(tcp, name, alpn.clone(), timeout).await;
    // Offer the client what the upstream chose; after an upstream failure, what the client
    // asked for, so that the 502 page can be served in its protocol.
    let client_alpn = match &upstream_tls {
        Ok(tls) => tls.get_ref().1.alpn_protocol().map(|p| vec![p.to_vec()]).unwrap_or_default(),
        Err(_) => alpn,
    };
    let config = match inspector.server_config(leaf, client_alpn) {
        Ok(c) => c,
        Err(f) => {
            let alert = f.outcome.tls_alert();
            return refuse(conn, client, f, alert).await;
        }
    };
    let meter = Arc::new(Meter::default());
    let client = Counting::new(Prefixed::new(buf.freeze(), client), meter.clone());
    let deadline = conn.gen.sniff.timeout;
    let accepted = tokio::time::timeout(deadline, tokio_rustls::TlsAcceptor::from(config).accept(client)).await;
    let client_tls = match accepted {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            conn.access.bytes_up = meter.up();
            conn.access.bytes_down = meter.down();
            return conn.refused(client_handshake_failure(&e));
        }
        Err(_) => {
            conn.access.bytes_up = meter.up();
            conn.access.bytes_down = meter.down();
            let detail = format!("client TLS handshake not done within {} ms", deadline.as_millis());
            return conn.refused(Failure::new(Outcome::Timeout, detail));
        }
    };
    serve(conn, client_tls, meter, scope, inspector, upstream_tls).await;
}

/// Serves an inspected connection after both handshakes (the upstream's may have failed: every
/// request then gets a `502` naming why), then emits the connection's record.
async fn serve<C>(
    mut conn: Conn,
    mut client: ClientTls<C>,
    meter: Arc<Meter>,
    scope: Scope,
    inspector: Arc<crate::inspect::Inspector>,
    upstream_tls: Result<UpstreamTls, Failure>,
) where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let client_h2 = client.get_ref().1.alpn_protocol() == Some(H2);
    let mut prefix = BytesMut::new();
    if client.get_ref().1.alpn_protocol().is_none() {
        // No ALPN: HTTP/1 is assumed, but the first bytes must show it.
        let sniffed = sniff(&mut client, &mut prefix, &conn.gen.sniff).await;
        if !matches!(sniffed, Ok(Sniffed::Http)) {
            let why = match sniffed {
                Err(f) => f.detail,
                Ok(_) => "the bytes inside the TLS session are not an HTTP request".into(),
            };
            return non_http(conn, client, prefix.freeze(), meter, upstream_tls, why.into_owned()).await;
        }
    }
    let client = Prefixed::new(prefix.freeze(), client);
    let (first, failure) = match upstream_tls {
        Ok(tls) => match handshake(tls).await {
            Ok(sender) => (conn.access.upstream.map(|addr| (sender, addr)), None),
            Err(f) => (None, Some(f)),
        },
        Err(f) => (None, Some(f)),
    };
    let alpn = if client_h2 { vec![H2.to_vec(), HTTP11.to_vec()] } else { vec![HTTP11.to_vec()] };
    let tls = TlsUpstream { inspector, alpn, failure: failure.clone() };
    let pipeline = Arc::new(Pipeline::inspected(&conn, crate::access::Access::clone(&conn.access), scope, tls, first));
    let svc = {
        let pipeline = pipeline.clone();
        service_fn(move |req| pipeline.clone().handle(req))
    };
    let io = TokioIo::new(client);
    let served = async {
        if client_h2 {
            let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            b.timer(TokioTimer::new()).max_header_list_size(MAX_HEAD as u32);
            b.serve_connection(io, svc).await
        } else {
            crate::forward::server(conn.gen.sniff.timeout).serve_connection(io, svc).await
        }
    };
    let idle = conn.gen.idle_timeout;
    let end = tokio::select! {
        r = served => r.err().map(|e| Failure::new(Outcome::ClientError, format!("client connection: {e}"))),
        () = meter.idle(idle) => Some(Failure::new(Outcome::IdleTimeout, format!("no bytes for {} ms", idle.as_millis()))),
    };
    conn.access.requests = Some(pipeline.requests());
    // The requests' records count their bodies in `hostgate_bytes_total`; these are TLS bytes.
    conn.access.bytes_in_metrics = false;
    conn.access.bytes_up = meter.up();
    conn.access.bytes_down = meter.down();
    match failure.or(end) {
        Some(f) => conn.failed(f.outcome, f.detail),
        None => conn.finish(),
    }
}

/// An allowed TLS connection that turned out not to carry HTTP: relayed between the two TLS
/// sessions or refused, per `inspect.non_http`.
async fn non_http<C>(
    mut conn: Conn,
    client: ClientTls<C>,
    prefix: Bytes,
    meter: Arc<Meter>,
    upstream_tls: Result<UpstreamTls, Failure>,
    why: String,
) where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let relay = conn.gen.inspect.as_ref().is_some_and(|i| i.config().non_http == NonHttp::Relay);
    match upstream_tls {
        Ok(upstream) if relay => {
            // The bytes logged are the decrypted ones relayed between the two sessions.
            conn.access.inspection = Some(Inspection::InspectedRelay);
            conn.access.detail = Some(why.into());
            Relay { conn, client, upstream, prefix }.run().await;
        }
        Err(f) if relay => {
            close(client).await;
            conn.access.bytes_up = meter.up();
            conn.access.bytes_down = meter.down();
            conn.refused(f);
        }
        _ => {
            close(client).await;
            conn.access.bytes_up = meter.up();
            conn.access.bytes_down = meter.down();
            conn.refused(Failure::new(Outcome::UnknownProtocol, format!("{why}; inspect.non_http = \"deny\"")));
        }
    }
}
