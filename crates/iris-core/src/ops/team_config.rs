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
use crate::config::{AgentProfile, GrantPermission, TeamConfig, TeamPolicy};
use crate::ctx::Ctx;
use crate::error::{ErrorKind, IrisError, Result};
use crate::iris::Iris;
use crate::ops::system::NoParams;
use crate::registry::Operation;
use crate::team::Team;
use iris_auth::{AuditEvent, Outcome};

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
    /// The driver it runs (`claude`, `echo`, `command`), from its profile or its own keys.
    pub agent: String,
    /// The `grantPermission` in force (its own, no looser than its profile's).
    pub grant_permission: String,
    /// The keys of `teams.<name>` (docs/configuration.md), `env` as
    /// `envNames`: secret values are never shown.
    pub config: Value,
}

/// `{name, path, profile, …}`: the keys of `teams.<name>` of the config file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateParams {
    #[schemars(length(min = 1, max = 64))]
    pub name: String,
    /// `path`, `profile`, `description`, `color`, `isolation`,
    /// `idleTimeout`, `grantPermission` (stricter than the profile's),
    /// `canMessage`, … as in the config file; the agent's own keys
    /// (`agent`, `command`, `args`, `env`, …) for admins with
    /// `api.teams.allowCustomAgents` only.
    #[serde(flatten)]
    pub config: Map<String, Value>,
}

/// `{team, …keys to change}`: the given keys replace the team's (`null`
/// removes one); in `env`, each variable given replaces its namesake,
/// `null` removes it, the others stay.
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
        agent: team.agent().as_str().into(),
        grant_permission: team.profile.grant_permission.as_str().into(),
        config: shown(&team.config),
    }
}

/// A team's declared keys as anyone may read them: `env` becomes
/// `envNames`, the variables' names without their values (config-file
/// values after `${VAR}` substitution included).
pub(crate) fn shown(config: &TeamConfig) -> Value {
    let mut v = serde_json::to_value(config).unwrap_or(Value::Null);
    if let Some(m) = v.as_object_mut()
        && m.remove("env").is_some()
    {
        m.insert(
            "envNames".into(),
            json!(config.env.keys().collect::<Vec<_>>()),
        );
    }
    v
}

fn editable(iris: &Iris, team: &Team) -> Result<()> {
    if team.from_file {
        let file = iris
            .config()
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

fn forbidden(field: &str, message: String) -> IrisError {
    IrisError::new(ErrorKind::Forbidden, format!("{field}: {message}"))
        .with_details(json!({"field": field}))
}

/// Whether `ctx` may set what the keys `given` say, on a team whose keys
/// will be `after` (docs/security.md, "Who may make Iris run what"):
/// a profile's name, a folder under a root, description, colour,
/// isolation, an idle timeout within `settings.idleTimeout` and a
/// `grantPermission` no looser than the profile's for everyone with
/// `teams:write`; `canMessage` naming teams the caller sees; the driver,
/// executable, arguments, environment and tool lists for admins only, and
/// only with `api.teams.allowCustomAgents`.
fn check_keys(
    iris: &Iris,
    ctx: &Ctx,
    policy: &TeamPolicy,
    given: &Map<String, Value>,
) -> Result<()> {
    if given.contains_key("envNames") {
        return Err(IrisError::validation(
            "envNames",
            "read only: set variables with `env` ({\"NAME\": \"value\"}; null removes one)",
        ));
    }
    if !may_customize(ctx, policy) {
        // Present at all: `null` would remove the profile's limits too.
        let field = crate::config::CUSTOM_AGENT_FIELDS
            .into_iter()
            .find(|f| given.contains_key(*f));
        if let Some(field) = field {
            let why = if ctx.principal.allows(scope::ADMIN) {
                "api.teams.allowCustomAgents is off"
            } else {
                "only admins may, and only with api.teams.allowCustomAgents"
            };
            return Err(forbidden(
                field,
                format!(
                    "what a team runs comes from its profile (agentProfiles in the config file); setting it directly: {why}"
                ),
            ));
        }
        if given.get("profile").is_some_and(|p| !p.is_string()) {
            return Err(forbidden(
                "profile",
                "only admins with api.teams.allowCustomAgents may take a team's profile away"
                    .into(),
            ));
        }
        let wanted = given
            .get("grantPermission")
            .and_then(|g| serde_json::from_value::<GrantPermission>(g.clone()).ok());
        let allowed = given
            .get("profile")
            .and_then(Value::as_str)
            .and_then(|p| policy.profiles.get(p))
            .map(|p| p.grant_permission);
        if let (Some(wanted), Some(allowed)) = (wanted, allowed)
            && !wanted.at_most(allowed)
        {
            return Err(looser(allowed, wanted));
        }
    }
    if let Some(ms) = given.get("idleTimeout").and_then(Value::as_u64) {
        let most = iris.pool().settings().idle_timeout;
        if !(1000..=most).contains(&ms) {
            return Err(IrisError::validation(
                "idleTimeout",
                format!("between 1000 and settings.idleTimeout ({most}) ms"),
            ));
        }
    }
    if let Some(set) = given.get("canMessage") {
        // Absent means every team: only for a caller that sees every team.
        if set.is_null() && ctx.principal.teams.is_some() {
            return Err(forbidden(
                "canMessage",
                "a caller limited to some teams names the teams (removing it would allow every team)".into(),
            ));
        }
        let names: Vec<&str> = match set {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        for name in names {
            let visible = if name == "*" {
                ctx.principal.teams.is_none()
            } else {
                ctx.principal.can_see_team(name)
            };
            if !visible {
                return Err(forbidden(
                    "canMessage",
                    format!("`{name}` is not a team this caller may name"),
                ));
            }
        }
    }
    Ok(())
}

/// Whether `ctx` may set a team's agent keys itself.
fn may_customize(ctx: &Ctx, policy: &TeamPolicy) -> bool {
    policy.allow_custom_agents && ctx.principal.allows(scope::ADMIN)
}

#[cold]
fn looser(allowed: GrantPermission, wanted: GrantPermission) -> IrisError {
    forbidden(
        "grantPermission",
        format!(
            "may only be stricter than its profile's (`{}`); `{}` is not",
            allowed.as_str(),
            wanted.as_str()
        ),
    )
}

/// What a saved team's keys allow, checked against `before` (the team as
/// it was, on an update) for a caller who may not set agent keys: no
/// looser `grantPermission` than before where there is no profile to cap
/// it, and — for a caller limited to some teams that moves its team — no
/// folder holding, or lying in, that of a team it cannot see.
fn check_result(
    iris: &Iris,
    ctx: &Ctx,
    policy: &TeamPolicy,
    given: &Map<String, Value>,
    before: Option<&Team>,
    after: &(TeamConfig, AgentProfile),
) -> Result<()> {
    if !may_customize(ctx, policy)
        && let Some(before) = before
        && after.0.profile.is_none()
        && !after
            .1
            .grant_permission
            .at_most(before.profile.grant_permission)
    {
        return Err(looser(
            before.profile.grant_permission,
            after.1.grant_permission,
        ));
    }
    if ctx.principal.teams.is_some() && given.contains_key("path") {
        let folder = std::path::Path::new(&after.0.path);
        let clash = iris.teams().all().into_iter().find(|t| {
            !ctx.principal.can_see_team(&t.name)
                && (folder.starts_with(t.path()) || t.path().starts_with(folder))
        });
        if clash.is_some() {
            return Err(forbidden(
                "path",
                "the folder holds, or lies in, the folder of a team this caller cannot see".into(),
            ));
        }
    }
    Ok(())
}

/// `config`'s `env` merged into `into`'s: each variable given replaces
/// the one of that name, `null` removes it, the others are kept.
fn merge_env(into: &mut Map<String, Value>, given: Option<Value>) {
    let Some(Value::Object(given)) = given else {
        if let Some(other) = given {
            // Not an object: let validation name it.
            into.insert("env".into(), other);
        }
        return;
    };
    let mut env = match into.remove("env") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    for (k, v) in given {
        if v.is_null() {
            env.remove(&k);
        } else {
            env.insert(k, v);
        }
    }
    if !env.is_empty() {
        into.insert("env".into(), Value::Object(env));
    }
}

/// What changed between two teams' readable keys: `{key: {before, after}}`.
fn changes(before: &Value, after: &Value) -> Value {
    let empty = Map::new();
    let (b, a) = (
        before.as_object().unwrap_or(&empty),
        after.as_object().unwrap_or(&empty),
    );
    let mut out = Map::new();
    for key in b.keys().chain(a.keys()) {
        let (x, y) = (b.get(key), a.get(key));
        if x != y && !out.contains_key(key) {
            out.insert(key.clone(), json!({"before": x, "after": y}));
        }
    }
    Value::Object(out)
}

/// Audit a change of a team: its name and what changed, secrets by name
/// only (`envChanged`: the variables whose values changed).
fn audit_change(
    iris: &Iris,
    ctx: &Ctx,
    action: &str,
    name: &str,
    before: Option<&TeamConfig>,
    after: Option<&TeamConfig>,
) {
    let mut changes = changes(
        &before.map(shown).unwrap_or_else(|| json!({})),
        &after.map(shown).unwrap_or_else(|| json!({})),
    );
    if let (Some(b), Some(a), Some(m)) = (before, after, changes.as_object_mut()) {
        let changed: Vec<&String> = a
            .env
            .iter()
            .filter(|(k, v)| b.env.get(*k).is_some_and(|old| old != *v))
            .map(|(k, _)| k)
            .collect();
        if !changed.is_empty() {
            m.insert("envChanged".into(), json!(changed));
        }
    }
    iris.audit(
        ctx,
        AuditEvent::new(format!("team.{action}"), Outcome::Success)
            .team(Some(name.to_owned()))
            .resource(format!("team:{name}"))
            .details(json!({"team": name, "changes": changes})),
    );
}

/// Check `config` as team `name`'s for `ctx` (`before`: the team as it
/// was, on an update), store it, and put the team in place.
async fn save(
    iris: &Iris,
    ctx: &Ctx,
    name: &str,
    given: &Map<String, Value>,
    config: Map<String, Value>,
    before: Option<&Team>,
) -> Result<Arc<Team>> {
    let policy = iris.teams().policy();
    check_keys(iris, ctx, &policy, given)?;
    // Agent keys of its own: set now by an admin who may, or kept from
    // one who did (nobody else may touch them, `check_keys`).
    let sets_agent = crate::config::CUSTOM_AGENT_FIELDS
        .iter()
        .any(|f| given.contains_key(*f));
    let custom = if sets_agent {
        may_customize(ctx, &policy)
    } else {
        before.is_some_and(|t| t.custom_agent)
    };
    let known: Vec<String> = iris.teams().all().iter().map(|t| t.name.clone()).collect();
    let config = Value::Object(config);
    let made = crate::config::team_from_json(name, config.clone(), &policy, &known, custom)
        .map_err(|(field, problem)| IrisError::validation(&field, problem))?;
    check_result(iris, ctx, &policy, given, before, &made)?;
    iris.store()
        .save_team(name, &config, custom, crate::clock::now_ms())
        .await?;
    let (team, profile) = made;
    let team = Arc::new(Team::created(
        name,
        team,
        profile,
        policy.roots.clone(),
        custom,
    ));
    iris.teams().put(team.clone());
    iris.node().tell(crate::cluster::Notice::Teams).await;
    Ok(team)
}

/// A profile as callers see it (what it runs, not its environment).
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileEntry {
    pub name: String,
    pub agent: String,
    pub description: Option<String>,
    /// The loosest `grantPermission` a team of it may have.
    pub grant_permission: String,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfilesResult {
    pub profiles: Vec<ProfileEntry>,
    /// Folders under which a team created through the API may work.
    pub team_roots: Vec<String>,
    /// Whether admins may set a team's agent outside the profiles.
    pub allow_custom_agents: bool,
}

pub(super) fn operations() -> Vec<Operation> {
    vec![
        Operation::new(
            "team_profiles",
            "The agent profiles a team created through the API may run, and the folders (teamRoots) it may work in.",
            Some(scope::TEAMS_READ),
            false,
            |iris: Arc<Iris>, _ctx: Ctx, _p: NoParams| async move {
                let policy = iris.teams().policy();
                Ok(ProfilesResult {
                    profiles: policy
                        .profiles
                        .iter()
                        .map(|(name, p)| ProfileEntry {
                            name: name.clone(),
                            agent: p.agent.as_str().into(),
                            description: p.description.clone(),
                            grant_permission: p.grant_permission.as_str().into(),
                        })
                        .collect(),
                    team_roots: policy
                        .roots
                        .roots()
                        .iter()
                        .map(|r| r.display().to_string())
                        .collect(),
                    allow_custom_agents: policy.allow_custom_agents,
                })
            },
        ),
        Operation::new(
            "team_get",
            "One team's configuration and where it comes from (the config file or the API).",
            Some(scope::TEAMS_READ),
            false,
            |iris: Arc<Iris>, ctx: Ctx, p: GetParams| async move {
                let team = iris.teams().get(&ctx, &p.team)?;
                Ok(record(&team))
            },
        ),
        Operation::new(
            "team_create",
            "Create a team at run time: {name, path, profile, …}: one of the config file's agent profiles, in a folder under its teamRoots; stored, present after a restart.",
            Some(scope::TEAMS_WRITE),
            true,
            |iris: Arc<Iris>, ctx: Ctx, p: CreateParams| async move {
                if ctx.principal.teams.is_some() {
                    return Err(IrisError::new(
                        ErrorKind::Forbidden,
                        "a caller limited to some teams cannot create one",
                    ));
                }
                if iris.teams().all().iter().any(|t| t.name == p.name) {
                    return Err(IrisError::conflict(format!("team `{}` exists", p.name))
                        .with_details(json!({"team": p.name})));
                }
                let mut config = p.config.clone();
                config.remove("env");
                merge_env(&mut config, p.config.get("env").cloned());
                let team = save(&iris, &ctx, &p.name, &p.config, config, None).await?;
                audit_change(&iris, &ctx, "created", &team.name, None, Some(&team.config));
                Ok(record(&team))
            },
        ),
        Operation::new(
            "team_update",
            "Change a team created at run time: the given keys replace its own; its processes take the new options when they next start.",
            Some(scope::TEAMS_WRITE),
            true,
            |iris: Arc<Iris>, ctx: Ctx, p: UpdateParams| async move {
                let team = iris.teams().get(&ctx, &p.team)?;
                editable(&iris, &team)?;
                let mut config = match serde_json::to_value(&team.config) {
                    Ok(Value::Object(m)) => m,
                    _ => Map::new(),
                };
                let mut given = p.config;
                let env = given.remove("env");
                config.extend(given.clone());
                config.retain(|_, v| !v.is_null());
                merge_env(&mut config, env.clone());
                given.extend(env.map(|e| ("env".to_owned(), e)));
                let saved = save(&iris, &ctx, &team.name, &given, config, Some(&team)).await?;
                audit_change(
                    &iris,
                    &ctx,
                    "updated",
                    &team.name,
                    Some(&team.config),
                    Some(&saved.config),
                );
                Ok(record(&saved))
            },
        ),
        Operation::new(
            "team_delete",
            "Delete a team created at run time (force: stop its processes even while they work).",
            Some(scope::ADMIN),
            true,
            |iris: Arc<Iris>, ctx: Ctx, p: DeleteParams| async move {
                let team = iris.teams().get(&ctx, &p.team)?;
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
                // Its waiting jobs end at once, its running ones with its
                // processes: each `cancelled`, its callback written.
                iris.jobs()
                    .end_jobs_of_team(&name, &format!("team `{name}` was deleted"), true)
                    .await?;
                // Gone for the scheduler before its processes stop: a job
                // on its way to the pool now is cancelled when it gets there.
                iris.teams().remove(&name);
                let stopped = iris
                    .pool()
                    .stop_where(|x| x.team == name, "team deleted")
                    .await;
                if let Err(e) = iris.store().delete_team(&name).await {
                    // Still stored: still there.
                    iris.teams().put(team.clone());
                    return Err(e.into());
                }
                // A job accepted while the first pass ran (its execute had
                // found the team) ends too, now that none can be accepted:
                // it must not wait for a team of the same name to run it.
                // (The team is gone whatever this says: the rest goes on.)
                if let Err(e) = iris
                    .jobs()
                    .end_jobs_of_team(&name, &format!("team `{name}` was deleted"), true)
                    .await
                {
                    tracing::warn!(team = %name, error = %e.message, "ending a deleted team's late jobs");
                }
                iris.node().tell(crate::cluster::Notice::Teams).await;
                audit_change(&iris, &ctx, "deleted", &name, Some(&team.config), None);
                Ok(DeleteResult {
                    team: name,
                    deleted: true,
                    stopped: stopped.len(),
                })
            },
        ),
    ]
}
