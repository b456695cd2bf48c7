//! The per-connection context: what one accepted client connection carries through the
//! pipeline, from the accept to its last access record.
//!
//! This module owns [`Conn`] (the generation it was accepted under, its slot under
//! `limits.max_connections`, its listener, client, client group and original destination, the sniff deadline
//! and its access record), [`Slot`], and [`UntilStopped`] (a connection's or a tunnel's task: its
//! future, until it ends or the shutdown grace period does). Every phase takes the context instead of a list of
//! arguments; a phase that learns something writes it into `conn.access`, and the phase that
//! ends the connection emits it ([`Conn::finish`]). It does no I/O.

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{watch, OwnedSemaphorePermit};

use crate::access::{Access, Listener};
use crate::generation::{Current, Generation};
use crate::metrics::GaugeGuard;
use crate::outcome::Failure;
use crate::policy::GroupId;

/// One client connection's place under `limits.max_connections`. Everything serving the
/// connection holds a clone (the connection task, and a CONNECT tunnel's task, which outlives
/// hyper's connection after the upgrade); the place is freed when the last clone is dropped.
/// It also carries the signal that the shutdown grace period is over.
#[derive(Clone, Debug)]
pub(crate) struct Slot {
    _permit: Arc<OwnedSemaphorePermit>,
    _open: Arc<GaugeGuard>,
    stop: watch::Receiver<bool>,
}

impl Slot {
    /// A slot holding `permit` and the `hostgate_active_connections` gauge `open`, closed when
    /// `stop` turns true.
    pub(crate) fn new(permit: OwnedSemaphorePermit, open: GaugeGuard, stop: watch::Receiver<bool>) -> Slot {
        Slot { _permit: Arc::new(permit), _open: Arc::new(open), stop }
    }

    /// Resolves when the gateway closes the connections still open at the end of the shutdown
    /// grace period.
    pub(crate) async fn stopped(&self) {
        let mut stop = self.stop.clone();
        let _ = stop.wait_for(|s| *s).await;
    }
}

/// `serve` until it ends or the shutdown grace period does.
pub(crate) fn until_stopped<F: Future<Output = ()>>(serve: F, stop: Slot) -> UntilStopped<F, impl Future<Output = ()>> {
    UntilStopped { serve, stop: async move { stop.stopped().await } }
}

pin_project_lite::pin_project! {
    /// A future that ends when `serve` does or when `stop` fires. Written out rather than as an
    /// `async fn` with a `select!`: a task is as large as its future, and an `async fn` keeps
    /// its argument beside the copy the `select!` polls, which doubled every connection's task.
    pub(crate) struct UntilStopped<F, S> {
        #[pin]
        serve: F,
        #[pin]
        stop: S,
    }
}

impl<F: Future<Output = ()>, S: Future<Output = ()>> Future for UntilStopped<F, S> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.serve.poll(cx).is_ready() || this.stop.poll(cx).is_ready() {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// One accepted client connection, as every phase sees it.
#[derive(Debug)]
pub(crate) struct Conn {
    /// The generation it was accepted under: the connection's own decisions (a TLS or opaque
    /// stream, a CONNECT's tunnel) and settings come from it.
    pub(crate) gen: Arc<Generation>,
    /// The generation in force now: each HTTP request on the connection is decided by it.
    pub(crate) current: Arc<Current>,
    /// Its place under the connection limit.
    pub(crate) slot: Slot,
    /// The client's group under `gen`'s policy, decided once, from the client's address.
    pub(crate) group: GroupId,
    /// The sniff deadline (`sniff.timeout` from the accept, or from a CONNECT's `200`).
    pub(crate) deadline: tokio::time::Instant,
    /// The connection's access record (for HTTP, the template each request's record starts
    /// from: [`Access::request`]). Boxed: the connection moves by value through every phase
    /// (each an `async fn` that keeps its own copy of its arguments), and the record is most of
    /// it (400 bytes against 72).
    pub(crate) access: Box<Access>,
}

impl Conn {
    /// The context of a connection accepted now from `client` on `listener`.
    pub(crate) fn accepted(current: Arc<Current>, slot: Slot, listener: Arc<Listener>, client: SocketAddr) -> Conn {
        let gen = current.load();
        let deadline = tokio::time::Instant::now() + gen.sniff.timeout;
        let mut access = Box::new(Access::new(listener, client, gen.number));
        let group = gen.policy.group_of(client.ip());
        access.client_group.clone_from(&gen.policy.group(group).name);
        Conn { gen, current, slot, group, deadline, access }
    }

    /// The listener that accepted it.
    pub(crate) fn listener(&self) -> &Listener {
        &self.access.listener
    }

    /// Emits the connection's record as it stands.
    pub(crate) fn finish(&self) {
        self.gen.emit(&self.access);
    }

    /// Records that the connection was refused for `failure` (see [`Access::refused`]) and
    /// emits the record.
    pub(crate) fn refused(&mut self, failure: Failure) {
        self.access.refused(failure.outcome, failure.detail);
        self.finish();
    }

    /// Records that the connection, let through, ended with `outcome` (see [`Access::fail`])
    /// and emits the record.
    pub(crate) fn failed(&mut self, outcome: crate::outcome::Outcome, detail: impl Into<Cow<'static, str>>) {
        self.access.fail(outcome, detail);
        self.finish();
    }
}
