//! Agents' own transcripts (Claude Code's session files), kept so a
//! conversation can resume where its agent's files are not: on another
//! node, or after its home was wiped.

use sqlx::Row;

use crate::error::{Context, Result};
use crate::store::Store;

/// A transcript as saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscriptRow {
    pub session_id: String,
    pub team: String,
    pub agent: String,
    /// The working folder the agent wrote it in.
    pub folder: String,
    pub body: String,
    pub updated_at: i64,
}

impl Store {
    /// Save (or replace) a conversation's transcript; an older copy never
    /// replaces a newer one.
    pub async fn save_transcript(&self, t: &TranscriptRow) -> Result<()> {
        let mut tx = self.backend.begin_write(&self.pool).await?;
        self.fence_team(&mut tx, &t.team).await?;
        sqlx::query(
            "INSERT INTO transcripts (session_id, team, agent, folder, body, updated_at, node_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (session_id) DO UPDATE SET team = EXCLUDED.team, agent = EXCLUDED.agent,
               folder = EXCLUDED.folder, body = EXCLUDED.body, updated_at = EXCLUDED.updated_at,
               node_id = EXCLUDED.node_id
             WHERE transcripts.updated_at <= EXCLUDED.updated_at",
        )
        .bind(&t.session_id)
        .bind(&t.team)
        .bind(&t.agent)
        .bind(&t.folder)
        .bind(&t.body)
        .bind(t.updated_at)
        .bind(self.node())
        .execute(&mut *tx)
        .await
        .ctx("saving a transcript")?;
        tx.commit().await.ctx("saving a transcript")
    }

    /// Forget a conversation's saved transcript.
    pub async fn delete_transcript(&self, session_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM transcripts WHERE session_id = $1")
            .bind(session_id)
            .execute(&self.pool)
            .await
            .ctx("deleting a transcript")?;
        Ok(())
    }

    /// The saved transcript of a conversation.
    pub async fn transcript(&self, session_id: &str) -> Result<Option<TranscriptRow>> {
        let row = sqlx::query(
            "SELECT session_id, team, agent, folder, body, updated_at FROM transcripts WHERE session_id = $1",
        )
        .bind(session_id)
        .fetch_optional(&self.pool)
        .await
        .ctx("reading a transcript")?;
        row.map(|r| {
            Ok(TranscriptRow {
                session_id: r.try_get(0).ctx("transcripts.session_id")?,
                team: r.try_get(1).ctx("transcripts.team")?,
                agent: r.try_get(2).ctx("transcripts.agent")?,
                folder: r.try_get(3).ctx("transcripts.folder")?,
                body: r.try_get(4).ctx("transcripts.body")?,
                updated_at: r.try_get(5).ctx("transcripts.updated_at")?,
            })
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::store;

    #[tokio::test]
    async fn a_transcript_is_saved_replaced_by_newer_only_and_removed_with_its_session() {
        let (s, _d) = store().await;
        let row = |body: &str, at: i64| TranscriptRow {
            session_id: "s1".into(),
            team: "t".into(),
            agent: "claude".into(),
            folder: "/w".into(),
            body: body.into(),
            updated_at: at,
        };
        assert!(s.transcript("s1").await.unwrap().is_none());
        s.save_transcript(&row("one\n", 10)).await.unwrap();
        s.save_transcript(&row("two\n", 20)).await.unwrap();
        s.save_transcript(&row("stale\n", 15)).await.unwrap();
        assert_eq!(s.transcript("s1").await.unwrap().unwrap().body, "two\n");
        s.delete_session("s1").await.unwrap();
        assert!(s.transcript("s1").await.unwrap().is_none());
    }
}
