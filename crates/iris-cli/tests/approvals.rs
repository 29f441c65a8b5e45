//! Permission approvals on the real Claude Code CLI against the local
//! Messages API stub: the stub answers with a `Bash` tool use; a team with
//! `grantPermission: ask` waits for a decision made through REST (allow
//! lets it run, deny stops it, both reach the final answer), no decision in
//! time denies, `yes` and `no` teams never make an approval, a second
//! decision is `CONFLICT`, and an approval pending when Iris is killed is
//! expired after the restart.

#[path = "common/anthropic_stub.rs"]
#[allow(dead_code)]
mod anthropic_stub;
mod common;

use std::time::Duration;

use common::*;
use iris_core::Ctx;
use iris_core::auth::{NewKey, Origin, Principal};
use serde_json::{Value, json};

const BASH: &str = r#"MSG<tool Bash {"command":"mkdir -p made-by-agent && echo approved-output","description":"Make a folder"}>"#;

struct Setup {
    h: Harness,
    server: iris_server::Running,
    base: String,
    key: String,
    http: reqwest::Client,
    _stub: anthropic_stub::Stub,
}

async fn setup(approval_timeout: u64) -> Setup {
    let stub = anthropic_stub::start();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("work")).unwrap();
    let mut yaml = format!(
        "api:\n  port: 0\nsettings:\n  responseTimeout: 60000\n  spawnTimeout: 60000\n  shutdownGrace: 2000\n  approvalTimeout: {approval_timeout}\nteams:\n"
    );
    for (name, grant) in [("ask", "ask"), ("yes", "'yes'"), ("no", "'no'")] {
        let claude_home = home.path().join(format!("claude-{name}"));
        std::fs::create_dir_all(&claude_home).unwrap();
        yaml += &claude_team(
            name,
            &claude_home,
            &stub.url,
            &format!("    grantPermission: {grant}\n"),
        );
    }
    let h = start_in(home, &yaml).await;
    let server = iris_server::start(h.iris.clone(), None).await.unwrap();
    let (key, _) = h
        .iris
        .auth()
        .create_key(
            NewKey {
                name: "decider".into(),
                role: Some("developer".into()),
                ..Default::default()
            },
            &Principal::local(),
            &Origin::default(),
        )
        .await
        .unwrap();
    Setup {
        base: format!("http://{}/api/v1", server.addr),
        h,
        server,
        key,
        http: reqwest::Client::new(),
        _stub: stub,
    }
}

impl Setup {
    /// Ask `team` to run the Bash tool; the answer comes when the turn ends.
    fn ask(&self, team: &str) -> tokio::task::JoinHandle<Value> {
        let iris = self.h.iris.clone();
        let team = team.to_owned();
        tokio::spawn(async move {
            iris.dispatch(
                Ctx::local(),
                "send_message",
                json!({"toTeam": team, "message": BASH, "timeout": 0}),
            )
            .await
            .unwrap()
        })
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        http(
            &self.http,
            reqwest::Method::GET,
            url,
            Some(&self.key),
            Value::Null,
        )
        .await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        http(
            &self.http,
            reqwest::Method::POST,
            url,
            Some(&self.key),
            body,
        )
        .await
    }

    /// The first pending approval of `team`, waiting up to 30 s for it.
    async fn pending(&self, team: &str) -> Value {
        for _ in 0..300 {
            let (status, list) = self
                .get(&format!("/approvals?team={team}&status=pending"))
                .await;
            assert_eq!(status, 200, "{list}");
            if let Some(a) = list["approvals"].as_array().and_then(|a| a.first()) {
                return a.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no pending approval for {team}");
    }

    async fn stop(self) {
        self.server.stop().await;
        self.h.stop().await;
    }
}

fn answer(v: &Value) -> &str {
    v["response"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn allowing_through_rest_lets_the_tool_run_and_a_second_decision_conflicts() {
    let s = setup(60_000).await;
    let turn = s.ask("ask");
    let a = s.pending("ask").await;
    assert_eq!(a["toolName"], "Bash", "{a}");
    assert_eq!(
        a["input"]["command"],
        "mkdir -p made-by-agent && echo approved-output"
    );
    let id = a["id"].as_str().unwrap().to_owned();
    let (status, one) = s.get(&format!("/approvals/{id}")).await;
    assert_eq!((status, one["status"].as_str()), (200, Some("pending")));
    let (status, decided) = s
        .post(
            &format!("/approvals/{id}"),
            json!({"decision": "allow", "reason": "fine"}),
        )
        .await;
    assert_eq!(status, 200, "{decided}");
    assert_eq!(decided["status"], "allowed");
    assert!(decided["decidedBy"].as_str().unwrap().starts_with("key:"));
    let done = turn.await.unwrap();
    assert!(
        answer(&done).contains("approved-output"),
        "the tool ran: {done}"
    );
    assert_eq!(
        decided["turnId"], done["messageId"],
        "the approval names its turn"
    );
    // Once only.
    let (status, again) = s
        .post(&format!("/approvals/{id}"), json!({"decision": "deny"}))
        .await;
    assert_eq!(
        (status, again["code"].as_str()),
        (409, Some("CONFLICT")),
        "{again}"
    );
    // The turn keeps what was asked and decided; the decision is audited.
    let (_, m) = s
        .get(&format!(
            "/messages/{}",
            done["messageId"].as_str().unwrap()
        ))
        .await;
    assert_eq!(m["status"], "completed", "{m}");
    assert_eq!(m["permissions"][0]["toolName"], "Bash", "{m}");
    assert_eq!(m["permissions"][0]["decision"], "allow");
    assert_eq!(m["permissions"][0]["approvalId"], id.as_str());
    let audit =
        s.h.call("audit_list", json!({"action": "operation.approval_decide"}))
            .await
            .unwrap();
    assert!(
        audit.to_string().contains("decider")
            || audit["logs"].as_array().is_some_and(|l| !l.is_empty()),
        "{audit}"
    );
    s.stop().await;
}

#[tokio::test]
async fn an_allow_with_updated_input_runs_the_changed_input() {
    let s = setup(60_000).await;
    let turn = s.ask("ask");
    let a = s.pending("ask").await;
    let id = a["id"].as_str().unwrap();
    let changed = json!({"command": "mkdir -p other-folder && echo changed-output", "description": "Changed"});
    let (status, decided) = s
        .post(
            &format!("/approvals/{id}"),
            json!({"decision": "allow", "updatedInput": changed}),
        )
        .await;
    assert_eq!(status, 200, "{decided}");
    assert_eq!(decided["updatedInput"], changed);
    let done = turn.await.unwrap();
    assert!(answer(&done).contains("changed-output"), "{done}");
    s.stop().await;
}

#[tokio::test]
async fn denying_stops_the_tool_and_the_reason_reaches_the_agent() {
    let s = setup(60_000).await;
    let turn = s.ask("ask");
    let a = s.pending("ask").await;
    let id = a["id"].as_str().unwrap();
    let (status, decided) = s
        .post(
            &format!("/approvals/{id}"),
            json!({"decision": "deny", "reason": "not on a friday"}),
        )
        .await;
    assert_eq!(
        (status, decided["status"].as_str()),
        (200, Some("denied")),
        "{decided}"
    );
    let done = turn.await.unwrap();
    assert!(answer(&done).contains("not on a friday"), "{done}");
    assert!(!answer(&done).contains("approved-output"), "{done}");
    s.stop().await;
}

#[tokio::test]
async fn no_decision_in_time_denies_and_yes_and_no_teams_never_ask() {
    let s = setup(800).await;
    let turn = s.ask("ask");
    let done = turn.await.unwrap();
    assert!(
        answer(&done).contains("no decision within 800 ms"),
        "{done}"
    );
    let (_, list) = s.get("/approvals?team=ask&status=expired").await;
    assert_eq!(list["pagination"]["total"], 1, "{list}");

    let yes = s.ask("yes").await.unwrap();
    assert!(answer(&yes).contains("approved-output"), "{yes}");
    let no = s.ask("no").await.unwrap();
    assert!(answer(&no).contains("grantPermission: no"), "{no}");
    for team in ["yes", "no"] {
        let (_, list) = s.get(&format!("/approvals?team={team}")).await;
        assert_eq!(list["pagination"]["total"], 0, "{team}: {list}");
    }
    s.stop().await;
}

/// `iris serve` killed (SIGKILL) while an approval waits: after the restart
/// the approval is expired, never left pending, and deciding it is CONFLICT.
#[tokio::test]
async fn an_approval_pending_when_iris_is_killed_is_expired_after_the_restart() {
    let stub = anthropic_stub::start();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("work")).unwrap();
    let claude_home = home.path().join("claude-ask");
    std::fs::create_dir_all(&claude_home).unwrap();
    let yaml = format!(
        "api:\n  port: 0\ndatabase:\n  path: data/iris.db\nsettings:\n  spawnTimeout: 60000\nteams:\n{}",
        claude_team("ask", &claude_home, &stub.url, "")
    );
    std::fs::write(home.path().join("config.yaml"), yaml).unwrap();
    let serve = || {
        let _ = std::fs::remove_file(home.path().join(".http.port"));
        let child = std::process::Command::new(iris_bin())
            .arg("serve")
            .env("IRIS_HOME", home.path())
            .env(
                "IRIS_DATABASE_URL",
                iris_storage::testing::database_url(home.path()),
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let port_file = home.path().join(".http.port");
        for _ in 0..300 {
            if std::fs::read_to_string(&port_file).is_ok_and(|p| !p.trim().is_empty()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let port = std::fs::read_to_string(&port_file).unwrap();
        (child, format!("http://127.0.0.1:{}/api/v1", port.trim()))
    };
    let (mut first, base) = serve();
    let key = std::fs::read_to_string(home.path().join("credentials"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("IRIS_API_KEY=").map(str::to_owned))
        .unwrap();
    let client = reqwest::Client::new();
    let call = |method: reqwest::Method, url: String, body: Option<Value>| {
        http(
            &client,
            method,
            url,
            Some(&key),
            body.unwrap_or(Value::Null),
        )
    };
    use reqwest::Method;
    let (_, sent) = call(
        Method::POST,
        format!("{base}/teams/quick-tell"),
        Some(json!({"toTeam": "ask", "message": BASH})),
    )
    .await;
    assert!(sent["messageId"].is_string(), "{sent}");
    let mut pending = None;
    for _ in 0..300 {
        let (_, list) = call(
            Method::GET,
            format!("{base}/approvals?status=pending"),
            None,
        )
        .await;
        pending = list["approvals"][0]["id"].as_str().map(str::to_owned);
        if pending.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let id = pending.expect("an approval waits");
    first.kill().unwrap();
    first.wait().unwrap();

    let (mut second, base) = serve();
    let (_, a) = call(Method::GET, format!("{base}/approvals/{id}"), None).await;
    assert_eq!(a["status"], "expired", "{a}");
    assert_eq!(a["decidedBy"], "process", "{a}");
    let (status, _) = call(
        Method::POST,
        format!("{base}/approvals/{id}"),
        Some(json!({"decision": "allow"})),
    )
    .await;
    assert_eq!(status, 409);
    let message = sent["messageId"].as_str().unwrap();
    let (_, m) = call(Method::GET, format!("{base}/messages/{message}"), None).await;
    assert_eq!(m["status"], "failed", "the interrupted turn ended: {m}");
    // The CLI sees it too.
    let out = std::process::Command::new(iris_bin())
        .args(["approvals", "list", "--status", "expired", "--json"])
        .env("IRIS_HOME", home.path())
        .env(
            "IRIS_DATABASE_URL",
            iris_storage::testing::database_url(home.path()),
        )
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["approvals"][0]["id"], id.as_str(), "{listed}");
    let out = std::process::Command::new(iris_bin())
        .args(["approvals", "allow", &id])
        .env("IRIS_HOME", home.path())
        .env(
            "IRIS_DATABASE_URL",
            iris_storage::testing::database_url(home.path()),
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already expired"),
        "{out:?}"
    );
    second.kill().unwrap();
    second.wait().unwrap();
}
