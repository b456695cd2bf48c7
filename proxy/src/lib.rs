//! hostgate's gateway library: configuration, policy, the Microsoft Learn importer, and the
//! command-line tools built on them.
//!
//! - [`config`]: the TOML configuration file, validated before anything uses it.
//! - [`policy`]: rule files compiled into one [`hostgate_matcher::Matcher`], and the decision for
//!   a connection or request.
//! - [`import`]: turns Microsoft Learn network-requirement pages into rule files.
//! - [`cli`]: `hostgate check`, `explain` and `import`.

pub mod cli;
pub mod config;
pub mod import;
pub mod policy;
