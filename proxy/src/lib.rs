//! hostgate's gateway library: configuration, policy, the data path, the Microsoft Learn
//! importer, and the command-line tools built on them.
//!
//! One client connection goes through the data path top to bottom, carried by one context
//! (`conn::Conn`) that holds its generation, its slot and its access record:
//!
//! ```text
//! listen/ ─ accept, slot, generation, first byte
//!   ├─ listen/transparent.rs: SO_ORIGINAL_DST, sniff ───────────────┐
//!   └─ listen/connect.rs: hyper; CONNECT ─ decide, connect, 200, sniff ┤   absolute-form ─► forward/
//!                                                                      ▼
//!                           dispatch.rs ─ TLS: SNI, decide ─┬─ relay.rs (bypass, uninspected)
//!                                         │                 └─ intercept.rs ─► forward/ (inspected HTTPS)
//!                                         ├─ HTTP ─► forward/ (each request: target, decide, upstream)
//!                                         └─ unknown ─ default action ─► relay.rs
//! every end ─► generation.rs: emit ─► metrics + access sink (access.rs);
//! every refusal ─► outcome.rs: 403/502/504 + reason header, TLS alert, or close
//! ```
//!
//! Public modules are what the `hostgate` binary, the benches, the fuzz targets and the tests
//! use:
//! - [`config`]: the TOML configuration file, validated before anything uses it.
//! - [`policy`]: rule files compiled into one [`hostgate_matcher::Matcher`], and the decision for
//!   a connection or request.
//! - [`gateway`]: start, reload and shutdown of the data path.
//! - [`access`]: the typed access record and its sinks (the `access` log, a channel).
//! - [`outcome`]: how a connection ended and what the client is shown.
//! - [`sniff`]: the ClientHello and HTTP-head sniffer (a pure, incremental parser).
//! - [`inspect`]: TLS inspection's CA and certificates ([`inspect::ca`] for `hostgate ca init`).
//! - [`import`]: turns Microsoft Learn network-requirement pages into rule files.
//! - [`metrics`], `admin`: the Prometheus metrics and the admin listener.
//! - [`pac`]: the PAC file generated from the policy (`/proxy.pac`, `hostgate pac`).
//! - [`cli`]: `hostgate run`, `check`, `explain`, `import` and `ca init`.
//!
//! The data path's phases are private: `conn` (the context), `listen` (accept), `dispatch`
//! (after the sniff), `forward` (the request pipeline), `intercept` (inspected TLS), `relay`,
//! `stream`, `upstream` (resolve, SSRF guard, connect), `generation` and `reload`; `logsink`
//! (`[log] output`: syslog and the journal).

pub mod access;
mod admin;
mod auth;
pub mod cli;
pub mod config;
mod conn;
mod dispatch;
mod explain;
pub mod firewall;
mod forward;
pub mod gateway;
mod generation;
pub mod import;
pub mod inspect;
mod intercept;
mod listen;
mod logsink;
pub mod metrics;
pub mod normalize;
mod notify;
pub mod outcome;
pub mod pac;
pub mod policy;
mod relay;
mod reload;
pub mod sniff;
pub mod status;
mod stream;
mod upstream;
