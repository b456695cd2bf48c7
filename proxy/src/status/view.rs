//! What the operator's view reads and answers with: the state the gateway keeps for it
//! ([`Ops`]: the ring and window, the reload history), a request's [`View`] of the gateway and
//! its query [`Params`], and the [`Page`] it answers.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::recent::Recent;
use crate::config::ListenerKind;
use crate::generation::Generation;
use crate::reload::SourceChange;

/// Reloads the status page keeps.
const RELOADS_KEPT: usize = 10;

/// A response of the operator's view.
#[derive(Debug)]
pub(crate) struct Page {
    /// 200, or 400 for a bad query.
    pub(crate) status: u16,
    /// The content type.
    pub(crate) content_type: &'static str,
    /// The body.
    pub(crate) body: Vec<u8>,
    /// The page's `content-security-policy`, for HTML.
    pub(crate) csp: Option<&'static str>,
}

/// One start or reload, as the status page lists it.
#[derive(Clone, Debug)]
pub(crate) struct ReloadRecord {
    /// When it ended, Unix milliseconds.
    pub(crate) at_ms: u64,
    /// The generation it made (on failure: the one that kept serving).
    pub(crate) generation: u64,
    /// Active rules by action (bypass, allow, deny); zero on failure.
    pub(crate) rules: [usize; 3],
    /// Rules added and removed per file.
    pub(crate) changes: Vec<SourceChange>,
    /// Settings that need a restart.
    pub(crate) needs_restart: Vec<String>,
    /// Why it failed; `None`: it applied.
    pub(crate) error: Option<String>,
    /// Rule hit counts carried over from the previous generation (rules with hits).
    pub(crate) carried: usize,
}

/// What the gateway keeps for the operator, besides the generation's hit counts.
#[derive(Debug)]
pub(crate) struct Ops {
    /// The ring and window; `None` without an admin listener (nothing would read them).
    pub(crate) recent: Option<Arc<Recent>>,
    reloads: Mutex<VecDeque<ReloadRecord>>,
    /// When the gateway started.
    pub(crate) started: SystemTime,
}

impl Ops {
    /// Keeps `recent` (when there is an admin listener to show it).
    pub(crate) fn new(recent: Option<Arc<Recent>>) -> Ops {
        Ops { recent, reloads: Mutex::new(VecDeque::new()), started: SystemTime::now() }
    }

    /// Records a start or reload.
    pub(crate) fn reloaded(&self, r: ReloadRecord) {
        let mut g = self.reloads.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if g.len() == RELOADS_KEPT {
            g.pop_front();
        }
        g.push_back(r);
    }

    /// The reloads kept, newest first.
    pub(crate) fn reloads(&self) -> Vec<ReloadRecord> {
        let g = self.reloads.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        g.iter().rev().cloned().collect()
    }
}

/// What a request to the operator's view reads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct View<'a> {
    /// The generation in force.
    pub(crate) gen: &'a Generation,
    /// The ring, window and reloads.
    pub(crate) ops: &'a Ops,
    /// The bound listeners.
    pub(crate) listeners: &'a [(ListenerKind, SocketAddr)],
    /// The admin listener's address.
    pub(crate) admin: Option<SocketAddr>,
}

/// A 400 answer with `{"error": message}`.
pub(crate) fn json_error(message: &str) -> Page {
    let mut body = serde_json::to_vec_pretty(&serde_json::json!({ "error": message })).unwrap_or_default();
    body.push(b'\n');
    Page { status: 400, content_type: "application/json", body, csp: None }
}

/// A query string's parameters, percent-decoded (`+` is a space).
#[derive(Debug, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn parse(query: &str) -> Params {
        Params(
            query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect(),
        )
    }

    /// The first value of `key`, when given and not empty.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, v)| k == key && !v.is_empty()).map(|(_, v)| v.as_str())
    }

    /// `key` as a flag: `1`, `true`, `yes` or `on`.
    pub(crate) fn flag(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| matches!(v, "1" | "true" | "yes" | "on"))
    }

    /// `key` as a count, or `default`.
    pub(crate) fn count(&self, key: &str, default: usize) -> Result<usize, String> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("{key}: `{v}` is not a count")),
        }
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match (hex(b.get(i + 1)), hex(b.get(i + 2))) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: Option<&u8>) -> Option<u8> {
    match c? {
        c @ b'0'..=b'9' => Some(c - b'0'),
        c @ b'a'..=b'f' => Some(c - b'a' + 10),
        c @ b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// `since` as a time: Unix seconds, or a duration ago (`"2h"`, `"30m"`, `"1d"`).
pub(crate) fn parse_since(v: &str, now: SystemTime) -> Result<SystemTime, String> {
    if let Ok(secs) = v.parse::<u64>() {
        return Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
    }
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("since: `{v}` is neither Unix seconds nor a duration (30m, 2h, 7d)"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("since: `{v}` is neither Unix seconds nor a duration (30m, 2h, 7d)")),
    };
    Ok(now.checked_sub(Duration::from_secs(secs)).unwrap_or(SystemTime::UNIX_EPOCH))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_decoded() {
        let p = Params::parse("explain=a%2Eb.test&client=10.0.0.1&x=%3Cscript%3E+1&bad=%zz%4&e=");
        assert_eq!(p.get("explain"), Some("a.b.test"));
        assert_eq!(p.get("client"), Some("10.0.0.1"));
        assert_eq!(p.get("x"), Some("<script> 1"));
        assert_eq!(p.get("bad"), Some("%zz%4"));
        assert_eq!(p.get("e"), None);
        assert_eq!(p.count("n", 5), Ok(5));
        assert!(Params::parse("n=x").count("n", 5).is_err());
    }

    #[test]
    fn since() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100_000);
        assert_eq!(parse_since("5", now), Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(5)));
        assert_eq!(parse_since("2h", now), Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(92_800)));
        assert!(parse_since("2w", now).is_err());
        assert!(parse_since("h", now).is_err());
    }
}
