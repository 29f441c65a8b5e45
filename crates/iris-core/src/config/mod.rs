//! Configuration: `$IRIS_HOME/config.yaml`, or embedded defaults when there
//! is none. Keys follow seed 000 and the original Iris (camelCase); every
//! duration is in milliseconds. Unknown keys are errors, never dropped.

mod interpolate;
mod jobs;
mod profiles;
mod sandbox;
mod security;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use iris_agent::{AgentKind, PromptVia};
use serde::{Deserialize, Serialize};

pub use interpolate::{MissingVar, interpolate, interpolate_keeping};
pub use iris_auth::Rate;
pub use jobs::{HistoryConfig, JobsConfig, WebhooksConfig};
pub use profiles::{AgentProfile, ApiTeamsConfig, TeamRoots, builtin_profiles};
pub use sandbox::SandboxConfig;
pub use security::{AuditConfig, AuthConfig};

/// Process-pool and runtime settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Settings {
    /// Most agent processes alive at once.
    pub max_processes: usize,
    /// A process idle this long (ms) is stopped by the reaper.
    pub idle_timeout: u64,
    /// A running turn with no agent output for this long (ms) is timed out.
    pub response_timeout: u64,
    /// A new process must answer its first message within this (ms).
    pub spawn_timeout: u64,
    pub health_check_interval: u64,
    /// Messages waiting per team before `QUEUE_FULL`.
    pub max_queue_per_team: usize,
    /// Legacy name of the API port (seed 001); `api.port` wins.
    pub http_port: Option<u16>,
    /// Raw agent events kept per turn.
    pub max_events_per_turn: usize,
    /// Longest agent output line accepted (bytes); longer fails the turn.
    pub max_line_bytes: usize,
    /// Grace between the steps of stopping a process (ms).
    pub shutdown_grace: u64,
    /// Log records kept in memory for `get_logs`.
    pub log_buffer: usize,
    /// Most teams one message may pass through beyond the first (team-to-team
    /// messaging: A → B → C is 2 hops).
    pub max_hops: usize,
    /// How long a pending approval waits for a decision (ms); then the tool
    /// is denied and the approval expires.
    pub approval_timeout: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_processes: 10,
            idle_timeout: 300_000,
            response_timeout: 300_000,
            spawn_timeout: 30_000,
            health_check_interval: 30_000,
            max_queue_per_team: 100,
            http_port: None,
            max_events_per_turn: 1000,
            max_line_bytes: 4 * 1024 * 1024,
            shutdown_grace: 3000,
            log_buffer: 1000,
            max_hops: 4,
            approval_timeout: 300_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CorsConfig {
    pub enabled: bool,
    pub origins: Vec<String>,
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig {
            enabled: true,
            origins: vec!["http://localhost:3100".into()],
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub enabled: bool,
    /// Requests per identity (key or user) per window, unless a key has
    /// its own limit (seed 000 shape).
    pub window_ms: u64,
    pub max_requests: u64,
    /// Requests per client address before authentication.
    pub per_ip: Rate,
    /// Message-sending operations per identity.
    pub messages: Rate,
    /// Login attempts per client address.
    pub login: Rate,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            enabled: true,
            window_ms: 60_000,
            max_requests: 600,
            per_ip: Rate::new(1200, 60),
            messages: Rate::new(60, 60),
            login: Rate::new(10, 60),
        }
    }
}

/// Limits of each WebSocket connection (`/api/v1/stream` and `/ws`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WebSocketConfig {
    /// Largest message accepted (bytes).
    pub max_message_bytes: usize,
    /// Messages a client may send per second; more are refused with an error.
    pub messages_per_second: u32,
    /// A connection with no message from the client this long is closed (ms).
    pub idle_timeout: u64,
    /// Open WebSocket connections at most; more are refused with 503.
    pub max_connections: usize,
    /// WebSockets opened without a credential (it is to come as their
    /// first message) at most, apart from `maxConnections`: they cannot
    /// take the room of authenticated ones. More are refused with 503.
    pub max_unauthenticated: usize,
    /// Interval of server pings (ms).
    pub ping_interval: u64,
    /// How long a connection opened without a credential may take to send
    /// one as its first message before it is closed with 1008 (ms).
    pub auth_timeout: u64,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            max_message_bytes: 1024 * 1024,
            messages_per_second: 50,
            idle_timeout: 300_000,
            max_connections: 10_000,
            max_unauthenticated: 1000,
            ping_interval: 30_000,
            auth_timeout: 10_000,
        }
    }
}

/// The API server (REST, SSE, WebSocket, MCP over HTTP).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ApiConfig {
    pub enabled: bool,
    pub host: String,
    /// Default 1615; `settings.httpPort` is the legacy name. 0 picks a free port.
    pub port: Option<u16>,
    pub require_auth: bool,
    pub cors: CorsConfig,
    pub rate_limit: RateLimitConfig,
    pub max_body_bytes: usize,
    pub websocket: WebSocketConfig,
    /// Host names accepted in the `Host` header besides the bind address
    /// and, on a loopback bind, `localhost`/`127.0.0.1`/`[::1]`.
    pub allowed_hosts: Vec<String>,
    /// Longest a non-streaming request may take (ms); 0 turns it off.
    pub request_timeout: u64,
    /// Grace for in-flight requests and streams at shutdown (ms).
    pub shutdown_grace: u64,
    /// Longest a client may take to send a request's headers, counted from
    /// connecting or, on a kept-alive connection, from the previous
    /// answer (ms); 0 turns it off. Slow or idle clients cannot hold
    /// connections open.
    pub header_timeout: u64,
    /// HTTP connections served at once (0: no limit); further clients wait,
    /// not yet accepted, until one closes. A WebSocket counts here until its
    /// upgrade and under `websocket.maxConnections` from then on.
    pub max_connections: usize,
    /// How often Socket.IO's `system` room gets `health:check` (ms); 0 never.
    pub health_broadcast_interval: u64,
    /// What the API may do with teams (`allowCustomAgents`).
    pub teams: ApiTeamsConfig,
    /// MCP over Streamable HTTP (`/mcp`).
    pub mcp: McpConfig,
}

/// `api.mcp`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct McpConfig {
    /// Open MCP sessions one principal (a key, a user, an agent) may have;
    /// an `initialize` beyond it is refused with 429 until one ends
    /// (`DELETE /mcp`, or its idle time).
    pub max_sessions_per_principal: usize,
}

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig {
            max_sessions_per_principal: 32,
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            enabled: true,
            host: "127.0.0.1".into(),
            port: None,
            require_auth: true,
            cors: CorsConfig::default(),
            rate_limit: RateLimitConfig::default(),
            max_body_bytes: 10 * 1024 * 1024,
            websocket: WebSocketConfig::default(),
            allowed_hosts: Vec::new(),
            request_timeout: 600_000,
            shutdown_grace: 10_000,
            header_timeout: 30_000,
            max_connections: 10_000,
            health_broadcast_interval: 30_000,
            teams: ApiTeamsConfig::default(),
            mcp: McpConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DashboardConfig {
    pub enabled: bool,
    pub host: String,
    pub http: u16,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            enabled: true,
            host: "127.0.0.1".into(),
            http: 3100,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Where everything durable lives: `sqlite:<path>` or
    /// `postgres://user:password@host:port/database`. Default: the SQLite
    /// file `path` names. `IRIS_DATABASE_URL` overrides it.
    pub url: Option<String>,
    /// The SQLite file when `url` is not set (kept from before `url`; the
    /// same as `url: sqlite:<path>`); default `$IRIS_HOME/data/iris.db`.
    /// Relative paths are against the config file's folder.
    pub path: Option<String>,
    /// Most connections held at once (default 8 for SQLite, 16 for Postgres).
    pub max_connections: Option<u32>,
    /// Longest wait in ms for a connection, new or from the pool; past it
    /// the request fails with 503 (default 5000).
    pub connect_timeout: u64,
    /// Longest one statement may run in ms (Postgres `statement_timeout`;
    /// for SQLite, the wait for the write lock) (default 30000).
    pub statement_timeout: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            path: None,
            max_connections: None,
            connect_timeout: 5000,
            statement_timeout: 30_000,
        }
    }
}

/// Several nodes as one Iris (docs/scale-out.md): the Redis they share,
/// and who this node is.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `redis://[user:password@]host:port[/db]`: the Redis that carries
    /// events, notices and rate limits between nodes. Unset: one node,
    /// everything in process. `IRIS_REDIS_URL` overrides it.
    pub redis_url: Option<String>,
    /// This node's id (letters, digits, `.`, `_`, `-`; at most 64). Default:
    /// made once and kept in `$IRIS_HOME/data/node-id`, so a node keeps its
    /// id across restarts. `IRIS_NODE_ID` overrides it.
    pub node_id: Option<String>,
    /// How other nodes reach this one (`http://10.0.0.5:4000`); shown in
    /// `iris cluster status`, and where calls for its teams are forwarded.
    pub advertise_url: Option<String>,
    /// Shared by the nodes (32 characters or more): with it, each team is
    /// owned by one node at a time (a lease) and calls for it reaching
    /// another node are forwarded to the owner, signed with this secret.
    /// `IRIS_CLUSTER_SECRET` overrides it.
    // Never written out (nor compared on reload: `cluster` is read at start).
    #[serde(skip_serializing)]
    pub secret: Option<String>,
    /// How long a team's lease lasts without renewal (ms): a dead owner's
    /// teams are taken over within this (plus a second or two).
    pub lease_ttl: Option<u64>,
}

impl ClusterConfig {
    /// The lease's length: `leaseTtl`, else 10 s.
    pub fn lease_ttl_ms(&self) -> u64 {
        self.lease_ttl.unwrap_or(10_000)
    }
}

/// Whether `id` can be a node's id.
pub fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Whether a Claude team's agent may use tools that need permission.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GrantPermission {
    /// Yes: every request is allowed at once.
    Yes,
    /// No: every request is denied at once.
    No,
    /// Each request becomes a pending approval that someone decides
    /// (as the original Iris did).
    #[default]
    Ask,
}

/// One team: an agent working in a folder. What it runs comes from its
/// `profile` (one of `agentProfiles`, with the team's additions) or, in
/// the config file, from its own `agent`, `claudePath`, `command`, `args`,
/// `env`, … ([`AgentProfile::of_team`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TeamConfig {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    /// One of `agentProfiles` (or the built-in `echo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The driver; `claude` when neither this nor a profile says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentKind>,
    /// The `claude` executable (claude teams).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claude_path: Option<String>,
    /// The executable of a `command` team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Write-only through the API: reads show the names (`envNames`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// `ask` when neither this nor a profile says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_permission: Option<GrantPermission>,
    /// Tools the agent may use without asking (Claude's `--allowedTools`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_tools: Vec<String>,
    /// Tools the agent may not use (Claude's `--disallowedTools`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disallowed_tools: Vec<String>,
    /// Overrides `settings.idleTimeout` for this team (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<u64>,
    /// Start this team's default process at start-up.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prewarm: bool,
    /// How a `command` team gets its prompt (`arg` when nothing says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_via: Option<PromptVia>,
    /// The teams this team's agent may message (`"*"` or a list of names);
    /// every configured team when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_message: Option<TeamSet>,
    /// `worktree`: each conversation works in its own git worktree and
    /// branch `iris/<session id>` (the team's `path` must be in a git
    /// repository); `none` (default): all share the team's folder.
    #[serde(default)]
    pub isolation: crate::worktree::Isolation,
    /// How its agent is confined, over its profile's and the top level's.
    #[serde(default, skip_serializing_if = "SandboxConfig::is_default")]
    pub sandbox: SandboxConfig,
}

/// Some teams by name, or `"*"` for all.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum TeamSet {
    One(String),
    Many(Vec<String>),
}

impl TeamSet {
    pub fn contains(&self, team: &str) -> bool {
        match self {
            TeamSet::One(t) => t == "*" || t == team,
            TeamSet::Many(ts) => ts.iter().any(|t| t == "*" || t == team),
        }
    }

    /// The names as written (`"*"` among them, if it is).
    pub fn names(&self) -> &[String] {
        match self {
            TeamSet::One(t) => std::slice::from_ref(t),
            TeamSet::Many(ts) => ts,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    pub settings: Settings,
    pub api: ApiConfig,
    pub dashboard: DashboardConfig,
    pub database: DatabaseConfig,
    pub cluster: ClusterConfig,
    pub auth: AuthConfig,
    pub audit: AuditConfig,
    pub jobs: JobsConfig,
    pub webhooks: WebhooksConfig,
    pub history: HistoryConfig,
    /// How agent processes are confined, unless a profile or team says
    /// otherwise.
    pub sandbox: SandboxConfig,
    /// Named agents teams may run (`echo` is built in).
    pub agent_profiles: BTreeMap<String, AgentProfile>,
    /// Folders under which teams created through the API may work.
    pub team_roots: Vec<String>,
    pub teams: BTreeMap<String, TeamConfig>,
    /// Where it was read from; `None` for the embedded defaults.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// `IRIS_HOME` in force when it was loaded.
    #[serde(skip)]
    pub home: PathBuf,
    /// What relative paths were resolved against: the config file's
    /// folder, or for the embedded defaults the folder Iris started in.
    #[serde(skip)]
    pub base: PathBuf,
    /// The command line's settings over the file's (kept for reloads).
    #[serde(skip)]
    pub overrides: Overrides,
}

/// A configuration problem: the file, the key path, and what was expected.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: String,
    pub key_path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key_path.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key_path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Where configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// `--config`.
    pub flag: Option<PathBuf>,
    /// Settings given on the command line, over the file's.
    pub overrides: Overrides,
}

/// `iris serve --host/--port/--dashboard-port`: applied over the file
/// each time it is read, so a reload keeps them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// `api.host`.
    pub host: Option<String>,
    /// `api.port`.
    pub port: Option<u16>,
    /// `dashboard.http`.
    pub dashboard_port: Option<u16>,
}

impl Overrides {
    fn apply(&self, cfg: &mut Config) {
        if let Some(h) = &self.host {
            cfg.api.host = h.clone();
        }
        if let Some(p) = self.port {
            cfg.api.port = Some(p);
        }
        if let Some(p) = self.dashboard_port {
            cfg.dashboard.http = p;
        }
        cfg.overrides = self.clone();
    }
}

/// The first of a list of problems (there is always one).
fn first_error(mut errors: Vec<ConfigError>) -> ConfigError {
    if errors.is_empty() {
        return ConfigError {
            file: String::new(),
            key_path: String::new(),
            message: "the configuration is not valid".into(),
        };
    }
    errors.swap_remove(0)
}

/// serde's type names said as a user would: "expected u16" is "expected a
/// whole number from 0 to 65535".
fn in_user_words(message: &str) -> String {
    let mut out = message.to_owned();
    for (rust, words) in [
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected u64", "expected a whole number of 0 or more"),
        ("expected usize", "expected a whole number of 0 or more"),
        ("expected i64", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a sequence", "expected a list"),
        ("expected a map", "expected keys and values"),
    ] {
        if let Some(at) = out.find(rust)
            && !out[at + rust.len()..].starts_with(|c: char| c.is_ascii_alphanumeric())
        {
            out.replace_range(at..at + rust.len(), words);
        }
    }
    if let Some(rest) = out.strip_prefix("invalid type: ") {
        out = format!("wrong type: {rest}");
    }
    out
}

/// The field an "unknown field `x`, expected …" error names.
fn unknown_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
}

/// Remove the value at a key path (`a.b[2].c`, as errors print it) from a
/// YAML tree; false when nothing is there.
fn remove_at(tree: &mut serde_yaml_ng::Value, key_path: &str) -> bool {
    at_path(tree, key_path, None)
}

/// Replace the value at a key path; false when nothing is there.
fn set_at(tree: &mut serde_yaml_ng::Value, key_path: &str, value: serde_yaml_ng::Value) -> bool {
    at_path(tree, key_path, Some(value))
}

/// Remove (`None`) or replace the value at a key path.
fn at_path(
    tree: &mut serde_yaml_ng::Value,
    key_path: &str,
    value: Option<serde_yaml_ng::Value>,
) -> bool {
    use serde_yaml_ng::Value;
    // Split into map keys and sequence indexes.
    let mut steps: Vec<Result<String, usize>> = Vec::new();
    for part in key_path.split('.') {
        let (key, rest) = part.split_once('[').unwrap_or((part, ""));
        if !key.is_empty() {
            steps.push(Ok(key.to_owned()));
        }
        for idx in rest.split('[') {
            if let Ok(i) = idx.trim_end_matches(']').parse::<usize>() {
                steps.push(Err(i));
            }
        }
    }
    let Some((last, parents)) = steps.split_last() else {
        return false;
    };
    let mut at = tree;
    for step in parents {
        let next = match (step, at) {
            (Ok(k), Value::Mapping(m)) => m.get_mut(k.as_str()),
            (Err(i), Value::Sequence(items)) => items.get_mut(*i),
            _ => None,
        };
        match next {
            Some(v) => at = v,
            None => return false,
        }
    }
    match (last, at, value) {
        (Ok(k), Value::Mapping(m), None) => m.remove(k.as_str()).is_some(),
        (Ok(k), Value::Mapping(m), Some(v)) => m.get_mut(k.as_str()).map(|old| *old = v).is_some(),
        (Err(i), Value::Sequence(items), None) if *i < items.len() => {
            items.remove(*i);
            true
        }
        (Err(i), Value::Sequence(items), Some(v)) => {
            items.get_mut(*i).map(|old| *old = v).is_some()
        }
        _ => false,
    }
}

/// The embedded defaults: one `demo` team on the built-in echo agent in the
/// current folder, so `iris serve` works on a machine without Claude.
pub const EMBEDDED: &str = include_str!("embedded.yaml");

/// `IRIS_HOME`, or `~/.iris`.
pub fn iris_home() -> PathBuf {
    if let Some(h) = std::env::var_os("IRIS_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".iris")
}

fn env_lookup(home: &Path) -> impl Fn(&str) -> Option<String> + '_ {
    move |name| match std::env::var(name) {
        Ok(v) => Some(v),
        Err(_) if name == "IRIS_HOME" => Some(home.display().to_string()),
        Err(_) => None,
    }
}

impl Config {
    /// Find and load the configuration: `--config`, else `IRIS_CONFIG_PATH`,
    /// else `$IRIS_HOME/config.yaml`, else the embedded defaults.
    pub fn load(source: &ConfigSource) -> Result<Config, ConfigError> {
        Config::load_all(source).map_err(first_error)
    }

    /// [`Config::load`] with every problem of the file at once.
    pub fn load_all(source: &ConfigSource) -> Result<Config, Vec<ConfigError>> {
        let mut cfg = Config::read_all(source)?;
        source.overrides.apply(&mut cfg);
        Ok(cfg)
    }

    fn read_all(source: &ConfigSource) -> Result<Config, Vec<ConfigError>> {
        let home = iris_home();
        let explicit = source.flag.clone().or_else(|| {
            std::env::var_os("IRIS_CONFIG_PATH")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
        });
        let path = match explicit {
            Some(p) => p,
            None => {
                let default = home.join("config.yaml");
                if !default.exists() {
                    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
                    return Config::parse_all(
                        EMBEDDED,
                        "<embedded defaults>",
                        &cwd,
                        &home,
                        &env_lookup(&home),
                    );
                }
                default
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            vec![ConfigError {
                file: path.display().to_string(),
                key_path: String::new(),
                message: format!("cannot read the file: {e}"),
            }]
        })?;
        // An empty file (or comments only) is refused, not read as "all
        // defaults, no teams": it is what an editor's truncate-then-write
        // looks like halfway, and a reload must not apply it.
        if serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text).is_ok_and(|v| v.is_null()) {
            return Err(vec![ConfigError {
                file: path.display().to_string(),
                key_path: String::new(),
                message: "the file is empty (remove it to run on the embedded defaults)".into(),
            }]);
        }
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        let base = std::fs::canonicalize(&base).unwrap_or(base);
        let mut cfg = Config::parse_all(
            &text,
            &path.display().to_string(),
            &base,
            &home,
            &env_lookup(&home),
        )?;
        cfg.source = Some(path);
        Ok(cfg)
    }

    /// Parse YAML text; relative team paths are resolved against `base`.
    pub fn parse(
        text: &str,
        file: &str,
        base: &Path,
        home: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Config::parse_all(text, file, base, home, lookup).map_err(first_error)
    }

    /// [`Config::parse`] with every problem of the text, not only the
    /// first: a value of the wrong type, an unknown key or a missing
    /// variable is reported and left out, and reading goes on.
    pub fn parse_all(
        text: &str,
        file: &str,
        base: &Path,
        home: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Vec<ConfigError>> {
        let err = |key_path: String, message: String| ConfigError {
            file: file.to_owned(),
            key_path,
            message,
        };
        let mut errors = Vec::new();
        let mut parsed: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(text).map_err(|e| vec![err(String::new(), e.to_string())])?;
        if parsed.is_null() {
            parsed = serde_yaml_ng::Value::Mapping(Default::default());
        }
        // A whole `${VAR}` is typed by its value (`8080` a number); where
        // its key expects text, it is read again as text. Each round turns
        // one such value back or removes one wrong value, so this ends.
        let mut text = std::collections::HashSet::new();
        let mut reported = std::collections::HashSet::new();
        let mut cfg: Config = loop {
            let mut tree = parsed.clone();
            let mut retyped = Vec::new();
            if let Err(m) = interpolate_keeping(&mut tree, "", lookup, &text, &mut retyped) {
                errors.push(err(
                    m.key_path.clone(),
                    format!(
                        "environment variable `{}` is not set (use ${{{}:-default}} for a default)",
                        m.var, m.var
                    ),
                ));
                // Read on as empty text: reported once, no second error
                // for a required key left out.
                if set_at(
                    &mut parsed,
                    &m.key_path,
                    serde_yaml_ng::Value::String(String::new()),
                ) {
                    reported.insert(m.key_path);
                    continue;
                }
                return Err(errors);
            }
            match serde_path_to_error::deserialize(tree) {
                Ok(cfg) => break cfg,
                Err(e) => {
                    let path = e.path().to_string();
                    let message = e.into_inner().to_string();
                    let wants_text = message.contains("expected a string");
                    if wants_text && retyped.contains(&path) && text.insert(path.clone()) {
                        continue;
                    }
                    let path = if path == "." { String::new() } else { path };
                    // An unknown key at the top is reported at `.`; the
                    // key itself is what goes.
                    let wrong = match unknown_field(&message) {
                        Some(field) if path.is_empty() => field.to_owned(),
                        _ => path.clone(),
                    };
                    if !reported.contains(&wrong) {
                        errors.push(err(wrong.clone(), in_user_words(&message)));
                    }
                    if !wrong.is_empty() && errors.len() < 100 && remove_at(&mut parsed, &wrong) {
                        continue;
                    }
                    return Err(errors);
                }
            }
        };
        cfg.home = home.to_path_buf();
        cfg.base = base.to_path_buf();
        for (name, team) in cfg.teams.iter_mut() {
            if !valid_team_name(name) {
                errors.push(err(
                    format!("teams.{name}"),
                    "a team name is 1-64 letters, digits, `-` or `_`".into(),
                ));
            }
            team.path = resolve(base, &team.path).display().to_string();
        }
        // The a2a bridge reaches its remote through the SSRF guard, with
        // the hosts webhooks may reach.
        for profile in cfg.agent_profiles.values_mut() {
            if profile.agent == AgentKind::A2a {
                profile.a2a_allow_hosts = cfg.webhooks.allow_hosts.clone();
            }
        }
        for (name, profile) in &cfg.agent_profiles {
            if !valid_team_name(name) {
                errors.push(err(
                    format!("agentProfiles.{name}"),
                    "a profile name is 1-64 letters, digits, `-` or `_`".into(),
                ));
            }
            if profile.agent == AgentKind::A2a
                && !profile
                    .url
                    .as_deref()
                    .is_some_and(|u| u.starts_with("http://") || u.starts_with("https://"))
            {
                errors.push(err(
                    format!("agentProfiles.{name}.url"),
                    "an `a2a` profile needs the remote agent's card URL (http:// or https://)"
                        .into(),
                ));
            }
            if profile.agent.needs_command() && profile.command.as_deref().is_none_or(str::is_empty)
            {
                errors.push(err(
                    format!("agentProfiles.{name}.command"),
                    format!(
                        "a `{}` profile needs its executable",
                        profile.agent.as_str()
                    ),
                ));
            }
        }
        let profiles = cfg.profiles();
        for (name, team) in &cfg.teams {
            let unknown = team
                .can_message
                .iter()
                .flat_map(TeamSet::names)
                .find(|t| *t != "*" && !cfg.teams.contains_key(*t));
            if let Some(t) = unknown {
                errors.push(err(
                    format!("teams.{name}.canMessage"),
                    format!("`{t}` is not a configured team (expected team names or \"*\")"),
                ));
            }
            if let Err((field, problem)) = AgentProfile::of_team(team, &profiles) {
                errors.push(err(format!("teams.{name}.{field}"), problem));
            }
        }
        for root in cfg.team_roots.iter_mut() {
            *root = resolve(base, root).display().to_string();
        }
        let mut sandboxes: Vec<(String, bool, &mut SandboxConfig)> =
            vec![("sandbox".into(), true, &mut cfg.sandbox)];
        sandboxes.extend(
            cfg.agent_profiles
                .iter_mut()
                .map(|(n, p)| (format!("agentProfiles.{n}.sandbox"), false, &mut p.sandbox)),
        );
        sandboxes.extend(
            cfg.teams
                .iter_mut()
                .map(|(n, t)| (format!("teams.{n}.sandbox"), false, &mut t.sandbox)),
        );
        for (key, top, s) in sandboxes {
            for (k, m) in s.problems(&key, top) {
                errors.push(err(k, m));
            }
            s.resolve_paths(|p| resolve(base, p).display().to_string());
        }
        if let Some(p) = cfg.database.path.as_mut() {
            *p = resolve(base, p).display().to_string();
        }
        // The environment names the database over the file: one config
        // for several installations (and a password kept out of files).
        let mut url_key = "database.url";
        if let Some(url) = lookup("IRIS_DATABASE_URL").filter(|u| !u.trim().is_empty()) {
            cfg.database.url = Some(url.trim().to_owned());
            cfg.database.path = None;
            url_key = "IRIS_DATABASE_URL (environment)";
        }
        if let Some(url) = cfg.database.url.as_mut() {
            if cfg.database.path.is_some() {
                errors.push(err(
                    "database.path".into(),
                    "set database.url or database.path, not both (path is the same as url: sqlite:<path>)".into(),
                ));
            }
            match iris_storage::Backend::of(url) {
                Ok(iris_storage::Backend::Sqlite) => {
                    let file = iris_storage::sqlite_file(url).unwrap_or_default();
                    if file.is_empty() || url.contains('?') {
                        errors.push(err(
                            url_key.into(),
                            "a SQLite URL is sqlite: and a file path (sqlite:data/iris.db, sqlite:///var/lib/iris/iris.db)".into(),
                        ));
                    }
                    *url = iris_storage::sqlite_url(&resolve(base, file));
                }
                Ok(iris_storage::Backend::Postgres) => {
                    let place = iris_storage::postgres_place(url).unwrap_or_default();
                    if place.split('/').next().unwrap_or_default().is_empty() {
                        errors.push(err(
                            url_key.into(),
                            "a Postgres URL names its host: postgres://user@host:port/database"
                                .into(),
                        ));
                    }
                }
                Err(_) => {
                    errors.push(err(
                        url_key.into(),
                        "expected sqlite:<path> or postgres://user@host:port/database".into(),
                    ));
                }
            }
        }
        for (key, v, most) in [
            // Ten minutes: a wait longer than that is a hang.
            (
                "database.connectTimeout",
                cfg.database.connect_timeout,
                600_000,
            ),
            // A day; Postgres takes at most 2^31-1 ms.
            (
                "database.statementTimeout",
                cfg.database.statement_timeout,
                86_400_000,
            ),
        ] {
            if v == 0 || v > most {
                errors.push(err(key.into(), format!("must be from 1 to {most} (ms)")));
            }
        }
        let mut redis_key = "cluster.redisUrl";
        if let Some(url) = lookup("IRIS_REDIS_URL").filter(|u| !u.trim().is_empty()) {
            cfg.cluster.redis_url = Some(url.trim().to_owned());
            redis_key = "IRIS_REDIS_URL (environment)";
        }
        if let Some(url) = &cfg.cluster.redis_url
            && !(url.starts_with("redis://") && url.len() > "redis://".len())
        {
            errors.push(err(
                redis_key.into(),
                "expected redis://[user:password@]host:port[/db] (TLS to Redis is not supported: run it on a private network or through a tunnel)".into(),
            ));
        }
        let mut node_key = "cluster.nodeId";
        if let Some(id) = lookup("IRIS_NODE_ID").filter(|u| !u.trim().is_empty()) {
            cfg.cluster.node_id = Some(id.trim().to_owned());
            node_key = "IRIS_NODE_ID (environment)";
        }
        if let Some(id) = &cfg.cluster.node_id
            && !valid_node_id(id)
        {
            errors.push(err(
                node_key.into(),
                format!("`{id}`: a node id is 1 to 64 letters, digits, `.`, `_` or `-`"),
            ));
        }
        if let Some(s) = lookup("IRIS_CLUSTER_SECRET").filter(|s| !s.trim().is_empty()) {
            cfg.cluster.secret = Some(s.trim().to_owned());
        }
        if let Some(secret) = &cfg.cluster.secret {
            if secret.chars().count() < 32 {
                errors.push(err(
                    "cluster.secret".into(),
                    "at least 32 characters (for instance `openssl rand -hex 32`)".into(),
                ));
            }
            if cfg.cluster.advertise_url.is_none() {
                errors.push(err(
                    "cluster.advertiseUrl".into(),
                    "needed with cluster.secret: the other nodes forward calls for this node's teams there".into(),
                ));
            }
        }
        if let Some(ttl) = cfg.cluster.lease_ttl
            && !(2_000..=300_000).contains(&ttl)
        {
            errors.push(err(
                "cluster.leaseTtl".into(),
                "must be from 2000 to 300000 (ms)".into(),
            ));
        }
        if let Some(url) = &cfg.cluster.advertise_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            errors.push(err(
                "cluster.advertiseUrl".into(),
                "expected http://host:port or https://host:port".into(),
            ));
        }
        if cfg.database.max_connections == Some(0) {
            errors.push(err(
                "database.maxConnections".into(),
                "must be at least 1".into(),
            ));
        }
        let s = &cfg.settings;
        let positive = [
            ("settings.maxProcesses", s.max_processes as u64),
            ("settings.maxQueuePerTeam", s.max_queue_per_team as u64),
            ("settings.responseTimeout", s.response_timeout),
            ("settings.spawnTimeout", s.spawn_timeout),
            ("settings.maxLineBytes", s.max_line_bytes as u64),
        ];
        for (key, v) in positive {
            if v == 0 {
                errors.push(err(key.into(), "expected a number greater than 0".into()));
            }
        }
        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(errors)
        }
    }

    /// Problems that do not stop loading but stop a team from working:
    /// missing folders, missing agent binaries. Used by `iris config check`.
    pub fn problems(&self) -> Vec<ConfigError> {
        let file = self
            .source
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<embedded defaults>".into());
        let mut out = Vec::new();
        for (name, team) in &self.teams {
            if !Path::new(&team.path).is_dir() {
                out.push(ConfigError {
                    file: file.clone(),
                    key_path: format!("teams.{name}.path"),
                    message: format!("folder `{}` does not exist", team.path),
                });
            }
            if team.isolation == crate::worktree::Isolation::Worktree
                && Path::new(&team.path).is_dir()
                && !crate::worktree::is_repository(Path::new(&team.path))
            {
                out.push(ConfigError {
                    file: file.clone(),
                    key_path: format!("teams.{name}.isolation"),
                    message: format!(
                        "`worktree` needs a git repository, and `{}` is not in one",
                        team.path
                    ),
                });
            }
        }
        out
    }

    /// The API port: `api.port`, else `settings.httpPort`, else 1615.
    pub fn api_port(&self) -> u16 {
        self.api.port.or(self.settings.http_port).unwrap_or(1615)
    }

    /// The SQLite database file; `None` on Postgres.
    pub fn database_file(&self) -> Option<PathBuf> {
        iris_storage::sqlite_file(&self.database_url()).map(PathBuf::from)
    }

    /// `database.url`, else the SQLite file `database.path` names (or the
    /// default one).
    fn database_url(&self) -> String {
        self.database.url.clone().unwrap_or_else(|| {
            let file = self
                .database
                .path
                .as_ref()
                .map(PathBuf::from)
                .unwrap_or_else(|| self.home.join("data").join("iris.db"));
            iris_storage::sqlite_url(&file)
        })
    }

    /// The database and its pool, as the store opens them.
    pub fn database_settings(&self) -> iris_storage::DbSettings {
        let url = self.database_url();
        let postgres = iris_storage::postgres_place(&url).is_some();
        iris_storage::DbSettings {
            url,
            max_connections: self
                .database
                .max_connections
                .unwrap_or(if postgres { 16 } else { 8 }),
            connect_timeout: std::time::Duration::from_millis(self.database.connect_timeout),
            statement_timeout: std::time::Duration::from_millis(self.database.statement_timeout),
            read_only: false,
        }
    }

    /// What `database.url` names, for logs and health: the SQLite file, or
    /// the Postgres URL without its password.
    pub fn database_display(&self) -> String {
        match self.database_file() {
            Some(f) => f.display().to_string(),
            None => redact_url(&self.database_url()),
        }
    }
}

/// Team names appear in URLs, topics and session keys.
impl Config {
    /// The folder relative paths are resolved against: the config file's,
    /// else the folder Iris started in (the embedded defaults).
    pub fn base_dir(&self) -> PathBuf {
        self.base.clone()
    }
}

/// What teams may run and where, as one configuration says.
#[derive(Debug, Clone, PartialEq)]
pub struct TeamPolicy {
    /// `agentProfiles` with the built-in ones.
    pub profiles: BTreeMap<String, AgentProfile>,
    pub roots: TeamRoots,
    pub allow_custom_agents: bool,
    /// Relative team paths are resolved against this (the config file's folder).
    pub base: PathBuf,
}

impl Config {
    /// `agentProfiles` with the built-in profiles under names it leaves free.
    pub fn profiles(&self) -> BTreeMap<String, AgentProfile> {
        let mut all = builtin_profiles();
        all.extend(
            self.agent_profiles
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        all
    }

    /// The profiles, the roots (clear of the home, the database and this
    /// file) and the switch, for the teams of the API.
    pub fn team_policy(&self) -> TeamPolicy {
        let mut protected = vec![self.home.clone()];
        protected.extend(
            self.database_file()
                .and_then(|db| db.parent().map(Path::to_path_buf)),
        );
        protected.extend(self.source.clone());
        let home_dir = std::env::var_os("HOME").map(PathBuf::from);
        let roots = self
            .team_roots
            .iter()
            .map(PathBuf::from)
            .filter(|r| {
                let real = std::fs::canonicalize(r).unwrap_or_else(|_| r.clone());
                // Everything, or a whole home with its keys and dotfiles:
                // not a place for teams, whatever started Iris there.
                let wide = real.parent().is_none()
                    || home_dir
                        .as_ref()
                        .is_some_and(|h| std::fs::canonicalize(h).unwrap_or_else(|_| h.clone()) == real);
                if wide {
                    tracing::warn!(root = %r.display(), "a team root that is `/` or a home folder is too wide; ignored");
                }
                !wide
            })
            .collect();
        TeamPolicy {
            profiles: self.profiles(),
            roots: TeamRoots::new(roots, protected),
            allow_custom_agents: self.api.teams.allow_custom_agents,
            base: self.base_dir(),
        }
    }
}

/// A team created through the API, from JSON: `config` with the keys of
/// `teams.<name>` (camelCase), `path` relative to the config file's folder,
/// under one of `teamRoots` and clear of Iris's own files, `canMessage`
/// naming teams of `known` (or `name` itself). Unless `custom` (saved by an
/// admin while `api.teams.allowCustomAgents` is on, and still on), it runs
/// a profile, sets none of the agent keys ([`CUSTOM_AGENT_FIELDS`]) and
/// lets through no more than its profile (`grantPermission` capped at the
/// profile's). Who may set which key is the operation's business too
/// (`ops/team_config.rs`): this is what holds for every stored team, at
/// every start and reload.
///
/// # Errors
/// The key path (`path`, `profile`, `canMessage`, …) and what is wrong.
pub fn team_from_json(
    name: &str,
    config: serde_json::Value,
    policy: &TeamPolicy,
    known: &[String],
    custom: bool,
) -> Result<(TeamConfig, AgentProfile), (String, String)> {
    if !valid_team_name(name) {
        return Err((
            "name".into(),
            "a team name is 1-64 letters, digits, `-` or `_`".into(),
        ));
    }
    let custom = custom && policy.allow_custom_agents;
    if !custom && let Some(field) = custom_agent_field(&config) {
        return Err((
            field.to_owned(),
            "only a team saved by an admin while api.teams.allowCustomAgents is on sets its agent itself".into(),
        ));
    }
    let mut team: TeamConfig = serde_path_to_error::deserialize(config).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        let message = e.into_inner().to_string();
        // A missing or unknown field is named in the message; take it out.
        let field = if field.is_empty() {
            message.split('`').nth(1).unwrap_or_default().to_owned()
        } else {
            field
        };
        (field, message)
    })?;
    if !custom && team.profile.is_none() {
        let names: Vec<&str> = policy.profiles.keys().map(String::as_str).collect();
        return Err((
            "profile".into(),
            format!(
                "a team created through the API runs one of the agent profiles: {}",
                names.join(", ")
            ),
        ));
    }
    let folder = policy
        .roots
        .admit(&resolve(&policy.base, &team.path))
        .map_err(|problem| ("path".to_owned(), problem))?;
    team.path = folder.display().to_string();
    if team.isolation == crate::worktree::Isolation::Worktree {
        match crate::worktree::top_level(&folder) {
            None => {
                return Err((
                    "isolation".into(),
                    format!(
                        "`worktree` needs a git repository, and `{}` is not in one",
                        team.path
                    ),
                ));
            }
            // A worktree checks out the whole repository: it must be under a root too.
            Some(top) if policy.roots.admit(&top).is_err() => {
                return Err((
                    "isolation".into(),
                    "`worktree` checks out the whole repository, whose top folder is not under teamRoots".into(),
                ));
            }
            Some(_) => {}
        }
    }
    let unknown = team
        .can_message
        .iter()
        .flat_map(TeamSet::names)
        .find(|t| *t != "*" && *t != name && !known.iter().any(|k| k == *t));
    if let Some(t) = unknown {
        return Err((
            "canMessage".into(),
            format!("`{t}` is not a team (expected team names or \"*\")"),
        ));
    }
    let mut profile = AgentProfile::of_team(&team, &policy.profiles)?;
    if !custom
        && let Some(base) = team.profile.as_ref().and_then(|p| policy.profiles.get(p))
        && !profile.grant_permission.at_most(base.grant_permission)
    {
        // No looser than its profile, whatever was stored before the
        // profile was tightened or changed.
        profile.grant_permission = base.grant_permission;
    }
    Ok((team, profile))
}

/// The keys of a team that decide what its process is without a profile:
/// set through the API by admins only, and only with
/// `api.teams.allowCustomAgents`.
pub const CUSTOM_AGENT_FIELDS: [&str; 9] = [
    "sandbox",
    "agent",
    "command",
    "claudePath",
    "args",
    "env",
    "allowedTools",
    "disallowedTools",
    "promptVia",
];

/// The first key of `team` (JSON) among [`CUSTOM_AGENT_FIELDS`], if any.
pub fn custom_agent_field(team: &serde_json::Value) -> Option<&'static str> {
    CUSTOM_AGENT_FIELDS.into_iter().find(|f| {
        team.get(*f).is_some_and(|v| {
            !v.is_null() && v != &serde_json::json!([]) && v != &serde_json::json!({})
        })
    })
}

pub fn valid_team_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `url` without its password (`postgres://iris:***@db/iris`).
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((auth, host)) => match auth.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => base.to_owned(),
            },
            None => base.to_owned(),
        },
        None => base.to_owned(),
    };
    // `?password=…` is a password too (libpq reads it).
    if let Some(q) = query {
        let pairs: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let expanded = match p.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(rest),
        None => PathBuf::from(p),
    };
    let joined = if expanded.is_absolute() {
        expanded
    } else {
        base.join(expanded)
    };
    // Tidy `.` and `..` lexically so messages show a clean path, existing or not.
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// A commented starter configuration, written by `iris init`.
pub const STARTER: &str = include_str!("starter.yaml");

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let lookup = |name: &str| (name == "PORT").then(|| "9000".to_owned());
        Config::parse(
            text,
            "c.yaml",
            Path::new("/base"),
            Path::new("/home/x/.iris"),
            &lookup,
        )
    }

    #[test]
    fn an_a2a_profile_needs_its_card_url_and_gets_the_webhook_hosts() {
        let e = parse("agentProfiles:\n  far:\n    agent: a2a\n").unwrap_err();
        assert_eq!(e.key_path, "agentProfiles.far.url", "{e:?}");
        let e = parse("agentProfiles:\n  far:\n    agent: a2a\n    url: ftp://x/\n").unwrap_err();
        assert_eq!(e.key_path, "agentProfiles.far.url", "{e:?}");
        let ok = parse(
            "webhooks:\n  allowHosts: [agents.internal]\nagentProfiles:\n  far:\n    agent: a2a\n    url: https://agents.internal/r/\n    credential: s3cret-token\nteams:\n  review:\n    path: .\n    profile: far\n",
        )
        .unwrap();
        let far = &ok.agent_profiles["far"];
        assert_eq!(far.agent, AgentKind::A2a);
        assert_eq!(far.a2a_allow_hosts, ["agents.internal"]);
        // The credential is never written back out.
        let shown = serde_json::to_string(far).unwrap();
        assert!(!shown.contains("s3cret-token"), "{shown}");
        // A team of the a2a driver without a profile has no card to call.
        let e = parse("teams:\n  r:\n    path: .\n    agent: a2a\n").unwrap_err();
        assert!(e.message.contains("names a profile"), "{e:?}");
    }

    #[test]
    fn an_acp_profile_needs_its_command_named_by_its_key_path() {
        let e = parse("agentProfiles:\n  gem:\n    agent: acp\n    args: [--acp]\n").unwrap_err();
        assert_eq!(e.key_path, "agentProfiles.gem.command", "{e:?}");
        assert!(
            e.message.contains("`acp` profile needs its executable"),
            "{e:?}"
        );
        let e = parse("agentProfiles:\n  gem:\n    agent: acpx\n").unwrap_err();
        assert!(e.message.contains("`acp`"), "the drivers are listed: {e:?}");
        let ok = parse(
            "agentProfiles:\n  gem:\n    agent: acp\n    command: gemini\n    args: [--acp]\n",
        )
        .unwrap();
        assert_eq!(ok.agent_profiles["gem"].agent, AgentKind::Acp);
    }

    #[test]
    fn every_problem_of_a_file_is_reported_at_once() {
        let lookup = |_: &str| None;
        let text = "api:\n  port: nope\n  bogus: 1\nsettings:\n  maxProcesses: 0\n  colour: red\n\
teams:\n  a:\n    path: .\n    canMessage: [ghost]\n  b:\n    path: ${NOPE}\n  bad name:\n    path: .\n\
database:\n  url: mysql://x\nwhat: 1\n";
        let errors = Config::parse_all(text, "c.yaml", Path::new("/b"), Path::new("/h"), &lookup)
            .unwrap_err();
        let keys: Vec<&str> = errors.iter().map(|e| e.key_path.as_str()).collect();
        for key in [
            "teams.b.path",
            "api.port",
            "api.bogus",
            "settings.colour",
            "what",
            "teams.bad name",
            "teams.a.canMessage",
            "database.url",
            "settings.maxProcesses",
        ] {
            assert!(keys.contains(&key), "{key} not in {keys:?}");
        }
        // Each once: a variable left unset is not also a missing `path`.
        assert_eq!(keys.len(), 9, "{errors:?}");
        let port = errors.iter().find(|e| e.key_path == "api.port").unwrap();
        assert!(
            port.message
                .contains("expected a whole number from 0 to 65535"),
            "{port:?}"
        );
        assert!(errors.iter().all(|e| e.file == "c.yaml"));
        // `parse` gives the first of them.
        let first =
            Config::parse(text, "c.yaml", Path::new("/b"), Path::new("/h"), &lookup).unwrap_err();
        assert_eq!(first, errors[0]);
    }

    #[test]
    fn key_paths_are_removed_and_replaced_in_a_tree() {
        let mut tree: serde_yaml_ng::Value =
            serde_yaml_ng::from_str("a:\n  b: [1, {c: 2}, 3]\n").unwrap();
        assert!(remove_at(&mut tree, "a.b[1].c"));
        assert!(!remove_at(&mut tree, "a.b[1].c"), "already gone");
        assert!(set_at(&mut tree, "a.b[2]", "x".into()));
        assert!(!set_at(&mut tree, "a.z", "x".into()), "nothing there");
        assert!(remove_at(&mut tree, "a.b[0]"));
        assert_eq!(
            serde_yaml_ng::to_string(&tree).unwrap(),
            "a:\n  b:\n  - {}\n  - x\n"
        );
        assert!(!remove_at(&mut tree, ""));
    }

    #[test]
    fn the_command_line_overrides_hold_over_the_file() {
        let dir = std::env::temp_dir().join(format!("iris-overrides-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.yaml");
        std::fs::write(
            &file,
            "api:\n  port: 2000\n  host: 127.0.0.1\ndashboard:\n  http: 2001\n",
        )
        .unwrap();
        let source = ConfigSource {
            flag: Some(file.clone()),
            overrides: Overrides {
                host: Some("0.0.0.0".into()),
                port: Some(3000),
                dashboard_port: Some(3001),
            },
        };
        let cfg = Config::load(&source).unwrap();
        assert_eq!(cfg.api.host, "0.0.0.0");
        assert_eq!(cfg.api_port(), 3000);
        assert_eq!(cfg.dashboard.http, 3001);
        assert_eq!(cfg.overrides, source.overrides, "kept for reloads");
        let plain = Config::load(&ConfigSource {
            flag: Some(file),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(plain.api_port(), 2000);
        assert_eq!(plain.dashboard.http, 2001);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_cluster_settings_are_checked() {
        let cfg = parse(
            "cluster:\n  redisUrl: redis://iris:pw@10.0.0.2:6379/1\n  nodeId: node-a\n  advertiseUrl: http://10.0.0.5:4000\n",
        )
        .unwrap();
        assert_eq!(cfg.cluster.node_id.as_deref(), Some("node-a"));
        for (bad, key) in [
            ("cluster:\n  redisUrl: http://x\n", "cluster.redisUrl"),
            ("cluster:\n  redisUrl: rediss://x\n", "cluster.redisUrl"),
            ("cluster:\n  nodeId: a b\n", "cluster.nodeId"),
            (
                "cluster:\n  advertiseUrl: 10.0.0.5\n",
                "cluster.advertiseUrl",
            ),
            ("cluster:\n  redis: x\n", "cluster"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.key_path.starts_with(key), "{bad}: {e}");
        }
        let env = |name: &str| (name == "IRIS_NODE_ID").then(|| "n/1".to_owned());
        let e = Config::parse("", "x.yaml", Path::new("."), Path::new("."), &env).unwrap_err();
        assert!(e.key_path.contains("IRIS_NODE_ID"), "{e}");
    }

    #[test]
    fn the_database_is_a_url_a_path_or_the_environment() {
        let cfg = parse("database:\n  url: sqlite:data/x.db\n").unwrap();
        assert_eq!(cfg.database_settings().url, "sqlite:///base/data/x.db");
        assert_eq!(
            cfg.database_file().as_deref(),
            Some(Path::new("/base/data/x.db"))
        );
        let cfg = parse("database:\n  url: postgres://iris:pw@db:5432/iris\n").unwrap();
        assert_eq!(cfg.database_file(), None);
        assert_eq!(cfg.database_settings().max_connections, 16);
        assert_eq!(cfg.database_display(), "postgres://iris:***@db:5432/iris");
        for (yaml, key) in [
            ("database:\n  url: mysql://h/db\n", "database.url"),
            ("database:\n  url: 'sqlite:'\n", "database.url"),
            ("database:\n  url: postgres://\n", "database.url"),
            (
                "database:\n  url: sqlite:a.db\n  path: b.db\n",
                "database.path",
            ),
            (
                "database:\n  connectTimeout: 0\n",
                "database.connectTimeout",
            ),
            (
                "database:\n  connectTimeout: 18446744073709551615\n",
                "database.connectTimeout",
            ),
            (
                "database:\n  statementTimeout: 99999999999\n",
                "database.statementTimeout",
            ),
            (
                "database:\n  maxConnections: 0\n",
                "database.maxConnections",
            ),
        ] {
            let e = parse(yaml).unwrap_err();
            assert_eq!(e.key_path, key, "{yaml}: {e}");
        }
        let env = |name: &str| (name == "IRIS_DATABASE_URL").then(|| "garbage".to_owned());
        let e = Config::parse("", "c.yaml", Path::new("/b"), Path::new("/h"), &env).unwrap_err();
        assert!(e.key_path.contains("IRIS_DATABASE_URL"), "{e}");
        let env = |name: &str| (name == "IRIS_DATABASE_URL").then(|| "postgres://h/db".to_owned());
        let cfg = Config::parse(
            "database:\n  path: x.db\n",
            "c.yaml",
            Path::new("/b"),
            Path::new("/h"),
            &env,
        )
        .unwrap();
        assert_eq!(
            cfg.database_settings().url,
            "postgres://h/db",
            "the environment wins"
        );
        assert_eq!(
            redact_url("postgres://u@h/db?sslmode=require&password=SECRET"),
            "postgres://u@h/db?sslmode=require&password=***"
        );
    }

    #[test]
    fn embedded_and_starter_configs_parse() {
        let cfg = parse(EMBEDDED).unwrap();
        assert_eq!(cfg.teams["demo"].agent, Some(AgentKind::Echo));
        assert_eq!(cfg.api_port(), 1615);
        assert_eq!(
            cfg.database_file().as_deref(),
            Some(Path::new("/home/x/.iris/data/iris.db"))
        );
        let starter = parse(STARTER).unwrap();
        assert!(starter.teams.contains_key("demo"));
    }

    #[test]
    fn values_are_typed_after_interpolation_and_paths_resolved() {
        let cfg = parse("settings:\n  maxProcesses: ${N:-4}\napi:\n  port: ${PORT}\nteams:\n  web:\n    path: ./web\n    agent: echo\n").unwrap();
        assert_eq!(cfg.settings.max_processes, 4);
        assert_eq!(cfg.api_port(), 9000);
        assert_eq!(cfg.teams["web"].path, "/base/web");
    }

    /// A whole `${VAR}` goes into the type its key expects: a number where
    /// a number is expected, text where text is (env values, args,
    /// descriptions), each found by the key it fills.
    #[test]
    fn variables_take_the_type_their_key_expects() {
        let lookup = |name: &str| match name {
            "P" => Some("8080".to_owned()),
            "D" => Some("42".to_owned()),
            "T" => Some("true".to_owned()),
            _ => None,
        };
        let text = "settings:\n  maxProcesses: ${P}\nteams:\n  web:\n    path: .\n    agent: command\n    command: /bin/sh\n    description: ${D}\n    args: ['--max-turns', '${P}', '${T}']\n    env: {APP_PORT: '${P}', FLAG: '${T}'}\n";
        let cfg =
            Config::parse(text, "c.yaml", Path::new("/base"), Path::new("/h"), &lookup).unwrap();
        assert_eq!(cfg.settings.max_processes, 8080);
        let web = &cfg.teams["web"];
        assert_eq!(web.description.as_deref(), Some("42"));
        assert_eq!(web.args, ["--max-turns", "8080", "true"]);
        assert_eq!(web.env["APP_PORT"], "8080");
        assert_eq!(web.env["FLAG"], "true");
        // Text where a number is expected is still an error, at its key.
        let lookup = |_: &str| Some("many".to_owned());
        let e = Config::parse(
            "settings:\n  maxProcesses: ${P}\n",
            "c.yaml",
            Path::new("/b"),
            Path::new("/h"),
            &lookup,
        )
        .unwrap_err();
        assert_eq!(e.key_path, "settings.maxProcesses");
    }

    #[test]
    fn errors_name_file_key_path_and_expectation() {
        let e = parse("teams:\n  backend:\n    path: .\n    agent: robot\n").unwrap_err();
        assert_eq!(e.file, "c.yaml");
        assert_eq!(e.key_path, "teams.backend.agent");
        assert!(e.message.contains("unknown variant"), "{e}");
        let e = parse("settings:\n  maxProcesses: many\n").unwrap_err();
        assert_eq!(e.key_path, "settings.maxProcesses");
        assert!(
            e.to_string()
                .starts_with("c.yaml: settings.maxProcesses: wrong type"),
            "{e}"
        );
        let e = parse("settings:\n  maxProcess: 3\n").unwrap_err();
        assert!(e.message.contains("unknown field `maxProcess`"), "{e}");
        let e = parse("teams:\n  web:\n    path: ${NOPE}\n").unwrap_err();
        assert_eq!(e.key_path, "teams.web.path");
        assert!(e.message.contains("NOPE"));
        let e = parse("settings:\n  maxProcesses: 0\n").unwrap_err();
        assert_eq!(e.key_path, "settings.maxProcesses");
        let e = parse("teams:\n  a:\n    path: .\n    canMessage: [b]\n").unwrap_err();
        assert_eq!(e.key_path, "teams.a.canMessage");
        let cfg = parse("teams:\n  a:\n    path: .\n    canMessage: '*'\n  b:\n    path: .\n    canMessage: [a]\n").unwrap();
        assert!(cfg.teams["a"].can_message.as_ref().unwrap().contains("b"));
        assert!(!cfg.teams["b"].can_message.as_ref().unwrap().contains("b"));
        let e = parse("teams:\n  'bad name':\n    path: .\n").unwrap_err();
        assert_eq!(e.key_path, "teams.bad name");
    }

    #[test]
    fn problems_report_missing_folders() {
        let cfg = parse("teams:\n  ghost:\n    path: /definitely/not/here\n").unwrap();
        let p = cfg.problems();
        assert_eq!(p[0].key_path, "teams.ghost.path");
    }
}
