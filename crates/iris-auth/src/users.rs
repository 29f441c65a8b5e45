//! Users (seed 003): argon2id passwords with a strength policy, roles, and
//! an account status.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use iris_storage::UserRow;
use serde::Serialize;
use serde_json::json;

use crate::audit::{AuditEvent, Origin, Outcome, now_ms};
use crate::auth::Auth;
use crate::error::{AuthError, Result};
use crate::principal::Principal;
use crate::scope;

#[derive(Debug, Clone, Default)]
pub struct NewUser {
    pub username: String,
    pub password: String,
    pub email: Option<String>,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    pub teams: Option<Vec<String>>,
}

/// A change by an administrator; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserUpdate {
    pub status: Option<String>,
    pub roles: Option<Vec<String>>,
    pub scopes: Option<Vec<String>>,
    pub teams: Option<Option<Vec<String>>>,
    pub email: Option<Option<String>>,
}

/// A user as listings show it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserInfo {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    pub roles: Vec<String>,
    /// Everything the roles and extra scopes grant.
    pub permissions: Vec<String>,
    pub teams: Option<Vec<String>>,
    pub status: String,
    pub mfa_enabled: bool,
    pub locked_until: Option<i64>,
    pub last_login: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl UserInfo {
    pub(crate) fn of(u: &UserRow) -> Self {
        let roles: Vec<String> = serde_json::from_str(&u.roles).unwrap_or_default();
        let extra: Vec<String> = serde_json::from_str(&u.scopes).unwrap_or_default();
        UserInfo {
            id: u.id.clone(),
            username: u.username.clone(),
            email: u.email.clone(),
            permissions: scope::resolve(&roles, &extra).unwrap_or_default(),
            roles,
            teams: u
                .teams
                .as_deref()
                .and_then(|t| serde_json::from_str(t).ok()),
            status: u.status.clone(),
            mfa_enabled: u.mfa_enabled,
            locked_until: u.locked_until.filter(|t| *t > now_ms()),
            last_login: u.last_login_at,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

/// A password is acceptable: long enough, three kinds of character (or a
/// passphrase of 20+), not the username, not a well-known one.
pub(crate) fn check_password(password: &str, username: &str, min: usize) -> Result<()> {
    let bad = |m: String| Err(AuthError::invalid("password", m));
    let chars = password.chars().count();
    if chars < min {
        return bad(format!("at least {min} characters"));
    }
    if chars > 1024 {
        return bad("at most 1024 characters".into());
    }
    let classes = [
        password.chars().any(|c| c.is_lowercase()),
        password.chars().any(|c| c.is_uppercase()),
        password.chars().any(|c| c.is_ascii_digit()),
        password.chars().any(|c| !c.is_alphanumeric()),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if classes < 3 && chars < 20 {
        return bad(
            "use three of: lowercase, uppercase, digits, symbols (or 20+ characters)".into(),
        );
    }
    let lower = password.to_lowercase();
    if !username.is_empty() && lower.contains(&username.to_lowercase()) {
        return bad("must not contain the username".into());
    }
    const COMMON: &[&str] = &[
        "password", "123456", "qwerty", "letmein", "admin", "welcome", "iloveyou",
    ];
    if COMMON.iter().any(|c| lower.contains(c)) {
        return bad("too common".into());
    }
    Ok(())
}

pub(crate) fn hash_password(password: &str) -> Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Internal(format!("hashing a password: {e}")))
}

pub(crate) fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

fn valid_username(u: &str) -> bool {
    (3..=64).contains(&u.len())
        && u.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn valid_email(e: &str) -> bool {
    e.len() <= 254
        && e.split_once('@')
            .is_some_and(|(a, b)| !a.is_empty() && b.contains('.'))
        && !e.contains(char::is_whitespace)
}

impl Auth {
    pub async fn create_user(
        &self,
        u: NewUser,
        by: &Principal,
        origin: &Origin,
    ) -> Result<UserInfo> {
        if !valid_username(&u.username) {
            return Err(AuthError::invalid(
                "username",
                "3 to 64 letters, digits, `.`, `_` or `-`",
            ));
        }
        if let Some(e) = &u.email
            && !valid_email(e)
        {
            return Err(AuthError::invalid("email", "not an email address"));
        }
        let roles = if u.roles.is_empty() {
            vec!["viewer".to_owned()]
        } else {
            u.roles.clone()
        };
        scope::resolve(&roles, &u.scopes)?;
        check_password(&u.password, &u.username, self.settings.password_min_length)?;
        for login in std::iter::once(&u.username).chain(u.email.iter()) {
            if self.store.user_by_login(login).await?.is_some() {
                return Err(AuthError::Conflict(format!("a user `{login}` exists")));
            }
        }
        let now = now_ms();
        let row = UserRow {
            id: format!("user_{}", ulid::Ulid::new()),
            username: u.username.clone(),
            email: u.email.clone(),
            password_hash: hash_password(&u.password)?,
            roles: json!(roles).to_string(),
            scopes: json!(scope::normalize(&u.scopes)?).to_string(),
            teams: u.teams.as_ref().map(|t| json!(t).to_string()),
            status: "active".into(),
            failed_logins: 0,
            locked_until: None,
            mfa_secret: None,
            mfa_enabled: false,
            backup_codes: "[]".into(),
            mfa_last_step: None,
            token_version: 0,
            created_at: now,
            updated_at: now,
            last_login_at: None,
        };
        self.store.save_user(&row).await?;
        self.changed().await?;
        self.audit.record(
            AuditEvent::new("user.create", Outcome::Success)
                .by(by)
                .resource(row.id.clone())
                .from(origin)
                .details(json!({"username": row.username, "roles": roles})),
        );
        Ok(UserInfo::of(&row))
    }

    /// Users, filtered by role, status, and a search in username/email.
    pub async fn list_users(
        &self,
        role: Option<&str>,
        status: Option<&str>,
        search: Option<&str>,
    ) -> Result<Vec<UserInfo>> {
        let search = search.map(str::to_lowercase);
        Ok(self
            .store
            .users()
            .await?
            .iter()
            .map(UserInfo::of)
            .filter(|u| role.is_none_or(|r| u.roles.iter().any(|x| x == r)))
            .filter(|u| status.is_none_or(|s| u.status == s))
            .filter(|u| {
                search.as_ref().is_none_or(|q| {
                    u.username.to_lowercase().contains(q)
                        || u.email
                            .as_ref()
                            .is_some_and(|e| e.to_lowercase().contains(q))
                })
            })
            .collect())
    }

    /// The user named by id, username or email.
    pub(crate) async fn find_user(&self, reference: &str) -> Result<UserRow> {
        if let Some(u) = self.store.user(reference).await? {
            return Ok(u);
        }
        self.store
            .user_by_login(reference)
            .await?
            .ok_or_else(|| AuthError::NotFound(format!("no user `{reference}`")))
    }

    pub async fn update_user(
        &self,
        reference: &str,
        change: UserUpdate,
        by: &Principal,
        origin: &Origin,
    ) -> Result<UserInfo> {
        let mut u = self.find_user(reference).await?;
        if let Some(s) = &change.status {
            if s != "active" && s != "disabled" {
                return Err(AuthError::invalid("status", "`active` or `disabled`"));
            }
            if s == "disabled" && u.status != "disabled" {
                // Disabling ends every session at once.
                u.token_version += 1;
                self.store.revoke_user_refresh(&u.id, now_ms()).await?;
            }
            if s == "active" {
                u.failed_logins = 0;
                u.locked_until = None;
            }
            u.status = s.clone();
        }
        let roles: Vec<String> = match &change.roles {
            Some(r) => r.clone(),
            None => serde_json::from_str(&u.roles).unwrap_or_default(),
        };
        let extra: Vec<String> = match &change.scopes {
            Some(s) => scope::normalize(s)?,
            None => serde_json::from_str(&u.scopes).unwrap_or_default(),
        };
        scope::resolve(&roles, &extra)?;
        u.roles = json!(roles).to_string();
        u.scopes = json!(extra).to_string();
        if let Some(t) = &change.teams {
            u.teams = t.as_ref().map(|t| json!(t).to_string());
        }
        if let Some(e) = &change.email {
            if let Some(e) = e
                && !valid_email(e)
            {
                return Err(AuthError::invalid("email", "not an email address"));
            }
            u.email = e.clone();
        }
        u.updated_at = now_ms();
        self.store.save_user(&u).await?;
        self.changed().await?;
        self.audit.record(
            AuditEvent::new("user.update", Outcome::Success)
                .by(by)
                .resource(u.id.clone())
                .from(origin)
                .details(json!({"username": u.username, "status": change.status, "roles": change.roles, "scopes": change.scopes})),
        );
        Ok(UserInfo::of(&u))
    }

    /// Set a new password; ends the user's sessions and lifts a lockout.
    pub async fn reset_password(
        &self,
        reference: &str,
        password: &str,
        by: &Principal,
        origin: &Origin,
    ) -> Result<UserInfo> {
        let mut u = self.find_user(reference).await?;
        check_password(password, &u.username, self.settings.password_min_length)?;
        u.password_hash = hash_password(password)?;
        u.token_version += 1;
        u.failed_logins = 0;
        u.locked_until = None;
        u.updated_at = now_ms();
        self.store.save_user(&u).await?;
        self.store.revoke_user_refresh(&u.id, now_ms()).await?;
        self.changed().await?;
        self.audit.record(
            AuditEvent::new("user.password_reset", Outcome::Success)
                .by(by)
                .resource(u.id.clone())
                .from(origin)
                .details(json!({"username": u.username})),
        );
        Ok(UserInfo::of(&u))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_policy() {
        assert!(check_password("Short1!", "ann", 12).is_err());
        assert!(check_password("alllowercaseletters", "ann", 12).is_err());
        assert!(check_password("Correct-Horse-42", "ann", 12).is_ok());
        assert!(
            check_password("annPassw0rd!!xyz", "ann", 12).is_err(),
            "contains the username"
        );
        assert!(
            check_password("Password123!abc", "bob", 12).is_err(),
            "common"
        );
        assert!(check_password("a long passphrase of plain words", "bob", 12).is_ok());
    }

    #[test]
    fn argon2id_hashes_verify() {
        let h = hash_password("Correct-Horse-42").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("Correct-Horse-42", &h));
        assert!(!verify_password("Correct-Horse-43", &h));
        assert!(!verify_password("x", "not a phc string"));
    }
}
