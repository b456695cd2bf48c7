//! The request normaliser: one spelling for every HTTP request target, decided on and forwarded.
//!
//! A path rule is only as good as the agreement between what the gateway matched and what the
//! upstream server serves. Servers resolve `/ok/../no`, `/ok/%2e%2e/no` and `/ok/./../no` to
//! `/no`; a gateway that matched the raw text would let all of them past `allow
//! http://x/ok/`. So the target is normalised once, before any decision, and the normalised
//! target is what goes upstream (never the raw one). This module owns that function and its
//! rules; it does no I/O and knows nothing of the policy.
//!
//! | input | result |
//! |---|---|
//! | `%41`, `%7e`, `%2e` (percent-encoded unreserved: `A-Z a-z 0-9 - . _ ~`) | decoded: `A`, `~`, `.` |
//! | other percent-encoding (`%3f`, `%c3%a9`) | kept encoded, hex in upper case (`%3F`, `%C3%A9`) |
//! | `.` and `..` segments (after the decoding above), RFC 3986 §5.2.4 | removed: `/a/./b/../c` → `/a/c` |
//! | `..` above the root (`/..`, `/a/../..`) | refused: [`PathError::AboveRoot`] |
//! | `//` (empty segments) | merged: `/a//b` → `/a/b` |
//! | `;` | data, never a segment end: `/a;x/b` stays; but a dot segment with parameters (`/..;x/`, `/..%3Bx/`) is refused ([`PathError::DotParameters`]): Tomcat-style servers strip the parameters and climb |
//! | `%2F`, `%5C` (encoded `/`, `\`), raw `\` | refused ([`PathError::Slash`]) by default; with [`Slashes::Keep`], kept as data, forwarded encoded (`%2F`, `%5C`) |
//! | NUL (raw or `%00`), a control byte, DEL | refused |
//! | `%` not followed by two hex digits | refused: [`PathError::Percent`] |
//! | an overlong UTF-8 form (`%C0%AE`, `%E0%80%AE`, `%F0%80…`), or a byte that never starts UTF-8 (`%F5`–`%FF`: RFC 2279's 5- and 6-byte forms) | refused: [`PathError::Overlong`] |
//! | `#` (a fragment) | refused: a request target has none |
//! | the query (after the first `?`) | kept as written, after the same byte and percent checks (no `%00`) |
//! | empty | `/` |
//!
//! The result is idempotent (normalising it again changes nothing), never contains a `.` or `..`
//! segment, an encoded unreserved character, an empty segment, or (by default) an encoded slash.

use std::borrow::Cow;
use std::fmt;

/// What to do with an encoded slash or backslash (`%2F`, `%5C`) and a raw backslash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Slashes {
    /// Refuse the request (`400`): servers disagree on whether these separate segments.
    #[default]
    Refuse,
    /// Keep them as data inside a segment, forwarded percent-encoded (`%2F`, `%5C`). For
    /// upstreams that use encoded slashes in names (some object stores, some APIs).
    Keep,
}

/// Why a request target cannot be normalised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathError {
    /// A NUL, raw or `%00`.
    Nul,
    /// A control byte or DEL (the byte).
    Control(u8),
    /// An encoded slash or backslash, or a raw backslash, with [`Slashes::Refuse`].
    Slash,
    /// `%` not followed by two hex digits.
    Percent,
    /// A percent-encoded overlong UTF-8 form.
    Overlong,
    /// `..` above the root.
    AboveRoot,
    /// A `.` or `..` segment with `;` parameters.
    DotParameters,
    /// A fragment (`#`).
    Fragment,
    /// The path does not start with `/`.
    NotAbsolute,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::Nul => f.write_str("a NUL in the request target"),
            PathError::Control(b) => write!(f, "control byte {b:#04x} in the request target"),
            PathError::Slash => f.write_str(
                "an encoded slash or backslash (%2F, %5C) or a raw backslash in the path (refused unless http.insecure_keep_escaped_slashes = true)",
            ),
            PathError::Percent => f.write_str("invalid percent-encoding in the request target"),
            PathError::Overlong => f.write_str("an overlong UTF-8 form in the request target"),
            PathError::AboveRoot => f.write_str("the path climbs above the root with `..`"),
            PathError::DotParameters => f.write_str("a dot segment with `;` parameters in the path"),
            PathError::Fragment => f.write_str("a fragment (#) in the request target"),
            PathError::NotAbsolute => f.write_str("the path does not start with /"),
        }
    }
}

impl std::error::Error for PathError {}

/// Normalises a request's path and query (`/a/./b?q`) as the module documentation says. An
/// empty target is `/`. The result borrows `raw` when nothing changes.
///
/// # Errors
/// A [`PathError`] saying what was refused.
pub fn normalize(raw: &str, slashes: Slashes) -> Result<Cow<'_, str>, PathError> {
    if raw.is_empty() {
        return Ok(Cow::Borrowed("/"));
    }
    let (path, query) = match raw.find('?') {
        Some(i) => (&raw[..i], &raw[i..]),
        None => (raw, ""),
    };
    check_query(query)?;
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(path) {
        return Ok(Cow::Borrowed(raw));
    }
    let decoded = decode(path, slashes)?;
    let mut out = resolve(&decoded)?;
    out.push_str(query);
    Ok(Cow::Owned(out))
}

/// Whether a path (no query) is already in normal form: no `%`, `\`, `#`, control byte, empty
/// segment or dot segment. Most paths are, and are then not copied.
fn is_normal(path: &str) -> bool {
    let b = path.as_bytes();
    let plain = b.iter().all(|&c| c > 0x20 && c != 0x7f && c != b'%' && c != b'\\' && c != b'#');
    plain && !path.contains("//") && !path[1..].split('/').any(|s| is_dot(s) || dot_params(s))
}

fn is_dot(segment: &str) -> bool {
    segment == "." || segment == ".."
}

/// `..;x`, `.;x` or `..%3Bx`: a dot segment with parameters, `;` raw or encoded (a server
/// that decodes before it strips parameters reads `%3B` as `;`).
fn dot_params(segment: &str) -> bool {
    let end = [segment.find(';'), segment.find("%3B"), segment.find("%3b")].into_iter().flatten().min();
    end.is_some_and(|end| is_dot(&segment[..end]))
}

/// Checks the query's bytes and percent-encoding; the query is forwarded as written.
fn check_query(query: &str) -> Result<(), PathError> {
    let b = query.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            c @ (0..0x20 | 0x7f | b'#') => return Err(refused_byte(c)),
            b'%' => {
                if hex_pair(b, i)? == 0 {
                    return Err(PathError::Nul);
                }
                i += 2;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Why a raw byte is refused anywhere in a target: NUL, another control byte or DEL, `#`.
fn refused_byte(c: u8) -> PathError {
    match c {
        0 => PathError::Nul,
        b'#' => PathError::Fragment,
        c => PathError::Control(c),
    }
}

/// The byte encoded by the `%XX` at `i`.
fn hex_pair(b: &[u8], i: usize) -> Result<u8, PathError> {
    let hex = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    match (b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
        (Some(h), Some(l)) => Ok(h << 4 | l),
        _ => Err(PathError::Percent),
    }
}

fn unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// Decodes percent-encoded unreserved characters, upper-cases the hex of the rest, and checks
/// every byte; slashes per `slashes`.
fn decode(path: &str, slashes: Slashes) -> Result<String, PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let b = path.as_bytes();
    let mut out = String::with_capacity(b.len());
    let encoded = |out: &mut String, v: u8| {
        out.push('%');
        out.push(char::from(HEX[usize::from(v >> 4)]));
        out.push(char::from(HEX[usize::from(v & 15)]));
    };
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            c @ (0..0x20 | 0x7f | b'#') => return Err(refused_byte(c)),
            b'\\' if slashes == Slashes::Refuse => return Err(PathError::Slash),
            b'\\' => encoded(&mut out, b'\\'),
            b'%' => {
                let v = hex_pair(b, i)?;
                match v {
                    0 => return Err(PathError::Nul),
                    b'/' | b'\\' if slashes == Slashes::Refuse => return Err(PathError::Slash),
                    v if unreserved(v) => out.push(char::from(v)),
                    // Never in UTF-8: the 2-byte overlong leads, and the leads of RFC 2279's 5-
                    // and 6-byte forms (old decoders read `%F8%80%80%80%AE` as `.`).
                    0xc0 | 0xc1 | 0xf5..=0xff => return Err(PathError::Overlong),
                    0xe0 | 0xf0 if overlong_next(b, i + 3, v) => return Err(PathError::Overlong),
                    v => encoded(&mut out, v),
                }
                i += 2;
            }
            _ => {
                // A multi-byte character as written: copied whole.
                let len = utf8_len(b[i]);
                out.push_str(&path[i..i + len]);
                i += len - 1;
            }
        }
        i += 1;
    }
    Ok(out)
}

/// Whether the percent-encoded byte at `i` makes `lead` (`E0` or `F0`) an overlong form.
fn overlong_next(b: &[u8], i: usize, lead: u8) -> bool {
    if b.get(i) != Some(&b'%') {
        return false;
    }
    match hex_pair(b, i) {
        Ok(next) if lead == 0xe0 => (0x80..0xa0).contains(&next),
        Ok(next) => (0x80..0x90).contains(&next),
        Err(_) => false,
    }
}

/// The length of the UTF-8 character that starts with `lead` (a `&str` is valid UTF-8).
fn utf8_len(lead: u8) -> usize {
    match lead {
        0xf0.. => 4,
        0xe0.. => 3,
        0xc0.. => 2,
        _ => 1,
    }
}

/// RFC 3986 §5.2.4 on a decoded path that starts with `/`, with empty segments merged and a
/// climb above the root refused.
fn resolve(path: &str) -> Result<String, PathError> {
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing = false;
    for segment in path[1..].split('/') {
        trailing = false;
        match segment {
            "" => trailing = true,
            "." => trailing = true,
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing = true;
            }
            s if dot_params(s) => return Err(PathError::DotParameters),
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing || segments.is_empty() {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(raw: &str) -> Result<String, PathError> {
        normalize(raw, Slashes::Refuse).map(Cow::into_owned)
    }

    #[test]
    fn the_table() {
        let ok = [
            ("", "/"),
            ("/", "/"),
            ("/a/b?x=1", "/a/b?x=1"),
            ("/%41%7e%2e", "/A~."),
            ("/a/%3f/%c3%a9", "/a/%3F/%C3%A9"),
            ("/a/./b/../c", "/a/c"),
            ("/ok/../no", "/no"),
            ("/ok/%2e%2e/no", "/no"),
            ("/ok/%2E%2E/no", "/no"),
            ("/ok/.%2e/no", "/no"),
            ("/ok/./../no", "/no"),
            ("/a//b", "/a/b"),
            ("//a///b//", "/a/b/"),
            ("/a/.", "/a/"),
            ("/a/..", "/"),
            ("/a;x/b", "/a;x/b"),
            ("/a/b;..", "/a/b;.."),
            ("/é/x", "/é/x"),
            ("/a?q=/../b", "/a?q=/../b"),
            ("/a/../b?%2e=%41", "/b?%2e=%41"),
        ];
        for (raw, want) in ok {
            assert_eq!(n(raw).as_deref(), Ok(want), "{raw}");
            assert_eq!(n(want).as_deref(), Ok(want), "idempotent: {want}");
        }
        let refused = [
            ("/ok/..%2fno", PathError::Slash),
            ("/ok/..%2Fno", PathError::Slash),
            ("/ok/..%5cno", PathError::Slash),
            ("/ok\\..\\no", PathError::Slash),
            ("/..", PathError::AboveRoot),
            ("/a/../..", PathError::AboveRoot),
            ("/%2e%2e/x", PathError::AboveRoot),
            ("/ok/..;x/no", PathError::DotParameters),
            ("/ok/.;/no", PathError::DotParameters),
            ("/ok/..%3b/no", PathError::DotParameters),
            ("/ok/%2e%2e%3Bx/no", PathError::DotParameters),
            ("/ok/%f8%80%80%80%ae", PathError::Overlong),
            ("/ok/%fc%80%80%80%80%ae", PathError::Overlong),
            ("/a%00b", PathError::Nul),
            ("/a?b=%00", PathError::Nul),
            ("/a\u{1}b", PathError::Control(1)),
            ("/a\u{7f}", PathError::Control(0x7f)),
            ("/a%zz", PathError::Percent),
            ("/a%4", PathError::Percent),
            ("/a?%g0", PathError::Percent),
            ("/ok/%c0%ae%c0%ae/no", PathError::Overlong),
            ("/ok/%e0%80%ae", PathError::Overlong),
            ("/ok/%f0%80%80%ae", PathError::Overlong),
            ("/a#b", PathError::Fragment),
            ("a/b", PathError::NotAbsolute),
        ];
        for (raw, want) in refused {
            assert_eq!(n(raw), Err(want), "{raw}");
        }
    }

    #[test]
    fn kept_slashes_are_data_and_forwarded_encoded() {
        fn k(raw: &str) -> Result<String, PathError> {
            normalize(raw, Slashes::Keep).map(Cow::into_owned)
        }
        assert_eq!(k("/ok/..%2fno").as_deref(), Ok("/ok/..%2Fno"));
        assert_eq!(k("/ok\\..\\no").as_deref(), Ok("/ok%5C..%5Cno"));
        assert_eq!(k("/a/%5c/../b").as_deref(), Ok("/a/b"));
        assert_eq!(k("/ok/..%2Fno").and_then(|p| k(&p).map(|q| q == p)), Ok(true));
    }

    #[test]
    fn unchanged_paths_are_borrowed() {
        assert!(matches!(normalize("/a/b.txt?x=%41", Slashes::Refuse), Ok(Cow::Borrowed(_))));
        assert!(matches!(normalize("/a/./b", Slashes::Refuse), Ok(Cow::Owned(_))));
    }
}
