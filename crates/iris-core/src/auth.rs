//! Who is calling: `iris-auth`'s types as the core uses them, its errors
//! in the one table, and the audit record of a call. Authentication runs
//! in the transports' shared gate; the permission decisions are
//! [`crate::access`].

pub use iris_auth::principal::{Principal, PrincipalKind};
pub use iris_auth::scope;
pub use iris_auth::secret::sha256_hex;
pub use iris_auth::witness;
pub use iris_auth::{
    AuditEvent, Auth, AuthError, Decision, KEY_PREFIX, Login, NewKey, NewUser, Origin, Outcome,
    Registration, SignUp, Standing, UserUpdate,
};

use crate::ctx::Ctx;
use crate::error::{ErrorKind, IrisError};

/// Record an audit event as `ctx`'s caller, off the request path.
pub fn audit(auth: &Auth, ctx: &Ctx, event: AuditEvent) {
    auth.audit
        .record(event.by(&ctx.principal).from(&ctx.origin));
}

impl From<AuthError> for IrisError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthorized { message, details } => {
                let err = IrisError::new(ErrorKind::Unauthorized, message);
                match details {
                    Some(d) => err.with_details(d),
                    None => err,
                }
            }
            AuthError::Forbidden(m) => IrisError::new(ErrorKind::Forbidden, m),
            AuthError::Invalid { field, message } => IrisError::validation(&field, message),
            AuthError::NotFound(m) => IrisError::not_found(m),
            AuthError::Conflict(m) => IrisError::new(ErrorKind::Conflict, m),
            AuthError::RateLimited {
                message,
                retry_after_ms,
            } => IrisError::new(ErrorKind::RateLimited, message)
                .with_details(serde_json::json!({"retryAfterMs": retry_after_ms})),
            AuthError::Store(e) => IrisError::from_store("the key and user store", e),
            AuthError::Internal(m) => IrisError::new(ErrorKind::Internal, m),
        }
    }
}
