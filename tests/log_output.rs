//! `[log] output`: the `hostgate` binary logging to syslog servers this test runs (UDP, a unix
//! datagram socket, TCP) and to the journal's native protocol (a socket this test binds where
//! the child, in a mount namespace of its own, finds `/run/systemd/journal/socket`). Each
//! message is parsed field by field: RFC 5424's header and the JSON body, or the journal's
//! `KEY=value` fields. A sink that cannot be opened exits 64 naming the setting; a syslog server
//! that goes away does not hold up the data path.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::process::Hostgate;
use support::tools::{curl, describe, stderr, stdout};
use support::{pins, TestCa, TlsUpstream, LOCAL_UPSTREAM, STEP};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Line numbers matter: the access log's `source` is `test.rules:LINE`.
const RULES: &str = "allow allowed.test\ndeny denied.test\n";

/// `local3` (19) · 8 + informational (6).
const LOCAL3_INFO: u32 = 19 * 8 + 6;
/// `daemon` (3) · 8 + informational (6).
const DAEMON_INFO: u32 = 3 * 8 + 6;

/// A configuration directory: a connect listener on 127.0.0.1:0, `default = "deny"` plus
/// `test.rules`, `[log]` as given, then `extra`.
fn config_dir(log: &str, extra: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[[listener]]\nkind = \"connect\"\naddress = \"127.0.0.1:0\"\n\n\
         [policy]\ndefault = \"deny\"\n[[policy.source]]\npath = \"test.rules\"\n\n\
         [log]\nlevel = \"info\"\n{log}\n\n{extra}"
    );
    let path = dir.path().join("hostgate.toml");
    std::fs::write(&path, toml).unwrap();
    std::fs::write(dir.path().join("test.rules"), RULES).unwrap();
    (dir, path)
}

/// What every message received so far was, as received (a datagram, or a line of a stream).
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Vec<u8>>>>);

impl Received {
    fn push(&self, m: Vec<u8>) {
        self.0.lock().unwrap().push(m);
    }

    fn all(&self) -> Vec<Vec<u8>> {
        self.0.lock().unwrap().clone()
    }

    /// The syslog messages so far.
    fn syslog(&self) -> Vec<Syslog> {
        self.all().iter().map(|m| Syslog::parse(&String::from_utf8_lossy(m))).collect()
    }

    /// Waits for a syslog message whose JSON body satisfies `pred`.
    async fn wait_syslog(&self, hg: &mut Hostgate, pred: impl Fn(&Value) -> bool) -> Syslog {
        let start = Instant::now();
        loop {
            if let Some(m) = self.syslog().into_iter().find(|m| pred(&m.json)) {
                return m;
            }
            assert!(hg.alive(), "hostgate exited; stderr:\n{}", hg.lines().join("\n"));
            assert!(start.elapsed() < STEP, "no such syslog message; received:\n{:#?}", self.syslog());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for a journal entry satisfying `pred`.
    async fn wait_journal(&self, hg: &mut Hostgate, pred: impl Fn(&Journal) -> bool) -> Journal {
        let start = Instant::now();
        loop {
            let entries: Vec<Journal> = self.all().iter().filter(|m| !m.is_empty()).map(|m| journal(m)).collect();
            if let Some(e) = entries.into_iter().find(|e| pred(e)) {
                return e;
            }
            assert!(hg.alive(), "hostgate exited; stderr:\n{}", hg.lines().join("\n"));
            assert!(start.elapsed() < STEP, "no such journal entry; received {} datagrams", self.all().len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One RFC 5424 message: `<PRI>VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG`.
#[derive(Debug, Clone)]
struct Syslog {
    pri: u32,
    version: String,
    timestamp: String,
    hostname: String,
    app_name: String,
    procid: String,
    msgid: String,
    structured_data: String,
    json: Value,
}

impl Syslog {
    fn parse(line: &str) -> Syslog {
        let rest = line.strip_prefix('<').unwrap_or_else(|| panic!("no PRI: {line:?}"));
        let (pri, rest) = rest.split_once('>').unwrap_or_else(|| panic!("no PRI: {line:?}"));
        let f: Vec<&str> = rest.splitn(8, ' ').collect();
        assert_eq!(f.len(), 8, "{line:?}");
        Syslog {
            pri: pri.parse().unwrap_or_else(|e| panic!("PRI {pri:?}: {e}")),
            version: f[0].to_string(),
            timestamp: f[1].to_string(),
            hostname: f[2].to_string(),
            app_name: f[3].to_string(),
            procid: f[4].to_string(),
            msgid: f[5].to_string(),
            structured_data: f[6].to_string(),
            json: serde_json::from_str(f[7]).unwrap_or_else(|e| panic!("MSG is not JSON ({e}): {line:?}")),
        }
    }

    /// The header as this gateway writes it: version 1, an RFC 3339 UTC timestamp with
    /// microseconds, this machine's name, `hostgate`, the child's pid, no structured data.
    fn assert_header(&self, pri: u32, pid: u32, msgid: &str) {
        assert_eq!(self.pri, pri, "{self:#?}");
        assert_eq!(self.version, "1", "{self:#?}");
        let ts = regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$").unwrap();
        assert!(ts.is_match(&self.timestamp), "{self:#?}");
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(self.hostname, host.trim(), "{self:#?}");
        assert_eq!(self.app_name, "hostgate", "{self:#?}");
        assert_eq!(self.procid, pid.to_string(), "{self:#?}");
        assert_eq!(self.msgid, msgid, "{self:#?}");
        assert_eq!(self.structured_data, "-", "{self:#?}");
    }
}

/// The listener's address from the `listening` message.
fn listening(m: &Syslog) -> std::net::SocketAddr {
    m.json["address"].as_str().and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("{m:#?}"))
}

/// An allowed tunnel (curl through the proxy to a local TLS upstream) and a denied CONNECT.
struct Site {
    ca: TestCa,
    up: TlsUpstream,
}

impl Site {
    async fn start() -> Site {
        let ca = TestCa::new();
        let up = TlsUpstream::start(&ca, &["allowed.test", "denied.test"], "A").await;
        Site { ca, up }
    }

    fn extra(&self) -> String {
        format!("{LOCAL_UPSTREAM}{}", pins(&[("allowed.test", self.up.addr()), ("denied.test", self.up.addr())]))
    }

    async fn drive(&self, proxy: std::net::SocketAddr) {
        let proxy = format!("http://{proxy}");
        let ca = self.ca.ca_pem_path().to_str().unwrap().to_string();
        let out = curl(&["--proxy", &proxy, "--cacert", &ca, "https://allowed.test/x"]).await;
        assert!(out.status.success(), "{}", describe(&out));
        assert_eq!(stdout(&out), "upstream=A sni=allowed.test path=/x");
        let out = curl(&["--proxy", &proxy, "--cacert", &ca, "https://denied.test/"]).await;
        assert_eq!(out.status.code(), Some(56), "{}", describe(&out));
        assert!(stderr(&out).contains("CONNECT tunnel failed, response 403"), "{}", describe(&out));
    }
}

/// Both access events, checked field by field; returns them (allowed, denied).
async fn assert_access(rx: &Received, hg: &mut Hostgate, pri: u32) -> (Syslog, Syslog) {
    let allowed = rx.wait_syslog(hg, |v| v["target"] == "access" && v["sni"] == "allowed.test").await;
    let denied = rx.wait_syslog(hg, |v| v["target"] == "access" && v["host"] == "denied.test").await;
    for m in [&allowed, &denied] {
        m.assert_header(pri, hg.pid(), "access");
        assert_eq!(m.json["message"], "access", "{m:#?}");
        assert_eq!(m.json["level"], "INFO", "{m:#?}");
        assert!(m.json["client"].as_str().is_some_and(|c| c.starts_with("127.0.0.1:")), "{m:#?}");
        assert_eq!(m.json["kind"], "connect", "{m:#?}");
    }
    let a = &allowed.json;
    assert_eq!(a["action"], "allow", "{a:#}");
    assert_eq!(a["outcome"], "ok", "{a:#}");
    assert_eq!(a["host"], "allowed.test", "{a:#}");
    assert_eq!(a["rule"], "allow allowed.test", "{a:#}");
    assert_eq!(a["protocol"], "tls", "{a:#}");
    let d = &denied.json;
    assert_eq!(d["action"], "deny", "{d:#}");
    assert_eq!(d["outcome"], "denied", "{d:#}");
    assert_eq!(d["status"], 403, "{d:#}");
    assert_eq!(d.get("sni"), None, "{d:#}");
    assert_eq!(d["rule"], "deny denied.test", "{d:#}");
    (allowed, denied)
}

/// SIGTERM, and a clean exit.
async fn stop(hg: Hostgate) {
    hg.signal("TERM");
    let (status, lines) = hg.wait().await;
    assert!(status.success(), "{status}; stderr:\n{}", lines.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_over_udp_is_rfc5424_with_a_json_body() {
    let site = Site::start().await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sock.local_addr().unwrap().port();
    let rx = Received::default();
    let reader = {
        let rx = rx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, _)) = sock.recv_from(&mut buf).await {
                rx.push(buf[..n].to_vec());
            }
        })
    };
    let log = format!("output = \"syslog\"\nsyslog = \"udp://127.0.0.1:{port}\"\nfacility = \"local3\"\n");
    let (_dir, config) = config_dir(&log, &site.extra());
    let mut hg = Hostgate::spawn(&[], &config);
    let up = rx.wait_syslog(&mut hg, |v| v["message"] == "listening" && v["kind"] == "connect").await;
    assert!(up.msgid.starts_with("hostgate_proxy"), "a module's target: {up:#?}");
    up.assert_header(LOCAL3_INFO, hg.pid(), &up.msgid);
    let addr = listening(&up);
    site.drive(addr).await;
    assert_access(&rx, &mut hg, LOCAL3_INFO).await;
    assert!(hg.lines().iter().all(|l| !l.contains("access")), "nothing on stderr: {:?}", hg.lines());

    // The server goes away: the data path does not notice.
    reader.abort();
    let _ = reader.await;
    for _ in 0..3 {
        site.drive(addr).await;
    }
    assert!(hg.alive());
    stop(hg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_to_a_unix_datagram_socket_with_the_default_facility() {
    let site = Site::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.sock");
    let sock = tokio::net::UnixDatagram::bind(&path).unwrap();
    let rx = Received::default();
    {
        let rx = rx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = sock.recv(&mut buf).await {
                rx.push(buf[..n].to_vec());
            }
        });
    }
    let log = format!("output = \"syslog\"\nsyslog = \"unix:{}\"\n", path.display());
    let (_dir, config) = config_dir(&log, &site.extra());
    let mut hg = Hostgate::spawn(&[], &config);
    let up = rx.wait_syslog(&mut hg, |v| v["message"] == "listening" && v["kind"] == "connect").await;
    site.drive(listening(&up)).await;
    assert_access(&rx, &mut hg, DAEMON_INFO).await;
    stop(hg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_over_tcp_is_newline_framed_and_reconnects() {
    let site = Site::start().await;
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let rx = Received::default();
    let serve = |server: tokio::net::TcpListener, rx: Received| {
        tokio::spawn(async move {
            // One connection at a time, one message per line.
            while let Ok((conn, _)) = server.accept().await {
                let mut lines = BufReader::new(conn).split(b'\n');
                while let Ok(Some(line)) = lines.next_segment().await {
                    rx.push(line);
                }
            }
        })
    };
    let task = serve(server, rx.clone());
    let log = format!("output = \"syslog\"\nsyslog = \"tcp://{server_addr}\"\nfacility = \"local3\"\n");
    let (_dir, config) = config_dir(&log, &site.extra());
    let mut hg = Hostgate::spawn(&[], &config);
    let up = rx.wait_syslog(&mut hg, |v| v["message"] == "listening" && v["kind"] == "connect").await;
    let addr = listening(&up);
    site.drive(addr).await;
    assert_access(&rx, &mut hg, LOCAL3_INFO).await;
    assert!(rx.all().iter().all(|m| !m.ends_with(b"\r")), "LF only");

    // The server goes away (connection and listener): connections through the gateway go on.
    task.abort();
    let _ = task.await;
    let started = Instant::now();
    for _ in 0..3 {
        site.drive(addr).await;
    }
    assert!(started.elapsed() < Duration::from_secs(10), "the data path waited for the log");
    assert!(hg.alive());

    // It comes back on the same address: the gateway reconnects (at most once a second) and the
    // next events arrive.
    let before = rx.all().len();
    let server = tokio::net::TcpListener::bind(server_addr).await.unwrap();
    let _task = serve(server, rx.clone());
    let deadline = Instant::now() + STEP;
    loop {
        site.drive(addr).await;
        let after: Vec<Syslog> = rx.syslog().into_iter().skip(before).collect();
        if after.iter().any(|m| m.json["target"] == "access" && m.json["host"] == "denied.test") {
            break;
        }
        assert!(Instant::now() < deadline, "no access event after the server came back");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // What was lost meanwhile is counted, in a warning of its own.
    let note = rx.syslog().into_iter().skip(before).find(|m| m.msgid == "hostgate");
    let note = note.unwrap_or_else(|| panic!("no dropped-messages note: {:#?}", rx.syslog()));
    note.assert_header(19 * 8 + 4, hg.pid(), "hostgate");
    assert!(note.json["dropped"].as_u64().is_some_and(|n| n > 0), "{note:#?}");
    assert_eq!(note.json["syslog"], format!("tcp://{server_addr}"), "{note:#?}");
    stop(hg).await;
}

/// One journal entry: its fields (the native protocol: `KEY=value\n`, or `KEY\n`, a 64-bit
/// little-endian length, the value and `\n`).
type Journal = BTreeMap<String, String>;

fn journal(datagram: &[u8]) -> Journal {
    let mut fields = Journal::new();
    let mut rest = datagram;
    while !rest.is_empty() {
        let end = rest.iter().position(|&b| b == b'\n').unwrap_or_else(|| panic!("unterminated: {rest:?}"));
        let line = &rest[..end];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            let (k, v) = (&line[..eq], &line[eq + 1..]);
            fields.insert(String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(v).into_owned());
            rest = &rest[end + 1..];
        } else {
            let len = u64::from_le_bytes(rest[end + 1..end + 9].try_into().unwrap()) as usize;
            let value = &rest[end + 9..end + 9 + len];
            assert_eq!(rest[end + 9 + len], b'\n', "{rest:?}");
            fields.insert(String::from_utf8_lossy(line).into_owned(), String::from_utf8_lossy(value).into_owned());
            rest = &rest[end + 10 + len..];
        }
    }
    fields
}

/// `unshare -m sh -c 'mount --bind DIR /run/systemd/journal && exec hostgate …'`: the child
/// sees `DIR` as the journal's directory; the rest of the machine does not.
fn in_journal_namespace(dir: &Path) -> Vec<String> {
    std::fs::create_dir_all("/run/systemd/journal").unwrap();
    let script = format!("mount --bind '{}' /run/systemd/journal && exec \"$@\"", dir.display());
    ["unshare", "-m", "sh", "-c", &script, "sh"].iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journald_native_protocol_fields() {
    let site = Site::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sock = tokio::net::UnixDatagram::bind(dir.path().join("socket")).unwrap();
    let rx = Received::default();
    {
        let rx = rx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1 << 20];
            while let Ok(n) = sock.recv(&mut buf).await {
                rx.push(buf[..n].to_vec());
            }
        });
    }
    let (_cfg, config) = config_dir("output = \"journald\"\n", &site.extra());
    let wrapper = in_journal_namespace(dir.path());
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let mut hg = Hostgate::spawn(&wrapper, &config);
    let up = rx.wait_journal(&mut hg, |e| e.get("MESSAGE").is_some_and(|m| m == "listening")).await;
    assert_eq!(up["SYSLOG_IDENTIFIER"], "hostgate", "{up:#?}");
    assert_eq!(up["PRIORITY"], "6", "{up:#?}");
    assert_eq!(up["KIND"], "connect", "{up:#?}");
    let addr = up["ADDRESS"].parse().unwrap_or_else(|e| panic!("{e}: {up:#?}"));
    site.drive(addr).await;

    let is_access = |e: &Journal| e.get("TARGET").is_some_and(|t| t == "access");
    let allowed = rx.wait_journal(&mut hg, |e| is_access(e) && e.get("SNI").is_some_and(|s| s == "allowed.test")).await;
    let denied = rx.wait_journal(&mut hg, |e| is_access(e) && e.get("HOST").is_some_and(|s| s == "denied.test")).await;
    for e in [&allowed, &denied] {
        assert_eq!(e["MESSAGE"], "access", "{e:#?}");
        assert_eq!(e["PRIORITY"], "6", "{e:#?}");
        assert_eq!(e["SYSLOG_IDENTIFIER"], "hostgate", "{e:#?}");
        assert!(e["CLIENT"].starts_with("127.0.0.1:"), "{e:#?}");
        assert_eq!(e["KIND"], "connect", "{e:#?}");
    }
    assert_eq!(allowed["ACTION"], "allow", "{allowed:#?}");
    assert_eq!(allowed["OUTCOME"], "ok", "{allowed:#?}");
    assert_eq!(allowed["RULE"], "allow allowed.test", "{allowed:#?}");
    assert_eq!(denied["ACTION"], "deny", "{denied:#?}");
    assert_eq!(denied["OUTCOME"], "denied", "{denied:#?}");
    assert_eq!(denied["STATUS"], "403", "{denied:#?}");
    assert!(!denied.contains_key("SNI"), "{denied:#?}");
    stop(hg).await;
}

/// Runs the binary (under `wrapper`) on `log`, expecting exit 64 before any socket is bound and
/// standard error containing `want`.
async fn exits_64(wrapper: &[&str], log: &str, want: &str) {
    let (_dir, config) = config_dir(log, "");
    let (status, lines) = Hostgate::spawn(wrapper, &config).wait().await;
    let all = lines.join("\n");
    assert_eq!(status.code(), Some(64), "{status}; stderr:\n{all}");
    assert!(all.contains(want), "want {want:?} in:\n{all}");
    assert!(all.contains(&config.display().to_string()), "names the file: {all}");
    assert!(!all.contains("listening"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_cannot_be_opened_exits_64_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nobody.sock");
    exits_64(
        &[],
        &format!("output = \"syslog\"\nsyslog = \"unix:{}\"\n", missing.display()),
        &format!("log.syslog: cannot open `unix:{}`", missing.display()),
    )
    .await;
    // A TCP port nobody listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    exits_64(
        &[],
        &format!("output = \"syslog\"\nsyslog = \"tcp://127.0.0.1:{port}\"\n"),
        &format!("log.syslog: cannot open `tcp://127.0.0.1:{port}`"),
    )
    .await;
    // No journal: an empty directory where its socket would be.
    let wrapper = in_journal_namespace(dir.path());
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    exits_64(
        &wrapper,
        "output = \"journald\"\n",
        "log.output = \"journald\": cannot reach /run/systemd/journal/socket",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_log_settings_name_the_file_and_line() {
    // `[log]` is line 10 of the file, `level` line 11: the settings below start on line 12.
    exits_64(&[], "output = \"file\"\n", ":12:10: log.output: unknown variant `file`").await;
    exits_64(
        &[],
        "output = \"syslog\"\nsyslog = \"udp://logs\"\n",
        ":13:10: log.syslog: `udp://logs` is not `unix:/PATH`, `udp://HOST:PORT` or `tcp://HOST:PORT`",
    )
    .await;
    exits_64(
        &[],
        "output = \"syslog\"\nfacility = \"local9\"\n",
        ":13:12: log.facility: `local9` is not a facility (daemon, user, local0 … local7)",
    )
    .await;
}
