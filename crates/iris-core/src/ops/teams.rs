//! Teams and their processes: status, wake, launch, sleep, wake-all, list.

use std::sync::Arc;
use std::time::Instant;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::auth::scope;
use crate::ctx::Ctx;
use crate::error::{IrisError, Result};
use crate::iris::Iris;
use crate::pool::ProcessInfo;
use crate::registry::{Operation, Runs};
use crate::team::Team;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TeamParams {
    #[schemars(length(min = 1, max = 64))]
    pub team: String,
    /// Whose conversation to wake; defaults to the caller's identity.
    #[serde(default)]
    #[schemars(length(max = 128))]
    pub from_team: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusParams {
    /// One team; all teams when absent.
    #[serde(default)]
    pub team: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SleepParams {
    #[schemars(length(min = 1, max = 64))]
    pub team: String,
    /// Stop even if a message is running (it is cancelled).
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WakeAllParams {
    /// Start all teams at once rather than one after another.
    #[serde(default = "yes")]
    pub parallel: bool,
    #[serde(default)]
    #[schemars(length(max = 128))]
    pub from_team: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListParams {
    #[serde(default)]
    pub include_process_details: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WakeResult {
    pub team: String,
    /// `awake`, or `failed` in wake-all results.
    pub status: String,
    pub session_id: String,
    pub pid: Option<u32>,
    /// Milliseconds the wake took.
    pub duration: u64,
    pub timestamp: i64,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LaunchResult {
    #[serde(flatten)]
    pub wake: WakeResult,
    /// Run this in a terminal to continue the conversation interactively.
    pub resume_command: String,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SleepResult {
    pub team: String,
    pub status: String,
    pub stopped: usize,
    pub timestamp: i64,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WakeAllEntry {
    pub team: String,
    pub status: String,
    pub session_id: Option<String>,
    pub pid: Option<u32>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WakeAllResult {
    pub results: Vec<WakeAllEntry>,
    pub parallel: bool,
    pub duration: u64,
    pub timestamp: i64,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeamStatus {
    pub team: String,
    pub awake: bool,
    pub busy: bool,
    pub queued: usize,
    pub processes: Vec<ProcessInfo>,
    pub timestamp: i64,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusResult {
    pub teams: Vec<TeamStatus>,
    pub total_processes: usize,
    pub max_processes: usize,
    pub timestamp: i64,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeamSummary {
    pub path: String,
    pub description: Option<String>,
    pub color: Option<String>,
    pub agent: String,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeamEntry {
    pub name: String,
    /// `awake` while any of its processes runs, else `asleep`.
    pub status: String,
    pub config: TeamSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<Vec<ProcessInfo>>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListResult {
    pub teams: Vec<TeamEntry>,
    pub total_teams: usize,
    pub awake_teams: usize,
    pub asleep_teams: usize,
    pub timestamp: i64,
}

fn is_running(p: &ProcessInfo) -> bool {
    matches!(p.state.as_str(), "spawning" | "ready" | "busy")
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GraphParams {
    /// How far back to count (ms); an hour by default, a week at most.
    #[serde(default = "an_hour")]
    #[schemars(range(min = 1000, max = 604_800_000))]
    pub window_ms: i64,
}

fn an_hour() -> i64 {
    3_600_000
}

/// A team in the graph.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GraphNode {
    pub name: String,
    /// A team (else a caller: a key's or user's name).
    pub team: bool,
    /// One of its processes is working on a message now.
    pub busy: bool,
    pub processes: usize,
    pub queued: usize,
}

/// Messages from one caller (or team) to a team within the window.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GraphEdge {
    pub from: String,
    pub to: String,
    pub count: i64,
    /// Of those, queued or running now.
    pub open: i64,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GraphResult {
    pub since: i64,
    pub nodes: Vec<GraphNode>,
    /// Busiest first.
    pub edges: Vec<GraphEdge>,
}

/// The teams the caller sees, the callers and teams that messaged them
/// within the window, and an edge per pair.
async fn graph(iris: &Iris, ctx: &Ctx, p: GraphParams) -> Result<GraphResult> {
    let since = crate::clock::now_ms() - p.window_ms;
    iris.recorder().flush().await;
    let pairs = iris
        .store()
        .message_pairs(since, ctx.principal.teams.as_deref())
        .await?;
    let teams = iris.teams().visible(ctx);
    let mut nodes: Vec<GraphNode> = teams
        .iter()
        .map(|t| {
            let s = status_of(iris, t);
            GraphNode {
                name: t.name.clone(),
                team: true,
                busy: s.busy,
                processes: s.processes.len(),
                queued: s.queued,
            }
        })
        .collect();
    // An agent sees the messages of its own team (to it or from it).
    let own = ctx.principal.agent_team();
    let mut edges = Vec::new();
    for pair in pairs {
        if own.is_some_and(|t| pair.to_team != t && pair.from_team != t) {
            continue;
        }
        // A team the caller may not see is not named to it.
        if iris.teams().named(&pair.from_team).is_some()
            && !ctx.principal.can_see_team(&pair.from_team)
        {
            continue;
        }
        // A team the caller does not see (deleted, or not its) is left out.
        if !nodes.iter().any(|n| n.team && n.name == pair.to_team) {
            continue;
        }
        if !nodes.iter().any(|n| n.name == pair.from_team) {
            nodes.push(GraphNode {
                name: pair.from_team.clone(),
                team: false,
                busy: false,
                processes: 0,
                queued: 0,
            });
        }
        edges.push(GraphEdge {
            from: pair.from_team,
            to: pair.to_team,
            count: pair.count,
            open: pair.open,
        });
    }
    Ok(GraphResult {
        since,
        nodes,
        edges,
    })
}

fn status_of(iris: &Iris, team: &Team) -> TeamStatus {
    let processes = iris.team_processes(&team.name);
    TeamStatus {
        team: team.name.clone(),
        awake: processes.iter().any(is_running),
        busy: processes.iter().any(|p| p.state == "busy"),
        queued: processes.iter().map(|p| p.queued).sum(),
        processes,
        timestamp: crate::clock::now_ms(),
    }
}

async fn wake(iris: &Iris, team: &Arc<Team>, from: &str) -> Result<WakeResult> {
    let started = Instant::now();
    let session = iris.conversations().session(from, &team.name, None).await?;
    let pid = iris.pool().wake(team, &session).await?;
    Ok(WakeResult {
        team: team.name.clone(),
        status: "awake".into(),
        session_id: session.id,
        pid,
        duration: started.elapsed().as_millis() as u64,
        timestamp: crate::clock::now_ms(),
    })
}

/// `text` as one word of a POSIX shell, whatever it holds (a folder named
/// with a quote must not become a command for whoever pastes the line).
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

pub(super) fn operations() -> Vec<Operation> {
    vec![
        Operation::new(
            "team_status",
            "Whether a team (or every team) is awake, busy, and what waits in its queue.",
            Some(scope::TEAMS_READ),
            false,
            |iris: Arc<Iris>, ctx: Ctx, p: StatusParams| async move {
                let teams = match p.team {
                    Some(name) => vec![iris.teams().get(&ctx, &name)?],
                    None => iris.teams().visible(&ctx),
                };
                let processes = iris.pool().processes();
                Ok(StatusResult {
                    teams: teams
                        .iter()
                        .map(|t| {
                            let mut s = status_of(&iris, t);
                            s.processes = s
                                .processes
                                .into_iter()
                                .map(ProcessInfo::with_memory)
                                .collect();
                            s
                        })
                        .collect(),
                    total_processes: processes.len(),
                    max_processes: iris.pool().settings().max_processes,
                    timestamp: crate::clock::now_ms(),
                })
            },
        ),
        Operation::new(
            "team_graph",
            "The teams and who messaged whom: an edge per (caller, team) with its messages in the last hour (or windowMs), those still open, and each team's processes.",
            Some(scope::TEAMS_READ),
            false,
            |iris: Arc<Iris>, ctx: Ctx, p: GraphParams| async move { graph(&iris, &ctx, p).await },
        ),
        Operation::new(
            "team_wake",
            "Start a team's agent process for the caller's conversation.",
            Some(scope::PROCESSES_MANAGE),
            true,
            |iris: Arc<Iris>, ctx: Ctx, p: TeamParams| async move {
                let team = iris.teams().get(&ctx, &p.team)?;
                wake(&iris, &team, &iris.access().speaker(&ctx, p.from_team)?).await
            },
        )
        .on_owner(Runs::OnTeamsOwner),
        Operation::new(
            "team_launch",
            "Wake a team and return the command that continues its conversation in a terminal.",
            Some(scope::PROCESSES_MANAGE),
            true,
            |iris: Arc<Iris>, ctx: Ctx, p: TeamParams| async move {
                let team = iris.teams().get(&ctx, &p.team)?;
                let woke = wake(&iris, &team, &iris.access().speaker(&ctx, p.from_team)?).await?;
                let resume_command = match team.agent() {
                    iris_agent::AgentKind::Claude => format!(
                        "cd {} && {} --resume {}",
                        shell_quote(&team.config.path),
                        shell_quote(team.profile.claude_path.as_deref().unwrap_or("claude")),
                        woke.session_id
                    ),
                    _ => format!("iris tell {} \"…\"", team.name),
                };
                Ok(LaunchResult {
                    wake: woke,
                    resume_command,
                })
            },
        )
        .on_owner(Runs::OnTeamsOwner),
        Operation::new(
            "team_sleep",
            "Stop a team's agent processes (force: even while a message runs).",
            Some(scope::PROCESSES_MANAGE),
            true,
            |iris: Arc<Iris>, ctx: Ctx, p: SleepParams| async move {
                let team = iris.teams().get(&ctx, &p.team)?;
                let status = status_of(&iris, &team);
                if !p.force && (status.busy || status.queued > 0) {
                    return Err(IrisError::conflict(format!(
                        "team `{}` is working; pass force to stop it anyway",
                        team.name
                    )));
                }
                let name = team.name.clone();
                let stopped = iris
                    .pool()
                    .stop_where(|x| x.team == name, "team put to sleep")
                    .await;
                Ok(SleepResult {
                    team: team.name.clone(),
                    status: "asleep".into(),
                    stopped: stopped.len(),
                    timestamp: crate::clock::now_ms(),
                })
            },
        )
        .on_owner(Runs::OnTeamsOwner),
        Operation::new(
            "team_wake_all",
            "Wake every team (in parallel by default).",
            Some(scope::PROCESSES_MANAGE),
            true,
            |iris: Arc<Iris>, ctx: Ctx, p: WakeAllParams| async move {
                let started = Instant::now();
                let from = iris.access().speaker(&ctx, p.from_team)?;
                let teams: Vec<Arc<Team>> = iris.teams().visible(&ctx);
                let entry = |team: &Arc<Team>, r: Result<WakeResult>| match r {
                    Ok(w) => WakeAllEntry {
                        team: team.name.clone(),
                        status: w.status,
                        session_id: Some(w.session_id),
                        pid: w.pid,
                        error: None,
                    },
                    Err(e) => WakeAllEntry {
                        team: team.name.clone(),
                        status: "failed".into(),
                        session_id: None,
                        pid: None,
                        error: Some(e.message),
                    },
                };
                let results = if p.parallel {
                    let outcomes =
                        futures_util::future::join_all(teams.iter().map(|t| wake(&iris, t, &from)))
                            .await;
                    teams
                        .iter()
                        .zip(outcomes)
                        .map(|(t, r)| entry(t, r))
                        .collect()
                } else {
                    let mut out = Vec::new();
                    for t in &teams {
                        out.push(entry(t, wake(&iris, t, &from).await));
                    }
                    out
                };
                Ok(WakeAllResult {
                    results,
                    parallel: p.parallel,
                    duration: started.elapsed().as_millis() as u64,
                    timestamp: crate::clock::now_ms(),
                })
            },
        ),
        Operation::new(
            "list_teams",
            "Every team the caller may see, with whether it is awake.",
            Some(scope::TEAMS_READ),
            false,
            |iris: Arc<Iris>, ctx: Ctx, p: ListParams| async move {
                let mut teams = Vec::new();
                for t in iris.teams().visible(&ctx) {
                    let processes = iris.team_processes(&t.name);
                    let awake = processes.iter().any(is_running);
                    teams.push(TeamEntry {
                        name: t.name.clone(),
                        status: if awake { "awake" } else { "asleep" }.into(),
                        config: TeamSummary {
                            path: t.config.path.clone(),
                            description: t.config.description.clone(),
                            color: t.config.color.clone(),
                            agent: t.agent().as_str().into(),
                        },
                        process: p.include_process_details.then(|| {
                            processes
                                .into_iter()
                                .map(ProcessInfo::with_memory)
                                .collect()
                        }),
                    });
                }
                let awake = teams.iter().filter(|t| t.status == "awake").count();
                Ok(ListResult {
                    total_teams: teams.len(),
                    awake_teams: awake,
                    asleep_teams: teams.len() - awake,
                    teams,
                    timestamp: crate::clock::now_ms(),
                })
            },
        ),
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn shell_quoting_keeps_a_quote_inside_one_word() {
        assert_eq!(super::shell_quote("/a b"), "'/a b'");
        assert_eq!(super::shell_quote("x'; rm -rf ~ #"), "'x'\\''; rm -rf ~ #'");
    }
}
