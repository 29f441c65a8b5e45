//! Routing: a table from path templates (matchit, the matcher axum itself
//! uses) and methods to handlers, each behind the gate.
//!
//! Handlers are still axum handlers (extractors, WebSocket upgrades, SSE);
//! only the router is Iris's own. axum's clones and boxes each route's
//! service per request and attaches the path parameters and template to
//! every request, which cost more per request than the lookup itself. Here
//! a request costs one lookup, one method comparison and one call, and
//! path parameters are decoded only for routes that have them.

use std::collections::HashSet;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use axum::extract::{FromRequestParts, Request};
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method};
use axum::response::Response;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{self, ApiError};
use crate::gate::{UNMATCHED, gate};

pub(crate) type Answer = Pin<Box<dyn Future<Output = Response> + Send>>;

/// A handler behind the gate, its type erased; the `Caller` is the
/// request's arrival (peer, request id) when the accept loop passed it on.
type Endpoint = Arc<dyn Fn(Request, AppState, Option<Caller>) -> Answer + Send + Sync>;

/// The axum handler `h` behind the gate; `timed`: within
/// `api.requestTimeout` (streams are not: their response starts at once and
/// then lasts as long as the stream).
fn endpoint<H: Handler<T, AppState>, T: 'static>(
    route: &'static str,
    timed: bool,
    h: H,
) -> Endpoint {
    Arc::new(move |req, state, arrived| {
        let h = h.clone();
        Box::pin(gate(
            route,
            timed,
            req,
            state,
            arrived,
            |req| req,
            move |mut req: Request, state, caller| {
                // axum handlers take the admitted caller through their extractors.
                req.extensions_mut().insert(caller);
                h.call(req, state)
            },
        ))
    })
}

/// Routes being declared; [`Routes::build`] makes the [`Table`].
#[derive(Default)]
pub struct Routes {
    paths: Vec<(String, Vec<(Method, Endpoint)>)>,
}

impl Routes {
    pub fn new() -> Self {
        Self::default()
    }

    /// A plain request/response route for `methods` (a `GET` route answers
    /// `HEAD` too); routes declared on the same path add up.
    pub fn on<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &str,
        methods: &[Method],
        h: H,
    ) -> Self {
        self.add(path, methods, endpoint(label(path), true, h))
    }

    /// A streaming route (SSE, WebSocket upgrade): gated, not timed.
    pub fn stream<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &str,
        methods: &[Method],
        h: H,
    ) -> Self {
        self.add(path, methods, endpoint(label(path), false, h))
    }

    /// A route whose handler is a plain async function of what `take`
    /// keeps of the request and its admitted caller, run inside the gate's
    /// own future (one allocation per request for both, and no request
    /// extension). `take` runs as the request arrives (see [`gate`]).
    pub fn call<P, T, F, Fut>(self, path: &str, methods: &[Method], take: P, f: F) -> Self
    where
        P: Fn(Request) -> T + Copy + Send + Sync + 'static,
        F: Fn(T, AppState, Caller) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response> + Send + 'static,
        T: Send + 'static,
    {
        let route = label(path);
        let e: Endpoint = Arc::new(move |req, state, arrived| {
            Box::pin(gate(route, true, req, state, arrived, take, f.clone()))
        });
        self.add(path, methods, e)
    }

    pub fn get<H: Handler<T, AppState>, T: 'static>(self, path: &str, h: H) -> Self {
        self.on(path, &[Method::GET], h)
    }

    pub fn post<H: Handler<T, AppState>, T: 'static>(self, path: &str, h: H) -> Self {
        self.on(path, &[Method::POST], h)
    }

    pub fn merge(mut self, other: Routes) -> Self {
        for (path, methods) in other.paths {
            for (m, e) in methods {
                self = self.add(&path, std::slice::from_ref(&m), e);
            }
        }
        self
    }

    fn add(mut self, path: &str, methods: &[Method], e: Endpoint) -> Self {
        let i = match self.paths.iter().position(|(p, _)| p == path) {
            Some(i) => i,
            None => {
                self.paths.push((path.to_owned(), Vec::new()));
                self.paths.len() - 1
            }
        };
        for m in methods {
            self.paths[i].1.push((m.clone(), e.clone()));
        }
        self
    }

    /// The table serving these routes with `state`; unknown paths answer
    /// 404 and unknown methods 405 (with `Allow`), both behind the gate.
    /// Two routes for the same path and method, or templates matchit
    /// cannot tell apart, are refused here, when the server starts.
    pub fn build(self, state: AppState) -> anyhow::Result<Table> {
        let (paths, endpoints) = self.index()?;
        Ok(Table(Arc::new(Inner {
            paths,
            endpoints,
            unknown: endpoint(UNMATCHED, true, error::unknown_route),
            wrong_method: endpoint(UNMATCHED, true, error::wrong_method),
            state,
        })))
    }

    /// The matcher and, for each template, its methods and `Allow` value.
    fn index(self) -> anyhow::Result<(matchit::Router<usize>, Vec<PathRoutes>)> {
        let mut paths = matchit::Router::new();
        let mut endpoints = Vec::with_capacity(self.paths.len());
        for (i, (path, methods)) in self.paths.into_iter().enumerate() {
            let mut seen = HashSet::new();
            for (m, _) in &methods {
                anyhow::ensure!(seen.insert(m.clone()), "route {m} {path} is declared twice");
            }
            let mut names: Vec<&str> = methods.iter().map(|(m, _)| m.as_str()).collect();
            if seen.contains(&Method::GET) && !seen.contains(&Method::HEAD) {
                names.push("HEAD");
            }
            let allow = HeaderValue::from_str(&names.join(", "))?;
            paths
                .insert(path.as_str(), i)
                .map_err(|e| anyhow::anyhow!("route {path}: {e}"))?;
            endpoints.push(PathRoutes { methods, allow });
        }
        Ok((paths, endpoints))
    }
}

/// A route template as a `&'static str`, the label of its metrics: each
/// distinct one is kept once for the life of the process (routes are
/// declared at start).
fn label(path: &str) -> &'static str {
    static LABELS: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut labels = LABELS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(l) = labels.get(path) {
        return l;
    }
    let l: &'static str = Box::leak(path.into());
    labels.insert(l);
    l
}

struct PathRoutes {
    methods: Vec<(Method, Endpoint)>,
    /// The `Allow` header of a 405 on this path.
    allow: HeaderValue,
}

struct Inner {
    paths: matchit::Router<usize>,
    endpoints: Vec<PathRoutes>,
    unknown: Endpoint,
    wrong_method: Endpoint,
    state: AppState,
}

/// The routes of a server, ready to answer requests.
#[derive(Clone)]
pub struct Table(Arc<Inner>);

/// The methods a path answers, for the 405 handler.
#[derive(Clone)]
pub struct Allowed(pub HeaderValue);

/// The decoded `{…}` segments of the matched template, in order; only
/// requests to routes with parameters carry it.
#[derive(Clone)]
pub struct PathParams(pub Vec<(String, String)>);

impl PathParams {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The one `{…}` segment of a route with a single parameter.
pub struct Segment(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Segment {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match parts.extensions.remove::<PathParams>() {
            Some(PathParams(mut p)) if !p.is_empty() => Ok(Segment(p.swap_remove(0).1)),
            // A handler taking a segment on a route without one: a bug.
            _ => Err(ApiError::maybe(
                iris_core::IrisError::internal("routing", "the route has no path parameter"),
                parts.extensions.get::<Caller>().map(|c| &c.request_id),
            )),
        }
    }
}

impl Table {
    /// The state the table was built with.
    pub fn state(&self) -> &AppState {
        &self.0.state
    }

    /// The answer to `req`: its route's handler, or the 404/405 one, with
    /// `state` (the table's own, or a connection's copy: see
    /// [`AppState::for_connection`]). `arrived`: the peer and request id
    /// from the accept loop (see [`crate::gate::gate`]).
    pub fn handle(&self, mut req: Request, state: &AppState, arrived: Option<Caller>) -> Answer {
        let inner = &*self.0;
        let state = state.clone();
        let Ok(found) = inner.paths.at(req.uri().path()) else {
            return (inner.unknown)(req, state, arrived);
        };
        let routes = &inner.endpoints[*found.value];
        if !found.params.is_empty() {
            let params = decoded(&found.params);
            req.extensions_mut().insert(params);
        }
        let find = |wanted: &Method| routes.methods.iter().find(|(m, _)| m == wanted);
        let method = req.method();
        let chosen = find(method).or_else(|| {
            // A GET route answers HEAD (hyper leaves the body out).
            (*method == Method::HEAD)
                .then(|| find(&Method::GET))
                .flatten()
        });
        match chosen {
            Some((_, e)) => e(req, state, arrived),
            None => inner.not_allowed(req, state, arrived, &routes.allow),
        }
    }
}

/// The matched template's segments, percent-decoded; out of line, so the
/// routes without segments (most requests) do not run through its code.
#[inline(never)]
fn decoded(params: &matchit::Params<'_, '_>) -> PathParams {
    PathParams(
        params
            .iter()
            .map(|(k, v)| {
                let v = percent_encoding::percent_decode_str(v).decode_utf8_lossy();
                (k.to_owned(), v.into_owned())
            })
            .collect(),
    )
}

impl Inner {
    /// 405, with the methods the path answers.
    #[cold]
    fn not_allowed(
        &self,
        mut req: Request,
        state: AppState,
        arrived: Option<Caller>,
        allow: &HeaderValue,
    ) -> Answer {
        req.extensions_mut().insert(Allowed(allow.clone()));
        (self.wrong_method)(req, state, arrived)
    }
}

/// The answer as a tower service's future (it never fails).
pub struct Answered(Answer);

impl From<Answer> for Answered {
    fn from(a: Answer) -> Self {
        Answered(a)
    }
}

impl Future for Answered {
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx).map(Ok)
    }
}

impl tower::Service<Request> for Table {
    type Response = Response;
    type Error = Infallible;
    type Future = Answered;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Answered {
        Answered(self.handle(req, &self.0.state, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ok() -> &'static str {
        "ok"
    }

    #[test]
    fn routes_are_indexed_with_their_allowed_methods() {
        let routes = Routes::new()
            .get("/a/{id}", ok)
            .post("/a/{id}", ok)
            .merge(Routes::new().on("/b", &[Method::DELETE], ok));
        let Ok((paths, endpoints)) = routes.index() else {
            panic!("valid routes refused");
        };
        let found = paths.at("/a/x%2Fy").map(|m| (*m.value, m.params.get("id")));
        assert!(matches!(found, Ok((0, Some("x%2Fy")))));
        assert_eq!(endpoints[0].allow, "GET, POST, HEAD");
        assert_eq!(endpoints[1].allow, "DELETE");
        assert!(paths.at("/c").is_err());
    }

    #[test]
    fn a_route_declared_twice_or_ambiguous_is_refused() {
        let twice = Routes::new().get("/a", ok).get("/a", ok).index();
        assert!(twice.is_err_and(|e| e.to_string().contains("declared twice")));
        let ambiguous = Routes::new().get("/t/{a}", ok).get("/t/{b}", ok).index();
        assert!(ambiguous.is_err());
    }
}
