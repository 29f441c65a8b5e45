//! The nodes of a cluster: each running `iris serve` writes its heartbeat
//! here, so every node (and `iris cluster status`, with no server) can
//! tell who is up.

use sqlx::Row;

use crate::error::{Context, Result};
use crate::store::Store;

/// One node as its last heartbeat left it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRow {
    pub id: String,
    /// How other nodes reach it (`cluster.advertiseUrl`).
    pub advertise_url: Option<String>,
    pub version: String,
    pub started_at: i64,
    pub heartbeat_at: i64,
    /// When it shut down cleanly (`None` while it runs, or if it died).
    pub stopped_at: Option<i64>,
}

impl Store {
    /// Node `id` starts (again): its row, fresh.
    pub async fn node_started(
        &self,
        id: &str,
        advertise_url: Option<&str>,
        version: &str,
        at: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO nodes (id, advertise_url, version, started_at, heartbeat_at, stopped_at)
             VALUES ($1, $2, $3, $4, $4, NULL)
             ON CONFLICT (id) DO UPDATE SET advertise_url = EXCLUDED.advertise_url,
               version = EXCLUDED.version, started_at = EXCLUDED.started_at,
               heartbeat_at = EXCLUDED.heartbeat_at, stopped_at = NULL",
        )
        .bind(id)
        .bind(advertise_url)
        .bind(version)
        .bind(at)
        .execute(&self.pool)
        .await
        .ctx("registering the node")?;
        Ok(())
    }

    /// Node `id` is alive at `at`.
    pub async fn node_heartbeat(&self, id: &str, at: i64) -> Result<()> {
        sqlx::query("UPDATE nodes SET heartbeat_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await
            .ctx("writing the node's heartbeat")?;
        Ok(())
    }

    /// Node `id` shut down cleanly at `at`.
    pub async fn node_stopped(&self, id: &str, at: i64) -> Result<()> {
        sqlx::query("UPDATE nodes SET stopped_at = $1, heartbeat_at = $1 WHERE id = $2")
            .bind(at)
            .bind(id)
            .execute(&self.pool)
            .await
            .ctx("marking the node stopped")?;
        Ok(())
    }

    /// Every node that ever ran on this database, by id.
    pub async fn nodes(&self) -> Result<Vec<NodeRow>> {
        let rows = sqlx::query(
            "SELECT id, advertise_url, version, started_at, heartbeat_at, stopped_at FROM nodes ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .ctx("listing nodes")?;
        Ok(rows
            .iter()
            .map(|r| NodeRow {
                id: r.get("id"),
                advertise_url: r.get("advertise_url"),
                version: r.get("version"),
                started_at: r.get("started_at"),
                heartbeat_at: r.get("heartbeat_at"),
                stopped_at: r.get("stopped_at"),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::testing::{session, store, turn};

    #[tokio::test]
    async fn nodes_register_beat_and_stop() {
        let (s, _d) = store().await;
        s.node_started("a", Some("http://a:4000"), "0.1.0", 10)
            .await
            .unwrap();
        s.node_started("b", None, "0.1.0", 11).await.unwrap();
        s.node_heartbeat("a", 20).await.unwrap();
        s.node_stopped("b", 30).await.unwrap();
        let n = s.nodes().await.unwrap();
        assert_eq!(n.len(), 2);
        assert_eq!((n[0].heartbeat_at, n[0].stopped_at), (20, None));
        assert_eq!(n[1].stopped_at, Some(30));
        s.node_started("b", None, "0.2.0", 40).await.unwrap();
        let n = s.nodes().await.unwrap();
        assert_eq!((n[1].version.as_str(), n[1].stopped_at), ("0.2.0", None));
    }

    #[tokio::test]
    async fn a_node_recovers_its_own_turns_only() {
        let (base, _d) = store().await;
        let a = base.clone().on_node("a");
        let b = base.clone().on_node("b");
        for (st, id) in [(&a, "ta"), (&b, "tb")] {
            st.insert_session(&session(&format!("s{id}"), "x", "web", false))
                .await
                .unwrap();
            let mut t = turn(id, &format!("s{id}"), "x", "web");
            t.status = "running".into();
            st.apply(&[crate::StoreWrite::InsertTurn(t)]).await.unwrap();
        }
        assert_eq!(b.recover(1).await.unwrap(), 1, "b fails its own turn");
        assert_eq!(base.turn("ta").await.unwrap().unwrap().status, "running");
        assert_eq!(base.turn("tb").await.unwrap().unwrap().status, "failed");
    }
}
