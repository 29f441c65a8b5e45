//! Spawn to ready: a new conversation's first answer through Iris (session
//! created, process spawned, first turn) against spawning the same echo
//! agent by hand and getting its first answer.

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

pub async fn run(iterations: usize) -> anyhow::Result<()> {
    let (iris, _dir) = crate::setup::iris_with_echo("  maxProcesses: 1000").await?;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..iterations {
        a.push(raw_once().await?);
        let sid = uuid::Uuid::new_v4().to_string();
        let start = Instant::now();
        iris.dispatch(
            Ctx::local(),
            "send_message",
            json!({"toTeam": "demo", "message": "ready?", "sessionId": sid, "timeout": 0}),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        b.push(start.elapsed());
        iris.dispatch(
            Ctx::local(),
            "session_delete",
            json!({"toTeam": "demo", "sessionId": sid}),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    }
    iris.shutdown().await;
    let (r, d) = (summarize(&mut a), summarize(&mut b));
    println!("spawn to first answer ({iterations} each)");
    println!(
        "  raw spawn        : median {:8.1} us  p99 {:8.1} us",
        us(r.median),
        us(r.p99)
    );
    println!(
        "  iris new session : median {:8.1} us  p99 {:8.1} us",
        us(d.median),
        us(d.p99)
    );
    println!(
        "  added            : median {:8.1} us  (ratio {:.2}x)",
        us(d.median) - us(r.median),
        us(d.median) / us(r.median)
    );
    Ok(())
}
