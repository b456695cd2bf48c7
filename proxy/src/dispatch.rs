//! The one dispatch after the sniff, for every listener: a redirected connection and a CONNECT
//! tunnel alike go from what their first bytes are to what happens to them.
//!
//! ```text
//! sniffed ─┬─ refused (timeout, malformed, too large) ─► refuse (alert or close)
//!          ├─ TLS ─► SNI checks, decide (by name; by address without one) ─┬─ deny ─► access_denied alert
//!          │                             ├─ allow + [inspect] ─► crate::intercept
//!          │                             └─ bypass / uninspected ─► connect ─► relay
//!          ├─ HTTP ─► crate::forward (each request decided)
//!          └─ unknown ─► the address rules, or the default ─► connect ─► relay, or close
//! ```
//!
//! This module owns the TLS decision (SNI validation, the CONNECT-host match, the policy
//! lookup), whether an allowed connection is inspected or spliced (and the record's
//! `inspection` saying which and why), the upstream connect of a redirected connection (a
//! CONNECT tunnel arrives connected), and turning the relay's end into the record. It does not
//! sniff or accept.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::BytesMut;
use hostgate_matcher::Host;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::access::{Inspection, Protocol};
use crate::config::{EchPolicy, NonHttp};
use crate::conn::Conn;
use crate::forward::{Pipeline, Scope};
use crate::outcome::{Failure, Outcome};
use crate::policy::{Action, Scheme};
use crate::relay::{refuse, IntoTcp, Relay};
use crate::sniff::tls::ClientHello;
use crate::sniff::Sniffed;
use crate::stream::Prefixed;
use crate::upstream::Target;

/// Where a sniffed connection goes once allowed.
#[derive(Debug)]
// One per connection, moved a handful of times: the size of the inline `Host` does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Dest {
    /// A redirected connection: connect by name (per `verify_destination`) on the original port.
    Transparent {
        /// The client's original destination.
        original: SocketAddr,
    },
    /// A connection to an SNI listener: connect to the name (the SNI or `Host`) on `port`.
    Steered {
        /// The listener's upstream port.
        port: u16,
        /// The address the client connected to (the gateway's own): never an upstream.
        local: Option<SocketAddr>,
    },
    /// A CONNECT tunnel, already connected upstream.
    Connected {
        /// The CONNECT host, normalised (boxed: a `Host` is 300 bytes, and every `Dest` and
        /// every future holding one would be that much larger).
        host: Box<Host>,
        /// The CONNECT port.
        port: u16,
        /// The upstream connection.
        upstream: TcpStream,
        /// Its address.
        addr: SocketAddr,
    },
}

impl Dest {
    fn port(&self) -> u16 {
        match self {
            Dest::Transparent { original } => original.port(),
            Dest::Steered { port, .. } | Dest::Connected { port, .. } => *port,
        }
    }

    fn original(&self) -> Option<SocketAddr> {
        match self {
            Dest::Transparent { original } => Some(*original),
            Dest::Steered { .. } | Dest::Connected { .. } => None,
        }
    }

    /// The address a connection without a name is decided by: a redirected connection's
    /// original destination, or a CONNECT target that is an IP literal. A CONNECT to a name
    /// has none: what runs inside was not named, and the gateway, not the client, chose the
    /// address.
    fn address(&self) -> Option<IpAddr> {
        match self {
            Dest::Transparent { original } => Some(original.ip()),
            // The client reached the gateway: the address names nothing.
            Dest::Steered { .. } => None,
            Dest::Connected { host, .. } => crate::generation::literal(host),
        }
    }

    /// The upstream connection: the CONNECT tunnel's, or a new one to `name` (or, without a
    /// name, the original destination) for a redirected connection.
    async fn connect(self, conn: &Conn, name: Option<&str>) -> Result<(TcpStream, SocketAddr), Failure> {
        match self {
            Dest::Connected { upstream, addr, .. } => Ok((upstream, addr)),
            Dest::Transparent { original } => {
                conn.gen
                    .connector
                    .connect(Target { name, port: original.port(), original: Some(original), group: conn.group })
                    .await
            }
            Dest::Steered { port, local } => {
                let Some(name) = name else {
                    return Err(Failure::new(
                        Outcome::UnknownProtocol,
                        "no name to route by (an SNI listener connects to the SNI or Host)",
                    ));
                };
                let (upstream, addr) = conn
                    .gen
                    .connector
                    .connect(Target { name: Some(name), port, original: None, group: conn.group })
                    .await?;
                if local.is_some_and(|l| same_socket(l, addr)) {
                    return Err(Failure::new(
                        Outcome::Mismatch,
                        format!("{name} resolves to the gateway itself ({addr}): its resolver must answer the real addresses, not the steering ones"),
                    ));
                }
                Ok((upstream, addr))
            }
        }
    }
}

/// Whether two socket addresses are one (an IPv4-mapped IPv6 address is its IPv4 address).
fn same_socket(a: SocketAddr, b: SocketAddr) -> bool {
    let canon = |s: SocketAddr| match s.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(s, |v4| SocketAddr::from((v4, s.port()))),
        IpAddr::V4(_) => s,
    };
    canon(a) == canon(b)
}

/// What a listener without a proxy protocol does once a connection is accepted (and, on the
/// transparent listener, found redirected): a client that sent nothing within `sniff.timeout`
/// is closed (no alert: nothing says it speaks TLS); otherwise its first bytes (`early`, then
/// what follows) are sniffed and the connection dispatched to `dest`. The sniff phase's
/// duration counts from the accept.
pub(crate) async fn sniff_and_dispatch(
    conn: Conn,
    mut stream: TcpStream,
    readable: bool,
    early: Option<BytesMut>,
    dest: Dest,
) -> Option<Relay<TcpStream>> {
    let accepted = conn.access.started;
    if !readable {
        conn.gen.metrics.sniff_latency(accepted.elapsed());
        let f = crate::sniff::timed_out(&conn.gen.sniff, 0);
        refuse(conn, stream, f, false).await;
        return None;
    }
    let mut buf = early.unwrap_or_default();
    let sniffed = crate::sniff::sniff_until(&mut stream, &mut buf, &conn.gen.sniff, conn.deadline).await;
    conn.gen.metrics.sniff_latency(accepted.elapsed());
    dispatch(conn, stream, buf, sniffed, dest).await
}

/// Acts on what the sniffer found in `client`'s first bytes (`buf`, replayed to whoever
/// reads next). A connection to relay is handed back, connected: the caller runs the
/// [`Relay`] at the top of the connection's task.
pub(crate) async fn dispatch<C>(
    mut conn: Conn,
    client: C,
    buf: BytesMut,
    sniffed: Result<Sniffed, Failure>,
    dest: Dest,
) -> Option<Relay<C>>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + IntoTcp + 'static,
{
    match sniffed {
        Err(f) => {
            let alert = f.outcome.tls_alert();
            refuse(conn, client, f, alert).await;
            None
        }
        Ok(Sniffed::Tls(hello)) => tls(conn, client, buf, hello, dest).await,
        Ok(Sniffed::Unknown) => opaque(conn, client, buf, dest).await,
        Ok(Sniffed::Http) => {
            let scope = match dest {
                Dest::Transparent { original } => Scope::Transparent { original },
                Dest::Steered { port, .. } => Scope::Steered { port },
                Dest::Connected { host, port, .. } => {
                    // Plain HTTP in a tunnel: every request is decided, and must name the
                    // CONNECT host; each goes out on a connection of its own.
                    conn.access.upstream = None;
                    Scope::Tunnel { host: *host, port }
                }
            };
            // Boxed: hyper's connection future would make every connection's task as large.
            Box::pin(serve_http(conn, Prefixed::new(buf.freeze(), client), scope)).await;
            None
        }
    }
}

/// Serves plain HTTP on a sniffed connection: hyper reads the requests (the sniffed bytes
/// first), the pipeline decides and forwards each.
async fn serve_http<C>(conn: Conn, client: Prefixed<C>, scope: Scope)
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeout = conn.gen.sniff.timeout;
    let pipeline = Arc::new(Pipeline::new(&conn, crate::access::Access::clone(&conn.access), scope));
    let svc = {
        let pipeline = pipeline.clone();
        service_fn(move |req| pipeline.clone().handle(req))
    };
    pipeline.ended(crate::forward::server(timeout).serve_connection(TokioIo::new(client), svc).await);
}

/// Decides a TLS connection by its ClientHello, then inspects or refuses it, or hands it back
/// connected, to relay.
async fn tls<C>(mut conn: Conn, client: C, buf: BytesMut, hello: ClientHello, dest: Dest) -> Option<Relay<C>>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + IntoTcp + 'static,
{
    let sni = hello.sni.as_deref().map(Host::new).transpose();
    conn.access.hello(hello);
    let sni = match sni {
        Ok(sni) => sni,
        Err(e) => {
            let f = Failure::new(Outcome::MalformedClientHello, format!("server name: {e}"));
            return refused(conn, client, f, true).await;
        }
    };
    // The name the decision and the upstream use: the SNI, or for a CONNECT tunnel without one,
    // the CONNECT host.
    let name = match (&dest, sni) {
        (Dest::Connected { host, .. }, Some(sni)) if sni.as_str() != host.as_str() => {
            let detail = format!("SNI {} is not the CONNECT host {}", sni.as_str(), host.as_str());
            return refused(conn, client, Failure::new(Outcome::Mismatch, detail), true).await;
        }
        (_, Some(sni)) => Some(sni),
        (Dest::Connected { host, .. }, None) => Some(Host::clone(host)),
        (Dest::Transparent { .. }, None) => None,
        (Dest::Steered { .. }, None) => {
            let f = Failure::new(Outcome::Denied, "no server name: an SNI listener routes by the name");
            return refused(conn, client, f, true).await;
        }
    };
    // A real Encrypted ClientHello (the extension, and a listed provider's public name outside):
    // what the operator chose for it. The extension under another name is GREASE.
    let sniff = &conn.gen.sniff;
    let ech = conn.access.tls.as_ref().is_some_and(|t| t.ech)
        && name.as_ref().is_some_and(|n| sniff.ech_public_names.iter().any(|p| p == n.as_str()));
    if let Some(t) = conn.access.tls.as_mut() {
        t.ech_real = ech;
    }
    if ech && sniff.ech == EchPolicy::Deny {
        let detail = "Encrypted ClientHello to a provider's public name; [sniff] ech = \"deny\"";
        conn.access.action = Some(Action::Deny);
        return refused(conn, client, Failure::new(Outcome::Denied, detail), true).await;
    }
    let port = dest.port();
    let mut decision =
        conn.gen.decide_target(name.as_ref(), dest.address(), Some(Scheme::Https), port, None, conn.group, true);
    if ech && sniff.ech == EchPolicy::Report && decision.action != Action::Deny {
        decision.would_deny = true;
    }
    conn.access.decided(&decision);
    if decision.action == Action::Deny {
        let detail =
            if name.is_some() || decision.rule.is_some() { "policy" } else { "no server name; default action" };
        return refused(conn, client, Failure::new(Outcome::Denied, detail), true).await;
    }
    let handling = match handling(&conn, decision.action, name.as_ref()) {
        Ok(h) => h,
        Err(f) => return refused(conn, client, f, true).await,
    };
    conn.gen.metrics.tls_handling(match &handling {
        Handling::Inspect(..) => Inspection::Inspected.as_str(),
        Handling::Relay(why) => why.as_str(),
    });
    // Boxed, like the rare paths below: what a connection's task holds for its whole life is
    // its largest state, and an idle tunnel should hold little more than the relay's.
    let original = dest.original();
    let (upstream, addr) = match Box::pin(dest.connect(&conn, name.as_ref().map(Host::as_str))).await {
        Ok(c) => c,
        Err(f) => {
            let alert = f.outcome.tls_alert();
            return refused(conn, client, f, alert).await;
        }
    };
    conn.access.upstream = Some(addr);
    match handling {
        Handling::Inspect(name, alpn) => {
            let scope = Scope::Inspected { name, port, original };
            // Boxed: the inspection future (two TLS sessions, hyper) is large; only inspected
            // connections pay for it.
            Box::pin(crate::intercept::intercept(conn, client, buf, alpn, scope, upstream)).await;
            None
        }
        Handling::Relay(why) => {
            conn.access.inspection = Some(why);
            Some(Relay { conn, client, upstream, prefix: buf.freeze() })
        }
    }
}

/// What happens to an allowed TLS connection.
// Made once per connection and matched at once: the size of the inline `Host` does not matter.
#[allow(clippy::large_enum_variant)]
enum Handling {
    /// Inspected: terminated for this name, offering the upstream these HTTP protocols.
    Inspect(Host, Vec<Vec<u8>>),
    /// Relayed opaquely, and why.
    Relay(Inspection),
}

/// Whether an allowed TLS connection is inspected, or why it is relayed opaquely: `bypass`
/// never is, nor anything when inspection is off, nor a connection without a name to mint a
/// certificate for, nor (per `inspect.non_http`) one whose ALPN offers no HTTP protocol.
///
/// # Errors
/// `unknown-protocol` for that last case with `inspect.non_http = "deny"`.
fn handling(conn: &Conn, action: Action, name: Option<&Host>) -> Result<Handling, Failure> {
    if action == Action::Bypass {
        return Ok(Handling::Relay(Inspection::Bypass));
    }
    let Some(inspector) = &conn.gen.inspect else { return Ok(Handling::Relay(Inspection::Off)) };
    let Some(name) = name else { return Ok(Handling::Relay(Inspection::NoSni)) };
    let offered = conn.access.tls.as_ref().map(|t| t.alpn.as_slice()).unwrap_or_default();
    match crate::inspect::http_alpn(offered) {
        Some(alpn) => Ok(Handling::Inspect(name.clone(), alpn)),
        None if inspector.config().non_http == NonHttp::Relay => Ok(Handling::Relay(Inspection::NonHttp)),
        None => Err(Failure::new(
            Outcome::UnknownProtocol,
            format!("ALPN {} is not HTTP; inspect.non_http = \"deny\"", offered.join(",")),
        )),
    }
}

/// A stream that is neither TLS nor HTTP: the default action decides.
async fn opaque<C>(mut conn: Conn, client: C, buf: BytesMut, dest: Dest) -> Option<Relay<C>>
where
    C: AsyncRead + AsyncWrite + Unpin + IntoTcp,
{
    conn.access.protocol = Protocol::Unknown;
    // Without a name the address rules decide (the original destination, an IP-literal CONNECT
    // target), or the default action, whatever a CONNECT host name matched.
    let decision = conn.gen.decide_target(None, dest.address(), None, dest.port(), None, conn.group, false);
    conn.access.decided(&decision);
    // Not TLS: refusals are a plain close, never an alert.
    if decision.action == Action::Deny {
        let detail = if decision.rule.is_some() {
            "neither TLS nor HTTP; an address rule denies"
        } else {
            "neither TLS nor HTTP; default action deny"
        };
        return refused(conn, client, Failure::new(Outcome::UnknownProtocol, detail), false).await;
    }
    let (upstream, addr) = match Box::pin(dest.connect(&conn, None)).await {
        Ok(c) => c,
        Err(f) => return refused(conn, client, f, false).await,
    };
    conn.access.upstream = Some(addr);
    Some(Relay { conn, client, upstream, prefix: buf.freeze() })
}

/// [`refuse`], for a phase that hands back a connection to relay: nothing to relay.
async fn refused<C: AsyncRead + AsyncWrite + Unpin + IntoTcp>(
    conn: Conn,
    client: C,
    f: Failure,
    alert: bool,
) -> Option<Relay<C>> {
    // Boxed: the refusal's future (its alert, the lingering close) would otherwise make the
    // future of every connection, refused or not, that much larger.
    Box::pin(refuse(conn, client, f, alert)).await;
    None
}
