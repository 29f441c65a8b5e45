//! How each kind of agent is started: program, arguments, environment, folder.

use std::path::PathBuf;

/// The hidden `iris` subcommand that runs the built-in echo agent.
pub const ECHO_SUBCOMMAND: &str = "agent-echo";
/// The hidden subcommand of the `iris` binary that bridges to a remote A2A agent.
pub const A2A_SUBCOMMAND: &str = "agent-a2a";
/// The bridge's credential for the remote agent (its environment, never
/// its command line).
pub const A2A_CREDENTIAL_VAR: &str = "IRIS_A2A_CREDENTIAL";
/// Hosts the bridge may reach although they resolve to internal addresses
/// (`webhooks.allowHosts`, comma-separated).
pub const A2A_ALLOW_HOSTS_VAR: &str = "IRIS_A2A_ALLOW_HOSTS";
/// The remote's context a restarted bridge continues, and the task of it
/// that asked the caller a question (as the bridge's last `init` said).
pub const A2A_CONTEXT_VAR: &str = "IRIS_A2A_CONTEXT";
pub const A2A_TASK_VAR: &str = "IRIS_A2A_TASK";

/// The variables of Iris's own environment an agent process gets: what a
/// program needs to run in a user's session, nothing that says where
/// Iris keeps its secrets. Everything else it gets is named by its driver,
/// profile or team (docs/security.md).
pub const INHERITED_ENV: [&str; 8] = [
    "PATH", "HOME", "LANG", "TZ", "TERM", "USER", "SHELL", "TMPDIR",
];

/// Iris's own values of [`INHERITED_ENV`] and of every `LC_*` variable.
pub fn inherited_env() -> impl Iterator<Item = (String, String)> {
    std::env::vars().filter(|(k, _)| INHERITED_ENV.contains(&k.as_str()) || k.starts_with("LC_"))
}

/// Which driver a team uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentKind {
    /// Claude Code, one persistent stream-json process per session.
    Claude,
    /// The built-in echo agent: same protocol as `claude`, spawned as a child.
    Echo,
    /// Any other CLI: spawned once per turn, stdout lines are chunks.
    Command,
    /// An Agent Client Protocol agent: one persistent process per session,
    /// JSON-RPC on stdio (see [`crate::acp`]).
    Acp,
    /// A remote A2A agent: one persistent bridge process per session (the
    /// `iris` binary's [`A2A_SUBCOMMAND`]) speaking stream-json to Iris and
    /// A2A over HTTP to the agent its card names.
    A2a,
}

impl AgentKind {
    /// Persistent agents keep one process per session (stream-json, or
    /// ACP translated to it).
    pub fn is_persistent(self) -> bool {
        !matches!(self, AgentKind::Command)
    }

    /// The driver runs the profile's `command` (not a program Iris knows).
    pub fn needs_command(self) -> bool {
        matches!(self, AgentKind::Command | AgentKind::Acp)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AgentKind::Claude => "claude",
            AgentKind::Echo => "echo",
            AgentKind::Command => "command",
            AgentKind::Acp => "acp",
            AgentKind::A2a => "a2a",
        }
    }
}

/// How a `command` agent receives its prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptVia {
    /// Appended as the last argument, or substituted for `{prompt}` in args.
    #[default]
    Arg,
    /// Written to stdin, which is then closed.
    Stdin,
}

/// Which conversation a persistent agent process continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionMode {
    /// A brand-new conversation with this id (`--session-id`).
    New(String),
    /// Continue an existing conversation (`--resume`).
    Resume(String),
    /// Start `new_id` as a copy of `from` (`--resume from --fork-session --session-id new_id`).
    Fork { from: String, new_id: String },
}

impl SessionMode {
    fn args(&self) -> Vec<String> {
        match self {
            SessionMode::New(id) => vec!["--session-id".into(), id.clone()],
            SessionMode::Resume(id) => vec!["--resume".into(), id.clone()],
            SessionMode::Fork { from, new_id } => vec![
                "--resume".into(),
                from.clone(),
                "--fork-session".into(),
                "--session-id".into(),
                new_id.clone(),
            ],
        }
    }
}

/// Everything needed to start one agent process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The whole environment: nothing else of Iris's is passed on.
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// Written to stdin right after spawn, then stdin is closed (command agents).
    pub stdin: Option<String>,
    /// What the process may reach (Landlock); `None`: unconfined.
    pub confine: Option<crate::sandbox::Confinement>,
    /// An ACP agent: how its session is opened.
    pub acp: Option<crate::acp::AcpStart>,
}

/// The stream-json flags every persistent agent gets.
pub const STREAM_JSON_ARGS: [&str; 7] = [
    "-p",
    "--input-format",
    "stream-json",
    "--output-format",
    "stream-json",
    "--verbose",
    "--include-partial-messages",
];

impl LaunchSpec {
    /// A persistent stream-json agent (`claude` or `echo`). For `echo`,
    /// `program` is the `iris` binary itself and the hidden subcommand comes first.
    pub fn persistent(
        kind: AgentKind,
        program: PathBuf,
        session: &SessionMode,
        extra_args: &[String],
        env: Vec<(String, String)>,
        cwd: PathBuf,
    ) -> Self {
        let mut args = Vec::new();
        match kind {
            AgentKind::Echo => args.push(ECHO_SUBCOMMAND.to_owned()),
            AgentKind::A2a => args.push(A2A_SUBCOMMAND.to_owned()),
            _ => {}
        }
        args.extend(STREAM_JSON_ARGS.iter().map(|s| (*s).to_owned()));
        args.extend(session.args());
        args.extend(extra_args.iter().cloned());
        LaunchSpec {
            program,
            args,
            env,
            cwd,
            stdin: None,
            confine: None,
            acp: None,
        }
    }

    /// A persistent ACP agent: its own command and arguments; the session
    /// is opened over the protocol.
    pub fn acp(
        program: PathBuf,
        args: &[String],
        start: crate::acp::AcpStart,
        env: Vec<(String, String)>,
        cwd: PathBuf,
    ) -> Self {
        LaunchSpec {
            program,
            args: args.to_vec(),
            env,
            cwd,
            stdin: None,
            confine: None,
            acp: Some(start),
        }
    }

    /// A per-turn `command` agent. `{prompt}` in an argument is replaced by the
    /// prompt; otherwise, with [`PromptVia::Arg`], the prompt is the last argument.
    pub fn per_turn(
        program: PathBuf,
        args: &[String],
        env: Vec<(String, String)>,
        cwd: PathBuf,
        prompt: &str,
        via: PromptVia,
    ) -> Self {
        let has_placeholder = args.iter().any(|a| a.contains("{prompt}"));
        let mut out: Vec<String> = args.iter().map(|a| a.replace("{prompt}", prompt)).collect();
        let stdin = match via {
            PromptVia::Stdin => Some(prompt.to_owned()),
            PromptVia::Arg => {
                if !has_placeholder {
                    out.push(prompt.to_owned());
                }
                None
            }
        };
        LaunchSpec {
            program,
            args: out,
            env,
            cwd,
            stdin,
            confine: None,
            acp: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_gets_stream_json_and_session_flags() {
        let spec = LaunchSpec::persistent(
            AgentKind::Claude,
            "claude".into(),
            &SessionMode::Resume("abc".into()),
            &["--model".into(), "x".into()],
            vec![],
            "/tmp".into(),
        );
        assert_eq!(spec.args[0], "-p");
        let joined = spec.args.join(" ");
        assert!(joined.contains("--input-format stream-json --output-format stream-json --verbose --include-partial-messages"));
        assert!(joined.ends_with("--resume abc --model x"));
    }

    #[test]
    fn echo_runs_the_hidden_subcommand_and_fork_flags() {
        let spec = LaunchSpec::persistent(
            AgentKind::Echo,
            "/bin/iris".into(),
            &SessionMode::Fork {
                from: "a".into(),
                new_id: "b".into(),
            },
            &[],
            vec![],
            ".".into(),
        );
        assert_eq!(spec.args[0], ECHO_SUBCOMMAND);
        assert!(
            spec.args
                .join(" ")
                .ends_with("--resume a --fork-session --session-id b")
        );
    }

    #[test]
    fn command_prompt_goes_where_asked() {
        let a = LaunchSpec::per_turn(
            "x".into(),
            &["-q".into()],
            vec![],
            ".".into(),
            "hi",
            PromptVia::Arg,
        );
        assert_eq!(a.args, ["-q", "hi"]);
        let b = LaunchSpec::per_turn(
            "x".into(),
            &["--msg={prompt}".into(), "-v".into()],
            vec![],
            ".".into(),
            "hi",
            PromptVia::Arg,
        );
        assert_eq!(b.args, ["--msg=hi", "-v"]);
        let c = LaunchSpec::per_turn("x".into(), &[], vec![], ".".into(), "hi", PromptVia::Stdin);
        assert!(c.args.is_empty());
        assert_eq!(c.stdin.as_deref(), Some("hi"));
    }
}
