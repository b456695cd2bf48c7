//! `hostgate suggest`: rule lines for what was denied by default or would have been denied in
//! report mode, from the JSON access log (`[log] format = "json"`) or a running gateway's
//! `/recent`, for the operator to review.
//!
//! Names are grouped by registrable domain ([`super::domain::registrable`], which stops at
//! public suffixes and at the shared namespaces the lint knows), and each group becomes the
//! narrowest pattern that covers its names: one name stays exact; several become `*.S` for
//! their longest common suffix `S` (or `.S` when `S` itself was asked for). `S` is never a
//! public suffix or shared namespace: `a.example.co.uk` and `b.example.co.uk` give
//! `*.example.co.uk`, two storage accounts under `blob.core.windows.net` give two exact lines.
//! Records without a name (IP literals, redirected connections without SNI) give address rules,
//! one per address.
//!
//! Left out: records an enforced `deny` rule refused (they were denied on purpose), refusals
//! for other reasons (SSRF guard, bad requests), and everything that was let through.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use hostgate_matcher::Host;
use serde_json::Value;

use super::domain::registrable;

/// What was asked for and refused (or would have been).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Name(String),
    Addr(IpAddr),
}

/// One record that asks for a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Wanted {
    target: Target,
    client: Option<IpAddr>,
    would_deny: bool,
}

/// The records read, and what became of them.
#[derive(Debug, Default)]
pub struct Input {
    wanted: Vec<Wanted>,
    /// Access records read.
    pub records: usize,
    /// Of them, denied by default (or whose name no rule allowed).
    pub denied: usize,
    /// Of them, let through by report mode.
    pub would_deny: usize,
    /// Lines that were not JSON objects.
    pub unreadable: usize,
    /// Records with a name that is not a valid host.
    pub bad_names: usize,
}

impl Input {
    /// Reads one access record (a log line's object, or a `/recent` event): other log lines
    /// (`target` other than `access`) are ignored.
    pub fn add(&mut self, v: &Value) {
        if !v.is_object() {
            self.unreadable += 1;
            return;
        }
        if v.get("target").is_some_and(|t| t != "access") {
            return;
        }
        self.records += 1;
        let would_deny = v["would_deny"] == true;
        let denied = v["action"] == "deny" && v["outcome"] == "denied";
        // A record an enforced deny rule refused was denied on purpose.
        let by_deny_rule = v["rule"].as_str().is_some_and(|r| r.starts_with("deny "));
        if !(would_deny || denied && !by_deny_rule) {
            return;
        }
        let name = v["host"].as_str().or(v["sni"].as_str()).filter(|n| !n.is_empty());
        let target = match name {
            Some(n) => match n.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
                Ok(a) => Target::Addr(a),
                Err(_) => match Host::new(n) {
                    Ok(h) => Target::Name(h.as_str().to_string()),
                    Err(_) => {
                        self.bad_names += 1;
                        return;
                    }
                },
            },
            None => {
                let addr = v["addr"].as_str().and_then(|a| a.parse::<IpAddr>().ok());
                let dst = v["dst"].as_str().and_then(|d| d.parse::<SocketAddr>().ok()).map(|s| s.ip());
                match addr.or(dst) {
                    Some(a) => Target::Addr(a),
                    None => return,
                }
            }
        };
        let client = v["client"]
            .as_str()
            .and_then(|c| c.parse::<SocketAddr>().map(|s| s.ip()).or_else(|_| c.parse::<IpAddr>()).ok());
        if would_deny {
            self.would_deny += 1;
        } else {
            self.denied += 1;
        }
        self.wanted.push(Wanted { target, client, would_deny });
    }

    /// Reads JSON lines (blank lines skipped).
    pub fn add_lines(&mut self, text: &str) {
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            match serde_json::from_str::<Value>(line) {
                Ok(v) => self.add(&v),
                Err(_) => self.unreadable += 1,
            }
        }
    }
}

/// One proposed rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suggestion {
    /// The rule's target: a name, a pattern or an address.
    pub target: String,
    /// Records it covers.
    pub requests: usize,
    /// Of them, would-deny.
    pub would_deny: usize,
    /// The clients that asked, most frequent first.
    pub clients: Vec<(IpAddr, usize)>,
    /// The names it covers.
    pub names: Vec<String>,
}

/// The rules that cover what `input` asked for, most requests first.
pub fn suggest(input: &Input) -> Vec<Suggestion> {
    // Group key → the records of the group.
    let mut groups: BTreeMap<Target, Vec<&Wanted>> = BTreeMap::new();
    for w in &input.wanted {
        let key = match &w.target {
            Target::Name(n) => Target::Name(registrable(n).to_string()),
            a @ Target::Addr(_) => a.clone(),
        };
        groups.entry(key).or_default().push(w);
    }
    let mut out: Vec<Suggestion> = groups
        .into_values()
        .map(|records| {
            let mut names: Vec<String> = records
                .iter()
                .filter_map(|w| match &w.target {
                    Target::Name(n) => Some(n.clone()),
                    Target::Addr(_) => None,
                })
                .collect();
            names.sort();
            names.dedup();
            let target = match &records[0].target {
                Target::Addr(a) => a.to_string(),
                Target::Name(_) => pattern(&names),
            };
            let mut clients: BTreeMap<IpAddr, usize> = BTreeMap::new();
            for c in records.iter().filter_map(|w| w.client) {
                *clients.entry(c).or_default() += 1;
            }
            let mut clients: Vec<(IpAddr, usize)> = clients.into_iter().collect();
            clients.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            Suggestion {
                target,
                requests: records.len(),
                would_deny: records.iter().filter(|w| w.would_deny).count(),
                clients,
                names,
            }
        })
        .collect();
    out.sort_by(|a, b| b.requests.cmp(&a.requests).then_with(|| a.target.cmp(&b.target)));
    out
}

/// The narrowest pattern covering `names` (sorted, distinct, one registrable domain): the name
/// itself, or `*.S` / `.S` for their longest common suffix of whole labels `S`.
fn pattern(names: &[String]) -> String {
    if let [one] = names {
        return one.clone();
    }
    let mut common: Vec<&str> = names[0].rsplit('.').collect();
    for n in &names[1..] {
        let same = common.iter().zip(n.rsplit('.')).take_while(|(a, b)| *a == b).count();
        common.truncate(same);
    }
    let suffix = common.iter().rev().copied().collect::<Vec<_>>().join(".");
    if names.contains(&suffix) {
        format!(".{suffix}")
    } else {
        format!("*.{suffix}")
    }
}

/// The suggestions as a rule-file diff: a header, then one `+ACTION TARGET  # …` line each.
pub fn render(input: &Input, suggestions: &[Suggestion], action: &str, from: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# hostgate suggest: {} records from {from}: {} denied by default, {} would-deny (report mode)",
        input.records, input.denied, input.would_deny
    );
    if input.unreadable > 0 || input.bad_names > 0 {
        let _ = writeln!(
            s,
            "# skipped: {} lines that are not JSON, {} records whose name is not a valid host",
            input.unreadable, input.bad_names
        );
    }
    if suggestions.is_empty() {
        let _ = writeln!(s, "# nothing to suggest");
        return s;
    }
    let _ = writeln!(s, "# review each line, add the ones you want to a rule file, `hostgate check`, then reload");
    for g in suggestions {
        let clients: Vec<String> = g.clients.iter().take(3).map(|(c, _)| c.to_string()).collect();
        let more = if g.clients.len() > 3 { ", …" } else { "" };
        let _ = write!(
            s,
            "+{action} {}  # {} request{} from {} client{}: {}{more}",
            g.target,
            g.requests,
            if g.requests == 1 { "" } else { "s" },
            g.clients.len(),
            if g.clients.len() == 1 { "" } else { "s" },
            clients.join(", "),
        );
        if g.would_deny > 0 {
            let _ = write!(s, "; {} would-deny", g.would_deny);
        }
        if g.names.len() > 1 {
            let _ = write!(s, "; names: {}", g.names.join(", "));
        }
        s.push('\n');
    }
    s
}

/// `hostgate suggest`: reads the log (`-`: standard input) or `/recent?denied=1` of the admin
/// listener at `admin`, and writes the diff to `out`.
///
/// # Errors
/// The log cannot be read, or the admin listener cannot be reached or answers otherwise than
/// with `/recent`'s JSON.
pub fn run(
    log: Option<&std::path::Path>,
    admin: Option<&str>,
    action: &str,
    out: &mut impl std::io::Write,
) -> Result<std::process::ExitCode, String> {
    let mut input = Input::default();
    let from = match (log, admin) {
        (Some(path), _) if path.as_os_str() == "-" => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text)
                .map_err(|e| format!("standard input: {e}"))?;
            input.add_lines(&text);
            "standard input".to_string()
        }
        (Some(path), _) => {
            let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            input.add_lines(&String::from_utf8_lossy(&text));
            path.display().to_string()
        }
        (None, Some(addr)) => {
            let body = fetch_recent(addr)?;
            let v: Value = serde_json::from_str(&body).map_err(|e| format!("{addr}/recent: not JSON ({e})"))?;
            let events = v["events"].as_array().ok_or_else(|| format!("{addr}/recent: no `events` list"))?;
            for e in events {
                input.add(e);
            }
            format!("http://{addr}/recent")
        }
        (None, None) => return Err("give --log FILE (or -) or --admin ADDR".to_string()),
    };
    let suggestions = suggest(&input);
    out.write_all(render(&input, &suggestions, action, &from).as_bytes()).map_err(|e| e.to_string())?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// `GET /recent?denied=1` from the admin listener at `addr` (HTTP/1.1, one request, the
/// connection closed after it), with a 10 s limit on each step.
fn fetch_recent(addr: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let limit = std::time::Duration::from_secs(10);
    let err = |e: std::io::Error| format!("{addr}: {e}");
    let sock = addr.to_socket_addrs().map_err(err)?.next().ok_or_else(|| format!("{addr}: no address"))?;
    let mut conn = std::net::TcpStream::connect_timeout(&sock, limit).map_err(err)?;
    conn.set_read_timeout(Some(limit)).map_err(err)?;
    conn.set_write_timeout(Some(limit)).map_err(err)?;
    write!(conn, "GET /recent?denied=1 HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").map_err(err)?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).map_err(err)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("{addr}: not an HTTP response"))?;
    let status = head.split(' ').nth(1).unwrap_or("");
    if status != "200" {
        let line = head.lines().next().unwrap_or("");
        return Err(format!("{addr}/recent answered `{line}`: {}", body.trim()));
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(host: &str, client: &str) -> Value {
        json!({"target": "access", "host": host, "client": format!("{client}:40000"), "action": "deny", "outcome": "denied"})
    }

    fn lines(records: &[Value]) -> Vec<String> {
        let mut input = Input::default();
        for r in records {
            input.add(r);
        }
        let s = suggest(&input);
        render(&input, &s, "allow", "test").lines().filter(|l| l.starts_with('+')).map(str::to_string).collect()
    }

    #[test]
    fn the_table_of_cases() {
        let many = ["a", "b", "c", "d"].map(|x| record(&format!("{x}.cdn.example.org"), "10.0.0.5"));
        let cases: Vec<(&str, Vec<Value>, Vec<&str>)> = vec![
            (
                "many subdomains of one domain",
                vec![
                    record("a.example.org", "10.0.0.5"),
                    record("b.example.org", "10.0.0.6"),
                    record("x.y.example.org", "10.0.0.5"),
                ],
                vec!["+allow *.example.org  # 3 requests from 2 clients: 10.0.0.5, 10.0.0.6; names: a.example.org, b.example.org, x.y.example.org"],
            ),
            (
                "a deeper common suffix",
                many.to_vec(),
                vec!["+allow *.cdn.example.org  # 4 requests from 1 client: 10.0.0.5; names: a.cdn.example.org, b.cdn.example.org, c.cdn.example.org, d.cdn.example.org"],
            ),
            (
                "the name and its subdomains",
                vec![record("example.net", "10.0.0.5"), record("www.example.net", "10.0.0.5")],
                vec!["+allow .example.net  # 2 requests from 1 client: 10.0.0.5; names: example.net, www.example.net"],
            ),
            (
                "a public-suffix boundary",
                vec![
                    record("a.example.co.uk", "10.0.0.5"),
                    record("b.example.co.uk", "10.0.0.5"),
                    record("other.co.uk", "10.0.0.7"),
                ],
                vec![
                    "+allow *.example.co.uk  # 2 requests from 1 client: 10.0.0.5; names: a.example.co.uk, b.example.co.uk",
                    "+allow other.co.uk  # 1 request from 1 client: 10.0.0.7",
                ],
            ),
            (
                "a shared cloud namespace",
                vec![
                    record("acct1.blob.core.windows.net", "10.0.0.5"),
                    record("acct2.blob.core.windows.net", "10.0.0.5"),
                    record("site.web.core.windows.net", "10.0.0.5"),
                ],
                vec![
                    "+allow acct1.blob.core.windows.net  # 1 request from 1 client: 10.0.0.5",
                    "+allow acct2.blob.core.windows.net  # 1 request from 1 client: 10.0.0.5",
                    "+allow site.web.core.windows.net  # 1 request from 1 client: 10.0.0.5",
                ],
            ),
            (
                "IP literals",
                vec![
                    record("203.0.113.7", "10.0.0.5"),
                    record("203.0.113.7", "10.0.0.6"),
                    json!({"target": "access", "dst": "198.51.100.9:443", "client": "10.0.0.8:1", "action": "deny", "outcome": "denied"}),
                    json!({"host": "2001:db8::1", "client": "10.0.0.8", "action": "deny", "outcome": "denied"}),
                ],
                vec![
                    "+allow 203.0.113.7  # 2 requests from 2 clients: 10.0.0.5, 10.0.0.6",
                    "+allow 198.51.100.9  # 1 request from 1 client: 10.0.0.8",
                    "+allow 2001:db8::1  # 1 request from 1 client: 10.0.0.8",
                ],
            ),
        ];
        for (what, records, want) in cases {
            assert_eq!(lines(&records), want, "{what}");
        }
    }

    #[test]
    fn what_is_left_out_and_what_is_counted() {
        let mut input = Input::default();
        input.add_lines(
            &[
                r#"{"target":"access","host":"ok.test","client":"10.0.0.1:1","action":"allow","outcome":"ok"}"#,
                r#"{"target":"access","host":"ssrf.test","client":"10.0.0.1:1","action":"deny","outcome":"ssrf"}"#,
                r#"{"target":"access","host":"bad.test","client":"10.0.0.1:1","action":"deny","outcome":"denied","rule":"deny bad.test"}"#,
                r#"{"target":"access","host":"ads.test","client":"10.0.0.1:1","action":"allow","outcome":"ok","would_deny":true,"rule":"deny ads.test"}"#,
                r#"{"target":"hostgate","message":"listening"}"#,
                "not json",
                r#"{"target":"access","host":"bad name!","client":"10.0.0.1:1","action":"deny","outcome":"denied"}"#,
            ]
            .join("\n"),
        );
        assert_eq!((input.records, input.denied, input.would_deny), (5, 0, 1));
        assert_eq!((input.unreadable, input.bad_names), (1, 1));
        let s = suggest(&input);
        let text = render(&input, &s, "allow", "log");
        assert!(text.contains("+allow ads.test  # 1 request from 1 client: 10.0.0.1; 1 would-deny\n"), "{text}");
        assert_eq!(text.lines().filter(|l| l.starts_with('+')).count(), 1, "{text}");
    }

    #[test]
    fn suggested_lines_parse_as_rules() {
        let records = [
            record("a.example.org", "10.0.0.5"),
            record("b.example.org", "10.0.0.5"),
            record("example.net", "10.0.0.5"),
            record("www.example.net", "10.0.0.5"),
            record("2001:db8::1", "10.0.0.5"),
            record("203.0.113.7", "10.0.0.5"),
        ];
        let text: String = lines(&records).iter().map(|l| format!("{}\n", &l[1..])).collect();
        let rules = crate::policy::parse_rules("s.rules", &text, None, &Default::default())
            .unwrap_or_else(|e| panic!("{e:?}\n{text}"));
        assert_eq!(rules.len(), 4);
    }
}
