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
    let cfg = match Config::load(source) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
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
        println!("{origin}: ok ({} teams)", cfg.teams.len());
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

pub fn tools() -> ExitCode {
    let list: Vec<Value> = registry().all().iter().map(|o| o.describe()).collect();
    println!(
        "{}",
        serde_json::to_string_pretty(&list).unwrap_or_default()
    );
    ExitCode::SUCCESS
}

async fn start(source: ConfigSource) -> anyhow::Result<Arc<Iris>> {
    let cfg = Config::load(&source).map_err(|e| anyhow::anyhow!("{e}"))?;
    Iris::start(cfg, StartOptions::default())
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))
        .context("starting Iris")
}

pub async fn serve(source: ConfigSource) -> anyhow::Result<ExitCode> {
    crate::logging::init("info");
    let mut signals = Signals::listen()?;
    let iris = start(source).await?;
    let teams: Vec<String> = iris.teams().iter().map(|t| t.name.clone()).collect();
    let server = if iris.config.api.enabled {
        let port_file = iris.config.home.join(".http.port");
        Some(iris_server::start(iris.clone(), Some(port_file)).await?)
    } else {
        None
    };
    tracing::info!(
        teams = ?teams,
        api = ?server.as_ref().map(|s| s.addr),
        database = %iris.config.database_path().display(),
        "Iris is running; Ctrl-C stops it"
    );
    signals.wait().await;
    tracing::info!("shutting down: finishing requests, then stopping the agents");
    if let Some(s) = server {
        s.stop().await;
    }
    iris.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// SIGINT and SIGTERM, listened for from the moment they are created, so a
/// signal during start-up is not lost to the default handler.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn listen() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
                int: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn wait(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
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
    if !local {
        return remote(source, &operation, params).await;
    }
    let iris = start(source).await?;
    let result = iris.dispatch(Ctx::local(), &operation, params).await;
    iris.shutdown().await;
    match result {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("{}", serde_json::to_string_pretty(&e.body(None, now_ms()))?);
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Run an operation on the server this `IRIS_HOME` belongs to, via `POST /rpc`.
async fn remote(source: ConfigSource, operation: &str, params: Value) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(&source).map_err(|e| anyhow::anyhow!("{e}"))?;
    let port_file = cfg.home.join(".http.port");
    let port = std::fs::read_to_string(&port_file).with_context(|| {
        format!(
            "no running server found ({} is missing); start `iris serve` or pass --local",
            port_file.display()
        )
    })?;
    let host = match cfg.api.host.as_str() {
        "0.0.0.0" | "::" => "127.0.0.1".to_owned(),
        h if h.contains(':') => format!("[{h}]"),
        h => h.to_owned(),
    };
    let url = format!("http://{host}:{}/rpc", port.trim());
    let resp = reqwest::Client::new()
        .post(&url)
        .json(&serde_json::json!({"method": operation, "params": params}))
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let ok = resp.status().is_success();
    let body: Value = resp
        .json()
        .await
        .context("the server answered something that is not JSON")?;
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
