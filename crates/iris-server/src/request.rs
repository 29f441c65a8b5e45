//! Per-request plumbing of the gate (see [`crate::gate`]): the request id,
//! Host/Origin checks, authentication and rate limits on the way in; error
//! bodies, headers, metrics and the access log on the way out.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use iris_core::auth::Decision;
use iris_core::auth::{Origin, Principal};
use iris_core::{ErrorKind, IrisError};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::guard::{origin_allowed, security_headers};

/// `X-Request-ID` of this request (the caller's, or `req_<ulid>`); shared,
/// so the copies in the request, its context and errors do not allocate.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

/// Handlers take the [`Caller`] the gate admitted; anything else is a route
/// without the gate, refused.
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match parts.extensions.get::<Caller>() {
            Some(c) if c.admitted => Ok(c.clone()),
            found => Err(ApiError::ungated(found.map(|c| &c.request_id))),
        }
    }
}

/// Handlers read the request id from the gate's [`Caller`] (one request
/// extension instead of two).
impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .map(|c| c.request_id.clone())
            .ok_or_else(|| ApiError::ungated(None))
    }
}

const HEADER: HeaderName = HeaderName::from_static("x-request-id");
const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

fn acceptable(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// The caller's `X-Request-ID` when it is acceptable, else a new one.
pub fn id_of(headers: &HeaderMap) -> RequestId {
    id_from(headers.get(HEADER))
}

/// A request as the accept loop saw it arrive: its caller (peer and
/// request id) and whether CORS or compression need to see it.
pub struct Arrived {
    pub caller: Caller,
    pub layered: bool,
}

/// What the accept loop reads of a request from `ip` as it arrives, in one
/// walk over its headers: its request id, and whether CORS or compression
/// need to see it (it carries an `Origin` or an `Accept-Encoding`; see
/// [`crate::edge::App`]). A walk over the few headers a request carries
/// costs less than three hashed lookups.
pub fn arrival(headers: &HeaderMap, ip: Option<IpAddr>) -> Arrived {
    let mut id = None;
    let mut layered = false;
    for (name, value) in headers {
        if needs_layers(name) {
            layered = true;
        } else if name == HEADER {
            id.get_or_insert(value);
        }
    }
    Arrived {
        caller: Caller::arrived(ip, id_from(id)),
        layered,
    }
}

/// A header that CORS (`Origin`) or compression (`Accept-Encoding`) acts
/// on: a request carrying one goes through those layers.
pub fn needs_layers(name: &HeaderName) -> bool {
    name == header::ORIGIN || name == header::ACCEPT_ENCODING
}

/// `value` when it is an acceptable request id, else a new one.
fn id_from(value: Option<&HeaderValue>) -> RequestId {
    if let Some(id) = value
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
    {
        return RequestId(id.into());
    }
    let buf = new_request_id();
    // Crockford base32 and "req_": ASCII, so always UTF-8.
    RequestId(std::str::from_utf8(&buf).unwrap_or("req_").into())
}

/// A fresh `req_<ulid>` (ASCII), without allocating; public for the
/// benchmark's floor, which does the same work as Iris.
pub fn new_request_id() -> [u8; 4 + ulid::ULID_LEN] {
    thread_local! {
        // Within one millisecond the next id is the last one plus one:
        // no random draw per request, and ids stay unique and ordered.
        static IDS: std::cell::RefCell<ulid::Generator> =
            const { std::cell::RefCell::new(ulid::Generator::new()) };
    }
    // (`Ulid::default()` is the nil id: a fresh one when the generator fails.)
    let id = match IDS.with(|g| g.borrow_mut().generate().ok()) {
        Some(id) => id,
        None => ulid::Ulid::new(),
    };
    let mut buf = [0u8; 4 + ulid::ULID_LEN];
    buf[..4].copy_from_slice(b"req_");
    let mut text = [0u8; ulid::ULID_LEN];
    buf[4..].copy_from_slice(id.array_to_str(&mut text).as_bytes());
    buf
}

/// The headers the gate reads, found in one walk over the request's
/// headers: four hashed lookups cost more than walking the few headers a
/// request carries. The first value of each counts, as with `get`.
#[derive(Default)]
struct Heads<'a> {
    host: Option<&'a HeaderValue>,
    origin: Option<&'a HeaderValue>,
    user_agent: Option<&'a HeaderValue>,
    authorization: Option<&'a HeaderValue>,
}

impl<'a> Heads<'a> {
    fn of(headers: &'a HeaderMap) -> Self {
        let mut h = Heads::default();
        for (name, value) in headers {
            let slot = if name == header::HOST {
                &mut h.host
            } else if name == header::ORIGIN {
                &mut h.origin
            } else if name == header::USER_AGENT {
                &mut h.user_agent
            } else if name == header::AUTHORIZATION {
                &mut h.authorization
            } else {
                continue;
            };
            slot.get_or_insert(value);
        }
        h
    }
}

/// A request from the wrong `Host` or `Origin` is refused before routing.
fn refuse(state: &AppState, heads: &Heads<'_>) -> Option<IrisError> {
    let api = &state.iris.config.api;
    let host = heads.host.and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !state.hosts.allow(host) {
        return Some(forbidden(format_args!(
            "host `{host}` is not allowed (api.allowedHosts)"
        )));
    }
    heads
        .origin
        .and_then(|v| v.to_str().ok())
        .filter(|o| !origin_allowed(api, &state.hosts, o))
        .map(|o| {
            forbidden(format_args!(
                "origin `{o}` is not allowed (api.cors.origins)"
            ))
        })
}

#[cold]
fn forbidden(problem: std::fmt::Arguments<'_>) -> IrisError {
    IrisError::new(ErrorKind::Forbidden, problem.to_string())
}

/// Who the request is from, and its rate-limit decision: by identity when
/// it authenticates, by address when it presents nothing or a bad
/// credential (a failed authentication counts against the address). `Ok`
/// holds the principal (none: no credential) and the request's origin;
/// `Err` is the answer to send instead (403 for a foreign Host/Origin, 401,
/// 429).
#[allow(clippy::result_large_err, clippy::type_complexity)]
pub fn admit(
    state: &AppState,
    req: &Request,
    ip: Option<IpAddr>,
    rid: &RequestId,
) -> Result<(Option<Arc<Principal>>, Origin, Option<Decision>), (Response, Option<Decision>)> {
    let heads = Heads::of(req.headers());
    if let Some(e) = refuse(state, &heads) {
        return Err((ApiError::new(e, rid).into_response(), None));
    }
    let origin = Origin {
        ip,
        user_agent: heads
            .user_agent
            .and_then(|v| v.to_str().ok())
            // `to_str` admits visible ASCII only: any byte is a char boundary.
            .map(|v| v.get(..256).unwrap_or(v).into()),
        request_id: Some(rid.0.clone()),
    };
    let auth = &state.iris.auth;
    let is_get = req.method() == Method::GET;
    let found = crate::auth::credential_from(heads.authorization, req.uri(), is_get)
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
        principal => Ok((principal.and_then(Result::ok), origin, limit)),
    }
}

/// The headers of a JSON answer: `Content-Type` and [`SECURITY_HEADERS`]
/// (the gate adds its own in [`finish`]). Copying one ready map costs less
/// than inserting six headers one by one on the API's busiest responses.
/// (Placeholders for the gate's headers were tried: copying four more
/// entries cost more than inserting them.)
///
/// [`SECURITY_HEADERS`]: crate::guard::SECURITY_HEADERS
pub fn json_headers() -> HeaderMap {
    static JSON: std::sync::LazyLock<HeaderMap> = std::sync::LazyLock::new(|| {
        let mut m = HeaderMap::with_capacity(16);
        m.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in crate::guard::SECURITY_HEADERS {
            m.insert(name, HeaderValue::from_static(value));
        }
        m
    });
    JSON.clone()
}

/// The way out of every request: security and rate-limit headers, the
/// request id, metrics and the access log.
pub fn finish(
    mut resp: Response,
    rid: &RequestId,
    limit: Option<&Decision>,
    route: &str,
    method: &Method,
    started: Instant,
    path: Option<&str>,
) -> Response {
    let h = resp.headers_mut();
    // Room for what is added below, so the map grows at most once.
    h.reserve(10);
    security_headers(h);
    if let Some(d) = limit {
        rate_headers(h, d);
    }
    if let Ok(v) = HeaderValue::from_str(&rid.0) {
        h.insert(HEADER, v);
    }
    let status = resp.status().as_u16();
    crate::metrics::record_request(route, method, status, started.elapsed().as_secs_f64());
    if let Some(path) = path {
        access_log(rid, method, path, status, started);
    }
    resp
}

/// One line of the access log (`iris::access`), out of line: it is off by
/// default, and its formatting code would sit in the middle of the hot path.
#[cold]
#[inline(never)]
fn access_log(rid: &RequestId, method: &Method, path: &str, status: u16, started: Instant) {
    tracing::info!(
        target: "iris::access",
        request_id = %rid.0,
        method = %method,
        path = %path,
        status,
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
}

/// The header values of a limit and a reset time, remembered per thread:
/// a limit is the same for every request of a caller and a reset time for
/// a second, so most requests share the values made for an earlier one.
fn recent(limit: u64, reset: u64) -> (HeaderValue, HeaderValue) {
    thread_local! {
        static RECENT: std::cell::RefCell<[Option<(u64, HeaderValue)>; 2]> =
            const { std::cell::RefCell::new([None, None]) };
    }
    let value = |slot: &mut Option<(u64, HeaderValue)>, n: u64| match slot {
        Some((m, v)) if *m == n => v.clone(),
        _ => {
            let v = number(n);
            *slot = Some((n, v.clone()));
            v
        }
    };
    RECENT.with(|r| {
        let [l, r] = &mut *r.borrow_mut();
        (value(l, limit), value(r, reset))
    })
}

/// 429 with the error body; the headers are added on the way out.
#[cold]
fn too_many(d: &Decision, rid: &RequestId) -> Response {
    let e = IrisError::new(
        ErrorKind::RateLimited,
        format!("rate limit of {} requests exceeded; retry later", d.limit),
    )
    .with_details(serde_json::json!({"retryAfterMs": d.retry_after.as_millis() as u64}));
    ApiError::new(e, rid).into_response()
}

/// A number as a header value in one allocation (`HeaderValue::from` for
/// integers takes two).
fn number(n: u64) -> HeaderValue {
    HeaderValue::from_str(itoa::Buffer::new().format(n)).unwrap_or_else(|_| HeaderValue::from(n))
}

/// `X-RateLimit-Limit/Remaining/Reset`, and `Retry-After` when refused.
fn rate_headers(h: &mut HeaderMap, d: &Decision) {
    let (limit, reset) = recent(u64::from(d.limit), d.reset);
    h.insert(LIMIT, limit);
    h.insert(REMAINING, number(u64::from(d.remaining)));
    h.insert(RESET, reset);
    if !d.allowed {
        let secs = d.retry_after.as_secs() + u64::from(d.retry_after.subsec_nanos() > 0);
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_answer(limit: Option<&Decision>) -> HeaderMap {
        let mut resp = Response::new(axum::body::Body::empty());
        *resp.headers_mut() = json_headers();
        let rid = RequestId("req_test".into());
        let route = "/api/v1/test";
        finish(resp, &rid, limit, route, &Method::GET, Instant::now(), None)
            .headers()
            .clone()
    }

    /// One walk finds what four lookups did: the first value of each.
    #[test]
    fn the_gate_finds_its_headers_in_one_walk() {
        let mut h = HeaderMap::new();
        h.append(header::HOST, HeaderValue::from_static("first"));
        h.append(header::HOST, HeaderValue::from_static("second"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k"));
        h.insert(header::USER_AGENT, HeaderValue::from_static("curl"));
        let heads = Heads::of(&h);
        assert_eq!(heads.host, h.get(header::HOST));
        assert_eq!(heads.host.map(|v| v.as_bytes()), Some(&b"first"[..]));
        assert_eq!(heads.authorization, h.get(header::AUTHORIZATION));
        assert_eq!(heads.user_agent, h.get(header::USER_AGENT));
        assert_eq!(heads.origin, None);
    }

    /// The arrival's walk finds the first request id and the headers that
    /// send a request through the layers, as lookups would.
    #[test]
    fn the_arrival_finds_the_request_id_and_the_layers_headers() {
        let of = |h: &HeaderMap| {
            let a = arrival(h, None);
            (a.caller.request_id, a.layered)
        };
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("localhost"));
        let (id, layered) = of(&h);
        assert!(id.0.starts_with("req_") && !layered, "{}", id.0);
        h.append(HEADER, HeaderValue::from_static("first-id"));
        h.append(HEADER, HeaderValue::from_static("second-id"));
        let (id, layered) = of(&h);
        assert_eq!((&*id.0, layered), ("first-id", false));
        assert_eq!(id.0, id_of(&h).0);
        for name in [header::ORIGIN, header::ACCEPT_ENCODING] {
            let mut h = h.clone();
            h.insert(name.clone(), HeaderValue::from_static("x"));
            assert!(of(&h).1, "{name}");
        }
        // Not acceptable (a space): a new id, as with `id_of`.
        h.insert(HEADER, HeaderValue::from_static("bad id"));
        assert!(of(&h).0.0.starts_with("req_"));
    }

    /// A JSON answer leaves the gate with its own headers and the gate's, once each.
    #[test]
    fn a_json_answer_leaves_the_gate_with_every_header_once() {
        let h = json_answer(None);
        for name in [LIMIT, REMAINING, RESET] {
            assert!(!h.contains_key(&name), "{name}");
        }
        assert_eq!(h[HEADER], "req_test");
        assert_eq!(h[header::CONTENT_TYPE], "application/json");
        for (name, value) in crate::guard::SECURITY_HEADERS {
            assert_eq!(h[&name], value, "{name}");
        }
        assert_eq!(h.len(), crate::guard::SECURITY_HEADERS.len() + 2);
        let d = Decision {
            allowed: true,
            limit: 100,
            remaining: 99,
            reset: 1_700_000_000,
            retry_after: std::time::Duration::ZERO,
        };
        let h = json_answer(Some(&d));
        assert_eq!(h[LIMIT], "100");
        assert_eq!(h[REMAINING], "99");
        assert_eq!(h[RESET], "1700000000");
        assert_eq!(h.len(), crate::guard::SECURITY_HEADERS.len() + 5);
    }
}
