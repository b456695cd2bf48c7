//! Decisions over the shipped configuration (`config/hostgate.toml`): every endpoint the
//! imported pages list is let through, lookalikes are denied, and scheme, port and path
//! constraints behave as documented.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::path::Path;

use hostgate_matcher::{Host, Matches};
use hostgate_proxy::config::Config;
use hostgate_proxy::policy::{Action, GroupId, Policy, Query, Rule, Scheme};

fn shipped() -> Policy {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/hostgate.toml");
    let config = Config::load(&path).unwrap();
    Policy::load(&config.policy_inputs()).unwrap_or_else(|e| panic!("{e}"))
}

fn decide(p: &Policy, host: &str, scheme: Scheme, port: u16, path: Option<&str>) -> Action {
    let host = Host::new(host).unwrap();
    p.decide(&Query { host: &host, scheme, port, path, group: GroupId::NONE }, &mut Matches::new()).action
}

/// A name the rule's pattern matches: each `*` label becomes `a1`, each `*` inside a label `x`.
fn instance(rule: &Rule) -> String {
    let text = rule.pattern.as_ref().unwrap().as_str();
    let body = text.strip_prefix('.').unwrap_or(text);
    body.split('.').map(|l| if l == "*" { "a1".to_string() } else { l.replace('*', "x") }).collect::<Vec<_>>().join(".")
}

#[test]
fn every_listed_endpoint_is_let_through() {
    let p = shipped();
    let mut checked = 0;
    for rule in p.rules().iter().filter(|r| r.pattern.is_some()) {
        let host = instance(rule);
        // Ask the way the rule applies: its scheme (TLS when unspecified), its port (the
        // scheme's default otherwise), its path when it has one.
        let scheme = rule.scheme.unwrap_or(Scheme::Https);
        let port = rule.ports.as_ref().map_or(if scheme == Scheme::Http { 80 } else { 443 }, |p| p.ranges()[0].lo);
        let got = decide(&p, &host, scheme, port, rule.path.as_deref());
        assert_ne!(got, Action::Deny, "{host} ({} at {}) is denied", rule.target, rule.origin);
        // Imported rules are never deny, and a name keeps the action its rule implies unless a
        // more specific or stricter rule exists: bypass rules must never be widened to allow
        // silently, so check that the decision is at least as strict as the rule.
        assert!(got >= rule.action || got == Action::Allow, "{host}: {got} weaker than {}", rule.action);
        checked += 1;
    }
    assert!(checked > 400, "only {checked} rules checked");
}

#[test]
fn lookalikes_are_denied() {
    let p = shipped();
    for host in [
        "windowsupdate.com.evil.example",
        "evilwindowsupdate.com",
        "login.live.com.evil.io",
        "xlogin.live.com.attacker.net",
        "microsoft.com.evil.example",
        "lync.com",               // the apex of a `*.`-only rule
        "blob.core.windows.net",  // the apex of `*.blob.core.windows.net`
        "servicebus.windows.net", // the apex of `*.servicebus.windows.net`
        "a.cdn.onenote.net",      // `*cdn.onenote.net` covers one label only
        "cdnx.onenote.net",
        "a.onedrive.live.com.evil", // below a public name, above nothing
        "example.com",
    ] {
        assert_eq!(decide(&p, host, Scheme::Https, 443, None), Action::Deny, "{host}");
    }
}

#[test]
fn documented_decisions() {
    let p = shipped();
    let https = |h: &str| decide(&p, h, Scheme::Https, 443, None);
    // Microsoft endpoints bypass inspection.
    assert_eq!(https("login.live.com"), Action::Bypass);
    assert_eq!(https("a.b.lync.com"), Action::Bypass);
    assert_eq!(https("fe2.update.microsoft.com"), Action::Bypass);
    assert_eq!(https("site-cdn.onenote.net"), Action::Bypass);
    assert_eq!(https("cdn.onenote.net"), Action::Bypass);
    // The contradiction: page 003's text wins over its own table, blob storage stays inspected.
    assert_eq!(https("anyaccount.blob.core.windows.net"), Action::Allow);
    // Third-party names are allowed, not bypassed.
    assert_eq!(https("github.com"), Action::Allow);
    assert_eq!(https("x.branch.io"), Action::Allow);
    // `.example` placeholders: `<tenant>` is unset in the shipped `[vars]`, and an unset
    // placeholder is exactly one label (it used to be widened to a leftmost `*`, one or more
    // labels, so `<tenant>.onmicrosoft.com` let `a.b.onmicrosoft.com` through too).
    assert_eq!(https("contoso.sharepoint.com"), Action::Bypass);
    assert_eq!(https("contoso-my.sharepoint.com"), Action::Bypass);
    assert_eq!(https("contoso.onmicrosoft.com"), Action::Bypass);
    assert_eq!(https("a.contoso.onmicrosoft.com"), Action::Deny);
    assert_eq!(https("onmicrosoft.com"), Action::Deny);
}

#[test]
fn scheme_port_and_path_constraints() {
    let p = shipped();
    // NCSI: plain HTTP to *.msftncsi.com, path /ncsi.txt only.
    assert_eq!(decide(&p, "www.msftncsi.com", Scheme::Http, 80, Some("/ncsi.txt")), Action::Allow);
    assert_eq!(decide(&p, "www.msftncsi.com", Scheme::Http, 80, Some("/other")), Action::Deny);
    // TPM attestation over TLS without inspection: the path is not visible, the host decides.
    assert_eq!(decide(&p, "ekop.intel.com", Scheme::Https, 443, None), Action::Allow);
    assert_eq!(decide(&p, "ekop.intel.com", Scheme::Https, 443, Some("/ekcertservice")), Action::Allow);
    assert_eq!(decide(&p, "ekop.intel.com", Scheme::Https, 443, Some("/elsewhere")), Action::Deny);
    // A port-constrained rule (`https://*.<regionname>.logic.azure.com:443`, page 004).
    assert_eq!(decide(&p, "prod1.westus2.logic.azure.com", Scheme::Https, 443, None), Action::Bypass);
    assert_eq!(decide(&p, "prod1.westus2.logic.azure.com", Scheme::Https, 8443, None), Action::Deny);
    assert_eq!(decide(&p, "prod1.westus2.logic.azure.com", Scheme::Http, 443, None), Action::Deny);
    // `https://` rules do not cover plain HTTP.
    assert_eq!(decide(&p, "ztd.dds.microsoft.com", Scheme::Https, 443, None), Action::Bypass);
}
