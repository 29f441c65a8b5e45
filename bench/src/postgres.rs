//! Postgres beside SQLite (issue: Postgres for all durable state), in one
//! run: (1) the turn round trip through `send_message` on each, with the
//! raw pipe to the echo agent as the floor; (2) durable enqueue through
//! `job_execute` by 32 callers on each, against each backend's plain
//! insert rate by 32 writers, measured in the same run (target on
//! Postgres: ≥ 0.5× of its plain inserts).
//!
//! The server: `IRIS_BENCH_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); each Iris gets a fresh
//! database there, dropped at exit.

use crate::jobs::{WRITERS, execute_rate, plain_insert_rate, sqlite_ceiling};
use crate::stats::{summarize, us};
use crate::turn::{raw, through_dispatch};

fn server() -> String {
    std::env::var("IRIS_BENCH_POSTGRES")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh database on the server (its own folder names it).
fn database(dir: &std::path::Path) -> anyhow::Result<String> {
    iris_storage::testing::postgres_database(&server(), dir).map_err(|e| anyhow::anyhow!(e))
}

/// The plain Postgres insert rate (rows/s) over `n` rows, on 16
/// connections (Iris's default pool on Postgres).
async fn postgres_ceiling(url: &str, n: usize) -> anyhow::Result<f64> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(16)
        .connect(url)
        .await?;
    plain_insert_rate(&pool, n).await
}

pub async fn run(iterations: usize) -> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    // (1) Turn round trip, rounds interleaved so noise hits all alike.
    let (mut pipe, mut lite, mut pg) = (Vec::new(), Vec::new(), Vec::new());
    let per = (iterations / 4).max(1);
    for round in 0..4 {
        let db = database(&scratch.path().join(format!("turn{round}")))?;
        pipe.extend(raw(per).await?);
        lite.extend(through_dispatch(per, None).await?);
        pg.extend(through_dispatch(per, Some(&db)).await?);
    }
    let (p, l, g) = (
        summarize(&mut pipe),
        summarize(&mut lite),
        summarize(&mut pg),
    );
    println!("turn round trip ({} turns each)", pipe.len());
    println!(
        "  raw pipe to echo : median {:8.1} us  p99 {:8.1} us",
        us(p.median),
        us(p.p99)
    );
    println!(
        "  iris on SQLite   : median {:8.1} us  p99 {:8.1} us  (added {:.1} us)",
        us(l.median),
        us(l.p99),
        us(l.median) - us(p.median)
    );
    println!(
        "  iris on Postgres : median {:8.1} us  p99 {:8.1} us  (added {:.1} us; {:.2}x SQLite's median)",
        us(g.median),
        us(g.p99),
        us(g.median) - us(p.median),
        us(g.median) / us(l.median)
    );

    // (2) Durable enqueue.
    let jobs = iterations * 10;
    let lite_ceiling = sqlite_ceiling(scratch.path(), jobs).await?;
    let (lite_rate, _d1) = execute_rate(jobs, None).await?;
    let plain_db = database(&scratch.path().join("plain"))?;
    let pg_ceiling = postgres_ceiling(&plain_db, jobs).await?;
    let iris_db = database(&scratch.path().join("enqueue"))?;
    let (pg_rate, _d2) = execute_rate(jobs, Some(&iris_db)).await?;
    println!("durable enqueue ({jobs} jobs, {WRITERS} callers)");
    println!(
        "  SQLite   : {lite_rate:7.0} jobs/s through job_execute; plain inserts {lite_ceiling:7.0} rows/s; ratio {:.2}",
        lite_rate / lite_ceiling
    );
    println!(
        "  Postgres : {pg_rate:7.0} jobs/s through job_execute; plain inserts {pg_ceiling:7.0} rows/s; ratio {:.2} (target ≥ 0.5)",
        pg_rate / pg_ceiling
    );
    Ok(())
}
