//! REST under `/api/v1` (and the same under `/api`): a table from routes to
//! operations. Each entry says which operation, which path segment fills
//! which parameter, and whether the rest comes from the query or the body.

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, get, on, post};
use iris_core::IrisError;
use iris_core::registry::Operation;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::gate::caller::Caller;
use crate::params::{Body, add_query, body_object, read_body, segments};
use crate::state::AppState;

/// How one route calls one operation.
#[derive(Clone, Copy)]
pub(crate) struct Spec {
    pub op: &'static str,
    /// The operation parameter that `{team}` in the path fills.
    pub team: Option<&'static str>,
    /// The operation parameter that `{id}` in the path fills.
    pub id: Option<&'static str>,
}

/// Which methods a route answers; GET takes its parameters from the query.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Verb {
    Get,
    Post,
    /// Seed 000 uses DELETE where seed 001 uses POST.
    PostOrDelete,
    Delete,
    Put,
    Patch,
}

/// One REST route (relative to `/api/v1` and `/api`).
pub(crate) struct Route {
    pub path: &'static str,
    pub verb: Verb,
    pub spec: Spec,
    /// The status of a success: 200, or 202 for work accepted to run later.
    pub status: u16,
}

const fn op(op: &'static str) -> Spec {
    Spec {
        op,
        team: None,
        id: None,
    }
}

const fn team(op: &'static str, field: &'static str) -> Spec {
    Spec {
        op,
        team: Some(field),
        id: None,
    }
}

const fn id(op: &'static str, field: &'static str) -> Spec {
    Spec {
        op,
        team: None,
        id: Some(field),
    }
}

const fn route(path: &'static str, verb: Verb, spec: Spec) -> Route {
    Route {
        path,
        verb,
        spec,
        status: 200,
    }
}

/// A route whose success is 202 Accepted: the work runs after the answer.
const fn accepted(r: Route) -> Route {
    Route { status: 202, ..r }
}

/// Request headers that fill an operation parameter, where it has one.
pub(crate) const HEADER_PARAMS: &[(&str, &str)] = &[("idempotency-key", "idempotencyKey")];

/// Every REST route of seeds 000-003, each a call of one operation.
pub(crate) const ROUTES: &[Route] = &[
    // Seed 000/001: one route per tool.
    route("/teams/tell", Verb::Post, op("send_message")),
    route("/teams/ask", Verb::Post, op("ask_message")),
    route("/teams/quick-tell", Verb::Post, op("quick_message")),
    route("/teams/wake-all", Verb::Post, op("team_wake_all")),
    route("/teams", Verb::Get, op("list_teams")),
    route("/teams/status", Verb::Get, op("team_status")),
    // Teams at run time (seed 003's contexts, also under /contexts).
    route("/teams", Verb::Post, op("team_create")),
    route("/agent-profiles", Verb::Get, op("team_profiles")),
    route("/teams/{team}", Verb::Get, team("team_get", "team")),
    route("/teams/{team}", Verb::Put, team("team_update", "team")),
    route("/teams/{team}", Verb::Patch, team("team_update", "team")),
    route("/teams/{team}", Verb::Delete, team("team_delete", "team")),
    route("/contexts", Verb::Get, op("list_teams")),
    route("/contexts", Verb::Post, op("team_create")),
    route("/contexts/{id}", Verb::Get, id("team_get", "team")),
    route("/contexts/{id}", Verb::Put, id("team_update", "team")),
    route("/contexts/{id}", Verb::Delete, id("team_delete", "team")),
    route("/teams/{team}/wake", Verb::Post, team("team_wake", "team")),
    route(
        "/teams/{team}/launch",
        Verb::Post,
        team("team_launch", "team"),
    ),
    route(
        "/teams/{team}/sleep",
        Verb::Post,
        team("team_sleep", "team"),
    ),
    route(
        "/teams/{team}/cancel",
        Verb::Post,
        team("session_cancel", "toTeam"),
    ),
    route(
        "/teams/{team}/fork",
        Verb::Post,
        team("session_fork", "toTeam"),
    ),
    route(
        "/teams/{team}/reboot",
        Verb::PostOrDelete,
        team("session_reboot", "toTeam"),
    ),
    route(
        "/teams/{team}/delete",
        Verb::PostOrDelete,
        team("session_delete", "toTeam"),
    ),
    route(
        "/teams/{team}/status",
        Verb::Get,
        team("team_status", "team"),
    ),
    route(
        "/teams/{team}/report",
        Verb::Get,
        team("session_report", "toTeam"),
    ),
    route(
        "/teams/{team}/conversations",
        Verb::Get,
        team("session_list", "team"),
    ),
    route("/conversations", Verb::Get, op("session_list")),
    route("/team-graph", Verb::Get, op("team_graph")),
    route("/logs", Verb::Get, op("get_logs")),
    route("/date", Verb::Get, op("get_date")),
    route("/status", Verb::Get, op("get_status")),
    route("/cache/{id}", Verb::Get, id("session_report", "sessionId")),
    route(
        "/cache/{id}/diff",
        Verb::Get,
        id("session_diff", "sessionId"),
    ),
    route(
        "/cache/{id}",
        Verb::Delete,
        id("session_delete", "sessionId"),
    ),
    // Seed 002: the programmatic API.
    // (Seed 002's `question` is taken for `message` by the core.)
    route(
        "/teams/{team}/ask",
        Verb::Post,
        team("ask_message", "toTeam"),
    ),
    // Seed 002's jobs: execute a task, be told by webhook.
    accepted(route(
        "/teams/{team}/execute",
        Verb::Post,
        team("job_execute", "team"),
    )),
    route("/jobs", Verb::Get, op("job_list")),
    route("/jobs/{id}", Verb::Get, id("job_get", "jobId")),
    route("/jobs/{id}/cancel", Verb::Post, id("job_cancel", "jobId")),
    route(
        "/jobs/{id}/deliveries",
        Verb::Get,
        id("job_deliveries", "jobId"),
    ),
    route("/messages/history", Verb::Get, op("message_history")),
    route("/messages/{id}", Verb::Get, id("get_message", "messageId")),
    // Sign-in sessions (seed 003 "Sessions").
    route("/sessions", Verb::Get, op("sign_in_list")),
    route(
        "/sessions/{id}/terminate",
        Verb::Post,
        id("sign_in_terminate", "sessionId"),
    ),
    // Permission approvals (what agents of `grantPermission: ask` teams wait for).
    route("/approvals", Verb::Get, op("approval_list")),
    route(
        "/approvals/{id}",
        Verb::Get,
        id("approval_get", "approvalId"),
    ),
    route(
        "/approvals/{id}",
        Verb::Post,
        id("approval_decide", "approvalId"),
    ),
    // Administration (seed 000 keys, seed 003 users and audit logs).
    route("/admin/keys", Verb::Get, op("key_list")),
    route("/admin/keys", Verb::Post, op("key_create")),
    route("/admin/keys/{id}", Verb::Delete, id("key_revoke", "key")),
    route(
        "/admin/keys/{id}/revoke",
        Verb::Post,
        id("key_revoke", "key"),
    ),
    route(
        "/admin/keys/{id}/rotate",
        Verb::Post,
        id("key_rotate", "key"),
    ),
    route("/admin/users", Verb::Get, op("user_list")),
    route("/admin/users", Verb::Post, op("user_create")),
    route("/admin/users/{id}", Verb::Patch, id("user_update", "user")),
    route(
        "/admin/users/{id}/roles",
        Verb::Put,
        id("user_update", "user"),
    ),
    route(
        "/admin/users/{id}/password",
        Verb::Post,
        id("user_reset_password", "user"),
    ),
    // Webhook subscriptions (seed 003 "Webhooks").
    route("/admin/webhooks", Verb::Get, op("webhook_list")),
    route("/admin/webhooks", Verb::Post, op("webhook_create")),
    route(
        "/admin/webhooks/{id}",
        Verb::Get,
        id("webhook_get", "webhookId"),
    ),
    route(
        "/admin/webhooks/{id}",
        Verb::Patch,
        id("webhook_update", "webhookId"),
    ),
    route(
        "/admin/webhooks/{id}",
        Verb::Put,
        id("webhook_update", "webhookId"),
    ),
    route(
        "/admin/webhooks/{id}",
        Verb::Delete,
        id("webhook_delete", "webhookId"),
    ),
    route(
        "/admin/webhooks/{id}/deliveries",
        Verb::Get,
        id("webhook_deliveries", "webhookId"),
    ),
    route(
        "/admin/webhook-deliveries/{id}/redeliver",
        Verb::Post,
        id("webhook_redeliver", "deliveryId"),
    ),
    route(
        "/admin/users/{id}/mfa/reset",
        Verb::Post,
        id("user_reset_mfa", "user"),
    ),
    route("/admin/audit-logs", Verb::Get, op("audit_list")),
    route("/admin/audit-logs/verify", Verb::Get, op("audit_verify")),
];

/// The route calling one operation, and its success status.
#[derive(Clone, Copy)]
struct OpRoute(Spec, &'static Operation, axum::http::StatusCode);

impl OpRoute {
    async fn answer(
        self,
        state: AppState,
        who: Caller,
        req: Request,
    ) -> Result<Response, ApiError> {
        let OpRoute(spec, operation, status) = self;
        let ctx = who.ctx()?;
        let (mut parts, body) = req.into_parts();
        // Only routes with segments read them (a bad one is a 400).
        let segments = match (spec.team, spec.id) {
            (None, None) => Vec::new(),
            _ => segments(&mut parts, &state).await?,
        };
        let query = match parts.uri.query() {
            Some(_) => Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
                .map(|q| q.0)
                .map_err(|e| who.fail(IrisError::validation("query", e.body_text())))?,
            None => Vec::new(),
        };
        let Body(body) = read_body(body, &state, Some(&who.request_id)).await?;
        let mut params = self
            .params(&segments, query, &body)
            .map_err(|e| who.fail(e))?;
        for (header, field) in HEADER_PARAMS {
            if let Some(v) = parts.headers.get(*header)
                && operation.params_schema["properties"].get(*field).is_some()
            {
                let v = v.to_str().map_err(|_| {
                    who.fail(IrisError::validation(
                        field,
                        "the header is not visible ASCII",
                    ))
                })?;
                // Given twice, the two must agree: which one counts would
                // otherwise be a guess.
                if params
                    .get(*field)
                    .is_some_and(|b| !b.is_null() && b.as_str() != Some(v))
                {
                    return Err(who.fail(IrisError::validation(
                        field,
                        format!("the {header} header and the body's {field} differ; give one, or the same in both"),
                    )));
                }
                params[*field] = json!(v);
            }
        }
        let text = state
            .iris
            .dispatch_text(ctx, operation, params)
            .await
            .map_err(|e| who.fail(e))?;
        Ok((status, [(header::CONTENT_TYPE, "application/json")], text).into_response())
    }

    /// The operation's parameters: the body's object, the query's values
    /// typed by the schema, and the path segments.
    fn params(
        self,
        segments: &[(String, String)],
        query: Vec<(String, String)>,
        body: &axum::body::Bytes,
    ) -> Result<Value, IrisError> {
        let OpRoute(spec, operation, _) = self;
        let mut params = body_object(body)?;
        add_query(&mut params, operation, query);
        let segment = |name: &str| segments.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        if let (Some(field), Some(v)) = (spec.team, segment("team")) {
            params.insert(field.to_owned(), json!(v));
        }
        if let (Some(field), Some(v)) = (spec.id, segment("id")) {
            params.insert(field.to_owned(), json!(v));
        }
        Ok(Value::Object(params))
    }
}

impl Verb {
    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::PostOrDelete => MethodFilter::POST.or(MethodFilter::DELETE),
            Verb::Delete => MethodFilter::DELETE,
            Verb::Put => MethodFilter::PUT,
            Verb::Patch => MethodFilter::PATCH,
        }
    }

    pub fn methods(self) -> &'static [&'static str] {
        match self {
            Verb::Get => &["get"],
            Verb::Post => &["post"],
            Verb::PostOrDelete => &["post", "delete"],
            Verb::Delete => &["delete"],
            Verb::Put => &["put"],
            Verb::Patch => &["patch"],
        }
    }
}

/// The routes under `prefix` (`/api/v1`, `/api`). Each route's operation
/// is looked up here, once: one the registry lacks stops the server at
/// start.
pub fn routes(prefix: &str) -> anyhow::Result<Router<AppState>> {
    let mut router = Router::new();
    for r in ROUTES {
        let operation = iris_core::registry()
            .get(r.spec.op)
            .ok_or_else(|| anyhow::anyhow!("route {}: no operation `{}`", r.path, r.spec.op))?;
        let status = axum::http::StatusCode::from_u16(r.status)
            .map_err(|e| anyhow::anyhow!("route {}: {e}", r.path))?;
        let op = OpRoute(r.spec, operation, status);
        let handler = move |State(state): State<AppState>, who: Caller, req: Request| {
            op.answer(state, who, req)
        };
        router = router.route(&format!("{prefix}{}", r.path), on(r.verb.filter(), handler));
    }
    // Seed 003: the tool registry.
    use super::system::{describe_tool, execute_tool, list_tools};
    Ok(router
        .route(&format!("{prefix}/tools"), get(list_tools))
        .route(&format!("{prefix}/tools/{{name}}"), get(describe_tool))
        .route(
            &format!("{prefix}/tools/{{name}}/execute"),
            post(execute_tool),
        ))
}
