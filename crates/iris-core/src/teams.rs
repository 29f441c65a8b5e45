//! The teams service: every team Iris has now — the config file's and
//! those created through the API — and what teams may run and where (the
//! team policy), both replaced whole by a reload.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::config::{Config, TeamPolicy};
use crate::ctx::Ctx;
use crate::error::{IrisError, Result};
use crate::team::Team;

pub struct Teams {
    policy: RwLock<Arc<TeamPolicy>>,
    all: RwLock<BTreeMap<String, Arc<Team>>>,
}

impl Teams {
    pub(crate) fn new(policy: TeamPolicy, teams: BTreeMap<String, Arc<Team>>) -> Self {
        Teams {
            policy: RwLock::new(Arc::new(policy)),
            all: RwLock::new(teams),
        }
    }

    /// What teams may run and where, as the running configuration says.
    pub fn policy(&self) -> Arc<TeamPolicy> {
        self.policy
            .read()
            .map(|p| p.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Every team, by name.
    pub fn all(&self) -> Vec<Arc<Team>> {
        self.all
            .read()
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The teams `ctx`'s caller may see.
    pub fn visible(&self, ctx: &Ctx) -> Vec<Arc<Team>> {
        self.all()
            .into_iter()
            .filter(|t| ctx.principal.can_see_team(&t.name))
            .collect()
    }

    /// A team the caller may see; `TEAM_NOT_FOUND` otherwise, as for one
    /// that does not exist.
    pub fn get(&self, ctx: &Ctx, name: &str) -> Result<Arc<Team>> {
        if !ctx.principal.can_see_team(name) {
            return Err(IrisError::team_not_found(name));
        }
        self.named(name)
            .ok_or_else(|| IrisError::team_not_found(name))
    }

    /// A team by name, whoever asks (the scheduler and reloads have no caller).
    pub fn named(&self, name: &str) -> Option<Arc<Team>> {
        self.all.read().ok().and_then(|t| t.get(name).cloned())
    }

    /// Add or replace a team (created or changed at run time).
    pub(crate) fn put(&self, team: Arc<Team>) {
        if let Ok(mut teams) = self.all.write() {
            teams.insert(team.name.clone(), team);
        }
    }

    /// Remove a team (deleted at run time).
    pub(crate) fn remove(&self, name: &str) {
        if let Ok(mut teams) = self.all.write() {
            teams.remove(name);
        }
    }

    /// Replace the policy and every team at once (a reload).
    pub(crate) fn replace(&self, policy: TeamPolicy, teams: BTreeMap<String, Arc<Team>>) {
        match self.policy.write() {
            Ok(mut p) => *p = Arc::new(policy),
            Err(e) => *e.into_inner() = Arc::new(policy),
        }
        match self.all.write() {
            Ok(mut t) => *t = teams,
            Err(e) => *e.into_inner() = teams,
        }
    }
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
