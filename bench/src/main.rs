//! Core benchmarks (issue: core). Each compares Iris with a baseline run in
//! the same invocation, on the same machine, and reports ratios.
//!
//!   cargo build --release -p iris-cli -p iris-bench
//!   target/release/iris-bench [turn|spawn|fanout|http|mcp|stream|jobs|idle-ws|all] [--iterations N]
//!
//! `HEALTHZ=1` adds `/healthz` to `http`; `PIN=1` puts the servers on CPU 1
//! and wrk on CPU 0 (see `pinned`); `ROUNDS=N` runs `http`'s set N times
//! over, interleaved, and `RUN_SECS=N` sets each run's length (10).
//!
//! The echo agent is the release `iris` binary next to this one.

mod fanout;
mod floor;
mod http;
mod idle_ws;
mod jobs;
mod kill;
mod mcp;
mod spawn;
mod stats;
mod stream;
mod turn;

use std::path::PathBuf;

/// The same allocator as the `iris` binary, for Iris and the baselines alike.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
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
    let dir = tempfile::tempdir()?;
    let yaml = format!("settings:\n{settings}\nteams:\n  demo:\n    path: .\n    agent: echo\n");
    Ok((iris_in(dir.path(), &yaml, true).await?, dir))
}

/// An Iris over `dir` (its database there) with the configuration `yaml`.
pub async fn iris_in(
    dir: &std::path::Path,
    yaml: &str,
    prewarm: bool,
) -> anyhow::Result<Arc<Iris>> {
    let path = dir.join("config.yaml");
    std::fs::write(&path, format!("database:\n  path: iris.db\n{yaml}"))?;
    let cfg =
        Config::load(&ConfigSource { flag: Some(path) }).map_err(|e| anyhow::anyhow!("{e}"))?;
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
fn pinned() -> bool {
    std::env::var_os("PIN").is_some()
}

fn main() -> anyhow::Result<()> {
    if pinned() {
        // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes
        // inside it; sched_setaffinity only reads it.
        let ok = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(1, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
        };
        anyhow::ensure!(
            ok,
            "PIN=1 needs a second CPU: {}",
            std::io::Error::last_os_error()
        );
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

/// `RUN_SECS`: the length of each wrk run (10 s).
fn run_secs() -> u32 {
    std::env::var("RUN_SECS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10)
}

async fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().map(String::as_str).unwrap_or("all");
    let iterations = args
        .iter()
        .position(|a| a == "--iterations")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok());
    if which == "serve" {
        // For profilers: the open server of `http`, until killed.
        let (iris, _dir) = http::open().await?;
        let server = iris_server::start(iris, None).await?;
        println!("{}", server.addr);
        std::future::pending::<()>().await;
    }
    if which == "serve-secured" {
        // The secured server of `http`: prints its address and key.
        let (iris, _dir, key) = http::secured().await?;
        let server = iris_server::start(iris, None).await?;
        println!("{}\n{key}", server.addr);
        std::future::pending::<()>().await;
    }
    if which == "serve-bare" {
        // The baseline of `http`, for the same profilers.
        let (addr, _task) = http::bare(hyper::body::Bytes::from_static(b"{}")).await?;
        println!("{addr}");
        std::future::pending::<()>().await;
    }
    if which == "serve-floor" {
        // The contract's floor of `http`; an Iris first, for its metrics recorder.
        let (iris, _dir) = http::open().await?;
        let _server = iris_server::start(iris, None).await?;
        let (addr, _task) = floor::serve().await?;
        println!("{addr}");
        std::future::pending::<()>().await;
    }
    if matches!(which, "turn" | "all") {
        turn::run(iterations.unwrap_or(2000)).await?;
    }
    if matches!(which, "spawn" | "all") {
        spawn::run(iterations.unwrap_or(200)).await?;
    }
    if matches!(which, "fanout" | "all") {
        fanout::run().await?;
    }
    if matches!(which, "http" | "all") {
        http::run(run_secs()).await?;
    }
    if matches!(which, "mcp" | "all") {
        mcp::run(run_secs()).await?;
    }
    if matches!(which, "stream" | "all") {
        stream::run(iterations.unwrap_or(5)).await?;
    }
    if matches!(which, "jobs" | "all") {
        jobs::run(iterations.unwrap_or(20_000)).await?;
    }
    if which == "kill" {
        // Needs the real Claude Code CLI; not part of `all`.
        kill::run(iterations.unwrap_or(20)).await?;
    }
    if matches!(which, "idle-ws" | "all") {
        idle_ws::run(iterations.unwrap_or(10_000)).await?;
    }
    Ok(())
}
