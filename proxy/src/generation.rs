//! A generation: everything a connection is decided and served by (the compiled policy, the
//! resolver and SSRF guard, the sniff and relay settings, inspection), built whole by a start
//! or a reload and never changed after; and the two things every phase does with it: decide,
//! and emit a finished access record.
//!
//! This module owns the generation's contents, the decision entry points (with the per-thread
//! scratch buffer and the decision timing) and where a record goes when it ends (the metrics
//! and the gateway's [`AccessSink`]). It does not swap generations (that is
//! [`crate::gateway`]) and does not read a byte from a client.

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use hostgate_matcher::{Host, Matches};

use crate::access::{kind_str, Access, AccessSink};
use crate::config::{Config, Mode, SniffConfig, VerifyDestination};
use crate::inspect::{CaError, Inspector};
use crate::metrics::{AccessSample, Metrics};
use crate::normalize::Slashes;
use crate::policy::{AddrQuery, Decision, GroupId, Policy, Query, Scheme};
use crate::upstream::resolve::Resolver;
use crate::upstream::Connector;

/// One generation of everything a connection is decided and served by. A reload builds a new
/// one and swaps it in whole; each connection loads the current one once, when it is accepted,
/// and keeps it.
#[derive(Debug)]
pub(crate) struct Generation {
    /// 1 for the policy loaded at start, +1 per successful reload.
    pub(crate) number: u64,
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
    /// Where access records go (the same for every generation).
    pub(crate) sink: Arc<dyn AccessSink>,
    /// TLS inspection, when `[inspect]` turns it on.
    pub(crate) inspect: Option<Arc<Inspector>>,
    /// What the request normaliser does with encoded slashes.
    pub(crate) slashes: Slashes,
    /// The PAC files (`/proxy.pac`), generated from this generation's policy and `[pac]`.
    pub(crate) pac: Option<Arc<crate::pac::Pac>>,
    /// Proxy authentication on the connect listeners (`[auth]`).
    pub(crate) auth: Option<Arc<crate::auth::Authenticator>>,
    /// Per-rule hit counts (one per access record that names the rule), carried over a reload
    /// for the rules it kept.
    pub(crate) hits: crate::status::hits::RuleHits,
}

/// The generation in force: what new connections are accepted under and what each HTTP request
/// is decided by. A reload swaps it whole.
#[derive(Debug)]
pub(crate) struct Current(ArcSwap<Generation>);

impl Current {
    /// The first generation in force.
    pub(crate) fn new(first: Generation) -> Current {
        Current(ArcSwap::from_pointee(first))
    }

    /// The generation in force now.
    pub(crate) fn load(&self) -> Arc<Generation> {
        self.0.load_full()
    }

    /// Puts `next` in force.
    pub(crate) fn store(&self, next: Generation) {
        self.0.store(Arc::new(next));
    }
}

thread_local! {
    static SCRATCH: RefCell<Matches> = RefCell::new(Matches::new());
}

impl Generation {
    /// A generation numbered `number` from a loaded configuration, its compiled policy and its
    /// inspector.
    pub(crate) fn build(
        number: u64,
        config: Config,
        policy: Policy,
        inspect: Option<Arc<Inspector>>,
        auth: Option<Arc<crate::auth::Authenticator>>,
        metrics: Arc<Metrics>,
        sink: Arc<dyn AccessSink>,
    ) -> Generation {
        let http = config.http;
        let pins: std::collections::HashMap<_, _> =
            config.resolve.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let pac = config.pac.as_ref().map(|c| Arc::new(crate::pac::Pac::build(c, &policy)));
        Generation {
            number,
            pac,
            hits: crate::status::hits::RuleHits::new(policy.rules().len()),
            policy: Arc::new(policy),
            connector: Connector::new(&config.upstream, Resolver::new(pins), metrics.clone()),
            metrics,
            sink,
            sniff: config.sniff.clone(),
            idle_timeout: config.upstream.idle_timeout,
            config,
            loaded_at: SystemTime::now(),
            inspect,
            slashes: if http.insecure_keep_escaped_slashes { Slashes::Keep } else { Slashes::Refuse },
            auth,
        }
    }

    /// Decides by the policy with a per-thread scratch buffer (so deciding allocates nothing
    /// once warm), timing it for the metrics.
    pub(crate) fn decide(&self, q: &Query<'_>) -> Decision {
        self.decide_with(q, Policy::decide)
    }

    /// Decides a connection whose requests will each be decided with their path
    /// ([`Policy::decide_connection`]): a CONNECT to port 80 (plain HTTP inside), and TLS when
    /// inspection is on. Otherwise, as [`Generation::decide`].
    pub(crate) fn decide_connection(&self, q: &Query<'_>) -> Decision {
        let per_request = q.scheme == Scheme::Http || self.inspect.is_some();
        self.decide_with(q, if per_request { Policy::decide_connection } else { Policy::decide })
    }

    /// Decides what a connection or request is going to: by its name when it has one that is
    /// not an IP literal (`connection`: as [`Generation::decide_connection`], else as
    /// [`Generation::decide`]); otherwise by its destination address (the literal, or `addr`:
    /// a redirected connection's original destination) among the address rules; with neither,
    /// the group's default. A name always decides when there is one: the client chooses the
    /// address it connects to, so an address never overrides a name.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn decide_target(
        &self,
        name: Option<&Host>,
        addr: Option<IpAddr>,
        scheme: Option<Scheme>,
        port: u16,
        path: Option<&str>,
        group: GroupId,
        connection: bool,
    ) -> Decision {
        let literal = name.and_then(literal);
        if let (Some(host), None) = (name, literal) {
            let q = Query { host, scheme: scheme.unwrap_or(Scheme::Https), port, path, group };
            return if connection { self.decide_connection(&q) } else { self.decide(&q) };
        }
        match literal.or(addr) {
            Some(addr) => {
                let started = Instant::now();
                let d = self.policy.decide_address(&AddrQuery { addr, scheme, port, group });
                self.metrics.decision_latency(started.elapsed());
                d
            }
            None => self.policy.default_decision(group),
        }
    }

    fn decide_with(&self, q: &Query<'_>, how: fn(&Policy, &Query<'_>, &mut Matches) -> Decision) -> Decision {
        let started = Instant::now();
        let decision = SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut scratch) => how(&self.policy, q, &mut scratch),
            Err(_) => how(&self.policy, q, &mut Matches::new()),
        });
        self.metrics.decision_latency(started.elapsed());
        decision
    }

    /// A finished record: counted in the metrics and in its rule's hits, then handed to the sink
    /// with the rule that decided it.
    pub(crate) fn emit(&self, a: &Access) {
        if let Some(id) = a.rule {
            self.hits.record(id, a.started);
        }
        let rule = a.rule.map(|id| self.policy.rule(id));
        self.metrics.access(&AccessSample {
            listener: &a.listener.label,
            kind: kind_str(a.listener.kind),
            protocol: a.protocol.as_str(),
            action: a.action_str(),
            outcome: a.outcome.as_str(),
            source: rule.map(|r| &r.origin.file),
            bytes_up: if a.bytes_in_metrics { a.bytes_up } else { 0 },
            bytes_down: if a.bytes_in_metrics { a.bytes_down } else { 0 },
            would_deny: a.would_deny,
        });
        self.sink.emit(a, rule);
    }

    /// What the admin listener's `/policy` shows: the generation, its sources and rule counts.
    pub(crate) fn describe(&self) -> serde_json::Value {
        let p = &self.policy;
        let loaded = self.loaded_at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
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
        let groups: Vec<serde_json::Value> = p
            .groups()
            .iter()
            .map(|g| {
                serde_json::json!({
                    "name": g.name.as_deref(),
                    "networks": g.networks.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "default": g.default.as_str(),
                    "mode": if g.report { "report" } else { "enforce" },
                    "rules": { "bypass": g.rules[0], "allow": g.rules[1], "deny": g.rules[2] },
                })
            })
            .collect();
        serde_json::json!({
            "generation": self.number,
            "loaded_at_unix": loaded,
            "config": self.config.path.display().to_string(),
            "default": p.default_action().as_str(),
            "mode": if self.config.policy.mode == Mode::Report { "report" } else { "enforce" },
            "rules": { "bypass": rules[0], "allow": rules[1], "deny": rules[2] },
            "compile_ms": p.compile_time().as_secs_f64() * 1000.0,
            "sources": sources,
            "groups": groups,
        })
    }
}

/// Loads `[inspect]`'s CA and trust anchors (blocking: it reads files), keeping `previous`'s
/// certificate cache when the CA is the same.
pub(crate) fn load_inspector(
    config: &Config,
    previous: Option<&Inspector>,
    metrics: &Arc<Metrics>,
) -> Result<Option<Arc<Inspector>>, CaError> {
    let Some(cfg) = &config.inspect else { return Ok(None) };
    let inspector = Inspector::load(cfg, previous, metrics.clone())?;
    Ok(Some(Arc::new(inspector)))
}

/// Logs what inspection will do, and warns when it is insecure.
pub(crate) fn log_inspection(inspect: Option<&Inspector>) {
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

/// Warns when the configuration turns on something insecure.
pub(crate) fn warn_insecure(config: &Config) {
    if config.upstream.verify_destination == VerifyDestination::Original {
        tracing::warn!(
            "upstream.verify_destination = \"original\" is insecure: transparent connections go to whatever \
             address the client chose, so an allowed name can carry traffic to any host"
        );
    }
    if config.http.insecure_keep_escaped_slashes {
        tracing::warn!(
            "http.insecure_keep_escaped_slashes = true is insecure: %2F, %5C and \\ in a path are kept as data, \
             and an upstream that decodes them into separators can resolve a path past a path rule"
        );
    }
}

/// The address a host names when it is an IP literal (a `Host` is never an IPv6 literal).
pub(crate) fn literal(host: &Host) -> Option<IpAddr> {
    let s = host.as_str();
    if !s.as_bytes().last().is_some_and(u8::is_ascii_digit) {
        return None;
    }
    s.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// Active rules by action: bypass, allow, deny.
pub(crate) fn count_rules(policy: &Policy) -> [usize; 3] {
    let mut rules = [0usize; 3];
    for s in policy.sources() {
        for (t, n) in rules.iter_mut().zip(s.by_action) {
            *t += n;
        }
    }
    rules
}
