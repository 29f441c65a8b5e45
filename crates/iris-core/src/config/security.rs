//! The `auth:` and `audit:` sections, and the auth layer's settings built
//! from them (with `api.rateLimit`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Config;
use iris_auth::Rate;

/// Keys, sessions and passwords.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The `<env>` part of new keys: `iris_sk_<env>_…`.
    pub key_environment: String,
    /// Lifetime of a JWT access token (seconds).
    pub access_token_ttl: u64,
    /// Seconds past its expiry an access token is still accepted (clock
    /// skew between nodes); 0 by default.
    pub token_leeway: u64,
    /// Lifetime of a refresh token (seconds).
    pub refresh_token_ttl: u64,
    /// Failed logins in a row before the account is locked.
    pub max_failed_logins: u32,
    /// How long a lock lasts (seconds).
    pub lockout_seconds: u64,
    pub password_min_length: usize,
    /// How long a rotated key keeps working (seconds).
    pub rotation_grace: u64,
    /// Who may create an account with `POST /auth/register`: `closed`
    /// (nobody), `approval` (disabled until an admin enables it), `open`.
    pub registration: iris_auth::Registration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            key_environment: "live".into(),
            access_token_ttl: 900,
            token_leeway: 0,
            refresh_token_ttl: 30 * 86_400,
            max_failed_logins: 5,
            lockout_seconds: 900,
            password_min_length: 12,
            rotation_grace: 86_400,
            registration: iris_auth::Registration::Closed,
        }
    }
}

/// The audit trail.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AuditConfig {
    pub enabled: bool,
    /// Records older than this are pruned at start-up (0 keeps them all).
    pub retention_days: u32,
    /// Store the text of messages sent to teams (otherwise size and SHA-256).
    pub include_message_text: bool,
    /// A key's successful authentications are recorded at most once per
    /// this many seconds per key, with the count since the last record.
    pub key_use_interval: u64,
    /// The witness file of the trail's ends, outside the database
    /// (default: `audit-witness.json` beside the database file).
    pub witness: Option<String>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            retention_days: 90,
            include_message_text: false,
            key_use_interval: 60,
            witness: None,
        }
    }
}

impl Config {
    /// The audit trail's witness file: `audit.witness` (relative to the
    /// config file's folder), else `audit-witness.json` beside the SQLite
    /// database (on Postgres, `$IRIS_HOME/data/audit-witness-<host_port_db>.json`).
    pub fn audit_witness_path(&self) -> std::path::PathBuf {
        match &self.audit.witness {
            Some(p) => self.base.join(p),
            None => match self.database_file() {
                Some(db) => db
                    .parent()
                    .map(|d| d.join("audit-witness.json"))
                    .unwrap_or_else(|| self.home.join("audit-witness.json")),
                // On Postgres: in this node's home (each node keeps its own
                // witness of the one chain), named after the database so
                // that another database's chain has a witness of its own.
                None => {
                    let url = self.database_settings().url;
                    let place = iris_storage::postgres_place(&url).unwrap_or_default();
                    let name: String = place
                        .chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() || c == '-' {
                                c
                            } else {
                                '_'
                            }
                        })
                        .collect();
                    self.home
                        .join("data")
                        .join(format!("audit-witness-{name}.json"))
                }
            },
        }
    }

    /// What the auth layer runs with.
    pub fn auth_settings(&self) -> iris_auth::Settings {
        let rl = &self.api.rate_limit;
        let per_window = u32::try_from(rl.max_requests.max(1)).unwrap_or(u32::MAX);
        iris_auth::Settings {
            key_environment: self.auth.key_environment.clone(),
            rate_limits: rl.enabled,
            default_rate: Rate {
                count: per_window,
                window: Duration::from_millis(rl.window_ms.max(1)),
            },
            per_ip_rate: rl.per_ip,
            message_rate: rl.messages,
            login_rate: rl.login,
            access_ttl: Duration::from_secs(self.auth.access_token_ttl.max(1)),
            token_leeway: Duration::from_secs(self.auth.token_leeway),
            refresh_ttl: Duration::from_secs(self.auth.refresh_token_ttl.max(1)),
            max_failed_logins: i64::from(self.auth.max_failed_logins.max(1)),
            lockout: Duration::from_secs(self.auth.lockout_seconds),
            password_min_length: self.auth.password_min_length.max(8),
            rotation_grace: Duration::from_secs(self.auth.rotation_grace),
            audit: self.audit.enabled,
            audit_retention_days: self.audit.retention_days,
            audit_message_text: self.audit.include_message_text,
            key_use_audit_interval: Duration::from_secs(self.audit.key_use_interval),
            audit_witness: Some(self.audit_witness_path()),
        }
    }
}
