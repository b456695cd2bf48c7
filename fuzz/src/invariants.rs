//! The invariants of `hostgate-proxy`'s parsers, written once for the fuzz targets and for the
//! property tests (`tests/properties.rs` includes this file with `#[path]`), so that both check
//! one reading of the contract.
//!
//! - [`check_sniff`]: the sniff phase (`hostgate_proxy::sniff::sniff`) over an in-memory reader
//!   that hands the bytes out in chunks. Every chunking gets the same answer (the sniffer is
//!   reassembling, not guessing); for bytes that start with 0x16 the answer is what
//!   `parse_client_hello` says of the whole buffer (or "closed" where the parser could already
//!   refuse bytes the read loop has not parsed yet); a ClientHello's SNI and ALPN names are
//!   byte-for-byte in the handshake message the records carry, each behind its length prefix;
//!   `Http` only for bytes that start with a method token and a space.
//! - [`check_rules`]: `policy::parse_rules`. Each error names the line that causes it (that
//!   line alone gives the same error, but for "no action", which depends on the lines above and
//!   is said before the target is read); each rule comes from the line it names (that line alone
//!   gives the same rule); a rule written back as `ACTION TARGET` parses to the same rule, and
//!   written canonically (`ACTION scheme://pattern:port/path` from its parsed fields, a one-label
//!   leftmost `*` as an unset placeholder) parses to a rule with the same fields, whose canonical
//!   text is the same (a fixed point).
//! - [`check_config`]: `config::Config::parse`. An error names the file and a line and column
//!   inside the text; an accepted configuration parses again to an equal one and holds the
//!   validated ranges.
//! - [`normalize_target`]: `normalize::normalize`. An accepted target is a fixed point in its
//!   normal form (the module's table), and one that fits a path rule is served under that rule
//!   by a permissive reference server ([`server_view`]: decodes everything, `\` as `/`, strips
//!   `;parameters`, removes dot segments); an error is one the input spells.
//!
//! Everything panics with the input in the message on a violation.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use hostgate_proxy::config::{Config, SniffConfig};
use hostgate_proxy::normalize::{normalize, PathError, Slashes};
use hostgate_proxy::outcome::Outcome;
use hostgate_proxy::policy::{parse_rules, path_matches, Action, Rule, RuleError};
use hostgate_proxy::sniff::tls::{looks_like_tls, parse_client_hello, ClientHello, Progress, SniffError};
use hostgate_proxy::sniff::{sniff, Sniffed};
use tokio::io::{AsyncRead, ReadBuf};

// ---- sniffing ----

/// What `sniff` says: the guess, or the failure's outcome and detail.
pub type Answer = Result<Sniffed, (Outcome, String)>;

/// Let the checks pass over the open findings listed in `fuzz/README.md` (so that fuzzing goes
/// on past them); `false` to reproduce them. Both findings so far are fixed, so it is off; an
/// allowance for a new one goes behind it until its fix lands.
pub const KNOWN_FINDINGS: bool = false;

/// An in-memory client that hands out `data` in reads of the sizes in `sizes` (cycled; empty:
/// as much as the caller's buffer takes). A size of 0 is a pause: one `Pending` (with the task
/// woken at once), as when the next TCP segment has not arrived yet; the read after a pause
/// gives at least one byte, so that the client always gets somewhere.
#[derive(Debug)]
pub struct Chunked<'a> {
    data: &'a [u8],
    sizes: &'a [usize],
    next: usize,
    paused: bool,
}

impl<'a> Chunked<'a> {
    /// A reader of `data` in reads of `sizes`.
    pub fn new(data: &'a [u8], sizes: &'a [usize]) -> Self {
        Chunked { data, sizes, next: 0, paused: false }
    }
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let size = match this.sizes {
            [] => usize::MAX,
            sizes => sizes[this.next % sizes.len()],
        };
        this.next += 1;
        if size == 0 && !this.paused && !this.data.is_empty() {
            this.paused = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.paused = false;
        let n = size.max(1).min(this.data.len()).min(buf.remaining());
        buf.put_slice(&this.data[..n]);
        this.data = &this.data[n..];
        Poll::Ready(Ok(()))
    }
}

thread_local! {
    /// One runtime per thread: `sniff` needs a timer (its deadline), nothing else.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
}

/// Runs `sniff` over `bytes` handed out in reads of `sizes` (see [`Chunked`]), with `cap` as
/// `sniff.max_bytes`, and checks that it read no more than the client sent.
pub fn sniff_chunks(bytes: &[u8], sizes: &[usize], cap: usize) -> Answer {
    // The deadline is far away: the reader is always ready, only a hang would reach it.
    let cfg = SniffConfig { timeout: Duration::from_secs(3600), max_bytes: cap, ..SniffConfig::default() };
    let mut client = Chunked::new(bytes, sizes);
    let mut buf = BytesMut::new();
    let answer = RUNTIME.with(|rt| rt.block_on(sniff(&mut client, &mut buf, &cfg)));
    assert_eq!(&buf[..], &bytes[..buf.len()], "the buffer is not what the client sent");
    answer.map_err(|f| (f.outcome, f.detail.into_owned()))
}

/// The answer for bytes that start with 0x16, from the public TLS functions on the whole
/// buffer: the TLS parser answers the same for every longer buffer once it has answered, so
/// `sniff` (which stops at the first answer) must agree with it however the bytes arrive.
pub fn expected_tls(bytes: &[u8], cap: usize) -> Answer {
    let closed =
        || Err((Outcome::ClientError, format!("client closed after {} bytes, before anything decidable", bytes.len())));
    match looks_like_tls(bytes) {
        None => closed(),
        Some(false) => Ok(Sniffed::Unknown),
        Some(true) => match parse_client_hello(bytes, cap) {
            Ok(Progress::NeedMore) => closed(),
            Ok(Progress::Done(hello)) => Ok(Sniffed::Tls(hello)),
            Err(SniffError::NotTls) => Ok(Sniffed::Unknown),
            Err(e @ SniffError::TooLarge { .. }) => Err((Outcome::ClientHelloTooLarge, e.to_string())),
            Err(e) => Err((Outcome::MalformedClientHello, e.to_string())),
        },
    }
}

/// The handshake stream the first `hello.records` records carry, checking on the way that
/// they are handshake records and take exactly `hello.records_len` bytes; then the
/// ClientHello message itself (handshake header included) out of that stream.
pub fn hello_message(hello: &ClientHello, bytes: &[u8]) -> Vec<u8> {
    let mut stream = Vec::new();
    let mut pos = 0;
    for i in 0..hello.records {
        let header = bytes.get(pos..pos + 5).unwrap_or_else(|| panic!("record {i} of {hello:?} is cut: {bytes:?}"));
        assert_eq!((header[0], header[1]), (0x16, 3), "record {i} of {hello:?}: {bytes:?}");
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        let payload = bytes.get(pos + 5..pos + 5 + len).unwrap_or_else(|| panic!("record {i} is cut: {bytes:?}"));
        stream.extend_from_slice(payload);
        pos += 5 + len;
    }
    assert_eq!(pos, hello.records_len, "{hello:?}: {bytes:?}");
    assert_eq!(stream.first(), Some(&1), "not a ClientHello: {bytes:?}");
    let declared = stream.get(1..4).map(|l| usize::from(l[0]) << 16 | usize::from(l[1]) << 8 | usize::from(l[2]));
    let end = declared.map(|d| d + 4).filter(|&end| end <= stream.len());
    let end = end.unwrap_or_else(|| panic!("{hello:?} declares more than its records carry: {bytes:?}"));
    // The last record holds the ClientHello's last byte.
    assert!(stream.len() - end < hello.records_len, "{hello:?}: {bytes:?}");
    stream.truncate(end);
    stream
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// A parsed ClientHello's SNI and ALPN names are in the message the records carry, each behind
/// its length prefix: the SNI as `00 len16 name` (a host_name entry), each ALPN name as
/// `len8 name` (lossy UTF-8 in `ClientHello::alpn`, so a name with U+FFFD matches any bytes
/// that decode to it).
pub fn check_hello_in_input(hello: &ClientHello, bytes: &[u8]) {
    let message = hello_message(hello, bytes);
    if let Some(sni) = &hello.sni {
        let len = u16::try_from(sni.len()).unwrap_or_else(|_| panic!("SNI of {} bytes: {bytes:?}", sni.len()));
        let mut entry = vec![0];
        entry.extend_from_slice(&len.to_be_bytes());
        entry.extend_from_slice(sni.as_bytes());
        assert!(contains(&message, &entry), "SNI {sni:?} is not in the ClientHello: {bytes:?}");
    }
    for name in &hello.alpn {
        let found = if name.contains('\u{fffd}') {
            (0..message.len()).any(|i| {
                let n = usize::from(message[i]);
                message.get(i + 1..i + 1 + n).is_some_and(|b| String::from_utf8_lossy(b) == *name)
            })
        } else {
            let len = u8::try_from(name.len()).unwrap_or_else(|_| panic!("ALPN name of {} bytes", name.len()));
            let mut entry = vec![len];
            entry.extend_from_slice(name.as_bytes());
            contains(&message, &entry)
        };
        assert!(found, "ALPN name {name:?} is not in the ClientHello: {bytes:?}");
    }
}

/// A byte of an HTTP token (RFC 9110 `tchar`).
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `bytes` start like a request line to httparse: any empty lines (`CRLF` or `LF`), then a
/// method of one or more token characters and a space.
pub fn starts_with_method(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    loop {
        if let Some(r) = rest.strip_prefix(b"\r\n") {
            rest = r;
        } else if let Some(r) = rest.strip_prefix(b"\n") {
            rest = r;
        } else {
            break;
        }
    }
    match rest.iter().position(|&b| b == b' ') {
        Some(sp) => sp > 0 && rest[..sp].iter().all(|&b| is_tchar(b)),
        None => false,
    }
}

/// A reference answer that is not a guess: every chunking in `chunkings`, byte-by-byte reads
/// (for inputs of up to 2 KiB) and reads with pauses get the answer of one read of everything;
/// for bytes that start with 0x16 that is [`expected_tls`]; a ClientHello passes
/// [`check_hello_in_input`]; `Http` only for bytes that pass [`starts_with_method`]. Returns
/// the answer.
pub fn check_sniff(bytes: &[u8], chunkings: &[&[usize]], cap: usize) -> Answer {
    let whole = sniff_chunks(bytes, &[], cap);
    let mut all: Vec<&[usize]> = chunkings.to_vec();
    if bytes.len() <= 2048 {
        all.push(&[1]);
    }
    all.push(&[3, 0, 700, 0]);
    for sizes in all {
        let got = sniff_chunks(bytes, sizes, cap);
        assert_eq!(got, whole, "reads of {sizes:?} (cap {cap}): {bytes:?}");
    }
    if bytes.first() == Some(&0x16) {
        let expected = expected_tls(bytes, cap);
        // The read loop runs the parser only once the records the ClientHello declares are all
        // in, the buffer is over the cap, or the record headers alone show a refusal
        // (`RecordWalk` in `proxy/src/sniff/mod.rs`), so a client that stops inside them is
        // "closed before anything decidable" even when the parser could already refuse what it
        // sent (malformed, or a later record header announcing more than the cap). Had the
        // client gone on, the answer would be the parser's: it never changes once given.
        let closed = matches!(&whole, Err((Outcome::ClientError, _)));
        let stopped_early =
            closed && matches!(&expected, Err((Outcome::MalformedClientHello | Outcome::ClientHelloTooLarge, _)));
        // Fuzz finding 1 (see `fuzz/README.md`): the read loop's `RecordWalk` gate does not apply
        // `looks_like_tls`: 0x16 and two bytes that are not a TLS version wait for a 5-byte
        // record header, and a record version 3.5 to 3.255 waits for the whole record, where the
        // parser says "not TLS" from the first 3 bytes. `tests/properties.rs` keeps the cases
        // (ignored).
        let finding_1 = closed && expected == Ok(Sniffed::Unknown);
        assert!(
            whole == expected || stopped_early || (KNOWN_FINDINGS && finding_1),
            "cap {cap}: {whole:?}, not {expected:?}: {bytes:?}"
        );
    }
    match &whole {
        Ok(Sniffed::Tls(hello)) => check_hello_in_input(hello, bytes),
        Ok(Sniffed::Http) => assert!(starts_with_method(bytes), "HTTP without a method and a space: {bytes:?}"),
        Ok(Sniffed::Unknown) | Err(_) => {}
    }
    whole
}

/// FNV-1a of `bytes`: a seed for choices an input does not spell out.
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Chunk sizes from a seed, for inputs that carry none: sizes up to `max` (0 being a pause).
pub fn chunk_sizes(seed: u64, max: usize, count: usize) -> Vec<usize> {
    let mut x = seed | 1;
    (0..count)
        .map(|_| {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            usize::try_from(x % (max as u64 + 1)).unwrap_or(1)
        })
        .collect()
}

// ---- rule files ----

/// The file name the rule checks parse under.
pub const RULE_FILE: &str = "t.rules";

/// The message of a bare line with no default in effect (the only error that depends on the
/// lines above).
fn is_no_action(message: &str) -> bool {
    message.contains("` has no action: write `ACTION ")
}

/// The placeholder a canonical rule writes for a one-label leftmost `*`, which has no pattern
/// text of its own (only an unset placeholder makes one): unset when the canonical text is parsed.
const ONE_LABEL: &str = "<label>";

/// A rule written canonically from its parsed fields: `ACTION [scheme://]pattern[:ports][path]`,
/// a one-label leftmost `*` written [`ONE_LABEL`]; `None` for an inactive rule (no pattern).
pub fn canonical(rule: &Rule) -> Option<String> {
    let pattern = rule.pattern.as_ref()?;
    let mut out = format!("{} ", rule.action);
    if let Some(scheme) = rule.scheme {
        out.push_str(&format!("{scheme}://"));
    }
    match pattern.as_str().strip_prefix('*').filter(|_| pattern.is_leftmost_one_label()) {
        Some(rest) => {
            out.push_str(ONE_LABEL);
            out.push_str(rest);
        }
        None => out.push_str(pattern.as_str()),
    }
    if let Some(ports) = &rule.ports {
        out.push_str(&format!(":{ports}"));
    }
    if let Some(path) = &rule.path {
        out.push_str(path);
    }
    Some(out)
}

fn one_rule(text: &str, vars: &BTreeMap<String, String>, why: &str) -> Rule {
    match parse_rules(RULE_FILE, text, None, vars) {
        Ok(mut rules) if rules.len() == 1 => rules.remove(0),
        other => panic!("{why}: {text:?} parses to {other:?}"),
    }
}

/// A rule parsed back from what it is written as: `ACTION TARGET` gives the same rule;
/// the canonical text gives the same fields and is a fixed point.
pub fn check_rule_round_trip(rule: &Rule, vars: &BTreeMap<String, String>) {
    let written = format!("{} {}", rule.action, rule.target);
    let mut again = one_rule(&written, vars, "a rule written back");
    again.origin = rule.origin.clone();
    assert_eq!(&again, rule, "{written:?}");

    let Some(text) = canonical(rule) else { return };
    let again = one_rule(&text, &BTreeMap::new(), "a canonical rule");
    let fields = |r: &Rule| (r.action, r.scheme, r.ports.clone(), r.path.clone(), r.pattern.clone());
    assert_eq!(fields(&again), fields(rule), "canonical {text:?} of {rule:?}");
    let one_label = rule.pattern.as_ref().is_some_and(|p| p.is_leftmost_one_label());
    assert!(again.unresolved.iter().all(|n| one_label && n == "label"), "{text:?}");
    assert_eq!(canonical(&again).as_deref(), Some(text.as_str()), "not a fixed point: {rule:?}");
}

/// `parse_rules` on `text`: see the module docs. Returns the rules (or the errors).
pub fn check_rules(
    text: &str,
    default: Option<Action>,
    vars: &BTreeMap<String, String>,
) -> Result<Vec<Rule>, Vec<RuleError>> {
    let whole = parse_rules(RULE_FILE, text, default, vars);
    let lines: Vec<&str> = text.lines().collect();
    // Each line on its own, under a default so that a bare line is a rule.
    let alone: Vec<Result<Option<Rule>, String>> = lines
        .iter()
        .map(|line| match parse_rules(RULE_FILE, line, Some(Action::Allow), vars) {
            Ok(mut rules) if rules.len() <= 1 => Ok(rules.pop()),
            Err(mut errors) if errors.len() == 1 && errors[0].origin.line == 1 => Err(errors.remove(0).message),
            other => panic!("one line gives {other:?}: {line:?}"),
        })
        .collect();
    for rule in alone.iter().flatten().flatten() {
        check_rule_round_trip(rule, vars);
    }

    match &whole {
        Ok(rules) => {
            assert!(alone.iter().all(Result::is_ok), "a line that fails alone passes in {text:?}");
            let expected: Vec<(usize, &Rule)> =
                alone.iter().enumerate().filter_map(|(i, a)| Some((i + 1, a.as_ref().ok()?.as_ref()?))).collect();
            assert_eq!(rules.len(), expected.len(), "rules: {rules:?} from {text:?}");
            for (rule, (line, alone)) in rules.iter().zip(expected) {
                assert_eq!((&*rule.origin.file, rule.origin.line as usize), (RULE_FILE, line), "{text:?}");
                let mut same = alone.clone();
                same.action = rule.action;
                same.origin = rule.origin.clone();
                assert_eq!(rule, &same, "line {line} of {text:?}");
                assert!(lines[line - 1].contains(&rule.target), "{rule:?}: {text:?}");
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            let mut last = 0;
            for e in errors {
                let line = e.origin.line as usize;
                assert!(line > last && line <= lines.len(), "error line {line} of {}: {text:?}", lines.len());
                assert_eq!(&*e.origin.file, RULE_FILE);
                assert_eq!(e.to_string(), format!("{RULE_FILE}:{line}: {}", e.message));
                match &alone[line - 1] {
                    // A bare line with no default is refused before its target is read.
                    Ok(Some(_)) | Err(_) if is_no_action(&e.message) => {}
                    Err(message) => assert_eq!(&e.message, message, "line {line} of {text:?}"),
                    Ok(_) => panic!("line {line} fails ({}) but passes alone: {text:?}", e.message),
                }
                last = line;
            }
            for (i, a) in alone.iter().enumerate() {
                if a.is_err() {
                    assert!(errors.iter().any(|e| e.origin.line as usize == i + 1), "line {} not reported", i + 1);
                }
            }
        }
    }
    whole
}

// ---- the configuration file ----

/// The path the configuration checks parse under.
pub const CONFIG_PATH: &str = "conf/hostgate.toml";

/// `Config::parse` on `text`: see the module docs. Returns the configuration or the error
/// message.
pub fn check_config(text: &str) -> Result<Config, String> {
    let path = Path::new(CONFIG_PATH);
    match Config::parse(path, text) {
        Ok(config) => {
            let again = Config::parse(path, text).unwrap_or_else(|e| panic!("then {e}: {text:?}"));
            assert_eq!(again, config, "{text:?}");
            assert_eq!(config.path, path);
            assert!((512..=1 << 20).contains(&config.sniff.max_bytes), "{text:?}");
            assert!(!config.sniff.timeout.is_zero(), "{text:?}");
            assert!(config.limits.max_connections >= 1, "{text:?}");
            for (i, l) in config.listeners.iter().enumerate() {
                let twice = config.listeners[..i].iter().any(|m| m.address == l.address);
                assert!(l.address.port() == 0 || !twice, "{text:?}");
            }
            for s in &config.policy.sources {
                // Relative to the configuration's directory, or absolute as written.
                assert!(s.path.starts_with("conf") || s.path.is_absolute(), "{:?}: {text:?}", s.path);
                assert!((1..=text.split('\n').count()).contains(&s.line), "{text:?}");
            }
            assert!(config.vars.keys().all(|k| !k.is_empty()), "{text:?}");
            Ok(config)
        }
        Err(e) => {
            assert_eq!(e.file, path);
            assert!(!e.message.trim().is_empty(), "{text:?}");
            let shown = e.to_string();
            if let Some((line, col)) = e.position {
                let lines: Vec<&str> = text.split('\n').collect();
                assert!((1..=lines.len()).contains(&line), "line {line} of {}: {shown} for {text:?}", lines.len());
                let width = lines[line - 1].len();
                assert!((1..=width + 1).contains(&col), "column {col} of {width}: {shown} for {text:?}");
                assert!(shown.starts_with(&format!("{CONFIG_PATH}:{line}:{col}: ")), "{shown}");
            } else {
                assert!(shown.starts_with(&format!("{CONFIG_PATH}: ")), "{shown}");
            }
            Err(shown)
        }
    }
}

// ---- request targets ----

/// Let [`normalize_target`] pass over finding 5 (`fuzz/README.md`, fixed): the normaliser kept
/// an encoded `;` (`%3B`) after a dot segment (`/p/..%3B/no`), which a server that decodes before
/// it strips `;parameters` reads as `/p/..;/no`, hence `/no`. Off: the check holds in full. The
/// findings of the normaliser have their own switches rather than [`KNOWN_FINDINGS`], which would
/// also loosen the sniff checks for finding 1 (fixed).
pub const FINDING_5_OPEN: bool = false;

/// Let [`normalize_target`] pass over finding 6 (`fuzz/README.md`, fixed): the normaliser
/// refused overlong UTF-8 forms of 2 to 4 bytes but kept those of 5 and 6 (`%F8%80%80%80%AE`,
/// `.` in the UTF-8 of RFC 2279), which the decoders of old servers (IIS's "Unicode" bug) read
/// as `.`. Off: the check holds in full.
pub const FINDING_6_OPEN: bool = false;

/// Rule paths the security property of [`normalize_target`] is checked under (`allow
/// http://x/p/` and the like, default deny): the generated and hostile targets are made of the
/// segments `p`, `ok` and `no`.
pub const PATH_RULES: &[&str] = &["/p/", "/p", "/p/ok/"];

/// The hostile spellings of a request target, each with the name of its seed file in
/// `fuzz/seeds/request_target/`: climbs (`..`) spelled raw, percent-encoded in either case,
/// half-encoded, behind encoded or raw (back)slashes, with `;` parameters, as overlong UTF-8 and
/// double-encoded; NUL, bad percent-encoding, a fragment, a climb inside the query.
/// `tests/properties.rs` checks every one (and that the seed files are exactly these).
pub const HOSTILE_TARGETS: &[(&str, &str)] = &[
    ("dotdot", "/ok/../no"),
    ("encoded-dotdot", "/ok/%2e%2e/no"),
    ("encoded-dotdot-upper", "/ok/%2E%2E/no"),
    ("half-encoded-dotdot", "/p/.%2e/no"),
    ("half-encoded-dotdot-2", "/p/%2e./no"),
    ("dotdot-encoded-slash", "/ok/..%2fno"),
    ("dotdot-encoded-slash-upper", "/ok/..%2Fno"),
    ("dotdot-encoded-backslash", "/ok/..%5cno"),
    ("backslashes", "/ok\\..\\no"),
    ("dot-then-dotdot", "/ok/./../no"),
    ("double-slashes", "//p//../no"),
    ("dotdot-parameters", "/p/..;/no"),
    ("dotdot-named-parameters", "/p/..;x=1/no"),
    ("dotdot-encoded-semicolon", "/p/..%3b/no"),
    ("encoded-dotdot-encoded-semicolon", "/p/%2e%2e%3bx/no"),
    ("dotdot-encoded-semicolon-parameters", "/p/..%3B;x/no"),
    ("nul", "/p/%00"),
    ("overlong-2", "/p/%c0%ae%c0%ae/no"),
    ("overlong-3", "/p/%e0%80%ae%e0%80%ae/no"),
    ("overlong-4", "/p/%f0%80%80%ae%f0%80%80%ae/no"),
    ("overlong-5", "/p/%f8%80%80%80%ae%f8%80%80%80%ae/no"),
    ("overlong-6", "/p/%fc%80%80%80%80%ae%fc%80%80%80%80%ae/no"),
    ("overlong-5-slash", "/p/..%f8%80%80%80%afno"),
    ("overlong-slash", "/p/..%c0%afno"),
    ("bad-percent", "/p/%zz"),
    ("short-percent", "/p/%4"),
    ("query-climb", "/p/a?q=../../x"),
    ("fragment", "/p/#x"),
    ("encoded-dotdot-slash", "/p/%2e%2e%2fno"),
    ("double-encoded-dotdot", "/p/%252e%252e/no"),
    ("double-encoded-slash", "/p/..%252fno"),
    ("encoded-unreserved", "/p/%41%7e%2d"),
    ("lowercase-hex", "/p/%c3%a9/%3f"),
    ("climb-above-root", "/p/../../no"),
    ("empty", ""),
    ("not-absolute", "p/../no"),
];

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Replaces each overlong UTF-8 form of an ASCII byte, of 2 to `up_to` bytes (`C0 AE`,
/// `E0 80 AE`, ..., `FC 80 80 80 80 AE`), by that byte, as the decoders of old servers did.
fn decode_overlong_ascii(bytes: &[u8], up_to: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let lead = bytes[i];
        let len = lead.leading_ones() as usize;
        if (2..=up_to.min(6)).contains(&len) && i + len <= bytes.len() {
            let tail = &bytes[i + 1..i + len];
            if tail.iter().all(|&c| c & 0xc0 == 0x80) {
                let value = tail.iter().fold(u64::from(lead & (0x7f >> len)), |v, &c| v << 6 | u64::from(c & 0x3f));
                if let Some(ascii) = u8::try_from(value).ok().filter(u8::is_ascii) {
                    out.push(ascii);
                    i += len;
                    continue;
                }
            }
        }
        out.push(lead);
        i += 1;
    }
    out
}

/// RFC 3986 §5.2.4 `remove_dot_segments`, step by step as the RFC writes it (a `..` at the root
/// stays at the root).
fn remove_dot_segments(path: &[u8]) -> Vec<u8> {
    let mut input = path;
    let mut output: Vec<u8> = Vec::with_capacity(path.len());
    let pop = |output: &mut Vec<u8>| {
        let at = output.iter().rposition(|&c| c == b'/').unwrap_or(0);
        output.truncate(at);
    };
    while !input.is_empty() {
        if let Some(rest) = input.strip_prefix(b"../").or_else(|| input.strip_prefix(b"./")) {
            input = rest; // A
        } else if input.starts_with(b"/./") {
            input = &input[2..]; // B
        } else if input == b"/." {
            input = b"/";
        } else if input.starts_with(b"/../") {
            input = &input[3..]; // C
            pop(&mut output);
        } else if input == b"/.." {
            input = b"/";
            pop(&mut output);
        } else if input == b"." || input == b".." {
            input = b""; // D
        } else {
            // E: the first segment, with its leading `/`, to the output.
            let start = usize::from(input[0] == b'/');
            let end = input[start..].iter().position(|&c| c == b'/').map_or(input.len(), |e| e + start);
            output.extend_from_slice(&input[..end]);
            input = &input[end..];
        }
    }
    output
}

/// How a reference server reads a path: see [`Server::view`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Server {
    /// `%2F` and `%5C` are decoded, so they separate segments (otherwise they are data).
    pub encoded_slashes: bool,
    /// A decoded `%3B` starts `;parameters` (otherwise it is data).
    pub encoded_semicolons: bool,
    /// Overlong UTF-8 forms of ASCII of up to this many bytes are decoded (0: none).
    pub overlong_up_to: usize,
}

/// The most permissive server: decodes everything, overlong forms of up to 6 bytes included.
pub const PERMISSIVE: Server = Server { encoded_slashes: true, encoded_semicolons: true, overlong_up_to: 6 };

impl Server {
    /// What the server makes of a path (no query): every `%XX` decoded (to bytes; but `%2F`,
    /// `%5C` and `%3B` kept as data when the fields say so), overlong UTF-8 forms of ASCII
    /// decoded (old IIS), `\` taken for `/` (IIS), `;parameters` stripped from every segment
    /// (Tomcat), then RFC 3986 §5.2.4 dot-segment removal (a climb stops at the root). `None`
    /// when a `%` is not followed by two hex digits (such a server answers 400). Bytes that are
    /// not UTF-8 after decoding are shown as U+FFFD.
    pub fn view(&self, path: &str) -> Option<String> {
        let b = path.as_bytes();
        let mut decoded = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                let value = hex_digit(*b.get(i + 1)?)? << 4 | hex_digit(*b.get(i + 2)?)?;
                let data = match value {
                    b'/' | b'\\' => !self.encoded_slashes,
                    b';' => !self.encoded_semicolons,
                    _ => false,
                };
                if data {
                    // As written: no step below reads `%`, hex digits or their bytes.
                    decoded.extend_from_slice(&b[i..i + 3]);
                } else {
                    decoded.push(value);
                }
                i += 3;
            } else {
                decoded.push(b[i]);
                i += 1;
            }
        }
        let mut decoded = decode_overlong_ascii(&decoded, self.overlong_up_to);
        for c in &mut decoded {
            if *c == b'\\' {
                *c = b'/';
            }
        }
        let stripped: Vec<&[u8]> =
            decoded.split(|&c| c == b'/').map(|s| s.split(|&c| c == b';').next().unwrap_or(s)).collect();
        let resolved = remove_dot_segments(&stripped.join(&b'/'));
        Some(String::from_utf8_lossy(&resolved).into_owned())
    }
}

/// What a permissive server ([`PERMISSIVE`]) makes of a path (no query): every `%XX` decoded,
/// overlong UTF-8 forms of ASCII decoded, `\` taken for `/`, `;parameters` stripped from every
/// segment, then RFC 3986 §5.2.4 `remove_dot_segments`. See [`Server::view`].
pub fn server_view(path: &str) -> Option<String> {
    PERMISSIVE.view(path)
}

/// Whether an error can come from `raw`: each kind needs its spelling in the input.
fn error_is_explained(raw: &str, slashes: Slashes, e: PathError) -> bool {
    let path = raw.split('?').next().unwrap_or(raw);
    let (raw_lower, path_lower) = (raw.to_ascii_lowercase(), path.to_ascii_lowercase());
    match e {
        PathError::Nul => raw.contains('\0') || raw_lower.contains("%00"),
        PathError::Control(c) => c != 0 && (c < 0x20 || c == 0x7f) && raw.as_bytes().contains(&c),
        PathError::Slash => {
            slashes == Slashes::Refuse
                && (path.contains('\\') || path_lower.contains("%2f") || path_lower.contains("%5c"))
        }
        PathError::Percent => raw.contains('%'),
        PathError::Overlong => {
            ["%c0", "%c1", "%e0%8", "%e0%9", "%f0%8", "%f5", "%f6", "%f7", "%f8", "%f9", "%fa", "%fb", "%fc"]
                .iter()
                .chain(&["%fd", "%fe", "%ff"])
                .any(|s| path_lower.contains(s))
        }
        PathError::AboveRoot => path.contains('.') || path_lower.contains("%2e"),
        PathError::DotParameters => {
            (path.contains(';') || path_lower.contains("%3b")) && (path.contains('.') || path_lower.contains("%2e"))
        }
        PathError::Fragment => raw.contains('#'),
        PathError::NotAbsolute => !raw.is_empty() && !path.starts_with('/'),
        // `PathError` is `#[non_exhaustive]`: a kind this check does not know is a failure.
        _ => false,
    }
}

/// Checks a normalised target `out` (the result of `normalize(raw, slashes)`): see
/// [`normalize_target`].
fn check_normal_form(raw: &str, out: &str, slashes: Slashes) {
    let again = normalize(out, slashes).map(Cow::into_owned);
    assert_eq!(again.as_deref(), Ok(out), "not idempotent ({slashes:?}): {raw:?} -> {out:?}");

    assert!(out.starts_with('/'), "{raw:?} -> {out:?}");
    let (path, query) = out.split_at(out.find('?').unwrap_or(out.len()));
    let raw_query = &raw[raw.find('?').unwrap_or(raw.len())..];
    assert_eq!(query, raw_query, "the query is not kept as written: {raw:?} -> {out:?}");
    for c in out.bytes() {
        assert!(c >= 0x20 && c != 0x7f && c != b'#', "byte {c:#04x} in {out:?} from {raw:?}");
    }

    let segments: Vec<&str> = path[1..].split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        assert!(!segment.is_empty() || i + 1 == segments.len(), "empty segment in {out:?} from {raw:?}");
        let head = segment.split(';').next().unwrap_or(segment);
        assert!(head != "." && head != "..", "dot segment {segment:?} in {out:?} from {raw:?}");
    }
    assert!(!path.contains('\\'), "raw backslash in {out:?} from {raw:?}");

    let b = out.as_bytes();
    let in_path = path.len();
    for (i, _) in b.iter().enumerate().filter(|(_, &c)| c == b'%') {
        let pair = (b.get(i + 1).copied(), b.get(i + 2).copied());
        let (Some(high), Some(low)) = pair else { panic!("a cut `%` in {out:?} from {raw:?}") };
        let value = hex_digit(high).zip(hex_digit(low)).map(|(h, l)| h << 4 | l);
        let Some(value) = value else { panic!("`%` without two hex digits in {out:?} from {raw:?}") };
        assert_ne!(value, 0, "%00 in {out:?} from {raw:?}");
        if i < in_path {
            let upper = |c: u8| c.is_ascii_digit() || (b'A'..=b'F').contains(&c);
            assert!(upper(high) && upper(low), "lower-case hex at {i} in {out:?} from {raw:?}");
            let v = char::from(value);
            assert!(
                !(v.is_ascii_alphanumeric() || "-._~".contains(v)),
                "an encoded unreserved {v:?} at {i} in {out:?} from {raw:?}"
            );
            if slashes == Slashes::Refuse {
                assert!(value != b'/' && value != b'\\', "an encoded slash at {i} in {out:?} from {raw:?}");
            }
        }
    }

    // The security property: a target allowed under a path rule is served under it; with
    // `Keep`, by a server that takes encoded slashes for data (as `Keep` means them).
    let server = Server { encoded_slashes: slashes == Slashes::Refuse, ..PERMISSIVE };
    let Some(view) = server.view(path) else { panic!("a server cannot decode {out:?} (from {raw:?})") };
    for rule in PATH_RULES {
        if path_matches(rule, out) && !path_matches(rule, &view) {
            // The same server without what the open findings are about.
            let excused = Server {
                encoded_semicolons: server.encoded_semicolons && !FINDING_5_OPEN,
                overlong_up_to: if FINDING_6_OPEN { 4 } else { server.overlong_up_to },
                ..server
            };
            assert!(
                excused.view(path).is_some_and(|v| path_matches(rule, &v)),
                "{raw:?} -> {out:?} ({slashes:?}) fits `{rule}`, but a server reads {view:?}"
            );
        }
    }
}

/// `normalize(raw, slashes)`, checked. Never panics; and
///
/// - on `Ok(out)`: normalising `out` again gives `out`; `out` starts with `/`, keeps the query
///   (from the first `?`) as written, has no byte below 0x20, no DEL, NUL or `#`, and every `%`
///   followed by two hex digits (not `00`); its path part has no `.` or `..` segment (also with
///   `;parameters`), no empty segment but a trailing one, no raw `\`, and every `%` followed by
///   two upper-case hex digits that do not encode an unreserved character (nor, with
///   [`Slashes::Refuse`], `/` or `\`);
/// - the security property: when `out` fits one of [`PATH_RULES`], [`server_view`] of its path
///   fits that rule too (with [`Slashes::Keep`]: the view of a server that takes `%2F` and `%5C`
///   for data, since by design a server that decodes them reads kept slashes as separators);
/// - on `Err(e)`: the input has the spelling `e` is about (a `%` for `Percent`, a `;` for
///   `DotParameters`, ...), and `e` is a kind this check knows;
/// - across modes: when `Refuse` accepts, `Keep` gives the same target; when `Refuse` refuses
///   for any reason but `Slash`, `Keep` refuses for the same reason.
pub fn normalize_target(raw: &str, slashes: Slashes) -> Result<String, PathError> {
    let refuse = normalize(raw, Slashes::Refuse).map(Cow::into_owned);
    let keep = normalize(raw, Slashes::Keep).map(Cow::into_owned);
    match &refuse {
        Ok(_) => assert_eq!(keep, refuse, "Keep differs from Refuse on {raw:?}"),
        Err(PathError::Slash) => {}
        Err(_) => assert_eq!(keep, refuse, "Keep refuses differently from Refuse on {raw:?}"),
    }
    let result = match slashes {
        Slashes::Refuse => refuse,
        Slashes::Keep => keep,
    };
    match &result {
        Ok(out) => check_normal_form(raw, out, slashes),
        Err(e) => assert!(error_is_explained(raw, slashes, *e), "{e:?} ({e}) for {raw:?} ({slashes:?})"),
    }
    result
}
