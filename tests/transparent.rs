//! The transparent listener, fed by REDIRECT rules (iptables, and the nftables recipe) from a
//! network namespace whose curl believes it talks to `203.0.113.10`, an address the client
//! chose. The gateway must connect to the *name* (pinned to a local upstream), decide plain
//! HTTP by Host and the original port, and with `verify_destination = "original-in-dns"` refuse
//! a destination that is not among the name's addresses.
//!
//! Needs root, `ip`, `iptables` and `nft`; each test prints why and passes when it cannot run.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::time::Duration;

use support::tools::stdout;
use support::{
    assert_decided, assert_logged_deny, field, pins, EventExt, HttpUpstream, Netns, TestCa, TestGateway, TlsUpstream,
    LOCAL_UPSTREAM,
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
        let resolve = format!("{host}:{port}:{CHOSEN}");
        let ca = self.ca.ca_pem_path().to_str().unwrap().to_string();
        let mut args =
            vec!["curl", "-sS", "--max-time", "10", "--noproxy", "*", "--resolve", &resolve, "--cacert", &ca];
        args.extend_from_slice(extra);
        args.push(url);
        self.ns.exec_async(&args, Duration::from_secs(20)).await
    }

    fn client_prefix(&self) -> String {
        format!("{}:", self.ns.ns_ip)
    }
}

async fn allowed_name_goes_to_the_pinned_upstream(s: &Setup) {
    let out = s.curl("allowed.test", 443, "https://allowed.test/t", &[]).await;
    assert!(out.status.success(), "{}", support::tools::describe(&out));
    assert_eq!(stdout(&out), "upstream=T sni=allowed.test path=/t");

    let ev = s.gw.wait_access(field("sni", "allowed.test")).await;
    assert_decided(&ev, "allow", Some(("allow allowed.test", 1)));
    assert_eq!(ev.s("outcome"), Some("ok"), "{ev:#?}");
    assert_eq!(ev.s("kind"), Some("transparent"), "{ev:#?}");
    assert_eq!(ev.s("protocol"), Some("tls"), "{ev:#?}");
    assert_eq!(ev.s("dst"), Some(format!("{CHOSEN}:443").as_str()), "the original destination: {ev:#?}");
    assert_eq!(ev.s("upstream"), Some(s.tls.addr().to_string().as_str()), "connected to the name's pin: {ev:#?}");
    assert!(ev.s("client").is_some_and(|c| c.starts_with(&s.client_prefix())), "{ev:#?}");
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

    let ev = s.gw.wait_access(field("sni", "denied.test")).await;
    assert_decided(&ev, "deny", Some(("deny denied.test", 2)));
    assert_eq!(ev.s("outcome"), Some("denied"), "{ev:#?}");
    assert_eq!(ev.s("dst"), Some(format!("{CHOSEN}:443").as_str()), "{ev:#?}");
    assert_eq!(ev.s("upstream"), None, "{ev:#?}");
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
    let ev = s.gw.wait_access(field("path", "/p?q=1")).await;
    assert_decided(&ev, "allow", Some(("allow http://site.test/", 3)));
    assert_eq!(ev.s("outcome"), Some("ok"), "{ev:#?}");
    assert_eq!(ev.s("protocol"), Some("http"), "{ev:#?}");
    assert_eq!(ev.s("host"), Some("site.test"), "{ev:#?}");
    assert_eq!(ev.s("dst"), Some(format!("{CHOSEN}:80").as_str()), "{ev:#?}");
    assert_eq!(ev.u("status"), Some(200), "{ev:#?}");
    assert_eq!(ev.s("upstream"), Some(s.http.addr().to_string().as_str()), "{ev:#?}");

    // A name no rule allows on port 80.
    let out = s.curl("denied.test", 80, "http://denied.test/d", &["-i"]).await;
    let text = stdout(&out);
    assert!(text.starts_with("HTTP/1.1 403"), "{}", support::tools::describe(&out));
    assert!(text.to_ascii_lowercase().contains("x-hostgate-reason: denied"), "{text}");
    let ev = s.gw.wait_access(field("path", "/d")).await;
    assert_eq!(ev.s("outcome"), Some("denied"), "{ev:#?}");

    // `portonly.test` is allowed on 8080 only; this request's original port is 80.
    let out = s.curl("portonly.test", 80, "http://portonly.test/port", &["-i"]).await;
    assert!(stdout(&out).starts_with("HTTP/1.1 403"), "{}", support::tools::describe(&out));
    let ev = s.gw.wait_access(field("path", "/port")).await;
    assert_decided(&ev, "deny", None);
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
    let ev = s.gw.wait_access(field("sni", "allowed.test")).await;
    assert_eq!(ev.s("outcome"), Some("mismatch"), "{CHOSEN} is not an address of allowed.test: {ev:#?}");
    assert_eq!(ev.s("dst"), Some(format!("{CHOSEN}:443").as_str()), "{ev:#?}");
    assert_eq!(ev.s("upstream"), None, "{ev:#?}");
    assert_eq!(s.tls.accepted(), 0);
    assert_logged_deny(&ev);
}
