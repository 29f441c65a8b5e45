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
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use iris_core::{ErrorKind, IrisError, now_ms};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;

use crate::gate::caller::Caller;
use crate::lifecycle::FINISHING;
use crate::params::{Body, read_body};
use crate::state::AppState;

/// Who opened each MCP session (`Mcp-Session-Id`): a session is usable —
/// posted to, streamed with `Last-Event-ID`, ended — only by the
/// principal that initialized it (MCP 2025-11-25, Security Best
/// Practices, session hijacking); others get 404 as for a session that
/// does not exist. Each principal has at most
/// `api.mcp.maxSessionsPerPrincipal` open at once.
#[derive(Clone)]
struct Owners {
    open: Arc<iris_mcp::Sessions>,
    by_session: Arc<Mutex<HashMap<String, String>>>,
    cap: usize,
}

impl Owners {
    fn owner(&self, session: &str) -> Option<String> {
        self.by_session
            .lock()
            .ok()
            .and_then(|m| m.get(session).cloned())
    }

    /// Sessions `actor` has open now (forgetting those that ended).
    async fn count(&self, actor: &str) -> usize {
        let theirs: Vec<String> = match self.by_session.lock() {
            Ok(m) => m
                .iter()
                .filter(|(_, a)| *a == actor)
                .map(|(s, _)| s.clone())
                .collect(),
            Err(_) => return 0,
        };
        let mut open = 0;
        for id in theirs {
            if iris_mcp::session_open(&self.open, &id).await {
                open += 1;
            } else if let Ok(mut m) = self.by_session.lock() {
                m.remove(&id);
            }
        }
        open
    }
}

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
    let api = &state.iris.config().api;
    let open = Arc::new(iris_mcp::Sessions::default());
    let owners = Owners {
        open: open.clone(),
        by_session: Arc::default(),
        cap: api.mcp.max_sessions_per_principal.max(1),
    };
    let mcp = iris_mcp::http_service(state.iris.clone(), api.max_body_bytes, stop, open);
    let service = ServiceBuilder::new()
        .layer(axum::middleware::from_fn_with_state(state.clone(), message))
        .layer(axum::middleware::from_fn_with_state(owners, owned))
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

/// A JSON-RPC error as the answer to an HTTP request (`id` when known).
fn rpc_error(status: StatusCode, e: &IrisError, rid: Option<&str>, id: Value) -> Response {
    let body = json!({"jsonrpc": "2.0", "id": id, "error": e.jsonrpc(rid, now_ms())});
    (status, axum::Json(body)).into_response()
}

/// A session named by `Mcp-Session-Id` is its opener's: anyone else, and
/// an id that names no open session, gets 404 (DELETE too, which rmcp
/// would answer 202). A new session (a request without the header that
/// opens one) counts against its opener's `maxSessionsPerPrincipal`.
async fn owned(State(owners): State<Owners>, request: Request, next: Next) -> Response {
    let Some(caller) = request.extensions().get::<Caller>().cloned() else {
        return next.run(request).await;
    };
    let Some(actor) = caller.principal.as_ref().map(|p| p.actor()) else {
        return next.run(request).await;
    };
    let rid = caller.request_id.0.clone();
    let session = request
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let method = request.method().clone();
    match session {
        Some(id) => {
            let mine = owners.owner(&id).is_some_and(|o| o == actor)
                && iris_mcp::session_open(&owners.open, &id).await;
            if !mine {
                let e = IrisError::not_found(format!("no MCP session `{id}`"))
                    .with_details(json!({"sessionId": id}));
                return rpc_error(StatusCode::NOT_FOUND, &e, Some(&rid), Value::Null);
            }
            let resp = next.run(request).await;
            if method == Method::DELETE
                && resp.status().is_success()
                && let Ok(mut m) = owners.by_session.lock()
            {
                m.remove(&id);
            }
            resp
        }
        None => {
            if method == Method::DELETE {
                let e = IrisError::validation("Mcp-Session-Id", "name the session to end");
                return rpc_error(StatusCode::BAD_REQUEST, &e, Some(&rid), Value::Null);
            }
            if method == Method::POST && owners.count(&actor).await >= owners.cap {
                let e = IrisError::new(
                    ErrorKind::RateLimited,
                    format!(
                        "this caller has {} MCP sessions open (api.mcp.maxSessionsPerPrincipal); end one with DELETE /mcp first",
                        owners.cap
                    ),
                );
                return rpc_error(StatusCode::TOO_MANY_REQUESTS, &e, Some(&rid), Value::Null);
            }
            let resp = next.run(request).await;
            let opened = resp
                .headers()
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok());
            if let (Some(id), Ok(mut m)) = (opened, owners.by_session.lock()) {
                m.insert(id.to_owned(), actor);
            }
            resp
        }
    }
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
    let rid_text = rid.as_ref().map(|r| &*r.0);
    let json = parts
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !json {
        let e = IrisError::new(
            ErrorKind::InvalidRequest,
            "a POST to /mcp is one JSON-RPC message with Content-Type: application/json",
        );
        return rpc_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &e,
            rid_text,
            Value::Null,
        );
    }
    let Body(bytes) = match read_body(body, &state, rid.as_ref()).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    match check_message(&bytes) {
        Ok(()) => {}
        Err(Refusal::NotAMessage(e)) => {
            return rpc_error(StatusCode::BAD_REQUEST, &e, rid_text, Value::Null);
        }
        // A request the client will wait for: answered, with its id.
        Err(Refusal::BadParams(e, id)) => return rpc_error(StatusCode::OK, &e, rid_text, id),
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// Why a POST's body is not passed on.
#[derive(Debug)]
enum Refusal {
    /// It is no JSON-RPC 2.0 message (400, no id).
    NotAMessage(IrisError),
    /// A request whose parameters do not fit its method (-32602 with its id).
    BadParams(IrisError, Value),
}

/// Whether `body` is one JSON-RPC 2.0 message — a request or notification
/// (`method` a string, `id` a string or an integer, `params` an object),
/// or a response — and, for the methods whose parameters Iris reads
/// itself (`tools/call`, `resources/read`), whether they fit. Only those
/// fields are read (the rest is skipped, not built): rmcp parses the
/// message itself right after.
fn check_message(body: &[u8]) -> Result<(), Refusal> {
    use serde_json::value::RawValue;
    #[derive(serde::Deserialize)]
    struct Probe<'a> {
        #[serde(borrow)]
        jsonrpc: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        id: Option<&'a RawValue>,
        #[serde(borrow)]
        method: Option<&'a RawValue>,
        #[serde(borrow)]
        params: Option<&'a RawValue>,
        #[serde(borrow)]
        result: Option<&'a RawValue>,
        #[serde(borrow)]
        error: Option<&'a RawValue>,
    }
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct CallParams {
        name: String,
        arguments: Option<serde_json::Map<String, Value>>,
    }
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct ReadParams {
        uri: String,
    }
    let invalid = |why: &str| {
        Refusal::NotAMessage(IrisError::new(
            ErrorKind::InvalidRequest,
            format!("invalid request: {why}"),
        ))
    };
    if body.trim_ascii_start().first() == Some(&b'[') {
        return Err(invalid(
            "a batch; MCP 2025-11-25 and 2026-07-28 take one JSON-RPC message per request",
        ));
    }
    let p = match serde_json::from_slice::<Probe>(body) {
        Ok(p) => p,
        // Well-formed JSON of another shape (a number, `jsonrpc: 2`…).
        Err(e) if e.is_data() => {
            return Err(invalid(
                "a JSON-RPC message is a JSON object with \"jsonrpc\": \"2.0\"",
            ));
        }
        Err(e) => {
            return Err(Refusal::NotAMessage(IrisError::new(
                ErrorKind::MalformedJson,
                format!("the body is not JSON: {e}"),
            )));
        }
    };
    if p.jsonrpc.as_deref() != Some("2.0") {
        return Err(invalid("need \"jsonrpc\": \"2.0\""));
    }
    let id_ok = p.id.is_none_or(|id| {
        let t = id.get();
        t.starts_with('"') || serde_json::from_str::<i64>(t).is_ok()
    });
    if !id_ok {
        return Err(invalid("`id` is a string or an integer"));
    }
    let Some(method) = p.method else {
        // A response to the server (an id and a result or an error).
        if p.id.is_some() && (p.result.is_some() || p.error.is_some()) {
            return Ok(());
        }
        return Err(invalid(
            "need a `method` (a request or notification) or an `id` with `result` or `error` (a response)",
        ));
    };
    let Ok(method) = serde_json::from_str::<std::borrow::Cow<str>>(method.get()) else {
        return Err(invalid("`method` is a string"));
    };
    let params = p.params.map(RawValue::get);
    if params.is_some_and(|t| !t.trim_start().starts_with('{')) {
        let e = IrisError::validation("params", "an object");
        return Err(match p.id {
            Some(id) => {
                Refusal::BadParams(e, serde_json::from_str(id.get()).unwrap_or(Value::Null))
            }
            None => Refusal::NotAMessage(e),
        });
    }
    let fits = match &*method {
        "tools/call" => serde_json::from_str::<CallParams>(params.unwrap_or("null")).map(drop),
        "resources/read" => serde_json::from_str::<ReadParams>(params.unwrap_or("null")).map(drop),
        _ => Ok(()),
    };
    match (fits, p.id) {
        (Err(e), Some(id)) => Err(Refusal::BadParams(
            IrisError::validation("params", format!("do not fit `{method}`: {e}")),
            serde_json::from_str(id.get()).unwrap_or(Value::Null),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_single_json_rpc_messages_pass() {
        let code = |b: &str| match check_message(b.as_bytes()) {
            Ok(()) => None,
            Err(Refusal::NotAMessage(e)) => Some((e.kind.jsonrpc_code(), Value::Null)),
            Err(Refusal::BadParams(e, id)) => Some((e.kind.jsonrpc_code(), id)),
        };
        let bad = |b: &str| code(b).map(|(c, _)| c);
        assert_eq!(bad(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#), None);
        assert_eq!(
            bad(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            None
        );
        assert_eq!(bad(r#"{"jsonrpc":"2.0","id":"a","result":{}}"#), None);
        assert_eq!(bad(r#"{"jsonrpc":"#), Some(-32700));
        assert_eq!(bad(""), Some(-32700));
        assert_eq!(
            bad(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#),
            Some(-32600)
        );
        assert_eq!(
            bad(r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#),
            Some(-32600)
        );
        assert_eq!(bad(r#"{"id":1,"method":"ping"}"#), Some(-32600));
        assert_eq!(bad("42"), Some(-32600));
        assert_eq!(bad(r#"{"jsonrpc":"2.0"}"#), Some(-32600));
        assert_eq!(bad(r#"{"jsonrpc":"2.0","id":1}"#), Some(-32600));
        assert_eq!(bad(r#"{"jsonrpc":"2.0","method":5}"#), Some(-32600));
        assert_eq!(
            bad(r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#),
            Some(-32600)
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"nom":"x"}}"#),
            Some((-32602, json!(5)))
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":"r","method":"resources/read","params":{"uri":5}}"#),
            Some((-32602, json!("r")))
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call"}"#),
            Some((-32602, json!(7)))
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":8,"method":"tools/list","params":[1]}"#),
            Some((-32602, json!(8)))
        );
        assert_eq!(
            bad(
                r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"list_teams","arguments":{}}}"#
            ),
            None
        );
    }
}
