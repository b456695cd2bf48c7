//! A gateway started in-process on the test's runtime, from a `hostgate.toml` and a `test.rules`
//! written to a temporary directory, with a channel sink for its access events (see
//! [`super::events`]); and assertions on those events.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use hostgate_proxy::access::{AccessEvent, Dst};
use hostgate_proxy::config::{Config, ListenerKind};
use hostgate_proxy::gateway::Gateway;
use hostgate_proxy::policy::Action;
use tempfile::TempDir;

use super::events::AccessEvents;

/// `[upstream]` for tests whose upstreams are local servers: loopback is exempt from the SSRF
/// guard. Tests that need other `[upstream]` settings write their own section.
pub const LOCAL_UPSTREAM: &str = "[upstream]\nallow_private = [\"127.0.0.0/8\"]\nconnect_timeout = \"5s\"\n";

/// A `[resolve]` section pinning each name to an address (`ip:port`: the port replaces the
/// destination port).
pub fn pins(pins: &[(&str, SocketAddr)]) -> String {
    let mut s = String::from("[resolve]\n");
    for (name, addr) in pins {
        writeln!(s, "\"{name}\" = [\"{addr}\"]").unwrap();
    }
    s
}

/// A running gateway, the access events it emitted, and the directory of its configuration.
pub struct TestGateway {
    gateway: Option<Gateway>,
    listeners: Vec<(ListenerKind, SocketAddr)>,
    events: AccessEvents,
    dir: TempDir,
}

impl TestGateway {
    /// A gateway with a connect listener and a transparent listener, both on `127.0.0.1:0`, the
    /// policy `default = "deny"` plus `rules` (as `test.rules`), and `extra_toml` appended to
    /// the configuration (its own sections: `[upstream]`, `[resolve]`, `[sniff]`…).
    pub async fn start(rules: &str, extra_toml: &str) -> TestGateway {
        TestGateway::start_with(&[("connect", "127.0.0.1:0"), ("transparent", "127.0.0.1:0")], rules, extra_toml).await
    }

    /// [`TestGateway::start`] with these listeners (`kind`, `address`).
    pub async fn start_with(listeners: &[(&str, &str)], rules: &str, extra_toml: &str) -> TestGateway {
        TestGateway::try_start(listeners, rules, extra_toml).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`TestGateway::start_with`] that returns the configuration or start error as text.
    pub async fn try_start(listeners: &[(&str, &str)], rules: &str, extra_toml: &str) -> Result<TestGateway, String> {
        let policy = "[policy]\ndefault = \"deny\"\n[[policy.source]]\npath = \"test.rules\"\n";
        TestGateway::try_start_files(listeners, policy, &[("test.rules", rules)], extra_toml).await
    }

    /// A gateway with these listeners, `policy` (the whole `[policy]` section with its sources,
    /// and any `[[client]]` groups), the rule `files` (name, text) next to the configuration,
    /// and `extra_toml` appended.
    pub async fn start_files(
        listeners: &[(&str, &str)],
        policy: &str,
        files: &[(&str, &str)],
        extra_toml: &str,
    ) -> TestGateway {
        TestGateway::try_start_files(listeners, policy, files, extra_toml).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`TestGateway::start_files`] that returns the configuration or start error as text.
    pub async fn try_start_files(
        listeners: &[(&str, &str)],
        policy: &str,
        files: &[(&str, &str)],
        extra_toml: &str,
    ) -> Result<TestGateway, String> {
        let dir = tempfile::tempdir().unwrap();
        let mut toml = String::new();
        for (kind, address) in listeners {
            writeln!(toml, "[[listener]]\nkind = \"{kind}\"\naddress = \"{address}\"\n").unwrap();
        }
        writeln!(toml, "{policy}\n{extra_toml}").unwrap();
        let config_path = dir.path().join("hostgate.toml");
        std::fs::write(&config_path, &toml).unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let config = Config::load(&config_path).map_err(|e| format!("{e}\n--- hostgate.toml:\n{toml}"))?;
        let (sink, events) = AccessEvents::new();
        let gateway = Gateway::start_with_sink(config, sink)
            .await
            .map_err(|e| format!("the gateway did not start: {e}\n--- hostgate.toml:\n{toml}"))?;
        let listeners = gateway.listeners().iter().map(|l| (l.kind, l.local)).collect();
        Ok(TestGateway { gateway: Some(gateway), listeners, events, dir })
    }

    /// The first connect listener's address.
    pub fn connect_addr(&self) -> SocketAddr {
        self.addr(ListenerKind::Connect)
    }

    /// The first transparent listener's address.
    pub fn transparent_addr(&self) -> SocketAddr {
        self.addr(ListenerKind::Transparent)
    }

    fn addr(&self, kind: ListenerKind) -> SocketAddr {
        let gateway = self.gateway.as_ref().expect("running");
        let addr = gateway.local_addr(kind).unwrap_or_else(|| panic!("no {kind:?} listener"));
        assert!(self.listeners.contains(&(kind, addr)), "local_addr({kind:?}) = {addr} is not among listeners()");
        assert_ne!(addr.port(), 0, "local_addr({kind:?}) reports port 0, not the bound port");
        addr
    }

    /// The gateway's metrics, as `/metrics` serves them.
    pub fn metrics(&self) -> String {
        self.gateway.as_ref().expect("running").metrics()
    }

    /// The running gateway.
    pub fn gateway(&self) -> &Gateway {
        self.gateway.as_ref().expect("running")
    }

    /// The directory of `hostgate.toml` and `test.rules`.
    pub fn config_dir(&self) -> &Path {
        self.dir.path()
    }

    /// This gateway's access events so far that satisfy `pred`.
    pub fn access_events(&self, pred: impl Fn(&AccessEvent) -> bool) -> Vec<AccessEvent> {
        self.events.matching(pred)
    }

    /// Waits (up to 10 s) for an access event of this gateway that satisfies `pred`.
    pub async fn wait_access(&self, pred: impl Fn(&AccessEvent) -> bool) -> AccessEvent {
        self.wait_access_timeout(pred, Duration::from_secs(10)).await
    }

    /// [`TestGateway::wait_access`] with a timeout.
    pub async fn wait_access_timeout(&self, pred: impl Fn(&AccessEvent) -> bool, timeout: Duration) -> AccessEvent {
        self.events.wait(pred, timeout).await
    }

    /// Stops the gateway.
    pub async fn shutdown(mut self) {
        if let Some(g) = self.gateway.take() {
            g.shutdown(std::time::Duration::ZERO).await;
        }
    }
}

/// An access event's `dst` as the log writes it (`host:port`, or the original destination).
pub fn dst(event: &AccessEvent) -> Option<String> {
    event.dst.as_ref().map(Dst::to_string)
}

/// Asserts an access event's decision: its action, and the deciding rule's text (`ACTION
/// TARGET`) and line in `test.rules`, or no rule at all (the default decided).
pub fn assert_decided(event: &AccessEvent, action: Action, rule: Option<(&str, usize)>) {
    assert_eq!(event.action, Some(action), "action: {event:#?}");
    match rule {
        Some((text, line)) => assert_rule(event, text, line),
        None => {
            assert_eq!(event.rule, None, "rule: {event:#?}");
            assert_eq!(event.source, None, "source: {event:#?}");
        }
    }
}

/// Asserts the deciding rule's text (`ACTION TARGET`) and line in `test.rules`, whatever
/// became of the connection afterwards.
pub fn assert_rule(event: &AccessEvent, text: &str, line: usize) {
    assert_rule_in(event, text, "test.rules", line);
}

/// [`assert_rule`] for a rule in the rule file `file` (a name in the configuration's directory).
pub fn assert_rule_in(event: &AccessEvent, text: &str, file: &str, line: usize) {
    assert_eq!(event.rule.as_deref(), Some(text), "rule: {event:#?}");
    let source = event.source.as_deref().unwrap_or_else(|| panic!("no source: {event:#?}"));
    let want = format!("{file}:{line}");
    assert!(source == want || source.ends_with(&format!("/{want}")), "source {source:?}, want {want}: {event:#?}");
}

/// Asserts that a connection or request the gateway refused is logged with the action `deny`
/// even when the policy allowed the name (it was refused for another reason, which `outcome`
/// gives). Tests check this last, after the behaviour itself.
pub fn assert_logged_deny(event: &AccessEvent) {
    assert_eq!(event.action, Some(Action::Deny), "a refused connection logged with this action: {event:#?}");
}

/// A `[resolve]` section pinning each name to several addresses, in order (`ip` or `ip:port`
/// as the configuration spells them, e.g. `"[::ffff:127.0.0.1]:8443"`).
pub fn pins_many(pins: &[(&str, &[&str])]) -> String {
    let mut s = String::from("[resolve]\n");
    for (name, addrs) in pins {
        let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
        writeln!(s, "\"{name}\" = [{}]", list.join(", ")).unwrap();
    }
    s
}

/// The value of one sample of the gateway's metrics text (`name{labels}` exactly as written),
/// `None` when there is no such sample.
pub fn metric(text: &str, key: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}
