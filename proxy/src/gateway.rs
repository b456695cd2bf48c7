//! The gateway: listeners bound, the compiled policy behind an `arc-swap` handle, and one task
//! per client connection.
//!
//! This phase owns start-up (bind every listener before serving any), the accept loops (the
//! connection limit, back-off when the process runs out of file descriptors) and the state the
//! per-connection phases share ([`Shared`]). Each accepted connection goes to
//! [`crate::connect`] or [`crate::transparent`]; nothing here reads a byte a client sends.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hostgate_matcher::Matches;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::config::{Config, ListenerKind, SniffConfig, VerifyDestination};
use crate::policy::{Decision, LoadError, Policy, Query};
use crate::upstream::resolve::Resolver;
use crate::upstream::Connector;

/// What every connection task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The policy; loaded once per connection.
    pub(crate) policy: ArcSwap<Policy>,
    /// Resolver, SSRF guard and connect settings.
    pub(crate) connector: Connector,
    /// `[sniff]`.
    pub(crate) sniff: SniffConfig,
    /// `upstream.idle_timeout`.
    pub(crate) idle_timeout: Duration,
    /// `limits.max_connections` permits.
    limit: Arc<Semaphore>,
}

/// One client connection's place under `limits.max_connections`. Everything serving the
/// connection holds a clone (the connection task, and a CONNECT tunnel's task, which outlives
/// hyper's connection after the upgrade); the place is freed when the last clone is dropped.
#[derive(Clone, Debug)]
pub(crate) struct Slot {
    _permit: Arc<OwnedSemaphorePermit>,
}

thread_local! {
    static SCRATCH: RefCell<Matches> = RefCell::new(Matches::new());
}

/// Decides with a per-thread scratch buffer, so deciding allocates nothing once warm.
pub(crate) fn decide(policy: &Policy, q: &Query<'_>) -> Decision {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut scratch) => policy.decide(q, &mut scratch),
        Err(_) => policy.decide(q, &mut Matches::new()),
    })
}

/// A listener as bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoundListener {
    /// What it serves.
    pub kind: ListenerKind,
    /// The address it is bound to (the real port when the configuration said 0).
    pub local: SocketAddr,
}

/// Why the gateway could not start.
#[derive(Debug)]
pub enum StartError {
    /// The policy did not load or compile.
    Policy(LoadError),
    /// A listener could not be bound.
    Bind {
        /// The configured address.
        address: SocketAddr,
        /// Why.
        error: io::Error,
    },
    /// The configuration has no listener.
    NoListeners,
    /// Something that should not fail did.
    Internal(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Policy(e) => write!(f, "{e}"),
            StartError::Bind { address, error } => write!(f, "cannot listen on {address}: {error}"),
            StartError::NoListeners => f.write_str("the configuration has no [[listener]]"),
            StartError::Internal(e) => write!(f, "internal error: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    listeners: Vec<BoundListener>,
    shared: Arc<Shared>,
    accept_tasks: Vec<JoinHandle<()>>,
}

impl Gateway {
    /// Loads the policy, binds every listener, and starts serving on the current tokio runtime.
    ///
    /// # Errors
    /// When the policy does not load or a listener cannot be bound; nothing is served then.
    pub async fn start(config: Config) -> Result<Gateway, StartError> {
        if config.listeners.is_empty() {
            return Err(StartError::NoListeners);
        }
        let cfg = config.clone();
        let policy = tokio::task::spawn_blocking(move || Policy::load(&cfg))
            .await
            .map_err(|e| StartError::Internal(format!("policy compile task: {e}")))?
            .map_err(StartError::Policy)?;
        if config.upstream.verify_destination == VerifyDestination::Original {
            tracing::warn!(
                "upstream.verify_destination = \"original\" is insecure: transparent connections go to whatever \
                 address the client chose, so an allowed name can carry traffic to any host"
            );
        }
        let mut bound = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            let listener = bind(l.address).map_err(|error| StartError::Bind { address: l.address, error })?;
            let local = listener.local_addr().map_err(|error| StartError::Bind { address: l.address, error })?;
            bound.push((BoundListener { kind: l.kind, local }, listener));
        }
        let pins: std::collections::HashMap<_, _> =
            config.resolve.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let shared = Arc::new(Shared {
            policy: ArcSwap::from_pointee(policy),
            connector: Connector::new(&config.upstream, Resolver::new(pins)),
            sniff: config.sniff.clone(),
            idle_timeout: config.upstream.idle_timeout,
            limit: Arc::new(Semaphore::new(config.limits.max_connections)),
        });
        let mut listeners = Vec::with_capacity(bound.len());
        let mut accept_tasks = Vec::with_capacity(bound.len());
        for (info, listener) in bound {
            tracing::info!(kind = kind_str(info.kind), address = %info.local, "listening");
            listeners.push(info);
            accept_tasks.push(tokio::spawn(accept_loop(shared.clone(), info, listener)));
        }
        Ok(Gateway { listeners, shared, accept_tasks })
    }

    /// The listeners, in configuration order.
    pub fn listeners(&self) -> &[BoundListener] {
        &self.listeners
    }

    /// The address of the first listener of `kind`.
    pub fn local_addr(&self, kind: ListenerKind) -> Option<SocketAddr> {
        self.listeners.iter().find(|l| l.kind == kind).map(|l| l.local)
    }

    /// The policy new connections are decided by.
    pub fn policy(&self) -> Arc<Policy> {
        self.shared.policy.load_full()
    }

    /// Replaces the policy for new connections; established ones keep theirs.
    pub fn set_policy(&self, policy: Policy) {
        self.shared.policy.store(Arc::new(policy));
    }

    /// Stops accepting. Connections already accepted run to their end.
    pub async fn shutdown(self) {
        for t in &self.accept_tasks {
            t.abort();
        }
        for t in self.accept_tasks {
            let _ = t.await;
        }
    }
}

fn kind_str(kind: ListenerKind) -> &'static str {
    match kind {
        ListenerKind::Connect => "connect",
        ListenerKind::Transparent => "transparent",
    }
}

/// Binds a listening socket: `SO_REUSEADDR` (restart without waiting out TIME_WAIT), IPv6
/// sockets IPv6-only (list `0.0.0.0` separately), a 1024-connection backlog.
fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

async fn accept_loop(shared: Arc<Shared>, info: BoundListener, listener: TcpListener) {
    let mut backoff = Duration::from_millis(10);
    loop {
        // Wait for a free slot before accepting: over the limit, clients queue in the backlog.
        let Ok(permit) = shared.limit.clone().acquire_owned().await else { return };
        match listener.accept().await {
            Ok((stream, client)) => {
                backoff = Duration::from_millis(10);
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let slot = Slot { _permit: Arc::new(permit) };
                tokio::spawn(async move {
                    match info.kind {
                        ListenerKind::Connect => crate::connect::serve(shared, slot, stream, client, info.local).await,
                        ListenerKind::Transparent => {
                            crate::transparent::serve(shared, stream, client, info.local).await;
                            drop(slot);
                        }
                    }
                });
            }
            Err(e) if is_resource_exhaustion(&e) => {
                tracing::warn!(listener = %info.local, error = %e, backoff_ms = backoff.as_millis() as u64, "accept: out of resources; backing off");
                drop(permit);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                // Per-connection errors (the client reset before accept): keep going.
                tracing::debug!(listener = %info.local, error = %e, "accept error");
            }
        }
    }
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    use nix::errno::Errno;
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)
    )
}
