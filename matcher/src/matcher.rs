//! The builder and the compiled matcher: splits patterns into their shapes, builds the probe
//! table and the glob buckets, and answers lookups.
//!
//! A lookup walks the host's labels once from the right, chaining label hashes into the key of
//! every label suffix, and probes the table with each key as it is computed (the probes do not
//! depend on each other, so the CPU overlaps their cache misses). The whole host is looked up among
//! exact names; each proper suffix among `*.suffix` rules and glob tails (a `*.suffix` rule whose
//! `*` is one label only where the suffix is the host minus its first label).

use std::collections::HashMap;

use crate::globs::{GlobEntry, Globs, DENSE};
use crate::pattern::Form;
use crate::table::{Entry, Kind, Table};
use crate::{hash, BuildError, BuildErrorKind, Host, InvalidHost, Pattern, Specificity};

/// Identifies a pattern: its position in the order of `add` calls, from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PatternId(u32);

impl PatternId {
    /// The position as an index.
    pub fn as_usize(self) -> usize {
        self.0 as usize
    }
}

/// Collects patterns with a value each, then compiles them into a [`Matcher`].
///
/// ```
/// use hostgate_matcher::MatcherBuilder;
/// let mut b = MatcherBuilder::new();
/// b.add("*.lync.com", "wildcard").add("login.live.com", "exact");
/// let m = b.build().unwrap();
/// assert_eq!(m.find("a.b.lync.com").unwrap().map(|m| *m.value()), Some("wildcard"));
/// assert!(m.find("lync.com").unwrap().is_none());
/// ```
#[derive(Debug)]
pub struct MatcherBuilder<V> {
    items: Vec<(Item, V)>,
    dense: usize,
}

#[derive(Debug)]
enum Item {
    Raw(String),
    Parsed(Pattern),
}

impl<V> Default for MatcherBuilder<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> MatcherBuilder<V> {
    /// An empty builder.
    pub fn new() -> Self {
        Self { items: Vec::new(), dense: DENSE }
    }

    /// Adds a pattern, parsed when [`build`](Self::build) runs. Its [`PatternId`] is the number of
    /// patterns added before it.
    pub fn add(&mut self, pattern: &str, value: V) -> &mut Self {
        self.items.push((Item::Raw(pattern.to_string()), value));
        self
    }

    /// Adds an already parsed pattern.
    pub fn add_pattern(&mut self, pattern: Pattern, value: V) -> &mut Self {
        self.items.push((Item::Parsed(pattern), value));
        self
    }

    /// The number of patterns added.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no pattern was added.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// How many glob patterns under one literal tail make that tail "dense" (compiled into one
    /// regex rather than tried one by one). The default suits real rule sets; tests lower it to
    /// exercise both strategies. At least 1.
    pub fn dense_threshold(&mut self, patterns: usize) -> &mut Self {
        self.dense = patterns.max(1);
        self
    }

    /// Parses and compiles every pattern.
    ///
    /// # Errors
    /// The first invalid pattern, as a [`BuildError`] with its index.
    pub fn build(self) -> Result<Matcher<V>, BuildError> {
        if self.items.len() >= u32::MAX as usize {
            return Err(BuildError { pattern: String::new(), index: None, kind: BuildErrorKind::TooManyPatterns });
        }
        let mut patterns = Vec::with_capacity(self.items.len());
        let mut values = Vec::with_capacity(self.items.len());
        for (index, (item, value)) in self.items.into_iter().enumerate() {
            let p = match item {
                Item::Parsed(p) => p,
                Item::Raw(s) => Pattern::from_string(s).map_err(|e| BuildError { index: Some(index), ..e })?,
            };
            patterns.push(p);
            values.push(value);
        }

        let mut scratch: Vec<String> = vec![String::new(); patterns.len()];
        let mut entries: Vec<Entry<'_>> = Vec::with_capacity(patterns.len());
        let mut globs: Vec<GlobEntry<'_>> = Vec::new();
        let mut tails: HashMap<&str, u32> = HashMap::new();
        let mut counts = Counts::default();
        for (id, (p, s)) in patterns.iter().zip(scratch.iter_mut()).enumerate() {
            let id = id as u32;
            let (a, b) = p.forms(s);
            for form in std::iter::once(a).chain(b) {
                match form {
                    Form::Exact(key) => {
                        counts.exact += 1;
                        entries.push(Entry { kind: Kind::Exact, key, id });
                    }
                    Form::Suffix(key) => {
                        counts.suffix += 1;
                        entries.push(Entry { kind: Kind::Suffix, key, id });
                    }
                    Form::OneLabel(key) => {
                        counts.suffix += 1;
                        entries.push(Entry { kind: Kind::OneLabel, key, id });
                    }
                    Form::Glob { head, tail, one_label } => {
                        counts.glob += 1;
                        let next = tails.len() as u32;
                        let bucket = *tails.entry(tail).or_insert_with(|| {
                            entries.push(Entry { kind: Kind::Tail, key: tail, id: next });
                            next
                        });
                        globs.push(GlobEntry { bucket, head, one_label, specificity: form.specificity(), id });
                    }
                }
            }
        }
        let table = Table::build(&entries);
        let (mut exact_labels, mut suffix_labels) = (0u64, 0u64);
        for e in &entries {
            let bit = label_bit(1 + e.key.bytes().filter(|&b| b == b'.').count());
            match e.kind {
                Kind::Exact => exact_labels |= bit,
                Kind::Suffix | Kind::OneLabel | Kind::Tail => suffix_labels |= bit,
            }
        }
        let globs = Globs::build(globs, tails.len(), self.dense).map_err(|e| BuildError {
            pattern: patterns[e.id as usize].as_str().to_string(),
            index: Some(e.id as usize),
            kind: BuildErrorKind::Regex(e.message),
        })?;
        drop(entries);
        counts.dense_buckets = globs.dense_buckets();
        Ok(Matcher { table, globs, values, counts, exact_labels, suffix_labels })
    }
}

/// How many compiled forms of each shape a matcher holds (a `.d` pattern counts twice).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Exact names.
    pub exact: usize,
    /// `*.suffix` rules (whose `*` is one or more labels, or exactly one).
    pub suffix: usize,
    /// Glob shapes (`*` inside a label, inner or repeated whole-label `*`).
    pub glob: usize,
    /// Literal tails with so many glob rules that they were compiled into one regex.
    pub dense_buckets: usize,
}

/// A compiled set of patterns. Immutable, `Send + Sync` when `V` is; share it behind an `Arc`.
#[derive(Debug)]
pub struct Matcher<V> {
    table: Table,
    globs: Globs,
    values: Vec<V>,
    counts: Counts,
    /// Bit k set when some exact key has k labels (bit 63: 63 or more); a lookup skips the
    /// probes that cannot hit.
    exact_labels: u64,
    /// The same for `*.suffix` keys and glob tails.
    suffix_labels: u64,
}

/// Label suffixes whose keys are computed, and whose buckets are touched, together.
const BATCH: usize = 8;

/// The bit of [`Matcher::exact_labels`] for a key of `labels` labels.
#[inline(always)]
fn label_bit(labels: usize) -> u64 {
    1 << labels.min(63)
}

/// A one-label `*.suffix` record (key length `key_len`, starting at `start` in `host`) hits when
/// the `*` is one label: the head before the suffix has no dot. Out of line and cold: only unset
/// placeholders make such rules, and inlined into [`Matcher::each_hit`] this arm cost the lookups
/// of every other rule about 2% more instructions (callgrind, the shipped rule set).
#[cold]
#[inline(never)]
fn one_label_hit(host: &Host, start: usize, key_len: usize, id: u32, hit: &mut impl FnMut(Specificity, u32)) {
    if host.dot_before(start - 1).is_none() {
        hit(Specificity::new(false, key_len + 1), id);
    }
}

/// The most specific match for a host.
#[derive(Debug)]
pub struct Match<'m, V> {
    value: &'m V,
    id: PatternId,
    specificity: Specificity,
}

impl<'m, V> Match<'m, V> {
    /// The value given with the pattern.
    pub fn value(&self) -> &'m V {
        self.value
    }
    /// Which pattern matched.
    pub fn id(&self) -> PatternId {
        self.id
    }
    /// How specific the match is.
    pub fn specificity(&self) -> Specificity {
        self.specificity
    }
}

/// One entry of [`Matches`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    id: PatternId,
    specificity: Specificity,
}

impl Hit {
    /// Which pattern matched.
    pub fn id(&self) -> PatternId {
        self.id
    }
    /// How specific the match is.
    pub fn specificity(&self) -> Specificity {
        self.specificity
    }
}

/// A reusable buffer for every match of a host, most specific first. Keep one per thread or per
/// connection: after the first few lookups, [`Matcher::find_all`] does not allocate.
#[derive(Clone, Debug, Default)]
pub struct Matches {
    hits: Vec<Hit>,
}

impl Matches {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }
    /// Every matching pattern once, by specificity (most specific first), ties in `add` order.
    pub fn as_slice(&self) -> &[Hit] {
        &self.hits
    }
    /// The leading hits that are tied for most specific (empty when nothing matched).
    pub fn best(&self) -> &[Hit] {
        let Some(first) = self.hits.first() else {
            return &[];
        };
        let n = self.hits.iter().take_while(|h| h.specificity == first.specificity).count();
        &self.hits[..n]
    }
    /// The number of matching patterns.
    pub fn len(&self) -> usize {
        self.hits.len()
    }
    /// Whether nothing matched.
    pub fn is_empty(&self) -> bool {
        self.hits.is_empty()
    }
    /// Iterates over the hits, most specific first.
    pub fn iter(&self) -> std::slice::Iter<'_, Hit> {
        self.hits.iter()
    }
}

impl<'a> IntoIterator for &'a Matches {
    type Item = &'a Hit;
    type IntoIter = std::slice::Iter<'a, Hit>;
    fn into_iter(self) -> Self::IntoIter {
        self.hits.iter()
    }
}

impl<V> Matcher<V> {
    /// The most specific match for `host`; among equally specific patterns, the first added.
    ///
    /// # Errors
    /// [`InvalidHost`] when `host` can never match anything (see [`Host`]).
    pub fn find(&self, host: &str) -> Result<Option<Match<'_, V>>, InvalidHost> {
        let mut h = Host::empty();
        h.set(host.as_bytes())?;
        Ok(self.find_host(&h))
    }

    /// The most specific match for a normalised host.
    pub fn find_host(&self, host: &Host) -> Option<Match<'_, V>> {
        let mut best: Option<(Specificity, u32)> = None;
        self.each_hit(host, |specificity, id| {
            let better = match best {
                None => true,
                Some((s, i)) => specificity > s || (specificity == s && id < i),
            };
            if better {
                best = Some((specificity, id));
            }
        });
        best.map(|(specificity, id)| Match { value: &self.values[id as usize], id: PatternId(id), specificity })
    }

    /// Every match for `host` into `out` (cleared first): each pattern once, most specific first,
    /// ties in `add` order.
    ///
    /// # Errors
    /// [`InvalidHost`] when `host` can never match anything; `out` is then empty.
    pub fn find_all(&self, host: &str, out: &mut Matches) -> Result<(), InvalidHost> {
        out.hits.clear();
        let mut h = Host::empty();
        h.set(host.as_bytes())?;
        self.find_all_host(&h, out);
        Ok(())
    }

    /// Every match for a normalised host into `out` (cleared first).
    pub fn find_all_host(&self, host: &Host, out: &mut Matches) {
        let hits = &mut out.hits;
        hits.clear();
        self.each_hit(host, |specificity, id| hits.push(Hit { id: PatternId(id), specificity }));
        if hits.len() > 1 {
            // A `.d` pattern with wildcards can match through both expansions: keep the best.
            hits.sort_unstable_by(|a, b| a.id.cmp(&b.id).then(b.specificity.cmp(&a.specificity)));
            hits.dedup_by_key(|h| h.id);
            hits.sort_unstable_by(|a, b| b.specificity.cmp(&a.specificity).then(a.id.cmp(&b.id)));
        }
    }

    /// Calls `hit` for every (form of a) pattern that matches `host`.
    ///
    /// In batches of up to [`BATCH`] label suffixes, from the right: first compute every key
    /// (chaining label hashes) and drop those that no key of that label count has or that the
    /// table's filter rules out, then touch the remaining home buckets in a tight loop so that
    /// their cache misses are in flight together, then probe. Probing one key at a time would serialise the
    /// misses: the work between two probes fills the CPU's reorder window.
    #[inline(always)]
    fn each_hit(&self, host: &Host, mut hit: impl FnMut(Specificity, u32)) {
        let s = host.as_bytes();
        let buf = host.padded();
        let mut h = hash::EMPTY;
        let mut end = s.len();
        let mut labels = 0;
        let mut more = true;
        while more {
            let mut keys = [0u64; BATCH];
            let mut starts = [0u8; BATCH];
            let mut n = 0;
            while n < BATCH {
                let start = host.dot_before(end).map_or(0, |d| d + 1);
                h = hash::push(h, hash::label_in(buf, start, end - start));
                labels += 1;
                let wanted = if start == 0 { self.exact_labels } else { self.suffix_labels };
                if wanted & label_bit(labels) != 0 && self.table.may_contain(h) {
                    keys[n] = h;
                    // A start offset is below MAX_NAME (253).
                    starts[n] = start as u8;
                    n += 1;
                }
                if start == 0 {
                    more = false;
                    break;
                }
                end = start - 1;
            }
            let mut touched = 0;
            for &k in &keys[..n] {
                touched ^= self.table.touch(k);
            }
            std::hint::black_box(touched);
            for (&k, &start) in keys[..n].iter().zip(&starts[..n]) {
                let start = usize::from(start);
                let key = &s[start..];
                if start == 0 {
                    self.table.probe(k, key, |kind, id| {
                        if kind == Kind::Exact {
                            hit(Specificity::new(true, key.len()), id);
                        }
                    });
                } else {
                    let head = &s[..start - 1];
                    self.table.probe(k, key, |kind, id| match kind {
                        Kind::Suffix => hit(Specificity::new(false, key.len() + 1), id),
                        Kind::Tail => self.globs.each_match(id, head, &mut hit),
                        Kind::OneLabel => one_label_hit(host, start, key.len(), id, &mut hit),
                        Kind::Exact => {}
                    });
                }
            }
        }
    }

    /// The value given with a pattern.
    ///
    /// # Panics
    /// When `id` does not come from this matcher.
    pub fn value(&self, id: PatternId) -> &V {
        &self.values[id.as_usize()]
    }

    /// The values in `add` order (index = [`PatternId::as_usize`]).
    pub fn values(&self) -> &[V] {
        &self.values
    }

    /// The number of patterns.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// How many compiled forms of each shape this matcher holds.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Heap bytes owned by the matcher: tables, key bytes, glob buckets and regexes, and the
    /// values' inline size (not memory the values themselves point to).
    pub fn heap_bytes(&self) -> usize {
        self.table.heap_bytes() + self.globs.heap_bytes() + self.values.capacity() * std::mem::size_of::<V>()
    }
}
