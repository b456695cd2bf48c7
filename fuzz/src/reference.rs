//! A naive reference matcher written straight from the matching contract, over *normalised*
//! patterns and hosts (normalise with `Pattern::new(..).to_string()` / `Host::new(..).as_str()`;
//! a pattern's `Display` is its normalised text, with a one-label leftmost `*` written `<*>`).
//!
//! - leftmost whole `*`: one or more host labels;
//! - leftmost `<*>` (`Pattern::one_label`): exactly one host label;
//! - any other whole `*`: exactly one host label;
//! - glob label (`*` plus literal bytes): exactly one host label, each `*` = zero or more bytes;
//! - `.P`: the better of `P` and `*.P`;
//! - specificity: (no `*` at all, number of non-`*` bytes of the expansion that matched); `<*>`
//!   counts as `*`.

/// `(exact, literal_len)`, ordered like `hostgate_matcher::Specificity`.
pub type Spec = (bool, usize);

/// A `*`-glob over one label (dynamic programming, so long labels with many `*` stay cheap).
pub fn glob(pattern: &[u8], text: &[u8]) -> bool {
    // reachable[j]: the pattern prefix read so far can match text[..j].
    let mut reachable = vec![false; text.len() + 1];
    reachable[0] = true;
    for &p in pattern {
        if p == b'*' {
            for j in 1..=text.len() {
                reachable[j] = reachable[j] || reachable[j - 1];
            }
        } else {
            for j in (1..=text.len()).rev() {
                reachable[j] = reachable[j - 1] && text[j - 1] == p;
            }
            reachable[0] = false;
        }
    }
    reachable[text.len()]
}

fn labels_match(pattern: &[&str], host: &[&str], leftmost: bool) -> bool {
    match pattern.split_first() {
        None => host.is_empty(),
        Some((&"*", rest)) if leftmost => (1..=host.len()).any(|taken| labels_match(rest, &host[taken..], false)),
        Some((label, rest)) => match host.split_first() {
            None => false,
            Some((h, host_rest)) => glob(label.as_bytes(), h.as_bytes()) && labels_match(rest, host_rest, false),
        },
    }
}

fn match_plain(pattern: &str, host: &str) -> Option<Spec> {
    // `<*>`: a leftmost `*` that is exactly one label, i.e. matched like a `*` further right.
    let (pattern, leftmost) = match pattern.strip_prefix("<*>") {
        Some(rest) => (format!("*{rest}"), false),
        None => (pattern.to_string(), true),
    };
    let pattern_labels: Vec<&str> = pattern.split('.').collect();
    let host_labels: Vec<&str> = host.split('.').collect();
    labels_match(&pattern_labels, &host_labels, leftmost).then(|| {
        let exact = !pattern.contains('*');
        let literal = pattern.bytes().filter(|&b| b != b'*').count();
        (exact, literal)
    })
}

/// Does normalised `pattern` match normalised `host`, and how specifically?
pub fn match_pattern(pattern: &str, host: &str) -> Option<Spec> {
    match pattern.strip_prefix('.') {
        Some(rest) => {
            let bare = match_plain(rest, host);
            let starred = match_plain(&format!("*.{rest}"), host);
            bare.max(starred)
        }
        None => match_plain(pattern, host),
    }
}

/// Every matching pattern index once, most specific first, ties in add order.
pub fn find_all(patterns: &[String], host: &str) -> Vec<(usize, Spec)> {
    let mut hits: Vec<(usize, Spec)> =
        patterns.iter().enumerate().filter_map(|(id, p)| match_pattern(p, host).map(|spec| (id, spec))).collect();
    hits.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    hits
}

/// What `Host::new` must return for ASCII input whose labels are not `xn--` A-labels (those go
/// through punycode validation, which this oracle does not model): lowercase, one trailing dot
/// stripped, valid iff non-empty labels of at most 63 bytes, at most 253 bytes, bytes in
/// `[a-z0-9-_.]`. `None` when the oracle does not apply.
pub fn ascii_host_oracle(input: &[u8]) -> Option<Result<String, ()>> {
    if !input.is_ascii() {
        return None;
    }
    let lower = input.to_ascii_lowercase();
    let name = lower.strip_suffix(b".").unwrap_or(&lower);
    if name.split(|&b| b == b'.').any(|l| l.starts_with(b"xn--")) {
        return None;
    }
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.iter().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.'))
        && name.split(|&b| b == b'.').all(|l| !l.is_empty() && l.len() <= 63);
    Some(if valid { Ok(String::from_utf8_lossy(name).into_owned()) } else { Err(()) })
}
