//! Listeners: binding, the accept loops, and the start of every connection's life (its slot
//! under `limits.max_connections`, the generation it will be served by, its context, the wait
//! for its first byte).
//!
//! This module owns the listening sockets, the connection limit (taken right after `accept`),
//! the back-off when the process runs out of descriptors, and the handing of each accepted
//! connection to its listener kind: [`connect`] (the explicit proxy) or [`transparent`]
//! (redirected connections). Both end in the one dispatch after the sniff
//! ([`crate::dispatch`]) or the request pipeline ([`crate::forward`]). It does not read a byte a
//! client sends.

pub(crate) mod connect;
pub(crate) mod transparent;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::access::{kind_str, Listener};
use crate::config::ListenerKind;
use crate::conn::{Conn, Slot};
use crate::generation::Current;
use crate::metrics::Metrics;
use crate::outcome::is_resource_exhaustion;

/// What the accept loops share with the gateway: the generation new connections are served
/// by, the connection limit and the signal that closes what is left at the end of a shutdown.
#[derive(Debug)]
pub(crate) struct Intake {
    /// The generation in force: loaded once per accepted connection, and per HTTP request.
    pub(crate) current: Arc<Current>,
    /// `limits.max_connections` permits.
    pub(crate) limit: Arc<Semaphore>,
    /// Turned true when the shutdown grace period ends.
    pub(crate) stop: watch::Sender<bool>,
    /// The gateway's metrics.
    pub(crate) metrics: Arc<Metrics>,
}

/// Binds a listening socket: `SO_REUSEADDR` (restart without waiting out TIME_WAIT), IPv6
/// sockets IPv6-only (list `0.0.0.0` separately), a 1024-connection backlog.
///
/// # Errors
/// The socket cannot be made or bound.
pub(crate) fn bind(address: SocketAddr) -> io::Result<TcpListener> {
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

/// Starts accepting on `listener`.
pub(crate) fn spawn(intake: Arc<Intake>, info: Arc<Listener>, listener: TcpListener) -> JoinHandle<()> {
    tracing::info!(kind = kind_str(info.kind), address = %info.local, "listening");
    tokio::spawn(accept_loop(intake, info, listener))
}

async fn accept_loop(intake: Arc<Intake>, info: Arc<Listener>, listener: TcpListener) {
    let mut backoff = Duration::from_millis(10);
    loop {
        match listener.accept().await {
            Ok((stream, client)) => {
                // Over the limit, the accepted connection waits here for a slot (and the ones
                // behind it in the kernel backlog). Taking the slot after `accept` rather than
                // before means an idle listener never holds one that a busy listener needs.
                let Ok(permit) = intake.limit.clone().acquire_owned().await else { return };
                backoff = Duration::from_millis(10);
                let _ = stream.set_nodelay(true);
                // The generation is loaded once per connection and kept for its life.
                let open = intake.metrics.connection(&info.label);
                let slot = Slot::new(permit, open, intake.stop.subscribe());
                let conn = Conn::accepted(intake.current.clone(), slot, info.clone(), client);
                tokio::spawn(serve(conn, stream));
            }
            Err(e) if is_resource_exhaustion(&e) => {
                tracing::warn!(listener = %info.local, error = %e, backoff_ms = backoff.as_millis() as u64, "accept: out of resources; backing off");
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

/// One connection's task: served by its listener kind until it ends or the shutdown grace
/// period runs out.
async fn serve(conn: Conn, stream: TcpStream) {
    let stop = conn.slot.clone();
    // Both futures are small until the client sends something: what a connection needs beyond
    // its socket is allocated then, in a box.
    let serve = async move {
        match conn.listener().kind {
            ListenerKind::Connect => connect::serve(conn, stream).await,
            ListenerKind::Transparent => transparent::serve(conn, stream).await,
        }
    };
    tokio::select! {
        () = serve => {}
        () = stop.stopped() => {}
    }
}
