//! The YAML front matter of a Microsoft Learn page (only the top-level `key: value` lines the
//! importer uses: `title`, `titleSuffix`, `description`, `ms.date`, `ms.service`, `ms.prod`) and
//! the slug naming the page's rule file.
//!
//! The slug names the product the page is about, so that a page keeps its file name when its
//! title is reworded around the product:
//!
//! 1. the title with the generic words ([`GENERIC`]: "configure", "your", "network",
//!    "requirements", "for", ...) trimmed from both ends: "Network configuration for Microsoft
//!    Managed Desktop" → "Microsoft Managed Desktop"; "Configure your network environment to
//!    ensure connectivity with Defender for Endpoint service" → "Defender for Endpoint";
//! 2. if nothing is left (the title is generic: "Internet access requirements"), `titleSuffix`,
//!    the product name Microsoft Learn appends to the title ("Configuration Manager");
//! 3. else the description after its last " for ", trimmed the same way ("This article details
//!    the network configurations needed for Windows Autopatch" → "Windows Autopatch");
//! 4. else `ms.service`, else `ms.prod`, else the source file's name without extension;
//!
//! then lowercased with every run of characters other than ASCII letters and digits turned into
//! one `-`: `windows-autopatch`, and the file is `windows-autopatch.rules`. This module does
//! not read the page body.

/// Words trimmed from both ends of a title to find the product it names.
pub(crate) const GENERIC: &[&str] = &[
    "a",
    "access",
    "an",
    "and",
    "configuration",
    "configurations",
    "configure",
    "configuring",
    "connectivity",
    "ensure",
    "environment",
    "firewall",
    "for",
    "how",
    "in",
    "internet",
    "network",
    "networking",
    "of",
    "on",
    "proxy",
    "requirement",
    "requirements",
    "service",
    "services",
    "set",
    "setup",
    "the",
    "to",
    "up",
    "with",
    "your",
];

/// The front matter fields the importer uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FrontMatter {
    pub(crate) title: Option<String>,
    pub(crate) title_suffix: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) date: Option<String>,
    pub(crate) service: Option<String>,
    pub(crate) prod: Option<String>,
}

/// Where the slug came from, for the file header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlugSource {
    Title,
    TitleSuffix,
    Description,
    Service,
    Prod,
    FileName,
}

impl SlugSource {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::Title => "from the title",
            Self::TitleSuffix => "from titleSuffix: the title is generic",
            Self::Description => "from the description: the title is generic",
            Self::Service => "from ms.service: the title is generic",
            Self::Prod => "from ms.prod: the title is generic",
            Self::FileName => "from the file name: the front matter names no product",
        }
    }
}

/// Splits the page into its front matter and the line (0-based) where the body starts, or `None`
/// when the page does not open with a `---` block.
pub(crate) fn parse(lines: &[&str]) -> Option<(FrontMatter, usize)> {
    if lines.first().map(|l| l.trim_end()) != Some("---") {
        return None;
    }
    let end = lines.iter().enumerate().skip(1).find(|(_, l)| l.trim_end() == "---").map(|(i, _)| i)?;
    let mut fm = FrontMatter::default();
    for line in &lines[1..end] {
        if line.starts_with([' ', '\t', '-']) {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'').trim();
        if value.is_empty() {
            continue;
        }
        let slot = match key.trim() {
            "title" => &mut fm.title,
            "titleSuffix" => &mut fm.title_suffix,
            "description" => &mut fm.description,
            "ms.date" => &mut fm.date,
            "ms.service" => &mut fm.service,
            "ms.prod" => &mut fm.prod,
            _ => continue,
        };
        *slot = Some(value.to_owned());
    }
    Some((fm, end + 1))
}

/// `text` with the [`GENERIC`] words trimmed from both ends.
pub(crate) fn product_words(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let generic = |w: &&str| {
        let w = w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase();
        w.is_empty() || GENERIC.contains(&w.as_str())
    };
    let start = words.iter().position(|w| !generic(w));
    let end = words.iter().rposition(|w| !generic(w));
    match (start, end) {
        (Some(s), Some(e)) => words[s..=e].join(" ").trim_end_matches(|c: char| !c.is_alphanumeric()).to_owned(),
        _ => String::new(),
    }
}

/// Lowercase, every run of characters other than ASCII letters and digits turned into one `-`.
pub(crate) fn slugify(text: &str) -> String {
    super::endpoint::placeholder_name(text)
}

/// The product a page is about, slugged, and where it came from.
pub(crate) fn slug(fm: &FrontMatter, source_name: &str) -> (String, String, SlugSource) {
    let nonempty = |s: String| (!slugify(&s).is_empty()).then_some(s);
    if let Some(p) = fm.title.as_deref().map(product_words).and_then(nonempty) {
        return (slugify(&p), p, SlugSource::Title);
    }
    if let Some(p) = fm.title_suffix.clone().and_then(nonempty) {
        return (slugify(&p), p, SlugSource::TitleSuffix);
    }
    let from_description = fm
        .description
        .as_deref()
        .and_then(|d| d.rsplit_once(" for "))
        .map(|(_, tail)| product_words(tail))
        .and_then(nonempty);
    if let Some(p) = from_description {
        return (slugify(&p), p, SlugSource::Description);
    }
    if let Some(p) = fm.service.clone().and_then(nonempty) {
        return (slugify(&p), p, SlugSource::Service);
    }
    if let Some(p) = fm.prod.clone().and_then(nonempty) {
        return (slugify(&p), p, SlugSource::Prod);
    }
    let stem =
        std::path::Path::new(source_name).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let slug = slugify(&stem);
    let slug = if slug.is_empty() { "page".to_owned() } else { slug };
    (slug, stem, SlugSource::FileName)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fm(title: &str) -> FrontMatter {
        FrontMatter { title: Some(title.to_owned()), ..FrontMatter::default() }
    }

    #[test]
    fn front_matter_fields_and_body_start() {
        let lines = [
            "---",
            "title: Network configuration for Microsoft Managed Desktop ",
            "ms.collection: ",
            "  - tier1",
            "ms.date: 05/30/2022",
            "---",
            "# Body",
        ];
        let (fm, body) = parse(&lines).unwrap();
        assert_eq!(fm.title.as_deref(), Some("Network configuration for Microsoft Managed Desktop"));
        assert_eq!(fm.date.as_deref(), Some("05/30/2022"));
        assert_eq!(body, 6);
        assert_eq!(parse(&["# no front matter"]), None);
        assert_eq!(parse(&["---", "title: unterminated"]), None);
    }

    #[test]
    fn slug_from_title_trims_generic_words() {
        let cases = [
            ("Network configuration for Microsoft Managed Desktop", "microsoft-managed-desktop"),
            ("Windows Autopilot networking requirements", "windows-autopilot"),
            (
                "Configure your network environment to ensure connectivity with Defender for Endpoint service",
                "defender-for-endpoint",
            ),
        ];
        for (title, want) in cases {
            let (slug, _, source) = slug(&fm(title), "x.txt");
            assert_eq!((slug.as_str(), source), (want, SlugSource::Title), "{title}");
        }
    }

    #[test]
    fn generic_title_falls_back_to_suffix_description_service_file() {
        let mut f = fm("Internet access requirements");
        f.title_suffix = Some("Configuration Manager".into());
        assert_eq!(
            slug(&f, "x.txt"),
            ("configuration-manager".into(), "Configuration Manager".into(), SlugSource::TitleSuffix)
        );
        let mut f = fm("Configure your network");
        f.description = Some("This article details the network configurations needed for Windows Autopatch".into());
        f.prod = Some("windows-client".into());
        assert_eq!(slug(&f, "x.txt").0, "windows-autopatch");
        f.description = None;
        assert_eq!(slug(&f, "x.txt"), ("windows-client".into(), "windows-client".into(), SlugSource::Prod));
        assert_eq!(slug(&fm("Configure your network"), "dir/000_ab.txt").0, "000-ab");
    }
}
