//! One rule: an action, a pattern, and the optional scheme / port / path constraints; and the
//! parser of a rule file's text, line by line.
//!
//! This module owns the rule syntax. It does not read files (see [`super::Policy::load`]) and does not
//! decide anything (see [`super::Policy`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;

use hostgate_matcher::Pattern;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::ports::Ports;
use crate::normalize::{normalize, Slashes};

/// What the gateway does with a connection or request.
///
/// `Ord` is strictness: `Bypass < Allow < Deny`; a tie between equally specific rules resolves to
/// the strictest action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Action {
    /// Forward as an opaque tunnel: never inspected, never asked for proxy authentication.
    Bypass,
    /// Forward; TLS is inspected when inspection is enabled.
    Allow,
    /// Refuse.
    Deny,
}

impl Action {
    /// The lowercase name, as written in rule files.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Bypass => "bypass",
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for Action {
    type Error = String;
    fn try_from(s: String) -> Result<Action, String> {
        s.parse().map_err(|()| format!("unknown action `{s}` (allow, bypass or deny)"))
    }
}

impl FromStr for Action {
    type Err = ();
    fn from_str(s: &str) -> Result<Action, ()> {
        match s {
            "bypass" => Ok(Action::Bypass),
            "allow" => Ok(Action::Allow),
            "deny" => Ok(Action::Deny),
            _ => Err(()),
        }
    }
}

/// How the client speaks to the named host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Plain HTTP (`http://` in a rule).
    Http,
    /// TLS (`https://` in a rule), whatever runs inside it.
    Https,
}

impl Scheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a rule is for: the proxy's TCP connections, or UDP flows (`udp://` rules), which the
/// proxy never carries and never decides with; `hostgate firewall` turns them into firewall rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Connections the proxy decides (every rule but a `udp://` one).
    #[default]
    Tcp,
    /// `udp://ADDRESS[/PREFIX][:PORTS]`: for the firewall only.
    Udp,
}

/// Where a rule was written.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The rule file, as named in the configuration.
    pub file: Arc<str>,
    /// The 1-based line number.
    pub line: u32,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// Identifies a rule of a [`Policy`](super::Policy): its index in the policy's rule list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleId(pub u32);

/// A parsed rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// What to do.
    pub action: Action,
    /// TCP (decided by the proxy) or UDP (a `udp://` rule, for the firewall only).
    pub transport: Transport,
    /// Only for this scheme, when set.
    pub scheme: Option<Scheme>,
    /// Only for these destination ports, when set.
    pub ports: Option<Ports>,
    /// Only for requests whose path (and query, when this has one) starts with this, when set.
    pub path: Option<String>,
    /// The pattern after placeholder substitution, as the matcher normalised it. `None` for an
    /// address rule, and when an unresolved placeholder stands for the whole name (the rule is
    /// then inactive).
    pub pattern: Option<Pattern>,
    /// The destination network of an address rule (`bypass 52.112.0.0/14:443`), host bits
    /// cleared; `None` for a name rule. An address rule decides only connections without a name.
    pub net: Option<IpNet>,
    /// The target as written in the file (scheme, pattern with placeholders, port, path).
    pub target: String,
    /// Placeholders that had no value in `[vars]` and were widened to a one-label `*`.
    pub unresolved: Vec<String>,
    /// Where it was written.
    pub origin: Origin,
}

impl Rule {
    /// Whether the rule can be compiled: an address rule, or a name rule with a pattern (false
    /// when a placeholder has no value and was the whole name).
    pub fn is_active(&self) -> bool {
        self.pattern.is_some() || self.net.is_some()
    }

    /// Whether the proxy decides with it: an active rule that is not a `udp://` one.
    pub fn decides_tcp(&self) -> bool {
        self.is_active() && self.transport == Transport::Tcp
    }

    /// Whether its port constraint lets `port` through (no constraint: every port).
    pub fn fits_port(&self, port: u16) -> bool {
        self.ports.as_ref().is_none_or(|p| p.contains(port))
    }
}

/// Whether a request path (with its query) fits a rule's path prefix. Without a query in the
/// rule, the prefix must end at a segment boundary: `/ekcertservice` fits `/ekcertservice`,
/// `/ekcertservice/x` and `/ekcertservice?x`, not `/ekcertservicex`. With a query, the request's
/// path and query must start with the rule's.
pub fn path_matches(rule: &str, request: &str) -> bool {
    if rule.contains('?') {
        return request.starts_with(rule);
    }
    let path = request.split_once('?').map_or(request, |(p, _)| p);
    match path.strip_prefix(rule) {
        Some(rest) => rest.is_empty() || rule.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

/// A line of a rule file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// Blank or comment.
    Empty,
    /// `default ACTION`.
    Default(Action),
    /// A rule; `None` action for a bare line.
    Rule { action: Option<Action>, target: String },
}

/// Splits a line into its meaning. Errors are messages; the caller adds file and line.
pub(crate) fn parse_line(line: &str) -> Result<Line, String> {
    let code = strip_comment(line);
    let mut words = code.split_whitespace();
    let Some(first) = words.next() else {
        return Ok(Line::Empty);
    };
    let second = words.next();
    if let Some(extra) = words.next() {
        return Err(format!("unexpected `{}` after the rule (one rule per line: `ACTION TARGET`)", extra));
    }
    match (first, second) {
        ("default", Some(a)) => match a.parse() {
            Ok(action) => Ok(Line::Default(action)),
            Err(()) => Err(format!("unknown action `{a}` after `default` (allow, bypass or deny)")),
        },
        (a, Some(target)) => match a.parse() {
            Ok(action) => Ok(Line::Rule { action: Some(action), target: target.to_string() }),
            Err(()) => Err(format!("unknown action `{a}` (allow, bypass or deny)")),
        },
        ("default", None) => Err("`default` needs an action (allow, bypass or deny)".to_string()),
        (a, None) if a.parse::<Action>().is_ok() => Err(format!("`{a}` needs a target (e.g. `{a} *.example.com`)")),
        (target, None) => Ok(Line::Rule { action: None, target: target.to_string() }),
    }
}

/// A `#` at the start of the line or after white space starts a comment.
fn strip_comment(line: &str) -> &str {
    let b = line.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'#' && (i == 0 || b[i - 1].is_ascii_whitespace()) {
            return &line[..i];
        }
    }
    line
}

/// The parts of a target, before placeholder substitution.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Target<'a> {
    /// `udp://`: an address target, for the firewall.
    pub(crate) udp: bool,
    pub(crate) scheme: Option<Scheme>,
    /// The host pattern (empty for an address target).
    pub(crate) host: &'a str,
    /// The network of an address target.
    pub(crate) net: Option<IpNet>,
    pub(crate) ports: Option<Ports>,
    pub(crate) path: Option<std::borrow::Cow<'a, str>>,
}

/// Splits `[scheme://]pattern[:ports][/path[?query]]`, or an address target
/// `[scheme://]address[/prefix][:ports]` (IPv6 in brackets when ports follow), or a UDP target
/// `udp://address[/prefix][:ports]`. Ports are one, a range or a list ([`Ports`]).
pub(crate) fn parse_target(target: &str) -> Result<Target<'_>, String> {
    let (scheme, udp, rest) = match target.split_once("://") {
        Some((s, rest)) => match s.to_ascii_lowercase().as_str() {
            "http" => (Some(Scheme::Http), false, rest),
            "https" => (Some(Scheme::Https), false, rest),
            "udp" => (None, true, rest),
            other => return Err(format!("unsupported scheme `{other}://` (http, https, or udp with an address)")),
        },
        None => (None, false, target),
    };
    if let Some(address) = parse_address(rest) {
        let (net, ports) = address?;
        return Ok(Target { udp, scheme, host: "", net: Some(net), ports, path: None });
    }
    if udp {
        return Err(format!(
            "`{target}`: a UDP rule needs an address or network (`udp://52.112.0.0/14:3478-3481`): the firewall it becomes cannot match names"
        ));
    }
    let (hostport, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    let path = match path {
        // A bare `/` is the whole site: no constraint.
        Some("/") | None => None,
        Some(p) if p.starts_with('?') => return Err(format!("a query needs a path: write `/{p}`")),
        Some(p) => {
            if let Some(c) = p.chars().find(|c| !c.is_ascii_graphic() || *c == '#') {
                return Err(format!("path `{p}` contains {c:?}"));
            }
            // `//` and the like are the whole site too, once normalised.
            Some(rule_path(p)?).filter(|n| n != "/")
        }
    };
    let (host, ports) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, Some(Ports::parse(p)?)),
        None => (hostport, None),
    };
    if host.is_empty() {
        return Err("missing host pattern".to_string());
    }
    Ok(Target { udp: false, scheme, host, net: None, ports, path })
}

/// An address target, `address[/prefix][:ports]`: `None` when `text` is not one (it is then a
/// host pattern). IPv4 is a dotted quad; IPv6 is in brackets (`[2603:1063::]/38:443`), or bare
/// when no port follows (`2603:1063::/38`). No address means "the whole address" (`/32`,
/// `/128`); host bits under the prefix are cleared. Address rules have no path.
fn parse_address(text: &str) -> Option<Result<(IpNet, Option<Ports>), String>> {
    let (addr, rest): (IpAddr, &str) = if let Some(inner) = text.strip_prefix('[') {
        let Some((inside, rest)) = inner.split_once(']') else {
            return Some(Err(format!("`{text}`: an IPv6 address opened with `[` needs its `]`")));
        };
        match inside.parse::<Ipv6Addr>() {
            Ok(a) => (IpAddr::V6(a), rest),
            Err(_) => return Some(Err(format!("`{inside}` is not an IPv6 address"))),
        }
    } else if text.bytes().filter(|&b| b == b':').count() >= 2 {
        // Bare IPv6 (a host pattern never has two colons): no port can follow.
        let (a, prefix) = text.split_once('/').map_or((text, None), |(a, p)| (a, Some(p)));
        let Ok(a) = a.parse::<Ipv6Addr>().map_err(drop).and_then(|a| match prefix {
            Some(p) if p.contains(':') => Err(()),
            _ => Ok(a),
        }) else {
            return Some(Err(format!(
                "`{text}` is neither a host pattern nor an address (write IPv6 in brackets: `[2603:1063::]/38:443`)"
            )));
        };
        return Some(network(IpAddr::V6(a), prefix).map(|n| (n, None)));
    } else {
        let end = text.find(['/', ':']).unwrap_or(text.len());
        match text[..end].parse::<std::net::Ipv4Addr>() {
            Ok(a) => (IpAddr::V4(a), &text[end..]),
            // Four dot-separated numbers that are not an address: say so, not "bad pattern".
            Err(_)
                if text[..end].split('.').count() == 4
                    && text[..end].split('.').all(|l| l.bytes().all(|b| b.is_ascii_digit()) && !l.is_empty()) =>
            {
                return Some(Err(format!("`{}` is not an IPv4 address", &text[..end])));
            }
            Err(_) => return None,
        }
    };
    let (prefix, rest) = match rest.strip_prefix('/') {
        Some(r) => {
            let end = r.find([':', '/']).unwrap_or(r.len());
            (Some(&r[..end]), &r[end..])
        }
        None => (None, rest),
    };
    let ports = match rest {
        "" => None,
        r => match r.strip_prefix(':') {
            Some(p) if !p.contains(['/', '?']) => match Ports::parse(p) {
                Ok(ports) => Some(ports),
                Err(e) => return Some(Err(format!("`{text}`: {e}"))),
            },
            _ => return Some(Err(format!("`{text}`: after an address comes `/PREFIX` and then `:PORTS` (1-65535, ranges, lists), nothing else; address rules have no path"))),
        },
    };
    Some(network(addr, prefix).map(|n| (n, ports)))
}

/// The network of `addr` with `prefix` bits (all of them when `None`), host bits cleared.
fn network(addr: IpAddr, prefix: Option<&str>) -> Result<IpNet, String> {
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match prefix {
        None => max,
        Some(p) => match p.parse::<u8>() {
            Ok(n) if n <= max && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(format!("bad prefix length `/{p}` for {addr} (0-{max})")),
        },
    };
    IpNet::new(addr, len).map(|n| canonical_net(n.trunc())).map_err(|e| format!("{addr}/{len}: {e}"))
}

/// A network as addresses are looked up: an IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`)
/// is the IPv4 network it maps (`10.0.0.0/8`), since a mapped address is looked up as IPv4.
/// (A network wider than `/96` that contains the mapped range stays IPv6.)
pub fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).map_or(net, |n| n.trunc()),
            None => net,
        },
        _ => net,
    }
}

/// A rule's path, normalised like every request target ([`crate::normalize`]) so that the two
/// are compared in one spelling: `/a//b` is `/a/b`, `%7e` is `~`. A `..` segment (or its encoded
/// spelling) is an error: a rule means the path it names, and a request never has one.
fn rule_path(p: &str) -> Result<std::borrow::Cow<'_, str>, String> {
    let path = p.split_once('?').map_or(p, |(path, _)| path);
    let dot_dot = path.split('/').any(|seg| seg.replace("%2e", ".").replace("%2E", ".") == "..");
    if dot_dot {
        return Err(format!("path `{p}` has a `..` segment; write the path it means"));
    }
    normalize(p, Slashes::Refuse).map_err(|e| format!("path `{p}`: {e}"))
}

/// The name a placeholder is looked up by: lowercase, every run of other characters as one `-`.
pub fn placeholder_key(name: &str) -> String {
    let mut key = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            key.push(c.to_ascii_lowercase());
        } else if !key.ends_with('-') {
            key.push('-');
        }
    }
    key.trim_matches('-').to_string()
}

/// Replaces each `<name>` by its value in `vars`, or by `*` when it has none (listed in the
/// second result). The third result says whether the leftmost label is that `*` alone: an
/// unresolved placeholder and nothing else (no text, no value), so that it stands for exactly
/// one label. Errors on an unclosed `<`.
pub(crate) fn substitute(host: &str, vars: &BTreeMap<String, String>) -> Result<(String, Vec<String>, bool), String> {
    let mut out = String::with_capacity(host.len());
    let mut unresolved = Vec::new();
    // Whether text or a value (anything but an unresolved placeholder) went into the first label.
    let mut first_label_written = false;
    let mut push = |out: &mut String, piece: &str| {
        first_label_written |= !out.contains('.') && !piece.is_empty() && !piece.starts_with('.');
        out.push_str(piece);
    };
    let mut rest = host;
    while let Some(open) = rest.find('<') {
        push(&mut out, &rest[..open]);
        let Some(close) = rest[open..].find('>') else {
            return Err(format!("unclosed placeholder in `{host}`"));
        };
        let key = placeholder_key(&rest[open + 1..open + close]);
        if key.is_empty() {
            return Err(format!("empty placeholder in `{host}`"));
        }
        match vars.get(&key) {
            Some(v) => push(&mut out, v),
            None => {
                out.push('*');
                if !unresolved.contains(&key) {
                    unresolved.push(key);
                }
            }
        }
        rest = &rest[open + close + 1..];
    }
    push(&mut out, rest);
    if out.contains('>') {
        return Err(format!("stray `>` in `{host}`"));
    }
    let leftmost = !first_label_written && out.split('.').next() == Some("*");
    Ok((out, unresolved, leftmost))
}

/// Builds a rule from a parsed line.
pub(crate) fn build_rule(
    action: Action,
    target: &str,
    vars: &BTreeMap<String, String>,
    origin: Origin,
) -> Result<Rule, String> {
    let t = parse_target(target)?;
    if let Some(net) = t.net {
        return Ok(Rule {
            action,
            transport: if t.udp { Transport::Udp } else { Transport::Tcp },
            scheme: t.scheme,
            ports: t.ports,
            path: None,
            pattern: None,
            net: Some(net),
            target: target.to_string(),
            unresolved: Vec::new(),
            origin,
        });
    }
    let (host, unresolved, leftmost) = substitute(t.host, vars)?;
    // An unresolved placeholder is one label (a tenant name is one label). Where it is the whole
    // leftmost label, the pattern says so: a leftmost `*` alone would be one or more labels.
    // Elsewhere its `*` is one label already (a whole inner label) or within one (`<t>-my`); and
    // under a leading dot (`.<t>.x.com`: `<t>.x.com` and everything below it) one or more labels
    // above `x.com` is what the rule means.
    let parsed = Pattern::new(&host);
    let parsed = if leftmost { parsed.and_then(Pattern::one_label) } else { parsed };
    let pattern = match parsed {
        Ok(p) => Some(p),
        // A placeholder that was the whole name (or left only `*` labels): inactive, linted.
        Err(_) if !unresolved.is_empty() && host.split('.').all(|l| l == "*") => None,
        Err(e) => return Err(format!("bad pattern `{}`: {}", t.host, e.kind())),
    };
    Ok(Rule {
        action,
        transport: Transport::Tcp,
        scheme: t.scheme,
        ports: t.ports,
        path: t.path.map(std::borrow::Cow::into_owned),
        pattern,
        net: None,
        target: target.to_string(),
        unresolved,
        origin,
    })
}

/// One bad rule line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// Where.
    pub origin: Origin,
    /// What.
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)
    }
}

/// Parses a rule file's text (`file` names it in origins): its rules into `rules`, every bad line
/// into `errors`. `default` is the source's action for bare lines until the file says
/// `default ACTION`.
pub(crate) fn parse_file(
    file: &Arc<str>,
    text: &str,
    mut default: Option<Action>,
    vars: &BTreeMap<String, String>,
    rules: &mut Vec<Rule>,
    errors: &mut Vec<RuleError>,
) {
    for (n, line) in text.lines().enumerate() {
        let origin = Origin { file: file.clone(), line: n as u32 + 1 };
        let parsed = parse_line(line).and_then(|l| match l {
            Line::Empty => Ok(None),
            Line::Default(a) => {
                default = Some(a);
                Ok(None)
            }
            Line::Rule { action, target } => {
                let action = action.or(default).ok_or_else(|| {
                    format!("`{target}` has no action: write `ACTION {target}`, add `default ACTION` above it, or set `default` for this source in the configuration")
                })?;
                build_rule(action, &target, vars, origin.clone()).map(Some)
            }
        });
        match parsed {
            Ok(Some(r)) => rules.push(r),
            Ok(None) => {}
            Err(message) => errors.push(RuleError { origin, message }),
        }
    }
}

/// Parses one rule file's text on its own (for tests and tools).
///
/// # Errors
/// Every bad line.
pub fn parse_rules(
    file: &str,
    text: &str,
    default: Option<Action>,
    vars: &BTreeMap<String, String>,
) -> Result<Vec<Rule>, Vec<RuleError>> {
    let (mut rules, mut errors) = (Vec::new(), Vec::new());
    parse_file(&Arc::from(file), text, default, vars, &mut rules, &mut errors);
    if errors.is_empty() {
        Ok(rules)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn origin() -> Origin {
        Origin { file: Arc::from("t.rules"), line: 1 }
    }

    #[test]
    fn lines() {
        assert_eq!(parse_line("  # just a comment").unwrap(), Line::Empty);
        assert_eq!(parse_line("").unwrap(), Line::Empty);
        assert_eq!(parse_line("default bypass # x").unwrap(), Line::Default(Action::Bypass));
        assert_eq!(
            parse_line("allow https://*.blob.core.windows.net  # inspected").unwrap(),
            Line::Rule { action: Some(Action::Allow), target: "https://*.blob.core.windows.net".into() }
        );
        assert_eq!(parse_line("*.lync.com").unwrap(), Line::Rule { action: None, target: "*.lync.com".into() });
        assert_eq!(parse_line("permit x.com").unwrap_err(), "unknown action `permit` (allow, bypass or deny)");
        assert_eq!(
            parse_line("default maybe").unwrap_err(),
            "unknown action `maybe` after `default` (allow, bypass or deny)"
        );
        assert_eq!(parse_line("default").unwrap_err(), "`default` needs an action (allow, bypass or deny)");
        assert_eq!(parse_line("deny").unwrap_err(), "`deny` needs a target (e.g. `deny *.example.com`)");
        assert!(parse_line("allow a.com b.com").unwrap_err().contains("unexpected `b.com`"));
    }

    #[test]
    fn targets() {
        let t = parse_target("https://*.<RegionName>.logic.azure.com:443").unwrap();
        assert_eq!(
            t,
            Target {
                udp: false,
                scheme: Some(Scheme::Https),
                host: "*.<RegionName>.logic.azure.com",
                net: None,
                ports: Some(Ports::one(443)),
                path: None
            }
        );
        let t = parse_target("http://*.msftncsi.com/ncsi.txt").unwrap();
        assert_eq!((t.scheme, t.host, t.path.as_deref()), (Some(Scheme::Http), "*.msftncsi.com", Some("/ncsi.txt")));
        let t = parse_target("token.cp.microsoft.com/").unwrap();
        assert_eq!((t.host, t.path.as_deref()), ("token.cp.microsoft.com", None));
        let t = parse_target("a.com/p?q=1").unwrap();
        assert_eq!(t.path.as_deref(), Some("/p?q=1"));
        assert_eq!(
            parse_target("ftp://a.com").unwrap_err(),
            "unsupported scheme `ftp://` (http, https, or udp with an address)"
        );
        let list = "(1-65535, a range LO-HI, or a comma-separated list of them)";
        assert_eq!(parse_target("a.com:0").unwrap_err(), format!("bad port `0` {list}"));
        assert_eq!(parse_target("a.com:99999").unwrap_err(), format!("bad port `99999` {list}"));
        assert_eq!(parse_target("a.com:+80").unwrap_err(), format!("bad port `+80` {list}"));
        // Port lists and ranges, on names and with paths.
        let ports = |t: &str| parse_target(t).map(|t| t.ports.map(|p| p.to_string()));
        assert_eq!(ports("outlook.office.com:80,443").unwrap().as_deref(), Some("80,443"));
        assert_eq!(ports("https://a.com:8443-8450/x").unwrap().as_deref(), Some("8443-8450"));
        assert_eq!(parse_target("a.com:80,443/p").unwrap().path.as_deref(), Some("/p"));
        assert!(parse_target("a.com:443-80").unwrap_err().contains("must not exceed"));
        assert!(parse_target("a.com:80,").unwrap_err().contains("bad port `80,`"));
        // `udp://` takes an address only.
        assert!(parse_target("udp://time.windows.com:123").unwrap_err().contains("a UDP rule needs an address"));
        assert!(parse_target("UDP://a.com").unwrap_err().contains("a UDP rule needs an address"));
        assert_eq!(parse_target("https://:443").unwrap_err(), "missing host pattern");
        assert_eq!(parse_target("a.com?x").unwrap_err(), "a query needs a path: write `/?x`");
    }

    #[test]
    fn address_targets() {
        let net = |t: &str| {
            parse_target(t).map(|t| (t.scheme, t.net.map(|n| n.to_string()), t.ports.and_then(|p| p.single())))
        };
        assert_eq!(net("52.112.0.0/14:443").unwrap(), (None, Some("52.112.0.0/14".into()), Some(443)));
        assert_eq!(net("52.113.194.132").unwrap(), (None, Some("52.113.194.132/32".into()), None));
        // Host bits under the prefix are cleared.
        assert_eq!(net("10.1.2.3/8").unwrap().1.as_deref(), Some("10.0.0.0/8"));
        assert_eq!(net("[2603:1063::]/38").unwrap(), (None, Some("2603:1063::/38".into()), None));
        assert_eq!(net("[2603:1063::1]:443").unwrap(), (None, Some("2603:1063::1/128".into()), Some(443)));
        assert_eq!(net("2603:1063::/38").unwrap().1.as_deref(), Some("2603:1063::/38"));
        // A mapped IPv4 network is the IPv4 network (mapped addresses are looked up as IPv4).
        assert_eq!(net("[::ffff:10.1.0.0]/112").unwrap().1.as_deref(), Some("10.1.0.0/16"));
        assert_eq!(net("::/0").unwrap().1.as_deref(), Some("::/0"));
        assert_eq!(net("https://0.0.0.0/0").unwrap(), (Some(Scheme::Https), Some("0.0.0.0/0".into()), None));
        // Names stay names, even with digits.
        assert_eq!(net("1.example.com").unwrap().1, None);
        assert_eq!(net("10.0.0.1.nip.io").unwrap().1, None);
        assert!(net("10.0.0.0/33").unwrap_err().contains("bad prefix length `/33`"));
        assert!(net("[::1]/129").unwrap_err().contains("bad prefix length"));
        assert!(net("10.0.0.256").unwrap_err().contains("not an IPv4 address"));
        assert!(net("10.0.0.0/8/x").unwrap_err().contains("address rules have no path"));
        assert!(net("10.0.0.0:0").unwrap_err().contains("1-65535"));
        assert!(net("[::1").unwrap_err().contains("needs its `]`"));
        assert!(net("[zz::]").unwrap_err().contains("not an IPv6 address"));
        assert!(net("2603:1063::/38:443").unwrap_err().contains("brackets"));
        assert!(net("10.0.0.0/8:80,").unwrap_err().contains("bad port `80,`"));
        assert!(net("10.0.0.0/8:80-443/x").unwrap_err().contains("address rules have no path"));
        let r = build_rule(Action::Bypass, "52.112.0.0/14:443", &vars(&[]), origin()).unwrap();
        assert!(r.is_active() && r.pattern.is_none() && r.decides_tcp());
        assert_eq!(
            (r.net.map(|n| n.to_string()), r.ports.clone()),
            (Some("52.112.0.0/14".into()), Some(Ports::one(443)))
        );
        assert!(r.fits_port(443) && !r.fits_port(80));
        // UDP rules: addresses, IPv6 in brackets before ports, any port without ports.
        let udp = |t: &str| build_rule(Action::Allow, t, &vars(&[]), origin());
        let r = udp("udp://52.112.0.0/14:3478-3481").unwrap();
        assert_eq!((r.transport, r.net.map(|n| n.to_string())), (Transport::Udp, Some("52.112.0.0/14".into())));
        assert_eq!(r.ports.as_ref().map(ToString::to_string).as_deref(), Some("3478-3481"));
        assert!(r.is_active() && !r.decides_tcp(), "the proxy never decides with a UDP rule");
        let r = udp("udp://[2603:1063::]/38:443,3478-3481").unwrap();
        assert_eq!(r.net.map(|n| n.to_string()).as_deref(), Some("2603:1063::/38"));
        let r = udp("udp://192.0.2.10").unwrap();
        assert_eq!((r.net.map(|n| n.to_string()).as_deref(), r.ports), (Some("192.0.2.10/32"), None));
        assert!(udp("udp://192.0.2.10:123/x").unwrap_err().contains("address rules have no path"));
    }

    #[test]
    fn rule_paths_are_normalised_like_requests() {
        let path = |t: &str| parse_target(t).map(|t| t.path.map(std::borrow::Cow::into_owned));
        assert_eq!(path("a.com/x//y/%7e").unwrap().as_deref(), Some("/x/y/~"));
        assert_eq!(path("a.com/x/./y").unwrap().as_deref(), Some("/x/y"));
        assert_eq!(path("a.com/pki/aia?x=%41").unwrap().as_deref(), Some("/pki/aia?x=%41"));
        for dots in ["a.com/ok/../no", "a.com/ok/%2e%2e/no", "a.com/ok/.%2E/no", "a.com/.."] {
            assert!(path(dots).unwrap_err().contains("has a `..` segment"), "{dots}");
        }
        assert!(path("a.com/ok/%2fno").unwrap_err().contains("encoded slash"));
        assert!(path("a.com/%zz").unwrap_err().contains("percent-encoding"));
        // The segment boundary holds for a normalised request path too.
        assert!(path_matches("/ncsi.txt", "/ncsi.txt?x"));
        assert!(!path_matches("/ncsi.txt", "/ncsi.txtx"));
        assert!(path_matches("/pki/aia", "/pki/aia/x"));
        assert!(!path_matches("/pki/aia", "/pki/aiax"));
        assert!(path_matches("/ok/", "/ok/x") && !path_matches("/ok/", "/ok"));
    }

    #[test]
    fn placeholders() {
        assert_eq!(placeholder_key("FQDN for software update point"), "fqdn-for-software-update-point");
        assert_eq!(placeholder_key("RegionName"), "regionname");
        let v = vars(&[("tenant", "contoso")]);
        assert_eq!(
            substitute("<tenant>-my.sharepoint.com", &v).unwrap(),
            ("contoso-my.sharepoint.com".into(), vec![], false)
        );
        assert_eq!(
            substitute("*.<RegionName>.logic.azure.com", &v).unwrap(),
            ("*.*.logic.azure.com".into(), vec!["regionname".into()], false)
        );
        assert!(substitute("<tenant.x.com", &v).unwrap_err().contains("unclosed"));
        // Is the leftmost label an unresolved placeholder alone?
        let none = vars(&[]);
        let leftmost = |host: &str, v: &BTreeMap<String, String>| substitute(host, v).unwrap().2;
        assert!(leftmost("<tenant>.sharepoint.com", &none));
        assert!(leftmost("<a>.<b>.x.com", &none));
        assert!(leftmost("<a>.<tenant>.x.com", &v));
        assert!(!leftmost("<tenant>.sharepoint.com", &v), "resolved");
        assert!(!leftmost("<tenant>.sharepoint.com", &vars(&[("tenant", "*")])), "a value of `*` is the author's");
        assert!(!leftmost("<tenant>-my.sharepoint.com", &none));
        assert!(!leftmost("x<tenant>.sharepoint.com", &none));
        assert!(!leftmost("*.<region>.x.com", &none));
        assert!(!leftmost(".<tenant>.x.com", &none));
        assert!(!leftmost("<tenant><a>.x.com", &v));
        assert!(!leftmost("<a>.x.com", &vars(&[("a", ".y")])));

        // An unset placeholder that is the whole leftmost label is exactly one label.
        let r = build_rule(Action::Bypass, "<tenant>.sharepoint.com", &vars(&[]), origin()).unwrap();
        let p = r.pattern.unwrap();
        assert_eq!((p.as_str(), p.is_leftmost_one_label()), ("*.sharepoint.com", true));
        assert_eq!(r.unresolved, ["tenant"]);
        let r = build_rule(Action::Bypass, "<a>.<b>.x.com", &vars(&[]), origin()).unwrap();
        assert_eq!(r.pattern.unwrap().to_string(), "<*>.*.x.com");
        let r = build_rule(Action::Bypass, "<a>.fe<b>.x.com", &vars(&[]), origin()).unwrap();
        assert_eq!(r.pattern.unwrap().to_string(), "<*>.fe*.x.com");
        // Elsewhere the `*` is one label (or within one) already; a `*` the author wrote keeps
        // its meaning, and so does a leading dot (`<t>.x.com` and everything below it).
        for (target, text) in [
            ("*.<RegionName>.logic.azure.com", "*.*.logic.azure.com"),
            ("<tenant>-my.sharepoint.com", "*-my.sharepoint.com"),
            (".<tenant>.x.com", ".*.x.com"),
            ("*.sharepoint.com", "*.sharepoint.com"),
        ] {
            let p = build_rule(Action::Allow, target, &vars(&[]), origin()).unwrap().pattern.unwrap();
            assert_eq!((p.as_str(), p.is_leftmost_one_label()), (text, false), "{target}");
        }
        let r = build_rule(Action::Allow, "http://<FQDN for SUP>", &vars(&[]), origin()).unwrap();
        assert!(!r.is_active());
        let r = build_rule(
            Action::Allow,
            "http://<FQDN for SUP>",
            &vars(&[("fqdn-for-sup", "sup.corp.example")]),
            origin(),
        )
        .unwrap();
        assert_eq!(r.pattern.unwrap().as_str(), "sup.corp.example");
        assert_eq!(
            build_rule(Action::Allow, "mail.*", &vars(&[]), origin()).unwrap_err(),
            "bad pattern `mail.*`: the top-level (rightmost) label cannot contain `*`"
        );
    }
}
