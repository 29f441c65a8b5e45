//! Jobs: work handed to a team with `execute`, answered at once with the
//! job's id, run in the background and reported by webhook when it ends.
//!
//! A job is a turn (kind `job`, the same id) plus a `jobs` record, both
//! written before `execute` answers. Jobs wait here, per team, by priority
//! then arrival, and go to the pool `jobs.concurrencyPerTeam` at a time, so
//! the pool's limits hold however many are queued (a full pool leaves them
//! waiting, not failed). Each running job has a watcher that, when its turn
//! ends, writes the end and its webhook deliveries in one transaction. At
//! start, what a previous run left is taken up again ([`Jobs::recover`]):
//! queued jobs are queued again, interrupted ones run again or fail, and an
//! end whose deliveries were not written gets them.

mod report;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use iris_storage::{JobRecord, TurnFinish};
use tokio::sync::Notify;

use crate::error::{ErrorKind, IrisError, Result};
use crate::iris::Iris;
use crate::now_ms;
use crate::pool::turn::{Priority, TurnStatus, TurnTracker};

pub use report::{Subscriptions, job_payload, spawn_event_forwarder};

/// A job waiting for its turn to be handed to the pool. Only its id: the
/// rest (up to a megabyte of task) is read back from the database when it
/// goes, so a long queue costs little memory.
#[derive(Debug, Clone)]
struct Waiting {
    id: String,
}

/// One team's jobs.
#[derive(Default)]
struct TeamJobs {
    /// By priority, then arrival.
    waiting: BTreeMap<(Priority, u64), Waiting>,
    /// Handed to the pool, not yet ended.
    running: HashMap<String, Arc<TurnTracker>>,
    /// Moving average of this team's job durations (ms).
    average_ms: Option<f64>,
}

#[derive(Default)]
struct State {
    teams: HashMap<String, TeamJobs>,
    /// Where each waiting job is: team and key.
    index: HashMap<String, (String, (Priority, u64))>,
    /// Taken from the queue, not yet in the pool.
    dispatching: HashSet<String>,
    /// Cancelled while being dispatched: ended instead of submitted.
    cancelled: HashSet<String>,
    arrivals: u64,
}

/// Where a job stands in its team's queue, for its record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Place {
    /// 1 for the next job to run; `None` once it is not waiting.
    pub position: Option<usize>,
    /// When it should end (Unix ms), from the team's average job duration;
    /// `None` until one of the team's jobs has ended.
    pub estimated_completion: Option<i64>,
}

/// The job scheduler.
pub struct Jobs {
    state: Mutex<State>,
    wake: Arc<Notify>,
    concurrency: usize,
    /// Sends what the ends write; `None` in one-shot CLI commands, which
    /// run no jobs.
    pub deliverer: Option<iris_webhooks::Deliverer>,
    /// Active webhook subscriptions.
    pub subscriptions: Subscriptions,
    /// Iris is stopping: nothing more is dispatched, and the ends the
    /// shutdown causes are not jobs' ends (see [`Iris::stop_jobs`]).
    stopping: AtomicBool,
}

/// Weight of the newest duration in the moving average.
const AVERAGE_WEIGHT: f64 = 0.3;

impl Jobs {
    pub(crate) fn new(concurrency: usize, deliverer: Option<iris_webhooks::Deliverer>) -> Self {
        Jobs {
            state: Mutex::new(State::default()),
            wake: Arc::new(Notify::new()),
            concurrency: concurrency.max(1),
            deliverer,
            subscriptions: Subscriptions::default(),
            stopping: AtomicBool::new(false),
        }
    }

    /// Whether this Iris runs jobs (a server does; a one-shot command not).
    pub fn running(&self) -> bool {
        self.deliverer.is_some()
    }

    /// Jobs waiting, in all.
    pub fn waiting(&self) -> usize {
        self.state.lock().map(|s| s.index.len()).unwrap_or(0)
    }

    /// Queue a job whose records are written; returns its place.
    pub(crate) fn enqueue(&self, job: &JobRecord) -> Place {
        let priority = parse_priority(&job.job.priority);
        let waiting = Waiting {
            id: job.job.id.clone(),
        };
        let place = {
            let Ok(mut s) = self.state.lock() else {
                return Place {
                    position: None,
                    estimated_completion: None,
                };
            };
            s.arrivals += 1;
            let key = (priority, s.arrivals);
            s.index
                .insert(job.job.id.clone(), (job.job.team.clone(), key));
            let team = s.teams.entry(job.job.team.clone()).or_default();
            team.waiting.insert(key, waiting);
            self.place_in(team, key)
        };
        self.wake.notify_one();
        place
    }

    fn place_in(&self, team: &TeamJobs, key: (Priority, u64)) -> Place {
        let ahead = team.waiting.range(..key).count();
        let estimated_completion = team.average_ms.map(|avg| {
            // Jobs ahead and running share the team's slots.
            let rounds = ((ahead + team.running.len()) / self.concurrency) as f64 + 1.0;
            now_ms() + (avg * rounds) as i64
        });
        Place {
            position: Some(ahead + 1),
            estimated_completion,
        }
    }

    /// Where job `id` stands, if it waits here.
    pub fn place(&self, id: &str) -> Option<Place> {
        let s = self.state.lock().ok()?;
        let (team, key) = s.index.get(id)?;
        Some(self.place_in(s.teams.get(team)?, *key))
    }

    /// When a running job of `team` should end, from the team's average.
    pub fn estimate_running(&self, team: &str, started_at: Option<i64>) -> Option<i64> {
        let s = self.state.lock().ok()?;
        let avg = s.teams.get(team)?.average_ms?;
        Some(started_at.unwrap_or_else(now_ms) + avg as i64)
    }

    /// Take job `id` out of the queue; false when it was not waiting.
    fn take_waiting(&self, id: &str) -> Option<(String, Waiting)> {
        let mut s = self.state.lock().ok()?;
        let (team, key) = s.index.remove(id)?;
        let w = s.teams.get_mut(&team)?.waiting.remove(&key)?;
        Some((team, w))
    }

    /// The next jobs to hand to the pool: per team, while a slot is free.
    fn next_batch(&self) -> Vec<(String, (Priority, u64), Waiting)> {
        let Ok(mut s) = self.state.lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let State {
            teams,
            index,
            dispatching,
            ..
        } = &mut *s;
        for (name, team) in teams.iter_mut() {
            while team.running.len() + out.iter().filter(|(t, _, _)| t == name).count()
                < self.concurrency
            {
                let Some((key, w)) = team.waiting.pop_first() else {
                    break;
                };
                index.remove(&w.id);
                dispatching.insert(w.id.clone());
                out.push((name.clone(), key, w));
            }
        }
        out
    }

    /// Return a job the pool could not take, at its place.
    fn put_back(&self, team: &str, key: (Priority, u64), w: Waiting) {
        if let Ok(mut s) = self.state.lock() {
            s.dispatching.remove(&w.id);
            s.index.insert(w.id.clone(), (team.to_owned(), key));
            s.teams
                .entry(team.to_owned())
                .or_default()
                .waiting
                .insert(key, w);
        }
    }

    fn started(&self, team: &str, tracker: Arc<TurnTracker>) {
        if let Ok(mut s) = self.state.lock() {
            s.dispatching.remove(&tracker.id);
            s.teams
                .entry(team.to_owned())
                .or_default()
                .running
                .insert(tracker.id.clone(), tracker);
        }
    }

    fn ended(&self, team: &str, id: &str, duration_ms: Option<u64>) {
        if let Ok(mut s) = self.state.lock()
            && let Some(t) = s.teams.get_mut(team)
        {
            t.running.remove(id);
            if let Some(d) = duration_ms {
                let d = d as f64;
                t.average_ms = Some(match t.average_ms {
                    Some(avg) => avg + AVERAGE_WEIGHT * (d - avg),
                    None => d,
                });
            }
        }
        self.wake.notify_one();
    }

    /// Dispatching of job `id` is over (it failed or was cancelled);
    /// whether it had been cancelled meanwhile.
    fn dispatched(&self, id: &str) -> bool {
        self.state.lock().is_ok_and(|mut s| {
            s.dispatching.remove(id);
            s.cancelled.remove(id)
        })
    }

    /// Dispatching of job `id` ends here if it was cancelled meanwhile.
    fn dispatched_if_cancelled(&self, id: &str) -> bool {
        self.state.lock().is_ok_and(|mut s| {
            let cancelled = s.cancelled.remove(id);
            if cancelled {
                s.dispatching.remove(id);
            }
            cancelled
        })
    }

    /// Cancel job `id` if it is being dispatched; whether it was.
    fn cancel_dispatching(&self, id: &str) -> bool {
        self.state
            .lock()
            .is_ok_and(|mut s| s.dispatching.contains(id) && s.cancelled.insert(id.to_owned()))
    }

    /// Whether Iris is stopping.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// The jobs handed to the pool and not ended.
    fn running_ids(&self) -> Vec<String> {
        self.state
            .lock()
            .map(|s| {
                s.teams
                    .values()
                    .flat_map(|t| t.running.keys().cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The running turn of job `id`, if it runs.
    fn running_turn(&self, id: &str) -> Option<Arc<TurnTracker>> {
        let s = self.state.lock().ok()?;
        s.teams.values().find_map(|t| t.running.get(id).cloned())
    }

    /// Seed a team's average from its recent turns, if none is known yet.
    fn seed_average(&self, team: &str, avg_ms: Option<f64>) {
        if let (Ok(mut s), Some(avg)) = (self.state.lock(), avg_ms) {
            let t = s.teams.entry(team.to_owned()).or_default();
            t.average_ms.get_or_insert(avg);
        }
    }
}

pub(crate) fn parse_priority(p: &str) -> Priority {
    match p {
        "high" => Priority::High,
        "low" => Priority::Low,
        _ => Priority::Normal,
    }
}

impl Iris {
    /// Start the scheduler (a server only), after taking up what a
    /// previous run left.
    pub(crate) async fn start_jobs(self: &Arc<Self>) -> Result<()> {
        if !self.jobs.running() {
            return Ok(());
        }
        self.recover_jobs().await?;
        let weak = Arc::downgrade(self);
        tokio::spawn(schedule(weak));
        spawn_event_forwarder(self.clone());
        Ok(())
    }

    async fn recover_jobs(self: &Arc<Self>) -> Result<()> {
        let open = self.store.open_jobs().await?;
        let (mut requeued, mut interrupted, mut reported) = (0, 0, 0);
        for mut job in open {
            match TurnStatus::parse(&job.turn.status) {
                Some(TurnStatus::Queued) => {
                    self.jobs.enqueue(&job);
                }
                Some(TurnStatus::Running) => {
                    let cfg = &self.config.jobs;
                    if cfg.retry_interrupted && job.job.attempts < cfg.max_attempts {
                        self.store.requeue_job(&job.job.id).await?;
                        job.job.attempts += 1;
                        requeued += 1;
                        self.jobs.enqueue(&job);
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
                    };
                    self.write_job_end(&job, finish).await;
                }
            }
        }
        let waiting = self.jobs.waiting();
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
    pub(crate) async fn cancel_job(&self, job: &JobRecord) -> Result<TurnStatus> {
        self.end_job(job, "cancelled").await
    }

    /// [`Iris::cancel_job`] with `reason` as the job's error.
    async fn end_job(&self, job: &JobRecord, reason: &str) -> Result<TurnStatus> {
        let ended = |status: &str| {
            IrisError::conflict(format!("job `{}` has already ended ({status})", job.job.id))
                .with_details(serde_json::json!({"jobId": job.job.id, "status": status}))
        };
        if self.end_if_waiting(job, reason).await {
            return Ok(TurnStatus::Queued);
        }
        if self.jobs.cancel_dispatching(&job.job.id) {
            // On its way to the pool: it ends before it gets there.
            for _ in 0..50 {
                if self.jobs.running_turn(&job.job.id).is_some() {
                    break;
                }
                if self
                    .store
                    .job(&job.job.id)
                    .await?
                    .is_some_and(|j| j.job.notified)
                {
                    return Ok(TurnStatus::Queued);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if let Some(t) = self.jobs.running_turn(&job.job.id) {
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
                _ => Ok(status),
            };
        }
        // Neither waiting nor running: ended, unless the scheduler holds
        // it between the two (then its record says queued or running).
        let now = self.store.job(&job.job.id).await?;
        Err(ended(
            now.as_ref()
                .map(|j| j.turn.status.as_str())
                .unwrap_or(job.turn.status.as_str()),
        ))
    }

    /// End job `job` `cancelled` with `reason` if it waits in the queue
    /// (taken out of it first); whether it did.
    async fn end_if_waiting(&self, job: &JobRecord, reason: &str) -> bool {
        let Some((_, w)) = self.jobs.take_waiting(&job.job.id) else {
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
    /// [`Iris::end_jobs_of_session`] does: the waiting ones, and the
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
        if !self.jobs.running() {
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
            for _ in 0..250 {
                match self.store.job(&job.job.id).await? {
                    Some(j) if !j.job.notified => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    _ => break,
                }
            }
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
                Err(e) => {
                    tracing::warn!(job = %job.job.id, error = %e, "writing a job's end; trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        }
        self.bus.publish(
            crate::bus::EventKind::JobFinished,
            &job.job.team,
            Some(&job.turn.session_id),
            Some(&job.job.id),
            serde_json::json!({"jobId": job.job.id, "status": finish.status, "error": finish.error}),
        );
        if let Some(d) = &self.jobs.deliverer {
            d.poke();
        }
    }

    /// Hand one waiting job to the pool.
    async fn dispatch_job(self: &Arc<Self>, team_name: &str, key: (Priority, u64), w: Waiting) {
        let job = match self.store.job(&w.id).await {
            Ok(Some(job)) => job,
            // Deleted with its conversation meanwhile.
            Ok(None) => {
                self.jobs.dispatched(&w.id);
                return;
            }
            Err(e) => {
                tracing::warn!(job = %w.id, error = %e, "reading a job to run it; trying again");
                self.jobs.put_back(team_name, key, w);
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
        if self.jobs.stopping() {
            self.jobs.put_back(team_name, key, w);
            return;
        }
        let Some(team) = self.team_named(team_name) else {
            self.jobs.dispatched(&w.id);
            let (job, finish) = end("failed", format!("team `{team_name}` no longer exists"));
            self.write_job_end(&job, finish).await;
            return;
        };
        let t = &job.turn;
        let session = match self
            .session(&t.from_team, team_name, Some(&t.session_id))
            .await
        {
            Ok(s) => s,
            Err(e) => {
                self.jobs.dispatched(&w.id);
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
        if self.jobs.dispatched_if_cancelled(&w.id) {
            let (job, finish) = end("cancelled", "cancelled".into());
            self.write_job_end(&job, finish).await;
            return;
        }
        match self.pool.submit(&team, &session, tracker.clone(), key.0) {
            Ok(()) => {
                self.jobs.started(team_name, tracker.clone());
                let iris = self.clone();
                tokio::spawn(async move { iris.watch_job(job, tracker).await });
            }
            Err(e) if matches!(e.kind, ErrorKind::PoolExhausted | ErrorKind::QueueFull) => {
                // The pool is full: wait, first in line.
                self.jobs.put_back(team_name, key, w);
                self.wake_later();
            }
            Err(e) => {
                self.jobs.dispatched(&w.id);
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
            if let Some(iris) = weak.upgrade() {
                iris.jobs.wake.notify_one();
            }
        });
    }

    async fn watch_job(self: Arc<Self>, mut job: JobRecord, tracker: Arc<TurnTracker>) {
        let Some(outcome) = tracker.wait(None).await.cloned() else {
            return;
        };
        if self.jobs.stopping() {
            // Ended by the shutdown, not by itself: the next start takes it
            // up (see `stop_jobs`).
            return;
        }
        let finish = outcome.finish(0);
        job.turn.finish(finish.clone());
        job.turn.started_at = Some(outcome.completed_at - outcome.duration_ms as i64);
        self.write_job_end(&job, finish).await;
        self.jobs
            .ended(&job.job.team, &job.job.id, Some(outcome.duration_ms));
    }

    /// Before the pool stops: dispatch nothing more, and remember which
    /// jobs it is running. Returns them for [`Iris::reopen_jobs`].
    pub(crate) fn stop_jobs(&self) -> Vec<String> {
        self.jobs.stopping.store(true, Ordering::Release);
        self.jobs.running_ids()
    }

    /// After the pool stopped: the jobs it was running ended `cancelled`
    /// by the shutdown, not by anyone's wish; put them back as they were
    /// (`running` if they had started, else `queued`), so the next start
    /// runs them again or fails them `interrupted`, and reports them.
    pub(crate) async fn reopen_jobs(&self, ids: &[String]) {
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

    /// A team by name, whoever asks (the scheduler has no caller).
    pub(crate) fn team_named(&self, name: &str) -> Option<Arc<crate::team::Team>> {
        self.teams().into_iter().find(|t| t.name == name)
    }
}

/// The scheduler: hands waiting jobs to the pool whenever something changed.
async fn schedule(iris: Weak<Iris>) {
    loop {
        let Some(strong) = iris.upgrade() else { return };
        if strong.jobs.stopping() {
            return;
        }
        let batch = strong.jobs.next_batch();
        let mut seeded = Vec::new();
        for (team, key, w) in batch {
            if !seeded.contains(&team) {
                seeded.push(team.clone());
                let avg = strong.store.average_turn_ms(&team).await.ok().flatten();
                strong.jobs.seed_average(&team, avg);
            }
            strong.dispatch_job(&team, key, w).await;
        }
        let wake = strong.jobs.wake.clone();
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
