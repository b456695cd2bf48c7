//! Live operations: reloads under load (every connection decided by the generation current when
//! it was accepted), reloads that fail and leave the old generation serving (a bad rule line, a
//! missing rule file, a configuration syntax error), coalesced reload requests, settings that
//! need a restart, report mode (global and per rule file), the graceful shutdown of an
//! in-process gateway, and SIGHUP / SIGTERM on the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hostgate_proxy::access::AccessEvent;
use hostgate_proxy::config::{Config, ListenerKind};
use hostgate_proxy::gateway::{Gateway, Reloaded};
use hostgate_proxy::outcome::Outcome;
use hostgate_proxy::policy::Action;
use rustls::ClientConfig;
use serde_json::Value;
use support::events::AccessEvents;
use support::http::{read_head, read_response, tls_handshake, tunnel};
use support::process::Hostgate;
use support::tools::{curl, describe, stderr, stdout};
use support::{dst, pins, TestCa, TlsUpstream, LOCAL_UPSTREAM, STEP};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The `[policy]` of most tests: default deny, one rule file `test.rules`.
const POLICY: &str = "[policy]\ndefault = \"deny\"\n[[policy.source]]\npath = \"test.rules\"\n";

/// A `hostgate.toml`: one connect listener on `127.0.0.1:0`, then `policy` (the whole `[policy]`
/// section), then loopback upstreams allowed, then `extra`.
fn toml(policy: &str, extra: &str) -> String {
    format!("[[listener]]\nkind = \"connect\"\naddress = \"127.0.0.1:0\"\n\n{policy}\n{LOCAL_UPSTREAM}{extra}")
}

/// Replaces `path` with `text` the way an operator's tooling should: a temporary file in the same
/// directory, then a rename, so that a reload never reads a half-written file.
fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The 1-based line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle:?} not in:\n{text}")) + 1
}

/// A gateway started in-process from files in a temporary directory, kept as a [`Gateway`] so
/// that the test can reload it and shut it down, and its access events (kept after a shutdown).
struct Env {
    dir: TempDir,
    gateway: Option<Gateway>,
    connect: SocketAddr,
    events: AccessEvents,
}

impl Env {
    /// Writes `hostgate.toml` and `files` (name, text) and starts the gateway.
    async fn start(config: &str, files: &[(&str, &str)]) -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hostgate.toml"), config).unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let config = Config::load(&dir.path().join("hostgate.toml")).unwrap_or_else(|e| panic!("{e}\n{config}"));
        let (sink, events) = AccessEvents::new();
        let gateway =
            Gateway::start_with_sink(config, sink).await.unwrap_or_else(|e| panic!("the gateway did not start: {e}"));
        let connect = gateway.local_addr(ListenerKind::Connect).unwrap();
        assert_eq!(gateway.generation(), 1);
        assert_eq!(gateway.ready(), Ok(()));
        Env { dir, gateway: Some(gateway), connect, events }
    }

    fn gw(&self) -> &Gateway {
        self.gateway.as_ref().expect("running")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Replaces a file of the configuration directory (see [`write_atomic`]).
    fn write(&self, name: &str, text: &str) {
        write_atomic(&self.path(name), text);
    }

    fn events(&self, pred: impl Fn(&AccessEvent) -> bool) -> Vec<AccessEvent> {
        self.events.matching(pred)
    }

    async fn wait_access(&self, pred: impl Fn(&AccessEvent) -> bool) -> AccessEvent {
        self.events.wait(pred, Duration::from_secs(10)).await
    }

    /// The access event of the connection from `client`.
    async fn event_of(&self, client: SocketAddr) -> AccessEvent {
        self.wait_access(|e| e.client == client).await
    }

    /// A reload that must succeed.
    async fn reload_ok(&self) -> Reloaded {
        self.gw().reload().await.unwrap_or_else(|e| panic!("reload failed: {e}"))
    }

    /// A reload that must fail; returns the error's text, after checking that the generation did
    /// not move.
    async fn reload_err(&self) -> String {
        let before = self.gw().generation();
        let err = match self.gw().reload().await {
            Ok(r) => panic!("the reload succeeded: {r:?}"),
            Err(e) => e.to_string(),
        };
        assert_eq!(self.gw().generation(), before, "a failed reload moved the generation ({err})");
        assert_eq!(self.gw().ready(), Ok(()), "a failed reload made the gateway unready ({err})");
        err
    }

    /// Opens a connection through the connect listener to `name` and checks its decision and the
    /// generation that made it: a tunnel with an upstream answer (`allow`) or a `403` (`deny`),
    /// and the access event with that action, `rule` (or none) and `generation`.
    async fn expect(
        &self,
        ca: &ClientConfig,
        name: &str,
        action: Action,
        rule: Option<&str>,
        generation: u64,
    ) -> AccessEvent {
        let path = format!("/{action}/{generation}");
        let f = fetch(self.connect, ca, name, &path).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        match action {
            Action::Allow => {
                assert_eq!(f.status, 200, "{name}: {f:?}");
                assert!(f.body.ends_with(&format!("sni={name} path={path}")), "{name}: {f:?}");
            }
            Action::Deny => assert_eq!(f.status, 403, "{name}: {f:?}"),
            Action::Bypass => unreachable!(),
        }
        let ev = self.event_of(f.client).await;
        assert_eq!(ev.action, Some(action), "{name}: {ev:#?}");
        assert_eq!(ev.rule.as_deref(), rule, "{name}: {ev:#?}");
        assert_eq!(ev.generation, generation, "{name}: {ev:#?}");
        assert_eq!(ev.outcome, if action == Action::Deny { Outcome::Denied } else { Outcome::Ok }, "{name}: {ev:#?}");
        ev
    }
}

/// How one connection through the connect listener ended.
#[derive(Debug)]
struct Fetched {
    /// The client side's address (the access log's `client`).
    client: SocketAddr,
    /// The answer to CONNECT.
    status: u16,
    /// The upstream's answer to `GET path` (200), or the gateway's refusal text (403).
    body: String,
}

/// `f`, with `what` and a timeout of [`STEP`] in its error.
async fn within<T>(what: &str, f: impl std::future::Future<Output = std::io::Result<T>>) -> Result<T, String> {
    match tokio::time::timeout(STEP, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: timed out after {STEP:?}")),
    }
}

/// `CONNECT name:443`; on `200` a TLS handshake with `name` and one `GET path` (Connection:
/// close); on `403` the refusal. Anything else, or any I/O error or a step longer than
/// [`STEP`], is an error: nothing panics, so that a load test can count failures.
///
/// Each call connects from a loopback address of its own (127.16.0.1, 127.16.0.2, …; port
/// picked by the kernel), so that its access event's `client` is unique even when the kernel
/// reuses a port, as it does for loopback connections in quick succession.
async fn fetch(proxy: SocketAddr, ca: &ClientConfig, name: &str, path: &str) -> Result<Fetched, String> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    assert!(n < 16 * 62_500, "out of source addresses");
    let from = Ipv4Addr::new(127, 16 + (n / 62_500) as u8, (n / 250 % 250) as u8, (n % 250 + 1) as u8);
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket.bind(SocketAddr::from((from, 0))).map_err(|e| format!("bind {from}: {e}"))?;
    let tcp = within("connect", socket.connect(proxy)).await?;
    fetch_on(tcp, ca, name, path).await
}

/// [`fetch`] on a connection to the proxy that is already open.
async fn fetch_on(mut tcp: TcpStream, ca: &ClientConfig, name: &str, path: &str) -> Result<Fetched, String> {
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let client = tcp.local_addr().map_err(|e| e.to_string())?;
    let request = format!("CONNECT {name}:443 HTTP/1.1\r\nHost: {name}:443\r\n\r\n");
    within("write CONNECT", tcp.write_all(request.as_bytes())).await?;
    let head = within("CONNECT answer", async {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tcp.read_u8().await?);
        }
        Ok(head)
    })
    .await?;
    let (status, headers) = read_head(&mut &head[..]).await.map_err(|e| format!("CONNECT answer: {e}"))?;
    let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    match status {
        403 => {
            if header("x-hostgate-reason").as_deref() != Some("denied") {
                return Err(format!("403 without x-hostgate-reason: denied: {headers:?}"));
            }
            let len: usize = header("content-length").and_then(|l| l.parse().ok()).ok_or("403 without a length")?;
            let mut body = vec![0u8; len];
            within("403 body", tcp.read_exact(&mut body)).await?;
            Ok(Fetched { client, status, body: String::from_utf8_lossy(&body).into_owned() })
        }
        200 => {
            let tls = tls_handshake(tcp, name, ca.clone()).await.map_err(|e| format!("TLS handshake: {e}"))?;
            let mut io = BufReader::new(tls);
            let get = format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n");
            within("write GET", async {
                io.write_all(get.as_bytes()).await?;
                io.flush().await
            })
            .await?;
            let response = within("GET response", read_response(&mut io, true)).await?;
            if response.status != 200 {
                return Err(format!("GET through the tunnel: {response:?}"));
            }
            // Read on to the upstream's close (its close_notify and FIN): a client that closed
            // with those unread would reset the tunnel, which the gateway rightly logs as a
            // client error, not `ok`.
            let mut rest = Vec::new();
            let _ = within("the upstream's close", io.read_to_end(&mut rest)).await;
            Ok(Fetched { client, status, body: response.text() })
        }
        other => Err(format!("CONNECT answered {other}: {headers:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Reload under load.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_under_load_decides_each_connection_by_its_accept_generation() {
    const CLIENTS: usize = 4;
    const RELOADS: u64 = 20;
    let ca = TestCa::new();
    let up = TlsUpstream::start(&ca, &["flip.test"], "F").await;
    let env =
        Env::start(&toml(POLICY, &pins(&[("flip.test", up.addr())])), &[("test.rules", "allow flip.test\n")]).await;
    // Generation 1 allows; each reload flips: odd generations allow, even ones deny.
    let action_of = |generation: u64| if generation % 2 == 1 { Action::Allow } else { Action::Deny };

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for task in 0..CLIENTS {
        let (stop, config, proxy) = (stop.clone(), ca.client_config(), env.connect);
        clients.push(tokio::spawn(async move {
            let mut done: Vec<Fetched> = Vec::new();
            let mut errors: Vec<String> = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let path = format!("/t{task}/{i}");
                match fetch(proxy, &config, "flip.test", &path).await {
                    Ok(f) if f.status == 403 => done.push(f),
                    Ok(f) if f.body == format!("upstream=F sni=flip.test path={path}") => done.push(f),
                    Ok(f) => errors.push(format!("task {task} #{i}: unexpected body: {f:?}")),
                    Err(e) => errors.push(format!("task {task} #{i}: {e}")),
                }
                i += 1;
            }
            (done, errors)
        }));
    }

    let mut reloads = Vec::new();
    for n in 1..=RELOADS {
        tokio::time::sleep(Duration::from_millis(15 + 10 * (n % 4))).await;
        let want = action_of(n + 1);
        env.write("test.rules", &format!("{want} flip.test\n"));
        reloads.push(env.gw().reload().await);
        assert_eq!(env.gw().generation(), n + 1);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, Ordering::SeqCst);

    let mut done = Vec::new();
    let mut errors = Vec::new();
    for c in clients {
        let (d, e) = tokio::time::timeout(STEP * 2, c).await.expect("a client task hung").unwrap();
        done.push(d);
        errors.extend(e);
    }
    let total: usize = done.iter().map(Vec::len).sum();
    assert!(
        errors.is_empty(),
        "{} of {} connections failed; first ones: {:#?}",
        errors.len(),
        total,
        &errors[..errors.len().min(10)]
    );

    // Every reload applied, in order, and reported the one-line flip in the one rule file.
    let rules_file = env.path("test.rules").display().to_string();
    for (n, r) in (1..=RELOADS).zip(&reloads) {
        let r = r.as_ref().unwrap_or_else(|e| panic!("reload {n} failed: {e}"));
        assert_eq!(r.generation, n + 1, "{r:?}");
        let want_rules = if action_of(n + 1) == Action::Allow { [0, 1, 0] } else { [0, 0, 1] };
        assert_eq!(r.rules, want_rules, "reload {n}: {r:?}");
        assert_eq!(r.changes.len(), 1, "reload {n}: {r:?}");
        let c = &r.changes[0];
        assert_eq!((c.file.as_str(), c.added, c.removed), (rules_file.as_str(), 1, 1), "reload {n}: {r:?}");
        assert!(r.needs_restart.is_empty(), "reload {n}: {r:?}");
    }

    // One access event per connection; its action is the one of the generation it carries, and
    // it agrees with what the client saw. A client's successive connections never go back to an
    // older generation.
    let deadline = Instant::now() + Duration::from_secs(10);
    let events = loop {
        let events = env.events(|e| dst(e).as_deref() == Some("flip.test:443"));
        if events.len() >= total || Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(events.len(), total, "one access event per connection");
    let mut by_client: BTreeMap<SocketAddr, Vec<&AccessEvent>> = BTreeMap::new();
    for e in &events {
        by_client.entry(e.client).or_default().push(e);
    }
    let mut seen = BTreeMap::<Action, usize>::new();
    let mut generations = BTreeMap::<u64, usize>::new();
    for e in &events {
        let generation = e.generation;
        assert!((1..=RELOADS + 1).contains(&generation), "{e:#?}");
        let want = action_of(generation);
        assert_eq!(e.action, Some(want), "generation {generation} decided otherwise: {e:#?}");
        assert_eq!(e.rule.as_deref(), Some(format!("{want} flip.test").as_str()), "{e:#?}");
        assert!(e.source.as_deref().is_some_and(|s| s.ends_with("/test.rules:1")), "{e:#?}");
        assert_eq!(e.outcome, if want == Action::Allow { Outcome::Ok } else { Outcome::Denied }, "{e:#?}");
        *seen.entry(want).or_default() += 1;
        *generations.entry(generation).or_default() += 1;
    }
    for (task, conns) in done.iter().enumerate() {
        let mut last = 0;
        for f in conns {
            let evs = &by_client[&f.client];
            assert_eq!(evs.len(), 1, "one access event per connection from {}: {evs:#?}", f.client);
            let ev = evs[0];
            let action = if f.status == 200 { Action::Allow } else { Action::Deny };
            assert_eq!(ev.action, Some(action), "the client saw {}: {ev:#?}", f.status);
            let generation = ev.generation;
            assert!(generation >= last, "task {task}: generation {generation} after {last}: {ev:#?}");
            last = generation;
        }
    }
    eprintln!("{total} connections; actions {seen:?}; connections per generation {generations:?}");
    assert!(
        seen.get(&Action::Allow).is_some_and(|&n| n > 0) && seen.get(&Action::Deny).is_some_and(|&n| n > 0),
        "{seen:?}"
    );
    assert!(generations.len() >= 4, "connections spanned only generations {generations:?}");
}

/// One keep-alive `GET path` over an established TLS stream; returns the body.
async fn get<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    name: &str,
    path: &str,
) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {name}\r\n\r\n");
    within("write GET", async {
        io.write_all(request.as_bytes()).await?;
        io.flush().await
    })
    .await
    .unwrap();
    let response = within("GET response", read_response(io, true)).await.unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    response.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_keep_their_generation_and_each_request_takes_the_current_one() {
    let ca = TestCa::new();
    let up = TlsUpstream::start(&ca, &["flip.test"], "F").await;
    let env =
        Env::start(&toml(POLICY, &pins(&[("flip.test", up.addr())])), &[("test.rules", "allow flip.test\n")]).await;
    let config = ca.client_config();

    // A tunnel established under generation 1, and a connection accepted under it that has not
    // sent its CONNECT yet.
    let tcp = tunnel(env.connect, "flip.test:443").await;
    let established = tcp.local_addr().unwrap();
    let mut tls = BufReader::new(tls_handshake(tcp, "flip.test", config.clone()).await.unwrap());
    assert_eq!(get(&mut tls, "flip.test", "/before").await, "upstream=F sni=flip.test path=/before");
    let early = TcpStream::connect(env.connect).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    env.write("test.rules", "deny flip.test\n");
    let r = env.reload_ok().await;
    assert_eq!((r.generation, r.rules), (2, [0, 0, 1]), "{r:?}");

    // The established tunnel keeps relaying.
    assert_eq!(get(&mut tls, "flip.test", "/after").await, "upstream=F sni=flip.test path=/after");
    // A connection accepted under generation 1 whose CONNECT (a request) comes after the reload
    // is decided by generation 2, the policy in force when the request arrives.
    let f = fetch_on(early, &config, "flip.test", "/early").await.unwrap();
    assert_eq!((f.status, f.body.as_str()), (403, "hostgate: Forbidden (denied)\n"), "{f:?}");
    let ev = env.event_of(f.client).await;
    assert_eq!((ev.action, ev.generation, ev.outcome), (Some(Action::Deny), 2, Outcome::Denied), "{ev:#?}");
    assert_eq!(ev.rule.as_deref(), Some("deny flip.test"), "{ev:#?}");
    // A new connection: generation 2.
    env.expect(&config, "flip.test", Action::Deny, Some("deny flip.test"), 2).await;

    drop(tls);
    let ev = env.event_of(established).await;
    assert_eq!((ev.action, ev.generation, ev.outcome), (Some(Action::Allow), 1, Outcome::Ok), "{ev:#?}");
}

// ---------------------------------------------------------------------------------------------
// Failed reloads keep the old generation.

/// Upstream for `old.test` and `new.test`, and a gateway on `rules`.
async fn two_names(rules: &str) -> (TestCa, TlsUpstream, Env) {
    let ca = TestCa::new();
    let up = TlsUpstream::start(&ca, &["old.test", "new.test"], "U").await;
    let pinned = pins(&[("old.test", up.addr()), ("new.test", up.addr())]);
    let env = Env::start(&toml(POLICY, &pinned), &[("test.rules", rules)]).await;
    (ca, up, env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_rule_line_keeps_the_old_generation() {
    let (ca, _up, env) = two_names("allow old.test\n").await;
    let client = ca.client_config();
    env.expect(&client, "old.test", Action::Allow, Some("allow old.test"), 1).await;

    // Line 1 would deny old.test and line 3 allow new.test, but line 2 is bad: nothing applies.
    env.write("test.rules", "deny old.test\nallow *.*bad[\nallow new.test\n");
    let err = env.reload_err().await;
    assert!(err.contains("test.rules:2"), "the error names test.rules:2: {err}");
    assert!(err.contains("*.*bad["), "the error quotes the pattern: {err}");
    assert!(!err.contains("test.rules:1") && !err.contains("test.rules:3"), "{err}");
    env.expect(&client, "old.test", Action::Allow, Some("allow old.test"), 1).await;
    env.expect(&client, "new.test", Action::Deny, None, 1).await;

    // Fixed: the whole new file applies at once.
    env.write("test.rules", "deny old.test\nallow new.test\n");
    let r = env.reload_ok().await;
    assert_eq!(r.generation, 2, "{r:?}");
    assert_eq!(env.gw().generation(), 2);
    assert_eq!(r.rules, [0, 1, 1], "{r:?}");
    assert_eq!(r.changes.len(), 1, "{r:?}");
    assert_eq!((r.changes[0].added, r.changes[0].removed), (2, 1), "{r:?}");
    env.expect(&client, "old.test", Action::Deny, Some("deny old.test"), 2).await;
    env.expect(&client, "new.test", Action::Allow, Some("allow new.test"), 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_rule_file_keeps_the_old_generation() {
    let (ca, _up, env) = two_names("allow old.test\n").await;
    let client = ca.client_config();
    let rules = env.path("test.rules");
    let config_text = std::fs::read_to_string(env.path("hostgate.toml")).unwrap();
    let source_line = line_of(&config_text, "path = \"test.rules\"");

    std::fs::rename(&rules, env.path("test.rules.away")).unwrap();
    let err = env.reload_err().await;
    assert!(err.contains(&rules.display().to_string()), "the error names the rule file: {err}");
    assert!(err.contains("cannot read rule file"), "{err}");
    assert!(err.contains(&format!("hostgate.toml:{source_line}")), "and the config line naming it: {err}");
    env.expect(&client, "old.test", Action::Allow, Some("allow old.test"), 1).await;

    // Back (with a new rule): generation 2.
    std::fs::write(&rules, "allow old.test\nallow new.test\n").unwrap();
    let r = env.reload_ok().await;
    assert_eq!(r.generation, 2, "{r:?}");
    assert_eq!((r.changes.len(), r.changes[0].added, r.changes[0].removed), (1, 1, 0), "{r:?}");
    env.expect(&client, "new.test", Action::Allow, Some("allow new.test"), 2).await;
    env.expect(&client, "old.test", Action::Allow, Some("allow old.test"), 2).await;

    // A reload that changes nothing still makes a new generation, and says nothing changed.
    let r = env.reload_ok().await;
    assert_eq!((r.generation, r.changes.len()), (3, 0), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_syntax_error_keeps_the_old_generation() {
    let (ca, _up, env) = two_names("allow old.test\n").await;
    let client = ca.client_config();
    let good = std::fs::read_to_string(env.path("hostgate.toml")).unwrap();

    // The rule file changes too: a half-applied reload would deny old.test.
    env.write("test.rules", "deny old.test\n");
    let bad = good.replacen("[policy]", "[policy", 1);
    let line = line_of(&bad, "[policy");
    env.write("hostgate.toml", &bad);
    let err = env.reload_err().await;
    assert!(err.contains(&format!("hostgate.toml:{line}:")), "the error names hostgate.toml:{line}: {err}");
    env.expect(&client, "old.test", Action::Allow, Some("allow old.test"), 1).await;

    // A value error is reported at its line as well.
    let bad = good.replace("default = \"deny\"", "default = \"maybe\"");
    let line = line_of(&bad, "\"maybe\"");
    env.write("hostgate.toml", &bad);
    let err = env.reload_err().await;
    assert!(err.contains(&format!("hostgate.toml:{line}:")), "the error names hostgate.toml:{line}: {err}");
    assert!(err.contains("policy.default"), "{err}");
    env.expect(&client, "old.test", Action::Allow, Some("allow old.test"), 1).await;

    env.write("hostgate.toml", &good);
    let r = env.reload_ok().await;
    assert_eq!(r.generation, 2, "{r:?}");
    assert!(r.needs_restart.is_empty(), "{r:?}");
    env.expect(&client, "old.test", Action::Deny, Some("deny old.test"), 2).await;
}

// ---------------------------------------------------------------------------------------------
// Reload requests (SIGHUP) coalesce.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_requests_coalesce() {
    let (ca, _up, env) = two_names("allow old.test\n").await;
    let client = ca.client_config();

    env.write("test.rules", "deny old.test\nallow new.test\n");
    for _ in 0..10 {
        env.gw().request_reload();
    }
    // Wait until the generation has not moved for 500 ms.
    let started = Instant::now();
    let (mut last, mut since) = (env.gw().generation(), Instant::now());
    while since.elapsed() < Duration::from_millis(500) || last == 1 {
        assert!(started.elapsed() < STEP, "the generation kept moving or never moved: {last}");
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = env.gw().generation();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    let moved = last - 1;
    eprintln!("10 requests ran {moved} reload(s)");
    assert!((1..=3).contains(&moved), "10 reload requests ran {moved} reloads");
    // The reload read the newest files.
    env.expect(&client, "old.test", Action::Deny, Some("deny old.test"), last).await;
    env.expect(&client, "new.test", Action::Allow, Some("allow new.test"), last).await;

    // One more request, one more reload.
    env.gw().request_reload();
    let deadline = Instant::now() + STEP;
    while env.gw().generation() == last {
        assert!(Instant::now() < deadline, "a lone request_reload did not reload");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.gw().generation(), last + 1);
}

// ---------------------------------------------------------------------------------------------
// Settings that need a restart.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_moves_adds_and_removes_listeners() {
    let (ca, _up, env) = two_names("allow old.test\n").await;
    let client = ca.client_config();
    let good = std::fs::read_to_string(env.path("hostgate.toml")).unwrap();
    let old = env.connect;

    // Move the listener: 127.0.0.1:0 becomes a port the kernel handed out, on 127.0.0.3.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let moved = SocketAddr::from(([127, 0, 0, 3], port));
    let text = good.replace("address = \"127.0.0.1:0\"", &format!("address = \"{moved}\""));
    assert_ne!(text, good);
    env.write("hostgate.toml", &format!("{text}\n[runtime]\nshutdown_grace = \"5s\"\n"));
    env.write("test.rules", "allow old.test\nallow new.test\n");
    let r = env.reload_ok().await;
    assert_eq!(r.generation, 2, "{r:?}");
    assert_eq!(r.needs_restart, ["[runtime]"], "a listener change applies at once: {r:?}");

    // The new address serves the new rules; the old one is closed.
    let f = fetch(moved, &client, "new.test", "/moved").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(f.status, 200, "{f:?}");
    let ev = env.event_of(f.client).await;
    assert_eq!((ev.listener.local, ev.generation, ev.action), (moved, 2, Some(Action::Allow)), "{ev:#?}");
    assert_eq!(env.gw().local_addr(ListenerKind::Connect), Some(moved));
    match tokio::time::timeout(STEP, TcpStream::connect(old)).await.unwrap() {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
        Ok(_) => panic!("{old} still accepts after the reload removed it"),
    }

    // A second listener added beside it; then a listener that cannot be bound fails the whole
    // reload: nothing changes, not even the rules.
    let second_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let second = SocketAddr::from(([127, 0, 0, 1], second_port));
    let two = format!("{text}\n[[listener]]\nkind = \"connect\"\naddress = \"{second}\"\n");
    env.write("hostgate.toml", &two);
    env.reload_ok().await;
    assert_eq!(env.gw().listeners().len(), 2);
    let f = fetch(second, &client, "new.test", "/second").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(f.status, 200, "{f:?}");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    env.write("hostgate.toml", &format!("{two}\n[[listener]]\nkind = \"connect\"\naddress = \"{busy}\"\n"));
    env.write("test.rules", "allow old.test\n");
    let err = env.reload_err().await;
    assert!(err.contains(&format!("cannot listen on {busy}")), "{err}");
    assert_eq!(env.gw().listeners().len(), 2, "nothing was added or removed");
    let f = fetch(second, &client, "new.test", "/still").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(f.status, 200, "the old rules still decide: {f:?}");
    drop(taken);
}

// ---------------------------------------------------------------------------------------------
// Report mode.

/// `curl --proxy … https://name/path`.
async fn curl_via(proxy: SocketAddr, ca: &TestCa, name: &str, path: &str) -> std::process::Output {
    let proxy = format!("http://{proxy}");
    curl(&["--proxy", &proxy, "--cacert", ca.ca_pem_path().to_str().unwrap(), &format!("https://{name}{path}")]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_report_mode_lets_denials_through_and_logs_would_deny() {
    let ca = TestCa::new();
    let up = TlsUpstream::start(&ca, &["blocked.test", "unlisted.test", "ok.test"], "R").await;
    let pinned = pins(&[("blocked.test", up.addr()), ("unlisted.test", up.addr()), ("ok.test", up.addr())]);
    let policy = POLICY.replace("default = \"deny\"\n", "default = \"deny\"\nmode = \"report\"\n");
    let env = Env::start(&toml(&policy, &pinned), &[("test.rules", "allow ok.test\ndeny blocked.test\n")]).await;
    assert!(env.gw().policy().report_all());

    let out = curl_via(env.connect, &ca, "blocked.test", "/r").await;
    assert!(out.status.success(), "a report-mode deny must be let through: {}", describe(&out));
    assert_eq!(stdout(&out), "upstream=R sni=blocked.test path=/r");
    let ev = env.wait_access(|e| e.sni.as_deref() == Some("blocked.test")).await;
    assert_eq!(ev.action, Some(Action::Allow), "{ev:#?}");
    assert!(ev.would_deny, "{ev:#?}");
    assert_eq!(ev.rule.as_deref(), Some("deny blocked.test"), "{ev:#?}");
    assert!(ev.source.as_deref().is_some_and(|s| s.ends_with("/test.rules:2")), "{ev:#?}");
    assert_eq!(ev.outcome, Outcome::Ok, "{ev:#?}");
    assert_eq!(ev.status, Some(200), "{ev:#?}");
    assert_eq!(ev.upstream, Some(up.addr()), "{ev:#?}");

    // Denied only by the default: let through, would_deny, no rule.
    let out = curl_via(env.connect, &ca, "unlisted.test", "/d").await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out), "upstream=R sni=unlisted.test path=/d");
    let ev = env.wait_access(|e| e.sni.as_deref() == Some("unlisted.test")).await;
    assert_eq!(ev.action, Some(Action::Allow), "{ev:#?}");
    assert!(ev.would_deny, "{ev:#?}");
    assert_eq!((ev.rule.as_deref(), ev.source.as_deref()), (None, None), "{ev:#?}");

    // An allowed name is just allowed.
    let out = curl_via(env.connect, &ca, "ok.test", "/a").await;
    assert!(out.status.success(), "{}", describe(&out));
    let ev = env.wait_access(|e| e.sni.as_deref() == Some("ok.test")).await;
    assert_eq!(ev.action, Some(Action::Allow), "{ev:#?}");
    assert!(!ev.would_deny, "{ev:#?}");
    assert_eq!(ev.rule.as_deref(), Some("allow ok.test"), "{ev:#?}");
    assert_eq!(up.handshakes(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_mode_per_rule_file() {
    let ca = TestCa::new();
    let up = TlsUpstream::start(&ca, &["reported.test", "enforced.test", "unlisted.test"], "R").await;
    let pinned = pins(&[("reported.test", up.addr()), ("enforced.test", up.addr()), ("unlisted.test", up.addr())]);
    let policy = "[policy]\ndefault = \"deny\"\n\
                  [[policy.source]]\npath = \"enforce.rules\"\n\
                  [[policy.source]]\npath = \"report.rules\"\nmode = \"report\"\n";
    let files = [("enforce.rules", "deny enforced.test\n"), ("report.rules", "allow other.test\ndeny reported.test\n")];
    let env = Env::start(&toml(policy, &pinned), &files).await;
    let p = env.gw().policy();
    assert!(!p.report_all());
    assert!(p.reports(&env.path("report.rules").display().to_string()));
    assert!(!p.reports(&env.path("enforce.rules").display().to_string()));

    let out = curl_via(env.connect, &ca, "reported.test", "/r").await;
    assert!(out.status.success(), "a deny from a report-mode file must be let through: {}", describe(&out));
    assert_eq!(stdout(&out), "upstream=R sni=reported.test path=/r");
    let ev = env.wait_access(|e| e.sni.as_deref() == Some("reported.test")).await;
    assert_eq!(ev.action, Some(Action::Allow), "{ev:#?}");
    assert!(ev.would_deny, "{ev:#?}");
    assert_eq!(ev.rule.as_deref(), Some("deny reported.test"), "{ev:#?}");
    assert!(ev.source.as_deref().is_some_and(|s| s.ends_with("/report.rules:2")), "{ev:#?}");
    assert_eq!(ev.outcome, Outcome::Ok, "{ev:#?}");

    let out = curl_via(env.connect, &ca, "enforced.test", "/e").await;
    assert_eq!(out.status.code(), Some(56), "{}", describe(&out));
    assert!(stderr(&out).contains("CONNECT tunnel failed, response 403"), "{}", describe(&out));
    let ev = env.wait_access(|e| dst(e).as_deref() == Some("enforced.test:443")).await;
    assert_eq!(ev.action, Some(Action::Deny), "{ev:#?}");
    assert!(!ev.would_deny, "{ev:#?}");
    assert_eq!(ev.rule.as_deref(), Some("deny enforced.test"), "{ev:#?}");
    assert!(ev.source.as_deref().is_some_and(|s| s.ends_with("/enforce.rules:1")), "{ev:#?}");
    assert_eq!((ev.outcome, ev.status), (Outcome::Denied, Some(403)), "{ev:#?}");

    // A report-mode file does not put the default in report mode.
    let out = curl_via(env.connect, &ca, "unlisted.test", "/u").await;
    assert_eq!(out.status.code(), Some(56), "{}", describe(&out));
    let ev = env.wait_access(|e| dst(e).as_deref() == Some("unlisted.test:443")).await;
    assert_eq!(ev.action, Some(Action::Deny), "{ev:#?}");
    assert_eq!((ev.would_deny, ev.rule.as_deref()), (false, None), "{ev:#?}");
    assert_eq!(up.handshakes(), 1, "only reported.test reached the upstream");
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown (in-process).

/// Writes `data` into the tunnel and reads it back from the echo upstream.
async fn echo_round<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(io: &mut S, data: &[u8]) {
    tokio::time::timeout(STEP, async {
        io.write_all(data).await?;
        io.flush().await?;
        let mut back = vec![0u8; data.len()];
        io.read_exact(&mut back).await?;
        assert_eq!(back, data);
        std::io::Result::Ok(())
    })
    .await
    .expect("echo timed out")
    .expect("echo failed");
}

/// Connects to `addr` until the connection is refused (or reset at once); returns how long
/// that took. Connections that do get through are dropped at once.
async fn until_refused(addr: SocketAddr, started: Instant, limit: Duration) -> Duration {
    loop {
        match TcpStream::connect(addr).await {
            Err(e) => {
                let kind = e.kind();
                assert!(
                    matches!(kind, std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset),
                    "{e}"
                );
                return started.elapsed();
            }
            Ok(s) => drop(s),
        }
        assert!(
            started.elapsed() < limit,
            "{addr} still accepts connections {:?} into the shutdown",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A gateway allowing `echo.test`, pinned to an echo upstream, and a TLS tunnel through it.
async fn echo_tunnel() -> (TestCa, TlsUpstream, Env, tokio_rustls::client::TlsStream<TcpStream>, SocketAddr) {
    let ca = TestCa::new();
    let up = TlsUpstream::start_echo(&ca, &["echo.test"], "E").await;
    let env =
        Env::start(&toml(POLICY, &pins(&[("echo.test", up.addr())])), &[("test.rules", "allow echo.test\n")]).await;
    let tcp = tunnel(env.connect, "echo.test:443").await;
    let client = tcp.local_addr().unwrap();
    let mut tls = tls_handshake(tcp, "echo.test", ca.client_config()).await.unwrap();
    echo_round(&mut tls, b"before the shutdown").await;
    (ca, up, env, tls, client)
}

/// Starts `gateway.shutdown(grace)` in a task: when it started, and the task's (closed, took).
fn spawn_shutdown(gateway: Gateway, grace: Duration) -> (Instant, tokio::task::JoinHandle<(usize, Duration)>) {
    let started = Instant::now();
    let task = tokio::spawn(async move {
        let closed = gateway.shutdown(grace).await;
        (closed, started.elapsed())
    });
    (started, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_refuses_new_connections_drains_then_closes_what_is_left() {
    const GRACE: Duration = Duration::from_secs(2);
    let (_ca, _up, mut env, mut tls, _client) = echo_tunnel().await;
    let proxy = env.connect;
    let gateway = env.gateway.take().unwrap();

    let (started, shutdown) = spawn_shutdown(gateway, GRACE);
    let refused = until_refused(proxy, started, Duration::from_secs(1)).await;
    eprintln!("new connections refused {refused:?} into the shutdown");
    assert!(refused < Duration::from_millis(300), "new connections still accepted {refused:?} into the shutdown");

    // The established tunnel keeps working during the grace period.
    tokio::time::sleep(Duration::from_millis(300)).await;
    echo_round(&mut tls, b"during the grace period").await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(started.elapsed() < GRACE, "the test itself was too slow: {:?}", started.elapsed());
    echo_round(&mut tls, b"still during the grace period").await;
    assert!(!shutdown.is_finished(), "shutdown returned during the grace period with a tunnel open");

    let (closed, took) = tokio::time::timeout(GRACE + STEP, shutdown).await.expect("shutdown hung").unwrap();
    eprintln!("shutdown returned {closed} after {took:?}");
    assert_eq!(closed, 1, "the tunnel still open at the end of the grace period");
    assert!(took >= GRACE, "shutdown returned after {took:?}, before the grace period ended");

    // The gateway closed the tunnel: the client reads the end (or an error), not silence, and
    // writing and reading an echo no longer works.
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(3), async {
        let _ = tls.write_all(b"after the grace period").await;
        let _ = tls.flush().await;
        tls.read(&mut buf).await
    })
    .await;
    match read {
        Err(_) => panic!(
            "the tunnel is still open {:?} after shutdown(grace = {GRACE:?}) returned {closed}",
            started.elapsed() - took
        ),
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!(
            "the tunnel still echoes after shutdown(grace = {GRACE:?}) returned {closed}: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_early_when_the_last_tunnel_ends() {
    const GRACE: Duration = Duration::from_secs(10);
    let (_ca, _up, mut env, mut tls, client) = echo_tunnel().await;
    let proxy = env.connect;
    let gateway = env.gateway.take().unwrap();

    let (started, shutdown) = spawn_shutdown(gateway, GRACE);
    until_refused(proxy, started, Duration::from_secs(1)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    echo_round(&mut tls, b"during the grace period").await;
    assert!(!shutdown.is_finished(), "shutdown returned with a tunnel open");

    // The client ends its tunnel: the shutdown has nothing left to wait for.
    tls.shutdown().await.unwrap();
    let rest = support::http::read_until_closed(&mut tls, STEP).await;
    assert!(rest.bytes.is_empty(), "{rest:?}");
    drop(tls);
    let (closed, took) = tokio::time::timeout(STEP, shutdown).await.expect("shutdown hung").unwrap();
    eprintln!("shutdown returned {closed} after {took:?}");
    assert_eq!(closed, 0, "nothing was left to close");
    assert!(took < Duration::from_secs(3), "shutdown took {took:?} though the last tunnel ended at ~0.3 s");

    // The tunnel was logged as a normal end.
    let ev = env.events.wait(|e| e.client == client, Duration::from_secs(5)).await;
    assert_eq!(ev.listener.local, proxy, "{ev:#?}");
    assert_eq!((ev.action, ev.outcome), (Some(Action::Allow), Outcome::Ok), "{ev:#?}");
    assert!(ev.bytes_down > 0, "{ev:#?}");
}

// ---------------------------------------------------------------------------------------------
// The binary: SIGHUP reloads, SIGTERM drains, a second SIGTERM exits at once.

const RELOADED: &str = "reloaded; new connections use the new generation";
const RELOAD_FAILED: &str = "reload failed; the current generation keeps serving";

/// The access events (JSON lines) of `hg` for `host`.
fn access_of(hg: &Hostgate, host: &str) -> Vec<Value> {
    hg.json_lines(|v| v["target"] == "access" && v["host"] == host)
}

/// Waits for the `n`-th access event for `host` and returns it.
async fn nth_access(hg: &Hostgate, host: &str, n: usize) -> Value {
    let deadline = Instant::now() + STEP;
    loop {
        let events = access_of(hg, host);
        if events.len() >= n {
            assert_eq!(events.len(), n, "{events:#?}");
            return events[n - 1].clone();
        }
        assert!(Instant::now() < deadline, "no access event #{n} for {host}; stderr:\n{}", hg.lines().join("\n"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_sighup_reloads_and_sigterm_drains_then_a_second_sigterm_exits() {
    let ca = TestCa::new();
    let up = TlsUpstream::start(&ca, &["flip.test"], "F").await;
    let echo = TlsUpstream::start_echo(&ca, &["echo.test"], "E").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hostgate.toml");
    let rules = dir.path().join("test.rules");
    let extra = format!(
        "{}\n[log]\nformat = \"json\"\nlevel = \"info\"\n\n[runtime]\nshutdown_grace = \"10s\"\n",
        pins(&[("flip.test", up.addr()), ("echo.test", echo.addr())])
    );
    std::fs::write(&config, toml(POLICY, &extra)).unwrap();
    std::fs::write(&rules, "allow echo.test\nallow flip.test\n").unwrap();
    let mut hg = Hostgate::spawn(&[], &config);
    let addr = hg.listening("connect").await;
    hg.wait_json(|v| v["message"] == "policy loaded", STEP).await;

    // Generation 1 allows flip.test.
    let out = curl_via(addr, &ca, "flip.test", "/one").await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out), "upstream=F sni=flip.test path=/one");
    let ev = nth_access(&hg, "flip.test", 1).await;
    assert_eq!((ev["action"].as_str(), ev["generation"].as_u64()), (Some("allow"), Some(1)), "{ev:#}");

    // Flip and HUP: generation 2 denies it.
    write_atomic(&rules, "allow echo.test\ndeny flip.test\n");
    hg.signal("HUP");
    let line = hg.wait_json(|v| v["message"] == RELOADED, STEP).await;
    assert_eq!(line["level"], "INFO", "{line:#}");
    assert_eq!(line["generation"], 2, "{line:#}");
    let counts = [&line["bypass"], &line["allow"], &line["deny"]].map(Value::as_u64);
    assert_eq!(counts, [Some(0), Some(1), Some(1)], "bypass, allow, deny: {line:#}");
    assert!(line["compile_ms"].is_u64(), "{line:#}");
    let changes = line["changes"].as_str().unwrap_or_else(|| panic!("{line:#}"));
    assert_eq!(changes, format!("{}: +1 -1", rules.display()), "{line:#}");
    let out = curl_via(addr, &ca, "flip.test", "/two").await;
    assert_eq!(out.status.code(), Some(56), "{}", describe(&out));
    assert!(stderr(&out).contains("CONNECT tunnel failed, response 403"), "{}", describe(&out));
    let ev = nth_access(&hg, "flip.test", 2).await;
    assert_eq!((ev["action"].as_str(), ev["generation"].as_u64()), (Some("deny"), Some(2)), "{ev:#}");
    assert_eq!(ev["rule"], "deny flip.test", "{ev:#}");

    // A broken file and HUP: an error naming file:line, and generation 2 keeps deciding (the
    // broken file's first line would allow flip.test again).
    write_atomic(&rules, "allow flip.test\nallow *.*bad[\nallow echo.test\n");
    hg.signal("HUP");
    let line = hg.wait_json(|v| v["message"] == RELOAD_FAILED, STEP).await;
    assert_eq!(line["level"], "ERROR", "{line:#}");
    let error = line["error"].as_str().unwrap_or_else(|| panic!("{line:#}"));
    assert!(error.contains(&format!("{}:2", rules.display())), "names test.rules:2: {line:#}");
    assert_eq!(line["generation"], 2, "{line:#}");
    let out = curl_via(addr, &ca, "flip.test", "/three").await;
    assert_eq!(out.status.code(), Some(56), "{}", describe(&out));
    let ev = nth_access(&hg, "flip.test", 3).await;
    assert_eq!((ev["action"].as_str(), ev["generation"].as_u64()), (Some("deny"), Some(2)), "{ev:#}");
    assert_eq!(hg.json_lines(|v| v["message"] == RELOADED).len(), 1);

    // SIGTERM with a tunnel open: no new connections, the tunnel keeps going.
    let tcp = tunnel(addr, "echo.test:443").await;
    let mut tls = tls_handshake(tcp, "echo.test", ca.client_config()).await.unwrap();
    echo_round(&mut tls, b"before SIGTERM").await;
    let first = Instant::now();
    hg.signal("TERM");
    hg.wait_json(|v| v["message"].as_str().is_some_and(|m| m.starts_with("stopping: no new connections")), STEP).await;
    until_refused(addr, first, Duration::from_secs(2)).await;
    echo_round(&mut tls, b"after SIGTERM").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        hg.alive(),
        "hostgate exited with a tunnel open, before its 10 s grace; stderr:\n{}",
        hg.lines().join("\n")
    );
    echo_round(&mut tls, b"still draining").await;

    // A second SIGTERM: exit 1 now.
    let second = Instant::now();
    hg.signal("TERM");
    let (status, lines) = hg.wait().await;
    let exited = second.elapsed();
    let all = lines.join("\n");
    assert_eq!(status.code(), Some(1), "{status}; stderr:\n{all}");
    assert!(exited < Duration::from_secs(3), "exited {exited:?} after the second SIGTERM");
    assert!(
        first.elapsed() < Duration::from_secs(8),
        "{:?} from the first SIGTERM: waited out the grace",
        first.elapsed()
    );
    assert!(all.contains("second signal: exiting now"), "{all}");
    // The process is gone, so is the tunnel.
    let closed = support::http::read_until_closed(&mut tls, STEP).await;
    assert!(closed.bytes.is_empty(), "{closed:?}");
}
