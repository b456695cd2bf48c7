//! Prometheus metrics: this module owns the registry and every metric family, their names, labels
//! and buckets, and the text exposition. It does not serve them (that is `crate::admin`), decide
//! anything, or know the data path's types: callers hand it label values, numbers and durations
//! at the points where the data path already knows them (an access event, a sniff, a decision, an
//! upstream connect, a lookup, a reload).
//!
//! Recording allocates nothing once a label set exists: the fixed vocabularies are
//! `&'static str`, and the open-ended values (a listener's address, a rule file) are `Arc<str>`
//! that the caller makes once (when a listener is bound, when a rule is compiled) and the label
//! set shares. Label values are escaped when the exposition is written, not when recorded.
//!
//! Labels are kept to small, bounded sets: a listener's address, a rule file's path (never its
//! line), and the access log's own vocabularies (`kind`, `protocol`, `action`, `outcome`). A host
//! name is never a label.
//!
//! | Sample | Type | Labels |
//! |---|---|---|
//! | `hostgate_connections_total` | counter | `listener`, `kind`, `protocol`, `action`, `outcome` |
//! | `hostgate_decisions_total` | counter | `source` (rule file, or `default`), `action` |
//! | `hostgate_bytes_total` | counter | `direction` (`up`, `down`) |
//! | `hostgate_would_deny_total` | counter | |
//! | `hostgate_active_tunnels` | gauge | `listener` |
//! | `hostgate_active_connections` | gauge | `listener` |
//! | `hostgate_sniff_seconds` | histogram | |
//! | `hostgate_decision_seconds` | histogram | |
//! | `hostgate_upstream_connect_seconds` | histogram | `result` (`ok`, `error`) |
//! | `hostgate_dns_lookups_total` | counter | `result` (`pinned`, `cache_hit`, `cache_miss`, `error`) |
//! | `hostgate_reloads_total` | counter | `result` (`success`, `failure`) |
//! | `hostgate_reload_duration_seconds` | histogram | |
//! | `hostgate_policy_generation` | gauge | |
//! | `hostgate_rules` | gauge | `action` (`bypass`, `allow`, `deny`) |
//! | `hostgate_last_reload_success_timestamp_seconds` | gauge | |
//! | `hostgate_inspect_certificates_total` | counter | `result` (`minted`, `cached`, `failed`) |
//! | `hostgate_inspect_mint_seconds` | histogram | |
//! | `hostgate_tls_handling_total` | counter | `inspection` (the access log's field: `inspected`, `bypass`, `off`, …) |
//! | `hostgate_auth_total` | counter | `result` (`ok`, `bad`, `missing`, `throttled`, `error`) |

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Sniff time: from the first byte awaited to a verdict (TLS, HTTP, unknown), up to the 5 s
/// default `sniff.timeout`.
const SNIFF_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
/// One policy decision: a matcher lookup plus filtering, normally well under a microsecond.
const DECISION_BUCKETS: &[f64] =
    &[1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3];
/// An upstream TCP connect, up to the 10 s default `upstream.connect_timeout` and beyond.
const CONNECT_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Minting one leaf certificate: one ECDSA signature, tens of microseconds.
const MINT_BUCKETS: &[f64] = &[1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 0.1];
/// Loading and compiling the policy: milliseconds for a few rules, seconds for a million.
const RELOAD_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// An open-ended label value (a listener's address, a rule file) shared with whoever made it:
/// cloning it into a label set to look that set up costs a reference count, not an allocation.
/// Escaped as the text format requires when encoded.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct SharedLabel(Arc<str>);

impl EncodeLabelValue for SharedLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        write_escaped(encoder, &self.0)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    listener: SharedLabel,
    kind: &'static str,
    protocol: &'static str,
    action: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    source: SharedLabel,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: SharedLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InspectionLabels {
    inspection: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: &'static str,
}

/// Every metric hostgate exports, registered once; shared as `Arc<Metrics>`. Recording is
/// lock-free for unlabelled metrics and takes a family's read lock for labelled ones.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    traffic: Traffic,
    open: Open,
    latency: Latency,
    /// Indexed like [`DnsResult`]'s variants.
    dns: [Counter; 4],
    reloads: Reloads,
    inspection: Inspection,
    /// Indexed like [`AuthResult`]'s variants.
    auth: [Counter; 5],
}

/// The result of one proxy-authentication check (`hostgate_auth_total{result}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthResult {
    /// Good credentials.
    Ok,
    /// Wrong user or password.
    Bad,
    /// No (or unusable) `Proxy-Authorization`.
    Missing,
    /// Refused without checking: too many failures from the client's address.
    Throttled,
    /// The directory could not answer.
    Error,
}

impl AuthResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthResult::Ok => "ok",
            AuthResult::Bad => "bad",
            AuthResult::Missing => "missing",
            AuthResult::Throttled => "throttled",
            AuthResult::Error => "error",
        }
    }
}

/// What access events count: connections and decisions by label, bytes, would-be denials.
#[derive(Debug)]
struct Traffic {
    connections: Family<ConnectionLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    /// The `source` of decisions by the default action.
    default_source: SharedLabel,
    bytes_up: Counter,
    bytes_down: Counter,
    would_deny: Counter,
}

/// What is open now, by listener.
#[derive(Debug)]
struct Open {
    tunnels: Family<ListenerLabels, Gauge>,
    connections: Family<ListenerLabels, Gauge>,
}

/// How long the data path's steps take.
#[derive(Debug)]
struct Latency {
    sniff: Histogram,
    decision: Histogram,
    connect_ok: Histogram,
    connect_error: Histogram,
}

/// Policy loads and reloads, and the policy in force.
#[derive(Debug)]
struct Reloads {
    success: Counter,
    failure: Counter,
    duration: Histogram,
    generation: Gauge,
    /// Bypass, allow, deny.
    rules: [Gauge; 3],
    last_success: Gauge<f64, std::sync::atomic::AtomicU64>,
}

/// TLS inspection.
#[derive(Debug)]
struct Inspection {
    /// Minted, cached, failed.
    certificates: [Counter; 3],
    mint: Histogram,
    tls_handling: Family<InspectionLabels, Counter>,
}

/// Where an inspected connection's leaf certificate came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertResult {
    /// Minted for this connection (or for a concurrent one for the same name, and shared).
    Minted,
    /// Found in the cache.
    Cached,
    /// Minting failed.
    Failed,
}

/// One access event that ended: a TLS or opaque connection, or an HTTP request. The fields are
/// the access log's spellings. Recording one whose labels were seen before allocates nothing.
#[derive(Clone, Copy, Debug)]
pub struct AccessSample<'a> {
    /// The listener's local address, as the access log prints it (`127.0.0.1:3128`), made once
    /// per listener.
    pub listener: &'a Arc<str>,
    /// `connect` or `transparent`.
    pub kind: &'static str,
    /// `tls`, `http`, `unknown`, or `none` when nothing was sniffed.
    pub protocol: &'static str,
    /// `bypass`, `allow` or `deny`.
    pub action: &'static str,
    /// The access log's `outcome` (`ok`, `denied`, `upstream-timeout`, …).
    pub outcome: &'static str,
    /// The deciding rule's file (the rule's `Origin::file`, never with its line); `None` for the
    /// default action.
    pub source: Option<&'a Arc<str>>,
    /// Bytes from the client to the upstream.
    pub bytes_up: u64,
    /// Bytes from the upstream to the client.
    pub bytes_down: u64,
    /// Whether the policy would have denied what was let through.
    pub would_deny: bool,
}

/// How a name was resolved for an upstream connect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsResult {
    /// The address was given (a pinned or literal address); no lookup.
    Pinned,
    /// Answered from the cache.
    CacheHit,
    /// Looked up, and resolved.
    CacheMiss,
    /// The lookup failed.
    Error,
}

impl DnsResult {
    const ALL: [DnsResult; 4] = [DnsResult::Pinned, DnsResult::CacheHit, DnsResult::CacheMiss, DnsResult::Error];

    /// The `result` label's value.
    fn as_str(self) -> &'static str {
        match self {
            DnsResult::Pinned => "pinned",
            DnsResult::CacheHit => "cache_hit",
            DnsResult::CacheMiss => "cache_miss",
            DnsResult::Error => "error",
        }
    }

    fn index(self) -> usize {
        match self {
            DnsResult::Pinned => 0,
            DnsResult::CacheHit => 1,
            DnsResult::CacheMiss => 2,
            DnsResult::Error => 3,
        }
    }
}

/// A policy load or reload attempt that finished.
#[derive(Clone, Debug)]
pub struct ReloadSample {
    /// Whether the new policy is in force.
    pub ok: bool,
    /// The generation now in force (meaningful when `ok`).
    pub generation: u64,
    /// Active rules by action: bypass, allow, deny (meaningful when `ok`).
    pub rules: [u64; 3],
    /// How long loading and compiling took.
    pub duration: Duration,
    /// When it finished.
    pub at: SystemTime,
}

/// A gauge held up while something is open (a client connection, a tunnel): incremented when
/// made, decremented when dropped.
#[derive(Debug)]
#[must_use = "the gauge goes back down as soon as the guard is dropped"]
pub struct GaugeGuard {
    gauge: Gauge,
}

impl GaugeGuard {
    fn new(gauge: Gauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard { gauge }
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric. Label sets known in advance (directions, lookup and reload
    /// results, rule actions) are created at once, so that they are exported as zeros. The
    /// families are registered (and so exported) in the order of the table in the module docs.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let traffic = Traffic::register(&mut registry);
        let open = Open::register(&mut registry);
        let latency = Latency::register(&mut registry);
        let dns = register_dns(&mut registry);
        let reloads = Reloads::register(&mut registry);
        let inspection = Inspection::register(&mut registry);
        let family = Family::<ResultLabels, Counter>::default();
        registry.register("hostgate_auth", "Proxy-authentication checks, by result", family.clone());
        let auth = [AuthResult::Ok, AuthResult::Bad, AuthResult::Missing, AuthResult::Throttled, AuthResult::Error]
            .map(|r| family.get_or_create_owned(&ResultLabels { result: r.as_str() }));
        Metrics { registry, traffic, open, latency, dns, reloads, inspection, auth }
    }

    /// One access event ended (a TLS or opaque connection, or an HTTP request): counts
    /// `hostgate_connections_total`, `hostgate_decisions_total`, `hostgate_bytes_total` and, when
    /// `would_deny`, `hostgate_would_deny_total`.
    pub fn access(&self, e: &AccessSample<'_>) {
        let t = &self.traffic;
        t.connections
            .get_or_create(&ConnectionLabels {
                listener: SharedLabel(e.listener.clone()),
                kind: e.kind,
                protocol: e.protocol,
                action: e.action,
                outcome: e.outcome,
            })
            .inc();
        let source = e.source.map_or_else(|| t.default_source.clone(), |file| SharedLabel(file.clone()));
        t.decisions.get_or_create(&DecisionLabels { source, action: e.action }).inc();
        t.bytes_up.inc_by(e.bytes_up);
        t.bytes_down.inc_by(e.bytes_down);
        if e.would_deny {
            t.would_deny.inc();
        }
    }

    /// A tunnel (relayed connection) started on `listener`: `hostgate_active_tunnels{listener}`
    /// stays one higher until the guard drops.
    pub fn tunnel(&self, listener: &Arc<str>) -> GaugeGuard {
        let labels = ListenerLabels { listener: SharedLabel(listener.clone()) };
        GaugeGuard::new(self.open.tunnels.get_or_create_owned(&labels))
    }

    /// A client connection was accepted on `listener`: `hostgate_active_connections{listener}`
    /// stays one higher until the guard drops.
    pub fn connection(&self, listener: &Arc<str>) -> GaugeGuard {
        let labels = ListenerLabels { listener: SharedLabel(listener.clone()) };
        GaugeGuard::new(self.open.connections.get_or_create_owned(&labels))
    }

    /// How long sniffing took (`hostgate_sniff_seconds`).
    pub fn sniff_latency(&self, d: Duration) {
        self.latency.sniff.observe(d.as_secs_f64());
    }

    /// How long one decision took (`hostgate_decision_seconds`).
    pub fn decision_latency(&self, d: Duration) {
        self.latency.decision.observe(d.as_secs_f64());
    }

    /// How long an upstream connect took, and whether it succeeded
    /// (`hostgate_upstream_connect_seconds{result}`).
    pub fn upstream_connect(&self, d: Duration, ok: bool) {
        let h = if ok { &self.latency.connect_ok } else { &self.latency.connect_error };
        h.observe(d.as_secs_f64());
    }

    /// How a name was resolved (`hostgate_dns_lookups_total{result}`).
    pub fn dns(&self, result: DnsResult) {
        self.dns[result.index()].inc();
    }

    /// A load or reload attempt finished. Always counts `hostgate_reloads_total{result}` and
    /// observes `hostgate_reload_duration_seconds`; on success also sets
    /// `hostgate_policy_generation`, `hostgate_rules{action}` and
    /// `hostgate_last_reload_success_timestamp_seconds`.
    pub fn reload(&self, r: &ReloadSample) {
        self.reloads.duration.observe(r.duration.as_secs_f64());
        if !r.ok {
            self.reloads.failure.inc();
            return;
        }
        self.reloads.success.inc();
        self.reloads.generation.set(saturating_i64(r.generation));
        for (gauge, &n) in self.reloads.rules.iter().zip(&r.rules) {
            gauge.set(saturating_i64(n));
        }
        let at = r.at.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        self.reloads.last_success.set(at);
    }

    /// Where a leaf certificate came from (`hostgate_inspect_certificates_total{result}`).
    pub fn certificate(&self, result: CertResult) {
        let i = match result {
            CertResult::Minted => 0,
            CertResult::Cached => 1,
            CertResult::Failed => 2,
        };
        self.inspection.certificates[i].inc();
    }

    /// How long minting one leaf certificate took (`hostgate_inspect_mint_seconds`).
    pub fn mint_latency(&self, d: Duration) {
        self.inspection.mint.observe(d.as_secs_f64());
    }

    /// How an allowed TLS connection was handled (`hostgate_tls_handling_total{inspection}`).
    pub fn tls_handling(&self, inspection: &'static str) {
        self.inspection.tls_handling.get_or_create(&InspectionLabels { inspection }).inc();
    }

    /// One proxy-authentication check (`hostgate_auth_total{result}`).
    pub fn auth(&self, result: AuthResult) {
        self.auth[result as usize].inc();
    }

    /// The OpenMetrics text exposition of every metric, ending in `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            // Writing to a String cannot fail; an encoder error would be a bug in a label type.
            tracing::warn!(error = %e, "metrics: encoding failed");
        }
        out
    }
}

impl Traffic {
    /// `hostgate_connections`, `hostgate_decisions`, `hostgate_bytes` (both directions at
    /// zero), `hostgate_would_deny`.
    fn register(registry: &mut Registry) -> Traffic {
        let connections = Family::<ConnectionLabels, Counter>::default();
        registry.register(
            "hostgate_connections",
            "Access events that ended (TLS or opaque connections, HTTP requests), by listener, kind, protocol, action and outcome",
            connections.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "hostgate_decisions",
            "Access events by the deciding rule's file (or default) and action",
            decisions.clone(),
        );
        let bytes = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "hostgate_bytes",
            "Bytes relayed: up is client to upstream, down is upstream to client",
            bytes.clone(),
        );
        let bytes_up = bytes.get_or_create_owned(&DirectionLabels { direction: "up" });
        let bytes_down = bytes.get_or_create_owned(&DirectionLabels { direction: "down" });
        let would_deny = Counter::default();
        registry.register(
            "hostgate_would_deny",
            "Access events let through that the policy would have denied",
            would_deny.clone(),
        );
        let default_source = SharedLabel(Arc::from("default"));
        Traffic { connections, decisions, default_source, bytes_up, bytes_down, would_deny }
    }
}

impl Open {
    /// `hostgate_active_tunnels`, `hostgate_active_connections`.
    fn register(registry: &mut Registry) -> Open {
        let tunnels = Family::<ListenerLabels, Gauge>::default();
        registry.register("hostgate_active_tunnels", "Relayed connections open now", tunnels.clone());
        let connections = Family::<ListenerLabels, Gauge>::default();
        registry.register("hostgate_active_connections", "Client connections open now", connections.clone());
        Open { tunnels, connections }
    }
}

impl Latency {
    /// `hostgate_sniff_seconds`, `hostgate_decision_seconds`, `hostgate_upstream_connect_seconds`
    /// (both results created).
    fn register(registry: &mut Registry) -> Latency {
        let sniff = Histogram::new(SNIFF_BUCKETS.iter().copied());
        registry.register_with_unit(
            "hostgate_sniff",
            "Time to sniff a connection's protocol and name",
            Unit::Seconds,
            sniff.clone(),
        );
        let decision = Histogram::new(DECISION_BUCKETS.iter().copied());
        registry.register_with_unit("hostgate_decision", "Time to decide one query", Unit::Seconds, decision.clone());
        let connect: HistogramFamily<ResultLabels> =
            Family::new_with_constructor(|| Histogram::new(CONNECT_BUCKETS.iter().copied()));
        registry.register_with_unit(
            "hostgate_upstream_connect",
            "Time to connect upstream, by result",
            Unit::Seconds,
            connect.clone(),
        );
        let connect_ok = connect.get_or_create_owned(&ResultLabels { result: "ok" });
        let connect_error = connect.get_or_create_owned(&ResultLabels { result: "error" });
        Latency { sniff, decision, connect_ok, connect_error }
    }
}

/// `hostgate_dns_lookups`, every result created; indexed like [`DnsResult`]'s variants.
fn register_dns(registry: &mut Registry) -> [Counter; 4] {
    let dns_family = Family::<ResultLabels, Counter>::default();
    registry.register("hostgate_dns_lookups", "Upstream name resolutions, by result", dns_family.clone());
    DnsResult::ALL.map(|r| dns_family.get_or_create_owned(&ResultLabels { result: r.as_str() }))
}

impl Reloads {
    /// `hostgate_reloads` (both results created), `hostgate_reload_duration_seconds`,
    /// `hostgate_policy_generation`, `hostgate_rules` (every action created),
    /// `hostgate_last_reload_success_timestamp_seconds`.
    fn register(registry: &mut Registry) -> Reloads {
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register("hostgate_reloads", "Policy reload attempts, by result", reloads.clone());
        let success = reloads.get_or_create_owned(&ResultLabels { result: "success" });
        let failure = reloads.get_or_create_owned(&ResultLabels { result: "failure" });
        let duration = Histogram::new(RELOAD_BUCKETS.iter().copied());
        registry.register_with_unit(
            "hostgate_reload_duration",
            "Time to load and compile the policy",
            Unit::Seconds,
            duration.clone(),
        );
        let generation = Gauge::default();
        registry.register("hostgate_policy_generation", "The policy generation in force", generation.clone());
        let rules_family = Family::<ActionLabels, Gauge>::default();
        registry.register("hostgate_rules", "Active rules in the policy in force, by action", rules_family.clone());
        let rules =
            ["bypass", "allow", "deny"].map(|action| rules_family.get_or_create_owned(&ActionLabels { action }));
        let last_success = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register_with_unit(
            "hostgate_last_reload_success_timestamp",
            "When the policy in force was loaded, in seconds since the Unix epoch",
            Unit::Seconds,
            last_success.clone(),
        );
        Reloads { success, failure, duration, generation, rules, last_success }
    }
}

impl Inspection {
    /// `hostgate_inspect_certificates` (every result created), `hostgate_inspect_mint_seconds`,
    /// `hostgate_tls_handling`.
    fn register(registry: &mut Registry) -> Inspection {
        let certs = Family::<ResultLabels, Counter>::default();
        registry.register(
            "hostgate_inspect_certificates",
            "Leaf certificates for inspected connections, by where they came from",
            certs.clone(),
        );
        let certificates =
            ["minted", "cached", "failed"].map(|result| certs.get_or_create_owned(&ResultLabels { result }));
        let mint = Histogram::new(MINT_BUCKETS.iter().copied());
        registry.register_with_unit(
            "hostgate_inspect_mint",
            "Time to mint one leaf certificate",
            Unit::Seconds,
            mint.clone(),
        );
        let tls_handling = Family::<InspectionLabels, Counter>::default();
        registry.register(
            "hostgate_tls_handling",
            "Allowed TLS connections by how they were handled: inspected, or relayed opaquely and why",
            tls_handling.clone(),
        );
        Inspection { certificates, mint, tls_handling }
    }
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Writes a label value escaped as the text format requires (prometheus-client writes label
/// values verbatim): backslash, double quote and line feed.
fn write_escaped(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    let mut rest = s;
    while let Some(at) = rest.find(['\\', '"', '\n']) {
        out.write_str(&rest[..at])?;
        out.write_str(match rest.as_bytes()[at] {
            b'\\' => "\\\\",
            b'"' => "\\\"",
            _ => "\\n",
        })?;
        rest = &rest[at + 1..];
    }
    out.write_str(rest)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::LazyLock;

    use super::*;

    /// The samples of an exposition, `name{labels}` → value; panics on a line that is neither a
    /// comment nor `name{labels} value`, and unless the last line is `# EOF`.
    fn parse(text: &str) -> HashMap<String, f64> {
        assert!(text.ends_with("# EOF\n"), "no EOF marker: {text}");
        let mut samples = HashMap::new();
        for line in text.lines() {
            if line.starts_with('#') {
                let mut words = line.splitn(3, ' ');
                assert_eq!(words.next(), Some("#"));
                assert!(matches!(words.next(), Some("HELP" | "TYPE" | "UNIT" | "EOF")), "bad comment: {line}");
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
            let name_end = series.find('{').unwrap_or(series.len());
            let name = &series[..name_end];
            assert!(!name.is_empty(), "no name: {line}");
            assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'), "bad name: {line}");
            if name_end < series.len() {
                let labels = &series[name_end..];
                assert!(labels.starts_with('{') && labels.ends_with('}'), "bad labels: {line}");
                for pair in split_labels(&labels[1..labels.len() - 1]) {
                    let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("bad label {pair}: {line}"));
                    assert!(k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "bad label name: {line}");
                    assert!(v.len() >= 2 && v.starts_with('"') && v.ends_with('"'), "bad label value: {line}");
                }
            }
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
            assert!(samples.insert(series.to_owned(), value).is_none(), "duplicate series: {line}");
        }
        samples
    }

    /// Splits `a="x",b="y"` at the commas outside quotes.
    fn split_labels(s: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let (mut start, mut quoted, mut escaped) = (0, false, false);
        for (i, c) in s.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                ',' if !quoted => {
                    out.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        assert!(!quoted, "unterminated label value: {s}");
        if start < s.len() {
            out.push(&s[start..]);
        }
        out
    }

    fn has_line(text: &str, line: &str) {
        assert!(text.lines().any(|l| l == line), "missing line {line:?} in:\n{text}");
    }

    fn arc(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    /// The listener and rule file of [`tls_ok`], made once as the data path makes them.
    static LISTENER: LazyLock<Arc<str>> = LazyLock::new(|| arc("127.0.0.1:3128"));
    static LOCAL_RULES: LazyLock<Arc<str>> = LazyLock::new(|| arc("config/local.rules"));

    fn tls_ok() -> AccessSample<'static> {
        AccessSample {
            listener: &LISTENER,
            kind: "connect",
            protocol: "tls",
            action: "allow",
            outcome: "ok",
            source: Some(&LOCAL_RULES),
            bytes_up: 719,
            bytes_down: 7110,
            would_deny: false,
        }
    }

    #[test]
    fn shareable() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Metrics>();
        assert_send_sync::<Arc<Metrics>>();
        assert_send_sync::<GaugeGuard>();
    }

    #[test]
    fn fresh_registry_exports_zeros_for_known_labels() {
        let m = Metrics::new();
        let text = m.encode();
        let samples = parse(&text);
        for line in [
            r#"hostgate_bytes_total{direction="up"} 0"#,
            r#"hostgate_bytes_total{direction="down"} 0"#,
            "hostgate_would_deny_total 0",
            r#"hostgate_dns_lookups_total{result="pinned"} 0"#,
            r#"hostgate_dns_lookups_total{result="cache_hit"} 0"#,
            r#"hostgate_dns_lookups_total{result="cache_miss"} 0"#,
            r#"hostgate_dns_lookups_total{result="error"} 0"#,
            r#"hostgate_reloads_total{result="success"} 0"#,
            r#"hostgate_reloads_total{result="failure"} 0"#,
            r#"hostgate_rules{action="bypass"} 0"#,
            r#"hostgate_rules{action="allow"} 0"#,
            r#"hostgate_rules{action="deny"} 0"#,
            "hostgate_policy_generation 0",
            "hostgate_sniff_seconds_count 0",
            "hostgate_decision_seconds_count 0",
            "hostgate_reload_duration_seconds_count 0",
            r#"hostgate_upstream_connect_seconds_count{result="ok"} 0"#,
            r#"hostgate_upstream_connect_seconds_count{result="error"} 0"#,
        ] {
            has_line(&text, line);
        }
        assert_eq!(samples["hostgate_last_reload_success_timestamp_seconds"], 0.0);
        // Families with open-ended labels are left out until they have a sample.
        assert!(!text.contains("hostgate_connections"));
        assert!(!text.contains("hostgate_active_tunnels"));
        has_line(&text, "# TYPE hostgate_bytes counter");
        has_line(&text, "# TYPE hostgate_sniff_seconds histogram");
        has_line(&text, "# UNIT hostgate_sniff_seconds seconds");
    }

    #[test]
    fn access_events_count_by_labels() {
        let m = Metrics::new();
        m.access(&tls_ok());
        // Another rule of the same file: the same label set.
        m.access(&AccessSample { source: Some(&arc("config/local.rules")), ..tls_ok() });
        m.access(&AccessSample {
            protocol: "none",
            action: "deny",
            outcome: "denied",
            source: None,
            bytes_up: 0,
            bytes_down: 0,
            ..tls_ok()
        });
        m.access(&AccessSample {
            listener: &arc("0.0.0.0:15001"),
            kind: "transparent",
            protocol: "http",
            action: "bypass",
            source: Some(&arc("/etc/hostgate/m365.rules")),
            bytes_up: 1,
            bytes_down: 2,
            would_deny: true,
            ..tls_ok()
        });
        let text = m.encode();
        parse(&text);
        for line in [
            r#"hostgate_connections_total{listener="127.0.0.1:3128",kind="connect",protocol="tls",action="allow",outcome="ok"} 2"#,
            r#"hostgate_connections_total{listener="127.0.0.1:3128",kind="connect",protocol="none",action="deny",outcome="denied"} 1"#,
            r#"hostgate_connections_total{listener="0.0.0.0:15001",kind="transparent",protocol="http",action="bypass",outcome="ok"} 1"#,
            r#"hostgate_decisions_total{source="config/local.rules",action="allow"} 2"#,
            r#"hostgate_decisions_total{source="default",action="deny"} 1"#,
            r#"hostgate_decisions_total{source="/etc/hostgate/m365.rules",action="bypass"} 1"#,
            r#"hostgate_bytes_total{direction="up"} 1439"#,
            r#"hostgate_bytes_total{direction="down"} 14222"#,
            "hostgate_would_deny_total 1",
        ] {
            has_line(&text, line);
        }
        assert_eq!(text.matches("hostgate_connections_total{").count(), 3);
        assert_eq!(text.matches("hostgate_decisions_total{").count(), 3);
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.access(&AccessSample { source: Some(&arc("C:\\rules\\a \"b\".rules")), ..tls_ok() });
        let text = m.encode();
        parse(&text);
        has_line(&text, r#"hostgate_decisions_total{source="C:\\rules\\a \"b\".rules",action="allow"} 1"#);
    }

    #[test]
    fn escaping_writes_backslash_quote_and_line_feed_escaped() {
        let mut out = String::new();
        write_escaped(&mut out, "plain").unwrap();
        write_escaped(&mut out, "|a\\b\"c\nd\\").unwrap();
        assert_eq!(out, r#"plain|a\\b\"c\nd\\"#);
    }

    #[test]
    fn guards_hold_gauges_up() {
        let m = Metrics::new();
        let a = m.tunnel(&arc("127.0.0.1:3128"));
        let b = m.tunnel(&arc("127.0.0.1:3128"));
        let c = m.connection(&arc("127.0.0.1:3128"));
        let d = m.connection(&arc("[::]:15001"));
        let text = m.encode();
        parse(&text);
        has_line(&text, r#"hostgate_active_tunnels{listener="127.0.0.1:3128"} 2"#);
        has_line(&text, r#"hostgate_active_connections{listener="127.0.0.1:3128"} 1"#);
        has_line(&text, r#"hostgate_active_connections{listener="[::]:15001"} 1"#);
        drop(a);
        drop(d);
        let text = m.encode();
        has_line(&text, r#"hostgate_active_tunnels{listener="127.0.0.1:3128"} 1"#);
        has_line(&text, r#"hostgate_active_connections{listener="[::]:15001"} 0"#);
        drop((b, c));
        let text = m.encode();
        has_line(&text, r#"hostgate_active_tunnels{listener="127.0.0.1:3128"} 0"#);
        has_line(&text, r#"hostgate_active_connections{listener="127.0.0.1:3128"} 0"#);
    }

    #[test]
    fn guards_work_across_threads() {
        let m = Arc::new(Metrics::new());
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    let l = arc("l");
                    for _ in 0..1000 {
                        let _g = m.tunnel(&l);
                        m.access(&tls_ok());
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
        let text = m.encode();
        has_line(&text, r#"hostgate_active_tunnels{listener="l"} 0"#);
        has_line(
            &text,
            r#"hostgate_connections_total{listener="127.0.0.1:3128",kind="connect",protocol="tls",action="allow",outcome="ok"} 8000"#,
        );
    }

    #[test]
    fn histograms_count_and_bucket() {
        let m = Metrics::new();
        m.sniff_latency(Duration::from_micros(300));
        m.sniff_latency(Duration::from_secs(10));
        m.decision_latency(Duration::from_nanos(400));
        m.upstream_connect(Duration::from_millis(3), true);
        m.upstream_connect(Duration::from_millis(4), true);
        m.upstream_connect(Duration::from_secs(10), false);
        let text = m.encode();
        let samples = parse(&text);
        for line in [
            "hostgate_sniff_seconds_count 2",
            r#"hostgate_sniff_seconds_bucket{le="0.00025"} 0"#,
            r#"hostgate_sniff_seconds_bucket{le="0.0005"} 1"#,
            r#"hostgate_sniff_seconds_bucket{le="5.0"} 1"#,
            r#"hostgate_sniff_seconds_bucket{le="+Inf"} 2"#,
            "hostgate_decision_seconds_count 1",
            r#"hostgate_decision_seconds_bucket{le="+Inf"} 1"#,
            r#"hostgate_upstream_connect_seconds_count{result="ok"} 2"#,
            r#"hostgate_upstream_connect_seconds_count{result="error"} 1"#,
            r#"hostgate_upstream_connect_seconds_bucket{le="0.0025",result="ok"} 0"#,
            r#"hostgate_upstream_connect_seconds_bucket{le="0.005",result="ok"} 2"#,
            r#"hostgate_upstream_connect_seconds_bucket{le="10.0",result="error"} 1"#,
        ] {
            has_line(&text, line);
        }
        assert!((samples["hostgate_sniff_seconds_sum"] - 10.0003).abs() < 1e-9);
        assert!((samples[r#"hostgate_upstream_connect_seconds_sum{result="ok"}"#] - 0.007).abs() < 1e-9);
        // The decision buckets start at 100 ns.
        let decision_buckets = text.lines().filter(|l| l.starts_with("hostgate_decision_seconds_bucket")).count();
        assert_eq!(decision_buckets, DECISION_BUCKETS.len() + 1);
        has_line(&text, r#"hostgate_decision_seconds_bucket{le="1e-7"} 0"#);
        has_line(&text, r#"hostgate_decision_seconds_bucket{le="2.5e-7"} 0"#);
        has_line(&text, r#"hostgate_decision_seconds_bucket{le="5e-7"} 1"#);
    }

    #[test]
    fn dns_results() {
        let m = Metrics::new();
        for r in [DnsResult::Pinned, DnsResult::CacheHit, DnsResult::CacheHit, DnsResult::CacheMiss, DnsResult::Error] {
            m.dns(r);
        }
        let text = m.encode();
        parse(&text);
        has_line(&text, r#"hostgate_dns_lookups_total{result="pinned"} 1"#);
        has_line(&text, r#"hostgate_dns_lookups_total{result="cache_hit"} 2"#);
        has_line(&text, r#"hostgate_dns_lookups_total{result="cache_miss"} 1"#);
        has_line(&text, r#"hostgate_dns_lookups_total{result="error"} 1"#);
    }

    #[test]
    fn reloads() {
        let m = Metrics::new();
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        m.reload(&ReloadSample { ok: true, generation: 1, rules: [2, 30, 4], duration: Duration::from_millis(20), at });
        m.reload(&ReloadSample {
            ok: false,
            generation: 99,
            rules: [9, 9, 9],
            duration: Duration::from_millis(5),
            at: at + Duration::from_secs(60),
        });
        let text = m.encode();
        let samples = parse(&text);
        for line in [
            r#"hostgate_reloads_total{result="success"} 1"#,
            r#"hostgate_reloads_total{result="failure"} 1"#,
            "hostgate_policy_generation 1",
            r#"hostgate_rules{action="bypass"} 2"#,
            r#"hostgate_rules{action="allow"} 30"#,
            r#"hostgate_rules{action="deny"} 4"#,
            "hostgate_reload_duration_seconds_count 2",
            "# UNIT hostgate_last_reload_success_timestamp_seconds seconds",
        ] {
            has_line(&text, line);
        }
        assert_eq!(samples["hostgate_last_reload_success_timestamp_seconds"], 1_700_000_000.0);
        m.reload(&ReloadSample { ok: true, generation: 2, rules: [0, 31, 4], duration: Duration::ZERO, at });
        let text = m.encode();
        has_line(&text, "hostgate_policy_generation 2");
        has_line(&text, r#"hostgate_rules{action="allow"} 31"#);
        has_line(&text, r#"hostgate_rules{action="bypass"} 0"#);
        has_line(&text, r#"hostgate_reloads_total{result="success"} 2"#);
    }

    #[test]
    fn exposition_is_well_formed_after_everything() {
        let m = Metrics::new();
        let _t = m.tunnel(&LISTENER);
        let _c = m.connection(&LISTENER);
        m.access(&tls_ok());
        m.sniff_latency(Duration::from_millis(1));
        m.decision_latency(Duration::from_nanos(150));
        m.upstream_connect(Duration::from_millis(1), false);
        m.dns(DnsResult::CacheMiss);
        m.reload(&ReloadSample {
            ok: true,
            generation: u64::MAX,
            rules: [0, 1, 2],
            duration: Duration::from_secs(1),
            at: SystemTime::now(),
        });
        let text = m.encode();
        let samples = parse(&text);
        assert_eq!(samples["hostgate_policy_generation"], i64::MAX as f64);
        assert!(samples["hostgate_last_reload_success_timestamp_seconds"] > 1.6e9);
        assert_eq!(text.matches("# EOF").count(), 1);
        assert!(format!("{m:?}").starts_with("Metrics"));
    }
}
