//! The contract's floor: the bare hyper server of `http`, plus only the
//! work DESIGN and the HTTP and security issues ask of every request —
//! a request id, the `Host` check, a per-address rate limit with its
//! headers, the security headers, request metrics and a status body
//! serialised from data — and nothing else (no router, no framework, no
//! dispatch). No implementation of the contract on hyper can serve
//! `GET /api/v1/status` faster than this, so its ratio to bare hyper is
//! the most any target for Iris can ask.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

type PerAddress = RateLimiter<
    IpAddr,
    DefaultKeyedStateStore<IpAddr>,
    governor::clock::DefaultClock,
    StateInformationMiddleware,
>;

/// The same fields as Iris's `get_status` result.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    sessions: Counts,
    processes: Pool,
    uptime: u64,
    version: &'static str,
    timestamp: i64,
}

#[derive(serde::Serialize)]
struct Counts {
    total: usize,
    active: usize,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Pool {
    total: usize,
    max_processes: usize,
}

struct Floor {
    limiter: PerAddress,
    limit: u32,
    host: String,
    started: Instant,
    requests: metrics::Counter,
    latency: metrics::Histogram,
}

/// Serve the floor on a free loopback port.
pub async fn serve() -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let limit = 1_000_000_000;
    let quota = Quota::per_minute(NonZeroU32::new(limit).ok_or_else(|| anyhow::anyhow!("zero"))?);
    let labels = [
        ("route", "/api/v1/status"),
        ("method", "GET"),
        ("status", "200"),
    ];
    let floor = Arc::new(Floor {
        limiter: RateLimiter::keyed(quota).with_middleware(),
        limit,
        host: addr.to_string(),
        started: Instant::now(),
        requests: metrics::counter!("floor_requests_total", &labels),
        latency: metrics::histogram!("floor_request_duration_seconds", &labels),
    });
    let task = tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let floor = floor.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let resp = floor.answer(&req, peer.ip());
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok((addr, task))
}

impl Floor {
    fn answer(&self, req: &Request<hyper::body::Incoming>, ip: IpAddr) -> Response<Full<Bytes>> {
        let arrived = Instant::now();
        let id = request_id(req.headers());
        let host_ok = req
            .headers()
            .get(header::HOST)
            .is_some_and(|h| h.as_bytes() == self.host.as_bytes());
        let (status, body, remaining, reset) = match self.limiter.check_key(&ip) {
            Ok(snapshot) if host_ok => {
                let now = iris_core::now_ms();
                let status = Status {
                    sessions: Counts {
                        total: 0,
                        active: 0,
                    },
                    processes: Pool {
                        total: 0,
                        max_processes: 4,
                    },
                    uptime: self.started.elapsed().as_millis() as u64,
                    version: "0.1.0",
                    timestamp: now,
                };
                let body = serde_json::to_vec(&status).unwrap_or_default();
                (
                    StatusCode::OK,
                    body,
                    snapshot.remaining_burst_capacity(),
                    now / 1000 + 60,
                )
            }
            _ => (StatusCode::FORBIDDEN, Vec::new(), 0, 0),
        };
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.reserve(12);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in iris_server::SECURITY_HEADERS {
            h.insert(name, HeaderValue::from_static(value));
        }
        h.insert(LIMIT, HeaderValue::from(self.limit));
        h.insert(REMAINING, HeaderValue::from(remaining));
        h.insert(RESET, HeaderValue::from(reset));
        h.insert(REQUEST_ID, id);
        self.requests.increment(1);
        self.latency.record(arrived.elapsed().as_secs_f64());
        resp
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// The caller's `X-Request-ID`, else `req_<ulid>` (Iris's own generator).
fn request_id(headers: &hyper::HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(REQUEST_ID) {
        return v.clone();
    }
    HeaderValue::from_bytes(&iris_server::new_request_id())
        .unwrap_or(HeaderValue::from_static("req_"))
}
