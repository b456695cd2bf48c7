//! What a reload changed: the rules added and removed per rule file, and the settings that
//! only a restart applies.
//!
//! This module owns the comparison of two generations' rules and configurations. It does not
//! load, compile or swap anything (that is [`crate::gateway`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::config::Config;
use crate::generation::{load_inspector, Generation};
use crate::inspect::{CaError, Inspector};
use crate::metrics::{Metrics, ReloadSample};
use crate::policy::{LoadError, Policy};

/// Why a reload did not apply; the previous generation keeps serving.
#[derive(Debug)]
pub enum ReloadError {
    /// The configuration file.
    Config(crate::config::ConfigError),
    /// A rule file.
    Policy(LoadError),
    /// The inspection CA or the upstream trust anchors.
    Inspect(CaError),
    /// `[auth]`: the htpasswd file, the LDAP CA or the service account's password.
    Auth(String),
    /// A listener the new configuration adds cannot be bound.
    Bind {
        /// The configured address.
        address: std::net::SocketAddr,
        /// Why.
        error: std::io::Error,
    },
    /// Something that should not fail did.
    Internal(String),
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadError::Config(e) => write!(f, "{e}"),
            ReloadError::Policy(e) => write!(f, "{e}"),
            ReloadError::Inspect(e) => write!(f, "{e}"),
            ReloadError::Auth(e) => f.write_str(e),
            ReloadError::Bind { address, error } => write!(f, "cannot listen on {address}: {error}"),
            ReloadError::Internal(e) => write!(f, "internal error: {e}"),
        }
    }
}

impl std::error::Error for ReloadError {}

/// What a successful reload changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reloaded {
    /// The new generation.
    pub generation: u64,
    /// Active rules by action: bypass, allow, deny.
    pub rules: [usize; 3],
    /// Reading and compiling the rules.
    pub compile_time: Duration,
    /// Rules added and removed, per rule file (files without changes are left out).
    pub changes: Vec<SourceChange>,
    /// Settings that changed but only apply after a restart (listeners, limits).
    pub needs_restart: Vec<String>,
}

/// Reads the configuration at `path` and every rule file, compiles them, loads the inspector
/// (keeping `old`'s certificate cache when its CA is the same) and compares the rules with
/// `old`'s. Everything proportional to the rule count happens on the blocking pool, never on a
/// runtime worker; so does reading the CA and the trust anchors.
///
/// # Errors
/// Any configuration, rule or inspection error, with its file and line.
pub(crate) async fn load(
    path: PathBuf,
    old: &Generation,
    metrics: &Arc<Metrics>,
) -> Result<
    (Config, Policy, Option<Arc<Inspector>>, Option<Arc<crate::auth::Authenticator>>, Vec<SourceChange>),
    ReloadError,
> {
    let (old_policy, old_inspect, metrics) = (old.policy.clone(), old.inspect.clone(), metrics.clone());
    tokio::task::spawn_blocking(move || {
        let config = Config::load(&path).map_err(ReloadError::Config)?;
        let policy = Policy::load(&config.policy_inputs()).map_err(ReloadError::Policy)?;
        let inspect = load_inspector(&config, old_inspect.as_deref(), &metrics).map_err(ReloadError::Inspect)?;
        let auth = crate::auth::load(&config).map_err(ReloadError::Auth)?;
        let changes = rule_changes(&old_policy, &policy);
        Ok::<_, ReloadError>((config, policy, inspect, auth, changes))
    })
    .await
    .map_err(|e| ReloadError::Internal(format!("reload task: {e}")))?
}

/// Reports the policy loaded at start as generation 1.
pub(crate) fn first(metrics: &Metrics, policy: &Policy) {
    let rules = crate::generation::count_rules(policy).map(|n| n as u64);
    metrics.reload(&ReloadSample {
        ok: true,
        generation: 1,
        rules,
        duration: policy.compile_time(),
        at: SystemTime::now(),
    });
}

/// Reports a failed reload: the metrics first, then the log line (as on success), so that whoever
/// acts on the line finds `/metrics` already saying so.
pub(crate) fn failed(metrics: &Metrics, generation: u64, started: Instant, e: &ReloadError) {
    metrics.reload(&ReloadSample {
        ok: false,
        generation,
        rules: [0; 3],
        duration: started.elapsed(),
        at: SystemTime::now(),
    });
    tracing::error!(generation, error = %e, "reload failed; the current generation keeps serving");
}

/// Reports a reload that was applied: the metrics, the summary line, and a warning for each
/// setting that needs a restart.
pub(crate) fn applied(metrics: &Metrics, r: &Reloaded, started: Instant) {
    let generation = r.generation;
    metrics.reload(&ReloadSample {
        ok: true,
        generation,
        rules: r.rules.map(|n| n as u64),
        duration: started.elapsed(),
        at: SystemTime::now(),
    });
    let summary =
        r.changes.iter().map(|c| format!("{}: +{} -{}", c.file, c.added, c.removed)).collect::<Vec<_>>().join("; ");
    tracing::info!(
        generation,
        bypass = r.rules[0],
        allow = r.rules[1],
        deny = r.rules[2],
        compile_ms = r.compile_time.as_millis() as u64,
        took_ms = started.elapsed().as_millis() as u64,
        changes = if summary.is_empty() { "none" } else { summary.as_str() },
        "reloaded; new connections use the new generation"
    );
    for what in &r.needs_restart {
        tracing::warn!(generation, "reload: {what} changed; this takes effect only after a restart");
    }
}

/// Rules added and removed in one file by a reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceChange {
    /// The rule file.
    pub file: String,
    /// Rules (as `ACTION TARGET`) that are new.
    pub added: usize,
    /// Rules that are gone.
    pub removed: usize,
}

/// Rules added and removed per file, comparing `ACTION TARGET` texts as multisets.
///
/// Each rule becomes a pair of 64-bit hashes (its file, its action and target); the two sorted
/// lists are merged. For a million rules that is two 16 MB vectors and two sorts, instead of a
/// map of a million owned strings (which took seconds and most of a reload's extra memory).
pub(crate) fn rule_changes(old: &Policy, new: &Policy) -> Vec<SourceChange> {
    use std::hash::{BuildHasher, Hash, Hasher};
    let state = std::collections::hash_map::RandomState::new();
    let hash = |x: &dyn Fn(&mut std::collections::hash_map::DefaultHasher)| {
        let mut h = state.build_hasher();
        x(&mut h);
        h.finish()
    };
    let mut names: BTreeMap<u64, String> = BTreeMap::new();
    let mut keys = |p: &Policy| -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = p
            .rules()
            .iter()
            .map(|r| {
                let file = hash(&|h| r.origin.file.hash(h));
                (file, hash(&|h| (r.action as u8, r.target.as_str()).hash(h)))
            })
            .collect();
        for r in p.rules() {
            let file = hash(&|h| r.origin.file.hash(h));
            names.entry(file).or_insert_with(|| r.origin.file.to_string());
        }
        v.sort_unstable();
        v
    };
    let (a, b) = (keys(old), keys(new));
    let mut per_file: BTreeMap<u64, (usize, usize)> = BTreeMap::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x == y => {
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x < y => {
                per_file.entry(x.0).or_default().1 += 1;
                i += 1;
            }
            (Some(x), None) => {
                per_file.entry(x.0).or_default().1 += 1;
                i += 1;
            }
            (_, Some(y)) => {
                per_file.entry(y.0).or_default().0 += 1;
                j += 1;
            }
            (None, None) => break,
        }
    }
    let mut out: Vec<SourceChange> = per_file
        .into_iter()
        .map(|(file, (added, removed))| SourceChange {
            file: names.get(&file).cloned().unwrap_or_default(),
            added,
            removed,
        })
        .collect();
    out.sort_by(|x, y| x.file.cmp(&y.file));
    out
}

/// The settings a reload cannot apply.
pub(crate) fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    // Listeners added or removed apply at once (Core::reload binds and starts them).
    if old.limits != new.limits {
        out.push("[limits]".to_string());
    }
    if old.admin != new.admin {
        out.push("[admin]".to_string());
    }
    if old.log != new.log {
        out.push("[log]".to_string());
    }
    if old.runtime != new.runtime {
        out.push("[runtime]".to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{parse_rules, Action};

    fn policy(text: &str, file: &str) -> Policy {
        let rules = parse_rules(file, text, None, &Default::default()).unwrap_or_else(|e| panic!("{e:?}"));
        Policy::compile(rules, Action::Deny, &[std::sync::Arc::from(file)]).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn changes_are_counted_per_file_as_multisets() {
        let old = policy("allow a.test\nallow b.test\nallow b.test\ndeny c.test\n", "x.rules");
        let new = policy("allow a.test\nallow b.test\nbypass c.test\nallow d.test\n", "x.rules");
        let changes = rule_changes(&old, &new);
        assert_eq!(changes, vec![SourceChange { file: "x.rules".into(), added: 2, removed: 2 }]);
        assert!(rule_changes(&new, &new).is_empty());
    }

    #[test]
    fn only_bound_settings_need_a_restart() {
        let text = "[policy]\ndefault = \"deny\"\n";
        let a = Config::parse(std::path::Path::new("a.toml"), text).unwrap_or_else(|e| panic!("{e}"));
        let mut b = a.clone();
        b.limits.max_connections += 1;
        b.upstream.idle_timeout += std::time::Duration::from_secs(1);
        assert_eq!(restart_needed(&a, &b), vec!["[limits]".to_string()]);
        assert!(restart_needed(&a, &a).is_empty());
    }
}
