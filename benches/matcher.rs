//! Matcher benchmark: `hostgate_matcher::Matcher` against the alternatives a user would pick, on
//! the shipped rules (`docs`, the active patterns of `config/hostgate.toml`) and synthetic rule sets
//! of 10k, 100k and 1M patterns (see `support/synth.rs` for the generator).
//!
//! Groups (criterion ids `group/function`):
//!
//! * `lookup_random/{docs,10k,100k,1m}`: lookups over 1M shuffled queries (half hits, half near-misses),
//!   walked in order batch after batch, so the matcher's tables are cold as they would be for a
//!   gateway seeing many different hosts.
//! * `lookup_hot/{docs,10k,100k,1m}`: the same mix, but 5,000 distinct hosts cycled (warm caches).
//! * `build/{docs,10k,100k,1m}`: from the pattern strings to a ready matcher (drop time excluded).
//!
//! Functions: `hostgate` (`Matcher::find(&str)`, normalisation included), `hash_suffix` (std
//! `HashMap`s probed per label suffix, `support/hash_suffix.rs`) and, at 10k only, `regex_set`
//! (one `regex::RegexSet`, `support/regex_set.rs`).
//!
//! Each lookup iteration runs a batch of 1,000 queries and criterion's throughput is in elements,
//! so **criterion's time per iteration in µs reads directly as ns per lookup** (the exception is
//! `lookup_random/10k/regex_set`, whose lookups take milliseconds: 10 per iteration, so there ms
//! per iteration / 10 = ms per lookup). A summary table with ns/lookup and ratios to `hostgate` is
//! printed at the end as well.
//!
//! Before any timing, each size's data is generated once (fixed seed) and checked: for every
//! query, `hostgate` and `hash_suffix` must agree on whether there is a match and on the winner's
//! specificity, and exactly half of the queries must hit. `regex_set` must agree with `hash_suffix`
//! exactly (specificity and id) on the whole hot set and the first 200 random queries.
//! Heap bytes per rule and one-shot build times are printed at the same point.
//!
//! Data is built lazily, inside the first benchmark that needs it, so `--list` is instant and a
//! filter (`cargo bench --bench matcher -- lookup_hot/1m`) only pays for the sizes it runs (plus
//! generating the 10k rules and building one `RegexSet`, to learn whether it builds). In
//! test mode (`cargo test --benches`, or `-- --test`) the sizes are capped at 1,000 rules so the
//! smoke run stays quick even unoptimised; the group names stay the same.

mod support;

use std::cell::{OnceCell, RefCell};
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput};
use hostgate_matcher::{Matcher, MatcherBuilder};

use support::hash_suffix::HashSuffix;
use support::regex_set::RegexSetMatcher;
use support::synth::{generate_queries, Queries, RuleSet, Shape};
use support::Spec;

/// "hostgate" in ASCII.
const SEED: u64 = 0x686f_7374_6761_7465;
/// Queries per timed iteration.
const BATCH: usize = 1_000;
/// `regex_set` only runs at sizes up to this.
const REGEX_MAX_RULES: usize = 10_000;
/// Queries per timed iteration of `lookup_random/*/regex_set`, whose lookups take milliseconds.
const REGEX_RANDOM_BATCH: usize = 10;
/// `build/*/regex_set` is only registered if one build took less than this.
const REGEX_BUILD_BUDGET: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
struct Size {
    label: &'static str,
    /// Synthetic rules to generate; 0 for the shipped rules (`docs`).
    rules: usize,
    /// Criterion's measurement time for this size's build group.
    build_time: Duration,
}

const SIZES: [Size; 4] = [
    Size { label: "docs", rules: 0, build_time: Duration::from_secs(3) },
    Size { label: "10k", rules: 10_000, build_time: Duration::from_secs(5) },
    Size { label: "100k", rules: 100_000, build_time: Duration::from_secs(5) },
    Size { label: "1m", rules: 1_000_000, build_time: Duration::from_secs(15) },
];

/// How much data a size gets: the real amounts, or small ones in test mode.
#[derive(Clone, Copy, Debug)]
struct Scale {
    rules: usize,
    random: usize,
    hot: usize,
    /// How many hot and random queries `regex_set` is checked on (cold lookups take ~5 ms each).
    /// Normally the whole hot set: that check doubles as the warm-up of its lazy DFA.
    regex_checked_hot: usize,
    regex_checked_random: usize,
}

impl Scale {
    fn of(size: Size, test_mode: bool) -> Self {
        if test_mode {
            Self {
                rules: size.rules.min(1_000),
                random: 4 * BATCH,
                hot: BATCH,
                regex_checked_hot: 100,
                regex_checked_random: 100,
            }
        } else {
            Self {
                rules: size.rules,
                random: 1_000_000,
                hot: 5_000,
                regex_checked_hot: 5_000,
                regex_checked_random: 200,
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listing = args.iter().any(|a| a == "--list");
    // Criterion's own rule: without `--bench` (as under `cargo test`), or with `--test`, it runs
    // each benchmark once as a smoke test.
    let test_mode = args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench");
    if test_mode && !listing {
        println!("test mode: sizes capped at 1000 rules, 4000 random + 1000 hot queries");
    }
    let mut criterion = Criterion::default().configure_from_args();
    let summary = RefCell::new(Summary::default());
    for size in SIZES {
        let mut data = Lazy::new(size, Scale::of(size, test_mode));
        // `regex_set` is registered only if it builds; trying costs a fraction of a second at
        // 10k, so it is skipped when only listing.
        let regex_ok = size.rules <= REGEX_MAX_RULES && (listing || data.regex_hot().is_some());
        let regex_build_ok = regex_ok && (listing || data.regex_build_time() < REGEX_BUILD_BUDGET);
        lookup_group(&mut criterion, &summary, &data, false, regex_ok);
        // The random-lookup RegexSet's lazy DFA cache may have grown to 1 GiB: free it.
        data.regex_random.take();
        lookup_group(&mut criterion, &summary, &data, true, regex_ok);
        data.regex_hot.take();
        build_group(&mut criterion, &summary, &data, regex_build_ok);
    }
    criterion.final_summary();
    if !test_mode {
        summary.into_inner().print();
    }
}

/// The patterns of the shipped configuration's active rules (`config/hostgate.toml`), as the
/// gateway compiles them.
fn shipped_patterns() -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/hostgate.toml");
    let config = hostgate_proxy::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let policy = hostgate_proxy::policy::Policy::load(&config.policy_inputs()).unwrap_or_else(|e| panic!("{e}"));
    policy.rules().iter().filter_map(|r| r.pattern.as_ref()).map(|p| p.as_str().to_string()).collect()
}

/// One size's data, built on first use.
struct Lazy {
    size: Size,
    scale: Scale,
    rules: OnceCell<RuleSet>,
    fixture: OnceCell<Fixture>,
    /// Two `RegexSet`s, one per lookup group, so that the cold states the random lookups add to
    /// one lazy DFA cache cannot evict the hot set's states from the other.
    regex_hot: OnceCell<(Option<RegexSetMatcher>, Duration)>,
    regex_hot_warm: OnceCell<()>,
    regex_random: OnceCell<RegexSetMatcher>,
}

/// The compiled matchers and the query sets of one size.
struct Fixture {
    hostgate: Matcher<u32>,
    hash: HashSuffix,
    random: Queries,
    hot: Queries,
}

impl Lazy {
    fn new(size: Size, scale: Scale) -> Self {
        Self {
            size,
            scale,
            rules: OnceCell::new(),
            fixture: OnceCell::new(),
            regex_hot: OnceCell::new(),
            regex_hot_warm: OnceCell::new(),
            regex_random: OnceCell::new(),
        }
    }

    fn label(&self) -> &'static str {
        self.size.label
    }

    fn rules(&self) -> &RuleSet {
        self.rules.get_or_init(|| {
            let start = Instant::now();
            let rules = if self.size.rules == 0 {
                RuleSet::from_patterns(shipped_patterns())
            } else {
                RuleSet::generate(self.scale.rules, SEED ^ self.scale.rules as u64)
            };
            let shares: Vec<String> =
                Shape::ALL.iter().map(|&s| format!("{} {:.1}%", s.name(), rules.share(s))).collect();
            println!(
                "[{}] {} rules generated in {:.2?}: {}; mean {:.1} bytes/rule",
                self.label(),
                rules.len(),
                start.elapsed(),
                shares.join(", "),
                rules.mean_len(),
            );
            rules
        })
    }

    fn fixture(&self) -> &Fixture {
        self.fixture.get_or_init(|| {
            let label = self.label();
            let rules = self.rules();
            let n = rules.len();

            let start = Instant::now();
            let hostgate = build_hostgate(&rules.patterns);
            let hostgate_build = start.elapsed();
            let start = Instant::now();
            let hash = build_hash_suffix(&rules.patterns);
            let hash_build = start.elapsed();
            println!("[{label}] build once: hostgate {hostgate_build:.2?}, hash_suffix {hash_build:.2?}");
            println!(
                "[{label}] hostgate heap bytes/rule: {:.1} ({} bytes / {n} rules)",
                hostgate.heap_bytes() as f64 / n as f64,
                hostgate.heap_bytes(),
            );
            println!(
                "[{label}] hash_suffix heap bytes/rule: {:.1} (estimate: table buckets + string capacities)",
                hash.heap_bytes_estimate() as f64 / n as f64,
            );

            let start = Instant::now();
            let is_hit = |q: &str| hash.find(q).is_some();
            let random = generate_queries(rules, self.scale.random, SEED + 1, false, is_hit);
            let hot = generate_queries(rules, self.scale.hot, SEED + 2, true, is_hit);
            println!(
                "[{label}] {} random + {} hot queries generated in {:.2?} (mean {:.1} bytes/query)",
                random.len(),
                hot.len(),
                start.elapsed(),
                random.total_bytes() as f64 / random.len().max(1) as f64,
            );
            let fixture = Fixture { hostgate, hash, random, hot };
            check(label, "random", rules, &fixture, &fixture.random);
            check(label, "hot", rules, &fixture, &fixture.hot);
            fixture
        })
    }

    /// The `RegexSet` for `lookup_hot`, built (not yet warmed), or `None` (after printing why)
    /// if it did not build.
    fn regex_hot(&self) -> Option<&RegexSetMatcher> {
        self.regex_hot_entry().0.as_ref()
    }

    /// How long building the `RegexSet` took, once.
    fn regex_build_time(&self) -> Duration {
        self.regex_hot_entry().1
    }

    fn regex_hot_entry(&self) -> &(Option<RegexSetMatcher>, Duration) {
        self.regex_hot.get_or_init(|| {
            let label = self.label();
            let start = Instant::now();
            let built = build_regex_set(&self.rules().patterns);
            let elapsed = start.elapsed();
            match built {
                Ok(regex) => {
                    println!("[{label}] build once: regex_set {elapsed:.2?} ({} regexes)", regex.len());
                    (Some(regex), elapsed)
                }
                Err(e) => {
                    println!("[{label}] regex_set skipped: the RegexSet did not build: {e}");
                    (None, elapsed)
                }
            }
        })
    }

    /// The `RegexSet` for `lookup_hot`, checked against `hash_suffix` on every hot query (which
    /// builds the lazy DFA states those queries need) and then run over them once more, so the
    /// benchmark measures a warm cache.
    fn regex_hot_warm(&self) -> &RegexSetMatcher {
        let regex = self.regex_hot().expect("regex_set is registered only if it built");
        self.regex_hot_warm.get_or_init(|| {
            let fx = self.fixture();
            let start = Instant::now();
            let hot = || fx.hot.iter().take(self.scale.regex_checked_hot);
            check_regex(self.label(), "hot", regex, fx, hot());
            for q in hot() {
                black_box(regex.find(q));
            }
            println!(
                "[{}] regex_set warmed up on the hot set (check + one more pass) in {:.2?}",
                self.label(),
                start.elapsed()
            );
        });
        regex
    }

    /// A second `RegexSet` for `lookup_random`, checked on the first random queries.
    fn regex_random(&self) -> &RegexSetMatcher {
        self.regex_random.get_or_init(|| {
            let regex = build_regex_set(&self.rules().patterns).expect("it built once already (regex_hot)");
            let fx = self.fixture();
            let random = fx.random.iter().take(self.scale.regex_checked_random);
            check_regex(self.label(), "random", &regex, fx, random);
            regex
        })
    }
}

fn build_hostgate(patterns: &[String]) -> Matcher<u32> {
    let mut builder = MatcherBuilder::new();
    for (i, p) in patterns.iter().enumerate() {
        builder.add(p, u32::try_from(i).expect("fewer than 2^32 rules"));
    }
    builder.build().unwrap_or_else(|e| panic!("the synthetic rules are valid, but: {e}"))
}

fn build_hash_suffix(patterns: &[String]) -> HashSuffix {
    HashSuffix::new(patterns.iter().map(String::as_str))
}

fn build_regex_set(patterns: &[String]) -> Result<RegexSetMatcher, String> {
    RegexSetMatcher::new(patterns.iter().map(String::as_str))
}

/// Asserts that `hostgate` and `hash_suffix` agree on every query (match or not, and the winner's
/// specificity) and that exactly half of the queries hit. Winning ids may legitimately differ
/// only if one side breaks ties differently; the contract says lowest id for both, so a
/// difference is counted and shown rather than failing the run.
fn check(label: &str, what: &str, rules: &RuleSet, fx: &Fixture, queries: &Queries) {
    let start = Instant::now();
    let mut hits = 0;
    let mut id_diffs = 0;
    let mut first_diff = None;
    for q in queries.iter() {
        let hg = fx
            .hostgate
            .find(q)
            .unwrap_or_else(|e| panic!("[{label}] hostgate rejected the generated query {q:?}: {e}"));
        let hs = fx.hash.find(q);
        let hg_spec = hg.as_ref().map(|m| {
            let s = m.specificity();
            Spec::new(s.is_exact(), u16::try_from(s.literal_len()).expect("at most 253 bytes"))
        });
        let hs_spec = hs.map(|(s, _)| s);
        let pattern = |id: usize| rules.patterns.get(id).map_or("?", String::as_str);
        assert_eq!(
            hg_spec,
            hs_spec,
            "[{label}] hostgate and hash_suffix disagree on {q:?}: hostgate picks {:?}, hash_suffix {:?}",
            hg.as_ref().map(|m| (pattern(m.id().as_usize()), m.specificity())),
            hs.map(|(s, id)| (pattern(id as usize), s)),
        );
        if let (Some(m), Some((_, id))) = (&hg, hs) {
            hits += 1;
            assert_eq!(
                *m.value() as usize,
                m.id().as_usize(),
                "[{label}] hostgate's value for {q:?} is not the value added with its pattern id"
            );
            if m.id().as_usize() != id as usize {
                id_diffs += 1;
                first_diff.get_or_insert_with(|| {
                    format!(
                        "{q:?}: hostgate {} ({:?}), hash_suffix {id} ({:?})",
                        m.id().as_usize(),
                        pattern(m.id().as_usize()),
                        pattern(id as usize),
                    )
                });
            }
        }
    }
    assert_eq!(hits, queries.len() / 2, "[{label}] {what}: expected exactly half of the queries to hit");
    println!(
        "[{label}] check {what}: {} queries, {hits} hits ({:.1}%), hostgate and hash_suffix agree on \
         every result's specificity, in {:.2?}",
        queries.len(),
        100.0 * hits as f64 / queries.len().max(1) as f64,
        start.elapsed(),
    );
    if let Some(example) = first_diff {
        println!(
            "[{label}] WARNING {what}: the winning pattern id differs on {id_diffs} equal-specificity \
             ties (both should pick the lowest id), e.g. {example}"
        );
    }
}

/// Asserts that `regex_set` agrees with `hash_suffix` (specificity and id) on `queries`.
fn check_regex<'q>(
    label: &str,
    what: &str,
    regex: &RegexSetMatcher,
    fx: &Fixture,
    queries: impl Iterator<Item = &'q str>,
) {
    let start = Instant::now();
    let mut n = 0;
    for q in queries {
        n += 1;
        assert_eq!(regex.find(q), fx.hash.find(q), "[{label}] regex_set and hash_suffix disagree on {q:?}");
    }
    println!("[{label}] check regex_set {what}: agrees with hash_suffix on {n} queries, in {:.2?}", start.elapsed());
}

fn lookup_group(c: &mut Criterion, summary: &RefCell<Summary>, data: &Lazy, hot: bool, regex: bool) {
    let name = format!("lookup_{}/{}", if hot { "hot" } else { "random" }, data.label());
    let mut group = c.benchmark_group(&name);
    group.sample_size(50).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    let lookups = Lookups { summary, group_name: &name, data, hot };
    lookups.bench(
        &mut group,
        "hostgate",
        BATCH,
        |data| &data.fixture().hostgate,
        |m, q| m.find(q).ok().flatten().map(|m| *m.value()),
    );
    lookups.bench(&mut group, "hash_suffix", BATCH, |data| &data.fixture().hash, |h, q| h.find(q).map(|(_, id)| id));
    if regex {
        // Microseconds (hot) to milliseconds (random) per lookup: fewer, flat samples keep the
        // group within seconds.
        group.sample_size(10).sampling_mode(SamplingMode::Flat);
        lookups.bench(
            &mut group,
            "regex_set",
            if hot { BATCH } else { REGEX_RANDOM_BATCH },
            move |data| {
                if hot {
                    data.regex_hot_warm()
                } else {
                    data.regex_random()
                }
            },
            |r, q| r.find(q).map(|(_, id)| id),
        );
    }
    group.finish();
}

/// What the lookup benchmarks of one group share.
struct Lookups<'a> {
    summary: &'a RefCell<Summary>,
    group_name: &'a str,
    data: &'a Lazy,
    /// The hot set rather than the random queries.
    hot: bool,
}

impl<'a> Lookups<'a> {
    /// Registers one lookup benchmark: each iteration looks up the next `batch` queries (the
    /// group's throughput), wrapping around at the end of the query set. `target` fetches (and
    /// on first use builds) the matcher from the lazily built data.
    fn bench<T: ?Sized + 'a>(
        &self,
        group: &mut BenchmarkGroup<'_, WallTime>,
        function: &'static str,
        batch: usize,
        target: impl Fn(&'a Lazy) -> &'a T,
        lookup: impl Fn(&T, &str) -> Option<u32>,
    ) {
        let id = format!("{}/{function}", self.group_name);
        let (data, hot, summary) = (self.data, self.hot, self.summary);
        let mut pos = 0;
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(function, |b| {
            let fx = data.fixture();
            let queries = if hot { &fx.hot } else { &fx.random };
            let target = target(data);
            b.iter_custom(|iters| {
                let cpu = cpu_time();
                let start = Instant::now();
                for _ in 0..iters {
                    for q in queries.range(pos, batch) {
                        black_box(lookup(target, black_box(q)));
                    }
                    pos += batch;
                    if pos + batch > queries.len() {
                        pos = 0;
                    }
                }
                let elapsed = start.elapsed();
                let cpu = cpu_since(cpu);
                summary.borrow_mut().record(&id, Unit::Lookup, elapsed, cpu, iters * batch as u64);
                elapsed
            });
        });
    }
}

fn build_group(c: &mut Criterion, summary: &RefCell<Summary>, data: &Lazy, regex: bool) {
    let name = format!("build/{}", data.label());
    let mut group = c.benchmark_group(&name);
    group
        .throughput(Throughput::Elements(data.rules().len() as u64))
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(data.size.build_time);
    bench_build(&mut group, summary, &name, "hostgate", || build_hostgate(&data.rules().patterns));
    bench_build(&mut group, summary, &name, "hash_suffix", || build_hash_suffix(&data.rules().patterns));
    if regex {
        bench_build(&mut group, summary, &name, "regex_set", || build_regex_set(&data.rules().patterns));
    }
    group.finish();
}

/// Registers one build benchmark; only the build is timed, not dropping the result.
fn bench_build<T>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    summary: &RefCell<Summary>,
    group_name: &str,
    function: &'static str,
    build: impl Fn() -> T,
) {
    let id = format!("{group_name}/{function}");
    group.bench_function(function, |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let mut on_cpu = Some(Duration::ZERO);
            for _ in 0..iters {
                let cpu = cpu_time();
                let start = Instant::now();
                let built = black_box(build());
                elapsed += start.elapsed();
                on_cpu = on_cpu.zip(cpu_since(cpu)).map(|(a, b)| a + b);
                drop(built);
            }
            summary.borrow_mut().record(&id, Unit::Build, elapsed, on_cpu, iters);
            elapsed
        });
    });
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unit {
    Lookup,
    Build,
}

/// This thread's time on a CPU so far, from Linux's `/proc/thread-self/schedstat` (nanoseconds
/// run, nanoseconds waited for a CPU, timeslices); `None` where that is not available. The kernel
/// brings the run time up to date only at scheduler ticks and switches, so one reading can lag
/// by a tick (a few ms): only totals of a second or more are used (see [`MIN_CPU_NS`]).
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// On-CPU time since `start` (a [`cpu_time`] reading).
fn cpu_since(start: Option<Duration>) -> Option<Duration> {
    Some(cpu_time()?.saturating_sub(start?))
}

/// The least on-CPU total (ns) for which the summary shows an on-CPU figure: with ~100 timed
/// calls per benchmark, the tick-granular readings then err by about 1%. Short runs (`--quick`)
/// show `-`.
const MIN_CPU_NS: f64 = 1e9;

/// Per benchmark, for the summary table: the wall time per element of every timed call (warm-up
/// included), and the total on-CPU time and elements. On a shared machine the on-CPU time is the
/// steadier figure: wall time also counts the time the benchmark thread waited for a core.
/// Criterion's own estimates (printed above the table) are wall time.
#[derive(Debug, Default)]
struct Summary {
    rows: Vec<Row>,
}

#[derive(Debug)]
struct Row {
    id: String,
    unit: Unit,
    wall: Vec<f64>,
    /// Total on-CPU nanoseconds and elements, while every call could read it.
    cpu: Option<(f64, u64)>,
}

impl Row {
    fn wall_median(&self) -> f64 {
        let mut wall = self.wall.clone();
        wall.sort_by(f64::total_cmp);
        wall[wall.len() / 2]
    }

    /// On-CPU time per element, if enough was measured for the scheduler's accounting
    /// granularity to average out.
    fn cpu_per_element(&self) -> Option<f64> {
        self.cpu.filter(|&(ns, _)| ns >= MIN_CPU_NS).map(|(ns, n)| ns / n.max(1) as f64)
    }
}

impl Summary {
    fn record(&mut self, id: &str, unit: Unit, elapsed: Duration, cpu: Option<Duration>, elements: u64) {
        let per = elapsed.as_nanos() as f64 / elements.max(1) as f64;
        let cpu = cpu.map(|c| (c.as_nanos() as f64, elements));
        match self.rows.iter_mut().find(|r| r.id == id) {
            Some(row) => {
                row.wall.push(per);
                row.cpu = row.cpu.zip(cpu).map(|(a, b)| (a.0 + b.0, a.1 + b.1));
            }
            None => self.rows.push(Row { id: id.to_owned(), unit, wall: vec![per], cpu }),
        }
    }

    fn print(self) {
        if self.rows.is_empty() {
            return;
        }
        println!();
        println!(
            "summary: wall = median over criterion's timed calls (warm-up included), on-CPU = this \
             thread's CPU time / elements; ratios to hostgate"
        );
        println!("{:<32} {:>14} {:>14} {:>8} {:>8}", "benchmark", "wall", "on-CPU", "wall x", "CPU x");
        let fmt = |unit: Unit, ns: f64| match unit {
            Unit::Lookup => format!("{ns:.1} ns"),
            Unit::Build => format!("{:.1} ms", ns / 1e6),
        };
        for row in &self.rows {
            let group = row.id.rsplit_once('/').map_or(row.id.as_str(), |(g, _)| g);
            let base = self.rows.iter().find(|r| r.id == format!("{group}/hostgate"));
            let (wall, cpu) = (row.wall_median(), row.cpu_per_element());
            let wall_ratio = base.map_or(String::new(), |b| format!("{:.2}", wall / b.wall_median()));
            let cpu_ratio =
                base.and_then(|b| Some(cpu? / b.cpu_per_element()?)).map_or(String::new(), |r| format!("{r:.2}"));
            println!(
                "{:<32} {:>14} {:>14} {:>8} {:>8}",
                row.id,
                fmt(row.unit, wall),
                cpu.map_or("-".to_owned(), |c| fmt(row.unit, c)),
                wall_ratio,
                cpu_ratio,
            );
        }
        println!("(lookups: per lookup; builds: per build)");
    }
}
