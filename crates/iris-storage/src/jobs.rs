//! Jobs (migration 0007): turns handed to a team with `execute`, with what
//! their end must set off. A job's status, request and result are its turn's.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};

use crate::webhooks::{DeliveryRow, insert_delivery};
use crate::writes::apply_one;
use crate::{Context, Result, Store, StoreWrite, TurnFinish, TurnRow};

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
    if let Some(teams) = &f.teams {
        q.push(" AND j.team IN (");
        let mut list = q.separated(", ");
        for t in teams {
            list.push_bind(t.clone());
        }
        list.push_unseparated(")");
        if teams.is_empty() {
            q.push(" AND 1 = 0");
        }
    }
}

/// Whether `e` is a broken UNIQUE constraint.
fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

impl Store {
    /// Write a new job with its queued turn, both or neither. With an
    /// idempotency key the caller already used, nothing is written and the
    /// job that has it comes back instead.
    pub async fn insert_job(&self, turn: &TurnRow, job: &JobRow) -> Result<Option<JobRecord>> {
        if let Some(key) = &job.idempotency_key
            && let Some(found) = self.job_by_key(&job.caller, key).await?
        {
            return Ok(Some(found));
        }
        let mut tx = self.pool.begin().await.ctx("starting a transaction")?;
        apply_one(&mut tx, &StoreWrite::InsertTurn(turn.clone())).await?;
        let inserted = sqlx::query(
            "INSERT INTO jobs (id, team, priority, timeout_ms, callback, caller, idempotency_key, request_hash, attempts, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&job.id)
        .bind(&job.team)
        .bind(&job.priority)
        .bind(job.timeout_ms)
        .bind(job.callback.as_ref().map(|c| serde_json::json!(c).to_string()))
        .bind(&job.caller)
        .bind(&job.idempotency_key)
        .bind(&job.request_hash)
        .bind(job.attempts)
        .bind(job.created_at)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            // The same key in a race: the first one wins.
            Err(e) if is_unique_violation(&e) => {
                drop(tx);
                let key = job.idempotency_key.as_deref().unwrap_or_default();
                return self.job_by_key(&job.caller, key).await;
            }
            Err(e) => return Err(e).ctx("inserting a job"),
        }
        tx.commit().await.ctx("committing a job")?;
        Ok(None)
    }

    async fn job_by_key(&self, caller: &str, key: &str) -> Result<Option<JobRecord>> {
        let row = sqlx::query(select_jobs!(
            " WHERE j.caller = ? AND j.idempotency_key = ?"
        ))
        .bind(caller)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .ctx("reading a job by idempotency key")?;
        Ok(row.as_ref().map(record))
    }

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
        let mut q = QueryBuilder::<Sqlite>::new(select_jobs!(""));
        push_filters(&mut q, f);
        q.push(" ORDER BY j.created_at DESC, j.id DESC LIMIT ")
            .push_bind(f.limit)
            .push(" OFFSET ")
            .push_bind(f.offset);
        let rows = q.build().fetch_all(&self.pool).await.ctx("reading jobs")?;
        let mut c =
            QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM jobs j JOIN turns t ON t.id = j.id");
        push_filters(&mut c, &f.clone());
        let total: i64 = c
            .build()
            .fetch_one(&self.pool)
            .await
            .ctx("counting jobs")?
            .get(0);
        Ok((rows.iter().map(record).collect(), total))
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

/// The request a job was made from, as JSON, for the record's `callback`.
pub fn callback_json(c: &Callback) -> Value {
    let mut v = serde_json::json!(c);
    if let Some(o) = v.as_object_mut() {
        // Never shown back: it signs the deliveries.
        o.remove("secret");
    }
    v
}
