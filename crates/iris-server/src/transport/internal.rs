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
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use iris_core::auth::{Origin, Principal};
use iris_core::ownership::{DISPATCH_PATH, SIGNATURE_HEADER};
use iris_core::{Ctx, ErrorKind, Follower, Iris, IrisError, now_ms};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

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
    /// The forwarding node follows the turns the call starts: name each
    /// as it starts, a line of JSON each, then the result (or the error).
    #[serde(default)]
    watch: bool,
}

async fn dispatch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
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
    if call.watch {
        return Ok(watched(iris.clone(), ctx, call.operation, call.params));
    }
    iris.dispatch(ctx, &call.operation, call.params)
        .await
        .map(|v| Json(v).into_response())
        .map_err(|e| ApiError::maybe(e, None))
}

/// Run a forwarded call whose caller follows its turns: the answer is a
/// line of JSON per turn as it starts (`{"turn": id}`), then `{"result":
/// …}` or `{"error": <error body>}`. The call goes on if the forwarding
/// node leaves (a turn is durable).
fn watched(iris: Arc<Iris>, mut ctx: Ctx, operation: String, params: Value) -> Response {
    let (watch, mut turns) = mpsc::unbounded_channel::<Follower>();
    ctx.watch = Some(watch);
    let (lines, out) = mpsc::unbounded_channel::<Bytes>();
    let line = |v: Value| Bytes::from(format!("{v}\n"));
    tokio::spawn(async move {
        let rid = ctx.request_id().map(str::to_owned);
        let call = iris.dispatch(ctx, &operation, params);
        tokio::pin!(call);
        let end = loop {
            tokio::select! {
                end = &mut call => break end,
                Some(f) = turns.recv() => {
                    let _ = lines.send(line(json!({"turn": f.message_id()})));
                }
            }
        };
        while let Ok(f) = turns.try_recv() {
            let _ = lines.send(line(json!({"turn": f.message_id()})));
        }
        let _ = lines.send(line(match end {
            Ok(v) => json!({"result": v}),
            Err(e) => json!({"error": e.body(rid.as_deref(), now_ms())}),
        }));
    });
    let body = futures_util::stream::unfold(out, |mut out| async move {
        out.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), out))
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}
