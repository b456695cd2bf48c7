//! Listeners: binding, the accept loops, and the start of every connection's life (its slot
//! under `limits.max_connections`, the generation it will be served by, its context, the wait
//! for its first byte).
//!
//! This module owns the listening sockets and the accept loops ([`accept`]: the connection limit,
//! taken right after `accept`, and the back-off when the process runs out of descriptors), the
//! threads they run on ([`workers`]: one single-threaded runtime per worker, each with its own
//! `SO_REUSEPORT` socket per listener), and the handing of each accepted connection to its
//! listener kind: [`connect`] (the explicit proxy) or [`transparent`] (redirected connections). Both end in the one dispatch after the sniff
//! ([`crate::dispatch`]) or the request pipeline ([`crate::forward`]). It does not read a byte a
//! client sends.

pub(crate) mod accept;
pub(crate) mod connect;
pub(crate) mod sni;
pub(crate) mod transparent;
pub(crate) mod workers;

pub(crate) use accept::inherit_from_env;
pub(crate) use accept::{bind, bind_all, unused_inherited, Bound, Intake};
