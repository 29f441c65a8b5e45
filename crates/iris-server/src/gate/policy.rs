//! What the gate does differently per route, declared once: the routes
//! that answer without a credential, the WebSockets that may authenticate
//! with their first message, and the streams `api.requestTimeout` does not
//! cut. Every other route — including any service mounted later and the
//! fallback — needs a credential and is timed.
//!
//! Templates are axum's (`MatchedPath`); `{api}` stands for both API
//! prefixes, `/api/v1` and `/api`.

use std::collections::HashMap;

/// The API's two prefixes: canonical and unversioned (DESIGN section 5).
pub const API_PREFIXES: [&str; 2] = ["/api/v1", "/api"];

/// Answer without a credential: health probes, the API's description, and
/// the steps of a login (which is how a credential is obtained).
pub const PUBLIC: &[&str] = &[
    "/healthz",
    "/health",
    "/ready",
    "{api}/openapi.json",
    "{api}/docs",
    "{api}/docs/app.js",
    "{api}/auth/login",
    "{api}/auth/register",
    "{api}/auth/refresh",
    "{api}/auth/mfa/verify",
    // The dashboard's page and assets (it signs in through the API).
    "/ui",
    "/ui/",
    "/ui/app.js",
    "/ui/app.css",
    "/dashboard",
    "/",
    // Another node's forwarded call: signed with the cluster's secret,
    // checked by its handler (transport/internal.rs).
    "/internal/v1/dispatch",
];

/// WebSockets whose first message may carry the credential (browsers
/// cannot set headers on one); a socket that sends none is closed with
/// 1008. Socket.IO's is its handshake's `auth` (its CONNECT packet),
/// checked by its connect middleware, which refuses with `connect_error`.
pub const FIRST_MESSAGE: &[&str] = &["{api}/stream", "/ws", "/socket.io/", "/socket.io"];

/// Streams: their answer starts at once and lasts as long as the stream,
/// so `api.requestTimeout` does not apply.
pub const STREAMS: &[&str] = &[
    "{api}/stream",
    "/ws",
    "{api}/teams/{team}/stream",
    "{api}/messages/{id}/stream",
    // Socket.IO: long-polling GETs wait for events, WebSockets last.
    "/socket.io/",
    "/socket.io",
    // MCP: its GET stream, and POSTs answered with an event stream that
    // lasts as long as the tool call (a `send_message` waits for the team).
    "/mcp",
    // A forwarded `send_message` waits for the team like the caller does.
    "/internal/v1/dispatch",
    // A2A: a streamed send lasts as long as the turn, a blocking one waits
    // for it.
    "/a2a/{team}",
];

/// Who may call a route without a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A credential is required (when `api.requireAuth` is on).
    Guarded,
    /// Anyone may call it.
    Public,
    /// A WebSocket that may authenticate with its first message.
    FirstMessage,
}

/// A route's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub access: Access,
    /// Cut at `api.requestTimeout`.
    pub timed: bool,
}

/// A route that is not declared above.
pub const DEFAULT: Policy = Policy {
    access: Access::Guarded,
    timed: true,
};

/// The declared lists as one map from route template to policy.
#[derive(Debug)]
pub struct Policies(HashMap<String, Policy>);

impl Policies {
    pub fn new() -> Self {
        let mut map: HashMap<String, Policy> = HashMap::new();
        let mut set = |list: &[&str], f: &dyn Fn(&mut Policy)| {
            for template in list {
                for path in expand(template) {
                    f(map.entry(path).or_insert(DEFAULT));
                }
            }
        };
        set(PUBLIC, &|p| p.access = Access::Public);
        set(FIRST_MESSAGE, &|p| p.access = Access::FirstMessage);
        set(STREAMS, &|p| p.timed = false);
        Policies(map)
    }

    /// The policy of the route `template` (`None`: no route matched).
    pub fn of(&self, template: Option<&str>) -> Policy {
        template
            .and_then(|t| self.0.get(t))
            .copied()
            .unwrap_or(DEFAULT)
    }

    /// The templates that are not [`Access::Guarded`] (for tests and docs).
    pub fn open_routes(&self) -> impl Iterator<Item = (&str, Access)> {
        self.0
            .iter()
            .filter(|(_, p)| p.access != Access::Guarded)
            .map(|(t, p)| (t.as_str(), p.access))
    }
}

impl Default for Policies {
    fn default() -> Self {
        Self::new()
    }
}

/// A declared template under each API prefix, or itself.
fn expand(template: &str) -> Vec<String> {
    match template.strip_prefix("{api}") {
        Some(rest) => API_PREFIXES.iter().map(|p| format!("{p}{rest}")).collect(),
        None => vec![template.to_owned()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_expand_under_both_prefixes_and_the_rest_is_guarded() {
        let p = Policies::new();
        assert_eq!(p.of(Some("/api/v1/auth/login")).access, Access::Public);
        assert_eq!(p.of(Some("/api/auth/login")).access, Access::Public);
        assert_eq!(p.of(Some("/ws")).access, Access::FirstMessage);
        assert!(!p.of(Some("/ws")).timed);
        assert!(!p.of(Some("/api/teams/{team}/stream")).timed);
        assert_eq!(
            p.of(Some("/api/v1/teams/{team}/stream")).access,
            Access::Guarded
        );
        assert_eq!(p.of(Some("/api/v1/teams")), DEFAULT);
        assert_eq!(p.of(None), DEFAULT);
    }
}
