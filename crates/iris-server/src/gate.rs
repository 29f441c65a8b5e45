//! The gate in front of every route.
//!
//! Every route's handler runs inside [`gate`]: [`crate::routing::Routes`]
//! is the only way routes are made (clippy's `disallowed-methods` keeps
//! axum's own constructors out of this crate), and it wraps each handler
//! when the route is declared — one future per request, not a layer.
//! Handlers take the `Caller` as an argument or through an extractor that
//! refuses one the gate has not admitted, so a route that somehow escaped
//! it fails closed (500), never open.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use iris_core::auth::Decision;
use iris_core::{ErrorKind, IrisError};
use pin_project_lite::pin_project;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::request::{self, RequestId};

/// The metrics label of requests no route matched.
pub const UNMATCHED: &str = "unmatched";

/// The gate around `handler` for one request of the route `route`: admit
/// it (or answer the refusal), run the handler with the admitted caller
/// (within `api.requestTimeout` when `timed`), then add the headers and
/// metrics. `arrived`: the peer and request id from the accept loop, else
/// looked for in the request (through the CORS and compression layers) or
/// made here.
pub fn gate<F, Fut>(
    route: &'static str,
    timed: bool,
    mut req: Request,
    state: AppState,
    arrived: Option<Caller>,
    handler: F,
) -> GateFuture<Fut>
where
    F: FnOnce(Request, AppState, Caller) -> Fut,
    Fut: Future<Output = Response>,
{
    let started = Instant::now();
    let (ip, rid) = match arrived.or_else(|| req.extensions_mut().remove::<Caller>()) {
        Some(c) => (c.origin.ip, c.request_id),
        // Not through the accept loop (the router used on its own).
        None => (None, request::id_of(req.headers())),
    };
    let mut after = After {
        method: req.method().clone(),
        // The route template, not the path: bounded label values.
        route,
        // Only when the access log is on: the path is copied for it.
        path: tracing::enabled!(target: "iris::access", tracing::Level::INFO)
            .then(|| req.uri().path().to_owned()),
        started,
        limit: None,
        rid: rid.clone(),
    };
    let stage = match request::admit(&state, &req, ip, &rid) {
        Ok((principal, origin, limit)) => {
            after.limit = limit;
            let caller = Caller {
                principal,
                origin,
                request_id: rid,
                admitted: true,
            };
            let timeout = state.iris.config.api.request_timeout;
            let fut = handler(req, state, caller);
            if timed && timeout > 0 {
                Stage::Timed {
                    // From when the request arrived (also one clock read fewer).
                    fut: tokio::time::timeout_at(
                        tokio::time::Instant::from_std(started + Duration::from_millis(timeout)),
                        fut,
                    ),
                }
            } else {
                Stage::Running { fut }
            }
        }
        Err((refusal, limit)) => {
            after.limit = limit;
            Stage::Answered {
                resp: Some(refusal),
            }
        }
    };
    GateFuture {
        stage,
        after: Some(after),
    }
}

/// What the gate adds to the answer on its way out.
struct After {
    rid: RequestId,
    limit: Option<Decision>,
    route: &'static str,
    method: Method,
    started: Instant,
    path: Option<String>,
}

pin_project! {
    /// The handler's future (or the gate's own answer), then [`After`].
    pub struct GateFuture<F> {
        #[pin]
        stage: Stage<F>,
        after: Option<After>,
    }
}

pin_project! {
    #[project = StageProj]
    enum Stage<F> {
        Answered { resp: Option<Response> },
        Running { #[pin] fut: F },
        Timed { #[pin] fut: tokio::time::Timeout<F> },
    }
}

impl<F: Future<Output = Response>> Future for GateFuture<F> {
    type Output = Response;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        let this = self.project();
        let resp = match this.stage.project() {
            StageProj::Answered { resp } => resp.take(),
            StageProj::Running { fut } => Some(ready!(fut.poll(cx))),
            StageProj::Timed { fut } => ready!(fut.poll(cx)).ok(),
        };
        let Some(after) = this.after.take() else {
            // Polled again after it finished: a caller's bug, answered plainly.
            return Poll::Ready(Response::default());
        };
        let resp = resp.unwrap_or_else(|| {
            let e = IrisError::new(
                ErrorKind::Timeout,
                "the request took longer than api.requestTimeout",
            );
            ApiError::new(e, &after.rid).into_response()
        });
        Poll::Ready(request::finish(
            resp,
            &after.rid,
            after.limit.as_ref(),
            after.route,
            &after.method,
            after.started,
            after.path.as_deref(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    /// A handler reached without the gate must not run, even with the
    /// `Caller` a request carries on arrival.
    #[tokio::test]
    async fn a_route_without_the_gate_fails_closed() {
        #[allow(clippy::disallowed_methods)]
        let app =
            axum::Router::new().route("/x", axum::routing::get(|_who: Caller| async { "ran" }));
        let mut req = Request::builder()
            .uri("/x")
            .body(axum::body::Body::empty())
            .unwrap();
        let id = request::id_of(req.headers());
        req.extensions_mut()
            .insert(Caller::arrived(Some([127, 0, 0, 1].into()), id));
        let resp = app.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], "INTERNAL_ERROR", "{v}");
    }
}
