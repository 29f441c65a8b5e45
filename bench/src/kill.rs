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

use iris_core::{Ctx, TurnEvent};
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
    let env = [
        (
            "HOME".to_owned(),
            dir.path().join("claude-home").display().to_string(),
        ),
        ("ANTHROPIC_BASE_URL".to_owned(), stub.url.clone()),
        (
            "ANTHROPIC_API_KEY".to_owned(),
            "sk-ant-test-not-a-real-key".to_owned(),
        ),
        ("DISABLE_AUTOUPDATER".to_owned(), "1".to_owned()),
        ("DISABLE_TELEMETRY".to_owned(), "1".to_owned()),
        ("DISABLE_ERROR_REPORTING".to_owned(), "1".to_owned()),
        (
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".to_owned(),
            "1".to_owned(),
        ),
    ];
    let env_yaml: String = env
        .iter()
        .map(|(k, v)| format!("      {k}: '{v}'\n"))
        .collect();
    let yaml = format!(
        "settings:\n  responseTimeout: 60000\n  spawnTimeout: 60000\nteams:\n  cc:\n    path: ./work\n    agent: claude\n    claudePath: {}\n    env:\n{env_yaml}",
        claude_bin()?.display(),
    );
    let iris = crate::setup::iris_in(dir.path(), &yaml, false).await?;
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
        // Exactly the flags and environment a team's process gets.
        let spec = iris_agent::LaunchSpec::persistent(
            iris_agent::AgentKind::Claude,
            claude_bin()?,
            &iris_agent::SessionMode::New(uuid::Uuid::new_v4().to_string()),
            &[],
            env.to_vec(),
            dir.path().join("work"),
        );
        let mut agent = iris_agent::AgentProcess::spawn(&spec, 1 << 20)?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let killed = Instant::now();
        agent.kill_now().await;
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
