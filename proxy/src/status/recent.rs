//! Recent decisions: a bounded ring of the last `[admin] recent` access records, in compact
//! copies, and counts over the sliding `[admin] window` (decisions by action, denied and
//! would-deny names, denying clients, errors by outcome), fed by every finished record.
//!
//! This module owns the ring, the window's buckets and the [`AccessSink`] that feeds them
//! ([`RecentSink`], which then hands the record on to the gateway's own sink). It does not
//! group names by domain or render anything (`super::json`, `super::page`).
//!
//! **Why a mutex.** Every record takes one `std::sync::Mutex` for the time it takes to copy a
//! few fields into a preallocated slot (its strings reuse the slot's capacity, so once the ring
//! has gone round a record allocates nothing) and, for a denial or an error, to bump a counter
//! in the current bucket. That is well under a microsecond, against a connection's tens of
//! microseconds; a lock-free ring of variable-length records (a seqlock per slot) would avoid
//! a rare wait but not a copy, and readers (the admin listener, a few times a minute) would
//! have to retry torn reads. The admin side holds the lock only to copy what it shows.
//!
//! **Bounded memory.** The ring holds `recent` slots (a name is at most 253 bytes; a path is
//! cut at [`PATH_MAX`]). The window is 60 buckets; each keeps at most [`KEYS_PER_BUCKET`]
//! distinct names per table and clients, and counts the rest as `other`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use http::Method;

use super::hits::unix_ms;
use crate::access::{kind_str, Access, AccessSink, Dst, Protocol};
use crate::config::ListenerKind;
use crate::outcome::Outcome;
use crate::policy::{Action, Origin, Rule};

/// The longest path a ring slot keeps (longer ones are cut, and end in `…`).
pub const PATH_MAX: usize = 256;
/// Distinct keys (names, clients) per table and bucket of the window.
pub const KEYS_PER_BUCKET: usize = 512;
/// Buckets of the sliding window.
const BUCKETS: usize = 60;

/// A compact copy of one access record.
#[derive(Clone, Debug)]
pub struct Event {
    /// When it was recorded (the record's end), Unix milliseconds.
    pub at_ms: u64,
    /// The client.
    pub client: SocketAddr,
    /// The client's group.
    pub group: Option<Arc<str>>,
    /// The signed-in user.
    pub user: Option<Arc<str>>,
    /// The listener's kind.
    pub kind: ListenerKind,
    /// What was sniffed.
    pub protocol: Protocol,
    /// The name asked for: the HTTP or CONNECT host, else the SNI; empty without one.
    pub name: String,
    /// The destination port, when known.
    pub port: Option<u16>,
    /// The destination address when there was no name (a redirected connection's original
    /// destination).
    pub addr: Option<IpAddr>,
    /// The HTTP method.
    pub method: Option<Method>,
    /// The HTTP path, cut at [`PATH_MAX`].
    pub path: Option<String>,
    /// The HTTP status sent.
    pub status: Option<u16>,
    /// The action (`None`: nothing decided, shown as `deny`).
    pub action: Option<Action>,
    /// Report mode let through what the policy would deny.
    pub would_deny: bool,
    /// How it ended.
    pub outcome: Outcome,
    /// The generation that decided.
    pub generation: u64,
    /// The deciding rule's action and where it is written; `None`: the default.
    pub rule: Option<(Action, Origin)>,
    /// The deciding rule's target as written (empty for the default).
    pub target: String,
}

impl Event {
    /// The action the log shows.
    pub fn action_str(&self) -> &'static str {
        self.action.map_or("deny", Action::as_str)
    }

    /// Denied by the policy (not refused for another reason).
    pub fn denied(&self) -> bool {
        self.outcome == Outcome::Denied
    }

    /// What the tables call it: the name, else the destination address, else `-`.
    pub fn label(&self) -> String {
        match (&self.name, self.addr) {
            (n, _) if !n.is_empty() => n.clone(),
            (_, Some(a)) => a.to_string(),
            _ => "-".to_string(),
        }
    }

    /// As `/recent` shows it, with the access log's field names.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "time": rfc3339(self.at_ms),
            "time_unix_ms": self.at_ms,
            "client": self.client.to_string(),
            "client_group": self.group.as_deref(),
            "user": self.user.as_deref(),
            "kind": kind_str(self.kind),
            "protocol": (self.protocol != Protocol::None).then(|| self.protocol.as_str()),
            "host": (!self.name.is_empty()).then_some(self.name.as_str()),
            "port": self.port,
            "addr": self.addr.map(|a| a.to_string()),
            "method": self.method.as_ref().map(Method::as_str),
            "path": self.path.as_deref(),
            "status": self.status,
            "action": self.action_str(),
            "would_deny": self.would_deny,
            "outcome": self.outcome.as_str(),
            "generation": self.generation,
            "rule": self.rule.as_ref().map(|(a, _)| format!("{a} {}", self.target)),
            "source": self.rule.as_ref().map(|(_, o)| o.to_string()),
        })
    }

    /// Overwrites this slot with `a`, reusing the slot's string capacity.
    fn fill(&mut self, a: &Access, rule: Option<&Rule>, at_ms: u64) {
        self.at_ms = at_ms;
        self.client = a.client;
        self.group.clone_from(&a.client_group);
        self.user.clone_from(&a.user);
        self.kind = a.listener.kind;
        self.protocol = a.protocol;
        self.name.clear();
        if let Some(n) = a.host.as_deref().or(a.sni.as_deref()) {
            self.name.push_str(n);
        }
        (self.port, self.addr) = match &a.dst {
            Some(Dst::Addr(s)) => (Some(s.port()), self.name.is_empty().then(|| s.ip())),
            Some(Dst::Authority(au)) => (au.port_u16().or(Some(443)), None),
            None => (None, None),
        };
        self.method.clone_from(&a.method);
        match (&mut self.path, a.path.as_deref()) {
            (_, None) => self.path = None,
            (Some(p), Some(src)) => {
                p.clear();
                push_cut(p, src);
            }
            (slot @ None, Some(src)) => {
                let mut p = String::new();
                push_cut(&mut p, src);
                *slot = Some(p);
            }
        }
        self.status = a.status;
        self.action = a.action;
        self.would_deny = a.would_deny;
        self.outcome = a.outcome;
        self.generation = a.generation;
        self.rule = rule.map(|r| (r.action, r.origin.clone()));
        self.target.clear();
        if let Some(r) = rule {
            self.target.push_str(&r.target);
        }
    }

    fn new(a: &Access, rule: Option<&Rule>, at_ms: u64) -> Event {
        let mut e = Event {
            at_ms,
            client: a.client,
            group: None,
            user: None,
            kind: a.listener.kind,
            protocol: a.protocol,
            name: String::new(),
            port: None,
            addr: None,
            method: None,
            path: None,
            status: None,
            action: None,
            would_deny: false,
            outcome: Outcome::Ok,
            generation: 0,
            rule: None,
            target: String::new(),
        };
        e.fill(a, rule, at_ms);
        e
    }
}

/// Appends `src` to `p`, cut at [`PATH_MAX`] bytes on a character boundary.
fn push_cut(p: &mut String, src: &str) {
    if src.len() <= PATH_MAX {
        p.push_str(src);
        return;
    }
    let mut end = PATH_MAX;
    while !src.is_char_boundary(end) {
        end -= 1;
    }
    p.push_str(&src[..end]);
    p.push('…');
}

/// Counts of one bucket of the window.
#[derive(Debug, Default)]
struct Bucket {
    /// Which tick (`at_ms / width`) it counts; stale buckets are cleared on first use.
    tick: u64,
    /// Records by action: bypass, allow, deny; and would-deny.
    actions: [u64; 4],
    /// Records that ended in neither `ok` nor `denied`, by outcome.
    errors: Vec<(&'static str, u64)>,
    denied: Table<Box<str>>,
    would_deny: Table<Box<str>>,
    clients: Table<IpAddr>,
}

/// A bounded count per key.
#[derive(Debug)]
struct Table<K> {
    counts: HashMap<K, u64>,
    other: u64,
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Table { counts: HashMap::new(), other: 0 }
    }
}

impl Table<Box<str>> {
    fn add(&mut self, key: &str) {
        if let Some(n) = self.counts.get_mut(key) {
            *n += 1;
        } else if self.counts.len() < KEYS_PER_BUCKET {
            self.counts.insert(Box::from(key), 1);
        } else {
            self.other += 1;
        }
    }
}

impl Table<IpAddr> {
    fn add(&mut self, key: IpAddr) {
        if let Some(n) = self.counts.get_mut(&key) {
            *n += 1;
        } else if self.counts.len() < KEYS_PER_BUCKET {
            self.counts.insert(key, 1);
        } else {
            self.other += 1;
        }
    }
}

impl Bucket {
    fn reset(&mut self, tick: u64) {
        self.tick = tick;
        self.actions = [0; 4];
        self.errors.clear();
        for t in [&mut self.denied, &mut self.would_deny] {
            t.counts.clear();
            t.other = 0;
        }
        self.clients.counts.clear();
        self.clients.other = 0;
    }
}

/// The window's totals, summed over its buckets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// The window's length.
    pub window: Duration,
    /// How much of it the counts cover (less than `window` for a gateway started since).
    pub covered: Duration,
    /// Records by action: bypass, allow, deny; and would-deny.
    pub actions: [u64; 4],
    /// Denied names (or destination addresses) and their counts.
    pub denied: Vec<(String, u64)>,
    /// Denials beyond the names kept.
    pub denied_other: u64,
    /// Would-deny names and their counts.
    pub would_deny: Vec<(String, u64)>,
    /// Would-deny records beyond the names kept.
    pub would_deny_other: u64,
    /// Clients by denials.
    pub clients: Vec<(IpAddr, u64)>,
    /// Errors by outcome.
    pub errors: Vec<(&'static str, u64)>,
}

#[derive(Debug)]
struct Inner {
    ring: Vec<Event>,
    /// The slot the next record goes to once the ring is full.
    next: usize,
    /// Records seen since start.
    total: u64,
    buckets: Vec<Bucket>,
}

/// The ring and the window.
#[derive(Debug)]
pub struct Recent {
    capacity: usize,
    window: Duration,
    width_ms: u64,
    started_ms: u64,
    inner: Mutex<Inner>,
}

impl Recent {
    /// A ring of `capacity` records (at least 1) and a window of `window` (at least 1 s).
    pub fn new(capacity: usize, window: Duration) -> Recent {
        let capacity = capacity.max(1);
        let window = window.max(Duration::from_secs(1));
        let width_ms = (u64::try_from(window.as_millis()).unwrap_or(u64::MAX) / BUCKETS as u64).max(1);
        Recent {
            capacity,
            window,
            width_ms,
            started_ms: unix_ms(SystemTime::now()),
            inner: Mutex::new(Inner {
                ring: Vec::new(),
                next: 0,
                total: 0,
                buckets: (0..BUCKETS).map(|_| Bucket::default()).collect(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves counters, not broken invariants: keep going.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The ring's size.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The window's length.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Records one finished access record, at `at_ms`.
    pub fn record_at(&self, a: &Access, rule: Option<&Rule>, at_ms: u64) {
        let mut g = self.lock();
        let inner = &mut *g;
        inner.total += 1;
        if inner.ring.len() < self.capacity {
            inner.ring.push(Event::new(a, rule, at_ms));
        } else {
            let slot = inner.next;
            inner.ring[slot].fill(a, rule, at_ms);
            inner.next = (slot + 1) % self.capacity;
        }
        let tick = at_ms / self.width_ms;
        let b = &mut inner.buckets[(tick % BUCKETS as u64) as usize];
        if tick < b.tick {
            // Older than the bucket's round (the wall clock stepped back): the ring has it,
            // the window does not.
            return;
        }
        if b.tick != tick {
            b.reset(tick);
        }
        let action = a.action.unwrap_or(Action::Deny);
        b.actions[action as usize] += 1;
        let name = a.host.as_deref().or(a.sni.as_deref());
        let key = |b: &mut Table<Box<str>>| match (name, &a.dst) {
            (Some(n), _) => b.add(n),
            (None, Some(Dst::Addr(s))) => b.add(&s.ip().to_string()),
            (None, _) => b.add("-"),
        };
        if a.would_deny {
            b.actions[3] += 1;
            key(&mut b.would_deny);
        }
        match a.outcome {
            Outcome::Ok => {}
            Outcome::Denied => {
                key(&mut b.denied);
                b.clients.add(a.client.ip());
            }
            other => {
                let o = other.as_str();
                match b.errors.iter_mut().find(|(k, _)| *k == o) {
                    Some((_, n)) => *n += 1,
                    None => b.errors.push((o, 1)),
                }
            }
        }
    }

    /// The last `limit` records kept that satisfy `keep`, newest first.
    pub fn events(&self, limit: usize, keep: impl Fn(&Event) -> bool) -> Vec<Event> {
        let g = self.lock();
        let n = g.ring.len();
        // Newest first: the slot before `next` (when full), else the end of the vector.
        let newest = if n < self.capacity { n } else { g.next };
        (0..n).map(|i| &g.ring[(newest + n - 1 - i) % n]).filter(|e| keep(e)).take(limit).cloned().collect()
    }

    /// Records kept now, and seen since start.
    pub fn counts(&self) -> (usize, u64) {
        let g = self.lock();
        (g.ring.len(), g.total)
    }

    /// The window's totals as of `now_ms`, each table sorted by count (then key).
    pub fn totals(&self, now_ms: u64) -> Totals {
        let now_tick = now_ms / self.width_ms;
        let first = now_tick.saturating_sub(BUCKETS as u64 - 1);
        let mut t = Totals {
            window: self.window,
            covered: Duration::from_millis(now_ms.saturating_sub(self.started_ms)).min(self.window),
            ..Totals::default()
        };
        let mut denied: HashMap<&str, u64> = HashMap::new();
        let mut would: HashMap<&str, u64> = HashMap::new();
        let mut clients: HashMap<IpAddr, u64> = HashMap::new();
        let g = self.lock();
        for b in g.buckets.iter().filter(|b| b.tick >= first && b.tick <= now_tick) {
            for (x, y) in t.actions.iter_mut().zip(b.actions) {
                *x += y;
            }
            for (k, n) in &b.errors {
                match t.errors.iter_mut().find(|(e, _)| e == k) {
                    Some((_, m)) => *m += n,
                    None => t.errors.push((k, *n)),
                }
            }
            for (k, n) in &b.denied.counts {
                *denied.entry(k).or_default() += n;
            }
            for (k, n) in &b.would_deny.counts {
                *would.entry(k).or_default() += n;
            }
            for (k, n) in &b.clients.counts {
                *clients.entry(*k).or_default() += n;
            }
            t.denied_other += b.denied.other;
            t.would_deny_other += b.would_deny.other;
        }
        t.denied = sorted(denied.into_iter().map(|(k, n)| (k.to_string(), n)).collect());
        t.would_deny = sorted(would.into_iter().map(|(k, n)| (k.to_string(), n)).collect());
        t.clients = sorted(clients.into_iter().collect());
        t.errors.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        t
    }
}

fn sorted<K: Ord>(mut v: Vec<(K, u64)>) -> Vec<(K, u64)> {
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

/// Feeds every finished record to a [`Recent`], then hands it to the gateway's sink.
#[derive(Debug)]
pub struct RecentSink {
    /// The ring and window.
    pub recent: Arc<Recent>,
    /// Where records go next (the access log, a channel).
    pub inner: Arc<dyn AccessSink>,
}

impl AccessSink for RecentSink {
    fn emit(&self, access: &Access, rule: Option<&Rule>) {
        self.recent.record_at(access, rule, unix_ms(SystemTime::now()));
        self.inner.emit(access, rule);
    }
}

/// Unix milliseconds as RFC 3339 UTC, to the millisecond (`2025-01-31T12:00:00.000Z`).
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Listener;

    fn access(name: Option<&str>, client: &str, outcome: Outcome, would_deny: bool) -> Access {
        let l =
            Arc::new(Listener::new(ListenerKind::Connect, "127.0.0.1:3128".parse().unwrap_or_else(|e| panic!("{e}"))));
        let mut a = Access::new(l, client.parse().unwrap_or_else(|e| panic!("{e}")), 1);
        a.host = name.map(str::to_string);
        a.outcome = outcome;
        a.would_deny = would_deny;
        a.action = Some(if outcome == Outcome::Denied { Action::Deny } else { Action::Allow });
        a
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_735_689_599_000), "2024-12-31T23:59:59.000Z");
    }

    #[test]
    fn the_ring_keeps_the_newest_and_never_grows() {
        let r = Recent::new(100, Duration::from_secs(600));
        let base = unix_ms(SystemTime::now());
        for i in 0..5_000u64 {
            let name = format!("n{i}.example.com");
            r.record_at(&access(Some(&name), "10.0.0.1:1000", Outcome::Ok, false), None, base + i);
        }
        let (kept, total) = r.counts();
        assert_eq!((kept, total), (100, 5_000));
        let all = r.events(usize::MAX, |_| true);
        assert_eq!(all.len(), 100);
        assert_eq!(all[0].name, "n4999.example.com");
        assert_eq!(all[99].name, "n4900.example.com");
        assert!(r.lock().ring.capacity() <= 128, "the ring's vector did not grow past its bound");
    }

    #[test]
    fn the_ring_s_bound_holds_with_writers_on_four_threads() {
        let r = Arc::new(Recent::new(100, Duration::from_secs(600)));
        let base = unix_ms(SystemTime::now());
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for i in 0..1250u64 {
                        let name = format!("t{t}-{i}.example.com");
                        r.record_at(&access(Some(&name), "10.0.0.1:1000", Outcome::Denied, false), None, base);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap_or_else(|_| panic!("a writer panicked"));
        }
        assert_eq!(r.counts(), (100, 5_000));
        assert_eq!(r.events(usize::MAX, |_| true).len(), 100);
        let t = r.totals(base);
        assert_eq!(t.actions[2], 5_000);
        assert_eq!(t.denied.len(), KEYS_PER_BUCKET, "one bucket keeps at most KEYS_PER_BUCKET names");
        assert_eq!(t.denied_other, 5_000 - KEYS_PER_BUCKET as u64);
    }

    #[test]
    fn window_totals() {
        let r = Recent::new(10, Duration::from_secs(60));
        let now = unix_ms(SystemTime::now());
        let rec = |name, client, outcome, would| {
            r.record_at(&access(name, client, outcome, would), None, now);
        };
        rec(Some("a.example.com"), "10.0.0.1:1", Outcome::Denied, false);
        rec(Some("a.example.com"), "10.0.0.2:1", Outcome::Denied, false);
        rec(Some("b.example.com"), "10.0.0.1:2", Outcome::Denied, false);
        rec(Some("ok.test"), "10.0.0.1:3", Outcome::Ok, false);
        rec(Some("w.test"), "10.0.0.3:3", Outcome::Ok, true);
        rec(Some("x.test"), "10.0.0.3:4", Outcome::UpstreamTimeout, false);
        // Older than the window: not counted.
        r.record_at(&access(Some("old.test"), "10.0.0.9:1", Outcome::Denied, false), None, now - 120_000);
        let t = r.totals(now);
        assert_eq!(t.actions, [0, 3, 3, 1]);
        assert_eq!(t.denied, vec![("a.example.com".to_string(), 2), ("b.example.com".to_string(), 1)]);
        assert_eq!(t.would_deny, vec![("w.test".to_string(), 1)]);
        let c = |s: &str| s.parse::<IpAddr>().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.clients, vec![(c("10.0.0.1"), 2), (c("10.0.0.2"), 1)]);
        assert_eq!(t.errors, vec![("upstream-timeout", 1)]);
    }

    #[test]
    fn long_paths_are_cut() {
        let r = Recent::new(2, Duration::from_secs(60));
        let mut a = access(Some("p.test"), "10.0.0.1:1", Outcome::Ok, false);
        a.path = Some(format!("/{}", "é".repeat(300)));
        r.record_at(&a, None, 1);
        let e = r.events(1, |_| true);
        let p = e[0].path.as_deref().unwrap_or_default();
        assert!(p.len() <= PATH_MAX + '…'.len_utf8() && p.ends_with('…'), "{}", p.len());
    }
}
