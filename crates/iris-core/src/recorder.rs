//! The recorder: turn and session writes leave the hot path. One task
//! applies them in order, batching whatever has queued up into one
//! transaction. Reads that must see every earlier write call [`Recorder::flush`].

use std::sync::Arc;

use iris_storage::{Patience, Store, StoreWrite};
use tokio::sync::{mpsc, oneshot, watch};

/// Writes taken into one transaction at most.
const MAX_BATCH: usize = 256;

enum Item {
    Write(Box<StoreWrite>),
    /// Answered once everything queued before it is committed.
    Flush(oneshot::Sender<()>),
    /// Run after everything queued before it is committed.
    Then(Box<dyn FnOnce() + Send>),
}

#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<Item>,
    /// Writes are held while the database cannot be reached.
    holding: Arc<watch::Sender<bool>>,
}

impl Recorder {
    pub fn start(store: Store) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let holding = Arc::new(watch::Sender::new(false));
        tokio::spawn(run(Arc::new(store), rx, holding.clone()));
        Recorder { tx, holding }
    }

    pub fn write(&self, w: StoreWrite) {
        if self.tx.send(Item::Write(Box::new(w))).is_err() {
            tracing::error!("the recorder has stopped; a write was lost");
        }
    }

    /// Run `f` once every write queued so far is committed.
    pub fn then(&self, f: impl FnOnce() + Send + 'static) {
        let _ = self.tx.send(Item::Then(Box::new(f)));
    }

    /// Wait until every write queued so far is committed, even while the
    /// database cannot be reached (the writers' patience bounds it): what
    /// a shutdown does before it closes the database.
    pub async fn drain(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Item::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Wait until every write queued so far is committed. While the
    /// database cannot be reached this returns at once: what the caller
    /// reads next fails the same way (503), and does not hang.
    pub async fn flush(&self) {
        let mut holding = self.holding.subscribe();
        if *holding.borrow_and_update() {
            return;
        }
        tokio::select! {
            _ = self.drain() => {}
            _ = holding.wait_for(|h| *h) => {}
        }
    }
}

/// Apply `batch`; while the database cannot be reached, wait and try again
/// (in order, nothing dropped) for up to [`Patience::WRITES`].
async fn apply_when_reachable(
    store: &Store,
    batch: &[StoreWrite],
    holding: &watch::Sender<bool>,
) -> Result<(), iris_storage::StoreError> {
    let mut patience = Patience::new(Patience::WRITES);
    let done = loop {
        match store.apply(batch).await {
            Err(e) if patience.again(&e, "turn writes").await => {
                holding.send_replace(true);
            }
            other => break other,
        }
    };
    holding.send_replace(false);
    done
}

async fn run(
    store: Arc<Store>,
    mut rx: mpsc::UnboundedReceiver<Item>,
    holding: Arc<watch::Sender<bool>>,
) {
    let mut batch = Vec::new();
    let mut after: Vec<Item> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Item::Write(w) => batch.push(*w),
                other => after.push(other),
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            match apply_when_reachable(&store, &batch, &holding).await {
                Ok(()) => {}
                // Waited as long as writes wait: no second wait per write.
                Err(e) if e.is_unavailable() => {
                    tracing::error!(error = %e, lost = batch.len(), "the database stayed unreachable; writes lost");
                }
                Err(e) => {
                    // Isolate the bad write; keep the good ones.
                    tracing::warn!(error = %e, "a batch of writes failed; retrying one by one");
                    for w in &batch {
                        if let Err(e) = store.apply(std::slice::from_ref(w)).await {
                            tracing::error!(error = %e, write = ?w, "a write failed");
                        }
                    }
                }
            }
            batch.clear();
        }
        for item in after.drain(..) {
            match item {
                Item::Flush(done) => {
                    let _ = done.send(());
                }
                Item::Then(f) => f(),
                Item::Write(_) => {}
            }
        }
    }
}
