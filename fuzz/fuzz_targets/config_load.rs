//! `hostgate_proxy::config::Config::parse` on arbitrary text (lossy UTF-8 of the input; the seeds
//! and the dictionary make it mostly TOML).
//!
//! Invariants (see `src/invariants.rs`, shared with `tests/properties.rs`): never panics; an
//! error names the file and, when it has a position, a line and a column inside the text; an
//! accepted configuration parses again to an equal one, with `sniff.max_bytes`, `sniff.timeout`,
//! `limits.max_connections` in range, no listener address twice, rule-file paths resolved under
//! the file's directory (or absolute, as written) and their lines inside the text.
#![no_main]

use hostgate_matcher_fuzz::invariants::check_config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = check_config(&String::from_utf8_lossy(data));
});
