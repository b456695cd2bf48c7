//! An LDAP directory (OpenLDAP, Active Directory) as the password check: a simple bind as the
//! user, found by a DN template or by a service account's search; then the user's groups (its
//! `memberOf` values, or the groups under `group_search_base` that list it). LDAPS or StartTLS,
//! with the system's roots or the configured CA.
//!
//! One connection per check (the caches in [`super::Authenticator`] keep the directory's load
//! to one bind per user per `cache_ttl`). Every step has `timeout`; a directory that cannot be
//! reached, times out, or refuses the service account is *unavailable* (the gateway fails
//! closed), while a refused user bind is a *bad password*.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ldap3::{dn_escape, ldap_escape, LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::config::{LdapConfig, LdapFind};

/// LDAP result code `invalidCredentials`.
const INVALID_CREDENTIALS: u32 = 49;

/// One configured directory.
pub(crate) struct Directory {
    url: String,
    starttls: bool,
    tls: Option<Arc<rustls::ClientConfig>>,
    find: LdapFind,
    service_password: Option<String>,
    group_attribute: String,
    group_search_base: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").field("url", &self.url).field("starttls", &self.starttls).finish_non_exhaustive()
    }
}

impl Directory {
    /// Reads the CA file and the service account's password file.
    pub(crate) fn new(c: &LdapConfig) -> Result<Directory, String> {
        let tls = match &c.ca {
            None => None,
            Some(path) => Some(Arc::new(client_config(path)?)),
        };
        let service_password = match &c.find {
            LdapFind::Template(_) => None,
            LdapFind::Search { bind_password_file, .. } => {
                let text = std::fs::read_to_string(bind_password_file).map_err(|e| {
                    format!("{}: cannot read auth.ldap.bind_password_file ({e})", bind_password_file.display())
                })?;
                let pw = text.lines().next().unwrap_or("").to_string();
                if pw.is_empty() {
                    return Err(format!("{}: the service account's password is empty", bind_password_file.display()));
                }
                Some(pw)
            }
        };
        Ok(Directory {
            url: c.url.clone(),
            starttls: c.starttls,
            tls,
            find: c.find.clone(),
            service_password,
            group_attribute: c.group_attribute.clone(),
            group_search_base: c.group_search_base.clone(),
            timeout: c.timeout,
        })
    }

    /// `ldap <url> (StartTLS)`, for `hostgate check`.
    pub(crate) fn describe(&self) -> String {
        format!("LDAP {}{}", self.url, if self.starttls { " with StartTLS" } else { "" })
    }

    /// `Ok(Some(groups))` for good credentials, `Ok(None)` for bad ones, `Err` when the
    /// directory did not answer.
    pub(crate) async fn check(&self, user: &str, password: &str) -> Result<Option<Vec<String>>, String> {
        // An empty password makes a simple bind "unauthenticated", which directories accept.
        if password.is_empty() {
            return Ok(None);
        }
        let whole = self.timeout.saturating_mul(4);
        tokio::time::timeout(whole, self.check_inner(user, password))
            .await
            .unwrap_or_else(|_| Err(format!("LDAP {}: no answer within {whole:?}", self.url)))
    }

    async fn check_inner(&self, user: &str, password: &str) -> Result<Option<Vec<String>>, String> {
        let at = |e: ldap3::LdapError| format!("LDAP {}: {e}", self.url);
        let mut settings = LdapConnSettings::new().set_conn_timeout(self.timeout).set_starttls(self.starttls);
        if let Some(tls) = &self.tls {
            settings = settings.set_config(tls.clone());
        }
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &self.url).await.map_err(at)?;
        ldap3::drive!(conn);
        ldap.with_timeout(self.timeout);
        let dn = match &self.find {
            LdapFind::Template(t) => t.replace("{user}", &dn_escape(user)),
            LdapFind::Search { base, filter, bind_dn, .. } => {
                let pw = self.service_password.as_deref().unwrap_or("");
                ldap.with_timeout(self.timeout);
                ldap.simple_bind(bind_dn, pw)
                    .await
                    .map_err(at)?
                    .success()
                    .map_err(|e| format!("LDAP {}: the service account {bind_dn} cannot bind: {e}", self.url))?;
                let filter = filter.replace("{user}", &ldap_escape(user));
                ldap.with_timeout(self.timeout);
                let (entries, _) =
                    ldap.search(base, Scope::Subtree, &filter, vec!["1.1"]).await.map_err(at)?.success().map_err(at)?;
                if entries.len() != 1 {
                    // No such user (or two: a name must find one entry).
                    let _ = ldap.unbind().await;
                    return Ok(None);
                }
                let Some(entry) = entries.into_iter().next() else { return Ok(None) };
                SearchEntry::construct(entry).dn
            }
        };
        ldap.with_timeout(self.timeout);
        let bound = ldap.simple_bind(&dn, password).await.map_err(at)?;
        match bound.rc {
            0 => {}
            INVALID_CREDENTIALS => {
                let _ = ldap.unbind().await;
                return Ok(None);
            }
            rc => return Err(format!("LDAP {}: bind as {dn}: result {rc} {}", self.url, bound.text)),
        }
        let groups = match &self.group_search_base {
            Some(base) => {
                let filter = format!("(|(member={0})(uniqueMember={0}))", ldap_escape(&dn));
                ldap.with_timeout(self.timeout);
                let (entries, _) =
                    ldap.search(base, Scope::Subtree, &filter, vec!["1.1"]).await.map_err(at)?.success().map_err(at)?;
                entries.into_iter().map(|e| SearchEntry::construct(e).dn).collect()
            }
            None => {
                ldap.with_timeout(self.timeout);
                let (entries, _) = ldap
                    .search(&dn, Scope::Base, "(objectClass=*)", vec![self.group_attribute.as_str()])
                    .await
                    .map_err(at)?
                    .success()
                    .map_err(at)?;
                entries
                    .into_iter()
                    .flat_map(|e| {
                        let mut attrs = SearchEntry::construct(e).attrs;
                        // Attribute names are case-insensitive.
                        let key = attrs.keys().find(|k| k.eq_ignore_ascii_case(&self.group_attribute)).cloned();
                        key.and_then(|k| attrs.remove(&k)).unwrap_or_default()
                    })
                    .collect()
            }
        };
        let _ = ldap.unbind().await;
        Ok(Some(groups))
    }
}

/// A rustls client configuration trusting only the CA certificates in `path` (PEM).
fn client_config(path: &Path) -> Result<rustls::ClientConfig, String> {
    let err = |m: String| format!("{}: auth.ldap.ca: {m}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(format!("cannot read ({e})")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(err("no certificate in the file".to_string()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in certs {
        roots.add(c).map_err(|e| err(format!("not a usable trust anchor ({e})")))?;
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}
