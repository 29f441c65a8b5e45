//! Team-to-team messaging on the real Claude Code CLI (the pinned one)
//! against the local Messages API stub: a claude team's agent gets Iris as
//! its `iris` MCP server with a credential of its own team, and calls
//! `send_message` to another team; `canMessage`, cycles, the hop limit and
//! `fromTeam` hold; an asynchronous message with `notify` comes back into
//! the asking conversation.

#[path = "common/anthropic_stub.rs"]
#[allow(dead_code)]
mod anthropic_stub;
mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

struct Teams {
    h: Harness,
    server: iris_server::Running,
    _stub: anthropic_stub::Stub,
}

/// An Iris serving HTTP (so claude teams get its `/mcp`) with the claude
/// teams named in `claude` (each with its extra lines) and an echo team `e`.
async fn teams(settings: &str, claude: &[(&str, &str)]) -> Teams {
    teams_with(settings, "60000", claude).await
}

/// [`teams`] with `settings.responseTimeout` (ms).
async fn teams_with(settings: &str, response_timeout: &str, claude: &[(&str, &str)]) -> Teams {
    let stub = anthropic_stub::start();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("work")).unwrap();
    let mut yaml = format!(
        "api:\n  port: 0\nsettings:\n  responseTimeout: {response_timeout}\n  spawnTimeout: 60000\n  shutdownGrace: 2000\n{settings}teams:\n  e:\n    path: ./work\n    agent: echo\n"
    );
    for (name, extra) in claude {
        let claude_home = home.path().join(format!("claude-{name}"));
        std::fs::create_dir_all(&claude_home).unwrap();
        yaml += &claude_team(name, &claude_home, &stub.url, extra);
    }
    let h = start_in(home, &yaml).await;
    let server = iris_server::start(h.iris.clone(), None).await.unwrap();
    Teams {
        h,
        server,
        _stub: stub,
    }
}

impl Teams {
    /// Ask claude team `team` to call Iris's `send_message` with `args`;
    /// its final answer (`tool said: <the tool's result>`).
    async fn relay(&self, team: &str, args: Value) -> String {
        // A message that is itself a marker (for a claude team down the
        // line) keeps its brackets as JSON escapes inside this one.
        let args = args
            .to_string()
            .replace('<', "\\u003c")
            .replace('>', "\\u003e");
        let prompt = format!("MSG<tool mcp__iris__send_message {args}>");
        let r = self.h.tell(team, &prompt).await.unwrap();
        let answer = r["response"].as_str().unwrap().to_owned();
        assert!(answer.starts_with("tool said: "), "{r}");
        answer
    }

    async fn stop(self) {
        self.server.stop().await;
        self.h.stop().await;
    }
}

#[tokio::test]
async fn a_claude_team_asks_another_team_through_iris_and_gets_its_answer() {
    let t = teams("", &[("a", "")]).await;
    let answer = t
        .relay(
            "a",
            json!({"toTeam": "e", "message": "ping from a", "timeout": 0}),
        )
        .await;
    assert!(answer.contains("\"response\":\"ping from a\""), "{answer}");
    assert!(
        answer.contains("\"from\":\"a\""),
        "the call came as team a: {answer}"
    );
    // e's conversation shows a as the caller, and the chain a → e.
    let report =
        t.h.call("session_report", json!({"toTeam": "e", "fromTeam": "a"}))
            .await
            .unwrap();
    let m = &report["messages"][0];
    assert_eq!(m["request"], "ping from a", "{report}");
    assert_eq!(m["from"], "a");
    assert_eq!(m["chain"], json!(["a", "e"]));
    // The credential lives as long as a's process.
    assert_eq!(t.h.iris.auth().agents.count(), 1);
    t.h.call("team_sleep", json!({"team": "a"})).await.unwrap();
    assert_eq!(
        t.h.iris.auth().agents.count(),
        0,
        "revoked with the process"
    );
    t.stop().await;
}

#[tokio::test]
async fn can_message_cycles_hops_and_from_team_are_enforced() {
    let t = teams(
        "  maxHops: 1\n",
        &[
            ("a", "    canMessage: [b, e]\n"),
            ("b", ""),
            ("c", "    canMessage: [e]\n"),
        ],
    )
    .await;
    // Outside canMessage: refused, and audited.
    let answer = t
        .relay(
            "c",
            json!({"toTeam": "a", "message": "hello", "timeout": 0}),
        )
        .await;
    assert!(
        answer.contains("FORBIDDEN") && answer.contains("canMessage"),
        "{answer}"
    );
    let audit =
        t.h.call("audit_list", json!({"action": "permission.denied"}))
            .await
            .unwrap();
    assert!(audit.to_string().contains("canMessage"), "{audit}");
    // Claiming another team: refused.
    let answer = t
        .relay(
            "a",
            json!({"toTeam": "e", "message": "x", "fromTeam": "b", "timeout": 0}),
        )
        .await;
    assert!(answer.contains("cannot speak as"), "{answer}");
    // a → b → a: b's agent is asked to message a back; refused as a cycle,
    // and that refusal is b's answer to a.
    let back = r#"MSG<tool mcp__iris__send_message {"toTeam":"a","message":"back","timeout":0}>"#;
    let answer = t
        .relay("a", json!({"toTeam": "b", "message": back, "timeout": 0}))
        .await;
    assert!(answer.contains("a cycle: a → b → a"), "{answer}");
    // a → b → e is two hops; maxHops is 1.
    let onward = r#"MSG<tool mcp__iris__send_message {"toTeam":"e","message":"far","timeout":0}>"#;
    let answer = t
        .relay("a", json!({"toTeam": "b", "message": onward, "timeout": 0}))
        .await;
    assert!(answer.contains("more than 1 hops"), "{answer}");
    t.stop().await;
}

#[tokio::test]
async fn an_async_message_with_notify_comes_back_into_the_asking_conversation() {
    let t = teams("", &[("a", "")]).await;
    let answer = t
        .relay(
            "a",
            json!({"toTeam": "e", "message": "[[delay=300]] later", "timeout": -1, "notify": true}),
        )
        .await;
    assert!(answer.contains("\"async\":true"), "{answer}");
    let id = answer
        .split("\"messageId\":\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    // Its delivery is readable as it goes.
    let m =
        t.h.call("get_message", json!({"messageId": id}))
            .await
            .unwrap();
    assert!(
        ["queued", "running", "completed"].contains(&m["status"].as_str().unwrap()),
        "{m}"
    );
    // e's answer arrives in a's conversation as a new message.
    let mut found = None;
    for _ in 0..100 {
        let report =
            t.h.call("session_report", json!({"toTeam": "a"}))
                .await
                .unwrap();
        found = report["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["kind"] == "notification" && m["status"] == "completed")
            .cloned();
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let found = found.expect("the answer came back into a's conversation");
    let text = found["request"].as_str().unwrap();
    assert!(
        text.contains("Team `e` answered") && text.contains("later"),
        "{text}"
    );
    assert!(text.contains(&id), "{text}");
    t.stop().await;
}

#[tokio::test]
async fn a_team_waiting_on_another_fails_fast_when_the_pool_has_no_room() {
    // One process in all: a's own, busy with the turn that asks e.
    let t = teams("  maxProcesses: 1\n", &[("a", "")]).await;
    let started = std::time::Instant::now();
    let answer = t
        .relay(
            "a",
            json!({"toTeam": "e", "message": "room?", "timeout": 0}),
        )
        .await;
    assert!(answer.contains("POOL_EXHAUSTED"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "failed fast, no waiting for the slot a holds"
    );
    t.stop().await;
}

#[tokio::test]
async fn a_team_waiting_on_another_is_not_timed_out_for_silence_nor_given_foreign_conversations() {
    // a writes nothing while e takes longer than a's silence timeout.
    let t = teams_with("", "1500", &[("a", "")]).await;
    let cfg_note = "the silence timeout is 1.5 s; e writes a word every 0.6 s, 3 s in all";
    let answer = t
        .relay(
            "a",
            json!({"toTeam": "e", "message": "[[delay=600]] a slow answer in words", "timeout": 0}),
        )
        .await;
    assert!(
        answer.contains("a slow answer in words"),
        "{cfg_note}: {answer}"
    );
    // Someone else's conversation with e, named by id: not found.
    let theirs = t.h.tell("e", "private").await.unwrap();
    let answer = t
        .relay(
            "a",
            json!({"toTeam": "e", "message": "sneak", "sessionId": theirs["sessionId"], "timeout": 0}),
        )
        .await;
    assert!(answer.contains("SESSION_NOT_FOUND"), "{answer}");
    t.stop().await;
}
