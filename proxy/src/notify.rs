//! systemd readiness notification (`sd_notify`): `READY=1`, `RELOADING=1`, `STOPPING=1` sent to
//! `$NOTIFY_SOCKET` when the service runs with `Type=notify` (or `Type=notify-reload`).
//!
//! This module owns the datagram protocol only (a path, or an abstract name starting with `@`);
//! without `NOTIFY_SOCKET` every call does nothing. Failures are logged at debug and never stop
//! the gateway.

use std::os::unix::net::UnixDatagram;

/// The gateway is serving (after start, and after each reload).
pub(crate) fn ready() {
    send("READY=1\nSTATUS=serving");
}

/// A reload has started; systemd expects the monotonic time with it.
pub(crate) fn reloading() {
    let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or(0);
    send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading"));
}

/// Shutdown has started.
pub(crate) fn stopping() {
    send("STOPPING=1\nSTATUS=draining connections");
}

/// Sends `state` to `$NOTIFY_SOCKET`, if set. Returns whether it was sent.
pub(crate) fn send(state: &str) -> bool {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else { return false };
    let result = (|| -> std::io::Result<()> {
        let socket = UnixDatagram::unbound()?;
        let bytes = target.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            socket.send_to(state.as_bytes(), &target)?;
        }
        Ok(())
    })();
    if let Err(e) = &result {
        tracing::debug!(error = %e, "sd_notify failed");
    }
    result.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        // The variable is process-wide: this is the only test in the crate that sets it.
        std::env::set_var("NOTIFY_SOCKET", &path);
        reloading();
        ready();
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        let first = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(first.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{first}");
        let usec: u64 = first.lines().nth(1).unwrap().trim_start_matches("MONOTONIC_USEC=").parse().unwrap();
        assert!(usec > 0);
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");
        assert!(!send("READY=1"), "sent without NOTIFY_SOCKET");
    }
}
