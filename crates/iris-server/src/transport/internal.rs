//! `POST /internal/v1/dispatch`: a call another node of the cluster
//! forwards to this one, which owns the call's team (docs/scale-out.md).
//! Not for clients: it answers only a body signed with `cluster.secret`
//! (the gate lets it through without a credential; the signature is the
//! credential), and it runs the operation for the caller the forwarding
//! node authenticated.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use iris_core::auth::{Origin, Principal};
use iris_core::ownership::{DISPATCH_PATH, SIGNATURE_HEADER};
use iris_core::{Ctx, ErrorKind, IrisError};
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route(DISPATCH_PATH, post(dispatch))
}

/// What a forwarding node sends.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Forwarded {
    operation: String,
    #[serde(default)]
    params: Value,
    principal: Principal,
    #[serde(default)]
    ip: Option<String>,
    #[serde(default)]
    request_id: Option<String>,
}

async fn dispatch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let iris = &state.iris;
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !iris.ownership().verify(signature, &body) {
        return Err(ApiError::maybe(
            // 403, not 401: no credential a client could add opens it.
            IrisError::new(
                ErrorKind::Forbidden,
                "not a call from a node of this cluster (missing or wrong signature)",
            ),
            None,
        ));
    }
    let call: Forwarded = serde_json::from_slice(&body).map_err(|e| {
        ApiError::maybe(
            IrisError::new(ErrorKind::MalformedJson, format!("a forwarded call: {e}")),
            None,
        )
    })?;
    let origin = Origin {
        ip: call.ip.and_then(|ip| ip.parse().ok()),
        user_agent: Some(Arc::from("iris-node")),
        request_id: call.request_id.map(Arc::from),
    };
    let mut ctx = Ctx::new(Arc::new(call.principal), origin);
    ctx.forwarded = true;
    iris.dispatch(ctx, &call.operation, call.params)
        .await
        .map(Json)
        .map_err(|e| ApiError::maybe(e, None))
}
