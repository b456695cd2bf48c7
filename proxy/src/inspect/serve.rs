//! HTTP inside an inspected connection: HTTP/1.1 or HTTP/2 served by hyper on the client's TLS
//! session, each request decided on its own (scheme `https`, the port, the path, the
//! `:authority`/Host), then forwarded on the upstream TLS session with the response streamed
//! back.
//!
//! This module owns the per-request checks (a Host other than the SNI is domain fronting,
//! refused unless a rule allows that host on its own; the port must be the connection's), the
//! upstream HTTP connection (re-established when the upstream closes it), the `403`/`502` pages,
//! one access event per request and the connection's own event at the end. The TLS handshakes
//! are done before it runs (see [`super::intercept`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hostgate_matcher::Host;
use http::header::{self, HeaderValue};
use http::{Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::{Inspector, Upstream, H2, HTTP11};
use crate::access::Access;
use crate::config::NonHttp;
use crate::gateway::Shared;
use crate::http::{
    exchange, head_fits, host_header, no_userinfo, refuse, refuse_explained, remove_hop_by_hop, same_authority,
    Counted, Logged, ResBody,
};
use crate::io::{Counters, Prefixed};
use crate::outcome::{Failure, Outcome};
use crate::policy::{Action, Query, Scheme};
use crate::sniff::{sniff, Sniffed};
use crate::upstream::Target;

type ClientTls<C> = tokio_rustls::server::TlsStream<C>;
type UpstreamTls = tokio_rustls::client::TlsStream<TcpStream>;

/// Serves an inspected connection after both handshakes (the upstream's may have failed: every
/// request then gets a `502` naming why), then logs the connection.
pub(super) async fn serve<C>(
    shared: Arc<Shared>,
    inspector: Arc<Inspector>,
    mut access: Access,
    mut client: ClientTls<C>,
    counters: Counters,
    upstream: Upstream,
    upstream_tls: Result<UpstreamTls, Failure>,
) where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let client_h2 = client.get_ref().1.alpn_protocol() == Some(H2);
    let mut prefix = BytesMut::new();
    if client.get_ref().1.alpn_protocol().is_none() {
        // No ALPN: HTTP/1 is assumed, but the first bytes must show it.
        let sniffed = sniff(&mut client, &mut prefix, &shared.sniff).await;
        if !matches!(sniffed, Ok(Sniffed::Http)) {
            let why = match &sniffed {
                Err(f) => f.detail.clone(),
                Ok(_) => "the bytes inside the TLS session are not an HTTP request".to_string(),
            };
            return non_http(&shared, access, client, prefix.freeze(), counters, upstream_tls, why).await;
        }
    }
    let client = Prefixed::new(prefix.freeze(), client);

    let mut session = Session {
        shared: shared.clone(),
        inspector,
        template: access.clone(),
        upstream,
        alpn: if client_h2 { vec![H2.to_vec(), HTTP11.to_vec()] } else { vec![HTTP11.to_vec()] },
        failure: None,
        sender: Mutex::new(None),
        requests: AtomicU64::new(0),
    };
    session.template.protocol = Some("https");
    session.template.bytes_in_metrics = true;
    match upstream_tls {
        Ok(tls) => match handshake(tls).await {
            Ok(sender) => *session.sender.get_mut() = Some(sender),
            Err(f) => session.failure = Some(f),
        },
        Err(f) => session.failure = Some(f),
    }
    let session = Arc::new(session);
    let svc = {
        let session = session.clone();
        service_fn(move |req| session.clone().handle(req))
    };
    let io = TokioIo::new(client);
    let served = async {
        if client_h2 {
            let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            b.timer(TokioTimer::new()).max_header_list_size(crate::http::MAX_HEAD as u32);
            b.serve_connection(io, svc).await
        } else {
            crate::http::server(shared.sniff.timeout).serve_connection(io, svc).await
        }
    };
    let idle = shared.idle_timeout;
    let watchdog = async {
        loop {
            let idle_for = counters.idle_for();
            if idle_for >= idle {
                return;
            }
            tokio::time::sleep(idle - idle_for).await;
        }
    };
    let end = tokio::select! {
        r = served => r.err().map(|e| Failure::new(Outcome::ClientError, format!("client connection: {e}"))),
        () = watchdog => Some(Failure::new(Outcome::IdleTimeout, format!("no bytes for {} ms", idle.as_millis()))),
    };
    access.requests = Some(session.requests.load(Ordering::Relaxed));
    // The requests' events count their bodies in `hostgate_bytes_total`; these are TLS bytes.
    access.bytes_in_metrics = false;
    access.bytes_up = counters.up();
    access.bytes_down = counters.down();
    if let Some(f) = session.failure.clone().or(end) {
        access.fail(f.outcome, f.detail);
    }
    access.emit();
}

/// An allowed TLS connection that turned out not to carry HTTP: relayed between the two TLS
/// sessions or refused, per `inspect.non_http`.
async fn non_http<C>(
    shared: &Shared,
    mut access: Access,
    client: ClientTls<C>,
    prefix: Bytes,
    counters: Counters,
    upstream_tls: Result<UpstreamTls, Failure>,
    why: String,
) where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let relay = shared.inspect.as_ref().is_some_and(|i| i.config().non_http == NonHttp::Relay);
    match upstream_tls {
        Ok(upstream) if relay => {
            // The bytes logged are the decrypted ones relayed between the two sessions.
            access.inspection = Some("inspected-relay");
            access.detail = Some(why);
            crate::tunnel::finish_relay(shared, access, client, upstream, prefix).await;
        }
        Err(f) if relay => {
            crate::tunnel::close(client).await;
            access.bytes_up = counters.up();
            access.bytes_down = counters.down();
            access.refused(f.outcome, f.detail);
            access.emit();
        }
        _ => {
            crate::tunnel::close(client).await;
            access.bytes_up = counters.up();
            access.bytes_down = counters.down();
            access.refused(Outcome::UnknownProtocol, format!("{why}; inspect.non_http = \"deny\""));
            access.emit();
        }
    }
}

/// The upstream side of an inspected connection: an HTTP/1.1 or HTTP/2 client connection.
enum Sender {
    H1(http1::SendRequest<Counted>),
    H2(http2::SendRequest<Counted>),
}

/// The HTTP client handshake on an upstream TLS session, by the protocol it negotiated.
async fn handshake(tls: UpstreamTls) -> Result<Sender, Failure> {
    let h2 = tls.get_ref().1.alpn_protocol() == Some(H2);
    let io = TokioIo::new(tls);
    let failed = |e: hyper::Error| Failure::new(Outcome::UpstreamError, format!("HTTP handshake: {e}"));
    if h2 {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake::<_, Counted>(io)
            .await
            .map_err(failed)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
            }
        });
        Ok(Sender::H2(sender))
    } else {
        let (sender, conn) =
            http1::Builder::new().preserve_header_case(true).handshake::<_, Counted>(io).await.map_err(failed)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/1 connection ended");
            }
        });
        Ok(Sender::H1(sender))
    }
}

/// One inspected connection's state.
struct Session {
    shared: Arc<Shared>,
    inspector: Arc<Inspector>,
    /// The per-request access record template.
    template: Access,
    upstream: Upstream,
    /// What to offer the upstream when reconnecting: the client side's protocol first.
    alpn: Vec<Vec<u8>>,
    /// The upstream handshake failed: every request is answered with this.
    failure: Option<Failure>,
    sender: Mutex<Option<Sender>>,
    requests: AtomicU64,
}

impl Session {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<ResBody>, Infallible> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut access = self.template.clone();
        access.started = Instant::now();
        access.method = Some(req.method().as_str().to_string());
        let path = req.uri().path_and_query().map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
        let path = if path.is_empty() || !path.starts_with('/') { "/".to_string() } else { path };
        access.path = Some(path.clone());
        if let Err(f) = head_fits(&req) {
            return Ok(refuse(access, f));
        }
        let (host, authority) = match self.target(&req) {
            Ok(t) => t,
            Err(f) => return Ok(refuse(access, f)),
        };
        access.host = Some(host.as_str().to_string());
        let name = &self.upstream.name;
        let fronted = host.as_str() != name.as_str();
        let decision = crate::gateway::decide(
            &self.shared,
            &Query { host: &host, scheme: Scheme::Https, port: self.upstream.port, path: Some(&path) },
        );
        access.decided(&self.shared.policy, &decision);
        if fronted && (decision.rule.is_none() || decision.action == Action::Deny) {
            let detail = format!(
                "domain fronting: Host {} on a connection for {}, and no rule allows {} on its own",
                host.as_str(),
                name.as_str(),
                host.as_str()
            );
            return Ok(refuse(access, Failure::new(Outcome::Fronting, detail)));
        }
        if decision.action == Action::Deny {
            return Ok(refuse(access, Failure::new(Outcome::Denied, "policy")));
        }
        if let Some(f) = &self.failure {
            return Ok(refuse_explained(access, f.clone()));
        }
        Ok(self.forward(req, &authority, &path, access).await)
    }

    /// The request's host (the `:authority`, or Host) and authority text; they must agree with
    /// each other and the port with the connection's.
    fn target(&self, req: &Request<Incoming>) -> Result<(Host, String), Failure> {
        let host_header = host_header(req.headers())?;
        let port = self.upstream.port;
        let authority = match (req.uri().authority(), &host_header) {
            (Some(u), Some(h)) => {
                if !same_authority(u, h, port) {
                    return Err(Failure::new(Outcome::Mismatch, "Host header disagrees with the request's authority"));
                }
                u.clone()
            }
            (Some(u), None) => u.clone(),
            (None, Some(h)) => h.clone(),
            (None, None) => return Err(Failure::new(Outcome::BadRequest, "no Host header")),
        };
        no_userinfo(&authority)?;
        if authority.port_u16().unwrap_or(port) != port {
            return Err(Failure::new(Outcome::Mismatch, "request port differs from the connection's port"));
        }
        let host = Host::new(authority.host().trim_start_matches('[').trim_end_matches(']'))
            .map_err(|e| Failure::new(Outcome::BadRequest, format!("request host: {e}")))?;
        Ok((host, authority.as_str().to_string()))
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        authority: &str,
        path: &str,
        mut access: Access,
    ) -> Response<ResBody> {
        let (mut parts, body) = req.into_parts();
        let client_version = parts.version;
        let up_count = Arc::new(AtomicU64::new(0));
        let body = Counted::new(body, up_count.clone());
        remove_hop_by_hop(&mut parts.headers);
        parts.headers.append(header::VIA, via(client_version));

        let mut slot = self.sender.lock().await;
        let usable = match slot.as_mut() {
            Some(Sender::H1(s)) => s.ready().await.is_ok(),
            Some(Sender::H2(s)) => !s.is_closed() && s.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            *slot = None;
            match self.reconnect().await {
                Ok((sender, addr)) => {
                    *slot = Some(sender);
                    access.upstream = Some(addr);
                }
                Err(f) => return refuse(access, f),
            }
        }
        let result = match slot.as_mut() {
            Some(Sender::H1(s)) => {
                parts.uri = match path.parse::<Uri>() {
                    Ok(u) => u,
                    Err(_) => return refuse(access, Failure::new(Outcome::BadRequest, "request path")),
                };
                if let Ok(v) = HeaderValue::from_str(authority) {
                    parts.headers.insert(header::HOST, v);
                }
                parts.version = Version::HTTP_11;
                exchange(s.send_request(Request::from_parts(parts, body)), self.shared.idle_timeout).await
            }
            Some(Sender::H2(s)) => {
                parts.uri = match format!("https://{authority}{path}").parse::<Uri>() {
                    Ok(u) => u,
                    Err(_) => return refuse(access, Failure::new(Outcome::BadRequest, "request path")),
                };
                parts.headers.remove(header::HOST);
                parts.version = Version::HTTP_2;
                // HTTP/2 multiplexes: send without holding the connection.
                let fut = s.send_request(Request::from_parts(parts, body));
                drop(slot);
                exchange(fut, self.shared.idle_timeout).await
            }
            None => return refuse(access, Failure::new(Outcome::UpstreamError, "no upstream connection")),
        };
        match result {
            Ok(res) => {
                let (mut parts, body) = res.into_parts();
                remove_hop_by_hop(&mut parts.headers);
                parts.headers.append(header::VIA, via(client_version));
                parts.version = client_version;
                access.status = Some(parts.status.as_u16());
                Response::from_parts(parts, Logged::new(body, access, up_count).boxed())
            }
            Err(f) => {
                access.bytes_up = up_count.load(Ordering::Relaxed);
                refuse(access, f)
            }
        }
    }

    /// A new upstream connection after the previous one closed (keep-alive timeout, GOAWAY).
    async fn reconnect(&self) -> Result<(Sender, SocketAddr), Failure> {
        let u = &self.upstream;
        let target = Target { name: Some(u.name.as_str()), port: u.port, original: u.original };
        let (tcp, addr) = self.shared.connector.connect(target).await?;
        let timeout: Duration = self.shared.connector.connect_timeout();
        let tls = self.inspector.connect_upstream(tcp, &u.name, self.alpn.clone(), timeout).await?;
        Ok((handshake(tls).await?, addr))
    }
}

/// The `Via` value for a hop in `version`.
fn via(version: Version) -> HeaderValue {
    HeaderValue::from_static(if version == Version::HTTP_2 { "2 hostgate" } else { "1.1 hostgate" })
}
