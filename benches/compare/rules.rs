//! The rule sets every proxy gets, the truth they are checked against, and the names the load
//! generator asks for.
//!
//! A rule set is a hostgate configuration's policy sources (the shipped Microsoft rules, or a
//! synthetic file), plus `bench.rules` for the harness's own names. hostgate's compiled policy
//! is the truth: for every name, `Policy::decide` (TLS, port 443, no path: what a connection
//! through a proxy that does not inspect is decided by) says forward or refuse. The peers get the
//! same rules translated from that policy ([`Entry`]): rules for plain HTTP or another port do not
//! apply to TLS on 443 and are left out for everyone; a rule with a path applies to its whole
//! host, as in hostgate without inspection; `allow` and `bypass` both forward.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hostgate_matcher::{Host, Matches};
use hostgate_proxy::config::Config;
use hostgate_proxy::policy::{Action, GroupId, Policy, Query, Scheme};

use crate::load::{BULK, HOLD};

/// The harness's own rules, in every set: the long transfer and the idle tunnels.
pub(crate) const BENCH_RULES: &str = "allow bulk.bench.test\nallow *.hold.bench.test\n";

/// A pattern's shape, as the peers can index it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Shape {
    /// No `*`: the name itself.
    Exact(String),
    /// `*.rest` with no other `*`: any name of one or more labels before `rest`.
    Suffix(String),
    /// Anything else (`*` inside a label, a `*` label that is not leftmost, several `*`):
    /// an anchored regular expression over the whole name.
    Glob(String),
}

/// One pattern for the peers: its shape and whether names it decides are forwarded.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) shape: Shape,
    pub(crate) forward: bool,
    /// hostgate's specificity: exact first, then more literal bytes.
    pub(crate) exact: bool,
    pub(crate) literal: usize,
}

/// A rule set, loaded and translated.
#[derive(Debug)]
pub(crate) struct RuleSet {
    pub(crate) label: String,
    /// `[[policy.source]]` lines for hostgate's configuration (absolute paths).
    pub(crate) sources_toml: String,
    /// Active rules in hostgate's policy.
    pub(crate) rules: usize,
    /// Patterns the peers get (after merging rules that share a pattern).
    pub(crate) entries: Vec<Entry>,
    /// Names to check every proxy with, and whether each is forwarded.
    pub(crate) check: Vec<(String, bool)>,
    /// Names for the timed runs (more of them than checked on large sets, in a scattered order),
    /// and whether each is forwarded.
    pub(crate) load: Vec<(String, bool)>,
    /// What the translation could not carry over, for the report.
    pub(crate) notes: Vec<String>,
}

/// Whether hostgate's policy forwards `name` (TLS, port 443, no path).
pub(crate) fn forwards(policy: &Policy, name: &str, scratch: &mut Matches) -> Option<bool> {
    let host = Host::new(name).ok()?;
    let d = policy
        .decide(&Query { host: &host, scheme: Scheme::Https, port: 443, path: None, group: GroupId::NONE }, scratch);
    Some(d.action != Action::Deny)
}

/// Writes a policy-only configuration for `sources_toml` and compiles it.
fn compile(dir: &Path, sources_toml: &str) -> Result<Policy, String> {
    let path = dir.join("policy-only.toml");
    let text = format!(
        "[[listener]]\nkind = \"transparent\"\naddress = \"127.0.0.1:0\"\n[policy]\ndefault = \"deny\"\n{sources_toml}"
    );
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    let config = Config::load(&path).map_err(|e| e.to_string())?;
    Policy::load(&config.policy_inputs()).map_err(|e| e.to_string())
}

fn bench_source(dir: &Path) -> Result<String, String> {
    let path = dir.join("bench.rules");
    std::fs::write(&path, BENCH_RULES).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(format!("[[policy.source]]\npath = \"{}\"\n", path.display()))
}

/// The shipped configuration's rule files.
pub(crate) fn shipped(repo: &Path, dir: &Path, distinct: usize) -> Result<RuleSet, String> {
    let config = Config::load(&repo.join("config/hostgate.toml")).map_err(|e| e.to_string())?;
    let mut sources = String::new();
    for s in &config.policy.sources {
        let _ = writeln!(sources, "[[policy.source]]\npath = \"{}\"", s.path.display());
        if let Some(d) = s.default {
            let _ = writeln!(sources, "default = \"{}\"", d.as_str());
        }
    }
    sources.push_str(&bench_source(dir)?);
    build("shipped".into(), dir, sources, usize::MAX, distinct)
}

/// A synthetic rule file of `n` rules (deterministic), the shapes real allowlists have: exact
/// names, `*.domain` (some with `deny` names and `deny *.sub` beneath them) and a few partial-label
/// globs.
pub(crate) fn synthetic(dir: &Path, n: usize, distinct: usize) -> Result<RuleSet, String> {
    let path = dir.join(format!("synthetic-{n}.rules"));
    std::fs::write(&path, synthetic_rules(n)).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut sources = format!("[[policy.source]]\npath = \"{}\"\n", path.display());
    sources.push_str(&bench_source(dir)?);
    build(format!("synthetic {}k", n / 1000), dir, sources, 2_000, distinct)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn word(&mut self) -> String {
        const SYL: [&str; 24] = [
            "ka", "lo", "mi", "net", "sto", "re", "vu", "dra", "pe", "qu", "zen", "ti", "ba", "cor", "del", "fa", "gi",
            "hu", "jo", "ly", "mo", "ne", "pi", "ro",
        ];
        let n = 2 + self.below(3);
        (0..n).map(|_| SYL[self.below(SYL.len() as u64) as usize]).collect()
    }
}

fn synthetic_rules(n: usize) -> String {
    const TLDS: [&str; 8] = ["com", "net", "org", "io", "de", "co.uk", "cloud", "dev"];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut out = String::with_capacity(n * 32);
    let mut wild: Vec<String> = Vec::new();
    let mut i = 0usize;
    while i < n {
        let tld = TLDS[rng.below(TLDS.len() as u64) as usize];
        let roll = rng.below(100);
        let line = if roll < 55 {
            format!("allow {}.{}{i}.{tld}", rng.word(), rng.word())
        } else if roll < 90 {
            let domain = if rng.below(3) == 0 {
                format!("{}{i}.{}.{tld}", rng.word(), rng.word())
            } else {
                format!("{}{i}.{tld}", rng.word())
            };
            wild.push(domain.clone());
            format!("allow *.{domain}")
        } else if roll < 93 {
            if rng.below(2) == 0 {
                format!("allow {}*.{}{i}.{tld}", rng.word(), rng.word())
            } else {
                format!("allow *-{}{i}.{}.{tld}", rng.word(), rng.word())
            }
        } else if let Some(domain) = (!wild.is_empty()).then(|| wild[rng.below(wild.len() as u64) as usize].clone()) {
            if rng.below(3) == 0 {
                format!("deny *.{}.{domain}", rng.word())
            } else {
                format!("deny {}{i}.{domain}", rng.word())
            }
        } else {
            continue;
        };
        out.push_str(&line);
        out.push('\n');
        i += 1;
    }
    out
}

fn build(
    label: String,
    dir: &Path,
    sources_toml: String,
    max_check: usize,
    distinct: usize,
) -> Result<RuleSet, String> {
    let policy = compile(dir, &sources_toml)?;
    let mut notes = Vec::new();
    let mut by_pattern: BTreeMap<String, bool> = BTreeMap::new();
    let (mut http_only, mut other_port, mut with_path, mut inactive) = (0, 0, 0, 0);
    for rule in policy.rules() {
        let Some(pattern) = &rule.pattern else {
            inactive += 1;
            continue;
        };
        if rule.scheme == Some(Scheme::Http) {
            http_only += 1;
            continue;
        }
        if !rule.fits_port(443) {
            other_port += 1;
            continue;
        }
        if rule.path.is_some() {
            with_path += 1;
        }
        let forward = rule.action != Action::Deny;
        // `Display`: a one-label leftmost `*` (an unset `<tenant>`) is written `<*>`.
        let slot = by_pattern.entry(pattern.to_string()).or_insert(true);
        *slot &= forward;
    }
    if http_only + other_port > 0 {
        notes.push(format!(
            "{http_only} rules for plain HTTP only and {other_port} for another port than 443 do not apply to TLS on 443: \
             left out for every proxy (hostgate ignores them for these connections too)"
        ));
    }
    if with_path > 0 {
        notes.push(format!(
            "{with_path} rules with a path apply to their whole host: without inspection no proxy sees paths \
             (hostgate decides such a connection by the rule, `path_unenforced`)"
        ));
    }
    if inactive > 0 {
        notes.push(format!("{inactive} rules are inactive (a placeholder without a value is the whole name)"));
    }
    let mut entries = Vec::new();
    for (pattern, forward) in &by_pattern {
        // A leading-dot pattern is the domain itself and every name under it.
        if let Some(domain) = pattern.strip_prefix('.') {
            entries.push(entry(domain, *forward));
            entries.push(entry(&format!("*.{domain}"), *forward));
        } else {
            entries.push(entry(pattern, *forward));
        }
    }
    // Merge what the expansion made equal (strictest wins, as in hostgate).
    let mut merged: BTreeMap<Shape, Entry> = BTreeMap::new();
    for e in entries {
        merged.entry(e.shape.clone()).and_modify(|m| m.forward &= e.forward).or_insert(e);
    }
    let entries: Vec<Entry> = merged.into_values().collect();
    let globs = entries.iter().filter(|e| matches!(e.shape, Shape::Glob(_))).count();
    if globs > 0 {
        notes.push(format!(
            "{globs} patterns with `*` inside a label or in a later label become regular expressions for HAProxy \
             (`map_reg`) and nginx (`~` entries), which both try them after exact names and `*.suffix` entries, \
             whatever their specificity"
        ));
    }

    // The names to check: instances of every pattern and near misses (every `step`-th pattern
    // for large sets). The load's names: the same from more patterns, up to about `distinct`.
    let names_every = |step: usize| {
        let mut names: Vec<String> = Vec::new();
        for (k, pattern) in by_pattern.keys().enumerate() {
            if k % step == 0 {
                // The harness's own names have their own phases (the upstream answers them apart).
                names.extend(instances(pattern, k).into_iter().filter(|n| !n.ends_with(".bench.test")));
            }
        }
        names.sort();
        names.dedup();
        let mut scratch = Matches::new();
        let mut out = Vec::new();
        for name in names {
            // Only names a TLS client can send (rustls refuses `_`, for one).
            if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
                continue;
            }
            if let Some(forward) = forwards(&policy, &name, &mut scratch) {
                out.push((name, forward));
            }
        }
        out
    };
    let check = names_every(by_pattern.len().div_ceil(max_check / 4).max(1));
    let mut load = names_every(by_pattern.len().div_ceil(distinct / 2).max(1));
    // Scattered: consecutive connections ask for unrelated names.
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for i in (1..load.len()).rev() {
        load.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let rules = policy.rules().iter().filter(|r| r.pattern.is_some()).count();
    Ok(RuleSet { label, sources_toml, rules, entries, check, load, notes })
}

fn entry(pattern: &str, forward: bool) -> Entry {
    let literal = pattern.bytes().filter(|&b| !matches!(b, b'*' | b'<' | b'>')).count();
    let shape = if !pattern.contains('*') {
        Shape::Exact(pattern.to_string())
    } else if let Some(rest) = pattern.strip_prefix("*.").filter(|r| !r.contains('*')) {
        Shape::Suffix(rest.to_string())
    } else {
        Shape::Glob(glob_regex(pattern))
    };
    let exact = matches!(shape, Shape::Exact(_));
    Entry { shape, forward, exact, literal }
}

/// hostgate's pattern semantics as an anchored regular expression: a leftmost `*` label is one
/// or more labels, a leftmost `<*>` (a one-label `*`, as `Pattern` displays it) and a later `*`
/// label exactly one, a `*` inside a label any run of bytes within it.
pub(crate) fn glob_regex(pattern: &str) -> String {
    let mut re = String::from("^");
    for (i, label) in pattern.split('.').enumerate() {
        if i > 0 {
            re.push_str("\\.");
        }
        if label == "*" || label == "<*>" {
            re.push_str(if i == 0 && label == "*" { "[^.]+(\\.[^.]+)*" } else { "[^.]+" });
            continue;
        }
        for c in label.chars() {
            match c {
                '*' => re.push_str("[^.]*"),
                '-' | '_' => re.push(c),
                c if c.is_ascii_alphanumeric() => re.push(c),
                c => {
                    re.push('\\');
                    re.push(c);
                }
            }
        }
    }
    re.push('$');
    re
}

/// Names a pattern matches, and names next to it that it does not.
fn instances(pattern: &str, k: usize) -> Vec<String> {
    // The names of `<*>.s` are those of `*.s`: `b2.h1.s` is then a near miss.
    let pattern = pattern.replace("<*>", "*");
    let body = pattern.strip_prefix('.').unwrap_or(&pattern);
    let fill = |first: &str, inner: &str| {
        body.split('.')
            .enumerate()
            .map(|(i, l)| match l {
                "*" if i == 0 => first.to_string(),
                "*" => "w1".to_string(),
                l => l.replace('*', inner),
            })
            .collect::<Vec<_>>()
            .join(".")
    };
    let mut out = vec![
        fill("h1", "zz"),
        fill("b2.h1", ""),
        format!("x{k}{}", body.trim_start_matches("*.")),
        format!("{body}.miss{k}.test"),
    ];
    if let Some(rest) = body.strip_prefix("*.") {
        out.push(rest.to_string());
    }
    out.retain(|n| !n.contains('*'));
    out
}

/// The names of a set for a timed run: forwarded and refused names, three to one, spread over
/// the set.
pub(crate) fn load_mix(names: &[(String, bool)], limit: usize) -> Vec<(String, bool)> {
    let check = names;
    let skip = |n: &str| n == BULK || n == HOLD;
    let fwd: Vec<_> = check.iter().filter(|(n, f)| *f && !skip(n)).collect();
    let deny: Vec<_> = check.iter().filter(|(n, f)| !*f && !skip(n)).collect();
    let mut out = Vec::new();
    let (mut a, mut b) = (0, 0);
    while out.len() < limit && (a < fwd.len() || b < deny.len()) {
        for _ in 0..3 {
            if a < fwd.len() {
                out.push(fwd[a].clone());
                a += 1;
            }
        }
        if b < deny.len() {
            out.push(deny[b].clone());
            b += 1;
        }
    }
    out
}

/// Where the harness keeps a rule set's files.
pub(crate) fn set_dir(work: &Path, label: &str) -> PathBuf {
    work.join(label.replace(' ', "-"))
}
