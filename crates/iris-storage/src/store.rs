//! The database: opened (migrations applied), paged lists, and the
//! connection pool every query module works on.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyRow;

use crate::backend::{Backend, DbSettings};
use crate::error::{Context, Result};
use crate::sql::Sql;

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) pool: AnyPool,
    pub(crate) backend: Backend,
    /// Longest one write attempt may take (waiting for a connection, then
    /// its statements); past it the database counts as unreachable.
    pub(crate) attempt_limit: Duration,
    /// The node this store writes for (`None`: a one-shot command): its
    /// turns, approvals and processes carry it ([`Store::on_node`]).
    pub(crate) node: Option<std::sync::Arc<str>>,
    /// The lease tokens this node's writes of a team's work must match.
    pub(crate) fences: Fences,
}

/// The last lease token this node held for each team: the fence its
/// writes of the team's work are checked against. A team this node never
/// held has no entry (its writes are not the owner's work: not fenced); a
/// lease lost keeps its old token, so what the node still writes of that
/// team is refused.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fences(pub(crate) Arc<RwLock<HashMap<String, i64>>>);

impl Fences {
    pub(crate) fn token(&self, team: &str) -> Option<i64> {
        self.0.read().ok().and_then(|m| m.get(team).copied())
    }

    pub(crate) fn any(&self) -> bool {
        self.0.read().is_ok_and(|m| !m.is_empty())
    }
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
pub(crate) fn push_teams(q: &mut Sql, column: &str, teams: Option<&[String]>) {
    let Some(teams) = teams else { return };
    if teams.is_empty() {
        q.push(" AND 1 = 0");
        return;
    }
    q.push(" AND ")
        .push(column)
        .push(" IN ")
        .list(teams.iter().map(String::as_str));
}

/// How full the pool is (`/health/detailed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolState {
    /// Connections open.
    pub size: u32,
    /// Of those, not in use.
    pub idle: u32,
    /// Most it opens.
    pub max: u32,
}

/// The error of a turn failed by [`Store::recover`].
pub const RESTARTED: &str = "Iris restarted before the turn ended";

impl Store {
    /// One page of a list: the rows of `l` that `filter` (which pushes a
    /// ` WHERE …`) keeps, in order, `limit` from `offset`, each made by
    /// `row`; and how many it keeps in all.
    pub(crate) async fn page<T>(
        &self,
        l: &Listing,
        filter: impl Fn(&mut Sql),
        limit: i64,
        offset: i64,
        row: fn(&AnyRow) -> T,
    ) -> Result<(Vec<T>, i64)> {
        let mut q = Sql::new(l.select);
        filter(&mut q);
        q.push(l.order)
            .push(" LIMIT ")
            .bind(limit)
            .push(" OFFSET ")
            .bind(offset);
        let rows = q.build(l.what)?.fetch_all(&self.pool).await.ctx(l.what)?;
        let mut c = Sql::new(l.count);
        filter(&mut c);
        let total: i64 = c
            .build_scalar(l.what)?
            .fetch_one(&self.pool)
            .await
            .ctx(l.what)?;
        Ok((rows.iter().map(row).collect(), total))
    }

    /// Open the database `s` names and apply its migrations.
    pub async fn connect(s: &DbSettings) -> Result<Self> {
        let store = Self::connect_unmigrated(s).await?;
        store.migrate().await?;
        store.canonical_session_ids().await?;
        Ok(store)
    }

    /// Open the database `s` names as it is (`iris db` commands).
    pub async fn connect_unmigrated(s: &DbSettings) -> Result<Self> {
        let backend = Backend::of(&s.url)?;
        let pool = backend.connect(s).await?;
        Ok(Store {
            pool,
            backend,
            attempt_limit: s.connect_timeout + s.statement_timeout + Duration::from_secs(5),
            node: None,
            fences: Default::default(),
        })
    }

    /// This store, writing for node `node` from now on.
    pub fn on_node(mut self, node: &str) -> Self {
        self.node = Some(node.into());
        // Another node's store holds no lease of this one's.
        self.fences = Default::default();
        self
    }

    /// The node that wrote row `id` of `table` (turns, approvals).
    pub(crate) async fn node_of(&self, table: &'static str, id: &str) -> Result<Option<String>> {
        let node: Option<Option<String>> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT node_id FROM {table} WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .ctx("reading which node wrote a row")?;
        Ok(node.flatten())
    }

    /// The node this store writes for.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// Apply the migrations this build has and the database lacks.
    pub async fn migrate(&self) -> Result<()> {
        self.backend.migrate(&self.pool).await
    }

    /// The newest migration applied (0 on an empty database) and the
    /// newest this build has.
    pub async fn schema_version(&self) -> Result<(i64, i64)> {
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_one(&self.pool)
                .await
                .unwrap_or(None);
        Ok((applied.unwrap_or(0), self.backend.latest_migration()))
    }

    /// `attempt`, unless it takes longer than a write may (a connection
    /// that went silent, say): then the database counts as unreachable.
    pub(crate) async fn within<T>(
        &self,
        context: &'static str,
        attempt: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::time::timeout(self.attempt_limit, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(crate::error::StoreError {
                    context,
                    source: sqlx::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the database did not answer in time",
                    )),
                })
            })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Connections open, idle and allowed.
    pub fn pool_state(&self) -> PoolState {
        PoolState {
            size: self.pool.size(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            max: self.pool.options().get_max_connections(),
        }
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

    /// What this node's previous run left (see [`Store::on_node`]):
    /// its processes are stopped, its unfinished turns (not jobs') failed.
    /// Work of other nodes sharing the database is not touched; work
    /// written before nodes had ids counts as anyone's.
    pub async fn recover(&self, now: i64) -> Result<u64> {
        sqlx::query(
            "UPDATE sessions SET process_state = 'stopped'
             WHERE process_state <> 'stopped' AND (node_id IS NULL OR node_id = $1)",
        )
        .bind(self.node())
        .execute(&self.pool)
        .await
        .ctx("resetting process states")?;
        let done = sqlx::query(
            "UPDATE turns SET status = 'failed', error = $3, completed_at = $1
             WHERE status IN ('queued', 'running') AND kind <> 'job' AND (node_id IS NULL OR node_id = $2)",
        )
        .bind(now)
        .bind(self.node())
        .bind(RESTARTED)
        .execute(&self.pool)
        .await
        .ctx("failing unfinished turns")?;
        Ok(done.rows_affected())
    }

    /// The turns [`Store::recover`] would fail (read before it, to report
    /// their end).
    pub async fn unfinished_turns(&self) -> Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT id FROM turns WHERE status IN ('queued', 'running') AND kind <> 'job'
             AND (node_id IS NULL OR node_id = $1)",
        )
        .bind(self.node())
        .fetch_all(&self.pool)
        .await
        .ctx("reading unfinished turns")
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::Store;

    /// A migrated store of its own (SQLite, or Postgres under
    /// `IRIS_TEST_POSTGRES`).
    pub async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = crate::testing::store_in(dir.path()).await;
        (store, dir)
    }

    /// A session `id` from `from` to `to`, never used.
    pub fn session(id: &str, from: &str, to: &str, default: bool) -> crate::SessionRow {
        crate::SessionRow {
            id: id.into(),
            from_team: from.into(),
            to_team: to.into(),
            is_default: default,
            fork_of: None,
            started: false,
            message_count: 0,
            process_state: "stopped".into(),
            created_at: 1,
            last_used_at: 1,
            restarted_at: None,
            worktree: None,
        }
    }

    /// A queued message `id` in `session` from `from` to `to`.
    pub fn turn(id: &str, session: &str, from: &str, to: &str) -> crate::TurnRow {
        crate::TurnRow {
            id: id.into(),
            session_id: session.into(),
            from_team: from.into(),
            to_team: to.into(),
            kind: "message".into(),
            status: "queued".into(),
            request: "hello".into(),
            response: None,
            error: None,
            tool_uses: None,
            usage: None,
            cost_usd: None,
            created_at: 1,
            started_at: None,
            completed_at: None,
            events_dropped: 0,
            chain: Vec::new(),
            caller: Some("key:k".into()),
        }
    }
}
