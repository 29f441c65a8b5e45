//! [`Auth`]: the key and user caches (so verifying a credential never
//! queries the database), the rate limits, the JWT secret and the audit
//! writer. Keys, users, sign-ins and standing add their methods in their
//! own modules.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use iris_cluster::{Heard, Link};
use iris_storage::{KeyRow, Store, UserRow};

use crate::agents;
use crate::audit::{AuditEvent, Auditor, Origin, Outcome, Severity, now_ms};
use crate::error::{AuthError, Result};
use crate::jwt::Jwt;
use crate::key_format::{KEY_PREFIX, prefix_of, well_formed};
use crate::limits::{ClusterLimits, Limits, LocalLimits};
use crate::principal::{Principal, PrincipalKind};
use crate::rate::{Decision, IdentityLimits, Rate};
use crate::scope;
use crate::secret;
use crate::settings::Settings;
use crate::witness;

/// A cached API key.
pub(crate) struct KeyEntry {
    pub(crate) principal: Arc<Principal>,
    /// SHA-256 of the key (the database keeps it as hex).
    pub(crate) hash: [u8; 32],
    pub(crate) expires_at: Option<i64>,
    pub(crate) revoked_at: Option<i64>,
    rotated: bool,
    uses: AtomicI64,
    last_used: AtomicI64,
    /// Uses already counted in the database / in the audit trail.
    last_audit: AtomicI64,
    unaudited: AtomicI64,
}

/// A cached user: what a JWT is checked against.
pub(crate) struct UserEntry {
    pub(crate) principal: Arc<Principal>,
    pub(crate) active: bool,
    pub(crate) token_version: i64,
}

#[derive(Default)]
pub(crate) struct Caches {
    pub(crate) keys: HashMap<[u8; 32], Arc<KeyEntry>>,
    pub(crate) users: HashMap<String, Arc<UserEntry>>,
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
    pub(crate) store: Store,
    pub settings: Settings,
    pub(crate) caches: RwLock<Caches>,
    pub(crate) jwt: Jwt,
    /// Every rate limit (see [`Limits`]).
    limits: Box<dyn Limits>,
    /// The anonymous caller when `requireAuth` is off, with its limits;
    /// one shared value (it was built afresh for every request).
    open: Arc<Principal>,
    pub audit: Auditor,
    revision: AtomicI64,
    reloading: tokio::sync::Mutex<()>,
    /// The credentials of the agents Iris runs (memory only).
    pub agents: agents::Agents,
    /// Ticks when a credential may have ended or changed (`standing`).
    pub(crate) changes: Arc<tokio::sync::watch::Sender<u64>>,
    /// The cluster's link: changes are announced to the other nodes, and
    /// theirs heard at once (the database poll stays as the fallback).
    link: Option<Arc<Link>>,
}

/// What a node tells the others when keys, users or sign-ins changed.
pub const AUTH_NOTICE: &str = "auth";

impl Auth {
    /// Load keys and users, start the audit writer and the background work
    /// (usage counts, cache reloads when another process changed keys or
    /// users, audit retention). Needs a Tokio runtime.
    pub async fn start(store: Store, settings: Settings) -> Result<Arc<Auth>> {
        Self::start_linked(store, settings, None).await
    }

    /// [`Auth::start`] as a node of a cluster: rate limits decided for
    /// the cluster in Redis, changes told to and heard from the other
    /// nodes through `link`.
    pub async fn start_linked(
        store: Store,
        settings: Settings,
        link: Option<Arc<Link>>,
    ) -> Result<Arc<Auth>> {
        let secret = store
            .meta_init("jwt_secret", &hex::encode(secret::random_bytes::<32>()?))
            .await?;
        let changes = Arc::new(tokio::sync::watch::Sender::new(0));
        let auth = Arc::new(Auth {
            jwt: Jwt::new(&secret, settings.token_leeway)?,
            limits: match &link {
                Some(link) => Box::new(ClusterLimits::new(
                    link.clone(),
                    settings.rate_limits,
                    settings.per_ip_rate,
                    settings.login_rate,
                )),
                None => Box::new(LocalLimits::new(
                    settings.rate_limits,
                    settings.per_ip_rate,
                    settings.login_rate,
                )),
            },
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
            link,
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
        if let Some(link) = &self.link {
            // The receivers only: a task holding the link would keep it
            // (and its connections) alive after the last `Auth` is gone.
            tokio::spawn(hear_notices(weak.clone(), link.notices()));
        }
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            let mut n: u64 = 0;
            loop {
                tick.tick().await;
                let Some(auth) = weak.upgrade() else { break };
                n += 1;
                // Other nodes' changes: told at once while the cluster's
                // link is up, so the database is asked only every second
                // then (changes made without a server); every 250 ms
                // without one (the fallback).
                let told = auth.link.as_ref().is_some_and(|l| l.state().up);
                if (!told || n.is_multiple_of(4))
                    && let Err(e) = auth.reload_if_changed().await
                {
                    tracing::warn!(error = %e, "cannot check for key and user changes");
                }
                if n.is_multiple_of(20) {
                    auth.flush_usage().await;
                    auth.limits.sweep();
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
    pub(crate) async fn reload_if_changed(&self) -> Result<()> {
        let rev = self.store.auth_revision().await?;
        if rev != self.revision.load(Ordering::Acquire) {
            self.reload().await?;
        }
        Ok(())
    }

    /// Mark keys or users changed (for other processes) and reload our caches.
    pub(crate) async fn changed(&self) -> Result<()> {
        self.store.bump_auth_revision().await?;
        self.reload().await?;
        if let Some(link) = &self.link {
            link.notice(serde_json::json!({"what": AUTH_NOTICE}));
        }
        Ok(())
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

    /// The cached entry of `key` if it is usable now (`unknown`: what to
    /// say when no key matches).
    pub(crate) fn live_key(&self, key: &str, unknown: &'static str) -> Result<Arc<KeyEntry>> {
        if !well_formed(key) {
            return Err(AuthError::unauthorized("malformed API key"));
        }
        let hash = secret::sha256(key);
        let entry = {
            let caches = self.caches.read().unwrap_or_else(|p| p.into_inner());
            caches.keys.get(&hash).cloned()
        };
        // The map lookup is by hash; the comparison is constant-time anyway.
        let Some(entry) = entry.filter(|e| secret::same_bytes(&e.hash, &hash)) else {
            return Err(AuthError::unauthorized(unknown));
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
        Ok(entry)
    }

    pub(crate) fn authenticate_key(&self, key: &str, origin: &Origin) -> Result<Arc<Principal>> {
        let entry = self.live_key(key, "invalid API key")?;
        let now = now_ms();
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
    pub async fn limit_identity(&self, principal: &Principal) -> Option<Decision> {
        self.limits.request(principal).await
    }

    /// Count a message-sending operation against `principal`'s bucket.
    pub async fn limit_messages(&self, principal: &Principal) -> Option<Decision> {
        self.limits.message(principal).await
    }

    /// Count an unauthenticated request (or a failed authentication) from `ip`.
    pub async fn limit_ip(&self, ip: IpAddr) -> Option<Decision> {
        self.limits.address(ip).await
    }

    /// Count a login attempt from `ip`.
    pub async fn limit_login(&self, ip: Option<IpAddr>) -> Option<Decision> {
        match ip {
            Some(ip) => self.limits.login(ip).await,
            None => None,
        }
    }
}

/// Reload at once when another node says keys, users or sign-ins changed,
/// or when the link comes back (what was said meanwhile is lost).
async fn hear_notices(weak: std::sync::Weak<Auth>, mut notices: iris_cluster::Notices) {
    while let Some(heard) = notices.next().await {
        let reload = match heard {
            Heard::Notice(body) => body["what"] == AUTH_NOTICE,
            Heard::Resync => true,
        };
        let Some(auth) = weak.upgrade() else { return };
        if reload && let Err(e) = auth.reload_if_changed().await {
            tracing::warn!(error = %e, "cannot reload keys and users another node changed");
        }
    }
}

/// What of a rejected credential is safe to record: a key's public prefix,
/// never the rest.
pub(crate) fn credential_hint(credential: &str) -> String {
    if credential.starts_with(KEY_PREFIX) && well_formed(credential) {
        format!("key:{}", prefix_of(credential))
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
        let store = iris_storage::testing::store_in(dir.path()).await;
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
            crate::users::NewUser {
                username: "ann".into(),
                password: "Correct-Horse-42".into(),
                email: Some("ann@example.com".into()),
                roles: vec!["operator".into()],
                ..Default::default()
            },
            &Principal::local(),
            &Origin::default(),
        )
        .await
        .unwrap();
        (a, d)
    }

    pub fn login(l: &str, p: &str) -> crate::session::Login {
        crate::session::Login {
            login: l.into(),
            password: p.into(),
            mfa_code: None,
        }
    }
}
