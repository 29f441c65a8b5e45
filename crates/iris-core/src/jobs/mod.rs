//! Jobs: work handed to a team with `execute`, answered at once with the
//! job's id, run in the background and reported by webhook when it ends.
//!
//! A job is a turn (kind `job`, the same id) plus a `jobs` record, both
//! written before `execute` answers. Jobs wait in the [`JobQueue`], per
//! team, by priority then arrival, and go to the pool
//! `jobs.concurrencyPerTeam` at a time, so the pool's limits hold however
//! many are queued (a full pool leaves them waiting, not failed). Each
//! running job has a watcher that, when its turn ends, writes the end and
//! its webhook deliveries in one transaction. At start, what a previous run
//! left is taken up again ([`Jobs::start`]): queued jobs are queued again,
//! interrupted ones run again or fail, and an end whose deliveries were not
//! written gets them.

mod queue;
mod report;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use iris_storage::{JobRecord, JobRow, JobWriter, Store, TurnFinish, TurnRow};
use tokio::sync::Notify;

use crate::bus::Events;
use crate::clock::now_ms;
use crate::config::JobsConfig;
use crate::conversations::Conversations;
use crate::error::{ErrorKind, IrisError, Result};
use crate::pool::Pool;
use crate::pool::turn::{Priority, TurnStatus, TurnTracker};
use crate::recorder::Recorder;
use crate::services::Services;
use crate::teams::Teams;

pub use queue::{JobQueue, LocalQueue, Place, Waiting};
pub(crate) use report::push_delivery;
use report::spawn_event_forwarder;
pub use report::{Subscriptions, job_payload};

/// The job scheduler and its reports.
pub struct Jobs {
    queue: Box<dyn JobQueue>,
    wake: Arc<Notify>,
    /// Sends what the ends write; `None` in one-shot CLI commands, which
    /// run no jobs.
    deliverer: Option<iris_webhooks::Deliverer>,
    /// Active webhook subscriptions.
    subscriptions: Subscriptions,
    /// Some task has an A2A push config (refreshed with the subscriptions):
    /// while none does, turn events need no look at the table.
    pushes: AtomicBool,
    /// Iris is stopping: nothing more is dispatched, and the ends the
    /// shutdown causes are not jobs' ends (see [`Jobs::stop`]).
    stopping: AtomicBool,
    config: JobsConfig,
    /// Attempts of each delivery (`webhooks.maxAttempts`).
    max_attempts: i64,
    store: Store,
    /// Writes accepted jobs in batches.
    writer: JobWriter,
    recorder: Recorder,
    teams: Arc<Teams>,
    conversations: Arc<Conversations>,
    pool: Pool,
    events: Arc<dyn Events>,
    /// This process's name when it claims a job (unique per start).
    claimer: String,
    /// Which node runs each team (a job runs on its team's owner).
    ownership: Arc<crate::ownership::Ownership>,
    /// Jobs a cancel is ending now: a second cancel at once waits for the
    /// end and is told it (only one cancel ends a job).
    cancelling: std::sync::Mutex<HashSet<String>>,
}

/// A job's status as read `now` (as it was, if its record is gone).
fn status_of<'a>(now: Option<&'a JobRecord>, was: &'a JobRecord) -> &'a str {
    now.unwrap_or(was).turn.status.as_str()
}

/// A job's cancel under way, in [`Jobs::cancelling`] until dropped.
struct Cancelling<'a> {
    jobs: &'a Jobs,
    id: String,
}

impl Drop for Cancelling<'_> {
    fn drop(&mut self) {
        if let Ok(mut c) = self.jobs.cancelling.lock() {
            c.remove(&self.id);
        }
    }
}

impl Jobs {
    pub(crate) fn new(
        config: JobsConfig,
        max_attempts: i64,
        queue: Box<dyn JobQueue>,
        deliverer: Option<iris_webhooks::Deliverer>,
        deps: Services,
    ) -> Self {
        Jobs {
            queue,
            wake: Arc::new(Notify::new()),
            deliverer,
            subscriptions: Subscriptions::default(),
            pushes: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            config,
            max_attempts: max_attempts.max(1),
            writer: deps.store.job_writer(),
            recorder: deps.recorder,
            teams: deps.teams,
            conversations: deps.conversations,
            pool: deps.pool,
            events: deps.events,
            ownership: deps.ownership,
            cancelling: Default::default(),
            // The node's id: its claims survive its restart and are
            // released by it.
            claimer: deps
                .store
                .node()
                .map_or_else(|| format!("run_{}", ulid::Ulid::new()), str::to_owned),
            store: deps.store,
        }
    }

    /// Write an accepted job with its queued turn (see [`JobWriter::insert`]):
    /// the job that has the same idempotency key if there is one.
    pub async fn record(&self, turn: &TurnRow, job: &JobRow) -> Result<Option<JobRecord>> {
        Ok(self.writer.insert(turn, job).await?)
    }

    /// Whether this Iris runs jobs (a server does; a one-shot command not).
    pub fn running(&self) -> bool {
        self.deliverer.is_some()
    }

    /// Whether Iris is stopping.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Jobs waiting, in all.
    pub fn waiting(&self) -> usize {
        self.queue.waiting()
    }

    /// The most jobs that may wait (`jobs.maxQueued`).
    pub fn max_queued(&self) -> usize {
        self.config.max_queued
    }

    /// Queue a job whose records are written; returns its place.
    pub(crate) fn enqueue(&self, job: &JobRecord) -> Place {
        let place = self.queue.enqueue(job);
        self.wake.notify_one();
        place
    }

    /// Where job `id` stands, if it waits.
    pub fn place(&self, id: &str) -> Option<Place> {
        self.queue.place(id)
    }

    /// When a running job of `team` should end, from the team's average.
    pub fn estimate_running(&self, team: &str, started_at: Option<i64>) -> Option<i64> {
        self.queue.estimate_running(team, started_at)
    }

    /// Send what is due now (a redelivery was asked for).
    pub(crate) fn poke(&self) {
        if let Some(d) = &self.deliverer {
            d.poke();
        }
    }
}

impl Jobs {
    /// Start the scheduler (a server only), after taking up what a
    /// previous run left.
    pub(crate) async fn start(self: &Arc<Self>) -> Result<()> {
        if !self.running() {
            return Ok(());
        }
        self.recover().await?;
        let weak = Arc::downgrade(self);
        tokio::spawn(schedule(weak));
        spawn_event_forwarder(self.clone());
        Ok(())
    }

    async fn recover(self: &Arc<Self>) -> Result<()> {
        // Claimed by this node's previous run (or a run before nodes had
        // ids), some put back in its queue: free to run here, with the
        // waiting jobs of nodes that are not running. A running node's
        // jobs, claimed or waiting, are its own.
        self.store.release_job_claims(&self.claimer).await?;
        let live_since = now_ms() - crate::cluster::DOWN_AFTER_MS;
        let open = self.store.unclaimed_jobs(&self.claimer, live_since).await?;
        self.take_up(open).await
    }

    /// The jobs of `team`, taken over from another node, run here: those
    /// waiting join this node's queue, those it was running run again or
    /// end `interrupted` (`jobs.retryInterrupted`), each reported once.
    pub(crate) async fn adopt_team(self: &Arc<Self>, team: &str) -> Result<()> {
        if !self.running() {
            return Ok(());
        }
        let open = self.store.unclaimed_jobs_of_team(team).await?;
        self.take_up(open).await?;
        self.poke();
        Ok(())
    }

    /// Jobs nobody runs, taken up here (see [`Jobs::recover`]).
    async fn take_up(self: &Arc<Self>, open: Vec<JobRecord>) -> Result<()> {
        let (mut requeued, mut interrupted, mut reported) = (0, 0, 0);
        for mut job in open {
            match TurnStatus::parse(&job.turn.status) {
                Some(TurnStatus::Queued) => {
                    self.enqueue(&job);
                }
                Some(TurnStatus::Running) => {
                    let cfg = &self.config;
                    if cfg.retry_interrupted && job.job.attempts < cfg.max_attempts {
                        self.store.requeue_job(&job.job.id).await?;
                        job.job.attempts += 1;
                        requeued += 1;
                        self.enqueue(&job);
                    } else {
                        interrupted += 1;
                        let finish = TurnFinish {
                            status: "failed".into(),
                            response: String::new(),
                            error: Some("interrupted".into()),
                            completed_at: now_ms(),
                            ..Default::default()
                        };
                        job.turn.finish(finish.clone());
                        self.write_job_end(&job, finish).await;
                    }
                }
                // Ended, but its deliveries were not written.
                _ => {
                    reported += 1;
                    let finish = TurnFinish {
                        status: job.turn.status.clone(),
                        response: job.turn.response.clone().unwrap_or_default(),
                        error: job.turn.error.clone(),
                        tool_uses: job.turn.tool_uses.clone(),
                        usage: job.turn.usage.clone(),
                        cost_usd: job.turn.cost_usd,
                        completed_at: job.turn.completed_at.unwrap_or_else(now_ms),
                        events_dropped: job.turn.events_dropped,
                        started_at: job.turn.started_at,
                    };
                    self.write_job_end(&job, finish).await;
                }
            }
        }
        let waiting = self.waiting();
        if waiting + requeued + interrupted + reported > 0 {
            tracing::info!(
                waiting,
                requeued,
                interrupted,
                reported,
                "jobs of a previous run taken up"
            );
        }
        Ok(())
    }

    /// Cancel job `id`: a waiting one ends `cancelled` at once, a running
    /// one is interrupted. Returns the status it had. A job that has
    /// ended — before this call, or on its own while it was being
    /// cancelled — is `CONFLICT`: only a job this call ended is cancelled.
    pub(crate) async fn cancel(&self, job: &JobRecord) -> Result<TurnStatus> {
        self.end_job(job, "cancelled").await
    }

    /// [`Jobs::cancel`] with `reason` as the job's error.
    async fn end_job(&self, job: &JobRecord, reason: &str) -> Result<TurnStatus> {
        let id = &job.job.id;
        let ended = |status: &str| {
            IrisError::conflict(format!("job `{id}` has already ended ({status})"))
                .with_details(serde_json::json!({"jobId": id, "status": status}))
        };
        // One cancel at a time ends a job; another at once is told the end.
        let Some(_mine) = self.start_cancelling(id) else {
            let now = self.written(id, Duration::from_secs(15)).await?;
            return Err(ended(status_of(now.as_ref(), job)));
        };
        if self.end_if_waiting(job, reason).await {
            return Ok(TurnStatus::Queued);
        }
        if self.queue.cancel_dispatching(id, reason) {
            // On its way to the pool: it ends before it gets there — or,
            // put back (the pool was full), waits again and ends here.
            for _ in 0..50 {
                if self.queue.running_turn(id).is_some() {
                    break;
                }
                if self.end_if_waiting(job, reason).await {
                    return Ok(TurnStatus::Queued);
                }
                // Ended: by this cancel, or — if the dispatcher had looked
                // for a cancel just before this one came — on its own, so
                // quickly that it was never seen running.
                if let Some(now) = self.store.job(id).await?
                    && now.job.notified
                {
                    return match now.turn.status.as_str() {
                        "cancelled" => Ok(TurnStatus::Queued),
                        other => Err(ended(other)),
                    };
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if let Some(t) = self.queue.running_turn(id) {
            let status = t.status();
            if status.is_final() {
                return Err(ended(status.as_str()));
            }
            self.pool.cancel(&t.session_id, Some(t.id.clone())).await;
            // An agent gets a grace period to stop; the answer waits for it.
            let after = t
                .wait(Some(Duration::from_secs(10)))
                .await
                .map(|o| o.status);
            return match after {
                // It finished on its own before the cancel reached it.
                Some(end) if end != TurnStatus::Cancelled => Err(ended(end.as_str())),
                _ => {
                    // Its end as the caller will read it next.
                    self.written(id, Duration::from_secs(5)).await?;
                    Ok(status)
                }
            };
        }
        // Neither waiting nor running: ended — or being ended by a
        // deletion, or held by the scheduler between the two (put back
        // meanwhile: ended here): its end once written (else its record as
        // it is; at once where no scheduler runs).
        if self.end_if_waiting(job, reason).await {
            return Ok(TurnStatus::Queued);
        }
        let limit = if self.running() { 5 } else { 0 };
        let now = self.written(id, Duration::from_secs(limit)).await?;
        Err(ended(status_of(now.as_ref(), job)))
    }

    /// Mark job `id` as being cancelled by this call; `None` if another
    /// call is at it.
    fn start_cancelling(&self, id: &str) -> Option<Cancelling<'_>> {
        let mut c = self.cancelling.lock().ok()?;
        c.insert(id.to_owned()).then(|| Cancelling {
            jobs: self,
            id: id.to_owned(),
        })
    }

    /// Job `id`'s record once its end is written, or as it is after
    /// `limit`.
    async fn written(&self, id: &str, limit: Duration) -> Result<Option<JobRecord>> {
        let until = tokio::time::Instant::now() + limit;
        loop {
            let now = self.store.job(id).await?;
            match &now {
                Some(j) if !j.job.notified && tokio::time::Instant::now() < until => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ => return Ok(now),
            }
        }
    }

    /// End job `job` `cancelled` with `reason` if it waits in the queue
    /// (taken out of it first); whether it did.
    pub(crate) async fn end_if_waiting(&self, job: &JobRecord, reason: &str) -> bool {
        let Some((_, w)) = self.queue.take_waiting(&job.job.id) else {
            return false;
        };
        let mut job = job.clone();
        let finish = TurnFinish {
            status: "cancelled".into(),
            response: String::new(),
            error: Some(reason.into()),
            completed_at: now_ms(),
            ..Default::default()
        };
        job.turn.finish(finish.clone());
        drop(w);
        self.write_job_end(&job, finish).await;
        true
    }

    /// End every open job of conversation `session_id` (deleted): waiting
    /// ones at once, running ones interrupted; each ends `cancelled` with
    /// `reason` and its callback and webhooks written before this returns.
    pub(crate) async fn end_jobs_of_session(&self, session_id: &str, reason: &str) -> Result<()> {
        self.end_jobs_where(|j| j.turn.session_id == session_id, reason)
            .await
    }

    /// End the open jobs of `team` (deleted, or removed by a reload), as
    /// [`Jobs::end_jobs_of_session`] does: the waiting ones, and the
    /// running one too when `running_too` (else it finishes).
    pub(crate) async fn end_jobs_of_team(
        &self,
        team: &str,
        reason: &str,
        running_too: bool,
    ) -> Result<()> {
        self.end_jobs_where(
            |j| j.job.team == team && (running_too || j.turn.status == "queued"),
            reason,
        )
        .await
    }

    async fn end_jobs_where(&self, which: impl Fn(&JobRecord) -> bool, reason: &str) -> Result<()> {
        if !self.running() {
            return Ok(());
        }
        self.recorder.flush().await;
        let open: Vec<JobRecord> = self
            .store
            .open_jobs()
            .await?
            .into_iter()
            .filter(which)
            .collect();
        // The waiting ones first: a running one that ends frees its slot,
        // and the scheduler would hand the next one to the pool.
        let mut left = Vec::new();
        for job in &open {
            if !self.end_if_waiting(job, reason).await {
                left.push(job);
            }
        }
        for job in left {
            // Ended meanwhile: nothing to do.
            let _ = self.end_job(job, reason).await;
        }
        // Running ones are written by their watcher: wait for it.
        for job in &open {
            self.written(&job.job.id, Duration::from_secs(5)).await?;
        }
        Ok(())
    }

    /// Write a job's end with its deliveries, then send them. Retried,
    /// since the end is what its webhooks report: it must not be lost.
    pub(crate) async fn write_job_end(&self, job: &JobRecord, finish: TurnFinish) {
        let deliveries = self.job_deliveries(job, &finish).await;
        let mut wait = Duration::from_millis(100);
        loop {
            match self
                .store
                .finish_job(&job.job.id, &finish, &deliveries)
                .await
            {
                Ok(()) => break,
                Err(e) if e.fenced_by().is_some() => {
                    // Another node took the team over: it runs the job and
                    // reports it.
                    tracing::warn!(job = %job.job.id, error = %e, "a job's end not written");
                    return;
                }
                Err(e) => {
                    tracing::warn!(job = %job.job.id, error = %e, "writing a job's end; trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        }
        self.events.publish(
            crate::bus::EventKind::JobFinished,
            &job.job.team,
            Some(&job.turn.session_id),
            Some(&job.job.id),
            serde_json::json!({"jobId": job.job.id, "status": finish.status, "error": finish.error}),
        );
        self.poke();
    }

    /// Hand one waiting job to the pool.
    async fn dispatch_job(self: &Arc<Self>, team_name: &str, key: (Priority, u64), w: Waiting) {
        // Another node owns the team now (this one took the job up at its
        // start, after being away): the owner runs it — it took the team's
        // waiting jobs up when it took the team over.
        if self.ownership.enabled() {
            match self.ownership.owner(team_name).await {
                Ok(crate::ownership::Owner::Here) => {}
                Ok(crate::ownership::Owner::There { node, .. }) => {
                    tracing::info!(job = %w.id, node, "a job left to its team's owner");
                    self.queue.dispatched(&w.id);
                    return;
                }
                Err(e) => {
                    tracing::warn!(job = %w.id, error = %e.message, "finding a job's team's owner; trying again");
                    self.queue.put_back(team_name, key, w);
                    self.wake_later();
                    return;
                }
            }
        }
        // Read and claimed; or gone (deleted with its conversation
        // meanwhile), or taken first by another Iris on this database.
        let taken = match self.store.job(&w.id).await {
            Ok(Some(job)) => self
                .store
                .claim_job(&job.job.id, &self.claimer)
                .await
                .map(|mine| mine.then_some(job)),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        let job = match taken {
            Ok(Some(job)) => job,
            Ok(None) => {
                self.queue.dispatched(&w.id);
                return;
            }
            Err(e) if e.fenced_by().is_some() => {
                // The team is another node's now: the job is its to run.
                tracing::warn!(job = %w.id, error = %e, "a job left to the team's new owner");
                self.queue.dispatched(&w.id);
                return;
            }
            Err(e) => {
                tracing::warn!(job = %w.id, error = %e, "taking up a job to run it; trying again");
                self.queue.put_back(team_name, key, w);
                self.wake_later();
                return;
            }
        };
        let end = |status: &str, message: String| {
            let mut job = job.clone();
            let finish = TurnFinish {
                status: status.into(),
                response: String::new(),
                error: Some(message),
                completed_at: now_ms(),
                ..Default::default()
            };
            job.turn.finish(finish.clone());
            (job, finish)
        };
        if self.stopping() {
            self.queue.put_back(team_name, key, w);
            return;
        }
        let Some(team) = self.teams.named(team_name) else {
            self.queue.dispatched(&w.id);
            // Deleted or removed meanwhile: its jobs end cancelled, as
            // the waiting ones of a deleted team do.
            let (job, finish) = end("cancelled", format!("team `{team_name}` no longer exists"));
            self.write_job_end(&job, finish).await;
            return;
        };
        let t = &job.turn;
        let session = match self
            .conversations
            .session(&t.from_team, team_name, Some(&t.session_id))
            .await
        {
            Ok(s) => s,
            Err(e) => {
                self.queue.dispatched(&w.id);
                let (job, finish) = end("failed", e.message);
                self.write_job_end(&job, finish).await;
                return;
            }
        };
        let tracker = Arc::new(
            TurnTracker::new(
                t.id.clone(),
                t.session_id.clone(),
                team_name.to_owned(),
                t.from_team.clone(),
                t.request.clone(),
            )
            .created(t.created_at)
            .with_chain(t.chain.clone())
            .with_limit(
                job.job
                    .timeout_ms
                    .filter(|ms| *ms > 0)
                    .map(|ms| Duration::from_millis(ms as u64)),
            ),
        );
        if let Some(reason) = self.queue.dispatched_if_cancelled(&w.id) {
            let (job, finish) = end("cancelled", reason);
            self.write_job_end(&job, finish).await;
            return;
        }
        match self.pool.submit(&team, &session, tracker.clone(), key.0) {
            Ok(()) => {
                self.queue.started(team_name, tracker.clone());
                let jobs = self.clone();
                let (session_id, turn_id) = (tracker.session_id.clone(), tracker.id.clone());
                tokio::spawn(async move { jobs.watch_job(job, tracker).await });
                // Deleted while this job was on its way (the deletion
                // stopped the team's processes before this one started):
                // it does not run for a team that is gone.
                if self.teams.named(team_name).is_none() {
                    self.pool.cancel(&session_id, Some(turn_id)).await;
                }
            }
            Err(e) if matches!(e.kind, ErrorKind::PoolExhausted | ErrorKind::QueueFull) => {
                // The pool is full: wait, first in line.
                self.queue.put_back(team_name, key, w);
                self.wake_later();
            }
            Err(e) => {
                self.queue.dispatched(&w.id);
                let (job, finish) = end("failed", e.message);
                self.write_job_end(&job, finish).await;
            }
        }
    }

    /// Look at the queue again in a while (the pool or the database was busy).
    fn wake_later(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if let Some(jobs) = weak.upgrade() {
                jobs.wake.notify_one();
            }
        });
    }

    async fn watch_job(self: Arc<Self>, mut job: JobRecord, tracker: Arc<TurnTracker>) {
        let Some(outcome) = tracker.wait(None).await.cloned() else {
            return;
        };
        if self.stopping() {
            // Ended by the shutdown, not by itself: the next start takes it
            // up (see `stop_jobs`).
            return;
        }
        let mut finish = outcome.finish(0);
        // Written with the end: the recorder may not have written the start
        // yet (it does not once the end is there).
        finish.started_at = Some(outcome.completed_at - outcome.duration_ms as i64);
        job.turn.finish(finish.clone());
        self.write_job_end(&job, finish).await;
        self.queue
            .ended(&job.job.team, &job.job.id, Some(outcome.duration_ms));
        self.wake.notify_one();
    }

    /// Before the pool stops: dispatch nothing more, and remember which
    /// jobs it is running. Returns them for [`Jobs::reopen`].
    pub(crate) fn stop(&self) -> Vec<String> {
        self.stopping.store(true, Ordering::Release);
        self.queue.running_ids()
    }

    /// After the pool stopped: the jobs it was running ended `cancelled`
    /// by the shutdown, not by anyone's wish; put them back as they were
    /// (`running` if they had started, else `queued`), so the next start
    /// runs them again or fails them `interrupted`, and reports them.
    pub(crate) async fn reopen(&self, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        match self.store.reopen_jobs(ids).await {
            Ok(n) => tracing::info!(
                jobs = n,
                "jobs stopped by the shutdown are taken up at the next start"
            ),
            Err(e) => tracing::warn!(error = %e, "reopening jobs stopped by the shutdown"),
        }
    }
}

/// The scheduler: hands waiting jobs to the pool whenever something changed.
async fn schedule(jobs: Weak<Jobs>) {
    loop {
        let Some(strong) = jobs.upgrade() else { return };
        if strong.stopping() {
            return;
        }
        let batch = strong.queue.next_batch();
        let mut seeded = Vec::new();
        for (team, key, w) in batch {
            if !seeded.contains(&team) {
                seeded.push(team.clone());
                let avg = strong.store.average_turn_ms(&team).await.ok().flatten();
                strong.queue.seed_average(&team, avg);
            }
            strong.dispatch_job(&team, key, w).await;
        }
        let wake = strong.wake.clone();
        drop(strong);
        // A periodic look too, in case a wake-up was missed.
        let _ = tokio::time::timeout(Duration::from_secs(5), wake.notified()).await;
    }
}

pub(crate) fn priority_name(p: Priority) -> &'static str {
    match p {
        Priority::High => "high",
        Priority::Normal => "normal",
        Priority::Low => "low",
    }
}
