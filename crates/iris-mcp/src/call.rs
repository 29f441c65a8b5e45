//! `tools/call`: one operation through the registry's `dispatch`, while
//! following the turn it starts, if any: the agent's text goes to the
//! client as progress notifications when the request carries a progress
//! token (2025-11-25 §Progress), its tool uses and a failure as log
//! messages when the client set a level, and a client's cancellation of the
//! request (§Cancellation, or a 2026-07-28 request's connection closing)
//! cancels the turn.

use std::sync::Arc;

use iris_core::{Ctx, Follower, Iris, IrisError, TurnEvent, registry};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ProgressNotificationParam, ProgressToken,
};
use rmcp::service::{Peer, RequestContext};
use rmcp::{ErrorData as McpError, RoleServer};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::tools;

/// Run the call `request` for `ctx`.
///
/// # Errors
/// A protocol error only for an unknown tool (-32602, as 2025-11-25
/// §Tools/Error Handling asks) and a cancelled request (whose answer the
/// client no longer reads); every failure of the operation itself is a
/// result with `isError: true`.
pub async fn run(
    iris: &Arc<Iris>,
    log_level: Option<u8>,
    ctx: Ctx,
    request: CallToolRequestParams,
    cx: RequestContext<RoleServer>,
) -> Result<CallToolResult, McpError> {
    let name = request.name.as_ref();
    let Some(op) = registry().get(name) else {
        let e = IrisError::validation("name", format!("unknown tool `{name}`"))
            .with_details(json!({"tool": name}));
        return Err(tools::protocol_error(&e));
    };
    let params = Value::Object(request.arguments.unwrap_or_default());
    let from_team = params.get("fromTeam").cloned();
    let (watch, mut turns) = mpsc::unbounded_channel();
    let mut watched = ctx.clone();
    watched.watch = Some(watch);
    let call = iris.dispatch(watched, op.name, params);
    tokio::pin!(call);

    let mut report = Report {
        peer: cx.peer.clone(),
        progress: cx.meta.get_progress_token(),
        log_level,
        chunks: 0,
    };
    let mut following: Option<Follower> = None;
    let mut started: Vec<Started> = Vec::new();
    let outcome = loop {
        tokio::select! {
            biased;
            () = cx.ct.cancelled() => {
                for turn in &started {
                    cancel(iris, &ctx, turn, from_team.clone()).await;
                }
                return Err(McpError::internal_error("the client cancelled the request", None));
            }
            result = &mut call => break result,
            Some(mut follower) = turns.recv() => {
                // The first event is the turn's start, already queued.
                if let Some(event) = follower.next().await {
                    if let TurnEvent::Start { message_id, team, session_id } = &event {
                        started.push(Started {
                            team: team.clone(),
                            session_id: session_id.clone(),
                            message_id: message_id.clone(),
                        });
                    }
                    report.event(&event).await;
                }
                following = Some(follower);
            }
            Some(event) = next(&mut following) => report.event(&event).await,
        }
    };
    // What the turn wrote before the call returned and was not sent yet.
    if let Ok(follower) = turns.try_recv() {
        following = Some(follower);
    }
    // A turn of this node has ended with the call: all of it is there. One
    // the owner ran (a forwarded call) reaches this node through Redis and
    // may trail the owner's answer by a moment: wait for its end, briefly.
    // Ended: an answer with a final status, or a failure other than the
    // wait running out. Nothing to wait for when nothing would be sent.
    let ended = match &outcome {
        Ok(v) => v
            .get("status")
            .and_then(Value::as_str)
            .is_some_and(|s| matches!(s, "completed" | "failed" | "cancelled")),
        Err(e) => e.kind != iris_core::ErrorKind::Timeout,
    } && (report.progress.is_some() || report.log_level.is_some());
    if let Some(f) = following.as_mut() {
        // A turn still running (an answer that does not wait for it): what
        // is there now.
        let until = tokio::time::Instant::now() + if ended { TRAILING } else { Default::default() };
        while let Ok(Some(event)) = tokio::time::timeout_at(until, f.next()).await {
            let end = event.is_end();
            report.event(&event).await;
            if end {
                break;
            }
        }
    }
    Ok(match outcome {
        Ok(value) => tools::success(value),
        Err(e) => tools::failure(&e, &ctx),
    })
}

/// Longest a call's answer waits for the rest of its turn's events.
const TRAILING: std::time::Duration = std::time::Duration::from_secs(2);

/// A turn the call started: what cancelling it needs.
struct Started {
    team: String,
    session_id: String,
    message_id: String,
}

/// The next event of the followed turn; pending while none is followed.
async fn next(following: &mut Option<Follower>) -> Option<TurnEvent> {
    match following {
        Some(f) => {
            let event = f.next().await;
            if event.is_none() {
                *following = None;
            }
            event
        }
        None => std::future::pending().await,
    }
}

/// Cancel a turn the cancelled request started, through the registry (with
/// its checks and audit record) as the same caller.
async fn cancel(iris: &Arc<Iris>, ctx: &Ctx, turn: &Started, from_team: Option<Value>) {
    let mut params = json!({
        "toTeam": turn.team,
        "sessionId": turn.session_id,
        "messageId": turn.message_id,
    });
    if let Some(from) = from_team {
        params["fromTeam"] = from;
    }
    if let Err(e) = iris.dispatch(ctx.clone(), "session_cancel", params).await {
        tracing::warn!(message = %turn.message_id, error = %e, "cancelling a turn for a cancelled MCP request");
    }
}

/// Sends what a followed turn does to the client.
struct Report {
    peer: Peer<RoleServer>,
    progress: Option<ProgressToken>,
    log_level: Option<u8>,
    chunks: u64,
}

impl Report {
    async fn event(&mut self, event: &TurnEvent) {
        // A client that went away gets nothing more; the call goes on.
        match event {
            TurnEvent::Chunk { data, .. } => {
                let (Some(token), Some(text)) = (&self.progress, data["text"].as_str()) else {
                    return;
                };
                self.chunks += 1;
                let param = ProgressNotificationParam::new(token.clone(), self.chunks as f64)
                    .with_message(text);
                let _ = self.peer.notify_progress(param).await;
            }
            TurnEvent::ToolUse { data, .. } => self.log(INFO, json!({"toolUse": data})).await,
            TurnEvent::ToolResult { data, .. } => self.log(INFO, json!({"toolResult": data})).await,
            TurnEvent::Plan { data, .. } => self.log(INFO, json!({"plan": data})).await,
            TurnEvent::Error { .. } => self.log(ERROR, event.data()).await,
            TurnEvent::Start { .. } | TurnEvent::Complete { .. } => {}
        }
    }

    #[allow(deprecated)] // logging (SEP-2577): see `IrisMcp::set_level`
    async fn log(&self, severity: u8, data: Value) {
        if self.log_level.is_none_or(|least| severity < least) {
            return;
        }
        let level = if severity >= ERROR {
            rmcp::model::LoggingLevel::Error
        } else {
            rmcp::model::LoggingLevel::Info
        };
        let param =
            rmcp::model::LoggingMessageNotificationParam::new(level, data).with_logger("iris");
        let _ = self.peer.notify_logging_message(param).await;
    }
}

const INFO: u8 = 1;
const ERROR: u8 = 4;

/// A log level's severity, RFC 5424's order (debug 0 … emergency 7).
#[allow(deprecated)]
pub fn severity(level: rmcp::model::LoggingLevel) -> u8 {
    use rmcp::model::LoggingLevel as L;
    match level {
        L::Debug => 0,
        L::Info => INFO,
        L::Notice => 2,
        L::Warning => 3,
        L::Error => ERROR,
        L::Critical => 5,
        L::Alert => 6,
        L::Emergency => 7,
    }
}
