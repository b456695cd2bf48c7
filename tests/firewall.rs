//! `hostgate firewall`: its output loaded with `nft -f` on a router, then real traffic.
//!
//! Three network namespaces the test creates: the client (`C`), the gateway machine (`G`, a
//! router with IPv4 forwarding on) and "the internet" (`I`, holding `203.0.113.K` and
//! `198.51.100.K`). The real `hostgate` binary runs in `G` with a transparent listener; its
//! generated ruleset is loaded in `G` with `nft -f`. The test then shows, from `C`: TCP 443 to
//! an address in `I` reaches the transparent listener (curl gets the upstream's page for an
//! allowed name, and the gateway logs both the allowed and a denied name with the client's
//! original destination); UDP to an allowed range and port passes (an echo comes back); UDP 443
//! elsewhere is rejected (ICMP port unreachable, although a server listens there, as the same
//! probe showed before the ruleset was loaded); other UDP passes under `reject-quic`.
//!
//! Also: `nft -c` accepts the output for the shipped configuration, and the command's errors.
//!
//! Needs root, `ip`, `nft`, `curl`, `openssl` and `python3`; the namespace test prints why and
//! passes when it cannot run.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use support::process::Hostgate;
use support::tools::{describe, run, stdout};
use support::STEP;

fn hostgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hostgate")).args(args).stdin(Stdio::null()).output().unwrap()
}

fn sh(args: &[&str]) -> Result<Output, String> {
    let out =
        Command::new(args[0]).args(&args[1..]).stdin(Stdio::null()).output().map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!("{}: {} {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn can_run(what: &str, tools: &[&str]) -> bool {
    let root = sh(&["id", "-u"]).is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let missing: Vec<&&str> = tools.iter().filter(|t| sh(&["sh", "-c", &format!("command -v {t}")]).is_err()).collect();
    if !root || !missing.is_empty() {
        eprintln!("skipping {what}: needs root and {tools:?} (missing: {missing:?})");
        return false;
    }
    true
}

/// The three namespaces and their links; removed on drop.
struct Router {
    k: u32,
    client: String,
    gateway: String,
    internet: String,
    /// The gateway's interface towards the client (the LAN).
    lan: String,
}

impl Router {
    fn create() -> Option<Router> {
        // Claim K by creating the client namespace (the name exists: someone else's).
        let start = std::process::id().wrapping_mul(13);
        let k = (0..200)
            .map(|i| start.wrapping_add(i) % 200 + 1)
            .find(|k| sh(&["ip", "netns", "add", &format!("hgfw{k}c")]).is_ok())?;
        let r = Router {
            k,
            client: format!("hgfw{k}c"),
            gateway: format!("hgfw{k}g"),
            internet: format!("hgfw{k}i"),
            lan: format!("fw{k}gc"),
        };
        let (c, g, i) = (r.client.as_str(), r.gateway.as_str(), r.internet.as_str());
        let (gc, cg, gi, ig) = (format!("fw{k}gc"), format!("fw{k}cg"), format!("fw{k}gi"), format!("fw{k}ig"));
        let a = |x: u8| format!("10.236.{k}.{x}/30");
        let b = |x: u8| format!("10.237.{k}.{x}/30");
        let steps: Vec<Vec<String>> = vec![
            vec!["ip", "netns", "add", g],
            vec!["ip", "netns", "add", i],
            vec!["ip", "link", "add", &gc, "netns", g, "type", "veth", "peer", "name", &cg, "netns", c],
            vec!["ip", "link", "add", &gi, "netns", g, "type", "veth", "peer", "name", &ig, "netns", i],
            vec!["ip", "-n", c, "addr", "add", &a(2), "dev", &cg],
            vec!["ip", "-n", g, "addr", "add", &a(1), "dev", &gc],
            vec!["ip", "-n", g, "addr", "add", &b(1), "dev", &gi],
            vec!["ip", "-n", i, "addr", "add", &b(2), "dev", &ig],
            vec!["ip", "-n", i, "addr", "add", &format!("203.0.113.{k}/32"), "dev", "lo"],
            vec!["ip", "-n", i, "addr", "add", &format!("198.51.100.{k}/32"), "dev", "lo"],
            vec!["ip", "-n", c, "link", "set", "lo", "up"],
            vec!["ip", "-n", g, "link", "set", "lo", "up"],
            vec!["ip", "-n", i, "link", "set", "lo", "up"],
            vec!["ip", "-n", c, "link", "set", &cg, "up"],
            vec!["ip", "-n", g, "link", "set", &gc, "up"],
            vec!["ip", "-n", g, "link", "set", &gi, "up"],
            vec!["ip", "-n", i, "link", "set", &ig, "up"],
            vec!["ip", "-n", c, "route", "add", "default", "via", &format!("10.236.{k}.1")],
            vec!["ip", "-n", i, "route", "add", "default", "via", &format!("10.237.{k}.1")],
            vec!["ip", "-n", g, "route", "add", &format!("203.0.113.{k}/32"), "via", &format!("10.237.{k}.2")],
            vec!["ip", "-n", g, "route", "add", &format!("198.51.100.{k}/32"), "via", &format!("10.237.{k}.2")],
            vec!["ip", "netns", "exec", g, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
        ]
        .into_iter()
        .map(|v| v.into_iter().map(str::to_string).collect())
        .collect();
        for step in steps {
            let args: Vec<&str> = step.iter().map(String::as_str).collect();
            if let Err(e) = sh(&args) {
                eprintln!("skipping: cannot build the namespaces: {e}");
                return None;
            }
        }
        Some(r)
    }

    fn allowed_ip(&self) -> String {
        format!("203.0.113.{}", self.k)
    }

    fn other_ip(&self) -> String {
        format!("198.51.100.{}", self.k)
    }

    /// `ip netns exec NS args…`, asynchronously.
    async fn exec(&self, ns: &str, args: &[&str]) -> Output {
        let mut argv = vec!["netns", "exec", ns];
        argv.extend_from_slice(args);
        run("ip", &argv, None).await
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        for ns in [&self.client, &self.gateway, &self.internet] {
            let _ = sh(&["ip", "netns", "pids", ns]).map(|o| {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = sh(&["kill", "-9", pid]);
                }
            });
            let _ = sh(&["ip", "netns", "del", ns]);
        }
    }
}

/// A UDP echo server on each `ADDRESS:PORT` argument (bound to the address, so that the echo
/// leaves from the address the probe sent to).
const ECHO: &str = r#"
import select, socket, sys
socks = []
for a in sys.argv[1:]:
    host, port = a.rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, int(port)))
    socks.append(s)
print("ready", flush=True)
while True:
    for s in select.select(socks, [], [])[0]:
        data, peer = s.recvfrom(2048)
        s.sendto(b"echo:" + data, peer)
"#;

/// One datagram to argv[1]:argv[2]; prints `reply:…`, `refused` (ICMP unreachable) or `timeout`.
const PROBE: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.5)
s.connect((sys.argv[1], int(sys.argv[2])))
try:
    s.send(b"hello")
    print("reply:" + s.recv(2048).decode())
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
"#;

async fn probe(r: &Router, ip: &str, port: u16) -> String {
    let o = r.exec(&r.client, &["python3", "-c", PROBE, ip, &port.to_string()]).await;
    assert!(o.status.success(), "{}", describe(&o));
    stdout(&o).trim().to_string()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[tokio::test]
async fn the_generated_ruleset_redirects_tcp_and_decides_udp_on_a_router() {
    if !can_run("the firewall namespace test", &["ip", "nft", "curl", "openssl", "python3"]) {
        return;
    }
    let Some(r) = Router::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (allowed, other) = (r.allowed_ip(), r.other_ip());

    // "The internet": a TLS server for allowed.test on 203.0.113.K:443, UDP echo servers.
    let (cert, key) = (dir.path().join("up.pem"), dir.path().join("up.key"));
    sh(&[
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=allowed.test",
        "-addext",
        "subjectAltName=DNS:allowed.test",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ])
    .unwrap();
    let accept = format!("{allowed}:443");
    let mut tls = tokio::process::Command::new("ip")
        .args(["netns", "exec", &r.internet, "openssl", "s_server", "-quiet", "-www", "-accept", &accept])
        .args(["-cert", cert.to_str().unwrap(), "-key", key.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut echo = tokio::process::Command::new("ip")
        .args(["netns", "exec", &r.internet, "python3", "-c", ECHO])
        .args([3478, 443, 5000].iter().flat_map(|p| [format!("{allowed}:{p}"), format!("{other}:{p}")]))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(echo.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(STEP, lines.next_line()).await.unwrap().unwrap();
        assert_eq!(first.as_deref(), Some("ready"));
    }

    // Before any ruleset: every probe is echoed (the servers are there; what follows is the
    // firewall's doing).
    for (ip, port) in [(&allowed, 3478), (&other, 443), (&allowed, 443), (&other, 5000)] {
        assert_eq!(probe(&r, ip, port).await, format!("reply:echo:hello"), "{ip}:{port} before the ruleset");
    }

    // The gateway in G: a transparent listener on every address, a rule file with a UDP rule.
    write(dir.path(), "a.rules", "allow allowed.test\nallow udp://203.0.113.0/24:3478-3481\n");
    let config = write(
        dir.path(),
        "hostgate.toml",
        &format!(
            "[[listener]]\nkind = \"transparent\"\naddress = \"0.0.0.0:15001\"\n\n\
             [policy]\ndefault = \"deny\"\n\n[[policy.source]]\npath = \"a.rules\"\n\n\
             [upstream]\nallow_private = [\"203.0.113.0/24\"]\n\n\
             [resolve]\n\"allowed.test\" = [\"{allowed}\"]\n\"denied.test\" = [\"{allowed}\"]\n\n\
             [firewall]\nlan = [\"{}\"]\n\n[log]\nformat = \"json\"\n",
            r.lan
        ),
    );
    let check = hostgate(&["check", "--config", &config]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let said = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(
        said.contains(&format!(
            "firewall: table inet hostgate; TCP 80,443 from {} redirected to :15001; 1 UDP rules in 1 sets; 0 client groups; other UDP: reject-quic",
            r.lan
        )),
        "{said}"
    );
    let generated = hostgate(&["firewall", "--config", &config]);
    assert!(generated.status.success(), "{}", String::from_utf8_lossy(&generated.stderr));
    let ruleset = write(dir.path(), "hostgate.nft", &String::from_utf8_lossy(&generated.stdout));
    let loaded = r.exec(&r.gateway, &["nft", "-f", &ruleset]).await;
    assert!(loaded.status.success(), "nft -f: {}\n{}", describe(&loaded), std::fs::read_to_string(&ruleset).unwrap());
    // Loading it again replaces the table (one transaction), it does not add a second copy.
    let again = r.exec(&r.gateway, &["nft", "-f", &ruleset]).await;
    assert!(again.status.success(), "{}", describe(&again));
    let listed = stdout(&r.exec(&r.gateway, &["nft", "list", "table", "inet", "hostgate"]).await);
    assert_eq!(listed.matches("redirect to :15001").count(), 1, "{listed}");

    let mut hg = Hostgate::spawn(&["ip", "netns", "exec", &r.gateway], Path::new(&config));
    hg.listening("transparent").await;

    // TCP 443 from the LAN reaches the transparent listener: curl believes it talks to
    // 203.0.113.K; the gateway decides on the SNI and connects to the name.
    let resolve = format!("allowed.test:443:{allowed}");
    let o = r
        .exec(
            &r.client,
            &[
                "curl",
                "-sS",
                "--max-time",
                "10",
                "--cacert",
                cert.to_str().unwrap(),
                "--resolve",
                &resolve,
                "https://allowed.test/",
            ],
        )
        .await;
    assert!(o.status.success() && stdout(&o).contains("s_server"), "{}", describe(&o));
    let ev = hg.wait_json(|v| v["message"] == "access" && v["sni"] == "allowed.test", STEP).await;
    assert_eq!(ev["action"], "allow", "{ev:#}");
    assert_eq!(ev["client"].as_str().map(|c| c.starts_with(&format!("10.236.{}.2:", r.k))), Some(true), "{ev:#}");
    assert_eq!(ev["dst"].as_str(), Some(format!("{allowed}:443").as_str()), "the original destination: {ev:#}");
    assert_eq!((ev["kind"].as_str(), ev["outcome"].as_str()), (Some("transparent"), Some("ok")), "{ev:#}");
    let resolve = format!("denied.test:443:{allowed}");
    let o = r
        .exec(
            &r.client,
            &[
                "curl",
                "-sS",
                "--max-time",
                "10",
                "--cacert",
                cert.to_str().unwrap(),
                "--resolve",
                &resolve,
                "https://denied.test/",
            ],
        )
        .await;
    assert!(!o.status.success(), "{}", describe(&o));
    let ev = hg.wait_json(|v| v["message"] == "access" && v["sni"] == "denied.test", STEP).await;
    assert_eq!(ev["action"], "deny", "{ev:#}");

    // UDP: the allowed range and port passes; UDP 443 is rejected elsewhere and outside the
    // rule's ports; other UDP passes (`reject-quic`).
    assert_eq!(probe(&r, &allowed, 3478).await, "reply:echo:hello", "udp://203.0.113.0/24:3478-3481");
    assert_eq!(probe(&r, &other, 443).await, "refused", "QUIC to an address no rule allows");
    assert_eq!(probe(&r, &allowed, 443).await, "refused", "QUIC on a port the rule does not list");
    assert_eq!(probe(&r, &other, 5000).await, "reply:echo:hello", "other UDP under reject-quic");

    hg.signal("TERM");
    let (status, _) = hg.wait().await;
    assert!(status.success(), "{status}");
    let _ = tls.kill().await;
    let _ = echo.kill().await;
}

#[test]
fn nft_accepts_the_output_for_the_shipped_configuration() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config/hostgate.toml");
    let o = hostgate(&["firewall", "--config", shipped, "--lan", "lan0"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(text.contains("iifname { \"lan0\" } meta nfproto ipv4 tcp dport { 80, 443 } redirect to :15001"), "{text}");
    assert!(text.contains("udp dport 443 reject"), "{text}");
    // The shipped transparent listener is on loopback, which REDIRECT cannot reach: said twice.
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(err.contains("warning: the transparent listener is on 127.0.0.1:15001"), "{err}");
    assert!(text.contains("# warning: the transparent listener is on 127.0.0.1:15001"), "{text}");
    if !can_run("nft -c on the shipped output", &["nft"]) {
        return;
    }
    let mut child = Command::new("nft")
        .args(["-c", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let checked = child.wait_with_output().unwrap();
    assert!(checked.status.success(), "nft -c: {}\n{text}", String::from_utf8_lossy(&checked.stderr));
}

#[test]
fn the_command_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.rules", "allow a.example\nallow udp://time.example:123\n");
    let config =
        write(dir.path(), "hostgate.toml", "[policy]\ndefault = \"deny\"\n\n[[policy.source]]\npath = \"a.rules\"\n");
    // A UDP rule with a name is a load error naming file and line.
    let o = hostgate(&["firewall", "--config", &config, "--lan", "lan0"]);
    let err = stderr_of(&o);
    assert!(!o.status.success());
    assert!(err.contains("a.rules:2: `udp://time.example:123`: a UDP rule needs an address or network"), "{err}");
    write(dir.path(), "a.rules", "allow a.example\nallow udp://192.0.2.10:123\n");
    let o = hostgate(&["firewall", "--config", &config]);
    assert!(!o.status.success());
    assert!(
        stderr_of(&o).contains("no LAN interface: set `[firewall] lan = [\"lan0\"]` or give `--lan IFACE`"),
        "{}",
        stderr_of(&o)
    );
    let o = hostgate(&["firewall", "--config", &config, "--lan", "bad name"]);
    assert!(stderr_of(&o).contains("--lan `bad name` is not an interface name"), "{}", stderr_of(&o));
    // No transparent listener: UDP only, and `check` says where the UDP rules are enforced.
    let o = hostgate(&["firewall", "--config", &config, "--lan", "lan0", "--table", "site"]);
    assert!(o.status.success(), "{}", stderr_of(&o));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(text.contains("table inet site {") && !text.contains("redirect to"), "{text}");
    assert!(text.contains("ip daddr @g0_p1_v4 udp dport 123 accept"), "{text}");
    assert!(stderr_of(&o).contains("no transparent listener"), "{}", stderr_of(&o));
    let o = hostgate(&["check", "--config", &config]);
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(
            "firewall: no [firewall] lan: `hostgate firewall --lan IFACE` prints the nftables ruleset (1 UDP rules are only enforced there)"
        ),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // A bad [firewall] is a configuration error with file and line.
    std::fs::write(&config, "[policy]\ndefault = \"deny\"\n\n[firewall]\nlan = [\"lan0\"]\nredirect_ports = [80, 0]\n")
        .unwrap();
    let o = hostgate(&["check", "--config", &config]);
    assert!(stderr_of(&o).contains("hostgate.toml:6:"), "{}", stderr_of(&o));
    assert!(stderr_of(&o).contains("firewall.redirect_ports: 0 is not a port (1-65535)"), "{}", stderr_of(&o));
}

fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Every shape the generator writes, checked by nftables itself: client groups (nested
/// networks, IPv6), IPv4 and IPv6 destination sets, port lists, a deny, a deny in report mode,
/// `udp_default = "reject"`, transparent listeners on both families.
#[test]
fn nft_accepts_groups_ipv6_report_mode_and_every_verdict() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.rules",
        "allow *.example.com\nbypass udp://52.112.0.0/14:3478-3481,443\nbypass udp://[2603:1063::]/38:3478-3481\n\
         allow udp://192.0.2.10:123\ndeny udp://52.113.0.0/16\nallow udp://52.113.5.0/24:5000\n",
    );
    write(dir.path(), "trial.rules", "deny udp://198.51.100.0/24\n");
    write(dir.path(), "kiosk.rules", "allow udp://192.0.2.53:53\n");
    let config = write(
        dir.path(),
        "hostgate.toml",
        "[[listener]]\nkind = \"transparent\"\naddress = \"0.0.0.0:15001\"\n\n\
         [[listener]]\nkind = \"transparent\"\naddress = \"[::]:15001\"\n\n\
         [policy]\ndefault = \"deny\"\n\n\
         [[policy.source]]\npath = \"a.rules\"\n\n\
         [[policy.source]]\npath = \"trial.rules\"\nmode = \"report\"\n\n\
         [[policy.source]]\npath = \"kiosk.rules\"\nname = \"kiosk\"\n\n\
         [[client]]\nname = \"kiosks\"\nnetworks = [\"10.1.0.0/16\", \"fd00:1::/64\"]\nsources = [\"kiosk\"]\n\n\
         [[client]]\nname = \"staff\"\nnetworks = [\"10.0.0.0/8\"]\nsources = [\"a.rules\", \"trial.rules\", \"kiosk\"]\n\n\
         [firewall]\nlan = [\"lan0\", \"wlan*\"]\nudp_default = \"reject\"\ntable = \"site_gw\"\n",
    );
    let o = hostgate(&["firewall", "--config", &config]);
    assert!(o.status.success(), "{}", stderr_of(&o));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    for want in [
        "table inet site_gw {",
        // Listeners on both families: both redirected, nothing rejected for lack of one.
        "iifname { \"lan0\", \"wlan*\" } tcp dport { 80, 443 } redirect to :15001",
        // Nested client networks: the staff set has a hole where the kiosks are.
        "elements = { 10.0.0.0/16, 10.2.0.0/15,",
        "ip saddr @clients_g1_v4 jump udp_g1",
        "ip6 saddr @clients_g1_v6 jump udp_g1",
        "ip saddr @clients_g2_v4 jump udp_g2",
        "ip daddr @g0_p1_v4 udp dport { 443, 3478-3481 } accept",
        "ip6 daddr @g0_p",
        "log prefix \"hostgate would_deny: \" accept",
        "\t\treject  # [firewall] udp_default = \"reject\"",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(!text.contains("reject with tcp reset"), "{text}");
    // The kiosks see only their own source's UDP rule.
    let kiosks = text.split("chain udp_g1 {").nth(1).unwrap().split('}').next().unwrap();
    assert_eq!(kiosks.matches(" accept").count(), 1, "{kiosks}");
    if !can_run("nft -c on the generated ruleset", &["nft"]) {
        return;
    }
    let file = write(dir.path(), "out.nft", &text);
    let checked = Command::new("nft").args(["-c", "-f", &file]).output().unwrap();
    assert!(checked.status.success(), "nft -c: {}\n{text}", stderr_of(&checked));
}
