//! Per-request plumbing: the request id, the access log, and error bodies
//! for failures produced outside the handlers (an oversized body).

use std::time::Instant;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use iris_core::auth::Decision;
use iris_core::auth::Origin;
use iris_core::config::ApiConfig;
use iris_core::{ErrorKind, IrisError};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::guard::{host_allowed, origin_allowed, security_headers};

/// `X-Request-ID` of this request (the caller's, or `req_<ulid>`).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

const HEADER: HeaderName = HeaderName::from_static("x-request-id");
const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

fn acceptable(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// A request from the wrong `Host` or `Origin` is refused before routing.
fn refuse(api: &ApiConfig, headers: &HeaderMap, rid: &RequestId) -> Option<Response> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let problem = if !host_allowed(api, host) {
        Some(format!("host `{host}` is not allowed (api.allowedHosts)"))
    } else {
        headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .filter(|o| !origin_allowed(api, o))
            .map(|o| format!("origin `{o}` is not allowed (api.cors.origins)"))
    };
    problem.map(|p| ApiError::new(IrisError::new(ErrorKind::Forbidden, p), rid).into_response())
}

/// The one middleware in front of every route: request id, Host/Origin
/// checks, authentication, rate limits; then the error bodies, security and
/// rate-limit headers, metrics and the access log on the way out.
pub async fn gate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let api = &state.iris.config.api;
    let started = Instant::now();
    let id = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("req_{}", ulid::Ulid::new()));
    let method = req.method().clone();
    // Only when the access log is on: the path is copied for it.
    let path = tracing::enabled!(target: "iris::access", tracing::Level::INFO)
        .then(|| req.uri().path().to_owned());
    // The route template, not the path: bounded label values.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let rid = RequestId(id.clone());
    req.extensions_mut().insert(rid.clone());
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let origin = Origin {
        ip,
        user_agent: req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(256).collect::<String>().into()),
        request_id: Some(id.as_str().into()),
    };
    let (mut resp, limit) = match refuse(api, req.headers(), &rid) {
        Some(r) => (r, None),
        None => match admit(&state, &req, origin, ip, &rid) {
            Ok((caller, limit)) => {
                req.extensions_mut().insert(caller);
                (next.run(req).await, limit)
            }
            Err((refusal, limit)) => (refusal, limit),
        },
    };
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        let mut e = ApiError::new(
            IrisError::new(
                ErrorKind::Validation,
                "the request body is larger than api.maxBodyBytes",
            ),
            &rid,
        );
        e.status = Some(StatusCode::PAYLOAD_TOO_LARGE);
        resp = e.into_response();
    }
    if resp.status() == StatusCode::REQUEST_TIMEOUT && !is_json {
        let e = IrisError::new(
            ErrorKind::Timeout,
            "the request took longer than api.requestTimeout",
        );
        resp = ApiError::new(e, &rid).into_response();
    }
    // Room for what is added below, so the map grows once.
    resp.headers_mut().reserve(10);
    security_headers(resp.headers_mut());
    if let Some(d) = limit {
        rate_headers(resp.headers_mut(), &d);
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(HEADER, v);
    }
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    crate::metrics::record_request(
        route,
        &method,
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    if let Some(path) = path {
        tracing::info!(
            target: "iris::access",
            request_id = %id,
            method = %method,
            path = %path,
            status = resp.status().as_u16(),
            micros = started.elapsed().as_micros() as u64,
            "request"
        );
    }
    resp
}

/// Who the request is from, and its rate-limit decision: by identity when
/// it authenticates, by address when it presents nothing or a bad
/// credential (a failed authentication counts against the address). `Err`
/// is the answer to send instead (401 or 429).
#[allow(clippy::result_large_err)]
fn admit(
    state: &AppState,
    req: &Request,
    origin: Origin,
    ip: Option<std::net::IpAddr>,
    rid: &RequestId,
) -> Result<(Caller, Option<Decision>), (Response, Option<Decision>)> {
    let auth = &state.iris.auth;
    let is_get = req.method() == Method::GET;
    let found = crate::auth::credential(req.headers(), req.uri(), is_get)
        .map(|c| auth.authenticate(c, &origin));
    let limit = match &found {
        Some(Ok(principal)) => auth.limit_identity(principal),
        _ => ip.and_then(|ip| auth.limit_ip(ip)),
    };
    if let Some(d) = limit.filter(|d| !d.allowed) {
        return Err((too_many(&d, rid), limit));
    }
    match found {
        Some(Err(e)) => Err((ApiError::new(e.into(), rid).into_response(), limit)),
        principal => Ok((
            Caller {
                principal: principal.and_then(Result::ok),
                origin,
                ip,
            },
            limit,
        )),
    }
}

/// 429 with the error body; the headers are added on the way out.
fn too_many(d: &Decision, rid: &RequestId) -> Response {
    let e = IrisError::new(
        ErrorKind::RateLimited,
        format!("rate limit of {} requests exceeded; retry later", d.limit),
    )
    .with_details(serde_json::json!({"retryAfterMs": d.retry_after.as_millis() as u64}));
    ApiError::new(e, rid).into_response()
}

/// `X-RateLimit-Limit/Remaining/Reset`, and `Retry-After` when refused.
fn rate_headers(h: &mut HeaderMap, d: &Decision) {
    h.insert(LIMIT, HeaderValue::from(d.limit));
    h.insert(REMAINING, HeaderValue::from(d.remaining));
    h.insert(RESET, HeaderValue::from(d.reset));
    if !d.allowed {
        let secs = d.retry_after.as_secs() + u64::from(d.retry_after.subsec_nanos() > 0);
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
}
