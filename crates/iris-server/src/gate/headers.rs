//! The headers the gate reads and writes: the request id on the way in;
//! security headers, rate-limit headers and the request id on the way out.

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use iris_core::auth::Decision;

use super::caller::RequestId;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Headers every response carries unless a handler set them (public for
/// the benchmark's floor, which sends the same).
pub const SECURITY_HEADERS: [(HeaderName, &str); 5] = [
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "no-referrer"),
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; frame-ancestors 'none'",
    ),
    (header::CACHE_CONTROL, "no-store"),
];

/// The caller's `X-Request-ID` when it is acceptable (1-128 visible ASCII
/// characters), else a new `req_<ulid>`.
pub fn request_id(headers: &HeaderMap) -> RequestId {
    if let Some(id) = headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| (1..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic()))
    {
        return RequestId(id.into());
    }
    let buf = new_request_id();
    // Crockford base32 and "req_": ASCII, so always UTF-8.
    RequestId(std::str::from_utf8(&buf).unwrap_or("req_").into())
}

/// A fresh `req_<ulid>` (ASCII); public for the benchmark's floor, which
/// does the same work as Iris.
pub fn new_request_id() -> [u8; 4 + ulid::ULID_LEN] {
    let mut buf = [0u8; 4 + ulid::ULID_LEN];
    buf[..4].copy_from_slice(b"req_");
    let mut text = [0u8; ulid::ULID_LEN];
    buf[4..].copy_from_slice(ulid::Ulid::new().array_to_str(&mut text).as_bytes());
    buf
}

/// Add [`SECURITY_HEADERS`] where the handler has not set them (the API
/// page sets its own `Content-Security-Policy`).
pub fn security_headers(h: &mut HeaderMap) {
    for (name, value) in SECURITY_HEADERS {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    }
}

/// `X-RateLimit-Limit/Remaining/Reset`, and `Retry-After` when refused.
pub fn rate_headers(h: &mut HeaderMap, d: &Decision) {
    h.insert(LIMIT, HeaderValue::from(d.limit));
    h.insert(REMAINING, HeaderValue::from(d.remaining));
    h.insert(RESET, HeaderValue::from(d.reset));
    if !d.allowed {
        let secs = d.retry_after.as_secs() + u64::from(d.retry_after.subsec_nanos() > 0);
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
}

/// axum writes a 405's `Allow` as `GET,HEAD`; the list is written with a
/// space after each comma, as RFC 9110 section 5.6.1 shows lists.
pub fn tidy_allow(mut resp: axum::response::Response) -> axum::response::Response {
    let h = resp.headers_mut();
    let Some(allow) = h.get(header::ALLOW).and_then(|v| v.to_str().ok()) else {
        return resp;
    };
    let tidy = allow
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(v) = HeaderValue::from_str(&tidy) {
        h.insert(header::ALLOW, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_the_callers_when_acceptable() {
        let mut h = HeaderMap::new();
        assert!(request_id(&h).0.starts_with("req_"));
        h.insert(REQUEST_ID, HeaderValue::from_static("my-trace-42"));
        assert_eq!(&*request_id(&h).0, "my-trace-42");
        h.insert(REQUEST_ID, HeaderValue::from_static("bad id"));
        assert!(request_id(&h).0.starts_with("req_"));
    }

    #[test]
    fn a_handlers_headers_win_over_the_security_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("mine"),
        );
        security_headers(&mut h);
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], "mine");
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(h.len(), SECURITY_HEADERS.len());
    }

    #[test]
    fn rate_headers_and_allow_lists() {
        let mut h = HeaderMap::new();
        let d = Decision {
            allowed: false,
            limit: 100,
            remaining: 0,
            reset: 1_700_000_000,
            retry_after: std::time::Duration::from_millis(1500),
        };
        rate_headers(&mut h, &d);
        assert_eq!(h[LIMIT], "100");
        assert_eq!(h[REMAINING], "0");
        assert_eq!(h[RESET], "1700000000");
        assert_eq!(h[header::RETRY_AFTER], "2");
        let mut resp = axum::response::Response::default();
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST,DELETE"));
        assert_eq!(tidy_allow(resp).headers()[header::ALLOW], "POST, DELETE");
    }
}
