//! `iris serve` reloads its configuration file when it changes (watched
//! with `notify`: inotify here) and on SIGHUP; the core applies it or
//! refuses it whole (`Iris::reload`: an empty file or one that does not
//! parse changes nothing).
//!
//! Folders are watched, not the file: editors save by writing a new file
//! and renaming it over the old one, and a configuration may be a symlink
//! — to a file in another folder, or Kubernetes' ConfigMap layout
//! (`config.yaml -> ..data/config.yaml`, updated by swapping the `..data`
//! link). So the file's own folder and the folder of what it resolves to
//! are watched (again after each change: the link may point elsewhere
//! now), any change there is looked at, and the file is applied once its
//! content has stopped changing and differs from what was applied last.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use iris_core::Iris;
use notify::{RecursiveMode, Watcher};

/// Changes closer together than this are one reload (an editor's save is
/// several events).
const SETTLE: Duration = Duration::from_millis(300);

/// How long the content must stay the same to be read as written whole.
const STABLE: Duration = Duration::from_millis(150);

/// Watch the configuration file of `iris` (none for the embedded
/// defaults) and reload it when it changes. Keep the returned watcher.
pub fn watch(iris: &Arc<Iris>) -> anyhow::Result<Option<Arc<Mutex<notify::RecommendedWatcher>>>> {
    let Some(file) = iris.config().source.clone() else {
        return Ok(None);
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.send(());
        }
    })
    .context("watching the configuration file")?;
    let watcher = Arc::new(Mutex::new(watcher));
    let mut watched = HashSet::new();
    watch_folders(&watcher, &file, &mut watched)?;
    tracing::info!(file = %file.display(), "watching the configuration file; changes apply without a restart (SIGHUP reloads too)");
    let weak = Arc::downgrade(iris);
    let kept = watcher.clone();
    tokio::spawn(async move {
        let mut applied = std::fs::read(&file).ok();
        while rx.recv().await.is_some() {
            // Let the save finish, and take the rest of its events with it.
            tokio::time::sleep(SETTLE).await;
            while rx.try_recv().is_ok() {}
            if let Err(e) = watch_folders(&kept, &file, &mut watched) {
                tracing::warn!(error = %e, "cannot watch where the configuration file now points");
            }
            let Some(now) = settled(&file).await else {
                continue;
            };
            if applied.as_ref() == Some(&now) {
                continue;
            }
            let Some(iris) = weak.upgrade() else { return };
            if iris.reload().await.is_ok() {
                applied = Some(now);
            }
        }
    });
    Ok(Some(watcher))
}

/// Watch the folder of `file` and of what it resolves to, those not yet
/// in `watched`.
fn watch_folders(
    watcher: &Mutex<notify::RecommendedWatcher>,
    file: &Path,
    watched: &mut HashSet<PathBuf>,
) -> anyhow::Result<()> {
    let folder = |p: &Path| {
        p.parent()
            .map(PathBuf::from)
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."))
    };
    let mut folders = vec![folder(file)];
    if let Ok(real) = std::fs::canonicalize(file) {
        folders.push(folder(&real));
    }
    let Ok(mut w) = watcher.lock() else {
        return Ok(());
    };
    for dir in folders {
        if watched.insert(dir.clone()) {
            w.watch(&dir, RecursiveMode::NonRecursive)
                .with_context(|| format!("watching {}", dir.display()))?;
        }
    }
    Ok(())
}

/// The file's content once it stays the same for [`STABLE`] (at most a
/// few seconds of waiting); `None` if it cannot be read.
async fn settled(file: &Path) -> Option<Vec<u8>> {
    let mut last = std::fs::read(file).ok()?;
    for _ in 0..20 {
        tokio::time::sleep(STABLE).await;
        let now = std::fs::read(file).ok()?;
        if now == last {
            return Some(now);
        }
        last = now;
    }
    Some(last)
}
