use crate::error::BuildError;

/// A parsed, normalised pattern.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pattern {
    text: String,
}

/// How specific a pattern is: exact beats wildcard, then more literal bytes win.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Specificity {
    exact: bool,
    literal: u16,
}

impl Specificity {
    /// True for a pattern without any `*`.
    pub fn is_exact(self) -> bool { self.exact }
    /// The number of non-`*` bytes of the pattern.
    pub fn literal_len(self) -> usize { usize::from(self.literal) }
}

impl Pattern {
    /// Parses and normalises a pattern.
    pub fn new(pattern: &str) -> Result<Pattern, BuildError> { let _ = pattern; unimplemented!() }
    /// The normalised text (lowercase, punycode, no trailing dot; a leading dot is kept).
    pub fn as_str(&self) -> &str { &self.text }
    /// This pattern's specificity.
    pub fn specificity(&self) -> Specificity { unimplemented!() }
}
