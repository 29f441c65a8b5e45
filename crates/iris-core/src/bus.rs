//! The in-process event bus. Topics: `session:<id>`, `team:<name>`, `system`.
//!
//! Each topic is a bounded broadcast channel, so publishing never waits for a
//! subscriber. A subscriber that falls behind by more than the channel holds
//! is dropped with a notice instead of slowing the agent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    TurnQueued,
    TurnStarted,
    Chunk,
    ToolUse,
    ToolResult,
    /// The agent's plan changed (ACP agents): the whole plan.
    Plan,
    TurnCompleted,
    ProcessSpawned,
    ProcessTerminated,
    ProcessError,
    ProcessState,
    /// An agent asks to use a tool and waits for a decision.
    ApprovalRequested,
    /// Someone allowed or denied it.
    ApprovalResolved,
    /// Nobody decided in time, or the process is gone: the tool is denied.
    ApprovalExpired,
    /// A job was queued (`execute`).
    JobQueued,
    /// A job ended and its end (with its webhook deliveries) is written.
    JobFinished,
    /// The configuration file was reloaded and applied (`system` only).
    ConfigReloaded,
    /// The configuration file changed but was not applied: the error.
    ConfigRejected,
}

impl EventKind {
    /// The event's name for webhook subscribers (`turn.completed`,
    /// `process.terminated`, `approval.requested`, …); `None` for stream
    /// traffic (chunks, tool uses), which is no webhook's business. Jobs'
    /// events (`job.<status>`) are written with the job's end instead, so
    /// they survive a crash.
    pub fn webhook_name(self, data: &Value) -> Option<String> {
        Some(match self {
            EventKind::TurnQueued => "turn.queued".into(),
            EventKind::TurnStarted => "turn.started".into(),
            EventKind::TurnCompleted => format!(
                "turn.{}",
                data.get("status")
                    .and_then(Value::as_str)
                    .unwrap_or("completed")
            ),
            EventKind::ProcessSpawned => "process.spawned".into(),
            EventKind::ProcessTerminated => "process.terminated".into(),
            EventKind::ProcessError => "process.error".into(),
            EventKind::ApprovalRequested => "approval.requested".into(),
            EventKind::ApprovalResolved => "approval.resolved".into(),
            EventKind::ApprovalExpired => "approval.expired".into(),
            EventKind::ConfigReloaded => "config.reloaded".into(),
            EventKind::ConfigRejected => "config.rejected".into(),
            EventKind::Chunk
            | EventKind::ToolUse
            | EventKind::ToolResult
            | EventKind::Plan
            | EventKind::ProcessState
            | EventKind::JobQueued
            | EventKind::JobFinished => return None,
        })
    }
}

impl EventKind {
    /// A piece of a turn's stream (chunks and tool traffic), which its
    /// followers see, against lifecycle.
    pub fn is_stream(self) -> bool {
        matches!(
            self,
            EventKind::Chunk | EventKind::ToolUse | EventKind::ToolResult | EventKind::Plan
        )
    }

    /// Stream pieces are per conversation; lifecycle goes to `system` too.
    fn is_system(self) -> bool {
        !self.is_stream()
    }
}

/// One event.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Increases by one per event delivered in this process (published
    /// here or heard from another node).
    pub seq: u64,
    pub at: i64,
    pub kind: EventKind,
    pub team: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn_id: Option<String>,
    pub data: Value,
    /// Heard from another node of the cluster (it happened there): what
    /// is done once per cluster (webhook deliveries) is not done here.
    #[serde(skip)]
    pub remote: bool,
}

/// What a subscriber receives.
#[derive(Debug, Clone)]
pub enum Delivery {
    Event(Arc<Event>),
    /// The subscriber fell behind and was dropped; nothing more will come.
    Dropped {
        missed: u64,
    },
}

pub struct Bus {
    topics: Mutex<HashMap<String, broadcast::Sender<Arc<Event>>>>,
    capacity: usize,
    seq: AtomicU64,
    dropped: Arc<AtomicU64>,
}

impl Bus {
    /// `capacity`: events a subscriber may fall behind before it is dropped.
    pub fn new(capacity: usize) -> Self {
        Bus {
            topics: Mutex::new(HashMap::new()),
            capacity: capacity.max(16),
            seq: AtomicU64::new(0),
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// The event bus every observer reads: what happens is published once,
/// under its topics (`session:<id>`, `team:<name>`, `system`), and
/// delivered to each topic's subscribers in order. [`Bus`] is the
/// in-process implementation; a cluster's carries the events between
/// nodes behind this same interface.
pub trait Events: Send + Sync {
    /// Publish an event to its topics; returns it with its sequence number.
    fn publish(
        &self,
        kind: EventKind,
        team: &str,
        session_id: Option<&str>,
        turn_id: Option<&str>,
        data: Value,
    ) -> Arc<Event>;

    /// A subscription to `topic` (a canonical one: [`canonical_topic`]).
    fn subscribe(&self, topic: &str) -> Subscription;

    /// Subscribers dropped for falling behind, since start.
    fn dropped_subscribers(&self) -> u64;

    /// Whether events also come from other nodes (a cluster): a turn not
    /// running here may be running there.
    fn spans_nodes(&self) -> bool {
        false
    }

    /// The chunks and tool uses a turn running on another node published
    /// so far, in order (nothing in a single process, where a running
    /// turn is followed from memory).
    fn replay(&self, _turn_id: &str) -> BoxFuture<'_, Vec<Event>> {
        Box::pin(std::future::ready(Vec::new()))
    }
}

impl Bus {
    /// Hand `event` to its topics' subscribers, numbered in this process's
    /// order (an event heard from another node keeps its time, not its number).
    pub fn deliver(&self, mut event: Event) -> Arc<Event> {
        event.seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let event = Arc::new(event);
        let Ok(mut topics) = self.topics.lock() else {
            return event;
        };
        let mut send = |topic: String| {
            if let Some(tx) = topics.get(&topic)
                && tx.send(event.clone()).is_err()
            {
                topics.remove(&topic); // nobody listens any more
            }
        };
        if let Some(id) = &event.session_id {
            send(format!("session:{id}"));
        }
        send(format!("team:{}", event.team));
        if event.kind.is_system() {
            send("system".to_owned());
        }
        event
    }
}

impl Events for Bus {
    fn publish(
        &self,
        kind: EventKind,
        team: &str,
        session_id: Option<&str>,
        turn_id: Option<&str>,
        data: Value,
    ) -> Arc<Event> {
        self.deliver(Event {
            seq: 0,
            at: crate::clock::now_ms(),
            kind,
            team: team.to_owned(),
            session_id: session_id.map(str::to_owned),
            turn_id: turn_id.map(str::to_owned),
            data,
            remote: false,
        })
    }

    fn subscribe(&self, topic: &str) -> Subscription {
        let rx = match self.topics.lock() {
            Ok(mut topics) => topics
                .entry(topic.to_owned())
                .or_insert_with(|| broadcast::channel(self.capacity).0)
                .subscribe(),
            Err(_) => broadcast::channel(1).1,
        };
        Subscription {
            rx: Some(rx),
            dropped: self.dropped.clone(),
        }
    }

    fn dropped_subscribers(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// A live subscription to one topic.
pub struct Subscription {
    rx: Option<broadcast::Receiver<Arc<Event>>>,
    dropped: Arc<AtomicU64>,
}

impl Subscription {
    /// The next delivery; `None` once the subscription has ended.
    pub async fn recv(&mut self) -> Option<Delivery> {
        let rx = self.rx.as_mut()?;
        match rx.recv().await {
            Ok(e) => Some(Delivery::Event(e)),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                self.rx = None;
                self.dropped.fetch_add(1, Ordering::Relaxed);
                Some(Delivery::Dropped { missed })
            }
            Err(broadcast::error::RecvError::Closed) => {
                self.rx = None;
                None
            }
        }
    }
}

/// A topic as a client named it, in the form the bus publishes under:
/// `session:<id>` with the id canonical (any spelling of a UUID), the
/// others as they are.
///
/// # Errors
/// `VALIDATION_ERROR` for a session topic whose id is no UUID.
pub fn canonical_topic(topic: &str) -> crate::error::Result<String> {
    match topic.strip_prefix("session:") {
        Some(id) => crate::session_id::SessionId::parse(id)
            .map(|id| format!("session:{id}"))
            .ok_or_else(|| {
                crate::error::IrisError::validation(
                    "topic",
                    format!("`{topic}`: a session's id is a UUID"),
                )
            }),
        None => Ok(topic.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn events_reach_their_topics_only() {
        let bus = Bus::new(16);
        let mut session = bus.subscribe("session:s1");
        let mut team = bus.subscribe("team:web");
        let mut system = bus.subscribe("system");
        let mut other = bus.subscribe("team:api");
        bus.publish(
            EventKind::Chunk,
            "web",
            Some("s1"),
            Some("m1"),
            json!({"text":"a"}),
        );
        bus.publish(
            EventKind::TurnCompleted,
            "web",
            Some("s1"),
            Some("m1"),
            json!({}),
        );
        for sub in [&mut session, &mut team] {
            let Some(Delivery::Event(e)) = sub.recv().await else {
                panic!("no chunk")
            };
            assert_eq!(e.kind, EventKind::Chunk);
            assert_eq!(e.data["text"], "a");
        }
        let Some(Delivery::Event(e)) = system.recv().await else {
            panic!("no lifecycle event")
        };
        assert_eq!(
            e.kind,
            EventKind::TurnCompleted,
            "chunks do not go to system"
        );
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(20), other.recv())
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_dropped_with_a_notice() {
        let bus = Bus::new(16);
        let mut slow = bus.subscribe("team:web");
        for i in 0..100 {
            bus.publish(EventKind::Chunk, "web", None, None, json!(i));
        }
        match slow.recv().await {
            Some(Delivery::Dropped { missed }) => assert!(missed > 0),
            other => panic!("expected a drop notice, got {other:?}"),
        }
        assert!(slow.recv().await.is_none());
        assert_eq!(bus.dropped_subscribers(), 1);
    }
}
