//! The transparent listener, fed by REDIRECT rules (iptables, and the nftables recipe) from a
//! network namespace whose curl believes it talks to `203.0.113.10`, an address the client
//! chose. The gateway must connect to the *name* (pinned to a local upstream), decide plain
//! HTTP by Host and the original port, apply the default action to a ClientHello without SNI,
//! and with `verify_destination = "original-in-dns"` refuse a destination that is not among the
//! name's addresses. An attacker's server on an address the client chose shows what the
//! insecure `original` gives away and that the default `name` does not. The same over IPv6
//! (`ip6tables`, `IP6T_SO_ORIGINAL_DST`).
//!
//! Needs root, `ip`, `iptables` and `nft` (and IPv6 NAT for the IPv6 test); each test prints
//! why and passes when it cannot run.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hostgate_proxy::access::{Dst, Protocol};
use hostgate_proxy::config::ListenerKind;
use hostgate_proxy::outcome::Outcome;
use hostgate_proxy::policy::Action;
use support::tools::{describe, stdout};
use support::upstream::Mode;
use support::{
    assert_decided, assert_logged_deny, pins, HttpUpstream, Netns, TestCa, TestGateway, TlsUpstream, LOCAL_UPSTREAM,
};

const RULES: &str = "\
allow allowed.test
deny denied.test
allow http://site.test/
allow http://portonly.test:8080
";

/// The client's idea of where `allowed.test` is: any address will do, the gateway must not go
/// there.
const CHOSEN: &str = "203.0.113.10";

/// [`CHOSEN`] as an address.
fn chosen() -> IpAddr {
    CHOSEN.parse().unwrap()
}

/// A redirected connection's `dst`: its original destination.
fn original(ip: IpAddr, port: u16) -> Option<Dst> {
    Some(Dst::Addr(SocketAddr::new(ip, port)))
}

/// How the namespace's traffic gets to the gateway.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Redirect {
    Iptables,
    Nft,
}

struct Setup {
    ns: Netns,
    ca: TestCa,
    tls: TlsUpstream,
    http: HttpUpstream,
    gw: TestGateway,
}

/// A namespace, a gateway whose transparent listener is on the root side of its veth, an HTTPS
/// upstream for `allowed.test` and `denied.test` and an HTTP upstream for `site.test` and
/// `portonly.test`, and REDIRECT rules for ports 443 and 80. `None` when the machine cannot.
async fn setup(hint: &str, upstream: &str, redirect: Redirect) -> Option<Setup> {
    let ns = Netns::create(hint)?;
    let ca = TestCa::new();
    let tls = TlsUpstream::start(&ca, &["allowed.test", "denied.test"], "T").await;
    let http = HttpUpstream::start("H").await;
    let pinned = pins(&[
        ("allowed.test", tls.addr()),
        ("denied.test", tls.addr()),
        ("site.test", http.addr()),
        ("portonly.test", http.addr()),
    ]);
    let listener = ns.listener_address();
    let gw = TestGateway::start_with(&[("transparent", &listener)], RULES, &format!("{upstream}{pinned}")).await;
    let port = gw.transparent_addr().port();
    assert_eq!(gw.transparent_addr().ip(), ns.root_ip);
    for dport in [443, 80] {
        match redirect {
            Redirect::Iptables => ns.redirect_iptables(dport, port),
            Redirect::Nft => ns.redirect_nft(dport, port),
        }
    }
    Some(Setup { ns, ca, tls, http, gw })
}

impl Setup {
    /// curl inside the namespace, resolving `host` on `port` to [`CHOSEN`].
    async fn curl(&self, host: &str, port: u16, url: &str, extra: &[&str]) -> std::process::Output {
        self.curl_via(host, port, CHOSEN.parse().unwrap(), url, extra).await
    }

    /// curl inside the namespace, resolving `host` on `port` to `chosen`.
    async fn curl_via(&self, host: &str, port: u16, chosen: IpAddr, url: &str, extra: &[&str]) -> std::process::Output {
        let chosen = match chosen {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        let resolve = format!("{host}:{port}:{chosen}");
        let ca = self.ca.ca_pem_path().to_str().unwrap().to_string();
        let mut args =
            vec!["curl", "-sS", "--max-time", "10", "--noproxy", "*", "--resolve", &resolve, "--cacert", &ca];
        args.extend_from_slice(extra);
        args.push(url);
        self.ns.exec_async(&args, Duration::from_secs(20)).await
    }
}

async fn allowed_name_goes_to_the_pinned_upstream(s: &Setup) {
    let out = s.curl("allowed.test", 443, "https://allowed.test/t", &[]).await;
    assert!(out.status.success(), "{}", support::tools::describe(&out));
    assert_eq!(stdout(&out), "upstream=T sni=allowed.test path=/t");

    let ev = s.gw.wait_access(|e| e.sni.as_deref() == Some("allowed.test")).await;
    assert_decided(&ev, Action::Allow, Some(("allow allowed.test", 1)));
    assert_eq!(ev.outcome, Outcome::Ok, "{ev:#?}");
    assert_eq!(ev.listener.kind, ListenerKind::Transparent, "{ev:#?}");
    assert_eq!(ev.protocol, Protocol::Tls, "{ev:#?}");
    assert_eq!(ev.dst, original(chosen(), 443), "the original destination: {ev:#?}");
    assert_eq!(ev.upstream, Some(s.tls.addr()), "connected to the name's pin: {ev:#?}");
    assert_eq!(ev.client.ip(), IpAddr::from(s.ns.ns_ip), "{ev:#?}");
    assert_eq!(s.tls.handshakes(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iptables_redirect_connects_to_the_name_not_the_address() {
    let Some(s) =
        setup("iptables_redirect_connects_to_the_name_not_the_address", LOCAL_UPSTREAM, Redirect::Iptables).await
    else {
        return;
    };
    allowed_name_goes_to_the_pinned_upstream(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nft_redirect_connects_to_the_name_not_the_address() {
    let Some(s) = setup("nft_redirect_connects_to_the_name_not_the_address", LOCAL_UPSTREAM, Redirect::Nft).await
    else {
        return;
    };
    allowed_name_goes_to_the_pinned_upstream(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_name_gets_a_tls_alert() {
    let Some(s) = setup("a_denied_name_gets_a_tls_alert", LOCAL_UPSTREAM, Redirect::Iptables).await else {
        return;
    };
    let out = s.curl("denied.test", 443, "https://denied.test/", &[]).await;
    assert_eq!(out.status.code(), Some(35), "{}", support::tools::describe(&out));

    let ev = s.gw.wait_access(|e| e.sni.as_deref() == Some("denied.test")).await;
    assert_decided(&ev, Action::Deny, Some(("deny denied.test", 2)));
    assert_eq!(ev.outcome, Outcome::Denied, "{ev:#?}");
    assert_eq!(ev.dst, original(chosen(), 443), "{ev:#?}");
    assert_eq!(ev.upstream, None, "{ev:#?}");
    assert_eq!(s.tls.accepted(), 0, "the gateway connected upstream for a denied name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_decided_by_host_and_original_port() {
    let Some(s) = setup("plain_http_is_decided_by_host_and_original_port", LOCAL_UPSTREAM, Redirect::Iptables).await
    else {
        return;
    };
    let out = s.curl("site.test", 80, "http://site.test/p?q=1", &[]).await;
    assert!(out.status.success(), "{}", support::tools::describe(&out));
    assert_eq!(stdout(&out), "upstream=H host=site.test path=/p?q=1 method=GET");
    let ev = s.gw.wait_access(|e| e.path.as_deref() == Some("/p?q=1")).await;
    assert_decided(&ev, Action::Allow, Some(("allow http://site.test/", 3)));
    assert_eq!(ev.outcome, Outcome::Ok, "{ev:#?}");
    assert_eq!(ev.protocol, Protocol::Http, "{ev:#?}");
    assert_eq!(ev.host.as_deref(), Some("site.test"), "{ev:#?}");
    assert_eq!(ev.dst, original(chosen(), 80), "{ev:#?}");
    assert_eq!(ev.status, Some(200), "{ev:#?}");
    assert_eq!(ev.upstream, Some(s.http.addr()), "{ev:#?}");

    // A name no rule allows on port 80.
    let out = s.curl("denied.test", 80, "http://denied.test/d", &["-i"]).await;
    let text = stdout(&out);
    assert!(text.starts_with("HTTP/1.1 403"), "{}", support::tools::describe(&out));
    assert!(text.to_ascii_lowercase().contains("x-hostgate-reason: denied"), "{text}");
    let ev = s.gw.wait_access(|e| e.path.as_deref() == Some("/d")).await;
    assert_eq!(ev.outcome, Outcome::Denied, "{ev:#?}");

    // `portonly.test` is allowed on 8080 only; this request's original port is 80.
    let out = s.curl("portonly.test", 80, "http://portonly.test/port", &["-i"]).await;
    assert!(stdout(&out).starts_with("HTTP/1.1 403"), "{}", support::tools::describe(&out));
    let ev = s.gw.wait_access(|e| e.path.as_deref() == Some("/port")).await;
    assert_decided(&ev, Action::Deny, None);
    assert_eq!(s.http.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn original_in_dns_refuses_a_destination_the_name_does_not_have() {
    let upstream = format!("{LOCAL_UPSTREAM}verify_destination = \"original-in-dns\"\n");
    let Some(s) =
        setup("original_in_dns_refuses_a_destination_the_name_does_not_have", &upstream, Redirect::Iptables).await
    else {
        return;
    };
    let out = s.curl("allowed.test", 443, "https://allowed.test/", &[]).await;
    assert_eq!(out.status.code(), Some(35), "{}", support::tools::describe(&out));
    let ev = s.gw.wait_access(|e| e.sni.as_deref() == Some("allowed.test")).await;
    assert_eq!(ev.outcome, Outcome::Mismatch, "{CHOSEN} is not an address of allowed.test: {ev:#?}");
    assert_eq!(ev.dst, original(chosen(), 443), "{ev:#?}");
    assert_eq!(ev.upstream, None, "{ev:#?}");
    assert_eq!(s.tls.accepted(), 0);
    assert_logged_deny(&ev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clienthello_without_sni_gets_the_default_action() {
    let Some(s) = setup("a_clienthello_without_sni_gets_the_default_action", LOCAL_UPSTREAM, Redirect::Iptables).await
    else {
        return;
    };
    // An IP literal in the URL: curl sends no SNI (`-k`: were the handshake let through, no
    // certificate would name the address).
    let url = format!("https://{CHOSEN}/nosni");
    let out =
        s.ns.exec_async(&["curl", "-sS", "-k", "--max-time", "10", "--noproxy", "*", &url], Duration::from_secs(20))
            .await;
    assert_eq!(out.status.code(), Some(35), "the default (deny) must end the handshake: {}", describe(&out));

    let ev = s.gw.wait_access(|e| e.dst == original(chosen(), 443)).await;
    assert_eq!(ev.listener.kind, ListenerKind::Transparent, "{ev:#?}");
    assert_eq!(ev.protocol, Protocol::Tls, "{ev:#?}");
    assert_eq!(ev.sni, None, "curl sent no SNI: {ev:#?}");
    assert_decided(&ev, Action::Deny, None);
    assert_eq!(ev.outcome, Outcome::Denied, "{ev:#?}");
    assert_eq!(ev.upstream, None, "{ev:#?}");
    assert_eq!(s.tls.accepted(), 0, "the gateway connected upstream for a denied connection");
}

/// A server that is not `allowed.test` but has a certificate for it (the CA trusts it: think of
/// a mis-issued certificate, or a client that does not verify), on `198.51.100.K:443`, an
/// address on the root namespace's `lo` that the namespace's curl chooses for `allowed.test`.
/// The REDIRECT rule matches only packets arriving on the veth, so the gateway's own connection
/// to that address is not redirected and would reach the attacker.
async fn attacker(s: &Setup) -> (IpAddr, TlsUpstream) {
    let ip = s.ns.add_lo_address();
    let attacker = TlsUpstream::start_on(&s.ca, &["allowed.test"], "attacker", Mode::Http, (ip, 443).into()).await;
    (IpAddr::V4(ip), attacker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_destination_original_goes_where_the_client_chose() {
    let upstream = format!("{LOCAL_UPSTREAM}verify_destination = \"original\"\n");
    let Some(s) = setup("verify_destination_original_goes_where_the_client_chose", &upstream, Redirect::Iptables).await
    else {
        return;
    };
    let (ip, attacker) = attacker(&s).await;
    let out = s.curl_via("allowed.test", 443, ip, "https://allowed.test/o", &[]).await;
    assert!(out.status.success(), "{}", describe(&out));
    // This is what `original` is insecure about: an allowed SNI carried to the client's address.
    assert_eq!(stdout(&out), "upstream=attacker sni=allowed.test path=/o");

    let ev = s.gw.wait_access(|e| e.sni.as_deref() == Some("allowed.test")).await;
    assert_decided(&ev, Action::Allow, Some(("allow allowed.test", 1)));
    assert_eq!(ev.outcome, Outcome::Ok, "{ev:#?}");
    assert_eq!(ev.dst, original(ip, 443), "{ev:#?}");
    assert_eq!(ev.upstream, Some(SocketAddr::new(ip, 443)), "connected to the original destination: {ev:#?}");
    assert_eq!(attacker.handshakes(), 1);
    assert_eq!(s.tls.accepted(), 0, "the name's pin is not used with `original`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_destination_name_ignores_where_the_client_chose() {
    // The default: no `verify_destination` line.
    let Some(s) =
        setup("verify_destination_name_ignores_where_the_client_chose", LOCAL_UPSTREAM, Redirect::Iptables).await
    else {
        return;
    };
    let (ip, attacker) = attacker(&s).await;
    let out = s.curl_via("allowed.test", 443, ip, "https://allowed.test/n", &[]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out), "upstream=T sni=allowed.test path=/n");

    let ev = s.gw.wait_access(|e| e.sni.as_deref() == Some("allowed.test")).await;
    assert_decided(&ev, Action::Allow, Some(("allow allowed.test", 1)));
    assert_eq!(ev.outcome, Outcome::Ok, "{ev:#?}");
    assert_eq!(ev.dst, original(ip, 443), "the original destination: {ev:#?}");
    assert_eq!(ev.upstream, Some(s.tls.addr()), "connected to the name's pin: {ev:#?}");
    assert_eq!(attacker.accepted(), 0, "the attacker's server was reached");
    assert_eq!(s.tls.handshakes(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_ip6tables_redirect_connects_to_the_name() {
    const HINT: &str = "ipv6_ip6tables_redirect_connects_to_the_name";
    let Some(ns) = Netns::create(HINT) else {
        return;
    };
    if let Err(why) = ns.enable_ipv6() {
        eprintln!("skipping {HINT}: {why}");
        return;
    }
    let ca = TestCa::new();
    let tls = TlsUpstream::start(&ca, &["allowed.test"], "T6").await;
    let extra = format!("{LOCAL_UPSTREAM}{}", pins(&[("allowed.test", tls.addr())]));
    let gw = TestGateway::start_with(&[("transparent", &ns.listener_address6())], RULES, &extra).await;
    assert_eq!(gw.transparent_addr().ip(), IpAddr::V6(ns.root_ip6()));
    ns.redirect_ip6tables(443, gw.transparent_addr().port());

    let chosen = "2001:db8::10";
    let resolve = format!("allowed.test:443:[{chosen}]");
    let ca_path = ca.ca_pem_path().to_str().unwrap();
    let url = "https://allowed.test/v6";
    let args =
        ["curl", "-6", "-sS", "--max-time", "10", "--noproxy", "*", "--resolve", &resolve, "--cacert", ca_path, url];
    let out = ns.exec_async(&args, Duration::from_secs(20)).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out), "upstream=T6 sni=allowed.test path=/v6");

    let ev = gw.wait_access(|e| e.sni.as_deref() == Some("allowed.test")).await;
    assert_decided(&ev, Action::Allow, Some(("allow allowed.test", 1)));
    assert_eq!(ev.outcome, Outcome::Ok, "{ev:#?}");
    assert_eq!(ev.listener.kind, ListenerKind::Transparent, "{ev:#?}");
    assert_eq!(ev.dst, original(chosen.parse().unwrap(), 443), "IP6T_SO_ORIGINAL_DST: {ev:#?}");
    assert_eq!(ev.listener.local, gw.transparent_addr(), "{ev:#?}");
    assert_eq!(ev.client.ip(), IpAddr::from(ns.ns_ip6()), "{ev:#?}");
    assert_eq!(ev.upstream, Some(tls.addr()), "{ev:#?}");
    assert_eq!(tls.handshakes(), 1);
}

/// A redirected client that sends nothing is closed at `sniff.timeout` (nothing is allocated
/// for it until its first byte, but the wait counts) and logged `timeout` with its original
/// destination; one that is silent for most of the timeout and then trickles a ClientHello's
/// first bytes is closed at the same deadline, not one restarted by its first byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_late_clients_are_closed_at_the_sniff_timeout_from_the_accept() {
    let upstream = format!("{LOCAL_UPSTREAM}[sniff]\ntimeout = \"2s\"\n");
    let Some(s) =
        setup("silent_and_late_clients_are_closed_at_the_sniff_timeout_from_the_accept", &upstream, Redirect::Iptables)
            .await
    else {
        return;
    };
    // bash's /dev/tcp: the client's own address on stderr, then how long until the gateway
    // closed the connection (ms) on stdout.
    let client = |writes: &str| {
        format!(
            "exec 3<>/dev/tcp/{CHOSEN}/443 || exit 1; ss -Htn state established dst {CHOSEN}:443 >&2; \
             start=$(date +%s%N); ({writes}) >&3 2>/dev/null & cat <&3 >/dev/null; end=$(date +%s%N); \
             echo $(( (end - start) / 1000000 ))"
        )
    };
    let silent = client("sleep 6");
    let late = client("sleep 1.2; printf '\\x16'; sleep 0.3; printf '\\x03'; sleep 0.3; printf '\\x01'; sleep 6");
    // One after the other, so that each finds only its own connection with `ss`.
    let silent = s.ns.exec_async(&["bash", "-c", &silent], Duration::from_secs(20)).await;
    let late = s.ns.exec_async(&["bash", "-c", &late], Duration::from_secs(20)).await;
    for (what, out, read) in [("silent", &silent, 0..=0), ("late", &late, 1..=3)] {
        assert!(out.status.success(), "{what}: {}", describe(out));
        let waited: u64 = stdout(out).trim().parse().unwrap_or_else(|_| panic!("{what}: {}", describe(out)));
        eprintln!("{what}: closed after {waited} ms");
        // Restarted at the first byte, the late client's deadline would be 3.2 s away.
        assert!((1800..2900).contains(&waited), "{what}: closed after {waited} ms: {}", describe(out));
        let port: u16 = String::from_utf8_lossy(&out.stderr)
            .split_whitespace()
            .nth(2)
            .and_then(|local| local.rsplit(':').next().and_then(|p| p.parse().ok()))
            .unwrap_or_else(|| panic!("{what}: no local address in {}", describe(out)));
        let client = SocketAddr::new(s.ns.ns_ip.into(), port);
        let ev = s.gw.wait_access(|e| e.client == client).await;
        assert_eq!(ev.outcome, Outcome::Timeout, "{what}: {ev:#?}");
        assert_eq!(ev.listener.kind, ListenerKind::Transparent, "{what}: {ev:#?}");
        assert_eq!(ev.dst, original(chosen(), 443), "{what}: {ev:#?}");
        let detail = ev.detail.as_deref().unwrap_or_default().to_string();
        let bytes: u64 = detail
            .strip_prefix("nothing decidable within 2000 ms (")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{what}: {ev:#?}"));
        assert!(read.contains(&bytes), "{what}: {bytes} bytes read: {ev:#?}");
        assert_logged_deny(&ev);
    }
    assert_eq!(s.tls.accepted(), 0, "a client that sent nothing decidable reached an upstream");
}
