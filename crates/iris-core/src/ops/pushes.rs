//! A2A push notification configs of a task (a turn): `task_push_set`,
//! `task_push_get`, `task_push_list`, `task_push_delete`. Each state change
//! of the task is then POSTed to the config's URL (see
//! [`crate::a2a::push_of`]), through the webhook deliverer: the SSRF guard,
//! retries, Iris's signature, the client's token and credential.

use std::collections::BTreeMap;
use std::sync::Arc;

use iris_storage::PushConfigRow;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::system::{MessageRecord, message_record};
use crate::auth::scope;
use crate::clock::now_ms;
use crate::ctx::Ctx;
use crate::error::{IrisError, Result};
use crate::iris::Iris;
use crate::registry::{Operation, Runs};

/// How each notification authenticates to the client's endpoint.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Authentication {
    /// The HTTP scheme (`Bearer`, `Basic`, …).
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
    )]
    pub scheme: String,
    #[serde(default)]
    #[schemars(length(max = 4096))]
    pub credentials: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetParams {
    /// The task's team (its owner runs the call).
    #[schemars(length(min = 1, max = 64))]
    pub team: String,
    /// The task (message) reported on.
    #[schemars(length(min = 1, max = 64))]
    pub message_id: String,
    /// The config's id within the task; generated when absent. Setting an
    /// existing id replaces that config.
    #[serde(default)]
    #[schemars(length(min = 1, max = 128))]
    pub config_id: Option<String>,
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// Sent back as `X-A2A-Notification-Token`.
    #[serde(default)]
    #[schemars(length(max = 512))]
    pub token: Option<String>,
    #[serde(default)]
    pub authentication: Option<Authentication>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigParams {
    #[schemars(length(min = 1, max = 64))]
    pub team: String,
    #[schemars(length(min = 1, max = 64))]
    pub message_id: String,
    #[schemars(length(min = 1, max = 128))]
    pub config_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListParams {
    #[schemars(length(min = 1, max = 64))]
    pub team: String,
    #[schemars(length(min = 1, max = 64))]
    pub message_id: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ConfigList {
    pub configs: Vec<PushConfigRow>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deleted {
    pub config_id: String,
    pub deleted: bool,
}

/// Configs one task may have.
const MAX_PER_TASK: usize = 10;

/// A new config on a task that has [`MAX_PER_TASK`].
fn full() -> IrisError {
    IrisError::validation(
        "configId",
        format!("a task has at most {MAX_PER_TASK} push configs"),
    )
}

/// The task's config `id`, or `NOT_FOUND`.
async fn config(iris: &Iris, task: &str, id: &str) -> Result<PushConfigRow> {
    iris.store()
        .push_configs(task)
        .await?
        .into_iter()
        .find(|c| c.id == id)
        .ok_or_else(|| IrisError::not_found(format!("no push config `{id}` of task `{task}`")))
}

/// Tell this node and the others that the configs changed (the turn
/// events of a node with none skip the table).
async fn changed(iris: &Iris) -> Result<()> {
    iris.jobs().reload_webhooks().await?;
    iris.node().tell(crate::cluster::Notice::Webhooks).await;
    Ok(())
}

/// Message `id` of `team` as the caller may see it.
async fn task(iris: &Iris, ctx: &Ctx, team: &str, id: &str) -> Result<MessageRecord> {
    let m = message_record(iris, ctx, id).await?;
    if m.turn.to_team != team {
        return Err(IrisError::not_found(format!(
            "no message `{id}` of team `{team}`"
        )));
    }
    Ok(m)
}

/// Who may change a config, and read its token: whoever made it, or an
/// administrator.
fn owns(ctx: &Ctx, c: &PushConfigRow) -> bool {
    c.created_by == ctx.principal.actor() || ctx.principal.allows(scope::ADMIN)
}

/// `FORBIDDEN` unless `ctx` [`owns`] config `c`.
fn must_own(ctx: &Ctx, c: &PushConfigRow) -> Result<()> {
    if owns(ctx, c) {
        return Ok(());
    }
    Err(IrisError::new(
        crate::error::ErrorKind::Forbidden,
        format!("push config `{}` was set by another caller", c.id),
    ))
}

/// A config as `ctx` may see it: another caller's token is not shown.
fn shown(ctx: &Ctx, mut c: PushConfigRow) -> PushConfigRow {
    if !owns(ctx, &c) {
        c.token = None;
    }
    c
}

/// Everything a config is checked for, before anything is written (the
/// A2A transport checks an inline config with it before it sends): the
/// destination through the SSRF guard, and token and credential as header
/// values the deliverer can send.
pub(crate) async fn check_config(
    iris: &Iris,
    id: Option<&str>,
    url: &str,
    token: Option<&str>,
    authentication: Option<(&str, Option<&str>)>,
) -> Result<()> {
    let long =
        |field: &str, max: usize| IrisError::validation(field, format!("at most {max} characters"));
    if id
        .is_some_and(|i| i.is_empty() || i.chars().count() > 128 || i.chars().any(char::is_control))
    {
        return Err(IrisError::validation(
            "configId",
            "1 to 128 characters, none of them control characters",
        ));
    }
    if url.len() > 2048 {
        return Err(long("url", 2048));
    }
    if token.is_some_and(|t| t.len() > 512) {
        return Err(long("token", 512));
    }
    let mut headers = BTreeMap::new();
    if let Some(t) = token {
        headers.insert("X-A2A-Notification-Token".to_owned(), t.to_owned());
    }
    if let Some((scheme, credentials)) = authentication {
        let token68 = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+.^_`|~-".contains(c);
        if scheme.is_empty() || scheme.len() > 64 || !scheme.chars().all(token68) {
            return Err(IrisError::validation(
                "authentication.scheme",
                "an HTTP authentication scheme (`Bearer`, `Basic`, …)",
            ));
        }
        if credentials.is_some_and(|c| c.len() > 4096) {
            return Err(long("authentication.credentials", 4096));
        }
        if let Some(c) = credentials {
            headers.insert("Authorization".to_owned(), format!("{scheme} {c}"));
        }
    }
    iris_webhooks::deliver::check_headers(&headers)
        .map_err(|e| IrisError::validation("token", e))?;
    super::webhooks::check_url(iris, url).await
}

impl Iris {
    /// [`check_config`], for a transport that checks a push config before
    /// it sends the message the config is for.
    pub async fn check_push_config(
        &self,
        id: Option<&str>,
        url: &str,
        token: Option<&str>,
        authentication: Option<(&str, Option<&str>)>,
    ) -> Result<()> {
        check_config(self, id, url, token, authentication).await
    }
}

/// The task's state now as config `c` is pushed it (with the request it
/// waits on, if any and `c` sees approvals).
async fn current(iris: &Iris, m: &MessageRecord, c: &PushConfigRow) -> Result<serde_json::Value> {
    let mut task = crate::a2a::task_of(&json!(m));
    if m.turn.status == "running" && c.sees_approvals {
        let (pending, _) = iris
            .store()
            .approvals(
                None,
                Some(&m.turn.to_team),
                Some(&m.turn.id),
                Some("pending"),
                1,
                0,
            )
            .await?;
        if let Some(a) = pending.first() {
            crate::a2a::waiting_for(&mut task, &json!(a));
        }
    }
    Ok(json!({"task": task}))
}

pub(super) fn operations() -> Vec<Operation> {
    vec![
        Operation::new(
            "task_push_set",
            "Have each state change of a task (message) POSTed to a URL as an A2A push notification, with the client's token and credential.",
            Some(scope::MESSAGES_WRITE),
            true,
            |iris: Arc<Iris>, ctx: Ctx, p: SetParams| async move {
                task(&iris, &ctx, &p.team, &p.message_id).await?;
                let (scheme, credentials) = match p.authentication {
                    Some(a) => (Some(a.scheme), a.credentials),
                    None => (None, None),
                };
                let id = p
                    .config_id
                    .unwrap_or_else(|| format!("push_{}", ulid::Ulid::new()));
                let existing = iris.store().push_configs(&p.message_id).await?;
                match existing.iter().find(|c| c.id == id) {
                    Some(c) => must_own(&ctx, c)?,
                    // (Checked again as it is written: see below.)
                    None if existing.len() >= MAX_PER_TASK => return Err(full()),
                    None => {}
                }
                check_config(
                    &iris,
                    Some(&id),
                    &p.url,
                    p.token.as_deref(),
                    scheme.as_deref().map(|s| (s, credentials.as_deref())),
                )
                .await?;
                let row = PushConfigRow {
                    id,
                    task_id: p.message_id,
                    team: p.team,
                    url: p.url,
                    token: p.token,
                    auth_scheme: scheme,
                    auth_credentials: credentials,
                    created_by: ctx.principal.actor(),
                    created_at: now_ms(),
                    sees_approvals: ctx.principal.allows(scope::APPROVALS_MANAGE),
                };
                if !iris.store().put_push_config(&row, MAX_PER_TASK).await? {
                    return Err(full());
                }
                changed(&iris).await?;
                // The task's state now, for a task that started (or ended)
                // before its config was written: a change racing this one
                // may be sent twice, never not at all (this runs on the
                // team's owner, whose memory and writes it reads).
                let now = message_record(&iris, &ctx, &row.task_id).await?;
                if now.turn.status != "queued" {
                    iris.jobs().push_now(&row, &current(&iris, &now, &row).await?).await?;
                }
                Ok(row)
            },
        )
        .sends_messages()
        .on_owner(Runs::OnTeamsOwner),
        Operation::new(
            "task_push_get",
            "One push notification config of a task (never its credential).",
            Some(scope::MESSAGES_READ),
            false,
            |iris: Arc<Iris>, ctx: Ctx, p: ConfigParams| async move {
                task(&iris, &ctx, &p.team, &p.message_id).await?;
                Ok(shown(&ctx, config(&iris, &p.message_id, &p.config_id).await?))
            },
        ),
        Operation::new(
            "task_push_list",
            "A task's push notification configs (never their credentials).",
            Some(scope::MESSAGES_READ),
            false,
            |iris: Arc<Iris>, ctx: Ctx, p: ListParams| async move {
                task(&iris, &ctx, &p.team, &p.message_id).await?;
                let configs = iris.store().push_configs(&p.message_id).await?;
                Ok(ConfigList {
                    configs: configs.into_iter().map(|c| shown(&ctx, c)).collect(),
                })
            },
        ),
        Operation::new(
            "task_push_delete",
            "Stop a task's push notifications to one config.",
            Some(scope::MESSAGES_WRITE),
            true,
            |iris: Arc<Iris>, ctx: Ctx, p: ConfigParams| async move {
                task(&iris, &ctx, &p.team, &p.message_id).await?;
                must_own(&ctx, &config(&iris, &p.message_id, &p.config_id).await?)?;
                let deleted = iris
                    .store()
                    .delete_push_config(&p.message_id, &p.config_id)
                    .await?;
                changed(&iris).await?;
                Ok(Deleted {
                    config_id: p.config_id,
                    deleted,
                })
            },
        ),
    ]
}
