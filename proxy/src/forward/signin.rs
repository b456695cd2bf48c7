//! The sign-in step of the explicit proxy: who must authenticate for a request (by its
//! decision and the client's group), the check ([`crate::auth::Authenticator`]), and the group a
//! signed-in user selects. The connect listener (CONNECT) and the request pipeline
//! (absolute-form) call [`gate`] before their final decision; refusals get their
//! `Proxy-Authenticate` from [`challenge`].

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{HeaderMap, PROXY_AUTHORIZATION};

use crate::auth::{Checked, Identity};
use crate::generation::Generation;
use crate::metrics::AuthResult;
use crate::outcome::{Failure, Outcome};
use crate::policy::{Action, Decision, GroupId};

/// Adds `Proxy-Authenticate` to a `407` (the only status that needs it).
pub(crate) fn challenge<B>(gen: &Generation, res: &mut http::Response<B>) {
    if res.status() == http::StatusCode::PROXY_AUTHENTICATION_REQUIRED {
        if let Some(auth) = &gen.auth {
            res.headers_mut().insert(http::header::PROXY_AUTHENTICATE, auth.challenge());
        }
    }
}

/// Who is asking, once [`gate`] has let a request through.
#[derive(Debug)]
pub(crate) struct Passed {
    /// Who signed in, when someone did.
    pub(crate) identity: Option<Arc<Identity>>,
    /// The group to decide with: the one the user selects (`users`, `directory_groups`), or the
    /// address's.
    pub(crate) group: GroupId,
}

/// A request the gate refused: the decision it was refused under (for the access record) and
/// why.
#[derive(Debug)]
pub(crate) struct Refused {
    /// The decision for the client's address.
    pub(crate) decision: Decision,
    /// `auth-required`, `auth-throttled` or `auth-unavailable`.
    pub(crate) failure: Failure,
}

/// The authentication step of the explicit proxy, before the final decision. `decide` decides
/// the request for a client group. Without `[auth]`, or for a name the client's address may
/// have as `bypass`, nothing is asked. Credentials are needed when the address's decision is
/// `allow` in a group that requires them, or when it is `deny` but a group a user can select
/// would allow it (the user may sign in into it); a `deny` no user could change is left to the
/// caller's `403`, with nobody asked. Credentials that are sent are checked when a user could
/// select a group. Counts `hostgate_auth_total`.
///
/// # Errors
/// `auth-required` (`407`, missing or bad credentials), `auth-throttled` (`429`),
/// `auth-unavailable` (`503`, the directory did not answer).
pub(crate) async fn gate(
    gen: &Generation,
    headers: &HeaderMap,
    client: IpAddr,
    group: GroupId,
    decide: impl Fn(GroupId) -> Decision,
) -> Result<Passed, Box<Refused>> {
    let pass = Passed { identity: None, group };
    let Some(auth) = &gen.auth else { return Ok(pass) };
    let policy = &gen.policy;
    let decision = decide(group);
    let selectable = || {
        policy
            .groups()
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, g)| !g.users.is_empty() || !g.directory_groups.is_empty())
    };
    let needed = match decision.action {
        Action::Bypass => return Ok(pass),
        Action::Allow => policy.group(group).auth,
        Action::Deny => selectable().any(|(i, _)| decide(GroupId(i as u8)).action != Action::Deny),
    };
    let offered = headers.contains_key(PROXY_AUTHORIZATION) && selectable().next().is_some();
    if !needed && !offered {
        return Ok(pass);
    }
    let (result, failure) = match auth.check(headers, client).await {
        Checked::Ok(id) => {
            gen.metrics.auth(AuthResult::Ok);
            let group = policy.group_of_user(&id.user, &id.groups).unwrap_or(group);
            return Ok(Passed { identity: Some(id), group });
        }
        // Credentials nobody needed: the request goes on as the address's, unsigned.
        _ if !needed => return Ok(pass),
        Checked::Missing => (AuthResult::Missing, Failure::new(Outcome::AuthRequired, "no credentials")),
        Checked::Bad => (AuthResult::Bad, Failure::new(Outcome::AuthRequired, "bad credentials")),
        Checked::Throttled => {
            (AuthResult::Throttled, Failure::new(Outcome::AuthThrottled, "too many failed sign-ins from this address"))
        }
        Checked::Unavailable(e) => (AuthResult::Error, Failure::new(Outcome::AuthUnavailable, e)),
    };
    gen.metrics.auth(result);
    Err(Box::new(Refused { decision, failure }))
}
