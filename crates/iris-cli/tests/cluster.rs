//! Several `iris serve` nodes on one database and one Redis behave as one
//! Iris (docs/scale-out.md): a turn through node A streamed to SSE (with a
//! `Last-Event-ID` resumption), WebSocket and Socket.IO clients of node B;
//! a key revoked through A refused by B with B's WebSocket closed within
//! a second; one 10/min limit for both; a webhook subscription made on A
//! delivering each event once; a node restarting without touching the
//! other's running turn; `iris cluster status`; and a Redis outage (an
//! instance of the test's own): both nodes keep serving and say so,
//! revocations still reach the other node through the database, and the
//! link comes back by itself. Run on SQLite (one file for both nodes) and
//! on Postgres by scripts/test.sh.

#[path = "common/anthropic_stub.rs"]
#[allow(dead_code)]
mod anthropic_stub;
mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The Redis the suite uses (scripts/test.sh starts one).
fn redis_url() -> String {
    std::env::var("IRIS_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

const CONFIG: &str = "api:\n  port: 0\n  rateLimit:\n    maxRequests: 1000000\n    perIp: 1000000/min\n    messages: 1000000/min\nwebhooks:\n  allowHosts: ['127.0.0.1']\n  retryBase: 50\n  retryMax: 200\nsettings:\n  shutdownGrace: 500\nteams:\n  demo:\n    path: .\n    agent: echo\n";

/// A node in `dir` on the database `db` (`None`: its own, the first
/// node's) and the Redis at `redis`, with `config`.
/// `$NODE_DIR` in `config` stands for `dir`.
fn node(dir: &Path, db: Option<&str>, redis: &str, config: &str) -> (Reap, String) {
    let config = config.replace("$NODE_DIR", &dir.display().to_string());
    std::fs::write(dir.join("config.yaml"), config).unwrap();
    let mut cmd = iris(dir);
    cmd.arg("serve").env("IRIS_REDIS_URL", redis);
    if let Some(url) = db {
        cmd.env("IRIS_DATABASE_URL", url);
    }
    spawn_serve(dir, cmd)
}

struct Cluster {
    a: tempfile::TempDir,
    b: tempfile::TempDir,
    servers: Vec<Reap>,
    urls: [String; 2],
    key: String,
    redis: String,
    config: String,
    http: reqwest::Client,
}

impl Cluster {
    /// Two nodes on one database and the Redis at `redis`, both linked.
    async fn start(redis: &str) -> Cluster {
        Self::start_with(redis, CONFIG, |_| {}).await
    }

    /// [`Cluster::start`] with `config`, after `prepare` ran on each
    /// node's folder.
    async fn start_with(redis: &str, config: &str, prepare: impl Fn(&Path)) -> Cluster {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        prepare(a.path());
        prepare(b.path());
        let (one, url_a) = node(a.path(), None, redis, config);
        let (two, url_b) = node(
            b.path(),
            Some(&iris_storage::testing::database_url(a.path())),
            redis,
            config,
        );
        let c = Cluster {
            key: key_in(a.path()),
            a,
            b,
            servers: vec![one, two],
            urls: [url_a, url_b],
            redis: redis.to_owned(),
            config: config.to_owned(),
            http: reqwest::Client::new(),
        };
        for i in 0..2 {
            c.linked(i, true).await;
        }
        c
    }

    /// Restart node `i` (1: B) on the same database and Redis.
    async fn restart_b(&mut self) {
        terminate(&mut self.servers[1]);
        let (two, url) = node(
            self.b.path(),
            Some(&iris_storage::testing::database_url(self.a.path())),
            &self.redis,
            &self.config,
        );
        self.servers[1] = two;
        self.urls[1] = url;
        self.linked(1, true).await;
    }

    /// Wait (20 s at most) until node `i`'s `/ready` says its Redis is `up`.
    async fn linked(&self, i: usize, up: bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, v) = self.get(i, "/ready", None).await;
            if status == 200 && v["redis"]["up"] == up {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "node {i}: redis never {up}: {status} {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn get(&self, i: usize, path: &str, key: Option<&str>) -> (u16, Value) {
        let url = format!("{}{path}", self.urls[i]);
        http(&self.http, reqwest::Method::GET, url, key, Value::Null).await
    }

    async fn post(&self, i: usize, path: &str, key: &str, body: Value) -> (u16, Value) {
        let url = format!("{}/api/v1{path}", self.urls[i]);
        http(&self.http, reqwest::Method::POST, url, Some(key), body).await
    }

    /// A key of `role` made through node `i`: (id, secret).
    async fn key(&self, i: usize, role: &str, extra: Value) -> (String, String) {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let mut body = json!({"name": format!("k-{n}"), "role": role});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let (status, v) = self.post(i, "/admin/keys", &self.key, body).await;
        assert_eq!(status, 200, "{v}");
        (
            v["id"].as_str().unwrap().to_owned(),
            v["key"].as_str().unwrap().to_owned(),
        )
    }

    /// Wait until node `i` takes a key made on the other node (told
    /// through Redis, or seen in the database): within a second.
    async fn takes(&self, i: usize, secret: &str) {
        let made = Instant::now();
        while self.get(i, "/api/v1/teams", Some(secret)).await.0 != 200 {
            assert!(
                made.elapsed() < Duration::from_secs(1),
                "node {i} does not take the key"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A WebSocket to node `i` at `path`, authenticated with `cred`.
    async fn ws(&self, i: usize, path: &str, cred: &str) -> Ws {
        let url = format!("{}{path}", self.urls[i].replace("http://", "ws://"));
        ws_connect(&url, Some(cred)).await
    }

    /// Queue `message` for `demo` through node `i`: (message id, session id).
    async fn quick(&self, i: usize, message: &str) -> (String, String) {
        let (status, v) = self
            .post(
                i,
                "/teams/quick-tell",
                &self.key,
                json!({"toTeam": "demo", "fromTeam": "web", "message": message}),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        (
            v["messageId"].as_str().unwrap().to_owned(),
            v["sessionId"].as_str().unwrap_or_default().to_owned(),
        )
    }

    /// Follow message `id` over SSE on node `i` (after `after`), reading
    /// until `stop` says so or the stream ends: the events (name, id, data).
    async fn sse(
        &self,
        i: usize,
        id: &str,
        after: Option<u64>,
        stop: impl Fn(&[(String, Option<u64>, Value)]) -> bool,
    ) -> Vec<(String, Option<u64>, Value)> {
        let mut req = self
            .http
            .get(format!("{}/api/v1/messages/{id}/stream", self.urls[i]))
            .bearer_auth(&self.key);
        if let Some(a) = after {
            req = req.header("last-event-id", a.to_string());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.bytes_stream();
        let (mut buf, mut events) = (String::new(), Vec::new());
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline.into(), body.next()).await
        {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let (mut name, mut eid, mut data) = (String::new(), None, Value::Null);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        eid = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data = serde_json::from_str(v.trim()).unwrap_or(Value::Null);
                    }
                }
                if !name.is_empty() {
                    events.push((name, eid, data));
                }
                if stop(&events) {
                    return events;
                }
            }
        }
        events
    }
}

fn text_of(events: &[(String, Option<u64>, Value)]) -> String {
    events
        .iter()
        .filter(|(n, ..)| n == "chunk")
        .map(|(_, _, d)| d["text"].as_str().unwrap_or_default())
        .collect()
}

const SLOW: &str = "one two three four five six seven eight [[delay=150]]";
const SLOW_TEXT: &str = "one two three four five six seven eight";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_turn_through_one_node_streams_to_every_client_of_the_other() {
    let c = Cluster::start(&redis_url()).await;
    // The pair's conversation, made through A.
    let (first, session) = c.quick(0, "warm up").await;
    assert!(!session.is_empty(), "quick-tell names the conversation");
    c.sse(0, &first, None, |_| false).await;

    // On B: a WebSocket on the team, a Socket.IO client on the conversation.
    let mut ws = c.ws(1, "/api/v1/stream", &c.key).await;
    send(&mut ws, json!({"type": "subscribe", "team": "demo"})).await;
    assert_eq!(recv(&mut ws).await["type"], "subscribed");
    let mut sio = tokio::process::Command::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/socketio_client.mjs"))
        .args(["watch", &c.urls[1], &c.key, &session])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut sio_lines = BufReader::new(sio.stdout.take().unwrap()).lines();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(60), sio_lines.next_line())
            .await
            .expect("the Socket.IO client subscribes")
            .unwrap()
            .expect("the Socket.IO client runs");
        if line == "SUBSCRIBED" {
            break;
        }
    }

    // The turn runs on A.
    let (id, _) = c.quick(0, SLOW).await;

    // SSE on B: two chunks, then gone; again with Last-Event-ID: the rest.
    let head = c
        .sse(1, &id, None, |e| {
            e.iter().filter(|(n, ..)| n == "chunk").count() >= 2
        })
        .await;
    assert_eq!(head[0].0, "start", "{head:?}");
    let last = head.iter().filter_map(|(_, i, _)| *i).max().unwrap();
    let tail = c
        .sse(1, &id, Some(last), |e| {
            e.iter().any(|(n, ..)| n == "complete")
        })
        .await;
    assert!(tail.iter().all(|(n, ..)| n != "start"), "{tail:?}");
    let end = tail.last().unwrap();
    assert_eq!(end.0, "complete", "{tail:?}");
    assert_eq!(end.2["response"], SLOW_TEXT);
    assert_eq!(
        format!("{}{}", text_of(&head), text_of(&tail)),
        SLOW_TEXT,
        "every chunk once, in order, across the resumption"
    );

    // The WebSocket on B: the turn's chunks in order, then its end.
    let mut text = String::new();
    loop {
        let v = recv(&mut ws).await;
        if v["messageId"] != id.as_str() {
            continue;
        }
        match v["type"].as_str() {
            Some("chunk") => text.push_str(v["text"].as_str().unwrap()),
            Some("complete") => {
                assert_eq!(v["response"], SLOW_TEXT);
                break;
            }
            _ => {}
        }
    }
    assert_eq!(text, SLOW_TEXT);

    // Socket.IO on B: the conversation's messages, chunks in order, the end.
    let (mut chunks, mut heard) = (String::new(), Vec::new());
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(20), sio_lines.next_line()).await
    {
        heard.push(line.clone());
        let Some(m) = line.strip_prefix("MESSAGE ") else {
            continue;
        };
        let m: Value = serde_json::from_str(m).unwrap();
        if m["messageId"] != id.as_str() {
            continue;
        }
        match m["type"].as_str() {
            Some("chunk") => chunks.push_str(m["data"]["text"].as_str().unwrap()),
            Some("turn_completed") => break,
            _ => {}
        }
    }
    assert_eq!(chunks, SLOW_TEXT, "{heard:#?}");
    assert!(sio.wait().await.unwrap().success());

    // An ended turn followed through B: from the database.
    let stored = c.sse(1, &id, Some(0), |_| false).await;
    assert_eq!(text_of(&stored), SLOW_TEXT, "{stored:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_revoked_on_one_node_is_refused_and_disconnected_on_the_other() {
    let c = Cluster::start(&redis_url()).await;
    let (id, secret) = c.key(0, "developer", json!({})).await;
    c.takes(1, &secret).await;
    let mut ws = c.ws(1, "/api/v1/stream", &secret).await;
    send(&mut ws, json!({"type": "subscribe", "team": "demo"})).await;
    assert_eq!(recv(&mut ws).await["type"], "subscribed");

    let (status, v) = c
        .post(0, &format!("/admin/keys/{id}/revoke"), &c.key, json!({}))
        .await;
    assert_eq!(status, 200, "{v}");
    let revoked = Instant::now();
    let reason = tokio::time::timeout(Duration::from_secs(5), async {
        use tokio_tungstenite::tungstenite::Message;
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(f)))) => break f.reason.to_string(),
                Some(Ok(_)) => continue,
                other => panic!("ended without a close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("B closes the revoked key's WebSocket");
    let closed = revoked.elapsed();
    assert!(closed < Duration::from_secs(1), "closed after {closed:?}");
    assert!(reason.contains("revoked"), "{reason}");
    let (status, v) = c.get(1, "/api/v1/teams", Some(&secret)).await;
    assert_eq!(status, 401, "{v}");

    // Both nodes wrote audit records: still one chain.
    let (status, v) = c
        .get(1, "/api/v1/admin/audit-logs/verify", Some(&c.key))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["ok"], true, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limit_holds_for_the_cluster_as_a_whole() {
    let c = Cluster::start(&redis_url()).await;
    let (_, secret) = c.key(0, "viewer", json!({"rateLimit": "10/min"})).await;
    // The first of the ten, on B once it knows the key.
    c.takes(1, &secret).await;
    let mut seen = Vec::new();
    for i in 0..11 {
        let r = c
            .http
            .get(format!("{}/api/v1/teams", c.urls[i % 2]))
            .bearer_auth(&secret)
            .send()
            .await
            .unwrap();
        let remaining = r
            .headers()
            .get("x-ratelimit-remaining")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok());
        seen.push((r.status().as_u16(), remaining));
    }
    let expected: Vec<(u16, Option<u32>)> = (0..9)
        .map(|i| (200, Some(8 - i)))
        .chain([(429, Some(0)), (429, Some(0))])
        .collect();
    assert_eq!(seen, expected, "ten for both nodes together, then 429");
}

/// A webhook receiver counting what it gets, by event name.
async fn receiver() -> (Arc<Mutex<Vec<Value>>>, String) {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let into = got.clone();
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let into = into.clone();
        async move {
            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                into.lock().unwrap().push(v);
            }
            axum::http::StatusCode::OK
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (got, format!("http://127.0.0.1:{port}/hook"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscription_made_on_one_node_delivers_each_event_once() {
    let c = Cluster::start(&redis_url()).await;
    let (got, url) = receiver().await;
    let (status, v) = c
        .post(
            0,
            "/admin/webhooks",
            &c.key,
            json!({"url": url, "events": ["turn.completed"]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    // B hears of the subscription (a notice), then each node runs a turn.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (on_a, _) = c.quick(0, "through a").await;
    let (on_b, _) = c.quick(1, "through b").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.lock().unwrap().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Time for a second delivery, were there one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = got.lock().unwrap().clone();
    let ids: Vec<&str> = got
        .iter()
        .filter_map(|v| v["data"]["messageId"].as_str())
        .collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        ids.contains(&on_a.as_str()) && ids.contains(&on_b.as_str()),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_restarting_leaves_the_other_nodes_turn_running() {
    let mut c = Cluster::start(&redis_url()).await;
    let (c_a, c_b) = (c.a.path().to_owned(), c.b.path().to_owned());
    // Long enough (6 s) to outlast B's restart.
    let long = (0..30)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let (id, _) = c.quick(0, &format!("{long} [[delay=200]]")).await;
    c.sse(0, &id, None, |e| e.iter().any(|(n, ..)| n == "chunk"))
        .await;
    c.restart_b().await;
    // B's start-up recovery left A's turn alone: still running, in the
    // database B reads.
    let (status, v) = c
        .get(1, &format!("/api/v1/messages/{id}"), Some(&c.key))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "running", "{v}");
    // A's turn ends as it would have: completed, all of it.
    let all = c
        .sse(0, &id, Some(0), |e| e.iter().any(|(n, ..)| n == "complete"))
        .await;
    let end = all.last().unwrap();
    assert_eq!(
        (end.0.as_str(), &end.2["status"]),
        ("complete", &json!("completed")),
        "{all:?}"
    );
    assert_eq!(end.2["response"], long);

    // `iris cluster status`: both members up, each with its own id.
    let out = iris(&c_b)
        .env(
            "IRIS_DATABASE_URL",
            iris_storage::testing::database_url(&c_a),
        )
        .env("IRIS_REDIS_URL", &c.redis)
        .args(["cluster", "status", "--json"])
        .output()
        .unwrap();
    succeeded(&out);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let members = v["members"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{v}");
    assert!(members.iter().all(|m| m["state"] == "up"), "{v}");
    assert!(members.iter().any(|m| m["id"] == v["node"]), "{v}");
    assert_eq!(v["redis"]["up"], true, "{v}");
    assert_eq!(
        v["redis"]["open"], true,
        "the suite's Redis takes no password: {v}"
    );
    // /health/detailed names the node and the members.
    let (status, h) = c.get(1, "/health/detailed", Some(&c.key)).await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["node"], v["node"]);
    assert_eq!(h["cluster"]["members"].as_array().unwrap().len(), 2, "{h}");
    assert_eq!(h["cluster"]["redis"]["open"], true, "{h}");
}

/// A redis-server of the test's own on a free port (it is stopped and
/// started again).
struct OwnRedis {
    port: u16,
    args: Vec<String>,
    server: Option<Reap>,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        Self::start_with(&[])
    }

    /// With more `redis-server` arguments (`--requirepass …`).
    fn start_with(args: &[&str]) -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = OwnRedis {
            port,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            server: None,
        };
        r.up();
        r
    }

    fn up(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(&self.args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test.sh installs it)");
        self.server = Some(Reap(child));
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server did not listen on {}", self.port);
    }

    fn down(&mut self) {
        self.server = None;
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn through_a_redis_outage_nodes_serve_alone_then_rejoin() {
    let mut redis = OwnRedis::start();
    // Teams made at run time work under a root outside the nodes' homes.
    let root = tempfile::tempdir().unwrap();
    let web = root.path().join("web");
    std::fs::create_dir_all(&web).unwrap();
    let config = CONFIG.replace(
        "teams:\n",
        &format!("teamRoots: ['{}']\nteams:\n", root.path().display()),
    );
    let c = Cluster::start_with(&redis.url(), &config, |_| {}).await;
    let (id, secret) = c.key(0, "developer", json!({})).await;

    redis.down();
    for i in 0..2 {
        let v = c.linked(i, false).await;
        assert_eq!(v["degraded"], json!(["redis"]), "{v}");
        let (status, h) = c.get(i, "/health/detailed", Some(&c.key)).await;
        assert_eq!(status, 200, "{h}");
        assert_eq!(h["status"], "degraded", "{h}");
    }
    // Each node still serves: turns run, limits are decided locally.
    let (m, _) = c.quick(1, "while redis is down").await;
    let done = c
        .sse(1, &m, None, |e| e.iter().any(|(n, ..)| n == "complete"))
        .await;
    assert_eq!(done.last().unwrap().2["response"], "while redis is down");
    // A revocation through A still reaches B, by the database.
    c.takes(1, &secret).await;
    let (status, _) = c
        .post(0, &format!("/admin/keys/{id}/revoke"), &c.key, json!({}))
        .await;
    assert_eq!(status, 200);
    let revoked = Instant::now();
    while c.get(1, "/api/v1/teams", Some(&secret)).await.0 != 401 {
        assert!(
            revoked.elapsed() < Duration::from_secs(3),
            "B still takes the key"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A team made through A reaches B by the database's revision.
    let (status, v) = c
        .post(
            0,
            "/teams",
            &c.key,
            json!({"name": "web", "path": web, "profile": "echo"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let made = Instant::now();
    while c.get(1, "/api/v1/teams/web", Some(&c.key)).await.0 != 200 {
        assert!(
            made.elapsed() < Duration::from_secs(3),
            "B does not know the team"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Redis back: both rejoin by themselves, and events cross again.
    redis.up();
    for i in 0..2 {
        c.linked(i, true).await;
    }
    let (status, h) = c.get(0, "/health/detailed", Some(&c.key)).await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["status"], "ok", "{h}");
    assert!(
        h["cluster"]["redis"]["rejoined"].as_u64().unwrap() >= 1,
        "{h}"
    );
    let (id, _) = c.quick(0, SLOW).await;
    let followed = c
        .sse(1, &id, None, |e| e.iter().any(|(n, ..)| n == "complete"))
        .await;
    assert_eq!(text_of(&followed), SLOW_TEXT);
}

/// A command Claude Code asks about (`echo` alone it would run unasked).
const BASH: &str = r#"MSG<tool Bash {"command":"mkdir -p made-by-agent && echo approved-output","description":"Make a folder"}>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_approval_decided_through_another_node_reaches_the_waiting_process() {
    let stub = anthropic_stub::start();
    // Each node's claude team works in its own ./work with its own HOME.
    let config = format!(
        "api:\n  port: 0\n  rateLimit:\n    maxRequests: 1000000\n    perIp: 1000000/min\nsettings:\n  responseTimeout: 60000\n  spawnTimeout: 60000\n  approvalTimeout: 60000\nteams:\n{}",
        claude_team(
            "ask",
            Path::new("$NODE_DIR/claude-home"),
            &stub.url,
            "    grantPermission: ask\n"
        )
    );
    let c = Cluster::start_with(&redis_url(), &config, |dir| {
        std::fs::create_dir_all(dir.join("work")).unwrap();
        std::fs::create_dir_all(dir.join("claude-home")).unwrap();
    })
    .await;
    // The turn runs on A and waits for a decision.
    let (client, url, key) = (c.http.clone(), c.urls[0].clone(), c.key.clone());
    let turn = tokio::spawn(async move {
        http(
            &client,
            reqwest::Method::POST,
            format!("{url}/api/v1/teams/tell"),
            Some(&key),
            json!({"toTeam": "ask", "message": BASH, "timeout": 0}),
        )
        .await
    });
    let mut pending = Value::Null;
    for _ in 0..300 {
        let (status, list) = c
            .get(1, "/api/v1/approvals?team=ask&status=pending", Some(&c.key))
            .await;
        assert_eq!(status, 200, "{list}");
        if let Some(a) = list["approvals"].as_array().and_then(|a| a.first()) {
            pending = a.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(id) = pending["id"].as_str().map(str::to_owned) else {
        panic!(
            "no pending approval; node A said: {}",
            std::fs::read_to_string(c.a.path().join("serve.err")).unwrap_or_default()
        );
    };
    // Decided through B: recorded there, handed on by A.
    let (status, decided) = c
        .post(
            1,
            &format!("/approvals/{id}"),
            &c.key,
            json!({"decision": "allow"}),
        )
        .await;
    assert_eq!(status, 200, "{decided}");
    assert_eq!(decided["status"], "allowed");
    let (status, done) = tokio::time::timeout(Duration::from_secs(30), turn)
        .await
        .expect("the turn ends once A hands the decision on")
        .unwrap();
    assert_eq!(status, 200, "{done}");
    assert!(
        done["response"]
            .as_str()
            .unwrap_or_default()
            .contains("approved-output"),
        "the tool ran on A: {done}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_node_with_a_running_nodes_id_is_refused() {
    let c = Cluster::start(&redis_url()).await;
    let (_, health) = c.get(0, "/health/detailed", Some(&c.key)).await;
    let id = health["node"].as_str().unwrap().to_owned();
    let third = tempfile::tempdir().unwrap();
    std::fs::write(third.path().join("config.yaml"), CONFIG).unwrap();
    let out = iris(third.path())
        .arg("serve")
        .env(
            "IRIS_DATABASE_URL",
            iris_storage::testing::database_url(c.a.path()),
        )
        .env("IRIS_REDIS_URL", &c.redis)
        .env("IRIS_NODE_ID", &id)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by a running node"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_with_a_password_is_used_and_the_password_never_shown() {
    let redis = OwnRedis::start_with(&["--requirepass", "s3cret-Pass"]);
    let c = Cluster::start(&format!("redis://:s3cret-Pass@127.0.0.1:{}", redis.port)).await;
    let (status, h) = c.get(0, "/health/detailed", Some(&c.key)).await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(
        h["cluster"]["redis"]["open"], false,
        "it takes a password: {h}"
    );
    assert_eq!(
        h["cluster"]["redis"]["url"],
        format!("redis://:***@127.0.0.1:{}", redis.port)
    );
    assert_eq!(h["cluster"]["members"].as_array().unwrap().len(), 2, "{h}");
    let metrics = c
        .http
        .get(format!("{}/metrics", c.urls[0]))
        .bearer_auth(&c.key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let node = h["node"].as_str().unwrap();
    for line in [
        format!("iris_node_info{{node=\"{node}\"}} 1"),
        "iris_cluster_redis_up 1".to_owned(),
        "iris_cluster_members{state=\"up\"} 2".to_owned(),
    ] {
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    // Limits are decided there: a key's limit holds across both.
    let (_, secret) = c.key(0, "viewer", json!({"rateLimit": "2/min"})).await;
    c.takes(1, &secret).await;
    assert_eq!(c.get(0, "/api/v1/teams", Some(&secret)).await.0, 200);
    assert_eq!(c.get(1, "/api/v1/teams", Some(&secret)).await.0, 429);
    // Nowhere is the password written out.
    let out = iris(c.b.path())
        .env(
            "IRIS_DATABASE_URL",
            iris_storage::testing::database_url(c.a.path()),
        )
        .env("IRIS_REDIS_URL", &c.redis)
        .args(["cluster", "status", "--json"])
        .output()
        .unwrap();
    succeeded(&out);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["redis"]["open"], false, "{status}");
    for text in [
        h.to_string(),
        metrics,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        std::fs::read_to_string(c.a.path().join("serve.err")).unwrap(),
        std::fs::read_to_string(c.b.path().join("serve.err")).unwrap(),
    ] {
        assert!(!text.contains("s3cret"), "{text}");
    }
}
