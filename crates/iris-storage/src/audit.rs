//! The audit trail: an append-only, hash-chained table.
//!
//! Each record's hash is SHA-256 over its fields and the previous record's
//! hash, so editing or deleting a record breaks the chain at that point.
//! Appends run in one transaction per batch holding the audit write lock
//! (SQLite's `BEGIN IMMEDIATE`, a Postgres advisory lock), so two
//! processes writing the same database still extend one chain.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::backend::WriteLock;
use crate::error::{Context, Result};
use crate::store::Store;

/// The hash the first record of an empty trail chains to.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit record.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct AuditRow {
    pub seq: i64,
    pub id: String,
    pub ts: i64,
    pub actor: Option<String>,
    pub actor_kind: Option<String>,
    pub action: String,
    pub resource: Option<String>,
    pub team: Option<String>,
    /// success | failure | denied
    pub result: String,
    /// info | warning | critical
    pub severity: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    /// JSON object.
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRow {
    /// The hash this record must carry, given its fields and `prev_hash`.
    pub fn expected_hash(&self) -> String {
        let mut h = Sha256::new();
        let opt = |o: &Option<String>| o.clone().unwrap_or_default();
        let fields = [
            self.seq.to_string(),
            self.id.clone(),
            self.ts.to_string(),
            opt(&self.actor),
            opt(&self.actor_kind),
            self.action.clone(),
            opt(&self.resource),
            opt(&self.team),
            self.result.clone(),
            self.severity.clone(),
            opt(&self.ip),
            opt(&self.user_agent),
            opt(&self.request_id),
            self.details.clone(),
            self.prev_hash.clone(),
        ];
        // Length-prefixed, so no two different records encode alike.
        for f in fields {
            h.update((f.len() as u64).to_be_bytes());
            h.update(f.as_bytes());
        }
        hex::encode(h.finalize())
    }
}

/// Filters of `GET /admin/audit-logs` (seed 003) and `iris audit list`.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub team: Option<String>,
    pub result: Option<String>,
    pub severity: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

/// What `verify_audit` found (the `audit_verify` operation's result).
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditVerdict {
    /// The chain is intact.
    pub ok: bool,
    /// Records checked.
    pub records: i64,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    /// The first problem, with the record it is at.
    pub problem: Option<String>,
    pub bad_seq: Option<i64>,
}

/// What a witness outside the database saw of the chain's two ends the
/// last time this process wrote to it (or pruned it): the audit trail
/// cannot notice by itself a cut tail, a cut head together with its
/// anchor, or an emptied log; compared with this, it can.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditWitness {
    /// The chain this witness is of (`audit_chain_id`, one per database).
    pub chain: String,
    pub first_seq: i64,
    pub first_prev: String,
    pub last_seq: i64,
    pub last_hash: String,
    /// When it was written (Unix ms).
    pub at: i64,
}

macro_rules! select_audit {
    ($rest:literal) => {
        concat!(
            "SELECT seq, id, ts, actor, actor_kind, action, resource, team, result, severity, ip, user_agent, ",
            "request_id, details, prev_hash, hash FROM audit_log",
            $rest
        )
    };
}

impl Store {
    /// Append records (their `seq`, `prev_hash` and `hash` are assigned here).
    pub async fn append_audit(&self, records: &mut [AuditRow]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.within("appending audit records", self.append_audit_once(records))
            .await
    }

    async fn append_audit_once(&self, records: &mut [AuditRow]) -> Result<()> {
        let mut tx = self
            .backend
            .begin_locked(&self.pool, WriteLock::Audit)
            .await?;
        // A retry of a batch whose commit went through but whose answer was
        // lost: the newest records are these already. Not twice.
        let newest: Vec<String> =
            sqlx::query_scalar("SELECT id FROM audit_log ORDER BY seq DESC LIMIT $1")
                .bind(records.len() as i64)
                .fetch_all(&mut *tx)
                .await
                .ctx("reading the audit head")?;
        if newest.len() == records.len()
            && newest
                .iter()
                .rev()
                .zip(records.iter())
                .all(|(a, r)| *a == r.id)
        {
            return Ok(());
        }
        let last: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await
                .ctx("reading the audit head")?;
        let (mut seq, mut prev) = last.unwrap_or((0, GENESIS.to_owned()));
        let first = (seq + 1, prev.clone());
        for r in records.iter_mut() {
            seq += 1;
            r.seq = seq;
            r.prev_hash = prev;
            r.hash = r.expected_hash();
            prev = r.hash.clone();
            sqlx::query(
                "INSERT INTO audit_log (seq, id, ts, actor, actor_kind, action, resource, team, result, severity, ip, user_agent, request_id, details, prev_hash, hash)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            )
            .bind(r.seq)
            .bind(&r.id)
            .bind(r.ts)
            .bind(&r.actor)
            .bind(&r.actor_kind)
            .bind(&r.action)
            .bind(&r.resource)
            .bind(&r.team)
            .bind(&r.result)
            .bind(&r.severity)
            .bind(&r.ip)
            .bind(&r.user_agent)
            .bind(&r.request_id)
            .bind(&r.details)
            .bind(&r.prev_hash)
            .bind(&r.hash)
            .execute(&mut *tx)
            .await
            .ctx("appending an audit record")?;
        }
        sqlx::query(
            "INSERT INTO audit_anchor (id, first_seq, first_prev, last_seq, last_hash) VALUES (1, $1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET last_seq = excluded.last_seq, last_hash = excluded.last_hash",
        )
        .bind(first.0)
        .bind(&first.1)
        .bind(seq)
        .bind(&prev)
        .execute(&mut *tx)
        .await
        .ctx("moving the audit anchor")?;
        tx.commit().await.ctx("committing audit records")
    }

    /// Records matching `f`, newest first, and how many match in all.
    pub async fn audit(&self, f: &AuditFilter) -> Result<(Vec<AuditRow>, i64)> {
        macro_rules! filtered {
            ($q:expr) => {
                $q.bind(f.start)
                    .bind(f.end)
                    .bind(&f.actor)
                    .bind(&f.action)
                    .bind(&f.team)
                    .bind(&f.result)
                    .bind(&f.severity)
            };
        }
        let rows: Vec<AuditRow> = filtered!(sqlx::query_as(select_audit!(
            " WHERE ($1 IS NULL OR ts >= $1) AND ($2 IS NULL OR ts <= $2) AND ($3 IS NULL OR actor = $3)
             AND ($4 IS NULL OR action = $4 OR action LIKE $4 || '.%') AND ($5 IS NULL OR team = $5)
             AND ($6 IS NULL OR result = $6) AND ($7 IS NULL OR severity = $7)
             ORDER BY seq DESC LIMIT $8 OFFSET $9"
        )))
        .bind(f.limit)
        .bind(f.offset)
        .fetch_all(&self.pool)
        .await
        .ctx("reading audit records")?;
        let total: i64 = filtered!(sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_log WHERE ($1 IS NULL OR ts >= $1) AND ($2 IS NULL OR ts <= $2) AND ($3 IS NULL OR actor = $3)
             AND ($4 IS NULL OR action = $4 OR action LIKE $4 || '.%') AND ($5 IS NULL OR team = $5)
             AND ($6 IS NULL OR result = $6) AND ($7 IS NULL OR severity = $7)"
        ))
        .fetch_one(&self.pool)
        .await
        .ctx("counting audit records")?;
        Ok((rows, total))
    }

    /// The id of this database's audit chain (made once).
    pub async fn audit_chain_id(&self) -> Result<String> {
        // Unique, not secret: the time to the nanosecond and this process.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let seed = format!("{nanos}:{}", std::process::id());
        let fresh = format!(
            "chain_{}",
            &hex::encode(Sha256::digest(seed.as_bytes()))[..24]
        );
        self.meta_init("audit_chain_id", &fresh).await
    }

    /// The chain's ends as the anchor has them, as a witness would keep
    /// them (`None` while the trail is empty).
    pub async fn audit_witness_now(&self) -> Result<Option<AuditWitness>> {
        let anchor: Option<(i64, String, i64, String)> = sqlx::query_as(
            "SELECT first_seq, first_prev, last_seq, last_hash FROM audit_anchor WHERE id = 1",
        )
        .fetch_optional(&self.pool)
        .await
        .ctx("reading the audit anchor")?;
        let chain = self.audit_chain_id().await?;
        Ok(anchor.map(
            |(first_seq, first_prev, last_seq, last_hash)| AuditWitness {
                chain,
                first_seq,
                first_prev,
                last_seq,
                last_hash,
                at: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or_default(),
            },
        ))
    }

    /// [`Store::verify_audit`], and then the chain compared with `witness`
    /// (what a file outside the database saw; `Err(why)` when there is
    /// none to read): the record it ends at must still be there, unchanged,
    /// and nothing before its first may be missing.
    pub async fn verify_audit_with(
        &self,
        witness: std::result::Result<Option<AuditWitness>, String>,
    ) -> Result<AuditVerdict> {
        let mut v = self.verify_audit().await?;
        if !v.ok {
            return Ok(v);
        }
        let problem = self.against_witness(&v, witness).await?;
        if let Some((seq, why)) = problem {
            v.ok = false;
            v.problem = Some(why);
            v.bad_seq = seq;
        }
        Ok(v)
    }

    /// What is wrong with an intact chain `v` given what the witness saw.
    async fn against_witness(
        &self,
        v: &AuditVerdict,
        witness: std::result::Result<Option<AuditWitness>, String>,
    ) -> Result<Option<(Option<i64>, String)>> {
        let w = match witness {
            Ok(Some(w)) => w,
            // Nothing was ever recorded here and there is nothing to witness.
            Ok(None) if v.records == 0 => return Ok(None),
            Ok(None) => {
                return Ok(Some((
                    None,
                    "the audit witness file is missing (it is written with every record; was it deleted?)".into(),
                )));
            }
            Err(why) => {
                return Ok(Some((
                    None,
                    format!("the audit witness cannot be read: {why}"),
                )));
            }
        };
        let chain = self.audit_chain_id().await?;
        if w.chain != chain {
            return Ok(Some((
                None,
                format!(
                    "the witness is of another audit chain ({}), not this database's ({chain}): the database was replaced, or the witness is another's",
                    w.chain
                ),
            )));
        }
        let at: Option<(String,)> = sqlx::query_as("SELECT hash FROM audit_log WHERE seq = $1")
            .bind(w.last_seq)
            .fetch_optional(&self.pool)
            .await
            .ctx("reading the witnessed record")?;
        let tail = match (at, v.last_seq) {
            (Some((hash,)), _) if hash != w.last_hash => Some((
                Some(w.last_seq),
                format!("record {} is not the one the witness saw", w.last_seq),
            )),
            (Some(_), _) => None,
            (None, Some(last)) if last < w.last_seq => Some((
                Some(last),
                format!(
                    "the trail ends at record {last}, but the witness saw record {}: later records were removed",
                    w.last_seq
                ),
            )),
            (None, None) => Some((
                None,
                format!(
                    "the trail is empty, but the witness saw records up to {}",
                    w.last_seq
                ),
            )),
            (None, Some(_)) => Some((
                Some(w.last_seq),
                format!("record {} that the witness saw is missing", w.last_seq),
            )),
        };
        if tail.is_some() {
            return Ok(tail);
        }
        Ok(v.first_seq.filter(|first| *first > w.first_seq).map(|first| {
            (
                Some(first),
                format!(
                    "the trail starts at record {first}, but the witness saw it start at {}: records were removed",
                    w.first_seq
                ),
            )
        }))
    }

    /// Walk the whole chain: every hash recomputed, every link and sequence
    /// number checked, and both ends compared with the anchor.
    pub async fn verify_audit(&self) -> Result<AuditVerdict> {
        use futures_util::TryStreamExt;
        // One snapshot: another process appending meanwhile must not look
        // like records removed after the anchor was read.
        let mut tx = self.backend.begin_snapshot(&self.pool).await?;
        let anchor: Option<(i64, String, i64, String)> = sqlx::query_as(
            "SELECT first_seq, first_prev, last_seq, last_hash FROM audit_anchor WHERE id = 1",
        )
        .fetch_optional(&mut *tx)
        .await
        .ctx("reading the audit anchor")?;
        let mut verdict = AuditVerdict {
            ok: true,
            records: 0,
            first_seq: None,
            last_seq: None,
            problem: None,
            bad_seq: None,
        };
        let fail = |v: &mut AuditVerdict, seq: Option<i64>, why: String| {
            if v.ok {
                v.ok = false;
                v.problem = Some(why);
                v.bad_seq = seq;
            }
        };
        let mut rows =
            sqlx::query_as::<_, AuditRow>(select_audit!(" ORDER BY seq")).fetch(&mut *tx);
        let mut prev: Option<(i64, String)> = None;
        while let Some(r) = rows.try_next().await.ctx("reading the audit trail")? {
            verdict.records += 1;
            match &prev {
                None => {
                    verdict.first_seq = Some(r.seq);
                    if let Some((first_seq, first_prev, _, _)) = &anchor
                        && (r.seq != *first_seq || r.prev_hash != *first_prev)
                    {
                        fail(
                            &mut verdict,
                            Some(r.seq),
                            format!(
                                "the trail should start at record {first_seq}; records before {} were removed",
                                r.seq
                            ),
                        );
                    }
                }
                Some((pseq, phash)) => {
                    if r.seq != pseq + 1 {
                        fail(
                            &mut verdict,
                            Some(r.seq),
                            format!("records {} to {} are missing", pseq + 1, r.seq - 1),
                        );
                    } else if r.prev_hash != *phash {
                        fail(
                            &mut verdict,
                            Some(r.seq),
                            format!("record {} does not chain to record {pseq}", r.seq),
                        );
                    }
                }
            }
            if r.expected_hash() != r.hash {
                fail(
                    &mut verdict,
                    Some(r.seq),
                    format!(
                        "record {} was altered (its hash does not match its fields)",
                        r.seq
                    ),
                );
            }
            verdict.last_seq = Some(r.seq);
            prev = Some((r.seq, r.hash));
        }
        match (&anchor, &prev) {
            (Some((_, _, last_seq, last_hash)), Some((seq, hash)))
                if (last_seq, last_hash) != (seq, hash) =>
            {
                fail(
                    &mut verdict,
                    Some(*seq),
                    format!(
                        "the trail should end at record {last_seq}; later records were removed or replaced"
                    ),
                );
            }
            (Some((_, _, last_seq, _)), None) => {
                fail(
                    &mut verdict,
                    None,
                    format!("the trail is empty but should end at record {last_seq}"),
                );
            }
            (None, Some((seq, _))) => {
                fail(
                    &mut verdict,
                    Some(*seq),
                    "the trail has records but its anchor is missing (deleted)".into(),
                );
            }
            _ => {}
        }
        Ok(verdict)
    }

    /// Drop records older than `before`, keeping the chain verifiable: the
    /// anchor moves to the first record kept.
    pub async fn prune_audit(&self, before: i64) -> Result<u64> {
        let mut tx = self
            .backend
            .begin_locked(&self.pool, WriteLock::Audit)
            .await?;
        // Never the newest record: it is the head the next append chains to.
        let done = sqlx::query(
            "DELETE FROM audit_log WHERE ts < $1 AND seq < (SELECT MAX(seq) FROM audit_log)",
        )
        .bind(before)
        .execute(&mut *tx)
        .await
        .ctx("pruning audit records")?;
        if done.rows_affected() > 0 {
            sqlx::query(
                "UPDATE audit_anchor SET (first_seq, first_prev) = (SELECT seq, prev_hash FROM audit_log ORDER BY seq LIMIT 1) WHERE id = 1",
            )
            .execute(&mut *tx)
            .await
            .ctx("moving the audit anchor")?;
        }
        tx.commit().await.ctx("committing an audit prune")?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::testing::store;

    use super::*;

    fn rec(action: &str, ts: i64) -> AuditRow {
        AuditRow {
            seq: 0,
            id: format!("aud_{ts}"),
            ts,
            actor: Some("ci".into()),
            actor_kind: Some("key".into()),
            action: action.into(),
            resource: None,
            team: Some("web".into()),
            result: "success".into(),
            severity: "info".into(),
            ip: None,
            user_agent: None,
            request_id: None,
            details: "{}".into(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[tokio::test]
    async fn a_retried_batch_is_not_appended_twice() {
        let (s, _d) = store().await;
        let mut batch: Vec<AuditRow> = (1..=3).map(|i| rec("key.create", i)).collect();
        s.append_audit(&mut batch).await.unwrap();
        // As the writer retries after a commit whose answer was lost.
        s.append_audit(&mut batch).await.unwrap();
        let v = s.verify_audit().await.unwrap();
        assert!(v.ok && v.records == 3, "{v:?}");
        s.append_audit(&mut [rec("key.revoke", 4)]).await.unwrap();
        assert_eq!(s.verify_audit().await.unwrap().records, 4);
        // Turns too: a retried insert is no error and no second row.
        s.insert_session(&crate::store::testing::session("s", "a", "b", true))
            .await
            .unwrap();
        let t = crate::store::testing::turn("m1", "s", "a", "b");
        let w = [crate::StoreWrite::InsertTurn(t)];
        s.apply(&w).await.unwrap();
        s.apply(&w).await.unwrap();
        assert!(s.turn("m1").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn chain_verifies_and_catches_edits_deletions_and_truncation() {
        let (s, _d) = store().await;
        let mut batch: Vec<AuditRow> = (1..=5).map(|i| rec("operation.send_message", i)).collect();
        s.append_audit(&mut batch).await.unwrap();
        s.append_audit(&mut [rec("key.create", 6)]).await.unwrap();
        let v = s.verify_audit().await.unwrap();
        assert!(v.ok && v.records == 6, "{v:?}");

        let (rows, total) = s
            .audit(&AuditFilter {
                action: Some("operation".into()),
                limit: 2,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!((rows.len(), total, rows[0].seq), (2, 5, 5));

        // Pruning keeps the chain valid.
        assert_eq!(s.prune_audit(3).await.unwrap(), 2);
        assert!(s.verify_audit().await.unwrap().ok);

        // An edited field.
        sqlx::query("UPDATE audit_log SET actor = 'mallory' WHERE seq = 4")
            .execute(&s.pool)
            .await
            .unwrap();
        let v = s.verify_audit().await.unwrap();
        assert_eq!((v.ok, v.bad_seq), (false, Some(4)), "{v:?}");
        sqlx::query("UPDATE audit_log SET actor = 'ci' WHERE seq = 4")
            .execute(&s.pool)
            .await
            .unwrap();
        assert!(s.verify_audit().await.unwrap().ok);

        // A deleted middle record, then a deleted last one.
        sqlx::query("DELETE FROM audit_log WHERE seq = 4")
            .execute(&s.pool)
            .await
            .unwrap();
        assert!(!s.verify_audit().await.unwrap().ok);
        let (s, _d) = store().await;
        s.append_audit(&mut [rec("a", 1), rec("b", 2)])
            .await
            .unwrap();
        sqlx::query("DELETE FROM audit_log WHERE seq = 2")
            .execute(&s.pool)
            .await
            .unwrap();
        let v = s.verify_audit().await.unwrap();
        assert!(!v.ok, "{v:?}");
    }
}
