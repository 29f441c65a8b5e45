//! Sign-in sessions (seed 003's `GET /sessions`, `POST
//! /sessions/:id/terminate`): each login's refresh-token family, listed
//! and ended; and self-registration (`POST /auth/register`), as
//! `auth.registration` allows.

use std::net::IpAddr;

use iris_storage::SignInRow;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::{AuditEvent, Origin, Outcome, now_ms};
use crate::auth::Auth;
use crate::error::{AuthError, Result};
use crate::principal::{Principal, PrincipalKind};
use crate::scope;
use crate::users::{NewUser, UserInfo, UserUpdate};

/// Who may create an account for themselves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    /// Nobody: accounts are made by an administrator.
    #[default]
    Closed,
    /// Anyone, but the account is disabled until an administrator enables it.
    Approval,
    /// Anyone: the account works at once (role `viewer`).
    Open,
}

/// A registration request.
#[derive(Debug, Clone)]
pub struct SignUp {
    pub email: String,
    pub password: String,
    /// The login name; the email's local part when absent.
    pub username: Option<String>,
}

impl Auth {
    /// The sign-in sessions `principal` may see: every one for an
    /// administrator, else its own (a user's; keys have none).
    pub async fn sign_ins(&self, principal: &Principal) -> Result<Vec<SignInRow>> {
        let now = now_ms();
        if principal.allows(scope::ADMIN) {
            return Ok(self.store.sign_ins(None, now).await?);
        }
        if principal.kind != PrincipalKind::User {
            return Ok(Vec::new());
        }
        Ok(self.store.sign_ins(Some(&principal.id), now).await?)
    }

    /// End sign-in session `id`: its refresh tokens and access tokens stop
    /// working, and connections opened with them close.
    ///
    /// # Errors
    /// `NotFound` for a session the caller may not see or that has ended.
    pub async fn terminate_sign_in(
        &self,
        principal: &Principal,
        id: &str,
        origin: &Origin,
    ) -> Result<()> {
        let visible = self.sign_ins(principal).await?;
        let Some(session) = visible.iter().find(|s| s.id == id) else {
            return Err(AuthError::NotFound(format!("no sign-in session `{id}`")));
        };
        let now = now_ms();
        self.store.revoke_refresh_family(id, now).await?;
        self.end_sign_in(id, now);
        self.changed().await?;
        self.audit.record(
            AuditEvent::new("auth.session.terminate", Outcome::Success)
                .by(principal)
                .resource(id.to_owned())
                .from(origin)
                .details(json!({"userId": session.user_id})),
        );
        Ok(())
    }

    /// Create an account for its owner, as `mode` allows: `Approval`
    /// leaves it disabled until an administrator enables it. Counted
    /// against the per-address login limit; audited.
    ///
    /// # Errors
    /// `Forbidden` when registration is closed; `RateLimited`; the
    /// validation and conflict errors of [`Auth::create_user`].
    pub async fn register(
        &self,
        req: SignUp,
        mode: Registration,
        origin: &Origin,
        ip: Option<IpAddr>,
    ) -> Result<UserInfo> {
        if mode == Registration::Closed {
            return Err(AuthError::Forbidden(
                "registration is closed (auth.registration); ask an administrator for an account"
                    .into(),
            ));
        }
        if let Some(d) = self.limit_login(ip).await
            && !d.allowed
        {
            return Err(AuthError::RateLimited {
                message: "too many registration or login attempts from this address".into(),
                retry_after_ms: d.retry_after.as_millis() as u64,
            });
        }
        let local = req.email.split('@').next().unwrap_or_default().to_owned();
        let new = NewUser {
            username: req.username.unwrap_or(local),
            password: req.password,
            email: Some(req.email),
            roles: vec!["viewer".into()],
            scopes: Vec::new(),
            teams: None,
        };
        let by = Principal::nobody();
        let mut user = self.create_user(new, &by, origin).await?;
        if mode == Registration::Approval {
            let disable = UserUpdate {
                status: Some("disabled".into()),
                ..Default::default()
            };
            user = self.update_user(&user.id, disable, &by, origin).await?;
        }
        self.audit.record(
            AuditEvent::new("auth.register", Outcome::Success)
                .resource(user.id.clone())
                .from(origin)
                .details(json!({"username": user.username, "status": user.status})),
        );
        Ok(user)
    }
}
