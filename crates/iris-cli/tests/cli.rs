//! The `iris` binary itself: config check, init, call --local, tools, and
//! that no agent outlives a killed Iris.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

#[test]
fn config_check_accepts_good_files_and_names_file_key_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "settings:\n  maxProcesses: ${IRIS_TEST_N:-3}\nteams:\n  demo:\n    path: .\n    agent: echo\n").unwrap();
    let out = iris(dir.path())
        .args(["config", "check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    succeeded(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 team)"));

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "teams:\n  backend:\n    path: .\n    agent: echo\n    colour: red\n",
    )
    .unwrap();
    let out = iris(dir.path())
        .args(["config", "check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml")
            && err.contains("teams.backend")
            && err.contains("unknown field `colour`"),
        "{err}"
    );

    // Every problem at once, each with its key path.
    let many = dir.path().join("many.yaml");
    std::fs::write(
        &many,
        "api:\n  port: high\nsettings:\n  maxProcesses: 0\nteams:\n  backend:\n    path: .\n    agent: echo\n    colour: red\n",
    )
    .unwrap();
    let out = iris(dir.path())
        .args(["config", "check", "--config"])
        .arg(&many)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for line in [
        "many.yaml: api.port: wrong type: string \"high\", expected a whole number from 0 to 65535",
        "many.yaml: teams.backend.colour: unknown field `colour`",
        "many.yaml: settings.maxProcesses: expected a number greater than 0",
        "3 problems",
    ] {
        assert!(err.contains(line), "{line} in:\n{err}");
    }
    // `serve` prints them all too, and does not start.
    let out = iris(dir.path())
        .args(["serve", "--config"])
        .arg(&many)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("api.port") && err.contains("teams.backend.colour"),
        "{err}"
    );

    let missing = dir.path().join("missing.yaml");
    std::fs::write(
        &missing,
        "teams:\n  backend:\n    path: ./nope\n    agent: echo\n",
    )
    .unwrap();
    let out = iris(dir.path())
        .args(["config", "check"])
        .env("IRIS_CONFIG_PATH", &missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("teams.backend.path: folder"));
}

#[test]
fn init_writes_a_starter_config_that_checks_clean() {
    let dir = tempfile::tempdir().unwrap();
    let out = iris(dir.path()).arg("init").output().unwrap();
    assert!(out.status.success());
    assert!(dir.path().join("config.yaml").exists());
    let again = iris(dir.path()).arg("init").output().unwrap();
    assert!(!again.status.success(), "no silent overwrite");
    let check = iris(dir.path()).args(["config", "check"]).output().unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn call_local_prints_json_and_fails_with_the_error_body() {
    let dir = tempfile::tempdir().unwrap();
    // No config file: the embedded defaults give a `demo` echo team.
    let out = iris(dir.path())
        .args([
            "call",
            "send_message",
            "--local",
            "--params",
            r#"{"toTeam":"demo","message":"hi from the cli","timeout":0}"#,
        ])
        .output()
        .unwrap();
    succeeded(&out);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["response"], "hi from the cli");
    if iris_storage::testing::postgres_server().is_none() {
        assert!(
            dir.path().join("data/iris.db").exists(),
            "database under IRIS_HOME"
        );
    }

    let out = iris(dir.path())
        .args(["tell", "demo", "told", "--local"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["response"], "told");

    let out = iris(dir.path())
        .args([
            "call",
            "session_report",
            "--local",
            "--params",
            r#"{"toTeam":"demo"}"#,
        ])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["messages"].as_array().unwrap().len(),
        2,
        "history persisted across runs: {v}"
    );

    for (params, code) in [
        (r#"{"toTeam":"nope","message":"x"}"#, "TEAM_NOT_FOUND"),
        (r#"{"toTeam":"demo","message":""}"#, "VALIDATION_ERROR"),
        ("{not json", "MALFORMED_JSON"),
    ] {
        let out = iris(dir.path())
            .args(["call", "send_message", "--local", "--params", params])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["code"], code, "{v}");
        assert!(v["statusCode"].is_u64() && v["timestamp"].is_i64() && v["error"].is_string());
    }
}

#[test]
fn tools_lists_every_operation_with_schemas() {
    let dir = tempfile::tempdir().unwrap();
    // A short table by default: a line per operation with its scope.
    let out = iris(dir.path()).arg("tools").output().unwrap();
    succeeded(&out);
    let table = String::from_utf8_lossy(&out.stdout);
    let line = table
        .lines()
        .find(|l| l.starts_with("send_message "))
        .expect("send_message in the table");
    assert!(line.contains("messages:write"), "{line}");
    assert!(table.len() < 20_000, "a short table: {} bytes", table.len());
    let out = iris(dir.path()).args(["tools", "--json"]).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let send = v
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "send_message")
        .unwrap();
    assert_eq!(send["scope"], "messages:write");
    assert!(
        send["inputSchema"]["required"]
            .as_array()
            .unwrap()
            .contains(&Value::from("toTeam"))
    );
}

/// Children of every thread of `pid` (tokio spawns from worker threads).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .flat_map(|t| {
            std::fs::read_to_string(t.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|s| s.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Kills the server if the test fails half-way.
#[test]
fn agents_die_with_a_killed_iris_and_stop_with_a_terminated_one() {
    for signal in [libc::SIGKILL, libc::SIGTERM] {
        let dir = tempfile::tempdir().unwrap();
        let (mut server, _) = serve_in(
            dir.path(),
            "api:\n  port: 0\nteams:\n  warm:\n    path: .\n    agent: echo\n    prewarm: true\n",
        );
        let mut kids = Vec::new();
        for _ in 0..200 {
            kids = children(server.0.id());
            if !kids.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        assert_eq!(kids.len(), 1, "the prewarmed agent is a child of iris");
        // SAFETY: signalling the server this test started.
        unsafe { libc::kill(server.0.id() as i32, signal) };
        let status = server.0.wait().unwrap();
        if signal == libc::SIGTERM {
            assert!(status.success(), "clean shutdown exits 0");
        }
        let mut gone = false;
        for _ in 0..200 {
            if !alive(kids[0]) {
                gone = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        assert!(gone, "agent {} outlived iris (signal {signal})", kids[0]);
    }
}

#[test]
fn client_commands_reach_a_running_server_through_its_port_file() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, _) = serve_in(dir.path(), OPEN_DEMO);
    let port_file = dir.path().join(".http.port");
    let out = iris(dir.path())
        .args(["tell", "demo", "over http"])
        .output()
        .unwrap();
    succeeded(&out);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["response"], "over http");
    assert_eq!(v["from"], "api");
    let out = iris(dir.path())
        .args(["call", "team_status", "--params", r#"{"team":"ghost"}"#])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["code"], "TEAM_NOT_FOUND");
    terminate(&mut server);
    assert!(!port_file.exists(), "the port file is removed on shutdown");
    // Its log went to a file: plain text, no terminal colour codes.
    let log = std::fs::read_to_string(dir.path().join("serve.err")).unwrap();
    assert!(log.contains("API listening"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour codes in a file: {log:?}");
    let out = iris(dir.path())
        .args(["call", "get_date"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "no server, no answer");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no running server"));
}

#[test]
fn a_local_command_beside_a_running_server_leaves_its_turns_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = serve_in(dir.path(), OPEN_DEMO);
    let http = |method: &str, path: &str, body: Option<&str>| {
        let mut c = Command::new("curl");
        c.args(["-fsS", "-X", method, &format!("{url}{path}")]);
        if let Some(b) = body {
            c.args(["-H", "content-type: application/json", "-d", b]);
        }
        let out = c.output().unwrap();
        succeeded(&out);
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let sent = http(
        "POST",
        "/api/v1/teams/quick-tell",
        Some(r#"{"toTeam":"demo","message":"slow [[delay=1500]]"}"#),
    );
    let id = sent["messageId"].as_str().unwrap().to_owned();
    std::thread::sleep(Duration::from_millis(300));
    // A one-shot local command opens the same database.
    let out = iris(dir.path())
        .args(["call", "get_date", "--local"])
        .output()
        .unwrap();
    succeeded(&out);
    let history = http("GET", "/api/v1/messages/history?team=demo", None);
    let status = &history["messages"][0]["status"];
    assert_eq!(
        status, "running",
        "the server's turn was not failed: {history}"
    );
    std::thread::sleep(Duration::from_millis(1600));
    let done = http("GET", &format!("/api/v1/messages/{id}"), None);
    assert_eq!(done["status"], "completed", "{done}");
    assert!(done["error"].is_null(), "{done}");
}

const OPEN_DEMO: &str =
    "api:\n  port: 0\n  requireAuth: false\nteams:\n  demo:\n    path: .\n    agent: echo\n";

#[test]
fn the_curl_examples_run_against_a_live_server() {
    let dir = tempfile::tempdir().unwrap();
    // Authentication on: the examples use the key of the first start.
    let (_server, url) = serve_in(
        dir.path(),
        "api:\n  port: 0\nteams:\n  demo:\n    path: .\n    agent: echo\n",
    );
    let creds = std::fs::read_to_string(dir.path().join("credentials")).unwrap();
    let key = creds
        .lines()
        .find_map(|l| l.strip_prefix("IRIS_API_KEY="))
        .unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/curl-examples.sh");
    let out = Command::new("bash")
        .arg(script)
        .env("IRIS_URL", &url)
        .env("IRIS_API_KEY", key)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{stderr}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains("all examples passed"));
    assert!(
        stderr.contains("> GET /api/v1/admin/audit-logs/verify"),
        "the security examples ran"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("event: complete"),
        "the streaming example streamed"
    );
}

#[test]
fn the_api_page_renders_in_a_real_browser() {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("Chromium is not installed: run scripts/test.sh");
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = serve_in(dir.path(), OPEN_DEMO);
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("{url}/api/v1/docs"))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains(r#"data-ready="yes""#),
        "the script rendered the document:\n{dom}"
    );
    assert!(dom.contains(r#"data-path="/api/v1/teams/tell""#));
    assert!(dom.contains("send_message"));
}

/// deploy/iris.service passes `systemd-analyze verify` (with `ExecStart`
/// pointed at the binary built here, where it is installed to
/// /usr/local/bin on a server).
#[test]
fn the_systemd_unit_verifies() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let unit = std::fs::read_to_string(root.join("deploy/iris.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/iris serve"),
        "{unit}"
    );
    let here = unit.replace("/usr/local/bin/iris", &iris_bin().display().to_string());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("iris.service");
    std::fs::write(&path, here).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian's systemd; scripts/test.sh installs it)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn completions_are_printed_for_each_shell() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("bash", "complete -F _iris"),
        ("zsh", "#compdef iris"),
        ("fish", "complete -c iris"),
    ] {
        let out = iris(dir.path())
            .args(["completions", shell])
            .output()
            .unwrap();
        succeeded(&out);
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script:.300}");
        assert!(
            script.contains("jobs") && script.contains("dashboard-port"),
            "{shell}"
        );
    }
    // bash accepts the script as it is.
    let out = iris(dir.path())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    let path = dir.path().join("iris.bash");
    std::fs::write(&path, &out.stdout).unwrap();
    let check = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p iris", path.display()))
        .output()
        .unwrap();
    succeeded(&check);
    let out = iris(dir.path())
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "an unknown shell is refused");
}

#[test]
fn serve_help_names_the_defaults_home_and_config_path() {
    let dir = tempfile::tempdir().unwrap();
    let out = iris(dir.path()).args(["serve", "--help"]).output().unwrap();
    succeeded(&out);
    let help = String::from_utf8_lossy(&out.stdout);
    for part in [
        "--host <ADDR>",
        "[default: 127.0.0.1]",
        "--port <PORT>",
        "[default: 1615]",
        "--dashboard-port <PORT>",
        "[default: 3100",
        "IRIS_HOME",
        "~/.iris",
        "$IRIS_HOME/config.yaml",
        "IRIS_CONFIG_PATH",
    ] {
        assert!(help.contains(part), "{part} in:\n{help}");
    }
}
