//! The rest of the hostile pass (docs/security.md, docs/mcp.md): MCP
//! sessions belong to whoever opened them, MCP's edge codes, history
//! totals filtered in the query, deletions from the audit trail caught by
//! its witness, room for authenticated WebSockets beside 10,000
//! unauthenticated ones, long values cut in error bodies, the right limit
//! named by Socket.IO's 413, and one scope rule for the `system` topic.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};

async fn server(extra: &str) -> Served {
    served(&format!(
        "api:\n  port: 0\n{extra}teams:\n  demo:\n    path: .\n    agent: echo\n  other:\n    path: .\n    agent: echo\n"
    ))
    .await
}

impl Served {
    fn mcp(
        &self,
        method: reqwest::Method,
        key: &str,
        session: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .request(method, format!("{}/mcp", self.base))
            .bearer_auth(key)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25");
        if let Some(s) = session {
            r = r.header("mcp-session-id", s);
        }
        r
    }

    /// POST `body` to `/mcp` as `key`, in `session` if given.
    async fn post(&self, key: &str, session: Option<&str>, body: &Value) -> reqwest::Response {
        self.mcp(reqwest::Method::POST, key, session)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// A new MCP session of `key`, initialized: its id.
    async fn session(&self, key: &str) -> Result<String, (u16, Value)> {
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
        let r = self.post(key, None, &init).await;
        if r.status() != 200 {
            let status = r.status().as_u16();
            return Err((status, r.json().await.unwrap_or(Value::Null)));
        }
        let id = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        let _ = r.text().await;
        let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let r = self.post(key, Some(&id), &done).await;
        assert_eq!(r.status(), 202);
        Ok(id)
    }
}

/// The JSON-RPC answer in a Streamable HTTP response (JSON or SSE).
async fn answer(r: reqwest::Response) -> Value {
    let text = r.text().await.unwrap();
    let line = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .find(|d| d.starts_with('{'))
        .unwrap_or(&text)
        .to_owned();
    serde_json::from_str(&line).unwrap_or(Value::Null)
}

#[tokio::test]
async fn an_mcp_session_is_its_openers_and_the_edge_codes_are_json_rpc() {
    let s = server("  mcp:\n    maxSessionsPerPrincipal: 2\n").await;
    let (alice, mallory) = (
        s.h.key("developer", None, None).await.0,
        s.h.key("admin", None, None).await.0,
    );
    let session = s.session(&alice).await.unwrap();
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                      "params": {"name": "list_teams", "arguments": {}}});
    // Its opener uses it.
    let r = s.post(&alice, Some(&session), &call).await;
    assert_eq!(r.status(), 200);
    assert!(answer(r).await["result"]["structuredContent"]["teams"].is_array());
    // Another key — an admin's even — knowing the id: 404 for POST, for
    // GET with Last-Event-ID (replaying another's results), for DELETE.
    let r = s.post(&mallory, Some(&session), &call).await;
    assert_eq!(r.status(), 404, "POST in another's session");
    let r = s
        .mcp(reqwest::Method::GET, &mallory, Some(&session))
        .header("last-event-id", "0/0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "GET replaying another's session");
    let r = s
        .mcp(reqwest::Method::DELETE, &mallory, Some(&session))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "DELETE of another's session");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32004, "{body}");
    // Still alice's.
    let r = s.post(&alice, Some(&session), &call).await;
    assert_eq!(r.status(), 200);
    let _ = r.text().await;
    // Malformed parameters: -32602 with the request's id.
    for (id, bad) in [
        (
            3,
            json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"nom": "x"}}),
        ),
        (
            4,
            json!({"jsonrpc": "2.0", "id": 4, "method": "resources/read", "params": {"uri": 5}}),
        ),
    ] {
        let r = s.post(&alice, Some(&session), &bad).await;
        let v = answer(r).await;
        assert_eq!(
            (v["id"].as_i64(), v["error"]["code"].as_i64()),
            (Some(id), Some(-32602)),
            "{v}"
        );
    }
    // A JSON body that is no JSON-RPC request, or no JSON content type:
    // a JSON-RPC error body, not rmcp's plain text.
    for (ctype, body, status, code) in [
        (
            "application/json",
            r#"{"jsonrpc":"2.0","id":1}"#,
            400,
            -32600,
        ),
        (
            "application/json",
            r#"{"jsonrpc":"2.0","method":5}"#,
            400,
            -32600,
        ),
        (
            "text/plain",
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            415,
            -32600,
        ),
    ] {
        let r = s
            .mcp(reqwest::Method::POST, &alice, Some(&session))
            .header("content-type", ctype)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{v}");
    }
    // DELETE of a session that does not exist: 404.
    let r = s
        .mcp(reqwest::Method::DELETE, &alice, Some("no-such-session"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // At most two open sessions per principal: the third is 429 until one ends.
    let second = s.session(&alice).await.unwrap();
    let (status, body) = s.session(&alice).await.unwrap_err();
    assert_eq!(
        (status, body["error"]["data"]["code"].as_str()),
        (429, Some("RATE_LIMITED")),
        "{body}"
    );
    let r = s
        .mcp(reqwest::Method::DELETE, &alice, Some(&second))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert!(s.session(&alice).await.is_ok(), "room again after a DELETE");
    s.stop().await;
}

#[tokio::test]
async fn history_totals_count_only_what_the_caller_sees() {
    let s = server("").await;
    for (team, n) in [("demo", 2), ("other", 5)] {
        for i in 0..n {
            s.h.tell(team, &format!("{team} {i}")).await.unwrap();
        }
    }
    let limited = s.h.key("developer", Some(&["demo"]), None).await.0;
    let (status, mine) = http(
        &s.http,
        reqwest::Method::POST,
        format!("{}/api/v1/teams/tell", s.base),
        Some(&limited),
        json!({"toTeam": "demo", "message": "mine", "timeout": 0}),
    )
    .await;
    assert_eq!(status, 200, "{mine}");
    let (status, page) = http(
        &s.http,
        reqwest::Method::GET,
        format!("{}/api/v1/messages/history?limit=3", s.base),
        Some(&limited),
        Value::Null,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["pagination"]["total"], 3, "{page}");
    let texts: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["request"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        texts.first(),
        Some(&"mine"),
        "its own message on page 1: {texts:?}"
    );
    assert!(texts.iter().all(|t| !t.starts_with("other")), "{texts:?}");
    s.stop().await;
}

/// Each way of deleting from the audit trail behind Iris's back makes
/// `audit_verify` fail, thanks to the witness outside the database.
#[tokio::test]
async fn deleting_from_the_audit_trail_fails_its_verification() {
    let cuts: [(&str, &[&str]); 4] = [
        ("the anchor", &["DELETE FROM audit_anchor"]),
        (
            "the first records and the anchor's head",
            &[
                "DELETE FROM audit_log WHERE seq IN (SELECT seq FROM audit_log ORDER BY seq LIMIT 2)",
                "UPDATE audit_anchor SET (first_seq, first_prev) = (SELECT seq, prev_hash FROM audit_log ORDER BY seq LIMIT 1)",
            ],
        ),
        (
            "the last records and the anchor's tail",
            &[
                "DELETE FROM audit_log WHERE seq IN (SELECT seq FROM audit_log ORDER BY seq DESC LIMIT 2)",
                "UPDATE audit_anchor SET (last_seq, last_hash) = (SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1)",
            ],
        ),
        (
            "everything",
            &["DELETE FROM audit_log", "DELETE FROM audit_anchor"],
        ),
    ];
    for (what, statements) in cuts {
        let h = start("teams:\n  demo:\n    path: .\n    agent: echo\n").await;
        for i in 0..5 {
            h.call(
                "key_create",
                json!({"name": format!("k{i}"), "role": "viewer"}),
            )
            .await
            .unwrap();
        }
        h.iris.auth().audit.flush().await;
        let v = h.call("audit_verify", json!({})).await.unwrap();
        assert_eq!(v["ok"], true, "before cutting {what}: {v}");
        let pool = raw_db(h.home.path()).await;
        for q in statements {
            sqlx::query(sqlx::AssertSqlSafe(*q))
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
        let v = h.call("audit_verify", json!({})).await.unwrap();
        assert_eq!(v["ok"], false, "cutting {what} went unnoticed: {v}");
        assert!(v["problem"].is_string(), "{v}");
        h.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_unauthenticated_websockets_leave_room_for_an_authenticated_one() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, base) = serve_in(
        dir.path(),
        "api:\n  port: 0\n  rateLimit:\n    perIp: 1000000/min\n  websocket:\n    authTimeout: 60000\nteams:\n  demo:\n    path: .\n    agent: echo\n",
    );
    let key = std::fs::read_to_string(dir.path().join("credentials"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("IRIS_API_KEY=").map(str::to_owned))
        .unwrap();
    let url = base.replace("http://", "ws://") + "/ws";
    let mut held = Vec::new();
    let mut refused = 0;
    // In waves, so the client's own connects do not time out.
    for _ in 0..20 {
        let wave = futures_util::future::join_all(
            (0..500).map(|_| tokio_tungstenite::connect_async(url.clone())),
        )
        .await;
        for r in wave {
            match r {
                Ok((ws, _)) => held.push(ws),
                Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                    assert_eq!(resp.status(), 503);
                    refused += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert_eq!(held.len() + refused, 10_000);
    assert_eq!(held.len(), 1000, "api.websocket.maxUnauthenticated");
    // An authenticated client still gets its connection, and it works.
    let mut ws = tokio_tungstenite::connect_async(format!("{url}?token={key}"))
        .await
        .expect("an authenticated WebSocket beside 10,000 unauthenticated ones")
        .0;
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get_date", "arguments": {}}}),
    )
    .await;
    assert!(recv(&mut ws).await.get("result").is_some());
    drop(held);
}

#[tokio::test]
async fn long_values_are_cut_in_error_bodies() {
    let s = server("").await;
    let key = s.h.key("developer", None, None).await.0;
    let long = "x".repeat(200_000);
    let r = s
        .http
        .post(format!("{}/api/v1/teams/tell", s.base))
        .bearer_auth(&key)
        .json(&json!({"toTeam": long, "message": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body = r.text().await.unwrap();
    assert!(body.len() < 8_000, "an error body of {} bytes", body.len());
    assert!(
        body.contains("bytes cut"),
        "{}",
        &body[..body.len().min(500)]
    );
    // Over Socket.IO's long-polling, the limit hit is the WebSocket one.
    let sid = {
        let t = s
            .http
            .get(format!("{}/socket.io/?EIO=4&transport=polling", s.base))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let open: Value = serde_json::from_str(t.trim_start_matches('0')).unwrap();
        open["sid"].as_str().unwrap().to_owned()
    };
    let r = s
        .http
        .post(format!(
            "{}/socket.io/?EIO=4&transport=polling&sid={sid}",
            s.base
        ))
        .bearer_auth(&key)
        .body("4".to_owned() + &"y".repeat(2 * 1024 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("api.websocket.maxMessageBytes"),
        "{body}"
    );
    s.stop().await;
}

#[tokio::test]
async fn the_system_topic_needs_teams_read_on_every_websocket() {
    let s = server("").await;
    // A viewer reads teams but does not stream messages.
    let viewer = s.h.key("viewer", None, None).await.0;
    let url = format!("ws://{}/ws?token={viewer}", s.server.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 1, "method": "subscribe", "params": {"events": ["system"]}}),
    )
    .await;
    let v = recv(&mut ws).await;
    assert_eq!(v["result"]["subscribed"][0], "system", "{v}");
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 2, "method": "subscribe", "params": {"events": ["team:demo"]}}),
    )
    .await;
    let v = recv(&mut ws).await;
    assert_eq!(
        v["error"]["data"]["code"], "FORBIDDEN",
        "team topics carry messages: {v}"
    );
    let _ = ws.close(None).await;
    while ws.next().await.is_some() {}
    tokio::time::sleep(Duration::from_millis(10)).await;
    s.stop().await;
}
