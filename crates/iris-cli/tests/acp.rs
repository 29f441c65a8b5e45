//! The `acp` driver with the echo agent's ACP mode (`agent-echo --acp`, a
//! real child process speaking the Agent Client Protocol): multi-turn on
//! one process, streamed chunks, tool calls with their results, approvals
//! allowed and denied, cancel, a killed agent, and an agent that breaks the
//! protocol, hangs in `initialize`, or dies mid-turn.

mod common;

use std::time::Duration;

use common::*;
use iris_core::ErrorKind;
use iris_core::bus::EventKind;
use serde_json::{Value, json};

/// Teams on the echo agent's ACP mode: `acp` (`grantPermission: ask`),
/// `mute` (never answers `initialize`).
fn config(settings: &str) -> String {
    let bin = iris_bin();
    format!(
        "settings:\n{settings}\nagentProfiles:\n  echo-acp:\n    agent: acp\n    command: {bin}\n    args: [agent-echo, --acp]\n    grantPermission: ask\n  \
         mute-acp:\n    agent: acp\n    command: {bin}\n    args: [agent-echo, --acp]\n    env:\n      IRIS_ECHO_ACP_SILENT_INIT: '1'\n\
         teams:\n  acp:\n    path: .\n    profile: echo-acp\n  mute:\n    path: .\n    profile: mute-acp\n  \
         trusting:\n    path: .\n    profile: echo-acp\n    grantPermission: 'yes'\n  careful:\n    path: .\n    profile: echo-acp\n    grantPermission: 'no'\n",
        bin = bin.display()
    )
}

#[tokio::test]
async fn an_acp_agent_answers_streams_and_keeps_one_process() {
    let h = start(&config("  maxProcesses: 4")).await;
    let mut team = h.iris.watch("team:acp");
    let first = h.tell("acp", "hello over acp").await.unwrap();
    assert_eq!(first["response"], "hello over acp", "{first}");
    assert_eq!(first["status"], "completed");
    assert!(
        first["costUsd"].is_number(),
        "usage and cost reported: {first}"
    );
    assert!(first["usage"]["input_tokens"].is_u64(), "{first}");
    let pid = pids(&h, "acp");
    let second = h.tell("acp", "one two three [[delay=20]]").await.unwrap();
    assert_eq!(second["response"], "one two three");
    assert_eq!(second["sessionId"], first["sessionId"]);
    assert_eq!(pids(&h, "acp"), pid, "multi-turn on one process");
    // Its chunks were streamed, each word one.
    let mut chunks = 0;
    while chunks < 3 {
        let e = next_event(&mut team).await;
        if e.kind == EventKind::Chunk && e.turn_id.as_deref() == second["messageId"].as_str() {
            chunks += 1;
        }
    }
    // A tool call and its result, in the turn's record and stream.
    let r = h.tell("acp", "look [[tool=Read]]").await.unwrap();
    let tool = &r["toolUses"][0];
    assert_eq!(
        (&tool["name"], &tool["output"], &tool["isError"]),
        (&json!("Read"), &json!("Read done"), &json!(false)),
        "{r}"
    );
    // The agent's own session id is what Iris resumes with: recorded.
    let sid = r["sessionId"].as_str().unwrap().to_owned();
    h.call("get_message", json!({"messageId": r["messageId"]}))
        .await
        .unwrap();
    let agent_session = h.iris.store().agent_session(&sid).await.unwrap();
    assert!(
        agent_session.as_deref().is_some_and(|s| s != sid),
        "the agent named its session"
    );
    // After a restart the conversation goes on in the agent's session
    // (`session/load`, which this agent offers), not a new one.
    let home = h.stop().await;
    let h = start_in(home, &config("  maxProcesses: 4")).await;
    let again = h.tell("acp", "still there").await.unwrap();
    assert_eq!(again["sessionId"], sid.as_str());
    assert_eq!(again["response"], "still there");
    // (Reading the message waits for what the recorder holds.)
    h.call("get_message", json!({"messageId": again["messageId"]}))
        .await
        .unwrap();
    let events = h
        .iris
        .store()
        .turn_events_of_kind(again["messageId"].as_str().unwrap(), "system")
        .await
        .unwrap();
    assert_eq!(
        events[0].data["session_id"],
        json!(agent_session),
        "{events:?}"
    );
    assert_eq!(events[0].data["resumed"], true, "{events:?}");
    h.stop().await;
}

#[tokio::test]
async fn permission_requests_become_approvals_allowed_or_denied() {
    let h = start(&config("  maxProcesses: 4")).await;
    // (ACP's answer to a permission request is an option, without a
    // reason: the agent hears only that it was rejected.)
    for (verdict, output) in [
        ("allow", "Bash done"),
        ("deny", "denied: the client rejected it"),
    ] {
        let id = queue(&h, "acp", "run [[ask=Bash]]").await;
        let approval = pending_approval(&h, 10).await;
        assert_eq!(approval["toolName"], "Bash", "{approval}");
        h.call(
            "approval_decide",
            json!({"approvalId": approval["id"], "decision": verdict, "reason": "not today"}),
        )
        .await
        .unwrap();
        let done = ended(&h, &id).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["toolUses"][0]["output"], output, "{verdict}: {done}");
    }
    // `grantPermission: yes` and `no` answer at once, recorded alike.
    for (team, output) in [
        ("trusting", "Bash done"),
        ("careful", "denied: the client rejected it"),
    ] {
        let done = h.tell(team, "run [[ask=Bash]]").await.unwrap();
        assert_eq!(done["toolUses"][0]["output"], output, "{team}: {done}");
        let m = h
            .call("get_message", json!({"messageId": done["messageId"]}))
            .await
            .unwrap();
        assert_eq!(m["permissions"][0]["toolName"], "Bash", "{team}: {m}");
    }
    let left = h
        .call("approval_list", json!({"status": "pending"}))
        .await
        .unwrap();
    assert_eq!(left["approvals"], json!([]), "nothing left waiting");
    h.stop().await;
}

#[tokio::test]
async fn cancel_kill_and_broken_agents_end_the_turn_and_the_next_message_works() {
    let h = start(&config(
        "  maxProcesses: 4\n  responseTimeout: 1500\n  spawnTimeout: 2000",
    ))
    .await;
    // Cancel mid-stream: the prompt is cancelled over the protocol.
    let id = queue(&h, "acp", "a b c d e f g h [[delay=300]]").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.call("session_cancel", json!({"toTeam": "acp"}))
        .await
        .unwrap();
    let done = ended(&h, &id).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    let pid = pids(&h, "acp");
    assert_eq!(
        h.tell("acp", "after cancel").await.unwrap()["response"],
        "after cancel"
    );
    assert_eq!(pids(&h, "acp"), pid, "a cancel keeps the process");

    // SIGKILL: the next message gets a new process.
    for p in &pid {
        unsafe { libc::kill(*p as i32, libc::SIGKILL) };
    }
    let e = h.tell("acp", "into the void [[delay=50]]").await;
    if let Ok(r) = &e {
        // The kill was seen before the message was sent: a new process.
        assert_eq!(r["response"], "into the void");
    }
    assert_eq!(
        h.tell("acp", "alive again").await.unwrap()["response"],
        "alive again"
    );
    assert_ne!(pids(&h, "acp"), pid);

    // Dies mid-turn; breaks the protocol; writes garbage: each turn fails
    // with a reason, the process is replaced, the next message works.
    for (msg, says) in [
        ("x [[crash]]", "exit"),
        ("x [[badrpc]]", "JSON-RPC"),
        ("x [[garbage]]", "not JSON"),
    ] {
        let e = h.tell("acp", msg).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Process, "{msg}: {e:?}");
        assert!(e.message.contains(says), "{msg}: {e:?}");
        assert_eq!(
            h.tell("acp", "fine").await.unwrap()["response"],
            "fine",
            "after {msg}"
        );
    }

    // Hangs mid-turn: the silence timeout ends it, the next message works.
    let e = h.tell("acp", "x [[hang]]").await.unwrap_err();
    assert_eq!(e.details.as_ref().unwrap()["status"], "timed_out", "{e:?}");
    assert_eq!(
        h.tell("acp", "fine").await.unwrap()["response"],
        "fine",
        "after a hang"
    );

    // Never answers `initialize`: the turn fails when the start times
    // out, and its process is gone.
    let e = h.tell("mute", "hello?").await.unwrap_err();
    assert!(
        matches!(e.kind, ErrorKind::Timeout | ErrorKind::Process),
        "{e:?}"
    );
    assert!(
        e.message.contains("start") || e.message.contains("respond"),
        "{e:?}"
    );
    assert!(pids(&h, "mute").is_empty(), "the silent agent was stopped");
    h.stop().await;
}

/// Over SSE and the `/api/v1/stream` WebSocket, an ACP turn is shown as a
/// Claude turn is: its plan, its tool's use and result, its text, its end.
#[tokio::test]
async fn an_acp_turn_streams_its_plan_and_tools_over_sse_and_websocket() {
    let h = start(&format!(
        "api:\n  port: 0\n  requireAuth: false\n{}",
        config("  maxProcesses: 4")
    ))
    .await;
    let server = iris_server::start(h.iris.clone(), None).await.unwrap();
    let message = "two words [[plan=read|answer]] [[tool=Read]]";
    let body = stream_text(server.addr, "acp", message).await;
    let mut events = Vec::new();
    let mut data = Vec::new();
    for line in body.lines() {
        if let Some(name) = line.strip_prefix("event: ") {
            events.push(name.to_owned());
        } else if let Some(d) = line.strip_prefix("data: ") {
            data.push(serde_json::from_str::<Value>(d).unwrap());
        }
    }
    events.dedup();
    assert_eq!(
        events,
        [
            "start",
            "plan",
            "tool_use",
            "tool_result",
            "chunk",
            "plan",
            "complete"
        ],
        "{body}"
    );
    let plan = &data[1];
    assert_eq!(
        (
            &plan["entries"][0]["content"],
            &plan["entries"][0]["status"]
        ),
        (&json!("read"), &json!("pending")),
        "{plan}"
    );
    assert_eq!(data.last().unwrap()["response"], "two words");

    let mut ws = ws_connect(&format!("ws://{}/api/v1/stream", server.addr), None).await;
    send(
        &mut ws,
        json!({"type": "message", "team": "acp", "message": message}),
    )
    .await;
    let mut kinds = Vec::new();
    loop {
        let v = recv(&mut ws).await;
        let kind = v["type"].as_str().unwrap().to_owned();
        if kind == "plan" {
            assert_eq!(v["entries"].as_array().unwrap().len(), 2, "{v}");
        }
        if kinds.last() != Some(&kind) {
            kinds.push(kind.clone());
        }
        if kind == "complete" || kind == "error" {
            break;
        }
    }
    assert_eq!(
        kinds,
        [
            "start",
            "plan",
            "tool_use",
            "tool_result",
            "chunk",
            "plan",
            "complete"
        ]
    );
    server.stop().await;
    h.stop().await;
}

/// A permission nobody answers: the approval expires, the agent hears it
/// rejected, the turn ends and the next message works.
#[tokio::test]
async fn a_permission_nobody_answers_expires_and_the_turn_ends() {
    let h = start(&config("  maxProcesses: 4\n  approvalTimeout: 400")).await;
    let done = h.tell("acp", "run [[ask=Bash]]").await.unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["toolUses"][0]["output"], "denied: the client rejected it",
        "{done}"
    );
    let expired = h
        .call("approval_list", json!({"status": "expired"}))
        .await
        .unwrap();
    assert_eq!(
        expired["approvals"].as_array().map(Vec::len),
        Some(1),
        "{expired}"
    );
    assert_eq!(h.tell("acp", "next").await.unwrap()["response"], "next");
    h.stop().await;
}
