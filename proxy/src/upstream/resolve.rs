//! Names to socket addresses: the `[resolve]` pins first, then DNS.
//!
//! [`Resolver::resolve`] turns an upstream host (already normalised: lowercase, no trailing dot)
//! and a port into the socket addresses to try, in order. A pinned name never goes to DNS; an IP
//! literal resolves to itself; anything else is looked up with hickory-resolver, asking for A and
//! AAAA records together.
//!
//! It owns the lookup and nothing after it: it does not judge the addresses (the SSRF guard in
//! [`super::guard`] does), pick one, or connect. Names are queried as absolute names (`name.`), so
//! resolv.conf `search` domains are never appended to what a client asked for.
//!
//! DNS answers are cached by hickory for their TTL (up to 4096 entries, one per name and record
//! type). hickory also caches negative answers (NXDOMAIN, or no record of the type) for the
//! SOA minimum TTL when the server sends an SOA, so a client hammering a missing name does not
//! hammer the DNS server. A query times out after 2 s and is retried twice (hickory's `attempts`
//! counts retries), so a dead DNS server costs a lookup about 6 s.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::TokioResolver;

/// The configuration's `[resolve]` pin, which the resolver answers with (re-exported: it is
/// part of this module's API).
pub(crate) use crate::config::Pin;

/// How many answers (name and record type) hickory keeps.
const CACHE_SIZE: usize = 4096;
/// How long one query to one server may take.
const TIMEOUT: Duration = Duration::from_secs(2);
/// How many times a failed query is retried (three tries in all).
const ATTEMPTS: usize = 1;

/// Resolves upstream names: static pins first, then DNS through hickory-resolver (cached,
/// TTL-respecting).
///
/// Cheap to clone: clones share the pins and the DNS cache.
#[derive(Clone)]
pub(crate) struct Resolver {
    inner: Arc<Inner>,
}

struct Inner {
    /// Lowercase name without trailing dot → pins.
    pins: HashMap<String, Vec<Pin>>,
    /// The DNS resolver, or why there is none.
    dns: Result<TokioResolver, String>,
    /// Positive answers until their TTL runs out: hickory caches too, but cannot say whether an
    /// answer came from its cache, and the gateway counts hits and misses.
    answers: std::sync::Mutex<HashMap<String, (Vec<IpAddr>, std::time::Instant)>>,
}

impl Resolver {
    /// A resolver with these pins, and DNS as `/etc/resolv.conf` says.
    ///
    /// `pins` maps a lowercase host name without trailing dot to its pins (a non-empty list; an
    /// empty one makes the name resolve to nothing rather than go to DNS). `/etc/hosts` is read
    /// once, here, and its names answer before DNS, as the system resolver's would.
    ///
    /// If the DNS configuration cannot be read, this logs a warning and the resolver still works
    /// for pins and IP literals; every DNS lookup then fails with
    /// [`ResolveErrorKind::Unavailable`] saying why. Needs no tokio runtime; lookups do.
    pub(crate) fn new(pins: impl IntoIterator<Item = (String, Vec<Pin>)>) -> Resolver {
        let dns = match TokioResolver::builder_tokio() {
            Ok(mut builder) => {
                set_options(builder.options_mut());
                Ok(builder.build())
            }
            Err(e) => {
                let why = format!("cannot use the system DNS configuration (/etc/resolv.conf): {e}");
                tracing::warn!("{why}; only [resolve] pins and IP addresses will resolve");
                Err(why)
            }
        };
        Resolver::with_dns(pins, dns)
    }

    /// A resolver with these pins whose DNS queries go to `servers` (UDP, and TCP on the same
    /// address for truncated answers) instead of the ones `/etc/resolv.conf` names.
    /// `/etc/hosts` is not consulted. With no servers, every DNS lookup fails with
    /// [`ResolveErrorKind::Unavailable`]. The tests' resolver.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn with_servers(
        pins: impl IntoIterator<Item = (String, Vec<Pin>)>,
        servers: Vec<SocketAddr>,
    ) -> Resolver {
        let dns = if servers.is_empty() {
            Err("no DNS servers are configured".to_string())
        } else {
            let mut config = ResolverConfig::new();
            for addr in servers {
                config.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
                config.add_name_server(NameServerConfig::new(addr, Protocol::Tcp));
            }
            let mut builder = TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
            set_options(builder.options_mut());
            builder.options_mut().use_hosts_file = ResolveHosts::Never;
            Ok(builder.build())
        };
        Resolver::with_dns(pins, dns)
    }

    fn with_dns(pins: impl IntoIterator<Item = (String, Vec<Pin>)>, dns: Result<TokioResolver, String>) -> Resolver {
        let mut map: HashMap<String, Vec<Pin>> = HashMap::new();
        for (name, list) in pins {
            // Callers pass normalised names; this only makes a stray capital or dot harmless.
            map.entry(normalise(&name).into_owned()).or_default().extend(list);
        }
        Resolver { inner: Arc::new(Inner { pins: map, dns, answers: std::sync::Mutex::new(HashMap::new()) }) }
    }

    /// Whether `host` (normalised) is pinned in `[resolve]`.
    pub(crate) fn is_pinned(&self, host: &str) -> bool {
        self.inner.pins.contains_key(normalise(host).as_ref())
    }

    /// All addresses for `host` on `port`.
    ///
    /// `host` is normalised already (lowercase, no trailing dot). A pin with a port keeps its own
    /// port; a pin without one, and every DNS answer, gets `port`. Pinned names never go to DNS,
    /// and IP literals (`192.0.2.1`, `::1`, `[::1]`) resolve to themselves. Addresses come in the
    /// order pinned or the order DNS returned them, duplicates removed. (The A and AAAA queries
    /// run together; whichever answer arrives first comes first.)
    pub(crate) async fn resolve(&self, host: &str, port: u16) -> Result<Resolved, ResolveError> {
        let host = normalise(host);
        let fail = |kind| ResolveError { host: host.to_string(), kind };
        if let Some(pins) = self.inner.pins.get(host.as_ref()) {
            let addrs = dedup(pins.iter().map(|pin| pin.socket_addr(port)));
            if addrs.is_empty() {
                return Err(fail(ResolveErrorKind::NoAddresses));
            }
            return Ok(Resolved { addrs, pinned: true, cached: false });
        }
        if let Some(ip) = ip_literal(&host) {
            return Ok(Resolved { addrs: vec![SocketAddr::new(ip, port)], pinned: false, cached: false });
        }
        if let Some(ips) = self.cached(&host) {
            return Ok(Resolved {
                addrs: dedup(ips.into_iter().map(|ip| SocketAddr::new(ip, port))),
                pinned: false,
                cached: true,
            });
        }
        let dns = match &self.inner.dns {
            Ok(dns) => dns,
            Err(why) => return Err(fail(ResolveErrorKind::Unavailable(why.clone()))),
        };
        if host.is_empty() {
            return Err(fail(ResolveErrorKind::Dns("an empty name cannot be looked up".to_string())));
        }
        // The trailing dot makes the name absolute: no search domains, one query per type.
        let lookup = dns.lookup_ip(format!("{host}.")).await.map_err(|e| fail(error_kind(&e)))?;
        let addrs = dedup(lookup.iter().map(|ip| SocketAddr::new(ip, port)));
        if addrs.is_empty() {
            return Err(fail(ResolveErrorKind::NoAddresses));
        }
        self.remember(&host, addrs.iter().map(SocketAddr::ip).collect(), lookup.valid_until());
        Ok(Resolved { addrs, pinned: false, cached: false })
    }

    fn cached(&self, host: &str) -> Option<Vec<IpAddr>> {
        let answers = self.inner.answers.lock().ok()?;
        let (ips, until) = answers.get(host)?;
        (std::time::Instant::now() < *until).then(|| ips.clone())
    }

    fn remember(&self, host: &str, ips: Vec<IpAddr>, until: std::time::Instant) {
        let Ok(mut answers) = self.inner.answers.lock() else { return };
        if answers.len() >= CACHE_SIZE {
            let now = std::time::Instant::now();
            answers.retain(|_, (_, until)| *until > now);
            if answers.len() >= CACHE_SIZE {
                answers.clear();
            }
        }
        answers.insert(host.to_string(), (ips, until));
    }
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dns: &dyn fmt::Debug = match &self.inner.dns {
            Ok(_) => &"available",
            Err(why) => why,
        };
        f.debug_struct("Resolver").field("pins", &self.inner.pins.len()).field("dns", dns).finish()
    }
}

/// The options both constructors share; anything else comes from resolv.conf or hickory's
/// defaults (which respect TTLs).
fn set_options(opts: &mut ResolverOpts) {
    opts.cache_size = CACHE_SIZE;
    opts.timeout = TIMEOUT;
    opts.attempts = ATTEMPTS;
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
}

/// What [`Resolver::resolve`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// The addresses to try, in order; never empty.
    pub addrs: Vec<SocketAddr>,
    /// Whether they came from a `[resolve]` pin rather than DNS or an IP literal.
    pub pinned: bool,
    /// Whether a DNS answer came from the cache (no query sent).
    pub cached: bool,
}

/// Why a name could not be resolved.
#[derive(Debug)]
pub(crate) struct ResolveError {
    /// The name, as looked up.
    pub host: String,
    /// What went wrong.
    pub kind: ResolveErrorKind,
}

/// What went wrong resolving a name.
#[derive(Debug)]
#[non_exhaustive]
pub(crate) enum ResolveErrorKind {
    /// The name does not exist (NXDOMAIN) or has no A or AAAA records.
    NoAddresses,
    /// No DNS server answered in time.
    Timeout,
    /// There is no usable DNS configuration; the text says why.
    Unavailable(String),
    /// Any other DNS failure (SERVFAIL, REFUSED, a network error, ...).
    Dns(String),
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot resolve {}: {}", self.host, self.kind)
    }
}

impl fmt::Display for ResolveErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveErrorKind::NoAddresses => f.write_str("no addresses (no such name, or no A/AAAA records)"),
            ResolveErrorKind::Timeout => f.write_str("DNS timed out"),
            ResolveErrorKind::Unavailable(why) => write!(f, "DNS unavailable: {why}"),
            ResolveErrorKind::Dns(why) => write!(f, "DNS error: {why}"),
        }
    }
}

impl std::error::Error for ResolveError {}

/// Sorts a hickory error into our kinds.
fn error_kind(e: &hickory_resolver::ResolveError) -> ResolveErrorKind {
    let Some(proto) = e.proto() else {
        return ResolveErrorKind::Dns(e.to_string());
    };
    match proto.kind() {
        ProtoErrorKind::NoRecordsFound { response_code: ResponseCode::NXDomain | ResponseCode::NoError, .. } => {
            ResolveErrorKind::NoAddresses
        }
        ProtoErrorKind::NoRecordsFound { response_code, .. } => {
            ResolveErrorKind::Dns(format!("the server answered {response_code}"))
        }
        ProtoErrorKind::Timeout => ResolveErrorKind::Timeout,
        _ => ResolveErrorKind::Dns(proto.to_string()),
    }
}

/// Lowercases and drops one trailing dot, allocating only if that changes something.
fn normalise(host: &str) -> Cow<'_, str> {
    let trimmed = host.strip_suffix('.').unwrap_or(host);
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        Cow::Borrowed(trimmed)
    }
}

/// `192.0.2.1`, `::1` or `[::1]` as an address; anything else is a name.
pub(crate) fn ip_literal(host: &str) -> Option<IpAddr> {
    match host.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        None => host.parse().ok(),
    }
}

/// Collects in order, keeping the first of each address (the lists are a handful long).
fn dedup(addrs: impl Iterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for addr in addrs {
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::net::UdpSocket;

    use super::*;

    fn pins(list: &[(&str, &[&str])]) -> HashMap<String, Vec<Pin>> {
        list.iter().map(|(name, pins)| (name.to_string(), pins.iter().map(|p| p.parse().unwrap()).collect())).collect()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A DNS server address on which nothing listens (UDP or TCP), so any query fails.
    fn closed_port() -> SocketAddr {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap()
    }

    #[test]
    fn constructs_outside_a_runtime() {
        let resolver = Resolver::new(pins(&[("a.example", &["192.0.2.1"])]));
        let closed = Resolver::with_servers(pins(&[]), vec![closed_port()]);
        assert!(format!("{resolver:?}").starts_with("Resolver { pins: 1, dns: "));
        assert_eq!(format!("{closed:?}"), "Resolver { pins: 0, dns: \"available\" }");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let resolved = runtime.block_on(resolver.resolve("a.example", 443)).unwrap();
        assert_eq!(resolved.addrs, vec![sa("192.0.2.1:443")]);
    }

    #[tokio::test]
    async fn pins_with_and_without_port() {
        // A closed DNS server: if anything here went to DNS it would fail.
        let resolver = Resolver::with_servers(
            pins(&[
                ("api.example", &["192.0.2.1", "192.0.2.2:8443", "2001:db8::1", "192.0.2.1", "[2001:db8::2]:9443"]),
                ("one.example", &["198.51.100.1:9443"]),
            ]),
            vec![closed_port()],
        );
        let got = resolver.resolve("api.example", 443).await.unwrap();
        assert_eq!(
            got,
            Resolved {
                addrs: vec![
                    sa("192.0.2.1:443"),
                    sa("192.0.2.2:8443"),
                    sa("[2001:db8::1]:443"),
                    sa("[2001:db8::2]:9443")
                ],
                pinned: true,
                cached: false,
            }
        );
        let got = resolver.resolve("one.example", 80).await.unwrap();
        assert_eq!(got, Resolved { addrs: vec![sa("198.51.100.1:9443")], pinned: true, cached: false });
        // Clones share the pins.
        let clone = resolver.clone();
        assert!(clone.resolve("one.example", 80).await.unwrap().pinned);
    }

    #[tokio::test]
    async fn pin_keys_are_normalised() {
        let resolver = Resolver::with_servers(pins(&[("Mixed.Example.", &["192.0.2.9"])]), vec![closed_port()]);
        assert_eq!(resolver.resolve("mixed.example", 1).await.unwrap().addrs, vec![sa("192.0.2.9:1")]);
        assert_eq!(resolver.resolve("MIXED.example.", 1).await.unwrap().addrs, vec![sa("192.0.2.9:1")]);
    }

    #[tokio::test]
    async fn an_empty_pin_resolves_to_nothing_without_dns() {
        let resolver = Resolver::with_servers(pins(&[("empty.example", &[])]), vec![closed_port()]);
        let err = resolver.resolve("empty.example", 443).await.unwrap_err();
        assert!(matches!(err.kind, ResolveErrorKind::NoAddresses), "{err:?}");
    }

    #[tokio::test]
    async fn ip_literals_resolve_to_themselves() {
        let resolver = Resolver::with_servers(pins(&[]), vec![closed_port()]);
        for (host, want) in [
            ("192.0.2.1", "192.0.2.1:443"),
            ("::1", "[::1]:443"),
            ("[::1]", "[::1]:443"),
            ("[2001:db8::5]", "[2001:db8::5]:443"),
        ] {
            let got = resolver.resolve(host, 443).await.unwrap();
            assert_eq!(got, Resolved { addrs: vec![sa(want)], pinned: false, cached: false }, "{host}");
        }
    }

    #[tokio::test]
    async fn without_dns_pins_and_literals_still_resolve() {
        let resolver = Resolver::with_servers(pins(&[("a.example", &["192.0.2.1"])]), vec![]);
        assert_eq!(format!("{resolver:?}"), "Resolver { pins: 1, dns: \"no DNS servers are configured\" }");
        assert!(resolver.resolve("a.example", 443).await.unwrap().pinned);
        assert!(!resolver.resolve("192.0.2.3", 443).await.unwrap().pinned);
        let err = resolver.resolve("b.example", 443).await.unwrap_err();
        assert!(matches!(err.kind, ResolveErrorKind::Unavailable(_)), "{err:?}");
        assert_eq!(err.to_string(), "cannot resolve b.example: DNS unavailable: no DNS servers are configured");
    }

    #[tokio::test]
    async fn a_dead_server_times_out() {
        // Takes the full 3 tries × 2 s: nothing answers, and an unconnected UDP socket never
        // hears the ICMP port-unreachable.
        let resolver = Resolver::with_servers(pins(&[]), vec![closed_port()]);
        let started = std::time::Instant::now();
        let err = resolver.resolve("nowhere.test", 443).await.unwrap_err();
        assert!(matches!(err.kind, ResolveErrorKind::Timeout), "{err:?}");
        assert_eq!(err.to_string(), "cannot resolve nowhere.test: DNS timed out");
        assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
    }

    /// Queries seen by [`TestDns`], by (name, type).
    type Seen = Arc<Mutex<HashMap<(String, u16), usize>>>;

    /// A tiny authoritative DNS server on 127.0.0.1: `a.test` has A 192.0.2.7 (TTL 60) and no
    /// AAAA; every other name is NXDOMAIN. Negative answers carry an SOA (minimum 60 s) so they
    /// can be cached.
    struct TestDns {
        addr: SocketAddr,
        seen: Seen,
        task: tokio::task::JoinHandle<()>,
    }

    impl TestDns {
        async fn start() -> TestDns {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = socket.local_addr().unwrap();
            let seen = Seen::default();
            let counts = seen.clone();
            let task = tokio::spawn(async move {
                let mut buf = [0u8; 512];
                loop {
                    let Ok((len, from)) = socket.recv_from(&mut buf).await else { return };
                    if let Some((name, qtype, reply)) = answer(&buf[..len]) {
                        *counts.lock().unwrap().entry((name, qtype)).or_default() += 1;
                        let _ = socket.send_to(&reply, from).await;
                    }
                }
            });
            TestDns { addr, seen, task }
        }

        fn count(&self, name: &str, qtype: u16) -> usize {
            self.seen.lock().unwrap().get(&(name.to_string(), qtype)).copied().unwrap_or(0)
        }

        fn total(&self) -> usize {
            self.seen.lock().unwrap().values().sum()
        }
    }

    impl Drop for TestDns {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    const A: u16 = 1;
    const AAAA: u16 = 28;

    /// Parses a query's question and builds the reply: (lowercase name, type, reply bytes).
    fn answer(query: &[u8]) -> Option<(String, u16, Vec<u8>)> {
        let mut at = 12;
        let mut labels = Vec::new();
        loop {
            let len = usize::from(*query.get(at)?);
            at += 1;
            if len == 0 {
                break;
            }
            labels.push(String::from_utf8_lossy(query.get(at..at + len)?).to_ascii_lowercase());
            at += len;
        }
        let qtype = u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]);
        let question = query.get(12..at + 4)?;
        let name = labels.join(".");

        let found = name == "a.test";
        let rcode = if found { 0 } else { 3 };
        let answers = u16::from(found && qtype == A);
        let mut reply = Vec::with_capacity(128);
        reply.extend_from_slice(&query[..2]); // ID
        reply.push(0x84 | (query[2] & 0x01)); // QR, AA, RD copied
        reply.push(0x80 | rcode); // RA, RCODE
        for count in [1, answers, 1 - answers, 0] {
            reply.extend_from_slice(&u16::to_be_bytes(count)); // QD, AN, NS, AR
        }
        reply.extend_from_slice(question);
        if answers == 1 {
            // a.test. (pointer to the question) A IN TTL 60, 192.0.2.7
            reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]);
        } else {
            // test. SOA IN TTL 60, mname ".", rname ".", serial 1, refresh, retry, expire, minimum 60
            reply.extend_from_slice(&[4, b't', b'e', b's', b't', 0, 0, 6, 0, 1, 0, 0, 0, 60, 0, 22, 0, 0]);
            for field in [1u32, 3600, 600, 86400, 60] {
                reply.extend_from_slice(&field.to_be_bytes());
            }
        }
        Some((name, qtype, reply))
    }

    #[tokio::test]
    async fn real_dns_answers_are_cached() {
        let server = TestDns::start().await;
        let resolver = Resolver::with_servers(pins(&[("pinned.test", &["192.0.2.99"])]), vec![server.addr]);

        let got = resolver.resolve("a.test", 443).await.unwrap();
        assert_eq!(got, Resolved { addrs: vec![sa("192.0.2.7:443")], pinned: false, cached: false });
        assert_eq!(server.count("a.test", A), 1);
        let aaaa = server.count("a.test", AAAA);
        assert!(aaaa <= 1, "{aaaa} AAAA queries");

        // From the cache: no new query of either type, and a clone shares the cache.
        let got = resolver.clone().resolve("a.test", 8443).await.unwrap();
        assert_eq!(got, Resolved { addrs: vec![sa("192.0.2.7:8443")], pinned: false, cached: true });
        assert_eq!(server.count("a.test", A), 1);
        assert_eq!(server.count("a.test", AAAA), aaaa);

        // NXDOMAIN is NoAddresses, and is cached too (the SOA gives it a TTL).
        let err = resolver.resolve("missing.test", 443).await.unwrap_err();
        assert!(matches!(err.kind, ResolveErrorKind::NoAddresses), "{err:?}");
        assert_eq!(err.host, "missing.test");
        assert_eq!(err.to_string(), "cannot resolve missing.test: no addresses (no such name, or no A/AAAA records)");
        let missing = server.count("missing.test", A) + server.count("missing.test", AAAA);
        assert!(missing >= 1);
        let err = resolver.resolve("missing.test", 443).await.unwrap_err();
        assert!(matches!(err.kind, ResolveErrorKind::NoAddresses), "{err:?}");
        assert_eq!(server.count("missing.test", A) + server.count("missing.test", AAAA), missing);

        // A pinned name is answered without a query.
        let before = server.total();
        assert!(resolver.resolve("pinned.test", 443).await.unwrap().pinned);
        assert_eq!(server.total(), before);
        assert_eq!(server.count("pinned.test", A) + server.count("pinned.test", AAAA), 0);
    }
}
