//! REST under `/api/v1` (and the same under `/api`): a table from routes to
//! operations. Each entry says which operation, which path segment fills
//! which parameter, and whether the rest comes from the query or the body.

use std::future::Future;

use axum::extract::{Query, Request};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use iris_core::IrisError;
use iris_core::registry::Operation;
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::params::{Body, add_query, body_object, read_body};
use crate::routing::{PathParams, Routes};
use crate::{AppState, auth};

/// How one route calls one operation.
#[derive(Clone, Copy)]
pub(crate) struct Spec {
    pub op: &'static str,
    /// The operation parameter that `{team}` in the path fills.
    pub team: Option<&'static str>,
    /// The operation parameter that `{id}` in the path fills.
    pub id: Option<&'static str>,
    /// Seed field names mapped to operation parameters (`question` → `message`).
    pub renames: &'static [(&'static str, &'static str)],
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
}

const fn op(op: &'static str) -> Spec {
    Spec {
        op,
        team: None,
        id: None,
        renames: &[],
    }
}

const fn team(op: &'static str, field: &'static str) -> Spec {
    Spec {
        op,
        team: Some(field),
        id: None,
        renames: &[],
    }
}

const fn id(op: &'static str, field: &'static str) -> Spec {
    Spec {
        op,
        team: None,
        id: Some(field),
        renames: &[],
    }
}

const fn route(path: &'static str, verb: Verb, spec: Spec) -> Route {
    Route { path, verb, spec }
}

/// Every REST route of seeds 000-003, each a call of one operation.
pub(crate) const ROUTES: &[Route] = &[
    // Seed 000/001: one route per tool.
    route("/teams/tell", Verb::Post, op("send_message")),
    route("/teams/ask", Verb::Post, op("ask_message")),
    route("/teams/quick-tell", Verb::Post, op("quick_message")),
    route("/teams/wake-all", Verb::Post, op("team_wake_all")),
    route("/teams", Verb::Get, op("list_teams")),
    route("/teams/status", Verb::Get, op("team_status")),
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
    route("/logs", Verb::Get, op("get_logs")),
    route("/date", Verb::Get, op("get_date")),
    route("/status", Verb::Get, op("get_status")),
    route("/cache/{id}", Verb::Get, id("session_report", "sessionId")),
    route(
        "/cache/{id}",
        Verb::Delete,
        id("session_delete", "sessionId"),
    ),
    // Seed 002: the programmatic API.
    route(
        "/teams/{team}/ask",
        Verb::Post,
        Spec {
            op: "ask_message",
            team: Some("toTeam"),
            id: None,
            renames: &[("question", "message")],
        },
    ),
    route("/messages/history", Verb::Get, op("message_history")),
    route("/messages/{id}", Verb::Get, id("get_message", "messageId")),
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
    route("/admin/audit-logs", Verb::Get, op("audit_list")),
    route("/admin/audit-logs/verify", Verb::Get, op("audit_verify")),
];

/// The route calling one operation. It reads what it needs from the
/// request itself (caller, path segments, query, body) rather than through
/// six extractors, each with its own future and copies, and runs inside
/// the gate's future: these are the API's busiest routes.
#[derive(Clone, Copy)]
struct OpRoute(Spec, &'static Operation);

/// What an operation route keeps of its request (see
/// [`crate::gate::gate`]): the decoded path segments, the query's pairs (or
/// why they could not be read) and the body, not the head.
struct Taken {
    segments: Option<PathParams>,
    query: Result<Vec<(String, String)>, String>,
    body: axum::body::Body,
}

impl OpRoute {
    fn take(req: Request) -> Taken {
        let (mut parts, body) = req.into_parts();
        let query = match parts.uri.query() {
            Some(_) => Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
                .map(|q| q.0)
                .map_err(|e| e.body_text()),
            None => Ok(Vec::new()),
        };
        Taken {
            segments: parts.extensions.remove::<PathParams>(),
            query,
            body,
        }
    }

    /// Not an `async fn`: a wrapper future would hold the arguments next
    /// to the inner one, and the whole future is moved several times on
    /// its way into the gate's box.
    fn answer(
        self,
        taken: Taken,
        state: AppState,
        who: Caller,
    ) -> impl Future<Output = Response> + Send + 'static {
        use futures_util::FutureExt;
        self.run(taken, state, who)
            .map(|r| r.unwrap_or_else(IntoResponse::into_response))
    }

    /// Kept small: an async function's body is one piece of code however
    /// rarely its parts run, so what is not awaited lives in [`Self::params`].
    async fn run(self, taken: Taken, state: AppState, who: Caller) -> Result<Response, ApiError> {
        let OpRoute(_, operation) = self;
        let ctx = auth::caller(&state, &who).map_err(|e| ApiError::new(e, &who.request_id))?;
        let rid = who.request_id.clone();
        drop(who);
        let Taken {
            segments,
            query,
            body,
        } = taken;
        let Body(body) = read_body(body, &state, Some(&rid)).await?;
        let params = self
            .params(segments, query, &body)
            .map_err(|e| ApiError::new(e, &rid))?;
        drop(body);
        match state.iris.dispatch_text(ctx, operation, params).await {
            Ok(text) => Ok(json_text(text)),
            Err(e) => Err(ApiError::new(e, &rid)),
        }
    }

    /// The operation's parameters: the body's object, the query's values
    /// typed by the schema, the renamed seed fields and the path segments.
    #[inline(never)]
    fn params(
        self,
        segments: Option<PathParams>,
        query: Result<Vec<(String, String)>, String>,
        body: &axum::body::Bytes,
    ) -> Result<Value, IrisError> {
        let OpRoute(spec, operation) = self;
        let query = query.map_err(|e| IrisError::validation("query", e))?;
        let mut params = body_object(body)?;
        add_query(&mut params, operation, query);
        for (from, to) in spec.renames {
            if let Some(v) = params.remove(*from) {
                params.entry(to.to_string()).or_insert(v);
            }
        }
        let segment = |name| segments.as_ref().and_then(|p| p.get(name));
        if let (Some(field), Some(v)) = (spec.team, segment("team")) {
            params.insert(field.to_owned(), json!(v));
        }
        if let (Some(field), Some(v)) = (spec.id, segment("id")) {
            params.insert(field.to_owned(), json!(v));
        }
        Ok(Value::Object(params))
    }
}

/// A JSON body that is already text, with its headers copied from a ready
/// map (the gate adds its own on the way out).
fn json_text(body: Vec<u8>) -> Response {
    let mut resp = Response::new(axum::body::Body::from(body));
    *resp.headers_mut() = crate::request::json_headers();
    resp
}

impl Verb {
    pub fn http(self) -> &'static [Method] {
        match self {
            Verb::Get => &[Method::GET],
            Verb::Post => &[Method::POST],
            Verb::PostOrDelete => &[Method::POST, Method::DELETE],
            Verb::Delete => &[Method::DELETE],
            Verb::Put => &[Method::PUT],
            Verb::Patch => &[Method::PATCH],
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

/// The routes under `prefix` (`/api/v1`, `/api`): spelled out rather than
/// nested, so a request is routed once. Each route's operation is looked
/// up here, once: one the registry lacks stops the server at start.
pub fn routes(prefix: &str) -> anyhow::Result<Routes> {
    let mut router = Routes::new();
    for r in ROUTES {
        let operation = iris_core::registry::registry()
            .get(r.spec.op)
            .ok_or_else(|| anyhow::anyhow!("route {}: no operation `{}`", r.path, r.spec.op))?;
        let op = OpRoute(r.spec, operation);
        router = router.call(
            &format!("{prefix}{}", r.path),
            r.verb.http(),
            OpRoute::take,
            move |taken, state, who| op.answer(taken, state, who),
        );
    }
    Ok(router
        // Seed 003: the tool registry, and the API's own description.
        .get(&format!("{prefix}/tools"), crate::system::list_tools)
        .get(
            &format!("{prefix}/tools/{{name}}"),
            crate::system::describe_tool,
        )
        .post(
            &format!("{prefix}/tools/{{name}}/execute"),
            crate::system::execute_tool,
        )
        .get(&format!("{prefix}/openapi.json"), crate::openapi::document)
        .get(&format!("{prefix}/docs"), crate::openapi::page)
        .get(&format!("{prefix}/docs/app.js"), crate::openapi::script))
}
