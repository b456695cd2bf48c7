//! Shared helpers for the fuzz targets: a naive reference matcher (the same definition as the
//! one in `matcher/tests/differential.rs`) and an oracle for normalising plain ASCII hosts.
#![forbid(unsafe_code)]

pub mod reference;
