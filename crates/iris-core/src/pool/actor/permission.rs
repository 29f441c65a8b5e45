//! An agent's requests to use a tool (Claude Code's `can_use_tool` control
//! requests, with `--permission-prompt-tool stdio`), answered per the
//! team's `grantPermission`: `yes` allows and `no` denies at once; `ask`
//! makes a pending approval (stored, announced on the bus) and answers when
//! someone decides ([`super::Command::Decide`]), when
//! `settings.approvalTimeout` passes (denied; the approval expires) or
//! when the process ends (expired). Every answer is kept in the turn's
//! events (`permission`).

use std::time::Duration;

use iris_agent::protocol;
use iris_storage::{ApprovalRow, Decision};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::Actor;
use crate::bus::EventKind;
use crate::clock::now_ms;
use crate::config::GrantPermission;

/// A permission request waiting for a decision.
pub(crate) struct Awaiting {
    pub approval_id: String,
    request_id: String,
    tool_name: String,
    input: Value,
    pub deadline: Instant,
}

/// A decision for an awaiting request.
pub(crate) struct Answer {
    pub allow: bool,
    pub message: String,
    pub updated_input: Option<Value>,
    pub by: String,
}

impl Actor {
    pub(super) async fn on_permission(
        &mut self,
        request_id: String,
        tool_name: String,
        input: Value,
    ) {
        let team = self.team.name.clone();
        match self.team.profile.grant_permission {
            GrantPermission::Yes => {
                self.answer_permission(
                    &request_id,
                    &tool_name,
                    &input,
                    true,
                    "",
                    "grantPermission: yes",
                    None,
                )
                .await;
            }
            GrantPermission::No => {
                let why = format!(
                    "team `{team}` does not let its agent use `{tool_name}` (teams.{team}.grantPermission: no)"
                );
                self.answer_permission(
                    &request_id,
                    &tool_name,
                    &input,
                    false,
                    &why,
                    "grantPermission: no",
                    None,
                )
                .await;
            }
            GrantPermission::Ask => self.ask(request_id, tool_name, input).await,
        }
    }

    async fn ask(&mut self, request_id: String, tool_name: String, input: Value) {
        let timeout = self.pool.settings().approval_timeout;
        let now = now_ms();
        let row = ApprovalRow {
            id: format!("apr_{}", ulid::Ulid::new()),
            team: self.team.name.clone(),
            session_id: self.session.id.clone(),
            turn_id: self.current.as_ref().map(|r| r.tracker.id.clone()),
            tool_name: tool_name.clone(),
            input: input.clone(),
            status: "pending".into(),
            reason: None,
            updated_input: None,
            decided_by: None,
            created_at: now,
            expires_at: now + timeout as i64,
            decided_at: None,
        };
        if let Err(e) = self.pool.store.insert_approval(&row).await {
            tracing::warn!(team = %self.team.name, error = %e, "could not record an approval; denying");
            let why = "Iris could not record the approval request";
            self.answer_permission(&request_id, &tool_name, &input, false, why, "iris", None)
                .await;
            return;
        }
        if let Ok(mut pending) = self.pool.approvals.lock() {
            pending.insert(row.id.clone(), self.session.id.clone());
        }
        self.awaiting.push(Awaiting {
            approval_id: row.id.clone(),
            request_id,
            tool_name,
            input,
            deadline: Instant::now() + Duration::from_millis(timeout),
        });
        let turn = row.turn_id.clone();
        // What the agent wrote before it asked reaches followers first.
        self.flush_stream();
        self.publish(EventKind::ApprovalRequested, turn.as_deref(), json!(row));
    }

    /// Someone decided `approval_id` (already stored by the operation).
    pub(super) async fn on_decision(&mut self, approval_id: &str, answer: Answer) {
        if let Some(a) = self.take_awaiting(approval_id) {
            self.settle(a, answer, EventKind::ApprovalResolved).await;
        }
    }

    /// The awaiting request of `approval_id`, no longer awaited.
    fn take_awaiting(&mut self, approval_id: &str) -> Option<Awaiting> {
        let i = self
            .awaiting
            .iter()
            .position(|a| a.approval_id == approval_id)?;
        let a = self.awaiting.remove(i);
        if let Ok(mut pending) = self.pool.approvals.lock() {
            pending.remove(approval_id);
        }
        Some(a)
    }

    /// Answer the agent (with the changed input, if any) and announce it.
    async fn settle(&mut self, a: Awaiting, answer: Answer, kind: EventKind) {
        let input = answer.updated_input.unwrap_or(a.input);
        let decision = if answer.allow { "allow" } else { "deny" };
        self.answer_permission(
            &a.request_id,
            &a.tool_name,
            &input,
            answer.allow,
            &answer.message,
            &answer.by,
            Some(&a.approval_id),
        )
        .await;
        let data = json!({"approvalId": a.approval_id, "toolName": a.tool_name,
                          "decision": decision, "reason": answer.message, "decidedBy": answer.by});
        let turn = self.current.as_ref().map(|r| r.tracker.id.clone());
        self.publish(kind, turn.as_deref(), data);
    }

    /// The earliest deadline of the awaiting requests.
    pub(super) fn approval_deadline(&self) -> Option<Instant> {
        self.awaiting.iter().map(|a| a.deadline).min()
    }

    /// Expire the requests past their deadline: denied, `expired`.
    pub(super) async fn expire_due(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .awaiting
            .iter()
            .filter(|a| a.deadline <= now)
            .map(|a| a.approval_id.clone())
            .collect();
        let ms = self.pool.settings().approval_timeout;
        for id in due {
            self.expire(&id, &format!("no decision within {ms} ms"), "timeout")
                .await;
        }
    }

    /// Expire every awaiting request: the process is gone.
    pub(super) async fn expire_all(&mut self, why: &str) {
        let ids: Vec<String> = self
            .awaiting
            .iter()
            .map(|a| a.approval_id.clone())
            .collect();
        for id in ids {
            self.expire(&id, why, "process").await;
        }
    }

    async fn expire(&mut self, approval_id: &str, why: &str, by: &str) {
        let decision = Decision {
            status: "expired",
            reason: Some(why.to_owned()),
            updated_input: None,
            decided_by: by.to_owned(),
            at: now_ms(),
        };
        if let Ok(false) = self
            .pool
            .store
            .decide_approval(approval_id, &decision)
            .await
        {
            // Decided already (a moment ago, or by another process): act on
            // what the record says, now.
            if let Ok(Some(row)) = self.pool.store.approval(approval_id).await
                && matches!(row.status.as_str(), "allowed" | "denied")
            {
                let by = row.decided_by.clone().unwrap_or_default();
                let answer = Answer {
                    allow: row.status == "allowed",
                    message: row
                        .reason
                        .clone()
                        .unwrap_or_else(|| format!("{} by {by}", row.status)),
                    updated_input: row.updated_input.clone(),
                    by,
                };
                self.on_decision(approval_id, answer).await;
                return;
            }
        }
        if let Some(a) = self.take_awaiting(approval_id) {
            let answer = Answer {
                allow: false,
                message: format!("denied: {why}"),
                updated_input: None,
                by: by.to_owned(),
            };
            self.settle(a, answer, EventKind::ApprovalExpired).await;
        }
    }

    /// Tell the agent, and keep the answer in the turn's events.
    #[allow(clippy::too_many_arguments)]
    async fn answer_permission(
        &mut self,
        request_id: &str,
        tool_name: &str,
        input: &Value,
        allow: bool,
        message: &str,
        by: &str,
        approval_id: Option<&str>,
    ) {
        let line = protocol::permission_line(request_id, allow, input, message);
        if let Some(p) = self.process.as_mut()
            && let Err(e) = p.send(&line).await
        {
            tracing::warn!(team = %self.team.name, error = %e, "could not answer a permission request");
        }
        if self.current.is_some() {
            self.record(
                "permission",
                json!({"toolName": tool_name, "input": input,
                       "decision": if allow { "allow" } else { "deny" },
                       "reason": message, "decidedBy": by, "approvalId": approval_id}),
            );
        }
    }
}
