//! The accounts service: what a person does with their own account —
//! sign in (with MFA), register, refresh and end sign-ins, set up MFA —
//! for the `/auth/*` routes. Sign-in comes before there is a caller, so
//! these are not operations; everything else goes through `dispatch`.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::auth::{Auth, Login, Origin, Registration, SignUp};
use crate::ctx::Ctx;
use crate::error::{IrisError, Result};

pub struct Accounts {
    auth: Arc<Auth>,
    /// Who may create an account (`auth.registration`).
    registration: Registration,
}

impl Accounts {
    pub(crate) fn new(auth: Arc<Auth>, registration: Registration) -> Self {
        Accounts { auth, registration }
    }

    /// Sign in with a login and password (and an MFA code, when on): tokens,
    /// or an MFA challenge.
    pub async fn login(&self, req: Login, origin: &Origin) -> Result<Value> {
        let tokens = self.auth.login(req, origin, origin.ip).await?;
        Ok(json!(tokens))
    }

    /// The second step of a login: the challenge's token and a code.
    pub async fn mfa_verify(&self, mfa_token: &str, code: &str, origin: &Origin) -> Result<Value> {
        Ok(json!(self.auth.mfa_verify(mfa_token, code, origin).await?))
    }

    /// Create an account as `auth.registration` allows.
    pub async fn register(&self, req: SignUp, origin: &Origin) -> Result<Value> {
        let user = self
            .auth
            .register(req, self.registration, origin, origin.ip)
            .await?;
        Ok(json!(user))
    }

    /// Trade a refresh token for a new pair.
    pub async fn refresh(&self, token: &str, origin: &Origin) -> Result<Value> {
        Ok(json!(self.auth.refresh(token, origin).await?))
    }

    /// End the sign-in of `access_token`.
    pub async fn logout(&self, access_token: &str, origin: &Origin) -> Result<()> {
        if access_token.starts_with(crate::auth::KEY_PREFIX) {
            return Err(IrisError::validation(
                "Authorization",
                "an API key has no session; revoke it instead",
            ));
        }
        Ok(self.auth.logout(access_token, origin).await?)
    }

    /// End every sign-in of the caller (a user).
    pub async fn logout_all(&self, ctx: &Ctx) -> Result<()> {
        Ok(self.auth.logout_all(&ctx.principal, &ctx.origin).await?)
    }

    /// Who the caller is.
    pub async fn me(&self, ctx: &Ctx) -> Result<Value> {
        Ok(self.auth.me(&ctx.principal).await?)
    }

    /// Start setting up TOTP: its secret and URL.
    pub async fn mfa_setup(&self, ctx: &Ctx) -> Result<Value> {
        Ok(self.auth.mfa_setup(&ctx.principal, &ctx.origin).await?)
    }

    /// Turn TOTP on with a first code: backup codes.
    pub async fn mfa_confirm(&self, ctx: &Ctx, code: &str) -> Result<Value> {
        Ok(self
            .auth
            .mfa_confirm(&ctx.principal, code, &ctx.origin)
            .await?)
    }

    /// Turn TOTP off (password and a code).
    pub async fn mfa_disable(&self, ctx: &Ctx, password: &str, code: &str) -> Result<Value> {
        Ok(self
            .auth
            .mfa_disable(&ctx.principal, password, code, &ctx.origin)
            .await?)
    }
}
