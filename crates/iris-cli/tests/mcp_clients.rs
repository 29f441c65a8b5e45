//! Real MCP clients against a live `iris serve` (and `iris mcp`), each the
//! official one, pinned and installed by `scripts/test.sh`: the Python SDK
//! (`mcp` on PyPI) over stdio and Streamable HTTP in both revisions, the
//! TypeScript SDKs (`@modelcontextprotocol/sdk` 1.x and
//! `@modelcontextprotocol/client` 2.x) in both revisions, the official
//! conformance suite, and the real Claude Code CLI calling Iris's tools
//! against the local Messages API stub. The client scripts are in
//! `tests/clients/`.

#[path = "common/anthropic_stub.rs"]
#[allow(dead_code)]
mod anthropic_stub;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn clients() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

fn installed(path: PathBuf) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: run scripts/test.sh, which installs the test clients",
        path.display()
    );
    path
}

fn python() -> PathBuf {
    installed(root().join(".tools/venv/bin/python"))
}

fn node_modules() -> PathBuf {
    installed(clients().join("node_modules"))
}

fn iris_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_iris"))
}

/// A live `iris serve` on a temporary home with the echo team `demo`.
struct Server {
    child: Child,
    home: tempfile::TempDir,
    url: String,
    key: String,
}

impl Server {
    fn start(api: &str) -> Server {
        let home = tempfile::tempdir().unwrap();
        let config = format!(
            "api:\n  port: 0\n{api}database:\n  path: data/iris.db\nteams:\n  demo:\n    path: .\n    agent: echo\n"
        );
        std::fs::write(home.path().join("config.yaml"), config).unwrap();
        let child = Command::new(iris_bin())
            .arg("serve")
            .env("IRIS_HOME", home.path())
            .env(
                "IRIS_DATABASE_URL",
                iris_storage::testing::database_url(home.path()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let port_file = home.path().join(".http.port");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !port_file.exists() || std::fs::read_to_string(&port_file).unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let port = std::fs::read_to_string(&port_file).unwrap();
        let key = std::fs::read_to_string(home.path().join("credentials"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("IRIS_API_KEY=").map(str::to_owned))
            .unwrap_or_default();
        Server {
            child,
            url: format!("http://127.0.0.1:{}/mcp", port.trim()),
            home,
            key,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run a client to its end (2 minutes at most); its last line of output
/// is the JSON of what it saw.
fn run(command: &mut Command) -> Value {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{command:?} did not finish in 2 minutes");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr),
    );
    assert!(status.success(), "{command:?} failed\n{out}\n{err}");
    let last = out.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|_| panic!("no JSON line from {command:?}\n{out}\n{err}"))
}

fn py(args: &[&str]) -> Command {
    let mut c = Command::new(python());
    c.arg(clients().join("mcp_client.py")).args(args);
    c
}

#[test]
fn python_sdk_over_streamable_http_in_both_revisions_and_401_without_a_key() {
    let s = Server::start("");
    for mode in ["legacy", "2026-07-28"] {
        let seen = run(&mut py(&["http", &s.url, &s.key, mode]));
        assert_eq!(seen["response"], "hello from python", "{mode}: {seen}");
        assert!(seen["progress"].as_u64() >= Some(1), "{mode}: {seen}");
        assert!(seen["tools"].as_u64() > Some(20), "{mode}: {seen}");
    }
    let seen = run(&mut py(&["noauth", &s.url]));
    assert_eq!(seen["refused"], 401);
}

#[test]
fn python_sdk_over_stdio_runs_the_core_in_process() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("config.yaml"),
        "database:\n  path: data/iris.db\nteams:\n  demo:\n    path: .\n    agent: echo\n",
    )
    .unwrap();
    let bin = iris_bin();
    let seen = run(py(&["stdio", &bin.to_string_lossy()])
        .env("IRIS_HOME", home.path())
        .env(
            "IRIS_DATABASE_URL",
            iris_storage::testing::database_url(home.path()),
        ));
    assert_eq!(seen["response"], "hello from python", "{seen}");
    assert!(seen["progress"].as_u64() >= Some(1), "{seen}");
}

#[test]
fn python_sdk_over_stdio_relays_to_a_server_with_connect() {
    let s = Server::start("");
    let bin = iris_bin();
    // `iris mcp --connect` (no URL): the server of this IRIS_HOME, with the
    // key of its credentials file.
    let mut c = Command::new(python());
    c.arg(clients().join("mcp_client.py"))
        .args(["stdio", &bin.to_string_lossy(), "--connect"])
        .env("IRIS_HOME", s.home.path())
        .env(
            "IRIS_DATABASE_URL",
            iris_storage::testing::database_url(s.home.path()),
        );
    let seen = run(&mut c);
    assert_eq!(seen["response"], "hello from python", "{seen}");
    assert!(seen["progress"].as_u64() >= Some(1), "{seen}");
}

#[test]
fn typescript_sdks_in_both_revisions_with_progress_and_cancellation() {
    let s = Server::start("");
    node_modules();
    for sdk in ["sdk1", "v2-legacy", "v2-2026"] {
        let seen = run(Command::new("node").current_dir(clients()).args([
            "mcp_client.mjs",
            sdk,
            &s.url,
            &s.key,
        ]));
        assert_eq!(seen["cancelled"], "cancelled", "{sdk}: {seen}");
        assert!(seen["progress"].as_u64() >= Some(2), "{sdk}: {seen}");
    }
}

/// The scenarios of the official suite that do not need its own fixture
/// tools, resources or prompts (docs/mcp.md lists the others and why).
const CONFORMANCE: &[&str] = &[
    "server-initialize",
    "ping",
    "tools-list",
    "logging-set-level",
    "server-sse-multiple-streams",
    "resources-list",
];

#[test]
fn the_conformance_suite_passes_every_scenario_without_fixtures() {
    // The suite sends no credential: a loopback server without `requireAuth`.
    let s = Server::start("  requireAuth: false\n");
    let suite = node_modules().join("@modelcontextprotocol/conformance/dist/index.js");
    for scenario in CONFORMANCE {
        let out = Command::new("node")
            .arg(&suite)
            .args(["server", "--url", &s.url, "--scenario", scenario])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains(" 0 failed"),
            "{scenario}:\n{text}"
        );
    }
}

#[test]
fn claude_code_calls_an_iris_tool_over_mcp_and_its_result_reaches_the_model() {
    let s = Server::start("");
    let stub = anthropic_stub::start();
    let claude =
        installed(root().join(".tools/node_modules/@anthropic-ai/claude-code-linux-x64/claude"));
    let work = tempfile::tempdir().unwrap();
    let config = serde_json::json!({"mcpServers": {"iris": {
        "type": "http", "url": s.url, "headers": {"Authorization": format!("Bearer {}", s.key)}
    }}});
    let config_file = work.path().join("mcp.json");
    std::fs::write(&config_file, config.to_string()).unwrap();
    let claude_home = work.path().join("home");
    std::fs::create_dir_all(&claude_home).unwrap();
    let seen = run(Command::new(claude)
        .current_dir(work.path())
        .env("HOME", &claude_home)
        .env("ANTHROPIC_BASE_URL", &stub.url)
        .env("ANTHROPIC_API_KEY", "sk-ant-test-not-a-real-key")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("DISABLE_TELEMETRY", "1")
        .env("DISABLE_ERROR_REPORTING", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .args([
            "-p",
            "MSG<tool mcp__iris__list_teams>",
            "--output-format",
            "json",
        ])
        .arg("--mcp-config")
        .arg(&config_file)
        .args([
            "--strict-mcp-config",
            "--allowedTools",
            "mcp__iris__list_teams",
        ]));
    let answer = seen["result"].as_str().unwrap_or_default();
    assert!(answer.starts_with("tool said: "), "{seen}");
    assert!(
        answer.contains("\"name\":\"demo\""),
        "the tool's result: {answer}"
    );
    assert!(answer.contains("totalTeams"), "{answer}");
}

/// The `claude mcp add` commands of docs/mcp.md, run as written (with this
/// server's port) by the real CLI in a home of its own: each server they
/// add answers `claude mcp list`'s health check.
#[test]
fn the_claude_code_commands_of_the_docs_connect() {
    let s = Server::start("");
    let doc = std::fs::read_to_string(root().join("docs/mcp.md")).unwrap();
    let commands: Vec<String> = doc
        .lines()
        .filter(|l| l.starts_with("claude mcp add "))
        .map(|l| l.replace("http://127.0.0.1:1615/mcp", &s.url))
        .collect();
    assert_eq!(commands.len(), 3, "{commands:?}");
    // `claude` and `iris` on the PATH, as a user has them.
    let bin = tempfile::tempdir().unwrap();
    let claude =
        installed(root().join(".tools/node_modules/@anthropic-ai/claude-code-linux-x64/claude"));
    std::os::unix::fs::symlink(claude, bin.path().join("claude")).unwrap();
    std::os::unix::fs::symlink(iris_bin(), bin.path().join("iris")).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let home = tempfile::tempdir().unwrap();
    let shell = |line: &str| {
        let out = Command::new("sh")
            .args(["-c", line])
            .current_dir(home.path())
            .env("PATH", &path)
            .env("HOME", home.path())
            .env("IRIS_HOME", s.home.path())
            .env(
                "IRIS_DATABASE_URL",
                iris_storage::testing::database_url(s.home.path()),
            )
            .env("KEY", &s.key)
            .env("DISABLE_AUTOUPDATER", "1")
            .env("DISABLE_TELEMETRY", "1")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{line}:\n{text}");
        text
    };
    for c in &commands {
        shell(c);
    }
    let listed = shell("claude mcp list");
    for name in ["iris", "iris-local", "iris-relay"] {
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with(&format!("{name}:")) && l.contains("Connected")),
            "{name}:\n{listed}"
        );
    }
}
