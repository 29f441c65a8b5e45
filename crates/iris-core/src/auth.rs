//! Who is calling. Authentication itself lives in the transports' shared
//! auth layer; the core only checks scopes and team visibility, in one place
//! ([`crate::registry::dispatch`]).

use serde::Serialize;

/// The scopes of DESIGN section 7.
pub mod scope {
    pub const TEAMS_READ: &str = "teams:read";
    pub const TEAMS_WRITE: &str = "teams:write";
    pub const MESSAGES_READ: &str = "messages:read";
    pub const MESSAGES_WRITE: &str = "messages:write";
    pub const MESSAGES_STREAM: &str = "messages:stream";
    pub const PROCESSES_READ: &str = "processes:read";
    pub const PROCESSES_MANAGE: &str = "processes:manage";
    pub const CACHE_READ: &str = "cache:read";
    pub const CACHE_WRITE: &str = "cache:write";
    pub const ADMIN: &str = "admin";
}

/// An authenticated caller.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Principal {
    /// Used as `fromTeam` when a caller names none.
    pub name: String,
    pub scopes: Vec<String>,
    /// If set, the only teams this caller may see or message.
    pub teams: Option<Vec<String>>,
}

impl Principal {
    /// The local operator (CLI `--local`, MCP over stdio): every scope.
    pub fn local() -> Self {
        Principal {
            name: "iris".into(),
            scopes: vec!["*".into()],
            teams: None,
        }
    }

    pub fn allows(&self, scope: &str) -> bool {
        self.scopes
            .iter()
            .any(|s| s == "*" || s == scope::ADMIN || s == scope)
    }

    pub fn can_see_team(&self, team: &str) -> bool {
        self.teams
            .as_ref()
            .is_none_or(|t| t.iter().any(|n| n == team))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_team_limits() {
        let p = Principal {
            name: "ci".into(),
            scopes: vec![scope::TEAMS_READ.into()],
            teams: Some(vec!["web".into()]),
        };
        assert!(p.allows(scope::TEAMS_READ));
        assert!(!p.allows(scope::MESSAGES_WRITE));
        assert!(p.can_see_team("web") && !p.can_see_team("api"));
        assert!(Principal::local().allows(scope::ADMIN));
    }
}
