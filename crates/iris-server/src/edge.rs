//! The outermost service: the routes (each behind the gate), and CORS and
//! compression around them only for the requests that need them.

use std::sync::Arc;

use iris_core::Iris;
use tower_http::compression::predicate::{And, NotForContentType, Predicate, SizeAbove};

use crate::router;
use crate::routing::{Answered, Table};

/// JSON worth compressing: a few hundred bytes gain little and cost a
/// gzip stream each; streams and images are never compressed.
type Worth = And<And<And<SizeAbove, NotForContentType>, NotForContentType>, NotForContentType>;
type Full = tower_http::cors::Cors<tower_http::compression::Compression<Table, Worth>>;

/// The HTTP service: the routes, each behind the gate, and around them
/// CORS and compression — taken only by the requests that need them (a
/// browser's `Origin`, an `Accept-Encoding`), since both cost on every
/// request they see even when they change nothing.
#[derive(Clone)]
pub struct App(Arc<Edge>);

struct Edge {
    plain: Table,
    full: Full,
}

pub fn app(iris: Arc<Iris>, lifecycle: crate::serve::Lifecycle) -> anyhow::Result<App> {
    use tower::Layer;
    let api = iris.config.api.clone();
    // The body limit is applied where bodies are read (`params::Body`).
    let plain = router(iris, lifecycle)?;
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
    Ok(App(Arc::new(Edge {
        plain,
        full: cors.layer(compressed),
    })))
}

impl tower::Service<axum::extract::Request> for App {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = Answered;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // Both paths end in the router, which is always ready.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::extract::Request) -> Self::Future {
        self.handle(req, self.0.plain.state(), None)
    }
}

impl App {
    /// [`tower::Service::call`] without `&mut`, with the `state` of the
    /// connection the request came on (see
    /// [`crate::AppState::for_connection`]; the layers' path uses the
    /// shared one), for a request that has `arrived` through the accept
    /// loop (`None`: the gate finds or makes its request id).
    pub fn handle(
        &self,
        req: axum::extract::Request,
        state: &crate::AppState,
        arrived: Option<crate::request::Arrived>,
    ) -> Answered {
        let (caller, layered) = match arrived {
            Some(a) => (Some(a.caller), a.layered),
            None => (None, req.headers().keys().any(crate::request::needs_layers)),
        };
        if layered {
            self.through_layers(req, caller)
        } else {
            Answered::from(self.0.plain.handle(req, state, caller))
        }
    }

    /// The state of a new connection.
    pub fn connection_state(&self) -> crate::AppState {
        self.0.plain.state().for_connection()
    }

    /// Through CORS and compression; out of line, so that the layers' code
    /// does not sit in the middle of the plain path, and boxed, so that the
    /// plain path's future stays a pointer (hyper moves it on every request).
    #[inline(never)]
    fn through_layers(
        &self,
        mut req: axum::extract::Request,
        arrived: Option<crate::auth::Caller>,
    ) -> Answered {
        use futures_util::FutureExt;
        use tower::Service;
        // Through the layers, the arrival travels with the request.
        if let Some(caller) = arrived {
            req.extensions_mut().insert(caller);
        }
        let answer = self.0.full.clone().call(req).map(|r| match r {
            Ok(resp) => resp.map(axum::body::Body::new),
            Err(never) => match never {},
        });
        Answered::from(Box::pin(answer) as crate::routing::Answer)
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
