//! Who is calling: the gate authenticates every request once (API key or
//! access token, from `Authorization: Bearer`, or for browsers' GET streams
//! a `token` query parameter) and leaves a [`Caller`] in the request's
//! extensions, which handlers take with the [`Caller`] extractor.
//! WebSockets may instead send the credential as their first message.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use iris_core::auth::{Origin, Principal};
use iris_core::{Ctx, ErrorKind, IrisError};

use crate::error::ApiError;
use crate::state::AppState;

/// The query parameter browsers' EventSource/WebSocket put a credential in.
pub const TOKEN_QUERY: &str = "token";

/// Refresh tokens are only ever sent to `/auth/refresh`.
pub const REFRESH_PREFIX: &str = "iris_rt_";

pub use crate::error::RequestId;

/// What the gate found out about a request, in its extensions.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who it is. `None` only on the routes the gate lets through without a
    /// credential (the public list, and WebSockets that authenticate with
    /// their first message) when `api.requireAuth` is on.
    pub principal: Option<Arc<Principal>>,
    /// Peer address, user agent and request id (what the audit trail records).
    pub origin: Origin,
    /// The same id as `origin.request_id`, typed for error bodies.
    pub request_id: RequestId,
    /// The credential it presented, kept on streams and WebSockets only:
    /// they check it again while they last (`held`).
    pub credential: Option<Arc<str>>,
}

/// Handlers take the [`Caller`] the gate left. Every route is behind the
/// gate (see [`crate::app`]), so a request without one is a bug: refused
/// (500), never run unauthenticated.
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(ungated)
    }
}

/// The request id, from the gate's [`Caller`].
impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .map(|c| c.request_id.clone())
            .ok_or_else(ungated)
    }
}

#[cold]
fn ungated() -> ApiError {
    ApiError::maybe(
        IrisError::internal("gate", "a request reached a handler without the gate"),
        None,
    )
}

/// 401 for a request that needs a credential and presents none.
#[cold]
pub fn unauthenticated() -> IrisError {
    IrisError::new(
        ErrorKind::Unauthorized,
        "authentication required: send `Authorization: Bearer <API key or access token>`",
    )
}

/// The credential a request presents, if any. The `token` query parameter
/// counts only on GET requests to streams (`…/stream`, `/ws`), where
/// browsers cannot set headers; elsewhere a key in a URL would end up in
/// proxies' and browsers' histories.
pub fn credential<'a>(headers: &'a HeaderMap, uri: &'a Uri, is_get: bool) -> Option<&'a str> {
    credential_from(headers.get(header::AUTHORIZATION), uri, is_get)
}

/// [`credential`] from the `Authorization` value the caller has found.
pub fn credential_from<'a>(
    authorization: Option<&'a HeaderValue>,
    uri: &'a Uri,
    is_get: bool,
) -> Option<&'a str> {
    let bearer = authorization
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.get(..7)
                .filter(|s| s.eq_ignore_ascii_case("bearer "))
                .map(|_| v[7..].trim())
        })
        .filter(|t| !t.is_empty() && !t.starts_with(REFRESH_PREFIX));
    bearer.or_else(|| {
        let path = uri.path();
        if !is_get || !(path.ends_with("/stream") || path == "/ws") {
            return None;
        }
        uri.query()?
            .split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .filter(|t| !t.is_empty())
    })
}

impl Caller {
    /// `e` as this request's error body.
    pub fn fail(&self, e: IrisError) -> ApiError {
        ApiError::new(e, &self.request_id)
    }

    /// The context a handler runs an operation with: the gate's principal,
    /// or 401 on the few routes it lets through without one.
    pub fn ctx(&self) -> Result<Ctx, ApiError> {
        match &self.principal {
            Some(p) => Ok(Ctx::new(p.clone(), self.origin.clone())),
            None => Err(self.fail(unauthenticated())),
        }
    }

    /// [`Caller::ctx`] of a caller holding `scope` and not limited to some
    /// teams, for the few routes that are not operations and span every
    /// team (`/metrics`, `/health/detailed`); the decision is the core's
    /// [`iris_core::Iris::permit`].
    pub fn require(&self, state: &AppState, scope: &str, what: &str) -> Result<Ctx, ApiError> {
        let ctx = self.ctx()?;
        state
            .iris
            .permit(&ctx, scope, true, what, None)
            .map_err(|e| ApiError::new(e, &self.request_id))?;
        Ok(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_bearer_or_a_get_query() {
        let mut h = HeaderMap::new();
        let uri: Uri = "/api/v1/stream?after=1&token=iris_sk_q".parse().unwrap();
        assert_eq!(credential(&h, &uri, true), Some("iris_sk_q"));
        assert_eq!(credential(&h, &uri, false), None);
        let not_a_stream: Uri = "/api/v1/teams?token=iris_sk_q".parse().unwrap();
        assert_eq!(credential(&h, &not_a_stream, true), None);
        h.insert(header::AUTHORIZATION, "bearer  iris_sk_h ".parse().unwrap());
        assert_eq!(credential(&h, &uri, true), Some("iris_sk_h"));
        h.insert(header::AUTHORIZATION, "Bearer iris_rt_x".parse().unwrap());
        assert_eq!(credential(&h, &"/x".parse().unwrap(), true), None);
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(credential(&h, &"/x".parse().unwrap(), true), None);
    }
}
