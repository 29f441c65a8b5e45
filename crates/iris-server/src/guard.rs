//! DNS-rebinding protection and security headers.
//!
//! A browser page on `evil.example` that resolves its name to 127.0.0.1
//! could otherwise reach a loopback Iris. So the `Host` header must name the
//! bind address (on a loopback bind also `localhost`, `127.0.0.1`, `[::1]`)
//! or one of `api.allowedHosts`, and an `Origin`, when a browser sends one,
//! must be one of `api.cors.origins` or the server itself.

use axum::http::{HeaderMap, HeaderValue, header};
use iris_core::config::ApiConfig;

/// Whether `host` (a `Host` header, possibly with a port) is acceptable.
pub fn host_allowed(api: &ApiConfig, host: &str) -> bool {
    // Runs on every request: compared without allocating.
    let name = strip_port(host);
    let bind = api.host.trim_start_matches('[').trim_end_matches(']');
    let is = |a: &str, choices: &[&str]| choices.iter().any(|c| a.eq_ignore_ascii_case(c));
    let loopback = is(bind, &["127.0.0.1", "localhost", "::1"]);
    if is(bind, &["0.0.0.0", "::"]) && api.allowed_hosts.is_empty() {
        // Bound to every address and no names configured: the operator chose exposure.
        return true;
    }
    name.eq_ignore_ascii_case(bind)
        || (loopback && is(name, &["localhost", "127.0.0.1", "::1"]))
        || api
            .allowed_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Whether a browser `Origin` may call: a configured CORS origin, or a page
/// served by an allowed host.
pub fn origin_allowed(api: &ApiConfig, origin: &str) -> bool {
    if api.cors.enabled
        && api
            .cors
            .origins
            .iter()
            .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
    host_allowed(api, host)
}

/// Headers every response carries unless a handler set them.
pub fn security_headers(h: &mut HeaderMap) {
    let defaults = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in defaults {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(host: &str, allowed: &[&str]) -> ApiConfig {
        ApiConfig {
            host: host.into(),
            allowed_hosts: allowed.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn loopback_binds_accept_loopback_names_only() {
        let a = api("127.0.0.1", &[]);
        for ok in ["127.0.0.1:1615", "localhost", "LOCALHOST:80", "[::1]:1615"] {
            assert!(host_allowed(&a, ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:1615",
            "127.0.0.1.evil.example",
            "10.0.0.1",
        ] {
            assert!(!host_allowed(&a, bad), "{bad}");
        }
        assert!(host_allowed(
            &api("127.0.0.1", &["iris.internal"]),
            "iris.internal:1615"
        ));
        assert!(host_allowed(&api("0.0.0.0", &[]), "anything"));
        assert!(!host_allowed(
            &api("0.0.0.0", &["iris.internal"]),
            "anything"
        ));
    }

    #[test]
    fn origins_must_be_configured_or_local() {
        let a = api("127.0.0.1", &[]);
        assert!(origin_allowed(&a, "http://localhost:3100"));
        assert!(origin_allowed(&a, "http://127.0.0.1:1615"));
        assert!(!origin_allowed(&a, "https://evil.example"));
    }
}
