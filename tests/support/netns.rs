//! A network namespace playing the client machine of a transparent gateway: a veth pair
//! (root side `10.231.K.1/30`, namespace side `10.231.K.2/30`, default route through the root
//! side) and REDIRECT rules in the root namespace, scoped to that veth, that send the
//! namespace's outbound TCP to the gateway's transparent listener.
//!
//! REDIRECT rewrites the destination to the incoming interface's primary address, so the
//! transparent listener of these tests binds `10.231.K.1:0`. On request the pair also gets IPv6
//! (`fd42:K::1/64` and `fd42:K::2/64`, a default IPv6 route, `ip6tables` REDIRECT rules), and the
//! root namespace's `lo` gets `198.51.100.K/32`, a "public" address a test can put a server on
//! that the namespace's clients choose as their destination (and `10.240.K.1/32`, a private one;
//! `2001:db8:51::K/128` for IPv6).
//! A test that needs clients on several source networks gives the namespace's veth end more
//! addresses, `10.N.K.2/32` (N in 232..=239), each with a route back from the root namespace.
//! Holding the namespace name means owning K, so all of this is the test's own. Everything is
//! removed on drop.
//! Needs root and `ip`, `iptables`, `nft` (and `ip6tables` for IPv6); [`Netns::create`] returns
//! `None` otherwise and the test skips.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// One namespace, its veth pair and its redirect rules.
pub struct Netns {
    /// The namespace's name.
    pub name: String,
    /// The veth end in the root namespace.
    pub veth_root: String,
    /// The veth end inside the namespace.
    pub veth_ns: String,
    /// The root side's address (the gateway's transparent listener binds here).
    pub root_ip: Ipv4Addr,
    /// The namespace side's address (the client's source address).
    pub ns_ip: Ipv4Addr,
    k: u32,
    /// Redirect rules to delete on drop: the program (`iptables` or `ip6tables`) and the rule.
    iptables: Mutex<Vec<(&'static str, Vec<String>)>>,
    nft_table: Mutex<Option<String>>,
    /// Addresses added to the root namespace's `lo`, to delete on drop.
    lo_addresses: Mutex<Vec<IpAddr>>,
}

/// The second octets N of the extra client networks `10.N.K.0/24` ([`Netns::add_client_address`]).
pub const CLIENT_NETS: std::ops::RangeInclusive<u8> = 232..=239;

fn run(args: &[&str]) -> Result<Output, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!("{}: {} {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn is_root() -> bool {
    run(&["id", "-u"]).is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Netns {
    /// Creates a namespace with a unique index K, or `None` (with a message) when this machine
    /// cannot: not root, or `ip netns add` fails.
    pub fn create(hint: &str) -> Option<Netns> {
        if !is_root() || run(&["ip", "-V"]).is_err() || run(&["iptables", "-V"]).is_err() {
            eprintln!("skipping {hint}: needs root and ip/iptables");
            return None;
        }
        // Claim a free K: `ip netns add` fails when the name exists (another test, another
        // process, or a run that was killed). The pid and a counter spread the starting points.
        let start = std::process::id().wrapping_mul(7).wrapping_add(NEXT.fetch_add(1, Ordering::SeqCst));
        let mut claimed = None;
        for i in 0..240 {
            let k = start.wrapping_add(i) % 240 + 1;
            let name = format!("hgtest{k}");
            match run(&["ip", "netns", "add", &name]) {
                Ok(_) => {
                    claimed = Some(k);
                    break;
                }
                Err(_) if Path::new("/run/netns").join(&name).exists() => continue,
                Err(e) => {
                    eprintln!("skipping {hint}: needs root and ip/iptables ({e})");
                    return None;
                }
            }
        }
        let Some(k) = claimed else {
            eprintln!("skipping {hint}: all 240 namespace names hgtest1..240 are taken");
            return None;
        };
        // From here on the namespace is ours, and dropping `ns` removes it.
        let ns = Netns {
            name: format!("hgtest{k}"),
            veth_root: format!("hgt{k}r"),
            veth_ns: format!("hgt{k}n"),
            root_ip: Ipv4Addr::new(10, 231, k as u8, 1),
            ns_ip: Ipv4Addr::new(10, 231, k as u8, 2),
            k,
            iptables: Mutex::new(Vec::new()),
            nft_table: Mutex::new(None),
            lo_addresses: Mutex::new(Vec::new()),
        };
        ns.remove_stale();
        let (root, inner, name) = (ns.veth_root.as_str(), ns.veth_ns.as_str(), ns.name.as_str());
        let root_cidr = format!("{}/30", ns.root_ip);
        let ns_cidr = format!("{}/30", ns.ns_ip);
        let root_ip = ns.root_ip.to_string();
        let steps: [&[&str]; 8] = [
            &["ip", "link", "add", root, "type", "veth", "peer", "name", inner],
            &["ip", "link", "set", inner, "netns", name],
            &["ip", "addr", "add", &root_cidr, "dev", root],
            &["ip", "link", "set", root, "up"],
            &["ip", "netns", "exec", name, "ip", "addr", "add", &ns_cidr, "dev", inner],
            &["ip", "netns", "exec", name, "ip", "link", "set", inner, "up"],
            &["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
            &["ip", "netns", "exec", name, "ip", "route", "add", "default", "via", &root_ip],
        ];
        for step in steps {
            if let Err(e) = run(step) {
                // `ns` drops here and removes what was built.
                panic!("setting up namespace {name}: {e}");
            }
        }
        wait_for_address(IpAddr::V4(ns.root_ip));
        Some(ns)
    }

    /// The root side's IPv6 address, `fd42:K::1` (see [`Netns::enable_ipv6`]).
    pub fn root_ip6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd42, self.k as u16, 0, 0, 0, 0, 0, 1)
    }

    /// The namespace side's IPv6 address, `fd42:K::2` (see [`Netns::enable_ipv6`]).
    pub fn ns_ip6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd42, self.k as u16, 0, 0, 0, 0, 0, 2)
    }

    /// Gives the veth pair IPv6 addresses ([`Netns::root_ip6`], [`Netns::ns_ip6`], `/64`,
    /// without duplicate address detection) and the namespace a default IPv6 route through the
    /// root side. `Err` (the reason to skip) when this machine has no IPv6 or no IPv6 NAT table;
    /// panics when a setup step fails otherwise.
    pub fn enable_ipv6(&self) -> Result<(), String> {
        if !Path::new("/proc/sys/net/ipv6").exists() {
            return Err("the kernel has no IPv6 (/proc/sys/net/ipv6 is missing)".into());
        }
        if let Ok(v) = std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6") {
            if v.trim() != "0" {
                return Err("IPv6 is disabled (net.ipv6.conf.all.disable_ipv6 = 1)".into());
            }
        }
        run(&["ip6tables", "-V"]).map_err(|e| format!("no ip6tables: {e}"))?;
        run(&["ip6tables", "-w", "-t", "nat", "-S", "PREROUTING"])
            .map_err(|e| format!("no IPv6 NAT (ip6tables -t nat): {e}"))?;
        let (root, inner, name) = (self.veth_root.as_str(), self.veth_ns.as_str(), self.name.as_str());
        let root_cidr = format!("{}/64", self.root_ip6());
        let ns_cidr = format!("{}/64", self.ns_ip6());
        let root_ip = self.root_ip6().to_string();
        let steps: [&[&str]; 3] = [
            &["ip", "-6", "addr", "add", &root_cidr, "dev", root, "nodad"],
            &["ip", "netns", "exec", name, "ip", "-6", "addr", "add", &ns_cidr, "dev", inner, "nodad"],
            &["ip", "netns", "exec", name, "ip", "-6", "route", "add", "default", "via", &root_ip],
        ];
        for step in steps {
            if let Err(e) = run(step) {
                panic!("setting up IPv6 in namespace {name}: {e}");
            }
        }
        wait_for_address(IpAddr::V6(self.root_ip6()));
        Ok(())
    }

    /// Adds `198.51.100.K/32` to the root namespace's `lo` (removed on drop) and returns it: an
    /// address the namespace's clients can choose as a destination and a test can listen on.
    pub fn add_lo_address(&self) -> Ipv4Addr {
        self.add_lo(Ipv4Addr::new(198, 51, 100, self.k as u8))
    }

    /// Adds `10.240.K.1/32` to the root namespace's `lo` (removed on drop) and returns it: a
    /// private destination (the SSRF guard blocks it unless `allow_private` covers it) that a
    /// test can listen on.
    pub fn add_private_lo_address(&self) -> Ipv4Addr {
        self.add_lo(Ipv4Addr::new(10, 240, self.k as u8, 1))
    }

    /// Adds `2001:db8:51::K/128` to the root namespace's `lo` (removed on drop) and returns it:
    /// the IPv6 counterpart of [`Netns::add_lo_address`], for clients with IPv6 (see
    /// [`Netns::enable_ipv6`]).
    pub fn add_lo_address6(&self) -> Ipv6Addr {
        let ip = Ipv6Addr::new(0x2001, 0xdb8, 0x51, 0, 0, 0, 0, self.k as u16);
        self.add_lo_ip(IpAddr::V6(ip));
        ip
    }

    fn add_lo(&self, ip: Ipv4Addr) -> Ipv4Addr {
        self.add_lo_ip(IpAddr::V4(ip));
        ip
    }

    fn add_lo_ip(&self, ip: IpAddr) {
        let mut added = self.lo_addresses.lock().unwrap();
        if !added.contains(&ip) {
            run(&["ip", "addr", "add", &host_prefix(ip), "dev", "lo"]).unwrap();
            added.push(ip);
            wait_for_address(ip);
        }
    }

    /// Gives the namespace's veth end the extra address `10.N.K.2/32` (N in [`CLIENT_NETS`]) and
    /// the root namespace a route to `10.N.K.0/24` through it (gone with the veth), and returns
    /// the address: a second (third…) source network for the namespace's clients, chosen with
    /// [`Netns::connect_from`].
    pub fn add_client_address(&self, n: u8) -> Ipv4Addr {
        assert!(CLIENT_NETS.contains(&n), "10.{n}.K.0/24 is not among the client networks {CLIENT_NETS:?}");
        let ip = Ipv4Addr::new(10, n, self.k as u8, 2);
        let net = format!("10.{n}.{}.0/24", self.k);
        let ns_ip = self.ns_ip.to_string();
        let (root, inner, name) = (self.veth_root.as_str(), self.veth_ns.as_str(), self.name.as_str());
        let addr = format!("{ip}/32");
        let steps: [&[&str]; 2] = [
            &["ip", "netns", "exec", name, "ip", "addr", "add", &addr, "dev", inner],
            &["ip", "route", "replace", &net, "via", &ns_ip, "dev", root],
        ];
        for step in steps {
            if let Err(e) = run(step) {
                panic!("adding the client address {ip} to namespace {name}: {e}");
            }
        }
        ip
    }

    /// The address for the gateway's transparent listener: the root side, port 0.
    pub fn listener_address(&self) -> String {
        format!("{}:0", self.root_ip)
    }

    /// The address for an IPv6 transparent listener: the root side's IPv6 address, port 0.
    pub fn listener_address6(&self) -> String {
        format!("[{}]:0", self.root_ip6())
    }

    /// Runs a command inside the namespace (blocking).
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip").args(["netns", "exec", &self.name]).args(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Runs a command inside the namespace without blocking the runtime (the gateway serves on
    /// it), killed after `timeout`.
    pub async fn exec_async(&self, args: &[&str], timeout: Duration) -> Output {
        let child = tokio::process::Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        tokio::time::timeout(timeout, child)
            .await
            .unwrap_or_else(|_| panic!("{args:?} in {} ran longer than {timeout:?}", self.name))
            .unwrap()
    }

    /// A TCP connection to `addr` made from inside the namespace, for a test that writes raw
    /// bytes itself: the socket is created by a short-lived thread that has entered the
    /// namespace (`setns`), so it belongs to the namespace for good (its packets take the
    /// namespace's route and the REDIRECT rules) while the test drives it from the runtime like
    /// any other. The thread is a fresh one, never a pool's: a thread that entered the
    /// namespace must not run anything else.
    pub async fn connect(&self, addr: SocketAddr) -> tokio::net::TcpStream {
        let path = Path::new("/run/netns").join(&self.name);
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let connected = (|| {
                let ns = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("setns {}: {e}", path.display()))?;
                let tcp = std::net::TcpStream::connect_timeout(&addr, super::STEP)
                    .map_err(|e| format!("connect {addr} from the namespace: {e}"))?;
                tcp.set_nonblocking(true).map_err(|e| e.to_string())?;
                tcp.set_nodelay(true).map_err(|e| e.to_string())?;
                Ok::<_, String>(tcp)
            })();
            let _ = tx.send(connected);
        });
        let tcp = rx.await.expect("the namespace thread panicked").unwrap_or_else(|e| panic!("{}: {e}", self.name));
        tokio::net::TcpStream::from_std(tcp).unwrap()
    }

    /// [`Netns::connect`] from the source address `from` (one of the namespace's own, e.g.
    /// [`Netns::add_client_address`]): the socket is created and bound by a thread that entered
    /// the namespace, then connected from the runtime (a socket keeps the namespace it was made
    /// in).
    pub async fn connect_from(&self, from: IpAddr, addr: SocketAddr) -> tokio::net::TcpStream {
        let path = Path::new("/run/netns").join(&self.name);
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let bound = (|| {
                let ns = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("setns {}: {e}", path.display()))?;
                let socket = match from {
                    IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
                    IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
                }
                .map_err(|e| format!("socket: {e}"))?;
                socket.bind(SocketAddr::new(from, 0)).map_err(|e| format!("bind {from} in the namespace: {e}"))?;
                Ok::<_, String>(socket)
            })();
            let _ = tx.send(bound);
        });
        let socket = rx.await.expect("the namespace thread panicked").unwrap_or_else(|e| panic!("{}: {e}", self.name));
        let tcp = tokio::time::timeout(super::STEP, socket.connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connect {addr} from {from} in {}: timed out", self.name))
            .unwrap_or_else(|e| panic!("connect {addr} from {from} in {}: {e}", self.name));
        tcp.set_nodelay(true).unwrap();
        tcp
    }

    /// `iptables -t nat -A PREROUTING -i VETH -p tcp --dport D -j REDIRECT --to-ports P`.
    pub fn redirect_iptables(&self, dport: u16, to_port: u16) {
        self.redirect_xtables("iptables", dport, to_port);
    }

    /// The same rule for IPv6, with `ip6tables` (after [`Netns::enable_ipv6`]).
    pub fn redirect_ip6tables(&self, dport: u16, to_port: u16) {
        self.redirect_xtables("ip6tables", dport, to_port);
    }

    fn redirect_xtables(&self, program: &'static str, dport: u16, to_port: u16) {
        let spec: Vec<String> = [
            "PREROUTING",
            "-i",
            &self.veth_root,
            "-p",
            "tcp",
            "--dport",
            &dport.to_string(),
            "-j",
            "REDIRECT",
            "--to-ports",
            &to_port.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut args = vec![program, "-w", "-t", "nat", "-A"];
        args.extend(spec.iter().map(String::as_str));
        run(&args).unwrap();
        self.iptables.lock().unwrap().push((program, spec));
    }

    /// The nftables recipe: table `inet hostgate_test_K`, chain
    /// `type nat hook prerouting priority dstnat`, rule `iifname VETH tcp dport D redirect to :P`.
    pub fn redirect_nft(&self, dport: u16, to_port: u16) {
        let table = format!("hostgate_test_{}", self.k);
        let mut slot = self.nft_table.lock().unwrap();
        if slot.is_none() {
            run(&["nft", "add", "table", "inet", &table]).unwrap();
            *slot = Some(table.clone());
            run(&[
                "nft",
                "add",
                "chain",
                "inet",
                &table,
                "prerouting",
                "{ type nat hook prerouting priority dstnat ; }",
            ])
            .unwrap();
        }
        let rule = format!("iifname \"{}\" tcp dport {dport} redirect to :{to_port}", self.veth_root);
        run(&["nft", "add", "rule", "inet", &table, "prerouting", &rule]).unwrap();
    }

    /// Removes what a killed earlier run with the same K may have left outside its namespace
    /// (a root-side veth, redirect rules, the `lo` address). Safe: holding the namespace name
    /// means owning K.
    fn remove_stale(&self) {
        let _ = run(&["ip", "link", "del", &self.veth_root]);
        let _ = run(&["nft", "delete", "table", "inet", &format!("hostgate_test_{}", self.k)]);
        for ip in [
            format!("198.51.100.{}/32", self.k),
            format!("10.240.{}.1/32", self.k),
            format!("2001:db8:51::{:x}/128", self.k),
        ] {
            let _ = run(&["ip", "addr", "del", &ip, "dev", "lo"]);
        }
        for n in CLIENT_NETS {
            let _ = run(&["ip", "route", "del", &format!("10.{n}.{}.0/24", self.k)]);
        }
        for program in ["iptables", "ip6tables"] {
            let Ok(out) = run(&[program, "-w", "-t", "nat", "-S", "PREROUTING"]) else { continue };
            let marker = format!("-i {} ", self.veth_root);
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some(rule) = line.strip_prefix("-A ").filter(|l| l.contains(&marker)) {
                    let mut args = vec![program, "-w", "-t", "nat", "-D"];
                    args.extend(rule.split_whitespace());
                    let _ = run(&args);
                }
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for (program, spec) in self.iptables.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let mut args = vec![program, "-w", "-t", "nat", "-D"];
            args.extend(spec.iter().map(String::as_str));
            if let Err(e) = run(&args) {
                eprintln!("cleanup: {e}");
            }
        }
        if let Some(table) = self.nft_table.lock().unwrap_or_else(|e| e.into_inner()).take() {
            if let Err(e) = run(&["nft", "delete", "table", "inet", &table]) {
                eprintln!("cleanup: {e}");
            }
        }
        for ip in self.lo_addresses.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            if let Err(e) = run(&["ip", "addr", "del", &host_prefix(ip), "dev", "lo"]) {
                eprintln!("cleanup: {e}");
            }
        }
        if let Err(e) = run(&["ip", "netns", "del", &self.name]) {
            eprintln!("cleanup: {e}");
        }
        // Deleting the namespace destroys its veth end and with it the pair; this catches a
        // setup that failed before the move.
        let _ = run(&["ip", "link", "del", &self.veth_root]);
    }
}

/// `ip` as a host prefix: `/32` or `/128`.
fn host_prefix(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(ip) => format!("{ip}/32"),
        IpAddr::V6(ip) => format!("{ip}/128"),
    }
}

/// Waits until `ip` can be bound (the address is usable as soon as `ip addr add` returns, but
/// be robust to a slow kernel).
fn wait_for_address(ip: IpAddr) {
    for _ in 0..50 {
        if std::net::TcpListener::bind(SocketAddr::from((ip, 0))).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{ip} never became bindable");
}
