//! The OpenAPI 3.1 document, generated from the route table and the
//! operation registry (so it cannot drift from what is served), and a
//! human-readable API page built from it by a small script embedded in the
//! binary (no CDN, nothing fetched at build or run time).

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use iris_core::registry;
use serde_json::{Map, Value, json};

use super::rest::{HEADER_PARAMS, ROUTES, Verb};
use crate::state::AppState;

/// Move a schemars schema's `$defs` into `defs` and point its `$ref`s there.
fn absorb(schema: &Value, defs: &mut Map<String, Value>) -> Value {
    let mut s = schema.clone();
    if let Some(obj) = s.as_object_mut() {
        obj.remove("$schema");
        if let Some(Value::Object(local)) = obj.remove("$defs") {
            for (k, v) in local {
                let v = absorb(&v, defs);
                defs.entry(k).or_insert(v);
            }
        }
    }
    rewrite_refs(&mut s);
    s
}

fn rewrite_refs(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref")
                && let Some(name) = r.strip_prefix("#/$defs/")
            {
                *r = format!("#/components/schemas/{name}");
            }
            m.values_mut().for_each(rewrite_refs);
        }
        Value::Array(a) => a.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}

/// `schema` without the property `field` (one the path fills).
fn without(schema: &mut Value, field: &str) {
    if let Some(props) = schema["properties"].as_object_mut() {
        props.remove(field);
    }
    if let Some(req) = schema["required"].as_array_mut() {
        req.retain(|x| x != field);
    }
}

fn error_response() -> Value {
    json!({"description": "The error body (docs/operations.md)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn build() -> Value {
    let mut defs = Map::new();
    let mut paths: Map<String, Value> = Map::new();
    for r in ROUTES {
        let Some(op) = registry().get(r.spec.op) else {
            continue;
        };
        let path = format!("/api/v1{}", r.path);
        let mut params_schema = absorb(&op.params_schema, &mut defs);
        let mut parameters = Vec::new();
        for (segment, field) in [("team", r.spec.team), ("id", r.spec.id)] {
            if let Some(field) = field
                && r.path.contains(&format!("{{{segment}}}"))
            {
                parameters.push(json!({"name": segment, "in": "path", "required": true,
                    "description": format!("fills `{field}`"), "schema": {"type": "string"}}));
                without(&mut params_schema, field);
            }
        }
        let result_schema = absorb(&op.result_schema, &mut defs);
        for method in r.verb.methods() {
            let mut o = json!({
                "operationId": format!("{}_{}{}", method, op.name, r.path.replace(['/', '{', '}', '-'], "_")),
                "summary": op.description,
                "tags": [r.path.split('/').nth(1).unwrap_or("system")],
                "x-iris-operation": op.name,
                "x-iris-scope": op.scope,
                "parameters": parameters,
                "responses": {
                    r.status.to_string(): {"description": "The operation's result", "content": {"application/json": {"schema": result_schema}}},
                    "default": error_response(),
                },
            });
            for (header, field) in HEADER_PARAMS {
                if let Some(schema) = params_schema["properties"].get(*field)
                    && let Some(list) = o["parameters"].as_array_mut()
                {
                    list.push(json!({"name": header, "in": "header", "required": false,
                        "description": format!("fills `{field}`"), "schema": schema}));
                }
            }
            if r.verb == Verb::Get {
                let required: Vec<&str> = params_schema["required"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                if let (Some(props), Some(list)) = (
                    params_schema["properties"].as_object(),
                    o["parameters"].as_array_mut(),
                ) {
                    for (name, schema) in props {
                        list.push(json!({"name": name, "in": "query", "required": required.contains(&name.as_str()),
                            "description": schema.get("description").cloned().unwrap_or(Value::Null), "schema": schema}));
                    }
                }
            } else {
                let needed = params_schema["required"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty());
                o["requestBody"] = json!({"required": needed, "content": {"application/json": {"schema": params_schema}}});
            }
            paths
                .entry(path.clone())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .map(|m| m.insert((*method).to_owned(), o));
        }
    }
    let plain = |summary: &str, content: &str, tag: &str| json!({"summary": summary, "tags": [tag], "responses": {"200": {"description": summary, "content": {content: {}}}, "default": error_response()}});
    let extra = [
        (
            "/api/v1/tools",
            "get",
            plain(
                "Every operation with its JSON Schemas",
                "application/json",
                "tools",
            ),
        ),
        (
            "/api/v1/tools/{name}",
            "get",
            plain(
                "One operation with its JSON Schemas",
                "application/json",
                "tools",
            ),
        ),
        (
            "/api/v1/tools/{name}/execute",
            "post",
            plain(
                "Run an operation: body `{parameters}` (validated against its schema)",
                "application/json",
                "tools",
            ),
        ),
        (
            "/api/v1/teams/{team}/stream",
            "post",
            plain(
                "Send a message and stream its turn as Server-Sent Events: start, chunk, tool_use, complete, error",
                "text/event-stream",
                "teams",
            ),
        ),
        (
            "/api/v1/messages/{id}/stream",
            "get",
            plain(
                "Follow a message as Server-Sent Events; resumes after Last-Event-ID",
                "text/event-stream",
                "messages",
            ),
        ),
        (
            "/api/v1/stream",
            "get",
            plain(
                "WebSocket (seed 002 messages: subscribe, message, cancel, ping)",
                "application/json",
                "streams",
            ),
        ),
        (
            "/ws",
            "get",
            plain(
                "WebSocket speaking JSON-RPC 2.0 (initialize, tools/list, tools/call, subscribe, ping)",
                "application/json",
                "streams",
            ),
        ),
        (
            "/rpc",
            "post",
            plain(
                "Any operation: body `{method, params}`",
                "application/json",
                "system",
            ),
        ),
        (
            "/healthz",
            "get",
            plain("Liveness: `{ok: true}`", "application/json", "system"),
        ),
        (
            "/health",
            "get",
            plain("Status, uptime and version", "application/json", "system"),
        ),
        (
            "/health/detailed",
            "get",
            plain(
                "The database (backend, latency, connection pool), processes by state, queue depths, uptime, version",
                "application/json",
                "system",
            ),
        ),
        (
            "/ready",
            "get",
            plain(
                "Readiness: the database answers",
                "application/json",
                "system",
            ),
        ),
        (
            "/metrics",
            "get",
            plain("Prometheus metrics", "text/plain", "system"),
        ),
        (
            "/api/v1/auth/login",
            "post",
            plain(
                "Log in with `{username|email|login, password, mfaCode?}`: `{accessToken, refreshToken, expiresIn, tokenType, user}`; 401 with `details.mfaRequired` and `mfaToken` when MFA is on (docs/security.md)",
                "application/json",
                "auth",
            ),
        ),
        (
            "/api/v1/auth/register",
            "post",
            plain(
                "Create an account `{email, password, username?}` as `auth.registration` allows: 201 with the account (disabled until an admin enables it under `approval`); 403 when `closed`, the default (docs/security.md)",
                "application/json",
                "auth",
            ),
        ),
        (
            "/api/v1/auth/refresh",
            "post",
            plain(
                "A new token pair for `{refreshToken}` (or `Authorization: Bearer iris_rt_…`); reusing a spent token revokes its family",
                "application/json",
                "auth",
            ),
        ),
        (
            "/api/v1/auth/logout",
            "post",
            plain(
                "End this session (its refresh family and access token)",
                "application/json",
                "auth",
            ),
        ),
        (
            "/api/v1/auth/logout-all",
            "post",
            plain(
                "End every session of the calling user",
                "application/json",
                "auth",
            ),
        ),
        (
            "/api/v1/auth/me",
            "get",
            plain(
                "The caller: kind, name, scopes, teams, and the user record",
                "application/json",
                "auth",
            ),
        ),
        (
            "/api/v1/auth/mfa/setup",
            "post",
            plain(
                "Start TOTP enrolment: secret, otpauth URL, ten backup codes",
                "application/json",
                "auth",
            ),
        ),
        (
            "/api/v1/auth/mfa/confirm",
            "post",
            plain(
                "Turn MFA on with a first code `{code}`",
                "application/json",
                "auth",
            ),
        ),
        (
            "/api/v1/auth/mfa/verify",
            "post",
            plain(
                "Second login step `{mfaToken, code}` (TOTP or backup code): tokens",
                "application/json",
                "auth",
            ),
        ),
        (
            "/api/v1/auth/mfa/disable",
            "post",
            plain(
                "Turn MFA off with `{password, code}`",
                "application/json",
                "auth",
            ),
        ),
        (
            "/api/v1/openapi.json",
            "get",
            plain("This document", "application/json", "system"),
        ),
        (
            "/api/v1/docs",
            "get",
            plain("The API page", "text/html", "system"),
        ),
    ];
    for (path, method, mut o) in extra {
        // Each `{segment}` of the template is a required path parameter.
        let segments: Vec<Value> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !segments.is_empty() {
            o["parameters"] = Value::Array(segments);
        }
        if let Some(m) = paths
            .entry(path.to_owned())
            .or_insert_with(|| json!({}))
            .as_object_mut()
        {
            m.insert(method.to_owned(), o);
        }
    }
    // The bodies of /auth/*, from the types that read them.
    for (under, schema) in super::auth::request_schemas() {
        if let Some(o) = paths
            .get_mut(&format!("/api/v1/auth/{under}"))
            .and_then(|p| p.get_mut("post"))
        {
            o["requestBody"] =
                json!({"required": true, "content": {"application/json": {"schema": schema}}});
        }
    }
    // The WebSockets: a GET upgrading the connection (RFC 6455 section
    // 4.1: `Upgrade: websocket`, `Connection: Upgrade`,
    // `Sec-WebSocket-Version: 13`, `Sec-WebSocket-Key`). The headers are
    // described, not declared: an HTTP test client that sent them would be
    // switched to a protocol it does not speak. A plain GET is answered
    // 400 with the error body.
    for path in ["/api/v1/stream", "/ws"] {
        if let Some(o) = paths.get_mut(path).and_then(|p| p.get_mut("get")) {
            o["description"] = json!(
                "Send the WebSocket upgrade headers of RFC 6455 section 4.1; without them the answer is 400 with the error body. The credential may come in the `Authorization` header, a `token` query parameter, or the first message (`api.websocket.authTimeout`)."
            );
            o["responses"]["101"] = json!({"description": "Switching to the WebSocket protocol"});
        }
    }
    // A stream's message: `quick_message`'s parameters, the team in the path.
    if let (Some(op), Some(o)) = (
        registry().get("quick_message"),
        paths
            .get_mut("/api/v1/teams/{team}/stream")
            .and_then(|p| p.get_mut("post")),
    ) {
        let mut schema = absorb(&op.params_schema, &mut defs);
        without(&mut schema, "toTeam");
        o["requestBody"] =
            json!({"required": true, "content": {"application/json": {"schema": schema}}});
    }
    // `/rpc`: the operation by name and its parameters.
    if let Some(o) = paths.get_mut("/rpc").and_then(|p| p.get_mut("post")) {
        o["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {
            "type": "object", "required": ["method"],
            "properties": {"method": {"type": "string", "description": "an operation's name (GET /api/v1/tools)"},
                           "params": {"type": "object", "description": "its parameters"}}}}}});
    }
    // The routes that answer without a credential say so.
    let policies = crate::gate::policy::Policies::new();
    for (path, methods) in paths.iter_mut() {
        if policies.of(Some(path)).access != crate::gate::policy::Access::Guarded
            && let Some(methods) = methods.as_object_mut()
        {
            for o in methods.values_mut() {
                o["security"] = json!([]);
            }
        }
    }
    defs.insert(
        "Error".into(),
        json!({"type": "object", "required": ["error", "code", "message", "statusCode", "timestamp"],
               "properties": {"error": {"type": "string"}, "code": {"type": "string"}, "message": {"type": "string"},
                              "statusCode": {"type": "integer"}, "timestamp": {"type": "integer"},
                              "requestId": {"type": "string"}, "details": {"type": "object"}}}),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Iris",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Coding agents as a programmable service. Every path under /api/v1 also answers under /api.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": defs,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    })
}

pub fn spec() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

pub async fn document() -> Json<Value> {
    Json(spec().clone())
}

const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'none'";

/// The document and the page under `prefix`.
pub fn routes(prefix: &str) -> Router<AppState> {
    Router::new()
        .route(&format!("{prefix}/openapi.json"), get(document))
        .route(&format!("{prefix}/docs"), get(page))
        .route(&format!("{prefix}/docs/app.js"), get(script))
}

pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, PAGE_CSP),
        ],
        include_str!("../../assets/docs.html"),
    )
}

pub async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, PAGE_CSP),
        ],
        include_str!("../../assets/docs.js"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }

    #[test]
    fn every_route_is_documented_and_every_ref_resolves() {
        let doc = spec();
        for r in ROUTES {
            let p = &doc["paths"][format!("/api/v1{}", r.path)];
            for m in r.verb.methods() {
                assert_eq!(p[*m]["x-iris-operation"], r.spec.op, "{} {m}", r.path);
            }
        }
        // Public routes need no credential; the rest the bearer.
        assert_eq!(doc["paths"]["/healthz"]["get"]["security"], json!([]));
        assert_eq!(
            doc["paths"]["/api/v1/auth/login"]["post"]["security"],
            json!([])
        );
        assert!(
            doc["paths"]["/api/v1/teams"]["get"]
                .get("security")
                .is_none()
        );
        // Every `{segment}` of every path is declared for every method.
        for (path, methods) in doc["paths"].as_object().unwrap() {
            let segments = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'));
            for name in segments {
                for (method, o) in methods.as_object().unwrap() {
                    let declared = o["parameters"].as_array().is_some_and(|ps| {
                        ps.iter().any(|p| p["name"] == name && p["in"] == "path")
                    });
                    assert!(declared, "{method} {path}: `{name}` is not declared");
                }
            }
        }
        let mut all = Vec::new();
        refs(doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("foreign ref {r}"));
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "dangling {r}"
            );
        }
        let ids: Vec<&str> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|p| {
                p.as_object()
                    .unwrap()
                    .values()
                    .filter_map(|o| o["operationId"].as_str())
            })
            .collect();
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ids.len(), "operationIds are unique");
    }
}
