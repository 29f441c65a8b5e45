//! One session's stream fanned out to 1,000 bus subscribers: deliveries per
//! second, and the agent's own chunk rate with and without them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use iris_core::Ctx;
use iris_core::bus::Delivery;
use serde_json::json;

const CHUNKS: usize = 20_000;
const SUBSCRIBERS: usize = 1000;

/// One long turn of CHUNKS chunks; returns (seconds of the turn, seconds
/// until every subscriber had every event, deliveries, dropped).
async fn one(subscribers: usize) -> anyhow::Result<(f64, f64, u64, u64)> {
    let (iris, _dir) =
        crate::setup::iris_with_echo("  maxProcesses: 2\n  maxEventsPerTurn: 100").await?;
    let message = format!("{} [[chunks={CHUNKS}]]", "x".repeat(CHUNKS));
    // Warm the process and learn the session.
    let warm = iris
        .dispatch(
            Ctx::local(),
            "send_message",
            json!({"toTeam": "demo", "message": "warm", "timeout": 0}),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let topic = format!("session:{}", warm["sessionId"].as_str().unwrap_or_default());
    let delivered = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..subscribers {
        let mut sub = iris.watch(&topic);
        let (delivered, dropped) = (delivered.clone(), dropped.clone());
        tasks.push(tokio::spawn(async move {
            while let Some(d) = sub.recv().await {
                match d {
                    Delivery::Event(e) => {
                        delivered.fetch_add(1, Ordering::Relaxed);
                        if e.kind == iris_core::bus::EventKind::TurnCompleted {
                            break;
                        }
                    }
                    Delivery::Dropped { .. } => {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }));
    }
    let start = Instant::now();
    iris.dispatch(
        Ctx::local(),
        "send_message",
        json!({"toTeam": "demo", "message": message, "timeout": 0}),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let secs = start.elapsed().as_secs_f64();
    for t in tasks {
        let _ = t.await;
    }
    let all = start.elapsed().as_secs_f64();
    iris.shutdown().await;
    Ok((
        secs,
        all,
        delivered.load(Ordering::Relaxed),
        dropped.load(Ordering::Relaxed),
    ))
}

pub async fn run() -> anyhow::Result<()> {
    let (alone, _, _, _) = one(0).await?;
    let (crowded, all, delivered, dropped) = one(SUBSCRIBERS).await?;
    println!("fan-out of one turn of {CHUNKS} chunks");
    println!(
        "  agent alone          : {:10.0} chunks/s",
        CHUNKS as f64 / alone
    );
    println!(
        "  with {SUBSCRIBERS} subscribers : {:10.0} chunks/s  ({:.2}x of alone)",
        CHUNKS as f64 / crowded,
        alone / crowded
    );
    println!(
        "  deliveries           : {:10.0} /s  ({delivered} delivered, {dropped} subscribers dropped)",
        delivered as f64 / all
    );
    Ok(())
}
