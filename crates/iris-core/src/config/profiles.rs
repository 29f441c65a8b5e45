//! What a team may run and where: agent profiles (`agentProfiles.<name>`),
//! the folders run-time teams may work in (`teamRoots`) and the switch for
//! free-form agents through the API (`api.teams.allowCustomAgents`). The
//! config file names them; teams created through the API choose among
//! them (`ops/team_config.rs` says who may set what).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use iris_agent::{AgentKind, PromptVia};
use serde::{Deserialize, Serialize};

use super::{GrantPermission, TeamConfig};

/// A driver with its executable, fixed arguments, environment, permission
/// rule and tool lists: everything that decides what a team's process is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentProfile {
    #[serde(default = "default_agent")]
    pub agent: AgentKind,
    /// Shown to whoever chooses a profile.
    #[serde(default)]
    pub description: Option<String>,
    /// The `claude` executable (claude profiles).
    #[serde(default)]
    pub claude_path: Option<String>,
    /// The executable of a `command` profile.
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub grant_permission: GrantPermission,
    #[serde(default)]
    pub allowed_tools: Vec<String>,
    #[serde(default)]
    pub disallowed_tools: Vec<String>,
    #[serde(default)]
    pub prompt_via: PromptVia,
    /// The remote agent's card (`a2a` profiles): its URL, or the agent's
    /// base URL (`/.well-known/agent-card.json` is added). Checked by the
    /// SSRF guard like webhooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Sent as `Authorization: Bearer <credential>` to the remote agent
    /// (`a2a` profiles; `${VAR}` reads it from the environment). Never
    /// shown back.
    #[serde(default, skip_serializing)]
    pub credential: Option<String>,
    /// Hosts the `a2a` bridge may reach on internal addresses: the
    /// config's `webhooks.allowHosts`, set when the file is read.
    #[serde(skip)]
    pub a2a_allow_hosts: Vec<String>,
    /// How its teams' agents are confined (a team's own settings over
    /// these, these over the top level's).
    #[serde(default, skip_serializing_if = "super::SandboxConfig::is_default")]
    pub sandbox: super::SandboxConfig,
}

fn default_agent() -> AgentKind {
    AgentKind::Claude
}

/// `api.teams`: what the API may do with teams.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ApiTeamsConfig {
    /// Let admins set a run-time team's agent, executable, arguments,
    /// environment and tool lists directly, outside any profile. Off by
    /// default: what runs is the config file's decision.
    pub allow_custom_agents: bool,
}

/// The profiles every configuration has unless it declares one of their
/// names: `echo`, the built-in echo agent (it runs nothing but Iris).
pub fn builtin_profiles() -> BTreeMap<String, AgentProfile> {
    BTreeMap::from([(
        "echo".to_owned(),
        AgentProfile {
            agent: AgentKind::Echo,
            description: Some("The built-in echo agent: answers with your text".into()),
            claude_path: None,
            command: None,
            args: Vec::new(),
            env: BTreeMap::new(),
            grant_permission: GrantPermission::Ask,
            allowed_tools: Vec::new(),
            disallowed_tools: Vec::new(),
            prompt_via: PromptVia::Arg,
            url: None,
            credential: None,
            a2a_allow_hosts: Vec::new(),
            sandbox: Default::default(),
        },
    )])
}

impl AgentProfile {
    /// What `team` runs: its named profile (one of `profiles`) with the
    /// team's own additions — arguments and tools appended, variables
    /// added or replaced, the executable, `grantPermission` and
    /// `promptVia` replaced where the team gives them — or, without a
    /// profile, the team's own fields.
    ///
    /// # Errors
    /// The key (`profile`, `agent`, `command`) and what is wrong.
    pub fn of_team(
        team: &TeamConfig,
        profiles: &BTreeMap<String, AgentProfile>,
    ) -> Result<AgentProfile, (String, String)> {
        let mut p = match &team.profile {
            Some(name) => {
                let base = profiles.get(name).ok_or_else(|| {
                    let known: Vec<&str> = profiles.keys().map(String::as_str).collect();
                    (
                        "profile".to_owned(),
                        format!(
                            "no agent profile `{name}` (agentProfiles has: {})",
                            known.join(", ")
                        ),
                    )
                })?;
                if let Some(a) = team.agent.filter(|a| *a != base.agent) {
                    return Err((
                        "agent".into(),
                        format!(
                            "profile `{name}` runs the `{}` driver; a team of it cannot be `{}`",
                            base.agent.as_str(),
                            a.as_str()
                        ),
                    ));
                }
                let mut p = base.clone();
                p.args.extend(team.args.iter().cloned());
                p.allowed_tools.extend(team.allowed_tools.iter().cloned());
                p.disallowed_tools
                    .extend(team.disallowed_tools.iter().cloned());
                p
            }
            None if team.agent == Some(AgentKind::A2a) => {
                return Err((
                    "profile".into(),
                    "an `a2a` team names a profile (agentProfiles) with the remote card's `url`"
                        .into(),
                ));
            }
            None => AgentProfile {
                agent: team.agent.unwrap_or(AgentKind::Claude),
                description: None,
                claude_path: None,
                command: None,
                args: team.args.clone(),
                env: BTreeMap::new(),
                grant_permission: GrantPermission::Ask,
                allowed_tools: team.allowed_tools.clone(),
                disallowed_tools: team.disallowed_tools.clone(),
                prompt_via: PromptVia::Arg,
                url: None,
                credential: None,
                a2a_allow_hosts: Vec::new(),
                sandbox: Default::default(),
            },
        };
        p.sandbox = team.sandbox.over(&p.sandbox);
        p.env
            .extend(team.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        if team.claude_path.is_some() {
            p.claude_path.clone_from(&team.claude_path);
        }
        if team.command.is_some() {
            p.command.clone_from(&team.command);
        }
        if let Some(g) = team.grant_permission {
            p.grant_permission = g;
        }
        if let Some(v) = team.prompt_via {
            p.prompt_via = v;
        }
        if p.agent.needs_command() && p.command.as_deref().is_none_or(str::is_empty) {
            return Err((
                "command".into(),
                format!("a `{}` team needs its executable", p.agent.as_str()),
            ));
        }
        Ok(p)
    }
}

impl GrantPermission {
    /// How much it lets through: `no` < `ask` < `yes`.
    fn rank(self) -> u8 {
        match self {
            GrantPermission::No => 0,
            GrantPermission::Ask => 1,
            GrantPermission::Yes => 2,
        }
    }

    /// Whether this lets through no more than `other`.
    pub fn at_most(self, other: GrantPermission) -> bool {
        self.rank() <= other.rank()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GrantPermission::No => "no",
            GrantPermission::Ask => "ask",
            GrantPermission::Yes => "yes",
        }
    }
}

/// The folders run-time teams may work in, and Iris's own files that no
/// such team's folder may hold or lie in (its home with the credentials
/// and worktrees, the database, the config file).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TeamRoots {
    roots: Vec<PathBuf>,
    protected: Vec<PathBuf>,
}

impl TeamRoots {
    pub fn new(roots: Vec<PathBuf>, protected: Vec<PathBuf>) -> Self {
        TeamRoots { roots, protected }
    }

    /// The roots as configured (resolved against the config file's folder).
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// `folder` with symlinks and `..` resolved, if it is under a root and
    /// clear of Iris's own files. Checked when a team is created or
    /// changed, and again before each of its processes starts (a symlink
    /// swapped since is caught then).
    ///
    /// # Errors
    /// Why not, without naming the server's own files.
    pub fn admit(&self, folder: &Path) -> Result<PathBuf, String> {
        let real = std::fs::canonicalize(folder)
            .map_err(|_| format!("no folder `{}`", folder.display()))?;
        if !real.is_dir() {
            return Err(format!("`{}` is not a folder", folder.display()));
        }
        if self.roots.is_empty() {
            return Err(
                "no teamRoots are configured: teams created through the API need a folder under one (docs/configuration.md)"
                    .into(),
            );
        }
        let under_root = self
            .roots
            .iter()
            .filter_map(|r| std::fs::canonicalize(r).ok())
            .any(|r| real.starts_with(&r));
        if !under_root {
            return Err(format!(
                "`{}` is not under any of teamRoots",
                folder.display()
            ));
        }
        let clashes = self.protected.iter().any(|p| {
            let p = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
            real.starts_with(&p) || p.starts_with(&real)
        });
        if clashes {
            return Err(format!(
                "`{}` holds or lies in Iris's own files (its home, database or configuration)",
                folder.display()
            ));
        }
        Ok(real)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn team(yaml: &str) -> TeamConfig {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn a_profile_gives_the_driver_and_a_team_adds_to_it() {
        let mut profiles = builtin_profiles();
        profiles.insert(
            "cc".into(),
            serde_yaml_ng::from_str(
                "agent: claude\nclaudePath: /opt/claude\nargs: [--model, x]\nenv: {A: '1', B: '2'}\ngrantPermission: ask\nallowedTools: [Read]\n",
            )
            .unwrap(),
        );
        let p = AgentProfile::of_team(
            &team("path: .\nprofile: cc\nargs: [-v]\nenv: {B: '3'}\ngrantPermission: 'no'\n"),
            &profiles,
        )
        .unwrap();
        assert_eq!(p.agent, AgentKind::Claude);
        assert_eq!(p.claude_path.as_deref(), Some("/opt/claude"));
        assert_eq!(p.args, ["--model", "x", "-v"]);
        assert_eq!((p.env["A"].as_str(), p.env["B"].as_str()), ("1", "3"));
        assert_eq!(p.grant_permission, GrantPermission::No);
        assert_eq!(p.allowed_tools, ["Read"]);
        let e = AgentProfile::of_team(&team("path: .\nprofile: nope\n"), &profiles).unwrap_err();
        assert_eq!(e.0, "profile");
        assert!(e.1.contains("cc, echo"), "{e:?}");
        let e = AgentProfile::of_team(&team("path: .\nprofile: echo\nagent: command\n"), &profiles)
            .unwrap_err();
        assert_eq!(e.0, "agent");
        let own = AgentProfile::of_team(&team("path: .\nagent: echo\n"), &profiles).unwrap();
        assert_eq!(own.agent, AgentKind::Echo);
        let e = AgentProfile::of_team(&team("path: .\nagent: command\n"), &profiles).unwrap_err();
        assert_eq!(e.0, "command");
    }

    #[test]
    fn grant_permission_orders_by_what_it_lets_through() {
        use GrantPermission::*;
        assert!(No.at_most(Ask) && Ask.at_most(Ask) && Ask.at_most(Yes));
        assert!(!Yes.at_most(Ask) && !Ask.at_most(No));
    }

    #[test]
    fn roots_admit_folders_under_them_and_clear_of_iris_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("projects");
        let home = dir.path().join("home");
        for d in ["projects/web", "home/.iris", "outside"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let roots = TeamRoots::new(vec![root.clone()], vec![home.join(".iris")]);
        assert!(roots.admit(&root.join("web")).is_ok());
        assert!(roots.admit(&root.join("web/../web")).is_ok());
        assert!(roots.admit(&root.join("../outside")).is_err());
        assert!(roots.admit(&root.join("missing")).is_err());
        std::os::unix::fs::symlink(dir.path().join("outside"), root.join("link")).unwrap();
        assert!(roots.admit(&root.join("link")).is_err(), "a symlink out");
        // Iris's own files: inside them, or holding them.
        let wide = TeamRoots::new(vec![dir.path().to_path_buf()], vec![home.join(".iris")]);
        assert!(wide.admit(&home).is_err());
        assert!(wide.admit(&home.join(".iris")).is_err());
        assert!(wide.admit(&root).is_ok());
        assert!(TeamRoots::default().admit(&root).is_err(), "no roots");
    }
}
