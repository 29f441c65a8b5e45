//! `iris mcp`: MCP on stdio. By default the core runs in this process (the
//! agents are this process's children, as with the original Iris); with
//! `--connect` every request is relayed to a running server, so several
//! MCP hosts share one set of agents. Only protocol goes to stdout; logs go
//! to stderr (`IRIS_LOG` sets the filter).

use std::process::ExitCode;

use anyhow::Context as _;
use iris_core::Ctx;
use iris_core::config::ConfigSource;
use iris_mcp::{Identity, IrisMcp};

use crate::commands::{load, server_url, start};

/// `connect`: `None` runs in process; `Some("")` relays to this
/// `IRIS_HOME`'s server; `Some(url)` to that URL.
pub async fn run(source: ConfigSource, connect: Option<String>) -> anyhow::Result<ExitCode> {
    crate::logging::init("warn");
    let cfg = load(&source)?;
    match connect {
        Some(url) => {
            let url = if url.is_empty() {
                let port_file = cfg.home.join(".http.port");
                if !port_file.exists() {
                    anyhow::bail!(
                        "no running server found ({} is missing); start `iris serve` or pass --connect URL",
                        port_file.display()
                    );
                }
                format!("{}/mcp", server_url(&cfg, &port_file)?)
            } else {
                url
            };
            let key = crate::credentials::key(&cfg.home);
            let (forward, upstream) = iris_mcp::forward::connect(&url, key).await?;
            let served = iris_mcp::serve_stdio(forward).await;
            let _ = upstream.cancel().await;
            served.context("serving MCP on stdio")?;
        }
        None => {
            // Like `iris call --local`: no prewarming, and no recovery of
            // the database (a server may be running on it).
            let iris = start(cfg, false).await?;
            let handler = IrisMcp::new(iris.clone(), Identity::Fixed(Ctx::local()));
            let served = iris_mcp::serve_stdio(handler).await;
            iris.shutdown().await;
            served.context("serving MCP on stdio")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
