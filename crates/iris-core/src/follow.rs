//! Following a turn: the events every streaming transport renders (SSE,
//! both WebSockets, and MCP progress or Socket.IO next), in order —
//! [`TurnEvent::Start`], then chunks and tool uses, then
//! [`TurnEvent::Complete`] or [`TurnEvent::Error`] — for a turn still
//! running or one read back from the database.

use std::collections::VecDeque;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use iris_storage::{Store, TurnRow};
use serde_json::{Value, json};

use crate::bus::{Delivery, Event, EventKind, Subscription};

use crate::error::IrisError;
use crate::pool::turn::{FollowStep, StreamItem, StreamKind, TurnOutcome, TurnStatus, TurnTracker};

/// A turn to follow: still in memory, ended and read back, or running
/// on another node of the cluster.
pub enum TurnStream {
    Live(Arc<TurnTracker>),
    Stored {
        row: Box<TurnRow>,
        items: Vec<StreamItem>,
    },
    /// Running on another node: see [`elsewhere`].
    Elsewhere {
        row: Box<TurnRow>,
        events: BoxStream<'static, TurnEvent>,
    },
}

impl TurnStream {
    /// Message id, team and session of the followed turn.
    pub fn ids(&self) -> (&str, &str, &str) {
        match self {
            TurnStream::Live(t) => (&t.id, &t.team, &t.session_id),
            TurnStream::Stored { row, .. } | TurnStream::Elsewhere { row, .. } => {
                (&row.id, &row.to_team, &row.session_id)
            }
        }
    }
}

/// One thing a follower of a turn sees.
#[derive(Debug, Clone)]
pub enum TurnEvent {
    /// The turn's ids; sent first, and only to a follower from the start.
    Start {
        message_id: String,
        team: String,
        session_id: String,
    },
    /// Text the agent wrote (`seq`: the agent output line it came from).
    Chunk { seq: u64, data: Value },
    /// A tool the agent used.
    ToolUse { seq: u64, data: Value },
    /// What a tool gave back: `{id, isError, output, truncated?, durationMs?}`.
    ToolResult { seq: u64, data: Value },
    /// The agent's plan, whole: `{entries}`.
    Plan { seq: u64, data: Value },
    /// The end of a turn that completed or was cancelled.
    Complete {
        message_id: String,
        status: TurnStatus,
        response: String,
        duration_ms: Option<u64>,
        usage: Value,
    },
    /// The end of a turn that failed or timed out, as an error of the one
    /// table (its kind gives the code).
    Error {
        message_id: String,
        status: TurnStatus,
        error: IrisError,
        partial_response: String,
    },
}

impl TurnEvent {
    /// The event's name: `start`, `chunk`, `tool_use`, `complete`, `error`
    /// (seed 002's SSE event names).
    pub fn name(&self) -> &'static str {
        match self {
            TurnEvent::Start { .. } => "start",
            TurnEvent::Chunk { .. } => "chunk",
            TurnEvent::ToolUse { .. } => "tool_use",
            TurnEvent::ToolResult { .. } => "tool_result",
            TurnEvent::Plan { .. } => "plan",
            TurnEvent::Complete { .. } => "complete",
            TurnEvent::Error { .. } => "error",
        }
    }

    /// Where a follower can resume after this event: `0` for the start, the
    /// item's `seq` for chunks and tool uses, none for the end.
    pub fn seq(&self) -> Option<u64> {
        match self {
            TurnEvent::Start { .. } => Some(0),
            TurnEvent::Chunk { seq, .. }
            | TurnEvent::ToolUse { seq, .. }
            | TurnEvent::ToolResult { seq, .. }
            | TurnEvent::Plan { seq, .. } => Some(*seq),
            _ => None,
        }
    }

    /// The event's JSON (camelCase, timestamps in Unix ms):
    /// start `{messageId, team, sessionId}`; chunk, tool use and tool result
    /// the agent's data (`{text}`, `{id, tool, input}`, `{id, isError,
    /// output, truncated?, durationMs?}`); complete `{messageId, status,
    /// response, duration, usage, timestamp}`; error `{messageId, status,
    /// code, error, partialResponse, timestamp}`.
    pub fn data(&self) -> Value {
        match self {
            TurnEvent::Start {
                message_id,
                team,
                session_id,
            } => json!({"messageId": message_id, "team": team, "sessionId": session_id}),
            TurnEvent::Chunk { data, .. }
            | TurnEvent::ToolUse { data, .. }
            | TurnEvent::ToolResult { data, .. }
            | TurnEvent::Plan { data, .. } => data.clone(),
            TurnEvent::Complete {
                message_id,
                status,
                response,
                duration_ms,
                usage,
            } => json!({"messageId": message_id, "status": status, "response": response,
                        "duration": duration_ms, "usage": usage, "timestamp": crate::clock::now_ms()}),
            TurnEvent::Error {
                message_id,
                status,
                error,
                partial_response,
            } => json!({"messageId": message_id, "status": status, "code": error.kind.code(),
                        "error": error.message, "partialResponse": partial_response,
                        "timestamp": crate::clock::now_ms()}),
        }
    }

    /// Whether this is the turn's last event.
    pub fn is_end(&self) -> bool {
        matches!(self, TurnEvent::Complete { .. } | TurnEvent::Error { .. })
    }

    fn item(item: StreamItem) -> TurnEvent {
        let StreamItem { seq, kind, data } = item;
        match kind {
            StreamKind::Chunk => TurnEvent::Chunk { seq, data },
            StreamKind::ToolUse => TurnEvent::ToolUse { seq, data },
            StreamKind::ToolResult => TurnEvent::ToolResult { seq, data },
            StreamKind::Plan => TurnEvent::Plan { seq, data },
        }
    }

    /// The end event of a turn the database has ended with `status`.
    fn stored_end(row: &TurnRow, status: TurnStatus) -> TurnEvent {
        TurnEvent::end(
            &row.id,
            status,
            row.response.as_deref().unwrap_or_default(),
            row.error.as_deref(),
            row.completed_at.map(|c| (c - row.created_at).max(0) as u64),
            row.usage.as_ref(),
        )
    }

    /// The end event of a turn.
    fn end(
        message_id: &str,
        status: TurnStatus,
        response: &str,
        error: Option<&str>,
        duration_ms: Option<u64>,
        usage: Option<&Value>,
    ) -> TurnEvent {
        match failure(status, error) {
            None => TurnEvent::Complete {
                message_id: message_id.to_owned(),
                status,
                response: response.to_owned(),
                duration_ms,
                usage: usage.cloned().unwrap_or(Value::Null),
            },
            Some(error) => TurnEvent::Error {
                message_id: message_id.to_owned(),
                status,
                error,
                partial_response: response.to_owned(),
            },
        }
    }
}

/// The error a turn that ended with `status` stands for: failed and timed
/// out turns are `PROCESS_ERROR` with the agent's reason; completed and
/// cancelled ones are none. The one mapping for waiting callers and
/// followers alike.
pub fn failure(status: TurnStatus, reason: Option<&str>) -> Option<IrisError> {
    match status {
        TurnStatus::Failed | TurnStatus::TimedOut => Some(IrisError::process(
            reason.unwrap_or("the turn failed").to_owned(),
        )),
        _ => None,
    }
}

impl TurnOutcome {
    /// See [`failure`].
    pub fn failure(&self) -> Option<IrisError> {
        failure(self.status, self.error.as_deref())
    }
}

/// Reads a turn's events one by one.
pub struct Follower {
    message_id: String,
    live: Option<Arc<TurnTracker>>,
    elsewhere: Option<BoxStream<'static, TurnEvent>>,
    after: u64,
    queue: VecDeque<TurnEvent>,
}

impl Follower {
    /// Follow `turn`: from its start when `after` is `None` (the start event
    /// first), else from the items after the one numbered `after` (a
    /// `Last-Event-ID`: `0` is the start event, so nothing is replayed
    /// twice).
    pub fn new(turn: TurnStream, after: Option<u64>) -> Follower {
        let mut queue = VecDeque::new();
        let (id, team, session) = turn.ids();
        let message_id = id.to_owned();
        if after.is_none() {
            queue.push_back(TurnEvent::Start {
                message_id: id.to_owned(),
                team: team.to_owned(),
                session_id: session.to_owned(),
            });
        }
        let after = after.unwrap_or(0);
        let mut elsewhere = None;
        let live = match turn {
            TurnStream::Live(t) => Some(t),
            TurnStream::Elsewhere { events, .. } => {
                elsewhere = Some(events);
                None
            }
            TurnStream::Stored { row, items } => {
                queue.extend(
                    items
                        .into_iter()
                        .filter(|i| i.seq > after)
                        .map(TurnEvent::item),
                );
                queue.push_back(match TurnStatus::parse(&row.status) {
                    Some(status) if status.is_final() => TurnEvent::stored_end(&row, status),
                    // Left unfinished by a previous run and not in memory:
                    // nothing more will come.
                    _ => TurnEvent::end(
                        &row.id,
                        TurnStatus::Failed,
                        "",
                        Some("the turn is no longer running"),
                        None,
                        None,
                    ),
                });
                None
            }
        };
        Follower {
            message_id,
            live,
            elsewhere,
            after,
            queue,
        }
    }

    /// The id of the followed turn (its message id).
    pub fn message_id(&self) -> &str {
        &self.message_id
    }

    /// The next event; `None` after the end.
    pub async fn next(&mut self) -> Option<TurnEvent> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some(e);
            }
            if let Some(events) = self.elsewhere.as_mut() {
                let e = events.next().await;
                if e.as_ref().is_none_or(TurnEvent::is_end) {
                    self.elsewhere = None;
                }
                return e;
            }
            let t = self.live.clone()?;
            match t.next_after(self.after).await {
                FollowStep::Items(items) => {
                    if let Some(last) = items.last() {
                        self.after = last.seq;
                    }
                    self.queue.extend(items.into_iter().map(TurnEvent::item));
                }
                FollowStep::Done(o) => {
                    self.queue.push_back(TurnEvent::end(
                        &t.id,
                        o.status,
                        &o.response,
                        o.error.as_deref(),
                        Some(o.duration_ms),
                        o.usage.as_ref(),
                    ));
                    self.live = None;
                }
            }
        }
    }

    /// The events as a stream.
    pub fn into_stream(self) -> impl futures_util::Stream<Item = TurnEvent> + Send + 'static {
        futures_util::stream::unfold(self, |mut f| async move { f.next().await.map(|e| (e, f)) })
    }
}

/// How often a follower of a turn on another node asks the database
/// whether it ended (its end event may never come: Redis down, the node
/// gone).
const ELSEWHERE_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// The events of turn `row`, running on node `owner`, after item `after`:
/// first what Redis kept of it (`replay`), then what `sub` (its
/// conversation's topic, subscribed before the replay was read) hears,
/// each item once, in order; its end from the bus, or from the database
/// once the turn is written ended there — or, when `owner` stops running
/// first, an error end: nothing more will come.
pub fn elsewhere(
    row: TurnRow,
    owner: String,
    after: u64,
    sub: Subscription,
    replay: Vec<Event>,
    store: Store,
) -> BoxStream<'static, TurnEvent> {
    let mut state = Elsewhere {
        id: row.id,
        owner,
        last: after,
        at_last: None,
        sub: Some(sub),
        pending: VecDeque::new(),
        store,
        ended: false,
    };
    for e in &replay {
        state.take(e);
    }
    futures_util::stream::unfold(state, |mut s| async move {
        let e = s.next().await?;
        Some((e, s))
    })
    .boxed()
}

struct Elsewhere {
    id: String,
    owner: String,
    /// The number of the last item handed on, and the items handed on
    /// with that number (one agent line can carry several tool uses, all
    /// numbered alike; the replay and the bus may both bring an item).
    last: u64,
    /// `None` at the resumption point: everything numbered `last` was
    /// seen before.
    at_last: Option<Vec<Value>>,
    sub: Option<Subscription>,
    pending: VecDeque<TurnEvent>,
    store: Store,
    ended: bool,
}

impl Elsewhere {
    /// Whether item `seq` with `data` is new; if so it is the last one now.
    fn fresh(&mut self, seq: u64, data: &Value) -> bool {
        if seq > self.last {
            self.last = seq;
            self.at_last = Some(vec![data.clone()]);
            return true;
        }
        match &mut self.at_last {
            Some(seen) if seq == self.last && !seen.contains(data) => {
                seen.push(data.clone());
                true
            }
            _ => false,
        }
    }

    /// Queue what `e` says of this turn.
    fn take(&mut self, e: &Event) {
        if self.ended || e.turn_id.as_deref() != Some(self.id.as_str()) {
            return;
        }
        if let Some(kind) = StreamKind::of_event(e.kind) {
            let Some(seq) = e.data.get("seq").and_then(Value::as_u64) else {
                return;
            };
            let mut data = e.data.clone();
            if let Some(o) = data.as_object_mut() {
                o.remove("seq");
            }
            if !self.fresh(seq, &data) {
                return;
            }
            self.pending
                .push_back(TurnEvent::item(StreamItem { seq, kind, data }));
            return;
        }
        if e.kind == EventKind::TurnCompleted {
            let d = &e.data;
            let status = d
                .get("status")
                .and_then(Value::as_str)
                .and_then(TurnStatus::parse)
                .unwrap_or(TurnStatus::Failed);
            self.pending.push_back(TurnEvent::end(
                &self.id,
                status,
                d.get("response")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                d.get("error").and_then(Value::as_str),
                d.get("durationMs").and_then(Value::as_u64),
                d.get("usage"),
            ));
            self.ended = true;
        }
    }

    /// Ask the database: the turn ended (its items after the last one and
    /// its end are queued), or its node stopped running (an error end).
    async fn ask_database(&mut self) {
        let Ok(Some(row)) = self.store.turn(&self.id).await else {
            return;
        };
        let Some(status) = TurnStatus::parse(&row.status).filter(|s| s.is_final()) else {
            if !crate::cluster::live(&self.store, &self.owner).await {
                self.pending.push_back(TurnEvent::end(
                    &row.id,
                    TurnStatus::Failed,
                    "",
                    Some(&format!(
                        "the node running the turn ({}) stopped; the turn is no longer running",
                        self.owner
                    )),
                    None,
                    None,
                ));
                self.ended = true;
            }
            return;
        };
        if let Ok(events) = self.store.turn_events(&self.id, self.last as i64).await {
            for item in crate::pool::turn::stored_stream(&events) {
                if self.fresh(item.seq, &item.data) {
                    self.pending.push_back(TurnEvent::item(item));
                }
            }
        }
        self.pending.push_back(TurnEvent::stored_end(&row, status));
        self.ended = true;
    }

    async fn next(&mut self) -> Option<TurnEvent> {
        // A fixed beat: events of the conversation's other turns do not
        // put off asking the database.
        let mut poll =
            tokio::time::interval_at(tokio::time::Instant::now() + ELSEWHERE_POLL, ELSEWHERE_POLL);
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            if self.ended {
                return None;
            }
            let heard = match self.sub.as_mut() {
                Some(sub) => tokio::select! {
                    d = sub.recv() => Some(d),
                    _ = poll.tick() => None,
                },
                None => {
                    poll.tick().await;
                    None
                }
            };
            match heard {
                Some(Some(Delivery::Event(e))) => self.take(&e),
                // Fell behind or the bus ended: the database tells the rest.
                Some(Some(Delivery::Dropped { .. }) | None) => self.sub = None,
                None => self.ask_database().await,
            }
        }
    }
}
