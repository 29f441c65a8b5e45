//! `GET /metrics` in the Prometheus text format. Counters and histograms are
//! recorded where things happen (requests here, turns in the core); gauges
//! of the pool and the bus are read at scrape time.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use iris_core::auth::scope;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::AppState;
use crate::auth::Caller;
use crate::request::RequestId;

/// The process-wide recorder (installed once, whatever number of servers).
pub fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0, 300.0,
            ];
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .ok()?
                .install_recorder()
                .map_err(|e| tracing::warn!(error = %e, "metrics recorder not installed"))
                .ok()?;
            // Histogram samples wait in buckets until drained; without a
            // scrape they would grow for ever.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("iris-metrics".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                });
            Some(handle)
        })
        .as_ref()
}

/// A route, method and status, and their metrics' handles.
type Handles = (
    String,
    axum::http::Method,
    u16,
    metrics::Counter,
    metrics::Histogram,
);

/// Count a request and record its duration. The labelled handles are
/// looked up once per (route, method, status) and thread, then reused: the
/// registry's lookup and the label strings cost more than the update.
pub fn record_request(route: &str, method: &axum::http::Method, status: u16, secs: f64) {
    use std::cell::RefCell;
    use std::collections::HashMap;
    thread_local! {
        static HANDLES: RefCell<HashMap<u64, Vec<Handles>, foldhash::fast::RandomState>> =
            RefCell::default();
    }
    // The route template is the router's own string, the same allocation
    // on every request: its address is a cheap key (the string itself is
    // still compared below, so a reused address cannot mix routes up).
    let key = (route.as_ptr() as u64)
        ^ (u64::from(status) << 48)
        ^ ((method.as_str().len() as u64) << 60);
    HANDLES.with(|cache| {
        let mut cache = cache.borrow_mut();
        let slot = cache.entry(key).or_default();
        let found = slot
            .iter()
            .position(|(r, m, s, _, _)| r == route && m == method && *s == status);
        let i = found.unwrap_or_else(|| {
            slot.push(register(route, method, status));
            slot.len() - 1
        });
        let (_, _, _, counter, histogram) = &slot[i];
        counter.increment(1);
        histogram.record(secs);
    });
}

/// The handles of a route, method and status seen for the first time on
/// this thread; out of line, as it happens a few times per thread.
#[cold]
#[inline(never)]
fn register(route: &str, method: &axum::http::Method, status: u16) -> Handles {
    let counter = metrics::counter!("iris_http_requests_total", "route" => route.to_owned(), "method" => method.to_string(), "status" => status.to_string());
    let histogram =
        metrics::histogram!("iris_http_request_duration_seconds", "route" => route.to_owned());
    (route.to_owned(), method.clone(), status, counter, histogram)
}

pub async fn render(State(state): State<AppState>, rid: RequestId, who: Caller) -> Response {
    if let Err(e) = crate::auth::require(&state, &who, &rid, scope::PROCESSES_READ, "/metrics") {
        return e.into_response();
    }
    let iris = &state.iris;
    let processes = iris.pool.processes();
    for s in ["spawning", "ready", "busy", "stopping", "stopped", "failed"] {
        let n = processes.iter().filter(|p| p.state == s).count();
        metrics::gauge!("iris_processes", "state" => s).set(n as f64);
    }
    for t in iris.teams() {
        let q: usize = processes
            .iter()
            .filter(|p| p.team == t.name)
            .map(|p| p.queued)
            .sum();
        metrics::gauge!("iris_queue_depth", "team" => t.name.clone()).set(q as f64);
    }
    metrics::gauge!("iris_bus_dropped_subscribers").set(iris.bus.dropped_subscribers() as f64);
    metrics::gauge!("iris_open_connections", "transport" => "websocket").set(
        state
            .ws_connections
            .load(std::sync::atomic::Ordering::Relaxed) as f64,
    );
    metrics::gauge!("iris_open_connections", "transport" => "sse")
        .set(state.sse_streams.load(std::sync::atomic::Ordering::Relaxed) as f64);
    let body = handle().map(|h| h.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
