//! `explain`'s answer for one name or address: the client's group, the decision, the rule that
//! made it, why, and what became of every other matching rule; as text or one JSON object.
//!
//! This module owns that answer's wording, for `hostgate explain` ([`crate::cli`]) and the
//! status page's explain form (`crate::status`). It does not load a configuration or
//! normalise a path: its callers hand it the compiled policy and the question.

use std::io::Write;

use hostgate_matcher::Host;
use serde_json::json;

use crate::policy::{AddrQuery, Candidate, GroupId, Policy, Query, Rank, Scheme, Verdict};

/// What `explain` is asked, besides the host.
pub(crate) struct Ask<'a> {
    pub(crate) scheme: Scheme,
    pub(crate) port: u16,
    /// The request path, normalised.
    pub(crate) path: Option<&'a str>,
    /// The client's address (`--client`) and the group it is in.
    pub(crate) client: Option<std::net::IpAddr>,
    pub(crate) group: GroupId,
    pub(crate) as_json: bool,
}

/// `explain`'s answer for one host or address: the group, the decision, the winning rule, why,
/// and every other candidate.
pub(crate) fn explain_host(p: &Policy, ask: &Ask<'_>, name: &str, out: &mut impl Write) -> Result<(), String> {
    let w = |e: std::io::Error| e.to_string();
    let Ask { scheme, port, path, client, group, as_json } = *ask;
    let address = name.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().ok();
    let host = match address {
        Some(_) => None,
        None => match Host::new(name) {
            Ok(h) => Some(h),
            Err(e) => {
                if as_json {
                    let v = json!({"host": name, "action": "deny", "rule": null, "source": null, "default": false, "error": e.to_string()});
                    writeln!(out, "{v}").map_err(w)?;
                } else {
                    writeln!(out, "{name:?}: deny ({e}: never matches any rule)").map_err(w)?;
                }
                return Ok(());
            }
        },
    };
    let (d, candidates) = match (&host, address) {
        (Some(host), _) => p.explain(&Query { host, scheme, port, path, group }),
        (None, Some(addr)) => p.explain_address(&AddrQuery { addr, scheme: Some(scheme), port, group }),
        (None, None) => unreachable!("a name that is not an address is a host"),
    };
    let winner = d.rule.map(|r| p.rule(r));
    let g = p.group(group);
    let rank = |c: &Candidate| match c.rank {
        Rank::Name(s) => json!({"exact": s.is_exact(), "literal": s.literal_len()}),
        Rank::Prefix(len) => json!({"prefix": len}),
    };
    let why = match candidates.iter().find(|c| c.verdict == Verdict::Winner).map(|c| c.rank) {
        Some(Rank::Prefix(len)) => format!("the longest matching prefix (/{len}) among the address rules that fit"),
        Some(Rank::Name(_)) => "the most specific matching pattern among the rules that fit".to_string(),
        None if address.is_some() => "no address rule fits: the default action".to_string(),
        None => "no rule fits: the default action".to_string(),
    };
    if as_json {
        let others: Vec<_> = candidates
            .iter()
            .filter(|c| c.verdict != Verdict::Winner)
            .map(|c| {
                let r = p.rule(c.rule);
                json!({
                    "rule": r.target, "action": r.action, "source": r.origin.to_string(),
                    "verdict": c.verdict.as_str(), "rank": rank(c),
                })
            })
            .collect();
        let v = json!({
            "host": host.as_ref().map_or_else(|| name.to_string(), |h| h.as_str().to_string()),
            "kind": if address.is_some() { "address" } else { "name" },
            "client": client.map(|c| c.to_string()),
            "group": g.name.as_deref(),
            "scheme": scheme,
            "port": port,
            "path": path,
            "action": d.action,
            "rule": winner.map(|r| r.target.as_str()),
            "pattern": winner.and_then(|r| r.pattern.as_ref()).map(ToString::to_string),
            "network": winner.and_then(|r| r.net).map(|n| n.to_string()),
            "source": winner.map(|r| r.origin.to_string()),
            "default": d.rule.is_none(),
            "why": why,
            "path_unenforced": d.path_unenforced,
            "tie": d.tie,
            "would_deny": d.would_deny,
            "others": others,
        });
        writeln!(out, "{v}").map_err(w)?;
        return Ok(());
    }
    let path_note = path.map(|p| format!(" {p}")).unwrap_or_default();
    let shown = host.as_ref().map_or_else(|| address.map(|a| a.to_string()).unwrap_or_default(), |h| h.to_string());
    let kind = if address.is_some() { ", an address: decides only a connection without a name" } else { "" };
    writeln!(out, "{shown} ({scheme}, port {port}{path_note}{kind}): {}", d.action).map_err(w)?;
    let group_line = match (&g.name, client, &g.origin) {
        (Some(name), Some(c), Some(at)) => format!("{name} (client {c}, defined at {at})"),
        (Some(name), _, _) => name.to_string(),
        (None, Some(c), _) => format!("none (client {c} is in no [[client]] group: the top-level policy)"),
        (None, None, _) => "none (no --client given: the top-level policy)".to_string(),
    };
    writeln!(out, "  group   {group_line}").map_err(w)?;
    match winner {
        Some(r) => writeln!(out, "  rule    {} {}  at {}", r.action, r.target, r.origin).map_err(w)?,
        None => writeln!(out, "  no rule fits: the default action ({})", d.action).map_err(w)?,
    }
    writeln!(out, "  why     {why}").map_err(w)?;
    if d.path_unenforced {
        writeln!(out, "  note    the rule's path is not visible without inspection: decided by host alone")
            .map_err(w)?;
    }
    if d.tie {
        writeln!(out, "  note    equally specific rules disagree: the strictest action won").map_err(w)?;
    }
    if d.would_deny {
        writeln!(out, "  note    report mode: the deny is only logged (would_deny), the connection is allowed")
            .map_err(w)?;
    }
    for c in candidates.iter().filter(|c| c.verdict != Verdict::Winner) {
        let r = p.rule(c.rule);
        writeln!(out, "  {:<7} {} {}  at {} ({})", "beat", r.action, r.target, r.origin, c.verdict.as_str())
            .map_err(w)?;
    }
    Ok(())
}
