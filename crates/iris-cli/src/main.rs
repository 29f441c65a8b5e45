//! `iris`: the single binary of Iris.

mod a2a_agent;
mod admin;
mod cluster;
mod commands;
mod credentials;
mod db;
mod jobs;
mod logging;
mod mcp;
mod reload;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// glibc's allocator showed up as ~15% of a loaded server's CPU (lock
/// contention between worker threads); mimalloc avoids that (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "iris",
    version,
    about = "Iris: coding agents as a programmable service"
)]
struct Cli {
    /// Configuration file (default: $IRIS_CONFIG_PATH, else $IRIS_HOME/config.yaml, else built-in defaults).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run Iris: keep the teams' agents, serve the API.
    #[command(after_help = SERVE_HELP)]
    Serve {
        /// Address the API listens on, over `api.host` [default: 127.0.0.1].
        #[arg(long, value_name = "ADDR")]
        host: Option<String>,
        /// API port, over `api.port` (0: a free one) [default: 1615].
        #[arg(long)]
        port: Option<u16>,
        /// Dashboard port, over `dashboard.http` [default: 3100; the
        /// dashboard is also at /ui on the API port].
        #[arg(long, value_name = "PORT")]
        dashboard_port: Option<u16>,
        /// Allow `api.requireAuth: false` on a non-loopback address.
        #[arg(long)]
        insecure: bool,
    },
    /// Serve MCP on stdin/stdout (for MCP hosts such as Claude Code or Claude Desktop).
    Mcp {
        /// Relay to a running `iris serve` instead of running the agents in
        /// this process: its `/mcp` URL, or nothing for the server of this
        /// IRIS_HOME. The key comes from $IRIS_API_KEY or $IRIS_HOME/credentials.
        #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "")]
        connect: Option<String>,
    },
    /// Manage API keys.
    Key {
        #[command(subcommand)]
        action: admin::KeyAction,
        /// Work on the database directly, even if a server is running.
        #[arg(long, global = true)]
        local: bool,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        action: admin::UserAction,
        #[arg(long, global = true)]
        local: bool,
    },
    /// Teams created at run time: add, edit, remove.
    Team {
        #[command(subcommand)]
        action: admin::TeamAction,
        #[arg(long, global = true)]
        local: bool,
    },
    /// Permission approvals: list them, allow or deny one.
    Approvals {
        #[command(subcommand)]
        action: admin::ApprovalAction,
        #[arg(long, global = true)]
        local: bool,
    },
    /// Jobs: queue a task for a team, list, read, cancel, see deliveries.
    Jobs {
        #[command(subcommand)]
        action: jobs::JobAction,
        #[arg(long, global = true)]
        local: bool,
    },
    /// Read and verify the audit trail.
    Audit {
        #[command(subcommand)]
        action: admin::AuditAction,
        #[arg(long, global = true)]
        local: bool,
    },
    /// The database: apply migrations; copy an installation to another
    /// database (SQLite and Postgres, either way).
    Db {
        #[command(subcommand)]
        action: db::DbAction,
    },
    /// The nodes of this cluster (docs/scale-out.md).
    Cluster {
        #[command(subcommand)]
        action: cluster::ClusterAction,
    },
    /// Run one operation and print its JSON result.
    Call {
        /// Operation name (see `iris tools`).
        operation: String,
        /// Parameters as a JSON object.
        #[arg(long, default_value = "{}")]
        params: String,
        /// Run in this process against the configuration, without a server.
        #[arg(long)]
        local: bool,
    },
    /// Send a message to a team and print the answer.
    Tell {
        team: String,
        message: String,
        /// Milliseconds to wait (0: until done).
        #[arg(long, default_value_t = 0)]
        timeout: i64,
        #[arg(long)]
        from: Option<String>,
        /// Run in this process against the configuration, without a server.
        #[arg(long)]
        local: bool,
    },
    /// List the operations: name, scope and what each does (--json: with
    /// their parameter and result schemas).
    Tools {
        /// Every operation as JSON, with its schemas.
        #[arg(long)]
        json: bool,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "bash: iris completions bash > ~/.local/share/bash-completion/completions/iris\n\
zsh:  iris completions zsh > ~/.zfunc/_iris   (with fpath+=~/.zfunc before compinit)\n\
fish: iris completions fish > ~/.config/fish/completions/iris.fish"
    )]
    Completions { shell: clap_complete::Shell },
    /// Write a commented starter configuration to $IRIS_HOME/config.yaml.
    Init {
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
}

/// Where `iris serve` finds what it needs, printed under its options.
const SERVE_HELP: &str = "\
Files:
  IRIS_HOME          Iris's own folder [default: ~/.iris]: credentials (the
                     admin key of the first start), data/iris.db, node-id
  configuration      --config, else $IRIS_CONFIG_PATH, else
                     $IRIS_HOME/config.yaml, else the embedded defaults
                     (a `demo` team on the echo agent in this folder)
  IRIS_DATABASE_URL  the database over `database.url`
  IRIS_REDIS_URL     the cluster's Redis over `cluster.redisUrl`

--host, --port and --dashboard-port stay in force across reloads of the
file. Every setting: docs/configuration.md";

#[derive(Subcommand)]
enum ConfigAction {
    /// Validate the configuration; exits non-zero with the problems.
    Check,
}

fn main() -> ExitCode {
    // The echo agent is spawned by the pool as `iris agent-echo …`; it takes
    // the path before clap so it starts fast and accepts Claude's flags as is.
    let mut args = std::env::args();
    match args.nth(1).as_deref() {
        Some(iris_agent::launch::ECHO_SUBCOMMAND) => {
            let code = iris_agent::echo::run(args.collect());
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
        // The `a2a` driver's bridge to a remote agent (a2a_agent.rs).
        Some(iris_agent::launch::A2A_SUBCOMMAND) => {
            let code = a2a_agent::run(args.collect());
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
        _ => {}
    }
    let cli = Cli::parse();
    let mut source = iris_core::config::ConfigSource {
        flag: cli.config,
        ..Default::default()
    };
    match cli.command {
        Command::Config {
            action: ConfigAction::Check,
        } => commands::config_check(&source),
        Command::Init { force } => commands::init(force),
        Command::Tools { json } => commands::tools(json),
        Command::Completions { shell } => {
            // Written whole at the end: the generator panics on a closed
            // pipe (`| head`), a plain write reports it.
            let mut script = Vec::new();
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "iris",
                &mut script,
            );
            match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("iris: writing the completion script: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve {
            host,
            port,
            dashboard_port,
            insecure,
        } => {
            source.overrides = iris_core::config::Overrides {
                host,
                port,
                dashboard_port,
            };
            commands::run_async(commands::serve(source, insecure))
        }
        Command::Mcp { connect } => commands::run_async(mcp::run(source, connect)),
        Command::Key { action, local } => commands::run_async(admin::key(source, action, local)),
        Command::User { action, local } => commands::run_async(admin::user(source, action, local)),
        Command::Team { action, local } => commands::run_async(admin::team(source, action, local)),
        Command::Approvals { action, local } => {
            commands::run_async(admin::approvals(source, action, local))
        }
        Command::Jobs { action, local } => commands::run_async(jobs::jobs(source, action, local)),
        Command::Audit { action, local } => {
            commands::run_async(admin::audit(source, action, local))
        }
        Command::Db { action } => commands::run_async(db::run(source, action)),
        Command::Cluster { action } => commands::run_async(cluster::run(source, action)),
        Command::Call {
            operation,
            params,
            local,
        } => commands::run_async(commands::call(source, operation, params, local)),
        Command::Tell {
            team,
            message,
            timeout,
            from,
            local,
        } => {
            let mut params =
                serde_json::json!({"toTeam": team, "message": message, "timeout": timeout});
            if let Some(f) = from {
                params["fromTeam"] = f.into();
            }
            commands::run_async(commands::call(
                source,
                "send_message".into(),
                params.to_string(),
                local,
            ))
        }
    }
}
