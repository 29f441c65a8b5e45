//! The front door: [`Iris`] starts the services, wires them together and
//! hands each layer above what it may use. It holds no state of its own:
//! teams ([`Teams`]), conversations ([`Conversations`]), turns (the
//! [`Pool`]), messages ([`Messaging`]), jobs ([`Jobs`]), permissions
//! ([`Access`]), authentication ([`Auth`]), events ([`Events`]) and
//! storage are services with one interface each. Transports come in
//! through [`Iris::dispatch`] (`ops`) and the few named methods here.

use crate::ownership::{Owner, Ownership};
use crate::sandbox::Sandbox;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use iris_storage::Store;
use serde::Serialize;

use crate::access::Access;
use crate::accounts::Accounts;
use crate::auth::{Auth, Principal};
use crate::bus::{Bus, Events, Subscription};
use crate::clock::now_ms;
use crate::cluster::{ClusterEvents, Node, Notice, REVISIONS};
use crate::config::{Config, ConfigError};
use crate::conversations::{Conversations, LocalSessions};
use crate::ctx::Ctx;
use crate::error::{ErrorKind, IrisError, Result};
use crate::follow::Follower;
use crate::jobs::{Jobs, LocalQueue};
use crate::messaging::Messaging;
use crate::pool::{Pool, ProcessInfo};
use crate::recorder::Recorder;
use crate::reload::{Reloaded, Reloader};
use crate::services::Services;
use crate::teams::{Teams, teams_of};

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

pub struct Iris {
    config: Config,
    auth: Arc<Auth>,
    store: Store,
    recorder: Recorder,
    events: Arc<dyn Events>,
    pool: Pool,
    teams: Arc<Teams>,
    conversations: Arc<Conversations>,
    access: Arc<Access>,
    accounts: Accounts,
    messaging: Arc<Messaging>,
    jobs: Arc<Jobs>,
    reloader: Reloader,
    node: Arc<Node>,
    ownership: Arc<Ownership>,
    started_at: i64,
}

/// How Iris is doing, for health checks and metrics.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// Processes in each state (`ready`, `busy`, …; states with none absent).
    pub processes_by_state: BTreeMap<String, usize>,
    pub total_processes: usize,
    pub max_processes: usize,
    /// Messages waiting per team, every team named.
    pub queues: BTreeMap<String, usize>,
    pub jobs_waiting: usize,
    /// Bus subscribers dropped for falling behind, since start.
    pub dropped_subscribers: u64,
    pub sessions: i64,
    /// Milliseconds since start.
    pub uptime: i64,
}

impl Iris {
    /// Open the database, recover from a previous run, start the services
    /// and warm the teams marked `prewarm`.
    pub async fn start(config: Config, options: StartOptions) -> Result<Arc<Iris>> {
        // The cause in full (which database, what it said): this is what
        // an operator reads when Iris does not start.
        let store = Store::connect(&config.database_settings())
            .await
            .map_err(|e| {
                IrisError::new(
                    ErrorKind::ServiceUnavailable,
                    format!(
                        "cannot open the database {}: {e}",
                        config.database_display()
                    ),
                )
            })?;
        // A server is a node of its cluster (alone, without Redis): its
        // work carries its id, so its recovery touches nothing else's.
        let node = Node::start(&config, &store, options.recover).await?;
        let store = if options.recover {
            store.on_node(node.id())
        } else {
            store
        };
        if options.recover {
            recover(&store, config.webhooks.max_attempts).await?;
        }
        crate::logs::ring().set_capacity(config.settings.log_buffer);
        let bus = Arc::new(Bus::new(options.bus_capacity));
        let events: Arc<dyn Events> = match node.link() {
            Some(link) => ClusterEvents::start(bus, link.clone()),
            None => bus,
        };
        let auth =
            Auth::start_linked(store.clone(), config.auth_settings(), node.link().cloned()).await?;
        auth.spawn_upkeep();
        let recorder = Recorder::start(store.clone());
        // Only a server runs jobs and sends webhooks.
        let deliverer = if options.recover {
            Some(deliverer(&config, &store).await?)
        } else {
            None
        };
        let policy = config.team_policy();
        let all = teams_of(&config, &policy, store.saved_teams().await?);
        let teams = Arc::new(Teams::new(policy, all));
        let sandbox = Arc::new(Sandbox::new(&config, teams.clone()));
        let ownership = Arc::new(Ownership::new(&config, store.clone(), node.id()));
        let pool = Pool::new(
            config.settings.clone(),
            store.clone(),
            recorder.clone(),
            events.clone(),
            options.echo_program,
            auth.clone(),
            sandbox,
        );
        let conversations = Arc::new(
            Conversations::new(
                store.clone(),
                recorder.clone(),
                pool.clone(),
                config.home.clone(),
                Box::new(LocalSessions::default()),
            )
            .await?,
        );
        let access = Arc::new(Access::new(auth.clone(), teams.clone(), store.clone()));
        let accounts = Accounts::new(auth.clone(), config.auth.registration);
        let services = Services {
            store: store.clone(),
            recorder: recorder.clone(),
            teams: teams.clone(),
            conversations: conversations.clone(),
            pool: pool.clone(),
            events: events.clone(),
            ownership: ownership.clone(),
        };
        let messaging = Arc::new(Messaging::new(access.clone(), services.clone()));
        let jobs = Arc::new(Jobs::new(
            config.jobs.clone(),
            config.webhooks.max_attempts,
            Box::new(LocalQueue::new(config.jobs.concurrency_per_team)),
            deliverer,
            services,
        ));
        let reloader = Reloader::new(
            config.clone(),
            teams.clone(),
            pool.clone(),
            jobs.clone(),
            store.clone(),
            events.clone(),
        );
        let iris = Arc::new(Iris {
            config,
            auth,
            store,
            recorder,
            events,
            pool,
            teams,
            conversations,
            access,
            accounts,
            messaging,
            jobs,
            reloader,
            node,
            ownership,
            started_at: now_ms(),
        });
        {
            // A team taken over from another node: its jobs run here.
            let jobs = Arc::downgrade(&iris.jobs);
            iris.ownership.on_take_over(move |team| {
                let Some(jobs) = jobs.upgrade() else { return };
                tokio::spawn(async move {
                    if let Err(e) = jobs.adopt_team(&team).await {
                        tracing::warn!(team, error = %e.message, "taking up the jobs of a team taken over");
                    }
                });
            });
            // A team another node took over: its processes here stop.
            let pool = iris.pool.clone();
            iris.ownership.spawn_renewal(move |team| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    pool.stop_where(|x| x.team == team, "another node took the team over")
                        .await;
                });
            });
        }
        iris.jobs.reload_webhooks().await?;
        iris.jobs.start().await?;
        iris.spawn_notices();
        if options.recover {
            iris.spawn_history_pruning();
        }
        if options.prewarm {
            iris.prewarm();
        }
        Ok(iris)
    }

    /// Apply what other nodes of the cluster say changed: teams created,
    /// changed or deleted at run time, webhook subscriptions, approvals
    /// decided through them. Said through Redis; and every second the
    /// database's revisions are compared (a word lost, Redis down) and
    /// the approvals this node's processes wait for are read again.
    fn spawn_notices(self: &Arc<Self>) {
        let Some(mut notices) = self.node.notices() else {
            return;
        };
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut seen = [0_i64; REVISIONS.len()];
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let told = tokio::select! {
                    n = notices.next() => match n {
                        Some(n) => n,
                        None => return,
                    },
                    _ = tick.tick() => {
                        let Some(iris) = weak.upgrade() else { return };
                        for (i, (name, notice)) in REVISIONS.iter().enumerate() {
                            if let Ok(rev) = iris.store.revision(name).await
                                && rev != seen[i]
                            {
                                seen[i] = rev;
                                iris.apply(Some(notice.clone())).await;
                            }
                        }
                        for id in iris.pool.awaited() {
                            iris.apply(Some(Notice::Approval(id))).await;
                        }
                        continue;
                    }
                };
                let Some(iris) = weak.upgrade() else { return };
                iris.apply(told).await;
            }
        });
    }

    /// Apply one notice (`None`: everything, the link came back).
    async fn apply(&self, notice: Option<Notice>) {
        if matches!(notice, None | Some(Notice::Teams)) {
            self.reloader.refresh_teams().await;
        }
        if matches!(notice, None | Some(Notice::Webhooks))
            && let Err(e) = self.jobs.reload_webhooks().await
        {
            tracing::warn!(error = %e, "cannot reload webhook subscriptions changed on another node");
        }
        if let Some(Notice::Approval(id)) = notice
            && self.pool.awaits(&id)
        {
            match self.store.approval(&id).await {
                Ok(Some(row)) => {
                    self.pool.hand_on(&row);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(approval = %id, error = %e, "cannot read an approval decided on another node")
                }
            }
        }
    }

    /// Start the default process of each team marked `prewarm`.
    fn prewarm(self: &Arc<Self>) {
        for team in self.teams.all().into_iter().filter(|t| t.config.prewarm) {
            let iris = self.clone();
            tokio::spawn(async move {
                let from = Principal::local().name;
                let woke = async {
                    let session = iris.conversations.session(&from, &team.name, None).await?;
                    iris.pool.wake(&team, &session).await
                };
                match woke.await {
                    Ok(pid) => tracing::info!(team = %team.name, pid, "prewarmed"),
                    Err(e) => tracing::warn!(team = %team.name, error = %e, "prewarm failed"),
                }
            });
        }
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

    /// The configuration Iris started with (a reload changes teams and
    /// settings in their services, not this).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This node of the cluster (a single node without `cluster.redisUrl`).
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Which node runs each team's processes (a cluster with `cluster.secret`).
    pub fn ownership(&self) -> &Arc<Ownership> {
        &self.ownership
    }

    /// Where a call of `operation` for a team must be carried out, when
    /// that is another node (its URL): the team's owner in a cluster with
    /// `cluster.secret`. `None`: here.
    pub(crate) async fn owner_elsewhere(
        &self,
        ctx: &Ctx,
        runs: crate::ownership::Runs,
        params: &serde_json::Value,
    ) -> Result<Option<String>> {
        use crate::ownership::Runs;
        if ctx.forwarded || !self.ownership.enabled() {
            return Ok(None);
        }
        let text = |k: &str| params.get(k).and_then(serde_json::Value::as_str);
        let team = match runs {
            Runs::Anywhere => return Ok(None),
            Runs::OnTeamsOwner => {
                match (text("toTeam").or_else(|| text("team")), text("sessionId")) {
                    (Some(t), _) => t.to_owned(),
                    // Named by its conversation alone.
                    (None, Some(id)) => match self.store.session(id).await? {
                        Some(s) => s.to_team,
                        None => return Ok(None),
                    },
                    (None, None) => return Ok(None),
                }
            }
            // A job is cancelled where it runs: its team's owner.
            Runs::OnJobsOwner => match text("jobId") {
                Some(id) => match self.store.job(id).await? {
                    Some(job) => job.job.team,
                    None => return Ok(None),
                },
                None => return Ok(None),
            },
        };
        // An unknown team is the handler's to report.
        if self.teams.named(&team).is_none() {
            return Ok(None);
        }
        Ok(match self.ownership.owner(&team).await? {
            Owner::Here => None,
            Owner::There { url, .. } => Some(url),
        })
    }

    /// Keys, users, rate limits and the audit trail.
    pub fn auth(&self) -> &Arc<Auth> {
        &self.auth
    }

    /// The database.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Every team, and the policy of what they may run.
    pub fn teams(&self) -> &Teams {
        &self.teams
    }

    /// The agent processes.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// People's own accounts: sign in, register, sign-ins, MFA (`/auth/*`).
    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    pub(crate) fn conversations(&self) -> &Conversations {
        &self.conversations
    }

    pub(crate) fn access(&self) -> &Access {
        &self.access
    }

    pub(crate) fn messaging(&self) -> &Arc<Messaging> {
        &self.messaging
    }

    pub(crate) fn jobs(&self) -> &Arc<Jobs> {
        &self.jobs
    }

    pub(crate) fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    pub(crate) fn events(&self) -> &Arc<dyn Events> {
        &self.events
    }

    /// Record an audit event as `ctx`'s caller, off the request path.
    pub fn audit(&self, ctx: &Ctx, event: iris_auth::AuditEvent) {
        self.access.audit(ctx, event);
    }

    /// The one permission decision, for the few routes that are not
    /// operations (`/metrics`, `/health/detailed`): `ctx`'s caller holds
    /// `scope` and, for what spans every team (`global`), is not limited
    /// to some teams. A refusal is audited.
    pub fn permit(
        &self,
        ctx: &Ctx,
        scope: &str,
        global: bool,
        what: &str,
        team: Option<&str>,
    ) -> Result<()> {
        self.access.permit(ctx, scope, global, what, team)
    }

    /// Subscribe `ctx`'s caller to a bus topic it may watch (`system`,
    /// `team:<name>`, `session:<id>`): the topic as the bus names it, and
    /// the subscription.
    pub async fn subscribe(&self, ctx: &Ctx, topic: &str) -> Result<(String, Subscription)> {
        let topic = self.access.topic(ctx, topic).await?;
        let sub = self.events.subscribe(&topic);
        Ok((topic, sub))
    }

    /// Whether `ctx`'s caller may watch `topic`: the topic as the bus names
    /// it (Socket.IO joins rooms, and its rooms subscribe once for all).
    pub async fn may_watch(&self, ctx: &Ctx, topic: &str) -> Result<String> {
        self.access.topic(ctx, topic).await
    }

    /// A subscription to a topic already checked ([`Iris::may_watch`]).
    pub fn watch(&self, topic: &str) -> Subscription {
        self.events.subscribe(topic)
    }

    /// Follow a turn, from its start or after the event numbered `after`:
    /// live from memory while it runs, replayed from the database once it
    /// has ended. Needs `messages:stream`.
    pub async fn follow(
        &self,
        ctx: &Ctx,
        message_id: &str,
        after: Option<u64>,
    ) -> Result<Follower> {
        self.messaging.follow(ctx, message_id, after).await
    }

    /// Read the configuration file again and apply it (see `reload`).
    pub async fn reload(&self) -> std::result::Result<Reloaded, ConfigError> {
        self.reloader.reload().await
    }

    /// Where this Iris serves MCP (`http://host:port/mcp`): claude teams'
    /// processes started from now on can call it back. Set once.
    pub fn serve_mcp_at(&self, url: String) {
        self.pool.serve_mcp_at(url);
    }

    /// Whether the database answers, and how fast.
    pub async fn ping_database(&self) -> Result<std::time::Duration> {
        Ok(self.store.ping().await?)
    }

    /// Milliseconds since this Iris started.
    pub fn uptime_ms(&self) -> i64 {
        now_ms() - self.started_at
    }

    /// How Iris is doing now.
    pub fn health(&self) -> Health {
        let processes = self.pool.processes();
        let mut processes_by_state = BTreeMap::new();
        let mut queues: BTreeMap<String, usize> = self
            .teams
            .all()
            .iter()
            .map(|t| (t.name.clone(), 0))
            .collect();
        for p in &processes {
            *processes_by_state.entry(p.state.clone()).or_insert(0) += 1;
            if let Some(d) = queues.get_mut(&p.team) {
                *d += p.queued;
            }
        }
        Health {
            processes_by_state,
            total_processes: processes.len(),
            max_processes: self.pool.settings().max_processes,
            queues,
            jobs_waiting: self.jobs.waiting(),
            dropped_subscribers: self.events.dropped_subscribers(),
            sessions: self.conversations.count(),
            uptime: self.uptime_ms(),
        }
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
        let jobs = self.jobs.stop();
        self.pool.shutdown().await;
        self.ownership.release().await;
        self.recorder.drain().await;
        self.jobs.reopen(&jobs).await;
        self.auth.flush().await;
        self.node.stop().await;
        self.store.close().await;
    }
}

/// What a previous run left: pending approvals expire (no process waits
/// for them any more), unfinished turns fail.
async fn recover(store: &Store, max_attempts: i64) -> Result<()> {
    let expired = store
        .expire_pending_approvals("Iris restarted; the agent's process is gone", now_ms())
        .await?;
    if !expired.is_empty() {
        tracing::warn!(approvals = ?expired, "pending approvals of a previous run expired");
    }
    // Their A2A push configs hear of the end: written first (the deliverer,
    // started after, sends them), so a failure here leaves the turns to
    // the next start, which writes them again.
    let now = now_ms();
    for id in store.unfinished_turns().await? {
        let configs = store.push_configs(&id).await?;
        if configs.is_empty() {
            continue;
        }
        let Some(mut turn) = store.turn(&id).await? else {
            continue;
        };
        turn.status = "failed".into();
        turn.error = Some(iris_storage::RESTARTED.into());
        turn.completed_at = Some(now);
        let body = serde_json::json!({"task": crate::a2a::task_of(&serde_json::json!(turn))});
        let rows: Vec<_> = configs
            .iter()
            .map(|c| crate::jobs::push_delivery(c, &body, max_attempts))
            .collect();
        store.insert_deliveries(&rows).await?;
    }
    let failed = store.recover(now).await?;
    if failed > 0 {
        tracing::warn!(
            failed,
            "turns left unfinished by a previous run were marked failed"
        );
    }
    Ok(())
}

/// The webhook deliverer, with the configured signing secret or the one
/// kept in the database (made once).
async fn deliverer(config: &Config, store: &Store) -> Result<iris_webhooks::Deliverer> {
    let secret = match config.webhooks.signing_secret.as_str() {
        "" => {
            let fresh = hex::encode(iris_auth::secret::random_bytes::<32>()?);
            store.meta_init("webhook_signing_secret", &fresh).await?
        }
        s => s.to_owned(),
    };
    iris_webhooks::Deliverer::start(store.clone(), config.webhooks.delivery_options(secret))
        .map_err(|e| IrisError::internal("starting webhooks", e))
}
