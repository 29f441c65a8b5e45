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

pub struct Harness {
    pub iris: Arc<Iris>,
    pub home: tempfile::TempDir,
}

/// Write `yaml` as the config (plus a database path inside the temp home)
/// and start Iris on it.
pub async fn start(yaml: &str) -> Harness {
    let home = tempfile::tempdir().expect("temp dir");
    start_in(home, yaml).await
}

pub async fn start_in(home: tempfile::TempDir, yaml: &str) -> Harness {
    let path = home.path().join("config.yaml");
    let text = format!("database:\n  path: data/iris.db\n{yaml}");
    std::fs::write(&path, text).expect("write config");
    let cfg = Config::load(&ConfigSource { flag: Some(path) }).expect("config loads");
    let iris = Iris::start(
        cfg,
        StartOptions {
            echo_program: iris_bin(),
            bus_capacity: 4096,
            prewarm: true,
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

    pub async fn stop(self) -> tempfile::TempDir {
        self.iris.shutdown().await;
        self.home
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

pub fn pids(h: &Harness, team: &str) -> Vec<u32> {
    h.iris
        .team_processes(team)
        .iter()
        .filter_map(|p| p.pid)
        .collect()
}
