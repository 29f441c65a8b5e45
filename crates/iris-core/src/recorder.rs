//! The recorder: turn and session writes leave the hot path. One task
//! applies them in order, batching whatever has queued up into one
//! transaction. Reads that must see every earlier write call [`Recorder::flush`].

use std::sync::Arc;

use iris_storage::{Store, StoreWrite};
use tokio::sync::{mpsc, oneshot};

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
}

impl Recorder {
    pub fn start(store: Store) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(Arc::new(store), rx));
        Recorder { tx }
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

    /// Wait until every write queued so far is committed.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Item::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

async fn run(store: Arc<Store>, mut rx: mpsc::UnboundedReceiver<Item>) {
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
            if let Err(e) = store.apply(&batch).await {
                // Isolate the bad write; keep the good ones.
                tracing::warn!(error = %e, "a batch of writes failed; retrying one by one");
                for w in &batch {
                    if let Err(e) = store.apply(std::slice::from_ref(w)).await {
                        tracing::error!(error = %e, write = ?w, "a write failed");
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
