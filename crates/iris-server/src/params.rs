//! Turning path segments, query strings and bodies into an operation's
//! parameters. Query values are typed by the operation's schema, so
//! `?limit=5` is a number and `?team=123` stays a string.

use axum::body::Bytes;
use axum::http::StatusCode;
use iris_core::registry::Operation;
use iris_core::{ErrorKind, IrisError};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::gate::caller::{Caller, RequestId, TOKEN_QUERY};
use crate::state::AppState;

/// A request body of at most `api.maxBodyBytes` as [`read_body`] reads it
/// (413 with the error body beyond; tower-http's body limit inside the
/// gate enforces the same bound on the wire). Handlers take [`Object`] or
/// [`Typed`].
pub struct Body(pub Bytes);

/// The request id the gate gave `req`, for the errors of its extractors.
fn request_id(req: &axum::extract::Request) -> Option<RequestId> {
    req.extensions()
        .get::<Caller>()
        .map(|c| c.request_id.clone())
}

/// A JSON object body (`{}` when there is none), as [`body_object`] reads
/// it; its problems answer with the error body.
pub struct Object(pub Map<String, Value>);

impl axum::extract::FromRequest<AppState> for Object {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &AppState) -> Result<Self, ApiError> {
        let rid = request_id(&req);
        let Body(bytes) = read_body(req.into_body(), state, rid.as_ref()).await?;
        body_object(&bytes)
            .map(Object)
            .map_err(|e| ApiError::maybe(e, rid.as_ref()))
    }
}

/// A JSON object body read into `T`; a field that does not fit is a
/// validation error naming it.
pub struct Typed<T>(pub T);

impl<T: serde::de::DeserializeOwned> axum::extract::FromRequest<AppState> for Typed<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &AppState) -> Result<Self, ApiError> {
        let rid = request_id(&req);
        let Object(map) = Object::from_request(req, state).await?;
        serde_json::from_value(Value::Object(map))
            .map(Typed)
            .map_err(|e| {
                ApiError::maybe(IrisError::validation("body", e.to_string()), rid.as_ref())
            })
    }
}

/// Read a request body of at most `api.maxBodyBytes` (413 beyond).
pub async fn read_body(
    body: axum::body::Body,
    state: &AppState,
    rid: Option<&RequestId>,
) -> Result<Body, ApiError> {
    use axum::body::HttpBody;
    if body.size_hint().exact() == Some(0) {
        return Ok(Body(Bytes::new()));
    }
    let fail = |message: &str| ApiError::maybe(IrisError::new(ErrorKind::Validation, message), rid);
    let limit = state.iris.config().api.max_body_bytes;
    let too_large = || {
        fail("the request body is larger than api.maxBodyBytes")
            .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    };
    // A declared length says it at once; a chunked body is cut off at the limit.
    if body.size_hint().lower() > limit as u64 {
        return Err(too_large());
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => Ok(Body(bytes)),
        Err(e) if is_length_limit(&e) => Err(too_large()),
        Err(e) => Err(fail(&format!("the request body could not be read: {e}"))),
    }
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Parse a JSON object body; an empty body is `{}`.
pub fn body_object(body: &Bytes) -> Result<Map<String, Value>, IrisError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(IrisError::validation("body", "must be a JSON object")),
        Err(e) => Err(IrisError::new(
            ErrorKind::MalformedJson,
            format!("the body is not valid JSON: {e}"),
        )),
    }
}

/// The JSON types a property of `op`'s parameters accepts.
fn property_types(op: &Operation, key: &str) -> Vec<String> {
    let prop = &op.params_schema["properties"][key];
    match &prop["type"] {
        Value::String(t) => vec![t.clone()],
        Value::Array(ts) => ts
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// Add query parameters, typed by the schema.
pub fn add_query(
    params: &mut Map<String, Value>,
    operation: &Operation,
    query: Vec<(String, String)>,
) {
    for (k, v) in query {
        // The credential of browsers' streams, taken by the gate.
        if k == TOKEN_QUERY {
            continue;
        }
        let types = property_types(operation, &k);
        let value = if types.iter().any(|t| t == "string") {
            Value::String(v)
        } else {
            serde_json::from_str(&v).unwrap_or(Value::String(v))
        };
        params.insert(k, value);
    }
}

/// The one `{…}` segment of a route, percent-decoded. A segment that does
/// not decode (invalid UTF-8) is a validation error with the error body,
/// not a route without it.
pub struct Segment(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Segment {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let rid = parts
            .extensions
            .get::<Caller>()
            .map(|c| c.request_id.clone());
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(s)| Segment(s))
            .map_err(|e| {
                ApiError::maybe(IrisError::validation("path", e.body_text()), rid.as_ref())
            })
    }
}

/// Every `{…}` segment of a route, percent-decoded, by name; the same
/// errors as [`Segment`].
pub async fn segments(
    parts: &mut axum::http::request::Parts,
    state: &AppState,
) -> Result<Vec<(String, String)>, ApiError> {
    use axum::extract::FromRequestParts;
    let rid = parts
        .extensions
        .get::<Caller>()
        .map(|c| c.request_id.clone());
    axum::extract::Path::<Vec<(String, String)>>::from_request_parts(parts, state)
        .await
        .map(|axum::extract::Path(p)| p)
        .map_err(|e| ApiError::maybe(IrisError::validation("path", e.body_text()), rid.as_ref()))
}
