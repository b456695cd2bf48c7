//! The access log: one structured event per connection (TLS, opaque) or per HTTP request,
//! emitted with tracing target `access` when it ends.
//!
//! This module owns the record and its field names; the phases fill it in as they learn
//! things. It does not choose where logs go: `main` installs the subscriber (text or JSON
//! lines, see [`init_tracing`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::config::{ListenerKind, LogConfig, LogFormat};
use crate::metrics::{AccessSample, Metrics};
use crate::outcome::Outcome;
use crate::policy::{Action, Decision, Policy};

/// What is known of one connection or request, for its access event.
#[derive(Clone, Debug)]
pub struct Access {
    /// The listener's local address.
    pub listener: SocketAddr,
    /// The listener's kind.
    pub kind: ListenerKind,
    /// The client's address.
    pub client: SocketAddr,
    /// The original destination (transparent) or the CONNECT / request-URI authority.
    pub dst: Option<String>,
    /// `tls`, `http` or `unknown`, once sniffed.
    pub protocol: Option<&'static str>,
    /// The ClientHello's server name.
    pub sni: Option<String>,
    /// The HTTP Host (or request-URI host).
    pub host: Option<String>,
    /// The HTTP method.
    pub method: Option<String>,
    /// The HTTP path and query.
    pub path: Option<String>,
    /// The HTTP status sent to the client.
    pub status: Option<u16>,
    /// ALPN protocols offered, comma-separated.
    pub alpn: Option<String>,
    /// TLS versions offered (supported_versions), comma-separated.
    pub tls_versions: Option<String>,
    /// Whether the client offered Encrypted Client Hello.
    pub ech: Option<bool>,
    /// The decision's action.
    pub action: Option<Action>,
    /// The policy would have denied, but report mode let it through.
    pub would_deny: bool,
    /// The policy generation that decided.
    pub generation: u64,
    /// The deciding rule's text; absent for the default action.
    pub rule: Option<String>,
    /// The deciding rule's `file:line`.
    pub source: Option<String>,
    /// The upstream address connected to.
    pub upstream: Option<SocketAddr>,
    /// Bytes from client to upstream (sniffed bytes included).
    pub bytes_up: u64,
    /// Bytes from upstream to client.
    pub bytes_down: u64,
    /// When the connection was accepted or the request arrived.
    pub started: Instant,
    /// How it ended.
    pub outcome: Outcome,
    /// Why, when it did not end well.
    pub detail: Option<String>,
    /// How an allowed TLS connection was handled: `inspected`, or relayed opaquely and why
    /// (`bypass`, `off` when inspection is off, `non-http`, `no-sni`); `inspected-relay` for a
    /// terminated connection that did not carry HTTP.
    pub inspection: Option<&'static str>,
    /// Requests served on an inspected connection.
    pub requests: Option<u64>,
    /// Whether this event's bytes go into `hostgate_bytes_total`. An inspected connection's
    /// event does not count its (TLS) bytes there: its requests' events count their bodies.
    pub bytes_in_metrics: bool,
    /// Where the event is also counted.
    pub metrics: Arc<Metrics>,
}

impl Access {
    /// A record for a connection accepted now.
    pub fn new(listener: SocketAddr, kind: ListenerKind, client: SocketAddr, metrics: Arc<Metrics>) -> Access {
        Access {
            listener,
            kind,
            client,
            dst: None,
            protocol: None,
            sni: None,
            host: None,
            method: None,
            path: None,
            status: None,
            alpn: None,
            tls_versions: None,
            ech: None,
            action: None,
            would_deny: false,
            generation: 0,
            rule: None,
            source: None,
            upstream: None,
            bytes_up: 0,
            bytes_down: 0,
            started: Instant::now(),
            outcome: Outcome::Ok,
            detail: None,
            inspection: None,
            requests: None,
            bytes_in_metrics: true,
            metrics,
        }
    }

    /// Records a decision: its action, and the rule and its source when a rule decided.
    pub fn decided(&mut self, policy: &Policy, decision: &Decision) {
        self.action = Some(decision.action);
        self.would_deny = decision.would_deny;
        match decision.rule {
            Some(id) => {
                let rule = policy.rule(id);
                self.rule = Some(format!("{} {}", rule.action, rule.target));
                self.source = Some(rule.origin.to_string());
            }
            None => {
                self.rule = None;
                self.source = None;
            }
        }
    }

    /// Records how it ended after it was let through (an idle timeout, an error mid-stream): the
    /// action stays what was decided.
    pub fn fail(&mut self, outcome: Outcome, detail: impl Into<String>) {
        self.outcome = outcome;
        self.detail = Some(detail.into());
        if outcome != Outcome::Ok && self.action.is_none() {
            self.action = Some(Action::Deny);
        }
    }

    /// Records that it was refused before anything reached an upstream. When the gateway refused
    /// (the policy, the SSRF guard, a client fault) the action is `deny` whatever the policy said
    /// (the rule that allowed the name stays in `rule`); when the upstream or the gateway itself
    /// failed (`internal`, `local-resources`), the action stays what was decided. `outcome` says
    /// why.
    pub fn refused(&mut self, outcome: Outcome, detail: impl Into<String>) {
        use crate::outcome::Blame;
        self.outcome = outcome;
        self.detail = Some(detail.into());
        if matches!(outcome.blame(), Blame::Policy | Blame::Client) || self.action.is_none() {
            self.action = Some(Action::Deny);
        }
    }

    /// Emits the event (and counts it in the metrics).
    pub fn emit(&self) {
        // MERGE: two allocations per event kept only so that this compiles after the metrics API
        // change: hold the listener label and the rule file (`Origin::file`) as `Arc<str>` in
        // `Access` and pass them here instead.
        let listener: Arc<str> = Arc::from(self.listener.to_string());
        let source: Option<Arc<str>> = self.source.as_deref().map(|s| Arc::from(crate::metrics::strip_line(s)));
        self.metrics.access(&AccessSample {
            listener: &listener,
            kind: listener_kind(self.kind),
            protocol: self.protocol.unwrap_or("none"),
            action: self.action.map_or("deny", Action::as_str),
            outcome: self.outcome.as_str(),
            source: source.as_ref(), // MERGE: see above.
            bytes_up: if self.bytes_in_metrics { self.bytes_up } else { 0 },
            bytes_down: if self.bytes_in_metrics { self.bytes_down } else { 0 },
            would_deny: self.would_deny,
        });
        let duration_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::info!(
            target: "access",
            listener = %self.listener,
            kind = listener_kind(self.kind),
            client = %self.client,
            dst = self.dst.as_deref(),
            protocol = self.protocol,
            sni = self.sni.as_deref(),
            host = self.host.as_deref(),
            method = self.method.as_deref(),
            path = self.path.as_deref(),
            status = self.status.map(u64::from),
            alpn = self.alpn.as_deref(),
            tls_versions = self.tls_versions.as_deref(),
            ech = self.ech,
            inspection = self.inspection,
            requests = self.requests,
            action = self.action.map(Action::as_str),
            would_deny = self.would_deny.then_some(true),
            generation = self.generation,
            rule = self.rule.as_deref(),
            source = self.source.as_deref(),
            upstream = self.upstream.map(tracing::field::display),
            bytes_up = self.bytes_up,
            bytes_down = self.bytes_down,
            duration_ms,
            outcome = self.outcome.as_str(),
            detail = self.detail.as_deref(),
            "access"
        );
    }
}

fn listener_kind(kind: ListenerKind) -> &'static str {
    match kind {
        ListenerKind::Connect => "connect",
        ListenerKind::Transparent => "transparent",
    }
}

/// Installs the process-wide tracing subscriber for `[log]`: `level` is a filter directive
/// (`RUST_LOG` overrides it), `format` text or JSON lines, on standard error.
///
/// # Errors
/// When the level is not a valid filter, or a subscriber is already installed.
pub fn init_tracing(log: &LogConfig) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(v.trim()),
        _ => EnvFilter::try_new(&log.level),
    }
    .map_err(|e| format!("log.level: {e}"))?;
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
    result.map_err(|e| e.to_string())
}
