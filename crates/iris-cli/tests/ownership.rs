//! Team ownership (docs/scale-out.md, "Teams owned by one node"): two
//! `iris serve` nodes on one database and one Redis with `cluster.secret`.
//! A team's processes run on the node that holds its lease; a message,
//! a streamed message through the other node are carried out by the
//! owner; a call to the internal endpoint without the cluster's signature
//! is refused (403); when the owner is killed, the other node takes
//! the team over within the lease's TTL plus 2 s, the turn the dead node
//! was running ends `failed` with the reason, and messages are answered
//! again. Run on SQLite (one file for both nodes) and on Postgres.

#[path = "common/anthropic_stub.rs"]
#[allow(dead_code)]
mod anthropic_stub;
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const SECRET: &str = "a-cluster-secret-of-at-least-32-characters";
const TTL_MS: u64 = 3000;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const DEMO: &str = "  demo:\n    path: .\n    agent: echo\n";

/// A node in `dir` listening on `port`, advertising it, with `teams`
/// (YAML under `teams:`) and `extra` (top-level YAML).
fn node_with(dir: &Path, port: u16, db: Option<&str>, teams: &str, extra: &str) -> (Reap, String) {
    let config = format!(
        "api:\n  port: {port}\n  healthBroadcastInterval: 500\n  rateLimit:\n    maxRequests: 1000000\n    perIp: 1000000/min\n    messages: 1000000/min\ncluster:\n  advertiseUrl: http://127.0.0.1:{port}\n  secret: {SECRET}\n  leaseTtl: {TTL_MS}\nsettings:\n  shutdownGrace: 500\n  responseTimeout: 60000\n  spawnTimeout: 60000\n  approvalTimeout: 60000\n{extra}teams:\n{teams}"
    );
    std::fs::write(dir.join("config.yaml"), config).unwrap();
    let redis =
        std::env::var("IRIS_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut cmd = iris(dir);
    cmd.arg("serve").env("IRIS_REDIS_URL", redis);
    if let Some(url) = db {
        cmd.env("IRIS_DATABASE_URL", url);
    }
    spawn_serve(dir, cmd)
}

/// Two nodes, A and B, on one database and the suite's Redis.
struct Pair {
    a: tempfile::TempDir,
    b: tempfile::TempDir,
    ports: (u16, u16),
    server_a: Reap,
    _server_b: Reap,
    url_a: String,
    url_b: String,
    key: String,
    client: reqwest::Client,
}

impl Pair {
    /// With the echo team `demo`.
    fn start() -> Pair {
        Self::start_with(|_| DEMO.to_owned(), "")
    }

    /// With the teams `teams` makes for a node's folder, and `extra`.
    fn start_with(teams: impl Fn(&Path) -> String, extra: &str) -> Pair {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ports = (free_port(), free_port());
        let (server_a, url_a) = node_with(a.path(), ports.0, None, &teams(a.path()), extra);
        let db = iris_storage::testing::database_url(a.path());
        let (server_b, url_b) = node_with(b.path(), ports.1, Some(&db), &teams(b.path()), extra);
        let key = key_in(a.path());
        Pair {
            a,
            b,
            ports,
            server_a,
            _server_b: server_b,
            url_a,
            url_b,
            key,
            client: reqwest::Client::new(),
        }
    }

    /// A's URL, B's URL, the admin key and a client.
    fn handles(&self) -> (String, String, String, reqwest::Client) {
        let p = self;
        (
            p.url_a.clone(),
            p.url_b.clone(),
            p.key.clone(),
            p.client.clone(),
        )
    }

    /// A blocking message to `team` through the node at `base`.
    async fn tell(&self, base: &str, team: &str, message: &str) -> (u16, Value) {
        let body = json!({"toTeam": team, "message": message, "timeout": 0});
        post(&self.client, base, &self.key, "/teams/tell", body).await
    }

    /// Queue a message for `team` through the node at `base`: its id.
    async fn quick(&self, base: &str, team: &str, message: &str) -> String {
        let body = json!({"toTeam": team, "message": message});
        let (s, q) = post(&self.client, base, &self.key, "/teams/quick-tell", body).await;
        assert_eq!(s, 200, "{q}");
        q["messageId"].as_str().unwrap().to_owned()
    }

    /// Wait until message `id` (read through `base`) has `status`; its
    /// record.
    async fn message_until(&self, base: &str, id: &str, status: &str, within: Duration) -> Value {
        let path = format!("/api/v1/messages/{id}");
        self.until(base, &path, within, |m| m["status"] == status)
            .await
    }

    /// Read `path` through `base` until `done` holds (within `within`);
    /// that record.
    async fn until(
        &self,
        base: &str,
        path: &str,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (s, v) = get(&self.client, base, &self.key, path).await;
            if s == 200 && done(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{path}: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL A, then tell `demo` through `base` until it answers, which
    /// must be within the lease's TTL plus 2 s: the answer, and when.
    async fn kill_a_then_tell(&mut self, base: &str) -> (Value, Duration) {
        self.server_a.0.kill().unwrap();
        self.server_a.0.wait().unwrap();
        let killed = Instant::now();
        loop {
            let (s, v) = self.tell(base, "demo", "after").await;
            if s == 200 {
                assert_eq!(v["response"], "after", "{v}");
                return (v, killed.elapsed());
            }
            assert!(
                killed.elapsed() < Duration::from_millis(TTL_MS + 2000),
                "not taken over: {s} {v}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn post(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    http(
        client,
        reqwest::Method::POST,
        format!("{base}/api/v1{path}"),
        Some(key),
        body,
    )
    .await
}

async fn get(client: &reqwest::Client, base: &str, key: &str, path: &str) -> (u16, Value) {
    http(
        client,
        reqwest::Method::GET,
        format!("{base}{path}"),
        Some(key),
        Value::Null,
    )
    .await
}

/// Agent processes node `base` runs now.
async fn processes(client: &reqwest::Client, base: &str, key: &str) -> i64 {
    let (s, h) = get(client, base, key, "/health/detailed").await;
    assert_eq!(s, 200, "{h}");
    h["processes"]["total"].as_i64().unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_runs_on_its_owner_and_moves_when_the_owner_dies() {
    let mut p = Pair::start();
    let (url_a, url_b, key, client) = p.handles();

    // Through A first: A owns `demo`.
    let (s, one) = p.tell(&url_a, "demo", "first").await;
    assert_eq!((s, one["response"].as_str()), (200, Some("first")), "{one}");
    // Through B: carried out by A, in the same conversation; B runs nothing.
    let (s, two) = p.tell(&url_b, "demo", "second").await;
    assert_eq!(
        (s, two["response"].as_str()),
        (200, Some("second")),
        "{two}"
    );
    assert_eq!(two["sessionId"], one["sessionId"], "one conversation");
    assert_eq!(
        processes(&client, &url_b, &key).await,
        0,
        "B runs no process of demo"
    );
    assert_eq!(processes(&client, &url_a, &key).await, 1, "A runs it");
    // A streamed message through B: sent to A, followed from B.
    let out = std::process::Command::new("curl")
        .args([
            "-sN",
            "-H",
            &format!("authorization: Bearer {key}"),
            "-H",
            "content-type: application/json",
        ])
        .args(["-d", r#"{"message":"streamed [[chunks=3]]"}"#])
        .arg(format!("{url_b}/api/v1/teams/demo/stream"))
        .output()
        .unwrap();
    let sse = String::from_utf8_lossy(&out.stdout);
    assert!(
        sse.contains("event: chunk") && sse.contains("event: complete"),
        "{sse}"
    );
    assert_eq!(processes(&client, &url_b, &key).await, 0, "still none on B");

    // Not a node of this cluster: refused, whatever the body says.
    let body = json!({"operation": "get_date", "params": {}, "principal": {"kind": "local", "id": "local", "name": "iris", "scopes": ["*"], "teams": null}});
    for signature in [None, Some("t=1,v1=00"), Some("t=9999999999,v1=abcd")] {
        let mut req = client
            .post(format!("{url_a}/internal/v1/dispatch"))
            .json(&body);
        if let Some(sig) = signature {
            req = req.header("x-iris-cluster-signature", sig);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 403, "{signature:?}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["code"], "FORBIDDEN", "{v}");
    }

    // `iris cluster status` says who owns what.
    let out = iris(p.b.path())
        .env(
            "IRIS_DATABASE_URL",
            iris_storage::testing::database_url(p.a.path()),
        )
        .args(["cluster", "status", "--json"])
        .output()
        .unwrap();
    succeeded(&out);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let lease = status["leases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["team"] == "demo")
        .cloned()
        .unwrap();
    let owner_a = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["advertiseUrl"] == json!(format!("http://127.0.0.1:{}", p.ports.0)))
        .map(|m| m["id"].clone())
        .unwrap_or_default();
    assert_eq!(lease["nodeId"], owner_a, "{status}");

    // A job handed over through B runs on A, and is cancelled through B.
    let (s, job) = post(
        &client,
        &url_b,
        &key,
        "/teams/demo/execute",
        json!({"task": "[[delay=300]] a b c d e f g h i j"}),
    )
    .await;
    assert_eq!(s, 202, "{job}");
    let job_id = job["jobId"].as_str().unwrap().to_owned();
    let job_path = format!("/api/v1/jobs/{job_id}");
    let ten = Duration::from_secs(10);
    p.until(&url_b, &job_path, ten, |j| j["status"] == "running")
        .await;
    let (s, c) = post(
        &client,
        &url_b,
        &key,
        &format!("/jobs/{job_id}/cancel"),
        Value::Null,
    )
    .await;
    assert_eq!(s, 200, "cancelled on its owner: {c}");
    // Its end is written by the owner as the turn stops: read through B.
    p.until(&url_b, &job_path, ten, |j| j["status"] == "cancelled")
        .await;

    // A long turn through B runs on A; A is killed mid-turn.
    let running = p
        .quick(&url_b, "demo", "long [[delay=500]] a b c d e f g h")
        .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    // B takes the team over within the lease's TTL plus 2 s.
    let (answered, took) = p.kill_a_then_tell(&url_b).await;
    assert_eq!(answered["response"], "after", "{answered}");
    assert_eq!(
        answered["sessionId"], one["sessionId"],
        "the same conversation"
    );
    assert!(took <= Duration::from_millis(TTL_MS + 2000), "{took:?}");
    assert_eq!(processes(&client, &url_b, &key).await, 1, "B runs it now");
    // The turn A was running ended with the reason.
    let m = p
        .message_until(&url_b, &running, "failed", Duration::ZERO)
        .await;
    taken_over(&m["error"]);
    eprintln!("taken over {took:?} after the kill (lease TTL {TTL_MS} ms)");
}

/// A node paused past its lease (SIGSTOP) while its turn ran: the other
/// node takes the team over and ends the turn with the reason; when the
/// paused node wakes up, its agent has finished, but the turn's end it
/// then writes is refused by the fence (docs/scale-out.md, "Fenced
/// writes"): the record keeps the new owner's verdict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_that_wakes_up_cannot_overwrite_the_new_owners_verdict() {
    let p = Pair::start();
    let (url_a, url_b, key, client) = p.handles();
    let id = p
        .quick(&url_a, "demo", "[[delay=300]] a b c d e f g h")
        .await;
    p.message_until(&url_b, &id, "running", Duration::from_secs(10))
        .await;
    let pid = p.server_a.0.id().to_string();
    let signal = |sig: &str| {
        let st = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(st.success(), "kill {sig}");
    };
    signal("-STOP");
    // B takes the team over once A's lease has run out.
    let failed = p
        .message_until(&url_b, &id, "failed", Duration::from_millis(TTL_MS + 5000))
        .await;
    taken_over(&failed["error"]);
    // Meanwhile A's agent finished its reply. A wakes up and records it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal("-CONT");
    let refused = "no longer holds the team's lease";
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(p.a.path().join("serve.err"))
        .unwrap_or_default()
        .contains(refused)
    {
        assert!(
            Instant::now() < deadline,
            "A wrote nothing that was refused"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, m) = get(&client, &url_b, &key, &format!("/api/v1/messages/{id}")).await;
    assert_eq!(m["status"], "failed", "the new owner's verdict stays: {m}");
    assert_eq!(m["error"], failed["error"], "{m}");
    // A gave the team up; B answers for it, through A too.
    let (s, v) = p.tell(&url_a, "demo", "after").await;
    assert_eq!((s, v["response"].as_str()), (200, Some("after")), "{v}");
    assert_eq!(processes(&client, &url_b, &key).await, 1, "B runs it");
}

/// `why` says that another node took the team over.
fn taken_over(why: &Value) {
    assert!(
        why.as_str()
            .unwrap_or_default()
            .contains("took the team over"),
        "{why}"
    );
}

/// A command Claude Code asks about before it runs it.
const BASH: &str = r#"MSG<tool Bash {"command":"mkdir -p made-by-agent && echo approved-output","description":"Make a folder"}>"#;

/// The owner is SIGKILLed while a Claude Code turn waits for an approval
/// and jobs run and wait: the other node owns the teams within TTL + 2 s;
/// the turn ends `failed` and the approval `expired`, both with the
/// reason; each job ends once with one webhook; and the real Claude Code
/// CLI on the new node (its own HOME, its own copy of the team's folder)
/// continues the conversation with the earlier turn in its context.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_owner_dies_with_an_approval_pending_and_jobs_waiting() {
    let stub = anthropic_stub::start();
    let (hook, hits) = receiver(0);
    let teams = |dir: &Path| {
        std::fs::create_dir_all(dir.join("work")).unwrap();
        std::fs::create_dir_all(dir.join("claude-home")).unwrap();
        format!(
            "{DEMO}{}",
            claude_team(
                "ask",
                &dir.join("claude-home"),
                &stub.url,
                "    grantPermission: ask\n"
            )
        )
    };
    let hooks = "webhooks:\n  allowHosts: ['127.0.0.1']\n";
    let mut p = Pair::start_with(teams, hooks);
    let (url_a, url_b, key, client) = p.handles();

    // A first turn through A: A owns both teams from here.
    let (s, first) = p.tell(&url_a, "ask", "MSG<remember the word heron>").await;
    assert_eq!(s, 200, "{first}");
    assert!(
        first["response"]
            .as_str()
            .unwrap_or_default()
            .starts_with("reply 1:"),
        "{first}"
    );
    let (s, v) = p.tell(&url_a, "demo", "hi").await;
    assert_eq!(s, 200, "{v}");
    // Through B: a turn that waits for an approval, and two jobs.
    let waiting = p.quick(&url_b, "ask", BASH).await;
    let mut jobs = Vec::new();
    for n in 0..2 {
        let (s, j) = post(
            &client,
            &url_b,
            &key,
            "/teams/demo/execute",
            json!({"task": format!("[[delay=300]] job {n} a b c d e f"),
                   "callback": {"url": format!("{hook}/job{n}")}}),
        )
        .await;
        assert_eq!(s, 202, "{j}");
        jobs.push(j["jobId"].as_str().unwrap().to_owned());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let approval = loop {
        let (s, list) = get(
            &client,
            &url_b,
            &key,
            "/api/v1/approvals?team=ask&status=pending",
        )
        .await;
        assert_eq!(s, 200, "{list}");
        if let Some(a) = list["approvals"].as_array().and_then(|a| a.first()) {
            break a["id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "no approval pending");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let first_job = format!("/api/v1/jobs/{}", jobs[0]);
    p.until(&url_b, &first_job, Duration::from_secs(10), |j| {
        j["status"] == "running"
    })
    .await;

    p.server_a.0.kill().unwrap();
    p.server_a.0.wait().unwrap();
    let killed = Instant::now();
    // The approval expires and the turn fails, with the reason, once B
    // has taken the team over.
    let failed = p
        .message_until(
            &url_b,
            &waiting,
            "failed",
            Duration::from_millis(TTL_MS + 2000),
        )
        .await;
    let took = killed.elapsed();
    taken_over(&failed["error"]);
    let (_, ap) = get(
        &client,
        &url_b,
        &key,
        &format!("/api/v1/approvals/{approval}"),
    )
    .await;
    assert_eq!(ap["status"], "expired", "{ap}");
    taken_over(&ap["reason"]);
    // Claude Code on B goes on with the conversation: its transcript came
    // from the database, placed under B's HOME for B's folder.
    let (s, next) = p.tell(&url_b, "ask", "MSG<which word was it>").await;
    assert_eq!(s, 200, "{next}");
    assert_eq!(
        next["sessionId"], first["sessionId"],
        "the same conversation"
    );
    assert!(
        next["response"]
            .as_str()
            .unwrap_or_default()
            .starts_with("reply 2:"),
        "the earlier turn is in the context: {next}"
    );
    // Each job ends once, with one webhook.
    for (n, id) in jobs.iter().enumerate() {
        let path = format!("/api/v1/jobs/{id}");
        let job = p
            .until(&url_b, &path, Duration::from_secs(30), |j| {
                !matches!(j["status"].as_str(), Some("queued" | "running"))
            })
            .await;
        // The running one ends as after a crash (`jobs.retryInterrupted`
        // is off): failed, `interrupted`.
        assert!(
            job["status"] == "completed"
                || (job["status"] == "failed" && job["error"] == "interrupted"),
            "{job}"
        );
        if n == 1 {
            assert_eq!(
                job["status"], "completed",
                "the waiting job ran on B: {job}"
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while hits.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "{:?}", hits.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = hits.lock().unwrap().clone();
    for n in 0..2 {
        let of = got.iter().filter(|(p, _)| *p == format!("/job{n}")).count();
        assert_eq!(of, 1, "job {n}: one webhook: {got:?}");
    }
    eprintln!("taken over {took:?} after the kill (lease TTL {TTL_MS} ms)");
}

/// nginx started on `port` with the repository's deploy/nginx/iris.conf
/// (its `listen` moved to `port`), in front of the nodes at `nodes`.
fn nginx(dir: &Path, port: u16, nodes: &[u16]) -> Reap {
    let Ok(bin) = which("nginx") else {
        panic!("nginx is not installed: run scripts/test.sh (it installs Debian's nginx-light)");
    };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nginx");
    let site = std::fs::read_to_string(repo.join("iris.conf")).unwrap();
    assert!(site.contains("listen 80;"));
    std::fs::write(
        dir.join("iris.conf"),
        site.replace("listen 80;", &format!("listen 127.0.0.1:{port};")),
    )
    .unwrap();
    // The documented upstreams, with this test's nodes.
    let upstreams = std::fs::read_to_string(repo.join("iris-upstreams.conf")).unwrap();
    let servers: String = nodes
        .iter()
        .map(|p| format!("    server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;\n"))
        .collect();
    let mut ours = String::new();
    let mut skipped = false;
    for line in upstreams.lines() {
        if line.trim_start().starts_with("server ") {
            if !skipped {
                ours.push_str(&servers);
                skipped = true;
            }
            continue;
        }
        skipped = false;
        ours.push_str(line);
        ours.push('\n');
    }
    std::fs::write(dir.join("iris-upstreams.conf"), ours).unwrap();
    let d = dir.display();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "user root;\ndaemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nworker_processes 1;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  include {d}/iris-upstreams.conf;\n  include {d}/iris.conf;\n}}\n"
        ),
    )
    .unwrap();
    let child = std::process::Command::new(bin)
        .args(["-p", &d.to_string(), "-c", &format!("{d}/nginx.conf")])
        .stderr(std::fs::File::create(dir.join("nginx.err")).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nginx did not start: {}{}",
            std::fs::read_to_string(dir.join("nginx.err")).unwrap_or_default(),
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Reap(child)
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .ok_or(())
}

/// Run a client script of tests/clients with node; its last line as JSON.
fn node_client(args: &[&str]) -> Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let out = std::process::Command::new("node")
        .current_dir(&dir)
        .args(args)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{args:?}\n{stdout}\n{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|_| json!({"lines": stdout}))
}

/// Through nginx with the documented configuration, round robin over two
/// nodes, the team owned by one of them: REST, SSE, the WebSocket stream,
/// Socket.IO (the original plans' snippets), and MCP in both revisions
/// with the official SDKs (progress and cancellation of calls the owner
/// runs); and after the owner dies, calls through nginx are answered by
/// the other node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn behind_nginx_every_transport_reaches_the_teams_owner() {
    let lb = tempfile::tempdir().unwrap();
    let plb = free_port();
    let mut p = Pair::start();
    let (url_a, url_b, key, client) = p.handles();
    let (s, v) = p.tell(&url_a, "demo", "owned by A").await;
    assert_eq!(s, 200, "{v}");
    // MCP through B, the team on A: progress and cancellation cross over.
    let seen = node_client(&["mcp_client.mjs", "sdk1", &format!("{url_b}/mcp"), &key]);
    assert_eq!(seen["cancelled"], "cancelled", "{seen}");
    assert!(seen["progress"].as_u64() >= Some(2), "{seen}");
    assert_eq!(processes(&client, &url_b, &key).await, 0, "B ran nothing");

    let _nginx = nginx(lb.path(), plb, &[p.ports.0, p.ports.1]);
    let front = format!("http://127.0.0.1:{plb}");
    // REST, round robin: every answer from the one conversation.
    let mut sessions = std::collections::HashSet::new();
    for n in 0..4 {
        let (s, v) = p.tell(&front, "demo", &format!("rest {n}")).await;
        assert_eq!(
            (s, v["response"].clone()),
            (200, json!(format!("rest {n}"))),
            "{v}"
        );
        sessions.insert(v["sessionId"].to_string());
    }
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    // SSE.
    let out = std::process::Command::new("curl")
        .args(["-sN", "-H", &format!("authorization: Bearer {key}")])
        .args(["-H", "content-type: application/json"])
        .args(["-d", r#"{"message":"over sse"}"#])
        .arg(format!("{front}/api/v1/teams/demo/stream"))
        .output()
        .unwrap();
    let sse = String::from_utf8_lossy(&out.stdout);
    assert!(
        sse.contains("event: chunk") && sse.contains("event: complete"),
        "{sse}"
    );
    // The WebSocket stream.
    {
        let url = format!("ws://127.0.0.1:{plb}/api/v1/stream");
        let mut ws = ws_connect(&url, Some(&key)).await;
        send(
            &mut ws,
            json!({"type": "message", "team": "demo", "message": "over ws"}),
        )
        .await;
        let mut chunks = 0;
        loop {
            let v = recv(&mut ws).await;
            match v["type"].as_str() {
                Some("chunk") => chunks += 1,
                Some("complete") => break,
                Some("error") => panic!("{v}"),
                _ => {}
            }
        }
        assert!(chunks >= 1);
    }
    // Socket.IO: every snippet of the original plans, through the balancer.
    let io = std::process::Command::new("node")
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients"))
        .args(["socketio_client.mjs", "all", &front, &key])
        .output()
        .unwrap();
    assert!(
        io.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&io.stdout),
        String::from_utf8_lossy(&io.stderr)
    );
    // MCP in both revisions.
    for sdk in ["sdk1", "v2-2026"] {
        let seen = node_client(&["mcp_client.mjs", sdk, &format!("{front}/mcp"), &key]);
        assert_eq!(seen["cancelled"], "cancelled", "{sdk}: {seen}");
        assert!(seen["progress"].as_u64() >= Some(2), "{sdk}: {seen}");
    }
    assert_eq!(
        processes(&client, &url_b, &key).await,
        0,
        "all of it ran on A"
    );

    // A dies: nginx moves on to B, which takes the team over.
    p.kill_a_then_tell(&front).await;
}

/// Team to team across nodes: a Claude Code team on A asks the echo team
/// owned by B asynchronously with `notify`; B runs it, and its answer goes
/// back into the asking conversation on A, the asking team's owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_answer_with_notify_goes_back_to_the_asking_teams_node() {
    let stub = anthropic_stub::start();
    let teams = |dir: &Path| {
        std::fs::create_dir_all(dir.join("work")).unwrap();
        std::fs::create_dir_all(dir.join("claude-home")).unwrap();
        format!(
            "{DEMO}{}",
            claude_team("a", &dir.join("claude-home"), &stub.url, "")
        )
    };
    let p = Pair::start_with(teams, "");
    let (url_a, url_b, key, client) = p.handles();
    let (s, v) = p.tell(&url_b, "demo", "owned by B").await;
    assert_eq!(s, 200, "{v}");
    let args =
        json!({"toTeam": "demo", "message": "[[delay=300]] later", "timeout": -1, "notify": true})
            .to_string();
    let (s, r) = p
        .tell(
            &url_a,
            "a",
            &format!("MSG<tool mcp__iris__send_message {args}>"),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let said = r["response"].as_str().unwrap_or_default();
    assert!(said.contains("\"async\":true"), "{r}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let back = loop {
        let (_, report) = get(&client, &url_a, &key, "/api/v1/teams/a/report").await;
        let found = report["messages"].as_array().and_then(|m| {
            m.iter()
                .find(|m| {
                    m["request"]
                        .as_str()
                        .is_some_and(|t| t.contains("Team `demo` answered"))
                        && m["status"] == "completed"
                })
                .cloned()
        });
        if let Some(m) = found {
            break m;
        }
        assert!(Instant::now() < deadline, "no answer came back: {report}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        back["request"].as_str().unwrap().contains("later"),
        "{back}"
    );
    assert_eq!(
        processes(&client, &url_b, &key).await,
        2,
        "demo's two conversations (the admin's, a's), on B only"
    );
    assert_eq!(processes(&client, &url_a, &key).await, 1, "a ran on A only");
}
