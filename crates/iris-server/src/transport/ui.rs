//! The dashboard at `/ui`: one page, its script and its style, embedded in
//! the binary (plain files, no build step: `assets/ui/`). The page itself
//! needs no credential (it is how one signs in); everything it shows comes
//! from the API with the signed-in user's token or key, so the gate and
//! the scopes apply as to any client. Its Content-Security-Policy allows
//! only the page's own origin: no CDN, no inline script.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;

use crate::state::AppState;

/// Only this origin, for everything the page loads or connects to.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(page))
        .route("/ui/", get(page))
        .route("/ui/app.js", get(script))
        .route("/ui/app.css", get(style))
        .route("/dashboard", get(|| async { Redirect::permanent("/ui") }))
        .route("/", get(|| async { Redirect::temporary("/ui") }))
}

fn asset(kind: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

async fn page() -> impl IntoResponse {
    asset(
        "text/html; charset=utf-8",
        include_str!("../../assets/ui/index.html"),
    )
}

async fn script() -> impl IntoResponse {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../assets/ui/app.js"),
    )
}

async fn style() -> impl IntoResponse {
    asset(
        "text/css; charset=utf-8",
        include_str!("../../assets/ui/app.css"),
    )
}
