//! The subcommands.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use iris_core::config::{Config, ConfigSource, STARTER, iris_home};
use iris_core::{Ctx, Iris, StartOptions, now_ms, registry};
use serde_json::Value;

/// Run an async command on a fresh runtime.
pub fn run_async(f: impl Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("iris: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(f) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("iris: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn config_check(source: &ConfigSource) -> ExitCode {
    let cfg = match Config::load_all(source) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!(
                "{} problem{}",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            );
            return ExitCode::FAILURE;
        }
    };
    let problems = cfg.problems();
    let origin = cfg
        .source
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "<embedded defaults>".into());
    if problems.is_empty() {
        let n = cfg.teams.len();
        println!("{origin}: ok ({n} team{})", if n == 1 { "" } else { "s" });
        return ExitCode::SUCCESS;
    }
    for p in &problems {
        eprintln!("{p}");
    }
    ExitCode::FAILURE
}

pub fn init(force: bool) -> ExitCode {
    let path = iris_home().join("config.yaml");
    if path.exists() && !force {
        eprintln!("{} exists; pass --force to overwrite it", path.display());
        return ExitCode::FAILURE;
    }
    let written = path
        .parent()
        .map(std::fs::create_dir_all)
        .unwrap_or(Ok(()))
        .and_then(|_| std::fs::write(&path, STARTER));
    match written {
        Ok(()) => {
            println!("wrote {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot write {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

pub fn tools(json: bool) -> ExitCode {
    let all = registry().all();
    if json {
        let list: Vec<Value> = all.iter().map(|o| o.describe()).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    // A short table: name, scope, the description's first sentence.
    let width = all.iter().map(|o| o.name.len()).max().unwrap_or(0);
    let scope_width = all
        .iter()
        .map(|o| o.scope.unwrap_or("-").len())
        .max()
        .unwrap_or(0);
    for o in all {
        let first = o.description.split(". ").next().unwrap_or_default();
        println!(
            "{:width$}  {:scope_width$}  {}",
            o.name,
            o.scope.unwrap_or("-"),
            first.trim_end_matches('.'),
        );
    }
    eprintln!(
        "{} operations; `iris tools --json` gives their parameter and result schemas",
        all.len()
    );
    ExitCode::SUCCESS
}

/// The configuration, every error of it as they print (a line each).
pub fn load(source: &ConfigSource) -> anyhow::Result<Config> {
    Config::load_all(source).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("{}", lines.join("\n"))
    })
}

pub async fn start(cfg: Config, serving: bool) -> anyhow::Result<Arc<Iris>> {
    // A one-shot command neither prewarms teams nor recovers the database
    // (a server may be running on it).
    let options = StartOptions {
        prewarm: serving,
        recover: serving,
        ..StartOptions::default()
    };
    Iris::start(cfg, options)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))
        .context("starting Iris")
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Agents run as Iris's own OS user; without this they could read Iris's
/// environment and memory through `/proc/<pid>/` (environ, mem), which
/// become root's once the process is not dumpable. Core dumps go too.
fn not_dumpable() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_DUMPABLE only changes this process's flag.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot make the process non-dumpable");
    }
}

pub async fn serve(source: ConfigSource, insecure: bool) -> anyhow::Result<ExitCode> {
    crate::logging::init("info");
    not_dumpable();
    let mut signals = Signals::listen()?;
    let cfg = load(&source)?;
    // The dashboard's port serves the whole API too.
    let mut binds = vec![&cfg.api.host];
    if cfg.dashboard.enabled {
        binds.push(&cfg.dashboard.host);
    }
    let exposed = binds.into_iter().find(|h| !is_loopback(h));
    if let Some(host) = exposed.filter(|_| cfg.api.enabled && !cfg.api.require_auth && !insecure) {
        anyhow::bail!(
            "refusing to serve {host} without authentication: api.requireAuth is false and the address is not loopback; \
             turn requireAuth on, bind 127.0.0.1 (api.host and dashboard.host), or pass --insecure if you really mean it"
        );
    }
    let iris = start(cfg, true).await?;
    if iris.config().api.enabled && iris.config().api.require_auth {
        first_key(&iris).await?;
    }
    let teams: Vec<String> = iris.teams().all().iter().map(|t| t.name.clone()).collect();
    let server = if iris.config().api.enabled {
        let port_file = iris.config().home.join(".http.port");
        Some(iris_server::start(iris.clone(), Some(port_file)).await?)
    } else {
        None
    };
    tracing::info!(
        teams = ?teams,
        api = ?server.as_ref().map(|s| s.addr),
        database = %iris.config().database_display(),
        "Iris is running; Ctrl-C stops it"
    );
    let _watcher = crate::reload::watch(&iris)?;
    while signals.wait().await == Signal::Reload {
        tracing::info!("SIGHUP: reloading the configuration file");
        let _ = iris.reload().await;
    }
    tracing::info!("shutting down: finishing requests, then stopping the agents");
    if let Some(s) = server {
        s.stop().await;
    }
    iris.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// First start with authentication on and no key: create an admin key,
/// show it once, and keep it in `$IRIS_HOME/credentials` for the CLI.
async fn first_key(iris: &Arc<Iris>) -> anyhow::Result<()> {
    if iris
        .auth()
        .has_keys()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
    {
        return Ok(());
    }
    let (key, info) = iris
        .auth()
        .create_key(
            iris_core::auth::NewKey::with_role("admin", "admin"),
            &iris_core::auth::Principal::local(),
            &Default::default(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("creating the first API key: {e}"))?;
    let path = crate::credentials::write(&iris.config().home, &key)?;
    println!(
        "\nNo API keys existed, so Iris created an admin key ({}). It is shown this once:\n\n    {key}\n\n\
         It is saved in {} (mode 0600), which the iris CLI reads.\n\
         Send it as `Authorization: Bearer <key>`; create narrower keys with `iris key create`.\n",
        info.id,
        path.display()
    );
    Ok(())
}

/// SIGINT and SIGTERM (stop) and SIGHUP (reload the configuration),
/// listened for from the moment they are created, so a signal during
/// start-up is not lost to the default handler.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

/// What a signal asks for.
#[derive(PartialEq)]
enum Signal {
    Stop,
    Reload,
}

impl Signals {
    fn listen() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
                int: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
                hup: signal(SignalKind::hangup()).context("listening for SIGHUP")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn wait(&mut self) -> Signal {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => Signal::Stop,
            _ = self.int.recv() => Signal::Stop,
            _ = self.hup.recv() => Signal::Reload,
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Stop
        }
    }
}

pub async fn call(
    source: ConfigSource,
    operation: String,
    params: String,
    local: bool,
) -> anyhow::Result<ExitCode> {
    crate::logging::init("warn");
    let params: Value = match serde_json::from_str(&params) {
        Ok(v) => v,
        Err(e) => {
            let err = iris_core::IrisError::new(
                iris_core::ErrorKind::MalformedJson,
                format!("--params is not JSON: {e}"),
            );
            println!("{}", err.body(None, now_ms()));
            return Ok(ExitCode::FAILURE);
        }
    };
    let cfg = load(&source)?;
    let port_file = cfg.home.join(".http.port");
    if !local && !port_file.exists() {
        anyhow::bail!(
            "no running server found ({} is missing); start `iris serve` or pass --local",
            port_file.display()
        );
    }
    let (ok, body) = match invoke(cfg, &operation, params, local).await? {
        Ok(v) => (true, v),
        Err(v) => (false, v),
    };
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Run an operation: on the server of this `IRIS_HOME` when it runs (its
/// port file exists) unless `local`, else in this process (without
/// prewarming teams). `Err` holds the error body.
pub async fn invoke(
    cfg: Config,
    operation: &str,
    params: Value,
    local: bool,
) -> anyhow::Result<Result<Value, Value>> {
    let port_file = cfg.home.join(".http.port");
    if !local && port_file.exists() {
        return remote(&cfg, &port_file, operation, params).await;
    }
    crate::logging::init("warn");
    let iris = start(cfg, false).await?;
    let result = iris.dispatch(Ctx::local(), operation, params).await;
    iris.shutdown().await;
    Ok(result.map_err(|e| e.body(None, now_ms())))
}

/// The base URL (`http://host:port`) of the server of this `IRIS_HOME`,
/// from its port file.
pub fn server_url(cfg: &Config, port_file: &std::path::Path) -> anyhow::Result<String> {
    let port = std::fs::read_to_string(port_file)
        .with_context(|| format!("reading {}", port_file.display()))?;
    let host = match cfg.api.host.as_str() {
        "0.0.0.0" | "::" => "127.0.0.1".to_owned(),
        h if h.contains(':') => format!("[{h}]"),
        h => h.to_owned(),
    };
    Ok(format!("http://{host}:{}", port.trim()))
}

/// `POST /rpc` on the running server, with the key of `$IRIS_HOME/credentials`.
async fn remote(
    cfg: &Config,
    port_file: &std::path::Path,
    operation: &str,
    params: Value,
) -> anyhow::Result<Result<Value, Value>> {
    let url = format!("{}/rpc", server_url(cfg, port_file)?);
    let mut req = reqwest::Client::new()
        .post(&url)
        .json(&serde_json::json!({"method": operation, "params": params}));
    if let Some(key) = crate::credentials::key(&cfg.home) {
        req = req.bearer_auth(key);
    }
    let resp = req.send().await.with_context(|| {
        format!(
            "cannot reach the server at {url} ({} exists); is it running? --local runs without it",
            port_file.display()
        )
    })?;
    let ok = resp.status().is_success();
    let body: Value = resp
        .json()
        .await
        .context("the server answered something that is not JSON")?;
    Ok(if ok { Ok(body) } else { Err(body) })
}
