//! A private network namespace for a bench process, with an iptables `REDIRECT` into a
//! transparent listener: what the datapath and alloc benches need to reach the transparent
//! listener as a redirected client would. Included with `#[path]`.

/// Moves the process into a new network namespace and brings its `lo` up. Call it before any
/// thread exists, so that every thread and child inherits it; the namespace and its rules
/// vanish with the process.
///
/// # Errors
/// Without root, `ip` or `iptables`: why, so that the caller can skip the transparent case.
pub(crate) fn enter_netns() -> Result<(), String> {
    for tool in [&["ip", "-V"][..], &["iptables", "-V"]] {
        run(tool)?;
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("unshare(CLONE_NEWNET): {e} (needs root)"))?;
    // From here on a failure would leave the process without a usable loopback: fail loudly.
    run(&["ip", "link", "set", "lo", "up"]).unwrap_or_else(|e| panic!("in the new namespace: {e}"));
    Ok(())
}

/// Adds `iptables -t nat -A OUTPUT -p tcp -d IP --dport PORT -j REDIRECT --to-ports <listener
/// port>` for `redirected` (`ip:port`), and returns it as an address to connect to.
///
/// # Errors
/// iptables refused the rule.
pub(crate) fn redirect(redirected: &str, listener: std::net::SocketAddr) -> Result<std::net::SocketAddr, String> {
    let port = listener.port().to_string();
    let (ip, dport) = redirected.split_once(':').ok_or("not ip:port")?;
    let rule =
        ["iptables", "-w", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", ip, "--dport", dport, "-j", "REDIRECT"];
    run(&[&rule[..], &["--to-ports", &port]].concat())?;
    redirected.parse().map_err(|e| format!("{redirected}: {e}"))
}

/// Runs a command to its end.
///
/// # Errors
/// It could not start, or exited unsuccessfully (with its standard error).
pub(crate) fn run(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}: {} {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}
