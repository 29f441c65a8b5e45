//! Sending messages to teams: `send_message`, `ask_message`, `quick_message`.

use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::scope;
use crate::ctx::Ctx;
use crate::error::{ErrorKind, IrisError, Result};
use crate::follow::{Follower, TurnStream};
use crate::iris::Iris;
use crate::messaging::Outgoing;
use crate::pool::turn::{Priority, TurnStatus, TurnTracker};
use crate::registry::{Operation, Runs, run_checked};

/// Longest a caller may wait for a turn: one day.
const MAX_WAIT_MS: i64 = 86_400_000;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendParams {
    /// The team to message.
    #[schemars(length(min = 1, max = 64))]
    pub to_team: String,
    /// The message text.
    #[schemars(length(min = 1, max = 1_000_000))]
    pub message: String,
    /// Who is asking (a team or any caller name); defaults to the caller's identity.
    #[serde(default)]
    #[schemars(length(max = 128))]
    pub from_team: Option<String>,
    /// Milliseconds to wait: -1 returns at once, 0 waits until the turn ends.
    /// When a positive wait runs out the call fails with TIMEOUT; the turn goes on.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = -1, max = 86_400_000))]
    pub timeout: i64,
    /// Continue a particular conversation instead of the pair's default one.
    #[serde(default)]
    pub session_id: Option<crate::session_id::SessionId>,
    #[serde(default)]
    pub priority: Priority,
    /// With `timeout: -1`, from a team's agent: deliver the answer into
    /// the agent's conversation as a new message when it ends.
    #[serde(default)]
    pub notify: bool,
    /// `worktree`: this conversation works in its own git worktree and
    /// branch `iris/<session id>` (else as the team's `isolation` says).
    #[serde(default)]
    pub isolation: Option<crate::worktree::Isolation>,
}

fn default_timeout() -> i64 {
    30_000
}

/// `ask_message`'s parameters: `send_message`'s, with a wait of 0 or more
/// (an ask always waits; `quick_message` is the one that does not).
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct AskParams(SendParams);

impl JsonSchema for AskParams {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "AskParams".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut schema = SendParams::json_schema(generator);
        if let Some(timeout) = schema
            .as_object_mut()
            .and_then(|o| o.get_mut("properties"))
            .and_then(|p| p.get_mut("timeout"))
        {
            timeout["minimum"] = json!(0);
            timeout["description"] = json!(
                "Milliseconds to wait: 0 waits until the turn ends. When a positive wait runs out the call fails with TIMEOUT; the turn goes on."
            );
        }
        schema
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuickParams {
    #[schemars(length(min = 1, max = 64))]
    pub to_team: String,
    #[schemars(length(min = 1, max = 1_000_000))]
    pub message: String,
    #[serde(default)]
    #[schemars(length(max = 128))]
    pub from_team: Option<String>,
    #[serde(default)]
    pub session_id: Option<crate::session_id::SessionId>,
    #[serde(default)]
    pub priority: Priority,
    /// From a team's agent: deliver the answer into the agent's
    /// conversation as a new message when it ends.
    #[serde(default)]
    pub notify: bool,
    /// `worktree`: this conversation works in its own git worktree.
    #[serde(default)]
    pub isolation: Option<crate::worktree::Isolation>,
}

/// The answer to a message (seed 001's `tell` response, plus ids).
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageResult {
    pub message_id: String,
    pub session_id: String,
    pub from: String,
    pub to: String,
    pub message: String,
    /// The agent's answer; absent while the turn has not ended.
    pub response: Option<String>,
    pub status: TurnStatus,
    /// Milliseconds from queueing to the end (or to the return, when async).
    pub duration: u64,
    pub timestamp: i64,
    #[serde(rename = "async")]
    pub is_async: bool,
    #[schemars(with = "Vec<serde_json::Value>")]
    pub tool_uses: Vec<iris_agent::ToolUse>,
    pub usage: Option<serde_json::Value>,
    pub cost_usd: Option<f64>,
    /// Something to know about how the turn ran: the agent had lost the
    /// conversation, and Iris started it afresh (it remembers nothing before).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
}

fn result_of(t: &TurnTracker, is_async: bool) -> MessageResult {
    let outcome = t.outcome();
    MessageResult {
        message_id: t.id.clone(),
        session_id: t.session_id.clone(),
        from: t.from.clone(),
        to: t.team.clone(),
        message: t.request.clone(),
        response: outcome.map(|o| o.response.clone()),
        status: t.status(),
        duration: (crate::clock::now_ms() - t.created_at).max(0) as u64,
        timestamp: crate::clock::now_ms(),
        is_async,
        tool_uses: outcome.map(|o| o.tool_uses.clone()).unwrap_or_default(),
        usage: outcome.and_then(|o| o.usage.clone()),
        cost_usd: outcome.and_then(|o| o.cost_usd),
        notice: t.notice().map(str::to_owned),
    }
}

/// What `p` sends, as `ctx`'s caller.
fn outgoing(iris: &Iris, ctx: &Ctx, p: SendParams, kind: &'static str) -> Result<Outgoing> {
    Ok(Outgoing {
        from: iris.access().speaker(ctx, p.from_team)?,
        to: p.to_team,
        text: p.message,
        session_id: p.session_id.map(crate::session_id::SessionId::into_string),
        priority: p.priority,
        kind,
        continues: Vec::new(),
        isolation: p.isolation,
    })
}

impl QuickParams {
    /// As `send_message`'s parameters, returning at once.
    fn into_send(self) -> SendParams {
        SendParams {
            to_team: self.to_team,
            message: self.message,
            from_team: self.from_team,
            timeout: -1,
            session_id: self.session_id,
            priority: self.priority,
            notify: self.notify,
            isolation: self.isolation,
        }
    }
}

/// Send, then wait as the caller asked. Failed and timed-out turns become
/// `PROCESS_ERROR`; a wait that runs out becomes `TIMEOUT` with the partial
/// response and the message id to poll.
pub(crate) async fn deliver(
    iris: &Arc<Iris>,
    ctx: &Ctx,
    p: SendParams,
    kind: &'static str,
) -> Result<MessageResult> {
    let timeout = p.timeout.clamp(-1, MAX_WAIT_MS);
    let notify = p.notify;
    if notify && timeout != -1 {
        return Err(IrisError::validation(
            "notify",
            "only with timeout -1 (a call that waits gets the answer itself)",
        ));
    }
    if notify && ctx.principal.agent_team().is_none() {
        return Err(IrisError::validation(
            "notify",
            "only from a team's agent, whose conversation the answer goes to",
        ));
    }
    let tracker = iris
        .messaging()
        .send(ctx, outgoing(iris, ctx, p, kind)?)
        .await?;
    if notify {
        iris.messaging().notify_when_done(ctx, tracker.clone());
    }
    if let Some(watch) = &ctx.watch {
        // The watcher may have gone (its caller left); the turn goes on.
        let _ = watch.send(crate::follow::Follower::new(
            crate::follow::TurnStream::Live(tracker.clone()),
            None,
        ));
    }
    if timeout == -1 {
        return Ok(result_of(&tracker, true));
    }
    let limit = (timeout > 0).then(|| Duration::from_millis(timeout as u64));
    let Some(outcome) = tracker.wait(limit).await else {
        return Err(IrisError::new(
            ErrorKind::Timeout,
            format!(
                "no answer from `{}` within {timeout} ms; the turn goes on",
                tracker.team
            ),
        )
        .with_details(json!({
            "messageId": tracker.id,
            "sessionId": tracker.session_id,
            "status": tracker.status(),
            "partialResponse": tracker.partial(),
        })));
    };
    match outcome.failure() {
        Some(e) => Err(e.with_details(json!({
            "messageId": tracker.id,
            "sessionId": tracker.session_id,
            "status": outcome.status,
            "partialResponse": outcome.response,
        }))),
        None => Ok(result_of(&tracker, false)),
    }
}

pub(super) fn operations() -> Vec<Operation> {
    vec![
        Operation::new(
            "send_message",
            "Send a message to a team and wait for its answer (timeout -1: return at once; 0: wait until done).",
            Some(scope::MESSAGES_WRITE),
            true,
            |iris: Arc<Iris>, ctx: Ctx, p: SendParams| async move {
                deliver(&iris, &ctx, p, "message").await
            },
        ).on_owner(Runs::OnTeamsOwner)
        .sends_messages(),
        Operation::new(
            "ask_message",
            "Ask a team a question and wait for the answer (timeout 0: as long as it takes).",
            Some(scope::MESSAGES_WRITE),
            true,
            // (`timeout: -1` is refused by the schema: ask waits; quick_message does not.)
            |iris: Arc<Iris>, ctx: Ctx, AskParams(p): AskParams| async move {
                deliver(&iris, &ctx, p, "message").await
            },
        ).on_owner(Runs::OnTeamsOwner)
        .sends_messages(),
        Operation::new(
            "quick_message",
            "Queue a message for a team and return its message id at once.",
            Some(scope::MESSAGES_WRITE),
            true,
            |iris: Arc<Iris>, ctx: Ctx, p: QuickParams| async move {
                deliver(&iris, &ctx, p.into_send(), "message").await
            },
        ).on_owner(Runs::OnTeamsOwner)
        .sends_messages(),
    ]
}

impl Iris {
    /// Send a message (the parameters of `quick_message`, with its checks
    /// and audit record) and follow its turn from the start: what every
    /// streaming transport does. The turn comes back as it is, not through
    /// the operation's JSON result.
    pub async fn send_and_follow(
        self: &Arc<Self>,
        ctx: &Ctx,
        params: serde_json::Value,
    ) -> Result<Follower> {
        let op = super::registry()
            .get("quick_message")
            .ok_or_else(|| IrisError::internal("sending", "no quick_message operation"))?;
        let sent = run_checked(
            self.clone(),
            ctx.clone(),
            op,
            params,
            |iris, ctx, params| async move {
                // The team's owner is another node: the message is sent
                // there, and followed from here as any turn of another node.
                if let Some(url) = iris.owner_elsewhere(&ctx, op.runs, &params).await? {
                    let v = iris
                        .ownership()
                        .forward(&url, &ctx, "quick_message", params)
                        .await?;
                    let id = v["messageId"].as_str().unwrap_or_default().to_owned();
                    return Ok(Err(id));
                }
                let p: QuickParams = serde_json::from_value(params)
                    .map_err(|e| IrisError::validation("params", e.to_string()))?;
                let out = outgoing(&iris, &ctx, p.into_send(), "message")?;
                iris.messaging().send(&ctx, out).await.map(Ok)
            },
        )
        .await?;
        match sent {
            Ok(tracker) => Ok(Follower::new(TurnStream::Live(tracker), None)),
            Err(message_id) => self.follow(ctx, &message_id, None).await,
        }
    }
}
