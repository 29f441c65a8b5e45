//! Team-to-team messaging: which team may message which, and the chain a
//! message travels. An agent of team A calls Iris with its own credential
//! (a principal of kind `agent`, see `pool::seat`), so its calls are A's
//! own: `fromTeam` is A whatever it says, `teams.A.canMessage` limits whom
//! it may message, and each message carries the teams it passed through,
//! from the team whose turn started it to its own team. A message that
//! would come back to a team already waiting on the chain is refused (the
//! waiting team could never answer: a deadlock), and so is one past
//! `settings.maxHops`.

use iris_auth::{AuditEvent, Outcome};
use serde_json::json;

use crate::ctx::Ctx;
use crate::error::{ErrorKind, IrisError, Result};
use crate::iris::Iris;

impl Iris {
    /// The `fromTeam` of a call of `ctx`'s caller that names `from` (or
    /// none): an agent always speaks as its team.
    ///
    /// # Errors
    /// `FORBIDDEN` when an agent names another team.
    pub fn speaker(&self, ctx: &Ctx, from: Option<String>) -> Result<String> {
        let from = from.filter(|f| !f.is_empty());
        match (ctx.principal.agent_team(), from) {
            (Some(team), Some(f)) if f != team => Err(IrisError::new(
                ErrorKind::Forbidden,
                format!("the agent of team `{team}` cannot speak as `{f}`"),
            )
            .with_details(json!({"fromTeam": f, "team": team}))),
            (Some(team), _) => Ok(team.to_owned()),
            (None, Some(f)) => Ok(f),
            (None, None) => Ok(ctx.principal.name.clone()),
        }
    }

    /// An agent works only in its own team's conversations (those `from`
    /// its team): another conversation, named by id, is not found.
    pub fn own_session(&self, ctx: &Ctx, session: &iris_storage::SessionRow) -> Result<()> {
        match ctx.principal.agent_team() {
            Some(team) if session.from_team != team => {
                Err(IrisError::session_not_found(format!("`{}`", session.id)))
            }
            _ => Ok(()),
        }
    }

    /// The chain of a message from `ctx`'s caller to `to`: `[to]` from
    /// outside any team's turn; from an agent of team A, the chain of A's
    /// running turn (or `[A]`) followed by `to`.
    ///
    /// # Errors
    /// `FORBIDDEN` (audited) when A's `canMessage` leaves `to` out;
    /// `CONFLICT` naming the chain when `to` is already on it (a cycle) or
    /// it would pass more than `settings.maxHops` teams after the first.
    pub fn chain(&self, ctx: &Ctx, to: &str, continues: &[String]) -> Result<Vec<String>> {
        if !continues.is_empty() {
            // An answer delivered back (`notify`): it continues the chain it
            // answers, hops counted (so two teams cannot bounce messages
            // forever), but coming back is its purpose, not a cycle.
            let mut chain = continues.to_vec();
            chain.push(to.to_owned());
            return self.within_hops(chain);
        }
        let Some(from) = ctx.principal.agent_team() else {
            return Ok(vec![to.to_owned()]);
        };
        let allowed = self
            .teams()
            .iter()
            .find(|t| t.name == from)
            .is_some_and(|t| t.config.can_message.as_ref().is_none_or(|s| s.contains(to)));
        if !allowed {
            self.audit(
                ctx,
                AuditEvent::new("permission.denied", Outcome::Denied)
                    .resource("send_message")
                    .team(Some(to.to_owned()))
                    .details(json!({"fromTeam": from, "toTeam": to, "rule": "canMessage"})),
            );
            return Err(IrisError::new(
                ErrorKind::Forbidden,
                format!("team `{from}` may not message `{to}` (teams.{from}.canMessage)"),
            )
            .with_details(json!({"fromTeam": from, "toTeam": to})));
        }
        let mut chain: Vec<String> = self
            .pool
            .running_turn(&ctx.principal.id)
            .map(|t| t.chain.clone())
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| vec![from.to_owned()]);
        let cycle = chain.iter().any(|t| t == to);
        chain.push(to.to_owned());
        let shown = chain.join(" → ");
        if cycle {
            return Err(IrisError::new(
                ErrorKind::Conflict,
                format!("a cycle: {shown} (`{to}` is already waiting on this chain)"),
            )
            .with_details(json!({"chain": chain})));
        }
        self.within_hops(chain)
    }

    fn within_hops(&self, chain: Vec<String>) -> Result<Vec<String>> {
        let max = self.pool.settings().max_hops;
        if chain.len().saturating_sub(1) > max {
            let shown = chain.join(" → ");
            return Err(IrisError::new(
                ErrorKind::Conflict,
                format!("more than {max} hops (settings.maxHops): {shown}"),
            )
            .with_details(json!({"chain": chain, "maxHops": max})));
        }
        Ok(chain)
    }
}

impl Iris {
    /// When `tracker`'s turn ends, deliver its answer (or its failure) into
    /// the conversation of the agent that asked (`ctx`, an agent) as a new
    /// message: queued behind whatever that conversation runs, so the
    /// agent reads it when it is next idle (`send_message` with
    /// `timeout: -1, notify: true`).
    pub(crate) fn notify_when_done(
        self: &std::sync::Arc<Self>,
        ctx: &Ctx,
        tracker: std::sync::Arc<crate::pool::turn::TurnTracker>,
    ) {
        let Some(team) = ctx.principal.agent_team().map(str::to_owned) else {
            return;
        };
        let session = ctx.principal.id.clone();
        let iris = self.clone();
        tokio::spawn(async move {
            let Some(outcome) = tracker.wait(None).await else {
                return;
            };
            let text = match outcome.failure() {
                None => format!(
                    "[iris] Team `{}` answered your message {}:\n\n{}",
                    tracker.team, tracker.id, outcome.response
                ),
                Some(e) => format!(
                    "[iris] Your message {} to team `{}` ended without an answer ({}): {}",
                    tracker.id,
                    tracker.team,
                    outcome.status.as_str(),
                    e.message
                ),
            };
            iris.recorder.flush().await;
            let from = match iris.store.session(&session).await {
                Ok(Some(row)) => row.from_team,
                _ => return,
            };
            let out = crate::iris::Outgoing {
                from,
                to: team,
                text,
                session_id: Some(session),
                priority: crate::pool::turn::Priority::Normal,
                kind: "notification",
                continues: tracker.chain.clone(),
                isolation: None,
            };
            if let Err(e) = iris.send(&Ctx::local(), out).await {
                tracing::warn!(message = %tracker.id, error = %e, "could not deliver an answer to the asking team");
            }
        });
    }
}
