//! A request's target: where its requests come from ([`Scope`]), and the one parse of a
//! request's host, port and path that every scope shares ([`RequestTarget::parse`]).
//!
//! This module owns the checks that make a request's target unambiguous before it is decided:
//! one Host header at most, no userinfo, the Host header and an absolute-form URI agreeing, the
//! request naming the place its connection was decided for (the original port, the CONNECT
//! host, the inspected name's port), the head size. It does not decide or forward.

use std::net::SocketAddr;

use hostgate_matcher::Host;
use http::header::{self, HeaderMap};
use http::uri::{Authority, Scheme as UriScheme};
use http::{Method, Request};

use crate::normalize::{normalize, Slashes};
use crate::outcome::{Failure, Outcome};
use crate::policy::Scheme;

/// Where a connection's requests come from, which decides how their target is found and
/// where they go.
#[derive(Clone, Debug)]
// One per connection, moved a handful of times: the size of the inline `Host` does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Scope {
    /// Absolute-form requests to the explicit proxy (`GET http://host/path`).
    Proxy,
    /// Origin-form requests on a redirected connection to `original`.
    Transparent {
        /// The client's original destination.
        original: SocketAddr,
    },
    /// Origin-form requests on a connection to an SNI listener, routed by `Host` to `port`.
    Steered {
        /// The listener's upstream port.
        port: u16,
    },
    /// Origin-form requests inside a CONNECT tunnel to `host:port`.
    Tunnel {
        /// The CONNECT host, normalised.
        host: Host,
        /// The CONNECT port.
        port: u16,
    },
    /// Requests inside an inspected TLS connection for `name` on `port`.
    Inspected {
        /// The name the connection was decided and its certificate minted for: the SNI, or
        /// the CONNECT host.
        name: Host,
        /// The destination port.
        port: u16,
        /// A redirected connection's original destination.
        original: Option<SocketAddr>,
    },
}

impl Scope {
    /// The scheme requests are decided with.
    pub(crate) fn scheme(&self) -> Scheme {
        match self {
            Scope::Inspected { .. } => Scheme::Https,
            _ => Scheme::Http,
        }
    }

    /// The port a request's authority defaults to.
    fn default_port(&self) -> u16 {
        match self {
            Scope::Proxy => 80,
            Scope::Transparent { original } => original.port(),
            Scope::Steered { port } | Scope::Tunnel { port, .. } | Scope::Inspected { port, .. } => *port,
        }
    }

    /// A redirected connection's original destination.
    pub(crate) fn original(&self) -> Option<SocketAddr> {
        match self {
            Scope::Transparent { original } => Some(*original),
            Scope::Inspected { original, .. } => *original,
            Scope::Proxy | Scope::Steered { .. } | Scope::Tunnel { .. } => None,
        }
    }
}

/// A request's target once checked.
#[derive(Debug)]
pub(crate) struct RequestTarget {
    /// The host, normalised.
    pub(crate) host: Host,
    /// The port (the scope's default when the authority has none).
    pub(crate) port: u16,
    /// The path and query, `/` when empty.
    pub(crate) path: String,
    /// The authority the request named (URI, or else Host), as written.
    pub(crate) authority: Authority,
}

impl RequestTarget {
    /// Finds and checks a request's host, port and path in `scope`.
    ///
    /// # Errors
    /// `bad-request` for an unusable target (two Host headers, userinfo, a CONNECT, another
    /// scheme, an authority-form or, to the explicit proxy, an origin-form target, no host);
    /// `mismatch` when the Host header and the URI, or the request and its connection, name
    /// different places; `head-too-large` for a head over [`MAX_HEAD`].
    pub(crate) fn parse<B>(req: &Request<B>, scope: &Scope, slashes: Slashes) -> Result<RequestTarget, Failure> {
        head_fits(req)?;
        let path = normalized_path(req, slashes)?;
        let host_header = host_header(req.headers())?;
        if req.method() == Method::CONNECT {
            return Err(Failure::new(Outcome::BadRequest, "CONNECT is only served by a connect listener"));
        }
        let uri_authority = uri_authority(req, scope)?;
        let default_port = scope.default_port();
        let authority = match (uri_authority, host_header) {
            (Some(u), Some(h)) => {
                if !same_authority(&u, &h, default_port) {
                    return Err(Failure::new(Outcome::Mismatch, "Host header disagrees with the request URI"));
                }
                u
            }
            (Some(u), None) => u,
            (None, _) if matches!(scope, Scope::Proxy) => {
                return Err(Failure::new(Outcome::BadRequest, "origin-form request to the explicit proxy"));
            }
            (None, Some(h)) => h,
            (None, None) => return Err(Failure::new(Outcome::BadRequest, "no Host header")),
        };
        no_userinfo(&authority)?;
        let host =
            authority_host(&authority).map_err(|e| Failure::new(Outcome::BadRequest, format!("request host: {e}")))?;
        let port = authority.port_u16().unwrap_or(default_port);
        same_place(scope, &host, port)?;
        Ok(RequestTarget { host, port, path, authority })
    }

    /// The authority the request goes upstream with (its Host, or HTTP/2 `:authority`): the
    /// normalised host, and the port unless it is the scheme's default.
    pub(crate) fn upstream_authority(&self, scheme: Scheme) -> String {
        let default = match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        };
        // A `Host` is a name or an IPv4 address: never an IPv6 literal, so never bracketed.
        let host = self.host.as_str();
        if self.port == default {
            host.to_string()
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// The request's path and query, normalised ([`crate::normalize`]); `OPTIONS *` keeps its `*`.
fn normalized_path<B>(req: &Request<B>, slashes: Slashes) -> Result<String, Failure> {
    let raw = req.uri().path_and_query().map_or("", |p| p.as_str());
    if raw == "*" && req.method() == Method::OPTIONS {
        return Ok(raw.to_string());
    }
    match normalize(raw, slashes) {
        Ok(path) => Ok(path.into_owned()),
        Err(e) => Err(Failure::new(Outcome::BadRequest, format!("request target refused: {e}"))),
    }
}

/// The authority of an absolute-form URI (or of an HTTP/2 request's `:authority`), when the
/// scheme is the scope's.
fn uri_authority<B>(req: &Request<B>, scope: &Scope) -> Result<Option<Authority>, Failure> {
    let uri = req.uri();
    let wanted = match scope.scheme() {
        Scheme::Https => UriScheme::HTTPS,
        Scheme::Http => UriScheme::HTTP,
    };
    match (uri.scheme(), uri.authority()) {
        (Some(s), Some(a)) if *s == wanted => Ok(Some(a.clone())),
        (Some(s), Some(_)) if *s == UriScheme::HTTPS => {
            Err(Failure::new(Outcome::BadRequest, "https:// request-target; use CONNECT for TLS"))
        }
        (Some(_), _) => Err(Failure::new(Outcome::BadRequest, "request-target scheme is not the connection's")),
        (None, Some(_)) => Err(Failure::new(Outcome::BadRequest, "authority-form request-target")),
        (None, None) => Ok(None),
    }
}

/// Checks that a request names the place its connection was decided for.
fn same_place(scope: &Scope, host: &Host, port: u16) -> Result<(), Failure> {
    match scope {
        Scope::Proxy => Ok(()),
        Scope::Transparent { original } if port != original.port() => {
            Err(Failure::new(Outcome::Mismatch, "Host port differs from the original destination port"))
        }
        Scope::Tunnel { host: tunnel_host, port: tunnel_port }
            if host.as_str() != tunnel_host.as_str() || port != *tunnel_port =>
        {
            Err(Failure::new(Outcome::Mismatch, "request host is not the CONNECT host"))
        }
        Scope::Steered { port: listener_port } if port != *listener_port => {
            Err(Failure::new(Outcome::Mismatch, "Host port differs from the SNI listener's upstream port"))
        }
        Scope::Inspected { port: conn_port, .. } if port != *conn_port => {
            Err(Failure::new(Outcome::Mismatch, "request port differs from the connection's port"))
        }
        _ => Ok(()),
    }
}

/// The host of an authority, normalised (an IPv6 literal without its brackets): the one place
/// a CONNECT target, a Host header or a request URI becomes a [`Host`].
///
/// # Errors
/// The name is not a valid host name or address.
pub(crate) fn authority_host(authority: &Authority) -> Result<Host, hostgate_matcher::InvalidHost> {
    let host = authority.host();
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    Host::new(host)
}

/// The most a request head (request line and headers) may take.
pub(crate) const MAX_HEAD: usize = 64 * 1024;

/// Refuses a request whose head is over [`MAX_HEAD`]. hyper's buffer limit holds it only
/// between reads, so a larger head arriving in one burst can get through its parser.
fn head_fits<B>(req: &Request<B>) -> Result<(), Failure> {
    let uri = req.uri();
    let uri_len = uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len());
    let line = req.method().as_str().len() + uri_len + 12;
    let size = req.headers().iter().fold(line, |n, (name, value)| n + name.as_str().len() + value.len() + 4);
    if size > MAX_HEAD {
        return Err(Failure::new(Outcome::HeadTooLarge, format!("request head of {size} bytes (at most {MAX_HEAD})")));
    }
    Ok(())
}

/// The Host header as an authority; `None` when there is none.
fn host_header(headers: &HeaderMap) -> Result<Option<Authority>, Failure> {
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
fn no_userinfo(authority: &Authority) -> Result<(), Failure> {
    if authority.as_str().contains('@') {
        return Err(Failure::new(Outcome::BadRequest, "userinfo in the request's authority"));
    }
    Ok(())
}

/// Whether a URI authority and a Host header name the same place (case-insensitive host,
/// default port filled in).
fn same_authority(a: &Authority, b: &Authority, default_port: u16) -> bool {
    a.host().eq_ignore_ascii_case(b.host())
        && a.port_u16().unwrap_or(default_port) == b.port_u16().unwrap_or(default_port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn authorities() {
        let a: Authority = "Example.COM".parse().unwrap();
        let b: Authority = "example.com:80".parse().unwrap();
        let c: Authority = "example.com:8080".parse().unwrap();
        assert!(same_authority(&a, &b, 80));
        assert!(!same_authority(&a, &c, 80));
        let named: Authority = "Example.COM:8080".parse().unwrap();
        assert_eq!(authority_host(&named).unwrap().as_str(), "example.com");
    }

    #[test]
    fn one_parse_for_every_scope() {
        let original: SocketAddr = "192.0.2.1:80".parse().unwrap();
        let t = RequestTarget::parse(&req("/a?b", &["Example.com"]), &Scope::Transparent { original }, Slashes::Refuse)
            .unwrap();
        assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("example.com", 80, "/a?b"));
        let e = RequestTarget::parse(&req("/", &["example.com:81"]), &Scope::Transparent { original }, Slashes::Refuse)
            .unwrap_err();
        assert_eq!(e.outcome, Outcome::Mismatch);
        let e =
            RequestTarget::parse(&req("/", &["a.test", "b.test"]), &Scope::Transparent { original }, Slashes::Refuse)
                .unwrap_err();
        assert_eq!(e.outcome, Outcome::BadRequest);
        let e = RequestTarget::parse(&req("/", &["a.test"]), &Scope::Proxy, Slashes::Refuse).unwrap_err();
        assert_eq!(e.detail, "origin-form request to the explicit proxy");
        let t = RequestTarget::parse(&req("http://a.test/x", &[]), &Scope::Proxy, Slashes::Refuse).unwrap();
        assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("a.test", 80, "/x"));
        let e = RequestTarget::parse(&req("https://a.test/x", &[]), &Scope::Proxy, Slashes::Refuse).unwrap_err();
        assert_eq!(e.outcome, Outcome::BadRequest);
        let e = RequestTarget::parse(&req("http://a.test/", &["b.test"]), &Scope::Proxy, Slashes::Refuse).unwrap_err();
        assert_eq!(e.outcome, Outcome::Mismatch);
        let e = RequestTarget::parse(&req("http://u@a.test/", &[]), &Scope::Proxy, Slashes::Refuse).unwrap_err();
        assert_eq!(e.outcome, Outcome::BadRequest);
        let tunnel = Scope::Tunnel { host: Host::new("a.test").unwrap(), port: 80 };
        let e = RequestTarget::parse(&req("/", &["b.test"]), &tunnel, Slashes::Refuse).unwrap_err();
        assert_eq!(e.outcome, Outcome::Mismatch);
        let inspected = Scope::Inspected { name: Host::new("a.test").unwrap(), port: 443, original: None };
        let t = RequestTarget::parse(&req("https://a.test/p", &[]), &inspected, Slashes::Refuse).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("a.test", 443));
        let e = RequestTarget::parse(&req("/", &["a.test:444"]), &inspected, Slashes::Refuse).unwrap_err();
        assert_eq!(e.outcome, Outcome::Mismatch);
    }

    #[test]
    fn targets_are_normalised_before_anything_sees_them() {
        let t =
            RequestTarget::parse(&req("http://A.test:80/ok/%2e%2e/no", &[]), &Scope::Proxy, Slashes::Refuse).unwrap();
        assert_eq!((t.path.as_str(), t.upstream_authority(Scheme::Http).as_str()), ("/no", "a.test"));
        let e =
            RequestTarget::parse(&req("http://a.test/ok/..%2fno", &[]), &Scope::Proxy, Slashes::Refuse).unwrap_err();
        assert_eq!(e.outcome, Outcome::BadRequest);
        assert!(e.detail.starts_with("request target refused"), "{}", e.detail);
        let inspected = Scope::Inspected { name: Host::new("a.test").unwrap(), port: 8443, original: None };
        let t = RequestTarget::parse(&req("/x", &["a.test:8443"]), &inspected, Slashes::Refuse).unwrap();
        assert_eq!(t.upstream_authority(Scheme::Https), "a.test:8443");
    }

    #[test]
    fn heads_over_the_limit_are_refused() {
        let mut r = req("http://a.test/", &[]);
        r.headers_mut().insert("x-long", http::HeaderValue::from_str(&"a".repeat(MAX_HEAD)).unwrap());
        let e = RequestTarget::parse(&r, &Scope::Proxy, Slashes::Refuse).unwrap_err();
        assert_eq!(e.outcome, Outcome::HeadTooLarge);
    }
}
