//! Who is calling: the hook every transport authenticates through.
//!
//! With `api.requireAuth: false` every caller is the anonymous operator
//! `api` with all scopes. With `requireAuth: true` (the default) requests are
//! refused until the key store of the security milestone exists.

use axum::http::HeaderMap;
use iris_core::auth::Principal;
use iris_core::{Ctx, ErrorKind, IrisError};

use crate::AppState;
use crate::request::RequestId;

pub fn caller(state: &AppState, _headers: &HeaderMap, rid: &RequestId) -> Result<Ctx, IrisError> {
    if state.iris.config.api.require_auth {
        return Err(IrisError::new(
            ErrorKind::Unauthorized,
            "authentication is required and no API keys exist yet; set api.requireAuth: false on a loopback bind",
        ));
    }
    Ok(Ctx {
        principal: Principal {
            name: "api".into(),
            scopes: vec!["*".into()],
            teams: None,
        },
        request_id: Some(rid.0.clone()),
    })
}
