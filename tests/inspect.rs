#![allow(clippy::unwrap_used, clippy::expect_used)]
//! TLS inspection end to end: `allow` is terminated with a leaf certificate from hostgate's CA
//! and every request inside is decided; `bypass` is spliced (the client sees the upstream's own
//! certificate); `deny` is refused. curl and rustls/hyper clients, through the CONNECT
//! listener; the transparent listener in a network namespace is at the end.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use hostgate_proxy::access::{Inspection, Protocol};
use hostgate_proxy::config::ListenerKind;
use hostgate_proxy::outcome::Outcome;
use hostgate_proxy::policy::Action;
use http_body_util::{BodyExt, Empty};
use hyper::{Method, Request};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use support::http::{connect_tunnel, read_until_closed, tls_handshake, tunnel};
use support::tools::{curl, describe, stderr, stdout};
use support::upstream::HttpsUpstream;
use support::{pins, Netns, TestCa, TestGateway, TlsUpstream, LOCAL_UPSTREAM};
use tempfile::TempDir;

const RULES: &str = "\
allow inspected.test
bypass bypassed.test
deny denied.test
allow https://paths.test/ncsi.txt
allow explicit.test
allow admin.test
deny https://admin.test/admin
";

const NAMES: &[&str] = &[
    "inspected.test",
    "bypassed.test",
    "denied.test",
    "paths.test",
    "explicit.test",
    "other.test",
    "untrusted.test",
    "admin.test",
];

/// hostgate's inspection CA, made by `ca::init` in a temporary directory.
struct InspectionCa {
    dir: TempDir,
}

impl InspectionCa {
    fn new() -> InspectionCa {
        let dir = tempfile::tempdir().unwrap();
        let opts = hostgate_proxy::inspect::ca::InitOptions::default();
        hostgate_proxy::inspect::ca::init(dir.path(), &opts).unwrap();
        InspectionCa { dir }
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("hostgate-ca.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("hostgate-ca.key")
    }

    /// A rustls client trusting only this CA, offering `alpn`.
    fn client(&self, alpn: &[&[u8]]) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(self.cert()).unwrap()).unwrap();
        let mut c = ClientConfig::builder_with_provider(support::ca::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        c
    }
}

/// The `[inspect]` section for `ca`, trusting `upstream_ca` for upstream certificates.
fn inspect_toml(ca: &InspectionCa, upstream_ca: &Path, extra: &str) -> String {
    format!(
        "[inspect]\nca_cert = \"{}\"\nca_key = \"{}\"\nsystem_roots = false\nextra_roots = [\"{}\"]\n{extra}\n",
        ca.cert().display(),
        ca.key().display(),
        upstream_ca.display()
    )
}

struct Setup {
    ca: InspectionCa,
    upstream_ca: TestCa,
    up: HttpsUpstream,
    gw: TestGateway,
}

/// A gateway inspecting with a fresh CA, in front of one HTTPS upstream (offering `alpn`) that
/// holds a certificate for every test name; `inspect_extra` goes into `[inspect]`.
async fn setup(alpn: &[&[u8]], inspect_extra: &str) -> Setup {
    let ca = InspectionCa::new();
    let upstream_ca = TestCa::new();
    let up = HttpsUpstream::start(&upstream_ca, NAMES, "U", alpn).await;
    let pinned = pins(&NAMES.iter().map(|n| (*n, up.addr())).collect::<Vec<_>>());
    let toml = format!("{LOCAL_UPSTREAM}{pinned}{}", inspect_toml(&ca, upstream_ca.ca_pem_path(), inspect_extra));
    let gw = TestGateway::start(RULES, &toml).await;
    Setup { ca, upstream_ca, up, gw }
}

impl Setup {
    fn proxy(&self) -> String {
        format!("http://{}", self.gw.connect_addr())
    }

    /// curl through the CONNECT listener trusting `cacert`, with `-w` printing the status.
    async fn curl(&self, url: &str, cacert: &Path, extra: &[&str]) -> std::process::Output {
        let proxy = self.proxy();
        let cacert = cacert.to_str().unwrap();
        let mut args = vec!["--proxy", &proxy, "--cacert", cacert, "-w", "\n%{http_code}", "-v"];
        args.extend_from_slice(extra);
        args.push(url);
        curl(&args).await
    }
}

/// The issuer curl reports for the server certificate (`-v`).
fn issuer(out: &std::process::Output) -> String {
    stderr(out).lines().find_map(|l| l.split_once("issuer:").map(|(_, i)| i.trim().to_string())).unwrap_or_default()
}

/// The status curl printed last (`-w "\n%{http_code}"`) and the body before it.
fn status_and_body(out: &std::process::Output) -> (String, String) {
    let text = stdout(out);
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.to_string(), body.to_string())
}

#[tokio::test]
async fn allow_is_inspected_bypass_is_spliced_deny_is_refused() {
    let s = setup(&[b"h2", b"http/1.1"], "").await;

    // allow: a certificate from hostgate's CA, for the name.
    let out = s.curl("https://inspected.test/hello", &s.ca.cert(), &[]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(issuer(&out).contains("hostgate inspection CA"), "issuer {:?}: {}", issuer(&out), describe(&out));
    let (status, body) = status_and_body(&out);
    assert_eq!(status, "200");
    assert!(body.starts_with("upstream=U "), "{body}");
    assert!(body.contains("authority=inspected.test"), "{body}");
    assert!(body.contains("path=/hello"), "{body}");
    let conn = s.gw.wait_access(|e| e.sni.as_deref() == Some("inspected.test") && e.protocol == Protocol::Tls).await;
    assert_eq!(conn.inspection, Some(Inspection::Inspected), "{conn:?}");
    assert_eq!(conn.requests, Some(1), "{conn:?}");
    assert_eq!(conn.outcome, Outcome::Ok, "{conn:?}");
    let req = s.gw.wait_access(|e| e.protocol == Protocol::Https && e.path.as_deref() == Some("/hello")).await;
    assert_eq!(req.host.as_deref(), Some("inspected.test"), "{req:?}");
    assert_eq!(req.method, Some(Method::GET), "{req:?}");
    assert_eq!(req.status, Some(200), "{req:?}");
    assert_eq!(req.action, Some(Action::Allow), "{req:?}");
    assert_eq!(req.bytes_down, body.len() as u64, "{req:?}");

    // The inspection CA alone does not verify a bypassed name: it was not terminated.
    let out = s.curl("https://bypassed.test/", &s.ca.cert(), &[]).await;
    assert!(!out.status.success(), "bypass verified with the inspection CA: {}", describe(&out));
    // ... while the upstream's own CA does, and the issuer is the upstream's.
    let out = s.curl("https://bypassed.test/", s.upstream_ca.ca_pem_path(), &[]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(issuer(&out).contains("hostgate test CA"), "issuer {:?}", issuer(&out));
    let ev = s.gw.wait_access(|e| e.sni.as_deref() == Some("bypassed.test") && e.outcome == Outcome::Ok).await;
    assert_eq!(ev.inspection, Some(Inspection::Bypass), "{ev:?}");
    assert_eq!(ev.action, Some(Action::Bypass), "{ev:?}");

    // deny: the CONNECT is refused.
    let out = s.curl("https://denied.test/", &s.ca.cert(), &[]).await;
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(stderr(&out).contains("403"), "{}", describe(&out));
    assert_eq!(s.up.seen().iter().filter(|r| r.sni == "denied.test").count(), 0);
}

#[tokio::test]
async fn http2_and_http1_inside_the_inspected_tunnel_and_path_rules() {
    let s = setup(&[b"h2", b"http/1.1"], "").await;
    for (flag, version) in [("--http2", "HTTP/2.0"), ("--http1.1", "HTTP/1.1")] {
        let out = s.curl("https://paths.test/ncsi.txt", &s.ca.cert(), &[flag]).await;
        let (status, body) = status_and_body(&out);
        assert_eq!(status, "200", "{flag}: {}", describe(&out));
        assert!(body.contains(&format!("version={version}")), "{flag}: {body}");
        assert!(body.contains("path=/ncsi.txt"), "{flag}: {body}");

        let out = s.curl("https://paths.test/other", &s.ca.cert(), &[flag, "-i"]).await;
        let (status, body) = status_and_body(&out);
        assert_eq!(status, "403", "{flag}: {}", describe(&out));
        assert!(body.to_ascii_lowercase().contains("x-hostgate-reason: denied"), "{flag}: {body}");
    }
    // A deny rule with a path does not deny the whole name when the path can be seen: only
    // that path is refused.
    let out = s.curl("https://admin.test/", &s.ca.cert(), &[]).await;
    assert_eq!(status_and_body(&out).0, "200", "{}", describe(&out));
    let out = s.curl("https://admin.test/admin/users", &s.ca.cert(), &[]).await;
    assert_eq!(status_and_body(&out).0, "403", "{}", describe(&out));
    // The upstream never saw the denied paths.
    let seen = s.up.seen();
    assert!(seen.iter().all(|r| r.path != "/other" && !r.path.starts_with("/admin")), "{seen:?}");
    assert_eq!(seen.iter().filter(|r| r.path == "/ncsi.txt").count(), 2, "{seen:?}");
    let denied = s.gw.wait_access(|e| e.path.as_deref() == Some("/other") && e.status == Some(403)).await;
    assert_eq!(denied.outcome, Outcome::Denied, "{denied:?}");
    assert_eq!(denied.protocol, Protocol::Https, "{denied:?}");
    // The connection-level decision said the path rule could not be checked yet; the requests
    // were each decided with their path.
    assert_eq!(seen.iter().filter(|r| r.sni == "paths.test" && r.version == "HTTP/2.0").count(), 1, "{seen:?}");
}

/// A request inside an inspected tunnel, over a client connection the test holds.
enum Client {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Client {
    async fn open(s: &Setup, name: &str, alpn: &[u8]) -> Client {
        let tcp = tunnel(s.gw.connect_addr(), &format!("{name}:443")).await;
        let tls = tls_handshake(tcp, name, s.ca.client(&[alpn])).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
        let io = TokioIo::new(tls);
        if alpn == b"h2" {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.unwrap();
            tokio::spawn(conn);
            Client::H2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            Client::H1(sender)
        }
    }

    /// GET `path` naming `host`; the status, `x-hostgate-reason` and body.
    async fn get(&mut self, host: &str, path: &str) -> (u16, String, String) {
        let res = match self {
            Client::H1(s) => {
                let req = Request::get(path).header("host", host).body(Empty::new()).unwrap();
                s.send_request(req).await.unwrap()
            }
            Client::H2(s) => {
                let req = Request::get(format!("https://{host}{path}")).body(Empty::new()).unwrap();
                s.send_request(req).await.unwrap()
            }
        };
        let status = res.status().as_u16();
        let reason =
            res.headers().get("x-hostgate-reason").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        let body = String::from_utf8_lossy(&res.into_body().collect().await.unwrap().to_bytes()).into_owned();
        (status, reason, body)
    }
}

#[tokio::test]
async fn another_host_inside_the_tunnel_is_domain_fronting() {
    let s = setup(&[b"h2", b"http/1.1"], "").await;
    for alpn in [&b"h2"[..], b"http/1.1"] {
        let mut c = Client::open(&s, "inspected.test", alpn).await;
        let (status, _, body) = c.get("inspected.test", "/first").await;
        assert_eq!(status, 200, "{body}");
        // other.test has no rule: fronting it over inspected.test is refused.
        let (status, reason, _) = c.get("other.test", "/second").await;
        assert_eq!((status, reason.as_str()), (403, "fronting"));
        // bypassed.test is only allowed uninspected; denied.test not at all.
        let (status, reason, _) = c.get("denied.test", "/third").await;
        assert_eq!((status, reason.as_str()), (403, "fronting"));
        // explicit.test is allowed by a rule of its own: carried, on the same connection.
        let (status, _, body) = c.get("explicit.test", "/fourth").await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("sni=inspected.test") && body.contains("authority=explicit.test"), "{body}");
    }
    let seen = s.up.seen();
    assert!(seen.iter().all(|r| r.authority != "other.test" && r.authority != "denied.test"), "{seen:?}");
    let ev = s.gw.wait_access(|e| e.outcome == Outcome::Fronting && e.host.as_deref() == Some("other.test")).await;
    assert_eq!(ev.sni.as_deref(), Some("inspected.test"), "{ev:?}");
    assert!(ev.detail.as_deref().is_some_and(|d| d.contains("domain fronting")), "{ev:?}");
}

#[tokio::test]
async fn an_untrusted_upstream_certificate_gets_a_502_naming_the_reason() {
    let ca = InspectionCa::new();
    let trusted = TestCa::new();
    let untrusted = TestCa::new();
    let up = HttpsUpstream::start(&untrusted, &["inspected.test"], "U", &[b"http/1.1"]).await;
    let toml = format!(
        "{LOCAL_UPSTREAM}{}{}",
        pins(&[("inspected.test", up.addr())]),
        inspect_toml(&ca, trusted.ca_pem_path(), "")
    );
    let gw = TestGateway::start(RULES, &toml).await;
    let proxy = format!("http://{}", gw.connect_addr());
    let cacert = ca.cert();
    let out = curl(&[
        "--proxy",
        &proxy,
        "--cacert",
        cacert.to_str().unwrap(),
        "-i",
        "-w",
        "\n%{http_code}",
        "https://inspected.test/",
    ])
    .await;
    let (status, body) = status_and_body(&out);
    assert_eq!(status, "502", "{}", describe(&out));
    assert!(body.to_ascii_lowercase().contains("x-hostgate-reason: upstream-certificate"), "{body}");
    // Both test CAs have one subject name: webpki finds the wrong issuer's signature bad.
    assert!(body.contains("invalid peer certificate: BadSignature"), "the page names the reason: {body}");
    assert!(up.seen().is_empty(), "no request may reach an unverified upstream");
    let req = gw.wait_access(|e| e.protocol == Protocol::Https && e.status == Some(502)).await;
    assert_eq!(req.outcome, Outcome::UpstreamCertificate, "{req:?}");
    let conn = gw.wait_access(|e| e.protocol == Protocol::Tls && e.inspection == Some(Inspection::Inspected)).await;
    assert_eq!(conn.outcome, Outcome::UpstreamCertificate, "{conn:?}");
}

/// `hostgate_inspect_certificates_total{result}` in the gateway's metrics.
fn certificates(gw: &TestGateway, result: &str) -> u64 {
    let needle = format!("hostgate_inspect_certificates_total{{result=\"{result}\"}} ");
    gw.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&needle).map(|v| v.trim().parse::<u64>().unwrap()))
        .unwrap_or_else(|| panic!("no {needle} in the metrics"))
}

#[tokio::test]
async fn one_name_is_minted_once_even_when_asked_for_concurrently() {
    let s = setup(&[b"http/1.1"], "").await;
    for _ in 0..2 {
        let mut c = Client::open(&s, "inspected.test", b"http/1.1").await;
        assert_eq!(c.get("inspected.test", "/").await.0, 200);
    }
    assert_eq!((certificates(&s.gw, "minted"), certificates(&s.gw, "cached")), (1, 1));

    // Eight first connections for a new name at once: one mint, seven waits.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (proxy, config) = (s.gw.connect_addr(), s.ca.client(&[b"http/1.1"]));
            tokio::spawn(async move {
                let tcp = tunnel(proxy, "explicit.test:443").await;
                let tls = tls_handshake(tcp, "explicit.test", config).await.unwrap();
                let cert = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
                cert.as_ref().to_vec()
            })
        })
        .collect();
    let mut certs = Vec::new();
    for t in tasks {
        certs.push(t.await.unwrap());
    }
    assert!(certs.windows(2).all(|w| w[0] == w[1]), "every connection got the same leaf");
    assert_eq!((certificates(&s.gw, "minted"), certificates(&s.gw, "cached")), (2, 8));
}

#[tokio::test]
async fn responses_and_request_bodies_stream_through_inspection() {
    let s = setup(&[b"h2", b"http/1.1"], "").await;
    for flag in ["--http2", "--http1.1"] {
        let out = s
            .curl(
                "https://inspected.test/big/4194304",
                &s.ca.cert(),
                &[flag, "-o", "/dev/null", "-w", "%{size_download}"],
            )
            .await;
        assert!(stdout(&out).ends_with("4194304200") || stdout(&out).contains("4194304"), "{flag}: {}", describe(&out));
    }
    // A POST body goes up and comes back.
    let body = "x".repeat(300_000);
    let proxy = s.proxy();
    let cacert = s.ca.cert();
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), &body).unwrap();
    let data = format!("@{}", tmp.path().display());
    let out = curl(&[
        "--proxy",
        &proxy,
        "--cacert",
        cacert.to_str().unwrap(),
        "--data-binary",
        &data,
        "https://inspected.test/echo",
    ])
    .await;
    assert_eq!(stdout(&out).len(), body.len(), "{}", describe(&out).chars().take(300).collect::<String>());
    let ev = s.gw.wait_access(|e| e.path.as_deref() == Some("/echo") && e.status == Some(200)).await;
    assert_eq!(ev.bytes_up, 300_000, "{ev:?}");
    assert_eq!(ev.bytes_down, 300_000, "{ev:?}");
}

#[tokio::test]
async fn with_inspection_off_allow_is_spliced_and_the_log_says_so() {
    let upstream_ca = TestCa::new();
    let up = HttpsUpstream::start(&upstream_ca, NAMES, "U", &[b"http/1.1"]).await;
    let toml = format!("{LOCAL_UPSTREAM}{}", pins(&[("inspected.test", up.addr())]));
    let gw = TestGateway::start(RULES, &toml).await;
    let proxy = format!("http://{}", gw.connect_addr());
    let out = curl(&[
        "--proxy",
        &proxy,
        "--cacert",
        upstream_ca.ca_pem_path().to_str().unwrap(),
        "-v",
        "https://inspected.test/",
    ])
    .await;
    assert!(out.status.success(), "{}", describe(&out));
    assert!(issuer(&out).contains("hostgate test CA"), "{}", issuer(&out));
    let ev = gw.wait_access(|e| e.sni.as_deref() == Some("inspected.test")).await;
    assert_eq!(ev.inspection, Some(Inspection::Off), "{ev:?}");
    assert_eq!(ev.action, Some(Action::Allow), "{ev:?}");
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_is_logged_as_such() {
    let s = setup(&[b"http/1.1"], "").await;
    let tcp = tunnel(s.gw.connect_addr(), "inspected.test:443").await;
    // The client trusts only the upstream's CA: it rejects the minted leaf.
    let err = tls_handshake(tcp, "inspected.test", s.upstream_ca.client_config()).await.unwrap_err();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    let ev = s.gw.wait_access(|e| e.sni.as_deref() == Some("inspected.test") && e.protocol == Protocol::Tls).await;
    assert_eq!(ev.outcome, Outcome::ClientError, "{ev:?}");
    assert!(ev.detail.as_deref().is_some_and(|d| d.contains("is the inspection CA installed")), "{ev:?}");
}

#[tokio::test]
async fn non_http_alpn_is_denied_by_default_and_relayed_when_configured() {
    // Default: an ALPN without HTTP is refused before any handshake.
    let s = setup(&[b"http/1.1"], "").await;
    let tcp = tunnel(s.gw.connect_addr(), "inspected.test:443").await;
    let err = tls_handshake(tcp, "inspected.test", s.ca.client(&[b"imap"])).await.unwrap_err();
    assert!(err.to_string().to_lowercase().contains("accessdenied"), "{err}");
    let ev = s.gw.wait_access(|e| e.sni.as_deref() == Some("inspected.test") && e.protocol == Protocol::Tls).await;
    assert_eq!(ev.outcome, Outcome::UnknownProtocol, "{ev:?}");

    // non_http = "relay": spliced, so the client sees the upstream's certificate.
    let ca = InspectionCa::new();
    let upstream_ca = TestCa::new();
    let echo = TlsUpstream::start_echo(&upstream_ca, &["inspected.test"], "E").await;
    let toml = format!(
        "{LOCAL_UPSTREAM}{}{}",
        pins(&[("inspected.test", echo.addr())]),
        inspect_toml(&ca, upstream_ca.ca_pem_path(), "non_http = \"relay\"")
    );
    let gw = TestGateway::start(RULES, &toml).await;
    let tcp = tunnel(gw.connect_addr(), "inspected.test:443").await;
    let mut config = upstream_ca.client_config();
    config.alpn_protocols = vec![b"imap".to_vec()];
    let mut tls = tls_handshake(tcp, "inspected.test", config).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(b"a1 CAPABILITY\r\n").await.unwrap();
    let mut back = [0u8; 15];
    tls.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"a1 CAPABILITY\r\n");
    drop(tls);
    let ev = gw.wait_access(|e| e.sni.as_deref() == Some("inspected.test")).await;
    assert_eq!(ev.inspection, Some(Inspection::NonHttp), "{ev:?}");
}

#[tokio::test]
async fn without_alpn_bytes_that_are_not_http_are_refused_or_relayed_inside() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream_ca = TestCa::new();
    let echo = TlsUpstream::start_echo(&upstream_ca, &["inspected.test"], "E").await;
    for (mode, relayed) in [("deny", false), ("relay", true)] {
        let ca = InspectionCa::new();
        let toml = format!(
            "{LOCAL_UPSTREAM}{}{}",
            pins(&[("inspected.test", echo.addr())]),
            inspect_toml(&ca, upstream_ca.ca_pem_path(), &format!("non_http = \"{mode}\""))
        );
        let gw = TestGateway::start(RULES, &toml).await;
        let tcp = tunnel(gw.connect_addr(), "inspected.test:443").await;
        // No ALPN: terminated (the client sees hostgate's leaf), then the bytes decide.
        let mut tls = tls_handshake(tcp, "inspected.test", ca.client(&[])).await.unwrap();
        tls.write_all(b"\x00\x01binary hello\r\n").await.unwrap();
        if relayed {
            let mut back = [0u8; 16];
            tls.read_exact(&mut back).await.unwrap();
            assert_eq!(&back, b"\x00\x01binary hello\r\n");
            drop(tls);
            let ev = gw.wait_access(|e| e.sni.as_deref() == Some("inspected.test")).await;
            assert_eq!(ev.inspection, Some(Inspection::InspectedRelay), "{ev:?}");
        } else {
            let closed = read_until_closed(&mut tls, Duration::from_secs(5)).await;
            assert!(closed.bytes.is_empty(), "{closed:?}");
            let ev = gw.wait_access(|e| e.sni.as_deref() == Some("inspected.test")).await;
            assert_eq!(ev.outcome, Outcome::UnknownProtocol, "{ev:?}");
        }
    }
}

#[tokio::test]
async fn a_denied_name_never_reaches_a_handshake() {
    let s = setup(&[b"http/1.1"], "").await;
    let (_tcp, response) = connect_tunnel(s.gw.connect_addr(), "denied.test:443").await;
    assert_eq!(response.status, 403);
    assert_eq!(s.up.handshakes(), 0);
    assert_eq!(certificates(&s.gw, "minted"), 0);
}

#[tokio::test]
async fn a_bad_ca_is_a_start_error_naming_the_file() {
    let ca = InspectionCa::new();
    let upstream_ca = TestCa::new();
    std::fs::write(ca.key(), "not a key").unwrap();
    let toml = format!("{LOCAL_UPSTREAM}{}", inspect_toml(&ca, upstream_ca.ca_pem_path(), ""));
    let err = TestGateway::try_start(&[("connect", "127.0.0.1:0")], RULES, &toml).await.err().unwrap();
    assert!(err.contains(ca.key().to_str().unwrap()), "{err}");
}

// ---- The transparent listener, in a network namespace -------------------------------------

#[tokio::test]
async fn transparent_inspection_in_a_namespace() {
    let Some(ns) = Netns::create("inspect") else { return };
    let ca = InspectionCa::new();
    let upstream_ca = TestCa::new();
    let up = HttpsUpstream::start(&upstream_ca, NAMES, "U", &[b"h2", b"http/1.1"]).await;
    let pinned = pins(&NAMES.iter().map(|n| (*n, up.addr())).collect::<Vec<_>>());
    let toml = format!("{LOCAL_UPSTREAM}{pinned}{}", inspect_toml(&ca, upstream_ca.ca_pem_path(), ""));
    let gw = TestGateway::start_with(&[("transparent", &ns.listener_address())], RULES, &toml).await;
    ns.redirect_iptables(443, gw.transparent_addr().port());
    let run = |name: &'static str, cacert: PathBuf, path: &'static str| {
        let resolve = format!("{name}:443:192.0.2.10");
        let url = format!("https://{name}{path}");
        let ns = &ns;
        async move {
            let cacert = cacert.to_str().unwrap().to_string();
            let args = [
                "curl",
                "-sS",
                "-v",
                "--max-time",
                "10",
                "--noproxy",
                "*",
                "--resolve",
                &resolve,
                "--cacert",
                &cacert,
                "-w",
                "\n%{http_code}",
                &url,
            ];
            ns.exec_async(&args, Duration::from_secs(20)).await
        }
    };
    let out = run("inspected.test", ca.cert(), "/t").await;
    assert_eq!(status_and_body(&out).0, "200", "{}", describe(&out));
    assert!(issuer(&out).contains("hostgate inspection CA"), "{}", issuer(&out));
    let out = run("paths.test", ca.cert(), "/other").await;
    assert_eq!(status_and_body(&out).0, "403", "{}", describe(&out));
    let out = run("bypassed.test", upstream_ca.ca_pem_path().to_path_buf(), "/b").await;
    assert_eq!(status_and_body(&out).0, "200", "{}", describe(&out));
    assert!(issuer(&out).contains("hostgate test CA"), "{}", issuer(&out));
    let out = run("denied.test", ca.cert(), "/").await;
    assert!(!out.status.success(), "{}", describe(&out));
    let ev = gw.wait_access(|e| e.sni.as_deref() == Some("inspected.test") && e.protocol == Protocol::Tls).await;
    assert_eq!(ev.inspection, Some(Inspection::Inspected), "{ev:?}");
    assert_eq!(ev.listener.kind, ListenerKind::Transparent, "{ev:?}");
}

#[tokio::test]
async fn reloads_keep_the_certificate_cache_refuse_a_broken_ca_and_take_a_new_one() {
    let s = setup(&[b"http/1.1"], "").await;
    let gw = s.gw.gateway();
    let get = |config: ClientConfig| {
        let proxy = s.gw.connect_addr();
        async move {
            let tcp = tunnel(proxy, "inspected.test:443").await;
            tls_handshake(tcp, "inspected.test", config).await.map(|_| ())
        }
    };
    get(s.ca.client(&[b"http/1.1"])).await.unwrap();
    assert_eq!(certificates(&s.gw, "minted"), 1);

    // Same CA: the cache survives the reload.
    gw.reload().await.unwrap();
    get(s.ca.client(&[b"http/1.1"])).await.unwrap();
    assert_eq!((certificates(&s.gw, "minted"), certificates(&s.gw, "cached")), (1, 1));

    // A broken key: the reload fails, naming the file, and the old CA keeps serving.
    let good_key = std::fs::read(s.ca.key()).unwrap();
    std::fs::write(s.ca.key(), "garbage").unwrap();
    let generation = gw.generation();
    let err = gw.reload().await.unwrap_err().to_string();
    assert!(err.contains(s.ca.key().to_str().unwrap()), "{err}");
    assert_eq!(gw.generation(), generation);
    get(s.ca.client(&[b"http/1.1"])).await.unwrap();
    std::fs::write(s.ca.key(), good_key).unwrap();

    // A new CA in the same files: new leaves come from it; clients of the old one refuse them.
    let old_client = s.ca.client(&[b"http/1.1"]);
    let opts = hostgate_proxy::inspect::ca::InitOptions { force: true, ..Default::default() };
    hostgate_proxy::inspect::ca::init(s.ca.dir.path(), &opts).unwrap();
    gw.reload().await.unwrap();
    let err = get(old_client).await.unwrap_err();
    assert!(err.to_string().contains("invalid peer certificate"), "{err}");
    get(s.ca.client(&[b"http/1.1"])).await.unwrap();
    assert_eq!(certificates(&s.gw, "minted"), 2);

    // Inspection turned off by a reload: allow is spliced again.
    let path = s.gw.config_dir().join("hostgate.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace("[inspect]\n", "[inspect]\nenabled = false\n");
    std::fs::write(&path, text).unwrap();
    gw.reload().await.unwrap();
    let tcp = tunnel(s.gw.connect_addr(), "inspected.test:443").await;
    tls_handshake(tcp, "inspected.test", s.upstream_ca.client_config()).await.unwrap();
    let ev = s.gw.wait_access(|e| e.inspection == Some(Inspection::Off)).await;
    assert_eq!(ev.sni.as_deref(), Some("inspected.test"), "{ev:?}");
}
