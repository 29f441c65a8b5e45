//! User records and their refresh tokens.

use serde::Serialize;
use sqlx::Row;

use crate::error::{Context, Result};
use crate::store::Store;

/// One person who logs in.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRow {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    #[serde(skip)]
    pub password_hash: String,
    /// JSON array of role names.
    pub roles: String,
    /// JSON array of extra scopes.
    pub scopes: String,
    pub teams: Option<String>,
    pub status: String,
    pub failed_logins: i64,
    pub locked_until: Option<i64>,
    #[serde(skip)]
    pub mfa_secret: Option<String>,
    pub mfa_enabled: bool,
    /// JSON array of SHA-256 hashes of unused backup codes.
    #[serde(skip)]
    pub backup_codes: String,
    /// The last TOTP time step accepted (a code is good once).
    #[serde(skip)]
    pub mfa_last_step: Option<i64>,
    pub token_version: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_login_at: Option<i64>,
}

// By hand: `mfa_enabled` is 0/1 in both backends' schemas, not a boolean.
impl<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> for UserRow {
    fn from_row(r: &'r sqlx::any::AnyRow) -> std::result::Result<Self, sqlx::Error> {
        Ok(UserRow {
            id: r.try_get("id")?,
            username: r.try_get("username")?,
            email: r.try_get("email")?,
            password_hash: r.try_get("password_hash")?,
            roles: r.try_get("roles")?,
            scopes: r.try_get("scopes")?,
            teams: r.try_get("teams")?,
            status: r.try_get("status")?,
            failed_logins: r.try_get("failed_logins")?,
            locked_until: r.try_get("locked_until")?,
            mfa_secret: r.try_get("mfa_secret")?,
            mfa_enabled: r.try_get::<i64, _>("mfa_enabled")? != 0,
            backup_codes: r.try_get("backup_codes")?,
            mfa_last_step: r.try_get("mfa_last_step")?,
            token_version: r.try_get("token_version")?,
            created_at: r.try_get("created_at")?,
            updated_at: r.try_get("updated_at")?,
            last_login_at: r.try_get("last_login_at")?,
        })
    }
}

macro_rules! select_users {
    ($rest:literal) => {
        concat!(
            "SELECT id, username, email, password_hash, roles, scopes, teams, status, failed_logins, locked_until, ",
            "mfa_secret, mfa_enabled, backup_codes, mfa_last_step, token_version, created_at, updated_at, last_login_at FROM users",
            $rest
        )
    };
}

/// A stored refresh token.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RefreshRow {
    pub hash: String,
    pub user_id: String,
    pub family: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A sign-in session: one login's refresh-token family, alive while one
/// of its tokens is neither revoked nor expired.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignInRow {
    /// The family id (the `sid` of its access tokens).
    pub id: String,
    pub user_id: String,
    /// The login.
    pub started_at: i64,
    /// The last refresh (or the login).
    pub last_refresh_at: i64,
    pub expires_at: i64,
}

impl Store {
    /// Live sign-in sessions, the most recently refreshed first; of one
    /// user, or of everyone.
    pub async fn sign_ins(&self, user_id: Option<&str>, now: i64) -> Result<Vec<SignInRow>> {
        let rows = sqlx::query(
            "SELECT family, user_id, MIN(created_at) AS started_at, MAX(created_at) AS last_refresh_at,
                    MAX(expires_at) AS expires_at
             FROM refresh_tokens
             WHERE revoked_at IS NULL AND ($1 IS NULL OR user_id = $2)
             GROUP BY family, user_id
             HAVING MAX(expires_at) > $3
             ORDER BY last_refresh_at DESC",
        )
        .bind(user_id)
        .bind(user_id)
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .ctx("listing sign-in sessions")?;
        Ok(rows
            .iter()
            .map(|r| SignInRow {
                id: r.get("family"),
                user_id: r.get("user_id"),
                started_at: r.get("started_at"),
                last_refresh_at: r.get("last_refresh_at"),
                expires_at: r.get("expires_at"),
            })
            .collect())
    }

    /// Insert `u`, or write back every mutable field of an existing user
    /// (the id, username and creation time never change).
    pub async fn save_user(&self, u: &UserRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO users (id, username, email, password_hash, roles, scopes, teams, status, failed_logins, locked_until, mfa_secret, mfa_enabled, backup_codes, mfa_last_step, token_version, created_at, updated_at, last_login_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
             ON CONFLICT (id) DO UPDATE SET email = excluded.email, password_hash = excluded.password_hash,
             roles = excluded.roles, scopes = excluded.scopes, teams = excluded.teams, status = excluded.status,
             failed_logins = excluded.failed_logins, locked_until = excluded.locked_until, mfa_secret = excluded.mfa_secret,
             mfa_enabled = excluded.mfa_enabled, backup_codes = excluded.backup_codes, mfa_last_step = excluded.mfa_last_step,
             token_version = excluded.token_version, updated_at = excluded.updated_at, last_login_at = excluded.last_login_at",
        )
        .bind(&u.id)
        .bind(&u.username)
        .bind(&u.email)
        .bind(&u.password_hash)
        .bind(&u.roles)
        .bind(&u.scopes)
        .bind(&u.teams)
        .bind(&u.status)
        .bind(u.failed_logins)
        .bind(u.locked_until)
        .bind(&u.mfa_secret)
        .bind(i64::from(u.mfa_enabled))
        .bind(&u.backup_codes)
        .bind(u.mfa_last_step)
        .bind(u.token_version)
        .bind(u.created_at)
        .bind(u.updated_at)
        .bind(u.last_login_at)
        .execute(&self.pool)
        .await
        .ctx("saving a user")?;
        Ok(())
    }

    pub async fn users(&self) -> Result<Vec<UserRow>> {
        sqlx::query_as(select_users!(" ORDER BY created_at, id"))
            .fetch_all(&self.pool)
            .await
            .ctx("reading users")
    }

    /// The user whose username or email is `login` (case-insensitive).
    pub async fn user_by_login(&self, login: &str) -> Result<Option<UserRow>> {
        sqlx::query_as(select_users!(
            " WHERE LOWER(username) = LOWER($1) OR LOWER(email) = LOWER($1)"
        ))
        .bind(login)
        .fetch_optional(&self.pool)
        .await
        .ctx("finding a user")
    }

    pub async fn user(&self, id: &str) -> Result<Option<UserRow>> {
        sqlx::query_as(select_users!(" WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .ctx("reading a user")
    }

    pub async fn insert_refresh(&self, r: &RefreshRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO refresh_tokens (hash, user_id, family, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&r.hash)
        .bind(&r.user_id)
        .bind(&r.family)
        .bind(r.created_at)
        .bind(r.expires_at)
        .execute(&self.pool)
        .await
        .ctx("storing a refresh token")?;
        Ok(())
    }

    pub async fn refresh_token(&self, hash: &str) -> Result<Option<RefreshRow>> {
        sqlx::query_as("SELECT hash, user_id, family, created_at, expires_at, used_at, revoked_at FROM refresh_tokens WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await
            .ctx("reading a refresh token")
    }

    /// Mark a token spent; false if it already was (a reuse).
    pub async fn spend_refresh(&self, hash: &str, at: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1 WHERE hash = $2 AND used_at IS NULL",
        )
        .bind(at)
        .bind(hash)
        .execute(&self.pool)
        .await
        .ctx("spending a refresh token")?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn revoke_refresh_family(&self, family: &str, at: i64) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE family = $2 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(family)
        .execute(&self.pool)
        .await
        .ctx("revoking a token family")?;
        Ok(done.rows_affected())
    }

    /// Sign-ins (refresh-token families) revoked since `since`, with when:
    /// what another process ended that this one must refuse too.
    pub async fn families_revoked_since(&self, since: i64) -> Result<Vec<(String, i64)>> {
        sqlx::query_as(
            "SELECT family, MAX(revoked_at) FROM refresh_tokens WHERE revoked_at >= $1 GROUP BY family",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .ctx("reading revoked sign-ins")
    }

    pub async fn revoke_user_refresh(&self, user_id: &str, at: i64) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(user_id)
        .execute(&self.pool)
        .await
        .ctx("revoking a user's tokens")?;
        Ok(done.rows_affected())
    }
}
