//! The Microsoft Learn importer on the seed pages: the shipped rule files in `config/policies/`
//! must be exactly what importing `../shared/seeds/` produces, the report must name the repairs
//! and judgements the seeds call for, and every rule line must follow the rule-file format.
//!
//! The seeds live outside the repository; where `../shared/seeds/` (relative to the crate root)
//! is absent, the seed tests print why and pass without checking.
//!
//! To regenerate the shipped files after changing the importer (then review the diff):
//!
//! ```text
//! HOSTGATE_REGENERATE=1 cargo test --test import -- --ignored regenerate
//! ```
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::PathBuf;

use hostgate_proxy::import::{import_ms_learn, write_pages, FindingKind, ImportedPage};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn policies() -> PathBuf {
    root().join("config").join("policies")
}

/// The seed pages, imported, in file-name order; `None` (with a message) without the seeds.
fn imported_seeds() -> Option<Vec<ImportedPage>> {
    let dir = root().join("..").join("shared").join("seeds");
    if !dir.is_dir() {
        eprintln!("skipping: the seed pages are not at {} (they live outside the repository)", dir.display());
        return None;
    }
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "txt")
                && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("00"))
        })
        .collect();
    files.sort();
    assert_eq!(files.len(), 5, "expected the five seed pages in {}", dir.display());
    Some(
        files
            .iter()
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                import_ms_learn(&name, &fs::read_to_string(p).unwrap()).unwrap()
            })
            .collect(),
    )
}

fn page<'a>(pages: &'a [ImportedPage], source_prefix: &str) -> &'a ImportedPage {
    pages.iter().find(|p| p.source_name.starts_with(source_prefix)).unwrap()
}

/// Whether `page` reports a finding of `kind` on `line` whose message contains `needle`.
fn reported(page: &ImportedPage, kind: FindingKind, line: usize, needle: &str) -> bool {
    page.report.iter().any(|f| f.kind == kind && f.line == line && f.message.contains(needle))
}

#[test]
fn shipped_policies_are_the_import_of_the_seeds() {
    let Some(pages) = imported_seeds() else {
        return;
    };
    let names: Vec<&str> = pages.iter().map(|p| p.file_name.as_str()).collect();
    assert_eq!(
        names,
        [
            "windows-autopatch.rules",
            "microsoft-managed-desktop.rules",
            "windows-autopilot.rules",
            "defender-for-endpoint.rules",
            "configuration-manager.rules",
        ]
    );
    for p in &pages {
        let shipped = fs::read_to_string(policies().join(&p.file_name))
            .unwrap_or_else(|e| panic!("{}: {e} (regenerate: see this file's header)", p.file_name));
        if shipped != p.contents {
            let first = shipped
                .lines()
                .zip(p.contents.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(shipped.lines().count().min(p.contents.lines().count()));
            panic!(
                "{} differs from the import of {} at line {} (regenerate: see this file's header)",
                p.file_name,
                p.source_name,
                first + 1
            );
        }
    }
}

#[test]
fn importing_twice_is_byte_for_byte_identical() {
    let Some(a) = imported_seeds() else { return };
    let b = imported_seeds().unwrap();
    assert_eq!(a, b);
}

#[test]
fn the_report_names_the_repairs_and_judgements() {
    let Some(pages) = imported_seeds() else {
        return;
    };
    let mmd = page(&pages, "001_");
    let autopilot = page(&pages, "002_");
    let defender = page(&pages, "003_");
    let configmgr = page(&pages, "004_");

    // Names broken across a `<br>`.
    assert!(reported(mmd, FindingKind::BrokenName, 69, "read as `groupsapi-prod.outlookgroups.ms`"));
    assert!(reported(mmd, FindingKind::BrokenName, 78, "joined as `scsquery-ss-us.trafficmanager.net`"));
    assert!(mmd.contents.contains("\ngroupsapi-prod.outlookgroups.ms\n"));
    assert!(mmd.contents.contains("\nscsquery-ss-us.trafficmanager.net\n"));

    // NTP over UDP is not proxied: a comment only.
    assert!(reported(autopilot, FindingKind::NotProxied, 96, "time.windows.com"));
    assert!(autopilot.contents.lines().any(|l| l.starts_with('#') && l.contains("time.windows.com")));
    assert!(!autopilot.contents.lines().any(|l| !l.starts_with('#') && l.contains("time.windows.com")));

    // Blob storage stays inspected, on the page that says so and on the others.
    assert!(reported(defender, FindingKind::Policy, 66, "*.blob.core.windows.net"));
    assert!(reported(defender, FindingKind::Judgement, 96, "allow *.blob.core.windows.net:443"));
    assert!(defender.contents.contains("\nallow *.blob.core.windows.net:443  # kept inspected: line 66 says"));
    assert!(reported(mmd, FindingKind::Judgement, 73, "allow *.blob.core.windows.net"));
    assert!(mmd.contents.contains("\nallow *.blob.core.windows.net  # kept inspected: "));

    // Duplicates are emitted once and reported.
    assert!(reported(configmgr, FindingKind::Duplicate, 84, "cmbitsstore.blob.core.windows.net"));
    assert_eq!(
        configmgr
            .contents
            .lines()
            .filter(|l| l.ends_with("cmbitsstore.blob.core.windows.net")
                || l.contains("cmbitsstore.blob.core.windows.net "))
            .count(),
        1
    );
    assert!(reported(mmd, FindingKind::Duplicate, 80, "ajax.aspnetcdn.com"));

    // Names given "for example" are not endpoints.
    assert!(reported(configmgr, FindingKind::Example, 264, "https://prod1.westus2.logic.azure.com:443"));
    assert!(!configmgr.contents.contains("prod1.westus2"));
    assert!(configmgr.contents.contains("\nhttps://*.<regionname>.logic.azure.com:443\n"));
    assert!(reported(defender, FindingKind::Example, 72, "us-v20.events.data.microsoft.com"));

    // Escapes, case, slashes, placeholders, links.
    assert!(reported(mmd, FindingKind::Escape, 73, "\\ *.oms.opinsights.azure.com"));
    assert!(reported(mmd, FindingKind::Escape, 80, "\\\\*.onenote.com"));
    assert!(reported(mmd, FindingKind::MixedCase, 69, "Protection.office.com"));
    assert!(reported(mmd, FindingKind::TrailingSlash, 72, "token.cp.microsoft.com/"));
    assert!(reported(mmd, FindingKind::Placeholder, 69, "<tenant>"));
    assert!(reported(configmgr, FindingKind::PlaceholderHost, 170, "fqdn-for-software-update-point-on-child-site"));
    assert!(configmgr
        .contents
        .contains("\nallow http://<fqdn-for-software-update-point-on-child-site>  # the whole host is a placeholder"));
    assert!(reported(page(&pages, "000_"), FindingKind::Link, 43, "/windows/privacy/manage-windows-1909-endpoints"));
    assert!(reported(configmgr, FindingKind::Include, 34, "internet-endpoints-service-connection-point.md"));

    // Third parties are allowed, not bypassed.
    assert!(mmd.contents.contains("\nallow *.branch.io  # third party"));
    assert!(autopilot.contents.contains("\nallow https://ekop.intel.com/ekcertservice  # third party"));
    assert!(configmgr.contents.contains("\nallow https://github.com  # third party"));
}

#[test]
fn every_rule_line_follows_the_format() {
    let Some(pages) = imported_seeds() else {
        return;
    };
    for p in &pages {
        let mut saw_default = false;
        let mut rules = 0;
        for (n, line) in p.contents.lines().enumerate() {
            let where_ = format!("{}:{}: `{line}`", p.file_name, n + 1);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let rule = line.split(" #").next().unwrap().trim_end();
            assert!(!rule.contains('#'), "{where_}: stray `#`");
            let words: Vec<&str> = rule.split(' ').collect();
            let target = match words.as_slice() {
                ["default", action] => {
                    assert!(!saw_default && rules == 0, "{where_}: `default` must come first, once");
                    assert!(["allow", "bypass", "deny"].contains(action), "{where_}");
                    saw_default = true;
                    continue;
                }
                [action, target] => {
                    assert!(["allow", "bypass", "deny"].contains(action), "{where_}: action");
                    *target
                }
                [target] => *target,
                _ => panic!("{where_}: not `[ACTION] TARGET`"),
            };
            assert!(saw_default, "{where_}: a bare line before `default`");
            check_target(target).unwrap_or_else(|why| panic!("{where_}: {why}"));
            rules += 1;
        }
        let c = p.counts;
        assert_eq!(rules, c.bypass + c.allow + c.deny, "{}: rule count", p.file_name);
    }
}

#[test]
fn the_policy_loader_accepts_every_shipped_file() {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use hostgate_proxy::policy::{parse_rules, Action, Policy};

    let Some(pages) = imported_seeds() else {
        return;
    };
    let vars: BTreeMap<String, String> = [
        ("tenant", "contoso"),
        ("regionname", "westus2"),
        ("fqdn-for-software-update-point-on-child-site", "sup.child.example"),
        ("fqdn-for-software-update-point-on-parent-site", "sup.parent.example"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for p in &pages {
        for vars in [BTreeMap::new(), vars.clone()] {
            let rules = parse_rules(&p.file_name, &p.contents, None, &vars)
                .unwrap_or_else(|e| panic!("{}: {e:?}", p.file_name));
            let c = p.counts;
            assert_eq!(rules.len(), c.bypass + c.allow + c.deny, "{}", p.file_name);
            let allow = rules.iter().filter(|r| r.action == Action::Allow).count();
            assert_eq!(allow, c.allow, "{}", p.file_name);
            let inactive = rules.iter().filter(|r| !r.is_active()).count();
            let whole = if vars.is_empty() && p.file_name == "configuration-manager.rules" { 4 } else { 0 };
            assert_eq!(inactive, whole, "{}", p.file_name);
            let active: Vec<_> = rules.into_iter().filter(|r| r.is_active()).collect();
            Policy::compile(active, Action::Deny, &[Arc::from(p.file_name.as_str())])
                .unwrap_or_else(|e| panic!("{}: {e:?}", p.file_name));
        }
    }
}

/// Checks `[scheme "://"] pattern [":" port] [path]` per the rule-file format and the pattern
/// grammar (semantics.md), placeholders `<name>` counting as one label's worth of characters.
fn check_target(target: &str) -> Result<(), String> {
    let rest = match target.split_once("://") {
        Some(("http" | "https", rest)) => rest,
        Some((scheme, _)) => return Err(format!("scheme `{scheme}`")),
        None => target,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if path.contains(char::is_whitespace) {
        return Err("white space in the path".into());
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    if let Some(p) = port {
        match p.parse::<u32>() {
            Ok(1..=65535) if !p.starts_with('0') => {}
            _ => return Err(format!("port `{p}`")),
        }
    }
    let placeholder = regex::Regex::new(r"<[a-z0-9]+(-[a-z0-9]+)*>").unwrap();
    let plain = placeholder.replace_all(host, "x");
    if plain.contains(['<', '>']) {
        return Err(format!("malformed placeholder in `{host}`"));
    }
    if plain == "x" {
        // The whole host is a placeholder: the rule is inactive until [vars] defines it.
        return Ok(());
    }
    let body = plain.strip_prefix('.').unwrap_or(&plain);
    let labels: Vec<&str> = body.split('.').collect();
    if labels.len() < 2 || body.len() > 253 {
        return Err(format!("`{host}`: not a multi-label name of at most 253 bytes"));
    }
    for l in &labels {
        if l.is_empty() || l.len() > 63 || l.contains("**") {
            return Err(format!("`{host}`: bad label `{l}`"));
        }
        if !l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_*".contains(c)) {
            return Err(format!("`{host}`: bad character in `{l}`"));
        }
    }
    if labels.last().unwrap().contains('*') {
        return Err(format!("`{host}`: wildcard in the rightmost label"));
    }
    Ok(())
}

#[test]
fn the_format_check_rejects_what_it_should() {
    for bad in [
        "ftp://a.com",
        "a.com:0",
        "a.com:65536",
        "A.com",
        "mail.*",
        "**.a.com",
        "a..com",
        "http://<x",
        "<X>.a.com",
        "a",
    ] {
        assert!(check_target(bad).is_err(), "{bad}");
    }
    for good in [
        "https://*.<regionname>.logic.azure.com:443",
        "*.msftncsi.com/ncsi.txt",
        "https://go.microsoft.com/fwlink/?LinkID=619849",
        "*cdn.onenote.net",
        ".lync.com",
        "http://<fqdn-for-software-update-point-on-child-site>",
    ] {
        assert!(check_target(good).is_ok(), "{good}");
    }
}

#[test]
fn write_pages_writes_each_file_and_refuses_a_name_twice() {
    let page = "---\ntitle: Network configuration for Contoso\nms.date: 01/02/2024\n---\n\
                - `a.contoso.microsoft.com`\n";
    let a = import_ms_learn("a.md", page).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let written = write_pages(std::slice::from_ref(&a), &dir.path().join("out")).unwrap();
    assert_eq!(written, vec![dir.path().join("out").join("contoso.rules")]);
    assert_eq!(fs::read_to_string(&written[0]).unwrap(), a.contents);
    let b = import_ms_learn("b.md", page).unwrap();
    let err = write_pages(&[a, b], dir.path()).unwrap_err();
    assert!(err.to_string().contains("a.md and b.md"), "{err}");
}

/// Writes the shipped files from the seeds. Ignored unless asked for, and only with
/// `HOSTGATE_REGENERATE=1` (see this file's header).
#[test]
#[ignore = "writes config/policies; run with HOSTGATE_REGENERATE=1"]
fn regenerate() {
    if std::env::var_os("HOSTGATE_REGENERATE").is_none_or(|v| v != "1") {
        eprintln!("set HOSTGATE_REGENERATE=1 to write {}", policies().display());
        return;
    }
    let Some(pages) = imported_seeds() else {
        return;
    };
    for p in write_pages(&pages, &policies()).unwrap() {
        eprintln!("wrote {}", p.display());
    }
    for page in &pages {
        for f in &page.report {
            eprintln!("{f}");
        }
    }
}
