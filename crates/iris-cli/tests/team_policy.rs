//! Who may make Iris run what (docs/security.md): teams created through
//! the API choose among the config file's agent profiles and folders under
//! its team roots; a developer key — and one limited to its own team —
//! cannot set a program, arguments, environment or tool list by any field
//! on REST, `/rpc`, `/ws` or MCP; admins can only with
//! `api.teams.allowCustomAgents`; secret values are never read back; an
//! agent's environment is the allowlist; every team change is audited with
//! what changed.

mod common;

use common::*;
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Map, Value, json};

/// The config: roots `./projects`, a profile `cmd` running `/usr/bin/env`
/// (an agent that prints its environment), the built-in `echo`.
fn config(custom: bool) -> String {
    format!(
        "api:\n  port: 0\n  teams:\n    allowCustomAgents: {custom}\nteamRoots: [./projects]\nagentProfiles:\n  cmd:\n    agent: command\n    command: /usr/bin/env\n    promptVia: stdin\n    env:\n      PROFILE_VAR: from-the-profile\n  careful:\n    agent: echo\n    grantPermission: 'no'\n  trusting:\n    agent: echo\n    grantPermission: 'yes'\nteams:\n  demo:\n    path: .\n    agent: echo\n    env:\n      FILE_SECRET: s3cret-of-the-file\n"
    )
}

struct Api {
    h: Harness,
    server: iris_server::Running,
    base: String,
    http: reqwest::Client,
    admin: String,
}

async fn api(home: tempfile::TempDir, custom: bool) -> Api {
    for d in ["projects/web", "projects/site", "outside"] {
        std::fs::create_dir_all(home.path().join(d)).unwrap();
    }
    let h = start_in(home, &config(custom)).await;
    let (server, admin) = h.serve_with_key("admin").await;
    Api {
        base: format!("http://{}", server.addr),
        h,
        server,
        http: reqwest::Client::new(),
        admin,
    }
}

/// The transports every rule is checked on.
#[derive(Debug, Clone, Copy)]
enum Via {
    Rest,
    Rpc,
    Ws,
    Mcp,
}
const EVERY: [Via; 4] = [Via::Rest, Via::Rpc, Via::Ws, Via::Mcp];

impl Api {
    async fn key(&self, role: &str, teams: Option<&[&str]>) -> String {
        self.h.key(role, teams, None).await.0
    }

    /// The credential a process of `team`'s agent gets.
    fn agent(&self, team: &str) -> String {
        self.h
            .iris
            .auth()
            .agents
            .issue(
                team,
                "00000000-0000-4000-8000-000000000000",
                std::time::Duration::from_secs(60),
                None,
                None,
            )
            .unwrap()
    }

    async fn rest(&self, method: Method, path: &str, key: &str, body: Value) -> (u16, Value) {
        http(
            &self.http,
            method,
            format!("{}{path}", self.base),
            Some(key),
            body,
        )
        .await
    }

    /// Call `op` with `params` over `via` as `key`: `Ok(result)` or
    /// `Err(the error body)`.
    async fn call(&self, via: Via, key: &str, op: &str, params: Value) -> Result<Value, Value> {
        match via {
            Via::Rest => {
                let mut p = params.as_object().cloned().unwrap_or_default();
                let (method, path) = match op {
                    "team_create" => (Method::POST, "/api/v1/teams".to_owned()),
                    "team_update" => {
                        let team = p.remove("team").unwrap();
                        (
                            Method::PATCH,
                            format!("/api/v1/teams/{}", team.as_str().unwrap()),
                        )
                    }
                    "team_get" => {
                        let team = p.remove("team").unwrap();
                        (
                            Method::GET,
                            format!("/api/v1/teams/{}", team.as_str().unwrap()),
                        )
                    }
                    "session_list" => match p.remove("team") {
                        Some(t) => (
                            Method::GET,
                            format!("/api/v1/teams/{}/conversations", t.as_str().unwrap()),
                        ),
                        None => (Method::GET, "/api/v1/conversations".to_owned()),
                    },
                    "session_diff" => {
                        let id = p.remove("sessionId").unwrap();
                        (
                            Method::GET,
                            format!("/api/v1/cache/{}/diff", id.as_str().unwrap()),
                        )
                    }
                    "team_graph" => (Method::GET, "/api/v1/team-graph".to_owned()),
                    other => panic!("no REST route in this test for {other}"),
                };
                let body = if method == Method::GET {
                    Value::Null
                } else {
                    Value::Object(p)
                };
                let (status, v) = self.rest(method, &path, key, body).await;
                if status == 200 { Ok(v) } else { Err(v) }
            }
            Via::Rpc => {
                let (status, v) = self
                    .rest(
                        Method::POST,
                        "/rpc",
                        key,
                        json!({"method": op, "params": params}),
                    )
                    .await;
                if status == 200 { Ok(v) } else { Err(v) }
            }
            Via::Ws => {
                let url = format!("ws://{}/ws", self.server.addr);
                let mut ws = ws_connect(&url, Some(key)).await;
                send(
                    &mut ws,
                    json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                           "params": {"name": op, "arguments": params}}),
                )
                .await;
                let reply = loop {
                    let v = recv(&mut ws).await;
                    if v["id"] == 7 {
                        break v;
                    }
                };
                let _ = ws.close(None).await;
                while ws.next().await.is_some() {}
                match reply.get("error") {
                    Some(e) => Err(e["data"].clone()),
                    None => Ok(reply["result"].clone()),
                }
            }
            Via::Mcp => {
                let v = mcp_tool_call(&self.http, &self.base, key, op, params).await;
                let result = &v["result"];
                if result["isError"] == true {
                    let text = result["content"][0]["text"].as_str().unwrap();
                    Err(serde_json::from_str(text).unwrap())
                } else {
                    Ok(result["structuredContent"].clone())
                }
            }
        }
    }

    async fn exists(&self, team: &str) -> bool {
        self.call(Via::Rest, &self.admin, "team_get", json!({"team": team}))
            .await
            .is_ok()
    }

    async fn stop(self) -> tempfile::TempDir {
        self.server.stop().await;
        self.h.stop().await
    }
}

/// `attempt` refused with `code`, naming `field`.
#[track_caller]
fn refused(attempt: &Result<Value, Value>, code: &str, field: &str, what: &str) {
    let body = attempt.as_ref().expect_err(what);
    assert_eq!(body["code"], code, "{what}: {body}");
    let named = body["details"]["field"] == field || body["details"]["fields"].get(field).is_some();
    assert!(named, "{what}: the field `{field}` is named: {body}");
}

/// Every key that decides what runs, with a value that would run
/// something of the caller's choosing.
fn agent_fields() -> Vec<(&'static str, Value)> {
    vec![
        ("agent", json!("command")),
        ("command", json!("/bin/sh")),
        ("claudePath", json!("/bin/sh")),
        ("args", json!(["-c", "touch /tmp/pwned"])),
        ("env", json!({"LD_PRELOAD": "/tmp/evil.so"})),
        ("allowedTools", json!(["Bash"])),
        ("disallowedTools", json!([])),
        ("promptVia", json!("stdin")),
        // Its own confinement, widened or off.
        ("sandbox", json!({"enabled": false})),
        ("sandbox", json!({"allowRead": ["/"]})),
    ]
}

#[tokio::test]
async fn a_developer_key_cannot_choose_what_runs_on_any_transport() {
    let a = api(tempfile::tempdir().unwrap(), false).await;
    let dev = a.key("developer", None).await;
    for via in EVERY {
        for (field, value) in agent_fields() {
            // Created with the field, alone or beside a profile.
            let mut p = Map::new();
            p.insert("name".into(), json!("evil"));
            p.insert("path".into(), json!("./projects/web"));
            p.insert("profile".into(), json!("echo"));
            p.insert(field.into(), value.clone());
            let r = a.call(via, &dev, "team_create", Value::Object(p)).await;
            refused(
                &r,
                "FORBIDDEN",
                field,
                &format!("{via:?} create with {field}"),
            );
            assert!(!a.exists("evil").await, "{via:?}: nothing stored");
        }
        // A looser grantPermission than the profile's.
        let r = a
            .call(via, &dev, "team_create",
                  json!({"name": "evil", "path": "./projects/web", "profile": "careful", "grantPermission": "ask"}))
            .await;
        refused(
            &r,
            "FORBIDDEN",
            "grantPermission",
            &format!("{via:?} looser grant"),
        );
        // No profile at all.
        let r = a
            .call(
                via,
                &dev,
                "team_create",
                json!({"name": "evil", "path": "./projects/web"}),
            )
            .await;
        refused(
            &r,
            "VALIDATION_ERROR",
            "profile",
            &format!("{via:?} no profile"),
        );
        // Folders outside the roots: `/`, `..`, a symlink out, Iris's home.
        for path in ["/", "./projects/../outside", "./projects/out", "."] {
            if path == "./projects/out" {
                let link = a.h.home.path().join("projects/out");
                if !link.exists() {
                    std::os::unix::fs::symlink(a.h.home.path().join("outside"), link).unwrap();
                }
            }
            let r = a
                .call(
                    via,
                    &dev,
                    "team_create",
                    json!({"name": "evil", "path": path, "profile": "echo"}),
                )
                .await;
            refused(
                &r,
                "VALIDATION_ERROR",
                "path",
                &format!("{via:?} path {path}"),
            );
        }
        assert!(!a.exists("evil").await, "{via:?}: nothing stored");
    }
    // What a developer may do: a profile, a folder under a root, a
    // stricter grant, description and colour.
    let made = a
        .call(
            Via::Rest,
            &dev,
            "team_create",
            json!({"name": "web", "path": "./projects/web", "profile": "echo",
                     "grantPermission": "no", "description": "the site", "color": "#123456"}),
        )
        .await
        .unwrap();
    assert_eq!(
        (made["agent"].as_str(), made["source"].as_str()),
        (Some("echo"), Some("api"))
    );
    // Changing it (PATCH and PUT, and every other transport) is held to
    // the same rules, also for a key limited to this one team.
    let mine = a.key("developer", Some(&["web"])).await;
    for key in [&dev, &mine] {
        for via in EVERY {
            for (field, value) in agent_fields() {
                let r = a
                    .call(
                        via,
                        key,
                        "team_update",
                        json!({"team": "web", field: value}),
                    )
                    .await;
                refused(
                    &r,
                    "FORBIDDEN",
                    field,
                    &format!("{via:?} update with {field}"),
                );
                // `null` would take the profile's limits away: refused too.
                let r = a
                    .call(via, key, "team_update", json!({"team": "web", field: null}))
                    .await;
                refused(
                    &r,
                    "FORBIDDEN",
                    field,
                    &format!("{via:?} update with {field}: null"),
                );
            }
        }
        let (status, body) = a
            .rest(
                Method::PUT,
                "/api/v1/teams/web",
                key,
                json!({"path": "./projects/web", "profile": "cmd", "args": ["-0"]}),
            )
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("FORBIDDEN")),
            "{body}"
        );
    }
    // The limited key may not name teams it cannot see.
    let r = a
        .call(
            Via::Rest,
            &mine,
            "team_update",
            json!({"team": "web", "canMessage": "*"}),
        )
        .await;
    refused(&r, "FORBIDDEN", "canMessage", "limited key, canMessage *");
    let r = a
        .call(
            Via::Rest,
            &mine,
            "team_update",
            json!({"team": "web", "canMessage": ["demo"]}),
        )
        .await;
    refused(
        &r,
        "FORBIDDEN",
        "canMessage",
        "limited key, canMessage demo",
    );
    // …and may change what is free.
    let changed = a
        .call(
            Via::Mcp,
            &mine,
            "team_update",
            json!({"team": "web", "description": "mine"}),
        )
        .await
        .unwrap();
    assert_eq!(changed["config"]["description"], "mine", "{changed}");
    // Nor take its profile away, nor drop canMessage (every team), nor
    // move into the folder of a team it cannot see.
    let r = a
        .call(
            Via::Rest,
            &mine,
            "team_update",
            json!({"team": "web", "profile": null}),
        )
        .await;
    refused(&r, "FORBIDDEN", "profile", "profile: null");
    let r = a
        .call(
            Via::Rest,
            &mine,
            "team_update",
            json!({"team": "web", "canMessage": null}),
        )
        .await;
    refused(
        &r,
        "FORBIDDEN",
        "canMessage",
        "limited key, canMessage null",
    );
    a.call(
        Via::Rest,
        &dev,
        "team_create",
        json!({"name": "site", "path": "./projects/site", "profile": "echo"}),
    )
    .await
    .unwrap();
    let r = a
        .call(
            Via::Rest,
            &mine,
            "team_update",
            json!({"team": "web", "path": "./projects/site"}),
        )
        .await;
    refused(
        &r,
        "FORBIDDEN",
        "path",
        "limited key into another team's folder",
    );
    // A profile switched to a stricter one takes the team's grant down with it.
    let made = a
        .call(Via::Rest, &dev, "team_create",
              json!({"name": "loose", "path": "./projects/site", "profile": "trusting", "grantPermission": "yes"}))
        .await
        .unwrap();
    assert_eq!(made["grantPermission"], "yes");
    let switched = a
        .call(
            Via::Rest,
            &dev,
            "team_update",
            json!({"team": "loose", "profile": "careful"}),
        )
        .await
        .unwrap();
    assert_eq!(switched["grantPermission"], "no", "{switched}");
    // Admins cannot either while allowCustomAgents is off.
    let r = a
        .call(Via::Rest, &a.admin, "team_create",
              json!({"name": "evil", "path": "./projects/site", "agent": "command", "command": "/bin/sh"}))
        .await;
    refused(&r, "FORBIDDEN", "agent", "admin without allowCustomAgents");
    // The team still runs what its profile says.
    let told = a
        .call(
            Via::Rpc,
            &dev,
            "send_message",
            json!({"toTeam": "web", "message": "still echo", "timeout": 0}),
        )
        .await
        .unwrap();
    assert_eq!(told["response"], "still echo", "{told}");
    a.stop().await;
}

#[tokio::test]
async fn admins_set_custom_agents_only_when_allowed_and_agents_get_only_the_allowlist() {
    let a = api(tempfile::tempdir().unwrap(), true).await;
    let dev = a.key("developer", None).await;
    let r = a
        .call(Via::Rest, &dev, "team_create",
              json!({"name": "mine", "path": "./projects/site", "agent": "command", "command": "/usr/bin/env"}))
        .await;
    refused(
        &r,
        "FORBIDDEN",
        "agent",
        "a developer, even with the switch on",
    );
    let made = a
        .call(
            Via::Rest,
            &a.admin,
            "team_create",
            json!({"name": "envy", "path": "./projects/site", "agent": "command",
                     "command": "/usr/bin/env", "promptVia": "stdin",
                     "env": {"TEAM_TOKEN": "t0ps3cret", "OTHER": "x"}}),
        )
        .await
        .unwrap();
    assert_eq!(made["agent"], "command");
    // Secret values are write-only: names only, for everyone.
    assert_eq!(
        made["config"]["envNames"],
        json!(["OTHER", "TEAM_TOKEN"]),
        "{made}"
    );
    assert!(!made.to_string().contains("t0ps3cret"), "{made}");
    // The agent's environment: the allowlist, the team's variables, nothing of Iris's.
    // SAFETY: the test sets a variable of its own process before the
    // agent starts; Iris (in this process) must not pass it on.
    unsafe { std::env::set_var("IRIS_TEST_LEAK", "iris-own-secret") };
    let told = a
        .call(Via::Rest, &a.admin, "team_get", json!({"team": "envy"}))
        .await
        .unwrap();
    assert!(told["config"]["envNames"].is_array());
    let out = a
        .call(
            Via::Rpc,
            &a.admin,
            "send_message",
            json!({"toTeam": "envy", "message": "print", "timeout": 0}),
        )
        .await
        .unwrap();
    let text = out["response"].as_str().unwrap();
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    assert!(
        names.contains(&"TEAM_TOKEN") && names.contains(&"PATH"),
        "{text}"
    );
    let allowed = |n: &str| {
        iris_agent::INHERITED_ENV.contains(&n)
            || n.starts_with("LC_")
            || ["TEAM_TOKEN", "OTHER"].contains(&n)
    };
    let extra: Vec<&&str> = names.iter().filter(|n| !allowed(n)).collect();
    assert!(
        extra.is_empty(),
        "only the allowlist and the team's env: {extra:?} in {text}"
    );
    assert!(!text.contains("iris-own-secret"));
    // Rows that set their agent without an admin having saved them so
    // (from before profiles) are not trusted, even with the switch on.
    a.h.iris
        .store()
        .save_team(
            "legacy",
            &json!({"path": "./projects/site", "agent": "command", "command": "/bin/sh"}),
            false,
            0,
        )
        .await
        .unwrap();
    let changes = a.h.iris.reload().await.unwrap();
    assert!(changes.teams_added.is_empty(), "{changes:?}");
    assert!(!a.exists("legacy").await);
    // A profile's team gets the profile's variables too.
    a.call(
        Via::Rest,
        &dev,
        "team_create",
        json!({"name": "prof", "path": "./projects/web", "profile": "cmd"}),
    )
    .await
    .unwrap();
    let out = a
        .call(
            Via::Rpc,
            &dev,
            "send_message",
            json!({"toTeam": "prof", "message": "print", "timeout": 0}),
        )
        .await
        .unwrap();
    assert!(
        out["response"]
            .as_str()
            .unwrap()
            .contains("PROFILE_VAR=from-the-profile"),
        "{out}"
    );
    // On update an omitted variable is kept and null removes one.
    let changed = a
        .call(
            Via::Rest,
            &a.admin,
            "team_update",
            json!({"team": "envy", "env": {"OTHER": null, "NEW": "n"}}),
        )
        .await
        .unwrap();
    assert_eq!(
        changed["config"]["envNames"],
        json!(["NEW", "TEAM_TOKEN"]),
        "{changed}"
    );
    // Every team change is audited with what changed, secrets by name only.
    let audit =
        a.h.call(
            "audit_list",
            json!({"action": "team.updated", "team": "envy"}),
        )
        .await
        .unwrap();
    let entry = &audit["logs"][0];
    assert_eq!(
        entry["details"]["changes"]["envNames"],
        json!({"before": ["OTHER", "TEAM_TOKEN"], "after": ["NEW", "TEAM_TOKEN"]}),
        "{entry}"
    );
    for action in ["team.created", "team.deleted"] {
        if action == "team.deleted" {
            a.rest(Method::DELETE, "/api/v1/teams/envy", &a.admin, Value::Null)
                .await;
        }
        let audit =
            a.h.call("audit_list", json!({"action": action, "team": "envy"}))
                .await
                .unwrap();
        assert_eq!(audit["pagination"]["total"], 1, "{action}: {audit}");
        assert!(!audit.to_string().contains("t0ps3cret"), "{audit}");
    }
    a.stop().await;
}

#[tokio::test]
async fn secrets_are_write_only_for_viewers_and_agents() {
    let a = api(tempfile::tempdir().unwrap(), false).await;
    let viewer = a.key("viewer", None).await;
    let agent = a.agent("demo");
    for key in [&viewer, &agent, &a.admin] {
        for via in EVERY {
            let got = a.call(via, key, "team_get", json!({"team": "demo"})).await;
            let got = got.unwrap_or_else(|e| panic!("{via:?}: {e}"));
            assert_eq!(
                got["config"]["envNames"],
                json!(["FILE_SECRET"]),
                "{via:?}: {got}"
            );
            assert!(
                !got.to_string().contains("s3cret-of-the-file"),
                "{via:?}: {got}"
            );
            let (_, list) = a.rest(Method::GET, "/api/v1/teams", key, Value::Null).await;
            assert!(!list.to_string().contains("s3cret"), "{list}");
        }
    }
    a.stop().await;
}

#[tokio::test]
async fn a_folder_swapped_for_a_symlink_after_creation_is_refused_at_spawn() {
    let a = api(tempfile::tempdir().unwrap(), false).await;
    let dev = a.key("developer", None).await;
    a.call(
        Via::Rest,
        &dev,
        "team_create",
        json!({"name": "web", "path": "./projects/web", "profile": "echo"}),
    )
    .await
    .unwrap();
    let web = a.h.home.path().join("projects/web");
    std::fs::remove_dir(&web).unwrap();
    std::os::unix::fs::symlink(a.h.home.path().join("outside"), &web).unwrap();
    let r = a
        .rest(
            Method::POST,
            "/api/v1/teams/tell",
            &dev,
            json!({"toTeam": "web", "message": "[[cwd]]", "timeout": 0}),
        )
        .await;
    // The turn fails as its process could not start, and says why.
    assert_eq!(
        (r.0, r.1["code"].as_str()),
        (500, Some("PROCESS_ERROR")),
        "{}",
        r.1
    );
    let message = r.1["message"].as_str().unwrap();
    assert!(
        message.contains("teamRoots") && !message.contains("/tmp"),
        "{message}"
    );
    assert!(pids(&a.h, "web").is_empty(), "no process started");
    a.stop().await;
}

#[tokio::test]
async fn profiles_and_roots_are_listed_and_reloaded_like_a_restart() {
    let a = api(tempfile::tempdir().unwrap(), false).await;
    let viewer = a.key("viewer", None).await;
    let listed = a
        .call(Via::Rpc, &viewer, "team_profiles", json!({}))
        .await
        .unwrap();
    let names: Vec<&str> = listed["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["careful", "cmd", "echo", "trusting"], "{listed}");
    assert!(
        !listed.to_string().contains("from-the-profile"),
        "no profile env values: {listed}"
    );
    assert_eq!(listed["teamRoots"].as_array().unwrap().len(), 1);
    a.call(
        Via::Rest,
        &a.admin,
        "team_create",
        json!({"name": "web", "path": "./projects/web", "profile": "cmd"}),
    )
    .await
    .unwrap();
    // The file drops the profile: after a reload, as after a restart, the
    // team is left out (kept in the store); back when the profile is.
    let file = a.h.home.path().join("config.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let without = text.replace("  cmd:\n    agent: command\n    command: /usr/bin/env\n    promptVia: stdin\n    env:\n      PROFILE_VAR: from-the-profile\n", "");
    std::fs::write(&file, &without).unwrap();
    let changes = a.h.iris.reload().await.unwrap();
    assert_eq!(changes.teams_removed, ["web"]);
    assert!(!a.exists("web").await);
    std::fs::write(&file, &text).unwrap();
    let changes = a.h.iris.reload().await.unwrap();
    assert_eq!(changes.teams_added, ["web"]);
    assert!(a.exists("web").await);
    a.stop().await;
}

/// The console's reads — a team's conversations (`session_list`), what a
/// worktree conversation changed (`session_diff`), the teams graph
/// (`team_graph`) — hold a key's team limit on every transport: another
/// team is as if it did not exist, and never named.
#[tokio::test]
async fn the_consoles_reads_keep_a_keys_team_limit_on_every_transport() {
    let a = api(tempfile::tempdir().unwrap(), false).await;
    a.call(
        Via::Rest,
        &a.admin,
        "team_create",
        json!({"name": "web", "path": "./projects/web", "profile": "careful"}),
    )
    .await
    .unwrap();
    let mut web_session = String::new();
    for (team, from) in [("web", "tester"), ("demo", "tester")] {
        let r =
            a.h.call(
                "quick_message",
                json!({"toTeam": team, "message": "hi", "fromTeam": from}),
            )
            .await
            .unwrap();
        if team == "web" {
            web_session = r["sessionId"].as_str().unwrap().to_owned();
        }
    }
    let limited = a.key("operator", Some(&["demo"])).await;
    let named_web = |v: &Value| v.to_string().contains("\"web\"");
    for via in EVERY {
        let what = format!("{via:?}");
        let r = a
            .call(via, &limited, "session_list", json!({"team": "web"}))
            .await;
        let body = r.expect_err(&what);
        assert_eq!(body["code"], "TEAM_NOT_FOUND", "{what}: {body}");
        let all = a
            .call(via, &limited, "session_list", json!({}))
            .await
            .expect(&what);
        let teams: Vec<&Value> = all["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| &c["team"])
            .collect();
        assert_eq!(teams, [&json!("demo")], "{what}: {all}");
        let diff = a
            .call(
                via,
                &limited,
                "session_diff",
                json!({"sessionId": web_session}),
            )
            .await;
        let body = diff.expect_err(&what);
        assert!(
            matches!(
                body["code"].as_str(),
                Some("TEAM_NOT_FOUND" | "SESSION_NOT_FOUND")
            ),
            "{what}: {body}"
        );
        assert!(!named_web(&body), "{what}: {body}");
        let g = a
            .call(via, &limited, "team_graph", json!({}))
            .await
            .expect(&what);
        assert!(!named_web(&g), "{what}: {g}");
        assert!(
            g["edges"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["from"] == "tester" && e["to"] == "demo"),
            "{what}: {g}"
        );
        // The admin sees both, so the limit is what hid `web`.
        let g = a
            .call(via, &a.admin, "team_graph", json!({}))
            .await
            .expect(&what);
        assert!(named_web(&g), "{what}: {g}");
    }
    a.stop().await;
}

/// An agent's own credential works only in its team's conversations: a
/// conversation someone else has with its team, named by id, can be
/// neither cancelled nor rebooted (on every transport), and it may watch
/// neither `system` nor a team's topic — which carry others' answers. A
/// key with `teams:read` alone may not watch `system` either.
#[tokio::test]
async fn an_agent_cannot_cancel_or_watch_others_conversations() {
    let a = api(tempfile::tempdir().unwrap(), false).await;
    let agent = a.agent("demo");
    // The administrator's conversation with demo, a turn running in it.
    let sent = a
        .call(
            Via::Rpc,
            &a.admin,
            "quick_message",
            json!({"toTeam": "demo", "message": "[[delay=4000]] a b c d e f g h"}),
        )
        .await
        .unwrap();
    let session = sent["sessionId"].as_str().unwrap().to_owned();
    let cancel = json!({"toTeam": "demo", "sessionId": session});
    for via in [Via::Rpc, Via::Ws, Via::Mcp] {
        let e = a
            .call(via, &agent, "session_cancel", cancel.clone())
            .await
            .unwrap_err();
        assert_eq!(e["code"], "SESSION_NOT_FOUND", "{via:?}: {e}");
    }
    // A reboot that names a conversation reboots that one, or none.
    let e = a
        .call(
            Via::Rpc,
            &a.admin,
            "session_reboot",
            json!({"toTeam": "demo", "sessionId": "00000000-0000-4000-8000-00000000beef"}),
        )
        .await
        .unwrap_err();
    assert_eq!(e["code"], "SESSION_NOT_FOUND", "{e}");
    let (status, e) = a
        .rest(
            Method::POST,
            "/api/v1/teams/demo/cancel",
            &agent,
            json!({"sessionId": session}),
        )
        .await;
    assert_eq!(
        (status, e["code"].as_str()),
        (404, Some("SESSION_NOT_FOUND")),
        "{e}"
    );
    let running = a
        .call(
            Via::Rpc,
            &a.admin,
            "get_message",
            json!({"messageId": sent["messageId"]}),
        )
        .await
        .unwrap();
    assert_eq!(running["status"], "running", "untouched: {running}");
    // Topics: refused to the agent, and `system` to a teams:read-only key.
    let reader = a
        .call(
            Via::Rpc,
            &a.admin,
            "key_create",
            json!({"name": "reader", "scopes": ["teams:read"]}),
        )
        .await
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    for (key, topic) in [
        (&agent, "system"),
        (&agent, "team:demo"),
        (&reader, "system"),
    ] {
        let mut ws = ws_connect(&format!("ws://{}/ws", a.server.addr), Some(key)).await;
        send(
            &mut ws,
            json!({"jsonrpc": "2.0", "id": 1, "method": "subscribe", "params": {"events": [topic]}}),
        )
        .await;
        let v = recv(&mut ws).await;
        assert_eq!(v["error"]["data"]["code"], "FORBIDDEN", "{topic}: {v}");
    }
    // The administrator's own cancel still works.
    let done = a
        .call(Via::Rpc, &a.admin, "session_cancel", cancel)
        .await
        .unwrap();
    assert_eq!(done["cancelled"], true, "{done}");
    // Rebooting it (the current one) starts a new one; naming it again,
    // no longer current, starts nothing.
    let named = json!({"toTeam": "demo", "sessionId": session});
    let r = a
        .call(Via::Rpc, &a.admin, "session_reboot", named.clone())
        .await
        .unwrap();
    assert_eq!(r["oldSessionId"], session.as_str(), "{r}");
    assert_ne!(r["newSessionId"], session.as_str(), "{r}");
    let e = a
        .call(Via::Rpc, &a.admin, "session_reboot", named)
        .await
        .unwrap_err();
    assert_eq!(e["code"], "CONFLICT", "{e}");
    a.stop().await;
}
