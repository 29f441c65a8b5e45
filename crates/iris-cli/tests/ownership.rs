//! Team ownership (docs/scale-out.md, "Teams owned by one node"): two
//! `iris serve` nodes on one database and one Redis with `cluster.secret`.
//! A team's processes run on the node that holds its lease; a message,
//! a streamed message through the other node are carried out by the
//! owner; a call to the internal endpoint without the cluster's signature
//! is refused (403); when the owner is killed, the other node takes
//! the team over within the lease's TTL plus 2 s, the turn the dead node
//! was running ends `failed` with the reason, and messages are answered
//! again. Run on SQLite (one file for both nodes) and on Postgres.

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

/// A node in `dir` listening on `port`, advertising it.
fn node(dir: &Path, port: u16, db: Option<&str>) -> (Reap, String) {
    let config = format!(
        "api:\n  port: {port}\n  rateLimit:\n    maxRequests: 1000000\n    perIp: 1000000/min\n    messages: 1000000/min\ncluster:\n  advertiseUrl: http://127.0.0.1:{port}\n  secret: {SECRET}\n  leaseTtl: {TTL_MS}\nsettings:\n  shutdownGrace: 500\nteams:\n  demo:\n    path: .\n    agent: echo\n"
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
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (pa, pb) = (free_port(), free_port());
    let (mut server_a, url_a) = node(a.path(), pa, None);
    let db = iris_storage::testing::database_url(a.path());
    let (_server_b, url_b) = node(b.path(), pb, Some(&db));
    let key = key_in(a.path());
    let client = reqwest::Client::new();

    // Through A first: A owns `demo`.
    let (s, one) = post(
        &client,
        &url_a,
        &key,
        "/teams/tell",
        json!({"toTeam": "demo", "message": "first", "timeout": 0}),
    )
    .await;
    assert_eq!((s, one["response"].as_str()), (200, Some("first")), "{one}");
    // Through B: carried out by A, in the same conversation; B runs nothing.
    let (s, two) = post(
        &client,
        &url_b,
        &key,
        "/teams/tell",
        json!({"toTeam": "demo", "message": "second", "timeout": 0}),
    )
    .await;
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
    let out = iris(b.path())
        .env("IRIS_DATABASE_URL", &db)
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
        .find(|m| m["advertiseUrl"] == json!(format!("http://127.0.0.1:{pa}")))
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
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, j) = get(&client, &url_b, &key, &format!("/api/v1/jobs/{job_id}")).await;
        if j["status"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "{j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, c) = post(
        &client,
        &url_b,
        &key,
        &format!("/jobs/{job_id}/cancel"),
        Value::Null,
    )
    .await;
    assert_eq!(s, 200, "cancelled on its owner: {c}");
    let (_, j) = get(&client, &url_b, &key, &format!("/api/v1/jobs/{job_id}")).await;
    assert_eq!(j["status"], "cancelled", "{j}");

    // A long turn through B runs on A; A is killed mid-turn.
    let (s, q) = post(
        &client,
        &url_b,
        &key,
        "/teams/quick-tell",
        json!({"toTeam": "demo", "message": "long [[delay=500]] a b c d e f g h"}),
    )
    .await;
    assert_eq!(s, 200, "{q}");
    let running = q["messageId"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(700)).await;
    server_a.0.kill().unwrap();
    server_a.0.wait().unwrap();
    let killed = Instant::now();
    // B takes the team over within the lease's TTL plus 2 s.
    let answered = loop {
        let (s, v) = post(
            &client,
            &url_b,
            &key,
            "/teams/tell",
            json!({"toTeam": "demo", "message": "after", "timeout": 0}),
        )
        .await;
        if s == 200 {
            break v;
        }
        assert!(
            killed.elapsed() < Duration::from_millis(TTL_MS + 2000),
            "not taken over: {s} {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = killed.elapsed();
    assert_eq!(answered["response"], "after", "{answered}");
    assert_eq!(
        answered["sessionId"], one["sessionId"],
        "the same conversation"
    );
    assert!(took <= Duration::from_millis(TTL_MS + 2000), "{took:?}");
    assert_eq!(processes(&client, &url_b, &key).await, 1, "B runs it now");
    // The turn A was running ended with the reason.
    let (s, m) = get(
        &client,
        &url_b,
        &key,
        &format!("/api/v1/messages/{running}"),
    )
    .await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["status"], "failed", "{m}");
    assert!(
        m["error"]
            .as_str()
            .unwrap_or_default()
            .contains("took the team over"),
        "{m}"
    );
    eprintln!("taken over {took:?} after the kill (lease TTL {TTL_MS} ms)");
}
