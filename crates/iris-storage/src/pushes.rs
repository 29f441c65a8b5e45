//! A2A push notification configs (migration 0015): per task (a turn), a
//! URL each of its state changes is POSTed to, with the client's token and
//! credential.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::backend::WriteLock;
use crate::error::{Context, Result};
use crate::store::Store;

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushConfigRow {
    pub id: String,
    /// The turn (A2A task) it reports on.
    pub task_id: String,
    pub team: String,
    pub url: String,
    /// Sent back as `X-A2A-Notification-Token`.
    pub token: Option<String>,
    /// `Authorization: <scheme> <credentials>` on each notification.
    pub auth_scheme: Option<String>,
    #[serde(skip)]
    pub auth_credentials: Option<String>,
    pub created_by: String,
    pub created_at: i64,
    /// Its creator may decide approvals: a wait on one is pushed as
    /// input-required (else the task stays working to it).
    #[serde(skip)]
    pub sees_approvals: bool,
}

fn from_row(r: &AnyRow) -> PushConfigRow {
    PushConfigRow {
        id: r.get("id"),
        task_id: r.get("task_id"),
        team: r.get("team"),
        url: r.get("url"),
        token: r.get("token"),
        auth_scheme: r.get("auth_scheme"),
        auth_credentials: r.get("auth_credentials"),
        created_by: r.get("created_by"),
        created_at: r.get("created_at"),
        sees_approvals: r.get::<i64, _>("sees_approvals") != 0,
    }
}

macro_rules! select_pushes {
    ($rest:literal) => {
        concat!(
            "SELECT id, task_id, team, url, token, auth_scheme, auth_credentials, created_by, created_at, sees_approvals FROM push_configs",
            $rest
        )
    };
}

impl Store {
    /// Write a config, replacing one of the same task and id; a new one
    /// only while the task has fewer than `max` (counted and written under
    /// one lock, so callers at once cannot pass the cap together). Whether
    /// it was written.
    pub async fn put_push_config(&self, c: &PushConfigRow, max: usize) -> Result<bool> {
        let mut tx = self
            .backend
            .begin_locked(&self.pool, WriteLock::PushConfigs)
            .await?;
        let replaced = sqlx::query("DELETE FROM push_configs WHERE task_id = $1 AND id = $2")
            .bind(&c.task_id)
            .bind(&c.id)
            .execute(&mut *tx)
            .await
            .ctx("replacing a push config")?
            .rows_affected();
        if replaced == 0 {
            let count: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM push_configs WHERE task_id = $1")
                    .bind(&c.task_id)
                    .fetch_one(&mut *tx)
                    .await
                    .ctx("counting push configs")?;
            if count >= max as i64 {
                return Ok(false);
            }
        }
        sqlx::query(
            "INSERT INTO push_configs (id, task_id, team, url, token, auth_scheme, auth_credentials, created_by, created_at, sees_approvals)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&c.id)
        .bind(&c.task_id)
        .bind(&c.team)
        .bind(&c.url)
        .bind(&c.token)
        .bind(&c.auth_scheme)
        .bind(&c.auth_credentials)
        .bind(&c.created_by)
        .bind(c.created_at)
        .bind(i64::from(c.sees_approvals))
        .execute(&mut *tx)
        .await
        .ctx("writing a push config")?;
        tx.commit().await.ctx("committing a push config")?;
        Ok(true)
    }

    /// A task's configs, oldest first.
    pub async fn push_configs(&self, task_id: &str) -> Result<Vec<PushConfigRow>> {
        let rows = sqlx::query(select_pushes!(
            " WHERE task_id = $1 ORDER BY created_at, id"
        ))
        .bind(task_id)
        .fetch_all(&self.pool)
        .await
        .ctx("reading push configs")?;
        Ok(rows.iter().map(from_row).collect())
    }

    pub async fn delete_push_config(&self, task_id: &str, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM push_configs WHERE task_id = $1 AND id = $2")
            .bind(task_id)
            .bind(id)
            .execute(&self.pool)
            .await
            .ctx("deleting a push config")?;
        Ok(done.rows_affected() > 0)
    }

    /// Whether any task has a config (when none does, no turn event needs
    /// a look at the table).
    pub async fn any_push_config(&self) -> Result<bool> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM (SELECT 1 FROM push_configs LIMIT 1) AS p")
                .fetch_one(&self.pool)
                .await
                .ctx("counting push configs")?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::store;

    #[tokio::test]
    async fn configs_are_put_replaced_listed_and_deleted() {
        let (store, _d) = store().await;
        assert!(!store.any_push_config().await.unwrap());
        let mut c = PushConfigRow {
            id: "p1".into(),
            task_id: "msg_1".into(),
            team: "t".into(),
            url: "https://example.com/a".into(),
            token: Some("tok".into()),
            auth_scheme: Some("Bearer".into()),
            auth_credentials: Some("secret".into()),
            created_by: "admin".into(),
            created_at: 1,
            sees_approvals: true,
        };
        assert!(store.put_push_config(&c, 10).await.unwrap());
        c.url = "https://example.com/b".into();
        assert!(
            store.put_push_config(&c, 1).await.unwrap(),
            "a replacement at the cap"
        );
        assert_eq!(store.push_configs("msg_1").await.unwrap(), vec![c.clone()]);
        assert!(store.any_push_config().await.unwrap());
        assert!(store.push_configs("msg_2").await.unwrap().is_empty());
        assert!(store.delete_push_config("msg_1", "p1").await.unwrap());
        assert!(!store.delete_push_config("msg_1", "p1").await.unwrap());
        assert!(!store.any_push_config().await.unwrap());
    }

    #[tokio::test]
    async fn callers_at_once_cannot_pass_the_cap() {
        let (store, _d) = store().await;
        let puts = (0..30).map(|i| {
            let store = store.clone();
            let c = PushConfigRow {
                id: format!("p{i}"),
                task_id: "msg_1".into(),
                team: "t".into(),
                url: "https://example.com/a".into(),
                token: None,
                auth_scheme: None,
                auth_credentials: None,
                created_by: "admin".into(),
                created_at: i,
                sees_approvals: false,
            };
            tokio::spawn(async move { store.put_push_config(&c, 10).await.unwrap() })
        });
        let mut written = 0;
        for p in puts {
            written += usize::from(p.await.unwrap());
        }
        assert_eq!(written, 10);
        assert_eq!(store.push_configs("msg_1").await.unwrap().len(), 10);
    }
}
