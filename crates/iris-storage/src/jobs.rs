//! Jobs (migration 0007): turns handed to a team with `execute`, with what
//! their end must set off. A job's status, request and result are its turn's.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};

use std::collections::HashMap;
use std::sync::OnceLock;

use sqlx::sqlite::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Context, Result, StoreError};
use crate::store::Store;
use crate::turns::{TurnFinish, TurnRow};
use crate::webhooks::{DeliveryRow, insert_delivery};
use crate::writes::insert_turns;

/// Where a job's end is reported (seed 002's `callback`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Callback {
    pub url: String,
    pub method: String,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Signs this job's deliveries instead of the server's secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// A job's own record beside its turn.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub id: String,
    pub team: String,
    /// `high`, `normal` or `low`.
    pub priority: String,
    /// Longest the turn may run, in ms.
    pub timeout_ms: Option<i64>,
    pub callback: Option<Callback>,
    /// `kind:id` of who queued it.
    pub caller: String,
    pub idempotency_key: Option<String>,
    /// Hex SHA-256 of the request, to tell a retry from a different request.
    pub request_hash: Option<String>,
    /// Runs started, counting re-runs after an interruption.
    pub attempts: i64,
    /// Its end and its webhook deliveries are written.
    pub notified: bool,
    pub created_at: i64,
}

/// A job with its turn.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub job: JobRow,
    pub turn: TurnRow,
}

/// Filters of the job list.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub team: Option<String>,
    pub status: Option<String>,
    /// Only this caller's jobs.
    pub caller: Option<String>,
    /// Only jobs sent from this team (an agent reads its own team's).
    pub from_team: Option<String>,
    /// Only jobs of these teams (a caller limited to some teams).
    pub teams: Option<Vec<String>>,
    pub limit: i64,
    pub offset: i64,
}

macro_rules! select_jobs {
    ($rest:literal) => {
        concat!("SELECT j.id AS j_id, j.team AS j_team, j.priority, j.timeout_ms, j.callback, j.caller AS j_caller, \
     j.idempotency_key, j.request_hash, j.attempts, j.notified, j.created_at AS j_created_at, \
     t.id, t.session_id, t.from_team, t.to_team, t.kind, t.status, t.request, t.response, t.error, t.tool_uses, \
     t.usage, t.cost_usd, t.created_at, t.started_at, t.completed_at, t.events_dropped, t.chain, t.caller \
     FROM jobs j JOIN turns t ON t.id = j.id", $rest)
    };
}

fn job_from_row(r: &SqliteRow) -> JobRow {
    JobRow {
        id: r.get("j_id"),
        team: r.get("j_team"),
        priority: r.get("priority"),
        timeout_ms: r.get("timeout_ms"),
        callback: r
            .get::<Option<String>, _>("callback")
            .and_then(|s| serde_json::from_str(&s).ok()),
        caller: r.get("j_caller"),
        idempotency_key: r.get("idempotency_key"),
        request_hash: r.get("request_hash"),
        attempts: r.get("attempts"),
        notified: r.get::<i64, _>("notified") != 0,
        created_at: r.get("j_created_at"),
    }
}

fn record(r: &SqliteRow) -> JobRecord {
    JobRecord {
        job: job_from_row(r),
        turn: crate::turns::from_row(r),
    }
}

fn push_filters(q: &mut QueryBuilder<Sqlite>, f: &JobFilter) {
    q.push(" WHERE 1 = 1");
    if let Some(v) = &f.team {
        q.push(" AND j.team = ").push_bind(v.clone());
    }
    if let Some(v) = &f.status {
        q.push(" AND t.status = ").push_bind(v.clone());
    }
    if let Some(v) = &f.caller {
        q.push(" AND j.caller = ").push_bind(v.clone());
    }
    if let Some(v) = &f.from_team {
        q.push(" AND t.from_team = ").push_bind(v.clone());
    }
    crate::store::push_teams(q, "j.team", f.teams.as_deref());
}

/// Most jobs written in one transaction.
pub const JOB_BATCH: usize = 256;

/// A job waiting for the writer, with where its answer goes.
pub(crate) struct NewJob {
    turn: TurnRow,
    job: JobRow,
    reply: oneshot::Sender<Result<Option<JobRecord>>>,
}

/// The job writer: takes what is waiting (up to [`JOB_BATCH`]), writes it
/// in one transaction, answers each. A batch that fails is written again
/// job by job, so one bad job fails alone.
async fn write_jobs(pool: SqlitePool, mut rx: mpsc::Receiver<NewJob>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < JOB_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        match write_batch(&pool, &batch).await {
            Ok(results) => {
                for (j, r) in batch.into_iter().zip(results) {
                    let _ = j.reply.send(Ok(r));
                }
            }
            Err(e) if batch.len() == 1 => {
                if let Some(j) = batch.pop() {
                    let _ = j.reply.send(Err(e));
                }
            }
            Err(_) => {
                for j in batch {
                    let r = write_batch(&pool, std::slice::from_ref(&j))
                        .await
                        .map(|mut v| v.pop().flatten());
                    let _ = j.reply.send(r);
                }
            }
        }
    }
}

/// Write `batch` in one transaction; for each job, the earlier job with its
/// idempotency key if there is one (then it is not written).
async fn write_batch(pool: &SqlitePool, batch: &[NewJob]) -> Result<Vec<Option<JobRecord>>> {
    // IMMEDIATE: it reads (idempotency keys) before it writes, and a read
    // transaction that must become a write one after another connection
    // committed fails at once (SQLITE_BUSY_SNAPSHOT) instead of waiting.
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .ctx("starting a transaction")?;
    let mut out = Vec::with_capacity(batch.len());
    let mut turns = Vec::with_capacity(batch.len());
    let mut jobs = Vec::with_capacity(batch.len());
    let mut keyed: HashMap<(&str, &str), JobRecord> = HashMap::new();
    for new in batch {
        if let Some(key) = new.job.idempotency_key.as_deref() {
            let slot = (new.job.caller.as_str(), key);
            if let Some(earlier) = keyed.get(&slot) {
                out.push(Some(earlier.clone()));
                continue;
            }
            let found = sqlx::query(select_jobs!(
                " WHERE j.caller = ? AND j.idempotency_key = ?"
            ))
            .bind(slot.0)
            .bind(slot.1)
            .fetch_optional(&mut *tx)
            .await
            .ctx("reading a job by idempotency key")?;
            if let Some(row) = found {
                out.push(Some(record(&row)));
                continue;
            }
            keyed.insert(
                slot,
                JobRecord {
                    job: new.job.clone(),
                    turn: new.turn.clone(),
                },
            );
        }
        turns.push(new.turn.clone());
        jobs.push(&new.job);
        out.push(None);
    }
    insert_turns(&mut tx, &turns).await?;
    if !jobs.is_empty() {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO jobs (id, team, priority, timeout_ms, callback, caller, idempotency_key, request_hash, attempts, created_at) ",
        );
        q.push_values(&jobs, |mut b, j| {
            b.push_bind(&j.id)
                .push_bind(&j.team)
                .push_bind(&j.priority)
                .push_bind(j.timeout_ms)
                .push_bind(
                    j.callback
                        .as_ref()
                        .map(|c| serde_json::json!(c).to_string()),
                )
                .push_bind(&j.caller)
                .push_bind(&j.idempotency_key)
                .push_bind(&j.request_hash)
                .push_bind(j.attempts)
                .push_bind(j.created_at);
        });
        q.build().execute(&mut *tx).await.ctx("inserting jobs")?;
    }
    tx.commit().await.ctx("committing jobs")?;
    Ok(out)
}

/// Writes new jobs: one per Iris, held by whoever accepts jobs. Its task
/// starts on first use and ends when the writer is dropped.
#[derive(Debug)]
pub struct JobWriter {
    pool: SqlitePool,
    channel: OnceLock<mpsc::Sender<NewJob>>,
}

impl Store {
    /// The writer of new jobs on this database (see [`JobWriter::insert`]).
    pub fn job_writer(&self) -> JobWriter {
        JobWriter {
            pool: self.pool.clone(),
            channel: OnceLock::new(),
        }
    }
}

impl JobWriter {
    /// Write a new job with its queued turn, both or neither, committed
    /// when this returns. With an idempotency key the caller already used,
    /// nothing is written and the job that has it comes back instead.
    ///
    /// Concurrent calls share transactions (group commit, at most
    /// [`JOB_BATCH`] jobs in one): SQLite pays per commit far more than per
    /// row, so this is what makes enqueueing fast.
    pub async fn insert(&self, turn: &TurnRow, job: &JobRow) -> Result<Option<JobRecord>> {
        let writer = self.channel.get_or_init(|| {
            let (tx, rx) = mpsc::channel(4 * JOB_BATCH);
            tokio::spawn(write_jobs(self.pool.clone(), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        let new = NewJob {
            turn: turn.clone(),
            job: job.clone(),
            reply,
        };
        let gone = || StoreError {
            context: "writing a job",
            source: sqlx::Error::WorkerCrashed,
        };
        writer.send(new).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

impl Store {
    pub async fn job(&self, id: &str) -> Result<Option<JobRecord>> {
        let row = sqlx::query(select_jobs!(" WHERE j.id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .ctx("reading a job")?;
        Ok(row.as_ref().map(record))
    }

    /// Jobs matching `f`, newest first, with the total before paging.
    pub async fn jobs(&self, f: &JobFilter) -> Result<(Vec<JobRecord>, i64)> {
        let listing = crate::store::Listing {
            select: select_jobs!(""),
            count: "SELECT COUNT(*) FROM jobs j JOIN turns t ON t.id = j.id",
            order: " ORDER BY j.created_at DESC, j.id DESC",
            what: "reading jobs",
        };
        self.page(&listing, |q| push_filters(q, f), f.limit, f.offset, record)
            .await
    }

    /// Jobs whose end is not written yet, oldest first: at start-up, what a
    /// previous run left to do.
    pub async fn open_jobs(&self) -> Result<Vec<JobRecord>> {
        let rows = sqlx::query(select_jobs!(
            " WHERE j.notified = 0 ORDER BY j.created_at, j.id"
        ))
        .fetch_all(&self.pool)
        .await
        .ctx("reading open jobs")?;
        Ok(rows.iter().map(record).collect())
    }

    /// Put an interrupted job back in the queue for another run.
    pub async fn requeue_job(&self, id: &str) -> Result<()> {
        let mut tx = self.pool.begin().await.ctx("starting a transaction")?;
        sqlx::query("UPDATE turns SET status = 'queued', started_at = NULL, response = NULL, error = NULL WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .ctx("requeueing a job's turn")?;
        sqlx::query("UPDATE jobs SET attempts = attempts + 1 WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .ctx("counting a job's run")?;
        tx.commit().await.ctx("committing a requeued job")
    }

    /// Jobs a shutdown stopped (their turns ended `cancelled` by it): back
    /// to `running` if they had started, else `queued`, unless their end
    /// was already written. Returns how many.
    pub async fn reopen_jobs(&self, ids: &[String]) -> Result<u64> {
        let mut q = QueryBuilder::<Sqlite>::new(
            "UPDATE turns SET status = CASE WHEN started_at IS NULL THEN 'queued' ELSE 'running' END, \
             completed_at = NULL, error = NULL, response = NULL \
             WHERE id IN (SELECT id FROM jobs WHERE notified = 0) AND id IN (",
        );
        let mut list = q.separated(", ");
        for id in ids {
            list.push_bind(id.clone());
        }
        list.push_unseparated(")");
        let done = q.build().execute(&self.pool).await.ctx("reopening jobs")?;
        Ok(done.rows_affected())
    }

    /// A job ended: its turn's end and the deliveries that report it, in
    /// one transaction, after which the job needs nothing more. (The turn's
    /// events follow through the recorder; writing the end twice is harmless.)
    pub async fn finish_job(
        &self,
        id: &str,
        finish: &TurnFinish,
        deliveries: &[DeliveryRow],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await.ctx("starting a transaction")?;
        crate::turns::finish_in(&mut tx, id, finish, &[]).await?;
        for d in deliveries {
            insert_delivery(&mut tx, d).await?;
        }
        sqlx::query("UPDATE jobs SET notified = 1 WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await
            .ctx("marking a job done")?;
        tx.commit().await.ctx("committing a job's end")
    }
}

/// A job's callback as its record shows it: the URL, the method and the
/// names of its headers. Never the secret (it signs the deliveries) nor the
/// header values (they often carry a receiver's credential).
pub fn callback_json(c: &Callback) -> Value {
    let headers: serde_json::Map<String, Value> = c
        .headers
        .keys()
        .map(|k| (k.clone(), Value::from("(hidden)")))
        .collect();
    serde_json::json!({"url": c.url, "method": c.method, "headers": headers})
}
