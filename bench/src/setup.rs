//! What every benchmark starts from: the `iris` binary, the echo agent
//! started by hand (the baseline), an Iris with an echo team.

use std::path::PathBuf;
use std::sync::Arc;

use iris_core::config::{Config, ConfigSource};
use iris_core::{Iris, StartOptions};

pub fn iris_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("iris");
    anyhow::ensure!(
        bin.exists(),
        "build the iris binary first: cargo build --release -p iris-cli"
    );
    Ok(bin)
}

/// The baseline: the echo agent started by hand, with exactly the flags a
/// team's process gets.
pub fn echo_spec() -> anyhow::Result<iris_agent::LaunchSpec> {
    Ok(iris_agent::LaunchSpec::persistent(
        iris_agent::AgentKind::Echo,
        iris_bin()?,
        &iris_agent::SessionMode::New(uuid::Uuid::new_v4().to_string()),
        &[],
        vec![],
        std::env::current_dir()?,
    ))
}

/// Send `text` straight to an agent process and read until its result.
pub async fn ask_raw(p: &mut iris_agent::AgentProcess, text: &str) -> anyhow::Result<()> {
    use iris_agent::protocol::{self, AgentEvent};
    p.send(&protocol::user_message_line(text)).await?;
    loop {
        let line = p
            .next_line()
            .await
            .ok_or_else(|| anyhow::anyhow!("echo exited"))??;
        if let Ok((AgentEvent::Result(_), _)) = protocol::parse_line(&line) {
            return Ok(());
        }
    }
}

/// An Iris with one echo team over a temporary database.
/// API rate limits no benchmark reaches (under `api:`): limiting runs on
/// every request, it never refuses.
pub const UNREACHABLE: &str = "  rateLimit:\n    maxRequests: 1000000000\n    perIp: 1000000000/min\n    messages: 1000000000/min";

pub async fn iris_with_echo(settings: &str) -> anyhow::Result<(Arc<Iris>, tempfile::TempDir)> {
    iris_with_echo_on(settings, None).await
}

/// [`iris_with_echo`] on the database at `db` (default: a SQLite file in
/// its folder).
pub async fn iris_with_echo_on(
    settings: &str,
    db: Option<&str>,
) -> anyhow::Result<(Arc<Iris>, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let yaml = format!("settings:\n{settings}\nteams:\n  demo:\n    path: .\n    agent: echo\n");
    let db = db
        .map(str::to_owned)
        .unwrap_or_else(|| iris_storage::sqlite_url(&dir.path().join("iris.db")));
    Ok((iris_on(dir.path(), &yaml, true, &db).await?, dir))
}

/// An Iris over `dir` (its database there) with the configuration `yaml`.
pub async fn iris_in(
    dir: &std::path::Path,
    yaml: &str,
    prewarm: bool,
) -> anyhow::Result<Arc<Iris>> {
    let db = iris_storage::sqlite_url(&dir.join("iris.db"));
    iris_on(dir, yaml, prewarm, &db).await
}

/// An Iris over `dir` on the database at `db` with the configuration `yaml`.
pub async fn iris_on(
    dir: &std::path::Path,
    yaml: &str,
    prewarm: bool,
    db: &str,
) -> anyhow::Result<Arc<Iris>> {
    let path = dir.join("config.yaml");
    std::fs::write(&path, format!("database:\n  url: {db}\n{yaml}"))?;
    let cfg = Config::load(&ConfigSource {
        flag: Some(path),
        ..Default::default()
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let iris = Iris::start(
        cfg,
        StartOptions {
            echo_program: iris_bin()?,
            bus_capacity: 65_536,
            prewarm,
            recover: true,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    Ok(iris)
}

/// `PIN=1`: the benchmark process (every server in it) on CPU 1 and the
/// load generator on CPU 0 (`http`), so the two do not take turns on the
/// same cores. Set before the runtime starts: tokio sizes its worker pool
/// from the CPUs this process may use, so the servers get one worker.
pub fn pinned() -> bool {
    std::env::var_os("PIN").is_some()
}
