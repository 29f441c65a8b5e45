//! API keys: `iris_sk_<env>_<43 base62 characters>` (≈256 random bits).
//! Only the SHA-256 is stored; the key is returned once, at creation.

use std::time::Duration;

use iris_storage::KeyRow;
use serde::Serialize;
use serde_json::json;

use crate::audit::{AuditEvent, Origin, Outcome, now_ms};
use crate::auth::Auth;
use crate::error::{AuthError, Result};
use crate::key_format::{KEY_PREFIX, prefix_of, valid_env};
use crate::principal::Principal;
use crate::rate::Rate;
use crate::{scope, secret};

/// What to create.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    pub name: String,
    pub scopes: Vec<String>,
    pub role: Option<String>,
    /// Teams the key is limited to (checked to exist by the caller).
    pub teams: Option<Vec<String>>,
    pub expires_in: Option<Duration>,
    pub rate_limit: Option<Rate>,
}

impl NewKey {
    /// A key named `name` with the scopes of `role`, nothing else set.
    pub fn with_role(name: &str, role: &str) -> Self {
        NewKey {
            name: name.into(),
            role: Some(role.into()),
            ..Default::default()
        }
    }
}

/// A key as listings show it (never the key itself).
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyInfo {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<String>,
    pub teams: Option<Vec<String>>,
    pub rate_limit: Option<String>,
    /// active | expired | revoked | rotated
    pub status: &'static str,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub usage_count: i64,
    pub rotated_to: Option<String>,
}

impl KeyInfo {
    fn of(k: &KeyRow, now: i64) -> Self {
        let status = if k.revoked_at.is_some_and(|t| t <= now) {
            "revoked"
        } else if k.expires_at.is_some_and(|t| t <= now) {
            if k.rotated_to.is_some() {
                "rotated"
            } else {
                "expired"
            }
        } else {
            "active"
        };
        KeyInfo {
            id: k.id.clone(),
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            scopes: serde_json::from_str(&k.scopes).unwrap_or_default(),
            teams: k
                .teams
                .as_deref()
                .and_then(|t| serde_json::from_str(t).ok()),
            rate_limit: k.rate_limit.clone(),
            status,
            created_at: k.created_at,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
            last_used_at: k.last_used_at,
            usage_count: k.usage_count,
            rotated_to: k.rotated_to.clone(),
        }
    }
}

impl Auth {
    fn new_row(
        &self,
        name: &str,
        scopes: &[String],
        k: &NewKey,
        now: i64,
    ) -> Result<(String, KeyRow)> {
        let env = &self.settings.key_environment;
        if !valid_env(env) {
            return Err(AuthError::invalid(
                "auth.keyEnvironment",
                "1 to 16 lowercase letters or digits",
            ));
        }
        let key = format!("{KEY_PREFIX}{env}_{}", secret::random_token()?);
        let row = KeyRow {
            id: format!("key_{}", ulid::Ulid::new()),
            name: name.to_owned(),
            prefix: prefix_of(&key).to_owned(),
            hash: secret::sha256_hex(&key),
            scopes: serde_json::to_string(scopes).unwrap_or_else(|_| "[]".into()),
            teams: k
                .teams
                .as_ref()
                .map(|t| serde_json::to_string(t).unwrap_or_else(|_| "[]".into())),
            rate_limit: k.rate_limit.map(|r| r.to_string()),
            created_at: now,
            // (Saturating: a duration is parsed to at most 100 years, and
            // one given in code must not wrap into the past either.)
            expires_at: k
                .expires_in
                .map(|d| now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))),
            revoked_at: None,
            last_used_at: None,
            usage_count: 0,
            rotated_to: None,
        };
        Ok((key, row))
    }

    /// Create a key; returns it (shown once) and its listing.
    pub async fn create_key(
        &self,
        k: NewKey,
        by: &Principal,
        origin: &Origin,
    ) -> Result<(String, KeyInfo)> {
        let name = k.name.trim();
        if name.is_empty() || name.len() > 64 {
            return Err(AuthError::invalid("name", "1 to 64 characters"));
        }
        let roles: Vec<String> = k.role.iter().cloned().collect();
        let scopes = scope::resolve(&roles, &k.scopes)?;
        if scopes.is_empty() {
            return Err(AuthError::invalid(
                "scopes",
                "give at least one scope or a role",
            ));
        }
        if k.teams.as_ref().is_some_and(|t| t.is_empty()) {
            return Err(AuthError::invalid(
                "teams",
                "name at least one team, or leave it out for every team",
            ));
        }
        let now = now_ms();
        let (key, row) = self.new_row(name, &scopes, &k, now)?;
        self.store.insert_key(&row).await?;
        self.changed().await?;
        self.audit.record(
            AuditEvent::new("key.create", Outcome::Success)
                .by(by)
                .resource(row.id.clone())
                .from(origin)
                .details(json!({"name": row.name, "prefix": row.prefix, "scopes": scopes, "teams": k.teams, "expiresAt": row.expires_at})),
        );
        Ok((key, KeyInfo::of(&row, now)))
    }

    pub async fn list_keys(&self) -> Result<Vec<KeyInfo>> {
        let now = now_ms();
        Ok(self
            .store
            .keys()
            .await?
            .iter()
            .map(|k| KeyInfo::of(k, now))
            .collect())
    }

    /// The key named by its id, its name, or the start of the key itself.
    async fn find_key(&self, reference: &str) -> Result<KeyRow> {
        let reference = reference.trim();
        let keys = self.store.keys().await?;
        if let Some(k) = keys.iter().find(|k| k.id == reference) {
            return Ok(k.clone());
        }
        let now = now_ms();
        let usable = |k: &&KeyRow| k.revoked_at.is_none_or(|t| t > now);
        // A name means the current key of that name: after a rotation the
        // old one (still in its grace period) is named by its id or prefix.
        let mut by_name: Vec<&KeyRow> = keys
            .iter()
            .filter(|k| k.name == reference)
            .filter(usable)
            .collect();
        if by_name.iter().any(|k| k.rotated_to.is_none()) {
            by_name.retain(|k| k.rotated_to.is_none());
        }
        let matches: Vec<&KeyRow> = if !by_name.is_empty() {
            by_name
        } else if reference.starts_with(KEY_PREFIX) && reference.len() >= 12 {
            // A whole key, or its shown prefix.
            let given = prefix_of(reference);
            keys.iter()
                .filter(|k| k.prefix.starts_with(given) || given.starts_with(&k.prefix))
                .collect()
        } else {
            Vec::new()
        };
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(AuthError::NotFound(format!(
                "no API key `{reference}` (give its id, name or prefix)"
            ))),
            many => Err(AuthError::Conflict(format!(
                "`{reference}` names {} keys; give an id: {}",
                many.len(),
                many.iter()
                    .map(|k| k.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Revoke at once (in this process, and in others within a moment).
    pub async fn revoke_key(
        &self,
        reference: &str,
        by: &Principal,
        origin: &Origin,
    ) -> Result<KeyInfo> {
        let mut k = self.find_key(reference).await?;
        let now = now_ms();
        self.store.revoke_key(&k.id, now).await?;
        // As the store does: an earlier revocation time stays.
        k.revoked_at = Some(k.revoked_at.map_or(now, |t| t.min(now)));
        self.changed().await?;
        self.audit.record(
            AuditEvent::new("key.revoke", Outcome::Success)
                .by(by)
                .resource(k.id.clone())
                .from(origin)
                .details(json!({"name": k.name, "prefix": k.prefix})),
        );
        Ok(KeyInfo::of(&k, now))
    }

    /// A new key with the same name, scopes, teams and limit; the old one
    /// keeps working for `grace` (default: `rotation_grace`).
    pub async fn rotate_key(
        &self,
        reference: &str,
        grace: Option<Duration>,
        by: &Principal,
        origin: &Origin,
    ) -> Result<(String, KeyInfo)> {
        let old = self.find_key(reference).await?;
        let now = now_ms();
        if old.revoked_at.is_some_and(|t| t <= now) || old.expires_at.is_some_and(|t| t <= now) {
            return Err(AuthError::Conflict(format!(
                "API key {} is no longer valid; create a new one",
                old.id
            )));
        }
        let scopes: Vec<String> = serde_json::from_str(&old.scopes).unwrap_or_default();
        let spec = NewKey {
            name: old.name.clone(),
            scopes: scopes.clone(),
            role: None,
            teams: old
                .teams
                .as_deref()
                .and_then(|t| serde_json::from_str(t).ok()),
            // The new key lives as long as the old one was meant to.
            expires_in: old
                .expires_at
                .map(|t| Duration::from_millis((t - now).max(0) as u64)),
            rate_limit: old.rate_limit.as_deref().and_then(|r| r.parse().ok()),
        };
        let (key, row) = self.new_row(&old.name, &scopes, &spec, now)?;
        let grace = grace.unwrap_or(self.settings.rotation_grace).as_millis();
        let until = now.saturating_add(i64::try_from(grace).unwrap_or(i64::MAX));
        self.store.rotate_key(&old.id, until, &row).await?;
        self.changed().await?;
        self.audit.record(
            AuditEvent::new("key.rotate", Outcome::Success)
                .by(by)
                .resource(old.id.clone())
                .from(origin)
                .details(json!({"name": old.name, "newKeyId": row.id, "oldValidUntil": until})),
        );
        Ok((key, KeyInfo::of(&row, now)))
    }

    /// Whether any key exists (first start creates one when none does).
    pub async fn has_keys(&self) -> Result<bool> {
        Ok(self.store.count_keys().await? > 0)
    }
}

#[cfg(test)]
mod tests {
    use crate::auth::testing::auth;
    use crate::key_format::{SHOWN, well_formed};

    use super::*;

    fn admin() -> Principal {
        Principal::local()
    }

    async fn viewer_key(a: &Auth, name: &str) -> String {
        a.create_key(
            NewKey::with_role(name, "viewer"),
            &admin(),
            &Origin::default(),
        )
        .await
        .unwrap()
        .0
    }

    #[tokio::test]
    async fn keys_authenticate_until_revoked_expired_or_rotated_out() {
        let (a, _d) = auth().await;
        let o = Origin::default();
        let (key, info) = a
            .create_key(
                NewKey {
                    name: "ci".into(),
                    scopes: vec!["tell".into()],
                    ..Default::default()
                },
                &admin(),
                &o,
            )
            .await
            .unwrap();
        assert!(well_formed(&key), "{key}");
        assert!(key.len() >= 56 && key.starts_with("iris_sk_live_"));
        assert_eq!(info.scopes, ["messages:stream", "messages:write"]);
        let p = a.authenticate(&key, &o).unwrap();
        assert_eq!((p.name.as_str(), p.id.as_str()), ("ci", info.id.as_str()));

        // Wrong, malformed, a changed character.
        let mut wrong = key.clone();
        wrong.pop();
        wrong.push(if key.ends_with('a') { 'b' } else { 'a' });
        assert!(a.authenticate(&wrong, &o).is_err());
        assert!(a.authenticate("iris_sk_live_short", &o).is_err());
        assert!(a.authenticate("Bearer nonsense", &o).is_err());

        // Rotation: both work during the grace, then only the new one.
        let (new_key, _) = a
            .rotate_key("ci", Some(Duration::from_millis(150)), &admin(), &o)
            .await
            .unwrap();
        assert!(a.authenticate(&key, &o).is_ok());
        assert!(a.authenticate(&new_key, &o).is_ok());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let e = a.authenticate(&key, &o).unwrap_err();
        assert!(e.to_string().contains("rotated"), "{e}");
        assert!(a.authenticate(&new_key, &o).is_ok());

        // Revoke by prefix: refused at once.
        a.revoke_key(prefix_of(&new_key), &admin(), &o)
            .await
            .unwrap();
        assert!(
            a.authenticate(&new_key, &o)
                .unwrap_err()
                .to_string()
                .contains("revoked")
        );

        // Expiry.
        let (short, _) = a
            .create_key(
                NewKey {
                    name: "tmp".into(),
                    role: Some("viewer".into()),
                    expires_in: Some(Duration::from_millis(50)),
                    ..Default::default()
                },
                &admin(),
                &o,
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(
            a.authenticate(&short, &o)
                .unwrap_err()
                .to_string()
                .contains("expired")
        );

        // Bad input.
        assert!(
            a.create_key(
                NewKey {
                    name: "x".into(),
                    ..Default::default()
                },
                &admin(),
                &o
            )
            .await
            .is_err()
        );
        assert!(
            a.create_key(
                NewKey {
                    name: "x".into(),
                    scopes: vec!["root".into()],
                    ..Default::default()
                },
                &admin(),
                &o
            )
            .await
            .is_err()
        );
        assert!(matches!(
            a.revoke_key("nope", &admin(), &o).await,
            Err(AuthError::NotFound(_))
        ));

        // Usage is counted and flushed; listings never carry the key.
        a.flush().await;
        let list = a.list_keys().await.unwrap();
        let ci: Vec<&KeyInfo> = list.iter().filter(|k| k.name == "ci").collect();
        assert_eq!(ci.len(), 2);
        assert_eq!(ci.iter().map(|k| k.usage_count).sum::<i64>(), 4);
        let text = serde_json::to_string(&list).unwrap();
        assert!(!text.contains(&key[SHOWN..]) && !text.contains(&new_key[SHOWN..]));
    }

    /// Rejecting a key that matches a real one in all but its last character
    /// takes as long as rejecting one that differs at once: lookups go by
    /// SHA-256 and the final comparison is constant-time, so no prefix of a
    /// key can be found by timing.
    #[tokio::test]
    async fn near_and_far_misses_take_the_same_time() {
        let (a, _d) = auth().await;
        let o = Origin::default();
        let key = viewer_key(&a, "ci").await;
        let swap = |i: usize| {
            let mut b = key.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            String::from_utf8(b).unwrap()
        };
        let (near, far) = (swap(key.len() - 1), swap(13));
        let time = |k: &str| {
            let t = std::time::Instant::now();
            for _ in 0..300 {
                assert!(a.authenticate_key(k, &o).is_err());
            }
            t.elapsed()
        };
        let (mut n, mut f) = (Vec::new(), Vec::new());
        for _ in 0..15 {
            n.push(time(&near));
            f.push(time(&far));
        }
        n.sort();
        f.sort();
        let ratio = n[7].as_secs_f64() / f[7].as_secs_f64();
        assert!(
            (0.5..2.0).contains(&ratio),
            "near {:?} vs far {:?}",
            n[7],
            f[7]
        );
        assert!(
            secret::same(&key, &key) && !secret::same(&key, &near) && !secret::same(&key, &far)
        );
    }

    #[tokio::test]
    async fn another_process_revoking_is_seen_by_reloading() {
        let (a, d) = auth().await;
        let o = Origin::default();
        let key = viewer_key(&a, "ci").await;
        let other = Auth::start(
            iris_storage::testing::store_in(d.path()).await,
            crate::settings::Settings::default(),
        )
        .await
        .unwrap();
        other.revoke_key("ci", &admin(), &o).await.unwrap();
        assert!(a.authenticate(&key, &o).is_ok(), "not seen yet");
        a.reload_if_changed().await.unwrap();
        assert!(a.authenticate(&key, &o).is_err());
    }
}
