//! Writes applied in order and in batches by the core's recorder, so the
//! hot path of a turn never waits for the database.

use sqlx::{Sqlite, Transaction};

use crate::{Context, EventRow, Result, Store, TurnFinish, TurnRow};

/// One write.
#[derive(Debug, Clone)]
pub enum StoreWrite {
    InsertTurn(TurnRow),
    TurnStarted {
        id: String,
        at: i64,
    },
    SessionUsed {
        id: String,
        at: i64,
    },
    ProcessState {
        session_id: String,
        state: &'static str,
    },
    /// The agent had lost the conversation; Iris started it afresh under the same id.
    SessionRestarted {
        id: String,
        at: i64,
    },
    TurnFinished {
        id: String,
        finish: TurnFinish,
        events: Vec<EventRow>,
    },
}

impl Store {
    /// Apply `writes` in order in one transaction.
    pub async fn apply(&self, writes: &[StoreWrite]) -> Result<()> {
        let mut tx = self.pool.begin().await.ctx("starting a transaction")?;
        for w in writes {
            apply_one(&mut tx, w).await?;
        }
        tx.commit().await.ctx("committing writes")
    }
}

pub(crate) async fn apply_one(tx: &mut Transaction<'_, Sqlite>, w: &StoreWrite) -> Result<()> {
    match w {
        StoreWrite::InsertTurn(t) => {
            sqlx::query(
                "INSERT INTO turns (id, session_id, from_team, to_team, kind, status, request, created_at, chain, caller)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&t.id)
            .bind(&t.session_id)
            .bind(&t.from_team)
            .bind(&t.to_team)
            .bind(&t.kind)
            .bind(&t.status)
            .bind(&t.request)
            .bind(t.created_at)
            .bind(
                (!t.chain.is_empty())
                    .then(|| serde_json::to_string(&t.chain).unwrap_or_default()),
            )
            .bind(&t.caller)
            .execute(&mut **tx)
            .await
            .ctx("inserting a turn")?;
        }
        StoreWrite::TurnStarted { id, at } => {
            sqlx::query("UPDATE turns SET status = 'running', started_at = ? WHERE id = ? AND status = 'queued'")
                .bind(at)
                .bind(id)
                .execute(&mut **tx)
                .await
                .ctx("marking a turn running")?;
        }
        StoreWrite::SessionUsed { id, at } => {
            sqlx::query(
                "UPDATE sessions SET started = 1, message_count = message_count + 1, last_used_at = ? WHERE id = ?",
            )
            .bind(at)
            .bind(id)
            .execute(&mut **tx)
            .await
            .ctx("updating session use")?;
        }
        StoreWrite::SessionRestarted { id, at } => {
            sqlx::query("UPDATE sessions SET restarted_at = ? WHERE id = ?")
                .bind(at)
                .bind(id)
                .execute(&mut **tx)
                .await
                .ctx("recording a restarted conversation")?;
        }
        StoreWrite::ProcessState { session_id, state } => {
            sqlx::query("UPDATE sessions SET process_state = ? WHERE id = ?")
                .bind(*state)
                .bind(session_id)
                .execute(&mut **tx)
                .await
                .ctx("updating process state")?;
        }
        StoreWrite::TurnFinished { id, finish, events } => {
            crate::turns::finish_in(tx, id, finish, events).await?;
        }
    }
    Ok(())
}
