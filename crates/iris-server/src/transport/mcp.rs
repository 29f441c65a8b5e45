//! `/mcp`: MCP over Streamable HTTP, rmcp's tower service (built by
//! `iris_mcp::http_service`) mounted behind the gate like every route, so
//! it has the same keys and tokens (401 with `WWW-Authenticate: Bearer`
//! without one), Host and Origin checks, body cap, rate limits and audit.
//! Added here: the caller (the gate's [`Caller`] as the [`iris_core::Ctx`]
//! the MCP handler runs each request as), and the errors of a POST body
//! that is no JSON-RPC message at all, which rmcp answers with a plain-text
//! 415: here they get 400 with the JSON-RPC error of the one table
//! (-32700 for a body that is not JSON; -32600 for a batch, which neither
//! revision takes, or an object without `"jsonrpc": "2.0"`), as the
//! Streamable HTTP transport asks (2025-11-25 §Transports: "an HTTP error
//! status code … MAY comprise a JSON-RPC error response that has no id").

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use iris_core::{ErrorKind, IrisError, now_ms};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;

use crate::params::{Body, read_body};
use crate::serve::FINISHING;
use crate::{AppState, Caller};

pub fn routes(state: &AppState) -> Router<AppState> {
    // MCP sessions (and their GET streams) end when the server stops.
    let stop = CancellationToken::new();
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let (lifecycle, stop) = (state.lifecycle.clone(), stop.clone());
        runtime.spawn(async move {
            lifecycle.reached(FINISHING).await;
            stop.cancel();
        });
    }
    let api = &state.iris.config.api;
    let mcp = iris_mcp::http_service(state.iris.clone(), api.max_body_bytes, stop);
    let service = ServiceBuilder::new()
        .layer(axum::middleware::from_fn_with_state(state.clone(), message))
        .map_request(with_ctx)
        .service(mcp);
    Router::new().route_service("/mcp", service)
}

/// The gate's caller as the core's context, in the request's extensions
/// (a request without a principal gets none, and the handler refuses it).
fn with_ctx(mut request: Request) -> Request {
    let ctx = request
        .extensions()
        .get::<Caller>()
        .and_then(|c| c.ctx().ok());
    if let Some(ctx) = ctx {
        request.extensions_mut().insert(ctx);
    }
    request
}

/// A POST's body, read within `api.maxBodyBytes` (413 beyond) and passed
/// on only when it is one JSON-RPC message.
async fn message(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let rid = parts
        .extensions
        .get::<Caller>()
        .map(|c| c.request_id.clone());
    let Body(bytes) = match read_body(body, &state, rid.as_ref()).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    if let Some(e) = not_a_message(&bytes) {
        let error = e.jsonrpc(rid.as_ref().map(|r| &*r.0), now_ms());
        let body = json!({"jsonrpc": "2.0", "id": null, "error": error});
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// Why `body` is not one JSON-RPC 2.0 message, if it is not. Only
/// `jsonrpc` is read (the rest is skipped, not built): rmcp parses the
/// message itself right after.
fn not_a_message(body: &[u8]) -> Option<IrisError> {
    #[derive(serde::Deserialize)]
    struct Probe<'a> {
        #[serde(borrow)]
        jsonrpc: Option<std::borrow::Cow<'a, str>>,
    }
    let invalid = |why: &str| {
        Some(IrisError::new(
            ErrorKind::InvalidRequest,
            format!("invalid request: {why}"),
        ))
    };
    if body.trim_ascii_start().first() == Some(&b'[') {
        return invalid(
            "a batch; MCP 2025-11-25 and 2026-07-28 take one JSON-RPC message per request",
        );
    }
    match serde_json::from_slice::<Probe>(body) {
        Ok(p) if p.jsonrpc.as_deref() == Some("2.0") => None,
        Ok(_) => invalid("need \"jsonrpc\": \"2.0\""),
        // Well-formed JSON of another shape (a number, `jsonrpc: 2`…).
        Err(e) if e.is_data() => {
            invalid("a JSON-RPC message is a JSON object with \"jsonrpc\": \"2.0\"")
        }
        Err(e) => Some(IrisError::new(
            ErrorKind::MalformedJson,
            format!("the body is not JSON: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_single_json_rpc_objects_pass() {
        let code = |b: &str| not_a_message(b.as_bytes()).map(|e| e.kind.jsonrpc_code());
        assert_eq!(code(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#), None);
        assert_eq!(code(r#"{"jsonrpc":"#), Some(-32700));
        assert_eq!(code(""), Some(-32700));
        assert_eq!(
            code(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#),
            Some(-32600)
        );
        assert_eq!(
            code(r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#),
            Some(-32600)
        );
        assert_eq!(code(r#"{"id":1,"method":"ping"}"#), Some(-32600));
        assert_eq!(code("42"), Some(-32600));
    }
}
