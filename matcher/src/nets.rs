//! A compiled longest-prefix table of IP networks: destination address rules (`bypass
//! 52.112.0.0/14:443`, `deny [2603:1063::]/38`) and client groups chosen by source network.
//!
//! [`NetTableBuilder`] collects networks with a caller value each; [`NetTable`] answers, for an
//! address, every entry whose network contains it, longest prefix first ([`NetTable::matches`]),
//! so that a caller can skip an entry whose other constraints (port, scheme) do not fit and fall
//! through to the next shorter one.
//!
//! ```
//! use hostgate_matcher::NetTableBuilder;
//!
//! let mut b = NetTableBuilder::new();
//! b.add("52.112.0.0/14".parse().unwrap(), "bypass 443")
//!     .add("52.112.0.0/14".parse().unwrap(), "allow")
//!     .add("52.0.0.0/8".parse().unwrap(), "deny")
//!     .add("2603:1063::/38".parse().unwrap(), "deny v6");
//! let t = b.build();
//! let addr = "52.113.1.2".parse().unwrap();
//! let all: Vec<_> = t.matches(addr).map(|h| *h.value()).collect();
//! assert_eq!(all, ["bypass 443", "allow", "deny"]);
//! assert_eq!(t.longest(addr).map(|h| h.prefix_len()), Some(14));
//! // What a dual-stack listener reports for an IPv4 client is looked up as IPv4.
//! assert_eq!(t.longest("::ffff:52.1.2.3".parse().unwrap()).map(|h| *h.value()), Some("deny"));
//! assert!(t.longest("10.0.0.1".parse().unwrap()).is_none());
//! ```
//!
//! # Semantics
//!
//! | question | answer |
//! |---|---|
//! | which entries match `addr` | every entry whose network contains `addr` (network and broadcast addresses included) |
//! | in which order | longest prefix first; entries of the same network in `add` order |
//! | host bits of an added network (`10.1.2.3/16`) | cleared: the entry is `10.1.0.0/16` |
//! | `0.0.0.0/0`, `::/0` | every IPv4, respectively every IPv6, address |
//! | an IPv4-mapped IPv6 address (`::ffff:10.1.2.3`) | looked up as the IPv4 address (`IpAddr::to_canonical`) |
//! | IPv4 networks and IPv6 addresses, and the reverse | never match; so an IPv6 network inside `::ffff:0:0/96` never matches anything (callers should reject or convert such networks) |
//!
//! # Layout
//!
//! The entries are stored grouped by network (*slots*): networks sorted by family, then network
//! address, then prefix length, so that a network comes before every network inside it; the
//! entries of one network in `add` order; a map from entry id to slot serves [`NetTable::get`] and
//! [`NetTable::entries`]. Each distinct network is a *node* that knows its *parent* (the next
//! shorter network that contains it, or none) and where the parent's slots start.
//!
//! Networks are either disjoint or nested, so the address space of each family is cut by the
//! networks' first and one-past-last addresses into sorted, disjoint elementary intervals, each
//! with one *innermost* covering node (or none). An interval holds its start address (a `u32` for
//! IPv4, a `u128` stored as two `u64` for IPv6), its innermost node and that node's first slot, in
//! 12 bytes (IPv4) or 24 (IPv6): the search ends on the cache line that also holds the answer. The
//! first interval starts at address 0, so every address falls in exactly one; there are at most
//! `2n + 1` intervals for `n` distinct networks of a family.
//!
//! A lookup canonicalises the address, reads a first-level index on its top bits (sized to about
//! four intervals per slot, at most 2^16 slots) for the range of intervals that can hold it, binary
//! searches that range (`partition_point`) for its interval, and reads that interval's first slot:
//! for [`NetTable::longest`], typically three dependent cache lines (index, intervals, slot;
//! more only when many intervals crowd under one index slot), and a miss stops at the interval. [`NetTable::matches`] goes on along the slots while the network stays the same,
//! then to the parent node and its slots: one step per further matching network. No allocation,
//! no scan over unrelated networks.
//!
//! This module owns the intervals and their index, the node tree and the order of the entries; it
//! does not know what a value means, nor anything about ports or schemes (the caller's filter over
//! [`NetTable::matches`]).

use std::iter::FusedIterator;
use std::net::IpAddr;

use ipnet::IpNet;

/// No node, or no slot.
const NONE: u32 = u32::MAX;

/// Identifies an entry of a [`NetTable`]: its position in the order of
/// [`add`](NetTableBuilder::add) calls, from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NetId(u32);

impl NetId {
    /// The position as an index.
    pub fn as_usize(self) -> usize {
        self.0 as usize
    }
}

/// Collects networks with a value each, then compiles them into a [`NetTable`].
#[derive(Debug)]
pub struct NetTableBuilder<V> {
    entries: Vec<(IpNet, V)>,
}

impl<V> Default for NetTableBuilder<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> NetTableBuilder<V> {
    /// An empty builder.
    pub fn new() -> Self {
        Self { entries: Vec::new() }
    }

    /// Adds a network with its value. Host bits are cleared (`10.1.2.3/16` is `10.1.0.0/16`). Its
    /// [`NetId`] is the number of networks added before it; the same network may be added more
    /// than once.
    ///
    /// # Panics
    /// When `u32::MAX` entries were already added.
    pub fn add(&mut self, net: IpNet, value: V) -> &mut Self {
        assert!(self.entries.len() < NONE as usize, "a NetTable holds at most 2^32 - 1 entries");
        self.entries.push((net.trunc(), value));
        self
    }

    /// The number of networks added.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no network was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Compiles the table.
    pub fn build(self) -> NetTable<V> {
        NetTable::compile(self.entries)
    }
}

impl<V> Extend<(IpNet, V)> for NetTableBuilder<V> {
    fn extend<I: IntoIterator<Item = (IpNet, V)>>(&mut self, iter: I) {
        for (net, value) in iter {
            self.add(net, value);
        }
    }
}

/// A distinct network, for the walk up from it.
#[derive(Clone, Copy, Debug)]
struct Node {
    /// The next shorter network that contains this one, or [`NONE`].
    parent: u32,
    /// Where the parent's entries start in [`NetTable::slots`], or [`NONE`].
    parent_first: u32,
}

/// An entry, stored in network order.
#[derive(Debug)]
struct Slot<V> {
    net: IpNet,
    id: NetId,
    value: V,
}

/// An address of one family as an unsigned integer.
trait Key: Copy + Ord + std::fmt::Debug {
    /// How an interval start is stored: the same order, as few bytes and as little alignment as
    /// the address needs.
    type Packed: Copy + Ord + std::fmt::Debug;
    const ZERO: Self;
    fn pack(self) -> Self::Packed;
    /// The next address, or `None` after the last one.
    fn succ(self) -> Option<Self>;
    /// The top `bits` bits (0 when `bits` is 0).
    fn top(self, bits: u32) -> usize;
    /// The first address whose top `bits` bits are `j`.
    fn slot_start(j: usize, bits: u32) -> Self;
}

impl Key for u32 {
    type Packed = u32;
    const ZERO: Self = 0;

    #[inline(always)]
    fn pack(self) -> u32 {
        self
    }
    fn succ(self) -> Option<Self> {
        self.checked_add(1)
    }
    #[inline(always)]
    fn top(self, bits: u32) -> usize {
        self.checked_shr(Self::BITS - bits).unwrap_or(0) as usize
    }
    fn slot_start(j: usize, bits: u32) -> Self {
        (j as Self).checked_shl(Self::BITS - bits).unwrap_or(0)
    }
}

impl Key for u128 {
    /// High and low halves: compared in that order, like the `u128`, but 8-byte aligned, so that
    /// an interval takes 24 bytes rather than 32.
    type Packed = [u64; 2];
    const ZERO: Self = 0;

    #[inline(always)]
    fn pack(self) -> [u64; 2] {
        [(self >> 64) as u64, self as u64]
    }
    fn succ(self) -> Option<Self> {
        self.checked_add(1)
    }
    #[inline(always)]
    fn top(self, bits: u32) -> usize {
        self.checked_shr(Self::BITS - bits).unwrap_or(0) as usize
    }
    fn slot_start(j: usize, bits: u32) -> Self {
        (j as Self).checked_shl(Self::BITS - bits).unwrap_or(0)
    }
}

/// The largest first-level index: 2^16 slots.
const MAX_INDEX_BITS: u32 = 16;

/// An elementary interval: from `start` to the next interval's start, `node` is the innermost
/// network (or [`NONE`]), and its entries start at `first` in [`NetTable::slots`]. Start and
/// answer share a cache line, and the first entry is reached without reading the node.
#[derive(Clone, Copy, Debug)]
struct Interval<P> {
    start: P,
    node: u32,
    first: u32,
}

/// The elementary intervals of one address family.
#[derive(Debug)]
struct Family<K: Key> {
    /// Ascending by start; the first starts at 0.
    intervals: Box<[Interval<K::Packed>]>,
    /// `index[j]`: the interval holding the first address whose top `bits` bits are `j`; the last
    /// element is the last interval. An address with top bits `j` lies in an interval from
    /// `index[j]` to `index[j + 1]`.
    index: Box<[u32]>,
    bits: u32,
}

impl<K: Key> Family<K> {
    /// Cuts the address space by `nets` (first and last address of each distinct network, sorted
    /// by first address, then by prefix length: outer before inner), which are nodes `base..`;
    /// `firsts[node]` is where a node's entries start. Fills in each node's parent.
    fn build(nets: &[(K, K)], base: u32, firsts: &[u32], nodes: &mut [Node]) -> Self {
        let mut starts = vec![K::ZERO];
        let mut inner = vec![NONE];
        // A cut: from `start` on (until the next cut), `node` is the innermost network.
        let mut cut = |start: K, node: u32| {
            if starts.last() == Some(&start) {
                if let Some(last) = inner.last_mut() {
                    *last = node;
                }
            } else {
                starts.push(start);
                inner.push(node);
            }
        };
        // The networks containing the current position, outermost first: (last address, node).
        let mut open: Vec<(K, u32)> = Vec::new();
        for (i, &(first, last)) in nets.iter().enumerate() {
            let node = base + i as u32;
            while let Some(&(end, _)) = open.last() {
                if end >= first {
                    break;
                }
                open.pop();
                // `end` is below `first`, so it is not the last address.
                if let Some(next) = end.succ() {
                    cut(next, open.last().map_or(NONE, |o| o.1));
                }
            }
            let parent = open.last().map_or(NONE, |o| o.1);
            let parent_first = firsts.get(parent as usize).copied().unwrap_or(NONE);
            nodes[node as usize] = Node { parent, parent_first };
            cut(first, node);
            open.push((last, node));
        }
        while let Some((end, _)) = open.pop() {
            match end.succ() {
                Some(next) => cut(next, open.last().map_or(NONE, |o| o.1)),
                // Reaches the last address, and so does every network containing it.
                None => break,
            }
        }
        // Neighbours never share their innermost network: a cut after a network's end names a
        // network outside it (where the interval before lay), and a cut at a start names a new
        // one; two cuts at one address keep the last.
        debug_assert!(inner.windows(2).all(|w| w[0] != w[1]), "{inner:?}");

        // About four intervals per slot of the first-level index.
        let bits = (usize::BITS - (starts.len() / 4).leading_zeros()).saturating_sub(1).min(MAX_INDEX_BITS);
        let slots = 1usize << bits;
        let mut index = Vec::with_capacity(slots + 1);
        let mut i = 0;
        for j in 0..slots {
            let at = K::slot_start(j, bits);
            while i + 1 < starts.len() && starts[i + 1] <= at {
                i += 1;
            }
            index.push(i as u32);
        }
        index.push((starts.len() - 1) as u32);
        let intervals = starts
            .iter()
            .zip(&inner)
            .map(|(&start, &node)| Interval {
                start: start.pack(),
                node,
                first: firsts.get(node as usize).copied().unwrap_or(NONE),
            })
            .collect();
        Family { intervals, index: index.into_boxed_slice(), bits }
    }

    /// The interval holding `addr`.
    #[inline(always)]
    fn find(&self, addr: K) -> Option<&Interval<K::Packed>> {
        let j = addr.top(self.bits);
        let (&lo, &hi) = (self.index.get(j)?, self.index.get(j + 1)?);
        let (lo, hi) = (lo as usize, hi as usize);
        let packed = addr.pack();
        let i = lo + self.intervals.get(lo + 1..=hi)?.partition_point(|iv| iv.start <= packed);
        self.intervals.get(i)
    }

    fn heap_bytes(&self) -> usize {
        self.intervals.len() * std::mem::size_of::<Interval<K::Packed>>() + self.index.len() * 4
    }
}

/// A compiled set of networks. Immutable, `Send + Sync` when `V` is; share it behind an `Arc`.
#[derive(Debug)]
pub struct NetTable<V> {
    /// The entries grouped by network, networks in node order, `add` order within a network.
    slots: Box<[Slot<V>]>,
    /// Where each entry id sits in `slots`.
    by_id: Box<[u32]>,
    /// The distinct networks: IPv4 ones, then IPv6 ones, each by address then prefix length.
    nodes: Box<[Node]>,
    v4: Family<u32>,
    v6: Family<u128>,
}

/// An entry whose network contains the address looked up (or any entry, from
/// [`NetTable::entries`]).
#[derive(Debug)]
pub struct NetHit<'t, V> {
    value: &'t V,
    net: IpNet,
    id: NetId,
}

// Not derived: a hit is a reference, copyable whatever `V` is.
impl<V> Clone for NetHit<'_, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<V> Copy for NetHit<'_, V> {}

impl<'t, V> NetHit<'t, V> {
    fn of(slot: &'t Slot<V>) -> Self {
        NetHit { value: &slot.value, net: slot.net, id: slot.id }
    }
    /// The value given with the network.
    pub fn value(&self) -> &'t V {
        self.value
    }
    /// The network, host bits cleared.
    pub fn net(&self) -> IpNet {
        self.net
    }
    /// The network's prefix length (0-32 for IPv4, 0-128 for IPv6).
    pub fn prefix_len(&self) -> u8 {
        self.net.prefix_len()
    }
    /// Which entry this is.
    pub fn id(&self) -> NetId {
        self.id
    }
}

/// The entries whose network contains an address, longest prefix first, entries of one network in
/// `add` order: what [`NetTable::matches`] returns. Does not allocate.
#[derive(Debug)]
pub struct NetHits<'t, V> {
    table: &'t NetTable<V>,
    /// The network being walked, or [`NONE`] when done.
    node: u32,
    /// The next slot to yield.
    pos: u32,
    /// The network of the slots yielded from `node`, once one was.
    net: Option<IpNet>,
}

impl<'t, V> Iterator for NetHits<'t, V> {
    type Item = NetHit<'t, V>;

    #[inline]
    fn next(&mut self) -> Option<NetHit<'t, V>> {
        loop {
            if self.node == NONE {
                return None;
            }
            let slot = self.table.slots.get(self.pos as usize);
            match (slot, self.net) {
                // A node's run is never empty, and ends where the network changes.
                (Some(slot), None) => {
                    self.net = Some(slot.net);
                    self.pos += 1;
                    return Some(NetHit::of(slot));
                }
                (Some(slot), Some(net)) if slot.net == net => {
                    self.pos += 1;
                    return Some(NetHit::of(slot));
                }
                _ => {
                    let node = self.table.nodes.get(self.node as usize)?;
                    (self.node, self.pos, self.net) = (node.parent, node.parent_first, None);
                }
            }
        }
    }
}

impl<V> FusedIterator for NetHits<'_, V> {}

impl<V> NetTable<V> {
    fn compile(entries: Vec<(IpNet, V)>) -> Self {
        /// Sort key of a network: family (IPv4 first), address, prefix length.
        fn key(net: &IpNet) -> (bool, u128, u8) {
            match net {
                IpNet::V4(n) => (false, u128::from(u32::from(n.network())), n.prefix_len()),
                IpNet::V6(n) => (true, u128::from(n.network()), n.prefix_len()),
            }
        }
        let mut slots: Vec<Slot<V>> = entries
            .into_iter()
            .enumerate()
            .map(|(id, (net, value))| Slot { net, id: NetId(id as u32), value })
            .collect();
        // Stable: entries of one network stay in `add` order.
        slots.sort_by_key(|s| key(&s.net));
        let mut by_id = vec![0u32; slots.len()];
        let mut firsts: Vec<u32> = Vec::new();
        let mut v4: Vec<(u32, u32)> = Vec::new();
        let mut v6: Vec<(u128, u128)> = Vec::new();
        let mut last = None;
        for (pos, slot) in slots.iter().enumerate() {
            by_id[slot.id.as_usize()] = pos as u32;
            if last == Some(slot.net) {
                continue;
            }
            last = Some(slot.net);
            firsts.push(pos as u32);
            match slot.net {
                IpNet::V4(n) => v4.push((n.network().into(), n.broadcast().into())),
                IpNet::V6(n) => v6.push((n.network().into(), n.broadcast().into())),
            }
        }
        let mut nodes = vec![Node { parent: NONE, parent_first: NONE }; firsts.len()];
        let v6 = Family::build(&v6, v4.len() as u32, &firsts, &mut nodes);
        let v4 = Family::build(&v4, 0, &firsts, &mut nodes);
        NetTable {
            slots: slots.into_boxed_slice(),
            by_id: by_id.into_boxed_slice(),
            nodes: nodes.into_boxed_slice(),
            v4,
            v6,
        }
    }

    /// Every entry whose network contains `addr`, longest prefix first, entries of the same network
    /// in `add` order. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is looked up as IPv4.
    ///
    /// One binary search, then one step per matching network; no allocation.
    #[inline]
    pub fn matches(&self, addr: IpAddr) -> NetHits<'_, V> {
        let found = match addr.to_canonical() {
            IpAddr::V4(a) => self.v4.find(u32::from(a)).map(|iv| (iv.node, iv.first)),
            IpAddr::V6(a) => self.v6.find(u128::from(a)).map(|iv| (iv.node, iv.first)),
        };
        let (node, pos) = found.unwrap_or((NONE, NONE));
        NetHits { table: self, node, pos, net: None }
    }

    /// The first of [`matches`](Self::matches): the longest matching prefix, the first added
    /// among entries of that network.
    #[inline]
    pub fn longest(&self, addr: IpAddr) -> Option<NetHit<'_, V>> {
        self.matches(addr).next()
    }

    /// The entry `id`, or `None` when `id` does not come from this table.
    pub fn get(&self, id: NetId) -> Option<NetHit<'_, V>> {
        let &pos = self.by_id.get(id.as_usize())?;
        self.slots.get(pos as usize).map(NetHit::of)
    }

    /// Every entry in `add` order (host bits cleared), for listing and linting.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = NetHit<'_, V>> + '_ {
        // Every position in `by_id` is a slot.
        self.by_id.iter().map(|&pos| NetHit::of(&self.slots[pos as usize]))
    }

    /// Entries that repeat a network: for every network added more than once, each later entry
    /// paired with the first one added (`(first, later)`), networks in address order (IPv4
    /// first). `n` entries of one network give `n - 1` pairs. For a lint: two client groups that
    /// list the same network at the same prefix length are ambiguous.
    pub fn duplicates(&self) -> impl Iterator<Item = (NetHit<'_, V>, NetHit<'_, V>)> + '_ {
        let mut first: Option<&Slot<V>> = None;
        self.slots.iter().filter_map(move |slot| match first {
            Some(f) if f.net == slot.net => Some((NetHit::of(f), NetHit::of(slot))),
            _ => {
                first = Some(slot);
                None
            }
        })
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The number of distinct networks.
    pub fn networks(&self) -> usize {
        self.nodes.len()
    }

    /// Heap bytes owned by the table: the intervals and their index, the node tree, the entries
    /// with their values' inline size (not memory the values point to), and the id map.
    pub fn heap_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Slot<V>>()
            + self.by_id.len() * 4
            + self.nodes.len() * std::mem::size_of::<Node>()
            + self.v4.heap_bytes()
            + self.v6.heap_bytes()
    }
}

impl<V> FromIterator<(IpNet, V)> for NetTable<V> {
    fn from_iter<I: IntoIterator<Item = (IpNet, V)>>(iter: I) -> Self {
        let mut b = NetTableBuilder::new();
        b.extend(iter);
        b.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn table(nets: &[&str]) -> NetTable<usize> {
        nets.iter().enumerate().map(|(i, s)| (net(s), i)).collect()
    }

    /// The values of every match, in order.
    fn all(t: &NetTable<usize>, addr: &str) -> Vec<usize> {
        t.matches(ip(addr)).map(|h| *h.value()).collect()
    }

    #[test]
    fn nested_networks_longest_first() {
        let t = table(&["10.0.0.0/8", "10.1.2.0/24", "10.1.0.0/16", "10.1.2.3/32", "10.2.0.0/16", "11.0.0.0/8"]);
        let rows: &[(&str, &[usize])] = &[
            ("10.1.2.3", &[3, 1, 2, 0]),
            ("10.1.2.4", &[1, 2, 0]),
            ("10.1.2.0", &[1, 2, 0]),
            ("10.1.2.255", &[1, 2, 0]),
            ("10.1.3.0", &[2, 0]),
            ("10.1.1.255", &[2, 0]),
            ("10.1.255.255", &[2, 0]),
            ("10.2.0.0", &[4, 0]),
            ("10.3.0.0", &[0]),
            ("10.0.0.0", &[0]),
            ("10.255.255.255", &[0]),
            ("11.255.255.255", &[5]),
            ("9.255.255.255", &[]),
            ("12.0.0.0", &[]),
            ("0.0.0.0", &[]),
            ("255.255.255.255", &[]),
        ];
        for &(addr, want) in rows {
            assert_eq!(all(&t, addr), want, "{addr}");
            assert_eq!(t.longest(ip(addr)).map(|h| *h.value()), want.first().copied(), "{addr}");
        }
        assert_eq!(t.networks(), 6);
        let hit = t.longest(ip("10.1.2.9")).unwrap();
        assert_eq!((hit.net(), hit.prefix_len(), hit.id()), (net("10.1.2.0/24"), 24, NetId(1)));
    }

    #[test]
    fn same_network_in_add_order_and_duplicates() {
        let t = table(&["10.0.0.0/8", "10.1.0.0/16", "10.0.0.0/8", "10.1.9.9/16", "2001:db8::/32", "10.0.0.0/8"]);
        assert_eq!(all(&t, "10.1.2.3"), [1, 3, 0, 2, 5]);
        assert_eq!(all(&t, "10.2.0.0"), [0, 2, 5]);
        assert_eq!(t.networks(), 3);
        let pairs: Vec<(usize, usize)> = t.duplicates().map(|(a, b)| (*a.value(), *b.value())).collect();
        assert_eq!(pairs, [(0, 2), (0, 5), (1, 3)]);
        assert!(t.duplicates().all(|(a, b)| a.net() == b.net()));
        assert_eq!(table(&["10.0.0.0/8", "10.0.0.0/9", "::/0"]).duplicates().count(), 0);
    }

    #[test]
    fn host_bits_are_cleared() {
        let t = table(&["10.1.2.3/16", "2001:db8::1/32"]);
        let got: Vec<IpNet> = t.entries().map(|h| h.net()).collect();
        assert_eq!(got, [net("10.1.0.0/16"), net("2001:db8::/32")]);
        assert_eq!(all(&t, "10.1.200.1"), [0]);
        assert_eq!(all(&t, "2001:db8:ffff::"), [1]);
    }

    #[test]
    fn default_routes_and_single_addresses() {
        let t = table(&[
            "0.0.0.0/0",
            "::/0",
            "0.0.0.0/32",
            "255.255.255.255/32",
            "::/128",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128",
            "1.2.3.4/32",
        ]);
        let rows: &[(&str, &[usize])] = &[
            ("0.0.0.0", &[2, 0]),
            ("0.0.0.1", &[0]),
            ("255.255.255.255", &[3, 0]),
            ("255.255.255.254", &[0]),
            ("1.2.3.4", &[6, 0]),
            ("1.2.3.5", &[0]),
            ("1.2.3.3", &[0]),
            ("::", &[4, 1]),
            ("::1", &[1]),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", &[5, 1]),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", &[1]),
            // `::1.2.3.4` (IPv4-compatible, deprecated) is not IPv4-mapped: it stays IPv6.
            ("::1.2.3.4", &[1]),
        ];
        for &(addr, want) in rows {
            assert_eq!(all(&t, addr), want, "{addr}");
        }
        let only_top = table(&["128.0.0.0/1", "8000::/1"]);
        assert_eq!(all(&only_top, "255.255.255.255"), [0]);
        assert_eq!(all(&only_top, "127.255.255.255"), [] as [usize; 0]);
        assert_eq!(all(&only_top, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), [1]);
        assert_eq!(all(&only_top, "7fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), [] as [usize; 0]);
    }

    #[test]
    fn mapped_ipv4_is_ipv4_and_families_do_not_mix() {
        let t = table(&["10.0.0.0/8", "::ffff:0:0/96", "::/0"]);
        assert_eq!(all(&t, "::ffff:10.1.2.3"), [0]);
        assert_eq!(all(&t, "10.1.2.3"), [0]);
        // A mapped address is IPv4: neither `::/0` nor the mapped range match it.
        assert_eq!(all(&t, "::ffff:11.1.2.3"), [] as [usize; 0]);
        assert_eq!(all(&t, "::ffff:1:0"), [] as [usize; 0]);
        assert_eq!(all(&t, "::1"), [2]);
        let v4 = table(&["0.0.0.0/0"]);
        assert_eq!(all(&v4, "::"), [] as [usize; 0]);
        assert_eq!(all(&v4, "2001:db8::1"), [] as [usize; 0]);
        assert_eq!(all(&v4, "::ffff:0.0.0.0"), [0]);
        let v6 = table(&["::/0"]);
        assert_eq!(all(&v6, "0.0.0.0"), [] as [usize; 0]);
        assert_eq!(all(&v6, "255.255.255.255"), [] as [usize; 0]);
    }

    #[test]
    fn siblings_and_adjacent_networks() {
        // Networks that end where the next starts, a parent that starts and ends with a child.
        let t = table(&["10.0.0.0/24", "10.0.1.0/24", "10.0.0.0/23", "10.0.0.0/25", "10.0.1.128/25"]);
        let rows: &[(&str, &[usize])] = &[
            ("10.0.0.0", &[3, 0, 2]),
            ("10.0.0.127", &[3, 0, 2]),
            ("10.0.0.128", &[0, 2]),
            ("10.0.0.255", &[0, 2]),
            ("10.0.1.0", &[1, 2]),
            ("10.0.1.127", &[1, 2]),
            ("10.0.1.128", &[4, 1, 2]),
            ("10.0.1.255", &[4, 1, 2]),
            ("10.0.2.0", &[]),
            ("9.255.255.255", &[]),
        ];
        for &(addr, want) in rows {
            assert_eq!(all(&t, addr), want, "{addr}");
        }
    }

    #[test]
    fn empty_table() {
        let t: NetTable<()> = NetTableBuilder::new().build();
        assert!(t.is_empty());
        assert_eq!((t.len(), t.networks()), (0, 0));
        assert!(t.longest(ip("1.2.3.4")).is_none());
        assert!(t.longest(ip("::")).is_none());
        assert_eq!(t.entries().count(), 0);
        assert_eq!(t.duplicates().count(), 0);
        assert!(t.get(NetId(0)).is_none());
    }

    #[test]
    fn entries_and_get_in_add_order() {
        let mut b = NetTableBuilder::new();
        b.add(net("::/0"), "a").add(net("10.0.0.0/8"), "b").add(net("10.0.0.0/8"), "c");
        assert_eq!((b.len(), b.is_empty()), (3, false));
        let t = b.build();
        let got: Vec<(NetId, &str)> = t.entries().map(|h| (h.id(), *h.value())).collect();
        assert_eq!(got, [(NetId(0), "a"), (NetId(1), "b"), (NetId(2), "c")]);
        assert_eq!(t.get(NetId(2)).map(|h| (h.net(), *h.value())), Some((net("10.0.0.0/8"), "c")));
        assert_eq!(t.get(NetId(1)).map(|h| h.id().as_usize()), Some(1));
        assert!(t.get(NetId(3)).is_none());
        assert!(t.heap_bytes() > 0);
    }

    #[test]
    fn first_level_index_is_used_and_exact() {
        // Enough networks for a 2^k-slot index; every network's first and last address, and the
        // addresses around them, against the definition.
        let mut b = NetTableBuilder::new();
        for i in 0..1024u32 {
            let a = i.wrapping_mul(0x9e37_79b9);
            let len = 8 + (i % 25) as u8;
            b.add(IpNet::V4(ipnet::Ipv4Net::new(a.into(), len).unwrap()), i);
            let a6 = u128::from(a) << 96 | u128::from(i);
            b.add(IpNet::V6(ipnet::Ipv6Net::new(a6.into(), 16 + (i % 100) as u8).unwrap()), i);
        }
        let t = b.build();
        assert!(t.v4.bits >= 6 && t.v6.bits >= 6, "{} {}", t.v4.bits, t.v6.bits);
        for e in t.entries() {
            for addr in [e.net().network(), e.net().broadcast()] {
                let probes = match addr {
                    IpAddr::V4(a) => {
                        let a = u32::from(a);
                        [a.wrapping_sub(1), a, a.wrapping_add(1)].map(|x| IpAddr::from(std::net::Ipv4Addr::from(x)))
                    }
                    IpAddr::V6(a) => {
                        let a = u128::from(a);
                        [a.wrapping_sub(1), a, a.wrapping_add(1)].map(|x| IpAddr::from(std::net::Ipv6Addr::from(x)))
                    }
                };
                for p in probes {
                    let want = t
                        .entries()
                        .filter(|h| h.net().contains(&p))
                        .max_by_key(|h| (h.prefix_len(), std::cmp::Reverse(h.id())));
                    assert_eq!(t.longest(p).map(|h| h.id()), want.map(|h| h.id()), "{p}");
                }
            }
        }
    }

    #[test]
    fn send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<NetTable<String>>();
        assert_send_sync::<NetHits<'static, u32>>();
    }
}
