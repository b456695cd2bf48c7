//! API skeleton (being implemented).
#![forbid(unsafe_code)]

mod error;
mod host;
mod matcher;
mod pattern;

pub use error::{BuildError, BuildErrorKind, InvalidHost, InvalidHostKind};
pub use host::Host;
pub use matcher::{Hit, Match, Matcher, MatcherBuilder, Matches, PatternId};
pub use pattern::{Pattern, Specificity};
