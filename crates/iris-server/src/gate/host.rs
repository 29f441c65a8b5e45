//! DNS-rebinding protection: the `Host` and `Origin` a request may carry.
//!
//! A browser page on `evil.example` that resolves its name to 127.0.0.1
//! could otherwise reach a loopback Iris. So the `Host` header must name the
//! bind address (on a loopback bind also `localhost`, `127.0.0.1`, `[::1]`)
//! or one of `api.allowedHosts`, and an `Origin`, when a browser sends one,
//! must be one of `api.cors.origins` or the server itself.

use iris_core::config::ApiConfig;

/// The `Host` names a request may carry, worked out once from the
/// config (the check runs on every request).
#[derive(Debug)]
pub struct Hosts {
    /// Bound to every address with no names configured: the operator chose exposure.
    any: bool,
    names: Vec<String>,
}

impl Hosts {
    pub fn new(api: &ApiConfig) -> Self {
        let bind = api.host.trim_start_matches('[').trim_end_matches(']');
        let is = |choices: &[&str]| choices.iter().any(|c| bind.eq_ignore_ascii_case(c));
        let mut names = vec![bind.to_owned()];
        // Loopback names on a loopback or every-address bind: how this
        // machine's own clients (the agents Iris runs among them) call it; a
        // rebinding page sends its own name, never these.
        if is(&["127.0.0.1", "localhost", "::1", "0.0.0.0", "::"]) {
            names.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
        }
        names.extend(api.allowed_hosts.iter().cloned());
        Hosts {
            any: is(&["0.0.0.0", "::"]) && api.allowed_hosts.is_empty(),
            names,
        }
    }

    /// Whether `host` (a `Host` header, possibly with a port) is acceptable.
    pub fn allow(&self, host: &str) -> bool {
        let name = strip_port(host);
        // Clients send the name as configured almost always: compare bytes first.
        self.any
            || self.names.iter().any(|n| n.as_bytes() == name.as_bytes())
            || self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }
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

/// Whether a browser `Origin` may call a request sent to `host` (its `Host`
/// header): a configured CORS origin, or a page served by an allowed host.
/// Bound to every address with no names configured, every `Host` is
/// allowed, so there a page's origin must be the server it calls (the
/// request's own `Host`): any other site's page is refused.
pub fn origin_allowed(api: &ApiConfig, hosts: &Hosts, origin: &str, host: &str) -> bool {
    if api.cors.enabled
        && api
            .cors
            .origins
            .iter()
            .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let served = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
    if hosts.any {
        return strip_port(served).eq_ignore_ascii_case(strip_port(host));
    }
    hosts.allow(served)
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

    fn hosts(host: &str, allowed: &[&str]) -> Hosts {
        Hosts::new(&api(host, allowed))
    }

    #[test]
    fn loopback_binds_accept_loopback_names_only() {
        let a = hosts("127.0.0.1", &[]);
        for ok in ["127.0.0.1:1615", "localhost", "LOCALHOST:80", "[::1]:1615"] {
            assert!(a.allow(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:1615",
            "127.0.0.1.evil.example",
            "10.0.0.1",
        ] {
            assert!(!a.allow(bad), "{bad}");
        }
        assert!(hosts("127.0.0.1", &["iris.internal"]).allow("iris.internal:1615"));
        assert!(hosts("0.0.0.0", &[]).allow("anything"));
        assert!(!hosts("0.0.0.0", &["iris.internal"]).allow("anything"));
        assert!(hosts("0.0.0.0", &["iris.internal"]).allow("iris.internal"));
        // The machine's own clients (the agents Iris runs) by loopback.
        assert!(hosts("0.0.0.0", &["iris.internal"]).allow("127.0.0.1:1615"));
        assert!(!hosts("10.0.0.5", &[]).allow("127.0.0.1:1615"));
    }

    #[test]
    fn origins_must_be_configured_or_local() {
        let a = api("127.0.0.1", &[]);
        let h = Hosts::new(&a);
        let host = "127.0.0.1:1615";
        assert!(origin_allowed(&a, &h, "http://localhost:3100", host));
        assert!(origin_allowed(&a, &h, "http://127.0.0.1:1615", host));
        assert!(!origin_allowed(&a, &h, "https://evil.example", host));
    }

    /// Bound to every address: every Host is served, but only pages of the
    /// server itself (or configured CORS origins) may call it.
    #[test]
    fn on_every_address_an_origin_must_be_the_server_itself() {
        let a = api("0.0.0.0", &[]);
        let h = Hosts::new(&a);
        assert!(origin_allowed(
            &a,
            &h,
            "http://iris.lan:1615",
            "iris.lan:1615"
        ));
        assert!(
            origin_allowed(&a, &h, "http://localhost:3100", "iris.lan:1615"),
            "cors.origins"
        );
        assert!(!origin_allowed(
            &a,
            &h,
            "https://evil.example",
            "iris.lan:1615"
        ));
    }
}
