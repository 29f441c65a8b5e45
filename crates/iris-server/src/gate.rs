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
///
/// `take` keeps what the handler needs of an admitted request, at once:
/// the request's head shares hyper's read buffer, and while any of it is
/// alive hyper cannot reuse that buffer for the connection's next request
/// and allocates a new one. Handlers that need the whole request (axum's
/// extractors) take it whole.
#[allow(clippy::too_many_arguments)]
pub fn gate<T, F, Fut>(
    route: &'static str,
    timed: bool,
    mut req: Request,
    state: AppState,
    arrived: Option<Caller>,
    take: impl FnOnce(Request) -> T,
    handler: F,
) -> GateFuture<T, F, Fut>
where
    F: FnOnce(T, AppState, Caller) -> Fut,
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
            Stage::Admitted {
                start: Some(Start {
                    handler,
                    taken: take(req),
                    state,
                    caller,
                    // From when the request arrived (also one clock read fewer).
                    deadline: (timed && timeout > 0)
                        .then(|| started + Duration::from_millis(timeout)),
                }),
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

/// An admitted request waiting for the gate's first poll to start its
/// handler: the handler's future is made where it will run (inside the
/// gate's box), not made first and then moved there — for the operation
/// routes it is a kilobyte or more, and every move is a copy.
struct Start<T, F> {
    handler: F,
    taken: T,
    state: AppState,
    caller: Caller,
    deadline: Option<Instant>,
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
    pub struct GateFuture<T, F, Fut> {
        #[pin]
        stage: Stage<T, F, Fut>,
        after: Option<After>,
    }
}

pin_project! {
    #[project = StageProj]
    enum Stage<T, F, Fut> {
        Answered { resp: Option<Response> },
        Admitted { start: Option<Start<T, F>> },
        Running { #[pin] fut: Fut },
        Timed { #[pin] fut: tokio::time::Timeout<Fut> },
    }
}

impl<T, F, Fut> Future for GateFuture<T, F, Fut>
where
    F: FnOnce(T, AppState, Caller) -> Fut,
    Fut: Future<Output = Response>,
{
    type Output = Response;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        let mut this = self.project();
        let resp = loop {
            match this.stage.as_mut().project() {
                StageProj::Answered { resp } => break resp.take(),
                StageProj::Admitted { start } => {
                    let Some(s) = start.take() else {
                        // Only after the handler panicked while starting.
                        let rid = this.after.as_ref().map(|a| &a.rid);
                        let e = IrisError::internal("gate", "the handler did not start");
                        break Some(ApiError::maybe(e, rid).into_response());
                    };
                    let fut = (s.handler)(s.taken, s.state, s.caller);
                    this.stage.set(match s.deadline {
                        Some(at) => Stage::Timed {
                            fut: tokio::time::timeout_at(tokio::time::Instant::from_std(at), fut),
                        },
                        None => Stage::Running { fut },
                    });
                }
                StageProj::Running { fut } => break Some(ready!(fut.poll(cx))),
                StageProj::Timed { fut } => break ready!(fut.poll(cx)).ok(),
            }
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
