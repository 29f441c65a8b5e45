//! What is reported by webhook, and to whom: a job's end to its callback
//! and to the subscriptions that want `job.<status>` (written with the
//! job's end), and the bus's lifecycle events (`turn.*`, `process.*`,
//! `approval.*`) to the subscriptions that want them.
//!
//! Payloads: a job's callback gets seed 002's shape `{jobId, team, status,
//! result, duration, timestamp}` (plus `error`, `sessionId`); a
//! subscription gets seed 003's `{event, timestamp, data}`.

use std::sync::{Arc, RwLock};

use std::sync::atomic::Ordering;

use iris_storage::{DeliveryRow, JobRecord, PushConfigRow, TurnFinish, WebhookRow};
use serde_json::{Value, json};

use super::Jobs;
use crate::bus::{Delivery, EventKind};
use crate::clock::now_ms;

/// The active subscriptions, kept in memory: every bus event is matched
/// against them, and reading the table for each would cost a query.
#[derive(Default)]
pub struct Subscriptions(RwLock<Vec<WebhookRow>>);

impl Subscriptions {
    pub fn set(&self, all: Vec<WebhookRow>) {
        if let Ok(mut s) = self.0.write() {
            *s = all.into_iter().filter(|w| w.active).collect();
        }
    }

    /// The subscriptions that want `event`.
    pub fn wanting(&self, event: &str) -> Vec<WebhookRow> {
        self.0
            .read()
            .map(|s| s.iter().filter(|w| w.wants(event)).cloned().collect())
            .unwrap_or_default()
    }

    fn is_empty(&self) -> bool {
        self.0.read().map(|s| s.is_empty()).unwrap_or(true)
    }
}

/// The callback body of a job that ended as `finish` says.
pub fn job_payload(job: &JobRecord, finish: &TurnFinish) -> Value {
    let t = &job.turn;
    let started = t.started_at.unwrap_or(t.created_at);
    json!({
        "jobId": job.job.id,
        "team": job.job.team,
        "sessionId": t.session_id,
        "status": finish.status,
        "result": (finish.status == "completed").then_some(&finish.response),
        "error": finish.error,
        "duration": (finish.completed_at - started).max(0),
        "timestamp": finish.completed_at,
    })
}

/// Where a delivery goes, and for what.
struct Target<'a> {
    webhook_id: Option<String>,
    job_id: Option<String>,
    url: &'a str,
    method: &'a str,
    headers: Vec<(String, String)>,
}

fn delivery(to: Target, event: &str, body: String, max_attempts: i64) -> DeliveryRow {
    let now = now_ms();
    DeliveryRow {
        id: format!("dlv_{}", ulid::Ulid::new()),
        webhook_id: to.webhook_id,
        job_id: to.job_id,
        event: event.to_owned(),
        url: to.url.to_owned(),
        method: to.method.to_owned(),
        headers: to.headers,
        body,
        status: "pending".into(),
        attempts: 0,
        max_attempts,
        next_attempt_at: now,
        last_error: None,
        response_status: None,
        created_at: now,
        delivered_at: None,
    }
}

/// A subscription's delivery of `event` with `data`.
fn subscription_delivery(
    w: &WebhookRow,
    event: &str,
    data: Value,
    max_attempts: i64,
) -> DeliveryRow {
    let body = json!({"event": event, "timestamp": now_ms(), "data": data}).to_string();
    let to = Target {
        webhook_id: Some(w.id.clone()),
        job_id: data.get("jobId").and_then(Value::as_str).map(str::to_owned),
        url: &w.url,
        method: "POST",
        headers: Vec::new(),
    };
    delivery(to, event, body, max_attempts)
}

/// An A2A push notification: `body` (a `StreamResponse`) POSTed to the
/// config's URL with `X-A2A-Notification-Token` and `Authorization` as the
/// client asked.
pub(crate) fn push_delivery(c: &PushConfigRow, body: &Value, max_attempts: i64) -> DeliveryRow {
    let mut headers = Vec::new();
    if let Some(t) = &c.token {
        headers.push(("X-A2A-Notification-Token".to_owned(), t.clone()));
    }
    if let (Some(scheme), Some(cred)) = (&c.auth_scheme, &c.auth_credentials) {
        headers.push(("Authorization".to_owned(), format!("{scheme} {cred}")));
    }
    let to = Target {
        webhook_id: None,
        job_id: None,
        url: &c.url,
        method: "POST",
        headers,
    };
    delivery(to, "a2a.task", body.to_string(), max_attempts)
}

impl Jobs {
    /// The deliveries reporting a job's end: its callback's, and each
    /// subscription's that wants `job.<status>`.
    pub(crate) async fn job_deliveries(
        &self,
        job: &JobRecord,
        finish: &TurnFinish,
    ) -> Vec<DeliveryRow> {
        let max = self.max_attempts;
        let payload = job_payload(job, finish);
        let event = format!("job.{}", finish.status);
        let mut out = Vec::new();
        if let Some(cb) = &job.job.callback {
            let to = Target {
                webhook_id: None,
                job_id: Some(job.job.id.clone()),
                url: &cb.url,
                method: &cb.method,
                headers: cb
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            };
            out.push(delivery(to, &event, payload.to_string(), max));
        }
        for w in self.subscriptions.wanting(&event) {
            out.push(subscription_delivery(&w, &event, payload.clone(), max));
        }
        out
    }

    /// Read the subscriptions again (after one, or an A2A push config,
    /// changed).
    pub(crate) async fn reload_webhooks(&self) -> crate::error::Result<()> {
        let all = self.store.webhooks().await?;
        self.subscriptions.set(all);
        self.pushes
            .store(self.store.any_push_config().await?, Ordering::Relaxed);
        Ok(())
    }

    /// The A2A push notifications of a task's state change: one delivery
    /// per config of the task, with the client's token and credential,
    /// signed like every delivery.
    pub(crate) async fn push_deliveries(&self, event: &crate::bus::Event) -> Vec<DeliveryRow> {
        let (Some(task), Some(body)) = (event.turn_id.as_deref(), crate::a2a::push_of(event))
        else {
            return Vec::new();
        };
        let configs = match self.store.push_configs(task).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(task, error = %e, "reading push configs");
                return Vec::new();
            }
        };
        // A config whose creator may not decide approvals is not told of
        // waits on one (nor of their end): the task stays working to it,
        // as it does through A2A's calls.
        let approval = matches!(
            event.kind,
            EventKind::ApprovalRequested | EventKind::ApprovalResolved
        );
        configs
            .iter()
            .filter(|c| c.sees_approvals || !approval)
            .map(|c| push_delivery(c, &body, self.max_attempts))
            .collect()
    }

    /// Send `body` to one config now (a task that ended before the config
    /// was written).
    pub(crate) async fn push_now(
        &self,
        c: &PushConfigRow,
        body: &Value,
    ) -> crate::error::Result<()> {
        self.store
            .insert_deliveries(&[push_delivery(c, body, self.max_attempts)])
            .await?;
        self.poke();
        Ok(())
    }

    /// Whether any A2A push config exists (see [`Jobs::push_deliveries`]).
    pub(crate) fn has_pushes(&self) -> bool {
        self.pushes.load(Ordering::Relaxed)
    }
}

/// Forward the bus's lifecycle events to the subscriptions that want them.
/// (A burst that overruns the bus drops this subscriber like any other; it
/// subscribes again and the gap is logged.)
pub(super) fn spawn_event_forwarder(jobs: Arc<Jobs>) {
    let weak = Arc::downgrade(&jobs);
    drop(jobs);
    tokio::spawn(async move {
        loop {
            let Some(jobs) = weak.upgrade() else { return };
            let mut sub = jobs.events.subscribe("system");
            drop(jobs);
            while let Some(d) = sub.recv().await {
                let Some(jobs) = weak.upgrade() else { return };
                let event = match d {
                    Delivery::Event(e) => e,
                    Delivery::Dropped { missed } => {
                        tracing::warn!(missed, "webhook events were missed: the bus ran ahead");
                        break;
                    }
                };
                // Another node's event is delivered by that node: once
                // per cluster.
                if event.remote {
                    continue;
                }
                if jobs.has_pushes() {
                    let rows = jobs.push_deliveries(&event).await;
                    if !rows.is_empty() {
                        match jobs.store.insert_deliveries(&rows).await {
                            Ok(()) => jobs.poke(),
                            Err(e) => tracing::warn!(error = %e, "writing push notifications"),
                        }
                    }
                }
                if jobs.subscriptions.is_empty() {
                    continue;
                }
                let Some(name) = event.kind.webhook_name(&event.data) else {
                    continue;
                };
                let wanting = jobs.subscriptions.wanting(&name);
                if wanting.is_empty() {
                    continue;
                }
                let mut data = event.data.clone();
                if let Some(o) = data.as_object_mut() {
                    o.insert("team".into(), json!(event.team));
                    if let Some(s) = &event.session_id {
                        o.insert("sessionId".into(), json!(s));
                    }
                    if let Some(t) = &event.turn_id {
                        o.entry("messageId").or_insert(json!(t));
                    }
                }
                let max = jobs.max_attempts;
                let rows: Vec<DeliveryRow> = wanting
                    .iter()
                    .map(|w| subscription_delivery(w, &name, data.clone(), max))
                    .collect();
                match jobs.store.insert_deliveries(&rows).await {
                    Ok(()) => jobs.poke(),
                    Err(e) => {
                        tracing::warn!(event = %name, error = %e, "writing webhook deliveries")
                    }
                }
            }
        }
    });
}
