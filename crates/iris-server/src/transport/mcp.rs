//! `/mcp`: MCP over Streamable HTTP, rmcp's tower service (built by
//! `iris_mcp::http_service`) mounted behind the gate like every route, so
//! it has the same keys and tokens (401 with `WWW-Authenticate: Bearer`
//! without one), Host and Origin checks, body cap, rate limits and audit.
//! The only thing added here is the caller: the gate's [`Caller`] as the
//! [`iris_core::Ctx`] the MCP handler runs each request as.

use axum::Router;
use axum::extract::Request;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;

use crate::serve::FINISHING;
use crate::{AppState, Caller};

pub fn routes(state: &AppState) -> Router<AppState> {
    // MCP sessions (and their GET streams) end when the server stops.
    let stop = CancellationToken::new();
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let (lifecycle, stop) = (state.lifecycle.clone(), stop.clone());
        runtime.spawn(async move {
            lifecycle.reached(FINISHING).await;
            stop.cancel();
        });
    }
    let api = &state.iris.config.api;
    let mcp = iris_mcp::http_service(state.iris.clone(), api.max_body_bytes, stop);
    let service = ServiceBuilder::new().map_request(with_ctx).service(mcp);
    Router::new().route_service("/mcp", service)
}

/// The gate's caller as the core's context, in the request's extensions
/// (a request without a principal gets none, and the handler refuses it).
fn with_ctx(mut request: Request) -> Request {
    let ctx = request
        .extensions()
        .get::<Caller>()
        .and_then(|c| c.ctx().ok());
    if let Some(ctx) = ctx {
        request.extensions_mut().insert(ctx);
    }
    request
}
