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

use super::system::message_record;
use crate::auth::scope;
use crate::clock::now_ms;
use crate::ctx::Ctx;
use crate::error::{IrisError, Result};
use crate::iris::Iris;
use crate::registry::Operation;

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
    pub message_id: String,
    #[schemars(length(min = 1, max = 128))]
    pub config_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListParams {
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

pub(super) fn operations() -> Vec<Operation> {
    vec![
        Operation::new(
            "task_push_set",
            "Have each state change of a task (message) POSTed to a URL as an A2A push notification, with the client's token and credential.",
            Some(scope::MESSAGES_WRITE),
            true,
            |iris: Arc<Iris>, ctx: Ctx, p: SetParams| async move {
                let m = message_record(&iris, &ctx, &p.message_id).await?;
                super::webhooks::check_url(&iris, &p.url).await?;
                let (scheme, credentials) = match p.authentication {
                    Some(a) => (Some(a.scheme), a.credentials),
                    None => (None, None),
                };
                // Header values the deliverer can send.
                let mut headers = BTreeMap::new();
                if let Some(t) = &p.token {
                    headers.insert("X-A2A-Notification-Token".to_owned(), t.clone());
                }
                if let (Some(s), Some(c)) = (&scheme, &credentials) {
                    headers.insert("Authorization".to_owned(), format!("{s} {c}"));
                }
                iris_webhooks::deliver::check_headers(&headers)
                    .map_err(|e| IrisError::validation("token", e))?;
                let row = PushConfigRow {
                    id: p
                        .config_id
                        .unwrap_or_else(|| format!("push_{}", ulid::Ulid::new())),
                    task_id: p.message_id,
                    team: m.turn.to_team.clone(),
                    url: p.url,
                    token: p.token,
                    auth_scheme: scheme,
                    auth_credentials: credentials,
                    created_by: ctx.principal.actor(),
                    created_at: now_ms(),
                };
                iris.store().put_push_config(&row).await?;
                changed(&iris).await?;
                // The task's state now, for a task that started (or ended)
                // before its config was written: a change racing this one
                // may be sent twice, never not at all.
                let now = message_record(&iris, &ctx, &row.task_id).await?;
                if now.turn.status != "queued" {
                    let task = crate::a2a::task_of(&json!(now));
                    iris.jobs().push_now(&row, &json!({"task": task})).await?;
                }
                Ok(row)
            },
        ),
        Operation::new(
            "task_push_get",
            "One push notification config of a task (never its credential).",
            Some(scope::MESSAGES_READ),
            false,
            |iris: Arc<Iris>, ctx: Ctx, p: ConfigParams| async move {
                message_record(&iris, &ctx, &p.message_id).await?;
                config(&iris, &p.message_id, &p.config_id).await
            },
        ),
        Operation::new(
            "task_push_list",
            "A task's push notification configs (never their credentials).",
            Some(scope::MESSAGES_READ),
            false,
            |iris: Arc<Iris>, ctx: Ctx, p: ListParams| async move {
                message_record(&iris, &ctx, &p.message_id).await?;
                Ok(ConfigList {
                    configs: iris.store().push_configs(&p.message_id).await?,
                })
            },
        ),
        Operation::new(
            "task_push_delete",
            "Stop a task's push notifications to one config.",
            Some(scope::MESSAGES_WRITE),
            true,
            |iris: Arc<Iris>, ctx: Ctx, p: ConfigParams| async move {
                message_record(&iris, &ctx, &p.message_id).await?;
                config(&iris, &p.message_id, &p.config_id).await?;
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
