//! Logs, time, and message records.

use std::sync::Arc;

use iris_storage::{HistoryFilter, TurnRow};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::auth::scope;
pub use crate::clock::iso8601;
use crate::ctx::Ctx;
use crate::error::IrisError;
use crate::iris::Iris;
use crate::logs::LogRecord;
use crate::registry::Operation;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogsParams {
    /// Lowest level shown: trace, debug, info, warn or error.
    #[serde(default = "default_level")]
    #[schemars(regex(pattern = r"^(trace|debug|info|warn|error)$"))]
    pub level: String,
    /// Only records about this team.
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default = "default_log_limit")]
    #[schemars(range(min = 1, max = 10000))]
    pub limit: usize,
}

fn default_level() -> String {
    "info".into()
}
fn default_log_limit() -> usize {
    100
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogsResult {
    #[schemars(with = "Vec<serde_json::Value>")]
    pub logs: Vec<LogRecord>,
    pub count: usize,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DateResult {
    pub timestamp: i64,
    pub iso: String,
    pub timezone: String,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionCounts {
    pub total: i64,
    /// Sessions with a live process.
    pub active: usize,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessCounts {
    pub total: usize,
    pub max_processes: usize,
}

/// Seed 001's system status.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusResult {
    pub sessions: SessionCounts,
    pub processes: ProcessCounts,
    /// Milliseconds since start.
    pub uptime: i64,
    pub version: &'static str,
    pub timestamp: i64,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MessageParams {
    #[schemars(length(min = 1, max = 64))]
    pub message_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HistoryParams {
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub session_id: Option<crate::session_id::SessionId>,
    #[serde(default)]
    #[schemars(regex(pattern = r"^(queued|running|completed|failed|cancelled|timed_out)$"))]
    pub status: Option<String>,
    /// Only messages created at or after this time (Unix ms).
    #[serde(default)]
    pub since: Option<i64>,
    #[serde(default = "default_page")]
    #[schemars(range(min = 1))]
    pub page: i64,
    #[serde(default = "default_page_limit")]
    #[schemars(range(min = 1, max = 500))]
    pub limit: i64,
}

fn default_page() -> i64 {
    1
}
fn default_page_limit() -> i64 {
    50
}

/// A message record (seed 002's message status).
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageRecord {
    #[serde(flatten)]
    #[schemars(with = "serde_json::Value")]
    pub turn: TurnRow,
    /// Milliseconds from creation to the end, once ended.
    pub duration: Option<i64>,
    /// The tools the agent asked permission for and what was decided
    /// (`get_message` of an ended turn): `{toolName, input, decision,
    /// reason, decidedBy, approvalId}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<serde_json::Value>,
}

impl From<TurnRow> for MessageRecord {
    fn from(turn: TurnRow) -> Self {
        MessageRecord {
            duration: turn.completed_at.map(|c| c - turn.created_at),
            turn,
            permissions: Vec::new(),
        }
    }
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pagination {
    pub page: i64,
    pub limit: i64,
    pub total: i64,
    pub has_next: bool,
}

impl Pagination {
    /// Rows to skip for `page` (from 1) of `limit` rows. Saturating: a
    /// page far past the end (`page=9223372036854775806`) is an empty
    /// page, not an overflow.
    pub fn offset(page: i64, limit: i64) -> i64 {
        page.saturating_sub(1).saturating_mul(limit)
    }

    /// Page `page` of `limit` rows out of `total`.
    pub fn of(page: i64, limit: i64, total: i64) -> Self {
        Pagination {
            page,
            limit,
            total,
            has_next: page.saturating_mul(limit) < total,
        }
    }
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryResult {
    pub messages: Vec<MessageRecord>,
    pub pagination: Pagination,
}

/// Days since 1970-01-01 of a civil date (the inverse of `clock::civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix milliseconds of `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SS[.fff]Z` or with
/// a `±HH:MM` offset.
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    let num = |a: usize, b: usize| -> Option<i64> { s.get(a..b)?.parse().ok() };
    let (y, m, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    if s.get(4..5) != Some("-")
        || s.get(7..8) != Some("-")
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&d)
    {
        return None;
    }
    let day = days_from_civil(y, m as u32, d as u32) * 86_400_000;
    if s.len() == 10 {
        return Some(day);
    }
    if !matches!(s.get(10..11), Some("T") | Some(" ")) {
        return None;
    }
    let (h, mi, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = s.get(19..)?;
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.chars().take_while(char::is_ascii_digit).count();
        let f = &frac[..digits];
        millis = format!("{f:0<3}").get(..3)?.parse::<i64>().ok()?;
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" | "" => 0,
        o => {
            let sign = match o.get(..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            let oh: i64 = o.get(1..3)?.parse().ok()?;
            let om: i64 = o.get(4..6)?.parse().ok()?;
            sign * (oh * 3600 + om * 60) * 1000
        }
    };
    Some(day + (h * 3600 + mi * 60 + sec) * 1000 + millis - offset)
}

pub(super) fn operations() -> Vec<Operation> {
    vec![
        Operation::new(
            "get_logs",
            "Recent log records of this Iris, newest last.",
            Some(scope::PROCESSES_READ),
            false,
            |_iris: Arc<Iris>, ctx: Ctx, p: LogsParams| async move {
                super::visible(&ctx, p.team.as_deref())?;
                // A caller limited to some teams sees their records only,
                // not Iris's own (which may name other teams).
                let visible = |t: Option<&str>| match &ctx.principal.teams {
                    None => true,
                    Some(_) => t.is_some_and(|t| ctx.principal.can_see_team(t)),
                };
                let logs = crate::logs::ring().query(&p.level, p.team.as_deref(), visible, p.limit);
                Ok(LogsResult {
                    count: logs.len(),
                    logs,
                })
            },
        ),
        Operation::new(
            "get_date",
            "The server's current time.",
            None,
            false,
            |_iris: Arc<Iris>, _ctx: Ctx, _p: NoParams| async move {
                let now = crate::clock::now_ms();
                Ok(DateResult {
                    timestamp: now,
                    iso: iso8601(now),
                    timezone: "UTC".into(),
                })
            },
        ),
        Operation::new(
            "get_status",
            "Sessions, processes, uptime and version of this Iris.",
            Some(scope::TEAMS_READ),
            false,
            |iris: Arc<Iris>, _ctx: Ctx, _p: NoParams| async move {
                let processes = iris.pool().process_count();
                let now = crate::clock::now_ms();
                Ok(StatusResult {
                    sessions: SessionCounts {
                        total: iris.conversations().count(),
                        active: processes,
                    },
                    processes: ProcessCounts {
                        total: processes,
                        max_processes: iris.pool().settings().max_processes,
                    },
                    uptime: iris.uptime_ms(),
                    version: env!("CARGO_PKG_VERSION"),
                    timestamp: now,
                })
            },
        ),
        Operation::new(
            "get_message",
            "One message: its status, request, response and timings.",
            Some(scope::MESSAGES_READ),
            false,
            |iris: Arc<Iris>, ctx: Ctx, p: MessageParams| async move {
                message_record(&iris, &ctx, &p.message_id).await
            },
        ),
        Operation::new(
            "message_history",
            "Messages, newest first, filtered by team, caller, session, status and time, with pagination.",
            Some(scope::MESSAGES_READ),
            false,
            |iris: Arc<Iris>, ctx: Ctx, p: HistoryParams| async move {
                super::visible(&ctx, p.team.as_deref())?;
                let limit = p.limit;
                let page = p.page;
                // An agent reads what its team asked, or what was asked of it.
                let from_team = match ctx.principal.agent_team() {
                    Some(own) if p.team.as_deref() != Some(own) => Some(own.to_owned()),
                    _ => p.from,
                };
                iris.recorder().flush().await;
                let (rows, total) = iris
                    .store()
                    .turns(&HistoryFilter {
                        to_team: p.team,
                        from_team,
                        session_id: p.session_id.map(crate::session_id::SessionId::into_string),
                        status: p.status,
                        since: p.since,
                        teams: ctx.principal.teams.clone(),
                        limit,
                        offset: Pagination::offset(page, limit),
                        oldest_first: false,
                    })
                    .await?;
                let messages: Vec<MessageRecord> =
                    rows.into_iter().map(MessageRecord::from).collect();
                Ok(HistoryResult {
                    messages,
                    pagination: Pagination::of(page, limit, total),
                })
            },
        ),
    ]
}

/// Message `message_id` as the caller may see it (memory ahead of the
/// database for a running turn): another team's, or for an agent one its
/// team neither asked nor answered, is `NOT_FOUND`.
pub(crate) async fn message_record(
    iris: &Iris,
    ctx: &Ctx,
    message_id: &str,
) -> crate::error::Result<MessageRecord> {
    iris.recorder().flush().await;
    let mut turn = iris
        .store()
        .turn(message_id)
        .await?
        .filter(|t| ctx.principal.can_see_team(&t.to_team))
        .filter(|t| {
            ctx.principal
                .agent_team()
                .is_none_or(|own| t.from_team == own || t.to_team == own)
        })
        .ok_or_else(|| IrisError::not_found(format!("no message `{}`", message_id)))?;
    if let Some(live) = iris.pool().live_turn(message_id) {
        // Running, or ended but not yet written: memory is ahead of the database.
        match live.outcome() {
            // Ended: the whole end, as its write will leave the record.
            Some(o) => turn.finish(o.finish(turn.events_dropped)),
            None => {
                turn.status = live.status().as_str().to_owned();
                turn.response = Some(live.partial());
            }
        }
    }
    let mut record = MessageRecord::from(turn);
    record.permissions = iris
        .store()
        .turn_events_of_kind(message_id, "permission")
        .await?
        .into_iter()
        .map(|e| e.data)
        .collect();
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_far_past_the_end_are_empty_not_an_overflow() {
        assert_eq!(Pagination::offset(1, 50), 0);
        assert_eq!(Pagination::offset(3, 50), 100);
        assert_eq!(Pagination::offset(i64::MAX - 1, 50), i64::MAX);
        assert!(!Pagination::of(i64::MAX - 1, 50, 10).has_next);
        assert!(Pagination::of(1, 50, 51).has_next);
    }

    #[test]
    fn iso_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        for ms in [0, 1_697_567_890_123, 951_782_400_000, -86_400_000] {
            assert_eq!(parse_time(&iso8601(ms)), Some(ms));
        }
        assert_eq!(parse_time("2023-10-17"), Some(1_697_500_800_000));
        assert_eq!(
            parse_time("2023-10-17T20:38:10+02:00"),
            Some(1_697_567_890_000)
        );
        assert_eq!(parse_time("2023-13-01"), None);
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(iso8601(1_697_567_890_123), "2023-10-17T18:38:10.123Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
