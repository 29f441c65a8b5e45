//! Shared set-up for the end-to-end tests: a real `Iris` over a temporary
//! home with a real SQLite file, whose echo teams run the real `iris` binary.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use iris_core::bus::{Delivery, Event, Subscription};
use iris_core::config::{Config, ConfigSource};
use iris_core::{Ctx, Iris, IrisError, StartOptions};
use serde_json::Value;

pub fn iris_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_iris"))
}

/// The Claude Code CLI `scripts/test.sh` installs (or `$IRIS_CLAUDE_BIN`).
pub fn claude_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("IRIS_CLAUDE_BIN") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let bin = root.join(".tools/node_modules/@anthropic-ai/claude-code-linux-x64/claude");
    assert!(
        bin.exists(),
        "Claude Code is not installed at {}: run scripts/test.sh (or set IRIS_CLAUDE_BIN)",
        bin.display()
    );
    bin
}

/// The config lines of a `claude` team `name` working in `./work`, its
/// HOME at `home`, talking to the Messages API stub at `stub_url`;
/// `extra` adds lines under the team (indented 4).
pub fn claude_team(name: &str, home: &std::path::Path, stub_url: &str, extra: &str) -> String {
    format!(
        "  {name}:\n    path: ./work\n    agent: claude\n    claudePath: {bin}\n{extra}    env:\n      HOME: {home}\n      ANTHROPIC_BASE_URL: {stub_url}\n      ANTHROPIC_API_KEY: sk-ant-test-not-a-real-key\n      DISABLE_AUTOUPDATER: '1'\n      DISABLE_TELEMETRY: '1'\n      DISABLE_ERROR_REPORTING: '1'\n      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1'\n",
        bin = claude_bin().display(),
        home = home.display(),
    )
}

pub struct Harness {
    pub iris: Arc<Iris>,
    pub home: tempfile::TempDir,
}

/// Write `yaml` as the config (plus the test's own database: a SQLite file
/// inside the temp home, or a Postgres database under
/// `IRIS_TEST_POSTGRES`) and start Iris on it.
pub async fn start(yaml: &str) -> Harness {
    let home = tempfile::tempdir().expect("temp dir");
    start_in(home, yaml).await
}

pub async fn start_in(home: tempfile::TempDir, yaml: &str) -> Harness {
    start_with_home(home, yaml, false).await
}

/// [`start_in`] with `home` as `$IRIS_HOME` too (else it is the
/// environment's, as for a one-shot command): where Iris keeps its
/// credentials, worktrees and the agents' own folders.
pub async fn start_at(home: tempfile::TempDir, yaml: &str) -> Harness {
    start_with_home(home, yaml, true).await
}

async fn start_with_home(home: tempfile::TempDir, yaml: &str, as_iris_home: bool) -> Harness {
    let path = home.path().join("config.yaml");
    // SQLite: the file as `database.path` names it (what installations
    // from before `database.url` have); Postgres: the test's own database.
    let text = match iris_storage::testing::postgres_server() {
        None => format!("database:\n  path: data/iris.db\n{yaml}"),
        Some(_) => format!(
            "database:\n  url: {}\n{yaml}",
            iris_storage::testing::database_url(home.path())
        ),
    };
    std::fs::write(&path, text).expect("write config");
    let cfg = Config::load(&ConfigSource {
        flag: Some(path),
        ..Default::default()
    })
    .expect("config loads");
    let mut cfg = cfg;
    if as_iris_home {
        cfg.home = home.path().to_path_buf();
    }
    let iris = Iris::start(
        cfg,
        StartOptions {
            echo_program: iris_bin(),
            bus_capacity: 4096,
            prewarm: true,
            recover: true,
        },
    )
    .await
    .expect("iris starts");
    Harness { iris, home }
}

/// A config with one echo team `demo` and the given settings lines.
pub fn echo_config(settings: &str) -> String {
    format!("settings:\n{settings}\nteams:\n  demo:\n    path: .\n    agent: echo\n")
}

impl Harness {
    pub async fn call(&self, op: &str, params: Value) -> Result<Value, IrisError> {
        self.iris.dispatch(Ctx::local(), op, params).await
    }

    pub async fn tell(&self, team: &str, message: &str) -> Result<Value, IrisError> {
        self.call(
            "send_message",
            serde_json::json!({"toTeam": team, "message": message, "timeout": 0}),
        )
        .await
    }

    /// Serve this Iris's API (on its configured port) and make an API key
    /// with `role`: what the HTTP tests start from.
    pub async fn serve_with_key(&self, role: &str) -> (iris_server::Running, String) {
        let server = iris_server::start(self.iris.clone(), None).await.unwrap();
        let (key, _) = self
            .iris
            .auth()
            .create_key(
                iris_core::auth::NewKey::with_role(role, role),
                &iris_core::auth::Principal::local(),
                &iris_core::auth::Origin::default(),
            )
            .await
            .unwrap();
        (server, key)
    }

    /// A new API key with `role`, limited to `teams` if given, expiring
    /// after `expires_in` if given: the key and its id.
    pub async fn key(
        &self,
        role: &str,
        teams: Option<&[&str]>,
        expires_in: Option<Duration>,
    ) -> (String, String) {
        let mut new = iris_core::auth::NewKey::with_role(role, role);
        new.teams = teams.map(|t| t.iter().map(|s| (*s).to_owned()).collect());
        new.expires_in = expires_in;
        let (key, info) = self
            .iris
            .auth()
            .create_key(
                new,
                &iris_core::auth::Principal::local(),
                &iris_core::auth::Origin::default(),
            )
            .await
            .unwrap();
        (key, info.id)
    }

    pub async fn stop(self) -> tempfile::TempDir {
        self.iris.shutdown().await;
        self.home
    }
}

/// An Iris and its API server, in this process.
pub struct Served {
    pub h: Harness,
    pub server: iris_server::Running,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub http: reqwest::Client,
}

/// [`start`] `yaml` (which must set `api.port: 0`) and serve its API.
pub async fn served(yaml: &str) -> Served {
    let h = start(yaml).await;
    let server = iris_server::start(h.iris.clone(), None).await.unwrap();
    Served {
        base: format!("http://{}", server.addr),
        h,
        server,
        http: reqwest::Client::new(),
    }
}

impl Served {
    pub async fn stop(self) {
        self.server.stop().await;
        self.h.stop().await;
    }
}

/// Next event of a subscription, failing the test after 10 s.
pub async fn next_event(sub: &mut Subscription) -> Arc<Event> {
    match tokio::time::timeout(Duration::from_secs(10), sub.recv()).await {
        Ok(Some(Delivery::Event(e))) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next());
            state != Some("Z") && state != Some("X")
        }
        Err(_) => false,
    }
}

/// Poll `f` until true or 10 s pass.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Poll `f` until it gives a value (`secs` at most).
pub async fn until_some<F, Fut>(secs: u64, f: F) -> Value
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<Value>>,
{
    for _ in 0..secs * 20 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("nothing came in {secs} s");
}

/// Run a client script (`program` with `args`) to its end; it must
/// succeed: its stdout.
pub async fn client_output(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> String {
    let out = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// [`client_output`] whose last line is its JSON report.
pub async fn client_report(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Value {
    let stdout = client_output(program, args).await;
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

impl Harness {
    /// Message `id` as `get_message` gives it.
    pub async fn get_message(&self, id: &str) -> Value {
        self.call("get_message", serde_json::json!({"messageId": id}))
            .await
            .unwrap()
    }
}

/// Send `message` to `team` without waiting; its message id.
pub async fn queue(h: &Harness, team: &str, message: &str) -> String {
    let r = h
        .call(
            "quick_message",
            serde_json::json!({"toTeam": team, "message": message}),
        )
        .await
        .unwrap();
    r["messageId"].as_str().unwrap().to_owned()
}

/// Message `id` once its turn has ended (90 s at most).
pub async fn ended(h: &Harness, id: &str) -> Value {
    until_some(90, || async {
        let m = h.get_message(id).await;
        (m["status"] != "running" && m["status"] != "queued").then_some(m)
    })
    .await
}

/// The first pending approval, once there is one (`secs` at most).
pub async fn pending_approval(h: &Harness, secs: u64) -> Value {
    until_some(secs, || async {
        let l = h
            .call("approval_list", serde_json::json!({"status": "pending"}))
            .await
            .ok()?;
        l["approvals"].as_array().and_then(|a| a.first().cloned())
    })
    .await
}

pub fn pids(h: &Harness, team: &str) -> Vec<u32> {
    h.iris
        .team_processes(team)
        .iter()
        .filter_map(|p| p.pid)
        .collect()
}

/// The `iris` binary run in `home` (as `IRIS_HOME` and working folder);
/// under `IRIS_TEST_POSTGRES`, on the test's database for that home
/// (`IRIS_DATABASE_URL`; on SQLite, the default file under the home).
pub fn iris(home: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(iris_bin());
    if iris_storage::testing::postgres_server().is_some() {
        c.env(
            "IRIS_DATABASE_URL",
            iris_storage::testing::database_url(home),
        );
    } else {
        c.env_remove("IRIS_DATABASE_URL");
    }
    c.env("IRIS_HOME", home)
        .env_remove("IRIS_CONFIG_PATH")
        .env_remove("IRIS_API_KEY")
        .current_dir(home);
    c
}

/// A connection pool on the database of the Iris whose home is `home`,
/// for tests that change it behind Iris's back.
pub async fn raw_db(home: &std::path::Path) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::AnyPool::connect(&iris_storage::testing::database_url(home))
        .await
        .unwrap()
}

/// A child process killed and reaped when dropped.
pub struct Reap(pub std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `iris serve` with `config` (which must use port 0) in `dir`, its
/// output in `dir/serve.out` and `dir/serve.err`; returns it once
/// listening, with its base URL.
pub fn serve_in(dir: &std::path::Path, config: &str) -> (Reap, String) {
    std::fs::write(dir.join("config.yaml"), config).unwrap();
    serve_with(dir, &[])
}

/// Start `iris serve` in `dir` (as `IRIS_HOME`) with `args` after it, as
/// [`serve_in`] does, on whatever configuration it finds.
pub fn serve_with(dir: &std::path::Path, args: &[&str]) -> (Reap, String) {
    let mut cmd = iris(dir);
    cmd.arg("serve").args(args);
    spawn_serve(dir, cmd)
}

/// Start `iris serve` in `dir` on the database at `url` (another node of
/// an installation whose database another home's Iris made).
pub fn serve_on(dir: &std::path::Path, url: &str) -> (Reap, String) {
    let mut cmd = iris(dir);
    cmd.arg("serve").env("IRIS_DATABASE_URL", url);
    spawn_serve(dir, cmd)
}

/// Spawn `cmd` (an `iris serve`) as [`serve_with`] does.
pub fn spawn_serve(dir: &std::path::Path, mut cmd: std::process::Command) -> (Reap, String) {
    let _ = std::fs::remove_file(dir.join(".http.port"));
    let out = std::fs::File::create(dir.join("serve.out")).unwrap();
    let err = std::fs::File::create(dir.join("serve.err")).unwrap();
    let server = Reap(cmd.stdout(out).stderr(err).spawn().unwrap());
    let port_file = dir.join(".http.port");
    for _ in 0..400 {
        if let Ok(p) = std::fs::read_to_string(&port_file)
            && !p.trim().is_empty()
        {
            return (server, format!("http://127.0.0.1:{}", p.trim()));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!(
        "the server did not write its port file: {}",
        std::fs::read_to_string(dir.join("serve.err")).unwrap_or_default()
    );
}

/// The admin key the first `iris serve` in `dir` wrote to its credentials.
pub fn key_in(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("credentials"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("IRIS_API_KEY=").map(str::to_owned))
        .unwrap()
}

/// A WebSocket client connection.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket to `url` (`ws://…`), with `Authorization: Bearer <cred>`
/// when `cred` is given.
pub async fn ws_connect(url: &str, cred: Option<&str>) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    if let Some(c) = cred {
        req.headers_mut()
            .insert("authorization", format!("Bearer {c}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

pub async fn send(ws: &mut Ws, v: Value) {
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        v.to_string().into(),
    ))
    .await
    .unwrap();
}

/// The next JSON text message (pings skipped), within 10 s.
pub async fn recv(ws: &mut Ws) -> Value {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message in time");
        match m {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// SIGTERM a server started by a test and check it exits cleanly.
pub fn terminate(server: &mut Reap) {
    // SAFETY: signalling a child process this test started.
    unsafe { libc::kill(server.0.id() as i32, libc::SIGTERM) };
    assert!(server.0.wait().unwrap().success());
}

/// Check that a command run by a test succeeded, showing its stderr if not.
pub fn succeeded(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One HTTP request with an optional bearer and a JSON body (`Null`: no
/// body): the status and the JSON answer (`Null` when it is not JSON).
pub async fn http(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    bearer: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let mut req = client.request(method, url);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    if !body.is_null() {
        req = req.json(&body);
    }
    let r = req.send().await.expect("the request is sent");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// `message` to `team` over `POST /api/v1/teams/<team>/stream` (no
/// credential) at `addr`: the whole SSE text, once the turn has ended.
pub async fn stream_text(addr: impl std::fmt::Display, team: &str, message: &str) -> String {
    reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/teams/{team}/stream"))
        .json(&serde_json::json!({"message": message}))
        .send()
        .await
        .expect("the request is sent")
        .text()
        .await
        .expect("the stream is read")
}

/// One MCP `tools/call` over Streamable HTTP (revision 2026-07-28, no
/// session) as `key`: the JSON-RPC answer.
pub async fn mcp_tool_call(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    tool: &str,
    arguments: Value,
) -> Value {
    let meta = serde_json::json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                  "io.modelcontextprotocol/clientCapabilities": {}});
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                  "params": {"name": tool, "arguments": arguments, "_meta": meta}});
    let text = client
        .post(format!("{base}/mcp"))
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", tool)
        .json(&body)
        .send()
        .await
        .expect("the request is sent")
        .text()
        .await
        .expect("an answer");
    let line = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .find(|d| d.contains("\"id\":1"))
        .unwrap_or(&text)
        .trim()
        .to_owned();
    serde_json::from_str(&line).expect("a JSON-RPC answer")
}

/// `git -C dir args…`, which must succeed: its output.
pub fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// SIGKILL the first process of `team` and wait until Iris noticed.
pub async fn kill_first_process(h: &Harness, team: &str) -> u32 {
    let pid = pids(h, team)[0];
    // SAFETY: signalling a child process this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    eventually("killed process noticed", || {
        h.iris
            .team_processes(team)
            .iter()
            .all(|p| p.pid != Some(pid))
    })
    .await;
    pid
}

/// Whether a CLI table shows a time as `2026-12-07 08:51:40 UTC`.
pub fn human_time(table: &str) -> bool {
    table.split("  ").any(|cell| {
        let c = cell.trim().as_bytes();
        c.len() == 23
            && c.ends_with(b" UTC")
            && c[4] == b'-'
            && c[10] == b' '
            && c[13] == b':'
            && c.iter()
                .take(19)
                .all(|b| b.is_ascii_digit() || b"-: ".contains(b))
    })
}

/// Whether a CLI table shows a raw epoch-milliseconds number.
pub fn epoch_ms(table: &str) -> bool {
    table
        .split_whitespace()
        .any(|w| w.len() == 13 && w.bytes().all(|b| b.is_ascii_digit()))
}

/// Webhook deliveries a tiny receiver got: (path, body).
pub type Hits = std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>;

/// A webhook receiver on loopback: answers 500 to the first `fail_first`
/// requests, then 200; records every request.
pub fn receiver(fail_first: usize) -> (String, Hits) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits: Hits = Default::default();
    let keep = hits.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
            let mut length = 0;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some((k, v)) = h.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let seen = {
                let mut hits = keep.lock().unwrap();
                hits.push((path, body));
                hits.len()
            };
            let answer: &[u8] = if seen <= fail_first {
                b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            };
            let _ = (&conn).write_all(answer);
        }
    });
    (url, hits)
}
