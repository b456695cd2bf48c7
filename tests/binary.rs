//! `hostgate run` as a process, the way an operator runs it: JSON log lines on standard error
//! with the access log among them, a clean exit on SIGTERM, exit code 64 on a bad configuration
//! before any socket is bound, and an accept loop that backs off instead of spinning when the
//! process runs out of file descriptors (under `prlimit`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use support::process::Hostgate;
use support::tools::{curl, describe, stderr, stdout};
use support::{pins, TestCa, TlsUpstream, LOCAL_UPSTREAM, STEP};
use tempfile::TempDir;
use tokio::net::TcpStream;

/// Line numbers matter: the access log's `source` is `test.rules:LINE`.
const RULES: &str = "\
allow allowed.test
deny denied.test
";

/// A configuration directory: `hostgate.toml` (a connect listener on `listener`, the policy
/// `default = "deny"` plus `test.rules`, JSON logs at `info`, then `extra`) and `test.rules`.
/// Returns the directory and the configuration's path.
fn config_dir(listener: &str, rules: &str, extra: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[[listener]]\nkind = \"connect\"\naddress = \"{listener}\"\n\n\
         [policy]\ndefault = \"deny\"\n[[policy.source]]\npath = \"test.rules\"\n\n\
         [log]\nformat = \"json\"\nlevel = \"info\"\n\n{extra}"
    );
    let path = dir.path().join("hostgate.toml");
    std::fs::write(&path, toml).unwrap();
    std::fs::write(dir.path().join("test.rules"), rules).unwrap();
    (dir, path)
}

/// Asserts a JSON access event's `source`: `test.rules:LINE` (as an absolute path).
fn assert_source(event: &Value, line: usize) {
    let source = event["source"].as_str().unwrap_or_else(|| panic!("no source: {event:#}"));
    assert!(source.ends_with(&format!("/test.rules:{line}")), "source {source:?}, want test.rules:{line}: {event:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_log_then_sigterm_exits_cleanly() {
    let ca = TestCa::new();
    let up = TlsUpstream::start(&ca, &["allowed.test", "denied.test"], "A").await;
    let pinned = pins(&[("allowed.test", up.addr()), ("denied.test", up.addr())]);
    // Port 0, and the bound address from the `listening` line: no port can collide.
    let (_dir, config) = config_dir("127.0.0.1:0", RULES, &format!("{LOCAL_UPSTREAM}{pinned}"));
    let mut hg = Hostgate::spawn(&[], &config);
    let addr = hg.listening("connect").await;
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    let proxy = format!("http://{addr}");
    let ca_path = ca.ca_pem_path().to_str().unwrap();

    let out = curl(&["--proxy", &proxy, "--cacert", ca_path, "https://allowed.test/json"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out), "upstream=A sni=allowed.test path=/json");
    let out = curl(&["--proxy", &proxy, "--cacert", ca_path, "https://denied.test/"]).await;
    assert_eq!(out.status.code(), Some(56), "{}", describe(&out));
    assert!(stderr(&out).contains("CONNECT tunnel failed, response 403"), "{}", describe(&out));

    // Both events are written before the signal (the allowed one when its tunnel ends).
    hg.wait_json(|v| v["target"] == "access" && v["sni"] == "allowed.test", STEP).await;
    hg.wait_json(|v| v["target"] == "access" && v["host"] == "denied.test", STEP).await;
    hg.signal("TERM");
    let (status, lines) = hg.wait().await;
    let all = lines.join("\n");
    assert!(status.success(), "exit status {status} after SIGTERM; stderr:\n{all}");

    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("a stderr line is not JSON ({e}): {l:?}")))
        .collect();
    for e in &events {
        assert!(e.is_object() && e["timestamp"].is_string() && e["level"].is_string(), "{e:#}");
        assert!(e["target"].is_string() && e["message"].is_string(), "{e:#}");
        assert!(e["level"] != "ERROR", "an error in a clean run: {e:#}");
    }
    let stopping = |e: &Value| e["message"].as_str().is_some_and(|m| m.starts_with("stopping: no new connections"));
    assert!(events.iter().any(stopping), "{all}");
    let access: Vec<&Value> = events.iter().filter(|e| e["target"] == "access").collect();
    assert_eq!(access.len(), 2, "one event per connection: {access:#?}");

    let allowed = access.iter().find(|e| e["sni"] == "allowed.test").unwrap_or_else(|| panic!("{access:#?}"));
    assert_eq!(allowed["action"], "allow", "{allowed:#}");
    assert_eq!(allowed["outcome"], "ok", "{allowed:#}");
    assert_eq!(allowed["host"], "allowed.test", "{allowed:#}");
    assert_eq!(allowed["rule"], "allow allowed.test", "{allowed:#}");
    assert_source(allowed, 1);
    assert_eq!(allowed["kind"], "connect", "{allowed:#}");
    assert_eq!(allowed["listener"], addr.to_string(), "{allowed:#}");
    assert_eq!(allowed["dst"], "allowed.test:443", "{allowed:#}");
    assert_eq!(allowed["protocol"], "tls", "{allowed:#}");
    assert_eq!(allowed["status"], 200, "{allowed:#}");
    assert_eq!(allowed["upstream"], up.addr().to_string(), "{allowed:#}");
    assert!(allowed["bytes_up"].as_u64().is_some_and(|n| n > 0), "{allowed:#}");
    assert!(allowed["client"].as_str().is_some_and(|c| c.starts_with("127.0.0.1:")), "{allowed:#}");

    let denied = access.iter().find(|e| e["host"] == "denied.test").unwrap_or_else(|| panic!("{access:#?}"));
    assert_eq!(denied["action"], "deny", "{denied:#}");
    assert_eq!(denied["outcome"], "denied", "{denied:#}");
    assert_eq!(denied.get("sni"), None, "no tunnel, no ClientHello: {denied:#}");
    assert_eq!(denied["rule"], "deny denied.test", "{denied:#}");
    assert_source(denied, 2);
    assert_eq!(denied["status"], 403, "{denied:#}");
    assert_eq!(denied.get("upstream"), None, "{denied:#}");
    assert_eq!(up.handshakes(), 1, "only the allowed name reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_syntax_error_exits_64_before_binding() {
    // The listener's port is held by this test: a gateway that bound before validating would
    // fail with "address in use" (exit 1), not 64.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (_dir, config) = config_dir(&held.local_addr().unwrap().to_string(), RULES, "");
    // Line 5 of the file opens `[policy`, which is never closed.
    let text = std::fs::read_to_string(&config).unwrap().replacen("[policy]", "[policy", 1);
    assert_eq!(text.lines().nth(4), Some("[policy"), "{text}");
    std::fs::write(&config, text).unwrap();

    let (status, lines) = Hostgate::spawn(&[], &config).wait().await;
    let all = lines.join("\n");
    assert_eq!(status.code(), Some(64), "{status}; stderr:\n{all}");
    assert!(all.contains(&format!("{}:5:", config.display())), "names the file and line 5: {all}");
    assert!(!all.contains("listening"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_rule_exits_64_before_binding() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (dir, config) = config_dir(&held.local_addr().unwrap().to_string(), "allow allowed.test\nallow mail.*\n", "");
    let (status, lines) = Hostgate::spawn(&[], &config).wait().await;
    let all = lines.join("\n");
    assert_eq!(status.code(), Some(64), "{status}; stderr:\n{all}");
    let rules = dir.path().join("test.rules");
    assert!(all.contains(&format!("{}:2: bad pattern `mail.*`", rules.display())), "names the file and line: {all}");
    assert!(!all.contains("listening"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_backs_off_when_out_of_file_descriptors() {
    /// The process's descriptor limit (soft and hard); hostgate uses about 12 when idle.
    const NOFILE: u64 = 48;
    /// Client connections held open: more than the limit leaves room for.
    const HOLD: usize = 80;
    const BACKING_OFF: &str = "accept: out of resources; backing off";

    let ca = TestCa::new();
    let up = TlsUpstream::start(&ca, &["allowed.test"], "A").await;
    // A long sniff timeout: the held connections must not be closed by the gateway meanwhile.
    let extra = format!("[sniff]\ntimeout = \"60s\"\n{LOCAL_UPSTREAM}{}", pins(&[("allowed.test", up.addr())]));
    let (_dir, config) = config_dir("127.0.0.1:0", RULES, &extra);
    let nofile = format!("--nofile={NOFILE}:{NOFILE}");
    let mut hg = Hostgate::spawn(&["prlimit", &nofile], &config);
    let addr = hg.listening("connect").await;
    // prlimit exec'd hostgate: the pid is hostgate's, with the limit.
    let pid = hg.pid();
    assert_eq!(std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap().trim(), "hostgate");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    assert_eq!(line.split_whitespace().nth(3), Some(NOFILE.to_string().as_str()), "{line}");

    let open_fds = || std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let idle_fds = open_fds();
    // Accepted ones use up the descriptors; the rest wait in the backlog, where accept fails
    // with EMFILE.
    let mut held = Vec::with_capacity(HOLD);
    for _ in 0..HOLD {
        held.push(tokio::time::timeout(STEP, TcpStream::connect(addr)).await.unwrap().unwrap());
    }
    let warn = hg.wait_json(|v| v["message"] == BACKING_OFF, STEP).await;
    assert_eq!(warn["level"], "WARN", "{warn:#}");
    assert_eq!(warn["listener"], addr.to_string(), "{warn:#}");
    assert!(warn["error"].as_str().is_some_and(|e| e.contains("os error 24")), "EMFILE: {warn:#}");
    assert_eq!(warn["backoff_ms"], 10, "the first back-off: {warn:#}");

    // Still exhausted: a loop that retried at once would burn a core; backing off costs nothing.
    let before = hg.cpu_time();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spent = hg.cpu_time() - before;
    assert!(hg.alive(), "hostgate died; stderr:\n{}", hg.lines().join("\n"));
    assert!(spent < Duration::from_millis(500), "{spent:?} of CPU in 1 s of EMFILE: spinning");
    // Each worker backs off on its own socket (the record says which).
    let mut per_worker = std::collections::BTreeMap::<u64, Vec<u64>>::new();
    for v in hg.json_lines(|v| v["message"] == BACKING_OFF) {
        per_worker.entry(v["worker"].as_u64().unwrap()).or_default().push(v["backoff_ms"].as_u64().unwrap());
    }
    assert!(!per_worker.is_empty());
    for backoffs in per_worker.values() {
        assert!(backoffs.len() >= 3 && backoffs[..3] == [10, 20, 40], "the back-off doubles: {per_worker:?}");
        assert!(backoffs.windows(2).all(|w| w[1] >= w[0]) && backoffs.iter().all(|&b| b <= 1000), "{per_worker:?}");
    }
    let backoffs: Vec<u64> = per_worker.values().flatten().copied().collect();
    eprintln!("{} back-offs {backoffs:?}, {spent:?} of CPU in 1 s", backoffs.len());

    // Released, the gateway drains its backlog (accepting each held connection, reading its
    // end, closing it) and serves again.
    drop(held);
    let deadline = tokio::time::Instant::now() + STEP;
    while open_fds() > idle_fds + 2 {
        assert!(tokio::time::Instant::now() < deadline, "{} descriptors still open, {idle_fds} when idle", open_fds());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let proxy = format!("http://{addr}");
    let ca_path = ca.ca_pem_path().to_str().unwrap();
    let out = curl(&["--proxy", &proxy, "--cacert", ca_path, "https://allowed.test/after"]).await;
    assert!(out.status.success(), "{}; stderr:\n{}", describe(&out), hg.lines().join("\n"));
    assert_eq!(stdout(&out), "upstream=A sni=allowed.test path=/after");
    let ev = hg.wait_json(|v| v["target"] == "access" && v["sni"] == "allowed.test", STEP).await;
    assert_eq!(ev["outcome"], "ok", "{ev:#}");

    hg.signal("TERM");
    let (status, lines) = hg.wait().await;
    assert!(status.success(), "exit status {status} after SIGTERM; stderr:\n{}", lines.join("\n"));
}
