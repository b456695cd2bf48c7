//! `[upstream] parent`: the gateway chains through a parent proxy (here a second hostgate, with
//! proxy authentication) with `CONNECT`, for tunnels and plain HTTP alike. The parent's own
//! refusal and an unreachable parent are clear outcomes (`parent-refused`,
//! `parent-unreachable`, `502` to the client); the credentials are sent, and never logged; a
//! name pinned in `[resolve]` goes straight to its server. A client group (by address, or by who
//! signs in) can choose a parent of its own, or `"direct"`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use hostgate_proxy::outcome::Outcome;
use hostgate_proxy::policy::Action;
use support::http::read_connect_answer;
use support::tools::{curl, describe, run, stdout};
use support::{pins, HttpConn, HttpUpstream, TestCa, TestGateway, TlsUpstream, LOCAL_UPSTREAM};
use tokio::io::AsyncWriteExt;

const PARENT_RULES: &str = "allow allowed.test\nallow plain.test\ndeny denied.test\n";
const CHILD_RULES: &str = "allow allowed.test\nallow plain.test\nallow denied.test\nallow local.test\n";

async fn child(parent_url: &str, pinned: &str) -> TestGateway {
    let extra = format!(
        "[upstream]\nallow_private = [\"127.0.0.0/8\"]\nconnect_timeout = \"3s\"\nparent = \"{parent_url}\"\n{pinned}"
    );
    TestGateway::start_with(&[("connect", "127.0.0.1:0")], CHILD_RULES, &extra).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_chains_through_a_parent_proxy() {
    let ca = TestCa::new();
    let tls = TlsUpstream::start(&ca, &["allowed.test", "local.test"], "A").await;
    let http = HttpUpstream::start("P").await;
    // The parent: a hostgate that asks for credentials for what it allows.
    let hash = bcrypt::hash("parent-pw", 4).unwrap();
    let parent = TestGateway::start_files(
        &[("connect", "127.0.0.1:0")],
        "[policy]\ndefault = \"deny\"\n[[policy.source]]\npath = \"test.rules\"\n",
        &[("test.rules", PARENT_RULES), ("users.htpasswd", &format!("child:{hash}\n"))],
        &format!(
            "{LOCAL_UPSTREAM}{}\n[auth]\nhtpasswd = \"users.htpasswd\"\n",
            pins(&[("allowed.test", tls.addr()), ("plain.test", http.addr()), ("denied.test", tls.addr())])
        ),
    )
    .await;
    let p = parent.connect_addr();
    let gw = child(&format!("http://child:parent-pw@{p}"), &pins(&[("local.test", tls.addr())])).await;
    let proxy = format!("http://{}", gw.connect_addr());
    let ca_path = ca.ca_pem_path().to_str().unwrap();

    // A tunnel through the parent: the parent decides again, and sees the child's user.
    let o = curl(&["-x", &proxy, "--cacert", ca_path, "https://allowed.test/x"]).await;
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(stdout(&o), "upstream=A sni=allowed.test path=/x");
    let ev = gw.wait_access(|e| e.sni.as_deref() == Some("allowed.test")).await;
    assert_eq!((ev.outcome, ev.upstream), (Outcome::Ok, Some(p)), "the child's upstream is the parent: {ev:#?}");
    let pev = parent.wait_access(|e| e.sni.as_deref() == Some("allowed.test")).await;
    assert_eq!(
        (pev.user.as_deref(), pev.action, pev.upstream),
        (Some("child"), Some(Action::Allow), Some(tls.addr())),
        "{pev:#?}"
    );

    // Plain HTTP goes through the parent too (a CONNECT to port 80).
    let mut c = HttpConn::connect(gw.connect_addr()).await;
    let r = c.request("GET http://plain.test/p HTTP/1.1\r\nHost: plain.test\r\n\r\n").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(http.received()[0].target, "/p");
    let pev = parent.wait_access(|e| e.host.as_deref() == Some("plain.test") && e.path.as_deref() == Some("/p")).await;
    assert_eq!(pev.action, Some(Action::Allow), "{pev:#?}");

    // The child allows denied.test; the parent does not: parent-refused, 502 to the client.
    let mut tcp = tokio::net::TcpStream::connect(gw.connect_addr()).await.unwrap();
    tcp.write_all(b"CONNECT denied.test:443 HTTP/1.1\r\nHost: denied.test:443\r\n\r\n").await.unwrap();
    let r = read_connect_answer(&mut tcp, "denied.test:443").await;
    assert_eq!((r.status, r.header("x-hostgate-reason")), (502, Some("parent-refused")), "{r:?}");
    let ev = gw.wait_access(|e| e.host.as_deref() == Some("denied.test")).await;
    assert_eq!(ev.outcome, Outcome::ParentRefused, "{ev:#?}");
    assert!(ev.detail.as_deref().unwrap_or("").contains("answered CONNECT denied.test:443 with 403"), "{ev:#?}");

    // A pinned name is a local server: straight there, the parent never asked.
    let before = parent.access_events(|_| true).len();
    let o = curl(&["-x", &proxy, "--cacert", ca_path, "--resolve", "local.test:443:127.0.0.1", "https://local.test/l"])
        .await;
    assert!(o.status.success(), "{}", describe(&o));
    let ev = gw.wait_access(|e| e.sni.as_deref() == Some("local.test")).await;
    assert_eq!(ev.upstream, Some(tls.addr()), "{ev:#?}");
    assert_eq!(parent.access_events(|_| true).len(), before, "the parent saw nothing");

    // Wrong credentials: the parent's 407 is the child's parent-refused; the password is never
    // in the child's records.
    let wrong = child(&format!("http://child:wrong-secret@{p}"), "").await;
    let o =
        curl(&["-x", &format!("http://{}", wrong.connect_addr()), "--cacert", ca_path, "https://allowed.test/"]).await;
    assert!(!o.status.success() && describe(&o).contains("502"), "{}", describe(&o));
    let ev = wrong.wait_access(|e| e.host.as_deref() == Some("allowed.test")).await;
    assert_eq!(ev.outcome, Outcome::ParentRefused, "{ev:#?}");
    assert!(ev.detail.as_deref().unwrap_or("").contains("407"), "{ev:#?}");
    assert!(!format!("{ev:?}").contains("wrong-secret"), "the password leaked: {ev:#?}");

    // An unreachable parent (nothing listens there).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let gone = child(&format!("http://{closed}"), "").await;
    let o =
        curl(&["-x", &format!("http://{}", gone.connect_addr()), "--cacert", ca_path, "https://allowed.test/"]).await;
    assert!(!o.status.success() && describe(&o).contains("502"), "{}", describe(&o));
    let ev = gone.wait_access(|e| e.host.as_deref() == Some("allowed.test")).await;
    assert_eq!(ev.outcome, Outcome::ParentUnreachable, "{ev:#?}");
    let m = gone.metrics();
    assert!(m.contains("outcome=\"parent-unreachable\""), "{m}");

    for g in [gw, wrong, gone, parent] {
        g.shutdown().await;
    }
}

#[tokio::test]
async fn a_bad_parent_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.rules"), "allow a.test\n").unwrap();
    let config = dir.path().join("hostgate.toml");
    for (upstream, want) in [
        ("parent = \"https://p:3128\"", "upstream.parent: must be http://"),
        ("parent = \"http://p\"", "upstream.parent: `p` is not host:port"),
        ("parent = \"http://user@p:3128\"", "upstream.parent: credentials must be user:password"),
        ("parent = \"http://p:3128\"\nverify_destination = \"original-in-dns\"", "verify_destination must be \"name\""),
        (
            "[[client]]\nname = \"g\"\nnetworks = [\"10.0.0.0/8\"]\nsources = [\"a.rules\"]\nparent = \"https://p:3128\"",
            "hostgate.toml:10:10: client.parent",
        ),
        (
            "[[client]]\nname = \"g\"\nnetworks = [\"10.0.0.0/8\"]\nsources = [\"a.rules\"]\nparent = \"https://p:3128\"",
            "client.parent: must be http://",
        ),
    ] {
        std::fs::write(
            &config,
            format!("[policy]\ndefault = \"deny\"\n[[policy.source]]\npath = \"a.rules\"\n[upstream]\n{upstream}\n"),
        )
        .unwrap();
        let o = run(env!("CARGO_BIN_EXE_hostgate"), &["check", "--config", config.to_str().unwrap()], None).await;
        assert!(!o.status.success() && support::tools::stderr(&o).contains(want), "{upstream}: {}", describe(&o));
    }
}

/// `[[client]] parent`: a client group chooses its own parent, or `"direct"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_group_chooses_its_own_parent_or_none() {
    let ca = TestCa::new();
    let tls = TlsUpstream::start(&ca, &["allowed.test"], "A").await;
    let parent_rules = "allow allowed.test\n";
    let start_parent = || {
        let pinned = pins(&[("allowed.test", tls.addr())]);
        async move {
            TestGateway::start_with(&[("connect", "127.0.0.1:0")], parent_rules, &format!("{LOCAL_UPSTREAM}{pinned}"))
                .await
        }
    };
    let (pa, pb) = (start_parent().await, start_parent().await);
    let up = tls.addr();
    let policy = "[policy]\ndefault = \"deny\"\n[[policy.source]]\npath = \"test.rules\"\n\n\
                  [[client]]\nname = \"via-b\"\nnetworks = [\"127.0.0.2/32\"]\nsources = [\"test.rules\"]\n";
    let direct = format!(
        "{policy}parent = \"http://{}\"\n\n[[client]]\nname = \"direct\"\nnetworks = [\"127.0.0.3/32\"]\nsources = [\"test.rules\"]\nparent = \"direct\"\n",
        pb.connect_addr()
    );
    let rules = format!("allow allowed.test\nallow {}\n", up.ip());
    let gw = TestGateway::start_files(
        &[("connect", "127.0.0.1:0")],
        &direct,
        &[("test.rules", &rules)],
        &format!("[upstream]\nallow_private = [\"127.0.0.0/8\"]\nparent = \"http://{}\"\n", pa.connect_addr()),
    )
    .await;
    let proxy = format!("http://{}", gw.connect_addr());
    let ca_path = ca.ca_pem_path().to_str().unwrap();
    let via = |from: &'static str, url: String| {
        let proxy = proxy.clone();
        async move { curl(&["--interface", from, "-x", &proxy, "--cacert", ca_path, "-k", &url]).await }
    };

    // Clients in no group: the global parent A.
    let o = via("127.0.0.1", "https://allowed.test/a".to_string()).await;
    assert!(o.status.success(), "{}", describe(&o));
    pa.wait_access(|e| e.sni.as_deref() == Some("allowed.test")).await;
    let ev = gw.wait_access(|e| e.client.ip().to_string() == "127.0.0.1").await;
    assert_eq!(ev.upstream, Some(pa.connect_addr()), "{ev:#?}");
    // The group `via-b`: parent B, A never asked.
    let o = via("127.0.0.2", "https://allowed.test/b".to_string()).await;
    assert!(o.status.success(), "{}", describe(&o));
    pb.wait_access(|e| e.sni.as_deref() == Some("allowed.test")).await;
    let ev = gw.wait_access(|e| e.client.ip().to_string() == "127.0.0.2").await;
    assert_eq!(ev.upstream, Some(pb.connect_addr()), "{ev:#?}");
    assert_eq!(pa.access_events(|e| e.sni.as_deref() == Some("allowed.test")).len(), 1, "A saw only the first");
    // The group `direct`: the upstream by its address (an address rule allows it), no parent;
    // through A the same request is refused, since A allows no such address.
    let literal = format!("https://{up}/d");
    let o = via("127.0.0.3", literal.clone()).await;
    assert!(o.status.success(), "{}", describe(&o));
    // (curl sends no SNI to an address literal, so the event is found by its client.)
    let ev = gw.wait_access(|e| e.client.ip().to_string() == "127.0.0.3").await;
    assert_eq!((ev.upstream, ev.outcome), (Some(up), Outcome::Ok), "{ev:#?}");
    let o = via("127.0.0.1", literal).await;
    assert!(!o.status.success(), "{}", describe(&o));
    let ev = gw.wait_access(|e| e.outcome == Outcome::ParentRefused).await;
    assert_eq!(ev.client.ip().to_string(), "127.0.0.1", "{ev:#?}");
    for g in [gw, pa, pb] {
        g.shutdown().await;
    }
}

/// A group chosen by who signs in chooses the parent per request: on one kept-alive client
/// connection, a request by a user in no group goes through the global parent and the next, by a
/// user of a group with its own parent, through that one (the kept upstream is not reused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_users_group_chooses_the_parent_per_request() {
    let http = HttpUpstream::start("P").await;
    let extra = format!("{LOCAL_UPSTREAM}{}", pins(&[("plain.test", http.addr())]));
    let parent = || TestGateway::start_with(&[("connect", "127.0.0.1:0")], "allow plain.test\n", &extra);
    let (pa, pb) = (parent().await, parent().await);
    let users = format!("alice:{}\nbob:{}\n", bcrypt::hash("alice-pw", 4).unwrap(), bcrypt::hash("bob-pw", 4).unwrap());
    let gw = TestGateway::start_files(
        &[("connect", "127.0.0.1:0")],
        &format!(
            "[policy]\ndefault = \"deny\"\n[[policy.source]]\npath = \"test.rules\"\n\n\
             [[client]]\nname = \"via-b\"\nusers = [\"alice\"]\nsources = [\"test.rules\"]\nparent = \"http://{}\"\n",
            pb.connect_addr()
        ),
        &[("test.rules", "allow plain.test\n"), ("users.htpasswd", &users)],
        &format!(
            "[upstream]\nallow_private = [\"127.0.0.0/8\"]\nparent = \"http://{}\"\n[auth]\nhtpasswd = \"users.htpasswd\"\n",
            pa.connect_addr()
        ),
    )
    .await;
    use base64::Engine as _;
    let basic = |u: &str| base64::engine::general_purpose::STANDARD.encode(u);
    let mut c = HttpConn::connect(gw.connect_addr()).await;
    for (who, path) in [("bob:bob-pw", "/bob"), ("alice:alice-pw", "/alice"), ("bob:bob-pw", "/bob-again")] {
        let r = c
            .request(&format!(
                "GET http://plain.test{path} HTTP/1.1\r\nHost: plain.test\r\nProxy-Authorization: Basic {}\r\n\r\n",
                basic(who)
            ))
            .await;
        assert_eq!(r.status, 200, "{who}: {r:?}");
    }
    let paths = |g: &TestGateway| {
        g.access_events(|e| e.host.as_deref() == Some("plain.test"))
            .iter()
            .filter_map(|e| e.path.clone())
            .collect::<Vec<_>>()
    };
    pb.wait_access(|e| e.path.as_deref() == Some("/alice")).await;
    pa.wait_access(|e| e.path.as_deref() == Some("/bob-again")).await;
    assert_eq!(paths(&pa), ["/bob", "/bob-again"], "the global parent: bob's requests only");
    assert_eq!(paths(&pb), ["/alice"], "the group's parent: alice's request only");
    let ev = gw.wait_access(|e| e.path.as_deref() == Some("/alice")).await;
    assert_eq!(
        (ev.user.as_deref(), ev.client_group.as_deref(), ev.upstream),
        (Some("alice"), Some("via-b"), Some(pb.connect_addr())),
        "{ev:#?}"
    );
    for g in [gw, pa, pb] {
        g.shutdown().await;
    }
}
