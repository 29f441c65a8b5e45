//! HTTP for Iris. Every route turns its request into `(Ctx, operation,
//! params)` and calls the core's `dispatch`; errors go through the one
//! table of `iris_core::error`. No business logic lives here.

mod auth;
mod error;
mod params;
mod request;
mod rest;
mod sse;
mod system;
mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use iris_core::Iris;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use error::ApiError;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub iris: Arc<Iris>,
    /// Open WebSocket connections (capped by `api.websocket.maxConnections`).
    pub ws_connections: Arc<std::sync::atomic::AtomicUsize>,
}

/// Build the whole router.
pub fn router(iris: Arc<Iris>) -> Router {
    let max_body = iris.config.api.max_body_bytes;
    let state = AppState {
        iris,
        ws_connections: Default::default(),
    };
    Router::new()
        .nest("/api/v1", rest::routes().merge(sse::routes()))
        .nest("/api", rest::routes().merge(sse::routes()))
        .merge(system::routes())
        .merge(ws::routes())
        .fallback(error::unknown_route)
        .method_not_allowed_fallback(error::wrong_method)
        // The body limit sits inside, so the request-id layer can give its
        // 413 the error body.
        .layer(tower_http::limit::RequestBodyLimitLayer::new(max_body))
        .layer(axum::middleware::from_fn(request::request_id))
        .with_state(state)
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    port_file: Option<PathBuf>,
}

impl Running {
    /// Stop accepting, let in-flight requests finish, remove the port file.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        if let Some(p) = self.port_file {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Bind `api.host:api.port` (0 picks a free port), write the bound port to
/// `$IRIS_HOME/.http.port` (mode 0600) when `port_file` is set, and serve.
pub async fn start(iris: Arc<Iris>, port_file: Option<PathBuf>) -> anyhow::Result<Running> {
    let host = iris.config.api.host.clone();
    let port = iris.config.api_port();
    let listener = TcpListener::bind((host.as_str(), port))
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {host}:{port}: {e}"))?;
    let addr = listener.local_addr()?;
    if let Some(p) = &port_file {
        write_port_file(p, addr.port())?;
    }
    let (stop, mut stopped) = watch::channel(false);
    let app = router(iris);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await
    });
    tracing::info!(%addr, "API listening");
    Ok(Running {
        addr,
        stop,
        task,
        port_file,
    })
}

fn write_port_file(path: &std::path::Path, port: u16) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(path)?;
    write!(f, "{port}")?;
    Ok(())
}
