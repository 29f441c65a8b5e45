//! Session records.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::backend::WriteLock;
use crate::error::{Context, Result};
use crate::store::Store;

/// One conversation between a caller (`from_team`) and a team (`to_team`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRow {
    pub id: String,
    pub from_team: String,
    pub to_team: String,
    /// The session used when a caller names no session id.
    pub is_default: bool,
    /// The session this one was forked from; its first spawn forks.
    pub fork_of: Option<String>,
    /// The agent has received a message, so a respawn resumes.
    pub started: bool,
    pub message_count: i64,
    pub process_state: String,
    pub created_at: i64,
    pub last_used_at: i64,
    /// When the agent had lost the conversation and Iris started it afresh.
    pub restarted_at: Option<i64>,
    /// The git worktree it runs in (branch `iris/<id>`), if it has one.
    pub worktree: Option<String>,
}

macro_rules! select_sessions {
    ($rest:literal) => {
        concat!(
            "SELECT id, from_team, to_team, is_default, fork_of, started, message_count, process_state, created_at, last_used_at, restarted_at, worktree FROM sessions ",
            $rest
        )
    };
}

fn from_row(r: &AnyRow) -> SessionRow {
    SessionRow {
        id: r.get("id"),
        from_team: r.get("from_team"),
        to_team: r.get("to_team"),
        is_default: r.get::<i64, _>("is_default") != 0,
        fork_of: r.get("fork_of"),
        started: r.get::<i64, _>("started") != 0,
        message_count: r.get("message_count"),
        process_state: r.get("process_state"),
        created_at: r.get("created_at"),
        last_used_at: r.get("last_used_at"),
        restarted_at: r.get("restarted_at"),
        worktree: r.get("worktree"),
    }
}

/// Which conversations [`Store::conversations`] lists.
#[derive(Debug, Clone, Default)]
pub struct ConversationFilter {
    /// Only those with this team.
    pub team: Option<String>,
    /// Only those of this caller (`from_team`): an agent's own team.
    pub from_team: Option<String>,
    /// Only those with these teams (a caller limited to some teams).
    pub teams: Option<Vec<String>>,
    pub limit: i64,
    pub offset: i64,
}

/// A conversation as a list shows it: the session and what its turns add
/// up to.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationRow {
    #[serde(flatten)]
    pub session: SessionRow,
    /// The sum of its turns' costs (USD), where reported.
    pub cost_usd: f64,
    /// The status of its latest turn, if it has any.
    pub last_status: Option<String>,
}

fn conversation(r: &AnyRow) -> ConversationRow {
    ConversationRow {
        session: from_row(r),
        cost_usd: r.try_get("cost_usd").unwrap_or(0.0),
        last_status: r.try_get("last_status").ok().flatten(),
    }
}

fn push_conversation_filters(q: &mut crate::sql::Sql, f: &ConversationFilter) {
    q.push(" WHERE 1 = 1");
    if let Some(v) = &f.team {
        q.push(" AND to_team = ").bind(v);
    }
    if let Some(v) = &f.from_team {
        q.push(" AND from_team = ").bind(v);
    }
    crate::store::push_teams(q, "to_team", f.teams.as_deref());
}

impl Store {
    /// Conversations matching `f`, latest used first, with what their turns
    /// cost and how the latest ended; and the total before paging.
    pub async fn conversations(
        &self,
        f: &ConversationFilter,
    ) -> Result<(Vec<ConversationRow>, i64)> {
        let listing = crate::store::Listing {
            select: "SELECT id, from_team, to_team, is_default, fork_of, started, message_count, process_state, created_at, last_used_at, restarted_at, worktree,
                (SELECT COALESCE(SUM(t.cost_usd), 0.0) FROM turns t WHERE t.session_id = sessions.id) AS cost_usd,
                (SELECT t.status FROM turns t WHERE t.session_id = sessions.id
                 ORDER BY t.created_at DESC, t.id DESC LIMIT 1) AS last_status
                FROM sessions",
            count: "SELECT COUNT(*) FROM sessions",
            order: " ORDER BY last_used_at DESC, id",
            what: "listing conversations",
        };
        self.page(
            &listing,
            |q| push_conversation_filters(q, f),
            f.limit,
            f.offset,
            conversation,
        )
        .await
    }

    /// Insert `s`; `once`: not when its id or its pair's default is there
    /// already. Rows inserted.
    async fn insert(&self, s: &SessionRow, once: bool) -> Result<u64> {
        macro_rules! insert {
            ($tail:literal) => {
                concat!(
                    "INSERT INTO sessions (id, from_team, to_team, is_default, fork_of, started, message_count, process_state, created_at, last_used_at, worktree)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    $tail
                )
            };
        }
        let q = if once {
            insert!(" ON CONFLICT DO NOTHING")
        } else {
            insert!("")
        };
        let done = sqlx::query(q)
            .bind(&s.id)
            .bind(&s.from_team)
            .bind(&s.to_team)
            .bind(i64::from(s.is_default))
            .bind(&s.fork_of)
            .bind(i64::from(s.started))
            .bind(s.message_count)
            .bind(&s.process_state)
            .bind(s.created_at)
            .bind(s.last_used_at)
            .bind(&s.worktree)
            .execute(&self.pool)
            .await
            .ctx("inserting a session")?;
        Ok(done.rows_affected())
    }

    pub async fn insert_session(&self, s: &SessionRow) -> Result<()> {
        self.insert(s, false).await.map(|_| ())
    }

    /// Insert `s` unless a session with its id, or (for a default) the
    /// default of its pair, is there already: another node may have made
    /// it a moment ago. The row stored, and whether it is `s`.
    pub async fn insert_session_once(&self, s: &SessionRow) -> Result<(SessionRow, bool)> {
        let done = self.insert(s, true).await?;
        if done == 1 {
            return Ok((s.clone(), true));
        }
        let there = match self.session(&s.id).await? {
            Some(row) => Some(row),
            None if s.is_default => self.default_session(&s.from_team, &s.to_team).await?,
            None => None,
        };
        match there {
            Some(row) => Ok((row, false)),
            None => Err(crate::error::StoreError {
                context: "inserting a session",
                source: sqlx::Error::RowNotFound,
            }),
        }
    }

    pub async fn session(&self, id: &str) -> Result<Option<SessionRow>> {
        let row = sqlx::query(select_sessions!("WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .ctx("reading a session")?;
        Ok(row.as_ref().map(from_row))
    }

    /// The default session of an exact (from, to) pair.
    pub async fn default_session(&self, from: &str, to: &str) -> Result<Option<SessionRow>> {
        let row = sqlx::query(select_sessions!(
            "WHERE from_team = $1 AND to_team = $2 AND is_default = 1"
        ))
        .bind(from)
        .bind(to)
        .fetch_optional(&self.pool)
        .await
        .ctx("reading the default session")?;
        Ok(row.as_ref().map(from_row))
    }

    /// Sessions, newest use first; optionally only those to one team.
    pub async fn sessions(&self, to_team: Option<&str>) -> Result<Vec<SessionRow>> {
        let rows = sqlx::query(select_sessions!(
            "WHERE ($1 IS NULL OR to_team = $1) ORDER BY last_used_at DESC"
        ))
        .bind(to_team)
        .fetch_all(&self.pool)
        .await
        .ctx("listing sessions")?;
        Ok(rows.iter().map(from_row).collect())
    }

    /// How many sessions exist.
    pub async fn count_sessions(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) FROM sessions")
            .fetch_one(&self.pool)
            .await
            .ctx("counting sessions")?;
        Ok(row.get(0))
    }

    /// Record the worktree a session runs in (or none), and the commit it
    /// started from.
    pub async fn set_worktree(
        &self,
        id: &str,
        worktree: Option<&str>,
        base: Option<&str>,
    ) -> Result<()> {
        sqlx::query("UPDATE sessions SET worktree = $1, worktree_base = $2 WHERE id = $3")
            .bind(worktree)
            .bind(base)
            .bind(id)
            .execute(&self.pool)
            .await
            .ctx("recording a session's worktree")?;
        Ok(())
    }

    /// The commit session `id`'s worktree started from, if recorded (a
    /// worktree made before Iris recorded it has none).
    pub async fn worktree_base(&self, id: &str) -> Result<Option<String>> {
        let base: Option<Option<String>> =
            sqlx::query_scalar("SELECT worktree_base FROM sessions WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .ctx("reading a worktree's base")?;
        Ok(base.flatten())
    }

    /// Stop a session being the default of its pair (reboot keeps its history).
    pub async fn retire_session(&self, id: &str) -> Result<()> {
        sqlx::query("UPDATE sessions SET is_default = 0 WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .ctx("retiring a session")?;
        Ok(())
    }

    /// Delete a session with its turns and events.
    /// Once per database: every session id in its canonical form (lower
    /// case, hyphenated), as ids are stored since. Rows that spell one UUID
    /// several ways: the one already in canonical form keeps it, else the
    /// one used last; the others get fresh ids (with their history;
    /// logged), so no conversation is lost or merged with another's.
    pub(crate) async fn canonical_session_ids(&self) -> Result<()> {
        const DONE: &str = "session_ids_canonical";
        let done: Option<(String,)> = sqlx::query_as("SELECT value FROM auth_meta WHERE key = $1")
            .bind(DONE)
            .fetch_optional(&self.pool)
            .await
            .ctx("reading the session id format")?;
        if done.is_some() {
            return Ok(());
        }
        let mut tx = self
            .backend
            .begin_locked(&self.pool, WriteLock::Rewrite)
            .await?;
        self.backend.defer_foreign_keys(&mut tx).await?;
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT id, last_used_at FROM sessions ORDER BY last_used_at DESC")
                .fetch_all(&mut *tx)
                .await
                .ctx("reading session ids")?;
        let mut taken: std::collections::HashSet<String> = rows
            .iter()
            .filter(|(id, _)| {
                uuid::Uuid::parse_str(id).is_ok_and(|u| u.hyphenated().to_string() == *id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for (id, _) in &rows {
            let Ok(u) = uuid::Uuid::parse_str(id.trim()) else {
                continue;
            };
            let canonical = u.hyphenated().to_string();
            if canonical == *id {
                continue;
            }
            let new = if taken.insert(canonical.clone()) {
                canonical
            } else {
                let fresh = uuid::Uuid::new_v4().hyphenated().to_string();
                tracing::warn!(old = %id, new = %fresh, "a session spelled a UUID another session already has; it gets a fresh id");
                taken.insert(fresh.clone());
                fresh
            };
            for q in [
                "UPDATE turns SET session_id = $1 WHERE session_id = $2",
                "UPDATE approvals SET session_id = $1 WHERE session_id = $2",
                "UPDATE sessions SET fork_of = $1 WHERE fork_of = $2",
                "UPDATE sessions SET id = $1 WHERE id = $2",
            ] {
                sqlx::query(q)
                    .bind(&new)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .ctx("rewriting a session id")?;
            }
        }
        sqlx::query(
            "INSERT INTO auth_meta (key, value) VALUES ($1, '1') ON CONFLICT (key) DO NOTHING",
        )
        .bind(DONE)
        .execute(&mut *tx)
        .await
        .ctx("recording the session id format")?;
        tx.commit().await.ctx("canonicalizing session ids")?;
        Ok(())
    }

    /// Delete session `id` with its history, unless it has a job whose
    /// end is not written (`None`: end those first, then call again). The
    /// session is locked as it is looked at, so a job being written for it
    /// meanwhile is either seen here or refused for its reference once the
    /// session is gone — never deleted unheard of with it.
    pub async fn delete_session(&self, id: &str) -> Result<Option<bool>> {
        let mut tx = self.backend.begin_write(&self.pool).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM sessions WHERE id = $1{}",
            self.backend.update_lock()
        )))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .ctx("locking a session to delete it")?;
        let open: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs j JOIN turns t ON t.id = j.id
             WHERE t.session_id = $1 AND j.notified = 0",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .ctx("counting a session's open jobs")?;
        if open > 0 {
            return Ok(None);
        }
        sqlx::query("DELETE FROM transcripts WHERE session_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .ctx("deleting a transcript")?;
        let done = sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .ctx("deleting a session")?;
        tx.commit().await.ctx("committing a session's deletion")?;
        Ok(Some(done.rows_affected() > 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::store;

    #[tokio::test]
    async fn older_spellings_of_session_ids_become_canonical_once() {
        let (s, _d) = store().await;
        let canonical = "6f1c3e52-9d1a-4c3b-8e2f-0a1b2c3d4e5f";
        for (id, used) in [
            ("6F1C3E52-9D1A-4C3B-8E2F-0A1B2C3D4E5F", 3),
            ("{6f1c3e52-9d1a-4c3b-8e2f-0a1b2c3d4e5f}", 2),
            ("urn:uuid:aaaaaaaa-9d1a-4c3b-8e2f-0a1b2c3d4e5f", 1),
        ] {
            let mut r = row(id, false);
            r.last_used_at = used;
            s.insert_session(&r).await.unwrap();
        }
        sqlx::query("DELETE FROM auth_meta WHERE key = 'session_ids_canonical'")
            .execute(&s.pool)
            .await
            .unwrap();
        s.canonical_session_ids().await.unwrap();
        let ids: Vec<(String,)> =
            sqlx::query_as("SELECT id FROM sessions ORDER BY last_used_at DESC")
                .fetch_all(&s.pool)
                .await
                .unwrap();
        assert_eq!(ids[0].0, canonical, "the one used last keeps it");
        assert!(
            uuid::Uuid::parse_str(&ids[1].0).is_ok() && ids[1].0 != canonical,
            "{ids:?}"
        );
        assert_eq!(ids[2].0, "aaaaaaaa-9d1a-4c3b-8e2f-0a1b2c3d4e5f");
        for (id,) in &ids {
            assert_eq!(id, &id.to_lowercase());
        }
    }

    fn row(id: &str, default: bool) -> SessionRow {
        crate::store::testing::session(id, "a", "b", default)
    }

    #[tokio::test]
    async fn one_default_per_pair_and_exact_lookup() {
        let (s, _d) = store().await;
        s.insert_session(&row("s1", true)).await.unwrap();
        assert!(
            s.insert_session(&row("s2", true)).await.is_err(),
            "second default must be refused"
        );
        s.insert_session(&row("s3", false)).await.unwrap();
        // Made a moment ago elsewhere: the one there is the session.
        let (there, new) = s.insert_session_once(&row("s4", true)).await.unwrap();
        assert_eq!((there.id.as_str(), new), ("s1", false));
        let (there, new) = s.insert_session_once(&row("s3", true)).await.unwrap();
        assert_eq!(
            (there.id.as_str(), there.is_default, new),
            ("s3", false, false)
        );
        let (made, new) = s.insert_session_once(&row("s5", false)).await.unwrap();
        assert_eq!((made.id.as_str(), new), ("s5", true));
        assert_eq!(s.default_session("a", "b").await.unwrap().unwrap().id, "s1");
        assert!(s.default_session("a", "bb").await.unwrap().is_none());
        assert!(s.default_session("aa", "b").await.unwrap().is_none());
        s.retire_session("s1").await.unwrap();
        assert!(s.default_session("a", "b").await.unwrap().is_none());
        s.apply(&[crate::writes::StoreWrite::SessionUsed {
            id: "s3".into(),
            at: 9,
        }])
        .await
        .unwrap();
        let s3 = s.session("s3").await.unwrap().unwrap();
        assert!(s3.started && s3.message_count == 1 && s3.last_used_at == 9);
        assert_eq!(s.sessions(Some("b")).await.unwrap()[0].id, "s3");
        assert_eq!(s.delete_session("s3").await.unwrap(), Some(true));
        assert_eq!(s.delete_session("s3").await.unwrap(), Some(false));
    }
}
