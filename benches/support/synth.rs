//! Deterministic synthetic rule sets and query streams for the matcher benchmark.
//!
//! Everything here is driven by [`Rng`], a splitmix64 generator seeded with a fixed constant, so a
//! given size always yields the same rules and the same queries (no `rand` dependency).
//!
//! Rule shapes: drawn with these weights (per mille); the shares after deduplication, which
//! removes more of the short `*.suffix` rules, are those of the 1M set (10k and 100k are within
//! half a point):
//!
//! | shape | weight | share | example |
//! |---|---|---|---|
//! | exact name | 585 | 61.1% | `login.acme.com`, `eu.static.kiwu.co.uk` |
//! | `*.suffix` | 335 | 30.4% | `*.acme.com`, `*.api.kiwu.io` |
//! | `.suffix` (leading dot) | 30 | 3.2% | `.acme.com` |
//! | leftmost glob label | 20 | 2.2% | `*cdn.acme.com`, `fe*.acme.com`, `*-abc.acme.com`, `a*b*.acme.com` |
//! | inner whole-label `*` | 12 | 1.3% | `api.*.acme.com` |
//! | `*.*.suffix` | 10 | 1.1% | `*.*.acme.com` |
//! | inner glob label | 8 | 0.9% | `api.fe*.acme.com` |
//!
//! The mean rule is 20.4 bytes long, the mean query 22.2 bytes.
//!
//! Names have 2 to 5 labels (counting `*` labels) under one of ~24 TLDs (`com` weighted most, some
//! two-label public suffixes such as `co.uk`). Registrable domains are drawn from a pool of about
//! one per three rules with a skew, so popular domains carry several rules, as in real allowlists.
//! Labels are mostly 3–12 characters, some 1–2 (`a`, `eu`), some longer, some with `-` or digits;
//! subdomain labels come half from a list of common words (`api`, `cdn`, `eu-west-1`, ...).
//! Rule texts are unique (deduplicated by a 64-bit hash of the text).
//!
//! Queries: exactly half hits and half near-misses, shuffled. A hit instantiates a random rule (the
//! name itself, 1–3 extra labels under a `*.` rule, a filled-in glob). A near-miss is a sibling of
//! a rule, the apex of a `*.` rule, a one-character edit, an extra label in front of an exact or
//! glob rule, or an unrelated name under a known TLD; every candidate is checked against an oracle
//! (the `hash_suffix` baseline) and regenerated until it really misses. A few queries have upper
//! case letters or a trailing dot, to exercise normalisation.

use std::collections::HashSet;

/// splitmix64: tiny, fast, and good enough for test data.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is irrelevant here).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `p` percent.
    pub(crate) fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }

    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Picks an index by integer weights.
    fn weighted(&mut self, weights: &[usize]) -> usize {
        let total: usize = weights.iter().sum();
        let mut r = self.below(total);
        for (i, &w) in weights.iter().enumerate() {
            if r < w {
                return i;
            }
            r -= w;
        }
        weights.len() - 1
    }

    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

/// FNV-1a, used to deduplicate without keeping a second copy of every string.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325_u64;
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Top-level (public) suffixes with weights; some have two labels.
const TLDS: &[(&str, usize)] = &[
    ("com", 40),
    ("net", 8),
    ("org", 6),
    ("io", 5),
    ("de", 5),
    ("co.uk", 4),
    ("fr", 3),
    ("nl", 2),
    ("jp", 2),
    ("com.au", 2),
    ("ca", 2),
    ("ru", 2),
    ("br", 2),
    ("in", 2),
    ("it", 2),
    ("es", 2),
    ("dev", 2),
    ("app", 2),
    ("info", 2),
    ("cloud", 1),
    ("eu", 1),
    ("ch", 1),
    ("se", 1),
    ("us", 1),
];

/// Common subdomain labels.
const WORDS: &[&str] = &[
    "www",
    "api",
    "cdn",
    "static",
    "login",
    "auth",
    "mail",
    "smtp",
    "img",
    "assets",
    "media",
    "files",
    "docs",
    "app",
    "portal",
    "admin",
    "dev",
    "test",
    "stage",
    "prod",
    "edge",
    "gw",
    "vpn",
    "s3",
    "eu",
    "us",
    "a",
    "b",
    "m",
    "ws",
    "rt",
    "ns1",
    "ns2",
    "eu-west-1",
    "us-east-1",
    "ap-south-1",
    "blob",
    "core",
    "data",
    "events",
    "telemetry",
    "update",
    "download",
    "content",
    "graph",
    "secure",
    "accounts",
    "my",
    "shop",
    "store",
    "status",
    "metrics",
    "push",
    "sync",
    "video",
    "fe01",
    "be",
    "int",
];

const CONSONANTS: &[u8] = b"bcdfghjklmnprstvwxyz";
const VOWELS: &[u8] = b"aeiou";
const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Appends `len` pronounceable-ish letters.
fn push_letters(rng: &mut Rng, len: usize, out: &mut String) {
    let mut vowel = rng.percent(30);
    for _ in 0..len {
        let set = if vowel { VOWELS } else { CONSONANTS };
        out.push(char::from(*rng.pick(set)));
        // Mostly alternate, sometimes two consonants in a row.
        vowel = if vowel { false } else { !rng.percent(20) };
    }
}

/// Appends a random label: mostly 3–12 bytes, some 1–2, some 13–20; some with a `-` or digits.
fn push_random_label(rng: &mut Rng, out: &mut String) {
    let len = match rng.below(100) {
        0..=7 => rng.range(1, 2),
        8..=91 => rng.range(3, 12),
        _ => rng.range(13, 20),
    };
    let start = out.len();
    push_letters(rng, len, out);
    if len >= 5 && rng.percent(12) {
        // A hyphen strictly inside the label.
        let at = start + rng.range(1, len - 2);
        out.replace_range(at..=at, "-");
    }
    if len >= 3 && rng.percent(15) {
        // Trailing digits (`fe01`, `node7`).
        let digits = rng.range(1, 2.min(len - 1));
        out.truncate(out.len() - digits);
        for _ in 0..digits {
            out.push(char::from(b'0' + rng.below(10) as u8));
        }
    }
}

/// Appends a subdomain label: half common words, half random.
fn push_sub_label(rng: &mut Rng, out: &mut String) {
    if rng.percent(50) {
        let word: &&str = rng.pick(WORDS);
        out.push_str(word);
    } else {
        push_random_label(rng, out);
    }
}

/// Appends 2–6 letters usable as the literal part of a glob label.
fn push_glob_literal(rng: &mut Rng, lo: usize, hi: usize, out: &mut String) {
    if rng.percent(40) {
        let w = rng.pick(&["cdn", "fe", "edge", "img", "api", "static", "node", "web", "mx"]);
        out.push_str(w);
    } else {
        let len = rng.range(lo, hi);
        push_letters(rng, len, out);
    }
}

/// The shape of a generated rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `login.acme.com`
    Exact,
    /// `*.acme.com`
    StarSuffix,
    /// `.acme.com`
    DotSuffix,
    /// `*cdn.acme.com`, `fe*.acme.com`, `*-abc.acme.com`, `a*b*.acme.com`
    LeftGlob,
    /// `api.*.acme.com`
    InnerStar,
    /// `*.*.acme.com`
    DoubleStar,
    /// `api.fe*.acme.com`
    InnerGlob,
}

impl Shape {
    pub(crate) const ALL: [Shape; 7] = [
        Shape::Exact,
        Shape::StarSuffix,
        Shape::DotSuffix,
        Shape::LeftGlob,
        Shape::InnerStar,
        Shape::DoubleStar,
        Shape::InnerGlob,
    ];

    /// Weight when drawing a rule, per mille.
    const fn per_mille(self) -> usize {
        match self {
            Shape::Exact => 585,
            Shape::StarSuffix => 335,
            Shape::DotSuffix => 30,
            Shape::LeftGlob => 20,
            Shape::InnerStar => 12,
            Shape::DoubleStar => 10,
            Shape::InnerGlob => 8,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Shape::Exact => "exact",
            Shape::StarSuffix => "*.suffix",
            Shape::DotSuffix => ".suffix",
            Shape::LeftGlob => "glob*.x",
            Shape::InnerStar => "a.*.x",
            Shape::DoubleStar => "*.*.x",
            Shape::InnerGlob => "a.g*.x",
        }
    }
}

/// A generated rule set: pattern texts (already lowercase, valid per the contract) and their shapes.
#[derive(Debug)]
pub(crate) struct RuleSet {
    pub(crate) patterns: Vec<String>,
    pub(crate) shapes: Vec<Shape>,
}

/// A registrable domain (`acme.com`, `kiwu.co.uk`) and its number of labels.
struct Base {
    name: String,
    labels: usize,
}

impl RuleSet {
    /// A rule set from given patterns (normalised: lowercase, no trailing dot), each classified
    /// by its shape; used for the shipped rules (the `docs` size).
    pub(crate) fn from_patterns(patterns: Vec<String>) -> Self {
        let shapes = patterns
            .iter()
            .map(|p| {
                let first = p.split('.').next().unwrap_or("");
                if p.starts_with('.') {
                    Shape::DotSuffix
                } else if !p.contains('*') {
                    Shape::Exact
                } else if p.starts_with("*.*.") {
                    Shape::DoubleStar
                } else if p.starts_with("*.") && !p[2..].contains('*') {
                    Shape::StarSuffix
                } else if first.contains('*') && first != "*" {
                    Shape::LeftGlob
                } else if p.split('.').any(|l| l == "*") {
                    Shape::InnerStar
                } else {
                    Shape::InnerGlob
                }
            })
            .collect();
        Self { patterns, shapes }
    }

    /// Generates `n` distinct rules.
    pub(crate) fn generate(n: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let tld_weights: Vec<usize> = TLDS.iter().map(|&(_, w)| w).collect();
        let pool: Vec<Base> = (0..n / 3 + 8)
            .map(|_| {
                let mut name = String::new();
                let len = rng.range(3, 12);
                push_letters(&mut rng, len, &mut name);
                if rng.percent(10) {
                    name.push(char::from(b'0' + rng.below(10) as u8));
                }
                let tld = TLDS[rng.weighted(&tld_weights)].0;
                name.push('.');
                name.push_str(tld);
                let labels = 2 + tld.matches('.').count();
                Base { name, labels }
            })
            .collect();
        let shape_weights: Vec<usize> = Shape::ALL.iter().map(|s| s.per_mille()).collect();

        let mut seen = HashSet::with_capacity(n);
        let mut patterns = Vec::with_capacity(n);
        let mut shapes = Vec::with_capacity(n);
        let mut text = String::new();
        while patterns.len() < n {
            // Skewed towards the front of the pool: popular domains carry more rules.
            let base = &pool[rng.below(pool.len()).min(rng.below(pool.len()))];
            let shape = Shape::ALL[rng.weighted(&shape_weights)];
            text.clear();
            push_rule(&mut rng, shape, base, &mut text);
            if seen.insert(fnv1a(text.as_bytes())) {
                patterns.push(text.clone());
                shapes.push(shape);
            }
        }
        Self { patterns, shapes }
    }

    pub(crate) fn len(&self) -> usize {
        self.patterns.len()
    }

    /// Mean pattern length in bytes.
    pub(crate) fn mean_len(&self) -> f64 {
        let total: usize = self.patterns.iter().map(String::len).sum();
        total as f64 / self.len().max(1) as f64
    }

    /// Share of `shape` in percent.
    pub(crate) fn share(&self, shape: Shape) -> f64 {
        let count = self.shapes.iter().filter(|&&s| s == shape).count();
        100.0 * count as f64 / self.len().max(1) as f64
    }
}

/// Appends `count` subdomain labels, each followed by a dot.
fn push_prefix(rng: &mut Rng, count: usize, out: &mut String) {
    for _ in 0..count {
        push_sub_label(rng, out);
        out.push('.');
    }
}

fn push_rule(rng: &mut Rng, shape: Shape, base: &Base, out: &mut String) {
    // Room for labels in front of the base within 5 labels in total.
    let room = 5 - base.labels;
    match shape {
        Shape::Exact => {
            let extra = [0, 1, 1, 1, 1, 2, 2, 3][rng.below(8)].min(room);
            push_prefix(rng, extra, out);
        }
        Shape::StarSuffix | Shape::DotSuffix => {
            out.push_str(if shape == Shape::StarSuffix { "*." } else { "." });
            let extra = [0, 0, 0, 0, 1, 1, 1, 2][rng.below(8)].min(room - 1);
            push_prefix(rng, extra, out);
        }
        Shape::LeftGlob => {
            match rng.below(100) {
                0..=34 => {
                    out.push('*');
                    push_glob_literal(rng, 2, 6, out);
                }
                35..=69 => {
                    push_glob_literal(rng, 2, 5, out);
                    out.push('*');
                }
                70..=84 => {
                    out.push_str("*-");
                    push_glob_literal(rng, 3, 8, out);
                }
                _ => {
                    let len = rng.range(1, 2);
                    push_letters(rng, len, out);
                    out.push('*');
                    let len = rng.range(1, 2);
                    push_letters(rng, len, out);
                    out.push('*');
                }
            }
            out.push('.');
            let extra = rng.below(2).min(room - 1);
            push_prefix(rng, extra, out);
        }
        Shape::InnerStar => {
            push_sub_label(rng, out);
            out.push_str(".*.");
            let extra = rng.below(2).min(room - 2);
            push_prefix(rng, extra, out);
        }
        Shape::DoubleStar => {
            out.push_str("*.*.");
            let extra = rng.below(2).min(room - 2);
            push_prefix(rng, extra, out);
        }
        Shape::InnerGlob => {
            push_sub_label(rng, out);
            out.push('.');
            push_glob_literal(rng, 2, 5, out);
            out.push('*');
            out.push('.');
        }
    }
    out.push_str(&base.name);
}

/// A compact list of query host names: one buffer plus end offsets, so walking the list is
/// sequential and the only cache misses are the matcher's own.
#[derive(Debug, Default)]
pub(crate) struct Queries {
    buf: String,
    ends: Vec<u32>,
}

impl Queries {
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(crate) fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.buf[start..self.ends[i] as usize]
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.len()).map(move |i| self.get(i))
    }

    /// Queries `start..start + len` (the caller keeps `start + len <= self.len()`).
    pub(crate) fn range(&self, start: usize, len: usize) -> impl Iterator<Item = &str> + '_ {
        (start..start + len).map(move |i| self.get(i))
    }

    /// Total bytes of all queries.
    pub(crate) fn total_bytes(&self) -> usize {
        self.buf.len()
    }

    fn push(&mut self, q: &str) {
        self.buf.push_str(q);
        self.ends.push(u32::try_from(self.buf.len()).expect("query buffer under 4 GiB"));
    }
}

/// Generates `count` queries for `rules`: exactly `count / 2` hits (by construction, confirmed by
/// `is_hit`) and the rest near-misses (regenerated until `is_hit` says no), shuffled.
/// With `distinct`, no query repeats.
pub(crate) fn generate_queries(
    rules: &RuleSet,
    count: usize,
    seed: u64,
    distinct: bool,
    is_hit: impl Fn(&str) -> bool,
) -> Queries {
    let mut rng = Rng::new(seed);
    let mut want_hit: Vec<bool> = (0..count).map(|i| i < count / 2).collect();
    rng.shuffle(&mut want_hit);
    let mut seen = HashSet::new();
    let mut out = Queries { buf: String::with_capacity(count * 28), ends: Vec::with_capacity(count) };
    let mut q = String::new();
    for hit in want_hit {
        loop {
            q.clear();
            if hit {
                let i = rng.below(rules.len());
                push_hit(&mut rng, &rules.patterns[i], &mut q);
                assert!(is_hit(&q), "generator bug: {q:?} was built to match {:?} but does not", rules.patterns[i]);
            } else {
                push_near_miss(&mut rng, rules, &is_hit, &mut q);
            }
            decorate(&mut rng, &mut q);
            if !distinct || seen.insert(fnv1a(q.as_bytes())) {
                break;
            }
        }
        out.push(&q);
    }
    out
}

/// Upper-cases some queries or adds a trailing dot (both must not change the result).
fn decorate(rng: &mut Rng, q: &mut String) {
    match rng.below(100) {
        0..=3 => {
            // `LOGIN.Live.COM`: upper-case each label with probability 1/2.
            let mut upper = rng.percent(50);
            *q = q
                .chars()
                .map(|c| {
                    if c == '.' {
                        upper = rng.percent(50);
                    }
                    if upper {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
        }
        4..=5 => q.push('.'),
        _ => {}
    }
}

/// Appends a host name that `pattern` matches.
fn push_hit(rng: &mut Rng, pattern: &str, out: &mut String) {
    let pattern = match pattern.strip_prefix('.') {
        Some(rest) => {
            if rng.percent(65) {
                let len = rng.range(1, 3);
                push_prefix(rng, len, out);
            }
            rest
        }
        None => pattern,
    };
    for (i, label) in pattern.split('.').enumerate() {
        if i > 0 {
            out.push('.');
        }
        if label == "*" {
            if i == 0 {
                // One or more labels; mostly one.
                let n = [1, 1, 1, 1, 1, 1, 2, 2, 2, 3][rng.below(10)];
                for j in 0..n {
                    if j > 0 {
                        out.push('.');
                    }
                    push_sub_label(rng, out);
                }
            } else {
                push_sub_label(rng, out);
            }
        } else if label.contains('*') {
            for (j, part) in label.split('*').enumerate() {
                if j > 0 {
                    // At least one character where the star would otherwise leave a leading `-`.
                    let min = usize::from(j == 1 && label.starts_with('*') && part.starts_with('-'));
                    for _ in 0..rng.range(min, 4) {
                        out.push(char::from(*rng.pick(ALNUM)));
                    }
                }
                out.push_str(part);
            }
        } else {
            out.push_str(label);
        }
    }
}

/// Appends a near-miss: a name that looks like it belongs to the rule set but `is_hit` rejects.
fn push_near_miss(rng: &mut Rng, rules: &RuleSet, is_hit: &impl Fn(&str) -> bool, out: &mut String) {
    for _ in 0..16 {
        out.clear();
        let i = rng.below(rules.len());
        let (pattern, shape) = (&rules.patterns[i], rules.shapes[i]);
        match rng.below(100) {
            // A sibling: the leftmost label replaced.
            0..=29 => {
                let mut name = String::new();
                push_hit(rng, pattern, &mut name);
                let (first, rest) = name.split_once('.').unwrap_or((&name, ""));
                let mut label = String::new();
                while label.is_empty() || label == first {
                    label.clear();
                    push_sub_label(rng, &mut label);
                }
                out.push_str(&label);
                if !rest.is_empty() && rest.contains('.') {
                    out.push('.');
                    out.push_str(rest);
                } else {
                    // A two-label name: keep its TLD.
                    out.push('.');
                    out.push_str(if rest.is_empty() { "com" } else { rest });
                }
            }
            // Structural: the apex of a `*.` rule, one label too many or too few.
            30..=54 => match shape {
                Shape::StarSuffix => {
                    // `*.acme.com` -> `acme.com`.
                    push_hit(rng, &pattern[2..], out);
                }
                Shape::DoubleStar => {
                    // `*.*.acme.com` -> `www.acme.com`.
                    push_prefix(rng, 1, out);
                    out.push_str(&pattern[4..]);
                }
                Shape::DotSuffix => {
                    // `.lync.com` -> `alync.com`.
                    out.push(char::from(*rng.pick(&ALNUM[..26])));
                    out.push_str(&pattern[1..]);
                }
                Shape::InnerStar => {
                    // `api.x.com` or `api.eu.west.x.com`.
                    let (first, rest) = pattern.split_once(".*.").unwrap_or((pattern, ""));
                    out.push_str(first);
                    out.push('.');
                    if rng.percent(50) {
                        push_prefix(rng, 2, out);
                    }
                    out.push_str(rest);
                }
                _ => {
                    // `x.login.acme.com` (exact), `a.cdn.acme.com` (glob).
                    push_prefix(rng, 1, out);
                    push_hit(rng, pattern, out);
                }
            },
            // One-character edit somewhere in an instantiated name.
            55..=89 => {
                let mut name = String::new();
                push_hit(rng, pattern, &mut name);
                one_char_edit(rng, &name, out);
            }
            // An unrelated name under a known TLD.
            _ => push_unrelated(rng, out),
        }
        if !is_hit(out) {
            return;
        }
    }
    loop {
        out.clear();
        push_unrelated(rng, out);
        if !is_hit(out) {
            return;
        }
    }
}

fn push_unrelated(rng: &mut Rng, out: &mut String) {
    if rng.percent(50) {
        push_prefix(rng, 1, out);
    }
    let len = rng.range(4, 12);
    push_letters(rng, len, out);
    out.push('.');
    out.push_str(rng.pick(TLDS).0);
}

/// Copies `name` with one byte substituted, inserted or deleted in a random non-top label.
fn one_char_edit(rng: &mut Rng, name: &str, out: &mut String) {
    let labels: Vec<&str> = name.split('.').collect();
    // Never touch the top label, so the TLD stays a known one.
    let target = rng.below(labels.len().saturating_sub(1).max(1));
    for (i, label) in labels.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if i != target {
            out.push_str(label);
            continue;
        }
        let bytes = label.as_bytes();
        let at = rng.below(bytes.len());
        let c = loop {
            let c = *rng.pick(&ALNUM[..26]);
            if c != bytes[at] {
                break c;
            }
        };
        let mut edited = bytes.to_vec();
        match rng.below(3) {
            0 => edited[at] = c,
            1 => edited.insert(at, c),
            _ if bytes.len() > 1 && at > 0 && at + 1 < bytes.len() => {
                edited.remove(at);
            }
            _ => edited[at] = c,
        }
        out.push_str(std::str::from_utf8(&edited).expect("ASCII stays UTF-8"));
    }
}
