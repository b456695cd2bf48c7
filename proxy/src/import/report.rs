//! The import report's vocabulary: a [`Finding`] (where, what kind, what) and the [`Counts`] of
//! a page. Every step of the importer writes findings; this module owns only their types and how
//! they print, and imports nothing from the rest of the importer.

use std::fmt;

/// What a finding is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FindingKind {
    /// The front matter has no `ms.date`.
    MissingDate,
    /// The page includes another file whose endpoints it does not contain.
    Include,
    /// A table without an endpoint column was not read.
    SkippedTable,
    /// A table row was not read (an inbound rule).
    SkippedRow,
    /// A link in an endpoint column: a reference, not an endpoint.
    Link,
    /// A name broken across a line break, joined (and repaired).
    BrokenName,
    /// A Markdown escape mistake repaired.
    Escape,
    /// Upper-case letters in a host, lowercased.
    MixedCase,
    /// A bare trailing `/` dropped.
    TrailingSlash,
    /// A placeholder that needs a `[vars]` entry.
    Placeholder,
    /// A whole host that is a placeholder: written as a comment only.
    PlaceholderHost,
    /// A wildcard inside a label (`*cdn.onenote.net`), kept as written.
    PartialWildcard,
    /// A name listed again; emitted once.
    Duplicate,
    /// A name given "for example": not imported.
    Example,
    /// UDP or an IP address: not proxied, written as a comment only.
    NotProxied,
    /// An old location: written as a comment only.
    Superseded,
    /// A sentence of the page used as policy ("don't exclude ... from inspection").
    Policy,
    /// A name in prose, not taken.
    SkippedProse,
    /// Something in an endpoint position that is not a rule target.
    Invalid,
    /// An action other than the default, or a reason recorded next to a rule.
    Judgement,
    /// A domain whose owner the importer does not know: kept inspected.
    UnknownOwner,
    /// A port list written in its canonical form (sorted, runs merged into ranges).
    PortList,
    /// An address range with host bits set: written as its network.
    HostBits,
    /// Left out by a flag (an optional endpoint set with `--required-only`, IPv6 ranges with
    /// `--no-ipv6`).
    LeftOut,
    /// A field the importer does not know: ignored.
    IgnoredField,
}

impl FindingKind {
    /// The kind's name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingDate => "missing-date",
            Self::Include => "include",
            Self::SkippedTable => "skipped-table",
            Self::SkippedRow => "skipped-row",
            Self::Link => "link",
            Self::BrokenName => "broken-name",
            Self::Escape => "escape",
            Self::MixedCase => "mixed-case",
            Self::TrailingSlash => "trailing-slash",
            Self::Placeholder => "placeholder",
            Self::PlaceholderHost => "placeholder-host",
            Self::PartialWildcard => "partial-wildcard",
            Self::Duplicate => "duplicate",
            Self::Example => "example",
            Self::NotProxied => "not-proxied",
            Self::Superseded => "superseded",
            Self::Policy => "policy",
            Self::SkippedProse => "skipped-prose",
            Self::Invalid => "invalid",
            Self::Judgement => "judgement",
            Self::UnknownOwner => "unknown-owner",
            Self::PortList => "port-list",
            Self::HostBits => "host-bits",
            Self::LeftOut => "left-out",
            Self::IgnoredField => "ignored-field",
        }
    }
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of the import report: `source:line: kind: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The source name given to [`import_ms_learn`](super::import_ms_learn) or
    /// [`m365::import`](super::m365::import).
    pub source: String,
    /// 1-based line of the page (of the JSON document: where the endpoint set begins).
    pub line: usize,
    /// What it is about.
    pub kind: FindingKind,
    /// What was found, repaired or decided, in words.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}: {}", self.source, self.line, self.kind, self.message)
    }
}

/// How many entries of each kind a page produced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Rules with action `bypass` (written as bare lines under `default bypass`).
    pub bypass: usize,
    /// Rules written `allow`.
    pub allow: usize,
    /// Rules written `deny`.
    pub deny: usize,
    /// Names written only as comments (UDP, IP addresses, old locations, whole-host placeholders).
    pub comment_only: usize,
    /// Names listed again and dropped.
    pub duplicates: usize,
    /// Things in endpoint positions, or names in prose, not imported (examples, links, ...).
    pub skipped: usize,
}
