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

mod group;
mod lint;
mod ports;
mod rule;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hostgate_matcher::{Host, Matcher, MatcherBuilder, Matches, NetTable, NetTableBuilder, Specificity};

pub use group::{Group, GroupId, GroupInfo, Mode, MAX_GROUPS};
pub use lint::{shared_namespaces, Lint, LintKind};
pub use ports::{PortRange, Ports};
pub use rule::{
    canonical_net, parse_rules, path_matches, placeholder_key, Action, Origin, Rule, RuleError, RuleId, Scheme,
    Transport,
};

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
    /// The name client groups refer to it by (`name = "..."`), when it has one.
    pub name: Option<String>,
}

/// Everything [`Policy::load`] reads: the rule files and the settings that apply to all of them.
/// The configuration builds one (`Config::policy_inputs`); the policy does not know the
/// configuration file's types.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// The rule files, in order.
    pub sources: &'a [Source],
    /// The sources that apply to clients in no group (indices into `sources`).
    pub top_sources: &'a [usize],
    /// The client groups, in configuration order.
    pub groups: &'a [Group],
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
    /// Whether clients in no group must authenticate on the explicit proxy (when `[auth]` is
    /// configured).
    pub auth: bool,
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
    /// The client's group ([`Policy::group_of`]).
    pub group: GroupId,
}

/// What is known of a connection without a name (TLS without SNI, an unknown protocol, an IP
/// literal as the CONNECT target or Host) when deciding by its destination address.
#[derive(Clone, Copy, Debug)]
pub struct AddrQuery {
    /// The destination: the original destination of a redirected connection, the literal of a
    /// CONNECT target or Host.
    pub addr: IpAddr,
    /// Plain HTTP or TLS; `None` for an unknown protocol (which only rules without a scheme
    /// fit).
    pub scheme: Option<Scheme>,
    /// The destination port.
    pub port: u16,
    /// The client's group ([`Policy::group_of`]).
    pub group: GroupId,
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
    /// `udp://` rules: not part of the proxy's decisions, for `hostgate firewall`.
    pub udp: usize,
}

impl SourceStats {
    /// All active rules of this source that the proxy decides with (`udp://` ones are not).
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
    /// Address rules by destination network.
    nets: NetTable<RuleId>,
    /// Per rule (by index), the groups it applies to: bit g for [`GroupId`] g.
    applies: Vec<u64>,
    /// The client groups; index 0 is the clients in no group.
    groups: Vec<GroupInfo>,
    /// A client's address to its group (the longest matching network).
    clients: NetTable<GroupId>,
    sources: Vec<SourceStats>,
    compile_time: Duration,
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
    /// It is not among the rules of the client's group.
    OtherGroup,
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
            Verdict::OtherGroup => "other-group",
        }
    }
}

/// How closely a rule matched: the specificity of a name rule's pattern, or the prefix length of
/// an address rule's network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rank {
    /// A name rule.
    Name(Specificity),
    /// An address rule: its prefix length (the longest wins).
    Prefix(u8),
}

/// A matching rule and what became of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The rule.
    pub rule: RuleId,
    /// How closely it matched.
    pub rank: Rank,
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
        // Per rule, the groups its source applies to.
        let mut applies = Vec::new();
        for (index, source) in inputs.sources.iter().enumerate() {
            let text = std::fs::read_to_string(&source.path).map_err(|error| LoadError::Read {
                file: source.path.display().to_string(),
                config: format!("{}:{}", inputs.config_file.display(), source.line),
                error,
            })?;
            let file: Arc<str> = Arc::from(source.path.display().to_string());
            files.push(file.clone());
            rule::parse_file(&file, &text, source.default, inputs.vars, &mut rules, &mut errors);
            applies.resize(rules.len(), source_groups(inputs, index));
        }
        if !errors.is_empty() {
            return Err(LoadError::Rules(errors));
        }
        let mut p = Policy::compile(rules, inputs.default, &files)?;
        p.applies = applies;
        p.groups[0].report = inputs.mode == Mode::Report;
        p.groups[0].auth = inputs.auth;
        p.set_groups(inputs);
        p.compile_time = started.elapsed();
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
    /// Every rule applies to every client, as if there were no client groups.
    pub fn compile(rules: Vec<Rule>, default: Action, files: &[Arc<str>]) -> Result<Policy, LoadError> {
        let started = Instant::now();
        let mut b = MatcherBuilder::new();
        let mut nets = NetTableBuilder::new();
        let mut sources: Vec<SourceStats> =
            files.iter().map(|f| SourceStats { file: f.clone(), by_action: [0; 3], inactive: 0, udp: 0 }).collect();
        for (i, r) in rules.iter().enumerate() {
            let stats = match sources.iter_mut().find(|s| s.file == r.origin.file) {
                Some(s) => s,
                None => {
                    sources.push(SourceStats { file: r.origin.file.clone(), by_action: [0; 3], inactive: 0, udp: 0 });
                    sources.last_mut().expect("just pushed")
                }
            };
            if r.transport == Transport::Udp {
                // Never decided with: the proxy carries TCP only.
                stats.udp += 1;
                continue;
            }
            match (&r.pattern, r.net) {
                (Some(p), _) => {
                    stats.by_action[r.action as usize] += 1;
                    b.add_pattern(p.clone(), RuleId(i as u32));
                }
                (None, Some(net)) => {
                    stats.by_action[r.action as usize] += 1;
                    nets.add(net, RuleId(i as u32));
                }
                (None, None) => stats.inactive += 1,
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
        let mut groups = vec![GroupInfo::top(default, false)];
        groups[0].rules = count_active(&rules, |_| true);
        Ok(Policy {
            applies: vec![u64::MAX; rules.len()],
            rules,
            matcher,
            nets: nets.build(),
            groups,
            clients: NetTableBuilder::new().build(),
            sources,
            compile_time: started.elapsed(),
            report_sources: Vec::new(),
            inspected: false,
        })
    }

    /// Installs the client groups of `inputs` (the rules' group sets are already in `applies`).
    fn set_groups(&mut self, inputs: &Inputs<'_>) {
        let mut clients = NetTableBuilder::new();
        for (i, g) in inputs.groups.iter().enumerate() {
            let id = GroupId(i as u8 + 1);
            for net in &g.networks {
                clients.add(*net, id);
            }
            let bit = 1u64 << id.0;
            let rules = count_active(&self.rules, |i| self.applies[i] & bit != 0);
            self.groups.push(GroupInfo {
                name: Some(g.name.clone()),
                networks: g.networks.clone(),
                default: g.default,
                report: g.mode == Mode::Report,
                rules,
                auth: g.auth,
                users: g.users.clone(),
                directory_groups: g.directory_groups.iter().map(|d| d.to_ascii_lowercase()).collect(),
                origin: Some(Origin { file: Arc::from(inputs.config_file.display().to_string()), line: g.line as u32 }),
            });
        }
        self.groups[0].rules = count_active(&self.rules, |i| self.applies[i] & 1 != 0);
        self.clients = clients.build();
    }

    /// The group of a client at `addr`: the group with the longest network that contains it, or
    /// [`GroupId::NONE`].
    pub fn group_of(&self, addr: IpAddr) -> GroupId {
        self.clients.longest(addr).map_or(GroupId::NONE, |hit| *hit.value())
    }

    /// The group an authenticated user selects: the first group (in configuration order) that
    /// lists the user by name or one of `directory_groups` (DNs, compared case-insensitively).
    pub fn group_of_user(&self, user: &str, directory_groups: &[String]) -> Option<GroupId> {
        self.groups.iter().enumerate().skip(1).find_map(|(i, g)| {
            let listed = g.users.iter().any(|u| u == user)
                || g.directory_groups.iter().any(|d| directory_groups.iter().any(|m| m.eq_ignore_ascii_case(d)));
            listed.then_some(GroupId(i as u8))
        })
    }

    /// The client groups; index 0 (the [`GroupId`]'s value) is the clients in no group.
    pub fn groups(&self) -> &[GroupInfo] {
        &self.groups
    }

    /// A group by id.
    ///
    /// # Panics
    /// When `id` does not come from this policy.
    pub fn group(&self, id: GroupId) -> &GroupInfo {
        &self.groups[usize::from(id.0)]
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
        let group = self.group(q.group);
        let bit = 1u64 << q.group.0;
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
                if self.applies[id.0 as usize] & bit == 0 {
                    i += 1;
                    continue;
                }
                let rule = &self.rules[id.0 as usize];
                if per_request && rule.path.is_some() {
                    if rule.action == Action::Allow
                        && path_allow.is_none()
                        && matches!(fits(rule, Some(q.scheme), q.port, q.path), Fit::Yes { .. })
                    {
                        path_allow = Some(id);
                    }
                    i += 1;
                    continue;
                }
                if let Fit::Yes { path_unenforced } = fits(rule, Some(q.scheme), q.port, q.path) {
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
                return self.ruled(group, action, rule, path_unenforced, actions);
            }
        }
        match path_allow {
            Some(open) if group.default == Action::Deny => opened(open),
            _ => self.default_decision(q.group),
        }
    }

    /// The decision of rule `rule` with `action` (among equally ranked rules whose actions are
    /// the bits of `actions`), report mode applied.
    fn ruled(&self, group: &GroupInfo, action: Action, rule: RuleId, path_unenforced: bool, actions: u8) -> Decision {
        let report = action == Action::Deny
            && (group.report || self.report_sources.contains(&self.rules[rule.0 as usize].origin.file));
        Decision {
            action: if report { Action::Allow } else { action },
            rule: Some(rule),
            path_unenforced,
            tie: actions.count_ones() > 1,
            would_deny: report,
        }
    }

    /// Decides a connection without a name by its destination address: among the address rules
    /// of the client's group whose network contains the address and whose scheme and port fit,
    /// the longest prefix wins; a tie resolves to the strictest action. Nothing fits: the
    /// group's default action.
    pub fn decide_address(&self, q: &AddrQuery) -> Decision {
        let group = self.group(q.group);
        let bit = 1u64 << q.group.0;
        let mut level = None;
        let mut best: Option<(Action, RuleId)> = None;
        let mut actions = 0u8;
        for hit in self.nets.matches(q.addr) {
            if level != Some(hit.prefix_len()) {
                if let Some((action, rule)) = best {
                    return self.ruled(group, action, rule, false, actions);
                }
                level = Some(hit.prefix_len());
            }
            let id = *hit.value();
            if self.applies[id.0 as usize] & bit == 0 {
                continue;
            }
            if let Fit::Yes { .. } = fits(&self.rules[id.0 as usize], q.scheme, q.port, None) {
                let action = self.rules[id.0 as usize].action;
                actions |= 1 << action as u8;
                if best.is_none_or(|(a, _)| action > a) {
                    best = Some((action, id));
                }
            }
        }
        match best {
            Some((action, rule)) => self.ruled(group, action, rule, false, actions),
            None => self.default_decision(q.group),
        }
    }

    /// The decision when no rule fits: the group's default action, report mode applied.
    pub fn default_decision(&self, group: GroupId) -> Decision {
        let g = self.group(group);
        let report = g.default == Action::Deny && g.report;
        Decision {
            action: if report { Action::Allow } else { g.default },
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
        let bit = 1u64 << q.group.0;
        let candidates = scratch
            .iter()
            .map(|h| {
                let rule = *self.matcher.value(h.id());
                let verdict = match fits(&self.rules[rule.0 as usize], Some(q.scheme), q.port, q.path) {
                    _ if self.applies[rule.0 as usize] & bit == 0 => Verdict::OtherGroup,
                    Fit::No(v) => v,
                    Fit::Yes { .. } if Some(rule) == decision.rule => Verdict::Winner,
                    Fit::Yes { .. } if Some(h.specificity()) == winner_spec => Verdict::TieLost,
                    Fit::Yes { .. } => Verdict::LessSpecific,
                };
                Candidate { rule, rank: Rank::Name(h.specificity()), verdict }
            })
            .collect();
        (decision, candidates)
    }

    /// [`Policy::decide_address`], and what became of every address rule whose network contains
    /// the address.
    pub fn explain_address(&self, q: &AddrQuery) -> (Decision, Vec<Candidate>) {
        let decision = self.decide_address(q);
        let winner_len =
            decision.rule.and_then(|w| self.nets.matches(q.addr).find(|h| *h.value() == w)).map(|h| h.prefix_len());
        let bit = 1u64 << q.group.0;
        let candidates = self
            .nets
            .matches(q.addr)
            .map(|h| {
                let rule = *h.value();
                let verdict = match fits(&self.rules[rule.0 as usize], q.scheme, q.port, None) {
                    _ if self.applies[rule.0 as usize] & bit == 0 => Verdict::OtherGroup,
                    Fit::No(v) => v,
                    Fit::Yes { .. } if Some(rule) == decision.rule => Verdict::Winner,
                    Fit::Yes { .. } if Some(h.prefix_len()) == winner_len => Verdict::TieLost,
                    Fit::Yes { .. } => Verdict::LessSpecific,
                };
                Candidate { rule, rank: Rank::Prefix(h.prefix_len()), verdict }
            })
            .collect();
        (decision, candidates)
    }

    /// Whether a rule applies to a client group.
    pub fn applies(&self, rule: RuleId, group: GroupId) -> bool {
        self.applies[rule.0 as usize] & (1u64 << group.0) != 0
    }

    /// Whether a deny of `rule` is only reported for the clients of `group` (the group's mode, or
    /// the rule's source's).
    pub fn reported(&self, rule: RuleId, group: GroupId) -> bool {
        self.group(group).report || self.report_sources.contains(&self.rules[rule.0 as usize].origin.file)
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

    /// Whether every deny of the clients in no group is only reported (`[policy] mode`).
    pub fn report_all(&self) -> bool {
        self.groups[0].report
    }

    /// Whether `file`'s deny rules are only reported (for the clients in no group).
    pub fn reports(&self, file: &str) -> bool {
        self.groups[0].report || self.report_sources.iter().any(|f| &**f == file)
    }

    /// The action when no rule matches, for the clients in no group.
    pub fn default_action(&self) -> Action {
        self.groups[0].default
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

    /// The compiled address rules (for statistics).
    pub fn nets(&self) -> &NetTable<RuleId> {
        &self.nets
    }

    /// The lint: warnings about rules (and client groups) that are legal but probably not what
    /// the operator meant.
    pub fn lint(&self) -> Vec<Lint> {
        let mut lints = lint::run(&self.rules, &self.applies, &self.matcher, self.inspected);
        lints.extend(lint::groups(&self.groups, &self.clients));
        lints.sort_by(|a, b| {
            a.kind.cmp(&b.kind).then_with(|| a.origin.file.cmp(&b.origin.file)).then(a.origin.line.cmp(&b.origin.line))
        });
        lints
    }
}

/// The groups a source's rules apply to: bit 0 when it applies to clients in no group, bit g
/// when the g-th `[[client]]` names it.
fn source_groups(inputs: &Inputs<'_>, source: usize) -> u64 {
    let mut mask = u64::from(inputs.top_sources.contains(&source));
    for (i, g) in inputs.groups.iter().enumerate() {
        if g.sources.contains(&source) {
            mask |= 1 << (i + 1);
        }
    }
    mask
}

/// Active rules by action (bypass, allow, deny) among those `keep` accepts (by index).
fn count_active(rules: &[Rule], keep: impl Fn(usize) -> bool) -> [usize; 3] {
    let mut n = [0; 3];
    for (i, r) in rules.iter().enumerate() {
        if r.decides_tcp() && keep(i) {
            n[r.action as usize] += 1;
        }
    }
    n
}

fn fits(r: &Rule, scheme: Option<Scheme>, port: u16, path: Option<&str>) -> Fit {
    if r.scheme.is_some_and(|s| Some(s) != scheme) {
        return Fit::No(Verdict::SchemeMismatch);
    }
    if !r.fits_port(port) {
        return Fit::No(Verdict::PortMismatch);
    }
    match (&r.path, path) {
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
        let d = p.decide(&Query { host: &host, scheme, port, path, group: GroupId::NONE }, &mut Matches::new());
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
        let d = p.decide(
            &Query { host: &host, scheme: Scheme::Https, port: 443, path: None, group: GroupId::NONE },
            &mut Matches::new(),
        );
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
        let d = p.decide(
            &Query { host: &host, scheme: Scheme::Https, port: 443, path: None, group: GroupId::NONE },
            &mut Matches::new(),
        );
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
                &Query { host: &host, scheme: Scheme::Https, port: 443, path: Some("/ignored"), group: GroupId::NONE },
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
        let (d, c) =
            p.explain(&Query { host: &host, scheme: Scheme::Https, port: 443, path: None, group: GroupId::NONE });
        assert_eq!(d.action, Action::Allow);
        let v: Vec<(u32, Verdict)> = c.iter().map(|c| (p.rule(c.rule).origin.line, c.verdict)).collect();
        assert_eq!(
            v,
            [(3, Verdict::SchemeMismatch), (4, Verdict::PortMismatch), (1, Verdict::TieLost), (2, Verdict::Winner)]
        );
    }

    /// A policy loaded from rule files in a temporary directory, with client groups.
    fn grouped(files: &[(&str, &str)], top: &[usize], groups: &[(&str, &[&str], &[usize], Action)]) -> Policy {
        let dir = tempfile::tempdir().unwrap();
        let sources: Vec<Source> = files
            .iter()
            .enumerate()
            .map(|(i, (name, text))| {
                let path = dir.path().join(name);
                std::fs::write(&path, text).unwrap();
                Source { path, default: None, line: i + 1, mode: Mode::Enforce, name: Some(name.to_string()) }
            })
            .collect();
        let groups: Vec<Group> = groups
            .iter()
            .enumerate()
            .map(|(i, (name, nets, srcs, default))| Group {
                name: Arc::from(*name),
                networks: nets.iter().map(|n| n.parse().unwrap()).collect(),
                sources: srcs.to_vec(),
                default: *default,
                mode: Mode::Enforce,
                auth: true,
                users: Vec::new(),
                directory_groups: Vec::new(),
                line: 100 + i,
            })
            .collect();
        let vars = BTreeMap::new();
        Policy::load(&Inputs {
            sources: &sources,
            top_sources: top,
            groups: &groups,
            default: Action::Deny,
            mode: Mode::Enforce,
            vars: &vars,
            inspected: false,
            config_file: Path::new("hostgate.toml"),
            auth: true,
        })
        .unwrap()
    }

    #[test]
    fn client_groups_pick_their_sources_and_default() {
        let p = grouped(
            &[("ms", "allow *.microsoft.com\n"), ("staff", "allow *.example.org\ndeny www.microsoft.com\n")],
            &[0],
            &[
                ("kiosks", &["10.1.0.0/16"], &[0], Action::Deny),
                ("staff", &["10.2.0.0/16", "10.2.3.0/24"], &[0, 1], Action::Deny),
                ("guests", &["10.9.0.0/16", "fd00:9::/32"], &[], Action::Deny),
                ("lab", &["10.2.3.0/24"], &[1], Action::Allow),
            ],
        );
        let group = |a: &str| p.group(p.group_of(a.parse().unwrap())).name.as_deref().map(str::to_string);
        assert_eq!(group("10.1.2.3").as_deref(), Some("kiosks"));
        assert_eq!(group("10.2.9.9").as_deref(), Some("staff"));
        // The longest prefix picks the group; at the same prefix the first group wins (linted).
        assert_eq!(group("10.2.3.4").as_deref(), Some("staff"));
        assert_eq!(group("::ffff:10.9.0.1").as_deref(), Some("guests"), "a mapped IPv4 client");
        assert_eq!(group("fd00:9::1").as_deref(), Some("guests"));
        assert_eq!(group("192.0.2.1"), None);
        let decide = |client: &str, name: &str| {
            let host = Host::new(name).unwrap();
            let q = Query {
                host: &host,
                scheme: Scheme::Https,
                port: 443,
                path: None,
                group: p.group_of(client.parse().unwrap()),
            };
            let d = p.decide(&q, &mut Matches::new());
            (d.action, d.rule.map(|r| p.rule(r).origin.line))
        };
        assert_eq!(decide("10.1.2.3", "a.microsoft.com"), (Action::Allow, Some(1)));
        assert_eq!(decide("10.1.2.3", "a.example.org"), (Action::Deny, None), "kiosks: not their source");
        assert_eq!(decide("10.2.9.9", "a.example.org"), (Action::Allow, Some(1)));
        assert_eq!(decide("10.2.9.9", "www.microsoft.com"), (Action::Deny, Some(2)));
        assert_eq!(
            decide("10.1.2.3", "www.microsoft.com"),
            (Action::Allow, Some(1)),
            "the staff deny is not the kiosks'"
        );
        assert_eq!(decide("10.9.0.1", "a.microsoft.com"), (Action::Deny, None), "guests: nothing but the default");
        assert_eq!(decide("192.0.2.1", "a.microsoft.com"), (Action::Allow, Some(1)), "no group: the top-level sources");
        assert_eq!(decide("192.0.2.1", "a.example.org"), (Action::Deny, None));
        let counts: Vec<(String, [usize; 3])> = p.groups().iter().map(|g| (g.label().to_string(), g.rules)).collect();
        assert_eq!(
            counts,
            [
                ("-".into(), [0, 1, 0]),
                ("kiosks".into(), [0, 1, 0]),
                ("staff".into(), [0, 2, 1]),
                ("guests".into(), [0, 0, 0]),
                ("lab".into(), [0, 1, 1])
            ]
        );
        let lints: Vec<String> = p.lint().iter().map(ToString::to_string).collect();
        assert!(
            lints
                .iter()
                .any(|l| l.starts_with("hostgate.toml:102: warning[empty-group]: client group `guests` has no rules")),
            "{lints:#?}"
        );
        assert!(
            lints.iter().any(|l| l.starts_with(
                "hostgate.toml:103: warning[group-overlap]: client group `lab` lists 10.2.3.0/24 like `staff`"
            )),
            "{lints:#?}"
        );
        // Rules of groups that share no client never conflict.
        assert!(!lints.iter().any(|l| l.contains("conflict") || l.contains("tie")), "{lints:#?}");
    }

    #[test]
    fn address_rules_decide_by_longest_prefix_then_strictness() {
        let p = policy(
            "bypass 52.112.0.0/14:443\ndeny 52.113.0.0/16\nallow 52.113.194.0/24\nbypass 52.113.194.0/24\nallow [2603:1063::]/38\nallow http://198.51.100.0/24\nallow 52.113.194.132.example.com\n",
        );
        let decide = |addr: &str, port: u16, scheme: Option<Scheme>| {
            let q = AddrQuery { addr: addr.parse().unwrap(), scheme, port, group: GroupId::NONE };
            let d = p.decide_address(&q);
            (d.action, d.rule.map(|r| p.rule(r).origin.line), d.tie)
        };
        let tls = Some(Scheme::Https);
        assert_eq!(decide("52.112.1.1", 443, tls), (Action::Bypass, Some(1), false));
        assert_eq!(decide("52.112.1.1", 8443, tls), (Action::Deny, None, false), "port");
        assert_eq!(decide("52.113.1.1", 443, tls), (Action::Deny, Some(2), false), "a longer prefix wins");
        assert_eq!(decide("52.113.194.132", 443, tls), (Action::Allow, Some(3), true), "a tie: the strictest");
        assert_eq!(decide("2603:1063::1", 443, None), (Action::Allow, Some(5), false));
        assert_eq!(decide("2603:1064::1", 443, None), (Action::Deny, None, false));
        assert_eq!(decide("198.51.100.7", 80, Some(Scheme::Http)), (Action::Allow, Some(6), false));
        assert_eq!(decide("198.51.100.7", 80, None), (Action::Deny, None, false), "an unknown protocol is not http");
        // A name is never decided by an address rule, nor an address by a name rule.
        assert_eq!(decide_q(&p, "52.113.194.132.example.com"), (Action::Allow, Some(7)));
        let (d, c) = p.explain_address(&AddrQuery {
            addr: "52.113.194.132".parse().unwrap(),
            scheme: tls,
            port: 443,
            group: GroupId::NONE,
        });
        assert_eq!(d.action, Action::Allow);
        let v: Vec<(u32, Rank, Verdict)> = c.iter().map(|c| (p.rule(c.rule).origin.line, c.rank, c.verdict)).collect();
        assert_eq!(
            v,
            [
                (3, Rank::Prefix(24), Verdict::Winner),
                (4, Rank::Prefix(24), Verdict::TieLost),
                (2, Rank::Prefix(16), Verdict::LessSpecific),
                (1, Rank::Prefix(14), Verdict::LessSpecific)
            ]
        );
    }

    #[test]
    fn port_lists_fit_any_of_their_ports_and_udp_rules_never_decide() {
        let p = policy(
            "bypass outlook.office.com:80,443\nallow *.teams.example:3478-3481,443\nallow 52.112.0.0/14:80,443\n\
             bypass udp://52.112.0.0/14:3478-3481\ndeny udp://0.0.0.0/0:443\nbypass udp://[2603:1063::]/38\n",
        );
        assert_eq!(decide(&p, "outlook.office.com", Scheme::Https, 443, None), (Action::Bypass, Some(1)));
        assert_eq!(decide(&p, "outlook.office.com", Scheme::Http, 80, None), (Action::Bypass, Some(1)));
        assert_eq!(decide(&p, "outlook.office.com", Scheme::Https, 8443, None), (Action::Deny, None));
        assert_eq!(decide(&p, "a.teams.example", Scheme::Https, 3480, None), (Action::Allow, Some(2)));
        assert_eq!(decide(&p, "a.teams.example", Scheme::Https, 3482, None), (Action::Deny, None));
        let addr = |a: &str, port: u16| {
            let d = p.decide_address(&AddrQuery { addr: a.parse().unwrap(), scheme: None, port, group: GroupId::NONE });
            (d.action, d.rule.map(|r| p.rule(r).origin.line))
        };
        assert_eq!(addr("52.112.1.1", 80), (Action::Allow, Some(3)));
        // UDP rules are for the firewall: a TCP connection to 3478 or to an IPv6 Optimize address
        // is decided as if they were not there.
        assert_eq!(addr("52.112.1.1", 3478), (Action::Deny, None));
        assert_eq!(addr("2603:1063::1", 443), (Action::Deny, None));
        assert_eq!(p.nets().len(), 1, "only the TCP address rule is compiled");
        assert_eq!(p.sources()[0].udp, 3);
        assert_eq!(p.sources()[0].active(), 3);
        assert_eq!(p.groups()[0].rules.iter().sum::<usize>(), 3);
    }

    fn decide_q(p: &Policy, host: &str) -> (Action, Option<u32>) {
        decide(p, host, Scheme::Https, 443, None)
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
