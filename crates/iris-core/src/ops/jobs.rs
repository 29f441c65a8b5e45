//! Jobs (seed 002's `execute`): `job_execute`, `job_get`, `job_list`,
//! `job_cancel`, `job_deliveries`. A job is a turn of kind `job`: its id is
//! a message id, and `get_message` shows the same record.

use std::collections::BTreeMap;
use std::sync::Arc;

use iris_storage::{AttemptRow, Callback, DeliveryRow, JobFilter, JobRecord, JobRow, TurnRow};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::system::Pagination;
use crate::auth::scope;
use crate::ctx::Ctx;
use crate::error::{ErrorKind, IrisError, Result};
use crate::iris::Iris;
use crate::jobs::priority_name;
use crate::pool::turn::Priority;
use crate::registry::{Operation, Runs};

/// Where to report the job's end (seed 002's `callback`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CallbackParams {
    /// An http(s) URL on a public address (or a host in `webhooks.allowHosts`).
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// POST (default), PUT or PATCH.
    #[serde(default = "post")]
    #[schemars(regex(pattern = r"^(POST|PUT|PATCH)$"))]
    pub method: String,
    /// Extra headers sent with the delivery (not `Content-Type`, `Host`, `X-Iris-*`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Signs this job's deliveries (`X-Iris-Signature`) instead of the server's secret.
    #[serde(default)]
    #[schemars(length(min = 16, max = 256))]
    pub secret: Option<String>,
}

fn post() -> String {
    "POST".into()
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecuteParams {
    /// The team to hand the task to.
    #[schemars(length(min = 1, max = 64))]
    pub team: String,
    /// What the team should do.
    #[schemars(length(min = 1, max = 1_000_000))]
    pub task: String,
    /// high, normal (default) or low: higher ones run first, then by arrival.
    #[serde(default)]
    pub priority: Priority,
    /// Longest the job may run once started (ms); then it ends `timed_out`.
    #[serde(default)]
    #[schemars(range(min = 1, max = 86_400_000))]
    pub timeout: Option<i64>,
    /// (Not nullable in the schema, so a bad field in it is named.)
    #[serde(default)]
    #[schemars(with = "CallbackParams")]
    pub callback: Option<CallbackParams>,
    /// Run in this conversation instead of the caller's default one with the team.
    #[serde(default)]
    pub session_id: Option<crate::session_id::SessionId>,
    /// `worktree`: the conversation works in its own git worktree (made
    /// before the job is accepted), as with the send operations.
    #[serde(default)]
    pub isolation: Option<crate::worktree::Isolation>,
    /// The same key with the same request returns the first job instead of
    /// queueing another (REST: the `Idempotency-Key` header).
    #[serde(default)]
    #[schemars(length(min = 1, max = 255))]
    pub idempotency_key: Option<String>,
}

/// `execute`'s answer (seed 002), HTTP 202.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    pub job_id: String,
    pub team: String,
    pub session_id: String,
    /// `queued`, or the status it has now when an idempotent retry returns an earlier job.
    pub status: String,
    /// Place in the team's queue, 1 being next; absent once it left the queue.
    pub position: Option<usize>,
    /// When it should end (Unix ms), from the team's recent job durations;
    /// absent until one of the team's jobs has ended.
    pub estimated_completion: Option<i64>,
    pub created_at: i64,
    /// This is an earlier job with the same `Idempotency-Key`: `true`,
    /// present only then (so not required in the schema).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

/// A job (the turn's record with the job's own fields).
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub job_id: String,
    pub team: String,
    pub session_id: String,
    /// queued, running, completed, failed, cancelled or timed_out.
    pub status: String,
    pub priority: String,
    pub task: String,
    pub position: Option<usize>,
    pub estimated_completion: Option<i64>,
    /// The team's answer, once completed (the text so far while running).
    pub result: Option<String>,
    pub error: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    /// Milliseconds from start (or queueing) to the end, once ended.
    pub duration: Option<i64>,
    pub timeout: Option<i64>,
    /// `{url, method, headers}` (never the secret).
    pub callback: Option<Value>,
    /// Runs started (more than 1 when an interrupted job ran again).
    pub attempts: i64,
    /// Who queued it (`key:…`, `user:…`).
    pub caller: String,
    pub usage: Option<Value>,
    pub cost_usd: Option<f64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobParams {
    #[schemars(length(min = 1, max = 64))]
    pub job_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListParams {
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    #[schemars(regex(pattern = r"^(queued|running|completed|failed|cancelled|timed_out)$"))]
    pub status: Option<String>,
    /// Only the caller's own jobs.
    #[serde(default)]
    pub mine: bool,
    #[serde(default = "super::one")]
    #[schemars(range(min = 1))]
    pub page: i64,
    #[serde(default = "super::fifty")]
    #[schemars(range(min = 1, max = 1000))]
    pub limit: i64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct JobList {
    /// Newest first.
    pub jobs: Vec<JobView>,
    pub pagination: Pagination,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cancelled {
    pub job_id: String,
    /// What it was when cancelled: `queued` (removed) or `running` (interrupted).
    pub was: String,
    pub status: String,
}

/// A delivery with its attempts.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    #[serde(flatten)]
    pub delivery: DeliveryRow,
    pub attempt_log: Vec<AttemptRow>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryView>,
    pub pagination: Pagination,
}

/// A delivery with its attempts, as the list operations show it.
pub(super) async fn with_attempts(
    iris: &Iris,
    rows: Vec<DeliveryRow>,
) -> Result<Vec<DeliveryView>> {
    let mut out = Vec::with_capacity(rows.len());
    for d in rows {
        let attempt_log = iris.store().attempts(&d.id).await?;
        out.push(DeliveryView {
            delivery: d,
            attempt_log,
        });
    }
    Ok(out)
}

/// SHA-256 of what makes a request this one, for `Idempotency-Key`.
fn request_hash(p: &ExecuteParams) -> String {
    use sha2::Digest;
    let mut canonical = json!({
        "team": p.team, "task": p.task, "priority": p.priority, "timeout": p.timeout,
        "callback": p.callback, "sessionId": p.session_id,
    });
    if let Some(i) = p.isolation {
        canonical["isolation"] = json!(i);
    }
    hex::encode(sha2::Sha256::digest(canonical.to_string().as_bytes()))
}

/// The callback after its checks: destination, method, headers.
async fn checked_callback(iris: &Iris, c: CallbackParams) -> Result<Callback> {
    let allow = iris_webhooks::AllowHosts::new(&iris.config().webhooks.allow_hosts);
    iris_webhooks::guard::check_url(&c.url, &allow)
        .await
        .map_err(|e| IrisError::validation("callback.url", e))?;
    iris_webhooks::deliver::check_headers(&c.headers)
        .map_err(|e| IrisError::validation("callback.headers", e))?;
    Ok(Callback {
        url: c.url,
        method: c.method,
        headers: c.headers,
        secret: c.secret,
    })
}

fn view(iris: &Iris, job: JobRecord) -> JobView {
    let JobRecord { job, mut turn } = job;
    if let Some(live) = iris.pool().live_turn(&job.id) {
        // Memory is ahead of the database while it runs.
        match live.outcome() {
            Some(o) => turn.finish(o.finish(turn.events_dropped)),
            None => {
                turn.status = live.status().as_str().to_owned();
                turn.response = Some(live.partial());
            }
        }
    }
    let place = iris.jobs().place(&job.id);
    let estimated_completion = match turn.status.as_str() {
        "queued" => place.and_then(|p| p.estimated_completion),
        "running" => iris.jobs().estimate_running(&job.team, turn.started_at),
        _ => None,
    };
    let TurnRow {
        session_id,
        status,
        request,
        response,
        error,
        usage,
        cost_usd,
        created_at,
        started_at,
        completed_at,
        ..
    } = turn;
    JobView {
        job_id: job.id,
        team: job.team,
        session_id,
        position: place
            .and_then(|p| p.position)
            .filter(|_| status == "queued"),
        status,
        priority: job.priority,
        task: request,
        estimated_completion,
        result: response,
        error,
        created_at,
        started_at,
        completed_at,
        duration: completed_at.map(|c| c - started_at.unwrap_or(created_at)),
        timeout: job.timeout_ms,
        callback: job.callback.as_ref().map(iris_storage::callback_json),
        attempts: job.attempts,
        caller: job.caller,
        usage,
        cost_usd,
    }
}

/// Job `id`, if the caller may see it.
async fn visible_job(iris: &Iris, ctx: &Ctx, id: &str) -> Result<JobRecord> {
    iris.recorder().flush().await;
    iris.store()
        .job(id)
        .await?
        .filter(|j| ctx.principal.can_see_team(&j.job.team))
        .filter(|j| {
            ctx.principal
                .agent_team()
                .is_none_or(|own| j.turn.from_team == own)
        })
        .ok_or_else(|| IrisError::not_found(format!("no job `{id}`")))
}

async fn execute(iris: Arc<Iris>, ctx: Ctx, p: ExecuteParams) -> Result<Accepted> {
    if !iris.jobs().running() {
        return Err(IrisError::new(
            ErrorKind::ServiceUnavailable,
            "jobs run in `iris serve`; send this to the server instead of running it locally",
        ));
    }
    let hash = request_hash(&p);
    let team = iris.teams().get(&ctx, &p.team)?;
    let callback = match p.callback {
        Some(c) => Some(checked_callback(&iris, c).await?),
        None => None,
    };
    let waiting = iris.jobs().waiting();
    if waiting >= iris.config().jobs.max_queued {
        return Err(IrisError::new(
            ErrorKind::QueueFull,
            format!("{waiting} jobs are already waiting"),
        )
        .with_details(json!({"maxQueued": iris.config().jobs.max_queued})));
    }
    let from = iris.access().speaker(&ctx, None)?;
    let chain = iris.messaging().chain(&ctx, &team.name, &[])?;
    let session = iris
        .conversations()
        .session(&from, &team.name, p.session_id.as_deref())
        .await?;
    iris.access().own_session(&ctx, &session)?;
    // Its worktree, if it is to have one, before the job is accepted.
    let session = iris
        .conversations()
        .isolated(&team, session, p.isolation)
        .await?;
    let id = format!("msg_{}", ulid::Ulid::new());
    let caller = ctx.principal.actor();
    let job = JobRow {
        id: id.clone(),
        team: team.name.clone(),
        priority: priority_name(p.priority).into(),
        timeout_ms: p.timeout,
        callback,
        caller: caller.clone(),
        idempotency_key: p.idempotency_key,
        request_hash: Some(hash.clone()),
        attempts: 1,
        notified: false,
        created_at: crate::clock::now_ms(),
    };
    let turn = TurnRow {
        id: id.clone(),
        session_id: session.id.clone(),
        from_team: from,
        to_team: team.name.clone(),
        kind: "job".into(),
        status: "queued".into(),
        request: p.task,
        response: None,
        error: None,
        tool_uses: None,
        usage: None,
        cost_usd: None,
        created_at: job.created_at,
        started_at: None,
        completed_at: None,
        events_dropped: 0,
        chain,
        caller: Some(caller),
    };
    if let Some(earlier) = iris.jobs().record(&turn, &job).await? {
        if earlier.job.request_hash.as_deref() != Some(hash.as_str()) {
            return Err(IrisError::conflict(
                "this Idempotency-Key was used for a different request",
            )
            .with_details(json!({"jobId": earlier.job.id, "field": "idempotencyKey"})));
        }
        let v = view(&iris, earlier);
        return Ok(Accepted {
            job_id: v.job_id,
            team: v.team,
            session_id: v.session_id,
            status: v.status,
            position: v.position,
            estimated_completion: v.estimated_completion,
            created_at: v.created_at,
            replayed: true,
        });
    }
    let record = JobRecord { job, turn };
    let place = iris.jobs().enqueue(&record);
    iris.events().publish(
        crate::bus::EventKind::JobQueued,
        &team.name,
        Some(&session.id),
        Some(&id),
        json!({"jobId": id, "priority": priority_name(p.priority), "position": place.position}),
    );
    // Its team deleted while this was written (the deletion's last look
    // at the team's jobs may have come first): it ends here, heard of.
    if iris.teams().named(&team.name).is_none() {
        let reason = format!("team `{}` was deleted", team.name);
        iris.jobs().end_if_waiting(&record, &reason).await;
    }
    Ok(Accepted {
        job_id: id,
        team: team.name.clone(),
        session_id: session.id,
        status: "queued".into(),
        position: place.position,
        estimated_completion: place.estimated_completion,
        created_at: record.job.created_at,
        replayed: false,
    })
}

pub(super) fn operations() -> Vec<Operation> {
    vec![
        Operation::new(
            "job_execute",
            "Hand a team a task and return at once with its job id; the job runs in the background and its end is reported to `callback` (signed webhook).",
            Some(scope::MESSAGES_WRITE),
            true,
            execute,
        ).on_owner(Runs::OnTeamsOwner)
        .sends_messages(),
        Operation::new(
            "job_get",
            "One job: status, place in the queue, estimated completion, result.",
            Some(scope::MESSAGES_READ),
            false,
            |iris: Arc<Iris>, ctx: Ctx, p: JobParams| async move {
                let job = visible_job(&iris, &ctx, &p.job_id).await?;
                Ok(view(&iris, job))
            },
        ),
        Operation::new(
            "job_list",
            "Jobs, newest first, by team and status, with pagination.",
            Some(scope::MESSAGES_READ),
            false,
            |iris: Arc<Iris>, ctx: Ctx, p: ListParams| async move {
                super::visible(&ctx, p.team.as_deref())?;
                iris.recorder().flush().await;
                let (rows, total) = iris
                    .store()
                    .jobs(&JobFilter {
                        team: p.team,
                        status: p.status,
                        caller: p.mine.then(|| ctx.principal.actor()),
                        // An agent reads its own team's jobs only.
                        from_team: ctx.principal.agent_team().map(str::to_owned),
                        teams: ctx.principal.teams.clone(),
                        limit: p.limit,
                        offset: Pagination::offset(p.page, p.limit),
                    })
                    .await?;
                Ok(JobList {
                    jobs: rows.into_iter().map(|j| view(&iris, j)).collect(),
                    pagination: Pagination::of(p.page, p.limit, total),
                })
            },
        ),
        Operation::new(
            "job_cancel",
            "Cancel a job: a queued one is removed, a running one interrupted; either ends `cancelled` and its webhook fires.",
            Some(scope::MESSAGES_WRITE),
            true,
            |iris: Arc<Iris>, ctx: Ctx, p: JobParams| async move {
                let job = visible_job(&iris, &ctx, &p.job_id).await?;
                let was = iris.jobs().cancel(&job).await?;
                let now = visible_job(&iris, &ctx, &p.job_id).await?;
                Ok(Cancelled {
                    job_id: p.job_id,
                    was: was.as_str().to_owned(),
                    status: view(&iris, now).status,
                })
            },
        ).on_owner(Runs::OnJobsOwner),
        Operation::new(
            "job_deliveries",
            "The webhook deliveries reporting a job, with every attempt.",
            Some(scope::MESSAGES_READ),
            false,
            |iris: Arc<Iris>, ctx: Ctx, p: JobParams| async move {
                visible_job(&iris, &ctx, &p.job_id).await?;
                // Subscriptions' deliveries are administrators' business.
                let callbacks_only = !ctx.principal.allows(scope::ADMIN);
                let (rows, total) = iris
                    .store()
                    .deliveries(None, Some(&p.job_id), callbacks_only, 1000, 0)
                    .await?;
                Ok(DeliveryList {
                    deliveries: with_attempts(&iris, rows).await?,
                    pagination: Pagination::of(1, 1000, total),
                })
            },
        ),
    ]
}
