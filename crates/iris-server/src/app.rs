//! The whole HTTP service: the transports behind the one gate.

use std::sync::Arc;

use axum::Router;
use iris_core::Iris;

use crate::lifecycle::Lifecycle;
use crate::state::AppState;
use crate::{error, gate, transport};

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
    let api = &state.iris.config().api;
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
