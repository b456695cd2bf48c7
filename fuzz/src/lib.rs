//! Shared helpers for the fuzz targets: a naive reference matcher (the same definition as the
//! one in `matcher/tests/differential.rs`) and an oracle for normalising plain ASCII hosts
//! ([`reference`]); the invariants of the proxy's parsers ([`invariants`], shared with
//! `tests/properties.rs`).
#![forbid(unsafe_code)]

pub mod invariants;
pub mod reference;
