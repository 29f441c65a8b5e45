//! Messages to an echo team: answers, streaming, tool uses, errors, timeouts.

mod common;

use common::*;
use iris_core::ErrorKind;
use iris_core::bus::EventKind;
use serde_json::json;

#[tokio::test]
async fn a_message_gets_its_answer_and_turns_share_one_process() {
    let h = start(&echo_config("  maxProcesses: 4")).await;
    let first = h.tell("demo", "hello there").await.unwrap();
    assert_eq!(first["response"], "hello there");
    assert_eq!(first["status"], "completed");
    assert_eq!(first["to"], "demo");
    assert_eq!(first["from"], "iris");
    assert!(first["messageId"].as_str().unwrap().starts_with("msg_"));
    let pid = pids(&h, "demo");
    let second = h.tell("demo", "again").await.unwrap();
    assert_eq!(second["response"], "again");
    assert_eq!(
        second["sessionId"], first["sessionId"],
        "same (from, to) pair, same session"
    );
    assert_eq!(pids(&h, "demo"), pid, "multi-turn on one process");
    assert_eq!(pid.len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn chunks_arrive_before_the_result_in_order() {
    let h = start(&echo_config("  maxProcesses: 4")).await;
    let msg = "one two three four [[delay=20]]";
    let quick = h
        .call("quick_message", json!({"toTeam": "demo", "message": msg}))
        .await
        .unwrap();
    assert_eq!(quick["async"], true);
    let mut sub = h
        .iris
        .watch(&format!("session:{}", quick["sessionId"].as_str().unwrap()));
    let mut text = String::new();
    let mut chunks = 0;
    loop {
        let e = next_event(&mut sub).await;
        match e.kind {
            EventKind::Chunk => {
                chunks += 1;
                text.push_str(e.data["text"].as_str().unwrap());
            }
            EventKind::TurnCompleted => {
                assert_eq!(e.data["status"], "completed");
                assert_eq!(e.data["response"], "one two three four");
                break;
            }
            _ => {}
        }
    }
    assert_eq!(chunks, 4, "one chunk per word");
    assert_eq!(text, "one two three four");
    h.stop().await;
}

#[tokio::test]
async fn tool_uses_are_reported_and_published() {
    let h = start(&echo_config("  maxProcesses: 4")).await;
    let mut team = h.iris.watch("team:demo");
    let r = h
        .tell("demo", "look [[tool=Read]][[tool=Bash]]")
        .await
        .unwrap();
    let names: Vec<&str> = r["toolUses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Read", "Bash"]);
    // Each use keeps its result: output, error flag, time taken.
    for t in r["toolUses"].as_array().unwrap() {
        assert_eq!(t["output"], format!("{} done", t["name"].as_str().unwrap()));
        assert_eq!(t["isError"], false);
        assert!(t["durationMs"].is_u64(), "{t}");
    }
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let e = next_event(&mut team).await;
        match e.kind {
            EventKind::ToolUse => seen.push(e.data["tool"].as_str().unwrap().to_owned()),
            EventKind::ToolResult => seen.push(e.data["output"].as_str().unwrap().to_owned()),
            _ => {}
        }
    }
    assert_eq!(seen, ["Read", "Read done", "Bash", "Bash done"]);
    h.stop().await;
}

#[tokio::test]
async fn an_error_result_is_a_failed_turn_with_its_reason() {
    let h = start(&echo_config("  maxProcesses: 4")).await;
    let e = h
        .tell("demo", "[[error=the model refused]]")
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Process);
    assert!(e.message.contains("the model refused"), "{e:?}");
    let id = e.details.as_ref().unwrap()["messageId"]
        .as_str()
        .unwrap()
        .to_owned();
    let rec = h
        .call("get_message", json!({"messageId": id}))
        .await
        .unwrap();
    assert_eq!(rec["status"], "failed");
    assert_eq!(rec["error"], "the model refused");
    // The process is still good for the next message.
    assert_eq!(h.tell("demo", "fine").await.unwrap()["response"], "fine");
    h.stop().await;
}

#[tokio::test]
async fn a_callers_timeout_returns_the_partial_answer_and_the_turn_goes_on() {
    let h = start(&echo_config("  maxProcesses: 4")).await;
    let e = h
        .call(
            "send_message",
            json!({"toTeam": "demo", "message": "a b c d e f g h [[delay=60]]", "timeout": 250}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout);
    let d = e.details.unwrap();
    let partial = d["partialResponse"].as_str().unwrap();
    assert!(
        !partial.is_empty() && partial.len() < "a b c d e f g h".len(),
        "partial: {partial:?}"
    );
    let id = d["messageId"].as_str().unwrap();
    let mut status = String::new();
    for _ in 0..100 {
        let rec = h
            .call("get_message", json!({"messageId": id}))
            .await
            .unwrap();
        status = rec["status"].as_str().unwrap().to_owned();
        if status == "completed" {
            assert_eq!(rec["response"], "a b c d e f g h");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        status, "completed",
        "the turn went on after the caller's timeout"
    );
    h.stop().await;
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let h = start(&echo_config("  maxProcesses: 4")).await;
    let e = h.tell("nope", "x").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::TeamNotFound);
    let e = h
        .call("send_message", json!({"toTeam": "demo", "message": ""}))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Validation);
    assert!(e.details.unwrap()["fields"].get("message").is_some());
    for bad in [-2, 86_400_001] {
        let e = h
            .call(
                "send_message",
                json!({"toTeam": "demo", "message": "x", "timeout": bad}),
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Validation);
        assert!(e.details.unwrap()["fields"].get("timeout").is_some());
    }
    let e = h
        .call("send_message", json!({"toTeam": "demo", "message": 5}))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Validation);
    let e = h.call("no_such_op", json!({})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::MethodNotFound);
    let e = h
        .call(
            "send_message",
            json!({"toTeam": "demo", "message": "x", "sessionId": "not-a-uuid"}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Validation);
    let e = h
        .call(
            "ask_message",
            json!({"toTeam": "demo", "message": "x", "timeout": -1}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Validation);
    // Nothing was half-written: no session exists for the refused calls.
    let r = h.call("message_history", json!({})).await.unwrap();
    assert_eq!(r["pagination"]["total"], 0);
    h.stop().await;
}

#[tokio::test]
async fn history_filters_and_pages() {
    let h = start(&echo_config("  maxProcesses: 4")).await;
    for i in 0..5 {
        h.call(
            "send_message",
            json!({"toTeam": "demo", "message": format!("m{i}"), "fromTeam": if i % 2 == 0 { "a" } else { "b" }, "timeout": 0}),
        )
        .await
        .unwrap();
    }
    let r = h
        .call("message_history", json!({"from": "a", "limit": 2}))
        .await
        .unwrap();
    assert_eq!(r["pagination"]["total"], 3);
    assert_eq!(r["pagination"]["hasNext"], true);
    assert_eq!(r["messages"][0]["request"], "m4", "newest first");
    let r = h
        .call(
            "message_history",
            json!({"from": "a", "limit": 2, "page": 2}),
        )
        .await
        .unwrap();
    assert_eq!(r["messages"].as_array().unwrap().len(), 1);
    assert_eq!(r["pagination"]["hasNext"], false);
    let r = h
        .call("message_history", json!({"status": "failed"}))
        .await
        .unwrap();
    assert_eq!(r["pagination"]["total"], 0);
    h.stop().await;
}
