//! The gateway: start-up (every listener bound before any is served), reloads (compiled on a
//! blocking thread, serialised, coalesced, swapped whole or not at all) and the graceful
//! shutdown.
//!
//! This module owns the life of the process's data path: the `Generation` current for new
//! connections (an `arc-swap` handle shared with the accept loops, see `crate::listen`), the
//! reload task that replaces it, and the order of a shutdown. It does not accept or serve
//! connections (`crate::listen`), compare generations (`crate::reload`) or decide anything
//! (`crate::generation`).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinHandle;

use crate::access::{AccessSink, TracingSink};
use crate::admin::AdminState;
use crate::config::{Config, ListenerKind};
use crate::generation::{count_rules, load_inspector, log_inspection, warn_insecure, Current, Generation};
use crate::inspect::{CaError, Inspector};
use crate::listen::workers::Workers;
use crate::listen::{Bound, Intake};
use crate::metrics::Metrics;
use crate::policy::{LoadError, Policy};
use crate::reload::restart_needed;
pub use crate::reload::{ReloadError, Reloaded, SourceChange};

/// Has `hook` called first on every data-path worker thread the process starts from now on
/// (`[runtime] workers`): instrumentation, such as the allocation bench marking the threads whose
/// allocations it counts. Only the first hook set is kept; returns false when one was set
/// already.
pub fn on_worker_start(hook: fn()) -> bool {
    crate::listen::workers::WORKER_START.set(hook).is_ok()
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
    /// The inspection CA or the upstream trust anchors did not load.
    Inspect(CaError),
    /// A listener could not be bound.
    Bind {
        /// The configured address.
        address: SocketAddr,
        /// Why.
        error: io::Error,
    },
    /// The configuration has no listener.
    NoListeners,
    /// `[auth]`: the htpasswd file, the LDAP CA or the service account's password.
    Auth(String),
    /// Something that should not fail did.
    Internal(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Policy(e) => write!(f, "{e}"),
            StartError::Inspect(e) => write!(f, "{e}"),
            StartError::Bind { address, error } => write!(f, "cannot listen on {address}: {error}"),
            StartError::NoListeners => f.write_str("the configuration has no [[listener]]"),
            StartError::Auth(e) => f.write_str(e),
            StartError::Internal(e) => write!(f, "internal error: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// What the gateway shares with its reload task and admin listener.
#[derive(Debug)]
struct Core {
    /// The current generation, the connection limit and the stop signal, shared with the
    /// accept loops.
    intake: Arc<Intake>,
    max_connections: usize,
    config_path: PathBuf,
    /// Each configured listener with where it is bound, in configuration order; a reload adds
    /// and removes listeners.
    listeners: std::sync::RwLock<Vec<(crate::config::Listener, BoundListener)>>,
    /// The data path's threads; `None` once the gateway has ended them.
    workers: tokio::sync::Mutex<Option<Workers>>,
    workers_count: usize,
    /// Serialises reloads; a reload requested while one runs waits, then runs with the newest files.
    reload_lock: tokio::sync::Mutex<()>,
    /// Reload requests (SIGHUP); several before the reload task wakes count as one.
    reload_wanted: Notify,
    /// Set when shutdown starts: `/readyz` fails, reloads stop.
    draining: AtomicBool,
    metrics: Arc<Metrics>,
    sink: Arc<dyn AccessSink>,
    admin_addr: Option<SocketAddr>,
    /// The operator's view: recent decisions, the window, the reload history.
    ops: Arc<crate::status::Ops>,
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    core: Arc<Core>,
    reload_task: JoinHandle<()>,
    /// Serves until the end of shutdown, so that `/readyz` says "shutting down" during the grace
    /// period and `/metrics` can still be scraped.
    admin_task: Option<JoinHandle<()>>,
}

impl Gateway {
    /// Loads the policy, binds every listener, and starts serving on the current tokio runtime,
    /// with the access log as the `access` tracing events.
    ///
    /// # Errors
    /// When the policy does not load or a listener cannot be bound; nothing is served then.
    pub async fn start(config: Config) -> Result<Gateway, StartError> {
        Gateway::start_with_sink(config, Arc::new(TracingSink)).await
    }

    /// [`Gateway::start`], with every access record handed to `sink` (e.g. a
    /// [`crate::access::ChannelSink`]) instead of only the tracing log.
    ///
    /// # Errors
    /// As [`Gateway::start`].
    pub async fn start_with_sink(config: Config, sink: Arc<dyn AccessSink>) -> Result<Gateway, StartError> {
        if config.listeners.is_empty() {
            return Err(StartError::NoListeners);
        }
        let metrics = Arc::new(Metrics::new());
        // With an admin listener, every record also goes to the ring and window it shows.
        let recent = config
            .admin
            .address
            .map(|_| Arc::new(crate::status::Recent::new(config.admin.recent, config.admin.window)));
        let sink: Arc<dyn AccessSink> = match &recent {
            Some(r) => Arc::new(crate::status::recent::RecentSink { recent: r.clone(), inner: sink }),
            None => sink,
        };
        let ops = Arc::new(crate::status::Ops::new(recent));
        let (policy, inspect, auth) = load_first(&config, &metrics).await?;
        warn_insecure(&config);
        log_inspection(inspect.as_deref());
        let workers = config.runtime.worker_count();
        let bound = bind_listeners(&config, workers)?;
        for unused in crate::listen::unused_inherited() {
            tracing::warn!(address = %unused, "socket activation: a passed socket matches no [[listener]] address; closed");
        }
        let admin = match config.admin.address {
            None => None,
            Some(address) => Some(bind_one(address)?),
        };
        let max_connections = config.limits.max_connections;
        crate::reload::first(&metrics, &policy);
        ops.reloaded(crate::status::ReloadRecord {
            at_ms: crate::status::hits::unix_ms(SystemTime::now()),
            generation: 1,
            rules: count_rules(&policy),
            changes: Vec::new(),
            needs_restart: Vec::new(),
            error: None,
            carried: 0,
        });
        if let Some(a) = &auth {
            tracing::info!(backend = %a.describe(), "proxy authentication on the connect listeners");
        }
        let first = Generation::build(1, config.clone(), policy, inspect, auth, metrics.clone(), sink.clone());
        let intake = Arc::new(Intake {
            current: Arc::new(Current::new(first)),
            limit: Arc::new(Semaphore::new(max_connections)),
            stop: watch::Sender::new(false),
            metrics: metrics.clone(),
        });
        let core = Arc::new(Core {
            config_path: config.path.clone(),
            intake: intake.clone(),
            metrics,
            sink,
            admin_addr: admin.as_ref().map(|(_, local)| *local),
            max_connections,
            listeners: std::sync::RwLock::new(
                config
                    .listeners
                    .iter()
                    .cloned()
                    .zip(bound.iter().map(|b| BoundListener { kind: b.info.kind, local: b.info.local }))
                    .collect(),
            ),
            workers: tokio::sync::Mutex::new(None),
            workers_count: workers,
            reload_lock: tokio::sync::Mutex::new(()),
            reload_wanted: Notify::new(),
            draining: AtomicBool::new(false),
            ops,
        });
        let started = Workers::start(&intake, bound, workers)
            .map_err(|e| StartError::Internal(format!("cannot start the workers: {e}")))?;
        *core.workers.lock().await = Some(started);
        let admin_task = admin.map(|(listener, local)| {
            tracing::info!(address = %local, "admin listener: /metrics /healthz /readyz /policy /proxy.pac");
            let state: Arc<dyn AdminState> = Arc::new(AdminView(core.clone()));
            tokio::spawn(crate::admin::serve(listener, state))
        });
        let reload_task = tokio::spawn(reload_loop(core.clone()));
        Ok(Gateway { core, reload_task, admin_task })
    }

    /// The listeners, in configuration order (a reload may add and remove some).
    pub fn listeners(&self) -> Vec<BoundListener> {
        self.core.listeners.read().unwrap_or_else(std::sync::PoisonError::into_inner).iter().map(|(_, b)| *b).collect()
    }

    /// The address of the first listener of `kind`.
    pub fn local_addr(&self, kind: ListenerKind) -> Option<SocketAddr> {
        self.listeners().iter().find(|l| l.kind == kind).map(|l| l.local)
    }

    /// The policy new connections are decided by.
    pub fn policy(&self) -> Arc<Policy> {
        self.core.intake.current.load().policy.clone()
    }

    /// The current policy generation (1 at start, +1 per successful reload).
    pub fn generation(&self) -> u64 {
        self.core.intake.current.load().number
    }

    /// The admin listener's address, when `[admin] address` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.core.admin_addr
    }

    /// The metrics in the Prometheus text format (what `/metrics` serves).
    pub fn metrics(&self) -> String {
        self.core.metrics.encode()
    }

    /// When the current generation was swapped in.
    pub fn loaded_at(&self) -> SystemTime {
        self.core.intake.current.load().loaded_at
    }

    /// Re-reads the configuration file and every rule file, compiles them on a blocking thread,
    /// and swaps the result in for new connections; established connections keep theirs.
    /// Reloads never run concurrently: one that arrives during another waits for it.
    ///
    /// # Errors
    /// Any configuration or rule error (with file and line); the current generation keeps
    /// serving, untouched.
    pub async fn reload(&self) -> Result<Reloaded, ReloadError> {
        self.core.reload().await
    }

    /// Asks for a reload (what SIGHUP does) and returns at once. Requests that arrive while a
    /// reload is running coalesce into one more reload, which reads the newest files.
    pub fn request_reload(&self) {
        self.core.reload_wanted.notify_one();
    }

    /// Whether the gateway can take traffic: listeners bound, a policy loaded, not shutting
    /// down.
    pub fn ready(&self) -> Result<(), String> {
        self.core.ready()
    }

    /// Stops accepting (listeners close, so new connections are refused), lets established
    /// connections finish for up to `grace`, then closes the rest. Returns how many were closed
    /// at the end of the grace period.
    pub async fn shutdown(mut self, grace: Duration) -> usize {
        self.core.draining.store(true, Ordering::SeqCst);
        self.reload_task.abort();
        if let Some(w) = self.core.workers.lock().await.as_mut() {
            w.stop_accepting().await;
        }
        let max = u32::try_from(self.core.max_connections).unwrap_or(u32::MAX);
        let active = self.core.max_connections - self.core.intake.limit.available_permits();
        if active > 0 {
            tracing::info!(active, grace_ms = grace.as_millis() as u64, "shutdown: waiting for connections to finish");
        }
        let drained = tokio::time::timeout(grace, self.core.intake.limit.acquire_many(max)).await;
        let left = self.core.max_connections - self.core.intake.limit.available_permits();
        let mut closed = 0;
        if drained.is_err() && left > 0 {
            tracing::warn!(closed = left, "shutdown: grace period over; closing the connections still open");
            self.core.intake.stop.send_replace(true);
            // Give the tasks a moment to drop their sockets.
            let _ = tokio::time::timeout(Duration::from_secs(1), self.core.intake.limit.acquire_many(max)).await;
            closed = left;
        }
        let workers = self.core.workers.lock().await.take();
        if let Some(w) = workers {
            w.end().await;
        }
        if let Some(admin) = self.admin_task.take() {
            admin.abort();
            let _ = admin.await;
        }
        closed
    }
}

impl Drop for Gateway {
    /// A gateway dropped without [`Gateway::shutdown`] stops at once: its workers end (closing
    /// every listening socket and connection) and its reload and admin tasks are aborted.
    fn drop(&mut self) {
        self.reload_task.abort();
        if let Some(admin) = &self.admin_task {
            admin.abort();
        }
        if let Ok(mut workers) = self.core.workers.try_lock() {
            drop(workers.take());
        }
    }
}

impl Core {
    /// The listeners of `new` that are not running (by kind, address and upstream port), and
    /// the running ones `new` no longer has (with where they are bound).
    fn listener_changes(
        &self,
        new: &[crate::config::Listener],
    ) -> (Vec<crate::config::Listener>, Vec<(crate::config::Listener, BoundListener)>) {
        let running = self.listeners.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let added = new.iter().filter(|l| !running.iter().any(|(r, _)| r == *l)).cloned().collect();
        let removed = running.iter().filter(|(r, _)| !new.contains(r)).cloned().collect();
        (added, removed)
    }

    /// Starts the listeners a reload added (already bound) and stops the ones it removed;
    /// connections they accepted go on.
    async fn apply_listeners(
        &self,
        added: Vec<crate::config::Listener>,
        bound: Vec<crate::listen::Bound>,
        removed: Vec<(crate::config::Listener, BoundListener)>,
    ) {
        if added.is_empty() && removed.is_empty() {
            return;
        }
        let mut workers = self.workers.lock().await;
        let Some(w) = workers.as_mut() else { return };
        for (_, b) in &removed {
            w.remove(b.local).await;
        }
        let mut listeners = Vec::with_capacity(added.len());
        for (l, b) in added.into_iter().zip(bound) {
            let info = BoundListener { kind: b.info.kind, local: b.info.local };
            let local = b.info.local;
            if let Err(e) = w.add(b) {
                tracing::error!(address = %local, error = %e, "reload: the added listener could not start");
                w.remove(local).await;
                continue;
            }
            listeners.push((l, info));
        }
        let mut running = self.listeners.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        running.retain(|(r, _)| !removed.iter().any(|(x, _)| x == r));
        running.extend(listeners);
    }

    fn ready(&self) -> Result<(), String> {
        // Listeners are bound and a policy loaded before a `Core` exists; only a shutdown makes
        // the gateway unready.
        if self.draining.load(Ordering::SeqCst) {
            return Err("shutting down".to_string());
        }
        Ok(())
    }

    async fn reload(&self) -> Result<Reloaded, ReloadError> {
        let _serial = self.reload_lock.lock().await;
        let started = Instant::now();
        let old = self.intake.current.load();
        let loaded = crate::reload::load(self.config_path.clone(), &old, &self.metrics).await;
        let (config, policy, inspect, auth, changes) = match loaded {
            Ok(x) => x,
            Err(e) => {
                crate::reload::failed(&self.metrics, old.number, started, &e);
                self.ops.reloaded(crate::status::ReloadRecord {
                    at_ms: crate::status::hits::unix_ms(SystemTime::now()),
                    generation: old.number,
                    rules: [0; 3],
                    changes: Vec::new(),
                    needs_restart: Vec::new(),
                    error: Some(e.to_string()),
                    carried: 0,
                });
                return Err(e);
            }
        };
        let generation = old.number + 1;
        let needs_restart = restart_needed(&old.config, &config);
        warn_insecure(&config);
        if old.config.inspect != config.inspect {
            log_inspection(inspect.as_deref());
        }
        // Listeners the new configuration adds are bound before anything changes: one that
        // cannot be bound fails the reload, and the running gateway is left as it was.
        let (added, removed) = self.listener_changes(&config.listeners);
        let mut bound = Vec::with_capacity(added.len());
        for l in &added {
            match crate::listen::bind_all(l.kind, l.address, l.upstream_port, self.workers_count) {
                Ok(b) => bound.push(b),
                Err(error) => {
                    let e = ReloadError::Bind { address: l.address, error };
                    crate::reload::failed(&self.metrics, old.number, started, &e);
                    return Err(e);
                }
            }
        }
        let rules = count_rules(&policy);
        let compile_time = policy.compile_time();
        let next =
            Generation::build(generation, config, policy, inspect, auth, self.metrics.clone(), self.sink.clone());
        self.intake.current.store(next);
        self.apply_listeners(added, bound, removed).await;
        // The hit counts of the rules the reload kept are added to the new generation's (which
        // already counts new connections); off the runtime, as it is proportional to the rules.
        let new = self.intake.current.load();
        let carry = tokio::task::spawn_blocking(move || {
            let carried = new.hits.carry(&new.policy, &old.hits, &old.policy);
            (carried, old)
        });
        let carried = match carry.await {
            Ok((carried, old)) => {
                // If no connection still holds the old generation, freeing it (a large matcher
                // and rule table) happens on the blocking pool too.
                tokio::task::spawn_blocking(move || drop(old));
                carried
            }
            Err(e) => {
                tracing::warn!(generation, error = %e, "reload: the rule hit counts were not carried over");
                0
            }
        };
        let done = Reloaded { generation, rules, compile_time, changes, needs_restart };
        crate::reload::applied(&self.metrics, &done, started);
        self.ops.reloaded(crate::status::ReloadRecord {
            at_ms: crate::status::hits::unix_ms(SystemTime::now()),
            generation,
            rules,
            changes: done.changes.clone(),
            needs_restart: done.needs_restart.clone(),
            error: None,
            carried,
        });
        Ok(done)
    }
}

/// What the admin listener sees of the gateway.
struct AdminView(Arc<Core>);

impl AdminState for AdminView {
    fn metrics(&self) -> String {
        self.0.metrics.encode()
    }

    fn ready(&self) -> Result<(), String> {
        self.0.ready()
    }

    fn policy_json(&self) -> serde_json::Value {
        self.0.intake.current.load().describe()
    }

    fn pac(&self) -> Option<Arc<crate::pac::Pac>> {
        self.0.intake.current.load().pac.clone()
    }

    fn page(&self, path: &str, query: Option<&str>) -> Option<crate::status::Page> {
        let gen = self.0.intake.current.load();
        let listeners: Vec<_> = self
            .0
            .listeners
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(_, l)| (l.kind, l.local))
            .collect();
        let view = crate::status::View { gen: &gen, ops: &self.0.ops, listeners: &listeners, admin: self.0.admin_addr };
        crate::status::route(&view, path, query)
    }
}

async fn reload_loop(core: Arc<Core>) {
    loop {
        core.reload_wanted.notified().await;
        crate::notify::reloading();
        let _ = core.reload().await;
        crate::notify::ready();
    }
}

/// What a generation is built from, besides its configuration: the compiled policy, the
/// inspector, the authenticator.
type Loaded = (Policy, Option<Arc<Inspector>>, Option<Arc<crate::auth::Authenticator>>);

/// Loads and compiles the first policy, the inspector and the authenticator, on a blocking
/// thread.
async fn load_first(config: &Config, metrics: &Arc<Metrics>) -> Result<Loaded, StartError> {
    let (cfg, m) = (config.clone(), metrics.clone());
    tokio::task::spawn_blocking(move || {
        let policy = Policy::load(&cfg.policy_inputs()).map_err(StartError::Policy)?;
        let inspect = load_inspector(&cfg, None, &m).map_err(StartError::Inspect)?;
        let auth = crate::auth::load(&cfg).map_err(StartError::Auth)?;
        Ok::<_, StartError>((policy, inspect, auth))
    })
    .await
    .map_err(|e| StartError::Internal(format!("policy compile task: {e}")))?
}

/// Binds every `[[listener]]`, in order, once per worker.
fn bind_listeners(config: &Config, workers: usize) -> Result<Vec<Bound>, StartError> {
    config
        .listeners
        .iter()
        .map(|l| {
            crate::listen::bind_all(l.kind, l.address, l.upstream_port, workers)
                .map_err(|error| StartError::Bind { address: l.address, error })
        })
        .collect()
}

/// Binds the admin address (on the control plane's runtime), and reads back the address bound
/// (the real port when it said 0).
fn bind_one(address: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), StartError> {
    let err = |error: io::Error| StartError::Bind { address, error };
    let listener = crate::listen::bind(address, false).and_then(tokio::net::TcpListener::from_std).map_err(err)?;
    let local = listener.local_addr().map_err(err)?;
    Ok((listener, local))
}
