//! The policy: rules from the configured files compiled into one matcher, and the decision for a
//! connection or request.
//!
//! This module owns "what happens to this name": it reads rule files, compiles them, and decides.
//! It knows nothing about sockets; the data path hands it a [`Query`] and acts on the
//! [`Decision`]. Nor does it know the configuration file: it loads from [`Inputs`] (the rule
//! [`Source`]s, the default action, the [`Mode`], the placeholder values), which the
//! configuration builds; the configuration depends on the policy's types, never the reverse.
//!
//! The decision, for a host, scheme, port and (when visible) path: among the rules whose pattern
//! matches and whose constraints fit, the most specific pattern wins (the matcher's
//! [`Specificity`]); a tie resolves to the strictest action (deny > allow > bypass). A path
//! constraint is enforced where the path is visible (plain HTTP, inspected TLS); where it is not
//! (TLS without inspection) the rule decides at host level and the decision says so. Nothing
//! matches: the configured default.

mod lint;
mod rule;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hostgate_matcher::{Host, Matcher, MatcherBuilder, Matches, Specificity};
use serde::Deserialize;

pub use lint::{Lint, LintKind};
pub use rule::{parse_rules, path_matches, placeholder_key, Action, Origin, Rule, RuleError, RuleId, Scheme};

/// One rule file, as the configuration names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The path, resolved against the configuration file's directory.
    pub path: PathBuf,
    /// The action of bare lines until the file says `default ACTION`.
    pub default: Option<Action>,
    /// The line of the configuration file that names this source.
    pub line: usize,
    /// Report mode for this file's deny rules (the global `[policy] mode` applies to every file).
    pub mode: Mode,
}

/// Whether deny decisions are enforced or only reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deny means deny.
    #[default]
    Enforce,
    /// A would-be deny is allowed and logged with `would_deny = true`, so that a new rule list can
    /// be rolled out and watched before it bites.
    Report,
}

/// Everything [`Policy::load`] reads: the rule files and the settings that apply to all of them.
/// The configuration builds one (`Config::policy_inputs`); the policy does not know the
/// configuration file's types.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// The rule files, in order.
    pub sources: &'a [Source],
    /// The action when no rule matches.
    pub default: Action,
    /// Enforce or only report denials, for every source (a source can also be in report mode on
    /// its own).
    pub mode: Mode,
    /// Placeholder values, keyed by [`placeholder_key`].
    pub vars: &'a BTreeMap<String, String>,
    /// Whether TLS inspection is on: paths of `allow` and `deny` rules are then visible over TLS
    /// (the lint needs to know; deciding does not).
    pub inspected: bool,
    /// The file that names the sources, quoted (with [`Source::line`]) when one cannot be read.
    pub config_file: &'a Path,
}

/// What is known of a connection or request when deciding.
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    /// The name the client asked for (SNI or Host).
    pub host: &'a Host,
    /// Plain HTTP or TLS.
    pub scheme: Scheme,
    /// The destination port.
    pub port: u16,
    /// The request path and query, when visible (plain HTTP, inspected TLS).
    pub path: Option<&'a str>,
}

/// The outcome of [`Policy::decide`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// What to do.
    pub action: Action,
    /// The rule that decided; `None` for the default action.
    pub rule: Option<RuleId>,
    /// The winning rule has a path constraint that could not be checked (no path visible).
    pub path_unenforced: bool,
    /// Equally specific rules with different actions matched; the strictest won.
    pub tie: bool,
    /// The decision would have been deny, but the deciding rule's source (or the whole policy)
    /// is in report mode: `action` is then `allow`.
    pub would_deny: bool,
}

/// Per-source counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceStats {
    /// The rule file.
    pub file: Arc<str>,
    /// Active rules by action: bypass, allow, deny.
    pub by_action: [usize; 3],
    /// Rules that cannot be compiled until a placeholder gets a value.
    pub inactive: usize,
}

impl SourceStats {
    /// All active rules of this source.
    pub fn active(&self) -> usize {
        self.by_action.iter().sum()
    }
}

/// An error while loading a policy: every problem found, each naming its file and line.
#[derive(Debug)]
pub enum LoadError {
    /// A rule file could not be read.
    Read {
        /// The file.
        file: String,
        /// The configuration line that names it.
        config: String,
        /// Why.
        error: std::io::Error,
    },
    /// Rule syntax or pattern errors (all of them, in file order).
    Rules(Vec<RuleError>),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Read { file, config, error } => {
                write!(f, "{file}: cannot read rule file ({error}), named at {config}")
            }
            LoadError::Rules(errors) => {
                for (i, e) in errors.iter().enumerate() {
                    if i > 0 {
                        f.write_str("\n")?;
                    }
                    e.fmt(f)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for LoadError {}

/// A compiled policy. Immutable; the data path shares it behind an `Arc` and a reload replaces it
/// whole.
#[derive(Debug)]
pub struct Policy {
    rules: Vec<Rule>,
    matcher: Matcher<RuleId>,
    default: Action,
    sources: Vec<SourceStats>,
    compile_time: Duration,
    /// Every deny is only reported (`[policy] mode = "report"`).
    report_all: bool,
    /// Sources whose deny rules are only reported.
    report_sources: Vec<Arc<str>>,
    /// `[inspect]` is on: paths of `allow` and `deny` rules are visible over TLS (the lint
    /// needs to know; deciding does not).
    inspected: bool,
}

/// Why a matching rule did or did not decide, for [`Policy::explain`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It decided.
    Winner,
    /// As specific as the winner, but a stricter (or earlier, equally strict) rule won the tie.
    TieLost,
    /// A more specific rule decided.
    LessSpecific,
    /// Its scheme constraint does not fit.
    SchemeMismatch,
    /// Its port constraint does not fit.
    PortMismatch,
    /// Its path constraint does not fit the visible path.
    PathMismatch,
}

impl Verdict {
    /// A short name for output.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Winner => "winner",
            Verdict::TieLost => "tie-lost",
            Verdict::LessSpecific => "less-specific",
            Verdict::SchemeMismatch => "scheme-mismatch",
            Verdict::PortMismatch => "port-mismatch",
            Verdict::PathMismatch => "path-mismatch",
        }
    }
}

/// A matching rule and what became of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The rule.
    pub rule: RuleId,
    /// How specific its match is.
    pub specificity: Specificity,
    /// What became of it.
    pub verdict: Verdict,
}

enum Fit {
    Yes { path_unenforced: bool },
    No(Verdict),
}

impl Policy {
    /// Reads every rule file of `inputs` and compiles them.
    ///
    /// # Errors
    /// A file that cannot be read, or every bad rule line with its file and line.
    pub fn load(inputs: &Inputs<'_>) -> Result<Policy, LoadError> {
        let started = Instant::now();
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        let mut files = Vec::with_capacity(inputs.sources.len());
        for source in inputs.sources {
            let text = std::fs::read_to_string(&source.path).map_err(|error| LoadError::Read {
                file: source.path.display().to_string(),
                config: format!("{}:{}", inputs.config_file.display(), source.line),
                error,
            })?;
            let file: Arc<str> = Arc::from(source.path.display().to_string());
            files.push(file.clone());
            rule::parse_file(&file, &text, source.default, inputs.vars, &mut rules, &mut errors);
        }
        if !errors.is_empty() {
            return Err(LoadError::Rules(errors));
        }
        let mut p = Policy::compile(rules, inputs.default, &files)?;
        p.compile_time = started.elapsed();
        p.report_all = inputs.mode == Mode::Report;
        p.inspected = inputs.inspected;
        p.report_sources =
            inputs.sources.iter().zip(&files).filter(|(s, _)| s.mode == Mode::Report).map(|(_, f)| f.clone()).collect();
        Ok(p)
    }

    /// Compiles rules (already parsed) into a policy. `files` lists the sources for statistics.
    ///
    /// # Errors
    /// [`LoadError::Rules`] if the matcher rejects a pattern (not expected: patterns are checked
    /// when rules are parsed).
    pub fn compile(rules: Vec<Rule>, default: Action, files: &[Arc<str>]) -> Result<Policy, LoadError> {
        let started = Instant::now();
        let mut b = MatcherBuilder::new();
        let mut sources: Vec<SourceStats> =
            files.iter().map(|f| SourceStats { file: f.clone(), by_action: [0; 3], inactive: 0 }).collect();
        for (i, r) in rules.iter().enumerate() {
            let stats = match sources.iter_mut().find(|s| s.file == r.origin.file) {
                Some(s) => s,
                None => {
                    sources.push(SourceStats { file: r.origin.file.clone(), by_action: [0; 3], inactive: 0 });
                    sources.last_mut().expect("just pushed")
                }
            };
            match &r.pattern {
                Some(p) => {
                    stats.by_action[r.action as usize] += 1;
                    b.add_pattern(p.clone(), RuleId(i as u32));
                }
                None => stats.inactive += 1,
            }
        }
        let matcher = b.build().map_err(|e| {
            let origin = e
                .index()
                .and_then(|_| rules.iter().find(|r| r.pattern.as_ref().is_some_and(|p| p.as_str() == e.pattern())))
                .map(|r| r.origin.clone())
                .unwrap_or(Origin { file: Arc::from("<policy>"), line: 0 });
            LoadError::Rules(vec![RuleError { origin, message: e.to_string() }])
        })?;
        Ok(Policy {
            rules,
            matcher,
            default,
            sources,
            compile_time: started.elapsed(),
            report_all: false,
            report_sources: Vec::new(),
            inspected: false,
        })
    }

    /// Decides a connection or request. `scratch` is a reusable buffer (keep one per task).
    pub fn decide(&self, q: &Query<'_>, scratch: &mut Matches) -> Decision {
        self.decide_inner(q, scratch, false)
    }

    /// Decides a connection whose requests will each be decided again with their path: inspected
    /// TLS, plain HTTP in a CONNECT tunnel. Rules with a path constraint do not decide the
    /// connection (their paths are checked per request), except that a host-level deny (or the
    /// default deny) becomes `allow` when an at least as specific `allow` rule with a path
    /// matches: some requests may be allowed, so the connection must be let in to decide them.
    /// That rule is then the decision's rule, with `path_unenforced`.
    pub fn decide_connection(&self, q: &Query<'_>, scratch: &mut Matches) -> Decision {
        self.decide_inner(&Query { path: None, ..*q }, scratch, true)
    }

    fn decide_inner(&self, q: &Query<'_>, scratch: &mut Matches, per_request: bool) -> Decision {
        self.matcher.find_all_host(q.host, scratch);
        let hits = scratch.as_slice();
        // The most specific `allow` rule with a path seen so far (per_request only).
        let mut path_allow: Option<RuleId> = None;
        let opened = |rule: RuleId| Decision {
            action: Action::Allow,
            rule: Some(rule),
            path_unenforced: true,
            tie: false,
            would_deny: false,
        };
        let mut i = 0;
        while i < hits.len() {
            let level = hits[i].specificity();
            let mut best: Option<(Action, RuleId, bool)> = None;
            let mut actions = 0u8;
            while i < hits.len() && hits[i].specificity() == level {
                let id = *self.matcher.value(hits[i].id());
                let rule = &self.rules[id.0 as usize];
                if per_request && rule.path.is_some() {
                    if rule.action == Action::Allow && path_allow.is_none() && matches!(fits(rule, q), Fit::Yes { .. })
                    {
                        path_allow = Some(id);
                    }
                    i += 1;
                    continue;
                }
                if let Fit::Yes { path_unenforced } = fits(rule, q) {
                    let action = self.rules[id.0 as usize].action;
                    actions |= 1 << action as u8;
                    if best.is_none_or(|(a, _, _)| action > a) {
                        best = Some((action, id, path_unenforced));
                    }
                }
                i += 1;
            }
            if let Some((action, rule, path_unenforced)) = best {
                if let (Action::Deny, Some(open)) = (action, path_allow) {
                    return opened(open);
                }
                let report = action == Action::Deny
                    && (self.report_all || self.report_sources.contains(&self.rules[rule.0 as usize].origin.file));
                return Decision {
                    action: if report { Action::Allow } else { action },
                    rule: Some(rule),
                    path_unenforced,
                    tie: actions.count_ones() > 1,
                    would_deny: report,
                };
            }
        }
        match path_allow {
            Some(open) if self.default == Action::Deny => opened(open),
            _ => self.default_decision(),
        }
    }

    /// The decision when nothing names a host (no SNI, an unknown protocol) or no rule matches:
    /// the default action, report mode applied.
    pub fn default_decision(&self) -> Decision {
        let report = self.default == Action::Deny && self.report_all;
        Decision {
            action: if report { Action::Allow } else { self.default },
            rule: None,
            path_unenforced: false,
            tie: false,
            would_deny: report,
        }
    }

    /// Decides, and says what became of every matching rule.
    pub fn explain(&self, q: &Query<'_>) -> (Decision, Vec<Candidate>) {
        let mut scratch = Matches::new();
        let decision = self.decide(q, &mut scratch);
        let winner_spec = decision
            .rule
            .and_then(|w| scratch.iter().find(|h| *self.matcher.value(h.id()) == w))
            .map(|h| h.specificity());
        let candidates = scratch
            .iter()
            .map(|h| {
                let rule = *self.matcher.value(h.id());
                let verdict = match fits(&self.rules[rule.0 as usize], q) {
                    Fit::No(v) => v,
                    Fit::Yes { .. } if Some(rule) == decision.rule => Verdict::Winner,
                    Fit::Yes { .. } if Some(h.specificity()) == winner_spec => Verdict::TieLost,
                    Fit::Yes { .. } => Verdict::LessSpecific,
                };
                Candidate { rule, specificity: h.specificity(), verdict }
            })
            .collect();
        (decision, candidates)
    }

    /// A rule by id.
    ///
    /// # Panics
    /// When `id` does not come from this policy.
    pub fn rule(&self, id: RuleId) -> &Rule {
        &self.rules[id.0 as usize]
    }

    /// Every rule, active or not, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether every deny is only reported.
    pub fn report_all(&self) -> bool {
        self.report_all
    }

    /// Whether `file`'s deny rules are only reported.
    pub fn reports(&self, file: &str) -> bool {
        self.report_all || self.report_sources.iter().any(|f| &**f == file)
    }

    /// The action when no rule matches.
    pub fn default_action(&self) -> Action {
        self.default
    }

    /// Per-source counts, in configuration order.
    pub fn sources(&self) -> &[SourceStats] {
        &self.sources
    }

    /// How long loading and compiling took.
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    /// The compiled matcher (for statistics and the lint).
    pub fn matcher(&self) -> &Matcher<RuleId> {
        &self.matcher
    }

    /// The lint: warnings about rules that are legal but probably not what the operator meant.
    pub fn lint(&self) -> Vec<Lint> {
        lint::run(&self.rules, &self.matcher, self.inspected)
    }
}

fn fits(r: &Rule, q: &Query<'_>) -> Fit {
    if r.scheme.is_some_and(|s| s != q.scheme) {
        return Fit::No(Verdict::SchemeMismatch);
    }
    if r.port.is_some_and(|p| p != q.port) {
        return Fit::No(Verdict::PortMismatch);
    }
    match (&r.path, q.path) {
        (None, _) => Fit::Yes { path_unenforced: false },
        (Some(_), None) => Fit::Yes { path_unenforced: true },
        (Some(rule), Some(path)) if path_matches(rule, path) => Fit::Yes { path_unenforced: false },
        (Some(_), Some(_)) => Fit::No(Verdict::PathMismatch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Policy {
        let rules = parse_rules("t.rules", text, None, &BTreeMap::new()).unwrap();
        Policy::compile(rules, Action::Deny, &[Arc::from("t.rules")]).unwrap()
    }

    fn decide(p: &Policy, host: &str, scheme: Scheme, port: u16, path: Option<&str>) -> (Action, Option<u32>) {
        let host = Host::new(host).unwrap();
        let d = p.decide(&Query { host: &host, scheme, port, path }, &mut Matches::new());
        (d.action, d.rule.map(|r| p.rule(r).origin.line))
    }

    #[test]
    fn specificity_then_strictness_then_default() {
        let p = policy(
            "bypass *.microsoft.com\nallow *.blob.microsoft.com\ndeny evil.blob.microsoft.com\nbypass x.y.com\nallow x.y.com\n",
        );
        assert_eq!(decide(&p, "a.microsoft.com", Scheme::Https, 443, None), (Action::Bypass, Some(1)));
        assert_eq!(decide(&p, "a.blob.microsoft.com", Scheme::Https, 443, None), (Action::Allow, Some(2)));
        assert_eq!(decide(&p, "evil.blob.microsoft.com", Scheme::Https, 443, None), (Action::Deny, Some(3)));
        assert_eq!(decide(&p, "x.y.com", Scheme::Https, 443, None), (Action::Allow, Some(5)), "tie -> strictest");
        assert_eq!(decide(&p, "microsoft.com", Scheme::Https, 443, None), (Action::Deny, None));
        let host = Host::new("x.y.com").unwrap();
        let d = p.decide(&Query { host: &host, scheme: Scheme::Https, port: 443, path: None }, &mut Matches::new());
        assert!(d.tie);
    }

    #[test]
    fn constraints() {
        let p = policy(
            "default bypass\nhttp://*.msftncsi.com/ncsi.txt\nhttps://ekop.intel.com/ekcertservice\nhttps://*.logic.azure.com:443\nallow a.com/p?x=1\n",
        );
        assert_eq!(decide(&p, "www.msftncsi.com", Scheme::Http, 80, Some("/ncsi.txt")), (Action::Bypass, Some(2)));
        assert_eq!(decide(&p, "www.msftncsi.com", Scheme::Http, 80, Some("/ncsi.txt?a")), (Action::Bypass, Some(2)));
        assert_eq!(decide(&p, "www.msftncsi.com", Scheme::Http, 80, Some("/other")), (Action::Deny, None));
        assert_eq!(decide(&p, "www.msftncsi.com", Scheme::Https, 443, None), (Action::Deny, None), "scheme");
        // TLS without inspection: the path is not visible, the rule decides at host level.
        let host = Host::new("ekop.intel.com").unwrap();
        let d = p.decide(&Query { host: &host, scheme: Scheme::Https, port: 443, path: None }, &mut Matches::new());
        assert_eq!((d.action, d.path_unenforced), (Action::Bypass, true));
        assert_eq!(
            decide(&p, "ekop.intel.com", Scheme::Https, 443, Some("/ekcertservice/v1")),
            (Action::Bypass, Some(3))
        );
        assert_eq!(decide(&p, "ekop.intel.com", Scheme::Https, 443, Some("/ekcertservicex")), (Action::Deny, None));
        assert_eq!(decide(&p, "prod1.westus2.logic.azure.com", Scheme::Https, 443, None), (Action::Bypass, Some(4)));
        assert_eq!(
            decide(&p, "prod1.westus2.logic.azure.com", Scheme::Https, 8443, None),
            (Action::Deny, None),
            "port"
        );
        assert_eq!(decide(&p, "a.com", Scheme::Http, 80, Some("/p?x=1&y")), (Action::Allow, Some(5)));
        assert_eq!(decide(&p, "a.com", Scheme::Http, 80, Some("/p?x=2")), (Action::Deny, None));
    }

    #[test]
    fn a_constrained_rule_that_does_not_fit_falls_through_to_a_less_specific_one() {
        let p = policy("allow http://www.msftncsi.com/ncsi.txt\ndeny *.msftncsi.com\nbypass .msftncsi.com\n");
        assert_eq!(decide(&p, "www.msftncsi.com", Scheme::Http, 80, Some("/ncsi.txt")), (Action::Allow, Some(1)));
        // `*.msftncsi.com` and `.msftncsi.com` tie below the apex: deny is stricter.
        assert_eq!(decide(&p, "www.msftncsi.com", Scheme::Http, 80, Some("/x")), (Action::Deny, Some(2)));
        assert_eq!(decide(&p, "msftncsi.com", Scheme::Http, 80, Some("/x")), (Action::Bypass, Some(3)));
    }

    #[test]
    fn a_connection_whose_requests_are_decided_later_ignores_path_rules_unless_they_open_it() {
        let p = policy("allow x.com\ndeny https://x.com/admin\nallow https://paths.com/ncsi.txt\ndeny https://paths.com/x\nbypass b.com\nallow https://b.com/p\ndeny a.d.com\nallow https://*.d.com/p\n");
        let conn = |host: &str| {
            let host = Host::new(host).unwrap();
            let d = p.decide_connection(
                &Query { host: &host, scheme: Scheme::Https, port: 443, path: Some("/ignored") },
                &mut Matches::new(),
            );
            (d.action, d.rule.map(|r| p.rule(r).origin.line), d.path_unenforced)
        };
        // Without inspection the deny path rule would deny all of x.com (a tie at host level).
        assert_eq!(decide(&p, "x.com", Scheme::Https, 443, None), (Action::Deny, Some(2)));
        assert_eq!(conn("x.com"), (Action::Allow, Some(1), false));
        // Only path rules: the allow one opens the connection; the requests decide.
        assert_eq!(conn("paths.com"), (Action::Allow, Some(3), true));
        assert_eq!(decide(&p, "paths.com", Scheme::Https, 443, Some("/x")), (Action::Deny, Some(4)));
        // A host-level bypass is not turned into inspection by a path rule.
        assert_eq!(conn("b.com"), (Action::Bypass, Some(5), false));
        // A less specific path rule does not open a more specifically denied name.
        assert_eq!(conn("a.d.com"), (Action::Deny, Some(7), false));
        assert_eq!(conn("b.d.com"), (Action::Allow, Some(8), true));
        assert_eq!(conn("nothing.com"), (Action::Deny, None, false));
    }

    #[test]
    fn explain_lists_every_candidate() {
        let p = policy(
            "bypass *.microsoft.com\nallow *.microsoft.com\nallow http://a.microsoft.com\ndeny a.microsoft.com:8443\n",
        );
        let host = Host::new("a.microsoft.com").unwrap();
        let (d, c) = p.explain(&Query { host: &host, scheme: Scheme::Https, port: 443, path: None });
        assert_eq!(d.action, Action::Allow);
        let v: Vec<(u32, Verdict)> = c.iter().map(|c| (p.rule(c.rule).origin.line, c.verdict)).collect();
        assert_eq!(
            v,
            [(3, Verdict::SchemeMismatch), (4, Verdict::PortMismatch), (1, Verdict::TieLost), (2, Verdict::Winner)]
        );
    }

    #[test]
    fn rule_file_errors_name_file_and_line() {
        let errs = parse_rules("t.rules", "allow a.com\n*.b.com\nallow mail.*\npermit c.com\n", None, &BTreeMap::new())
            .unwrap_err();
        let msgs: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            msgs,
            [
                "t.rules:2: `*.b.com` has no action: write `ACTION *.b.com`, add `default ACTION` above it, or set `default` for this source in the configuration",
                "t.rules:3: bad pattern `mail.*`: the top-level (rightmost) label cannot contain `*`",
                "t.rules:4: unknown action `permit` (allow, bypass or deny)",
            ]
        );
    }

    #[test]
    fn paths() {
        assert!(path_matches("/ncsi.txt", "/ncsi.txt"));
        assert!(path_matches("/a/", "/a/b"));
        assert!(path_matches("/a", "/a/b"));
        assert!(!path_matches("/a", "/ab"));
        assert!(path_matches("/a", "/a?x"));
        assert!(!path_matches("/a", "/A"));
    }
}
