//! The flat probe table for the common shapes: exact names, `*.suffix` rules, and the literal
//! tails under which glob rules are filed.
//!
//! Layout: buckets of eight 8-byte slots (one cache line). A slot holds a 32-bit fingerprint of
//! the key's hash and the 32-bit offset of its record in a byte arena; the record holds the kind,
//! the key bytes and a 32-bit id. A lookup hashes the key, reads the home bucket, and compares the
//! key bytes of the records whose fingerprint agrees, so a fingerprint collision can cost time but
//! never produce a wrong answer. Insertion fills a bucket from the left and overflows into the next
//! one, so a probe stops at the first bucket that has an empty slot. There are no deletions: a
//! table is built once and replaced whole.
//!
//! This module owns the memory layout; it does not know what an id means.

use crate::hash;

/// Slots per bucket: 8 × 8 bytes = one 64-byte cache line.
const BUCKET: usize = 8;
/// Records per bucket on average (load factor 6.4 / 8 = 0.8).
const FILL_TENTHS: usize = 64;

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
}

impl Kind {
    fn from_u8(b: u8) -> Kind {
        match b {
            0 => Kind::Exact,
            1 => Kind::Suffix,
            _ => Kind::Tail,
        }
    }
}

/// Record header: kind (1), key length (1), id (4).
const HEADER: usize = 6;

#[derive(Debug)]
pub(crate) struct Table {
    slots: Box<[u64]>,
    buckets: u64,
    arena: Box<[u8]>,
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

#[inline(always)]
fn fingerprint(h: u64) -> u64 {
    (h >> 32) | 1
}

impl Table {
    pub(crate) fn build(entries: &[Entry<'_>]) -> Table {
        let buckets = (entries.len() * 10).div_ceil(FILL_TENTHS).max(1);
        let mut slots = vec![0u64; buckets * BUCKET].into_boxed_slice();
        let arena_len: usize = entries.iter().map(|e| HEADER + e.key.len()).sum();
        // Offset 0 is a valid record offset: an occupied slot always has a non-zero fingerprint.
        let mut arena = Vec::with_capacity(arena_len);
        for e in entries {
            let offset = arena.len() as u64;
            arena.push(e.kind as u8);
            // Keys are normalised names: at most 253 bytes.
            arena.push(e.key.len() as u8);
            arena.extend_from_slice(&e.id.to_le_bytes());
            arena.extend_from_slice(e.key.as_bytes());
            let h = hash::name(e.key.as_bytes());
            let slot = (fingerprint(h) << 32) | offset;
            let mut b = home(h, buckets as u64);
            'place: loop {
                for s in &mut slots[b * BUCKET..(b + 1) * BUCKET] {
                    if *s == 0 {
                        *s = slot;
                        break 'place;
                    }
                }
                b = if b + 1 == buckets { 0 } else { b + 1 };
            }
        }
        Table {
            slots,
            buckets: buckets as u64,
            arena: arena.into_boxed_slice(),
        }
    }

    /// Calls `hit` with the kind and id of every record whose key is `key` (whose hash is `h`).
    #[inline(always)]
    pub(crate) fn probe(&self, h: u64, key: &[u8], mut hit: impl FnMut(Kind, u32)) {
        let fp = fingerprint(h);
        let mut b = home(h, self.buckets);
        loop {
            let bucket = &self.slots[b * BUCKET..(b + 1) * BUCKET];
            for &s in bucket {
                if s == 0 {
                    return;
                }
                if s >> 32 == fp {
                    self.check(s as u32 as usize, key, &mut hit);
                }
            }
            b = if b + 1 == self.buckets as usize {
                0
            } else {
                b + 1
            };
        }
    }

    #[inline(always)]
    fn check(&self, offset: usize, key: &[u8], hit: &mut impl FnMut(Kind, u32)) {
        let Some(head) = self.arena.get(offset..offset + HEADER) else {
            return;
        };
        let len = usize::from(head[1]);
        if len != key.len() {
            return;
        }
        if self.arena.get(offset + HEADER..offset + HEADER + len) == Some(key) {
            let id = u32::from_le_bytes([head[2], head[3], head[4], head[5]]);
            hit(Kind::from_u8(head[0]), id);
        }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.slots.len() * 8 + self.arena.len()
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
                [
                    Entry {
                        kind: Kind::Exact,
                        key: n,
                        id: i as u32,
                    },
                    Entry {
                        kind: Kind::Suffix,
                        key: n,
                        id: 7,
                    },
                ]
            })
            .collect();
        let t = Table::build(&entries);
        for (i, n) in names.iter().enumerate() {
            let mut got = Vec::new();
            t.probe(hash::name(n.as_bytes()), n.as_bytes(), |k, id| {
                got.push((k, id))
            });
            got.sort_by_key(|&(k, _)| k as u8);
            assert_eq!(got, vec![(Kind::Exact, i as u32), (Kind::Suffix, 7)], "{n}");
        }
        let mut none = 0;
        t.probe(
            hash::name(b"nope.example.com"),
            b"nope.example.com",
            |_, _| none += 1,
        );
        assert_eq!(none, 0);
        let empty = Table::build(&[]);
        empty.probe(hash::name(b"a.b"), b"a.b", |_, _| none += 1);
        assert_eq!(none, 0);
    }
}
