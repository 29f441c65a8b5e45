//! Stopping, as connections that outlive their HTTP request see it.

use std::sync::Arc;

use tokio::sync::watch;

/// Where a server is in stopping: serving, finishing what is in flight,
/// or closing what is left.
pub(crate) const SERVING: u8 = 0;
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
    pub(crate) fn new() -> (watch::Sender<u8>, Self) {
        let (stop, phase) = watch::channel(SERVING);
        let (open, _) = watch::channel(());
        let open = Arc::new(open);
        (stop, Lifecycle { phase, open })
    }

    /// A lifecycle of no server (every phase reached): for routers that
    /// are only inspected.
    pub fn stopped() -> Self {
        Lifecycle::new().1
    }

    /// Kept by a connection while it is open.
    pub fn hold(&self) -> watch::Receiver<()> {
        self.open.subscribe()
    }

    /// Resolves once every connection's hold has been let go.
    pub(crate) async fn all_closed(&self) {
        self.open.closed().await;
    }

    /// Resolves once the server has reached `phase` of stopping (or its
    /// `Running` is gone, which counts as every phase).
    pub async fn reached(&self, phase: u8) {
        let _ = self.phase.clone().wait_for(|s| *s >= phase).await;
    }
}
