//! Who may do what in Iris (DESIGN section 7).
//!
//! [`Auth`] holds the key and user caches (so verifying a credential never
//! queries the database), the rate-limit buckets, the JWT secret and the
//! audit writer. Every transport authenticates through [`Auth::authenticate`];
//! scopes are checked once, in the core's dispatch.

pub mod agents;
pub mod audit;
pub mod error;
mod keys;
mod mfa;
pub mod principal;
pub mod rate;
pub mod scope;
pub mod secret;
mod session;
mod signins;
pub mod standing;
mod users;
pub mod witness;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use iris_storage::{KeyRow, Store, UserRow};

pub use audit::{AuditEvent, Auditor, Origin, Outcome, Severity, now_ms};
pub use error::{AuthError, Result};
pub use keys::{KeyInfo, NewKey};
pub use principal::{Principal, PrincipalKind};
pub use rate::{Decision, IdentityLimits, Rate, parse_duration};
pub use session::{Login, Tokens};
pub use signins::{Registration, SignUp};
pub use standing::Standing;
pub use users::{NewUser, UserInfo, UserUpdate};

/// The prefix of every API key.
pub const KEY_PREFIX: &str = "iris_sk_";

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

/// A cached API key.
struct KeyEntry {
    principal: Arc<Principal>,
    /// SHA-256 of the key (the database keeps it as hex).
    hash: [u8; 32],
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    rotated: bool,
    uses: AtomicI64,
    last_used: AtomicI64,
    /// Uses already counted in the database / in the audit trail.
    last_audit: AtomicI64,
    unaudited: AtomicI64,
}

/// A cached user: what a JWT is checked against.
struct UserEntry {
    principal: Arc<Principal>,
    active: bool,
    token_version: i64,
}

#[derive(Default)]
struct Caches {
    keys: HashMap<[u8; 32], Arc<KeyEntry>>,
    users: HashMap<String, Arc<UserEntry>>,
    /// Buckets by identity id, kept across reloads.
    limits: HashMap<String, Arc<IdentityLimits>>,
}

impl Caches {
    /// Carry `p`'s buckets into the next reload.
    fn keep_limits(&mut self, p: &Principal) {
        if let Some(l) = &p.limits {
            self.limits.insert(p.id.clone(), l.clone());
        }
    }
}

pub struct Auth {
    store: Store,
    pub settings: Settings,
    caches: RwLock<Caches>,
    jwt: session::Jwt,
    per_ip: rate::PerIp,
    login_per_ip: rate::PerIp,
    /// The anonymous caller when `requireAuth` is off, with its limits;
    /// one shared value (it was built afresh for every request).
    open: Arc<Principal>,
    pub audit: Auditor,
    revision: AtomicI64,
    reloading: tokio::sync::Mutex<()>,
    /// The credentials of the agents Iris runs (memory only).
    pub agents: agents::Agents,
    /// Ticks when a credential may have ended or changed (`standing`).
    changes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Auth {
    /// Load keys and users, start the audit writer and the background work
    /// (usage counts, cache reloads when another process changed keys or
    /// users, audit retention). Needs a Tokio runtime.
    pub async fn start(store: Store, settings: Settings) -> Result<Arc<Auth>> {
        let secret = store
            .meta_init("jwt_secret", &hex::encode(secret::random_bytes::<32>()?))
            .await?;
        let changes = Arc::new(tokio::sync::watch::Sender::new(0));
        let auth = Arc::new(Auth {
            jwt: session::Jwt::new(&secret, settings.token_leeway)?,
            per_ip: rate::PerIp::new(settings.per_ip_rate),
            login_per_ip: rate::PerIp::new(settings.login_rate),
            open: Arc::new(Principal::open(Some(Arc::new(IdentityLimits::new(
                settings.default_rate,
                settings.message_rate,
            ))))),
            audit: Auditor::start(
                store.clone(),
                settings.audit,
                settings.audit_witness.clone(),
            ),
            store,
            settings,
            caches: RwLock::default(),
            revision: AtomicI64::new(-1),
            reloading: tokio::sync::Mutex::new(()),
            agents: agents::Agents::telling(changes.clone()),
            changes,
        });
        auth.reload().await?;
        if let Some(path) = auth
            .settings
            .audit_witness
            .as_ref()
            .filter(|_| auth.settings.audit)
            && let Some((theirs, kept)) = witness::ensure(&auth.store, path).await
        {
            auth.audit.record(
                AuditEvent::new("audit.witness_replaced", Outcome::Failure)
                    .claimed("iris")
                    .severity(Severity::Critical)
                    .details(serde_json::json!({
                        "previousChain": theirs,
                        "keptAt": kept.display().to_string(),
                    })),
            );
        }
        auth.prune_audit().await?;
        Ok(auth)
    }

    /// The audit witness as its file says (`Ok(None)`: no file, or none kept).
    ///
    /// # Errors
    /// Why the file cannot be read.
    pub fn audit_witness(&self) -> std::result::Result<Option<iris_storage::AuditWitness>, String> {
        match &self.settings.audit_witness {
            Some(path) => witness::read(path),
            None => Ok(None),
        }
    }

    /// Drop audit records older than the retention (none when it is 0).
    async fn prune_audit(&self) -> Result<()> {
        if self.settings.audit && self.settings.audit_retention_days > 0 {
            let before = now_ms() - i64::from(self.settings.audit_retention_days) * 86_400_000;
            let pruned = self.store.prune_audit(before).await?;
            if pruned > 0 {
                tracing::info!(pruned, "audit records past their retention removed");
                if let Some(path) = &self.settings.audit_witness {
                    witness::write(&self.store, path).await;
                }
            }
        }
        Ok(())
    }

    /// Background upkeep; stops when the last `Arc<Auth>` is gone.
    pub fn spawn_upkeep(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            let mut n: u64 = 0;
            loop {
                tick.tick().await;
                let Some(auth) = weak.upgrade() else { break };
                n += 1;
                if let Err(e) = auth.reload_if_changed().await {
                    tracing::warn!(error = %e, "cannot check for key and user changes");
                }
                if n.is_multiple_of(20) {
                    auth.flush_usage().await;
                    auth.per_ip.sweep();
                    auth.login_per_ip.sweep();
                }
                // Hourly: retention also holds for a server that runs for months.
                if n.is_multiple_of(4 * 3600)
                    && let Err(e) = auth.prune_audit().await
                {
                    tracing::warn!(error = %e, "cannot prune the audit trail");
                }
            }
        });
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Write counters and pending audit records (at shutdown, before reads).
    pub async fn flush(&self) {
        self.flush_usage().await;
        self.audit.flush().await;
    }

    /// Reload the caches when another process (`iris key revoke` without a
    /// server, a second server) changed keys or users.
    async fn reload_if_changed(&self) -> Result<()> {
        let rev = self.store.auth_revision().await?;
        if rev != self.revision.load(Ordering::Acquire) {
            self.reload().await?;
        }
        Ok(())
    }

    /// Mark keys or users changed (for other processes) and reload our caches.
    async fn changed(&self) -> Result<()> {
        self.store.bump_auth_revision().await?;
        self.reload().await
    }

    async fn reload(&self) -> Result<()> {
        // One reload at a time, so an older snapshot never replaces a newer one.
        let _one = self.reloading.lock().await;
        let rev = self.store.auth_revision().await?;
        let keys = self.store.keys().await?;
        let users = self.store.users().await?;
        // Sign-ins another process ended since this one's tokens could
        // have been issued: refused here too.
        let window = self.settings.access_ttl.as_millis() as i64 + 10_000;
        let ended = self.store.families_revoked_since(now_ms() - window).await?;
        self.flush_usage().await;
        let mut caches = self.caches.write().unwrap_or_else(|p| p.into_inner());
        // Buckets of identities that no longer exist are left behind in `old`.
        let mut old = std::mem::take(&mut caches.limits);
        let mut fresh = Caches::default();
        for k in keys {
            let Some(entry) = self.key_entry(k, &mut old) else {
                continue;
            };
            let entry = Arc::new(entry);
            fresh.keep_limits(&entry.principal);
            fresh.keys.insert(entry.hash, entry);
        }
        for u in users {
            let entry = Arc::new(self.user_entry(u, &mut old));
            fresh.keep_limits(&entry.principal);
            fresh.users.insert(entry.principal.id.clone(), entry);
        }
        *caches = fresh;
        drop(caches);
        for (family, at) in ended {
            self.jwt.end(&family, at + window);
        }
        self.revision.store(rev, Ordering::Release);
        self.announce();
        Ok(())
    }

    /// The buckets of identity `id` carried over from the last reload (taken
    /// out of `old`), or new ones when it is new or its rate changed.
    fn limits_for(
        &self,
        id: &str,
        rate: Rate,
        old: &mut HashMap<String, Arc<IdentityLimits>>,
    ) -> Arc<IdentityLimits> {
        match old.remove(id) {
            Some(l) if l.requests.rate() == rate => l,
            _ => Arc::new(IdentityLimits::new(rate, self.settings.message_rate)),
        }
    }

    /// `None` (and a warning) for a row whose hash is not a SHA-256 in hex:
    /// no key can match it.
    fn key_entry(
        &self,
        k: KeyRow,
        limits: &mut HashMap<String, Arc<IdentityLimits>>,
    ) -> Option<KeyEntry> {
        let mut hash = [0u8; 32];
        if hex::decode_to_slice(&k.hash, &mut hash).is_err() {
            tracing::warn!(key = %k.id, "API key row with a malformed hash; ignored");
            return None;
        }
        let rate = k
            .rate_limit
            .as_deref()
            .and_then(|r| r.parse().ok())
            .unwrap_or(self.settings.default_rate);
        let principal = Principal {
            kind: PrincipalKind::Key,
            id: k.id.clone(),
            name: k.name.clone(),
            scopes: serde_json::from_str(&k.scopes).unwrap_or_default(),
            teams: k
                .teams
                .as_deref()
                .and_then(|t| serde_json::from_str(t).ok()),
            limits: Some(self.limits_for(&k.id, rate, limits)),
        };
        Some(KeyEntry {
            principal: Arc::new(principal),
            hash,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
            rotated: k.rotated_to.is_some(),
            uses: AtomicI64::new(0),
            last_used: AtomicI64::new(0),
            last_audit: AtomicI64::new(0),
            unaudited: AtomicI64::new(0),
        })
    }

    fn user_entry(
        &self,
        u: UserRow,
        limits: &mut HashMap<String, Arc<IdentityLimits>>,
    ) -> UserEntry {
        let roles: Vec<String> = serde_json::from_str(&u.roles).unwrap_or_default();
        let extra: Vec<String> = serde_json::from_str(&u.scopes).unwrap_or_default();
        let principal = Principal {
            kind: PrincipalKind::User,
            id: u.id.clone(),
            name: u.username.clone(),
            scopes: scope::resolve(&roles, &extra).unwrap_or_default(),
            teams: u
                .teams
                .as_deref()
                .and_then(|t| serde_json::from_str(t).ok()),
            limits: Some(self.limits_for(&u.id, self.settings.default_rate, limits)),
        };
        UserEntry {
            principal: Arc::new(principal),
            active: u.status == "active",
            token_version: u.token_version,
        }
    }

    /// Add the uses counted in memory to the database.
    async fn flush_usage(&self) {
        let uses: Vec<(String, i64, i64)> = {
            let caches = self.caches.read().unwrap_or_else(|p| p.into_inner());
            caches
                .keys
                .values()
                .filter_map(|k| {
                    let n = k.uses.swap(0, Ordering::AcqRel);
                    (n > 0).then(|| {
                        (
                            k.principal.id.clone(),
                            n,
                            k.last_used.load(Ordering::Acquire),
                        )
                    })
                })
                .collect()
        };
        if !uses.is_empty()
            && let Err(e) = self.store.add_key_usage(&uses).await
        {
            tracing::warn!(error = %e, "cannot record key usage");
        }
    }

    /// Who presents `credential` (an API key or an access token). Failures
    /// are audited here; successes of keys are audited at most once per
    /// `key_use_audit_interval` per key (with the count since the last).
    pub fn authenticate(&self, credential: &str, origin: &Origin) -> Result<Arc<Principal>> {
        let result = if credential.starts_with(KEY_PREFIX) {
            self.authenticate_key(credential, origin)
        } else if credential.starts_with(agents::AGENT_PREFIX) {
            self.agents.authenticate(credential)
        } else if credential.split('.').count() == 3 {
            self.authenticate_token(credential)
        } else {
            Err(AuthError::unauthorized(
                "malformed credential: expected an API key (iris_sk_…) or an access token",
            ))
        };
        if let Err(e) = &result {
            self.audit.record(
                AuditEvent::new("auth.failure", Outcome::Failure)
                    .claimed(credential_hint(credential))
                    .from(origin)
                    .details(serde_json::json!({"reason": e.to_string()})),
            );
        }
        result
    }

    fn authenticate_key(&self, key: &str, origin: &Origin) -> Result<Arc<Principal>> {
        if !keys::well_formed(key) {
            return Err(AuthError::unauthorized("malformed API key"));
        }
        let hash = secret::sha256(key);
        let entry = {
            let caches = self.caches.read().unwrap_or_else(|p| p.into_inner());
            caches.keys.get(&hash).cloned()
        };
        // The map lookup is by hash; the comparison is constant-time anyway.
        let Some(entry) = entry.filter(|e| secret::same_bytes(&e.hash, &hash)) else {
            return Err(AuthError::unauthorized("invalid API key"));
        };
        let now = now_ms();
        if entry.revoked_at.is_some_and(|t| t <= now) {
            return Err(AuthError::unauthorized("API key revoked"));
        }
        if entry.expires_at.is_some_and(|t| t <= now) {
            return Err(AuthError::unauthorized(if entry.rotated {
                "API key rotated; its grace period is over"
            } else {
                "API key expired"
            }));
        }
        entry.uses.fetch_add(1, Ordering::AcqRel);
        // To the second: a write per request to a value every core reads
        // would move its cache line between cores on every request.
        if now - entry.last_used.load(Ordering::Acquire) >= 1000 {
            entry.last_used.store(now, Ordering::Release);
        }
        let unaudited = entry.unaudited.fetch_add(1, Ordering::AcqRel) + 1;
        let last = entry.last_audit.load(Ordering::Acquire);
        let every = self.settings.key_use_audit_interval.as_millis() as i64;
        if now - last >= every
            && entry
                .last_audit
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            entry.unaudited.fetch_sub(unaudited, Ordering::AcqRel);
            self.audit.record(
                AuditEvent::new("auth.success", Outcome::Success)
                    .by(&entry.principal)
                    .from(origin)
                    .details(serde_json::json!({"method": "api_key", "requests": unaudited})),
            );
        }
        Ok(entry.principal.clone())
    }

    /// The caller of a server with `requireAuth: false` who sent no credential.
    pub fn open_principal(&self) -> Arc<Principal> {
        self.open.clone()
    }

    /// Count a request against `principal`'s bucket (None: not limited).
    pub fn limit_identity(&self, principal: &Principal) -> Option<Decision> {
        if !self.settings.rate_limits {
            return None;
        }
        principal.limits.as_ref().map(|l| l.requests.check())
    }

    /// Count a message-sending operation against `principal`'s bucket.
    pub fn limit_messages(&self, principal: &Principal) -> Option<Decision> {
        if !self.settings.rate_limits {
            return None;
        }
        principal.limits.as_ref().map(|l| l.messages.check())
    }

    /// Count an unauthenticated request (or a failed authentication) from `ip`.
    pub fn limit_ip(&self, ip: IpAddr) -> Option<Decision> {
        self.settings.rate_limits.then(|| self.per_ip.check(ip))
    }

    /// Count a login attempt from `ip`.
    pub fn limit_login(&self, ip: Option<IpAddr>) -> Option<Decision> {
        match ip {
            Some(ip) if self.settings.rate_limits => Some(self.login_per_ip.check(ip)),
            _ => None,
        }
    }
}

/// What of a rejected credential is safe to record: a key's public prefix,
/// never the rest.
fn credential_hint(credential: &str) -> String {
    if credential.starts_with(KEY_PREFIX) && keys::well_formed(credential) {
        format!("key:{}", keys::prefix_of(credential))
    } else if credential.starts_with(KEY_PREFIX) {
        "key:malformed".into()
    } else {
        "token".into()
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use super::*;

    pub async fn auth() -> (Arc<Auth>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("iris.db"))
            .await
            .expect("store");
        let settings = Settings {
            key_use_audit_interval: Duration::ZERO,
            ..Settings::default()
        };
        (Auth::start(store, settings).await.expect("auth"), dir)
    }

    /// With a user `ann` (operator) whose password is `Correct-Horse-42`.
    pub async fn with_user() -> (Arc<Auth>, tempfile::TempDir) {
        let (a, d) = auth().await;
        a.create_user(
            crate::NewUser {
                username: "ann".into(),
                password: "Correct-Horse-42".into(),
                email: Some("ann@example.com".into()),
                roles: vec!["operator".into()],
                ..Default::default()
            },
            &crate::Principal::local(),
            &crate::Origin::default(),
        )
        .await
        .unwrap();
        (a, d)
    }

    pub fn login(l: &str, p: &str) -> crate::Login {
        crate::Login {
            login: l.into(),
            password: p.into(),
            mfa_code: None,
        }
    }
}
