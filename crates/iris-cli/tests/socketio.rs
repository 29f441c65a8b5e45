//! Socket.IO with the real clients against a live `iris serve` with the
//! `echo` team: the official `socket.io-client` runs the original plans'
//! snippets as written (tests/clients/socketio_client.mjs: a wrong token
//! refused, tell:start → chunks → completion, cache and process
//! subscriptions, health, bad input answered with the error body, the
//! long-polling transport), python-socketio streams one tell, and a client
//! whose server is killed and started again reconnects and resubscribes.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

fn clients() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

fn python() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/venv/bin/python")
}

fn config(port: u16) -> String {
    format!(
        "api:\n  port: {port}\n  healthBroadcastInterval: 500\nsettings:\n  shutdownGrace: 500\nteams:\n  demo:\n    path: .\n    agent: echo\n"
    )
}

fn key_of(home: &std::path::Path) -> String {
    std::fs::read_to_string(home.join("credentials"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("IRIS_API_KEY=").map(str::to_owned))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_clients_speak_to_iris() {
    let home = tempfile::tempdir().unwrap();
    let (_server, base) = serve_in(home.path(), &config(0));
    let key = key_of(home.path());
    let script = clients().join("socketio_client.mjs").display().to_string();
    let stdout = client_output("node", &[&script, "all", &base, &key]).await;
    for check in [
        "a wrong token is refused",
        "cache:message carries the chunks",
        "process:spawned {team, pid",
        "unknown event: METHOD_NOT_FOUND",
        "a tell streamed over polling",
    ] {
        assert!(stdout.contains(check), "{check}: {stdout}");
    }

    let out = tokio::process::Command::new(python())
        .arg(clients().join("socketio_client.py"))
        .args([&base, &key])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["result"]["response"], "from python");
    assert!(v["chunks"].as_array().unwrap().len() > 1, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reconnects_and_resubscribes_after_the_server_drops() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let home = tempfile::tempdir().unwrap();
    let (mut first, base) = serve_in(home.path(), &config(port));
    let key = key_of(home.path());
    let mut client = tokio::process::Command::new("node")
        .arg(clients().join("socketio_client.mjs"))
        .args(["reconnect", &base, &key])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the client said something in time")
            .unwrap()
            .expect("the client is still running")
    };
    assert_eq!(next().await, "SUBSCRIBED 1 true");
    // SAFETY: killing a child process this test started.
    unsafe { libc::kill(first.0.id() as i32, libc::SIGKILL) };
    first.0.wait().unwrap();
    assert!(next().await.starts_with("DISCONNECTED"));
    std::fs::remove_file(home.path().join(".http.port")).unwrap();
    let (_second, base) = serve_in(home.path(), &config(port));
    assert_eq!(next().await, "SUBSCRIBED 2 true");
    let (status, _) = http(
        &reqwest::Client::new(),
        reqwest::Method::POST,
        format!("{base}/api/v1/teams/demo/wake"),
        Some(&key),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(next().await.starts_with("SPAWNED demo "));
    let status = tokio::time::timeout(Duration::from_secs(10), client.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}
