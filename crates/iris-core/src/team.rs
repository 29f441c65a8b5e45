//! A team at run time: its configuration and how to start its agent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use iris_agent::{AgentKind, LaunchSpec, SessionMode};

use crate::config::{AgentProfile, Settings, TeamConfig, TeamRoots};

/// The tools of the `iris` server the agent may call without asking: all
/// of them (its credential only allows messaging and reading).
pub const IRIS_TOOLS: &str = "mcp__iris";

/// The variable of the agent's environment that holds its credential.
pub const TOKEN_VAR: &str = "IRIS_MCP_TOKEN";

#[derive(Debug, Clone, PartialEq)]
pub struct Team {
    pub name: String,
    /// As declared (the config file's keys, or what the API stored).
    pub config: TeamConfig,
    /// What it runs: its profile with its own additions.
    pub profile: AgentProfile,
    /// Declared in the config file (then the API cannot change it), or
    /// created at run time.
    pub from_file: bool,
    /// A run-time team's folder must stay under these: checked again
    /// before each process starts. `None` for the config file's teams.
    roots: Option<TeamRoots>,
    /// A run-time team whose agent keys an admin set outside the profiles
    /// (`api.teams.allowCustomAgents`).
    pub custom_agent: bool,
}

impl Team {
    /// A team of the config file (checked when the file was parsed).
    ///
    /// # Errors
    /// The key and the problem, if its profile is not one of `profiles`.
    pub fn new(
        name: &str,
        config: TeamConfig,
        profiles: &BTreeMap<String, AgentProfile>,
    ) -> Result<Self, (String, String)> {
        Ok(Team {
            name: name.to_owned(),
            profile: AgentProfile::of_team(&config, profiles)?,
            config,
            from_file: true,
            roots: None,
            custom_agent: false,
        })
    }

    /// A team created at run time (stored in the database), as
    /// `config::team_from_json` made it.
    pub fn created(
        name: &str,
        config: TeamConfig,
        profile: AgentProfile,
        roots: TeamRoots,
        custom_agent: bool,
    ) -> Self {
        Team {
            name: name.to_owned(),
            config,
            profile,
            from_file: false,
            roots: Some(roots),
            custom_agent,
        }
    }

    pub fn agent(&self) -> AgentKind {
        self.profile.agent
    }

    pub fn path(&self) -> &Path {
        Path::new(&self.config.path)
    }

    /// Whether its folder may be used now: a run-time team's is still
    /// under a root and clear of Iris's files, whatever was swapped for a
    /// symlink since it was checked.
    ///
    /// # Errors
    /// Why not.
    pub fn check_folder(&self) -> Result<(), String> {
        match &self.roots {
            // The reason without the folder: callers see this message.
            Some(roots) => roots.admit(self.path()).map(drop).map_err(|problem| {
                tracing::warn!(team = %self.name, problem, "a team's folder is refused");
                "its folder is no longer under teamRoots or clear of Iris's own files; not started"
                    .to_owned()
            }),
            None => Ok(()),
        }
    }

    /// Whether a worktree of its repository may be made: for a run-time
    /// team, the repository's top folder (all of which a worktree checks
    /// out) is under a root too.
    ///
    /// # Errors
    /// Why not.
    pub fn check_repository(&self) -> Result<(), String> {
        match (&self.roots, crate::worktree::top_level(self.path())) {
            (Some(roots), Some(top)) if roots.admit(&top).is_err() => Err(
                "a worktree checks out the whole repository, whose top folder is not under teamRoots"
                    .into(),
            ),
            _ => Ok(()),
        }
    }

    pub fn idle_timeout(&self, settings: &Settings) -> Duration {
        Duration::from_millis(self.config.idle_timeout.unwrap_or(settings.idle_timeout))
    }

    /// The executable this team runs; `echo_program` is the `iris` binary.
    pub fn program(&self, echo_program: &Path) -> PathBuf {
        match self.profile.agent {
            AgentKind::Echo | AgentKind::A2a => echo_program.to_path_buf(),
            AgentKind::Claude => {
                PathBuf::from(self.profile.claude_path.as_deref().unwrap_or("claude"))
            }
            AgentKind::Command | AgentKind::Acp => {
                PathBuf::from(self.profile.command.as_deref().unwrap_or_default())
            }
        }
    }

    /// `text` with the values the team's configuration gives its agent
    /// (API keys, tokens…; 8 characters or more) and bearer tokens blanked:
    /// for what the agent printed, shown to callers.
    pub(crate) fn redact(&self, text: &str) -> String {
        redact(
            text,
            self.profile
                .env
                .values()
                .chain(self.profile.credential.iter())
                .map(String::as_str),
        )
    }

    /// The agent's whole environment: the allowlist of Iris's own
    /// ([`iris_agent::inherited_env`]), then `driver`'s variables, then the
    /// profile's and the team's.
    fn env(&self, driver: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env: BTreeMap<String, String> = iris_agent::inherited_env().collect();
        env.extend(
            driver
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        env.extend(self.profile.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.into_iter().collect()
    }

    /// A persistent (claude/echo) process for one session; `iris_mcp`, the
    /// `--mcp-config` JSON and credential of its `iris` MCP server, if it
    /// gets one (its tools are allowed).
    pub(crate) fn launch_session(
        &self,
        session: &SessionMode,
        echo_program: &Path,
        seat: Option<&crate::pool::seat::Seat>,
    ) -> LaunchSpec {
        if self.profile.agent == AgentKind::Acp {
            // Its session is opened over the protocol (which one it
            // resumes, the actor sets); Iris's `/mcp` goes with it.
            let start = iris_agent::AcpStart {
                resume: None,
                continues: false,
                mcp_servers: seat.map(|s| s.acp_server()).into_iter().collect(),
            };
            return LaunchSpec::acp(
                self.program(echo_program),
                &self.profile.args,
                start,
                self.env(&[]),
                self.path().to_path_buf(),
            );
        }
        let iris_mcp = seat.map(|s| (s.config(), s.token()));
        let mut extra = Vec::new();
        if self.profile.agent == AgentKind::Claude {
            // Iris answers the agent's permission requests on stdin, per
            // `grantPermission` (`yes` at once: Claude Code refuses
            // `--dangerously-skip-permissions` to root, and this way every
            // answer is recorded alike).
            extra.extend(["--permission-prompt-tool".to_owned(), "stdio".to_owned()]);
            let mut allowed = self.profile.allowed_tools.clone();
            if let Some((mcp_config, _)) = iris_mcp {
                // Inline: no file for another agent to find (it holds no
                // secret either: the token comes from the environment).
                extra.extend(["--mcp-config".to_owned(), mcp_config.to_owned()]);
                allowed.push(IRIS_TOOLS.to_owned());
            }
            if !allowed.is_empty() {
                extra.push("--allowedTools".to_owned());
                extra.push(allowed.join(","));
            }
            if !self.profile.disallowed_tools.is_empty() {
                extra.push("--disallowedTools".to_owned());
                extra.push(self.profile.disallowed_tools.join(","));
            }
        }
        extra.extend(self.profile.args.iter().cloned());
        let driver: Vec<(&str, &str)> = iris_mcp
            .map(|(_, token)| (TOKEN_VAR, token))
            .into_iter()
            .collect();
        let allow = self.profile.a2a_allow_hosts.join(",");
        let mut last: Vec<(&str, &str)> = Vec::new();
        if self.profile.agent == AgentKind::A2a {
            // The bridge's remote: the card's URL as its last argument
            // (the one it reads), the credential and the hosts it may
            // reach in its environment, over anything a team sets.
            extra.extend([
                "--card".to_owned(),
                self.profile.url.clone().unwrap_or_default(),
            ]);
            last.push((iris_agent::launch::A2A_ALLOW_HOSTS_VAR, &allow));
            if let Some(c) = &self.profile.credential {
                last.push((iris_agent::launch::A2A_CREDENTIAL_VAR, c));
            }
        }
        let mut env = self.env(&driver);
        env.retain(|(k, _)| !last.iter().any(|(l, _)| l == k));
        env.extend(last.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        LaunchSpec::persistent(
            self.profile.agent,
            self.program(echo_program),
            session,
            &extra,
            env,
            self.path().to_path_buf(),
        )
    }

    /// A `command` agent run for one prompt.
    pub fn launch_turn(&self, prompt: &str, echo_program: &Path) -> LaunchSpec {
        LaunchSpec::per_turn(
            self.program(echo_program),
            &self.profile.args,
            self.env(&[]),
            self.path().to_path_buf(),
            prompt,
            self.profile.prompt_via,
        )
    }
}

/// `text` with each of `secrets` of 8 characters or more, and what follows
/// `Bearer `, blanked.
fn redact<'a>(text: &str, secrets: impl Iterator<Item = &'a str>) -> String {
    let mut out = text.to_owned();
    for v in secrets.filter(|v| v.len() >= 8) {
        out = out.replace(v, "[redacted]");
    }
    let mut rest = out.as_str();
    let mut done = String::with_capacity(out.len());
    while let Some(i) = rest.find("Bearer ") {
        let (head, tail) = rest.split_at(i + "Bearer ".len());
        done.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        done.push_str("[redacted]");
        rest = &tail[end..];
    }
    done.push_str(rest);
    done
}

#[cfg(test)]
mod redact_tests {
    #[test]
    fn secrets_and_bearer_tokens_are_blanked() {
        let text = "key sk-ant-12345678 failed; headers: {Authorization: 'Bearer abc.def'} short x";
        let out = super::redact(text, ["sk-ant-12345678", "x"].into_iter());
        assert_eq!(
            out,
            "key [redacted] failed; headers: {Authorization: 'Bearer [redacted]'} short x"
        );
    }
}
