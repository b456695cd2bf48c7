//! The flat probe table for the common shapes: exact names, `*.suffix` rules (whose `*` is one
//! or more labels, or exactly one), and the literal tails under which glob rules are filed.
//!
//! Layout: buckets of eight slots in one 64-byte cache line: eight 32-bit fingerprints of the keys'
//! hashes, then the eight 32-bit offsets of their records in a byte arena, so that the eight
//! fingerprints are compared at once, without branches. A record holds the kind, the key bytes and
//! a 32-bit id. A lookup hashes the key, reads the home bucket, and compares the key bytes of the
//! records whose fingerprint agrees, so a fingerprint collision can cost time but never produce a
//! wrong answer.
//!
//! Insertion fills a bucket from the left; a key whose home bucket is full goes to the next bucket
//! with room, and every full bucket it passes is marked as having overflowed (a spare bit of its
//! last fingerprint). A probe stops at the first bucket that has not overflowed, so a lookup almost
//! always costs one cache line (the idea of F14's and SwissTable's overflow counts). There are no
//! deletions: a table is built once and replaced whole.
//!
//! This module owns the memory layout; it does not know what an id means.

use crate::hash;

/// Slots per bucket.
const BUCKET: usize = 8;
/// `u32` words per bucket: 8 fingerprints + 8 offsets = 64 bytes.
const WORDS: usize = 2 * BUCKET;
/// Records per bucket on average, in tenths (6.4 of 8: load factor 0.8). Measured on 20k rules:
/// 0.75 costs 36.6 heap bytes per rule and 1,002 instructions per lookup, 0.8 35.9 and 1,028,
/// 0.85 35.3 and 1,095 (longer overflow chains; the filter keeps most absent keys away).
const FILL_TENTHS: usize = 64;

/// Set in a bucket's last fingerprint when a key homed at or passing through it went further.
const OVERFLOW: u32 = 2;
/// A slot's word: bit 0 set (occupied), bit 1 the overflow bit, bits 2-3 the record's [`Kind`],
/// bits 4-31 the fingerprint.
const KIND_SHIFT: u32 = 2;
/// The bits that are not fingerprint.
const NOT_FP: u32 = 0b1110;

/// What a record's key is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    /// An exact name; the id is a pattern id.
    Exact = 0,
    /// The literal suffix of a `*.suffix` rule; the id is a pattern id.
    Suffix = 1,
    /// The literal tail of one or more glob rules; the id is a glob bucket index.
    Tail = 2,
    /// The literal suffix of a `*.suffix` rule whose `*` is exactly one label
    /// ([`Pattern::one_label`](crate::Pattern::one_label)); the id is a pattern id.
    OneLabel = 3,
}

impl Kind {
    /// The kind of a slot's two kind bits.
    fn from_u8(b: u8) -> Kind {
        match b {
            0 => Kind::Exact,
            1 => Kind::Suffix,
            2 => Kind::Tail,
            _ => Kind::OneLabel,
        }
    }
}

/// Record: key length (1 byte), id (3 bytes when every id fits, else 4), key bytes.

#[derive(Debug)]
pub(crate) struct Table {
    slots: Box<[u32]>,
    buckets: u64,
    arena: Box<[u8]>,
    /// Bytes per record id: 3 or 4.
    id_width: usize,
    /// The mask of an id read as four bytes: 0xff_ffff or u32::MAX.
    id_mask: u32,
    /// A blocked Bloom filter over every key: one 64-bit word per key, three bits set in it.
    /// Most label suffixes of a host are not keys; the filter (12 bits per key, small enough to
    /// stay in cache) rules them out before their bucket, a likely cache miss, is read.
    filter: Box<[u64]>,
    filter_words: u64,
}

/// Filter bits per key (false positive rate about 2% with three bits in a 64-bit block).
const FILTER_BITS_PER_KEY: usize = 12;

/// The filter word and mask of a key hash (from bits the bucket index and fingerprint leave
/// alone as much as possible, remixed).
#[inline(always)]
fn filter_slot(h: u64, words: u64) -> (usize, u64) {
    let g = h.rotate_left(23).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let word = (((g >> 32) * words) >> 32) as usize;
    let mask = 1u64 << (g & 63) | 1u64 << ((g >> 6) & 63) | 1u64 << ((g >> 12) & 63);
    (word, mask)
}

/// A record to insert.
pub(crate) struct Entry<'a> {
    pub(crate) kind: Kind,
    pub(crate) key: &'a str,
    pub(crate) id: u32,
}

#[inline(always)]
fn home(h: u64, buckets: u64) -> usize {
    // Lemire's fast range reduction of the low 32 bits; the fingerprint uses the high 32.
    (((h & 0xffff_ffff) * buckets) >> 32) as usize
}

/// A slot's fingerprint: 28 bits of the hash above bit 0 set (an occupied slot is never 0), the
/// overflow and kind bits clear, and never 1 (see [`matches`]).
#[inline(always)]
fn fingerprint(h: u64) -> u32 {
    let fp = ((h >> 32) as u32 | 1) & !NOT_FP;
    fp | u32::from(fp == 1) << 4
}

/// A bit mask of the slots whose fingerprint (overflow and kind bits ignored) equals `fp`: bit j
/// for slot j.
///
/// Branch-free, two fingerprints per 64-bit word (SWAR), since the crate is safe Rust without SIMD
/// intrinsics: a 32-bit lane of `x = pair ^ fp` is zero when the slot matches, and
/// `(x - 1) & !x` has the lane's top bit set for every zero lane. A borrow out of a zero low lane
/// also flags the high lane when that lane of `x` is 1. Fingerprints are odd with bits 1-3 clear, so
/// that could only happen for an empty slot (0) with `fp` 1, and no fingerprint is 1: the mask is
/// exact. (Were it not, [`Table::check`] compares the key bytes anyway.)
#[inline(always)]
fn matches(fps: &[u32], fp: u32) -> u32 {
    const LOW: u64 = 0x0000_0001_0000_0001;
    const HIGH: u64 = 0x8000_0000_8000_0000;
    const IGNORE: u64 = !((NOT_FP as u64) << 32 | NOT_FP as u64);
    let want = u64::from(fp) * LOW;
    let mut out = 0u32;
    for (k, pair) in fps.chunks_exact(2).enumerate() {
        let word = u64::from(pair[0]) | u64::from(pair[1]) << 32;
        let x = (word & IGNORE) ^ want;
        let zero = x.wrapping_sub(LOW) & !x & HIGH;
        out |= (((zero >> 31) & 1) as u32 | ((zero >> 62) & 2) as u32) << (2 * k);
    }
    out
}

impl Table {
    pub(crate) fn build(entries: &[Entry<'_>]) -> Table {
        let buckets = (entries.len() * 10).div_ceil(FILL_TENTHS).max(1);
        let filter_words = (entries.len() * FILTER_BITS_PER_KEY).div_ceil(64).max(1);
        let mut filter = vec![0u64; filter_words].into_boxed_slice();
        let mut slots = vec![0u32; buckets * WORDS].into_boxed_slice();
        let id_width = if entries.iter().all(|e| e.id < 1 << 24) { 3 } else { 4 };
        // One spare byte at the end, so that an id is always read as four bytes and masked.
        let arena_len: usize = entries.iter().map(|e| 1 + id_width + e.key.len()).sum::<usize>() + 1;
        let mut arena = Vec::with_capacity(arena_len);
        for e in entries {
            let offset = arena.len() as u32;
            // Keys are normalised names: at most 253 bytes.
            arena.push(e.key.len() as u8);
            arena.extend_from_slice(&e.id.to_le_bytes()[..id_width]);
            arena.extend_from_slice(e.key.as_bytes());
            let h = hash::name(e.key.as_bytes());
            let (word, mask) = filter_slot(h, filter_words as u64);
            filter[word] |= mask;
            let mut b = home(h, buckets as u64);
            loop {
                let bucket = &mut slots[b * WORDS..(b + 1) * WORDS];
                if let Some(j) = bucket[..BUCKET].iter().position(|&f| f == 0) {
                    bucket[j] = fingerprint(h) | (e.kind as u32) << KIND_SHIFT;
                    bucket[BUCKET + j] = offset;
                    break;
                }
                bucket[BUCKET - 1] |= OVERFLOW;
                b = if b + 1 == buckets { 0 } else { b + 1 };
            }
        }
        arena.push(0);
        Table {
            slots,
            id_mask: if id_width == 3 { 0xff_ffff } else { u32::MAX },
            buckets: buckets as u64,
            arena: arena.into_boxed_slice(),
            id_width,
            filter,
            filter_words: filter_words as u64,
        }
    }

    /// Whether some key may have hash `h` (false: certainly none).
    #[inline(always)]
    pub(crate) fn may_contain(&self, h: u64) -> bool {
        let (word, mask) = filter_slot(h, self.filter_words);
        self.filter.get(word).is_some_and(|w| w & mask == mask)
    }

    /// Reads the home bucket of hash `h` and returns a word of it, so that a caller can start the
    /// memory accesses of several probes before it needs any of them (the values are not used;
    /// the point is that the loads are issued together and their cache misses overlap).
    #[inline(always)]
    pub(crate) fn touch(&self, h: u64) -> u32 {
        let b = home(h, self.buckets);
        self.slots.get(b * WORDS + BUCKET - 1).copied().unwrap_or(0)
    }

    /// Calls `hit` with the kind and id of every record whose key is `key` (whose hash is `h`).
    #[inline(always)]
    pub(crate) fn probe(&self, h: u64, key: &[u8], mut hit: impl FnMut(Kind, u32)) {
        let fp = fingerprint(h);
        let mut b = home(h, self.buckets);
        loop {
            let Some(bucket) = self.slots.get(b * WORDS..(b + 1) * WORDS) else {
                return;
            };
            let (fps, offsets) = bucket.split_at(BUCKET);
            let mut found = matches(fps, fp);
            while found != 0 {
                let j = found.trailing_zeros() as usize;
                let kind = Kind::from_u8(((fps[j] >> KIND_SHIFT) & 3) as u8);
                self.check(offsets[j] as usize, kind, key, &mut hit);
                found &= found - 1;
            }
            if fps[BUCKET - 1] & OVERFLOW == 0 {
                return;
            }
            b = if b + 1 == self.buckets as usize { 0 } else { b + 1 };
        }
    }

    #[inline(always)]
    fn check(&self, offset: usize, kind: Kind, key: &[u8], hit: &mut impl FnMut(Kind, u32)) {
        let start = offset + 1 + self.id_width;
        if self.arena.get(offset).map(|&len| usize::from(len)) != Some(key.len()) {
            return;
        }
        if self.arena.get(start..start + key.len()) == Some(key) {
            if let Some(&[a, b, c, d]) = self.arena.get(offset + 1..offset + 5) {
                hit(kind, u32::from_le_bytes([a, b, c, d]) & self.id_mask);
            }
        }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.slots.len() * 4 + self.arena.len() + self.filter.len() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_record_and_nothing_else() {
        let names: Vec<String> = (0..5000).map(|i| format!("n{i}.example.com")).collect();
        let entries: Vec<Entry<'_>> = names
            .iter()
            .enumerate()
            .flat_map(|(i, n)| {
                [Entry { kind: Kind::Exact, key: n, id: i as u32 }, Entry { kind: Kind::Suffix, key: n, id: 7 }]
            })
            .collect();
        let t = Table::build(&entries);
        for (i, n) in names.iter().enumerate() {
            let mut got = Vec::new();
            t.probe(hash::name(n.as_bytes()), n.as_bytes(), |k, id| got.push((k, id)));
            got.sort_by_key(|&(k, _)| k as u8);
            assert_eq!(got, vec![(Kind::Exact, i as u32), (Kind::Suffix, 7)], "{n}");
        }
        for n in &names {
            assert!(t.may_contain(hash::name(n.as_bytes())), "the filter has no false negatives");
        }
        let misses = (0..10_000).filter(|i| t.may_contain(hash::name(format!("m{i}.example.net").as_bytes()))).count();
        assert!(misses < 500, "false positive rate {misses}/10000");
        let mut none = 0;
        t.probe(hash::name(b"nope.example.com"), b"nope.example.com", |_, _| none += 1);
        assert_eq!(none, 0);
        let empty = Table::build(&[]);
        empty.probe(hash::name(b"a.b"), b"a.b", |_, _| none += 1);
        assert_eq!(none, 0);
    }

    #[test]
    fn ids_of_three_and_four_bytes() {
        for big in [(1u32 << 24) - 1, 1 << 24, u32::MAX - 1] {
            let entries = [
                Entry { kind: Kind::Exact, key: "a.example", id: big },
                Entry { kind: Kind::Tail, key: "b.example", id: 7 },
                Entry { kind: Kind::OneLabel, key: "c.example", id: big - 1 },
                Entry { kind: Kind::Suffix, key: "c.example", id: 9 },
            ];
            let t = Table::build(&entries);
            assert_eq!(t.id_width, if big < 1 << 24 { 3 } else { 4 });
            for e in &entries {
                let mut got = Vec::new();
                t.probe(hash::name(e.key.as_bytes()), e.key.as_bytes(), |k, id| got.push((k as u8, id)));
                got.sort_unstable();
                let mut want: Vec<(u8, u32)> =
                    entries.iter().filter(|o| o.key == e.key).map(|o| (o.kind as u8, o.id)).collect();
                want.sort_unstable();
                assert_eq!(got, want, "{}", e.key);
            }
        }
    }

    #[test]
    fn swar_matches() {
        // Occupied fingerprints are odd with bit 1 clear; the last may carry the overflow bit.
        // Fingerprints are 17, 33, 49, ... (bit 0 set, bits 1-3 clear); kinds sit in bits 2-3.
        let fps = [17, 33 | 4, 17 | 8, 49, 17, 65, 0, 17 | OVERFLOW | 4];
        assert_eq!(matches(&fps, 17), 0b1001_0101);
        assert_eq!(matches(&fps, 49), 0b0000_1000);
        assert_eq!(matches(&fps, 33), 0b0000_0010);
        assert_eq!(matches(&fps, 81), 0);
        // Why fingerprint 1 is never used: an empty slot after a match would be flagged too.
        assert_eq!(matches(&[1, 0, 0, 0, 0, 0, 0, 0], 1), 0b11);
        for h in [0u64, 1 << 32, 3 << 32, u64::MAX] {
            let fp = fingerprint(h);
            assert!(fp & 1 == 1 && fp & NOT_FP == 0 && fp != 1, "{h:x} -> {fp}");
        }
    }

    #[test]
    fn overflow_chains_are_short_and_complete() {
        let names: Vec<String> = (0..20_000).map(|i| format!("w{}x{}.dom{}.com", i * 7919 % 1000, i, i % 50)).collect();
        let entries: Vec<Entry<'_>> =
            names.iter().enumerate().map(|(i, n)| Entry { kind: Kind::Exact, key: n, id: i as u32 }).collect();
        let t = Table::build(&entries);
        for (i, n) in names.iter().enumerate() {
            let mut found = None;
            t.probe(hash::name(n.as_bytes()), n.as_bytes(), |_, id| found = Some(id));
            assert_eq!(found, Some(i as u32));
        }
        let overflowed = t.slots.chunks(WORDS).filter(|b| b[BUCKET - 1] & OVERFLOW != 0).count();
        let buckets = t.slots.len() / WORDS;
        assert!(overflowed * 2 < buckets, "{overflowed} of {buckets} buckets overflowed");
    }
}
