//! How a connection or request ended, who is to blame, and what the client is shown.
//!
//! Every failure in the data path becomes a [`Failure`]; this module alone maps it to what the
//! client sees and sends it: an HTTP status with `x-hostgate-reason` ([`http_refusal`]), or, on
//! a byte stream, a TLS `access_denied` alert and a lingering close ([`refuse_stream`]). It also
//! gives the access log its `outcome` field. It does not log: the caller records the failure.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The access log's `outcome`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Relayed or forwarded to the end.
    Ok,
    /// The policy said deny.
    Denied,
    /// The names a client gave disagree: SNI and CONNECT host, Host header and request URI, or
    /// the original destination and the name's addresses (`verify_destination = "original-in-dns"`).
    Mismatch,
    /// The name's addresses are private, loopback or otherwise not for the outside world.
    Ssrf,
    /// The name does not resolve.
    ResolveFailed,
    /// The upstream refused the connection (or it failed before connecting).
    UpstreamRefused,
    /// The upstream did not accept within `upstream.connect_timeout`.
    UpstreamTimeout,
    /// The upstream broke the exchange after connecting.
    UpstreamError,
    /// The client sent nothing decidable within `sniff.timeout`.
    Timeout,
    /// The ClientHello is malformed, has two host names, or an invalid name.
    MalformedClientHello,
    /// The ClientHello is larger than `sniff.max_bytes`.
    ClientHelloTooLarge,
    /// Neither TLS nor HTTP.
    UnknownProtocol,
    /// A connection reached the transparent listener without being redirected.
    NotRedirected,
    /// An HTTP request the gateway cannot forward (no host, bad URI, unsupported form).
    BadRequest,
    /// An HTTP request head over 64 KiB (the request line and headers).
    HeadTooLarge,
    /// The relay carried no bytes for `upstream.idle_timeout`.
    IdleTimeout,
    /// The client broke the exchange (reset, or closed before the response).
    ClientError,
    /// Inside an inspected connection, a request named another host than the SNI (domain
    /// fronting), and no rule allows that host on its own.
    Fronting,
    /// The upstream's certificate did not verify (untrusted issuer, wrong name, expired, …).
    UpstreamCertificate,
    /// The TLS handshake with the upstream failed for another reason (an alert, no common
    /// protocol version or cipher suite, a timeout).
    UpstreamTls,
    /// The gateway itself failed (a leaf certificate could not be minted).
    Internal,
    /// The gateway ran out of a local resource it needed for this connection: file descriptors,
    /// socket buffers, memory or ephemeral ports (the upstream connect failed with `EMFILE`,
    /// `ENFILE`, `ENOBUFS`, `ENOMEM` or `EADDRNOTAVAIL`). The upstream was never asked.
    LocalResources,
    /// The explicit proxy needs credentials for what was asked and got none, or bad ones
    /// (`407` with `Proxy-Authenticate`).
    AuthRequired,
    /// Too many failed sign-ins from the client's address lately (`429`).
    AuthThrottled,
    /// The directory that checks passwords did not answer (`503`): authentication fails closed.
    AuthUnavailable,
    /// The parent proxy (`[upstream] parent`) refused the CONNECT, or did not answer it in HTTP.
    ParentRefused,
    /// The parent proxy could not be reached (resolved, connected to) or did not answer.
    ParentUnreachable,
}

impl Outcome {
    /// The log spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Mismatch => "mismatch",
            Outcome::Ssrf => "ssrf",
            Outcome::ResolveFailed => "resolve-failed",
            Outcome::UpstreamRefused => "upstream-refused",
            Outcome::UpstreamTimeout => "upstream-timeout",
            Outcome::UpstreamError => "upstream-error",
            Outcome::Timeout => "timeout",
            Outcome::MalformedClientHello => "malformed-clienthello",
            Outcome::ClientHelloTooLarge => "clienthello-too-large",
            Outcome::UnknownProtocol => "unknown-protocol",
            Outcome::NotRedirected => "not-redirected",
            Outcome::BadRequest => "bad-request",
            Outcome::HeadTooLarge => "head-too-large",
            Outcome::IdleTimeout => "idle-timeout",
            Outcome::ClientError => "client-error",
            Outcome::Fronting => "fronting",
            Outcome::UpstreamCertificate => "upstream-certificate",
            Outcome::UpstreamTls => "upstream-tls",
            Outcome::Internal => "internal",
            Outcome::LocalResources => "local-resources",
            Outcome::AuthRequired => "auth-required",
            Outcome::AuthThrottled => "auth-throttled",
            Outcome::AuthUnavailable => "auth-unavailable",
            Outcome::ParentRefused => "parent-refused",
            Outcome::ParentUnreachable => "parent-unreachable",
        }
    }

    /// Who caused it.
    pub fn blame(self) -> Blame {
        match self {
            Outcome::Ok => Blame::None,
            Outcome::Denied | Outcome::Ssrf | Outcome::Fronting => Blame::Policy,
            Outcome::Internal | Outcome::LocalResources | Outcome::AuthUnavailable => Blame::Internal,
            Outcome::ResolveFailed
            | Outcome::UpstreamCertificate
            | Outcome::UpstreamTls
            | Outcome::UpstreamRefused
            | Outcome::UpstreamTimeout
            | Outcome::UpstreamError
            | Outcome::IdleTimeout
            | Outcome::ParentRefused
            | Outcome::ParentUnreachable => Blame::Upstream,
            Outcome::Mismatch
            | Outcome::Timeout
            | Outcome::MalformedClientHello
            | Outcome::ClientHelloTooLarge
            | Outcome::UnknownProtocol
            | Outcome::NotRedirected
            | Outcome::BadRequest
            | Outcome::HeadTooLarge
            | Outcome::ClientError
            | Outcome::AuthRequired
            | Outcome::AuthThrottled => Blame::Client,
        }
    }

    /// The status a plain-HTTP or CONNECT client gets.
    pub fn status(self) -> StatusCode {
        match self {
            Outcome::Ok => StatusCode::OK,
            Outcome::Denied | Outcome::Ssrf | Outcome::Mismatch | Outcome::NotRedirected | Outcome::Fronting => {
                StatusCode::FORBIDDEN
            }
            Outcome::ResolveFailed
            | Outcome::UpstreamRefused
            | Outcome::UpstreamError
            | Outcome::UpstreamCertificate
            | Outcome::UpstreamTls
            | Outcome::ParentRefused
            | Outcome::ParentUnreachable => StatusCode::BAD_GATEWAY,
            Outcome::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Outcome::LocalResources | Outcome::AuthUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Outcome::AuthRequired => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            Outcome::AuthThrottled => StatusCode::TOO_MANY_REQUESTS,
            Outcome::UpstreamTimeout | Outcome::IdleTimeout => StatusCode::GATEWAY_TIMEOUT,
            Outcome::Timeout => StatusCode::REQUEST_TIMEOUT,
            Outcome::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Outcome::MalformedClientHello
            | Outcome::ClientHelloTooLarge
            | Outcome::UnknownProtocol
            | Outcome::BadRequest
            | Outcome::ClientError => StatusCode::BAD_REQUEST,
        }
    }

    /// Whether a TLS client is sent an `access_denied` alert before the close (policy refusals
    /// and refused ClientHellos) rather than a bare close (upstream failures, timeouts, and
    /// clients that may not speak TLS at all).
    pub fn tls_alert(self) -> bool {
        matches!(
            self,
            Outcome::Denied
                | Outcome::Ssrf
                | Outcome::Mismatch
                | Outcome::MalformedClientHello
                | Outcome::ClientHelloTooLarge
        )
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who is to blame for a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// Nothing failed.
    None,
    /// The client sent something wrong or nothing at all.
    Client,
    /// The upstream (or DNS) failed.
    Upstream,
    /// The policy refused.
    Policy,
    /// The gateway failed.
    Internal,
}

/// A failure of the data path: the outcome and a detail for the log (never sent to clients).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What happened.
    pub outcome: Outcome,
    /// Why, for the access log.
    pub detail: Cow<'static, str>,
}

impl Failure {
    /// A failure with a detail (a fixed text costs no allocation).
    pub fn new(outcome: Outcome, detail: impl Into<Cow<'static, str>>) -> Failure {
        Failure { outcome, detail: detail.into() }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.outcome, self.detail)
    }
}

/// Whether an I/O error means the gateway itself is out of descriptors, buffers or memory (the
/// accept loop backs off on these; a connect that fails with one is
/// [`Outcome::LocalResources`], not the upstream's fault).
pub fn is_resource_exhaustion(e: &std::io::Error) -> bool {
    use nix::errno::Errno;
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)
    )
}

/// What a failed upstream connect is: the gateway's own shortage ([`is_resource_exhaustion`], or
/// no ephemeral port left: `EADDRNOTAVAIL`) or the upstream's refusal.
pub fn connect_failure(e: &std::io::Error) -> Outcome {
    if is_resource_exhaustion(e) || e.raw_os_error() == Some(nix::errno::Errno::EADDRNOTAVAIL as i32) {
        Outcome::LocalResources
    } else {
        Outcome::UpstreamRefused
    }
}

/// A TLS `access_denied` fatal alert record (TLS 1.2 record version, which TLS 1.3 clients accept
/// for alerts sent before the handshake).
pub const TLS_ACCESS_DENIED: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x31];

/// The response header that names the outcome of a refused request or CONNECT.
pub const REASON_HEADER: &str = "x-hostgate-reason";

/// What an HTTP or CONNECT client is answered for `failure`: the outcome's status, the outcome's
/// fixed token in `x-hostgate-reason` (never client input), and a one-line text body. With
/// `explained` the body also carries the failure's detail: only for details that come from the
/// upstream (a certificate or handshake error), never from the client.
pub fn http_refusal(failure: &Failure, explained: bool) -> Response<Full<Bytes>> {
    let status = failure.outcome.status();
    let reason = failure.outcome.as_str();
    let canonical = status.canonical_reason().unwrap_or("refused");
    let body = if explained {
        format!("hostgate: {canonical} ({reason})\n{}\n", failure.detail)
    } else {
        format!("hostgate: {canonical} ({reason})\n")
    };
    status_response(status, reason, Bytes::from(body))
}

/// A short text response with `x-hostgate-reason: reason`.
fn status_response(status: StatusCode, reason: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    res.headers_mut().insert(HeaderName::from_static(REASON_HEADER), HeaderValue::from_static(reason));
    res
}

/// Refuses a client on a byte stream (a TLS ClientHello or unknown bytes): an `access_denied`
/// alert first when `alert` (see [`Outcome::tls_alert`]; never to a client that did not speak
/// TLS), then [`close`]. Returns the bytes written to the client.
pub async fn refuse_stream<C: AsyncRead + AsyncWrite + Unpin>(client: C, alert: bool) -> u64 {
    refuse_stream_with(client, if alert { &TLS_ACCESS_DENIED } else { &[] }).await
}

/// [`refuse_stream`] with what is left to write of the alert (all of it, the part a first send
/// did not take, or nothing).
pub(crate) async fn refuse_stream_with<C: AsyncRead + AsyncWrite + Unpin>(mut client: C, alert: &[u8]) -> u64 {
    let mut written = 0;
    if !alert.is_empty() && client.write_all(alert).await.is_ok() {
        written = alert.len() as u64;
    }
    close(client).await;
    written
}

/// Closes a client gracefully: flush, FIN, then read and discard what it still sends for a
/// moment, so that unread bytes do not turn the close into a reset that destroys the alert
/// before the client reads it.
pub async fn close<C: AsyncRead + AsyncWrite + Unpin>(mut client: C) {
    let _ = client.flush().await;
    let _ = client.shutdown().await;
    let drain = async {
        // From the thread's pool, not in the future: a buffer there would make every
        // connection's task larger.
        let mut sink = crate::stream::Pooled::take();
        let mut total = 0usize;
        while total < LINGER_BYTES {
            match client.read(&mut sink.0).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// How long, and how many bytes, [`close`] waits for a refused client to go away.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping() {
        assert_eq!(Outcome::Denied.status(), StatusCode::FORBIDDEN);
        assert_eq!(Outcome::UpstreamRefused.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(Outcome::UpstreamTimeout.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(Outcome::Mismatch.tls_alert());
        assert!(!Outcome::UpstreamRefused.tls_alert());
        assert_eq!(Outcome::MalformedClientHello.as_str(), "malformed-clienthello");
        assert_eq!(Outcome::LocalResources.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(Outcome::LocalResources.blame(), Blame::Internal);
    }

    #[test]
    fn refusal_responses_name_the_outcome_and_never_the_detail_unless_explained() {
        let f = Failure::new(Outcome::Denied, "client said <script>");
        let res = http_refusal(&f, false);
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
        assert_eq!(res.headers()[REASON_HEADER], "denied");
        let body = format!("{:?}", res.body());
        assert!(!body.contains("script"), "{body}");
        let res = http_refusal(&Failure::new(Outcome::UpstreamCertificate, "expired"), true);
        assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(res.headers()[REASON_HEADER], "upstream-certificate");
    }

    #[tokio::test]
    async fn refusing_a_stream_sends_the_alert_only_when_asked() {
        let (a, mut b) = tokio::io::duplex(64);
        assert_eq!(refuse_stream(a, true).await, 7);
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, TLS_ACCESS_DENIED);
        let (a, mut b) = tokio::io::duplex(64);
        assert_eq!(refuse_stream(a, false).await, 0);
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert!(got.is_empty());
    }

    #[test]
    fn connect_errors() {
        use std::io::{Error, ErrorKind};
        for errno in
            [nix::libc::EMFILE, nix::libc::ENFILE, nix::libc::ENOBUFS, nix::libc::ENOMEM, nix::libc::EADDRNOTAVAIL]
        {
            assert_eq!(connect_failure(&Error::from_raw_os_error(errno)), Outcome::LocalResources, "{errno}");
        }
        for errno in [nix::libc::ECONNREFUSED, nix::libc::ENETUNREACH, nix::libc::EHOSTUNREACH, nix::libc::ECONNRESET] {
            assert_eq!(connect_failure(&Error::from_raw_os_error(errno)), Outcome::UpstreamRefused, "{errno}");
        }
        assert_eq!(connect_failure(&Error::from(ErrorKind::Other)), Outcome::UpstreamRefused);
        assert!(!is_resource_exhaustion(&Error::from_raw_os_error(nix::libc::EADDRNOTAVAIL)));
    }
}
