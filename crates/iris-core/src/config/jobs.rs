//! The `jobs:`, `webhooks:` and `history:` sections.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Jobs (`execute`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct JobsConfig {
    /// A job that was running when Iris stopped without finishing it: run
    /// it again after the restart (true), or end it `failed` with the
    /// reason `interrupted` (false, the default: a task may not be safe to
    /// run twice).
    pub retry_interrupted: bool,
    /// Runs of one job at most, when interrupted ones are run again.
    pub max_attempts: i64,
    /// Jobs of one team running at once (each in its caller's conversation).
    pub concurrency_per_team: usize,
    /// Jobs waiting in all before `execute` answers `QUEUE_FULL`.
    pub max_queued: usize,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            retry_interrupted: false,
            max_attempts: 3,
            concurrency_per_team: 1,
            max_queued: 100_000,
        }
    }
}

/// Outbound webhooks (job callbacks and subscriptions).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Signs deliveries without a secret of their own. Empty: one is
    /// generated at first start and kept in the database.
    pub signing_secret: String,
    /// Hosts that may be called although they resolve to loopback,
    /// private or link-local addresses (names or IP literals).
    pub allow_hosts: Vec<String>,
    /// Connect timeout (ms).
    pub connect_timeout: u64,
    /// Limit of one attempt, connect to last byte (ms).
    pub timeout: u64,
    /// Bytes of a receiver's answer read at most.
    pub max_response_bytes: usize,
    /// Attempts per delivery.
    pub max_attempts: i64,
    /// Wait before the first retry (ms); doubled each time, with jitter.
    pub retry_base: u64,
    /// Longest wait between attempts (ms).
    pub retry_max: u64,
    /// Attempts in flight at once.
    pub concurrency: usize,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            signing_secret: String::new(),
            allow_hosts: Vec::new(),
            connect_timeout: 5_000,
            timeout: 15_000,
            max_response_bytes: 64 * 1024,
            max_attempts: 8,
            retry_base: 2_000,
            retry_max: 600_000,
            concurrency: 32,
        }
    }
}

impl WebhooksConfig {
    /// The deliverer's options, with the secret in force.
    pub fn delivery_options(&self, signing_secret: String) -> iris_webhooks::DeliveryOptions {
        iris_webhooks::DeliveryOptions {
            allow_hosts: self.allow_hosts.clone(),
            connect_timeout: Duration::from_millis(self.connect_timeout),
            timeout: Duration::from_millis(self.timeout),
            max_response_bytes: self.max_response_bytes,
            retry_base: Duration::from_millis(self.retry_base),
            retry_max: Duration::from_millis(self.retry_max),
            max_attempts: self.max_attempts.max(1),
            concurrency: self.concurrency.max(1),
            signing_secret,
        }
    }
}

/// The message history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Ended messages (and webhook deliveries) older than this are pruned,
    /// at start and then hourly; 0 keeps them all.
    pub retain_days: u32,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig { retain_days: 90 }
    }
}
