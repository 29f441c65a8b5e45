//! Who is calling.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::rate::IdentityLimits;
use crate::scope;

/// What kind of caller a principal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKind {
    /// The operator on this machine (CLI `--local`, MCP over stdio).
    Local,
    /// Anyone, when `api.requireAuth` is false.
    Open,
    Key,
    User,
    /// An agent process Iris runs, calling back as its team (team-to-team
    /// messaging): `name` is the team, `id` the conversation it serves.
    Agent,
}

/// An authenticated caller (carried to another node, without its rate
/// limits, when a call is forwarded there).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Principal {
    pub kind: PrincipalKind,
    /// Key id, user id, or a fixed name for local/open callers.
    pub id: String,
    /// Used as `fromTeam` when a caller names none.
    pub name: String,
    pub scopes: Vec<String>,
    /// If set, the only teams this caller may see or message.
    pub teams: Option<Vec<String>>,
    /// This identity's rate limits (none for local callers).
    #[serde(skip)]
    pub limits: Option<Arc<IdentityLimits>>,
}

impl Principal {
    /// The local operator: every scope.
    pub fn local() -> Self {
        Principal {
            kind: PrincipalKind::Local,
            id: "local".into(),
            name: "iris".into(),
            scopes: vec![scope::ALL.into()],
            teams: None,
            limits: None,
        }
    }

    /// The anonymous caller of a server with `requireAuth: false`.
    pub fn open(limits: Option<Arc<IdentityLimits>>) -> Self {
        Principal {
            kind: PrincipalKind::Open,
            id: "open".into(),
            name: "api".into(),
            scopes: vec![scope::ALL.into()],
            teams: None,
            limits,
        }
    }

    /// A caller who has not authenticated yet: no scopes, no teams.
    pub fn nobody() -> Self {
        Principal {
            kind: PrincipalKind::Open,
            id: "nobody".into(),
            name: "nobody".into(),
            scopes: Vec::new(),
            teams: Some(Vec::new()),
            limits: None,
        }
    }

    pub fn allows(&self, scope: &str) -> bool {
        self.scopes
            .iter()
            .any(|s| s == scope::ALL || s == scope::ADMIN || s == scope)
    }

    /// The team an agent's credential speaks for (`None` for everyone else).
    pub fn agent_team(&self) -> Option<&str> {
        (self.kind == PrincipalKind::Agent).then_some(self.name.as_str())
    }

    pub fn can_see_team(&self, team: &str) -> bool {
        self.teams
            .as_ref()
            .is_none_or(|t| t.iter().any(|n| n == team))
    }

    /// `kind:id`, as the audit trail names actors.
    pub fn actor(&self) -> String {
        format!("{}:{}", self.kind_name(), self.id)
    }

    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            PrincipalKind::Local => "local",
            PrincipalKind::Open => "open",
            PrincipalKind::Key => "key",
            PrincipalKind::User => "user",
            PrincipalKind::Agent => "agent",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_team_limits() {
        let p = Principal {
            kind: PrincipalKind::Key,
            id: "key_1".into(),
            name: "ci".into(),
            scopes: vec![scope::TEAMS_READ.into()],
            teams: Some(vec!["web".into()]),
            limits: None,
        };
        assert!(p.allows(scope::TEAMS_READ));
        assert!(!p.allows(scope::MESSAGES_WRITE));
        assert!(p.can_see_team("web") && !p.can_see_team("api"));
        assert!(Principal::local().allows(scope::ADMIN));
        assert_eq!(p.actor(), "key:key_1");
    }
}
