//! The permission decisions beyond authentication, each made once here:
//! whether a caller holds a scope (and may span every team), may watch a
//! bus topic, speaks as whom, and may use a conversation. Dispatch asks
//! [`Access::permit`] for every operation; routes and subscriptions that
//! are not operations ask too. Refusals are audited.

use std::sync::Arc;

use iris_storage::{SessionRow, Store};
use serde_json::json;

use crate::auth::{AuditEvent, Auth, Outcome, audit, scope};
use crate::ctx::Ctx;
use crate::error::{ErrorKind, IrisError, Result};
use crate::teams::Teams;

pub struct Access {
    auth: Arc<Auth>,
    teams: Arc<Teams>,
    store: Store,
}

impl Access {
    pub(crate) fn new(auth: Arc<Auth>, teams: Arc<Teams>, store: Store) -> Self {
        Access { auth, teams, store }
    }

    /// The one permission decision: `ctx`'s caller holds `scope` and, for
    /// what spans every team (`global`), is not limited to some teams.
    pub fn permit(
        &self,
        ctx: &Ctx,
        scope: &str,
        global: bool,
        what: &str,
        team: Option<&str>,
    ) -> Result<()> {
        let why = if !ctx.principal.allows(scope) {
            format!("`{what}` needs the `{scope}` scope")
        } else if global && ctx.principal.teams.is_some() {
            format!("`{what}` spans every team; a caller limited to some teams cannot use it")
        } else {
            return Ok(());
        };
        audit(
            &self.auth,
            ctx,
            AuditEvent::new("permission.denied", Outcome::Denied)
                .resource(what)
                .team(team.map(str::to_owned))
                .details(json!({"operation": what, "requiredScope": scope, "global": global})),
        );
        Err(IrisError::new(ErrorKind::Forbidden, why).with_details(json!({"requiredScope": scope})))
    }

    /// Whether `ctx`'s caller may watch a bus topic: team and session topics
    /// carry messages' text (`messages:stream`, and a team it may see);
    /// `system` spans every team and carries answers too (`teams:read` and
    /// `messages:read`, no team limit); an agent's credential watches only
    /// its own conversations. Returns the topic as the bus names it (a
    /// session's id canonical).
    pub async fn topic(&self, ctx: &Ctx, topic: &str) -> Result<String> {
        let topic = crate::bus::canonical_topic(topic)?;
        let what = format!("subscribe {topic}");
        // An agent's credential sees only its own team's conversations:
        // of the topics, those alone (`system` and `team:` carry others').
        let agent = |ctx: &Ctx| {
            ctx.principal.agent_team().map(|team| {
                // Audited like every refusal.
                self.audit(
                    ctx,
                    AuditEvent::new("permission.denied", Outcome::Denied)
                        .resource(&what)
                        .team(Some(team.to_owned()))
                        .details(json!({"operation": what, "agent": team})),
                );
                IrisError::new(
                    ErrorKind::Forbidden,
                    format!("the agent of team `{team}` may watch only its own conversations (session:<id>)"),
                )
            })
        };
        if topic == "system" {
            // Its events carry every team's answers and approval inputs:
            // reading messages as well as teams (a viewer does both).
            self.permit(ctx, scope::TEAMS_READ, true, &what, None)?;
            self.permit(ctx, scope::MESSAGES_READ, true, &what, None)?;
            return agent(ctx).map_or(Ok(topic), Err);
        }
        if let Some(team) = topic.strip_prefix("team:") {
            self.permit(ctx, scope::MESSAGES_STREAM, false, &what, Some(team))?;
            self.teams.get(ctx, team)?;
            return agent(ctx).map_or(Ok(topic), Err);
        }
        if let Some(id) = topic.strip_prefix("session:") {
            self.permit(ctx, scope::MESSAGES_STREAM, false, &what, None)?;
            return match self.store.session(id).await? {
                Some(s) if ctx.principal.can_see_team(&s.to_team) => {
                    self.own_session(ctx, &s)?;
                    Ok(topic)
                }
                _ => Err(IrisError::session_not_found(format!("`{id}`"))),
            };
        }
        Err(IrisError::validation(
            "topic",
            format!("unknown topic `{topic}`; use system, team:<name> or session:<id>"),
        ))
    }

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
    pub fn own_session(&self, ctx: &Ctx, session: &SessionRow) -> Result<()> {
        match ctx.principal.agent_team() {
            Some(team) if session.from_team != team => {
                Err(IrisError::session_not_found(format!("`{}`", session.id)))
            }
            _ => Ok(()),
        }
    }

    /// Record an audit event as `ctx`'s caller.
    pub fn audit(&self, ctx: &Ctx, event: AuditEvent) {
        audit(&self.auth, ctx, event);
    }
}
