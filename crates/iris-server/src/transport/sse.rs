//! Server-Sent Events: `POST /teams/:team/stream` sends a message and
//! streams its turn; `GET /messages/:id/stream` follows an existing one,
//! resuming after `Last-Event-ID`. Events: `start`, `chunk`, `tool_use`,
//! `complete`, `error` (seed 002); each item's `id` is its sequence number.
//! A client that goes away does not cancel the turn.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use futures_util::Stream;
use iris_core::pool::turn::{FollowStep, StreamItem, StreamKind, TurnStatus, TurnTracker};
use iris_core::{IrisError, TurnStream};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;
use crate::gate::caller::{self as auth, Caller, RequestId};
use crate::params::{Body, body_object};

pub fn routes(prefix: &str) -> Router<AppState> {
    Router::new()
        .route(
            &format!("{prefix}/teams/{{team}}/stream"),
            post(send_and_stream),
        )
        .route(&format!("{prefix}/messages/{{id}}/stream"), get(follow))
}

type Events = std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>>;
type EventStream = Sse<axum::response::sse::KeepAliveStream<Events>>;

fn item_event(item: &StreamItem) -> Event {
    let name = match item.kind {
        StreamKind::Chunk => "chunk",
        StreamKind::ToolUse => "tool_use",
    };
    Event::default()
        .event(name)
        .id(item.seq.to_string())
        .data(item.data.to_string())
}

/// The closing event of a turn.
fn end_event(
    message_id: &str,
    status: &str,
    response: &str,
    error: Option<&str>,
    duration: Option<i64>,
    usage: &Value,
) -> Event {
    let ok = matches!(status, "completed" | "cancelled");
    let data = if ok {
        json!({"messageId": message_id, "status": status, "response": response, "duration": duration,
               "usage": usage, "timestamp": iris_core::now_ms()})
    } else {
        json!({"messageId": message_id, "status": status, "code": "PROCESS_ERROR",
               "error": error.unwrap_or("the turn failed"), "partialResponse": response,
               "timestamp": iris_core::now_ms()})
    };
    Event::default()
        .event(if ok { "complete" } else { "error" })
        .data(data.to_string())
}

enum Source {
    Live(Arc<TurnTracker>),
    Ended,
}

struct Follow {
    source: Source,
    after: u64,
    queue: VecDeque<Event>,
    _open: OpenStream,
}

/// Counts an open stream for the metrics while it lives.
struct OpenStream(Arc<AtomicUsize>);

impl OpenStream {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        OpenStream(counter.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn stream_of(turn: TurnStream, after: u64, open: OpenStream) -> EventStream {
    let mut queue = VecDeque::new();
    let source = match turn {
        TurnStream::Live(t) => {
            if after == 0 {
                let start = json!({"messageId": t.id, "team": t.team, "sessionId": t.session_id});
                queue.push_back(
                    Event::default()
                        .event("start")
                        .id("0")
                        .data(start.to_string()),
                );
            }
            Source::Live(t)
        }
        TurnStream::Stored { row, items } => {
            if after == 0 {
                let start =
                    json!({"messageId": row.id, "team": row.to_team, "sessionId": row.session_id});
                queue.push_back(
                    Event::default()
                        .event("start")
                        .id("0")
                        .data(start.to_string()),
                );
            }
            queue.extend(items.iter().map(item_event));
            if matches!(row.status.as_str(), "queued" | "running") {
                // Left unfinished by a previous run and not in memory: nothing more will come.
                queue.push_back(end_event(
                    &row.id,
                    "failed",
                    "",
                    Some("the turn is no longer running"),
                    None,
                    &Value::Null,
                ));
            } else {
                let duration = row.completed_at.map(|c| c - row.created_at);
                queue.push_back(end_event(
                    &row.id,
                    &row.status,
                    row.response.as_deref().unwrap_or_default(),
                    row.error.as_deref(),
                    duration,
                    row.usage.as_ref().unwrap_or(&Value::Null),
                ));
            }
            Source::Ended
        }
    };
    let state = Follow {
        source,
        after,
        queue,
        _open: open,
    };
    let s = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(e) = st.queue.pop_front() {
                return Some((Ok(e), st));
            }
            let Source::Live(t) = &st.source else {
                return None;
            };
            let t = t.clone();
            match t.next_after(st.after).await {
                FollowStep::Items(items) => {
                    if let Some(last) = items.last() {
                        st.after = last.seq;
                    }
                    st.queue.extend(items.iter().map(item_event));
                }
                FollowStep::Done(o) => {
                    let status = match o.status {
                        TurnStatus::Completed => "completed",
                        TurnStatus::Cancelled => "cancelled",
                        TurnStatus::TimedOut => "timed_out",
                        _ => "failed",
                    };
                    st.queue.push_back(end_event(
                        &t.id,
                        status,
                        &o.response,
                        o.error.as_deref(),
                        Some(o.duration_ms as i64),
                        o.usage.as_ref().unwrap_or(&Value::Null),
                    ));
                    st.source = Source::Ended;
                }
            }
        }
    });
    Sse::new(Box::pin(s) as Events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn send_and_stream(
    State(state): State<AppState>,
    rid: RequestId,
    who: Caller,
    Path(team): Path<String>,
    Body(body): Body,
) -> Result<EventStream, ApiError> {
    let fail = |e: IrisError| ApiError::new(e, &rid);
    let ctx = auth::caller(&who).map_err(fail)?;
    let mut params = body_object(&body).map_err(fail)?;
    if let Some(q) = params.remove("question") {
        params.entry("message").or_insert(q);
    }
    params.remove("stream");
    params.insert("toTeam".into(), json!(team));
    let turn = state
        .iris
        .send_and_follow(&ctx, Value::Object(params))
        .await
        .map_err(fail)?;
    Ok(stream_of(turn, 0, OpenStream::new(&state.sse_streams)))
}

async fn follow(
    State(state): State<AppState>,
    rid: RequestId,
    who: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<EventStream, ApiError> {
    let fail = |e: IrisError| ApiError::new(e, &rid);
    let ctx = auth::caller(&who).map_err(fail)?;
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            query
                .iter()
                .find(|(k, _)| k == "after")
                .map(|(_, v)| v.clone())
        });
    let after = match after {
        Some(v) => v.trim().parse::<u64>().map_err(|_| {
            fail(IrisError::validation(
                "Last-Event-ID",
                "must be a non-negative integer",
            ))
        })?,
        None => 0,
    };
    let turn = state.iris.follow(&ctx, &id, after).await.map_err(fail)?;
    Ok(stream_of(turn, after, OpenStream::new(&state.sse_streams)))
}
