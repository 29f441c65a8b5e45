//! Teams at run time (the "contexts" of seed 003): `team_get`,
//! `team_create`, `team_update`, `team_delete`. Validated like the config
//! file (`config::team_from_json`), stored in the database (present after a
//! restart), audited as every change. Teams of the config file are read
//! only here (`CONFLICT` naming the file).

use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::auth::scope;
use crate::ctx::Ctx;
use crate::error::{IrisError, Result};
use crate::iris::Iris;
use crate::registry::Operation;
use crate::team::Team;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetParams {
    #[schemars(length(min = 1, max = 64))]
    pub team: String,
}

/// A team and where it comes from.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeamRecord {
    pub name: String,
    /// `config` (the config file; read only here) or `api` (created at run time).
    pub source: String,
    /// The keys of `teams.<name>` (docs/configuration.md).
    pub config: Value,
}

/// `{name, path, agent?, …}`: the keys of `teams.<name>` of the config file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateParams {
    #[schemars(length(min = 1, max = 64))]
    pub name: String,
    /// `path`, `agent`, `description`, `args`, `env`, `grantPermission`,
    /// `canMessage`, … as in the config file.
    #[serde(flatten)]
    pub config: Map<String, Value>,
}

/// `{team, …keys to change}`: the given keys replace the team's.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateParams {
    #[schemars(length(min = 1, max = 64))]
    pub team: String,
    #[serde(flatten)]
    pub config: Map<String, Value>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeleteParams {
    #[schemars(length(min = 1, max = 64))]
    pub team: String,
    /// Stop its processes even while they work (their messages are cancelled).
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteResult {
    pub team: String,
    pub deleted: bool,
    /// Processes stopped.
    pub stopped: usize,
}

fn record(team: &Team) -> TeamRecord {
    TeamRecord {
        name: team.name.clone(),
        source: if team.from_file { "config" } else { "api" }.into(),
        config: serde_json::to_value(&team.config).unwrap_or(Value::Null),
    }
}

fn editable(iris: &Iris, team: &Team) -> Result<()> {
    if team.from_file {
        let file = iris
            .config
            .source
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the embedded defaults".into());
        return Err(IrisError::conflict(format!(
            "team `{}` is declared in {file}; change it there",
            team.name
        ))
        .with_details(json!({"team": team.name, "file": file})));
    }
    Ok(())
}

/// Validate `config` as team `name`'s, store it, and put the team in place.
async fn save(iris: &Iris, name: &str, config: Map<String, Value>) -> Result<Arc<Team>> {
    let known: Vec<String> = iris.teams().iter().map(|t| t.name.clone()).collect();
    let config = Value::Object(config);
    let team = crate::config::team_from_json(name, config.clone(), &iris.config.base_dir(), &known)
        .map_err(|(field, problem)| IrisError::validation(&field, problem))?;
    iris.store.save_team(name, &config, crate::now_ms()).await?;
    let team = Arc::new(Team::created(name, team));
    iris.put_team(team.clone());
    Ok(team)
}

pub(super) fn operations() -> Vec<Operation> {
    vec![
        Operation::new(
            "team_get",
            "One team's configuration and where it comes from (the config file or the API).",
            Some(scope::TEAMS_READ),
            false,
            |iris: Arc<Iris>, ctx: Ctx, p: GetParams| async move {
                let team = iris.team(&ctx, &p.team)?;
                Ok(record(&team))
            },
        ),
        Operation::new(
            "team_create",
            "Create a team at run time: {name, path, agent?, …} with the keys of teams.<name> in the config file; stored, present after a restart.",
            Some(scope::TEAMS_WRITE),
            true,
            |iris: Arc<Iris>, ctx: Ctx, p: CreateParams| async move {
                if ctx.principal.teams.is_some() {
                    return Err(IrisError::new(
                        crate::error::ErrorKind::Forbidden,
                        "a caller limited to some teams cannot create one",
                    ));
                }
                if iris.teams().iter().any(|t| t.name == p.name) {
                    return Err(IrisError::conflict(format!("team `{}` exists", p.name))
                        .with_details(json!({"team": p.name})));
                }
                let team = save(&iris, &p.name, p.config).await?;
                Ok(record(&team))
            },
        ),
        Operation::new(
            "team_update",
            "Change a team created at run time: the given keys replace its own; its processes take the new options when they next start.",
            Some(scope::TEAMS_WRITE),
            true,
            |iris: Arc<Iris>, ctx: Ctx, p: UpdateParams| async move {
                let team = iris.team(&ctx, &p.team)?;
                editable(&iris, &team)?;
                let mut config = match serde_json::to_value(&team.config) {
                    Ok(Value::Object(m)) => m,
                    _ => Map::new(),
                };
                config.retain(|_, v| !v.is_null());
                config.extend(p.config);
                let team = save(&iris, &team.name, config).await?;
                Ok(record(&team))
            },
        ),
        Operation::new(
            "team_delete",
            "Delete a team created at run time (force: stop its processes even while they work).",
            Some(scope::ADMIN),
            true,
            |iris: Arc<Iris>, ctx: Ctx, p: DeleteParams| async move {
                let team = iris.team(&ctx, &p.team)?;
                editable(&iris, &team)?;
                let name = team.name.clone();
                let working = iris
                    .team_processes(&name)
                    .iter()
                    .any(|x| x.queued > 0 || x.state == "busy");
                if working && !p.force {
                    return Err(IrisError::conflict(format!(
                        "team `{name}` is working; pass force to stop it and delete it"
                    )));
                }
                let stopped = iris
                    .pool
                    .stop_where(|x| x.team == name, "team deleted")
                    .await;
                iris.store.delete_team(&name).await?;
                iris.remove_team(&name);
                Ok(DeleteResult {
                    team: name,
                    deleted: true,
                    stopped: stopped.len(),
                })
            },
        ),
    ]
}
