//! `POST /rpc {method, params}` (seed 004): any operation by name.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use iris_core::IrisError;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;
use crate::gate::caller::{Caller, RequestId};
use crate::params::{Body, body_object};

pub fn routes() -> Router<AppState> {
    Router::new().route("/rpc", post(rpc))
}

/// `POST /rpc {method, params}`: any operation by name (seed 004).
async fn rpc(
    State(state): State<AppState>,
    rid: RequestId,
    who: Caller,
    Body(body): Body,
) -> Result<Json<Value>, ApiError> {
    let fail = |e: IrisError| ApiError::new(e, &rid);
    let ctx = who.ctx()?;
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
