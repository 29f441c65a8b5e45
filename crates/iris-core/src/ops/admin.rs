//! Administration: API keys, users and the audit trail (seeds 000 and 003).
//! Each change is audited by the auth layer with who made it.

use std::sync::Arc;

use iris_auth::{KeyInfo, NewKey, NewUser, UserInfo, UserUpdate, parse_duration};
use iris_storage::AuditFilter;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::system::{NoParams, Pagination, parse_time};
use crate::auth::scope;
use crate::ctx::Ctx;
use crate::error::{IrisError, Result};
use crate::iris::Iris;
use crate::registry::Operation;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyCreateParams {
    /// A name for people (`ci-pipeline`).
    #[schemars(length(min = 1, max = 64))]
    pub name: String,
    /// Scopes (`teams:read`, …) or seed aliases (`tell`, `status:read`, …).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// viewer, operator, developer or admin.
    pub role: Option<String>,
    /// Limit the key to these teams.
    pub teams: Option<Vec<String>>,
    /// `30d`, `12h`, `90m`…; never expires when absent.
    #[schemars(regex(pattern = DURATION))]
    pub expires_in: Option<String>,
    /// This key's own limit (`100/min`) instead of the default.
    pub rate_limit: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyCreated {
    /// The key itself: shown this once, stored only as a hash.
    pub key: String,
    #[serde(flatten)]
    pub info: KeyInfo,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyRefParams {
    /// The key's id, name, or prefix.
    pub key: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyRotateParams {
    pub key: String,
    /// How long the old key keeps working (`1h`, `90s`…); default auth.rotationGrace.
    #[schemars(regex(pattern = DURATION))]
    pub grace: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct KeyList {
    pub keys: Vec<KeyInfo>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserCreateParams {
    /// 3 to 64 letters, digits, `.`, `_` or `-`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]{3,64}$"))]
    pub username: String,
    pub password: String,
    pub email: Option<String>,
    /// One role (viewer, operator, developer, admin); default viewer.
    pub role: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    /// Extra scopes besides the roles'.
    #[serde(default)]
    pub scopes: Vec<String>,
    pub teams: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserListParams {
    pub role: Option<String>,
    /// active or disabled.
    pub status: Option<String>,
    /// Part of a username or email.
    pub search: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct UserList {
    pub users: Vec<UserInfo>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserUpdateParams {
    /// The user's id, username or email.
    pub user: String,
    /// active or disabled (disabling ends every session at once).
    pub status: Option<String>,
    pub roles: Option<Vec<String>>,
    /// Extra scopes (seed 003 calls them permissions).
    #[serde(alias = "permissions")]
    pub scopes: Option<Vec<String>>,
    pub teams: Option<Vec<String>>,
    pub email: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MfaReset {
    /// The user's id.
    pub user: String,
    pub username: String,
    /// Always false after a reset.
    pub mfa_enabled: bool,
    /// Whether MFA was on before.
    pub was_enabled: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserRef {
    /// The user's id, username or email.
    #[schemars(length(min = 1, max = 254))]
    pub user: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PasswordParams {
    pub user: String,
    pub password: String,
}

/// A time: Unix milliseconds or an ISO 8601 / RFC 3339 string.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum TimeParam {
    Millis(i64),
    Text(String),
}

impl TimeParam {
    fn millis(&self, field: &str) -> Result<i64> {
        match self {
            TimeParam::Millis(ms) => Ok(*ms),
            TimeParam::Text(t) => parse_time(t).ok_or_else(|| {
                IrisError::validation(field, format!("`{t}` is not an ISO 8601 time"))
            }),
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditListParams {
    pub start_date: Option<TimeParam>,
    pub end_date: Option<TimeParam>,
    /// The actor, `user:<id>` / `key:<id>`; a bare user or key id works too.
    #[serde(alias = "actor")]
    pub user_id: Option<String>,
    /// An action (`key.create`) or a family (`auth`, `operation`).
    pub action: Option<String>,
    pub team: Option<String>,
    /// success, failure or denied.
    pub result: Option<String>,
    /// info, warning or critical.
    pub severity: Option<String>,
    #[serde(default = "super::one")]
    #[schemars(range(min = 1))]
    pub page: i64,
    #[serde(default = "hundred")]
    #[schemars(range(min = 1, max = 1000))]
    pub limit: i64,
}

fn hundred() -> i64 {
    100
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct AuditList {
    /// Newest first.
    pub logs: Vec<Value>,
    pub pagination: Pagination,
}

/// Every named team must exist.
fn known_teams(iris: &Iris, teams: &Option<Vec<String>>) -> Result<()> {
    for t in teams.iter().flatten() {
        if !iris.teams().all().iter().any(|x| x.name == *t) {
            return Err(IrisError::validation("teams", format!("no team `{t}`")));
        }
    }
    Ok(())
}

/// What `parse_duration` reads: a positive whole number and a unit (none:
/// seconds), as the schema of the fields that hold one says.
const DURATION: &str = r"^\s*0*[1-9][0-9]{0,11}(s|sec|second|seconds|m|min|minute|minutes|h|hour|hours|d|day|days)?\s*$";

fn duration(field: &str, v: Option<&str>) -> Result<Option<std::time::Duration>> {
    v.map(|s| parse_duration(s).map_err(|e| IrisError::validation(field, e)))
        .transpose()
}

fn audit_row(r: iris_storage::AuditRow) -> Value {
    let mut v = serde_json::to_value(&r).unwrap_or_default();
    v["timestamp"] = Value::String(super::system::iso8601(r.ts));
    v["details"] = serde_json::from_str(&r.details).unwrap_or_default();
    v
}

/// Keys, users and the audit trail span every team: each operation here is
/// [`Operation::global`], refused to callers limited to some teams (a
/// limited admin could otherwise mint an unlimited key).
pub(super) fn operations() -> Vec<Operation> {
    let ops = vec![
        Operation::new(
            "key_create",
            "Create an API key; the key is in the answer once and never again.",
            Some(scope::ADMIN),
            true,
            |iris: Arc<Iris>, ctx: Ctx, p: KeyCreateParams| async move {
                known_teams(&iris, &p.teams)?;
                let spec = NewKey {
                    name: p.name,
                    scopes: p.scopes,
                    role: p.role,
                    teams: p.teams,
                    expires_in: duration("expiresIn", p.expires_in.as_deref())?,
                    rate_limit: p
                        .rate_limit
                        .map(|r| {
                            r.parse()
                                .map_err(|e: String| IrisError::validation("rateLimit", e))
                        })
                        .transpose()?,
                };
                let (key, info) = iris
                    .auth()
                    .create_key(spec, &ctx.principal, &ctx.origin)
                    .await?;
                Ok(KeyCreated { key, info })
            },
        ),
        Operation::new(
            "key_list",
            "Every API key (never the keys themselves): scopes, teams, status, usage.",
            Some(scope::ADMIN),
            false,
            |iris: Arc<Iris>, _ctx: Ctx, _p: NoParams| async move {
                Ok(KeyList {
                    keys: iris.auth().list_keys().await?,
                })
            },
        ),
        Operation::new(
            "key_revoke",
            "Revoke an API key (by id, name or prefix); refused from the next request on.",
            Some(scope::ADMIN),
            true,
            |iris: Arc<Iris>, ctx: Ctx, p: KeyRefParams| async move {
                Ok(iris
                    .auth()
                    .revoke_key(&p.key, &ctx.principal, &ctx.origin)
                    .await?)
            },
        ),
        Operation::new(
            "key_rotate",
            "Replace an API key with a new one; the old one works for a grace period.",
            Some(scope::ADMIN),
            true,
            |iris: Arc<Iris>, ctx: Ctx, p: KeyRotateParams| async move {
                let grace = duration("grace", p.grace.as_deref())?;
                let (key, info) = iris
                    .auth()
                    .rotate_key(&p.key, grace, &ctx.principal, &ctx.origin)
                    .await?;
                Ok(KeyCreated { key, info })
            },
        ),
        Operation::new(
            "user_create",
            "Create a user who logs in with a username or email and a password.",
            Some(scope::ADMIN),
            true,
            |iris: Arc<Iris>, ctx: Ctx, p: UserCreateParams| async move {
                known_teams(&iris, &p.teams)?;
                let mut roles = p.roles;
                roles.extend(p.role);
                let u = NewUser {
                    username: p.username,
                    password: p.password,
                    email: p.email,
                    roles,
                    scopes: p.scopes,
                    teams: p.teams,
                };
                Ok(iris
                    .auth()
                    .create_user(u, &ctx.principal, &ctx.origin)
                    .await?)
            },
        ),
        Operation::new(
            "user_list",
            "Users, filtered by role, status or a search in username and email.",
            Some(scope::ADMIN),
            false,
            |iris: Arc<Iris>, _ctx: Ctx, p: UserListParams| async move {
                let users = iris
                    .auth()
                    .list_users(p.role.as_deref(), p.status.as_deref(), p.search.as_deref())
                    .await?;
                Ok(UserList { users })
            },
        ),
        Operation::new(
            "user_update",
            "Change a user's status (active/disabled), roles, extra scopes, teams or email.",
            Some(scope::ADMIN),
            true,
            |iris: Arc<Iris>, ctx: Ctx, p: UserUpdateParams| async move {
                known_teams(&iris, &p.teams)?;
                let change = UserUpdate {
                    status: p.status,
                    roles: p.roles,
                    scopes: p.scopes,
                    teams: p.teams.map(Some),
                    email: p.email.map(Some),
                };
                Ok(iris
                    .auth()
                    .update_user(&p.user, change, &ctx.principal, &ctx.origin)
                    .await?)
            },
        ),
        Operation::new(
            "user_reset_password",
            "Set a user's password; ends their sessions and lifts a lockout.",
            Some(scope::ADMIN),
            true,
            |iris: Arc<Iris>, ctx: Ctx, p: PasswordParams| async move {
                Ok(iris
                    .auth()
                    .reset_password(&p.user, &p.password, &ctx.principal, &ctx.origin)
                    .await?)
            },
        ),
        Operation::new(
            "user_reset_mfa",
            "Turn a user's MFA off (a lost authenticator): their sessions end; the next login needs the password only.",
            Some(scope::ADMIN),
            true,
            |iris: Arc<Iris>, ctx: Ctx, p: UserRef| async move {
                let done = iris
                    .auth()
                    .mfa_reset(&p.user, &ctx.principal, &ctx.origin)
                    .await?;
                serde_json::from_value::<MfaReset>(done)
                    .map_err(|e| IrisError::internal("resetting MFA", e))
            },
        ),
        Operation::new(
            "audit_list",
            "Audit records, newest first, filtered by time, actor, action, team, result and severity.",
            Some(scope::AUDIT_READ),
            false,
            |iris: Arc<Iris>, _ctx: Ctx, p: AuditListParams| async move {
                iris.auth().audit.flush().await;
                let actor = p.user_id.map(|a| {
                    if a.contains(':') {
                        a
                    } else if a.starts_with("key_") {
                        format!("key:{a}")
                    } else {
                        format!("user:{a}")
                    }
                });
                let filter = AuditFilter {
                    start: p
                        .start_date
                        .as_ref()
                        .map(|t| t.millis("startDate"))
                        .transpose()?,
                    end: p
                        .end_date
                        .as_ref()
                        .map(|t| t.millis("endDate"))
                        .transpose()?,
                    actor,
                    action: p.action,
                    team: p.team,
                    result: p.result,
                    severity: p.severity,
                    limit: p.limit,
                    offset: Pagination::offset(p.page, p.limit),
                };
                let (rows, total) = iris.store().audit(&filter).await?;
                Ok(AuditList {
                    logs: rows.into_iter().map(audit_row).collect(),
                    pagination: Pagination::of(p.page, p.limit, total),
                })
            },
        ),
        Operation::new(
            "audit_verify",
            "Recompute the audit trail's hash chain and compare its ends with the witness file; reports the first edited or missing record.",
            Some(scope::AUDIT_READ),
            false,
            |iris: Arc<Iris>, _ctx: Ctx, _p: NoParams| async move {
                iris.auth().audit.flush().await;
                Ok(iris
                    .store()
                    .verify_audit_with(iris.auth().audit_witness())
                    .await?)
            },
        ),
    ];
    ops.into_iter().map(Operation::global).collect()
}
