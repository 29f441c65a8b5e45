//! HTTP for Iris. Every route turns its request into `(Ctx, operation,
//! params)` and calls the core's `dispatch`; errors go through the one
//! table of `iris_core::error`. No business logic lives here.

mod auth;
mod edge;
mod error;
mod gate;
mod guard;
mod header_timer;
mod metrics;
mod openapi;
mod params;
mod request;
mod rest;
mod routing;
mod serve;
mod session;
mod sse;
mod system;
mod ws;

use std::sync::Arc;

use iris_core::Iris;
use iris_core::auth::Principal;

use edge::app;
pub use error::ApiError;
pub use guard::SECURITY_HEADERS;
pub use request::new_request_id;
pub use serve::{Running, start};

/// Shared by every handler; one `Arc`, so cloning it per request is cheap.
/// Each connection has its own (see [`AppState::for_connection`]).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// A copy for one connection: its requests clone this `Arc` and the
    /// open caller's, and with one per connection those reference counts
    /// stay in the cache of the core serving it instead of bouncing
    /// between cores on every request. What is shared (Iris, the counters
    /// of open streams, stopping) is shared through the copy.
    pub fn for_connection(&self) -> AppState {
        let mut shared = Shared::clone(&self.0);
        shared.open = Arc::new(Principal::clone(&self.0.open));
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

#[derive(Clone)]
pub struct Shared {
    pub iris: Arc<Iris>,
    /// The caller of a request without a credential when `api.requireAuth`
    /// is off (Iris's own, copied per connection).
    pub open: Arc<Principal>,
    /// Open WebSocket connections (capped by `api.websocket.maxConnections`).
    pub ws_connections: Arc<std::sync::atomic::AtomicUsize>,
    /// Open SSE streams.
    pub sse_streams: Arc<std::sync::atomic::AtomicUsize>,
    /// The `Host` names requests may carry (DNS-rebinding protection).
    pub hosts: Arc<guard::Hosts>,
    /// The server's stopping, for connections that outlive their request.
    pub lifecycle: serve::Lifecycle,
}

/// The routes, each behind the gate (see [`gate`]; [`app`] adds the rest).
pub fn router(iris: Arc<Iris>, lifecycle: serve::Lifecycle) -> anyhow::Result<routing::Table> {
    metrics::handle();
    let state = AppState(Arc::new(Shared {
        lifecycle,
        open: iris.auth.open_principal(),
        hosts: Arc::new(guard::Hosts::new(&iris.config.api)),
        iris,
        ws_connections: Default::default(),
        sse_streams: Default::default(),
    }));
    routing::Routes::new()
        .merge(rest::routes("/api/v1")?)
        .merge(rest::routes("/api")?)
        .merge(session::routes("/api/v1"))
        .merge(session::routes("/api"))
        .merge(system::routes())
        .merge(sse::routes("/api/v1"))
        .merge(sse::routes("/api"))
        .merge(ws::routes())
        .build(state)
}
