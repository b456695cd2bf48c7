//! The test process's own resources, read from `/proc/self`: open file descriptors, resident
//! memory, and the descriptor limit (raised with `prlimit(1)`, as the test crate has no `nix`).
//!
//! An in-process gateway's sockets and memory are the test process's, so these figures are the
//! gateway's plus the test's clients.

use std::process::Command;

/// Entries of `/proc/self/fd` (the directory handle used to list it included).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// `VmRSS` of `/proc/self/status`, in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or_else(|| panic!("no VmRSS:\n{status}"));
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("bad {line:?}"))
}

/// The soft and hard `RLIMIT_NOFILE` of this process (`u64::MAX` for unlimited).
pub fn nofile() -> (u64, u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let mut fields = line.split_whitespace().skip(3).map(|v| v.parse().unwrap_or(u64::MAX));
    (fields.next().unwrap(), fields.next().unwrap())
}

/// Raises this process's soft (and if needed hard) `RLIMIT_NOFILE` to at least `want` with
/// `prlimit --pid`; returns the soft limit in force afterwards (lower than `want` when the
/// limit could not be raised, e.g. a hard limit an unprivileged user cannot lift).
pub fn raise_nofile(want: u64) -> u64 {
    let (soft, hard) = nofile();
    if soft >= want {
        return soft;
    }
    let pid = std::process::id().to_string();
    for (s, h) in [(want, hard.max(want)), (want.min(hard), hard)] {
        let arg = format!("--nofile={s}:{h}");
        let ok = Command::new("prlimit").args(["--pid", &pid, &arg]).status().is_ok_and(|st| st.success());
        if ok {
            break;
        }
    }
    nofile().0
}
