//! Conversations: list, cancel, reboot, delete, fork, report, diff.

use std::sync::Arc;

use iris_storage::{HistoryFilter, SessionRow, TurnRow};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::auth::scope;
use crate::ctx::Ctx;
use crate::error::{IrisError, Result};
use crate::iris::Iris;
use crate::pool::ProcessInfo;
use crate::registry::{Operation, Runs};

/// Names one conversation: the pair's default, or an explicit session id.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionParams {
    /// The team; may be left out when `sessionId` is given.
    #[serde(default)]
    #[schemars(length(min = 1, max = 64))]
    pub to_team: Option<String>,
    #[serde(default)]
    #[schemars(length(max = 128))]
    pub from_team: Option<String>,
    #[serde(default)]
    pub session_id: Option<crate::session_id::SessionId>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CancelParams {
    #[schemars(length(min = 1, max = 64))]
    pub to_team: String,
    #[serde(default)]
    #[schemars(length(max = 128))]
    pub from_team: Option<String>,
    #[serde(default)]
    pub session_id: Option<crate::session_id::SessionId>,
    /// A particular queued or running message; default: the running one.
    #[serde(default)]
    pub message_id: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReportParams {
    /// The team; may be left out when `sessionId` is given.
    #[serde(default)]
    #[schemars(length(min = 1, max = 64))]
    pub to_team: Option<String>,
    #[serde(default)]
    #[schemars(length(max = 128))]
    pub from_team: Option<String>,
    #[serde(default)]
    pub session_id: Option<crate::session_id::SessionId>,
    /// Most recent messages to include (oldest first).
    #[serde(default = "default_report_limit")]
    #[schemars(range(min = 1, max = 1000))]
    pub limit: i64,
    /// Leave the messages out (counts and process only).
    #[serde(default = "yes")]
    pub include_messages: bool,
}

fn yes() -> bool {
    true
}

impl SessionParams {
    async fn conversation(
        self,
        iris: &Iris,
        ctx: &Ctx,
    ) -> Result<(std::sync::Arc<crate::team::Team>, SessionRow)> {
        conversation(
            iris,
            ctx,
            self.to_team.as_deref(),
            self.from_team,
            self.session_id.as_deref(),
        )
        .await
    }
}

/// The conversation a call names: by team (and caller), or by session id alone.
async fn conversation(
    iris: &Iris,
    ctx: &Ctx,
    to_team: Option<&str>,
    from: Option<String>,
    session_id: Option<&str>,
) -> Result<(std::sync::Arc<crate::team::Team>, SessionRow)> {
    if let Some(t) = to_team {
        let team = iris.teams().get(ctx, t)?;
        let from = iris.access().speaker(ctx, from)?;
        let s = iris
            .conversations()
            .existing(&from, &team.name, session_id)
            .await?;
        iris.access().own_session(ctx, &s)?;
        return Ok((team, s));
    }
    let Some(id) = session_id else {
        return Err(IrisError::validation(
            "toTeam",
            "is required unless sessionId is given",
        ));
    };
    iris.recorder().flush().await;
    let not_found = || IrisError::session_not_found(format!("`{id}`"));
    let s = iris.store().session(id).await?.ok_or_else(not_found)?;
    let team = iris.teams().get(ctx, &s.to_team).map_err(|_| not_found())?;
    iris.access().own_session(ctx, &s)?;
    Ok((team, s))
}

fn default_report_limit() -> i64 {
    100
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancelResult {
    pub team: String,
    pub session_id: String,
    /// Whether a queued or running message was found and cancelled.
    pub cancelled: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebootResult {
    pub team: String,
    pub from: String,
    pub old_session_id: Option<String>,
    pub new_session_id: String,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteResult {
    pub team: String,
    pub session_id: String,
    pub deleted: bool,
    /// Its git worktree: removed when clean, else kept (and why).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worktree: Option<crate::worktree::Removal>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiffParams {
    /// The team; may be left out when `sessionId` is given.
    #[serde(default)]
    #[schemars(length(min = 1, max = 64))]
    pub to_team: Option<String>,
    #[serde(default)]
    #[schemars(length(max = 128))]
    pub from_team: Option<String>,
    #[serde(default)]
    pub session_id: Option<crate::session_id::SessionId>,
    /// Most bytes of diff to return (whole files only; the others are
    /// listed in `omitted`). Default 256 KiB.
    #[serde(default = "default_diff_bytes")]
    #[schemars(range(min = 1, max = 10_485_760))]
    pub max_bytes: u64,
}

fn default_diff_bytes() -> u64 {
    256 * 1024
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiffResult {
    pub session_id: String,
    pub team: String,
    #[serde(flatten)]
    pub changes: crate::worktree::Changes,
}

/// What the agent of a worktree conversation changed since its branch
/// started.
async fn diff(iris: &Iris, ctx: &Ctx, p: DiffParams) -> Result<DiffResult> {
    let (team, s) = conversation(
        iris,
        ctx,
        p.to_team.as_deref(),
        p.from_team,
        p.session_id.as_deref(),
    )
    .await?;
    let Some(path) = s.worktree.clone() else {
        return Err(IrisError::conflict(format!(
            "conversation `{}` works in its team's folder, not in a worktree of its own: it has no branch to compare",
            s.id
        ))
        .with_details(serde_json::json!({"sessionId": s.id, "team": team.name})));
    };
    let base = iris.store().worktree_base(&s.id).await?;
    let path = std::path::Path::new(&path);
    let changes = crate::worktree::changes(
        path,
        team.path(),
        base.as_deref(),
        p.max_bytes.min(10_485_760) as usize,
    )
    .await?;
    Ok(DiffResult {
        session_id: s.id,
        team: team.name.clone(),
        changes,
    })
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListParams {
    /// Only this team's conversations.
    #[serde(default)]
    #[schemars(length(min = 1, max = 64))]
    pub team: Option<String>,
    #[serde(default = "super::one")]
    #[schemars(range(min = 1))]
    pub page: i64,
    #[serde(default = "super::fifty")]
    #[schemars(range(min = 1, max = 1000))]
    pub limit: i64,
}

/// One conversation in a list.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationView {
    pub session_id: String,
    pub team: String,
    /// Who talks to the team in it (a key's or user's name, or a team).
    pub from: String,
    pub created_at: i64,
    pub last_used_at: i64,
    /// Messages it has had.
    pub turns: i64,
    /// Its process: `stopped`, `starting`, `ready`, `busy`…
    pub process_state: String,
    /// How its latest message ended (or stands), if it had any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<String>,
    /// What its messages cost, where the agent reports it (USD).
    pub cost_usd: f64,
    /// The default conversation of its caller and team.
    pub is_default: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<String>,
    /// Its own git worktree's branch, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ConversationList {
    /// Latest used first.
    pub conversations: Vec<ConversationView>,
    pub pagination: super::system::Pagination,
}

async fn list(iris: &Iris, ctx: &Ctx, p: ListParams) -> Result<ConversationList> {
    super::visible(ctx, p.team.as_deref())?;
    iris.recorder().flush().await;
    let (rows, total) = iris
        .store()
        .conversations(&iris_storage::ConversationFilter {
            team: p.team,
            // An agent sees its own team's conversations only.
            from_team: ctx.principal.agent_team().map(str::to_owned),
            teams: ctx.principal.teams.clone(),
            limit: p.limit,
            offset: super::system::Pagination::offset(p.page, p.limit),
        })
        .await?;
    let conversations = rows
        .into_iter()
        .map(|r| {
            let s = r.session;
            ConversationView {
                // Named at its making (no git run per row).
                branch: s.worktree.as_ref().map(|_| crate::worktree::branch(&s.id)),
                session_id: s.id,
                team: s.to_team,
                from: s.from_team,
                created_at: s.created_at,
                last_used_at: s.last_used_at,
                turns: s.message_count,
                process_state: s.process_state,
                last_status: r.last_status,
                cost_usd: r.cost_usd,
                is_default: s.is_default,
                forked_from: s.fork_of,
            }
        })
        .collect();
    Ok(ConversationList {
        conversations,
        pagination: super::system::Pagination::of(p.page, p.limit, total),
    })
}

/// A conversation's own git worktree.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorktreeInfo {
    /// The folder its agent works in.
    pub path: String,
    pub branch: String,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForkResult {
    pub team: String,
    /// The new session: pass it as `sessionId` to continue the fork.
    pub session_id: String,
    pub forked_from: String,
}

/// One message of a conversation.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReportEntry {
    pub message_id: String,
    pub from: String,
    /// `message`, or `notification` for an answer delivered back into the
    /// conversation (`notify`).
    pub kind: String,
    /// The teams the message passed through, ending with this team.
    pub chain: Vec<String>,
    pub status: String,
    pub request: String,
    pub response: Option<String>,
    pub error: Option<String>,
    pub created_at: i64,
    pub completed_at: Option<i64>,
    /// Milliseconds from its start (else its creation) to its end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<i64>,
    /// The tools its agent used, as the agent reported them.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Value>")]
    pub tool_uses: Option<serde_json::Value>,
    /// Tokens, as the agent reported them.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<serde_json::Value>")]
    pub usage: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

impl From<TurnRow> for ReportEntry {
    fn from(t: TurnRow) -> Self {
        ReportEntry {
            message_id: t.id,
            from: t.from_team,
            kind: t.kind,
            chain: t.chain,
            status: t.status,
            request: t.request,
            response: t.response,
            error: t.error,
            duration: t
                .completed_at
                .map(|end| end - t.started_at.unwrap_or(t.created_at)),
            created_at: t.created_at,
            completed_at: t.completed_at,
            tool_uses: t.tool_uses.filter(|v| !v.is_null()),
            usage: t.usage.filter(|v| !v.is_null()),
            cost_usd: t.cost_usd,
        }
    }
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReportResult {
    pub team: String,
    pub from: String,
    pub session_id: String,
    pub forked_from: Option<String>,
    pub created_at: i64,
    pub last_used_at: i64,
    /// When the agent had lost the conversation and Iris started it afresh.
    pub restarted_at: Option<i64>,
    pub message_count: i64,
    pub messages: Vec<ReportEntry>,
    pub process: Option<ProcessInfo>,
    /// Where it works when it has its own git worktree.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worktree: Option<WorktreeInfo>,
}

pub(crate) async fn report(iris: &Iris, ctx: &Ctx, p: ReportParams) -> Result<ReportResult> {
    let (team, s) = conversation(
        iris,
        ctx,
        p.to_team.as_deref(),
        p.from_team,
        p.session_id.as_deref(),
    )
    .await?;
    let (mut turns, total) = iris
        .store()
        .turns(&HistoryFilter {
            teams: None,
            session_id: Some(s.id.clone()),
            limit: p.limit,
            ..Default::default()
        })
        .await?;
    turns.reverse();
    if !p.include_messages {
        turns.clear();
    }
    let process = iris
        .pool()
        .processes()
        .into_iter()
        .find(|x| x.session_id == s.id);
    let worktree = s.worktree.clone().map(|path| WorktreeInfo {
        branch: crate::worktree::branch_of(std::path::Path::new(&path))
            .unwrap_or_else(|| crate::worktree::branch(&s.id)),
        path,
    });
    Ok(ReportResult {
        team: team.name.clone(),
        from: s.from_team,
        session_id: s.id,
        forked_from: s.fork_of,
        created_at: s.created_at,
        last_used_at: s.last_used_at,
        restarted_at: s.restarted_at,
        message_count: total,
        messages: turns.into_iter().map(ReportEntry::from).collect(),
        process,
        worktree,
    })
}

pub(super) fn operations() -> Vec<Operation> {
    vec![
        Operation::new(
            "session_cancel",
            "Cancel the running message of a conversation (or a queued one by messageId).",
            Some(scope::MESSAGES_WRITE),
            true,
            |iris: Arc<Iris>, ctx: Ctx, p: CancelParams| async move {
                let team = iris.teams().get(&ctx, &p.to_team)?;
                let from = iris.access().speaker(&ctx, p.from_team)?;
                let s = iris
                    .conversations()
                    .existing(&from, &team.name, p.session_id.as_deref())
                    .await?;
                // An agent's credential cancels only its own team's
                // conversations, like every other session operation.
                iris.access().own_session(&ctx, &s)?;
                let cancelled = iris.pool().cancel(&s.id, p.message_id).await;
                Ok(CancelResult {
                    team: team.name.clone(),
                    session_id: s.id,
                    cancelled,
                })
            },
        ).on_owner(Runs::OnTeamsOwner),
        Operation::new(
            "session_reboot",
            "Start a fresh conversation for a (from, to) pair; the old one's history is kept.",
            Some(scope::PROCESSES_MANAGE),
            true,
            |iris: Arc<Iris>, ctx: Ctx, p: SessionParams| async move {
                let to = p
                    .to_team
                    .ok_or_else(|| IrisError::validation("toTeam", "is required"))?;
                let team = iris.teams().get(&ctx, &to)?;
                // The conversation named (checked like every session
                // operation's), or the caller's default one with the team.
                let (old, from) = match p.session_id.as_deref() {
                    Some(id) => {
                        let (_, s) =
                            conversation(&iris, &ctx, Some(&team.name), p.from_team, Some(id)).await?;
                        // Only the pair's current conversation is rebooted
                        // (an older one was already: nothing to start).
                        if !s.is_default {
                            return Err(IrisError::conflict(format!(
                                "conversation `{id}` is not the current one of `{}` with `{}`; reboot that one (no sessionId)",
                                s.from_team, team.name
                            )));
                        }
                        let from = s.from_team.clone();
                        (Some(s), from)
                    }
                    None => {
                        let from = iris.access().speaker(&ctx, p.from_team)?;
                        (iris.store().default_session(&from, &team.name).await?, from)
                    }
                };
                if let Some(old) = &old {
                    let id = old.id.clone();
                    iris.pool()
                        .stop_where(|x| x.session_id == id, "session rebooted")
                        .await;
                    iris.store().retire_session(&old.id).await?;
                    iris.conversations().forget(&old.id).await;
                }
                let new = iris
                    .conversations()
                    .session(&from, &team.name, None)
                    .await?;
                Ok(RebootResult {
                    team: team.name.clone(),
                    from,
                    old_session_id: old.map(|o| o.id),
                    new_session_id: new.id,
                })
            },
        ).on_owner(Runs::OnTeamsOwner),
        Operation::new(
            "session_delete",
            "Stop a conversation's process and delete the conversation with its history; its open jobs end `cancelled` first (their callbacks fire).",
            Some(scope::CACHE_WRITE),
            true,
            |iris: Arc<Iris>, ctx: Ctx, p: SessionParams| async move {
                let (team, s) = p.conversation(&iris, &ctx).await?;
                let id = s.id.clone();
                // Its jobs end first, heard of by their callers (cancelled,
                // with their callbacks), then the history goes.
                iris.jobs()
                    .end_jobs_of_session(&id, "its conversation was deleted")
                    .await?;
                iris.pool()
                    .stop_where(|x| x.session_id == id, "session deleted")
                    .await;
                let worktree = match &s.worktree {
                    Some(dir) => Some(
                        crate::worktree::remove_if_clean(std::path::Path::new(dir), &s.id).await,
                    ),
                    None => None,
                };
                // A job written while its jobs were ended (the caller had
                // it accepted just then) ends too, before the history goes.
                let mut tries = 0;
                let deleted = loop {
                    if let Some(deleted) = iris.conversations().delete(&s.id).await? {
                        break deleted;
                    }
                    tries += 1;
                    if !iris.jobs().running() {
                        // A one-shot command: no scheduler here ends jobs.
                        return Err(IrisError::conflict(
                            "the conversation has jobs that have not ended; delete it through the running server (`iris serve`), which ends them first",
                        ));
                    }
                    if tries == 10 {
                        return Err(IrisError::conflict(
                            "jobs keep arriving for this conversation; try again",
                        ));
                    }
                    iris.jobs()
                        .end_jobs_of_session(&id, "its conversation was deleted")
                        .await?;
                };
                Ok(DeleteResult {
                    team: team.name.clone(),
                    session_id: s.id,
                    deleted,
                    worktree,
                })
            },
        ).on_owner(Runs::OnTeamsOwner),
        Operation::new(
            "session_fork",
            "Fork a conversation: a new session that starts from the old one's history, through the agent's own fork support.",
            Some(scope::TEAMS_WRITE),
            true,
            |iris: Arc<Iris>, ctx: Ctx, p: SessionParams| async move {
                let (team, s) = p.conversation(&iris, &ctx).await?;
                let from = s.from_team.clone();
                if !s.started {
                    return Err(IrisError::conflict(
                        "the conversation has no messages yet; nothing to fork",
                    ));
                }
                let fork = iris
                    .conversations()
                    .create(&from, &team.name, None, false, Some(s.id.clone()))
                    .await?;
                Ok(ForkResult {
                    team: team.name.clone(),
                    session_id: fork.id,
                    forked_from: s.id,
                })
            },
        ).on_owner(Runs::OnTeamsOwner),
        Operation::new(
            "session_list",
            "Conversations, latest used first (by team), each with its caller, last activity, messages, process, how its latest message ended and what it cost.",
            Some(scope::CACHE_READ),
            false,
            |iris: Arc<Iris>, ctx: Ctx, p: ListParams| async move { list(&iris, &ctx, p).await },
        ),
        Operation::new(
            "session_diff",
            "What the agent of a worktree conversation changed: its files, and a unified diff of its worktree now (committed, uncommitted and untracked) against the commit its branch started from.",
            Some(scope::CACHE_READ),
            false,
            |iris: Arc<Iris>, ctx: Ctx, p: DiffParams| async move { diff(&iris, &ctx, p).await },
        )
        .on_owner(Runs::OnTeamsOwner),
        Operation::new(
            "session_report",
            "A conversation's messages (oldest first) and its process, read from the database.",
            Some(scope::CACHE_READ),
            false,
            |iris: Arc<Iris>, ctx: Ctx, p: ReportParams| async move { report(&iris, &ctx, p).await },
        ),
    ]
}
