//! The explicit proxy listener: `CONNECT host:port` tunnels and absolute-form plain HTTP
//! requests, served by hyper on one keep-alive connection.
//!
//! This phase owns the CONNECT exchange: decide on the CONNECT host (deny → `403` before any
//! tunnel), connect upstream (failures → `502`/`504`, so the client learns before it starts
//! TLS), answer `200`, then sniff the tunnel like a redirected connection and hand it to
//! [`crate::tunnel`] or [`crate::http`]. Absolute-form requests go straight to
//! [`crate::http`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use hostgate_matcher::Host;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::access::Access;
use crate::config::ListenerKind;
use crate::gateway::{Shared, Slot};
use crate::http::{refuse, Conn, Mode, ResBody};
use crate::io::Prefixed;
use crate::outcome::{Failure, Outcome};
use crate::policy::{Action, Query, Scheme};
use crate::sniff::{sniff, Sniffed};
use crate::tunnel::{self, Dest};
use crate::upstream::Target;

/// Serves one client connection of a connect listener.
///
/// Until the client sends its first byte the connection costs its socket and this future's few
/// hundred bytes: hyper's connection (its 8 KiB read buffer, its state) is built when there is
/// something to read, in a box, so that thousands of connections that never send hold almost
/// nothing. The first request head must be complete within `sniff.timeout` of the accept, the
/// wait for the first byte included; later heads get hyper's header timeout of the same length.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    slot: Slot,
    stream: TcpStream,
    client: SocketAddr,
    listener: SocketAddr,
) {
    let deadline = tokio::time::Instant::now() + shared.sniff.timeout;
    let readable = crate::io::first_byte(&stream, deadline).await;
    Box::pin(serve_readable(shared, slot, stream, client, listener, deadline, readable)).await;
}

async fn serve_readable(
    shared: Arc<Shared>,
    slot: Slot,
    stream: TcpStream,
    client: SocketAddr,
    listener: SocketAddr,
    deadline: tokio::time::Instant,
    readable: bool,
) {
    let mut template = Access::new(listener, ListenerKind::Connect, client, shared.metrics.clone());
    template.generation = shared.generation;
    let conn = Arc::new(Conn::new(shared.clone(), template.clone(), Mode::Proxy));
    if !readable {
        conn.head_timed_out();
        return;
    }
    let header_timeout = shared.sniff.timeout;
    let proxy_conn = conn.clone();
    // Set when hyper hands over the first request head: from then on the accept's deadline no
    // longer applies (a CONNECT's upstream connect, a request being forwarded).
    let head = Arc::new(AtomicBool::new(false));
    let head_seen = head.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        head_seen.store(true, Ordering::Relaxed);
        let shared = shared.clone();
        let template = template.clone();
        let conn = proxy_conn.clone();
        let slot = slot.clone();
        async move {
            if req.method() == Method::CONNECT {
                Ok::<_, Infallible>(connect(shared, slot, template, req).await)
            } else {
                conn.handle(req).await
            }
        }
    });
    let serving = crate::http::server(header_timeout).serve_connection(TokioIo::new(stream), svc).with_upgrades();
    let first_head = async {
        tokio::time::sleep_until(deadline).await;
        if head.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = serving => conn.ended(result),
        () = first_head => conn.head_timed_out(),
    }
}

/// Answers a CONNECT request, and on success spawns the tunnel.
async fn connect(shared: Arc<Shared>, slot: Slot, mut access: Access, req: Request<Incoming>) -> Response<ResBody> {
    access.started = std::time::Instant::now();
    access.method = Some("CONNECT".to_string());
    let Some(authority) = req.uri().authority().cloned() else {
        return refuse(access, Failure::new(Outcome::BadRequest, "CONNECT without host:port"));
    };
    access.dst = Some(authority.as_str().to_string());
    let Some(port) = authority.port_u16() else {
        return refuse(access, Failure::new(Outcome::BadRequest, "CONNECT target has no port"));
    };
    let host = match Host::new(authority.host().trim_start_matches('[').trim_end_matches(']')) {
        Ok(h) => h,
        Err(e) => return refuse(access, Failure::new(Outcome::BadRequest, format!("CONNECT host: {e}"))),
    };
    access.host = Some(host.as_str().to_string());
    // The tunnel's content is not known yet: decide as TLS, or as plain HTTP on port 80. The
    // sniffed content is decided again (and must agree) before a byte goes upstream.
    let scheme = if port == 80 { Scheme::Http } else { Scheme::Https };
    let decision = crate::gateway::decide_connection(&shared, &Query { host: &host, scheme, port, path: None });
    access.decided(&shared.policy, &decision);
    if decision.action == Action::Deny {
        return refuse(access, Failure::new(Outcome::Denied, "policy"));
    }
    let (upstream, addr) =
        match shared.connector.connect(Target { name: Some(host.as_str()), port, original: None }).await {
            Ok(c) => c,
            Err(f) => return refuse(access, f),
        };
    access.upstream = Some(addr);
    access.status = Some(200);
    tokio::spawn(async move {
        // The tunnel still counts against max_connections after hyper's connection has ended,
        // and is closed with the others when a shutdown's grace period runs out.
        let serve = async move {
            match hyper::upgrade::on(req).await {
                // The client's own socket when hyper holds nothing it read past the CONNECT
                // head: a bypassed tunnel is then relayed socket to socket.
                Ok(upgraded) => match upgraded.downcast::<TokioIo<TcpStream>>() {
                    Ok(parts) if parts.read_buf.is_empty() => {
                        tunnel(shared, access, parts.io.into_inner(), host, port, upstream, addr).await
                    }
                    Ok(parts) => {
                        let client = Prefixed::new(parts.read_buf, parts.io.into_inner());
                        tunnel(shared, access, client, host, port, upstream, addr).await
                    }
                    Err(upgraded) => tunnel(shared, access, TokioIo::new(upgraded), host, port, upstream, addr).await,
                },
                Err(e) => {
                    access.fail(Outcome::ClientError, format!("CONNECT upgrade failed: {e}"));
                    access.emit();
                }
            }
        };
        tokio::select! {
            () = serve => {}
            () = slot.stopped() => {}
        }
    });
    let mut res = Response::new(Empty::new().map_err(|never: Infallible| match never {}).boxed());
    *res.status_mut() = StatusCode::OK;
    res
}

/// Sniffs an established CONNECT tunnel and hands it on.
#[allow(clippy::too_many_arguments)]
async fn tunnel<C>(
    shared: Arc<Shared>,
    mut access: Access,
    mut client: C,
    host: Host,
    port: u16,
    upstream: TcpStream,
    addr: SocketAddr,
) where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + crate::relay::IntoTcp + 'static,
{
    let mut buf = BytesMut::new();
    let started = std::time::Instant::now();
    let sniffed = sniff(&mut client, &mut buf, &shared.sniff).await;
    shared.metrics.sniff_latency(started.elapsed());
    match sniffed {
        Err(f) => tunnel::refuse(access, client, f).await,
        Ok(Sniffed::Tls(hello)) => {
            let dest = Dest::Connected { host, port, upstream, addr };
            tunnel::tls(shared, access, client, buf, hello, dest).await;
        }
        Ok(Sniffed::Unknown) => {
            let dest = Dest::Connected { host, port, upstream, addr };
            tunnel::opaque(shared, access, client, buf, dest).await;
        }
        Ok(Sniffed::Http) => {
            // Plain HTTP in the tunnel: every request is decided, and must name the CONNECT host.
            drop(upstream);
            access.upstream = None;
            let conn = Arc::new(Conn::new(shared.clone(), access, Mode::Tunnel { host, port }));
            let svc = {
                let conn = conn.clone();
                service_fn(move |req| conn.clone().handle(req))
            };
            let io = TokioIo::new(Prefixed::new(buf.freeze(), client));
            conn.ended(crate::http::server(shared.sniff.timeout).serve_connection(io, svc).await);
        }
    }
}
