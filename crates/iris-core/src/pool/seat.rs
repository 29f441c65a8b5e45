//! A claude team's way back to Iris (team-to-team messaging): while its
//! process runs, an MCP server entry named `iris` pointing at this Iris's
//! `/mcp`, with a credential that speaks for the team (see
//! `iris_auth::agents`), handed over with `--mcp-config` in a temporary
//! file. The credential itself is not in the file: the file says
//! `Bearer ${IRIS_MCP_TOKEN}`, which Claude Code expands from the
//! process's own environment, so no other agent of this machine reads it
//! from disk. Dropping the seat revokes the credential and removes the
//! file, so neither outlives the process.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use iris_auth::{Auth, IdentityLimits};
use serde_json::json;

/// How long an agent's credential lives at most; it is revoked when its
/// process ends, which is usually much sooner.
pub const AGENT_CREDENTIAL_TTL: Duration = Duration::from_secs(24 * 3600);

/// The tools of the `iris` server the agent may call without asking: all
/// of them (its credential only allows messaging and reading).
pub const IRIS_TOOLS: &str = "mcp__iris";

/// The variable of the agent's environment that holds its credential.
pub const TOKEN_VAR: &str = "IRIS_MCP_TOKEN";

pub(crate) struct Seat {
    auth: Arc<Auth>,
    token: String,
    file: tempfile::TempPath,
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
        }}});
        let seat = |file| Seat {
            auth: auth.clone(),
            token: token.clone(),
            file,
        };
        // tempfile creates it readable by its owner only (0600).
        let mut file = match tempfile::Builder::new()
            .prefix("iris-mcp-")
            .suffix(".json")
            .tempfile()
        {
            Ok(f) => f,
            Err(e) => {
                auth.agents.revoke(&token);
                return Err(e);
            }
        };
        let written = file.write_all(config.to_string().as_bytes());
        let seat = seat(file.into_temp_path());
        written?;
        Ok(seat)
    }

    /// The `--mcp-config` file of the `iris` server.
    pub fn file(&self) -> &std::path::Path {
        &self.file
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
