//! What every handler shares.

use std::sync::Arc;

use iris_core::Iris;
use iris_core::auth::Principal;

use crate::lifecycle::Lifecycle;

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
    pub(crate) fn new(iris: Arc<Iris>, lifecycle: Lifecycle) -> Self {
        AppState(Arc::new(Shared {
            lifecycle,
            open: iris.auth().open_principal(),
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
    /// The server's stopping, for connections that outlive their request.
    pub lifecycle: Lifecycle,
}
