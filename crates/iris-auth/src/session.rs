//! People's sessions: login (with lockout and TOTP MFA), short-lived JWT
//! access tokens (HS256 only, so `alg: none` and algorithm confusion are
//! refused), and rotating refresh tokens whose reuse revokes their family.

use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use iris_storage::{RefreshRow, UserRow};
use serde::Serialize;
use serde_json::{Value, json};

use crate::audit::{AuditEvent, Origin, Outcome, Severity, now_ms};
use crate::auth::Auth;
use crate::error::{AuthError, Result};
use crate::jwt::{Claims, ISSUER};
use crate::principal::{Principal, PrincipalKind};
use crate::secret;
use crate::users::{UserInfo, hash_password, verify_password};

const REFRESH_PREFIX: &str = "iris_rt_";
/// How long the second step of an MFA login may take.
pub(crate) const MFA_TOKEN_SECS: i64 = 300;

/// A login request (seed 003): `login` is a username or an email.
#[derive(Debug, Clone)]
pub struct Login {
    pub login: String,
    pub password: String,
    pub mfa_code: Option<String>,
}

/// What a successful login or refresh returns (seed 003 shape).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
    pub token_type: &'static str,
    pub user: UserInfo,
}

/// An argon2id hash to verify against when the user does not exist, so
/// the answer takes as long as for a wrong password.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash_password("dummy-Password-1234").unwrap_or_default());

impl Auth {
    pub(crate) fn authenticate_token(&self, token: &str) -> Result<Arc<Principal>> {
        let claims = self.jwt.verify(token, "access")?;
        self.token_user(&claims)
    }

    /// The user of a token's claims, if its sign-in and the user still stand.
    pub(crate) fn token_user(&self, claims: &Claims) -> Result<Arc<Principal>> {
        // The user first: a disabled account says so, not that its
        // sign-ins (ended with it) are over.
        let caches = self.caches.read().unwrap_or_else(|p| p.into_inner());
        let user = caches
            .users
            .get(&claims.sub)
            .ok_or_else(|| AuthError::unauthorized("the token's user no longer exists"))?;
        if !user.active {
            return Err(AuthError::unauthorized("account disabled"));
        }
        if user.token_version != claims.ver {
            return Err(AuthError::unauthorized(
                "session ended (password reset or logout-all)",
            ));
        }
        if self.jwt.ended(&claims.sid) {
            return Err(AuthError::unauthorized("session ended (logged out)"));
        }
        Ok(user.principal.clone())
    }

    pub(crate) fn access_token(
        &self,
        u: &UserRow,
        sid: &str,
        typ: &str,
        ttl_secs: i64,
    ) -> Result<String> {
        let now = now_ms() / 1000;
        self.jwt.sign(&Claims {
            iss: ISSUER.into(),
            sub: u.id.clone(),
            typ: typ.into(),
            sid: sid.into(),
            ver: u.token_version,
            iat: now,
            exp: now + ttl_secs,
            jti: ulid::Ulid::new().to_string(),
        })
    }

    /// A new refresh token in `family` and an access token for it.
    async fn issue(&self, u: &UserRow, family: &str) -> Result<Tokens> {
        let refresh = format!("{REFRESH_PREFIX}{}", secret::random_token()?);
        let now = now_ms();
        self.store
            .insert_refresh(&RefreshRow {
                hash: secret::sha256_hex(&refresh),
                user_id: u.id.clone(),
                family: family.to_owned(),
                created_at: now,
                expires_at: now + self.settings.refresh_ttl.as_millis() as i64,
                used_at: None,
                revoked_at: None,
            })
            .await?;
        let ttl = self.settings.access_ttl.as_secs() as i64;
        Ok(Tokens {
            access_token: self.access_token(u, family, "access", ttl)?,
            refresh_token: refresh,
            expires_in: ttl as u64,
            token_type: "Bearer",
            user: UserInfo::of(u),
        })
    }

    pub(crate) fn login_failed(&self, login: &str, origin: &Origin, reason: &str) -> AuthError {
        self.audit.record(
            AuditEvent::new("auth.login", Outcome::Failure)
                .claimed(login)
                .from(origin)
                .details(json!({"reason": reason})),
        );
        AuthError::unauthorized("invalid username or password")
    }

    /// Count a failed attempt; lock the account after too many.
    pub(crate) async fn count_failure(&self, u: &mut UserRow, origin: &Origin) -> Result<()> {
        u.failed_logins += 1;
        if u.failed_logins >= self.settings.max_failed_logins {
            u.locked_until = Some(now_ms() + self.settings.lockout.as_millis() as i64);
            u.failed_logins = 0;
            self.audit.record(
                AuditEvent::new("auth.lockout", Outcome::Denied)
                    .claimed(u.username.clone())
                    .resource(u.id.clone())
                    .severity(Severity::Critical)
                    .from(origin)
                    .details(json!({"lockedUntil": u.locked_until})),
            );
        }
        self.store.save_user(u).await?;
        Ok(())
    }

    pub async fn login(&self, req: Login, origin: &Origin, ip: Option<IpAddr>) -> Result<Tokens> {
        if let Some(d) = self.limit_login(ip).await
            && !d.allowed
        {
            return Err(AuthError::RateLimited {
                message: "too many login attempts from this address".into(),
                retry_after_ms: d.retry_after.as_millis() as u64,
            });
        }
        let Some(mut u) = self.store.user_by_login(req.login.trim()).await? else {
            verify_password(&req.password, &DUMMY_HASH);
            return Err(self.login_failed(&req.login, origin, "unknown user"));
        };
        let now = now_ms();
        if let Some(until) = u.locked_until.filter(|t| *t > now) {
            self.login_failed(&req.login, origin, "account locked");
            return Err(AuthError::Unauthorized {
                message: "account locked after repeated failed logins; try again later".into(),
                details: Some(json!({"lockedUntil": until})),
            });
        }
        if !verify_password(&req.password, &u.password_hash) {
            self.count_failure(&mut u, origin).await?;
            return Err(self.login_failed(&req.login, origin, "wrong password"));
        }
        if u.status != "active" {
            return Err(self.login_failed(&req.login, origin, "account disabled"));
        }
        if u.mfa_enabled {
            match &req.mfa_code {
                None => {
                    let mfa_token = self.access_token(&u, "mfa", "mfa", MFA_TOKEN_SECS)?;
                    return Err(AuthError::Unauthorized {
                        message: "MFA code required: send it with mfaCode, or to /auth/mfa/verify with mfaToken".into(),
                        details: Some(json!({"mfaRequired": true, "mfaToken": mfa_token})),
                    });
                }
                Some(code) => {
                    if !self.second_factor(&mut u, code)? {
                        self.count_failure(&mut u, origin).await?;
                        return Err(self.login_failed(&req.login, origin, "wrong MFA code"));
                    }
                }
            }
        }
        self.logged_in(u, origin, "password").await
    }

    pub(crate) async fn logged_in(
        &self,
        mut u: UserRow,
        origin: &Origin,
        method: &str,
    ) -> Result<Tokens> {
        u.failed_logins = 0;
        u.locked_until = None;
        u.last_login_at = Some(now_ms());
        self.store.save_user(&u).await?;
        let family = format!("fam_{}", ulid::Ulid::new());
        let tokens = self.issue(&u, &family).await?;
        self.audit.record(
            AuditEvent::new("auth.login", Outcome::Success)
                .by(&self.user_principal(&u))
                .from(origin)
                .details(json!({"method": method, "mfa": u.mfa_enabled})),
        );
        Ok(tokens)
    }

    fn user_principal(&self, u: &UserRow) -> Principal {
        Principal {
            kind: PrincipalKind::User,
            id: u.id.clone(),
            name: u.username.clone(),
            scopes: Vec::new(),
            teams: None,
            limits: None,
        }
    }

    /// Trade a refresh token for a new pair. A token used twice means it
    /// leaked: its whole family is revoked.
    pub async fn refresh(&self, token: &str, origin: &Origin) -> Result<Tokens> {
        let hash = secret::sha256_hex(token.trim());
        let Some(row) = self.store.refresh_token(&hash).await? else {
            return Err(self.refresh_failed(origin, "unknown refresh token"));
        };
        let now = now_ms();
        if row.revoked_at.is_some() {
            return Err(self.refresh_failed(origin, "refresh token revoked"));
        }
        if row.used_at.is_some() || !self.store.spend_refresh(&hash, now).await? {
            self.store.revoke_refresh_family(&row.family, now).await?;
            self.end_sign_in(&row.family, now);
            self.changed().await?;
            self.audit.record(
                AuditEvent::new("auth.refresh_reuse", Outcome::Denied)
                    .claimed(format!("user:{}", row.user_id))
                    .resource(row.family.clone())
                    .severity(Severity::Critical)
                    .from(origin),
            );
            return Err(AuthError::unauthorized(
                "refresh token already used: every session of this login is revoked",
            ));
        }
        if row.expires_at <= now {
            return Err(self.refresh_failed(origin, "refresh token expired"));
        }
        let u = self.find_user(&row.user_id).await?;
        if u.status != "active" {
            return Err(self.refresh_failed(origin, "account disabled"));
        }
        let tokens = self.issue(&u, &row.family).await?;
        self.audit.record(
            AuditEvent::new("auth.refresh", Outcome::Success)
                .by(&self.user_principal(&u))
                .from(origin),
        );
        Ok(tokens)
    }

    /// End sign-in `family` (revoked at `at`) in this process: its access
    /// tokens stop working, and connections opened with them are told.
    pub(crate) fn end_sign_in(&self, family: &str, at: i64) {
        self.jwt.end(
            family,
            at + self.settings.access_ttl.as_millis() as i64 + 10_000,
        );
        self.announce();
    }

    fn refresh_failed(&self, origin: &Origin, reason: &str) -> AuthError {
        self.audit.record(
            AuditEvent::new("auth.refresh", Outcome::Failure)
                .claimed("token")
                .from(origin)
                .details(json!({"reason": reason})),
        );
        AuthError::unauthorized(reason)
    }

    /// End the session (refresh family) of `access_token`.
    pub async fn logout(&self, access_token: &str, origin: &Origin) -> Result<()> {
        let claims = self.jwt.verify(access_token, "access")?;
        let now = now_ms();
        self.store.revoke_refresh_family(&claims.sid, now).await?;
        self.end_sign_in(&claims.sid, now);
        // Other processes (nodes, the CLI) learn of it at their next check.
        self.changed().await?;
        self.audit.record(
            AuditEvent::new("auth.logout", Outcome::Success)
                .claimed(format!("user:{}", claims.sub))
                .from(origin),
        );
        Ok(())
    }

    /// End every session of `principal` (a user), access tokens included.
    pub async fn logout_all(&self, principal: &Principal, origin: &Origin) -> Result<()> {
        let mut u = self.own_user(principal).await?;
        u.token_version += 1;
        u.updated_at = now_ms();
        self.store.save_user(&u).await?;
        self.store.revoke_user_refresh(&u.id, now_ms()).await?;
        self.changed().await?;
        self.audit.record(
            AuditEvent::new("auth.logout_all", Outcome::Success)
                .by(principal)
                .from(origin),
        );
        Ok(())
    }

    pub(crate) async fn own_user(&self, principal: &Principal) -> Result<UserRow> {
        if principal.kind != PrincipalKind::User {
            return Err(AuthError::Forbidden(
                "only a user (logged in with a password) can do this, not an API key".into(),
            ));
        }
        self.find_user(&principal.id).await
    }

    /// The caller as `/auth/me` shows it.
    pub async fn me(&self, principal: &Principal) -> Result<Value> {
        let mut me = serde_json::to_value(principal).unwrap_or_default();
        if principal.kind == PrincipalKind::User {
            let u = self.find_user(&principal.id).await?;
            me["user"] = serde_json::to_value(UserInfo::of(&u)).unwrap_or_default();
        }
        Ok(me)
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    use crate::auth::testing::{login, with_user};
    use crate::jwt::Jwt;

    use super::*;

    #[tokio::test]
    async fn login_refresh_rotation_and_reuse_revokes_the_family() {
        let (a, _d) = with_user().await;
        let o = Origin::default();
        let t = a
            .login(login("ANN@example.com", "Correct-Horse-42"), &o, None)
            .await
            .unwrap();
        let p = a.authenticate(&t.access_token, &o).unwrap();
        assert_eq!(p.name, "ann");
        assert!(p.allows("messages:write") && !p.allows("admin"));

        let t2 = a.refresh(&t.refresh_token, &o).await.unwrap();
        assert_ne!(t2.refresh_token, t.refresh_token);
        // Reusing the first one revokes the family: the second no longer works.
        assert!(a.refresh(&t.refresh_token, &o).await.is_err());
        assert!(a.refresh(&t2.refresh_token, &o).await.is_err());
        assert!(
            a.authenticate(&t2.access_token, &o).is_err(),
            "the family's access tokens end too"
        );

        // Logout ends that session; another login is unaffected until logout-all.
        let t3 = a
            .login(login("ann", "Correct-Horse-42"), &o, None)
            .await
            .unwrap();
        let t4 = a
            .login(login("ann", "Correct-Horse-42"), &o, None)
            .await
            .unwrap();
        a.logout(&t3.access_token, &o).await.unwrap();
        assert!(a.authenticate(&t3.access_token, &o).is_err());
        assert!(a.refresh(&t3.refresh_token, &o).await.is_err());
        let me = a.authenticate(&t4.access_token, &o).unwrap();
        a.logout_all(&me, &o).await.unwrap();
        assert!(a.authenticate(&t4.access_token, &o).is_err());
        assert!(a.refresh(&t4.refresh_token, &o).await.is_err());
    }

    #[tokio::test]
    async fn tampered_none_and_foreign_algorithm_tokens_are_refused() {
        mod b64 {
            use base64::Engine;
            use base64::engine::general_purpose::URL_SAFE_NO_PAD as E;
            pub fn encode(b: &[u8]) -> String {
                E.encode(b)
            }
            pub fn decode(s: &str) -> Vec<u8> {
                E.decode(s).unwrap()
            }
        }
        let (a, _d) = with_user().await;
        let o = Origin::default();
        let t = a
            .login(login("ann", "Correct-Horse-42"), &o, None)
            .await
            .unwrap();
        let parts: Vec<&str> = t.access_token.split('.').collect();
        let payload: Value = serde_json::from_slice(&b64::decode(parts[1])).unwrap();

        // A changed claim with the old signature.
        let mut admin = payload.clone();
        admin["sub"] = json!("user_someone_else");
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64::encode(admin.to_string().as_bytes()),
            parts[2]
        );
        assert!(
            a.authenticate(&forged, &o)
                .unwrap_err()
                .to_string()
                .contains("signature")
        );

        // alg: none, no signature.
        let none = format!(
            "{}.{}.",
            b64::encode(br#"{"alg":"none","typ":"JWT"}"#),
            parts[1]
        );
        assert!(a.authenticate(&none, &o).is_err());
        // HS512 with the right secret is still refused: one algorithm only.
        let h512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &payload,
            &EncodingKey::from_secret(b"guess"),
        )
        .unwrap();
        assert!(
            a.authenticate(&h512, &o)
                .unwrap_err()
                .to_string()
                .contains("algorithm")
        );

        // An expired token.
        let u = a.find_user("ann").await.unwrap();
        let expired = a.access_token(&u, "fam_x", "access", -60).unwrap();
        assert!(
            a.authenticate(&expired, &o)
                .unwrap_err()
                .to_string()
                .contains("expired")
        );
        // Expiry is exact: a token one second past its `exp` is refused
        // (no leeway by default), unless the leeway setting allows it.
        let just = a.access_token(&u, "fam_x", "access", -1).unwrap();
        assert!(a.authenticate(&just, &o).is_err());
        let claims = a
            .jwt
            .verify(&a.access_token(&u, "f", "access", 60).unwrap(), "access");
        assert!(claims.is_ok());
        let secret = hex::encode([7u8; 32]);
        let lenient = Jwt::new(&secret, std::time::Duration::from_secs(5)).unwrap();
        let strict = Jwt::new(&secret, std::time::Duration::ZERO).unwrap();
        let now = now_ms() / 1000;
        let token = lenient
            .sign(&Claims {
                iss: ISSUER.into(),
                sub: "u".into(),
                typ: "access".into(),
                sid: "f".into(),
                ver: 0,
                iat: now - 10,
                exp: now - 2,
                jti: "j".into(),
            })
            .unwrap();
        assert!(lenient.verify(&token, "access").is_ok());
        assert!(strict.verify(&token, "access").is_err());
        // The MFA step token is not an access token.
        let mfa = a.access_token(&u, "mfa", "mfa", 60).unwrap();
        assert!(a.authenticate(&mfa, &o).is_err());
    }

    #[tokio::test]
    async fn repeated_failures_lock_the_account() {
        let (a, _d) = with_user().await;
        let o = Origin::default();
        for _ in 0..5 {
            assert!(
                a.login(login("ann", "Wrong-Horse-42"), &o, None)
                    .await
                    .is_err()
            );
        }
        let e = a
            .login(login("ann", "Correct-Horse-42"), &o, None)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("locked"), "{e}");
        // An administrator's password reset lifts the lock.
        a.reset_password("ann", "Another-Horse-43", &Principal::local(), &o)
            .await
            .unwrap();
        assert!(
            a.login(login("ann", "Another-Horse-43"), &o, None)
                .await
                .is_ok()
        );
        assert!(
            a.login(login("nobody", "Another-Horse-43"), &o, None)
                .await
                .is_err()
        );
    }
}
