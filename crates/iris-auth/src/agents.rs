//! Credentials of the agents Iris runs (team-to-team messaging): each
//! `claude` process gets one, to call Iris's tools back over `/mcp` as its
//! team. They live in memory only — never in the database, never in the
//! team's folder — expire, and are revoked when their process ends (and by
//! any restart of Iris, which forgets them).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::audit::now_ms;
use crate::error::{AuthError, Result};
use crate::principal::{Principal, PrincipalKind};
use crate::rate::IdentityLimits;
use crate::{scope, secret};

/// The prefix of an agent's credential.
pub const AGENT_PREFIX: &str = "iris_at_";

/// What an agent may do: message teams and read, nothing else.
pub const AGENT_SCOPES: &[&str] = &[
    scope::MESSAGES_WRITE,
    scope::MESSAGES_READ,
    scope::TEAMS_READ,
    scope::CACHE_READ,
];

struct Seat {
    principal: Arc<Principal>,
    expires_at: i64,
}

/// The live agent credentials, by the SHA-256 of each.
#[derive(Default)]
pub struct Agents {
    seats: Mutex<HashMap<[u8; 32], Seat>>,
    /// Told when one is revoked (`Auth::changes`).
    changes: Option<Arc<tokio::sync::watch::Sender<u64>>>,
}

impl Agents {
    /// Agents whose revocations tick `changes`.
    pub(crate) fn telling(changes: Arc<tokio::sync::watch::Sender<u64>>) -> Self {
        Agents {
            seats: Mutex::default(),
            changes: Some(changes),
        }
    }

    /// A credential for the process of `team` serving conversation
    /// `session`, valid for `ttl` unless revoked first. Its principal is of
    /// kind `agent`, named after the team (the `fromTeam` of its calls), with
    /// the session as its id, [`AGENT_SCOPES`], the teams it may see
    /// (`None`: all) and `limits`.
    pub fn issue(
        &self,
        team: &str,
        session: &str,
        ttl: Duration,
        teams: Option<Vec<String>>,
        limits: Option<Arc<IdentityLimits>>,
    ) -> Result<String> {
        let token = format!("{AGENT_PREFIX}{}", secret::random_token()?);
        let principal = Arc::new(Principal {
            kind: PrincipalKind::Agent,
            id: session.to_owned(),
            name: team.to_owned(),
            scopes: AGENT_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
            teams,
            limits,
        });
        let seat = Seat {
            principal,
            expires_at: now_ms().saturating_add(ttl.as_millis() as i64),
        };
        let mut seats = self.seats.lock().unwrap_or_else(|p| p.into_inner());
        // Expired seats of processes that never said goodbye go here.
        let now = now_ms();
        seats.retain(|_, s| s.expires_at > now);
        seats.insert(secret::sha256(&token), seat);
        Ok(token)
    }

    /// Revoke `token` (nothing if it is unknown); connections opened with
    /// it are told.
    pub fn revoke(&self, token: &str) {
        let mut seats = self.seats.lock().unwrap_or_else(|p| p.into_inner());
        if seats.remove(&secret::sha256(token)).is_some()
            && let Some(c) = &self.changes
        {
            c.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// The principal of a live, unexpired `token`.
    pub fn authenticate(&self, token: &str) -> Result<Arc<Principal>> {
        self.standing(token).map(|(p, _)| p)
    }

    /// The principal of a live, unexpired `token`, and when it expires.
    pub(crate) fn standing(&self, token: &str) -> Result<(Arc<Principal>, i64)> {
        let seats = self.seats.lock().unwrap_or_else(|p| p.into_inner());
        match seats.get(&secret::sha256(token)) {
            Some(s) if s.expires_at > now_ms() => Ok((s.principal.clone(), s.expires_at)),
            Some(_) => Err(AuthError::unauthorized("agent credential expired")),
            None => Err(AuthError::unauthorized(
                "invalid agent credential (revoked when its process ended)",
            )),
        }
    }

    /// Live credentials (for tests and status).
    pub fn count(&self) -> usize {
        self.seats.lock().map(|s| s.len()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_credential_names_its_team_until_revoked() {
        let agents = Agents::default();
        let token = agents
            .issue("alpha", "sess-1", Duration::from_secs(60), None, None)
            .unwrap();
        assert!(token.starts_with(AGENT_PREFIX));
        let p = agents.authenticate(&token).unwrap();
        assert_eq!(
            (p.kind, p.name.as_str(), p.id.as_str()),
            (PrincipalKind::Agent, "alpha", "sess-1")
        );
        assert!(p.allows(scope::MESSAGES_WRITE) && !p.allows(scope::PROCESSES_MANAGE));
        agents.revoke(&token);
        assert!(agents.authenticate(&token).is_err());
        let expired = agents
            .issue("alpha", "s", Duration::ZERO, None, None)
            .unwrap();
        assert!(agents.authenticate(&expired).is_err());
    }
}
