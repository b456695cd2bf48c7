//! Proxy authentication (`[auth]`, htpasswd) on the explicit proxy, with curl (`-x`,
//! `--proxy-user`) and raw requests: `407` with `Proxy-Authenticate` for an allowed name without
//! or with bad credentials, `200` with good ones (bcrypt and SHA-512-crypt), a bypass name
//! tunnelled without credentials, a denied name `403` without a prompt, plain HTTP requests
//! alike (and `Proxy-Authorization` never reaches the upstream), a user who selects a client
//! group, a group by address that needs none, the throttle after repeated failures, a reload
//! that re-reads the htpasswd file, a bad htpasswd file refused at start and on reload, and the
//! metrics and access-log fields.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::net::SocketAddr;

use base64::Engine as _;
use hostgate_proxy::outcome::Outcome;
use hostgate_proxy::policy::Action;
use support::gateway::metric;
use support::http::read_connect_answer;
use support::tools::{curl, describe, run, stdout};
use support::{pins, HttpConn, HttpUpstream, TestCa, TestGateway, TlsUpstream, LOCAL_UPSTREAM};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// `test.rules`; `staff.rules` applies to the `staff` group only.
const RULES: &str = "allow allowed.test\nbypass bypassed.test\ndeny denied.test\nallow plain.test\n";
const STAFF_RULES: &str = "allow staffonly.test\n";

fn policy(extra_clients: &str) -> String {
    format!(
        "[policy]\ndefault = \"deny\"\nungrouped_sources = [\"test.rules\"]\n\
         [[policy.source]]\npath = \"test.rules\"\n[[policy.source]]\npath = \"staff.rules\"\n\n\
         [[client]]\nname = \"staff\"\nusers = [\"bob\"]\nsources = [\"test.rules\", \"staff.rules\"]\n\n{extra_clients}"
    )
}

/// `alice` (bcrypt) and `bob` (SHA-512-crypt, made by `openssl passwd -6`).
async fn htpasswd(alice: &str, bob: &str) -> String {
    let a = bcrypt::hash(alice, 4).unwrap().replacen("$2b$", "$2y$", 1);
    let o = run("openssl", &["passwd", "-6", "-salt", "hostgatesalt", bob], None).await;
    assert!(o.status.success(), "{}", describe(&o));
    format!("# test users\nalice:{a}\nbob:{}\n", stdout(&o).trim())
}

struct Setup {
    gw: TestGateway,
    ca: TestCa,
    http: HttpUpstream,
    _tls: TlsUpstream,
}

async fn setup(auth: &str, extra_clients: &str) -> Setup {
    let ca = TestCa::new();
    let tls = TlsUpstream::start(&ca, &["allowed.test", "bypassed.test", "staffonly.test"], "A").await;
    let http = HttpUpstream::start("P").await;
    let users = htpasswd("alice-pw", "bob-pw").await;
    let extra = format!(
        "{LOCAL_UPSTREAM}{}\n[auth]\nhtpasswd = \"users.htpasswd\"\nrealm = \"Contoso egress\"\n{auth}\n",
        pins(&[
            ("allowed.test", tls.addr()),
            ("bypassed.test", tls.addr()),
            ("staffonly.test", tls.addr()),
            ("plain.test", http.addr())
        ])
    );
    let gw = TestGateway::start_files(
        &[("connect", "127.0.0.1:0")],
        &policy(extra_clients),
        &[("test.rules", RULES), ("staff.rules", STAFF_RULES), ("users.htpasswd", &users)],
        &extra,
    )
    .await;
    Setup { gw, ca, http, _tls: tls }
}

impl Setup {
    fn proxy(&self) -> String {
        format!("http://{}", self.gw.connect_addr())
    }

    /// curl through the proxy to `url`, with `user:password` when given.
    async fn curl(&self, url: &str, creds: Option<&str>) -> std::process::Output {
        let proxy = self.proxy();
        let mut args = vec!["-x", proxy.as_str(), "--cacert", self.ca.ca_pem_path().to_str().unwrap()];
        if let Some(c) = creds {
            args.extend(["--proxy-user", c]);
        }
        args.push(url);
        curl(&args).await
    }
}

/// A raw `CONNECT authority` with `extra` header lines; the answer.
async fn raw_connect(proxy: SocketAddr, authority: &str, extra: &str) -> support::Response {
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{extra}\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    read_connect_answer(&mut tcp, authority).await
}

fn basic(creds: &str) -> String {
    format!("Proxy-Authorization: Basic {}\r\n", base64::engine::general_purpose::STANDARD.encode(creds))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_names_need_credentials_bypass_and_deny_never_ask() {
    let s = setup("", "").await;
    let proxy = s.gw.connect_addr();

    // No credentials: 407 with the challenge, and the access log says why.
    let r = raw_connect(proxy, "allowed.test:443", "").await;
    assert_eq!(r.status, 407, "{r:?}");
    assert_eq!(r.header("proxy-authenticate"), Some("Basic realm=\"Contoso egress\", charset=\"UTF-8\""), "{r:?}");
    let ev = s.gw.wait_access(|e| e.host.as_deref() == Some("allowed.test")).await;
    assert_eq!((ev.outcome, ev.status, ev.user.as_deref()), (Outcome::AuthRequired, Some(407), None), "{ev:#?}");
    assert_eq!(ev.detail.as_deref(), Some("no credentials"), "{ev:#?}");
    let o = s.curl("https://allowed.test/x", None).await;
    assert!(!o.status.success() && describe(&o).contains("407"), "{}", describe(&o));

    // Good credentials, bcrypt (alice) and SHA-512-crypt (bob): the upstream answers.
    let o = s.curl("https://allowed.test/x", Some("alice:alice-pw")).await;
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(stdout(&o), "upstream=A sni=allowed.test path=/x");
    let ev = s.gw.wait_access(|e| e.sni.as_deref() == Some("allowed.test") && e.user.is_some()).await;
    assert_eq!(
        (ev.user.as_deref(), ev.outcome, ev.action),
        (Some("alice"), Outcome::Ok, Some(Action::Allow)),
        "{ev:#?}"
    );
    let o = s.curl("https://allowed.test/y", Some("bob:bob-pw")).await;
    assert!(o.status.success(), "{}", describe(&o));

    // Bad credentials: 407 again.
    let o = s.curl("https://allowed.test/x", Some("alice:wrong")).await;
    assert!(!o.status.success() && describe(&o).contains("407"), "{}", describe(&o));
    let r = raw_connect(proxy, "allowed.test:443", &basic("nobody:alice-pw")).await;
    assert_eq!(r.status, 407, "{r:?}");

    // A bypass name: tunnelled without credentials, nobody asked.
    let o = s.curl("https://bypassed.test/b", None).await;
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(stdout(&o), "upstream=A sni=bypassed.test path=/b");
    let ev = s.gw.wait_access(|e| e.sni.as_deref() == Some("bypassed.test")).await;
    assert_eq!((ev.action, ev.user.as_deref(), ev.outcome), (Some(Action::Bypass), None, Outcome::Ok), "{ev:#?}");

    // A denied name: 403, no challenge, with or without credentials.
    for extra in [String::new(), basic("alice:alice-pw")] {
        let r = raw_connect(proxy, "denied.test:443", &extra).await;
        assert_eq!((r.status, r.header("proxy-authenticate")), (403, None), "{r:?}");
    }

    // Plain HTTP (absolute-form): the same rules, and the credentials never go upstream.
    let mut c = HttpConn::connect(proxy).await;
    let r = c.request("GET http://plain.test/p HTTP/1.1\r\nHost: plain.test\r\n\r\n").await;
    assert_eq!(r.status, 407, "{r:?}");
    assert!(r.header("proxy-authenticate").is_some(), "{r:?}");
    let r = c
        .request(&format!("GET http://plain.test/q HTTP/1.1\r\nHost: plain.test\r\n{}\r\n", basic("alice:alice-pw")))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let got = s.http.received();
    assert_eq!(got.len(), 1, "only the signed-in request reached the upstream: {got:?}");
    assert_eq!((got[0].target.as_str(), got[0].header("proxy-authorization")), ("/q", None), "{got:?}");
    let ev = s.gw.wait_access(|e| e.path.as_deref() == Some("/q")).await;
    assert_eq!(ev.user.as_deref(), Some("alice"), "{ev:#?}");

    let m = s.gw.metrics();
    assert!(metric(&m, "hostgate_auth_total{result=\"ok\"}").unwrap() >= 3.0, "{m}");
    assert!(metric(&m, "hostgate_auth_total{result=\"missing\"}").unwrap() >= 3.0, "{m}");
    assert!(metric(&m, "hostgate_auth_total{result=\"bad\"}").unwrap() >= 2.0, "{m}");
    assert_eq!(metric(&m, "hostgate_auth_total{result=\"throttled\"}"), Some(0.0), "{m}");
    s.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_selects_a_group_and_a_group_by_address_may_need_none() {
    // 127.0.0.2 is a server network whose group needs no credentials.
    let servers =
        "[[client]]\nname = \"servers\"\nnetworks = [\"127.0.0.2/32\"]\nsources = [\"test.rules\"]\nauth = \"none\"\n";
    let s = setup("", servers).await;
    let proxy = s.gw.connect_addr();
    // bob is in `staff` whatever his address: staffonly.test is his; alice (no group) is denied.
    let o = s.curl("https://staffonly.test/s", Some("bob:bob-pw")).await;
    assert!(o.status.success(), "{}", describe(&o));
    let ev = s.gw.wait_access(|e| e.sni.as_deref() == Some("staffonly.test")).await;
    assert_eq!((ev.user.as_deref(), ev.client_group.as_deref()), (Some("bob"), Some("staff")), "{ev:#?}");
    let r = raw_connect(proxy, "staffonly.test:443", &basic("alice:alice-pw")).await;
    assert_eq!(r.status, 403, "{r:?}");
    // Without credentials: the address's group denies it, but a user could sign in into a group
    // that allows it, so the client is asked (a name no group allows is a plain 403, above).
    let r = raw_connect(proxy, "staffonly.test:443", "").await;
    assert_eq!(r.status, 407, "{r:?}");
    // From 127.0.0.2: allowed without credentials.
    let o = curl(&[
        "--interface",
        "127.0.0.2",
        "-x",
        &s.proxy(),
        "--cacert",
        s.ca.ca_pem_path().to_str().unwrap(),
        "https://allowed.test/srv",
    ])
    .await;
    assert!(o.status.success(), "{}", describe(&o));
    let ev =
        s.gw.wait_access(|e| e.path.is_none() && e.client.ip().to_string() == "127.0.0.2" && e.sni.is_some()).await;
    assert_eq!((ev.client_group.as_deref(), ev.user.as_deref()), (Some("servers"), None), "{ev:#?}");
    s.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_throttle_the_address() {
    let s = setup("throttle_failures = 3\nthrottle_window = \"1m\"\n", "").await;
    let proxy = s.gw.connect_addr();
    for i in 0..3 {
        let r = raw_connect(proxy, "allowed.test:443", &basic(&format!("alice:guess{i}"))).await;
        assert_eq!(r.status, 407, "attempt {i}: {r:?}");
    }
    // The fourth is refused without a check, even with the right password.
    let r = raw_connect(proxy, "allowed.test:443", &basic("alice:alice-pw")).await;
    assert_eq!((r.status, r.header("proxy-authenticate")), (429, None), "{r:?}");
    let ev = s.gw.wait_access(|e| e.outcome == Outcome::AuthThrottled).await;
    assert_eq!(ev.status, Some(429), "{ev:#?}");
    // Bypass traffic from the same address still flows.
    let o = s.curl("https://bypassed.test/b", None).await;
    assert!(o.status.success(), "{}", describe(&o));
    let m = s.gw.metrics();
    assert_eq!(metric(&m, "hostgate_auth_total{result=\"bad\"}"), Some(3.0), "{m}");
    assert_eq!(metric(&m, "hostgate_auth_total{result=\"throttled\"}"), Some(1.0), "{m}");
    s.gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_rereads_the_htpasswd_file_and_a_bad_one_is_refused() {
    let s = setup("", "").await;
    let proxy = s.gw.connect_addr();
    assert_eq!(raw_connect(proxy, "allowed.test:443", &basic("alice:alice-pw")).await.status, 200);
    let file = s.gw.config_dir().join("users.htpasswd");
    std::fs::write(&file, htpasswd("new-pw", "bob-pw").await).unwrap();
    s.gw.gateway().reload().await.unwrap();
    assert_eq!(raw_connect(proxy, "allowed.test:443", &basic("alice:alice-pw")).await.status, 407, "old password");
    assert_eq!(raw_connect(proxy, "allowed.test:443", &basic("alice:new-pw")).await.status, 200, "new password");
    // A weak hash is a load error naming the line; the running policy keeps the good file.
    std::fs::write(&file, "alice:$apr1$x$y\n").unwrap();
    let err = s.gw.gateway().reload().await.unwrap_err().to_string();
    assert!(err.contains("users.htpasswd:1: user `alice`: Apache MD5 ($apr1$) is not accepted"), "{err}");
    assert_eq!(raw_connect(proxy, "allowed.test:443", &basic("alice:new-pw")).await.status, 200, "still the good file");
    s.gw.shutdown().await;
}

#[tokio::test]
async fn a_bad_auth_section_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.rules"), "allow a.test\n").unwrap();
    let config = dir.path().join("hostgate.toml");
    let base = "[[listener]]\nkind = \"connect\"\naddress = \"127.0.0.1:0\"\n[policy]\ndefault = \"deny\"\n[[policy.source]]\npath = \"a.rules\"\n";
    for (auth, want) in [
        ("[auth]\n", "hostgate.toml:8:1: auth: no backend"),
        ("[auth]\nhtpasswd = \"missing.htpasswd\"\n", "missing.htpasswd: cannot read the htpasswd file"),
        (
            "[auth]\nhtpasswd = \"u\"\n[auth.ldap]\nurl = \"ldap://x\"\nuser_dn = \"uid={user}\"\n",
            "auth: htpasswd and [auth.ldap] both set",
        ),
        ("[auth.ldap]\nurl = \"http://x\"\nuser_dn = \"uid={user}\"\n", "auth.ldap.url: `http://x` is not ldap://"),
        (
            "[auth.ldap]\nurl = \"ldap://x\"\nuser_dn = \"uid=alice\"\n",
            "auth.ldap.user_dn: `uid=alice` has no `{user}`",
        ),
    ] {
        std::fs::write(&config, format!("{base}{auth}")).unwrap();
        let o = run(env!("CARGO_BIN_EXE_hostgate"), &["check", "--config", config.to_str().unwrap()], None).await;
        assert!(!o.status.success(), "{auth}");
        assert!(support::tools::stderr(&o).contains(want), "{auth}: {}", describe(&o));
    }
}
