//! Turning path segments, query strings and bodies into an operation's
//! parameters. Query values are typed by the operation's schema, so
//! `?limit=5` is a number and `?team=123` stays a string.

use axum::body::Bytes;
use iris_core::{ErrorKind, IrisError, registry};
use serde_json::{Map, Value};

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

/// The JSON types a property of `operation`'s parameters accepts.
fn property_types(operation: &str, key: &str) -> Vec<String> {
    let Some(op) = registry().get(operation) else {
        return Vec::new();
    };
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
pub fn add_query(params: &mut Map<String, Value>, operation: &str, query: Vec<(String, String)>) {
    for (k, v) in query {
        // The credential of browsers' streams, taken by the gate.
        if k == crate::auth::TOKEN_QUERY {
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
