//! `hostgate firewall`: the nftables half of the policy. From the configuration (the transparent
//! listener, `[firewall]`, the client groups) and the compiled policy (its `udp://` rules) it
//! writes one ruleset that `nft -f` loads atomically into its own table:
//!
//! - `prerouting`: the LAN's TCP to the redirected ports (80 and 443 by default) goes to the
//!   transparent listener (`redirect to :PORT`), where the name is decided;
//! - `forward`: the LAN's UDP goes through the `udp://` rules of the client's group, then the
//!   UDP default (`reject-quic`: UDP 443 is rejected, so that browsers fall back to TCP, where
//!   the name is decided).
//!
//! This module owns the translation and its exactness; it runs no command and touches no
//! socket. The running gateway never uses it.
//!
//! # Exactness
//!
//! hostgate decides addresses by the **longest prefix** among the rules whose ports fit (ties:
//! the strictest action), and picks a client's group by its longest network; nftables takes the
//! first rule that matches. The translation makes the two agree without depending on rule order:
//! the address space is cut into disjoint intervals at every network boundary; every interval is
//! covered by the same chain of nested networks throughout, so its answer for each port is fixed
//! — a *program*: the covering rules from the longest prefix down, deny first among equals,
//! cut after the first rule without a port constraint. Intervals with the same program share a
//! named set (`set g0_p1_v4`), and the sets of one chain are disjoint, so at most one set
//! matches a packet and the order between them does not matter; within a program, nftables'
//! first match is the longest prefix that fits. Client groups are cut the same way into
//! disjoint source sets (`set clients_g1_v4`).
//!
//! A deny in report mode (the group's or its source's) becomes `log prefix "hostgate
//! would_deny: " accept`: the flow goes out and the kernel log says so.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Subnets, Ipv6Subnets};

use crate::config::{Config, ListenerKind, UdpDefault};
use crate::policy::{Action, GroupId, Policy, Ports, RuleId, Transport};

/// What the command line changes of `[firewall]`.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `--lan`: replaces `[firewall] lan` when not empty.
    pub lan: Vec<String>,
    /// `--table`: replaces `[firewall] table`.
    pub table: Option<String>,
}

/// A generated ruleset.
#[derive(Clone, Debug)]
pub struct Ruleset {
    /// The `nft -f` input.
    pub text: String,
    /// Things an operator must know (also written as comments into `text`).
    pub warnings: Vec<String>,
    /// The counts `hostgate check` prints.
    pub summary: Summary,
}

/// Counts of a generated ruleset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// The transparent listener's port the LAN's TCP is redirected to, if any.
    pub redirect_to: Option<u16>,
    /// `udp://` rules that apply to some group.
    pub udp_rules: usize,
    /// Named destination sets (per family).
    pub sets: usize,
    /// Client groups with a source set.
    pub groups: usize,
}

/// Why no ruleset can be generated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirewallError(pub String);

impl std::fmt::Display for FirewallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FirewallError {}

/// Generates the ruleset for `config` and `policy` (the policy loaded from that configuration).
///
/// # Errors
/// No LAN interface (neither `[firewall] lan` nor `--lan`), or a bad `--lan`/`--table`.
pub fn ruleset(config: &Config, policy: &Policy, opts: &Options) -> Result<Ruleset, FirewallError> {
    let fw = &config.firewall;
    let lan = if opts.lan.is_empty() { fw.lan.clone() } else { opts.lan.clone() };
    if lan.is_empty() {
        return Err(FirewallError(format!(
            "{}: no LAN interface: set `[firewall] lan = [\"lan0\"]` or give `--lan IFACE`",
            config.path.display()
        )));
    }
    if let Some(bad) = lan.iter().find(|l| !crate::config::valid_interface(l)) {
        return Err(FirewallError(format!(
            "--lan `{bad}` is not an interface name (1-15 letters, digits, `_.-+@`; `lan*` for a prefix)"
        )));
    }
    let table = opts.table.clone().unwrap_or_else(|| fw.table.clone());
    let table_ok = table.len() <= 32
        && table.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && table.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !table_ok {
        return Err(FirewallError(format!(
            "--table `{table}` is not a table name (a letter, then letters, digits, `_`; at most 32)"
        )));
    }

    let mut warnings = Vec::new();
    let transparent: Vec<SocketAddr> =
        config.listeners.iter().filter(|l| l.kind == ListenerKind::Transparent).map(|l| l.address).collect();
    let redirect = transparent.first().copied();
    if transparent.len() > 1 {
        warnings.push(format!(
            "{} transparent listeners: the LAN's TCP is redirected to the first, {}",
            transparent.len(),
            transparent[0]
        ));
    }
    match redirect {
        None => warnings.push(
            "no transparent listener: the LAN's TCP is not redirected (clients must use the connect listener)"
                .to_string(),
        ),
        Some(a) if a.port() == 0 => {
            return Err(FirewallError(format!(
                "the transparent listener {a} has port 0 (chosen at start): REDIRECT needs a fixed port"
            )))
        }
        Some(a) if a.ip().is_loopback() => warnings.push(format!(
            "the transparent listener is on {a}: REDIRECT sends the LAN's connections to the LAN interface's own address, \
             which a loopback listener does not accept; bind it to 0.0.0.0:{} (or [::]:{})",
            a.port(),
            a.port()
        )),
        Some(a) if !a.ip().is_unspecified() => warnings.push(format!(
            "the transparent listener is on {a}: REDIRECT sends to the primary address of the LAN interface, which must be {}",
            a.ip()
        )),
        Some(_) => {}
    }

    let groups = policy.groups();
    let mut out = String::new();
    let udp_rules = policy.rules().iter().filter(|r| r.transport == Transport::Udp).count();
    let mut summary = Summary { redirect_to: redirect.map(|a| a.port()), udp_rules, ..Summary::default() };
    let w = &mut out;
    let _ = writeln!(w, "#!/usr/sbin/nft -f");
    let _ = writeln!(w, "# Generated by `hostgate firewall` from {}. Do not edit:", config.path.display());
    let _ = writeln!(w, "# re-run it after changing the configuration or the rules, and load it with `nft -f FILE`.");
    let _ = writeln!(w, "# Loading replaces the whole table `inet {table}` in one transaction.");
    for warning in &warnings {
        let _ = writeln!(w, "# warning: {}", one_line(warning));
    }
    let _ = writeln!(w, "table inet {table}");
    let _ = writeln!(w, "delete table inet {table}");
    let _ = writeln!(w, "table inet {table} {{");

    // Client groups: disjoint source sets, the longest network winning.
    let mut group_items: Vec<(IpNet, GroupId, usize)> = Vec::new();
    for (i, g) in groups.iter().enumerate().skip(1) {
        for net in &g.networks {
            group_items.push((*net, GroupId(i as u8), i));
        }
    }
    let client_sets = partition(&group_items, |covering| {
        // The longest network; among equals the first group (as the policy picks).
        covering.iter().max_by_key(|(net, _, order)| (net.prefix_len(), std::cmp::Reverse(*order))).map(|c| c.1)
    });
    let mut dispatch = Vec::new();
    for (gi, g) in groups.iter().enumerate().skip(1) {
        let id = GroupId(gi as u8);
        let mut any = false;
        for (family, nets) in [(Family::V4, &client_sets.v4), (Family::V6, &client_sets.v6)] {
            let elems: Vec<IpNet> = nets.iter().filter(|(_, v)| *v == id).flat_map(|(r, _)| r.cidrs()).collect();
            if elems.is_empty() {
                continue;
            }
            any = true;
            let name = format!("clients_g{gi}_{}", family.suffix());
            let _ = writeln!(w, "\t# client group `{}`{}", one_line(g.label()), at(g.origin.as_ref()));
            write_set(w, &name, family, &elems);
            dispatch.push(format!("{} saddr @{name} jump udp_g{gi}", family.nft()));
        }
        if any {
            summary.groups += 1;
        }
    }

    // Each group's UDP chain: programs over disjoint destination intervals.
    let mut chains = String::new();
    for (gi, g) in groups.iter().enumerate() {
        let id = GroupId(gi as u8);
        let programs = udp_programs(policy, id);
        // Programs numbered in order of first appearance (IPv4 then IPv6, by address).
        let mut seen: Vec<Program> = Vec::new();
        for (_, p) in client_sets_order(&programs) {
            if !p.steps.is_empty() && !seen.contains(p) {
                seen.push(p.clone());
            }
        }
        let c = &mut chains;
        let who = match &g.name {
            Some(_) => format!("client group `{}`{}", one_line(g.label()), at(g.origin.as_ref())),
            None if groups.len() > 1 => "clients in no group".to_string(),
            None => "every client".to_string(),
        };
        let _ = writeln!(c);
        let _ = writeln!(c, "\t# UDP from the LAN: {who}");
        let _ = writeln!(c, "\tchain udp_g{gi} {{");
        for (k, p) in seen.iter().enumerate() {
            for (family, map) in [(Family::V4, &programs.v4), (Family::V6, &programs.v6)] {
                let elems: Vec<IpNet> = map.iter().filter(|(_, q)| q == p).flat_map(|(r, _)| r.cidrs()).collect();
                if elems.is_empty() {
                    continue;
                }
                let name = format!("g{gi}_p{}_{}", k + 1, family.suffix());
                let _ = writeln!(w, "\t# {who}: {}", p.origins(policy));
                write_set(w, &name, family, &elems);
                summary.sets += 1;
                for step in &p.steps {
                    let ports = step.ports.as_ref().map(|p| format!(" udp dport {}", nft_ports(p))).unwrap_or_default();
                    let _ = writeln!(c, "\t\t{} daddr @{name}{ports} {}", family.nft(), step.verdict.nft());
                }
            }
        }
        let _ = match config.firewall.udp_default {
            UdpDefault::RejectQuic => writeln!(
                c,
                "\t\tudp dport 443 reject  # [firewall] udp_default = \"reject-quic\": no QUIC, browsers fall back to TCP"
            ),
            UdpDefault::Reject => writeln!(c, "\t\treject  # [firewall] udp_default = \"reject\""),
            UdpDefault::Accept => writeln!(c, "\t\taccept  # [firewall] udp_default = \"accept\""),
        };
        let _ = writeln!(c, "\t}}");
    }

    let ifaces = lan.iter().map(|l| format!("\"{l}\"")).collect::<Vec<_>>().join(", ");
    let ports = fw.redirect_ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
    let _ = writeln!(w);
    let _ = writeln!(w, "\tchain prerouting {{");
    let _ = writeln!(w, "\t\ttype nat hook prerouting priority dstnat; policy accept;");
    // Which families reach a listener on the redirect port (hostgate's IPv6 sockets are
    // IPv6-only: `0.0.0.0:15001` and `[::]:15001` are two listeners).
    let on_port =
        |v6: bool| redirect.is_some_and(|r| transparent.iter().any(|a| a.port() == r.port() && a.is_ipv6() == v6));
    let (v4, v6) = (on_port(false), on_port(true));
    if let Some(a) = redirect {
        let only = match (v4, v6) {
            (true, false) => "meta nfproto ipv4 ",
            (false, true) => "meta nfproto ipv6 ",
            _ => "",
        };
        let _ = writeln!(
            w,
            "\t\tiifname {{ {ifaces} }} {only}tcp dport {{ {ports} }} redirect to :{}  # the transparent listener {a}",
            a.port()
        );
    }
    let _ = writeln!(w, "\t}}");
    let _ = writeln!(w);
    let _ = writeln!(w, "\tchain forward {{");
    let _ = writeln!(w, "\t\ttype filter hook forward priority filter; policy accept;");
    if redirect.is_some() && !(v4 && v6) {
        let other = if v4 { "ipv6" } else { "ipv4" };
        let _ = writeln!(
            w,
            "\t\tiifname {{ {ifaces} }} meta nfproto {other} tcp dport {{ {ports} }} reject with tcp reset  # the listener cannot take {other}: not past the gateway either"
        );
    }
    let _ = writeln!(w, "\t\tiifname {{ {ifaces} }} meta l4proto udp jump lan_udp");
    let _ = writeln!(w, "\t}}");
    let _ = writeln!(w);
    let _ = writeln!(w, "\tchain lan_udp {{");
    for d in &dispatch {
        let _ = writeln!(w, "\t\t{d}");
    }
    let _ = writeln!(w, "\t\tjump udp_g0");
    let _ = writeln!(w, "\t}}");
    w.push_str(&chains);
    let _ = writeln!(w, "}}");
    Ok(Ruleset { text: out, warnings, summary })
}

/// `(file:line)` of a group's definition.
fn at(origin: Option<&crate::policy::Origin>) -> String {
    origin.map(|o| format!(" ({o})")).unwrap_or_default()
}

/// Text for a `#` comment: one line, no control characters.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn suffix(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }
    /// The nftables payload keyword.
    fn nft(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }
    fn addr_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }
}

fn write_set(w: &mut String, name: &str, family: Family, elems: &[IpNet]) {
    let _ = writeln!(w, "\tset {name} {{");
    let _ = writeln!(w, "\t\ttype {}; flags interval;", family.addr_type());
    let _ = write!(w, "\t\telements = {{");
    for (i, e) in elems.iter().enumerate() {
        let sep = if i == 0 { " " } else { ", " };
        if i > 0 && i % 4 == 0 {
            let _ = write!(w, ",\n\t\t\t");
        } else {
            let _ = write!(w, "{sep}");
        }
        // A /32 or /128 is written as the address.
        if e.prefix_len() == e.max_prefix_len() {
            let _ = write!(w, "{}", e.addr());
        } else {
            let _ = write!(w, "{e}");
        }
    }
    let _ = writeln!(w, " }}");
    let _ = writeln!(w, "\t}}");
}

/// `443`, or `{ 443, 3478-3481 }`.
fn nft_ports(p: &Ports) -> String {
    let merged = p.merged();
    match merged.as_slice() {
        [one] => one.to_string(),
        many => format!("{{ {} }}", many.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")),
    }
}

/// An inclusive range of addresses of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Interval {
    family: Family,
    lo: u128,
    hi: u128,
}

impl Interval {
    /// The range as the fewest CIDR networks.
    fn cidrs(&self) -> Vec<IpNet> {
        match self.family {
            Family::V4 => {
                let (lo, hi) = (Ipv4Addr::from(self.lo as u32), Ipv4Addr::from(self.hi as u32));
                Ipv4Subnets::new(lo, hi, 0).map(IpNet::V4).collect()
            }
            Family::V6 => {
                Ipv6Subnets::new(Ipv6Addr::from(self.lo), Ipv6Addr::from(self.hi), 0).map(IpNet::V6).collect()
            }
        }
    }
}

/// Disjoint intervals of each family, each with a value.
struct Partition<V> {
    v4: Vec<(Interval, V)>,
    v6: Vec<(Interval, V)>,
}

/// The IPv4 intervals, then the IPv6 ones.
fn client_sets_order<V>(p: &Partition<V>) -> impl Iterator<Item = &(Interval, V)> {
    p.v4.iter().chain(&p.v6)
}

/// Cuts the address space at every boundary of `items`' networks; for each piece covered by at
/// least one, `value` of the items covering it (all of them: networks nest or are disjoint, so
/// an item that meets a piece covers it). Adjacent pieces with equal values are joined.
fn partition<T: Copy, V: PartialEq>(
    items: &[(IpNet, T, usize)],
    value: impl Fn(&[(IpNet, T, usize)]) -> Option<V>,
) -> Partition<V> {
    let mut out = Partition { v4: Vec::new(), v6: Vec::new() };
    for family in [Family::V4, Family::V6] {
        let mut mine: Vec<(u128, u128, usize)> = Vec::new();
        for (i, (net, _, _)) in items.iter().enumerate() {
            let (lo, hi) = match (family, net) {
                (Family::V4, IpNet::V4(n)) => {
                    (u128::from(u32::from(n.network())), u128::from(u32::from(n.broadcast())))
                }
                (Family::V6, IpNet::V6(n)) => (u128::from(n.network()), u128::from(n.broadcast())),
                _ => continue,
            };
            mine.push((lo, hi, i));
        }
        mine.sort_unstable();
        let mut points: Vec<u128> = Vec::with_capacity(mine.len() * 2);
        for &(lo, hi, _) in &mine {
            points.push(lo);
            if let Some(next) = hi.checked_add(1) {
                points.push(next);
            }
        }
        points.sort_unstable();
        points.dedup();
        let max = match family {
            Family::V4 => u128::from(u32::MAX),
            Family::V6 => u128::MAX,
        };
        let target = match family {
            Family::V4 => &mut out.v4,
            Family::V6 => &mut out.v6,
        };
        let mut active: Vec<(u128, u128, usize)> = Vec::new();
        let mut next = 0;
        for (k, &start) in points.iter().enumerate() {
            let end = points.get(k + 1).map_or(max, |p| p - 1);
            active.retain(|&(_, hi, _)| hi >= start);
            while next < mine.len() && mine[next].0 == start {
                active.push(mine[next]);
                next += 1;
            }
            if active.is_empty() {
                continue;
            }
            let covering: Vec<(IpNet, T, usize)> = active.iter().map(|&(_, _, i)| items[i]).collect();
            let Some(v) = value(&covering) else { continue };
            match target.last_mut() {
                Some((last, lv)) if *lv == v && last.hi.checked_add(1) == Some(start) => last.hi = end,
                _ => target.push((Interval { family, lo: start, hi: end }, v)),
            }
        }
    }
    out
}

/// What a UDP flow to one interval gets, port by port: the first step whose ports fit.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Program {
    steps: Vec<Step>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Step {
    ports: Option<Ports>,
    verdict: Verdict,
    /// The rules that gave this step.
    rules: Vec<RuleId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Accept,
    Reject,
    /// A deny in report mode.
    LogAccept,
}

impl Verdict {
    fn nft(self) -> &'static str {
        match self {
            Verdict::Accept => "accept",
            Verdict::Reject => "reject",
            Verdict::LogAccept => "log prefix \"hostgate would_deny: \" accept",
        }
    }
}

impl Program {
    /// `file:line` of the rules, for a comment (the first few).
    fn origins(&self, policy: &Policy) -> String {
        let mut all: Vec<String> = Vec::new();
        for s in &self.steps {
            for r in &s.rules {
                let o = policy.rule(*r).origin.to_string();
                if !all.contains(&o) {
                    all.push(o);
                }
            }
        }
        let shown = all.len().min(6);
        let mut text = all[..shown].join(", ");
        if all.len() > shown {
            let _ = write!(text, " and {} more", all.len() - shown);
        }
        one_line(&text)
    }
}

/// The UDP rules of `group`, cut into disjoint destination intervals, each with its program.
fn udp_programs(policy: &Policy, group: GroupId) -> Partition<Program> {
    let mut items: Vec<(IpNet, RuleId, usize)> = Vec::new();
    for (i, r) in policy.rules().iter().enumerate() {
        let rid = RuleId(i as u32);
        if r.transport == Transport::Udp && policy.applies(rid, group) {
            if let Some(net) = r.net {
                items.push((net, rid, i));
            }
        }
    }
    partition(&items, |covering| Some(program(policy, group, covering)))
}

/// The program of an interval covered by `covering` (UDP rules of `group`): longest prefix
/// first, the strictest first among equals, cut after a rule without ports (it takes every port).
fn program(policy: &Policy, group: GroupId, covering: &[(IpNet, RuleId, usize)]) -> Program {
    let mut rules: Vec<(u8, Action, usize, RuleId)> =
        covering.iter().map(|(net, id, order)| (net.prefix_len(), policy.rule(*id).action, *order, *id)).collect();
    rules.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
    let mut steps: Vec<Step> = Vec::new();
    for (_, action, _, id) in rules {
        let r = policy.rule(id);
        let verdict = match action {
            Action::Deny if policy.reported(id, group) => Verdict::LogAccept,
            Action::Deny => Verdict::Reject,
            Action::Allow | Action::Bypass => Verdict::Accept,
        };
        let ports = r.ports.clone();
        let every_port = ports.is_none();
        // The same verdict as the step before: one step for the union of their ports (first
        // match over two neighbours with one verdict is the union).
        match steps.last_mut() {
            Some(last) if last.verdict == verdict => {
                last.ports = match (last.ports.take(), ports) {
                    (Some(a), Some(b)) => Some(a.union(&b)),
                    _ => None,
                };
                last.rules.push(id);
            }
            _ => steps.push(Step { ports, verdict, rules: vec![id] }),
        }
        if every_port {
            break;
        }
    }
    Program { steps }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    /// hostgate's answer for a UDP flow: the longest prefix among the rules that fit, the
    /// strictest among equals; `None` when no rule fits.
    fn reference(policy: &Policy, addr: IpAddr, port: u16) -> Option<Verdict> {
        let fitting = policy
            .rules()
            .iter()
            .filter(|r| r.transport == Transport::Udp && r.net.is_some_and(|n| n.contains(&addr)) && r.fits_port(port));
        let best = fitting.max_by_key(|r| (r.net.map(|n| n.prefix_len()), r.action))?;
        Some(if best.action == Action::Deny { Verdict::Reject } else { Verdict::Accept })
    }

    /// What the generated chain does: the one interval that holds `addr`, then its first step
    /// whose ports fit.
    fn simulated(programs: &Partition<Program>, addr: IpAddr) -> impl Fn(u16) -> Option<Verdict> + '_ {
        let (family, key) = match addr {
            IpAddr::V4(a) => (&programs.v4, u128::from(u32::from(a))),
            IpAddr::V6(a) => (&programs.v6, u128::from(a)),
        };
        let holding: Vec<&Program> =
            family.iter().filter(|(i, _)| i.lo <= key && key <= i.hi).map(|(_, p)| p).collect();
        assert!(holding.len() <= 1, "intervals overlap at {addr}");
        move |port| {
            let p = holding.first()?;
            p.steps.iter().find(|s| s.ports.as_ref().is_none_or(|ps| ps.contains(port))).map(|s| s.verdict)
        }
    }

    #[test]
    fn the_generated_chain_agrees_with_longest_prefix_then_strictest() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for round in 0..40 {
            let mut text = String::new();
            for _ in 0..(3 + next(25)) {
                let action = ["allow", "bypass", "deny"][next(3) as usize];
                // Networks inside 10.0.0.0/12 and 2001:db8::/40 so that they nest and collide.
                let target = if next(4) == 0 {
                    let len = 40 + next(25) as u8;
                    let a = Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(next(1 << 20)) << 72);
                    format!("[{}]/{len}", IpNet::new(IpAddr::V6(a), len).unwrap().trunc().addr())
                } else {
                    let len = 12 + next(17) as u8;
                    let a = Ipv4Addr::from(0x0a00_0000 | (next(1 << 20) as u32) << 4);
                    format!("{}/{len}", IpNet::new(IpAddr::V4(a), len).unwrap().trunc().addr())
                };
                let ports = match next(4) {
                    0 => String::new(),
                    1 => format!(":{}", 440 + next(8)),
                    2 => format!(":{}-{}", 440 + next(4), 444 + next(4)),
                    _ => format!(":{},{}", 440 + next(8), 440 + next(8)),
                };
                let _ = writeln!(text, "{action} udp://{target}{ports}");
            }
            let rules = crate::policy::parse_rules("t.rules", &text, None, &Default::default()).unwrap();
            let policy = Policy::compile(rules, Action::Deny, &[std::sync::Arc::from("t.rules")]).unwrap();
            let programs = udp_programs(&policy, GroupId::NONE);
            // Probe every boundary of every network, and next to it, on every port in play.
            let mut probes: Vec<IpAddr> = Vec::new();
            for r in policy.rules() {
                let n = r.net.unwrap();
                match n {
                    IpNet::V4(n) => {
                        let (lo, hi) = (u32::from(n.network()), u32::from(n.broadcast()));
                        for a in [lo.wrapping_sub(1), lo, lo + 1, hi - 1, hi, hi.wrapping_add(1)] {
                            probes.push(IpAddr::V4(Ipv4Addr::from(a)));
                        }
                    }
                    IpNet::V6(n) => {
                        let (lo, hi) = (u128::from(n.network()), u128::from(n.broadcast()));
                        for a in [lo.wrapping_sub(1), lo, lo + 1, hi - 1, hi, hi.wrapping_add(1)] {
                            probes.push(IpAddr::V6(Ipv6Addr::from(a)));
                        }
                    }
                }
            }
            for addr in probes {
                let sim = simulated(&programs, addr);
                for port in 438..450 {
                    assert_eq!(sim(port), reference(&policy, addr, port), "round {round}: {addr}:{port}\n{text}");
                }
            }
        }
    }

    #[test]
    fn partition_cuts_nested_networks_into_disjoint_pieces() {
        let items = [(net("10.0.0.0/8"), 'a', 0), (net("10.1.0.0/16"), 'b', 1), (net("10.1.2.0/24"), 'c', 2)];
        // The value is the innermost item.
        let p = partition(&items, |c| c.iter().max_by_key(|x| x.0.prefix_len()).map(|x| x.1));
        let shown: Vec<(String, char)> =
            p.v4.iter()
                .map(|(i, v)| (i.cidrs().iter().map(ToString::to_string).collect::<Vec<_>>().join(" "), *v))
                .collect();
        assert_eq!(shown[0], ("10.0.0.0/16".into(), 'a'));
        assert_eq!(shown[1], ("10.1.0.0/23".into(), 'b'));
        assert_eq!(shown[2], ("10.1.2.0/24".into(), 'c'));
        assert_eq!(
            shown[3],
            ("10.1.3.0/24 10.1.4.0/22 10.1.8.0/21 10.1.16.0/20 10.1.32.0/19 10.1.64.0/18 10.1.128.0/17".into(), 'b')
        );
        assert_eq!(shown[4].1, 'a');
        assert_eq!(shown.len(), 5);
        assert!(p.v6.is_empty());
        // Equal neighbours join; the whole space and its top address work.
        let items = [(net("0.0.0.0/0"), 'x', 0), (net("255.255.255.255/32"), 'x', 1), (net("::/0"), 'y', 2)];
        let p = partition(&items, |c| c.first().map(|x| x.1));
        assert_eq!(p.v4.len(), 1);
        assert_eq!(p.v4[0].0.cidrs(), vec![net("0.0.0.0/0")]);
        assert_eq!(p.v6[0].0.cidrs(), vec![net("::/0")]);
    }
}
