//! hostgate against HAProxy, nginx and sniproxy: the same rules, the same upstream, the same
//! load generator, one run. `benches/compare/run.sh` installs the peers, builds this and the
//! gateway, makes a network namespace and runs it there; see `benches/compare/README.md`.
//!
//! For each rule set (the shipped Microsoft rules, a synthetic set of `--synthetic` rules), each
//! proxy is started pinned to `--proxy-cpu` (this program, the client and the upstream stay on
//! the CPUs `run.sh` gave it), checked (every check name must be forwarded or refused as
//! hostgate's policy says; a proxy that forwards a refused name is not timed), then timed:
//! - **rate**: `--concurrency` clients in a closed loop for `--duration` seconds, on a mix of
//!   up to `--distinct` names (more than HAProxy's 10,000-entry pattern cache holds), forwarded
//!   and refused three to one; connections per second, and per second of the proxy's own CPU
//!   time;
//! - **latency**: connections started at a steady rate (half of hostgate's rate on that set)
//!   for `--duration` seconds, paced by a thread of their own; p50, p99 and p99.9 of a forwarded
//!   connection (from its scheduled start to its last byte), minus the same for a direct
//!   connection to the upstream at that rate;
//! - **throughput** (first set only): one `--bulk-mib` transfer from the upstream;
//! - **memory**: peak RSS of the proxy's processes, and (first set only) RSS per idle tunnel with
//!   `--idle` tunnels open.

#[path = "../support/hello.rs"]
mod hello;
mod load;
mod peers;
mod rules;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use load::{Probe, Stats};
use peers::{Kind, Peer};
use rules::RuleSet;

#[derive(Debug)]
struct Args {
    repo: PathBuf,
    work: PathBuf,
    hostgate: PathBuf,
    peers: Vec<Kind>,
    synthetic: usize,
    shipped: bool,
    duration: Duration,
    warmup: Duration,
    concurrency: usize,
    distinct: usize,
    bulk_mib: u64,
    idle: usize,
    latency_rounds: u32,
    proxy_cpu: String,
    out: Option<PathBuf>,
}

fn usage() -> ! {
    eprintln!(
        "usage: compare [--peers hostgate,hostgate+log,haproxy,nginx,sniproxy] [--synthetic N (100000; 0: none)] \
         [--no-shipped] [--duration S (10)] [--warmup S (2)] [--concurrency C (32)] [--distinct N (20000)] [--bulk-mib M (1024)] \
         [--idle N (10000)] [--latency-rounds N (3)] [--proxy-cpu LIST (1)] [--hostgate PATH] [--work DIR] [--out FILE] [--repo DIR]"
    );
    std::process::exit(64)
}

fn parse_args() -> Args {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo.join("target"), PathBuf::from);
    let mut a = Args {
        hostgate: target.join("release/hostgate"),
        repo,
        work: std::env::temp_dir().join("hostgate-compare"),
        peers: vec![Kind::Hostgate, Kind::HostgateLog, Kind::Haproxy, Kind::Nginx, Kind::Sniproxy],
        synthetic: 100_000,
        shipped: true,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        concurrency: 32,
        distinct: 20_000,
        bulk_mib: 1024,
        idle: 10_000,
        latency_rounds: 3,
        proxy_cpu: "1".into(),
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        let num = |v: String| v.parse::<f64>().unwrap_or_else(|_| usage());
        match flag.as_str() {
            "--peers" => {
                a.peers = value().split(',').map(|p| Kind::parse(p).unwrap_or_else(|| usage())).collect();
                if !a.peers.contains(&Kind::Hostgate) {
                    a.peers.insert(0, Kind::Hostgate);
                }
            }
            "--synthetic" => a.synthetic = num(value()) as usize,
            "--no-shipped" => a.shipped = false,
            "--duration" => a.duration = Duration::from_secs_f64(num(value())),
            "--warmup" => a.warmup = Duration::from_secs_f64(num(value())),
            "--concurrency" => a.concurrency = num(value()) as usize,
            "--distinct" => a.distinct = num(value()) as usize,
            "--bulk-mib" => a.bulk_mib = num(value()) as u64,
            "--idle" => a.idle = num(value()) as usize,
            "--latency-rounds" => a.latency_rounds = (num(value()) as u32).max(1),
            "--proxy-cpu" => a.proxy_cpu = value(),
            "--hostgate" => a.hostgate = PathBuf::from(value()),
            "--work" => a.work = PathBuf::from(value()),
            "--out" => a.out = Some(PathBuf::from(value())),
            "--repo" => a.repo = PathBuf::from(value()),
            _ => usage(),
        }
    }
    a
}

/// One proxy's figures on one rule set.
#[derive(Debug, Default)]
struct Row {
    label: String,
    checked: String,
    timed: bool,
    rate: f64,
    cpu_share: f64,
    per_cpu_second: f64,
    wrong: u64,
    errors: String,
    p50_us: Option<u32>,
    p99_us: Option<u32>,
    p999_us: Option<u32>,
    /// The direct baseline measured in the same latency rounds as this proxy: what its added
    /// latency is counted against.
    base_p50_us: Option<u32>,
    base_p99_us: Option<u32>,
    base_p999_us: Option<u32>,
    fixed_errors: String,
    peak_rss_kib: u64,
    throughput: Option<f64>,
    idle_kib: Option<f64>,
    idle_count: usize,
}

fn main() {
    let args = parse_args();
    if let Err(e) = run(&args) {
        eprintln!("compare: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let uid = std::process::Command::new("id").arg("-u").output().map_err(|e| format!("id: {e}"))?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("needs root (iptables REDIRECT for hostgate's transparent listener); run it through run.sh".into());
    }
    if !args.hostgate.exists() {
        return Err(format!("{}: no hostgate binary (cargo build --release)", args.hostgate.display()));
    }
    peers::clear_redirects();
    let _ = std::fs::remove_dir_all(&args.work);
    std::fs::create_dir_all(&args.work).map_err(|e| format!("{}: {e}", args.work.display()))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let upstream = load::start_upstream(args.bulk_mib << 20);

    let mut report = String::new();
    let _ = writeln!(report, "## Comparison run\n");
    let _ = writeln!(
        report,
        "- proxies pinned to CPU {}; load generator and upstream on the others (`run.sh`)",
        args.proxy_cpu
    );
    for kind in &args.peers {
        let _ = writeln!(report, "- {}: {}", kind.label(), kind.version(&args.hostgate));
    }
    let _ = writeln!(
        report,
        "- rate: {} clients, {:?} after {:?} warm-up; latency at half of hostgate's rate, {:?} in {} rounds of \
         the direct baseline then the proxy (added = the proxy's figure minus its own rounds' baseline), \
         arrivals paced by a thread of their own, each timed from its scheduled start",
        args.concurrency, args.duration, args.warmup, args.duration, args.latency_rounds
    );

    let mut sets: Vec<RuleSet> = Vec::new();
    if args.shipped {
        let dir = rules::set_dir(&args.work, "shipped");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        sets.push(rules::shipped(&args.repo, &dir, args.distinct)?);
    }
    if args.synthetic > 0 {
        let dir = rules::set_dir(&args.work, &format!("synthetic {}", args.synthetic));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        sets.push(rules::synthetic(&dir, args.synthetic, args.distinct)?);
    }
    for (i, set) in sets.iter().enumerate() {
        let first = i == 0;
        let dir = rules::set_dir(&args.work, &set.label);
        eprintln!("compare: rule set {} ({} rules, {} check names)", set.label, set.rules, set.check.len());
        let section = rt.block_on(one_set(args, set, &dir, upstream, first))?;
        report.push_str(&section);
    }
    println!("{report}");
    if let Some(out) = &args.out {
        std::fs::write(out, &report).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    Ok(())
}

async fn one_set(
    args: &Args,
    set: &RuleSet,
    dir: &std::path::Path,
    upstream: SocketAddr,
    first: bool,
) -> Result<String, String> {
    let check: Arc<Vec<Probe>> = Arc::new(set.check.iter().map(|(n, f)| Probe::new(n, *f)).collect());
    let mix = rules::load_mix(&set.load, args.distinct);
    let forwarded = mix.iter().filter(|(_, f)| *f).count();
    let probes: Arc<Vec<Probe>> = Arc::new(mix.iter().map(|(n, f)| Probe::new(n, *f)).collect());
    let direct_probes: Arc<Vec<Probe>> =
        Arc::new(mix.iter().filter(|(_, f)| *f).map(|(n, _)| Probe::new(n, true)).collect());
    let mut pins: Vec<String> = set.check.iter().chain(&mix).filter(|(_, f)| *f).map(|(n, _)| n.clone()).collect();
    pins.sort();
    pins.dedup();
    pins.extend([load::BULK.to_string(), load::HOLD.to_string()]);

    let mut rows: Vec<Row> = Vec::new();
    let mut fixed_rate = 0.0;
    let mut direct = Row { label: "direct (no proxy)".into(), checked: "-".into(), timed: true, ..Row::default() };
    let mut direct_bulk = None;
    for &kind in &args.peers {
        eprintln!("compare: {} / {}", set.label, kind.label());
        let peer = match Peer::start(kind, dir, set, &pins, upstream, &args.hostgate, &args.proxy_cpu) {
            Ok(p) => p,
            Err(e) => {
                rows.push(Row { label: kind.label().into(), checked: format!("did not start: {e}"), ..Row::default() });
                continue;
            }
        };
        let mut row = Row { label: kind.label().into(), ..Row::default() };
        // The check: every name once, 16 at a time.
        let seen = load::closed_loop_once(peer.addr, check.clone(), 16).await;
        let leaked: Vec<&str> = seen
            .iter()
            .filter(|(p, s)| !p.forward && *s == load::Seen::Forwarded)
            .map(|(p, _)| p.name.as_str())
            .collect();
        let blocked: Vec<&str> =
            seen.iter().filter(|(p, s)| p.forward && *s == load::Seen::Refused).map(|(p, _)| p.name.as_str()).collect();
        let failed: Vec<String> = seen
            .iter()
            .filter_map(|(p, s)| if let load::Seen::Error(k) = s { Some(format!("{} ({k})", p.name)) } else { None })
            .collect();
        row.checked =
            format!("{}/{} as hostgate's policy", seen.len() - leaked.len() - blocked.len() - failed.len(), seen.len());
        if !blocked.is_empty() {
            let _ = write!(
                row.checked,
                "; refuses {} forwarded names (e.g. {})",
                blocked.len(),
                blocked.iter().take(3).copied().collect::<Vec<_>>().join(", ")
            );
        }
        if !failed.is_empty() {
            let _ = write!(
                row.checked,
                "; {} errors (e.g. {})",
                failed.len(),
                failed.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
            );
        }
        if !leaked.is_empty() {
            let _ = write!(
                row.checked,
                "; **forwards {} refused names** (e.g. {}): not timed",
                leaked.len(),
                leaked.iter().take(3).copied().collect::<Vec<_>>().join(", ")
            );
            eprintln!("compare: {}: {}", kind.label(), row.checked);
            peer.stop();
            rows.push(row);
            continue;
        }
        eprintln!("compare: {}: check {}", kind.label(), row.checked);
        row.timed = true;

        let cpu0 = peer.cpu();
        let mut stats =
            load::closed_loop(peer.addr, probes.clone(), args.concurrency, args.warmup, args.duration).await;
        let cpu = peer.cpu().saturating_sub(cpu0);
        // The CPU time spans the warm-up too: scale it to the timed part.
        let span = args.warmup + args.duration;
        let cpu_timed = cpu.as_secs_f64() * args.duration.as_secs_f64() / span.as_secs_f64();
        row.rate = stats.rate();
        row.cpu_share = cpu_timed / args.duration.as_secs_f64();
        row.per_cpu_second = if cpu_timed > 0.0 { stats.connections() as f64 / cpu_timed } else { 0.0 };
        row.wrong = stats.wrong;
        row.errors = stats.errors_text();
        let _ = stats.quantile_us(0.5);
        eprintln!(
            "compare: {}: {:.0} conn/s, proxy CPU {:.0}%, {:.0} conn per CPU-second, wrong {}, errors {}",
            kind.label(),
            row.rate,
            row.cpu_share * 100.0,
            row.per_cpu_second,
            row.wrong,
            row.errors
        );
        if kind == Kind::Hostgate {
            fixed_rate = (row.rate / 2.0).max(10.0);
            // The direct baseline, now that the rate is known.
            let mut d =
                load::closed_loop(upstream, direct_probes.clone(), args.concurrency, args.warmup, args.duration).await;
            direct.rate = d.rate();
            direct.errors = d.errors_text();
            let _ = d.quantile_us(0.5);
            if first {
                let hello = load::client_hello(load::BULK);
                direct_bulk = load::bulk(upstream, &hello).await.ok().map(|(b, t)| b as f64 / t.as_secs_f64());
                direct.throughput = direct_bulk;
            }
        }
        // The latency run: `latency_rounds` rounds of the direct baseline and then the proxy, at
        // the same fixed rate, so that the proxy's added latency is counted against a baseline
        // measured beside it rather than minutes earlier (this guest's tail moves between
        // passes by more than the differences between proxies).
        let rounds = args.latency_rounds;
        let each = args.duration / rounds;
        let settle = args.warmup.min(Duration::from_millis(500));
        let (mut base, mut f) = (Stats::default(), Stats::default());
        let (mut base_pacing, mut pacing) = (load::Pacing::default(), load::Pacing::default());
        for _ in 0..rounds {
            let (d, dp) = load::open_loop(upstream, direct_probes.clone(), fixed_rate, settle, each).await;
            base.merge(d);
            base_pacing.merge(dp);
            let (p, pp) = load::open_loop(peer.addr, probes.clone(), fixed_rate, settle, each).await;
            f.merge(p);
            pacing.merge(pp);
        }
        row.base_p50_us = base.quantile_us(0.5);
        row.base_p99_us = base.quantile_us(0.99);
        row.base_p999_us = base.quantile_us(0.999);
        row.p50_us = f.quantile_us(0.5);
        row.p99_us = f.quantile_us(0.99);
        row.p999_us = f.quantile_us(0.999);
        let base_q = [row.base_p50_us, row.base_p99_us, row.base_p999_us];
        log_latency(&format!("direct beside {}", kind.label()), fixed_rate, base_q, &mut base_pacing);
        log_latency(kind.label(), fixed_rate, [row.p50_us, row.p99_us, row.p999_us], &mut pacing);
        row.fixed_errors = f.errors_text();
        if kind == Kind::Hostgate {
            // The direct row shows the baseline of hostgate's rounds, as absolute figures.
            direct.p50_us = row.base_p50_us;
            direct.p99_us = row.base_p99_us;
            direct.p999_us = row.base_p999_us;
            direct.fixed_errors = base.errors_text();
        }
        if first {
            let hello = load::client_hello(load::BULK);
            match load::bulk(peer.addr, &hello).await {
                Ok((bytes, took)) if bytes == args.bulk_mib << 20 => {
                    row.throughput = Some(bytes as f64 / took.as_secs_f64())
                }
                Ok((bytes, _)) => row.errors.push_str(&format!("; bulk transfer cut at {bytes} bytes")),
                Err(e) => row.errors.push_str(&format!("; bulk transfer: {e}")),
            }
        }
        row.peak_rss_kib = peer.memory_kib().1;
        // Each idle tunnel takes two descriptors here (client and upstream) and two in the proxy.
        let idle = args.idle.min(usize::try_from(peers::nofile_limit().saturating_sub(300) / 2).unwrap_or(usize::MAX));
        if first && idle > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let before = peer.memory_kib().0;
            let hello = Arc::new(load::client_hello(load::HOLD));
            match load::idle_tunnels(peer.addr, hello, idle, 16).await {
                Ok(open) => {
                    tokio::time::sleep(Duration::from_millis(1000)).await;
                    let after = peer.memory_kib().0;
                    row.idle_kib = Some((after as f64 - before as f64) / open.len() as f64);
                    row.idle_count = open.len();
                    drop(open);
                }
                Err(e) => row.errors.push_str(&format!("; idle tunnels: {e}")),
            }
        }
        peer.stop();
        rows.push(row);
    }
    let _ = direct_bulk;
    Ok(table(args, set, forwarded, mix.len(), fixed_rate, &direct, &rows, first))
}

/// The latency run's absolute figures and how well the pacer kept its schedule, for the log: a
/// start lag near the durations themselves means the figures are the harness's, not the proxy's.
/// `quantiles` are p50, p99 and p99.9 in µs.
fn log_latency(label: &str, rate: f64, quantiles: [Option<u32>; 3], pacing: &mut load::Pacing) {
    let [p50, p99, p999] = quantiles.map(|v| v.map_or("-".into(), |v| v.to_string()));
    eprintln!(
        "compare: {label}: at {rate:.0} conn/s p50 / p99 / p99.9 {p50} / {p99} / {p999} µs from the scheduled start; {}",
        pacing.summary()
    );
}

fn ratio(a: f64, b: f64) -> String {
    if a > 0.0 && b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "-".into()
    }
}

#[allow(clippy::too_many_arguments)]
fn table(
    args: &Args,
    set: &RuleSet,
    forwarded: usize,
    mix: usize,
    fixed_rate: f64,
    direct: &Row,
    rows: &[Row],
    first: bool,
) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "\n### Rule set: {} ({} active rules, {} patterns for the peers)\n",
        set.label,
        set.rules,
        set.entries.len()
    );
    for note in &set.notes {
        let _ = writeln!(t, "- {note}");
    }
    let _ = writeln!(
        t,
        "- check: {} names; load: {mix} names, {forwarded} forwarded and {} refused; latency at {fixed_rate:.0} conn/s\n",
        set.check.len(),
        mix - forwarded
    );
    let hg = rows.iter().find(|r| r.label == "hostgate" && r.timed);
    let _ = writeln!(
        t,
        "| proxy | check | conn/s | hostgate ÷ it | proxy CPU | conn per CPU-s | hostgate ÷ it | p50 / p99 / p99.9 added (µs) | errors | peak RSS (MiB) |{}",
        if first { " throughput (MB/s) | ÷ direct | idle tunnel (KiB) |" } else { "" }
    );
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|---|{}", if first { "---|---|---|" } else { "" });
    let added = |v: Option<u32>, base: Option<u32>| match (v, base) {
        (Some(v), Some(b)) => format!("{}", i64::from(v) - i64::from(b)),
        _ => "-".into(),
    };
    let mut all: Vec<&Row> = vec![direct];
    all.extend(rows.iter());
    for r in all {
        let is_direct = std::ptr::eq(r, direct);
        let (vs_rate, vs_cpu) = match hg {
            Some(h) if r.timed && !is_direct => (ratio(h.rate, r.rate), ratio(h.per_cpu_second, r.per_cpu_second)),
            _ => ("-".into(), "-".into()),
        };
        let latency = if is_direct {
            format!(
                "{} / {} / {} (absolute)",
                r.p50_us.map_or("-".into(), |v| v.to_string()),
                r.p99_us.map_or("-".into(), |v| v.to_string()),
                r.p999_us.map_or("-".into(), |v| v.to_string())
            )
        } else {
            format!(
                "{} / {} / {}",
                added(r.p50_us, r.base_p50_us),
                added(r.p99_us, r.base_p99_us),
                added(r.p999_us, r.base_p999_us)
            )
        };
        let errors = if r.fixed_errors.is_empty() || r.fixed_errors == "0" {
            format!(
                "{}{}",
                if r.errors.is_empty() { "-" } else { &r.errors },
                if r.wrong > 0 { format!(", {} wrong", r.wrong) } else { String::new() }
            )
        } else {
            format!("{}; at fixed rate: {}", r.errors, r.fixed_errors)
        };
        let _ = write!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.label,
            r.checked,
            if r.timed { format!("{:.0}", r.rate) } else { "-".into() },
            vs_rate,
            if r.timed && !is_direct { format!("{:.0}%", r.cpu_share * 100.0) } else { "-".into() },
            if r.timed && !is_direct && r.per_cpu_second > 0.0 {
                format!("{:.0}", r.per_cpu_second)
            } else {
                "-".into()
            },
            vs_cpu,
            if r.timed { latency } else { "-".into() },
            errors,
            if r.peak_rss_kib > 0 { format!("{:.1}", r.peak_rss_kib as f64 / 1024.0) } else { "-".into() },
        );
        if first {
            let _ = write!(
                t,
                " {} | {} | {} |",
                r.throughput.map_or("-".into(), |b| format!("{:.0}", b / 1e6)),
                match (r.throughput, direct.throughput) {
                    (Some(a), Some(b)) if !is_direct => ratio(a, b),
                    _ => "-".into(),
                },
                r.idle_kib.map_or("-".into(), |k| format!("{k:.1} ({} open)", r.idle_count)),
            );
        }
        let _ = writeln!(t);
    }
    let _ = args;
    t
}
