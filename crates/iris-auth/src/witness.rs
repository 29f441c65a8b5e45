//! The audit trail's witness: a small file outside the database (mode
//! 0600) with the chain's id and both ends as this process last wrote or
//! pruned them. The hash chain shows an edited or removed record in the
//! middle; only something outside the database can show that its tail
//! was cut, or its head together with the anchor, or the whole log
//! emptied (`Store::verify_audit_with`). See docs/security.md.

use std::path::{Path, PathBuf};

use iris_storage::{AuditWitness, Store};

/// The witness at `path`: `None` when there is no file.
///
/// # Errors
/// Why the file cannot be read or is not a witness.
pub fn read(path: &Path) -> Result<Option<AuditWitness>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{} is not an audit witness: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

/// Write what the anchor says now to `path`, unless the file already holds
/// a later end of the same chain (another process on this database wrote
/// after us). Written whole or not at all (a new file renamed over it).
pub async fn write(store: &Store, path: &Path) {
    let now = match store.audit_witness_now().await {
        Ok(Some(w)) => w,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the audit trail's ends for its witness");
            return;
        }
    };
    if let Ok(Some(old)) = read(path)
        && old.chain == now.chain
        && old.last_seq > now.last_seq
    {
        return;
    }
    if let Err(e) = replace(path, &now) {
        tracing::error!(file = %path.display(), error = %e, "cannot write the audit witness");
    }
}

fn replace(path: &Path, w: &AuditWitness) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("witness"),
        std::process::id()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec(w).unwrap_or_default())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// At start: a witness for this database's chain. A missing one is
/// written (a new database, or one from before witnesses); one of another
/// chain is moved aside to `<file>.<its chain>.replaced` and a new one
/// written — returned, so the caller can record it in the trail.
pub async fn ensure(store: &Store, path: &Path) -> Option<(String, PathBuf)> {
    let chain = match store.audit_chain_id().await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the audit chain's id");
            return None;
        }
    };
    let replaced = match read(path) {
        Ok(Some(old)) if old.chain == chain => return None,
        Ok(Some(old)) => {
            let aside = path.with_file_name(format!(
                "{}.{}.replaced",
                path.file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("witness"),
                old.chain
            ));
            tracing::error!(file = %path.display(), theirs = %old.chain, ours = %chain, kept = %aside.display(),
                "the audit witness is of another database's chain: this database was replaced, or the witness copied; a new witness is written and the old one kept");
            if let Err(e) = std::fs::rename(path, &aside) {
                tracing::error!(error = %e, "cannot move the old audit witness aside");
            }
            Some((old.chain, aside))
        }
        Ok(None) => None,
        Err(e) => {
            tracing::error!(error = %e, "the audit witness cannot be read; writing a new one");
            None
        }
    };
    write(store, path).await;
    replaced
}
