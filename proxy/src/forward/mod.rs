//! The request pipeline: every HTTP request the gateway sees, plain (redirected, absolute-form
//! to the explicit proxy, inside a CONNECT tunnel) or inside inspected TLS, goes through the
//! same steps:
//!
//! ```text
//! target (target.rs) ─► decide (host, port, path) ─► [inspected: fronting check]
//!   ─► upstream sender (cached per connection) ─► hop-by-hop headers, Via, Host ─► exchange
//!   ─► response streamed back (body.rs emits the request's record at its end)
//! ```
//!
//! This module owns one client connection's HTTP state ([`Pipeline`]: the connection's record
//! that each request's record starts from, the upstream connection kept for the next request,
//! the request count), the per-request decision, the headers a proxy must change and the
//! refusal of a request. The scopes differ only where [`Scope`] says: how the target is found,
//! the decision's scheme, and how an upstream connection is made (TCP, or TLS with the
//! inspector). It does not sniff, serve CONNECT ([`crate::listen::connect`]) or terminate TLS
//! ([`crate::intercept`]).

pub(crate) mod body;
pub(crate) mod signin;
pub(crate) mod target;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hostgate_matcher::Host;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::Mutex;

use crate::access::{Access, Protocol};
use crate::conn::Conn;
use crate::generation::{Current, Generation};
use crate::inspect::{Inspector, H2};
use crate::outcome::{http_refusal, Failure, Outcome};
use crate::policy::{Action, GroupId};
use crate::upstream::Target;
pub(crate) use body::ResBody;
use body::{Counted, Logged};
use target::RequestTarget;
pub(crate) use target::{authority_host, Scope, MAX_HEAD};

/// How an inspected connection reaches its upstream: through the inspector's TLS, offering
/// the client side's protocol first; or, when the first handshake failed, not at all.
#[derive(Debug)]
pub(crate) struct TlsUpstream {
    /// The inspector of the connection's generation.
    pub(crate) inspector: Arc<Inspector>,
    /// The ALPN protocols to offer the upstream on a reconnect.
    pub(crate) alpn: Vec<Vec<u8>>,
    /// The upstream handshake failed: every request is answered with this (a `502` that names
    /// the reason: it comes from the upstream, never from the client).
    pub(crate) failure: Option<Failure>,
}

/// An upstream HTTP connection: HTTP/1.1 (plain or TLS), or HTTP/2 (TLS).
pub(crate) enum Sender {
    /// HTTP/1.1: one request at a time.
    H1(http1::SendRequest<Counted>),
    /// HTTP/2: multiplexed.
    H2(http2::SendRequest<Counted>),
}

/// The upstream connection kept for the next request to the same place.
struct Upstream {
    host: Host,
    port: u16,
    /// The group it was made for (a group may have a parent proxy of its own).
    group: GroupId,
    addr: SocketAddr,
    sender: Sender,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("group", &self.group)
            .field("addr", &self.addr)
            .finish()
    }
}

/// One client connection's HTTP state, shared by its requests.
#[derive(Debug)]
pub(crate) struct Pipeline {
    /// The generation the connection was accepted under: its settings and its connection-level
    /// events.
    gen: Arc<Generation>,
    /// The generation in force now: each request is decided by the one current when it arrives.
    current: Arc<Current>,
    /// The connection's record: each request's record starts as a copy of it.
    template: Access,
    scope: Scope,
    /// `Some` for an inspected connection.
    tls: Option<TlsUpstream>,
    upstream: Mutex<Option<Upstream>>,
    /// Requests that reached [`Pipeline::handle`].
    requests: AtomicU64,
    /// The client's group under `gen` (a request decided by a later generation looks its
    /// group up again in that generation's policy).
    group: GroupId,
}

impl Pipeline {
    /// The HTTP state of a connection served by `gen` whose record so far is `template`.
    pub(crate) fn new(conn: &Conn, template: Access, scope: Scope) -> Pipeline {
        Pipeline {
            gen: conn.gen.clone(),
            current: conn.current.clone(),
            template,
            scope,
            tls: None,
            upstream: Mutex::new(None),
            requests: AtomicU64::new(0),
            group: conn.group,
        }
    }

    /// The HTTP state of an inspected connection, with its first upstream connection when the
    /// upstream handshakes succeeded (`sender` at `addr`).
    pub(crate) fn inspected(
        conn: &Conn,
        template: Access,
        scope: Scope,
        tls: TlsUpstream,
        first: Option<(Sender, SocketAddr)>,
    ) -> Pipeline {
        let mut p = Pipeline::new(conn, template, scope);
        if let (Scope::Inspected { name, port, .. }, Some((sender, addr))) = (&p.scope, first) {
            let group = p.group;
            *p.upstream.get_mut() = Some(Upstream { host: name.clone(), port: *port, group, addr, sender });
        }
        p.tls = Some(tls);
        p
    }

    /// Requests handled so far.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Serves one request; never fails (failures become responses).
    pub(crate) async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<ResBody>, Infallible> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let protocol = if self.tls.is_some() { Protocol::Https } else { Protocol::Http };
        let gen = self.current.load();
        let mut access = self.template.request(protocol);
        access.generation = gen.number;
        let group = if gen.number == self.gen.number { self.group } else { gen.policy.group_of(access.client.ip()) };
        access.client_group.clone_from(&gen.policy.group(group).name);
        access.method = Some(req.method().clone());
        // A redirected or inspected connection's record already names where the client was
        // going (the original destination, or the connection's); the explicit proxy's requests
        // name it in their URI.
        if matches!(self.scope, Scope::Proxy | Scope::Tunnel { .. }) {
            access.dst = req.uri().authority().cloned().map(crate::access::Dst::Authority);
        }
        let target = match RequestTarget::parse(&req, &self.scope, gen.slashes) {
            Ok(t) => t,
            Err(f) => {
                // Refused before it had a normalised path: the log shows the one it came with.
                access.path = req.uri().path_and_query().map(|p| p.as_str().to_string());
                return Ok(refuse(&gen, access, f, false));
            }
        };
        access.host = Some(target.host.as_str().to_string());
        access.path = Some(target.path.clone());
        match &self.scope {
            Scope::Transparent { original } => access.dst = Some(crate::access::Dst::Addr(*original)),
            Scope::Proxy | Scope::Steered { .. } | Scope::Tunnel { .. } => {
                access.dst = Some(crate::access::Dst::Authority(target.authority.clone()))
            }
            Scope::Inspected { .. } => {}
        }
        // Who asks, on the explicit proxy's own requests (inside a tunnel, the CONNECT signed in).
        let mut group = group;
        if matches!(self.scope, Scope::Proxy) && gen.auth.is_some() {
            let scheme = Some(self.scope.scheme());
            let decide =
                |g| gen.decide_target(Some(&target.host), None, scheme, target.port, Some(&target.path), g, false);
            match signin::gate(&gen, req.headers(), access.client.ip(), group, decide).await {
                Ok(passed) => {
                    access.user = passed.identity.map(|id| id.user.clone());
                    if passed.group != group {
                        group = passed.group;
                        access.client_group.clone_from(&gen.policy.group(group).name);
                    }
                }
                Err(refused) => {
                    access.decided(&refused.decision);
                    return Ok(refuse(&gen, access, refused.failure, false));
                }
            }
        }
        if let Err(f) = self.decide(&gen, &target, group, &mut access) {
            return Ok(refuse(&gen, access, f, false));
        }
        if let Some(f) = self.tls.as_ref().and_then(|t| t.failure.as_ref()) {
            return Ok(refuse(&gen, access, f.clone(), true));
        }
        Ok(self.forward(&gen, req, target, group, access).await)
    }

    /// Decides a request by its host, port and path. Inside an inspected connection a request
    /// for another host than the connection's (domain fronting) needs a rule that allows that
    /// host on its own.
    fn decide(
        &self,
        gen: &Generation,
        target: &RequestTarget,
        group: GroupId,
        access: &mut Access,
    ) -> Result<(), Failure> {
        // A Host that is an IP literal is decided by the address rules.
        let scheme = Some(self.scope.scheme());
        let decision =
            gen.decide_target(Some(&target.host), None, scheme, target.port, Some(&target.path), group, false);
        access.decided(&decision);
        if let Scope::Inspected { name, .. } = &self.scope {
            let fronted = target.host.as_str() != name.as_str();
            if fronted && (decision.rule.is_none() || decision.action == Action::Deny) {
                let detail = format!(
                    "domain fronting: Host {} on a connection for {}, and no rule allows {} on its own",
                    target.host.as_str(),
                    name.as_str(),
                    target.host.as_str()
                );
                return Err(Failure::new(Outcome::Fronting, detail));
            }
        }
        if decision.action == Action::Deny {
            return Err(Failure::new(Outcome::Denied, "policy"));
        }
        Ok(())
    }

    /// Sends the request upstream on the connection's upstream connection (made or remade as
    /// needed) and streams the response back.
    async fn forward(
        &self,
        gen: &Arc<Generation>,
        req: Request<Incoming>,
        target: RequestTarget,
        group: GroupId,
        mut access: Access,
    ) -> Response<ResBody> {
        let (mut parts, body) = req.into_parts();
        let client_version = parts.version;
        let up_count = Arc::new(AtomicU64::new(0));
        let body = Counted::new(body, up_count.clone());
        remove_hop_by_hop(&mut parts.headers);
        parts.headers.append(header::VIA, via(client_version));

        let mut slot = self.upstream.lock().await;
        if let Err(f) = self.ready_upstream(gen, &mut slot, &target, group).await {
            return refuse(gen, access, f, false);
        }
        let Some(upstream) = slot.as_mut() else {
            return refuse(gen, access, Failure::new(Outcome::UpstreamError, "no upstream connection"), false);
        };
        access.upstream = Some(upstream.addr);
        let timeout = gen.idle_timeout;
        let result = match &mut upstream.sender {
            Sender::H1(s) => {
                parts.uri = match target.path.parse::<Uri>() {
                    Ok(u) => u,
                    Err(_) => return refuse(gen, access, Failure::new(Outcome::BadRequest, "request path"), false),
                };
                if let Ok(v) = HeaderValue::from_str(&target.upstream_authority(self.scope.scheme())) {
                    parts.headers.insert(header::HOST, v);
                }
                parts.version = Version::HTTP_11;
                exchange(s.send_request(Request::from_parts(parts, body)), timeout).await
            }
            Sender::H2(s) => {
                let authority = target.upstream_authority(self.scope.scheme());
                parts.uri = match format!("https://{authority}{}", target.path).parse::<Uri>() {
                    Ok(u) => u,
                    Err(_) => return refuse(gen, access, Failure::new(Outcome::BadRequest, "request path"), false),
                };
                parts.headers.remove(header::HOST);
                parts.version = Version::HTTP_2;
                // HTTP/2 multiplexes: send without holding the connection.
                let fut = s.send_request(Request::from_parts(parts, body));
                drop(slot);
                exchange(fut, timeout).await
            }
        };
        match result {
            Ok(res) => {
                let (mut parts, body) = res.into_parts();
                remove_hop_by_hop(&mut parts.headers);
                parts.headers.append(header::VIA, via(client_version));
                parts.version = client_version;
                access.status = Some(parts.status.as_u16());
                let body = Logged::new(body, gen.clone(), access, up_count);
                Response::from_parts(parts, http_body_util::BodyExt::boxed(body))
            }
            Err(f) => {
                access.bytes_up = up_count.load(Ordering::Relaxed);
                refuse(gen, access, f, false)
            }
        }
    }

    /// Makes sure `slot` holds a ready upstream connection for `target` and the request's
    /// `group` (under `gen`): the kept one when it goes to the same place for the same group and
    /// is still open, a new one otherwise. An inspected connection's
    /// requests all go to its own name (a fronted request that a rule allows goes there too).
    async fn ready_upstream(
        &self,
        gen: &Generation,
        slot: &mut Option<Upstream>,
        target: &RequestTarget,
        group: GroupId,
    ) -> Result<(), Failure> {
        let (host, port) = match &self.scope {
            Scope::Inspected { name, port, .. } => (name, *port),
            _ => (&target.host, target.port),
        };
        let usable = match slot.as_mut() {
            Some(u) if u.host.as_str() == host.as_str() && u.port == port && u.group == group => match &mut u.sender {
                Sender::H1(s) => s.ready().await.is_ok(),
                Sender::H2(s) => !s.is_closed() && s.ready().await.is_ok(),
            },
            _ => false,
        };
        if !usable {
            *slot = None;
            // Boxed: the connect, TLS and HTTP/2 handshake futures are large, and every request's
            // future (held by hyper for each connection, CONNECTs included) would be as large.
            let (sender, addr) = Box::pin(self.connect(gen, host, port, group)).await?;
            *slot = Some(Upstream { host: host.clone(), port, group, addr, sender });
        }
        Ok(())
    }

    /// A new upstream HTTP connection to `host:port`: TCP and HTTP/1.1, or for an inspected
    /// connection, TLS with the protocol the upstream picks; through `group`'s parent proxy if it
    /// has one.
    async fn connect(
        &self,
        gen: &Generation,
        host: &Host,
        port: u16,
        group: GroupId,
    ) -> Result<(Sender, SocketAddr), Failure> {
        let target = Target { name: Some(host.as_str()), port, original: self.scope.original(), group };
        let (tcp, addr) = gen.connector.connect(target).await?;
        let sender = match &self.tls {
            None => handshake_h1(tcp).await?,
            Some(t) => {
                let timeout: Duration = gen.connector.connect_timeout();
                let tls = t.inspector.connect_upstream(tcp, host, t.alpn.clone(), timeout).await?;
                handshake(tls).await?
            }
        };
        Ok((sender, addr))
    }

    /// Logs how hyper ended the client connection when no request of it could be handled: a
    /// head it refused (it answered `400`/`431` itself), a head not complete within the header
    /// timeout, or a client gone mid-head. Other endings (a keep-alive timeout after requests
    /// were served, a clean close) are not events.
    pub(crate) fn ended(&self, result: Result<(), hyper::Error>) {
        let Err(e) = result else { return };
        let served = self.requests() > 0;
        let (outcome, status, detail) = if e.is_parse_too_large() {
            (Outcome::HeadTooLarge, Some(431), format!("request head refused: {e}"))
        } else if e.is_parse() {
            (Outcome::BadRequest, Some(400), format!("request head refused: {e}"))
        } else if e.is_timeout() && !served {
            return self.head_timed_out();
        } else if e.is_incomplete_message() && !served {
            (Outcome::ClientError, None, format!("client closed mid-request: {e}"))
        } else {
            tracing::debug!(client = %self.template.client, error = %e, "client HTTP connection ended with an error");
            return;
        };
        let mut access = self.template.request(Protocol::Http);
        access.status = status;
        access.refused(outcome, detail);
        self.gen.emit(&access);
    }

    /// Logs a client that sent no complete request head within `sniff.timeout` (hyper's header
    /// timeout, or the listener's wait for a first byte).
    pub(crate) fn head_timed_out(&self) {
        let mut access = self.template.request(Protocol::Http);
        access.refused(
            Outcome::Timeout,
            format!("no complete request head within {} ms", self.gen.sniff.timeout.as_millis()),
        );
        self.gen.emit(&access);
    }
}

/// The answer to a refused or failed request, its record emitted now through `gen`.
fn refuse(gen: &Generation, mut access: Access, failure: Failure, explained: bool) -> Response<ResBody> {
    let mut res = refusal(&mut access, failure, explained);
    signin::challenge(gen, &mut res);
    gen.emit(&access);
    res
}

/// The answer to a refused request or CONNECT ([`http_refusal`]), recorded in `access`: the
/// status, the bytes of the body, the outcome.
pub(crate) fn refusal(access: &mut Access, failure: Failure, explained: bool) -> Response<ResBody> {
    let res = http_refusal(&failure, explained);
    access.status = Some(res.status().as_u16());
    access.bytes_down = hyper::body::Body::size_hint(res.body()).exact().unwrap_or(0);
    access.refused(failure.outcome, failure.detail);
    body::fixed(res)
}

/// Waits for the upstream's response head to a request being sent, at most `timeout` (the
/// relay's idle timeout: that long without a byte from the upstream).
///
/// # Errors
/// `upstream-timeout` when no head came in time; `bad-request` when the client's request body
/// broke the exchange (a malformed chunk, a body cut short); `upstream-error` otherwise.
async fn exchange(
    send: impl std::future::Future<Output = hyper::Result<Response<Incoming>>>,
    timeout: Duration,
) -> Result<Response<Incoming>, Failure> {
    match tokio::time::timeout(timeout, send).await {
        Ok(Ok(res)) => Ok(res),
        // The request body hyper was sending is the client's: its error is the client's fault.
        Ok(Err(e)) if e.is_user() => Err(Failure::new(Outcome::BadRequest, format!("request body: {e}"))),
        Ok(Err(e)) if e.is_canceled() || e.is_incomplete_message() || e.is_closed() => {
            Err(Failure::new(Outcome::UpstreamError, format!("upstream closed: {e}")))
        }
        Ok(Err(e)) => Err(Failure::new(Outcome::UpstreamError, e.to_string())),
        Err(_) => {
            Err(Failure::new(Outcome::UpstreamTimeout, format!("no response head within {} ms", timeout.as_millis())))
        }
    }
}

/// The HTTP/1.1 client handshake on an upstream stream (TCP, or a TLS session that chose it);
/// the connection is driven by a task of its own.
async fn handshake_h1<T>(io: T) -> Result<Sender, Failure>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .preserve_header_case(true)
        .title_case_headers(false)
        .handshake::<_, Counted>(TokioIo::new(io))
        .await
        .map_err(handshake_failed)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream HTTP/1 connection ended");
        }
    });
    Ok(Sender::H1(sender))
}

fn handshake_failed(e: hyper::Error) -> Failure {
    Failure::new(Outcome::UpstreamError, format!("HTTP handshake: {e}"))
}

/// The HTTP client handshake on an upstream TLS session, by the protocol it negotiated.
pub(crate) async fn handshake(tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Result<Sender, Failure> {
    if tls.get_ref().1.alpn_protocol() != Some(H2) {
        return handshake_h1(tls).await;
    }
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake::<_, Counted>(TokioIo::new(tls))
        .await
        .map_err(handshake_failed)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
        }
    });
    Ok(Sender::H2(sender))
}

/// The HTTP/1 server settings for every client connection that carries HTTP (explicit proxy,
/// redirected, inside a CONNECT tunnel or inspected TLS): `header_timeout` to send a request
/// head, header case kept as the client wrote it, 64 KiB of head at most.
pub(crate) fn server(header_timeout: Duration) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(TokioTimer::new()).header_read_timeout(header_timeout).preserve_header_case(true).max_buf_size(MAX_HEAD);
    b
}

/// The `Via` value for a hop in `version`.
fn via(version: Version) -> HeaderValue {
    HeaderValue::from_static(if version == Version::HTTP_2 { "2 hostgate" } else { "1.1 hostgate" })
}

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1): those `Connection` lists, and the fixed
/// set, including the proxy's own `Proxy-Authorization` and `Proxy-Connection`.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close, X-Secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(header::PROXY_AUTHORIZATION, HeaderValue::from_static("Basic Zm9v"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["accept"]);
    }
}
