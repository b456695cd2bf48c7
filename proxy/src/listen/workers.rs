//! The data path's threads: `[runtime] workers` threads, each running a single-threaded tokio
//! runtime with its own socket per listener (`SO_REUSEPORT`: the kernel spreads new connections
//! over the workers' sockets).
//!
//! A connection lives its whole life on the worker that accepted it: no task moves between
//! threads and no thread wakes another, which is what a work-stealing runtime spends system
//! calls on per connection (an `eventfd` write to wake an idle worker, `futex` to park it).
//! This is the shape of nginx's and HAProxy's workers; the figures are in BENCHMARKS.md. The
//! control plane (reloads, the admin listener, signals) stays on the runtime that started the
//! gateway; the generation, the connection limit and the metrics are shared through atomics.
//!
//! This module owns the worker threads and their runtimes: starting them with their accept
//! loops, and ending them (dropping [`Workers`] ends every worker, and with it whatever still
//! runs on it). What a connection does is [`crate::listen`]'s.

use std::io;
use std::sync::Arc;
use std::thread;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::accept::{Bound, Intake};
use crate::access::kind_str;

/// Called first on every worker thread, when set (see [`crate::gateway::on_worker_start`]).
pub(crate) static WORKER_START: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// The running workers. Dropping it stops them.
#[derive(Debug)]
pub(crate) struct Workers {
    /// Every worker's accept loops (aborted to stop accepting), with the address of the listener
    /// each serves.
    accept: Vec<(std::net::SocketAddr, JoinHandle<()>)>,
    /// Each worker's runtime, to start the accept loops of a listener a reload adds.
    handles: Vec<tokio::runtime::Handle>,
    intake: Arc<Intake>,
    /// Per worker: the signal that ends it (sent, or dropped), and its thread.
    threads: Vec<(oneshot::Sender<()>, thread::JoinHandle<()>)>,
}

impl Workers {
    /// Starts `n` workers (`n` ≥ 1), worker `i` accepting on socket `i` of every listener in
    /// `bound`.
    ///
    /// # Errors
    /// A runtime or a thread could not be made, or a socket could not be registered; the
    /// workers already started are stopped.
    pub(crate) fn start(intake: &Arc<Intake>, bound: Vec<Bound>, n: usize) -> io::Result<Workers> {
        for b in &bound {
            let inherited = b.info.inherited.then_some(true);
            tracing::info!(kind = kind_str(b.info.kind), address = %b.info.local, workers = n, inherited, "listening");
        }
        // Socket i of every listener goes to worker i.
        let mut per_worker: Vec<Vec<_>> = (0..n).map(|_| Vec::with_capacity(bound.len())).collect();
        for b in bound {
            for (i, socket) in b.sockets.into_iter().enumerate() {
                per_worker[i % n].push((b.info.clone(), socket));
            }
        }
        let mut workers = Workers {
            accept: Vec::new(),
            handles: Vec::with_capacity(n),
            intake: intake.clone(),
            threads: Vec::with_capacity(n),
        };
        for (i, sockets) in per_worker.into_iter().enumerate() {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let registered = {
                // Registered with this worker's reactor, and its accept loops spawned on it.
                let _entered = runtime.enter();
                sockets.into_iter().try_for_each(|(info, socket)| {
                    let listener = TcpListener::from_std(socket)?;
                    let local = info.local;
                    workers.accept.push((local, super::accept::spawn(intake.clone(), info, listener, i)));
                    Ok::<_, io::Error>(())
                })
            };
            workers.handles.push(runtime.handle().clone());
            // Dropping a runtime may block, which the caller's async context does not allow: on
            // every path (an error here, a thread that cannot be made) it ends in the background.
            let runtime = Background(Some(runtime));
            registered?;
            let (exit, ended) = oneshot::channel::<()>();
            let thread = thread::Builder::new().name(format!("hostgate-w{i}")).spawn(move || {
                if let Some(hook) = WORKER_START.get() {
                    hook();
                }
                // Until the gateway ends this worker; then the runtime, and every task left on it
                // (connections the shutdown already told to close), is dropped here.
                if let Some(runtime) = &runtime.0 {
                    let _ = runtime.block_on(ended);
                }
            })?;
            workers.threads.push((exit, thread));
        }
        Ok(workers)
    }

    /// Starts accepting on a listener a reload added: socket `i` goes to worker `i`, as at
    /// start.
    ///
    /// # Errors
    /// A socket could not be registered with a worker's reactor; the loops already started for
    /// it keep running (the caller removes them).
    pub(crate) fn add(&mut self, bound: Bound) -> io::Result<()> {
        let n = self.handles.len();
        tracing::info!(kind = kind_str(bound.info.kind), address = %bound.info.local, workers = n, "listening");
        for (i, socket) in bound.sockets.into_iter().enumerate() {
            let _entered = self.handles[i % n].enter();
            let listener = TcpListener::from_std(socket)?;
            let accept = super::accept::spawn(self.intake.clone(), bound.info.clone(), listener, i % n);
            self.accept.push((bound.info.local, accept));
        }
        Ok(())
    }

    /// Stops accepting on the listener bound to `local` (its sockets are closed when this
    /// returns); its established connections go on.
    pub(crate) async fn remove(&mut self, local: std::net::SocketAddr) {
        let (gone, kept): (Vec<_>, Vec<_>) = self.accept.drain(..).partition(|(a, _)| *a == local);
        self.accept = kept;
        for (_, t) in &gone {
            t.abort();
        }
        for (_, t) in gone {
            let _ = t.await;
        }
        tracing::info!(address = %local, "stopped listening");
    }

    /// Stops accepting: every listening socket is closed when this returns (new connections
    /// are refused); established connections go on.
    pub(crate) async fn stop_accepting(&mut self) {
        for (_, t) in &self.accept {
            t.abort();
        }
        for (_, t) in self.accept.drain(..) {
            let _ = t.await;
        }
    }

    /// Ends every worker and waits for its thread: whatever still runs on them is dropped.
    pub(crate) async fn end(mut self) {
        let mut threads = Vec::with_capacity(self.threads.len());
        for (exit, thread) in self.threads.drain(..) {
            let _ = exit.send(());
            threads.push(thread);
        }
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// A worker's runtime, shut down without waiting when dropped (see [`Workers::start`]).
struct Background(Option<tokio::runtime::Runtime>);

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}
