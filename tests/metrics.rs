//! The admin listener end to end: `/metrics` after a known sequence of connections and reloads,
//! parsed and checked sample by sample; `/healthz`, `/readyz` (including while shutting down) and
//! `/policy`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hostgate_proxy::config::{Config, ListenerKind};
use hostgate_proxy::gateway::Gateway;
use support::tools::{curl, describe, stdout};
use support::upstream::TlsUpstream;
use support::TestCa;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const RULES: &str = "allow allowed.test\ndeny denied.test\nallow echo.test\n";

/// `GET path` on the admin listener: status, headers (lowercased names) and body.
async fn get(addr: SocketAddr, path: &str) -> (u16, BTreeMap<String, String>, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw)).await.unwrap().unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// The samples of an exposition: `name{labels}` → value (labels as printed).
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample line: {l:?}"));
            (key.to_string(), value.parse::<f64>().unwrap_or_else(|_| panic!("not a number: {l:?}")))
        })
        .collect()
}

fn sample(all: &BTreeMap<String, f64>, key: &str) -> f64 {
    *all.get(key).unwrap_or_else(|| {
        let near: Vec<_> = all.keys().filter(|k| k.starts_with(key.split('{').next().unwrap_or(key))).collect();
        panic!("no sample {key}; samples of that family: {near:#?}")
    })
}

fn write_config(dir: &Path, upstream: SocketAddr, echo: SocketAddr) -> std::path::PathBuf {
    std::fs::write(dir.join("test.rules"), RULES).unwrap();
    let toml = format!(
        "[[listener]]\nkind = \"connect\"\naddress = \"127.0.0.1:0\"\n\
         [policy]\ndefault = \"deny\"\n[[policy.source]]\npath = \"test.rules\"\n\
         [upstream]\nallow_private = [\"127.0.0.0/8\"]\n\
         [resolve]\n\"allowed.test\" = [\"{upstream}\"]\n\"echo.test\" = [\"{echo}\"]\n\
         [admin]\naddress = \"127.0.0.1:0\"\n"
    );
    let path = dir.join("hostgate.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_known_sequence() {
    let ca = TestCa::new();
    let up = TlsUpstream::start(&ca, &["allowed.test"], "A").await;
    let echo = TlsUpstream::start_echo(&ca, &["echo.test"], "E").await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), up.addr(), echo.addr());
    let gw = Gateway::start(Config::load(&config).unwrap()).await.unwrap();
    let proxy = format!("http://{}", gw.local_addr(ListenerKind::Connect).unwrap());
    let listener = gw.local_addr(ListenerKind::Connect).unwrap().to_string();
    let admin = gw.admin_addr().unwrap();
    let ca_path = ca.ca_pem_path().to_str().unwrap().to_string();

    // Two allowed, one denied by a rule, one denied by the default.
    for _ in 0..2 {
        let out = curl(&["--proxy", &proxy, "--cacert", &ca_path, "https://allowed.test/m"]).await;
        assert!(out.status.success(), "{}", describe(&out));
        assert_eq!(stdout(&out), "upstream=A sni=allowed.test path=/m");
    }
    for name in ["denied.test", "unlisted.test"] {
        let out = curl(&["--proxy", &proxy, "--cacert", &ca_path, &format!("https://{name}/")]).await;
        assert_eq!(out.status.code(), Some(56), "{}", describe(&out));
    }
    // A reload that works, one that fails.
    gw.reload().await.unwrap();
    std::fs::write(dir.path().join("test.rules"), "allow allowed.test\nallow [broken\n").unwrap();
    gw.reload().await.unwrap_err();

    let file = dir.path().join("test.rules").display().to_string();
    let (status, headers, body) = get(admin, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert!(headers["content-type"].starts_with("application/openmetrics-text"), "{headers:?}");
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    let m = samples(&body);
    let conn = |protocol: &str, action: &str, outcome: &str| {
        format!(
            "hostgate_connections_total{{listener=\"{listener}\",kind=\"connect\",protocol=\"{protocol}\",action=\"{action}\",outcome=\"{outcome}\"}}"
        )
    };
    assert_eq!(sample(&m, &conn("tls", "allow", "ok")), 2.0, "{body}");
    assert_eq!(sample(&m, &conn("none", "deny", "denied")), 2.0, "{body}");
    assert_eq!(sample(&m, &format!("hostgate_decisions_total{{source=\"{file}\",action=\"allow\"}}")), 2.0);
    assert_eq!(sample(&m, &format!("hostgate_decisions_total{{source=\"{file}\",action=\"deny\"}}")), 1.0);
    assert_eq!(sample(&m, "hostgate_decisions_total{source=\"default\",action=\"deny\"}"), 1.0);
    assert!(sample(&m, "hostgate_bytes_total{direction=\"up\"}") > 1000.0, "two ClientHellos at least");
    assert!(sample(&m, "hostgate_bytes_total{direction=\"down\"}") > 1000.0, "two server flights at least");
    assert_eq!(sample(&m, "hostgate_dns_lookups_total{result=\"pinned\"}"), 2.0);
    assert_eq!(sample(&m, "hostgate_dns_lookups_total{result=\"cache_miss\"}"), 0.0);
    assert_eq!(sample(&m, "hostgate_upstream_connect_seconds_count{result=\"ok\"}"), 2.0);
    assert_eq!(sample(&m, "hostgate_sniff_seconds_count"), 2.0, "one sniff per tunnel");
    assert_eq!(sample(&m, "hostgate_decision_seconds_count"), 6.0, "CONNECT + SNI for two, CONNECT for two");
    assert_eq!(sample(&m, "hostgate_reloads_total{result=\"success\"}"), 2.0, "the start and one reload");
    assert_eq!(sample(&m, "hostgate_reloads_total{result=\"failure\"}"), 1.0);
    assert_eq!(sample(&m, "hostgate_policy_generation"), 2.0);
    assert_eq!(sample(&m, "hostgate_rules{action=\"allow\"}"), 2.0);
    assert_eq!(sample(&m, "hostgate_rules{action=\"deny\"}"), 1.0);
    assert!(sample(&m, "hostgate_last_reload_success_timestamp_seconds") > 1.7e9);
    assert_eq!(sample(&m, &format!("hostgate_active_connections{{listener=\"{listener}\"}}")), 0.0);
    assert_eq!(sample(&m, &format!("hostgate_active_tunnels{{listener=\"{listener}\"}}")), 0.0);

    // An open tunnel shows in the gauges.
    let tcp = support::http::tunnel(gw.local_addr(ListenerKind::Connect).unwrap(), "echo.test:443").await;
    let tls = support::http::tls_handshake(tcp, "echo.test", ca.client_config()).await.unwrap();
    let m = samples(&get(admin, "/metrics").await.2);
    assert_eq!(sample(&m, &format!("hostgate_active_tunnels{{listener=\"{listener}\"}}")), 1.0);
    assert_eq!(sample(&m, &format!("hostgate_active_connections{{listener=\"{listener}\"}}")), 1.0);
    drop(tls);
    let mut open = 1.0;
    for _ in 0..100 {
        open = sample(
            &samples(&get(admin, "/metrics").await.2),
            &format!("hostgate_active_tunnels{{listener=\"{listener}\"}}"),
        );
        if open == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(open, 0.0, "the tunnel gauge did not come down");
    gw.shutdown(Duration::ZERO).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_policy() {
    let ca = TestCa::new();
    let echo = TlsUpstream::start_echo(&ca, &["echo.test"], "E").await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), echo.addr(), echo.addr());
    let gw = Gateway::start(Config::load(&config).unwrap()).await.unwrap();
    let admin = gw.admin_addr().unwrap();

    let (status, _, body) = get(admin, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _, body) = get(admin, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let (status, headers, body) = get(admin, "/policy").await;
    assert_eq!(status, 200);
    assert!(headers["content-type"].starts_with("application/json"), "{headers:?}");
    let p: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(p["generation"], 1, "{p:#}");
    assert_eq!(p["default"], "deny", "{p:#}");
    assert_eq!(p["rules"]["allow"], 2, "{p:#}");
    assert_eq!(p["rules"]["deny"], 1, "{p:#}");
    assert_eq!(p["sources"][0]["file"], dir.path().join("test.rules").display().to_string(), "{p:#}");
    assert_eq!(p["sources"][0]["mode"], "enforce", "{p:#}");
    let (status, _, _) = get(admin, "/nothing").await;
    assert_eq!(status, 404);

    // While shutting down (a tunnel keeps the grace period going), /readyz says so.
    let tcp = support::http::tunnel(gw.local_addr(ListenerKind::Connect).unwrap(), "echo.test:443").await;
    let shutdown = tokio::spawn(gw.shutdown(Duration::from_secs(5)));
    let mut status = 0;
    for _ in 0..50 {
        status = get(admin, "/readyz").await.0;
        if status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 503, "/readyz during the grace period");
    assert_eq!(get(admin, "/healthz").await.0, 200, "alive while draining");
    drop(tcp);
    assert_eq!(shutdown.await.unwrap(), 0, "the tunnel ended on its own within the grace period");
    assert!(TcpStream::connect(admin).await.is_err(), "the admin listener outlived the shutdown");
}
