//! The JSON of `/rules`, `/recent` and `/top`, and the shared readings the status page shows
//! too (the rule rows, the top tables grouped by registrable domain).

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::domain::registrable;
use super::hits::unix_ms;
use super::recent::{rfc3339, Event, Totals};
use super::view::{parse_since, Page, Params, View};
use crate::policy::{Rule, RuleId, Transport};

const JSON: &str = "application/json";

/// Pretty JSON and a final newline.
pub(super) fn body(v: &Value) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).unwrap_or_else(|_| b"{}".to_vec());
    b.push(b'\n');
    b
}

fn page(v: &Value) -> Page {
    Page { status: 200, content_type: JSON, body: body(v), csp: None }
}

/// What a rule is to the decision: a name rule, an address rule, a `udp://` rule (for the
/// firewall only) or inactive (an unresolved placeholder as its whole name).
pub(super) fn kind(r: &Rule) -> &'static str {
    match (r.transport, &r.pattern, r.net) {
        (Transport::Udp, _, _) => "udp",
        (_, Some(_), _) => "name",
        (_, None, Some(_)) => "address",
        _ => "inactive",
    }
}

/// One rule's row.
#[derive(Debug)]
pub(super) struct RuleRow<'a> {
    pub(super) id: RuleId,
    pub(super) rule: &'a Rule,
    pub(super) hits: u64,
    pub(super) last_ms: Option<u64>,
}

/// How `/rules` orders its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sort {
    /// File order (the policy's).
    File,
    /// Most hits first.
    Hits,
    /// Most recently hit first.
    Last,
}

/// The rules of the generation in force, with their counts: all of them, or (`unused`) those
/// that decide connections and were not hit since `since`.
pub(super) fn rule_rows<'a>(view: &View<'a>, sort: Sort, unused: Option<SystemTime>) -> Vec<RuleRow<'a>> {
    let gen = view.gen;
    let since_ms = unused.map(unix_ms);
    let mut rows: Vec<RuleRow<'a>> = gen
        .policy
        .rules()
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let id = RuleId(i as u32);
            let h = gen.hits.get(id);
            RuleRow { id, rule, hits: h.hits, last_ms: h.last_ms }
        })
        .filter(|r| match since_ms {
            None => true,
            Some(since) => r.rule.decides_tcp() && r.last_ms.is_none_or(|l| l < since),
        })
        .collect();
    match sort {
        Sort::File => {}
        Sort::Hits => rows.sort_by(|a, b| b.hits.cmp(&a.hits).then(a.id.cmp(&b.id))),
        Sort::Last => rows.sort_by(|a, b| b.last_ms.cmp(&a.last_ms).then(a.id.cmp(&b.id))),
    }
    rows
}

/// `/rules`.
pub(super) fn rules(view: &View<'_>, p: &Params, now: SystemTime) -> Result<Page, String> {
    let sort = match p.get("sort") {
        None | Some("file") => Sort::File,
        Some("hits") => Sort::Hits,
        Some("last") => Sort::Last,
        Some(other) => return Err(format!("sort: `{other}` is not hits, last or file")),
    };
    let since = match p.get("since") {
        Some(v) => Some(parse_since(v, now)?),
        None if p.flag("unused") => Some(view.gen.loaded_at),
        None => None,
    };
    let limit = p.count("limit", usize::MAX)?;
    let rows = rule_rows(view, sort, since);
    let listed: Vec<Value> = rows
        .iter()
        .take(limit)
        .map(|r| {
            json!({
                "id": r.id.0,
                "file": &*r.rule.origin.file,
                "line": r.rule.origin.line,
                "source": r.rule.origin.to_string(),
                "action": r.rule.action.as_str(),
                "target": r.rule.target,
                "kind": kind(r.rule),
                "hits": r.hits,
                "last_hit": r.last_ms.map(rfc3339),
                "last_hit_unix_ms": r.last_ms,
            })
        })
        .collect();
    Ok(page(&json!({
        "generation": view.gen.number,
        "loaded_at": rfc3339(unix_ms(view.gen.loaded_at)),
        "unused_since": since.map(|s| rfc3339(unix_ms(s))),
        "sort": match sort { Sort::File => "file", Sort::Hits => "hits", Sort::Last => "last" },
        "count": rows.len(),
        "rules": listed,
    })))
}

/// `/recent`.
pub(super) fn recent(view: &View<'_>, p: &Params) -> Result<Page, String> {
    let Some(r) = &view.ops.recent else { return Err("recent decisions are not kept".to_string()) };
    let limit = p.count("limit", r.capacity())?;
    let denied = p.flag("denied");
    let events = r.events(limit, |e| !denied || e.denied() || e.would_deny);
    let (kept, seen) = r.counts();
    Ok(page(&json!({
        "capacity": r.capacity(),
        "kept": kept,
        "seen": seen,
        "events": events.iter().map(Event::to_json).collect::<Vec<_>>(),
    })))
}

/// Denied (or would-deny) names grouped by registrable domain.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct DomainRow {
    /// The registrable domain (or the address, for connections without a name).
    pub(super) domain: String,
    /// Records.
    pub(super) count: u64,
    /// Its names, most frequent first.
    pub(super) names: Vec<(String, u64)>,
}

/// Groups `(name, count)` by registrable domain, largest first.
pub(super) fn by_domain(names: &[(String, u64)]) -> Vec<DomainRow> {
    let mut rows: Vec<DomainRow> = Vec::new();
    for (name, n) in names {
        let d = if name.parse::<IpAddr>().is_ok() { name.as_str() } else { registrable(name) };
        match rows.iter_mut().find(|r| r.domain == d) {
            Some(r) => {
                r.count += n;
                r.names.push((name.clone(), *n));
            }
            None => rows.push(DomainRow { domain: d.to_string(), count: *n, names: vec![(name.clone(), *n)] }),
        }
    }
    for r in &mut rows {
        r.names.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    }
    rows.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.domain.cmp(&b.domain)));
    rows
}

/// Per second over what the window covers.
pub(super) fn per_second(n: u64, t: &Totals) -> f64 {
    let secs = t.covered.max(Duration::from_secs(1)).as_secs_f64();
    (n as f64 / secs * 1000.0).round() / 1000.0
}

/// `/top`.
pub(super) fn top(view: &View<'_>, p: &Params, now: SystemTime) -> Result<Page, String> {
    let Some(r) = &view.ops.recent else { return Err("recent decisions are not kept".to_string()) };
    let limit = p.count("limit", 20)?;
    let t = r.totals(unix_ms(now));
    let domains = |names: &[(String, u64)]| -> Vec<Value> {
        by_domain(names)
            .into_iter()
            .take(limit)
            .map(|d| {
                let names: Vec<Value> =
                    d.names.iter().take(limit).map(|(n, c)| json!({"name": n, "count": c})).collect();
                json!({"domain": d.domain, "count": d.count, "names": names})
            })
            .collect()
    };
    let a = t.actions;
    Ok(page(&json!({
        "window_s": t.window.as_secs(),
        "covered_s": t.covered.as_secs(),
        "decisions": {"bypass": a[0], "allow": a[1], "deny": a[2], "would_deny": a[3]},
        "per_second": {
            "bypass": per_second(a[0], &t), "allow": per_second(a[1], &t),
            "deny": per_second(a[2], &t), "would_deny": per_second(a[3], &t),
        },
        "denied": domains(&t.denied),
        "denied_other": t.denied_other,
        "would_deny": domains(&t.would_deny),
        "would_deny_other": t.would_deny_other,
        "clients": t.clients.iter().take(limit).map(|(c, n)| json!({"client": c.to_string(), "denials": n})).collect::<Vec<_>>(),
        "errors": t.errors.iter().take(limit).map(|(o, n)| json!({"outcome": o, "count": n})).collect::<Vec<_>>(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_group_by_registrable_domain() {
        let names = vec![
            ("a.example.co.uk".to_string(), 3),
            ("b.example.co.uk".to_string(), 2),
            ("x.blob.core.windows.net".to_string(), 4),
            ("203.0.113.7".to_string(), 1),
        ];
        let rows = by_domain(&names);
        let got: Vec<(&str, u64, usize)> = rows.iter().map(|r| (r.domain.as_str(), r.count, r.names.len())).collect();
        assert_eq!(got, vec![("example.co.uk", 5, 2), ("x.blob.core.windows.net", 4, 1), ("203.0.113.7", 1, 1)]);
    }
}
