//! The PAC file (proxy auto-config, `FindProxyForURL(url, host)`): generated from the compiled
//! policy and `[pac]`, served at `/proxy.pac` and `/wpad.dat`, printed by `hostgate pac`.
//!
//! This module owns the generated JavaScript and the HTTP answer for those two paths (content
//! type, `ETag`, `If-None-Match`, `?group=NAME`). It does not decide anything itself and does
//! not know where it is served from: the connect listener and the admin listener route the two
//! paths here, and a [`Pac`] is built once per generation (so a reload rebuilds it).
//!
//! # What the file says
//! Everything goes to the proxy (`[pac] proxy`, or the first connect listener), except:
//! - plain host names (no dot), and IP literals inside `[pac] direct_networks`: `DIRECT`;
//! - names, and IPv4 literals, whose hostgate decision for the URL's scheme and port is one of
//!   `[pac] direct` (`direct = ["bypass"]`): `DIRECT`.
//!
//! The decision is hostgate's own, replayed in JavaScript from a table of the group's rules:
//! the same label-wise wildcard semantics as the matcher (a leftmost whole-label `*` is one or
//! more labels, a one-label placeholder `<*>` exactly one, any other whole-label `*` one, a `*`
//! inside a label globs within it, `.d` is `d` and `*.d`), the same specificity (exact beats
//! wildcard, then more literal bytes), ties to the strictest action (the first such rule in
//! rule order, whose report mode applies), scheme and port constraints, and the group's default.
//! Never `shExpMatch`, whose `*` also crosses dots. The URL's scheme and port are those the proxy
//! would decide with: `http://` is a request (http, port 80 by default); `https://` and `wss://`
//! are a CONNECT (http on port 80, https on any other) carrying TLS (https); `ws://` is a
//! CONNECT carrying plain HTTP; every decision the proxy would make for the URL must be in
//! `direct`. Other schemes go to the proxy.
//!
//! **Paths.** A PAC cannot see an `https://` URL's path. A name at whose deciding level (the
//! most specific rules that fit) any rule has a path goes to the proxy whatever the actions:
//! only there can the path rule be enforced. Below that level, path rules never matter.
//!
//! **DNS.** The file never calls `dnsResolve` or `isInNet` on a name: resolving every host in
//! the browser costs a lookup per URL, fails where clients resolve through the proxy, and the
//! address a client's resolver returns is not what hostgate decides a name by. `isInNet` is
//! called on IPv4 literals only (it does not resolve them); IPv6 literals are compared by the
//! file's own code.

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use http::{Method, Response, StatusCode, Uri};
use http_body_util::Full;
use ipnet::IpNet;

use crate::config::PacConfig;
use crate::policy::{Action, GroupId, Policy, Rule, Scheme, Transport};

/// The PAC file's media type.
pub const CONTENT_TYPE_PAC: &str = "application/x-ns-proxy-autoconfig";

/// The PAC files of one generation: one per client group (index: the [`GroupId`]; 0 is the
/// clients in no group).
#[derive(Debug)]
pub struct Pac {
    files: Vec<PacFile>,
    names: Vec<Option<Arc<str>>>,
}

/// One PAC file and what `hostgate check` says about it.
#[derive(Debug)]
pub struct PacFile {
    text: Bytes,
    etag: HeaderValue,
    /// Name rules (in the table) whose decision goes `DIRECT`: their action is one of
    /// `[pac] direct` and they have no path.
    pub direct_rules: usize,
    /// IPv4 address rules whose decision goes `DIRECT`.
    pub direct_address_rules: usize,
    /// Rules with a path whose action is one of `[pac] direct`: the names they decide stay on
    /// the proxy.
    pub path_rules: usize,
    /// Whether the group's default action is one of `[pac] direct` (every name no rule fits
    /// goes `DIRECT`).
    pub default_direct: bool,
}

impl PacFile {
    /// The JavaScript.
    pub fn text(&self) -> &str {
        // Built from a `String`.
        std::str::from_utf8(&self.text).unwrap_or_default()
    }

    /// The entity tag (quoted): a hash of the text.
    pub fn etag(&self) -> &str {
        self.etag.to_str().unwrap_or_default()
    }
}

impl Pac {
    /// The PAC files of every client group of `policy`, as `config` says.
    pub fn build(config: &PacConfig, policy: &Policy) -> Pac {
        let files = (0..policy.groups().len()).map(|g| build_file(config, policy, GroupId(g as u8))).collect();
        Pac { files, names: policy.groups().iter().map(|g| g.name.clone()).collect() }
    }

    /// The file for the clients in no group.
    pub fn ungrouped(&self) -> &PacFile {
        &self.files[0]
    }

    /// The file of the group named `name`.
    pub fn group(&self, name: &str) -> Option<&PacFile> {
        self.names.iter().position(|n| n.as_deref() == Some(name)).map(|i| &self.files[i])
    }

    /// The file of group `id` (the clients in no group when `id` is not one of this policy's).
    pub fn by_id(&self, id: GroupId) -> &PacFile {
        self.files.get(usize::from(id.0)).unwrap_or(&self.files[0])
    }
}

/// Whether `path` is one of the PAC file's URLs.
pub(crate) fn is_pac_path(path: &str) -> bool {
    path == "/proxy.pac" || path == "/wpad.dat"
}

/// The answer to `method uri` (a PAC path) with `headers`: the file of `?group=NAME`, or of
/// `group` without one; `304` when `If-None-Match` names its `ETag`; `404` without a PAC file
/// or for an unknown group; `405` for methods other than `GET` and `HEAD` (`HEAD`'s body is
/// built, so that `content-length` is `GET`'s; hyper does not send it).
pub(crate) fn respond(
    pac: Option<&Pac>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    group: GroupId,
) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let Some(pac) = pac else {
        return plain(StatusCode::NOT_FOUND, "no PAC file: no [pac] proxy and no connect listener\n");
    };
    let wanted = uri.query().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("group=")));
    let file = match wanted {
        Some(name) => match pac.group(name) {
            Some(f) => f,
            None => return plain(StatusCode::NOT_FOUND, "no such client group\n"),
        },
        None => pac.by_id(group),
    };
    let fresh = headers.get_all(IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').map(str::trim).any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == file.etag())
    });
    let (status, body) =
        if fresh { (StatusCode::NOT_MODIFIED, Bytes::new()) } else { (StatusCode::OK, file.text.clone()) };
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    if !fresh {
        h.insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_PAC));
    }
    h.insert(ETAG, file.etag.clone());
    // Clients may keep it, and ask again with `If-None-Match` each time they use it.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// An action's index in the file's tables (`0` bypass, `1` allow, `2` deny: strictness order).
fn code(action: Action) -> u8 {
    action as u8
}

/// The constraint columns of a table row: flags (`8` http only, `16` https only, plus what the
/// caller adds) and the ports (`0`: any).
fn constraints(rule: &Rule, mut flags: u8, out: &mut String) {
    match rule.scheme {
        Some(Scheme::Http) => flags |= 8,
        Some(Scheme::Https) => flags |= 16,
        None => {}
    }
    let _ = write!(out, "{flags}, ");
    match &rule.ports {
        None => out.push('0'),
        Some(ports) => {
            out.push('[');
            for (i, r) in ports.merged().iter().enumerate() {
                let _ = write!(out, "{}[{}, {}]", if i > 0 { ", " } else { "" }, r.lo, r.hi);
            }
            out.push(']');
        }
    }
}

/// Text for a `//` comment: printable ASCII only (a line break, or U+2028, would end it).
fn comment(text: &str) -> String {
    text.chars().map(|c| if c == ' ' || c.is_ascii_graphic() { c } else { '?' }).collect()
}

/// The PAC file of one group.
fn build_file(config: &PacConfig, policy: &Policy, group: GroupId) -> PacFile {
    let direct = |a: Action| config.direct.contains(&a);
    let info = policy.group(group);
    let default = policy.default_decision(group).action;
    // The action a rule's decision has for this group (a reported deny is an allow).
    let effective = |i: usize, r: &Rule| {
        let id = crate::policy::RuleId(i as u32);
        if r.action == Action::Deny && policy.reported(id, group) {
            Action::Allow
        } else {
            r.action
        }
    };
    let rules: Vec<(usize, &Rule)> = policy
        .rules()
        .iter()
        .enumerate()
        .filter(|(i, r)| {
            r.transport == Transport::Tcp && r.is_active() && policy.applies(crate::policy::RuleId(*i as u32), group)
        })
        .collect();
    let names: Vec<(usize, &Rule)> = rules.iter().copied().filter(|(_, r)| r.pattern.is_some()).collect();
    let nets: Vec<(usize, &Rule)> =
        rules.iter().copied().filter(|(_, r)| matches!(r.net, Some(IpNet::V4(_))) && r.pattern.is_none()).collect();
    // A table is only needed when one of its rules, or the default, can send something DIRECT.
    let needed = |rows: &[(usize, &Rule)]| direct(default) || rows.iter().any(|(i, r)| direct(effective(*i, r)));
    let names = if needed(&names) { names } else { Vec::new() };
    let nets = if needed(&nets) { nets } else { Vec::new() };
    let direct_rules = names.iter().filter(|(i, r)| direct(effective(*i, r)) && r.path.is_none()).count();
    let path_rules = names.iter().filter(|(i, r)| direct(effective(*i, r)) && r.path.is_some()).count();
    let direct_address_rules = nets.iter().filter(|(i, r)| direct(effective(*i, r))).count();

    let mut js = String::with_capacity(4096 + names.len() * 48);
    let who = match &info.name {
        None => "the clients in no client group".to_string(),
        Some(n) => format!("client group {}", comment(n)),
    };
    let _ = writeln!(js, "// hostgate PAC file for {who}, generated from the compiled policy: do not edit.");
    js.push_str("// `hostgate pac` prints it; the gateway serves it at /proxy.pac and /wpad.dat (?group=NAME).\n");
    js.push_str("// Everything goes to the proxy, except plain host names, IP literals in DIRECT_NETS, and names\n");
    js.push_str("// (and IPv4 literals) whose hostgate decision for the URL's scheme and port is marked in\n");
    js.push_str("// DIRECT_ACTIONS, decided here as hostgate decides (README, \"The PAC file\").\n\n");
    let mut proxy: Vec<String> = config.proxy.iter().map(|p| format!("PROXY {p}")).collect();
    if config.insecure_fallback_direct {
        proxy.push("DIRECT".to_string());
    }
    let _ = writeln!(js, "var PROXY = \"{}\";", proxy.join("; "));
    let _ = writeln!(
        js,
        "var DIRECT_ACTIONS = [{}, {}, {}]; // bypass, allow, deny: [pac] direct = {:?}",
        direct(Action::Bypass),
        direct(Action::Allow),
        direct(Action::Deny),
        config.direct.iter().map(|a| a.as_str()).collect::<Vec<_>>()
    );
    let _ = writeln!(js, "var DEFAULT = {}; // {}: when no rule fits", code(default), default);
    js.push_str("// [pac] direct_networks: IPv4 [address, mask] for isInNet; IPv6 [address, prefix length].\n");
    js.push_str("var DIRECT_NETS = [");
    let v4: Vec<String> = config
        .direct_networks
        .iter()
        .filter_map(|n| match n {
            IpNet::V4(n) => Some(format!("[\"{}\", \"{}\"]", n.network(), n.netmask())),
            IpNet::V6(_) => None,
        })
        .collect();
    js.push_str(&v4.join(", "));
    js.push_str("];\nvar DIRECT_NETS6 = [");
    let v6: Vec<String> = config
        .direct_networks
        .iter()
        .filter_map(|n| match n {
            IpNet::V6(n) => Some(format!("[\"{}\", {}]", n.network(), n.prefix_len())),
            IpNet::V4(_) => None,
        })
        .collect();
    js.push_str(&v6.join(", "));
    js.push_str("];\n");
    js.push_str(
        "// Name rules of this group, in rule order: [pattern, specificity (exact: 1000 + bytes, else the\n\
         // literal bytes), action (0 bypass, 1 allow, 2 deny), flags (1 leftmost * is one label, 2 a path,\n\
         // 4 a deny only reported, 8 http only, 16 https only), ports ([[lo, hi], ...] or 0: any)].\n\
         // A `.d` rule is two rows, `d` and `*.d`. Empty when nothing could go DIRECT by a rule.\n",
    );
    js.push_str("var RULES = [\n");
    let mut file: Option<&str> = None;
    for (i, r) in &names {
        let Some(p) = &r.pattern else { continue };
        if file != Some(&*r.origin.file) {
            file = Some(&r.origin.file);
            let short = r.origin.file.rsplit('/').next().unwrap_or(&r.origin.file);
            let _ = writeln!(js, "// {}", comment(short));
        }
        let text = p.as_str();
        let forms: Vec<String> = match text.strip_prefix('.') {
            Some(body) => vec![body.to_string(), format!("*.{body}")],
            None => vec![text.to_string()],
        };
        let mut flags = 0u8;
        if p.is_leftmost_one_label() {
            flags |= 1;
        }
        if r.path.is_some() {
            flags |= 2;
        }
        if r.action == Action::Deny && effective(*i, r) != Action::Deny {
            flags |= 4;
        }
        for form in forms {
            let literal = form.bytes().filter(|&b| b != b'*').count();
            let spec = if form.contains('*') { literal } else { 1000 + literal };
            let _ = write!(js, "[\"{form}\", {spec}, {}, ", code(r.action));
            constraints(r, flags, &mut js);
            js.push_str("],\n");
        }
    }
    js.push_str("];\n// IPv4 address rules of this group (for IPv4 literals), in rule order: [network, prefix\n");
    js.push_str("// length, action, flags, ports] as above. Empty when nothing could go DIRECT by a rule.\n");
    js.push_str("var NETS = [\n");
    for (i, r) in &nets {
        let Some(IpNet::V4(n)) = r.net else { continue };
        let mut flags = 0u8;
        if r.action == Action::Deny && effective(*i, r) != Action::Deny {
            flags |= 4;
        }
        let _ = write!(js, "[\"{}\", {}, {}, ", n.network(), n.prefix_len(), code(r.action));
        constraints(r, flags, &mut js);
        js.push_str("],\n");
    }
    js.push_str("];\n");
    js.push_str(FUNCTIONS);
    let etag = HeaderValue::from_str(&format!("\"{:016x}-{:x}\"", fnv1a(js.as_bytes()), js.len()))
        .unwrap_or_else(|_| HeaderValue::from_static("\"pac\""));
    PacFile {
        text: Bytes::from(js),
        etag,
        direct_rules,
        direct_address_rules,
        path_rules,
        default_direct: direct(default),
    }
}

/// FNV-1a, 64 bits: the entity tag only has to change when the text does.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The matching code, the same for every file.
const FUNCTIONS: &str = r#"
var HTTP = 8, HTTPS = 16;
var BY_TOP = {}; // name rules by their top-level label (never a wildcard), keyed "." + label
for (var i = 0; i < RULES.length; i++) {
  var labels = RULES[i][0].split("."), key = "." + labels[labels.length - 1];
  if (!BY_TOP.hasOwnProperty(key)) BY_TOP[key] = [];
  BY_TOP[key].push([labels].concat(RULES[i].slice(1)));
}
for (var i = 0; i < NETS.length; i++) NETS[i][0] = ipv4(NETS[i][0]);
for (var i = 0; i < DIRECT_NETS6.length; i++) DIRECT_NETS6[i][0] = ipv6(DIRECT_NETS6[i][0]);

function FindProxyForURL(url, host) {
  var h = host.toLowerCase();
  if (h.charAt(0) == "[") h = h.substring(1, h.length - 1);
  if (h.indexOf(":") >= 0) return inNet6(h) ? "DIRECT" : PROXY;
  if (h.charAt(h.length - 1) == ".") h = h.substring(0, h.length - 1);
  if (isPlainHostName(h)) return "DIRECT";
  var targets = target(url);
  if (ipv4(h) >= 0) {
    for (var i = 0; i < DIRECT_NETS.length; i++) {
      if (isInNet(h, DIRECT_NETS[i][0], DIRECT_NETS[i][1])) return "DIRECT";
    }
    var n = ipv4(h);
    return targets && all(targets, NETS, function (r) { return within(n, r[0], r[1]); }) ? "DIRECT" : PROXY;
  }
  if (!targets || !validName(h)) return PROXY;
  var labels = h.split("."), key = "." + labels[labels.length - 1];
  var rows = BY_TOP.hasOwnProperty(key) ? BY_TOP[key] : [];
  return all(targets, rows, function (r) { return nameMatches(labels, r[0], r[3] & 1); }) ? "DIRECT" : PROXY;
}

// The [scheme, port] pairs hostgate decides a URL by when the client uses the proxy: http:// is
// an absolute-form request; https:// and wss:// a CONNECT (http on port 80, else https) carrying
// TLS (https); ws:// a CONNECT carrying HTTP. null for anything else (it goes to the proxy).
function target(url) {
  var i = url.indexOf("://");
  if (i < 0) return null;
  var scheme = url.substring(0, i).toLowerCase(), a = url.substring(i + 3);
  var end = a.search(/[\/?#]/);
  if (end >= 0) a = a.substring(0, end);
  a = a.substring(a.lastIndexOf("@") + 1);
  var colon = a.lastIndexOf(":"), port = 0;
  if (colon > a.lastIndexOf("]") && colon < a.length - 1) {
    if (!/^[0-9]{1,5}$/.test(a.substring(colon + 1))) return null;
    port = parseInt(a.substring(colon + 1), 10);
    if (port < 1 || port > 65535) return null;
  }
  if (scheme == "http") return [[HTTP, port || 80]];
  var tls = scheme == "https" || scheme == "wss";
  if (!tls && scheme != "ws") return null;
  port = port || (tls ? 443 : 80);
  var inner = tls ? HTTPS : HTTP, connect = port == 80 ? HTTP : HTTPS;
  return connect == inner ? [[inner, port]] : [[connect, port], [inner, port]];
}

// Whether hostgate's decision for every target is in DIRECT_ACTIONS. The decision: among the
// rows that match and whose scheme and port fit, the highest rank (specificity, or prefix length)
// wins; equal ranks go to the strictest action (the first such row, whose report mode applies);
// no row: DEFAULT. A path at the deciding rank keeps the name on the proxy.
function all(targets, rows, matches) {
  for (var t = 0; t < targets.length; t++) {
    var best = -1, action = DEFAULT, reported = 0, path = 0;
    for (var i = 0; i < rows.length; i++) {
      var r = rows[i];
      if (r[1] < best || !fits(r, targets[t][0], targets[t][1]) || !matches(r)) continue;
      if (r[1] > best) { best = r[1]; action = r[2]; reported = r[3] & 4; path = r[3] & 2; continue; }
      if (r[2] > action) { action = r[2]; reported = r[3] & 4; }
      path = path | (r[3] & 2);
    }
    if (path || !DIRECT_ACTIONS[action == 2 && reported ? 1 : action]) return false;
  }
  return true;
}

function fits(r, scheme, port) {
  if ((r[3] & (HTTP | HTTPS)) && !(r[3] & scheme)) return false;
  if (!r[4]) return true;
  for (var i = 0; i < r[4].length; i++) if (r[4][i][0] <= port && port <= r[4][i][1]) return true;
  return false;
}

// A pattern's labels against a host's: a leftmost "*" is one or more labels (exactly one when
// `one`), any other "*" label exactly one, a "*" inside a label any run of bytes within it.
function nameMatches(h, p, one) {
  var n = p.length, k = h.length, lead = p[0] == "*" && !one;
  if (lead ? k < n : k != n) return false;
  for (var j = 1; j <= n; j++) {
    if (!(lead && j == n) && !labelMatches(h[k - j], p[n - j])) return false;
  }
  return true;
}

function labelMatches(s, q) {
  if (q.indexOf("*") < 0) return s == q;
  var parts = q.split("*"), last = parts[parts.length - 1], pos = parts[0].length;
  if (s.substring(0, pos) != parts[0]) return false;
  for (var i = 1; i < parts.length - 1; i++) {
    var at = s.indexOf(parts[i], pos);
    if (at < 0) return false;
    pos = at + parts[i].length;
  }
  return s.length - pos >= last.length && s.substring(s.length - last.length) == last;
}

// What hostgate accepts as a name: [a-z0-9_-] labels of 1 to 63 bytes, 253 bytes in all.
function validName(h) {
  if (h.length > 253 || !/^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/.test(h)) return false;
  var labels = h.split(".");
  for (var i = 0; i < labels.length; i++) if (labels[i].length > 63) return false;
  return true;
}

// A dotted-quad IPv4 address as a number, or -1.
function ipv4(s) {
  if (!/^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$/.test(s)) return -1;
  var p = s.split(".");
  return ((p[0] * 256 + +p[1]) * 256 + +p[2]) * 256 + +p[3];
}

function within(n, net, len) {
  var size = Math.pow(2, 32 - len);
  return Math.floor(n / size) == Math.floor(net / size);
}

// An IPv6 address as eight 16-bit numbers, or null.
function ipv6(s) {
  var halves = s.split("::");
  if (halves.length > 2) return null;
  var head = halves[0] ? halves[0].split(":") : [];
  var tail = halves.length == 2 && halves[1] ? halves[1].split(":") : [];
  var end = tail.length ? tail : head;
  if (end.length && end[end.length - 1].indexOf(".") >= 0) {
    var v4 = ipv4(end.pop());
    if (v4 < 0) return null;
    end.push((Math.floor(v4 / 65536)).toString(16), (v4 % 65536).toString(16));
  }
  var fill = 8 - head.length - tail.length;
  if (halves.length == 2 ? fill < 1 : fill != 0) return null;
  var groups = head.slice(0);
  while (fill-- > 0 && halves.length == 2) groups.push("0");
  groups = groups.concat(tail);
  for (var i = 0; i < 8; i++) {
    if (!/^[0-9a-f]{1,4}$/.test(groups[i])) return null;
    groups[i] = parseInt(groups[i], 16);
  }
  return groups;
}

function inNet6(h) {
  var a = ipv6(h);
  if (!a) return false;
  for (var i = 0; i < DIRECT_NETS6.length; i++) {
    var net = DIRECT_NETS6[i][0], len = DIRECT_NETS6[i][1], ok = true;
    for (var g = 0; g < 8 && ok; g++) {
      var bits = Math.min(16, Math.max(0, len - 16 * g)), size = Math.pow(2, 16 - bits);
      ok = Math.floor(a[g] / size) == Math.floor(net[g] / size);
    }
    if (ok) return true;
  }
  return false;
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_pac_file_or_with_another_method() {
        let uri: Uri = "/proxy.pac".parse().expect("uri");
        let r = respond(None, &Method::GET, &uri, &HeaderMap::new(), GroupId::NONE);
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = respond(None, &Method::POST, &uri, &HeaderMap::new(), GroupId::NONE);
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers().get(ALLOW).map(HeaderValue::as_bytes), Some(&b"GET, HEAD"[..]));
        assert!(is_pac_path("/proxy.pac") && is_pac_path("/wpad.dat") && !is_pac_path("/proxy.pac/"));
    }

    #[test]
    fn fnv1a_is_the_reference_function() {
        // The published test vectors of FNV-1a 64.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn comments_keep_printable_ascii_only() {
        assert_eq!(comment("a b\nc\u{2028}d*/"), "a b?c?d*/");
    }
}
