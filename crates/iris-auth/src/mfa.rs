//! TOTP MFA (RFC 6238, SHA-1, 6 digits, 30 s: what common authenticator
//! apps use) with single-use backup codes, and the second step of a login.

use iris_storage::UserRow;
use serde_json::{Value, json};

use crate::audit::{AuditEvent, Origin, Outcome, now_ms};
use crate::auth::Auth;
use crate::error::{AuthError, Result};
use crate::principal::Principal;
use crate::secret;
use crate::session::Tokens;
use crate::users::verify_password;

const BACKUP_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";

pub(crate) fn totp_for(secret_b32: &str, account: &str) -> Result<totp_rs::Totp> {
    let secret = totp_rs::Secret::try_from_base32(secret_b32)
        .map_err(|e| AuthError::Internal(format!("stored MFA secret unreadable: {e}")))?;
    totp_rs::Builder::new()
        .with_secret(secret)
        .with_account_name(account)
        .with_issuer(Some("Iris"))
        .build()
        .map_err(|e| AuthError::Internal(format!("building the TOTP: {e}")))
}

/// A matched TOTP step is accepted once (RFC 6238 section 5.2): a code seen
/// before, or an older one, is refused even inside its window.
fn accept_step(u: &mut UserRow, step: Option<u64>) -> bool {
    let Some(step) = step.and_then(|s| i64::try_from(s).ok()) else {
        return false;
    };
    if u.mfa_last_step.is_some_and(|last| step <= last) {
        return false;
    }
    u.mfa_last_step = Some(step);
    true
}

impl Auth {
    /// Check a TOTP code or spend a backup code.
    pub(crate) fn second_factor(&self, u: &mut UserRow, code: &str) -> Result<bool> {
        let code = code.trim();
        if let Some(secret) = &u.mfa_secret
            && code.len() == 6
            && code.bytes().all(|b| b.is_ascii_digit())
        {
            let step = totp_for(secret, &u.username)?.check_current(code);
            return Ok(accept_step(u, step));
        }
        let given = secret::sha256_hex(&code.to_uppercase());
        let mut codes: Vec<String> = serde_json::from_str(&u.backup_codes).unwrap_or_default();
        let Some(i) = codes.iter().position(|c| secret::same(c, &given)) else {
            return Ok(false);
        };
        codes.remove(i);
        u.backup_codes = json!(codes).to_string();
        Ok(true)
    }

    /// The second step of an MFA login.
    pub async fn mfa_verify(&self, mfa_token: &str, code: &str, origin: &Origin) -> Result<Tokens> {
        let claims = self.jwt.verify(mfa_token, "mfa")?;
        let mut u = self.find_user(&claims.sub).await?;
        if u.status != "active" || u.token_version != claims.ver || !u.mfa_enabled {
            return Err(AuthError::unauthorized("this MFA token is no longer valid"));
        }
        if u.locked_until.is_some_and(|t| t > now_ms()) {
            return Err(AuthError::unauthorized(
                "account locked after repeated failed logins; try again later",
            ));
        }
        if !self.second_factor(&mut u, code)? {
            self.count_failure(&mut u, origin).await?;
            return Err(self.login_failed(&u.username, origin, "wrong MFA code"));
        }
        self.logged_in(u, origin, "password+mfa").await
    }

    /// Start MFA enrolment: a new secret and backup codes; enabled by `mfa_confirm`.
    pub async fn mfa_setup(&self, principal: &Principal, origin: &Origin) -> Result<Value> {
        let mut u = self.own_user(principal).await?;
        if u.mfa_enabled {
            return Err(AuthError::Conflict(
                "MFA is already on; disable it first".into(),
            ));
        }
        let secret = totp_rs::Secret::from(secret::random_bytes::<20>()?).to_base32();
        let totp = totp_for(&secret, &u.username)?;
        let codes: Vec<String> = (0..10)
            .map(|_| {
                secret::random_string(10, BACKUP_ALPHABET)
                    .map(|c| format!("{}-{}", &c[..5], &c[5..]))
            })
            .collect::<Result<_>>()?;
        u.mfa_secret = Some(secret.clone());
        u.backup_codes = json!(
            codes
                .iter()
                .map(|c| secret::sha256_hex(c))
                .collect::<Vec<_>>()
        )
        .to_string();
        u.updated_at = now_ms();
        self.store.save_user(&u).await?;
        self.audit.record(
            AuditEvent::new("auth.mfa_setup", Outcome::Success)
                .by(principal)
                .from(origin),
        );
        Ok(json!({
            "secret": secret,
            "otpauthUrl": totp.to_url().map_err(|e| AuthError::Internal(format!("{e}")))?,
            "algorithm": "SHA1", "digits": 6, "period": 30,
            "backupCodes": codes,
        }))
    }

    pub async fn mfa_confirm(
        &self,
        principal: &Principal,
        code: &str,
        origin: &Origin,
    ) -> Result<Value> {
        let mut u = self.own_user(principal).await?;
        let Some(secret) = u.mfa_secret.clone() else {
            return Err(AuthError::Conflict("start with /auth/mfa/setup".into()));
        };
        if u.mfa_enabled {
            return Err(AuthError::Conflict("MFA is already on".into()));
        }
        let step = totp_for(&secret, &u.username)?.check_current(code.trim());
        if !accept_step(&mut u, step) {
            return Err(AuthError::invalid(
                "code",
                "wrong code; check the authenticator's clock",
            ));
        }
        u.mfa_enabled = true;
        u.updated_at = now_ms();
        self.store.save_user(&u).await?;
        self.audit.record(
            AuditEvent::new("auth.mfa_enable", Outcome::Success)
                .by(principal)
                .from(origin),
        );
        Ok(json!({"mfaEnabled": true}))
    }

    pub async fn mfa_disable(
        &self,
        principal: &Principal,
        password: &str,
        code: &str,
        origin: &Origin,
    ) -> Result<Value> {
        let mut u = self.own_user(principal).await?;
        if !u.mfa_enabled {
            return Err(AuthError::Conflict("MFA is not on".into()));
        }
        if !verify_password(password, &u.password_hash) || !self.second_factor(&mut u, code)? {
            self.audit.record(
                AuditEvent::new("auth.mfa_disable", Outcome::Failure)
                    .by(principal)
                    .from(origin),
            );
            return Err(AuthError::unauthorized("wrong password or code"));
        }
        u.mfa_enabled = false;
        u.mfa_secret = None;
        u.backup_codes = "[]".into();
        u.updated_at = now_ms();
        self.store.save_user(&u).await?;
        self.audit.record(
            AuditEvent::new("auth.mfa_disable", Outcome::Success)
                .by(principal)
                .from(origin),
        );
        Ok(json!({"mfaEnabled": false}))
    }

    /// An administrator turns a user's MFA off (a lost authenticator): the
    /// secret and backup codes are gone, the user's sessions end, and the
    /// next login needs the password only, until MFA is set up again.
    pub async fn mfa_reset(
        &self,
        reference: &str,
        by: &Principal,
        origin: &Origin,
    ) -> Result<Value> {
        let mut u = self.find_user(reference).await?;
        let was = u.mfa_enabled;
        u.mfa_enabled = false;
        u.mfa_secret = None;
        u.backup_codes = "[]".into();
        u.token_version += 1;
        u.updated_at = now_ms();
        self.store.save_user(&u).await?;
        self.store.revoke_user_refresh(&u.id, now_ms()).await?;
        self.changed().await?;
        self.audit.record(
            AuditEvent::new("user.mfa_reset", Outcome::Success)
                .by(by)
                .resource(u.id.clone())
                .from(origin)
                .details(json!({"username": u.username, "wasEnabled": was})),
        );
        Ok(json!({"user": u.id, "username": u.username, "mfaEnabled": false, "wasEnabled": was}))
    }
}

#[cfg(test)]
mod tests {
    use crate::auth::testing::{login, with_user};
    use crate::session::Login;

    use super::*;

    #[tokio::test]
    async fn totp_mfa_with_backup_codes() {
        let (a, _d) = with_user().await;
        let o = Origin::default();
        let t = a
            .login(login("ann", "Correct-Horse-42"), &o, None)
            .await
            .unwrap();
        let me = a.authenticate(&t.access_token, &o).unwrap();
        let setup = a.mfa_setup(&me, &o).await.unwrap();
        let secret = setup["secret"].as_str().unwrap().to_owned();
        assert!(
            setup["otpauthUrl"]
                .as_str()
                .unwrap()
                .starts_with("otpauth://totp/")
        );
        let totp = totp_for(&secret, "ann").unwrap();
        // One clock reading for every code below, so a step boundary in
        // between cannot change which code is which.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(a.mfa_confirm(&me, "000000x", &o).await.is_err());
        a.mfa_confirm(&me, &totp.generate(now).to_string(), &o)
            .await
            .unwrap();

        // Without a code: a step token; with it: tokens.
        let Err(AuthError::Unauthorized {
            details: Some(d), ..
        }) = a.login(login("ann", "Correct-Horse-42"), &o, None).await
        else {
            panic!("an MFA challenge expected");
        };
        let step = d["mfaToken"].as_str().unwrap();
        assert!(a.mfa_verify(step, "123", &o).await.is_err());
        // The confirming code is spent: replaying it fails, even in its window.
        let spent = totp.generate(now).to_string();
        assert!(a.mfa_verify(step, &spent, &o).await.is_err());
        // The next step's code (inside the one-step skew) works once.
        let next = totp.generate(now + 30).to_string();
        assert!(a.mfa_verify(step, &next, &o).await.is_ok());
        let with_code = Login {
            mfa_code: Some(next.clone()),
            ..login("ann", "Correct-Horse-42")
        };
        assert!(
            a.login(with_code, &o, None).await.is_err(),
            "a code is good once"
        );

        // A backup code works once.
        let backup = setup["backupCodes"][0].as_str().unwrap();
        let with = |c: &str| Login {
            mfa_code: Some(c.into()),
            ..login("ann", "Correct-Horse-42")
        };
        assert!(a.login(with(backup), &o, None).await.is_ok());
        assert!(a.login(with(backup), &o, None).await.is_err());
    }

    #[tokio::test]
    async fn an_admin_resets_a_users_mfa() {
        let (a, _d) = with_user().await;
        let o = Origin::default();
        let t = a
            .login(login("ann", "Correct-Horse-42"), &o, None)
            .await
            .unwrap();
        let me = a.authenticate(&t.access_token, &o).unwrap();
        let setup = a.mfa_setup(&me, &o).await.unwrap();
        let totp = totp_for(setup["secret"].as_str().unwrap(), "ann").unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        a.mfa_confirm(&me, &totp.generate(now).to_string(), &o)
            .await
            .unwrap();
        assert!(
            a.login(login("ann", "Correct-Horse-42"), &o, None)
                .await
                .is_err(),
            "a code is needed"
        );
        let r = a.mfa_reset("ann", &Principal::local(), &o).await.unwrap();
        assert_eq!(r["wasEnabled"], true);
        assert!(
            a.login(login("ann", "Correct-Horse-42"), &o, None)
                .await
                .is_ok(),
            "the password alone signs in again"
        );
        assert!(
            a.mfa_reset("nobody", &Principal::local(), &o)
                .await
                .is_err()
        );
    }
}
