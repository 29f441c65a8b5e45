//! Listening: the accept loop, one task per connection (HTTP/1.1 with
//! upgrades for WebSockets), graceful shutdown and the port file.
//!
//! Written on hyper directly rather than `axum::serve`, whose HTTP/1-or-2
//! detection wraps every read and whose service stack adds a layer per
//! request; Iris speaks HTTP/1.1 (behind a proxy for anything else).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use iris_core::Iris;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::edge::App;
use crate::header_timer;

/// Where a server is in stopping: serving, finishing what is in flight,
/// or closing what is left.
const SERVING: u8 = 0;
pub const FINISHING: u8 = 1;
pub const CLOSING: u8 = 2;

/// Stopping as connections that outlive their HTTP request (WebSockets)
/// see it: the phase to watch, and a hold that keeps [`Running::stop`]
/// waiting for them like for any open connection.
#[derive(Clone)]
pub struct Lifecycle {
    phase: watch::Receiver<u8>,
    open: Arc<watch::Sender<()>>,
}

impl Lifecycle {
    fn new() -> (watch::Sender<u8>, Self) {
        let (stop, phase) = watch::channel(SERVING);
        let (open, _) = watch::channel(());
        let open = Arc::new(open);
        (stop, Lifecycle { phase, open })
    }

    /// Kept by a connection while it is open.
    pub fn hold(&self) -> watch::Receiver<()> {
        self.open.subscribe()
    }

    /// Resolves once the server has reached `phase` of stopping (or its
    /// `Running` is gone, which counts as every phase).
    pub async fn reached(&self, phase: u8) {
        let _ = self.phase.clone().wait_for(|s| *s >= phase).await;
    }
}

/// A running server. Dropping it closes everything at once; [`stop`]
/// gives in-flight requests and streams a grace period first.
///
/// [`stop`]: Running::stop
pub struct Running {
    pub addr: SocketAddr,
    stop: watch::Sender<u8>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    port_file: Option<PathBuf>,
    grace: std::time::Duration,
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
            if tokio::time::timeout(std::time::Duration::from_secs(1), &mut task)
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
    let host = iris.config.api.host.clone();
    let port = iris.config.api_port();
    let listener = TcpListener::bind((host.as_str(), port))
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {host}:{port}: {e}"))?;
    let addr = listener.local_addr()?;
    let grace = std::time::Duration::from_millis(iris.config.api.shutdown_grace);
    let (stop, lifecycle) = Lifecycle::new();
    let header_timeout = match iris.config.api.header_timeout {
        0 => None,
        ms => Some(std::time::Duration::from_millis(ms)),
    };
    let limits = Limits {
        header_timeout,
        connections: match iris.config.api.max_connections {
            0 => Semaphore::MAX_PERMITS,
            n => n,
        },
    };
    // The routes first: a server that cannot start leaves no port file.
    let app = crate::app(iris, lifecycle.clone())?;
    if let Some(p) = &port_file {
        write_port_file(p, addr.port())?;
    }
    let task = tokio::spawn(accept(listener, app, limits, lifecycle));
    tracing::info!(%addr, "API listening");
    Ok(Running {
        addr,
        stop,
        task,
        port_file,
        grace,
    })
}

/// What every connection is held to.
#[derive(Clone, Copy)]
struct Limits {
    header_timeout: Option<std::time::Duration>,
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
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = lifecycle.reached(FINISHING) => break,
        };
        // No Nagle delay: stream events are small writes that must leave at once.
        let _ = tcp.set_nodelay(true);
        let (service, watch, open) = (app.clone(), lifecycle.clone(), lifecycle.hold());
        tokio::spawn(async move {
            connection(tcp, peer, service, limits.header_timeout, watch, open).await;
            drop(slot);
        });
    }
    drop(listener);
    // Every connection holds a receiver: `closed()` is "all connections ended".
    lifecycle.open.closed().await;
    Ok(())
}

/// One connection: requests in order, upgrades (WebSockets) handed off.
async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    app: App,
    header_timeout: Option<std::time::Duration>,
    lifecycle: Lifecycle,
    _open: watch::Receiver<()>,
) {
    let state = app.connection_state();
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        use hyper::body::Body as _;
        // Most requests have no body: an empty one is not boxed (no allocation).
        let req = req.map(|body| {
            if body.is_end_stream() {
                axum::body::Body::empty()
            } else {
                axum::body::Body::new(body)
            }
        });
        let arrived = crate::request::arrival(req.headers(), Some(peer.ip()));
        app.handle(req, &state, Some(arrived))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(header_timer::Deadlines)
        .header_read_timeout(header_timeout)
        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
        .with_upgrades();
    tokio::pin!(conn);
    let mut watchdog = header_timer::Watchdog::new(header_timeout);
    if until(conn.as_mut(), &mut watchdog, &lifecycle, FINISHING).await {
        return;
    }
    conn.as_mut().graceful_shutdown();
    until(conn.as_mut(), &mut watchdog, &lifecycle, CLOSING).await;
}

/// Serve `conn` until it ends (true) or the server reaches `phase` (false).
///
/// Stopping and the header watchdog wake the task through a waker of their
/// own ([`Aside`]), so a poll looks at them only after one of them fired:
/// the connection wakes the task for every request, and polling a watch and
/// a timer on each of those wakes cost as much as a tenth of the gate.
async fn until<C: std::future::Future>(
    mut conn: std::pin::Pin<&mut C>,
    watchdog: &mut header_timer::Watchdog,
    lifecycle: &Lifecycle,
    phase: u8,
) -> bool {
    use std::task::{Context, Poll};
    let aside = Arc::new(Aside::default());
    let waker = std::task::Waker::from(aside.clone());
    let reached = lifecycle.reached(phase);
    tokio::pin!(reached);
    std::future::poll_fn(|cx| {
        if conn.as_mut().poll(cx).is_ready() {
            return Poll::Ready(true);
        }
        // Before looking at the flag: a firing after the look wakes this task.
        aside.task.register(cx.waker());
        if aside.fired.swap(false, Ordering::Acquire) {
            let mut others = Context::from_waker(&waker);
            if reached.as_mut().poll(&mut others).is_ready() {
                return Poll::Ready(false);
            }
            while watchdog.poll_tick(&mut others).is_ready() {
                // hyper looks at its header deadline when polled again.
                if conn.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(true);
                }
            }
        }
        Poll::Pending
    })
    .await
}

/// The waker of what a connection's task waits on besides the connection
/// (see [`until`]): notes that it fired, then wakes the task. Fired from
/// the start, so the first poll registers them.
struct Aside {
    fired: AtomicBool,
    task: futures_util::task::AtomicWaker,
}

impl Default for Aside {
    fn default() -> Self {
        Aside {
            fired: AtomicBool::new(true),
            task: Default::default(),
        }
    }
}

impl std::task::Wake for Aside {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
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
