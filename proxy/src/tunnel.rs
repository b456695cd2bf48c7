//! Tunnels: a sniffed TLS (or unrecognised) byte stream, decided once by its ClientHello and
//! then relayed opaquely, or, for `allow` with inspection on, handed to [`crate::inspect`].
//!
//! This phase owns the TLS decision (SNI validation, the CONNECT-host match, the policy
//! lookup), whether an allowed connection is inspected or spliced (and the access log's
//! `inspection` field saying which and why), the deny path (an `access_denied` alert, then
//! close) and turning the relay's end into the access record. Transparent connections and CONNECT tunnels both end up here; it
//! does not sniff, and connects upstream only for transparent connections (a CONNECT tunnel
//! arrives already connected).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use hostgate_matcher::Host;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::access::Access;
use crate::config::NonHttp;
use crate::gateway::Shared;
use crate::outcome::{Failure, Outcome, TLS_ACCESS_DENIED};
use crate::policy::{Action, Query, Scheme};
use crate::relay::{relay, relay_tcp, End, IntoTcp};
use crate::sniff::tls::ClientHello;
use crate::upstream::Target;

/// Where a tunnel goes once allowed.
#[derive(Debug)]
// One per connection, moved a handful of times: the size of the inline `Host` does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Dest {
    /// A redirected connection: connect by name (per `verify_destination`) on the original port.
    Transparent {
        /// The client's original destination.
        original: SocketAddr,
    },
    /// A CONNECT tunnel, already connected upstream.
    Connected {
        /// The CONNECT host, normalised.
        host: Host,
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
            Dest::Connected { port, .. } => *port,
        }
    }

    /// The upstream connection: the CONNECT tunnel's, or a new one to `name` (or, without a
    /// name, the original destination) for a redirected connection.
    async fn connect(self, shared: &Shared, name: Option<&str>) -> Result<(TcpStream, SocketAddr), Failure> {
        match self {
            Dest::Connected { upstream, addr, .. } => Ok((upstream, addr)),
            Dest::Transparent { original } => {
                shared.connector.connect(Target { name, port: original.port(), original: Some(original) }).await
            }
        }
    }
}

/// Decides a TLS connection by its ClientHello, then inspects, relays or refuses it.
pub(crate) async fn tls<C>(
    shared: Arc<Shared>,
    mut access: Access,
    client: C,
    buf: BytesMut,
    hello: ClientHello,
    dest: Dest,
) where
    C: AsyncRead + AsyncWrite + Unpin + Send + IntoTcp + 'static,
{
    let policy = &shared.policy;
    access.protocol = Some("tls");
    access.sni = hello.sni.clone();
    access.alpn = hello.alpn_list();
    access.tls_versions = Some(hello.versions_list());
    access.ech = Some(hello.ech_offered);

    let sni = match hello.sni.as_deref().map(Host::new).transpose() {
        Ok(sni) => sni,
        Err(e) => {
            return refuse(access, client, Failure::new(Outcome::MalformedClientHello, format!("server name: {e}")))
                .await
        }
    };
    // The name the decision and the upstream use: the SNI, or for a CONNECT tunnel without one,
    // the CONNECT host.
    let name = match (&dest, sni) {
        (Dest::Connected { host, .. }, Some(sni)) if sni.as_str() != host.as_str() => {
            let detail = format!("SNI {} is not the CONNECT host {}", sni.as_str(), host.as_str());
            return refuse(access, client, Failure::new(Outcome::Mismatch, detail)).await;
        }
        (_, Some(sni)) => Some(sni),
        (Dest::Connected { host, .. }, None) => Some(host.clone()),
        (Dest::Transparent { .. }, None) => None,
    };
    let port = dest.port();
    let action = match &name {
        Some(host) => {
            let decision =
                crate::gateway::decide_connection(&shared, &Query { host, scheme: Scheme::Https, port, path: None });
            access.decided(policy, &decision);
            decision.action
        }
        None => {
            let decision = policy.default_decision();
            access.decided(policy, &decision);
            decision.action
        }
    };
    if action == Action::Deny {
        let detail = if name.is_some() { "policy" } else { "no server name; default action" };
        return refuse(access, client, Failure::new(Outcome::Denied, detail)).await;
    }
    // Allowed: inspected, or spliced and why.
    let inspect = match (action, &shared.inspect, &name) {
        (Action::Bypass, _, _) => Err("bypass"),
        (_, None, _) => Err("off"),
        (_, Some(_), None) => Err("no-sni"),
        (_, Some(i), Some(name)) => match crate::inspect::http_alpn(&hello.alpn) {
            Some(alpn) => Ok((i.clone(), alpn, name.clone())),
            None if i.config().non_http == NonHttp::Relay => Err("non-http"),
            None => {
                let detail = format!("ALPN {} is not HTTP; inspect.non_http = \"deny\"", hello.alpn.join(","));
                // A TLS client: an alert, unlike unknown protocols in general.
                return refuse_with(access, client, Failure::new(Outcome::UnknownProtocol, detail), true).await;
            }
        },
    };
    shared.metrics.tls_handling(match &inspect {
        Ok(_) => "inspected",
        Err(why) => why,
    });
    let original = match &dest {
        Dest::Transparent { original } => Some(*original),
        Dest::Connected { .. } => None,
    };
    // Boxed, like the rare paths below: what a connection's task holds for its whole life is
    // its largest state, and an idle tunnel should hold little more than the relay's.
    let (upstream, addr) = match Box::pin(dest.connect(&shared, name.as_ref().map(Host::as_str))).await {
        Ok(c) => c,
        Err(f) => return refuse(access, client, f).await,
    };
    access.upstream = Some(addr);
    match inspect {
        Ok((inspector, alpn, name)) => {
            let upstream_at = crate::inspect::Upstream { name, port, original };
            // Boxed: the inspection future (two TLS sessions, hyper) is large; only inspected
            // connections pay for it.
            Box::pin(crate::inspect::intercept(shared, inspector, access, client, buf, alpn, upstream_at, upstream))
                .await;
        }
        Err(why) => {
            access.inspection = Some(why);
            finish_relay(&shared, access, client, upstream, buf.freeze()).await;
        }
    }
}

/// A stream that is neither TLS nor HTTP: the default action decides.
pub(crate) async fn opaque<C>(shared: Arc<Shared>, mut access: Access, client: C, buf: BytesMut, dest: Dest)
where
    C: AsyncRead + AsyncWrite + Unpin + IntoTcp,
{
    let policy = &shared.policy;
    access.protocol = Some("unknown");
    // Without a name the default action decides, whatever a CONNECT host matched.
    let decision = policy.default_decision();
    access.decided(policy, &decision);
    // Not TLS: refusals are a plain close, never an alert.
    if decision.action == Action::Deny {
        let f = Failure::new(Outcome::UnknownProtocol, "neither TLS nor HTTP; default action deny");
        return refuse_with(access, client, f, false).await;
    }
    let (upstream, addr) = match Box::pin(dest.connect(&shared, None)).await {
        Ok(c) => c,
        Err(f) => return refuse_with(access, client, f, false).await,
    };
    access.upstream = Some(addr);
    finish_relay(&shared, access, client, upstream, buf.freeze()).await;
}

/// Relays `client` and `upstream` (writing `prefix` upstream first) to the end, then logs how it
/// ended with the bytes relayed.
pub(crate) async fn finish_relay<C, U>(
    shared: &Shared,
    mut access: Access,
    client: C,
    upstream: U,
    prefix: bytes::Bytes,
) where
    C: AsyncRead + AsyncWrite + Unpin + IntoTcp,
    U: AsyncRead + AsyncWrite + Unpin + IntoTcp,
{
    // MERGE: allocates the label per tunnel; pass the listener's `Arc<str>` made once.
    let open = shared.metrics.tunnel(&std::sync::Arc::from(access.listener.to_string()));
    // TCP on both sides (every bypass and uninspected tunnel of the transparent listener): the
    // relay that holds no buffer while idle and moves 64 KiB per call.
    let idle = shared.idle_timeout;
    let r = match (client.into_tcp(), upstream.into_tcp()) {
        (Ok(c), Ok(u)) => relay_tcp(c, u, prefix, idle).await,
        (Ok(c), Err(u)) => Box::pin(relay(c, u, prefix, idle)).await,
        (Err(c), Ok(u)) => Box::pin(relay(c, u, prefix, idle)).await,
        (Err(c), Err(u)) => Box::pin(relay(c, u, prefix, idle)).await,
    };
    drop(open);
    access.bytes_up = r.up;
    access.bytes_down = r.down;
    match r.end {
        End::Done => {}
        End::Idle => access.fail(Outcome::IdleTimeout, format!("no bytes for {} ms", shared.idle_timeout.as_millis())),
        End::ClientError(e) => access.fail(Outcome::ClientError, e),
        End::UpstreamError(e) => access.fail(Outcome::UpstreamError, e),
    }
    access.emit();
}

/// Refuses a TLS client: an `access_denied` alert for policy and client faults, a bare close
/// for upstream failures; then logs.
pub(crate) async fn refuse<C: AsyncRead + AsyncWrite + Unpin>(access: Access, client: C, failure: Failure) {
    let alert = failure.outcome.tls_alert();
    refuse_with(access, client, failure, alert).await;
}

/// Refuses a client, with an `access_denied` alert first when `alert`, then logs.
async fn refuse_with<C: AsyncRead + AsyncWrite + Unpin>(
    mut access: Access,
    mut client: C,
    failure: Failure,
    alert: bool,
) {
    if alert && client.write_all(&TLS_ACCESS_DENIED).await.is_ok() {
        access.bytes_down += TLS_ACCESS_DENIED.len() as u64;
    }
    close(client).await;
    access.refused(failure.outcome, failure.detail);
    access.emit();
}

/// Closes a client gracefully: flush, FIN, then read and discard what it still sends for a
/// moment, so that unread bytes do not turn the close into a reset that destroys the alert
/// before the client reads it.
pub(crate) async fn close<C: AsyncRead + AsyncWrite + Unpin>(mut client: C) {
    let _ = client.flush().await;
    let _ = client.shutdown().await;
    let drain = async {
        // On the heap: a buffer in the future would make every connection's task larger.
        let mut sink = vec![0u8; 4096];
        let mut total = 0usize;
        while total < LINGER_BYTES {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// How long, and how many bytes, [`close`] waits for a refused client to go away.
const LINGER: std::time::Duration = std::time::Duration::from_millis(500);
const LINGER_BYTES: usize = 64 * 1024;
