//! Team leases: which node runs a team's processes. A lease is granted
//! and renewed on the database's clock (so nodes' clocks do not matter),
//! and its fencing token grows each time it changes hands: a node that
//! lost its lease (dead, paused, cut off) holds an old token, and the
//! writes checked against it are refused.

use sqlx::{Any, Row, Transaction};

use crate::error::{Context, Result};
use crate::store::Store;

/// A team's lease as the database has it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseRow {
    pub team: String,
    pub node_id: String,
    /// Grows each time the lease changes hands.
    pub token: i64,
    /// On the database's clock (ms since the epoch).
    pub expires_at: i64,
}

fn lease(r: &sqlx::any::AnyRow) -> Result<LeaseRow> {
    Ok(LeaseRow {
        team: r.try_get(0).ctx("team_leases.team")?,
        node_id: r.try_get(1).ctx("team_leases.node_id")?,
        token: r.try_get(2).ctx("team_leases.token")?,
        expires_at: r.try_get(3).ctx("team_leases.expires_at")?,
    })
}

impl Store {
    /// From now on, this node's writes of `team`'s work must find `token`
    /// in the team's lease (ownership took or renewed it).
    pub fn hold_fence(&self, team: &str, token: i64) {
        if let Ok(mut m) = self.fences.0.write() {
            m.insert(team.to_owned(), token);
        }
    }

    /// Whether any write may be fenced (this node held a lease).
    pub(crate) fn fencing(&self) -> bool {
        self.fences.any()
    }

    /// Whether this node may write `team`'s work in `tx`: it never held the
    /// team, or the lease still carries its token. On Postgres the lease row
    /// is share-locked to the end of `tx`, so a take-over waits for it.
    pub(crate) async fn fence_holds(
        &self,
        tx: &mut Transaction<'static, Any>,
        team: &str,
    ) -> Result<bool> {
        let Some(token) = self.fences.token(team) else {
            return Ok(true);
        };
        self.backend.bound_idle(tx).await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT 1 FROM team_leases WHERE team = $1 AND node_id = $2 AND token = $3{}",
            self.backend.share_lock()
        )))
        .bind(team)
        .bind(self.node().unwrap_or_default())
        .bind(token)
        .fetch_optional(&mut **tx)
        .await
        .ctx("checking a team's lease")?;
        Ok(row.is_some())
    }

    /// [`Store::fence_holds`] for the team `lookup` (a `SELECT` of one
    /// team by `$1`) finds for `id`, as an error when it does not hold.
    pub(crate) async fn fence(
        &self,
        tx: &mut Transaction<'static, Any>,
        lookup: &'static str,
        id: &str,
    ) -> Result<()> {
        if !self.fencing() {
            return Ok(());
        }
        match team_by(tx, lookup, id).await? {
            Some(team) => self.fence_team(tx, &team).await,
            None => Ok(()),
        }
    }

    /// [`Store::fence_holds`] for `team`, as an error when it does not hold.
    pub(crate) async fn fence_team(
        &self,
        tx: &mut Transaction<'static, Any>,
        team: &str,
    ) -> Result<()> {
        if self.fence_holds(tx, team).await? {
            return Ok(());
        }
        Err(crate::error::StoreError::fenced(crate::error::Fenced {
            team: team.to_owned(),
            node: self.node().unwrap_or_default().to_owned(),
        }))
    }

    /// Take or renew `team`'s lease for `node` for `ttl_ms`: granted when
    /// nobody holds it, when it expired, or when `node` holds it already.
    /// The token grows only when the lease changes hands: a node that takes
    /// back its own expired lease (nobody took it meanwhile) keeps its
    /// token, and what it writes still passes. `None`: another node holds it.
    pub async fn acquire_lease(
        &self,
        team: &str,
        node: &str,
        ttl_ms: i64,
    ) -> Result<Option<LeaseRow>> {
        let now = self.backend.now_ms();
        let sql = format!(
            "INSERT INTO team_leases (team, node_id, token, expires_at)
             VALUES ($1, $2, 1, {now} + $3)
             ON CONFLICT (team) DO UPDATE SET
               token = CASE WHEN team_leases.node_id = EXCLUDED.node_id
                            THEN team_leases.token ELSE team_leases.token + 1 END,
               node_id = EXCLUDED.node_id,
               expires_at = EXCLUDED.expires_at
             WHERE team_leases.node_id = EXCLUDED.node_id OR team_leases.expires_at < {now}
             RETURNING team, node_id, token, expires_at"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(team)
            .bind(node)
            .bind(ttl_ms)
            .fetch_optional(&self.pool)
            .await
            .ctx("taking a team's lease")?;
        row.as_ref().map(lease).transpose()
    }

    /// The lease of `team`, if any was ever taken, and the database's
    /// clock now.
    pub async fn lease(&self, team: &str) -> Result<(Option<LeaseRow>, i64)> {
        let now = self.backend.now_ms();
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT team, node_id, token, expires_at, {now} FROM team_leases WHERE team = $1"
        )))
        .bind(team)
        .fetch_optional(&self.pool)
        .await
        .ctx("reading a team's lease")?;
        let clock = match &row {
            Some(r) => r.try_get(4).ctx("the database's clock")?,
            None => self.clock().await?,
        };
        Ok((row.as_ref().map(lease).transpose()?, clock))
    }

    /// Every lease, by team, and the database's clock now.
    pub async fn leases(&self) -> Result<(Vec<LeaseRow>, i64)> {
        let rows =
            sqlx::query("SELECT team, node_id, token, expires_at FROM team_leases ORDER BY team")
                .fetch_all(&self.pool)
                .await
                .ctx("listing leases")?;
        let all = rows.iter().map(lease).collect::<Result<Vec<_>>>()?;
        Ok((all, self.clock().await?))
    }

    /// The database's clock (ms since the epoch).
    pub async fn clock(&self) -> Result<i64> {
        let now = self.backend.now_ms();
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {now}")))
            .fetch_one(&self.pool)
            .await
            .ctx("reading the database's clock")?;
        row.try_get(0).ctx("the database's clock")
    }

    /// Give back `node`'s leases (a clean shutdown): another node may take
    /// its teams at once.
    pub async fn release_leases(&self, node: &str) -> Result<()> {
        sqlx::query("UPDATE team_leases SET expires_at = 0 WHERE node_id = $1")
            .bind(node)
            .execute(&self.pool)
            .await
            .ctx("giving back leases")?;
        Ok(())
    }

    /// `team` is taken over from node `from`, which no longer holds its
    /// lease: its unfinished messages of the team end `failed` with
    /// `reason`, its pending approvals of the team expire with it, its
    /// claims on the team's jobs are let go (the new owner runs them) and
    /// its processes of the team are recorded stopped. Returns the expired
    /// approvals' ids.
    pub async fn take_over_team(
        &self,
        team: &str,
        from: &str,
        reason: &str,
        now: i64,
    ) -> Result<Vec<String>> {
        let mut tx = self.pool.begin().await.ctx("taking a team over")?;
        sqlx::query(
            "UPDATE turns SET status = 'failed', error = $1, completed_at = $2
             WHERE to_team = $3 AND node_id = $4 AND status IN ('queued', 'running') AND kind <> 'job'",
        )
        .bind(reason)
        .bind(now)
        .bind(team)
        .bind(from)
        .execute(&mut *tx)
        .await
        .ctx("failing the messages of a team taken over")?;
        let expired: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM approvals WHERE status = 'pending' AND team = $1 AND node_id = $2",
        )
        .bind(team)
        .bind(from)
        .fetch_all(&mut *tx)
        .await
        .ctx("finding the approvals of a team taken over")?;
        sqlx::query(
            "UPDATE approvals SET status = 'expired', reason = $1, decided_by = 'process', decided_at = $2
             WHERE status = 'pending' AND team = $3 AND node_id = $4",
        )
        .bind(reason)
        .bind(now)
        .bind(team)
        .bind(from)
        .execute(&mut *tx)
        .await
        .ctx("expiring the approvals of a team taken over")?;
        sqlx::query("UPDATE jobs SET claimed_by = NULL WHERE team = $1 AND claimed_by = $2 AND notified = 0")
            .bind(team)
            .bind(from)
            .execute(&mut *tx)
            .await
            .ctx("letting go of the jobs of a team taken over")?;
        sqlx::query(
            "UPDATE sessions SET process_state = 'stopped' WHERE to_team = $1 AND node_id = $2",
        )
        .bind(team)
        .bind(from)
        .execute(&mut *tx)
        .await
        .ctx("stopping the processes of a team taken over")?;
        tx.commit().await.ctx("taking a team over")?;
        Ok(expired)
    }

    /// Whether `node` still holds `team`'s lease with `token`, unexpired:
    /// the fence a write of that team's work is checked against.
    pub async fn holds_lease(&self, team: &str, node: &str, token: i64) -> Result<bool> {
        let now = self.backend.now_ms();
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT 1 FROM team_leases WHERE team = $1 AND node_id = $2 AND token = $3 AND expires_at >= {now}"
        )))
        .bind(team)
        .bind(node)
        .bind(token)
        .fetch_optional(&self.pool)
        .await
        .ctx("checking a team's lease")?;
        Ok(row.is_some())
    }
}

/// The team `lookup` (a `SELECT` of one team by `$1`) finds for `id`.
pub(crate) async fn team_by(
    tx: &mut Transaction<'static, Any>,
    lookup: &'static str,
    id: &str,
) -> Result<Option<String>> {
    sqlx::query_scalar(lookup)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
        .ctx("finding the team of a write")
}

#[cfg(test)]
mod tests {
    use crate::store::testing::{self, store};
    use crate::{StoreWrite, TranscriptRow, TurnFinish};

    /// Node `a` held `web` (token 1); `b` took it over once it expired and
    /// ended what `a` was running. `a` wakes up and goes on writing: its
    /// turn's end, a new turn, an approval, a transcript are refused; other
    /// teams' writes in the same batch pass; `b`'s writes pass.
    #[tokio::test]
    async fn a_node_that_lost_a_lease_cannot_write_the_teams_work() {
        let (s, _d) = store().await;
        let a = s.clone().on_node("a");
        let b = s.clone().on_node("b");
        a.insert_session(&testing::session("s1", "user", "web", true))
            .await
            .unwrap();
        a.insert_session(&testing::session("s2", "user", "api", true))
            .await
            .unwrap();
        let l = a.acquire_lease("web", "a", -1).await.unwrap().unwrap();
        a.hold_fence("web", l.token);
        let api = a.acquire_lease("api", "a", 60_000).await.unwrap().unwrap();
        a.hold_fence("api", api.token);
        a.apply(&[StoreWrite::InsertTurn(testing::turn(
            "m1", "s1", "user", "web",
        ))])
        .await
        .unwrap();
        // Expired: b takes it over and fails a's unfinished turn.
        let l = b.acquire_lease("web", "b", 60_000).await.unwrap().unwrap();
        b.hold_fence("web", l.token);
        b.take_over_team("web", "a", "taken over", 5).await.unwrap();
        let end = |id: &str| StoreWrite::TurnFinished {
            id: id.into(),
            finish: TurnFinish {
                status: "completed".into(),
                response: "late".into(),
                completed_at: 9,
                ..Default::default()
            },
            events: Vec::new(),
        };
        a.apply(&[
            end("m1"),
            StoreWrite::InsertTurn(testing::turn("m2", "s1", "user", "web")),
            StoreWrite::InsertTurn(testing::turn("m3", "s2", "user", "api")),
        ])
        .await
        .unwrap();
        let m1 = s.turn("m1").await.unwrap().unwrap();
        assert_eq!(
            (m1.status.as_str(), m1.error.as_deref()),
            ("failed", Some("taken over"))
        );
        assert!(
            s.turn("m2").await.unwrap().is_none(),
            "a's new turn refused"
        );
        assert!(
            s.turn("m3").await.unwrap().is_some(),
            "another team's passes"
        );
        let transcript = TranscriptRow {
            session_id: "s1".into(),
            team: "web".into(),
            agent: "claude".into(),
            folder: "/w".into(),
            body: "{}".into(),
            updated_at: 9,
        };
        let e = a.save_transcript(&transcript).await.unwrap_err();
        assert_eq!(e.fenced_by().map(|f| f.team.as_str()), Some("web"), "{e}");
        assert!(s.transcript("s1").await.unwrap().is_none());
        // b, the owner, writes.
        b.save_transcript(&transcript).await.unwrap();
        b.apply(&[StoreWrite::InsertTurn(testing::turn(
            "m2", "s1", "user", "web",
        ))])
        .await
        .unwrap();
        assert!(s.turn("m2").await.unwrap().is_some());
        // A store that never held the team (a one-shot command) is not fenced.
        s.apply(&[end("m2")]).await.unwrap();
    }

    #[tokio::test]
    async fn a_lease_is_held_renewed_taken_after_expiry_with_a_new_token() {
        let (s, _d) = store().await;
        let a = s.acquire_lease("web", "a", 60_000).await.unwrap().unwrap();
        assert_eq!((a.node_id.as_str(), a.token), ("a", 1));
        assert!(
            s.acquire_lease("web", "b", 60_000).await.unwrap().is_none(),
            "held by a"
        );
        let renewed = s.acquire_lease("web", "a", 60_000).await.unwrap().unwrap();
        assert_eq!(renewed.token, 1, "a renewal keeps the token");
        assert!(renewed.expires_at >= a.expires_at);
        assert!(s.holds_lease("web", "a", 1).await.unwrap());
        // Expired, taken back by a (nobody took it meanwhile): same token.
        let back = s.acquire_lease("web", "a", -1).await.unwrap().unwrap();
        assert_eq!(back.token, 1, "still a's");
        // Expired (a TTL in the past): b takes it, with the next token, and
        // a's token no longer passes the fence.
        let b = s.acquire_lease("web", "b", 60_000).await.unwrap().unwrap();
        assert_eq!((b.node_id.as_str(), b.token), ("b", 2));
        assert!(!s.holds_lease("web", "a", 1).await.unwrap());
        assert!(s.holds_lease("web", "b", 2).await.unwrap());
        let (l, now) = s.lease("web").await.unwrap();
        assert_eq!(l.unwrap().node_id, "b");
        assert!(now > 1_700_000_000_000, "the database's clock in ms: {now}");
        s.release_leases("b").await.unwrap();
        let c = s.acquire_lease("web", "c", 60_000).await.unwrap().unwrap();
        assert_eq!(c.token, 3, "released: taken at once");
        assert_eq!(s.leases().await.unwrap().0.len(), 1);
    }
}
