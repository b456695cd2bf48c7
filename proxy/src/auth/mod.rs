//! Proxy authentication (`[auth]`) on the explicit proxy: `Proxy-Authorization: Basic`, checked
//! against an htpasswd file or an LDAP directory, for what the policy **allows** (a `bypass`
//! name is served without credentials, as the vendors' pages ask; a `deny` is refused with `403`
//! before anyone is asked), for the client groups that require it.
//!
//! This module owns the check and its state: the credential caches (successes for
//! `cache_ttl`, failures for `negative_ttl`, keyed by an HMAC of the credentials under a key
//! made at start, so that no password is kept), the per-address throttle (after
//! `throttle_failures` failures within `throttle_window` an address gets `429` without a check),
//! the directory's up/down state (logged when it changes). It does not decide (the policy
//! does), and it does not build responses (see [`crate::outcome`]); the step the connect
//! listener and the request pipeline call, which asks the policy who must sign in, is
//! `crate::forward::signin::gate`.
//!
//! A directory outage fails closed: a request that needs authentication gets `503`
//! (`auth-unavailable`), and nothing that needs none stops flowing.

mod htpasswd;
mod ldap;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use base64::Engine as _;
use http::header::{HeaderMap, HeaderValue, PROXY_AUTHORIZATION};
use ring::hmac;

use crate::config::{AuthBackend, AuthConfig};

/// Who signed in.
#[derive(Debug)]
pub(crate) struct Identity {
    /// The user name, as logged (`user`).
    pub(crate) user: Arc<str>,
    /// The directory groups (DNs) the user is a member of; empty for htpasswd users.
    pub(crate) groups: Vec<String>,
}

/// The result of one check.
#[derive(Debug)]
pub(crate) enum Checked {
    /// Good credentials.
    Ok(Arc<Identity>),
    /// No `Proxy-Authorization`, or another scheme than Basic.
    Missing,
    /// Wrong user or password, or unreadable credentials.
    Bad,
    /// Too many failures from this address lately.
    Throttled,
    /// The directory did not answer.
    Unavailable(String),
}

enum Backend {
    Htpasswd(Arc<htpasswd::Htpasswd>),
    Ldap(Box<ldap::Directory>),
}

/// The authenticator of one generation (rebuilt on reload: the htpasswd file and the LDAP
/// settings are read again, and the caches start empty).
pub(crate) struct Authenticator {
    challenge: HeaderValue,
    backend: Backend,
    key: hmac::Key,
    positive: moka::future::Cache<[u8; 32], Arc<Identity>>,
    negative: moka::future::Cache<[u8; 32], ()>,
    failures: moka::sync::Cache<IpAddr, Arc<AtomicU32>>,
    throttle: u32,
    /// Whether the last directory call failed (to log a change once, not every request).
    down: AtomicBool,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match &self.backend {
            Backend::Htpasswd(h) => format!("{h:?}"),
            Backend::Ldap(d) => format!("{d:?}"),
        };
        f.debug_struct("Authenticator").field("backend", &backend).finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Loads the backend of `config` (reads the htpasswd file; the LDAP CA and service password).
    ///
    /// # Errors
    /// A message naming the file (and line) at fault.
    pub(crate) fn load(config: &AuthConfig) -> Result<Authenticator, String> {
        let backend = match &config.backend {
            AuthBackend::Htpasswd(path) => Backend::Htpasswd(Arc::new(htpasswd::Htpasswd::load(path)?)),
            AuthBackend::Ldap(l) => Backend::Ldap(Box::new(ldap::Directory::new(l)?)),
        };
        let challenge = HeaderValue::from_str(&format!("Basic realm=\"{}\", charset=\"UTF-8\"", config.realm))
            .map_err(|_| format!("auth.realm `{}` cannot be sent in a header", config.realm))?;
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .map_err(|_| "no randomness for the credential cache key".to_string())?;
        Ok(Authenticator {
            challenge,
            backend,
            key,
            positive: moka::future::Cache::builder().max_capacity(100_000).time_to_live(config.cache_ttl).build(),
            negative: moka::future::Cache::builder().max_capacity(100_000).time_to_live(config.negative_ttl).build(),
            failures: moka::sync::Cache::builder().max_capacity(100_000).time_to_live(config.throttle_window).build(),
            throttle: config.throttle_failures,
            down: AtomicBool::new(false),
        })
    }

    /// `Basic realm="…", charset="UTF-8"`: the `Proxy-Authenticate` of a `407`.
    pub(crate) fn challenge(&self) -> HeaderValue {
        self.challenge.clone()
    }

    /// What the backend is, for `hostgate check` and the start-up log.
    pub(crate) fn describe(&self) -> String {
        match &self.backend {
            Backend::Htpasswd(h) => format!("htpasswd, {} users", h.len()),
            Backend::Ldap(d) => d.describe(),
        }
    }

    /// Checks the credentials in `headers` for a client at `client`.
    pub(crate) async fn check(&self, headers: &HeaderMap, client: IpAddr) -> Checked {
        if self.failures.get(&client).is_some_and(|n| n.load(Ordering::Relaxed) >= self.throttle) {
            return Checked::Throttled;
        }
        let (user, password) = match basic(headers) {
            Credentials::Missing => return Checked::Missing,
            Credentials::Unreadable => {
                self.failed(client);
                return Checked::Bad;
            }
            Credentials::Basic(u, p) => (u, p),
        };
        let tag = hmac::sign(&self.key, &[user.as_bytes(), b"\0", password.as_bytes()].concat());
        let mut key = [0u8; 32];
        key.copy_from_slice(tag.as_ref());
        if let Some(id) = self.positive.get(&key).await {
            return Checked::Ok(id);
        }
        if self.negative.get(&key).await.is_some() {
            self.failed(client);
            return Checked::Bad;
        }
        let checked = match &self.backend {
            Backend::Htpasswd(h) => {
                let (h, u, p) = (h.clone(), user.clone(), password);
                // bcrypt is tens of milliseconds of CPU: not on the event loop.
                match tokio::task::spawn_blocking(move || h.verify(&u, &p)).await {
                    Ok(true) => Ok(Some(Vec::new())),
                    Ok(false) => Ok(None),
                    Err(e) => Err(format!("password check task: {e}")),
                }
            }
            Backend::Ldap(d) => d.check(&user, &password).await,
        };
        match checked {
            Ok(Some(groups)) => {
                self.up();
                let id = Arc::new(Identity { user: Arc::from(user.as_str()), groups });
                self.positive.insert(key, id.clone()).await;
                Checked::Ok(id)
            }
            Ok(None) => {
                self.up();
                self.negative.insert(key, ()).await;
                self.failed(client);
                Checked::Bad
            }
            Err(e) => {
                if !self.down.swap(true, Ordering::Relaxed) {
                    tracing::error!(error = %e, "auth: the directory is unavailable; requests that need authentication get 503 until it answers (bypass traffic keeps flowing)");
                }
                Checked::Unavailable(e)
            }
        }
    }

    fn failed(&self, client: IpAddr) {
        self.failures.get_with(client, || Arc::new(AtomicU32::new(0))).fetch_add(1, Ordering::Relaxed);
    }

    fn up(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("auth: the directory answers again");
        }
    }
}

enum Credentials {
    Missing,
    Unreadable,
    Basic(String, String),
}

/// `Proxy-Authorization: Basic base64(user:password)` (RFC 7617; UTF-8). Another scheme is
/// "missing" (the client may try Basic after the `407`).
fn basic(headers: &HeaderMap) -> Credentials {
    let Some(value) = headers.get(PROXY_AUTHORIZATION) else { return Credentials::Missing };
    let Ok(value) = value.to_str() else { return Credentials::Unreadable };
    let value = value.trim();
    let Some((scheme, token)) = value.split_once(' ') else { return Credentials::Missing };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Credentials::Missing;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(token.trim()) else {
        return Credentials::Unreadable;
    };
    let Ok(text) = String::from_utf8(decoded) else { return Credentials::Unreadable };
    match text.split_once(':') {
        Some((user, password)) if !user.is_empty() && !user.chars().any(char::is_control) => {
            Credentials::Basic(user.to_string(), password.to_string())
        }
        _ => Credentials::Unreadable,
    }
}

/// The authenticator `config` asks for, if any.
///
/// # Errors
/// As [`Authenticator::load`].
pub(crate) fn load(config: &crate::config::Config) -> Result<Option<Arc<Authenticator>>, String> {
    config.auth.as_ref().map(|a| Authenticator::load(a).map(Arc::new)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(PROXY_AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn basic_credentials() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert!(matches!(basic(&HeaderMap::new()), Credentials::Missing));
        assert!(matches!(basic(&headers("Negotiate abc")), Credentials::Missing));
        assert!(matches!(basic(&headers("Basic !!!")), Credentials::Unreadable));
        assert!(matches!(basic(&headers(&format!("Basic {}", b64("nocolon")))), Credentials::Unreadable));
        assert!(matches!(basic(&headers(&format!("Basic {}", b64(":pw")))), Credentials::Unreadable));
        match basic(&headers(&format!("basic {}", b64("alice:pa:ss wörd")))) {
            Credentials::Basic(u, p) => assert_eq!((u.as_str(), p.as_str()), ("alice", "pa:ss wörd")),
            _ => panic!("not read"),
        }
    }
}
