//! A team at run time: its configuration and how to start its agent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use iris_agent::{AgentKind, LaunchSpec, SessionMode};

use crate::config::{GrantPermission, Settings, TeamConfig};

#[derive(Debug, Clone)]
pub struct Team {
    pub name: String,
    pub config: TeamConfig,
}

impl Team {
    pub fn new(name: &str, config: TeamConfig) -> Self {
        Team {
            name: name.to_owned(),
            config,
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

    /// A persistent (claude/echo) process for one session.
    pub fn launch_session(&self, session: &SessionMode, echo_program: &Path) -> LaunchSpec {
        let mut extra = Vec::new();
        if self.config.agent == AgentKind::Claude
            && self.config.grant_permission == GrantPermission::Yes
        {
            extra.push("--dangerously-skip-permissions".to_owned());
        }
        extra.extend(self.config.args.iter().cloned());
        LaunchSpec::persistent(
            self.config.agent,
            self.program(echo_program),
            session,
            &extra,
            self.env(),
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
