//! Proxy authentication against a real OpenLDAP `slapd` (Debian's package), which each test
//! starts in a temporary directory (a `slapd.conf`, an `mdb` database, the core, cosine and
//! inetOrgPerson schemas, the `memberof` overlay, ACLs that let nobody but signed-in users read
//! the tree, referrals beside the people and the groups as Active Directory has them): curl
//! through the connect listener with `--proxy-user`. Good and bad passwords and unknown users; a
//! user found by a DN template and by a service account's search (whose filter escapes the
//! name); the groups found by a search of `groupOfNames` `member`s and by `memberOf`; a directory
//! group that selects a client group; StartTLS and LDAPS with the directory's CA (and with
//! another CA, a name the certificate does not have, or no TLS: `503`, never `200`); a service
//! account that cannot bind; the directory killed mid-test, then hung (the hostgate binary:
//! `503` for what needs a sign-in, with the log line and the access record naming the URL,
//! while a bypass name flows, and sign-ins again once the directory is back);
//! `hostgate_auth_total`.
//!
//! Without `slapd` and the ldap-utils (`ldapsearch`, `ldapadd`), each test says so and returns.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use hostgate_proxy::outcome::Outcome;
use hostgate_proxy::policy::Action;
use serde_json::Value;
use support::gateway::metric;
use support::process::Hostgate;
use support::tools::{curl, describe, run, stdout};
use support::{pins, TestCa, TestGateway, TlsUpstream, LOCAL_UPSTREAM, STEP};
use tokio::process::{Child, Command};

const SUFFIX: &str = "dc=example,dc=org";
const ROOT_DN: &str = "cn=admin,dc=example,dc=org";
const ROOT_PW: &str = "root-secret";
const SERVICE_DN: &str = "cn=hostgate,ou=services,dc=example,dc=org";
const SERVICE_PW: &str = "service-pw";
const KIOSK_ADMINS: &str = "cn=kiosk-admins,ou=groups,dc=example,dc=org";

/// The tree loaded with `slapadd` before the start: the people and the service account, and
/// under `ou=people` and `ou=groups` a referral to another server, so that subtree searches
/// there return a search reference beside the entries, as Active Directory's searches from a
/// domain's root do (its `DomainDnsZones`, `ForestDnsZones` and `Configuration` references).
const BASE_LDIF: &str = "\
dn: dc=example,dc=org
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,dc=example,dc=org
objectClass: organizationalUnit
ou: people

dn: ou=groups,dc=example,dc=org
objectClass: organizationalUnit
ou: groups

dn: ou=services,dc=example,dc=org
objectClass: organizationalUnit
ou: services

dn: cn=hostgate,ou=services,dc=example,dc=org
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: hostgate
userPassword: service-pw

dn: uid=alice,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: alice
cn: Alice Example
sn: Example
userPassword: alice-pw

dn: uid=carol,ou=people,dc=example,dc=org
objectClass: inetOrgPerson
uid: carol
cn: Carol Example
sn: Example
userPassword: carol-pw

dn: ou=elsewhere,ou=people,dc=example,dc=org
objectClass: referral
objectClass: extensibleObject
ou: elsewhere
ref: ldap://ldap.elsewhere.example/ou=people,dc=elsewhere,dc=example

dn: ou=elsewhere,ou=groups,dc=example,dc=org
objectClass: referral
objectClass: extensibleObject
ou: elsewhere
ref: ldap://ldap.elsewhere.example/ou=groups,dc=elsewhere,dc=example
";

/// The groups, added with `ldapadd` once slapd runs (`slapadd` bypasses the `memberof`
/// overlay, which keeps the members' `memberOf` as groups change).
const GROUPS_LDIF: &str = "\
dn: cn=kiosk-admins,ou=groups,dc=example,dc=org
objectClass: groupOfNames
cn: kiosk-admins
member: uid=alice,ou=people,dc=example,dc=org

dn: cn=everyone,ou=groups,dc=example,dc=org
objectClass: groupOfNames
cn: everyone
member: uid=alice,ou=people,dc=example,dc=org
member: uid=carol,ou=people,dc=example,dc=org
";

/// Whether slapd and the ldap-utils are here; says why not otherwise.
fn can_run() -> bool {
    let missing: Vec<&str> = ["/usr/sbin/slapd", "/usr/sbin/slapadd", "/usr/bin/ldapsearch", "/usr/bin/ldapadd"]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    let overlay = Path::new("/usr/lib/ldap/memberof.so").exists();
    if !missing.is_empty() || !overlay {
        eprintln!(
            "skipping: needs OpenLDAP's slapd (with /usr/lib/ldap/memberof.so) and ldap-utils \
             (apt-get install slapd ldap-utils); missing: {missing:?}, memberof overlay: {overlay}"
        );
        return false;
    }
    true
}

/// An OpenLDAP server of its own, listening on `127.0.0.1:PORT` (and on a Unix socket in its
/// directory, for the test's own administration); killed on drop.
struct Slapd {
    // Dropped before `dir`: the process is killed before its files go.
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    /// With `tls`: an `ldaps://` listener too.
    ldaps_port: Option<u16>,
    tls: bool,
}

impl Slapd {
    /// A directory with alice, carol, the service account and the groups. With `tls`, a server
    /// certificate for `localhost` from a CA of the test's (`ca_path`), and binds and searches
    /// need a TLS layer (`security ssf=128`): an answer to a plain connection proves nothing.
    async fn start(tls: bool) -> Slapd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("db")).unwrap();
        let mut conf = String::new();
        if tls {
            make_certificates(d).await;
            conf.push_str(&format!(
                "TLSCACertificateFile {0}/ca.pem\nTLSCertificateFile {0}/server.pem\n\
                 TLSCertificateKeyFile {0}/server.key\nsecurity ssf=128\nlocalSSF 128\n",
                d.display()
            ));
        }
        conf.push_str(&format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             pidfile {0}/slapd.pid\n\
             argsfile {0}/slapd.args\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             moduleload memberof\n\
             database mdb\n\
             maxsize 16777216\n\
             suffix \"{SUFFIX}\"\n\
             rootdn \"{ROOT_DN}\"\n\
             rootpw {ROOT_PW}\n\
             directory {0}/db\n\
             overlay memberof\n\
             access to attrs=userPassword\n  by self write\n  by anonymous auth\n  by * none\n\
             access to *\n  by users read\n  by * none\n",
            d.display()
        ));
        std::fs::write(d.join("slapd.conf"), conf).unwrap();
        std::fs::write(d.join("base.ldif"), BASE_LDIF).unwrap();
        let conf = d.join("slapd.conf");
        let ldif = d.join("base.ldif");
        let o = run("/usr/sbin/slapadd", &["-f", path(&conf), "-l", path(&ldif)], None).await;
        assert!(o.status.success(), "slapadd: {}", describe(&o));
        let mut slapd = Slapd { child: None, dir, port: free_port(), ldaps_port: tls.then(free_port), tls };
        slapd.spawn().await;
        slapd.admin("/usr/bin/ldapadd", &[], GROUPS_LDIF).await;
        slapd
    }

    /// Starts the process (again, after [`Slapd::stop`]: the same port and database) and waits
    /// until it answers.
    async fn spawn(&mut self) {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(d.join("slapd.log")).unwrap();
        let mut urls = format!("ldap://127.0.0.1:{}/ {}", self.port, self.ldapi());
        if let Some(p) = self.ldaps_port {
            urls.push_str(&format!(" ldaps://127.0.0.1:{p}/"));
        }
        let child = Command::new("/usr/sbin/slapd")
            // `-d`: in the foreground, logging to standard error (the file).
            .args(["-d", "stats", "-f", path(&d.join("slapd.conf")), "-h", &urls])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run slapd: {e}"));
        self.child = Some(child);
        let start = Instant::now();
        loop {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok();
            if tcp && self.search_base().await {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("slapd exited ({status}); its log:\n{}", self.log());
            }
            assert!(start.elapsed() < STEP, "slapd does not answer after {STEP:?}; its log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the process without ending it (`SIGSTOP`: a directory that accepts connections and
    /// never answers), or lets it go on (`SIGCONT`).
    async fn pause(&self, pause: bool) {
        let pid = self.child.as_ref().and_then(Child::id).expect("running").to_string();
        let o = run("kill", &[if pause { "-STOP" } else { "-CONT" }, &pid], None).await;
        assert!(o.status.success(), "{}", describe(&o));
    }

    /// Kills the process (as a crash would) and waits for it.
    async fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().await.unwrap();
    }

    /// The URL the gateway uses: `ldap://127.0.0.1:PORT`, or `ldap://localhost:PORT` (the
    /// certificate's name) with TLS.
    fn url(&self) -> String {
        let host = if self.tls { "localhost" } else { "127.0.0.1" };
        format!("ldap://{host}:{}", self.port)
    }

    /// The test's own way in: a Unix socket, bound as the root DN.
    fn ldapi(&self) -> String {
        format!("ldapi://{}", self.dir.path().join("ldapi").display().to_string().replace('/', "%2F"))
    }

    /// The CA of the server certificate (with `tls`).
    fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Whether a search of the suffix as the root DN succeeds.
    async fn search_base(&self) -> bool {
        let ldapi = self.ldapi();
        let args = ["-x", "-H", &ldapi, "-D", ROOT_DN, "-w", ROOT_PW, "-b", SUFFIX, "-s", "base", "1.1"];
        run("/usr/bin/ldapsearch", &args, None).await.status.success()
    }

    /// `tool -x -H ldapi -D root -w pw extra…` with `stdin`; must succeed.
    async fn admin(&self, tool: &str, extra: &[&str], stdin: &str) {
        let ldapi = self.ldapi();
        let mut args = vec!["-x", "-H", &ldapi, "-D", ROOT_DN, "-w", ROOT_PW];
        args.extend_from_slice(extra);
        let o = run(tool, &args, Some(stdin.as_bytes())).await;
        assert!(o.status.success(), "{tool}: {}; slapd's log:\n{}", describe(&o), self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
    }
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `ca.pem` (a CA) and `server.pem`/`server.key` (for `localhost`) in `dir`, with the openssl CLI.
async fn make_certificates(dir: &Path) {
    let d = dir.display();
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName = DNS:localhost\nbasicConstraints = critical, CA:FALSE\n\
         keyUsage = critical, digitalSignature\nextendedKeyUsage = serverAuth\n",
    )
    .unwrap();
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    for command in [
        format!(
            "req -x509 {ec} -days 2 -subj /CN=hostgate-test-LDAP-CA -addext basicConstraints=critical,CA:TRUE \
             -addext keyUsage=critical,keyCertSign,cRLSign -keyout {d}/ca.key -out {d}/ca.pem"
        ),
        format!("req {ec} -subj /CN=localhost -keyout {d}/server.key -out {d}/server.csr"),
        format!(
            "x509 -req -days 2 -in {d}/server.csr -CA {d}/ca.pem -CAkey {d}/ca.key -CAcreateserial \
             -extfile {d}/ext.cnf -out {d}/server.pem"
        ),
    ] {
        let args: Vec<&str> = command.split_whitespace().collect();
        let o = run("openssl", &args, None).await;
        assert!(o.status.success(), "openssl {command}: {}", describe(&o));
    }
}

/// `test.rules` for everyone; `kiosk.rules` only for the `kiosk` group (the members of
/// `cn=kiosk-admins`).
const RULES: &str = "allow allowed.test\nbypass bypassed.test\ndeny denied.test\n";
const KIOSK_RULES: &str = "allow kiosk.test\n";
const NAMES: [&str; 4] = ["allowed.test", "bypassed.test", "denied.test", "kiosk.test"];

/// The `[policy]` and `[[client]]` sections; the kiosk group's DN as `kiosk_dn` spells it.
fn policy(kiosk_dn: &str) -> String {
    format!(
        "[policy]\ndefault = \"deny\"\nungrouped_sources = [\"test.rules\"]\n\
         [[policy.source]]\npath = \"test.rules\"\n[[policy.source]]\npath = \"kiosk.rules\"\n\n\
         [[client]]\nname = \"kiosk\"\ndirectory_groups = [\"{kiosk_dn}\"]\nsources = [\"test.rules\", \"kiosk.rules\"]\n"
    )
}

/// The `[resolve]` pins and the `[auth]` section around `ldap` (the `[auth.ldap]` keys).
fn extra(up: SocketAddr, ldap: &str) -> String {
    extra_timeout(up, ldap, "3s")
}

/// [`extra`] with the directory's `timeout`.
fn extra_timeout(up: SocketAddr, ldap: &str, timeout: &str) -> String {
    let pinned: Vec<(&str, SocketAddr)> = NAMES.iter().map(|n| (*n, up)).collect();
    format!(
        "{LOCAL_UPSTREAM}{}\n[auth]\nrealm = \"Example\"\nthrottle_failures = 1000\n\n[auth.ldap]\ntimeout = \"{timeout}\"\n{ldap}\n",
        pins(&pinned)
    )
}

/// An in-process gateway against the directory, with `ldap` as its `[auth.ldap]` keys (and
/// `files` beside the configuration: a service password).
async fn gateway(up: &TlsUpstream, kiosk_dn: &str, ldap: &str, files: &[(&str, &str)]) -> TestGateway {
    let mut all = vec![("test.rules", RULES), ("kiosk.rules", KIOSK_RULES)];
    all.extend_from_slice(files);
    TestGateway::start_files(&[("connect", "127.0.0.1:0")], &policy(kiosk_dn), &all, &extra(up.addr(), ldap)).await
}

/// curl through `gw` to `https://NAME/PATH`, with `user:password` when given.
async fn via(gw: &TestGateway, ca: &TestCa, url: &str, creds: Option<&str>) -> std::process::Output {
    via_addr(gw.connect_addr(), ca, url, creds).await
}

async fn via_addr(proxy: SocketAddr, ca: &TestCa, url: &str, creds: Option<&str>) -> std::process::Output {
    let proxy = format!("http://{proxy}");
    let mut args = vec!["-x", proxy.as_str(), "--cacert", ca.ca_pem_path().to_str().unwrap()];
    if let Some(c) = creds {
        args.extend(["--proxy-user", c]);
    }
    args.push(url);
    curl(&args).await
}

/// Asserts that curl got the upstream's answer for `name` and `path`.
fn assert_served(o: &std::process::Output, name: &str, path: &str) {
    assert!(o.status.success(), "{name}{path}: {}", describe(o));
    assert_eq!(stdout(o), format!("upstream=L sni={name} path={path}"), "{}", describe(o));
}

/// Asserts that curl's CONNECT was refused with `status`.
fn assert_refused(o: &std::process::Output, status: u16) {
    let text = describe(o);
    assert!(!o.status.success() && text.contains(&format!("CONNECT tunnel failed, response {status}")), "{text}");
}

/// What every way of finding users and groups must do, `find` being the `[auth.ldap]` keys:
/// alice (in `kiosk-admins`) and carol sign in, wrong passwords and unknown users get `407`,
/// the directory group selects the `kiosk` group for alice only, bypass and deny ask nobody.
/// Returns the gateway for more checks.
async fn sign_ins(slapd: &Slapd, up: &TlsUpstream, ca: &TestCa, kiosk_dn: &str, find: &str) -> TestGateway {
    let pw_file = format!("{SERVICE_PW}\n");
    let ldap = format!("url = \"{}\"\n{find}", slapd.url());
    let gw = gateway(up, kiosk_dn, &ldap, &[("service.pw", &pw_file)]).await;

    // alice: the upstream answers, the access record has her name and her group.
    let o = via(&gw, ca, "https://allowed.test/a", Some("alice:alice-pw")).await;
    assert_served(&o, "allowed.test", "/a");
    let ev = gw.wait_access(|e| e.sni.as_deref() == Some("allowed.test") && e.user.as_deref() == Some("alice")).await;
    assert_eq!((ev.outcome, ev.action, ev.client_group.as_deref()), (Outcome::Ok, Some(Action::Allow), Some("kiosk")));
    // carol is in no configured group: the address's.
    let o = via(&gw, ca, "https://allowed.test/c", Some("carol:carol-pw")).await;
    assert_served(&o, "allowed.test", "/c");
    let ev = gw.wait_access(|e| e.user.as_deref() == Some("carol")).await;
    assert_eq!((ev.outcome, ev.client_group.as_deref()), (Outcome::Ok, None), "{ev:#?}");

    // A wrong password, an unknown user, no credentials: 407.
    for (creds, detail) in [
        (Some("alice:carol-pw"), "bad credentials"),
        (Some("mallory:alice-pw"), "bad credentials"),
        (None, "no credentials"),
    ] {
        let o = via(&gw, ca, "https://allowed.test/x", creds).await;
        assert_refused(&o, 407);
        let ev = gw.wait_access(|e| e.outcome == Outcome::AuthRequired && e.detail.as_deref() == Some(detail)).await;
        assert_eq!((ev.status, ev.user.as_deref()), (Some(407), None), "{creds:?}: {ev:#?}");
    }

    // kiosk.test is the kiosk group's only: alice's, not carol's (403: signed in, denied).
    let o = via(&gw, ca, "https://kiosk.test/k", Some("alice:alice-pw")).await;
    assert_served(&o, "kiosk.test", "/k");
    let o = via(&gw, ca, "https://kiosk.test/k", Some("carol:carol-pw")).await;
    assert_refused(&o, 403);
    let ev = gw.wait_access(|e| e.host.as_deref() == Some("kiosk.test") && e.status == Some(403)).await;
    assert_eq!(ev.action, Some(Action::Deny), "{ev:#?}");

    // A bypass name without credentials; a denied name refused without a prompt.
    let o = via(&gw, ca, "https://bypassed.test/b", None).await;
    assert_served(&o, "bypassed.test", "/b");
    let o = via(&gw, ca, "https://denied.test/d", Some("alice:alice-pw")).await;
    assert_refused(&o, 403);

    // Good credentials were checked five times: alice's three (denied.test too: a deny no group
    // allows asks nobody, but credentials that are sent are checked, since a user could select a
    // group) and carol's two.
    let m = gw.metrics();
    assert_eq!(metric(&m, "hostgate_auth_total{result=\"bad\"}"), Some(2.0), "{m}");
    assert_eq!(metric(&m, "hostgate_auth_total{result=\"missing\"}"), Some(1.0), "{m}");
    assert_eq!(metric(&m, "hostgate_auth_total{result=\"error\"}"), Some(0.0), "{m}");
    assert_eq!(metric(&m, "hostgate_auth_total{result=\"ok\"}"), Some(5.0), "{m}");
    gw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_user_dn_template_and_a_group_search() {
    if !can_run() {
        return;
    }
    let slapd = Slapd::start(false).await;
    let ca = TestCa::new();
    let up = TlsUpstream::start(&ca, &NAMES, "L").await;
    // The DN as an operator may spell it (DN attribute names and these values are
    // case-insensitive).
    let find =
        "user_dn = \"uid={user},ou=people,dc=example,dc=org\"\ngroup_search_base = \"ou=groups,dc=example,dc=org\"\n";
    let gw = sign_ins(&slapd, &up, &ca, "CN=Kiosk-Admins,OU=Groups,DC=example,DC=org", find).await;
    // The directory compares `uid` and DNs without case: `ALICE` binds as alice and her group
    // is found (`member` holds `uid=alice`); the access record has the name as typed. Six at
    // once, as a browser opens connections: each first check is a bind of its own.
    let proxy = format!("http://{}", gw.connect_addr());
    let cacert = path(ca.ca_pem_path()).to_string();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..6 {
        let (proxy, cacert) = (proxy.clone(), cacert.clone());
        set.spawn(async move {
            let url = format!("https://kiosk.test/p{i}");
            (i, curl(&["-x", &proxy, "--cacert", &cacert, "--proxy-user", "ALICE:alice-pw", &url]).await)
        });
    }
    while let Some(done) = set.join_next().await {
        let (i, o) = done.unwrap();
        assert_served(&o, "kiosk.test", &format!("/p{i}"));
    }
    // A tunnel's record comes when it closes, which may be just after curl is done.
    let deadline = Instant::now() + STEP;
    let events = loop {
        let events = gw.access_events(|e| e.user.as_deref() == Some("ALICE"));
        if events.len() >= 6 || Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(events.len(), 6, "{events:#?}");
    assert!(events.iter().all(|e| e.client_group.as_deref() == Some("kiosk")), "{events:#?}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_search_then_bind_and_member_of() {
    if !can_run() {
        return;
    }
    let slapd = Slapd::start(false).await;
    let ca = TestCa::new();
    let up = TlsUpstream::start(&ca, &NAMES, "L").await;
    let find = format!(
        "search_base = \"ou=people,dc=example,dc=org\"\nsearch_filter = \"(&(objectClass=inetOrgPerson)(uid={{user}}))\"\n\
         bind_dn = \"{SERVICE_DN}\"\nbind_password_file = \"service.pw\"\n"
    );
    let gw = sign_ins(&slapd, &up, &ca, KIOSK_ADMINS, &find).await;
    // `ali*` with alice's password: the filter's `*` is escaped, so it finds nobody (unescaped,
    // `(uid=ali*)` would find alice and the bind as her would succeed).
    let o = via(&gw, &ca, "https://allowed.test/x", Some("ali*:alice-pw")).await;
    assert_refused(&o, 407);
    let m = gw.metrics();
    assert_eq!(metric(&m, "hostgate_auth_total{result=\"bad\"}"), Some(3.0), "{m}");
    gw.shutdown().await;

    // A service account that cannot bind: the directory is unusable, so 503, not 407.
    let ldap = format!("url = \"{}\"\n{find}", slapd.url());
    let gw = gateway(&up, KIOSK_ADMINS, &ldap, &[("service.pw", "not-the-password\n")]).await;
    let o = via(&gw, &ca, "https://allowed.test/x", Some("alice:alice-pw")).await;
    assert_refused(&o, 503);
    let ev = gw.wait_access(|e| e.outcome == Outcome::AuthUnavailable).await;
    let detail = ev.detail.clone().unwrap_or_default();
    assert!(detail.contains(&slapd.url()) && detail.contains(SERVICE_DN), "{ev:#?}");
    assert_eq!(ev.status, Some(503), "{ev:#?}");
    // Bypass traffic does not need the directory.
    let o = via(&gw, &ca, "https://bypassed.test/b", None).await;
    assert_served(&o, "bypassed.test", "/b");
    let m = gw.metrics();
    assert_eq!(metric(&m, "hostgate_auth_total{result=\"error\"}"), Some(1.0), "{m}");
    assert_eq!(metric(&m, "hostgate_auth_total{result=\"ok\"}"), Some(0.0), "{m}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_starttls_with_the_directory_ca_and_fails_closed_without_it() {
    if !can_run() {
        return;
    }
    let slapd = Slapd::start(true).await;
    let ca = TestCa::new();
    let up = TlsUpstream::start(&ca, &NAMES, "L").await;
    let template = "user_dn = \"uid={user},ou=people,dc=example,dc=org\"\n";
    let dir_ca = slapd.ca_path().display().to_string();

    // With the directory's CA: signed in, and the groups read over the same TLS session.
    let ldap = format!("url = \"{}\"\nstarttls = true\nca = \"{dir_ca}\"\n{template}", slapd.url());
    let gw = gateway(&up, KIOSK_ADMINS, &ldap, &[]).await;
    let o = via(&gw, &ca, "https://kiosk.test/k", Some("alice:alice-pw")).await;
    assert_served(&o, "kiosk.test", "/k");
    let o = via(&gw, &ca, "https://allowed.test/x", Some("alice:wrong")).await;
    assert_refused(&o, 407);
    let m = gw.metrics();
    assert_eq!(metric(&m, "hostgate_auth_total{result=\"ok\"}"), Some(1.0), "{m}");
    assert_eq!(metric(&m, "hostgate_auth_total{result=\"bad\"}"), Some(1.0), "{m}");
    gw.shutdown().await;

    // LDAPS (TLS from the first byte) with the same CA.
    let ldaps = format!("ldaps://localhost:{}", slapd.ldaps_port.unwrap());
    let gw = gateway(&up, KIOSK_ADMINS, &format!("url = \"{ldaps}\"\nca = \"{dir_ca}\"\n{template}"), &[]).await;
    let o = via(&gw, &ca, "https://kiosk.test/s", Some("alice:alice-pw")).await;
    assert_served(&o, "kiosk.test", "/s");
    let o = via(&gw, &ca, "https://kiosk.test/s", Some("carol:carol-pw")).await;
    assert_refused(&o, 403);
    gw.shutdown().await;

    // Another CA; the right CA but a name the certificate does not have; no TLS at all (the
    // directory refuses binds in clear): 503 each, never 200, and the detail names the URL.
    let ip_url = slapd.url().replace("localhost", "127.0.0.1");
    for (what, ldap) in [
        (
            "another CA",
            format!("url = \"{}\"\nstarttls = true\nca = \"{}\"\n{template}", slapd.url(), path(ca.ca_pem_path())),
        ),
        (
            "the certificate's name is not 127.0.0.1",
            format!("url = \"{ip_url}\"\nstarttls = true\nca = \"{dir_ca}\"\n{template}"),
        ),
        ("no TLS", format!("url = \"{}\"\n{template}", slapd.url())),
        ("LDAPS, another CA", format!("url = \"{ldaps}\"\nca = \"{}\"\n{template}", path(ca.ca_pem_path()))),
    ] {
        let gw = gateway(&up, KIOSK_ADMINS, &ldap, &[]).await;
        let o = via(&gw, &ca, "https://allowed.test/x", Some("alice:alice-pw")).await;
        assert_refused(&o, 503);
        let ev = gw.wait_access(|e| e.outcome == Outcome::AuthUnavailable).await;
        let detail = ev.detail.clone().unwrap_or_default();
        assert!(
            [slapd.url(), ip_url.clone(), ldaps.clone()].iter().any(|u| detail.contains(u.as_str())),
            "{what}: {ev:#?}"
        );
        assert_eq!((ev.status, ev.user.as_deref()), (Some(503), None), "{what}: {ev:#?}");
        let m = gw.metrics();
        assert_eq!(metric(&m, "hostgate_auth_total{result=\"error\"}"), Some(1.0), "{what}: {m}");
        assert_eq!(metric(&m, "hostgate_auth_total{result=\"ok\"}"), Some(0.0), "{what}: {m}");
        gw.shutdown().await;
    }
}

/// The access lines of `hg` for `host` (the `host` or `sni` field).
fn access_lines(hg: &Hostgate, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    hg.json_lines(|v| v["message"] == "access" && pred(v))
}

async fn wait_access_line(hg: &mut Hostgate, pred: impl Fn(&Value) -> bool) -> Value {
    hg.wait_json(|v| v["message"] == "access" && pred(v), STEP).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_directory_fails_closed_and_bypass_still_flows() {
    if !can_run() {
        return;
    }
    let mut slapd = Slapd::start(false).await;
    let ca = TestCa::new();
    let up = TlsUpstream::start(&ca, &NAMES, "L").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("test.rules"), RULES).unwrap();
    std::fs::write(dir.path().join("kiosk.rules"), KIOSK_RULES).unwrap();
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let ldap = format!(
        "url = \"{}\"\nuser_dn = \"uid={{user}},ou=people,dc=example,dc=org\"\ngroup_search_base = \"ou=groups,{SUFFIX}\"\n",
        slapd.url()
    );
    let toml = format!(
        "[[listener]]\nkind = \"connect\"\naddress = \"127.0.0.1:0\"\n\n[admin]\naddress = \"{admin}\"\n\n\
         [log]\nformat = \"json\"\nlevel = \"info\"\n\n{}\n{}",
        policy(KIOSK_ADMINS),
        extra_timeout(up.addr(), &ldap, "2s")
    );
    let config = dir.path().join("hostgate.toml");
    std::fs::write(&config, toml).unwrap();
    let mut hg = Hostgate::spawn(&[], &config);
    let proxy = hg.listening("connect").await;

    // alice signs in while the directory runs.
    let o = via_addr(proxy, &ca, "https://kiosk.test/1", Some("alice:alice-pw")).await;
    assert_served(&o, "kiosk.test", "/1");

    slapd.stop().await;

    // carol was never checked: 503, and the gateway says why, naming the directory.
    let o = via_addr(proxy, &ca, "https://allowed.test/2", Some("carol:carol-pw")).await;
    assert_refused(&o, 503);
    let ev = wait_access_line(&mut hg, |v| v["outcome"] == "auth-unavailable").await;
    assert_eq!((ev["status"].as_u64(), ev["host"].as_str()), (Some(503), Some("allowed.test")), "{ev:#}");
    assert!(ev["user"].is_null(), "{ev:#}");
    let detail = ev["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with(&format!("LDAP {}", slapd.url())), "{ev:#}");
    let line = hg
        .wait_json(|v| v["message"].as_str().is_some_and(|m| m.starts_with("auth: the directory is unavailable")), STEP)
        .await;
    assert_eq!(line["level"], "ERROR", "{line:#}");
    assert!(line["error"].as_str().is_some_and(|e| e.contains(&slapd.url())), "{line:#}");
    // A second refusal does not repeat the log line (it is logged when the state changes).
    let o = via_addr(proxy, &ca, "https://allowed.test/3", Some("carol:carol-pw")).await;
    assert_refused(&o, 503);
    // A bypass name flows without credentials; alice's sign-in is still in the cache.
    let o = via_addr(proxy, &ca, "https://bypassed.test/4", None).await;
    assert_served(&o, "bypassed.test", "/4");
    let o = via_addr(proxy, &ca, "https://kiosk.test/5", Some("alice:alice-pw")).await;
    assert_served(&o, "kiosk.test", "/5");
    // Without credentials an allowed name is still 407 (nothing to check).
    let o = via_addr(proxy, &ca, "https://allowed.test/6", None).await;
    assert_refused(&o, 407);

    // The directory is back: carol signs in, and the gateway says so.
    slapd.spawn().await;
    let o = via_addr(proxy, &ca, "https://allowed.test/7", Some("carol:carol-pw")).await;
    assert_served(&o, "allowed.test", "/7");
    hg.wait_json(|v| v["message"] == "auth: the directory answers again", STEP).await;
    let down =
        hg.json_lines(|v| v["message"].as_str().is_some_and(|m| m.starts_with("auth: the directory is unavailable")));
    assert_eq!(down.len(), 1, "{down:#?}");
    assert_eq!(access_lines(&hg, |v| v["outcome"] == "auth-unavailable").len(), 2);

    // A directory that takes connections and never answers: 503 once `timeout` (2 s) has
    // passed, not a request left hanging; bypass traffic is not held up meanwhile.
    slapd.pause(true).await;
    let started = Instant::now();
    let (o, b) = tokio::join!(via_addr(proxy, &ca, "https://allowed.test/8", Some("carol:not-hers")), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let b = via_addr(proxy, &ca, "https://bypassed.test/9", None).await;
        (b, started.elapsed())
    });
    let waited = started.elapsed();
    assert_refused(&o, 503);
    assert!(waited >= Duration::from_millis(1900) && waited < Duration::from_secs(9), "{waited:?}");
    assert_served(&b.0, "bypassed.test", "/9");
    assert!(b.1 < Duration::from_millis(1800), "bypass waited {:?}", b.1);
    let ev = wait_access_line(&mut hg, |v| {
        v["outcome"] == "auth-unavailable" && v["detail"].as_str().is_some_and(|d| d.contains("timeout"))
    })
    .await;
    assert_eq!(ev["status"].as_u64(), Some(503), "{ev:#}");
    slapd.pause(false).await;

    let o = curl(&[&format!("http://{admin}/metrics")]).await;
    assert!(o.status.success(), "{}", describe(&o));
    let m = stdout(&o);
    // alice twice (once from the cache), carol once; carol twice while the directory was away
    // and once while it hung.
    assert_eq!(metric(&m, "hostgate_auth_total{result=\"ok\"}"), Some(3.0), "{m}");
    assert_eq!(metric(&m, "hostgate_auth_total{result=\"error\"}"), Some(3.0), "{m}");
    assert_eq!(metric(&m, "hostgate_auth_total{result=\"missing\"}"), Some(1.0), "{m}");
    assert_eq!(metric(&m, "hostgate_auth_total{result=\"bad\"}"), Some(0.0), "{m}");
    hg.signal("TERM");
    let (status, _) = hg.wait().await;
    assert!(status.success(), "{status}");
}
