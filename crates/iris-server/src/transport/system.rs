//! Routes outside the REST table: health, readiness, metrics, and the tool
//! registry (`/api/v1/tools…`).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use iris_core::auth::scope;
use iris_core::{IrisError, registry};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::gate::caller::{Caller, RequestId};
use crate::params::{Object, Segment};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/health", get(health))
        .route("/health/detailed", get(health_detailed))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
}

async fn healthz() -> Json<Value> {
    Json(json!({"ok": true}))
}

async fn health(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "uptime": state.iris.health().uptime,
        "version": env!("CARGO_PKG_VERSION"),
        "timestamp": iris_core::now_ms(),
    }))
}

async fn health_detailed(State(state): State<AppState>, who: Caller) -> Response {
    // Team names and queue sizes are not for every caller.
    if let Err(e) = who.require(&state, scope::PROCESSES_READ, "/health/detailed") {
        return e.into_response();
    }
    let iris = &state.iris;
    let db = iris.ping_database().await;
    let h = iris.health();
    let healthy = db.is_ok();
    let cluster = cluster_status(iris).await;
    let redis_down = cluster["redis"]["up"] == false;
    let body = json!({
        "status": if healthy && !redis_down { "ok" } else { "degraded" },
        "node": iris.node().id(),
        "cluster": cluster,
        "sandbox": iris.pool().sandbox().status(),
        "database": {
            "ok": healthy,
            "backend": iris.store().backend(),
            "latencyMs": db.as_ref().ok().map(|d| d.as_secs_f64() * 1000.0),
            "pool": iris.store().pool_state(),
        },
        "processes": {"total": h.total_processes, "max": h.max_processes, "byState": h.processes_by_state},
        "queues": h.queues,
        "bus": {"droppedSubscribers": h.dropped_subscribers},
        "uptime": h.uptime,
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

/// This node and its cluster: members from the database (none listed
/// when it does not answer), the Redis link as this node sees it.
async fn cluster_status(iris: &iris_core::Iris) -> Value {
    match iris.node().status().await {
        Ok(status) => json!(status),
        Err(e) => json!({
            "node": iris.node().id(),
            "redis": iris.node().redis(),
            "members": [],
            "error": e.message,
        }),
    }
}

/// Ready while the database answers. A node whose Redis is down still
/// serves (alone: events of other nodes, cluster-wide limits and notices
/// wait for Redis), so it stays ready and says so.
async fn ready(State(state): State<AppState>, rid: RequestId) -> Result<Json<Value>, ApiError> {
    match state.iris.ping_database().await {
        Ok(_) => Ok(Json(match state.iris.node().redis() {
            // The reason is for /health/detailed: this route is public.
            Some(r) if !r.link.up => json!({
                "ready": true,
                "degraded": ["redis"],
                "redis": {"up": false, "since": r.link.since},
            }),
            Some(_) => json!({"ready": true, "redis": {"up": true}}),
            None => json!({"ready": true}),
        })),
        Err(_) => Err(ApiError::new(
            IrisError::new(
                iris_core::ErrorKind::ServiceUnavailable,
                "the database is not reachable",
            ),
            &rid,
        )),
    }
}

pub async fn list_tools(who: Caller) -> Result<Json<Value>, ApiError> {
    let ctx = who.ctx()?;
    let tools: Vec<Value> = registry()
        .visible_to(&ctx.principal)
        .map(|o| o.describe())
        .collect();
    Ok(Json(json!({"tools": tools, "count": tools.len()})))
}

pub async fn describe_tool(who: Caller, Segment(name): Segment) -> Result<Json<Value>, ApiError> {
    who.ctx()?;
    registry()
        .get(&name)
        .map(|o| Json(o.describe()))
        .ok_or_else(|| who.fail(IrisError::not_found(format!("no tool `{name}`"))))
}

/// `POST /tools/:name/execute {parameters}` (seed 003); the body itself is
/// taken as the parameters when it has no `parameters` field.
pub async fn execute_tool(
    State(state): State<AppState>,
    who: Caller,
    Segment(name): Segment,
    Object(mut req): Object,
) -> Result<Json<Value>, ApiError> {
    let ctx = who.ctx()?;
    let params = match req.remove("parameters") {
        Some(p) => p,
        None => Value::Object(req),
    };
    let started = std::time::Instant::now();
    let result = state
        .iris
        .dispatch(ctx, &name, params)
        .await
        .map_err(|e| who.fail(e))?;
    Ok(Json(json!({
        "tool": name,
        "result": result,
        "executionTime": started.elapsed().as_millis() as u64,
        "timestamp": iris_core::now_ms(),
    })))
}

/// `GET /metrics` in the Prometheus text format; gauges of the pool and
/// the bus are read at scrape time.
async fn metrics(State(state): State<AppState>, who: Caller) -> Response {
    if let Err(e) = who.require(&state, scope::PROCESSES_READ, "/metrics") {
        return e.into_response();
    }
    let h = state.iris.health();
    for s in ["spawning", "ready", "busy", "stopping", "stopped", "failed"] {
        let n = h.processes_by_state.get(s).copied().unwrap_or(0);
        metrics::gauge!("iris_processes", "state" => s).set(n as f64);
    }
    for (team, depth) in h.queues {
        metrics::gauge!("iris_queue_depth", "team" => team).set(depth as f64);
    }
    metrics::gauge!("iris_bus_dropped_subscribers").set(h.dropped_subscribers as f64);
    let node = state.iris.node();
    metrics::gauge!("iris_node_info", "node" => node.id().to_owned()).set(1.0);
    if let Some(r) = node.redis() {
        metrics::gauge!("iris_cluster_redis_up").set(if r.link.up { 1.0 } else { 0.0 });
        metrics::gauge!("iris_cluster_lost_publications").set(r.lost as f64);
    }
    if let Ok(status) = node.status().await {
        for s in ["up", "down", "stopped"] {
            let n = status.members.iter().filter(|m| m.state == s).count();
            metrics::gauge!("iris_cluster_members", "state" => s).set(n as f64);
        }
    }
    metrics::gauge!("iris_open_connections", "transport" => "websocket").set(
        state
            .ws_connections
            .load(std::sync::atomic::Ordering::Relaxed) as f64,
    );
    metrics::gauge!("iris_open_connections", "transport" => "sse")
        .set(state.sse_streams.load(std::sync::atomic::Ordering::Relaxed) as f64);
    let body = crate::gate::metrics::handle()
        .map(|h| h.render())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
