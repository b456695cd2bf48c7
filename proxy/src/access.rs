//! The access record: what is known of one connection (TLS, opaque) or one HTTP request, in
//! typed fields, and the sinks its finished form goes to (the `access` log, a channel).
//!
//! This module owns the record, its vocabularies (listener kind, protocol, inspection, where a
//! connection was going) and the field names of the log. The phases fill the record in as they
//! learn things; `crate::generation::Generation::emit` hands it, with the rule that decided
//! it, to the metrics and to the gateway's [`AccessSink`]. Building and emitting a record
//! allocates nothing of its own: names, addresses and vocabularies are moved in or are
//! `Copy`, the rule is an id resolved only when a sink formats it, and the lists of a
//! ClientHello are formatted straight into the log line. It does not decide where logs go:
//! `main` installs the subscriber (text or JSON lines, syslog or the journal: see
//! [`init_tracing`]).

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::uri::Authority;
use http::Method;

use crate::config::{ListenerKind, LogConfig, LogFormat, LogOutput};
use crate::outcome::{Blame, Outcome};
use crate::policy::{Action, Decision, Rule, RuleId};
use crate::sniff::tls::ClientHello;

/// A bound listener as the access log and the metrics name it: its kind, address and the
/// address's text (made once, shared by every record of the listener).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    /// What it serves.
    pub kind: ListenerKind,
    /// The address it is bound to.
    pub local: SocketAddr,
    /// `local` as text: the `listener` label of the metrics.
    pub label: Arc<str>,
    /// An SNI listener's upstream port (its own port unless configured).
    pub upstream_port: u16,
    /// The socket was passed by the supervisor (systemd socket activation), not bound here.
    pub inherited: bool,
}

impl Listener {
    /// The identity of a listener bound to `local`.
    pub fn new(kind: ListenerKind, local: SocketAddr) -> Listener {
        Listener { kind, local, label: Arc::from(local.to_string()), upstream_port: local.port(), inherited: false }
    }
}

/// The log spelling of a listener kind.
pub fn kind_str(kind: ListenerKind) -> &'static str {
    match kind {
        ListenerKind::Connect => "connect",
        ListenerKind::Transparent => "transparent",
        ListenerKind::Sni => "sni",
    }
}

/// What a connection turned out to carry (the log's `protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Nothing sniffed yet (refused before, or a head hyper refused).
    None,
    /// A TLS ClientHello.
    Tls,
    /// A plain HTTP request.
    Http,
    /// An HTTP request inside an inspected TLS connection.
    Https,
    /// Neither TLS nor HTTP.
    Unknown,
}

impl Protocol {
    /// The log spelling (`none` is the metrics' label for a record without a protocol; the log
    /// leaves the field out).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::None => "none",
            Protocol::Tls => "tls",
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Unknown => "unknown",
        }
    }
}

/// How an allowed TLS connection was handled (the log's `inspection`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inspection {
    /// Terminated and its requests decided one by one.
    Inspected,
    /// Relayed opaquely: a `bypass` rule.
    Bypass,
    /// Relayed opaquely: inspection is off.
    Off,
    /// Relayed opaquely: ALPN offered no HTTP protocol (`inspect.non_http = "relay"`).
    NonHttp,
    /// Relayed opaquely: no SNI to mint a certificate for.
    NoSni,
    /// Terminated, but it did not carry HTTP: relayed between the two TLS sessions.
    InspectedRelay,
}

impl Inspection {
    /// The log spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Inspection::Inspected => "inspected",
            Inspection::Bypass => "bypass",
            Inspection::Off => "off",
            Inspection::NonHttp => "non-http",
            Inspection::NoSni => "no-sni",
            Inspection::InspectedRelay => "inspected-relay",
        }
    }
}

/// Where the client was going (the log's `dst`): a redirected connection's original
/// destination, or the authority a CONNECT or a request named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dst {
    /// The original destination (`SO_ORIGINAL_DST`).
    Addr(SocketAddr),
    /// `host:port` as the client wrote it.
    Authority(Authority),
}

impl fmt::Display for Dst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dst::Addr(a) => a.fmt(f),
            Dst::Authority(a) => f.write_str(a.as_str()),
        }
    }
}

/// What a ClientHello offered, as the log shows it: moved out of the sniffed hello, formatted
/// only when written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOffer {
    /// ALPN protocols offered, in order.
    pub alpn: Vec<String>,
    /// `supported_versions`, or empty.
    pub versions: Vec<u16>,
    /// The legacy version field, logged when there is no `supported_versions`.
    pub legacy_version: u16,
    /// Whether the client offered Encrypted Client Hello.
    pub ech: bool,
    /// The hello is a real Encrypted ClientHello: the extension, and an outer name that is one of
    /// `[sniff] ech_public_names` (without one, the extension is GREASE).
    pub ech_real: bool,
}

impl TlsOffer {
    /// ALPN names, comma-separated; `None` when none were offered.
    pub fn alpn(&self) -> Option<impl fmt::Display + '_> {
        (!self.alpn.is_empty()).then_some(Joined(&self.alpn))
    }

    /// Offered versions as names (`1.3,1.2`), GREASE left out; the legacy version when the
    /// client sent no `supported_versions`.
    pub fn versions(&self) -> impl fmt::Display + '_ {
        Versions(self)
    }
}

struct Joined<'a>(&'a [String]);

impl fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(s)?;
        }
        Ok(())
    }
}

struct Versions<'a>(&'a TlsOffer);

impl fmt::Display for Versions<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |f: &mut fmt::Formatter<'_>, v: u16| match v {
            0x0304 => f.write_str("1.3"),
            0x0303 => f.write_str("1.2"),
            0x0302 => f.write_str("1.1"),
            0x0301 => f.write_str("1.0"),
            0x0300 => f.write_str("ssl3"),
            v => write!(f, "{v:#06x}"),
        };
        if self.0.versions.is_empty() {
            return name(f, self.0.legacy_version);
        }
        let mut first = true;
        for &v in self.0.versions.iter().filter(|&&v| v & 0x0f0f != 0x0a0a) {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            name(f, v)?;
        }
        Ok(())
    }
}

/// What is known of one connection or request, for its access event.
#[derive(Clone, Debug)]
pub struct Access {
    /// The listener that accepted the connection.
    pub listener: Arc<Listener>,
    /// The client's address.
    pub client: SocketAddr,
    /// The client's group (`[[client]]`), by name; `None` for a client in no group.
    pub client_group: Option<Arc<str>>,
    /// The user who signed in on the explicit proxy (`[auth]`); `None` when nobody did.
    pub user: Option<Arc<str>>,
    /// The original destination (transparent) or the CONNECT / request authority.
    pub dst: Option<Dst>,
    /// What was sniffed.
    pub protocol: Protocol,
    /// The ClientHello's server name.
    pub sni: Option<String>,
    /// What the ClientHello offered.
    pub tls: Option<TlsOffer>,
    /// The HTTP Host (or request-URI host, or CONNECT host), normalised.
    pub host: Option<String>,
    /// The HTTP method.
    pub method: Option<Method>,
    /// The HTTP path and query.
    pub path: Option<String>,
    /// The HTTP status sent to the client.
    pub status: Option<u16>,
    /// The decision's action.
    pub action: Option<Action>,
    /// The policy would have denied, but report mode let it through.
    pub would_deny: bool,
    /// The policy generation that decided.
    pub generation: u64,
    /// The deciding rule; `None` for the default action.
    pub rule: Option<RuleId>,
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
    pub detail: Option<Cow<'static, str>>,
    /// How an allowed TLS connection was handled.
    pub inspection: Option<Inspection>,
    /// Requests served on an inspected connection.
    pub requests: Option<u64>,
    /// Whether this event's bytes go into `hostgate_bytes_total`. An inspected connection's
    /// event does not count its (TLS) bytes there: its requests' events count their bodies.
    pub bytes_in_metrics: bool,
}

impl Access {
    /// A record for a connection accepted now on `listener` from `client`, served by
    /// `generation`.
    pub fn new(listener: Arc<Listener>, client: SocketAddr, generation: u64) -> Access {
        Access {
            listener,
            client,
            client_group: None,
            user: None,
            dst: None,
            protocol: Protocol::None,
            sni: None,
            tls: None,
            host: None,
            method: None,
            path: None,
            status: None,
            action: None,
            would_deny: false,
            generation,
            rule: None,
            upstream: None,
            bytes_up: 0,
            bytes_down: 0,
            started: Instant::now(),
            outcome: Outcome::Ok,
            detail: None,
            inspection: None,
            requests: None,
            bytes_in_metrics: true,
        }
    }

    /// A record for a request that starts now on this connection: a copy of the connection's
    /// record (listener, client, destination, ClientHello, inspection, upstream), started now,
    /// with the request's protocol.
    pub fn request(&self, protocol: Protocol) -> Access {
        let mut a = self.clone();
        a.started = Instant::now();
        a.protocol = protocol;
        a
    }

    /// Records what a ClientHello says: the protocol, the server name and the offer (moved
    /// out of `hello`; its ALPN list is read from [`Access::tls`] afterwards).
    pub fn hello(&mut self, hello: ClientHello) {
        self.protocol = Protocol::Tls;
        self.sni = hello.sni;
        self.tls = Some(TlsOffer {
            alpn: hello.alpn,
            versions: hello.supported_versions,
            legacy_version: hello.legacy_version,
            ech: hello.ech_offered,
            ech_real: false,
        });
    }

    /// Records a decision: its action and the rule, when a rule decided.
    pub fn decided(&mut self, decision: &Decision) {
        self.action = Some(decision.action);
        self.would_deny = decision.would_deny;
        self.rule = decision.rule;
    }

    /// Records how it ended after it was let through (an idle timeout, an error mid-stream): the
    /// action stays what was decided.
    pub fn fail(&mut self, outcome: Outcome, detail: impl Into<Cow<'static, str>>) {
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
    pub fn refused(&mut self, outcome: Outcome, detail: impl Into<Cow<'static, str>>) {
        self.outcome = outcome;
        self.detail = Some(detail.into());
        if matches!(outcome.blame(), Blame::Policy | Blame::Client) || self.action.is_none() {
            self.action = Some(Action::Deny);
        }
    }

    /// The action the log and the metrics show: `deny` when nothing was decided.
    pub fn action_str(&self) -> &'static str {
        self.action.map_or("deny", Action::as_str)
    }
}

/// Where finished access records go. The gateway always counts them in its metrics; a sink is
/// what else sees them: the `access` tracing events ([`TracingSink`], the default), or a
/// channel ([`ChannelSink`]) for a program that embeds the gateway and wants typed events.
pub trait AccessSink: Send + Sync + fmt::Debug {
    /// One record ended; `rule` is the rule that decided it (`None`: the default action).
    fn emit(&self, access: &Access, rule: Option<&Rule>);
}

/// The `access` tracing event: one per record, with the log's field names.
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingSink;

impl AccessSink for TracingSink {
    fn emit(&self, a: &Access, rule: Option<&Rule>) {
        let duration_ms = u64::try_from(a.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let tls = a.tls.as_ref();
        tracing::info!(
            target: "access",
            listener = %a.listener.local,
            kind = kind_str(a.listener.kind),
            client = %a.client,
            client_group = a.client_group.as_deref(),
            user = a.user.as_deref(),
            dst = a.dst.as_ref().map(tracing::field::display),
            protocol = (a.protocol != Protocol::None).then(|| a.protocol.as_str()),
            sni = a.sni.as_deref(),
            host = a.host.as_deref(),
            method = a.method.as_ref().map(Method::as_str),
            path = a.path.as_deref(),
            status = a.status.map(u64::from),
            alpn = tls.and_then(TlsOffer::alpn).map(tracing::field::display),
            tls_versions = tls.map(|t| tracing::field::display(t.versions())),
            ech = tls.map(|t| t.ech),
            ech_real = tls.and_then(|t| t.ech_real.then_some(true)),
            inspection = a.inspection.map(Inspection::as_str),
            requests = a.requests,
            action = a.action.map(Action::as_str),
            would_deny = a.would_deny.then_some(true),
            generation = a.generation,
            rule = rule.map(|r| tracing::field::display(RuleText(r))),
            source = rule.map(|r| tracing::field::display(&r.origin)),
            upstream = a.upstream.map(tracing::field::display),
            bytes_up = a.bytes_up,
            bytes_down = a.bytes_down,
            duration_ms,
            outcome = a.outcome.as_str(),
            detail = a.detail.as_deref(),
            "access"
        );
    }
}

/// A rule as the log's `rule` field shows it: `ACTION TARGET`.
struct RuleText<'a>(&'a Rule);

impl fmt::Display for RuleText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0.action, self.0.target)
    }
}

/// A finished record as a [`ChannelSink`] delivers it: the record, and the deciding rule's
/// text and `file:line` as the log shows them.
#[derive(Clone, Debug)]
pub struct AccessEvent {
    /// The record.
    pub access: Access,
    /// The deciding rule as `ACTION TARGET`; `None` for the default action.
    pub rule: Option<String>,
    /// The deciding rule's `file:line`.
    pub source: Option<String>,
}

impl std::ops::Deref for AccessEvent {
    type Target = Access;

    fn deref(&self) -> &Access {
        &self.access
    }
}

/// Sends every finished record, as an [`AccessEvent`], to a channel; and also to the tracing
/// log, so that an embedding program loses none of the log. A closed receiver is ignored.
#[derive(Debug, Clone)]
pub struct ChannelSink {
    tx: tokio::sync::mpsc::UnboundedSender<AccessEvent>,
}

impl ChannelSink {
    /// A sink and the receiving end of its channel.
    pub fn new() -> (ChannelSink, tokio::sync::mpsc::UnboundedReceiver<AccessEvent>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (ChannelSink { tx }, rx)
    }
}

impl AccessSink for ChannelSink {
    fn emit(&self, access: &Access, rule: Option<&Rule>) {
        TracingSink.emit(access, rule);
        let _ = self.tx.send(AccessEvent {
            access: access.clone(),
            rule: rule.map(|r| RuleText(r).to_string()),
            source: rule.map(|r| r.origin.to_string()),
        });
    }
}

/// Installs the process-wide tracing subscriber for `[log]`: `level` is a filter directive
/// (`RUST_LOG` overrides it); `output` standard error (`format`: text or JSON lines), syslog or
/// the journal (opened here, see `crate::logsink`).
///
/// # Errors
/// When the level is not a valid filter, the output cannot be opened (the message names the
/// setting), or a subscriber is already installed.
pub fn init_tracing(log: &LogConfig) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(v.trim()),
        _ => EnvFilter::try_new(&log.level),
    }
    .map_err(|e| format!("log.level: {e}"))?;
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    match &log.output {
        LogOutput::Stderr => {
            let builder = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal());
            match log.format {
                LogFormat::Text => builder.try_init(),
                LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
            }
            .map_err(|e| e.to_string())
        }
        // The body of each message is the line `format = "json"` writes.
        LogOutput::Syslog(s) => tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_ansi(false)
                    .with_writer(crate::logsink::open_syslog(s)?),
            )
            .try_init()
            .map_err(|e| e.to_string()),
        LogOutput::Journald => tracing_subscriber::registry()
            .with(filter)
            .with(crate::logsink::open_journald()?)
            .try_init()
            .map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_offer_formats_like_the_old_lists() {
        let t = TlsOffer {
            alpn: vec!["h2".into(), "http/1.1".into()],
            versions: vec![0x0a0a, 0x0304, 0x0303],
            legacy_version: 0x0303,
            ech: false,
            ech_real: false,
        };
        assert_eq!(t.alpn().map(|a| a.to_string()).as_deref(), Some("h2,http/1.1"));
        assert_eq!(t.versions().to_string(), "1.3,1.2");
        let legacy = TlsOffer { legacy_version: 0x0301, ..TlsOffer::default() };
        assert!(legacy.alpn().is_none());
        assert_eq!(legacy.versions().to_string(), "1.0");
        let odd = TlsOffer { versions: vec![0x7f17], ..TlsOffer::default() };
        assert_eq!(odd.versions().to_string(), "0x7f17");
    }

    #[test]
    fn refusal_blame_sets_the_action() {
        let l = Arc::new(Listener::new(ListenerKind::Connect, "127.0.0.1:1".parse().unwrap()));
        let mut a = Access::new(l, "127.0.0.1:2".parse().unwrap(), 1);
        a.action = Some(Action::Allow);
        a.refused(Outcome::UpstreamRefused, "refused");
        assert_eq!(a.action, Some(Action::Allow));
        a.refused(Outcome::Ssrf, "private");
        assert_eq!(a.action, Some(Action::Deny));
        assert_eq!(a.detail.as_deref(), Some("private"));
    }
}
