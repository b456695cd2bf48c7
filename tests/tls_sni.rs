//! Adversarial ClientHellos through CONNECT tunnels: a hello one byte per TCP segment, a hello
//! cut into many TLS records, a hello over the sniff cap, two host names, invalid names, an SNI
//! that disagrees with the CONNECT host; and what the sniffer does with silence, with bytes
//! that are neither TLS nor HTTP, with a name that resolves inside, and with a connection that
//! reached the transparent listener without being redirected.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hostgate_proxy::access::Protocol;
use hostgate_proxy::config::ListenerKind;
use hostgate_proxy::outcome::Outcome;
use hostgate_proxy::policy::Action;
use support::http::{assert_alert_or_nothing, connect_tunnel, read_until_closed, tls_handshake, tunnel};
use support::{
    assert_decided, assert_logged_deny, dst, pins, ClientHello, TestCa, TestGateway, TlsUpstream, Trickle,
    ALERT_ACCESS_DENIED, LOCAL_UPSTREAM,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const RULES: &str = "\
allow allowed.test
allow echo.test
";

/// A gateway with `allowed.test` pinned to an HTTP-mode upstream and `echo.test` to an echo
/// upstream, plus `extra` configuration.
async fn setup(extra: &str) -> (TestCa, TlsUpstream, TlsUpstream, TestGateway) {
    let ca = TestCa::new();
    let http = TlsUpstream::start(&ca, &["allowed.test"], "A").await;
    let echo = TlsUpstream::start_echo(&ca, &["echo.test"], "E").await;
    let config =
        format!("{LOCAL_UPSTREAM}{}{extra}", pins(&[("allowed.test", http.addr()), ("echo.test", echo.addr())]));
    let gw = TestGateway::start(RULES, &config).await;
    (ca, http, echo, gw)
}

/// Sends one HTTP request over an established TLS stream and returns the response body.
async fn get<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(tls: S, path: &str) -> String {
    let mut io = BufReader::new(tls);
    io.write_all(format!("GET {path} HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    io.flush().await.unwrap();
    support::http::read_response(&mut io, true).await.unwrap().text()
}

/// Sends `hello` in a tunnel to `authority` and returns the tunnel's client address and how
/// it ended.
async fn send_in_tunnel(gw: &TestGateway, authority: &str, hello: &[u8]) -> (SocketAddr, support::Closed) {
    let mut tcp = tunnel(gw.connect_addr(), authority).await;
    let client = tcp.local_addr().unwrap();
    tcp.write_all(hello).await.unwrap();
    let closed = read_until_closed(&mut tcp, Duration::from_secs(10)).await;
    (client, closed)
}

/// Reads the start of the upstream's answer to a hand-built hello: a ServerHello record.
async fn expect_server_hello(tcp: &mut TcpStream) {
    let mut head = [0u8; 6];
    tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut head)).await.expect("no answer").unwrap();
    assert_eq!((head[0], head[5]), (0x16, 0x02), "expected a ServerHello record, got {head:02x?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clienthello_one_byte_per_segment() {
    let (ca, http, _echo, gw) = setup("").await;
    let tcp = tunnel(gw.connect_addr(), "allowed.test:443").await;
    let client = tcp.local_addr().unwrap();
    // Every byte the client writes during the handshake goes in its own segment, 2 ms apart.
    let trickle = Trickle::new(tcp, 4096, Duration::from_millis(2));
    let tls = tls_handshake(trickle, "allowed.test", ca.client_config()).await.unwrap();
    let trickled = tls.get_ref().0.trickled();
    assert!(trickled > 150, "only {trickled} bytes went one by one");
    assert_eq!(get(tls, "/trickle").await, "upstream=A sni=allowed.test path=/trickle");

    let ev = gw.wait_access(|e| e.client == client).await;
    assert_decided(&ev, Action::Allow, Some(("allow allowed.test", 1)));
    assert_eq!(ev.outcome, Outcome::Ok, "{ev:#?}");
    assert_eq!(ev.sni.as_deref(), Some("allowed.test"), "{ev:#?}");
    assert_eq!(ev.upstream, Some(http.addr()), "{ev:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clienthello_split_across_records() {
    let (ca, _http, _echo, gw) = setup("").await;

    // rustls fragments every record it writes, the ClientHello included, to 64 bytes.
    let tcp = tunnel(gw.connect_addr(), "allowed.test:443").await;
    let client = tcp.local_addr().unwrap();
    let mut config = ca.client_config();
    config.max_fragment_size = Some(64);
    let tls = tls_handshake(tcp, "allowed.test", config).await.unwrap();
    assert_eq!(get(tls, "/fragments").await, "upstream=A sni=allowed.test path=/fragments");
    let ev = gw.wait_access(|e| e.client == client).await;
    assert_eq!(ev.outcome, Outcome::Ok, "{ev:#?}");
    assert_eq!(ev.sni.as_deref(), Some("allowed.test"), "{ev:#?}");

    // A hand-built hello in 16-byte records, the server_name extension straddling several: the
    // gateway must reassemble it to decide, and replay it unchanged for the upstream to parse
    // (which answers with a ServerHello).
    let hello = ClientHello::new("allowed.test").record_size(16).to_bytes();
    assert!(hello.len() > 10 * 21, "{} bytes", hello.len());
    let mut tcp = tunnel(gw.connect_addr(), "allowed.test:443").await;
    let client = tcp.local_addr().unwrap();
    tcp.write_all(&hello).await.unwrap();
    expect_server_hello(&mut tcp).await;
    drop(tcp);
    let ev = gw.wait_access(|e| e.client == client).await;
    assert_eq!(ev.sni.as_deref(), Some("allowed.test"), "{ev:#?}");
    assert_decided(&ev, Action::Allow, Some(("allow allowed.test", 1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clienthello_over_the_cap_is_refused() {
    // 512 is the smallest cap the configuration accepts.
    let (_ca, _http, echo, gw) = setup("[sniff]\nmax_bytes = 512\n").await;
    let hello = ClientHello::new("echo.test").padding(600).to_bytes();
    assert!(hello.len() > 700);
    let (client, closed) = send_in_tunnel(&gw, "echo.test:443", &hello).await;
    assert_alert_or_nothing(&closed);
    let ev = gw.wait_access(|e| e.client == client).await;
    assert_eq!(ev.outcome, Outcome::ClientHelloTooLarge, "{ev:#?}");
    assert_eq!(echo.bytes_received(), 0, "bytes reached the upstream");

    // The same hello without the padding fits and reaches the upstream, which answers: the
    // cap, not the hello, was the reason.
    let small = ClientHello::new("echo.test").to_bytes();
    assert!(small.len() <= 512, "{} bytes", small.len());
    let mut tcp = tunnel(gw.connect_addr(), "echo.test:443").await;
    tcp.write_all(&small).await.unwrap();
    expect_server_hello(&mut tcp).await;
    assert_logged_deny(&ev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ech_is_decided_on_the_outer_sni_and_logged() {
    let (_ca, http, _echo, gw) = setup("").await;
    let mut tcp = tunnel(gw.connect_addr(), "allowed.test:443").await;
    let client = tcp.local_addr().unwrap();
    tcp.write_all(&ClientHello::new("allowed.test").alpn(&["h2"]).ech().to_bytes()).await.unwrap();
    // Relayed: the upstream (which cannot decrypt the inner hello and ignores the extension)
    // answers with its ServerHello.
    expect_server_hello(&mut tcp).await;
    drop(tcp);
    let ev = gw.wait_access(|e| e.client == client).await;
    assert_eq!(ev.tls.as_ref().map(|t| t.ech), Some(true), "{ev:#?}");
    assert_eq!(ev.sni.as_deref(), Some("allowed.test"), "{ev:#?}");
    assert!(ev.tls.as_ref().is_some_and(|t| t.alpn == ["h2"]), "{ev:#?}");
    assert_eq!(ev.upstream, Some(http.addr()), "{ev:#?}");
    assert_decided(&ev, Action::Allow, Some(("allow allowed.test", 1)));

    // Without the extension the log says so.
    let mut tcp = tunnel(gw.connect_addr(), "allowed.test:443").await;
    let client = tcp.local_addr().unwrap();
    tcp.write_all(&ClientHello::new("allowed.test").to_bytes()).await.unwrap();
    expect_server_hello(&mut tcp).await;
    drop(tcp);
    let ev = gw.wait_access(|e| e.client == client).await;
    assert_eq!(ev.tls.as_ref().map(|t| t.ech), Some(false), "{ev:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_server_names_are_refused() {
    let (_ca, _http, echo, gw) = setup("").await;
    let cases: [(&str, Vec<Vec<u8>>); 4] = [
        ("two host_name entries", vec![b"echo.test".to_vec(), b"evil.test".to_vec()]),
        ("the same name twice", vec![b"echo.test".to_vec(), b"echo.test".to_vec()]),
        ("a non-ASCII name", vec!["éch0.test".as_bytes().to_vec()]),
        ("a NUL inside the name", vec![b"echo.test\0.evil.test".to_vec()]),
    ];
    let mut events = Vec::new();
    for (what, names) in cases {
        let (client, closed) = send_in_tunnel(&gw, "echo.test:443", &ClientHello::with_names(names).to_bytes()).await;
        assert!(
            closed.bytes.is_empty() || closed.bytes == ALERT_ACCESS_DENIED,
            "{what}: expected an access_denied alert or a close, got {closed:?}"
        );
        let ev = gw.wait_access(|e| e.client == client).await;
        assert_eq!(ev.outcome, Outcome::MalformedClientHello, "{what}: {ev:#?}");
        events.push(ev);
    }
    assert_eq!(echo.bytes_received(), 0, "bytes reached the upstream");
    events.iter().for_each(assert_logged_deny);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_that_disagrees_with_the_connect_host_gets_access_denied() {
    let (ca, _http, echo, gw) = setup("").await;

    // Raw: exactly the alert, then the end.
    let (client, closed) = send_in_tunnel(&gw, "echo.test:443", &ClientHello::new("other.test").to_bytes()).await;
    assert_eq!(closed.bytes, ALERT_ACCESS_DENIED, "{closed:?}");
    let ev = gw.wait_access(|e| e.client == client).await;
    assert_eq!(ev.outcome, Outcome::Mismatch, "{ev:#?}");
    assert_eq!(ev.sni.as_deref(), Some("other.test"), "{ev:#?}");
    assert_eq!(dst(&ev).as_deref(), Some("echo.test:443"), "{ev:#?}");

    // A real client: the handshake fails on the alert. The SNI names an allowed host too: a
    // tunnel to one allowed name cannot be used for another.
    let tcp = tunnel(gw.connect_addr(), "echo.test:443").await;
    let client = tcp.local_addr().unwrap();
    let err = tls_handshake(tcp, "allowed.test", ca.client_config()).await.map(|_| ()).unwrap_err();
    assert!(format!("{err:?}").contains("AccessDenied"), "{err:?}");
    let ev2 = gw.wait_access(|e| e.client == client).await;
    assert_eq!(ev2.outcome, Outcome::Mismatch, "{ev2:#?}");

    assert_eq!(echo.bytes_received(), 0, "the echo upstream saw bytes");
    assert_eq!(echo.handshakes(), 0);
    assert_logged_deny(&ev);
    assert_logged_deny(&ev2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_comparison_ignores_case() {
    let (ca, _http, _echo, gw) = setup("").await;
    let tcp = tunnel(gw.connect_addr(), "Allowed.TEST:443").await;
    let client = tcp.local_addr().unwrap();
    let tls = tls_handshake(tcp, "allowed.test", ca.client_config()).await.unwrap();
    assert_eq!(get(tls, "/case").await, "upstream=A sni=allowed.test path=/case");
    let ev = gw.wait_access(|e| e.client == client).await;
    assert_eq!(ev.outcome, Outcome::Ok, "{ev:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_name_that_resolves_to_loopback_is_ssrf() {
    let ca = TestCa::new();
    let up = TlsUpstream::start(&ca, &["allowed.test"], "A").await;
    // No `allow_private`: 127.0.0.1 is inside.
    let gw = TestGateway::start(RULES, &pins(&[("allowed.test", up.addr())])).await;
    let (tcp, response) = connect_tunnel(gw.connect_addr(), "allowed.test:443").await;
    assert_eq!(response.status, 403, "{response:?}");
    support::http::assert_reason_token(&response);
    let ev = gw.wait_access(|e| e.client == tcp.local_addr().unwrap()).await;
    assert_eq!(ev.outcome, Outcome::Ssrf, "{ev:#?}");
    assert_eq!(ev.upstream, None, "{ev:#?}");
    assert_eq!(up.accepted(), 0, "the gateway connected to loopback");
    assert_logged_deny(&ev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_closed_after_the_sniff_timeout() {
    let (_ca, _http, echo, gw) = setup("[sniff]\ntimeout = \"300ms\"\n").await;
    let mut tcp = tunnel(gw.connect_addr(), "echo.test:443").await;
    let client = tcp.local_addr().unwrap();
    let start = Instant::now();
    let closed = read_until_closed(&mut tcp, Duration::from_secs(10)).await;
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(250), "closed after {waited:?}, before the timeout");
    assert!(waited < Duration::from_secs(5), "closed after {waited:?}");
    assert_alert_or_nothing(&closed);
    let ev = gw.wait_access(|e| e.client == client).await;
    assert_eq!(ev.outcome, Outcome::Timeout, "{ev:#?}");
    assert_eq!(echo.bytes_received(), 0);
    assert_logged_deny(&ev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_neither_tls_nor_http_get_the_default_action() {
    let (_ca, _http, echo, gw) = setup("").await;
    let junk: Vec<u8> = [0x00, 0xff, 0x13, 0x37].iter().copied().cycle().take(64).collect();
    let (client, closed) = send_in_tunnel(&gw, "echo.test:443", &junk).await;
    assert_alert_or_nothing(&closed);
    let ev = gw.wait_access(|e| e.client == client).await;
    assert_eq!(ev.outcome, Outcome::UnknownProtocol, "{ev:#?}");
    assert_eq!(ev.protocol, Protocol::Unknown, "{ev:#?}");
    assert_eq!(echo.bytes_received(), 0, "unknown bytes reached the upstream");
    // The default decided: no rule may be named.
    assert_decided(&ev, Action::Deny, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_was_not_redirected_is_closed() {
    let (_ca, _http, echo, gw) = setup("").await;
    let mut tcp = TcpStream::connect(gw.transparent_addr()).await.unwrap();
    let client = tcp.local_addr().unwrap();
    // A hello naming an allowed, pinned name: even so, nothing may go anywhere.
    let _ = tcp.write_all(&ClientHello::new("echo.test").to_bytes()).await;
    let closed = read_until_closed(&mut tcp, Duration::from_secs(10)).await;
    assert_alert_or_nothing(&closed);
    let ev = gw.wait_access(|e| e.client == client).await;
    assert_eq!(ev.outcome, Outcome::NotRedirected, "{ev:#?}");
    assert_eq!(ev.listener.kind, ListenerKind::Transparent, "{ev:#?}");
    assert_eq!(ev.upstream, None, "{ev:#?}");
    assert_eq!(echo.accepted(), 0);
}

/// `[sniff] ech`: a real Encrypted ClientHello (the extension, with a listed provider's public
/// name outside) under each setting, and GREASE ECH (the extension with the site's own name, as
/// browsers send it when they have no ECH configuration), which no setting treats as ECH.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ech_policy_tells_real_ech_from_grease() {
    let ca = TestCa::new();
    let up = TlsUpstream::start(&ca, &["allowed.test"], "A").await;
    for mode in ["decide-outer", "deny", "report"] {
        let config = format!(
            "{LOCAL_UPSTREAM}{}\n[sniff]\nech = \"{mode}\"\nech_public_names = [\"Public.Example\"]\n",
            pins(&[("allowed.test", up.addr()), ("public.example", up.addr())])
        );
        let gw = TestGateway::start("allow allowed.test\nallow public.example\n", &config).await;

        // GREASE: the extension under the name the client wants. Relayed whatever the setting.
        let mut tcp = tunnel(gw.connect_addr(), "allowed.test:443").await;
        let client = tcp.local_addr().unwrap();
        tcp.write_all(&ClientHello::new("allowed.test").ech().to_bytes()).await.unwrap();
        expect_server_hello(&mut tcp).await;
        drop(tcp);
        let ev = gw.wait_access(|e| e.client == client).await;
        let tls = ev.tls.as_ref().unwrap();
        assert_eq!((tls.ech, tls.ech_real, ev.would_deny), (true, false, false), "{mode}: {ev:#?}");
        assert_eq!(ev.action, Some(Action::Allow), "{mode}: {ev:#?}");

        // Real ECH: the provider's public name outside.
        let hello = ClientHello::new("public.example").ech().to_bytes();
        let client = if mode == "deny" {
            let (client, closed) = send_in_tunnel(&gw, "public.example:443", &hello).await;
            assert_eq!(closed.bytes, ALERT_ACCESS_DENIED, "{closed:?}");
            client
        } else {
            let mut tcp = tunnel(gw.connect_addr(), "public.example:443").await;
            let client = tcp.local_addr().unwrap();
            tcp.write_all(&hello).await.unwrap();
            expect_server_hello(&mut tcp).await;
            client
        };
        let ev = gw.wait_access(|e| e.client == client).await;
        let tls = ev.tls.as_ref().unwrap();
        assert_eq!((tls.ech, tls.ech_real), (true, true), "{mode}: {ev:#?}");
        if mode == "deny" {
            assert_eq!((ev.action, ev.outcome), (Some(Action::Deny), Outcome::Denied), "{ev:#?}");
            assert!(ev.detail.as_deref().unwrap_or("").contains("[sniff] ech = \"deny\""), "{ev:#?}");
        } else {
            assert_eq!(ev.action, Some(Action::Allow), "{mode}: {ev:#?}");
            assert_eq!(ev.would_deny, mode == "report", "{mode}: {ev:#?}");
        }
        gw.shutdown().await;
    }
}
