//! Teams at run time over real HTTP and MCP: created, used, changed,
//! present after a restart, deleted; validated like the config file (the
//! field named); teams of the config file refused with CONFLICT naming it.

mod common;

use common::*;
use serde_json::{Value, json};

struct Api {
    h: Harness,
    server: iris_server::Running,
    base: String,
    http: reqwest::Client,
    key: String,
}

async fn api(home: tempfile::TempDir) -> Api {
    let h = start_in(
        home,
        "api:\n  port: 0\nteamRoots: [./web, ./docs]\nteams:\n  demo:\n    path: .\n    agent: echo\n",
    )
    .await;
    let (server, key) = h.serve_with_key("admin").await;
    Api {
        base: format!("http://{}", server.addr),
        h,
        server,
        http: reqwest::Client::new(),
        key,
    }
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        http(&self.http, method, url, Some(&self.key), body).await
    }

    async fn mcp(&self, tool: &str, arguments: Value) -> Value {
        mcp_tool_call(&self.http, &self.base, &self.key, tool, arguments).await["result"].clone()
    }

    async fn stop(self) -> tempfile::TempDir {
        self.server.stop().await;
        self.h.stop().await
    }
}

use reqwest::Method;

#[tokio::test]
async fn a_team_is_created_used_changed_kept_across_a_restart_and_deleted() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("web")).unwrap();
    let a = api(home).await;
    // Created through REST, validated like the config file.
    let (status, bad) = a
        .call(
            Method::POST,
            "/api/v1/teams",
            json!({"name": "web", "path": "./nowhere", "profile": "echo"}),
        )
        .await;
    assert_eq!(
        (status, bad["details"]["fields"]["path"].is_string()),
        (400, true),
        "{bad}"
    );
    let (status, bad) = a
        .call(
            Method::POST,
            "/api/v1/teams",
            json!({"name": "web", "path": "./web", "profile": "robot"}),
        )
        .await;
    assert_eq!(status, 400, "{bad}");
    assert!(bad["details"]["fields"]["profile"].is_string(), "{bad}");
    let (status, bad) = a
        .call(
            Method::POST,
            "/api/v1/teams",
            json!({"name": "web", "path": "./web", "colour": "red"}),
        )
        .await;
    assert_eq!(status, 400, "{bad}");
    let (status, made) = a
        .call(
            Method::POST,
            "/api/v1/teams",
            json!({"name": "web", "path": "./web", "profile": "echo", "description": "the site"}),
        )
        .await;
    assert_eq!(status, 200, "{made}");
    assert_eq!(made["source"], "api");
    let (status, _) = a
        .call(
            Method::POST,
            "/api/v1/teams",
            json!({"name": "web", "path": "./web", "profile": "echo"}),
        )
        .await;
    assert_eq!(status, 409, "exists");
    // Used.
    let (status, told) = a
        .call(
            Method::POST,
            "/api/v1/teams/tell",
            json!({"toTeam": "web", "message": "hello web", "timeout": 0}),
        )
        .await;
    assert_eq!(
        (status, told["response"].as_str()),
        (200, Some("hello web")),
        "{told}"
    );
    // Changed (PATCH), read back (also under /api/contexts).
    let (status, changed) = a
        .call(
            Method::PATCH,
            "/api/v1/teams/web",
            json!({"description": "the web site"}),
        )
        .await;
    assert_eq!(
        (status, changed["config"]["description"].as_str()),
        (200, Some("the web site")),
        "{changed}"
    );
    let (_, got) = a.call(Method::GET, "/api/contexts/web", Value::Null).await;
    assert_eq!(
        (got["agent"].as_str(), got["config"]["profile"].as_str()),
        (Some("echo"), Some("echo")),
        "{got}"
    );
    // The config file's team: read only here.
    let (status, refused) = a
        .call(
            Method::PATCH,
            "/api/v1/teams/demo",
            json!({"description": "x"}),
        )
        .await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("config.yaml"),
        "{refused}"
    );
    // Present after a restart.
    let home = a.stop().await;
    let a = api(home).await;
    let (status, got) = a.call(Method::GET, "/api/v1/teams/web", Value::Null).await;
    assert_eq!(
        (status, got["config"]["description"].as_str()),
        (200, Some("the web site")),
        "{got}"
    );
    // Through MCP: another team created and deleted.
    std::fs::create_dir_all(a.h.home.path().join("docs")).unwrap();
    let made = a
        .mcp(
            "team_create",
            json!({"name": "docs", "path": "./docs", "profile": "echo"}),
        )
        .await;
    assert_eq!(made["isError"], false, "{made}");
    let gone = a.mcp("team_delete", json!({"team": "docs"})).await;
    assert_eq!(gone["structuredContent"]["deleted"], true, "{gone}");
    // Deleted through REST: unknown from then on; audited.
    let (status, _) = a
        .call(Method::DELETE, "/api/v1/teams/web", Value::Null)
        .await;
    assert_eq!(status, 200);
    let (status, _) = a.call(Method::GET, "/api/v1/teams/web", Value::Null).await;
    assert_eq!(status, 404);
    let audit =
        a.h.call(
            "audit_list",
            json!({"action": "operation.team_create", "result": "success"}),
        )
        .await
        .unwrap();
    let results: Vec<&Value> = audit["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| &l["result"])
        .collect();
    assert_eq!(audit["pagination"]["total"], 2, "{results:?}");
    let home = a.stop().await;
    let a = api(home).await;
    let (status, _) = a.call(Method::GET, "/api/v1/teams/web", Value::Null).await;
    assert_eq!(status, 404, "deleted for good");
    a.stop().await;
}
