//! `hostgate_proxy::normalize::normalize` on arbitrary request targets (lossy UTF-8 of the input;
//! the seeds are the hostile spellings of `HOSTILE_TARGETS`, the dictionary their pieces).
//!
//! The mode (`Slashes::Refuse` or `Slashes::Keep`) comes from a hash of the input. Invariants
//! (`normalize_target` in `src/invariants.rs`, shared with `tests/properties.rs`): never panics;
//! an accepted target is a fixed point, starts with `/`, keeps its query as written, has no
//! control byte, DEL, NUL or `#`, and its path has no dot segment, no empty segment but a
//! trailing one, no encoded unreserved character, only upper-case `%XX` (and, refusing slashes,
//! no `%2F`, `%5C` or `\`); a target that fits `/p/` (or `/p`, `/p/ok/`) is served under it by a
//! permissive reference server (decodes everything, `\` as `/`, strips `;parameters`, removes dot
//! segments); an error is one the input spells; `Refuse` and `Keep` agree but on slashes.
#![no_main]

use hostgate_matcher_fuzz::invariants::{fnv, normalize_target};
use hostgate_proxy::normalize::Slashes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let slashes = if fnv(data) & 1 == 0 { Slashes::Refuse } else { Slashes::Keep };
    let _ = normalize_target(&String::from_utf8_lossy(data), slashes);
});
