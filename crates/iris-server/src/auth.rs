//! Who is calling: the gate authenticates every request once (API key or
//! access token, from `Authorization: Bearer`, or for browsers' GET streams
//! a `token` query parameter) and leaves a [`Caller`] for the handlers.
//! WebSockets may instead send the credential as their first message.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, Uri, header};
use iris_core::auth::{Origin, Principal};
use iris_core::{Ctx, ErrorKind, IrisError};

use crate::AppState;
use crate::request::RequestId;

/// The query parameter browsers' EventSource/WebSocket put a credential in.
pub const TOKEN_QUERY: &str = "token";

/// Refresh tokens are only ever sent to `/auth/refresh`.
pub const REFRESH_PREFIX: &str = "iris_rt_";

/// What the gate found out about a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// `None`: no credential was presented.
    pub principal: Option<Arc<Principal>>,
    /// Peer address, user agent and request id (what the audit trail records).
    pub origin: Origin,
    /// The same id as `origin.request_id`, typed for error bodies.
    pub request_id: RequestId,
    /// Set by the gate once the request passed it; the extractor refuses a
    /// `Caller` without it, so a route declared without the gate fails
    /// closed (500) instead of running unauthenticated.
    pub admitted: bool,
}

impl Caller {
    /// A request as it arrives, before the gate: its peer and id. The
    /// accept loop hands it to the gate (through the CORS and compression
    /// layers it rides in the request), which admits the request and makes
    /// the handler's `Caller` from it.
    pub fn arrived(ip: Option<std::net::IpAddr>, request_id: RequestId) -> Caller {
        Caller {
            principal: None,
            origin: Origin {
                ip,
                user_agent: None,
                request_id: Some(request_id.0.clone()),
            },
            request_id,
            admitted: false,
        }
    }
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

/// The context a handler runs an operation with. Without a credential:
/// 401 when `api.requireAuth` is on, else the open caller.
pub fn caller(state: &AppState, who: &Caller) -> Result<Ctx, IrisError> {
    let principal = match &who.principal {
        Some(p) => p.clone(),
        None if state.iris.config.api.require_auth => {
            return Err(IrisError::new(
                ErrorKind::Unauthorized,
                "authentication required: send `Authorization: Bearer <API key or access token>`",
            ));
        }
        None => state.open.clone(),
    };
    Ok(Ctx {
        principal,
        origin: who.origin.clone(),
    })
}

/// A caller holding `scope` and not limited to some teams, for the few
/// routes that are not operations and span every team (`/metrics`,
/// `/health/detailed`); the decision is the core's [`iris_core::Iris::permit`].
pub fn require(
    state: &AppState,
    who: &Caller,
    rid: &RequestId,
    scope: &str,
    what: &str,
) -> Result<Ctx, crate::ApiError> {
    let fail = |e| crate::ApiError::new(e, rid);
    let ctx = caller(state, who).map_err(fail)?;
    state
        .iris
        .permit(&ctx, scope, true, what, None)
        .map_err(fail)?;
    Ok(ctx)
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
