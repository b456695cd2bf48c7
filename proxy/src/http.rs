//! Plain HTTP: every request on a client connection is decided on its own (keep-alive
//! requests can change Host), then forwarded with hyper's client and the response streamed
//! back.
//!
//! This phase owns request-target checks (the Host header and an absolute-form URI must
//! agree; a tunnel's requests must name the CONNECT host), the per-request decision with path
//! rules, hop-by-hop header removal, the upstream connection reused across requests to the same
//! name, the `403`/`502`/`504` answers and one access event per request. It does not sniff and
//! does not serve CONNECT (see [`crate::connect`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hostgate_matcher::Host;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme as UriScheme};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::sync::Mutex;

use crate::access::Access;
use crate::gateway::Shared;
use crate::outcome::{Failure, Outcome};
use crate::policy::{Action, Query, Scheme};
use crate::upstream::Target;

/// The body of every response the gateway sends.
pub(crate) type ResBody = BoxBody<Bytes, hyper::Error>;

/// Where a connection's requests come from, which decides how their target is found.
#[derive(Clone, Debug)]
// One per connection, moved a handful of times: the size of the inline `Host` does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Mode {
    /// Absolute-form requests to the explicit proxy (`GET http://host/path`).
    Proxy,
    /// Origin-form requests on a redirected connection to `original`.
    Transparent {
        /// The client's original destination.
        original: SocketAddr,
    },
    /// Origin-form requests inside a CONNECT tunnel to `host:port`.
    Tunnel {
        /// The CONNECT host, normalised.
        host: Host,
        /// The CONNECT port.
        port: u16,
    },
}

/// One client connection's HTTP state: how targets are found, the access-record template and
/// the upstream connection kept for the next request to the same place.
#[derive(Debug)]
pub(crate) struct Conn {
    shared: Arc<Shared>,
    template: Access,
    mode: Mode,
    upstream: Mutex<Option<Upstream>>,
    /// Requests that reached [`Conn::handle`].
    requests: AtomicU64,
}

struct Upstream {
    host: String,
    port: u16,
    addr: SocketAddr,
    sender: SendRequest<Counted>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("addr", &self.addr)
            .finish()
    }
}

/// A request's target once checked.
struct RequestTarget {
    host: Host,
    port: u16,
    path: String,
    authority: String,
}

impl Conn {
    /// State for a new client connection.
    pub(crate) fn new(shared: Arc<Shared>, template: Access, mode: Mode) -> Conn {
        Conn { shared, template, mode, upstream: Mutex::new(None), requests: AtomicU64::new(0) }
    }

    /// Serves one request; never fails (failures become responses).
    pub(crate) async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<ResBody>, Infallible> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut access = self.template.clone();
        access.started = std::time::Instant::now();
        access.protocol = Some("http");
        access.method = Some(req.method().as_str().to_string());
        access.path = req.uri().path_and_query().map(|p| p.as_str().to_string());
        access.dst = req.uri().authority().map(|a| a.as_str().to_string());
        if let Err(f) = head_fits(&req) {
            return Ok(refuse(access, f));
        }
        let target = match self.target(&req) {
            Ok(t) => t,
            Err(f) => return Ok(refuse(access, f)),
        };
        access.host = Some(target.host.as_str().to_string());
        access.path = Some(target.path.clone());
        access.dst = Some(match &self.mode {
            Mode::Transparent { original } => original.to_string(),
            _ => target.authority.clone(),
        });
        let decision = crate::gateway::decide(
            &self.shared,
            &Query { host: &target.host, scheme: Scheme::Http, port: target.port, path: Some(&target.path) },
        );
        access.decided(&self.shared.policy, &decision);
        if decision.action == Action::Deny {
            return Ok(refuse(access, Failure::new(Outcome::Denied, "policy")));
        }
        Ok(self.forward(req, target, access).await)
    }

    /// Logs how hyper ended the client connection when no request of it could be handled: a
    /// head it refused (it answered `400`/`431` itself), a head not complete within the header
    /// timeout, or a client gone mid-head. Other endings (a keep-alive timeout after requests
    /// were served, a clean close) are not events.
    pub(crate) fn ended(&self, result: Result<(), hyper::Error>) {
        let Err(e) = result else { return };
        let served = self.requests.load(Ordering::Relaxed) > 0;
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
        let mut access = self.template.clone();
        access.protocol = Some("http");
        access.status = status;
        access.refused(outcome, detail);
        access.emit();
    }

    /// Logs a client that sent no complete request head within `sniff.timeout` (hyper's header
    /// timeout, or the listener's wait for a first byte).
    pub(crate) fn head_timed_out(&self) {
        let mut access = self.template.clone();
        access.protocol = Some("http");
        access.refused(
            Outcome::Timeout,
            format!("no complete request head within {} ms", self.shared.sniff.timeout.as_millis()),
        );
        access.emit();
    }

    /// Finds and checks a request's target host, port and path.
    fn target(&self, req: &Request<Incoming>) -> Result<RequestTarget, Failure> {
        let uri = req.uri();
        let path = uri.path_and_query().map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
        let path = if path.is_empty() { "/".to_string() } else { path };
        let host_header = host_header(req.headers())?;
        if req.method() == Method::CONNECT {
            return Err(Failure::new(Outcome::BadRequest, "CONNECT is only served by a connect listener"));
        }
        let uri_authority = match (uri.scheme(), uri.authority()) {
            (Some(s), Some(a)) if *s == UriScheme::HTTP => Some(a.clone()),
            (Some(s), Some(_)) if *s == UriScheme::HTTPS => {
                return Err(Failure::new(Outcome::BadRequest, "https:// request-target; use CONNECT for TLS"))
            }
            (Some(_), _) => return Err(Failure::new(Outcome::BadRequest, "request-target scheme is not http")),
            (None, Some(_)) => return Err(Failure::new(Outcome::BadRequest, "authority-form request-target")),
            (None, None) => None,
        };
        let default_port = match &self.mode {
            Mode::Proxy => 80,
            Mode::Transparent { original } => original.port(),
            Mode::Tunnel { port, .. } => *port,
        };
        let authority = match (&uri_authority, &host_header) {
            (Some(u), Some(h)) => {
                if !same_authority(u, h, default_port) {
                    return Err(Failure::new(Outcome::Mismatch, "Host header disagrees with the request URI"));
                }
                u.clone()
            }
            (Some(u), None) => u.clone(),
            (None, Some(h)) if !matches!(self.mode, Mode::Proxy) => h.clone(),
            (None, _) if matches!(self.mode, Mode::Proxy) => {
                return Err(Failure::new(Outcome::BadRequest, "origin-form request to the explicit proxy"));
            }
            (None, _) => return Err(Failure::new(Outcome::BadRequest, "no Host header")),
        };
        no_userinfo(&authority)?;
        let host = Host::new(authority.host().trim_start_matches('[').trim_end_matches(']'))
            .map_err(|e| Failure::new(Outcome::BadRequest, format!("request host: {e}")))?;
        let port = authority.port_u16().unwrap_or(default_port);
        match &self.mode {
            Mode::Proxy => {}
            Mode::Transparent { original } => {
                if port != original.port() {
                    return Err(Failure::new(
                        Outcome::Mismatch,
                        "Host port differs from the original destination port",
                    ));
                }
            }
            Mode::Tunnel { host: tunnel_host, port: tunnel_port } => {
                if host.as_str() != tunnel_host.as_str() || port != *tunnel_port {
                    return Err(Failure::new(Outcome::Mismatch, "request host is not the CONNECT host"));
                }
            }
        }
        Ok(RequestTarget { host, port, path, authority: authority.as_str().to_string() })
    }

    async fn forward(&self, req: Request<Incoming>, target: RequestTarget, mut access: Access) -> Response<ResBody> {
        let (mut parts, body) = req.into_parts();
        let up_count = Arc::new(AtomicU64::new(0));
        let body = Counted::new(body, up_count.clone());

        remove_hop_by_hop(&mut parts.headers);
        if !parts.headers.contains_key(header::HOST) {
            if let Ok(v) = HeaderValue::from_str(&target.authority) {
                parts.headers.insert(header::HOST, v);
            }
        }
        parts.headers.append(header::VIA, HeaderValue::from_static("1.1 hostgate"));
        parts.uri = match target.path.parse::<Uri>() {
            Ok(u) => u,
            Err(_) => return refuse(access, Failure::new(Outcome::BadRequest, "request path")),
        };
        parts.version = http::Version::HTTP_11;
        let req = Request::from_parts(parts, body);

        let mut slot = self.upstream.lock().await;
        let reusable = slot.as_mut().is_some_and(|u| u.host == target.host.as_str() && u.port == target.port);
        if reusable {
            if let Some(u) = slot.as_mut() {
                if u.sender.ready().await.is_err() {
                    *slot = None;
                }
            }
        } else {
            *slot = None;
        }
        if slot.is_none() {
            let original = match &self.mode {
                Mode::Transparent { original } => Some(*original),
                _ => None,
            };
            let t = Target { name: Some(target.host.as_str()), port: target.port, original };
            let (stream, addr) = match self.shared.connector.connect(t).await {
                Ok(c) => c,
                Err(f) => return refuse(access, f),
            };
            let handshake = hyper::client::conn::http1::Builder::new()
                .preserve_header_case(true)
                .title_case_headers(false)
                .handshake::<_, Counted>(TokioIo::new(stream))
                .await;
            let (sender, conn) = match handshake {
                Ok(x) => x,
                Err(e) => return refuse(access, Failure::new(Outcome::UpstreamError, format!("HTTP handshake: {e}"))),
            };
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream HTTP connection ended");
                }
            });
            *slot = Some(Upstream { host: target.host.as_str().to_string(), port: target.port, addr, sender });
        }
        let Some(upstream) = slot.as_mut() else {
            return refuse(access, Failure::new(Outcome::UpstreamError, "no upstream connection"));
        };
        access.upstream = Some(upstream.addr);
        let result = exchange(upstream.sender.send_request(req), self.shared.idle_timeout).await;
        drop(slot);
        match result {
            Ok(res) => {
                let (mut parts, body) = res.into_parts();
                remove_hop_by_hop(&mut parts.headers);
                parts.headers.append(header::VIA, HeaderValue::from_static("1.1 hostgate"));
                access.status = Some(parts.status.as_u16());
                let body = Logged::new(body, access, up_count);
                Response::from_parts(parts, body.boxed())
            }
            Err(f) => {
                access.bytes_up = up_count.load(Ordering::Relaxed);
                refuse(access, f)
            }
        }
    }
}

/// Waits for the upstream's response head to a request being sent, at most `timeout` (the
/// relay's idle timeout: that long without a byte from the upstream).
///
/// # Errors
/// `upstream-timeout` when no head came in time; `bad-request` when the client's request body
/// broke the exchange (a malformed chunk, a body cut short); `upstream-error` otherwise.
pub(crate) async fn exchange(
    send: impl std::future::Future<Output = hyper::Result<Response<Incoming>>>,
    timeout: std::time::Duration,
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

/// The most a request head (request line and headers) may take.
pub(crate) const MAX_HEAD: usize = 64 * 1024;

/// Refuses a request whose head is over [`MAX_HEAD`]. hyper's buffer limit holds it only
/// between reads, so a larger head arriving in one burst can get through its parser.
///
/// # Errors
/// `head-too-large` (`431`).
pub(crate) fn head_fits<B>(req: &Request<B>) -> Result<(), Failure> {
    let line = req.method().as_str().len() + req.uri().to_string().len() + 12;
    let size = req.headers().iter().fold(line, |n, (name, value)| n + name.as_str().len() + value.len() + 4);
    if size > MAX_HEAD {
        return Err(Failure::new(Outcome::HeadTooLarge, format!("request head of {size} bytes (at most {MAX_HEAD})")));
    }
    Ok(())
}

/// The HTTP/1 server settings for every client connection that carries HTTP (explicit proxy,
/// redirected, or inside a CONNECT tunnel): `header_timeout` to send a request head, header case
/// kept as the client wrote it, 64 KiB of head at most.
pub(crate) fn server(header_timeout: std::time::Duration) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .preserve_header_case(true)
        .max_buf_size(MAX_HEAD);
    b
}

/// The Host header as an authority; `None` when there is none.
///
/// # Errors
/// `bad-request` when it is not a `host[:port]`.
pub(crate) fn host_header(headers: &HeaderMap) -> Result<Option<Authority>, Failure> {
    let mut values = headers.get_all(header::HOST).iter();
    let Some(v) = values.next() else { return Ok(None) };
    // RFC 9112 §3.2: more than one Host, or an invalid one, is a 400. A proxy that decided by
    // one and forwarded both would let the upstream pick the other.
    if values.next().is_some() {
        return Err(Failure::new(Outcome::BadRequest, "more than one Host header"));
    }
    let authority = v
        .to_str()
        .ok()
        .and_then(|s| s.parse::<Authority>().ok())
        .ok_or_else(|| Failure::new(Outcome::BadRequest, "Host header is not a host[:port]"))?;
    no_userinfo(&authority)?;
    Ok(Some(authority))
}

/// Refuses an authority with userinfo (`user@host`): RFC 9110 §4.2.4 forbids it in `http(s)`
/// URIs and in Host, and `denied.test@allowed.test` reads differently to different parsers.
pub(crate) fn no_userinfo(authority: &Authority) -> Result<(), Failure> {
    if authority.as_str().contains('@') {
        return Err(Failure::new(Outcome::BadRequest, "userinfo in the request's authority"));
    }
    Ok(())
}

/// Whether a URI authority and a Host header name the same place (case-insensitive host,
/// default port filled in).
pub(crate) fn same_authority(a: &Authority, b: &Authority, default_port: u16) -> bool {
    a.host().eq_ignore_ascii_case(b.host())
        && a.port_u16().unwrap_or(default_port) == b.port_u16().unwrap_or(default_port)
}

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1): those `Connection` lists, and the fixed
/// set, including the proxy's own `Proxy-Authorization` and `Proxy-Connection`.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
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

/// The answer to a refused or failed request, logged now. The reason header is the outcome's
/// fixed token; nothing the client sent is echoed.
pub(crate) fn refuse(access: Access, failure: Failure) -> Response<ResBody> {
    let status = failure.outcome.status();
    let reason = failure.outcome.as_str();
    let body = format!("hostgate: {} ({reason})\n", status.canonical_reason().unwrap_or("refused"));
    refuse_with_body(access, failure, body)
}

/// Like [`refuse`], with the failure's detail in the body too: only for failures whose detail
/// comes from the upstream (a certificate or handshake error), never from the client.
pub(crate) fn refuse_explained(access: Access, failure: Failure) -> Response<ResBody> {
    let status = failure.outcome.status();
    let reason = failure.outcome.as_str();
    let body = format!("hostgate: {} ({reason})\n{}\n", status.canonical_reason().unwrap_or("refused"), failure.detail);
    refuse_with_body(access, failure, body)
}

fn refuse_with_body(mut access: Access, failure: Failure, body: String) -> Response<ResBody> {
    let status = failure.outcome.status();
    let reason = failure.outcome.as_str();
    let body = Bytes::from(body);
    access.status = Some(status.as_u16());
    access.bytes_down = body.len() as u64;
    access.refused(failure.outcome, failure.detail);
    access.emit();
    status_response(status, reason, body)
}

/// A short text response with `x-hostgate-reason`.
pub(crate) fn status_response(status: StatusCode, reason: &'static str, body: Bytes) -> Response<ResBody> {
    let mut res = Response::new(Full::new(body).map_err(|never: Infallible| match never {}).boxed());
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    res.headers_mut().insert(HeaderName::from_static("x-hostgate-reason"), HeaderValue::from_static(reason));
    res
}

/// A request body that counts its bytes.
#[derive(Debug)]
pub(crate) struct Counted {
    inner: Incoming,
    count: Arc<AtomicU64>,
}

impl Counted {
    /// Counts `inner`'s data bytes into `count`.
    pub(crate) fn new(inner: Incoming, count: Arc<AtomicU64>) -> Counted {
        Counted { inner, count }
    }
}

impl Body for Counted {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.count.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that counts its bytes and emits the request's access event when it ends
/// (or is dropped: the client went away).
pub(crate) struct Logged {
    inner: Incoming,
    access: Option<Access>,
    up: Arc<AtomicU64>,
    down: u64,
}

impl Logged {
    /// Streams `inner` and emits `access` when it ends; `up` is the request body's count.
    pub(crate) fn new(inner: Incoming, access: Access, up: Arc<AtomicU64>) -> Logged {
        Logged { inner, access: Some(access), up, down: 0 }
    }

    fn finish(&mut self, failure: Option<Failure>) {
        if let Some(mut access) = self.access.take() {
            access.bytes_up = self.up.load(Ordering::Relaxed);
            access.bytes_down = self.down;
            if let Some(f) = failure {
                access.fail(f.outcome, f.detail);
            }
            access.emit();
        }
    }
}

impl Body for Logged {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.down += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let f = Failure::new(Outcome::UpstreamError, format!("response body: {e}"));
                self.finish(Some(f));
            }
            Poll::Ready(None) => self.finish(None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if self.access.is_some() {
            let ended = self.inner.is_end_stream();
            self.finish(
                (!ended).then(|| Failure::new(Outcome::ClientError, "client went away before the response ended")),
            );
        }
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

    #[test]
    fn authorities() {
        let a: Authority = "Example.COM".parse().unwrap();
        let b: Authority = "example.com:80".parse().unwrap();
        let c: Authority = "example.com:8080".parse().unwrap();
        assert!(same_authority(&a, &b, 80));
        assert!(!same_authority(&a, &c, 80));
    }
}
