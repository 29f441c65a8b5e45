//! Turn round trip: `dispatch(send_message)` to a warm echo agent, against
//! the same message written straight to an echo process over a pipe.

use std::time::{Duration, Instant};

use iris_agent::AgentProcess;
use iris_core::Ctx;
use serde_json::json;

use crate::stats::{summarize, us};

pub(crate) async fn raw(iterations: usize) -> anyhow::Result<Vec<Duration>> {
    let spec = crate::setup::echo_spec()?;
    let mut p = AgentProcess::spawn(&spec, 1 << 20)?;
    let mut out = Vec::with_capacity(iterations);
    for i in 0..iterations + 50 {
        let start = Instant::now();
        crate::setup::ask_raw(&mut p, "benchmark message").await?;
        if i >= 50 {
            out.push(start.elapsed());
        }
    }
    p.shutdown(Duration::from_secs(1)).await;
    Ok(out)
}

/// `send_message` round trips through an Iris on `db` (default: SQLite).
pub(crate) async fn through_dispatch(
    iterations: usize,
    db: Option<&str>,
) -> anyhow::Result<Vec<Duration>> {
    let (iris, _dir) = crate::setup::iris_with_echo_on("  maxProcesses: 4", db).await?;
    let params = json!({"toTeam": "demo", "message": "benchmark message", "timeout": 0});
    let mut out = Vec::with_capacity(iterations);
    for i in 0..iterations + 50 {
        let start = Instant::now();
        iris.dispatch(Ctx::local(), "send_message", params.clone())
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        if i >= 50 {
            out.push(start.elapsed());
        }
    }
    iris.shutdown().await;
    Ok(out)
}

pub async fn run(iterations: usize) -> anyhow::Result<()> {
    // Interleave rounds so machine noise hits both sides alike.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..4 {
        a.extend(raw(iterations / 4).await?);
        b.extend(through_dispatch(iterations / 4, None).await?);
    }
    let (r, d) = (summarize(&mut a), summarize(&mut b));
    println!("turn round trip ({} turns each)", a.len());
    println!(
        "  raw pipe to echo : median {:8.1} us  p99 {:8.1} us",
        us(r.median),
        us(r.p99)
    );
    println!(
        "  iris dispatch    : median {:8.1} us  p99 {:8.1} us",
        us(d.median),
        us(d.p99)
    );
    println!(
        "  added            : median {:8.1} us  p99 {:8.1} us  (ratio median {:.2}x)",
        us(d.median) - us(r.median),
        us(d.p99) - us(r.p99),
        us(d.median) / us(r.median)
    );
    Ok(())
}
