//! The SNI listener (`kind = "sni"`): connections addressed to the gateway itself, as DNS
//! steering makes them, routed by the SNI or the `Host` to the name on the listener's
//! `upstream_port`. curl and `openssl s_client` believe `allowed.test` is the gateway's address
//! (`--resolve`, `-connect`); the gateway resolves the name itself (pinned to local upstreams).
//! Allowed, denied, SSRF-guarded, no SNI, plain HTTP by `Host` on a second listener, and a name
//! that resolves back to the gateway (the loop guard).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use hostgate_proxy::access::Protocol;
use hostgate_proxy::config::ListenerKind;
use hostgate_proxy::outcome::Outcome;
use hostgate_proxy::policy::Action;
use support::tools::{curl, describe, run, stdout};
use support::{HttpConn, HttpUpstream, TestCa, TestGateway, TlsUpstream, LOCAL_UPSTREAM};

const RULES: &str = "allow allowed.test\ndeny denied.test\nallow private.test\nallow plain.test\nallow loop.test\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_steered_to_the_gateway_are_decided_and_routed_by_name() {
    let ca = TestCa::new();
    let tls = TlsUpstream::start(&ca, &["allowed.test"], "A").await;
    let http = HttpUpstream::start("P").await;
    let extra = format!(
        "[[listener]]\nkind = \"sni\"\naddress = \"127.0.0.1:0\"\nupstream_port = 443\n\n\
         [[listener]]\nkind = \"sni\"\naddress = \"127.0.0.2:0\"\nupstream_port = 80\n\n\
         {LOCAL_UPSTREAM}\n[resolve]\n\"allowed.test\" = [\"{}\"]\n\"denied.test\" = [\"{}\"]\n\
         \"plain.test\" = [\"{}\"]\n\"private.test\" = [\"10.255.255.1\"]\n",
        tls.addr(),
        tls.addr(),
        http.addr()
    );
    let policy = "[policy]\ndefault = \"deny\"\n[[policy.source]]\npath = \"test.rules\"\n";
    let gw = TestGateway::start_files(&[], policy, &[("test.rules", RULES)], &extra).await;
    let listeners: Vec<_> =
        gw.gateway().listeners().iter().filter(|l| l.kind == ListenerKind::Sni).map(|l| l.local).collect();
    let (tls_port, http_addr) = (listeners[0].port(), listeners[1]);
    let ca_path = ca.ca_pem_path().to_str().unwrap();

    // curl: the name resolves to the gateway; the gateway connects to the name on 443 (pinned).
    let resolve = format!("allowed.test:{tls_port}:127.0.0.1");
    let o = curl(&["--resolve", &resolve, "--cacert", ca_path, &format!("https://allowed.test:{tls_port}/x")]).await;
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(stdout(&o), "upstream=A sni=allowed.test path=/x");
    let ev = gw.wait_access(|e| e.sni.as_deref() == Some("allowed.test")).await;
    assert_eq!(
        (ev.listener.kind, ev.action, ev.outcome),
        (ListenerKind::Sni, Some(Action::Allow), Outcome::Ok),
        "{ev:#?}"
    );
    assert_eq!(ev.upstream, Some(tls.addr()), "{ev:#?}");

    // openssl s_client, a foreign TLS client: the same, by the server name it sends.
    let connect = format!("127.0.0.1:{tls_port}");
    let o = run(
        "openssl",
        &[
            "s_client",
            "-connect",
            &connect,
            "-servername",
            "allowed.test",
            "-CAfile",
            ca_path,
            "-verify_return_error",
            "-quiet",
        ],
        Some(b"GET /s HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(stdout(&o).contains("upstream=A sni=allowed.test path=/s"), "{}", describe(&o));

    // A denied name: the alert, and no upstream connection.
    let accepted = tls.accepted();
    let resolve = format!("denied.test:{tls_port}:127.0.0.1");
    let o = curl(&["--resolve", &resolve, "--cacert", ca_path, &format!("https://denied.test:{tls_port}/")]).await;
    assert!(!o.status.success(), "{}", describe(&o));
    let ev = gw.wait_access(|e| e.sni.as_deref() == Some("denied.test")).await;
    assert_eq!((ev.action, ev.outcome), (Some(Action::Deny), Outcome::Denied), "{ev:#?}");
    assert_eq!(tls.accepted(), accepted, "a denied name never reaches an upstream");

    // An allowed name that resolves to a private address: the SSRF guard holds here too.
    let resolve = format!("private.test:{tls_port}:127.0.0.1");
    let o = curl(&["--resolve", &resolve, "--cacert", ca_path, &format!("https://private.test:{tls_port}/")]).await;
    assert!(!o.status.success(), "{}", describe(&o));
    let ev = gw.wait_access(|e| e.sni.as_deref() == Some("private.test")).await;
    assert_eq!(ev.outcome, Outcome::Ssrf, "{ev:#?}");

    // TLS without a server name: nothing to route by.
    let o = run("openssl", &["s_client", "-connect", &connect, "-noservername", "-quiet"], Some(b"")).await;
    assert!(!stdout(&o).contains("upstream="), "{}", describe(&o));
    let ev = gw.wait_access(|e| e.protocol == Protocol::Tls && e.sni.is_none()).await;
    assert_eq!(ev.outcome, Outcome::Denied, "{ev:#?}");
    assert_eq!(ev.detail.as_deref(), Some("no server name: an SNI listener routes by the name"), "{ev:#?}");

    // Plain HTTP on the second listener (upstream_port 80): routed by Host.
    let mut c = HttpConn::connect(http_addr).await;
    let r = c.request("GET /p?q=1 HTTP/1.1\r\nHost: plain.test\r\n\r\n").await;
    assert_eq!(r.status, 200, "{r:?}");
    let got = http.received();
    assert_eq!(
        (got.len(), got[0].target.as_str(), got[0].header("host")),
        (1, "/p?q=1", Some("plain.test")),
        "{got:?}"
    );
    let r = c.request("GET / HTTP/1.1\r\nHost: denied.test\r\n\r\n").await;
    assert_eq!(r.status, 403, "{r:?}");
    let r = c.request("GET / HTTP/1.1\r\nHost: plain.test:8080\r\n\r\n").await;
    assert_eq!(r.status, 403, "a Host port other than the upstream port: {r:?}");
    let ev = gw.wait_access(|e| e.path.as_deref() == Some("/p?q=1")).await;
    assert_eq!(
        (ev.listener.kind, ev.protocol, ev.action),
        (ListenerKind::Sni, Protocol::Http, Some(Action::Allow)),
        "{ev:#?}"
    );

    // A name that resolves to the gateway itself is refused, not looped.
    let config = gw.config_dir().join("hostgate.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("\"loop.test\" = [\"127.0.0.1:{tls_port}\"]\n"));
    std::fs::write(&config, text).unwrap();
    gw.gateway().reload().await.unwrap();
    let resolve = format!("loop.test:{tls_port}:127.0.0.1");
    let o = curl(&["--resolve", &resolve, "-k", &format!("https://loop.test:{tls_port}/")]).await;
    assert!(!o.status.success(), "{}", describe(&o));
    let ev = gw.wait_access(|e| e.sni.as_deref() == Some("loop.test")).await;
    assert_eq!(ev.outcome, Outcome::Mismatch, "{ev:#?}");
    assert!(ev.detail.as_deref().unwrap_or("").contains("resolves to the gateway itself"), "{ev:#?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn an_sni_listener_on_port_0_needs_an_upstream_port() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.rules"), "allow a.test\n").unwrap();
    let config = dir.path().join("hostgate.toml");
    for (listener, want) in [
        ("kind = \"sni\"\naddress = \"127.0.0.1:0\"\n", "a `kind = \"sni\"` listener on port 0 needs `upstream_port`"),
        (
            "kind = \"connect\"\naddress = \"127.0.0.1:0\"\nupstream_port = 443\n",
            "listener.upstream_port: only a `kind = \"sni\"` listener",
        ),
        (
            "kind = \"sni\"\naddress = \"127.0.0.1:443\"\nupstream_port = 0\n",
            "listener.upstream_port: 0 is not between 1 and 65535",
        ),
    ] {
        std::fs::write(
            &config,
            format!("[[listener]]\n{listener}\n[policy]\ndefault = \"deny\"\n[[policy.source]]\npath = \"a.rules\"\n"),
        )
        .unwrap();
        let o = run(env!("CARGO_BIN_EXE_hostgate"), &["check", "--config", config.to_str().unwrap()], None).await;
        assert!(!o.status.success() && support::tools::stderr(&o).contains(want), "{listener}: {}", describe(&o));
    }
}
