//! The PAC file: evaluated by a real PAC engine (Debian's `python3-pacparser`, SpiderMonkey) for
//! every check name of the shipped policy and its near misses, and for a hand-written policy name
//! by name; every answer must agree with hostgate's own decision. Then served by the real binary
//! on the connect and admin listeners (content type, ETag, 304, HEAD, a SIGHUP that changes it).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};

use hostgate_matcher::Host;
use hostgate_proxy::config::{Config, PacConfig};
use hostgate_proxy::pac::{Pac, CONTENT_TYPE_PAC};
use hostgate_proxy::policy::{Action, AddrQuery, GroupId, Policy, Query, Rule, Scheme, Verdict};
use serde_json::Value;
use support::http::{read_response, Response};
use support::process::Hostgate;
use support::STEP;
use tokio::io::{AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------------------------
// The PAC engine.

/// The Python with Debian's `pacparser` module: the system one (a pyenv shim first on `PATH`
/// does not see Debian's packages), else `python3`.
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// One python3 process: loads the PAC file, then answers `url\thost` lines with
/// `FindProxyForURL`'s result, one line each.
const ENGINE: &str = r#"
import sys, pacparser
pacparser.init()
pacparser.parse_pac_file(sys.argv[1])
out = sys.stdout
for line in sys.stdin:
    url, host = line.rstrip("\n").split("\t")
    out.write(pacparser.find_proxy(url, host) + "\n")
out.flush()
"#;

/// `FindProxyForURL(url, host)` of `pac` for every query, by pacparser.
fn evaluate(pac: &str, queries: &[(String, String)]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.pac");
    std::fs::write(&file, pac).unwrap();
    let mut child = Command::new(python())
        .args(["-c", ENGINE, file.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python()));
    let mut stdin = child.stdin.take().unwrap();
    let input: String = queries.iter().map(|(u, h)| format!("{u}\t{h}\n")).collect();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let answers: Vec<String> = BufReader::new(child.stdout.take().unwrap()).lines().map(Result::unwrap).collect();
    writer.join().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && answers.len() == queries.len(),
        "pacparser failed ({}; {} answers for {} queries; is python3-pacparser installed?): {}",
        out.status,
        answers.len(),
        queries.len(),
        String::from_utf8_lossy(&out.stderr)
    );
    answers
}

// ---------------------------------------------------------------------------------------------
// What hostgate decides, from the library.

/// The (scheme, port) pairs the proxy decides a URL by (README, "The PAC file"): `http://` is a
/// request; `https://`/`wss://` a CONNECT (http on port 80, else https) carrying TLS; `ws://` a
/// CONNECT carrying HTTP. `None` for other schemes.
fn targets(url: &str) -> Option<Vec<(Scheme, u16)>> {
    let (scheme, rest) = url.split_once("://")?;
    let auth = rest.split(['/', '?', '#']).next()?;
    let auth = auth.rsplit_once('@').map_or(auth, |(_, a)| a);
    let after = auth.rfind(']').map_or(0, |i| i + 1);
    let port = match auth[after..].rsplit_once(':') {
        Some((_, p)) if !p.is_empty() => p.parse::<u16>().ok().filter(|p| *p > 0)?,
        _ => 0,
    };
    let (tls, inner) = match scheme {
        "http" => return Some(vec![(Scheme::Http, if port == 0 { 80 } else { port })]),
        "https" | "wss" => (true, Scheme::Https),
        "ws" => (false, Scheme::Http),
        _ => return None,
    };
    let port = if port != 0 {
        port
    } else if tls {
        443
    } else {
        80
    };
    let connect = if port == 80 { Scheme::Http } else { Scheme::Https };
    Some(if connect == inner { vec![(inner, port)] } else { vec![(connect, port), (inner, port)] })
}

/// What the PAC file must answer for `url` and `host`, computed from hostgate's decisions:
/// `DIRECT` or the configured proxy list.
fn reference(p: &Policy, pc: &PacConfig, group: GroupId, url: &str, host: &str) -> String {
    let proxy = {
        let mut v: Vec<String> = pc.proxy.iter().map(|p| format!("PROXY {p}")).collect();
        if pc.insecure_fallback_direct {
            v.push("DIRECT".into());
        }
        v.join("; ")
    };
    let direct = "DIRECT".to_string();
    let mut h = host.to_ascii_lowercase();
    if let Some(inner) = h.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        h = inner.to_string();
    }
    if h.contains(':') {
        let inside = h.parse::<IpAddr>().is_ok_and(|a| pc.direct_networks.iter().any(|n| n.contains(&a)));
        return if inside { direct } else { proxy };
    }
    let h = h.strip_suffix('.').unwrap_or(&h);
    if !h.contains('.') {
        return direct;
    }
    let wants = |a: Action| pc.direct.contains(&a);
    let targets = targets(url);
    if let Ok(v4) = h.parse::<Ipv4Addr>() {
        let addr = IpAddr::V4(v4);
        if pc.direct_networks.iter().any(|n| n.contains(&addr)) {
            return direct;
        }
        let Some(targets) = targets else { return proxy };
        let all = targets.iter().all(|&(scheme, port)| {
            wants(p.decide_address(&AddrQuery { addr, scheme: Some(scheme), port, group }).action)
        });
        return if all { direct } else { proxy };
    }
    let (Ok(name), Some(targets)) = (Host::new(h), targets) else { return proxy };
    let all = targets.iter().all(|&(scheme, port)| {
        let (d, candidates) = p.explain(&Query { host: &name, scheme, port, path: None, group });
        let path_at_level = candidates
            .iter()
            .any(|c| matches!(c.verdict, Verdict::Winner | Verdict::TieLost) && p.rule(c.rule).path.is_some());
        wants(d.action) && !path_at_level
    });
    if all {
        direct
    } else {
        proxy
    }
}

/// Evaluates `queries` with pacparser and the reference; panics listing every disagreement.
/// Returns the engine's answers.
fn agree(pac: &str, p: &Policy, pc: &PacConfig, group: GroupId, queries: &[(String, String)]) -> Vec<String> {
    let got = evaluate(pac, queries);
    let wrong: Vec<String> = queries
        .iter()
        .zip(&got)
        .filter_map(|((url, host), got)| {
            let want = reference(p, pc, group, url, host);
            (*got != want).then(|| format!("{url} (host {host}): PAC says {got:?}, hostgate {want:?}"))
        })
        .collect();
    assert!(wrong.is_empty(), "{} of {} answers disagree:\n{}", wrong.len(), queries.len(), wrong.join("\n"));
    got
}

// ---------------------------------------------------------------------------------------------
// (a) The shipped policy: every check name and near misses.

fn shipped_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/hostgate.toml")
}

/// The shipped configuration with `[pac]` appended, and its policy.
fn shipped_with(pac: &str) -> (Config, Policy) {
    let path = shipped_path();
    // The shipped [pac] section (its keys up to the next section) makes way for `pac`.
    let shipped = std::fs::read_to_string(&path).unwrap();
    let mut in_pac = false;
    let kept: Vec<&str> = shipped
        .lines()
        .filter(|l| {
            if l.starts_with('[') {
                in_pac = *l == "[pac]";
            }
            !in_pac
        })
        .collect();
    let text = format!("{}\n[pac]\n{pac}\n", kept.join("\n"));
    let config = Config::parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    let policy = Policy::load(&config.policy_inputs()).unwrap_or_else(|e| panic!("{e}"));
    (config, policy)
}

/// Names a rule's pattern is about: an instance (each `*` label `a1`, each `*` in a label `x`),
/// the in-label `*`s empty, two labels for each inner `*` label, the apex of a `*.` pattern, a
/// label deeper, look-alikes (a letter before, a domain after).
fn check_names(rule: &Rule) -> Vec<String> {
    let Some(p) = &rule.pattern else { return Vec::new() };
    let body = p.as_str().strip_prefix('.').unwrap_or(p.as_str());
    let labels: Vec<&str> = body.split('.').collect();
    let with = |whole: &str, inner: &str, in_label: &str| {
        labels
            .iter()
            .enumerate()
            .map(|(i, l)| match *l {
                "*" if i == 0 => whole.to_string(),
                "*" => inner.to_string(),
                l => l.replace('*', in_label),
            })
            .collect::<Vec<_>>()
            .join(".")
    };
    let instance = with("a1", "b1", "x");
    let mut names = vec![instance.clone(), with("a1", "b1", ""), with("a1", "b1.b2", "x"), with("a1.a2", "b1", "x")];
    let apex = match labels.split_first() {
        Some((&"*", rest)) => rest
            .iter()
            .map(|l| if *l == "*" { "b1".to_string() } else { l.replace('*', "x") })
            .collect::<Vec<_>>()
            .join("."),
        _ => instance.clone(),
    };
    names.push(apex.clone());
    names.push(format!("deep.{instance}"));
    names.push(format!("x{apex}"));
    names.push(format!("{apex}.evil.example"));
    names.push(format!("{instance}.evil.example"));
    names.retain(|n| Host::new(n).is_ok() && n.contains('.'));
    names
}

/// The URLs each name is asked with: the default ports of every scheme the PAC knows, other
/// ports, and around each of the rule's port ranges.
fn urls(host: &str, rule: Option<&Rule>, out: &mut BTreeSet<(String, String)>) {
    let mut add = |scheme: &str, port: Option<u16>| {
        let url = match port {
            Some(p) => format!("{scheme}://{host}:{p}/"),
            None => format!("{scheme}://{host}/"),
        };
        out.insert((url, host.to_string()));
    };
    for scheme in ["https", "http", "wss", "ws"] {
        add(scheme, None);
    }
    add("https", Some(8443));
    add("http", Some(8080));
    add("https", Some(80));
    add("ws", Some(8080));
    add("ftp", None);
    if let Some(ports) = rule.and_then(|r| r.ports.as_ref()) {
        for r in ports.ranges() {
            for port in [r.lo.checked_sub(1), Some(r.lo), Some(r.hi), r.hi.checked_add(1)].into_iter().flatten() {
                if port > 0 {
                    add("https", Some(port));
                    add("http", Some(port));
                }
            }
        }
    }
}

/// Every check name of `p`'s name rules, its near misses, and the look-alikes of
/// `tests/policy.rs`, each with its URLs.
fn shipped_queries(p: &Policy) -> Vec<(String, String)> {
    let mut out = BTreeSet::new();
    for rule in p.rules() {
        for name in check_names(rule) {
            urls(&name, Some(rule), &mut out);
        }
    }
    for name in [
        "windowsupdate.com.evil.example",
        "evilwindowsupdate.com",
        "login.live.com.evil.io",
        "xlync.com",
        "lync.com.evil.example",
        "a.cdn.onenote.net",
        "cdnx.onenote.net",
        "a.b.onmicrosoft.com",
        "example.com",
        "LOGIN.Live.COM.",
        "intranet",
        "10.1.2.3",
        "52.113.194.132",
        "1.2.3.999",
    ] {
        urls(name, None, &mut out);
    }
    out.into_iter().collect()
}

#[test]
fn the_shipped_policy_agrees_with_a_real_pac_engine_name_by_name() {
    for direct in ["[\"bypass\"]", "[\"allow\"]"] {
        let (config, policy) = shipped_with(&format!("direct = {direct}\ndirect_networks = [\"10.0.0.0/8\"]\n"));
        let pc = config.pac.as_ref().unwrap();
        let pac = Pac::build(pc, &policy);
        let queries = shipped_queries(&policy);
        assert!(queries.len() > 5000, "only {} queries", queries.len());
        let got = agree(pac.ungrouped().text(), &policy, pc, GroupId::NONE, &queries);
        let sent_direct = got.iter().filter(|a| *a == "DIRECT").count();
        // Both answers are common: the comparison says something either way.
        assert!(sent_direct > 300 && got.len() - sent_direct > 1000, "{direct}: {sent_direct} DIRECT of {}", got.len());
    }
}

#[test]
fn without_direct_actions_only_plain_names_and_direct_networks_go_direct() {
    let (config, policy) = shipped_with("proxy = [\"gw.corp.example:3128\", \"[2001:db8::1]:8080\"]\n");
    let pc = config.pac.as_ref().unwrap();
    let pac = Pac::build(pc, &policy);
    let text = pac.ungrouped().text();
    assert!(text.contains("var RULES = [\n];"), "no rule table is needed:\n{text}");
    assert!(text.contains("var PROXY = \"PROXY gw.corp.example:3128; PROXY [2001:db8::1]:8080\";"), "{text}");
    let queries = shipped_queries(&policy);
    let got = agree(text, &policy, pc, GroupId::NONE, &queries);
    let direct: Vec<&(String, String)> =
        queries.iter().zip(&got).filter(|(_, a)| *a == "DIRECT").map(|(q, _)| q).collect();
    assert!(direct.iter().all(|(_, h)| h == "intranet"), "{direct:?}");
    assert!(!direct.is_empty());
}

/// A sample of the decisions the reference uses, asked of the binary (`hostgate explain --json`).
#[test]
fn the_reference_decisions_are_what_hostgate_explain_says() {
    let (_, policy) = shipped_with("");
    let mut names: Vec<String> = Vec::new();
    for rule in policy.rules().iter().step_by(9) {
        names.extend(check_names(rule).into_iter().take(4));
    }
    names.truncate(120);
    for (scheme, port) in [(Scheme::Https, 443u16), (Scheme::Http, 80), (Scheme::Https, 8443)] {
        let out = Command::new(env!("CARGO_BIN_EXE_hostgate"))
            .args(["explain", "--json", "--config", shipped_path().to_str().unwrap()])
            .args(["--scheme", scheme.as_str(), "--port", &port.to_string()])
            .args(&names)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let lines: Vec<Value> =
            String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), names.len());
        for (name, line) in names.iter().zip(&lines) {
            let host = Host::new(name).unwrap();
            let (d, _) = policy.explain(&Query { host: &host, scheme, port, path: None, group: GroupId::NONE });
            assert_eq!(line["action"].as_str(), Some(d.action.as_str()), "{name} {scheme}:{port}: {line}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (b) A hand-written policy, name by name.

const MAIN_RULES: &str = "\
bypass *.lync.com
deny evil.lync.com
bypass .example.net
allow *cdn.onenote.net
bypass <tenant>.sharepoint.com
bypass api.*.example.com
bypass *.*.deep.example
bypass ports.example:80,443,3478-3481
bypass http://plain.example
bypass https://tls.example
bypass paths.example
deny https://paths.example/admin
bypass *.paths2.example
allow http://x.paths2.example/ok
bypass tie.example
allow tie.example
bypass 52.112.0.0/14:443
deny 52.113.0.0/16
bypass 52.113.194.0/24
";

/// The hand-written configuration: `main` and a report-mode source for clients in no group,
/// and a `kiosks` group with a list of its own.
fn handmade(dir: &Path) -> (Config, Policy) {
    std::fs::write(dir.join("main.rules"), MAIN_RULES).unwrap();
    std::fs::write(dir.join("report.rules"), "deny reported.example\n").unwrap();
    std::fs::write(dir.join("kiosk.rules"), "bypass kiosk.example\n").unwrap();
    let config = dir.join("hostgate.toml");
    std::fs::write(
        &config,
        "[[listener]]\nkind = \"connect\"\naddress = \"127.0.0.1:0\"\n\n\
         [policy]\ndefault = \"deny\"\nungrouped_sources = [\"main\", \"report\"]\n\n\
         [[policy.source]]\nname = \"main\"\npath = \"main.rules\"\n\n\
         [[policy.source]]\nname = \"report\"\npath = \"report.rules\"\nmode = \"report\"\n\n\
         [[policy.source]]\nname = \"kiosk\"\npath = \"kiosk.rules\"\n\n\
         [[client]]\nname = \"kiosks\"\nnetworks = [\"10.1.0.0/16\"]\nsources = [\"kiosk\"]\n\n\
         [pac]\nproxy = [\"gw.corp.example:3128\"]\ndirect = [\"bypass\"]\n\
         direct_networks = [\"10.0.0.0/8\", \"192.168.1.0/24\", \"fd00::/8\"]\n",
    )
    .unwrap();
    let config = Config::load(&config).unwrap_or_else(|e| panic!("{e}"));
    let policy = Policy::load(&config.policy_inputs()).unwrap_or_else(|e| panic!("{e}"));
    (config, policy)
}

/// Checks `cases` (url, host, want: `D` for DIRECT, `P` for the proxy) with pacparser, and
/// each against the reference too.
fn check_cases(pac: &str, p: &Policy, pc: &PacConfig, group: GroupId, cases: &[(&str, &str, char)]) {
    let queries: Vec<(String, String)> = cases.iter().map(|(u, h, _)| (u.to_string(), h.to_string())).collect();
    let got = agree(pac, p, pc, group, &queries);
    let proxy = format!("PROXY {}", pc.proxy.join("; PROXY "));
    let wrong: Vec<String> = cases
        .iter()
        .zip(&got)
        .filter(|((_, _, want), got)| **got != if *want == 'D' { "DIRECT" } else { proxy.as_str() })
        .map(|((u, h, want), got)| format!("{u} ({h}): want {want}, got {got}"))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_handwritten_policy_name_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (config, policy) = handmade(dir.path());
    let pc = config.pac.as_ref().unwrap();
    let pac = Pac::build(pc, &policy);
    let cases: &[(&str, &str, char)] = &[
        // A leftmost `*` is one or more labels, never the apex nor a look-alike.
        ("https://a.lync.com/", "a.lync.com", 'D'),
        ("https://a.b.lync.com/", "a.b.lync.com", 'D'),
        ("https://A.Lync.COM./", "A.Lync.COM.", 'D'),
        ("https://lync.com/", "lync.com", 'P'),
        ("https://xlync.com/", "xlync.com", 'P'),
        ("https://lync.com.evil.example/", "lync.com.evil.example", 'P'),
        // The more specific deny wins, only for its own name.
        ("https://evil.lync.com/", "evil.lync.com", 'P'),
        ("https://x.evil.lync.com/", "x.evil.lync.com", 'D'),
        // `.d`: d and below.
        ("https://example.net/", "example.net", 'D'),
        ("https://a.b.example.net/", "a.b.example.net", 'D'),
        ("https://aexample.net/", "aexample.net", 'P'),
        // `*` inside a label; allow is not in `direct`.
        ("https://site-cdn.onenote.net/", "site-cdn.onenote.net", 'P'),
        // A one-label placeholder.
        ("https://contoso.sharepoint.com/", "contoso.sharepoint.com", 'D'),
        ("https://a.contoso.sharepoint.com/", "a.contoso.sharepoint.com", 'P'),
        ("https://sharepoint.com/", "sharepoint.com", 'P'),
        // Inner `*` labels: exactly one label.
        ("https://api.eu.example.com/", "api.eu.example.com", 'D'),
        ("https://api.eu.west.example.com/", "api.eu.west.example.com", 'P'),
        ("https://api.example.com/", "api.example.com", 'P'),
        ("https://a.b.deep.example/", "a.b.deep.example", 'D'),
        ("https://x.a.b.deep.example/", "x.a.b.deep.example", 'D'),
        ("https://a.deep.example/", "a.deep.example", 'P'),
        // Port lists.
        ("https://ports.example/", "ports.example", 'D'),
        ("http://ports.example/", "ports.example", 'D'),
        ("https://ports.example:3480/", "ports.example", 'D'),
        ("https://ports.example:3482/", "ports.example", 'P'),
        ("https://ports.example:8443/", "ports.example", 'P'),
        ("http://ports.example:8080/", "ports.example", 'P'),
        // Schemes: an https:// URL on port 80 is a CONNECT decided as http, then TLS.
        ("http://plain.example/", "plain.example", 'D'),
        ("https://plain.example/", "plain.example", 'P'),
        ("https://plain.example:80/", "plain.example", 'P'),
        ("https://tls.example/", "tls.example", 'D'),
        ("http://tls.example/", "tls.example", 'P'),
        ("wss://tls.example/", "tls.example", 'D'),
        ("ws://tls.example:8080/", "tls.example", 'P'),
        ("ftp://tls.example/", "tls.example", 'P'),
        // A path rule at the deciding level keeps the name on the proxy; where it does not fit
        // (another scheme) it does not.
        ("https://paths.example/", "paths.example", 'P'),
        ("http://paths.example/", "paths.example", 'D'),
        ("http://x.paths2.example/", "x.paths2.example", 'P'),
        ("https://x.paths2.example/", "x.paths2.example", 'D'),
        ("http://y.paths2.example/", "y.paths2.example", 'D'),
        // A tie goes to the strictest action.
        ("https://tie.example/", "tie.example", 'P'),
        // Plain host names and the site's networks.
        ("http://intranet/", "intranet", 'D'),
        ("https://intranet:8443/", "intranet", 'D'),
        ("http://10.1.2.3/", "10.1.2.3", 'D'),
        ("https://192.168.1.7/", "192.168.1.7", 'D'),
        ("https://192.168.2.7/", "192.168.2.7", 'P'),
        ("http://[fd00::1]/", "fd00::1", 'D'),
        ("http://[fd00::1]:8080/", "[fd00::1]", 'D'),
        ("http://[2001:db8::1]/", "2001:db8::1", 'P'),
        ("http://010.1.2.3/", "010.1.2.3", 'P'),
        // IPv4 literals: the address rules (longest prefix, ports).
        ("https://52.112.1.1/", "52.112.1.1", 'D'),
        ("http://52.112.1.1/", "52.112.1.1", 'P'),
        ("https://52.113.1.1/", "52.113.1.1", 'P'),
        ("https://52.113.194.5/", "52.113.194.5", 'D'),
        // Nothing fits: the default, deny.
        ("https://example.org/", "example.org", 'P'),
        ("https://reported.example/", "reported.example", 'P'),
        ("https://kiosk.example/", "kiosk.example", 'P'),
    ];
    check_cases(pac.ungrouped().text(), &policy, pc, GroupId::NONE, cases);

    // The kiosks' file: their own rules, not the others'.
    let kiosks = policy.groups().iter().position(|g| g.name.as_deref() == Some("kiosks")).unwrap();
    let kiosks = GroupId(kiosks as u8);
    let text = pac.group("kiosks").unwrap().text();
    assert!(text.contains("client group kiosks"), "{text}");
    check_cases(
        text,
        &policy,
        pc,
        kiosks,
        &[
            ("https://kiosk.example/", "kiosk.example", 'D'),
            ("https://a.lync.com/", "a.lync.com", 'P'),
            ("http://intranet/", "intranet", 'D'),
        ],
    );

    // direct = ["allow"]: a deny only reported is an allow; a tie's strictest, allow, goes too.
    let allow = PacConfig { direct: vec![Action::Allow], ..pc.clone() };
    let pac = Pac::build(&allow, &policy);
    check_cases(
        pac.ungrouped().text(),
        &policy,
        &allow,
        GroupId::NONE,
        &[
            ("https://reported.example/", "reported.example", 'D'),
            ("https://tie.example/", "tie.example", 'D'),
            ("https://site-cdn.onenote.net/", "site-cdn.onenote.net", 'D'),
            ("https://evil.lync.com/", "evil.lync.com", 'P'),
            ("https://a.lync.com/", "a.lync.com", 'P'),
            ("https://52.113.1.1/", "52.113.1.1", 'P'),
        ],
    );
    // Every check name of the hand-written rules agrees too, for both files.
    let queries = shipped_queries(&policy);
    agree(pac.ungrouped().text(), &policy, &allow, GroupId::NONE, &queries);
    agree(Pac::build(pc, &policy).ungrouped().text(), &policy, pc, GroupId::NONE, &queries);
}

#[test]
fn the_file_is_deterministic_and_its_etag_follows_the_text() {
    let dir = tempfile::tempdir().unwrap();
    let (config, policy) = handmade(dir.path());
    let pc = config.pac.as_ref().unwrap();
    let (a, b) = (Pac::build(pc, &policy), Pac::build(pc, &policy));
    assert_eq!(a.ungrouped().text(), b.ungrouped().text());
    assert_eq!(a.ungrouped().etag(), b.ungrouped().etag());
    let other = Pac::build(&PacConfig { direct: vec![Action::Allow], ..pc.clone() }, &policy);
    assert_ne!(a.ungrouped().etag(), other.ungrouped().etag());
    assert_ne!(a.ungrouped().etag(), a.group("kiosks").unwrap().etag());
    assert!(!a.ungrouped().text().contains("shExpMatch"));
}

#[test]
fn bad_pac_settings_are_config_errors_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("r.rules"), "allow a.example\n").unwrap();
    let base = "[policy]\n[[policy.source]]\npath = \"r.rules\"\n\n";
    for (pac, listener, want) in [
        ("[pac]\nproxy = [\"gw.example\"]\n", true, "hostgate.toml:6:10: pac.proxy: `gw.example` is not HOST:PORT"),
        ("[pac]\nproxy = [\"gw.example:0\"]\n", true, "hostgate.toml:6:10: pac.proxy"),
        ("[pac]\nproxy = [\"gw\\\";x:1\"]\n", true, "hostgate.toml:6:10: pac.proxy"),
        ("[pac]\nproxy = [\"a.example:1\", \"A.example:1\"]\n", true, "pac.proxy: a.example:1 is listed twice"),
        ("[pac]\ndirect = [\"bypas\"]\n", true, "hostgate.toml:6:11: pac.direct: unknown action `bypas`"),
        ("[pac]\ndirect_networks = [\"10.0.0.0/33\"]\n", true, "hostgate.toml:6:20: pac.direct_networks"),
        ("[pac]\nfallback = true\n", true, "hostgate.toml:6:1: pac.fallback: unknown field"),
        ("[pac]\ndirect = []\n", false, "hostgate.toml:5:1: pac.proxy: missing, and there is no connect listener"),
    ] {
        let listener = if listener { "[[listener]]\nkind = \"connect\"\naddress = \"127.0.0.1:3128\"\n" } else { "" };
        // The listener comes last so that the [pac] lines keep their numbers.
        let text = format!("{base}{pac}{listener}");
        let path = dir.path().join("hostgate.toml");
        let err = Config::parse(&path, &text).unwrap_err().to_string();
        assert!(err.contains(want), "{pac:?}: {err}");
    }
    // No [pac] and no connect listener: no PAC file, and that is fine.
    let c = Config::parse(&dir.path().join("hostgate.toml"), base).unwrap();
    assert!(c.pac.is_none());
}

// ---------------------------------------------------------------------------------------------
// (c) Served by the binary.

/// Sends one request (`Connection: close`) and reads the response.
async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: gw.corp.example:3128\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut io = AsyncBufReader::new(tcp);
    tokio::time::timeout(STEP, read_response(&mut io, method != "HEAD")).await.unwrap().unwrap()
}

/// `hostgate ARGS… --config CONFIG`: status and standard output.
fn hostgate(args: &[&str], config: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hostgate")).args(args).arg("--config").arg(config).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_the_pac_file_on_both_listeners_and_a_sighup_changes_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hostgate.toml");
    let rules = dir.path().join("test.rules");
    std::fs::write(&rules, "bypass first.example\nallow other.example\n").unwrap();
    std::fs::write(
        &config,
        "[[listener]]\nkind = \"connect\"\naddress = \"127.0.0.1:0\"\n\n\
         [policy]\ndefault = \"deny\"\n[[policy.source]]\npath = \"test.rules\"\n\n\
         [admin]\naddress = \"127.0.0.1:0\"\n\n\
         [pac]\nproxy = [\"gw.corp.example:3128\"]\ndirect = [\"bypass\"]\n\n\
         [log]\nformat = \"json\"\nlevel = \"info\"\n",
    )
    .unwrap();
    let (ok, printed) = hostgate(&["pac"], &config);
    assert!(ok && printed.contains("[\"first.example\", 1013, 0, 0, 0]"), "{printed}");
    let (ok, check) = hostgate(&["check"], &config);
    let line = check.lines().find(|l| l.starts_with("pac: ")).unwrap_or_else(|| panic!("{check}"));
    assert!(ok, "{check}");
    assert_eq!(
        line,
        format!(
            "pac: {} bytes, PROXY gw.corp.example:3128; DIRECT: plain host names, 0 direct networks, 1 name rules and 0 address rules (bypass)",
            printed.len()
        )
    );

    let mut hg = Hostgate::spawn(&[], &config);
    let proxy = hg.listening("connect").await;
    let admin_line =
        hg.wait_json(|v| v["message"].as_str().is_some_and(|m| m.starts_with("admin listener")), STEP).await;
    let admin: SocketAddr = admin_line["address"].as_str().unwrap().parse().unwrap();

    let mut etag = String::new();
    for (listener, addr) in [("connect", proxy), ("admin", admin)] {
        for path in ["/proxy.pac", "/wpad.dat"] {
            let r = request(addr, "GET", path, &[]).await;
            assert_eq!(r.status, 200, "{listener} {path}: {r:?}");
            assert_eq!(r.header("content-type"), Some(CONTENT_TYPE_PAC), "{listener} {path}");
            assert_eq!(r.text(), printed, "{listener} {path}: the file `hostgate pac` prints");
            etag = r.header("etag").unwrap().to_string();
            assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
            let head = request(addr, "HEAD", path, &[]).await;
            assert_eq!(head.status, 200);
            assert_eq!(head.header("etag"), Some(etag.as_str()));
            assert_eq!(head.header("content-length"), Some(printed.len().to_string().as_str()));
            assert!(head.body.is_empty());
            for tag in [etag.clone(), format!("W/{etag}"), format!("\"x\", {etag}"), "*".to_string()] {
                let r = request(addr, "GET", path, &[("If-None-Match", &tag)]).await;
                assert_eq!(r.status, 304, "{listener} {path} If-None-Match: {tag}");
                assert_eq!(r.header("etag"), Some(etag.as_str()));
                assert!(r.body.is_empty());
            }
            let r = request(addr, "GET", path, &[("If-None-Match", "\"stale\"")]).await;
            assert_eq!(r.status, 200);
        }
        let r = request(addr, "POST", "/proxy.pac", &[("Content-Length", "0")]).await;
        assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")), "{listener}");
        let r = request(addr, "GET", "/proxy.pac?group=nobody", &[]).await;
        assert_eq!(r.status, 404, "{listener}");
    }
    // Every other origin-form request to the proxy is still refused.
    for path in ["/", "/proxy.pac/x", "/policy", "/PROXY.PAC"] {
        let r = request(proxy, "GET", path, &[]).await;
        assert_eq!(r.status, 400, "{path}: {r:?}");
        assert_eq!(r.header("x-hostgate-reason"), Some("bad-request"), "{path}");
    }

    // A reload that changes a rule changes the file and its ETag, on both listeners.
    let tmp = rules.with_extension("tmp");
    std::fs::write(&tmp, "bypass second.example\nallow other.example\n").unwrap();
    std::fs::rename(&tmp, &rules).unwrap();
    hg.signal("HUP");
    hg.wait_json(|v| v["message"] == "reloaded; new connections use the new generation", STEP).await;
    let old = etag.clone();
    for addr in [proxy, admin] {
        let r = request(addr, "GET", "/proxy.pac", &[("If-None-Match", &old)]).await;
        assert_eq!(r.status, 200, "the old ETag no longer matches");
        let text = r.text();
        assert!(text.contains("\"second.example\"") && !text.contains("\"first.example\""), "{text}");
        assert_ne!(r.header("etag"), Some(old.as_str()));
        etag = r.header("etag").unwrap().to_string();
    }

    // A bad [pac] refuses the reload like any bad configuration: the file stays as it was.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("direct = [\"bypass\"]", "direct = [\"bypas\"]")).unwrap();
    hg.signal("HUP");
    let line = hg.wait_json(|v| v["message"] == "reload failed; the current generation keeps serving", STEP).await;
    assert!(line["error"].as_str().is_some_and(|e| e.contains("pac.direct: unknown action `bypas`")), "{line}");
    let r = request(proxy, "GET", "/proxy.pac", &[("If-None-Match", &etag)]).await;
    assert_eq!(r.status, 304);
    hg.signal("TERM");
    let (status, _) = hg.wait().await;
    assert!(status.success(), "{status}");
}
