use crate::{BuildError, Host, InvalidHost, Pattern, Specificity};

/// Identifies a pattern: its position in the order of `add` calls (0-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PatternId(u32);
impl PatternId {
    /// As an index.
    pub fn as_usize(self) -> usize { self.0 as usize }
}

/// Collects patterns, then compiles them.
#[derive(Debug)]
pub struct MatcherBuilder<V> { items: Vec<(String, V)> }

impl<V> Default for MatcherBuilder<V> { fn default() -> Self { Self::new() } }

impl<V> MatcherBuilder<V> {
    /// An empty builder.
    pub fn new() -> Self { Self { items: Vec::new() } }
    /// Adds a pattern (parsed in `build`).
    pub fn add(&mut self, pattern: &str, value: V) -> &mut Self { self.items.push((pattern.to_string(), value)); self }
    /// Adds an already parsed pattern.
    pub fn add_pattern(&mut self, pattern: Pattern, value: V) -> &mut Self { self.items.push((pattern.as_str().to_string(), value)); self }
    /// Compiles.
    pub fn build(self) -> Result<Matcher<V>, BuildError> { unimplemented!() }
}

/// The compiled matcher.
#[derive(Debug)]
pub struct Matcher<V> { values: Vec<V> }

/// A match: the most specific pattern for a host.
#[derive(Debug)]
pub struct Match<'m, V> { value: &'m V, id: PatternId, specificity: Specificity }
impl<'m, V> Match<'m, V> {
    /// The caller's value.
    pub fn value(&self) -> &'m V { self.value }
    /// Which pattern.
    pub fn id(&self) -> PatternId { self.id }
    /// How specific.
    pub fn specificity(&self) -> Specificity { self.specificity }
}

/// One entry of [`Matches`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit { id: PatternId, specificity: Specificity }
impl Hit {
    /// Which pattern.
    pub fn id(&self) -> PatternId { self.id }
    /// How specific.
    pub fn specificity(&self) -> Specificity { self.specificity }
}

/// A reusable buffer of every match, most specific first.
#[derive(Clone, Debug, Default)]
pub struct Matches { hits: Vec<Hit> }
impl Matches {
    /// Empty.
    pub fn new() -> Self { Self::default() }
    /// All hits, most specific first; ties in `add` order.
    pub fn as_slice(&self) -> &[Hit] { &self.hits }
    /// The hits tied for most specific.
    pub fn best(&self) -> &[Hit] { unimplemented!() }
    /// Count.
    pub fn len(&self) -> usize { self.hits.len() }
    /// None?
    pub fn is_empty(&self) -> bool { self.hits.is_empty() }
}

impl<V> Matcher<V> {
    /// Most specific match for `host` (ties: the first added).
    pub fn find(&self, host: &str) -> Result<Option<Match<'_, V>>, InvalidHost> { let _ = host; unimplemented!() }
    /// Same for a normalised host.
    pub fn find_host(&self, host: &Host) -> Option<Match<'_, V>> { let _ = host; unimplemented!() }
    /// Every match into `out` (cleared first), most specific first.
    pub fn find_all(&self, host: &str, out: &mut Matches) -> Result<(), InvalidHost> { let _ = (host, out); unimplemented!() }
    /// Same for a normalised host.
    pub fn find_all_host(&self, host: &Host, out: &mut Matches) { let _ = (host, out); unimplemented!() }
    /// The value of a pattern.
    pub fn value(&self, id: PatternId) -> &V { &self.values[id.as_usize()] }
    /// Number of patterns.
    pub fn len(&self) -> usize { self.values.len() }
    /// No patterns?
    pub fn is_empty(&self) -> bool { self.values.is_empty() }
    /// Heap bytes owned by the matcher (tables, strings, values).
    pub fn heap_bytes(&self) -> usize { unimplemented!() }
}
