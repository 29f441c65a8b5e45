//! Jobs and webhooks end to end, over real sockets, with a real HTTP
//! receiver in the test: `execute` → a signed callback (checked by the
//! docs' own verification scripts, which refuse a tampered body); priorities
//! order the queue; cancel of queued and running jobs; `Idempotency-Key`;
//! a receiver that fails twice then succeeds (three attempts recorded);
//! refused destinations (SSRF) and other bad input before anything is
//! queued; subscriptions with redelivery; the history's caller; and the
//! kill-9 test: 20 jobs queued on a slow team, `iris serve` SIGKILLed,
//! restarted, every job ends and every callback arrives.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Hit {
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Hit {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A webhook receiver: records every request; answers 500 to the first
/// `fail_first`, then 200.
#[derive(Clone, Default)]
struct Receiver {
    hits: Arc<Mutex<Vec<Hit>>>,
    fail_first: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start(fail_first: usize) -> (Receiver, String) {
        use axum::extract::{Request, State};
        let r = Receiver {
            fail_first: Arc::new(AtomicUsize::new(fail_first)),
            ..Default::default()
        };
        let app = axum::Router::new()
            .fallback(|State(r): State<Receiver>, req: Request| async move {
                let path = req.uri().path().to_owned();
                let headers = req
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                    .collect();
                let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                    .await
                    .unwrap()
                    .to_vec();
                r.hits.lock().unwrap().push(Hit {
                    path,
                    headers,
                    body,
                });
                let failing = r
                    .fail_first
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if failing {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::OK
                }
            })
            .with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (r, format!("http://127.0.0.1:{}", addr.port()))
    }

    fn hits(&self, path: &str) -> Vec<Hit> {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.path == path)
            .cloned()
            .collect()
    }

    /// Wait until `path` got at least `n` requests.
    async fn wait_for(&self, path: &str, n: usize) -> Vec<Hit> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let hits = self.hits(path);
            if hits.len() >= n {
                return hits;
            }
            assert!(
                Instant::now() < deadline,
                "{path}: {} of {n} requests arrived",
                hits.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

const WEBHOOKS: &str =
    "webhooks:\n  allowHosts: ['127.0.0.1']\n  retryBase: 50\n  retryMax: 200\n  maxAttempts: 4\n";

struct Setup {
    h: Harness,
    _server: iris_server::Running,
    base: String,
    key: String,
    http: reqwest::Client,
}

async fn setup(extra: &str) -> Setup {
    let yaml = format!(
        "api:\n  port: 0\n  maxBodyBytes: 65536\n{WEBHOOKS}{extra}settings:\n  responseTimeout: 30000\nteams:\n  demo:\n    path: .\n    agent: echo\n"
    );
    let h = start(&yaml).await;
    let (server, key) = h.serve_with_key("admin").await;
    Setup {
        base: format!("http://{}/api/v1", server.addr),
        h,
        _server: server,
        key,
        http: reqwest::Client::new(),
    }
}

impl Setup {
    async fn call(&self, method: Method, path: &str, body: Value) -> (u16, Value) {
        http(
            &self.http,
            method,
            format!("{}{path}", self.base),
            Some(&self.key),
            body,
        )
        .await
    }

    async fn execute(&self, body: Value) -> (u16, Value) {
        self.call(Method::POST, "/teams/demo/execute", body).await
    }

    /// Wait until job `id`'s first delivery is `status`; that delivery.
    async fn delivery(&self, id: &str, status: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, d) = self
                .call(Method::GET, &format!("/jobs/{id}/deliveries"), Value::Null)
                .await;
            if d["deliveries"][0]["status"] == status {
                return d["deliveries"][0].clone();
            }
            assert!(Instant::now() < deadline, "{d}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Wait until job `id` has ended; its record.
    async fn ended(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (s, job) = self
                .call(Method::GET, &format!("/jobs/{id}"), Value::Null)
                .await;
            assert_eq!(s, 200, "{job}");
            if !matches!(job["status"].as_str(), Some("queued" | "running")) {
                return job;
            }
            assert!(Instant::now() < deadline, "job {id} did not end: {job}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Run the docs' verification scripts on a delivery: all must agree.
fn documented_check(secret: &str, header: &str, body: &[u8]) -> bool {
    use std::io::Write;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/webhooks");
    let mut verdicts = Vec::new();
    for (prog, script) in [
        ("python3", "verify.py"),
        ("node", "verify.js"),
        ("sh", "verify.sh"),
    ] {
        let mut child = std::process::Command::new(prog)
            .arg(dir.join(script))
            .args([secret, header])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(body).unwrap();
        verdicts.push(child.wait().unwrap().success());
    }
    assert!(
        verdicts.iter().all(|v| *v == verdicts[0]),
        "the scripts disagree: {verdicts:?}"
    );
    verdicts[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_reports_by_signed_callback() {
    let s = setup("").await;
    let (rx, url) = Receiver::start(0).await;
    let secret = "job-secret-0123456789";
    let (status, accepted) = s
        .execute(json!({
            "task": "build the thing",
            "priority": "high",
            "callback": {"url": format!("{url}/done"), "headers": {"Authorization": "Bearer hook-token"}, "secret": secret},
        }))
        .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["status"], "queued");
    assert_eq!(accepted["position"], 1);
    assert_eq!(accepted["team"], "demo");
    let id = accepted["jobId"].as_str().unwrap().to_owned();
    assert!(id.starts_with("msg_"), "a job is a turn: {id}");

    let hit = rx.wait_for("/done", 1).await.remove(0);
    let payload = hit.json();
    assert_eq!(payload["jobId"], id.as_str());
    assert_eq!(payload["status"], "completed");
    assert_eq!(payload["result"], "build the thing");
    assert_eq!(payload["team"], "demo");
    assert!(payload["duration"].as_i64().unwrap() >= 0);
    assert_eq!(hit.headers["authorization"], "Bearer hook-token");
    assert_eq!(hit.headers["x-iris-event"], "job.completed");
    assert!(hit.headers["x-iris-delivery"].starts_with("dlv_"));
    let sig = &hit.headers["x-iris-signature"];
    assert!(
        documented_check(secret, sig, &hit.body),
        "a valid signature passes"
    );
    let mut tampered = hit.body.clone();
    let at = tampered.len() - 2;
    tampered[at] ^= 1;
    assert!(
        !documented_check(secret, sig, &tampered),
        "a tampered body fails"
    );
    assert!(
        !documented_check("another-secret-00000", sig, &hit.body),
        "so does another secret"
    );

    // The job and the message are one record.
    let job = s.ended(&id).await;
    assert_eq!(job["status"], "completed");
    assert_eq!(job["result"], "build the thing");
    assert_eq!(job["priority"], "high");
    assert!(job["startedAt"].is_i64() && job["completedAt"].is_i64());
    assert!(
        job["callback"]["secret"].is_null(),
        "the secret is never shown: {job}"
    );
    let (_, msg) = s
        .call(Method::GET, &format!("/messages/{id}"), Value::Null)
        .await;
    assert_eq!(msg["id"], id.as_str());
    assert_eq!(msg["kind"], "job");
    assert_eq!(msg["response"], "build the thing");
    let (_, list) = s
        .call(Method::GET, "/jobs?status=completed", Value::Null)
        .await;
    assert_eq!(list["pagination"]["total"], 1);
    let d = s.delivery(&id, "delivered").await;
    assert_eq!(d["attemptLog"].as_array().unwrap().len(), 1);
    assert_eq!(d["responseStatus"], 200);
    // Without a secret of its own, the server's signs; the history names the caller.
    let (_, second) = s
        .execute(json!({"task": "again", "callback": {"url": format!("{url}/plain")}}))
        .await;
    let hit = rx.wait_for("/plain", 1).await.remove(0);
    assert_eq!(hit.json()["jobId"], second["jobId"]);
    assert!(hit.headers["x-iris-signature"].starts_with("t="));
    let (_, history) = s
        .call(Method::GET, "/messages/history?team=demo", Value::Null)
        .await;
    let callers: BTreeSet<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["caller"].as_str().unwrap())
        .collect();
    assert_eq!(callers.len(), 1);
    assert!(callers.iter().all(|c| c.starts_with("key:")), "{callers:?}");
    s.h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priorities_order_the_queue_and_cancel_works_queued_and_running() {
    let s = setup("").await;
    let (rx, url) = Receiver::start(0).await;
    let cb = |path: &str| json!({"url": format!("{url}{path}")});
    // Occupies the team while the others queue.
    let (_, first) = s
        .execute(json!({"task": "[[delay=400]] one two three four", "callback": cb("/first")}))
        .await;
    let mut ids = BTreeMap::new();
    for (p, expected_position) in [("low", 1), ("high", 1), ("normal", 2)] {
        let (status, a) = s
            // 60 ms each: their start times tell their order apart.
            .execute(json!({"task": format!("[[delay=30]] {p} job"), "priority": p, "callback": cb("/ordered")}))
            .await;
        assert_eq!(status, 202, "{a}");
        assert_eq!(a["position"], expected_position, "{p}: {a}");
        ids.insert(p, a["jobId"].as_str().unwrap().to_owned());
    }
    rx.wait_for("/ordered", 3).await;
    // The order they ran in (their callbacks are sent side by side, and
    // may arrive in another).
    let mut started = Vec::new();
    for p in ["low", "high", "normal"] {
        let job = s.ended(&ids[p]).await;
        started.push((job["startedAt"].as_i64().unwrap(), job["id"].clone(), p));
    }
    started.sort_by_key(|(at, ..)| *at);
    let order: Vec<&str> = started.iter().map(|(.., p)| *p).collect();
    assert_eq!(order, ["high", "normal", "low"], "{started:?}");
    let first = s.ended(first["jobId"].as_str().unwrap()).await;
    assert_eq!(first["status"], "completed");
    // Estimates come from the team's durations once it has some.
    let (_, later) = s.execute(json!({"task": "[[delay=400]] a b c d e"})).await;
    assert!(later["estimatedCompletion"].as_i64().is_some(), "{later}");

    // Cancel: one running, one queued behind it.
    let (_, running) = s
        .execute(json!({"task": "[[delay=500]] s l o w", "callback": cb("/cancelled")}))
        .await;
    let (_, queued) = s
        .execute(json!({"task": "never runs", "callback": cb("/cancelled")}))
        .await;
    let running_id = running["jobId"].as_str().unwrap();
    let queued_id = queued["jobId"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while s
        .call(Method::GET, &format!("/jobs/{running_id}"), Value::Null)
        .await
        .1["status"]
        != "running"
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (id, was) in [(queued_id, "queued"), (running_id, "running")] {
        let (st, c) = s
            .call(Method::POST, &format!("/jobs/{id}/cancel"), Value::Null)
            .await;
        assert_eq!(
            (st, c["was"].as_str(), c["status"].as_str()),
            (200, Some(was), Some("cancelled")),
            "{c}"
        );
    }
    let hits = rx.wait_for("/cancelled", 2).await;
    let got: BTreeSet<(String, String)> = hits
        .iter()
        .map(|h| {
            (
                h.json()["jobId"].as_str().unwrap().to_owned(),
                h.json()["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        got,
        BTreeSet::from([
            (running_id.to_owned(), "cancelled".to_owned()),
            (queued_id.to_owned(), "cancelled".to_owned())
        ])
    );
    let (st, again) = s
        .call(
            Method::POST,
            &format!("/jobs/{queued_id}/cancel"),
            Value::Null,
        )
        .await;
    assert_eq!(
        (st, again["code"].as_str()),
        (409, Some("CONFLICT")),
        "{again}"
    );
    assert_eq!(
        s.ended(queued_id).await["startedAt"],
        Value::Null,
        "it never ran"
    );
    s.h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_over_its_time_limit_times_out() {
    let s = setup("").await;
    let (_, a) = s
        .execute(json!({"task": "[[delay=300]] a b c d e f", "timeout": 200}))
        .await;
    let job = s.ended(a["jobId"].as_str().unwrap()).await;
    assert_eq!(job["status"], "timed_out", "{job}");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("time limit of 200 ms"),
        "{job}"
    );
    s.h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_return_the_first_job() {
    let s = setup("").await;
    let send = |key: &'static str, task: &'static str| {
        let req = s
            .http
            .post(format!("{}/teams/demo/execute", s.base))
            .bearer_auth(&s.key)
            .header("Idempotency-Key", key)
            .json(&json!({"task": task}));
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s1, a) = send("deploy-42", "deploy main").await;
    let (s2, b) = send("deploy-42", "deploy main").await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(a["jobId"], b["jobId"]);
    assert_eq!(b["replayed"], true);
    let (s3, c) = send("deploy-42", "deploy something else").await;
    assert_eq!((s3, c["code"].as_str()), (409, Some("CONFLICT")), "{c}");
    assert_eq!(c["details"]["jobId"], a["jobId"]);
    let (s4, d) = send("deploy-43", "deploy main").await;
    assert_eq!(s4, 202, "{d}");
    assert_ne!(d["jobId"], a["jobId"]);
    let (_, list) = s.call(Method::GET, "/jobs", Value::Null).await;
    assert_eq!(list["pagination"]["total"], 2, "{list}");
    // Header and body: both only if they agree.
    let r = s
        .http
        .post(format!("{}/teams/demo/execute", s.base))
        .bearer_auth(&s.key)
        .header("Idempotency-Key", "deploy-44")
        .json(&json!({"task": "deploy main", "idempotencyKey": "deploy-45"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["details"]["fields"]["idempotencyKey"].is_string(),
        "{body}"
    );
    let r = s
        .http
        .post(format!("{}/teams/demo/execute", s.base))
        .bearer_auth(&s.key)
        .header("Idempotency-Key", "deploy-42")
        .json(&json!({"task": "deploy main", "idempotencyKey": "deploy-42"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["jobId"].clone(), body["replayed"].clone()),
        (a["jobId"].clone(), json!(true))
    );
    s.h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_is_retried_until_it_answers() {
    let s = setup("").await;
    let (rx, url) = Receiver::start(2).await;
    let (_, a) = s
        .execute(json!({"task": "flaky", "callback": {"url": format!("{url}/flaky")}}))
        .await;
    let id = a["jobId"].as_str().unwrap();
    let hits = rx.wait_for("/flaky", 3).await;
    assert_eq!(
        hits.iter()
            .map(|h| h.headers["x-iris-delivery"].clone())
            .collect::<BTreeSet<_>>()
            .len(),
        1,
        "one delivery, three attempts"
    );
    let d = s.delivery(id, "delivered").await;
    let log = d["attemptLog"].as_array().unwrap();
    let codes: Vec<i64> = log
        .iter()
        .map(|a| a["responseStatus"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [500, 500, 200]);
    assert_eq!(d["attempts"], 3);
    // Gave up after maxAttempts (4): failed, then redelivered by hand.
    let (rx2, url2) = Receiver::start(100).await;
    let (_, b) = s
        .execute(json!({"task": "doomed", "callback": {"url": format!("{url2}/down")}}))
        .await;
    rx2.wait_for("/down", 4).await;
    let id = b["jobId"].as_str().unwrap();
    let delivery = s.delivery(id, "failed").await;
    assert_eq!(delivery["attempts"], 4);
    rx2.fail_first.store(0, Ordering::SeqCst);
    let (st, r) = s
        .call(
            Method::POST,
            &format!(
                "/admin/webhook-deliveries/{}/redeliver",
                delivery["id"].as_str().unwrap()
            ),
            Value::Null,
        )
        .await;
    assert_eq!(st, 200, "{r}");
    rx2.wait_for("/down", 5).await;
    s.h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_refused_destinations_queue_nothing() {
    // Loopback is allowed only by address, not by the name `localhost`.
    let s = setup("").await;
    let (_rx, url) = Receiver::start(0).await;
    let port = url.rsplit(':').next().unwrap();
    for (body, status, field) in [
        (
            json!({"task": "x", "callback": {"url": "http://10.0.0.7/hook"}}),
            400,
            "callback.url",
        ),
        (
            json!({"task": "x", "callback": {"url": "http://169.254.169.254/latest/meta-data"}}),
            400,
            "callback.url",
        ),
        (
            json!({"task": "x", "callback": {"url": format!("http://localhost:{port}/hook")}}),
            400,
            "callback.url",
        ),
        (
            json!({"task": "x", "callback": {"url": "http://[::1]/hook"}}),
            400,
            "callback.url",
        ),
        (
            json!({"task": "x", "callback": {"url": "ftp://example.com/hook"}}),
            400,
            "callback.url",
        ),
        (
            json!({"task": "x", "callback": {"url": format!("{url}/h"), "headers": {"X-Iris-Signature": "forged"}}}),
            400,
            "callback.headers",
        ),
        (
            json!({"task": "x", "callback": {"url": format!("{url}/h"), "method": "GET"}}),
            400,
            "callback.method",
        ),
        (json!({"task": "x", "priority": "urgent"}), 400, "priority"),
        (json!({"task": ""}), 400, "task"),
        (json!({"task": "x", "timeout": 0}), 400, "timeout"),
        (json!({"task": "x", "surprise": 1}), 400, "surprise"),
    ] {
        let (st, e) = s.execute(body.clone()).await;
        assert_eq!(
            (st, e["code"].as_str()),
            (status, Some("VALIDATION_ERROR")),
            "{body}: {e}"
        );
        assert!(e.to_string().contains(field), "{body} names {field}: {e}");
    }
    let (st, e) = s
        .call(Method::POST, "/teams/nope/execute", json!({"task": "x"}))
        .await;
    assert_eq!(
        (st, e["code"].as_str()),
        (404, Some("TEAM_NOT_FOUND")),
        "{e}"
    );
    let (st, e) = s.call(Method::GET, "/jobs/msg_nope", Value::Null).await;
    assert_eq!(st, 404, "{e}");
    // Over the body cap (api.maxBodyBytes, 64 KiB here). On a connection of
    // its own: the server closes it after refusing the body unread, and a
    // pooled one would then fail the next request with a broken pipe.
    let (st, e) = http(
        &reqwest::Client::new(),
        Method::POST,
        format!("{}/teams/demo/execute", s.base),
        Some(&s.key),
        json!({"task": "x".repeat(100_000)}),
    )
    .await;
    assert_eq!(
        (st, e["code"].as_str()),
        (413, Some("VALIDATION_ERROR")),
        "{e}"
    );
    let (_, list) = s.call(Method::GET, "/jobs", Value::Null).await;
    assert_eq!(list["pagination"]["total"], 0, "nothing was queued: {list}");
    let (st, e) = s
        .call(
            Method::POST,
            "/admin/webhooks",
            json!({"url": "http://192.168.0.1/x", "events": ["job.completed"]}),
        )
        .await;
    assert_eq!(st, 400, "{e}");
    let (st, e) = s
        .call(
            Method::POST,
            "/admin/webhooks",
            json!({"url": format!("{url}/x"), "events": ["job.exploded"]}),
        )
        .await;
    assert_eq!(st, 400, "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("job.exploded"),
        "{e}"
    );
    s.h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_get_the_events_they_ask_for() {
    let s = setup("").await;
    let (rx, url) = Receiver::start(0).await;
    let (st, w) = s
        .call(
            Method::POST,
            "/admin/webhooks",
            json!({"url": format!("{url}/events"), "events": ["job.completed", "turn.completed"], "description": "ci"}),
        )
        .await;
    assert_eq!(st, 200, "{w}");
    let secret = w["secret"].as_str().unwrap().to_owned();
    let wid = w["id"].as_str().unwrap().to_owned();
    let (_, listed) = s.call(Method::GET, "/admin/webhooks", Value::Null).await;
    assert_eq!(listed["webhooks"][0]["id"], wid.as_str());
    assert!(
        listed["webhooks"][0]["secret"].is_null(),
        "never listed: {listed}"
    );

    let (_, job) = s.execute(json!({"task": "subscribed"})).await;
    let hits = rx.wait_for("/events", 2).await;
    let mut events: Vec<String> = hits
        .iter()
        .map(|h| h.json()["event"].as_str().unwrap().to_owned())
        .collect();
    events.sort();
    assert_eq!(events, ["job.completed", "turn.completed"]);
    for h in &hits {
        assert!(documented_check(
            &secret,
            &h.headers["x-iris-signature"],
            &h.body
        ));
        assert!(h.json()["timestamp"].is_i64());
    }
    let job_event = hits
        .iter()
        .find(|h| h.json()["event"] == "job.completed")
        .unwrap()
        .json();
    assert_eq!(job_event["data"]["jobId"], job["jobId"]);
    assert_eq!(job_event["data"]["status"], "completed");

    // Narrowed to jobs only: a plain message no longer reaches it.
    let (st, _) = s
        .call(
            Method::PATCH,
            &format!("/admin/webhooks/{wid}"),
            json!({"events": ["job.failed"]}),
        )
        .await;
    assert_eq!(st, 200);
    s.h.tell("demo", "just a message").await.unwrap();
    s.execute(json!({"task": "[[error=boom]] fails"})).await;
    let hits = rx.wait_for("/events", 3).await;
    assert_eq!(hits[2].json()["event"], "job.failed");
    let (_, d) = s
        .call(
            Method::GET,
            &format!("/admin/webhooks/{wid}/deliveries"),
            Value::Null,
        )
        .await;
    assert_eq!(d["pagination"]["total"], 3, "{d}");
    let (st, _) = s
        .call(
            Method::DELETE,
            &format!("/admin/webhooks/{wid}"),
            Value::Null,
        )
        .await;
    assert_eq!(st, 200);
    let (st, _) = s
        .call(Method::GET, &format!("/admin/webhooks/{wid}"), Value::Null)
        .await;
    assert_eq!(st, 404);
    s.h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_survive_a_sigkill() {
    let (rx, url) = Receiver::start(0).await;
    let home = tempfile::tempdir().unwrap();
    let config = format!(
        "api:\n  port: 0\n{WEBHOOKS}settings:\n  shutdownGrace: 500\nteams:\n  slow:\n    path: .\n    agent: echo\n"
    );
    let (mut server, base) = serve_in(home.path(), &config);
    let key = std::fs::read_to_string(home.path().join("credentials"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("IRIS_API_KEY=").map(str::to_owned))
        .unwrap();
    let client = reqwest::Client::new();
    let mut ids = BTreeSet::new();
    for i in 0..20 {
        let (st, a) = http(
            &client,
            Method::POST,
            format!("{base}/api/v1/teams/slow/execute"),
            Some(&key),
            json!({"task": format!("[[delay=60]] job {i} of twenty"), "callback": {"url": format!("{url}/kill9")}}),
        )
        .await;
        assert_eq!(st, 202, "{a}");
        ids.insert(a["jobId"].as_str().unwrap().to_owned());
    }
    // Some have run, one is running, the rest wait.
    rx.wait_for("/kill9", 2).await;
    // SAFETY: killing a child process this test started.
    unsafe { libc::kill(server.0.id() as i32, libc::SIGKILL) };
    server.0.wait().unwrap();
    let before = rx.hits("/kill9").len();
    assert!(before < 20, "the kill came too late to test anything");

    // (The killed server's port file would be read as the new one's.)
    std::fs::remove_file(home.path().join(".http.port")).unwrap();
    let (_server, base) = serve_in(home.path(), &config);
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let got: BTreeMap<String, String> = rx
            .hits("/kill9")
            .iter()
            .map(|h| {
                (
                    h.json()["jobId"].as_str().unwrap().to_owned(),
                    h.json()["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        if got.len() == 20 {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "{} of 20 callbacks arrived",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        done.keys().cloned().collect::<BTreeSet<_>>(),
        ids,
        "every job's webhook arrived"
    );
    for id in &ids {
        let (st, job) = http(
            &client,
            Method::GET,
            format!("{base}/api/v1/jobs/{id}"),
            Some(&key),
            Value::Null,
        )
        .await;
        assert_eq!(st, 200);
        match job["status"].as_str() {
            Some("completed") => {}
            // The one that was running when Iris died (jobs.retryInterrupted is off).
            Some("failed") => assert_eq!(job["error"], "interrupted", "{job}"),
            other => panic!("job {id} ended {other:?}: {job}"),
        }
        assert_eq!(done[id], job["status"].as_str().unwrap());
    }
    assert!(
        done.values().filter(|s| *s == "completed").count() >= 20 - 2,
        "queued jobs ran after the restart: {done:?}"
    );

    // The CLI talks to the same server.
    let run = iris(home.path())
        .args(["jobs", "run", "slow", "from the cli", "--priority", "high"])
        .output()
        .unwrap();
    succeeded(&run);
    let id = String::from_utf8(run.stdout).unwrap().trim().to_owned();
    assert!(id.starts_with("msg_"), "{id}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = iris(home.path())
            .args(["jobs", "get", &id])
            .output()
            .unwrap();
        succeeded(&got);
        let job: Value = serde_json::from_slice(&got.stdout).unwrap();
        if job["status"] == "completed" {
            assert_eq!(job["result"], "from the cli");
            break;
        }
        assert!(Instant::now() < deadline, "{job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let list = iris(home.path())
        .args(["jobs", "list", "--status", "completed"])
        .output()
        .unwrap();
    succeeded(&list);
    let table = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(table.contains(&id));
    // Times in one human form; epoch milliseconds only with --json.
    assert!(human_time(&table) && !epoch_ms(&table), "{table}");
    let list = iris(home.path())
        .args(["jobs", "list", "--json"])
        .output()
        .unwrap();
    succeeded(&list);
    let v: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert!(v["jobs"][0]["createdAt"].is_i64(), "{v}");
    let bad = iris(home.path())
        .args(["jobs", "cancel", &id])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("already ended"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_does_not_cancel_jobs() {
    let (rx, url) = Receiver::start(0).await;
    let yaml = format!(
        "{WEBHOOKS}jobs:\n  retryInterrupted: true\nsettings:\n  shutdownGrace: 300\nteams:\n  demo:\n    path: .\n    agent: echo\n"
    );
    let h = start(&yaml).await;
    let call = |h: &Harness, task: &str| {
        let params =
            json!({"team": "demo", "task": task, "callback": {"url": format!("{url}/stop")}});
        let iris = h.iris.clone();
        async move {
            iris.dispatch(iris_core::Ctx::local(), "job_execute", params)
                .await
                .unwrap()
        }
    };
    let running = call(&h, "[[delay=200]] a b c d e f g h").await;
    let queued = call(&h, "behind it").await;
    let id = running["jobId"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while h
        .iris
        .dispatch(iris_core::Ctx::local(), "job_get", json!({"jobId": id}))
        .await
        .unwrap()["status"]
        != "running"
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let home = h.stop().await;
    assert!(
        rx.hits("/stop").is_empty(),
        "the shutdown reported nothing as cancelled"
    );
    // Started again: the interrupted job runs again (retryInterrupted), the queued one runs.
    let h = start_in(home, &yaml).await;
    let hits = rx.wait_for("/stop", 2).await;
    let got: BTreeMap<String, (String, Value)> = hits
        .iter()
        .map(|h| {
            let v = h.json();
            (
                v["jobId"].as_str().unwrap().to_owned(),
                (
                    v["status"].as_str().unwrap().to_owned(),
                    v["result"].clone(),
                ),
            )
        })
        .collect();
    assert_eq!(got[&id].0, "completed", "{got:?}");
    assert_eq!(got[queued["jobId"].as_str().unwrap()].1, "behind it");
    let job = h
        .iris
        .dispatch(iris_core::Ctx::local(), "job_get", json!({"jobId": id}))
        .await
        .unwrap();
    assert_eq!(job["attempts"], 2, "{job}");
    h.stop().await;
}

/// A fresh session id (a UUID v4 from the kernel's generator).
fn uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_conversation_or_a_team_ends_its_jobs_with_their_callbacks() {
    let (receiver, url) = Receiver::start(0).await;
    let s = setup("teamRoots: [./rt]\n").await;
    // Three jobs in one conversation, the first running.
    let sid = uuid();
    let mut ids = Vec::new();
    for (i, task) in ["[[delay=1000]] a b c d e f g h i j", "second", "third"]
        .iter()
        .enumerate()
    {
        let (status, v) = s
            .execute(
                json!({"task": task, "sessionId": sid, "callback": {"url": format!("{url}/c{i}")}}),
            )
            .await;
        assert_eq!(status, 202, "{v}");
        ids.push(v["jobId"].as_str().unwrap().to_owned());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, j) = s
            .call(Method::GET, &format!("/jobs/{}", ids[0]), Value::Null)
            .await;
        if j["status"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "{j}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, v) = s
        .call(Method::DELETE, &format!("/cache/{sid}"), Value::Null)
        .await;
    assert_eq!(status, 200, "{v}");
    for i in 0..3 {
        let hit = &receiver.wait_for(&format!("/c{i}"), 1).await[0];
        let body = hit.json();
        assert_eq!(body["status"], "cancelled", "job {i}: {body}");
    }
    // A deleted team's queued jobs end at once, each heard of.
    std::fs::create_dir_all(s.h.home.path().join("rt/temp")).unwrap();
    let (status, v) = s
        .call(
            Method::POST,
            "/teams",
            json!({"name": "temp", "path": "./rt/temp", "profile": "echo"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    for i in 0..30 {
        let task = if i == 0 {
            // Long enough to still run when the team is deleted.
            "[[delay=1000]] a b c d e f g h i j"
        } else {
            "later"
        };
        let (status, v) = s
            .call(
                Method::POST,
                "/teams/temp/execute",
                json!({"task": task, "callback": {"url": format!("{url}/t{i}")}}),
            )
            .await;
        assert_eq!(status, 202, "{v}");
    }
    let deleted = Instant::now();
    let (status, v) = s
        .call(Method::DELETE, "/teams/temp?force=true", Value::Null)
        .await;
    assert_eq!(status, 200, "{v}");
    for i in 0..30 {
        let hit = &receiver.wait_for(&format!("/t{i}"), 1).await[0];
        assert_eq!(hit.json()["status"], "cancelled", "{}", hit.json());
    }
    // Not a speed target (those are in bench/): it catches waiting on each
    // job in turn (30 × the 5 s a running job's end may take), with room
    // for a loaded two-core machine running the suite on Postgres (it took
    // 1.3 s alone, 6.5 s once under the whole suite).
    assert!(
        deleted.elapsed() < Duration::from_secs(20),
        "took {:?}",
        deleted.elapsed()
    );
    s.h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_job_that_just_ended_is_a_conflict() {
    let s = setup("").await;
    let mut seen = BTreeSet::new();
    for i in 0..40u64 {
        let (status, v) = s.execute(json!({"task": format!("quick {i}")})).await;
        assert_eq!(status, 202, "{v}");
        let id = v["jobId"].as_str().unwrap().to_owned();
        tokio::time::sleep(Duration::from_millis((i * 37) % 120)).await;
        let (status, c) = s
            .call(Method::POST, &format!("/jobs/{id}/cancel"), Value::Null)
            .await;
        let job = s.ended(&id).await;
        match status {
            // This cancel ended it.
            200 => assert_eq!(
                (c["status"].as_str(), job["status"].as_str()),
                (Some("cancelled"), Some("cancelled")),
                "{c} {job}"
            ),
            409 => assert_eq!(c["details"]["status"], job["status"], "{c} {job}"),
            other => panic!("{other}: {c}"),
        }
        seen.insert((
            status,
            job["status"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    assert!(!seen.contains(&(200, "completed".to_owned())), "{seen:?}");
    s.h.stop().await;
}

/// Jobs accepted while their conversation is being deleted: each one
/// answered 202 is heard of (its callback, `cancelled` or `completed`),
/// none vanishes with the history; an execute that loses the race gets a
/// clear refusal, never a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_accepted_as_their_conversation_is_deleted_are_all_heard_of() {
    let (receiver, url) = Receiver::start(0).await;
    let s = setup("").await;
    let mut accepted = Vec::new();
    // (8 × 6 sends: within the 60 a minute a caller may send.)
    for round in 0..8 {
        let sid = uuid();
        let (status, v) = s
            .execute(json!({"task": "first [[delay=50]]", "sessionId": sid,
                            "callback": {"url": format!("{url}/r{round}-first")}}))
            .await;
        assert_eq!(status, 202, "{v}");
        accepted.push(format!("/r{round}-first"));
        let executes = (0..5).map(|i| {
            let body = json!({"task": format!("job {i}"), "sessionId": sid,
                              "callback": {"url": format!("{url}/r{round}-{i}")}});
            let s = &s;
            async move {
                tokio::time::sleep(Duration::from_millis(i * 3)).await;
                (format!("/r{round}-{i}"), s.execute(body).await)
            }
        });
        let delete = async {
            tokio::time::sleep(Duration::from_millis(round % 4 * 4)).await;
            s.call(Method::DELETE, &format!("/cache/{sid}"), Value::Null)
                .await
        };
        let (answers, (status, v)) = tokio::join!(futures_util::future::join_all(executes), delete);
        assert_eq!(status, 200, "{v}");
        for (path, (status, v)) in answers {
            match status {
                202 => accepted.push(path),
                // Lost the race: the conversation went first.
                404 | 409 => {}
                other => panic!("{other}: {v}"),
            }
        }
    }
    for path in &accepted {
        let hits = receiver.wait_for(path, 1).await;
        let body = hits[0].json();
        assert!(
            matches!(body["status"].as_str(), Some("cancelled" | "completed")),
            "{path}: {body}"
        );
    }
    s.h.stop().await;
}

/// Cancels at once of one job, running or waiting: one ends it (200,
/// `cancelled` in its body), the others are told its end (409 with
/// `cancelled`, never `queued` or `running`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_at_once_end_a_job_once() {
    let s = setup("").await;
    // A running job, and one waiting behind it (one job of a team at a time).
    let mut ids = Vec::new();
    for task in ["[[delay=3000]] a b c d e f g h i j", "waits"] {
        let (status, v) = s.execute(json!({"task": task})).await;
        assert_eq!(status, 202, "{v}");
        ids.push(v["jobId"].as_str().unwrap().to_owned());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while s
        .call(Method::GET, &format!("/jobs/{}", ids[0]), Value::Null)
        .await
        .1["status"]
        != "running"
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in ids.iter().rev() {
        let path = format!("/jobs/{id}/cancel");
        let cancel = || s.call(Method::POST, &path, Value::Null);
        let answers = futures_util::future::join_all([cancel(), cancel(), cancel()]).await;
        let won: Vec<_> = answers.iter().filter(|(st, _)| *st == 200).collect();
        assert_eq!(won.len(), 1, "{answers:?}");
        assert_eq!(won[0].1["status"], "cancelled", "{answers:?}");
        for (status, v) in answers.iter().filter(|(st, _)| *st != 200) {
            assert_eq!(*status, 409, "{v}");
            assert_eq!(v["details"]["status"], "cancelled", "{answers:?}");
        }
    }
    s.h.stop().await;
}

/// Jobs accepted while their team is being deleted (a team that had been
/// deleted and made again under its name): each one answered 202 ends and
/// is heard of promptly — none waits queued for a team of that name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_accepted_as_their_team_is_deleted_are_all_heard_of() {
    let (receiver, url) = Receiver::start(0).await;
    let s = setup("teamRoots: [./rt]\n").await;
    let accepted = std::sync::Mutex::new(Vec::new());
    // Four teams at once, two rounds each (4 × 2 × 7 sends: within the 60
    // a minute a caller may send).
    let team = |t: u64| {
        let (s, url, accepted) = (&s, &url, &accepted);
        async move {
            let name = format!("temp{t}");
            std::fs::create_dir_all(s.h.home.path().join(format!("rt/{name}"))).unwrap();
            let create = || {
                s.call(
                    Method::POST,
                    "/teams",
                    json!({"name": name, "path": format!("./rt/{name}"), "profile": "echo"}),
                )
            };
            let (gone, run) = (
                format!("/teams/{name}?force=true"),
                format!("/teams/{name}/execute"),
            );
            let delete = || s.call(Method::DELETE, &gone, Value::Null);
            let execute = |body: Value| s.call(Method::POST, &run, body);
            for round in 0..2u64 {
                assert_eq!(create().await.0, 200);
                let (status, v) = execute(json!({"task": "before [[delay=30]]"})).await;
                assert_eq!(status, 202, "{v}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                assert_eq!(delete().await.0, 200);
                assert_eq!(create().await.0, 200);
                let executes = (0..6u64).map(|i| {
                    let path = format!("/{name}-{round}-{i}");
                    let body = json!({"task": format!("job {i} [[delay=30]]"),
                                      "callback": {"url": format!("{url}{path}")}});
                    let execute = &execute;
                    async move {
                        tokio::time::sleep(Duration::from_millis((i * 7 + t * 3) % 40)).await;
                        (path, execute(body).await)
                    }
                });
                let deleting = async {
                    tokio::time::sleep(Duration::from_millis((round * 11 + t * 5) % 30)).await;
                    delete().await
                };
                let (answers, (status, v)) =
                    tokio::join!(futures_util::future::join_all(executes), deleting);
                assert_eq!(status, 200, "{v}");
                for (path, (status, v)) in answers {
                    match status {
                        202 => accepted.lock().unwrap().push(path),
                        404 | 409 => {}
                        other => panic!("{other}: {v}"),
                    }
                }
            }
        }
    };
    futures_util::future::join_all((0..4).map(team)).await;
    // Promptly: well before a stranded job would be noticed (the response
    // timeout of the turn it waited behind).
    let accepted = accepted.into_inner().unwrap();
    let deadline = Instant::now() + Duration::from_secs(8);
    for path in &accepted {
        while receiver.hits(path).is_empty() {
            assert!(
                Instant::now() < deadline,
                "{path} not heard of; accepted: {accepted:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    s.h.stop().await;
}
