//! The lint of `hostgate check`: rules that are legal but probably not what the operator meant.
//!
//! Each check works on the compiled policy's rules and matcher, mostly by asking the matcher about
//! a representative host of a rule (the rule's pattern with each `*` filled in), so that it sees
//! exactly what the data path would see. This module owns the checks and their messages; it does
//! not compile or decide, and it is handed what it reads ([`run`]) rather than the `Policy`, so
//! that it depends on the rule types only.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use hostgate_matcher::{Host, Matcher, Matches, NetTable, Pattern};

use super::group::{GroupId, GroupInfo};
use super::ports::Ports;
use super::rule::{path_matches, Action, Origin, Rule, RuleId, Scheme};

/// A warning about one rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lint {
    /// Which check.
    pub kind: LintKind,
    /// The rule it is about.
    pub origin: Origin,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for Lint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: warning[{}]: {}", self.origin, self.kind.as_str(), self.message)
    }
}

/// The checks, most serious first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LintKind {
    /// The same target with different actions.
    Conflict,
    /// Different, equally specific patterns with different actions match the same name.
    Tie,
    /// A bypass rule covers a whole CDN or cloud hosting namespace: anyone can host content there.
    SharedNamespace,
    /// A wildcard directly over a public suffix (`*.com`, `*.co.uk`).
    PublicSuffix,
    /// A path constraint that TLS hides unless the connection is inspected.
    PathUnenforceable,
    /// A placeholder without a value in `[vars]`.
    UnresolvedPlaceholder,
    /// The same client network in two client groups.
    GroupOverlap,
    /// A client group that no rule applies to: its clients get only its default action.
    EmptyGroup,
    /// A rule made redundant by a more general rule with the same action.
    Shadowed,
    /// The same target and action again.
    Duplicate,
}

impl LintKind {
    /// A short name for output.
    pub fn as_str(self) -> &'static str {
        match self {
            LintKind::Conflict => "conflict",
            LintKind::Tie => "tie",
            LintKind::SharedNamespace => "shared-namespace",
            LintKind::PublicSuffix => "public-suffix",
            LintKind::PathUnenforceable => "path-unenforceable",
            LintKind::UnresolvedPlaceholder => "unresolved-placeholder",
            LintKind::GroupOverlap => "group-overlap",
            LintKind::EmptyGroup => "empty-group",
            LintKind::Shadowed => "shadowed",
            LintKind::Duplicate => "duplicate",
        }
    }
}

/// Namespaces where anyone can publish content under a name of their choosing.
const SHARED_NAMESPACES: &[&str] = &[
    "akamai.net",
    "akamaiedge.net",
    "akamaihd.net",
    "akamaized.net",
    "amazonaws.com",
    "appspot.com",
    "azure-api.net",
    "azureedge.net",
    "azurefd.net",
    "azurewebsites.net",
    "blob.core.windows.net",
    "cloudapp.azure.com",
    "cloudapp.net",
    "cloudfront.net",
    "edgekey.net",
    "edgesuite.net",
    "fastly.net",
    "firebaseapp.com",
    "github.io",
    "githubusercontent.com",
    "googleusercontent.com",
    "herokuapp.com",
    "msecnd.net",
    "netlify.app",
    "pages.dev",
    "servicebus.windows.net",
    "trafficmanager.net",
    "vercel.app",
    "web.core.windows.net",
    "workers.dev",
];

/// The shared hosting namespaces the lint knows ([`LintKind::SharedNamespace`]): names under
/// them belong to whoever signed up, so `hostgate suggest` never widens a rule to one of them.
pub fn shared_namespaces() -> &'static [&'static str] {
    SHARED_NAMESPACES
}

/// Public suffixes of more than one label that a rule set is likely to meet. Every single label
/// is treated as a public suffix too. (A full Public Suffix List is not shipped.)
const MULTI_LABEL_PUBLIC_SUFFIXES: &[&str] = &[
    "ac.uk", "co.in", "co.jp", "co.kr", "co.nz", "co.uk", "co.za", "com.au", "com.br", "com.cn", "com.hk", "com.mx",
    "com.sg", "com.tr", "com.tw", "gov.uk", "ne.jp", "net.au", "or.jp", "org.au", "org.uk",
];

/// A rule's normalised target: pattern (its text and whether its leftmost `*` is one label),
/// scheme, port, path.
type TargetKey<'a> = (&'a Pattern, Option<Scheme>, Option<&'a Ports>, Option<&'a str>);

/// Every warning about `rules` (a policy's rule list, in file order) compiled into `matcher`
/// (each pattern's value is its rule's index); `applies` gives each rule's client groups (rules
/// of disjoint groups never conflict, tie or shadow each other); `inspected` says whether TLS
/// inspection shows the paths of `allow` and `deny` rules. Sorted by kind, then file and line.
pub(super) fn run(rules: &[Rule], applies: &[u64], matcher: &Matcher<RuleId>, inspected: bool) -> Vec<Lint> {
    let mut linter = Linter {
        rules,
        applies,
        matcher,
        inspected,
        out: Vec::new(),
        scratch: Matches::new(),
        first_by_target: HashMap::new(),
        ties_seen: HashSet::new(),
    };
    for (i, r) in rules.iter().enumerate() {
        linter.rule(RuleId(i as u32), r);
    }
    let mut out = linter.out;
    out.sort_by(|a, b| {
        a.kind.cmp(&b.kind).then_with(|| a.origin.file.cmp(&b.origin.file)).then(a.origin.line.cmp(&b.origin.line))
    });
    out
}

/// The lint's state while it walks the rules in file order: what it has found, and what it has
/// seen of earlier rules.
struct Linter<'a> {
    rules: &'a [Rule],
    applies: &'a [u64],
    matcher: &'a Matcher<RuleId>,
    inspected: bool,
    out: Vec<Lint>,
    scratch: Matches,
    /// The first rule of each target (for conflicts and duplicates).
    first_by_target: HashMap<TargetKey<'a>, usize>,
    /// Pairs of rules already reported as a tie, lower id first.
    ties_seen: HashSet<(RuleId, RuleId)>,
}

/// A warning of `kind` about `r`.
fn lint(r: &Rule, kind: LintKind, message: String) -> Lint {
    Lint { kind, origin: r.origin.clone(), message }
}

impl<'a> Linter<'a> {
    /// Every check of one rule, in order: placeholders and paths (any rule), then the checks of
    /// an active rule's pattern.
    fn rule(&mut self, me: RuleId, r: &'a Rule) {
        self.placeholders(r);
        self.path(r);
        let Some(pattern) = &r.pattern else { return };
        self.wildcard(r, pattern);
        self.repeated(me, r, pattern);
        self.overlaps(me, r, pattern);
    }

    /// Placeholders without a value: widened to a `*` that stays within one label, or the rule
    /// is inactive.
    fn placeholders(&mut self, r: &Rule) {
        if r.unresolved.is_empty() {
            return;
        }
        let names = r.unresolved.iter().map(|n| format!("<{n}>")).collect::<Vec<_>>().join(", ");
        let message = match &r.pattern {
            Some(pat) => format!("{names} has no value in [vars]: widened to `*` within one label (pattern `{pat}`)"),
            None => {
                format!("{names} has no value in [vars] and is the whole name: the rule is inactive until it is set")
            }
        };
        self.out.push(lint(r, LintKind::UnresolvedPlaceholder, message));
    }

    /// A path constraint that TLS hides: always without inspection, and on `bypass` rules (never
    /// inspected) with it.
    fn path(&mut self, r: &Rule) {
        let (Some(path), false) = (&r.path, r.scheme == Some(Scheme::Http)) else { return };
        // Inspection shows the path of `allow` and `deny` traffic; `bypass` is never inspected.
        if !self.inspected {
            self.out.push(lint(
                r,
                LintKind::PathUnenforceable,
                format!(
                    "path `{path}` is not enforceable without TLS inspection: over TLS this rule decides by host alone"
                ),
            ));
        } else if r.action == Action::Bypass {
            self.out.push(lint(
                r,
                LintKind::PathUnenforceable,
                format!(
                    "path `{path}` is not enforceable on a bypass rule: bypassed TLS is never inspected, so this rule decides by host alone"
                ),
            ));
        }
    }

    /// A wildcard over a shared hosting namespace (bypass only) or directly over a public suffix
    /// (not deny).
    fn wildcard(&mut self, r: &Rule, pattern: &Pattern) {
        let Some(tail) = wildcard_tail(pattern.as_str()) else { return };
        if r.action == Action::Bypass {
            if let Some(ns) = SHARED_NAMESPACES.iter().find(|ns| covers_suffix(tail, ns)) {
                self.out.push(lint(
                    r,
                    LintKind::SharedNamespace,
                    format!("bypass `{pattern}` covers all of `{ns}`, where anyone can host content: consider `allow` (inspected) or narrower names"),
                ));
            }
        }
        if r.action != Action::Deny && (!tail.contains('.') || MULTI_LABEL_PUBLIC_SUFFIXES.contains(&tail)) {
            self.out.push(lint(
                r,
                LintKind::PublicSuffix,
                format!("`{pattern}` is a wildcard directly over the public suffix `{tail}`"),
            ));
        }
    }

    /// The same target as an earlier rule: a conflict (another action) or a duplicate.
    fn repeated(&mut self, me: RuleId, r: &'a Rule, pattern: &'a Pattern) {
        let rules = self.rules;
        let key = (pattern, r.scheme, r.ports.as_ref(), r.path.as_deref());
        match self.first_by_target.get(&key) {
            Some(&j) if self.applies[j] & self.applies[me.0 as usize] == 0 => {}
            Some(&j) if rules[j].action != r.action => self.out.push(lint(
                r,
                LintKind::Conflict,
                format!(
                    "`{}` is also `{}` at {}; this rule says `{}`: the strictest (`{}`) wins",
                    r.target,
                    rules[j].action,
                    rules[j].origin,
                    r.action,
                    r.action.max(rules[j].action)
                ),
            )),
            Some(&j) => {
                self.out.push(lint(r, LintKind::Duplicate, format!("`{}` repeats {}", r.target, rules[j].origin)))
            }
            None => {
                self.first_by_target.insert(key, me.0 as usize);
            }
        }
    }

    /// What the matcher says about a representative host of the rule: the other rules as
    /// specific (ties) and the next less specific one (shadowing).
    fn overlaps(&mut self, me: RuleId, r: &Rule, pattern: &Pattern) {
        let Some(host) = representative(pattern.as_str()) else { return };
        let mut scratch = std::mem::take(&mut self.scratch);
        self.matcher.find_all_host(&host, &mut scratch);
        if let Some(pos) = scratch.iter().position(|h| *self.matcher.value(h.id()) == me) {
            self.ties(me, r, pattern, &host, &scratch, pos);
            self.shadowed(me, r, pattern, &scratch, pos);
        }
        self.scratch = scratch;
    }

    /// Ties: equally specific, different pattern, overlapping constraints, different action.
    fn ties(&mut self, me: RuleId, r: &Rule, pattern: &Pattern, host: &Host, hits: &Matches, pos: usize) {
        let my_spec = hits.as_slice()[pos].specificity();
        for h in hits.iter().filter(|h| h.specificity() == my_spec) {
            let other = *self.matcher.value(h.id());
            let o = &self.rules[other.0 as usize];
            let same_pattern = o.pattern.as_ref() == Some(pattern);
            if other != me
                && self.applies[other.0 as usize] & self.applies[me.0 as usize] != 0
                && !same_pattern
                && o.action != r.action
                && overlaps(o, r)
                && self.ties_seen.insert((me.min(other), me.max(other)))
            {
                self.out.push(lint(
                    r,
                    LintKind::Tie,
                    format!(
                        "`{}` ({}) and `{}` ({}, {}) are equally specific for names like `{}`: the strictest (`{}`) wins",
                        r.target,
                        r.action,
                        o.target,
                        o.action,
                        o.origin,
                        host,
                        r.action.max(o.action)
                    ),
                ));
            }
        }
    }

    /// Shadowed: the next less specific rule that applies wherever this one does covers it with
    /// the same action, and nothing in between disagrees.
    fn shadowed(&mut self, me: RuleId, r: &Rule, pattern: &Pattern, hits: &Matches, pos: usize) {
        let my_spec = hits.as_slice()[pos].specificity();
        let next = hits.as_slice()[pos + 1..]
            .iter()
            .filter(|h| h.specificity() < my_spec)
            .map(|h| *self.matcher.value(h.id()))
            .find(|g| constraints_cover(&self.rules[g.0 as usize], r));
        let Some(gid) = next else { return };
        let g = &self.rules[gid.0 as usize];
        // The general rule must apply to every client group this one applies to.
        let all_groups = self.applies[me.0 as usize] & !self.applies[gid.0 as usize] == 0;
        let covered = all_groups && g.pattern.as_ref().is_some_and(|gp| pattern_covers(gp, pattern));
        if covered && g.action == r.action {
            self.out.push(lint(
                r,
                LintKind::Shadowed,
                format!(
                    "`{}` is redundant: `{}` at {} already says `{}` for every name it matches",
                    r.target, g.target, g.origin, g.action
                ),
            ));
        }
    }
}

/// The warnings about client groups (`groups[0]` is the clients in no group, not checked):
/// a group no rule applies to, and a network listed by two groups (which one a client in it
/// lands in is decided by file order, which is probably not meant).
pub(super) fn groups(groups: &[GroupInfo], clients: &NetTable<GroupId>) -> Vec<Lint> {
    let mut out = Vec::new();
    let at = |g: &GroupInfo| g.origin.clone().unwrap_or(Origin { file: Arc::from("<config>"), line: 0 });
    for g in &groups[1..] {
        if g.rules.iter().sum::<usize>() == 0 {
            out.push(Lint {
                kind: LintKind::EmptyGroup,
                origin: at(g),
                message: format!(
                    "client group `{}` has no rules: its sources leave it nothing but its default action ({})",
                    g.label(),
                    g.default
                ),
            });
        }
    }
    for (a, b) in clients.duplicates() {
        let (ga, gb) = (&groups[usize::from(a.value().0)], &groups[usize::from(b.value().0)]);
        if a.value() != b.value() {
            out.push(Lint {
                kind: LintKind::GroupOverlap,
                origin: at(gb),
                message: format!(
                    "client group `{}` lists {} like `{}` at {}: its clients are in `{}`, the first",
                    gb.label(),
                    a.net(),
                    ga.label(),
                    at(ga),
                    ga.label()
                ),
            });
        }
    }
    out
}

/// For a wildcard pattern, the literal suffix below its last wildcard label (`*.a.b` -> `a.b`,
/// `.a.b` -> `a.b`, `x*.a.b` -> `a.b`); `None` for an exact pattern.
fn wildcard_tail(text: &str) -> Option<&str> {
    if let Some(rest) = text.strip_prefix('.') {
        return Some(wildcard_tail(rest).unwrap_or(rest));
    }
    let star = text.rfind('*')?;
    let dot = text[star..].find('.')? + star;
    Some(&text[dot + 1..])
}

/// Whether names under `tail` include all of `ns` (`tail` is `ns` or a parent of it).
fn covers_suffix(tail: &str, ns: &str) -> bool {
    ns == tail || ns.strip_suffix(tail).is_some_and(|rest| rest.ends_with('.'))
}

/// A host the pattern matches: each `*` label becomes `x`, each `*` inside a label nothing.
fn representative(text: &str) -> Option<Host> {
    let body = text.strip_prefix('.').map_or(text.to_string(), |b| format!("x.{b}"));
    let host: Vec<String> =
        body.split('.').map(|l| if l == "*" { "x".to_string() } else { l.replace('*', "") }).collect();
    Host::new(&host.join(".")).ok()
}

/// Whether the general pattern `g` matches every name the pattern `r` matches (decided for the
/// common shapes: `g` is `*.s` (its `*` one or more labels, or exactly one) or `.s`, or the same
/// pattern).
fn pattern_covers(gp: &Pattern, rp: &Pattern) -> bool {
    if gp == rp {
        return true;
    }
    let (g, r) = (gp.as_str(), rp.as_str());
    if gp.is_leftmost_one_label() {
        // Only names one label below `s`: `r` must be `L.s`, `L` one label (not a `*` of one or
        // more labels).
        let Some(s) = g.strip_prefix("*.") else { return false };
        let head = r.strip_suffix(s).and_then(|h| h.strip_suffix('.'));
        return !s.contains('*')
            && !r.starts_with('.')
            && head.is_some_and(|h| !h.is_empty() && !h.contains('.') && (h != "*" || rp.is_leftmost_one_label()));
    }
    let r_body = r.strip_prefix('.').unwrap_or(r);
    let (suffix, apex_too) = match (g.strip_prefix("*."), g.strip_prefix('.')) {
        (Some(s), _) => (s, false),
        (None, Some(s)) => (s, true),
        _ => return false,
    };
    if suffix.contains('*') {
        return false;
    }
    let below = r_body.strip_suffix(suffix).is_some_and(|rest| rest.ends_with('.'));
    // A `.r` rule also matches its apex `r`, which `*.s` covers only when r is below s.
    below || (apex_too && r_body == suffix && !r.starts_with("*"))
}

/// Whether `g`'s constraints let it apply wherever `r` applies.
fn constraints_cover(g: &Rule, r: &Rule) -> bool {
    let scheme = g.scheme.is_none() || g.scheme == r.scheme;
    let port = match (&g.ports, &r.ports) {
        (None, _) => true,
        (Some(gp), Some(rp)) => gp.covers(rp),
        (Some(_), None) => false,
    };
    let path = match (&g.path, &r.path) {
        (None, _) => true,
        (Some(gp), Some(rp)) => path_matches(gp, rp),
        (Some(_), None) => false,
    };
    scheme && port && path
}

/// Whether two rules' constraints can both fit one request.
fn overlaps(a: &Rule, b: &Rule) -> bool {
    let scheme = a.scheme.is_none() || b.scheme.is_none() || a.scheme == b.scheme;
    let port = match (&a.ports, &b.ports) {
        (Some(x), Some(y)) => x.overlaps(y),
        _ => true,
    };
    let path = match (&a.path, &b.path) {
        (Some(x), Some(y)) => path_matches(x, y) || path_matches(y, x),
        _ => true,
    };
    scheme && port && path
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use hostgate_matcher::MatcherBuilder;

    use super::super::rule::parse_rules;
    use super::*;

    /// The lint of a rule file, without inspection, over a matcher built as `Policy::compile`
    /// builds it (each active rule's pattern, valued by its index).
    fn lints(text: &str) -> Vec<String> {
        let rules = parse_rules("t.rules", text, None, &BTreeMap::new()).unwrap();
        let mut b = MatcherBuilder::new();
        for (i, r) in rules.iter().enumerate() {
            if let Some(p) = &r.pattern {
                b.add_pattern(p.clone(), RuleId(i as u32));
            }
        }
        let matcher = b.build().unwrap();
        run(&rules, &vec![u64::MAX; rules.len()], &matcher, false).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn each_check() {
        let l = lints(
            "bypass *.microsoft.com\n\
             bypass a.microsoft.com\n\
             allow *.microsoft.com\n\
             bypass *.azureedge.net\n\
             allow *.com\n\
             bypass https://ekop.intel.com/ekcertservice\n\
             bypass <tenant>.sharepoint.com\n\
             allow <fqdn>\n\
             bypass x.y.org\n\
             bypass x.y.org\n\
             deny *.y.org\n\
             allow y*.y.org\n",
        );
        let expect = [
            "t.rules:3: warning[conflict]: `*.microsoft.com` is also `bypass` at t.rules:1; this rule says `allow`: the strictest (`allow`) wins",
            "t.rules:4: warning[shared-namespace]: bypass `*.azureedge.net` covers all of `azureedge.net`, where anyone can host content: consider `allow` (inspected) or narrower names",
            "t.rules:5: warning[public-suffix]: `*.com` is a wildcard directly over the public suffix `com`",
            "t.rules:6: warning[path-unenforceable]: path `/ekcertservice` is not enforceable without TLS inspection: over TLS this rule decides by host alone",
            "t.rules:7: warning[unresolved-placeholder]: <tenant> has no value in [vars]: widened to `*` within one label (pattern `<*>.sharepoint.com`)",
            "t.rules:8: warning[unresolved-placeholder]: <fqdn> has no value in [vars] and is the whole name: the rule is inactive until it is set",
            "t.rules:10: warning[duplicate]: `x.y.org` repeats t.rules:9",
        ];
        for e in expect {
            assert!(l.iter().any(|x| x == e), "missing {e}\n got {l:#?}");
        }
        // a.microsoft.com (bypass) under *.microsoft.com: the next less specific level holds both
        // bypass and allow; the first fitting is line 1 (bypass), so it is reported as shadowed.
        assert!(
            l.iter()
                .any(|x| x.starts_with("t.rules:2: warning[shared") || x.starts_with("t.rules:2: warning[shadowed]")),
            "{l:#?}"
        );
        // A tie between `*.y.org`-like patterns of equal literal length: `y*.y.org` has 7 literal
        // bytes, `*.y.org` has 6: no tie. x.y.org (exact) is not shadowed by deny *.y.org.
        assert!(!l.iter().any(|x| x.starts_with("t.rules:9: warning[shadowed]")), "{l:#?}");
    }

    #[test]
    fn ties_between_different_patterns() {
        let l = lints("bypass a*.x.com\ndeny *a.x.com\n");
        assert!(l.iter().any(|x| x.contains("warning[tie]") && x.contains("the strictest (`deny`) wins")), "{l:#?}");
    }

    #[test]
    fn shadowed_only_without_a_disagreeing_rule_between() {
        let l = lints("bypass *.a.com\nbypass x.a.com\n");
        assert!(
            l.iter()
                .any(|x| x.starts_with("t.rules:2: warning[shadowed]: `x.a.com` is redundant: `*.a.com` at t.rules:1")),
            "{l:#?}"
        );
        let l = lints("bypass *.a.com\nallow *.b.a.com\nbypass x.b.a.com\n");
        assert!(!l.iter().any(|x| x.contains("shadowed")), "{l:#?}");
        // A narrower constraint is not covered by a rule limited to another scheme.
        let l = lints("bypass http://*.a.com\nbypass x.a.com\n");
        assert!(!l.iter().any(|x| x.contains("shadowed")), "{l:#?}");
    }

    #[test]
    fn one_label_placeholders_are_their_own_target() {
        // `<tenant>.x.com` (one label) is not `*.x.com` (one or more): not a duplicate, not a
        // conflict; with another action they tie on one-label names.
        let l = lints("bypass <tenant>.x.com\nbypass *.x.com\ndeny *.y.com\nallow <tenant>.y.com\n");
        assert!(!l.iter().any(|x| x.contains("duplicate") || x.contains("conflict")), "{l:#?}");
        assert!(
            l.iter().any(|x| x.starts_with("t.rules:3: warning[tie]: `*.y.com` (deny) and `<tenant>.y.com` (allow")),
            "{l:#?}"
        );
        // A name one label below is covered by the one-label rule; two labels below is not.
        let l = lints("bypass <tenant>.x.com\nbypass a.x.com\nbypass a.b.x.com\n");
        assert!(l.iter().any(|x| x.starts_with("t.rules:2: warning[shadowed]")), "{l:#?}");
        assert!(!l.iter().any(|x| x.starts_with("t.rules:3: warning[shadowed]")), "{l:#?}");
        let l = lints("bypass <tenant>.com\n");
        assert!(
            l.iter().any(|x| x.contains("`<*>.com` is a wildcard directly over the public suffix `com`")),
            "{l:#?}"
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(wildcard_tail("*.a.b"), Some("a.b"));
        assert_eq!(wildcard_tail(".a.b"), Some("a.b"));
        assert_eq!(wildcard_tail("x*.a.b"), Some("a.b"));
        assert_eq!(wildcard_tail("a.b"), None);
        assert!(covers_suffix("windows.net", "blob.core.windows.net"));
        assert!(!covers_suffix("ndows.net", "blob.core.windows.net"));
        // `<*>`: a one-label leftmost `*`, as `Pattern` displays it.
        let p = |t: &str| match t.strip_prefix("<*>") {
            Some(rest) => Pattern::new(&format!("*{rest}")).and_then(Pattern::one_label).unwrap(),
            None => Pattern::new(t).unwrap(),
        };
        let covers = |g: &str, r: &str| pattern_covers(&p(g), &p(r));
        assert!(covers("*.a.com", "x.a.com"));
        assert!(covers("*.a.com", "*.x.a.com"));
        assert!(!covers("*.a.com", "a.com"));
        assert!(covers(".a.com", "a.com"));
        assert!(!covers("*.a.com", ".x.com"));
        assert!(covers("*.a.com", "<*>.a.com"));
        assert!(covers("<*>.a.com", "<*>.a.com"));
        assert!(covers("<*>.a.com", "x.a.com"));
        assert!(covers("<*>.a.com", "x*.a.com"));
        assert!(!covers("<*>.a.com", "*.a.com"));
        assert!(!covers("<*>.a.com", "y.x.a.com"));
        assert!(!covers("<*>.a.com", ".x.a.com"));
        assert!(!covers("<*>.a.com", "<*>.x.a.com"));
        assert!(!covers("<*>.a.com", "a.com"));
        assert_eq!(representative("*.*.onedrive.live.com").unwrap().as_str(), "x.x.onedrive.live.com");
        assert_eq!(representative("*cdn.onenote.net").unwrap().as_str(), "cdn.onenote.net");
        assert_eq!(representative(".lync.com").unwrap().as_str(), "x.lync.com");
    }
}
