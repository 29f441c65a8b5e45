//! How soon a caller learns that a turn failed because its agent died: the
//! real Claude Code CLI (installed by `scripts/test.sh` into `.tools/`, or
//! `IRIS_CLAUDE_BIN`) against the project's local stub of the Anthropic
//! Messages API, SIGKILLed while it streams an answer; the time from the
//! kill to the turn's `error` event, for each of `kills` turns.
//! (`iris-bench kill`; the target is a median and p99 ≤ 100 ms.)

#[path = "../../crates/iris-cli/tests/common/anthropic_stub.rs"]
#[allow(dead_code)]
mod anthropic_stub;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use iris_core::config::{Config, ConfigSource};
use iris_core::{Ctx, Iris, StartOptions, TurnEvent};
use serde_json::json;

fn claude_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("IRIS_CLAUDE_BIN") {
        return Ok(PathBuf::from(p));
    }
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../.tools/node_modules/@anthropic-ai/claude-code-linux-x64/claude");
    anyhow::ensure!(
        bin.exists(),
        "Claude Code is not installed at {}: run scripts/test.sh (or set IRIS_CLAUDE_BIN)",
        bin.display()
    );
    Ok(bin)
}

pub async fn run(kills: usize) -> anyhow::Result<()> {
    let stub = anthropic_stub::start();
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("claude-home"))?;
    std::fs::create_dir_all(dir.path().join("work"))?;
    let path = dir.path().join("config.yaml");
    std::fs::write(
        &path,
        format!(
            "database:\n  path: iris.db\nsettings:\n  responseTimeout: 60000\n  spawnTimeout: 60000\nteams:\n  cc:\n    path: ./work\n    agent: claude\n    claudePath: {bin}\n    env:\n      HOME: {home}\n      ANTHROPIC_BASE_URL: {url}\n      ANTHROPIC_API_KEY: sk-ant-test-not-a-real-key\n      DISABLE_AUTOUPDATER: '1'\n      DISABLE_TELEMETRY: '1'\n      DISABLE_ERROR_REPORTING: '1'\n      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1'\n",
            bin = claude_bin()?.display(),
            home = dir.path().join("claude-home").display(),
            url = stub.url,
        ),
    )?;
    let cfg =
        Config::load(&ConfigSource { flag: Some(path) }).map_err(|e| anyhow::anyhow!("{e}"))?;
    let iris = Iris::start(
        cfg,
        StartOptions {
            echo_program: crate::iris_bin()?,
            prewarm: false,
            ..Default::default()
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let ctx = Ctx::local();
    let mut samples = Vec::with_capacity(kills);
    for _ in 0..kills {
        let mut follower = iris
            .send_and_follow(&ctx, json!({"toTeam": "cc", "message": "MSG<slow answer>"}))
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        // Wait until the agent is streaming its answer.
        loop {
            match follower.next().await {
                Some(TurnEvent::Chunk { .. }) => break,
                Some(e) if e.is_end() => {
                    anyhow::bail!("the turn ended before streaming: {:?}", e.data())
                }
                None => anyhow::bail!("the turn ended before streaming"),
                Some(_) => {}
            }
        }
        let pid = iris
            .team_processes("cc")
            .iter()
            .find_map(|p| p.pid)
            .ok_or_else(|| anyhow::anyhow!("no claude process"))?;
        let killed = Instant::now();
        // SAFETY: signalling the agent process this benchmark started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let ended = loop {
            match tokio::time::timeout(Duration::from_secs(30), follower.next()).await {
                Ok(Some(e)) if e.is_end() => break e,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => anyhow::bail!("no end after the kill"),
            }
        };
        anyhow::ensure!(
            matches!(ended, TurnEvent::Error { .. }),
            "ended {:?}",
            ended.data()
        );
        samples.push(killed.elapsed());
    }
    iris.shutdown().await;
    // The floor: how soon the system reports the same CLI, started by hand
    // and idle in stream-json mode, SIGKILLed (the kernel tears its memory
    // down before the parent hears of it).
    let mut floor = Vec::with_capacity(kills);
    for _ in 0..kills {
        let mut child = tokio::process::Command::new(claude_bin()?)
            .args([
                "-p",
                "--input-format",
                "stream-json",
                "--output-format",
                "stream-json",
                "--verbose",
            ])
            .env("HOME", dir.path().join("claude-home"))
            .env("ANTHROPIC_BASE_URL", &stub.url)
            .env("ANTHROPIC_API_KEY", "sk-ant-test-not-a-real-key")
            .current_dir(dir.path().join("work"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let pid = child.id().ok_or_else(|| anyhow::anyhow!("no pid"))?;
        let killed = Instant::now();
        // SAFETY: signalling the child this benchmark started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        child.wait().await?;
        floor.push(killed.elapsed());
    }
    let ms = |d| crate::stats::us(d) / 1000.0;
    let (s, f) = (
        crate::stats::summarize(&mut samples),
        crate::stats::summarize(&mut floor),
    );
    println!("Agent killed mid-turn (SIGKILL), {kills} kills");
    println!(
        "  CLI by hand, kill -> waitpid (floor)  : median {:.1} ms, p99 {:.1} ms",
        ms(f.median),
        ms(f.p99)
    );
    println!(
        "  Claude Code CLI, kill -> turn failed  : median {:.1} ms, p99 {:.1} ms (target 100)",
        ms(s.median),
        ms(s.p99)
    );
    Ok(())
}
