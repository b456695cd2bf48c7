//! The status page at `/`: one server-rendered HTML document, no framework, no external asset,
//! readable with JavaScript off (a few lines of script only reload it every 15 s while no
//! question is on it). It reads; it changes nothing.
//!
//! Everything it shows that is not a number goes through [`E`], which escapes `& < > " '`:
//! names, paths, user agents and client-chosen text come from the network, and rule files and
//! their paths from whoever wrote them. A content security policy allows only this page's own
//! style and script (by hash), as a second line.

use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::SystemTime;

use super::hits::unix_ms;
use super::json::{by_domain, per_second, rule_rows, Sort};
use super::recent::{rfc3339, Event};
use super::view::{Page, Params, View};
use crate::access::kind_str;
use crate::explain::{explain_host, Ask};
use crate::policy::{GroupId, Scheme};

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
h1{margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:.3em 0}td,th{padding:.15em .6em;text-align:left;vertical-align:top;border-bottom:1px solid #eee}\
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}.meta{color:#555}\
pre{background:#f6f6f6;padding:.6em;white-space:pre-wrap;overflow-wrap:anywhere}.deny{color:#a00}.ok{color:#070}\
.grid{display:flex;flex-wrap:wrap;gap:0 2.5em}form input{margin-right:.5em}";
const SCRIPT: &str = "if(!location.search){setTimeout(function(){location.reload()},15000)}";
/// Rows of the recent denials table.
const RECENT_ROWS: usize = 50;
/// Rows of each top table.
const TOP_ROWS: usize = 15;

/// Escapes text for HTML element content and quoted attribute values.
pub(super) struct E<'a>(pub(super) &'a str);

impl fmt::Display for E<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = 0;
        for (i, c) in self.0.char_indices() {
            let rep = match c {
                '&' => "&amp;",
                '<' => "&lt;",
                '>' => "&gt;",
                '"' => "&quot;",
                '\'' => "&#39;",
                _ => continue,
            };
            f.write_str(&self.0[last..i])?;
            f.write_str(rep)?;
            last = i + 1;
        }
        f.write_str(&self.0[last..])
    }
}

/// The page's content security policy: nothing but its own style and script.
fn csp() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        use base64::Engine as _;
        let hash = |s: &str| {
            let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
            base64::engine::general_purpose::STANDARD.encode(d.as_ref())
        };
        format!(
            "default-src 'none'; style-src 'sha256-{}'; script-src 'sha256-{}'; form-action 'self'; \
             base-uri 'none'; frame-ancestors 'none'",
            hash(STYLE),
            hash(SCRIPT)
        )
    })
}

/// The page.
pub(super) fn render(view: &View<'_>, p: &Params, now: SystemTime) -> Page {
    let mut h = String::with_capacity(32 * 1024);
    // Writing to a String cannot fail.
    let _ = write_page(&mut h, view, p, now);
    Page { status: 200, content_type: "text/html; charset=utf-8", body: h.into_bytes(), csp: Some(csp()) }
}

fn write_page(h: &mut String, view: &View<'_>, p: &Params, now: SystemTime) -> fmt::Result {
    let gen = view.gen;
    let policy = &gen.policy;
    write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>hostgate status</title>\
         <style>{STYLE}</style></head><body>\n<h1>hostgate</h1>\n"
    )?;
    let mode = if policy.report_all() { "report" } else { "enforce" };
    writeln!(
        h,
        "<p class=\"meta\" id=\"generation\">generation <b>{}</b>, loaded {} from <code>{}</code>; \
         default <b>{}</b>, mode <b>{mode}</b>; up since {}; page made {}</p>",
        gen.number,
        rfc3339(unix_ms(gen.loaded_at)),
        E(&gen.config.path.display().to_string()),
        policy.default_action(),
        rfc3339(unix_ms(view.ops.started)),
        rfc3339(unix_ms(now)),
    )?;
    explain_section(h, view, p)?;
    match &view.ops.recent {
        Some(r) => {
            let t = r.totals(unix_ms(now));
            let mins = t.window.as_secs() / 60;
            writeln!(h, "<h2>Decisions, last {mins} min</h2>")?;
            writeln!(h, "<table id=\"rates\"><tr><th>action</th><th>records</th><th>per second</th></tr>")?;
            for (i, name) in ["bypass", "allow", "deny", "would-deny"].iter().enumerate() {
                let n = t.actions[i];
                writeln!(
                    h,
                    "<tr><td>{name}</td><td class=\"n\">{n}</td><td class=\"n\">{:.3}</td></tr>",
                    per_second(n, &t)
                )?;
            }
            writeln!(h, "</table>\n<div class=\"grid\">")?;
            domain_table(h, "top-denied", "Top denied", &t.denied, t.denied_other)?;
            domain_table(h, "top-would-deny", "Top would-deny (report mode)", &t.would_deny, t.would_deny_other)?;
            writeln!(
                h,
                "<div><h2>Clients by denials</h2><table id=\"top-clients\"><tr><th>client</th><th>denials</th></tr>"
            )?;
            for (c, n) in t.clients.iter().take(TOP_ROWS) {
                writeln!(h, "<tr><td>{}</td><td class=\"n\">{n}</td></tr>", E(&c.to_string()))?;
            }
            writeln!(h, "</table></div>")?;
            writeln!(
                h,
                "<div><h2>Errors by outcome</h2><table id=\"errors\"><tr><th>outcome</th><th>records</th></tr>"
            )?;
            for (o, n) in t.errors.iter().take(TOP_ROWS) {
                writeln!(h, "<tr><td>{}</td><td class=\"n\">{n}</td></tr>", E(o))?;
            }
            writeln!(h, "</table></div></div>")?;
            let recent = r.events(RECENT_ROWS, |e| e.denied() || e.would_deny);
            recent_table(h, &recent)?;
        }
        None => writeln!(h, "<p>Recent decisions are not kept.</p>")?,
    }
    reloads_table(h, view)?;
    writeln!(h, "<h2>Listeners</h2><table id=\"listeners\"><tr><th>kind</th><th>address</th></tr>")?;
    for (kind, addr) in view.listeners {
        writeln!(h, "<tr><td>{}</td><td>{}</td></tr>", kind_str(*kind), E(&addr.to_string()))?;
    }
    if let Some(a) = view.admin {
        writeln!(h, "<tr><td>admin</td><td>{}</td></tr>", E(&a.to_string()))?;
    }
    writeln!(h, "</table>")?;
    let unused = rule_rows(view, Sort::File, Some(gen.loaded_at));
    writeln!(
        h,
        "<h2>Rules without a hit since generation {} loaded</h2><p id=\"unused-count\">{} of {} rules \
         (all of them: <a href=\"/rules?unused=1\">/rules?unused=1</a>)</p>",
        gen.number,
        unused.len(),
        policy.rules().len()
    )?;
    writeln!(h, "<table id=\"unused\"><tr><th>rule</th><th>at</th><th>hits before</th></tr>")?;
    for r in unused.iter().take(TOP_ROWS) {
        writeln!(
            h,
            "<tr><td>{} {}</td><td>{}</td><td class=\"n\">{}</td></tr>",
            r.rule.action,
            E(&r.rule.target),
            E(&r.rule.origin.to_string()),
            r.hits
        )?;
    }
    writeln!(h, "</table>")?;
    writeln!(
        h,
        "<p class=\"meta\">JSON: <a href=\"/rules?sort=hits\">/rules</a> · <a href=\"/recent\">/recent</a> · \
         <a href=\"/top\">/top</a> · <a href=\"/policy\">/policy</a> · <a href=\"/metrics\">/metrics</a></p>"
    )?;
    writeln!(h, "<script>{SCRIPT}</script>\n</body></html>")
}

fn explain_section(h: &mut String, view: &View<'_>, p: &Params) -> fmt::Result {
    let name = p.get("explain").unwrap_or("");
    let port = p.get("port").unwrap_or("443");
    let client = p.get("client").unwrap_or("");
    let http = p.get("scheme") == Some("http");
    writeln!(
        h,
        "<h2>Explain</h2><form id=\"explain-form\" method=\"get\" action=\"/\">\
         <label>name or address <input name=\"explain\" value=\"{}\" size=\"40\" required></label>\
         <label>port <input name=\"port\" value=\"{}\" size=\"5\"></label>\
         <label>client <input name=\"client\" value=\"{}\" size=\"16\" placeholder=\"10.0.0.5\"></label>\
         <label>scheme <select name=\"scheme\"><option value=\"https\"{}>https</option>\
         <option value=\"http\"{}>http</option></select></label> <button type=\"submit\">explain</button></form>",
        E(name),
        E(port),
        E(client),
        if http { "" } else { " selected" },
        if http { " selected" } else { "" },
    )?;
    if name.is_empty() {
        return Ok(());
    }
    let answer = explain_answer(view, name, port, client, http);
    writeln!(h, "<pre id=\"explain-answer\">{}</pre>", E(&answer))
}

/// `explain`'s text answer, as `hostgate explain` prints it, for the policy in force.
fn explain_answer(view: &View<'_>, name: &str, port: &str, client: &str, http: bool) -> String {
    let Ok(port) = port.parse::<u16>() else { return format!("port: `{port}` is not a port number") };
    let client = match client {
        "" => None,
        c => match c.parse::<IpAddr>() {
            Ok(a) => Some(a),
            Err(_) => return format!("client: `{c}` is not an IP address"),
        },
    };
    let policy = &view.gen.policy;
    let group = client.map_or(GroupId::NONE, |a| policy.group_of(a));
    let scheme = if http { Scheme::Http } else { Scheme::Https };
    let ask = Ask { scheme, port, path: None, client, group, as_json: false };
    let mut out = Vec::new();
    match explain_host(policy, &ask, name, &mut out) {
        Ok(()) => String::from_utf8_lossy(&out).into_owned(),
        Err(e) => e,
    }
}

fn domain_table(h: &mut String, id: &str, title: &str, names: &[(String, u64)], other: u64) -> fmt::Result {
    writeln!(h, "<div><h2>{title}</h2><table id=\"{id}\"><tr><th>domain</th><th>records</th><th>names</th></tr>")?;
    for d in by_domain(names).iter().take(TOP_ROWS) {
        let mut list = String::new();
        for (i, (n, c)) in d.names.iter().take(5).enumerate() {
            if i > 0 {
                list.push_str(", ");
            }
            let _ = write!(list, "{} ({c})", E(n));
        }
        if d.names.len() > 5 {
            let _ = write!(list, ", … {} more", d.names.len() - 5);
        }
        writeln!(h, "<tr><td>{}</td><td class=\"n\">{}</td><td>{list}</td></tr>", E(&d.domain), d.count)?;
    }
    if other > 0 {
        writeln!(h, "<tr><td><i>other names</i></td><td class=\"n\">{other}</td><td></td></tr>")?;
    }
    writeln!(h, "</table></div>")
}

fn recent_table(h: &mut String, events: &[Event]) -> fmt::Result {
    writeln!(
        h,
        "<h2>Recent denials</h2><table id=\"recent-denials\"><tr><th>time</th><th>client</th><th>name</th>\
         <th>port</th><th>request</th><th>result</th><th>rule</th><th>at</th></tr>"
    )?;
    for e in events {
        let request = match (&e.method, &e.path) {
            (Some(m), Some(p)) => format!("{m} {p}"),
            (Some(m), None) => m.to_string(),
            _ => e.protocol.as_str().to_string(),
        };
        let result = if e.would_deny { "would deny (report)".to_string() } else { e.outcome.as_str().to_string() };
        let (rule, at) = match &e.rule {
            Some((action, origin)) => (format!("{action} {}", e.target), origin.to_string()),
            None => ("default".to_string(), "-".to_string()),
        };
        writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td><td class=\"deny\">{}</td>\
             <td class=\"rule\">{}</td><td class=\"source\">{}</td></tr>",
            E(&rfc3339(e.at_ms)),
            E(&e.client.to_string()),
            E(&e.label()),
            e.port.map_or(String::new(), |p| p.to_string()),
            E(&request),
            E(&result),
            E(&rule),
            E(&at),
        )?;
    }
    writeln!(h, "</table>")
}

fn reloads_table(h: &mut String, view: &View<'_>) -> fmt::Result {
    writeln!(
        h,
        "<h2>Reloads</h2><table id=\"reloads\"><tr><th>time</th><th>result</th><th>generation</th>\
         <th>bypass / allow / deny</th><th>changes</th></tr>"
    )?;
    for r in view.ops.reloads() {
        let result = match &r.error {
            // Generation 1 is only ever made by the start.
            None if r.generation == 1 => "started".to_string(),
            None => "applied".to_string(),
            Some(e) => format!("failed: {e}"),
        };
        let mut changes: Vec<String> =
            r.changes.iter().map(|c| format!("{}: +{} -{}", c.file, c.added, c.removed)).collect();
        if r.carried > 0 {
            changes.push(format!("hit counts kept for {} rules", r.carried));
        }
        for s in &r.needs_restart {
            changes.push(format!("{s} changed: needs a restart"));
        }
        writeln!(
            h,
            "<tr><td>{}</td><td class=\"{}\">{}</td><td class=\"n\">{}</td><td class=\"n\">{} / {} / {}</td><td>{}</td></tr>",
            E(&rfc3339(r.at_ms)),
            if r.error.is_some() { "deny" } else { "ok" },
            E(&result),
            r.generation,
            r.rules[0],
            r.rules[1],
            r.rules[2],
            E(&changes.join("; ")),
        )?;
    }
    writeln!(h, "</table>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(E("a<b>&\"c'd").to_string(), "a&lt;b&gt;&amp;&quot;c&#39;d");
        assert_eq!(E("\"><img src=x onerror=alert(1)>").to_string(), "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;");
        assert_eq!(E("plain é").to_string(), "plain é");
    }

    #[test]
    fn a_recent_denial_with_markup_is_text() {
        use crate::config::ListenerKind;
        use crate::outcome::Outcome;
        use crate::policy::{Action, Origin};
        let e = Event {
            at_ms: 0,
            client: "10.0.0.5:1".parse().unwrap_or_else(|e| panic!("{e}")),
            group: None,
            user: Some("<b>u</b>".into()),
            kind: ListenerKind::Connect,
            protocol: crate::access::Protocol::Http,
            name: "\"><img src=x onerror=alert(1)>".to_string(),
            port: Some(80),
            addr: None,
            method: Some(http::Method::GET),
            path: Some("/<script>alert(2)</script>".to_string()),
            status: Some(403),
            action: Some(Action::Deny),
            would_deny: false,
            outcome: Outcome::Denied,
            generation: 1,
            rule: Some((Action::Deny, Origin { file: "<i>.rules".into(), line: 2 })),
            target: "<svg onload=x>".to_string(),
        };
        let mut h = String::new();
        recent_table(&mut h, &[e]).unwrap_or_else(|e| panic!("{e}"));
        for tag in ["<img", "<script", "<svg", "<i>", "<b>"] {
            assert!(!h.contains(tag), "{tag} in {h}");
        }
        assert!(h.contains("<td>&quot;&gt;&lt;img src=x onerror=alert(1)&gt;</td>"), "{h}");
        assert!(h.contains("GET /&lt;script&gt;alert(2)&lt;/script&gt;"), "{h}");
        assert!(h.contains("deny &lt;svg onload=x&gt;") && h.contains("&lt;i&gt;.rules:2"), "{h}");
    }

    #[test]
    fn the_csp_names_the_page_s_own_style_and_script() {
        let c = csp();
        assert!(c.starts_with("default-src 'none'; style-src 'sha256-"), "{c}");
        assert!(!c.contains("unsafe"), "{c}");
    }
}
