//! Webhook subscriptions, deliveries and their attempts (migration 0007).

use serde::Serialize;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::sql::Sql;

use crate::error::{Context, Result};
use crate::store::Store;

/// A subscription: events sent to a URL, signed with its secret.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookRow {
    pub id: String,
    pub url: String,
    /// Event names (`job.completed`, …) or `*`.
    pub events: Vec<String>,
    #[serde(skip)]
    pub secret: String,
    pub active: bool,
    pub description: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl WebhookRow {
    /// Whether `event` is one this subscription asked for.
    pub fn wants(&self, event: &str) -> bool {
        self.active && self.events.iter().any(|e| e == "*" || e == event)
    }
}

/// One payload for one destination.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryRow {
    pub id: String,
    pub webhook_id: Option<String>,
    pub job_id: Option<String>,
    pub event: String,
    pub url: String,
    pub method: String,
    #[serde(skip)]
    pub headers: Vec<(String, String)>,
    /// The JSON body exactly as sent (and signed).
    pub body: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub response_status: Option<i64>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

/// One try of a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptRow {
    pub n: i64,
    pub at: i64,
    pub duration_ms: i64,
    pub response_status: Option<i64>,
    pub error: Option<String>,
}

/// What an attempt leaves a delivery as.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub attempt: AttemptRow,
    /// `pending` (tried again at `next_attempt_at`), `delivered` or `failed`.
    pub status: &'static str,
    pub next_attempt_at: i64,
}

fn webhook_from_row(r: &AnyRow) -> WebhookRow {
    WebhookRow {
        id: r.get("id"),
        url: r.get("url"),
        events: serde_json::from_str(&r.get::<String, _>("events")).unwrap_or_default(),
        secret: r.get("secret"),
        active: r.get::<i64, _>("active") != 0,
        description: r.get("description"),
        created_by: r.get("created_by"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    }
}

fn delivery_from_row(r: &AnyRow) -> DeliveryRow {
    let headers: Vec<(String, String)> = r
        .get::<Option<String>, _>("headers")
        .and_then(|s| serde_json::from_str::<serde_json::Map<String, Value>>(&s).ok())
        .map(|m| {
            m.into_iter()
                .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    DeliveryRow {
        id: r.get("id"),
        webhook_id: r.get("webhook_id"),
        job_id: r.get("job_id"),
        event: r.get("event"),
        url: r.get("url"),
        method: r.get("method"),
        headers,
        body: r.get("body"),
        status: r.get("status"),
        attempts: r.get("attempts"),
        max_attempts: r.get("max_attempts"),
        next_attempt_at: r.get("next_attempt_at"),
        last_error: r.get("last_error"),
        response_status: r.get("response_status"),
        created_at: r.get("created_at"),
        delivered_at: r.get("delivered_at"),
    }
}

// Columns named: a cached statement stays valid when a migration adds one.
macro_rules! select_webhooks {
    () => {
        "SELECT id, url, events, secret, active, description, created_by, created_at, updated_at FROM webhooks"
    };
}

macro_rules! select_deliveries {
    ($rest:literal) => {
        concat!("SELECT id, webhook_id, job_id, event, url, method, headers, body, status, attempts, \
     max_attempts, next_attempt_at, last_error, response_status, created_at, delivered_at FROM webhook_deliveries", $rest)
    };
}

/// Insert a delivery inside a caller's transaction.
pub(crate) async fn insert_delivery(
    tx: &mut Transaction<'static, Any>,
    d: &DeliveryRow,
) -> Result<()> {
    let headers: serde_json::Map<String, Value> = d
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, webhook_id, job_id, event, url, method, headers, body, status, attempts,
         max_attempts, next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(&d.id)
    .bind(&d.webhook_id)
    .bind(&d.job_id)
    .bind(&d.event)
    .bind(&d.url)
    .bind(&d.method)
    .bind(Value::Object(headers).to_string())
    .bind(&d.body)
    .bind(&d.status)
    .bind(d.attempts)
    .bind(d.max_attempts)
    .bind(d.next_attempt_at)
    .bind(d.created_at)
    .execute(&mut **tx)
    .await
    .ctx("inserting a webhook delivery")?;
    Ok(())
}

impl Store {
    pub async fn insert_webhook(&self, w: &WebhookRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO webhooks (id, url, events, secret, active, description, created_by, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&w.id)
        .bind(&w.url)
        .bind(serde_json::json!(w.events).to_string())
        .bind(&w.secret)
        .bind(w.active as i64)
        .bind(&w.description)
        .bind(&w.created_by)
        .bind(w.created_at)
        .bind(w.updated_at)
        .execute(&self.pool)
        .await
        .ctx("inserting a webhook")?;
        Ok(())
    }

    /// Replace a webhook's changeable fields; false when there is none.
    pub async fn update_webhook(&self, w: &WebhookRow) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE webhooks SET url = $1, events = $2, secret = $3, active = $4, description = $5, updated_at = $6 WHERE id = $7",
        )
        .bind(&w.url)
        .bind(serde_json::json!(w.events).to_string())
        .bind(&w.secret)
        .bind(w.active as i64)
        .bind(&w.description)
        .bind(w.updated_at)
        .bind(&w.id)
        .execute(&self.pool)
        .await
        .ctx("updating a webhook")?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn delete_webhook(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM webhooks WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .ctx("deleting a webhook")?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn webhook(&self, id: &str) -> Result<Option<WebhookRow>> {
        let row = sqlx::query(concat!(select_webhooks!(), " WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .ctx("reading a webhook")?;
        Ok(row.as_ref().map(webhook_from_row))
    }

    /// Every subscription, oldest first.
    pub async fn webhooks(&self) -> Result<Vec<WebhookRow>> {
        let rows = sqlx::query(concat!(select_webhooks!(), " ORDER BY created_at, id"))
            .fetch_all(&self.pool)
            .await
            .ctx("reading webhooks")?;
        Ok(rows.iter().map(webhook_from_row).collect())
    }

    /// Write deliveries (outside a job's end: subscription events).
    pub async fn insert_deliveries(&self, ds: &[DeliveryRow]) -> Result<()> {
        let mut tx = self.pool.begin().await.ctx("starting a transaction")?;
        for d in ds {
            insert_delivery(&mut tx, d).await?;
        }
        tx.commit().await.ctx("committing deliveries")
    }

    pub async fn delivery(&self, id: &str) -> Result<Option<DeliveryRow>> {
        let row = sqlx::query(select_deliveries!(" WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .ctx("reading a delivery")?;
        Ok(row.as_ref().map(delivery_from_row))
    }

    /// Pending deliveries due by `now`, soonest first, at most `limit`.
    pub async fn due_deliveries(&self, now: i64, limit: i64) -> Result<Vec<DeliveryRow>> {
        let rows = sqlx::query(select_deliveries!(
            " WHERE status = 'pending' AND next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT $2"
        ))
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .ctx("reading due deliveries")?;
        Ok(rows.iter().map(delivery_from_row).collect())
    }

    /// Take a due delivery for one attempt: it is not due again before
    /// `until` (when an attempt that never reports back may be retried).
    /// False when someone else took it first.
    pub async fn claim_delivery(&self, id: &str, now: i64, until: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET next_attempt_at = $1 WHERE id = $2 AND status = 'pending' AND next_attempt_at <= $3",
        )
        .bind(until)
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await
        .ctx("claiming a delivery")?;
        Ok(done.rows_affected() > 0)
    }

    /// When the next pending delivery is due, if any is.
    pub async fn next_delivery_due(&self) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT MIN(next_attempt_at) FROM webhook_deliveries WHERE status = 'pending'",
        )
        .fetch_one(&self.pool)
        .await
        .ctx("reading the next due delivery")?;
        Ok(row.get(0))
    }

    /// Record an attempt and what it leaves the delivery as.
    pub async fn record_attempt(&self, id: &str, o: &AttemptOutcome) -> Result<()> {
        let mut tx = self.pool.begin().await.ctx("starting a transaction")?;
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, n, at, duration_ms, response_status, error)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (delivery_id, n) DO UPDATE SET at = excluded.at, duration_ms = excluded.duration_ms,
             response_status = excluded.response_status, error = excluded.error",
        )
        .bind(id)
        .bind(o.attempt.n)
        .bind(o.attempt.at)
        .bind(o.attempt.duration_ms)
        .bind(o.attempt.response_status)
        .bind(&o.attempt.error)
        .execute(&mut *tx)
        .await
        .ctx("recording a delivery attempt")?;
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $1, attempts = $2, next_attempt_at = $3, last_error = $4,
             response_status = $5, delivered_at = CASE WHEN $6 = 'delivered' THEN $7 ELSE delivered_at END WHERE id = $8",
        )
        .bind(o.status)
        .bind(o.attempt.n)
        .bind(o.next_attempt_at)
        .bind(&o.attempt.error)
        .bind(o.attempt.response_status)
        .bind(o.status)
        .bind(o.attempt.at)
        .bind(id)
        .execute(&mut *tx)
        .await
        .ctx("updating a delivery")?;
        tx.commit().await.ctx("committing a delivery attempt")
    }

    /// Try a delivery again from now, with `extra` more attempts allowed.
    pub async fn redeliver(&self, id: &str, now: i64, extra: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $1, max_attempts = attempts + $2 WHERE id = $3",
        )
        .bind(now)
        .bind(extra)
        .bind(id)
        .execute(&self.pool)
        .await
        .ctx("scheduling a redelivery")?;
        Ok(done.rows_affected() > 0)
    }

    /// Deliveries of a webhook or of a job (with `callbacks_only`, a job's
    /// callback's only, not the subscriptions'), newest first.
    pub async fn deliveries(
        &self,
        webhook_id: Option<&str>,
        job_id: Option<&str>,
        callbacks_only: bool,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<DeliveryRow>, i64)> {
        let filter = |q: &mut Sql| {
            q.push(" WHERE 1 = 1");
            if callbacks_only {
                q.push(" AND webhook_id IS NULL");
            }
            if let Some(w) = webhook_id {
                q.push(" AND webhook_id = ").bind(w);
            }
            if let Some(j) = job_id {
                q.push(" AND job_id = ").bind(j);
            }
        };
        let listing = crate::store::Listing {
            select: select_deliveries!(""),
            count: "SELECT COUNT(*) FROM webhook_deliveries",
            order: " ORDER BY created_at DESC, id DESC",
            what: "reading deliveries",
        };
        self.page(&listing, filter, limit, offset, delivery_from_row)
            .await
    }

    /// The attempts of a delivery, in order.
    pub async fn attempts(&self, delivery_id: &str) -> Result<Vec<AttemptRow>> {
        let rows = sqlx::query(
            "SELECT n, at, duration_ms, response_status, error FROM webhook_attempts WHERE delivery_id = $1 ORDER BY n",
        )
        .bind(delivery_id)
        .fetch_all(&self.pool)
        .await
        .ctx("reading delivery attempts")?;
        Ok(rows
            .iter()
            .map(|r| AttemptRow {
                n: r.get("n"),
                at: r.get("at"),
                duration_ms: r.get("duration_ms"),
                response_status: r.get("response_status"),
                error: r.get("error"),
            })
            .collect())
    }

    /// Delete ended turns (with their events and jobs) and finished
    /// deliveries older than `before` (Unix ms): the history's retention.
    /// Returns how many turns went.
    pub async fn prune_history(&self, before: i64) -> Result<u64> {
        let turns = sqlx::query(
            "DELETE FROM turns WHERE completed_at IS NOT NULL AND completed_at < $1
             AND status NOT IN ('queued', 'running')
             AND id NOT IN (SELECT id FROM jobs WHERE notified = 0)",
        )
        .bind(before)
        .execute(&self.pool)
        .await
        .ctx("pruning old turns")?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE status <> 'pending' AND created_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await
            .ctx("pruning old deliveries")?;
        // A2A push configs go with their tasks' history.
        sqlx::query("DELETE FROM push_configs WHERE created_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await
            .ctx("pruning old push configs")?;
        Ok(turns.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::store;

    #[tokio::test]
    async fn one_claimer_wins_a_due_delivery() {
        let (s, _d) = store().await;
        let d = DeliveryRow {
            id: "dlv_1".into(),
            webhook_id: None,
            job_id: None,
            event: "job.completed".into(),
            url: "http://127.0.0.1:9/".into(),
            method: "POST".into(),
            headers: vec![("x-a".into(), "b".into())],
            body: "{}".into(),
            status: "pending".into(),
            attempts: 0,
            max_attempts: 3,
            next_attempt_at: 10,
            last_error: None,
            response_status: None,
            created_at: 1,
            delivered_at: None,
        };
        s.insert_deliveries(std::slice::from_ref(&d)).await.unwrap();
        assert_eq!(s.due_deliveries(10, 10).await.unwrap(), vec![d.clone()]);
        // Two senders that both saw it due: one wins, the lease hides it.
        assert!(s.claim_delivery("dlv_1", 10, 1_000).await.unwrap());
        assert!(!s.claim_delivery("dlv_1", 10, 1_000).await.unwrap());
        assert!(s.due_deliveries(500, 10).await.unwrap().is_empty());
        assert!(
            s.claim_delivery("dlv_1", 1_000, 2_000).await.unwrap(),
            "the lease ran out"
        );
    }
}
