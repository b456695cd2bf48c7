use std::fmt;

/// Why a pattern was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildError {
    pub(crate) pattern: String,
    pub(crate) index: Option<usize>,
    pub(crate) kind: BuildErrorKind,
}

impl BuildError {
    /// The offending pattern, as the caller wrote it.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }
    /// The position of the pattern in the builder (the order of `add` calls), when known.
    pub fn index(&self) -> Option<usize> {
        self.index
    }
    /// What is wrong with it.
    pub fn kind(&self) -> &BuildErrorKind {
        &self.kind
    }
}

/// The kinds of [`BuildError`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildErrorKind {
    /// The pattern is empty (or only a dot).
    Empty,
    /// The pattern is `*` (or `.*`): it would match every name.
    LoneWildcard,
    /// A label contains `**`.
    DoubleWildcard,
    /// The rightmost (top-level) label contains a wildcard, e.g. `mail.*`.
    WildcardInTopLabel,
    /// Two dots in a row, or a leading/trailing dot where none is allowed.
    EmptyLabel,
    /// A label is longer than 63 bytes.
    LabelTooLong,
    /// The name is longer than 253 bytes.
    NameTooLong,
    /// A character that cannot appear in a host name after IDNA conversion.
    InvalidCharacter(char),
    /// The IDNA (UTS 46) conversion of a Unicode pattern failed.
    Idna,
    /// A `*` inside a label that is not ASCII (its punycode form would be meaningless).
    WildcardInIdnLabel,
    /// More patterns than the matcher can index (2^32 - 1).
    TooManyPatterns,
    /// The regex engine could not compile a dense bucket of glob patterns (its size limits).
    Regex(String),
    /// [`Pattern::one_label`](crate::Pattern::one_label) on a pattern whose leftmost label is not
    /// exactly `*`, or that has a leading dot.
    OneLabelNeedsLeftmostStar,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid pattern {:?}: {}", self.pattern, self.kind)
    }
}

impl fmt::Display for BuildErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("empty pattern"),
            Self::LoneWildcard => f.write_str("a lone `*` would match every name"),
            Self::DoubleWildcard => f.write_str("`**` is not allowed"),
            Self::WildcardInTopLabel => f.write_str("the top-level (rightmost) label cannot contain `*`"),
            Self::EmptyLabel => f.write_str("empty label (two dots in a row, or a stray dot)"),
            Self::LabelTooLong => f.write_str("a label is longer than 63 bytes"),
            Self::NameTooLong => f.write_str("the name is longer than 253 bytes"),
            Self::InvalidCharacter(c) => write!(f, "character {c:?} cannot appear in a host name"),
            Self::Idna => f.write_str("IDNA (UTS 46) conversion failed"),
            Self::WildcardInIdnLabel => f.write_str("`*` inside a non-ASCII label"),
            Self::TooManyPatterns => f.write_str("too many patterns (at most 2^32 - 1)"),
            Self::Regex(e) => write!(f, "the glob patterns under this pattern's suffix do not compile: {e}"),
            Self::OneLabelNeedsLeftmostStar => f.write_str(
                "only a leftmost label that is exactly `*` (and no leading dot) can stand for exactly one label",
            ),
        }
    }
}

impl std::error::Error for BuildError {}

/// A host name that can never match any pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidHost {
    pub(crate) kind: InvalidHostKind,
}

impl InvalidHost {
    pub(crate) fn new(kind: InvalidHostKind) -> Self {
        Self { kind }
    }
    /// Why the host is invalid.
    pub fn kind(&self) -> &InvalidHostKind {
        &self.kind
    }
}

/// The kinds of [`InvalidHost`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidHostKind {
    /// The name is empty (or only a dot).
    Empty,
    /// Two dots in a row, a leading dot, or more than one trailing dot.
    EmptyLabel,
    /// A label is longer than 63 bytes.
    LabelTooLong,
    /// The name is longer than 253 bytes.
    NameTooLong,
    /// A byte outside `[a-z0-9-_.]` (after lowercasing and IDNA conversion), at this offset.
    InvalidByte {
        /// The offending byte.
        byte: u8,
        /// Its offset in the input.
        offset: usize,
    },
    /// The bytes are not UTF-8, or the IDNA (UTS 46) conversion failed.
    Idna,
}

impl fmt::Display for InvalidHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            InvalidHostKind::Empty => f.write_str("invalid host: empty name"),
            InvalidHostKind::EmptyLabel => f.write_str("invalid host: empty label"),
            InvalidHostKind::LabelTooLong => f.write_str("invalid host: label longer than 63 bytes"),
            InvalidHostKind::NameTooLong => f.write_str("invalid host: name longer than 253 bytes"),
            InvalidHostKind::InvalidByte { byte, offset } => {
                write!(f, "invalid host: byte 0x{byte:02x} at offset {offset}")
            }
            InvalidHostKind::Idna => f.write_str("invalid host: IDNA conversion failed"),
        }
    }
}

impl std::error::Error for InvalidHost {}
