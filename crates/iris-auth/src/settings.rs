//! How the auth layer behaves, from the configuration.

use std::time::Duration;

use crate::rate::Rate;

/// How the auth layer behaves (from the configuration).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `<env>` of new keys (`iris_sk_<env>_…`).
    pub key_environment: String,
    pub rate_limits: bool,
    /// Requests per identity, unless a key has its own.
    pub default_rate: Rate,
    /// Requests per client address before authentication.
    pub per_ip_rate: Rate,
    /// Message-sending operations per identity.
    pub message_rate: Rate,
    /// Login attempts per client address.
    pub login_rate: Rate,
    pub access_ttl: Duration,
    /// How long past its `exp` an access token is still accepted, for
    /// clocks of several nodes that disagree (RFC 7519 section 4.1.4
    /// allows "some small leeway"). Zero by default: one process signs and
    /// checks with one clock.
    pub token_leeway: Duration,
    pub refresh_ttl: Duration,
    pub max_failed_logins: i64,
    pub lockout: Duration,
    pub password_min_length: usize,
    /// How long a rotated key keeps working.
    pub rotation_grace: Duration,
    pub audit: bool,
    pub audit_retention_days: u32,
    /// Record the text of messages sent to teams (only size and hash otherwise).
    pub audit_message_text: bool,
    /// A key's successful uses are audited at most this often (per key).
    pub key_use_audit_interval: Duration,
    /// The audit trail's witness file (`witness`); `None`: none kept.
    pub audit_witness: Option<std::path::PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            key_environment: "live".into(),
            rate_limits: true,
            default_rate: Rate::new(600, 60),
            per_ip_rate: Rate::new(1200, 60),
            message_rate: Rate::new(60, 60),
            login_rate: Rate::new(10, 60),
            access_ttl: Duration::from_secs(900),
            token_leeway: Duration::ZERO,
            refresh_ttl: Duration::from_secs(30 * 86_400),
            max_failed_logins: 5,
            lockout: Duration::from_secs(900),
            password_min_length: 12,
            rotation_grace: Duration::from_secs(86_400),
            audit: true,
            audit_retention_days: 90,
            audit_message_text: false,
            key_use_audit_interval: Duration::from_secs(60),
            audit_witness: None,
        }
    }
}
