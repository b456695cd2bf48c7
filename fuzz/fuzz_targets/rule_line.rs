//! `hostgate_proxy::policy::parse_rules` on arbitrary text (a rule file, usually of a few lines).
//!
//! The text (lossy UTF-8 of the input) is parsed with no source default or with
//! `default = "bypass"` (by a hash of the input), and `[vars]` giving `tenant` and `regionname` (so that placeholders are
//! both resolved and left unresolved). Invariants (see `src/invariants.rs`, shared with
//! `tests/properties.rs`): never panics; every error names a line of the text, in order, and
//! that line alone gives the same error (only "no action" depends on the lines above); every
//! rule comes from the line it names and equals what that line alone gives; a rule written back
//! as `ACTION TARGET` parses to the same rule; its canonical text
//! (`ACTION [scheme://]pattern[:port][path]`) parses to the same fields and is a fixed point.
#![no_main]

use std::collections::BTreeMap;

use hostgate_matcher_fuzz::invariants::{check_rules, fnv};
use hostgate_proxy::policy::Action;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let vars: BTreeMap<String, String> = [("tenant", "contoso"), ("regionname", "westus2")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let default = (fnv(data) & 1 == 1).then_some(Action::Bypass);
    let _ = check_rules(&text, default, &vars);
});
