//! `regex_set`: what a user reaching for the `regex` crate would write — every pattern translated
//! to one anchored regex, all of them in one `regex::RegexSet`; a lookup asks the set which
//! patterns match and keeps the most specific.
//!
//! Translation, label by label (joined with `\.`, wrapped in `^...$`; `H` is the host-label class
//! `[-0-9_a-z]`, which is exactly the contract's byte set):
//!
//! | pattern label | regex |
//! |---|---|
//! | leftmost `*` | `H+(?:\.H+)*` (one or more labels) |
//! | other whole-label `*` | `H+` (exactly one label) |
//! | glob label `fe*`, `*cdn` | literal parts escaped, each `*` as `H*` |
//! | literal | escaped |
//!
//! A leading-dot pattern `.d` becomes two set entries, `^d$` and the translation of `*.d` (the
//! `(d|.+\.d)` form split in two), so each entry has a single specificity; both map to the same
//! pattern id. Hosts are lowercased (and one trailing dot stripped) before matching, like the
//! other baseline, rather than compiling the set case-insensitively.
//!
//! Limits: `size_limit` and `dfa_size_limit` are raised to 1 GiB. The set compiles quickly (the
//! NFA), but its lazy DFA builds states as hosts arrive: each new host costs milliseconds (every
//! state is a set over thousands of NFA states) until the states it needs are cached, which is
//! why `lookup_random` and `lookup_hot` differ by three orders of magnitude for this baseline,
//! and why the 5,000 hot hosts alone fill most of the 1 GiB cache.

use regex::{RegexSet, RegexSetBuilder};

use super::{normalize, Spec};

const LABEL: &str = "[-0-9_a-z]";

/// One `RegexSet` over all patterns.
#[derive(Debug)]
pub(crate) struct RegexSetMatcher {
    set: RegexSet,
    /// Per set entry: (specificity, pattern id).
    entries: Vec<(Spec, u32)>,
}

impl RegexSetMatcher {
    /// Translates and compiles; `Err` carries regex's message (e.g. a size limit was exceeded).
    pub(crate) fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut regexes = Vec::new();
        let mut entries = Vec::new();
        for (id, pattern) in patterns.into_iter().enumerate() {
            let id = u32::try_from(id).expect("fewer than 2^32 patterns");
            let pattern = pattern.strip_suffix('.').unwrap_or(pattern);
            let pattern = pattern.to_ascii_lowercase();
            let expansions = match pattern.strip_prefix('.') {
                Some(rest) => vec![rest.to_owned(), format!("*.{rest}")],
                None => vec![pattern],
            };
            for p in expansions {
                let literal = u16::try_from(p.len() - p.matches('*').count()).expect("names are at most 253 bytes");
                entries.push((Spec::new(!p.contains('*'), literal), id));
                regexes.push(translate(&p));
            }
        }
        let set = RegexSetBuilder::new(&regexes)
            .size_limit(1 << 30)
            .dfa_size_limit(1 << 30)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { set, entries })
    }

    /// Number of regexes in the set (leading-dot patterns count twice).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The most specific match for `host`, as (specificity, pattern id).
    pub(crate) fn find(&self, host: &str) -> Option<(Spec, u32)> {
        let mut buf = [0u8; 253];
        let host = normalize(host, &mut buf)?;
        let matches = self.set.matches(host);
        if !matches.matched_any() {
            return None;
        }
        matches
            .iter()
            .map(|i| self.entries[i])
            // Highest specificity, then lowest id.
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
    }
}

/// Translates one (lowercase, dot-free at the start) pattern to an anchored regex.
fn translate(pattern: &str) -> String {
    let mut re = String::from("^");
    for (i, label) in pattern.split('.').enumerate() {
        if i > 0 {
            re.push_str(r"\.");
        }
        if label == "*" {
            if i == 0 {
                re.push_str(&format!(r"{LABEL}+(?:\.{LABEL}+)*"));
            } else {
                re.push_str(&format!("{LABEL}+"));
            }
        } else {
            for (j, part) in label.split('*').enumerate() {
                if j > 0 {
                    re.push_str(&format!("{LABEL}*"));
                }
                re.push_str(&regex::escape(part));
            }
        }
    }
    re.push('$');
    re
}
