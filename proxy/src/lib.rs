//! hostgate's gateway library (being built).
pub mod import;
