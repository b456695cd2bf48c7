//! The command line: `hostgate run`, `hostgate check`, `hostgate explain`, `hostgate import`
//! and `hostgate ca init`.
//!
//! This module owns argument parsing and what the tools print. The work is done by
//! [`crate::config`], [`crate::policy`], [`crate::import`] and [`crate::inspect::ca`].

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::config::{Config, InspectConfig, NonHttp};
use crate::explain::{explain_host, Ask};
use crate::firewall::Options as FirewallOptions;
use crate::inspect::ca::{self, Authority, InitOptions};
use crate::normalize::{normalize, Slashes};
use crate::policy::{Action, GroupId, LintKind, Policy, Scheme};

/// hostgate: an egress gateway that decides every outbound connection by the name it asks for.
#[derive(Debug, Parser)]
#[command(name = "hostgate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (the default when no command is given).
    Run {
        /// The configuration file.
        #[arg(long, short, default_value = "config/hostgate.toml")]
        config: PathBuf,
        /// A binary upgrade: once this process listens (beside the running one, on the same
        /// addresses, with `SO_REUSEPORT`) and has loaded the policy, send SIGTERM to the
        /// running gateway `PID`, which stops accepting and lets its connections finish.
        #[arg(long, value_name = "PID")]
        replace: Option<i32>,
    },
    /// Parse and compile the configuration and every rule file; print counts and the lint.
    Check {
        /// The configuration file.
        #[arg(long, short, default_value = "config/hostgate.toml")]
        config: PathBuf,
    },
    /// Print, for each host, the decision, the rule that made it and the rules it beat.
    Explain {
        /// The configuration file.
        #[arg(long, short, default_value = "config/hostgate.toml")]
        config: PathBuf,
        /// How the client connects: `https` (TLS) or `http` (plain).
        #[arg(long, value_enum, default_value_t = SchemeArg::Https)]
        scheme: SchemeArg,
        /// The destination port (default: 443 for https, 80 for http).
        #[arg(long)]
        port: Option<u16>,
        /// The request path (and query), as seen in plain HTTP or inspected TLS.
        #[arg(long)]
        path: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// The client's address: its `[[client]]` group decides which rules apply (without it,
        /// the rules for clients in no group).
        #[arg(long, value_name = "ADDR")]
        client: Option<std::net::IpAddr>,
        /// The names, or destination addresses (decided by the address rules, as a connection
        /// without a name is), to explain.
        #[arg(required = true)]
        hosts: Vec<String>,
    },
    /// Turn vendor documentation pages, or the Microsoft 365 endpoints web service's JSON, into
    /// rule files, with a report of every repair and judgement.
    Import {
        /// The input format.
        #[arg(long, value_enum)]
        from: ImportFormat,
        /// The directory to write the rule files to (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// m365-endpoints: the web service's `/version/<instance>` document, whose instance and
        /// version go into the file's header.
        #[arg(long, value_name = "FILE")]
        version: Option<PathBuf>,
        /// m365-endpoints: the action of a category's rules (Optimize, Allow, Default; default
        /// Optimize=bypass, Allow=bypass, Default=allow); may be repeated.
        #[arg(long = "category", value_name = "CAT=ACTION")]
        category: Vec<String>,
        /// m365-endpoints: leave out the endpoint sets marked `required: false`.
        #[arg(long)]
        required_only: bool,
        /// m365-endpoints: leave out IPv6 ranges.
        #[arg(long)]
        no_ipv6: bool,
        /// The pages (ms-learn), or the one `/endpoints/<instance>` document (m365-endpoints).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Manage the TLS-inspection certificate authority.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Print the nftables ruleset that completes the policy (load it with `nft -f`): the LAN's
    /// TCP redirected to the transparent listener, the LAN's UDP through the `udp://` rules of
    /// the client's group, QUIC rejected.
    Firewall {
        /// The configuration file.
        #[arg(long, short, default_value = "config/hostgate.toml")]
        config: PathBuf,
        /// The interface the clients' traffic arrives on (may be repeated; replaces `[firewall] lan`).
        #[arg(long, value_name = "IFACE")]
        lan: Vec<String>,
        /// The nftables table to write (family inet; replaces `[firewall] table`).
        #[arg(long, value_name = "NAME")]
        table: Option<String>,
    },
    /// Print the PAC file the gateway serves at /proxy.pac (for hosting it elsewhere).
    Pac {
        /// The configuration file.
        #[arg(long, short, default_value = "config/hostgate.toml")]
        config: PathBuf,
        /// The client group whose file to print (default: the clients in no group).
        #[arg(long, value_name = "NAME")]
        group: Option<String>,
    },
    /// Propose rule lines, as a diff to review, for the names denied by default or would-denied
    /// in report mode: from the JSON access log, or a running gateway's recent decisions.
    Suggest {
        /// The JSON access log (`[log] format = "json"`), or `-` for standard input.
        #[arg(long, value_name = "FILE", conflicts_with = "admin", required_unless_present = "admin")]
        log: Option<PathBuf>,
        /// A running gateway's admin listener (`host:port`): reads its `/recent`.
        #[arg(long, value_name = "ADDR")]
        admin: Option<String>,
        /// The action of the proposed rules.
        #[arg(long, value_enum, default_value_t = SuggestAction::Allow)]
        action: SuggestAction,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SuggestAction {
    Allow,
    Bypass,
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Create a new inspection CA: DIR/hostgate-ca.pem (the certificate, to install on the
    /// clients) and DIR/hostgate-ca.key (its private key, mode 0600).
    Init {
        /// The directory to write the two files to (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The certificate's common name.
        #[arg(long, value_name = "NAME", default_value = "hostgate inspection CA")]
        common_name: String,
        /// How many days the certificate is valid for.
        #[arg(long, value_name = "N", default_value_t = 3650, value_parser = clap::value_parser!(u32).range(1..))]
        days: u32,
        /// Restrict the CA to names in this domain (a critical NameConstraints extension that
        /// clients enforce); may be repeated.
        #[arg(long = "permit-dns", value_name = "DOMAIN")]
        permit_dns: Vec<String>,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ImportFormat {
    /// Microsoft Learn Markdown source (network requirement pages).
    MsLearn,
    /// The Microsoft 365 IP Address and URL web service's `/endpoints/<instance>` JSON.
    M365Endpoints,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SchemeArg {
    Http,
    Https,
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    let command = cli.command.unwrap_or(Command::Run { config: PathBuf::from("config/hostgate.toml"), replace: None });
    let result = match command {
        Command::Run { config, replace } => run(&config, replace),
        Command::Check { config } => check(&config, &mut out),
        Command::Explain { config, scheme, port, path, json, client, hosts } => {
            let scheme = match scheme {
                SchemeArg::Http => Scheme::Http,
                SchemeArg::Https => Scheme::Https,
            };
            let port = port.unwrap_or(if scheme == Scheme::Http { 80 } else { 443 });
            let ask = ExplainArgs { scheme, port, path: path.as_deref(), client, as_json: json };
            explain(&config, &ask, &hosts, &mut out)
        }
        Command::Import { from, out: dir, version, category, required_only, no_ipv6, files } => {
            let m365 = M365Args { version, category, required_only, no_ipv6 };
            match from {
                ImportFormat::MsLearn => m365.refuse().and_then(|()| import(&files, &dir, &mut out)),
                ImportFormat::M365Endpoints => import_m365(&files, &dir, &m365, &mut out),
            }
        }
        Command::Ca { command: CaCommand::Init { out: dir, common_name, days, permit_dns, force } } => {
            let opts = InitOptions { common_name, validity_days: days, permitted_dns: permit_dns, force };
            ca_init(&dir, &opts, &mut out)
        }
        Command::Firewall { config, lan, table } => firewall(&config, &FirewallOptions { lan, table }, &mut out),
        Command::Pac { config, group } => pac(&config, group.as_deref(), &mut out),
        Command::Suggest { log, admin, action } => {
            let action = match action {
                SuggestAction::Allow => "allow",
                SuggestAction::Bypass => "bypass",
            };
            crate::status::suggest::run(log.as_deref(), admin.as_deref(), action, &mut out)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = out.flush();
            eprintln!("hostgate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `hostgate run`: validate everything, set up logging, serve until SIGINT or SIGTERM.
/// A configuration error exits with code 64 (EX_USAGE) before any socket is bound.
fn run(config: &std::path::Path, replace: Option<i32>) -> Result<ExitCode, String> {
    // Sockets passed by systemd (socket activation) are taken first, while this is the only
    // thread: reading them edits the environment.
    let inherited = crate::listen::inherit_from_env().map_err(|e| format!("LISTEN_FDS: {e}"))?;
    let c = match Config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hostgate: {e}");
            return Ok(ExitCode::from(64));
        }
    };
    // A log output that cannot be opened is a configuration error too.
    if let Err(e) = crate::access::init_tracing(&c.log) {
        eprintln!("hostgate: {}: {e}", config.display());
        return Ok(ExitCode::from(64));
    }
    if !inherited.is_empty() {
        let addresses: Vec<String> = inherited.iter().map(ToString::to_string).collect();
        tracing::info!(sockets = %addresses.join(","), "socket activation: listening sockets passed by the supervisor");
    }
    // The control plane (start-up, reloads, signals, the admin listener) runs on this thread;
    // connections run on `[runtime] workers` threads of their own (`crate::listen::workers`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("hostgate")
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let code = runtime.block_on(async move {
        let grace = c.runtime.shutdown_grace;
        let gateway = match crate::gateway::Gateway::start(c).await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                eprintln!("hostgate: {e}");
                return Ok(ExitCode::from(match e {
                    crate::gateway::StartError::Policy(_) | crate::gateway::StartError::Inspect(_) => 64,
                    _ => 1,
                }));
            }
        };
        let p = gateway.policy();
        tracing::info!(generation = gateway.generation(), rules = p.rules().len(), default = %p.default_action(), "policy loaded");
        // Handlers first: a SIGHUP right after READY=1 must reload, not kill the process.
        let signals = Signals::install()?;
        crate::notify::ready();
        if let Some(pid) = replace {
            // This process accepts now: the old one may stop (its queued connections move to
            // these sockets with net.ipv4.tcp_migrate_req = 1; README: Restarts and upgrades).
            match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM) {
                Ok(()) => tracing::info!(pid, "replacing: SIGTERM sent to the running gateway"),
                Err(e) => tracing::error!(pid, error = %e, "replacing: cannot signal the running gateway"),
            }
        }
        serve_signals(gateway, grace, signals).await
    });
    // Syslog messages are written by a thread of their own: let it catch up before exiting.
    crate::logsink::flush(std::time::Duration::from_secs(2));
    code
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, String> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?,
            int: signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT handler: {e}"))?,
            hup: signal(SignalKind::hangup()).map_err(|e| format!("SIGHUP handler: {e}"))?,
        })
    }
}

/// SIGHUP reloads (requests coalesce); the first SIGTERM or SIGINT starts a graceful shutdown
/// of up to `grace`; a second one exits at once.
async fn serve_signals(
    gateway: crate::gateway::Gateway,
    grace: std::time::Duration,
    signals: Signals,
) -> Result<ExitCode, String> {
    let Signals { mut term, mut int, mut hup } = signals;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reload requested");
                gateway.request_reload();
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!(grace_ms = grace.as_millis() as u64, "stopping: no new connections; established ones may finish");
    crate::notify::stopping();
    let shutdown = gateway.shutdown(grace);
    tokio::select! {
        closed = shutdown => {
            tracing::info!(closed, "stopped");
            Ok(ExitCode::SUCCESS)
        }
        _ = term.recv() => {
            tracing::warn!("second signal: exiting now");
            Ok(ExitCode::from(1))
        }
        _ = int.recv() => {
            tracing::warn!("second signal: exiting now");
            Ok(ExitCode::from(1))
        }
    }
}

fn load(config: &std::path::Path) -> Result<(Config, Policy), String> {
    let c = Config::load(config).map_err(|e| e.to_string())?;
    let p = Policy::load(&c.policy_inputs()).map_err(|e| e.to_string())?;
    Ok((c, p))
}

/// `hostgate check`: load what the gateway would load, then print the counts, the inspection
/// setup and the lint.
fn check(config: &std::path::Path, out: &mut impl Write) -> Result<ExitCode, String> {
    let (c, p) = load(config)?;
    let w = |e: std::io::Error| e.to_string();
    writeln!(
        out,
        "config {}: {} listener(s), default action {}",
        c.path.display(),
        c.listeners.len(),
        p.default_action()
    )
    .map_err(w)?;
    check_rules(&p, out)?;
    check_groups(&p, out)?;
    check_inspection(c.inspect.as_ref(), out)?;
    check_firewall(&c, &p, out)?;
    if let Some(a) = crate::auth::load(&c)? {
        let groups = p.groups().iter().filter(|g| g.auth).count();
        writeln!(
            out,
            "auth: {} (realm {:?}); {groups} of {} client groups sign in for `allow`",
            a.describe(),
            c.auth.as_ref().map_or("", |x| x.realm.as_str()),
            p.groups().len()
        )
        .map_err(|e| e.to_string())?;
    }
    check_pac(&c, &p, out)?;
    check_lint(&p, out)?;
    writeln!(out, "{}", crate::import::m365::check_note(&c)).map_err(w)?;
    writeln!(out, "ok: the configuration is usable").map_err(w)?;
    Ok(ExitCode::SUCCESS)
}

/// `hostgate check`: the rules of each source, the totals, and what compiling took.
fn check_rules(p: &Policy, out: &mut impl Write) -> Result<(), String> {
    let w = |e: std::io::Error| e.to_string();
    let mut totals = [0usize; 3];
    let (mut inactive, mut udp) = (0, 0);
    for s in p.sources() {
        writeln!(
            out,
            "  {}: {} rules (bypass {}, allow {}, deny {}){}{}",
            s.file,
            s.active(),
            s.by_action[Action::Bypass as usize],
            s.by_action[Action::Allow as usize],
            s.by_action[Action::Deny as usize],
            if s.inactive > 0 { format!(", {} inactive", s.inactive) } else { String::new() },
            if s.udp > 0 { format!(", {} UDP rules (for `hostgate firewall`)", s.udp) } else { String::new() }
        )
        .map_err(w)?;
        for (t, n) in totals.iter_mut().zip(s.by_action) {
            *t += n;
        }
        inactive += s.inactive;
        udp += s.udp;
    }
    let m = p.matcher();
    let counts = m.counts();
    writeln!(
        out,
        "total: {} rules (bypass {}, allow {}, deny {}), {} inactive, {} UDP",
        totals.iter().sum::<usize>(),
        totals[Action::Bypass as usize],
        totals[Action::Allow as usize],
        totals[Action::Deny as usize],
        inactive,
        udp
    )
    .map_err(w)?;
    writeln!(
        out,
        "compiled in {:.1} ms; matcher {} heap bytes ({} exact, {} suffix, {} glob forms); {} address rules ({} heap bytes)",
        p.compile_time().as_secs_f64() * 1e3,
        m.heap_bytes(),
        counts.exact,
        counts.suffix,
        counts.glob,
        p.nets().len(),
        p.nets().heap_bytes()
    )
    .map_err(w)
}

/// `hostgate firewall`: the ruleset on standard output, warnings on standard error.
fn firewall(config: &std::path::Path, opts: &FirewallOptions, out: &mut impl Write) -> Result<ExitCode, String> {
    let (c, p) = load(config)?;
    let rules = crate::firewall::ruleset(&c, &p, opts).map_err(|e| e.to_string())?;
    for warning in &rules.warnings {
        eprintln!("hostgate: warning: {warning}");
    }
    out.write_all(rules.text.as_bytes()).map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

/// `hostgate pac`: the PAC file of the clients in no group, or of `group`.
fn pac(config: &std::path::Path, group: Option<&str>, out: &mut impl Write) -> Result<ExitCode, String> {
    let (c, p) = load(config)?;
    let Some(pc) = &c.pac else {
        return Err(format!("{}: no [pac] section and no connect listener: no PAC file", c.path.display()));
    };
    let pac = crate::pac::Pac::build(pc, &p);
    let file = match group {
        None => pac.ungrouped(),
        Some(name) => pac.group(name).ok_or_else(|| format!("no client group `{name}`"))?,
    };
    out.write_all(file.text().as_bytes()).map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

/// `hostgate check`: the PAC file of the clients in no group (its size, what goes `DIRECT`),
/// and a warning when it points clients at a listener they cannot reach.
fn check_pac(c: &Config, p: &Policy, out: &mut impl Write) -> Result<(), String> {
    let w = |e: std::io::Error| e.to_string();
    let Some(pc) = &c.pac else {
        return writeln!(out, "pac: none (no [pac] section and no connect listener)").map_err(w);
    };
    let pac = crate::pac::Pac::build(pc, p);
    let f = pac.ungrouped();
    let direct: Vec<&str> = pc.direct.iter().map(|a| a.as_str()).collect();
    writeln!(
        out,
        "pac: {} bytes, PROXY {}{}; DIRECT: plain host names, {} direct networks, {} name rules and {} address rules ({}){}{}",
        f.text().len(),
        pc.proxy.join(", "),
        if pc.insecure_fallback_direct { " then DIRECT" } else { "" },
        pc.direct_networks.len(),
        f.direct_rules,
        f.direct_address_rules,
        if direct.is_empty() { "[pac] direct is empty".to_string() } else { direct.join(", ") },
        if f.default_direct { "; names no rule fits (the default)" } else { "" },
        if f.path_rules > 0 { format!("; {} path rules keep their names on the proxy", f.path_rules) } else { String::new() }
    )
    .map_err(w)?;
    if let Some(addr) = pc.from_listener.filter(|a| a.ip().is_loopback() || a.ip().is_unspecified() || a.port() == 0) {
        writeln!(
            out,
            "  warning: the PAC file sends clients to {addr} (the first connect listener): set [pac] proxy to the address clients reach the gateway at"
        )
        .map_err(w)?;
    }
    if pc.insecure_fallback_direct {
        writeln!(out, "  warning: [pac] insecure_fallback_direct: when the proxy does not answer, clients go out directly, past the policy").map_err(w)?;
    }
    Ok(())
}

/// `hostgate check`: what `hostgate firewall` would emit (with `[firewall] lan` set), or how to
/// get it.
fn check_firewall(c: &Config, p: &Policy, out: &mut impl Write) -> Result<(), String> {
    let w = |e: std::io::Error| e.to_string();
    if c.firewall.lan.is_empty() {
        let udp = p.sources().iter().map(|s| s.udp).sum::<usize>();
        return writeln!(
            out,
            "firewall: no [firewall] lan: `hostgate firewall --lan IFACE` prints the nftables ruleset{}",
            if udp > 0 { format!(" ({udp} UDP rules are only enforced there)") } else { String::new() }
        )
        .map_err(w);
    }
    let rules = crate::firewall::ruleset(c, p, &FirewallOptions::default()).map_err(|e| format!("firewall: {e}"))?;
    let s = &rules.summary;
    writeln!(
        out,
        "firewall: table inet {}; TCP {} from {} {}; {} UDP rules in {} sets; {} client groups; other UDP: {}",
        c.firewall.table,
        c.firewall.redirect_ports.iter().map(u16::to_string).collect::<Vec<_>>().join(","),
        c.firewall.lan.join(","),
        s.redirect_to
            .map_or_else(|| "not redirected (no transparent listener)".to_string(), |p| format!("redirected to :{p}")),
        s.udp_rules,
        s.sets,
        s.groups,
        c.firewall.udp_default.as_str()
    )
    .map_err(w)?;
    for warning in &rules.warnings {
        writeln!(out, "  warning: {warning}").map_err(w)?;
    }
    Ok(())
}

/// `hostgate check`: the client groups, each with its networks, default, mode and the rules
/// that apply to it (nothing when there are none).
fn check_groups(p: &Policy, out: &mut impl Write) -> Result<(), String> {
    let w = |e: std::io::Error| e.to_string();
    let groups = p.groups();
    if groups.len() == 1 {
        return Ok(());
    }
    for g in groups {
        let nets: Vec<String> = g.networks.iter().map(ToString::to_string).collect();
        let who = match &g.name {
            Some(name) => format!("client group {name} ({})", nets.join(", ")),
            None => "clients in no group".to_string(),
        };
        writeln!(
            out,
            "  {who}: {} rules (bypass {}, allow {}, deny {}), default {}{}",
            g.rules.iter().sum::<usize>(),
            g.rules[Action::Bypass as usize],
            g.rules[Action::Allow as usize],
            g.rules[Action::Deny as usize],
            g.default,
            if g.report { ", report mode" } else { "" }
        )
        .map_err(w)?;
    }
    Ok(())
}

/// `hostgate check`: whether inspection is on and, when it is, the CA and trust anchors loaded
/// as the gateway would load them (and a warning when the CA expires within 30 days).
fn check_inspection(inspect: Option<&InspectConfig>, out: &mut impl Write) -> Result<(), String> {
    let w = |e: std::io::Error| e.to_string();
    let Some(cfg) = inspect else {
        return writeln!(out, "inspection: off (allow is relayed uninspected, like bypass)").map_err(w);
    };
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
    let i = crate::inspect::Inspector::load(cfg, None, metrics).map_err(|e| e.to_string())?;
    let roots = if cfg.insecure_skip_upstream_verify {
        "upstream certificates NOT verified (insecure_skip_upstream_verify)".to_string()
    } else {
        format!("{} upstream trust anchors", i.roots())
    };
    writeln!(
        out,
        "inspection: on; CA {} (valid until {}); {roots}; leaves valid {} s, {} cached at most; non-HTTP {}",
        i.ca_subject(),
        crate::inspect::ca::format_utc(i.ca_not_after()),
        cfg.leaf_validity.as_secs(),
        cfg.cert_cache,
        match cfg.non_http {
            NonHttp::Deny => "denied",
            NonHttp::Relay => "relayed",
        }
    )
    .map_err(w)?;
    let left = i.ca_not_after().duration_since(std::time::SystemTime::now()).unwrap_or_default();
    if left < std::time::Duration::from_secs(30 * 86_400) {
        writeln!(out, "warning: the inspection CA expires in {} days", left.as_secs() / 86_400).map_err(w)?;
    }
    Ok(())
}

/// `hostgate check`: every lint warning, then a summary by kind.
fn check_lint(p: &Policy, out: &mut impl Write) -> Result<(), String> {
    let w = |e: std::io::Error| e.to_string();
    let lints = p.lint();
    let mut by_kind: Vec<(LintKind, usize)> = Vec::new();
    for l in &lints {
        match by_kind.last_mut() {
            Some((k, n)) if *k == l.kind => *n += 1,
            _ => by_kind.push((l.kind, 1)),
        }
    }
    for l in &lints {
        writeln!(out, "{l}").map_err(w)?;
    }
    let summary: Vec<String> = by_kind.iter().map(|(k, n)| format!("{n} {}", k.as_str())).collect();
    if lints.is_empty() {
        writeln!(out, "lint: no warnings").map_err(w)
    } else {
        writeln!(out, "lint: {} warnings ({})", lints.len(), summary.join(", ")).map_err(w)
    }
}

/// `explain`'s options.
struct ExplainArgs<'a> {
    scheme: Scheme,
    port: u16,
    path: Option<&'a str>,
    client: Option<std::net::IpAddr>,
    as_json: bool,
}

fn explain(
    config: &std::path::Path,
    args: &ExplainArgs<'_>,
    hosts: &[String],
    out: &mut impl Write,
) -> Result<ExitCode, String> {
    let ExplainArgs { scheme, port, path, client, as_json } = *args;
    let (c, p) = load(config)?;
    let w = |e: std::io::Error| e.to_string();
    // The path as the gateway sees a request's: normalised first (a refused one never reaches a
    // decision).
    let slashes = if c.http.insecure_keep_escaped_slashes { Slashes::Keep } else { Slashes::Refuse };
    let normalized = match path.map(|raw| normalize(raw, slashes)).transpose() {
        Ok(n) => n,
        Err(e) => {
            for name in hosts {
                if as_json {
                    let v = json!({"host": name, "action": "deny", "rule": null, "source": null, "default": false, "path": path, "error": format!("request target refused (400): {e}")});
                    writeln!(out, "{v}").map_err(w)?;
                } else {
                    writeln!(out, "{name} {}: refused with 400 before any decision: {e}", path.unwrap_or_default())
                        .map_err(w)?;
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    if let (Some(raw), Some(n)) = (path, normalized.as_deref()) {
        if raw != n && !as_json {
            writeln!(out, "path {raw} is normalised to {n}: decided and forwarded as {n}").map_err(w)?;
        }
    }
    let group = client.map_or(GroupId::NONE, |a| p.group_of(a));
    let ask = Ask { scheme, port, path: normalized.as_deref(), client, group, as_json };
    for name in hosts {
        explain_host(&p, &ask, name, out)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn import(files: &[PathBuf], dir: &std::path::Path, out: &mut impl Write) -> Result<ExitCode, String> {
    let w = |e: std::io::Error| e.to_string();
    let mut pages = Vec::with_capacity(files.len());
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: cannot read ({e})", f.display()))?;
        // The file name alone goes into the generated header, so the output does not depend on
        // where the pages were read from.
        let name = f.file_name().map_or_else(|| f.display().to_string(), |n| n.to_string_lossy().into_owned());
        pages.push(crate::import::import_ms_learn(&name, &text).map_err(|e| e.to_string())?);
    }
    for page in &pages {
        for finding in &page.report {
            writeln!(out, "{finding}").map_err(w)?;
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: cannot create ({e})", dir.display()))?;
    let written = crate::import::write_pages(&pages, dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (page, path) in pages.iter().zip(&written) {
        let c = &page.counts;
        writeln!(
            out,
            "wrote {}: {} rules (bypass {}, allow {}, deny {}), {} duplicates dropped, {} findings",
            path.display(),
            c.bypass + c.allow + c.deny,
            c.bypass,
            c.allow,
            c.deny,
            c.duplicates,
            page.report.len()
        )
        .map_err(w)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The flags of `import --from m365-endpoints`.
#[derive(Debug)]
struct M365Args {
    version: Option<PathBuf>,
    category: Vec<String>,
    required_only: bool,
    no_ipv6: bool,
}

impl M365Args {
    /// An error when a flag of m365-endpoints is given to another format.
    fn refuse(&self) -> Result<(), String> {
        let given = [
            (self.version.is_some(), "--version"),
            (!self.category.is_empty(), "--category"),
            (self.required_only, "--required-only"),
            (self.no_ipv6, "--no-ipv6"),
        ];
        match given.iter().find(|(on, _)| *on) {
            Some((_, flag)) => Err(format!("{flag} applies to --from m365-endpoints only")),
            None => Ok(()),
        }
    }

    fn options(&self) -> Result<crate::import::m365::Options, String> {
        use crate::import::m365;
        let mut options = m365::Options::default();
        options.required_only = self.required_only;
        options.no_ipv6 = self.no_ipv6;
        let mut seen = Vec::new();
        for spec in &self.category {
            let (category, action) = m365::Options::parse_category_flag(spec)?;
            if seen.contains(&category) {
                return Err(format!("--category {category} is given twice"));
            }
            seen.push(category);
            options.set_action(category, action);
        }
        Ok(options)
    }
}

/// `hostgate import --from m365-endpoints`: the report, the change summary against the file
/// already in `dir`, then the file, written only when everything was read.
fn import_m365(
    files: &[PathBuf],
    dir: &std::path::Path,
    args: &M365Args,
    out: &mut impl Write,
) -> Result<ExitCode, String> {
    use crate::import::m365;
    let w = |e: std::io::Error| e.to_string();
    let [file] = files else {
        return Err(format!("--from m365-endpoints reads one /endpoints document, not {}", files.len()));
    };
    let options = args.options()?;
    let name = |f: &std::path::Path| {
        f.file_name().map_or_else(|| f.display().to_string(), |n| n.to_string_lossy().into_owned())
    };
    let version = match &args.version {
        Some(v) => {
            let text = std::fs::read_to_string(v).map_err(|e| format!("{}: cannot read ({e})", v.display()))?;
            Some(m365::read_version(&v.display().to_string(), &text).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: cannot read ({e})", file.display()))?;
    let imported = m365::import(&name(file), &text, version.as_ref(), &options).map_err(|e| {
        // The error names the file as given on the command line.
        let e = e.to_string();
        let shown = file.display().to_string();
        match e.strip_prefix(&name(file)) {
            Some(rest) => format!("{shown}{rest}"),
            None => e,
        }
    })?;
    for finding in &imported.report {
        writeln!(out, "{finding}").map_err(w)?;
    }
    let path = dir.join(&imported.file_name);
    match std::fs::read_to_string(&path) {
        Ok(previous) => match m365::changes(&previous, &imported.contents) {
            Ok(changes) => writeln!(out, "{changes}").map_err(w)?,
            Err(why) => writeln!(out, "changes: not compared with {}: {why}", path.display()).map_err(w)?,
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            writeln!(out, "changes: no previous {}: every set is new", path.display()).map_err(w)?;
        }
        Err(e) => return Err(format!("{}: cannot read the previous file ({e})", path.display())),
    }
    let written = m365::write(&imported, dir).map_err(|e| format!("{}: {e}", path.display()))?;
    let t = &imported.totals;
    writeln!(
        out,
        "wrote {}: {} sets ({} optional, {} left out), {} rules (bypass {}, allow {}, deny {}), {} udp:// rules, {} not rules, {} duplicates dropped, {} findings",
        written.display(),
        t.sets,
        t.optional,
        t.left_out,
        t.tcp(),
        t.bypass,
        t.allow,
        t.deny,
        t.udp,
        t.not_rules,
        t.duplicates,
        imported.report.len()
    )
    .map_err(w)?;
    Ok(ExitCode::SUCCESS)
}

/// `hostgate ca init`: create the CA, load it back (the checks the gateway will make), and say
/// what to do with it.
fn ca_init(dir: &std::path::Path, opts: &InitOptions, out: &mut impl Write) -> Result<ExitCode, String> {
    let w = |e: std::io::Error| e.to_string();
    let files = ca::init(dir, opts).map_err(|e| e.to_string())?;
    let authority = Authority::load(&files.cert, &files.key).map_err(|e| e.to_string())?;
    // Absolute paths, so that the configuration lines work wherever the configuration file is.
    let absolute = |p: &std::path::Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (cert, key) = (absolute(&files.cert), absolute(&files.key));
    let quoted = |p: &std::path::Path| toml::Value::String(p.display().to_string()).to_string();
    writeln!(out, "wrote {} (the CA certificate)", cert.display()).map_err(w)?;
    writeln!(out, "wrote {} (its private key, mode 0600: keep it secret)", key.display()).map_err(w)?;
    writeln!(out, "subject {}, valid until {}", authority.subject(), ca::format_utc(authority.not_after()))
        .map_err(w)?;
    writeln!(out, "next: add to the configuration: [inspect] ca_cert = {} ca_key = {}", quoted(&cert), quoted(&key))
        .map_err(w)?;
    writeln!(
        out,
        "next: install {} as a trusted root on the clients (README: Deploying the inspection CA)",
        cert.display()
    )
    .map_err(w)?;
    Ok(ExitCode::SUCCESS)
}
