//! `contrib/hostgate-m365-update` against a local stand-in for the Microsoft 365 IP Address and
//! URL web service (an HTTP server on `127.0.0.1:0` serving the fixture documents of
//! `tests/fixtures/m365/`), with the real gateway running on the installed file: the first run
//! installs the list; a second run with the same version fetches nothing more and changes
//! nothing; a new version changes the file and, after the reload, the running gateway's
//! decisions; a truncated download, an invalid document and a failing `hostgate check` leave the
//! installed file and the running policy as they were and exit non-zero.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use support::process::Hostgate;
use support::tools::{curl, describe, run, stderr, stdout};
use support::{pins, TestCa, TlsUpstream, LOCAL_UPSTREAM, STEP};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const RELOADED: &str = "reloaded; new connections use the new generation";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(root().join("tests").join("fixtures").join("m365").join(name)).unwrap()
}

/// What the stand-in serves at `/endpoints/Worldwide`.
#[derive(Clone, Debug)]
enum Endpoints {
    /// The whole document.
    Whole(Vec<u8>),
    /// The head announcing the whole length, then half the body, then the connection closes.
    Truncated(Vec<u8>),
}

/// The stand-in's documents and the request targets it has seen.
#[derive(Debug)]
struct Service {
    version: Vec<u8>,
    endpoints: Endpoints,
    requests: Vec<String>,
}

/// Serves `service` on `127.0.0.1:0`: `/version/Worldwide` and `/endpoints/Worldwide` (any
/// query), 404 otherwise; one request per connection.
async fn serve(service: Arc<Mutex<Service>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let service = service.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 2048];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let target = String::from_utf8_lossy(&head).split_whitespace().nth(1).unwrap_or_default().to_owned();
                let (status, body, send) = {
                    let mut s = service.lock().unwrap();
                    s.requests.push(target.clone());
                    match target.split('?').next().unwrap_or_default() {
                        "/version/Worldwide" => ("200 OK", s.version.clone(), s.version.len()),
                        "/endpoints/Worldwide" => match &s.endpoints {
                            Endpoints::Whole(b) => ("200 OK", b.clone(), b.len()),
                            Endpoints::Truncated(b) => ("200 OK", b.clone(), b.len() / 2),
                        },
                        _ => ("404 Not Found", b"no such document\n".to_vec(), 17),
                    }
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tcp.write_all(head.as_bytes()).await;
                let _ = tcp.write_all(&body[..send]).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    addr
}

/// Where everything of one test lives.
struct Site {
    dir: tempfile::TempDir,
    service: Arc<Mutex<Service>>,
    base_url: String,
}

impl Site {
    fn rules(&self) -> PathBuf {
        self.dir.path().join("policies").join("microsoft-365.rules")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("hostgate.toml")
    }

    fn installed(&self) -> Vec<u8> {
        std::fs::read(self.rules()).unwrap()
    }

    fn recorded_version(&self) -> String {
        std::fs::read_to_string(self.state().join("version")).unwrap()
    }

    fn requests(&self) -> Vec<String> {
        std::mem::take(&mut self.service.lock().unwrap().requests)
    }

    fn serve(&self, version: &str, endpoints: Endpoints) {
        let mut s = self.service.lock().unwrap();
        s.version = format!("{{\"instance\":\"Worldwide\",\"latest\":\"{version}\"}}").into_bytes();
        s.endpoints = endpoints;
    }

    /// Runs the updater: the base URL, instance, state directory and binary from the
    /// environment, the rest as flags, with `reload` as its reload command.
    async fn update(&self, reload: &str, config: &Path) -> Output {
        let script = root().join("contrib").join("hostgate-m365-update");
        let env = [
            format!("HOSTGATE_M365_BASE_URL={}", self.base_url),
            "HOSTGATE_M365_INSTANCE=Worldwide".to_owned(),
            format!("HOSTGATE_M365_STATE_DIR={}", self.state().display()),
            format!("HOSTGATE_BIN={}", env!("CARGO_BIN_EXE_hostgate")),
        ];
        let rules = self.rules().display().to_string();
        let config = config.display().to_string();
        let mut args: Vec<&str> = env.iter().map(String::as_str).collect();
        args.extend(["sh", script.to_str().unwrap(), "--rules", &rules, "--config", &config, "--reload", reload]);
        run("env", &args, None).await
    }
}

/// `curl --proxy … https://name/path`.
async fn curl_via(proxy: SocketAddr, ca: &TestCa, name: &str, path: &str) -> Output {
    let proxy = format!("http://{proxy}");
    curl(&["--proxy", &proxy, "--cacert", ca.ca_pem_path().to_str().unwrap(), &format!("https://{name}{path}")]).await
}

/// The `n`-th access event for `host` (its action, rule and generation), once it is logged.
async fn access(hg: &mut Hostgate, host: &str, n: usize) -> Value {
    let host = host.to_owned();
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let events = hg.json_lines(|v| v["target"] == "access" && v["host"] == host.as_str());
        if events.len() >= n {
            return events[n - 1].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no access event #{n} for {host}:\n{}", hg.lines().join("\n"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn reloads(hg: &Hostgate) -> usize {
    hg.json_lines(|v| v["message"] == RELOADED).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_updater_installs_skips_updates_and_reloads_and_a_broken_download_changes_nothing() {
    let v1 = fixture("endpoints-v1.json");
    let v2 = fixture("endpoints-v2.json");
    let service = Arc::new(Mutex::new(Service {
        version: fixture("version-v1.json"),
        endpoints: Endpoints::Whole(v1.clone()),
        requests: Vec::new(),
    }));
    let addr = serve(service.clone()).await;
    let site = Site { dir: tempfile::tempdir().unwrap(), service, base_url: format!("http://{addr}") };
    std::fs::create_dir(site.dir.path().join("policies")).unwrap();

    // A gateway whose one source is the installed list, both test names pinned to one upstream.
    let ca = TestCa::new();
    let up = TlsUpstream::start(&ca, &["cdn.static.microsoft", "outlook.office.com"], "M").await;
    let names = pins(&[("cdn.static.microsoft", up.addr()), ("outlook.office.com", up.addr())]);
    std::fs::write(
        site.config(),
        format!(
            "[[listener]]\nkind = \"connect\"\naddress = \"127.0.0.1:0\"\n\n[policy]\ndefault = \"deny\"\n\n\
             [[policy.source]]\nname = \"microsoft-365\"\npath = \"policies/microsoft-365.rules\"\n\n\
             {LOCAL_UPSTREAM}{names}\n[log]\nformat = \"json\"\nlevel = \"info\"\n"
        ),
    )
    .unwrap();

    // 1. The first run installs version 1 (no gateway runs yet: the reload is `true`).
    let o = site.update("true", &site.config()).await;
    assert!(o.status.success(), "{}", describe(&o));
    let out = stdout(&o);
    assert!(out.contains("Worldwide version 2024103000 (installed: none): updating"), "{out}");
    assert!(out.contains("changes: no previous "), "{out}");
    assert!(out.contains("installed Worldwide version 2024103000 in "), "{out}");
    let expected = String::from_utf8(fixture("microsoft-365.rules"))
        .unwrap()
        .replace("# source:   endpoints-v1.json\n", "# source:   endpoints.json\n");
    assert_eq!(String::from_utf8(site.installed()).unwrap(), expected);
    assert_eq!(site.recorded_version(), "2024103000\n");
    let guid = std::fs::read_to_string(site.state().join("client-request-id")).unwrap().trim().to_owned();
    let shape: Vec<usize> = guid.split('-').map(str::len).collect();
    assert!(shape == [8, 4, 4, 4, 12] && guid.chars().all(|c| c == '-' || c.is_ascii_hexdigit()), "{guid}");
    assert_eq!(
        site.requests(),
        [format!("/version/Worldwide?ClientRequestId={guid}"), format!("/endpoints/Worldwide?ClientRequestId={guid}")]
    );
    let leftovers: Vec<_> =
        std::fs::read_dir(site.dir.path().join("policies")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, ["microsoft-365.rules"], "the work directory is removed");

    let mut hg = Hostgate::spawn(&[], &site.config());
    let proxy = hg.listening("connect").await;
    hg.wait_json(|v| v["message"] == "policy loaded", STEP).await;
    let hup = format!("kill -HUP {}", hg.pid());

    // Version 1: outlook.office.com is bypassed (set 1), cdn.static.microsoft is in no set.
    let o = curl_via(proxy, &ca, "outlook.office.com", "/one").await;
    assert_eq!(stdout(&o), "upstream=M sni=outlook.office.com path=/one", "{}", describe(&o));
    let ev = access(&mut hg, "outlook.office.com", 1).await;
    assert_eq!(
        (ev["action"].as_str(), ev["rule"].as_str()),
        (Some("bypass"), Some("bypass outlook.office.com:80,443"))
    );
    let o = curl_via(proxy, &ca, "cdn.static.microsoft", "/one").await;
    assert!(stderr(&o).contains("CONNECT tunnel failed, response 403"), "{}", describe(&o));
    let ev = access(&mut hg, "cdn.static.microsoft", 1).await;
    assert_eq!((ev["action"].as_str(), ev["generation"].as_u64()), (Some("deny"), Some(1)), "{ev:#}");

    // 2. The same version again: only /version is fetched; nothing changes, nothing reloads.
    let before = site.installed();
    let modified = std::fs::metadata(site.rules()).unwrap().modified().unwrap();
    let o = site.update(&hup, &site.config()).await;
    assert!(o.status.success(), "{}", describe(&o));
    assert!(stdout(&o).contains("up to date: Worldwide version 2024103000 is installed in "), "{}", describe(&o));
    assert_eq!(
        site.requests(),
        [format!("/version/Worldwide?ClientRequestId={guid}")],
        "the same ClientRequestId, no download"
    );
    assert_eq!(site.installed(), before);
    assert_eq!(std::fs::metadata(site.rules()).unwrap().modified().unwrap(), modified);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(reloads(&hg), 0, "no reload");

    // 3. Version 2: the file changes, the summary is printed, the gateway reloads and decides
    //    cdn.static.microsoft by the new set 160.
    site.serve("2024112800", Endpoints::Whole(v2.clone()));
    let o = site.update(&hup, &site.config()).await;
    assert!(o.status.success(), "{}", describe(&o));
    let out = stdout(&o);
    assert!(out.contains("changes: version 2024103000 -> 2024112800\n"), "{out}");
    assert!(out.contains("  added set 160 Common (Default -> allow): 2 urls, 0 ips; tcp 443; udp none\n"), "{out}");
    assert!(out.contains("changes: 1 added, 1 removed, 4 changed, 5 unchanged\n"), "{out}");
    let installed = String::from_utf8(site.installed()).unwrap();
    assert!(installed.contains("\n# version:  2024112800\n"), "{installed}");
    assert!(installed.contains("\nallow *.static.microsoft:443  # set 160 Common\n"), "{installed}");
    assert_eq!(site.recorded_version(), "2024112800\n");
    let line = hg.wait_json(|v| v["message"] == RELOADED, STEP).await;
    assert_eq!(line["generation"], 2, "{line:#}");
    let o = curl_via(proxy, &ca, "cdn.static.microsoft", "/two").await;
    assert_eq!(stdout(&o), "upstream=M sni=cdn.static.microsoft path=/two", "{}", describe(&o));
    let ev = access(&mut hg, "cdn.static.microsoft", 2).await;
    assert_eq!(
        (ev["action"].as_str(), ev["rule"].as_str(), ev["generation"].as_u64()),
        (Some("allow"), Some("allow *.static.microsoft:443"), Some(2)),
        "{ev:#}"
    );
    let good = site.installed();

    // 4. Broken downloads of a version 3 (which drops set 160): a truncated body, then a
    //    document that is not JSON. Each exits non-zero and changes nothing.
    let v3 = String::from_utf8(v2.clone())
        .unwrap()
        .replace("\"*.static.microsoft\"", "\"*.static2.microsoft\"")
        .into_bytes();
    assert_ne!(v3, v2);
    let broken = [
        (Endpoints::Truncated(v3.clone()), "cannot download the endpoint list from "),
        (Endpoints::Whole(v3[..v3.len() / 2].to_vec()), "malformed JSON: EOF while parsing"),
        (Endpoints::Whole(b"<html>Service Unavailable</html>".to_vec()), "malformed JSON: expected value"),
    ];
    for (endpoints, why) in broken {
        site.serve("2024122000", endpoints.clone());
        let o = site.update(&hup, &site.config()).await;
        assert!(!o.status.success(), "{endpoints:?}: {}", describe(&o));
        let err = stderr(&o);
        assert!(err.contains(why), "{endpoints:?}: want `{why}` in:\n{err}");
        assert!(err.contains("nothing changed"), "{err}");
        assert_eq!(site.installed(), good, "the installed file is unchanged");
        assert_eq!(site.recorded_version(), "2024112800\n");
    }

    // 5. A valid version 3 that `hostgate check` refuses (here: the configuration names a rule
    //    file that is missing): the previous file is put back, nothing reloads.
    site.serve("2024122000", Endpoints::Whole(v3.clone()));
    let broken_config = site.dir.path().join("broken.toml");
    let text = std::fs::read_to_string(site.config()).unwrap();
    std::fs::write(&broken_config, format!("{text}\n[[policy.source]]\npath = \"policies/missing.rules\"\n")).unwrap();
    let o = site.update(&hup, &broken_config).await;
    assert!(!o.status.success(), "{}", describe(&o));
    let err = stderr(&o);
    assert!(err.contains("missing.rules"), "check's own error: {err}");
    assert!(err.contains(" failed with the new list: the previous "), "{err}");
    assert!(err.contains("is back, nothing reloaded"), "{err}");
    assert_eq!(site.installed(), good, "the previous file is back");
    assert_eq!(site.recorded_version(), "2024112800\n");

    // The running policy is generation 2 still: cdn.static.microsoft is allowed, one reload in all.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(reloads(&hg), 1, "only version 2 reloaded:\n{}", hg.lines().join("\n"));
    let o = curl_via(proxy, &ca, "cdn.static.microsoft", "/three").await;
    assert_eq!(stdout(&o), "upstream=M sni=cdn.static.microsoft path=/three", "{}", describe(&o));
    let ev = access(&mut hg, "cdn.static.microsoft", 3).await;
    assert_eq!((ev["action"].as_str(), ev["generation"].as_u64()), (Some("allow"), Some(2)), "{ev:#}");

    // 6. Once the service is whole again, version 3 installs and the gateway follows.
    let o = site.update(&hup, &site.config()).await;
    assert!(o.status.success(), "{}", describe(&o));
    assert!(
        stdout(&o).contains("  changed set 160 Common: urls +*.static2.microsoft -*.static.microsoft\n"),
        "{}",
        describe(&o)
    );
    hg.wait_json(|v| v["message"] == RELOADED && v["generation"] == 3, STEP).await;
    let o = curl_via(proxy, &ca, "cdn.static.microsoft", "/four").await;
    assert!(stderr(&o).contains("CONNECT tunnel failed, response 403"), "{}", describe(&o));
    assert_eq!(site.recorded_version(), "2024122000\n");

    hg.signal("TERM");
    let (status, _) = hg.wait().await;
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn the_updater_refuses_bad_settings() {
    let script = root().join("contrib").join("hostgate-m365-update");
    let script = script.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hostgate.toml");
    std::fs::write(&config, "").unwrap();
    let config = config.to_str().unwrap();
    let bin = env!("CARGO_BIN_EXE_hostgate");
    let rules = dir.path().join("microsoft-365.rules");
    let rules = rules.to_str().unwrap();
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    let common = ["--config", config, "--hostgate", bin, "--rules", rules, "--state-dir", state];
    for (extra, error) in [
        (&["--instance", "World wide"][..], "instance 'World wide' is not a name"),
        (&["--base-url", "ftp://x"][..], "base URL 'ftp://x' is neither https:// nor http://"),
        (&["--timeout", "soon"][..], "timeout 'soon' is not a number of seconds"),
        (&["--colour"][..], "--colour needs a value"),
        (&["--colour=red"][..], "unknown flag --colour"),
        (
            &["--rules", "/nonexistent/dir/m.rules"][..],
            "directory /nonexistent/dir (of /nonexistent/dir/m.rules) does not exist",
        ),
    ] {
        let mut args = vec![script];
        args.extend_from_slice(&common);
        args.extend_from_slice(extra);
        let o = run("sh", &args, None).await;
        assert_eq!(o.status.code(), Some(1), "{extra:?}: {}", describe(&o));
        assert!(stderr(&o).contains(error), "{extra:?}: want `{error}`: {}", describe(&o));
    }
    // Nothing listens on port 9 of 127.0.0.1: the download fails, nothing is written.
    let mut args = vec![script];
    args.extend_from_slice(&common);
    args.extend_from_slice(&["--base-url", "http://127.0.0.1:9", "--timeout", "5"]);
    let o = run("sh", &args, None).await;
    assert_eq!(o.status.code(), Some(1), "{}", describe(&o));
    assert!(
        stderr(&o).contains("cannot download the version from http://127.0.0.1:9/version/Worldwide?ClientRequestId="),
        "{}",
        describe(&o)
    );
    assert!(!Path::new(rules).exists());
    let o = run("sh", &[script, "--help"], None).await;
    assert!(o.status.success() && stdout(&o).contains("HOSTGATE_M365_BASE_URL"), "{}", describe(&o));
}
