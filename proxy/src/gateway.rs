//! The gateway: listeners bound, the current generation (policy and settings) behind an
//! `arc-swap` handle, one task per client connection, reloads and shutdown.
//!
//! This phase owns start-up (bind every listener before serving any), the accept loops (the
//! connection limit, back-off when the process runs out of file descriptors), the generation
//! each connection is served by (`Shared`, loaded once per connection), reloads (compiled on a
//! blocking thread, serialised, coalesced, swapped whole or not at all) and the graceful
//! shutdown. Each accepted connection goes to `connect` or `transparent`; nothing here reads a
//! byte a client sends.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use hostgate_matcher::Matches;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::admin::AdminState;
use crate::config::{Config, ListenerKind, Mode, SniffConfig, VerifyDestination};
use crate::inspect::{CaError, Inspector};
use crate::metrics::{GaugeGuard, Metrics, ReloadSample}; // MERGE: TunnelGuard is GaugeGuard now.
use crate::outcome::is_resource_exhaustion;
use crate::policy::{Decision, LoadError, Policy, Query};
use crate::upstream::resolve::Resolver;
use crate::upstream::Connector;

/// One generation of everything a connection is decided and served by: the policy, the
/// resolver and guard, the sniff and relay settings. A reload builds a new one and swaps it in
/// whole; each connection loads the current one once, when it is accepted, and keeps it.
#[derive(Debug)]
pub(crate) struct Shared {
    /// 1 for the policy loaded at start, +1 per successful reload.
    pub(crate) generation: u64,
    /// The compiled policy.
    pub(crate) policy: Arc<Policy>,
    /// Resolver, SSRF guard and connect settings.
    pub(crate) connector: Connector,
    /// `[sniff]`.
    pub(crate) sniff: SniffConfig,
    /// `upstream.idle_timeout`.
    pub(crate) idle_timeout: Duration,
    /// The configuration it was built from.
    pub(crate) config: Config,
    /// When it was swapped in.
    pub(crate) loaded_at: SystemTime,
    /// The gateway's metrics (the same for every generation).
    pub(crate) metrics: Arc<Metrics>,
    /// TLS inspection, when `[inspect]` turns it on.
    pub(crate) inspect: Option<Arc<Inspector>>,
}

impl Shared {
    fn build(
        generation: u64,
        config: Config,
        policy: Policy,
        inspect: Option<Arc<Inspector>>,
        metrics: Arc<Metrics>,
    ) -> Shared {
        let pins: std::collections::HashMap<_, _> =
            config.resolve.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        Shared {
            generation,
            policy: Arc::new(policy),
            connector: Connector::new(&config.upstream, Resolver::new(pins), metrics.clone()),
            metrics,
            sniff: config.sniff.clone(),
            idle_timeout: config.upstream.idle_timeout,
            config,
            loaded_at: SystemTime::now(),
            inspect,
        }
    }
}

/// Loads `[inspect]`'s CA and trust anchors (blocking: it reads files), keeping `previous`'s
/// certificate cache when the CA is the same.
fn load_inspector(
    config: &Config,
    previous: Option<&Inspector>,
    metrics: &Arc<Metrics>,
) -> Result<Option<Arc<Inspector>>, CaError> {
    let Some(cfg) = &config.inspect else { return Ok(None) };
    let inspector = Inspector::load(cfg, previous, metrics.clone())?;
    Ok(Some(Arc::new(inspector)))
}

/// Logs what inspection will do, and warns when it is insecure.
fn log_inspection(inspect: Option<&Inspector>) {
    match inspect {
        None => tracing::info!("TLS inspection is off: allowed TLS connections are relayed uninspected"),
        Some(i) => {
            tracing::info!(
                ca = i.ca_subject(),
                upstream_roots = i.roots(),
                leaf_validity_s = i.config().leaf_validity.as_secs(),
                "TLS inspection is on for `allow`; `bypass` is never inspected"
            );
            if i.config().insecure_skip_upstream_verify {
                tracing::warn!(
                    "inspect.insecure_skip_upstream_verify = true is insecure: upstream certificates are not \
                     checked, so an impostor on the path is trusted, and so are its answers to clients"
                );
            }
        }
    }
}

/// One client connection's place under `limits.max_connections`. Everything serving the
/// connection holds a clone (the connection task, and a CONNECT tunnel's task, which outlives
/// hyper's connection after the upgrade); the place is freed when the last clone is dropped.
/// It also carries the signal that the shutdown grace period is over.
#[derive(Clone, Debug)]
pub(crate) struct Slot {
    _permit: Arc<OwnedSemaphorePermit>,
    _open: Arc<GaugeGuard>, // MERGE: TunnelGuard is GaugeGuard now.
    stop: watch::Receiver<bool>,
}

impl Slot {
    /// Resolves when the gateway closes the connections still open at the end of the shutdown
    /// grace period.
    pub(crate) async fn stopped(&self) {
        let mut stop = self.stop.clone();
        let _ = stop.wait_for(|s| *s).await;
    }
}

thread_local! {
    static SCRATCH: RefCell<Matches> = RefCell::new(Matches::new());
}

/// Decides by the generation's policy with a per-thread scratch buffer (so deciding allocates
/// nothing once warm), timing it for the metrics.
pub(crate) fn decide(shared: &Shared, q: &Query<'_>) -> Decision {
    decide_with(shared, q, Policy::decide)
}

/// Decides a connection whose requests will each be decided with their path
/// ([`Policy::decide_connection`]): a CONNECT to port 80 (plain HTTP inside), and TLS when
/// inspection is on. Otherwise, as [`decide`].
pub(crate) fn decide_connection(shared: &Shared, q: &Query<'_>) -> Decision {
    let per_request = q.scheme == crate::policy::Scheme::Http || shared.inspect.is_some();
    decide_with(shared, q, if per_request { Policy::decide_connection } else { Policy::decide })
}

fn decide_with(shared: &Shared, q: &Query<'_>, how: fn(&Policy, &Query<'_>, &mut Matches) -> Decision) -> Decision {
    let started = Instant::now();
    let decision = SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut scratch) => how(&shared.policy, q, &mut scratch),
        Err(_) => how(&shared.policy, q, &mut Matches::new()),
    });
    shared.metrics.decision_latency(started.elapsed());
    decision
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
            StartError::Internal(e) => write!(f, "internal error: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// Why a reload did not apply; the previous generation keeps serving.
#[derive(Debug)]
pub enum ReloadError {
    /// The configuration file.
    Config(crate::config::ConfigError),
    /// A rule file.
    Policy(LoadError),
    /// The inspection CA or the upstream trust anchors.
    Inspect(CaError),
    /// Something that should not fail did.
    Internal(String),
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadError::Config(e) => write!(f, "{e}"),
            ReloadError::Policy(e) => write!(f, "{e}"),
            ReloadError::Inspect(e) => write!(f, "{e}"),
            ReloadError::Internal(e) => write!(f, "internal error: {e}"),
        }
    }
}

impl std::error::Error for ReloadError {}

/// What a successful reload changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reloaded {
    /// The new generation.
    pub generation: u64,
    /// Active rules by action: bypass, allow, deny.
    pub rules: [usize; 3],
    /// Reading and compiling the rules.
    pub compile_time: Duration,
    /// Rules added and removed, per rule file (files without changes are left out).
    pub changes: Vec<SourceChange>,
    /// Settings that changed but only apply after a restart (listeners, limits).
    pub needs_restart: Vec<String>,
}

/// Rules added and removed in one file by a reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceChange {
    /// The rule file.
    pub file: String,
    /// Rules (as `ACTION TARGET`) that are new.
    pub added: usize,
    /// Rules that are gone.
    pub removed: usize,
}

/// What the gateway shares with its accept loops, reload task and admin listener.
#[derive(Debug)]
struct Core {
    current: ArcSwap<Shared>,
    limit: Arc<Semaphore>,
    max_connections: usize,
    config_path: PathBuf,
    listeners: Vec<BoundListener>,
    /// Serialises reloads; a reload requested while one runs waits, then runs with the newest files.
    reload_lock: tokio::sync::Mutex<()>,
    /// Reload requests (SIGHUP); several before the reload task wakes count as one.
    reload_wanted: Notify,
    /// Set when the shutdown grace period ends: connection tasks close.
    stop: watch::Sender<bool>,
    /// Set when shutdown starts: `/readyz` fails, reloads stop.
    draining: AtomicBool,
    metrics: Arc<Metrics>,
    admin_addr: Option<SocketAddr>,
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    core: Arc<Core>,
    accept_tasks: Vec<JoinHandle<()>>,
    reload_task: JoinHandle<()>,
    /// Serves until the end of shutdown, so that `/readyz` says "shutting down" during the grace
    /// period and `/metrics` can still be scraped.
    admin_task: Option<JoinHandle<()>>,
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
        let metrics = Arc::new(Metrics::new());
        let m = metrics.clone();
        let (policy, inspect) = tokio::task::spawn_blocking(move || {
            let policy = Policy::load(&cfg.policy_inputs()).map_err(StartError::Policy)?;
            let inspect = load_inspector(&cfg, None, &m).map_err(StartError::Inspect)?;
            Ok::<_, StartError>((policy, inspect))
        })
        .await
        .map_err(|e| StartError::Internal(format!("policy compile task: {e}")))??;
        warn_insecure(&config);
        log_inspection(inspect.as_deref());
        let mut bound = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            let listener = bind(l.address).map_err(|error| StartError::Bind { address: l.address, error })?;
            let local = listener.local_addr().map_err(|error| StartError::Bind { address: l.address, error })?;
            bound.push((BoundListener { kind: l.kind, local }, listener));
        }
        let admin = match config.admin.address {
            None => None,
            Some(address) => {
                let listener = bind(address).map_err(|error| StartError::Bind { address, error })?;
                let local = listener.local_addr().map_err(|error| StartError::Bind { address, error })?;
                Some((listener, local))
            }
        };
        let max_connections = config.limits.max_connections;
        metrics.reload(&ReloadSample {
            ok: true,
            generation: 1,
            rules: count_rules(&policy).map(|n| n as u64),
            duration: policy.compile_time(),
            at: SystemTime::now(),
        });
        let core = Arc::new(Core {
            config_path: config.path.clone(),
            current: ArcSwap::from_pointee(Shared::build(1, config, policy, inspect, metrics.clone())),
            metrics,
            admin_addr: admin.as_ref().map(|(_, local)| *local),
            limit: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            listeners: bound.iter().map(|(info, _)| *info).collect(),
            reload_lock: tokio::sync::Mutex::new(()),
            reload_wanted: Notify::new(),
            stop: watch::Sender::new(false),
            draining: AtomicBool::new(false),
        });
        let mut accept_tasks = Vec::with_capacity(bound.len());
        for (info, listener) in bound {
            tracing::info!(kind = kind_str(info.kind), address = %info.local, "listening");
            accept_tasks.push(tokio::spawn(accept_loop(core.clone(), info, listener)));
        }
        let admin_task = admin.map(|(listener, local)| {
            tracing::info!(address = %local, "admin listener: /metrics /healthz /readyz /policy");
            let state: Arc<dyn AdminState> = Arc::new(AdminView(core.clone()));
            tokio::spawn(crate::admin::serve(listener, state))
        });
        let reload_task = tokio::spawn(reload_loop(core.clone()));
        Ok(Gateway { core, accept_tasks, reload_task, admin_task })
    }

    /// The listeners, in configuration order.
    pub fn listeners(&self) -> &[BoundListener] {
        &self.core.listeners
    }

    /// The address of the first listener of `kind`.
    pub fn local_addr(&self, kind: ListenerKind) -> Option<SocketAddr> {
        self.core.listeners.iter().find(|l| l.kind == kind).map(|l| l.local)
    }

    /// The policy new connections are decided by.
    pub fn policy(&self) -> Arc<Policy> {
        self.core.current.load().policy.clone()
    }

    /// The current policy generation (1 at start, +1 per successful reload).
    pub fn generation(&self) -> u64 {
        self.core.current.load().generation
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
        self.core.current.load().loaded_at
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
    pub async fn shutdown(self, grace: Duration) -> usize {
        self.core.draining.store(true, Ordering::SeqCst);
        self.reload_task.abort();
        for t in &self.accept_tasks {
            t.abort();
        }
        for t in self.accept_tasks {
            let _ = t.await;
        }
        let max = u32::try_from(self.core.max_connections).unwrap_or(u32::MAX);
        let active = self.core.max_connections - self.core.limit.available_permits();
        if active > 0 {
            tracing::info!(active, grace_ms = grace.as_millis() as u64, "shutdown: waiting for connections to finish");
        }
        let drained = tokio::time::timeout(grace, self.core.limit.acquire_many(max)).await;
        let left = self.core.max_connections - self.core.limit.available_permits();
        let mut closed = 0;
        if drained.is_err() && left > 0 {
            tracing::warn!(closed = left, "shutdown: grace period over; closing the connections still open");
            self.core.stop.send_replace(true);
            // Give the tasks a moment to drop their sockets.
            let _ = tokio::time::timeout(Duration::from_secs(1), self.core.limit.acquire_many(max)).await;
            closed = left;
        }
        if let Some(admin) = self.admin_task {
            admin.abort();
            let _ = admin.await;
        }
        closed
    }
}

impl Core {
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
        let path = self.config_path.clone();
        let old = self.current.load_full();
        let old_policy = old.policy.clone();
        let old_inspect = old.inspect.clone();
        let metrics = self.metrics.clone();
        // Everything proportional to the rule count (reading, parsing, compiling, the diff against
        // the running rules) happens on the blocking pool, never on a runtime worker; so does
        // reading the CA and the trust anchors.
        let loaded = tokio::task::spawn_blocking(move || {
            let config = Config::load(&path).map_err(ReloadError::Config)?;
            let policy = Policy::load(&config.policy_inputs()).map_err(ReloadError::Policy)?;
            let inspect = load_inspector(&config, old_inspect.as_deref(), &metrics).map_err(ReloadError::Inspect)?;
            let changes = rule_changes(&old_policy, &policy);
            Ok::<_, ReloadError>((config, policy, inspect, changes))
        })
        .await
        .map_err(|e| ReloadError::Internal(format!("reload task: {e}")));
        let (config, policy, inspect, changes) = match loaded.and_then(|r| r) {
            Ok(x) => x,
            Err(e) => {
                let generation = self.current.load().generation;
                // Metrics first, then the log line (as on success): whoever acts on the line
                // finds /metrics already saying so.
                self.metrics.reload(&ReloadSample {
                    ok: false,
                    generation,
                    rules: [0; 3],
                    duration: started.elapsed(),
                    at: SystemTime::now(),
                });
                tracing::error!(generation, error = %e, "reload failed; the current generation keeps serving");
                return Err(e);
            }
        };
        let generation = old.generation + 1;
        let needs_restart = restart_needed(&old.config, &config);
        warn_insecure(&config);
        if old.config.inspect != config.inspect {
            log_inspection(inspect.as_deref());
        }
        let rules = count_rules(&policy);
        let compile_time = policy.compile_time();
        self.current.store(Arc::new(Shared::build(generation, config, policy, inspect, self.metrics.clone())));
        // If no connection still holds the old generation, freeing it (a large matcher and rule
        // table) happens on the blocking pool too.
        tokio::task::spawn_blocking(move || drop(old));
        self.metrics.reload(&ReloadSample {
            ok: true,
            generation,
            rules: rules.map(|n| n as u64),
            duration: started.elapsed(),
            at: SystemTime::now(),
        });
        let summary =
            changes.iter().map(|c| format!("{}: +{} -{}", c.file, c.added, c.removed)).collect::<Vec<_>>().join("; ");
        tracing::info!(
            generation,
            bypass = rules[0],
            allow = rules[1],
            deny = rules[2],
            compile_ms = compile_time.as_millis() as u64,
            took_ms = started.elapsed().as_millis() as u64,
            changes = if summary.is_empty() { "none" } else { summary.as_str() },
            "reloaded; new connections use the new generation"
        );
        for what in &needs_restart {
            tracing::warn!(generation, "reload: {what} changed; this takes effect only after a restart");
        }
        Ok(Reloaded { generation, rules, compile_time, changes, needs_restart })
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
        let current = self.0.current.load();
        let p = &current.policy;
        let loaded = current.loaded_at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let sources: Vec<serde_json::Value> = p
            .sources()
            .iter()
            .map(|s| {
                serde_json::json!({
                    "file": &*s.file,
                    "bypass": s.by_action[0],
                    "allow": s.by_action[1],
                    "deny": s.by_action[2],
                    "inactive": s.inactive,
                    "mode": if p.reports(&s.file) { "report" } else { "enforce" },
                })
            })
            .collect();
        let rules = count_rules(p);
        serde_json::json!({
            "generation": current.generation,
            "loaded_at_unix": loaded,
            "config": current.config.path.display().to_string(),
            "default": p.default_action().as_str(),
            "mode": if current.config.policy.mode == Mode::Report { "report" } else { "enforce" },
            "rules": { "bypass": rules[0], "allow": rules[1], "deny": rules[2] },
            "compile_ms": p.compile_time().as_secs_f64() * 1000.0,
            "sources": sources,
        })
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

fn warn_insecure(config: &Config) {
    if config.upstream.verify_destination == VerifyDestination::Original {
        tracing::warn!(
            "upstream.verify_destination = \"original\" is insecure: transparent connections go to whatever \
             address the client chose, so an allowed name can carry traffic to any host"
        );
    }
}

fn count_rules(policy: &Policy) -> [usize; 3] {
    let mut rules = [0usize; 3];
    for s in policy.sources() {
        for (t, n) in rules.iter_mut().zip(s.by_action) {
            *t += n;
        }
    }
    rules
}

/// Rules added and removed per file, comparing `ACTION TARGET` texts as multisets.
///
/// Each rule becomes a pair of 64-bit hashes (its file, its action and target); the two sorted
/// lists are merged. For a million rules that is two 16 MB vectors and two sorts, instead of a
/// map of a million owned strings (which took seconds and most of a reload's extra memory).
fn rule_changes(old: &Policy, new: &Policy) -> Vec<SourceChange> {
    use std::hash::{BuildHasher, Hash, Hasher};
    let state = std::collections::hash_map::RandomState::new();
    let hash = |x: &dyn Fn(&mut std::collections::hash_map::DefaultHasher)| {
        let mut h = state.build_hasher();
        x(&mut h);
        h.finish()
    };
    let mut names: BTreeMap<u64, String> = BTreeMap::new();
    let mut keys = |p: &Policy| -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = p
            .rules()
            .iter()
            .map(|r| {
                let file = hash(&|h| r.origin.file.hash(h));
                (file, hash(&|h| (r.action as u8, r.target.as_str()).hash(h)))
            })
            .collect();
        for r in p.rules() {
            let file = hash(&|h| r.origin.file.hash(h));
            names.entry(file).or_insert_with(|| r.origin.file.to_string());
        }
        v.sort_unstable();
        v
    };
    let (a, b) = (keys(old), keys(new));
    let mut per_file: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x == y => {
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x < y => {
                per_file.entry(x.0).or_default().1 += 1;
                i += 1;
            }
            (Some(x), None) => {
                per_file.entry(x.0).or_default().1 += 1;
                i += 1;
            }
            (_, Some(y)) => {
                per_file.entry(y.0).or_default().0 += 1;
                j += 1;
            }
            (None, None) => break,
        }
    }
    let mut out: Vec<SourceChange> = per_file
        .into_iter()
        .map(|(file, (added, removed))| SourceChange {
            file: names.get(&file).cloned().unwrap_or_default(),
            added,
            removed,
        })
        .collect();
    out.sort_by(|x, y| x.file.cmp(&y.file));
    out
}

/// The settings a reload cannot apply.
fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if old.listeners != new.listeners {
        out.push("[[listener]]".to_string());
    }
    if old.limits != new.limits {
        out.push("[limits]".to_string());
    }
    if old.admin != new.admin {
        out.push("[admin]".to_string());
    }
    if old.log != new.log {
        out.push("[log]".to_string());
    }
    if old.runtime != new.runtime {
        out.push("[runtime]".to_string());
    }
    out
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

async fn accept_loop(core: Arc<Core>, info: BoundListener, listener: TcpListener) {
    let mut backoff = Duration::from_millis(10);
    let label: Arc<str> = Arc::from(info.local.to_string()); // MERGE: the label is an Arc<str>, made once.
    loop {
        match listener.accept().await {
            Ok((stream, client)) => {
                // Over the limit, the accepted connection waits here for a slot (and the ones
                // behind it in the kernel backlog). Taking the slot after `accept` rather than
                // before means an idle listener never holds one that a busy listener needs.
                let Ok(permit) = core.limit.clone().acquire_owned().await else { return };
                backoff = Duration::from_millis(10);
                let _ = stream.set_nodelay(true);
                // The generation is loaded once per connection and kept for its life.
                let shared = core.current.load_full();
                let open = core.metrics.connection(&label);
                let slot = Slot { _permit: Arc::new(permit), _open: Arc::new(open), stop: core.stop.subscribe() };
                tokio::spawn(async move {
                    let stop = slot.clone();
                    let serve = async move {
                        // Both futures are small until the client sends something: what a
                        // connection needs beyond its socket is allocated then, in a box.
                        match info.kind {
                            ListenerKind::Connect => {
                                crate::connect::serve(shared, slot, stream, client, info.local).await
                            }
                            ListenerKind::Transparent => {
                                crate::transparent::serve(shared, stream, client, info.local).await;
                                drop(slot);
                            }
                        }
                    };
                    tokio::select! {
                        () = serve => {}
                        () = stop.stopped() => {}
                    }
                });
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
