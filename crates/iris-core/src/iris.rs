//! The runtime: configuration, teams, storage, bus and pool held together,
//! with the few domain actions the operations are built from.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use iris_storage::{SessionRow, Store, StoreWrite, TurnFinish, TurnRow};

use crate::bus::Bus;
use crate::config::{Config, TeamPolicy};
use crate::ctx::Ctx;
use crate::error::{IrisError, Result};
use crate::now_ms;
use crate::pool::turn::{Priority, TurnTracker};
use crate::pool::{Pool, ProcessInfo};
use crate::recorder::Recorder;
use crate::team::Team;
use iris_auth::{Auth, Principal};

/// Options that do not come from the configuration file.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// The `iris` binary, which runs the built-in echo agent.
    pub echo_program: PathBuf,
    /// Events a bus subscriber may fall behind before it is dropped.
    pub bus_capacity: usize,
    /// Start the teams marked `prewarm` (off for one-shot CLI commands).
    pub prewarm: bool,
    /// Fail turns a previous run left unfinished and reset process states.
    /// Off for one-shot CLI commands: a server may be running on the same
    /// database, and its turns are not theirs to fail.
    pub recover: bool,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            echo_program: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("iris")),
            bus_capacity: 1024,
            prewarm: true,
            recover: true,
        }
    }
}

/// What to send, to whom.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub from: String,
    pub to: String,
    pub text: String,
    pub session_id: Option<String>,
    pub priority: Priority,
    pub kind: &'static str,
    /// The chain this message continues (an answer delivered back with
    /// `notify`); empty for everything else.
    pub continues: Vec<String>,
    /// Run the conversation in its own git worktree (else as the team says).
    pub isolation: Option<crate::worktree::Isolation>,
}

pub struct Iris {
    pub config: Config,
    /// What teams may run and where; replaced by a reload.
    policy: RwLock<Arc<TeamPolicy>>,
    teams: RwLock<BTreeMap<String, Arc<Team>>>,
    pub store: Store,
    pub recorder: Recorder,
    /// Keys, users, rate limits and the audit trail.
    pub auth: Arc<Auth>,
    pub bus: Arc<Bus>,
    pub pool: Pool,
    /// Jobs (`execute`) and their webhooks.
    pub jobs: crate::jobs::Jobs,
    pub started_at: i64,
    /// Sessions in the database, kept in memory so status calls never query.
    session_count: std::sync::atomic::AtomicI64,
    /// Serialises session creation; also guards the cache inside.
    sessions: tokio::sync::Mutex<SessionCache>,
    /// Held by a configuration reload from reading the file to applying it.
    pub(crate) reloading: tokio::sync::Mutex<()>,
    /// Held while a conversation gets its worktree (rare; keeps two first
    /// messages of one conversation from both creating it).
    worktrees: tokio::sync::Mutex<()>,
}

/// Sessions already looked up: the default id of each (from, to) pair and
/// each row by id. `started` in a cached row may be stale; the pool's actor
/// reads it fresh before it spawns.
#[derive(Default)]
struct SessionCache {
    defaults: HashMap<(String, String), String>,
    rows: HashMap<String, SessionRow>,
}

impl Iris {
    /// Open the database, recover from a previous run, and warm the teams
    /// marked `prewarm`.
    pub async fn start(config: Config, options: StartOptions) -> Result<Arc<Iris>> {
        let store = Store::open(&config.database_path())
            .await
            .map_err(|e| IrisError::internal("opening the database", e))?;
        let failed = if options.recover {
            // No process of a previous run waits for an approval any more.
            let expired = store
                .expire_pending_approvals("Iris restarted; the agent's process is gone", now_ms())
                .await?;
            if !expired.is_empty() {
                tracing::warn!(approvals = ?expired, "pending approvals of a previous run expired");
            }
            store.recover(now_ms()).await?
        } else {
            0
        };
        let session_count = store.count_sessions().await?;
        if failed > 0 {
            tracing::warn!(
                failed,
                "turns left unfinished by a previous run were marked failed"
            );
        }
        crate::logs::ring().set_capacity(config.settings.log_buffer);
        let bus = Arc::new(Bus::new(options.bus_capacity));
        let auth = Auth::start(store.clone(), config.auth_settings()).await?;
        auth.spawn_upkeep();
        let recorder = Recorder::start(store.clone());
        // Only a server runs jobs and sends webhooks.
        let deliverer = if options.recover {
            let secret = match config.webhooks.signing_secret.as_str() {
                "" => {
                    let fresh = hex::encode(iris_auth::secret::random_bytes::<32>()?);
                    store.meta_init("webhook_signing_secret", &fresh).await?
                }
                s => s.to_owned(),
            };
            let d = iris_webhooks::Deliverer::start(
                store.clone(),
                config.webhooks.delivery_options(secret),
            )
            .map_err(|e| IrisError::internal("starting webhooks", e))?;
            Some(d)
        } else {
            None
        };
        let jobs = crate::jobs::Jobs::new(config.jobs.concurrency_per_team, deliverer);
        let pool = Pool::new(
            config.settings.clone(),
            store.clone(),
            recorder.clone(),
            bus.clone(),
            options.echo_program,
            auth.clone(),
        );
        let policy = config.team_policy();
        let teams = teams_of(&config, &policy, store.saved_teams().await?);
        let iris = Arc::new(Iris {
            config,
            policy: RwLock::new(Arc::new(policy)),
            teams: RwLock::new(teams),
            store,
            recorder,
            auth,
            bus,
            pool,
            jobs,
            started_at: now_ms(),
            session_count: std::sync::atomic::AtomicI64::new(session_count),
            sessions: tokio::sync::Mutex::new(SessionCache::default()),
            reloading: tokio::sync::Mutex::new(()),
            worktrees: tokio::sync::Mutex::new(()),
        });
        iris.reload_webhooks().await?;
        iris.start_jobs().await?;
        if options.recover {
            iris.spawn_history_pruning();
        }
        let prewarm = if options.prewarm {
            iris.teams()
        } else {
            Vec::new()
        };
        for team in prewarm.into_iter().filter(|t| t.config.prewarm) {
            let iris2 = iris.clone();
            tokio::spawn(async move {
                let from = Principal::local().name;
                let woke = async {
                    let session = iris2.session(&from, &team.name, None).await?;
                    iris2.pool.wake(&team, &session).await
                };
                match woke.await {
                    Ok(pid) => tracing::info!(team = %team.name, pid, "prewarmed"),
                    Err(e) => tracing::warn!(team = %team.name, error = %e, "prewarm failed"),
                }
            });
        }
        Ok(iris)
    }

    /// Prune the history past `history.retainDays`: now, then hourly.
    fn spawn_history_pruning(self: &Arc<Self>) {
        let days = self.config.history.retain_days;
        if days == 0 {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(iris) = weak.upgrade() else { return };
                let before = now_ms() - i64::from(days) * 86_400_000;
                iris.recorder.flush().await;
                match iris.store.prune_history(before).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(turns = n, days, "pruned the message history"),
                    Err(e) => tracing::warn!(error = %e, "pruning the message history"),
                }
                drop(iris);
                tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
            }
        });
    }

    /// Record an audit event as `ctx`'s caller, off the request path.
    pub fn audit(&self, ctx: &Ctx, event: iris_auth::AuditEvent) {
        self.auth
            .audit
            .record(event.by(&ctx.principal).from(&ctx.origin));
    }

    /// Add or replace a team (created or changed at run time).
    pub(crate) fn put_team(&self, team: Arc<Team>) {
        if let Ok(mut teams) = self.teams.write() {
            teams.insert(team.name.clone(), team);
        }
    }

    /// What teams may run and where, as the running configuration says.
    pub fn team_policy(&self) -> Arc<TeamPolicy> {
        self.policy
            .read()
            .map(|p| p.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    pub(crate) fn set_team_policy(&self, policy: TeamPolicy) {
        match self.policy.write() {
            Ok(mut p) => *p = Arc::new(policy),
            Err(e) => *e.into_inner() = Arc::new(policy),
        }
    }

    /// Replace every team at once (a reload).
    pub(crate) fn set_teams(&self, teams: BTreeMap<String, Arc<Team>>) {
        match self.teams.write() {
            Ok(mut t) => *t = teams,
            Err(e) => *e.into_inner() = teams,
        }
    }

    /// Remove a team (deleted at run time).
    pub(crate) fn remove_team(&self, name: &str) {
        if let Ok(mut teams) = self.teams.write() {
            teams.remove(name);
        }
    }

    pub fn teams(&self) -> Vec<Arc<Team>> {
        self.teams
            .read()
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default()
    }

    /// A team the caller may see.
    pub fn team(&self, ctx: &Ctx, name: &str) -> Result<Arc<Team>> {
        if !ctx.principal.can_see_team(name) {
            return Err(IrisError::team_not_found(name));
        }
        self.teams
            .read()
            .ok()
            .and_then(|t| t.get(name).cloned())
            .ok_or_else(|| IrisError::team_not_found(name))
    }

    /// The session for an exact (from, to) pair, or the named one; created on
    /// first use. A named session must belong to `to`.
    pub async fn session(
        &self,
        from: &str,
        to: &str,
        session_id: Option<&str>,
    ) -> Result<SessionRow> {
        let mut cache = self.sessions.lock().await;
        let key = (from.to_owned(), to.to_owned());
        let id = match session_id {
            Some(id) => match crate::session_id::SessionId::parse(id) {
                Some(id) => Some(id.into_string()),
                None => return Err(IrisError::validation("sessionId", "must be a UUID")),
            },
            None => cache.defaults.get(&key).cloned(),
        };
        if let Some(row) = id.as_ref().and_then(|id| cache.rows.get(id)) {
            return check_team(row.clone(), to);
        }
        let found = match &id {
            Some(id) => self.store.session(id).await?,
            None => self.store.default_session(from, to).await?,
        };
        let row = match found {
            Some(row) => check_team(row, to)?,
            None => {
                self.create_session(from, to, id.as_deref(), session_id.is_none(), None)
                    .await?
            }
        };
        if row.is_default {
            cache.defaults.insert(key, row.id.clone());
        }
        cache.rows.insert(row.id.clone(), row.clone());
        Ok(row)
    }

    /// How many sessions exist.
    pub fn session_count(&self) -> i64 {
        self.session_count
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Delete a session with its history, and forget it.
    pub(crate) async fn delete_session(&self, id: &str) -> Result<bool> {
        self.recorder.flush().await;
        let deleted = self.store.delete_session(id).await?;
        if deleted {
            self.session_count
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.forget_session(id).await;
        Ok(deleted)
    }

    /// Forget a cached session (after reboot or delete changed it).
    pub(crate) async fn forget_session(&self, id: &str) {
        let mut cache = self.sessions.lock().await;
        cache.rows.remove(id);
        cache.defaults.retain(|_, v| v != id);
    }

    /// An existing session: the named one, or the default of the pair.
    pub async fn existing_session(
        &self,
        from: &str,
        to: &str,
        session_id: Option<&str>,
    ) -> Result<SessionRow> {
        // What these sessions are used for reads their turns: see every write first.
        self.recorder.flush().await;
        let found = match session_id {
            Some(id) => self.store.session(id).await?.filter(|s| s.to_team == to),
            None => self.store.default_session(from, to).await?,
        };
        found.ok_or_else(|| match session_id {
            Some(id) => IrisError::session_not_found(format!("`{id}` for team `{to}`")),
            None => IrisError::session_not_found(format!("from `{from}` to `{to}`")),
        })
    }

    pub(crate) async fn create_session(
        &self,
        from: &str,
        to: &str,
        id: Option<&str>,
        is_default: bool,
        fork_of: Option<String>,
    ) -> Result<SessionRow> {
        let now = now_ms();
        let row = SessionRow {
            id: id
                .map(str::to_owned)
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            from_team: from.to_owned(),
            to_team: to.to_owned(),
            is_default,
            fork_of,
            started: false,
            message_count: 0,
            process_state: "stopped".into(),
            created_at: now,
            last_used_at: now,
            restarted_at: None,
            worktree: None,
        };
        self.store.insert_session(&row).await?;
        self.session_count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(row)
    }

    /// Queue a message as a new turn; returns its tracker at once.
    pub async fn send(&self, ctx: &Ctx, out: Outgoing) -> Result<Arc<TurnTracker>> {
        let team = self.team(ctx, &out.to)?;
        let chain = self.chain(ctx, &team.name, &out.continues)?;
        let session = self
            .session(&out.from, &out.to, out.session_id.as_deref())
            .await?;
        self.own_session(ctx, &session)?;
        let session = self.isolated(&team, session, out.isolation).await?;
        // The team as it is now: a reload may have changed or removed it
        // while the session was looked up (a process started with the old
        // one would keep it).
        let team = self
            .team_named(&team.name)
            .ok_or_else(|| IrisError::team_not_found(&team.name))?;
        let tracker = Arc::new(
            TurnTracker::new(
                format!("msg_{}", ulid::Ulid::new()),
                session.id.clone(),
                team.name.clone(),
                out.from.clone(),
                out.text,
            )
            .with_chain(chain)
            .asked_from(ctx.principal.agent_team().map(|_| ctx.principal.id.clone())),
        );
        self.recorder.write(StoreWrite::InsertTurn(TurnRow {
            id: tracker.id.clone(),
            session_id: session.id.clone(),
            from_team: out.from,
            to_team: team.name.clone(),
            kind: out.kind.to_owned(),
            status: "queued".into(),
            request: tracker.request.clone(),
            response: None,
            error: None,
            tool_uses: None,
            usage: None,
            cost_usd: None,
            created_at: tracker.created_at,
            started_at: None,
            completed_at: None,
            events_dropped: 0,
            chain: tracker.chain.clone(),
            caller: Some(ctx.principal.actor()),
        }));
        if let Err(e) = self
            .pool
            .submit(&team, &session, tracker.clone(), out.priority)
        {
            // Refused before it could run: the record says so.
            self.recorder.write(StoreWrite::TurnFinished {
                id: tracker.id.clone(),
                finish: TurnFinish {
                    status: "failed".into(),
                    error: Some(e.message.clone()),
                    completed_at: now_ms(),
                    ..Default::default()
                },
                events: Vec::new(),
            });
            return Err(e);
        }
        self.bus.publish(
            crate::bus::EventKind::TurnQueued,
            &team.name,
            Some(&session.id),
            Some(&tracker.id),
            serde_json::json!({"messageId": tracker.id, "from": tracker.from}),
        );
        Ok(tracker)
    }

    /// Give a conversation its own git worktree before its agent starts.
    /// A conversation that already started keeps its folder: the agent's
    /// history is kept per folder, and moving would lose it (asked for on
    /// the call: `VALIDATION_ERROR`; by the team's option: it stays).
    /// The conversation as its isolation wants it: with its own worktree
    /// when the call (`asked`) or the team says `worktree` and it has none
    /// yet. Every way a conversation starts goes through here (messages,
    /// streams, jobs, every transport), so isolation holds whatever starts it.
    pub(crate) async fn isolated(
        &self,
        team: &Team,
        session: SessionRow,
        asked: Option<crate::worktree::Isolation>,
    ) -> Result<SessionRow> {
        let isolation = asked.unwrap_or(team.config.isolation);
        if isolation == crate::worktree::Isolation::Worktree && session.worktree.is_none() {
            return self.give_worktree(team, session, asked.is_some()).await;
        }
        Ok(session)
    }

    async fn give_worktree(
        &self,
        team: &Team,
        session: SessionRow,
        asked: bool,
    ) -> Result<SessionRow> {
        let _one = self.worktrees.lock().await;
        // Another message of this conversation may have made it meanwhile,
        // or started it in the team's folder (written by the recorder).
        self.recorder.flush().await;
        let current = self.store.session(&session.id).await?.unwrap_or(session);
        if current.worktree.is_some() {
            self.forget_session(&current.id).await;
            return Ok(current);
        }
        if current.started {
            if asked {
                return Err(IrisError::validation(
                    "isolation",
                    "this conversation already started in the team's folder; a worktree is for a new conversation (another sessionId)",
                ));
            }
            return Ok(current);
        }
        // Git runs in the team's folder: a run-time team's must still be
        // under a root, and so must the repository a worktree checks out.
        team.check_folder()
            .and_then(|()| team.check_repository())
            .map_err(|problem| {
                IrisError::new(
                    crate::error::ErrorKind::Forbidden,
                    format!("team `{}`: {problem}", team.name),
                )
            })?;
        let dir = crate::worktree::create(&self.config.home, &team.name, team.path(), &current.id)
            .await?;
        let dir = dir.display().to_string();
        self.store.set_worktree(&current.id, Some(&dir)).await?;
        let id = current.id.clone();
        self.pool
            .stop_where(
                |p| p.session_id == id,
                "the conversation moves to its own worktree",
            )
            .await;
        self.forget_session(&current.id).await;
        tracing::info!(team = %team.name, session = %current.id, worktree = %dir, "the conversation has its own git worktree");
        Ok(SessionRow {
            worktree: Some(dir),
            ..current
        })
    }

    /// Messages waiting per team, every team named (0 when none wait):
    /// what health and metrics report.
    pub fn queue_depths(&self) -> BTreeMap<String, usize> {
        let mut depths: BTreeMap<String, usize> =
            self.teams().iter().map(|t| (t.name.clone(), 0)).collect();
        for p in self.pool.processes() {
            if let Some(d) = depths.get_mut(&p.team) {
                *d += p.queued;
            }
        }
        depths
    }

    /// How many processes are in each state (`ready`, `busy`, …; states
    /// with none are absent).
    pub fn processes_by_state(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for p in self.pool.processes() {
            *counts.entry(p.state).or_insert(0) += 1;
        }
        counts
    }

    /// Processes of one team.
    pub fn team_processes(&self, team: &str) -> Vec<ProcessInfo> {
        self.pool
            .processes()
            .into_iter()
            .filter(|p| p.team == team)
            .collect()
    }

    /// Stop every agent and close the database.
    pub async fn shutdown(&self) {
        let jobs = self.stop_jobs();
        self.pool.shutdown().await;
        self.recorder.flush().await;
        self.reopen_jobs(&jobs).await;
        self.auth.flush().await;
        self.store.close().await;
    }
}

fn check_team(row: SessionRow, to: &str) -> Result<SessionRow> {
    if row.to_team != to {
        return Err(IrisError::session_not_found(format!(
            "`{}` for team `{to}`",
            row.id
        )));
    }
    Ok(row)
}

/// The teams of `config` and of the store, as a start with both gives
/// them (a reload gives the same): the file's teams; then each stored
/// team whose name the file leaves free and that is still valid under
/// `policy` (`config::team_from_json`: its folder under a root, its
/// profile known, agent keys of its own only if an admin saved them while
/// `api.teams.allowCustomAgents` is on). A stored team that is not is
/// left out, with a warning, and kept in the store.
pub(crate) fn teams_of(
    config: &Config,
    policy: &TeamPolicy,
    stored: Vec<iris_storage::SavedTeam>,
) -> BTreeMap<String, Arc<Team>> {
    let mut teams = BTreeMap::new();
    for (name, t) in &config.teams {
        match Team::new(name, t.clone(), &policy.profiles) {
            Ok(team) => {
                teams.insert(name.clone(), Arc::new(team));
            }
            // Checked when the file was parsed; only a bug gets here.
            Err((field, problem)) => {
                tracing::error!(team = %name, field, problem, "a team of the config file is invalid; left out");
            }
        }
    }
    let mut known: Vec<String> = teams.keys().cloned().collect();
    known.extend(stored.iter().map(|s| s.name.clone()));
    for saved in stored {
        let name = saved.name;
        if teams.contains_key(&name) {
            tracing::warn!(team = %name, "a stored team has the name of a team of the config file; the file's wins");
            continue;
        }
        match crate::config::team_from_json(&name, saved.config, policy, &known, saved.custom_agent)
        {
            Ok((t, profile)) => {
                let team =
                    Team::created(&name, t, profile, policy.roots.clone(), saved.custom_agent);
                teams.insert(name.clone(), Arc::new(team));
            }
            Err((field, problem)) => {
                tracing::warn!(team = %name, field, problem, "a stored team is not allowed by the configuration as it is now; left out (kept in the database)");
            }
        }
    }
    teams
}
