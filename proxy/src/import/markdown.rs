//! The Markdown layer of the importer: turning the raw lines of a Microsoft Learn page into
//! blocks (table rows and cells, list items, block quotes, headings) and inline spans (plain
//! text, code spans, links) with Markdown escapes, HTML entities, bold markers and inline HTML
//! tags resolved. It also repairs the escape mistakes these pages contain (`\ *`, `\\*`, a
//! backslash inside a code span) and says which repair it made. It knows nothing about host
//! names beyond a "looks like a host name" test used to report names left in prose; turning a
//! token into a rule target is `endpoint`'s job, and deciding what a block means is
//! `ms_learn`'s.

/// An escape mistake found in the page and repaired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Repair {
    /// `\ *`: a backslash, a space, then the wildcard. Not a Markdown escape: the page shows a
    /// stray backslash. Read as `*`.
    BackslashSpaceStar,
    /// `\\*`: an escaped backslash followed by the wildcard. The page shows `\*`. Read as `*`.
    DoubleBackslashStar,
    /// `\*` inside a code span, where backslashes are literal: the page shows `\*`. Read as `*`.
    BackslashInCode,
}

impl Repair {
    /// What was wrong, quoting the source text.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::BackslashSpaceStar => {
                "`\\ *` is not a Markdown escape (the page shows a stray backslash); read as `*`"
            }
            Self::DoubleBackslashStar => {
                "`\\\\*` escapes the backslash, not the `*` (the page shows `\\*`); read as `*`"
            }
            Self::BackslashInCode => {
                "`\\*` inside a code span is shown literally (code spans take no escapes); read as `*`"
            }
        }
    }
}

/// What an inline span is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SpanKind {
    /// Ordinary text, escapes and entities resolved, tags and bold markers removed.
    Text,
    /// The content of a code span (backticks removed).
    Code,
    /// A Markdown link; `text` is its (flattened) link text, `target` where it points.
    Link,
}

/// One inline piece of Markdown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) kind: SpanKind,
    pub(crate) text: String,
    /// Link target; empty for text and code.
    pub(crate) target: String,
    /// Escape mistakes repaired inside this span.
    pub(crate) repairs: Vec<Repair>,
    /// For a code span, its content as written (before any repair); empty otherwise.
    pub(crate) raw: String,
}

impl Span {
    fn new(kind: SpanKind, text: String, repairs: Vec<Repair>) -> Self {
        Self { kind, text, target: String::new(), repairs, raw: String::new() }
    }
}

/// HTML tags the pages use for layout; any other `<...>` is literal text (a placeholder such as
/// `<tenant>` or `<FQDN for software update point on child site>`).
const HTML_TAGS: &[&str] = &[
    "a", "abbr", "b", "br", "code", "div", "em", "i", "img", "li", "ol", "p", "span", "strong", "sub", "sup", "table",
    "td", "th", "tr", "u", "ul",
];

/// Tags that split a table cell into separate entries.
const SPLIT_TAGS: &[&str] = &["br", "p", "ul", "ol", "li"];

/// If `chars[at]` opens an HTML tag from `tags` (or an HTML comment), the index just past its
/// end and the tag name (`"!--"` for a comment).
fn html_tag_at(chars: &[char], at: usize, tags: &[&str]) -> Option<(usize, String)> {
    if chars.get(at) != Some(&'<') {
        return None;
    }
    if chars.get(at + 1..at + 4) == Some(&['!', '-', '-'][..]) {
        let end = (at + 4..chars.len())
            .find(|&k| chars.get(k..k + 3) == Some(&['-', '-', '>'][..]))
            .map_or(chars.len(), |k| k + 3);
        return Some((end, "!--".to_owned()));
    }
    let mut j = at + 1;
    if chars.get(j) == Some(&'/') {
        j += 1;
    }
    let name_start = j;
    while chars.get(j).is_some_and(|c| c.is_ascii_alphanumeric()) {
        j += 1;
    }
    let name: String = chars.get(name_start..j)?.iter().collect::<String>().to_ascii_lowercase();
    if !tags.contains(&name.as_str()) {
        return None;
    }
    match chars.get(j) {
        Some('>') | Some(' ') | Some('/') | Some('\t') => {}
        _ => return None,
    }
    let close = (j..chars.len()).find(|&k| chars.get(k) == Some(&'>'))?;
    Some((close + 1, name))
}

/// The HTML entities the pages use.
const ENTITIES: &[(&str, char)] = &[
    ("&lt;", '<'),
    ("&gt;", '>'),
    ("&amp;", '&'),
    ("&quot;", '"'),
    ("&#39;", '\''),
    ("&apos;", '\''),
    ("&nbsp;", ' '),
    ("&#42;", '*'),
];

fn entity_at(chars: &[char], at: usize) -> Option<(usize, char)> {
    ENTITIES.iter().find_map(|(name, c)| {
        let n = name.chars().count();
        let candidate = chars.get(at..at + n)?;
        candidate.iter().copied().eq(name.chars()).then_some((at + n, *c))
    })
}

/// Index of the `)` closing the `(` at `open`, counting nested parentheses (link targets such as
/// `dd772723(v=ws.10)` contain them).
fn closing_paren(chars: &[char], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (k, c) in chars.iter().enumerate().skip(open) {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Some(k);
                }
            }
            _ => {}
        }
    }
    None
}

/// Splits one line (or cell) of Markdown into inline spans.
pub(crate) fn parse_inline(s: &str) -> Vec<Span> {
    let mut p = Inline { chars: s.chars().collect(), spans: Vec::new(), text: String::new(), repairs: Vec::new() };
    let mut i = 0;
    while let Some(&c) = p.chars.get(i) {
        i = match c {
            '\\' => p.escape(i),
            '`' => p.code(i),
            '*' if p.chars.get(i + 1) == Some(&'*') => i + 2,
            '&' => p.entity(i),
            '<' => p.tag(i),
            '[' => p.link(i),
            _ => {
                p.text.push(c);
                i + 1
            }
        };
    }
    p.flush();
    p.spans
}

/// [`parse_inline`]'s state: the line, the spans so far, and the text span being gathered with
/// its repairs. Each step reads the construct starting at an index and returns the index after
/// it.
struct Inline {
    chars: Vec<char>,
    spans: Vec<Span>,
    text: String,
    repairs: Vec<Repair>,
}

impl Inline {
    /// Ends the text span being gathered, if any.
    fn flush(&mut self) {
        if !self.text.is_empty() {
            self.spans.push(Span::new(
                SpanKind::Text,
                std::mem::take(&mut self.text),
                std::mem::take(&mut self.repairs),
            ));
        }
    }

    /// A backslash: an escape, one of the pages' escape mistakes (repaired), or itself.
    fn escape(&mut self, i: usize) -> usize {
        let next = self.chars.get(i + 1).copied();
        let after = self.chars.get(i + 2).copied();
        if next == Some('\\') && after == Some('*') {
            self.text.push('*');
            self.repairs.push(Repair::DoubleBackslashStar);
            i + 3
        } else if next == Some(' ') && after == Some('*') {
            self.text.push('*');
            self.repairs.push(Repair::BackslashSpaceStar);
            i + 3
        } else if let Some(p) = next.filter(char::is_ascii_punctuation) {
            self.text.push(p);
            i + 2
        } else {
            self.text.push('\\');
            i + 1
        }
    }

    /// A backtick run: a code span up to the next run of the same length, or (unclosed) text.
    fn code(&mut self, i: usize) -> usize {
        let chars = &self.chars;
        let run = chars[i..].iter().take_while(|&&b| b == '`').count();
        let open_end = i + run;
        let mut k = open_end;
        let mut close = None;
        while k < chars.len() {
            if chars.get(k) == Some(&'`') {
                let r = chars[k..].iter().take_while(|&&b| b == '`').count();
                if r == run {
                    close = Some(k);
                    break;
                }
                k += r;
            } else {
                k += 1;
            }
        }
        let Some(end) = close else {
            self.text.extend(std::iter::repeat_n('`', run));
            return open_end;
        };
        let mut code: String = chars[open_end..end].iter().collect();
        self.flush();
        if code.len() > 2 && code.starts_with(' ') && code.ends_with(' ') && !code.trim().is_empty() {
            code = code[1..code.len() - 1].to_owned();
        }
        let raw = code.clone();
        let mut code_repairs = Vec::new();
        if code.contains("\\*") {
            code = code.replace("\\*", "*");
            code_repairs.push(Repair::BackslashInCode);
        }
        let mut span = Span::new(SpanKind::Code, code, code_repairs);
        span.raw = raw;
        self.spans.push(span);
        end + run
    }

    /// `&`: an HTML entity the pages use, or itself.
    fn entity(&mut self, i: usize) -> usize {
        match entity_at(&self.chars, i) {
            Some((end, e)) => {
                self.text.push(e);
                end
            }
            None => {
                self.text.push('&');
                i + 1
            }
        }
    }

    /// `<`: an HTML tag (dropped; a line-breaking one becomes a space), or itself.
    fn tag(&mut self, i: usize) -> usize {
        match html_tag_at(&self.chars, i, HTML_TAGS) {
            Some((end, name)) => {
                if SPLIT_TAGS.contains(&name.as_str()) {
                    self.text.push(' ');
                }
                end
            }
            None => {
                self.text.push('<');
                i + 1
            }
        }
    }

    /// `[`: a link `[text](target)` (its text parsed in turn), or itself.
    fn link(&mut self, i: usize) -> usize {
        let chars = &self.chars;
        let close = (i + 1..chars.len()).find(|&k| chars.get(k) == Some(&']'));
        let link = close.and_then(|j| {
            (chars.get(j + 1) == Some(&'(')).then(|| closing_paren(chars, j + 1).map(|p| (j, p))).flatten()
        });
        let Some((j, p)) = link else {
            self.text.push('[');
            return i + 1;
        };
        let inner: String = chars[i + 1..j].iter().collect();
        let target: String = chars[j + 2..p].iter().collect();
        self.flush();
        self.spans.push(Span {
            kind: SpanKind::Link,
            text: flatten(&parse_inline(&inner)),
            target: target.trim().to_owned(),
            repairs: Vec::new(),
            raw: String::new(),
        });
        p + 1
    }
}

/// The spans' text run together (code without backticks, links as their text).
pub(crate) fn flatten(spans: &[Span]) -> String {
    spans.iter().map(|s| s.text.as_str()).collect()
}

/// The spans' text run together with whitespace collapsed: how a heading or row label reads.
pub(crate) fn plain(s: &str) -> String {
    flatten(&parse_inline(s)).split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Splits a table cell into its entries at `<br>`, `<p>`, `<ul>`, `<li>` (and closing) tags,
/// outside code spans. Entries are returned raw (still Markdown) and untrimmed.
pub(crate) fn split_cell(cell: &str) -> Vec<String> {
    let chars: Vec<char> = cell.chars().collect();
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut in_code = false;
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        if c == '`' {
            in_code = !in_code;
        }
        if !in_code {
            if let Some((end, _)) = html_tag_at(&chars, i, SPLIT_TAGS) {
                parts.push(std::mem::take(&mut cur));
                i = end;
                continue;
            }
        }
        cur.push(c);
        i += 1;
    }
    parts.push(cur);
    parts
}

/// Splits a table row into trimmed raw cells. Leading and trailing `|` are optional; `\|` and
/// `|` inside code spans do not split.
pub(crate) fn split_row(line: &str) -> Vec<String> {
    let mut t = line.trim();
    if let Some(rest) = t.strip_prefix('|') {
        t = rest;
    }
    if t.ends_with('|') && !t.ends_with("\\|") {
        t = &t[..t.len() - 1];
    }
    let mut cells = Vec::new();
    let mut cur = String::new();
    let mut in_code = false;
    let mut prev = '\0';
    for c in t.chars() {
        if c == '`' {
            in_code = !in_code;
        }
        if c == '|' && !in_code && prev != '\\' {
            cells.push(cur.trim().to_owned());
            cur.clear();
        } else {
            cur.push(c);
        }
        prev = c;
    }
    cells.push(cur.trim().to_owned());
    cells
}

/// Whether `line` is a table's header delimiter row (`| --- | :---: |`).
pub(crate) fn is_delimiter_row(line: &str) -> bool {
    if !line.contains('-') || !line.contains('|') && !line.trim_start().starts_with('-') {
        return false;
    }
    let cells = split_row(line);
    !cells.is_empty()
        && cells.iter().all(|c| {
            let c = c.trim_start_matches(':').trim_end_matches(':');
            !c.is_empty() && c.chars().all(|x| x == '-')
        })
}

/// A line with its block-quote markers removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Unquoted<'a> {
    /// Columns of indentation before the first `>` (or before the text when not quoted).
    pub(crate) indent: usize,
    /// How many `>` markers.
    pub(crate) depth: usize,
    /// The rest of the line.
    pub(crate) text: &'a str,
}

/// Strips block-quote markers (`>`, `> >`) from a line.
pub(crate) fn unquote(line: &str) -> Unquoted<'_> {
    let indent = line.len() - line.trim_start().len();
    let mut rest = line.trim_start();
    let mut depth = 0;
    while let Some(r) = rest.strip_prefix('>') {
        depth += 1;
        rest = r.strip_prefix(' ').unwrap_or(r);
        let trimmed = rest.trim_start();
        if trimmed.starts_with('>') {
            rest = trimmed;
        }
    }
    Unquoted { indent, depth, text: rest }
}

/// If `text` is a list item (`- x`, `* x`, `+ x`, `1. x`, `1) x`), its indentation and content.
pub(crate) fn list_item(text: &str) -> Option<(usize, &str)> {
    let indent = text.len() - text.trim_start().len();
    let t = text.trim_start();
    let mut chars = t.char_indices();
    let (_, first) = chars.next()?;
    let marker_end = if matches!(first, '-' | '*' | '+') {
        1
    } else if first.is_ascii_digit() {
        let digits = t.chars().take_while(char::is_ascii_digit).count();
        match t[digits..].chars().next() {
            Some('.') | Some(')') => digits + 1,
            _ => return None,
        }
    } else {
        return None;
    };
    let rest = &t[marker_end..];
    if !rest.starts_with(' ') && !rest.starts_with('\t') {
        return None;
    }
    Some((indent, rest.trim()))
}

/// If `text` is an ATX heading (`## Title`), its level and raw text.
pub(crate) fn heading(text: &str) -> Option<(usize, &str)> {
    let t = text.trim_start();
    let level = t.chars().take_while(|&c| c == '#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &t[level..];
    if !rest.is_empty() && !rest.starts_with(' ') {
        return None;
    }
    Some((level, rest.trim().trim_end_matches('#').trim_end()))
}

/// Splits spans into sentences at `.`, `!` or `?` followed by white space, inside plain text
/// only (never inside a code span or link). `e.g.` and `i.e.` do not end a sentence.
pub(crate) fn sentences(spans: &[Span]) -> Vec<Vec<Span>> {
    let mut out = Vec::new();
    let mut cur: Vec<Span> = Vec::new();
    for span in spans {
        if span.kind != SpanKind::Text {
            cur.push(span.clone());
            continue;
        }
        let chars: Vec<char> = span.text.chars().collect();
        let mut piece = String::new();
        for (k, &c) in chars.iter().enumerate() {
            piece.push(c);
            let ends = matches!(c, '.' | '!' | '?')
                && chars.get(k + 1).is_some_and(|n| n.is_whitespace())
                && !piece.to_ascii_lowercase().ends_with("e.g.")
                && !piece.to_ascii_lowercase().ends_with("i.e.");
            if ends {
                cur.push(Span::new(SpanKind::Text, std::mem::take(&mut piece), span.repairs.clone()));
                out.push(std::mem::take(&mut cur));
            }
        }
        if !piece.is_empty() {
            cur.push(Span::new(SpanKind::Text, piece, span.repairs.clone()));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Top-level domains a name mentioned in prose is recognised by (file names such as
/// `TestCloudConnection.exe` or `user-driven.md` are not names).
const PROSE_TLDS: &[&str] = &["com", "net", "org", "io", "ms", "gov", "edu", "us"];

/// Whether a word of prose looks like a host name (or a URL) someone could mean as an endpoint.
pub(crate) fn looks_like_host(word: &str) -> bool {
    let w = word.trim_matches(|c: char| "()[]{}\"',;:!?".contains(c));
    let w = w.trim_end_matches('.');
    let w = w.strip_prefix("https://").or_else(|| w.strip_prefix("http://")).unwrap_or(w);
    let host = w.split(['/', ':', '?']).next().unwrap_or_default();
    let labels: Vec<&str> = host.split('.').collect();
    if labels.len() < 2 || labels.iter().any(|l| l.is_empty()) {
        return false;
    }
    if !host.chars().all(|c| c.is_ascii_alphanumeric() || "-_*.".contains(c)) {
        return false;
    }
    labels.last().is_some_and(|tld| PROSE_TLDS.contains(&tld.to_ascii_lowercase().as_str()))
}

/// Words of plain text that look like host names, cleaned of surrounding punctuation.
pub(crate) fn host_like_words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .filter(|w| looks_like_host(w))
        .map(|w| w.trim_matches(|c: char| "()[]{}\"',;:!?".contains(c)).trim_end_matches('.').to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(spans: &[Span]) -> Vec<(SpanKind, &str)> {
        spans.iter().map(|s| (s.kind, s.text.as_str())).collect()
    }

    #[test]
    fn escaped_wildcard_is_plain_and_not_a_repair() {
        let spans = parse_inline(r"\*.lync.com");
        assert_eq!(kinds(&spans), vec![(SpanKind::Text, "*.lync.com")]);
        assert!(spans[0].repairs.is_empty());
    }

    #[test]
    fn backslash_space_star_is_repaired_and_reported() {
        let spans = parse_inline(r"\ *.oms.opinsights.azure.com ");
        assert_eq!(flatten(&spans).trim(), "*.oms.opinsights.azure.com");
        assert_eq!(spans[0].repairs, vec![Repair::BackslashSpaceStar]);
    }

    #[test]
    fn double_backslash_star_is_repaired_and_reported() {
        let spans = parse_inline(r"\\*.onenote.com");
        assert_eq!(flatten(&spans), "*.onenote.com");
        assert_eq!(spans[0].repairs, vec![Repair::DoubleBackslashStar]);
    }

    #[test]
    fn backslash_in_code_span_is_repaired_and_reported() {
        let spans = parse_inline(r"behind the URL: `\*.endpoint.security.microsoft.com`.");
        let code = spans.iter().find(|s| s.kind == SpanKind::Code).unwrap();
        assert_eq!(code.text, "*.endpoint.security.microsoft.com");
        assert_eq!(code.raw, r"\*.endpoint.security.microsoft.com");
        assert_eq!(code.repairs, vec![Repair::BackslashInCode]);
    }

    #[test]
    fn entities_and_escaped_angle_brackets_make_placeholders() {
        assert_eq!(flatten(&parse_inline("&lt;tenant>.onmicrosoft.com")), "<tenant>.onmicrosoft.com");
        assert_eq!(flatten(&parse_inline(r"\<tenant\>-my.sharepoint.com")), "<tenant>-my.sharepoint.com");
        // An unknown tag is literal text (a placeholder), a known one is removed.
        assert_eq!(flatten(&parse_inline("<a name='x'></a>http://<FQDN for x>")), "http://<FQDN for x>");
    }

    #[test]
    fn bold_markers_and_comments_are_removed() {
        assert_eq!(flatten(&parse_inline("UDP port **123** to<!-- 1 --> x")), "UDP port 123 to x");
    }

    #[test]
    fn links_keep_text_and_target_with_nested_parentheses() {
        let spans = parse_inline("see [AD ports](/x/dd772723(v=ws.10)) now");
        assert_eq!(spans[1].kind, SpanKind::Link);
        assert_eq!(spans[1].text, "AD ports");
        assert_eq!(spans[1].target, "/x/dd772723(v=ws.10)");
        assert_eq!(spans[2].text, " now");
    }

    #[test]
    fn cells_split_at_br_p_and_li() {
        let parts = split_cell("a.com <br>b.com<br/>c.com<p>d.com</p>");
        let trimmed: Vec<&str> = parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()).collect();
        assert_eq!(trimmed, vec!["a.com", "b.com", "c.com", "d.com"]);
        let li = split_cell("<ul><li>x.com</li><li>y.com</li></ul>");
        let li: Vec<&str> = li.iter().map(|p| p.trim()).filter(|p| !p.is_empty()).collect();
        assert_eq!(li, vec!["x.com", "y.com"]);
    }

    #[test]
    fn rows_with_or_without_outer_pipes() {
        assert_eq!(split_row("| a | b |"), vec!["a", "b"]);
        assert_eq!(split_row("Get Help | x.com <br>y.com"), vec!["Get Help", "x.com <br>y.com"]);
        assert_eq!(split_row("| a | `b|c` | d"), vec!["a", "`b|c`", "d"]);
        assert!(is_delimiter_row("| ----- | ----- |"));
        assert!(is_delimiter_row("|---|---|---|---|"));
        assert!(!is_delimiter_row("| a | b |"));
    }

    #[test]
    fn block_quotes_lists_and_headings() {
        let q = unquote("    > [!IMPORTANT]");
        assert_eq!((q.indent, q.depth, q.text), (4, 1, "[!IMPORTANT]"));
        assert_eq!(list_item("- `a.com`"), Some((0, "`a.com`")));
        assert_eq!(list_item("   - Location: x"), Some((3, "Location: x")));
        assert_eq!(list_item("1. Run it"), Some((0, "Run it")));
        assert_eq!(list_item("*.blob.core.windows.net"), None);
        assert_eq!(list_item("**Applies to:**"), None);
        assert_eq!(heading("### Proxy ##"), Some((3, "Proxy")));
        assert_eq!(heading("#tag"), None);
    }

    #[test]
    fn sentences_split_outside_code_only() {
        let spans = parse_inline("Needs `a.b.com`. For example, `c.d.com` is needed, e.g. here.");
        let s = sentences(&spans);
        assert_eq!(s.len(), 2);
        assert_eq!(flatten(&s[0]), "Needs a.b.com.");
        assert_eq!(flatten(&s[1]).trim(), "For example, c.d.com is needed, e.g. here.");
    }

    #[test]
    fn host_like_words_skip_file_names_and_versions() {
        assert_eq!(
            host_like_words(&plain("the **x.azureedge.net** domain; run TestCloudConnection.exe 1.2.3.4")),
            vec!["x.azureedge.net"]
        );
        assert_eq!(host_like_words("changes to the *.blob.core.windows.net URLs"), vec!["*.blob.core.windows.net"]);
    }
}
