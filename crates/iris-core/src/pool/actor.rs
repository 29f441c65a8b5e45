//! The task that owns one session's agent process.
//!
//! Nobody else touches the process: the pool and the operations send
//! [`Command`]s. The actor queues turns, runs them one at a time, watches
//! for silence, restarts after a crash with `--resume`, and stops itself
//! when idle too long.

use std::collections::VecDeque;
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
    stream_items,
};
use super::{PoolInner, ProcState, SlotShared};

#[path = "permission.rs"]
mod permission;
use crate::bus::EventKind;
use crate::error::{IrisError, Result};
use crate::now_ms;
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
        }
    }

    fn grace(&self) -> Duration {
        Duration::from_millis(self.pool.settings().shutdown_grace)
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

    /// The next moment something must happen without outside input.
    fn deadline(&self) -> Option<Instant> {
        let limit = self.limit_deadline();
        match (self.next_deadline(), limit) {
            (Some(d), Some(l)) => Some(d.min(l)),
            (d, l) => d.or(l),
        }
    }

    /// When the running turn's own time limit (a job's `timeout`) runs out.
    fn limit_deadline(&self) -> Option<Instant> {
        let r = self.current.as_ref()?;
        if r.interrupt_sent.is_some() {
            return None;
        }
        Some(r.started + r.tracker.limit?)
    }

    fn next_deadline(&self) -> Option<Instant> {
        let s = self.pool.settings();
        if let Some(d) = self.approval_deadline() {
            // Waiting for a person is not silence: only the approval's own
            // timeout runs (and an interrupt's grace).
            return Some(match self.current.as_ref().and_then(|r| r.interrupt_sent) {
                Some(at) => d.min(at + self.grace()),
                None => d,
            });
        }
        match &self.current {
            Some(r) => Some(match r.interrupt_sent {
                Some(at) => at + self.grace(),
                None if r.fresh_process && !r.got_output => {
                    r.started + Duration::from_millis(s.spawn_timeout)
                }
                None => r.last_output + Duration::from_millis(s.response_timeout),
            }),
            None if self.idle() => Some(self.last_used + self.team.idle_timeout(&s)),
            None => None,
        }
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

    fn spawn_mode(&self) -> SessionMode {
        let id = self.session.id.clone();
        if self.session.afresh {
            return SessionMode::New(id);
        }
        match (&self.session.fork_of, self.session.started) {
            (_, true) => SessionMode::Resume(id),
            (Some(from), false) => SessionMode::Fork {
                from: from.clone(),
                new_id: id,
            },
            (None, false) => SessionMode::New(id),
        }
    }

    /// A claude process's way back to this Iris, when the API serves MCP.
    fn seat(&self) -> Option<super::seat::Seat> {
        if self.team.agent() != iris_agent::AgentKind::Claude {
            return None;
        }
        let url = self.pool.mcp_url.get()?;
        // It sees every team (a message outside `canMessage` is refused with
        // FORBIDDEN, audited, not hidden); its reading is limited to its own
        // team's conversations and messages (`Iris::own_session`, the ops).
        let teams = None;
        match super::seat::Seat::new(
            &self.pool.auth,
            url,
            &self.team.name,
            &self.session.id,
            teams,
        ) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(team = %self.team.name, error = %e, "no iris MCP server for this process");
                None
            }
        }
    }

    /// Refuse to start a process of a run-time team whose folder left the
    /// team roots since it was checked (a symlink swapped, a root removed).
    fn check_folder(&mut self) -> Result<()> {
        let Err(problem) = self.team.check_folder() else {
            return Ok(());
        };
        self.set_state(ProcState::Failed);
        let message = format!("team `{}`: {problem}", self.team.name);
        tracing::warn!(team = %self.team.name, "{message}; not started");
        self.publish(
            EventKind::ProcessError,
            None,
            json!({"team": self.team.name, "error": message}),
        );
        Err(IrisError::process(message).with_details(json!({"team": self.team.name})))
    }

    /// Start the persistent process if it is not running.
    async fn ensure_process(&mut self) -> Result<()> {
        if self.process.is_some() || !self.team.agent().is_persistent() {
            return Ok(());
        }
        self.set_state(ProcState::Spawning);
        self.check_folder()?;
        if !self.session.started {
            // The row handed to us may predate writes still in the recorder.
            self.pool.recorder.flush().await;
            if let Ok(Some(row)) = self.pool.store.session(&self.session.id).await {
                self.session.started = row.started;
            }
        }
        let seat = self.seat();
        let mut spec = self.team.launch_session(
            &self.spawn_mode(),
            &self.pool.echo_program,
            seat.as_ref().map(|s| (s.config(), s.token())),
        );
        if let Some(dir) = &self.session.worktree {
            spec.cwd = dir.clone();
        }
        match AgentProcess::spawn(&spec, self.pool.settings().max_line_bytes) {
            Ok(p) => {
                let pid = p.pid();
                self.process = Some(p);
                self.seat = seat;
                self.session.afresh = false;
                self.shared.pid.store(pid.unwrap_or(0), Ordering::Relaxed);
                self.shared.spawned_at.store(now_ms(), Ordering::Relaxed);
                self.set_state(ProcState::Ready);
                self.publish(
                    EventKind::ProcessSpawned,
                    None,
                    json!({"team": self.team.name, "pid": pid}),
                );
                tracing::info!(team = %self.team.name, session = %self.session.id, pid, "agent process spawned");
                self.record_state("ready");
                Ok(())
            }
            Err(e) => {
                self.set_state(ProcState::Failed);
                let message = match &e {
                    iris_agent::ProcessError::NotFound { program } => format!(
                        "team `{}`: agent binary `{}` was not found",
                        self.team.name,
                        short_program(program)
                    ),
                    iris_agent::ProcessError::MissingFolder { .. } => {
                        format!("team `{}`: its folder does not exist", self.team.name)
                    }
                    iris_agent::ProcessError::Spawn { program, .. } => {
                        format!(
                            "team `{}`: could not start `{}`",
                            self.team.name,
                            short_program(program)
                        )
                    }
                };
                tracing::warn!(team = %self.team.name, error = %e, "agent spawn failed");
                self.publish(
                    EventKind::ProcessError,
                    None,
                    json!({"team": self.team.name, "error": message}),
                );
                Err(IrisError::process(message).with_details(json!({"team": self.team.name})))
            }
        }
    }

    /// Start the next queued turn if nothing runs.
    async fn begin_next(&mut self) {
        if self.current.is_none()
            && let Some(team) = self.reconfigured.take()
        {
            self.retire_process("the team's configuration changed")
                .await;
            self.team = team;
        }
        while self.current.is_none() {
            let Some(job) = self.queue.iter_mut().find_map(VecDeque::pop_front) else {
                return;
            };
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            let fresh = self.process.is_none();
            if let Err(e) = self.ensure_process().await {
                self.finish_job(&job.tracker, TurnStatus::Failed, Some(e.message))
                    .await;
                continue;
            }
            let tracker = job.tracker;
            let now = Instant::now();
            let text = tracker.request.clone();
            tracker.set_running();
            self.set_state(ProcState::Busy);
            let at = now_ms();
            self.pool.recorder.write(StoreWrite::TurnStarted {
                id: tracker.id.clone(),
                at,
            });
            self.pool.recorder.write(StoreWrite::SessionUsed {
                id: self.session.id.clone(),
                at,
            });
            self.session.started = true;
            self.shared.turns.fetch_add(1, Ordering::Relaxed);
            self.publish(
                EventKind::TurnStarted,
                Some(&tracker.id),
                json!({"messageId": tracker.id}),
            );
            let sent = if self.team.agent().is_persistent() {
                match self.process.as_mut() {
                    Some(p) => p
                        .send(&protocol::user_message_line(&text))
                        .await
                        .map_err(|e| e.to_string()),
                    None => Err("no process".to_owned()),
                }
            } else {
                let mut spec = self.team.launch_turn(&text, &self.pool.echo_program);
                if let Some(dir) = &self.session.worktree {
                    spec.cwd = dir.clone();
                }
                let spawned = match self.team.check_folder() {
                    Ok(()) => AgentProcess::spawn(&spec, self.pool.settings().max_line_bytes)
                        .map_err(|e| e.to_string()),
                    Err(problem) => Err(problem),
                };
                match spawned {
                    Ok(p) => {
                        self.shared
                            .pid
                            .store(p.pid().unwrap_or(0), Ordering::Relaxed);
                        self.process = Some(p);
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            };
            self.current = Some(Running {
                tracker,
                started: now,
                last_output: now,
                got_output: false,
                fresh_process: fresh,
                deltas: String::new(),
                assistant_text: String::new(),
                tool_uses: Vec::new(),
                events: Vec::new(),
                events_dropped: 0,
                next_seq: 0,
                pending: Vec::new(),
                interrupt_sent: None,
                restarted: false,
            });
            if let Err(e) = sent {
                tracing::warn!(team = %self.team.name, error = %e, "could not hand the message to the agent");
                let message = format!(
                    "team `{}`: could not hand the message to the agent",
                    self.team.name
                );
                self.kill_process().await;
                self.end_turn(TurnStatus::Failed, Some(message), None).await;
            }
        }
    }

    /// Keep a raw event (bounded); returns its sequence number in the turn.
    fn record(&mut self, kind: &str, data: Value) -> u64 {
        let max = self.pool.settings().max_events_per_turn;
        let Some(r) = self.current.as_mut() else {
            return 0;
        };
        r.next_seq += 1;
        if r.events.len() < max {
            r.events.push(EventRow {
                seq: r.next_seq as i64,
                at: now_ms(),
                kind: kind.to_owned(),
                data,
            });
        } else {
            r.events_dropped += 1;
        }
        r.next_seq
    }

    /// Hand stream items to the turn's followers and the bus.
    /// Take stream items of the running turn. Chunks update the partial
    /// response at once; followers and the bus get them at the next
    /// [`Actor::flush_stream`], consecutive chunks merged into one.
    fn stream(&mut self, items: Vec<StreamItem>) {
        let Some(r) = self.current.as_mut() else {
            return;
        };
        for item in items {
            if item.kind == StreamKind::Chunk {
                let text = item.data["text"].as_str().unwrap_or_default();
                r.deltas.push_str(text);
                r.tracker.push_partial(text);
                if let Some(last) = r.pending.last_mut()
                    && last.kind == StreamKind::Chunk
                {
                    let merged =
                        format!("{}{text}", last.data["text"].as_str().unwrap_or_default());
                    last.data["text"] = merged.into();
                    last.seq = item.seq;
                    continue;
                }
            }
            r.pending.push(item);
        }
    }

    /// Hand the pending stream items to the turn's followers and the bus.
    fn flush_stream(&mut self) {
        let Some(r) = self.current.as_mut() else {
            return;
        };
        let id = r.tracker.id.clone();
        for item in std::mem::take(&mut r.pending) {
            let kind = match item.kind {
                StreamKind::Chunk => EventKind::Chunk,
                StreamKind::ToolUse => EventKind::ToolUse,
            };
            let mut data = item.data.clone();
            data["seq"] = item.seq.into();
            r.tracker.push_item(item);
            self.pool.bus.publish(
                kind,
                &self.team.name,
                Some(&self.session.id),
                Some(&id),
                data,
            );
        }
    }

    /// Handle the lines the agent has already written, without waiting.
    /// When the agent is faster than its readers this batches its chunks,
    /// so a crowd of subscribers gets fewer, larger events instead of
    /// slowing the agent down; an idle pipe costs nothing.
    async fn drain_ready(&mut self) {
        use futures_util::FutureExt;
        for _ in 0..256 {
            let Some(p) = self.process.as_mut() else {
                return;
            };
            match p.next_line().now_or_never() {
                Some(Some(Ok(line))) => self.on_line(line).await,
                Some(Some(Err(e))) => {
                    self.flush_stream();
                    return self.on_bad_output(e).await;
                }
                Some(None) => {
                    self.flush_stream();
                    return self.on_exit().await;
                }
                None => return,
            }
        }
    }

    async fn on_line(&mut self, line: String) {
        if let Some(r) = self.current.as_mut() {
            r.last_output = Instant::now();
            r.got_output = true;
        }
        if !self.team.agent().is_persistent() {
            // A command agent: every line is a chunk.
            let raw = Value::String(line);
            let seq = self.record("line", raw.clone());
            self.stream(stored_items(seq, "line", &raw));
            return;
        }
        let (event, raw) = match protocol::parse_line(&line) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(team = %self.team.name, error = %e, "skipping agent output that is not stream-json");
                return;
            }
        };
        let Some(turn_id) = self.current.as_ref().map(|r| r.tracker.id.clone()) else {
            if let AgentEvent::PermissionRequest { request_id, .. } = &event {
                // Nothing runs that it could be for: refuse, never leave it waiting.
                let line = protocol::permission_line(
                    request_id,
                    false,
                    &Value::Null,
                    "no message is running",
                );
                if let Some(p) = self.process.as_mut() {
                    let _ = p.send(&line).await;
                }
                return;
            }
            if !matches!(event, AgentEvent::ControlResponse { .. }) {
                tracing::debug!(team = %self.team.name, "agent output outside a turn");
            }
            return;
        };
        let kind = raw
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned();
        let lost = matches!(&event, AgentEvent::Result(r) if r.is_error) && lost_conversation(&raw);
        let seq = self.record(&kind, raw);
        if lost && self.start_afresh().await {
            return;
        }
        self.stream(stream_items(seq, &event));
        match event {
            AgentEvent::TextDelta(_) => {}
            AgentEvent::Assistant { text, tool_uses } => {
                if let Some(r) = self.current.as_mut() {
                    r.tool_uses.extend(tool_uses);
                    r.assistant_text.push_str(&text);
                }
            }
            AgentEvent::ToolResult {
                tool_use_id,
                is_error,
            } => {
                self.publish(
                    EventKind::ToolResult,
                    Some(&turn_id),
                    json!({"toolUseId": tool_use_id, "isError": is_error}),
                );
            }
            AgentEvent::Result(result) => {
                let interrupted = self
                    .current
                    .as_ref()
                    .is_some_and(|r| r.interrupt_sent.is_some());
                let (status, error) = if interrupted {
                    (TurnStatus::Cancelled, Some("cancelled".to_owned()))
                } else if result.is_error {
                    let reason = result
                        .text
                        .clone()
                        .filter(|t| !t.is_empty())
                        .or_else(|| result.subtype.clone())
                        .unwrap_or_else(|| "the agent reported an error".into());
                    (TurnStatus::Failed, Some(reason))
                } else {
                    (TurnStatus::Completed, None)
                };
                self.end_turn(status, error, Some(result)).await;
            }
            AgentEvent::PermissionRequest {
                request_id,
                tool_name,
                input,
                ..
            } => self.on_permission(request_id, tool_name, input).await,
            AgentEvent::ControlResponse { success, error, .. } => {
                if !success {
                    tracing::warn!(team = %self.team.name, error = ?error, "agent refused a control request");
                }
            }
            AgentEvent::Init { .. } | AgentEvent::Other { .. } => {}
        }
    }

    async fn on_bad_output(&mut self, e: LineError) {
        tracing::warn!(team = %self.team.name, error = %e, "bad agent output; restarting the process");
        self.kill_process().await;
        if self.current.is_some() {
            self.end_turn(
                TurnStatus::Failed,
                Some(format!("team `{}`: {e}", self.team.name)),
                None,
            )
            .await;
        }
    }

    /// The agent no longer has the conversation it was resumed with (Claude
    /// Code: "No conversation found with session ID"): start it afresh
    /// under the same id, once per turn, hand it the turn's message again,
    /// record that on the session and tell the caller. False when it does
    /// not apply (then the turn fails as reported).
    async fn start_afresh(&mut self) -> bool {
        let Some(r) = self.current.as_mut() else {
            return false;
        };
        if r.restarted || !r.fresh_process || r.interrupt_sent.is_some() {
            return false;
        }
        r.restarted = true;
        let tracker = r.tracker.clone();
        tracing::warn!(team = %self.team.name, session = %self.session.id, "the agent had lost this conversation; starting it afresh");
        self.kill_process().await;
        self.session.afresh = true;
        self.session.fork_of = None;
        self.pool.recorder.write(StoreWrite::SessionRestarted {
            id: self.session.id.clone(),
            at: now_ms(),
        });
        tracker.set_notice(
            "the agent no longer had this conversation, so Iris started it afresh: \
             it does not remember the earlier messages",
        );
        let sent = match self.ensure_process().await {
            Ok(()) => match self.process.as_mut() {
                Some(p) => p
                    .send(&protocol::user_message_line(&tracker.request))
                    .await
                    .map_err(|e| e.to_string()),
                None => Err("no process".to_owned()),
            },
            Err(e) => Err(e.message),
        };
        self.session.started = true;
        self.set_state(ProcState::Busy);
        if let Some(r) = self.current.as_mut() {
            let now = Instant::now();
            r.last_output = now;
            r.got_output = false;
            r.deltas.clear();
            r.assistant_text.clear();
            r.tool_uses.clear();
        }
        if let Err(e) = sent {
            let reason = format!(
                "team `{}`: starting the conversation afresh failed: {e}",
                self.team.name
            );
            self.end_turn(TurnStatus::Failed, Some(reason), None).await;
        }
        true
    }

    /// stdout closed: the process ended (a crash, or a command agent finishing).
    async fn on_exit(&mut self) {
        let Some(mut p) = self.process.take() else {
            return;
        };
        self.seat = None;
        self.expire_all("the agent's process ended").await;
        let status = p.wait_for(Duration::from_secs(2)).await;
        if status.is_none() {
            p.kill_now().await;
        }
        let code = status.and_then(|s| s.code());
        self.shared.pid.store(0, Ordering::Relaxed);
        if !self.team.agent().is_persistent() {
            if self.current.is_some() {
                match code {
                    Some(0) => self.end_turn(TurnStatus::Completed, None, None).await,
                    _ if self
                        .current
                        .as_ref()
                        .is_some_and(|r| r.interrupt_sent.is_some()) =>
                    {
                        self.end_turn(TurnStatus::Cancelled, Some("cancelled".into()), None)
                            .await
                    }
                    _ => {
                        let msg = format!(
                            "team `{}`: command exited with status {}",
                            self.team.name,
                            describe(code)
                        );
                        self.end_turn(TurnStatus::Failed, Some(msg), None).await
                    }
                }
            }
            self.set_state(ProcState::Ready);
            return;
        }
        tracing::warn!(team = %self.team.name, session = %self.session.id, code, stderr = %p.stderr_tail(), "agent process exited");
        self.publish(
            EventKind::ProcessTerminated,
            None,
            json!({"team": self.team.name, "exitCode": code}),
        );
        self.set_state(ProcState::Stopped);
        self.record_state("stopped");
        if let Some(r) = &self.current {
            let (status, msg) = if r.interrupt_sent.is_some() {
                (TurnStatus::Cancelled, "cancelled".to_owned())
            } else {
                (
                    TurnStatus::Failed,
                    format!(
                        "team `{}`: agent process exited with status {} during the turn",
                        self.team.name,
                        describe(code)
                    ),
                )
            };
            self.end_turn(status, Some(msg), None).await;
        }
    }

    /// Returns true when the actor has ended.
    async fn on_deadline(&mut self) -> bool {
        let Some(deadline) = self.deadline() else {
            return false;
        };
        if Instant::now() < deadline {
            return false;
        }
        if self.limit_deadline().is_some_and(|l| l <= Instant::now()) {
            let limit = self
                .current
                .as_ref()
                .and_then(|r| r.tracker.limit)
                .unwrap_or_default();
            let msg = format!(
                "team `{}`: the time limit of {} ms ran out",
                self.team.name,
                limit.as_millis()
            );
            tracing::warn!(team = %self.team.name, "{msg}; restarting the process");
            self.kill_process().await;
            self.end_turn(TurnStatus::TimedOut, Some(msg), None).await;
            return false;
        }
        let interrupt_due = self
            .current
            .as_ref()
            .and_then(|r| r.interrupt_sent)
            .is_some_and(|at| at + self.grace() <= Instant::now());
        if !interrupt_due {
            if self
                .approval_deadline()
                .is_some_and(|d| d <= Instant::now())
            {
                self.expire_due().await;
                return false;
            }
            if self.approval_deadline().is_some() {
                return false;
            }
        }
        // Silent because it waits on another team's answer (an `iris` tool
        // call): no hang; look again a silence later. (Checked when the
        // silence runs out, not on every line of output.)
        let silent = self
            .current
            .as_ref()
            .is_some_and(|r| r.interrupt_sent.is_none() && (r.got_output || !r.fresh_process));
        if silent && self.pool.waits_on_others(&self.session.id) {
            if let Some(r) = self.current.as_mut() {
                r.last_output = Instant::now();
            }
            return false;
        }
        let Some(r) = &self.current else {
            // Idle too long: leave the pool, unless a command is on its way.
            if !self.pool.retire(&self.shared, &mut self.rx) {
                self.last_used = Instant::now();
                return false;
            }
            tracing::info!(team = %self.team.name, session = %self.session.id, "idle timeout: stopping the process");
            self.stop_everything("idle timeout").await;
            return true;
        };
        let (status, msg) = if r.interrupt_sent.is_some() {
            (
                TurnStatus::Cancelled,
                "cancelled; the agent did not stop in time and was killed".to_owned(),
            )
        } else if r.fresh_process && !r.got_output {
            (
                TurnStatus::Failed,
                format!(
                    "team `{}`: the agent did not start within {} ms",
                    self.team.name,
                    self.pool.settings().spawn_timeout
                ),
            )
        } else {
            (
                TurnStatus::TimedOut,
                format!(
                    "team `{}`: no output from the agent for {} ms",
                    self.team.name,
                    self.pool.settings().response_timeout
                ),
            )
        };
        tracing::warn!(team = %self.team.name, "{msg}; restarting the process");
        self.kill_process().await;
        self.end_turn(status, Some(msg), None).await;
        false
    }

    async fn cancel(&mut self, turn_id: Option<&str>) -> bool {
        if let Some(id) = turn_id {
            for q in self.queue.iter_mut() {
                if let Some(pos) = q.iter().position(|j| j.tracker.id == id) {
                    let job = q.remove(pos);
                    self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                    if let Some(job) = job {
                        self.finish_job(
                            &job.tracker,
                            TurnStatus::Cancelled,
                            Some("cancelled".into()),
                        )
                        .await;
                    }
                    return true;
                }
            }
        }
        let Some(r) = self.current.as_mut() else {
            return false;
        };
        if turn_id.is_some_and(|id| id != r.tracker.id) {
            return false;
        }
        if r.interrupt_sent.is_some() {
            return true;
        }
        r.interrupt_sent = Some(Instant::now());
        if self.team.agent().is_persistent() {
            self.interrupt_seq += 1;
            let line = protocol::interrupt_line(&format!("iris_interrupt_{}", self.interrupt_seq));
            let sent = match self.process.as_mut() {
                Some(p) => p.send(&line).await.is_ok(),
                None => false,
            };
            if !sent {
                self.kill_process().await;
                self.end_turn(TurnStatus::Cancelled, Some("cancelled".into()), None)
                    .await;
            }
        } else {
            self.kill_process().await;
            self.end_turn(TurnStatus::Cancelled, Some("cancelled".into()), None)
                .await;
        }
        true
    }

    /// Cancel every queued turn and interrupt the running one.
    async fn cancel_pending(&mut self, reason: &str) {
        let jobs: Vec<TurnJob> = self.queue.iter_mut().flat_map(|q| q.drain(..)).collect();
        self.shared.queued.fetch_sub(jobs.len(), Ordering::AcqRel);
        for job in jobs {
            self.finish_job(&job.tracker, TurnStatus::Cancelled, Some(reason.to_owned()))
                .await;
        }
        if self.current.is_some() {
            self.cancel(None).await;
        }
    }

    /// Its running turn has ended after `StopWhenIdle`: stop, leave the
    /// pool, and cancel whatever was sent meanwhile.
    async fn leave(&mut self, reason: &str) {
        self.stop_everything(reason).await;
        self.pool.leave(&self.shared);
        self.rx.close();
        while let Ok(cmd) = self.rx.try_recv() {
            match cmd {
                Command::Turn(job) => {
                    self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                    self.finish_job(&job.tracker, TurnStatus::Cancelled, Some(reason.to_owned()))
                        .await;
                }
                Command::Wake(reply) => {
                    let _ = reply.send(Err(IrisError::new(
                        crate::error::ErrorKind::ServiceUnavailable,
                        reason.to_owned(),
                    )));
                }
                Command::Cancel { reply, .. } => {
                    let _ = reply.send(false);
                }
                Command::Stop { reply, .. } => {
                    let _ = reply.map(|r| r.send(()));
                }
                Command::Decide { .. } | Command::Reconfigure(_) | Command::StopWhenIdle { .. } => {
                }
            }
        }
    }

    /// End the actor: cancel everything, stop the process politely, then firmly.
    async fn stop_everything(&mut self, reason: &str) {
        self.set_state(ProcState::Stopping);
        self.cancel_pending(reason).await;
        if let Some(p) = self.process.take() {
            let status = p.shutdown(self.grace()).await;
            self.seat = None;
            self.expire_all("the agent's process was stopped").await;
            self.publish(
                EventKind::ProcessTerminated,
                None,
                json!({"team": self.team.name, "exitCode": status.and_then(|s| s.code())}),
            );
        }
        if self.current.is_some() {
            self.end_turn(TurnStatus::Cancelled, Some(reason.to_owned()), None)
                .await;
        }
        self.shared.pid.store(0, Ordering::Relaxed);
        self.set_state(ProcState::Stopped);
        self.record_state("stopped");
    }

    /// Stop the process politely between turns; the next turn starts a new
    /// one (resuming the conversation) with the team's configuration.
    async fn retire_process(&mut self, reason: &str) {
        let Some(p) = self.process.take() else { return };
        tracing::info!(team = %self.team.name, session = %self.session.id, reason, "restarting the agent's process");
        let status = p.shutdown(self.grace()).await;
        self.seat = None;
        self.expire_all("the agent's process was stopped").await;
        self.publish(
            EventKind::ProcessTerminated,
            None,
            json!({"team": self.team.name, "exitCode": status.and_then(|s| s.code()), "reason": reason}),
        );
        self.shared.pid.store(0, Ordering::Relaxed);
        self.set_state(ProcState::Stopped);
        self.record_state("stopped");
    }

    async fn kill_process(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill_now().await;
            self.seat = None;
            self.expire_all("the agent's process was stopped").await;
            self.shared.pid.store(0, Ordering::Relaxed);
            if self.team.agent().is_persistent() {
                self.publish(
                    EventKind::ProcessTerminated,
                    None,
                    json!({"team": self.team.name, "killed": true}),
                );
                self.set_state(ProcState::Stopped);
                self.record_state("stopped");
            }
        }
    }

    /// Finish the running turn.
    async fn end_turn(
        &mut self,
        status: TurnStatus,
        error: Option<String>,
        result: Option<TurnResult>,
    ) {
        self.flush_stream();
        // Its permission requests die with it.
        self.expire_all("the turn ended").await;
        let Some(r) = self.current.take() else { return };
        let result = result.unwrap_or_default();
        let response = match result
            .text
            .filter(|t| !t.is_empty() && status == TurnStatus::Completed)
        {
            Some(t) => t,
            None if !r.deltas.is_empty() => r.deltas,
            None => r.assistant_text,
        };
        let outcome = TurnOutcome {
            status,
            response,
            error,
            tool_uses: r.tool_uses,
            usage: result.usage,
            cost_usd: result.cost_usd,
            duration_ms: r.started.elapsed().as_millis() as u64,
            completed_at: 0, // set by `complete`
        };
        self.last_used = Instant::now();
        self.shared.last_used.store(now_ms(), Ordering::Relaxed);
        if self.process.is_some() || !self.team.agent().is_persistent() {
            self.set_state(ProcState::Ready);
        }
        self.complete(&r.tracker, outcome, r.events, r.events_dropped)
            .await;
    }

    /// Finish a turn that never ran.
    async fn finish_job(
        &mut self,
        tracker: &Arc<TurnTracker>,
        status: TurnStatus,
        error: Option<String>,
    ) {
        let outcome = TurnOutcome {
            status,
            response: String::new(),
            error,
            tool_uses: Vec::new(),
            usage: None,
            cost_usd: None,
            duration_ms: 0,
            completed_at: 0, // set by `complete`
        };
        self.complete(tracker, outcome, Vec::new(), 0).await;
    }

    /// Tell waiters, publish, then persist (waiters are not held up by the write).
    async fn complete(
        &self,
        tracker: &Arc<TurnTracker>,
        mut outcome: TurnOutcome,
        events: Vec<EventRow>,
        dropped: i64,
    ) {
        // One end time for memory and the record, so a reader that sees the
        // turn ended in memory before the write sees the same time.
        outcome.completed_at = now_ms();
        let finish = outcome.finish(dropped);
        let data = json!({
            "messageId": tracker.id,
            "status": outcome.status,
            "response": outcome.response,
            "error": outcome.error,
            "durationMs": outcome.duration_ms,
            "usage": outcome.usage,
            "costUsd": outcome.cost_usd,
        });
        if tracker.outcome().is_some() {
            return;
        }
        let team = self.team.name.clone();
        metrics::counter!("iris_turns_total", "team" => team.clone(), "status" => outcome.status.as_str())
            .increment(1);
        metrics::histogram!("iris_turn_duration_seconds", "team" => team)
            .record(outcome.duration_ms as f64 / 1000.0);
        // Subscribers hear of the end before waiters return, so a caller that
        // subscribes after its call returned never sees this turn's events.
        self.publish(EventKind::TurnCompleted, Some(&tracker.id), data);
        tracker.finish(outcome);
        self.pool.recorder.write(StoreWrite::TurnFinished {
            id: tracker.id.clone(),
            finish,
            events,
        });
        // Memory answers for the turn until the database has it.
        let pool = self.pool.clone();
        let id = tracker.id.clone();
        self.pool.recorder.then(move || pool.forget(&id));
    }
}

/// Whether a `result` line says the agent does not have the conversation
/// it was resumed with (Claude Code: `errors: ["No conversation found with
/// session ID: …"]`).
fn lost_conversation(raw: &Value) -> bool {
    raw.get("errors")
        .and_then(Value::as_array)
        .is_some_and(|e| {
            e.iter()
                .filter_map(Value::as_str)
                .any(|m| m.contains("No conversation found"))
        })
}

fn describe(code: Option<i32>) -> String {
    code.map(|c| c.to_string())
        .unwrap_or_else(|| "a signal".into())
}

/// The program's file name only: messages never show the server's paths.
fn short_program(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}
