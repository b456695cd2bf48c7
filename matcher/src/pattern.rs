//! Pattern parsing: the grammar of rules, normalised exactly like hosts.
//!
//! This module owns the text of a pattern and its classification into the shapes the matcher
//! compiles separately (exact names, `*.suffix`, and the rare glob shapes). It does not index
//! anything.

use std::fmt;

use crate::error::{BuildError, BuildErrorKind};
use crate::host::{to_ascii, MAX_LABEL, MAX_NAME};

/// A parsed, normalised pattern: lowercase ASCII (punycode for IDNs), one trailing dot removed,
/// a leading dot kept; and whether its leftmost `*` stands for exactly one label
/// ([`Pattern::one_label`]). Two patterns are equal when both their text and that flag are.
///
/// ```
/// use hostgate_matcher::Pattern;
/// assert_eq!(Pattern::new("*.LYNC.com.").unwrap().as_str(), "*.lync.com");
/// assert!(Pattern::new("mail.*").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pattern {
    text: String,
    /// The leftmost label is `*` and stands for exactly one host label, not one or more. Never
    /// set with a leading dot.
    one_label: bool,
}

/// How specific a match is. Exact patterns beat every wildcard pattern; otherwise the pattern with
/// more literal (non-`*`) bytes, dots included, wins. Equal values are a tie.
///
/// `Ord` sorts the most specific last: `a > b` means `a` wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Specificity {
    exact: bool,
    literal: u16,
}

impl Specificity {
    pub(crate) const fn new(exact: bool, literal: usize) -> Specificity {
        // Patterns are at most 253 bytes (+2 for an expanded leading dot).
        Specificity { exact, literal: literal as u16 }
    }

    /// True when the pattern (or the expansion of a `.d` pattern that matched) has no `*`.
    pub fn is_exact(self) -> bool {
        self.exact
    }

    /// The number of non-`*` bytes of the pattern, dots included.
    pub fn literal_len(self) -> usize {
        usize::from(self.literal)
    }
}

impl fmt::Display for Specificity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.exact {
            write!(f, "exact/{}", self.literal)
        } else {
            write!(f, "wildcard/{}", self.literal)
        }
    }
}

/// The forms a pattern compiles to. A `.d` pattern yields the forms of `d` and of `*.d`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Form<'a> {
    /// No wildcard: the whole host must equal this.
    Exact(&'a str),
    /// `*.suffix` with a literal suffix: a proper label suffix of the host must equal this.
    Suffix(&'a str),
    /// `*.suffix` with a literal suffix whose `*` is exactly one label ([`Pattern::one_label`]):
    /// the host minus its first label must equal this.
    OneLabel(&'a str),
    /// Anything else. `tail` is the longest all-literal label suffix (never empty, since the top
    /// label is literal), `head` the labels before it (never empty, contains a `*`). With
    /// `one_label`, the head's leftmost label is `*` and stands for exactly one label.
    Glob { head: &'a str, tail: &'a str, one_label: bool },
}

impl<'a> Form<'a> {
    /// The form of a pattern body (no leading dot); `one_label` only when it starts with `*.`.
    fn of(body: &'a str, one_label: bool) -> Form<'a> {
        if !body.contains('*') {
            return Form::Exact(body);
        }
        if let Some(rest) = body.strip_prefix("*.") {
            if !rest.contains('*') {
                return if one_label { Form::OneLabel(rest) } else { Form::Suffix(rest) };
            }
        }
        // The last '*' is in a label before the tail; the tail starts after the next dot.
        let star = body.rfind('*').unwrap_or(0);
        let dot = body[star..].find('.').map_or(body.len(), |d| star + d);
        Form::Glob { head: &body[..dot], tail: &body[(dot + 1).min(body.len())..], one_label }
    }

    /// The specificity of a match by this form. Whether the leftmost `*` is one label or more
    /// does not change it: it counts literal bytes.
    pub(crate) fn specificity(&self) -> Specificity {
        match *self {
            Form::Exact(s) => Specificity::new(true, s.len()),
            Form::Suffix(s) | Form::OneLabel(s) => Specificity::new(false, s.len() + 1),
            Form::Glob { head, tail, .. } => {
                Specificity::new(false, head.bytes().filter(|&b| b != b'*').count() + 1 + tail.len())
            }
        }
    }
}

impl Pattern {
    /// Parses and normalises a pattern. See the crate documentation for the grammar.
    ///
    /// # Errors
    /// A [`BuildError`] quoting `pattern` when it is not a valid pattern.
    pub fn new(pattern: &str) -> Result<Pattern, BuildError> {
        Pattern::from_string(pattern.to_string())
    }

    /// Like [`Pattern::new`], reusing the string's allocation for the normalised text.
    ///
    /// # Errors
    /// A [`BuildError`] quoting the pattern when it is not a valid pattern.
    pub fn from_string(pattern: String) -> Result<Pattern, BuildError> {
        let text = if pattern.is_ascii() {
            if let Err(kind) = validate(pattern.as_bytes()) {
                return Err(BuildError { pattern, index: None, kind });
            }
            let mut text = pattern;
            text.make_ascii_lowercase();
            text
        } else {
            match from_unicode(&pattern) {
                Ok(text) => text,
                Err(kind) => return Err(BuildError { pattern, index: None, kind }),
            }
        };
        let mut text = text;
        if text.ends_with('.') {
            text.pop();
        }
        Ok(Pattern { text, one_label: false })
    }

    /// This pattern with its leftmost whole-label `*` standing for exactly one label instead of
    /// one or more: `*.onmicrosoft.com` made so matches `contoso.onmicrosoft.com`, but neither
    /// `a.contoso.onmicrosoft.com` nor (like any `*.` pattern) `onmicrosoft.com`. Every other `*`
    /// keeps its meaning, which is already one label or less (`*.*.x.com` made so matches
    /// exactly two labels above `x.com`). There is no text for this form: a caller that knows a
    /// label is a single name (an unset `<tenant>` placeholder, say) asks for it.
    ///
    /// The text ([`as_str`](Self::as_str)) is unchanged; [`Display`](fmt::Display) writes the
    /// leftmost label as `<*>` (`<*>.onmicrosoft.com`), which is not pattern syntax, so that the
    /// two forms never print alike and the printed form cannot be parsed back as the wider one.
    /// The specificity is the unflagged pattern's (the same literal bytes): where both match,
    /// they tie. Calling it again is a no-op.
    ///
    /// ```
    /// use hostgate_matcher::{MatcherBuilder, Pattern};
    /// let one = Pattern::new("*.onmicrosoft.com").unwrap().one_label().unwrap();
    /// assert!(one.is_leftmost_one_label());
    /// assert_eq!(one.as_str(), "*.onmicrosoft.com");
    /// assert_eq!(one.to_string(), "<*>.onmicrosoft.com");
    /// assert_ne!(one, Pattern::new("*.onmicrosoft.com").unwrap());
    /// let mut b = MatcherBuilder::new();
    /// b.add_pattern(one, ());
    /// let m = b.build().unwrap();
    /// assert!(m.find("contoso.onmicrosoft.com").unwrap().is_some());
    /// assert!(m.find("a.b.onmicrosoft.com").unwrap().is_none());
    /// assert!(m.find("onmicrosoft.com").unwrap().is_none());
    /// assert!(Pattern::new("api.*.x.com").unwrap().one_label().is_err());
    /// ```
    ///
    /// # Errors
    /// [`BuildErrorKind::OneLabelNeedsLeftmostStar`], quoting the pattern's text, when its
    /// leftmost label is not exactly `*` (`a.*.x.com`, `fe*.x.com`, `x.com`) or it has a
    /// leading dot (`.*.x.com`: its `*.*.x.com` half would need a second kind of `*`).
    pub fn one_label(self) -> Result<Pattern, BuildError> {
        if !self.text.starts_with("*.") {
            return Err(BuildError {
                pattern: self.text,
                index: None,
                kind: BuildErrorKind::OneLabelNeedsLeftmostStar,
            });
        }
        Ok(Pattern { one_label: true, ..self })
    }

    /// Whether the leftmost `*` stands for exactly one label ([`Pattern::one_label`]).
    pub fn is_leftmost_one_label(&self) -> bool {
        self.one_label
    }

    /// The normalised text (lowercase, punycode, no trailing dot; a leading dot is kept). It does
    /// not say whether the leftmost `*` is one label ([`Pattern::is_leftmost_one_label`]).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when the pattern has no `*` and no leading dot.
    pub fn is_exact(&self) -> bool {
        !self.text.contains('*') && !self.text.starts_with('.')
    }

    /// The specificity of a match by this pattern. For a `.d` pattern this is the specificity of
    /// its `*.d` expansion; a match of the bare `d` expansion has the specificity of the exact
    /// pattern `d`. A [`one_label`](Self::one_label) pattern has the same specificity as the
    /// pattern without the flag.
    pub fn specificity(&self) -> Specificity {
        match self.text.strip_prefix('.') {
            Some(body) => Specificity::new(false, body.bytes().filter(|&b| b != b'*').count() + 1),
            None => Specificity::new(!self.text.contains('*'), self.text.bytes().filter(|&b| b != b'*').count()),
        }
    }

    /// The forms this pattern compiles to: one, or two for a leading-dot pattern. The second
    /// string of a leading-dot pattern is built into `scratch`.
    pub(crate) fn forms<'s>(&'s self, scratch: &'s mut String) -> (Form<'s>, Option<Form<'s>>) {
        match self.text.strip_prefix('.') {
            None => (Form::of(&self.text, self.one_label), None),
            // `one_label` is never set on a leading-dot pattern.
            Some(body) => {
                scratch.clear();
                scratch.push_str("*.");
                scratch.push_str(body);
                (Form::of(body, false), Some(Form::of(scratch, false)))
            }
        }
    }
}

/// The class of each byte in a pattern.
const NAME: u8 = 1;
const DOT: u8 = 2;
const STAR: u8 = 3;
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = match b as u8 {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => NAME,
            b'.' => DOT,
            b'*' => STAR,
            _ => 0,
        };
        b += 1;
    }
    t
};

/// Checks an ASCII pattern in one pass (case-insensitively; the caller lowercases it after).
fn validate(pattern: &[u8]) -> Result<(), BuildErrorKind> {
    let body = pattern.strip_prefix(b".").unwrap_or(pattern);
    let body = body.strip_suffix(b".").unwrap_or(body);
    if body.is_empty() {
        return Err(BuildErrorKind::Empty);
    }
    if body == b"*" {
        return Err(BuildErrorKind::LoneWildcard);
    }
    let (mut label, mut star_in_label, mut prev_star) = (0usize, false, false);
    for &c in body {
        match CLASS[usize::from(c)] {
            NAME => {
                label += 1;
                prev_star = false;
            }
            STAR => {
                if prev_star {
                    return Err(BuildErrorKind::DoubleWildcard);
                }
                label += 1;
                prev_star = true;
                star_in_label = true;
            }
            DOT => {
                if label == 0 {
                    return Err(BuildErrorKind::EmptyLabel);
                }
                label = 0;
                prev_star = false;
                star_in_label = false;
            }
            _ => return Err(BuildErrorKind::InvalidCharacter(char::from(c))),
        }
        if label > MAX_LABEL {
            return Err(BuildErrorKind::LabelTooLong);
        }
    }
    if label == 0 {
        return Err(BuildErrorKind::EmptyLabel);
    }
    if star_in_label {
        return Err(BuildErrorKind::WildcardInTopLabel);
    }
    if body.len() > MAX_NAME {
        return Err(BuildErrorKind::NameTooLong);
    }
    Ok(())
}

/// Converts a Unicode pattern to its ASCII form with IDNA (UTS 46), then checks it.
fn from_unicode(pattern: &str) -> Result<String, BuildErrorKind> {
    let (dot, rest) = match pattern.strip_prefix('.') {
        Some(rest) => (".", rest),
        None => ("", pattern),
    };
    for label in rest.split(['.', '\u{3002}', '\u{ff0e}', '\u{ff61}']) {
        if !label.is_ascii() && label.contains('*') {
            return Err(BuildErrorKind::WildcardInIdnLabel);
        }
    }
    if let Some(c) = rest.chars().find(|c| c.is_ascii() && CLASS[*c as usize] == 0) {
        return Err(BuildErrorKind::InvalidCharacter(c));
    }
    let ascii = to_ascii(rest).ok_or(BuildErrorKind::Idna)?;
    let text = format!("{dot}{ascii}");
    validate(text.as_bytes())?;
    Ok(text)
}

/// The normalised text, except that a [`one_label`](Pattern::one_label) pattern's leftmost `*`
/// is written `<*>` (`<*>.onmicrosoft.com`): not pattern syntax, so such a pattern does not
/// round-trip through [`FromStr`](std::str::FromStr), which fails rather than widening it.
impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.text.strip_prefix('*').filter(|_| self.one_label) {
            Some(rest) => write!(f, "<*>{rest}"),
            None => f.write_str(&self.text),
        }
    }
}

impl std::str::FromStr for Pattern {
    type Err = BuildError;
    fn from_str(s: &str) -> Result<Pattern, BuildError> {
        Pattern::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(p: &str) -> BuildErrorKind {
        Pattern::new(p).unwrap_err().kind().clone()
    }

    #[test]
    fn normalises() {
        assert_eq!(Pattern::new("*.LYNC.com.").unwrap().as_str(), "*.lync.com");
        assert_eq!(Pattern::new(".Lync.com").unwrap().as_str(), ".lync.com");
        assert_eq!(Pattern::new("*.Bücher.example").unwrap().as_str(), "*.xn--bcher-kva.example");
        assert_eq!(Pattern::new("Fe*.example.com").unwrap().as_str(), "fe*.example.com");
    }

    #[test]
    fn rejects() {
        assert_eq!(err(""), BuildErrorKind::Empty);
        assert_eq!(err("."), BuildErrorKind::Empty);
        assert_eq!(err("*"), BuildErrorKind::LoneWildcard);
        assert_eq!(err(".*"), BuildErrorKind::LoneWildcard);
        assert_eq!(err("**.com"), BuildErrorKind::DoubleWildcard);
        assert_eq!(err("a**b.com"), BuildErrorKind::DoubleWildcard);
        assert_eq!(err("mail.*"), BuildErrorKind::WildcardInTopLabel);
        assert_eq!(err("a.c*m"), BuildErrorKind::WildcardInTopLabel);
        assert_eq!(err("*.*"), BuildErrorKind::WildcardInTopLabel);
        assert_eq!(err("a..b"), BuildErrorKind::EmptyLabel);
        assert_eq!(err("..a"), BuildErrorKind::EmptyLabel);
        assert_eq!(err("a.b.."), BuildErrorKind::EmptyLabel);
        assert_eq!(err(&format!("{}.com", "a".repeat(64))), BuildErrorKind::LabelTooLong);
        let long = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(62)].join(".");
        assert_eq!(err(&long), BuildErrorKind::NameTooLong);
        assert_eq!(err("a b.com"), BuildErrorKind::InvalidCharacter(' '));
        assert_eq!(err("\\*.com"), BuildErrorKind::InvalidCharacter('\\'));
        assert_eq!(err("https://a.com"), BuildErrorKind::InvalidCharacter(':'));
        assert_eq!(err("<tenant>.x.com"), BuildErrorKind::InvalidCharacter('<'));
        assert_eq!(err("*ü.example"), BuildErrorKind::WildcardInIdnLabel);
        let e = Pattern::new("mail.*").unwrap_err();
        assert_eq!(e.pattern(), "mail.*");
        assert_eq!(e.to_string(), "invalid pattern \"mail.*\": the top-level (rightmost) label cannot contain `*`");
    }

    #[test]
    fn forms_and_specificity() {
        let mut s = String::new();
        let p = Pattern::new("login.live.com").unwrap();
        assert_eq!(p.forms(&mut s), (Form::Exact("login.live.com"), None));
        let p = Pattern::new("*.lync.com").unwrap();
        assert_eq!(p.forms(&mut s).0, Form::Suffix("lync.com"));
        assert_eq!(p.specificity(), Specificity::new(false, 9));
        let p = Pattern::new("*cdn.onenote.net").unwrap();
        assert_eq!(p.forms(&mut s).0, Form::Glob { head: "*cdn", tail: "onenote.net", one_label: false });
        assert_eq!(p.forms(&mut s).0.specificity(), Specificity::new(false, 15));
        let p = Pattern::new("api.*.example.com").unwrap();
        assert_eq!(p.forms(&mut s).0, Form::Glob { head: "api.*", tail: "example.com", one_label: false });
        let p = Pattern::new("*.*.onedrive.live.com").unwrap();
        assert_eq!(p.forms(&mut s).0, Form::Glob { head: "*.*", tail: "onedrive.live.com", one_label: false });
        let p = Pattern::new(".lync.com").unwrap();
        assert_eq!(p.specificity(), Specificity::new(false, 9));
        let mut s2 = String::new();
        let (a, b) = p.forms(&mut s2);
        assert_eq!((a, b), (Form::Exact("lync.com"), Some(Form::Suffix("lync.com"))));
        let p = Pattern::new(".*.x.com").unwrap();
        let (a, b) = p.forms(&mut s);
        assert_eq!((a, b), (Form::Suffix("x.com"), Some(Form::Glob { head: "*.*", tail: "x.com", one_label: false })));
        assert!(Specificity::new(true, 3) > Specificity::new(false, 200));
        assert!(Specificity::new(false, 10) > Specificity::new(false, 9));
    }

    #[test]
    fn one_label() {
        let one = |p: &str| Pattern::new(p).unwrap().one_label();
        let mut s = String::new();
        let p = one("*.Lync.com").unwrap();
        assert!(p.is_leftmost_one_label() && !Pattern::new("*.lync.com").unwrap().is_leftmost_one_label());
        assert_eq!((p.as_str(), p.to_string()), ("*.lync.com", "<*>.lync.com".to_string()));
        assert_eq!(p.forms(&mut s), (Form::OneLabel("lync.com"), None));
        assert_eq!(p.specificity(), Pattern::new("*.lync.com").unwrap().specificity());
        assert_eq!(p.forms(&mut s).0.specificity(), Specificity::new(false, 9));
        assert_ne!(p, Pattern::new("*.lync.com").unwrap());
        assert_eq!(p.clone().one_label().unwrap(), p, "idempotent");
        assert!(Pattern::new(&p.to_string()).is_err(), "the display form is not pattern text");
        let p = one("*.*.x.com").unwrap();
        assert_eq!(p.forms(&mut s).0, Form::Glob { head: "*.*", tail: "x.com", one_label: true });
        assert_eq!(p.to_string(), "<*>.*.x.com");
        let p = one("*.fe*.x.com").unwrap();
        assert_eq!(p.forms(&mut s).0, Form::Glob { head: "*.fe*", tail: "x.com", one_label: true });
        for bad in ["x.com", "fe*.x.com", "*a.x.com", "a.*.x.com", ".*.x.com", ".x.com"] {
            let e = one(bad).unwrap_err();
            assert_eq!(e.kind(), &BuildErrorKind::OneLabelNeedsLeftmostStar, "{bad}");
            assert_eq!(e.pattern(), Pattern::new(bad).unwrap().as_str());
        }
        assert_eq!(
            one("a.*.x.com").unwrap_err().to_string(),
            "invalid pattern \"a.*.x.com\": only a leftmost label that is exactly `*` (and no leading dot) can stand for exactly one label"
        );
    }
}
