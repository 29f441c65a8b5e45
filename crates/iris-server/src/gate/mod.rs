//! The gate: one tower [`Layer`] around everything the router serves.
//!
//! [`crate::app`] applies it with `Router::layer` as the last step, so it
//! wraps every route, every nested or mounted service and the fallbacks;
//! there is no way to add a route after it. For each request it
//!
//! 1. takes or makes the request id;
//! 2. refuses a second `Host` (400), a foreign `Host` or `Origin` (403);
//! 3. authenticates the credential, if any, and applies the rate limit (by
//!    identity, else by address), answering 401 or 429;
//! 4. without a credential, lets through only the routes of
//!    [`policy::PUBLIC`] and [`policy::FIRST_MESSAGE`] (401 elsewhere,
//!    unless `api.requireAuth` is off: then the open caller);
//! 5. leaves the [`Caller`] in the request's extensions and calls the
//!    route, cut at `api.requestTimeout` unless it is one of
//!    [`policy::STREAMS`];
//! 6. on the way out adds the security, rate-limit and request-id headers,
//!    gives answers made by tower-http layers (413) the error body, and
//!    records metrics (route label from `MatchedPath`) and the access log.

pub mod caller;
pub mod headers;
pub mod held;
pub mod host;
pub mod metrics;
pub mod policy;
mod speed;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use iris_core::auth::{Decision, Origin, Principal};
use iris_core::{ErrorKind, IrisError};
use tower::{Layer, Service};

use crate::error::ApiError;
use crate::state::AppState;
use caller::{Caller, RequestId};
use headers::SECURITY_HEADERS;
use policy::{Access, Policies, Policy};

/// The metrics label of requests no route took (unknown path or method).
pub const UNMATCHED: &str = "unmatched";

/// The gate as a layer; see the module's documentation.
#[derive(Clone)]
pub struct GateLayer {
    state: AppState,
    policies: Arc<Policies>,
    /// The `Host` names requests may carry (DNS-rebinding protection).
    hosts: Arc<host::Hosts>,
}

impl GateLayer {
    pub fn new(state: AppState) -> Self {
        GateLayer {
            hosts: Arc::new(host::Hosts::new(&state.iris.config().api)),
            state,
            policies: Arc::new(Policies::new()),
        }
    }
}

impl<S> Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            state: self.state.clone(),
            policies: self.policies.clone(),
            hosts: self.hosts.clone(),
        }
    }
}

/// The gate around one service.
#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    state: AppState,
    policies: Arc<Policies>,
    hosts: Arc<host::Hosts>,
}

impl<S, B> Service<Request> for Gate<S>
where
    S: Service<Request, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let started = Instant::now();
        let rid = headers::request_id(req.headers());
        let route = req.extensions().get::<MatchedPath>().cloned();
        let policy = self.policies.of(route.as_ref().map(MatchedPath::as_str));
        let mut out = Out {
            route,
            method: req.method().clone(),
            path: tracing::enabled!(target: "iris::access", tracing::Level::INFO)
                .then(|| req.uri().path().to_owned()),
            started,
            limit: None,
            rid: rid.clone(),
        };
        let pending = admit(&self.state, &self.hosts, &req, policy, &rid);
        let announce = req.uri().path() != "/mcp";
        let auth = self.state.iris.auth().clone();
        let timeout = self.state.iris.config().api.request_timeout;
        let deadline = (policy.timed && timeout > 0)
            .then(|| tokio::time::Instant::from_std(started + Duration::from_millis(timeout)));
        // The service made ready is the one called (tower's contract); a
        // clone stays for the next request.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        Box::pin(async move {
            // The rate limit may be decided in the cluster's Redis: the
            // only wait before the route is called.
            let admitted = pending.decide(&auth).await;
            out.limit = admitted.limit;
            // An event stream ends when its credential does (`held`).
            let held = match &admitted.caller {
                Ok(Caller {
                    credential: Some(c),
                    ..
                }) => held::Held::new(&auth, c.clone()).ok(),
                _ => None,
            };
            let call = match admitted.caller {
                Ok(caller) => {
                    req.extensions_mut().insert(caller);
                    Ok(inner.call(req))
                }
                Err(refusal) => Err(refusal),
            };
            drop(inner);
            let resp = match call {
                Err(refusal) => ApiError::new(refusal, &out.rid).into_response(),
                Ok(call) => {
                    let answered = match deadline {
                        Some(at) => tokio::time::timeout_at(at, call).await.ok(),
                        None => Some(call.await),
                    };
                    match answered {
                        Some(Ok(resp)) => match held {
                            Some(held) if is_event_stream(resp.headers()) => resp.map(|b| {
                                held::stream_until_ended(Body::new(b), held, auth, announce)
                            }),
                            _ => resp.map(Body::new),
                        },
                        Some(Err(never)) => match never {},
                        None => timed_out(&out.rid),
                    }
                }
            };
            Ok(out.finish(resp))
        })
    }
}

/// An admitted request's caller, or why it is refused; and the rate-limit
/// decision for the headers.
struct Admission {
    caller: Result<Caller, IrisError>,
    limit: Option<Decision>,
}

/// What is known of a request before its rate limit is decided.
enum Pending {
    /// Refused before any limit applies (a foreign `Host`).
    Refused(IrisError),
    Limited {
        /// Whose bucket counts it: the identity, else the address.
        by: Option<Result<Arc<Principal>, IpAddr>>,
        /// The caller, or why it is refused, if the limit lets it through.
        caller: Result<Caller, IrisError>,
    },
}

impl Pending {
    /// Step 3's rate limit, then the admission.
    async fn decide(self, auth: &iris_core::auth::Auth) -> Admission {
        let (by, caller) = match self {
            Pending::Refused(e) => {
                return Admission {
                    caller: Err(e),
                    limit: None,
                };
            }
            Pending::Limited { by, caller } => (by, caller),
        };
        let limit = match by {
            Some(Ok(principal)) => auth.limit_identity(&principal).await,
            Some(Err(ip)) => auth.limit_ip(ip).await,
            None => None,
        };
        if let Some(d) = limit.as_ref().filter(|d| !d.allowed) {
            return Admission {
                caller: Err(too_many(d)),
                limit,
            };
        }
        Admission { caller, limit }
    }
}

/// Steps 2 to 4 of the module's documentation, but for the rate limit
/// ([`Pending::decide`]).
fn admit(
    state: &AppState,
    hosts: &host::Hosts,
    req: &Request,
    policy: Policy,
    rid: &RequestId,
) -> Pending {
    let heads = req.headers();
    if let Err(e) = check_host(state, hosts, heads) {
        return Pending::Refused(e);
    }
    let ip: Option<IpAddr> = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let origin = Origin {
        ip,
        user_agent: heads
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            // `to_str` admits visible ASCII only: any byte is a char boundary.
            .map(|v| v.get(..256).unwrap_or(v).into()),
        request_id: Some(rid.0.clone()),
    };
    let auth = state.iris.auth();
    let is_get = req.method() == Method::GET;
    let found = caller::credential(heads, req.uri(), is_get).map(|c| auth.authenticate(c, &origin));
    // A failed authentication counts against the address.
    let by = match &found {
        Some(Ok(principal)) => Some(Ok(principal.clone())),
        _ => ip.map(Err),
    };
    let refuse = |e: IrisError| Pending::Limited {
        by: by.clone(),
        caller: Err(e),
    };
    // A connection that outlives the request checks its credential again.
    let credential = match &found {
        Some(Ok(_)) if !policy.timed => {
            caller::credential(heads, req.uri(), is_get).map(Arc::<str>::from)
        }
        _ => None,
    };
    let principal: Option<Arc<Principal>> = match found {
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => return refuse(e.into()),
        None if !state.iris.config().api.require_auth => Some(state.open.clone()),
        None if policy.access != Access::Guarded || is_preflight(req) => None,
        None => return refuse(caller::unauthenticated()),
    };
    let caller = Caller {
        principal,
        origin,
        request_id: rid.clone(),
        credential,
    };
    Pending::Limited {
        by,
        caller: Ok(caller),
    }
}

/// A CORS preflight: browsers send it without credentials, and the CORS
/// layer inside the gate answers it.
fn is_preflight(req: &Request) -> bool {
    req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ORIGIN)
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// One `Host` (RFC 9112 section 3.2: a request with more is answered 400),
/// naming this server; an `Origin`, when present, allowed.
fn check_host(state: &AppState, allowed: &host::Hosts, heads: &HeaderMap) -> Result<(), IrisError> {
    let mut hosts = heads.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(IrisError::validation(
            "Host",
            "a request carries one Host header (RFC 9112 section 3.2)",
        ));
    }
    let host = host.and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !allowed.allow(host) {
        return Err(forbidden(format!(
            "host `{host}` is not allowed (api.allowedHosts)"
        )));
    }
    // An `Origin` that is not visible ASCII names no allowed origin: refused,
    // not taken for a request without one.
    match heads.get(header::ORIGIN).map(|v| v.to_str()) {
        None => Ok(()),
        Some(Err(_)) => Err(forbidden("an unreadable origin is not allowed".to_owned())),
        Some(Ok(o)) if !host::origin_allowed(&state.iris.config().api, allowed, o, host) => Err(
            forbidden(format!("origin `{o}` is not allowed (api.cors.origins)")),
        ),
        Some(Ok(_)) => Ok(()),
    }
}

#[cold]
fn forbidden(problem: String) -> IrisError {
    IrisError::new(ErrorKind::Forbidden, problem)
}

/// 429; the headers are added on the way out.
#[cold]
pub(crate) fn too_many(d: &Decision) -> IrisError {
    IrisError::new(
        ErrorKind::RateLimited,
        format!("rate limit of {} requests exceeded; retry later", d.limit),
    )
    .with_details(serde_json::json!({"retryAfterMs": d.retry_after.as_millis() as u64}))
}

#[cold]
fn timed_out(rid: &RequestId) -> Response {
    let e = IrisError::new(
        ErrorKind::Timeout,
        "the request took longer than api.requestTimeout",
    );
    ApiError::new(e, rid).into_response()
}

/// What the gate adds to the answer on its way out.
struct Out {
    rid: RequestId,
    limit: Option<Decision>,
    route: Option<MatchedPath>,
    method: Method,
    started: Instant,
    /// Kept only when the access log is on.
    path: Option<String>,
}

impl Out {
    /// Step 6 of the module's documentation.
    fn finish(self, resp: Response) -> Response {
        let mut resp = if resp.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json(resp.headers())
        {
            // tower-http's body limit, and Engine.IO's payload limit for
            // Socket.IO's long-polling, answer with text of their own.
            let socketio = self
                .route
                .as_ref()
                .is_some_and(|r| r.as_str().starts_with("/socket.io"));
            let limit = if socketio {
                "api.websocket.maxMessageBytes"
            } else {
                "api.maxBodyBytes"
            };
            let e =
                IrisError::validation("body", format!("the request body is larger than {limit}"));
            ApiError::new(e, &self.rid)
                .with_status(StatusCode::PAYLOAD_TOO_LARGE)
                .into_response()
        } else {
            resp
        };
        let status = resp.status();
        let h = resp.headers_mut();
        // Room for what is added below, so the map grows at most once.
        h.reserve(SECURITY_HEADERS.len() + 5);
        headers::security_headers(h);
        if let Some(d) = &self.limit {
            headers::rate_headers(h, d);
        }
        if let Ok(v) = axum::http::HeaderValue::from_str(&self.rid.0) {
            h.insert(headers::REQUEST_ID, v);
        }
        // A method the path does not answer is not a route taken either.
        let route = match &self.route {
            Some(r) if status != StatusCode::METHOD_NOT_ALLOWED => r.as_str(),
            _ => UNMATCHED,
        };
        let elapsed = self.started.elapsed();
        speed::record_request(route, &self.method, status.as_u16(), elapsed.as_secs_f64());
        if let Some(path) = &self.path {
            tracing::info!(
                target: "iris::access",
                request_id = %self.rid.0,
                method = %self.method,
                path = %path,
                status = status.as_u16(),
                micros = elapsed.as_micros() as u64,
                "request"
            );
        }
        resp
    }
}

fn is_event_stream(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

fn is_json(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}
