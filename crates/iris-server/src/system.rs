//! Routes outside the REST table: health, readiness, `/rpc`, and the tool
//! registry (`/api/v1/tools…`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use iris_core::{IrisError, registry};
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::params::{Body, body_object};
use crate::request::RequestId;
use crate::routing::{Routes, Segment};
use crate::{AppState, auth};

pub fn routes() -> Routes {
    Routes::new()
        .get("/healthz", healthz)
        .get("/health", health)
        .get("/health/detailed", health_detailed)
        .get("/ready", ready)
        .post("/rpc", rpc)
        .get("/metrics", crate::metrics::render)
}

async fn healthz() -> Json<Value> {
    Json(json!({"ok": true}))
}

async fn health(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "uptime": iris_core::now_ms() - state.iris.started_at,
        "version": env!("CARGO_PKG_VERSION"),
        "timestamp": iris_core::now_ms(),
    }))
}

async fn health_detailed(State(state): State<AppState>, rid: RequestId, who: Caller) -> Response {
    // Team names and queue sizes are not for anonymous callers.
    if let Err(e) = auth::require(
        &state,
        &who,
        &rid,
        iris_core::auth::scope::PROCESSES_READ,
        "/health/detailed",
    ) {
        return e.into_response();
    }
    let iris = &state.iris;
    let db = iris.store.ping().await;
    let processes = iris.pool.processes();
    let mut by_state = serde_json::Map::new();
    for p in &processes {
        let n = by_state.get(&p.state).and_then(Value::as_u64).unwrap_or(0);
        by_state.insert(p.state.clone(), json!(n + 1));
    }
    let queues: serde_json::Map<String, Value> = iris
        .teams()
        .iter()
        .map(|t| {
            let q: usize = processes
                .iter()
                .filter(|p| p.team == t.name)
                .map(|p| p.queued)
                .sum();
            (t.name.clone(), json!(q))
        })
        .collect();
    let healthy = db.is_ok();
    let body = json!({
        "status": if healthy { "ok" } else { "degraded" },
        "database": match &db {
            Ok(d) => json!({"ok": true, "latencyMs": d.as_secs_f64() * 1000.0}),
            Err(_) => json!({"ok": false}),
        },
        "processes": {"total": processes.len(), "max": iris.config.settings.max_processes, "byState": by_state},
        "queues": queues,
        "bus": {"droppedSubscribers": iris.bus.dropped_subscribers()},
        "uptime": iris_core::now_ms() - iris.started_at,
        "version": env!("CARGO_PKG_VERSION"),
        "timestamp": iris_core::now_ms(),
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn ready(State(state): State<AppState>, rid: RequestId) -> Result<Json<Value>, ApiError> {
    match state.iris.store.ping().await {
        Ok(_) => Ok(Json(json!({"ready": true}))),
        Err(_) => Err(ApiError::new(
            IrisError::new(
                iris_core::ErrorKind::ServiceUnavailable,
                "the database is not reachable",
            ),
            &rid,
        )),
    }
}

/// `POST /rpc {method, params}`: any operation by name (seed 004).
async fn rpc(
    State(state): State<AppState>,
    rid: RequestId,
    who: Caller,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let fail = |e: IrisError| ApiError::new(e, &rid);
    let ctx = auth::caller(&state, &who).map_err(fail)?;
    let mut req = body_object(&body).map_err(fail)?;
    let method = match req.remove("method") {
        Some(Value::String(m)) => m,
        _ => {
            return Err(fail(IrisError::validation(
                "method",
                "a string naming the operation is required",
            )));
        }
    };
    let params = req.remove("params").unwrap_or_else(|| json!({}));
    state
        .iris
        .dispatch(ctx, &method, params)
        .await
        .map(Json)
        .map_err(fail)
}

pub async fn list_tools(
    State(state): State<AppState>,
    rid: RequestId,
    who: Caller,
) -> Result<Json<Value>, ApiError> {
    let ctx = auth::caller(&state, &who).map_err(|e| ApiError::new(e, &rid))?;
    let tools: Vec<Value> = registry()
        .all()
        .iter()
        .filter(|o| o.scope.is_none_or(|s| ctx.principal.allows(s)))
        .map(|o| o.describe())
        .collect();
    Ok(Json(json!({"tools": tools, "count": tools.len()})))
}

pub async fn describe_tool(
    State(state): State<AppState>,
    rid: RequestId,
    who: Caller,
    Segment(name): Segment,
) -> Result<Json<Value>, ApiError> {
    auth::caller(&state, &who).map_err(|e| ApiError::new(e, &rid))?;
    registry()
        .get(&name)
        .map(|o| Json(o.describe()))
        .ok_or_else(|| ApiError::new(IrisError::not_found(format!("no tool `{name}`")), &rid))
}

/// `POST /tools/:name/execute {parameters}` (seed 003); the body itself is
/// taken as the parameters when it has no `parameters` field.
pub async fn execute_tool(
    State(state): State<AppState>,
    rid: RequestId,
    who: Caller,
    Segment(name): Segment,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let fail = |e: IrisError| ApiError::new(e, &rid);
    let ctx = auth::caller(&state, &who).map_err(fail)?;
    let mut req = body_object(&body).map_err(fail)?;
    let params = match req.remove("parameters") {
        Some(p) => p,
        None => Value::Object(req),
    };
    let started = std::time::Instant::now();
    let result = state
        .iris
        .dispatch(ctx, &name, params)
        .await
        .map_err(fail)?;
    Ok(Json(json!({
        "tool": name,
        "result": result,
        "executionTime": started.elapsed().as_millis() as u64,
        "timestamp": iris_core::now_ms(),
    })))
}
