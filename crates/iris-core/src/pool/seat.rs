//! A claude team's way back to Iris (team-to-team messaging): while its
//! process runs, an MCP server entry named `iris` pointing at this Iris's
//! `/mcp`, with a credential that speaks for the team (see
//! `iris_auth::agents`), handed over inline with `--mcp-config` (no file
//! to leave behind or for another agent to read). The credential itself
//! is not in it: it says `Bearer ${IRIS_MCP_TOKEN}`, which Claude Code
//! expands from the process's own environment. Dropping the seat revokes
//! the credential, so it does not outlive the process.

use std::sync::Arc;
use std::time::Duration;

use iris_auth::{Auth, IdentityLimits};
use serde_json::json;

/// How long an agent's credential lives at most; it is revoked when its
/// process ends, which is usually much sooner.
pub const AGENT_CREDENTIAL_TTL: Duration = Duration::from_secs(24 * 3600);

pub use crate::team::{IRIS_TOOLS, TOKEN_VAR};

pub(crate) struct Seat {
    auth: Arc<Auth>,
    token: String,
    config: String,
    url: String,
}

impl Seat {
    /// A seat for the process of `team` serving conversation `session`,
    /// calling `url`, seeing `teams` (`None`: every team).
    pub fn new(
        auth: &Arc<Auth>,
        url: &str,
        team: &str,
        session: &str,
        teams: Option<Vec<String>>,
    ) -> std::io::Result<Seat> {
        let limits = Arc::new(IdentityLimits::new(
            auth.settings.default_rate,
            auth.settings.message_rate,
        ));
        let token = auth
            .agents
            .issue(team, session, AGENT_CREDENTIAL_TTL, teams, Some(limits))
            .map_err(std::io::Error::other)?;
        let config = json!({"mcpServers": {"iris": {
            "type": "http",
            "url": url,
            "headers": {"Authorization": format!("Bearer ${{{TOKEN_VAR}}}")},
        }}})
        .to_string();
        Ok(Seat {
            auth: auth.clone(),
            token,
            config,
            url: url.to_owned(),
        })
    }

    /// The `iris` server as ACP's `McpServer` (http) for `session/new`: the
    /// credential in its header (an ACP agent gets no `--mcp-config` that
    /// could name a variable).
    pub fn acp_server(&self) -> serde_json::Value {
        json!({"type": "http", "name": "iris", "url": self.url,
               "headers": [{"name": "Authorization", "value": format!("Bearer {}", self.token)}]})
    }

    /// The `--mcp-config` JSON of the `iris` server.
    pub fn config(&self) -> &str {
        &self.config
    }

    /// The credential, for the agent's environment ([`TOKEN_VAR`]).
    pub fn token(&self) -> &str {
        &self.token
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.auth.agents.revoke(&self.token);
    }
}
