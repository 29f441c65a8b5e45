//! This node among the others of its cluster (docs/scale-out.md).
//!
//! - [`Node`]: who this node is (`cluster.nodeId`, kept across restarts),
//!   its heartbeat in the database (so every node, and `iris cluster
//!   status` without a server, knows the members), and the link to the
//!   cluster's Redis when `cluster.redisUrl` is set.
//! - [`ClusterEvents`]: the [`Events`] service of a cluster — an event is
//!   delivered here at once, as the in-process [`Bus`] does, and sent to
//!   the other nodes, whose events it delivers here in their order.
//! - [`Notice`]: what a node tells the others changed besides events
//!   (keys and users are told by `iris-auth` itself).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use iris_cluster::{Heard, Link, LinkState};
use iris_storage::{NodeRow, Store};
use serde::Serialize;
use serde_json::{Value, json};

use crate::bus::{Bus, Event, EventKind, Events, Subscription};
use crate::clock::now_ms;
use crate::config::{Config, redact_url, valid_node_id};
use crate::error::{IrisError, Result};

/// How often a node writes its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A member whose heartbeat is older than this is `down`.
pub const DOWN_AFTER_MS: i64 = 10_000;

/// What changed on a node that the others must apply too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Teams created, changed or deleted at run time.
    Teams,
    /// Webhook subscriptions created, changed or deleted.
    Webhooks,
    /// An approval was decided through this node; the node whose process
    /// waits for it hands the decision on (from the database).
    Approval(String),
}

impl Notice {
    fn body(&self) -> Value {
        match self {
            Notice::Teams => json!({"what": "teams"}),
            Notice::Webhooks => json!({"what": "webhooks"}),
            Notice::Approval(id) => json!({"what": "approval", "id": id}),
        }
    }

    fn of(body: &Value) -> Option<Notice> {
        match body["what"].as_str()? {
            "teams" => Some(Notice::Teams),
            "webhooks" => Some(Notice::Webhooks),
            "approval" => body["id"]
                .as_str()
                .map(|id| Notice::Approval(id.to_owned())),
            _ => None,
        }
    }

    /// The database revision that stands for it when the word is lost.
    fn revision(&self) -> Option<&'static str> {
        match self {
            Notice::Teams => Some("teams"),
            Notice::Webhooks => Some("webhooks"),
            Notice::Approval(_) => None,
        }
    }
}

/// The revisions a node watches as the fallback of [`Notice`]s.
pub const REVISIONS: [(&str, Notice); 2] =
    [("teams", Notice::Teams), ("webhooks", Notice::Webhooks)];

pub struct Node {
    id: String,
    advertise_url: Option<String>,
    redis: Option<String>,
    link: Option<Arc<Link>>,
    store: Store,
    /// Registered in the database (a server; not a one-shot command).
    member: bool,
    stopped: AtomicBool,
}

/// A member of the cluster as `iris cluster status` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub id: String,
    /// `up` (heartbeat within 10 s), `down` (none since: crashed or cut
    /// off), `stopped` (shut down cleanly).
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_url: Option<String>,
    pub version: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<i64>,
}

impl Member {
    /// `row` as of `now`.
    pub fn of(row: NodeRow, now: i64) -> Member {
        let state = if row.stopped_at.is_some() {
            "stopped"
        } else if up(&row, now) {
            "up"
        } else {
            "down"
        };
        Member {
            id: row.id,
            state,
            advertise_url: row.advertise_url,
            version: row.version,
            started_at: row.started_at,
            heartbeat_at: row.heartbeat_at,
            stopped_at: row.stopped_at,
        }
    }
}

/// The cluster's Redis as this node sees it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedisStatus {
    /// `cluster.redisUrl` without its password.
    pub url: String,
    #[serde(flatten)]
    pub link: LinkState,
    /// Events and notices not sent to the other nodes (Redis down or slow).
    pub lost: u64,
}

/// This node and its cluster.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    pub node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_url: Option<String>,
    /// `null` for a single node (no `cluster.redisUrl`).
    pub redis: Option<RedisStatus>,
    pub members: Vec<Member>,
}

impl Node {
    /// This node's id: `cluster.nodeId` (or `IRIS_NODE_ID`), else the one
    /// kept in `$IRIS_HOME/data/node-id`, made on the first start.
    ///
    /// # Errors
    /// The file cannot be read or written, or holds no valid id.
    pub fn resolve_id(config: &Config) -> Result<String> {
        if let Some(id) = &config.cluster.node_id {
            return Ok(id.clone());
        }
        let file = config.home.join("data").join("node-id");
        kept_id(&file)
    }

    /// Start this node: its id, its link to the cluster's Redis, and for a
    /// server (`member`) its row and heartbeat in the database. The link
    /// connects in the background: a node starts while Redis is down.
    ///
    /// # Errors
    /// The database cannot be written, or `cluster.redisUrl` is no URL.
    pub async fn start(config: &Config, store: &Store, member: bool) -> Result<Arc<Node>> {
        let id = Self::resolve_id(config)?;
        let link = match (&config.cluster.redis_url, member) {
            (Some(url), true) => {
                // Named by the database, so the nodes of one database find
                // each other and other clusters on the same Redis do not.
                let fresh = hex::encode(iris_auth::secret::random_bytes::<8>()?);
                let cluster = store.meta_init("cluster_id", &fresh).await?;
                Some(
                    Link::connect(url, &cluster, &id)
                        .map_err(|e| IrisError::internal("connecting to the cluster", e))?,
                )
            }
            _ => None,
        };
        let node = Arc::new(Node {
            id,
            advertise_url: config.cluster.advertise_url.clone(),
            redis: config.cluster.redis_url.as_deref().map(redact_url),
            link,
            store: store.clone(),
            member,
            stopped: AtomicBool::new(false),
        });
        if member {
            node.not_taken().await?;
            store
                .node_started(
                    &node.id,
                    node.advertise_url.as_deref(),
                    env!("CARGO_PKG_VERSION"),
                    now_ms(),
                )
                .await?;
            tokio::spawn(beat(Arc::downgrade(&node)));
            if let Some(link) = &node.link {
                tokio::spawn(warn_if_open(
                    link.watch(),
                    node.redis.clone().unwrap_or_default(),
                ));
            }
        }
        Ok(node)
    }

    /// Refuse an id another running node has: its heartbeat still moves.
    /// (A node that crashed and starts again within the heartbeat window
    /// waits one beat to find its old row still.)
    async fn not_taken(&self) -> Result<()> {
        let row = |rows: Vec<NodeRow>| rows.into_iter().find(|r| r.id == self.id);
        let Some(before) = row(self.store.nodes().await?) else {
            return Ok(());
        };
        if !up(&before, now_ms()) {
            return Ok(());
        }
        tokio::time::sleep(HEARTBEAT + Duration::from_millis(500)).await;
        match row(self.store.nodes().await?) {
            Some(after)
                if after.heartbeat_at > before.heartbeat_at && after.stopped_at.is_none() =>
            {
                Err(IrisError::new(
                    crate::error::ErrorKind::Conflict,
                    format!(
                        "node id `{}` is in use by a running node (its heartbeat goes on): give each node its own IRIS_HOME or cluster.nodeId",
                        self.id
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// This node's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The link to the cluster's Redis (`None`: a single node).
    pub fn link(&self) -> Option<&Arc<Link>> {
        self.link.as_ref()
    }

    /// Tell the other nodes `notice`: its revision in the database is
    /// bumped (what a node whose word was lost finds within a second), and
    /// the word is sent through Redis (nothing more for a single node).
    pub async fn tell(&self, notice: Notice) {
        if let Some(name) = notice.revision()
            && let Err(e) = self.store.bump_revision(name).await
        {
            tracing::warn!(revision = name, error = %e, "cannot record a change for the other nodes");
        }
        if let Some(link) = &self.link {
            link.notice(notice.body());
        }
    }

    /// Whether node `id` runs now: its row is not stopped and its
    /// heartbeat is recent (`false` when the database does not answer).
    pub async fn is_live(&self, id: &str) -> bool {
        live(&self.store, id).await
    }

    /// The Redis link's state (`None`: a single node).
    pub fn redis(&self) -> Option<RedisStatus> {
        self.link.as_ref().map(|l| RedisStatus {
            url: self.redis.clone().unwrap_or_default(),
            link: l.state(),
            lost: l.lost(),
        })
    }

    /// This node and the members the database knows.
    ///
    /// # Errors
    /// The database cannot be read.
    pub async fn status(&self) -> Result<ClusterStatus> {
        let now = now_ms();
        let members = self
            .store
            .nodes()
            .await?
            .into_iter()
            .map(|r| Member::of(r, now))
            .collect();
        Ok(ClusterStatus {
            node: self.id.clone(),
            advertise_url: self.advertise_url.clone(),
            redis: self.redis(),
            members,
        })
    }

    /// Notices from the other nodes, and `None` each time the link comes
    /// back (what was said meanwhile is lost: apply everything again).
    /// Ends when the link is dropped; `None` at once for a single node.
    pub fn notices(&self) -> Option<Notices> {
        self.link.as_ref().map(|l| Notices(l.notices()))
    }

    /// This node shuts down cleanly: its heartbeat stops, its row says so.
    pub async fn stop(&self) {
        if self.stopped.swap(true, Ordering::AcqRel) || !self.member {
            return;
        }
        if let Err(e) = self.store.node_stopped(&self.id, now_ms()).await {
            tracing::warn!(error = %e, "cannot mark the node stopped");
        }
    }
}

/// See [`Node::notices`].
pub struct Notices(iris_cluster::Notices);

impl Notices {
    /// The next notice (`Some(None)`: apply everything again); `None` at
    /// the end.
    pub async fn next(&mut self) -> Option<Option<Notice>> {
        loop {
            match self.0.next().await? {
                Heard::Notice(body) => {
                    if let Some(n) = Notice::of(&body) {
                        return Some(Some(n));
                    }
                }
                Heard::Resync => return Some(None),
            }
        }
    }
}

/// Whether node `id` runs now (see [`Node::is_live`]).
pub async fn live(store: &Store, id: &str) -> bool {
    let now = now_ms();
    store
        .nodes()
        .await
        .is_ok_and(|rows| rows.iter().any(|r| r.id == id && up(r, now)))
}

/// Whether the node of `row` runs at `now`: not stopped, and its heartbeat
/// within [`DOWN_AFTER_MS`].
fn up(row: &NodeRow, now: i64) -> bool {
    row.stopped_at.is_none() && now - row.heartbeat_at <= DOWN_AFTER_MS
}

/// The Redis list a running turn's items are appended to.
fn turn_list(link: &Link, turn_id: &str) -> String {
    link.key(&format!("turn:{turn_id}"))
}

/// The id kept in `file`, or a new one written there.
fn kept_id(file: &Path) -> Result<String> {
    match std::fs::read_to_string(file) {
        Ok(s) => {
            let id = s.trim();
            if valid_node_id(id) {
                Ok(id.to_owned())
            } else {
                Err(IrisError::internal(
                    "reading the node id",
                    format!(
                        "{} holds no node id (1 to 64 letters, digits, `.`, `_`, `-`): fix or remove it",
                        file.display()
                    ),
                ))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let host = hostname();
            let suffix = hex::encode(iris_auth::secret::random_bytes::<3>()?);
            let id = format!("{host}-{suffix}");
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| IrisError::internal(&format!("creating {}", dir.display()), e))?;
            }
            std::fs::write(file, format!("{id}\n"))
                .map_err(|e| IrisError::internal(&format!("writing {}", file.display()), e))?;
            Ok(id)
        }
        Err(e) => Err(IrisError::internal(
            &format!("reading {}", file.display()),
            e,
        )),
    }
}

/// The machine's name as a node id's start (`node` when it has none usable).
fn hostname() -> String {
    let name: String = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(48)
        .collect();
    if name.is_empty() { "node".into() } else { name }
}

/// Write the node's heartbeat until it stops or is dropped.
async fn beat(node: std::sync::Weak<Node>) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(n) = node.upgrade() else { return };
        if n.stopped.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = n.store.node_heartbeat(&n.id, now_ms()).await {
            tracing::debug!(error = %e, "cannot write the node's heartbeat");
        }
    }
}

/// Agents run as Iris's user on this machine: a Redis that lets in anyone
/// lets them in too. Said once, when it is first known.
async fn warn_if_open(mut state: tokio::sync::watch::Receiver<LinkState>, url: String) {
    if let Ok(s) = state.wait_for(|s| s.open.is_some()).await
        && s.open == Some(true)
    {
        tracing::warn!(
            redis = %url,
            "the cluster's Redis accepts clients without a password: agents on this machine could read and forge cluster traffic; set a password or an ACL user (docs/scale-out.md) and put it in cluster.redisUrl"
        );
    }
}

/// The [`Events`] of a cluster: delivered here through the in-process
/// [`Bus`] and sent to the other nodes through the link, whose events are
/// delivered here in their order (each marked `remote`). A running turn's
/// items are also kept in Redis for an hour, so a client that follows the
/// turn from another node can replay what it missed.
pub struct ClusterEvents {
    bus: Arc<Bus>,
    link: Arc<Link>,
}

impl ClusterEvents {
    /// Start hearing the other nodes' events. Needs a Tokio runtime.
    pub fn start(bus: Arc<Bus>, link: Arc<Link>) -> Arc<ClusterEvents> {
        let mut heard = link.subscribe();
        let into = bus.clone();
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match heard.recv().await {
                    Ok(m) if m.kind == "event" => {
                        match serde_json::from_value::<Event>(m.body.clone()) {
                            Ok(mut e) => {
                                e.remote = true;
                                into.deliver(e);
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "an event from another node that this version does not read")
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(
                            missed = n,
                            "events from other nodes were missed: this node fell behind"
                        );
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Arc::new(ClusterEvents { bus, link })
    }
}

impl Events for ClusterEvents {
    fn publish(
        &self,
        kind: EventKind,
        team: &str,
        session_id: Option<&str>,
        turn_id: Option<&str>,
        data: Value,
    ) -> Arc<Event> {
        let event = self.bus.publish(kind, team, session_id, turn_id, data);
        let replay = match (kind, turn_id) {
            (k, Some(t)) if k.is_stream() => Some(turn_list(&self.link, t)),
            _ => None,
        };
        match serde_json::to_value(&*event) {
            Ok(body) => self.link.publish("event", body, replay),
            Err(e) => tracing::debug!(error = %e, "an event that cannot be sent"),
        }
        event
    }

    fn subscribe(&self, topic: &str) -> Subscription {
        self.bus.subscribe(topic)
    }

    fn dropped_subscribers(&self) -> u64 {
        self.bus.dropped_subscribers()
    }

    fn spans_nodes(&self) -> bool {
        true
    }

    fn replay(&self, turn_id: &str) -> BoxFuture<'_, Vec<Event>> {
        let list = turn_list(&self.link, turn_id);
        Box::pin(async move {
            match self.link.replay(&list).await {
                Ok(messages) => messages
                    .into_iter()
                    .filter_map(|m| serde_json::from_value::<Event>(m.body).ok())
                    .collect(),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot replay a turn from Redis");
                    Vec::new()
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_keeps_its_id() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("data").join("node-id");
        let first = kept_id(&file).unwrap();
        assert!(valid_node_id(&first), "{first}");
        assert_eq!(kept_id(&file).unwrap(), first);
        std::fs::write(&file, "not/valid").unwrap();
        assert!(kept_id(&file).is_err());
    }

    #[test]
    fn members_are_up_down_or_stopped() {
        let row = |beat, stopped| NodeRow {
            id: "a".into(),
            advertise_url: None,
            version: "0".into(),
            started_at: 0,
            heartbeat_at: beat,
            stopped_at: stopped,
        };
        assert_eq!(Member::of(row(95_000, None), 100_000).state, "up");
        assert_eq!(Member::of(row(80_000, None), 100_000).state, "down");
        assert_eq!(
            Member::of(row(95_000, Some(95_000)), 100_000).state,
            "stopped"
        );
    }
}
