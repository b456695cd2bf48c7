//! Address-table benchmark: `hostgate_matcher::NetTable` (longest matching prefix of an IP address)
//! against what a user would write instead, on synthetic tables of 10k and 100k networks.
//!
//! Tables (`generate`, a fixed-seed xorshift, no `rand`): 90% IPv4, 10% IPv6. A new IPv4 network
//! is, 70% of the time, a root: /24 (55%), /13–/23 (24.8%), /25–/32 (20%), /8–/12 (0.2%) at a
//! random unicast address; otherwise it is nested in an earlier network (a random longer prefix
//! inside it: chains such as /16 ⊃ /24 ⊃ /28 ⊃ /32). IPv6: roots /32 (20%), /48 (50%) or
//! /33–/64 under `2000::/3`, 30% nested likewise down to /64. About 1% of the networks repeat
//! an earlier one (the same network listed by two rules).
//!
//! Queries: 10,000 addresses (test mode: 1,000), 80% IPv4, shuffled, half hits (a random address
//! inside a random entry), half misses (random unicast addresses that no entry contains).
//!
//! Group `nets_lookup/{10k,100k}` (criterion ids `group/function`), throughput in elements (one
//! lookup: the id of the longest match, the first added among equal networks):
//!
//! * `nettable`: `NetTable::longest`.
//! * `prefix_hashmaps`: one std `HashMap<address, id>` per prefix length present, per family, probed
//!   longest first with the address masked to that length (the usual hand-written LPM).
//! * `prefix_btreemaps`: the same with `BTreeMap`s.
//! * `linear`: a scan of a `Vec<IpNet>` keeping the longest containing network.
//!
//! Each timed iteration looks up a batch of queries (1,000; 16 for `linear`), walking the query
//! set round robin. Before any timing, each size is checked: the four agree on every query and
//! exactly half are hits. Then, printed once per size: the `NetTable`'s build time (median of 5)
//! and heap bytes, and `interleaved` lines: the functions take turns on the same batches (200
//! rounds; `linear` fewer), and the median ns per lookup of each and its ratio to `nettable` are
//! given, so that load coming and going on the machine falls on all of them alike. A summary of
//! criterion's timed calls (median ns per lookup, ratios) is printed at the end.
//!
//! In test mode (`cargo test --benches`, or `-- --test`) and for `--list` the tables are capped at
//! 1,000 networks.

#[path = "support/median.rs"]
mod median;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput};
use hostgate_matcher::{NetTable, NetTableBuilder};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// "nettable" in ASCII.
const SEED: u64 = 0x6e65_7474_6162_6c65;
const SIZES: [(&str, usize); 2] = [("10k", 10_000), ("100k", 100_000)];
/// Queries per timed iteration.
const BATCH: usize = 1_000;
/// Queries per timed iteration of `linear` (a lookup scans every network).
const LINEAR_BATCH: usize = 16;

/// xorshift64*: deterministic, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `lo..=hi` (near enough).
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    /// True with probability `per_mille` / 1000.
    fn chance(&mut self, per_mille: u64) -> bool {
        self.next() % 1000 < per_mille
    }
}

/// The host bits of a prefix length, as a mask.
fn host_mask_v4(len: u8) -> u32 {
    u32::MAX.checked_shr(u32::from(len)).unwrap_or(0)
}

fn host_mask_v6(len: u8) -> u128 {
    u128::MAX.checked_shr(u32::from(len)).unwrap_or(0)
}

/// A random unicast IPv4 address (1.0.0.0 – 223.255.255.255).
fn unicast_v4(rng: &mut Rng) -> u32 {
    (rng.range(1, 223) as u32) << 24 | (rng.next() as u32 & 0x00ff_ffff)
}

/// A random global unicast IPv6 address (`2000::/3`).
fn unicast_v6(rng: &mut Rng) -> u128 {
    let r = u128::from(rng.next()) << 64 | u128::from(rng.next());
    0x2000u128 << 112 | (r & (u128::MAX >> 3))
}

fn v4(addr: u32, len: u8) -> IpNet {
    IpNet::V4(Ipv4Net::new(Ipv4Addr::from(addr), len).expect("len <= 32").trunc())
}

fn v6(addr: u128, len: u8) -> IpNet {
    IpNet::V6(Ipv6Net::new(Ipv6Addr::from(addr), len).expect("len <= 128").trunc())
}

/// `n` networks, the mix described in the module docs.
fn generate(n: usize, rng: &mut Rng) -> Vec<IpNet> {
    let mut nets: Vec<IpNet> = Vec::with_capacity(n);
    // Indices of earlier networks that can hold a longer one.
    let mut v4_parents: Vec<usize> = Vec::new();
    let mut v6_parents: Vec<usize> = Vec::new();
    while nets.len() < n {
        if !nets.is_empty() && rng.chance(10) {
            let again = nets[rng.range(0, nets.len() as u64 - 1) as usize];
            nets.push(again);
            continue;
        }
        let net = if rng.chance(900) {
            if !v4_parents.is_empty() && rng.chance(300) {
                let IpNet::V4(p) = nets[v4_parents[rng.range(0, v4_parents.len() as u64 - 1) as usize]] else {
                    unreachable!("v4_parents holds IPv4 networks")
                };
                let len = rng.range(u64::from(p.prefix_len()) + 1, 32) as u8;
                v4(u32::from(p.network()) | (rng.next() as u32 & host_mask_v4(p.prefix_len())), len)
            } else {
                let x = rng.range(0, 999);
                let len = match x {
                    0..=1 => rng.range(8, 12),
                    2..=249 => rng.range(13, 23),
                    250..=799 => 24,
                    _ => rng.range(25, 32),
                } as u8;
                v4(unicast_v4(rng), len)
            }
        } else if !v6_parents.is_empty() && rng.chance(300) {
            let IpNet::V6(p) = nets[v6_parents[rng.range(0, v6_parents.len() as u64 - 1) as usize]] else {
                unreachable!("v6_parents holds IPv6 networks")
            };
            let len = rng.range(u64::from(p.prefix_len()) + 1, 64) as u8;
            let r = u128::from(rng.next()) << 64 | u128::from(rng.next());
            v6(u128::from(p.network()) | (r & host_mask_v6(p.prefix_len())), len)
        } else {
            let len = match rng.range(0, 9) {
                0..=1 => 32,
                2..=6 => 48,
                _ => rng.range(33, 64) as u8,
            };
            v6(unicast_v6(rng), len)
        };
        match net {
            IpNet::V4(p) if p.prefix_len() < 32 => v4_parents.push(nets.len()),
            IpNet::V6(p) if p.prefix_len() < 64 => v6_parents.push(nets.len()),
            _ => {}
        }
        nets.push(net);
    }
    nets
}

/// A random address inside `net`.
fn inside(net: IpNet, rng: &mut Rng) -> IpAddr {
    match net {
        IpNet::V4(n) => {
            Ipv4Addr::from(u32::from(n.network()) | (rng.next() as u32 & host_mask_v4(n.prefix_len()))).into()
        }
        IpNet::V6(n) => {
            let r = u128::from(rng.next()) << 64 | u128::from(rng.next());
            Ipv6Addr::from(u128::from(n.network()) | (r & host_mask_v6(n.prefix_len()))).into()
        }
    }
}

/// `count` queries, half hits and half misses, 80% IPv4, shuffled.
fn queries(nets: &[IpNet], table: &NetTable<u32>, count: usize, rng: &mut Rng) -> Vec<IpAddr> {
    let v4: Vec<IpNet> = nets.iter().copied().filter(|n| matches!(n, IpNet::V4(_))).collect();
    let v6: Vec<IpNet> = nets.iter().copied().filter(|n| matches!(n, IpNet::V6(_))).collect();
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let want_v4 = rng.chance(800) || v6.is_empty();
        if i % 2 == 0 {
            let pool = if want_v4 { &v4 } else { &v6 };
            out.push(inside(pool[rng.range(0, pool.len() as u64 - 1) as usize], rng));
        } else {
            let miss = (0..10_000)
                .map(|_| -> IpAddr {
                    if want_v4 {
                        Ipv4Addr::from(unicast_v4(rng)).into()
                    } else {
                        Ipv6Addr::from(unicast_v6(rng)).into()
                    }
                })
                .find(|&a| table.longest(a).is_none())
                .expect("a miss among 10,000 random addresses");
            out.push(miss);
        }
    }
    for i in (1..out.len()).rev() {
        out.swap(i, rng.range(0, i as u64) as usize);
    }
    out
}

/// The linear baseline: the longest containing network, the first added among equal ones.
fn linear(nets: &[IpNet], addr: IpAddr) -> Option<u32> {
    let addr = addr.to_canonical();
    let mut best: Option<(u8, u32)> = None;
    for (id, net) in nets.iter().enumerate() {
        if net.contains(&addr) && best.is_none_or(|(len, _)| net.prefix_len() > len) {
            best = Some((net.prefix_len(), id as u32));
        }
    }
    best.map(|(_, id)| id)
}

/// A map from masked address to the first entry id of that network.
trait Map<K>: Default {
    fn insert_first(&mut self, key: K, id: u32);
    fn get_id(&self, key: &K) -> Option<u32>;
}

impl<K: std::hash::Hash + Eq> Map<K> for HashMap<K, u32> {
    fn insert_first(&mut self, key: K, id: u32) {
        self.entry(key).or_insert(id);
    }
    #[inline]
    fn get_id(&self, key: &K) -> Option<u32> {
        self.get(key).copied()
    }
}

impl<K: Ord> Map<K> for BTreeMap<K, u32> {
    fn insert_first(&mut self, key: K, id: u32) {
        self.entry(key).or_insert(id);
    }
    #[inline]
    fn get_id(&self, key: &K) -> Option<u32> {
        self.get(key).copied()
    }
}

/// The per-prefix-length baseline: one map per length present, longest first.
struct PerLength<M4, M6> {
    v4: Vec<(u32, M4)>,
    v6: Vec<(u128, M6)>,
}

impl<M4: Map<u32>, M6: Map<u128>> PerLength<M4, M6> {
    fn build(nets: &[IpNet]) -> Self {
        let mut v4: BTreeMap<u8, M4> = BTreeMap::new();
        let mut v6: BTreeMap<u8, M6> = BTreeMap::new();
        for (id, net) in nets.iter().enumerate() {
            match net {
                IpNet::V4(n) => v4.entry(n.prefix_len()).or_default().insert_first(n.network().into(), id as u32),
                IpNet::V6(n) => v6.entry(n.prefix_len()).or_default().insert_first(n.network().into(), id as u32),
            }
        }
        Self {
            v4: v4.into_iter().rev().map(|(len, m)| (!host_mask_v4(len), m)).collect(),
            v6: v6.into_iter().rev().map(|(len, m)| (!host_mask_v6(len), m)).collect(),
        }
    }

    #[inline]
    fn longest(&self, addr: IpAddr) -> Option<u32> {
        match addr.to_canonical() {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4.iter().find_map(|(mask, m)| m.get_id(&(a & mask)))
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6.iter().find_map(|(mask, m)| m.get_id(&(a & mask)))
            }
        }
    }
}

type HashMaps = PerLength<HashMap<u32, u32>, HashMap<u128, u32>>;
type BTreeMaps = PerLength<BTreeMap<u32, u32>, BTreeMap<u128, u32>>;

struct Data {
    label: &'static str,
    nets: Vec<IpNet>,
    table: NetTable<u32>,
    hashmaps: HashMaps,
    btreemaps: BTreeMaps,
    queries: Vec<IpAddr>,
}

fn build_table(nets: &[IpNet]) -> NetTable<u32> {
    let mut b = NetTableBuilder::new();
    for (id, &net) in nets.iter().enumerate() {
        b.add(net, id as u32);
    }
    b.build()
}

fn prepare(label: &'static str, size: usize, query_count: usize) -> Data {
    let mut rng = Rng(SEED ^ size as u64);
    let nets = generate(size, &mut rng);
    let mut builds = Vec::new();
    let mut table = None;
    for _ in 0..5 {
        let started = Instant::now();
        let t = build_table(&nets);
        builds.push(started.elapsed());
        table = Some(t);
    }
    let build = median::medians(&mut [builds])[0];
    let table = table.expect("built five times");
    let queries = queries(&nets, &table, query_count, &mut rng);
    let hashmaps = HashMaps::build(&nets);
    let btreemaps = BTreeMaps::build(&nets);

    let (v4, v6) =
        nets.iter().fold((0, 0), |(a, b), n| if matches!(n, IpNet::V4(_)) { (a + 1, b) } else { (a, b + 1) });
    let duplicates = table.duplicates().count();
    println!(
        "nets/{label}: {} networks ({v4} IPv4, {v6} IPv6, {} distinct, {duplicates} repeats); NetTable build {:.2} ms \
         (median of 5), heap {} bytes ({:.1} per network)",
        nets.len(),
        table.networks(),
        build.as_secs_f64() * 1e3,
        table.heap_bytes(),
        table.heap_bytes() as f64 / nets.len() as f64,
    );

    let mut hits = 0;
    for &q in &queries {
        let want = table.longest(q).map(|h| *h.value());
        assert_eq!(linear(&nets, q), want, "linear, {q}");
        assert_eq!(hashmaps.longest(q), want, "prefix_hashmaps, {q}");
        assert_eq!(btreemaps.longest(q), want, "prefix_btreemaps, {q}");
        hits += usize::from(want.is_some());
    }
    assert_eq!(hits * 2, queries.len(), "half of the queries hit");
    println!("nets/{label}: checked {} queries ({hits} hits): all four agree", queries.len());
    Data { label, nets, table, hashmaps, btreemaps, queries }
}

type Lookup<'a> = Box<dyn Fn(IpAddr) -> Option<u32> + 'a>;

/// The functions of a group: name, batch size, lookup.
fn functions(d: &Data) -> Vec<(&'static str, usize, Lookup<'_>)> {
    vec![
        ("nettable", BATCH, Box::new(|a| d.table.longest(a).map(|h| *h.value()))),
        ("prefix_hashmaps", BATCH, Box::new(|a| d.hashmaps.longest(a))),
        ("prefix_btreemaps", BATCH, Box::new(|a| d.btreemaps.longest(a))),
        ("linear", LINEAR_BATCH, Box::new(|a| linear(&d.nets, a))),
    ]
}

/// Runs `batch` lookups from `pos` on (wrapping), returns the next position.
#[inline(always)]
fn run(queries: &[IpAddr], mut pos: usize, batch: usize, f: &dyn Fn(IpAddr) -> Option<u32>) -> usize {
    for _ in 0..batch {
        black_box(f(black_box(queries[pos])));
        pos += 1;
        if pos == queries.len() {
            pos = 0;
        }
    }
    pos
}

/// The functions take turns on the same queries; prints each one's median ns per lookup and its
/// ratio to `nettable`.
fn interleaved(d: &Data, rounds: usize) {
    let fns = functions(d);
    let mut times = vec![Vec::with_capacity(rounds); fns.len()];
    let mut pos = 0;
    for round in 0..rounds {
        for ((name, batch, f), t) in fns.iter().zip(&mut times) {
            // `linear` costs a thousand times more per lookup: it runs every 10th round.
            if *name == "linear" && round % 10 != 0 {
                continue;
            }
            let started = Instant::now();
            run(&d.queries, pos, *batch, f.as_ref());
            t.push(started.elapsed() / *batch as u32);
        }
        pos = (pos + BATCH) % d.queries.len();
    }
    let medians = median::medians(&mut times);
    let first = medians[0].as_secs_f64();
    let line: Vec<String> = fns
        .iter()
        .zip(&medians)
        .map(|((name, ..), m)| format!("{name} {:.1} ns ({:.1})", m.as_secs_f64() * 1e9, m.as_secs_f64() / first))
        .collect();
    println!("interleaved nets/{}: median per lookup (ratio to nettable): {}", d.label, line.join(", "));
}

/// Criterion's timed calls: (function id, ns per lookup) of every `iter_custom` call.
#[derive(Default)]
struct Summary {
    rows: Vec<(String, Vec<f64>)>,
}

impl Summary {
    fn record(&mut self, id: &str, per: f64) {
        match self.rows.iter_mut().find(|r| r.0 == id) {
            Some(row) => row.1.push(per),
            None => self.rows.push((id.to_owned(), vec![per])),
        }
    }

    fn print(mut self) {
        println!();
        println!("summary: median ns per lookup over criterion's timed calls (warm-up included); ratio = baseline / nettable");
        for row in &mut self.rows {
            row.1.sort_by(f64::total_cmp);
        }
        let median = |v: &[f64]| v[v.len() / 2];
        for (id, per) in &self.rows {
            let group = id.rsplit_once('/').map_or(id.as_str(), |(g, _)| g);
            let base = self.rows.iter().find(|r| r.0 == format!("{group}/nettable")).map(|r| median(&r.1));
            let ratio = base.map_or(String::new(), |b| format!("{:.1}", median(per) / b));
            println!("{id:<36} {:>14.1} ns {ratio:>10}", median(per));
        }
    }
}

fn lookup_group(c: &mut Criterion, summary: &RefCell<Summary>, d: &Data) {
    let name = format!("nets_lookup/{}", d.label);
    let mut group: BenchmarkGroup<'_, WallTime> = c.benchmark_group(&name);
    for (function, batch, f) in functions(d) {
        let id = format!("{name}/{function}");
        group.throughput(Throughput::Elements(batch as u64));
        // `linear` at 100k takes ~0.1 ms per lookup: flat sampling keeps its run short.
        group.sampling_mode(if function == "linear" { SamplingMode::Flat } else { SamplingMode::Auto });
        let mut pos = 0;
        group.bench_function(function, |b| {
            b.iter_custom(|iters| {
                let started = Instant::now();
                for _ in 0..iters {
                    pos = run(&d.queries, pos, batch, f.as_ref());
                }
                let elapsed = started.elapsed();
                summary.borrow_mut().record(&id, elapsed.as_nanos() as f64 / (iters * batch as u64).max(1) as f64);
                elapsed
            });
        });
    }
    group.finish();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listing = args.iter().any(|a| a == "--list");
    // Criterion's own rule: without `--bench` (as under `cargo test`), or with `--test`, it runs
    // each benchmark once as a smoke test.
    let test_mode = args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench");
    let mut criterion = Criterion::default().configure_from_args();
    let summary = RefCell::new(Summary::default());
    for (label, size) in SIZES {
        let small = test_mode || listing;
        let (size, query_count) = if small { (size.min(1_000), 1_000) } else { (size, 10_000) };
        let data = prepare(label, size, query_count);
        if !listing {
            interleaved(&data, if test_mode { 10 } else { 200 });
        }
        lookup_group(&mut criterion, &summary, &data);
    }
    criterion.final_summary();
    if !test_mode && !listing {
        summary.into_inner().print();
    }
}
