//! Differential test: the compiled [`NetTable`] against a naive reference written straight from
//! its contract (the semantics table in `src/nets.rs`): a `Vec<(IpNet, V)>` of the added networks,
//! host bits cleared, scanned linearly for the networks that contain the canonical address
//! (`IpAddr::to_canonical`), sorted by prefix length descending, then by add order.
//!
//! Random tables are heavily nested: every network is one of a few base addresses per family, its
//! low bits perturbed, at a random prefix length, so that networks nest, sit side by side and
//! repeat. Probes are random addresses near the bases, the first and last address of every
//! network and their neighbours (the interval boundaries), the ends of each family's address
//! space, and IPv4-mapped IPv6 forms of IPv4 probes.
//!
//! Cases: 1000 for small tables, 200 for larger ones; `PROPTEST_CASES=N cargo test -p hostgate-matcher --test nets` runs N.

// Tests may unwrap: a panic is a test failure with a useful message.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hostgate_matcher::{NetTable, NetTableBuilder};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;

/// The reference: every matching entry as (id, network), longest prefix first, then add order.
fn reference(entries: &[IpNet], addr: IpAddr) -> Vec<(usize, IpNet)> {
    let addr = addr.to_canonical();
    let mut hits: Vec<(usize, IpNet)> =
        entries.iter().map(IpNet::trunc).enumerate().filter(|(_, net)| net.contains(&addr)).collect();
    // Stable: add order within one prefix length.
    hits.sort_by_key(|(_, net)| std::cmp::Reverse(net.prefix_len()));
    hits
}

/// The reference's duplicate pairs: for each network added more than once, (first id, later id).
fn reference_duplicates(entries: &[IpNet]) -> Vec<(usize, usize)> {
    let nets: Vec<IpNet> = entries.iter().map(IpNet::trunc).collect();
    let mut pairs = Vec::new();
    for (j, net) in nets.iter().enumerate() {
        if let Some(first) = nets.iter().position(|n| n == net) {
            if first < j {
                pairs.push((first, j));
            }
        }
    }
    pairs.sort();
    pairs
}

/// One network of a case: family, which base, prefix length (reduced modulo the family's
/// maximum + 1), noise XORed into the base's bits below `noise_bits` from the bottom.
#[derive(Clone, Debug)]
struct Spec {
    v6: bool,
    base: usize,
    len: u8,
    noise: u128,
    noise_bits: u32,
}

#[derive(Clone, Debug)]
struct Case {
    v4_bases: Vec<u32>,
    v6_bases: Vec<u128>,
    nets: Vec<Spec>,
    /// Extra random probes: family, base, noise, noise width.
    probes: Vec<(bool, usize, u128, u32)>,
}

fn mask(bits: u32) -> u128 {
    if bits >= 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    }
}

impl Case {
    fn v4(&self, base: usize, noise: u128, bits: u32) -> u32 {
        self.v4_bases[base % self.v4_bases.len()] ^ (noise & mask(bits.min(32))) as u32
    }

    fn v6(&self, base: usize, noise: u128, bits: u32) -> u128 {
        self.v6_bases[base % self.v6_bases.len()] ^ (noise & mask(bits))
    }

    /// The networks as added (host bits not cleared: the table must clear them).
    fn networks(&self) -> Vec<IpNet> {
        self.nets
            .iter()
            .map(|s| {
                if s.v6 {
                    let a = self.v6(s.base, s.noise, s.noise_bits);
                    IpNet::V6(Ipv6Net::new(Ipv6Addr::from(a), s.len % 129).unwrap())
                } else {
                    let a = self.v4(s.base, s.noise, s.noise_bits);
                    IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), s.len % 33).unwrap())
                }
            })
            .collect()
    }

    /// Every address to look up.
    fn probes(&self, nets: &[IpNet]) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = vec![
            Ipv4Addr::from(0).into(),
            Ipv4Addr::from(u32::MAX).into(),
            Ipv6Addr::from(0).into(),
            Ipv6Addr::from(u128::MAX).into(),
        ];
        for net in nets {
            for a in [net.network(), net.broadcast()] {
                match a {
                    IpAddr::V4(a) => {
                        let a = u32::from(a);
                        out.extend([a.wrapping_sub(1), a, a.wrapping_add(1)].map(|x| IpAddr::from(Ipv4Addr::from(x))));
                    }
                    IpAddr::V6(a) => {
                        let a = u128::from(a);
                        out.extend([a.wrapping_sub(1), a, a.wrapping_add(1)].map(|x| IpAddr::from(Ipv6Addr::from(x))));
                    }
                }
            }
        }
        for &(v6, base, noise, bits) in &self.probes {
            out.push(if v6 {
                Ipv6Addr::from(self.v6(base, noise, bits)).into()
            } else {
                Ipv4Addr::from(self.v4(base, noise, bits)).into()
            });
        }
        // The IPv4-mapped form of every IPv4 probe.
        let mapped: Vec<IpAddr> = out
            .iter()
            .filter_map(|a| match a {
                IpAddr::V4(a) => Some(IpAddr::V6(a.to_ipv6_mapped())),
                IpAddr::V6(_) => None,
            })
            .collect();
        out.extend(mapped);
        out
    }
}

fn v4_base() -> impl Strategy<Value = u32> {
    prop_oneof![8 => any::<u32>(), 1 => Just(0), 1 => Just(u32::MAX)]
}

fn v6_base() -> impl Strategy<Value = u128> {
    prop_oneof![
        6 => any::<u128>(),
        // The IPv4-mapped range: such networks must never match (mapped addresses are IPv4).
        2 => any::<u32>().prop_map(|a| 0xffff_0000_0000 | u128::from(a)),
        1 => Just(0),
        1 => Just(u128::MAX),
    ]
}

fn case(max_nets: usize) -> impl Strategy<Value = Case> {
    let spec = (any::<bool>(), 0..8usize, any::<u8>(), any::<u128>(), 0..=128u32)
        .prop_map(|(v6, base, len, noise, noise_bits)| Spec { v6, base, len, noise, noise_bits });
    let probe = (any::<bool>(), 0..8usize, any::<u128>(), 0..=128u32);
    (
        prop::collection::vec(v4_base(), 1..5),
        prop::collection::vec(v6_base(), 1..5),
        prop::collection::vec(spec, 0..max_nets),
        prop::collection::vec(probe, 0..32),
    )
        .prop_map(|(v4_bases, v6_bases, nets, probes)| Case { v4_bases, v6_bases, nets, probes })
}

/// Builds the table with each entry's add index as its value.
fn build(nets: &[IpNet]) -> NetTable<usize> {
    let mut b = NetTableBuilder::new();
    for (i, &net) in nets.iter().enumerate() {
        b.add(net, i);
    }
    assert_eq!(b.len(), nets.len());
    b.build()
}

fn check(case: &Case) -> Result<(), TestCaseError> {
    let nets = case.networks();
    let table = build(&nets);
    prop_assert_eq!(table.len(), nets.len());
    for (i, hit) in table.entries().enumerate() {
        prop_assert_eq!((hit.id().as_usize(), *hit.value(), hit.net()), (i, i, nets[i].trunc()));
    }
    for addr in case.probes(&nets) {
        let want = reference(&nets, addr);
        let got: Vec<(usize, IpNet)> = table
            .matches(addr)
            .map(|h| {
                assert_eq!(h.id().as_usize(), *h.value());
                assert_eq!(h.prefix_len(), h.net().prefix_len());
                (h.id().as_usize(), h.net())
            })
            .collect();
        prop_assert_eq!(&got, &want, "address {}", addr);
        prop_assert_eq!(table.longest(addr).map(|h| h.id().as_usize()), want.first().map(|w| w.0));
    }
    let mut dups: Vec<(usize, usize)> =
        table.duplicates().map(|(a, b)| (a.id().as_usize(), b.id().as_usize())).collect();
    dups.sort();
    prop_assert_eq!(dups, reference_duplicates(&nets));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn small_nested_tables_match_the_reference(case in case(24)) {
        check(&case)?;
    }
}

proptest! {
    // Fewer: each case probes about 2,000 addresses against a scan of up to 200 networks.
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn larger_tables_match_the_reference(case in case(200)) {
        check(&case)?;
    }
}

#[test]
fn many_networks_under_one_slot_and_spread_over_all() {
    // Deterministic larger tables: a first-level index of many slots, some of them crowded.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut nets = Vec::new();
    for i in 0..3000 {
        let r = next();
        let net = match i % 3 {
            // Spread over the whole IPv4 space.
            0 => IpNet::V4(Ipv4Net::new(Ipv4Addr::from(r as u32), 8 + (r >> 32) as u8 % 25).unwrap()),
            // Crowded into 10.0.0.0/16.
            1 => IpNet::V4(
                Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 | (r as u32 & 0xffff)), 16 + (r >> 32) as u8 % 17).unwrap(),
            ),
            // IPv6 under 2001:db8::/32.
            _ => {
                let a = 0x2001_0db8u128 << 96 | u128::from(r) << 32;
                IpNet::V6(Ipv6Net::new(Ipv6Addr::from(a), 32 + (r >> 58) as u8).unwrap())
            }
        };
        nets.push(net);
    }
    let table = build(&nets);
    let case = Case {
        v4_bases: vec![0x0a00_0000],
        v6_bases: vec![0x2001_0db8u128 << 96],
        nets: Vec::new(),
        probes: Vec::new(),
    };
    let mut probes = case.probes(&nets);
    for _ in 0..2000 {
        let r = next();
        probes.push(Ipv4Addr::from(r as u32).into());
        probes.push(Ipv4Addr::from(0x0a00_0000 | (r as u32 & 0xffff)).into());
        probes.push(Ipv6Addr::from(0x2001_0db8u128 << 96 | u128::from(r) << 32).into());
    }
    for addr in probes {
        let got: Vec<usize> = table.matches(addr).map(|h| h.id().as_usize()).collect();
        let want: Vec<usize> = reference(&nets, addr).into_iter().map(|(i, _)| i).collect();
        assert_eq!(got, want, "address {addr}");
    }
}
