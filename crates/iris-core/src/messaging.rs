//! The messaging service: a message becomes a turn of a team's
//! conversation (`send`), on the chain it travels.
//!
//! Team-to-team messaging: which team may message which, and the chain a
//! message travels. An agent of team A calls Iris with its own credential
//! (a principal of kind `agent`, see `pool::seat`), so its calls are A's
//! own: `fromTeam` is A whatever it says, `teams.A.canMessage` limits whom
//! it may message, and each message carries the teams it passed through,
//! from the team whose turn started it to its own team. A message that
//! would come back to a team already waiting on the chain is refused (the
//! waiting team could never answer: a deadlock), and so is one past
//! `settings.maxHops`.

use std::sync::Arc;

use iris_storage::{Store, StoreWrite, TurnFinish, TurnRow};
use serde_json::json;

use crate::access::Access;
use crate::auth::{AuditEvent, Outcome, scope};
use crate::bus::{EventKind, Events};
use crate::clock::now_ms;
use crate::conversations::Conversations;
use crate::ctx::Ctx;
use crate::error::{ErrorKind, IrisError, Result};
use crate::follow::{Follower, TurnStream};
use crate::pool::Pool;
use crate::pool::turn::{Priority, TurnTracker, stored_stream};
use crate::recorder::Recorder;
use crate::teams::Teams;

/// What to send, to whom.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub from: String,
    pub to: String,
    pub text: String,
    pub session_id: Option<String>,
    pub priority: Priority,
    pub kind: &'static str,
    /// The chain this message continues (an answer delivered back with
    /// `notify`); empty for everything else.
    pub continues: Vec<String>,
    /// Run the conversation in its own git worktree (else as the team says).
    pub isolation: Option<crate::worktree::Isolation>,
}

pub struct Messaging {
    teams: Arc<Teams>,
    conversations: Arc<Conversations>,
    access: Arc<Access>,
    pool: Pool,
    recorder: Recorder,
    events: Arc<dyn Events>,
    store: Store,
    ownership: Arc<crate::ownership::Ownership>,
}

impl Messaging {
    pub(crate) fn new(access: Arc<Access>, deps: crate::services::Services) -> Self {
        Messaging {
            teams: deps.teams,
            conversations: deps.conversations,
            access,
            pool: deps.pool,
            recorder: deps.recorder,
            events: deps.events,
            store: deps.store,
            ownership: deps.ownership,
        }
    }

    /// Queue a message as a new turn; returns its tracker at once.
    pub async fn send(&self, ctx: &Ctx, out: Outgoing) -> Result<Arc<TurnTracker>> {
        let team = self.teams.get(ctx, &out.to)?;
        let chain = self.chain(ctx, &team.name, &out.continues)?;
        let session = self
            .conversations
            .session(&out.from, &out.to, out.session_id.as_deref())
            .await?;
        self.access.own_session(ctx, &session)?;
        let session = self
            .conversations
            .isolated(&team, session, out.isolation)
            .await?;
        // The team as it is now: a reload may have changed or removed it
        // while the session was looked up (a process started with the old
        // one would keep it).
        let team = self
            .teams
            .named(&team.name)
            .ok_or_else(|| IrisError::team_not_found(&team.name))?;
        let tracker = Arc::new(
            TurnTracker::new(
                format!("msg_{}", ulid::Ulid::new()),
                session.id.clone(),
                team.name.clone(),
                out.from.clone(),
                out.text,
            )
            .with_chain(chain)
            .asked_from(ctx.principal.agent_team().map(|_| ctx.principal.id.clone())),
        );
        self.recorder.write(StoreWrite::InsertTurn(TurnRow {
            id: tracker.id.clone(),
            session_id: session.id.clone(),
            from_team: out.from,
            to_team: team.name.clone(),
            kind: out.kind.to_owned(),
            status: "queued".into(),
            request: tracker.request.clone(),
            response: None,
            error: None,
            tool_uses: None,
            usage: None,
            cost_usd: None,
            created_at: tracker.created_at,
            started_at: None,
            completed_at: None,
            events_dropped: 0,
            chain: tracker.chain.clone(),
            caller: Some(ctx.principal.actor()),
        }));
        if let Err(e) = self
            .pool
            .submit(&team, &session, tracker.clone(), out.priority)
        {
            // Refused before it could run: the record says so.
            self.recorder.write(StoreWrite::TurnFinished {
                id: tracker.id.clone(),
                finish: TurnFinish {
                    status: "failed".into(),
                    error: Some(e.message.clone()),
                    completed_at: now_ms(),
                    ..Default::default()
                },
                events: Vec::new(),
            });
            return Err(e);
        }
        self.events.publish(
            EventKind::TurnQueued,
            &team.name,
            Some(&session.id),
            Some(&tracker.id),
            json!({"messageId": tracker.id, "from": tracker.from}),
        );
        Ok(tracker)
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
            .teams
            .named(from)
            .is_some_and(|t| t.config.can_message.as_ref().is_none_or(|s| s.contains(to)));
        if !allowed {
            self.access.audit(
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

    /// When `tracker`'s turn ends, deliver its answer (or its failure) into
    /// the conversation of the agent that asked (`ctx`, an agent) as a new
    /// message: queued behind whatever that conversation runs, so the
    /// agent reads it when it is next idle (`send_message` with
    /// `timeout: -1, notify: true`).
    pub(crate) fn notify_when_done(self: &Arc<Self>, ctx: &Ctx, tracker: Arc<TurnTracker>) {
        let Some(team) = ctx.principal.agent_team().map(str::to_owned) else {
            return;
        };
        let session = ctx.principal.id.clone();
        let messaging = self.clone();
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
            messaging.recorder.flush().await;
            let from = match messaging.store.session(&session).await {
                Ok(Some(row)) => row.from_team,
                _ => return,
            };
            // The asking team's conversation runs on its owner: handed
            // there as a message into that conversation.
            match messaging.ownership.owner(&team).await {
                Ok(crate::ownership::Owner::There { url, .. }) => {
                    let params = serde_json::json!({
                        "toTeam": team, "fromTeam": from, "sessionId": session, "message": text,
                    });
                    let local = Ctx::local();
                    if let Err(e) = messaging
                        .ownership
                        .forward(&url, &local, "quick_message", params)
                        .await
                    {
                        tracing::warn!(message = %tracker.id, error = %e, "could not deliver an answer to the asking team's node");
                    }
                    return;
                }
                Ok(crate::ownership::Owner::Here) => {}
                Err(e) => {
                    tracing::warn!(message = %tracker.id, error = %e, "could not find the asking team's node");
                    return;
                }
            }
            let out = Outgoing {
                from,
                to: team,
                text,
                session_id: Some(session),
                priority: Priority::Normal,
                kind: "notification",
                continues: tracker.chain.clone(),
                isolation: None,
            };
            if let Err(e) = messaging.send(&Ctx::local(), out).await {
                tracing::warn!(message = %tracker.id, error = %e, "could not deliver an answer to the asking team");
            }
        });
    }

    /// Follow a turn, from its start or after the event numbered `after`
    /// (see [`Follower::new`]): live from memory while it runs, replayed
    /// from the database once it has ended. Needs `messages:stream`.
    pub async fn follow(
        &self,
        ctx: &Ctx,
        message_id: &str,
        after: Option<u64>,
    ) -> Result<Follower> {
        self.access
            .permit(ctx, scope::MESSAGES_STREAM, false, "follow a message", None)?;
        self.follow_unchecked(ctx, message_id, after).await
    }

    /// [`Messaging::follow`] without the scope check: for a turn the caller
    /// started itself in this call (a forwarded send it waits for).
    pub(crate) async fn follow_unchecked(
        &self,
        ctx: &Ctx,
        message_id: &str,
        after: Option<u64>,
    ) -> Result<Follower> {
        let not_found = || IrisError::not_found(format!("no message `{message_id}`"));
        if let Some(t) = self.pool.live_turn(message_id) {
            if !ctx.principal.can_see_team(&t.team) {
                return Err(not_found());
            }
            return Ok(Follower::new(TurnStream::Live(t), after));
        }
        self.recorder.flush().await;
        let mut row = self.store.turn(message_id).await?;
        // In a cluster the turn may have been accepted by another node a
        // moment ago, its row not written yet (that node writes in
        // batches): give it a second to appear.
        if row.is_none() && self.events.spans_nodes() && message_id.starts_with("msg_") {
            for _ in 0..20 {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                row = self.store.turn(message_id).await?;
                if row.is_some() {
                    break;
                }
            }
        }
        let row = row
            .filter(|t| ctx.principal.can_see_team(&t.to_team))
            .ok_or_else(not_found)?;
        // Not running here but not ended: in a cluster, the node it was
        // written by may run it. If that node is this one (its unfinished
        // turns were failed at start) or is not running, nothing more
        // will come: it is replayed from the database as it stands.
        let unfinished =
            crate::pool::turn::TurnStatus::parse(&row.status).is_some_and(|s| !s.is_final());
        let owner = if unfinished && self.events.spans_nodes() {
            match self.store.turn_node(&row.id).await? {
                Some(n) if Some(n.as_str()) != self.store.node() => {
                    crate::cluster::live(&self.store, &n).await.then_some(n)
                }
                _ => None,
            }
        } else {
            None
        };
        if let Some(owner) = owner {
            // Subscribed before the replay is read: nothing falls between.
            let sub = self
                .events
                .subscribe(&format!("session:{}", row.session_id));
            let replay = self.events.replay(&row.id).await;
            let events = crate::follow::elsewhere(
                row.clone(),
                owner,
                after.unwrap_or(0),
                sub,
                replay,
                self.store.clone(),
            );
            let turn = TurnStream::Elsewhere {
                row: Box::new(row),
                events,
            };
            return Ok(Follower::new(turn, after));
        }
        let items = stored_stream(
            &self
                .store
                .turn_events(message_id, after.unwrap_or(0) as i64)
                .await?,
        );
        let turn = TurnStream::Stored {
            row: Box::new(row),
            items,
        };
        Ok(Follower::new(turn, after))
    }
}
