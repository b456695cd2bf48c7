//! `[upstream] parent`: the gateway chains through a parent proxy (here a second hostgate, with
//! proxy authentication) with `CONNECT`, for tunnels and plain HTTP alike. The parent's own
//! refusal and an unreachable parent are clear outcomes (`parent-refused`,
//! `parent-unreachable`, `502` to the client); the credentials are sent, and never logged; a
//! name pinned in `[resolve]` goes straight to its server.
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
