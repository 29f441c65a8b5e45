//! The process pool: one actor per live session, within `maxProcesses`.
//!
//! The pool only routes and enforces limits; every process is owned by its
//! actor ([`actor`]). Sends to actors happen under the pool lock, and an
//! actor leaves the pool under the same lock only when its inbox is empty,
//! so no command is ever lost to an actor that is going away.

mod actor;
pub mod seat;
mod transcript;
pub mod turn;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::bus::Events;
use crate::config::Settings;
use crate::error::{ErrorKind, IrisError, Result};
use crate::recorder::Recorder;
use crate::team::Team;
use actor::{Actor, Command, SessionInfo, TurnJob};
use iris_storage::{SessionRow, Store};
use turn::{Priority, TurnTracker};

/// The state machine of an agent process (DESIGN section 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum ProcState {
    Stopped = 0,
    Spawning = 1,
    Ready = 2,
    Busy = 3,
    Stopping = 4,
    Failed = 5,
}

impl ProcState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => ProcState::Spawning,
            2 => ProcState::Ready,
            3 => ProcState::Busy,
            4 => ProcState::Stopping,
            5 => ProcState::Failed,
            _ => ProcState::Stopped,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ProcState::Stopped => "stopped",
            ProcState::Spawning => "spawning",
            ProcState::Ready => "ready",
            ProcState::Busy => "busy",
            ProcState::Stopping => "stopping",
            ProcState::Failed => "failed",
        }
    }
}

/// What anyone may read about a slot without asking its actor.
pub(crate) struct SlotShared {
    pub team: String,
    pub session_id: String,
    pub from: String,
    generation: u64,
    pub state: AtomicU8,
    pub queued: AtomicUsize,
    pub last_used: AtomicI64,
    pub pid: AtomicU32,
    pub spawned_at: AtomicI64,
    pub turns: AtomicU64,
}

struct Slot {
    tx: mpsc::UnboundedSender<Command>,
    shared: Arc<SlotShared>,
}

/// A snapshot of one live session process, for status operations.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessInfo {
    pub team: String,
    pub session_id: String,
    pub from_team: String,
    pub state: String,
    pub pid: Option<u32>,
    pub queued: usize,
    pub messages_processed: u64,
    pub last_used: i64,
    pub spawned_at: Option<i64>,
    /// Its resident memory (KiB), where the system says (Linux's
    /// `/proc/<pid>/status`); read only by the views that show it
    /// ([`ProcessInfo::with_memory`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_kib: Option<u64>,
}

impl ProcessInfo {
    /// This snapshot with its process's resident memory read.
    pub fn with_memory(mut self) -> Self {
        self.rss_kib = self.pid.and_then(rss_kib);
        self
    }
}

/// The resident memory of process `pid` (KiB), if the system says.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The processes by session, and their number readable without the lock.
#[derive(Default)]
struct Slots {
    map: Mutex<HashMap<String, Slot>>,
    /// The map's length as of the last unlock: `GET /status` reads it on
    /// every call, and locking the mutex there wrote its cache line from
    /// every core on every call.
    count: AtomicUsize,
}

/// The slots, locked; the count is brought up to date when it is dropped.
struct SlotsGuard<'a> {
    map: std::sync::MutexGuard<'a, HashMap<String, Slot>>,
    count: &'a AtomicUsize,
}

impl Slots {
    fn lock(&self) -> Option<SlotsGuard<'_>> {
        let map = self.map.lock().ok()?;
        Some(SlotsGuard {
            map,
            count: &self.count,
        })
    }
}

impl std::ops::Deref for SlotsGuard<'_> {
    type Target = HashMap<String, Slot>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl std::ops::DerefMut for SlotsGuard<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.map
    }
}

impl Drop for SlotsGuard<'_> {
    fn drop(&mut self) {
        self.count.store(self.map.len(), Ordering::Release);
    }
}

pub(crate) struct PoolInner {
    slots: Slots,
    live: Mutex<HashMap<String, Arc<TurnTracker>>>,
    generation: AtomicU64,
    /// Swapped whole when the configuration is reloaded.
    settings: std::sync::RwLock<Arc<Settings>>,
    pub store: Store,
    pub recorder: Recorder,
    pub bus: Arc<dyn Events>,
    pub echo_program: PathBuf,
    /// Issues the credentials of claude teams' `iris` MCP server.
    pub auth: Arc<iris_auth::Auth>,
    /// This Iris's `/mcp`, once the API serves it: claude teams started
    /// after that get it as their `iris` MCP server (see [`seat`]).
    pub mcp_url: std::sync::OnceLock<String>,
    /// Pending approvals of live processes: approval id → session id.
    pub approvals: Mutex<HashMap<String, String>>,
    /// What each agent process may reach.
    pub sandbox: Arc<crate::sandbox::Sandbox>,
}

#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

fn info(s: &SlotShared) -> ProcessInfo {
    let pid = s.pid.load(Ordering::Relaxed);
    let spawned = s.spawned_at.load(Ordering::Relaxed);
    ProcessInfo {
        team: s.team.clone(),
        session_id: s.session_id.clone(),
        from_team: s.from.clone(),
        state: ProcState::from_u8(s.state.load(Ordering::Relaxed))
            .as_str()
            .to_owned(),
        pid: (pid != 0).then_some(pid),
        queued: s.queued.load(Ordering::Relaxed),
        messages_processed: s.turns.load(Ordering::Relaxed),
        last_used: s.last_used.load(Ordering::Relaxed),
        spawned_at: (spawned != 0).then_some(spawned),
        rss_kib: None,
    }
}

impl PoolInner {
    /// The settings in force.
    pub(crate) fn settings(&self) -> Arc<Settings> {
        self.settings
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// An idle actor asks to leave. Refused (false) if a command is waiting.
    pub(crate) fn retire(
        &self,
        shared: &SlotShared,
        rx: &mut mpsc::UnboundedReceiver<Command>,
    ) -> bool {
        let Some(mut slots) = self.slots.lock() else {
            return true;
        };
        if !rx.is_empty() {
            return false;
        }
        if slots
            .get(&shared.session_id)
            .is_some_and(|s| s.shared.generation == shared.generation)
        {
            slots.remove(&shared.session_id);
        }
        rx.close();
        true
    }

    /// An actor that stopped when idle leaves the pool.
    pub(crate) fn leave(&self, shared: &SlotShared) {
        if let Some(mut slots) = self.slots.lock()
            && slots
                .get(&shared.session_id)
                .is_some_and(|s| s.shared.generation == shared.generation)
        {
            slots.remove(&shared.session_id);
        }
    }

    /// Whether the agent of conversation `session_id` waits on a message it
    /// sent to another team (its silence is then no hang).
    pub(crate) fn waits_on_others(&self, session_id: &str) -> bool {
        self.live.lock().is_ok_and(|live| {
            live.values()
                .any(|t| t.asked_from.as_deref() == Some(session_id) && !t.status().is_final())
        })
    }

    /// A turn has been persisted; it no longer needs to be found in memory.
    pub(crate) fn forget(&self, turn_id: &str) {
        if let Ok(mut live) = self.live.lock() {
            live.remove(turn_id);
        }
    }
}

impl Pool {
    pub fn new(
        settings: Settings,
        store: Store,
        recorder: Recorder,
        bus: Arc<dyn Events>,
        echo_program: PathBuf,
        auth: Arc<iris_auth::Auth>,
        sandbox: Arc<crate::sandbox::Sandbox>,
    ) -> Self {
        Pool {
            inner: Arc::new(PoolInner {
                slots: Slots::default(),
                live: Mutex::new(HashMap::new()),
                generation: AtomicU64::new(0),
                settings: std::sync::RwLock::new(Arc::new(settings)),
                store,
                recorder,
                bus,
                echo_program,
                auth,
                mcp_url: std::sync::OnceLock::new(),
                approvals: Mutex::new(HashMap::new()),
                sandbox,
            }),
        }
    }

    /// The sandbox service its processes are confined by.
    pub fn sandbox(&self) -> &Arc<crate::sandbox::Sandbox> {
        &self.inner.sandbox
    }

    /// Where this Iris serves MCP (`http://host:port/mcp`): claude teams'
    /// processes started from now on can call it back. Set once.
    pub fn serve_mcp_at(&self, url: String) {
        let _ = self.inner.mcp_url.set(url);
    }

    /// Whether a live process waits for `approval_id`.
    pub fn awaits(&self, approval_id: &str) -> bool {
        self.inner
            .approvals
            .lock()
            .is_ok_and(|p| p.contains_key(approval_id))
    }

    /// The approvals this node's processes wait for.
    pub fn awaited(&self) -> Vec<String> {
        self.inner
            .approvals
            .lock()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Hand the decision recorded in `row` (allowed or denied) to the
    /// process that waits for it; false when it is undecided or nobody
    /// waits any more.
    pub fn hand_on(&self, row: &iris_storage::ApprovalRow) -> bool {
        let allow = match row.status.as_str() {
            "allowed" => true,
            "denied" => false,
            _ => return false,
        };
        let by = row.decided_by.clone().unwrap_or_default();
        let message = row.reason.clone().unwrap_or_else(|| {
            if allow {
                format!("allowed by {by}")
            } else {
                format!("denied by {by}")
            }
        });
        self.decide(&row.id, allow, message, row.updated_input.clone(), by)
    }

    /// Hand a decision to the process that waits for `approval_id`; false
    /// when none does any more.
    pub fn decide(
        &self,
        approval_id: &str,
        allow: bool,
        message: String,
        updated_input: Option<serde_json::Value>,
        by: String,
    ) -> bool {
        let Some(session) = self
            .inner
            .approvals
            .lock()
            .ok()
            .and_then(|p| p.get(approval_id).cloned())
        else {
            return false;
        };
        let Ok(slots) = self.lock() else {
            return false;
        };
        let answer = actor::Answer {
            allow,
            message,
            updated_input,
            by,
        };
        slots.get(&session).is_some_and(|slot| {
            slot.tx
                .send(Command::Decide {
                    approval_id: approval_id.to_owned(),
                    answer,
                })
                .is_ok()
        })
    }

    /// The turn running in conversation `session_id`, if one is.
    pub fn running_turn(&self, session_id: &str) -> Option<Arc<TurnTracker>> {
        let live = self.inner.live.lock().ok()?;
        live.values()
            .find(|t| t.session_id == session_id && t.status() == turn::TurnStatus::Running)
            .cloned()
    }

    fn lock(&self) -> Result<SlotsGuard<'_>> {
        self.inner
            .slots
            .lock()
            .ok_or_else(|| IrisError::internal("using the process pool", "lock poisoned"))
    }

    /// Find or create the slot of `session`, evicting the least recently used
    /// idle process if the pool is full. Called with the lock held.
    fn slot<'a>(
        &self,
        slots: &'a mut HashMap<String, Slot>,
        team: &Arc<Team>,
        session: &SessionRow,
    ) -> Result<&'a mut Slot> {
        let alive = slots.get(&session.id).is_some_and(|s| !s.tx.is_closed());
        if !alive {
            slots.remove(&session.id);
            if slots.len() >= self.inner.settings().max_processes {
                let victim = slots
                    .iter()
                    .filter(|(_, s)| {
                        s.shared.queued.load(Ordering::Acquire) == 0
                            && matches!(
                                ProcState::from_u8(s.shared.state.load(Ordering::Acquire)),
                                ProcState::Ready | ProcState::Stopped | ProcState::Failed
                            )
                    })
                    .min_by_key(|(_, s)| s.shared.last_used.load(Ordering::Acquire))
                    .map(|(k, _)| k.clone());
                let Some(victim) = victim else {
                    return Err(IrisError::new(
                        ErrorKind::PoolExhausted,
                        format!(
                            "all {} agent processes are busy; try again later",
                            self.inner.settings().max_processes
                        ),
                    )
                    .with_details(
                        serde_json::json!({"maxProcesses": self.inner.settings().max_processes}),
                    ));
                };
                if let Some(v) = slots.remove(&victim) {
                    tracing::info!(team = %v.shared.team, session = %victim, "evicting the least recently used idle process");
                    let _ = v.tx.send(Command::Stop {
                        reason: "evicted to make room".into(),
                        reply: None,
                    });
                }
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let shared = Arc::new(SlotShared {
                team: team.name.clone(),
                session_id: session.id.clone(),
                from: session.from_team.clone(),
                generation: self.inner.generation.fetch_add(1, Ordering::Relaxed),
                state: AtomicU8::new(ProcState::Stopped as u8),
                queued: AtomicUsize::new(0),
                last_used: AtomicI64::new(crate::clock::now_ms()),
                pid: AtomicU32::new(0),
                spawned_at: AtomicI64::new(0),
                turns: AtomicU64::new(0),
            });
            let info = SessionInfo {
                id: session.id.clone(),
                worktree: session.worktree.as_ref().map(std::path::PathBuf::from),
                fork_of: session.fork_of.clone(),
                started: session.started,
                afresh: false,
            };
            let actor = Actor::new(self.inner.clone(), shared.clone(), team.clone(), info, rx);
            tokio::spawn(actor.run());
            slots.insert(session.id.clone(), Slot { tx, shared });
        }
        slots
            .get_mut(&session.id)
            .ok_or_else(|| IrisError::internal("using the process pool", "slot vanished"))
    }

    /// Queue a turn on the session's process.
    pub fn submit(
        &self,
        team: &Arc<Team>,
        session: &SessionRow,
        tracker: Arc<TurnTracker>,
        priority: Priority,
    ) -> Result<()> {
        let mut slots = self.lock()?;
        let waiting: usize = slots
            .values()
            .filter(|s| s.shared.team == team.name)
            .map(|s| s.shared.queued.load(Ordering::Acquire))
            .sum();
        let max = self.inner.settings().max_queue_per_team;
        if waiting >= max {
            return Err(IrisError::new(
                ErrorKind::QueueFull,
                format!("team `{}` already has {max} messages waiting", team.name),
            )
            .with_details(serde_json::json!({"team": team.name, "maxQueuePerTeam": max})));
        }
        let slot = self.slot(&mut slots, team, session)?;
        slot.shared.queued.fetch_add(1, Ordering::AcqRel);
        slot.shared
            .last_used
            .store(crate::clock::now_ms(), Ordering::Relaxed);
        if let Ok(mut live) = self.inner.live.lock() {
            live.insert(tracker.id.clone(), tracker.clone());
        }
        slot.tx
            .send(Command::Turn(TurnJob { tracker, priority }))
            .map_err(|_| IrisError::internal("queueing a turn", "actor gone"))
    }

    /// Start the session's process now; returns its pid.
    pub async fn wake(&self, team: &Arc<Team>, session: &SessionRow) -> Result<Option<u32>> {
        let (reply, rx) = oneshot::channel();
        {
            let mut slots = self.lock()?;
            let slot = self.slot(&mut slots, team, session)?;
            slot.tx
                .send(Command::Wake(reply))
                .map_err(|_| IrisError::internal("waking a team", "actor gone"))?;
        }
        rx.await.map_err(|_| {
            IrisError::process(format!(
                "team `{}`: the process stopped while starting",
                team.name
            ))
        })?
    }

    /// Cancel the running turn of a session (or a queued one by id).
    pub async fn cancel(&self, session_id: &str, turn_id: Option<String>) -> bool {
        let (reply, rx) = oneshot::channel();
        {
            let Ok(slots) = self.lock() else { return false };
            let Some(slot) = slots.get(session_id) else {
                return false;
            };
            if slot.tx.send(Command::Cancel { turn_id, reply }).is_err() {
                return false;
            }
        }
        rx.await.unwrap_or(false)
    }

    /// Stop the processes of the sessions chosen by `which`; waits until they are down.
    pub async fn stop_where(
        &self,
        which: impl Fn(&ProcessInfo) -> bool,
        reason: &str,
    ) -> Vec<ProcessInfo> {
        let mut waits = Vec::new();
        let mut stopped = Vec::new();
        if let Ok(mut slots) = self.lock() {
            let keys: Vec<String> = slots
                .iter()
                .filter(|(_, s)| which(&info(&s.shared)))
                .map(|(k, _)| k.clone())
                .collect();
            for k in keys {
                if let Some(slot) = slots.remove(&k) {
                    stopped.push(info(&slot.shared));
                    let (reply, rx) = oneshot::channel();
                    if slot
                        .tx
                        .send(Command::Stop {
                            reason: reason.to_owned(),
                            reply: Some(reply),
                        })
                        .is_ok()
                    {
                        waits.push(rx);
                    }
                }
            }
        }
        for w in waits {
            let _ = w.await;
        }
        stopped
    }

    /// Every live session process.
    pub fn processes(&self) -> Vec<ProcessInfo> {
        let Ok(slots) = self.lock() else {
            return Vec::new();
        };
        let mut out: Vec<ProcessInfo> = slots.values().map(|s| info(&s.shared)).collect();
        out.sort_by(|a, b| {
            (&a.team, &a.from_team, &a.session_id).cmp(&(&b.team, &b.from_team, &b.session_id))
        });
        out
    }

    /// How many processes the pool holds (what `processes().len()` says,
    /// without copying each one's description).
    pub fn process_count(&self) -> usize {
        self.inner.slots.count.load(Ordering::Acquire)
    }

    /// A turn still in memory (queued or running, or just finished).
    pub fn live_turn(&self, id: &str) -> Option<Arc<TurnTracker>> {
        self.inner.live.lock().ok()?.get(id).cloned()
    }

    /// Stop everything (Iris is shutting down).
    pub async fn shutdown(&self) {
        self.stop_where(|_| true, "Iris is shutting down").await;
    }

    /// The settings in force (they change when the configuration is reloaded).
    pub fn settings(&self) -> Arc<Settings> {
        self.inner.settings()
    }

    /// New settings, from a reloaded configuration: limits and timeouts
    /// apply from the next time they are read (new processes, new turns).
    pub fn set_settings(&self, settings: Settings) {
        if let Ok(mut s) = self.inner.settings.write() {
            *s = Arc::new(settings);
        }
    }

    /// A team's configuration changed: its processes take `team` and
    /// restart with it once their running turn has ended.
    /// Let the processes `which` selects finish their running turn, then
    /// stop them (queued turns are cancelled with `reason` at once).
    pub fn stop_when_idle(&self, which: impl Fn(&ProcessInfo) -> bool, reason: &str) {
        if let Ok(slots) = self.lock() {
            for slot in slots.values().filter(|s| which(&info(&s.shared))) {
                let _ = slot.tx.send(Command::StopWhenIdle {
                    reason: reason.to_owned(),
                });
            }
        }
    }

    pub fn reconfigure(&self, team: &Arc<Team>) {
        if let Ok(slots) = self.lock() {
            for slot in slots.values().filter(|s| s.shared.team == team.name) {
                let _ = slot.tx.send(Command::Reconfigure(team.clone()));
            }
        }
    }
}
