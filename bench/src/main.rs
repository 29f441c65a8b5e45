//! Core benchmarks (issue: core). Each compares Iris with a baseline run in
//! the same invocation, on the same machine, and reports ratios.
//!
//!   cargo build --release -p iris-cli -p iris-bench
//!   target/release/iris-bench [turn|spawn|fanout|http|mcp|stream|jobs|idle-ws|postgres|cluster|failover|all] [--iterations N]
//!
//! `postgres` needs a PostgreSQL server (`IRIS_BENCH_POSTGRES`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and is not part of `all`;
//! `cluster` (`stream` across two nodes, and the rate-limited path with
//! Redis) needs a Redis (`IRIS_BENCH_REDIS`, default
//! `redis://127.0.0.1:6379`) and is not part of `all` either; nor is
//! `failover` (owners of a team SIGKILLed in turn, `--iterations` kills;
//! real `iris serve` processes on the same Redis).
//!
//! `HEALTHZ=1` adds `/healthz` to `http`; `PIN=1` puts the servers on CPU 1
//! and wrk on CPU 0 (see `pinned`); `ROUNDS=N` runs `http`'s set N times
//! over, interleaved, and `RUN_SECS=N` sets each run's length (10).
//!
//! The echo agent is the release `iris` binary next to this one.

mod cluster;
mod failover;
mod fanout;
mod floor;
mod http;
mod idle_ws;
mod jobs;
mod kill;
mod mcp;
mod postgres;
mod setup;
mod spawn;
mod stats;
mod stream;
mod turn;

/// The same allocator as the `iris` binary, for Iris and the baselines alike.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use setup::pinned;

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
    if which == "postgres" {
        postgres::run(iterations.unwrap_or(2000)).await?;
    }
    if which == "cluster" {
        cluster::run(iterations.unwrap_or(5)).await?;
    }
    if which == "failover" {
        failover::run(iterations.unwrap_or(5)).await?;
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
