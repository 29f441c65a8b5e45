//! A credential's end reaches open connections (docs/security.md): a key
//! revoked or past its expiry, a user disabled or signed out — every
//! connection opened with it ends within a second, with the reason, on
//! every transport (`/ws`, the stream WebSocket, Socket.IO over WebSocket
//! and long-polling with the official client, SSE, MCP's GET stream), and
//! nothing it sends after the change is carried out; a lowered role
//! applies to the next message; a user's connection outlives its access
//! token while the sign-in stands.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use iris_core::auth::{NewUser, Origin, Principal, UserUpdate};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

const PASSWORD: &str = "Correct-Horse-42-battery";

async fn server(extra: &str) -> Served {
    served(&format!(
        "api:\n  port: 0\n  rateLimit:\n    login: 1000/min\n{extra}teams:\n  demo:\n    path: .\n    agent: echo\n"
    ))
    .await
}

impl Served {
    /// A user with `role`, signed in: its id and access token.
    async fn user(&self, name: &str, role: &str) -> (String, String) {
        let info = self
            .h
            .iris
            .auth()
            .create_user(
                NewUser {
                    username: name.into(),
                    password: PASSWORD.into(),
                    roles: vec![role.into()],
                    ..Default::default()
                },
                &Principal::local(),
                &Origin::default(),
            )
            .await
            .unwrap();
        let (status, t) = http(
            &self.http,
            reqwest::Method::POST,
            format!("{}/api/v1/auth/login", self.base),
            None,
            json!({"username": name, "password": PASSWORD}),
        )
        .await;
        assert_eq!(status, 200, "{t}");
        (info.id, t["accessToken"].as_str().unwrap().to_owned())
    }

    async fn ws(&self, path: &str, cred: &str) -> Ws {
        ws_connect(&format!("ws://{}{path}", self.server.addr), Some(cred)).await
    }

    /// Every kind of connection, opened with `cred`.
    async fn open_all(&self, cred: &str) -> Vec<Conn> {
        let mut conns = vec![
            Conn::Ws("/ws", self.ws("/ws", cred).await),
            Conn::Ws("/api/v1/stream", self.ws("/api/v1/stream", cred).await),
        ];
        // SSE: a turn that never ends, streamed.
        let sse = self
            .http
            .post(format!("{}/api/v1/teams/demo/stream", self.base))
            .bearer_auth(cred)
            .json(&json!({"message": "[[hang]]", "sessionId": uuid()}))
            .send()
            .await
            .unwrap();
        assert_eq!(sse.status(), 200);
        conns.push(Conn::Sse(sse));
        // MCP: a session and its GET stream.
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
        let r = self.mcp_post(cred, None, &init).await;
        let session = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        let _ = r.text().await;
        let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let _ = self
            .mcp_post(cred, Some(&session), &done)
            .await
            .text()
            .await;
        let stream = self
            .http
            .get(format!("{}/mcp", self.base))
            .bearer_auth(cred)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", "2025-11-25")
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status(), 200);
        conns.push(Conn::Mcp(stream));
        for transport in ["websocket", "polling"] {
            let mut child = tokio::process::Command::new("node")
                .arg(clients().join("socketio_client.mjs"))
                .args(["ended", &self.base, cred, transport])
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
                .await
                .expect("Socket.IO connects in time")
                .unwrap()
                .unwrap_or_default();
            assert!(first.starts_with("CONNECTED"), "{transport}: {first}");
            conns.push(Conn::SocketIo(transport, child, lines));
        }
        conns
    }

    async fn mcp_post(&self, cred: &str, session: Option<&str>, body: &Value) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!("{}/mcp", self.base))
            .bearer_auth(cred)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .json(body);
        if let Some(s) = session {
            req = req.header("mcp-session-id", s);
        }
        req.send().await.unwrap()
    }
}

fn clients() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

fn uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .unwrap()
        .trim()
        .to_owned()
}

enum Conn {
    Ws(&'static str, Ws),
    Sse(reqwest::Response),
    Mcp(reqwest::Response),
    SocketIo(
        &'static str,
        tokio::process::Child,
        tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    ),
}

impl Conn {
    fn name(&self) -> String {
        match self {
            Conn::Ws(p, _) => format!("WebSocket {p}"),
            Conn::Sse(_) => "SSE".into(),
            Conn::Mcp(_) => "MCP GET stream".into(),
            Conn::SocketIo(t, _, _) => format!("Socket.IO over {t}"),
        }
    }

    /// Wait (at most 10 s) for the server to end the connection: what it
    /// said last (the close reason, the error event, …).
    async fn ended(self) -> String {
        let name = self.name();
        let wait = async move {
            match self {
                Conn::Ws(_, mut ws) => loop {
                    match ws.next().await {
                        Some(Ok(Message::Close(Some(f)))) => {
                            assert_eq!(u16::from(f.code), 1008, "{name}: {f:?}");
                            break f.reason.to_string();
                        }
                        Some(Ok(_)) => continue,
                        other => panic!("{name}: ended without a close frame: {other:?}"),
                    }
                },
                Conn::Sse(mut r) | Conn::Mcp(mut r) => {
                    let mut text = String::new();
                    while let Ok(Some(chunk)) = r.chunk().await {
                        text.push_str(&String::from_utf8_lossy(&chunk));
                    }
                    text
                }
                Conn::SocketIo(_, _child, mut lines) => {
                    let mut seen = String::new();
                    while let Ok(Some(line)) = lines.next_line().await {
                        seen.push_str(&line);
                        seen.push('\n');
                        if line.starts_with("DISCONNECTED") {
                            break;
                        }
                    }
                    seen
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("still open 10 s after the credential ended"))
    }
}

/// Every connection ends within a second of `since`, saying why (`why`).
async fn all_end(conns: Vec<Conn>, since: Instant, why: &str) {
    let ends = conns.into_iter().map(|c| async move {
        let name = c.name();
        let said = c.ended().await;
        (name, said, since.elapsed())
    });
    for (name, said, after) in futures_util::future::join_all(ends).await {
        assert!(
            after < Duration::from_secs(1),
            "{name} ended after {after:?}"
        );
        if !name.starts_with("MCP") {
            // MCP's stream just closes; the client's next request is refused.
            assert!(said.contains(why), "{name} said: {said}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_ends_every_open_connection_and_carries_nothing_out() {
    let s = server("").await;
    let (key, id) = s.h.key("developer", None, None).await;
    let conns = s.open_all(&key).await;
    // A /ws connection that sends right after the revocation: not carried out.
    let mut late = s.ws("/ws", &key).await;
    let revoked = Instant::now();
    s.h.iris
        .auth()
        .revoke_key(&id, &Principal::local(), &Origin::default())
        .await
        .unwrap();
    let _ = late
        .send(Message::Text(
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                   "params": {"name": "send_message", "arguments": {"toTeam": "demo", "message": "after revocation", "timeout": 0}}})
            .to_string()
            .into(),
        ))
        .await;
    all_end(conns, revoked, "revoked").await;
    let said = Conn::Ws("/ws", late).ended().await;
    assert!(said.contains("revoked"), "{said}");
    let history =
        s.h.call("message_history", json!({"team": "demo", "limit": 100}))
            .await
            .unwrap();
    assert!(
        !history.to_string().contains("after revocation"),
        "carried out after the revocation: {history}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_past_its_expiry_ends_its_connections() {
    let s = server("").await;
    // Eight seconds: room to open every connection (two of them start a
    // node process) on a loaded machine before the key expires.
    let created = Instant::now();
    let (key, _) =
        s.h.key("developer", None, Some(Duration::from_secs(8)))
            .await;
    let conns = s.open_all(&key).await;
    assert!(
        created.elapsed() < Duration::from_secs(8),
        "the connections took {:?} to open",
        created.elapsed()
    );
    let ends = async {
        let names: Vec<String> = conns.iter().map(Conn::name).collect();
        let said = futures_util::future::join_all(conns.into_iter().map(Conn::ended)).await;
        (names, said, created.elapsed())
    };
    let (names, said, after) = ends.await;
    assert!(
        after >= Duration::from_millis(7900) && after < Duration::from_millis(9500),
        "ended {after:?} after creation (expiry at 8 s)"
    );
    for (name, said) in names.iter().zip(said) {
        if !name.starts_with("MCP") {
            assert!(said.contains("expired"), "{name}: {said}");
        }
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_user_and_a_signed_out_one_lose_their_connections() {
    let s = server("").await;
    let (id, token) = s.user("ada1", "developer").await;
    let conns = s.open_all(&token).await;
    let disabled = Instant::now();
    s.h.iris
        .auth()
        .update_user(
            &id,
            UserUpdate {
                status: Some("disabled".into()),
                ..Default::default()
            },
            &Principal::local(),
            &Origin::default(),
        )
        .await
        .unwrap();
    all_end(conns, disabled, "disabled").await;

    let (_, token) = s.user("bob1", "developer").await;
    let conns = s.open_all(&token).await;
    let out = Instant::now();
    let (status, _) = http(
        &s.http,
        reqwest::Method::POST,
        format!("{}/api/v1/auth/logout", s.base),
        Some(&token),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    all_end(conns, out, "logged out").await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_role_applies_to_the_next_message_and_a_connection_outlives_its_token() {
    // Access tokens last 2 s here; the sign-in much longer.
    let s = server("auth:\n  accessTokenTtl: 2\n").await;
    let (id, token) = s.user("cyd", "developer").await;
    let mut ws = s.ws("/ws", &token).await;
    let call = |id: u64, name: &str, args: Value| {
        Message::Text(
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                   "params": {"name": name, "arguments": args}})
            .to_string()
            .into(),
        )
    };
    // Past the token's own expiry, the connection still serves.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    ws.send(call(1, "get_date", json!({}))).await.unwrap();
    let v = recv(&mut ws).await;
    assert!(v.get("result").is_some(), "{v}");
    // A developer may cancel a conversation's turn; lowered to viewer, not.
    let args = json!({"team": "demo"});
    ws.send(call(2, "team_sleep", args.clone())).await.unwrap();
    let v = recv(&mut ws).await;
    assert!(v.get("result").is_some(), "as a developer: {v}");
    s.h.iris
        .auth()
        .update_user(
            &id,
            UserUpdate {
                roles: Some(vec!["viewer".into()]),
                ..Default::default()
            },
            &Principal::local(),
            &Origin::default(),
        )
        .await
        .unwrap();
    ws.send(call(3, "team_sleep", args)).await.unwrap();
    let v = recv(&mut ws).await;
    assert_eq!(v["error"]["data"]["code"], "FORBIDDEN", "as a viewer: {v}");
    // And the connection goes on for what a viewer may do.
    ws.send(call(4, "list_teams", json!({}))).await.unwrap();
    assert!(recv(&mut ws).await.get("result").is_some());
    s.stop().await;
}
