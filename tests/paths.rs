//! Request targets end to end (issue 16: a request is decided on exactly what is forwarded).
//! One table of hostile targets, each run through the transparent listener (a real iptables
//! REDIRECT from a network namespace), as an absolute-form request to the proxy listener, and
//! inside an inspected TLS connection (HTTP/1.1, and HTTP/2); for every row and mode: the status
//! the client got, the `x-hostgate-reason`, exactly which path (if any) reached the upstream, and
//! the access event. Then `[http] insecure_keep_escaped_slashes`, the policy generation of each
//! request on a keep-alive connection across a reload, and a property: whatever reaches the
//! upstream lies under the allowed prefix on a server that decodes it and removes its dot
//! segments.
//!
//! Every HTTP/1.1 request is bytes written on the socket: a client library could normalise the
//! path itself, and the gateway would never see the hostile spelling. HTTP/2 requests are
//! encoded by hyper's client, which sends the URI's path as given (the access events of refused
//! rows show the gateway saw it raw).
//!
//! The transparent mode needs root, `ip` and `iptables`; without them its tests print why and
//! pass (the other modes still run).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hostgate_proxy::access::{AccessEvent, Dst, Protocol};
use hostgate_proxy::config::ListenerKind;
use hostgate_proxy::outcome::Outcome;
use hostgate_proxy::policy::Action;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use proptest::sample::select;
use proptest::strategy::Strategy;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use support::http::{assert_reason_token, read_response, tls_handshake, tunnel};
use support::upstream::HttpsUpstream;
use support::{pins, HttpConn, HttpUpstream, Netns, Response, TestCa, TestGateway, LOCAL_UPSTREAM, STEP};
use tempfile::TempDir;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The one name of these tests, pinned to the recording upstream.
const NAME: &str = "paths.example";

/// The policy of the plain modes (transparent and proxy), after `default = "deny"`.
const PLAIN_RULES: &str = "allow http://paths.example/ok/\n";

/// The policy of the inspection modes.
const TLS_RULES: &str = "allow https://paths.example/ok/\n";

/// Where the namespace's client believes `paths.example` is (port 80): any address will do, the
/// REDIRECT rule takes its packets to the gateway.
const CHOSEN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

// ---- The table --------------------------------------------------------------------------------

/// What must become of a row's request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// `200`, and exactly this path (and query) reached the upstream, with `Host: paths.example`;
    /// the access event's `path` is this too.
    Forwarded(&'static str),
    /// `403` `denied`: the target normalises to this path, which the policy does not allow;
    /// nothing reached the upstream, and the access event's `path` is the normalised one.
    Denied(&'static str),
    /// `400` `bad-request`: the normaliser refused the target ("request target refused");
    /// nothing reached the upstream.
    Refused,
}

use Expect::{Denied, Forwarded, Refused};

/// How a row's target is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// The target as written: origin-form on the transparent and inspected connections, after
    /// `http://paths.example` (absolute-form) to the proxy listener.
    Path,
    /// Absolute-form in every mode (`http://` on the plain ones, `https://` inside inspected
    /// TLS), the authority spelled `host`, with the scheme's default port written out when
    /// `port`; the Host header spelled the same.
    Absolute { host: &'static str, port: bool },
}

/// One hostile target and what must become of it.
#[derive(Clone, Copy, Debug)]
struct Row {
    target: &'static str,
    form: Form,
    expect: Expect,
}

const fn path(target: &'static str, expect: Expect) -> Row {
    Row { target, form: Form::Path, expect }
}

const fn absolute(host: &'static str, port: bool, target: &'static str, expect: Expect) -> Row {
    Row { target, form: Form::Absolute { host, port }, expect }
}

/// The hostile targets, under `allow http://paths.example/ok/` (plain) or `allow
/// https://paths.example/ok/` (inspection), default deny. The normalisation each row relies
/// on is the table in `proxy/src/normalize.rs`.
const TABLE: &[Row] = &[
    path("/ok/x", Forwarded("/ok/x")),
    path("/no", Denied("/no")),
    // Dot segments, plain and percent-encoded, are resolved before the decision.
    path("/ok/../no", Denied("/no")),
    path("/ok/%2e%2e/no", Denied("/no")),
    path("/ok/%2E%2E/no", Denied("/no")),
    path("/ok/.%2e/no", Denied("/no")),
    path("/ok/./../no", Denied("/no")),
    path("/no/../ok/y", Forwarded("/ok/y")),
    path("/ok/x/%2e%2e/%2e%2e/no", Denied("/no")),
    path("/ok/x/%2e", Forwarded("/ok/x/")),
    // Encoded slashes and backslashes, and a raw backslash: servers disagree on them.
    path("/ok/..%2fno", Refused),
    path("/ok/..%2Fno", Refused),
    path("/ok/..%5cno", Refused),
    path("/ok/..%5Cno", Refused),
    path("/ok\\..\\no", Refused),
    path("/ok/%2e%2e%2fno", Refused),
    // Empty segments are merged.
    path("//ok//x", Forwarded("/ok/x")),
    path("/ok//x", Forwarded("/ok/x")),
    // Encoded unreserved characters are decoded; other encodings are kept, hex upper-cased.
    path("/ok/%41b", Forwarded("/ok/Ab")),
    path("/ok/%7e%3f", Forwarded("/ok/~%3F")),
    // `;` is data, but a dot segment with parameters is refused (Tomcat climbs on `..;`).
    path("/ok/a;b/c", Forwarded("/ok/a;b/c")),
    path("/ok/..;/no", Refused),
    path("/ok/%2e%2e;x/no", Refused),
    path("/ok/..%3B/no", Refused),
    path("/ok/%f8%80%80%80%ae%f8%80%80%80%ae/no", Refused),
    path("/ok/.;/no", Refused),
    // NUL, bad percent-encoding, overlong UTF-8.
    path("/ok/%00", Refused),
    path("/ok/%zz", Refused),
    path("/ok/%4", Refused),
    path("/ok/%c0%ae%c0%ae/no", Refused),
    path("/ok/%e0%80%ae%e0%80%ae/no", Refused),
    // Above the root.
    path("/..", Refused),
    path("/ok/../../x", Refused),
    // Double encoding is data; so is the query.
    path("/ok/%252e%252e/no", Forwarded("/ok/%252e%252e/no")),
    path("/ok/x?q=/../../no", Forwarded("/ok/x?q=/../../no")),
    // Absolute-form: the same normalisation, and the Host sent upstream normalised too.
    absolute("paths.example", false, "/ok/../no", Denied("/no")),
    absolute("PATHS.example", true, "/ok/./x", Forwarded("/ok/x")),
    absolute("paths.example.", false, "/ok/x", Forwarded("/ok/x")),
];

/// With `[http] insecure_keep_escaped_slashes = true` (proxy mode): encoded slashes and
/// backslashes are data inside a segment, forwarded encoded, and decided as such.
const KEEP_SLASHES: &[Row] = &[
    path("/ok/..%2fno", Forwarded("/ok/..%2Fno")),
    path("/ok/..%2Fno", Forwarded("/ok/..%2Fno")),
    path("/ok/..%5cno", Forwarded("/ok/..%5Cno")),
    path("/ok/a\\..\\no", Forwarded("/ok/a%5C..%5Cno")),
    // One segment `ok%5C..%5Cno`: not under `/ok/`.
    path("/ok\\..\\no", Denied("/ok%5C..%5Cno")),
    // Keeping slashes weakens nothing else.
    path("/ok/%2e%2e/no", Denied("/no")),
    path("/ok/..;/no", Refused),
];

// ---- Modes ------------------------------------------------------------------------------------

/// How a request gets to the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Plain HTTP to `203.0.113.10:80` from a network namespace, REDIRECTed to the transparent
    /// listener.
    Transparent,
    /// Absolute-form plain HTTP to the connect listener.
    Proxy,
    /// CONNECT, TLS with the inspection CA trusted, then HTTP/1.1 inside.
    Inspection,
    /// The same with HTTP/2 inside (ALPN `h2`): the target is the `:path` of a request hyper's
    /// client sends as given (it does not normalise), with `:authority` the row's authority.
    InspectionH2,
}

impl Mode {
    /// The raw request for `target` written as `form`.
    fn request(self, target: &str, form: Form) -> String {
        let (scheme, port) = match self {
            Mode::Inspection | Mode::InspectionH2 => ("https", 443),
            Mode::Transparent | Mode::Proxy => ("http", 80),
        };
        let (line_target, host) = match form {
            Form::Path if self == Mode::Proxy => (format!("http://{NAME}{target}"), NAME.to_string()),
            Form::Path => (target.to_string(), NAME.to_string()),
            Form::Absolute { host, port: with_port } => {
                let authority = if with_port { format!("{host}:{port}") } else { host.to_string() };
                (format!("{scheme}://{authority}{target}"), authority)
            }
        };
        format!("GET {line_target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: hostgate-e2e\r\n\r\n")
    }

    /// The protocol of its requests' access events.
    fn protocol(self) -> Protocol {
        match self {
            Mode::Inspection | Mode::InspectionH2 => Protocol::Https,
            Mode::Transparent | Mode::Proxy => Protocol::Http,
        }
    }

    /// The rule that allows `/ok/` in this mode.
    fn rule(self) -> &'static str {
        match self {
            Mode::Inspection | Mode::InspectionH2 => TLS_RULES.trim_end(),
            Mode::Transparent | Mode::Proxy => PLAIN_RULES.trim_end(),
        }
    }
}

/// hostgate's inspection CA, made by `ca::init` in a temporary directory.
struct InspectionCa {
    dir: TempDir,
}

impl InspectionCa {
    fn new() -> InspectionCa {
        let dir = tempfile::tempdir().unwrap();
        hostgate_proxy::inspect::ca::init(dir.path(), &hostgate_proxy::inspect::ca::InitOptions::default()).unwrap();
        InspectionCa { dir }
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("hostgate-ca.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("hostgate-ca.key")
    }

    /// A rustls client trusting only this CA, offering `alpn`.
    fn client(&self, alpn: &[u8]) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(self.cert()).unwrap()).unwrap();
        let mut c = ClientConfig::builder_with_provider(support::ca::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        c.alpn_protocols = vec![alpn.to_vec()];
        c
    }
}

/// The recording upstream of a mode.
enum Upstream {
    Http(HttpUpstream),
    Https(HttpsUpstream),
}

/// A gateway in front of a recording upstream for `paths.example`, and what a mode's client
/// needs: the namespace (transparent), the inspection CA (inspection).
struct Env {
    mode: Mode,
    up: Upstream,
    gw: TestGateway,
    ns: Option<Netns>,
    ca: Option<InspectionCa>,
    /// The CA of the HTTPS upstream's certificate, whose file `[inspect] extra_roots` names
    /// (read again on a reload).
    _upstream_ca: Option<TestCa>,
}

impl Env {
    /// The environment of `mode`, with `extra_toml` appended to the configuration. `None` when
    /// this machine cannot run the mode (transparent without root or iptables; printed).
    async fn start(mode: Mode, hint: &str, extra_toml: &str) -> Option<Env> {
        match mode {
            Mode::Transparent => {
                let ns = Netns::create(hint)?;
                let up = HttpUpstream::start("P").await;
                let toml = format!("{LOCAL_UPSTREAM}{}{extra_toml}", pins(&[(NAME, up.addr())]));
                let gw = TestGateway::start_with(&[("transparent", &ns.listener_address())], PLAIN_RULES, &toml).await;
                ns.redirect_iptables(80, gw.transparent_addr().port());
                Some(Env { mode, up: Upstream::Http(up), gw, ns: Some(ns), ca: None, _upstream_ca: None })
            }
            Mode::Proxy => {
                let up = HttpUpstream::start("P").await;
                let toml = format!("{LOCAL_UPSTREAM}{}{extra_toml}", pins(&[(NAME, up.addr())]));
                let gw = TestGateway::start_with(&[("connect", "127.0.0.1:0")], PLAIN_RULES, &toml).await;
                Some(Env { mode, up: Upstream::Http(up), gw, ns: None, ca: None, _upstream_ca: None })
            }
            Mode::Inspection | Mode::InspectionH2 => {
                let ca = InspectionCa::new();
                let upstream_ca = TestCa::new();
                // Under HTTP/1.1 the upstream reports the Host header the gateway sent, under
                // HTTP/2 the `:authority`.
                let alpn: &[&[u8]] = if mode == Mode::InspectionH2 { &[b"h2", b"http/1.1"] } else { &[b"http/1.1"] };
                let up = HttpsUpstream::start(&upstream_ca, &[NAME], "S", alpn).await;
                let toml = format!(
                    "{LOCAL_UPSTREAM}{}[inspect]\nca_cert = \"{}\"\nca_key = \"{}\"\nsystem_roots = false\n\
                     extra_roots = [\"{}\"]\n{extra_toml}",
                    pins(&[(NAME, up.addr())]),
                    ca.cert().display(),
                    ca.key().display(),
                    upstream_ca.ca_pem_path().display()
                );
                let gw = TestGateway::start_with(&[("connect", "127.0.0.1:0")], TLS_RULES, &toml).await;
                Some(Env { mode, up: Upstream::Https(up), gw, ns: None, ca: Some(ca), _upstream_ca: Some(upstream_ca) })
            }
        }
    }

    /// A new client connection in this mode, and its address as the gateway sees it.
    async fn open(&self) -> (Conn, SocketAddr) {
        match self.mode {
            Mode::Transparent => {
                let ns = self.ns.as_ref().expect("a namespace");
                let tcp = ns.connect(SocketAddr::new(IpAddr::V4(CHOSEN), 80)).await;
                let client = tcp.local_addr().unwrap();
                assert_eq!(client.ip(), IpAddr::V4(ns.ns_ip), "not a connection from the namespace");
                (Conn::Plain(HttpConn::from_stream(tcp)), client)
            }
            Mode::Proxy => {
                let conn = HttpConn::connect(self.gw.connect_addr()).await;
                let client = conn.local_addr();
                (Conn::Plain(conn), client)
            }
            Mode::Inspection => {
                let tcp = tunnel(self.gw.connect_addr(), &format!("{NAME}:443")).await;
                let client = tcp.local_addr().unwrap();
                let ca = self.ca.as_ref().expect("an inspection CA");
                let tls = tls_handshake(tcp, NAME, ca.client(b"http/1.1"))
                    .await
                    .unwrap_or_else(|e| panic!("TLS with the inspection CA trusted: {e}"));
                (Conn::Tls(Box::new(BufReader::new(tls))), client)
            }
            Mode::InspectionH2 => {
                let tcp = tunnel(self.gw.connect_addr(), &format!("{NAME}:443")).await;
                let client = tcp.local_addr().unwrap();
                let ca = self.ca.as_ref().expect("an inspection CA");
                let tls = tls_handshake(tcp, NAME, ca.client(b"h2"))
                    .await
                    .unwrap_or_else(|e| panic!("TLS with the inspection CA trusted: {e}"));
                assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "the gateway did not take h2");
                let (sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
                tokio::spawn(conn);
                (Conn::H2(sender), client)
            }
        }
    }

    /// Every request that reached the upstream so far, in order: its path (and query) and its
    /// Host.
    fn reached(&self) -> Vec<(String, String)> {
        match &self.up {
            Upstream::Http(up) => {
                up.received().into_iter().map(|r| (r.target.clone(), r.header("host").unwrap_or("-").into())).collect()
            }
            Upstream::Https(up) => up.seen().into_iter().map(|r| (r.path, r.authority)).collect(),
        }
    }

    /// The recording upstream's address.
    fn upstream_addr(&self) -> SocketAddr {
        match &self.up {
            Upstream::Http(up) => up.addr(),
            Upstream::Https(up) => up.addr(),
        }
    }

    /// The request events from `client` so far.
    fn events_of(&self, client: SocketAddr) -> Vec<AccessEvent> {
        let protocol = self.mode.protocol();
        self.gw.access_events(|e| e.client == client && e.protocol == protocol)
    }

    /// Waits (up to [`STEP`]) for `n` request events from `client`.
    async fn wait_events(&self, client: SocketAddr, n: usize) -> Result<Vec<AccessEvent>, String> {
        let start = Instant::now();
        loop {
            let events = self.events_of(client);
            if events.len() >= n {
                return Ok(events);
            }
            if start.elapsed() > STEP {
                return Err(format!("{} request event(s) from {client} within {STEP:?}, want {n}", events.len()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A client connection on which the test writes raw requests.
enum Conn {
    Plain(HttpConn),
    Tls(Box<BufReader<TlsStream<TcpStream>>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Conn {
    /// Writes `raw` and reads one response.
    async fn request(&mut self, raw: &str) -> std::io::Result<Response> {
        match self {
            Conn::Plain(conn) => {
                conn.send(raw.as_bytes()).await;
                conn.read_response().await
            }
            Conn::Tls(io) => {
                io.get_mut().write_all(raw.as_bytes()).await?;
                io.get_mut().flush().await?;
                match tokio::time::timeout(STEP, read_response(&mut **io, true)).await {
                    Ok(r) => r,
                    Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no response")),
                }
            }
            Conn::H2(sender) => {
                let uri = h2_uri(raw);
                let fail = |what: String| std::io::Error::other(format!("{what} (HTTP/2 request for {uri:?})"));
                let req = Request::get(uri.as_str()).body(Empty::new()).map_err(|e| fail(e.to_string()))?;
                let exchange = async {
                    let res = sender.send_request(req).await.map_err(|e| fail(e.to_string()))?;
                    let status = res.status().as_u16();
                    let headers = res
                        .headers()
                        .iter()
                        .map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                        .collect();
                    let body = res.into_body().collect().await.map_err(|e| fail(e.to_string()))?.to_bytes().to_vec();
                    Ok(Response { status, headers, body })
                };
                match tokio::time::timeout(STEP, exchange).await {
                    Ok(r) => r,
                    Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no response")),
                }
            }
        }
    }
}

/// The URI of the HTTP/2 request that says what the HTTP/1.1 request `raw` ([`Mode::request`])
/// says: its target when absolute-form, else `https://` and its Host, then its target.
fn h2_uri(raw: &str) -> String {
    let target = raw.split(' ').nth(1).unwrap_or_default();
    if target.starts_with("https://") {
        return target.to_string();
    }
    let host = raw.lines().find_map(|l| l.strip_prefix("Host: ")).unwrap_or(NAME);
    format!("https://{host}{target}")
}

// ---- Running a table --------------------------------------------------------------------------

/// Runs every row on a connection of its own and checks it; returns what went wrong, one line per
/// failed check, each naming the mode and the request.
async fn run_rows(env: &Env, rows: &[Row]) -> Vec<String> {
    let mut failures = Vec::new();
    let mut forwarded = Vec::new();
    for row in rows {
        let raw = env.mode.request(row.target, row.form);
        let what = format!("{:?} {:?}", env.mode, raw.lines().next().unwrap_or_default());
        let before = env.reached().len();
        let (mut conn, client) = env.open().await;
        let response = match conn.request(&raw).await {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{what}: no response: {e}; the upstream got {:?}", &env.reached()[before..]));
                continue;
            }
        };
        if let Forwarded(p) = row.expect {
            forwarded.push(p);
        }
        failures.extend(
            check_row(env, row, &response, &env.reached()[before..], client)
                .await
                .into_iter()
                .map(|f| format!("{what}: {f}")),
        );
    }
    // Everything the upstream got, over the whole table: the forwarded rows' paths, in order.
    let all: Vec<String> = env.reached().into_iter().map(|(p, _)| p).collect();
    if all != forwarded {
        failures.push(format!("{:?}: the upstream got {all:?} over the table, want {forwarded:?}", env.mode));
    }
    failures
}

/// The checks of one row: the response, what reached the upstream during the row, and the
/// access event.
async fn check_row(
    env: &Env,
    row: &Row,
    response: &Response,
    reached: &[(String, String)],
    client: SocketAddr,
) -> Vec<String> {
    let mut f = Vec::new();
    let reason = response.header("x-hostgate-reason");
    let (status, want_reason, want_reached): (u16, Option<&str>, Vec<(String, String)>) = match row.expect {
        Forwarded(p) => (200, None, vec![(p.to_string(), NAME.to_string())]),
        Denied(_) => (403, Some("denied"), vec![]),
        Refused => (400, Some("bad-request"), vec![]),
    };
    if response.status != status || reason != want_reason {
        f.push(format!(
            "got {} (x-hostgate-reason {reason:?}), want {status} ({want_reason:?}); body {:?}",
            response.status,
            response.text()
        ));
    }
    if reached != want_reached.as_slice() {
        f.push(format!("the upstream got (path, Host) {reached:?}, want {want_reached:?}"));
    }
    assert_reason_token(response);

    let events = match env.wait_events(client, 1).await {
        Ok(events) => events,
        Err(e) => {
            f.push(e);
            return f;
        }
    };
    if events.len() != 1 {
        f.push(format!("{} request events for one request: {events:#?}", events.len()));
    }
    let ev = &events[0];
    let mut wrong = Vec::new();
    let mut expect = |ok: bool, what: &str| {
        if !ok {
            wrong.push(what.to_string());
        }
    };
    expect(ev.status == Some(response.status), "status, want the one the client got");
    expect(ev.generation == 1, "generation, want 1");
    match env.mode {
        Mode::Transparent => {
            expect(ev.listener.kind == ListenerKind::Transparent, "listener, want transparent");
            expect(ev.dst == Some(original_dst()), "dst, want 203.0.113.10:80");
        }
        Mode::Proxy => expect(ev.listener.kind == ListenerKind::Connect, "listener, want connect"),
        Mode::Inspection | Mode::InspectionH2 => {
            expect(ev.listener.kind == ListenerKind::Connect, "listener, want connect");
            expect(ev.sni.as_deref() == Some(NAME), "sni");
        }
    }
    match row.expect {
        Forwarded(p) => {
            expect(ev.outcome == Outcome::Ok, "outcome, want ok");
            expect(ev.path.as_deref() == Some(p), &format!("path, want {p}"));
            expect(ev.action == Some(Action::Allow), "action, want allow");
            expect(ev.rule.as_deref() == Some(env.mode.rule()), "rule");
            expect(ev.host.as_deref() == Some(NAME), "host");
            expect(ev.upstream == Some(env.upstream_addr()), "upstream, want the recording one");
        }
        Denied(normalised) => {
            expect(ev.outcome == Outcome::Denied, "outcome, want denied");
            expect(ev.path.as_deref() == Some(normalised), &format!("path, want the normalised {normalised}"));
            expect(ev.action == Some(Action::Deny) && ev.rule.is_none(), "decision, want the default deny");
        }
        Refused => {
            expect(ev.outcome == Outcome::BadRequest, "outcome, want bad-request");
            let detail = ev.detail.as_deref().unwrap_or_default();
            expect(detail.starts_with("request target refused"), "detail, want \"request target refused…\"");
            expect(ev.action == Some(Action::Deny), "action, want deny");
            // Nothing normalised to log: the target as the gateway received it.
            expect(ev.path.as_deref() == Some(row.target), "path, want the target as sent");
        }
    }
    if !wrong.is_empty() {
        f.push(format!("access event: {}: {ev:#?}", wrong.join("; ")));
    }
    f
}

/// The transparent client's original destination, as an access event's `dst`.
fn original_dst() -> Dst {
    Dst::Addr(SocketAddr::new(IpAddr::V4(CHOSEN), 80))
}

/// Runs [`TABLE`] in `mode` and fails listing every failed check.
async fn table_in(mode: Mode, hint: &str) {
    let Some(env) = Env::start(mode, hint, "").await else { return };
    let failures = run_rows(&env, TABLE).await;
    eprintln!("{mode:?}: {} rows run, {} failed checks", TABLE.len(), failures.len());
    assert!(failures.is_empty(), "{} failed checks:\n{}", failures.len(), failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_target_through_the_transparent_listener() {
    table_in(Mode::Transparent, "every_hostile_target_through_the_transparent_listener").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_target_as_an_absolute_form_request_to_the_proxy() {
    table_in(Mode::Proxy, "every_hostile_target_as_an_absolute_form_request_to_the_proxy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_target_inside_inspected_tls() {
    table_in(Mode::Inspection, "every_hostile_target_inside_inspected_tls").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_target_inside_inspected_tls_over_http2() {
    table_in(Mode::InspectionH2, "every_hostile_target_inside_inspected_tls_over_http2").await;
}

/// A request the transparent listener refuses while reading its target (here: the normaliser)
/// is logged with its connection's original destination, like every other event of a
/// redirected connection; not with nothing (origin-form) or the authority the client wrote
/// (absolute-form).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_transparent_request_keeps_its_original_destination() {
    let Some(env) =
        Env::start(Mode::Transparent, "a_refused_transparent_request_keeps_its_original_destination", "").await
    else {
        return;
    };
    for form in [Form::Path, Form::Absolute { host: NAME, port: false }] {
        let (mut conn, client) = env.open().await;
        let raw = Mode::Transparent.request("/ok/..%2fno", form);
        let r = conn.request(&raw).await.unwrap();
        assert_eq!((r.status, r.header("x-hostgate-reason")), (400, Some("bad-request")), "{raw:?}: {r:?}");
        let ev = env.wait_events(client, 1).await.unwrap().remove(0);
        assert_eq!(ev.outcome, Outcome::BadRequest, "{raw:?}: {ev:#?}");
        assert_eq!(ev.dst, Some(original_dst()), "{raw:?}: {ev:#?}");
    }
    assert!(env.reached().is_empty(), "{:?}", env.reached());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeping_escaped_slashes_forwards_them_encoded() {
    let extra = "[http]\ninsecure_keep_escaped_slashes = true\n";
    let env = Env::start(Mode::Proxy, "keeping_escaped_slashes_forwards_them_encoded", extra).await.unwrap();
    let failures = run_rows(&env, KEEP_SLASHES).await;
    assert!(failures.is_empty(), "{} failed checks:\n{}", failures.len(), failures.join("\n"));
}

// ---- The generation of each request -------------------------------------------------------------

/// On one keep-alive connection per mode: a request allowed under generation 1; the rules
/// rewritten to deny the name and the gateway reloaded; the next request on the same connection
/// refused by generation 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_on_a_keep_alive_connection_is_decided_by_the_generation_in_force() {
    const HINT: &str = "each_request_on_a_keep_alive_connection_is_decided_by_the_generation_in_force";
    for mode in [Mode::Transparent, Mode::Proxy, Mode::Inspection, Mode::InspectionH2] {
        let Some(env) = Env::start(mode, HINT, "").await else { continue };
        let (mut conn, client) = env.open().await;
        let r = conn.request(&mode.request("/ok/before", Form::Path)).await.unwrap();
        assert_eq!(r.status, 200, "{mode:?}: {r:?}");
        let first = env.wait_events(client, 1).await.unwrap().remove(0);
        assert_eq!(
            (first.outcome, first.generation, first.action),
            (Outcome::Ok, 1, Some(Action::Allow)),
            "{mode:?}: {first:#?}"
        );

        let rules = env.gw.config_dir().join("test.rules");
        let tmp = rules.with_extension("tmp-write");
        std::fs::write(&tmp, format!("deny {NAME}\n")).unwrap();
        std::fs::rename(&tmp, &rules).unwrap();
        let reloaded = env.gw.gateway().reload().await.unwrap_or_else(|e| panic!("{mode:?}: reload: {e}"));
        assert_eq!(reloaded.generation, 2, "{mode:?}: {reloaded:?}");

        // The same connection: its next request is decided by generation 2.
        let r = conn.request(&mode.request("/ok/after", Form::Path)).await.unwrap();
        assert_eq!((r.status, r.header("x-hostgate-reason")), (403, Some("denied")), "{mode:?}: {r:?}");
        let events = env.wait_events(client, 2).await.unwrap();
        assert_eq!(events.len(), 2, "{mode:?}: {events:#?}");
        let second = &events[1];
        assert_eq!(second.path.as_deref(), Some("/ok/after"), "{mode:?}: {second:#?}");
        assert_eq!(
            (second.outcome, second.generation, second.action),
            (Outcome::Denied, 2, Some(Action::Deny)),
            "{mode:?}: {second:#?}"
        );
        assert_eq!(second.rule.as_deref(), Some(format!("deny {NAME}").as_str()), "{mode:?}: {second:#?}");
        let reached: Vec<String> = env.reached().into_iter().map(|(p, _)| p).collect();
        assert_eq!(reached, ["/ok/before"], "{mode:?}");
        eprintln!("{mode:?}: generation 1 then 2 on one connection");
    }
}

// ---- The property -----------------------------------------------------------------------------

/// The segments generated targets are made of.
const SEGMENTS: &[&str] = &["ok", "no", "x", ".", "..", "%2e", "%2E", ".%2e", "%2e.", "..;x", "", "%41", "%252e"];

/// Every `%XX` decoded (what a server that decodes before resolving sees), other bytes as they
/// are.
fn percent_decode_all(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).and_then(|&c| hex(c)), b.get(i + 2).and_then(|&c| hex(c))) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// RFC 3986 §5.2.4, remove_dot_segments, as written there (a reference, not the gateway's).
fn remove_dot_segments(path: &str) -> String {
    let mut input = path.to_string();
    let mut output = String::new();
    let pop = |output: &mut String| match output.rfind('/') {
        Some(i) => output.truncate(i),
        None => output.clear(),
    };
    while !input.is_empty() {
        if let Some(rest) = input.strip_prefix("../").or_else(|| input.strip_prefix("./")) {
            input = rest.to_string();
        } else if input.starts_with("/./") {
            input = input[2..].to_string();
        } else if input == "/." {
            input = "/".to_string();
        } else if input.starts_with("/../") {
            input = input[3..].to_string();
            pop(&mut output);
        } else if input == "/.." {
            input = "/".to_string();
            pop(&mut output);
        } else if input == "." || input == ".." {
            input.clear();
        } else {
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |i| i + start);
            output.push_str(&input[..end]);
            input = input[end..].to_string();
        }
    }
    output
}

#[test]
fn the_reference_resolver_follows_rfc_3986() {
    // RFC 3986 §5.2.4's own examples, and the climbs above the root it absorbs.
    assert_eq!(remove_dot_segments("/a/b/c/./../../g"), "/a/g");
    assert_eq!(remove_dot_segments("mid/content=5/../6"), "mid/6");
    assert_eq!(remove_dot_segments("/ok/../../no"), "/no");
    assert_eq!(remove_dot_segments("/ok/x/.."), "/ok/");
    assert_eq!(percent_decode_all("/ok/%2e%2E/%41%252e%zz"), "/ok/../A%2e%zz");
    // What the property would catch: the bypass of issue 16, forwarded raw.
    assert_eq!(remove_dot_segments(&percent_decode_all("/ok/%2e%2e/no")), "/no");
}

/// Whatever the gateway forwards, a server that percent-decodes the path and then removes dot
/// segments resolves under `/ok/`. One gateway and one upstream for all cases.
#[test]
fn whatever_reaches_the_upstream_resolves_under_the_allowed_prefix() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let env = rt.block_on(Env::start(Mode::Proxy, "property", "")).unwrap();
    let targets =
        (proptest::bool::ANY, proptest::collection::vec(select(SEGMENTS), 0..7)).prop_map(|(ok_first, segments)| {
            let mut t = String::from(if ok_first { "/ok/" } else { "/" });
            t.push_str(&segments.join("/"));
            t
        });
    let config = ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() };
    let mut runner = TestRunner::new(config);
    let statuses = std::cell::RefCell::new(std::collections::BTreeMap::<u16, usize>::new());
    let result = runner.run(&targets, |target| {
        let (status, reached) = rt.block_on(async {
            let before = env.reached().len();
            let (mut conn, _) = env.open().await;
            let r = conn.request(&Mode::Proxy.request(&target, Form::Path)).await;
            let r = r.map_err(|e| TestCaseError::fail(format!("{target:?}: no response: {e}")))?;
            Ok::<_, TestCaseError>((r.status, env.reached()[before..].to_vec()))
        })?;
        *statuses.borrow_mut().entry(status).or_default() += 1;
        let want = usize::from(status == 200);
        if ![200, 400, 403].contains(&status) || reached.len() != want {
            return Err(TestCaseError::fail(format!("{target:?}: {status}, the upstream got {reached:?}")));
        }
        for (path, _) in &reached {
            let path = path.split_once('?').map_or(path.as_str(), |(p, _)| p);
            let resolved = remove_dot_segments(&percent_decode_all(path));
            if !resolved.starts_with("/ok/") {
                return Err(TestCaseError::fail(format!(
                    "{target:?} reached the upstream as {path:?}, which a decoding server resolves to {resolved:?}"
                )));
            }
        }
        Ok(())
    });
    eprintln!("statuses over the cases: {:?}", statuses.borrow());
    {
        let _runtime = rt.enter();
        drop(env);
    }
    if let Err(e) = result {
        panic!("{e}");
    }
}
