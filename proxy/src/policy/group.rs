//! Client groups: the `[[client]]` definitions the configuration builds, the group a client is
//! in ([`GroupId`]) and a group as compiled into a policy ([`GroupInfo`]).
//!
//! This module owns the group types and [`Mode`] (a group's, a source's or the whole policy's).
//! It does not decide. Which group a client is in and which rules apply to it
//! are decided by [`super::Policy`]; the lint checks groups in [`super::lint`].

use std::sync::Arc;

use ipnet::IpNet;
use serde::Deserialize;

use super::rule::{Action, Origin};

/// A client group (`[[client]]`): the clients whose address falls in its networks (the longest
/// matching prefix of every group's networks picks the group), and what applies to them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// Its name, as logged (`client_group`) and listed.
    pub name: Arc<str>,
    /// The client networks, host bits cleared.
    pub networks: Vec<IpNet>,
    /// The sources whose rules apply to it: indices into [`super::Inputs::sources`].
    pub sources: Vec<usize>,
    /// The action when none of its rules matches.
    pub default: Action,
    /// Enforce or only report its denials.
    pub mode: Mode,
    /// Whether its clients must authenticate on the explicit proxy for what is allowed (when
    /// `[auth]` is configured; `auth = "none"` in the group turns it off).
    pub auth: bool,
    /// Authenticated users who are in this group whatever their address.
    pub users: Vec<String>,
    /// Directory groups (LDAP DNs, compared case-insensitively) whose members are in this group.
    pub directory_groups: Vec<String>,
    /// The line of the configuration file where it is defined.
    pub line: usize,
}

/// The most client groups a configuration may define (a rule's groups are a 64-bit set; bit 0 is
/// the clients in no group).
pub const MAX_GROUPS: usize = 63;

/// Which client group a connection's client is in: 0 for none (the top-level policy), otherwise
/// the position of its `[[client]]` entry, from 1. Only meaningful with the policy that gave it
/// ([`super::Policy::group_of`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(pub u8);

impl GroupId {
    /// The clients in no group: the top-level policy.
    pub const NONE: GroupId = GroupId(0);
}

/// A client group as compiled: index 0 of [`super::Policy::groups`] is the clients in no group (the
/// top-level `[policy]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupInfo {
    /// The group's name; `None` for the clients in no group.
    pub name: Option<Arc<str>>,
    /// Its client networks (empty for the clients in no group).
    pub networks: Vec<IpNet>,
    /// The action when none of its rules fits.
    pub default: Action,
    /// Every deny of its clients is only reported.
    pub report: bool,
    /// Active rules that apply to it, by action: bypass, allow, deny.
    pub rules: [usize; 3],
    /// Whether its clients must authenticate (when `[auth]` is configured).
    pub auth: bool,
    /// Users in this group by name.
    pub users: Vec<String>,
    /// Directory groups whose members are in this group (lowercased).
    pub directory_groups: Vec<String>,
    /// Where it is defined (`None` for the clients in no group).
    pub origin: Option<Origin>,
}

impl GroupInfo {
    pub(super) fn top(default: Action, report: bool) -> GroupInfo {
        GroupInfo {
            name: None,
            networks: Vec::new(),
            default,
            report,
            rules: [0; 3],
            auth: true,
            users: Vec::new(),
            directory_groups: Vec::new(),
            origin: None,
        }
    }

    /// The name as logged and listed: the group's, or `-` for the clients in no group.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or("-")
    }
}

/// Whether deny decisions are enforced or only reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Deny means deny.
    #[default]
    Enforce,
    /// A would-be deny is allowed and logged with `would_deny = true`, so that a new rule list can
    /// be rolled out and watched before it bites.
    Report,
}
