//! Who is calling. Authentication lives in `iris-auth` and runs in the
//! transports' shared gate; the core checks scopes, team visibility and the
//! message rate once, in [`crate::registry::dispatch_op`], and audits there.

pub use iris_auth::principal::{Principal, PrincipalKind};
pub use iris_auth::scope;
pub use iris_auth::secret::sha256_hex;
pub use iris_auth::{
    AuditEvent, Auth, AuthError, Decision, KEY_PREFIX, Login, NewKey, NewUser, Origin, Outcome,
    Registration, SignUp, Standing, UserUpdate,
};

use serde_json::json;

use crate::ctx::Ctx;
use crate::error::{ErrorKind, IrisError, Result};
use crate::iris::Iris;

impl Iris {
    /// The one permission decision: `ctx`'s caller holds `scope` and, for
    /// what spans every team (`global`), is not limited to some teams.
    /// Dispatch asks it for every operation; routes and subscriptions that
    /// are not operations ask it too. A refusal is audited.
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
        self.audit(
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
    /// `system` spans every team (`teams:read`, no team limit).
    pub async fn check_topic(&self, ctx: &Ctx, topic: &str) -> Result<()> {
        let what = format!("subscribe {topic}");
        if topic == "system" {
            return self.permit(ctx, scope::TEAMS_READ, true, &what, None);
        }
        if let Some(team) = topic.strip_prefix("team:") {
            self.permit(ctx, scope::MESSAGES_STREAM, false, &what, Some(team))?;
            return self.team(ctx, team).map(|_| ());
        }
        if let Some(id) = topic.strip_prefix("session:") {
            self.permit(ctx, scope::MESSAGES_STREAM, false, &what, None)?;
            return match self.store.session(id).await? {
                Some(s) if ctx.principal.can_see_team(&s.to_team) => Ok(()),
                _ => Err(IrisError::session_not_found(format!("`{id}`"))),
            };
        }
        Err(IrisError::validation(
            "topic",
            format!("unknown topic `{topic}`; use system, team:<name> or session:<id>"),
        ))
    }
}

impl From<AuthError> for IrisError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthorized { message, details } => {
                let err = IrisError::new(ErrorKind::Unauthorized, message);
                match details {
                    Some(d) => err.with_details(d),
                    None => err,
                }
            }
            AuthError::Forbidden(m) => IrisError::new(ErrorKind::Forbidden, m),
            AuthError::Invalid { field, message } => IrisError::validation(&field, message),
            AuthError::NotFound(m) => IrisError::not_found(m),
            AuthError::Conflict(m) => IrisError::new(ErrorKind::Conflict, m),
            AuthError::RateLimited {
                message,
                retry_after_ms,
            } => IrisError::new(ErrorKind::RateLimited, message)
                .with_details(serde_json::json!({"retryAfterMs": retry_after_ms})),
            AuthError::Store(e) => IrisError::internal("the key and user store", e),
            AuthError::Internal(m) => IrisError::new(ErrorKind::Internal, m),
        }
    }
}
