//! The action a page implies for each target, and why. The Microsoft pages ask to exempt their
//! endpoints from TLS inspection and proxy authentication (some only accept specific TLS 1.2
//! cipher suites), so a Microsoft endpoint is `bypass`; everything the gateway should keep
//! inspecting is `allow`, with the reason written next to the rule: names under
//! `blob.core.windows.net` (the Defender for Endpoint page says never to exclude it from network
//! inspection), what a page's own table or text says must stay inspected, names of third parties
//! or of owners this module does not know, wildcards over domains any Azure customer can publish
//! under, and rules with a path (a path is only visible on a connection the gateway reads). The
//! owner tables below are the importer's knowledge; they are data, reviewed like code. This
//! module does not parse anything.

use super::endpoint::Target;
use crate::policy::Action;

/// Registrable domains (and the names under them) run by Microsoft as part of the services
/// these pages describe.
const MICROSOFT: &[&str] = &[
    "1drv.com",
    "aka.ms",
    "aspnetcdn.com",
    "azure-automation.net",
    "azure.com",
    "azure.net",
    "azureedge.net",
    "azurewebsites.net",
    "bing.com",
    "cloudappsecurity.com",
    "cloudapp.net",
    "gfx.ms",
    "hotmail.com",
    "live.com",
    "live.net",
    "livefilestore.com",
    "lync.com",
    "microsoft-tst.com",
    "microsoft.com",
    "microsoftazuread-sso.com",
    "microsoftonline-p.com",
    "microsoftonline-p.net",
    "microsoftonline.com",
    "msappproxy.net",
    "msecnd.net",
    "msedge.net",
    "msftconnecttest.com",
    "msftncsi.com",
    "msn.com",
    "s-msedge.net",
    "msocdn.com",
    "mstea.ms",
    "o365weve.com",
    "office.com",
    "office.net",
    "office365.com",
    "onedrive.com",
    "onenote.com",
    "onenote.net",
    "onestore.ms",
    "onmicrosoft.com",
    "outlook.com",
    "outlookgroups.ms",
    "passport.net",
    "phonefactor.net",
    "powerbi.com",
    "sfx.ms",
    "sharepoint.com",
    "sharepointonline.com",
    "skype.com",
    "skypeassets.com",
    "svc.ms",
    "trafficmanager.net",
    "trouter.io",
    "usgovcloudapi.net",
    "virtualearth.net",
    "visualstudio.com",
    "windows.com",
    "windows.net",
    "windowsazure.com",
    "windowsupdate.com",
];

/// Domains of other owners the pages list, with the owner named in the rule's comment.
const THIRD_PARTY: &[(&str, &str)] = &[
    ("adjust.com", "Adjust"),
    ("akamaiedge.net", "Akamai"),
    ("akamaihd.net", "Akamai"),
    ("akamaitechnologies.com", "Akamai"),
    ("amd.com", "AMD, TPM vendor"),
    ("bootstrapcdn.com", "BootstrapCDN"),
    ("branch.io", "Branch"),
    ("crashlytics.com", "Crashlytics, Google"),
    ("fabric.io", "Fabric, Google"),
    ("github.com", "GitHub: Microsoft-owned, but it serves anyone's content"),
    ("githubusercontent.com", "GitHub: Microsoft-owned, but it serves anyone's content"),
    ("google-analytics.com", "Google"),
    ("intel.com", "Intel, TPM vendor"),
    ("linkedin.com", "LinkedIn: Microsoft-owned, but not part of the Microsoft 365 service"),
    ("localytics.com", "Localytics"),
    ("mktoresp.com", "Marketo"),
    ("optimizely.com", "Optimizely"),
    ("samsungapps.com", "Samsung"),
    ("uservoice.com", "UserVoice"),
];

/// Domains under which any Azure customer can publish: a wildcard over one of them lets every
/// tenant's content through, so it stays inspected even though Microsoft runs the domain.
const MULTI_TENANT: &[&str] = &[
    "azureedge.net",
    "azurefd.net",
    "azurewebsites.net",
    "blob.core.windows.net",
    "cloudapp.azure.com",
    "cloudapp.net",
    "msappproxy.net",
    "msecnd.net",
    "servicebus.windows.net",
    "trafficmanager.net",
    "web.core.windows.net",
];

/// Domains that must stay inspected wherever a page lists them, and who says so.
const ALWAYS_INSPECTED: &[(&str, &str)] = &[(
    "blob.core.windows.net",
    "the Defender for Endpoint network page says never exclude *.blob.core.windows.net from network inspection",
)];

/// Whether `host` (a pattern or a literal suffix) is `domain` or under it.
fn is_under(host: &str, domain: &str) -> bool {
    let host = host.trim_start_matches('.');
    host == domain || host.strip_suffix(domain).is_some_and(|rest| rest.ends_with('.'))
}

/// Who runs a target's domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    Microsoft,
    ThirdParty(&'static str),
    Unknown,
}

/// Who runs the domain of `target`, judged on its literal suffix.
pub(crate) fn owner(target: &Target) -> Owner {
    let suffix = target.literal_suffix();
    if let Some((_, who)) = THIRD_PARTY.iter().find(|(d, _)| is_under(&suffix, d)) {
        return Owner::ThirdParty(who);
    }
    if MICROSOFT.iter().any(|d| is_under(&suffix, d)) {
        return Owner::Microsoft;
    }
    Owner::Unknown
}

/// What the page says, where the target came from, that bears on the action.
#[derive(Clone, Debug, Default)]
pub(crate) struct Context<'a> {
    /// The value of a "Bypass HTTPS inspection" column on the target's row, and the row's line.
    pub(crate) bypass_column: Option<(bool, usize)>,
    /// Names this page's text says never to exclude from inspection, with the line saying so.
    pub(crate) page_inspected: &'a [(String, usize)],
    /// The page says the endpoint only accepts specific TLS cipher suites (line).
    pub(crate) cipher_note: Option<usize>,
}

/// The action for a target and the reasons, for the rule's comment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) action: Action,
    pub(crate) reasons: Vec<String>,
    /// The owner is not in the importer's tables.
    pub(crate) unknown_owner: bool,
}

/// Decides the action for `target`.
pub(crate) fn decide(target: &Target, ctx: &Context<'_>) -> Decision {
    if target.is_whole_placeholder() {
        return Decision {
            action: Action::Allow,
            reasons: vec![
                "the whole host is a placeholder for your own server: inactive until [vars] defines it".to_owned()
            ],
            unknown_owner: false,
        };
    }
    let mut inspect = Vec::new();
    let mut notes = Vec::new();
    let host = target.host.as_str();
    let page_says = ctx.page_inspected.iter().find(|(name, _)| is_under(host, name.trim_start_matches("*.")));
    let column_yes = ctx.bypass_column.filter(|(yes, _)| *yes);
    if let Some((_, line)) = page_says {
        let mut reason = format!("kept inspected: line {line} says never exclude it from network inspection");
        if let Some((_, row)) = column_yes {
            reason.push_str(&format!(" (overrides the table's \"Bypass HTTPS inspection: Yes\" on line {row})"));
        }
        inspect.push(reason);
    } else if let Some((_, who)) = ALWAYS_INSPECTED.iter().find(|(d, _)| is_under(host, d)) {
        inspect.push(format!("kept inspected: {who}"));
    }
    match ctx.bypass_column {
        Some((false, line)) => inspect.push(format!("the table says \"Bypass HTTPS inspection: No\" (line {line})")),
        Some((true, line)) if inspect.is_empty() => {
            notes.push(format!("the table says \"Bypass HTTPS inspection: Yes\" (line {line})"))
        }
        _ => {}
    }
    let who = owner(target);
    match who {
        Owner::ThirdParty(name) => inspect.push(format!("third party ({name}): kept inspected")),
        Owner::Unknown => inspect.push("owner unknown to the importer: kept inspected".to_owned()),
        Owner::Microsoft => {}
    }
    if target.is_wildcard() {
        let suffix = target.literal_suffix();
        if let Some(domain) = MULTI_TENANT.iter().find(|d| is_under(&suffix, d)) {
            if !inspect.iter().any(|r| r.starts_with("kept inspected: ")) {
                inspect.push(format!("wildcard over {domain}, where any Azure customer can publish: kept inspected"));
            }
        }
    }
    if target.path.is_some() {
        inspect.push("has a path, which the gateway only sees on a connection it reads".to_owned());
    }
    if let Some(line) = ctx.cipher_note {
        notes.push(format!("the page says it only accepts TLS 1.2 with specific cipher suites (line {line})"));
    }
    if inspect.is_empty() {
        Decision { action: Action::Bypass, reasons: notes, unknown_owner: false }
    } else {
        Decision { action: Action::Allow, reasons: inspect, unknown_owner: who == Owner::Unknown }
    }
}

#[cfg(test)]
mod tests {
    use super::super::endpoint::parse;
    use super::*;

    fn t(s: &str) -> Target {
        parse(s).unwrap().target
    }

    #[test]
    fn microsoft_endpoints_are_bypassed() {
        let d = decide(&t("*.lync.com"), &Context::default());
        assert_eq!(d.action, Action::Bypass);
        assert!(d.reasons.is_empty());
        assert_eq!(decide(&t("<tenant>.sharepoint.com"), &Context::default()).action, Action::Bypass);
    }

    #[test]
    fn blob_storage_stays_inspected_everywhere() {
        let d = decide(&t("*.blob.core.windows.net"), &Context::default());
        assert_eq!(d.action, Action::Allow);
        assert_eq!(d.reasons.len(), 1, "{:?}", d.reasons);
        assert!(d.reasons[0].contains("never exclude"));
        let d = decide(&t("cmbitsstore.blob.core.windows.net"), &Context::default());
        assert_eq!(d.action, Action::Allow);
    }

    #[test]
    fn page_text_overrides_its_table() {
        let said = vec![("*.blob.core.windows.net".to_owned(), 66)];
        let ctx = Context { bypass_column: Some((true, 96)), page_inspected: &said, cipher_note: None };
        let d = decide(&t("*.blob.core.windows.net:443"), &ctx);
        assert_eq!(d.action, Action::Allow);
        assert!(d.reasons[0].contains("line 66"), "{:?}", d.reasons);
        assert!(d.reasons[0].contains("line 96"), "{:?}", d.reasons);
        let d = decide(&t("*.ods.opinsights.azure.com"), &ctx);
        assert_eq!(d.action, Action::Bypass);
        assert!(d.reasons[0].contains("Yes"));
    }

    #[test]
    fn bypass_column_no_means_allow() {
        let ctx = Context { bypass_column: Some((false, 9)), ..Context::default() };
        assert_eq!(decide(&t("x.microsoft.com"), &ctx).action, Action::Allow);
    }

    #[test]
    fn third_parties_unknown_owners_multi_tenant_wildcards_and_paths_are_allowed() {
        let d = decide(&t("*.branch.io"), &Context::default());
        assert_eq!(d.action, Action::Allow);
        assert!(d.reasons[0].contains("Branch"));
        let d = decide(&t("*.mesh.com"), &Context::default());
        assert_eq!(d.action, Action::Allow);
        assert!(d.unknown_owner);
        let d = decide(&t("*.azureedge.net"), &Context::default());
        assert_eq!(d.action, Action::Allow);
        assert!(d.reasons[0].contains("azureedge.net"));
        // A named host on the same domain is Microsoft's own.
        assert_eq!(decide(&t("mlccdnprod.azureedge.net"), &Context::default()).action, Action::Bypass);
        let d = decide(&t("https://ekop.intel.com/ekcertservice"), &Context::default());
        assert_eq!(d.action, Action::Allow);
        assert_eq!(d.reasons.len(), 2);
    }

    #[test]
    fn a_whole_host_placeholder_is_your_own_server() {
        let d = decide(&t("https://<FQDN for x>"), &Context::default());
        assert_eq!(d.action, Action::Allow);
        assert!(!d.unknown_owner);
        assert!(d.reasons[0].contains("[vars]"));
    }

    #[test]
    fn cipher_suite_note_is_recorded_on_a_bypass() {
        let ctx = Context { cipher_note: Some(68), ..Context::default() };
        let d = decide(&t("configmgrbits.cdn.manage.microsoft.com"), &ctx);
        assert_eq!(d.action, Action::Bypass);
        assert!(d.reasons[0].contains("cipher suites"));
    }
}
