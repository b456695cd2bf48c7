//! Builds a matcher from a few patterns and looks up a few hosts; checks every answer against
//! the naive reference matcher, not just "no panic".
//!
//! Invariants:
//! - `Pattern::new` never panics; when it succeeds its text is a fixed point of `Pattern::new`;
//! - `Pattern::one_label` (asked for some patterns) succeeds iff the text starts with `*.`, and
//!   such a pattern is added with `add_pattern` and checked as `<*>` by the reference;
//! - `build` succeeds iff every pattern parses, else it names the first bad pattern (as written);
//! - `Host::new` is idempotent; an invalid host is an error for `find` and `find_all` too;
//! - `find_all` equals the reference exactly (ids, specificities, order), so every hit is unique,
//!   sorted and really matches; `find` is its first hit; `best()` is its leading tie group; the
//!   `*_host` entry points agree with the `&str` ones.
#![no_main]

use arbitrary::Arbitrary;
use hostgate_matcher::{BuildErrorKind, Host, Matcher, MatcherBuilder, Matches, Pattern};
use hostgate_matcher_fuzz::reference::{self, Spec};
use libfuzzer_sys::fuzz_target;

/// Pieces that names are made of, so that random inputs often match: labels, wildcard forms,
/// separators, upper case, IDN and a few bytes that must be rejected.
const TOKENS: &[&str] = &[
    "a",
    "b",
    "ab",
    "cdn",
    "x-1",
    "_s",
    "-",
    "_",
    "0",
    "*",
    ".",
    ".",
    ".",
    "com",
    "net",
    "A",
    "B",
    "ü",
    "Ü",
    "xn--bcher-kva",
    "bücher",
    "*a",
    "a*",
    "a*b",
    "*-b",
    " ",
    "%",
    "**",
    "é",
];

#[derive(Arbitrary, Debug)]
enum Text {
    /// Any string.
    Raw(String),
    /// Tokens (one byte each).
    Tokens(Vec<u8>),
    /// Tokens under a fixed `.x.com` tail, so large buckets of one suffix appear.
    UnderX(Vec<u8>),
}

impl Text {
    fn render(&self) -> String {
        let tokens = |bytes: &[u8]| -> String {
            bytes.iter().take(64).map(|&b| TOKENS[usize::from(b) % TOKENS.len()]).collect()
        };
        match self {
            Text::Raw(s) => s.chars().take(300).collect(),
            Text::Tokens(b) => tokens(b),
            Text::UnderX(b) => format!("{}.x.com", tokens(b)),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    patterns: Vec<Text>,
    hosts: Vec<Text>,
    /// Which patterns (by position) to make one-label (`Pattern::one_label`) when they parse.
    one_label: Vec<bool>,
}

fn hits_of(matches: &Matches) -> Vec<(usize, Spec)> {
    matches
        .as_slice()
        .iter()
        .map(|h| {
            let s = h.specificity();
            (h.id().as_usize(), (s.is_exact(), s.literal_len()))
        })
        .collect()
}

fn check_host(matcher: &Matcher<usize>, normalised: &[String], host: &str, buf: &mut Matches) {
    let parsed = match Host::new(host) {
        Ok(h) => h,
        Err(_) => {
            assert!(matcher.find(host).is_err(), "find accepted invalid {host:?}");
            assert!(matcher.find_all(host, buf).is_err(), "find_all accepted invalid {host:?}");
            return;
        }
    };
    let norm = parsed.as_str();
    let again = Host::new(norm).map(|h| h.as_str().to_string());
    assert_eq!(again.as_deref(), Ok(norm), "Host::new not idempotent: {host:?}");

    let expected = reference::find_all(normalised, norm);
    matcher.find_all(host, buf).expect("valid host");
    assert_eq!(
        hits_of(buf),
        expected,
        "find_all disagrees with the reference\n  patterns: {normalised:?}\n  host: {norm:?}"
    );
    for hit in buf.as_slice() {
        assert_eq!(*matcher.value(hit.id()), hit.id().as_usize());
    }
    let top = expected.first().map(|h| h.1);
    let best: Vec<usize> = buf.best().iter().map(|h| h.id().as_usize()).collect();
    let want_best: Vec<usize> = expected.iter().take_while(|h| Some(h.1) == top).map(|h| h.0).collect();
    assert_eq!(best, want_best, "best() for {norm:?}");

    matcher.find_all_host(&parsed, buf);
    assert_eq!(hits_of(buf), expected, "find_all_host for {norm:?}");

    let first = expected.first().copied();
    let found = matcher.find(host).expect("valid host").map(|m| {
        assert_eq!(*m.value(), m.id().as_usize());
        let s = m.specificity();
        (m.id().as_usize(), (s.is_exact(), s.literal_len()))
    });
    assert_eq!(found, first, "find for {norm:?} (patterns {normalised:?})");
    let found_host = matcher.find_host(&parsed).map(|m| {
        let s = m.specificity();
        (m.id().as_usize(), (s.is_exact(), s.literal_len()))
    });
    assert_eq!(found_host, first, "find_host for {norm:?}");
}

fuzz_target!(|input: Input| {
    let patterns: Vec<String> = input.patterns.iter().take(64).map(Text::render).collect();
    let hosts: Vec<String> = input.hosts.iter().take(16).map(Text::render).collect();

    let mut normalised = Vec::new();
    let mut one_label: Vec<Option<Pattern>> = vec![None; patterns.len()];
    let mut first_bad = None;
    for (i, p) in patterns.iter().enumerate() {
        match Pattern::new(p) {
            Ok(parsed) => {
                let text = parsed.as_str();
                let again = Pattern::new(text).map(|q| q.as_str().to_string());
                assert_eq!(again.as_deref(), Ok(text), "Pattern::new not idempotent: {p:?}");
                if !input.one_label.get(i).copied().unwrap_or(false) {
                    normalised.push(text.to_string());
                    continue;
                }
                let leftmost_star = text.starts_with("*.");
                match parsed.clone().one_label() {
                    Ok(q) => {
                        assert!(leftmost_star, "one_label accepted {text:?}");
                        assert_eq!(q.as_str(), text, "one_label changed the text");
                        normalised.push(q.to_string());
                        one_label[i] = Some(q);
                    }
                    Err(e) => {
                        assert!(!leftmost_star, "one_label rejected {text:?}: {e}");
                        assert_eq!(e.kind(), &BuildErrorKind::OneLabelNeedsLeftmostStar);
                        normalised.push(text.to_string());
                    }
                }
            }
            Err(_) => {
                first_bad.get_or_insert(i);
            }
        }
    }

    let mut builder = MatcherBuilder::new();
    for (i, (p, one)) in patterns.iter().zip(one_label).enumerate() {
        match one {
            Some(q) => builder.add_pattern(q, i),
            None => builder.add(p, i),
        };
    }
    let matcher = match (builder.build(), first_bad) {
        (Ok(m), None) => m,
        (Err(e), Some(bad)) => {
            assert_eq!(e.pattern(), patterns[bad], "BuildError names the wrong pattern");
            if let Some(i) = e.index() {
                assert_eq!(i, bad, "BuildError has the wrong index");
            }
            return;
        }
        (Ok(_), Some(bad)) => panic!("build accepted invalid pattern {:?}", patterns[bad]),
        (Err(e), None) => panic!("build rejected valid patterns {patterns:?}: {e}"),
    };
    assert_eq!(matcher.len(), patterns.len());

    let mut buf = Matches::new();
    for host in &hosts {
        check_host(&matcher, &normalised, host, &mut buf);
    }
    // Hosts derived from the patterns themselves: the pattern text with each `*` (and a `<*>`)
    // dropped or replaced, which hits the glob and exact strategies far more often than random
    // text.
    for p in normalised.iter().take(16) {
        for fill in ["", "a", "q.a"] {
            let host = p.trim_start_matches('.').replace("<*>", "*").replace('*', fill);
            check_host(&matcher, &normalised, &host, &mut buf);
        }
    }
});
