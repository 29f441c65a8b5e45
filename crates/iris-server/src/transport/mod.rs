//! The transports: each a module of axum routes that turns requests into
//! `(Ctx, operation, params)` for the core's `dispatch` and renders what
//! comes back. They read the caller the gate left ([`crate::gate::caller::Caller`]) and
//! hold no business logic.

pub mod a2a;
pub mod auth;
pub mod internal;
pub mod mcp;
pub mod openapi;
pub mod rest;
pub mod rpc;
pub mod socketio;
pub mod sse;
pub mod system;
pub mod ui;
pub mod ws;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, header};
use iris_core::config::ApiConfig;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::gate::policy::API_PREFIXES;
use crate::state::AppState;

/// Every route of every transport (without the gate: [`crate::app`] adds it).
pub fn routes(state: &AppState) -> anyhow::Result<Router<AppState>> {
    let mut router = Router::new()
        .merge(system::routes())
        .merge(a2a::routes())
        .merge(mcp::routes(state))
        .merge(rpc::routes())
        .merge(internal::routes())
        .merge(socketio::routes(state))
        .merge(ui::routes())
        .merge(ws::routes());
    for prefix in API_PREFIXES {
        router = router
            .merge(rest::routes(prefix)?)
            .merge(auth::routes(prefix))
            .merge(sse::routes(prefix))
            .merge(openapi::routes(prefix));
    }
    Ok(router)
}

/// CORS for `api.cors`; disabled, it allows no origin (browsers get no
/// CORS headers).
pub fn cors(api: &ApiConfig) -> CorsLayer {
    if !api.cors.enabled {
        return CorsLayer::new();
    }
    let allow = if api.cors.origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let origins: Arc<Vec<HeaderValue>> = Arc::new(
            api.cors
                .origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect(),
        );
        AllowOrigin::predicate(move |origin, _| origins.contains(origin))
    };
    let request_id = HeaderName::from_static("x-request-id");
    CorsLayer::new()
        // No `Vary`: every answer is `Cache-Control: no-store`, so no cache
        // keeps one to hand to another origin.
        .vary([])
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
            request_id.clone(),
        ])
        .expose_headers([
            request_id,
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderName::from_static("x-ratelimit-reset"),
            header::RETRY_AFTER,
        ])
}

/// gzip for answers worth it: a few hundred bytes gain little and cost a
/// gzip stream each; event streams and images are never compressed.
pub fn compression() -> CompressionLayer<impl Predicate> {
    let worth = SizeAbove::new(1024)
        .and(NotForContentType::GRPC)
        .and(NotForContentType::IMAGES)
        .and(NotForContentType::SSE);
    CompressionLayer::new().compress_when(worth)
}
