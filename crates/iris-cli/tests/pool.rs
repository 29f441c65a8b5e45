//! The process pool: queueing, limits, eviction, idle reaping, the response
//! watchdog, crashes, cancellation and clean shutdown, on real child processes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use iris_core::ErrorKind;
use serde_json::json;

fn two_teams(settings: &str) -> String {
    format!(
        "settings:\n{settings}\nteams:\n  demo:\n    path: .\n    agent: echo\n  other:\n    path: .\n    agent: echo\n"
    )
}

#[tokio::test]
async fn a_busy_process_queues_messages_in_order() {
    let h = start(&echo_config("  maxProcesses: 2")).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let r = h
            .call(
                "quick_message",
                json!({"toTeam": "demo", "message": format!("m{i} [[delay=30]]")}),
            )
            .await
            .unwrap();
        ids.push(r["messageId"].as_str().unwrap().to_owned());
    }
    let status = h
        .call("team_status", json!({"team": "demo"}))
        .await
        .unwrap();
    assert!(
        status["teams"][0]["queued"].as_u64().unwrap() >= 2,
        "{status}"
    );
    let mut ends = Vec::new();
    for id in &ids {
        let mut rec = json!(null);
        for _ in 0..200 {
            rec = h
                .call("get_message", json!({"messageId": id}))
                .await
                .unwrap();
            if rec["status"] == "completed" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(rec["status"], "completed");
        ends.push(rec["completedAt"].as_i64().unwrap_or(i64::MAX));
    }
    let mut sorted = ends.clone();
    sorted.sort();
    assert_eq!(ends, sorted, "FIFO: finished in the order sent");
    h.stop().await;
}

#[tokio::test]
async fn the_queue_is_bounded_per_team() {
    let h = start(&echo_config("  maxProcesses: 2\n  maxQueuePerTeam: 2")).await;
    let mut results = Vec::new();
    for i in 0..4 {
        results.push(
            h.call(
                "quick_message",
                json!({"toTeam": "demo", "message": format!("m{i} [[delay=200]]")}),
            )
            .await,
        );
    }
    let full: Vec<_> = results
        .iter()
        .filter(|r| matches!(r, Err(e) if e.kind == ErrorKind::QueueFull))
        .collect();
    assert!(!full.is_empty(), "{results:?}");
    let refused = results.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert_eq!(refused.details.as_ref().unwrap()["maxQueuePerTeam"], 2);
    h.stop().await;
}

#[tokio::test]
async fn a_full_pool_evicts_the_least_recently_used_idle_process_never_a_busy_one() {
    let h = start(&two_teams("  maxProcesses: 1")).await;
    h.tell("demo", "hi").await.unwrap();
    let demo_pid = pids(&h, "demo")[0];
    // `other` needs a process: the idle `demo` one makes room.
    h.tell("other", "hi").await.unwrap();
    assert!(pids(&h, "demo").is_empty());
    eventually("evicted process exits", || !alive(demo_pid)).await;
    // Now `other` is busy: nothing may be evicted.
    h.call(
        "quick_message",
        json!({"toTeam": "other", "message": "slow [[delay=300]] a b"}),
    )
    .await
    .unwrap();
    eventually("other is busy", || {
        h.iris
            .team_processes("other")
            .iter()
            .any(|p| p.state == "busy")
    })
    .await;
    let e = h.tell("demo", "hi").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::PoolExhausted);
    h.stop().await;
}

#[tokio::test]
async fn an_idle_process_is_reaped() {
    let h = start(&echo_config("  idleTimeout: 300")).await;
    h.tell("demo", "hi").await.unwrap();
    let pid = pids(&h, "demo")[0];
    assert!(alive(pid));
    // The status's count (kept beside the pool's lock) follows the pool.
    let processes = |v: serde_json::Value| v["processes"]["total"].clone();
    let status = h.call("get_status", json!({})).await.unwrap();
    assert_eq!(processes(status), 1);
    eventually("idle process reaped", || {
        h.iris.team_processes("demo").is_empty()
    })
    .await;
    let status = h.call("get_status", json!({})).await.unwrap();
    assert_eq!(processes(status), 0);
    eventually("child exited", || !alive(pid)).await;
    // The next message respawns, resuming the same session.
    let r = h.tell("demo", "[[argv]]").await.unwrap();
    assert!(r["response"].as_str().unwrap().contains("--resume"), "{r}");
    h.stop().await;
}

#[tokio::test]
async fn a_silent_agent_times_out_keeping_its_partial_answer_and_is_restarted() {
    let h = start(&echo_config("  responseTimeout: 400")).await;
    let started = Instant::now();
    let e = h.tell("demo", "first words [[hang]]").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(e.kind, ErrorKind::Process);
    let d = e.details.unwrap();
    assert_eq!(d["status"], "timed_out");
    assert_eq!(d["partialResponse"], "first ");
    let r = h.tell("demo", "[[argv]]").await.unwrap();
    assert!(
        r["response"].as_str().unwrap().contains("--resume"),
        "restarted with resume: {r}"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_crash_fails_the_turn_promptly_and_the_next_message_resumes() {
    let h = start(&echo_config("  responseTimeout: 60000")).await;
    h.tell("demo", "warm up").await.unwrap();
    let pid = pids(&h, "demo")[0];
    let started = Instant::now();
    let e = h.tell("demo", "going down [[crash]]").await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "crash noticed promptly"
    );
    assert_eq!(e.kind, ErrorKind::Process);
    assert!(e.message.contains("exited with status 3"), "{e:?}");
    eventually("crashed child reaped", || !alive(pid)).await;
    let r = h.tell("demo", "[[argv]]").await.unwrap();
    let argv = r["response"].as_str().unwrap();
    assert!(argv.contains("--resume"), "{argv}");
    assert!(argv.contains(r["sessionId"].as_str().unwrap()));
    h.stop().await;
}

#[tokio::test]
async fn cancel_interrupts_the_running_turn() {
    let h = start(&echo_config("  maxProcesses: 2")).await;
    let q = h
        .call(
            "quick_message",
            json!({"toTeam": "demo", "message": "a b c d e f g h i j [[delay=100]]"}),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let c = h
        .call("session_cancel", json!({"toTeam": "demo"}))
        .await
        .unwrap();
    assert_eq!(c["cancelled"], true);
    let id = q["messageId"].as_str().unwrap();
    let mut rec = json!(null);
    for _ in 0..100 {
        rec = h
            .call("get_message", json!({"messageId": id}))
            .await
            .unwrap();
        if rec["status"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rec["status"], "cancelled");
    // Interrupted through the control protocol: the process lives on.
    assert_eq!(h.tell("demo", "next").await.unwrap()["response"], "next");
    h.stop().await;
}

#[tokio::test]
async fn cancelling_a_hung_agent_kills_it_after_the_grace_period() {
    let h = start(&echo_config("  shutdownGrace: 300")).await;
    let q = h
        .call(
            "quick_message",
            json!({"toTeam": "demo", "message": "x [[hang]]"}),
        )
        .await
        .unwrap();
    eventually("turn running", || !pids(&h, "demo").is_empty()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = pids(&h, "demo")[0];
    h.call("session_cancel", json!({"toTeam": "demo"}))
        .await
        .unwrap();
    eventually("hung child killed", || !alive(pid)).await;
    let rec = h
        .call("get_message", json!({"messageId": q["messageId"]}))
        .await
        .unwrap();
    assert_eq!(rec["status"], "cancelled");
    h.stop().await;
}

#[tokio::test]
async fn sleep_refuses_a_busy_team_unless_forced_and_shutdown_leaves_no_children() {
    let h = start(&two_teams("  maxProcesses: 4\n  shutdownGrace: 500")).await;
    h.tell("other", "hi").await.unwrap();
    h.call(
        "quick_message",
        json!({"toTeam": "demo", "message": "a b c [[delay=500]]"}),
    )
    .await
    .unwrap();
    eventually("demo busy", || {
        h.iris
            .team_processes("demo")
            .iter()
            .any(|p| p.state == "busy")
    })
    .await;
    let e = h
        .call("team_sleep", json!({"team": "demo"}))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    let demo_pid = pids(&h, "demo")[0];
    let r = h
        .call("team_sleep", json!({"team": "demo", "force": true}))
        .await
        .unwrap();
    assert_eq!(r["stopped"], 1);
    assert!(!alive(demo_pid));
    let other_pid = pids(&h, "other")[0];
    h.stop().await;
    assert!(!alive(other_pid), "no process outlives shutdown");
}

#[tokio::test]
async fn wake_all_starts_every_team_in_parallel() {
    let h = start(&two_teams("  maxProcesses: 4")).await;
    let r = h.call("team_wake_all", json!({})).await.unwrap();
    assert_eq!(r["parallel"], true);
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert!(
        results
            .iter()
            .all(|x| x["status"] == "awake" && x["pid"].is_u64()),
        "{r}"
    );
    let list = h
        .call("list_teams", json!({"includeProcessDetails": true}))
        .await
        .unwrap();
    assert_eq!(list["awakeTeams"], 2);
    assert_eq!(list["teams"][0]["process"][0]["state"], "ready");
    let r = h
        .call("team_wake_all", json!({"parallel": false}))
        .await
        .unwrap();
    assert_eq!(r["parallel"], false);
    h.stop().await;
}

#[tokio::test]
async fn a_prewarmed_team_has_a_process_before_any_message() {
    let h = start(
        "teams:\n  warm:\n    path: .\n    agent: echo\n    prewarm: true\n  cold:\n    path: .\n    agent: echo\n",
    )
    .await;
    eventually("prewarm", || !pids(&h, "warm").is_empty()).await;
    assert!(pids(&h, "cold").is_empty());
    h.stop().await;
}
