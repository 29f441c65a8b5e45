//! The database: opened (migrations applied), paged lists, and the
//! connection pool every query module works on.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::error::{Context, Result, StoreError};

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) pool: SqlitePool,
}

/// How one kind of record is listed a page at a time (see [`Store::page`]).
pub(crate) struct Listing {
    /// `SELECT … FROM …`, without `WHERE`.
    pub select: &'static str,
    /// `SELECT COUNT(*) FROM …` over the same tables.
    pub count: &'static str,
    /// ` ORDER BY …`.
    pub order: &'static str,
    /// What is being read, for errors.
    pub what: &'static str,
}

/// ` AND column IN (…)` for a caller limited to `teams` (nothing matches
/// an empty list): lists are filtered in the query, so their totals count
/// only what the caller may see.
pub(crate) fn push_teams(
    q: &mut sqlx::QueryBuilder<sqlx::Sqlite>,
    column: &str,
    teams: Option<&[String]>,
) {
    let Some(teams) = teams else { return };
    if teams.is_empty() {
        q.push(" AND 1 = 0");
        return;
    }
    q.push(" AND ").push(column).push(" IN (");
    let mut list = q.separated(", ");
    for t in teams {
        list.push_bind(t.clone());
    }
    list.push_unseparated(")");
}

impl Store {
    /// One page of a list: the rows of `l` that `filter` (which pushes a
    /// ` WHERE …`) keeps, in order, `limit` from `offset`, each made by
    /// `row`; and how many it keeps in all.
    pub(crate) async fn page<T>(
        &self,
        l: &Listing,
        filter: impl Fn(&mut sqlx::QueryBuilder<sqlx::Sqlite>),
        limit: i64,
        offset: i64,
        row: fn(&sqlx::sqlite::SqliteRow) -> T,
    ) -> Result<(Vec<T>, i64)> {
        let mut q = sqlx::QueryBuilder::new(l.select);
        filter(&mut q);
        q.push(l.order)
            .push(" LIMIT ")
            .push_bind(limit)
            .push(" OFFSET ")
            .push_bind(offset);
        let rows = q.build().fetch_all(&self.pool).await.ctx(l.what)?;
        let mut c = sqlx::QueryBuilder::new(l.count);
        filter(&mut c);
        let total: i64 = c
            .build_query_scalar()
            .fetch_one(&self.pool)
            .await
            .ctx(l.what)?;
        Ok((rows.iter().map(row).collect(), total))
    }

    /// Open (creating if needed) the database file and apply migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError {
                context: "creating the database folder",
                source: sqlx::Error::Io(e),
            })?;
        }
        let url = format!("sqlite://{}", path.display());
        let options = SqliteConnectOptions::from_str(&url)
            .ctx("parsing the database path")?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .ctx("opening the database")?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| StoreError {
                context: "applying migrations",
                source: e.into(),
            })?;
        let store = Store { pool };
        store.canonical_session_ids().await?;
        Ok(store)
    }

    /// Round-trip time of a trivial query, for health checks.
    pub async fn ping(&self) -> Result<Duration> {
        let start = std::time::Instant::now();
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .ctx("pinging the database")?;
        Ok(start.elapsed())
    }

    /// At start-up nothing runs yet: mark every process stopped and fail the
    /// turns a previous run left unfinished, except jobs' (their own
    /// recovery re-runs or fails them and reports it). Returns how many
    /// turns were failed.
    pub async fn recover(&self, now: i64) -> Result<u64> {
        sqlx::query(
            "UPDATE sessions SET process_state = 'stopped' WHERE process_state <> 'stopped'",
        )
        .execute(&self.pool)
        .await
        .ctx("resetting process states")?;
        let done = sqlx::query(
            "UPDATE turns SET status = 'failed', error = 'Iris restarted before the turn ended', completed_at = ?
             WHERE status IN ('queued', 'running') AND kind <> 'job'",
        )
        .bind(now)
        .execute(&self.pool)
        .await
        .ctx("failing unfinished turns")?;
        Ok(done.rows_affected())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::Store;

    pub async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("data/iris.db"))
            .await
            .expect("open store");
        (store, dir)
    }
}
