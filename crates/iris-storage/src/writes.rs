//! Writes applied in order and in batches by the core's recorder, so the
//! hot path of a turn never waits for the database.

use std::collections::HashMap;

use sqlx::{Any, Transaction};

use crate::sql::Sql;

use crate::error::{Context, Result};
use crate::store::Store;
use crate::turns::{EventRow, TurnFinish, TurnRow};

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
        self.within("applying writes", async {
            let mut tx = self.backend.begin_write(&self.pool).await?;
            let mut fences: HashMap<String, bool> = HashMap::new();
            for w in writes {
                if self.fencing()
                    && let Some(team) = team_of(&mut tx, w).await?
                {
                    let holds = match fences.get(&team) {
                        Some(h) => *h,
                        None => {
                            let h = self.fence_holds(&mut tx, &team).await?;
                            fences.insert(team.clone(), h);
                            h
                        }
                    };
                    if !holds {
                        // Another node took the team over: what this node
                        // still had to write of it is not written.
                        tracing::warn!(
                            team,
                            write = w.name(),
                            "refused: this node no longer holds the team's lease"
                        );
                        continue;
                    }
                }
                apply_one(&mut tx, w, self.node()).await?;
            }
            tx.commit().await.ctx("committing writes")
        })
        .await
    }
}

impl StoreWrite {
    fn name(&self) -> &'static str {
        match self {
            StoreWrite::InsertTurn(_) => "a new turn",
            StoreWrite::TurnStarted { .. } => "a turn's start",
            StoreWrite::SessionUsed { .. } => "a conversation's use",
            StoreWrite::ProcessState { .. } => "a process's state",
            StoreWrite::SessionRestarted { .. } => "a conversation's restart",
            StoreWrite::TurnFinished { .. } => "a turn's end",
        }
    }
}

/// The team whose work `w` writes (the fence it is checked against).
async fn team_of(tx: &mut Transaction<'static, Any>, w: &StoreWrite) -> Result<Option<String>> {
    let (lookup, id) = match w {
        StoreWrite::InsertTurn(t) => return Ok(Some(t.to_team.clone())),
        StoreWrite::TurnStarted { id, .. } | StoreWrite::TurnFinished { id, .. } => {
            ("SELECT to_team FROM turns WHERE id = $1", id)
        }
        StoreWrite::SessionUsed { id, .. }
        | StoreWrite::SessionRestarted { id, .. }
        | StoreWrite::ProcessState { session_id: id, .. } => {
            ("SELECT to_team FROM sessions WHERE id = $1", id)
        }
    };
    crate::leases::team_by(tx, lookup, id).await
}

/// Insert new turns in one statement.
pub(crate) async fn insert_turns(
    tx: &mut Transaction<'static, Any>,
    turns: &[TurnRow],
    node: Option<&str>,
) -> Result<()> {
    if turns.is_empty() {
        return Ok(());
    }
    let mut q = Sql::new(
        "INSERT INTO turns (id, session_id, from_team, to_team, kind, status, request, created_at, chain, caller, node_id) ",
    );
    q.values(turns, |b, t| {
        b.bind(&t.id)
            .bind(&t.session_id)
            .bind(&t.from_team)
            .bind(&t.to_team)
            .bind(&t.kind)
            .bind(&t.status)
            .bind(crate::sql::text(&t.request).into_owned())
            .bind(t.created_at)
            .bind(
                (!t.chain.is_empty()).then(|| serde_json::to_string(&t.chain).unwrap_or_default()),
            )
            .bind(&t.caller)
            .bind(node);
    });
    // A retry of a batch whose commit went through (its answer lost).
    q.push(" ON CONFLICT (id) DO NOTHING");
    q.build("inserting turns")?
        .execute(&mut **tx)
        .await
        .ctx("inserting turns")?;
    Ok(())
}

pub(crate) async fn apply_one(
    tx: &mut Transaction<'static, Any>,
    w: &StoreWrite,
    node: Option<&str>,
) -> Result<()> {
    match w {
        StoreWrite::InsertTurn(t) => insert_turns(tx, std::slice::from_ref(t), node).await?,
        StoreWrite::TurnStarted { id, at } => {
            sqlx::query("UPDATE turns SET status = 'running', started_at = $1 WHERE id = $2 AND status = 'queued'")
                .bind(at)
                .bind(id)
                .execute(&mut **tx)
                .await
                .ctx("marking a turn running")?;
        }
        StoreWrite::SessionUsed { id, at } => {
            sqlx::query(
                "UPDATE sessions SET started = 1, message_count = message_count + 1, last_used_at = $1 WHERE id = $2",
            )
            .bind(at)
            .bind(id)
            .execute(&mut **tx)
            .await
            .ctx("updating session use")?;
        }
        StoreWrite::SessionRestarted { id, at } => {
            sqlx::query("UPDATE sessions SET restarted_at = $1 WHERE id = $2")
                .bind(at)
                .bind(id)
                .execute(&mut **tx)
                .await
                .ctx("recording a restarted conversation")?;
        }
        StoreWrite::ProcessState { session_id, state } => {
            sqlx::query("UPDATE sessions SET process_state = $1, node_id = $2 WHERE id = $3")
                .bind(*state)
                .bind(node)
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
