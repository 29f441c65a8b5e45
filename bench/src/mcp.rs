//! MCP benchmark (issue: MCP): `tools/call` of `get_date` over Streamable
//! HTTP, revision 2026-07-28 (stateless), with an API key, load from `wrk`
//! on loopback, against (a) a bare hyper server answering the same bytes
//! and (b) a minimal rmcp server with that one tool and no gate, in the
//! same run. Targets: Iris ≥ 0.40× of (a), ≥ 0.80× of (b).

use std::sync::Arc;

use hyper::body::Bytes;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, InitializeResult,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::json;

use crate::http::{WrkResult, bare, secured, wrk};

const META: &str = r#"{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}"#;

fn body() -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"get_date","arguments":{{}},"_meta":{META}}}}}"#
    )
}

/// The one-tool rmcp server of baseline (b).
#[derive(Clone)]
struct DateServer;

impl ServerHandler for DateServer {
    fn get_info(&self) -> InitializeResult {
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema = json!({"type": "object"})
            .as_object()
            .cloned()
            .unwrap_or_default();
        Ok(ListToolsResult::with_all_items(vec![Tool::new(
            "get_date",
            "The server's current time.",
            Arc::new(schema),
        )]))
    }

    async fn call_tool(
        &self,
        _: CallToolRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let now = iris_core::now_ms();
        let value = json!({"timestamp": now, "iso": now.to_string(), "timezone": "UTC"});
        let mut r = CallToolResult::success(vec![ContentBlock::text(value.to_string())]);
        r.structured_content = Some(value);
        Ok(r.into())
    }
}

async fn rmcp_server() -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let service = StreamableHttpService::new(
        || Ok(DateServer),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // As Iris's own listener does: an event stream is written in several
    // pieces, which Nagle's algorithm would hold for the peer's delayed ACK
    // (40 ms a request here without it).
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = axum::Router::new().route_service("/mcp", service);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, task))
}

pub async fn run(seconds: u32) -> anyhow::Result<()> {
    let (iris, dir, key) = secured().await?;
    let server = iris_server::start(iris.clone(), None).await?;
    let iris_url = format!("http://{}/mcp", server.addr);
    // The bytes Iris answers, for the bare server to send.
    let answer = reqwest::Client::new()
        .post(&iris_url)
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "get_date")
        .body(body())
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    anyhow::ensure!(
        String::from_utf8_lossy(&answer).contains("\"timezone\":\"UTC\""),
        "unexpected answer: {}",
        String::from_utf8_lossy(&answer)
    );
    let (bare_addr, bare_task) = bare(Bytes::from(answer.to_vec())).await?;
    let (rmcp_addr, rmcp_task) = rmcp_server().await?;
    let lua = dir.path().join("mcp.lua");
    std::fs::write(
        &lua,
        format!(
            "wrk.method = \"POST\"\n\
             wrk.headers[\"Content-Type\"] = \"application/json\"\n\
             wrk.headers[\"Accept\"] = \"application/json, text/event-stream\"\n\
             wrk.headers[\"MCP-Protocol-Version\"] = \"2026-07-28\"\n\
             wrk.headers[\"Mcp-Method\"] = \"tools/call\"\n\
             wrk.headers[\"Mcp-Name\"] = \"get_date\"\n\
             wrk.body = '{}'\n",
            body()
        ),
    )?;
    let run_wrk = |url: String, bearer: Option<String>| {
        let lua = lua.clone();
        tokio::task::spawn_blocking(move || wrk(&url, 64, seconds, Some(&lua), bearer.as_deref()))
    };
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
        .max(1);
    println!(
        "MCP tools/call get_date (2026-07-28, stateless), 64 connections, {seconds}s each (wrk), {rounds} round(s)"
    );
    let (mut to_bare, mut to_rmcp) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        // Bare first and last; the ratio is to their mean (the machine drifts).
        let first = run_wrk(format!("http://{bare_addr}/mcp"), None).await??;
        let rmcp = run_wrk(format!("http://{rmcp_addr}/mcp"), None).await??;
        let ours: WrkResult = run_wrk(iris_url.clone(), Some(key.clone())).await??;
        let last = run_wrk(format!("http://{bare_addr}/mcp"), None).await??;
        let bare_rps = (first.rps + last.rps) / 2.0;
        to_bare.push(ours.rps / bare_rps);
        to_rmcp.push(ours.rps / rmcp.rps);
        println!(
            "  round {round}: bare {bare_rps:.0} req/s | rmcp {:.0} req/s p99 {:.2} ms | iris + key {:.0} req/s p99 {:.2} ms | iris {:.2}x of bare, {:.2}x of rmcp",
            rmcp.rps,
            rmcp.p99_ms,
            ours.rps,
            ours.p99_ms,
            ours.rps / bare_rps,
            ours.rps / rmcp.rps
        );
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "Medians: iris {:.2}x of bare hyper (target 0.40), {:.2}x of a minimal rmcp server (target 0.80)",
        median(to_bare),
        median(to_rmcp)
    );
    bare_task.abort();
    rmcp_task.abort();
    server.stop().await;
    iris.shutdown().await;
    Ok(())
}
