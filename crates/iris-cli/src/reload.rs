//! `iris serve` reloads its configuration file when it changes (watched
//! with `notify`: inotify here) and on SIGHUP; the core applies it or
//! refuses it whole (`Iris::reload`). The folder is watched, not the file:
//! editors save by writing a new file and renaming it over the old one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use iris_core::Iris;
use notify::{RecursiveMode, Watcher};

/// Changes closer together than this are one reload (an editor's save is
/// several events).
const SETTLE: Duration = Duration::from_millis(300);

/// Watch the configuration file of `iris` (none for the embedded
/// defaults) and reload it when it changes. Keep the returned watcher.
pub fn watch(iris: &Arc<Iris>) -> anyhow::Result<Option<notify::RecommendedWatcher>> {
    let Some(file) = iris.config.source.clone() else {
        return Ok(None);
    };
    let name = file.file_name().map(|n| n.to_owned());
    let dir = file
        .parent()
        .map(PathBuf::from)
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let ours = event
            .paths
            .iter()
            .any(|p| p.file_name().map(|n| n.to_owned()) == name);
        if ours && (event.kind.is_modify() || event.kind.is_create()) {
            let _ = tx.send(());
        }
    })
    .context("watching the configuration file")?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("watching {}", dir.display()))?;
    let weak = Arc::downgrade(iris);
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Let the save finish, and take the rest of its events with it.
            tokio::time::sleep(SETTLE).await;
            while rx.try_recv().is_ok() {}
            let Some(iris) = weak.upgrade() else { return };
            let _ = iris.reload().await;
        }
    });
    tracing::info!(file = %file.display(), "watching the configuration file; changes apply without a restart (SIGHUP reloads too)");
    Ok(Some(watcher))
}
