//! The real Claude Code CLI (npm `@anthropic-ai/claude-code`, installed by
//! `scripts/test.sh`) driven by Iris against a local stub of the Anthropic
//! Messages API. Nothing leaves the machine.

#[path = "common/anthropic_stub.rs"]
mod anthropic_stub;
mod common;

use std::time::Duration;

use common::*;
use iris_core::ErrorKind;
use iris_core::bus::EventKind;
use serde_json::json;

struct Setup {
    h: Harness,
    stub: anthropic_stub::Stub,
}

async fn start_claude() -> Setup {
    let stub = anthropic_stub::start();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("claude-home")).unwrap();
    std::fs::create_dir_all(home.path().join("work")).unwrap();
    let yaml = format!(
        "settings:\n  responseTimeout: 60000\n  spawnTimeout: 60000\n  shutdownGrace: 2000\nteams:\n{}",
        claude_team("cc", &home.path().join("claude-home"), &stub.url, "")
    );
    Setup {
        h: start_in(home, &yaml).await,
        stub,
    }
}

#[tokio::test]
async fn a_multi_turn_conversation_runs_on_one_process() {
    let s = start_claude().await;
    let one = s.h.tell("cc", "MSG<first>").await.unwrap();
    assert_eq!(one["response"].as_str().unwrap().trim(), "reply 1: first");
    assert!(one["usage"].is_object(), "{one}");
    let pid = pids(&s.h, "cc");
    let two = s.h.tell("cc", "MSG<second>").await.unwrap();
    assert_eq!(
        two["response"].as_str().unwrap().trim(),
        "reply 2: second",
        "the agent kept the context"
    );
    assert_eq!(pids(&s.h, "cc"), pid, "same process");
    assert_eq!(one["sessionId"], two["sessionId"]);
    assert!(
        s.stub.requests.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "both turns reached the stub API"
    );
    s.h.stop().await;
}

#[tokio::test]
async fn partial_chunks_arrive_before_the_result() {
    let s = start_claude().await;
    let q =
        s.h.call(
            "quick_message",
            json!({"toTeam": "cc", "message": "MSG<paced several words in this answer>"}),
        )
        .await
        .unwrap();
    let mut sub =
        s.h.iris
            .watch(&format!("session:{}", q["sessionId"].as_str().unwrap()));
    let mut chunks = 0;
    let mut text = String::new();
    let mut first_chunk = None;
    loop {
        let e = next_event(&mut sub).await;
        match e.kind {
            EventKind::Chunk => {
                chunks += 1;
                text.push_str(e.data["text"].as_str().unwrap());
                first_chunk.get_or_insert_with(std::time::Instant::now);
            }
            EventKind::TurnCompleted => {
                assert_eq!(e.data["status"], "completed", "{:?}", e.data);
                assert_eq!(e.data["response"].as_str().unwrap().trim(), text.trim());
                break;
            }
            _ => {}
        }
    }
    let ahead = first_chunk.expect("a chunk").elapsed();
    assert!(chunks >= 3, "partial deltas before the result: {chunks}");
    assert!(
        ahead > Duration::from_millis(100),
        "the first chunk came {ahead:?} before the result"
    );
    s.h.stop().await;
}

#[tokio::test]
async fn a_killed_process_is_resumed_with_its_conversation() {
    let s = start_claude().await;
    let one = s.h.tell("cc", "MSG<before the kill>").await.unwrap();
    let pid = kill_first_process(&s.h, "cc").await;
    let two = s.h.tell("cc", "MSG<after the kill>").await.unwrap();
    assert_eq!(two["sessionId"], one["sessionId"]);
    assert_eq!(
        two["response"].as_str().unwrap().trim(),
        "reply 2: after the kill",
        "resumed with the earlier turn in context"
    );
    assert_ne!(pids(&s.h, "cc")[0], pid);
    s.h.stop().await;
}

/// The transcript store: a conversation whose agent lost its files (a
/// new or wiped home) resumes from the copy Iris saved after each turn,
/// written back where Claude Code looks for it.
#[tokio::test]
async fn a_conversation_whose_agent_lost_its_files_resumes_from_the_store() {
    let s = start_claude().await;
    let one = s.h.tell("cc", "MSG<remember this>").await.unwrap();
    let sid = one["sessionId"].as_str().unwrap().to_owned();
    // Saved once the turn's answer is out.
    let mut saved = None;
    for _ in 0..100 {
        saved = s.h.iris.store().transcript(&sid).await.unwrap();
        if saved.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let listing = walk(&s.h.home.path().join("claude-home/.claude/projects"));
    let saved = saved.unwrap_or_else(|| panic!("saved after the turn; files: {listing:?}"));
    assert!(saved.body.contains("remember this"), "{}", saved.body);
    kill_first_process(&s.h, "cc").await;
    let projects = s.h.home.path().join("claude-home/.claude/projects");
    assert!(projects.is_dir());
    std::fs::remove_dir_all(&projects).unwrap();
    let two = s.h.tell("cc", "MSG<after the wipe>").await.unwrap();
    assert_eq!(two["sessionId"], one["sessionId"]);
    assert_eq!(
        two["response"].as_str().unwrap().trim(),
        "reply 2: after the wipe",
        "resumed with the earlier turn: {two}"
    );
    assert!(two.get("notice").is_none(), "not started afresh: {two}");
    s.h.stop().await;
}

#[tokio::test]
async fn a_running_turn_is_interrupted_through_the_control_protocol() {
    let s = start_claude().await;
    let q =
        s.h.call(
            "quick_message",
            json!({"toTeam": "cc", "message": "MSG<slow answer>"}),
        )
        .await
        .unwrap();
    let mut sub =
        s.h.iris
            .watch(&format!("session:{}", q["sessionId"].as_str().unwrap()));
    loop {
        if next_event(&mut sub).await.kind == EventKind::Chunk {
            break;
        }
    }
    let pid = pids(&s.h, "cc")[0];
    let c =
        s.h.call("session_cancel", json!({"toTeam": "cc"}))
            .await
            .unwrap();
    assert_eq!(c["cancelled"], true);
    let started = std::time::Instant::now();
    loop {
        let e = next_event(&mut sub).await;
        if e.kind == EventKind::TurnCompleted {
            assert_eq!(e.data["status"], "cancelled");
            break;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "interrupt took {:?}",
        started.elapsed()
    );
    assert_eq!(pids(&s.h, "cc"), [pid], "interrupted, not killed");
    let next = s.h.tell("cc", "MSG<after interrupt>").await.unwrap();
    assert!(
        next["response"]
            .as_str()
            .unwrap()
            .contains("after interrupt")
    );
    s.h.stop().await;
}

#[tokio::test]
async fn an_api_error_becomes_a_failed_turn_with_the_reason() {
    let s = start_claude().await;
    let e = s.h.tell("cc", "MSG<api-error please>").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Process);
    assert!(e.message.contains("stub refuses"), "{e:?}");
    let d = e.details.unwrap();
    assert_eq!(d["status"], "failed");
    s.h.stop().await;
}

#[tokio::test]
async fn a_fork_continues_from_the_original_conversation_independently() {
    let s = start_claude().await;
    let orig = s.h.tell("cc", "MSG<shared start>").await.unwrap();
    let f =
        s.h.call("session_fork", json!({"toTeam": "cc"}))
            .await
            .unwrap();
    let fid = f["sessionId"].as_str().unwrap();
    let forked =
        s.h.call(
            "send_message",
            json!({"toTeam": "cc", "message": "MSG<on the fork>", "sessionId": fid, "timeout": 0}),
        )
        .await
        .unwrap();
    assert_eq!(forked["sessionId"], fid);
    assert_eq!(
        forked["response"].as_str().unwrap().trim(),
        "reply 2: on the fork",
        "the fork has the history"
    );
    let back = s.h.tell("cc", "MSG<on the original>").await.unwrap();
    assert_eq!(back["sessionId"], orig["sessionId"]);
    assert_eq!(
        back["response"].as_str().unwrap().trim(),
        "reply 2: on the original",
        "the original did not see the fork's message"
    );
    s.h.stop().await;
}

#[tokio::test]
async fn a_lost_conversation_is_started_afresh_once_and_the_caller_is_told() {
    let s = start_claude().await;
    let one = s.h.tell("cc", "MSG<first>").await.unwrap();
    assert_eq!(one["response"].as_str().unwrap().trim(), "reply 1: first");
    assert!(one.get("notice").is_none(), "{one}");
    s.h.call("team_sleep", json!({"team": "cc"})).await.unwrap();
    // The agent forgets the conversation (its transcripts are gone, the
    // copy in the database too), so the next spawn's `--resume` finds
    // nothing.
    std::fs::remove_dir_all(s.h.home.path().join("claude-home/.claude/projects")).unwrap();
    let sid = one["sessionId"].as_str().unwrap();
    s.h.iris.store().delete_transcript(sid).await.unwrap();
    let two = s.h.tell("cc", "MSG<second>").await.unwrap();
    assert_eq!(two["status"], "completed", "{two}");
    assert_eq!(
        two["response"].as_str().unwrap().trim(),
        "reply 1: second",
        "a fresh conversation"
    );
    assert!(
        two["notice"]
            .as_str()
            .unwrap()
            .contains("started it afresh"),
        "{two}"
    );
    assert_eq!(two["sessionId"], one["sessionId"], "under the same id");
    let report =
        s.h.call("session_report", json!({"toTeam": "cc"}))
            .await
            .unwrap();
    assert!(report["restartedAt"].is_i64(), "{report}");
    // From then on the new conversation is resumed as usual.
    s.h.call("team_sleep", json!({"team": "cc"})).await.unwrap();
    let three = s.h.tell("cc", "MSG<third>").await.unwrap();
    assert_eq!(three["response"].as_str().unwrap().trim(), "reply 2: third");
    assert!(three.get("notice").is_none(), "{three}");
    s.h.stop().await;
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
