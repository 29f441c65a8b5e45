//! Moving an installation: everything in one database copied into
//! another (SQLite to Postgres or back), from one consistent snapshot.

use futures_util::TryStreamExt;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::backend::Column;
use crate::error::{Context, Result, StoreError};
use crate::sql::Sql;
use crate::store::Store;

/// Every table, parents before children (the order rows are written in).
pub(crate) const TABLES: &[&str] = &[
    "auth_meta",
    "users",
    "refresh_tokens",
    "api_keys",
    "audit_log",
    "audit_anchor",
    "teams",
    "nodes",
    "team_leases",
    "sessions",
    "turns",
    "turn_events",
    "approvals",
    "transcripts",
    "push_configs",
    "jobs",
    "webhooks",
    "webhook_deliveries",
    "webhook_attempts",
];

/// Rows written per INSERT.
const BATCH: usize = 200;

/// What a copy did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyReport {
    /// Rows copied, by table (in [`TABLES`] order).
    pub tables: Vec<(String, i64)>,
    /// Rows in all.
    pub rows: i64,
}

impl Store {
    /// Rows in all of Iris's tables.
    pub async fn row_count(&self) -> Result<i64> {
        let mut total = 0;
        for t in TABLES {
            let n: i64 =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {t}")))
                    .fetch_one(&self.pool)
                    .await
                    .ctx("counting rows")?;
            total += n;
        }
        Ok(total)
    }

    /// Copy every row of this database into `target` (migrated here to
    /// the same version first), reading one snapshot, writing in one
    /// transaction: the target ends with all of it or none. A target that
    /// holds anything is refused unless `overwrite`, which empties it
    /// first (in the same transaction).
    pub async fn copy_to(&self, target: &Store, overwrite: bool) -> Result<CopyReport> {
        if self.backend == target.backend
            && self.backend.same_database(&self.pool, &target.pool).await?
        {
            return Err(refused("the source and the target are one database".into()));
        }
        let (from, latest) = self.schema_version().await?;
        if from == 0 {
            return Err(refused(
                "the source is not an Iris database (no Iris migrations applied)".into(),
            ));
        }
        if from != latest {
            return Err(refused(format!(
                "the source database is at migration {from}, this build at {latest}: run `iris db migrate` on it first"
            )));
        }
        // Someone else's tables: the wrong database, and Iris's migrations
        // could fail half-way on them.
        let foreign: Vec<String> = target
            .backend
            .tables(&target.pool)
            .await?
            .into_iter()
            .filter(|t| !TABLES.contains(&t.as_str()))
            .collect();
        if !foreign.is_empty() {
            return Err(refused(format!(
                "the target database holds tables that are not Iris's ({}): choose an empty database",
                foreign.join(", ")
            )));
        }
        target.migrate().await?;
        let existing = target.row_count().await?;
        if existing > 0 && !overwrite {
            return Err(refused(format!(
                "the target database already holds {existing} rows; pass --overwrite to replace them"
            )));
        }
        let mut read = self.backend.begin_snapshot(&self.pool).await?;
        let mut write = target.pool.begin().await.ctx("starting the copy")?;
        target.backend.defer_foreign_keys(&mut write).await?;
        // A large installation takes longer than one statement may.
        self.backend.no_statement_timeout(&mut read).await?;
        target.backend.no_statement_timeout(&mut write).await?;
        if overwrite {
            for t in TABLES.iter().rev() {
                sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {t}")))
                    .execute(&mut *write)
                    .await
                    .ctx("emptying the target")?;
            }
        }
        let mut report = CopyReport {
            tables: Vec::new(),
            rows: 0,
        };
        for t in TABLES {
            let columns = self.backend.columns(&mut read, t).await?;
            let names = columns
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            // A copy is another installation: it makes a cluster id of its
            // own at its first start, so a clone on the same Redis (a
            // staging copy) does not join the original's cluster.
            let only = if *t == "auth_meta" {
                " WHERE key <> 'cluster_id'"
            } else {
                ""
            };
            let select = format!("SELECT {names} FROM {t}{only}");
            let insert = format!("INSERT INTO {t} ({names}) ");
            let mut rows = sqlx::query(sqlx::AssertSqlSafe(select)).fetch(&mut *read);
            let mut pending: Vec<AnyRow> = Vec::with_capacity(BATCH);
            let mut n = 0_i64;
            while let Some(row) = rows.try_next().await.ctx("reading the source")? {
                pending.push(row);
                if pending.len() == BATCH {
                    n += write_rows(&mut write, &insert, &columns, &pending).await?;
                    pending.clear();
                }
            }
            drop(rows);
            n += write_rows(&mut write, &insert, &columns, &pending).await?;
            report.tables.push(((*t).to_owned(), n));
            report.rows += n;
        }
        write.commit().await.ctx("committing the copy")?;
        // Copied and committed: how the read ends does not matter.
        let _ = read.rollback().await;
        Ok(report)
    }
}

fn refused(message: String) -> StoreError {
    StoreError {
        context: "copying the database",
        source: sqlx::Error::InvalidArgument(message),
    }
}

/// Insert `rows` (all read with `columns`) in one statement.
async fn write_rows(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    insert: &str,
    columns: &[Column],
    rows: &[AnyRow],
) -> Result<i64> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut q = Sql::new(insert);
    let mut bad = None;
    q.values(rows, |b, row| {
        for (i, c) in columns.iter().enumerate() {
            let r = match c.kind {
                crate::backend::Kind::Integer => row.try_get::<Option<i64>, _>(i).map(|v| {
                    b.bind(v);
                }),
                crate::backend::Kind::Real => row.try_get::<Option<f64>, _>(i).map(|v| {
                    b.bind_real(v);
                }),
                crate::backend::Kind::Text => row.try_get::<Option<String>, _>(i).map(|v| {
                    b.bind(v);
                }),
            };
            if let Err(e) = r {
                bad.get_or_insert(e);
                b.bind(None::<String>);
            }
        }
    });
    if let Some(e) = bad {
        return Err(StoreError {
            context: "reading a row of the source",
            source: e,
        });
    }
    q.build("copying rows")?
        .execute(&mut **tx)
        .await
        .ctx("writing rows to the target")?;
    Ok(rows.len() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::store;

    #[tokio::test]
    async fn every_table_is_copied() {
        let (s, _d) = store().await;
        let tables = s.backend.tables(&s.pool).await.unwrap();
        let mut listed: Vec<String> = TABLES.iter().map(|t| (*t).to_owned()).collect();
        listed.sort();
        assert_eq!(tables, listed, "a table missing from copy::TABLES");
    }

    /// Costs (the one floating-point column) copy whether a batch starts
    /// with none or with some: on Postgres one prepared statement serves
    /// every batch of a size, and a first NULL must not type it so that a
    /// later float is refused.
    #[tokio::test]
    async fn costs_copy_after_a_batch_without_any() {
        let (s, _d) = store().await;
        s.insert_session(&crate::store::testing::session("s1", "a", "b", true))
            .await
            .unwrap();
        let turns: Vec<crate::StoreWrite> = (0..2 * BATCH)
            .map(|i| {
                crate::StoreWrite::InsertTurn(crate::store::testing::turn(
                    &format!("m{i:04}"),
                    "s1",
                    "a",
                    "b",
                ))
            })
            .collect();
        s.apply(&turns).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE turns SET cost_usd = 0.25 WHERE id >= 'm{BATCH:04}'"
        )))
        .execute(&s.pool)
        .await
        .unwrap();
        let (target, _d2) = store().await;
        s.copy_to(&target, true).await.unwrap();
        let sum: f64 = sqlx::query_scalar("SELECT SUM(cost_usd) FROM turns")
            .fetch_one(&target.pool)
            .await
            .unwrap();
        assert!((sum - 0.25 * BATCH as f64).abs() < 1e-9, "{sum}");
    }
}

#[cfg(test)]
mod refusals {
    use crate::store::testing::{session, store};

    #[tokio::test]
    async fn a_copy_refuses_itself_and_someone_elses_tables() {
        let (s, _d) = store().await;
        s.insert_session(&session("s1", "a", "b", true))
            .await
            .unwrap();
        let e = s.copy_to(&s, true).await.unwrap_err().to_string();
        assert!(e.contains("one database"), "{e}");
        let (other, _d2) = store().await;
        sqlx::query("DROP TABLE webhook_attempts")
            .execute(&other.pool)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE foo (x BIGINT)")
            .execute(&other.pool)
            .await
            .unwrap();
        let e = s.copy_to(&other, true).await.unwrap_err().to_string();
        assert!(e.contains("foo"), "{e}");
        // A new database, as `iris db copy` opens it (nothing written yet).
        let d3 = tempfile::tempdir().unwrap();
        let fresh = crate::Store::connect_unmigrated(&crate::testing::settings(d3.path()))
            .await
            .unwrap();
        let report = s.copy_to(&fresh, false).await.unwrap();
        assert_eq!(report.rows, s.row_count().await.unwrap());
        assert_eq!(fresh.session("s1").await.unwrap().unwrap().to_team, "b");
    }
}
