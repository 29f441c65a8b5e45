//! HTTP for Iris. Every route turns its request into `(Ctx, operation,
//! params)` and calls the core's `dispatch`; errors go through the one
//! table of `iris_core::error`. No business logic lives here.

mod auth;
mod error;
mod gate;
mod guard;
mod metrics;
mod openapi;
mod params;
mod request;
mod rest;
mod session;
mod sse;
mod system;
mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::serve::ListenerExt;
use iris_core::Iris;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::compression::predicate::{And, NotForContentType, Predicate, SizeAbove};

pub use error::ApiError;

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
}

/// The routes, each behind the gate (see [`gate`]; [`app`] adds the rest).
pub fn router(iris: Arc<Iris>) -> Router {
    metrics::handle();
    let state = AppState(Arc::new(Shared {
        iris,
        ws_connections: Default::default(),
        sse_streams: Default::default(),
    }));
    Router::new()
        .merge(rest::routes("/api/v1"))
        .merge(rest::routes("/api"))
        .merge(session::routes("/api/v1"))
        .merge(session::routes("/api"))
        .merge(system::routes())
        .merge(sse::routes("/api/v1"))
        .merge(sse::routes("/api"))
        .merge(ws::routes())
        .fallback(gate::Gated::call_route(error::unknown_route))
        .method_not_allowed_fallback(gate::Gated::call_route(error::wrong_method))
        .with_state(state)
}

/// The routes with the body limit: enforced where bodies are read (the
/// `Bytes` extractor), inside the gate, which gives the 413 its error body.
type Limited = <axum::extract::DefaultBodyLimit as tower::Layer<Router>>::Service;

/// JSON worth compressing: a few hundred bytes gain little and cost a
/// gzip stream each; streams and images are never compressed.
type Worth = And<And<And<SizeAbove, NotForContentType>, NotForContentType>, NotForContentType>;
type Full = tower_http::cors::Cors<tower_http::compression::Compression<Limited, Worth>>;
type FullBody = tower_http::compression::CompressionBody<axum::body::Body>;

/// The HTTP service: the routes, each behind the gate, and around them
/// CORS and compression — taken only by the requests that need them (a
/// browser's `Origin`, an `Accept-Encoding`), since both cost on every
/// request they see even when they change nothing.
#[derive(Clone)]
pub struct App(Arc<Edge>);

struct Edge {
    plain: Limited,
    full: Full,
}

pub fn app(iris: Arc<Iris>) -> App {
    use tower::Layer;
    let api = iris.config.api.clone();
    let plain = axum::extract::DefaultBodyLimit::max(api.max_body_bytes).layer(router(iris));
    let worth = SizeAbove::new(1024)
        .and(NotForContentType::GRPC)
        .and(NotForContentType::IMAGES)
        .and(NotForContentType::SSE);
    let compressed = tower_http::compression::CompressionLayer::new()
        .compress_when(worth)
        .layer(plain.clone());
    // Disabled CORS allows no origin: browsers get no CORS headers.
    let cors = if api.cors.enabled {
        cors(&api)
    } else {
        tower_http::cors::CorsLayer::new()
    };
    App(Arc::new(Edge {
        plain,
        full: cors.layer(compressed),
    }))
}

type FullFuture = futures_util::future::MapOk<
    <Full as tower::Service<axum::extract::Request>>::Future,
    fn(axum::http::Response<FullBody>) -> axum::response::Response,
>;

impl tower::Service<axum::extract::Request> for App {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::Either<
        <Limited as tower::Service<axum::extract::Request>>::Future,
        FullFuture,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // Both paths end in the router, which is always ready.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::extract::Request) -> Self::Future {
        use axum::http::header;
        use futures_util::TryFutureExt;
        use futures_util::future::Either;
        let h = req.headers();
        if h.contains_key(header::ORIGIN) || h.contains_key(header::ACCEPT_ENCODING) {
            let to_body: fn(axum::http::Response<FullBody>) -> axum::response::Response =
                |r| r.map(axum::body::Body::new);
            Either::Right(self.0.full.clone().call(req).map_ok(to_body))
        } else {
            Either::Left(self.0.plain.clone().call(req))
        }
    }
}

fn cors(api: &iris_core::config::ApiConfig) -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderName, HeaderValue, Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<HeaderValue> = api
        .cors
        .origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let allow = if api.cors.origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        // A predicate over a shared list: the layer is cloned per request,
        // and a plain list would be copied each time.
        let origins = Arc::new(origins);
        AllowOrigin::predicate(move |origin, _| origins.contains(origin))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderName::from_static("x-ratelimit-reset"),
            header::RETRY_AFTER,
        ])
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    port_file: Option<PathBuf>,
    grace: std::time::Duration,
}

impl Running {
    /// Stop accepting, let in-flight requests and streams finish for up to
    /// `api.shutdownGrace`, then drop them; remove the port file.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(self.grace, &mut task).await.is_err() {
            tracing::warn!("requests still open after the shutdown grace; closing them");
            task.abort();
        }
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
    let grace = std::time::Duration::from_millis(iris.config.api.shutdown_grace);
    let (stop, mut stopped) = watch::channel(false);
    let app = axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
        SocketAddr,
    >(app(iris));
    let task = tokio::spawn(async move {
        // No Nagle delay: stream events are small writes that must leave at once.
        axum::serve(
            listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            }),
            app,
        )
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
        grace,
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
