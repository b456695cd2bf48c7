//! The operator's view on a running gateway: per-rule hit counts after known connections, kept
//! across a reload for unchanged rules and reset for a changed one; `/rules`, `/recent` and
//! `/top` field by field; the status page in headless Chromium (the top denied table, the
//! recent denial with its rule, the explain form's answer, a screenshot) and what it does with
//! markup from clients; `hostgate suggest --admin` against the live ring.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::http::{connect_tunnel, get_absolute, HttpConn};
use support::{TestGateway, LOCAL_UPSTREAM};

/// Line numbers matter: `/rules` and the page show `test.rules:LINE`.
const RULES: &str = "\
allow allowed.test
deny denied.test
deny other.test
allow never.test
";

/// The report-mode list: its deny is only reported.
const REPORTED: &str = "deny ads.test\n";

/// A gateway with an admin listener, `test.rules` (enforced) and `reported.rules` (report
/// mode); allowed names are pinned to a closed local port, so an allowed CONNECT is refused
/// upstream (its record still names the rule that allowed it).
async fn gateway(recent: usize) -> TestGateway {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let policy = "[policy]\ndefault = \"deny\"\n[[policy.source]]\npath = \"test.rules\"\n\
                  [[policy.source]]\npath = \"reported.rules\"\nmode = \"report\"\n";
    let extra = format!(
        "{LOCAL_UPSTREAM}{}[admin]\naddress = \"127.0.0.1:0\"\nrecent = {recent}\nwindow = \"10m\"\n",
        support::pins(&[("allowed.test", closed), ("ads.test", closed)])
    );
    TestGateway::start_files(
        &[("connect", "127.0.0.1:0")],
        policy,
        &[("test.rules", RULES), ("reported.rules", REPORTED)],
        &extra,
    )
    .await
}

fn admin(gw: &TestGateway) -> SocketAddr {
    gw.gateway().admin_addr().expect("an admin listener")
}

/// `GET path` on the admin listener.
async fn get(gw: &TestGateway, path: &str) -> support::Response {
    let mut c = HttpConn::connect(admin(gw)).await;
    c.request(&format!("GET {path} HTTP/1.1\r\nhost: admin.test\r\n\r\n")).await
}

async fn get_json(gw: &TestGateway, path: &str) -> Value {
    let r = get(gw, path).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{path}: {e}: {}", r.text()))
}

/// CONNECTs to `name:443`, expecting `status`, and waits for its access record.
async fn connect(gw: &TestGateway, name: &str, status: u16) {
    let count = || gw.access_events(|e| e.host.as_deref() == Some(name)).len();
    let n = count();
    let (_tcp, r) = connect_tunnel(gw.connect_addr(), &format!("{name}:443")).await;
    assert_eq!(r.status, status, "CONNECT {name}: {r:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while count() == n {
        assert!(tokio::time::Instant::now() < deadline, "no access record for CONNECT {name}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The known traffic: denied.test ×3 (rule line 2), other.test ×1 (line 3), nowhere.test ×2
/// (the default), allowed.test ×1 (line 1, refused upstream), ads.test ×1 (would-deny by the
/// report-mode list, refused upstream).
async fn traffic(gw: &TestGateway) {
    for _ in 0..3 {
        connect(gw, "denied.test", 403).await;
    }
    connect(gw, "other.test", 403).await;
    for _ in 0..2 {
        connect(gw, "nowhere.test", 403).await;
    }
    connect(gw, "allowed.test", 502).await;
    connect(gw, "ads.test", 502).await;
    // The last record: a denial by line 2, which /recent must list first.
    connect(gw, "denied.test", 403).await;
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn rule<'a>(rules: &'a Value, target: &str) -> &'a Value {
    rules["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["target"] == target)
        .unwrap_or_else(|| panic!("{target}: {rules:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hit_counts_follow_connections_and_survive_a_reload_of_unchanged_rules() {
    let gw = gateway(100).await;
    let before = now_ms();
    traffic(&gw).await;
    let after = now_ms();

    let rules = get_json(&gw, "/rules").await;
    assert_eq!(rules["generation"], 1);
    assert_eq!(rules["sort"], "file");
    assert_eq!(rules["count"], 5, "{rules:#}");
    let allowed = rule(&rules, "allowed.test");
    assert_eq!(allowed["id"], 0);
    assert!(allowed["file"].as_str().unwrap().ends_with("/test.rules"), "{allowed:#}");
    assert_eq!(allowed["line"], 1);
    assert!(allowed["source"].as_str().unwrap().ends_with("/test.rules:1"), "{allowed:#}");
    assert_eq!(allowed["action"], "allow");
    assert_eq!(allowed["kind"], "name");
    assert_eq!(allowed["hits"], 1);
    let last = allowed["last_hit_unix_ms"].as_u64().unwrap();
    assert!((before..=after).contains(&last), "{before} <= {last} <= {after}");
    assert!(allowed["last_hit"].as_str().unwrap().ends_with('Z'), "{allowed:#}");
    let hits = |r: &Value, t: &str| rule(r, t)["hits"].as_u64().unwrap();
    assert_eq!(hits(&rules, "denied.test"), 4);
    assert_eq!(hits(&rules, "other.test"), 1);
    assert_eq!(hits(&rules, "never.test"), 0);
    assert_eq!(hits(&rules, "ads.test"), 1, "a would-deny names its rule too");
    assert_eq!(rule(&rules, "never.test")["last_hit"], Value::Null);

    let by_hits = get_json(&gw, "/rules?sort=hits").await;
    let order: Vec<&str> = by_hits["rules"].as_array().unwrap().iter().map(|r| r["target"].as_str().unwrap()).collect();
    assert_eq!(order, ["denied.test", "allowed.test", "other.test", "ads.test", "never.test"]);
    let by_last = get_json(&gw, "/rules?sort=last").await;
    assert_eq!(by_last["rules"][0]["target"], "denied.test", "the last connection was denied.test");
    let unused = get_json(&gw, "/rules?unused=1").await;
    let names: Vec<&str> = unused["rules"].as_array().unwrap().iter().map(|r| r["target"].as_str().unwrap()).collect();
    assert_eq!(names, ["never.test"]);
    assert!(unused["unused_since"].is_string());
    // Since a time after the traffic, every rule is unused.
    let later = get_json(&gw, &format!("/rules?since={}", after / 1000 + 2)).await;
    assert_eq!(later["count"], 5);
    let bad = get(&gw, "/rules?sort=size").await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(bad.text().contains("sort: `size`"), "{}", bad.text());

    // A comment moves every line down; other.test changes action; the rest is unchanged.
    let changed = format!("# reviewed\n{}", RULES.replace("deny other.test", "allow other.test"));
    std::fs::write(gw.config_dir().join("test.rules"), changed).unwrap();
    let done = gw.gateway().reload().await.unwrap();
    assert_eq!(done.generation, 2);
    let rules = get_json(&gw, "/rules").await;
    assert_eq!(rules["generation"], 2);
    assert_eq!(hits(&rules, "denied.test"), 4, "unchanged: kept");
    assert_eq!(rule(&rules, "denied.test")["line"], 3, "at its new line");
    assert_eq!(hits(&rules, "allowed.test"), 1, "unchanged: kept");
    assert_eq!(rule(&rules, "allowed.test")["last_hit_unix_ms"].as_u64(), Some(last), "its last hit too");
    assert_eq!(hits(&rules, "other.test"), 0, "changed action: reset");
    assert_eq!(rule(&rules, "other.test")["action"], "allow");
    assert_eq!(hits(&rules, "ads.test"), 1, "the other file is unchanged");
    // New hits add to the carried ones.
    connect(&gw, "denied.test", 403).await;
    assert_eq!(hits(&get_json(&gw, "/rules").await, "denied.test"), 5);
    // Unused: no hit since generation 2 loaded.
    let unused = get_json(&gw, "/rules?unused=1").await;
    let names: Vec<&str> = unused["rules"].as_array().unwrap().iter().map(|r| r["target"].as_str().unwrap()).collect();
    assert_eq!(names, ["allowed.test", "other.test", "never.test", "ads.test"]);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_and_top_field_by_field() {
    let gw = gateway(100).await;
    traffic(&gw).await;

    let recent = get_json(&gw, "/recent").await;
    assert_eq!(recent["capacity"], 100);
    assert_eq!(recent["kept"], 9);
    assert_eq!(recent["seen"], 9);
    let events = recent["events"].as_array().unwrap();
    assert_eq!(events.len(), 9);
    let e = &events[0];
    assert_eq!(e["host"], "denied.test", "newest first: {e:#}");
    assert_eq!(e["port"], 443);
    assert_eq!(e["kind"], "connect");
    assert!(e["client"].as_str().unwrap().starts_with("127.0.0.1:"), "{e:#}");
    assert_eq!(e["action"], "deny");
    assert_eq!(e["would_deny"], false);
    assert_eq!(e["outcome"], "denied");
    assert_eq!(e["status"], 403);
    assert_eq!(e["generation"], 1);
    assert_eq!(e["rule"], "deny denied.test");
    assert!(e["source"].as_str().unwrap().ends_with("/test.rules:2"), "{e:#}");
    assert!(e["time"].as_str().unwrap().ends_with('Z'));
    assert!(e["time_unix_ms"].as_u64().unwrap() <= now_ms());
    let ads = events.iter().find(|e| e["host"] == "ads.test").unwrap();
    assert_eq!(ads["action"], "allow", "{ads:#}");
    assert_eq!(ads["would_deny"], true, "{ads:#}");
    assert_eq!(ads["rule"], "deny ads.test");
    let default = events.iter().find(|e| e["host"] == "nowhere.test").unwrap();
    assert_eq!(default["rule"], Value::Null);
    assert_eq!(default["source"], Value::Null);
    // ?limit and ?denied=1 (denied or would-deny).
    let two = get_json(&gw, "/recent?limit=2").await;
    assert_eq!(two["events"].as_array().unwrap().len(), 2);
    assert_eq!(two["events"][1]["host"], "ads.test");
    let denied = get_json(&gw, "/recent?denied=1").await;
    let hosts: Vec<&str> = denied["events"].as_array().unwrap().iter().map(|e| e["host"].as_str().unwrap()).collect();
    assert_eq!(
        hosts,
        [
            "denied.test",
            "ads.test",
            "nowhere.test",
            "nowhere.test",
            "other.test",
            "denied.test",
            "denied.test",
            "denied.test"
        ]
    );

    let top = get_json(&gw, "/top").await;
    assert_eq!(top["window_s"], 600);
    assert_eq!(top["decisions"], serde_json::json!({"bypass": 0, "allow": 2, "deny": 7, "would_deny": 1}));
    assert!(top["per_second"]["deny"].as_f64().unwrap() > 0.0);
    let denied = top["denied"].as_array().unwrap();
    let rows: Vec<(&str, u64)> =
        denied.iter().map(|d| (d["domain"].as_str().unwrap(), d["count"].as_u64().unwrap())).collect();
    assert_eq!(rows, [("denied.test", 4), ("nowhere.test", 2), ("other.test", 1)]);
    assert_eq!(denied[0]["names"], serde_json::json!([{"name": "denied.test", "count": 4}]));
    assert_eq!(top["denied_other"], 0);
    assert_eq!(
        top["would_deny"],
        serde_json::json!([{"domain": "ads.test", "count": 1, "names": [{"name": "ads.test", "count": 1}]}])
    );
    assert_eq!(top["clients"], serde_json::json!([{"client": "127.0.0.1", "denials": 7}]));
    let errors = top["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["count"], 2, "the two refused upstream connects: {errors:?}");
    assert!(errors[0]["outcome"].as_str().unwrap().starts_with("upstream-"), "{errors:?}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ring_stays_bounded_under_load() {
    let gw = gateway(20).await;
    // 200 denied CONNECTs from 8 clients at once.
    let addr = gw.connect_addr();
    let mut tasks = Vec::new();
    for t in 0..8 {
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let (_tcp, r) = connect_tunnel(addr, &format!("n{t}-{i}.load.test:443")).await;
                assert_eq!(r.status, 403);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let recent = get_json(&gw, "/recent").await;
        if recent["seen"] == 200 || tokio::time::Instant::now() > deadline {
            assert_eq!(recent["seen"], 200);
            assert_eq!(recent["kept"], 20);
            assert_eq!(recent["events"].as_array().unwrap().len(), 20);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let top = get_json(&gw, "/top").await;
    assert_eq!(top["decisions"]["deny"], 200, "the window counts every record, not just the ring's");
    gw.shutdown().await;
}

/// Where test artifacts go: the target directory's tmp.
fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Chromium's binary, when installed.
fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| std::process::Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
}

/// Headless Chromium on `url`: `extra` (`--dump-dom`, `--screenshot=FILE`…) decides what it
/// writes to standard output. A fresh profile each time; no network but the URL's.
async fn headless(chromium: &str, url: &str, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--headless".to_string(),
        "--no-sandbox".to_string(),
        "--disable-gpu".to_string(),
        "--disable-quic".to_string(),
        "--no-first-run".to_string(),
        "--disable-background-networking".to_string(),
        "--disable-component-update".to_string(),
        "--disable-sync".to_string(),
        "--disable-dev-shm-usage".to_string(),
        format!("--user-data-dir={}", profile.path().display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(url.to_string());
    let child = tokio::process::Command::new(chromium)
        .args(&args)
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("all_proxy")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {chromium}: {e}"));
    let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{chromium} {url} ran longer than 90 s"))
        .unwrap();
    assert!(out.status.success(), "{chromium} {url}: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the element with `id` in a serialised DOM, up to its closing `</tag>`.
fn element<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id} in the page:\n{dom}"));
    let start = dom[..at].rfind('<').unwrap();
    let tag: String = dom[start + 1..].chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
    let end = dom[at..].find(&format!("</{tag}>")).map_or(dom.len(), |e| at + e);
    &dom[start..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_in_a_browser() {
    let gw = gateway(100).await;
    traffic(&gw).await;
    let base = format!("http://{}", admin(&gw));

    // Served as HTML, read-only, with a CSP, whatever the browser.
    let r = get(&gw, "/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(r.header("content-security-policy").is_some_and(|c| c.starts_with("default-src 'none'")), "{r:?}");
    let mut c = HttpConn::connect(admin(&gw)).await;
    let post = c.request("POST / HTTP/1.1\r\nhost: admin.test\r\ncontent-length: 0\r\n\r\n").await;
    assert_eq!(post.status, 405);

    let Some(chromium) = chromium() else {
        eprintln!("chromium is not installed (apt-get install chromium): the browser part of this test is skipped");
        return;
    };
    let dom = headless(chromium, &format!("{base}/"), &["--dump-dom"]).await;
    let top = element(&dom, "top-denied");
    let rows: Vec<&str> = top.split("<tr>").skip(2).collect();
    assert_eq!(rows.len(), 3, "{top}");
    assert!(rows[0].contains("<td>denied.test</td><td class=\"n\">4</td>"), "{top}");
    assert!(rows[1].contains("<td>nowhere.test</td><td class=\"n\">2</td>"), "{top}");
    let would = element(&dom, "top-would-deny");
    assert!(would.contains("<td>ads.test</td><td class=\"n\">1</td>"), "{would}");
    let recent = element(&dom, "recent-denials");
    let first = recent.split("<tr>").nth(2).unwrap();
    assert!(first.contains("<td>denied.test</td>"), "{first}");
    assert!(first.contains("<td class=\"rule\">deny denied.test</td>"), "{first}");
    assert!(first.contains("/test.rules:2</td>"), "{first}");
    assert!(recent.contains("would deny (report)"), "{recent}");
    assert!(element(&dom, "rates").contains("<td>deny</td><td class=\"n\">7</td>"), "{dom}");
    assert!(element(&dom, "reloads").contains("started"), "{dom}");
    assert!(element(&dom, "unused").contains("never.test"), "{dom}");
    assert!(element(&dom, "listeners").contains(&gw.connect_addr().to_string()), "{dom}");

    // The explain form, answered by the server.
    let q = format!("{base}/?explain=denied.test&port=443&client=127.0.0.1");
    let dom = headless(chromium, &q, &["--dump-dom"]).await;
    let answer = element(&dom, "explain-answer");
    assert!(answer.contains("denied.test (https, port 443): deny"), "{answer}");
    assert!(answer.contains("rule    deny denied.test  at "), "{answer}");
    assert!(answer.contains("/test.rules:2"), "{answer}");
    assert!(element(&dom, "explain-form").contains("value=\"denied.test\""), "{dom}");

    let shot = artifacts().join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let arg = format!("--screenshot={}", shot.display());
    headless(chromium, &format!("{base}/"), &[&arg, "--window-size=1280,1600", "--hide-scrollbars"]).await;
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("{}: {e}", shot.display()));
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} bytes", png.len());
    eprintln!("status page screenshot: {}", shot.display());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markup_from_clients_renders_as_text() {
    let gw = gateway(100).await;
    // A path with markup, through the explicit proxy to a denied name (plain HTTP).
    let mut c = HttpConn::connect(gw.connect_addr()).await;
    let path = "/<script>alert(1)</script>\"><img/src=x/onerror=alert(2)>";
    let r = c.request(&get_absolute("denied.test", path, "denied.test")).await;
    let recorded = get_json(&gw, "/recent").await;
    let recorded_path = recorded["events"][0]["path"].as_str().map(str::to_string);
    eprintln!("answer {} to the path with markup; recorded path {recorded_path:?}", r.status);
    // The explain form echoes the operator's input: a link an attacker sends must not run.
    let xss = "/?explain=%22%3E%3Cimg%20src%3Dx%20onerror%3Dalert(3)%3E&port=443\
               &client=%3Cscript%3Ealert(4)%3C%2Fscript%3E";
    for page in ["/", xss] {
        let html = get(&gw, page).await.text();
        assert!(!html.contains("<img"), "{page}: an element from input:\n{html}");
        assert_eq!(html.matches("<script").count(), 1, "{page}: only the page's own script:\n{html}");
    }
    let html = get(&gw, xss).await.text();
    assert!(html.contains("value=\"&quot;&gt;&lt;img src=x onerror=alert(3)&gt;\""), "{html}");
    assert!(html.contains("client: `&lt;script&gt;alert(4)&lt;/script&gt;` is not an IP address"), "{html}");
    if let Some(p) = &recorded_path {
        assert!(p.contains('<') || p.contains("%3C") || p.contains("%3c"), "{p}");
    }

    let Some(chromium) = chromium() else {
        eprintln!("chromium is not installed: the browser part of this test is skipped");
        return;
    };
    let base = format!("http://{}", admin(&gw));
    for page in ["/", xss] {
        let dom = headless(chromium, &format!("{base}{page}"), &["--dump-dom"]).await;
        assert!(!dom.contains("<img"), "{page}: an element was created from input:\n{dom}");
        assert_eq!(dom.matches("<script").count(), 1, "{page}: {dom}");
        if page == xss {
            let answer = element(&dom, "explain-answer");
            assert!(
                answer.contains("client: `&lt;script&gt;alert(4)&lt;/script&gt;` is not an IP address"),
                "{answer}"
            );
        }
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suggest_reads_the_live_ring() {
    let gw = gateway(100).await;
    traffic(&gw).await;
    for name in ["a.cdn.example.org", "b.cdn.example.org"] {
        connect(&gw, name, 403).await;
    }
    let addr = admin(&gw).to_string();
    let out = support::tools::run(env!("CARGO_BIN_EXE_hostgate"), &["suggest", "--admin", &addr], None).await;
    let text = support::tools::stdout(&out);
    assert!(out.status.success(), "{}", support::tools::describe(&out));
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with('+')).collect();
    assert_eq!(
        lines,
        [
            "+allow *.cdn.example.org  # 2 requests from 1 client: 127.0.0.1; names: a.cdn.example.org, b.cdn.example.org",
            "+allow nowhere.test  # 2 requests from 1 client: 127.0.0.1",
            "+allow ads.test  # 1 request from 1 client: 127.0.0.1; 1 would-deny",
        ],
        "{text}"
    );
    assert!(text.starts_with(&format!("# hostgate suggest: 10 records from http://{addr}/recent")), "{text}");
    gw.shutdown().await;
}
