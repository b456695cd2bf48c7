//! A compiled wildcard-domain matcher: give it a million domain patterns (exact names,
//! `*.suffix`, `.domain`, and the odd glob shapes vendors document), then ask, at line rate, which
//! pattern is the most specific match for a host name.
//!
//! This is hostgate's matcher. It is pure: no I/O, no async runtime, no global state.
//!
//! # Overview
//! - [`MatcherBuilder`] collects patterns, each with a caller value (a rule id, say), and
//!   [`build`](MatcherBuilder::build)s an immutable [`Matcher`], or a [`BuildError`] quoting the
//!   first bad pattern.
//! - [`Matcher::find`] returns the most specific [`Match`]; [`Matcher::find_all`] fills a reusable
//!   [`Matches`] buffer with every match in specificity order, without allocating once warm, so
//!   that a caller can filter by other criteria (port, scheme, path) and fall back to the next.
//! - [`Host`] is a normalised host name; [`Pattern`] a normalised pattern. Both go through the same
//!   normalisation.
//!
//! ```
//! use hostgate_matcher::MatcherBuilder;
//!
//! let mut b = MatcherBuilder::new();
//! b.add("*.lync.com", 1).add("login.live.com", 2).add("*cdn.onenote.net", 3);
//! let m = b.build().unwrap();
//! assert_eq!(m.find("A.B.Lync.com.").unwrap().map(|m| *m.value()), Some(1));
//! assert_eq!(m.find("login.live.com").unwrap().map(|m| *m.value()), Some(2));
//! assert_eq!(m.find("site-cdn.onenote.net").unwrap().map(|m| *m.value()), Some(3));
//! assert!(m.find("lync.com").unwrap().is_none());
//! assert!(m.find("a..b").is_err()); // an invalid host is an error, not a miss
//! ```
//!
//! # Names
//! Hosts and patterns are compared as lowercase ASCII; one trailing dot is ignored; Unicode names
//! are converted to punycode A-labels (IDNA, UTS 46) on both sides. A host with an empty label, a
//! label over 63 bytes, a name over 253 bytes, or bytes outside `[a-z0-9-_.]` after conversion
//! never matches anything: lookups by `&str` return [`InvalidHost`].
//!
//! # Patterns
//!
//! | pattern | matches | does not match |
//! |---|---|---|
//! | `login.live.com` (exact) | `login.live.com`, `LOGIN.Live.COM.` | `x.login.live.com`, `login.live.com.evil.io` |
//! | `*.lync.com` (leftmost whole-label `*`) | `a.lync.com`, `a.b.lync.com` (one or more labels) | `lync.com`, `alync.com`, `lync.com.evil.io` |
//! | `.lync.com` (leading dot) | `lync.com` and everything `*.lync.com` matches | `alync.com` |
//! | `*cdn.onenote.net` (`*` inside a label) | `cdn.onenote.net`, `site-cdn.onenote.net` | `a.cdn.onenote.net`, `cdnx.onenote.net` |
//! | `*-umwatsonc.events.data.microsoft.com` | `eus-umwatsonc.events.data.microsoft.com` | `umwatsonc.events.data.microsoft.com`, `a.eus-umwatsonc.events.data.microsoft.com` |
//! | `*.*.onedrive.live.com` (a non-leftmost whole-label `*` is exactly one label) | `a.b.onedrive.live.com`, `x.a.b.onedrive.live.com` | `a.onedrive.live.com` |
//! | `api.*.example.com` | `api.eu.example.com` | `api.example.com`, `api.eu.west.example.com` |
//! | `fe*.example.com`, `a*b*.example.com` (several `*` in one label: glob within the label) | `fe1.example.com`, `axxbyy.example.com` | `fe1.x.example.com` |
//! | `<*>.onmicrosoft.com` (`*.onmicrosoft.com` made [`one_label`](Pattern::one_label): the leftmost `*` is exactly one label) | `contoso.onmicrosoft.com` | `a.b.onmicrosoft.com`, `onmicrosoft.com` |
//! | `<*>.*.onedrive.live.com` (one-label leftmost `*`, and an inner `*`) | `a.b.onedrive.live.com` | `x.a.b.onedrive.live.com`, `a.onedrive.live.com` |
//! | `<*>.fe*.example.com` (one-label leftmost `*` over a glob label) | `a.fe1.example.com` | `b.a.fe1.example.com`, `fe1.example.com` |
//!
//! A `*` inside a label matches any run of bytes within that label, possibly empty, never a dot.
//!
//! `<*>` is how [`Pattern`]'s `Display` writes a one-label leftmost `*`; it is not pattern text.
//! The text grammar has only the `*` of one or more labels at the left: a caller that knows the
//! leftmost label is a single name (an unset `<tenant>` placeholder, say) asks for the
//! one-label form with [`Pattern::one_label`], which takes a pattern whose leftmost label is
//! exactly `*` and that has no leading dot, and rejects any other.
//!
//! Rejected by [`Pattern::new`] and [`MatcherBuilder::build`] with a [`BuildError`] that quotes the
//! pattern: `*` alone, `**`, a wildcard in the rightmost (top-level) label (`mail.*`), empty labels
//! (`a..b`), over-long labels or names, characters that cannot appear in a host name after IDNA
//! conversion (including a `*` inside a non-ASCII label).
//!
//! # Specificity
//! An exact pattern beats every wildcard pattern; otherwise the pattern with more literal
//! (non-`*`) bytes, dots included, wins ([`Specificity`]). Equal specificity is a tie:
//! [`Matcher::find`] returns the first added, [`Matches::best`] returns all of them. A `.d`
//! pattern behaves as the two patterns `d` and `*.d`: it matches `d` with the specificity of an
//! exact pattern and anything below `d` with that of `*.d`. A one-label pattern counts the same
//! literal bytes as the pattern without the flag: `<*>.d` and `*.d` tie where both match (on a
//! name one label below `d`), and a caller that must pick one resolves the tie its own way (the
//! proxy's policy takes the strictest action).
//!
//! # How it is built
//! Patterns are compiled by shape. Exact names and `*.suffix` rules (the vast majority of real
//! allowlists) live in one flat, cache-line-bucketed hash table keyed by the name or suffix. The
//! rare shapes (a `*` inside a label, inner or repeated `*` labels) are filed under their literal
//! tail in the same table and matched label by label, or, where many share one tail, by one
//! multi-pattern regex-automata regex. A lookup hashes each label of the host once, chains the
//! label hashes from the right into the key of every label suffix, and probes the table with each:
//! a handful of independent memory accesses, about one cache miss of latency in all.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod globs;
mod hash;
mod host;
mod matcher;
mod nets;
mod pattern;
mod table;

pub use error::{BuildError, BuildErrorKind, InvalidHost, InvalidHostKind};
pub use host::Host;
pub use matcher::{Counts, Hit, Match, Matcher, MatcherBuilder, Matches, PatternId};
pub use nets::{NetHit, NetHits, NetId, NetTable, NetTableBuilder};
pub use pattern::{Pattern, Specificity};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matcher_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Matcher<u32>>();
        assert_send_sync::<std::sync::Arc<Matcher<String>>>();
        assert_send_sync::<Host>();
        assert_send_sync::<Matches>();
    }
}
