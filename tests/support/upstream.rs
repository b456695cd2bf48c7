//! Upstream servers for the gateway to reach, on `127.0.0.1:0`: a TLS server (HTTP answers that
//! name the SNI it saw, or a byte-exact echo; also on an address the test chooses), a plain HTTP
//! server (hyper) that reports what it received, and a black hole whose connects time out.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::ca::TestCa;

/// What a [`TlsUpstream`] does once the handshake is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Reads HTTP/1.1 request heads (keep-alive) and answers each with `200` and the body
    /// `upstream=<label> sni=<sni> path=<path>`.
    Http,
    /// Copies every byte back until end of stream.
    Echo,
}

/// A TLS server (on `127.0.0.1:0` unless [`TlsUpstream::start_on`]) with a certificate for its
/// names, signed by a [`TestCa`].
pub struct TlsUpstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    handshakes: Arc<AtomicUsize>,
    bytes_received: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl TlsUpstream {
    /// An HTTP-mode server (ALPN `http/1.1`).
    pub async fn start(ca: &TestCa, names: &[&str], label: &str) -> TlsUpstream {
        TlsUpstream::start_mode(ca, names, label, Mode::Http).await
    }

    /// An echo-mode server (no ALPN).
    pub async fn start_echo(ca: &TestCa, names: &[&str], label: &str) -> TlsUpstream {
        TlsUpstream::start_mode(ca, names, label, Mode::Echo).await
    }

    /// A server in `mode`.
    pub async fn start_mode(ca: &TestCa, names: &[&str], label: &str, mode: Mode) -> TlsUpstream {
        TlsUpstream::start_on(ca, names, label, mode, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// A server in `mode` listening on `bind` (an address the test made local, a fixed port).
    pub async fn start_on(ca: &TestCa, names: &[&str], label: &str, mode: Mode, bind: SocketAddr) -> TlsUpstream {
        let mut config = ca.issue(names);
        if mode == Mode::Http {
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
        }
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind(bind).await.unwrap_or_else(|e| panic!("TLS upstream on {bind}: {e}"));
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let bytes_received = Arc::new(AtomicU64::new(0));
        let label = label.to_string();
        let task = {
            let (accepted, handshakes, bytes_received) = (accepted.clone(), handshakes.clone(), bytes_received.clone());
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let io = Counting { inner: tcp, read: bytes_received.clone() };
                    let (acceptor, handshakes, label) = (acceptor.clone(), handshakes.clone(), label.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(io).await else { return };
                        handshakes.fetch_add(1, Ordering::SeqCst);
                        let sni = tls.get_ref().1.server_name().unwrap_or("-").to_string();
                        let _ = match mode {
                            Mode::Http => serve_http(tls, &label, &sni).await,
                            Mode::Echo => echo(tls).await,
                        };
                    });
                }
            })
        };
        TlsUpstream { addr, accepted, handshakes, bytes_received, task }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// TLS handshakes completed so far.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    /// Bytes received on all connections, TLS records included.
    pub fn bytes_received(&self) -> u64 {
        self.bytes_received.load(Ordering::SeqCst)
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers HTTP/1.1 requests until the client closes or asks to.
async fn serve_http<S: AsyncRead + AsyncWrite + Unpin>(io: S, label: &str, sni: &str) -> io::Result<()> {
    let mut io = BufReader::new(io);
    loop {
        let mut head = Vec::new();
        loop {
            let n = io.read_until(b'\n', &mut head).await?;
            if n == 0 {
                return Ok(());
            }
            if head.ends_with(b"\r\n\r\n") || head == b"\r\n" {
                break;
            }
            if head.len() > 64 * 1024 {
                return Err(io::Error::other("request head too large"));
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let path = head.split_whitespace().nth(1).unwrap_or("-").to_string();
        let mut close = false;
        let mut length = 0usize;
        for line in head.lines().skip(1) {
            if let Some((name, value)) = line.split_once(':') {
                let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_ascii_lowercase());
                if name == "connection" && value.split(',').any(|t| t.trim() == "close") {
                    close = true;
                }
                if name == "content-length" {
                    length = value.parse().unwrap_or(0);
                }
            }
        }
        let mut discard = vec![0u8; length];
        io.read_exact(&mut discard).await?;
        let body = format!("upstream={label} sni={sni} path={path}");
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "connection: close\r\n" } else { "" }
        );
        io.write_all(response.as_bytes()).await?;
        io.flush().await?;
        if close {
            return io.shutdown().await;
        }
    }
}

/// Copies everything back, then closes (with `close_notify`).
async fn echo<S: AsyncRead + AsyncWrite>(io: S) -> io::Result<()> {
    let (mut r, mut w) = tokio::io::split(io);
    tokio::io::copy(&mut r, &mut w).await?;
    w.shutdown().await
}

/// Counts the bytes read through it.
struct Counting<T> {
    inner: T,
    read: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counting<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.read.fetch_add((buf.filled().len() - before) as u64, Ordering::SeqCst);
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counting<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One request as an [`HttpUpstream`] received it.
#[derive(Clone, Debug)]
pub struct Received {
    /// The method.
    pub method: String,
    /// The request target exactly as received (origin-form `/p?q`, or absolute-form if the
    /// gateway failed to rewrite it).
    pub target: String,
    /// Every header, names lowercase, in order.
    pub headers: Vec<(String, String)>,
    /// The request body.
    pub body: Vec<u8>,
}

impl Received {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A plain HTTP/1.1 server (hyper) on `127.0.0.1:0`. Answers every request with `200`, the body
/// `upstream=<label> host=<Host> path=<target> method=<method>` and the header
/// `x-upstream-saw-headers` listing the request's header names (lowercase, comma-separated).
pub struct HttpUpstream {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    task: JoinHandle<()>,
}

impl HttpUpstream {
    /// Starts the server.
    pub async fn start(label: &str) -> HttpUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let label: Arc<str> = Arc::from(label);
        let task = {
            let received = received.clone();
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let (received, label) = (received.clone(), label.clone());
                    let service = hyper::service::service_fn(move |req| respond(req, label.clone(), received.clone()));
                    tokio::spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tcp), service)
                            .await;
                    });
                }
            })
        };
        HttpUpstream { addr, received, task }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests received so far.
    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for HttpUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn respond(
    req: Request<Incoming>,
    label: Arc<str>,
    received: Arc<Mutex<Vec<Received>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let target = req.uri().to_string();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let host =
        req.headers().get("host").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).unwrap_or_default();
    let body = req.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    let mut seen = Vec::new();
    for (name, _) in &headers {
        if !seen.contains(name) {
            seen.push(name.clone());
        }
    }
    let text = format!("upstream={label} host={host} path={target} method={method}");
    received.lock().unwrap().push(Received { method, target, headers, body });
    let response = Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .header("x-upstream-saw-headers", seen.join(","))
        .body(Full::new(Bytes::from(text)))
        .unwrap();
    Ok(response)
}

/// A local address whose connects hang: a listening socket whose accept queue is kept full, so
/// that the kernel drops further SYNs. Connects to it time out instead of being refused.
pub struct Blackhole {
    addr: SocketAddr,
    _listener: TcpListener,
    _fill: Vec<TcpStream>,
}

impl Blackhole {
    /// Builds one and checks that a connect to it does not complete within 300 ms.
    pub async fn start() -> Blackhole {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut fill = Vec::new();
        for _ in 0..8 {
            match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
                Ok(Ok(s)) => fill.push(s),
                Ok(Err(e)) => panic!("black hole {addr}: connect failed instead of hanging: {e}"),
                Err(_) => return Blackhole { addr, _listener: listener, _fill: fill },
            }
        }
        panic!("black hole {addr}: the accept queue never filled");
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// A local address that refuses connects: a socket bound to a port but not listening. Holding
/// it keeps parallel tests from being given the same port.
pub struct Refusing {
    addr: SocketAddr,
    _socket: TcpSocket,
}

impl Refusing {
    /// Binds the socket.
    pub fn new() -> Refusing {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        Refusing { addr: socket.local_addr().unwrap(), _socket: socket }
    }

    /// The address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The distinct header names of a comma-separated `x-upstream-saw-headers` value.
pub fn saw_headers(value: &str) -> BTreeSet<String> {
    value.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

/// One request as an [`HttpsUpstream`] saw it.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// The SNI of the connection it came on.
    pub sni: String,
    /// The `:authority` (HTTP/2) or Host header (HTTP/1.1).
    pub authority: String,
    /// The method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Every header, names lowercase.
    pub headers: Vec<(String, String)>,
}

/// An HTTPS server (hyper, HTTP/1.1 and HTTP/2 by ALPN) with a certificate for its names. Every
/// request gets `200` and `upstream=<label> version=<v> sni=<sni> authority=<a> path=<p>`, except
/// `/big/<n>`, answered with `n` bytes of `x` streamed in 16 KiB chunks, and `/echo`, answered
/// with the request body.
pub struct HttpsUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    handshakes: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl HttpsUpstream {
    /// A server offering `alpn` (e.g. `[b"h2", b"http/1.1"]`; empty: no ALPN, HTTP/1.1).
    pub async fn start(ca: &TestCa, names: &[&str], label: &str, alpn: &[&[u8]]) -> HttpsUpstream {
        let mut config = ca.issue(names);
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let label: Arc<str> = Arc::from(label);
        let task = {
            let (seen, handshakes) = (seen.clone(), handshakes.clone());
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let (acceptor, seen, handshakes, label) =
                        (acceptor.clone(), seen.clone(), handshakes.clone(), label.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else { return };
                        handshakes.fetch_add(1, Ordering::SeqCst);
                        let sni = tls.get_ref().1.server_name().unwrap_or("-").to_string();
                        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                            let (seen, label, sni) = (seen.clone(), label.clone(), sni.clone());
                            async move { Ok::<_, Infallible>(https_answer(req, &seen, &label, &sni).await) }
                        });
                        let io = TokioIo::new(tls);
                        if h2 {
                            let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                                .serve_connection(io, svc)
                                .await;
                        } else {
                            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
                        }
                    });
                }
            })
        };
        HttpsUpstream { addr, seen, handshakes, task }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The requests seen so far.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }

    /// TLS handshakes completed so far.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
}

impl Drop for HttpsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type AnswerBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn https_answer(
    req: Request<Incoming>,
    seen: &Mutex<Vec<SeenRequest>>,
    label: &str,
    sni: &str,
) -> Response<AnswerBody> {
    let version = format!("{:?}", req.version());
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| req.headers().get("host").and_then(|h| h.to_str().ok()).map(str::to_string))
        .unwrap_or_else(|| "-".to_string());
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let method = req.method().as_str().to_string();
    seen.lock().unwrap().push(SeenRequest {
        version: version.clone(),
        sni: sni.to_string(),
        authority: authority.clone(),
        method,
        path: path.clone(),
        headers,
    });
    if let Some(n) = path.strip_prefix("/big/").and_then(|n| n.parse::<usize>().ok()) {
        return Response::new(Repeat { left: n, chunk: Bytes::from(vec![b'x'; 16 * 1024]) }.boxed());
    }
    if path == "/echo" {
        let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        return Response::new(Full::new(body).boxed());
    }
    let body = format!("upstream={label} version={version} sni={sni} authority={authority} path={path}");
    Response::new(Full::new(Bytes::from(body)).boxed())
}

/// `n` bytes of `x` as 16 KiB frames, produced as they are polled.
struct Repeat {
    left: usize,
    chunk: Bytes,
}

impl hyper::body::Body for Repeat {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let take = self.left.min(self.chunk.len());
        self.left -= take;
        Poll::Ready(Some(Ok(hyper::body::Frame::data(self.chunk.slice(..take)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }
}

/// A TCP server that hands every accepted connection to the test as it is, for upstreams that
/// misbehave on purpose: half-close, reset, or accept and never answer. Connections wait in a
/// queue until [`RawUpstream::next`] takes them; nothing is read or written meanwhile.
pub struct RawUpstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    queue: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<TcpStream>>,
    task: JoinHandle<()>,
}

impl RawUpstream {
    /// Listens on `127.0.0.1:0`.
    pub async fn start() -> RawUpstream {
        RawUpstream::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Listens on `bind` (an address the test made local, or another loopback address).
    pub async fn start_on(bind: SocketAddr) -> RawUpstream {
        let listener = TcpListener::bind(bind).await.unwrap_or_else(|e| panic!("raw upstream on {bind}: {e}"));
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let task = {
            let accepted = accepted.clone();
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    if tx.send(tcp).is_err() {
                        return;
                    }
                }
            })
        };
        RawUpstream { addr, accepted, queue: tokio::sync::Mutex::new(rx), task }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The next accepted connection, in order; panics if none comes within [`super::STEP`].
    pub async fn next(&self) -> TcpStream {
        let mut queue = self.queue.lock().await;
        tokio::time::timeout(super::STEP, queue.recv())
            .await
            .unwrap_or_else(|_| panic!("raw upstream {}: no connection within {:?}", self.addr, super::STEP))
            .expect("the accept loop ended")
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP server that resets every connection as soon as it is accepted (`SO_LINGER` 0, then
/// close: an RST instead of a FIN).
pub struct Resetting {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Resetting {
    /// Listens on `127.0.0.1:0`.
    pub async fn start() -> Resetting {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let task = {
            let accepted = accepted.clone();
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let _ = tcp.set_zero_linger();
                    drop(tcp);
                }
            })
        };
        Resetting { addr, accepted, task }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// TCP connections accepted (and reset) so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Resetting {
    fn drop(&mut self) {
        self.task.abort();
    }
}
