//! Host normalisation: one pass that lowercases, validates and copies a name into a fixed buffer.
//!
//! This module owns the question "is this a host name we can match, and what is its canonical
//! form?". It does not know about patterns; [`crate::Pattern`] uses the same byte class and IDNA
//! conversion so that rules and hosts are normalised alike.

use std::fmt;

use crate::error::{InvalidHost, InvalidHostKind};

/// The longest name we accept, in bytes, without the trailing dot (RFC 1035's 255 octets on the wire).
pub(crate) const MAX_NAME: usize = 253;
/// The longest label we accept, in bytes.
pub(crate) const MAX_LABEL: usize = 63;

/// Maps every byte to its lowercase form if it may appear in a host name, `.` to itself, and every
/// other byte to 0. The reference for [`swar::normalise`] (tested against it), and used to locate
/// the offending byte of an invalid name.
static HOST_BYTE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = match c {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => c,
            b'A'..=b'Z' => c + 32,
            _ => 0,
        };
        b += 1;
    }
    t
};

/// A normalised, validated host name: lowercase ASCII (punycode A-labels for IDNs), no trailing
/// dot, no empty label, labels of at most 63 bytes, at most 253 bytes, bytes in `[a-z0-9-_.]`.
///
/// It lives on the stack (no allocation for ASCII input), so normalising a name per connection
/// costs one pass over its bytes.
///
/// ```
/// use hostgate_matcher::Host;
/// assert_eq!(Host::new("LOGIN.Live.COM.").unwrap().as_str(), "login.live.com");
/// assert_eq!(Host::new("bücher.example").unwrap().as_str(), "xn--bcher-kva.example");
/// assert!(Host::new("a..b").is_err());
/// ```
#[derive(Clone)]
pub struct Host {
    /// The name, then padding that lets the matcher hash a label with whole 8-byte loads.
    buf: [u8; BUF],
    /// Bit i set when byte i of the name is a dot: labels are found without rescanning bytes.
    dots: [u64; 4],
    len: u8,
}

/// The buffer size: the longest name plus room for an 8-byte load at its last byte.
pub(crate) const BUF: usize = 264;

impl Host {
    /// Normalises `name` (ASCII, or Unicode converted with IDNA UTS 46).
    #[inline]
    pub fn new(name: &str) -> Result<Host, InvalidHost> {
        Host::from_bytes(name.as_bytes())
    }

    /// Normalises raw bytes, e.g. a TLS SNI `host_name` or an HTTP `Host` header. Non-ASCII bytes
    /// must be UTF-8 and are converted with IDNA (UTS 46).
    #[inline]
    pub fn from_bytes(name: &[u8]) -> Result<Host, InvalidHost> {
        let mut host = Host::empty();
        host.set(name)?;
        Ok(host)
    }

    /// An empty buffer for [`Host::set`] (not a valid host until set).
    #[inline(always)]
    pub(crate) fn empty() -> Host {
        Host { buf: [0; BUF], dots: [0; 4], len: 0 }
    }

    /// Normalises `name` into this buffer, in place (the matcher's lookups use this to avoid
    /// moving a 264-byte value out of a `Result`). On error the buffer's content is unspecified.
    #[inline(always)]
    pub(crate) fn set(&mut self, name: &[u8]) -> Result<(), InvalidHost> {
        if name.is_ascii() {
            return self.set_ascii(name);
        }
        let text = std::str::from_utf8(name).map_err(|_| InvalidHost::new(InvalidHostKind::Idna))?;
        let ascii = to_ascii(text).ok_or_else(|| InvalidHost::new(InvalidHostKind::Idna))?;
        self.set_ascii(ascii.as_bytes())
    }

    #[inline(always)]
    fn set_ascii(&mut self, name: &[u8]) -> Result<(), InvalidHost> {
        let name = name.strip_suffix(b".").unwrap_or(name);
        if name.is_empty() {
            return Err(InvalidHost::new(InvalidHostKind::Empty));
        }
        if name.len() > MAX_NAME {
            return Err(InvalidHost::new(InvalidHostKind::NameTooLong));
        }
        let len = name.len();
        self.buf[..len].copy_from_slice(name);
        // Eight bytes at a time (SWAR): lowercase, validate, and mark the dots in one pass. The
        // buffer is longer than any name by 11 bytes, so every word load is in bounds; the bytes
        // past the name are masked off and written back as zeros.
        let mut bad = 0u64;
        let mut dots = [0u64; 4];
        for k in 0..len.div_ceil(8) {
            let at = 8 * k;
            let word = u64::from_le_bytes(self.buf[at..at + 8].try_into().unwrap_or([0; 8]));
            let keep = if len - at >= 8 { u64::MAX } else { (1u64 << (8 * (len - at))) - 1 };
            let (lower, valid, dot) = swar::normalise(word & keep);
            bad |= !valid & keep & swar::HIGH;
            self.buf[at..at + 8].copy_from_slice(&(lower & keep).to_le_bytes());
            dots[k / 8] |= swar::movemask(dot) << (8 * (k % 8));
        }
        if bad != 0 {
            let offset = name.iter().position(|&b| HOST_BYTE[usize::from(b)] == 0).unwrap_or(0);
            return Err(InvalidHost::new(InvalidHostKind::InvalidByte { byte: name[offset], offset }));
        }
        // Labels: the gaps between dots (and the ends) must be 1..=63 bytes.
        let mut start = 0;
        let mut rest = dots;
        loop {
            let end = first_set(&rest).unwrap_or(name.len());
            if end == start {
                return Err(InvalidHost::new(InvalidHostKind::EmptyLabel));
            }
            if end - start > MAX_LABEL {
                return Err(InvalidHost::new(InvalidHostKind::LabelTooLong));
            }
            if end == name.len() {
                break;
            }
            rest[end >> 6] &= !(1 << (end & 63));
            start = end + 1;
        }
        self.dots = dots;
        // name.len() <= MAX_NAME (253) was checked above.
        self.len = name.len() as u8;
        Ok(())
    }

    /// The position of the last dot before byte `end`, if any.
    #[inline(always)]
    pub(crate) fn dot_before(&self, end: usize) -> Option<usize> {
        let mut w = end >> 6;
        let mut bits = self.dots.get(w).copied().unwrap_or(0) & ((1u64 << (end & 63)) - 1);
        loop {
            if bits != 0 {
                return Some(w * 64 + 63 - bits.leading_zeros() as usize);
            }
            if w == 0 {
                return None;
            }
            w -= 1;
            bits = self.dots[w];
        }
    }

    /// The buffer: the name, then bytes that lookups mask off (zeros for a fresh host).
    #[inline]
    pub(crate) fn padded(&self) -> &[u8; BUF] {
        &self.buf
    }

    /// The normalised name.
    pub fn as_str(&self) -> &str {
        // Only bytes from HOST_BYTE (ASCII) are ever written.
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    /// The normalised name as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    /// The number of labels.
    pub fn label_count(&self) -> usize {
        1 + self.as_bytes().iter().filter(|&&b| b == b'.').count()
    }
}

/// Byte-parallel arithmetic on eight ASCII bytes in a `u64` (every byte below 0x80).
mod swar {
    const ONES: u64 = 0x0101_0101_0101_0101;
    /// The top bit of every byte.
    pub(super) const HIGH: u64 = 0x8080_8080_8080_8080;

    /// 0x80 in each byte that is within `lo..=hi`, exactly: `b + (0x80 - lo)` reaches 0x80 iff
    /// `b >= lo`, `b + (0x7f - hi)` iff `b > hi`, and neither sum carries out of its byte.
    #[inline(always)]
    fn within(w: u64, lo: u8, hi: u8) -> u64 {
        (w.wrapping_add(ONES * u64::from(0x80 - lo)) & !w.wrapping_add(ONES * u64::from(0x7f - hi))) & HIGH
    }

    /// 0x80 in each byte equal to `c`, exactly (no borrows between bytes).
    #[inline(always)]
    fn equal(w: u64, c: u8) -> u64 {
        let x = w ^ (ONES * u64::from(c));
        !(((x & !HIGH).wrapping_add(!HIGH)) | x) & HIGH
    }

    /// The lowercased word, 0x80 in each byte that may appear in a host name (`[a-z0-9-_.]`
    /// after lowercasing), and 0x80 in each dot.
    #[inline(always)]
    pub(super) fn normalise(w: u64) -> (u64, u64, u64) {
        let upper = within(w, b'A', b'Z');
        let dot = equal(w, b'.');
        let valid = upper | within(w, b'a', b'z') | within(w, b'0', b'9') | within(w, b'-', b'.') | equal(w, b'_');
        (w | (upper >> 2), valid, dot)
    }

    /// Bit j set for each byte j of `w` that has its top bit set (`w` has no other bits).
    #[inline(always)]
    pub(super) fn movemask(w: u64) -> u64 {
        ((w >> 7).wrapping_mul(0x0102_0408_1020_4080)) >> 56
    }
}

/// The lowest set bit of a 256-bit set.
#[inline(always)]
fn first_set(bits: &[u64; 4]) -> Option<usize> {
    bits.iter().enumerate().find(|(_, &w)| w != 0).map(|(i, w)| i * 64 + w.trailing_zeros() as usize)
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Host").field(&self.as_str()).finish()
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq for Host {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}
impl Eq for Host {}

impl std::str::FromStr for Host {
    type Err = InvalidHost;
    fn from_str(s: &str) -> Result<Host, InvalidHost> {
        Host::new(s)
    }
}

/// UTS 46 ToASCII with the URL Standard's deny list (which lets `*` through, so patterns can use
/// it too). Returns `None` when the conversion reports an error.
pub(crate) fn to_ascii(text: &str) -> Option<String> {
    idna::domain_to_ascii(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(s: &str) -> InvalidHostKind {
        Host::new(s).unwrap_err().kind().clone()
    }

    #[test]
    fn normalises_case_and_one_trailing_dot() {
        assert_eq!(Host::new("LOGIN.Live.COM.").unwrap().as_str(), "login.live.com");
        assert_eq!(Host::new("a_b-1.x").unwrap().as_str(), "a_b-1.x");
        assert_eq!(kind("a.b.."), InvalidHostKind::EmptyLabel);
    }

    #[test]
    fn rejects_bad_shapes() {
        assert_eq!(kind(""), InvalidHostKind::Empty);
        assert_eq!(kind("."), InvalidHostKind::Empty);
        assert_eq!(kind(".a"), InvalidHostKind::EmptyLabel);
        assert_eq!(kind("a..b"), InvalidHostKind::EmptyLabel);
        assert_eq!(kind(&format!("{}.com", "a".repeat(64))), InvalidHostKind::LabelTooLong);
        assert!(Host::new(&format!("{}.com", "a".repeat(63))).is_ok());
        let long = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61)].join(".");
        assert_eq!(long.len(), 253);
        assert!(Host::new(&long).is_ok());
        assert!(Host::new(&format!("{long}.")).is_ok());
        assert_eq!(kind(&format!("{long}x")), InvalidHostKind::NameTooLong);
        assert_eq!(kind("a b.com"), InvalidHostKind::InvalidByte { byte: b' ', offset: 1 });
        assert_eq!(kind("a*.com"), InvalidHostKind::InvalidByte { byte: b'*', offset: 1 });
        assert_eq!(kind("a\0.com"), InvalidHostKind::InvalidByte { byte: 0, offset: 1 });
        assert_eq!(Host::from_bytes(b"\xff.com").unwrap_err().kind(), &InvalidHostKind::Idna);
    }

    #[test]
    fn swar_agrees_with_the_byte_table() {
        for b in 0u8..0x80 {
            for pos in 0..8 {
                let w = u64::from(b) << (8 * pos) | 0x6161_6161_6161_6161 & !(0xff << (8 * pos));
                let (lower, valid, dot) = swar::normalise(w);
                let t = HOST_BYTE[usize::from(b)];
                assert_eq!((lower >> (8 * pos)) as u8, if t == 0 { (lower >> (8 * pos)) as u8 } else { t }, "{b:#x}");
                assert_eq!((valid >> (8 * pos + 7)) & 1 == 1, t != 0, "valid {b:#x} at {pos}");
                assert_eq!((dot >> (8 * pos + 7)) & 1 == 1, b == b'.', "dot {b:#x}");
                // The other bytes ('a') are valid, lowercase and not dots.
                assert_eq!(valid | (0x80 << (8 * pos)), swar::HIGH);
            }
        }
        for m in 0u64..256 {
            let w: u64 = (0..8).map(|j| if m >> j & 1 == 1 { 0x80u64 << (8 * j) } else { 0 }).sum();
            assert_eq!(swar::movemask(w), m);
        }
    }

    #[test]
    fn dots_are_found_from_the_right() {
        let h = Host::new("a.bc.d").unwrap();
        assert_eq!(h.dot_before(6), Some(4));
        assert_eq!(h.dot_before(4), Some(1));
        assert_eq!(h.dot_before(1), None);
        let long = [["x"; 100].join("."), "yy".to_string()].join(".");
        let h = Host::new(&long).unwrap();
        assert_eq!(h.dot_before(long.len()), Some(199));
        assert_eq!(h.dot_before(199), Some(197));
        assert_eq!(h.dot_before(64), Some(63));
        assert_eq!(h.dot_before(63), Some(61));
        assert_eq!(h.label_count(), 101);
    }

    #[test]
    fn converts_unicode_to_punycode() {
        assert_eq!(Host::new("Bücher.Example").unwrap().as_str(), "xn--bcher-kva.example");
        assert_eq!(Host::new("xn--bcher-kva.example").unwrap().as_str(), "xn--bcher-kva.example");
        // Fullwidth dot is a label separator under UTS 46.
        assert_eq!(Host::new("bücher\u{ff0e}example").unwrap().as_str(), "xn--bcher-kva.example");
        assert_eq!(Host::new("münchen.de").unwrap().label_count(), 2);
    }
}
