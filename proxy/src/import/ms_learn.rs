//! Reading a Microsoft Learn network-requirements page: which parts of it list endpoints, and
//! what each listed name becomes. It walks the page's blocks (headings, tables, list items,
//! paragraphs, notes) and takes names only from
//!
//! - table cells in endpoint columns (a header naming URLs, endpoints, domains, hosts, FQDNs or
//!   resources), one entry per `<br>`/`<p>`/`<li>` piece, names broken across a `<br>` joined
//!   again (and checked against their siblings);
//! - list items that are endpoints: code spans or a lone name, after at most a short label
//!   (`Intel:`), with a parenthesised note kept as a comment;
//! - code spans in a sentence that says the name must be reachable ("ensure", "must", "needs",
//!   "access", "format", ...), unless the sentence gives it "for example" (not an endpoint),
//!   says "don't"/"never" (a statement about how to treat it: "don't exclude `x` from
//!   inspection" makes `x` stay inspected) or speaks of UDP (not proxied: a comment only).
//!
//! Everything else is prose; a name in prose that is not taken is reported. The walk then turns
//! each name into a target (`endpoint`), drops duplicates, asks `policy` for the action, and
//! reports every repair and judgement with its source line. Rendering the rule file is
//! `render`'s job.

use std::collections::HashMap;

use super::endpoint::{self, Note, Reject, Target};
use super::front_matter::{self, FrontMatter};
use super::markdown::{self, Repair, Span, SpanKind};
use super::policy::{self, Context};
use super::report::{Counts, Finding, FindingKind};
use crate::policy::Action;

/// Words in a table header marking a column of endpoints.
const ENDPOINT_HEADER_WORDS: &[&str] = &[
    "url",
    "urls",
    "endpoint",
    "endpoints",
    "domain",
    "domains",
    "host",
    "hosts",
    "hostname",
    "hostnames",
    "fqdn",
    "fqdns",
    "resource",
    "resources",
];

/// Cues of a sentence saying a name must be reachable.
const REQUIREMENT_CUES: &[&str] = &[
    "ensure",
    "make sure",
    "must",
    "need",
    "require",
    "allow",
    "accessible",
    "access",
    "communicate",
    "format",
    "reach",
    "connect",
];

/// Cues of a name given as an example of a format.
const EXAMPLE_CUES: &[&str] = &["for example", "e.g.", "for instance", "such as"];

/// Cues of a sentence telling what not to do with a name.
const NEGATIVE_OPENERS: &[&str] = &["don't", "do not", "never"];

/// Words in a list item's label marking an old location.
const SUPERSEDED_WORDS: &[&str] = &["before", "formerly", "previously", "old", "deprecated", "retired"];

/// The longest label (in words, colon included) a list item may put before its endpoints.
const MAX_LABEL_WORDS: usize = 6;

/// One entry of the generated file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// A rule: its action, target and comment.
    Rule { action: Action, target: String, comment: Option<String> },
    /// A name written only as a comment, with why.
    Comment(String),
}

/// The entries that came from one table row, or from one section's lists and prose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Group {
    /// The nearest heading and its line.
    pub(crate) section: Option<(String, usize)>,
    /// The table row (or table) the entries came from.
    pub(crate) label: Option<String>,
    pub(crate) entries: Vec<Entry>,
}

/// A page, read.
#[derive(Clone, Debug)]
pub(crate) struct Page {
    pub(crate) front: FrontMatter,
    pub(crate) groups: Vec<Group>,
    pub(crate) findings: Vec<Finding>,
    pub(crate) counts: Counts,
}

/// Why a page cannot be read at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unusable {
    NoFrontMatter,
    NoTitle,
}

/// What happens to a name once it is a target.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Disposition {
    Rule,
    /// Not a connection the gateway sees (UDP); the protocol and port.
    NotProxied(String),
    /// An old location; the label saying so.
    Superseded(String),
}

/// A name found on the page, before it is parsed.
#[derive(Clone, Debug)]
struct Candidate {
    token: String,
    /// As the page wrote it, for messages.
    written: String,
    line: usize,
    group: usize,
    disposition: Disposition,
    bypass_column: Option<(bool, usize)>,
    port: Option<u16>,
    annotation: Option<String>,
    cipher_note: Option<usize>,
}

/// A name mentioned in prose and not taken; reported after the walk, which knows whether the
/// name was imported from elsewhere.
#[derive(Clone, Debug)]
struct Mention {
    name: String,
    line: usize,
    why: String,
}

/// The list item the walk saw last, for notes indented under it.
#[derive(Clone, Debug)]
struct LastItem {
    candidates: std::ops::Range<usize>,
}

/// A table's column roles.
#[derive(Clone, Debug, Default)]
struct Columns {
    endpoints: Vec<usize>,
    label: Option<usize>,
    port: Option<usize>,
    direction: Option<usize>,
    bypass: Option<usize>,
}

impl Columns {
    fn of(header: &[String]) -> Self {
        let mut cols = Self::default();
        for (i, h) in header.iter().enumerate() {
            let lower = h.to_lowercase();
            let words: Vec<&str> =
                lower.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect();
            if words.contains(&"bypass") && (words.contains(&"inspection") || words.contains(&"https")) {
                cols.bypass = Some(i);
            } else if words.iter().any(|w| ENDPOINT_HEADER_WORDS.contains(w)) {
                cols.endpoints.push(i);
            } else if words.iter().any(|w| *w == "port" || *w == "ports") {
                cols.port = Some(i);
            } else if words.contains(&"direction") {
                cols.direction = Some(i);
            }
        }
        if let Some(&first) = cols.endpoints.first() {
            cols.label = (0..first).find(|i| Some(*i) != cols.port && Some(*i) != cols.bypass);
        }
        cols
    }
}

/// One piece of a table cell (between `<br>`s), reduced to what it holds.
#[derive(Clone, Debug)]
enum Piece {
    Empty,
    /// Names, each with its annotation.
    Names(Vec<(String, Option<String>)>),
    /// Only links.
    Links(Vec<Span>),
    /// Words that are not a name.
    Prose(String),
}

/// One piece of an endpoint cell: as written (trimmed), what it holds, and the escape mistakes
/// repaired in it.
type CellPiece = (String, Piece, Vec<Repair>);

/// An endpoint cell being read: its pieces, its whole names, where it is.
struct Cell<'a> {
    pieces: &'a [CellPiece],
    /// The cell's whole names, for repairing a broken one (see [`whole_names`]).
    siblings: &'a [String],
    line: usize,
    group: usize,
}

/// A cell's pieces (split at `<br>`), each classified: empty, only links, names, or prose.
fn cell_pieces(raw_cell: &str) -> Vec<CellPiece> {
    let raws = markdown::split_cell(raw_cell);
    let mut pieces = Vec::new();
    for raw in &raws {
        let spans = markdown::parse_inline(raw);
        let repairs: Vec<Repair> = spans.iter().flat_map(|s| s.repairs.iter().copied()).collect();
        let piece = if markdown::flatten(&spans).trim().is_empty() {
            Piece::Empty
        } else if spans.iter().all(|s| s.kind == SpanKind::Link || s.text.trim().is_empty()) {
            Piece::Links(spans.into_iter().filter(|s| s.kind == SpanKind::Link).collect())
        } else {
            match names_in(&spans) {
                Some(names) => Piece::Names(names),
                None => Piece::Prose(markdown::flatten(&spans)),
            }
        };
        pieces.push((raw.trim().to_owned(), piece, repairs));
    }
    pieces
}

/// Whole names of the cell (lowercased), for the sibling check of a repaired break: not the
/// pieces of a break (one ending in `-`, or the piece after it).
fn whole_names(pieces: &[CellPiece]) -> Vec<String> {
    let lone = |p: &Piece| match p {
        Piece::Names(n) if n.len() == 1 => n.first().map(|(t, _)| t.to_lowercase()),
        _ => None,
    };
    let mut siblings = Vec::new();
    let mut after_break = false;
    for (_, piece, _) in pieces {
        if matches!(piece, Piece::Empty) {
            continue;
        }
        let name = lone(piece);
        let breaks = name.as_deref().is_some_and(|n| n.ends_with('-'));
        if let Some(n) = name.filter(|_| !breaks && !after_break) {
            siblings.push(n);
        }
        after_break = breaks;
    }
    siblings
}

/// Splits spans into the names they hold: every code span, or else a lone word; a trailing
/// parenthesised text is the annotation. `None` when the spans are prose.
fn names_in(spans: &[Span]) -> Option<Vec<(String, Option<String>)>> {
    let codes: Vec<&Span> = spans.iter().filter(|s| s.kind == SpanKind::Code).collect();
    let annotation = |tail: &str| {
        let t = tail.trim().trim_end_matches('.').trim();
        (t.starts_with('(') && t.ends_with(')') && t.len() > 2).then(|| t[1..t.len() - 1].trim().to_owned())
    };
    if !codes.is_empty() {
        let last = spans.iter().rposition(|s| s.kind == SpanKind::Code).unwrap_or_default();
        let tail = markdown::flatten(spans.get(last + 1..).unwrap_or_default());
        let note = annotation(&tail);
        return Some(codes.iter().map(|c| (c.text.trim().to_owned(), note.clone())).collect());
    }
    if spans.iter().any(|s| s.kind == SpanKind::Link) {
        return None;
    }
    let flat = markdown::flatten(spans);
    let flat = flat.trim();
    if flat.is_empty() {
        return Some(Vec::new());
    }
    if endpoint::parse(flat) != Err(Reject::Prose) {
        return Some(vec![(flat.to_owned(), None)]);
    }
    let (first, rest) = flat.split_once(char::is_whitespace)?;
    let note = annotation(rest)?;
    matches!(endpoint::parse(first), Ok(_) | Err(Reject::IpAddress(_))).then(|| vec![(first.to_owned(), Some(note))])
}

/// Whether a token from a code span in prose is meant as an endpoint.
fn endpoint_like(token: &str) -> bool {
    match endpoint::parse(token) {
        Ok(_) | Err(Reject::IpAddress(_)) => true,
        Err(_) => markdown::looks_like_host(token),
    }
}

fn contains_any(haystack: &str, needles: &[&str]) -> bool {
    needles.iter().any(|n| haystack.contains(n))
}

/// The first number after `after` in `text`.
fn number_after(text: &str, after: &str) -> Option<String> {
    let start = text.find(after)? + after.len();
    let digits: String =
        text[start..].chars().skip_while(|c| !c.is_ascii_digit()).take_while(char::is_ascii_digit).collect();
    (!digits.is_empty()).then_some(digits)
}

/// Lines with HTML comments blanked out (keeping line numbers).
fn strip_comments(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_comment = false;
    for line in text.lines() {
        let mut kept = String::new();
        let mut rest = line;
        loop {
            if in_comment {
                match rest.find("-->") {
                    Some(end) => {
                        rest = &rest[end + 3..];
                        in_comment = false;
                    }
                    None => break,
                }
            } else {
                match rest.find("<!--") {
                    Some(start) => {
                        kept.push_str(&rest[..start]);
                        rest = &rest[start + 4..];
                        in_comment = true;
                    }
                    None => {
                        kept.push_str(rest);
                        break;
                    }
                }
            }
        }
        out.push(kept);
    }
    out
}

struct Walker<'a> {
    source: &'a str,
    lines: Vec<String>,
    headings: Vec<(usize, String, usize)>,
    groups: Vec<Group>,
    candidates: Vec<Candidate>,
    mentions: Vec<Mention>,
    findings: Vec<Finding>,
    page_inspected: Vec<(String, usize)>,
    last_item: Option<LastItem>,
    counts: Counts,
}

impl Walker<'_> {
    fn find(&mut self, line: usize, kind: FindingKind, message: String) {
        self.findings.push(Finding { source: self.source.to_owned(), line, kind, message });
    }

    fn section(&self) -> Option<(String, usize)> {
        self.headings.last().map(|(_, text, line)| (text.clone(), *line))
    }

    /// The group for entries under the current heading with `label`.
    fn group(&mut self, label: Option<String>) -> usize {
        let section = self.section();
        if let Some(last) = self.groups.last() {
            if last.section == section && last.label == label {
                return self.groups.len() - 1;
            }
        }
        self.groups.push(Group { section, label, entries: Vec::new() });
        self.groups.len() - 1
    }

    fn report_repairs(&mut self, line: usize, written: &str, repairs: &[Repair]) {
        for r in repairs {
            self.find(line, FindingKind::Escape, format!("`{written}`: {}", r.describe()));
        }
    }

    fn candidate(&mut self, token: String, written: String, line: usize, group: usize) -> usize {
        self.candidates.push(Candidate {
            token,
            written,
            line,
            group,
            disposition: Disposition::Rule,
            bypass_column: None,
            port: None,
            annotation: None,
            cipher_note: None,
        });
        self.candidates.len() - 1
    }

    fn walk(&mut self, body_start: usize) {
        let mut i = body_start;
        let mut fence: Option<String> = None;
        while i < self.lines.len() {
            let line_no = i + 1;
            let raw = self.lines[i].clone();
            let q = markdown::unquote(&raw);
            let text = q.text;
            let trimmed = text.trim();
            if let Some(marker) = &fence {
                if trimmed.starts_with(marker.as_str()) {
                    fence = None;
                }
                i += 1;
                continue;
            }
            if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
                fence = Some(trimmed[..3].to_owned());
                i += 1;
                continue;
            }
            if trimmed.is_empty() {
                i += 1;
                continue;
            }
            if q.depth == 0 {
                if let Some((level, h)) = markdown::heading(text) {
                    while self.headings.last().is_some_and(|(l, _, _)| *l >= level) {
                        self.headings.pop();
                    }
                    self.headings.push((level, markdown::plain(h), line_no));
                    self.last_item = None;
                    i += 1;
                    continue;
                }
            }
            let next_is_delimiter =
                self.lines.get(i + 1).is_some_and(|n| markdown::is_delimiter_row(markdown::unquote(n).text));
            if text.contains('|') && next_is_delimiter {
                i = self.table(i);
                self.last_item = None;
                continue;
            }
            if let Some((_, item)) = markdown::list_item(text) {
                self.list_item(line_no, item);
            } else {
                self.paragraph(line_no, text, q.indent);
            }
            i += 1;
        }
    }

    /// Reads the table whose header is line `start` (0-based); returns the index after it.
    fn table(&mut self, start: usize) -> usize {
        let header_raw = markdown::unquote(&self.lines[start]).text.to_owned();
        let header: Vec<String> = markdown::split_row(&header_raw).iter().map(|c| markdown::plain(c)).collect();
        let cols = Columns::of(&header);
        let mut end = start + 2;
        while let Some(l) = self.lines.get(end) {
            let t = markdown::unquote(l).text;
            if t.trim().is_empty() || !t.contains('|') {
                break;
            }
            end += 1;
        }
        let rows = end - (start + 2);
        let header_text = header.join(" | ");
        if cols.endpoints.is_empty() {
            self.find(
                start + 1,
                FindingKind::SkippedTable,
                format!("table `{header_text}` has no endpoint column: its {rows} rows are not read"),
            );
            return end;
        }
        for r in start + 2..end {
            let line_no = r + 1;
            let row_raw = markdown::unquote(&self.lines[r]).text.to_owned();
            let cells = markdown::split_row(&row_raw);
            let cell = |i: Option<usize>| i.and_then(|i| cells.get(i)).map(|c| markdown::plain(c));
            let ports_note = if cols.port.is_some() { "; port from its Ports column" } else { "" };
            let label = match cell(cols.label) {
                Some(l) if !l.is_empty() => format!("{l} (table row, line {line_no}{ports_note})"),
                _ => format!("table `{header_text}` (line {}{ports_note})", start + 1),
            };
            if let Some(dir) = cell(cols.direction) {
                let d = dir.to_lowercase();
                if d.contains("inbound") && !d.contains("outbound") {
                    self.find(
                        line_no,
                        FindingKind::SkippedRow,
                        format!("row is for inbound connections (`{dir}`): not egress, not read"),
                    );
                    continue;
                }
            }
            let bypass = cell(cols.bypass).and_then(|v| match v.to_lowercase().as_str() {
                "yes" => Some((true, line_no)),
                "no" => Some((false, line_no)),
                _ => None,
            });
            let mut port = None;
            let mut not_proxied = None;
            if let Some(p) = cell(cols.port) {
                let lower = p.to_lowercase();
                let numbers: Vec<&str> = lower.split(|c: char| !c.is_ascii_digit()).filter(|n| !n.is_empty()).collect();
                if lower.contains("udp") {
                    not_proxied = Some(format!("UDP {}", numbers.join(", ")).trim().to_owned());
                } else if let [one] = numbers.as_slice() {
                    port = one.parse::<u16>().ok().filter(|&n| n != 0);
                }
            }
            let group = self.group(Some(label));
            for &c in &cols.endpoints {
                let Some(raw_cell) = cells.get(c) else {
                    continue;
                };
                let first = self.candidates.len();
                self.cell(raw_cell, line_no, group);
                for cand in &mut self.candidates[first..] {
                    cand.bypass_column = bypass;
                    cand.port = port;
                    if let Some(np) = &not_proxied {
                        cand.disposition = Disposition::NotProxied(np.clone());
                    }
                }
            }
        }
        end
    }

    /// Reads one endpoint cell: its pieces, names broken across a `<br>`, links and prose.
    fn cell(&mut self, raw_cell: &str, line: usize, group: usize) {
        let pieces = cell_pieces(raw_cell);
        let siblings = whole_names(&pieces);
        let mut k = 0;
        while k < pieces.len() {
            let (written, piece, repairs) = pieces[k].clone();
            k += 1;
            match piece {
                Piece::Empty => {}
                Piece::Links(links) => {
                    for l in links {
                        self.counts.skipped += 1;
                        self.find(
                            line,
                            FindingKind::Link,
                            format!(
                                "[{}]({}) is a link to another page, not an endpoint: not imported",
                                l.text, l.target
                            ),
                        );
                    }
                }
                Piece::Prose(text) => {
                    for name in markdown::host_like_words(&text) {
                        self.mentions.push(Mention {
                            name,
                            line,
                            why: "is in a sentence in an endpoint column, not listed on its own".to_owned(),
                        });
                    }
                }
                Piece::Names(names) => {
                    self.report_repairs(line, &written, &repairs);
                    let cell = Cell { pieces: &pieces, siblings: &siblings, line, group };
                    k = self.cell_names(&cell, k, names, written);
                }
            }
        }
    }

    /// A piece of names from `cell`, the piece before index `k`: a lone name ending in `-` is
    /// joined with the pieces after it (a name broken across a line break,
    /// `groupsapi-<br>rod.outlookgroups.ms`) and repaired; then each name is a candidate.
    /// Returns the index of the first piece not used.
    fn cell_names(
        &mut self,
        cell: &Cell<'_>,
        mut k: usize,
        mut names: Vec<(String, Option<String>)>,
        mut written: String,
    ) -> usize {
        let pieces = cell.pieces;
        if let [(token, note)] = names.as_slice() {
            let mut token = token.clone();
            let mut join_at = None;
            while token.ends_with('-') {
                let next = (k..pieces.len()).find(|&j| !matches!(pieces[j].1, Piece::Empty));
                let Some(j) = next else { break };
                let Piece::Names(next_names) = &pieces[j].1 else {
                    break;
                };
                let [(next_token, _)] = next_names.as_slice() else {
                    break;
                };
                join_at = Some(token.len());
                token.push_str(next_token);
                written = format!("{written}<br>{}", pieces[j].0);
                self.report_repairs(cell.line, &pieces[j].0, &pieces[j].2);
                k = j + 1;
            }
            if let Some(at) = join_at {
                token = self.rejoin(cell.line, &written, &token, at, cell.siblings);
            }
            names = vec![(token, note.clone())];
        }
        for (token, note) in names {
            let c = self.candidate(token, written.clone(), cell.line, cell.group);
            if let Some(cand) = self.candidates.get_mut(c) {
                cand.annotation = note;
            }
        }
        k
    }

    /// Reports a name joined across a line break, repairing it from its siblings when the
    /// break also lost a character; returns the name to use.
    fn rejoin(&mut self, line: usize, written: &str, joined: &str, at: usize, siblings: &[String]) -> String {
        let lower = joined.to_lowercase();
        match endpoint::repair_split_label(&lower, at, siblings) {
            Some(repaired) => {
                let (_, parent) = repaired.split_once('.').unwrap_or_default();
                let family: Vec<&str> = siblings
                    .iter()
                    .filter(|s| s.split_once('.').is_some_and(|(_, p)| p == parent))
                    .map(String::as_str)
                    .collect();
                self.find(
                    line,
                    FindingKind::BrokenName,
                    format!(
                        "`{written}` is one name broken by a line break; joined it reads `{joined}`, \
                         which does not follow its siblings ({}): the break also lost a character, \
                         read as `{repaired}`",
                        family.join(", ")
                    ),
                );
                repaired
            }
            None => {
                self.find(
                    line,
                    FindingKind::BrokenName,
                    format!("`{written}` is one name broken by a line break: joined as `{joined}`"),
                );
                joined.to_owned()
            }
        }
    }

    fn list_item(&mut self, line: usize, item: &str) {
        let spans = markdown::parse_inline(item);
        let first_code = spans.iter().position(|s| s.kind == SpanKind::Code);
        let lead = markdown::flatten(spans.get(..first_code.unwrap_or(spans.len())).unwrap_or_default());
        let lead = lead.trim().to_owned();
        let lead_is_label =
            lead.is_empty() || (lead.ends_with(':') && lead.split_whitespace().count() <= MAX_LABEL_WORDS);
        let names = if first_code.is_none() || lead_is_label { names_in(&spans) } else { None };
        let Some(names) = names.filter(|n| !n.is_empty()) else {
            self.last_item = None;
            self.prose(line, &spans);
            return;
        };
        let lead_lower = lead.to_lowercase();
        let superseded = lead_lower.split(|c: char| !c.is_alphanumeric()).any(|w| SUPERSEDED_WORDS.contains(&w));
        let group = self.group(None);
        let first = self.candidates.len();
        for (token, note) in names {
            let code = spans.iter().find(|s| s.kind == SpanKind::Code && s.text.trim() == token);
            if let Some(code) = code {
                let (raw, repairs) = (code.raw.clone(), code.repairs.clone());
                self.report_repairs(line, &raw, &repairs);
            } else {
                let repairs: Vec<Repair> = spans.iter().flat_map(|s| s.repairs.iter().copied()).collect();
                self.report_repairs(line, item, &repairs);
            }
            if first_code.is_none() && endpoint::parse(&token).is_err() && !markdown::looks_like_host(&token) {
                continue;
            }
            let c = self.candidate(token, item.to_owned(), line, group);
            if let Some(cand) = self.candidates.get_mut(c) {
                cand.annotation = note;
                if superseded {
                    cand.disposition = Disposition::Superseded(lead.trim_end_matches(':').to_owned());
                }
            }
        }
        let end = self.candidates.len();
        self.last_item = (end > first).then_some(LastItem { candidates: first..end });
    }

    fn paragraph(&mut self, line: usize, text: &str, indent: usize) {
        let trimmed = text.trim();
        let lower = trimmed.to_lowercase();
        if lower.starts_with("[!include") {
            let spans = markdown::parse_inline(trimmed);
            let path = spans
                .iter()
                .find(|s| s.kind == SpanKind::Link)
                .map_or_else(|| trimmed.to_owned(), |s| s.target.clone());
            self.find(
                line,
                FindingKind::Include,
                format!("`{path}` is included from another file: its endpoints are not in this page, not imported"),
            );
            return;
        }
        if lower.starts_with(":::") || (lower.starts_with("[!") && lower.ends_with(']')) {
            return;
        }
        // A note indented under a list item speaks about that item.
        if indent >= 2 {
            if let Some(item) = self.last_item.clone() {
                if lower.contains("cipher suite") {
                    for cand in &mut self.candidates[item.candidates] {
                        cand.cipher_note = Some(line);
                    }
                }
                return;
            }
        }
        self.last_item = None;
        let spans = markdown::parse_inline(trimmed);
        self.prose(line, &spans);
    }

    /// Reads sentences of prose: code spans that the sentence says must be reachable are taken.
    fn prose(&mut self, line: usize, spans: &[Span]) {
        for sentence in markdown::sentences(spans) {
            let words: String = sentence
                .iter()
                .map(|s| if s.kind == SpanKind::Code { " `` " } else { s.text.as_str() })
                .collect::<String>()
                .to_lowercase()
                .replace('’', "'");
            let opener = words.trim_start();
            let negative = NEGATIVE_OPENERS.iter().any(|n| opener.starts_with(n));
            for (idx, span) in sentence.iter().enumerate() {
                match span.kind {
                    SpanKind::Text => {
                        for name in markdown::host_like_words(&span.text) {
                            self.mentions.push(Mention {
                                name,
                                line,
                                why: "is named in prose, not listed as an endpoint".to_owned(),
                            });
                        }
                    }
                    SpanKind::Link => {}
                    SpanKind::Code => {
                        let token = span.text.trim().to_owned();
                        if !endpoint_like(&token) {
                            continue;
                        }
                        self.report_repairs(line, &span.raw, &span.repairs);
                        let before: String = sentence[..idx]
                            .iter()
                            .filter(|s| s.kind != SpanKind::Code)
                            .map(|s| s.text.to_lowercase())
                            .collect();
                        let sentence_text = markdown::flatten(&sentence);
                        let quote = sentence_text.trim();
                        if let Some(cue) = EXAMPLE_CUES.iter().find(|c| before.contains(*c)) {
                            self.counts.skipped += 1;
                            self.find(
                                line,
                                FindingKind::Example,
                                format!("`{token}` is given as an example (\"{cue}\" in \"{quote}\"), not an endpoint: not imported"),
                            );
                        } else if negative {
                            if words.contains("inspection") || words.contains("scanning") {
                                self.page_inspected.push((token.to_lowercase(), line));
                                self.find(
                                    line,
                                    FindingKind::Policy,
                                    format!(
                                        "\"{quote}\": rules for `{token}` and the names under it are `allow` (inspected) on this page"
                                    ),
                                );
                            } else {
                                self.counts.skipped += 1;
                                self.find(
                                    line,
                                    FindingKind::SkippedProse,
                                    format!(
                                        "`{token}` is in a sentence saying what not to do (\"{quote}\"): not imported"
                                    ),
                                );
                            }
                        } else if words.contains("udp") {
                            let port = number_after(&words, "udp").map_or_else(String::new, |p| format!(" port {p}"));
                            let group = self.group(None);
                            let c = self.candidate(token, format!("`{}`", span.text), line, group);
                            if let Some(cand) = self.candidates.get_mut(c) {
                                cand.disposition = Disposition::NotProxied(format!("UDP{port}"));
                            }
                        } else if contains_any(&words, REQUIREMENT_CUES) {
                            let group = self.group(None);
                            self.candidate(token, format!("`{}`", span.text), line, group);
                        } else {
                            self.mentions.push(Mention {
                                name: token,
                                line,
                                why: format!(
                                    "is mentioned in a sentence that does not say it must be reachable (\"{quote}\")"
                                ),
                            });
                        }
                    }
                }
            }
        }
    }

    /// Turns candidates into entries: parse, drop duplicates, decide actions; then reports the
    /// names mentioned in prose.
    fn build(&mut self) {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut hosts: HashMap<String, usize> = HashMap::new();
        let candidates = std::mem::take(&mut self.candidates);
        for cand in &candidates {
            let line = cand.line;
            let Some(target) = self.target(cand) else { continue };
            let key = target.to_string();
            let comment_only = self.comment_only(cand, &key);
            if let Some(&first) = seen.get(&key) {
                self.counts.duplicates += 1;
                self.find(
                    line,
                    FindingKind::Duplicate,
                    format!("`{key}` is already listed on line {first}: emitted once"),
                );
                continue;
            }
            seen.insert(key.clone(), line);
            hosts.entry(target.host.clone()).or_insert(line);
            if let Some(text) = comment_only {
                self.counts.comment_only += 1;
                self.push(cand.group, Entry::Comment(text));
                continue;
            }
            self.rule(cand, &target, key);
        }
        self.report_mentions(&hosts);
    }

    /// A candidate's rule target (the row's port when it has none), its notes reported; `None`,
    /// reported, when it is an IP address (a comment entry) or not a target at all.
    fn target(&mut self, cand: &Candidate) -> Option<Target> {
        let line = cand.line;
        let parsed = match endpoint::parse(&cand.token) {
            Ok(p) => p,
            Err(Reject::IpAddress(addr)) => {
                self.counts.comment_only += 1;
                self.find(
                    line,
                    FindingKind::NotProxied,
                    format!("`{addr}` is an IP address: the gateway decides by host name; written as a comment only"),
                );
                self.push(
                    cand.group,
                    Entry::Comment(format!("not imported: {addr} (an IP address; the gateway decides by host name)")),
                );
                return None;
            }
            Err(why) => {
                self.counts.skipped += 1;
                self.find(
                    line,
                    FindingKind::Invalid,
                    format!("`{}` is not a rule target ({why}): not imported", cand.token),
                );
                return None;
            }
        };
        let mut target: Target = parsed.target;
        if target.port.is_none() {
            target.port = cand.port;
        }
        for note in &parsed.notes {
            self.note(line, &cand.written, &target, note);
        }
        Some(target)
    }

    /// The comment a candidate is written as instead of a rule (not proxied, an old location),
    /// reported; `None` for a rule.
    fn comment_only(&mut self, cand: &Candidate, key: &str) -> Option<String> {
        match &cand.disposition {
            Disposition::Rule => None,
            Disposition::NotProxied(how) => {
                self.find(
                    cand.line,
                    FindingKind::NotProxied,
                    format!(
                        "`{key}` is reached over {how}, which the gateway does not proxy: written as a comment only"
                    ),
                );
                Some(format!("not imported: {key} ({how}; not a connection the gateway sees)"))
            }
            Disposition::Superseded(label) => {
                self.find(
                    cand.line,
                    FindingKind::Superseded,
                    format!("`{key}` is listed as an old location (\"{label}\"): written as a comment only"),
                );
                Some(format!("not imported: {key} (old location: \"{label}\")"))
            }
        }
    }

    /// A rule entry for a new target: its action decided, counted, and its reasons reported and
    /// written next to it.
    fn rule(&mut self, cand: &Candidate, target: &Target, key: String) {
        let line = cand.line;
        let ctx = Context {
            bypass_column: cand.bypass_column,
            page_inspected: &self.page_inspected,
            cipher_note: cand.cipher_note,
        };
        let decision = policy::decide(target, &ctx);
        match decision.action {
            Action::Allow => self.counts.allow += 1,
            Action::Bypass => self.counts.bypass += 1,
            Action::Deny => self.counts.deny += 1,
        }
        if !decision.reasons.is_empty() {
            self.find(
                line,
                FindingKind::Judgement,
                format!("`{} {key}`: {}", decision.action, decision.reasons.join("; ")),
            );
        }
        if decision.unknown_owner {
            self.find(
                line,
                FindingKind::UnknownOwner,
                format!("the owner of `{key}` is not in the importer's tables: `allow` (inspected); review it"),
            );
        }
        let mut comment: Vec<String> = cand.annotation.iter().cloned().collect();
        comment.extend(decision.reasons);
        self.push(
            cand.group,
            Entry::Rule {
                action: decision.action,
                target: key,
                comment: (!comment.is_empty()).then(|| comment.join("; ")),
            },
        );
    }

    /// The names mentioned in prose and not taken, each saying whether the page lists it
    /// elsewhere (`hosts`: imported host → its line).
    fn report_mentions(&mut self, hosts: &HashMap<String, usize>) {
        for m in std::mem::take(&mut self.mentions) {
            let imported = endpoint::parse(&m.name).ok().and_then(|p| hosts.get(&p.target.host).copied());
            let tail = imported.map_or_else(
                || "not imported".to_owned(),
                |l| format!("not imported from here (the page lists it on line {l})"),
            );
            self.counts.skipped += usize::from(imported.is_none());
            self.find(m.line, FindingKind::SkippedProse, format!("`{}` {}: {tail}", m.name, m.why));
        }
    }

    fn note(&mut self, line: usize, written: &str, target: &Target, note: &Note) {
        if let Some((kind, message)) = note.finding(written, target) {
            self.find(line, kind, message);
        }
    }

    fn push(&mut self, group: usize, entry: Entry) {
        if let Some(g) = self.groups.get_mut(group) {
            g.entries.push(entry);
        }
    }
}

/// Reads a page.
pub(crate) fn read(source: &str, text: &str) -> Result<Page, Unusable> {
    let lines = strip_comments(text);
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let (front, body_start) = front_matter::parse(&refs).ok_or(Unusable::NoFrontMatter)?;
    if front.title.is_none() {
        return Err(Unusable::NoTitle);
    }
    let mut w = Walker {
        source,
        lines,
        headings: Vec::new(),
        groups: Vec::new(),
        candidates: Vec::new(),
        mentions: Vec::new(),
        findings: Vec::new(),
        page_inspected: Vec::new(),
        last_item: None,
        counts: Counts::default(),
    };
    if front.date.is_none() {
        w.find(1, FindingKind::MissingDate, "the front matter has no ms.date: the header says so".to_owned());
    }
    w.walk(body_start);
    w.build();
    w.findings.sort_by_key(|f| f.line);
    Ok(Page { front, groups: w.groups, findings: w.findings, counts: w.counts })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a page with a minimal front matter (4 lines: the body starts on line 5).
    fn read_body(body: &str) -> Page {
        read("t.md", &format!("---\ntitle: T\nms.date: 01/02/2024\n---\n{body}")).unwrap()
    }

    /// Every entry as `action target` or `# comment`, in order.
    fn entries(page: &Page) -> Vec<String> {
        page.groups
            .iter()
            .flat_map(|g| &g.entries)
            .map(|e| match e {
                Entry::Rule { action, target, .. } => format!("{action} {target}"),
                Entry::Comment(text) => format!("# {text}"),
            })
            .collect()
    }

    /// The findings of `kind` as `line: message`.
    fn found(page: &Page, kind: FindingKind) -> Vec<String> {
        page.findings.iter().filter(|f| f.kind == kind).map(|f| format!("{}: {}", f.line, f.message)).collect()
    }

    #[test]
    fn table_cells_split_at_br_p_and_li_rows_with_or_without_pipes() {
        let page = read_body(
            "## S\n\n| Service | URLs |\n| --- | --- |\n\
             | A | a.microsoft.com <br>b.microsoft.com<p>c.microsoft.com</p>\n\
             B | <ul><li>d.microsoft.com</li></ul>|\n",
        );
        assert_eq!(
            entries(&page),
            ["bypass a.microsoft.com", "bypass b.microsoft.com", "bypass c.microsoft.com", "bypass d.microsoft.com"]
        );
        let labels: Vec<_> = page.groups.iter().map(|g| g.label.clone().unwrap()).collect();
        assert_eq!(labels, ["A (table row, line 9)", "B (table row, line 10)"]);
        assert_eq!(page.groups[0].section, Some(("S".to_owned(), 5)));
        assert!(page.findings.is_empty(), "{:?}", page.findings);
    }

    #[test]
    fn links_in_an_endpoint_column_are_reported_not_imported() {
        let page =
            read_body("| Service | URLs |\n|---|---|\n| A | [Intune endpoints](/mem/intune)<p><p>x.microsoft.com |\n");
        assert_eq!(entries(&page), ["bypass x.microsoft.com"]);
        assert_eq!(
            found(&page, FindingKind::Link),
            ["7: [Intune endpoints](/mem/intune) is a link to another page, not an endpoint: not imported"]
        );
        assert_eq!(page.counts.skipped, 1);
    }

    #[test]
    fn a_table_without_an_endpoint_column_is_reported() {
        let page = read_body("| Service | Documentation |\n|---|---|\n| A | [doc](/d) |\n");
        assert!(entries(&page).is_empty());
        assert_eq!(
            found(&page, FindingKind::SkippedTable),
            ["5: table `Service | Documentation` has no endpoint column: its 1 rows are not read"]
        );
    }

    #[test]
    fn names_broken_across_br_are_joined_and_checked_against_siblings() {
        let page = read_body(
            "| Service | URLs |\n|---|---|\n\
             | A | groupsapi-<br>rod.outlookgroups.ms<br>groupsapi2-prod.outlookgroups.ms<br>groupsapi3-prod.outlookgroups.ms |\n\
             | B | scsquery-ss- <br>us.trafficmanager.net  <br>scsquery-ss-eu.trafficmanager.net |\n",
        );
        assert_eq!(
            entries(&page),
            [
                "bypass groupsapi-prod.outlookgroups.ms",
                "bypass groupsapi2-prod.outlookgroups.ms",
                "bypass groupsapi3-prod.outlookgroups.ms",
                "bypass scsquery-ss-us.trafficmanager.net",
                "bypass scsquery-ss-eu.trafficmanager.net",
            ]
        );
        let broken = found(&page, FindingKind::BrokenName);
        assert_eq!(broken.len(), 2);
        assert!(broken[0].starts_with("7: `groupsapi-<br>rod.outlookgroups.ms` is one name"));
        assert!(broken[0].contains("read as `groupsapi-prod.outlookgroups.ms`"));
        assert!(broken[0].contains("(groupsapi2-prod.outlookgroups.ms, groupsapi3-prod.outlookgroups.ms)"));
        assert_eq!(
            broken[1],
            "8: `scsquery-ss-<br>us.trafficmanager.net` is one name broken by a line break: joined as `scsquery-ss-us.trafficmanager.net`"
        );
    }

    #[test]
    fn escapes_are_resolved_and_mistakes_reported() {
        let page = read_body(
            "| Service | URLs |\n|---|---|\n\
             | A | \\*.lync.com <br>\\ *.svc.ms <br>\\\\*.onenote.com <br>\\*.\\*.onedrive.live.com |\n",
        );
        assert_eq!(
            entries(&page),
            ["bypass *.lync.com", "bypass *.svc.ms", "bypass *.onenote.com", "bypass *.*.onedrive.live.com"]
        );
        let escapes = found(&page, FindingKind::Escape);
        assert_eq!(escapes.len(), 2, "{escapes:?}");
        assert!(escapes[0].starts_with("7: `\\ *.svc.ms`: `\\ *` is not a Markdown escape"));
        assert!(escapes[1].starts_with("7: `\\\\*.onenote.com`: `\\\\*` escapes the backslash"));
    }

    #[test]
    fn entities_escaped_brackets_and_placeholders() {
        let page = read_body(
            "| Service | URLs |\n|---|---|\n| A | &lt;tenant>.onmicrosoft.com<br>\\<tenant\\>-my.sharepoint.com |\n",
        );
        assert_eq!(entries(&page), ["bypass <tenant>.onmicrosoft.com", "bypass <tenant>-my.sharepoint.com"]);
        let placeholders = found(&page, FindingKind::Placeholder);
        assert_eq!(placeholders.len(), 2);
        assert!(placeholders[0].contains("define `tenant` in [vars]"));
    }

    #[test]
    fn bullet_lists_with_schemes_ports_paths_labels_and_notes() {
        let page = read_body(
            "## Updates\n\n- `http://*.windowsupdate.com`\n\n\
             - Intel: `https://ekop.intel.com/ekcertservice`\n\
             - `management.azure.com` (Azure public cloud)\n\
             - `https://*.<RegionName>.logic.azure.com:443`\n\
             - **Bold** item without a name\n\
             - Location before March 2, 2021: `https://old.office.net/a.cab`\n",
        );
        assert_eq!(
            entries(&page),
            [
                "bypass http://*.windowsupdate.com",
                "allow https://ekop.intel.com/ekcertservice",
                "bypass management.azure.com",
                "bypass https://*.<regionname>.logic.azure.com:443",
                "# not imported: https://old.office.net/a.cab (old location: \"Location before March 2, 2021\")",
            ]
        );
        let Entry::Rule { comment, .. } = &page.groups[0].entries[2] else { panic!() };
        assert_eq!(comment.as_deref(), Some("Azure public cloud"));
        assert_eq!(found(&page, FindingKind::Superseded).len(), 1);
        assert!(found(&page, FindingKind::Judgement)[0].contains("third party (Intel, TPM vendor)"));
    }

    #[test]
    fn prose_takes_required_names_and_skips_examples_udp_and_mentions() {
        let page = read_body(
            "Make sure the URL `lgmsapeweu.blob.core.windows.net` isn't blocked.\n\n\
             The format is `https://*.<RegionName>.logic.azure.com:443`. For example: `https://prod1.westus2.logic.azure.com:443`\n\n\
             Ensure that UDP port **123** to `time.windows.com` is accessible.\n\n\
             Services are consolidated behind the URL: `\\*.endpoint.security.microsoft.com`.\n\n\
             The **configmgrbits.azureedge.net** domain migrates. Run `C:\\Program Files\\x` now.\n",
        );
        assert_eq!(
            entries(&page),
            [
                "allow lgmsapeweu.blob.core.windows.net",
                "bypass https://*.<regionname>.logic.azure.com:443",
                "# not imported: time.windows.com (UDP port 123; not a connection the gateway sees)",
            ]
        );
        assert_eq!(
            found(&page, FindingKind::Example),
            ["7: `https://prod1.westus2.logic.azure.com:443` is given as an example (\"for example\" in \"For example: https://prod1.westus2.logic.azure.com:443\"), not an endpoint: not imported"]
        );
        assert_eq!(found(&page, FindingKind::NotProxied).len(), 1);
        assert!(
            found(&page, FindingKind::NotProxied)[0].starts_with("9: `time.windows.com` is reached over UDP port 123")
        );
        let skipped = found(&page, FindingKind::SkippedProse);
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(skipped[0].starts_with("11: `*.endpoint.security.microsoft.com` is mentioned in a sentence"));
        assert!(skipped[1].starts_with("13: `configmgrbits.azureedge.net` is named in prose"));
        assert_eq!(found(&page, FindingKind::Escape).len(), 1);
        assert_eq!(page.counts.comment_only, 1);
    }

    #[test]
    fn a_dont_exclude_sentence_keeps_the_name_inspected_over_its_table() {
        let page = read_body(
            "Don't exclude the URL `*.blob.core.windows.net` from any kind of network inspection.\n\n\
             |Agent Resource|Ports|Direction|Bypass HTTPS inspection|\n|---|---|---|---|\n\
             |`*.ods.opinsights.azure.com`|Port 443|Outbound|Yes|\n\
             |`*.blob.core.windows.net`|Port 443|Outbound|Yes|\n\
             |`x.microsoft.com`|Port 443|Outbound|No|\n\
             |`in.microsoft.com`|Port 443|Inbound|Yes|\n\
             |`ntp.microsoft.com`|UDP 123|Outbound|Yes|\n",
        );
        assert_eq!(
            entries(&page),
            [
                "bypass *.ods.opinsights.azure.com:443",
                "allow *.blob.core.windows.net:443",
                "allow x.microsoft.com:443",
                "# not imported: ntp.microsoft.com (UDP 123; not a connection the gateway sees)",
            ]
        );
        assert_eq!(found(&page, FindingKind::Policy).len(), 1);
        let judgements = found(&page, FindingKind::Judgement);
        assert!(judgements[1].starts_with("10: `allow *.blob.core.windows.net:443`: kept inspected: line 5 says"));
        assert!(judgements[1].contains("overrides the table's \"Bypass HTTPS inspection: Yes\" on line 10"));
        assert!(judgements[2].contains("\"Bypass HTTPS inspection: No\" (line 11)"));
        assert_eq!(found(&page, FindingKind::SkippedRow).len(), 1);
    }

    #[test]
    fn duplicates_mixed_case_and_trailing_slashes() {
        let page = read_body(
            "| Service | URLs |\n|---|---|\n\
             | A | ajax.aspnetcdn.com <br>token.cp.microsoft.com/ |\n\
             | B | Ajax.aspnetcdn.com <br>*.microsoft.com<br>\\*.microsoft.com |\n",
        );
        assert_eq!(
            entries(&page),
            ["bypass ajax.aspnetcdn.com", "bypass token.cp.microsoft.com", "bypass *.microsoft.com"]
        );
        assert_eq!(
            found(&page, FindingKind::Duplicate),
            [
                "8: `ajax.aspnetcdn.com` is already listed on line 7: emitted once",
                "8: `*.microsoft.com` is already listed on line 8: emitted once"
            ]
        );
        assert_eq!(
            found(&page, FindingKind::MixedCase),
            ["8: `Ajax.aspnetcdn.com` has upper-case letters: lowercased to `ajax.aspnetcdn.com`"]
        );
        assert_eq!(found(&page, FindingKind::TrailingSlash).len(), 1);
        assert_eq!(page.counts.duplicates, 2);
    }

    #[test]
    fn whole_host_placeholders_are_inactive_rules_and_ip_addresses_comments() {
        let page = read_body("- `http://<FQDN for software update point on child site>`\n- `13.107.6.152/31`\n");
        assert_eq!(
            entries(&page),
            [
                "allow http://<fqdn-for-software-update-point-on-child-site>",
                "# not imported: 13.107.6.152 (an IP address; the gateway decides by host name)",
            ]
        );
        assert_eq!(
            found(&page, FindingKind::PlaceholderHost),
            ["5: `http://<fqdn-for-software-update-point-on-child-site>`: the whole host is a placeholder (your own server): the rule is inactive until [vars] defines `fqdn-for-software-update-point-on-child-site`"]
        );
        assert!(found(&page, FindingKind::Placeholder).is_empty());
        assert_eq!(found(&page, FindingKind::NotProxied).len(), 1);
    }

    #[test]
    fn a_note_under_an_item_about_cipher_suites_is_recorded() {
        let page = read_body(
            "- `configmgrbits.cdn.manage.microsoft.com`\n\n    > [!IMPORTANT]\n    > This Azure endpoint only supports TLS 1.2 with specific cipher suites.<!-- 1 -->\n\n- `b.microsoft.com`\n",
        );
        let Entry::Rule { action, comment, .. } = &page.groups[0].entries[0] else { panic!() };
        assert_eq!(*action, Action::Bypass);
        assert!(comment.as_deref().unwrap().contains("specific cipher suites (line 8)"));
        let Entry::Rule { comment, .. } = &page.groups[0].entries[1] else { panic!() };
        assert_eq!(comment, &None);
    }

    #[test]
    fn includes_missing_dates_and_unusable_pages() {
        let page = read("t.md", "---\ntitle: T\n---\n[!INCLUDE [Endpoints](includes/endpoints.md)]\n").unwrap();
        assert_eq!(
            found(&page, FindingKind::Include),
            ["4: `includes/endpoints.md` is included from another file: its endpoints are not in this page, not imported"]
        );
        assert_eq!(found(&page, FindingKind::MissingDate).len(), 1);
        assert_eq!(read("t.md", "# Title\n").unwrap_err(), Unusable::NoFrontMatter);
        assert_eq!(read("t.md", "---\nms.date: 1\n---\n").unwrap_err(), Unusable::NoTitle);
    }

    #[test]
    fn fenced_code_and_html_comments_are_not_read() {
        let page = read_body("```\n- `a.microsoft.com`\n```\n<!--\n- `b.microsoft.com`\n-->\n- `c.microsoft.com`\n");
        assert_eq!(entries(&page), ["bypass c.microsoft.com"]);
    }
}
