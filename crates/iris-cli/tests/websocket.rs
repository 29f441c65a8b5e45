//! Both WebSockets over real connections: `/api/v1/stream` (seed 002) and
//! `/ws` JSON-RPC 2.0 (seed 003), with their limits.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

async fn setup(extra: &str) -> (Harness, iris_server::Running) {
    let h = start(&format!(
        "api:\n  port: 0\n  requireAuth: false\n{extra}teams:\n  demo:\n    path: .\n    agent: echo\n"
    ))
    .await;
    let server = iris_server::start(h.iris.clone(), None).await.unwrap();
    (h, server)
}

async fn connect(server: &iris_server::Running, path: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}{path}", server.addr))
        .await
        .unwrap();
    ws
}

/// The next JSON text message, failing after 10 s.

#[tokio::test]
async fn stream_protocol_message_subscribe_and_cancel() {
    let (h, server) = setup("").await;
    let mut ws = connect(&server, "/api/v1/stream").await;
    send(&mut ws, json!({"type": "subscribe", "team": "demo"})).await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "subscribed", "topic": "team:demo"})
    );
    send(
        &mut ws,
        json!({"type": "message", "team": "demo", "message": "hello over ws [[tool=Grep]]"}),
    )
    .await;
    let start = recv(&mut ws).await;
    assert_eq!(start["type"], "start");
    let mut text = String::new();
    let mut tools = Vec::new();
    let complete = loop {
        let v = recv(&mut ws).await;
        match v["type"].as_str().unwrap() {
            "chunk" => text.push_str(v["text"].as_str().unwrap()),
            "tool_use" | "tool_result" if v["messageId"] == start["messageId"] => {
                assert!(v["seq"].is_u64(), "{v}");
                tools.push(v)
            }
            "complete" => break v,
            "event" | "start" => {} // lifecycle events of the team subscription
            other => panic!("unexpected {other}: {v}"),
        }
    };
    assert_eq!(
        text, "hello over ws",
        "each chunk once, though the team is subscribed too"
    );
    assert_eq!(complete["response"], "hello over ws");
    // The tool's use, then its result (once each, though the team is
    // subscribed too: tool traffic goes to the conversation only).
    assert_eq!(tools.len(), 2, "{tools:?}");
    assert_eq!(
        (&tools[0]["type"], &tools[0]["tool"]),
        (&json!("tool_use"), &json!("Grep"))
    );
    assert_eq!(tools[1]["type"], "tool_result");
    assert_eq!(tools[1]["id"], tools[0]["id"]);
    assert_eq!(tools[1]["output"], "Grep done");
    assert_eq!(complete["messageId"], start["messageId"]);

    // A turn started elsewhere reaches the team subscription.
    h.call(
        "quick_message",
        json!({"toTeam": "demo", "message": "from rest", "fromTeam": "x"}),
    )
    .await
    .unwrap();
    let mut got = String::new();
    loop {
        let v = recv(&mut ws).await;
        if v["type"] == "chunk" {
            got.push_str(v["text"].as_str().unwrap());
        }
        if v["type"] == "complete" {
            break;
        }
    }
    assert_eq!(got, "from rest");

    send(
        &mut ws,
        json!({"type": "message", "team": "demo", "message": "a b c d e f [[delay=200]]"}),
    )
    .await;
    loop {
        if recv(&mut ws).await["type"] == "chunk" {
            break;
        }
    }
    send(&mut ws, json!({"type": "cancel", "team": "demo"})).await;
    let mut cancelled = false;
    let mut status = Value::Null;
    while status.is_null() {
        let v = recv(&mut ws).await;
        match v["type"].as_str().unwrap() {
            "cancelled" => cancelled = v["cancelled"] == true,
            "complete" | "error" if v.get("status").is_some() => status = v["status"].clone(),
            _ => {}
        }
    }
    assert!(cancelled);
    assert_eq!(status, "cancelled");

    send(
        &mut ws,
        json!({"type": "message", "team": "ghost", "message": "x"}),
    )
    .await;
    let e = recv(&mut ws).await;
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["code"], "TEAM_NOT_FOUND");
    send(&mut ws, json!({"type": "dance"})).await;
    assert_eq!(recv(&mut ws).await["error"]["code"], "VALIDATION_ERROR");
    ws.send(Message::Text("{oops".into())).await.unwrap();
    assert_eq!(recv(&mut ws).await["error"]["code"], "MALFORMED_JSON");
    send(&mut ws, json!({"type": "ping"})).await;
    assert_eq!(recv(&mut ws).await["type"], "pong");
    server.stop().await;
    h.stop().await;
}

#[tokio::test]
async fn json_rpc_tools_calls_subscriptions_and_errors() {
    let (h, server) = setup("").await;
    let mut ws = connect(&server, "/ws").await;
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize"}),
    )
    .await;
    let init = recv(&mut ws).await;
    assert_eq!(init["id"], 1);
    assert_eq!(init["result"]["serverInfo"]["name"], "iris");
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    )
    .await;
    let list = recv(&mut ws).await;
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"send_message") && names.contains(&"session_fork"));
    send(&mut ws, json!({"jsonrpc": "2.0", "id": 3, "method": "subscribe", "params": {"events": ["team:demo"]}})).await;
    assert_eq!(recv(&mut ws).await["result"]["subscribed"][0], "team:demo");
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
               "params": {"name": "send_message", "arguments": {"toTeam": "demo", "message": "rpc hi", "timeout": 0}}}),
    )
    .await;
    let mut notifications = 0;
    let reply = loop {
        let v = recv(&mut ws).await;
        if v["method"] == "notification" {
            assert_eq!(v["params"]["topic"], "team:demo");
            notifications += 1;
        } else {
            break v;
        }
    };
    assert_eq!(reply["id"], 4);
    assert_eq!(reply["result"]["response"], "rpc hi");
    assert!(
        notifications > 0,
        "events of the turn arrived as notifications"
    );
    send(&mut ws, json!({"jsonrpc": "2.0", "id": 5, "method": "unsubscribe", "params": {"events": ["team:demo"]}})).await;
    loop {
        let v = recv(&mut ws).await;
        if v["id"] == 5 {
            break;
        }
    }
    // Errors: the standard codes.
    send(&mut ws, json!({"jsonrpc": "2.0", "id": 6, "method": "tools/execute", "params": {"name": "send_message", "parameters": {"toTeam": "demo"}}})).await;
    assert_eq!(recv(&mut ws).await["error"]["code"], -32602);
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 7, "method": "no/such"}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["error"]["code"], -32601);
    send(&mut ws, json!({"id": 8, "method": "ping"})).await;
    assert_eq!(recv(&mut ws).await["error"]["code"], -32600);
    ws.send(Message::Text("not json".into())).await.unwrap();
    assert_eq!(recv(&mut ws).await["error"]["code"], -32700);
    send(&mut ws, json!({"jsonrpc": "2.0", "id": 9, "method": "subscribe", "params": {"events": ["team:ghost"]}})).await;
    assert_eq!(recv(&mut ws).await["error"]["code"], -32004);
    // A notification (no id) gets no answer; the next request's answer comes first.
    send(&mut ws, json!({"jsonrpc": "2.0", "method": "ping"})).await;
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 10, "method": "ping"}),
    )
    .await;
    let v = recv(&mut ws).await;
    assert_eq!(
        (v["id"].clone(), v["result"].clone()),
        (json!(10), json!("pong"))
    );
    server.stop().await;
    h.stop().await;
}

#[tokio::test]
async fn limits_size_rate_and_connections() {
    let (h, server) = setup(
        "  websocket:\n    maxMessageBytes: 2048\n    messagesPerSecond: 5\n    maxConnections: 2\n    idleTimeout: 400\n    pingInterval: 100\n",
    )
    .await;
    let mut a = connect(&server, "/ws").await;
    for i in 0..8 {
        send(&mut a, json!({"jsonrpc": "2.0", "id": i, "method": "ping"})).await;
    }
    let mut limited = 0;
    for _ in 0..8 {
        if recv(&mut a).await["error"]["code"] == -32029 {
            limited += 1;
        }
    }
    assert_eq!(limited, 3, "5 per second pass, the rest are refused");
    let _b = connect(&server, "/api/v1/stream").await;
    let third = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr)).await;
    match third {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("a third connection must be refused: {other:?}"),
    }
    // Too large a message closes the connection.
    a.send(Message::Text("x".repeat(4096).into()))
        .await
        .unwrap();
    let mut closed = false;
    for _ in 0..20 {
        match tokio::time::timeout(Duration::from_secs(5), a.next()).await {
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    assert!(closed, "an oversized message ends the connection");
    // An idle connection is closed by the server.
    let mut idle = connect(&server, "/ws").await;
    let mut ended = false;
    for _ in 0..50 {
        match tokio::time::timeout(Duration::from_secs(5), idle.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => {} // pings do not count as client activity
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => {
                ended = true;
                break;
            }
            _ => {}
        }
    }
    assert!(ended, "idle connection closed");
    server.stop().await;
    h.stop().await;
}

/// Messages up to the close frame; the frame's code last.
async fn until_closed(ws: &mut Ws) -> (Vec<Value>, u16) {
    let mut seen = Vec::new();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a close frame in time");
        match m {
            Some(Ok(Message::Text(t))) => seen.push(serde_json::from_str(t.as_str()).unwrap()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(frame))) => {
                return (seen, frame.map_or(0, |f| u16::from(f.code)));
            }
            other => panic!("unexpected {other:?} before the close frame ({seen:?})"),
        }
    }
}

/// Stopping the server: an idle WebSocket is closed at once with 1001
/// (going away); one following a turn first gets the rest of it; one
/// following a turn that never ends is closed when the grace runs out; a
/// topic subscription ends at once, even on a busy topic.
/// `stop` waits for them like for any open connection.
#[tokio::test]
async fn stopping_closes_websockets_after_what_they_follow() {
    let h = start(
        "api:\n  port: 0\n  requireAuth: false\n  shutdownGrace: 1500\nteams:\n  demo:\n    path: .\n    agent: echo\n  other:\n    path: .\n    agent: echo\n",
    )
    .await;
    let server = iris_server::start(h.iris.clone(), None).await.unwrap();
    let mut idle = connect(&server, "/ws").await;
    let mut busy = connect(&server, "/api/v1/stream").await;
    let mut hung = connect(&server, "/api/v1/stream").await;
    let mut watcher = connect(&server, "/ws").await;
    send(&mut watcher, json!({"jsonrpc": "2.0", "id": 1, "method": "subscribe", "params": {"events": ["team:demo"]}})).await;
    assert_eq!(
        recv(&mut watcher).await["result"]["subscribed"][0],
        "team:demo"
    );
    send(
        &mut busy,
        json!({"type": "message", "team": "demo", "message": "three slow words [[delay=200]]"}),
    )
    .await;
    send(
        &mut hung,
        json!({"type": "message", "team": "other", "message": "stuck [[hang]]"}),
    )
    .await;
    assert_eq!(recv(&mut busy).await["type"], "start");
    assert_eq!(recv(&mut hung).await["type"], "start");

    let started = std::time::Instant::now();
    let stop = tokio::spawn(server.stop());
    let (seen, code) = until_closed(&mut idle).await;
    assert_eq!((seen.len(), code), (0, 1001));
    let idle_closed = started.elapsed();
    // A topic never ends by itself: its subscription ends when stopping
    // begins, even while the team it watches is still answering.
    let (_, code) = until_closed(&mut watcher).await;
    assert_eq!(code, 1001);
    let watcher_closed = started.elapsed();

    let (seen, code) = until_closed(&mut busy).await;
    assert_eq!(code, 1001);
    let complete = seen.iter().find(|v| v["type"] == "complete");
    assert_eq!(
        complete.map(|v| v["response"].clone()),
        Some(json!("three slow words")),
        "{seen:?}"
    );
    let busy_closed = started.elapsed();
    assert!(idle_closed < busy_closed, "{idle_closed:?} {busy_closed:?}");
    assert!(
        watcher_closed < busy_closed,
        "{watcher_closed:?} {busy_closed:?}"
    );

    let (_, code) = until_closed(&mut hung).await;
    assert_eq!(code, 1001);
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "closed before the grace ran out: {:?}",
        started.elapsed()
    );
    tokio::time::timeout(Duration::from_secs(5), stop)
        .await
        .expect("stop returns after the grace")
        .unwrap();
    h.stop().await;
}

/// JSON-RPC 2.0 sections 4 and 6 on `/ws`: a batch gets one array of its
/// answers in order (notifications answered by nothing), an empty batch
/// one -32600 with id null, non-objects one -32600 each; request objects
/// with a bad `jsonrpc`, `method`, `id` or `params` are -32600.
#[tokio::test]
async fn json_rpc_batches_and_request_objects_follow_the_specification() {
    let (h, server) = setup("").await;
    let mut ws = connect(&server, "/ws").await;
    send(
        &mut ws,
        json!([{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping"}]),
    )
    .await;
    let v = recv(&mut ws).await;
    assert_eq!(
        v,
        json!([{"jsonrpc":"2.0","id":1,"result":"pong"},{"jsonrpc":"2.0","id":2,"result":"pong"}])
    );
    // Calls of the registry and notifications in one batch, answers in order.
    send(
        &mut ws,
        json!([
            {"jsonrpc":"2.0","id":"a","method":"get_date"},
            {"jsonrpc":"2.0","method":"ping"},
            {"jsonrpc":"2.0","id":"b","method":"no/such"},
            {"jsonrpc":"2.0","id":"c","method":"tools/call","params":{"name":"get_status"}}
        ]),
    )
    .await;
    let v = recv(&mut ws).await;
    let a = v.as_array().expect("an array");
    assert_eq!(a.len(), 3, "{v}");
    assert_eq!(
        (a[0]["id"].clone(), a[0]["result"]["timestamp"].is_i64()),
        (json!("a"), true)
    );
    assert_eq!(
        (a[1]["id"].clone(), a[1]["error"]["code"].clone()),
        (json!("b"), json!(-32601))
    );
    assert_eq!(a[2]["id"], "c");
    assert!(a[2]["result"].is_object(), "{v}");
    send(&mut ws, json!([])).await;
    let v = recv(&mut ws).await;
    assert_eq!(
        (v["id"].clone(), v["error"]["code"].clone()),
        (Value::Null, json!(-32600)),
        "{v}"
    );
    send(&mut ws, json!([1, 2])).await;
    let v = recv(&mut ws).await;
    let a = v.as_array().expect("an array");
    assert_eq!(a.len(), 2);
    for e in a {
        assert_eq!(
            (e["id"].clone(), e["error"]["code"].clone()),
            (Value::Null, json!(-32600))
        );
    }
    // Only notifications: nothing comes back; the next answer is the next request's.
    send(&mut ws, json!([{"jsonrpc":"2.0","method":"ping"}])).await;
    for (bad, id) in [
        (json!({"jsonrpc":"2.0","id":3,"method":1}), json!(3)),
        (json!({"jsonrpc":"1.0","id":4,"method":"ping"}), json!(4)),
        (
            json!({"jsonrpc":"2.0","id":5,"method":"ping","params":"x"}),
            json!(5),
        ),
        (
            json!({"jsonrpc":"2.0","id":{"no":1},"method":"ping"}),
            Value::Null,
        ),
        (json!("ping"), Value::Null),
    ] {
        send(&mut ws, bad.clone()).await;
        let v = recv(&mut ws).await;
        assert_eq!(
            (v["id"].clone(), v["error"]["code"].clone()),
            (id, json!(-32600)),
            "{bad}: {v}"
        );
    }
    send(
        &mut ws,
        json!({"jsonrpc":"2.0","id":6,"method":"ping","params":[]}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["result"], "pong");
    server.stop().await;
    h.stop().await;
}

/// A batch counts as many messages as it has members against
/// `messagesPerSecond`; a notification refused for the rate gets no answer.
#[tokio::test]
async fn batches_count_each_member_against_the_message_rate() {
    let (h, server) = setup("  websocket:\n    messagesPerSecond: 5\n").await;
    let mut ws = connect(&server, "/ws").await;
    let batch: Vec<Value> = (0..6)
        .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "ping"}))
        .collect();
    send(&mut ws, Value::Array(batch)).await;
    let v = recv(&mut ws).await;
    assert_eq!(v["error"]["code"], -32029, "{v}");
    // Over the rate: a notification is dropped silently, a request answered.
    send(&mut ws, json!({"jsonrpc": "2.0", "method": "ping"})).await;
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 7, "method": "ping"}),
    )
    .await;
    let v = recv(&mut ws).await;
    assert_eq!(
        (v["id"].clone(), v["error"]["code"].clone()),
        (json!(7), json!(-32029)),
        "{v}"
    );
    server.stop().await;
    h.stop().await;
}

/// A message over `api.websocket.maxMessageBytes` closes the socket with
/// 1009 (message too big) and a reason, not a dropped connection.
#[tokio::test]
async fn an_oversized_message_closes_with_1009() {
    let (h, server) = setup("  websocket:\n    maxMessageBytes: 2048\n").await;
    for path in ["/ws", "/api/v1/stream"] {
        let mut ws = connect(&server, path).await;
        ws.send(Message::Text("x".repeat(4096).into()))
            .await
            .unwrap();
        let (_, code) = until_closed(&mut ws).await;
        assert_eq!(code, 1009, "{path}");
    }
    server.stop().await;
    h.stop().await;
}
