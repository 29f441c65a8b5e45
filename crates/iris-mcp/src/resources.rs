//! Teams and conversation reports as MCP resources (2025-11-25
//! §Resources), read through the same operations as every transport:
//!
//! | URI | operation |
//! | --- | --- |
//! | `iris://teams` | `list_teams` |
//! | `iris://teams/{team}` | `team_status` |
//! | `iris://teams/{team}/report` | `session_report` of the caller's conversation with the team |
//! | `iris://sessions/{sessionId}/report` | `session_report` of one conversation |

use std::sync::Arc;

use iris_core::{Ctx, ErrorKind, Iris, IrisError};
use rmcp::ErrorData as McpError;
use rmcp::model::{
    ListResourceTemplatesResult, ListResourcesResult, ReadResourceResult, Resource,
    ResourceContents, ResourceTemplate,
};
use serde_json::{Value, json};

use crate::tools::protocol_error;

const JSON: &str = "application/json";

/// Every team the caller may see, and its report; none for a caller that
/// may not list teams.
pub async fn list(iris: &Arc<Iris>, ctx: Ctx) -> Result<ListResourcesResult, McpError> {
    let teams = match iris.dispatch(ctx, "list_teams", json!({})).await {
        Ok(v) => v,
        Err(e) if e.kind == ErrorKind::Forbidden => {
            return Ok(ListResourcesResult::with_all_items(Vec::new()));
        }
        Err(e) => return Err(protocol_error(&e)),
    };
    let mut resources = vec![
        Resource::new("iris://teams", "teams")
            .with_description("Every team you may see, with whether it is awake")
            .with_mime_type(JSON),
    ];
    for team in teams["teams"].as_array().into_iter().flatten() {
        let Some(name) = team["name"].as_str() else {
            continue;
        };
        resources.push(
            Resource::new(format!("iris://teams/{name}"), name.to_owned())
                .with_title(format!("Team {name}"))
                .with_description(format!("Whether {name} is awake, busy, and its queue"))
                .with_mime_type(JSON),
        );
        resources.push(
            Resource::new(
                format!("iris://teams/{name}/report"),
                format!("{name}-report"),
            )
            .with_title(format!("Your conversation with {name}"))
            .with_mime_type(JSON),
        );
    }
    Ok(ListResourcesResult::with_all_items(resources))
}

pub fn templates() -> ListResourceTemplatesResult {
    ListResourceTemplatesResult::with_all_items(vec![
        ResourceTemplate::new("iris://teams/{team}", "team")
            .with_description("A team's state: awake, busy, its queue")
            .with_mime_type(JSON),
        ResourceTemplate::new("iris://teams/{team}/report", "team-report")
            .with_description("Your conversation with a team: its messages and process")
            .with_mime_type(JSON),
        ResourceTemplate::new("iris://sessions/{sessionId}/report", "session-report")
            .with_description("One conversation: its messages and process")
            .with_mime_type(JSON),
    ])
}

/// Read `uri`.
///
/// # Errors
/// -32002 (resource not found, 2025-11-25 §Resources/Error Handling) for a
/// URI that names nothing or a team or conversation the caller may not
/// see; other errors of the operation with their JSON-RPC code.
pub async fn read(iris: &Arc<Iris>, ctx: Ctx, uri: &str) -> Result<ReadResourceResult, McpError> {
    let Some((operation, params)) = route(uri) else {
        return Err(not_found(uri, None));
    };
    match iris.dispatch(ctx, operation, params).await {
        Ok(value) => Ok(ReadResourceResult::new(vec![
            ResourceContents::text(value.to_string(), uri).with_mime_type(JSON),
        ])),
        Err(e) if e.kind.http_status() == 404 => Err(not_found(uri, Some(&e))),
        Err(e) => Err(protocol_error(&e)),
    }
}

/// The operation and parameters a URI stands for.
fn route(uri: &str) -> Option<(&'static str, Value)> {
    let path = uri.strip_prefix("iris://")?;
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["teams"] => Some(("list_teams", json!({}))),
        ["teams", team] if !team.is_empty() => Some(("team_status", json!({"team": team}))),
        ["teams", team, "report"] if !team.is_empty() => {
            Some(("session_report", json!({"toTeam": team})))
        }
        ["sessions", id, "report"] if !id.is_empty() => {
            Some(("session_report", json!({"sessionId": id})))
        }
        _ => None,
    }
}

fn not_found(uri: &str, cause: Option<&IrisError>) -> McpError {
    let message = cause.map_or_else(|| format!("no resource `{uri}`"), |e| e.message.clone());
    McpError::resource_not_found(message, Some(json!({"uri": uri})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_name_operations() {
        assert_eq!(route("iris://teams").unwrap().0, "list_teams");
        assert_eq!(
            route("iris://teams/a").unwrap(),
            ("team_status", json!({"team": "a"}))
        );
        assert_eq!(
            route("iris://teams/a/report").unwrap(),
            ("session_report", json!({"toTeam": "a"}))
        );
        assert_eq!(
            route("iris://sessions/s1/report").unwrap(),
            ("session_report", json!({"sessionId": "s1"}))
        );
        for bad in [
            "iris://",
            "iris://teams/",
            "http://teams",
            "iris://teams/a/b",
            "iris://x",
        ] {
            assert!(route(bad).is_none(), "{bad}");
        }
    }
}
