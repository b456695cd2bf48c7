//! Binding the listening sockets, the accept loop of each (one per listener and worker), and
//! the start of every connection's life: its slot under `limits.max_connections`, the
//! generation it will be served by, its context, and the hand-over to its listener kind.
//!
//! It owns the back-off when the process runs out of descriptors. It does not read a byte a
//! client sends.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::access::Listener;
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

/// Listening sockets handed to the process by its supervisor (systemd socket activation:
/// `LISTEN_FDS`), taken by the listeners whose address they are bound to.
static INHERITED: Mutex<Vec<(SocketAddr, std::net::TcpListener)>> = Mutex::new(Vec::new());

/// Takes the sockets of systemd socket activation (`LISTEN_FDS`, `LISTEN_PID`) into the
/// process, through the `listenfd` crate (which validates each one and sets `FD_CLOEXEC`). Call
/// it before any thread is started: it removes the variables from the environment.
///
/// # Errors
/// A passed descriptor is not a listening TCP socket.
pub(crate) fn inherit_from_env() -> io::Result<Vec<SocketAddr>> {
    let mut fds = listenfd::ListenFd::from_env();
    let mut taken = Vec::new();
    for i in 0..fds.len() {
        let Some(listener) = fds.take_tcp_listener(i)? else { continue };
        listener.set_nonblocking(true)?;
        // Accepted connections inherit TCP_NODELAY, as from a socket hostgate binds.
        socket2::SockRef::from(&listener).set_tcp_nodelay(true)?;
        let local = listener.local_addr()?;
        taken.push(local);
        INHERITED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((local, listener));
    }
    Ok(taken)
}

/// The inherited socket bound to `address`, if any.
fn take_inherited(address: SocketAddr) -> Option<std::net::TcpListener> {
    let mut inherited = INHERITED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let i = inherited.iter().position(|(local, _)| *local == address)?;
    Some(inherited.swap_remove(i).1)
}

/// Inherited sockets no listener took (their addresses); they are closed.
pub(crate) fn unused_inherited() -> Vec<SocketAddr> {
    let mut inherited = INHERITED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    inherited.drain(..).map(|(a, _)| a).collect()
}

/// Binds a listening socket: `SO_REUSEADDR` (restart without waiting out TIME_WAIT),
/// `SO_REUSEPORT` when several workers each accept on a socket of their own for the same
/// address (the kernel spreads new connections over them), IPv6 sockets IPv6-only (list
/// `0.0.0.0` separately), `TCP_NODELAY` (accepted connections inherit it: no system call per
/// connection), a 1024-connection backlog.
///
/// # Errors
/// The socket cannot be made or bound.
pub(crate) fn bind(address: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// One configured listener as bound: what it serves, and one socket per worker (the same
/// address, `SO_REUSEPORT` when there are several).
#[derive(Debug)]
pub(crate) struct Bound {
    /// What it serves, and the address bound.
    pub(crate) info: Arc<Listener>,
    /// One socket per worker, in worker order.
    pub(crate) sockets: Vec<std::net::TcpListener>,
}

/// Binds `address` once per worker (`workers` ≥ 1); the first socket fixes the port when the
/// address says 0, the others bind that port.
///
/// # Errors
/// A socket cannot be made or bound; none is kept then.
pub(crate) fn bind_all(
    kind: ListenerKind,
    address: SocketAddr,
    upstream_port: Option<u16>,
    workers: usize,
) -> io::Result<Bound> {
    // A socket its supervisor passed (socket activation) is shared by every worker: it stays
    // open across restarts, and connections wait in its queue while no process accepts.
    if let Some(inherited) = take_inherited(address) {
        let mut sockets = Vec::with_capacity(workers);
        for _ in 1..workers {
            sockets.push(inherited.try_clone()?);
        }
        sockets.push(inherited);
        let mut info = Listener::new(kind, address);
        info.upstream_port = upstream_port.unwrap_or(address.port());
        info.inherited = true;
        return Ok(Bound { info: Arc::new(info), sockets });
    }
    // Always SO_REUSEPORT: the workers each have a socket, and a new binary can bind beside a
    // running one for a hand-over (README: Restarts and upgrades).
    let first = bind(address, true)?;
    let local = first.local_addr()?;
    let mut sockets = Vec::with_capacity(workers);
    sockets.push(first);
    for _ in 1..workers {
        sockets.push(bind(local, true)?);
    }
    let mut info = Listener::new(kind, local);
    info.upstream_port = upstream_port.unwrap_or(local.port());
    Ok(Bound { info: Arc::new(info), sockets })
}

/// Starts accepting on `listener`, worker `worker`'s socket (on the runtime of the calling
/// context).
pub(crate) fn spawn(intake: Arc<Intake>, info: Arc<Listener>, listener: TcpListener, worker: usize) -> JoinHandle<()> {
    tokio::spawn(accept_loop(intake, info, listener, worker))
}

async fn accept_loop(intake: Arc<Intake>, info: Arc<Listener>, listener: TcpListener, worker: usize) {
    let mut backoff = Duration::from_millis(10);
    loop {
        match listener.accept().await {
            Ok((stream, client)) => {
                // Over the limit, the accepted connection waits here for a slot (and the ones
                // behind it in the kernel backlog). Taking the slot after `accept` rather than
                // before means an idle listener never holds one that a busy listener needs.
                let Ok(permit) = intake.limit.clone().acquire_owned().await else { return };
                backoff = Duration::from_millis(10);
                // The generation is loaded once per connection and kept for its life.
                let open = intake.metrics.connection(&info.label);
                let slot = Slot::new(permit, open, intake.stop.subscribe());
                let conn = Conn::accepted(intake.current.clone(), slot, info.clone(), client);
                spawn_connection(conn, stream);
            }
            Err(e) if is_resource_exhaustion(&e) => {
                tracing::warn!(listener = %info.local, worker, error = %e, backoff_ms = backoff.as_millis() as u64, "accept: out of resources; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                // Per-connection errors (the client reset before accept): keep going.
                tracing::debug!(listener = %info.local, worker, error = %e, "accept error");
            }
        }
    }
}

/// Starts one connection's task: served by its listener kind until it ends or the shutdown
/// grace period runs out. Both kinds' futures are small until the client sends something: what a
/// connection needs beyond its socket is allocated then, in a box.
fn spawn_connection(conn: Conn, stream: TcpStream) {
    let stop = conn.slot.clone();
    match conn.listener().kind {
        ListenerKind::Connect => tokio::spawn(crate::conn::until_stopped(super::connect::serve(conn, stream), stop)),
        ListenerKind::Transparent => {
            tokio::spawn(crate::conn::until_stopped(super::transparent::serve(conn, stream), stop))
        }
        ListenerKind::Sni => tokio::spawn(crate::conn::until_stopped(super::sni::serve(conn, stream), stop)),
    };
}
