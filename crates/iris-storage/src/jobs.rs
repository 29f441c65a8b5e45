//! Jobs (migration 0007): turns handed to a team with `execute`, with what
//! their end must set off. A job's status, request and result are its turn's.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use std::collections::HashMap;
use std::sync::OnceLock;

use tokio::sync::{mpsc, oneshot};

use crate::backend::WriteLock;
use crate::error::{Context, Result, StoreError};
use crate::sql::Sql;
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

fn job_from_row(r: &AnyRow) -> JobRow {
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

fn record(r: &AnyRow) -> JobRecord {
    JobRecord {
        job: job_from_row(r),
        turn: crate::turns::from_row(r),
    }
}

fn push_filters(q: &mut Sql, f: &JobFilter) {
    q.push(" WHERE 1 = 1");
    if let Some(v) = &f.team {
        q.push(" AND j.team = ").bind(v);
    }
    if let Some(v) = &f.status {
        q.push(" AND t.status = ").bind(v);
    }
    if let Some(v) = &f.caller {
        q.push(" AND j.caller = ").bind(v);
    }
    if let Some(v) = &f.from_team {
        q.push(" AND t.from_team = ").bind(v);
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
async fn write_jobs(store: Store, mut rx: mpsc::Receiver<NewJob>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < JOB_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        match write_batch(&store, &batch).await {
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
                    let r = write_batch(&store, std::slice::from_ref(&j))
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
async fn write_batch(store: &Store, batch: &[NewJob]) -> Result<Vec<Option<JobRecord>>> {
    // Locked: it reads (idempotency keys) before it writes, and another
    // writer (another node on the same database) must not slip a job with
    // the same key in between.
    let mut tx = store
        .backend
        .begin_locked(&store.pool, WriteLock::Jobs)
        .await?;
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
                " WHERE j.caller = $1 AND j.idempotency_key = $2"
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
    insert_turns(&mut tx, &turns, store.node()).await?;
    if !jobs.is_empty() {
        let mut q = Sql::new(
            "INSERT INTO jobs (id, team, priority, timeout_ms, callback, caller, idempotency_key, request_hash, attempts, created_at) ",
        );
        q.values(&jobs, |b, j| {
            b.bind(&j.id)
                .bind(&j.team)
                .bind(&j.priority)
                .bind(j.timeout_ms)
                .bind(
                    j.callback
                        .as_ref()
                        .map(|c| serde_json::json!(c).to_string()),
                )
                .bind(&j.caller)
                .bind(&j.idempotency_key)
                .bind(&j.request_hash)
                .bind(j.attempts)
                .bind(j.created_at);
        });
        q.build("inserting jobs")?
            .execute(&mut *tx)
            .await
            .ctx("inserting jobs")?;
    }
    tx.commit().await.ctx("committing jobs")?;
    Ok(out)
}

/// Writes new jobs: one per Iris, held by whoever accepts jobs. Its task
/// starts on first use and ends when the writer is dropped.
#[derive(Debug)]
pub struct JobWriter {
    store: Store,
    channel: OnceLock<mpsc::Sender<NewJob>>,
}

impl Store {
    /// The writer of new jobs on this database (see [`JobWriter::insert`]).
    pub fn job_writer(&self) -> JobWriter {
        JobWriter {
            store: self.clone(),
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
            tokio::spawn(write_jobs(self.store.clone(), rx));
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
        let row = sqlx::query(select_jobs!(" WHERE j.id = $1"))
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

    /// Open jobs no node has claimed that `node` may take up at start-up
    /// (after [`Store::release_job_claims`]), oldest first: those it
    /// accepted, those accepted before nodes had ids, and those of nodes
    /// that are not running (stopped, or no heartbeat since `live_since`).
    /// A running node's waiting jobs are its own.
    pub async fn unclaimed_jobs(&self, node: &str, live_since: i64) -> Result<Vec<JobRecord>> {
        let rows = sqlx::query(select_jobs!(
            " WHERE j.notified = 0 AND j.claimed_by IS NULL
              AND (t.node_id IS NULL OR t.node_id = $1 OR t.node_id NOT IN
                   (SELECT id FROM nodes WHERE stopped_at IS NULL AND heartbeat_at >= $2))
              ORDER BY j.created_at, j.id"
        ))
        .bind(node)
        .bind(live_since)
        .fetch_all(&self.pool)
        .await
        .ctx("reading unclaimed jobs")?;
        Ok(rows.iter().map(record).collect())
    }

    /// The open jobs of `team` nobody has claimed (a team taken over from
    /// another node: its jobs there were let go), oldest first.
    pub async fn unclaimed_jobs_of_team(&self, team: &str) -> Result<Vec<JobRecord>> {
        let rows = sqlx::query(select_jobs!(
            " WHERE j.notified = 0 AND j.claimed_by IS NULL AND j.team = $1
              ORDER BY j.created_at, j.id"
        ))
        .bind(team)
        .fetch_all(&self.pool)
        .await
        .ctx("reading a team's unclaimed jobs")?;
        Ok(rows.iter().map(record).collect())
    }

    /// Jobs whose end is not written yet, oldest first.
    pub async fn open_jobs(&self) -> Result<Vec<JobRecord>> {
        let rows = sqlx::query(select_jobs!(
            " WHERE j.notified = 0 ORDER BY j.created_at, j.id"
        ))
        .fetch_all(&self.pool)
        .await
        .ctx("reading open jobs")?;
        Ok(rows.iter().map(record).collect())
    }

    /// Take job `id` to run it, as `claimer` (one per Iris process): `true`
    /// when it is this claimer's, `false` when another has it — with
    /// several processes on one database, one claimer wins.
    pub async fn claim_job(&self, id: &str, claimer: &str) -> Result<bool> {
        let mut tx = self.backend.begin_write(&self.pool).await?;
        // A claim lost in a crash costs nothing (the job is taken up again
        // at the next start), so it need not wait for the disk.
        self.backend.lazy_commit(&mut tx).await?;
        self.fence(&mut tx, JOB_TEAM, id).await?;
        let done = sqlx::query(
            "UPDATE jobs SET claimed_by = $1 WHERE id = $2 AND (claimed_by IS NULL OR claimed_by = $1)",
        )
        .bind(claimer)
        .bind(id)
        .execute(&mut *tx)
        .await
        .ctx("claiming a job")?;
        tx.commit().await.ctx("claiming a job")?;
        Ok(done.rows_affected() == 1)
    }

    /// Put back the unfinished jobs `claimer` (this node) had taken, and
    /// those of claimers that are no node of the cluster (a run before
    /// nodes had ids): at start-up nothing of ours runs yet. Other nodes'
    /// claims stay theirs.
    pub async fn release_job_claims(&self, claimer: &str) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE jobs SET claimed_by = NULL WHERE notified = 0 AND claimed_by IS NOT NULL
             AND (claimed_by = $1 OR claimed_by NOT IN (SELECT id FROM nodes))",
        )
        .bind(claimer)
        .execute(&self.pool)
        .await
        .ctx("releasing job claims")?;
        Ok(done.rows_affected())
    }

    /// Put an interrupted job back in the queue for another run.
    pub async fn requeue_job(&self, id: &str) -> Result<()> {
        let mut tx = self.backend.begin_write(&self.pool).await?;
        self.fence(&mut tx, JOB_TEAM, id).await?;
        sqlx::query("UPDATE turns SET status = 'queued', started_at = NULL, response = NULL, error = NULL WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .ctx("requeueing a job's turn")?;
        sqlx::query("UPDATE jobs SET attempts = attempts + 1, claimed_by = NULL WHERE id = $1")
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
        if ids.is_empty() {
            return Ok(0);
        }
        let mut q = Sql::new(
            "UPDATE turns SET status = CASE WHEN started_at IS NULL THEN 'queued' ELSE 'running' END, \
             completed_at = NULL, error = NULL, response = NULL \
             WHERE id IN (SELECT id FROM jobs WHERE notified = 0) AND id IN ",
        );
        q.list(ids.iter().map(String::as_str));
        let mut tx = self.pool.begin().await.ctx("reopening jobs")?;
        let done = q
            .build("reopening jobs")?
            .execute(&mut *tx)
            .await
            .ctx("reopening jobs")?;
        // Whoever starts next takes them up.
        let mut release =
            Sql::new("UPDATE jobs SET claimed_by = NULL WHERE notified = 0 AND id IN ");
        release.list(ids.iter().map(String::as_str));
        release
            .build("releasing jobs")?
            .execute(&mut *tx)
            .await
            .ctx("releasing jobs")?;
        tx.commit().await.ctx("reopening jobs")?;
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
        let mut tx = self.backend.begin_write(&self.pool).await?;
        self.fence(&mut tx, JOB_TEAM, id).await?;
        crate::turns::finish_in(&mut tx, id, finish, &[]).await?;
        for d in deliveries {
            insert_delivery(&mut tx, d).await?;
        }
        sqlx::query("UPDATE jobs SET notified = 1 WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .ctx("marking a job done")?;
        tx.commit().await.ctx("committing a job's end")
    }
}

/// The team of job `$1` (its writes are fenced by the team's lease).
const JOB_TEAM: &str = "SELECT team FROM jobs WHERE id = $1";

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::store;

    fn job(id: &str, key: Option<&str>) -> (TurnRow, JobRow) {
        let mut turn = crate::store::testing::turn(id, "s", "ci", "demo");
        turn.kind = "job".into();
        let job = JobRow {
            id: id.into(),
            team: "demo".into(),
            priority: "normal".into(),
            timeout_ms: None,
            callback: None,
            caller: "key:k".into(),
            idempotency_key: key.map(str::to_owned),
            request_hash: None,
            attempts: 1,
            notified: false,
            created_at: 1,
        };
        (turn, job)
    }

    /// A job's end written with and without a cost, in either order, on
    /// one connection (Postgres keeps the statement prepared).
    #[tokio::test]
    async fn a_jobs_end_is_written_with_or_without_a_cost() {
        let (s, _d) = store().await;
        s.insert_session(&crate::store::testing::session("s", "ci", "demo", false))
            .await
            .unwrap();
        let w = s.job_writer();
        for (id, cost) in [
            ("c1", None),
            ("c2", Some(0.0)),
            ("c3", None),
            ("c4", Some(1.5)),
        ] {
            let (t, j) = job(id, None);
            w.insert(&t, &j).await.unwrap();
            let finish = TurnFinish {
                status: "cancelled".into(),
                cost_usd: cost,
                completed_at: 5,
                ..Default::default()
            };
            s.finish_job(id, &finish, &[]).await.unwrap();
            let turn = s.turn(id).await.unwrap().unwrap();
            assert_eq!(turn.cost_usd, cost, "{id}");
        }
    }

    #[tokio::test]
    async fn one_claimer_wins_a_job_and_one_key_makes_one_job() {
        let (s, _d) = store().await;
        s.insert_session(&crate::store::testing::session("s", "ci", "demo", false))
            .await
            .unwrap();
        // Two writers (as two processes would have) given one key at once.
        let (w1, w2) = (s.job_writer(), s.job_writer());
        let (t1, j1) = job("j1", Some("deploy-1"));
        let (t2, j2) = job("j2", Some("deploy-1"));
        let (a, b) = tokio::join!(w1.insert(&t1, &j1), w2.insert(&t2, &j2));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(a.is_none() ^ b.is_none(), "one is written, one replays it");
        let (_, total) = s
            .jobs(&JobFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(total, 1);
        let id = if a.is_none() { "j1" } else { "j2" };
        assert!(s.claim_job(id, "run_a").await.unwrap());
        assert!(!s.claim_job(id, "run_b").await.unwrap(), "taken");
        assert!(s.claim_job(id, "run_a").await.unwrap(), "still its own");
        s.requeue_job(id).await.unwrap();
        assert!(s.claim_job(id, "run_b").await.unwrap(), "put back, free");
    }
}
