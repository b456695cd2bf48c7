//! Helpers of the end-to-end tests: a test CA and upstream servers, a gateway started in-process
//! from a configuration written to a temporary directory, and its typed access events; raw HTTP
//! and CONNECT clients, adversarial TLS clients (trickled writes, hand-built ClientHellos),
//! network namespaces for the transparent listener, and the `hostgate` binary as a child
//! process.
//!
//! Every test binary does `mod support;` and uses some of it, hence `dead_code`; the items are
//! `pub` so that the submodules can share them, which the workspace's `unreachable_pub` would
//! flag in a test binary.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

pub mod ca;
pub mod client_hello;
pub mod events;
pub mod gateway;
pub mod http;
pub mod netns;
pub mod process;
pub mod resources;
pub mod tools;
pub mod trickle;
pub mod upstream;

use std::time::Duration;

// Not every test binary uses every helper.
#[allow(unused_imports)]
pub use self::{
    ca::TestCa,
    client_hello::ClientHello,
    gateway::{assert_decided, assert_logged_deny, assert_rule, dst, pins, TestGateway, LOCAL_UPSTREAM},
    http::{Closed, HttpConn, Response},
    netns::Netns,
    trickle::Trickle,
    upstream::{Blackhole, HttpUpstream, TlsUpstream},
};

/// How long any single step of a test may take before it counts as hung.
pub const STEP: Duration = Duration::from_secs(15);

/// The TLS alert `access_denied` (fatal), as the gateway writes it: a TLS 1.2 record header and
/// the two alert bytes.
pub const ALERT_ACCESS_DENIED: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x31];

/// `n` pseudo-random bytes from `seed` (xorshift64*; reproducible, no dependency).
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(n);
    out
}
