//! Connecting upstream: from a decided name (and, for transparent connections, the client's
//! original destination) to a connected TCP stream, never to an address the policy did not
//! allow.
//!
//! This phase owns `verify_destination`, name resolution ([`resolve`]: `[resolve]` pins, then
//! DNS), the SSRF guard ([`guard`]) and the connect timeout. It does not decide (the policy
//! did) and does not relay.

pub(crate) mod guard;
mod parent;
pub(crate) mod resolve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::config::{UpstreamConfig, VerifyDestination};
use crate::metrics::{DnsResult, Metrics};
use crate::outcome::{Failure, Outcome};
use guard::Guard;
use resolve::Resolver;

/// Resolver, guard and settings: everything needed to connect upstream. Cheap to share.
#[derive(Clone, Debug)]
pub(crate) struct Connector {
    resolver: Resolver,
    guard: Guard,
    verify: VerifyDestination,
    connect_timeout: Duration,
    metrics: Arc<Metrics>,
    /// `[upstream] parent`: every connection but to pinned names goes through it.
    parent: Option<Arc<parent::Parent>>,
    /// The parent each client group goes through (`None`: direct), indexed by group id: a
    /// group's own `[[client]] parent`, or `parent`. Groups past its end use `parent`.
    group_parents: Arc<[Option<Arc<parent::Parent>>]>,
}

/// Where a connection wants to go.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Target<'a> {
    /// The name it asked for (SNI, Host, CONNECT host), normalised; `None` when it gave none.
    pub name: Option<&'a str>,
    /// The destination port.
    pub port: u16,
    /// The original destination of a redirected connection; `None` for explicit-proxy requests,
    /// which always go to the name.
    pub original: Option<SocketAddr>,
    /// The client's group (it may have a parent proxy of its own).
    pub group: crate::policy::GroupId,
}

impl Connector {
    /// A connector for `[upstream]` with this resolver.
    pub(crate) fn new(cfg: &UpstreamConfig, resolver: Resolver, metrics: Arc<Metrics>) -> Connector {
        let parent = cfg.parent.as_ref().map(|p| Arc::new(parent::Parent::new(p)));
        Connector {
            resolver,
            guard: Guard::new(cfg.allow_private.clone()),
            verify: cfg.verify_destination,
            connect_timeout: cfg.connect_timeout,
            metrics,
            group_parents: {
                let last = cfg.group_parents.keys().next_back().map_or(0, |g| usize::from(*g) + 1);
                (0..last)
                    .map(|g| match u8::try_from(g).ok().and_then(|g| cfg.group_parents.get(&g)) {
                        Some(own) => own.as_ref().map(|p| Arc::new(parent::Parent::new(p))),
                        None => parent.clone(),
                    })
                    .collect()
            },
            parent,
        }
    }

    /// How long a connect (and, for inspected connections, the upstream TLS handshake) may take.
    pub(crate) fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The addresses `target` may be connected to, in order of preference.
    ///
    /// # Errors
    /// `resolve-failed`, `mismatch` (original-in-dns: the original address is not among the
    /// name's), `ssrf` (every candidate is in a blocked range), or `bad-request` (neither a name
    /// nor an original destination).
    pub(crate) async fn candidates(&self, target: Target<'_>) -> Result<Vec<SocketAddr>, Failure> {
        let addrs = match (target.name, target.original, self.verify) {
            (Some(name), None, _) | (Some(name), Some(_), VerifyDestination::Name) => {
                self.resolve(name, target.port).await?
            }
            (Some(name), Some(original), VerifyDestination::OriginalInDns) => {
                let resolved = self.resolve(name, target.port).await?;
                if !resolved.iter().any(|a| a.ip() == original.ip()) {
                    return Err(Failure::new(
                        Outcome::Mismatch,
                        format!("original destination {} is not an address of {name}", original.ip()),
                    ));
                }
                vec![original]
            }
            (_, Some(original), _) => vec![original],
            (None, None, _) => return Err(Failure::new(Outcome::BadRequest, "no name and no original destination")),
        };
        let mut blocked = None;
        let allowed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| match self.guard.check(a.ip()) {
                Ok(()) => true,
                Err(b) => {
                    blocked.get_or_insert(b);
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), blocked) {
            (true, Some(b)) => Err(Failure::new(Outcome::Ssrf, b.to_string())),
            (true, None) => Err(Failure::new(Outcome::ResolveFailed, "no addresses")),
            (false, _) => Ok(allowed),
        }
    }

    /// Connects to the first candidate that accepts, each within the connect timeout.
    ///
    /// # Errors
    /// What [`Connector::candidates`] returns, or `upstream-refused` / `upstream-timeout` for
    /// the last address tried (`local-resources` when the gateway had no descriptor, buffer or
    /// port left for the connect).
    pub(crate) async fn connect(&self, target: Target<'_>) -> Result<(TcpStream, SocketAddr), Failure> {
        let parent = self.group_parents.get(usize::from(target.group.0)).unwrap_or(&self.parent);
        if let Some(parent) = parent {
            // A pinned name is a local server: straight there, not through the parent.
            if !target.name.is_some_and(|n| self.resolver.is_pinned(n)) {
                return self.via_parent(parent, target).await;
            }
        }
        let candidates = self.candidates(target).await?;
        let mut last = Failure::new(Outcome::UpstreamRefused, "no candidates");
        for addr in candidates {
            let started = std::time::Instant::now();
            let result = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await;
            self.metrics.upstream_connect(started.elapsed(), matches!(result, Ok(Ok(_))));
            match result {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok((stream, addr));
                }
                Ok(Err(e)) => {
                    last = Failure::new(crate::outcome::connect_failure(&e), format!("connect to {addr}: {e}"))
                }
                Err(_) => {
                    last = Failure::new(
                        Outcome::UpstreamTimeout,
                        format!("connect to {addr}: no answer within {} ms", self.connect_timeout.as_millis()),
                    )
                }
            }
        }
        Err(last)
    }

    /// Through the parent proxy: `CONNECT name:port` (an address without a name only after the
    /// SSRF guard: the parent resolves names, the gateway does not).
    async fn via_parent(
        &self,
        parent: &parent::Parent,
        target: Target<'_>,
    ) -> Result<(TcpStream, SocketAddr), Failure> {
        let authority = match (target.name, target.original) {
            (Some(name), _) => {
                if let Some(ip) = resolve::ip_literal(name) {
                    self.guard.check(ip).map_err(|b| Failure::new(Outcome::Ssrf, b.to_string()))?;
                }
                if name.contains(':') {
                    format!("[{}]:{}", name.trim_start_matches('[').trim_end_matches(']'), target.port)
                } else {
                    format!("{name}:{}", target.port)
                }
            }
            (None, Some(original)) => {
                self.guard.check(original.ip()).map_err(|b| Failure::new(Outcome::Ssrf, b.to_string()))?;
                original.to_string()
            }
            (None, None) => return Err(Failure::new(Outcome::BadRequest, "no name and no original destination")),
        };
        let addrs = match self.resolver.resolve(&parent.host, parent.port).await {
            Ok(r) => r.addrs,
            Err(e) => {
                return Err(Failure::new(Outcome::ParentUnreachable, format!("parent {}: {e}", parent.authority)));
            }
        };
        parent.connect(&addrs, &authority, self.connect_timeout, &self.metrics).await
    }

    async fn resolve(&self, name: &str, port: u16) -> Result<Vec<SocketAddr>, Failure> {
        match self.resolver.resolve(name, port).await {
            Ok(r) => {
                self.metrics.dns(match (r.pinned, r.cached) {
                    (true, _) => DnsResult::Pinned,
                    (false, true) => DnsResult::CacheHit,
                    (false, false) => DnsResult::CacheMiss,
                });
                Ok(r.addrs)
            }
            Err(e) => {
                self.metrics.dns(DnsResult::Error);
                Err(Failure::new(Outcome::ResolveFailed, e.to_string()))
            }
        }
    }
}
