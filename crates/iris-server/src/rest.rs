//! REST under `/api/v1` (and the same under `/api`): a table from routes to
//! operations. Each entry says which operation, which path segment fills
//! which parameter, and whether the rest comes from the query or the body.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{MethodFilter, MethodRouter, get, on, post};
use axum::{Extension, Json, Router};
use iris_core::IrisError;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::params::{add_query, body_object};
use crate::request::RequestId;
use crate::{AppState, auth};

/// How one route calls one operation.
#[derive(Clone, Copy)]
struct Spec {
    op: &'static str,
    /// The operation parameter that `:team` in the path fills.
    team: Option<&'static str>,
    /// The operation parameter that `:id` in the path fills.
    id: Option<&'static str>,
    /// Seed field names mapped to operation parameters (`question` → `message`).
    renames: &'static [(&'static str, &'static str)],
}

const fn spec(op: &'static str) -> Spec {
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

async fn call(
    spec: Spec,
    state: AppState,
    rid: RequestId,
    headers: HeaderMap,
    path: HashMap<String, String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let fail = |e: IrisError| ApiError::new(e, &rid);
    let ctx = auth::caller(&state, &headers, &rid).map_err(fail)?;
    let mut params = body_object(&body).map_err(fail)?;
    let Query(query) = query.map_err(|e| fail(IrisError::validation("query", e.body_text())))?;
    add_query(&mut params, spec.op, query);
    for (from, to) in spec.renames {
        if let Some(v) = params.remove(*from) {
            params.entry(to.to_string()).or_insert(v);
        }
    }
    if let (Some(field), Some(v)) = (spec.team, path.get("team")) {
        params.insert(field.to_owned(), json!(v));
    }
    if let (Some(field), Some(v)) = (spec.id, path.get("id")) {
        params.insert(field.to_owned(), json!(v));
    }
    state
        .iris
        .dispatch(ctx, spec.op, Value::Object(params))
        .await
        .map(Json)
        .map_err(fail)
}

/// The route calling `spec` for the methods in `filter`.
fn on_methods(filter: MethodFilter, spec: Spec) -> MethodRouter<AppState> {
    on(
        filter,
        move |State(state): State<AppState>,
              Extension(rid): Extension<RequestId>,
              headers: HeaderMap,
              Path(path): Path<HashMap<String, String>>,
              query: Result<Query<Vec<(String, String)>>, QueryRejection>,
              body: Bytes| call(spec, state, rid, headers, path, query, body),
    )
}

fn on_post(s: Spec) -> MethodRouter<AppState> {
    on_methods(MethodFilter::POST, s)
}

fn on_get(s: Spec) -> MethodRouter<AppState> {
    on_methods(MethodFilter::GET, s)
}

/// POST and DELETE (seed 000 uses DELETE, seed 001 POST).
fn on_post_or_delete(s: Spec) -> MethodRouter<AppState> {
    on_methods(MethodFilter::POST.or(MethodFilter::DELETE), s)
}

pub fn routes() -> Router<AppState> {
    const ASK: Spec = Spec {
        op: "ask_message",
        team: Some("toTeam"),
        id: None,
        renames: &[("question", "message")],
    };
    Router::new()
        // Seed 000/001: one route per tool.
        .route("/teams/tell", on_post(spec("send_message")))
        .route("/teams/ask", on_post(spec("ask_message")))
        .route("/teams/quick-tell", on_post(spec("quick_message")))
        .route("/teams/wake-all", on_post(spec("team_wake_all")))
        .route("/teams", on_get(spec("list_teams")))
        .route("/teams/status", on_get(spec("team_status")))
        .route("/teams/{team}/wake", on_post(team("team_wake", "team")))
        .route("/teams/{team}/launch", on_post(team("team_launch", "team")))
        .route("/teams/{team}/sleep", on_post(team("team_sleep", "team")))
        .route(
            "/teams/{team}/cancel",
            on_post(team("session_cancel", "toTeam")),
        )
        .route(
            "/teams/{team}/fork",
            on_post(team("session_fork", "toTeam")),
        )
        .route(
            "/teams/{team}/reboot",
            on_post_or_delete(team("session_reboot", "toTeam")),
        )
        .route(
            "/teams/{team}/delete",
            on_post_or_delete(team("session_delete", "toTeam")),
        )
        .route("/teams/{team}/status", on_get(team("team_status", "team")))
        .route(
            "/teams/{team}/report",
            on_get(team("session_report", "toTeam")),
        )
        .route("/logs", on_get(spec("get_logs")))
        .route("/date", on_get(spec("get_date")))
        .route("/status", on_get(spec("get_status")))
        // Seed 002: the programmatic API.
        .route("/teams/{team}/ask", on_post(ASK))
        .route("/messages/history", on_get(spec("message_history")))
        .route(
            "/messages/{id}",
            on_get(Spec {
                op: "get_message",
                team: None,
                id: Some("messageId"),
                renames: &[],
            }),
        )
        // Seed 003: the tool registry.
        .route("/tools", get(crate::system::list_tools))
        .route("/tools/{name}", get(crate::system::describe_tool))
        .route("/tools/{name}/execute", post(crate::system::execute_tool))
}
