//! The explicit-proxy (connect) listener with real clients: curl and `openssl s_client` through
//! CONNECT to allowed, bypassed and denied names; a rustls client relaying 8 MiB each way at
//! once; upstream failures before the tunnel; keep-alive absolute-form requests decided one by
//! one; an IPv6 listener; `max_connections` holding clients in the backlog.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use hostgate_proxy::access::Protocol;
use hostgate_proxy::config::ListenerKind;
use hostgate_proxy::outcome::Outcome;
use hostgate_proxy::policy::Action;
use hyper::Method;
use support::http::{get_absolute, read_connect_answer, read_until_closed, send_connect, tls_handshake, tunnel};
use support::tools::{curl, describe, run, stdout};
use support::upstream::Refusing;
use support::{
    assert_decided, assert_rule, dst, pins, random_bytes, Blackhole, HttpConn, HttpUpstream, TestCa, TestGateway,
    TlsUpstream, LOCAL_UPSTREAM,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Line numbers matter: the access log's `source` is `test.rules:LINE`.
const RULES: &str = "\
allow allowed.test
bypass bypassed.test
deny denied.test
allow echo.test
allow site.test
allow refused.test
allow slow.test
";

fn proxy_url(gw: &TestGateway) -> String {
    format!("http://{}", gw.connect_addr())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_reaches_an_allowed_name_through_connect() {
    let ca = TestCa::new();
    let up = TlsUpstream::start(&ca, &["allowed.test"], "A").await;
    let gw = TestGateway::start(RULES, &format!("{LOCAL_UPSTREAM}{}", pins(&[("allowed.test", up.addr())]))).await;

    let ca_path = ca.ca_pem_path().to_str().unwrap();
    let accepted_after = Instant::now();
    let out = curl(&["--proxy", &proxy_url(&gw), "--cacert", ca_path, "https://allowed.test/x"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out), "upstream=A sni=allowed.test path=/x");

    let ev = gw.wait_access(|e| e.sni.as_deref() == Some("allowed.test")).await;
    assert_decided(&ev, Action::Allow, Some(("allow allowed.test", 1)));
    assert_eq!(ev.outcome, Outcome::Ok, "{ev:#?}");
    assert_eq!(ev.listener.kind, ListenerKind::Connect, "{ev:#?}");
    assert_eq!(ev.listener.local, gw.connect_addr(), "{ev:#?}");
    assert_eq!(ev.protocol, Protocol::Tls, "{ev:#?}");
    assert_eq!(dst(&ev).as_deref(), Some("allowed.test:443"), "{ev:#?}");
    assert_eq!(ev.upstream, Some(up.addr()), "{ev:#?}");
    assert_eq!(ev.status, Some(200), "the CONNECT answer: {ev:#?}");
    assert_eq!(ev.client.ip(), IpAddr::from(Ipv4Addr::LOCALHOST), "{ev:#?}");
    let tls = ev.tls.as_ref().unwrap_or_else(|| panic!("no ClientHello offer: {ev:#?}"));
    assert!(tls.alpn.iter().any(|p| p == "http/1.1"), "curl offers http/1.1: {ev:#?}");
    assert!(!tls.versions().to_string().is_empty(), "{ev:#?}");
    assert!(ev.bytes_up > 0 && ev.bytes_down > 0, "{ev:#?}");
    // The log's `duration_ms` is measured from `started`, the accept.
    assert!(ev.started >= accepted_after, "{ev:#?}");
    assert_eq!(up.handshakes(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_reaches_a_bypassed_name_through_connect() {
    let ca = TestCa::new();
    let up = TlsUpstream::start(&ca, &["bypassed.test"], "B").await;
    let gw = TestGateway::start(RULES, &format!("{LOCAL_UPSTREAM}{}", pins(&[("bypassed.test", up.addr())]))).await;

    let ca_path = ca.ca_pem_path().to_str().unwrap();
    let out = curl(&["--proxy", &proxy_url(&gw), "--cacert", ca_path, "https://bypassed.test/b?q=1"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out), "upstream=B sni=bypassed.test path=/b?q=1");

    let ev = gw.wait_access(|e| e.sni.as_deref() == Some("bypassed.test")).await;
    assert_decided(&ev, Action::Bypass, Some(("bypass bypassed.test", 2)));
    assert_eq!(ev.outcome, Outcome::Ok, "{ev:#?}");
    assert_eq!(ev.upstream, Some(up.addr()), "{ev:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_to_a_denied_name_gets_403_before_the_tunnel() {
    let ca = TestCa::new();
    // Pinned, so that a gateway that connected anyway would be caught.
    let up = TlsUpstream::start(&ca, &["denied.test"], "D").await;
    let gw = TestGateway::start(RULES, &format!("{LOCAL_UPSTREAM}{}", pins(&[("denied.test", up.addr())]))).await;

    let ca_path = ca.ca_pem_path().to_str().unwrap();
    let out = curl(&["--proxy", &proxy_url(&gw), "--cacert", ca_path, "https://denied.test/"]).await;
    assert_eq!(out.status.code(), Some(56), "{}", describe(&out));
    assert!(support::tools::stderr(&out).contains("CONNECT tunnel failed, response 403"), "{}", describe(&out));

    let ev = gw.wait_access(|e| dst(e).as_deref() == Some("denied.test:443")).await;
    assert_decided(&ev, Action::Deny, Some(("deny denied.test", 3)));
    assert_eq!(ev.outcome, Outcome::Denied, "{ev:#?}");
    assert_eq!(ev.status, Some(403), "{ev:#?}");
    assert_eq!(ev.upstream, None, "{ev:#?}");

    // The same by hand: the reason header is the fixed token.
    let (_tcp, response) = support::http::connect_tunnel(gw.connect_addr(), "denied.test:443").await;
    assert_eq!(response.status, 403, "{response:?}");
    assert_eq!(response.header("x-hostgate-reason"), Some("denied"), "{response:?}");
    assert_eq!(up.accepted(), 0, "the gateway connected to a denied name's upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_no_rule_matches_is_denied_by_default() {
    let gw = TestGateway::start(RULES, LOCAL_UPSTREAM).await;
    let (tcp, response) = support::http::connect_tunnel(gw.connect_addr(), "unlisted.test:443").await;
    assert_eq!(response.status, 403, "{response:?}");
    let client = tcp.local_addr().unwrap();
    let ev = gw.wait_access(|e| e.client == client).await;
    assert_decided(&ev, Action::Deny, None);
    assert_eq!(ev.outcome, Outcome::Denied, "{ev:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_s_client_through_connect() {
    let ca = TestCa::new();
    let up = TlsUpstream::start(&ca, &["allowed.test"], "A").await;
    let gw = TestGateway::start(RULES, &format!("{LOCAL_UPSTREAM}{}", pins(&[("allowed.test", up.addr())]))).await;

    let proxy = gw.connect_addr().to_string();
    let ca_path = ca.ca_pem_path().to_str().unwrap();
    let args = [
        "s_client",
        "-proxy",
        &proxy,
        "-connect",
        "allowed.test:443",
        "-servername",
        "allowed.test",
        "-CAfile",
        ca_path,
        "-verify_return_error",
        "-quiet",
    ];
    let request = b"GET /ossl HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n";
    let out = run("openssl", &args, Some(request)).await;
    assert!(stdout(&out).contains("upstream=A sni=allowed.test path=/ossl"), "{}", describe(&out));

    let ev = gw.wait_access(|e| e.sni.as_deref() == Some("allowed.test")).await;
    assert_decided(&ev, Action::Allow, Some(("allow allowed.test", 1)));
    assert_eq!(ev.outcome, Outcome::Ok, "{ev:#?}");
    assert_eq!(ev.upstream, Some(up.addr()), "{ev:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rustls_relays_8_mib_each_way_byte_exact() {
    const SIZE: usize = 8 << 20;
    let ca = TestCa::new();
    let up = TlsUpstream::start_echo(&ca, &["echo.test"], "E").await;
    let gw = TestGateway::start(RULES, &format!("{LOCAL_UPSTREAM}{}", pins(&[("echo.test", up.addr())]))).await;

    let tcp = tunnel(gw.connect_addr(), "echo.test:443").await;
    let client = tcp.local_addr().unwrap();
    let tls = tls_handshake(tcp, "echo.test", ca.client_config()).await.unwrap();
    let (mut rd, mut wr) = tokio::io::split(tls);
    let data = random_bytes(SIZE, 0x5eed);
    let sent = data.clone();
    let start = Instant::now();
    // Both directions at once: the echo sends back while the client is still writing.
    let writer = tokio::spawn(async move {
        wr.write_all(&sent).await.unwrap();
        wr.flush().await.unwrap();
        wr
    });
    let mut got = vec![0u8; SIZE];
    tokio::time::timeout(Duration::from_secs(120), rd.read_exact(&mut got))
        .await
        .unwrap_or_else(|_| panic!("echo incomplete after 120 s"))
        .unwrap();
    let mut wr = writer.await.unwrap();
    if let Some(i) = got.iter().zip(&data).position(|(a, b)| a != b) {
        panic!("the relayed bytes differ from offset {i} (of {SIZE})");
    }
    eprintln!("8 MiB each way in {:?}", start.elapsed());
    wr.shutdown().await.unwrap();
    let mut tls = rd.unsplit(wr);
    let _ = read_until_closed(&mut tls, Duration::from_secs(15)).await;
    drop(tls);

    let ev = gw.wait_access(|e| e.client == client).await;
    assert_decided(&ev, Action::Allow, Some(("allow echo.test", 4)));
    assert_eq!(ev.outcome, Outcome::Ok, "{ev:#?}");
    assert_eq!(ev.sni.as_deref(), Some("echo.test"), "{ev:#?}");
    assert_eq!(ev.upstream, Some(up.addr()), "{ev:#?}");
    // TLS records add overhead on top of the payload.
    let (up_bytes, down_bytes) = (ev.bytes_up, ev.bytes_down);
    assert!(up_bytes >= SIZE as u64 && up_bytes < SIZE as u64 + SIZE as u64 / 10, "bytes_up {up_bytes}: {ev:#?}");
    assert!(
        down_bytes >= SIZE as u64 && down_bytes < SIZE as u64 + SIZE as u64 / 10,
        "bytes_down {down_bytes}: {ev:#?}"
    );
    // Everything the client sent through the tunnel reached the upstream, and nothing else.
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.bytes_received() != up_bytes && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(up.bytes_received(), up_bytes, "bytes the upstream received vs bytes_up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_a_refusing_upstream_is_502() {
    let refusing = Refusing::new();
    let gw =
        TestGateway::start(RULES, &format!("{LOCAL_UPSTREAM}{}", pins(&[("refused.test", refusing.addr())]))).await;
    let (tcp, response) = support::http::connect_tunnel(gw.connect_addr(), "refused.test:443").await;
    assert_eq!(response.status, 502, "{response:?}");
    support::http::assert_reason_token(&response);
    let ev = gw.wait_access(|e| e.client == tcp.local_addr().unwrap()).await;
    assert_rule(&ev, "allow refused.test", 6);
    assert_eq!(ev.outcome, Outcome::UpstreamRefused, "{ev:#?}");
    assert_eq!(ev.status, Some(502), "{ev:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_a_silent_upstream_is_504() {
    let hole = Blackhole::start().await;
    let extra = format!(
        "[upstream]\nallow_private = [\"127.0.0.0/8\"]\nconnect_timeout = \"500ms\"\n{}",
        pins(&[("slow.test", hole.addr())])
    );
    let gw = TestGateway::start(RULES, &extra).await;
    let start = Instant::now();
    let (tcp, response) = support::http::connect_tunnel(gw.connect_addr(), "slow.test:443").await;
    assert_eq!(response.status, 504, "{response:?}");
    assert!(start.elapsed() >= Duration::from_millis(400), "answered after {:?}", start.elapsed());
    let ev = gw.wait_access(|e| e.client == tcp.local_addr().unwrap()).await;
    assert_eq!(ev.outcome, Outcome::UpstreamTimeout, "{ev:#?}");
    assert_eq!(ev.status, Some(504), "{ev:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_requests_are_decided_one_by_one() {
    let h = HttpUpstream::start("H").await;
    let gw = TestGateway::start(RULES, &format!("{LOCAL_UPSTREAM}{}", pins(&[("site.test", h.addr())]))).await;
    let mut conn = HttpConn::connect(gw.connect_addr()).await;

    let r = conn.request(&get_absolute("site.test", "/one", "site.test")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "upstream=H host=site.test path=/one method=GET");

    let r = conn.request(&get_absolute("denied.test", "/two", "denied.test")).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.header("x-hostgate-reason"), Some("denied"), "{r:?}");

    let r = conn.request(&get_absolute("site.test", "/three", "site.test")).await;
    assert_eq!(r.status, 200, "the connection must stay usable after a denied request: {r:?}");
    assert_eq!(r.text(), "upstream=H host=site.test path=/three method=GET");
    assert_eq!(h.count(), 2);

    let one = gw.wait_access(|e| e.path.as_deref() == Some("/one")).await;
    assert_decided(&one, Action::Allow, Some(("allow site.test", 5)));
    assert_eq!(one.outcome, Outcome::Ok, "{one:#?}");
    assert_eq!(one.protocol, Protocol::Http, "{one:#?}");
    assert_eq!(one.method, Some(Method::GET), "{one:#?}");
    assert_eq!(one.host.as_deref(), Some("site.test"), "{one:#?}");
    assert_eq!(one.status, Some(200), "{one:#?}");
    assert_eq!(one.upstream, Some(h.addr()), "{one:#?}");
    let two = gw.wait_access(|e| e.path.as_deref() == Some("/two")).await;
    assert_decided(&two, Action::Deny, Some(("deny denied.test", 3)));
    assert_eq!(two.outcome, Outcome::Denied, "{two:#?}");
    assert_eq!(two.status, Some(403), "{two:#?}");
    assert_eq!(two.upstream, None, "{two:#?}");
    let three = gw.wait_access(|e| e.path.as_deref() == Some("/three")).await;
    assert_eq!(three.outcome, Outcome::Ok, "{three:#?}");
    // All three came from the same client connection.
    assert_eq!(one.client, two.client);
    assert_eq!(two.client, three.client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_listeners_on_port_zero_both_start() {
    // Port 0 means "any free port": two listeners asking for it do not collide.
    let gw = TestGateway::try_start(&[("connect", "127.0.0.1:0"), ("transparent", "127.0.0.1:0")], RULES, "")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(gw.connect_addr(), gw.transparent_addr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_an_ipv6_listener() {
    let ca = TestCa::new();
    let up = TlsUpstream::start(&ca, &["allowed.test"], "A6").await;
    let extra = format!("{LOCAL_UPSTREAM}{}", pins(&[("allowed.test", up.addr())]));
    let gw = TestGateway::start_with(&[("connect", "[::1]:0")], RULES, &extra).await;
    let listener = gw.connect_addr();
    assert!(listener.is_ipv6() && listener.ip().is_loopback(), "{listener}");

    let ca_path = ca.ca_pem_path().to_str().unwrap();
    let out = curl(&["--proxy", &proxy_url(&gw), "--cacert", ca_path, "https://allowed.test/v6"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out), "upstream=A6 sni=allowed.test path=/v6");

    let ev = gw.wait_access(|e| e.sni.as_deref() == Some("allowed.test")).await;
    assert_eq!(ev.listener.local, SocketAddr::from((Ipv6Addr::LOCALHOST, listener.port())), "{ev:#?}");
    assert_eq!(ev.client.ip(), IpAddr::from(Ipv6Addr::LOCALHOST), "{ev:#?}");
    assert_decided(&ev, Action::Allow, Some(("allow allowed.test", 1)));
    assert_eq!(ev.outcome, Outcome::Ok, "{ev:#?}");
    assert_eq!(ev.upstream, Some(up.addr()), "{ev:#?}");
}

/// One HTTP request through an established TLS session; returns the response body.
async fn get_over<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(tls: &mut S, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let closed = read_until_closed(tls, Duration::from_secs(15)).await;
    let text = String::from_utf8_lossy(&closed.bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no response head: {text:?}"));
    assert!(head.starts_with("HTTP/1.1 200 "), "{text:?}");
    body.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_holds_the_next_client_in_the_backlog() {
    let ca = TestCa::new();
    let up = TlsUpstream::start(&ca, &["allowed.test"], "A").await;
    let extra = format!("{LOCAL_UPSTREAM}[limits]\nmax_connections = 1\n{}", pins(&[("allowed.test", up.addr())]));
    // One listener: the slot is the tunnels' alone (see the next test for two listeners).
    let gw = TestGateway::start_with(&[("connect", "127.0.0.1:0")], RULES, &extra).await;

    // The one slot: a tunnel with a TLS session through it, kept open.
    let first = tunnel(gw.connect_addr(), "allowed.test:443").await;
    let first_client = first.local_addr().unwrap();
    let mut first = tls_handshake(first, "allowed.test", ca.client_config()).await.unwrap();

    // The second client's TCP connect completes (the kernel's backlog), but nobody reads its
    // CONNECT: no answer while the first holds the slot.
    let mut second = send_connect(gw.connect_addr(), "allowed.test:443").await;
    let second_client = second.local_addr().unwrap();
    match tokio::time::timeout(Duration::from_millis(500), second.read_u8()).await {
        Err(_) => {}
        Ok(r) => panic!("the second client was answered while the first held the only slot: {r:?}"),
    }
    assert_eq!(up.accepted(), 1, "the gateway connected upstream for the second client");
    assert!(gw.access_events(|e| e.client == second_client).is_empty(), "the second client was served");

    // The first tunnel ends; its slot goes to the second client.
    assert_eq!(get_over(&mut first, "/first").await, "upstream=A sni=allowed.test path=/first");
    drop(first);
    let ev = gw.wait_access(|e| e.client == first_client).await;
    assert_eq!(ev.outcome, Outcome::Ok, "{ev:#?}");

    let answer = read_connect_answer(&mut second, "allowed.test:443").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let mut second = tls_handshake(second, "allowed.test", ca.client_config()).await.unwrap();
    assert_eq!(get_over(&mut second, "/second").await, "upstream=A sni=allowed.test path=/second");
    drop(second);
    let ev = gw.wait_access(|e| e.client == second_client).await;
    assert_decided(&ev, Action::Allow, Some(("allow allowed.test", 1)));
    assert_eq!(ev.outcome, Outcome::Ok, "{ev:#?}");
    assert_eq!(ev.status, Some(200), "{ev:#?}");
    assert_eq!(up.handshakes(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_is_shared_by_listeners_without_starving_one() {
    // Two listeners share the limit; the transparent one gets no client at all. The slot is
    // held by a keep-alive client connection of plain HTTP requests (no tunnel).
    let h = HttpUpstream::start("H").await;
    let extra = format!("{LOCAL_UPSTREAM}[limits]\nmax_connections = 1\n{}", pins(&[("site.test", h.addr())]));
    let gw = TestGateway::start(RULES, &extra).await;
    // A gateway that has been up for a moment: both accept loops have started.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut first = HttpConn::connect(gw.connect_addr()).await;
    first.send(get_absolute("site.test", "/first", "site.test").as_bytes()).await;
    let r = first.read_response().await.unwrap_or_else(|e| {
        panic!("no answer to the only client of the connect listener (its slot went to the idle listener?): {e}")
    });
    assert_eq!(r.text(), "upstream=H host=site.test path=/first method=GET", "{r:?}");

    let mut second = HttpConn::connect(gw.connect_addr()).await;
    let second_client = second.local_addr();
    second.send(get_absolute("site.test", "/second", "site.test").as_bytes()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.count(), 1, "the second client was served while the first held the only slot");

    drop(first);
    let r = second.read_response().await.unwrap_or_else(|e| {
        panic!("no answer to the second client after the first closed (its slot went to the idle listener?): {e}")
    });
    assert_eq!(r.text(), "upstream=H host=site.test path=/second method=GET", "{r:?}");
    let ev = gw.wait_access(|e| e.client == second_client).await;
    assert_eq!(ev.outcome, Outcome::Ok, "{ev:#?}");
    assert_eq!(ev.path.as_deref(), Some("/second"), "{ev:#?}");
}
