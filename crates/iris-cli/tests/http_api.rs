//! The HTTP API over a real socket: every REST route of seeds 000-003, /rpc,
//! health, request ids, and each failure answering with the error body.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Api {
    h: Harness,
    server: iris_server::Running,
    base: String,
    http: reqwest::Client,
}

async fn api(extra: &str) -> Api {
    let h = start(&format!(
        "api:\n  port: 0\n  requireAuth: false\n  maxBodyBytes: 4096\n{extra}teams:\n  demo:\n    path: .\n    agent: echo\n  other:\n    path: .\n    agent: echo\n"
    ))
    .await;
    let port_file = h.home.path().join(".http.port");
    let server = iris_server::start(h.iris.clone(), Some(port_file))
        .await
        .unwrap();
    let base = format!("http://{}", server.addr);
    Api {
        h,
        server,
        base,
        http: reqwest::Client::new(),
    }
}

impl Api {
    async fn req(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self.http.request(m, format!("{}{path}", self.base));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let v = resp.json().await.unwrap_or(Value::Null);
        (status, v)
    }
    /// The body of `GET path` as text.
    async fn text(&self, path: &str) -> String {
        let r = self.http.get(format!("{}{path}", self.base)).send();
        r.await.unwrap().text().await.unwrap()
    }
    async fn stop(self) {
        self.server.stop().await;
        self.h.stop().await;
    }
}

/// Send `request` as is over a fresh connection; the whole answer as text.
async fn raw_request(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    // The server may answer and close before reading everything: a reset
    // after the answer is fine.
    let _ = tcp.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn assert_error_body(v: &Value, status: u16, code: &str) {
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["statusCode"], status, "{v}");
    assert!(
        v["error"].is_string() && v["message"].is_string() && v["timestamp"].is_i64(),
        "{v}"
    );
    assert!(
        v["requestId"].as_str().is_some_and(|r| !r.is_empty()),
        "{v}"
    );
}

#[tokio::test]
async fn the_tool_mirror_answers_under_both_prefixes() {
    let a = api("").await;
    for prefix in ["/api/v1", "/api"] {
        let (s, v) = a
            .req(
                "POST",
                &format!("{prefix}/teams/tell"),
                Some(
                    json!({"toTeam": "demo", "message": "hello", "fromTeam": "web", "timeout": 0}),
                ),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            (v["from"].as_str(), v["to"].as_str(), v["response"].as_str()),
            (Some("web"), Some("demo"), Some("hello"))
        );
        assert_eq!(v["async"], false);
        assert!(v["duration"].is_u64() && v["timestamp"].is_i64());
    }
    let (_, q) = a
        .req(
            "POST",
            "/api/v1/teams/quick-tell",
            Some(json!({"toTeam": "demo", "message": "later"})),
        )
        .await;
    assert_eq!(q["async"], true);
    let (s, m) = a
        .req(
            "GET",
            &format!("/api/v1/messages/{}", q["messageId"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(m["request"], "later");
    let (_, v) = a
        .req(
            "POST",
            "/api/v1/teams/ask",
            Some(json!({"toTeam": "demo", "message": "q?", "timeout": 0})),
        )
        .await;
    assert_eq!(v["response"], "q?");
    let (_, v) = a
        .req(
            "POST",
            "/api/v1/teams/demo/ask",
            Some(json!({"question": "seed 002?", "timeout": 0})),
        )
        .await;
    assert_eq!(v["response"], "seed 002?");
    a.stop().await;
}

#[tokio::test]
async fn process_routes_wake_sleep_reboot_delete_fork_cancel() {
    let a = api("").await;
    let (s, w) = a.req("POST", "/api/v1/teams/demo/wake", None).await;
    assert_eq!(s, 200, "{w}");
    assert_eq!(w["status"], "awake");
    let (_, st) = a.req("GET", "/api/v1/teams/demo/status", None).await;
    assert_eq!(st["teams"][0]["awake"], true);
    let (_, l) = a.req("POST", "/api/v1/teams/demo/launch", None).await;
    assert!(l["resumeCommand"].is_string());
    let (_, list) = a
        .req("GET", "/api/v1/teams?includeProcessDetails=true", None)
        .await;
    assert_eq!(list["totalTeams"], 2);
    assert_eq!(list["awakeTeams"], 1);
    assert!(list["teams"][0]["process"].is_array(), "{list}");
    let (_, sl) = a
        .req(
            "POST",
            "/api/v1/teams/demo/sleep",
            Some(json!({"force": false})),
        )
        .await;
    assert_eq!(sl["status"], "asleep");
    let (_, all) = a.req("POST", "/api/v1/teams/wake-all", None).await;
    assert_eq!(all["results"].as_array().unwrap().len(), 2);
    a.req(
        "POST",
        "/api/v1/teams/tell",
        Some(json!({"toTeam": "demo", "message": "one", "timeout": 0})),
    )
    .await;
    let (_, f) = a.req("POST", "/api/v1/teams/demo/fork", None).await;
    assert!(f["forkedFrom"].is_string(), "{f}");
    let (_, c) = a.req("POST", "/api/v1/teams/demo/cancel", None).await;
    assert_eq!(c["cancelled"], false);
    let (s, r) = a.req("DELETE", "/api/v1/teams/demo/reboot", None).await;
    assert_eq!(s, 200, "{r}");
    assert!(r["newSessionId"].is_string());
    let (_, r2) = a.req("POST", "/api/teams/demo/reboot", None).await;
    assert_ne!(r2["newSessionId"], r["newSessionId"]);
    a.req(
        "POST",
        "/api/v1/teams/tell",
        Some(json!({"toTeam": "demo", "message": "two", "timeout": 0})),
    )
    .await;
    let (_, rep) = a
        .req("GET", "/api/v1/teams/demo/report?limit=5", None)
        .await;
    assert_eq!(rep["messages"][0]["request"], "two");
    let (s, d) = a.req("DELETE", "/api/v1/teams/demo/delete", None).await;
    assert_eq!(s, 200);
    assert_eq!(d["deleted"], true);
    a.stop().await;
}

#[tokio::test]
async fn system_routes_history_logs_date_status_health() {
    let a = api("").await;
    for i in 0..3 {
        a.req(
            "POST",
            "/api/v1/teams/tell",
            Some(json!({"toTeam": "demo", "message": format!("m{i}"), "timeout": 0})),
        )
        .await;
    }
    let (_, h) = a
        .req(
            "GET",
            "/api/v1/messages/history?team=demo&limit=2&page=1",
            None,
        )
        .await;
    assert_eq!(
        h["pagination"],
        json!({"page": 1, "limit": 2, "total": 3, "hasNext": true})
    );
    let (_, d) = a.req("GET", "/api/v1/date", None).await;
    assert!(d["iso"].as_str().unwrap().ends_with('Z'));
    let (_, s) = a.req("GET", "/api/v1/status", None).await;
    assert_eq!(s["processes"]["maxProcesses"], 10);
    assert_eq!(s["sessions"]["total"], 1);
    // Milliseconds since start (this server started moments ago), never a timestamp.
    let up = s["uptime"].as_i64().unwrap();
    assert!((0..600_000).contains(&up), "{s}");
    let (_, l) = a.req("GET", "/api/v1/logs?level=debug&limit=5", None).await;
    assert!(l["logs"].is_array());
    assert_eq!(a.req("GET", "/healthz", None).await.1, json!({"ok": true}));
    assert_eq!(a.req("GET", "/health", None).await.1["status"], "ok");
    let (s, det) = a.req("GET", "/health/detailed", None).await;
    assert_eq!(s, 200);
    assert_eq!(det["database"]["ok"], true);
    assert!(det["queues"]["demo"].is_u64());
    assert_eq!(a.req("GET", "/ready", None).await.1["ready"], true);
    a.stop().await;
}

#[tokio::test]
async fn tools_list_describe_execute_with_schema_validation() {
    let a = api("").await;
    let (_, t) = a.req("GET", "/api/v1/tools", None).await;
    assert!(t["count"].as_u64().unwrap() >= 17);
    let (_, one) = a.req("GET", "/api/v1/tools/send_message", None).await;
    assert_eq!(one["inputSchema"]["properties"]["timeout"]["minimum"], -1);
    let (s, ex) = a
        .req(
            "POST",
            "/api/v1/tools/send_message/execute",
            Some(json!({"parameters": {"toTeam": "demo", "message": "via tool", "timeout": 0}})),
        )
        .await;
    assert_eq!(s, 200, "{ex}");
    assert_eq!(ex["result"]["response"], "via tool");
    let (s, bad) = a
        .req(
            "POST",
            "/api/v1/tools/send_message/execute",
            Some(json!({"parameters": {"message": "", "timeout": "soon"}})),
        )
        .await;
    assert_eq!(s, 400);
    assert_error_body(&bad, 400, "VALIDATION_ERROR");
    let fields = bad["details"]["fields"].as_object().unwrap();
    for f in ["toTeam", "message", "timeout"] {
        assert!(fields.contains_key(f), "{fields:?}");
    }
    let (s, nf) = a.req("GET", "/api/v1/tools/nope", None).await;
    assert_eq!(s, 404);
    assert_error_body(&nf, 404, "NOT_FOUND");
    a.stop().await;
}

#[tokio::test]
async fn rpc_and_every_failure_answer_with_the_error_body() {
    let a = api("").await;
    let (s, v) = a
        .req(
            "POST",
            "/rpc",
            Some(json!({"method": "get_date", "params": {}})),
        )
        .await;
    assert_eq!(s, 200);
    assert!(v["timestamp"].is_i64());
    let (s, v) = a.req("POST", "/rpc", Some(json!({"method": "nope"}))).await;
    assert_eq!(s, 404);
    assert_error_body(&v, 404, "METHOD_NOT_FOUND");
    let (s, v) = a.req("POST", "/rpc", Some(json!({"params": {}}))).await;
    assert_eq!(s, 400);
    assert_error_body(&v, 400, "VALIDATION_ERROR");
    let raw = a
        .http
        .post(format!("{}/rpc", a.base))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    assert_error_body(&raw.json().await.unwrap(), 400, "MALFORMED_JSON");
    let big = a
        .http
        .post(format!("{}/api/v1/teams/tell", a.base))
        .body("x".repeat(10_000))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
    assert_error_body(&big.json().await.unwrap(), 413, "VALIDATION_ERROR");
    // Without a declared length (chunked), the body is cut off at the limit.
    let answer = raw_request(
        a.server.addr,
        &format!(
            "POST /api/v1/teams/tell HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{}0\r\n\r\n",
            format!("7d0\r\n{}\r\n", "x".repeat(2000)).repeat(5)
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"VALIDATION_ERROR\""), "{answer}");
    let (s, v) = a.req("GET", "/api/v1/nowhere", None).await;
    assert_eq!(s, 404);
    assert_error_body(&v, 404, "NOT_FOUND");
    let (s, v) = a.req("DELETE", "/api/v1/teams/tell", None).await;
    assert_eq!(s, 405);
    assert_error_body(&v, 405, "METHOD_NOT_FOUND");
    let (s, v) = a
        .req(
            "POST",
            "/api/v1/teams/tell",
            Some(json!({"toTeam": "ghost", "message": "x"})),
        )
        .await;
    assert_eq!(s, 404);
    assert_error_body(&v, 404, "TEAM_NOT_FOUND");
    let (s, v) = a
        .req(
            "POST",
            "/api/v1/teams/tell",
            Some(json!({"toTeam": "demo", "message": "a b c d [[delay=200]]", "timeout": 100})),
        )
        .await;
    assert_eq!(s, 408);
    assert_error_body(&v, 408, "TIMEOUT");
    assert!(v["details"]["messageId"].is_string());
    let (s, v) = a
        .req(
            "POST",
            "/api/v1/teams/tell",
            Some(json!({"toTeam": "demo", "message": "[[error=nope]]", "timeout": 0})),
        )
        .await;
    assert_eq!(s, 500);
    assert_error_body(&v, 500, "PROCESS_ERROR");
    a.stop().await;
}

/// Slow-loris: a client that trickles its headers, or keeps a connection
/// open without sending the next request, is cut off after
/// `api.headerTimeout`; one that sends its request in time is answered.
#[tokio::test]
async fn clients_too_slow_with_their_headers_are_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = api("  headerTimeout: 300\n").await;
    let addr = a.server.addr;
    let closed_within = |mut tcp: tokio::net::TcpStream| async move {
        let started = std::time::Instant::now();
        let mut seen = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut seen)).await;
        assert!(read.is_ok(), "the connection was not closed");
        (
            started.elapsed(),
            String::from_utf8_lossy(&seen).into_owned(),
        )
    };
    // Headers that never end.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let (took, seen) = closed_within(slow).await;
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(!seen.contains("200 OK"), "{seen}");
    // A kept-alive connection gets its answer, then the same time for the next request.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let (took, seen) = closed_within(idle).await;
    assert!(seen.starts_with("HTTP/1.1 200 OK"), "{seen}");
    assert!(took >= Duration::from_millis(200), "{took:?}");
    // Requests sent in time are unaffected.
    assert_eq!(a.req("GET", "/healthz", None).await.0, 200);
    a.stop().await;
}

/// The routing table: a method a path does not answer is a 405 naming the
/// ones it does (`Allow`); a GET route answers HEAD; `{…}` segments arrive
/// percent-decoded; requests no route takes count as `unmatched`.
#[tokio::test]
async fn routes_match_templates_and_methods() {
    let a = api("").await;
    let url = |p: &str| format!("{}{p}", a.base);
    let send = |m: reqwest::Method, p: &str| a.http.request(m, url(p)).send();
    let r = send(reqwest::Method::DELETE, "/api/v1/teams/tell")
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    let r = send(reqwest::Method::GET, "/api/v1/teams/demo/reboot")
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST, DELETE");
    assert_error_body(&r.json().await.unwrap(), 405, "METHOD_NOT_FOUND");
    let r = send(reqwest::Method::HEAD, "/api/v1/status").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert!(r.bytes().await.unwrap().is_empty());
    let (s, v) = a.req("GET", "/api/v1/tools/get%5Fstatus", None).await;
    assert_eq!(
        (s.as_u16(), v["name"].as_str()),
        (200, Some("get_status")),
        "{v}"
    );
    let (s, v) = a.req("GET", "/api/v1/teams/de%6Do/status", None).await;
    assert_eq!(s, 200, "{v}");
    let metrics = a.text("/metrics").await;
    assert!(
        metrics.contains(
            r#"iris_http_requests_total{route="unmatched",method="DELETE",status="405"} 1"#
        ),
        "{metrics}"
    );
    a.stop().await;
}

/// `api.maxConnections`: at the cap the server accepts nothing more; a
/// further client waits, unanswered, until an open connection closes, and
/// is then served.
#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = api("  maxConnections: 2\n").await;
    let addr = a.server.addr;
    const REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    async fn answer(tcp: &mut tokio::net::TcpStream) -> String {
        let mut buf = vec![0u8; 4096];
        let n = tcp.read(&mut buf).await.unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
    // Two kept-alive connections fill the cap.
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(REQUEST).await.unwrap();
        assert!(answer(&mut tcp).await.starts_with("HTTP/1.1 200 OK"));
        open.push(tcp);
    }
    // A third connects (the kernel's backlog) but is not served...
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    third.write_all(REQUEST).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(400), answer(&mut third)).await;
    assert!(waited.is_err(), "served beyond the cap: {waited:?}");
    // ...until one of the two closes.
    drop(open.pop());
    let served = tokio::time::timeout(Duration::from_secs(5), answer(&mut third))
        .await
        .expect("served once a connection closed");
    assert!(served.starts_with("HTTP/1.1 200 OK"), "{served}");
    drop(open);
    a.stop().await;
}

#[tokio::test]
async fn the_request_timeout_answers_408_with_the_error_body() {
    let a = api("  requestTimeout: 150\n").await;
    let (s, v) = a
        .req(
            "POST",
            "/api/v1/teams/tell",
            Some(json!({"toTeam": "demo", "message": "slow [[delay=1000]]", "timeout": 5000})),
        )
        .await;
    assert_eq!(s, 408);
    assert_error_body(&v, 408, "TIMEOUT");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("api.requestTimeout"),
        "{v}"
    );
    // Streams are not cut by it.
    let r = a
        .http
        .post(format!("{}/api/v1/teams/demo/stream", a.base))
        .json(&json!({"message": "slow stream [[delay=400]]"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("event: complete"), "{text}");
    a.stop().await;
}

#[tokio::test]
async fn only_larger_json_is_compressed() {
    let a = api("").await;
    let small = a
        .http
        .get(format!("{}/api/v1/status", a.base))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200);
    assert!(small.headers().get("content-encoding").is_none());
    assert!(small.headers().get("x-request-id").is_some());
    let big = a
        .http
        .get(format!("{}/api/v1/openapi.json", a.base))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(big.headers()["content-encoding"], "gzip");
    assert_eq!(big.headers()["x-content-type-options"], "nosniff");
    a.stop().await;
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let a = api("").await;
    let r = a
        .http
        .get(format!("{}/api/v1/nowhere", a.base))
        .header("X-Request-ID", "my-trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "my-trace-42");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["requestId"], "my-trace-42");
    let r = a
        .http
        .get(format!("{}/healthz", a.base))
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
    a.stop().await;
}

#[tokio::test]
async fn the_port_file_is_private_and_removed_on_stop() {
    let a = api("").await;
    let file = a.h.home.path().join(".http.port");
    let port: u16 = std::fs::read_to_string(&file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(port, a.server.addr.port());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let home = a.h.home.path().to_path_buf();
    a.server.stop().await;
    assert!(!home.join(".http.port").exists());
    a.h.stop().await;
}

#[tokio::test]
async fn require_auth_refuses_until_keys_exist() {
    let h = start("api:\n  port: 0\nteams:\n  demo:\n    path: .\n    agent: echo\n").await;
    let server = iris_server::start(h.iris.clone(), None).await.unwrap();
    let r = reqwest::get(format!("http://{}/api/v1/teams", server.addr))
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_error_body(&r.json().await.unwrap(), 401, "UNAUTHORIZED");
    server.stop().await;
    h.stop().await;
}

#[tokio::test]
async fn dns_rebinding_and_foreign_origins_are_refused_cors_and_headers_are_set() {
    let a = api("").await;
    let url = format!("{}/api/v1/teams", a.base);
    let r = a
        .http
        .get(&url)
        .header("Host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_error_body(&r.json().await.unwrap(), 403, "FORBIDDEN");
    let r = a
        .http
        .get(&url)
        .header("Host", format!("localhost:{}", a.server.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = a
        .http
        .get(&url)
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = a
        .http
        .get(&url)
        .header("Origin", "http://localhost:3100")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://localhost:3100"
    );
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let pre = a
        .http
        .request(reqwest::Method::OPTIONS, &url)
        .header("Origin", "http://localhost:3100")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert!(pre.status().is_success());
    assert!(
        pre.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let gz = a
        .http
        .get(format!("{}/api/v1/tools", a.base))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(
        gz.headers()["content-encoding"],
        "gzip",
        "JSON responses are compressed"
    );
    a.stop().await;
}

#[tokio::test]
async fn shutdown_waits_for_streams_only_up_to_the_grace() {
    let a = api("  shutdownGrace: 300\n").await;
    let resp = a
        .http
        .post(format!("{}/api/v1/teams/demo/stream", a.base))
        .json(&json!({"message": "x [[hang]]"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let started = std::time::Instant::now();
    a.server.stop().await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "stop took {:?}",
        started.elapsed()
    );
    // After the grace the stream is closed, not left open.
    let rest = tokio::time::timeout(std::time::Duration::from_secs(3), resp.text()).await;
    assert!(rest.is_ok(), "the stream was still open after stop");
    a.h.stop().await;
}

#[tokio::test]
async fn metrics_count_requests_turns_processes_and_queues() {
    let a = api("").await;
    a.req(
        "POST",
        "/api/v1/teams/tell",
        Some(json!({"toTeam": "demo", "message": "count me", "timeout": 0})),
    )
    .await;
    a.req("GET", "/api/v1/teams/ghost/status", None).await;
    let text = a.text("/metrics").await;
    for needle in [
        r#"iris_http_requests_total{route="/api/v1/teams/tell",method="POST",status="200"} 1"#,
        r#"iris_http_requests_total{route="/api/v1/teams/{team}/status",method="GET",status="404"} 1"#,
        r#"iris_turns_total{team="demo",status="completed"} 1"#,
        r#"iris_processes{state="ready"} 1"#,
        r#"iris_queue_depth{team="demo"} 0"#,
        "iris_turn_duration_seconds_bucket",
        "iris_http_request_duration_seconds_bucket",
        "iris_bus_dropped_subscribers 0",
        r#"iris_open_connections{transport="websocket"} 0"#,
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    a.stop().await;
}

#[tokio::test]
async fn openapi_document_api_page_and_cache_routes() {
    let a = api("").await;
    let (s, doc) = a.req("GET", "/api/v1/openapi.json", None).await;
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["paths"]["/api/v1/teams/tell"]["post"]["x-iris-operation"],
        "send_message"
    );
    assert!(doc["paths"]["/api/v1/teams/{team}/stream"]["post"].is_object());
    let page = a
        .http
        .get(format!("{}/api/v1/docs", a.base))
        .send()
        .await
        .unwrap();
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    assert!(page.text().await.unwrap().contains("docs/app.js"));
    let js = a
        .http
        .get(format!("{}/api/v1/docs/app.js", a.base))
        .send()
        .await
        .unwrap();
    assert!(js.text().await.unwrap().contains("openapi.json"));

    let (_, m) = a
        .req(
            "POST",
            "/api/v1/teams/tell",
            Some(json!({"toTeam": "demo", "message": "cached", "timeout": 0})),
        )
        .await;
    let sid = m["sessionId"].as_str().unwrap();
    let (s, c) = a
        .req(
            "GET",
            &format!("/api/cache/{sid}?includeMessages=false"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["team"], "demo");
    assert_eq!(c["messageCount"], 1);
    assert_eq!(c["messages"].as_array().unwrap().len(), 0);
    let (_, c) = a.req("GET", &format!("/api/v1/cache/{sid}"), None).await;
    assert_eq!(c["messages"][0]["response"], "cached");
    let (s, d) = a.req("DELETE", &format!("/api/v1/cache/{sid}"), None).await;
    assert_eq!(s, 200);
    assert_eq!(d["deleted"], true);
    let (s, e) = a.req("GET", &format!("/api/v1/cache/{sid}"), None).await;
    assert_eq!(s, 404);
    assert_error_body(&e, 404, "SESSION_NOT_FOUND");
    a.stop().await;
}

/// Paging far past the end (found by schemathesis: the offset overflowed
/// and the request died with the connection) is an empty page.
#[tokio::test]
async fn a_page_far_past_the_end_is_empty() {
    let a = api("").await;
    for path in [
        "/api/v1/messages/history?page=9223372036854775806&limit=50&since=-9223372036854775808",
        "/api/v1/admin/audit-logs?page=9223372036854775807&limit=500",
    ] {
        let (s, v) = a.req("GET", path, None).await;
        assert_eq!(s, 200, "{path}: {v}");
        assert_eq!(v["pagination"]["hasNext"], false, "{path}: {v}");
    }
    a.stop().await;
}

/// A path segment that is not UTF-8 once decoded is a 400 with the error
/// body on every kind of route (it used to drop the segment: a team's
/// status became every team's); extension methods share one metrics label.
#[tokio::test]
async fn bad_path_segments_are_refused_and_odd_methods_share_a_label() {
    let a = api("").await;
    for (method, path) in [
        ("GET", "/api/v1/teams/%FF/status"),
        ("POST", "/api/v1/teams/%FF/cancel"),
        ("POST", "/api/v1/teams/%FF/stream"),
        ("GET", "/api/v1/messages/%FF/stream"),
        ("GET", "/api/v1/tools/%FF"),
        ("POST", "/api/v1/tools/%FF/execute"),
    ] {
        let (s, v) = a.req(method, path, Some(json!({"toTeam": "demo"}))).await;
        assert_eq!(s, 400, "{method} {path}: {v}");
        assert_error_body(&v, 400, "VALIDATION_ERROR");
    }
    for m in ["FOO1", "FOO2"] {
        let m = reqwest::Method::from_bytes(m.as_bytes()).unwrap();
        let r = a
            .http
            .request(m, format!("{}/api/v1/status", a.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405);
    }
    let metrics = a.text("/metrics").await;
    assert!(
        metrics.contains(
            r#"iris_http_requests_total{route="unmatched",method="OTHER",status="405"} 2"#
        ),
        "{metrics}"
    );
    assert!(!metrics.contains("FOO1"), "{metrics}");
    a.stop().await;
}
