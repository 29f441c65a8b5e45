//! `iris db`: the database itself — migrations, and moving an installation
//! between SQLite and Postgres.

use std::process::ExitCode;

use clap::Subcommand;
use iris_core::config::{Config, ConfigSource, redact_url};
use iris_storage::{DbSettings, Store};
use serde_json::json;

use crate::commands::load;

#[derive(Subcommand)]
pub enum DbAction {
    /// Apply the migrations this build has to the database (the
    /// configured one, or --url). Safe while other nodes start on it.
    Migrate {
        /// sqlite:<path> or postgres://…
        #[arg(long)]
        url: Option<String>,
    },
    /// Copy everything (one consistent snapshot) into another database,
    /// then verify the audit chain there.
    Copy {
        /// The database copied (default: the configured one).
        #[arg(long)]
        from: Option<String>,
        /// The database written: sqlite:<path> or postgres://…
        #[arg(long)]
        to: String,
        /// Replace what the target holds (it is refused otherwise).
        #[arg(long)]
        overwrite: bool,
    },
}

pub async fn run(source: ConfigSource, action: DbAction) -> anyhow::Result<ExitCode> {
    let cfg = load(&source)?;
    match action {
        DbAction::Migrate { url } => {
            let settings = settings_for(&cfg, url.as_deref())?;
            let store = Store::connect_unmigrated(&settings).await.map_err(plain)?;
            let (before, latest) = store.schema_version().await.map_err(plain)?;
            store.migrate().await.map_err(plain)?;
            let (after, _) = store.schema_version().await.map_err(plain)?;
            store.close().await;
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "database": redact_url(&settings.url),
                    "backend": store.backend(),
                    "before": before,
                    "after": after,
                    "latest": latest,
                }))?
            );
            eprintln!("database at migration {after} (was {before})");
            Ok(ExitCode::SUCCESS)
        }
        DbAction::Copy {
            from,
            to,
            overwrite,
        } => {
            let configured = cfg.database_settings();
            let mut from = settings_for(&cfg, from.as_deref())?;
            from.read_only = true;
            let to = settings_for(&cfg, Some(&to))?;
            if from.url == to.url {
                anyhow::bail!("--from and --to name the same database");
            }
            let source = Store::connect_unmigrated(&from)
                .await
                .map_err(|e| anyhow::anyhow!("the source (--from): {e}"))?;
            let target = Store::connect_unmigrated(&to)
                .await
                .map_err(|e| anyhow::anyhow!("the target (--to): {e}"))?;
            let report = source.copy_to(&target, overwrite).await.map_err(plain)?;
            // The witness of this installation's chain, when the copy is of
            // the configured database: the chain on the target must match it.
            let source_witness = (from.url == configured.url).then(|| cfg.audit_witness_path());
            let verdict = match &source_witness {
                Some(path) => {
                    let witness = iris_core::auth::witness::read(path);
                    target.verify_audit_with(witness).await.map_err(plain)?
                }
                None => target.verify_audit().await.map_err(plain)?,
            };
            // The target's own witness, where an Iris on it looks for one
            // (another file than the source's: the two chains part here).
            let mut on_target = cfg.clone();
            on_target.database.url = Some(to.url.clone());
            on_target.database.path = None;
            let target_witness = on_target.audit_witness_path();
            let wrote_witness = verdict.ok && source_witness.as_ref() != Some(&target_witness);
            if wrote_witness {
                iris_core::auth::witness::write(&target, &target_witness).await;
            }
            source.close().await;
            target.close().await;
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "from": redact_url(&from.url),
                    "to": redact_url(&to.url),
                    "rows": report.rows,
                    "tables": report.tables.iter().map(|(t, n)| (t.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
                    "audit": verdict,
                    "witness": wrote_witness.then(|| target_witness.display().to_string()),
                }))?
            );
            if verdict.ok {
                eprintln!(
                    "copied {} rows; the audit chain verifies on the target ({} records)",
                    report.rows, verdict.records
                );
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!(
                    "copied {} rows, but the audit chain does NOT verify on the target: {}",
                    report.rows,
                    verdict.problem.as_deref().unwrap_or("?")
                );
                Ok(ExitCode::from(2))
            }
        }
    }
}

/// A storage error as one line (its text already names its cause).
fn plain(e: iris_storage::StoreError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// The configured database's settings, on `url` when one is given
/// (a relative SQLite path is against the working folder).
fn settings_for(cfg: &Config, url: Option<&str>) -> anyhow::Result<DbSettings> {
    let mut s = cfg.database_settings();
    if let Some(url) = url {
        let backend = iris_storage::Backend::of(url).map_err(plain)?;
        s.url = match backend {
            iris_storage::Backend::Sqlite => {
                let path = iris_storage::sqlite_file(url).unwrap_or_default();
                if path.is_empty() {
                    anyhow::bail!("a SQLite URL is sqlite: and a file path (sqlite:iris.db)");
                }
                iris_storage::sqlite_url(&std::path::absolute(path)?)
            }
            iris_storage::Backend::Postgres => url.to_owned(),
        };
        if backend == iris_storage::Backend::Postgres && s.max_connections < 4 {
            s.max_connections = 4;
        }
    }
    Ok(s)
}
