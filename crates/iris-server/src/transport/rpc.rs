//! `POST /rpc {method, params}` (seed 004): any operation by name.

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use iris_core::IrisError;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::gate::caller::Caller;
use crate::params::Object;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/rpc", post(rpc))
}

/// `POST /rpc {method, params}`: any operation by name (seed 004).
async fn rpc(
    State(state): State<AppState>,
    who: Caller,
    Object(mut req): Object,
) -> Result<Json<Value>, ApiError> {
    let ctx = who.ctx()?;
    let Some(Value::String(method)) = req.remove("method") else {
        return Err(who.fail(IrisError::validation(
            "method",
            "a string naming the operation is required",
        )));
    };
    let params = req.remove("params").unwrap_or_else(|| json!({}));
    state
        .iris
        .dispatch(ctx, &method, params)
        .await
        .map(Json)
        .map_err(|e| who.fail(e))
}
