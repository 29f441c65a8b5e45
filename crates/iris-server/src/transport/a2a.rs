//! A2A 1.0 (Agent2Agent, JSON-RPC binding): each team an A2A agent at
//! `/a2a/<team>`, its card at `/a2a/<team>/.well-known/agent-card.json`.
//! Behind the gate like every route: a caller sees and uses only the teams
//! its credential may see (an unknown or hidden team is 404 for the card,
//! an error for a call). A message is a turn (`send_message`), the A2A
//! context is Iris's conversation, the task is the turn, its answer the
//! task's artifact. See docs/a2a.md.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use iris_core::a2a::{state_of, task_of, waiting_for};
use iris_core::bus::{Delivery, EventKind, Subscription};
use iris_core::{Ctx, Follower, IrisError, TurnEvent};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::gate::caller::Caller;
use crate::params::{Body, read_body};
use crate::state::AppState;

/// The protocol version served.
const VERSION: &str = "1.0";

/// Longest a blocking `SendMessage` waits for its task to end or ask: then
/// the task as it is (the caller follows it with `GetTask`).
const SETTLE_LIMIT: Duration = Duration::from_secs(3600);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/a2a/{team}/.well-known/agent-card.json", get(card))
        .route("/a2a/{team}", post(rpc))
}

/// The base URL the caller reached us by (for the card's interface).
fn base(headers: &HeaderMap) -> String {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .filter(|p| *p == "https")
        .unwrap_or("http");
    format!("{scheme}://{host}")
}

async fn card(
    State(state): State<AppState>,
    who: Caller,
    Path(team): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let ctx = who.ctx()?;
    let t = state
        .iris
        .dispatch(ctx, "team_get", json!({"team": team}))
        .await
        .map_err(|e| who.fail(e))?;
    Ok(Json(card_of(&team, &t, &base(&headers))))
}

/// A team's agent card: what the team is, where to call it, the bearer
/// credential it needs. (Behind the gate, so only a caller that may see the
/// team reads it; the extended card is the same.)
fn card_of(team: &str, t: &Value, base: &str) -> Value {
    let description = t["description"]
        .as_str()
        .filter(|d| !d.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("The Iris team `{team}`: a coding agent in its project."));
    json!({
        "name": team,
        "description": description,
        "version": env!("CARGO_PKG_VERSION"),
        "supportedInterfaces": [{
            "url": format!("{base}/a2a/{team}"),
            "protocolBinding": "JSONRPC",
            "protocolVersion": VERSION,
        }],
        "provider": {"organization": "Iris", "url": base},
        "capabilities": {"streaming": true, "pushNotifications": true, "extendedAgentCard": true},
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": [{
            "id": "work",
            "name": format!("Work in {team}"),
            "description": description,
            "tags": ["coding", "agent", team],
        }],
        "securitySchemes": {"bearer": {"httpAuthSecurityScheme": {"scheme": "Bearer"}}},
        "securityRequirements": [{"schemes": {"bearer": {"list": []}}}],
    })
}

/// A JSON-RPC error: `code`, the message, Iris's error code as the
/// `ErrorInfo` reason.
/// Message and details are cut as in every error body (a caller's 1 MB
/// id is not sent back twice).
fn rpc_error(id: &Value, code: i64, e: &IrisError) -> Value {
    let body = e.body(None, iris_core::now_ms());
    let details = body.get("details").map(Value::to_string);
    json!({"jsonrpc": "2.0", "id": id, "error": {
        "code": code,
        "message": body["message"],
        "data": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                  "reason": e.kind.code(), "domain": "iris",
                  "metadata": {"details": details.unwrap_or_default()}}],
    }})
}

/// A request's envelope: its id, method and params — or the JSON-RPC
/// error that answers it (nothing runs for a request that cannot be
/// answered: a notification, an id that is not a string or an integer).
fn envelope(req: &Value) -> Result<(Value, &str, Value), Value> {
    let invalid = |id: &Value, why: &str| {
        rpc_error(
            id,
            -32600,
            &IrisError::validation("request", why.to_owned()),
        )
    };
    let Some(m) = req.as_object() else {
        return Err(invalid(
            &Value::Null,
            "a JSON-RPC 2.0 request object (batches are not served)",
        ));
    };
    let id = match m.get("id") {
        Some(id @ Value::String(_)) => id.clone(),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Value::Number(n.clone()),
        None => {
            return Err(invalid(
                &Value::Null,
                "an id is required (notifications are not served)",
            ));
        }
        Some(_) => {
            return Err(invalid(
                &Value::Null,
                "the id must be a string or an integer",
            ));
        }
    };
    let (Some(method), true) = (
        m.get("method").and_then(Value::as_str),
        m.get("jsonrpc") == Some(&json!("2.0")),
    ) else {
        return Err(invalid(
            &id,
            "not a JSON-RPC 2.0 request (jsonrpc \"2.0\" and a method)",
        ));
    };
    let params = match m.get("params") {
        None | Some(Value::Null) => json!({}),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => {
            return Err(rpc_error(
                &id,
                -32602,
                &IrisError::validation("params", "must be an object"),
            ));
        }
    };
    Ok((id, method, params))
}

/// Whether an `A2A-Version` header names a version served: `1` or `1.<n>`.
fn served(version: &[u8]) -> bool {
    let v = std::str::from_utf8(version).unwrap_or_default();
    match v.strip_prefix('1') {
        Some("") => true,
        Some(minor) => minor.strip_prefix('.').is_some_and(|n| {
            !n.is_empty() && n.len() <= 4 && n.bytes().all(|b| b.is_ascii_digit())
        }),
        None => false,
    }
}

/// The JSON-RPC code for an Iris error.
fn code_of(e: &IrisError) -> i64 {
    use iris_core::ErrorKind as K;
    match e.kind {
        K::Validation | K::TeamNotFound => -32602,
        K::SessionNotFound | K::NotFound => -32001,
        K::MethodNotFound => -32601,
        // The protocol has no code of its own for these: its generic
        // request error, with Iris's code as the reason.
        K::Forbidden | K::Unauthorized | K::RateLimited | K::Conflict | K::QueueFull => -32600,
        _ => -32603,
    }
}

async fn rpc(
    State(state): State<AppState>,
    who: Caller,
    Path(team): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let ctx = who.ctx()?;
    let Body(body) = read_body(body, &state, Some(&who.request_id)).await?;
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        let e = IrisError::new(iris_core::ErrorKind::MalformedJson, "the body is not JSON");
        return Ok(Json(rpc_error(&Value::Null, -32700, &e)).into_response());
    };
    let (id, method, params) = match envelope(&req) {
        Ok(e) => e,
        Err(answer) => return Ok(Json(answer).into_response()),
    };
    if let Some(v) = headers.get("a2a-version")
        && !served(v.as_bytes())
    {
        let e = IrisError::validation(
            "A2A-Version",
            format!(
                "version {} is not served: Iris speaks {VERSION}",
                String::from_utf8_lossy(v.as_bytes())
            ),
        );
        return Ok(Json(rpc_error(&id, -32009, &e)).into_response());
    }
    if let Err((code, e)) = shape_of(method, &params) {
        return Ok(Json(rpc_error(&id, code, &e)).into_response());
    }
    // The team first: unknown or hidden, nothing else is looked at.
    let t = match state
        .iris
        .dispatch(ctx.clone(), "team_get", json!({"team": team}))
        .await
    {
        Ok(t) => t,
        Err(e) => return Ok(Json(rpc_error(&id, -32602, &e)).into_response()),
    };
    let calls = Calls {
        state: &state,
        ctx,
        team: &team,
    };
    let streamed = match method {
        "SendStreamingMessage" => Some(calls.send_streaming(&params).await),
        "SubscribeToTask" => Some(calls.subscribe(&params).await),
        _ => None,
    };
    if let Some(streamed) = streamed {
        return Ok(match streamed {
            Ok(Streamed::Follow(follower, asked)) => {
                let lookup = Lookup {
                    iris: state.iris.clone(),
                    ctx: calls.ctx.clone(),
                    team: team.clone(),
                };
                stream_of(id, follower, asked, lookup).into_response()
            }
            Ok(Streamed::Snapshot(task)) => {
                let event = Event::default().data(
                    json!({"jsonrpc": "2.0", "id": id, "result": {"task": task}}).to_string(),
                );
                Sse::new(futures_util::stream::iter([Ok::<_, Infallible>(event)])).into_response()
            }
            Err((code, e)) => Json(rpc_error(&id, code, &e)).into_response(),
        });
    }
    let result = match method {
        "SendMessage" => calls.send(&params).await,
        "GetTask" => calls.get(&params).await,
        "ListTasks" => calls.list(&params).await,
        "CancelTask" => calls.cancel(&params).await,
        "GetExtendedAgentCard" => Ok(card_of(&team, &t, &base(&headers))),
        "CreateTaskPushNotificationConfig" => calls.push_create(&params).await,
        "GetTaskPushNotificationConfig" => calls.push_get(&params).await,
        "ListTaskPushNotificationConfigs" => calls.push_list(&params).await,
        "DeleteTaskPushNotificationConfig" => calls.push_delete(&params).await,
        other => Err((
            -32601,
            IrisError::validation("method", format!("no method `{other}`")),
        )),
    };
    Ok(Json(match result {
        Ok(v) => json!({"jsonrpc": "2.0", "id": id, "result": v}),
        Err((code, e)) => rpc_error(&id, code, &e),
    })
    .into_response())
}

/// A field's type in A2A's protobuf JSON.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Count,
    Flag,
    Object,
    List,
    /// Any JSON (a `data` part, metadata values).
    Json,
}

impl Kind {
    fn fits(self, v: &Value) -> bool {
        match self {
            Kind::Text => v.is_string(),
            Kind::Count => v.as_u64().is_some(),
            Kind::Flag => v.is_boolean(),
            Kind::Object => v.is_object(),
            Kind::List => v.is_array(),
            Kind::Json => true,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Kind::Text => "must be a string",
            Kind::Count => "must be a whole number, 0 or more",
            Kind::Flag => "must be true or false",
            Kind::Object => "must be an object",
            Kind::List => "must be a list",
            Kind::Json => "",
        }
    }
}

type Checked = Result<(), (i64, IrisError)>;

fn bad(field: &str, problem: impl Into<String>) -> (i64, IrisError) {
    (-32602, IrisError::validation(field, problem))
}

/// `-32602` unless each field of object `v` present (not null) is of its
/// kind; with `closed`, a field not named is refused too (push configs,
/// whose every field Iris keeps).
fn fields(v: &Value, at: &str, kinds: &[(&str, Kind)], closed: bool) -> Checked {
    let Some(m) = v.as_object() else {
        return Err(bad(at.trim_end_matches('.'), "must be an object"));
    };
    for (name, x) in m {
        match kinds.iter().find(|(n, _)| n == name) {
            Some((_, kind)) if !x.is_null() && !kind.fits(x) => {
                return Err(bad(&format!("{at}{name}"), kind.what()));
            }
            None if closed => return Err(bad(&format!("{at}{name}"), "is not a field of it")),
            _ => {}
        }
    }
    Ok(())
}

/// The types of a call's parameters, checked before anything runs: a
/// field Iris would read wrongly (a numeric `taskId`, a `historyLength` of
/// -1) is `-32602`, not ignored. Which fields are required each call says.
fn shape_of(method: &str, params: &Value) -> Checked {
    use Kind::*;
    let tenant = ("tenant", Text);
    match method {
        "SendMessage" | "SendStreamingMessage" => {
            fields(
                params,
                "",
                &[
                    tenant,
                    ("message", Object),
                    ("configuration", Object),
                    ("metadata", Object),
                ],
                false,
            )?;
            let message = &params["message"];
            if message.is_null() {
                return Err(bad("message", "a message is required"));
            }
            fields(
                message,
                "message.",
                &[
                    ("messageId", Text),
                    ("contextId", Text),
                    ("taskId", Text),
                    ("role", Text),
                    ("parts", List),
                    ("metadata", Object),
                    ("extensions", List),
                    ("referenceTaskIds", List),
                ],
                false,
            )?;
            if message["messageId"].as_str().is_none_or(str::is_empty) {
                return Err(bad("message.messageId", "a message id is required"));
            }
            if let Some(role) = message["role"].as_str().filter(|r| *r != "ROLE_USER") {
                return Err(bad(
                    "message.role",
                    format!("a message to an agent is ROLE_USER, not {role}"),
                ));
            }
            for (i, part) in message["parts"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let at = format!("message.parts[{i}].");
                fields(
                    part,
                    &at,
                    &[
                        ("text", Text),
                        ("raw", Text),
                        ("url", Text),
                        ("data", Json),
                        ("metadata", Object),
                        ("filename", Text),
                        ("mediaType", Text),
                    ],
                    false,
                )?;
                let kinds = ["text", "raw", "url", "data"]
                    .iter()
                    .filter(|k| !part[**k].is_null())
                    .count();
                if kinds != 1 {
                    return Err(bad(
                        at.trim_end_matches('.'),
                        "one of text, raw, url or data",
                    ));
                }
            }
            let c = &params["configuration"];
            if !c.is_null() {
                fields(
                    c,
                    "configuration.",
                    &[
                        ("acceptedOutputModes", List),
                        ("taskPushNotificationConfig", Object),
                        ("historyLength", Count),
                        ("returnImmediately", Flag),
                    ],
                    false,
                )?;
                let push = &c["taskPushNotificationConfig"];
                if !push.is_null() {
                    push_shape(push, "configuration.taskPushNotificationConfig.")?;
                }
            }
            Ok(())
        }
        "GetTask" => fields(
            params,
            "",
            &[tenant, ("id", Text), ("historyLength", Count)],
            false,
        ),
        "CancelTask" => fields(
            params,
            "",
            &[tenant, ("id", Text), ("metadata", Object)],
            false,
        ),
        "SubscribeToTask" => fields(params, "", &[tenant, ("id", Text)], false),
        "ListTasks" => {
            fields(
                params,
                "",
                &[
                    tenant,
                    ("contextId", Text),
                    ("status", Text),
                    ("pageSize", Json),
                    ("pageToken", Text),
                    ("historyLength", Count),
                    ("statusTimestampAfter", Text),
                    ("includeArtifacts", Flag),
                ],
                false,
            )?;
            // (Iris's history filters by status and creation time, which
            // are not A2A's states and status times: refused, not ignored.)
            for unserved in ["status", "statusTimestampAfter"] {
                if params[unserved]
                    .as_str()
                    .is_some_and(|s| !s.is_empty() && s != "TASK_STATE_UNSPECIFIED")
                {
                    return Err(bad(
                        unserved,
                        "not a filter Iris serves (filter by contextId)",
                    ));
                }
            }
            Ok(())
        }
        "CreateTaskPushNotificationConfig" => push_shape(params, ""),
        "GetTaskPushNotificationConfig" | "DeleteTaskPushNotificationConfig" => {
            fields(params, "", &[tenant, ("taskId", Text), ("id", Text)], false)
        }
        "ListTaskPushNotificationConfigs" => fields(
            params,
            "",
            &[
                tenant,
                ("taskId", Text),
                ("pageSize", Count),
                ("pageToken", Text),
            ],
            false,
        ),
        _ => Ok(()),
    }
}

/// A `TaskPushNotificationConfig`: each field Iris keeps, of its type,
/// and no other.
fn push_shape(c: &Value, at: &str) -> Checked {
    use Kind::*;
    fields(
        c,
        at,
        &[
            ("tenant", Text),
            ("id", Text),
            ("taskId", Text),
            ("url", Text),
            ("token", Text),
            ("authentication", Object),
        ],
        true,
    )?;
    let auth = &c["authentication"];
    if !auth.is_null() {
        let at = format!("{at}authentication.");
        fields(auth, &at, &[("scheme", Text), ("credentials", Text)], true)?;
        if auth["scheme"].as_str().is_none_or(str::is_empty) {
            return Err(bad(
                &format!("{at}scheme"),
                "a scheme is required with authentication",
            ));
        }
    }
    Ok(())
}

/// What a streamed call answers: a turn followed (with the team's events,
/// to see it ask for input), or a task as it is (one waiting for input).
enum Streamed {
    Follow(Follower, Subscription),
    Snapshot(Value),
}

/// A followed turn as A2A stream responses over SSE, each a JSON-RPC
/// answer to `id`: the task first, then an artifact update per chunk of
/// the answer, a working status per tool use, result or plan, and the
/// final status — after which the stream ends. A permission the agent asks
/// (an approval of this turn on `asked`, the team's events) is the status
/// input-required with the request, and the stream ends there too: the
/// caller answers on the task.
fn stream_of(id: Value, follower: Follower, asked: Subscription, lookup: Lookup) -> Response {
    struct Follow {
        follower: Follower,
        asked: Option<Subscription>,
        lookup: Lookup,
        seen: Seen,
        done: bool,
    }
    let start = Follow {
        seen: Seen {
            task: follower.message_id().to_owned(),
            context: Value::Null,
            chunks: 0,
            started: false,
        },
        follower,
        asked: Some(asked),
        lookup,
        done: false,
    };
    let events = futures_util::stream::unfold(start, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            let approval = async {
                match st.asked.as_mut() {
                    Some(sub) => sub.recv().await,
                    None => std::future::pending().await,
                }
            };
            // (Both are cancel-safe: a turn event not taken stays queued.)
            // The turn's own events first: an approval is said after what
            // came before it.
            tokio::select! {
                biased;
                e = st.follower.next() => {
                    let e = e?;
                    if let Some(r) = stream_response(st.seen.of(&e), &e) {
                        return Some((r, st));
                    }
                }
                d = approval => {
                    let asked = match d {
                        // Looked up as the caller: one who may not decide
                        // approvals sees none, the task stays working.
                        Some(Delivery::Event(ev))
                            if ev.kind == EventKind::ApprovalRequested
                                && ev.turn_id.as_deref() == Some(st.seen.task.as_str()) =>
                        {
                            st.lookup.pending(&st.seen.task).await
                        }
                        // Events were missed: listen again, and look for
                        // what may have been among them.
                        Some(Delivery::Dropped { .. }) => {
                            st.asked = Some(st.lookup.iris.watch("system"));
                            st.lookup.pending(&st.seen.task).await
                        }
                        Some(_) => None,
                        None => {
                            st.asked = None;
                            None
                        }
                    };
                    if let Some((approval, session, at)) = asked {
                        st.done = true;
                        if st.seen.context.is_null() {
                            st.seen.context = json!(session);
                        }
                        let mut task = json!({"id": st.seen.task, "contextId": st.seen.context,
                            "status": {"state": "TASK_STATE_WORKING",
                                       "timestamp": iris_core::iso8601(at)}});
                        waiting_for(&mut task, &approval);
                        // A stream that had not yet said its task says it
                        // now, waiting; else the status changes.
                        let update = if st.seen.started {
                            json!({"statusUpdate": {"taskId": st.seen.task,
                                "contextId": st.seen.context, "status": task["status"]}})
                        } else {
                            json!({"task": task})
                        };
                        return Some((update, st));
                    }
                }
            }
        }
    })
    .map(move |r| {
        Ok::<_, Infallible>(
            Event::default().data(json!({"jsonrpc": "2.0", "id": id, "result": r}).to_string()),
        )
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// Where a stream looks for the approval its task waits on, when it may
/// have missed the event.
struct Lookup {
    iris: std::sync::Arc<iris_core::Iris>,
    ctx: Ctx,
    team: String,
}

impl Lookup {
    /// The pending approval of task `id`: its row, its conversation, when.
    async fn pending(&self, id: &str) -> Option<(Value, Option<String>, i64)> {
        let a = pending_approval(&self.iris, &self.ctx, &self.team, id)
            .await
            .ok()
            .flatten()?;
        let session = a["sessionId"].as_str().map(str::to_owned);
        let at = a["createdAt"].as_i64().unwrap_or_else(iris_core::now_ms);
        Some((a, session, at))
    }
}

/// Whether `ctx`'s caller may list approvals: one who may not is not
/// shown them (and not audited as refused for a look it did not ask for).
fn may_see_approvals(ctx: &Ctx) -> bool {
    scope_of("approval_list").is_none_or(|s| ctx.principal.allows(s))
}

/// The scope operation `op` declares in the registry.
fn scope_of(op: &str) -> Option<&'static str> {
    iris_core::registry().get(op).and_then(|o| o.scope)
}

/// The pending approval turn `id` of `team` waits on, if any.
async fn pending_approval(
    iris: &std::sync::Arc<iris_core::Iris>,
    ctx: &Ctx,
    team: &str,
    id: &str,
) -> Result<Option<Value>, IrisError> {
    if !may_see_approvals(ctx) {
        return Ok(None);
    }
    let l = iris
        .dispatch(
            ctx.clone(),
            "approval_list",
            json!({"team": team, "messageId": id, "status": "pending", "limit": 1}),
        )
        .await?;
    Ok(l["approvals"].get(0).cloned())
}

/// What a stream has seen of its task.
struct Seen {
    task: String,
    context: Value,
    chunks: u64,
    /// Its start (the `task` event) was sent.
    started: bool,
}

impl Seen {
    /// Note `e`: the task, its context, whether it is the answer's first
    /// piece.
    fn of(&mut self, e: &TurnEvent) -> (&str, &Value, bool) {
        if let TurnEvent::Start { session_id, .. } = e {
            self.context = json!(session_id);
            self.started = true;
        }
        let first = matches!(e, TurnEvent::Chunk { .. }) && {
            self.chunks += 1;
            self.chunks == 1
        };
        (&self.task, &self.context, first)
    }
}

/// One turn event as an A2A `StreamResponse` (none for what A2A has no
/// place for).
fn stream_response((task, context, first): (&str, &Value, bool), e: &TurnEvent) -> Option<Value> {
    let agent = |text: &str, metadata: Value| {
        json!({"messageId": format!("{task}-{}", ulid::Ulid::new()), "contextId": context,
               "taskId": task, "role": "ROLE_AGENT", "parts": [{"text": text}], "metadata": metadata})
    };
    let working = |message: Value| {
        json!({"statusUpdate": {"taskId": task, "contextId": context,
               "status": {"state": "TASK_STATE_WORKING", "message": message,
                          "timestamp": iris_core::iso8601(iris_core::now_ms())}}})
    };
    Some(match e {
        TurnEvent::Start { .. } => json!({"task": {"id": task, "contextId": context,
            "status": {"state": "TASK_STATE_WORKING", "timestamp": iris_core::iso8601(iris_core::now_ms())}}}),
        TurnEvent::Chunk { data, .. } => {
            json!({"artifactUpdate": {"taskId": task, "contextId": context,
            "artifact": {"artifactId": format!("{task}-answer"), "name": "answer",
                         "parts": [{"text": data["text"]}]},
            "append": !first, "lastChunk": false}})
        }
        TurnEvent::ToolUse { data, .. } => working(agent(
            &format!("using {}", data["tool"].as_str().unwrap_or("a tool")),
            json!({"toolUse": data}),
        )),
        TurnEvent::ToolResult { data, .. } => working(agent(
            data["output"].as_str().unwrap_or_default(),
            json!({"toolResult": data}),
        )),
        TurnEvent::Plan { data, .. } => working(agent("plan", json!({"plan": data}))),
        TurnEvent::Complete {
            status, response, ..
        } => {
            let state = state_of(json!(status).as_str().unwrap_or_default());
            json!({"statusUpdate": {"taskId": task, "contextId": context,
                "status": {"state": state, "message": agent(response, Value::Null),
                           "timestamp": iris_core::iso8601(iris_core::now_ms())}}})
        }
        TurnEvent::Error { error, .. } => {
            json!({"statusUpdate": {"taskId": task, "contextId": context,
            "status": {"state": "TASK_STATE_FAILED", "message": agent(&error.message, Value::Null),
                       "timestamp": iris_core::iso8601(iris_core::now_ms())}}})
        }
    })
}

type Outcome = Result<Value, (i64, IrisError)>;

struct Calls<'a> {
    state: &'a AppState,
    ctx: Ctx,
    team: &'a str,
}

impl Calls<'_> {
    async fn op(&self, name: &str, params: Value) -> Outcome {
        self.state
            .iris
            .dispatch(self.ctx.clone(), name, params)
            .await
            .map_err(|e| (code_of(&e), e))
    }

    /// The text of a message's parts (text parts only).
    fn text_of(params: &Value) -> Result<String, (i64, IrisError)> {
        let Some(parts) = params["message"]["parts"]
            .as_array()
            .filter(|p| !p.is_empty())
            .cloned()
        else {
            return Err((
                -32602,
                IrisError::validation(
                    "message.parts",
                    "a message with a list of parts (at least one) is required",
                ),
            ));
        };
        if let Some(c) = params["message"]
            .get("contextId")
            .filter(|c| !c.is_string() && !c.is_null())
        {
            return Err((
                -32602,
                IrisError::validation("message.contextId", format!("must be a string, not {c}")),
            ));
        }
        let text: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
        if text.is_empty() || parts.len() != text.len() {
            return Err((
                -32005,
                IrisError::validation(
                    "message.parts",
                    "text parts only: each part must be {\"text\": …}",
                ),
            ));
        }
        Ok(text.join("\n"))
    }

    /// `SendStreamingMessage`: the turn, followed — or, for a message on a
    /// task waiting for input, the answer decided and the task followed
    /// again.
    async fn send_streaming(&self, params: &Value) -> Result<Streamed, (i64, IrisError)> {
        // Subscribed first: an approval asked at once is not missed.
        let asked = self.state.iris.watch("system");
        if let Some(task) = params["message"]["taskId"].as_str() {
            let push = self.inline_push(params).await?;
            self.decide(task, &params["message"]).await?;
            if let Some(push) = push {
                self.push_set(task, &push).await?;
            }
            let follower = self
                .state
                .iris
                .follow(&self.ctx, task, None)
                .await
                .map_err(|e| (code_of(&e), e))?;
            return Ok(Streamed::Follow(follower, asked));
        }
        let text = Self::text_of(params)?;
        let push = self.inline_push(params).await?;
        let mut call = json!({"toTeam": self.team, "message": text});
        if let Some(c) = params["message"]["contextId"].as_str() {
            call["sessionId"] = c.into();
        }
        let follower = self
            .state
            .iris
            .send_and_follow(&self.ctx, call)
            .await
            .map_err(|e| (code_of(&e), e))?;
        if let Some(push) = push {
            let id = follower.message_id().to_owned();
            self.push_set_or_stop(&id, &push, &params["message"]["contextId"])
                .await?;
        }
        Ok(Streamed::Follow(follower, asked))
    }

    /// A send's `configuration.taskPushNotificationConfig`, checked before
    /// anything is sent.
    async fn inline_push(&self, params: &Value) -> Result<Option<Value>, (i64, IrisError)> {
        match params.pointer("/configuration/taskPushNotificationConfig") {
            None | Some(Value::Null) => Ok(None),
            Some(c) if c["url"].is_string() => {
                let (id, token, auth) = push_parts(c);
                self.state
                    .iris
                    .check_push_config(id, c["url"].as_str().unwrap_or_default(), token, auth)
                    .await
                    .map_err(|e| (-32602, e))?;
                Ok(Some(c.clone()))
            }
            Some(_) => Err((
                -32602,
                IrisError::validation(
                    "configuration.taskPushNotificationConfig.url",
                    "a push notification config needs a url",
                ),
            )),
        }
    }

    /// Write push config `c` (A2A's `TaskPushNotificationConfig`) for task
    /// `task`; the config as A2A shows it.
    async fn push_set(&self, task: &str, c: &Value) -> Outcome {
        let (id, token, auth) = push_parts(c);
        let mut set = json!({"team": self.team, "messageId": task, "url": c["url"]});
        if let Some(id) = id {
            set["configId"] = id.into();
        }
        if let Some(t) = token {
            set["token"] = t.into();
        }
        if let Some((scheme, credentials)) = auth {
            set["authentication"] = json!({"scheme": scheme});
            if let Some(cred) = credentials {
                set["authentication"]["credentials"] = cred.into();
            }
        }
        let row = self.op("task_push_set", set).await?;
        Ok(push_config_of(&row))
    }

    /// A new task's inline config; if it cannot be written (checked
    /// before the send, it can still be rate limited or meet a database
    /// error), the task is cancelled: the caller gets the error and no task
    /// runs that it cannot hear of.
    async fn push_set_or_stop(&self, task: &str, c: &Value, context: &Value) -> Outcome {
        match self.push_set(task, c).await {
            Ok(v) => Ok(v),
            Err(e) => {
                let mut cancel = json!({"toTeam": self.team, "messageId": task});
                if context.is_string() {
                    cancel["sessionId"] = context.clone();
                }
                let _ = self.op("session_cancel", cancel).await;
                Err(e)
            }
        }
    }

    /// `CreateTaskPushNotificationConfig`: a config for one of this team's
    /// tasks.
    async fn push_create(&self, params: &Value) -> Outcome {
        let task = Self::task_param(params, "taskId")?;
        self.task_of_id(task).await?;
        self.push_set(task, params).await
    }

    async fn push_get(&self, params: &Value) -> Outcome {
        let task = Self::task_param(params, "taskId")?;
        self.task_of_id(task).await?;
        let id = Self::task_param(params, "id")?;
        let row = self
            .op(
                "task_push_get",
                json!({"team": self.team, "messageId": task, "configId": id}),
            )
            .await?;
        Ok(push_config_of(&row))
    }

    async fn push_list(&self, params: &Value) -> Outcome {
        let task = Self::task_param(params, "taskId")?;
        self.task_of_id(task).await?;
        let l = self
            .op(
                "task_push_list",
                json!({"team": self.team, "messageId": task}),
            )
            .await?;
        let configs: Vec<Value> = l["configs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(push_config_of)
            .collect();
        Ok(json!({"configs": configs, "nextPageToken": ""}))
    }

    async fn push_delete(&self, params: &Value) -> Outcome {
        let task = Self::task_param(params, "taskId")?;
        self.task_of_id(task).await?;
        let id = Self::task_param(params, "id")?;
        self.op(
            "task_push_delete",
            json!({"team": self.team, "messageId": task, "configId": id}),
        )
        .await?;
        Ok(json!({}))
    }

    /// `FORBIDDEN` unless the caller may call operation `op`.
    fn may(&self, op: &str) -> Checked {
        match scope_of(op) {
            Some(scope) => self
                .state
                .iris
                .permit(&self.ctx, scope, false, op, Some(self.team))
                .map_err(|e| (code_of(&e), e)),
            None => Ok(()),
        }
    }

    /// A required string parameter.
    fn task_param<'p>(params: &'p Value, name: &str) -> Result<&'p str, (i64, IrisError)> {
        params[name]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                (
                    -32602,
                    IrisError::validation(name, format!("`{name}` (a string) is required")),
                )
            })
    }

    /// `SubscribeToTask`: one of this team's turns, followed from its start
    /// (one waiting for input: as it is).
    async fn subscribe(&self, params: &Value) -> Result<Streamed, (i64, IrisError)> {
        let id = params["id"].as_str().unwrap_or_default();
        let asked = self.state.iris.watch("system");
        let task = self.task_of_id(id).await?;
        if task["status"]["state"] == "TASK_STATE_INPUT_REQUIRED" {
            return Ok(Streamed::Snapshot(task));
        }
        let follower = self
            .state
            .iris
            .follow(&self.ctx, id, None)
            .await
            .map_err(|e| (code_of(&e), e))?;
        Ok(Streamed::Follow(follower, asked))
    }

    /// `SendMessage`: the turn, run to its end (`returnImmediately`: queued
    /// and returned at once).
    async fn send(&self, params: &Value) -> Outcome {
        let message = &params["message"];
        if let Some(task) = message["taskId"].as_str() {
            let push = self.inline_push(params).await?;
            return self
                .answer(task, message, push.as_ref())
                .await
                .map(|t| json!({"task": t}));
        }
        let text = Self::text_of(params)?;
        let mut call = json!({"toTeam": self.team, "message": text});
        if let Some(c) = message["contextId"].as_str() {
            call["sessionId"] = c.into();
        }
        let push = self.inline_push(params).await?;
        let sent = self.op("quick_message", call).await?;
        let id = sent["messageId"].as_str().unwrap_or_default().to_owned();
        if let Some(push) = push {
            self.push_set_or_stop(&id, &push, &sent["sessionId"])
                .await?;
        }
        // (`settle` looks at the task after subscribing: nothing is missed.)
        let watch = self.watch(&sent["sessionId"]);
        let task = if params.pointer("/configuration/returnImmediately") == Some(&json!(true)) {
            self.task_of_id(&id).await?
        } else {
            self.settle(&id, watch).await?
        };
        Ok(json!({"task": task}))
    }

    /// The caller's next message on a task that waits for input: its data
    /// part `{"decision": "allow" | "deny", "reason"?}` decides the
    /// permission the agent asked; then the task as it settles again.
    async fn answer(&self, task: &str, message: &Value, push: Option<&Value>) -> Outcome {
        let current = self.task_of_id(task).await?;
        let watch = self.watch(&current["contextId"]);
        self.decide(task, message).await?;
        // Its push config, once the answer is taken (a refused answer
        // writes nothing).
        if let Some(push) = push {
            self.push_set(task, push).await?;
        }
        self.settle(task, watch).await
    }

    /// Decide the permission task `task` waits on, as the data part of
    /// `message` says.
    async fn decide(&self, task: &str, message: &Value) -> Result<(), (i64, IrisError)> {
        let decision = message["parts"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|p| p.get("data").filter(|d| d.is_object()))
            .cloned();
        let Some(decision) = decision else {
            return Err((
                -32602,
                IrisError::validation(
                    "message.parts",
                    "a message on a task waiting for input carries a data part {\"decision\": \"allow\" | \"deny\", \"reason\"?}",
                ),
            ));
        };
        let Some(verdict) = decision["decision"]
            .as_str()
            .filter(|d| matches!(*d, "allow" | "deny"))
        else {
            return Err((
                -32602,
                IrisError::validation("message.parts.data.decision", "\"allow\" or \"deny\""),
            ));
        };
        // Unknown or another team's: nothing is decided.
        self.task_of_id(task).await?;
        let Some(approval) = self.waiting_approval(task).await? else {
            return Err((
                -32602,
                IrisError::validation(
                    "message.taskId",
                    format!("task `{task}` is not waiting for input"),
                ),
            ));
        };
        let mut decide = json!({"approvalId": approval["id"], "decision": verdict});
        match &decision["reason"] {
            Value::Null => {}
            Value::String(r) => decide["reason"] = r.as_str().into(),
            _ => return Err(bad("message.parts.data.reason", "must be a string")),
        }
        self.op("approval_decide", decide).await?;
        Ok(())
    }

    /// The pending approval turn `id` waits on, if any.
    async fn waiting_approval(&self, id: &str) -> Result<Option<Value>, (i64, IrisError)> {
        pending_approval(&self.state.iris, &self.ctx, self.team, id)
            .await
            .map_err(|e| (code_of(&e), e))
    }

    /// The conversation's events, to wake [`Self::settle`].
    fn watch(&self, context: &Value) -> iris_core::bus::Subscription {
        self.state
            .iris
            .watch(&format!("session:{}", context.as_str().unwrap_or_default()))
    }

    /// Turn `id` once it has ended or waits for input (an event of the turn
    /// on `watch`, or a look every second).
    async fn settle(&self, id: &str, mut watch: iris_core::bus::Subscription) -> Outcome {
        let until = tokio::time::Instant::now() + SETTLE_LIMIT;
        loop {
            let task = self.task_of_id(id).await?;
            let state = task["status"]["state"].as_str().unwrap_or_default();
            if !matches!(state, "TASK_STATE_SUBMITTED" | "TASK_STATE_WORKING")
                || tokio::time::Instant::now() >= until
            {
                return Ok(task);
            }
            let event = async {
                loop {
                    match watch.recv().await {
                        Some(Delivery::Event(e))
                            if e.turn_id.as_deref() == Some(id)
                                && matches!(
                                    e.kind,
                                    EventKind::ApprovalRequested | EventKind::TurnCompleted
                                ) =>
                        {
                            return;
                        }
                        Some(_) => {}
                        None => std::future::pending::<()>().await,
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), event).await;
        }
    }

    async fn get(&self, params: &Value) -> Outcome {
        let id = params["id"].as_str().unwrap_or_default();
        self.task_of_id(id).await
    }

    async fn cancel(&self, params: &Value) -> Outcome {
        let id = params["id"].as_str().unwrap_or_default();
        // A caller who may not cancel learns nothing of the task's state.
        self.may("session_cancel")?;
        let task = self.task_of_id(id).await?;
        let state = task["status"]["state"].as_str().unwrap_or_default();
        if !matches!(
            state,
            "TASK_STATE_SUBMITTED" | "TASK_STATE_WORKING" | "TASK_STATE_INPUT_REQUIRED"
        ) {
            return Err((
                -32002,
                IrisError::conflict(format!("task `{id}` has ended ({state})")),
            ));
        }
        let done = self
            .op(
                "session_cancel",
                json!({"toTeam": self.team, "sessionId": task["contextId"], "messageId": id}),
            )
            .await?;
        if done["cancelled"] == false {
            return Err((
                -32002,
                IrisError::conflict(format!("task `{id}` could not be cancelled")),
            ));
        }
        // Its end is written as the turn stops.
        for _ in 0..50 {
            let t = self.task_of_id(id).await?;
            if !matches!(
                t["status"]["state"].as_str(),
                Some("TASK_STATE_WORKING" | "TASK_STATE_INPUT_REQUIRED")
            ) {
                return Ok(t);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        self.task_of_id(id).await
    }

    async fn list(&self, params: &Value) -> Outcome {
        let bad = |field: &str, what: &str| Err((-32602, IrisError::validation(field, what)));
        let size = match params.get("pageSize").filter(|v| !v.is_null()) {
            None => 50,
            Some(v) => match v.as_u64().filter(|n| (1..=100).contains(n)) {
                Some(n) => n,
                None => return bad("pageSize", "1 to 100"),
            },
        };
        let page = match params["pageToken"].as_str().filter(|t| !t.is_empty()) {
            None => 1,
            Some(t) => match t.parse::<i64>().ok().filter(|p| *p >= 1) {
                Some(p) => p,
                None => return bad("pageToken", "a token this endpoint gave"),
            },
        };
        let mut query = json!({"team": self.team, "limit": size, "page": page});
        if let Some(c) = params["contextId"].as_str() {
            query["sessionId"] = c.into();
        }
        let h = self.op("message_history", query).await?;
        let mut tasks: Vec<Value> = h["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(task_of)
            .collect();
        if tasks
            .iter()
            .any(|t| t["status"]["state"] == "TASK_STATE_WORKING")
            && may_see_approvals(&self.ctx)
            && let Ok(l) = self
                .op(
                    "approval_list",
                    json!({"team": self.team, "status": "pending", "limit": 1000}),
                )
                .await
        {
            for a in l["approvals"].as_array().into_iter().flatten() {
                if let Some(t) = tasks.iter_mut().find(|t| t["id"] == a["turnId"]) {
                    waiting_for(t, a);
                }
            }
        }
        let next = if h["pagination"]["hasNext"] == true {
            (page + 1).to_string()
        } else {
            String::new()
        };
        Ok(
            json!({"tasks": tasks, "nextPageToken": next, "pageSize": size,
                  "totalSize": h["pagination"]["total"]}),
        )
    }

    /// Turn `id` of this team as a task; another team's (or none) is
    /// TaskNotFound.
    async fn task_of_id(&self, id: &str) -> Outcome {
        let not_found = || {
            (
                -32001,
                IrisError::not_found(format!("no task `{id}` of team `{}`", self.team)),
            )
        };
        if id.is_empty() {
            return Err((
                -32602,
                IrisError::validation("id", "a task id (string) is required"),
            ));
        }
        let m = self
            .op("get_message", json!({"messageId": id}))
            .await
            .map_err(|(code, e)| match e.kind {
                iris_core::ErrorKind::NotFound | iris_core::ErrorKind::SessionNotFound => {
                    not_found()
                }
                _ => (code, e),
            })?;
        if m["toTeam"] != self.team {
            return Err(not_found());
        }
        let mut task = task_of(&m);
        if task["status"]["state"] == "TASK_STATE_WORKING"
            && let Some(a) = self.waiting_approval(id).await.ok().flatten()
        {
            waiting_for(&mut task, &a);
        }
        Ok(task)
    }
}

/// An Iris push config as A2A's `TaskPushNotificationConfig` (the
/// credential is never shown back).
fn push_config_of(row: &Value) -> Value {
    let mut c = json!({"id": row["id"], "taskId": row["taskId"], "url": row["url"]});
    if let Some(t) = row["token"].as_str() {
        c["token"] = t.into();
    }
    if let Some(s) = row["authScheme"].as_str() {
        c["authentication"] = json!({"scheme": s});
    }
    c
}

/// A push config's authentication: scheme and credentials.
type Authentication<'a> = (&'a str, Option<&'a str>);

/// A2A's `TaskPushNotificationConfig` read: its id, token and
/// authentication (scheme, credentials), each only when given.
fn push_parts(c: &Value) -> (Option<&str>, Option<&str>, Option<Authentication<'_>>) {
    fn given(v: &Value) -> Option<&str> {
        v.as_str().filter(|s| !s.is_empty())
    }
    let auth = given(&c["authentication"]["scheme"])
        .map(|scheme| (scheme, given(&c["authentication"]["credentials"])));
    (given(&c["id"]), given(&c["token"]), auth)
}
