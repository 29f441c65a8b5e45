//! Jobs benchmark (issue: jobs and webhooks).
//!
//! (1) Durable enqueue: `job_execute` dispatched by 32 concurrent callers
//! in process (each job and its turn committed to SQLite before the call
//! returns), against the ceiling measured in the same run: plain
//! single-row inserts into a table of the same kind of database (WAL,
//! `synchronous=NORMAL`) by 32 concurrent writers. Target: ≥ 5,000 jobs/s.
//!
//! (2) A slow receiver: the delay from a job's end to its callback arriving
//! at a fast receiver, while another job's callback is held 5 s by a slow
//! one, beside the same delay with no slow receiver.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iris_core::Ctx;
use serde_json::{Value, json};

pub(crate) const WRITERS: usize = 32;

/// Callbacks a receiver got: job id and when (Unix ms).
type Arrivals = Arc<Mutex<Vec<(String, i64)>>>;

/// The plain SQLite insert rate (rows/s) over `n` rows (WAL,
/// `synchronous=NORMAL`, as Iris runs it; through the same driver).
pub(crate) async fn sqlite_ceiling(dir: &std::path::Path, n: usize) -> anyhow::Result<f64> {
    use sqlx::Executor;
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(8)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute("PRAGMA synchronous = NORMAL").await?;
                conn.execute("PRAGMA busy_timeout = 5000").await?;
                Ok(())
            })
        })
        .connect(&format!(
            "sqlite://{}?mode=rwc",
            dir.join("plain.db").display()
        ))
        .await?;
    plain_insert_rate(&pool, n).await
}

/// The rate (rows/s) of `n` single-row INSERTs, each its own transaction,
/// by [`WRITERS`] concurrent writers on `pool`, into a new table.
pub(crate) async fn plain_insert_rate(pool: &sqlx::AnyPool, n: usize) -> anyhow::Result<f64> {
    sqlx::query("CREATE TABLE plain_jobs (id TEXT PRIMARY KEY, team TEXT NOT NULL, task TEXT NOT NULL, created_at BIGINT NOT NULL)")
        .execute(pool)
        .await?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(WRITERS) {
                sqlx::query(
                    "INSERT INTO plain_jobs (id, team, task, created_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(format!("job_{i}"))
                .bind("demo")
                .bind("Run the nightly audit and report what changed")
                .bind(iris_core::now_ms())
                .execute(&pool)
                .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    pool.close().await;
    Ok(rate)
}

/// `job_execute`'s rate (jobs/s) over `n` jobs, on `db` (default: SQLite).
pub(crate) async fn execute_rate(
    n: usize,
    db: Option<&str>,
) -> anyhow::Result<(f64, tempfile::TempDir)> {
    let (iris, dir) = crate::setup::iris_with_echo_on("  maxQueuePerTeam: 1000000", db).await?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let iris = iris.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(WRITERS) {
                iris.dispatch(
                    Ctx::local(),
                    "job_execute",
                    json!({"team": "demo", "task": format!("Run the nightly audit and report what changed ({i})"), "priority": "low"}),
                )
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    iris.shutdown().await;
    Ok((rate, dir))
}

/// A receiver: `/slow` answers after 5 s, anything else at once; records
/// when each job's callback arrived (Unix ms).
async fn receiver() -> anyhow::Result<(String, Arrivals)> {
    use axum::extract::{Request, State};
    let got: Arrivals = Arc::default();
    let app = axum::Router::new()
        .fallback(|State(got): State<Arrivals>, req: Request| async move {
            let slow = req.uri().path() == "/slow";
            let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                .await
                .unwrap_or_default();
            let at = iris_core::now_ms();
            if slow {
                tokio::time::sleep(Duration::from_secs(5)).await;
            } else if let Ok(v) = serde_json::from_slice::<Value>(&body)
                && let Some(id) = v["jobId"].as_str()
                && let Ok(mut g) = got.lock()
            {
                g.push((id.to_owned(), at));
            }
            "ok"
        })
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://127.0.0.1:{port}"), got))
}

/// Median and worst delay (ms) from each fast job's end to its callback,
/// with or without a slow receiver holding a delivery.
async fn callback_delays(with_slow: bool, jobs: usize) -> anyhow::Result<(i64, i64)> {
    let dir = tempfile::tempdir()?;
    let yaml = "webhooks:\n  allowHosts: ['127.0.0.1']\n  timeout: 10000\nteams:\n  demo:\n    path: .\n    agent: echo\n";
    let iris = crate::setup::iris_in(dir.path(), yaml, true).await?;
    let (url, got) = receiver().await?;
    if with_slow {
        iris.dispatch(
            Ctx::local(),
            "job_execute",
            json!({"team": "demo", "task": "slow one", "callback": {"url": format!("{url}/slow")}}),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    }
    let mut ids = Vec::new();
    for i in 0..jobs {
        let a = iris
            .dispatch(Ctx::local(), "job_execute", json!({"team": "demo", "task": format!("fast {i}"), "callback": {"url": format!("{url}/fast")}}))
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        ids.push(a["jobId"].as_str().unwrap_or_default().to_owned());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.lock().map(|g| g.len()).unwrap_or(0) < jobs {
        anyhow::ensure!(Instant::now() < deadline, "callbacks did not arrive");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let arrived: Vec<(String, i64)> = got.lock().map(|g| g.clone()).unwrap_or_default();
    let mut delays = Vec::new();
    for (id, at) in arrived {
        let job = iris
            .dispatch(Ctx::local(), "job_get", json!({"jobId": id}))
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        delays.push(at - job["completedAt"].as_i64().unwrap_or(at));
    }
    delays.sort_unstable();
    iris.shutdown().await;
    Ok((delays[delays.len() / 2], delays[delays.len() - 1]))
}

pub async fn run(iterations: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ceiling = sqlite_ceiling(dir.path(), iterations).await?;
    let (rate, _db) = execute_rate(iterations, None).await?;
    println!(
        "jobs enqueue: {rate:.0} jobs/s through job_execute ({iterations} jobs, {WRITERS} callers); plain SQLite inserts {ceiling:.0} rows/s; ratio {:.2} (target ≥ 5000 jobs/s)",
        rate / ceiling
    );
    let (base_med, base_max) = callback_delays(false, 20).await?;
    let (slow_med, slow_max) = callback_delays(true, 20).await?;
    println!(
        "jobs callbacks: end → arrival median {slow_med} ms, worst {slow_max} ms while a receiver holds a delivery 5 s; without it median {base_med} ms, worst {base_max} ms"
    );
    Ok(())
}
