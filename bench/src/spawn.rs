//! Spawn to ready: a new conversation's first answer through Iris (session
//! created, process spawned, first turn) against spawning the same echo
//! agent by hand and getting its first answer; through Iris with the agent
//! confined (Landlock, the default) and with `sandbox.enabled: false`,
//! interleaved in the same run.

use std::time::{Duration, Instant};

use iris_agent::AgentProcess;
use iris_core::Ctx;
use serde_json::json;

use crate::stats::{summarize, us};

async fn raw_once() -> anyhow::Result<Duration> {
    let spec = crate::setup::echo_spec()?;
    let start = Instant::now();
    let mut p = AgentProcess::spawn(&spec, 1 << 20)?;
    crate::setup::ask_raw(&mut p, "ready?").await?;
    let took = start.elapsed();
    p.shutdown(Duration::from_secs(1)).await;
    Ok(took)
}

/// One new conversation's first answer through `iris`.
async fn through(iris: &std::sync::Arc<iris_core::Iris>) -> anyhow::Result<Duration> {
    let sid = uuid::Uuid::new_v4().to_string();
    let start = Instant::now();
    iris.dispatch(
        Ctx::local(),
        "send_message",
        json!({"toTeam": "demo", "message": "ready?", "sessionId": sid, "timeout": 0}),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let took = start.elapsed();
    iris.dispatch(
        Ctx::local(),
        "session_delete",
        json!({"toTeam": "demo", "sessionId": sid}),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    Ok(took)
}

pub async fn run(iterations: usize) -> anyhow::Result<()> {
    let team = "teams:\n  demo:\n    path: .\n    agent: echo\n";
    let settings = "settings:\n  maxProcesses: 1000\n";
    let open_dir = tempfile::tempdir()?;
    let open = crate::setup::iris_in(
        open_dir.path(),
        &format!("{settings}sandbox:\n  enabled: false\n{team}"),
        true,
    )
    .await?;
    let confined_dir = tempfile::tempdir()?;
    let confined =
        crate::setup::iris_in(confined_dir.path(), &format!("{settings}{team}"), true).await?;
    if confined.pool().sandbox().status()["confining"] != true {
        anyhow::bail!("this kernel cannot confine agents: the confined case would not be");
    }
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..iterations {
        a.push(raw_once().await?);
        b.push(through(&open).await?);
        c.push(through(&confined).await?);
    }
    open.shutdown().await;
    confined.shutdown().await;
    let (r, d, k) = (summarize(&mut a), summarize(&mut b), summarize(&mut c));
    println!("spawn to first answer ({iterations} each, interleaved)");
    println!(
        "  raw spawn                  : median {:8.1} us  p99 {:8.1} us",
        us(r.median),
        us(r.p99)
    );
    println!(
        "  iris new session, open     : median {:8.1} us  p99 {:8.1} us",
        us(d.median),
        us(d.p99)
    );
    println!(
        "  iris new session, confined : median {:8.1} us  p99 {:8.1} us",
        us(k.median),
        us(k.p99)
    );
    println!(
        "  added by iris              : median {:8.1} us  (ratio {:.2}x)",
        us(d.median) - us(r.median),
        us(d.median) / us(r.median)
    );
    println!(
        "  added by confinement       : median {:8.1} us  (ratio {:.2}x)",
        us(k.median) - us(d.median),
        us(k.median) / us(d.median)
    );
    Ok(())
}
