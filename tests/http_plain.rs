//! Plain HTTP through the connect listener (absolute-form requests): path rules, a Host header
//! that disagrees with the request URI, hop-by-hop headers, request bodies, upstream failures,
//! and the `x-hostgate-reason` header never carrying client bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::time::{Duration, Instant};

use hostgate_proxy::access::Protocol;
use hostgate_proxy::outcome::Outcome;
use hostgate_proxy::policy::Action;
use hyper::Method;
use support::http::{assert_reason_token, get_absolute};
use support::upstream::{saw_headers, Refusing};
use support::{
    assert_decided, assert_logged_deny, assert_rule, dst, pins, Blackhole, HttpConn, HttpUpstream, TestGateway,
    LOCAL_UPSTREAM,
};

const RULES: &str = "\
allow http://site.test/api/
allow refused.test
allow slow.test
deny denied.test
";

/// An HTTP upstream pinned for `site.test`, a refusing address for `refused.test`, and the
/// gateway.
async fn setup() -> (HttpUpstream, Refusing, TestGateway) {
    let h = HttpUpstream::start("H").await;
    let refusing = Refusing::new();
    let config = format!("{LOCAL_UPSTREAM}{}", pins(&[("site.test", h.addr()), ("refused.test", refusing.addr())]));
    let gw = TestGateway::start(RULES, &config).await;
    (h, refusing, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_rules_decide_each_request() {
    let (h, _refusing, gw) = setup().await;
    let mut conn = HttpConn::connect(gw.connect_addr()).await;

    let r = conn.request(&get_absolute("site.test", "/api/x?y=1", "site.test")).await;
    assert_eq!(r.status, 200, "{r:?}");
    // The upstream got the origin form of the request target.
    assert_eq!(r.text(), "upstream=H host=site.test path=/api/x?y=1 method=GET");

    let r = conn.request(&get_absolute("site.test", "/other", "site.test")).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.header("x-hostgate-reason"), Some("denied"), "{r:?}");

    // `/api/` is a prefix at a segment boundary: `/apix` is not under it.
    let r = conn.request(&get_absolute("site.test", "/apix", "site.test")).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(h.count(), 1);

    let ok = gw.wait_access(|e| e.path.as_deref() == Some("/api/x?y=1")).await;
    assert_decided(&ok, Action::Allow, Some(("allow http://site.test/api/", 1)));
    assert_eq!(ok.outcome, Outcome::Ok, "{ok:#?}");
    assert_eq!(ok.protocol, Protocol::Http, "{ok:#?}");
    assert_eq!(dst(&ok).as_deref(), Some("site.test"), "the URI authority: {ok:#?}");
    assert_eq!(ok.status, Some(200), "{ok:#?}");
    assert_eq!(ok.upstream, Some(h.addr()), "{ok:#?}");
    assert!(ok.bytes_down > 0, "{ok:#?}");
    let denied = gw.wait_access(|e| e.path.as_deref() == Some("/other")).await;
    assert_decided(&denied, Action::Deny, None);
    assert_eq!(denied.outcome, Outcome::Denied, "{denied:#?}");
    assert_eq!(denied.status, Some(403), "{denied:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_header_must_agree_with_the_uri() {
    let (h, _refusing, gw) = setup().await;
    let mut conn = HttpConn::connect(gw.connect_addr()).await;
    // The URI names an allowed site, the Host header another: whichever the upstream would
    // trust, one of them was not decided.
    let r = conn.request(&get_absolute("site.test", "/api/x", "denied.test")).await;
    assert!(r.status == 400 || r.status == 403, "{r:?}");
    assert_reason_token(&r);
    let ev = gw.wait_access(|e| e.client == conn.local_addr()).await;
    assert_eq!(ev.outcome, Outcome::Mismatch, "{ev:#?}");
    assert_eq!(ev.method, Some(Method::GET), "{ev:#?}");
    assert_eq!(ev.status, Some(r.status), "{ev:#?}");
    assert_eq!(h.count(), 0, "the request reached the upstream");
    assert_logged_deny(&ev);

    // A port in one and not the other is a disagreement too.
    let mut conn = HttpConn::connect(gw.connect_addr()).await;
    let r = conn.request(&get_absolute("site.test:8080", "/api/port", "site.test")).await;
    assert!(r.status == 400 || r.status == 403, "{r:?}");
    let ev2 = gw.wait_access(|e| e.client == conn.local_addr()).await;
    assert_eq!(ev2.outcome, Outcome::Mismatch, "{ev2:#?}");
    assert_eq!(h.count(), 0, "the request reached the upstream");

    // What the log must also say: the request's path is known, and it was refused.
    assert_eq!(ev.path.as_deref(), Some("/api/x"), "{ev:#?}");
    assert_eq!(ev2.path.as_deref(), Some("/api/port"), "{ev2:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_not_forwarded() {
    let (h, _refusing, gw) = setup().await;
    let mut conn = HttpConn::connect(gw.connect_addr()).await;
    let r = conn
        .request(
            "GET http://site.test/api/hop HTTP/1.1\r\n\
             Host: site.test\r\n\
             Connection: keep-alive, X-Drop-Me\r\n\
             X-Drop-Me: 1\r\n\
             Proxy-Connection: keep-alive\r\n\
             Proxy-Authorization: Basic dXNlcjpwYXNz\r\n\
             Keep-Alive: timeout=5\r\n\
             X-Keep-Me: 1\r\n\
             \r\n",
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let saw = saw_headers(r.header("x-upstream-saw-headers").unwrap());
    for gone in ["x-drop-me", "proxy-connection", "proxy-authorization", "keep-alive"] {
        assert!(!saw.contains(gone), "{gone} was forwarded: {saw:?}");
    }
    assert!(saw.contains("x-keep-me") && saw.contains("host"), "{saw:?}");
    let received = h.received();
    assert_eq!(received[0].target, "/api/hop", "not origin-form upstream");
    assert_eq!(received[0].header("host"), Some("site.test"));
    assert!(received[0].header("connection").is_none_or(|v| !v.to_ascii_lowercase().contains("x-drop-me")));

    // And the connection is still usable.
    let r = conn.request(&get_absolute("site.test", "/api/again", "site.test")).await;
    assert_eq!(r.text(), "upstream=H host=site.test path=/api/again method=GET");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_are_forwarded() {
    let (h, _refusing, gw) = setup().await;
    let mut conn = HttpConn::connect(gw.connect_addr()).await;
    let r = conn
        .request("POST http://site.test/api/post HTTP/1.1\r\nHost: site.test\r\nContent-Length: 11\r\n\r\nhello world")
        .await;
    assert_eq!(r.text(), "upstream=H host=site.test path=/api/post method=POST");
    let r = conn
        .request(
            "PUT http://site.test/api/chunked HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        )
        .await;
    assert_eq!(r.text(), "upstream=H host=site.test path=/api/chunked method=PUT");
    let received = h.received();
    assert_eq!(received[0].body, b"hello world");
    assert_eq!(received[1].body, b"hello world");
    let ev = gw.wait_access(|e| e.path.as_deref() == Some("/api/post")).await;
    assert_eq!(ev.method, Some(Method::POST), "{ev:#?}");
    assert!(ev.bytes_up >= 11, "{ev:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_upstream_is_502() {
    let (_h, _refusing, gw) = setup().await;
    let mut conn = HttpConn::connect(gw.connect_addr()).await;
    let r = conn.request(&get_absolute("refused.test", "/r", "refused.test")).await;
    assert_eq!(r.status, 502, "{r:?}");
    assert_reason_token(&r);
    let ev = gw.wait_access(|e| e.path.as_deref() == Some("/r")).await;
    assert_rule(&ev, "allow refused.test", 2);
    assert_eq!(ev.outcome, Outcome::UpstreamRefused, "{ev:#?}");
    assert_eq!(ev.status, Some(502), "{ev:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_is_504() {
    let hole = Blackhole::start().await;
    let config = format!(
        "[upstream]\nallow_private = [\"127.0.0.0/8\"]\nconnect_timeout = \"500ms\"\n{}",
        pins(&[("slow.test", hole.addr())])
    );
    let gw = TestGateway::start(RULES, &config).await;
    let mut conn = HttpConn::connect(gw.connect_addr()).await;
    let start = Instant::now();
    let r = conn.request(&get_absolute("slow.test", "/s", "slow.test")).await;
    assert_eq!(r.status, 504, "{r:?}");
    assert!(start.elapsed() >= Duration::from_millis(400), "answered after {:?}", start.elapsed());
    let ev = gw.wait_access(|e| e.path.as_deref() == Some("/s")).await;
    assert_eq!(ev.outcome, Outcome::UpstreamTimeout, "{ev:#?}");
    assert_eq!(ev.status, Some(504), "{ev:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reason_header_never_carries_client_bytes() {
    let (h, _refusing, gw) = setup().await;
    let odd = "<script>alert(1)</script>\"';%0d%0aSet-Cookie:x=1";
    let requests = [
        // A Host header of odd characters that disagrees with the URI.
        format!("GET http://site.test/api/a HTTP/1.1\r\nHost: {odd}\r\n\r\n"),
        // The odd characters in the URI's host.
        format!("GET http://{}/api/b HTTP/1.1\r\nHost: site.test\r\n\r\n", "evil%3Cscript%3E.test"),
        // A denied name with a long odd label, in both places.
        "GET http://x-----evil-----payload.denied.test/c HTTP/1.1\r\nHost: x-----evil-----payload.denied.test\r\n\r\n"
            .to_string(),
        "GET http://denied.test/d HTTP/1.1\r\nHost: denied.test\r\n\r\n".to_string(),
        // Origin form with an odd Host: not a proxy request.
        format!("GET /e HTTP/1.1\r\nHost: {odd}\r\n\r\n"),
        // Non-ASCII bytes in Host.
        "GET http://site.test/api/f HTTP/1.1\r\nHost: s\u{e9}te.test\r\n\r\n".to_string(),
    ];
    let mut with_reason = 0;
    for raw in &requests {
        let mut conn = HttpConn::connect(gw.connect_addr()).await;
        conn.send(raw.as_bytes()).await;
        let Ok(r) = conn.read_response().await else { continue };
        assert!(r.status >= 400, "{raw:?} got {r:?}");
        assert_reason_token(&r);
        let head: String = r.headers.iter().map(|(n, v)| format!("{n}: {v}\n")).collect();
        for needle in ["script", "evil", "payload", "Set-Cookie", "x=1"] {
            assert!(!head.contains(needle), "{raw:?}: the response head carries client bytes: {head}");
        }
        with_reason += usize::from(r.header("x-hostgate-reason").is_some());
    }
    assert!(with_reason >= 2, "only {with_reason} responses carried x-hostgate-reason");
    assert_eq!(h.count(), 0, "a refused request reached the upstream");
}
