//! Per-rule hit counts and last-hit times: one pair of relaxed atomics per rule of a
//! generation's policy, indexed by [`RuleId`], counted once per access record that names the
//! rule (every connection or request it decided), and carried over a reload for the rules that
//! did not change.
//!
//! This module owns the counters and the carry-over. It does not decide what a hit is (that is
//! `crate::generation::Generation::emit`) nor show them (`super::json`, `super::page`).
//!
//! A hit costs one `fetch_add` and, at most once per millisecond and rule, one `store`: no
//! lock, no allocation. Last-hit times are Unix milliseconds (0: never), computed from the
//! record's `started` instant against a base taken when the counters were made, so counting
//! reads no clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::policy::{Policy, RuleId};

/// One rule's counters (on one cache line with its neighbours' at most).
#[derive(Debug, Default)]
struct Counter {
    hits: AtomicU64,
    last_ms: AtomicU64,
}

/// The hit counters of one policy's rules.
#[derive(Debug)]
pub struct RuleHits {
    counters: Box<[Counter]>,
    base: Instant,
    base_ms: u64,
}

/// One rule's counts as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hits {
    /// Access records that named the rule (carried over reloads that kept it).
    pub hits: u64,
    /// When the last of them started, in Unix milliseconds; `None`: never.
    pub last_ms: Option<u64>,
}

/// Unix milliseconds of `t` (0 before the epoch).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl RuleHits {
    /// Zeroed counters for `rules` rules.
    pub fn new(rules: usize) -> RuleHits {
        RuleHits {
            counters: (0..rules).map(|_| Counter::default()).collect(),
            base: Instant::now(),
            base_ms: unix_ms(SystemTime::now()),
        }
    }

    /// Counts a hit of `rule` by a connection or request that started at `at`. An id out of
    /// range (not expected: ids come from the same policy) is ignored.
    #[inline]
    pub fn record(&self, rule: RuleId, at: Instant) {
        let Some(c) = self.counters.get(rule.0 as usize) else { return };
        c.hits.fetch_add(1, Ordering::Relaxed);
        let ms = self.base_ms + u64::try_from(at.saturating_duration_since(self.base).as_millis()).unwrap_or(0);
        // Racing hits may store a slightly older time last; a millisecond either way is fine.
        if c.last_ms.load(Ordering::Relaxed) < ms {
            c.last_ms.store(ms, Ordering::Relaxed);
        }
    }

    /// The counts of `rule`.
    pub fn get(&self, rule: RuleId) -> Hits {
        match self.counters.get(rule.0 as usize) {
            Some(c) => {
                let last = c.last_ms.load(Ordering::Relaxed);
                Hits { hits: c.hits.load(Ordering::Relaxed), last_ms: (last != 0).then_some(last) }
            }
            None => Hits { hits: 0, last_ms: None },
        }
    }

    /// How many rules are counted.
    pub fn len(&self) -> usize {
        self.counters.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }

    /// Adds `old`'s counts (of `old_policy`'s rules) to the rules of `new_policy` that did not
    /// change: the same file, action and target text, as the reload report compares rules (`reload.rs`).
    /// Repeated identical lines pair up in file order. Returns how many rules were carried.
    /// Runs in time proportional to the rule count (two sorts): call it off the runtime.
    pub fn carry(&self, new_policy: &Policy, old: &RuleHits, old_policy: &Policy) -> usize {
        let mut carried = 0;
        for (o, n) in unchanged(old_policy, new_policy) {
            let (Some(from), Some(to)) = (old.counters.get(o), self.counters.get(n)) else { continue };
            let hits = from.hits.load(Ordering::Relaxed);
            if hits == 0 {
                continue;
            }
            to.hits.fetch_add(hits, Ordering::Relaxed);
            to.last_ms.fetch_max(from.last_ms.load(Ordering::Relaxed), Ordering::Relaxed);
            carried += 1;
        }
        carried
    }
}

/// Pairs of rule indices (old, new) whose file, action and target are the same. Like
/// `crate::reload::rule_changes`, each rule is reduced to a 64-bit hash and the two sorted
/// lists are merged, so a million rules need no map of owned strings.
fn unchanged(old: &Policy, new: &Policy) -> Vec<(usize, usize)> {
    use std::hash::BuildHasher;
    let state = std::collections::hash_map::RandomState::new();
    let keys = |p: &Policy| -> Vec<(u64, usize)> {
        let mut v: Vec<(u64, usize)> = p
            .rules()
            .iter()
            .enumerate()
            .map(|(i, r)| (state.hash_one((&*r.origin.file, r.action as u8, r.target.as_str())), i))
            .collect();
        v.sort_unstable();
        v
    };
    let (a, b) = (keys(old), keys(new));
    let mut out = Vec::with_capacity(a.len().min(b.len()));
    let (mut i, mut j) = (0, 0);
    while let (Some(x), Some(y)) = (a.get(i), b.get(j)) {
        match x.0.cmp(&y.0) {
            std::cmp::Ordering::Equal => {
                out.push((x.1, y.1));
                i += 1;
                j += 1;
            }
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{parse_rules, Action};
    use std::time::Duration;

    fn policy(text: &str) -> Policy {
        let rules = parse_rules("x.rules", text, None, &Default::default()).unwrap_or_else(|e| panic!("{e:?}"));
        Policy::compile(rules, Action::Deny, &[std::sync::Arc::from("x.rules")]).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn counts_and_last_hit() {
        let h = RuleHits::new(2);
        assert_eq!(h.get(RuleId(0)), Hits { hits: 0, last_ms: None });
        let later = h.base + Duration::from_millis(1500);
        h.record(RuleId(0), h.base);
        h.record(RuleId(0), later);
        h.record(RuleId(0), h.base);
        h.record(RuleId(7), later);
        assert_eq!(h.get(RuleId(0)), Hits { hits: 3, last_ms: Some(h.base_ms + 1500) });
        assert_eq!(h.get(RuleId(1)).hits, 0);
        assert_eq!(h.get(RuleId(7)).hits, 0);
    }

    #[test]
    fn carry_keeps_unchanged_rules_and_resets_changed_ones() {
        let old = policy("allow a.test\ndeny b.test\nallow c.test\nallow c.test\n");
        // a.test moved down a line (same text: kept), b.test changed action, one c.test went.
        let new = policy("# moved\nallow a.test\nallow b.test\nallow c.test\n");
        let (oh, nh) = (RuleHits::new(4), RuleHits::new(4));
        for (rule, n) in [(0, 5), (1, 2), (2, 1), (3, 4)] {
            for _ in 0..n {
                oh.record(RuleId(rule), oh.base);
            }
        }
        nh.record(RuleId(0), nh.base);
        let carried = nh.carry(&new, &oh, &old);
        assert_eq!(carried, 2);
        assert_eq!(nh.get(RuleId(0)).hits, 6, "a.test: 5 carried + 1 new");
        assert_eq!(nh.get(RuleId(1)).hits, 0, "b.test changed action: reset");
        // The two old c.test lines pair with the one new line in file order: the first is carried.
        assert_eq!(nh.get(RuleId(2)).hits, 1);
    }
}
