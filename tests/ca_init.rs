#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report
//! `hostgate ca init` end to end: the real binary writes the CA, and openssl reads it.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use support::tools::{describe, run, stderr, stdout};

/// `hostgate ca init --out DIR args…`.
async fn ca_init(dir: &Path, args: &[&str]) -> Output {
    let mut all = vec!["ca", "init", "--out", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    run(env!("CARGO_BIN_EXE_hostgate"), &all, None).await
}

/// `openssl x509 -in PEM -noout -text`.
async fn openssl_text(pem: &Path) -> String {
    let o = run("openssl", &["x509", "-in", pem.to_str().unwrap(), "-noout", "-text"], None).await;
    assert!(o.status.success(), "{}", describe(&o));
    stdout(&o)
}

#[tokio::test]
async fn init_writes_a_ca_that_openssl_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ca");
    let o = ca_init(&out, &[]).await;
    assert!(o.status.success(), "{}", describe(&o));
    let (cert, key) = (out.join("hostgate-ca.pem"), out.join("hostgate-ca.key"));
    let printed = stdout(&o);
    let (cert_abs, key_abs) = (cert.canonicalize().unwrap(), key.canonicalize().unwrap());
    assert!(printed.contains(&format!("wrote {}", cert_abs.display())), "{printed}");
    assert!(printed.contains(&format!("wrote {}", key_abs.display())), "{printed}");
    assert!(printed.contains("subject CN=hostgate inspection CA, O=hostgate, valid until "), "{printed}");
    assert!(
        printed.contains(&format!(
            "add to the configuration: [inspect] ca_cert = \"{}\" ca_key = \"{}\"",
            cert_abs.display(),
            key_abs.display()
        )),
        "{printed}"
    );
    assert!(printed.contains("as a trusted root on the clients (README: Deploying the inspection CA)"), "{printed}");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);

    let text = openssl_text(&cert).await;
    assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");
    assert!(text.contains("Certificate Sign"), "{text}");
    assert!(text.contains("Subject: CN = hostgate inspection CA, O = hostgate"), "{text}");
    assert!(!text.contains("Name Constraints"), "{text}");

    let cafile = cert.to_str().unwrap();
    let o = run("openssl", &["verify", "-CAfile", cafile, cafile], None).await;
    assert!(o.status.success(), "{}", describe(&o));

    // The key is the certificate's: openssl derives the same public key from both.
    let o = run("openssl", &["x509", "-in", cafile, "-noout", "-pubkey"], None).await;
    let from_cert = stdout(&o);
    let o = run("openssl", &["pkey", "-in", key.to_str().unwrap(), "-pubout"], None).await;
    assert!(o.status.success(), "{}", describe(&o));
    assert_eq!(stdout(&o), from_cert);
}

#[tokio::test]
async fn permit_dns_adds_name_constraints() {
    let dir = tempfile::tempdir().unwrap();
    let o = ca_init(dir.path(), &["--permit-dns", "example.com", "--common-name", "Acme", "--days", "30"]).await;
    assert!(o.status.success(), "{}", describe(&o));
    let text = openssl_text(&dir.path().join("hostgate-ca.pem")).await;
    assert!(text.contains("X509v3 Name Constraints: critical"), "{text}");
    assert!(text.contains("Permitted:"), "{text}");
    assert!(text.contains("DNS:example.com"), "{text}");
    assert!(text.contains("Subject: CN = Acme, O = hostgate"), "{text}");
}

#[tokio::test]
async fn a_second_init_refuses_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let o = ca_init(dir.path(), &[]).await;
    assert!(o.status.success(), "{}", describe(&o));
    let (cert, key) = (dir.path().join("hostgate-ca.pem"), dir.path().join("hostgate-ca.key"));
    let before = (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap());

    let o = ca_init(dir.path(), &[]).await;
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    let err = stderr(&o);
    assert!(err.contains(&format!("hostgate: {}: already exists", cert.display())), "{err}");
    assert!(stdout(&o).is_empty(), "{}", describe(&o));
    assert_eq!((std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap()), before);

    let o = ca_init(dir.path(), &["--force"]).await;
    assert!(o.status.success(), "{}", describe(&o));
    assert_ne!(std::fs::read(&cert).unwrap(), before.0);
    assert_ne!(std::fs::read(&key).unwrap(), before.1);
}

#[tokio::test]
async fn bad_options_exit_non_zero_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let o = ca_init(dir.path(), &["--permit-dns", "not a domain"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(stderr(&o).contains("permitted DNS name \"not a domain\""), "{}", describe(&o));
    // clap's own usage error for a zero validity.
    let o = ca_init(dir.path(), &["--days", "0"]).await;
    assert!(!o.status.success(), "{}", describe(&o));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// `hostgate check` on a configuration whose `[inspect]` names the CA `ca init` wrote: the CA is
/// loaded and reported; a broken key file fails the check, naming the file.
#[tokio::test]
async fn check_loads_the_inspection_ca() {
    let dir = tempfile::tempdir().unwrap();
    let o = ca_init(&dir.path().join("ca"), &[]).await;
    assert!(o.status.success(), "{}", describe(&o));
    let roots = dir.path().join("roots.pem");
    std::fs::copy(dir.path().join("ca/hostgate-ca.pem"), &roots).unwrap();
    std::fs::write(
        dir.path().join("a.rules"),
        "allow a.test\nallow https://b.test/ncsi.txt\nbypass https://c.test/x\n",
    )
    .unwrap();
    let config = dir.path().join("hostgate.toml");
    std::fs::write(
        &config,
        "[policy]\ndefault = \"deny\"\n[[policy.source]]\npath = \"a.rules\"\n\
         [inspect]\nca_cert = \"ca/hostgate-ca.pem\"\nca_key = \"ca/hostgate-ca.key\"\nsystem_roots = false\n\
         extra_roots = [\"roots.pem\"]\n",
    )
    .unwrap();
    let args = ["check", "--config", config.to_str().unwrap()];
    let o = run(env!("CARGO_BIN_EXE_hostgate"), &args, None).await;
    assert!(o.status.success(), "{}", describe(&o));
    let out = stdout(&o);
    assert!(out.contains("inspection: on; CA CN=hostgate inspection CA, O=hostgate (valid until "), "{out}");
    assert!(
        out.contains("; 1 upstream trust anchors; leaves valid 86400 s, 10000 cached at most; non-HTTP denied"),
        "{out}"
    );
    // With inspection on, an allow rule's path is enforceable; a bypass rule's never is.
    assert!(!out.contains("`/ncsi.txt` is not enforceable"), "{out}");
    assert!(out.contains("path `/x` is not enforceable on a bypass rule"), "{out}");

    std::fs::write(
        dir.path().join("ca/hostgate-ca.key"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let o = run(env!("CARGO_BIN_EXE_hostgate"), &args, None).await;
    assert!(!o.status.success(), "{}", describe(&o));
    assert!(stderr(&o).contains("hostgate-ca.key"), "{}", describe(&o));
}
