//! Decision benchmark: what the whole policy decision costs per connection or request, from the
//! host string the client sent to the action: normalisation (`hostgate_matcher::Host::new`), the
//! match (every matching rule, by specificity) and the constraint filter (scheme, port, path),
//! that is `hostgate_proxy::policy::Policy::decide` with a reused `Matches` scratch, as the data
//! path runs it.
//!
//! Rule sets (sizes):
//!
//! * `shipped`: `config/hostgate.toml` and its rule files, loaded with `Config::load` and
//!   `Policy::load` (the Microsoft allowlists and `local.rules`: bypass and allow rules, some
//!   with a scheme or a path; no deny rule, so every deny is the default).
//! * `100k`, `1m`: the matcher bench's synthetic patterns (`support/synth.rs`, same seed per
//!   size), written into four rule files in a temporary directory as `ACTION [scheme://]PATTERN
//!   [:port][/path]` and loaded through a configuration like the shipped one, so the real parse
//!   and compile path builds the policy. Actions: 40% bypass, 50% allow, 10% deny; constraints
//!   on 13% of the rules: `https://` 6%, `http://` 3%, `:8443` 2%, a `/api/` path 2%.
//!
//! Queries: the synthetic generator's mix for each rule set: half of them names some rule
//! matches (a hit on an allow, bypass or deny rule, whose constraints may or may not fit), half
//! near-misses that match nothing (denied by default); a few in upper case or with a trailing
//! dot. Nine in ten are TLS (`https`, port 443, no path), one in ten plain HTTP (`http`, port
//! 80, path `/api/v1/items`). How they were decided is printed per size (allow, bypass, deny by
//! a rule, default).
//!
//! Groups (criterion ids `group/size/function`), each iteration a batch of 1,000 queries and the
//! throughput in elements, so **criterion's time per iteration in µs reads as ns per decision**:
//!
//! * `decide_hot/{shipped,100k,1m}`: 5,000 distinct names cycled (warm caches: a gateway's
//!   everyday traffic repeats names).
//! * `decide_random/{shipped,100k,1m}`: 200,000 names walked in order (cold tables, many
//!   different names).
//!
//! Functions: `normalise` (`Host::new` alone), `find` (`Host::new` and `Matcher::find_host`: the
//! most specific match only, what the matcher bench times), `match` (`Host::new` and
//! `Matcher::find_all_host`: every match, what the decision starts from), `decide` (`Host::new`
//! and `Policy::decide`), `decide_counted` (`decide`, then the deciding rule's hit counted in a
//! `hostgate_proxy::status::RuleHits`, as the gateway counts every access record that names a
//! rule: one relaxed `fetch_add` and a last-hit store, the record's start instant taken once per
//! batch as the data path has it already).
//!
//! Printed when a size is first used (not timed by criterion): generating and writing the rules,
//! `Config::load`, `Policy::load` (wall time and the policy's own `compile_time`), the heap the
//! loaded policy holds and the peak during its load (a counting global allocator), the process'
//! RSS growth across the load (`VmRSS`), the decision mix, and `interleaved`: the median time per
//! decision of each function when they take turns batch by batch (200 rounds, hot queries), with
//! ratios, which load that comes and goes on the machine cannot skew.
//!
//! Each size is built on first use and freed after its groups, so `--list` is instant and a
//! filter (`cargo bench --bench decide -- decide_hot/100k`) only builds what it runs. In test
//! mode (`-- --test`, or `cargo test --benches`) the synthetic sizes are capped at 2,000 rules
//! and the query sets shrink (the ids stay the same).

#[allow(dead_code)] // the matcher bench's baselines (`hash_suffix`, `regex_set`) are not used here
mod support;

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput};
use hostgate_matcher::{Host, Matches};
use hostgate_proxy::config::Config;
use hostgate_proxy::policy::{Action, GroupId, Policy, Query, Scheme};
use hostgate_proxy::status::RuleHits;

use support::counting::{live, Counting, PEAK};
use support::synth::{generate_queries, Queries, Rng, RuleSet};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// "hostgate" in ASCII, as in the matcher and reload benches (each size's seed is this xor its
/// rule count).
const SEED: u64 = 0x686f_7374_6761_7465;
/// Queries per timed iteration.
const BATCH: usize = 1_000;
const FILES: usize = 4;
const ACTIONS: [&str; 3] = ["bypass", "allow", "deny"];
/// The path of the plain-HTTP queries (the synthetic path rules are `/api/`).
const PATH: &str = "/api/v1/items";

#[derive(Clone, Copy, Debug)]
struct Size {
    label: &'static str,
    /// Synthetic rules; 0 for the shipped configuration.
    rules: usize,
}

const SIZES: [Size; 3] = [
    Size { label: "shipped", rules: 0 },
    Size { label: "100k", rules: 100_000 },
    Size { label: "1m", rules: 1_000_000 },
];

/// Query and rule counts, smaller in test mode.
#[derive(Clone, Copy, Debug)]
struct Scale {
    max_rules: usize,
    random: usize,
    hot: usize,
    rounds: usize,
}

const FULL: Scale = Scale { max_rules: usize::MAX, random: 200_000, hot: 5_000, rounds: 200 };
const TEST: Scale = Scale { max_rules: 2_000, random: 2_000, hot: 1_000, rounds: 0 };

/// One size's policy and queries.
struct Fixture {
    policy: Policy,
    hot: Queries,
    random: Queries,
    _dir: Option<tempfile::TempDir>,
}

fn mib(bytes: isize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The process' resident set size in bytes (`VmRSS`), or 0 where `/proc` has none.
fn rss() -> isize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<isize>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// The scheme, port and path of query `i`: one in ten plain HTTP with a path, the rest TLS.
fn shape(i: usize) -> (Scheme, u16, Option<&'static str>) {
    if i % 10 == 9 {
        (Scheme::Http, 80, Some(PATH))
    } else {
        (Scheme::Https, 443, None)
    }
}

/// Writes `rules` as four rule files and a configuration naming them into `dir`; returns the
/// configuration's path.
fn write_synthetic(dir: &Path, rules: &RuleSet) -> std::path::PathBuf {
    let mut rng = Rng::new(SEED);
    let mut texts = vec![String::new(); FILES];
    for (i, pattern) in rules.patterns.iter().enumerate() {
        let action = match rng.below(10) {
            0..=3 => 0,
            4..=8 => 1,
            _ => 2,
        };
        let text = &mut texts[i % FILES];
        let (scheme, suffix) = match rng.below(100) {
            0..=5 => ("https://", ""),
            6..=8 => ("http://", ""),
            9..=10 => ("", ":8443"),
            11..=12 => ("", "/api/"),
            _ => ("", ""),
        };
        writeln!(text, "{} {scheme}{pattern}{suffix}", ACTIONS[action]).expect("write to a String");
    }
    for (i, text) in texts.iter().enumerate() {
        std::fs::write(dir.join(format!("synth-{i}.rules")), text).expect("write rules");
    }
    let mut toml = String::from(
        "# Like config/hostgate.toml, with synthetic rule files.\n\
         [[listener]]\nkind = \"connect\"\naddress = \"127.0.0.1:3128\"\n\n\
         [[listener]]\nkind = \"transparent\"\naddress = \"127.0.0.1:15001\"\n\n\
         [policy]\ndefault = \"deny\"\nmode = \"enforce\"\n\n",
    );
    for i in 0..FILES {
        writeln!(toml, "[[policy.source]]\npath = \"synth-{i}.rules\"\n").expect("write to a String");
    }
    toml.push_str("[vars]\n\n[sniff]\ntimeout = \"5s\"\nmax_bytes = 16384\n\n[upstream]\nallow_private = []\n");
    let path = dir.join("hostgate.toml");
    std::fs::write(&path, toml).expect("write config");
    path
}

/// Builds one size: rules, configuration, policy (measured), queries (checked), and prints what
/// it found.
fn build(size: Size, scale: Scale) -> Fixture {
    let label = size.label;
    let started = Instant::now();
    let (config_path, rules, dir) = if size.rules == 0 {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/hostgate.toml");
        (path, None, None)
    } else {
        let n = size.rules.min(scale.max_rules);
        let rules = RuleSet::generate(n, SEED ^ n as u64);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_synthetic(dir.path(), &rules);
        (path, Some(rules), Some(dir))
    };
    let generated = started.elapsed();

    let (rss0, base) = (rss(), live());
    PEAK.store(base, Ordering::Relaxed);
    let t = Instant::now();
    let config = Config::load(&config_path).unwrap_or_else(|e| panic!("{e}"));
    let config_time = t.elapsed();
    let t = Instant::now();
    let policy = Policy::load(&config.policy_inputs()).unwrap_or_else(|e| panic!("{e}"));
    let load_time = t.elapsed();
    drop(config);
    let (held, peak, rss_growth) = (live() - base, PEAK.load(Ordering::Relaxed) - base, rss() - rss0);
    let active: usize = policy.sources().iter().map(|s| s.active()).sum();
    let by_action = policy.sources().iter().fold([0; 3], |mut a, s| {
        for (t, n) in a.iter_mut().zip(s.by_action) {
            *t += n;
        }
        a
    });

    let rules = rules.unwrap_or_else(|| {
        // The query generator knows the pattern grammar, not the one-label flag of an unset
        // placeholder (`<tenant>.onmicrosoft.com`): such a pattern stands in as the one-label
        // name it matches (`tenant.onmicrosoft.com`), so that its generated hits are hits.
        let text = |p: &hostgate_matcher::Pattern| match p.as_str().strip_prefix("*.") {
            Some(rest) if p.is_leftmost_one_label() => format!("tenant.{rest}"),
            _ => p.as_str().to_string(),
        };
        RuleSet::from_patterns(policy.rules().iter().filter_map(|r| r.pattern.as_ref()).map(text).collect())
    });
    let t = Instant::now();
    let is_hit = |q: &str| policy.matcher().find(q).ok().flatten().is_some();
    let random = generate_queries(&rules, scale.random, SEED + 1, false, is_hit);
    let hot = generate_queries(&rules, scale.hot, SEED + 2, true, is_hit);
    let queries_time = t.elapsed();
    drop(rules);

    // How the random queries are decided; every one must be a valid host.
    let mut scratch = Matches::new();
    let mut mix = [0usize; 4]; // bypass, allow, deny by a rule, default
    let mut hits = 0;
    for (i, q) in random.iter().enumerate() {
        let host = Host::new(q).unwrap_or_else(|e| panic!("{q:?}: {e}"));
        let (scheme, port, path) = shape(i);
        let d = policy.decide(&Query { host: &host, scheme, port, path, group: GroupId::NONE }, &mut scratch);
        hits += usize::from(policy.matcher().find_host(&host).is_some());
        mix[if d.rule.is_none() { 3 } else { d.action as usize }] += 1;
    }
    assert_eq!(hits, random.len() / 2, "[{label}] half the queries match a rule");
    assert_eq!(policy.default_action(), Action::Deny);
    let pct = |n: usize| 100.0 * n as f64 / random.len() as f64;

    println!(
        "[{label}] {active} active rules ({} bypass, {} allow, {} deny{}): Config::load {config_time:.2?}, Policy::load {load_time:.2?} (compile_time {:.2?}); heap held {:.1} MiB \
         ({:.0} B/rule), peak during the load {:.1} MiB, RSS growth {:.1} MiB",
        by_action[0],
        by_action[1],
        by_action[2],
        if size.rules == 0 { String::new() } else { format!("; generated and written in {generated:.2?}") },
        policy.compile_time(),
        mib(held),
        held as f64 / active.max(1) as f64,
        mib(peak),
        mib(rss_growth),
    );
    println!(
        "[{label}] {} random + {} hot queries in {queries_time:.2?}; random decided: allow {:.1}%, bypass {:.1}%, \
         deny by a rule {:.1}%, default (deny) {:.1}% ({:.1}% match some rule)",
        random.len(),
        hot.len(),
        pct(mix[1]),
        pct(mix[0]),
        pct(mix[2]),
        pct(mix[3]),
        pct(hits),
    );
    let fixture = Fixture { policy, hot, random, _dir: dir };
    if scale.rounds > 0 {
        interleaved(label, &fixture, scale.rounds);
    }
    fixture
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Function {
    Normalise,
    Find,
    Match,
    Decide,
    DecideCounted,
}

impl Function {
    const ALL: [Function; 5] =
        [Function::Normalise, Function::Find, Function::Match, Function::Decide, Function::DecideCounted];

    fn id(self) -> &'static str {
        match self {
            Function::Normalise => "normalise",
            Function::Find => "find",
            Function::Match => "match",
            Function::Decide => "decide",
            Function::DecideCounted => "decide_counted",
        }
    }
}

/// Runs `f` on queries `start..start + BATCH` (wrapping) of `queries`.
fn run(f: Function, policy: &Policy, hits: &RuleHits, queries: &Queries, start: usize, scratch: &mut Matches) {
    let n = queries.len();
    let started = Instant::now();
    let mut at = start % n;
    for _ in 0..BATCH {
        let q = queries.get(at);
        if let Ok(host) = Host::new(black_box(q)) {
            match f {
                Function::Normalise => {
                    black_box(&host);
                }
                Function::Find => {
                    black_box(policy.matcher().find_host(&host).map(|m| *m.value()));
                }
                Function::Match => {
                    policy.matcher().find_all_host(&host, scratch);
                    black_box(scratch.as_slice().len());
                }
                Function::Decide => {
                    let (scheme, port, path) = shape(at);
                    black_box(policy.decide(&Query { host: &host, scheme, port, path, group: GroupId::NONE }, scratch));
                }
                Function::DecideCounted => {
                    let (scheme, port, path) = shape(at);
                    let d = policy.decide(&Query { host: &host, scheme, port, path, group: GroupId::NONE }, scratch);
                    if let Some(rule) = d.rule {
                        hits.record(rule, started);
                    }
                    black_box(d);
                }
            }
        }
        at += 1;
        if at == n {
            at = 0;
        }
    }
}

/// The functions take turns, a batch of hot queries each, `rounds` rounds; prints the median ns
/// per query of each and the ratios.
fn interleaved(label: &str, fx: &Fixture, rounds: usize) {
    let mut scratch = Matches::new();
    let hits = RuleHits::new(fx.policy.rules().len());
    let mut times = vec![Vec::with_capacity(rounds); Function::ALL.len()];
    // Each turn takes the next batch of the cycle, whatever the function, so every function
    // finds its queries as long out of use as criterion's sequential walk does (were the four
    // to take the same batch, the first would pay the cache misses for the others).
    let mut start = 0;
    for _ in 0..rounds {
        for (f, t) in Function::ALL.iter().zip(&mut times) {
            let began = Instant::now();
            run(*f, &fx.policy, &hits, &fx.hot, start, &mut scratch);
            t.push(began.elapsed().as_secs_f64() * 1e9 / BATCH as f64);
            start += BATCH;
        }
    }
    let m: Vec<f64> = times
        .iter_mut()
        .map(|t| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        })
        .collect();
    println!(
        "[{label}] interleaved (hot): normalise {:.1} ns, find {:.1} ns, match {:.1} ns, decide {:.1} ns per query; \
         decide/match {:.2}, decide - match {:.1} ns (the constraint filter and the policy's bookkeeping), \
         match/find {:.2}; decide_counted {:.1} ns, decide_counted/decide {:.3}",
        m[0],
        m[1],
        m[2],
        m[3],
        m[3] / m[2],
        m[3] - m[2],
        m[2] / m[1],
        m[4],
        m[4] / m[3],
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Criterion's own rule: without `--bench` (as under `cargo test`), or with `--test`, it runs
    // each benchmark once as a smoke test.
    let test_mode = args.iter().any(|a| a == "--test") || !args.iter().any(|a| a == "--bench");
    let scale = if test_mode { TEST } else { FULL };
    let mut c = Criterion::default().configure_from_args();

    for size in SIZES {
        let mut fixture: Option<Fixture> = None;
        for (group, hot) in [("decide_hot", true), ("decide_random", false)] {
            let mut g = c.benchmark_group(format!("{group}/{}", size.label));
            g.throughput(Throughput::Elements(BATCH as u64));
            for f in Function::ALL {
                g.bench_function(BenchmarkId::from_parameter(f.id()), |b| {
                    let fx = fixture.get_or_insert_with(|| build(size, scale));
                    let queries = if hot { &fx.hot } else { &fx.random };
                    let hits = RuleHits::new(fx.policy.rules().len());
                    let mut scratch = Matches::new();
                    let mut start = 0;
                    b.iter(|| {
                        run(f, &fx.policy, &hits, queries, start, &mut scratch);
                        start += BATCH;
                    })
                });
            }
            g.finish();
        }
    }
    c.final_summary();
}
