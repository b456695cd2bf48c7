//! Writing a read page as a rule file: a header naming the page (title, ms.date, source file,
//! where the file's name came from) and what the actions mean, `default bypass`, then the
//! entries grouped under `# == section` and `# -- table row` comments in page order. Bypassed
//! rules are bare lines (they take the default); every other action is written out, with its
//! reasons in a trailing comment. The output depends only on the page, so re-running the import
//! reproduces it byte for byte. This module does not decide anything.

use std::fmt::Write as _;

use super::front_matter::SlugSource;
use super::ms_learn::{Entry, Page};
use crate::policy::Action;

/// What `render` needs besides the page.
#[derive(Clone, Debug)]
pub(crate) struct Header<'a> {
    /// The source file's name (without directories).
    pub(crate) file: &'a str,
    pub(crate) product: &'a str,
    pub(crate) slug_source: SlugSource,
}

/// Makes one comment line's text safe: a single line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Renders the rule file.
pub(crate) fn render(page: &Page, header: &Header<'_>) -> String {
    let mut out = String::new();
    let c = &page.counts;
    let title = page.front.title.as_deref().unwrap_or_default();
    let date = page.front.date.as_deref().unwrap_or("(none: the front matter has no ms.date)");
    let lines = [
        "# hostgate policy imported from a Microsoft Learn page by `hostgate import --from ms-learn`.".to_owned(),
        "# Generated: do not edit by hand; re-run the import (it reproduces this file byte for byte).".to_owned(),
        "#".to_owned(),
        format!("# page:    {}", one_line(title)),
        format!("# ms.date: {}", one_line(date)),
        format!("# source:  {}", one_line(header.file)),
        format!("# product: {} ({})", one_line(header.product), header.slug_source.describe()),
        "#".to_owned(),
        "# bypass: exempt from TLS inspection and proxy authentication, as the page asks for its".to_owned(),
        "#         Microsoft endpoints (bare lines take the default below).".to_owned(),
        "# allow:  allowed, and still inspected; each says why.".to_owned(),
        format!(
            "# rules: {} (bypass {}, allow {}, deny {}); comment-only: {}; duplicates dropped: {}",
            c.bypass + c.allow + c.deny,
            c.bypass,
            c.allow,
            c.deny,
            c.comment_only,
            c.duplicates
        ),
        String::new(),
        "default bypass".to_owned(),
    ];
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
    let mut last_section = None;
    for group in page.groups.iter().filter(|g| !g.entries.is_empty()) {
        if group.section != last_section {
            out.push('\n');
            match &group.section {
                Some((text, line)) => {
                    let _ = writeln!(out, "# == {} (line {line})", one_line(text));
                }
                None => out.push_str("# == (before the first heading)\n"),
            }
            last_section.clone_from(&group.section);
            if group.label.is_some() {
                out.push('\n');
            }
        } else {
            out.push('\n');
        }
        if let Some(label) = &group.label {
            let _ = writeln!(out, "# -- {}", one_line(label));
        }
        for entry in &group.entries {
            match entry {
                Entry::Rule { action, target, comment } => {
                    if *action != Action::Bypass {
                        let _ = write!(out, "{action} ");
                    }
                    out.push_str(target);
                    if let Some(comment) = comment {
                        let _ = write!(out, "  # {}", one_line(comment));
                    }
                    out.push('\n');
                }
                Entry::Comment(text) => {
                    let _ = writeln!(out, "# {}", one_line(text));
                }
            }
        }
    }
    out
}
