//! API key records and the auth layer's small key/value table.

use serde::Serialize;

use crate::error::{Context, Result};
use crate::store::Store;

/// One API key. Only the SHA-256 of the key itself is kept.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct KeyRow {
    pub id: String,
    pub name: String,
    pub prefix: String,
    #[serde(skip)]
    pub hash: String,
    /// JSON array of scopes.
    pub scopes: String,
    /// JSON array of team names, `None` for every team.
    pub teams: Option<String>,
    pub rate_limit: Option<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub usage_count: i64,
    pub rotated_to: Option<String>,
}

const SELECT_KEYS: &str = "SELECT id, name, prefix, hash, scopes, teams, rate_limit, created_at, expires_at, revoked_at, last_used_at, usage_count, rotated_to FROM api_keys ORDER BY created_at, id";

impl Store {
    pub async fn insert_key(&self, k: &KeyRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, name, prefix, hash, scopes, teams, rate_limit, created_at, expires_at, revoked_at, last_used_at, usage_count, rotated_to)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&k.id)
        .bind(&k.name)
        .bind(&k.prefix)
        .bind(&k.hash)
        .bind(&k.scopes)
        .bind(&k.teams)
        .bind(&k.rate_limit)
        .bind(k.created_at)
        .bind(k.expires_at)
        .bind(k.revoked_at)
        .bind(k.last_used_at)
        .bind(k.usage_count)
        .bind(&k.rotated_to)
        .execute(&self.pool)
        .await
        .ctx("inserting an API key")?;
        Ok(())
    }

    /// Every key, revoked ones included, oldest first.
    pub async fn keys(&self) -> Result<Vec<KeyRow>> {
        sqlx::query_as(SELECT_KEYS)
            .fetch_all(&self.pool)
            .await
            .ctx("reading API keys")
    }

    pub async fn count_keys(&self) -> Result<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
            .fetch_one(&self.pool)
            .await
            .ctx("counting API keys")
    }

    /// Revoke at `at` (keeps an earlier revocation time). False if no such key.
    pub async fn revoke_key(&self, id: &str, at: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = CASE WHEN revoked_at IS NULL OR revoked_at > $1 THEN $1 ELSE revoked_at END WHERE id = $2",
        )
        .bind(at)
        .bind(id)
        .execute(&self.pool)
        .await
        .ctx("revoking an API key")?;
        Ok(done.rows_affected() == 1)
    }

    /// Rotation: the old key stays valid until `old_until`, the new one is inserted.
    pub async fn rotate_key(&self, old_id: &str, old_until: i64, new: &KeyRow) -> Result<()> {
        let mut tx = self.pool.begin().await.ctx("starting a rotation")?;
        sqlx::query("UPDATE api_keys SET expires_at = CASE WHEN expires_at IS NULL OR expires_at > $1 THEN $1 ELSE expires_at END, rotated_to = $2 WHERE id = $3")
            .bind(old_until)
            .bind(&new.id)
            .bind(old_id)
            .execute(&mut *tx)
            .await
            .ctx("retiring the rotated key")?;
        sqlx::query(
            "INSERT INTO api_keys (id, name, prefix, hash, scopes, teams, rate_limit, created_at, expires_at, usage_count)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0)",
        )
        .bind(&new.id)
        .bind(&new.name)
        .bind(&new.prefix)
        .bind(&new.hash)
        .bind(&new.scopes)
        .bind(&new.teams)
        .bind(&new.rate_limit)
        .bind(new.created_at)
        .bind(new.expires_at)
        .execute(&mut *tx)
        .await
        .ctx("inserting the new key")?;
        tx.commit().await.ctx("committing a rotation")
    }

    /// Add usage counted in memory since the last flush.
    pub async fn add_key_usage(&self, uses: &[(String, i64, i64)]) -> Result<()> {
        let mut tx = self.pool.begin().await.ctx("starting a usage flush")?;
        for (id, count, last) in uses {
            sqlx::query("UPDATE api_keys SET usage_count = usage_count + $1, last_used_at = CASE WHEN COALESCE(last_used_at, 0) > $2 THEN last_used_at ELSE $2 END WHERE id = $3")
                .bind(count)
                .bind(last)
                .bind(id)
                .execute(&mut *tx)
                .await
                .ctx("recording key usage")?;
        }
        tx.commit().await.ctx("committing key usage")
    }

    pub async fn meta(&self, key: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT value FROM auth_meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .ctx("reading auth metadata")
    }

    /// Set `key` unless it exists; returns the stored value (first writer wins).
    pub async fn meta_init(&self, key: &str, value: &str) -> Result<String> {
        sqlx::query(
            "INSERT INTO auth_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await
        .ctx("initialising auth metadata")?;
        Ok(self.meta(key).await?.unwrap_or_else(|| value.to_owned()))
    }

    /// The revision of keys and users (0 before the first change).
    pub async fn auth_revision(&self) -> Result<i64> {
        Ok(self
            .meta("revision")
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// A named revision other nodes watch (`teams`, `webhooks`; 0 before
    /// the first change): a change is told through Redis, and the
    /// revision is the fallback when that word is lost.
    pub async fn revision(&self, name: &str) -> Result<i64> {
        Ok(self
            .meta(&format!("revision:{name}"))
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Bump the revision `name` (see [`Store::revision`]).
    pub async fn bump_revision(&self, name: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO auth_meta (key, value) VALUES ($1, '1')
             ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(auth_meta.value AS BIGINT) + 1 AS TEXT)",
        )
        .bind(format!("revision:{name}"))
        .execute(&self.pool)
        .await
        .ctx("bumping a revision")?;
        Ok(())
    }

    /// Bump the revision other processes watch to reload keys and users.
    pub async fn bump_auth_revision(&self) -> Result<()> {
        sqlx::query(
            "INSERT INTO auth_meta (key, value) VALUES ('revision', '1')
             ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(auth_meta.value AS BIGINT) + 1 AS TEXT)",
        )
        .execute(&self.pool)
        .await
        .ctx("bumping the auth revision")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::testing::store;

    use super::*;

    fn key(id: &str, hash: &str) -> KeyRow {
        KeyRow {
            id: id.into(),
            name: "ci".into(),
            prefix: "iris_sk_test_ab".into(),
            hash: hash.into(),
            scopes: "[\"teams:read\"]".into(),
            teams: None,
            rate_limit: None,
            created_at: 1,
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
            usage_count: 0,
            rotated_to: None,
        }
    }

    #[tokio::test]
    async fn keys_round_trip_revoke_rotate_and_count_usage() {
        let (s, _d) = store().await;
        s.insert_key(&key("k1", "h1")).await.unwrap();
        assert!(
            s.insert_key(&key("k2", "h1")).await.is_err(),
            "hash is unique"
        );
        assert!(s.revoke_key("k1", 5).await.unwrap());
        assert!(s.revoke_key("k1", 9).await.unwrap());
        assert!(!s.revoke_key("nope", 9).await.unwrap());
        s.rotate_key("k1", 100, &key("k3", "h3")).await.unwrap();
        s.add_key_usage(&[("k3".into(), 4, 50), ("k3".into(), 1, 40)])
            .await
            .unwrap();
        let all = s.keys().await.unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].revoked_at, Some(5));
        assert_eq!(all[0].expires_at, Some(100));
        assert_eq!(all[0].rotated_to.as_deref(), Some("k3"));
        assert_eq!((all[1].usage_count, all[1].last_used_at), (5, Some(50)));
        assert_eq!(s.meta_init("secret", "a").await.unwrap(), "a");
        assert_eq!(s.meta_init("secret", "b").await.unwrap(), "a");
        s.bump_auth_revision().await.unwrap();
        s.bump_auth_revision().await.unwrap();
        assert_eq!(s.auth_revision().await.unwrap(), 2);
    }
}
