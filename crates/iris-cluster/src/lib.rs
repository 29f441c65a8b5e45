//! The link between the nodes of one Iris: one Redis that every node of a
//! cluster talks to. Through it a node
//! - tells the others what happened ([`Link::publish`]: events of turns
//!   and processes, notices that keys, users, teams or webhook
//!   subscriptions changed), in the order it published them, and hears
//!   theirs ([`Link::subscribe`]);
//! - keeps the items of a running turn where another node can replay them
//!   ([`Link::publish`]'s `append`, [`Link::replay`]);
//! - counts rate limits for the whole cluster on Redis's clock
//!   ([`Link::allow`]).
//!
//! Redis going away is expected: publishing drops what it cannot send
//! (counted in [`Link::lost`]), [`Link::allow`] answers `Unavailable` at
//! once so callers can decide locally, and the subscriber reconnects by
//! itself ([`LinkState`] says how it is doing). Durable state never lives
//! here: it is in the database.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, watch};

/// Why the link cannot do something.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `cluster.redisUrl` is not a Redis URL.
    #[error("cluster.redisUrl: {0}")]
    Url(String),
    /// Redis does not answer (now); the caller falls back.
    #[error("Redis is unavailable: {0}")]
    Unavailable(String),
}

/// What one node tells the others.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    /// The node that sent it.
    #[serde(rename = "n")]
    pub node: String,
    /// What it is (`event`, `notice`).
    #[serde(rename = "k")]
    pub kind: String,
    #[serde(rename = "b")]
    pub body: Value,
}

/// How the link is doing, as health checks report it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LinkState {
    /// Subscribed and answering pings.
    pub up: bool,
    /// Since when (Unix ms).
    pub since: i64,
    /// Why it is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Times the link came back after being down.
    pub rejoined: u64,
    /// Whether Redis lets in a client without a password (`None`: not
    /// known yet). Agents run as Iris's user on the same machine: an open
    /// Redis is open to them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open: Option<bool>,
}

/// Publications waiting for the publisher; beyond this they are dropped
/// (and counted) rather than held without bound while Redis is slow.
const OUTBOX: usize = 16_384;
/// How long a command may take before the caller falls back.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a running turn's items stay replayable in Redis.
pub const REPLAY_TTL_SECS: u64 = 3600;

pub struct Link {
    prefix: String,
    node: String,
    commands: ConnectionManager,
    outbox: mpsc::Sender<Outgoing>,
    incoming: broadcast::Sender<Arc<Message>>,
    state: watch::Sender<LinkState>,
    lost: Arc<AtomicU64>,
}

struct Outgoing {
    payload: Vec<u8>,
    /// Also append the payload to this list (a turn's replay).
    append: Option<String>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// `url` without its user and password: what an agent on this machine
/// could connect with.
fn anonymous(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    Some(format!("{scheme}://{host}{path}"))
}

impl Link {
    /// Connect to Redis at `url` as node `node` of the cluster `cluster`
    /// (its keys and channel are named `iris:<cluster>:…`, so clusters
    /// sharing a Redis do not hear each other). Returns at once: the
    /// subscriber connects in the background and [`Link::state`] says when
    /// it is up. Needs a Tokio runtime.
    ///
    /// # Errors
    /// `Url` when `url` is no Redis URL.
    pub fn connect(url: &str, cluster: &str, node: &str) -> Result<Arc<Link>, ClusterError> {
        let client = redis::Client::open(url).map_err(|e| ClusterError::Url(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let commands = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| ClusterError::Url(e.to_string()))?;
        let (outbox, rx) = mpsc::channel(OUTBOX);
        let prefix = format!("iris:{cluster}:");
        let link = Arc::new(Link {
            node: node.to_owned(),
            commands: commands.clone(),
            outbox,
            incoming: broadcast::channel(4096).0,
            state: watch::Sender::new(LinkState {
                up: false,
                since: now_ms(),
                error: Some("connecting".into()),
                rejoined: 0,
                open: None,
            }),
            lost: Arc::new(AtomicU64::new(0)),
            prefix,
        });
        let channel = link.key("bus");
        tokio::spawn(publish_loop(
            rx,
            commands,
            channel.clone(),
            link.lost.clone(),
        ));
        tokio::spawn(subscribe_loop(
            Arc::downgrade(&link),
            client,
            anonymous(url),
            channel,
        ));
        Ok(link)
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// A Redis key of this cluster.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// How the link is doing now.
    pub fn state(&self) -> LinkState {
        self.state.borrow().clone()
    }

    /// Changes of [`Link::state`] (up, down, rejoined).
    pub fn watch(&self) -> watch::Receiver<LinkState> {
        self.state.subscribe()
    }

    /// Publications dropped because Redis was down or too slow, since start.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Tell the other nodes: `kind` with `body`, after everything this
    /// node published before. With `append`, the message is also appended
    /// to that list (see [`Link::replay`]), in the same transaction.
    /// Never waits; dropped (and counted) when it cannot be sent.
    pub fn publish(&self, kind: &str, body: Value, append: Option<String>) {
        let message = Message {
            node: self.node.clone(),
            kind: kind.to_owned(),
            body,
        };
        let Ok(payload) = serde_json::to_vec(&message) else {
            return;
        };
        if self.outbox.try_send(Outgoing { payload, append }).is_err() {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// What the other nodes publish, in each node's order.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Message>> {
        self.incoming.subscribe()
    }

    /// Tell the other nodes that something changed (`body` says what).
    pub fn notice(&self, body: Value) {
        self.publish(NOTICE, body, None);
    }

    /// The other nodes' notices as this node hears them. It holds
    /// receivers only, so a task reading it does not keep the link alive.
    pub fn notices(&self) -> Notices {
        Notices {
            heard: self.subscribe(),
            state: self.watch(),
        }
    }

    /// The messages appended to `list` so far (a running turn's items).
    ///
    /// # Errors
    /// `Unavailable` when Redis does not answer.
    pub async fn replay(&self, list: &str) -> Result<Vec<Message>, ClusterError> {
        self.ready()?;
        let mut conn = self.commands.clone();
        let raw: Vec<Vec<u8>> = timed(
            redis::cmd("LRANGE")
                .arg(list)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn),
        )
        .await?;
        Ok(raw
            .iter()
            .filter_map(|r| serde_json::from_slice(r).ok())
            .collect())
    }

    /// Count one use of the bucket `bucket` (`count` per `window`), for
    /// the whole cluster at once: decided atomically in Redis on its clock
    /// (GCRA, the same algorithm as the in-process limiter).
    ///
    /// # Errors
    /// `Unavailable` when Redis is down or slow; the caller decides locally.
    pub async fn allow(
        &self,
        bucket: &str,
        count: u32,
        window: Duration,
    ) -> Result<Allowance, ClusterError> {
        self.ready()?;
        let count = count.max(1);
        let interval = (window.as_micros() / u128::from(count)).max(1) as u64;
        let mut conn = self.commands.clone();
        let r: Vec<i64> = timed(
            GCRA.key(self.key(&format!("rate:{bucket}")))
                .arg(interval)
                .arg(count)
                .invoke_async(&mut conn),
        )
        .await?;
        let at = |i: usize| r.get(i).copied().unwrap_or_default().max(0) as u64;
        Ok(Allowance {
            allowed: at(0) == 1,
            remaining: at(1).min(u64::from(count)) as u32,
            full_at_us: at(2),
            retry_after: Duration::from_micros(at(3)),
        })
    }

    fn ready(&self) -> Result<(), ClusterError> {
        let state = self.state.borrow();
        if state.up {
            Ok(())
        } else {
            Err(ClusterError::Unavailable(
                state.error.clone().unwrap_or_else(|| "down".into()),
            ))
        }
    }

    fn set_up(&self, open: Option<bool>) {
        self.state.send_if_modified(|s| {
            let was_down = !s.up;
            if was_down {
                s.up = true;
                s.since = now_ms();
                s.error = None;
                // The first connection is no rejoining.
                if s.open.is_some() {
                    s.rejoined += 1;
                }
            }
            let changed = was_down || s.open != open;
            if open.is_some() {
                s.open = open;
            }
            changed
        });
    }

    fn set_down(&self, error: String) {
        self.state.send_if_modified(|s| {
            let was_up = s.up;
            if was_up {
                s.up = false;
                s.since = now_ms();
            }
            s.error = Some(error);
            was_up
        });
    }
}

/// The kind of a [`Link::notice`].
const NOTICE: &str = "notice";

/// What [`Notices::next`] hears.
#[derive(Debug, Clone, PartialEq)]
pub enum Heard {
    /// Another node's notice.
    Notice(Value),
    /// The link came back, or this node fell behind: notices may have been
    /// lost meanwhile, so whatever they stand for is read again.
    Resync,
}

/// See [`Link::notices`].
pub struct Notices {
    heard: broadcast::Receiver<Arc<Message>>,
    state: watch::Receiver<LinkState>,
}

impl Notices {
    /// The next notice or resync; `None` once the link is gone.
    pub async fn next(&mut self) -> Option<Heard> {
        use broadcast::error::RecvError;
        loop {
            tokio::select! {
                m = self.heard.recv() => match m {
                    Ok(m) if m.kind == NOTICE => return Some(Heard::Notice(m.body.clone())),
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => return Some(Heard::Resync),
                    Err(RecvError::Closed) => return None,
                },
                changed = self.state.changed() => {
                    changed.ok()?;
                    if self.state.borrow_and_update().up {
                        return Some(Heard::Resync);
                    }
                }
            }
        }
    }
}

/// One rate-limit decision made in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    pub allowed: bool,
    pub remaining: u32,
    /// When the bucket is full again (Unix µs, Redis's clock).
    pub full_at_us: u64,
    /// When refused: how long until one more is allowed.
    pub retry_after: Duration,
}

/// GCRA on Redis's clock: the key holds the theoretical arrival time (µs).
/// Returns {allowed, remaining, full-at µs, retry-after µs}. Numbers are
/// written with `%.0f`: Lua prints large ones in exponent form otherwise.
static GCRA: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local allow_at = tat - (burst - 1) * interval
if now < allow_at then
  return {0, 0, tat, allow_at - now}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
local remaining = math.floor((now - (new_tat - burst * interval)) / interval)
return {1, remaining, new_tat, 0}
",
    )
});

async fn timed<T>(
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ClusterError::Unavailable(e.to_string())),
        Err(_) => Err(ClusterError::Unavailable(format!(
            "no answer within {} ms",
            COMMAND_TIMEOUT.as_millis()
        ))),
    }
}

/// Send what the node publishes, in order, batching what is waiting into
/// one transaction. Ends when the link is dropped (its sender with it).
async fn publish_loop(
    mut rx: mpsc::Receiver<Outgoing>,
    mut conn: ConnectionManager,
    channel: String,
    lost: Arc<AtomicU64>,
) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 256).await > 0 {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for o in &batch {
            if let Some(list) = &o.append {
                pipe.cmd("RPUSH").arg(list).arg(&o.payload).ignore();
                pipe.cmd("EXPIRE").arg(list).arg(REPLAY_TTL_SECS).ignore();
            }
            pipe.cmd("PUBLISH").arg(&channel).arg(&o.payload).ignore();
        }
        if let Err(e) = timed(pipe.query_async::<()>(&mut conn)).await {
            lost.fetch_add(batch.len() as u64, Ordering::Relaxed);
            tracing::debug!(error = %e, dropped = batch.len(), "cannot publish to the cluster");
        }
        batch.clear();
    }
}

/// Keep one subscriber connection on the cluster's channel: reconnect
/// with backoff when it drops, ping it every second, hand other nodes'
/// messages to [`Link::subscribe`]rs. Ends when the link is dropped.
async fn subscribe_loop(
    link: Weak<Link>,
    client: redis::Client,
    anonymous: Option<String>,
    channel: String,
) {
    let mut delay = Duration::from_millis(100);
    loop {
        let error =
            match tokio::time::timeout(Duration::from_secs(2), client.get_async_pubsub()).await {
                Ok(Ok(mut pubsub)) => match pubsub.subscribe(&channel).await {
                    Ok(()) => {
                        {
                            let Some(l) = link.upgrade() else { return };
                            let open = match &anonymous {
                                Some(url) => Some(open_to_anyone(url).await),
                                None => None,
                            };
                            l.set_up(open);
                        }
                        delay = Duration::from_millis(100);
                        match listen(&link, pubsub).await {
                            Some(e) => e,
                            None => return,
                        }
                    }
                    Err(e) => e.to_string(),
                },
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no connection within 2 s".into(),
            };
        let Some(l) = link.upgrade() else { return };
        if l.state.borrow().up {
            tracing::warn!(error = %error, "lost the cluster's Redis; retrying");
        }
        l.set_down(error);
        drop(l);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Read one subscription until it fails (`Some(why)`) or the link is
/// dropped (`None`).
async fn listen(link: &Weak<Link>, pubsub: redis::aio::PubSub) -> Option<String> {
    let (mut sink, mut stream) = pubsub.split();
    let mut ping = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else {
                    return Some("the subscriber connection closed".into());
                };
                let l = link.upgrade()?;
                match serde_json::from_slice::<Message>(msg.get_payload_bytes()) {
                    Ok(m) if m.node != l.node => {
                        let _ = l.incoming.send(Arc::new(m));
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "a cluster message that is not Iris's"),
                }
            }
            _ = ping.tick() => {
                link.upgrade()?;
                match tokio::time::timeout(Duration::from_secs(1), sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Some(e.to_string()),
                    Err(_) => return Some("no answer to a ping within 1 s".into()),
                }
            }
        }
    }
}

/// Whether Redis answers a client that brings no password.
async fn open_to_anyone(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let probe = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), probe).await,
        Ok(Ok(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_anonymous_url_has_no_credentials() {
        assert_eq!(
            anonymous("redis://iris:s3cret@10.0.0.5:6380/2").as_deref(),
            Some("redis://10.0.0.5:6380/2")
        );
        assert_eq!(
            anonymous("rediss://:pw@host").as_deref(),
            Some("rediss://host")
        );
        assert_eq!(
            anonymous("redis://127.0.0.1:6379").as_deref(),
            Some("redis://127.0.0.1:6379")
        );
    }

    /// A Redis for this test: `IRIS_TEST_REDIS` or the one on 127.0.0.1:6379.
    fn redis_url() -> String {
        std::env::var("IRIS_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
    }

    async fn up(link: &Link) {
        let mut w = link.watch();
        tokio::time::timeout(Duration::from_secs(10), w.wait_for(|s| s.up))
            .await
            .expect("the link comes up")
            .expect("the link lives");
    }

    #[tokio::test]
    async fn nodes_hear_each_other_in_order_and_not_themselves() {
        let cluster = format!("t{}", now_ms());
        let a = Link::connect(&redis_url(), &cluster, "a").unwrap();
        let b = Link::connect(&redis_url(), &cluster, "b").unwrap();
        let other = Link::connect(&redis_url(), &format!("{cluster}x"), "c").unwrap();
        up(&a).await;
        up(&b).await;
        up(&other).await;
        let mut heard_a = a.subscribe();
        let mut heard_b = b.subscribe();
        let mut heard_other = other.subscribe();
        let list = a.key("turn:t1");
        for i in 0..50 {
            a.publish("event", serde_json::json!(i), Some(list.clone()));
        }
        for i in 0..50 {
            let m = tokio::time::timeout(Duration::from_secs(5), heard_b.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!((m.node.as_str(), m.body.as_i64()), ("a", Some(i)));
        }
        assert!(heard_a.try_recv().is_err(), "a node does not hear itself");
        assert!(
            heard_other.try_recv().is_err(),
            "another cluster hears nothing"
        );
        let replay = b.replay(&list).await.unwrap();
        assert_eq!(replay.len(), 50);
        assert_eq!(replay[49].body, 49);
    }

    #[tokio::test]
    async fn the_cluster_counts_one_bucket() {
        let cluster = format!("r{}", now_ms());
        let a = Link::connect(&redis_url(), &cluster, "a").unwrap();
        let b = Link::connect(&redis_url(), &cluster, "b").unwrap();
        up(&a).await;
        up(&b).await;
        let w = Duration::from_secs(60);
        let mut seen = Vec::new();
        for i in 0..4 {
            let link = if i % 2 == 0 { &a } else { &b };
            let d = link.allow("k", 3, w).await.unwrap();
            seen.push((d.allowed, d.remaining));
        }
        assert_eq!(seen, [(true, 2), (true, 1), (true, 0), (false, 0)]);
        let refused = a.allow("k", 3, w).await.unwrap();
        assert!(refused.retry_after > Duration::from_secs(10));
        assert!(refused.retry_after <= Duration::from_secs(20));
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_down_and_refuses_fast() {
        // A port nothing listens on.
        let l = Link::connect("redis://127.0.0.1:1", "x", "a").unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!l.state().up);
        let started = std::time::Instant::now();
        assert!(matches!(
            l.allow("k", 1, Duration::from_secs(1)).await,
            Err(ClusterError::Unavailable(_))
        ));
        assert!(started.elapsed() < Duration::from_millis(100));
        l.publish("event", Value::Null, None);
        assert!(Link::connect("http://nope", "x", "a").is_err());
    }
}
