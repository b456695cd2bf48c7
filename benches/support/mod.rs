//! Helpers for the matcher benchmark: the synthetic workload ([`synth`]), the hash-map baseline
//! ([`hash_suffix`]) and the `RegexSet` baseline ([`regex_set`]), plus what the two baselines share:
//! the specificity they report and the host normalisation they apply before matching.

#[allow(dead_code)] // the reload and decide benches install it; the matcher bench does not
pub(crate) mod counting;
pub(crate) mod hash_suffix;
pub(crate) mod regex_set;
pub(crate) mod synth;

/// A baseline's specificity, ordered like `hostgate_matcher::Specificity`: exact beats any
/// wildcard, then more literal (non-`*`) bytes win.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Spec {
    pub(crate) exact: bool,
    pub(crate) literal: u16,
}

impl Spec {
    pub(crate) fn new(exact: bool, literal: u16) -> Self {
        Self { exact, literal }
    }
}

/// Lowercases `host` into `buf` and strips one trailing dot. Returns `None` for what the contract
/// calls an invalid host: empty, longer than 253 bytes, an empty label or one over 63 bytes, or a
/// byte outside `[a-z0-9-_.]` after lowercasing. The baselines do not implement IDNA: a non-ASCII
/// host is simply rejected (the benchmark's queries are all ASCII).
pub(crate) fn normalize<'b>(host: &str, buf: &'b mut [u8; 253]) -> Option<&'b str> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > buf.len() {
        return None;
    }
    let mut label_len = 0;
    for (out, &b) in buf.iter_mut().zip(host.as_bytes()) {
        let b = b.to_ascii_lowercase();
        match b {
            b'.' => {
                if label_len == 0 {
                    return None;
                }
                label_len = 0;
            }
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => {
                label_len += 1;
                if label_len > 63 {
                    return None;
                }
            }
            _ => return None,
        }
        *out = b;
    }
    if label_len == 0 {
        return None;
    }
    std::str::from_utf8(&buf[..host.len()]).ok()
}
