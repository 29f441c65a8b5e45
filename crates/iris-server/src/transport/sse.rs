//! Server-Sent Events: `POST /teams/:team/stream` sends a message and
//! streams its turn; `GET /messages/:id/stream` follows an existing one,
//! resuming after `Last-Event-ID`. Events: `start`, `chunk`, `tool_use`,
//! `complete`, `error` (seed 002); each item's `id` is its sequence number.
//! A client that goes away does not cancel the turn.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use futures_util::Stream;
use iris_core::{Follower, IrisError, TurnEvent};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::gate::caller::Caller;
use crate::params::{Object, Segment};
use crate::state::AppState;

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

/// A turn's event as SSE: its name, its number as the `id` (for
/// `Last-Event-ID`; the end has none), its JSON as the data.
fn render(e: &TurnEvent) -> Event {
    let event = Event::default().event(e.name()).data(e.data().to_string());
    match e.seq() {
        Some(seq) => event.id(seq.to_string()),
        None => event,
    }
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

fn stream_of(follower: Follower, open: OpenStream) -> EventStream {
    use futures_util::StreamExt;
    let events = follower.into_stream().map(move |e| {
        // The count lives as long as the stream.
        let _ = &open;
        Ok(render(&e))
    });
    Sse::new(Box::pin(events) as Events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn send_and_stream(
    State(state): State<AppState>,
    who: Caller,
    Segment(team): Segment,
    Object(mut params): Object,
) -> Result<EventStream, ApiError> {
    let ctx = who.ctx()?;
    params.remove("stream");
    params.insert("toTeam".into(), json!(team));
    let follower = state
        .iris
        .send_and_follow(&ctx, Value::Object(params))
        .await
        .map_err(|e| who.fail(e))?;
    Ok(stream_of(follower, OpenStream::new(&state.sse_streams)))
}

async fn follow(
    State(state): State<AppState>,
    who: Caller,
    headers: HeaderMap,
    Segment(id): Segment,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<EventStream, ApiError> {
    let ctx = who.ctx()?;
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
        Some(v) => Some(v.trim().parse::<u64>().map_err(|_| {
            who.fail(IrisError::validation(
                "Last-Event-ID",
                "must be a non-negative integer",
            ))
        })?),
        None => None,
    };
    let follower = state
        .iris
        .follow(&ctx, &id, after)
        .await
        .map_err(|e| who.fail(e))?;
    Ok(stream_of(follower, OpenStream::new(&state.sse_streams)))
}
