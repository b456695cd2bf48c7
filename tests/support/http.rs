//! A raw HTTP/1.1 client: requests are bytes the test writes (absolute-form, odd headers, a
//! Host that disagrees with the URI), responses are parsed just enough to assert on (status,
//! headers, a body framed by length, chunks or close). Also CONNECT tunnels and TLS over them.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::STEP;

/// A parsed response.
#[derive(Clone, Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names (lowercase) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A keep-alive connection to an HTTP proxy (or server) on which the test writes raw requests.
pub struct HttpConn {
    io: BufReader<TcpStream>,
}

impl HttpConn {
    /// Connects.
    pub async fn connect(addr: SocketAddr) -> HttpConn {
        let tcp = tokio::time::timeout(STEP, TcpStream::connect(addr)).await.expect("connect timed out").unwrap();
        tcp.set_nodelay(true).unwrap();
        HttpConn { io: BufReader::new(tcp) }
    }

    /// A connection the test made itself (e.g. [`super::Netns::connect`]).
    pub fn from_stream(tcp: TcpStream) -> HttpConn {
        HttpConn { io: BufReader::new(tcp) }
    }

    /// The client side's address (the access log's `client`).
    pub fn local_addr(&self) -> SocketAddr {
        self.io.get_ref().local_addr().unwrap()
    }

    /// Writes `raw` as is.
    pub async fn send(&mut self, raw: &[u8]) {
        self.io.get_mut().write_all(raw).await.unwrap();
    }

    /// Reads one response.
    pub async fn read_response(&mut self) -> io::Result<Response> {
        match tokio::time::timeout(STEP, read_response(&mut self.io, true)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no response")),
        }
    }

    /// Writes `raw` and reads the response, panicking on any error.
    pub async fn request(&mut self, raw: &str) -> Response {
        self.send(raw.as_bytes()).await;
        self.read_response().await.unwrap_or_else(|e| panic!("no response to {raw:?}: {e}"))
    }

    /// Waits until the server closes the connection (see [`read_until_closed`]).
    pub async fn closed(self) -> Closed {
        let mut io = self.io;
        let mut leftover = io.buffer().to_vec();
        let mut rest = read_until_closed(io.get_mut(), STEP).await;
        leftover.append(&mut rest.bytes);
        rest.bytes = leftover;
        rest
    }
}

/// `GET http://<authority><path>` with `Host: <host>` (keep-alive).
pub fn get_absolute(authority: &str, path: &str, host: &str) -> String {
    format!("GET http://{authority}{path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: hostgate-e2e\r\n\r\n")
}

/// Reads a response head and its body from `io`. `has_body` is false for responses to HEAD
/// and to a successful CONNECT.
pub async fn read_response<R: AsyncBufRead + Unpin>(io: &mut R, has_body: bool) -> io::Result<Response> {
    let (status, headers) = read_head(io).await?;
    let mut response = Response { status, headers, body: Vec::new() };
    if !has_body || status / 100 == 1 || status == 204 || status == 304 {
        return Ok(response);
    }
    let chunked = response.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        loop {
            let mut line = String::new();
            io.read_line(&mut line).await?;
            let size = line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("bad chunk size {line:?}")))?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    line.clear();
                    if io.read_line(&mut line).await? == 0 || line == "\r\n" {
                        return Ok(response);
                    }
                }
            }
            let start = response.body.len();
            response.body.resize(start + size, 0);
            io.read_exact(&mut response.body[start..]).await?;
            let mut crlf = [0u8; 2];
            io.read_exact(&mut crlf).await?;
        }
    } else if let Some(len) = response.header("content-length") {
        let len: usize =
            len.trim().parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad content-length"))?;
        response.body.resize(len, 0);
        io.read_exact(&mut response.body).await?;
    } else {
        io.read_to_end(&mut response.body).await?;
    }
    Ok(response)
}

/// Reads a response head: the status and the headers (names lowercase).
pub async fn read_head<R: AsyncBufRead + Unpin>(io: &mut R) -> io::Result<(u16, Vec<(String, String)>)> {
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        if io.read_until(b'\n', &mut line).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("closed before the end of the response head (got {lines:?})"),
            ));
        }
        let line = String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            break;
        }
        lines.push(line);
    }
    let status_line = lines.first().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "empty head"))?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("not an HTTP/1 status line: {status_line:?}")));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad status line {status_line:?}")))?;
    let headers = lines[1..]
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok((status, headers))
}

/// Sends `CONNECT authority` to the proxy and reads its answer head one byte at a time (so that
/// nothing of the tunnel is consumed). A non-2xx answer's body is read too. The stream is the
/// tunnel when the status is 200.
pub async fn connect_tunnel(proxy: SocketAddr, authority: &str) -> (TcpStream, Response) {
    let mut tcp = send_connect(proxy, authority).await;
    let response = read_connect_answer(&mut tcp, authority).await;
    (tcp, response)
}

/// Connects to the proxy and writes `CONNECT authority` without waiting for the answer (read it
/// with [`read_connect_answer`]).
pub async fn send_connect(proxy: SocketAddr, authority: &str) -> TcpStream {
    let mut tcp = tokio::time::timeout(STEP, TcpStream::connect(proxy)).await.expect("connect timed out").unwrap();
    tcp.set_nodelay(true).unwrap();
    let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: hostgate-e2e\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    tcp
}

/// Reads the answer to a `CONNECT authority` written on `tcp`, as [`connect_tunnel`] does.
pub async fn read_connect_answer(tcp: &mut TcpStream, authority: &str) -> Response {
    tokio::time::timeout(STEP, async {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let b = tcp.read_u8().await?;
            head.push(b);
        }
        let (status, headers) = read_head(&mut &head[..]).await?;
        let mut response = Response { status, headers, body: Vec::new() };
        if status / 100 != 2 {
            if let Some(len) = response.header("content-length").and_then(|l| l.parse::<usize>().ok()) {
                response.body.resize(len, 0);
                tcp.read_exact(&mut response.body).await?;
            }
        }
        io::Result::Ok(response)
    })
    .await
    .unwrap_or_else(|_| panic!("no answer to CONNECT {authority}"))
    .unwrap_or_else(|e| panic!("bad answer to CONNECT {authority}: {e}"))
}

/// [`connect_tunnel`] that insists on `200`.
pub async fn tunnel(proxy: SocketAddr, authority: &str) -> TcpStream {
    let (tcp, response) = connect_tunnel(proxy, authority).await;
    assert_eq!(response.status, 200, "CONNECT {authority}: {response:?}");
    tcp
}

/// A TLS handshake for `sni` over `io`.
pub async fn tls_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    sni: &str,
    config: ClientConfig,
) -> io::Result<TlsStream<S>> {
    let name = ServerName::try_from(sni.to_string()).unwrap();
    match tokio::time::timeout(STEP, TlsConnector::from(Arc::new(config)).connect(name, io)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")),
    }
}

/// How a connection ended.
#[derive(Clone, Debug)]
pub struct Closed {
    /// Everything read before the end.
    pub bytes: Vec<u8>,
    /// `None` for an orderly end of stream, else the error (e.g. connection reset).
    pub error: Option<io::ErrorKind>,
}

/// Reads until end of stream or an error; panics if neither comes within `timeout`.
pub async fn read_until_closed<R: AsyncRead + Unpin>(io: &mut R, timeout: Duration) -> Closed {
    let mut bytes = Vec::new();
    let result = tokio::time::timeout(timeout, async {
        let mut buf = [0u8; 4096];
        loop {
            match io.read(&mut buf).await {
                Ok(0) => return None,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
                Err(e) => return Some(e.kind()),
            }
        }
    })
    .await;
    match result {
        Ok(error) => Closed { bytes, error },
        Err(_) => panic!("still open after {timeout:?} (read {} bytes: {:02x?})", bytes.len(), bytes),
    }
}

/// Asserts that what the gateway sent before closing is nothing or a single TLS alert
/// `access_denied`.
pub fn assert_alert_or_nothing(closed: &Closed) {
    assert!(
        closed.bytes.is_empty() || closed.bytes == super::ALERT_ACCESS_DENIED,
        "expected a close, optionally after an access_denied alert; got {:02x?} then {:?}",
        closed.bytes,
        closed.error
    );
}

/// Asserts that `x-hostgate-reason`, when present, is a fixed token (lowercase letters, digits,
/// `-`): never something the client wrote.
pub fn assert_reason_token(response: &Response) {
    if let Some(reason) = response.header("x-hostgate-reason") {
        assert!(
            !reason.is_empty() && reason.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "x-hostgate-reason {reason:?} is not a token: {response:?}"
        );
    }
}
