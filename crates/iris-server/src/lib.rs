//! HTTP for Iris: an axum [`Router`] of thin transports (REST, SSE,
//! WebSockets, JSON-RPC, `/rpc`) over the core's one `dispatch`, behind one
//! gate layer ([`gate`]) that every route, mounted service and fallback
//! passes through. Errors go through the one table of `iris_core::error`.
//! No business logic lives here.
//!
//! The request path, outside in: [`serve`] (connections, the cap, header
//! timeout, stopping) → the router's match → [`gate`] (request id,
//! Host/Origin, authentication, rate limit, timeout, headers, metrics) →
//! CORS → compression → body limit → the route's handler in [`transport`].

mod error;
mod gate;
mod params;
mod serve;
mod transport;

use std::sync::Arc;

use axum::Router;
use iris_core::Iris;
use iris_core::auth::Principal;

pub use error::ApiError;
pub use gate::caller::{Caller, RequestId};
pub use gate::headers::{SECURITY_HEADERS, new_request_id};
pub use gate::policy::{Access, Policies};
pub use serve::{Lifecycle, Running, start, start_with};

/// What every handler shares; one `Arc`, so cloning it per request is cheap.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    fn new(iris: Arc<Iris>, lifecycle: Lifecycle) -> Self {
        AppState(Arc::new(Shared {
            lifecycle,
            open: iris.auth.open_principal(),
            hosts: gate::host::Hosts::new(&iris.config.api),
            iris,
            ws_connections: Default::default(),
            ws_pending: Default::default(),
            sse_streams: Default::default(),
        }))
    }
}

pub struct Shared {
    pub iris: Arc<Iris>,
    /// The caller of a request without a credential when `api.requireAuth`
    /// is off (Iris's own).
    pub open: Arc<Principal>,
    /// Open WebSocket connections (capped by `api.websocket.maxConnections`).
    pub ws_connections: Arc<std::sync::atomic::AtomicUsize>,
    /// WebSockets still to send their credential (capped by
    /// `api.websocket.maxUnauthenticated`).
    pub ws_pending: Arc<std::sync::atomic::AtomicUsize>,
    /// Open SSE streams.
    pub sse_streams: Arc<std::sync::atomic::AtomicUsize>,
    /// The `Host` names requests may carry (DNS-rebinding protection).
    pub hosts: gate::host::Hosts,
    /// The server's stopping, for connections that outlive their request.
    pub lifecycle: Lifecycle,
}

/// The whole HTTP service: Iris's transports and `mounted` (a router of
/// further services, for instance MCP or Socket.IO), with the fallbacks,
/// all behind the gate; inside it CORS, compression and the body limit.
/// Routes are declared with axum's own constructors in [`transport`];
/// nothing can be added to the result without passing through the gate.
pub fn app(
    iris: Arc<Iris>,
    lifecycle: Lifecycle,
    mounted: Router<AppState>,
) -> anyhow::Result<App> {
    gate::metrics::handle();
    let state = AppState::new(iris, lifecycle);
    let api = &state.iris.config.api;
    let layers = tower::ServiceBuilder::new()
        .layer(gate::GateLayer::new(state.clone()))
        .layer(transport::cors(api))
        .layer(transport::compression())
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            api.max_body_bytes,
        ));
    let router = transport::routes(&state)?
        .merge(mounted)
        .fallback(error::unknown_route)
        .method_not_allowed_fallback(error::wrong_method)
        .layer(layers)
        .with_state(state);
    // axum writes a 405's `Allow` after every layer inside the router has run.
    Ok(tower::ServiceExt::<axum::extract::Request>::map_response(
        router,
        gate::headers::tidy_allow as fn(_) -> _,
    ))
}

/// The HTTP service [`app`] makes.
pub type App =
    tower::util::MapResponse<Router, fn(axum::response::Response) -> axum::response::Response>;

/// Every route template Iris's own transports serve, read from the router
/// itself (for the test that walks them all, and for docs).
///
/// axum has no API that lists a router's routes; its `Debug` output names
/// each template, so a change there fails that test loudly rather than
/// walking fewer routes.
pub fn route_templates(iris: Arc<Iris>) -> anyhow::Result<Vec<String>> {
    let state = AppState::new(iris, Lifecycle::stopped());
    let text = format!("{:?}", transport::routes(&state)?);
    let mut found: Vec<String> = text
        .split('"')
        .filter(|s| s.starts_with('/'))
        .map(str::to_owned)
        .collect();
    found.sort();
    found.dedup();
    Ok(found)
}
