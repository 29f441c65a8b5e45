//! Conversations: exact (from, to) pairs, explicit ids, reboot, fork,
//! delete, report, and everything surviving a restart.

mod common;

use common::*;
use iris_core::ErrorKind;
use serde_json::json;

#[tokio::test]
async fn sessions_are_exact_pairs_and_explicit_ids_are_separate_conversations() {
    let h = start(&echo_config("  maxProcesses: 8")).await;
    let send = |from: &'static str, sid: Option<&str>| {
        let mut p = json!({"toTeam": "demo", "message": "hi", "fromTeam": from, "timeout": 0});
        if let Some(s) = sid {
            p["sessionId"] = s.into();
        }
        h.call("send_message", p)
    };
    let a = send("alpha", None).await.unwrap();
    let ab = send("alphab", None).await.unwrap();
    let a2 = send("alpha", None).await.unwrap();
    assert_eq!(a["sessionId"], a2["sessionId"]);
    assert_ne!(a["sessionId"], ab["sessionId"], "no prefix matching");
    let explicit = "4b0b7a8e-9d1c-4f6e-8a39-0d7c1f2e3a4b";
    let x = send("alpha", Some(explicit)).await.unwrap();
    assert_eq!(x["sessionId"], explicit);
    assert_eq!(
        h.iris.team_processes("demo").len(),
        3,
        "one process per conversation"
    );
    let r = h
        .call(
            "session_report",
            json!({"toTeam": "demo", "fromTeam": "alpha"}),
        )
        .await
        .unwrap();
    assert_eq!(r["messageCount"], 2);
    let e = h
        .call(
            "session_report",
            json!({"toTeam": "demo", "fromTeam": "nobody"}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::SessionNotFound);
    h.stop().await;
}

#[tokio::test]
async fn reboot_starts_fresh_and_keeps_the_old_history() {
    let h = start(&echo_config("  maxProcesses: 4")).await;
    let first = h.tell("demo", "before").await.unwrap();
    let r = h
        .call("session_reboot", json!({"toTeam": "demo"}))
        .await
        .unwrap();
    assert_eq!(r["oldSessionId"], first["sessionId"]);
    assert_ne!(r["newSessionId"], first["sessionId"]);
    let after = h.tell("demo", "[[argv]]").await.unwrap();
    assert_eq!(after["sessionId"], r["newSessionId"]);
    let argv = after["response"].as_str().unwrap();
    assert!(
        argv.contains("--session-id") && !argv.contains("--resume"),
        "a fresh session: {argv}"
    );
    let old = h
        .call("get_message", json!({"messageId": first["messageId"]}))
        .await
        .unwrap();
    assert_eq!(old["response"], "before");
    h.stop().await;
}

#[tokio::test]
async fn fork_creates_a_new_session_through_the_agents_fork() {
    let h = start(&echo_config("  maxProcesses: 4")).await;
    let e = h
        .call("session_fork", json!({"toTeam": "demo"}))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::SessionNotFound);
    let orig = h.tell("demo", "original").await.unwrap();
    let f = h
        .call("session_fork", json!({"toTeam": "demo"}))
        .await
        .unwrap();
    assert_eq!(f["forkedFrom"], orig["sessionId"]);
    let fid = f["sessionId"].as_str().unwrap();
    let r = h
        .call(
            "send_message",
            json!({"toTeam": "demo", "message": "[[argv]]", "sessionId": fid, "timeout": 0}),
        )
        .await
        .unwrap();
    let argv = r["response"].as_str().unwrap();
    let want = format!(
        "--resume\",\"{}\",\"--fork-session\",\"--session-id\",\"{fid}\"",
        orig["sessionId"].as_str().unwrap()
    );
    assert!(argv.contains(&want), "{argv}");
    let report = h
        .call(
            "session_report",
            json!({"toTeam": "demo", "sessionId": fid}),
        )
        .await
        .unwrap();
    assert_eq!(report["forkedFrom"], orig["sessionId"]);
    h.stop().await;
}

#[tokio::test]
async fn delete_removes_the_conversation_and_its_process() {
    let h = start(&echo_config("  maxProcesses: 4")).await;
    let m = h.tell("demo", "bye").await.unwrap();
    let pid = pids(&h, "demo")[0];
    let d = h
        .call("session_delete", json!({"toTeam": "demo"}))
        .await
        .unwrap();
    assert_eq!(d["deleted"], true);
    assert!(!alive(pid));
    let e = h
        .call("get_message", json!({"messageId": m["messageId"]}))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    h.stop().await;
}

#[tokio::test]
async fn history_and_reports_survive_a_restart() {
    let h = start(&echo_config("  maxProcesses: 4")).await;
    let m = h.tell("demo", "remember me").await.unwrap();
    // A turn still queued when Iris stops is failed, not left dangling.
    h.call(
        "quick_message",
        json!({"toTeam": "demo", "message": "slow [[delay=2000]]"}),
    )
    .await
    .unwrap();
    let home = h.stop().await;
    let h = start_in(home, &echo_config("  maxProcesses: 4")).await;
    let r = h
        .call("session_report", json!({"toTeam": "demo"}))
        .await
        .unwrap();
    assert_eq!(r["sessionId"], m["sessionId"]);
    assert_eq!(r["messages"][0]["response"], "remember me");
    assert_ne!(r["messages"][1]["status"], "running");
    assert_ne!(r["messages"][1]["status"], "queued");
    assert!(
        r["process"].is_null(),
        "process states are reset at start-up"
    );
    let again = h.tell("demo", "[[argv]]").await.unwrap();
    assert_eq!(again["sessionId"], m["sessionId"]);
    assert!(again["response"].as_str().unwrap().contains("--resume"));
    h.stop().await;
}

/// `session_list`: a team's conversations, latest used first, each with its
/// caller, messages, how its latest one ended and its cost; paged; a key
/// limited to another team sees none of them; all of it after a restart.
#[tokio::test]
async fn a_teams_conversations_are_listed_with_their_activity() {
    let yaml = "settings:\n  maxProcesses: 8\nteams:\n  demo:\n    path: .\n    agent: echo\n  other:\n    path: .\n    agent: echo\n";
    let h = start(yaml).await;
    let send = |from: &'static str, message: &'static str, sid: Option<&str>| {
        let mut p = json!({"toTeam": "demo", "message": message, "fromTeam": from, "timeout": 0});
        if let Some(s) = sid {
            p["sessionId"] = s.into();
        }
        h.call("send_message", p)
    };
    send("alpha", "one", None).await.unwrap();
    send("alpha", "two", None).await.unwrap();
    let explicit = "4b0b7a8e-9d1c-4f6e-8a39-0d7c1f2e3a4b";
    send("alpha", "aside", Some(explicit)).await.unwrap();
    send("beta", "[[error=boom]]", None).await.unwrap_err();
    h.tell("other", "elsewhere").await.unwrap();

    let list = h
        .call("session_list", json!({"team": "demo"}))
        .await
        .unwrap();
    let rows: Vec<(&str, &str, i64, &str)> = list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["from"].as_str().unwrap(),
                c["team"].as_str().unwrap(),
                c["turns"].as_i64().unwrap(),
                c["lastStatus"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("beta", "demo", 1, "failed"),
            ("alpha", "demo", 1, "completed"),
            ("alpha", "demo", 2, "completed"),
        ],
        "latest used first: {list}"
    );
    assert_eq!(list["conversations"][1]["sessionId"], explicit);
    assert_eq!(list["conversations"][2]["isDefault"], true);
    assert!(list["conversations"][0]["costUsd"].is_number(), "{list}");
    assert_eq!(list["pagination"]["total"], 3);
    let page = h
        .call("session_list", json!({"limit": 2, "page": 2}))
        .await
        .unwrap();
    assert_eq!(page["pagination"]["total"], 4, "every team: {page}");
    assert_eq!(page["conversations"].as_array().unwrap().len(), 2);

    // Over REST; a key limited to `other` sees only its conversations.
    let (server, admin) = h.serve_with_key("admin").await;
    let (limited, _) = h.key("operator", Some(&["other"]), None).await;
    let client = reqwest::Client::new();
    let get = |path: String, key: String| {
        let client = client.clone();
        let url = format!("http://{}/api/v1{path}", server.addr);
        async move {
            http(
                &client,
                reqwest::Method::GET,
                url,
                Some(&key),
                serde_json::Value::Null,
            )
            .await
        }
    };
    let (s, v) = get("/teams/demo/conversations".into(), admin.clone()).await;
    assert_eq!(
        (s, v["pagination"]["total"].as_i64()),
        (200, Some(3)),
        "{v}"
    );
    let (s, v) = get("/teams/demo/conversations".into(), limited.clone()).await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = get("/conversations".into(), limited.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["pagination"]["total"], 1, "{v}");
    assert_eq!(v["conversations"][0]["team"], "other");
    // The teams graph: an edge per (caller, team); callers that are not
    // teams are nodes of their own; a limited key sees its team's only.
    let g = h.call("team_graph", json!({})).await.unwrap();
    let edge = |g: &serde_json::Value, from: &str, to: &str| {
        g["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["from"] == from && e["to"] == to)
            .map(|e| (e["count"].as_i64().unwrap(), e["open"].as_i64().unwrap()))
    };
    assert_eq!(edge(&g, "alpha", "demo"), Some((3, 0)), "{g}");
    assert_eq!(edge(&g, "beta", "demo"), Some((1, 0)), "{g}");
    assert!(
        g["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["name"] == "alpha" && n["team"] == false),
        "{g}"
    );
    let (s, v) = get("/team-graph".into(), limited.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert!(edge(&v, "alpha", "demo").is_none(), "{v}");
    assert_eq!(v["edges"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["edges"][0]["to"], "other");
    server.stop().await;

    // After a restart: the same list, every process stopped.
    let home = h.stop().await;
    let h = start_in(home, yaml).await;
    let again = h
        .call("session_list", json!({"team": "demo"}))
        .await
        .unwrap();
    assert_eq!(again["pagination"]["total"], 3);
    assert!(
        again["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["processState"] == "stopped"),
        "{again}"
    );
    h.stop().await;
}
