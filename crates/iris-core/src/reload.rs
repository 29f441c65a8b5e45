//! Reloading the configuration file while Iris runs (`iris serve` watches
//! the file and reloads on SIGHUP; see the CLI). All or nothing: a file
//! that fails to parse or validate changes nothing — the running
//! configuration stays, and the error (file, key path, what was expected)
//! is logged and published (`config_rejected`). A valid one applies:
//!
//! - `settings`: swapped whole; limits and timeouts apply from the next time
//!   they are read (new turns, new processes).
//! - `teams`, `agentProfiles`, `teamRoots`, `api.teams`: the teams become
//!   what a start with this file and the database would give (the file's,
//!   then the API's that are still valid: under a root, a known profile),
//!   added, removed (their processes stopped) or changed (their processes
//!   restart with the new options once their running turn has ended).
//! - Everything else (`api` with the listen address, `database`, `cluster`, `auth`,
//!   `audit`, `dashboard`, `jobs`, `webhooks`, `history`) is read at start
//!   only: a change there is named in the log as needing a restart.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::json;

use crate::bus::{EventKind, Events};
use crate::config::{Config, ConfigError, ConfigSource};
use crate::jobs::Jobs;
use crate::pool::Pool;
use crate::team::Team;
use crate::teams::Teams;
use iris_storage::Store;

/// What a reload changed.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Reloaded {
    pub settings: bool,
    pub teams_added: Vec<String>,
    pub teams_removed: Vec<String>,
    pub teams_changed: Vec<String>,
    /// Sections that changed in the file but apply only at the next start.
    pub needs_restart: Vec<String>,
}

impl Reloaded {
    pub fn is_empty(&self) -> bool {
        !self.settings
            && self.teams_added.is_empty()
            && self.teams_removed.is_empty()
            && self.teams_changed.is_empty()
            && self.needs_restart.is_empty()
    }
}

/// The sections read at start only, as JSON, by name.
fn start_only(c: &Config) -> BTreeMap<&'static str, serde_json::Value> {
    // `api.teams` applies live (with the teams).
    let mut api = json!(c.api);
    if let Some(a) = api.as_object_mut() {
        a.remove("teams");
    }
    BTreeMap::from([
        ("api", api),
        ("dashboard", json!(c.dashboard)),
        ("database", json!(c.database)),
        ("cluster", json!(c.cluster)),
        ("auth", json!(c.auth)),
        ("audit", json!(c.audit)),
        ("jobs", json!(c.jobs)),
        ("webhooks", json!(c.webhooks)),
        ("history", json!(c.history)),
    ])
}

/// What a reload changes: the services that hold the running
/// configuration's settings and teams.
pub(crate) struct Reloader {
    /// The configuration Iris started with (start-only sections compare
    /// against it).
    started: Config,
    teams: Arc<Teams>,
    pool: Pool,
    jobs: Arc<Jobs>,
    store: Store,
    events: Arc<dyn Events>,
    /// Held by a reload from reading the file to applying it.
    reloading: tokio::sync::Mutex<()>,
    /// The configuration applied last (the start's, then each reload's).
    current: std::sync::Mutex<Config>,
}

/// What applying the teams changed.
#[derive(Default)]
struct TeamChanges {
    added: Vec<String>,
    removed: Vec<String>,
    changed: Vec<String>,
}

impl Reloader {
    pub(crate) fn new(
        started: Config,
        teams: Arc<Teams>,
        pool: Pool,
        jobs: Arc<Jobs>,
        store: Store,
        events: Arc<dyn Events>,
    ) -> Self {
        Reloader {
            current: std::sync::Mutex::new(started.clone()),
            started,
            teams,
            pool,
            jobs,
            store,
            events,
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// Read the configuration file again and apply it (see the module's
    /// doc). The error of a file that is not applied is also logged and
    /// published.
    pub(crate) async fn reload(&self) -> Result<Reloaded, ConfigError> {
        // One at a time (the watcher and SIGHUP may both fire): a reload
        // reads the file and applies it whole before the next one reads.
        let _one = self.reloading.lock().await;
        let Some(path) = self.started.source.clone() else {
            return Err(self.rejected(ConfigError {
                file: "<embedded defaults>".into(),
                key_path: String::new(),
                message: "running on the embedded defaults: there is no file to reload".into(),
            }));
        };
        let source = ConfigSource {
            flag: Some(path),
            overrides: self.started.overrides.clone(),
        };
        let new = Config::load(&source).map_err(|e| self.rejected(e))?;
        if let Some(first) = new.problems().into_iter().next() {
            return Err(self.rejected(first));
        }
        let mut out = Reloaded::default();
        let (old, fresh) = (start_only(&self.started), start_only(&new));
        out.needs_restart = fresh
            .iter()
            .filter(|(k, v)| old.get(*k) != Some(v))
            .map(|(k, _)| (*k).to_owned())
            .collect();
        if self.started.settings.http_port != new.settings.http_port {
            out.needs_restart.push("settings.httpPort".into());
        }
        if self.pool.sandbox().set_settings(&new.sandbox) {
            out.settings = true;
        }
        if *self.pool.settings() != new.settings {
            crate::logs::ring().set_capacity(new.settings.log_buffer);
            self.pool.set_settings(new.settings.clone());
            out.settings = true;
        }
        let applied = self
            .apply_teams(&new, "was removed from the configuration file")
            .await
            .map_err(|message| ConfigError {
                file: new
                    .source
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                key_path: "teams".into(),
                message,
            })?;
        out.teams_added = applied.added;
        out.teams_removed = applied.removed;
        out.teams_changed = applied.changed;
        if let Ok(mut current) = self.current.lock() {
            *current = new.clone();
        }
        let file = new
            .source
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if !out.needs_restart.is_empty() {
            tracing::warn!(file, sections = ?out.needs_restart, "changed in the configuration file, applied at the next start only (they are read at start: the listen address, database, keys…)");
        }
        tracing::info!(file, changes = ?out, "configuration reloaded");
        self.events.publish(
            EventKind::ConfigReloaded,
            "",
            None,
            None,
            json!({"file": file, "changes": out}),
        );
        Ok(out)
    }

    /// Teams created, changed or deleted at run time on another node of
    /// the cluster (a notice): apply what the database now holds, with the
    /// configuration applied last.
    pub(crate) async fn refresh_teams(&self) {
        let _one = self.reloading.lock().await;
        let config = match self.current.lock() {
            Ok(c) => c.clone(),
            Err(_) => return,
        };
        match self
            .apply_teams(&config, "was deleted on another node")
            .await
        {
            Ok(c) if !(c.added.is_empty() && c.removed.is_empty() && c.changed.is_empty()) => {
                tracing::info!(added = ?c.added, removed = ?c.removed, changed = ?c.changed, "teams changed on another node applied");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot apply teams changed on another node"),
        }
    }

    /// Make the teams what a start with `config` and the database would
    /// give: added, changed (processes restart when idle) or removed
    /// (their jobs end, processes stop once idle; `why` says why).
    async fn apply_teams(&self, config: &Config, why: &str) -> Result<TeamChanges, String> {
        let mut out = TeamChanges::default();
        let stored = self
            .store
            .saved_teams()
            .await
            .map_err(|e| format!("reading the teams created through the API: {e}"))?;
        let policy = config.team_policy();
        let fresh = crate::teams::teams_of(config, &policy, stored);
        let current: BTreeMap<String, Arc<Team>> = self
            .teams
            .all()
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect();
        let mut next = BTreeMap::new();
        for (name, team) in fresh {
            match current.get(&name) {
                Some(t) if **t == *team => {
                    next.insert(name, t.clone());
                }
                Some(_) => {
                    let team = Arc::new(team.as_ref().clone());
                    self.pool.reconfigure(&team);
                    out.changed.push(name.clone());
                    next.insert(name, team);
                }
                None => {
                    out.added.push(name.clone());
                    next.insert(name, team);
                }
            }
        }
        out.removed = current
            .keys()
            .filter(|n| !next.contains_key(*n))
            .cloned()
            .collect();
        self.teams.replace(policy, next);
        for name in &out.removed {
            // Its waiting jobs end now; its running turns finish, then its
            // processes stop (queued messages are cancelled with the reason).
            let reason = format!("team `{name}` {why}");
            if let Err(e) = self.jobs.end_jobs_of_team(name, &reason, false).await {
                tracing::warn!(team = %name, error = %e, "ending the jobs of a removed team");
            }
            self.pool.stop_when_idle(|p| p.team == *name, &reason);
            tracing::info!(team = %name, "team removed; its processes stop once their running turn ends");
        }
        Ok(out)
    }

    /// Log and publish a configuration that was not applied.
    fn rejected(&self, e: ConfigError) -> ConfigError {
        tracing::error!(file = %e.file, key = %e.key_path, error = %e.message, "the configuration file was not applied; the running configuration stays");
        self.events.publish(
            EventKind::ConfigRejected,
            "",
            None,
            None,
            json!({"file": e.file, "keyPath": e.key_path, "message": e.message}),
        );
        e
    }
}
