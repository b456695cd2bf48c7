//! Turning one cleaned token from a page (`https://*.<RegionName>.logic.azure.com:443`,
//! `*.msftncsi.com/ncsi.txt`, `token.cp.microsoft.com/`) into a rule target of the policy file
//! format, `[scheme "://"] pattern [":" port] [path]`: the scheme (`http` or `https`), the host
//! pattern (lowercased, placeholders normalised to `<name>`, checked against the pattern grammar
//! of the matcher's semantics), the port and the path with its query. It says what it changed
//! (lowercasing, a dropped bare `/`) and what a reader should know (placeholders, partial-label
//! wildcards), the report's finding for each such note, and why a token is not a target (prose,
//! an IP address, a bad port). It also holds the repair of a name a page broke across a line
//! break. It does not decide actions and knows nothing of Markdown or JSON.

use std::fmt;

use super::report::FindingKind;

/// The scheme of a target: plain HTTP or TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Scheme {
    Http,
    Https,
}

/// A rule target: `[scheme "://"] pattern [":" port] [path]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Target {
    pub(crate) scheme: Option<Scheme>,
    /// The host pattern: lowercase, placeholders written `<name>`.
    pub(crate) host: String,
    pub(crate) port: Option<u16>,
    /// Starts with `/`; may carry a `?query`. Case kept as written.
    pub(crate) path: Option<String>,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scheme {
            Some(Scheme::Http) => f.write_str("http://")?,
            Some(Scheme::Https) => f.write_str("https://")?,
            None => {}
        }
        f.write_str(&self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        if let Some(path) = &self.path {
            f.write_str(path)?;
        }
        Ok(())
    }
}

impl Target {
    /// Whether the whole host is one placeholder (`http://<FQDN for ...>`): unresolved, it would
    /// become `*` (every host), so it cannot be a rule on its own.
    pub(crate) fn is_whole_placeholder(&self) -> bool {
        self.host.starts_with('<') && self.host.ends_with('>') && self.host.matches('<').count() == 1
    }

    /// The labels at the right of the host that are literal (no `*`, no placeholder):
    /// `logic.azure.com` for `*.<regionname>.logic.azure.com`, `onenote.net` for `*cdn.onenote.net`.
    pub(crate) fn literal_suffix(&self) -> String {
        let host = self.host.trim_start_matches('.');
        let labels: Vec<&str> = host.split('.').collect();
        let literal: Vec<&str> =
            labels.iter().rev().take_while(|l| !l.contains('*') && !l.contains('<')).copied().collect();
        literal.into_iter().rev().collect::<Vec<_>>().join(".")
    }

    /// Whether the host has a wildcard (or a placeholder, which may become one).
    pub(crate) fn is_wildcard(&self) -> bool {
        self.host.starts_with('.') || self.host.contains('*') || self.host.contains('<')
    }
}

/// Something worth telling about a parsed token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Note {
    /// The host had upper-case letters; this was the host as written.
    Lowercased(String),
    /// A bare trailing `/` was dropped: it means no path constraint.
    TrailingSlash,
    /// A placeholder, as written and as normalised (`<name>`).
    Placeholder { written: String, name: String },
    /// The whole host is a placeholder.
    WholeHostPlaceholder,
    /// A label mixing `*` and literal characters (`*cdn`, `*-umwatsonc`).
    PartialWildcard(String),
    /// A `#fragment` was dropped (never sent to a server).
    FragmentDropped(String),
}

impl Note {
    /// The report's finding for this note about `target`, parsed from `written`: its kind and
    /// message (`None` for a placeholder of a whole-host placeholder, which
    /// [`Note::WholeHostPlaceholder`] reports). Every importer reports notes through this.
    pub(crate) fn finding(&self, written: &str, target: &Target) -> Option<(FindingKind, String)> {
        Some(match self {
            Self::Lowercased(host) => (
                FindingKind::MixedCase,
                format!("`{host}` has upper-case letters: lowercased to `{}`", target.host),
            ),
            Self::TrailingSlash => (
                FindingKind::TrailingSlash,
                format!("`{written}` ends in a bare `/`, which means no path constraint: dropped (`{target}`)"),
            ),
            Self::Placeholder { .. } if target.is_whole_placeholder() => return None,
            Self::Placeholder { written: w, name } => (
                FindingKind::Placeholder,
                format!(
                    "`{w}` in `{target}` is a placeholder, written `<{name}>`: define `{name}` in [vars] (left unresolved it becomes `*`, one label)"
                ),
            ),
            Self::WholeHostPlaceholder => (
                FindingKind::PlaceholderHost,
                format!(
                    "`{target}`: the whole host is a placeholder (your own server): the rule is inactive until [vars] defines `{}`",
                    target.host.trim_matches(['<', '>'])
                ),
            ),
            Self::PartialWildcard(label) => (
                FindingKind::PartialWildcard,
                format!(
                    "`{target}` has the partial-label wildcard `{label}`: kept as written; it matches within that one label only"
                ),
            ),
            Self::FragmentDropped(fragment) => (
                FindingKind::Invalid,
                format!("`{written}`: the fragment `{fragment}` is never sent to a server: dropped"),
            ),
        })
    }
}

/// Why a token is not a rule target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Reject {
    Empty,
    /// White space outside a placeholder: prose, not a name.
    Prose,
    /// A scheme other than `http` or `https`.
    Scheme(String),
    /// A port that is not a number in 1..=65535.
    Port(String),
    /// An IP address or range: the gateway decides by host name.
    IpAddress(String),
    /// Not a host pattern; the reason.
    Host(String),
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("empty"),
            Self::Prose => f.write_str("contains white space (prose, not a name)"),
            Self::Scheme(s) => write!(f, "scheme `{s}` is neither http nor https"),
            Self::Port(p) => write!(f, "port `{p}` is not a number in 1-65535"),
            Self::IpAddress(a) => write!(f, "`{a}` is an IP address"),
            Self::Host(why) => f.write_str(why),
        }
    }
}

/// A parsed target and what to tell about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub(crate) target: Target,
    pub(crate) notes: Vec<Note>,
}

/// The normalised name of a placeholder as written between `<` and `>`: lowercase, every run of
/// characters other than ASCII letters and digits turned into one `-`, none at either end.
/// `FQDN for software update point on child site` → `fqdn-for-software-update-point-on-child-site`.
pub(crate) fn placeholder_name(written: &str) -> String {
    let mut out = String::new();
    let mut dash = false;
    for c in written.chars() {
        if c.is_ascii_alphanumeric() {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.push(c.to_ascii_lowercase());
        } else {
            dash = true;
        }
    }
    out
}

/// Splits `s` at the first character satisfying `at` outside `<...>`.
fn split_outside_placeholders(s: &str, at: impl Fn(char) -> bool) -> (&str, &str) {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => depth = depth.saturating_sub(1),
            c if depth == 0 && at(c) => return (&s[..i], &s[i..]),
            _ => {}
        }
    }
    (s, "")
}

/// Whether `s` has white space outside `<...>`.
fn has_space_outside_placeholders(s: &str) -> bool {
    let mut depth = 0usize;
    s.chars().any(|c| {
        match c {
            '<' => depth += 1,
            '>' => depth = depth.saturating_sub(1),
            _ => {}
        }
        depth == 0 && c.is_whitespace()
    })
}

/// Parses one token into a target: scheme, then path, then host and port, then the host's
/// placeholders and case, then the pattern grammar.
pub(crate) fn parse(token: &str) -> Result<Parsed, Reject> {
    let token = token.trim();
    if token.is_empty() {
        return Err(Reject::Empty);
    }
    if has_space_outside_placeholders(token) {
        return Err(Reject::Prose);
    }
    let mut notes = Vec::new();
    let (scheme, rest) = split_scheme(token)?;
    let (authority, path) = split_path(rest, &mut notes);
    let (host_written, port) = host_and_port(authority)?;
    let (host, check) = normalise_host(host_written, &mut notes)?;
    let target = Target { scheme, host, port, path };
    if target.is_whole_placeholder() {
        notes.push(Note::WholeHostPlaceholder);
        return Ok(Parsed { target, notes });
    }
    check_pattern(&check)?;
    let globs: Vec<&str> = check.trim_start_matches('.').split('.').filter(|l| l.contains('*') && *l != "*").collect();
    if let Some(first) = globs.first() {
        // Report the label as written in the target (placeholders shown as in the rule).
        let label =
            target.host.trim_start_matches('.').split('.').find(|l| l.contains('*') && *l != "*").unwrap_or(first);
        notes.push(Note::PartialWildcard(label.to_owned()));
    }
    Ok(Parsed { target, notes })
}

/// `http://` or `https://` (any case) and the rest; another scheme is refused, no scheme is
/// `None`.
fn split_scheme(token: &str) -> Result<(Option<Scheme>, &str), Reject> {
    match token.find("://") {
        Some(i) if token[..i].chars().all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c)) => {
            let scheme = match token[..i].to_ascii_lowercase().as_str() {
                "http" => Scheme::Http,
                "https" => Scheme::Https,
                other => return Err(Reject::Scheme(other.to_owned())),
            };
            Ok((Some(scheme), &token[i + 3..]))
        }
        _ => Ok((None, token)),
    }
}

/// The authority and the path (with its query) after it, outside placeholders: a fragment is
/// dropped and a bare `/` means no path (both noted); a query alone gets a `/` before it.
fn split_path<'a>(rest: &'a str, notes: &mut Vec<Note>) -> (&'a str, Option<String>) {
    let (authority, path) = split_outside_placeholders(rest, |c| matches!(c, '/' | '?' | '#'));
    let mut path = path.to_owned();
    if let Some(hash) = path.find('#') {
        notes.push(Note::FragmentDropped(path[hash..].to_owned()));
        path.truncate(hash);
    }
    if path.starts_with('?') {
        path.insert(0, '/');
    }
    let path = match path.as_str() {
        "" => None,
        "/" => {
            notes.push(Note::TrailingSlash);
            None
        }
        _ => Some(path),
    };
    (authority, path)
}

/// The host as written (one trailing dot dropped) and the port of an authority; user
/// information, IP addresses and bad ports are refused.
fn host_and_port(authority: &str) -> Result<(&str, Option<u16>), Reject> {
    if authority.contains('@') {
        return Err(Reject::Host(format!("`{authority}` carries user information")));
    }
    if authority.starts_with('[') {
        return Err(Reject::IpAddress(authority.to_owned()));
    }
    let (host_written, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains('>') => {
            let p = &authority[i + 1..];
            let port = p
                .parse::<u16>()
                .ok()
                .filter(|&n| n != 0 && p.chars().all(|c| c.is_ascii_digit()))
                .ok_or_else(|| Reject::Port(p.to_owned()))?;
            (&authority[..i], Some(port))
        }
        _ => (authority, None),
    };
    let host_written = host_written.strip_suffix('.').unwrap_or(host_written);
    if host_written.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(Reject::IpAddress(host_written.to_owned()));
    }
    Ok((host_written, port))
}

/// Normalises a written host: placeholders to `<name>` (noted), everything else to lowercase
/// (noted when it changed anything). Returns the host and the form the pattern grammar is
/// checked on (each placeholder an `x`).
fn normalise_host(host_written: &str, notes: &mut Vec<Note>) -> Result<(String, String), Reject> {
    let mut host = String::new();
    let mut check = String::new();
    let mut rest = host_written;
    let mut lowered = false;
    while !rest.is_empty() {
        match rest.find('<') {
            Some(open) => {
                let close = rest[open..]
                    .find('>')
                    .map(|c| open + c)
                    .ok_or_else(|| Reject::Host(format!("unclosed `<` in `{host_written}`")))?;
                let lit = &rest[..open];
                lowered |= lit.chars().any(|c| c.is_ascii_uppercase());
                host.push_str(&lit.to_ascii_lowercase());
                check.push_str(&lit.to_ascii_lowercase());
                let written = &rest[open + 1..close];
                let name = placeholder_name(written);
                if name.is_empty() {
                    return Err(Reject::Host(format!("empty placeholder in `{host_written}`")));
                }
                host.push('<');
                host.push_str(&name);
                host.push('>');
                check.push('x');
                notes.push(Note::Placeholder { written: format!("<{written}>"), name });
                rest = &rest[close + 1..];
            }
            None => {
                lowered |= rest.chars().any(|c| c.is_ascii_uppercase());
                host.push_str(&rest.to_ascii_lowercase());
                check.push_str(&rest.to_ascii_lowercase());
                rest = "";
            }
        }
    }
    if lowered {
        notes.push(Note::Lowercased(host_written.to_owned()));
    }
    Ok((host, check))
}

/// Checks a lowercase host pattern (placeholders replaced by a letter) against the pattern
/// grammar: at least two labels, none empty or over 63 bytes, name at most 253 bytes, only
/// `[a-z0-9-_*]`, no `**`, no `*` in the rightmost label, which must hold a letter, and no label
/// starting or ending with `-` (a name broken at a hyphen).
fn check_pattern(host: &str) -> Result<(), Reject> {
    let body = host.strip_prefix('.').unwrap_or(host);
    let labels: Vec<&str> = body.split('.').collect();
    if labels.len() < 2 {
        return Err(Reject::Host(format!("`{host}` has no dot: not a host name")));
    }
    if body.len() > 253 {
        return Err(Reject::Host(format!("`{host}` is longer than 253 bytes")));
    }
    for label in &labels {
        if label.is_empty() {
            return Err(Reject::Host(format!("`{host}` has an empty label")));
        }
        if label.len() > 63 {
            return Err(Reject::Host(format!("a label of `{host}` is longer than 63 bytes")));
        }
        if let Some(bad) = label.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "-_*".contains(*c)))
        {
            return Err(Reject::Host(format!("`{host}` contains `{bad}`")));
        }
        if label.contains("**") {
            return Err(Reject::Host(format!("`{host}` contains `**`")));
        }
        if !label.contains('*') && (label.starts_with('-') || label.ends_with('-')) {
            return Err(Reject::Host(format!("label `{label}` of `{host}` starts or ends with `-`")));
        }
    }
    let last = labels.last().copied().unwrap_or_default();
    if last.contains('*') {
        return Err(Reject::Host(format!("`{host}` has a wildcard in its rightmost label")));
    }
    if !last.chars().any(|c| c.is_ascii_lowercase()) {
        return Err(Reject::Host(format!("`{host}` ends in a label without letters")));
    }
    Ok(())
}

/// Repairs the first label of a name rebuilt from two pieces a page broke across a line break,
/// when the break also lost a character. `joined` is the rebuilt host and `join_at` the byte
/// offset of the break in it. Candidates come from `siblings` (the other names of the same
/// cell or list) with the same parent domain: their first label, and that label with its digits
/// removed (`groupsapi2-prod` → `groupsapi-prod`). When exactly one candidate is the joined label
/// with one character inserted at the break, the repaired host is returned.
pub(crate) fn repair_split_label(joined: &str, join_at: usize, siblings: &[String]) -> Option<String> {
    let (label, parent) = joined.split_once('.')?;
    if join_at > label.len() || !label.is_char_boundary(join_at) {
        return None;
    }
    let mut found: Vec<String> = Vec::new();
    for sibling in siblings {
        let Some((s_label, s_parent)) = sibling.split_once('.') else {
            continue;
        };
        if !s_parent.eq_ignore_ascii_case(parent) {
            continue;
        }
        let s_label = s_label.to_ascii_lowercase();
        let undigited: String = s_label.chars().filter(|c| !c.is_ascii_digit()).collect();
        for candidate in [s_label, undigited] {
            if candidate == label || candidate.len() != label.len() + 1 {
                continue;
            }
            let fits = candidate.is_char_boundary(join_at)
                && candidate.is_char_boundary(join_at + 1)
                && candidate[..join_at] == label[..join_at]
                && candidate[join_at + 1..] == label[join_at..];
            if fits && !found.contains(&candidate) {
                found.push(candidate);
            }
        }
    }
    match found.as_slice() {
        [one] => Some(format!("{one}.{parent}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(token: &str) -> String {
        parse(token).unwrap().target.to_string()
    }

    #[test]
    fn scheme_port_path_and_query() {
        let p = parse("https://*.<RegionName>.logic.azure.com:443").unwrap();
        assert_eq!(p.target.scheme, Some(Scheme::Https));
        assert_eq!(p.target.host, "*.<regionname>.logic.azure.com");
        assert_eq!(p.target.port, Some(443));
        assert_eq!(p.target.to_string(), "https://*.<regionname>.logic.azure.com:443");
        assert_eq!(p.notes, vec![Note::Placeholder { written: "<RegionName>".into(), name: "regionname".into() }]);
        assert_eq!(
            target("https://go.microsoft.com/fwlink/?LinkID=619849"),
            "https://go.microsoft.com/fwlink/?LinkID=619849"
        );
        assert_eq!(target("*.msftncsi.com/ncsi.txt"), "*.msftncsi.com/ncsi.txt");
        assert_eq!(target("HTTP://a.example.com?x=1"), "http://a.example.com/?x=1");
    }

    #[test]
    fn trailing_bare_slash_means_no_path_and_is_reported() {
        let p = parse("token.cp.microsoft.com/").unwrap();
        assert_eq!(p.target.to_string(), "token.cp.microsoft.com");
        assert_eq!(p.target.path, None);
        assert_eq!(p.notes, vec![Note::TrailingSlash]);
    }

    #[test]
    fn mixed_case_is_lowercased_and_reported() {
        let p = parse("EnterpriseEnrollment.manage.microsoft.com").unwrap();
        assert_eq!(p.target.host, "enterpriseenrollment.manage.microsoft.com");
        assert_eq!(p.notes, vec![Note::Lowercased("EnterpriseEnrollment.manage.microsoft.com".into())]);
        // The path keeps its case.
        assert_eq!(target("https://omex.cdn.office.net/m/SOT_SCCM.CAB"), "https://omex.cdn.office.net/m/SOT_SCCM.CAB");
    }

    #[test]
    fn placeholders_are_normalised() {
        assert_eq!(
            placeholder_name("FQDN for software update point on child site"),
            "fqdn-for-software-update-point-on-child-site"
        );
        assert_eq!(placeholder_name(" Region--Name "), "region-name");
        let p = parse("<tenant>-my.sharepoint.com").unwrap();
        assert_eq!(p.target.host, "<tenant>-my.sharepoint.com");
        assert!(!p.target.is_whole_placeholder());
        let whole = parse("http://<FQDN for software update point on child site>").unwrap();
        assert_eq!(whole.target.to_string(), "http://<fqdn-for-software-update-point-on-child-site>");
        assert!(whole.target.is_whole_placeholder());
        assert!(whole.notes.contains(&Note::WholeHostPlaceholder));
    }

    #[test]
    fn partial_label_wildcards_are_kept_and_reported() {
        let p = parse("*cdn.onenote.net").unwrap();
        assert_eq!(p.target.host, "*cdn.onenote.net");
        assert_eq!(p.notes, vec![Note::PartialWildcard("*cdn".into())]);
        assert_eq!(parse("*.*.onedrive.live.com").unwrap().notes, vec![]);
    }

    #[test]
    fn what_is_not_a_target() {
        assert_eq!(parse("Port 443"), Err(Reject::Prose));
        assert_eq!(parse("ftp://x.example.com"), Err(Reject::Scheme("ftp".into())));
        assert_eq!(parse("x.example.com:0"), Err(Reject::Port("0".into())));
        assert_eq!(parse("x.example.com:99999"), Err(Reject::Port("99999".into())));
        assert_eq!(parse("13.107.4.50"), Err(Reject::IpAddress("13.107.4.50".into())));
        assert_eq!(parse("13.107.4.0/24"), Err(Reject::IpAddress("13.107.4.0".into())));
        assert!(matches!(parse("mail.*"), Err(Reject::Host(_))));
        assert!(matches!(parse("a..b.com"), Err(Reject::Host(_))));
        assert!(matches!(parse("**.b.com"), Err(Reject::Host(_))));
        assert!(matches!(parse("groupsapi-"), Err(Reject::Host(_))));
        assert!(matches!(parse("scsquery-ss-.x.net"), Err(Reject::Host(_))));
        assert!(matches!(parse("Windows"), Err(Reject::Host(_))));
        assert!(matches!(parse("1.1.19900.2"), Err(Reject::Host(_))));
    }

    #[test]
    fn literal_suffix_and_wildcards() {
        let t = parse("*.<regionname>.logic.azure.com").unwrap().target;
        assert_eq!(t.literal_suffix(), "logic.azure.com");
        assert!(t.is_wildcard());
        let t = parse("ekop.intel.com").unwrap().target;
        assert_eq!(t.literal_suffix(), "ekop.intel.com");
        assert!(!t.is_wildcard());
    }

    #[test]
    fn split_label_is_repaired_from_siblings() {
        let siblings: Vec<String> =
            ["groupsapi2-prod.outlookgroups.ms", "groupsapi3-prod.outlookgroups.ms", "msdn.microsoft.com"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        // `groupsapi-` + `rod.outlookgroups.ms`: the break lost the `p`.
        assert_eq!(
            repair_split_label("groupsapi-rod.outlookgroups.ms", 10, &siblings),
            Some("groupsapi-prod.outlookgroups.ms".to_owned())
        );
        // A join consistent with its siblings is left alone.
        let siblings: Vec<String> = ["scsquery-ss-eu.trafficmanager.net", "scsquery-ss-asia.trafficmanager.net"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(repair_split_label("scsquery-ss-us.trafficmanager.net", 12, &siblings), None);
    }
}
