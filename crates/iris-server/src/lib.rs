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

use edge::app;
pub use error::ApiError;
pub use guard::SECURITY_HEADERS;
pub use request::new_request_id;
pub use serve::{Running, start};

/// Shared by every handler; one `Arc`, so cloning it per request is cheap.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub iris: Arc<Iris>,
    /// Open WebSocket connections (capped by `api.websocket.maxConnections`).
    pub ws_connections: Arc<std::sync::atomic::AtomicUsize>,
    /// Open SSE streams.
    pub sse_streams: Arc<std::sync::atomic::AtomicUsize>,
    /// The `Host` names requests may carry (DNS-rebinding protection).
    pub hosts: guard::Hosts,
    /// The server's stopping, for connections that outlive their request.
    pub lifecycle: serve::Lifecycle,
}

/// The routes, each behind the gate (see [`gate`]; [`app`] adds the rest).
pub fn router(iris: Arc<Iris>, lifecycle: serve::Lifecycle) -> anyhow::Result<routing::Table> {
    metrics::handle();
    let state = AppState(Arc::new(Shared {
        lifecycle,
        hosts: guard::Hosts::new(&iris.config.api),
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
