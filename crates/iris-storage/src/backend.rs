//! Everything that differs between SQLite and Postgres, in one place: how
//! a connection is opened and set up, the migrations, how a transaction
//! that must not interleave with another writer begins, and how a
//! transaction defers its foreign keys. The queries of the other modules
//! are written once, in the SQL both accept.

use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Executor, Transaction};

use crate::error::{Context, Result, StoreError};

/// Which database a [`crate::Store`] is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Where the database is and how to hold connections to it.
#[derive(Debug, Clone, PartialEq)]
pub struct DbSettings {
    /// `sqlite:///path/iris.db` (`sqlite:` + a path) or `postgres://…`.
    pub url: String,
    /// Most connections held at once.
    pub max_connections: u32,
    /// Longest wait for a connection (opening one, or one from the pool).
    pub connect_timeout: Duration,
    /// Longest one statement may run (Postgres `statement_timeout`; the
    /// wait for SQLite's write lock).
    pub statement_timeout: Duration,
    /// Only read, never change (the source of `iris db copy`): a SQLite
    /// file must exist and is opened read-only.
    pub read_only: bool,
}

impl DbSettings {
    /// The embedded default: the SQLite file at `path`.
    pub fn sqlite(path: &Path) -> Self {
        DbSettings {
            url: sqlite_url(path),
            max_connections: 8,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            read_only: false,
        }
    }
}

/// The URL of the SQLite file at `path`.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// The file a `sqlite:` URL names (`sqlite:data/x.db`, `sqlite:///abs/x.db`),
/// options left out; `None` for another kind of URL.
pub fn sqlite_file(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    Some(rest.split('?').next().unwrap_or_default())
}

/// Where a `postgres://` URL points — `host:port/database`, without
/// credentials or options; `None` for another kind of URL.
pub fn postgres_place(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))?;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, place)| place);
    Some(rest.split('?').next().unwrap_or_default())
}

/// A write lock: transactions holding the same one run one at a time on
/// every backend (SQLite has one writer anyway; Postgres takes an advisory
/// lock for the transaction).
#[derive(Debug, Clone, Copy)]
pub(crate) enum WriteLock {
    /// Appending to the audit chain: each record chains to the last.
    Audit,
    /// Jobs with idempotency keys: a key is looked up, then written.
    Jobs,
    /// A one-time rewrite of rows at start-up.
    Rewrite,
    /// A task's push configs: counted against their cap, then written.
    PushConfigs,
}

impl WriteLock {
    /// The advisory lock's key (arbitrary constants, namespaced by a
    /// prefix so they do not collide with another application's).
    fn key(self) -> i64 {
        const IRIS: i64 = 0x4952_4953 << 16; // "IRIS"
        IRIS + match self {
            WriteLock::Audit => 1,
            WriteLock::Jobs => 2,
            WriteLock::Rewrite => 3,
            WriteLock::PushConfigs => 4,
        }
    }
}

/// How a column's values are read and written when copying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Integer,
    Real,
    Text,
}

/// A column of a table, as the database describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Column {
    pub name: String,
    pub kind: Kind,
}

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Backend {
    /// The database's clock in milliseconds since the epoch, as an SQL
    /// expression (leases are granted on it, whatever the nodes' clocks say).
    pub(crate) fn now_ms(self) -> &'static str {
        match self {
            Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    /// In `tx`, which is about to share-lock a lease row: a node paused in
    /// the middle of it (a frozen VM, SIGSTOP) does not hold the row for
    /// long — Postgres ends the transaction once it has waited idle for
    /// 2 s (the shortest lease), and the take-over it held back goes on.
    pub(crate) async fn bound_idle(self, tx: &mut Transaction<'static, Any>) -> Result<()> {
        if self == Backend::Postgres {
            sqlx::query("SET LOCAL idle_in_transaction_session_timeout = 2000")
                .execute(&mut **tx)
                .await
                .ctx("bounding a fenced write")?;
        }
        Ok(())
    }

    /// Appended to a `SELECT` that must keep its rows from changing until
    /// the transaction ends (a SQLite transaction that writes holds the
    /// whole database already).
    pub(crate) fn share_lock(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR SHARE",
        }
    }

    /// Appended to a `SELECT` of rows about to be deleted: rows written
    /// meanwhile that refer to them wait for the transaction (SQLite's
    /// write lock holds the whole database already).
    pub(crate) fn update_lock(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }

    /// The backend a URL names.
    pub fn of(url: &str) -> Result<Backend> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => Err(StoreError {
                context: "reading database.url (it must start with sqlite: or postgres://)",
                source: sqlx::Error::Configuration(
                    format!("unknown database scheme `{scheme}`").into(),
                ),
            }),
        }
    }

    /// A pool on `s.url`; nothing is read or written yet.
    pub(crate) async fn connect(self, s: &DbSettings) -> Result<AnyPool> {
        sqlx::any::install_default_drivers();
        let mut url = s.url.clone();
        if let Some(path) = sqlite_file(&s.url) {
            if s.read_only && !Path::new(path).is_file() {
                return Err(StoreError {
                    context: "opening the database",
                    source: sqlx::Error::InvalidArgument(format!("no database file at {path}")),
                });
            }
            if let Some(dir) = Path::new(path).parent()
                && !dir.as_os_str().is_empty()
                && !s.read_only
            {
                std::fs::create_dir_all(dir).map_err(|e| StoreError {
                    context: "creating the database folder",
                    source: sqlx::Error::Io(e),
                })?;
            }
            if !url.contains('?') {
                url.push_str(if s.read_only { "?mode=ro" } else { "?mode=rwc" });
            }
        }
        let options: AnyConnectOptions = url.parse().ctx("reading database.url")?;
        let statement_ms = s.statement_timeout.as_millis().max(1);
        let read_only = s.read_only;
        AnyPoolOptions::new()
            .max_connections(s.max_connections.max(1))
            .acquire_timeout(s.connect_timeout)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    let setup: Vec<String> = match (self, read_only) {
                        // WAL: readers never wait for the writer. NORMAL is
                        // durable across crashes of Iris (not of the machine
                        // between checkpoints), the usual choice with WAL.
                        (Backend::Sqlite, false) => vec![
                            "PRAGMA journal_mode = WAL".into(),
                            "PRAGMA synchronous = NORMAL".into(),
                            "PRAGMA foreign_keys = ON".into(),
                            format!("PRAGMA busy_timeout = {statement_ms}"),
                        ],
                        (Backend::Sqlite, true) => {
                            vec![format!("PRAGMA busy_timeout = {statement_ms}")]
                        }
                        // Notices ("already exists, skipping") are not for Iris's log.
                        (Backend::Postgres, _) => {
                            let mut v = vec![
                                format!("SET statement_timeout = {statement_ms}"),
                                "SET client_min_messages = warning".into(),
                            ];
                            if read_only {
                                v.push("SET default_transaction_read_only = on".into());
                            }
                            v
                        }
                    };
                    for q in setup {
                        conn.execute(sqlx::AssertSqlSafe(q)).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .ctx("opening the database")
    }

    /// Apply this backend's migrations (same versions on both). On
    /// Postgres the migrator holds an advisory lock, so nodes starting at
    /// once on one empty database apply them once.
    pub(crate) async fn migrate(self, pool: &AnyPool) -> Result<()> {
        let m = match self {
            Backend::Sqlite => &SQLITE,
            Backend::Postgres => &POSTGRES,
        };
        m.run(pool).await.map_err(|e| StoreError {
            context: "applying migrations",
            source: e.into(),
        })
    }

    /// The latest migration version this build knows.
    pub(crate) fn latest_migration(self) -> i64 {
        let m = match self {
            Backend::Sqlite => &SQLITE,
            Backend::Postgres => &POSTGRES,
        };
        m.iter().map(|m| m.version).max().unwrap_or(0)
    }

    /// A transaction that reads, then writes (a fence checked first): on
    /// SQLite it takes the write lock at once (IMMEDIATE), so it cannot fail
    /// half-way with SQLITE_BUSY_SNAPSHOT; Postgres locks the rows it reads
    /// `FOR SHARE`.
    pub(crate) async fn begin_write(self, pool: &AnyPool) -> Result<Transaction<'static, Any>> {
        match self {
            Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => pool.begin().await,
        }
        .ctx("starting a write transaction")
    }

    /// A transaction that holds `lock` until it ends.
    pub(crate) async fn begin_locked(
        self,
        pool: &AnyPool,
        lock: WriteLock,
    ) -> Result<Transaction<'static, Any>> {
        match self {
            // IMMEDIATE takes SQLite's one write lock now: a transaction
            // that reads and then writes cannot fail half-way with
            // SQLITE_BUSY_SNAPSHOT after another connection committed.
            Backend::Sqlite => pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .ctx("starting a write transaction"),
            Backend::Postgres => {
                let mut tx = pool.begin().await.ctx("starting a write transaction")?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(lock.key())
                    .execute(&mut *tx)
                    .await
                    .ctx("taking a write lock")?;
                Ok(tx)
            }
        }
    }

    /// A read-only transaction that sees one snapshot throughout.
    pub(crate) async fn begin_snapshot(self, pool: &AnyPool) -> Result<Transaction<'static, Any>> {
        match self {
            // WAL: a read transaction keeps the snapshot of its first read.
            Backend::Sqlite => pool.begin().await.ctx("starting a snapshot"),
            Backend::Postgres => pool
                .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
                .ctx("starting a snapshot"),
        }
    }

    /// The columns of `table`, in order.
    pub(crate) async fn columns(
        self,
        tx: &mut Transaction<'static, Any>,
        table: &str,
    ) -> Result<Vec<Column>> {
        let q = match self {
            Backend::Sqlite => "SELECT name, type FROM pragma_table_info($1) ORDER BY cid",
            Backend::Postgres => {
                "SELECT CAST(column_name AS TEXT), CAST(data_type AS TEXT) FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position"
            }
        };
        let rows: Vec<(String, String)> = sqlx::query_as(q)
            .bind(table)
            .fetch_all(&mut **tx)
            .await
            .ctx("reading a table's columns")?;
        Ok(rows
            .into_iter()
            .map(|(name, ty)| {
                let ty = ty.to_ascii_lowercase();
                let kind = if ty.contains("int") {
                    Kind::Integer
                } else if ty.contains("real") || ty.contains("double") || ty.contains("float") {
                    Kind::Real
                } else {
                    Kind::Text
                };
                Column { name, kind }
            })
            .collect())
    }

    /// The tables of the database, Iris's and any other (not sqlx's own).
    pub(crate) async fn tables(self, pool: &AnyPool) -> Result<Vec<String>> {
        let q = match self {
            Backend::Sqlite => {
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
                 AND name <> '_sqlx_migrations' ORDER BY name"
            }
            Backend::Postgres => {
                "SELECT CAST(table_name AS TEXT) FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations' ORDER BY 1"
            }
        };
        sqlx::query_scalar(q)
            .fetch_all(pool)
            .await
            .ctx("listing the tables")
    }

    /// Whether pools `a` (on this backend) and `b` reach one database,
    /// however their URLs spell it.
    pub(crate) async fn same_database(self, a: &AnyPool, b: &AnyPool) -> Result<bool> {
        match self {
            // The same file: one device and inode (links and `..` included).
            Backend::Sqlite => {
                use std::os::unix::fs::MetadataExt;
                let file = |pool: &AnyPool| {
                    let pool = pool.clone();
                    async move {
                        let f: String = sqlx::query_scalar(
                            "SELECT file FROM pragma_database_list WHERE name = 'main'",
                        )
                        .fetch_one(&pool)
                        .await
                        .ctx("reading the database's file")?;
                        Ok::<_, StoreError>(std::fs::metadata(&f).ok().map(|m| (m.dev(), m.ino())))
                    }
                };
                let (fa, fb) = (file(a).await?, file(b).await?);
                Ok(fa.is_some() && fa == fb)
            }
            // Advisory locks belong to one database: one taken through `a`
            // is refused through `b` exactly when they are the same.
            Backend::Postgres => {
                // A key nobody else holds: this process and this moment.
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| i64::from(d.subsec_nanos()))
                    .unwrap_or_default();
                let key = (i64::from(std::process::id()) << 32) | nanos;
                let mut ca = a.acquire().await.ctx("comparing databases")?;
                let mut cb = b.acquire().await.ctx("comparing databases")?;
                let q = "SELECT pg_try_advisory_lock($1)";
                let took: bool = sqlx::query_scalar(q)
                    .bind(key)
                    .fetch_one(&mut *ca)
                    .await
                    .ctx("comparing databases")?;
                let also: bool = sqlx::query_scalar(q)
                    .bind(key)
                    .fetch_one(&mut *cb)
                    .await
                    .ctx("comparing databases")?;
                for c in [&mut ca, &mut cb] {
                    let _ = sqlx::query("SELECT pg_advisory_unlock_all()")
                        .execute(&mut **c)
                        .await;
                }
                Ok(took && !also)
            }
        }
    }

    /// This transaction's commit need not wait for the disk (what it
    /// writes may be lost in a crash of the database server, never half).
    /// SQLite in WAL with `synchronous=NORMAL` commits so already.
    pub(crate) async fn lazy_commit(self, tx: &mut Transaction<'static, Any>) -> Result<()> {
        if self == Backend::Postgres {
            sqlx::query("SET LOCAL synchronous_commit TO OFF")
                .execute(&mut **tx)
                .await
                .ctx("relaxing a commit")?;
        }
        Ok(())
    }

    /// No limit on statements for the rest of this transaction (a copy).
    pub(crate) async fn no_statement_timeout(
        self,
        tx: &mut Transaction<'static, Any>,
    ) -> Result<()> {
        if self == Backend::Postgres {
            sqlx::query("SET LOCAL statement_timeout = 0")
                .execute(&mut **tx)
                .await
                .ctx("lifting the statement timeout")?;
        }
        Ok(())
    }

    /// Foreign keys checked at commit instead of at each statement (rows
    /// re-keyed one table at a time).
    pub(crate) async fn defer_foreign_keys(self, tx: &mut Transaction<'static, Any>) -> Result<()> {
        let q = match self {
            Backend::Sqlite => "PRAGMA defer_foreign_keys = ON",
            // The Postgres schema declares its foreign keys DEFERRABLE.
            Backend::Postgres => "SET CONSTRAINTS ALL DEFERRED",
        };
        sqlx::query(q)
            .execute(&mut **tx)
            .await
            .ctx("deferring foreign keys")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_names_the_backend() {
        assert_eq!(Backend::of("sqlite:///x/iris.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of("sqlite:iris.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of("postgres://u@h/db").unwrap(), Backend::Postgres);
        assert_eq!(
            Backend::of("postgresql://u@h/db").unwrap(),
            Backend::Postgres
        );
        assert_eq!(
            sqlite_file("sqlite:///x/iris.db?mode=ro"),
            Some("/x/iris.db")
        );
        assert_eq!(sqlite_file("sqlite:data/iris.db"), Some("data/iris.db"));
        assert_eq!(sqlite_file("postgres://h/db"), None);
        assert_eq!(
            postgres_place("postgres://u:p@w@h:5/db?sslmode=require"),
            Some("h:5/db")
        );
        assert_eq!(postgres_place("postgresql://h/db"), Some("h/db"));
        assert_eq!(postgres_place("sqlite:x.db"), None);
        let e = Backend::of("mysql://h/db").unwrap_err().to_string();
        assert!(e.contains("mysql"), "{e}");
    }

    #[test]
    fn both_backends_have_the_same_migration_versions() {
        let versions =
            |m: &sqlx::migrate::Migrator| -> Vec<i64> { m.iter().map(|m| m.version).collect() };
        assert_eq!(versions(&SQLITE), versions(&POSTGRES));
    }
}
