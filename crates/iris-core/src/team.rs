//! A team at run time: its configuration and how to start its agent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use iris_agent::{AgentKind, LaunchSpec, SessionMode};

use crate::config::{Settings, TeamConfig};

#[derive(Debug, Clone)]
pub struct Team {
    pub name: String,
    pub config: TeamConfig,
    /// Declared in the config file (then the API cannot change it), or
    /// created at run time.
    pub from_file: bool,
}

impl Team {
    /// A team of the config file.
    pub fn new(name: &str, config: TeamConfig) -> Self {
        Team {
            name: name.to_owned(),
            config,
            from_file: true,
        }
    }

    /// A team created at run time (stored in the database).
    pub fn created(name: &str, config: TeamConfig) -> Self {
        Team {
            from_file: false,
            ..Team::new(name, config)
        }
    }

    pub fn agent(&self) -> AgentKind {
        self.config.agent
    }

    pub fn path(&self) -> &Path {
        Path::new(&self.config.path)
    }

    pub fn idle_timeout(&self, settings: &Settings) -> Duration {
        Duration::from_millis(self.config.idle_timeout.unwrap_or(settings.idle_timeout))
    }

    /// The executable this team runs; `echo_program` is the `iris` binary.
    pub fn program(&self, echo_program: &Path) -> PathBuf {
        match self.config.agent {
            AgentKind::Echo => echo_program.to_path_buf(),
            AgentKind::Claude => {
                PathBuf::from(self.config.claude_path.as_deref().unwrap_or("claude"))
            }
            AgentKind::Command => PathBuf::from(self.config.command.as_deref().unwrap_or_default()),
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        self.config
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// A persistent (claude/echo) process for one session; `iris_mcp`, the
    /// config file and credential of its `iris` MCP server, if it gets one
    /// (its tools are allowed).
    pub fn launch_session(
        &self,
        session: &SessionMode,
        echo_program: &Path,
        iris_mcp: Option<(&Path, &str)>,
    ) -> LaunchSpec {
        let mut extra = Vec::new();
        if self.config.agent == AgentKind::Claude {
            // Iris answers the agent's permission requests on stdin, per
            // `grantPermission` (`yes` at once: Claude Code refuses
            // `--dangerously-skip-permissions` to root, and this way every
            // answer is recorded alike).
            extra.extend(["--permission-prompt-tool".to_owned(), "stdio".to_owned()]);
            let mut allowed = self.config.allowed_tools.clone();
            if let Some((file, _)) = iris_mcp {
                extra.extend(["--mcp-config".to_owned(), file.display().to_string()]);
                allowed.push(crate::pool::seat::IRIS_TOOLS.to_owned());
            }
            if !allowed.is_empty() {
                extra.push("--allowedTools".to_owned());
                extra.push(allowed.join(","));
            }
            if !self.config.disallowed_tools.is_empty() {
                extra.push("--disallowedTools".to_owned());
                extra.push(self.config.disallowed_tools.join(","));
            }
        }
        extra.extend(self.config.args.iter().cloned());
        let mut env = self.env();
        if let Some((_, token)) = iris_mcp {
            env.push((crate::pool::seat::TOKEN_VAR.to_owned(), token.to_owned()));
        }
        LaunchSpec::persistent(
            self.config.agent,
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
            &self.config.args,
            self.env(),
            self.path().to_path_buf(),
            prompt,
            self.config.prompt_via,
        )
    }
}
