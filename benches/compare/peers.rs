//! The proxies: each one's configuration written from a [`RuleSet`], started on one CPU, watched
//! (CPU time and memory of its whole process group) and stopped.
//!
//! - **hostgate**: the release binary, a `transparent` listener behind an iptables `REDIRECT`
//!   (the way it is deployed), the rule files themselves, `[resolve]` pins sending every name
//!   the load asks for to the local upstream, and `[log] level = "warn"` (no access log, like the
//!   peers' defaults; the `hostgate+log` row keeps the access log, written to a file).
//! - **HAProxy**: `mode tcp`, `req.ssl_sni` looked up in `map_str` (exact names), then `map_end`
//!   (`*.suffix` as `.suffix`, longest first), then `map_reg` (globs, most specific first);
//!   `tcp-request content reject` unless the value is `fwd`.
//! - **nginx**: `stream` with `ssl_preread` and `map $ssl_preread_server_name` in `hostnames`
//!   mode (exact names, `*.suffix`, then `~` regexes in order); a denied name maps to a closed
//!   port (the stream map cannot refuse by itself), so nginx refuses it after a failed connect.
//! - **sniproxy**: one ordered `table` of anchored regexes, most specific first; a denied name
//!   maps to a closed port, a name in no entry is refused by sniproxy itself.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::rules::{Entry, RuleSet, Shape};

/// A proxy under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Hostgate,
    HostgateLog,
    Haproxy,
    Nginx,
    Sniproxy,
}

impl Kind {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::Hostgate => "hostgate",
            Kind::HostgateLog => "hostgate+log",
            Kind::Haproxy => "haproxy",
            Kind::Nginx => "nginx",
            Kind::Sniproxy => "sniproxy",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Kind> {
        [Kind::Hostgate, Kind::HostgateLog, Kind::Haproxy, Kind::Nginx, Kind::Sniproxy]
            .into_iter()
            .find(|k| k.label() == s)
    }

    /// The program's version, for the report.
    pub(crate) fn version(self, hostgate: &Path) -> String {
        let (prog, args): (&Path, &[&str]) = match self {
            Kind::Hostgate | Kind::HostgateLog => (hostgate, &["--version"]),
            Kind::Haproxy => (Path::new("haproxy"), &["-v"]),
            Kind::Nginx => (Path::new("nginx"), &["-v"]),
            Kind::Sniproxy => (Path::new("sniproxy"), &["-V"]),
        };
        match Command::new(prog).args(args).output() {
            Ok(o) => {
                let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
                text.lines().next().unwrap_or("").trim().to_string()
            }
            Err(e) => format!("not runnable: {e}"),
        }
    }
}

/// The address clients of the next proxy started connect to: every proxy is reached the same
/// way, through an iptables `REDIRECT` (hostgate's transparent listener needs one; the peers get
/// one too, so that each pays the same NAT cost).
///
/// Each start gets an address of its own (`127.0.1.1`, `127.0.1.2`, …), never one an earlier pass
/// used. A redirected connection's conntrack entry keeps the port it was redirected to, and one
/// that conntrack did not see close (it ignores some resets) stays in `CLOSE_WAIT`, `FIN_WAIT` or
/// `ESTABLISHED` for minutes to days. When a later pass redirected the same address to another
/// port, a client whose source port matched such an entry had its SYN sent to the earlier pass's
/// port, where nothing listened: a `connect refused` (the connect errors of hostgate's 100k pass,
/// which came after its shipped pass on the same address).
fn redirected() -> SocketAddr {
    static STARTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    SocketAddr::from((std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(127, 0, 1, 0)) + n), 443))
}
/// A port nothing listens on: where nginx and sniproxy send denied names.
pub(crate) const CLOSED: &str = "127.0.0.1:1";

/// A running proxy.
#[derive(Debug)]
pub(crate) struct Peer {
    /// Where clients connect.
    pub(crate) addr: SocketAddr,
    child: Child,
    pgid: u32,
    redirect: Option<Vec<String>>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Sorted like hostgate's precedence: exact first, then more literal bytes, refusals first on ties.
fn by_specificity(entries: &[Entry]) -> Vec<&Entry> {
    let mut v: Vec<&Entry> = entries.iter().collect();
    v.sort_by_key(|e| std::cmp::Reverse((e.exact, e.literal, !e.forward)));
    v
}

/// Writes `kind`'s configuration for `set` into `dir`; returns the command line to start it and
/// where clients connect.
fn configure(
    kind: Kind,
    dir: &Path,
    set: &RuleSet,
    pins: &[String],
    upstream: SocketAddr,
    hostgate: &Path,
) -> Result<(Vec<String>, SocketAddr), String> {
    let port = free_port();
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse().map_err(|e| format!("{e}"))?;
    let d = dir.display();
    match kind {
        Kind::Hostgate | Kind::HostgateLog => {
            let mut toml = format!(
                "[[listener]]\nkind = \"transparent\"\naddress = \"{listen}\"\n\n[policy]\ndefault = \"deny\"\n{}\n\
                 [upstream]\nverify_destination = \"name\"\nallow_private = [\"127.0.0.0/8\"]\nconnect_timeout = \"5s\"\n\n\
                 [limits]\nmax_connections = 100000\n\n[log]\nlevel = \"{}\"\n\n[resolve]\n",
                set.sources_toml,
                if kind == Kind::HostgateLog { "warn,access=info" } else { "warn" }
            );
            for name in pins {
                let _ = writeln!(toml, "\"{name}\" = [\"{upstream}\"]");
            }
            let path = dir.join("hostgate.toml");
            write(&path, &toml)?;
            let cmd = vec![hostgate.display().to_string(), "run".into(), "--config".into(), path.display().to_string()];
            Ok((cmd, listen))
        }
        Kind::Haproxy => {
            // HAProxy refuses to start unless it can raise its descriptor limit to what maxconn
            // needs (two per connection).
            let maxconn = nofile_limit().saturating_sub(200) / 2;
            let (mut exact, mut suffix, mut regex) = (String::new(), String::new(), String::new());
            for e in by_specificity(&set.entries) {
                let v = if e.forward { "fwd" } else { "deny" };
                match &e.shape {
                    Shape::Exact(n) => writeln!(exact, "{n} {v}"),
                    Shape::Suffix(s) => writeln!(suffix, ".{s} {v}"),
                    Shape::Glob(re) => writeln!(regex, "{re} {v}"),
                }
                .map_err(|e| e.to_string())?;
            }
            write(&dir.join("exact.map"), &exact)?;
            write(&dir.join("suffix.map"), &suffix)?;
            write(&dir.join("regex.map"), &regex)?;
            let cfg = format!(
                "global\n    maxconn {maxconn}\n    nbthread 1\n    pidfile {d}/haproxy.pid\n\n\
                 defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n\n\
                 frontend sni\n    bind {listen}\n    maxconn {maxconn}\n    tcp-request inspect-delay 5s\n\
                 \x20   tcp-request content reject unless {{ req.ssl_hello_type 1 }}\n\
                 \x20   tcp-request content set-var(sess.act) req.ssl_sni,lower,map_str({d}/exact.map)\n\
                 \x20   tcp-request content set-var(sess.act) req.ssl_sni,lower,map_end({d}/suffix.map) if !{{ var(sess.act) -m found }}\n\
                 \x20   tcp-request content set-var(sess.act) req.ssl_sni,lower,map_reg({d}/regex.map) if !{{ var(sess.act) -m found }}\n\
                 \x20   tcp-request content reject unless {{ var(sess.act) -m str fwd }}\n\
                 \x20   default_backend up\n\n\
                 backend up\n    server up {upstream} maxconn {maxconn}\n"
            );
            let path = dir.join("haproxy.cfg");
            write(&path, &cfg)?;
            Ok((vec!["haproxy".into(), "-db".into(), "-f".into(), path.display().to_string()], listen))
        }
        Kind::Nginx => {
            let mut map = String::new();
            let mut regexes = String::new();
            for e in by_specificity(&set.entries) {
                let v = if e.forward { upstream.to_string() } else { CLOSED.to_string() };
                match &e.shape {
                    Shape::Exact(n) => writeln!(map, "{n} {v};"),
                    Shape::Suffix(s) => writeln!(map, "*.{s} {v};"),
                    Shape::Glob(re) => writeln!(regexes, "\"~{re}\" {v};"),
                }
                .map_err(|e| e.to_string())?;
            }
            map.push_str(&regexes);
            write(&dir.join("names.map"), &map)?;
            let cfg = format!(
                "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n\
                 worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log crit;\n\
                 worker_rlimit_nofile 250000;\n\
                 events {{\n    worker_connections 100000;\n}}\n\
                 stream {{\n    map_hash_max_size 1048576;\n    map_hash_bucket_size 256;\n\
                 \x20   map $ssl_preread_server_name $backend {{\n        hostnames;\n        default {CLOSED};\n        include {d}/names.map;\n    }}\n\
                 \x20   server {{\n        listen {listen};\n        ssl_preread on;\n        preread_timeout 5s;\n\
                 \x20       proxy_pass $backend;\n        proxy_connect_timeout 5s;\n    }}\n}}\n"
            );
            let path = dir.join("nginx.conf");
            write(&path, &cfg)?;
            Ok((
                vec![
                    "nginx".into(),
                    "-c".into(),
                    path.display().to_string(),
                    "-e".into(),
                    format!("{d}/nginx-error.log"),
                ],
                listen,
            ))
        }
        Kind::Sniproxy => {
            let mut table = String::new();
            for e in by_specificity(&set.entries) {
                let v = if e.forward { upstream.to_string() } else { CLOSED.to_string() };
                // sniproxy's configuration reader drops backslashes: a literal dot is `[.]`.
                let re = match &e.shape {
                    Shape::Exact(n) => format!("^{}$", n.replace('.', "[.]")),
                    Shape::Suffix(s) => format!("^.+[.]{}$", s.replace('.', "[.]")),
                    Shape::Glob(re) => re.replace("\\.", "[.]"),
                };
                let _ = writeln!(table, "    {re} {v}");
            }
            let cfg = format!(
                "user root\npidfile {d}/sniproxy.pid\n\nerror_log {{\n    filename {d}/sniproxy-error.log\n    priority crit\n}}\n\n\
                 listener {listen} {{\n    protocol tls\n    table names\n}}\n\ntable names {{\n{table}}}\n"
            );
            let path = dir.join("sniproxy.conf");
            write(&path, &cfg)?;
            Ok((vec!["sniproxy".into(), "-f".into(), "-c".into(), path.display().to_string()], listen))
        }
    }
}

fn iptables(op: &str, rule: &[String]) -> Result<(), String> {
    let out =
        Command::new("iptables").args(["-t", "nat", op]).args(rule).output().map_err(|e| format!("iptables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("iptables -t nat {op} {}: {}", rule.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Peer {
    /// Writes the configuration and starts the proxy pinned to `cpu` (a `taskset -c` list); waits
    /// until it accepts connections.
    pub(crate) fn start(
        kind: Kind,
        dir: &Path,
        set: &RuleSet,
        pins: &[String],
        upstream: SocketAddr,
        hostgate: &Path,
        cpu: &str,
    ) -> Result<Peer, String> {
        let dir = dir.join(kind.label());
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let (cmd, listen) = configure(kind, &dir, set, pins, upstream, hostgate)?;
        let log = dir.join("output.log");
        let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut command = Command::new("taskset");
        command.arg("-c").arg(cpu).args(&cmd).stdin(Stdio::null()).stdout(out).stderr(err);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().map_err(|e| format!("{}: {e}", cmd.join(" ")))?;
        let pgid = child.id();
        let addr = redirected();
        let mut peer = Peer { addr, child, pgid, redirect: None };
        let rule: Vec<String> =
            ["OUTPUT", "-p", "tcp", "-d", &addr.ip().to_string(), "--dport", "443", "-j", "REDIRECT", "--to-ports"]
                .iter()
                .map(|s| s.to_string())
                .chain([listen.port().to_string()])
                .collect();
        iptables("-A", &rule)?;
        peer.redirect = Some(rule);
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if let Ok(Some(status)) = peer.child.try_wait() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("{} exited at start ({status}): {}", kind.label(), text.trim()));
            }
            if std::net::TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("{} did not listen on {listen} within 300 s", kind.label()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(peer)
    }

    /// CPU time (user + system) of the proxy's process group so far.
    pub(crate) fn cpu(&self) -> Duration {
        let tick = clock_tick();
        group_pids(self.pgid)
            .iter()
            .filter_map(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                let after = stat.rsplit_once(')')?.1;
                let f: Vec<&str> = after.split_whitespace().collect();
                // Fields 14 and 15 (utime, stime) are the 12th and 13th after the command.
                let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
                Some(Duration::from_secs_f64(ticks as f64 / tick))
            })
            .sum()
    }

    /// Resident memory of the process group: (now, peak), in KiB.
    pub(crate) fn memory_kib(&self) -> (u64, u64) {
        let mut now = 0;
        let mut peak = 0;
        for pid in group_pids(self.pgid) {
            let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { continue };
            for line in status.lines() {
                let value = || line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                if line.starts_with("VmRSS:") {
                    now += value();
                } else if line.starts_with("VmHWM:") {
                    peak += value();
                }
            }
        }
        (now, peak)
    }

    /// Stops the proxy (SIGTERM to its group, then SIGKILL) and removes its REDIRECT.
    pub(crate) fn stop(mut self) {
        if let Some(rule) = self.redirect.take() {
            let _ = iptables("-D", &rule);
        }
        let _ = Command::new("kill").args(["-TERM", "--", &format!("-{}", self.pgid)]).output();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.pgid)]).output();
        let _ = self.child.wait();
    }
}

fn group_pids(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some((_, after)) = stat.rsplit_once(')') else { continue };
        // After the command: state, ppid, pgrp.
        if after.split_whitespace().nth(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid) {
            out.push(pid);
        }
    }
    out
}

fn clock_tick() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// This process's descriptor limit (the proxies inherit it).
pub(crate) fn nofile_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(1024)
}

/// Removes REDIRECT rules a run that was killed left for the harness's addresses.
pub(crate) fn clear_redirects() {
    let Ok(out) = Command::new("iptables").args(["-t", "nat", "-S", "OUTPUT"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let ours = (2..=6).any(|k| line.contains(&format!("-d 127.0.0.{k}/32"))) && line.contains("REDIRECT");
        if let (true, Some(rule)) = (ours, line.strip_prefix("-A ")) {
            let args: Vec<String> = rule.split_whitespace().map(str::to_string).collect();
            let _ = iptables("-D", &args);
        }
    }
}
