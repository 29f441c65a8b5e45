//! Turn round trip: `dispatch(send_message)` to a warm echo agent, against
//! the same message written straight to an echo process over a pipe; then
//! the same for the `acp` driver, against raw ACP to the echo agent's ACP
//! mode.

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

/// Raw ACP to `iris agent-echo --acp`: `initialize` and `session/new`
/// once, then a `session/prompt` per turn, read to its answer.
async fn raw_acp(iterations: usize) -> anyhow::Result<Vec<Duration>> {
    let spec = iris_agent::LaunchSpec {
        program: crate::setup::iris_bin()?,
        args: vec!["agent-echo".into(), "--acp".into()],
        env: vec![],
        cwd: std::env::current_dir()?,
        stdin: None,
        confine: None,
        acp: None,
    };
    let mut p = AgentProcess::spawn(&spec, 1 << 20)?;
    let cwd = spec.cwd.display().to_string();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": 1}});
    rpc(&mut p, &init).await?;
    let new = json!({"jsonrpc": "2.0", "id": 2, "method": "session/new", "params": {"cwd": cwd, "mcpServers": []}});
    let session = rpc(&mut p, &new).await?["result"]["sessionId"].clone();
    let mut out = Vec::with_capacity(iterations);
    for i in 0..iterations + 50 {
        let start = Instant::now();
        let prompt = json!({"jsonrpc": "2.0", "id": 3 + i, "method": "session/prompt",
            "params": {"sessionId": session, "prompt": [{"type": "text", "text": "benchmark message"}]}});
        rpc(&mut p, &prompt).await?;
        if i >= 50 {
            out.push(start.elapsed());
        }
    }
    p.shutdown(Duration::from_secs(1)).await;
    Ok(out)
}

/// Send a JSON-RPC request and read to its answer.
async fn rpc(
    p: &mut AgentProcess,
    request: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    p.send(&format!("{request}\n")).await?;
    loop {
        let line = p
            .next_line()
            .await
            .ok_or_else(|| anyhow::anyhow!("the echo agent exited"))??;
        let v: serde_json::Value = serde_json::from_str(&line)?;
        if v.get("id") == request.get("id") && v.get("method").is_none() {
            return Ok(v);
        }
    }
}

/// `send_message` round trips through an Iris on `db` (default: SQLite).
pub(crate) async fn through_dispatch(
    iterations: usize,
    db: Option<&str>,
) -> anyhow::Result<Vec<Duration>> {
    let (iris, _dir) = crate::setup::iris_with_echo_on("  maxProcesses: 4", db).await?;
    rounds(&iris, iterations).await
}

/// `send_message` round trips to an `acp` team on the echo agent's ACP mode.
async fn through_acp(iterations: usize) -> anyhow::Result<Vec<Duration>> {
    let dir = tempfile::tempdir()?;
    let yaml = format!(
        "settings:\n  maxProcesses: 4\nagentProfiles:\n  echo-acp:\n    agent: acp\n    command: {}\n    args: [agent-echo, --acp]\nteams:\n  demo:\n    path: .\n    profile: echo-acp\n",
        crate::setup::iris_bin()?.display()
    );
    let iris = crate::setup::iris_in(dir.path(), &yaml, true).await?;
    rounds(&iris, iterations).await
}

async fn rounds(
    iris: &std::sync::Arc<iris_core::Iris>,
    iterations: usize,
) -> anyhow::Result<Vec<Duration>> {
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
    report("turn round trip", "raw pipe to echo", &mut a, &mut b);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..4 {
        a.extend(raw_acp(iterations / 4).await?);
        b.extend(through_acp(iterations / 4).await?);
    }
    report("acp driver", "raw ACP to echo", &mut a, &mut b);
    Ok(())
}

fn report(title: &str, baseline: &str, a: &mut [Duration], b: &mut [Duration]) {
    let (r, d) = (summarize(a), summarize(b));
    println!("{title} ({} turns each)", a.len());
    println!(
        "  {baseline:<17}: median {:8.1} us  p99 {:8.1} us",
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
}
