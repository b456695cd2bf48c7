//! The operator's view: per-rule hit counts, the recent decisions and their window, the reload
//! history, and what the admin listener shows of them: the status page at `/` (server-rendered
//! HTML, read-only) and the JSON of `/rules`, `/recent` and `/top`; and `hostgate suggest`,
//! which turns denied names into rule lines.
//!
//! This module owns what is kept for the operator and how it is shown. It does not count (the
//! data path calls [`hits::RuleHits::record`] and feeds [`recent::RecentSink`]), serve HTTP
//! (`crate::admin`) or decide (`crate::policy`; the explain form asks `crate::explain`).
//!
//! | Route | What |
//! |---|---|
//! | `/` | the status page; `?explain=NAME&port=443&client=ADDR` adds the policy's explain |
//! | `/rules` | every rule: file:line, action, target, hits, last hit; `?sort=hits\|last\|file`, `?unused=1`, `?since=` |
//! | `/recent` | the ring, newest first; `?limit=N`, `?denied=1` (denied or would-deny only) |
//! | `/top` | the window: decisions by action, top denied and would-deny domains, clients, errors |

pub mod domain;
pub mod hits;
mod json;
mod page;
pub mod recent;
pub mod suggest;
mod view;

use std::time::SystemTime;

pub use hits::RuleHits;
pub use recent::Recent;
use view::{json_error, Params};
pub(crate) use view::{Ops, Page, ReloadRecord, View};

/// The paths this module answers on the admin listener.
pub(crate) const PATHS: &[&str] = &["/", "/rules", "/recent", "/top"];

/// The answer to `GET path?query`, when `path` is one of [`PATHS`].
pub(crate) fn route(view: &View<'_>, path: &str, query: Option<&str>) -> Option<Page> {
    let params = Params::parse(query.unwrap_or(""));
    let now = SystemTime::now();
    let result = match path {
        "/" => Ok(page::render(view, &params, now)),
        "/rules" => json::rules(view, &params, now),
        "/recent" => json::recent(view, &params),
        "/top" => json::top(view, &params, now),
        _ => return None,
    };
    Some(result.unwrap_or_else(|message| json_error(&message)))
}
