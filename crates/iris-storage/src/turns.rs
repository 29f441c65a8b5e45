//! Turn records and their raw events.

use serde::Serialize;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::sql::Sql;

use crate::error::{Context, Result};
use crate::store::Store;

/// One user message to a team and what came of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnRow {
    pub id: String,
    pub session_id: String,
    pub from_team: String,
    pub to_team: String,
    pub kind: String,
    pub status: String,
    pub request: String,
    pub response: Option<String>,
    pub error: Option<String>,
    pub tool_uses: Option<Value>,
    pub usage: Option<Value>,
    pub cost_usd: Option<f64>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub events_dropped: i64,
    /// The teams this message passed through, ending with `to_team` (see
    /// migration 0004); empty when it came from outside any team's turn.
    pub chain: Vec<String>,
    /// Who sent it: the caller's identity (`key:…`, `user:…`, `agent:…`,
    /// `local`); `None` for turns recorded before callers were (migration 0007).
    pub caller: Option<String>,
}

impl TurnRow {
    /// The row as writing `f` leaves it: for readers that see a turn end in
    /// memory before the write reaches the database.
    pub fn finish(&mut self, f: TurnFinish) {
        self.status = f.status;
        self.response = Some(f.response);
        self.error = f.error;
        self.tool_uses = f.tool_uses;
        self.usage = f.usage;
        self.cost_usd = f.cost_usd;
        self.completed_at = Some(f.completed_at);
        self.events_dropped = f.events_dropped;
        self.started_at = self.started_at.or(f.started_at);
    }
}

/// The end of a turn.
#[derive(Debug, Clone, Default)]
pub struct TurnFinish {
    pub status: String,
    pub response: String,
    pub error: Option<String>,
    pub tool_uses: Option<Value>,
    pub usage: Option<Value>,
    pub cost_usd: Option<f64>,
    pub completed_at: i64,
    pub events_dropped: i64,
    /// When it started, for a record that may not say so yet (a job's end
    /// is written beside the recorder, which writes starts); a start
    /// already recorded stays.
    pub started_at: Option<i64>,
}

/// One raw agent event of a turn.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRow {
    pub seq: i64,
    pub at: i64,
    pub kind: String,
    pub data: Value,
}

/// Filters of the message history.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub to_team: Option<String>,
    pub from_team: Option<String>,
    pub session_id: Option<String>,
    pub status: Option<String>,
    pub since: Option<i64>,
    /// Only turns to these teams (a caller limited to some teams).
    pub teams: Option<Vec<String>>,
    pub limit: i64,
    pub offset: i64,
    /// Oldest first (a conversation) rather than newest first (a log).
    pub oldest_first: bool,
}

macro_rules! select_turns {
    ($rest:literal) => {
        concat!(
            "SELECT id, session_id, from_team, to_team, kind, status, request, response, error, tool_uses, usage, ",
            "cost_usd, created_at, started_at, completed_at, events_dropped, chain, caller FROM turns",
            $rest
        )
    };
}

fn json_col(r: &AnyRow, name: &str) -> Option<Value> {
    r.get::<Option<String>, _>(name)
        .and_then(|s| serde_json::from_str(&s).ok())
}

pub(crate) fn from_row(r: &AnyRow) -> TurnRow {
    TurnRow {
        id: r.get("id"),
        session_id: r.get("session_id"),
        from_team: r.get("from_team"),
        to_team: r.get("to_team"),
        kind: r.get("kind"),
        status: r.get("status"),
        request: r.get("request"),
        response: r.get("response"),
        error: r.get("error"),
        tool_uses: json_col(r, "tool_uses"),
        usage: json_col(r, "usage"),
        cost_usd: r.get("cost_usd"),
        created_at: r.get("created_at"),
        started_at: r.get("started_at"),
        completed_at: r.get("completed_at"),
        events_dropped: r.get("events_dropped"),
        chain: json_col(r, "chain")
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default(),
        caller: r.get("caller"),
    }
}

fn event_from_row(r: &AnyRow) -> EventRow {
    EventRow {
        seq: r.get("seq"),
        at: r.get("at"),
        kind: r.get("kind"),
        data: serde_json::from_str(&r.get::<String, _>("data")).unwrap_or(Value::Null),
    }
}

fn push_filters(q: &mut Sql, f: &HistoryFilter) {
    q.push(" WHERE 1 = 1");
    if let Some(v) = &f.to_team {
        q.push(" AND to_team = ").bind(v);
    }
    if let Some(v) = &f.from_team {
        q.push(" AND from_team = ").bind(v);
    }
    if let Some(v) = &f.session_id {
        q.push(" AND session_id = ").bind(v);
    }
    if let Some(v) = &f.status {
        q.push(" AND status = ").bind(v);
    }
    if let Some(v) = f.since {
        q.push(" AND created_at >= ").bind(v);
    }
    crate::store::push_teams(q, "to_team", f.teams.as_deref());
}

/// The end of a turn and its events, inside a caller's transaction.
pub(crate) async fn finish_in(
    tx: &mut Transaction<'static, Any>,
    id: &str,
    f: &TurnFinish,
    events: &[EventRow],
) -> Result<()> {
    sqlx::query(
        // The cost goes as text, cast by the database: Postgres keeps this
        // statement prepared per connection with the parameter types of its
        // first use, and a first `NULL` cost typed it so that a later
        // float's bytes were refused ("incorrect binary data format").
        "UPDATE turns SET status = $1, response = $2, error = $3, tool_uses = $4, usage = $5,
         cost_usd = CAST($6 AS DOUBLE PRECISION),
         completed_at = $7, events_dropped = $8, started_at = COALESCE(started_at, $9) WHERE id = $10",
    )
    .bind(&f.status)
    .bind(crate::sql::text(&f.response).into_owned())
    .bind(f.error.as_deref().map(|e| crate::sql::text(e).into_owned()))
    .bind(f.tool_uses.as_ref().map(Value::to_string))
    .bind(f.usage.as_ref().map(Value::to_string))
    .bind(f.cost_usd.map(|c| c.to_string()))
    .bind(f.completed_at)
    .bind(f.events_dropped)
    .bind(f.started_at)
    .bind(id)
    .execute(&mut **tx)
    .await
    .ctx("finishing a turn")?;
    // Bounded batches keep each statement under SQLite's variable limit.
    for batch in events.chunks(200) {
        let mut q = Sql::new("INSERT INTO turn_events (turn_id, seq, at, kind, data) ");
        q.values(batch, |b, e| {
            b.bind(id)
                .bind(e.seq)
                .bind(e.at)
                .bind(&e.kind)
                .bind(e.data.to_string());
        });
        q.push(
            " ON CONFLICT (turn_id, seq) DO UPDATE SET at = excluded.at, kind = excluded.kind, data = excluded.data",
        );
        q.build("writing turn events")?
            .execute(&mut **tx)
            .await
            .ctx("writing turn events")?;
    }
    Ok(())
}

/// Messages from one caller to one team since a time (the teams graph).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PairRow {
    pub from_team: String,
    pub to_team: String,
    /// Messages (and jobs) sent.
    pub count: i64,
    /// Of those, queued or running now.
    pub open: i64,
}

impl Store {
    /// Messages per (caller, team) created since `since` (ms), busiest
    /// first, only to `teams` when given (a caller limited to some teams).
    pub async fn message_pairs(
        &self,
        since: i64,
        teams: Option<&[String]>,
    ) -> Result<Vec<PairRow>> {
        let mut q = Sql::new(
            "SELECT from_team, to_team, COUNT(*) AS n,
                    SUM(CASE WHEN status IN ('queued', 'running') THEN 1 ELSE 0 END) AS open
             FROM turns WHERE created_at >= ",
        );
        q.bind(since);
        crate::store::push_teams(&mut q, "to_team", teams);
        q.push(" GROUP BY from_team, to_team ORDER BY n DESC, from_team, to_team LIMIT 500");
        let rows = q
            .build("counting messages between teams")?
            .fetch_all(&self.pool)
            .await
            .ctx("counting messages between teams")?;
        rows.iter()
            .map(|r| {
                Ok(PairRow {
                    from_team: r.try_get(0).ctx("turns.from_team")?,
                    to_team: r.try_get(1).ctx("turns.to_team")?,
                    count: r.try_get(2).ctx("a count")?,
                    open: r.try_get(3).ctx("a count")?,
                })
            })
            .collect()
    }

    /// The node that ran (or runs) turn `id` (`None`: unknown, or written
    /// before nodes had ids, or by a one-shot command).
    pub async fn turn_node(&self, id: &str) -> Result<Option<String>> {
        self.node_of("turns", id).await
    }

    pub async fn turn(&self, id: &str) -> Result<Option<TurnRow>> {
        let row = sqlx::query(select_turns!(" WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .ctx("reading a turn")?;
        Ok(row.as_ref().map(from_row))
    }

    /// Turns matching `f`, with the total count before paging.
    pub async fn turns(&self, f: &HistoryFilter) -> Result<(Vec<TurnRow>, i64)> {
        let listing = crate::store::Listing {
            select: select_turns!(""),
            count: "SELECT COUNT(*) FROM turns",
            order: if f.oldest_first {
                " ORDER BY created_at ASC, id ASC"
            } else {
                " ORDER BY created_at DESC, id DESC"
            },
            what: "reading turns",
        };
        self.page(
            &listing,
            |q| push_filters(q, f),
            f.limit,
            f.offset,
            from_row,
        )
        .await
    }

    /// The average running time (ms) of the last 20 completed turns of
    /// `team`, if it has any.
    pub async fn average_turn_ms(&self, team: &str) -> Result<Option<f64>> {
        let row = sqlx::query(
            "SELECT CAST(AVG(completed_at - started_at) AS DOUBLE PRECISION) FROM (SELECT completed_at, started_at FROM turns
             WHERE to_team = $1 AND status = 'completed' AND started_at IS NOT NULL
             ORDER BY created_at DESC LIMIT 20) AS recent",
        )
        .bind(team)
        .fetch_one(&self.pool)
        .await
        .ctx("averaging turn durations")?;
        Ok(row.get::<Option<f64>, _>(0))
    }

    /// The agent's own id of conversation `session`, as its last `init`
    /// said (an ACP agent names its sessions itself; Iris resumes with it).
    pub async fn agent_session(&self, session: &str) -> Result<Option<String>> {
        Ok(self.agent_init(session).await?.and_then(|v| {
            v.get("session_id")
                .and_then(Value::as_str)
                .map(str::to_owned)
        }))
    }

    /// The last `init` line the agent of conversation `session` wrote (what
    /// it says of its own state, given back when its process restarts).
    pub async fn agent_init(&self, session: &str) -> Result<Option<Value>> {
        let row = sqlx::query(
            "SELECT e.data FROM turn_events e JOIN turns t ON t.id = e.turn_id \
             WHERE t.session_id = $1 AND e.kind = 'system' \
             ORDER BY t.created_at DESC, t.id DESC, e.seq DESC LIMIT 1",
        )
        .bind(session)
        .fetch_optional(&self.pool)
        .await
        .ctx("reading a conversation's agent session")?;
        let Some(row) = row else {
            return Ok(None);
        };
        let data: String = row
            .try_get("data")
            .ctx("reading a conversation's agent session")?;
        Ok(serde_json::from_str::<Value>(&data).ok())
    }

    /// The events of turn `id` of one `kind`, in order.
    pub async fn turn_events_of_kind(&self, id: &str, kind: &str) -> Result<Vec<EventRow>> {
        let rows = sqlx::query(
            "SELECT seq, at, kind, data FROM turn_events WHERE turn_id = $1 AND kind = $2 ORDER BY seq",
        )
        .bind(id)
        .bind(kind)
        .fetch_all(&self.pool)
        .await
        .ctx("reading a turn's events of one kind")?;
        Ok(rows.iter().map(event_from_row).collect())
    }

    pub async fn turn_events(&self, id: &str, after_seq: i64) -> Result<Vec<EventRow>> {
        let rows = sqlx::query("SELECT seq, at, kind, data FROM turn_events WHERE turn_id = $1 AND seq > $2 ORDER BY seq")
            .bind(id)
            .bind(after_seq)
            .fetch_all(&self.pool)
            .await
            .ctx("reading turn events")?;
        Ok(rows.iter().map(event_from_row).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::store;
    use crate::writes::StoreWrite;

    #[tokio::test]
    async fn turn_lifecycle_events_and_history() {
        let (s, _d) = store().await;
        s.insert_session(&crate::store::testing::session("s", "a", "b", true))
            .await
            .unwrap();
        for (i, id) in ["m1", "m2", "m3"].iter().enumerate() {
            let mut t = crate::store::testing::turn(id, "s", "a", "b");
            t.request = format!("q{i}");
            t.created_at = 10 + i as i64;
            s.apply(&[StoreWrite::InsertTurn(t)]).await.unwrap();
        }
        s.apply(&[StoreWrite::TurnStarted {
            id: "m1".into(),
            at: 20,
        }])
        .await
        .unwrap();
        let events: Vec<EventRow> = (1..=450)
            .map(|seq| EventRow {
                seq,
                at: 21,
                kind: "chunk".into(),
                data: serde_json::json!({"n": seq}),
            })
            .collect();
        let finish = TurnFinish {
            status: "completed".into(),
            response: "r".into(),
            usage: Some(serde_json::json!({"input_tokens": 2})),
            completed_at: 30,
            ..Default::default()
        };
        let mut in_memory = s.turn("m1").await.unwrap().unwrap();
        in_memory.finish(finish.clone());
        s.apply(&[StoreWrite::TurnFinished {
            id: "m1".into(),
            finish,
            events,
        }])
        .await
        .unwrap();
        let t = s.turn("m1").await.unwrap().unwrap();
        // Memory's view of an end is what the write leaves.
        assert_eq!(in_memory, t);
        assert_eq!(
            (t.status.as_str(), t.response.as_deref()),
            ("completed", Some("r"))
        );
        assert_eq!(t.usage.unwrap()["input_tokens"], 2);
        assert_eq!(s.turn_events("m1", 440).await.unwrap().len(), 10);

        let (page, total) = s
            .turns(&HistoryFilter {
                teams: None,
                to_team: Some("b".into()),
                limit: 2,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(total, 3);
        assert_eq!(
            page.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
            ["m3", "m2"]
        );
        let (done, _) = s
            .turns(&HistoryFilter {
                teams: None,
                status: Some("completed".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!(
            s.recover(99).await.unwrap(),
            2,
            "queued turns fail at start-up"
        );
        assert_eq!(s.turn("m2").await.unwrap().unwrap().status, "failed");
        assert_eq!(s.delete_session("s").await.unwrap(), Some(true));
        assert!(
            s.turn("m1").await.unwrap().is_none(),
            "turns go with their session"
        );
    }
}
