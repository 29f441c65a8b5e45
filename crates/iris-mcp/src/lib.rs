//! MCP for Iris: every operation of the registry as an MCP tool, teams and
//! conversation reports as resources, on rmcp (the official Rust SDK).
//! Iris's code here only maps the registry onto rmcp's [`ServerHandler`];
//! the protocol, its framing and both revisions are rmcp's.
//!
//! - [`http_service`]: Streamable HTTP for `/mcp` on the API port, mounted
//!   behind the server's gate, which authenticates each request and leaves
//!   its caller as an [`iris_core::Ctx`] in the request's extensions.
//!   Revision 2025-11-25 (initialize, `Mcp-Session-Id`, the GET stream,
//!   resumption with `Last-Event-ID`) and 2026-07-28 (stateless,
//!   `server/discover`, `Mcp-Method`) are served on the one endpoint, as
//!   each request negotiates.
//! - [`serve_stdio`]: `iris mcp`, the core in this process.
//! - [`forward`]: `iris mcp --connect URL`, stdio relayed to a running
//!   server's `/mcp`.
//!
//! [`ServerHandler`]: rmcp::ServerHandler

mod call;
pub mod forward;
mod resources;
mod server;
mod tools;

use std::sync::Arc;
use std::time::Duration;

use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

pub use rmcp::transport::streamable_http_server::session::local::LocalSessionManager as Sessions;
pub use server::{Identity, IrisMcp};

/// The protocol revisions Iris serves, newest first.
pub const REVISIONS: [&str; 2] = ["2026-07-28", "2025-11-25"];

/// The Streamable HTTP service of `/mcp`: a tower service taking any
/// request body, answering with rmcp's. `max_body_bytes` caps a POST's body
/// (413); `stop` ends every session when the server stops.
///
/// Host and Origin are not checked here: the gate in front checks them for
/// every route (the same allow-list as the rest of the API).
/// `sessions` keeps the open sessions (the server checks who owns each).
pub fn http_service(
    iris: Arc<iris_core::Iris>,
    max_body_bytes: usize,
    stop: CancellationToken,
    sessions: Arc<LocalSessionManager>,
) -> StreamableHttpService<IrisMcp, LocalSessionManager> {
    let config = StreamableHttpServerConfig::default()
        .disable_allowed_hosts()
        .with_max_request_body_bytes(max_body_bytes)
        .with_sse_keep_alive(Some(Duration::from_secs(15)))
        .with_cancellation_token(stop);
    StreamableHttpService::new(
        move || Ok(IrisMcp::new(iris.clone(), Identity::PerRequest)),
        sessions,
        config,
    )
}

/// Whether session `id` is still open (not ended by its client, by its
/// idle time or by the server).
pub async fn session_open(sessions: &Sessions, id: &str) -> bool {
    sessions.sessions.read().await.contains_key(id)
}

/// Serve `handler` on this process's stdin and stdout until the client
/// closes them. Nothing but protocol goes to stdout; logs go to stderr.
///
/// # Errors
/// The handshake failed (the client sent no valid `initialize`).
pub async fn serve_stdio<H: rmcp::ServerHandler>(handler: H) -> anyhow::Result<()> {
    use rmcp::ServiceExt;
    let running = handler
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| anyhow::anyhow!("MCP handshake on stdio: {e}"))?;
    running
        .waiting()
        .await
        .map_err(|e| anyhow::anyhow!("MCP on stdio: {e}"))?;
    Ok(())
}
