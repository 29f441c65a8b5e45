//! A2A 1.0 with the official SDKs (`a2a-sdk` and `@a2a-js/sdk`, pinned in
//! tests/clients): agent cards behind the gate, blocking and streamed
//! sends, a conversation continued in its context, get, list, cancel,
//! failed turns as failed tasks, and a key limited to one team
//! (tests/clients/a2a_client.py). Plus the protocol's errors for bad input,
//! over raw HTTP.

#[path = "common/anthropic_stub.rs"]
#[allow(dead_code)]
mod anthropic_stub;
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Signs the push notifications the SDK clients verify.
const SIGNING_SECRET: &str = "push-signing-secret-0123456789";

const YAML: &str = "api:\n  port: 0\nteams:\n  demo:\n    path: .\n    agent: echo\n    description: Echoes what it is told.\n  other:\n    path: .\n    agent: echo\n";

fn python() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tools/venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/test.sh, which installs the test clients",
        p.display()
    );
    p
}

#[tokio::test]
async fn the_python_sdk_sends_gets_lists_and_cancels_tasks() {
    let s = served(YAML).await;
    let (key, _) = s.h.key("admin", None, None).await;
    let (limited, _) = s.h.key("operator", Some(&["demo"]), None).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/a2a_client.py");
    let script = script.display().to_string();
    let seen = client_report(python(), &[&script, &s.base, &key, &limited]).await;
    assert_eq!(seen["tasks"], 2, "{seen}");
    assert_eq!(seen["streamedInput"], true, "{seen}");
    s.stop().await;
}

/// Push notifications: configs inline and set later, each notification
/// with the client's token and credential and Iris's signature, the body a
/// `StreamResponse` (tests/clients/a2a_push.py verifies them as
/// docs/a2a.md says); a destination the SSRF guard refuses writes nothing.
#[tokio::test]
async fn push_notifications_carry_the_token_and_iriss_signature() {
    let secret = SIGNING_SECRET;
    let yaml = format!(
        "webhooks:\n  signingSecret: {secret}\n  allowHosts: ['127.0.0.1']\n  retryBase: 50\n  retryMax: 200\n{YAML}"
    );
    let s = served(&yaml).await;
    let (key, _) = s.h.key("admin", None, None).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/a2a_push.py");
    let script = script.display().to_string();
    let seen = client_report(python(), &[&script, &s.base, &key, secret]).await;
    assert!(seen["inline"].as_u64() >= Some(2), "{seen}");
    // Another caller who may see the team sees the config, not its token,
    // and may not delete or replace it.
    let (operator, _) = s.h.key("operator", None, None).await;
    let rpc = |method: &str, params: Value| {
        let (http, url, key) = (s.http.clone(), format!("{}/rpc", s.base), operator.clone());
        let body = json!({"method": method, "params": params});
        async move {
            http.post(url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let task = seen["task"].as_str().unwrap();
    let listed: Value = rpc("task_push_list", json!({"team": "demo", "messageId": task}))
        .await
        .json()
        .await
        .unwrap();
    let config = &listed["configs"][0];
    assert!(
        config["url"].is_string() && config.get("token").is_none_or(Value::is_null),
        "{listed}"
    );
    let id = config["id"].as_str().unwrap();
    let refused = rpc(
        "task_push_delete",
        json!({"team": "demo", "messageId": task, "configId": id}),
    )
    .await;
    assert_eq!(refused.status(), 403);
    let refused = rpc(
        "task_push_set",
        json!({"team": "demo", "messageId": task, "configId": id, "url": "http://127.0.0.1:9/mine"}),
    )
    .await;
    assert_eq!(refused.status(), 403);
    // Another team's name with this task: not found.
    let other = rpc(
        "task_push_list",
        json!({"team": "other", "messageId": task}),
    )
    .await;
    assert_eq!(other.status(), 404);
    s.stop().await;
}

/// A task whose Iris dies mid-turn: the next start marks it failed and its
/// push config hears of that end (written before the deliverer starts).
#[tokio::test]
async fn a_task_failed_by_a_restart_is_pushed() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, hits) = receiver(0);
    let config = "api:\n  port: 0\nwebhooks:\n  allowHosts: ['127.0.0.1']\n  retryBase: 50\nteams:\n  demo:\n    path: .\n    agent: echo\n";
    let (mut server, base) = serve_in(dir.path(), config);
    let key = key_in(dir.path());
    let sent: Value = reqwest::Client::new()
        .post(format!("{base}/a2a/demo"))
        .bearer_auth(&key)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {
            "message": {"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "never ends [[hang]]"}]},
            "configuration": {"returnImmediately": true,
                              "taskPushNotificationConfig": {"url": format!("{hook}/task"), "token": "t"}}}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let task = sent["result"]["task"]["id"].as_str().unwrap().to_owned();
    let state_seen = |state: &'static str| {
        let hits = hits.clone();
        move || {
            hits.lock()
                .unwrap()
                .iter()
                .any(|(_, b)| b["task"]["status"]["state"] == state)
        }
    };
    eventually("the working notification", state_seen("TASK_STATE_WORKING")).await;
    // SAFETY: signalling the server this test started.
    unsafe { libc::kill(server.0.id() as i32, libc::SIGKILL) };
    let _ = server.0.wait();
    let (_again, _) = serve_with(dir.path(), &[]);
    eventually("the failed notification", state_seen("TASK_STATE_FAILED")).await;
    let hits = hits.lock().unwrap();
    let failed = hits
        .iter()
        .find(|(_, b)| b["task"]["status"]["state"] == "TASK_STATE_FAILED")
        .unwrap();
    assert_eq!(failed.1["task"]["id"], task.as_str(), "{:?}", failed.1);
    assert!(
        failed.1.to_string().contains("Iris restarted"),
        "{:?}",
        failed.1
    );
}

#[tokio::test]
async fn the_javascript_sdk_sends_streams_gets_and_cancels() {
    let secret = SIGNING_SECRET;
    let yaml = format!("webhooks:\n  signingSecret: {secret}\n  allowHosts: ['127.0.0.1']\n{YAML}");
    let s = served(&yaml).await;
    let (key, _) = s.h.key("admin", None, None).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/a2a_client.mjs");
    let script = script.display().to_string();
    let seen = client_report("node", &[&script, &s.base, &key, secret]).await;
    assert!(seen["streamed"].as_u64() >= Some(3), "{seen}");
    assert_eq!(
        (&seen["cancelledMidStream"], &seen["pushed"]),
        (&json!(true), &json!(true)),
        "{seen}"
    );
    s.stop().await;
}

/// A permission the agent asks puts the task in input-required with the
/// request; the caller's next message on the task allows or denies it —
/// the real Claude Code CLI on the Messages API stub.
#[tokio::test]
async fn input_required_is_answered_on_the_task_with_the_real_claude_cli() {
    let stub = anthropic_stub::start();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("work")).unwrap();
    let claude_home = home.path().join("claude-home");
    std::fs::create_dir_all(&claude_home).unwrap();
    let yaml = format!(
        "api:\n  port: 0\nsettings:\n  responseTimeout: 60000\n  spawnTimeout: 60000\n  approvalTimeout: 60000\nteams:\n{}",
        claude_team(
            "guarded",
            &claude_home,
            &stub.url,
            "    grantPermission: ask\n"
        )
    );
    let h = start_in(home, &yaml).await;
    let server = iris_server::start(h.iris.clone(), None).await.unwrap();
    let (key, _) = h.key("admin", None, None).await;
    let base = format!("http://{}", server.addr);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients/a2a_input.py")
        .display()
        .to_string();
    let prompt = r#"MSG<tool Bash {"command":"mkdir -p made-by-agent && echo approved-output","description":"Make a folder"}>"#;
    let seen = client_report(python(), &[&script, &base, &key, prompt]).await;
    assert!(
        seen["allow"].as_str().unwrap().contains("approved-output"),
        "{seen}"
    );
    // Both decisions are Iris approvals, decided by the A2A caller.
    let decided = h
        .call("approval_list", json!({"team": "guarded"}))
        .await
        .unwrap();
    let statuses: Vec<&str> = decided["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_str().unwrap())
        .collect();
    assert!(
        statuses.contains(&"allowed") && statuses.contains(&"denied"),
        "{decided}"
    );
    server.stop().await;
    h.stop().await;
}

/// One A2A call to `team` as `key` (`A2A-Version: 1.0`): its JSON-RPC
/// answer (always HTTP 200).
async fn a2a_call(s: &Served, team: &str, key: &str, body: &Value) -> Value {
    let r = s
        .http
        .post(format!("{}/a2a/{team}", s.base))
        .bearer_auth(key)
        .header("A2A-Version", "1.0")
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn bad_a2a_calls_get_the_protocols_errors() {
    let s = served(YAML).await;
    let (key, _) = s.h.key("admin", None, None).await;
    let call = |team: &str, body: Value| {
        let (s, team, key) = (&s, team.to_owned(), key.clone());
        async move { a2a_call(s, &team, &key, &body).await }
    };
    let rpc = |method: &str, params: Value| json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params});
    let code = |v: &Value| v["error"]["code"].as_i64();
    // The card: 401 without a key, 404 for an unknown team.
    let r = s
        .http
        .get(format!("{}/a2a/demo/.well-known/agent-card.json", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = s
        .http
        .get(format!("{}/a2a/ghost/.well-known/agent-card.json", s.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v = call("ghost", rpc("GetTask", json!({"id": "x"}))).await;
    assert_eq!(code(&v), Some(-32602), "{v}");
    assert_eq!(v["error"]["data"][0]["reason"], "TEAM_NOT_FOUND", "{v}");
    let v = call("demo", rpc("NoSuchMethod", json!({}))).await;
    assert_eq!((code(&v), v["id"].as_i64()), (Some(-32601), Some(7)), "{v}");
    let v = call(
        "demo",
        rpc(
            "SendMessage",
            json!({"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"url": "http://x"}]}}),
        ),
    )
    .await;
    assert_eq!(code(&v), Some(-32005), "a part that is not text: {v}");
    let v = call("demo", json!({"id": 1, "method": "GetTask"})).await;
    assert_eq!(code(&v), Some(-32600), "{v}");
    let v = call("demo", rpc("GetTask", json!({"id": "msg_nope"}))).await;
    assert_eq!(code(&v), Some(-32001), "{v}");
    let v = call("demo", rpc("SendStreamingMessage", json!({}))).await;
    assert_eq!(code(&v), Some(-32602), "no message: {v}");
    for bad in [
        json!({"pageSize": 0}),
        json!({"pageSize": "ten"}),
        json!({"pageToken": "x"}),
    ] {
        let v = call("demo", rpc("ListTasks", bad.clone())).await;
        assert_eq!(code(&v), Some(-32602), "{bad}: {v}");
    }
    let v = call("demo", rpc("GetTask", json!({"id": 42}))).await;
    assert_eq!(code(&v), Some(-32602), "an id that is not a string: {v}");
    let v = call(
        "demo",
        rpc(
            "SendMessage",
            json!({"message": {"messageId": "m", "role": "ROLE_USER", "contextId": 5, "parts": [{"text": "x"}]}}),
        ),
    )
    .await;
    assert_eq!(
        code(&v),
        Some(-32602),
        "a context that is not a string: {v}"
    );
    // An answer on a task that waits for nothing; a decision that is not one.
    let done = s.h.tell("demo", "finished").await.unwrap();
    let answer = |decision: &str| {
        rpc(
            "SendMessage",
            json!({"message": {"messageId": "m2", "role": "ROLE_USER", "taskId": done["messageId"],
                   "parts": [{"data": {"decision": decision}}]}}),
        )
    };
    let v = call("demo", answer("allow")).await;
    assert_eq!(code(&v), Some(-32602), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not waiting for input"),
        "{v}"
    );
    let v = call("demo", answer("maybe")).await;
    assert_eq!(code(&v), Some(-32602), "{v}");
    // A caller who may not cancel is refused before the task's state is
    // looked at (an ended task is -32002 only to one who may).
    let (viewer, _) = s.h.key("viewer", None, None).await;
    let v = a2a_call(
        &s,
        "demo",
        &viewer,
        &rpc("CancelTask", json!({"id": done["messageId"]})),
    )
    .await;
    assert_eq!(v["error"]["data"][0]["reason"], "FORBIDDEN", "{v}");
    let v = call("demo", rpc("CancelTask", json!({"id": done["messageId"]}))).await;
    assert_eq!(code(&v), Some(-32002), "{v}");
    let v = call("demo", rpc("SubscribeToTask", json!({"id": "msg_nope"}))).await;
    assert_eq!(code(&v), Some(-32001), "{v}");
    let v = call("demo", rpc("CreateTaskPushNotificationConfig", json!({}))).await;
    assert_eq!(code(&v), Some(-32602), "{v}");
    let v = call(
        "demo",
        rpc(
            "CreateTaskPushNotificationConfig",
            json!({"taskId": "msg_nope", "url": "https://example.com/hook"}),
        ),
    )
    .await;
    assert_eq!(code(&v), Some(-32001), "{v}");
    let v = call(
        "demo",
        rpc(
            "GetTaskPushNotificationConfig",
            json!({"taskId": "msg_nope", "id": "x"}),
        ),
    )
    .await;
    assert_eq!(code(&v), Some(-32001), "{v}");
    // An inline push config Iris could not send: refused before the send.
    let mut bad = rpc(
        "SendMessage",
        json!({"message": {"messageId": "m-bad", "role": "ROLE_USER", "parts": [{"text": "never sent"}]}}),
    );
    bad["params"]["configuration"] = json!({"taskPushNotificationConfig":
        {"url": "http://127.0.0.1:9/hook", "token": "two\nlines"}});
    let v = call("demo", bad).await;
    assert_eq!(code(&v), Some(-32602), "{v}");
    // Types checked before anything runs: each of these is -32602 and
    // sends nothing.
    let send = |message: Value| rpc("SendMessage", json!({"message": message}));
    let refused = [
        send(
            json!({"messageId": "m", "role": "ROLE_USER", "taskId": 12345, "parts": [{"text": "x"}]}),
        ),
        send(json!({"role": "ROLE_USER", "parts": [{"text": "no message id"}]})),
        send(json!({"messageId": "m", "role": "ROLE_AGENT", "parts": [{"text": "x"}]})),
        send(json!({"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "x", "data": {}}]})),
        rpc(
            "SendMessage",
            json!({"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "x"}]},
                                  "configuration": {"returnImmediately": "yes"}}),
        ),
        rpc(
            "SendMessage",
            json!({"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "x"}]},
                                  "configuration": {"historyLength": -1}}),
        ),
        rpc(
            "SendMessage",
            json!({"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "x"}]},
                                  "configuration": {"taskPushNotificationConfig":
                                      {"url": "https://example.com/h", "id": "x".repeat(129)}}}),
        ),
        rpc(
            "SendMessage",
            json!({"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "x"}]},
                                  "configuration": {"taskPushNotificationConfig":
                                      {"url": "https://example.com/h", "token": 12345}}}),
        ),
        rpc(
            "SendMessage",
            json!({"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "x"}]},
                                  "configuration": {"taskPushNotificationConfig":
                                      {"url": "https://example.com/h", "authentication": {"credentials": "c"}}}}),
        ),
        rpc(
            "SendMessage",
            json!({"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "x"}]},
                                  "configuration": {"taskPushNotificationConfig":
                                      {"url": "https://example.com/h", "extra": 1}}}),
        ),
        send(json!({"messageId": "m", "role": "ROLE_USER", "parts": []})),
        rpc(
            "SendMessage",
            json!({"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "x"}]},
                                  "configuration": {"taskPushNotificationConfig":
                                      {"url": "https://example.com/h", "id": "a\r\nX: y"}}}),
        ),
        rpc("ListTasks", json!({"pageToken": "18446744073709551615"})),
        rpc("ListTasks", json!({"contextId": 5})),
        rpc("ListTasks", json!({"status": "TASK_STATE_WORKING"})),
        rpc("GetTask", json!({"id": "msg_nope", "historyLength": -1})),
        json!({"jsonrpc": "2.0", "id": 7, "method": "GetTask", "params": [1]}),
    ];
    for body in refused {
        let v = call("demo", body.clone()).await;
        assert_eq!(code(&v), Some(-32602), "{body}: {v}");
    }
    // Envelopes that cannot be answered as JSON-RPC asks: nothing runs.
    for body in [
        json!({"jsonrpc": "2.0", "method": "SendMessage", "params": {"message":
            {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "a notification"}]}}}),
        json!({"jsonrpc": "2.0", "id": {"a": 1}, "method": "GetTask", "params": {"id": "x"}}),
        json!({"jsonrpc": "2.0", "id": true, "method": "GetTask", "params": {"id": "x"}}),
        json!({"jsonrpc": "2.0", "id": 1.5, "method": "GetTask", "params": {"id": "x"}}),
        json!([{"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "x"}}]),
    ] {
        let v = call("demo", body.clone()).await;
        assert_eq!(
            (code(&v), &v["id"]),
            (Some(-32600), &Value::Null),
            "{body}: {v}"
        );
        assert_eq!(v["error"]["data"][0]["reason"], "VALIDATION_ERROR", "{v}");
    }
    // A long value named in an error is cut, as in every error body.
    let v = call("demo", rpc("GetTask", json!({"id": "x".repeat(100_000)}))).await;
    assert_eq!(code(&v), Some(-32602), "{}", &v.to_string()[..200]);
    assert!(v.to_string().len() < 4_000, "{}", v.to_string().len());
    // Versions: 1 and 1.<n> are served, anything else is -32009.
    for (version, served) in [
        ("1", true),
        ("1.1", true),
        ("1.999-evil", false),
        ("1.", false),
        ("0.3", false),
    ] {
        let r = s
            .http
            .post(format!("{}/a2a/demo", s.base))
            .bearer_auth(&key)
            .header("A2A-Version", version)
            .json(&rpc("GetTask", json!({"id": "msg_nope"})))
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        let want = if served { -32001 } else { -32009 };
        assert_eq!(code(&v), Some(want), "{version}: {v}");
    }
    // A body over axum's default 2 MiB but within api.maxBodyBytes is
    // read (and its text, over the message limit, refused as such).
    let v = call(
        "demo",
        send(json!({"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "y".repeat(3 << 20)}]})),
    )
    .await;
    assert_eq!(code(&v), Some(-32602), "{}", &v.to_string()[..300]);
    assert!(v.to_string().len() < 4_000, "cut: {}", v.to_string().len());
    // Nothing was half-written: no turn for the refused sends.
    let h =
        s.h.call("message_history", json!({"team": "demo"}))
            .await
            .unwrap();
    assert_eq!(h["pagination"]["total"], 1, "only the one told: {h}");
    let r = s
        .http
        .post(format!("{}/a2a/demo", s.base))
        .bearer_auth(&key)
        .body("{not json")
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(code(&v), Some(-32700), "{v}");
    s.stop().await;
}

/// Input-required is for callers who may decide approvals: to an operator
/// (no `approvals:manage`) a wait stays working — on its stream, in
/// `GetTask` and in the pushes of a config it set — while an
/// administrator's config hears of it; once decided, the operator's stream
/// goes on to the end.
#[tokio::test]
async fn a_caller_who_may_not_decide_sees_the_wait_as_working() {
    let yaml = "webhooks:\n  allowHosts: ['127.0.0.1']\n  retryBase: 50\napi:\n  port: 0\nteams:\n  gated:\n    path: .\n    agent: echo\n    grantPermission: ask\n";
    let s = served(yaml).await;
    let (admin, _) = s.h.key("admin", None, None).await;
    let (operator, _) = s.h.key("operator", None, None).await;
    let (hook, hits) = receiver(0);
    let stream = s
        .http
        .post(format!("{}/a2a/gated", s.base))
        .bearer_auth(&operator)
        .header("A2A-Version", "1.0")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "SendStreamingMessage", "params": {
            "message": {"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "[[ask=Bash]] after"}]},
            "configuration": {"taskPushNotificationConfig": {"url": format!("{hook}/operator")}}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    // The task, waiting, as the administrator sees it.
    let pending = loop {
        let l =
            s.h.call(
                "approval_list",
                json!({"team": "gated", "status": "pending"}),
            )
            .await
            .unwrap();
        if let Some(a) = l["approvals"].get(0) {
            break a.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let task = pending["turnId"].as_str().unwrap().to_owned();
    let get = |key: String| {
        let body = json!({"jsonrpc": "2.0", "id": 2, "method": "GetTask", "params": {"id": task}});
        let s = &s;
        async move { a2a_call(s, "gated", &key, &body).await }
    };
    let state = |v: &Value| v["result"]["status"]["state"].as_str().map(str::to_owned);
    assert_eq!(
        state(&get(operator.clone()).await).as_deref(),
        Some("TASK_STATE_WORKING")
    );
    assert_eq!(
        state(&get(admin.clone()).await).as_deref(),
        Some("TASK_STATE_INPUT_REQUIRED")
    );
    let v = a2a_call(
        &s,
        "gated",
        &admin,
        &json!({"jsonrpc": "2.0", "id": 3, "method": "CreateTaskPushNotificationConfig",
               "params": {"taskId": task, "url": format!("{hook}/admin")}}),
    )
    .await;
    assert!(v["result"]["id"].is_string(), "{v}");
    // Decided by the administrator: the operator's stream goes on.
    let v = a2a_call(
        &s,
        "gated",
        &admin,
        &json!({"jsonrpc": "2.0", "id": 4, "method": "SendMessage", "params": {
            "message": {"messageId": "m2", "role": "ROLE_USER", "taskId": task,
                        "parts": [{"data": {"decision": "allow"}}]}}}),
    )
    .await;
    assert_eq!(
        state(&json!({"result": v["result"]["task"]})).as_deref(),
        Some("TASK_STATE_COMPLETED"),
        "{v}"
    );
    let text = tokio::time::timeout(Duration::from_secs(20), stream.text())
        .await
        .unwrap()
        .unwrap();
    assert!(text.contains("TASK_STATE_COMPLETED"), "{text}");
    assert!(!text.contains("INPUT_REQUIRED"), "{text}");
    // Pushes: the administrator's config heard of the wait (set while the
    // task waited), the operator's never did; both heard of the end.
    let states = |path: &str| -> Vec<String> {
        hits.lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, b)| {
                b["task"]["status"]["state"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(states("/admin").iter().any(|s| s == "TASK_STATE_COMPLETED")
        && states("/operator")
            .iter()
            .any(|s| s == "TASK_STATE_COMPLETED"))
    {
        assert!(Instant::now() < deadline, "{:?}", hits.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        states("/admin")
            .iter()
            .any(|s| s == "TASK_STATE_INPUT_REQUIRED"),
        "{:?}",
        states("/admin")
    );
    assert!(
        !states("/operator")
            .iter()
            .any(|s| s == "TASK_STATE_INPUT_REQUIRED"),
        "{:?}",
        states("/operator")
    );
    s.stop().await;
}
