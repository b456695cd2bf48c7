//! hostgate's gateway library: configuration, policy, the data path, the Microsoft Learn
//! importer, and the command-line tools built on them.
//!
//! - [`config`]: the TOML configuration file, validated before anything uses it.
//! - [`policy`]: rule files compiled into one [`hostgate_matcher::Matcher`], and the decision for
//!   a connection or request.
//! - [`gateway`]: listeners and the per-connection data path, phase by phase:
//!   accept ([`gateway`]) → sniff ([`sniff`]) → decide ([`policy`]) → connect upstream
//!   ([`upstream`]) → relay ([`relay`], [`http`]) → log ([`access`]). [`connect`] and
//!   [`transparent`] are the two listener kinds; [`tunnel`] is where TLS and opaque streams are
//!   decided; [`outcome`] maps every failure to what the client sees.
//! - [`inspect`]: TLS inspection of `allow` connections (a local CA mints leaf certificates;
//!   every request inside is decided); [`inspect::ca`] is the certificate authority.
//! - [`import`]: turns Microsoft Learn network-requirement pages into rule files.
//! - [`cli`]: `hostgate run`, `check`, `explain`, `import` and `ca init`.

pub mod access;
pub mod admin;
pub mod cli;
pub mod config;
mod connect;
pub mod gateway;
mod http;
pub mod import;
pub mod inspect;
pub mod io;
pub mod metrics;
pub mod notify;
pub mod outcome;
pub mod policy;
pub mod relay;
pub mod sniff;
mod transparent;
mod tunnel;
pub mod upstream;
