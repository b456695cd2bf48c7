//! The `hostgate` binary end to end: `check`, `explain` and `import` as an operator runs them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn hostgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hostgate")).args(args).current_dir(root()).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[test]
fn check_passes_on_the_shipped_config() {
    let o = hostgate(&["check"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("config/policies/microsoft-managed-desktop.rules: 347 rules (bypass 324, allow 23, deny 0)"),
        "{out}"
    );
    assert!(out.contains("total: 415 rules (bypass 373, allow 42, deny 0), 4 inactive"), "{out}");
    assert!(out.contains("matcher "), "{out}");
    assert!(
        out.contains("warning[path-unenforceable]: path `/ekcertservice` is not enforceable without TLS inspection"),
        "{out}"
    );
    assert!(
        out.contains("warning[unresolved-placeholder]: <tenant> has no value in [vars]: widened to `*` within one label (pattern `<*>.onmicrosoft.com`)"),
        "{out}"
    );
    assert!(out.lines().any(|l| l.starts_with("lint: ") && l.contains("shadowed")), "{out}");
    assert!(out.ends_with("ok: the configuration is usable\n"), "{out}");
}

/// A scratch configuration directory with one rule file.
fn scratch(config: &str, rules: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hostgate.toml"), config).unwrap();
    std::fs::write(dir.path().join("a.rules"), rules).unwrap();
    dir
}

const CONFIG: &str = "[policy]\ndefault = \"deny\"\n\n[[policy.source]]\npath = \"a.rules\"\ndefault = \"bypass\"\n";

fn check_in(dir: &Path) -> Output {
    hostgate(&["check", "--config", dir.join("hostgate.toml").to_str().unwrap()])
}

#[test]
fn check_reports_bad_rules_with_file_and_line() {
    let dir = scratch(CONFIG, "# fine\n*.lync.com\nallow mail.*\nallow ftp://x.com\npermit y.com\n");
    let o = check_in(dir.path());
    assert!(!o.status.success());
    let err = stderr(&o);
    let file = dir.path().join("a.rules").display().to_string();
    assert!(
        err.contains(&format!("{file}:3: bad pattern `mail.*`: the top-level (rightmost) label cannot contain `*`")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{file}:4: unsupported scheme `ftp://` (http, https, or udp with an address)")),
        "{err}"
    );
    assert!(err.contains(&format!("{file}:5: unknown action `permit` (allow, bypass or deny)")), "{err}");
    assert!(stdout(&o).is_empty(), "nothing printed as if usable");
}

#[test]
fn check_reports_bad_config_keys_and_missing_files() {
    let dir = scratch(&CONFIG.replace("default = \"deny\"", "defualt = \"deny\""), "x.com\n");
    let o = check_in(dir.path());
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("hostgate.toml:2:1: policy.defualt: unknown field `defualt`"), "{err}");

    let dir = scratch(&CONFIG.replace("a.rules", "missing.rules"), "x.com\n");
    let o = check_in(dir.path());
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("missing.rules: cannot read rule file"), "{err}");
    assert!(err.contains("hostgate.toml:5"), "names the config line: {err}");
}

#[test]
fn explain_json_field_by_field() {
    let o =
        hostgate(&["explain", "--json", "LOGIN.live.com.", "evilwindowsupdate.com", "a..b", "x.blob.core.windows.net"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4);

    let v = &lines[0];
    assert_eq!(v["host"], "login.live.com");
    assert_eq!(v["action"], "bypass");
    assert_eq!(v["rule"], "login.live.com");
    assert_eq!(v["source"], "config/policies/microsoft-managed-desktop.rules:56");
    assert_eq!(v["default"], false);
    assert_eq!(v["scheme"], "https");
    assert_eq!(v["port"], 443);
    let others = v["others"].as_array().unwrap();
    assert!(others.iter().any(|o| o["rule"] == "*.live.com" && o["verdict"] == "less-specific"), "{v}");

    let v = &lines[1];
    assert_eq!(
        (&v["host"], &v["action"], &v["rule"], &v["source"]),
        (&"evilwindowsupdate.com".into(), &"deny".into(), &Value::Null, &Value::Null)
    );
    assert_eq!(v["default"], true);

    let v = &lines[2];
    assert_eq!(v["action"], "deny");
    assert_eq!(v["rule"], Value::Null);
    assert!(v["error"].as_str().unwrap().contains("empty label"), "{v}");

    let v = &lines[3];
    assert_eq!(v["action"], "allow");
    assert_eq!(v["rule"], "*.blob.core.windows.net");
}

#[test]
fn explain_with_scheme_port_and_path() {
    let o = hostgate(&["explain", "--json", "--scheme", "http", "--path", "/other", "www.msftncsi.com"]);
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!((v["action"].as_str(), v["port"].as_u64()), (Some("deny"), Some(80)));
    assert!(v["others"].as_array().unwrap().iter().any(|o| o["verdict"] == "path-mismatch"), "{v}");

    let o = hostgate(&["explain", "ekop.intel.com"]);
    let out = stdout(&o);
    assert!(out.starts_with("ekop.intel.com (https, port 443): allow\n"), "{out}");
    assert!(out.contains("not visible without inspection"), "{out}");
}

#[test]
fn import_writes_the_shipped_files() {
    let seeds = root().join("../shared/seeds");
    if !seeds.is_dir() {
        eprintln!("skipped: {} is absent (the pages are not copied into the repository)", seeds.display());
        return;
    }
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&seeds)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    pages.sort();
    let out = tempfile::tempdir().unwrap();
    let mut args = vec!["import", "--from", "ms-learn", "--out", out.path().to_str().unwrap()];
    args.extend(pages.iter().map(|p| p.to_str().unwrap()));
    let o = hostgate(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let report = stdout(&o);
    assert!(report.contains("001_05bb17d7cd734623.txt:"), "findings name the source: {report}");
    assert!(report.contains("groupsapi-prod.outlookgroups.ms"), "{report}");
    for name in [
        "windows-autopatch",
        "microsoft-managed-desktop",
        "windows-autopilot",
        "defender-for-endpoint",
        "configuration-manager",
    ] {
        let file = format!("{name}.rules");
        let got = std::fs::read_to_string(out.path().join(&file)).unwrap();
        let want = std::fs::read_to_string(root().join("config/policies").join(&file)).unwrap();
        assert!(got == want, "{file} differs from the shipped copy");
        assert!(report.contains(&format!("{file}: ")), "{report}");
    }
}
