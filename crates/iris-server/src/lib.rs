//! HTTP for Iris: an axum [`Router`] of thin transports (REST, SSE,
//! WebSockets, JSON-RPC, `/rpc`) over the core's one `dispatch`, behind one
//! gate layer ([`gate`]) that every route, mounted service and fallback
//! passes through. Errors go through the one table of `iris_core::error`.
//! No business logic lives here.
//!
//! Modules, each using only those below it: `error`, `lifecycle` and
//! `state` (what handlers share); `params`; `gate` (the layer); the
//! transports (`transport/*`, each an adapter); `app` (the router of them
//! all behind the gate); `serve` (listening).
//!
//! The request path, outside in: [`serve`] (connections, the cap, header
//! timeout, stopping) → the router's match → [`gate`] (request id,
//! Host/Origin, authentication, rate limit, timeout, headers, metrics) →
//! CORS → compression → body limit → the route's handler in [`transport`].

mod app;
mod error;
mod gate;
mod lifecycle;
mod params;
mod serve;
mod state;
mod transport;

pub use app::{App, app, route_templates};
pub use error::ApiError;
pub use gate::caller::{Caller, RequestId};
pub use gate::headers::{SECURITY_HEADERS, new_request_id};
pub use gate::policy::{Access, Policies};
pub use lifecycle::Lifecycle;
pub use serve::{Running, start, start_with};
pub use state::AppState;
