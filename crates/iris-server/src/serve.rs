//! Listening: the accept loop, one task per connection (HTTP/1.1 with
//! upgrades for WebSockets), graceful shutdown and the port file.
//!
//! Written on hyper's HTTP/1.1 connection rather than `axum::serve`, which
//! has neither a header-read timeout nor a connection cap; Iris speaks
//! HTTP/1.1 (behind a proxy for anything else).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use iris_core::Iris;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::app::{App, app};
use crate::lifecycle::{CLOSING, FINISHING, Lifecycle};
use crate::state::AppState;
use tower::ServiceExt;

/// A running server. Dropping it closes everything at once; [`stop`]
/// gives in-flight requests and streams a grace period first.
///
/// [`stop`]: Running::stop
pub struct Running {
    pub addr: SocketAddr,
    /// Where the dashboard listens besides `/ui` here (`dashboard.http`),
    /// when that port could be had.
    pub dashboard: Option<SocketAddr>,
    stop: watch::Sender<u8>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    port_file: Option<PathBuf>,
    grace: Duration,
}

impl Running {
    /// Stop accepting, let in-flight requests and streams finish for up to
    /// `api.shutdownGrace`, then close them; remove the port file.
    pub async fn stop(self) {
        let _ = self.stop.send(FINISHING);
        let mut task = self.task;
        if tokio::time::timeout(self.grace, &mut task).await.is_err() {
            tracing::warn!("requests still open after the shutdown grace; closing them");
            let _ = self.stop.send(CLOSING);
            // Each connection drops at its next poll; the wait is a bound, not a delay.
            if tokio::time::timeout(Duration::from_secs(1), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
        if let Some(p) = self.port_file {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Bind `api.host:api.port` (0 picks a free port), write the bound port to
/// `$IRIS_HOME/.http.port` (mode 0600) when `port_file` is set, and serve.
pub async fn start(iris: Arc<Iris>, port_file: Option<PathBuf>) -> anyhow::Result<Running> {
    start_with(iris, port_file, Router::new()).await
}

/// [`start`], with `mounted` served beside Iris's own routes, behind the
/// same gate (see [`crate::app::app`]).
pub async fn start_with(
    iris: Arc<Iris>,
    port_file: Option<PathBuf>,
    mounted: Router<AppState>,
) -> anyhow::Result<Running> {
    let host = iris.config().api.host.clone();
    let port = iris.config().api_port();
    let listener = TcpListener::bind((host.as_str(), port))
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {host}:{port}: {e}"))?;
    let addr = listener.local_addr()?;
    let grace = Duration::from_millis(iris.config().api.shutdown_grace);
    let (stop, lifecycle) = Lifecycle::new();
    let limits = Limits {
        header_timeout: match iris.config().api.header_timeout {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        },
        connections: match iris.config().api.max_connections {
            0 => Semaphore::MAX_PERMITS,
            n => n,
        },
    };
    // The claude teams' `iris` MCP server (team-to-team messaging).
    iris.serve_mcp_at(format!(
        "http://{}/mcp",
        local_authority(&host, addr.port())
    ));
    let board = iris.config().dashboard.clone();
    // The routes first: a server that cannot start leaves no port file.
    let app = app(iris, lifecycle.clone(), mounted)?;
    if let Some(p) = &port_file {
        write_port_file(p, addr.port())?;
    }
    // The dashboard's own port serves the same app (so its page and the
    // API it calls share an origin), behind the same gate. A port that is
    // taken is no reason not to serve the API: the dashboard stays at /ui.
    let mut dashboard = None;
    if board.enabled && !(board.host == host && board.http == addr.port()) {
        match TcpListener::bind((board.host.as_str(), board.http)).await {
            Ok(l) => {
                let at = l.local_addr()?;
                tokio::spawn(accept(l, app.clone(), limits, lifecycle.clone()));
                tracing::info!(addr = %at, "dashboard listening (also at /ui on the API port)");
                dashboard = Some(at);
            }
            Err(e) => tracing::warn!(
                host = %board.host, port = board.http, error = %e,
                "the dashboard's port is not available; the dashboard is at /ui on the API port"
            ),
        }
    }
    let task = tokio::spawn(accept(listener, app, limits, lifecycle));
    tracing::info!(%addr, "API listening");
    Ok(Running {
        addr,
        dashboard,
        stop,
        task,
        port_file,
        grace,
    })
}

/// How a client on this machine reaches a server bound to `host`: the
/// loopback address for an every-address bind, else the bind itself.
fn local_authority(host: &str, port: u16) -> String {
    match host.trim_start_matches('[').trim_end_matches(']') {
        "0.0.0.0" | "" => format!("127.0.0.1:{port}"),
        "::" => format!("[::1]:{port}"),
        h if h.contains(':') => format!("[{h}]:{port}"),
        h => format!("{h}:{port}"),
    }
}

/// What every connection is held to.
#[derive(Clone, Copy)]
struct Limits {
    /// `api.headerTimeout`, enforced by hyper with tokio's timer.
    header_timeout: Option<Duration>,
    /// Connections served at once (`api.maxConnections`).
    connections: usize,
}

/// Accept until stopping; then ask every connection to finish its
/// in-flight request or stream and wait for them (the caller bounds the
/// wait with the grace period). At `api.maxConnections` open connections
/// nothing more is accepted until one closes: further clients wait in the
/// listen backlog, costing the server nothing.
async fn accept(
    listener: TcpListener,
    app: App,
    limits: Limits,
    lifecycle: Lifecycle,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.connections));
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break, // never closed; no slot can come any more
            },
            () = lifecycle.reached(FINISHING) => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait, keep serving.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = lifecycle.reached(FINISHING) => break,
        };
        // No Nagle delay: stream events are small writes that must leave at once.
        let _ = tcp.set_nodelay(true);
        let (app, watch, open) = (app.clone(), lifecycle.clone(), lifecycle.hold());
        tokio::spawn(async move {
            connection(tcp, peer, app, limits.header_timeout, watch).await;
            drop((open, slot));
        });
    }
    drop(listener);
    // Every connection holds a receiver: `closed()` is "all connections ended".
    lifecycle.all_closed().await;
    Ok(())
}

/// One connection: requests in order, upgrades (WebSockets) handed off.
/// Each request carries its peer as axum's `ConnectInfo`.
async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    app: App,
    header_timeout: Option<Duration>,
    lifecycle: Lifecycle,
) {
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(req.map(axum::body::Body::new))
        });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = lifecycle.reached(FINISHING) => conn.as_mut().graceful_shutdown(),
    }
    tokio::select! {
        _ = conn.as_mut() => {}
        () = lifecycle.reached(CLOSING) => {}
    }
}

fn write_port_file(path: &std::path::Path, port: u16) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(path)?;
    write!(f, "{port}")?;
    Ok(())
}
