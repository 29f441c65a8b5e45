//! MCP over Streamable HTTP (`/mcp`) and stdio (`iris mcp`), end to end
//! against a real server and the echo team, at the level of the wire: what
//! bad input gets (status and JSON-RPC code, the server going on), that
//! `tools/list` follows the caller's scopes and teams exactly like
//! `GET /api/v1/tools`, tool errors from the one table, audit, rate limits,
//! resumption of a 2025-11-25 stream with `Last-Event-ID`, and stdout of
//! `iris mcp` holding nothing but protocol. The official SDKs are driven in
//! `mcp_clients.rs`.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use iris_core::auth::{NewKey, Origin, Principal};
use serde_json::{Value, json};

const LEGACY: &str = "2025-11-25";
const MODERN: &str = "2026-07-28";

struct Mcp {
    h: Harness,
    server: iris_server::Running,
    base: String,
    http: reqwest::Client,
    admin: String,
}

async fn serve(api: &str) -> Mcp {
    let h = start(&format!(
        "api:\n  port: 0\n{api}teams:\n  demo:\n    path: .\n    agent: echo\n  other:\n    path: .\n    agent: echo\n"
    ))
    .await;
    let server = iris_server::start(h.iris.clone(), None).await.unwrap();
    let mut m = Mcp {
        base: format!("http://{}", server.addr),
        h,
        server,
        http: reqwest::Client::new(),
        admin: String::new(),
    };
    m.admin = m.key("admin", None).await;
    m
}

/// A POST's answer: status, headers and its JSON-RPC messages (a JSON body,
/// or the `data:` lines of an event stream).
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    messages: Vec<Value>,
    text: String,
}

impl Answer {
    /// The answer to the request (the message with an `id`).
    fn reply(&self) -> &Value {
        self.messages
            .iter()
            .rev()
            .find(|m| m.get("id").is_some())
            .unwrap_or_else(|| panic!("no reply in {}: {}", self.status, self.text))
    }
    /// The error body of a tool error (`isError`, the body as text).
    fn tool_error(&self) -> Value {
        let result = &self.reply()["result"];
        assert_eq!(result["isError"], true, "{}", self.text);
        serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap()
    }
    fn error_code(&self) -> i64 {
        self.reply()["error"]["code"].as_i64().unwrap_or_default()
    }
}

fn messages(text: &str) -> Vec<Value> {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return vec![v];
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str(d.trim()).ok())
        .collect()
}

/// The per-request `_meta` a 2026-07-28 request carries.
fn modern_meta() -> Value {
    json!({"io.modelcontextprotocol/protocolVersion": MODERN,
           "io.modelcontextprotocol/clientCapabilities": {}})
}

impl Mcp {
    async fn key(&self, role: &str, teams: Option<Vec<String>>) -> String {
        let (key, _) = self
            .h
            .iris
            .auth()
            .create_key(
                NewKey {
                    name: format!("{role}-key"),
                    role: Some(role.into()),
                    teams,
                    ..Default::default()
                },
                &Principal::local(),
                &Origin::default(),
            )
            .await
            .unwrap();
        key
    }

    async fn post(&self, key: Option<&str>, headers: &[(&str, &str)], body: String) -> Answer {
        let mut req = self
            .http
            .post(format!("{}/mcp", self.base))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        Answer {
            status,
            headers,
            messages: messages(&text),
            text,
        }
    }

    /// One 2026-07-28 (stateless) request.
    async fn modern(&self, key: &str, method: &str, mut params: Value) -> Answer {
        params["_meta"] = modern_meta();
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let mut headers = vec![("mcp-protocol-version", MODERN), ("mcp-method", method)];
        // SEP-2243: the tool's name or the resource's URI, mirrored.
        let name = params["name"]
            .as_str()
            .or(params["uri"].as_str())
            .map(str::to_owned);
        if let Some(n) = &name {
            headers.push(("mcp-name", n));
        }
        self.post(Some(key), &headers, body.to_string()).await
    }

    /// A 2025-11-25 session: its id.
    async fn initialize(&self, key: &str) -> String {
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
        let a = self.post(Some(key), &[], init.to_string()).await;
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(a.reply()["result"]["protocolVersion"], LEGACY);
        let session = a.headers["mcp-session-id"].to_str().unwrap().to_owned();
        let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let a = self
            .post(Some(key), &self.in_session(&session), done.to_string())
            .await;
        assert_eq!(a.status, 202, "{}", a.text);
        session
    }

    fn in_session<'a>(&self, session: &'a str) -> Vec<(&'static str, &'a str)> {
        vec![
            ("mcp-session-id", session),
            ("mcp-protocol-version", LEGACY),
        ]
    }

    async fn tool_names(&self, key: &str) -> BTreeSet<String> {
        let a = self.modern(key, "tools/list", json!({})).await;
        a.reply()["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("{}", a.text))
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn rest_tool_names(&self, key: &str) -> BTreeSet<String> {
        let v: Value = self
            .http
            .get(format!("{}/api/v1/tools", self.base))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn stop(self) {
        self.server.stop().await;
        self.h.stop().await;
    }
}

#[tokio::test]
async fn bad_input_gets_the_spec_errors_and_the_server_goes_on() {
    let m = serve("").await;
    let session = m.initialize(&m.admin).await;
    let key = Some(m.admin.as_str());
    let ping = json!({"jsonrpc": "2.0", "id": 9, "method": "ping"}).to_string();

    // No credential: 401 with the error body and how to authenticate.
    let a = m.post(None, &[], ping.clone()).await;
    assert_eq!(a.status, 401, "{}", a.text);
    assert!(
        a.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert_eq!(a.messages[0]["code"], "UNAUTHORIZED");
    // A foreign Origin: 403.
    let a = m
        .post(key, &[("origin", "http://evil.example")], ping.clone())
        .await;
    assert_eq!(a.status, 403, "{}", a.text);

    // Not JSON, a batch, the wrong version of JSON-RPC: 400 with -32700 / -32600.
    for (body, code) in [
        (r#"{"jsonrpc":"2.0","id":1,"#.to_owned(), -32700),
        (format!("[{ping}]"), -32600),
        (
            r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#.to_owned(),
            -32600,
        ),
        ("17".to_owned(), -32600),
    ] {
        let a = m.post(key, &m.in_session(&session), body.clone()).await;
        assert_eq!(
            (a.status, a.error_code()),
            (400, code),
            "{body}: {}",
            a.text
        );
        assert_eq!(a.reply()["id"], Value::Null);
    }
    // An unknown method: -32601, in a session and stateless.
    let unknown = json!({"jsonrpc": "2.0", "id": 2, "method": "no/such"}).to_string();
    let a = m.post(key, &m.in_session(&session), unknown).await;
    assert_eq!(a.error_code(), -32601, "{}", a.text);
    let a = m.modern(&m.admin, "no/such", json!({})).await;
    assert_eq!(a.error_code(), -32601, "{}", a.text);
    // A protocol version nobody speaks: 400.
    let a = m
        .post(
            key,
            &[
                ("mcp-session-id", &session),
                ("mcp-protocol-version", "1999-01-01"),
            ],
            ping.clone(),
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.text);
    // An unknown session: 404, so clients initialize again.
    let a = m
        .post(key, &m.in_session("no-such-session"), ping.clone())
        .await;
    assert_eq!(a.status, 404, "{}", a.text);
    // A body over api.maxBodyBytes (10 MiB by default): 413.
    let big =
        json!({"jsonrpc": "2.0", "id": 3, "method": "ping", "params": {"x": "a".repeat(11 << 20)}});
    let a = m.post(key, &m.in_session(&session), big.to_string()).await;
    assert_eq!(a.status, 413, "{}", &a.text[..a.text.len().min(300)]);
    // A notification: 202, no body.
    let note =
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 77}});
    let a = m.post(key, &m.in_session(&session), note.to_string()).await;
    assert_eq!(a.status, 202, "{}", a.text);

    // The session and the server go on.
    let call = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                      "params": {"name": "get_date", "arguments": {}}});
    let a = m.post(key, &m.in_session(&session), call.to_string()).await;
    assert_eq!(a.reply()["result"]["isError"], false, "{}", a.text);
    assert!(
        a.reply()["result"]["structuredContent"]["iso"].is_string(),
        "{}",
        a.text
    );
    let a = m
        .modern(
            &m.admin,
            "tools/call",
            json!({"name": "get_date", "arguments": {}}),
        )
        .await;
    assert_eq!(a.reply()["result"]["isError"], false, "{}", a.text);
    m.stop().await;
}

#[tokio::test]
async fn tools_list_follows_scopes_and_teams_exactly_like_the_rest_listing() {
    let m = serve("").await;
    let viewer = m.key("viewer", None).await;
    let limited = m.key("operator", Some(vec!["demo".into()])).await;
    for key in [&m.admin, &viewer, &limited] {
        assert_eq!(m.tool_names(key).await, m.rest_tool_names(key).await);
    }
    let admin = m.tool_names(&m.admin).await;
    let viewer_tools = m.tool_names(&viewer).await;
    let limited_tools = m.tool_names(&limited).await;
    assert!(admin.contains("key_create") && admin.contains("send_message"));
    assert!(viewer_tools.contains("list_teams") && !viewer_tools.contains("send_message"));
    assert!(limited_tools.contains("send_message") && !limited_tools.contains("key_create"));

    // The tools' schemas come from the registry.
    let a = m.modern(&m.admin, "tools/list", json!({})).await;
    let send = a.reply()["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "send_message")
        .unwrap()
        .clone();
    assert_eq!(
        send["inputSchema"]["required"],
        json!(["toTeam", "message"])
    );
    assert_eq!(send["outputSchema"]["type"], "object");
    assert_eq!(send["annotations"]["readOnlyHint"], false);

    // A team the key may not see is not found; a tool it may not use is FORBIDDEN.
    let a = m
        .modern(
            &limited,
            "tools/call",
            json!({"name": "send_message",
                "arguments": {"toTeam": "other", "message": "hi"}}),
        )
        .await;
    let body = a.tool_error();
    assert_eq!(body["code"], "TEAM_NOT_FOUND", "{body}");
    let a = m
        .modern(
            &viewer,
            "tools/call",
            json!({"name": "send_message",
                "arguments": {"toTeam": "demo", "message": "hi"}}),
        )
        .await;
    let body = a.tool_error();
    assert_eq!(body["code"], "FORBIDDEN", "{body}");
    // Resources show only what the key may see.
    let a = m.modern(&limited, "resources/list", json!({})).await;
    let uris: Vec<&str> = a.reply()["result"]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["uri"].as_str())
        .collect();
    assert!(
        uris.contains(&"iris://teams/demo") && !uris.contains(&"iris://teams/other"),
        "{uris:?}"
    );
    let a = m
        .modern(
            &limited,
            "resources/read",
            json!({"uri": "iris://teams/other"}),
        )
        .await;
    // Resource not found: -32602 from 2026-07-28 on (SEP-2164; -32002 before).
    assert_eq!(a.error_code(), -32602, "{}", a.text);
    assert_eq!(a.reply()["error"]["data"]["uri"], "iris://teams/other");
    m.stop().await;
}

#[tokio::test]
async fn calls_validate_with_the_one_table_and_are_audited() {
    let m = serve("").await;
    let a = m
        .modern(
            &m.admin,
            "tools/call",
            json!({"name": "send_message",
                "arguments": {"toTeam": "demo", "timeout": "soon"}}),
        )
        .await;
    let body = a.tool_error();
    assert_eq!(body["code"], "VALIDATION_ERROR");
    assert!(body["details"]["fields"]["message"].is_string(), "{body}");
    assert!(body["details"]["fields"]["timeout"].is_string(), "{body}");
    let a = m
        .modern(
            &m.admin,
            "tools/call",
            json!({"name": "nope", "arguments": {}}),
        )
        .await;
    assert_eq!(a.error_code(), -32602, "{}", a.text);

    let a = m
        .modern(
            &m.admin,
            "tools/call",
            json!({"name": "send_message",
                "arguments": {"toTeam": "demo", "message": "audit me", "timeout": 0}}),
        )
        .await;
    assert_eq!(
        a.reply()["result"]["structuredContent"]["response"],
        "audit me",
        "{}",
        a.text
    );
    let audit =
        m.h.call("audit_list", json!({"team": "demo", "limit": 50}))
            .await
            .unwrap();
    let text = audit.to_string();
    assert!(
        text.contains("operation.send_message") && text.contains("\"actorKind\":\"key\""),
        "{audit}"
    );
    m.stop().await;
}

#[tokio::test]
async fn rate_limits_apply_to_mcp_like_every_route() {
    let m = serve("  rateLimit:\n    maxRequests: 3\n").await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(m.modern(&m.admin, "tools/list", json!({})).await.status);
    }
    assert_eq!(statuses[..3], [200, 200, 200], "{statuses:?}");
    assert_eq!(statuses[3..], [429, 429], "{statuses:?}");
    m.stop().await;
}

#[tokio::test]
async fn a_2025_11_25_stream_resumes_after_its_last_event_id() {
    let m = serve("").await;
    let session = m.initialize(&m.admin).await;
    let call = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {
        "name": "send_message", "_meta": {"progressToken": "t"},
        "arguments": {"toTeam": "demo", "message": "[[delay=150]] a b c d e", "timeout": 0}}});
    // Read the stream until the first progress event, then drop it.
    let mut resp = m
        .http
        .post(format!("{}/mcp", m.base))
        .bearer_auth(&m.admin)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", LEGACY)
        .body(call.to_string())
        .send()
        .await
        .unwrap();
    let mut seen = String::new();
    let last_id = loop {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
        if seen.contains("notifications/progress")
            && let Some(id) = seen
                .split("notifications/progress")
                .nth(1)
                .and_then(|rest| rest.lines().find_map(|l| l.strip_prefix("id:")))
        {
            break id.trim().to_owned();
        }
    };
    drop(resp);
    // The turn goes on (a dropped stream is no cancellation); resuming after
    // that event brings the rest and the result.
    let resumed = m
        .http
        .get(format!("{}/mcp", m.base))
        .bearer_auth(&m.admin)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", LEGACY)
        .header("last-event-id", &last_id)
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    let mut stream = resumed;
    let mut text = String::new();
    while !text.contains("\"id\":5") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let all = messages(&text);
    let progress: String = all
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .filter_map(|m| m["params"]["message"].as_str())
        .collect();
    assert!(progress.ends_with("e"), "the later chunks: {progress:?}");
    let result = all.iter().find(|m| m["id"] == 5).unwrap();
    assert_eq!(
        result["result"]["structuredContent"]["response"],
        "a b c d e"
    );
    m.stop().await;
}

#[tokio::test]
async fn iris_mcp_writes_nothing_but_protocol_on_stdout() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("config.yaml"),
        "database:\n  path: data/iris.db\nteams:\n  demo:\n    path: .\n    agent: echo\n",
    )
    .unwrap();
    let mut child = tokio::process::Command::new(iris_bin())
        .arg("mcp")
        .env("IRIS_HOME", home.path())
        .env(
            "IRIS_DATABASE_URL",
            iris_storage::testing::database_url(home.path()),
        )
        .env("IRIS_LOG", "debug")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let requests = [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": LEGACY, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "send_message", "arguments": {"toTeam": "demo", "message": "over stdio", "timeout": 0}}}),
        json!({"jsonrpc": "2.0", "id": 3, "method": "no/such"}),
    ];
    for r in &requests {
        stdin.write_all(format!("{r}\n").as_bytes()).await.unwrap();
    }
    let mut replies = std::collections::BTreeMap::new();
    while replies.len() < 3 {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .expect("stdout open");
        let msg: Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("not protocol: {line}"));
        assert_eq!(msg["jsonrpc"], "2.0", "{line}");
        if let Some(id) = msg["id"].as_i64() {
            replies.insert(id, msg);
        }
    }
    assert_eq!(
        replies[&2]["result"]["structuredContent"]["response"],
        "over stdio"
    );
    assert_eq!(replies[&3]["error"]["code"], -32601);
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}
