//! Webhook subscriptions (seed 003's `/api/admin/webhooks`), admin only:
//! `webhook_create`, `webhook_list`, `webhook_get`, `webhook_update`,
//! `webhook_delete`, `webhook_deliveries`, `webhook_redeliver`.

use std::sync::Arc;

use iris_storage::WebhookRow;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::jobs::{DeliveryList, DeliveryView, with_attempts};
use super::system::Pagination;
use crate::auth::scope;
use crate::clock::now_ms;
use crate::ctx::Ctx;
use crate::error::{IrisError, Result};
use crate::iris::Iris;
use crate::registry::Operation;

/// The events a subscription may ask for (`*` for all).
pub const EVENTS: &[&str] = &[
    "job.completed",
    "job.failed",
    "job.cancelled",
    "job.timed_out",
    "turn.queued",
    "turn.started",
    "turn.completed",
    "turn.failed",
    "turn.cancelled",
    "turn.timed_out",
    "process.spawned",
    "process.terminated",
    "process.error",
    "approval.requested",
    "approval.resolved",
    "approval.expired",
    "config.reloaded",
    "config.rejected",
    "*",
];

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateParams {
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// Event names (`job.completed`, `approval.requested`, …) or `*`.
    #[schemars(length(min = 1, max = 32))]
    pub events: Vec<String>,
    /// Signs every delivery (`X-Iris-Signature`); generated when absent
    /// and then shown once, in this answer.
    #[serde(default)]
    #[schemars(length(min = 16, max = 256))]
    pub secret: Option<String>,
    #[serde(default = "yes")]
    pub active: bool,
    #[serde(default)]
    #[schemars(length(max = 500))]
    pub description: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateParams {
    #[schemars(length(min = 1, max = 64))]
    pub webhook_id: String,
    #[serde(default)]
    #[schemars(length(min = 1, max = 2048))]
    pub url: Option<String>,
    #[serde(default)]
    #[schemars(length(min = 1, max = 32))]
    pub events: Option<Vec<String>>,
    #[serde(default)]
    #[schemars(length(min = 16, max = 256))]
    pub secret: Option<String>,
    #[serde(default)]
    pub active: Option<bool>,
    #[serde(default)]
    #[schemars(length(max = 500))]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookParams {
    #[schemars(length(min = 1, max = 64))]
    pub webhook_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliveriesParams {
    #[schemars(length(min = 1, max = 64))]
    pub webhook_id: String,
    #[serde(default = "super::one")]
    #[schemars(range(min = 1))]
    pub page: i64,
    #[serde(default = "super::fifty")]
    #[schemars(range(min = 1, max = 1000))]
    pub limit: i64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedeliverParams {
    #[schemars(length(min = 1, max = 64))]
    pub delivery_id: String,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Created {
    #[serde(flatten)]
    pub webhook: WebhookRow,
    /// Shown here only: keep it to verify signatures.
    pub secret: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookRow>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deleted {
    pub webhook_id: String,
    pub deleted: bool,
}

fn check_events(events: &[String]) -> Result<()> {
    match events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
        Some(bad) => Err(IrisError::validation(
            "events",
            format!("unknown event `{bad}`; known: {}", EVENTS.join(", ")),
        )),
        None => Ok(()),
    }
}

pub(super) async fn check_url(iris: &Iris, url: &str) -> Result<()> {
    let allow = iris_webhooks::AllowHosts::new(&iris.config().webhooks.allow_hosts);
    iris_webhooks::guard::check_url(url, &allow)
        .await
        .map(|_| ())
        .map_err(|e| IrisError::validation("url", e))
}

impl Iris {
    /// Whether Iris would send a webhook to `url` (the SSRF guard, with
    /// `webhooks.allowHosts`): for a transport that checks a destination
    /// before it sends anything.
    pub async fn check_webhook_url(&self, url: &str) -> Result<()> {
        check_url(self, url).await
    }
}

async fn get(iris: &Iris, id: &str) -> Result<WebhookRow> {
    iris.store()
        .webhook(id)
        .await?
        .ok_or_else(|| IrisError::not_found(format!("no webhook `{id}`")))
}

pub(super) fn operations() -> Vec<Operation> {
    let ops = vec![
        Operation::new(
            "webhook_create",
            "Subscribe a URL to events (job.completed, approval.requested, …); deliveries are signed with the secret, shown once.",
            Some(scope::ADMIN),
            true,
            |iris: Arc<Iris>, ctx: Ctx, p: CreateParams| async move {
                check_events(&p.events)?;
                check_url(&iris, &p.url).await?;
                let secret = match p.secret {
                    Some(s) => s,
                    None => format!(
                        "whsec_{}",
                        hex::encode(iris_auth::secret::random_bytes::<24>()?)
                    ),
                };
                let now = now_ms();
                let row = WebhookRow {
                    id: format!("whk_{}", ulid::Ulid::new()),
                    url: p.url,
                    events: p.events,
                    secret: secret.clone(),
                    active: p.active,
                    description: p.description,
                    created_by: ctx.principal.actor(),
                    created_at: now,
                    updated_at: now,
                };
                iris.store().insert_webhook(&row).await?;
                iris.jobs().reload_webhooks().await?;
                iris.node().tell(crate::cluster::Notice::Webhooks).await;
                Ok(Created {
                    webhook: row,
                    secret,
                })
            },
        ),
        Operation::new(
            "webhook_list",
            "Every webhook subscription (never their secrets).",
            Some(scope::ADMIN),
            false,
            |iris: Arc<Iris>, _ctx: Ctx, _p: super::system::NoParams| async move {
                Ok(WebhookList {
                    webhooks: iris.store().webhooks().await?,
                })
            },
        ),
        Operation::new(
            "webhook_get",
            "One webhook subscription.",
            Some(scope::ADMIN),
            false,
            |iris: Arc<Iris>, _ctx: Ctx, p: WebhookParams| async move {
                get(&iris, &p.webhook_id).await
            },
        ),
        Operation::new(
            "webhook_update",
            "Change a subscription's URL, events, secret, description or whether it is active.",
            Some(scope::ADMIN),
            true,
            |iris: Arc<Iris>, _ctx: Ctx, p: UpdateParams| async move {
                let mut row = get(&iris, &p.webhook_id).await?;
                if let Some(events) = p.events {
                    check_events(&events)?;
                    row.events = events;
                }
                if let Some(url) = p.url {
                    check_url(&iris, &url).await?;
                    row.url = url;
                }
                if let Some(s) = p.secret {
                    row.secret = s;
                }
                if let Some(a) = p.active {
                    row.active = a;
                }
                if p.description.is_some() {
                    row.description = p.description;
                }
                row.updated_at = now_ms();
                iris.store().update_webhook(&row).await?;
                iris.jobs().reload_webhooks().await?;
                iris.node().tell(crate::cluster::Notice::Webhooks).await;
                Ok(row)
            },
        ),
        Operation::new(
            "webhook_delete",
            "Delete a subscription; its pending deliveries fail.",
            Some(scope::ADMIN),
            true,
            |iris: Arc<Iris>, _ctx: Ctx, p: WebhookParams| async move {
                get(&iris, &p.webhook_id).await?;
                let deleted = iris.store().delete_webhook(&p.webhook_id).await?;
                iris.jobs().reload_webhooks().await?;
                iris.node().tell(crate::cluster::Notice::Webhooks).await;
                Ok(Deleted {
                    webhook_id: p.webhook_id,
                    deleted,
                })
            },
        ),
        Operation::new(
            "webhook_deliveries",
            "A subscription's deliveries, newest first, with every attempt.",
            Some(scope::ADMIN),
            false,
            |iris: Arc<Iris>, _ctx: Ctx, p: DeliveriesParams| async move {
                get(&iris, &p.webhook_id).await?;
                let (rows, total) = iris
                    .store()
                    .deliveries(
                        Some(&p.webhook_id),
                        None,
                        false,
                        p.limit,
                        Pagination::offset(p.page, p.limit),
                    )
                    .await?;
                Ok(DeliveryList {
                    deliveries: with_attempts(&iris, rows).await?,
                    pagination: Pagination::of(p.page, p.limit, total),
                })
            },
        ),
        Operation::new(
            "webhook_redeliver",
            "Send a delivery again now (a failed one gets another round of attempts).",
            Some(scope::ADMIN),
            true,
            |iris: Arc<Iris>, _ctx: Ctx, p: RedeliverParams| async move {
                let Some(d) = iris.store().delivery(&p.delivery_id).await? else {
                    return Err(IrisError::not_found(format!(
                        "no delivery `{}`",
                        p.delivery_id
                    )));
                };
                if d.status == "pending" {
                    return Err(IrisError::conflict(format!(
                        "delivery `{}` is still being tried",
                        d.id
                    ))
                    .with_details(json!({"deliveryId": d.id, "attempts": d.attempts})));
                }
                iris.store()
                    .redeliver(&d.id, now_ms(), iris.config().webhooks.max_attempts.max(1))
                    .await?;
                iris.jobs().poke();
                let d = iris.store().delivery(&d.id).await?.unwrap_or(d);
                let attempt_log = iris.store().attempts(&d.id).await?;
                Ok(DeliveryView {
                    delivery: d,
                    attempt_log,
                })
            },
        ),
    ];
    ops.into_iter().map(Operation::global).collect()
}
