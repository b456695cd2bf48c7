//! The configuration file (`config/hostgate.toml`): parsed with serde (unknown keys are errors),
//! then validated into typed values before anything uses it.
//!
//! This module owns the file format and its error messages (file, line, column, field). It does
//! not read rule files (see [`crate::policy`]: [`Config::policy_inputs`] is what the policy is
//! loaded from) nor bind sockets.
//!
//! It depends on the policy's types ([`Action`], [`Mode`], [`Source`]) and on no data-path
//! module: the values the data path reads (a [`Pin`], the `[sniff]` and `[upstream]` settings)
//! are defined here, and the data path imports them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::policy::{canonical_net, placeholder_key, Action, Group, Inputs, Source, MAX_GROUPS};
// `[policy] mode` and `[[policy.source]] mode` spell the policy's own type; re-exported for the
// configuration's users (config depends on policy, never the reverse).
pub use crate::policy::Mode;

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// The listeners, in file order.
    pub listeners: Vec<Listener>,
    /// Policy sources and default.
    pub policy: PolicyConfig,
    /// Placeholder values, keyed by [`placeholder_key`].
    pub vars: BTreeMap<String, String>,
    /// Logging.
    pub log: LogConfig,
    /// Reading the ClientHello or request head before deciding.
    pub sniff: SniffConfig,
    /// Connecting to upstream servers.
    pub upstream: UpstreamConfig,
    /// Resource limits.
    pub limits: LimitsConfig,
    /// Static name pins (`[resolve]`): lowercase name without trailing dot → addresses.
    pub resolve: BTreeMap<String, Vec<Pin>>,
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`, `/policy`).
    pub admin: AdminConfig,
    /// Process lifecycle.
    pub runtime: RuntimeConfig,
    /// TLS inspection of `allow` connections; `None` when off (no `[inspect]`, or
    /// `enabled = false`): `allow` then relays TLS opaquely, like `bypass`.
    pub inspect: Option<InspectConfig>,
    /// The request pipeline (`[http]`).
    pub http: HttpConfig,
    /// `[firewall]`: what `hostgate firewall` emits (the gateway itself never reads it).
    pub firewall: FirewallConfig,
    /// `[pac]`: the PAC file served at `/proxy.pac`; `None` when there is neither a `[pac]`
    /// section nor a connect listener (no proxy to point clients at).
    pub pac: Option<PacConfig>,
    /// `[auth]`: proxy authentication on the connect listeners; `None` when absent.
    pub auth: Option<AuthConfig>,
    /// `[auth] ungrouped`: whether clients in no group must authenticate.
    pub ungrouped_auth: bool,
}

/// `[auth]`: who must sign in on the explicit proxy, against what, and the abuse limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthConfig {
    /// The `realm` of `Proxy-Authenticate: Basic realm="…"`.
    pub realm: String,
    /// Where users and passwords are checked.
    pub backend: AuthBackend,
    /// A client address with this many failed sign-ins within `throttle_window` is refused
    /// (`429`) until the window has passed.
    pub throttle_failures: u32,
    /// See `throttle_failures`.
    pub throttle_window: Duration,
    /// How long a successful check is remembered (keyed by a hash of the credentials).
    pub cache_ttl: Duration,
    /// How long a failed check is remembered.
    pub negative_ttl: Duration,
}

/// `[auth] htpasswd` or `[auth.ldap]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthBackend {
    /// An htpasswd file (bcrypt `$2y$`/`$2b$`, SHA-512-crypt `$6$`), re-read on reload.
    Htpasswd(PathBuf),
    /// An LDAP directory.
    Ldap(LdapConfig),
}

/// `[auth.ldap]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LdapConfig {
    /// `ldap://host[:port]` or `ldaps://host[:port]`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS.
    pub starttls: bool,
    /// A PEM CA certificate for the directory's certificate (the system roots otherwise).
    pub ca: Option<PathBuf>,
    /// How a user is found: bind as a DN made from a template, or search then bind.
    pub find: LdapFind,
    /// The attribute of the user's entry that lists its groups' DNs (`memberOf`), read when
    /// `group_search_base` is not set.
    pub group_attribute: String,
    /// Where to search for the groups whose `member` or `uniqueMember` is the user's DN (for
    /// directories without `memberOf`).
    pub group_search_base: Option<String>,
    /// The longest a bind, search or connect may take.
    pub timeout: Duration,
}

/// How `[auth.ldap]` finds a user's DN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LdapFind {
    /// `user_dn = "uid={user},ou=people,dc=example,dc=org"`.
    Template(String),
    /// Bind as a service account, search `base` with `filter` (`(sAMAccountName={user})`), then
    /// bind as the one entry found.
    Search {
        /// The search base.
        base: String,
        /// The filter, `{user}` replaced by the escaped user name.
        filter: String,
        /// The service account's DN.
        bind_dn: String,
        /// A file holding the service account's password (first line).
        bind_password_file: PathBuf,
    },
}

/// `[firewall]`: the nftables ruleset `hostgate firewall` generates from the configuration and
/// the policy (README: The firewall). The running gateway does not use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirewallConfig {
    /// The interfaces the clients' traffic arrives on (`--lan` replaces them).
    pub lan: Vec<String>,
    /// The TCP ports redirected to the transparent listener.
    pub redirect_ports: Vec<u16>,
    /// What happens to UDP from the LAN that no `udp://` rule decides.
    pub udp_default: UdpDefault,
    /// The nftables table (family `inet`) the ruleset replaces as a whole.
    pub table: String,
}

impl Default for FirewallConfig {
    fn default() -> Self {
        FirewallConfig {
            lan: Vec::new(),
            redirect_ports: vec![80, 443],
            udp_default: UdpDefault::RejectQuic,
            table: "hostgate".to_string(),
        }
    }
}

/// `[firewall] udp_default`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UdpDefault {
    /// Reject UDP 443 (QUIC: browsers fall back to TCP, where the name is decided); let other
    /// UDP through.
    #[default]
    RejectQuic,
    /// Reject every UDP flow no rule lets out (DNS and NTP need their own `udp://` rules).
    Reject,
    /// Let it through (only the `udp://` deny rules reject anything).
    Accept,
}

impl UdpDefault {
    /// As written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            UdpDefault::RejectQuic => "reject-quic",
            UdpDefault::Reject => "reject",
            UdpDefault::Accept => "accept",
        }
    }
}

/// Parses `http://[user:password@]host:port` (IPv6 in brackets). Errors never repeat the
/// password.
fn parse_parent(url: &str) -> Result<ParentProxy, String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(
            "must be http://[user:password@]host:port (the parent is spoken to in plain HTTP CONNECT)".to_string()
        );
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (credentials, hostport) = match rest.rsplit_once('@') {
        Some((c, h)) if c.contains(':') && !c.starts_with(':') => (Some(c.to_string()), h),
        Some(_) => return Err("credentials must be user:password before the @".to_string()),
        None => (None, rest),
    };
    let (host, port) = match hostport.strip_prefix('[') {
        Some(v6) => match v6.split_once("]:") {
            Some((h, p)) => (h.to_string(), p),
            None => return Err(format!("`{hostport}`: an IPv6 parent is [address]:port")),
        },
        None => match hostport.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && !h.contains(['/', '?', '#']) => (h.to_string(), p),
            _ => return Err(format!("`{hostport}` is not host:port")),
        },
    };
    let port = port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("bad port in `{hostport}`"))?;
    Ok(ParentProxy { host, port, credentials })
}

/// Whether `name` can be a Linux interface name in an nftables `iifname` match: 1 to 15 bytes of
/// letters, digits, `_`, `.`, `-`, `+`, `@`, optionally ending in `*` (nftables' wildcard, `lan*`).
pub fn valid_interface(name: &str) -> bool {
    let body = name.strip_suffix('*').unwrap_or(name);
    (1..=15).contains(&name.len())
        && !body.is_empty()
        && body.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'+' | b'@'))
}

/// `[http]`: how HTTP request targets are normalised before they are decided and forwarded
/// (see [`crate::normalize`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpConfig {
    /// Keep an encoded slash or backslash (`%2F`, `%5C`) or a raw backslash in a path as data
    /// (forwarded encoded) instead of refusing the request with `400`. Insecure: an upstream that
    /// decodes `%2F` into a separator resolves `/ok/..%2Fno` to `/no`, past an `allow /ok/` rule.
    pub insecure_keep_escaped_slashes: bool,
}

/// `[inspect]`: TLS inspection of `allow` connections with leaf certificates minted by a local CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InspectConfig {
    /// The CA certificate (PEM), resolved against the configuration file's directory.
    pub ca_cert: PathBuf,
    /// The CA private key (PEM, PKCS#8), resolved likewise. Keep it mode 0600.
    pub ca_key: PathBuf,
    /// How long a minted leaf certificate is valid (it is re-minted before it expires).
    pub leaf_validity: Duration,
    /// How many minted leaf certificates are kept.
    pub cert_cache: usize,
    /// Trust the system's roots (`/etc/ssl/certs`) for upstream certificates.
    pub system_roots: bool,
    /// More trust anchors (PEM files) for upstream certificates, resolved like `ca_cert`.
    pub extra_roots: Vec<PathBuf>,
    /// Accept any upstream certificate. Insecure: the gateway then cannot tell the real server
    /// from an impostor, and the client, which trusts the gateway, cannot either.
    pub insecure_skip_upstream_verify: bool,
    /// What an allowed TLS connection that does not carry HTTP gets.
    pub non_http: NonHttp,
}

impl InspectConfig {
    /// The defaults for a CA at these paths.
    pub fn new(ca_cert: PathBuf, ca_key: PathBuf) -> InspectConfig {
        InspectConfig {
            ca_cert,
            ca_key,
            leaf_validity: Duration::from_secs(24 * 3600),
            cert_cache: 10_000,
            system_roots: true,
            extra_roots: Vec::new(),
            insecure_skip_upstream_verify: false,
            non_http: NonHttp::Deny,
        }
    }
}

/// What an allowed, inspected TLS connection gets when it does not carry HTTP: a ClientHello
/// whose ALPN offers neither `h2` nor `http/1.1`, or (without ALPN) first bytes that are not an
/// HTTP request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NonHttp {
    /// Refuse it (`access_denied`, or a close after the handshake).
    #[default]
    Deny,
    /// Relay it uninspected: spliced before the handshake when the ALPN says so, otherwise the
    /// decrypted bytes are relayed between the two TLS sessions.
    Relay,
}

/// `[admin]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminConfig {
    /// Where to serve the admin endpoints; none when unset. They have no authentication: keep
    /// them on loopback or a management network.
    pub address: Option<SocketAddr>,
    /// `recent`: how many finished access records the status page and `/recent` keep.
    pub recent: usize,
    /// `window`: the sliding window of `/top` and the status page's tables and rates.
    pub window: Duration,
}

impl AdminConfig {
    /// `recent` when absent.
    pub const DEFAULT_RECENT: usize = 2000;
    /// `window` when absent.
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(600);
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { address: None, recent: Self::DEFAULT_RECENT, window: Self::DEFAULT_WINDOW }
    }
}

/// `[runtime]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// On SIGTERM/SIGINT, how long established connections may run before they are closed.
    pub shutdown_grace: Duration,
    /// `workers`: how many data-path threads (each a single-threaded runtime with its own
    /// `SO_REUSEPORT` socket per listener); `None`: one per CPU the process may run on.
    pub workers: Option<usize>,
}

impl RuntimeConfig {
    /// The most `workers` may be.
    pub const MAX_WORKERS: usize = 256;

    /// The number of data-path threads: `workers`, or one per CPU this process may run on (its
    /// affinity mask and cgroup quota count, as `taskset` and containers set them).
    pub fn worker_count(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get).min(Self::MAX_WORKERS)
        })
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { shutdown_grace: Duration::from_secs(30), workers: None }
    }
}

/// `[sniff]`: how long and how much to read before a decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SniffConfig {
    /// How long a client may take to send its ClientHello or first request head.
    pub timeout: Duration,
    /// The most bytes a ClientHello (record headers included) may take.
    pub max_bytes: usize,
    /// What an Encrypted ClientHello gets.
    pub ech: EchPolicy,
    /// The public names of ECH providers (the outer SNI of a real Encrypted ClientHello),
    /// lowercase: a hello with the ECH extension and one of these names is ECH; with another
    /// name, it is GREASE (a browser that has no ECH configuration for the site).
    pub ech_public_names: Vec<String>,
}

impl Default for SniffConfig {
    fn default() -> Self {
        SniffConfig {
            timeout: Duration::from_secs(5),
            max_bytes: 16 * 1024,
            ech: EchPolicy::DecideOuter,
            ech_public_names: vec!["cloudflare-ech.com".to_string()],
        }
    }
}

/// `[sniff] ech`: what a real Encrypted ClientHello (ECH) gets. Its outer SNI is the provider's
/// public name, not the site the client wants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EchPolicy {
    /// Decide on the outer name, as for any ClientHello.
    #[default]
    DecideOuter,
    /// Refuse it (an `access_denied` alert): the client retries without ECH, or fails.
    Deny,
    /// Decide on the outer name and, where that allows, log `would_deny`.
    Report,
}

/// `[upstream]`: where and how the gateway connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// Which address a transparent connection goes to.
    pub verify_destination: VerifyDestination,
    /// Networks exempt from the SSRF guard.
    pub allow_private: Vec<ipnet::IpNet>,
    /// How long a TCP connect to an upstream may take.
    pub connect_timeout: Duration,
    /// How long a relayed connection may carry no bytes either way before it is closed.
    pub idle_timeout: Duration,
    /// A parent proxy every upstream connection goes through (with `CONNECT`), but to names
    /// pinned in `[resolve]`.
    pub parent: Option<ParentProxy>,
    /// `[[client]] parent`: a client group's own choice (a parent, or `"direct"`), by the
    /// group's position (1 for the first `[[client]]`); groups not listed use `parent`.
    pub group_parents: BTreeMap<u8, Option<ParentProxy>>,
}

/// `[upstream] parent = "http://[user:password@]host:port"`.
#[derive(Clone, PartialEq, Eq)]
pub struct ParentProxy {
    /// The parent's host name or address.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// `user:password` for its `Proxy-Authorization: Basic`, never logged.
    pub credentials: Option<String>,
}

impl ParentProxy {
    /// `host:port` (an IPv6 address in brackets), as logged.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Debug for ParentProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The credentials are a secret: never in a log line or a debug dump.
        f.debug_struct("ParentProxy")
            .field("authority", &self.authority())
            .field("credentials", &self.credentials.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            verify_destination: VerifyDestination::Name,
            allow_private: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            parent: None,
            group_parents: BTreeMap::new(),
        }
    }
}

/// How a transparent connection's upstream address is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyDestination {
    /// Resolve the SNI or Host and connect to that; the client's chosen IP is ignored.
    #[default]
    Name,
    /// Connect to the client's chosen IP only if the name resolves to it; deny otherwise.
    OriginalInDns,
    /// Connect to the client's chosen IP whatever the name says. Insecure: a client can pair an
    /// allowed name with any address.
    Original,
}

impl VerifyDestination {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyDestination::Name => "name",
            VerifyDestination::OriginalInDns => "original-in-dns",
            VerifyDestination::Original => "original",
        }
    }
}

/// `[limits]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitsConfig {
    /// The most client connections served at once; further ones wait in the kernel backlog.
    pub max_connections: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig { max_connections: 10_000 }
    }
}

/// A listening socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    /// What kind of traffic arrives there.
    pub kind: ListenerKind,
    /// Where to listen.
    pub address: SocketAddr,
    /// `kind = "sni"`: the port the gateway connects to on the named host (default: the
    /// listener's own port).
    pub upstream_port: Option<u16>,
}

/// The kinds of listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    /// An explicit HTTP proxy: `CONNECT host:port` and absolute-form `http://` requests.
    Connect,
    /// Connections redirected by iptables/nftables `REDIRECT`; the original destination comes
    /// from `SO_ORIGINAL_DST`.
    Transparent,
    /// Connections addressed to the gateway itself (DNS steering: the site's resolver answers
    /// the gateway's address for the names): routed by the SNI or the `Host` to the name, on
    /// the listener's port or `upstream_port`.
    Sni,
}

/// Where the rules come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyConfig {
    /// The action when no rule matches.
    pub default: Action,
    /// Enforce or only report denials, for every source (a source can also be in report mode on
    /// its own).
    pub mode: Mode,
    /// Rule files, in order.
    pub sources: Vec<Source>,
    /// The sources that apply to clients in no group (indices into `sources`): `[policy]
    /// sources`, or every source.
    pub top_sources: Vec<usize>,
    /// The client groups (`[[client]]`), in file order.
    pub groups: Vec<Group>,
}

/// Logging.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug` or `trace`, or any `tracing_subscriber` filter directive.
    pub level: String,
    /// Text or JSON lines (standard error; a syslog message's body is always JSON).
    pub format: LogFormat,
    /// Where the log goes.
    pub output: LogOutput,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".to_string(), format: LogFormat::Text, output: LogOutput::Stderr }
    }
}

/// `[log] output`: where log events go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogOutput {
    /// Lines on standard error (`format` says which).
    Stderr,
    /// RFC 5424 messages to a syslog socket (`[log] syslog`, `[log] facility`).
    Syslog(SyslogConfig),
    /// The systemd journal's native protocol.
    Journald,
}

/// `[log] output = "syslog"`: where to and with which facility.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyslogConfig {
    /// The socket (`[log] syslog`, default `unix:/dev/log`).
    pub target: SyslogTarget,
    /// The RFC 5424 facility code (`[log] facility`: `daemon` = 3 by default, `user` = 1,
    /// `local0`…`local7` = 16…23).
    pub facility: u8,
}

/// `[log] syslog`: a local socket or a remote server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyslogTarget {
    /// `unix:PATH`: a local socket (datagram or stream, whichever it is).
    Unix(PathBuf),
    /// `udp://host:port`.
    Udp(String),
    /// `tcp://host:port` (one message per line).
    Tcp(String),
}

impl fmt::Display for SyslogTarget {
    /// The form `[log] syslog` is written in.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyslogTarget::Unix(p) => write!(f, "unix:{}", p.display()),
            SyslogTarget::Udp(a) => write!(f, "udp://{a}"),
            SyslogTarget::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// `[log] output` as written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawLogOutput {
    #[default]
    Stderr,
    Syslog,
    Journald,
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A `[resolve]` pin from the configuration: an address with or without a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pin {
    /// Connect to this address on the port the client asked for.
    Ip(IpAddr),
    /// Connect to this address and port whatever the client asked for.
    Socket(SocketAddr),
}

impl Pin {
    /// The socket address to connect to when the client asked for `port`.
    pub fn socket_addr(self, port: u16) -> SocketAddr {
        match self {
            Pin::Ip(ip) => SocketAddr::new(ip, port),
            Pin::Socket(addr) => addr,
        }
    }
}

impl FromStr for Pin {
    type Err = String;

    /// `"127.0.0.1"`, `"127.0.0.1:9443"`, `"::1"`, `"[::1]"` or `"[::1]:9443"`. An IPv6 address
    /// with a port needs the brackets: `"::1:443"` is the address `::1:443`.
    fn from_str(s: &str) -> Result<Pin, String> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Pin::Ip(ip));
        }
        if let Some(v6) = s.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
            if let Ok(ip) = v6.parse::<Ipv6Addr>() {
                return Ok(Pin::Ip(IpAddr::V6(ip)));
            }
        }
        match s.parse::<SocketAddr>() {
            Ok(addr) if addr.port() == 0 => Err(format!("`{s}`: port 0 cannot be connected to")),
            Ok(addr) => Ok(Pin::Socket(addr)),
            Err(_) => Err(format!(
                "`{s}` is not an IP address with an optional port \
                 (e.g. 192.0.2.1, 192.0.2.1:443, 2001:db8::1 or [2001:db8::1]:443)"
            )),
        }
    }
}

impl fmt::Display for Pin {
    /// The form [`Pin::from_str`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pin::Ip(ip) => ip.fmt(f),
            Pin::Socket(addr) => addr.fmt(f),
        }
    }
}

/// A configuration error: where (file, line, column) and what.
#[derive(Debug)]
pub struct ConfigError {
    /// The configuration file.
    pub file: PathBuf,
    /// 1-based line and column, when the error has a position.
    pub position: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => write!(f, "{}:{}:{}: {}", self.file.display(), line, col, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default, rename = "listener")]
    listeners: Vec<RawListener>,
    policy: RawPolicy,
    #[serde(default, rename = "client")]
    clients: Vec<RawClient>,
    #[serde(default)]
    vars: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    sniff: RawSniff,
    #[serde(default)]
    upstream: RawUpstream,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    resolve: BTreeMap<String, Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    runtime: RawRuntime,
    #[serde(default)]
    inspect: Option<Spanned<RawInspect>>,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    firewall: RawFirewall,
    #[serde(default)]
    pac: Option<Spanned<RawPac>>,
    auth: Option<Spanned<RawAuth>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    #[serde(default)]
    realm: Option<Spanned<String>>,
    #[serde(default)]
    htpasswd: Option<Spanned<String>>,
    #[serde(default)]
    ldap: Option<Spanned<RawLdap>>,
    #[serde(default)]
    ungrouped: Option<AuthNeed>,
    #[serde(default)]
    throttle_failures: Option<Spanned<i64>>,
    #[serde(default)]
    throttle_window: Option<Spanned<String>>,
    #[serde(default)]
    cache_ttl: Option<Spanned<String>>,
    #[serde(default)]
    negative_ttl: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLdap {
    url: Spanned<String>,
    #[serde(default)]
    starttls: bool,
    #[serde(default)]
    ca: Option<Spanned<String>>,
    #[serde(default)]
    user_dn: Option<Spanned<String>>,
    #[serde(default)]
    search_base: Option<Spanned<String>>,
    #[serde(default)]
    search_filter: Option<Spanned<String>>,
    #[serde(default)]
    bind_dn: Option<Spanned<String>>,
    #[serde(default)]
    bind_password_file: Option<Spanned<String>>,
    #[serde(default)]
    group_attribute: Option<Spanned<String>>,
    #[serde(default)]
    group_search_base: Option<Spanned<String>>,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
}

/// `auth = "required" | "none"` of a client group (and `[auth] ungrouped`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum AuthNeed {
    Required,
    None,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFirewall {
    #[serde(default)]
    lan: Vec<Spanned<String>>,
    #[serde(default)]
    redirect_ports: Option<Spanned<Vec<Spanned<i64>>>>,
    #[serde(default)]
    udp_default: UdpDefault,
    #[serde(default)]
    table: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(default)]
    insecure_keep_escaped_slashes: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInspect {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    ca_cert: Option<Spanned<String>>,
    #[serde(default)]
    ca_key: Option<Spanned<String>>,
    #[serde(default)]
    leaf_validity: Option<Spanned<String>>,
    #[serde(default)]
    cert_cache: Option<Spanned<i64>>,
    #[serde(default)]
    system_roots: Option<bool>,
    #[serde(default)]
    extra_roots: Vec<Spanned<String>>,
    #[serde(default)]
    insecure_skip_upstream_verify: bool,
    #[serde(default)]
    non_http: NonHttp,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    #[serde(default)]
    address: Option<Spanned<String>>,
    #[serde(default)]
    recent: Option<Spanned<i64>>,
    #[serde(default)]
    window: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRuntime {
    #[serde(default)]
    shutdown_grace: Option<Spanned<String>>,
    #[serde(default)]
    workers: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSniff {
    #[serde(default)]
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    max_bytes: Option<Spanned<i64>>,
    #[serde(default)]
    ech: EchPolicy,
    #[serde(default)]
    ech_public_names: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    #[serde(default)]
    verify_destination: VerifyDestination,
    #[serde(default)]
    allow_private: Vec<Spanned<String>>,
    #[serde(default)]
    connect_timeout: Option<Spanned<String>>,
    #[serde(default)]
    idle_timeout: Option<Spanned<String>>,
    #[serde(default)]
    parent: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default)]
    max_connections: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    kind: ListenerKind,
    address: Spanned<String>,
    #[serde(default)]
    upstream_port: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default = "deny")]
    default: Action,
    #[serde(default)]
    mode: Mode,
    #[serde(default, rename = "source")]
    sources: Vec<RawSource>,
    /// Which sources apply to clients in no group (names or paths); every source when absent.
    #[serde(default)]
    ungrouped_sources: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    name: Spanned<String>,
    #[serde(default)]
    networks: Option<Spanned<Vec<Spanned<String>>>>,
    sources: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    auth: Option<AuthNeed>,
    #[serde(default)]
    users: Vec<Spanned<String>>,
    #[serde(default)]
    directory_groups: Vec<Spanned<String>>,
    #[serde(default)]
    parent: Option<Spanned<String>>,
    #[serde(default)]
    default: Option<Action>,
    #[serde(default)]
    mode: Option<Mode>,
}

fn deny() -> Action {
    Action::Deny
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    #[serde(default)]
    name: Option<Spanned<String>>,
    path: Spanned<String>,
    #[serde(default)]
    default: Option<Action>,
    #[serde(default)]
    mode: Mode,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    #[serde(default)]
    level: Option<Spanned<String>>,
    #[serde(default)]
    format: LogFormat,
    #[serde(default)]
    output: RawLogOutput,
    #[serde(default)]
    syslog: Option<Spanned<String>>,
    #[serde(default)]
    facility: Option<Spanned<String>>,
}

impl Config {
    /// What the policy is loaded from: the `[policy]` section, `[vars]`, whether `[inspect]` is
    /// on, and this file's path for messages. `Policy::load(&config.policy_inputs())` reads and
    /// compiles the rule files.
    pub fn policy_inputs(&self) -> Inputs<'_> {
        Inputs {
            sources: &self.policy.sources,
            top_sources: &self.policy.top_sources,
            groups: &self.policy.groups,
            default: self.policy.default,
            mode: self.policy.mode,
            vars: &self.vars,
            inspected: self.inspect.is_some(),
            config_file: &self.path,
            auth: self.ungrouped_auth,
        }
    }

    /// Reads and validates a configuration file.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, and the line and column where there is one.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            position: None,
            message: format!("cannot read the configuration: {e}"),
        })?;
        Config::parse(path, &text)
    }

    /// Parses and validates configuration text that was read from `path` (used for messages and
    /// to resolve relative rule-file paths).
    ///
    /// The sections are validated in file-format order, each by its own step of `Validator`;
    /// the first error stops it.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, line and column.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let v = Validator { path, text, base: path.parent().unwrap_or(Path::new("")) };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let field = e.span().and_then(|s| field_at(text, s.start));
            let message = e.message().trim_end();
            v.err(e.span(), field.map_or_else(|| message.to_string(), |f| format!("{f}: {message}")))
        })?;
        let listeners = v.listeners(raw.listeners)?;
        let group_parents: Vec<(u8, Spanned<String>)> =
            raw.clients.iter().enumerate().filter_map(|(i, c)| c.parent.clone().map(|p| (i as u8 + 1, p))).collect();
        let policy = v.policy(raw.policy, raw.clients)?;
        let vars = v.vars(raw.vars)?;
        let log = v.log(raw.log)?;
        let sniff = v.sniff(&raw.sniff)?;
        let upstream = v.upstream(&raw.upstream, group_parents)?;
        let limits = v.limits(&raw.limits)?;
        let resolve = v.resolve(raw.resolve)?;
        let admin = v.admin(&raw.admin, &listeners)?;
        let runtime = v.runtime(&raw.runtime)?;
        let inspect = v.inspect(raw.inspect)?;
        let http = HttpConfig { insecure_keep_escaped_slashes: raw.http.insecure_keep_escaped_slashes };
        let firewall = v.firewall(raw.firewall)?;
        let pac = v.pac(raw.pac, &listeners)?;
        let ungrouped_auth = raw.auth.as_ref().is_none_or(|a| a.get_ref().ungrouped != Some(AuthNeed::None));
        let auth = match raw.auth {
            Some(a) => Some(v.auth(a)?),
            None => None,
        };
        if auth.is_some() && !listeners.iter().any(|l| l.kind == ListenerKind::Connect) {
            tracing::warn!(
                "[auth] is configured but there is no connect listener: only the explicit proxy can ask for credentials"
            );
        }
        Ok(Config {
            path: path.to_path_buf(),
            listeners,
            policy,
            vars,
            log,
            sniff,
            upstream,
            limits,
            resolve,
            admin,
            runtime,
            inspect,
            http,
            firewall,
            pac,
            auth,
            ungrouped_auth,
        })
    }
}

/// What validating any section needs: the file (named in every error), its text (to turn a span
/// into a line and column) and its directory (relative paths are resolved against it). One method
/// per section turns its raw, deserialized form into the validated one.
struct Validator<'a> {
    path: &'a Path,
    text: &'a str,
    base: &'a Path,
}

impl Validator<'_> {
    /// An error at `span` (a byte range of the text), or about the whole file.
    fn err(&self, span: Option<Range<usize>>, message: String) -> ConfigError {
        ConfigError { file: self.path.to_path_buf(), position: span.map(|s| line_col(self.text, s.start)), message }
    }

    /// A duration field (`"500ms"`, `"5s"`), or `default` when absent.
    fn duration(&self, field: &str, v: &Option<Spanned<String>>, default: Duration) -> Result<Duration, ConfigError> {
        match v {
            None => Ok(default),
            Some(v) => parse_duration(v.get_ref()).ok_or_else(|| {
                self.err(
                    Some(v.span()),
                    format!(
                        "{field}: `{}` is not a duration (a number and ms, s, m or h: \"500ms\", \"5s\")",
                        v.get_ref()
                    ),
                )
            }),
        }
    }

    /// A count field within `min..=max`, or `default` when absent.
    fn int(
        &self,
        field: &str,
        v: &Option<Spanned<i64>>,
        default: usize,
        range: RangeInclusive<usize>,
    ) -> Result<usize, ConfigError> {
        match v {
            None => Ok(default),
            Some(v) => usize::try_from(*v.get_ref()).ok().filter(|n| range.contains(n)).ok_or_else(|| {
                self.err(
                    Some(v.span()),
                    format!("{field}: {} is not between {} and {}", v.get_ref(), range.start(), range.end()),
                )
            }),
        }
    }

    /// `[[listener]]`: addresses parse, and no two listeners share one (port 0 aside).
    fn listeners(&self, raw: Vec<RawListener>) -> Result<Vec<Listener>, ConfigError> {
        let mut listeners = Vec::with_capacity(raw.len());
        for l in raw {
            let address = l.address.get_ref().parse::<SocketAddr>().map_err(|_| {
                self.err(
                    Some(l.address.span()),
                    format!(
                        "listener.address: `{}` is not an IP address and port (e.g. 127.0.0.1:3128 or [::1]:3128)",
                        l.address.get_ref()
                    ),
                )
            })?;
            if address.port() != 0 && listeners.iter().any(|x: &Listener| x.address == address) {
                return Err(self
                    .err(Some(l.address.span()), format!("listener.address: {address} is used by another listener")));
            }
            let upstream_port =
                match &l.upstream_port {
                    None => None,
                    Some(p) if l.kind != ListenerKind::Sni => return Err(self.err(
                        Some(p.span()),
                        "listener.upstream_port: only a `kind = \"sni\"` listener connects to a port of its choosing"
                            .to_string(),
                    )),
                    Some(_) => Some(self.int("listener.upstream_port", &l.upstream_port, 0, 1..=65535)? as u16),
                };
            if l.kind == ListenerKind::Sni && address.port() == 0 && upstream_port.is_none() {
                return Err(self.err(
                    Some(l.address.span()),
                    "listener: a `kind = \"sni\"` listener on port 0 needs `upstream_port` (it connects to the name on its own port otherwise)".to_string(),
                ));
            }
            listeners.push(Listener { kind: l.kind, address, upstream_port });
        }
        Ok(listeners)
    }

    /// `[policy]` and its `[[policy.source]]`s (rule-file paths resolved against the
    /// configuration's directory, each with the line that names it), and the `[[client]]` groups
    /// with the sources they name.
    fn policy(&self, raw: RawPolicy, clients: Vec<RawClient>) -> Result<PolicyConfig, ConfigError> {
        let mut sources: Vec<Source> = Vec::with_capacity(raw.sources.len());
        for s in raw.sources {
            if s.path.get_ref().trim().is_empty() {
                return Err(self.err(Some(s.path.span()), "policy.source.path: empty path".to_string()));
            }
            let name = match s.name {
                Some(n) => {
                    let name = n.get_ref().trim();
                    if name.is_empty() || sources.iter().any(|o| o.name.as_deref() == Some(name)) {
                        return Err(self.err(
                            Some(n.span()),
                            format!("policy.source.name: `{name}` is empty or names another source already"),
                        ));
                    }
                    Some(name.to_string())
                }
                None => None,
            };
            sources.push(Source {
                path: self.base.join(s.path.get_ref()),
                default: s.default,
                line: line_col(self.text, s.path.span().start).0,
                mode: s.mode,
                name,
            });
        }
        let top_sources = match raw.ungrouped_sources {
            Some(list) => self.source_refs("policy.ungrouped_sources", &sources, list.get_ref())?,
            None => (0..sources.len()).collect(),
        };
        let groups = self.groups(clients, &sources, raw.default, raw.mode)?;
        Ok(PolicyConfig { default: raw.default, mode: raw.mode, sources, top_sources, groups })
    }

    /// The sources a list names, by `name` or by `path` as written, as indices.
    fn source_refs(
        &self,
        field: &str,
        sources: &[Source],
        list: &[Spanned<String>],
    ) -> Result<Vec<usize>, ConfigError> {
        let mut out = Vec::with_capacity(list.len());
        for item in list {
            let want = item.get_ref().trim();
            let found = sources
                .iter()
                .position(|s| s.name.as_deref() == Some(want))
                .or_else(|| sources.iter().position(|s| s.path == self.base.join(want)));
            match found {
                Some(i) if !out.contains(&i) => out.push(i),
                Some(_) => return Err(self.err(Some(item.span()), format!("{field}: `{want}` is listed twice"))),
                None => {
                    let known: Vec<String> = sources
                        .iter()
                        .map(|s| s.name.clone().unwrap_or_else(|| s.path.display().to_string()))
                        .collect();
                    return Err(self.err(
                        Some(item.span()),
                        format!(
                            "{field}: no [[policy.source]] has the name or path `{want}` (known: {})",
                            known.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// `[[client]]`: each group's name (unique), networks and sources; its default action and
    /// mode fall back to `[policy]`'s.
    fn groups(
        &self,
        raw: Vec<RawClient>,
        sources: &[Source],
        default: Action,
        mode: Mode,
    ) -> Result<Vec<Group>, ConfigError> {
        if raw.len() > MAX_GROUPS {
            return Err(self.err(
                Some(raw[MAX_GROUPS].name.span()),
                format!("client: at most {MAX_GROUPS} client groups (this is number {})", MAX_GROUPS + 1),
            ));
        }
        let mut groups: Vec<Group> = Vec::with_capacity(raw.len());
        for c in raw {
            let name = c.name.get_ref().trim();
            let valid = !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
            if !valid || groups.iter().any(|g| &*g.name == name) {
                return Err(self.err(
                    Some(c.name.span()),
                    format!("client.name: `{name}` is empty, not letters, digits, `-`, `_` and `.`, or names another group already"),
                ));
            }
            let mut users = Vec::with_capacity(c.users.len());
            for u in &c.users {
                let user = u.get_ref();
                if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
                    return Err(self.err(
                        Some(u.span()),
                        format!("client `{name}` users: `{user}` is not a user name (not empty, no `:`, no control characters)"),
                    ));
                }
                users.push(user.clone());
            }
            let mut directory_groups = Vec::with_capacity(c.directory_groups.len());
            for d in &c.directory_groups {
                if !d.get_ref().contains('=') {
                    return Err(self.err(
                        Some(d.span()),
                        format!("client `{name}` directory_groups: `{}` is not a DN (cn=…,ou=…,dc=…)", d.get_ref()),
                    ));
                }
                directory_groups.push(d.get_ref().clone());
            }
            let mut networks = Vec::new();
            match &c.networks {
                Some(n) if n.get_ref().is_empty() => {
                    return Err(self.err(Some(n.span()), format!("client `{name}`: networks is empty")));
                }
                Some(n) => {
                    for net in n.get_ref() {
                        networks.push(self.network(&format!("client `{name}` networks"), net)?);
                    }
                }
                None if users.is_empty() && directory_groups.is_empty() => {
                    return Err(self.err(
                        Some(c.name.span()),
                        format!("client `{name}`: no networks, users or directory_groups: nobody can be in it"),
                    ));
                }
                None => {}
            }
            let field = format!("client `{name}` sources");
            let group_sources = self.source_refs(&field, sources, c.sources.get_ref())?;
            groups.push(Group {
                name: name.into(),
                networks,
                sources: group_sources,
                default: c.default.unwrap_or(default),
                mode: c.mode.unwrap_or(mode),
                auth: c.auth != Some(AuthNeed::None),
                users,
                directory_groups,
                line: line_col(self.text, c.name.span().start).0,
            });
        }
        Ok(groups)
    }

    /// A network (`10.0.0.0/8`, `fd00::/8`) or an address (a /32 or /128); host bits dropped; an
    /// IPv4-mapped IPv6 network is the IPv4 network ([`canonical_net`]).
    fn network(&self, field: &str, net: &Spanned<String>) -> Result<ipnet::IpNet, ConfigError> {
        let text = net.get_ref().trim();
        let parsed = text
            .parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .map_err(|_| {
                self.err(
                    Some(net.span()),
                    format!("{field}: `{}` is not a network (e.g. 10.0.0.0/8 or fd00::/8)", net.get_ref()),
                )
            })?;
        Ok(canonical_net(parsed.trunc()))
    }

    /// `[vars]`: placeholder values, lowercased host names or labels, keyed by
    /// [`placeholder_key`] (which must be unique).
    fn vars(&self, raw: BTreeMap<String, Spanned<String>>) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut vars = BTreeMap::new();
        for (name, value) in raw {
            let key = placeholder_key(&name);
            let v = value.get_ref().trim().trim_end_matches('.').to_ascii_lowercase();
            let valid = !v.is_empty()
                && v.split('.')
                    .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            if !valid {
                return Err(self.err(
                    Some(value.span()),
                    format!("vars.{name}: `{}` is not a host name or label (letters, digits, `-`, `_`, dots between labels)", value.get_ref()),
                ));
            }
            if key.is_empty() || vars.insert(key.clone(), v).is_some() {
                return Err(self.err(
                    Some(value.span()),
                    format!("vars.{name}: the placeholder name `{key}` is empty or given twice"),
                ));
            }
        }
        Ok(vars)
    }

    /// `[log]`: a level (one word; `tracing_subscriber` checks it when it is installed) and the
    /// format.
    fn log(&self, raw: RawLog) -> Result<LogConfig, ConfigError> {
        let level = match raw.level {
            None => "info".to_string(),
            Some(l) => {
                let v = l.get_ref().trim().to_string();
                if v.is_empty() || v.chars().any(|c| c.is_whitespace()) {
                    return Err(self.err(
                        Some(l.span()),
                        format!("log.level: `{}` is not a level (error, warn, info, debug, trace)", l.get_ref()),
                    ));
                }
                v
            }
        };
        let output = match raw.output {
            RawLogOutput::Syslog => LogOutput::Syslog(SyslogConfig {
                target: match &raw.syslog {
                    None => SyslogTarget::Unix(PathBuf::from("/dev/log")),
                    Some(t) => parse_syslog_target(t.get_ref().trim())
                        .map_err(|m| self.err(Some(t.span()), format!("log.syslog: `{}` {m}", t.get_ref())))?,
                },
                facility: match &raw.facility {
                    None => 3,
                    Some(f) => facility_code(f.get_ref().trim()).ok_or_else(|| {
                        self.err(
                            Some(f.span()),
                            format!(
                                "log.facility: `{}` is not a facility (daemon, user, local0 … local7)",
                                f.get_ref()
                            ),
                        )
                    })?,
                },
            }),
            RawLogOutput::Stderr | RawLogOutput::Journald => {
                if let Some(s) = raw.syslog.as_ref().or(raw.facility.as_ref()) {
                    return Err(self.err(
                        Some(s.span()),
                        "log: `syslog` and `facility` apply only with `output = \"syslog\"`".to_string(),
                    ));
                }
                if raw.output == RawLogOutput::Journald {
                    LogOutput::Journald
                } else {
                    LogOutput::Stderr
                }
            }
        };
        Ok(LogConfig { level, format: raw.format, output })
    }

    /// `[sniff]`: a timeout above zero and a ClientHello cap between 512 bytes and 1 MiB.
    fn sniff(&self, raw: &RawSniff) -> Result<SniffConfig, ConfigError> {
        let default = SniffConfig::default();
        let ech_public_names = match &raw.ech_public_names {
            None => default.ech_public_names,
            Some(names) => {
                let mut out = Vec::with_capacity(names.len());
                for n in names {
                    let host = hostgate_matcher::Host::new(n.get_ref()).map_err(|e| {
                        self.err(
                            Some(n.span()),
                            format!("sniff.ech_public_names: `{}` is not a host name: {e}", n.get_ref()),
                        )
                    })?;
                    out.push(host.as_str().to_string());
                }
                out
            }
        };
        let sniff = SniffConfig {
            timeout: self.duration("sniff.timeout", &raw.timeout, default.timeout)?,
            max_bytes: self.int("sniff.max_bytes", &raw.max_bytes, default.max_bytes, 512..=1 << 20)?,
            ech: raw.ech,
            ech_public_names,
        };
        if sniff.timeout.is_zero() {
            return Err(self.err(raw.timeout.as_ref().map(Spanned::span), "sniff.timeout: must be above zero".into()));
        }
        Ok(sniff)
    }

    /// A parent proxy's URL in `field` (`upstream.parent`, `client.parent`): the parent
    /// resolves the names, so it needs `verify_destination = "name"`.
    fn parent(
        &self,
        field: &str,
        url: &Spanned<String>,
        verify: VerifyDestination,
    ) -> Result<ParentProxy, ConfigError> {
        if verify != VerifyDestination::Name {
            return Err(self.err(
                Some(url.span()),
                format!("{field}: the parent resolves the names, so upstream.verify_destination must be \"name\""),
            ));
        }
        parse_parent(url.get_ref()).map_err(|e| self.err(Some(url.span()), format!("{field}: {e}")))
    }

    /// `[upstream]`: the networks exempt from the SSRF guard (addresses become /32 or /128, host
    /// bits are dropped), the timeouts, the parent, and the client groups' own parents (`"direct"`
    /// or a URL, by group id).
    fn upstream(
        &self,
        raw: &RawUpstream,
        group_parents: Vec<(u8, Spanned<String>)>,
    ) -> Result<UpstreamConfig, ConfigError> {
        let verify = raw.verify_destination;
        let mut groups = BTreeMap::new();
        for (group, p) in group_parents {
            let choice = match p.get_ref().as_str() {
                "direct" => None,
                _ => Some(self.parent("client.parent", &p, verify)?),
            };
            groups.insert(group, choice);
        }
        let default = UpstreamConfig::default();
        let mut allow_private = Vec::with_capacity(raw.allow_private.len());
        for net in &raw.allow_private {
            allow_private.push(self.network("upstream.allow_private", net)?);
        }
        Ok(UpstreamConfig {
            verify_destination: raw.verify_destination,
            allow_private,
            connect_timeout: self.duration(
                "upstream.connect_timeout",
                &raw.connect_timeout,
                default.connect_timeout,
            )?,
            idle_timeout: self.duration("upstream.idle_timeout", &raw.idle_timeout, default.idle_timeout)?,
            group_parents: groups,
            parent: match &raw.parent {
                None => None,
                Some(p) => Some(self.parent("upstream.parent", p, verify)?),
            },
        })
    }

    /// `[limits]`.
    fn limits(&self, raw: &RawLimits) -> Result<LimitsConfig, ConfigError> {
        let default = LimitsConfig::default().max_connections;
        Ok(LimitsConfig {
            max_connections: self.int("limits.max_connections", &raw.max_connections, default, 1..=1 << 24)?,
        })
    }

    /// `[resolve]`: each name (exact, normalised, pinned once) to a non-empty list of [`Pin`]s.
    fn resolve(
        &self,
        raw: BTreeMap<String, Spanned<Vec<Spanned<String>>>>,
    ) -> Result<BTreeMap<String, Vec<Pin>>, ConfigError> {
        let mut resolve = BTreeMap::new();
        for (name, pins) in raw {
            let key = match hostgate_matcher::Host::new(name.trim()) {
                Ok(h) if !name.contains('*') => h.as_str().to_string(),
                _ => return Err(self.err(Some(pins.span()), format!("resolve.\"{name}\": not a host name"))),
            };
            if pins.get_ref().is_empty() {
                return Err(self.err(Some(pins.span()), format!("resolve.\"{name}\": no addresses")));
            }
            let mut parsed = Vec::with_capacity(pins.get_ref().len());
            for p in pins.get_ref() {
                parsed.push(
                    p.get_ref()
                        .parse::<Pin>()
                        .map_err(|e| self.err(Some(p.span()), format!("resolve.\"{name}\": {e}")))?,
                );
            }
            if resolve.insert(key.clone(), parsed).is_some() {
                return Err(self.err(Some(pins.span()), format!("resolve.\"{name}\": `{key}` is pinned twice")));
            }
        }
        Ok(resolve)
    }

    /// `[auth]`: exactly one backend; durations and counts in range; LDAP's way to find a user.
    fn auth(&self, raw: Spanned<RawAuth>) -> Result<AuthConfig, ConfigError> {
        let span = raw.span();
        let a = raw.into_inner();
        let realm = match &a.realm {
            None => "hostgate".to_string(),
            Some(r)
                if r.get_ref().is_empty()
                    || r.get_ref().contains(['"', '\\'])
                    || r.get_ref().chars().any(char::is_control) =>
            {
                return Err(self.err(
                    Some(r.span()),
                    format!(
                        "auth.realm: `{}` must be non-empty, without quotes, backslashes or control characters",
                        r.get_ref()
                    ),
                ));
            }
            Some(r) => r.get_ref().clone(),
        };
        let backend = match (&a.htpasswd, a.ldap) {
            (Some(h), None) => AuthBackend::Htpasswd(self.base.join(h.get_ref())),
            (None, Some(l)) => AuthBackend::Ldap(self.ldap(l)?),
            (Some(h), Some(_)) => {
                return Err(self.err(Some(h.span()), "auth: htpasswd and [auth.ldap] both set: choose one".to_string()))
            }
            (None, None) => {
                return Err(self.err(
                    Some(span),
                    "auth: no backend: set `htpasswd = \"FILE\"` or an [auth.ldap] section".to_string(),
                ))
            }
        };
        let failures = self.int("auth.throttle_failures", &a.throttle_failures, 10, 1..=1_000_000)?;
        Ok(AuthConfig {
            realm,
            backend,
            throttle_failures: failures as u32,
            throttle_window: self.duration("auth.throttle_window", &a.throttle_window, Duration::from_secs(60))?,
            cache_ttl: self.duration("auth.cache_ttl", &a.cache_ttl, Duration::from_secs(300))?,
            negative_ttl: self.duration("auth.negative_ttl", &a.negative_ttl, Duration::from_secs(30))?,
        })
    }

    /// `[auth.ldap]`.
    fn ldap(&self, raw: Spanned<RawLdap>) -> Result<LdapConfig, ConfigError> {
        let span = raw.span();
        let l = raw.into_inner();
        let url = l.url.get_ref().clone();
        let ldaps = url.starts_with("ldaps://");
        if !(ldaps || url.starts_with("ldap://")) || url.split_once("://").is_none_or(|(_, h)| h.is_empty()) {
            return Err(self.err(
                Some(l.url.span()),
                format!("auth.ldap.url: `{url}` is not ldap://HOST[:PORT] or ldaps://HOST[:PORT]"),
            ));
        }
        if ldaps && l.starttls {
            return Err(self.err(
                Some(l.url.span()),
                "auth.ldap: starttls = true with an ldaps:// url (it is TLS already)".to_string(),
            ));
        }
        if !ldaps && !l.starttls {
            tracing::warn!(url = %url, "[auth.ldap] without TLS: passwords cross the network in clear (use ldaps:// or starttls = true)");
        }
        let with_user = |f: &Spanned<String>, field: &str| {
            if f.get_ref().contains("{user}") {
                Ok(f.get_ref().clone())
            } else {
                Err(self.err(Some(f.span()), format!("auth.ldap.{field}: `{}` has no `{{user}}`", f.get_ref())))
            }
        };
        let find = match (&l.user_dn, &l.search_base, &l.search_filter, &l.bind_dn, &l.bind_password_file) {
            (Some(t), None, None, None, None) => LdapFind::Template(with_user(t, "user_dn")?),
            (None, Some(base), Some(filter), Some(dn), Some(pw)) => LdapFind::Search {
                base: base.get_ref().clone(),
                filter: with_user(filter, "search_filter")?,
                bind_dn: dn.get_ref().clone(),
                bind_password_file: self.base.join(pw.get_ref()),
            },
            _ => {
                return Err(self.err(
                    Some(span),
                    "auth.ldap: set either `user_dn` (a DN template with {user}), or all of search_base, search_filter, bind_dn and bind_password_file".to_string(),
                ))
            }
        };
        Ok(LdapConfig {
            url,
            starttls: l.starttls,
            ca: l.ca.as_ref().map(|c| self.base.join(c.get_ref())),
            find,
            group_attribute: l.group_attribute.map_or_else(|| "memberOf".to_string(), |g| g.into_inner()),
            group_search_base: l.group_search_base.map(|g| g.into_inner()),
            timeout: self.duration("auth.ldap.timeout", &l.timeout, Duration::from_secs(5))?,
        })
    }

    /// `[firewall]`: interface names nftables takes, ports, a table name nftables takes.
    fn firewall(&self, raw: RawFirewall) -> Result<FirewallConfig, ConfigError> {
        let mut fw = FirewallConfig { udp_default: raw.udp_default, ..FirewallConfig::default() };
        for l in raw.lan {
            if !valid_interface(l.get_ref()) {
                return Err(self.err(
                    Some(l.span()),
                    format!(
                        "firewall.lan: `{}` is not an interface name (1-15 letters, digits, `_.-+@`; `lan*` for a prefix)",
                        l.get_ref()
                    ),
                ));
            }
            fw.lan.push(l.into_inner());
        }
        if let Some(ports) = raw.redirect_ports {
            let span = ports.span();
            let mut out = Vec::new();
            for p in ports.into_inner() {
                match u16::try_from(*p.get_ref()).ok().filter(|n| *n > 0) {
                    Some(n) if !out.contains(&n) => out.push(n),
                    Some(n) => {
                        return Err(self.err(Some(p.span()), format!("firewall.redirect_ports: {n} is listed twice")))
                    }
                    None => {
                        return Err(self.err(
                            Some(p.span()),
                            format!("firewall.redirect_ports: {} is not a port (1-65535)", p.get_ref()),
                        ))
                    }
                }
            }
            if out.is_empty() {
                return Err(
                    self.err(Some(span), "firewall.redirect_ports: empty (the default is [80, 443])".to_string())
                );
            }
            fw.redirect_ports = out;
        }
        if let Some(t) = raw.table {
            let ok = t.get_ref().len() <= 32
                && t.get_ref().bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
                && t.get_ref().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                return Err(self.err(
                    Some(t.span()),
                    format!(
                        "firewall.table: `{}` is not a table name (a letter, then letters, digits, `_`; at most 32)",
                        t.get_ref()
                    ),
                ));
            }
            fw.table = t.into_inner();
        }
        Ok(fw)
    }

    /// `[admin]`: an address no listener uses (port 0 aside).
    fn admin(&self, raw: &RawAdmin, listeners: &[Listener]) -> Result<AdminConfig, ConfigError> {
        let recent = self.int("admin.recent", &raw.recent, AdminConfig::DEFAULT_RECENT, 1..=1_000_000)?;
        let window = self.duration("admin.window", &raw.window, AdminConfig::DEFAULT_WINDOW)?;
        if !(Duration::from_secs(60)..=Duration::from_secs(86_400)).contains(&window) {
            let span = raw.window.as_ref().map(Spanned::span);
            return Err(self.err(span, "admin.window: must be between 1m and 24h".to_string()));
        }
        let Some(a) = &raw.address else {
            return Ok(AdminConfig { address: None, recent, window });
        };
        let address = a.get_ref().parse::<SocketAddr>().map_err(|_| {
            self.err(
                Some(a.span()),
                format!("admin.address: `{}` is not an IP address and port (e.g. 127.0.0.1:9090)", a.get_ref()),
            )
        })?;
        if address.port() != 0 && listeners.iter().any(|l| l.address == address) {
            return Err(self.err(Some(a.span()), format!("admin.address: {address} is used by a listener")));
        }
        Ok(AdminConfig { address: Some(address), recent, window })
    }

    /// `[runtime]`.
    fn runtime(&self, raw: &RawRuntime) -> Result<RuntimeConfig, ConfigError> {
        let default = RuntimeConfig::default().shutdown_grace;
        let workers = match &raw.workers {
            None => None,
            Some(_) => Some(self.int("runtime.workers", &raw.workers, 1, 1..=RuntimeConfig::MAX_WORKERS)?),
        };
        Ok(RuntimeConfig {
            shutdown_grace: self.duration("runtime.shutdown_grace", &raw.shutdown_grace, default)?,
            workers,
        })
    }

    /// `[inspect]`: `None` when absent or `enabled = false`; otherwise the CA files (required),
    /// the leaf validity (1 minute to 397 days), the cache size and the trust anchors, paths
    /// resolved against the configuration's directory.
    fn inspect(&self, raw: Option<Spanned<RawInspect>>) -> Result<Option<InspectConfig>, ConfigError> {
        let Some(section) = raw else { return Ok(None) };
        let span = section.span();
        let i = section.into_inner();
        if i.enabled == Some(false) {
            return Ok(None);
        }
        let file = |field: &str, v: &Option<Spanned<String>>| match v {
            Some(p) if !p.get_ref().trim().is_empty() => Ok(self.base.join(p.get_ref().trim())),
            Some(p) => Err(self.err(Some(p.span()), format!("inspect.{field}: empty path"))),
            None => Err(self.err(
                Some(span.clone()),
                format!("inspect.{field}: missing (`hostgate ca init --out DIR` creates a CA)"),
            )),
        };
        let mut c = InspectConfig::new(file("ca_cert", &i.ca_cert)?, file("ca_key", &i.ca_key)?);
        c.leaf_validity = self.duration("inspect.leaf_validity", &i.leaf_validity, c.leaf_validity)?;
        if c.leaf_validity < Duration::from_secs(60) || c.leaf_validity > Duration::from_secs(397 * 86_400) {
            return Err(self.err(
                i.leaf_validity.as_ref().map(Spanned::span),
                "inspect.leaf_validity: must be between 1m and 397 days (9528h)".to_string(),
            ));
        }
        c.cert_cache = self.int("inspect.cert_cache", &i.cert_cache, c.cert_cache, 1..=1 << 24)?;
        c.system_roots = i.system_roots.unwrap_or(true);
        for r in &i.extra_roots {
            if r.get_ref().trim().is_empty() {
                return Err(self.err(Some(r.span()), "inspect.extra_roots: empty path".to_string()));
            }
            c.extra_roots.push(self.base.join(r.get_ref().trim()));
        }
        c.insecure_skip_upstream_verify = i.insecure_skip_upstream_verify;
        c.non_http = i.non_http;
        Ok(Some(c))
    }
}

/// `[pac]`: the PAC file (`/proxy.pac`, `hostgate pac`) generated from the policy
/// ([`crate::pac`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacConfig {
    /// The proxies clients are told to use, in order (`PROXY host:port; PROXY …`): `proxy`, or
    /// the first connect listener's address when `proxy` is not set.
    pub proxy: Vec<String>,
    /// The first connect listener's address when `proxy` is not set (`hostgate check` warns
    /// when it is loopback or unspecified: clients elsewhere cannot use it).
    pub from_listener: Option<SocketAddr>,
    /// End the list with `DIRECT`: when no proxy answers, clients go out directly, past the
    /// policy (only a firewall stops them then). Insecure; off by default.
    pub insecure_fallback_direct: bool,
    /// The decisions whose names go `DIRECT` (`direct = ["bypass"]`), in strictness order, no
    /// repeats.
    pub direct: Vec<Action>,
    /// The site's own networks: IP-literal hosts inside them go `DIRECT`.
    pub direct_networks: Vec<ipnet::IpNet>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPac {
    #[serde(default)]
    proxy: Vec<Spanned<String>>,
    #[serde(default)]
    insecure_fallback_direct: bool,
    #[serde(default)]
    direct: Vec<Spanned<String>>,
    #[serde(default)]
    direct_networks: Vec<Spanned<String>>,
}

/// A `[pac] proxy` entry, normalised: `name:port` (a name with a dot), `a.b.c.d:port` or
/// `[v6]:port`. It is written into the PAC file's JavaScript, so nothing else gets through.
fn pac_proxy(text: &str) -> Option<String> {
    let (host, port) = text.rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|p| *p > 0 && port.bytes().all(|b| b.is_ascii_digit()))?;
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<Ipv6Addr>().ok().map(|a| format!("[{a}]:{port}"));
    }
    let name = hostgate_matcher::Host::new(host).ok()?;
    name.as_str().contains('.').then(|| format!("{}:{port}", name.as_str()))
}

impl Validator<'_> {
    /// `[pac]`: the proxy list (default: the first connect listener), the actions that go
    /// `DIRECT`, the direct networks. Without a `[pac]` section: the defaults when there is a
    /// connect listener, nothing otherwise.
    fn pac(&self, raw: Option<Spanned<RawPac>>, listeners: &[Listener]) -> Result<Option<PacConfig>, ConfigError> {
        let listener = listeners.iter().find(|l| l.kind == ListenerKind::Connect).map(|l| l.address);
        let (span, raw) = match raw {
            Some(r) => (Some(r.span()), r.into_inner()),
            None if listener.is_some() => (None, RawPac::default()),
            None => return Ok(None),
        };
        let mut proxy = Vec::new();
        for p in &raw.proxy {
            let entry = pac_proxy(p.get_ref().trim()).ok_or_else(|| {
                self.err(
                    Some(p.span()),
                    format!(
                        "pac.proxy: `{}` is not HOST:PORT (a name with a dot, an IPv4 address or [IPv6], and a port 1-65535)",
                        p.get_ref()
                    ),
                )
            })?;
            if proxy.contains(&entry) {
                return Err(self.err(Some(p.span()), format!("pac.proxy: {entry} is listed twice")));
            }
            proxy.push(entry);
        }
        let from_listener = match (proxy.is_empty(), listener) {
            (false, _) => None,
            (true, Some(address)) => {
                proxy.push(address.to_string());
                Some(address)
            }
            (true, None) => {
                let message = "pac.proxy: missing, and there is no connect listener to default to \
                               (proxy = [\"gw.example.org:3128\"])";
                return Err(self.err(span, message.to_string()));
            }
        };
        let mut direct = Vec::new();
        for a in &raw.direct {
            let action = a.get_ref().parse::<Action>().map_err(|()| {
                self.err(
                    Some(a.span()),
                    format!("pac.direct: unknown action `{}` (allow, bypass or deny)", a.get_ref()),
                )
            })?;
            if direct.contains(&action) {
                return Err(self.err(Some(a.span()), format!("pac.direct: {action} is listed twice")));
            }
            direct.push(action);
        }
        direct.sort_unstable();
        let mut direct_networks = Vec::new();
        for n in &raw.direct_networks {
            direct_networks.push(self.network("pac.direct_networks", n)?);
        }
        let insecure_fallback_direct = raw.insecure_fallback_direct;
        Ok(Some(PacConfig { proxy, from_listener, insecure_fallback_direct, direct, direct_networks }))
    }
}

/// Parses `500ms`, `5s`, `2m`, `1h` (a whole number and a unit).
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    let ms = match unit.trim() {
        "ms" => n,
        "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

/// The dotted name of the key at a byte offset (`policy.default`), from the table header above
/// it and the key on its line; `None` when the offset is not on a `key = value` line.
fn field_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = text[line_start..line_end].trim_start();
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    if line.starts_with('[') {
        return Some(line.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    }
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() {
        return table;
    }
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_string(),
    })
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(before.len(), |nl| before.len() - nl - 1) + 1;
    (line, col)
}

/// `[log] syslog`: `unix:/PATH`, `udp://HOST:PORT` or `tcp://HOST:PORT`; the error says why not.
fn parse_syslog_target(s: &str) -> Result<SyslogTarget, &'static str> {
    const FORMS: &str = "is not `unix:/PATH`, `udp://HOST:PORT` or `tcp://HOST:PORT`";
    if let Some(path) = s.strip_prefix("unix:") {
        return if path.starts_with('/') { Ok(SyslogTarget::Unix(PathBuf::from(path))) } else { Err(FORMS) };
    }
    let (udp, rest) = match (s.strip_prefix("udp://"), s.strip_prefix("tcp://")) {
        (Some(r), _) => (true, r),
        (_, Some(r)) => (false, r),
        _ => return Err(FORMS),
    };
    // host:port, an IPv6 address in brackets; the host is resolved when the log is opened.
    let (host, port) = rest.rsplit_once(':').ok_or(FORMS)?;
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host.len() <= 253
                && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        }
    };
    match port.parse::<u16>() {
        Ok(p) if p != 0 && host_ok => {
            let addr = rest.to_string();
            Ok(if udp { SyslogTarget::Udp(addr) } else { SyslogTarget::Tcp(addr) })
        }
        _ => Err(FORMS),
    }
}

/// `[log] facility`: its RFC 5424 code.
fn facility_code(name: &str) -> Option<u8> {
    match name {
        "user" => Some(1),
        "daemon" => Some(3),
        _ => name
            .strip_prefix("local")
            .and_then(|n| n.parse::<u8>().ok())
            .filter(|n| *n <= 7 && name.len() == 6)
            .map(|n| 16 + n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("conf/hostgate.toml"), text).map_err(|e| e.to_string())
    }

    const GOOD: &str = r#"
[[listener]]
kind = "connect"
address = "127.0.0.1:3128"

[policy]
default = "deny"

[[policy.source]]
path = "policies/a.rules"
default = "bypass"

[vars]
Tenant = "Contoso"
"#;

    #[test]
    fn good() {
        let c = parse(GOOD).unwrap();
        assert_eq!(
            c.listeners,
            [Listener { kind: ListenerKind::Connect, address: "127.0.0.1:3128".parse().unwrap(), upstream_port: None }]
        );
        assert_eq!(c.policy.default, Action::Deny);
        assert_eq!(c.policy.sources[0].path, Path::new("conf/policies/a.rules"));
        assert_eq!(c.policy.sources[0].default, Some(Action::Bypass));
        assert_eq!(c.policy.sources[0].line, 10);
        assert_eq!(c.vars.get("tenant").map(String::as_str), Some("contoso"));
        assert_eq!(c.log, LogConfig::default());
        assert_eq!(c.sniff, SniffConfig::default());
        assert_eq!(c.upstream, UpstreamConfig::default());
        assert!(c.resolve.is_empty());
    }

    #[test]
    fn data_path_sections() {
        let c = parse(&format!(
            "{GOOD}\n[sniff]\ntimeout = \"250ms\"\nmax_bytes = 4096\n[upstream]\nverify_destination = \"original-in-dns\"\n\
             allow_private = [\"10.1.2.3/8\", \"fd00::1\"]\nconnect_timeout = \"2s\"\nidle_timeout = \"1m\"\n\
             [limits]\nmax_connections = 5\n[resolve]\n\"Login.Live.COM.\" = [\"127.0.0.1:9443\", \"::1\"]\n"
        ))
        .unwrap();
        assert_eq!(
            c.sniff,
            SniffConfig { timeout: Duration::from_millis(250), max_bytes: 4096, ..SniffConfig::default() }
        );
        assert_eq!(c.upstream.verify_destination, VerifyDestination::OriginalInDns);
        assert_eq!(
            c.upstream.allow_private,
            ["10.0.0.0/8".parse::<ipnet::IpNet>().unwrap(), "fd00::1/128".parse().unwrap()]
        );
        assert_eq!(c.upstream.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.upstream.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.limits.max_connections, 5);
        assert_eq!(
            c.resolve.get("login.live.com").unwrap(),
            &vec![Pin::Socket("127.0.0.1:9443".parse().unwrap()), Pin::Ip("::1".parse().unwrap())]
        );
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn pin_parses() {
        let ok = [
            ("127.0.0.1", Pin::Ip("127.0.0.1".parse().unwrap())),
            ("127.0.0.1:9443", Pin::Socket(addr("127.0.0.1:9443"))),
            ("::1", Pin::Ip("::1".parse().unwrap())),
            ("[::1]", Pin::Ip("::1".parse().unwrap())),
            ("[::1]:9443", Pin::Socket(addr("[::1]:9443"))),
            ("2001:db8::1", Pin::Ip("2001:db8::1".parse().unwrap())),
            // Not ::1 port 443: without brackets it is all address.
            ("::1:443", Pin::Ip("0::1:443".parse().unwrap())),
        ];
        for (text, want) in ok {
            assert_eq!(text.parse::<Pin>(), Ok(want), "{text}");
        }
        for bad in ["", "localhost", "example.com:443", "127.0.0.1:", "127.0.0.1:99999", "[::1", "[::1]443", "1.2.3"] {
            let err = bad.parse::<Pin>().unwrap_err();
            assert!(err.contains("is not an IP address"), "{bad}: {err}");
            assert!(err.contains(&format!("`{bad}`")), "{bad}: {err}");
        }
        assert_eq!("127.0.0.1:0".parse::<Pin>(), Err("`127.0.0.1:0`: port 0 cannot be connected to".to_string()));
    }

    #[test]
    fn pin_display_round_trips() {
        for text in ["192.0.2.1", "192.0.2.1:443", "2001:db8::1", "[2001:db8::1]:443"] {
            let pin: Pin = text.parse().unwrap();
            assert_eq!(pin.to_string(), text);
        }
    }

    #[test]
    fn client_groups() {
        let text = r#"
[policy]
default = "deny"
ungrouped_sources = ["microsoft"]

[[policy.source]]
name = "microsoft"
path = "rules/ms.rules"

[[policy.source]]
name = "staff"
path = "rules/staff.rules"

[[client]]
name = "kiosks"
networks = ["10.1.0.0/16", "fd00:1::/64"]
sources = ["microsoft"]

[[client]]
name = "staff"
networks = ["10.2.3.4/16", "::ffff:10.3.0.0/112"]
sources = ["microsoft", "rules/staff.rules"]
default = "allow"
mode = "report"

[[client]]
name = "guests"
networks = ["10.9.0.0/16"]
sources = []
"#;
        let c = parse(text).unwrap();
        assert_eq!(c.policy.top_sources, [0]);
        type Row<'a> = (&'a str, Vec<String>, &'a [usize], Action, Mode, usize);
        let g: Vec<Row<'_>> = c
            .policy
            .groups
            .iter()
            .map(|g| {
                (
                    &*g.name,
                    g.networks.iter().map(ToString::to_string).collect(),
                    &g.sources[..],
                    g.default,
                    g.mode,
                    g.line,
                )
            })
            .collect();
        assert_eq!(
            g,
            [
                (
                    "kiosks",
                    vec!["10.1.0.0/16".to_string(), "fd00:1::/64".into()],
                    &[0][..],
                    Action::Deny,
                    Mode::Enforce,
                    15
                ),
                (
                    "staff",
                    vec!["10.2.0.0/16".into(), "10.3.0.0/16".into()],
                    &[0, 1][..],
                    Action::Allow,
                    Mode::Report,
                    20
                ),
                ("guests", vec!["10.9.0.0/16".into()], &[][..], Action::Deny, Mode::Enforce, 27),
            ]
        );
        // Without `ungrouped_sources`, every source applies to clients in no group.
        let all = parse(&text.replace("ungrouped_sources = [\"microsoft\"]\n", "")).unwrap();
        assert_eq!(all.policy.top_sources, [0, 1]);
        let e = parse(&text.replace("sources = [\"microsoft\"]\n\n[[client]]", "sources = [\"micro\"]\n\n[[client]]"))
            .unwrap_err();
        assert!(
            e.starts_with("conf/hostgate.toml:17:12: client `kiosks` sources: no [[policy.source]] has the name or path `micro` (known: microsoft, staff)"),
            "{e}"
        );
        let e = parse(&text.replace("\"10.9.0.0/16\"", "\"10.9.0.0/33\"")).unwrap_err();
        assert!(
            e.starts_with("conf/hostgate.toml:28:13: client `guests` networks: `10.9.0.0/33` is not a network"),
            "{e}"
        );
        let e = parse(&text.replace("name = \"guests\"", "name = \"kiosks\"")).unwrap_err();
        assert!(
            e.contains(
                "client.name: `kiosks` is empty, not letters, digits, `-`, `_` and `.`, or names another group already"
            ),
            "{e}"
        );
        let e = parse(&text.replace("networks = [\"10.9.0.0/16\"]", "networks = []")).unwrap_err();
        assert!(e.contains("client `guests`: networks is empty"), "{e}");
        let e = parse(&text.replace("name = \"staff\"\npath", "name = \"microsoft\"\npath")).unwrap_err();
        assert!(e.contains("policy.source.name: `microsoft` is empty or names another source already"), "{e}");
        let e = parse(&text.replace("sources = []", "sources = []\ncolour = \"red\"")).unwrap_err();
        assert!(e.contains("unknown field `colour`"), "{e}");
        let many: String = (0..64)
            .map(|i| format!("[[client]]\nname = \"g{i}\"\nnetworks = [\"10.{i}.0.0/16\"]\nsources = []\n"))
            .collect();
        let e = parse(&format!("[policy]\n{many}")).unwrap_err();
        assert!(e.contains("client: at most 63 client groups"), "{e}");
    }

    #[test]
    fn admin_recent_and_window() {
        let c = parse(GOOD).unwrap();
        assert_eq!((c.admin.recent, c.admin.window), (2000, Duration::from_secs(600)));
        let c = parse(&format!("{GOOD}\n[admin]\nrecent = 50\nwindow = \"1h\"\n")).unwrap();
        assert_eq!((c.admin.recent, c.admin.window), (50, Duration::from_secs(3600)));
        let e = parse(&format!("{GOOD}\n[admin]\nrecent = 0\n")).unwrap_err();
        assert_eq!(e, "conf/hostgate.toml:17:10: admin.recent: 0 is not between 1 and 1000000");
        let e = parse(&format!("{GOOD}\n[admin]\nwindow = \"10\"\n")).unwrap_err();
        assert!(e.starts_with("conf/hostgate.toml:17:10: admin.window: `10` is not a duration"), "{e}");
        let e = parse(&format!("{GOOD}\n[admin]\nwindow = \"5s\"\n")).unwrap_err();
        assert_eq!(e, "conf/hostgate.toml:17:10: admin.window: must be between 1m and 24h");
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = parse(&GOOD.replace("default = \"deny\"", "defualt = \"deny\"")).unwrap_err();
        assert!(e.starts_with("conf/hostgate.toml:7:1: policy.defualt: unknown field `defualt`, expected"), "{e}");
        let e = parse(&GOOD.replace("default = \"bypass\"", "default = \"pass\"")).unwrap_err();
        assert_eq!(e, "conf/hostgate.toml:11:11: policy.source.default: unknown action `pass` (allow, bypass or deny)");
        let e = parse(&GOOD.replace("127.0.0.1:3128", "localhost:3128")).unwrap_err();
        assert_eq!(e, "conf/hostgate.toml:4:11: listener.address: `localhost:3128` is not an IP address and port (e.g. 127.0.0.1:3128 or [::1]:3128)");
        let e = parse(&GOOD.replace("\"connect\"", "\"socks\"")).unwrap_err();
        assert!(e.starts_with("conf/hostgate.toml:3:8: listener.kind: unknown variant `socks`"), "{e}");
        let e = parse(&GOOD.replace("\"Contoso\"", "\"con toso\"")).unwrap_err();
        assert!(e.starts_with("conf/hostgate.toml:14:10: vars.Tenant: `con toso` is not a host name"), "{e}");
        let e = parse("[policy]\ndefault = 3\n").unwrap_err();
        assert!(
            e.starts_with("conf/hostgate.toml:2:11: policy.default: invalid type: integer `3`, expected a string"),
            "{e}"
        );
        let e = parse("[log]\nlevel = \"info\"\n").unwrap_err();
        assert!(e.contains("missing field `policy`"), "{e}");
        let e = parse(&format!("{GOOD}\n[[listener]]\nkind = \"transparent\"\naddress = \"127.0.0.1:3128\"\n"))
            .unwrap_err();
        assert!(e.contains("127.0.0.1:3128 is used by another listener"), "{e}");
        let e = parse("[policy]\n[policy]\n").unwrap_err();
        assert!(e.starts_with("conf/hostgate.toml:2:"), "{e}");
        let e = parse(&format!("{GOOD}\n[sniff]\ntimeout = \"5 sec\"\n")).unwrap_err();
        assert!(e.starts_with("conf/hostgate.toml:17:11: sniff.timeout: `5 sec` is not a duration"), "{e}");
        let e = parse(&format!("{GOOD}\n[runtime]\nworkers = 0\n")).unwrap_err();
        assert_eq!(e, "conf/hostgate.toml:17:11: runtime.workers: 0 is not between 1 and 256");
        let c = parse(&format!("{GOOD}\n[runtime]\nworkers = 3\n")).unwrap();
        assert_eq!((c.runtime.workers, c.runtime.worker_count()), (Some(3), 3));
        let c = parse(GOOD).unwrap();
        assert_eq!(c.runtime.workers, None);
        assert!(c.runtime.worker_count() >= 1);
        let e = parse(&format!("{GOOD}\n[sniff]\nmax_bytes = 10\n")).unwrap_err();
        assert_eq!(e, "conf/hostgate.toml:17:13: sniff.max_bytes: 10 is not between 512 and 1048576");
        let e = parse(&format!("{GOOD}\n[upstream]\nallow_private = [\"10.0.0.0/33\"]\n")).unwrap_err();
        assert!(
            e.starts_with("conf/hostgate.toml:17:18: upstream.allow_private: `10.0.0.0/33` is not a network"),
            "{e}"
        );
        let e = parse(&format!("{GOOD}\n[upstream]\nverify_destination = \"ip\"\n")).unwrap_err();
        assert!(e.starts_with("conf/hostgate.toml:17:22: upstream.verify_destination: unknown variant `ip`"), "{e}");
        let e = parse(&format!("{GOOD}\n[resolve]\n\"a.test\" = [\"nowhere\"]\n")).unwrap_err();
        assert!(e.starts_with("conf/hostgate.toml:17:13: resolve.\"a.test\": "), "{e}");
        let e = parse(&format!("{GOOD}\n[resolve]\n\"*.test\" = [\"192.0.2.1\"]\n")).unwrap_err();
        assert!(e.starts_with("conf/hostgate.toml:17:12: resolve.\"*.test\": not a host name"), "{e}");
        let e = parse(&format!("{GOOD}\n[limits]\nmax_connections = 0\n")).unwrap_err();
        assert!(e.contains("limits.max_connections: 0 is not between 1 and"), "{e}");
        let e = Config::load(Path::new("/nonexistent/hostgate.toml")).unwrap_err().to_string();
        assert!(e.starts_with("/nonexistent/hostgate.toml: cannot read the configuration:"), "{e}");
    }
    #[test]
    fn log_output_and_its_errors() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.log.output, LogOutput::Stderr);
        let c = parse(&format!("{GOOD}\n[log]\noutput = \"syslog\"\n")).unwrap();
        let want = SyslogConfig { target: SyslogTarget::Unix(PathBuf::from("/dev/log")), facility: 3 };
        assert_eq!(c.log.output, LogOutput::Syslog(want));
        let c = parse(&format!(
            "{GOOD}\n[log]\noutput = \"syslog\"\nsyslog = \"udp://[::1]:514\"\nfacility = \"local3\"\n"
        ))
        .unwrap();
        let want = SyslogConfig { target: SyslogTarget::Udp("[::1]:514".into()), facility: 19 };
        assert_eq!(c.log.output, LogOutput::Syslog(want));
        let c = parse(&format!("{GOOD}\n[log]\noutput = \"syslog\"\nsyslog = \"tcp://logs.example:601\"\n")).unwrap();
        let LogOutput::Syslog(s) = &c.log.output else { panic!("{:?}", c.log.output) };
        assert_eq!(s.target.to_string(), "tcp://logs.example:601");
        let c = parse(&format!("{GOOD}\n[log]\noutput = \"journald\"\n")).unwrap();
        assert_eq!(c.log.output, LogOutput::Journald);

        let e = parse(&format!("{GOOD}\n[log]\noutput = \"file\"\n")).unwrap_err();
        assert!(e.starts_with("conf/hostgate.toml:17:10: log.output: unknown variant `file`"), "{e}");
        for bad in
            ["/dev/log", "unix:dev/log", "udp://host", "udp://host:0", "tcp://:514", "tcp://a b:514", "http://h:1"]
        {
            let e = parse(&format!("{GOOD}\n[log]\noutput = \"syslog\"\nsyslog = \"{bad}\"\n")).unwrap_err();
            assert_eq!(
                e,
                format!(
                    "conf/hostgate.toml:18:10: log.syslog: `{bad}` is not `unix:/PATH`, `udp://HOST:PORT` or `tcp://HOST:PORT`"
                )
            );
        }
        for bad in ["local8", "local", "local01", "kern", "Daemon"] {
            let e = parse(&format!("{GOOD}\n[log]\noutput = \"syslog\"\nfacility = \"{bad}\"\n")).unwrap_err();
            assert_eq!(
                e,
                format!(
                    "conf/hostgate.toml:18:12: log.facility: `{bad}` is not a facility (daemon, user, local0 … local7)"
                )
            );
        }
        let e = parse(&format!("{GOOD}\n[log]\nsyslog = \"udp://h:514\"\n")).unwrap_err();
        assert_eq!(e, "conf/hostgate.toml:17:10: log: `syslog` and `facility` apply only with `output = \"syslog\"`");
    }
}
