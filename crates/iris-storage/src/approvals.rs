//! Permission approvals (migration 0005): a tool an agent asked to use,
//! and what was decided.

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::sql::Sql;

use crate::error::{Context, Result};
use crate::store::Store;

/// One approval.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRow {
    pub id: String,
    pub team: String,
    pub session_id: String,
    /// The message (turn) during which the agent asked.
    pub turn_id: Option<String>,
    pub tool_name: String,
    pub input: Value,
    /// `pending`, `allowed`, `denied` or `expired`.
    pub status: String,
    pub reason: Option<String>,
    /// The input the tool runs with, when the decision changed it (or the
    /// answer to a question the tool asks).
    pub updated_input: Option<Value>,
    /// Who decided (`key:…`, `user:…`), or `timeout` / `process` for an
    /// approval that expired.
    pub decided_by: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub decided_at: Option<i64>,
}

macro_rules! select_approvals {
    ($rest:literal) => {
        concat!(
            "SELECT id, team, session_id, turn_id, tool_name, input, status, reason, ",
            "updated_input, decided_by, created_at, expires_at, decided_at FROM approvals",
            $rest
        )
    };
}

fn json(r: &AnyRow, name: &str) -> Option<Value> {
    r.get::<Option<String>, _>(name)
        .and_then(|s| serde_json::from_str(&s).ok())
}

fn from_row(r: &AnyRow) -> ApprovalRow {
    ApprovalRow {
        id: r.get("id"),
        team: r.get("team"),
        session_id: r.get("session_id"),
        turn_id: r.get("turn_id"),
        tool_name: r.get("tool_name"),
        input: json(r, "input").unwrap_or(Value::Null),
        status: r.get("status"),
        reason: r.get("reason"),
        updated_input: json(r, "updated_input"),
        decided_by: r.get("decided_by"),
        created_at: r.get("created_at"),
        expires_at: r.get("expires_at"),
        decided_at: r.get("decided_at"),
    }
}

/// A decision on a pending approval.
#[derive(Debug, Clone)]
pub struct Decision {
    /// `allowed`, `denied` or `expired`.
    pub status: &'static str,
    pub reason: Option<String>,
    pub updated_input: Option<Value>,
    pub decided_by: String,
    pub at: i64,
}

impl Store {
    pub async fn insert_approval(&self, a: &ApprovalRow) -> Result<()> {
        let mut tx = self.backend.begin_write(&self.pool).await?;
        self.fence_team(&mut tx, &a.team).await?;
        sqlx::query(
            "INSERT INTO approvals (id, team, session_id, turn_id, tool_name, input, status, created_at, expires_at, node_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&a.id)
        .bind(&a.team)
        .bind(&a.session_id)
        .bind(&a.turn_id)
        .bind(&a.tool_name)
        .bind(a.input.to_string())
        .bind(&a.status)
        .bind(a.created_at)
        .bind(a.expires_at)
        .bind(self.node())
        .execute(&mut *tx)
        .await
        .ctx("inserting an approval")?;
        tx.commit().await.ctx("inserting an approval")
    }

    pub async fn approval(&self, id: &str) -> Result<Option<ApprovalRow>> {
        let row = sqlx::query(select_approvals!(" WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .ctx("reading an approval")?;
        Ok(row.as_ref().map(from_row))
    }

    /// Approvals, newest first, of `teams` (all when `None`), `team`,
    /// `turn` and `status`, `limit` from `offset`; with the total.
    #[allow(clippy::too_many_arguments)]
    pub async fn approvals(
        &self,
        teams: Option<&[String]>,
        team: Option<&str>,
        turn: Option<&str>,
        status: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<ApprovalRow>, i64)> {
        let filter = |q: &mut Sql| {
            q.push(" WHERE 1 = 1");
            if let Some(t) = team {
                q.push(" AND team = ").bind(t);
            }
            if let Some(t) = turn {
                q.push(" AND turn_id = ").bind(t);
            }
            if let Some(s) = status {
                q.push(" AND status = ").bind(s);
            }
            crate::store::push_teams(q, "team", teams);
        };
        let listing = crate::store::Listing {
            select: select_approvals!(""),
            count: "SELECT COUNT(*) FROM approvals",
            order: " ORDER BY created_at DESC, id DESC",
            what: "listing approvals",
        };
        self.page(&listing, filter, limit, offset, from_row).await
    }

    /// Decide `id` if it is still pending; false when it was not (decided,
    /// expired, or unknown): a decision is made once.
    pub async fn decide_approval(&self, id: &str, d: &Decision) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE approvals SET status = $1, reason = $2, updated_input = $3, decided_by = $4, decided_at = $5
             WHERE id = $6 AND status = 'pending'",
        )
        .bind(d.status)
        .bind(&d.reason)
        .bind(d.updated_input.as_ref().map(Value::to_string))
        .bind(&d.decided_by)
        .bind(d.at)
        .bind(id)
        .execute(&self.pool)
        .await
        .ctx("deciding an approval")?;
        Ok(done.rows_affected() == 1)
    }

    /// The node whose process waits for approval `id` (`None`: unknown,
    /// or asked before nodes had ids).
    pub async fn approval_node(&self, id: &str) -> Result<Option<String>> {
        self.node_of("approvals", id).await
    }

    /// Expire every pending approval of this node (no process of it waits
    /// for one any more, e.g. at start-up after a crash; other nodes'
    /// approvals are theirs); returns their ids.
    pub async fn expire_pending_approvals(&self, reason: &str, at: i64) -> Result<Vec<String>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM approvals WHERE status = 'pending' AND (node_id IS NULL OR node_id = $1)",
        )
        .bind(self.node())
        .fetch_all(&self.pool)
        .await
        .ctx("finding pending approvals")?;
        sqlx::query(
            "UPDATE approvals SET status = 'expired', reason = $1, decided_by = 'process', decided_at = $2
             WHERE status = 'pending' AND (node_id IS NULL OR node_id = $3)",
        )
        .bind(reason)
        .bind(at)
        .bind(self.node())
        .execute(&self.pool)
        .await
        .ctx("expiring pending approvals")?;
        Ok(ids)
    }
}
