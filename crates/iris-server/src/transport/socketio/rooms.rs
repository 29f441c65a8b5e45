//! Rooms `session:<id>`, `team:<name>` and `system`, fed from the bus: a
//! room with sockets in it has one task reading its bus topic and emitting
//! each event to the room, under the original plans' names. The `system`
//! room gets `health:check` every `api.healthBroadcastInterval`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iris_core::IrisError;
use iris_core::bus::{Delivery, Event, EventKind};
use serde_json::{Value, json};
use socketioxide::SocketIo;
use tokio::task::JoinHandle;

use crate::state::AppState;

/// The Socket.IO side of Iris: the state, the handle, and the room feeds.
pub(super) struct Sio {
    pub state: AppState,
    pub io: SocketIo,
    feeds: Mutex<HashMap<String, JoinHandle<()>>>,
}

impl Sio {
    pub fn new(state: AppState, io: SocketIo) -> Arc<Sio> {
        let sio = Arc::new(Sio {
            state,
            io,
            feeds: Mutex::new(HashMap::new()),
        });
        let interval = sio.state.iris.config().api.health_broadcast_interval;
        if interval > 0 {
            let weak = Arc::downgrade(&sio);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(interval));
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(sio) = weak.upgrade() else { return };
                    let report = health_report(&sio.state);
                    let _ = sio.io.to("system").emit("health:check", &report).await;
                }
            });
        }
        sio
    }

    /// Make sure `room` is fed from its bus topic.
    pub fn ensure(self: &Arc<Self>, room: &str) {
        let Ok(mut feeds) = self.feeds.lock() else {
            return;
        };
        if feeds.get(room).is_some_and(|h| !h.is_finished()) {
            return;
        }
        // The room was checked when a socket joined it (`Iris::may_watch`).
        let mut sub = self.state.iris.watch(room);
        let (io, name) = (self.io.clone(), room.to_owned());
        let handle = tokio::spawn(async move {
            while let Some(d) = sub.recv().await {
                let event = match d {
                    Delivery::Event(e) => e,
                    Delivery::Dropped { missed } => {
                        let notice = json!({"room": name, "missed": missed,
                            "message": "this room's feed fell behind and was dropped; subscribe again"});
                        let _ = io.to(name.clone()).emit("dropped", &notice).await;
                        return;
                    }
                };
                if let Some((event_name, body)) = translate(&name, &event) {
                    let _ = io.to(name.clone()).emit(event_name, &body).await;
                }
            }
        });
        feeds.insert(room.to_owned(), handle);
    }

    /// Stop feeding `room` if no socket is in it any more.
    pub fn release(&self, room: &str) {
        if room == "system" {
            return;
        }
        let Ok(mut feeds) = self.feeds.lock() else {
            return;
        };
        if self.io.within(room.to_owned()).sockets().is_empty()
            && let Some(h) = feeds.remove(room)
        {
            h.abort();
        }
    }
}

/// The room a `cache:subscribe {sessionId}` names.
pub(super) fn session_room(data: &Value) -> Result<String, IrisError> {
    match data.get("sessionId").and_then(Value::as_str) {
        Some(id) if !id.is_empty() && id.len() <= 128 => {
            iris_core::bus::canonical_topic(&format!("session:{id}"))
        }
        _ => Err(IrisError::validation(
            "sessionId",
            "required: the conversation's id (a string)",
        )),
    }
}

/// The room a `process:subscribe {team}` names.
pub(super) fn team_room(data: &Value) -> Result<String, IrisError> {
    match data.get("team").and_then(Value::as_str) {
        Some(t) if !t.is_empty() && t.len() <= 64 => Ok(format!("team:{t}")),
        _ => Err(IrisError::validation(
            "team",
            "required: a team's name (a string)",
        )),
    }
}

/// A bus event as the Socket.IO event of `room`, if the room has one.
fn translate(room: &str, e: &Event) -> Option<(&'static str, Value)> {
    if room.starts_with("session:") {
        // Everything in a conversation, as seed 001's cache messages.
        let message =
            json!({"timestamp": e.at, "type": e.kind, "messageId": e.turn_id, "data": e.data});
        return Some((
            "cache:message",
            json!({"sessionId": e.session_id, "message": message}),
        ));
    }
    let mut data = e.data.clone();
    if let Some(o) = data.as_object_mut() {
        o.insert("team".into(), json!(e.team));
        if let Some(s) = &e.session_id {
            o.entry("sessionId").or_insert(json!(s));
        }
    }
    let name = match e.kind {
        EventKind::ProcessSpawned => "process:spawned",
        EventKind::ProcessTerminated => "process:terminated",
        EventKind::ProcessError => "process:error",
        EventKind::ApprovalRequested => "approval:requested",
        EventKind::ApprovalResolved => "approval:resolved",
        EventKind::ApprovalExpired => "approval:expired",
        EventKind::JobQueued => "job:queued",
        EventKind::JobFinished => "job:finished",
        EventKind::TurnQueued => "turn:queued",
        EventKind::TurnStarted => "turn:started",
        EventKind::TurnCompleted => "turn:completed",
        EventKind::Chunk
        | EventKind::ToolUse
        | EventKind::ToolResult
        | EventKind::Plan
        | EventKind::ProcessState
        | EventKind::ConfigReloaded
        | EventKind::ConfigRejected => {
            return None;
        }
    };
    Some((name, data))
}

/// `health:check`'s data: `{totalProcesses, maxProcesses, uptime, …}`.
pub(super) fn health_report(state: &AppState) -> Value {
    let h = state.iris.health();
    let now = iris_core::now_ms();
    json!({
        "totalProcesses": h.total_processes,
        "maxProcesses": h.max_processes,
        "processes": h.processes_by_state,
        "jobsWaiting": h.jobs_waiting,
        "sessions": h.sessions,
        "uptime": h.uptime,
        "version": env!("CARGO_PKG_VERSION"),
        "timestamp": now,
    })
}
