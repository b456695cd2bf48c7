//! Restarts that drop nothing, under load (≥ 500 new connections a second, counted by the
//! clients), in a network namespace the test makes (so that its sysctl is its own):
//!
//! - **socket activation**: a supervisor that does what systemd does for `hostgate.socket`
//!   holds the listening socket and passes it as fd 3 (`LISTEN_FDS`); `restart` stops the
//!   gateway (SIGTERM, wait for its exit) and starts it again on the same socket, while
//!   connections wait in the socket's queue;
//! - **a binary hand-over**: a second gateway starts on the same address (`SO_REUSEPORT`) with
//!   `--replace PID`, and once it listens it sends the first SIGTERM; with
//!   `net.ipv4.tcp_migrate_req = 1` the connections queued on the old sockets move to the new.
//!
//! Both: 0 failed connections, and tunnels open across the restart echo to the end.
//! Needs root, `ip` and `python3` (`tests/support/restart_load.py` is the client, the echo
//! upstream and the supervisor); prints why and passes otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::process::Hostgate;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/restart_load.py");
/// The proxy's port inside the test's own namespace (nothing else listens there).
const PORT: u16 = 3128;
const RATE: &str = "500";

fn sh(args: &[&str]) -> Result<std::process::Output, String> {
    let o =
        Command::new(args[0]).args(&args[1..]).stdin(Stdio::null()).output().map_err(|e| format!("{args:?}: {e}"))?;
    if o.status.success() {
        Ok(o)
    } else {
        Err(format!("{}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr).trim()))
    }
}

/// A network namespace with only `lo`, and `net.ipv4.tcp_migrate_req = 1`; removed on drop.
struct Ns(String);

impl Ns {
    fn create(what: &str) -> Option<Ns> {
        let root = sh(&["id", "-u"]).is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        if !root || sh(&["ip", "-V"]).is_err() || sh(&["python3", "-V"]).is_err() {
            eprintln!("skipping {what}: needs root, ip and python3");
            return None;
        }
        let name = (0..100)
            .map(|i| format!("hgrs{}", (std::process::id() + i) % 1000))
            .find(|n| sh(&["ip", "netns", "add", n]).is_ok())?;
        let ns = Ns(name);
        sh(&["ip", "-n", &ns.0, "link", "set", "lo", "up"]).unwrap();
        sh(&["ip", "netns", "exec", &ns.0, "sysctl", "-qw", "net.ipv4.tcp_migrate_req=1"]).unwrap();
        Some(ns)
    }

    fn exec(&self) -> Vec<&str> {
        vec!["ip", "netns", "exec", &self.0]
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        if let Ok(o) = sh(&["ip", "netns", "pids", &self.0]) {
            for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let _ = sh(&["kill", "-9", pid]);
            }
        }
        let _ = sh(&["ip", "netns", "del", &self.0]);
    }
}

/// Starts the echo upstream in `ns`; its port.
async fn echo(ns: &Ns) -> (tokio::process::Child, u16) {
    let mut argv = ns.exec();
    argv.extend(["python3", SCRIPT, "echo"]);
    let mut child = tokio::process::Command::new(argv[0])
        .args(&argv[1..])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port = tokio::time::timeout(support::STEP, lines.next_line()).await.unwrap().unwrap().unwrap();
    (child, port.trim().parse().unwrap())
}

fn config(dir: &Path, echo_port: u16) -> std::path::PathBuf {
    std::fs::write(dir.join("a.rules"), "deny denied.test\nallow echo.test\n").unwrap();
    let path = dir.join("hostgate.toml");
    std::fs::write(
        &path,
        format!(
            "[[listener]]\nkind = \"connect\"\naddress = \"127.0.0.1:{PORT}\"\n\n\
             [policy]\ndefault = \"allow\"\n[[policy.source]]\npath = \"a.rules\"\n\n\
             [upstream]\nallow_private = [\"127.0.0.0/8\"]\n\n[resolve]\n\"echo.test\" = [\"127.0.0.1:{echo_port}\"]\n\n\
             [runtime]\nworkers = 2\nshutdown_grace = \"20s\"\n\n[log]\nformat = \"json\"\nlevel = \"info,access=warn\"\n"
        ),
    )
    .unwrap();
    path
}

/// Runs the load in `ns`; its summary.
fn start_load(ns: &Ns, seconds: &str, tunnels: &str, tunnel_seconds: &str) -> tokio::process::Child {
    let mut argv = ns.exec();
    let port = PORT.to_string();
    argv.extend(["python3", SCRIPT, "load", &port, RATE, seconds, tunnels, tunnel_seconds]);
    tokio::process::Command::new(argv[0]).args(&argv[1..]).stdout(Stdio::piped()).kill_on_drop(true).spawn().unwrap()
}

async fn summary(load: tokio::process::Child) -> Value {
    let out = tokio::time::timeout(Duration::from_secs(60), load.wait_with_output()).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("load summary {text:?}: {e}"))
}

fn assert_nothing_dropped(s: &Value, tunnels: u64) {
    assert_eq!(s["failed"], 0, "failed connections: {s:#}");
    assert!(s["ok"].as_u64().unwrap() >= 2000, "too few connections to mean anything: {s:#}");
    assert!(s["achieved_rate"].as_f64().unwrap() >= 450.0, "the load did not reach its rate: {s:#}");
    assert_eq!((s["tunnels_ok"].as_u64(), s["tunnels_failed"].as_u64()), (Some(tunnels), Some(0)), "{s:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_activated_restart_under_load_drops_nothing() {
    let Some(ns) = Ns::create("the socket-activation restart test") else { return };
    let dir = tempfile::tempdir().unwrap();
    let (_echo, echo_port) = echo(&ns).await;
    let config = config(dir.path(), echo_port);
    let mut argv = ns.exec();
    let port = PORT.to_string();
    let bin = env!("CARGO_BIN_EXE_hostgate");
    argv.extend(["python3", SCRIPT, "supervise", &port, "--", bin, "run", "--config", config.to_str().unwrap()]);
    let mut supervisor = tokio::process::Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut said = BufReader::new(supervisor.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(support::STEP, said.next_line()).await.unwrap().unwrap().unwrap();
    assert!(first.starts_with("started "), "{first}");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 6 s of load; the tunnels close 1 s after the restart begins (systemd waits for the old
    // process to exit before it starts the new one: meanwhile connections wait in the queue).
    let load = start_load(&ns, "6", "4", "3");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut stdin = supervisor.stdin.take().unwrap();
    stdin.write_all(b"restart\n").await.unwrap();
    let exited = tokio::time::timeout(Duration::from_secs(30), said.next_line()).await.unwrap().unwrap().unwrap();
    assert!(exited.starts_with("exited ") && exited.ends_with(" 0"), "the old gateway exits cleanly: {exited}");
    let second = tokio::time::timeout(support::STEP, said.next_line()).await.unwrap().unwrap().unwrap();
    assert!(second.starts_with("started ") && second != first, "{second}");

    let s = summary(load).await;
    assert_nothing_dropped(&s, 4);
    stdin.write_all(b"stop\n").await.unwrap();
    let last = tokio::time::timeout(Duration::from_secs(30), said.next_line()).await.unwrap().unwrap().unwrap();
    assert!(last.ends_with(" 0"), "{last}");
    eprintln!("socket activation restart: {s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_hand_over_under_load_drops_nothing() {
    let Some(ns) = Ns::create("the hand-over test") else { return };
    let dir = tempfile::tempdir().unwrap();
    let (_echo, echo_port) = echo(&ns).await;
    let config = config(dir.path(), echo_port);
    let exec = ns.exec();
    let mut old = Hostgate::spawn(&exec, &config);
    old.wait_json(|v| v["message"] == "listening", support::STEP).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Tunnels across the whole run: opened on the old gateway, they must echo to the end.
    let load = start_load(&ns, "6", "4", "6");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = old.pid().to_string();
    let mut new = Hostgate::spawn_with(&exec, &config, &["--replace", &pid]);
    new.wait_json(|v| v["message"] == "listening", support::STEP).await;

    let s = summary(load).await;
    assert_nothing_dropped(&s, 4);
    // The old one stopped on the new one's signal and exited once its tunnels closed.
    let (status, _) = tokio::time::timeout(Duration::from_secs(30), old.wait()).await.unwrap();
    assert!(status.success(), "{status}");
    assert!(new.alive(), "the new gateway serves on");
    new.signal("TERM");
    let (status, _) = new.wait().await;
    assert!(status.success(), "{status}");
    eprintln!("hand-over: {s}");
}

/// The control: the same load across a plain restart (stop, then start) does lose connections,
/// so the two tests above measure something.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_restart_under_load_drops_connections() {
    let Some(ns) = Ns::create("the plain-restart control") else { return };
    let dir = tempfile::tempdir().unwrap();
    let (_echo, echo_port) = echo(&ns).await;
    let config = config(dir.path(), echo_port);
    let exec = ns.exec();
    let mut old = Hostgate::spawn(&exec, &config);
    old.wait_json(|v| v["message"] == "listening", support::STEP).await;
    let load = start_load(&ns, "4", "0", "0");
    tokio::time::sleep(Duration::from_secs(1)).await;
    old.signal("TERM");
    let (status, _) = old.wait().await;
    assert!(status.success(), "{status}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut new = Hostgate::spawn(&exec, &config);
    new.wait_json(|v| v["message"] == "listening", support::STEP).await;
    let s = summary(load).await;
    assert!(s["failed"].as_u64().unwrap() > 50, "a plain restart should have refused connections: {s:#}");
    eprintln!("plain restart: {s}");
    new.signal("TERM");
    let _ = new.wait().await;
}
