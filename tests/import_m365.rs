//! `hostgate import --from m365-endpoints` end to end, on fixture documents written in the
//! schema of the Microsoft 365 IP Address and URL web service (`tests/fixtures/m365/`; this
//! machine never reaches the service): the expected rule file byte for byte, the change summary
//! from one version to the next, the flags, the errors (each naming the file and the endpoint
//! set, nothing written), and `hostgate check` on the result.
//!
//! To regenerate the expected file after changing the importer (then review the diff):
//!
//! ```text
//! HOSTGATE_REGENERATE=1 cargo test --test import_m365 -- --ignored regenerate
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use support::tools::{describe, run, stderr, stdout};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures").join("m365")
}

fn fixture(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

/// Runs the binary with `args`.
async fn hostgate(args: &[&str]) -> Output {
    run(env!("CARGO_BIN_EXE_hostgate"), args, None).await
}

/// `hostgate import --from m365-endpoints ENDPOINTS --version VERSION --out DIR extra…`.
async fn import(endpoints: &str, version: &str, out: &Path, extra: &[&str]) -> Output {
    let out = out.display().to_string();
    let mut args = vec!["import", "--from", "m365-endpoints", endpoints, "--version", version, "--out", &out];
    args.extend_from_slice(extra);
    hostgate(&args).await
}

fn rules(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("microsoft-365.rules")).unwrap()
}

#[tokio::test]
async fn the_fixture_gives_the_expected_file_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let o = import(&fixture("endpoints-v1.json"), &fixture("version-v1.json"), dir.path(), &[]).await;
    assert!(o.status.success(), "{}", describe(&o));
    let got = rules(dir.path());
    let want = std::fs::read_to_string(fixtures().join("microsoft-365.rules")).unwrap();
    if got != want {
        let first = got.lines().zip(want.lines()).position(|(a, b)| a != b).unwrap_or(0);
        panic!(
            "differs from tests/fixtures/m365/microsoft-365.rules at line {} (regenerate: see this file's header):\n{got}",
            first + 1
        );
    }
    // A second run over its own output: the same bytes, and no change.
    let o = import(&fixture("endpoints-v1.json"), &fixture("version-v1.json"), dir.path(), &[]).await;
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(rules(dir.path()), want);
    assert!(stdout(&o).contains("changes: 0 added, 0 removed, 0 changed, 10 unchanged\n"), "{}", stdout(&o));

    // The report, as `ms-learn`'s: `file:line: kind: set ID: message`, the line where the set
    // begins.
    let o =
        import(&fixture("endpoints-v1.json"), &fixture("version-v1.json"), tempfile::tempdir().unwrap().path(), &[])
            .await;
    let report = stdout(&o);
    for line in [
        "endpoints-v1.json:24: judgement: set 2: optional (required: false): included, marked optional (--required-only leaves it out)",
        "endpoints-v1.json:24: not-proxied: set 2: udpPorts 443 apply to its 2 urls too, but a firewall cannot match names: no UDP rule for them (and, with no tcpPorts, no rule at all)",
        "endpoints-v1.json:55: port-list: set 11: udpPorts `3478,3479,3480,3481` written as `3478-3481`",
        "endpoints-v1.json:71: not-proxied: set 12: udpPorts 3478-3481 apply to its 5 urls too, but a firewall cannot match names: no UDP rule for them",
        "endpoints-v1.json:71: duplicate: set 12: `bypass udp://52.112.0.0/14:3478-3481` is already written for set 11: written once",
        "endpoints-v1.json:94: partial-wildcard: set 31: `*-admin.sharepoint.com` has the partial-label wildcard `*-admin`: kept as written; it matches within that one label only",
        "endpoints-v1.json:115: mixed-case: set 46: `Login.MicrosoftOnline.com` has upper-case letters: lowercased to `login.microsoftonline.com`",
        "endpoints-v1.json:115: host-bits: set 46: `20.190.128.7/18` has host bits set: written as 20.190.128.0/18",
        "endpoints-v1.json:115: duplicate: set 46: `40.126.0.0/18` is listed again in ips: written once",
        "endpoints-v1.json:136: duplicate: set 56: `bypass login.microsoftonline.com:80,443` is already written for set 46: written once",
        "endpoints-v1.json:164: invalid: set 125: `13.107.6.171`: an address among the urls; the web service lists addresses under ips: not imported",
        "endpoints-v1.json:164: invalid: set 125: `officecdn.microsoft.com/pr`: not a bare name, it has a path; the web service lists names, with ports in tcpPorts: not imported",
    ] {
        assert!(report.lines().any(|l| l == line), "missing `{line}` in:\n{report}");
    }
    assert!(report.contains("changes: no previous "), "{report}");
    assert!(
        report.contains("microsoft-365.rules: 10 sets (3 optional, 0 left out), 39 rules (bypass 34, allow 5, deny 0), 7 udp:// rules, 4 not rules, 6 duplicates dropped, 20 findings"),
        "{report}"
    );
}

#[tokio::test]
async fn the_next_version_prints_the_change_summary_and_moves_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let o = import(&fixture("endpoints-v1.json"), &fixture("version-v1.json"), dir.path(), &[]).await;
    assert!(o.status.success(), "{}", describe(&o));
    assert!(rules(dir.path()).contains("\n# version:  2024103000\n"));
    let o = import(&fixture("endpoints-v2.json"), &fixture("version-v2.json"), dir.path(), &[]).await;
    assert!(o.status.success(), "{}", describe(&o));
    let out = stdout(&o);
    let summary = "\
changes: version 2024103000 -> 2024112800
  added set 160 Common (Default -> allow): 2 urls, 0 ips; tcp 443; udp none
  removed set 125 Common (Default -> allow): 3 urls, 0 ips; tcp 80,443; udp none
  changed set 1 Exchange: urls +outlook.live.com
  changed set 11 Skype: ips +52.120.0.0/14 -13.107.64.0/18
  changed set 12 Skype: udp 3478-3481 -> 443,3478-3481
  changed set 92 Common: category Default -> Allow (allow -> bypass)
changes: 1 added, 1 removed, 4 changed, 5 unchanged
";
    assert!(out.contains(summary), "{out}");
    let v2 = rules(dir.path());
    assert!(v2.contains("\n# version:  2024112800\n") && !v2.contains("2024103000"), "{v2}");
    assert!(v2.contains("\nallow *.static.microsoft:443  # set 160 Common\n"), "{v2}");
    assert!(v2.contains("\nbypass *.office.com:443  # set 92 Common\n"), "{v2}");
    assert!(!v2.contains("set 125"), "{v2}");

    // Changes of the mapping show as category changes too: the file is what is compared.
    let o =
        import(&fixture("endpoints-v2.json"), &fixture("version-v2.json"), dir.path(), &["--category", "Default=deny"])
            .await;
    assert!(o.status.success(), "{}", describe(&o));
    let out = stdout(&o);
    assert!(out.contains("  changed set 8 Exchange: category Default -> Default (allow -> deny)\n"), "{out}");
    assert!(out.contains("changes: 0 added, 0 removed, 2 changed, 8 unchanged\n"), "{out}");
}

#[tokio::test]
async fn flags_map_categories_and_leave_out_optional_sets_and_ipv6() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--category", "Default=deny", "--category", "allow=allow", "--required-only", "--no-ipv6"];
    let o = import(&fixture("endpoints-v1.json"), &fixture("version-v1.json"), dir.path(), &flags).await;
    assert!(o.status.success(), "{}", describe(&o));
    let text = rules(dir.path());
    assert!(text.contains("\n# mapping:  Optimize -> bypass, Allow -> allow, Default -> deny\n"), "{text}");
    assert!(text.contains("\n# optional: sets with required: false left out (--required-only)\n"), "{text}");
    assert!(text.contains("\n# ipv6:     ranges left out (--no-ipv6)\n"), "{text}");
    assert!(text.contains("\ndeny *.office.com:443  # set 92 Common\n"), "{text}");
    assert!(text.contains("\nallow login.windows.net:80,443  # set 46 Common\n"), "{text}");
    assert!(text.contains("\nbypass udp://52.112.0.0/14:3478-3481  # set 11 Skype\n"), "{text}");
    assert!(!text.contains("[26"), "IPv6 left out:\n{text}");
    for id in [2, 8, 125] {
        assert!(!text.contains(&format!("# == set {id}:")), "set {id} is optional:\n{text}");
    }
    let report = stdout(&o);
    assert!(
        report
            .contains("endpoints-v1.json:42: left-out: set 8: optional (required: false): left out (--required-only)"),
        "{report}"
    );
    assert!(report.contains("endpoints-v1.json:55: left-out: set 11: 1 IPv6 ranges left out (--no-ipv6)"), "{report}");

    // Misused flags.
    for (args, error) in [
        (&["--category", "Default=deny", "--category", "default=allow"][..], "--category Default is given twice"),
        (&["--category", "Bulk=deny"][..], "unknown category `Bulk` (Optimize, Allow or Default)"),
        (&["--category", "Default=permit"][..], "unknown action `permit`"),
    ] {
        let o = import(&fixture("endpoints-v1.json"), &fixture("version-v1.json"), dir.path(), args).await;
        assert!(!o.status.success() && stderr(&o).contains(error), "{args:?}: {}", describe(&o));
    }
    let out = dir.path().display().to_string();
    let o = hostgate(&["import", "--from", "ms-learn", "--no-ipv6", "--out", &out, "x.md"]).await;
    assert!(stderr(&o).contains("--no-ipv6 applies to --from m365-endpoints only"), "{}", describe(&o));
    let two = [fixture("endpoints-v1.json"), fixture("endpoints-v2.json")];
    let o = hostgate(&["import", "--from", "m365-endpoints", "--out", &out, &two[0], &two[1]]).await;
    assert!(stderr(&o).contains("reads one /endpoints document, not 2"), "{}", describe(&o));
    // Without --version the header says the version is unknown.
    let o = hostgate(&["import", "--from", "m365-endpoints", "--out", &out, &two[0]]).await;
    assert!(o.status.success(), "{}", describe(&o));
    assert!(rules(dir.path()).contains("\n# version:  (unknown: no --version document)\n"));
}

/// `fixture` with `from` replaced by `to` (once, and it must be there), written to `dir/name`.
fn broken(dir: &Path, name: &str, from: &str, to: &str) -> (String, usize) {
    let text = std::fs::read_to_string(fixtures().join("endpoints-v1.json")).unwrap();
    let at = text.find(from).unwrap_or_else(|| panic!("{from:?} is not in the fixture"));
    let line = text[..at].matches('\n').count() + 1;
    let path = dir.join(name);
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    (path.display().to_string(), line)
}

#[tokio::test]
async fn errors_name_the_file_and_the_set_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // An installed file from an earlier import stays as it was.
    let o = import(&fixture("endpoints-v1.json"), &fixture("version-v1.json"), &out, &[]).await;
    assert!(o.status.success(), "{}", describe(&o));
    let installed = rules(&out);
    let fresh = dir.path().join("fresh");

    let (file, line) = broken(dir.path(), "malformed.json", "\"login.windows.net\",", "\"login.windows.net\"");
    let cases = [
        (file, format!(":{}:7: endpoint set 46: malformed JSON: expected `,` or `]`", line + 1)),
        (
            broken(dir.path(), "category.json", "\"category\": \"Allow\",", "\"category\": \"Optimise\",").0,
            ":71: endpoint set 12: unknown category `Optimise` (the web service's categories are Optimize, Allow and Default)"
                .to_owned(),
        ),
        (
            broken(dir.path(), "cidr.json", "\"52.112.0.0/14\",", "\"52.112.0.0/33\",").0,
            ":55: endpoint set 11: ips: `52.112.0.0/33` is not an address range (the prefix length `/33` is not in 0-32)"
                .to_owned(),
        ),
        (
            broken(dir.path(), "ports.json", "\"tcpPorts\": \"80,443\",", "\"tcpPorts\": \"80,443-\",").0,
            ":2: endpoint set 1: tcpPorts: `80,443-` is not a port list (an empty port;".to_owned(),
        ),
        (
            broken(dir.path(), "id.json", "\"id\": 56,", "\"id\": 46,").0,
            ":136: endpoint set 46: the id is used again (first at line 115)".to_owned(),
        ),
        (
            broken(dir.path(), "type.json", "\"required\": false,\n    \"notes\": \"Outlook", "\"required\": \"no\",\n    \"notes\": \"Outlook").0,
            ":24: endpoint set 2: bad endpoint set: invalid type: string \"no\", expected a boolean".to_owned(),
        ),
    ];
    for (file, error) in cases {
        for target in [&out, &fresh] {
            let o = import(&file, &fixture("version-v1.json"), target, &[]).await;
            assert!(!o.status.success(), "{file}: {}", describe(&o));
            let err = stderr(&o);
            assert!(err.contains(&format!("hostgate: {file}{error}")), "{file}: want `{error}` in:\n{err}");
            assert!(stdout(&o).is_empty(), "{file}: nothing printed as if imported: {}", describe(&o));
        }
        assert_eq!(rules(&out), installed, "{file}: the installed file is unchanged");
        assert!(!fresh.exists(), "{file}: nothing written");
    }

    // A bad /version document.
    let version = dir.path().join("version.json");
    std::fs::write(&version, "{\"instance\":\"Worldwide\",\"latest\":\"2024-10-30\"}").unwrap();
    let o = import(&fixture("endpoints-v1.json"), &version.display().to_string(), &fresh, &[]).await;
    assert!(
        stderr(&o).contains(
            "version.json: not a /version document: \"latest\" `2024-10-30` is not a version (digits, YYYYMMDDNN)"
        ),
        "{}",
        describe(&o)
    );
    assert!(!fresh.exists());
}

/// A configuration with one source, the imported file.
fn config_with_the_source(dir: &Path) -> PathBuf {
    let config = dir.join("hostgate.toml");
    std::fs::write(
        &config,
        "[[listener]]\nkind = \"connect\"\naddress = \"127.0.0.1:0\"\n\n[policy]\ndefault = \"deny\"\n\n\
         [[policy.source]]\nname = \"microsoft-365\"\npath = \"policies/microsoft-365.rules\"\n",
    )
    .unwrap();
    config
}

#[tokio::test]
async fn check_loads_the_generated_file() {
    let dir = tempfile::tempdir().unwrap();
    let o = import(&fixture("endpoints-v1.json"), &fixture("version-v1.json"), &dir.path().join("policies"), &[]).await;
    assert!(o.status.success(), "{}", describe(&o));
    let config = config_with_the_source(dir.path());
    let o = hostgate(&["check", "--config", config.to_str().unwrap()]).await;
    assert!(o.status.success(), "{}", describe(&o));
    let out = stdout(&o);
    let file = dir.path().join("policies").join("microsoft-365.rules");
    assert!(
        out.contains(&format!(
            "microsoft-365: {} holds Microsoft's list, instance Worldwide, version 2024103000 (contrib/hostgate-m365-update keeps it current)\n",
            file.display()
        )),
        "{out}"
    );
    assert!(out.ends_with("ok: the configuration is usable\n"), "{out}");
}

#[tokio::test]
async fn check_on_the_shipped_config_says_how_to_turn_the_source_on() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = root.join("config").join("hostgate.toml");
    let o = hostgate(&["check", "--config", config.to_str().unwrap()]).await;
    assert!(o.status.success(), "{}", describe(&o));
    let out = stdout(&o);
    let line = out.lines().find(|l| l.starts_with("microsoft-365: ")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.starts_with("microsoft-365: off. To enforce Microsoft's published Microsoft 365 endpoints"), "{line}");
    assert!(line.contains("contrib/hostgate-m365-update"), "{line}");
    assert!(
        line.contains(&root.join("config").join("policies").join("microsoft-365.rules").display().to_string()),
        "{line}"
    );
    // The shipped configuration has the source, commented out.
    let toml = std::fs::read_to_string(&config).unwrap();
    assert!(
        toml.contains("\n# [[policy.source]]\n# name = \"microsoft-365\"\n# path = \"policies/microsoft-365.rules\"\n"),
        "{toml}"
    );
}

/// Writes the expected file from the fixture. Ignored unless asked for, and only with
/// `HOSTGATE_REGENERATE=1` (see this file's header).
#[tokio::test]
#[ignore = "writes tests/fixtures/m365/microsoft-365.rules; run with HOSTGATE_REGENERATE=1"]
async fn regenerate() {
    if std::env::var_os("HOSTGATE_REGENERATE").is_none_or(|v| v != "1") {
        eprintln!("set HOSTGATE_REGENERATE=1 to write {}", fixtures().display());
        return;
    }
    let o = import(&fixture("endpoints-v1.json"), &fixture("version-v1.json"), &fixtures(), &[]).await;
    assert!(o.status.success(), "{}", describe(&o));
    eprintln!("{}", stdout(&o));
}
