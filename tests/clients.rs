//! Client groups (`[[client]]`) and destination address rules, end to end.
//!
//! The transparent listener is fed by REDIRECT rules from a network namespace whose clients sit
//! on three source networks: `10.232.K.2` (group `kiosks`), `10.233.K.2` (group `staff`) and the
//! veth's own `10.231.K.2` (no group: the top-level policy). The same SNI gets each group's
//! decision; a reload that moves a network to another group changes the next connection's (and
//! the next plain-HTTP request's) group; connections without a name (a ClientHello without SNI,
//! an unknown protocol) are decided by the address rules of the client's group on their original
//! destination, while a name always decides by the name rules.
//!
//! The connect listener decides an IP-literal `CONNECT` and an absolute-form `GET` to an IP
//! literal by the address rules (longest prefix, then the stricter action), for clients in a
//! group (bound to `127.0.0.2`, or `::1`) and not (`127.0.0.1`); an address rule does not open
//! the SSRF guard.
//!
//! The `hostgate` binary's `explain --client`, `explain ADDRESS` and `check` show the groups.
//!
//! The namespace tests need root, `ip`, `iptables` (and `nft` for the nft variant); they print
//! why and pass when they cannot run.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use hostgate_proxy::access::{AccessEvent, Dst, Protocol};
use hostgate_proxy::config::ListenerKind;
use hostgate_proxy::outcome::Outcome;
use hostgate_proxy::policy::Action;
use serde_json::Value;
use support::gateway::assert_rule_in;
use support::http::{read_connect_answer, read_response, read_until_closed, tls_handshake};
use support::process::Hostgate;
use support::upstream::{Mode, RawUpstream};
use support::{
    assert_logged_deny, pins, ClientHello, HttpConn, HttpUpstream, Netns, TestCa, TestGateway, TlsUpstream,
    ALERT_ACCESS_DENIED, LOCAL_UPSTREAM, STEP,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

// ---------------------------------------------------------------------------------------------
// Assertions on access events.

/// Asserts an event's decision: its action, its client group, and the deciding rule (`ACTION
/// TARGET`, rule file, line), or none (the group's default decided).
fn assert_group_decided(ev: &AccessEvent, group: Option<&str>, action: Action, rule: Option<(&str, &str, usize)>) {
    assert_eq!(ev.client_group.as_deref(), group, "client_group: {ev:#?}");
    assert_eq!(ev.action, Some(action), "action: {ev:#?}");
    match rule {
        Some((text, file, line)) => assert_rule_in(ev, text, file, line),
        None => assert_eq!((ev.rule.as_deref(), ev.source.as_deref()), (None, None), "no rule: {ev:#?}"),
    }
}

/// Replaces `path` with `text`: a temporary file in the same directory, then a rename, so that
/// a reload never reads a half-written file.
fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

// ---------------------------------------------------------------------------------------------
// The transparent listener, from a namespace with clients on three source networks.

/// The second octet of the kiosks' source network, `10.232.K.0/24` (group network `10.232.0.0/16`).
const KIOSK_NET: u8 = 232;
/// The second octet of the staff's source network, `10.233.K.0/24` (group network `10.233.0.0/16`).
const STAFF_NET: u8 = 233;

/// Line numbers matter: events name `FILE:LINE`. Shared by both groups, not by clients in no
/// group. `198.51.100.0/24` holds the namespace's "public" destination (`198.51.100.K`),
/// `10.240.0.0/16` its private one (`10.240.K.1`).
const MS_RULES: &str = "\
allow portal.test
allow 198.51.100.0/24
deny 10.240.0.0/16
allow http://news.test
";
/// The kiosks' own rules.
const KIOSK_RULES: &str = "\
deny teams.test
deny http://wiki.test
";
/// The staff's own rules.
const STAFF_RULES: &str = "\
allow teams.test
allow http://wiki.test
";
/// The rules of clients in no group (`ungrouped_sources`).
const GUEST_RULES: &str = "\
allow guest.test
";

/// The `[policy]` with its four sources, and the two groups with these networks (TOML list
/// items). The staff's sources name one source by path, the rest by name.
fn transparent_policy(kiosk_networks: &str, staff_networks: &str) -> String {
    format!(
        r#"[policy]
default = "deny"
ungrouped_sources = ["guest"]

[[policy.source]]
name = "microsoft"
path = "ms.rules"

[[policy.source]]
name = "kiosk"
path = "kiosk.rules"

[[policy.source]]
name = "staff"
path = "staff.rules"

[[policy.source]]
name = "guest"
path = "guest.rules"

[[client]]
name = "kiosks"
networks = [{kiosk_networks}]
sources = ["microsoft", "kiosk"]
default = "deny"

[[client]]
name = "staff"
networks = [{staff_networks}]
sources = ["microsoft", "staff.rules"]
"#
    )
}

/// How the namespace's traffic gets to the gateway.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Redirect {
    Iptables,
    Nft,
}

/// A namespace with three client addresses, a gateway whose transparent listener is on the root
/// side of its veth, a TLS upstream (pinned for `teams.test`, `guest.test`, `portal.test`), an
/// HTTP upstream (pinned for `wiki.test`, `news.test`), raw servers on the original
/// destinations a client without a name goes to, and REDIRECT rules for ports 443, 80 and the
/// raw servers' ports.
struct Transparent {
    ns: Netns,
    ca: TestCa,
    tls: TlsUpstream,
    http: HttpUpstream,
    gw: TestGateway,
    /// `10.232.K.2`: in `kiosks`.
    kiosk: IpAddr,
    /// `10.233.K.2`: in `staff`.
    staff: IpAddr,
    /// `10.231.K.2`: in no group.
    ungrouped: IpAddr,
    /// `198.51.100.K`, inside `allow 198.51.100.0/24`.
    public: Ipv4Addr,
    /// `10.240.K.1`, inside `deny 10.240.0.0/16`.
    private: Ipv4Addr,
    /// A raw server on `198.51.100.K:443`.
    public_tls: RawUpstream,
    /// A raw server on `198.51.100.K:<port>` (for the unknown protocol).
    public_raw: RawUpstream,
    /// A raw server on `10.240.K.1:443`: nothing may reach it.
    private_tls: RawUpstream,
    /// A raw server on `10.240.K.1:<port>`: nothing may reach it.
    private_raw: RawUpstream,
}

impl Transparent {
    async fn start(hint: &str, redirect: Redirect) -> Option<Transparent> {
        if redirect == Redirect::Nft && Command::new("nft").arg("--version").output().is_err() {
            eprintln!("skipping {hint}: needs nft");
            return None;
        }
        let ns = Netns::create(hint)?;
        let kiosk = IpAddr::V4(ns.add_client_address(KIOSK_NET));
        let staff = IpAddr::V4(ns.add_client_address(STAFF_NET));
        let ungrouped = IpAddr::V4(ns.ns_ip);
        let public = ns.add_lo_address();
        let private = ns.add_private_lo_address();
        let ca = TestCa::new();
        let tls = TlsUpstream::start(&ca, &["teams.test", "guest.test", "portal.test"], "T").await;
        let http = HttpUpstream::start("H").await;
        let public_tls = RawUpstream::start_on((public, 443).into()).await;
        let public_raw = RawUpstream::start_on((public, 0).into()).await;
        let private_tls = RawUpstream::start_on((private, 443).into()).await;
        let private_raw = RawUpstream::start_on((private, 0).into()).await;
        let pinned = pins(&[
            ("teams.test", tls.addr()),
            ("guest.test", tls.addr()),
            ("portal.test", tls.addr()),
            ("wiki.test", http.addr()),
            ("news.test", http.addr()),
        ]);
        let policy = transparent_policy("\"10.232.0.0/16\"", "\"10.233.0.0/16\"");
        let files = [
            ("ms.rules", MS_RULES),
            ("kiosk.rules", KIOSK_RULES),
            ("staff.rules", STAFF_RULES),
            ("guest.rules", GUEST_RULES),
        ];
        let listener = ns.listener_address();
        let gw = TestGateway::start_files(
            &[("transparent", &listener)],
            &policy,
            &files,
            &format!("{LOCAL_UPSTREAM}{pinned}"),
        )
        .await;
        let port = gw.transparent_addr().port();
        for dport in [443, 80, public_raw.addr().port(), private_raw.addr().port()] {
            match redirect {
                Redirect::Iptables => ns.redirect_iptables(dport, port),
                Redirect::Nft => ns.redirect_nft(dport, port),
            }
        }
        Some(Transparent {
            ns,
            ca,
            tls,
            http,
            gw,
            kiosk,
            staff,
            ungrouped,
            public,
            private,
            public_tls,
            public_raw,
            private_tls,
            private_raw,
        })
    }

    /// A connection from `from` (a namespace address) to `dst`, which the REDIRECT rules send to
    /// the gateway.
    async fn connect(&self, from: IpAddr, dst: SocketAddr) -> TcpStream {
        self.ns.connect_from(from, dst).await
    }

    /// From `from` to `dst`, a TLS handshake for `sni` and `GET path`: the upstream's answer.
    /// Returns the answer's body and the client's address (the event's `client`).
    async fn fetch_tls(&self, from: IpAddr, dst: SocketAddr, sni: &str, path: &str) -> (String, SocketAddr) {
        let tcp = self.connect(from, dst).await;
        let client = tcp.local_addr().unwrap();
        let tls = tls_handshake(tcp, sni, self.ca.client_config())
            .await
            .unwrap_or_else(|e| panic!("{sni} from {from} to {dst}: the handshake failed: {e}"));
        let mut io = BufReader::new(tls);
        let request = format!("GET {path} HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n");
        io.get_mut().write_all(request.as_bytes()).await.unwrap();
        let response = tokio::time::timeout(STEP, read_response(&mut io, true)).await.unwrap().unwrap();
        assert_eq!(response.status, 200, "{sni} from {from}: {response:?}");
        (response.text(), client)
    }

    /// From `from` to `dst`, a hand-built ClientHello for `sni` that the gateway must refuse: it
    /// answers with the `access_denied` alert and closes. Returns the client's address.
    async fn refused_tls(&self, from: IpAddr, dst: SocketAddr, hello: &ClientHello) -> SocketAddr {
        let mut tcp = self.connect(from, dst).await;
        let client = tcp.local_addr().unwrap();
        tcp.write_all(&hello.to_bytes()).await.unwrap();
        let closed = read_until_closed(&mut tcp, STEP).await;
        assert_eq!(closed.bytes, ALERT_ACCESS_DENIED, "{hello:?} from {from} to {dst}: {closed:?}");
        client
    }

    /// The access event of the connection from `client`.
    async fn event_of(&self, client: SocketAddr) -> AccessEvent {
        self.gw.wait_access(|e| e.client == client).await
    }
}

/// The original destination as an event's `dst`.
fn original(ip: Ipv4Addr, port: u16) -> Option<Dst> {
    Some(Dst::Addr(SocketAddr::from((ip, port))))
}

/// The same SNI, three clients: `staff` are allowed `teams.test` (their rule), `kiosks` denied
/// it (their rule), a client in no group gets the top-level policy (no rule for it: the
/// default; `guest.test`, which only the top-level sources allow, is allowed to it and denied
/// to the kiosks).
async fn same_name_different_groups(s: &Transparent) {
    let dst = SocketAddr::from((s.public, 443));

    let (body, client) = s.fetch_tls(s.staff, dst, "teams.test", "/staff").await;
    assert_eq!(body, "upstream=T sni=teams.test path=/staff");
    let ev = s.event_of(client).await;
    assert_group_decided(&ev, Some("staff"), Action::Allow, Some(("allow teams.test", "staff.rules", 1)));
    assert_eq!(ev.outcome, Outcome::Ok, "{ev:#?}");
    assert_eq!(ev.listener.kind, ListenerKind::Transparent, "{ev:#?}");
    assert_eq!(ev.client.ip(), s.staff, "{ev:#?}");
    assert_eq!(ev.sni.as_deref(), Some("teams.test"), "{ev:#?}");
    assert_eq!(ev.dst, original(s.public, 443), "{ev:#?}");
    assert_eq!(ev.upstream, Some(s.tls.addr()), "connected to the name's pin: {ev:#?}");

    let client = s.refused_tls(s.kiosk, dst, &ClientHello::new("teams.test")).await;
    let ev = s.event_of(client).await;
    assert_group_decided(&ev, Some("kiosks"), Action::Deny, Some(("deny teams.test", "kiosk.rules", 1)));
    assert_eq!(ev.outcome, Outcome::Denied, "{ev:#?}");
    assert_eq!(ev.client.ip(), s.kiosk, "{ev:#?}");
    assert_eq!(ev.upstream, None, "{ev:#?}");

    let client = s.refused_tls(s.ungrouped, dst, &ClientHello::new("teams.test")).await;
    let ev = s.event_of(client).await;
    assert_group_decided(&ev, None, Action::Deny, None);
    assert_eq!(ev.outcome, Outcome::Denied, "{ev:#?}");
    assert_eq!(ev.client.ip(), s.ungrouped, "{ev:#?}");

    let (body, client) = s.fetch_tls(s.ungrouped, dst, "guest.test", "/guest").await;
    assert_eq!(body, "upstream=T sni=guest.test path=/guest");
    let ev = s.event_of(client).await;
    assert_group_decided(&ev, None, Action::Allow, Some(("allow guest.test", "guest.rules", 1)));
    assert_eq!(ev.outcome, Outcome::Ok, "{ev:#?}");

    let client = s.refused_tls(s.kiosk, dst, &ClientHello::new("guest.test")).await;
    let ev = s.event_of(client).await;
    assert_group_decided(&ev, Some("kiosks"), Action::Deny, None);

    assert_eq!(s.tls.handshakes(), 2, "only the two allowed connections reached the upstream");
    assert_eq!(s.public_tls.accepted(), 0, "a named connection went to its original destination");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iptables_the_same_sni_is_decided_by_each_clients_group() {
    let Some(s) =
        Transparent::start("iptables_the_same_sni_is_decided_by_each_clients_group", Redirect::Iptables).await
    else {
        return;
    };
    same_name_different_groups(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nft_the_same_sni_is_decided_by_each_clients_group() {
    let Some(s) = Transparent::start("nft_the_same_sni_is_decided_by_each_clients_group", Redirect::Nft).await else {
        return;
    };
    same_name_different_groups(&s).await;
}

/// A ClientHello without SNI and an unknown protocol to an original destination inside
/// `allow 198.51.100.0/24` are relayed there, byte for byte, both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_a_name_to_an_allowed_range_are_relayed() {
    let Some(s) =
        Transparent::start("connections_without_a_name_to_an_allowed_range_are_relayed", Redirect::Iptables).await
    else {
        return;
    };
    // A ClientHello without SNI from a kiosk.
    let hello = ClientHello::with_names(Vec::new()).to_bytes();
    let mut tcp = s.connect(s.kiosk, (s.public, 443).into()).await;
    let client = tcp.local_addr().unwrap();
    tcp.write_all(&hello).await.unwrap();
    let mut upstream = s.public_tls.next().await;
    let mut got = vec![0u8; hello.len()];
    tokio::time::timeout(STEP, upstream.read_exact(&mut got)).await.unwrap().unwrap();
    assert_eq!(got, hello, "the ClientHello reached its original destination unchanged");
    upstream.write_all(b"\x16\x03\x03server-bytes").await.unwrap();
    let mut back = [0u8; 15];
    tokio::time::timeout(STEP, tcp.read_exact(&mut back)).await.unwrap().unwrap();
    assert_eq!(&back, b"\x16\x03\x03server-bytes");
    drop((tcp, upstream));
    let ev = s.event_of(client).await;
    assert_group_decided(&ev, Some("kiosks"), Action::Allow, Some(("allow 198.51.100.0/24", "ms.rules", 2)));
    assert_eq!(ev.protocol, Protocol::Tls, "{ev:#?}");
    assert_eq!(ev.sni, None, "{ev:#?}");
    assert_eq!(ev.dst, original(s.public, 443), "{ev:#?}");
    assert_eq!(ev.upstream, Some(SocketAddr::from((s.public, 443))), "the original destination: {ev:#?}");
    assert_eq!(ev.outcome, Outcome::Ok, "{ev:#?}");

    // An unknown protocol from a staff client.
    let raw_dst = s.public_raw.addr();
    let mut tcp = s.connect(s.staff, raw_dst).await;
    let client = tcp.local_addr().unwrap();
    tcp.write_all(b"SSH-2.0-x\r\n").await.unwrap();
    let mut upstream = s.public_raw.next().await;
    let mut got = [0u8; 11];
    tokio::time::timeout(STEP, upstream.read_exact(&mut got)).await.unwrap().unwrap();
    assert_eq!(&got, b"SSH-2.0-x\r\n");
    upstream.write_all(b"SSH-2.0-server\r\n").await.unwrap();
    let mut back = [0u8; 16];
    tokio::time::timeout(STEP, tcp.read_exact(&mut back)).await.unwrap().unwrap();
    assert_eq!(&back, b"SSH-2.0-server\r\n");
    drop((tcp, upstream));
    let ev = s.event_of(client).await;
    assert_group_decided(&ev, Some("staff"), Action::Allow, Some(("allow 198.51.100.0/24", "ms.rules", 2)));
    assert_eq!(ev.protocol, Protocol::Unknown, "{ev:#?}");
    assert_eq!(ev.dst, Some(Dst::Addr(raw_dst)), "{ev:#?}");
    assert_eq!(ev.upstream, Some(raw_dst), "{ev:#?}");
    assert_eq!(ev.outcome, Outcome::Ok, "{ev:#?}");
    assert_eq!((s.public_tls.accepted(), s.public_raw.accepted()), (1, 1));
}

/// Without a name, an original destination inside `deny 10.240.0.0/16` is refused by that rule
/// (an alert for TLS, a bare close for an unknown protocol); a client in no group, whose sources
/// have no address rules, gets the default even for the allowed range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_a_name_elsewhere_are_denied() {
    let Some(s) = Transparent::start("connections_without_a_name_elsewhere_are_denied", Redirect::Iptables).await
    else {
        return;
    };
    let no_sni = ClientHello::with_names(Vec::new());

    let client = s.refused_tls(s.kiosk, (s.private, 443).into(), &no_sni).await;
    let ev = s.event_of(client).await;
    assert_group_decided(&ev, Some("kiosks"), Action::Deny, Some(("deny 10.240.0.0/16", "ms.rules", 3)));
    assert_eq!((ev.protocol, ev.outcome), (Protocol::Tls, Outcome::Denied), "{ev:#?}");
    assert_eq!(ev.dst, original(s.private, 443), "{ev:#?}");
    assert_eq!(ev.upstream, None, "{ev:#?}");

    let raw_dst = s.private_raw.addr();
    let mut tcp = s.connect(s.staff, raw_dst).await;
    let client = tcp.local_addr().unwrap();
    tcp.write_all(b"SSH-2.0-x\r\n").await.unwrap();
    let closed = read_until_closed(&mut tcp, STEP).await;
    assert!(closed.bytes.is_empty(), "an unknown protocol is refused with a bare close: {closed:?}");
    let ev = s.event_of(client).await;
    assert_group_decided(&ev, Some("staff"), Action::Deny, Some(("deny 10.240.0.0/16", "ms.rules", 3)));
    assert_eq!((ev.protocol, ev.outcome), (Protocol::Unknown, Outcome::UnknownProtocol), "{ev:#?}");
    assert_eq!(ev.upstream, None, "{ev:#?}");

    // The top-level sources (guest.rules) have no address rules: the default, even for the
    // range the groups allow.
    let client = s.refused_tls(s.ungrouped, (s.public, 443).into(), &no_sni).await;
    let ev = s.event_of(client).await;
    assert_group_decided(&ev, None, Action::Deny, None);
    assert_eq!(ev.outcome, Outcome::Denied, "{ev:#?}");
    let mut tcp = s.connect(s.ungrouped, s.public_raw.addr()).await;
    let client = tcp.local_addr().unwrap();
    tcp.write_all(b"SSH-2.0-x\r\n").await.unwrap();
    assert!(read_until_closed(&mut tcp, STEP).await.bytes.is_empty());
    let ev = s.event_of(client).await;
    assert_group_decided(&ev, None, Action::Deny, None);
    assert_eq!(ev.outcome, Outcome::UnknownProtocol, "{ev:#?}");

    assert_eq!(s.private_tls.accepted() + s.private_raw.accepted(), 0, "a denied destination was reached");
    assert_eq!(s.public_tls.accepted() + s.public_raw.accepted(), 0, "a denied destination was reached");
}

/// An address rule that allows a private original destination does not exempt it from the SSRF
/// guard: with `allow 10.240.0.0/16` (after a reload) and `allow_private` covering only
/// loopback, a ClientHello without SNI and an unknown protocol to `10.240.K.1` are refused and
/// the servers there never reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_private_original_destination_is_still_refused_by_the_ssrf_guard() {
    let Some(s) = Transparent::start(
        "an_allowed_private_original_destination_is_still_refused_by_the_ssrf_guard",
        Redirect::Iptables,
    )
    .await
    else {
        return;
    };
    write_atomic(&s.gw.config_dir().join("ms.rules"), &MS_RULES.replace("deny 10.240.0.0/16", "allow 10.240.0.0/16"));
    let r = s.gw.gateway().reload().await.unwrap_or_else(|e| panic!("reload failed: {e}"));
    assert_eq!(r.generation, 2, "{r:?}");

    let mut tcp = s.connect(s.kiosk, (s.private, 443).into()).await;
    let client = tcp.local_addr().unwrap();
    tcp.write_all(&ClientHello::with_names(Vec::new()).to_bytes()).await.unwrap();
    let closed = read_until_closed(&mut tcp, STEP).await;
    support::http::assert_alert_or_nothing(&closed);
    let ev = s.event_of(client).await;
    assert_eq!(ev.outcome, Outcome::Ssrf, "{ev:#?}");
    assert_rule_in(&ev, "allow 10.240.0.0/16", "ms.rules", 3);
    assert_eq!(ev.client_group.as_deref(), Some("kiosks"), "{ev:#?}");
    assert_eq!(ev.upstream, None, "{ev:#?}");
    assert_logged_deny(&ev);

    let mut tcp = s.connect(s.staff, s.private_raw.addr()).await;
    let client = tcp.local_addr().unwrap();
    tcp.write_all(b"SSH-2.0-x\r\n").await.unwrap();
    assert!(read_until_closed(&mut tcp, STEP).await.bytes.is_empty());
    let ev = s.event_of(client).await;
    assert_eq!(ev.outcome, Outcome::Ssrf, "{ev:#?}");
    assert_rule_in(&ev, "allow 10.240.0.0/16", "ms.rules", 3);
    assert_logged_deny(&ev);

    assert_eq!(s.private_tls.accepted() + s.private_raw.accepted(), 0, "the guard let a private destination through");
}

/// A name decides a connection that has one, never its original destination: `portal.test`
/// (allowed) sent to an address inside `deny 10.240.0.0/16` is allowed and goes to the name;
/// `teams.test` (denied to kiosks) sent to an address inside `allow 198.51.100.0/24` is denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_is_decided_by_the_name_rules_whatever_its_destination() {
    let Some(s) =
        Transparent::start("a_name_is_decided_by_the_name_rules_whatever_its_destination", Redirect::Iptables).await
    else {
        return;
    };
    let (body, client) = s.fetch_tls(s.kiosk, (s.private, 443).into(), "portal.test", "/p").await;
    assert_eq!(body, "upstream=T sni=portal.test path=/p");
    let ev = s.event_of(client).await;
    assert_group_decided(&ev, Some("kiosks"), Action::Allow, Some(("allow portal.test", "ms.rules", 1)));
    assert_eq!(ev.dst, original(s.private, 443), "{ev:#?}");
    assert_eq!(ev.upstream, Some(s.tls.addr()), "{ev:#?}");
    assert_eq!(ev.outcome, Outcome::Ok, "{ev:#?}");

    let client = s.refused_tls(s.kiosk, (s.public, 443).into(), &ClientHello::new("teams.test")).await;
    let ev = s.event_of(client).await;
    assert_group_decided(&ev, Some("kiosks"), Action::Deny, Some(("deny teams.test", "kiosk.rules", 1)));

    // Plain HTTP: the Host decides, not the original destination in the denied range.
    let mut http = HttpConn::from_stream(s.connect(s.kiosk, (s.private, 80).into()).await);
    let r = http.request("GET /n HTTP/1.1\r\nHost: news.test\r\n\r\n").await;
    assert_eq!((r.status, r.text().as_str()), (200, "upstream=H host=news.test path=/n method=GET"), "{r:?}");
    let ev = s.gw.wait_access(|e| e.path.as_deref() == Some("/n")).await;
    assert_group_decided(&ev, Some("kiosks"), Action::Allow, Some(("allow http://news.test", "ms.rules", 4)));
    assert_eq!(ev.dst, original(s.private, 80), "{ev:#?}");

    assert_eq!(s.private_tls.accepted() + s.public_tls.accepted(), 0, "an original destination was reached");
    assert_eq!(s.http.count(), 1);
}

/// A plain-HTTP request whose Host is an IP literal is decided by the address rules on that
/// literal, not on the original destination: `Host: 10.240.K.1` sent to `198.51.100.K:80` (an
/// allowed destination) is denied, `Host: 198.51.100.K` sent to `10.240.K.1:80` (a denied one)
/// is allowed and forwarded to the literal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_an_ip_literal_host_is_decided_by_the_address_rules() {
    let Some(s) =
        Transparent::start("plain_http_to_an_ip_literal_host_is_decided_by_the_address_rules", Redirect::Iptables)
            .await
    else {
        return;
    };
    let mut http = HttpConn::from_stream(s.connect(s.kiosk, (s.public, 80).into()).await);
    let r = http.request(&format!("GET /private HTTP/1.1\r\nHost: {}\r\n\r\n", s.private)).await;
    assert_eq!(r.status, 403, "{r:?}");
    let ev = s.gw.wait_access(|e| e.path.as_deref() == Some("/private")).await;
    assert_group_decided(&ev, Some("kiosks"), Action::Deny, Some(("deny 10.240.0.0/16", "ms.rules", 3)));
    assert_eq!((ev.protocol, ev.outcome), (Protocol::Http, Outcome::Denied), "{ev:#?}");
    assert_eq!(ev.dst, original(s.public, 80), "{ev:#?}");

    // The Host's port must be the original destination's (80), so the literal's server is on 80.
    let web = RawUpstream::start_on((s.public, 80).into()).await;
    let literal = s.public.to_string();
    let mut http = HttpConn::from_stream(s.connect(s.kiosk, (s.private, 80).into()).await);
    let request = format!("GET /public HTTP/1.1\r\nHost: {literal}\r\n\r\n");
    http.send(request.as_bytes()).await;
    // The upstream, a raw server on the literal: one request, answered by hand.
    let mut upstream = BufReader::new(web.next().await);
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        let n = tokio::time::timeout(STEP, upstream.read_line(&mut head)).await.unwrap().unwrap();
        assert_ne!(n, 0, "the gateway closed mid-request: {head:?}");
    }
    assert!(head.starts_with("GET /public HTTP/1.1\r\n"), "{head:?}");
    assert!(head.to_ascii_lowercase().contains(&format!("host: {literal}\r\n")), "{head:?}");
    upstream.get_mut().write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nliteral").await.unwrap();
    let r = http.read_response().await.unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "literal"), "{r:?}");
    let ev = s.gw.wait_access(|e| e.path.as_deref() == Some("/public")).await;
    assert_group_decided(&ev, Some("kiosks"), Action::Allow, Some(("allow 198.51.100.0/24", "ms.rules", 2)));
    assert_eq!(ev.dst, original(s.private, 80), "{ev:#?}");
    assert_eq!(ev.upstream, Some(web.addr()), "{ev:#?}");
    assert_eq!((ev.status, ev.outcome), (Some(200), Outcome::Ok), "{ev:#?}");

    // A client in no group: no address rules, the default.
    let mut http = HttpConn::from_stream(s.connect(s.ungrouped, (s.private, 80).into()).await);
    let r = http.request(&format!("GET /guest HTTP/1.1\r\nHost: {literal}\r\n\r\n")).await;
    assert_eq!(r.status, 403, "{r:?}");
    let ev = s.gw.wait_access(|e| e.path.as_deref() == Some("/guest")).await;
    assert_group_decided(&ev, None, Action::Deny, None);

    assert_eq!(web.accepted(), 1);
    assert_eq!(s.private_tls.accepted() + s.private_raw.accepted(), 0, "a denied literal was reached");
}

/// A reload that moves the kiosks' network into `staff` changes the group of the next
/// connection from it, and of the next plain-HTTP request on a connection accepted before; a
/// connection accepted before the reload keeps the group (and generation) of its accept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_moves_a_network_changes_the_next_connections_group() {
    let Some(s) =
        Transparent::start("a_reload_that_moves_a_network_changes_the_next_connections_group", Redirect::Iptables)
            .await
    else {
        return;
    };
    let dst = SocketAddr::from((s.public, 443));
    let client = s.refused_tls(s.kiosk, dst, &ClientHello::new("teams.test")).await;
    let ev = s.event_of(client).await;
    assert_group_decided(&ev, Some("kiosks"), Action::Deny, Some(("deny teams.test", "kiosk.rules", 1)));
    assert_eq!(ev.generation, 1, "{ev:#?}");

    // A plain-HTTP keep-alive connection from the kiosk: wiki.test is denied to kiosks.
    let mut http = HttpConn::from_stream(s.connect(s.kiosk, (s.public, 80).into()).await);
    let r = http.request("GET /w1 HTTP/1.1\r\nHost: wiki.test\r\n\r\n").await;
    assert_eq!(r.status, 403, "{r:?}");
    let ev = s.gw.wait_access(|e| e.path.as_deref() == Some("/w1")).await;
    assert_group_decided(&ev, Some("kiosks"), Action::Deny, Some(("deny http://wiki.test", "kiosk.rules", 2)));
    assert_eq!(ev.generation, 1, "{ev:#?}");

    // Accepted under generation 1; its ClientHello comes after the reload.
    let mut early = s.connect(s.kiosk, dst).await;
    let early_client = early.local_addr().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let config = s.gw.config_dir().join("hostgate.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let moved = text
        .replace("networks = [\"10.232.0.0/16\"]", "networks = [\"10.250.0.0/16\"]")
        .replace("networks = [\"10.233.0.0/16\"]", "networks = [\"10.233.0.0/16\", \"10.232.0.0/16\"]");
    assert_ne!(moved, text);
    write_atomic(&config, &moved);
    let r = s.gw.gateway().reload().await.unwrap_or_else(|e| panic!("reload failed: {e}"));
    assert_eq!(r.generation, 2, "{r:?}");

    // The next connection from the kiosk's address is in `staff`.
    let (body, client) = s.fetch_tls(s.kiosk, dst, "teams.test", "/moved").await;
    assert_eq!(body, "upstream=T sni=teams.test path=/moved");
    let ev = s.event_of(client).await;
    assert_group_decided(&ev, Some("staff"), Action::Allow, Some(("allow teams.test", "staff.rules", 1)));
    assert_eq!(ev.generation, 2, "{ev:#?}");

    // The next request on the keep-alive connection is decided by generation 2, with the group
    // looked up again in it.
    let r = http.request("GET /w2 HTTP/1.1\r\nHost: wiki.test\r\n\r\n").await;
    assert_eq!((r.status, r.text().as_str()), (200, "upstream=H host=wiki.test path=/w2 method=GET"), "{r:?}");
    let ev = s.gw.wait_access(|e| e.path.as_deref() == Some("/w2")).await;
    assert_group_decided(&ev, Some("staff"), Action::Allow, Some(("allow http://wiki.test", "staff.rules", 2)));
    assert_eq!(ev.generation, 2, "{ev:#?}");

    // The connection accepted before the reload: decided by generation 1, as a kiosk.
    early.write_all(&ClientHello::new("teams.test").to_bytes()).await.unwrap();
    let closed = read_until_closed(&mut early, STEP).await;
    assert_eq!(closed.bytes, ALERT_ACCESS_DENIED, "{closed:?}");
    let ev = s.event_of(early_client).await;
    assert_group_decided(&ev, Some("kiosks"), Action::Deny, Some(("deny teams.test", "kiosk.rules", 1)));
    assert_eq!(ev.generation, 1, "{ev:#?}");

    // The ungrouped client is unaffected.
    let client = s.refused_tls(s.ungrouped, dst, &ClientHello::new("teams.test")).await;
    let ev = s.event_of(client).await;
    assert_group_decided(&ev, None, Action::Deny, None);
    assert_eq!(ev.generation, 2, "{ev:#?}");
    assert_eq!(s.tls.handshakes(), 1);
    assert_eq!(s.http.count(), 1);
}

/// IPv6: a client (`fd42:K::2`) in a group by an IPv6 network; a ClientHello without SNI to an
/// IPv6 original destination decided by bracketed IPv6 address rules (longest prefix: the /48
/// allows what the /32 denies); a name decided by its name rule whatever the range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_clients_and_destinations_are_grouped_and_decided_by_address_rules() {
    const HINT: &str = "ipv6_clients_and_destinations_are_grouped_and_decided_by_address_rules";
    const V6_RULES: &str = "\
allow [2001:db8:51::]/48
deny [2001:db8::]/32
deny teams.test
";
    const V6_POLICY: &str = r#"[policy]
default = "deny"
ungrouped_sources = []

[[policy.source]]
name = "v6"
path = "v6.rules"

[[client]]
name = "v6lab"
networks = ["10.0.0.0/8", "fd42::/16"]
sources = ["v6"]
"#;
    let Some(ns) = Netns::create(HINT) else {
        return;
    };
    if let Err(why) = ns.enable_ipv6() {
        eprintln!("skipping {HINT}: {why}");
        return;
    }
    let public6 = IpAddr::V6(ns.add_lo_address6());
    let up = RawUpstream::start_on(SocketAddr::new(public6, 443)).await;
    let gw = TestGateway::start_files(
        &[("transparent", &ns.listener_address6())],
        V6_POLICY,
        &[("v6.rules", V6_RULES)],
        LOCAL_UPSTREAM,
    )
    .await;
    ns.redirect_ip6tables(443, gw.transparent_addr().port());

    let hello = ClientHello::with_names(Vec::new()).to_bytes();
    let mut tcp = ns.connect(SocketAddr::new(public6, 443)).await;
    let client = tcp.local_addr().unwrap();
    tcp.write_all(&hello).await.unwrap();
    let mut server = up.next().await;
    let mut got = vec![0u8; hello.len()];
    tokio::time::timeout(STEP, server.read_exact(&mut got)).await.unwrap().unwrap();
    assert_eq!(got, hello);
    drop((tcp, server));
    let ev = gw.wait_access(|e| e.client == client).await;
    assert_group_decided(&ev, Some("v6lab"), Action::Allow, Some(("allow [2001:db8:51::]/48", "v6.rules", 1)));
    assert_eq!(ev.client.ip(), IpAddr::V6(ns.ns_ip6()), "{ev:#?}");
    assert_eq!(ev.dst, Some(Dst::Addr(SocketAddr::new(public6, 443))), "{ev:#?}");
    assert_eq!(ev.upstream, Some(SocketAddr::new(public6, 443)), "{ev:#?}");

    let elsewhere: SocketAddr = "[2001:db8:99::1]:443".parse().unwrap();
    for (hello, rule, line) in [
        (ClientHello::with_names(Vec::new()), "deny [2001:db8::]/32", 2),
        (ClientHello::new("teams.test"), "deny teams.test", 3),
    ] {
        let dst = if line == 3 { SocketAddr::new(public6, 443) } else { elsewhere };
        let mut tcp = ns.connect(dst).await;
        let client = tcp.local_addr().unwrap();
        tcp.write_all(&hello.to_bytes()).await.unwrap();
        let closed = read_until_closed(&mut tcp, STEP).await;
        assert_eq!(closed.bytes, ALERT_ACCESS_DENIED, "{hello:?} to {dst}: {closed:?}");
        let ev = gw.wait_access(|e| e.client == client).await;
        assert_group_decided(&ev, Some("v6lab"), Action::Deny, Some((rule, "v6.rules", line)));
    }
    assert_eq!(up.accepted(), 1);
}

// ---------------------------------------------------------------------------------------------
// The connect listener: clients on 127.0.0.1 (no group), 127.0.0.2 and ::1 (group `lab`).

/// The top-level rules. Lines 3 and 4 tie on `127.0.0.4/32`: the stricter (deny) wins.
const MAIN_RULES: &str = "\
allow 127.0.0.1
deny 127.0.0.0/8
allow 127.0.0.4
deny 127.0.0.4/32
allow named.test
";
/// The group `lab`'s rules (its default is `allow`).
const LAB_RULES: &str = "\
deny 127.0.0.1
allow 127.0.0.3/32
";

const CONNECT_POLICY: &str = r#"[policy]
default = "deny"
ungrouped_sources = ["main"]

[[policy.source]]
name = "main"
path = "main.rules"

[[policy.source]]
name = "lab"
path = "lab.rules"

[[client]]
name = "lab"
networks = ["127.0.0.2/32", "::1/128"]
sources = ["lab"]
default = "allow"

[[client]]
name = "audit"
networks = ["127.0.0.6/32"]
sources = ["main"]
mode = "report"
"#;

/// The lab's client address on the IPv4 listener.
const LAB: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// The audit group's client address (the top-level rules, in report mode).
const AUDIT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);

/// A gateway with a connect listener on `127.0.0.1:0` (and one on `[::1]:0` when `ipv6`), the
/// policy above and `extra` after it.
async fn connect_gateway(ipv6: bool, extra: &str) -> TestGateway {
    let mut listeners = vec![("connect", "127.0.0.1:0")];
    if ipv6 {
        listeners.push(("connect", "[::1]:0"));
    }
    TestGateway::start_files(&listeners, CONNECT_POLICY, &[("main.rules", MAIN_RULES), ("lab.rules", LAB_RULES)], extra)
        .await
}

/// A connection to the proxy from the local address `from`.
async fn connect_from(from: IpAddr, proxy: SocketAddr) -> TcpStream {
    let socket = if from.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap_or_else(|e| panic!("bind {from}: {e}"));
    let tcp = tokio::time::timeout(STEP, socket.connect(proxy)).await.expect("connect timed out").unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp
}

/// `CONNECT authority` from `from`: the status, the stream (the tunnel on 200) and the client's
/// address.
async fn connect_as(from: IpAddr, proxy: SocketAddr, authority: &str) -> (u16, TcpStream, SocketAddr) {
    let mut tcp = connect_from(from, proxy).await;
    let client = tcp.local_addr().unwrap();
    let request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let response = read_connect_answer(&mut tcp, authority).await;
    (response.status, tcp, client)
}

/// Over an open tunnel to `up`: the client's bytes reach the upstream and the upstream's come
/// back.
async fn exchange(tunnel: &mut TcpStream, up: &RawUpstream) {
    tunnel.write_all(b"SSH-2.0-x\r\n").await.unwrap();
    let mut server = up.next().await;
    let mut got = [0u8; 11];
    tokio::time::timeout(STEP, server.read_exact(&mut got)).await.unwrap().unwrap();
    assert_eq!(&got, b"SSH-2.0-x\r\n");
    server.write_all(b"SSH-2.0-server\r\n").await.unwrap();
    let mut back = [0u8; 16];
    tokio::time::timeout(STEP, tunnel.read_exact(&mut back)).await.unwrap().unwrap();
    assert_eq!(&back, b"SSH-2.0-server\r\n");
}

/// Over an open tunnel: a TLS handshake for `sni`, `GET path` (Connection: close), the
/// answer's body; the connection is closed when it returns.
async fn https_get(tunnel: TcpStream, ca: &TestCa, sni: &str, path: &str) -> String {
    let tls = tls_handshake(tunnel, sni, ca.client_config()).await.unwrap_or_else(|e| panic!("{sni}: {e}"));
    let mut io = BufReader::new(tls);
    let request = format!("GET {path} HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n");
    io.get_mut().write_all(request.as_bytes()).await.unwrap();
    let response = tokio::time::timeout(STEP, read_response(&mut io, true)).await.unwrap().unwrap();
    assert_eq!(response.status, 200, "{sni}{path}: {response:?}");
    response.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_literal_connect_is_decided_by_the_longest_prefix_then_the_stricter_action() {
    let one = RawUpstream::start_on(([127, 0, 0, 1], 0).into()).await;
    let three = RawUpstream::start_on(([127, 0, 0, 3], 0).into()).await;
    let four = RawUpstream::start_on(([127, 0, 0, 4], 0).into()).await;
    let gw = connect_gateway(false, LOCAL_UPSTREAM).await;
    let me = IpAddr::from(Ipv4Addr::LOCALHOST);

    // 127.0.0.1: `allow 127.0.0.1` (/32) beats `deny 127.0.0.0/8`.
    let authority = one.addr().to_string();
    let (status, mut tunnel, client) = connect_as(me, gw.connect_addr(), &authority).await;
    assert_eq!(status, 200, "CONNECT {authority}");
    exchange(&mut tunnel, &one).await;
    drop(tunnel);
    let ev = gw.wait_access(|e| e.client == client).await;
    assert_group_decided(&ev, None, Action::Allow, Some(("allow 127.0.0.1", "main.rules", 1)));
    assert_eq!(ev.listener.kind, ListenerKind::Connect, "{ev:#?}");
    assert_eq!(support::dst(&ev).as_deref(), Some(authority.as_str()), "{ev:#?}");
    assert_eq!(ev.upstream, Some(one.addr()), "{ev:#?}");
    assert_eq!((ev.status, ev.outcome), (Some(200), Outcome::Ok), "{ev:#?}");

    // 127.0.0.3: only `deny 127.0.0.0/8` contains it.
    let authority = three.addr().to_string();
    let (status, _tcp, client) = connect_as(me, gw.connect_addr(), &authority).await;
    assert_eq!(status, 403, "CONNECT {authority}");
    let ev = gw.wait_access(|e| e.client == client).await;
    assert_group_decided(&ev, None, Action::Deny, Some(("deny 127.0.0.0/8", "main.rules", 2)));
    assert_eq!((ev.status, ev.outcome), (Some(403), Outcome::Denied), "{ev:#?}");

    // 127.0.0.4: `allow 127.0.0.4` and `deny 127.0.0.4/32` tie on /32; deny is stricter.
    let authority = four.addr().to_string();
    let (status, _tcp, client) = connect_as(me, gw.connect_addr(), &authority).await;
    assert_eq!(status, 403, "CONNECT {authority}");
    let ev = gw.wait_access(|e| e.client == client).await;
    assert_group_decided(&ev, None, Action::Deny, Some(("deny 127.0.0.4/32", "main.rules", 4)));

    assert_eq!((one.accepted(), three.accepted(), four.accepted()), (1, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_clients_in_a_group_get_its_rules_and_its_default() {
    let ca = TestCa::new();
    let named = TlsUpstream::start(&ca, &["named.test", "other.test"], "N").await;
    let one = RawUpstream::start_on(([127, 0, 0, 1], 0).into()).await;
    let three = RawUpstream::start_on(([127, 0, 0, 3], 0).into()).await;
    let five = RawUpstream::start_on(([127, 0, 0, 5], 0).into()).await;
    let pinned = pins(&[("named.test", named.addr()), ("other.test", named.addr())]);
    let ipv6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    if !ipv6 {
        eprintln!("connect_clients_in_a_group_get_its_rules_and_its_default: no ::1, the IPv6 client is left out");
    }
    let gw = connect_gateway(ipv6, &format!("{LOCAL_UPSTREAM}{pinned}")).await;
    let proxy = gw.connect_addr();
    let lab = IpAddr::V4(LAB);
    let me = IpAddr::from(Ipv4Addr::LOCALHOST);

    // The lab's own address rules: 127.0.0.1 denied (the top level allows it), 127.0.0.3
    // allowed (the top level denies it).
    let (status, _tcp, client) = connect_as(lab, proxy, &one.addr().to_string()).await;
    assert_eq!(status, 403);
    let ev = gw.wait_access(|e| e.client == client).await;
    assert_group_decided(&ev, Some("lab"), Action::Deny, Some(("deny 127.0.0.1", "lab.rules", 1)));
    assert_eq!(ev.client.ip(), lab, "{ev:#?}");

    let (status, mut tunnel, client) = connect_as(lab, proxy, &three.addr().to_string()).await;
    assert_eq!(status, 200);
    exchange(&mut tunnel, &three).await;
    drop(tunnel);
    let ev = gw.wait_access(|e| e.client == client).await;
    assert_group_decided(&ev, Some("lab"), Action::Allow, Some(("allow 127.0.0.3/32", "lab.rules", 2)));
    assert_eq!(ev.outcome, Outcome::Ok, "{ev:#?}");

    let (status, _tcp, client) = connect_as(me, proxy, &three.addr().to_string()).await;
    assert_eq!(status, 403);
    let ev = gw.wait_access(|e| e.client == client).await;
    assert_group_decided(&ev, None, Action::Deny, Some(("deny 127.0.0.0/8", "main.rules", 2)));

    // No lab rule for 127.0.0.5: the lab's default (allow); the top level's `deny 127.0.0.0/8`.
    let (status, mut tunnel, client) = connect_as(lab, proxy, &five.addr().to_string()).await;
    assert_eq!(status, 200);
    exchange(&mut tunnel, &five).await;
    drop(tunnel);
    let ev = gw.wait_access(|e| e.client == client).await;
    assert_group_decided(&ev, Some("lab"), Action::Allow, None);
    let (status, _tcp, client) = connect_as(me, proxy, &five.addr().to_string()).await;
    assert_eq!(status, 403);
    let ev = gw.wait_access(|e| e.client == client).await;
    assert_group_decided(&ev, None, Action::Deny, Some(("deny 127.0.0.0/8", "main.rules", 2)));

    // Names: `allow named.test` is a top-level rule; the lab gets its default for both names.
    let (status, tcp, client) = connect_as(me, proxy, "named.test:443").await;
    assert_eq!(status, 200);
    assert_eq!(https_get(tcp, &ca, "named.test", "/top").await, "upstream=N sni=named.test path=/top");
    let ev = gw.wait_access(|e| e.client == client).await;
    assert_group_decided(&ev, None, Action::Allow, Some(("allow named.test", "main.rules", 5)));
    let (status, _tcp, client) = connect_as(me, proxy, "other.test:443").await;
    assert_eq!(status, 403);
    let ev = gw.wait_access(|e| e.client == client).await;
    assert_group_decided(&ev, None, Action::Deny, None);
    let (status, tcp, client) = connect_as(lab, proxy, "other.test:443").await;
    assert_eq!(status, 200);
    assert_eq!(https_get(tcp, &ca, "other.test", "/lab").await, "upstream=N sni=other.test path=/lab");
    let ev = gw.wait_access(|e| e.client == client).await;
    assert_group_decided(&ev, Some("lab"), Action::Allow, None);
    assert_eq!(ev.sni.as_deref(), Some("other.test"), "{ev:#?}");

    // An IPv6 client in the group's `::1/128`.
    if ipv6 {
        let proxy6 = gw.gateway().listeners().iter().find(|l| l.local.is_ipv6()).unwrap().local;
        let (status, _tcp, client) = connect_as("::1".parse().unwrap(), proxy6, &one.addr().to_string()).await;
        assert_eq!(status, 403);
        let ev = gw.wait_access(|e| e.client == client).await;
        assert_group_decided(&ev, Some("lab"), Action::Deny, Some(("deny 127.0.0.1", "lab.rules", 1)));
    }
    assert_eq!((one.accepted(), three.accepted(), five.accepted()), (0, 1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_an_ip_literal_is_decided_by_the_address_rules() {
    let up = HttpUpstream::start("L").await;
    let three = RawUpstream::start_on(([127, 0, 0, 3], 0).into()).await;
    let gw = connect_gateway(false, LOCAL_UPSTREAM).await;
    let me = IpAddr::from(Ipv4Addr::LOCALHOST);

    let authority = up.addr().to_string();
    let mut conn = HttpConn::from_stream(connect_from(me, gw.connect_addr()).await);
    let r = conn.request(&format!("GET http://{authority}/lit?x=1 HTTP/1.1\r\nHost: {authority}\r\n\r\n")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), format!("upstream=L host={authority} path=/lit?x=1 method=GET"));
    let ev = gw.wait_access(|e| e.path.as_deref() == Some("/lit?x=1")).await;
    assert_group_decided(&ev, None, Action::Allow, Some(("allow 127.0.0.1", "main.rules", 1)));
    assert_eq!((ev.protocol, ev.status), (Protocol::Http, Some(200)), "{ev:#?}");
    assert_eq!(ev.upstream, Some(up.addr()), "{ev:#?}");

    // On the same connection: 127.0.0.3 is denied.
    let authority3 = three.addr().to_string();
    let r = conn.request(&format!("GET http://{authority3}/three HTTP/1.1\r\nHost: {authority3}\r\n\r\n")).await;
    assert_eq!(r.status, 403, "{r:?}");
    let ev = gw.wait_access(|e| e.path.as_deref() == Some("/three")).await;
    assert_group_decided(&ev, None, Action::Deny, Some(("deny 127.0.0.0/8", "main.rules", 2)));
    assert_eq!(ev.outcome, Outcome::Denied, "{ev:#?}");

    // The lab is denied 127.0.0.1 by its own rule.
    let mut conn = HttpConn::from_stream(connect_from(IpAddr::V4(LAB), gw.connect_addr()).await);
    let r = conn.request(&format!("GET http://{authority}/lab HTTP/1.1\r\nHost: {authority}\r\n\r\n")).await;
    assert_eq!(r.status, 403, "{r:?}");
    let ev = gw.wait_access(|e| e.path.as_deref() == Some("/lab")).await;
    assert_group_decided(&ev, Some("lab"), Action::Deny, Some(("deny 127.0.0.1", "lab.rules", 1)));

    assert_eq!(up.count(), 1);
    assert_eq!(three.accepted(), 0);
}

/// A group in report mode (`audit`: the top-level rules) is let through what the rules deny,
/// logged as `would_deny` with the denying rule; the admin `/policy` lists every group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_in_report_mode_only_logs_its_denials_and_policy_lists_the_groups() {
    let three = RawUpstream::start_on(([127, 0, 0, 3], 0).into()).await;
    let gw = connect_gateway(false, &format!("{LOCAL_UPSTREAM}[admin]\naddress = \"127.0.0.1:0\"\n")).await;

    let (status, mut tunnel, client) =
        connect_as(IpAddr::V4(AUDIT), gw.connect_addr(), &three.addr().to_string()).await;
    assert_eq!(status, 200, "report mode lets the denied literal through");
    exchange(&mut tunnel, &three).await;
    drop(tunnel);
    let ev = gw.wait_access(|e| e.client == client).await;
    assert_group_decided(&ev, Some("audit"), Action::Allow, Some(("deny 127.0.0.0/8", "main.rules", 2)));
    assert!(ev.would_deny, "{ev:#?}");
    assert_eq!(ev.outcome, Outcome::Ok, "{ev:#?}");

    // The same from a client in no group (enforce): refused.
    let (status, _tcp, client) =
        connect_as(IpAddr::from(Ipv4Addr::LOCALHOST), gw.connect_addr(), &three.addr().to_string()).await;
    assert_eq!(status, 403);
    let ev = gw.wait_access(|e| e.client == client).await;
    assert_group_decided(&ev, None, Action::Deny, Some(("deny 127.0.0.0/8", "main.rules", 2)));
    assert!(!ev.would_deny, "{ev:#?}");
    assert_eq!(three.accepted(), 1);

    let admin = gw.gateway().admin_addr().expect("an admin listener");
    let r = HttpConn::connect(admin)
        .await
        .request("GET /policy HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let p: Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()));
    let groups = p["groups"].as_array().unwrap_or_else(|| panic!("no groups array: {p:#}"));
    let summary: Vec<(Value, Value, Value, Value, Value)> = groups
        .iter()
        .map(|g| {
            (g["name"].clone(), g["networks"].clone(), g["default"].clone(), g["mode"].clone(), g["rules"].clone())
        })
        .collect();
    let rules = |b: u32, a: u32, d: u32| serde_json::json!({"bypass": b, "allow": a, "deny": d});
    assert_eq!(
        summary,
        [
            (Value::Null, serde_json::json!([]), "deny".into(), "enforce".into(), rules(0, 3, 2)),
            (
                "lab".into(),
                serde_json::json!(["127.0.0.2/32", "::1/128"]),
                "allow".into(),
                "enforce".into(),
                rules(0, 1, 1)
            ),
            ("audit".into(), serde_json::json!(["127.0.0.6/32"]), "deny".into(), "report".into(), rules(0, 3, 2)),
        ],
        "{p:#}"
    );
}

/// A connection accepted while 127.0.0.2 is in `lab` whose CONNECT comes after a reload that
/// takes the network away from `lab` is decided as a client in no group, by the new generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_request_after_a_reload_looks_the_group_up_again() {
    let one = RawUpstream::start_on(([127, 0, 0, 1], 0).into()).await;
    let gw = connect_gateway(false, LOCAL_UPSTREAM).await;
    let authority = one.addr().to_string();
    let (status, _tcp, client) = connect_as(IpAddr::V4(LAB), gw.connect_addr(), &authority).await;
    assert_eq!(status, 403);
    let ev = gw.wait_access(|e| e.client == client).await;
    assert_group_decided(&ev, Some("lab"), Action::Deny, Some(("deny 127.0.0.1", "lab.rules", 1)));
    assert_eq!(ev.generation, 1, "{ev:#?}");

    let mut early = connect_from(IpAddr::V4(LAB), gw.connect_addr()).await;
    let early_client = early.local_addr().unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let config = gw.config_dir().join("hostgate.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let moved = text.replace("networks = [\"127.0.0.2/32\", \"::1/128\"]", "networks = [\"127.0.0.7/32\"]");
    assert_ne!(moved, text);
    write_atomic(&config, &moved);
    let r = gw.gateway().reload().await.unwrap_or_else(|e| panic!("reload failed: {e}"));
    assert_eq!(r.generation, 2, "{r:?}");

    early.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes()).await.unwrap();
    let response = read_connect_answer(&mut early, &authority).await;
    assert_eq!(response.status, 200, "{response:?}");
    exchange(&mut early, &one).await;
    drop(early);
    let ev = gw.wait_access(|e| e.client == early_client).await;
    assert_group_decided(&ev, None, Action::Allow, Some(("allow 127.0.0.1", "main.rules", 1)));
    assert_eq!(ev.generation, 2, "{ev:#?}");
    assert_eq!(one.accepted(), 1);
}

/// `hostgate run`'s JSON access log has `client_group` for a client in a group, and none for
/// a client in no group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_names_the_client_group() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hostgate.toml");
    let toml = format!(
        "[[listener]]\nkind = \"connect\"\naddress = \"127.0.0.1:0\"\n\n{CONNECT_POLICY}\n[log]\nformat = \"json\"\nlevel = \"info\"\n"
    );
    std::fs::write(&config, toml).unwrap();
    std::fs::write(dir.path().join("main.rules"), MAIN_RULES).unwrap();
    std::fs::write(dir.path().join("lab.rules"), LAB_RULES).unwrap();
    let mut hg = Hostgate::spawn(&[], &config);
    let proxy = hg.listening("connect").await;

    // Each denied by an address rule: the lab's `deny 127.0.0.1`, the top level's
    // `deny 127.0.0.0/8`.
    let mut clients = Vec::new();
    for (from, authority) in [(IpAddr::V4(LAB), "127.0.0.1:9"), (IpAddr::from(Ipv4Addr::LOCALHOST), "127.0.0.3:9")] {
        let (status, _tcp, client) = connect_as(from, proxy, authority).await;
        assert_eq!(status, 403, "CONNECT {authority} from {from}");
        clients.push(client.to_string());
    }
    let lab = hg.wait_json(|v| v["target"] == "access" && v["client"] == clients[0].as_str(), STEP).await;
    assert_eq!(lab["client_group"], "lab", "{lab:#}");
    assert_eq!((&lab["action"], &lab["rule"]), (&"deny".into(), &"deny 127.0.0.1".into()), "{lab:#}");
    assert!(lab["source"].as_str().is_some_and(|s| s.ends_with("/lab.rules:1")), "{lab:#}");
    let top = hg.wait_json(|v| v["target"] == "access" && v["client"] == clients[1].as_str(), STEP).await;
    assert_eq!(top.get("client_group"), None, "a client in no group: {top:#}");
    assert_eq!((&top["action"], &top["rule"]), (&"deny".into(), &"deny 127.0.0.0/8".into()), "{top:#}");
    hg.signal("TERM");
    let (status, lines) = hg.wait().await;
    assert!(status.success(), "{status}: {}", lines.join("\n"));
}

/// An address rule that allows a loopback literal does not exempt it from the SSRF guard:
/// without `allow_private` the connection is refused and the upstream never reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_rule_does_not_open_the_ssrf_guard() {
    let one = RawUpstream::start_on(([127, 0, 0, 1], 0).into()).await;
    let gw = connect_gateway(false, "[upstream]\nconnect_timeout = \"5s\"\n").await;
    let (status, _tcp, client) =
        connect_as(IpAddr::from(Ipv4Addr::LOCALHOST), gw.connect_addr(), &one.addr().to_string()).await;
    assert_ne!(status, 200, "a loopback literal was tunnelled without allow_private");
    let ev = gw.wait_access(|e| e.client == client).await;
    assert_eq!(ev.outcome, Outcome::Ssrf, "{ev:#?}");
    assert_rule_in(&ev, "allow 127.0.0.1", "main.rules", 1);
    assert_eq!(ev.upstream, None, "{ev:#?}");
    assert_logged_deny(&ev);
    assert_eq!(one.accepted(), 0, "the guard let the connection through");
}

/// A CONNECT to a name is decided by the name, even when the name's address is inside a range
/// an address rule denies (the gateway chose that address, not the client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_to_a_name_is_never_decided_by_its_address() {
    let ca = TestCa::new();
    let named = TlsUpstream::start_on(&ca, &["named.test"], "N3", Mode::Http, ([127, 0, 0, 3], 0).into()).await;
    let gw = connect_gateway(false, &format!("{LOCAL_UPSTREAM}{}", pins(&[("named.test", named.addr())]))).await;
    let (status, tcp, client) =
        connect_as(IpAddr::from(Ipv4Addr::LOCALHOST), gw.connect_addr(), "named.test:443").await;
    assert_eq!(status, 200);
    assert_eq!(https_get(tcp, &ca, "named.test", "/n").await, "upstream=N3 sni=named.test path=/n");
    let ev = gw.wait_access(|e| e.client == client).await;
    assert_group_decided(&ev, None, Action::Allow, Some(("allow named.test", "main.rules", 5)));
    assert_eq!(ev.upstream, Some(named.addr()), "{ev:#?}");
    assert_eq!(ev.outcome, Outcome::Ok, "{ev:#?}");
}

// ---------------------------------------------------------------------------------------------
// The binary: explain and check.

fn hostgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hostgate")).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn describe(o: &Output) -> String {
    format!("{}; stdout:\n{}\nstderr:\n{}", o.status, text(o), String::from_utf8_lossy(&o.stderr))
}

const CLI_MS_RULES: &str = "\
bypass 52.112.0.0/14:443
deny 52.113.194.0/24:80
allow 52.0.0.0/8
allow portal.test
";
const CLI_KIOSK_RULES: &str = "\
deny teams.test
";
const CLI_STAFF_RULES: &str = "\
allow teams.test
";

const CLI_CONFIG: &str = r#"[policy]
default = "deny"
ungrouped_sources = ["microsoft"]

[[policy.source]]
name = "microsoft"
path = "ms.rules"

[[policy.source]]
name = "kiosk"
path = "kiosk.rules"

[[policy.source]]
path = "staff.rules"

[[client]]
name = "kiosks"
networks = ["10.1.0.0/16", "fd00:1::/64"]
sources = ["microsoft", "kiosk"]

[[client]]
name = "staff"
networks = ["10.2.0.0/16"]
sources = ["microsoft", "staff.rules"]
default = "allow"

[[client]]
name = "lobby"
networks = ["10.3.0.0/16"]
sources = []

[[client]]
name = "kiosk-admins"
networks = ["10.1.9.0/24"]
sources = ["staff.rules"]
"#;

/// A configuration directory with the CLI's groups and rule files; returns it and the
/// configuration's path.
fn cli_config(config: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hostgate.toml"), config).unwrap();
    for (name, rules) in
        [("ms.rules", CLI_MS_RULES), ("kiosk.rules", CLI_KIOSK_RULES), ("staff.rules", CLI_STAFF_RULES)]
    {
        std::fs::write(dir.path().join(name), rules).unwrap();
    }
    let path = dir.path().join("hostgate.toml").display().to_string();
    (dir, path)
}

/// The 1-based line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle:?} not in:\n{text}")) + 1
}

#[test]
fn explain_client_shows_the_group_and_the_rule_file_and_line() {
    let (dir, config) = cli_config(CLI_CONFIG);
    let at = |file: &str, line: usize| format!("{}:{line}", dir.path().join(file).display());
    let kiosks_line = line_of(CLI_CONFIG, "name = \"kiosks\"");

    let o = hostgate(&["explain", "--config", &config, "--client", "10.1.2.3", "teams.test"]);
    assert!(o.status.success(), "{}", describe(&o));
    let out = text(&o);
    assert!(out.starts_with("teams.test (https, port 443): deny\n"), "{out}");
    assert!(out.contains(&format!("  group   kiosks (client 10.1.2.3, defined at {config}:{kiosks_line})\n")), "{out}");
    assert!(out.contains(&format!("  rule    deny teams.test  at {}\n", at("kiosk.rules", 1))), "{out}");
    assert!(out.contains("  why     the most specific matching pattern among the rules that fit\n"), "{out}");
    // The staff's rule is listed as another group's, not as a candidate that lost.
    assert!(out.contains(&format!("  beat    allow teams.test  at {} (other-group)\n", at("staff.rules", 1))), "{out}");

    let o = hostgate(&["explain", "--config", &config, "--client", "10.2.0.9", "teams.test"]);
    let out = text(&o);
    assert!(out.starts_with("teams.test (https, port 443): allow\n"), "{}", describe(&o));
    assert!(out.contains("  group   staff (client 10.2.0.9, defined at "), "{out}");
    assert!(out.contains(&format!("  rule    allow teams.test  at {}\n", at("staff.rules", 1))), "{out}");

    // An IPv6 client in the kiosks' fd00:1::/64.
    let o = hostgate(&["explain", "--config", &config, "--client", "fd00:1::7", "teams.test"]);
    assert!(text(&o).starts_with("teams.test (https, port 443): deny\n"), "{}", describe(&o));
    assert!(text(&o).contains("  group   kiosks (client fd00:1::7, "), "{}", describe(&o));

    // The longest matching network picks the group: 10.1.9.0/24 inside the kiosks' 10.1.0.0/16.
    let o = hostgate(&["explain", "--config", &config, "--client", "10.1.9.9", "teams.test"]);
    assert!(text(&o).starts_with("teams.test (https, port 443): allow\n"), "{}", describe(&o));
    assert!(text(&o).contains("  group   kiosk-admins (client 10.1.9.9, "), "{}", describe(&o));

    // An IPv4-mapped IPv6 client counts as its IPv4 address.
    let o = hostgate(&["explain", "--config", &config, "--client", "::ffff:10.2.0.9", "teams.test"]);
    assert!(text(&o).starts_with("teams.test (https, port 443): allow\n"), "{}", describe(&o));
    assert!(text(&o).contains("  group   staff (client ::ffff:10.2.0.9, "), "{}", describe(&o));

    // A client in no group: the top-level sources (microsoft only) and default.
    let o = hostgate(&["explain", "--config", &config, "--client", "192.0.2.1", "teams.test", "portal.test"]);
    let out = text(&o);
    assert!(out.starts_with("teams.test (https, port 443): deny\n"), "{}", describe(&o));
    assert!(
        out.contains("  group   none (client 192.0.2.1 is in no [[client]] group: the top-level policy)\n"),
        "{out}"
    );
    assert!(out.contains("  no rule fits: the default action (deny)\n"), "{out}");
    assert!(out.contains("  why     no rule fits: the default action\n"), "{out}");
    assert!(out.contains("portal.test (https, port 443): allow\n"), "{out}");
    assert!(out.contains(&format!("  rule    allow portal.test  at {}\n", at("ms.rules", 4))), "{out}");

    // JSON, field by field.
    let o = hostgate(&["explain", "--config", &config, "--json", "--client", "10.1.2.3", "teams.test", "other.test"]);
    assert!(o.status.success(), "{}", describe(&o));
    let lines: Vec<Value> = text(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{}", text(&o));
    let v = &lines[0];
    assert_eq!(v["host"], "teams.test", "{v}");
    assert_eq!(v["kind"], "name", "{v}");
    assert_eq!(v["client"], "10.1.2.3", "{v}");
    assert_eq!(v["group"], "kiosks", "{v}");
    assert_eq!(v["action"], "deny", "{v}");
    assert_eq!(v["rule"], "teams.test", "{v}");
    assert_eq!(v["source"], at("kiosk.rules", 1), "{v}");
    assert_eq!(v["default"], false, "{v}");
    assert_eq!(v["why"], "the most specific matching pattern among the rules that fit", "{v}");
    let v = &lines[1];
    assert_eq!(
        (&v["group"], &v["action"], &v["rule"], &v["default"]),
        (&"kiosks".into(), &"deny".into(), &Value::Null, &true.into()),
        "{v}"
    );
    assert_eq!(v["why"], "no rule fits: the default action", "{v}");

    // The staff's default is allow.
    let o = hostgate(&["explain", "--config", &config, "--json", "--client", "10.2.0.9", "other.test"]);
    let v: Value = serde_json::from_str(text(&o).trim()).unwrap_or_else(|e| panic!("{e}: {}", describe(&o)));
    assert_eq!((&v["group"], &v["action"], &v["default"]), (&"staff".into(), &"allow".into(), &true.into()), "{v}");
}

#[test]
fn explain_an_address_shows_the_address_rule_and_why() {
    let (dir, config) = cli_config(CLI_CONFIG);
    let at = |line: usize| format!("{}:{line}", dir.path().join("ms.rules").display());

    let o = hostgate(&["explain", "--config", &config, "52.113.194.132", "--port", "443"]);
    assert!(o.status.success(), "{}", describe(&o));
    let out = text(&o);
    assert!(
        out.starts_with(
            "52.113.194.132 (https, port 443, an address: decides only a connection without a name): bypass\n"
        ),
        "{out}"
    );
    assert!(out.contains("  group   none (no --client given: the top-level policy)\n"), "{out}");
    assert!(out.contains(&format!("  rule    bypass 52.112.0.0/14:443  at {}\n", at(1))), "{out}");
    assert!(out.contains("  why     the longest matching prefix (/14) among the address rules that fit\n"), "{out}");
    // The longer /24 is for port 80; the /8 is shorter.
    assert!(out.contains(&format!("deny 52.113.194.0/24:80  at {} (port-mismatch)", at(2))), "{out}");
    assert!(out.contains(&format!("allow 52.0.0.0/8  at {} (less-specific)", at(3))), "{out}");

    let o = hostgate(&["explain", "--config", &config, "--json", "52.113.194.132", "--port", "80"]);
    let v: Value = serde_json::from_str(text(&o).trim()).unwrap_or_else(|e| panic!("{e}: {}", describe(&o)));
    assert_eq!(v["kind"], "address", "{v}");
    assert_eq!(v["group"], Value::Null, "{v}");
    assert_eq!(v["action"], "deny", "{v}");
    assert_eq!(v["rule"], "52.113.194.0/24:80", "{v}");
    assert_eq!(v["network"], "52.113.194.0/24", "{v}");
    assert_eq!(v["source"], at(2), "{v}");
    assert_eq!(v["why"], "the longest matching prefix (/24) among the address rules that fit", "{v}");

    // Nothing fits 8.8.8.8: the default; a kiosk has the microsoft rules too, the lobby none.
    let o = hostgate(&["explain", "--config", &config, "--json", "8.8.8.8", "--port", "443"]);
    let v: Value = serde_json::from_str(text(&o).trim()).unwrap_or_else(|e| panic!("{e}: {}", describe(&o)));
    assert_eq!((&v["action"], &v["rule"], &v["default"]), (&"deny".into(), &Value::Null, &true.into()), "{v}");
    assert_eq!(v["why"], "no address rule fits: the default action", "{v}");
    let o = hostgate(&["explain", "--config", &config, "--json", "--client", "10.1.0.1", "52.113.194.132"]);
    let v: Value = serde_json::from_str(text(&o).trim()).unwrap_or_else(|e| panic!("{e}: {}", describe(&o)));
    assert_eq!((&v["group"], &v["action"], &v["source"]), (&"kiosks".into(), &"bypass".into(), &at(1).into()), "{v}");
    let o = hostgate(&["explain", "--config", &config, "--json", "--client", "10.3.0.1", "52.113.194.132"]);
    let v: Value = serde_json::from_str(text(&o).trim()).unwrap_or_else(|e| panic!("{e}: {}", describe(&o)));
    assert_eq!((&v["group"], &v["action"], &v["rule"]), (&"lobby".into(), &"deny".into(), &Value::Null), "{v}");
}

#[test]
fn check_lists_the_groups_and_the_group_lints() {
    // A fourth group repeats the kiosks' network.
    let config_text =
        format!("{CLI_CONFIG}\n[[client]]\nname = \"annex\"\nnetworks = [\"10.1.0.0/16\"]\nsources = [\"kiosk\"]\n");
    let (_dir, config) = cli_config(&config_text);
    let o = hostgate(&["check", "--config", &config]);
    assert!(o.status.success(), "{}", describe(&o));
    let out = text(&o);
    // microsoft: 3 address rules and a name rule (bypass 1, allow 2, deny 1); kiosk: 1 deny;
    // staff: 1 allow.
    assert!(out.contains("  clients in no group: 4 rules (bypass 1, allow 2, deny 1), default deny\n"), "{out}");
    assert!(
        out.contains(
            "  client group kiosks (10.1.0.0/16, fd00:1::/64): 5 rules (bypass 1, allow 2, deny 2), default deny\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("  client group staff (10.2.0.0/16): 5 rules (bypass 1, allow 3, deny 1), default allow\n"),
        "{out}"
    );
    assert!(
        out.contains("  client group lobby (10.3.0.0/16): 0 rules (bypass 0, allow 0, deny 0), default deny\n"),
        "{out}"
    );
    assert!(
        out.contains("  client group kiosk-admins (10.1.9.0/24): 1 rules (bypass 0, allow 1, deny 0), default deny\n"),
        "{out}"
    );
    assert!(
        out.contains("  client group annex (10.1.0.0/16): 1 rules (bypass 0, allow 0, deny 1), default deny\n"),
        "{out}"
    );
    let lobby_line = line_of(&config_text, "name = \"lobby\"");
    assert!(
        out.contains(&format!(
            "{config}:{lobby_line}: warning[empty-group]: client group `lobby` has no rules: its sources leave it nothing but its default action (deny)\n"
        )),
        "{out}"
    );
    let annex_line = line_of(&config_text, "name = \"annex\"");
    assert!(
        out.contains(&format!(
            "{config}:{annex_line}: warning[group-overlap]: client group `annex` lists 10.1.0.0/16 like `kiosks`"
        )),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("lint: ") && l.contains("1 empty-group") && l.contains("1 group-overlap")),
        "{out}"
    );
    assert!(out.ends_with("ok: the configuration is usable\n"), "{out}");
}
