//! The hash of a label suffix, computed label by label from the right.
//!
//! Every proper label suffix of a host is a candidate key (for `*.suffix` rules and the tails of
//! glob rules) and the whole host is the key of exact rules. Hashing each label once and chaining
//! the label hashes from the right gives all of those keys in one pass, so a lookup can compute
//! every key first and then issue the table probes together.

const K0: u64 = 0x243f_6a88_85a3_08d3;
const K1: u64 = 0x1319_8a2e_0370_7344;
const K2: u64 = 0xa409_3822_299f_31d0;
const SEED: u64 = 0x082e_fa98_ec4e_6c89;

#[inline(always)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Hash of one label (1..=63 bytes, no dot), from its bytes zero-padded to whole 8-byte words.
#[inline(always)]
pub(crate) fn label(l: &[u8]) -> u64 {
    let mut h = fold_mul(l.len() as u64 ^ K2, K0);
    for c in l.chunks(8) {
        let mut w = [0u8; 8];
        for (d, s) in w.iter_mut().zip(c) {
            *d = *s;
        }
        h = fold_mul(h ^ u64::from_le_bytes(w), K1);
    }
    h
}

/// The same hash as [`label`] for the label `buf[start..start + len]`, where `buf` is zero-padded
/// so that every 8-byte load from `start` stays in bounds: whole-word loads, bytes past the label
/// masked off.
#[inline(always)]
pub(crate) fn label_in(buf: &[u8; crate::host::BUF], start: usize, len: usize) -> u64 {
    let mut h = fold_mul(len as u64 ^ K2, K0);
    let mut i = 0;
    while i < len {
        let at = start + i;
        let word = match buf.get(at..at + 8) {
            Some(w) => u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]),
            None => 0,
        };
        let left = len - i;
        let w = if left >= 8 { word } else { word & ((1u64 << (8 * left)) - 1) };
        h = fold_mul(h ^ w, K1);
        i += 8;
    }
    h
}

/// The key of the empty suffix, to which labels are added from the right.
pub(crate) const EMPTY: u64 = SEED;

/// Extends the key of a suffix by one label on its left.
#[inline(always)]
pub(crate) fn push(suffix: u64, label_hash: u64) -> u64 {
    fold_mul(suffix ^ label_hash, K0 ^ K1)
}

/// The key of a whole normalised name (no leading or trailing dot).
pub(crate) fn name(s: &[u8]) -> u64 {
    s.rsplit(|&b| b == b'.').fold(EMPTY, |h, l| push(h, label(l)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chaining_matches_whole_name() {
        let a = name(b"login.live.com");
        let b = push(push(push(EMPTY, label(b"com")), label(b"live")), label(b"login"));
        assert_eq!(a, b);
        assert_ne!(name(b"a.bc"), name(b"ab.c"));
        assert_ne!(name(b"abcdefgh"), name(b"abcdefgh0"));
    }

    #[test]
    fn padded_loads_agree_with_bytes() {
        let mut buf = [0u8; crate::host::BUF];
        let text = b"a.bcdefghijklmnopq.r-s_t.uvwxyz0123456789";
        buf[..text.len()].copy_from_slice(text);
        let mut start = 0;
        for l in text.split(|&b| b == b'.') {
            assert_eq!(label_in(&buf, start, l.len()), label(l), "{}", String::from_utf8_lossy(l));
            start += l.len() + 1;
        }
    }
}
