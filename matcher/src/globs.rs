//! The rare shapes: patterns with a `*` inside a label (`*cdn.onenote.net`, `fe*.x.com`) or a
//! whole-label `*` that is not the only wildcard at the left (`api.*.x.com`, `*.*.x.com`).
//!
//! Each such pattern is filed under its literal tail (the longest all-literal label suffix, e.g.
//! `onenote.net`); the probe table finds the tails of a host in the same pass that finds exact and
//! `*.suffix` rules, and only the patterns under a tail that is present are tried. The part before
//! the tail (the head, e.g. `*cdn` or `api.*`) is matched label by label: a leftmost `*` label
//! takes one or more host labels, or exactly one in a pattern made with
//! [`Pattern::one_label`](crate::Pattern::one_label), every other label exactly one. A tail that carries many
//! patterns (a "dense" bucket, [`DENSE`] or more) is compiled into one regex-automata multi-pattern
//! regex instead, so the head is scanned once whatever the number of patterns.
//!
//! This module does not know about exact or suffix rules, nor about values.

use regex_automata::{meta, util::syntax, Anchored, Input, MatchKind, PatternSet};

use crate::Specificity;

thread_local! {
    /// The reusable match set of dense-bucket lookups.
    static SCRATCH: std::cell::RefCell<PatternSet> = std::cell::RefCell::new(PatternSet::new(0));
}

/// A bucket with at least this many patterns is compiled to a multi-pattern regex.
pub(crate) const DENSE: usize = 32;

#[derive(Debug)]
struct Glob {
    /// Offset and length of the head in `Globs::heads`.
    head: u32,
    head_len: u8,
    /// The head's leftmost `*` label is exactly one label.
    one_label: bool,
    specificity: Specificity,
    id: u32,
}

#[derive(Debug)]
struct Bucket {
    start: u32,
    end: u32,
    dense: Option<Box<meta::Regex>>,
}

/// All glob patterns, grouped by tail.
#[derive(Debug, Default)]
pub(crate) struct Globs {
    heads: Vec<u8>,
    globs: Vec<Glob>,
    buckets: Vec<Bucket>,
}

/// One glob pattern to compile, already grouped: `bucket` indexes the tails in order of first use.
pub(crate) struct GlobEntry<'a> {
    pub(crate) bucket: u32,
    pub(crate) head: &'a str,
    /// The head's leftmost label is `*` and stands for exactly one label.
    pub(crate) one_label: bool,
    pub(crate) specificity: Specificity,
    pub(crate) id: u32,
}

/// Why a dense bucket failed to compile (never expected: the translation only emits simple
/// regexes, but the regex engine has size limits).
#[derive(Debug)]
pub(crate) struct DenseError {
    pub(crate) id: u32,
    pub(crate) message: String,
}

impl Globs {
    pub(crate) fn build(mut entries: Vec<GlobEntry<'_>>, buckets: usize, dense: usize) -> Result<Globs, DenseError> {
        entries.sort_by_key(|e| (e.bucket, e.id));
        let mut g = Globs {
            heads: Vec::with_capacity(entries.iter().map(|e| e.head.len()).sum()),
            globs: Vec::with_capacity(entries.len()),
            buckets: Vec::with_capacity(buckets),
        };
        let mut i = 0;
        for b in 0..buckets as u32 {
            let start = i;
            while i < entries.len() && entries[i].bucket == b {
                let e = &entries[i];
                g.globs.push(Glob {
                    head: g.heads.len() as u32,
                    head_len: e.head.len() as u8,
                    one_label: e.one_label,
                    specificity: e.specificity,
                    id: e.id,
                });
                g.heads.extend_from_slice(e.head.as_bytes());
                i += 1;
            }
            let members = &entries[start..i];
            let dense = if members.len() >= dense {
                let regexes: Vec<String> = members.iter().map(|e| head_regex(e.head, e.one_label)).collect();
                let re = meta::Regex::builder()
                    .configure(meta::Config::new().match_kind(MatchKind::All))
                    .syntax(syntax::Config::new().unicode(false).utf8(false))
                    .build_many(&regexes)
                    .map_err(|e| DenseError { id: members[0].id, message: e.to_string() })?;
                Some(Box::new(re))
            } else {
                None
            };
            g.buckets.push(Bucket { start: start as u32, end: i as u32, dense });
        }
        Ok(g)
    }

    /// Calls `hit` for every pattern of `bucket` whose head matches `head` (the host's labels
    /// before the tail, without the dot that joins them to it).
    #[inline]
    pub(crate) fn each_match(&self, bucket: u32, head: &[u8], hit: &mut impl FnMut(Specificity, u32)) {
        let Some(b) = self.buckets.get(bucket as usize) else {
            return;
        };
        let globs = &self.globs[b.start as usize..b.end as usize];
        match &b.dense {
            None => {
                for g in globs {
                    let pat = &self.heads[g.head as usize..g.head as usize + usize::from(g.head_len)];
                    if head_matches(pat, head, g.one_label) {
                        hit(g.specificity, g.id);
                    }
                }
            }
            Some(re) => SCRATCH.with(|scratch| {
                // One set per thread, grown to the largest dense bucket seen: no allocation per
                // lookup once warm. `hit` is the matcher's own callback and never re-enters here.
                let mut set = scratch.borrow_mut();
                if set.capacity() < re.pattern_len() {
                    *set = PatternSet::new(re.pattern_len());
                } else {
                    set.clear();
                }
                re.which_overlapping_matches(&Input::new(head).anchored(Anchored::Yes), &mut set);
                for p in set.iter() {
                    if let Some(g) = globs.get(p.as_usize()) {
                        hit(g.specificity, g.id);
                    }
                }
            }),
        }
    }

    pub(crate) fn dense_buckets(&self) -> usize {
        self.buckets.iter().filter(|b| b.dense.is_some()).count()
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.heads.capacity()
            + self.globs.capacity() * std::mem::size_of::<Glob>()
            + self.buckets.capacity() * std::mem::size_of::<Bucket>()
            + self
                .buckets
                .iter()
                .filter_map(|b| b.dense.as_ref())
                .map(|re| std::mem::size_of::<meta::Regex>() + re.memory_usage())
                .sum::<usize>()
    }
}

/// Whether the host labels `host` match the pattern labels `pat` (both without a trailing dot).
/// The leftmost pattern label `*` takes one or more labels, or exactly one with `one_label`;
/// every other pattern label takes exactly one, with `*` inside a label matching any run of bytes
/// within it.
pub(crate) fn head_matches(pat: &[u8], host: &[u8], one_label: bool) -> bool {
    let mut p = pat.rsplit(|&b| b == b'.').peekable();
    let mut h = host.rsplit(|&b| b == b'.');
    loop {
        let Some(pl) = p.next() else {
            return h.next().is_none();
        };
        if pl == b"*" && !one_label && p.peek().is_none() {
            return h.next().is_some();
        }
        match h.next() {
            Some(hl) if label_matches(pl, hl) => {}
            _ => return false,
        }
    }
}

/// Glob match of one label: `*` matches any run of bytes (possibly empty), everything else itself.
fn label_matches(pat: &[u8], label: &[u8]) -> bool {
    let Some(first_star) = pat.iter().position(|&b| b == b'*') else {
        return pat == label;
    };
    let last_star = pat.iter().rposition(|&b| b == b'*').unwrap_or(first_star);
    let (prefix, suffix) = (&pat[..first_star], &pat[last_star + 1..]);
    if label.len() < prefix.len() + suffix.len() || !label.starts_with(prefix) || !label.ends_with(suffix) {
        return false;
    }
    let mut rest = &label[prefix.len()..label.len() - suffix.len()];
    if first_star == last_star {
        return true;
    }
    for part in pat[first_star + 1..last_star].split(|&b| b == b'*') {
        // `**` is rejected at parse time, so parts are non-empty; be safe anyway.
        if part.is_empty() {
            continue;
        }
        match rest.windows(part.len()).position(|w| w == part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// The regex for a head, anchored at both ends. Name bytes need no escaping. With `one_label`,
/// a leftmost `*` label is one label like any other.
fn head_regex(head: &str, one_label: bool) -> String {
    let mut re = String::from("^");
    for (i, label) in head.split('.').enumerate() {
        if i > 0 {
            re.push_str(r"\.");
        }
        if i == 0 && label == "*" && !one_label {
            re.push_str(r"[^.]+(?:\.[^.]+)*");
        } else if label == "*" {
            re.push_str(r"[^.]+");
        } else {
            re.push_str(&label.replace('*', "[^.]*"));
        }
    }
    re.push('$');
    re
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(label_matches(b"*cdn", b"cdn"));
        assert!(label_matches(b"*cdn", b"site-cdn"));
        assert!(!label_matches(b"*cdn", b"cdnx"));
        assert!(label_matches(b"fe*", b"fe1"));
        assert!(label_matches(b"a*b*", b"axxbyy"));
        assert!(label_matches(b"a*b*", b"ab"));
        assert!(!label_matches(b"a*b*", b"axx"));
        assert!(label_matches(b"a*b*c", b"abc"));
        assert!(label_matches(b"a*b*c", b"a-b-b-c"));
        assert!(!label_matches(b"a*b*c", b"acb"));
        assert!(!label_matches(b"a*a", b"a"));
        assert!(label_matches(b"a*a", b"aa"));
        assert!(label_matches(b"*", b"x"));
    }

    #[test]
    fn heads() {
        assert!(head_matches(b"*cdn", b"site-cdn", false));
        assert!(!head_matches(b"*cdn", b"a.cdn", false));
        assert!(head_matches(b"*.*", b"a.b", false));
        assert!(head_matches(b"*.*", b"x.a.b", false));
        assert!(!head_matches(b"*.*", b"a", false));
        assert!(head_matches(b"api.*", b"api.eu", false));
        assert!(!head_matches(b"api.*", b"api.eu.west", false));
        assert!(!head_matches(b"api.*", b"eu", false));
        assert!(head_matches(b"*.a.*", b"x.y.a.b", false));
        assert!(!head_matches(b"*.a.*", b"a.b", false));
        // A one-label leftmost `*` (other labels unchanged).
        assert!(head_matches(b"*.*", b"a.b", true));
        assert!(!head_matches(b"*.*", b"x.a.b", true));
        assert!(!head_matches(b"*.*", b"a", true));
        assert!(head_matches(b"*.a.*", b"x.a.b", true));
        assert!(!head_matches(b"*.a.*", b"x.y.a.b", true));
        assert!(head_matches(b"*.fe*", b"x.fe1", true));
        assert!(!head_matches(b"*.fe*", b"y.x.fe1", true));
        // Only a whole leftmost `*` label is concerned.
        assert!(head_matches(b"*cdn", b"site-cdn", true));
        assert!(!head_matches(b"*cdn", b"a.cdn", true));
    }

    #[test]
    fn regex_translation_agrees_with_head_matching() {
        let pats = ["*cdn", "*.*", "api.*", "*.a.*", "a*b*", "fe*.x", "*-u", "*.fe*"];
        let hosts = [
            "cdn",
            "site-cdn",
            "a.cdn",
            "a.b",
            "x.a.b",
            "a",
            "api.eu",
            "api.eu.west",
            "x.y.a.b",
            "axxbyy",
            "fe1.x",
            "e-u",
            "-u",
            "x.fe1",
            "y.x.fe1",
        ];
        for p in pats {
            for one_label in [false, true] {
                let re = meta::Regex::builder()
                    .syntax(syntax::Config::new().unicode(false).utf8(false))
                    .build(&head_regex(p, one_label))
                    .unwrap();
                for h in hosts {
                    let want = head_matches(p.as_bytes(), h.as_bytes(), one_label);
                    assert_eq!(re.is_match(h.as_bytes()), want, "{p} {h} one_label={one_label}");
                }
            }
        }
    }
}
