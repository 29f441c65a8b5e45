//! A turn in flight: its status, partial response and outcome, shared
//! between the actor running it and everyone waiting for it.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use iris_agent::ToolUse;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TurnStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
    TimedOut,
}

impl TurnStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TurnStatus::Queued => "queued",
            TurnStatus::Running => "running",
            TurnStatus::Completed => "completed",
            TurnStatus::Failed => "failed",
            TurnStatus::Cancelled => "cancelled",
            TurnStatus::TimedOut => "timed_out",
        }
    }
    /// The status a record keeps as text (`as_str`'s inverse).
    pub fn parse(s: &str) -> Option<TurnStatus> {
        [
            TurnStatus::Queued,
            TurnStatus::Running,
            TurnStatus::Completed,
            TurnStatus::Failed,
            TurnStatus::Cancelled,
            TurnStatus::TimedOut,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }
    pub fn is_final(self) -> bool {
        !matches!(self, TurnStatus::Queued | TurnStatus::Running)
    }
}

/// How a turn ended.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnOutcome {
    pub status: TurnStatus,
    pub response: String,
    pub error: Option<String>,
    pub tool_uses: Vec<ToolUse>,
    pub usage: Option<Value>,
    pub cost_usd: Option<f64>,
    pub duration_ms: u64,
    /// When it ended (Unix ms), the same as its record's `completedAt`.
    pub completed_at: i64,
}

impl TurnOutcome {
    /// The end as its record keeps it.
    pub fn finish(&self, events_dropped: i64) -> iris_storage::TurnFinish {
        iris_storage::TurnFinish {
            status: self.status.as_str().to_owned(),
            response: self.response.clone(),
            error: self.error.clone(),
            tool_uses: (!self.tool_uses.is_empty()).then(|| serde_json::json!(self.tool_uses)),
            usage: self.usage.clone(),
            cost_usd: self.cost_usd,
            completed_at: self.completed_at,
            events_dropped,
            started_at: None,
        }
    }
}

/// Priority of a queued turn; FIFO within one priority.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
}

/// What a follower of a turn sees besides its start and end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    Chunk,
    ToolUse,
    /// What a tool gave back: `{id, isError, output, truncated?, durationMs?}`.
    ToolResult,
    /// The agent's plan, whole: `{entries: [{content, status, priority}]}`.
    Plan,
}

impl StreamKind {
    /// The bus event that carries an item of this kind.
    pub fn event_kind(self) -> crate::bus::EventKind {
        use crate::bus::EventKind;
        match self {
            StreamKind::Chunk => EventKind::Chunk,
            StreamKind::ToolUse => EventKind::ToolUse,
            StreamKind::ToolResult => EventKind::ToolResult,
            StreamKind::Plan => EventKind::Plan,
        }
    }

    /// The item kind a bus event carries, if it is a piece of a stream.
    pub fn of_event(kind: crate::bus::EventKind) -> Option<StreamKind> {
        [
            StreamKind::Chunk,
            StreamKind::ToolUse,
            StreamKind::ToolResult,
            StreamKind::Plan,
        ]
        .into_iter()
        .find(|k| k.event_kind() == kind)
    }
}

/// One streamed piece of a turn. `seq` is the number of the agent output
/// line it came from, so a follower can resume after any item, live or
/// replayed from the database.
#[derive(Debug, Clone, Serialize)]
pub struct StreamItem {
    pub seq: u64,
    pub kind: StreamKind,
    pub data: Value,
}

/// The stream items one agent event stands for. `line` events (command
/// agents) are chunks of that line.
pub fn stream_items(seq: u64, event: &iris_agent::AgentEvent) -> Vec<StreamItem> {
    use iris_agent::AgentEvent;
    match event {
        AgentEvent::TextDelta(text) => vec![StreamItem {
            seq,
            kind: StreamKind::Chunk,
            data: serde_json::json!({"text": text}),
        }],
        AgentEvent::Assistant { tool_uses, .. } => tool_uses
            .iter()
            .map(|t| StreamItem {
                seq,
                kind: StreamKind::ToolUse,
                data: serde_json::json!({"id": t.id, "tool": t.name, "input": t.input}),
            })
            .collect(),
        AgentEvent::ToolResults(results) => results
            .iter()
            .map(|r| StreamItem {
                seq,
                kind: StreamKind::ToolResult,
                data: tool_result_data(r, None),
            })
            .collect(),
        AgentEvent::Plan(entries) => vec![StreamItem {
            seq,
            kind: StreamKind::Plan,
            data: serde_json::json!({"entries": entries}),
        }],
        _ => Vec::new(),
    }
}

/// A tool result's stream data; `durationMs` where the use was seen.
pub fn tool_result_data(r: &iris_agent::ToolResult, duration_ms: Option<u64>) -> Value {
    let mut data =
        serde_json::json!({"id": r.tool_use_id, "isError": r.is_error, "output": r.output});
    if r.truncated {
        data["truncated"] = true.into();
    }
    if let Some(ms) = duration_ms {
        data["durationMs"] = ms.into();
    }
    data
}

/// The stream items of a turn's stored events (the replay of a finished
/// turn, or of one running elsewhere), each tool result with its duration
/// from the stored times when its use is among `events`.
pub fn stored_stream(events: &[iris_storage::EventRow]) -> Vec<StreamItem> {
    let mut used_at = std::collections::HashMap::new();
    let mut out = Vec::new();
    for e in events {
        for mut item in stored_items(e.seq as u64, &e.kind, &e.data) {
            let id = item.data["id"].as_str().unwrap_or_default().to_owned();
            match item.kind {
                StreamKind::ToolUse => {
                    used_at.insert(id, e.at);
                }
                StreamKind::ToolResult => {
                    if let Some(at) = used_at.get(&id) {
                        item.data["durationMs"] = (e.at - at).max(0).into();
                    }
                }
                StreamKind::Chunk | StreamKind::Plan => {}
            }
            out.push(item);
        }
    }
    out
}

/// Stream items of a stored raw event (the replay of a finished turn).
pub fn stored_items(seq: u64, kind: &str, raw: &Value) -> Vec<StreamItem> {
    if kind == "line" {
        return vec![StreamItem {
            seq,
            kind: StreamKind::Chunk,
            data: serde_json::json!({"text": format!("{}\n", raw.as_str().unwrap_or_default())}),
        }];
    }
    iris_agent::protocol::parse_value(raw)
        .map(|e| stream_items(seq, &e))
        .unwrap_or_default()
}

/// The next thing a follower gets.
pub enum FollowStep<'a> {
    Items(Vec<StreamItem>),
    Done(&'a TurnOutcome),
}

pub struct TurnTracker {
    pub id: String,
    pub session_id: String,
    pub team: String,
    pub from: String,
    pub request: String,
    pub created_at: i64,
    /// The teams the message passed through, ending with `team` (see
    /// `Iris::chain`).
    pub chain: Vec<String>,
    /// The conversation of the agent that sent this message (team-to-team),
    /// which waits on it: its silence timeout is paused meanwhile.
    pub asked_from: Option<String>,
    /// Longest the turn may run once started (a job's `timeout`); then it
    /// ends `timed_out`.
    pub limit: Option<Duration>,
    /// Something the caller should know about how the turn ran (the agent
    /// had lost the conversation and it was started afresh).
    notice: OnceLock<String>,
    status: watch::Sender<TurnStatus>,
    partial: Mutex<String>,
    outcome: OnceLock<TurnOutcome>,
    log: Mutex<Vec<StreamItem>>,
    /// Bumped on every log push and at the end, to wake followers.
    version: watch::Sender<u64>,
}

impl TurnTracker {
    pub fn new(
        id: String,
        session_id: String,
        team: String,
        from: String,
        request: String,
    ) -> Self {
        TurnTracker {
            id,
            session_id,
            team,
            from,
            request,
            created_at: crate::clock::now_ms(),
            chain: Vec::new(),
            asked_from: None,
            limit: None,
            notice: OnceLock::new(),
            status: watch::channel(TurnStatus::Queued).0,
            partial: Mutex::new(String::new()),
            outcome: OnceLock::new(),
            log: Mutex::new(Vec::new()),
            version: watch::channel(0).0,
        }
    }

    /// Note something for the caller (the first note stays).
    pub fn set_notice(&self, notice: &str) {
        let _ = self.notice.set(notice.to_owned());
    }

    pub fn notice(&self) -> Option<&str> {
        self.notice.get().map(String::as_str)
    }

    /// The tracker, sent by the agent of conversation `session`.
    pub fn asked_from(mut self, session: Option<String>) -> Self {
        self.asked_from = session;
        self
    }

    /// The tracker with a limit on its running time.
    pub fn with_limit(mut self, limit: Option<Duration>) -> Self {
        self.limit = limit;
        self
    }

    /// The tracker with its created time (a job queued before, kept in the database).
    pub fn created(mut self, at: i64) -> Self {
        self.created_at = at;
        self
    }

    /// The tracker with its chain.
    pub fn with_chain(mut self, chain: Vec<String>) -> Self {
        self.chain = chain;
        self
    }

    pub fn status(&self) -> TurnStatus {
        *self.status.borrow()
    }

    pub(crate) fn set_running(&self) {
        self.status.send_replace(TurnStatus::Running);
    }

    pub(crate) fn push_partial(&self, text: &str) {
        if let Ok(mut p) = self.partial.lock() {
            p.push_str(text);
        }
    }

    pub(crate) fn push_item(&self, item: StreamItem) {
        if let Ok(mut log) = self.log.lock() {
            log.push(item);
        }
        self.version.send_modify(|v| *v += 1);
    }

    /// Items after `after`, waiting for some; or the end once all are seen.
    pub async fn next_after(&self, after: u64) -> FollowStep<'_> {
        let mut rx = self.version.subscribe();
        loop {
            let items: Vec<StreamItem> = self
                .log
                .lock()
                .map(|log| log.iter().filter(|i| i.seq > after).cloned().collect())
                .unwrap_or_default();
            if !items.is_empty() {
                return FollowStep::Items(items);
            }
            if let Some(o) = self.outcome.get() {
                return FollowStep::Done(o);
            }
            if rx.changed().await.is_err() {
                // The tracker lives as long as `self`; unreachable in practice.
                std::future::pending::<()>().await;
            }
        }
    }

    /// The response so far (the final one once the turn ended).
    pub fn partial(&self) -> String {
        if let Some(o) = self.outcome.get() {
            return o.response.clone();
        }
        self.partial.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// Record the end; only the first call counts.
    pub(crate) fn finish(&self, outcome: TurnOutcome) -> bool {
        let status = outcome.status;
        let first = self.outcome.set(outcome).is_ok();
        if first {
            self.status.send_replace(status);
            self.version.send_modify(|v| *v += 1);
        }
        first
    }

    pub fn outcome(&self) -> Option<&TurnOutcome> {
        self.outcome.get()
    }

    /// Wait for the end, at most `limit` (`None`: as long as it takes).
    pub async fn wait(&self, limit: Option<Duration>) -> Option<&TurnOutcome> {
        let mut rx = self.status.subscribe();
        let ended = rx.wait_for(|s| s.is_final());
        match limit {
            Some(d) => {
                let _ = tokio::time::timeout(d, ended).await;
            }
            None => {
                let _ = ended.await;
            }
        }
        self.outcome.get()
    }
}
