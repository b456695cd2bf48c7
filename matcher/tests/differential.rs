//! Differential test: the compiled matcher against a naive reference matcher written straight
//! from the matching contract (the semantics table in the crate docs, `src/lib.rs`).
//!
//! The reference uses the crate only to *normalise* (`Pattern::new(..).to_string()`,
//! `Host::new(..).as_str()`); the matching itself is a label-by-label recursion:
//!
//! - leftmost whole `*`: one or more host labels;
//! - leftmost `<*>` (a `*` made `Pattern::one_label`): exactly one host label;
//! - any other whole `*`: exactly one host label;
//! - glob label (`*` plus literal bytes): exactly one host label, each `*` = zero or more bytes;
//! - `.P`: the better of `P` and `*.P`;
//! - specificity: (no `*` at all, number of non-`*` bytes of the expansion that matched).
//!
//! Results are sorted by specificity descending, then by add order.
//!
//! Pattern strings in this file write a one-label leftmost `*` as `<*>`, as `Pattern`'s `Display`
//! does: [`parse`] turns `<*>.rest` into `Pattern::new("*.rest")?.one_label()?`, and such a
//! pattern always reaches the builder through `add_pattern` (there is no text for it).
//!
//! Each random pattern set is compiled with the default strategy choice and with the glob buckets
//! forced one way or the other (`MatcherBuilder::dense_threshold`), and all of them must agree.
//! Cases: 2000 per property (500 for the ones that compile every bucket to a regex);
//! `PROPTEST_CASES=N cargo test -p hostgate-matcher --test differential` runs N for each.

// Tests may unwrap: a panic is a test failure with a useful message.
#![allow(clippy::unwrap_used)]

use hostgate_matcher::{BuildError, Host, Matcher, MatcherBuilder, Matches, Pattern};
use proptest::prelude::*;

/// The naive reference matcher, shared with the fuzz targets (`fuzz/src/reference.rs`), so that
/// one reading of the contract is checked by both.
// `ascii_host_oracle` is for the fuzz target only; `pub` items are the fuzz crate's API.
#[allow(dead_code, unreachable_pub)]
#[path = "../../fuzz/src/reference.rs"]
mod reference;

use reference::Spec;

/// Parses a pattern string of this file: `<*>.rest` is `*.rest` made one-label.
fn parse(p: &str) -> Result<Pattern, BuildError> {
    match p.strip_prefix("<*>") {
        Some(rest) => Pattern::new(&format!("*{rest}"))?.one_label(),
        None => Pattern::new(p),
    }
}

/// Normalised pattern texts, in the reference's notation (`Display`: `<*>` for a one-label
/// leftmost `*`). Panics with the pattern if one is rejected.
fn normalise_patterns(patterns: &[String]) -> Vec<String> {
    patterns
        .iter()
        .map(|p| match parse(p) {
            Ok(parsed) => parsed.to_string(),
            Err(e) => panic!("pattern {p:?} should be valid: {e}"),
        })
        .collect()
}

/// Builds a matcher whose value for each pattern is its add position. `via_pattern[i]` picks
/// `add_pattern` instead of `add` for pattern `i` (cycled; a `<*>` pattern always goes through
/// `add_pattern`); `dense` overrides the number of glob patterns under one literal tail from
/// which that tail is compiled into one regex.
fn build_with(patterns: &[String], via_pattern: &[bool], dense: Option<usize>) -> Result<Matcher<usize>, BuildError> {
    let mut builder = MatcherBuilder::new();
    if let Some(threshold) = dense {
        builder.dense_threshold(threshold);
    }
    for (i, p) in patterns.iter().enumerate() {
        let parsed = via_pattern.get(i % via_pattern.len().max(1)).copied().unwrap_or(false);
        if parsed || p.starts_with("<*>") {
            // Only valid patterns come through here: add_pattern takes a parsed pattern.
            builder.add_pattern(parse(p)?, i);
        } else {
            builder.add(p, i);
        }
    }
    builder.build()
}

/// With the default strategy choice.
fn build(patterns: &[String], via_pattern: &[bool]) -> Result<Matcher<usize>, BuildError> {
    build_with(patterns, via_pattern, None)
}

/// Dense thresholds: the default choice, and no glob bucket ever compiled to a regex.
const DEFAULT_AND_NEVER: &[Option<usize>] = &[None, Some(usize::MAX)];
/// Every glob bucket compiled to a regex (slow to build in a debug build, so run on fewer cases).
const ALWAYS: &[Option<usize>] = &[Some(1)];
/// All three.
const ALL_CHOICES: &[Option<usize>] = &[None, Some(1), Some(usize::MAX)];

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

/// Compares every lookup entry point against the reference for one (valid) host.
fn check_host(
    matcher: &Matcher<usize>,
    normalised: &[String],
    host: &str,
    buf: &mut Matches,
) -> Result<(), TestCaseError> {
    let parsed = match Host::new(host) {
        Ok(h) => h,
        Err(e) => return Err(TestCaseError::fail(format!("host {host:?} should be valid: {e}"))),
    };
    let norm = parsed.as_str();
    // Normalisation is idempotent.
    let again = Host::new(norm).map(|h| h.as_str().to_string());
    prop_assert_eq!(again.as_deref(), Ok(norm), "Host::new not idempotent for {:?}", host);

    let expected = reference::find_all(normalised, norm);

    // find_all (string and Host entry points).
    matcher.find_all(host, buf).unwrap();
    let actual = hits_of(buf);
    prop_assert_eq!(
        &actual,
        &expected,
        "find_all disagrees\n  patterns: {:?}\n  host: {:?} (normalised {:?})",
        normalised,
        host,
        norm
    );
    // best(): the leading tie group.
    let top = expected.first().map(|h| h.1);
    let best: Vec<usize> = buf.best().iter().map(|h| h.id().as_usize()).collect();
    let expected_best: Vec<usize> = expected.iter().take_while(|h| Some(h.1) == top).map(|h| h.0).collect();
    prop_assert_eq!(&best, &expected_best, "best() for host {:?}", host);
    prop_assert_eq!(buf.len(), expected.len());
    prop_assert_eq!(buf.is_empty(), expected.is_empty());
    for hit in buf.as_slice() {
        prop_assert_eq!(*matcher.value(hit.id()), hit.id().as_usize());
    }

    matcher.find_all_host(&parsed, buf);
    prop_assert_eq!(&hits_of(buf), &expected, "find_all_host for host {:?}", host);

    // find / find_host: the first element.
    let first = expected.first().copied();
    let found = matcher.find(host).unwrap().map(|m| {
        let s = m.specificity();
        prop_assert_eq!(*m.value(), m.id().as_usize(), "value of {:?}", m.id());
        Ok((m.id().as_usize(), (s.is_exact(), s.literal_len())))
    });
    let found = found.transpose()?;
    prop_assert_eq!(found, first, "find disagrees\n  patterns: {:?}\n  host: {:?}", normalised, norm);
    let found_host = matcher.find_host(&parsed).map(|m| {
        let s = m.specificity();
        (m.id().as_usize(), (s.is_exact(), s.literal_len()))
    });
    prop_assert_eq!(found_host, first, "find_host for host {:?}", host);
    Ok(())
}

/// Runs the whole comparison for one pattern set and host list, once per dense threshold.
fn check_all(
    patterns: &[String],
    via_pattern: &[bool],
    hosts: &[String],
    dense_choices: &[Option<usize>],
) -> Result<(), TestCaseError> {
    let normalised = normalise_patterns(patterns);
    let mut buf = Matches::new();
    for &dense in dense_choices {
        let matcher = match build_with(patterns, via_pattern, dense) {
            Ok(m) => m,
            Err(e) => return Err(TestCaseError::fail(format!("build failed: {e}"))),
        };
        prop_assert_eq!(matcher.len(), patterns.len());
        for host in hosts {
            check_host(&matcher, &normalised, host, &mut buf)
                .map_err(|e| TestCaseError::fail(format!("dense threshold {dense:?}: {e}")))?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Generators.

const LITERAL_LABELS: &[&str] = &["a", "b", "ab", "cdn", "x-1", "_s"];
const WILDCARD_LABELS: &[&str] = &["*", "*a", "a*", "a*b", "*-b"];
const TOP_LABELS: &[&str] = &["com", "net", "a"];
/// Host labels: the literal ones plus strings that the glob labels match (and nearly match).
const HOST_LABELS: &[&str] =
    &["a", "b", "ab", "cdn", "x-1", "_s", "aab", "acb", "a-b", "-b", "ba", "x", "aa", "bb", "cdnb"];
/// What a glob `*` is replaced with when deriving a host from a pattern.
const FILLERS: &[&str] = &["", "a", "b", "-", "x1", "ab", "_"];

fn pick<'a>(table: &[&'a str], byte: u8) -> &'a str {
    table[usize::from(byte) % table.len()]
}

/// One pattern label: mostly literal, often wildcard.
fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(LITERAL_LABELS).prop_map(str::to_string),
        2 => prop::sample::select(WILDCARD_LABELS).prop_map(str::to_string),
    ]
}

/// A pattern: 0-4 labels above a literal top label (the given tails, or {com, net, a}), an
/// optional leading dot, sometimes uppercase, sometimes with a trailing dot; without a leading
/// dot, sometimes with a one-label leftmost `*` (`<*>`).
fn pattern_with_tail(tails: &'static [&'static str]) -> impl Strategy<Value = String> {
    (
        prop::collection::vec(label(), 0..=4),
        prop::sample::select(tails),
        prop::bool::weighted(0.25),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(mut labels, top, dot, upper, trailing, one_label)| {
            let mut p = String::new();
            if dot {
                p.push('.');
            } else if one_label && !labels.is_empty() {
                labels[0] = "<*>".to_string();
            }
            for l in labels {
                p.push_str(&l);
                p.push('.');
            }
            p.push_str(top);
            if trailing {
                p.push('.');
            }
            if upper {
                p = p.to_ascii_uppercase();
            }
            p
        })
}

fn random_host() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(HOST_LABELS), 0..=5),
        prop::sample::select(TOP_LABELS),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(labels, top, trailing)| {
            let mut h: String = labels.iter().map(|l| format!("{l}.")).collect();
            h.push_str(top);
            if trailing {
                h.push('.');
            }
            h
        })
}

/// A host derived from `pattern` by substituting its wildcards with bytes from `seed`, then
/// sometimes mutated into a near miss (one label more, one less, or one replaced).
fn derive_host(pattern: &str, seed: &[u8]) -> String {
    let mut bytes = seed.iter().copied().chain(std::iter::repeat(0));
    let mut next = move || bytes.next().unwrap_or(0);
    let (body, dotted) = match pattern.strip_prefix('.') {
        Some(rest) => (rest, true),
        None => (pattern, false),
    };
    let (body, trailing) = match body.strip_suffix('.') {
        Some(rest) => (rest, true),
        None => (body, false),
    };
    let mut labels: Vec<String> = Vec::new();
    if dotted && next() % 2 == 0 {
        for _ in 0..=(next() % 2) {
            labels.push(pick(HOST_LABELS, next()).to_string());
        }
    }
    for (i, l) in body.split('.').enumerate() {
        if l == "<*>" {
            // One label, sometimes two (a near miss).
            for _ in 0..(1 + u8::from(next() % 4 == 0)) {
                labels.push(pick(HOST_LABELS, next()).to_string());
            }
        } else if l == "*" {
            let count = if i == 0 { 1 + next() % 3 } else { 1 };
            for _ in 0..count {
                labels.push(pick(HOST_LABELS, next()).to_string());
            }
        } else if l.contains('*') {
            let mut out = String::new();
            for c in l.chars() {
                if c == '*' {
                    out.push_str(pick(FILLERS, next()));
                } else {
                    out.push(c);
                }
            }
            labels.push(out);
        } else {
            labels.push(l.to_string());
        }
    }
    match next() % 8 {
        0 => labels.insert(0, pick(HOST_LABELS, next()).to_string()),
        1 if labels.len() > 1 => {
            labels.remove(0);
        }
        2 => {
            let at = usize::from(next()) % labels.len();
            labels[at] = pick(HOST_LABELS, next()).to_string();
        }
        _ => {}
    }
    let mut host = labels.join(".");
    if trailing {
        host.push('.');
    }
    host
}

/// A pattern set, which of them go through `add_pattern`, and hosts (random + derived).
fn case(
    tails: &'static [&'static str],
    count: std::ops::Range<usize>,
) -> impl Strategy<Value = (Vec<String>, Vec<bool>, Vec<String>)> {
    (
        prop::collection::vec(pattern_with_tail(tails), count),
        prop::collection::vec(any::<bool>(), 1..8),
        prop::collection::vec(random_host(), 0..12),
        prop::collection::vec((any::<prop::sample::Index>(), prop::collection::vec(any::<u8>(), 0..12)), 1..24),
    )
        .prop_map(|(patterns, via, mut hosts, derived)| {
            for (index, seed) in derived {
                let p = index.get(&patterns);
                hosts.push(derive_host(p, &seed));
            }
            (patterns, via, hosts)
        })
}

/// Random cases per property. `PROPTEST_CASES=N` in the environment replaces every count in this
/// file (proptest applies it at run time over the configured one).
const CASES: u32 = 2000;
/// For the properties that compile every glob bucket to a regex: slow to build in a debug build.
const REGEX_CASES: u32 = CASES / 4;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Mixed tails: patterns spread over {com, net, a}.
    #[test]
    fn differential_mixed((patterns, via, hosts) in case(TOP_LABELS, 1..60)) {
        check_all(&patterns, &via, &hosts, DEFAULT_AND_NEVER)?;
    }

    /// A set where some patterns are invalid is rejected with the first invalid one.
    #[test]
    fn build_rejects_first_invalid_pattern(
        (patterns, _via, _hosts) in case(TOP_LABELS, 1..20),
        bad in prop::collection::vec(
            (any::<prop::sample::Index>(), prop::sample::select(BAD_PATTERNS)),
            1..4,
        ),
    ) {
        let mut all = patterns.clone();
        for (at, b) in bad {
            let at = at.index(all.len() + 1);
            all.insert(at, b.to_string());
        }
        let first_bad = all.iter().position(|p| parse(p).is_err());
        prop_assert!(first_bad.is_some(), "no pattern of {:?} is rejected", all);
        let first_bad = first_bad.unwrap();
        // All through `add` so the raw text reaches `build`.
        match build(&all, &[false]) {
            Ok(_) => prop_assert!(false, "build accepted {:?}", all),
            Err(e) => {
                prop_assert_eq!(e.pattern(), all[first_bad].as_str(), "{:?}", all);
                if let Some(i) = e.index() {
                    prop_assert_eq!(i, first_bad);
                }
            }
        }
        // The valid prefix builds.
        prop_assert!(build(&all[..first_bad], &[false]).is_ok());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(REGEX_CASES))]

    /// Mixed tails, every glob bucket compiled to a regex.
    #[test]
    fn differential_mixed_all_regex((patterns, via, hosts) in case(TOP_LABELS, 1..60)) {
        check_all(&patterns, &via, &hosts, ALWAYS)?;
    }

    /// Dense bucket: 40-90 patterns over one `x.com` tail, so that the default choice often
    /// compiles a bucket to a regex too; every case also runs with both forced choices.
    #[test]
    fn differential_dense_bucket((patterns, via, hosts) in case(&["x.com"], 40..90)) {
        check_all(&patterns, &via, &hosts, ALL_CHOICES)?;
    }
}

/// Patterns the contract rejects at build.
const BAD_PATTERNS: &[&str] = &[
    "*",
    ".*",
    "*.",
    "",
    ".",
    "**.a.com",
    "a.**.com",
    "a**.com",
    "a*b**.com",
    "mail.*",
    "a.b*",
    "*.*",
    "a..b.com",
    "..a.com",
    "a.com..",
    "a b.com",
    "a/b.com",
    "a:b.com",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com",
];

// ---------------------------------------------------------------------------------------------
// Deterministic cases.

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Runs `check_all` and turns a failure into a panic with its message.
fn run(patterns: &[String], hosts: &[String]) {
    if let Err(e) = check_all(patterns, &[false, true], hosts, ALL_CHOICES) {
        panic!("{e}");
    }
}

/// Expected hits (id, exact, literal) for one host, plus the differential check.
fn expect(patterns: &[&str], host: &str, expected: &[(usize, bool, usize)]) {
    let patterns = strings(patterns);
    let normalised = normalise_patterns(&patterns);
    let want: Vec<(usize, Spec)> = expected.iter().map(|&(i, e, l)| (i, (e, l))).collect();
    assert_eq!(
        reference::find_all(&normalised, Host::new(host).unwrap().as_str()),
        want,
        "the reference itself, host {host:?}"
    );
    run(&patterns, &[host.to_string()]);
}

#[test]
fn reference_glob() {
    assert!(reference::glob(b"a*b*", b"axxbyy"));
    assert!(reference::glob(b"a*b*", b"ab"));
    assert!(!reference::glob(b"a*b*", b"xab"));
    assert!(reference::glob(b"*cdn", b"cdn"));
    assert!(!reference::glob(b"*cdn", b"cdnx"));
    assert!(reference::glob(b"*", b""));
    assert!(!reference::glob(b"a", b""));
    assert!(reference::glob(b"*-b", b"-b"));
}

#[test]
fn contract_table_rows() {
    let rows: &[(&str, &[&str], &[&str])] = &[
        ("login.live.com", &["login.live.com", "LOGIN.Live.COM."], &["x.login.live.com", "login.live.com.evil.io"]),
        ("*.lync.com", &["a.lync.com", "a.b.lync.com"], &["lync.com", "alync.com", "lync.com.evil.io"]),
        (".lync.com", &["lync.com", "a.lync.com", "a.b.lync.com"], &["alync.com"]),
        ("*cdn.onenote.net", &["cdn.onenote.net", "site-cdn.onenote.net"], &["a.cdn.onenote.net", "cdnx.onenote.net"]),
        (
            "*-umwatsonc.events.data.microsoft.com",
            &["eus-umwatsonc.events.data.microsoft.com"],
            &["umwatsonc.events.data.microsoft.com", "a.eus-umwatsonc.events.data.microsoft.com"],
        ),
        ("*.*.onedrive.live.com", &["a.b.onedrive.live.com", "x.a.b.onedrive.live.com"], &["a.onedrive.live.com"]),
        ("api.*.example.com", &["api.eu.example.com"], &["api.example.com", "api.eu.west.example.com"]),
        ("fe*.example.com", &["fe1.example.com", "fe.example.com"], &["fe1.x.example.com"]),
        ("a*b*.example.com", &["axxbyy.example.com", "ab.example.com"], &["fe1.x.example.com"]),
        ("<*>.onmicrosoft.com", &["contoso.onmicrosoft.com"], &["a.b.onmicrosoft.com", "onmicrosoft.com"]),
        ("<*>.*.onedrive.live.com", &["a.b.onedrive.live.com"], &["x.a.b.onedrive.live.com", "a.onedrive.live.com"]),
        ("<*>.fe*.example.com", &["a.fe1.example.com"], &["b.a.fe1.example.com", "fe1.example.com"]),
    ];
    for &(pattern, yes, no) in rows {
        let normalised = normalise_patterns(&strings(&[pattern]));
        for &h in yes {
            let h_norm = Host::new(h).unwrap();
            assert!(
                reference::match_pattern(&normalised[0], h_norm.as_str()).is_some(),
                "reference: {pattern} should match {h}"
            );
        }
        for &h in no {
            let h_norm = Host::new(h).unwrap();
            assert!(
                reference::match_pattern(&normalised[0], h_norm.as_str()).is_none(),
                "reference: {pattern} should not match {h}"
            );
        }
        let hosts: Vec<String> = yes.iter().chain(no).map(|s| s.to_string()).collect();
        run(&[pattern.to_string()], &hosts);
    }
}

#[test]
fn specificity_examples() {
    expect(&["*.lync.com"], "a.lync.com", &[(0, false, 9)]);
    expect(&[".lync.com"], "lync.com", &[(0, true, 8)]);
    expect(&[".lync.com"], "a.lync.com", &[(0, false, 9)]);
    // Exact beats any wildcard, even one with more literal bytes.
    expect(&["*.bbbbbbbbbbbb.com", "a.bbbbbbbbbbbb.com"], "a.bbbbbbbbbbbb.com", &[(1, true, 18), (0, false, 17)]);
}

#[test]
fn duplicate_patterns_tie_in_add_order() {
    expect(
        &["*.x.com", "a.x.com", "*.x.com", "a.x.com", "*.X.com."],
        "a.x.com",
        &[(1, true, 7), (3, true, 7), (0, false, 6), (2, false, 6), (4, false, 6)],
    );
    // A different pattern of the same specificity also ties (a*.x.com and *a.x.com: 7 bytes).
    expect(&["*a.x.com", "a*.x.com", "*.x.com"], "aa.x.com", &[(0, false, 7), (1, false, 7), (2, false, 6)]);
}

#[test]
fn leading_dot_with_star_and_exact() {
    let patterns = &[".d.com", "*.d.com", "d.com"];
    expect(patterns, "d.com", &[(0, true, 5), (2, true, 5)]);
    expect(patterns, "a.d.com", &[(0, false, 6), (1, false, 6)]);
    expect(patterns, "a.b.d.com", &[(0, false, 6), (1, false, 6)]);
    expect(patterns, "ad.com", &[]);
    // Reversed add order changes the tie order only.
    let patterns = &["d.com", "*.d.com", ".d.com"];
    expect(patterns, "d.com", &[(0, true, 5), (2, true, 5)]);
    expect(patterns, "a.d.com", &[(1, false, 6), (2, false, 6)]);
}

#[test]
fn leading_dot_over_a_wildcard_pattern() {
    // `.*.x.com` = `*.x.com` (6) and `*.*.x.com` (7).
    let patterns = &[".*.x.com"];
    expect(patterns, "a.x.com", &[(0, false, 6)]);
    expect(patterns, "a.b.x.com", &[(0, false, 7)]);
    expect(patterns, "x.com", &[]);
    // `.a*.x.com` = `a*.x.com` (7) and `*.a*.x.com` (8).
    let patterns = &[".a*.x.com"];
    expect(patterns, "ab.x.com", &[(0, false, 7)]);
    expect(patterns, "q.ab.x.com", &[(0, false, 8)]);
    expect(patterns, "q.b.x.com", &[]);
}

#[test]
fn star_star_suffix() {
    let patterns = &["*.*.x.com", "*.x.com", "a.*.x.com"];
    expect(patterns, "a.x.com", &[(1, false, 6)]);
    expect(patterns, "a.b.x.com", &[(2, false, 8), (0, false, 7), (1, false, 6)]);
    expect(patterns, "b.a.x.com", &[(0, false, 7), (1, false, 6)]);
    expect(patterns, "q.b.a.x.com", &[(0, false, 7), (1, false, 6)]);
    expect(patterns, "x.com", &[]);
}

#[test]
fn multi_glob_label() {
    let patterns = &["a*b*.x.com", "*b.x.com", "a*.x.com"];
    expect(patterns, "axxbyy.x.com", &[(0, false, 8), (2, false, 7)]);
    expect(patterns, "ab.x.com", &[(0, false, 8), (1, false, 7), (2, false, 7)]);
    expect(patterns, "q.ab.x.com", &[]);
    expect(patterns, "ba.x.com", &[]);
}

#[test]
fn inner_star_with_leftmost_star() {
    let patterns = &["*.a.*.x.com", "*.x.com", "a.*.x.com"];
    expect(patterns, "q.a.b.x.com", &[(0, false, 9), (1, false, 6)]);
    expect(patterns, "p.q.a.b.x.com", &[(0, false, 9), (1, false, 6)]);
    expect(patterns, "a.b.x.com", &[(2, false, 8), (1, false, 6)]);
    expect(patterns, "q.a.b.c.x.com", &[(1, false, 6)]);
    expect(patterns, "a.a.b.x.com", &[(0, false, 9), (1, false, 6)]);
}

#[test]
fn one_label_leftmost_star() {
    let patterns = &["<*>.x.com", "*.x.com", "<*>.*.x.com", "*.*.x.com", "<*>.a*.x.com", "<*>.a.*.x.com"];
    expect(patterns, "x.com", &[]);
    expect(patterns, "b.x.com", &[(0, false, 6), (1, false, 6)]);
    expect(patterns, "b.ab.x.com", &[(4, false, 8), (2, false, 7), (3, false, 7), (1, false, 6)]);
    expect(patterns, "c.b.ab.x.com", &[(3, false, 7), (1, false, 6)]);
    expect(patterns, "q.a.b.x.com", &[(5, false, 9), (3, false, 7), (1, false, 6)]);
    expect(patterns, "p.q.a.b.x.com", &[(3, false, 7), (1, false, 6)]);
    // Uppercase and a trailing dot normalise as usual; the flag survives.
    expect(&["<*>.X.com."], "a.x.com", &[(0, false, 6)]);
    expect(&["<*>.X.com."], "a.b.x.com", &[]);
}

/// More than 40 patterns under one `x.com` tail: the large-bucket strategy.
#[test]
fn large_glob_bucket() {
    let mut patterns: Vec<String> = Vec::new();
    for i in 0..20 {
        patterns.push(format!("p{i}*.x.com"));
        patterns.push(format!("*s{i}.x.com"));
        patterns.push(format!("p{i}*s{i}.x.com"));
        patterns.push(format!("*.q{i}.x.com"));
    }
    patterns.extend(strings(&[
        "*.x.com",
        ".x.com",
        "*.*.x.com",
        "a*b*.x.com",
        "*-b.x.com",
        "p1*.x.com",
        "*.p1.x.com",
        "p1.x.com",
        "x.com",
        "<*>.x.com",
        "<*>.*.x.com",
        "<*>.p1*.x.com",
        "<*>.q1.x.com",
    ]));
    let mut hosts: Vec<String> = Vec::new();
    for i in 0..22 {
        hosts.push(format!("p{i}.x.com"));
        hosts.push(format!("p{i}zz.x.com"));
        hosts.push(format!("zzs{i}.x.com"));
        hosts.push(format!("p{i}s{i}.x.com"));
        hosts.push(format!("p{i}-s{i}.x.com"));
        hosts.push(format!("a.q{i}.x.com"));
        hosts.push(format!("a.b.q{i}.x.com"));
        hosts.push(format!("q{i}.x.com"));
        hosts.push(format!("z.p{i}s{i}.x.com"));
    }
    hosts.extend(strings(&[
        "x.com",
        "ab.x.com",
        "a-b.x.com",
        "-b.x.com",
        "p1.x.com",
        "p12s12.x.com",
        "p1s12.x.com",
        "z.p1.x.com",
        "x.x.com",
        "a.b.c.x.com",
        "y.com",
        "z.p1zz.x.com",
        "y.z.p1zz.x.com",
        "z.a.q1.x.com",
    ]));
    assert!(patterns.len() >= 80);
    // With the default threshold, the `x.com` tail is compiled into one regex.
    let matcher = build(&patterns, &[false]).unwrap();
    assert!(matcher.counts().dense_buckets >= 1, "{:?}", matcher.counts());
    run(&patterns, &hosts);
}

#[test]
fn deep_hosts() {
    let patterns = strings(&["*.a.com", ".a.com", "*.*.a.com", "a.*.a.com", "*.a.a.a.com", "a*.a.com", "b.a.com"]);
    let mut hosts = Vec::new();
    for depth in [100usize, 110, 120, 124] {
        let mut h = "a.".repeat(depth);
        h.push_str("com");
        assert!(h.len() <= 253, "{depth}");
        hosts.push(h.clone());
        hosts.push(format!("b.{h}"));
    }
    run(&patterns, &hosts);
}

#[test]
fn maximal_lengths() {
    let l63 = "a".repeat(63);
    let l61 = "b".repeat(61);
    // 63 + 1 + 63 + 1 + 63 + 1 + 61 = 253 bytes.
    let host = format!("{l63}.{l63}.{l63}.{l61}");
    assert_eq!(host.len(), 253);
    let patterns = vec![
        host.clone(),
        format!("*.{l63}.{l61}"),
        format!(".{l63}.{l61}"),
        format!("a*.{l63}.{l61}"),
        format!("*a*a*a*a*a*a*a*a*.{l63}.{l61}"),
        format!("{}*.{l63}.{l63}.{l61}", "a".repeat(62)),
        format!("*{}.{l63}.{l63}.{l61}", "a".repeat(62)),
        format!("*.*.{l63}.{l61}"),
        format!("{l63}.*.{l63}.{l61}"),
        format!("*.{}", "b".repeat(61)),
    ];
    let hosts = vec![
        host.clone(),
        format!("{host}."),
        host.to_ascii_uppercase(),
        format!("{l63}.{l61}"),
        format!("x.{l63}.{l61}"),
        format!("{}.{l63}.{l63}.{l61}", "a".repeat(62)),
    ];
    run(&patterns, &hosts);

    // One byte more is not a host.
    let matcher = build(&patterns, &[false]).unwrap();
    let mut buf = Matches::new();
    for bad in [
        format!("{l63}.{l63}.{l63}.{l61}b"),
        format!("{}.{l61}", "a".repeat(64)),
        format!("{host}.."),
        String::new(),
        ".".to_string(),
        "a..com".to_string(),
        ".a.com".to_string(),
        "a b.com".to_string(),
        "*.com".to_string(),
    ] {
        assert!(Host::new(&bad).is_err(), "{bad:?}");
        assert!(matcher.find(&bad).is_err(), "{bad:?}");
        assert!(matcher.find_all(&bad, &mut buf).is_err(), "{bad:?}");
    }
}

#[test]
fn idna_patterns_and_hosts() {
    let patterns = strings(&["*.bücher.example", "MÜNCHEN.example", ".xn--bcher-kva.example"]);
    let hosts = strings(&[
        "a.bücher.example",
        "a.xn--bcher-kva.example",
        "BÜCHER.example",
        "münchen.example",
        "xn--mnchen-3ya.example",
    ]);
    run(&patterns, &hosts);
    expect(&["*.bücher.example", ".xn--bcher-kva.example"], "a.BÜCHER.example.", &[(0, false, 22), (1, false, 22)]);
}

#[test]
fn invalid_patterns_are_rejected() {
    for bad in BAD_PATTERNS {
        assert!(Pattern::new(bad).is_err(), "{bad:?} should be rejected");
        let patterns = strings(&["a.com", "*.b.com", bad, "also*.bad", "c.com"]);
        let err = build(&patterns, &[false]).err().unwrap();
        assert_eq!(err.pattern(), *bad);
        if let Some(i) = err.index() {
            assert_eq!(i, 2, "{bad:?}");
        }
    }
}

#[test]
fn empty_matcher() {
    let matcher = build(&[], &[false]).unwrap();
    assert!(matcher.is_empty());
    let mut buf = Matches::new();
    matcher.find_all("a.com", &mut buf).unwrap();
    assert!(buf.is_empty());
    assert!(buf.best().is_empty());
    assert!(matcher.find("a.com").unwrap().is_none());
}

#[test]
fn buffer_is_cleared_between_lookups() {
    let patterns = strings(&["*.x.com", "a.x.com"]);
    let matcher = build(&patterns, &[false]).unwrap();
    let mut buf = Matches::new();
    matcher.find_all("a.x.com", &mut buf).unwrap();
    assert_eq!(buf.len(), 2);
    matcher.find_all("y.com", &mut buf).unwrap();
    assert!(buf.is_empty());
    assert!(buf.best().is_empty());
}
