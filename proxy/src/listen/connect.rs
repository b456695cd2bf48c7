//! The explicit proxy listener: `CONNECT host:port` tunnels and absolute-form plain HTTP
//! requests, served by hyper on one keep-alive connection.
//!
//! This module owns the CONNECT exchange: decide on the CONNECT host (deny → `403` before any
//! tunnel), connect upstream (failures → `502`/`504`, so the client learns before it starts
//! TLS), answer `200`, then sniff the tunnel like a redirected connection and hand it to
//! [`crate::dispatch`]. Absolute-form requests go to the request pipeline
//! ([`crate::forward`]) like any other HTTP request.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use hostgate_matcher::Host;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::access::Dst;
use crate::conn::Conn;
use crate::dispatch::{dispatch, Dest};
use crate::forward::body::{empty, fixed};
use crate::forward::{authority_host, refusal, Pipeline, ResBody, Scope};
use crate::outcome::{Failure, Outcome};
use crate::policy::{Action, Scheme};
use crate::relay::{IntoTcp, Relay};
use crate::sniff::sniff_until;
use crate::stream::Prefixed;
use crate::upstream::Target;

/// Serves one client connection of a connect listener.
///
/// Until the client sends its first byte the connection costs its socket and this future's few
/// hundred bytes: hyper's connection (its 8 KiB read buffer, its state) is built when there is
/// something to read, in a box, so that thousands of connections that never send hold almost
/// nothing. The first request head must be complete within `sniff.timeout` of the accept, the
/// wait for the first byte included; later heads get hyper's header timeout of the same length.
pub(crate) async fn serve(conn: Conn, stream: TcpStream) {
    let readable = crate::stream::first_byte(&stream, conn.deadline).await;
    Box::pin(serve_readable(conn, stream, readable)).await;
}

async fn serve_readable(conn: Conn, stream: TcpStream, readable: bool) {
    let pipeline = Arc::new(Pipeline::new(&conn, crate::access::Access::clone(&conn.access), Scope::Proxy));
    if !readable {
        pipeline.head_timed_out();
        return;
    }
    let (header_timeout, deadline) = (conn.gen.sniff.timeout, conn.deadline);
    // Set when hyper hands over the first request head: from then on the accept's deadline no
    // longer applies (a CONNECT's upstream connect, a request being forwarded).
    let head = Arc::new(AtomicBool::new(false));
    let svc = {
        let (head, pipeline, conn) = (head.clone(), pipeline.clone(), Arc::new(conn));
        service_fn(move |req: Request<Incoming>| {
            head.store(true, Ordering::Relaxed);
            let (conn, pipeline) = (conn.clone(), pipeline.clone());
            async move {
                if req.method() == Method::CONNECT {
                    Ok::<_, Infallible>(connect(&conn, req).await)
                } else if req.uri().authority().is_none() && crate::pac::is_pac_path(req.uri().path()) {
                    Ok(pac_file(&conn, &req))
                } else {
                    pipeline.handle(req).await
                }
            }
        })
    };
    let serving = crate::forward::server(header_timeout).serve_connection(TokioIo::new(stream), svc).with_upgrades();
    let first_head = async {
        tokio::time::sleep_until(deadline).await;
        if head.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = serving => pipeline.ended(result),
        () = first_head => pipeline.head_timed_out(),
    }
}

/// Answers a CONNECT request on the proxy connection `parent` (decided by the generation in
/// force now), and on success spawns the tunnel, which keeps that generation.
async fn connect(parent: &Conn, req: Request<Incoming>) -> Response<ResBody> {
    let gen = parent.current.load();
    let mut access = parent.access.request(crate::access::Protocol::None);
    access.generation = gen.number;
    access.method = Some(Method::CONNECT);
    let deadline = tokio::time::Instant::now() + gen.sniff.timeout;
    // The client's group under the generation that decides this CONNECT.
    let group = if gen.number == parent.gen.number { parent.group } else { gen.policy.group_of(access.client.ip()) };
    access.client_group.clone_from(&gen.policy.group(group).name);
    let mut conn = Conn {
        gen,
        current: parent.current.clone(),
        slot: parent.slot.clone(),
        group,
        deadline,
        access: Box::new(access),
    };
    let (host, port, upstream, addr) = match open(&mut conn, &req).await {
        Ok(opened) => opened,
        Err(f) => {
            let mut res = refusal(&mut conn.access, f, false);
            crate::forward::signin::challenge(&conn.gen, &mut res);
            conn.finish();
            return res;
        }
    };
    conn.access.upstream = Some(addr);
    conn.access.status = Some(200);
    // The tunnel still counts against max_connections after hyper's connection has ended, and
    // is closed with the others when a shutdown's grace period runs out.
    let stop = conn.slot.clone();
    let serve = tunnel_task(Box::new(Opened {
        conn,
        req,
        dest: Dest::Connected { host: Box::new(host), port, upstream, addr },
    }));
    tokio::spawn(async move {
        tokio::select! {
            () = serve => {}
            () = stop.stopped() => {}
        }
    });
    let mut res = Response::new(empty());
    *res.status_mut() = StatusCode::OK;
    res
}

/// An origin-form `GET /proxy.pac` (or `/wpad.dat`) to the proxy itself: the PAC file of the
/// client's group (or `?group=NAME`'s) from the generation in force. Every other origin-form
/// request is refused by the pipeline.
fn pac_file(conn: &Conn, req: &Request<Incoming>) -> Response<ResBody> {
    let gen = conn.current.load();
    let group = if gen.number == conn.gen.number { conn.group } else { gen.policy.group_of(conn.access.client.ip()) };
    fixed(crate::pac::respond(gen.pac.as_deref(), req.method(), req.uri(), req.headers(), group))
}

/// A CONNECT answered `200`: its context, the request (for the upgrade) and its connected
/// upstream. Boxed into [`tunnel_task`], so that the tunnel's task does not keep a second copy
/// of them beside the relay for its whole life.
struct Opened {
    conn: Conn,
    req: Request<Incoming>,
    dest: Dest,
}

/// A CONNECT tunnel's task: the upgrade, the sniff and the dispatch run boxed and are freed
/// when the relay starts on a task of its own ([`Relay::spawn`]), so an open tunnel keeps only
/// the relay's state.
async fn tunnel_task(opened: Box<Opened>) {
    let Opened { conn, req, dest } = *opened;
    if let Some(relay) = Box::pin(upgraded(conn, req, dest)).await {
        relay.spawn();
    }
}

/// Waits for hyper to hand over the CONNECT's connection, then sniffs and dispatches it. The
/// client's own socket, when hyper holds nothing it read past the CONNECT head, comes back as
/// a [`Relay`] to run socket to socket; the rarer kinds of stream are relayed here.
async fn upgraded(mut conn: Conn, req: Request<Incoming>, dest: Dest) -> Option<Relay<TcpStream>> {
    match hyper::upgrade::on(req).await {
        Ok(upgraded) => match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) if parts.read_buf.is_empty() => tunnel(conn, parts.io.into_inner(), dest).await,
            Ok(parts) => {
                let client = Prefixed::new(parts.read_buf, parts.io.into_inner());
                if let Some(relay) = tunnel(conn, client, dest).await {
                    relay.spawn();
                }
                None
            }
            Err(upgraded) => {
                if let Some(relay) = tunnel(conn, TokioIo::new(upgraded), dest).await {
                    relay.spawn();
                }
                None
            }
        },
        Err(e) => {
            conn.failed(Outcome::ClientError, format!("CONNECT upgrade failed: {e}"));
            None
        }
    }
}

/// Checks a CONNECT's target, decides it (as TLS, or as plain HTTP on port 80: the tunnel's
/// content is decided again, and must agree, before a byte goes upstream) and connects
/// upstream.
async fn open(
    conn: &mut Conn,
    req: &Request<Incoming>,
) -> Result<(Host, u16, TcpStream, std::net::SocketAddr), Failure> {
    let Some(authority) = req.uri().authority().cloned() else {
        return Err(Failure::new(Outcome::BadRequest, "CONNECT without host:port"));
    };
    conn.access.dst = Some(Dst::Authority(authority.clone()));
    let Some(port) = authority.port_u16() else {
        return Err(Failure::new(Outcome::BadRequest, "CONNECT target has no port"));
    };
    let host =
        authority_host(&authority).map_err(|e| Failure::new(Outcome::BadRequest, format!("CONNECT host: {e}")))?;
    conn.access.host = Some(host.as_str().to_string());
    let scheme = if port == 80 { Scheme::Http } else { Scheme::Https };
    // A name decides by the name rules; an IP literal by the address rules.
    let gen = conn.gen.clone();
    let decide = |group| gen.decide_target(Some(&host), None, Some(scheme), port, None, group, true);
    // Who asks: a signed-in user may be needed, and may select another group.
    match crate::forward::signin::gate(&gen, req.headers(), conn.access.client.ip(), conn.group, decide).await {
        Ok(passed) => {
            conn.access.user = passed.identity.map(|id| id.user.clone());
            if passed.group != conn.group {
                conn.group = passed.group;
                conn.access.client_group.clone_from(&gen.policy.group(passed.group).name);
            }
        }
        Err(refused) => {
            conn.access.decided(&refused.decision);
            return Err(refused.failure);
        }
    }
    let decision = decide(conn.group);
    conn.access.decided(&decision);
    if decision.action == Action::Deny {
        return Err(Failure::new(Outcome::Denied, "policy"));
    }
    let (upstream, addr) = conn
        .gen
        .connector
        .connect(Target { name: Some(host.as_str()), port, original: None, group: conn.group })
        .await?;
    Ok((host, port, upstream, addr))
}

/// Sniffs an established CONNECT tunnel (within `sniff.timeout` from now) and dispatches it;
/// hands back what is to be relayed.
async fn tunnel<C>(mut conn: Conn, mut client: C, dest: Dest) -> Option<Relay<C>>
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + IntoTcp + 'static,
{
    let mut buf = BytesMut::new();
    let started = std::time::Instant::now();
    conn.deadline = tokio::time::Instant::now() + conn.gen.sniff.timeout;
    let sniffed = sniff_until(&mut client, &mut buf, &conn.gen.sniff, conn.deadline).await;
    conn.gen.metrics.sniff_latency(started.elapsed());
    dispatch(conn, client, buf, sniffed, dest).await
}
