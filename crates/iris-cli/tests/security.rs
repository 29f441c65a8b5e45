//! Authentication, scopes, team limits, rate limits and the audit trail
//! over real sockets: REST, /rpc, tools, SSE and both WebSockets.

mod common;

use std::time::Duration;

use common::*;
use iris_core::auth::{NewKey, Origin, Principal};
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Secure {
    h: Harness,
    server: iris_server::Running,
    base: String,
    http: reqwest::Client,
}

const TEAMS: &str =
    "teams:\n  web:\n    path: .\n    agent: echo\n  api:\n    path: .\n    agent: echo\n";

async fn secure(extra: &str) -> Secure {
    let h = start(&format!("api:\n  port: 0\n{extra}{TEAMS}")).await;
    let server = iris_server::start(h.iris.clone(), None).await.unwrap();
    Secure {
        base: format!("http://{}", server.addr),
        h,
        server,
        http: reqwest::Client::new(),
    }
}

impl Secure {
    async fn key(&self, spec: NewKey) -> String {
        self.h
            .iris
            .auth()
            .create_key(spec, &Principal::local(), &Origin::default())
            .await
            .unwrap()
            .0
    }

    async fn key_with(
        &self,
        name: &str,
        role: Option<&str>,
        scopes: &[&str],
        teams: Option<&[&str]>,
    ) -> String {
        self.key(NewKey {
            name: name.into(),
            role: role.map(str::to_owned),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            teams: teams.map(|t| t.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        })
        .await
    }

    async fn req(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self.http.request(m, format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
            headers,
        )
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let (s, v, _) = self.req("GET", path, token, None).await;
        (s, v)
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        let (s, v, _) = self.req("POST", path, token, Some(body)).await;
        (s, v)
    }

    async fn ws(&self, path: &str, token: Option<&str>) -> Ws {
        ws_connect(&format!("ws://{}{path}", self.server.addr), token).await
    }

    async fn audit(&self, action: &str) -> Vec<Value> {
        let v = self
            .h
            .call("audit_list", json!({"action": action, "limit": 1000}))
            .await
            .unwrap();
        v["logs"].as_array().unwrap().clone()
    }

    async fn stop(self) {
        self.server.stop().await;
        self.h.stop().await;
    }
}

fn code(v: &Value) -> &str {
    v["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn missing_malformed_wrong_revoked_expired_and_rotated_out_keys_are_refused() {
    let s = secure("").await;
    let key = s.key_with("ci", Some("viewer"), &[], None).await;
    let (st, v) = s.get("/api/v1/status", Some(&key)).await;
    assert_eq!(st, 200, "{v}");

    let (st, v) = s.get("/api/v1/status", None).await;
    assert_eq!(
        (st.as_u16(), code(&v)),
        (401, "UNAUTHORIZED"),
        "missing: {v}"
    );
    assert!(v["message"].as_str().unwrap().contains("Authorization"));

    for (what, bad) in [
        ("malformed", "iris_sk_live_tooshort".to_owned()),
        ("not a key", "hello".to_owned()),
        ("wrong", format!("{}{}", &key[..key.len() - 4], "AAAA")),
    ] {
        let (st, v) = s.get("/api/v1/status", Some(&bad)).await;
        assert_eq!(
            (st.as_u16(), code(&v)),
            (401, "UNAUTHORIZED"),
            "{what}: {v}"
        );
    }

    let (st, v) = s
        .post("/rpc", Some(&key), json!({"method": "get_status"}))
        .await;
    assert_eq!(st, 200, "{v}");

    // Rotated: both work during the grace, then only the new one.
    let admin = s.key_with("root", Some("admin"), &[], None).await;
    let (st, rotated) = s
        .post(
            "/api/v1/admin/keys/ci/rotate",
            Some(&admin),
            json!({"grace": "1s"}),
        )
        .await;
    assert_eq!(st, 200, "{rotated}");
    let new_key = rotated["key"].as_str().unwrap().to_owned();
    assert_eq!(s.get("/api/v1/status", Some(&key)).await.0, 200);
    assert_eq!(s.get("/api/v1/status", Some(&new_key)).await.0, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (st, v) = s.get("/api/v1/status", Some(&key)).await;
    assert_eq!(st, 401);
    assert!(v["message"].as_str().unwrap().contains("rotated"), "{v}");

    // Revoked: refused on the very next request.
    let prefix = &new_key[..20];
    let (st, v, _) = s
        .req(
            "DELETE",
            &format!("/api/v1/admin/keys/{prefix}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["status"], "revoked");
    let (st, v) = s.get("/api/v1/status", Some(&new_key)).await;
    assert_eq!(st, 401);
    assert!(v["message"].as_str().unwrap().contains("revoked"), "{v}");

    // Expired.
    let short = s
        .key(NewKey {
            name: "tmp".into(),
            role: Some("viewer".into()),
            expires_in: Some(Duration::from_millis(100)),
            ..Default::default()
        })
        .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (st, v) = s.get("/api/v1/status", Some(&short)).await;
    assert_eq!(st, 401);
    assert!(v["message"].as_str().unwrap().contains("expired"), "{v}");

    // Every failure is in the audit trail, with the key's prefix at most.
    let failures = s.audit("auth.failure").await;
    assert!(failures.len() >= 6, "{failures:?}");
    let text = serde_json::to_string(&failures).unwrap();
    assert!(!text.contains(&key[20..]) && !text.contains(&new_key[20..]));
    s.stop().await;
}

#[tokio::test]
async fn scope_escalation_is_refused_on_every_transport_and_audited() {
    let s = secure("").await;
    let viewer = s.key_with("viewer", Some("viewer"), &[], None).await;
    let msg = json!({"toTeam": "web", "message": "hi"});

    // REST, /rpc, tools execute.
    let (st, v) = s
        .post("/api/v1/teams/tell", Some(&viewer), msg.clone())
        .await;
    assert_eq!((st.as_u16(), code(&v)), (403, "FORBIDDEN"), "{v}");
    assert_eq!(v["details"]["requiredScope"], "messages:write");
    let (st, v) = s
        .post(
            "/rpc",
            Some(&viewer),
            json!({"method": "send_message", "params": msg}),
        )
        .await;
    assert_eq!((st.as_u16(), code(&v)), (403, "FORBIDDEN"), "{v}");
    let (st, v) = s
        .post(
            "/api/v1/tools/send_message/execute",
            Some(&viewer),
            json!({"parameters": msg}),
        )
        .await;
    assert_eq!(st, 403, "{v}");
    // Minting a stronger key, or a user, is admin only.
    let (st, v) = s
        .post(
            "/api/v1/admin/keys",
            Some(&viewer),
            json!({"name": "mine", "role": "admin"}),
        )
        .await;
    assert_eq!(st, 403, "{v}");
    let (st, _) = s.post("/rpc", Some(&viewer), json!({"method": "user_create", "params": {"username": "eve", "password": "Correct-Horse-42"}})).await;
    assert_eq!(st, 403);
    let (st, _) = s.get("/api/v1/admin/audit-logs", Some(&viewer)).await;
    assert_eq!(st, 403);
    // SSE.
    let (st, v) = s
        .post(
            "/api/v1/teams/web/stream",
            Some(&viewer),
            json!({"message": "hi"}),
        )
        .await;
    assert_eq!(st, 403, "{v}");
    // Tool listings show only what the key may call.
    let (_, tools) = s.get("/api/v1/tools", Some(&viewer)).await;
    let names: Vec<&str> = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"list_teams")
            && !names.contains(&"send_message")
            && !names.contains(&"key_create"),
        "{names:?}"
    );

    // WebSocket /api/v1/stream and /ws JSON-RPC.
    let mut ws = s.ws("/api/v1/stream", Some(&viewer)).await;
    send_msg(&mut ws).await;
    let v = recv(&mut ws).await;
    assert_eq!(
        (v["type"].as_str(), v["error"]["code"].as_str()),
        (Some("error"), Some("FORBIDDEN")),
        "{v}"
    );
    // Watching a team's stream carries its messages' text: messages:stream.
    send(&mut ws, json!({"type": "subscribe", "team": "web"})).await;
    let v = recv(&mut ws).await;
    assert_eq!(v["error"]["code"], "FORBIDDEN", "{v}");
    let mut rpc = s.ws("/ws", Some(&viewer)).await;
    send(&mut rpc, json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "key_create", "arguments": {"name": "x", "role": "admin"}}})).await;
    let v = recv(&mut rpc).await;
    assert_eq!(v["error"]["code"], -32003, "{v}");

    // Nothing was sent; every refusal is audited.
    assert_eq!(
        s.h.call("message_history", json!({})).await.unwrap()["pagination"]["total"],
        0
    );
    let denied = s.audit("permission.denied").await;
    assert!(denied.len() >= 7, "{}", denied.len());
    assert!(
        denied
            .iter()
            .all(|d| d["result"] == "denied" && d["actor"].as_str().unwrap().starts_with("key:"))
    );
    s.stop().await;
}

async fn send_msg(ws: &mut Ws) {
    send(
        ws,
        json!({"type": "message", "team": "web", "message": "hi"}),
    )
    .await;
}

#[tokio::test]
async fn team_limited_keys_see_and_reach_only_their_teams() {
    let s = secure("").await;
    let web = s
        .key_with("web-only", Some("developer"), &[], Some(&["web"]))
        .await;
    // Work in both teams, as the operator.
    s.h.tell("api", "secret api work").await.unwrap();
    let (st, v) = s
        .post(
            "/api/v1/teams/tell",
            Some(&web),
            json!({"toTeam": "web", "message": "web work", "timeout": 0}),
        )
        .await;
    assert_eq!(st, 200, "{v}");

    // Lists are filtered, not refused.
    let (_, teams) = s.get("/api/v1/teams", Some(&web)).await;
    let names: Vec<&str> = teams["teams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web"], "{teams}");
    let (_, hist) = s.get("/api/v1/messages/history", Some(&web)).await;
    let msgs = hist["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 1, "{hist}");
    assert!(
        msgs.iter()
            .all(|m| m["to"] == "web" || m["toTeam"] == "web"),
        "{hist}"
    );
    let (_, status) = s.get("/api/v1/teams/status", Some(&web)).await;
    assert!(!status.to_string().contains("\"api\""), "{status}");

    // The other team does not exist for this key.
    let (st, v) = s
        .post(
            "/api/v1/teams/tell",
            Some(&web),
            json!({"toTeam": "api", "message": "x"}),
        )
        .await;
    assert_eq!((st.as_u16(), code(&v)), (404, "TEAM_NOT_FOUND"), "{v}");
    let (st, _) = s.get("/api/v1/teams/api/report", Some(&web)).await;
    assert_eq!(st, 404);
    let (st, _) = s.get("/api/v1/messages/history?team=api", Some(&web)).await;
    assert_eq!(st, 404);
    let api_session =
        s.h.call(
            "session_report",
            json!({"toTeam": "api", "fromTeam": "iris"}),
        )
        .await
        .unwrap();
    let sid = api_session["sessionId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!sid.is_empty(), "{api_session}");
    let (st, _) = s.get(&format!("/api/v1/cache/{sid}"), Some(&web)).await;
    assert_eq!(st, 404, "a session of another team");
    let api_msg =
        s.h.call("message_history", json!({"team": "api"}))
            .await
            .unwrap()["messages"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
    let (st, _) = s
        .get(&format!("/api/v1/messages/{api_msg}"), Some(&web))
        .await;
    assert_eq!(st, 404);
    let (st, _) = s
        .get(&format!("/api/v1/messages/{api_msg}/stream"), Some(&web))
        .await;
    assert_eq!(st, 404, "following another team's message");
    let (st, _) = s
        .post(
            "/api/v1/teams/api/stream",
            Some(&web),
            json!({"message": "x"}),
        )
        .await;
    assert_eq!(st, 404);

    // WebSockets: subscribing to the other team is refused.
    let mut ws = s.ws("/api/v1/stream", Some(&web)).await;
    send(&mut ws, json!({"type": "subscribe", "team": "api"})).await;
    let v = recv(&mut ws).await;
    assert_eq!(v["type"], "error", "{v}");
    let mut rpc = s.ws("/ws", Some(&web)).await;
    send(&mut rpc, json!({"jsonrpc": "2.0", "id": 2, "method": "subscribe", "params": {"events": ["team:api"]}})).await;
    let v = recv(&mut rpc).await;
    assert!(v["error"].is_object(), "{v}");
    // The system topic spans every team.
    send(
        &mut rpc,
        json!({"jsonrpc": "2.0", "id": 3, "method": "subscribe", "params": {"events": ["system"]}}),
    )
    .await;
    let v = recv(&mut rpc).await;
    assert_eq!(v["error"]["code"], -32003, "{v}");
    // Global views and administration are not for team-limited callers.
    let web_admin = s
        .key_with("web-admin", Some("admin"), &[], Some(&["web"]))
        .await;
    assert_eq!(s.get("/metrics", Some(&web_admin)).await.0, 403);
    assert_eq!(s.get("/health/detailed", Some(&web_admin)).await.0, 403);
    let (st, v) = s
        .post(
            "/api/v1/admin/keys",
            Some(&web_admin),
            json!({"name": "x", "role": "admin"}),
        )
        .await;
    assert_eq!(st, 403, "a limited admin cannot mint an unlimited key: {v}");
    assert_eq!(
        s.get("/api/v1/admin/audit-logs", Some(&web_admin)).await.0,
        403
    );
    let (st, logs) = s.get("/api/v1/logs?level=debug", Some(&web_admin)).await;
    assert_eq!(st, 200);
    assert!(
        logs["logs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["fields"]["team"] == "web"),
        "{logs}"
    );
    // A key in the query string of an ordinary route is not a credential.
    let resp = s
        .http
        .get(format!("{}/api/v1/teams?token={web}", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    s.stop().await;
}

#[tokio::test]
async fn browsers_authenticate_streams_by_query_token_or_first_message() {
    let s = secure("").await;
    let op = s.key_with("op", Some("operator"), &[], None).await;
    // SSE follow with ?token= (EventSource cannot set headers).
    let (_, sent) = s
        .post(
            "/api/v1/teams/quick-tell",
            Some(&op),
            json!({"toTeam": "web", "message": "q"}),
        )
        .await;
    let id = sent["messageId"].as_str().unwrap();
    let resp = s
        .http
        .get(format!("{}/api/v1/messages/{id}/stream?token={op}", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("event: complete"));
    // A token in a POST query is not a credential.
    let resp = s
        .http
        .post(format!("{}/api/v1/teams/tell?token={op}", s.base))
        .json(&json!({"toTeam": "web", "message": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // WebSocket without a header: only `auth` is accepted first.
    let mut ws = s.ws("/api/v1/stream", None).await;
    send(&mut ws, json!({"type": "ping"})).await;
    let v = recv(&mut ws).await;
    assert_eq!(v["error"]["code"], "UNAUTHORIZED", "{v}");
    send(
        &mut ws,
        json!({"type": "auth", "token": "iris_sk_live_nope"}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["error"]["code"], "UNAUTHORIZED");
    send(&mut ws, json!({"type": "auth", "token": op})).await;
    let v = recv(&mut ws).await;
    assert_eq!(v["type"], "authenticated", "{v}");
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(recv(&mut ws).await["type"], "pong");

    let mut rpc = s.ws("/ws", None).await;
    send(
        &mut rpc,
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
    )
    .await;
    assert_eq!(recv(&mut rpc).await["error"]["code"], -32001);
    send(
        &mut rpc,
        json!({"jsonrpc": "2.0", "id": 2, "method": "auth", "params": {"token": op}}),
    )
    .await;
    assert_eq!(recv(&mut rpc).await["result"]["authenticated"], true);
    // Query tokens work for the WebSocket upgrade too.
    let mut q = s.ws(&format!("/ws?token={op}"), None).await;
    send(&mut q, json!({"jsonrpc": "2.0", "id": 3, "method": "ping"})).await;
    assert_eq!(recv(&mut q).await["result"], "pong");
    s.stop().await;
}

#[tokio::test]
async fn rate_limits_answer_429_with_headers_per_key_per_ip_and_for_messages() {
    let s = secure("  rateLimit:\n    perIp: 5/min\n    messages: 2/min\n").await;
    let limited = s
        .key(NewKey {
            name: "slow".into(),
            role: Some("operator".into()),
            rate_limit: Some("3/min".parse().unwrap()),
            ..Default::default()
        })
        .await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (st, v, h) = s.req("GET", "/api/v1/teams", Some(&limited), None).await;
        let hv = |n: &str| h.get(n).map(|v| v.to_str().unwrap().to_owned());
        seen.push((
            st.as_u16(),
            hv("x-ratelimit-limit"),
            hv("x-ratelimit-remaining"),
            hv("retry-after"),
        ));
        if st == 429 {
            assert_eq!(code(&v), "RATE_LIMITED", "{v}");
            let reset: u64 = hv("x-ratelimit-reset").unwrap().parse().unwrap();
            assert!(reset > (iris_core::now_ms() / 1000) as u64);
        }
    }
    assert_eq!(
        seen[0],
        (200, Some("3".into()), Some("2".into()), None),
        "{seen:?}"
    );
    assert_eq!(seen[2].2.as_deref(), Some("0"));
    assert_eq!(seen[3].0, 429, "{seen:?}");
    let retry: u64 = seen[3].3.as_deref().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    // Other keys have their own bucket; messages have a tighter one.
    let op = s.key_with("op", Some("operator"), &[], None).await;
    for i in 0..3 {
        let (st, v, h) = s
            .req(
                "POST",
                "/api/v1/teams/quick-tell",
                Some(&op),
                Some(json!({"toTeam": "web", "message": "m"})),
            )
            .await;
        if i < 2 {
            assert_eq!(st, 200, "{v}");
        } else {
            assert_eq!((st.as_u16(), code(&v)), (429, "RATE_LIMITED"), "{v}");
            assert!(h.get("retry-after").is_some());
        }
    }
    // Unauthenticated requests (and failed authentications) count per address.
    let mut statuses = Vec::new();
    for _ in 0..7 {
        statuses.push(
            s.get(
                "/api/v1/teams",
                Some("iris_sk_live_wrongwrongwrongwrongwrongwrongwrongwrongwro"),
            )
            .await
            .0
            .as_u16(),
        );
    }
    assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
    assert_eq!(statuses[6], 429, "{statuses:?}");
    s.stop().await;
}

#[tokio::test]
async fn users_log_in_refresh_and_a_reused_refresh_token_ends_the_family() {
    let s = secure("").await;
    let admin = s.key_with("root", Some("admin"), &[], None).await;
    let (st, v) = s.post("/api/v1/admin/users", Some(&admin), json!({"username": "ann", "email": "ann@example.com", "password": "weak", "role": "operator"})).await;
    assert_eq!((st.as_u16(), code(&v)), (400, "VALIDATION_ERROR"), "{v}");
    let (st, v) = s.post("/api/v1/admin/users", Some(&admin), json!({"username": "ann", "email": "ann@example.com", "password": "Correct-Horse-42", "role": "operator"})).await;
    assert_eq!(st, 200, "{v}");
    assert!(v.get("passwordHash").is_none() && !v.to_string().contains("argon2"));

    let (st, t) = s
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": "ann@example.com", "password": "Correct-Horse-42"}),
        )
        .await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["tokenType"], "Bearer");
    let access = t["accessToken"].as_str().unwrap().to_owned();
    let (st, me) = s.get("/api/v1/auth/me", Some(&access)).await;
    assert_eq!(
        (st.as_u16(), me["name"].as_str()),
        (200, Some("ann")),
        "{me}"
    );
    // The user's role decides: operator may send, not administer.
    let (st, _) = s
        .post(
            "/api/v1/teams/tell",
            Some(&access),
            json!({"toTeam": "web", "message": "hi", "timeout": 0}),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(s.get("/api/v1/admin/keys", Some(&access)).await.0, 403);

    // Tampering with the token.
    let parts: Vec<&str> = access.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], parts[1], "AAAA");
    assert_eq!(s.get("/api/v1/auth/me", Some(&forged)).await.0, 401);
    let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1]);
    assert_eq!(s.get("/api/v1/auth/me", Some(&none)).await.0, 401);

    // Refresh rotates; reuse of a spent one revokes the family.
    let refresh1 = t["refreshToken"].as_str().unwrap().to_owned();
    let resp = s
        .http
        .post(format!("{}/api/v1/auth/refresh", s.base))
        .bearer_auth(&refresh1)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let t2: Value = resp.json().await.unwrap();
    let (st, v) = s
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refreshToken": refresh1}),
        )
        .await;
    assert_eq!(st, 401, "{v}");
    assert!(v["message"].as_str().unwrap().contains("already used"));
    let (st, _) = s
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refreshToken": t2["refreshToken"]}),
        )
        .await;
    assert_eq!(st, 401, "the whole family is revoked");
    assert_eq!(
        s.get("/api/v1/auth/me", Some(t2["accessToken"].as_str().unwrap()))
            .await
            .0,
        401
    );
    assert!(!s.audit("auth.refresh_reuse").await.is_empty());

    // Logout ends a session; disabling a user ends them all.
    let (_, t3) = s
        .post(
            "/api/v1/auth/login",
            None,
            json!({"username": "ann", "password": "Correct-Horse-42"}),
        )
        .await;
    let a3 = t3["accessToken"].as_str().unwrap().to_owned();
    assert_eq!(
        s.post("/api/v1/auth/logout", Some(&a3), json!({})).await.0,
        200
    );
    assert_eq!(s.get("/api/v1/auth/me", Some(&a3)).await.0, 401);
    let (_, t4) = s
        .post(
            "/api/v1/auth/login",
            None,
            json!({"username": "ann", "password": "Correct-Horse-42"}),
        )
        .await;
    let (st, _, _) = s
        .req(
            "PATCH",
            "/api/v1/admin/users/ann",
            Some(&admin),
            Some(json!({"status": "disabled"})),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(
        s.get("/api/v1/auth/me", Some(t4["accessToken"].as_str().unwrap()))
            .await
            .0,
        401
    );
    s.stop().await;
}

#[tokio::test]
async fn brute_force_locks_the_account_and_logins_are_rate_limited() {
    let s = secure("  rateLimit:\n    login: 8/min\nauth:\n  maxFailedLogins: 3\n").await;
    s.h.call(
        "user_create",
        json!({"username": "bob", "password": "Correct-Horse-42"}),
    )
    .await
    .unwrap();
    for _ in 0..3 {
        let (st, v) = s
            .post(
                "/api/v1/auth/login",
                None,
                json!({"username": "bob", "password": "guess-Guess-1"}),
            )
            .await;
        assert_eq!(
            (st.as_u16(), v["message"].as_str()),
            (401, Some("invalid username or password"))
        );
    }
    let (st, v) = s
        .post(
            "/api/v1/auth/login",
            None,
            json!({"username": "bob", "password": "Correct-Horse-42"}),
        )
        .await;
    assert_eq!(st, 401);
    assert!(v["message"].as_str().unwrap().contains("locked"), "{v}");
    assert!(v["details"]["lockedUntil"].is_i64());
    assert_eq!(s.audit("auth.lockout").await.len(), 1);
    // The address runs out of login attempts.
    let mut last = StatusCode::OK;
    for _ in 0..6 {
        last = s
            .post(
                "/api/v1/auth/login",
                None,
                json!({"username": "nobody", "password": "x"}),
            )
            .await
            .0;
    }
    assert_eq!(last, 429);
    s.stop().await;
}

#[tokio::test]
async fn messages_are_audited_by_hash_and_the_chain_verifies() {
    let s = secure("").await;
    let op = s.key_with("op", Some("operator"), &[], None).await;
    let text = "deploy the thing with password hunter2";
    let (st, _) = s
        .post(
            "/api/v1/teams/tell",
            Some(&op),
            json!({"toTeam": "web", "message": text, "timeout": 0}),
        )
        .await;
    assert_eq!(st, 200);
    let sent = s.audit("operation.send_message").await;
    assert_eq!(sent.len(), 1);
    let r = &sent[0];
    assert_eq!(
        (r["team"].as_str(), r["result"].as_str()),
        (Some("web"), Some("success"))
    );
    assert_eq!(r["details"]["messageBytes"], text.len());
    assert_eq!(r["details"]["messageSha256"].as_str().unwrap().len(), 64);
    assert!(
        !r.to_string().contains("hunter2"),
        "the text is not kept: {r}"
    );
    assert!(r["actor"].as_str().unwrap().starts_with("key:") && r["requestId"].is_string());
    // Key usage (auth.success) and the key's creation are there too.
    assert!(!s.audit("auth.success").await.is_empty());
    assert!(!s.audit("key.create").await.is_empty());
    let (st, v) = s
        .get(
            "/api/v1/admin/audit-logs/verify",
            Some(&s.key_with("auditor", None, &["audit:read"], None).await),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["ok"], true, "{v}");
    // Filters and pagination (seed 003).
    let admin = s.key_with("root", Some("admin"), &[], None).await;
    let (_, page) = s
        .get(
            "/api/v1/admin/audit-logs?action=key&limit=2&page=1",
            Some(&admin),
        )
        .await;
    assert_eq!(page["logs"].as_array().unwrap().len(), 2, "{page}");
    assert!(page["pagination"]["total"].as_i64().unwrap() >= 3);
    let (st, v) = s
        .get("/api/v1/admin/audit-logs?startDate=yesterday", Some(&admin))
        .await;
    assert_eq!(st, 400, "{v}");
    s.stop().await;
}

#[tokio::test]
async fn wrong_origin_or_host_is_refused_even_with_a_valid_key() {
    let s = secure("").await;
    let admin = s.key_with("root", Some("admin"), &[], None).await;
    let resp = s
        .http
        .get(format!("{}/api/v1/teams", s.base))
        .bearer_auth(&admin)
        .header("Host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = s
        .http
        .get(format!("{}/api/v1/teams", s.base))
        .bearer_auth(&admin)
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // Metrics and the detailed health need a credential; the probes do not.
    assert_eq!(s.get("/metrics", None).await.0, 401);
    assert_eq!(s.get("/health/detailed", None).await.0, 401);
    assert_eq!(s.get("/healthz", None).await.0, 200);
    assert_eq!(s.get("/ready", None).await.0, 200);
    assert_eq!(s.get("/metrics", Some(&admin)).await.0, 200);
    s.stop().await;
}

/// The TOTP code `steps_ahead` 30-second steps from now (0 or 1: the
/// server accepts one step of skew, and each step once).
fn totp_code(secret: &str, steps_ahead: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    totp_rs::Builder::new()
        .with_secret(totp_rs::Secret::try_from_base32(secret).unwrap())
        .with_account_name("x")
        .build()
        .unwrap()
        .generate(now + 30 * steps_ahead)
        .to_string()
}

#[tokio::test]
async fn totp_mfa_over_http_from_setup_to_a_two_step_login() {
    let s = secure("").await;
    s.h.call(
        "user_create",
        json!({"username": "cam", "password": "Correct-Horse-42", "role": "viewer"}),
    )
    .await
    .unwrap();
    let login = json!({"username": "cam", "password": "Correct-Horse-42"});
    let (_, t) = s.post("/api/v1/auth/login", None, login.clone()).await;
    let access = t["accessToken"].as_str().unwrap().to_owned();
    // A key has no MFA of its own.
    let key = s.key_with("ci", Some("viewer"), &[], None).await;
    assert_eq!(
        s.post("/api/v1/auth/mfa/setup", Some(&key), json!({}))
            .await
            .0,
        403
    );

    let (st, setup) = s
        .post("/api/v1/auth/mfa/setup", Some(&access), json!({}))
        .await;
    assert_eq!(st, 200, "{setup}");
    let secret = setup["secret"].as_str().unwrap().to_owned();
    assert_eq!(setup["backupCodes"].as_array().unwrap().len(), 10);
    assert!(setup["otpauthUrl"].as_str().unwrap().contains("secret="));
    let (st, v) = s
        .post(
            "/api/v1/auth/mfa/confirm",
            Some(&access),
            json!({"code": "000000"}),
        )
        .await;
    assert_eq!(st, 400, "{v}");
    let (st, v) = s
        .post(
            "/api/v1/auth/mfa/confirm",
            Some(&access),
            json!({"code": totp_code(&secret, 0)}),
        )
        .await;
    assert_eq!((st.as_u16(), &v["mfaEnabled"]), (200, &json!(true)), "{v}");

    // Step one: the password alone is a challenge.
    let (st, challenge) = s.post("/api/v1/auth/login", None, login.clone()).await;
    assert_eq!(st, 401);
    assert_eq!(challenge["details"]["mfaRequired"], true, "{challenge}");
    let step = challenge["details"]["mfaToken"]
        .as_str()
        .unwrap()
        .to_owned();
    // The step token is not an access token.
    assert_eq!(s.get("/api/v1/auth/me", Some(&step)).await.0, 401);
    let (st, _) = s
        .post(
            "/api/v1/auth/mfa/verify",
            None,
            json!({"mfaToken": step, "code": "123456"}),
        )
        .await;
    assert_eq!(st, 401);
    let (st, t) = s
        .post(
            "/api/v1/auth/mfa/verify",
            None,
            json!({"mfaToken": step, "code": totp_code(&secret, 1)}),
        )
        .await;
    assert_eq!(st, 200, "{t}");
    assert!(t["accessToken"].is_string() && t["user"]["mfaEnabled"] == true);
    // Or in one step with mfaCode; a backup code works once.
    let backup = setup["backupCodes"][3].as_str().unwrap();
    let mut with = login.clone();
    with["mfaCode"] = json!(backup);
    assert_eq!(
        s.post("/api/v1/auth/login", None, with.clone()).await.0,
        200
    );
    assert_eq!(s.post("/api/v1/auth/login", None, with).await.0, 401);
    // Off again with password and code.
    let (st, v) = s
        .post(
            "/api/v1/auth/mfa/disable",
            Some(t["accessToken"].as_str().unwrap()),
            json!({"password": "Correct-Horse-42", "code": setup["backupCodes"][5]}),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(s.post("/api/v1/auth/login", None, login).await.0, 200);
    s.stop().await;
}
