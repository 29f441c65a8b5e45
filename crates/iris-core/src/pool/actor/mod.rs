//! The task that owns one session's agent process.
//!
//! Nobody else touches the process: the pool and the operations send
//! [`Command`]s. The actor queues turns, runs them one at a time, watches
//! for silence, restarts after a crash with `--resume`, and stops itself
//! when idle too long.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use iris_agent::protocol::{self, AgentEvent, TurnResult};
use iris_agent::{AgentProcess, LineError, SessionMode, ToolUse};
use iris_storage::{EventRow, StoreWrite};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::turn::{
    Priority, StreamItem, StreamKind, TurnOutcome, TurnStatus, TurnTracker, stored_items,
    stream_items, tool_result_data,
};
use super::{PoolInner, ProcState, SlotShared};

mod deadline;
mod permission;
mod process;
mod running;

use crate::bus::EventKind;
use crate::clock::now_ms;
use crate::error::{IrisError, Result};
use crate::team::Team;
pub(crate) use permission::Answer;

/// What the rest of Iris may ask of an actor.
pub(crate) enum Command {
    Turn(TurnJob),
    /// Start the process now (team_wake); answers when it is up.
    Wake(oneshot::Sender<Result<Option<u32>>>),
    /// Cancel the running turn (or a queued one by id); answers whether one was found.
    Cancel {
        turn_id: Option<String>,
        reply: oneshot::Sender<bool>,
    },
    /// Someone decided a pending approval of this process.
    Decide {
        approval_id: String,
        answer: Answer,
    },
    /// The team's configuration changed: use it, restarting the process
    /// once no turn runs.
    Reconfigure(Arc<Team>),
    /// Finish the running turn, then stop the process and end the actor;
    /// queued turns (and any that still arrive) are cancelled with `reason`.
    StopWhenIdle {
        reason: String,
    },
    /// Stop the process and end the actor; pending turns are cancelled with `reason`.
    Stop {
        reason: String,
        reply: Option<oneshot::Sender<()>>,
    },
}

pub(crate) struct TurnJob {
    pub tracker: Arc<TurnTracker>,
    pub priority: Priority,
}

/// The session the actor serves.
pub(crate) struct SessionInfo {
    pub id: String,
    /// Its own git worktree (the folder the agent works in), if it has one.
    pub worktree: Option<std::path::PathBuf>,
    pub fork_of: Option<String>,
    /// The agent has seen a message: respawns resume.
    pub started: bool,
    /// The agent had lost the conversation: the next spawn starts it anew
    /// under the same id, whatever the record says.
    pub afresh: bool,
}

struct Running {
    tracker: Arc<TurnTracker>,
    started: Instant,
    last_output: Instant,
    /// Output seen since this turn began (the spawn timeout applies until then).
    got_output: bool,
    fresh_process: bool,
    deltas: String,
    assistant_text: String,
    tool_uses: Vec<ToolUse>,
    /// When each tool use not yet answered by its result was seen.
    tool_started: HashMap<String, Instant>,
    events: Vec<EventRow>,
    events_dropped: i64,
    /// Agent output lines seen in this turn (stored or not).
    next_seq: u64,
    /// Stream items not yet handed to followers (see `flush_stream`).
    pending: Vec<StreamItem>,
    interrupt_sent: Option<Instant>,
    /// The turn was handed to a fresh conversation once already (see
    /// `start_afresh`).
    restarted: bool,
}

/// Why the actor woke up.
enum Wake {
    Command(Option<Command>),
    Line(Option<std::result::Result<String, LineError>>),
    Deadline,
}

pub(crate) struct Actor {
    pool: Arc<PoolInner>,
    shared: Arc<SlotShared>,
    team: Arc<Team>,
    session: SessionInfo,
    rx: mpsc::UnboundedReceiver<Command>,
    process: Option<AgentProcess>,
    /// The `iris` MCP server of a claude process; dropped with the process.
    seat: Option<super::seat::Seat>,
    /// Permission requests waiting for a decision.
    awaiting: Vec<permission::Awaiting>,
    queue: [VecDeque<TurnJob>; 3],
    current: Option<Running>,
    /// The team's new configuration: taken, and the process restarted,
    /// when no turn runs.
    reconfigured: Option<Arc<Team>>,
    /// Stop once the running turn has ended (its team was removed).
    stop_when_idle: Option<String>,
    last_used: Instant,
    interrupt_seq: u64,
    /// A claude process's transcript file and working folder: saved to
    /// the database after each turn.
    transcript: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

async fn read_line(p: &mut Option<AgentProcess>) -> Option<std::result::Result<String, LineError>> {
    match p {
        Some(p) => p.next_line().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl Actor {
    pub(crate) fn new(
        pool: Arc<PoolInner>,
        shared: Arc<SlotShared>,
        team: Arc<Team>,
        session: SessionInfo,
        rx: mpsc::UnboundedReceiver<Command>,
    ) -> Self {
        Actor {
            pool,
            shared,
            team,
            session,
            rx,
            process: None,
            seat: None,
            awaiting: Vec::new(),
            queue: Default::default(),
            current: None,
            reconfigured: None,
            stop_when_idle: None,
            last_used: Instant::now(),
            interrupt_seq: 0,
            transcript: None,
        }
    }

    fn set_state(&self, state: ProcState) {
        let old = self.shared.state.swap(state as u8, Ordering::AcqRel);
        if old != state as u8 {
            self.publish(
                EventKind::ProcessState,
                None,
                json!({"state": state.as_str()}),
            );
        }
    }

    fn publish(&self, kind: EventKind, turn_id: Option<&str>, data: Value) {
        self.pool
            .bus
            .publish(kind, &self.team.name, Some(&self.session.id), turn_id, data);
    }

    fn record_state(&self, state: &'static str) {
        self.pool.recorder.write(StoreWrite::ProcessState {
            session_id: self.session.id.clone(),
            state,
        });
    }

    fn idle(&self) -> bool {
        self.current.is_none() && self.queue.iter().all(VecDeque::is_empty)
    }

    async fn next_wake(&mut self) -> Wake {
        let deadline = self.deadline();
        tokio::select! {
            cmd = self.rx.recv() => Wake::Command(cmd),
            line = read_line(&mut self.process) => Wake::Line(line),
            _ = sleep_until(deadline) => Wake::Deadline,
        }
    }

    pub(crate) async fn run(mut self) {
        loop {
            if let Some(reason) = self.stop_when_idle.clone()
                && self.current.is_none()
            {
                self.leave(&reason).await;
                return;
            }
            self.begin_next().await;
            match self.next_wake().await {
                Wake::Command(Some(cmd)) => {
                    if let Some(reply) = self.on_command(cmd).await {
                        self.stop_everything("stopped").await;
                        let _ = reply.map(|r| r.send(()));
                        return;
                    }
                }
                Wake::Command(None) => {
                    self.stop_everything("the pool shut down").await;
                    return;
                }
                Wake::Line(Some(Ok(line))) => {
                    self.on_line(line).await;
                    self.drain_ready().await;
                    self.flush_stream();
                }
                Wake::Line(Some(Err(e))) => self.on_bad_output(e).await,
                Wake::Line(None) => self.on_exit().await,
                Wake::Deadline => {
                    if self.on_deadline().await {
                        return;
                    }
                }
            }
        }
    }

    /// Handle a command; `Some(reply)` means stop and end the actor.
    async fn on_command(&mut self, cmd: Command) -> Option<Option<oneshot::Sender<()>>> {
        match cmd {
            Command::Turn(job) => {
                if let Some(reason) = self.stop_when_idle.clone() {
                    self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                    self.finish_job(&job.tracker, TurnStatus::Cancelled, Some(reason))
                        .await;
                    return None;
                }
                let idx = job.priority as usize;
                self.queue[idx].push_back(job);
            }
            Command::StopWhenIdle { reason } => {
                let jobs: Vec<TurnJob> = self.queue.iter_mut().flat_map(|q| q.drain(..)).collect();
                self.shared.queued.fetch_sub(jobs.len(), Ordering::AcqRel);
                for job in jobs {
                    self.finish_job(&job.tracker, TurnStatus::Cancelled, Some(reason.clone()))
                        .await;
                }
                self.stop_when_idle = Some(reason);
            }
            Command::Wake(reply) => {
                let r = self
                    .ensure_process()
                    .await
                    .map(|_| self.process.as_ref().and_then(AgentProcess::pid));
                self.last_used = Instant::now();
                let _ = reply.send(r);
            }
            Command::Cancel { turn_id, reply } => {
                let found = self.cancel(turn_id.as_deref()).await;
                let _ = reply.send(found);
            }
            Command::Decide {
                approval_id,
                answer,
            } => self.on_decision(&approval_id, answer).await,
            // Taken up between turns: the running turn ends under the
            // configuration it started with.
            Command::Reconfigure(team) => self.reconfigured = Some(team),
            Command::Stop { reason, reply } => {
                self.cancel_pending(&reason).await;
                return Some(reply);
            }
        }
        None
    }
}
