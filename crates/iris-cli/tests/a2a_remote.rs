//! Remote A2A agents as teams: a profile of the `a2a` driver names a remote
//! agent's card and credential; messaging its team sends A2A out through
//! the bridge (`iris agent-a2a`). The remote agent is built with the
//! official Python SDK's server (tests/clients/a2a_remote.py), started
//! here. Through REST and MCP: answers streamed back, the conversation
//! continued in the remote's context (across a restart of Iris too), a
//! question asked back, a permission asked as an Iris approval (allowed,
//! denied), auth-required and a refused credential as clear errors, and a
//! cancel reaching the remote task.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const SECRET: &str = "remote-secret-123";

/// The remote agent, listening: the process and its base URL.
fn remote() -> (Reap, String) {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tools/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test.sh, which installs the test clients",
        python.display()
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/a2a_remote.py");
    let mut child = std::process::Command::new(python)
        .arg(script)
        .arg(SECRET)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the remote agent starts");
    let stdout = child.stdout.take().expect("its output");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("it says its port");
    let port = line
        .strip_prefix("PORT ")
        .map(str::trim)
        .unwrap_or_else(|| panic!("not a port line: {line:?}"))
        .to_owned();
    (Reap(child), format!("http://127.0.0.1:{port}"))
}

fn config(remote: &str) -> String {
    format!(
        "api:\n  port: 0\nsettings:\n  approvalTimeout: 60000\nwebhooks:\n  allowHosts: ['127.0.0.1']\n\
         agentProfiles:\n  remote:\n    agent: a2a\n    url: {remote}/\n    credential: {SECRET}\n    grantPermission: ask\n\
         \x20 wrongkey:\n    agent: a2a\n    url: {remote}/.well-known/agent-card.json\n    credential: not-the-secret\n\
         \x20 inside:\n    agent: a2a\n    url: http://169.254.169.254/latest\n\
         \x20 blocking:\n    agent: a2a\n    url: {remote}/blocking/\n    credential: {SECRET}\n\
         teams:\n  far:\n    path: .\n    profile: remote\n  locked:\n    path: .\n    profile: wrongkey\n  metadata:\n    path: .\n    profile: inside\n  still:\n    path: .\n    profile: blocking\n"
    )
}

/// `POST /api/v1/teams/tell` as `key`: the status and the answer.
async fn tell(s: &Served, key: &str, body: Value) -> (u16, Value) {
    http(
        &s.http,
        Method::POST,
        format!("{}/api/v1/teams/tell", s.base),
        Some(key),
        body,
    )
    .await
}

#[tokio::test]
async fn a_remote_a2a_agent_answers_as_a_team_through_rest_and_mcp() {
    let (_remote, url) = remote();
    let s = served(&config(&url)).await;
    let (key, _) = s.h.key("admin", None, None).await;

    // REST: the answer, and the conversation continued in the remote's context.
    let (code, first) = tell(&s, &key, json!({"toTeam": "far", "message": "hello"})).await;
    assert_eq!(code, 200, "{first}");
    assert_eq!(first["response"], "remote 1: hello", "{first}");
    let session = first["sessionId"].as_str().unwrap().to_owned();
    let (_, second) = tell(
        &s,
        &key,
        json!({"toTeam": "far", "message": "second", "sessionId": session}),
    )
    .await;
    assert_eq!(second["response"], "remote 2: second", "{second}");
    let record = s.h.get_message(second["messageId"].as_str().unwrap()).await;
    assert_eq!(record["status"], "completed", "{record}");

    // MCP: the same team, the same conversation.
    let answer = mcp_tool_call(
        &s.http,
        &s.base,
        &key,
        "send_message",
        json!({"toTeam": "far", "message": "over mcp", "sessionId": session}),
    )
    .await;
    let text = answer.to_string();
    assert!(text.contains("remote 3: over mcp"), "{text}");

    // A question asked back: the answer is the question, the next message
    // answers it on the remote's task.
    let (_, asked) = tell(
        &s,
        &key,
        json!({"toTeam": "far", "message": "ask me", "sessionId": session}),
    )
    .await;
    assert_eq!(asked["response"], "Which colour?", "{asked}");
    // The bridge is replaced before the answer (an idle stop, a crash): the
    // question is still the one answered.
    kill_first_process(&s.h, "far").await;
    let (_, answered) = tell(
        &s,
        &key,
        json!({"toTeam": "far", "message": "blue", "sessionId": session}),
    )
    .await;
    assert_eq!(answered["response"], "colour blue", "{answered}");

    // A permission the remote asks: an Iris approval, allowed then denied.
    for (verdict, expected) in [("allow", "deployed"), ("deny", "not deployed: not today")] {
        let call = {
            let (http, base, key, session) =
                (s.http.clone(), s.base.clone(), key.clone(), session.clone());
            tokio::spawn(async move {
                let (_, v) = common::http(
                    &http,
                    Method::POST,
                    format!("{base}/api/v1/teams/tell"),
                    Some(&key),
                    json!({"toTeam": "far", "message": "deploy it", "sessionId": session}),
                )
                .await;
                v
            })
        };
        let approval = pending_approval(&s.h, 30).await;
        assert_eq!(approval["toolName"], "Deploy", "{approval}");
        assert_eq!(approval["input"]["target"], "prod", "{approval}");
        let (code, decided) = http(
            &s.http,
            Method::POST,
            format!(
                "{}/api/v1/approvals/{}",
                s.base,
                approval["id"].as_str().unwrap()
            ),
            Some(&key),
            json!({"decision": verdict, "reason": "not today"}),
        )
        .await;
        assert_eq!(code, 200, "{decided}");
        let answer = tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .expect("the turn ends")
            .unwrap();
        assert_eq!(answer["response"], expected, "{answer}");
    }

    // auth-required, and a credential the remote refuses: clear errors.
    let id = queue(&s.h, "far", "login").await;
    let failed = ended(&s.h, &id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(
        failed["error"].as_str().unwrap().contains("auth-required"),
        "{failed}"
    );
    let id = queue(&s.h, "locked", "hello").await;
    let refused = ended(&s.h, &id).await;
    assert_eq!(refused["status"], "failed", "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("refused the credential"),
        "{refused}"
    );

    // A card on an internal address: refused by the SSRF guard.
    let id = queue(&s.h, "metadata", "hello").await;
    let guarded = ended(&s.h, &id).await;
    assert_eq!(guarded["status"], "failed", "{guarded}");
    assert!(
        guarded["error"].as_str().unwrap().contains("is refused"),
        "{guarded}"
    );

    // Cancel: the remote's task is cancelled, the turn ends cancelled.
    let (_, sent) = http(
        &s.http,
        Method::POST,
        format!("{}/api/v1/teams/quick-tell", s.base),
        Some(&key),
        json!({"toTeam": "far", "message": "slow", "sessionId": session}),
    )
    .await;
    let slow = sent["messageId"].as_str().unwrap().to_owned();
    until_some(30, || async {
        let m = s.h.get_message(&slow).await;
        (m["response"] == "working...").then_some(m)
    })
    .await;
    let (code, cancelled) = http(
        &s.http,
        Method::POST,
        format!("{}/api/v1/teams/far/cancel", s.base),
        Some(&key),
        json!({"sessionId": session}),
    )
    .await;
    assert_eq!(code, 200, "{cancelled}");
    let end = ended(&s.h, &slow).await;
    assert_eq!(end["status"], "cancelled", "{end}");

    // A remote that does not stream: SendMessage, the task followed with
    // GetTask — and cancelled while followed.
    let (_, plain) = tell(&s, &key, json!({"toTeam": "still", "message": "hello"})).await;
    assert_eq!(plain["response"], "remote 1: hello", "{plain}");
    let id = queue(&s.h, "still", "slow").await;
    until_some(30, || async {
        let m = s.h.get_message(&id).await;
        (m["response"] == "working...").then_some(m)
    })
    .await;
    let m = s.h.get_message(&id).await;
    s.h.call(
        "session_cancel",
        json!({"toTeam": "still", "sessionId": m["sessionId"], "messageId": id}),
    )
    .await
    .unwrap();
    let end = ended(&s.h, &id).await;
    assert_eq!(end["status"], "cancelled", "{end}");

    // A restart of Iris: the conversation goes on in the same remote context.
    let Served { h, server, .. } = s;
    server.stop().await;
    let home = h.stop().await;
    let h = start_in(home, &config(&url)).await;
    let again = h
        .call(
            "send_message",
            json!({"toTeam": "far", "message": "after restart", "sessionId": session}),
        )
        .await
        .unwrap();
    assert!(
        again["response"]
            .as_str()
            .unwrap()
            .starts_with("remote 8: after restart"),
        "{again}"
    );
    h.stop().await;
}
