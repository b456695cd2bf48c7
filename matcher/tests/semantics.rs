//! The pattern-semantics table of the crate docs, row by row, plus case, trailing dot, IDN,
//! invalid hosts, build errors, specificity and ties.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use hostgate_matcher::{BuildErrorKind, InvalidHostKind, Matcher, MatcherBuilder, Matches, Pattern};

/// Adds a pattern of the table: as text, or, for a leftmost `<*>` (the `Display` form of a
/// one-label pattern, not pattern text), as `*` made [`Pattern::one_label`].
fn add<V>(b: &mut MatcherBuilder<V>, pattern: &str, value: V) {
    match pattern.strip_prefix("<*>") {
        Some(rest) => {
            let p = Pattern::new(&format!("*{rest}")).and_then(Pattern::one_label);
            let p = p.unwrap_or_else(|e| panic!("{pattern}: {e}"));
            assert_eq!(p.to_string(), pattern, "the display form");
            b.add_pattern(p, value);
        }
        None => {
            b.add(pattern, value);
        }
    }
}

fn single(pattern: &str) -> Matcher<&'static str> {
    let mut b = MatcherBuilder::new();
    add(&mut b, pattern, "p");
    b.build().unwrap_or_else(|e| panic!("{pattern}: {e}"))
}

/// (pattern, hosts that match, hosts that do not)
const TABLE: &[(&str, &[&str], &[&str])] = &[
    (
        "login.live.com",
        &["login.live.com", "LOGIN.Live.COM."],
        &["x.login.live.com", "login.live.com.evil.io", "live.com"],
    ),
    ("*.lync.com", &["a.lync.com", "a.b.lync.com"], &["lync.com", "alync.com", "lync.com.evil.io"]),
    (".lync.com", &["lync.com", "a.lync.com", "a.b.lync.com"], &["alync.com", "lync.com.evil.io"]),
    (
        "*cdn.onenote.net",
        &["cdn.onenote.net", "site-cdn.onenote.net"],
        &["a.cdn.onenote.net", "cdnx.onenote.net", "onenote.net"],
    ),
    (
        "*-umwatsonc.events.data.microsoft.com",
        &["eus-umwatsonc.events.data.microsoft.com"],
        &["umwatsonc.events.data.microsoft.com", "a.eus-umwatsonc.events.data.microsoft.com"],
    ),
    (
        "*.*.onedrive.live.com",
        &["a.b.onedrive.live.com", "x.a.b.onedrive.live.com"],
        &["a.onedrive.live.com", "onedrive.live.com"],
    ),
    (
        "api.*.example.com",
        &["api.eu.example.com"],
        &["api.example.com", "api.eu.west.example.com", "x.api.eu.example.com"],
    ),
    ("fe*.example.com", &["fe1.example.com", "fe.example.com"], &["fe1.x.example.com", "f.example.com"]),
    ("a*b*.example.com", &["axxbyy.example.com", "ab.example.com"], &["axx.example.com", "fe1.x.example.com"]),
    (
        "<*>.onmicrosoft.com",
        &["contoso.onmicrosoft.com", "Contoso.OnMicrosoft.com."],
        &["a.b.onmicrosoft.com", "onmicrosoft.com", "contoso.onmicrosoft.com.evil.io", "aonmicrosoft.com"],
    ),
    (
        "<*>.*.onedrive.live.com",
        &["a.b.onedrive.live.com"],
        &["x.a.b.onedrive.live.com", "a.onedrive.live.com", "onedrive.live.com"],
    ),
    (
        "<*>.fe*.example.com",
        &["a.fe1.example.com", "a.fe.example.com"],
        &["b.a.fe1.example.com", "fe1.example.com", "a.f.example.com"],
    ),
];

#[test]
fn the_table_row_by_row() {
    for &(pattern, yes, no) in TABLE {
        let m = single(pattern);
        for host in yes {
            assert!(m.find(host).unwrap().is_some(), "{pattern} should match {host}");
        }
        for host in no {
            assert!(m.find(host).unwrap().is_none(), "{pattern} should not match {host}");
        }
    }
}

#[test]
fn the_table_in_one_matcher_with_dense_buckets() {
    // The same rows, all in one matcher, with every glob bucket compiled to a regex.
    let mut b = MatcherBuilder::new();
    b.dense_threshold(1);
    for (i, &(pattern, _, _)) in TABLE.iter().enumerate() {
        add(&mut b, pattern, i);
    }
    let m = b.build().unwrap();
    let mut all = Matches::new();
    for (i, &(pattern, yes, no)) in TABLE.iter().enumerate() {
        for host in yes {
            m.find_all(host, &mut all).unwrap();
            assert!(all.iter().any(|h| h.id().as_usize() == i), "{pattern} should match {host}");
        }
        for host in no {
            m.find_all(host, &mut all).unwrap();
            assert!(!all.iter().any(|h| h.id().as_usize() == i), "{pattern} should not match {host}");
        }
    }
}

#[test]
fn idn_on_both_sides() {
    let m = single("*.bücher.example");
    assert!(m.find("shop.BÜCHER.example").unwrap().is_some());
    assert!(m.find("shop.xn--bcher-kva.example").unwrap().is_some());
    let m = single("*.xn--bcher-kva.example");
    assert!(m.find("shop.bücher.example").unwrap().is_some());
    assert!(m.find("bücher.example").unwrap().is_none());
}

#[test]
fn invalid_hosts_are_errors_not_misses() {
    let m = single("*.lync.com");
    let cases: &[(&str, InvalidHostKind)] = &[
        ("", InvalidHostKind::Empty),
        ("a..lync.com", InvalidHostKind::EmptyLabel),
        ("a.lync.com..", InvalidHostKind::EmptyLabel),
        (".a.lync.com", InvalidHostKind::EmptyLabel),
        ("a b.lync.com", InvalidHostKind::InvalidByte { byte: b' ', offset: 1 }),
        ("*.lync.com", InvalidHostKind::InvalidByte { byte: b'*', offset: 0 }),
    ];
    for (host, kind) in cases {
        assert_eq!(m.find(host).unwrap_err().kind(), kind, "{host:?}");
    }
    let long_label = format!("{}.lync.com", "a".repeat(64));
    assert_eq!(m.find(&long_label).unwrap_err().kind(), &InvalidHostKind::LabelTooLong);
    let long_name = format!("{}.lync.com", vec!["a".repeat(60); 5].join("."));
    assert_eq!(m.find(&long_name).unwrap_err().kind(), &InvalidHostKind::NameTooLong);
    let mut all = Matches::new();
    assert!(m.find_all("a..b", &mut all).is_err());
    assert!(all.is_empty());
}

#[test]
fn build_errors_quote_the_pattern() {
    let cases: &[(&str, BuildErrorKind)] = &[
        ("*", BuildErrorKind::LoneWildcard),
        ("**.example.com", BuildErrorKind::DoubleWildcard),
        ("mail.*", BuildErrorKind::WildcardInTopLabel),
        ("a..b", BuildErrorKind::EmptyLabel),
        ("exa mple.com", BuildErrorKind::InvalidCharacter(' ')),
        ("", BuildErrorKind::Empty),
    ];
    for (pattern, kind) in cases {
        let mut b = MatcherBuilder::new();
        b.add("fine.example.com", 0).add(pattern, 1).add("also-fine.com", 2);
        let e = b.build().unwrap_err();
        assert_eq!(e.pattern(), *pattern);
        assert_eq!(e.kind(), kind);
        assert_eq!(e.index(), Some(1));
        assert!(e.to_string().contains(&format!("{pattern:?}")), "{e}");
    }
    let e = Pattern::new(&format!("{}.com", "x".repeat(64))).unwrap_err();
    assert_eq!(e.kind(), &BuildErrorKind::LabelTooLong);
}

#[test]
fn the_most_specific_pattern_wins() {
    let mut b = MatcherBuilder::new();
    b.add("*.com", "tld")
        .add("*.example.com", "suffix")
        .add("api.*.example.com", "inner")
        .add("*.eu.example.com", "deeper")
        .add("api.eu.example.com", "exact");
    let m = b.build().unwrap();
    let v = |h: &str| m.find(h).unwrap().map(|m| *m.value());
    assert_eq!(v("api.eu.example.com"), Some("exact"));
    assert_eq!(v("api.us.example.com"), Some("inner")); // 16 literal bytes beat `*.example.com`'s 12
    assert_eq!(v("x.eu.example.com"), Some("deeper"));
    assert_eq!(v("x.example.com"), Some("suffix"));
    assert_eq!(v("example.org"), None);
    assert_eq!(v("x.org.com"), Some("tld"));

    let mut all = Matches::new();
    m.find_all("api.eu.example.com", &mut all).unwrap();
    let order: Vec<&str> = all.iter().map(|h| *m.value(h.id())).collect();
    assert_eq!(order, ["exact", "inner", "deeper", "suffix", "tld"]);
    assert!(all.as_slice()[0].specificity().is_exact());
    assert_eq!(all.as_slice()[1].specificity().literal_len(), 16);
    assert_eq!(all.best().len(), 1);
}

#[test]
fn ties_are_reported_in_add_order() {
    let mut b = MatcherBuilder::new();
    // Same pattern twice, and two different patterns with equal literal length.
    b.add("*.lync.com", "first")
        .add("*.LYNC.com.", "second")
        .add("*.example.com", "other")
        .add("x*.example.com", "glob");
    let m = b.build().unwrap();
    assert_eq!(m.find("a.lync.com").unwrap().map(|m| *m.value()), Some("first"));
    let mut all = Matches::new();
    m.find_all("a.lync.com", &mut all).unwrap();
    assert_eq!(all.best().iter().map(|h| h.id().as_usize()).collect::<Vec<_>>(), [0, 1]);
    // `*.example.com` has 12 literal bytes, `x*.example.com` 13: not a tie.
    m.find_all("xy.example.com", &mut all).unwrap();
    assert_eq!(all.iter().map(|h| h.id().as_usize()).collect::<Vec<_>>(), [3, 2]);
}

#[test]
fn leading_dot_is_exact_at_the_apex_and_wildcard_below() {
    let mut b = MatcherBuilder::new();
    b.add(".lync.com", "dot").add("*.lync.com", "star").add("lync.com", "exact");
    let m = b.build().unwrap();
    let mut all = Matches::new();
    m.find_all("lync.com", &mut all).unwrap();
    assert_eq!(all.iter().map(|h| h.id().as_usize()).collect::<Vec<_>>(), [0, 2]);
    assert_eq!(all.best().len(), 2, "`.lync.com` and `lync.com` tie at the apex");
    m.find_all("a.lync.com", &mut all).unwrap();
    assert_eq!(all.iter().map(|h| h.id().as_usize()).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(all.best().len(), 2, "`.lync.com` and `*.lync.com` tie below it");
}

#[test]
fn one_label_needs_a_leftmost_star_and_no_leading_dot() {
    for ok in ["*.onmicrosoft.com", "*.*.x.com", "*.fe*.x.com", "*.a.*.x.com", "*.com"] {
        let p = Pattern::new(ok).unwrap().one_label().unwrap();
        assert!(p.is_leftmost_one_label() && p.as_str() == ok, "{ok}");
    }
    for bad in ["onmicrosoft.com", ".onmicrosoft.com", ".*.x.com", "a.*.x.com", "*a.x.com", "fe*.x.com"] {
        let e = Pattern::new(bad).unwrap().one_label().unwrap_err();
        assert_eq!(e.kind(), &BuildErrorKind::OneLabelNeedsLeftmostStar, "{bad}");
        assert_eq!(e.pattern(), bad);
    }
}

#[test]
fn one_label_ties_with_the_same_pattern_without_the_flag() {
    // The same literal bytes: a tie where both match, only the wider one below.
    let mut b = MatcherBuilder::new();
    b.add("*.x.com", "more");
    add(&mut b, "<*>.x.com", "one");
    b.add("a.x.com", "exact").add("*.a.x.com", "deeper");
    let m = b.build().unwrap();
    let mut all = Matches::new();
    m.find_all("b.x.com", &mut all).unwrap();
    assert_eq!(all.best().iter().map(|h| *m.value(h.id())).collect::<Vec<_>>(), ["more", "one"]);
    assert_eq!(all.best()[0].specificity(), all.best()[1].specificity());
    m.find_all("a.x.com", &mut all).unwrap();
    assert_eq!(all.iter().map(|h| *m.value(h.id())).collect::<Vec<_>>(), ["exact", "more", "one"]);
    m.find_all("c.a.x.com", &mut all).unwrap();
    assert_eq!(all.iter().map(|h| *m.value(h.id())).collect::<Vec<_>>(), ["deeper", "more"]);
    m.find_all("c.b.x.com", &mut all).unwrap();
    assert_eq!(all.iter().map(|h| *m.value(h.id())).collect::<Vec<_>>(), ["more"]);
    // Patterns with and without the flag are different patterns.
    let one = Pattern::new("*.x.com").unwrap().one_label().unwrap();
    assert_ne!(one, Pattern::new("*.x.com").unwrap());
    assert_eq!(one.specificity(), Pattern::new("*.x.com").unwrap().specificity());
}

#[test]
fn send_sync_and_heap_size() {
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    let m = single("*.lync.com");
    assert_send_sync(&m);
    assert!(m.heap_bytes() > 0);
    assert_eq!(m.len(), 1);
    assert_eq!(m.counts().suffix, 1);
}
