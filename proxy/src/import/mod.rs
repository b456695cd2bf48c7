//! The importers behind `hostgate import`. `--from m365-endpoints` is [`m365`]: the JSON of the
//! Microsoft 365 IP Address and URL web service, one rule file. `--from ms-learn`, the rest of
//! this module: it reads Microsoft Learn pages that
//! list network endpoints (Markdown source with its front matter) and writes one hostgate rule
//! file per page, with a report of every anomaly it repaired and every judgement it made. It
//! owns reading pages and writing rule files; it does not parse rule files or compile them
//! (that is the policy loader's job) and does no network I/O.
//!
//! # The rule files it writes
//!
//! ```text
//! # == Section heading (line 27)
//! # -- Table row label (table row, line 35)
//! default bypass
//! *.lync.com                                  # a bare line takes the file's default
//! allow *.blob.core.windows.net               # kept inspected: ...
//! https://*.<regionname>.logic.azure.com:443
//! ```
//!
//! A rule is `[ACTION WS] TARGET` with `TARGET = [scheme "://"] pattern [":" port] [path]`;
//! `default bypass` comes first, bypassed rules are bare lines and every other action is
//! written out with its reason in a trailing ` # ` comment. Placeholders are `<name>` (the
//! page's placeholder lowercased, runs of other characters turned into `-`). The file is named
//! by the product the page is about (see `front_matter` for the rule): `windows-autopatch.rules`.
//!
//! # Modules
//!
//! - `markdown`: blocks, cells, inline spans, escapes;
//! - `endpoint`: a token to a target (scheme, pattern, port, path), and broken-name repair;
//! - `front_matter`: the page's front matter and the file's slug;
//! - `ms_learn`: which parts of a page list endpoints, duplicates, the walk;
//! - `policy`: the action each target gets, and why;
//! - `render`: the rule file's text;
//! - `report`: the report's vocabulary (findings and counts), which every step writes to;
//! - [`m365`]: the web service's endpoint sets (it shares `endpoint` and `report`).
//!
//! # Example
//!
//! ```
//! use hostgate_proxy::import::{import_ms_learn, FindingKind};
//!
//! let page = "---\ntitle: Network configuration for Contoso Desk\nms.date: 01/02/2024\n---\n\
//!             ## Endpoints\n\n| Service | URLs |\n|---|---|\n\
//!             | Desk | \\*.lync.com<br>\\*.blob.core.windows.net<br>\\*.lync.com |\n";
//! let imported = import_ms_learn("desk.md", page).unwrap();
//! assert_eq!(imported.file_name, "contoso-desk.rules");
//! assert!(imported.contents.contains("\ndefault bypass\n"));
//! assert!(imported.contents.contains("\n*.lync.com\n"));
//! assert!(imported.contents.contains("\nallow *.blob.core.windows.net  # kept inspected: "));
//! assert!(imported.report.iter().any(|f| f.kind == FindingKind::Duplicate && f.line == 9));
//! assert_eq!((imported.counts.bypass, imported.counts.allow), (1, 1));
//! ```

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

mod endpoint;
mod front_matter;
pub mod m365;
mod markdown;
mod ms_learn;
mod policy;
mod render;
mod report;

pub use crate::policy::Action;
pub use report::{Counts, Finding, FindingKind};

/// A page, imported.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportedPage {
    /// The source name given to [`import_ms_learn`].
    pub source_name: String,
    /// The page's title.
    pub title: String,
    /// The rule file's name (`windows-autopatch.rules`).
    pub file_name: String,
    /// The rule file's text.
    pub contents: String,
    /// Every anomaly, repair and judgement, in line order.
    pub report: Vec<Finding>,
    /// How many rules, comments, duplicates and skipped entries the page produced.
    pub counts: Counts,
}

/// Why a page cannot be imported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImportErrorKind {
    /// The page does not open with a `---` front matter block.
    NoFrontMatter,
    /// The front matter has no `title`.
    NoTitle,
}

/// A page that cannot be imported, naming the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportError {
    source: String,
    kind: ImportErrorKind,
}

impl ImportError {
    /// The source name given to [`import_ms_learn`].
    pub fn source_name(&self) -> &str {
        &self.source
    }

    /// Why the page cannot be imported.
    pub fn kind(&self) -> ImportErrorKind {
        self.kind
    }
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.kind {
            ImportErrorKind::NoFrontMatter => "no front matter (a Microsoft Learn page opens with a `---` block)",
            ImportErrorKind::NoTitle => "the front matter has no `title`",
        };
        write!(f, "{}: cannot import: {why}", self.source)
    }
}

impl std::error::Error for ImportError {}

/// Imports one Microsoft Learn page. `source_name` names the page in the report and (its file
/// name part) in the generated file's header.
pub fn import_ms_learn(source_name: &str, text: &str) -> Result<ImportedPage, ImportError> {
    let page = ms_learn::read(source_name, text).map_err(|e| ImportError {
        source: source_name.to_owned(),
        kind: match e {
            ms_learn::Unusable::NoFrontMatter => ImportErrorKind::NoFrontMatter,
            ms_learn::Unusable::NoTitle => ImportErrorKind::NoTitle,
        },
    })?;
    let file =
        Path::new(source_name).file_name().map_or_else(|| source_name.to_owned(), |f| f.to_string_lossy().into_owned());
    let (slug, product, slug_source) = front_matter::slug(&page.front, &file);
    let contents = render::render(&page, &render::Header { file: &file, product: &product, slug_source });
    Ok(ImportedPage {
        source_name: source_name.to_owned(),
        title: page.front.title.clone().unwrap_or_default(),
        file_name: format!("{slug}.rules"),
        contents,
        report: page.findings,
        counts: page.counts,
    })
}

/// Writes each page's rule file into `out_dir` (created if missing) and returns the paths
/// written. Two pages with the same file name are refused before anything is written.
pub fn write_pages(pages: &[ImportedPage], out_dir: &Path) -> io::Result<Vec<PathBuf>> {
    for (i, a) in pages.iter().enumerate() {
        if let Some(b) = pages[..i].iter().find(|b| b.file_name == a.file_name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} and {} would both be written to {}", b.source_name, a.source_name, a.file_name),
            ));
        }
    }
    std::fs::create_dir_all(out_dir)?;
    let mut written = Vec::with_capacity(pages.len());
    for page in pages {
        let path = out_dir.join(&page.file_name);
        std::fs::write(&path, &page.contents)?;
        written.push(path);
    }
    Ok(written)
}
