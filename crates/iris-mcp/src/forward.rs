//! `iris mcp --connect URL`: an MCP server on stdio that relays every
//! request to a running `iris serve`'s `/mcp` (with the key of
//! `$IRIS_HOME/credentials`), so several MCP hosts share one set of agents.
//! Progress and log notifications come back to the stdio client; a
//! cancelled request is cancelled upstream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResponse, CancelledNotificationParam,
    ClientRequest, InitializeResult, ListResourceTemplatesResult, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, ProgressNotificationParam, ProgressToken,
    ReadResourceRequestParams, ReadResourceResponse, ServerResult,
};
// Logging (SEP-2577): relayed for clients of 2025-11-25.
#[allow(deprecated)]
use rmcp::model::{LoggingMessageNotificationParam, SetLevelRequestParams};
use rmcp::service::{
    NotificationContext, Peer, PeerRequestOptions, RequestContext, RunningService,
};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{
    ClientHandler, ErrorData as McpError, RoleClient, RoleServer, ServerHandler, ServiceExt,
};

/// Upstream progress tokens (rmcp gives each request its own) to where
/// their notifications go. An async lock: notifications are relayed one at
/// a time, in order (see [`Progress`]).
type Relay = Arc<tokio::sync::Mutex<HashMap<ProgressToken, Progress>>>;

/// One call's progress on its way to the stdio client. rmcp handles each
/// incoming notification in its own task, so they can reach the relay out
/// of order, and a client may drop a notification whose progress is below
/// the last it saw. Iris numbers a call's progress 1, 2, 3…: each is held
/// until those before it went, and whatever is held when the call ends
/// goes then, in order.
struct Progress {
    token: ProgressToken,
    peer: Peer<RoleServer>,
    next: u64,
    held: std::collections::BTreeMap<u64, ProgressNotificationParam>,
}

impl Progress {
    /// Send what is due: the next in order, and those after it that came early.
    async fn send_due(&mut self) {
        while let Some(p) = self.held.remove(&self.next) {
            self.next += 1;
            self.send(p).await;
        }
    }

    /// The call ended: send whatever is still held, in order.
    async fn flush(&mut self) {
        for (_, p) in std::mem::take(&mut self.held) {
            self.send(p).await;
        }
    }

    async fn send(&self, mut p: ProgressNotificationParam) {
        p.progress_token = self.token.clone();
        let _ = self.peer.notify_progress(p).await;
    }
}

/// The stdio side: every request goes to the upstream server.
#[derive(Clone)]
pub struct Forward {
    upstream: Peer<RoleClient>,
    info: InitializeResult,
    relay: Relay,
    /// The stdio client, once it has sent a request (for log messages).
    downstream: Arc<Mutex<Option<Peer<RoleServer>>>>,
}

/// The upstream side: notifications back to the stdio client.
pub struct Upstream {
    relay: Relay,
    downstream: Arc<Mutex<Option<Peer<RoleServer>>>>,
}

/// Connect to `url` (an Iris `/mcp`) with `key`, returning the stdio
/// handler and the upstream connection (keep it alive while serving).
///
/// # Errors
/// The server is unreachable, refuses the key, or does not speak MCP.
pub async fn connect(
    url: &str,
    key: Option<String>,
) -> anyhow::Result<(Forward, RunningService<RoleClient, Upstream>)> {
    let relay = Relay::default();
    let downstream = Arc::new(Mutex::new(None));
    let mut config = StreamableHttpClientTransportConfig::with_uri(url);
    if let Some(key) = key {
        config = config.auth_header(key);
    }
    let transport = StreamableHttpClientTransport::from_config(config);
    let running = Upstream {
        relay: relay.clone(),
        downstream: downstream.clone(),
    }
    .serve(transport)
    .await
    .map_err(|e| anyhow::anyhow!("connecting to {url}: {e}"))?;
    let peer = running
        .peer()
        .peer_info()
        .ok_or_else(|| anyhow::anyhow!("{url} sent no server information"))?;
    // What the stdio client is told: the upstream server's capabilities and
    // name; the protocol version is negotiated with the stdio client.
    let mut info = InitializeResult::new(peer.capabilities.clone());
    if let Some(server) = &peer.server_info {
        info = info.with_server_info(server.clone());
    }
    if let Some(instructions) = &peer.instructions {
        info = info.with_instructions(instructions.clone());
    }
    let forward = Forward {
        upstream: running.peer().clone(),
        info,
        relay,
        downstream,
    };
    Ok((forward, running))
}

impl Forward {
    fn remember(&self, cx: &RequestContext<RoleServer>) {
        if let Ok(mut d) = self.downstream.lock() {
            d.get_or_insert_with(|| cx.peer.clone());
        }
    }
}

/// An upstream failure as this side's error: the upstream's JSON-RPC error
/// as it came, else an internal error naming the cause.
fn relayed(e: rmcp::ServiceError) -> McpError {
    match e {
        rmcp::ServiceError::McpError(e) => e,
        other => McpError::internal_error(format!("the Iris server: {other}"), None),
    }
}

impl ServerHandler for Forward {
    fn get_info(&self) -> InitializeResult {
        self.info.clone()
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        cx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        self.remember(&cx);
        self.upstream.list_tools(request).await.map_err(relayed)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        self.remember(&cx);
        let wanted = cx.meta.get_progress_token();
        // Held until the call's entry is in: a first notification that
        // overtakes the answer to sending waits for it instead of being lost.
        let mut relay = self.relay.lock().await;
        let handle = self
            .upstream
            .send_request_with_option(
                ClientRequest::CallToolRequest(CallToolRequest::new(request)),
                PeerRequestOptions::no_options(),
            )
            .await
            .map_err(relayed)?;
        let (id, token) = (handle.id.clone(), handle.progress_token.clone());
        let wanted_progress = wanted.is_some();
        if let Some(wanted) = wanted {
            let progress = Progress {
                token: wanted,
                peer: cx.peer.clone(),
                next: 1,
                held: Default::default(),
            };
            relay.insert(token.clone(), progress);
        }
        drop(relay);
        let result = tokio::select! {
            r = handle.await_response() => r.map_err(relayed),
            () = cx.ct.cancelled() => {
                let reason = Some("cancelled by the stdio client".to_owned());
                let _ = self.upstream.notify_cancelled(CancelledNotificationParam::new(Some(id), reason)).await;
                Err(McpError::internal_error("the client cancelled the request", None))
            }
        };
        // rmcp hands each notification to a task of its own: the last ones,
        // read before the answer, may not have reached the relay yet. A
        // moment for them (only for a call whose client wants progress).
        if wanted_progress {
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        if let Some(mut progress) = self.relay.lock().await.remove(&token) {
            progress.flush().await;
        }
        match result? {
            ServerResult::CallToolResult(r) => Ok(r.into()),
            other => Err(McpError::internal_error(
                format!("the Iris server answered tools/call with {other:?}"),
                None,
            )),
        }
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        cx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        self.remember(&cx);
        self.upstream.list_resources(request).await.map_err(relayed)
    }

    async fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        cx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        self.remember(&cx);
        self.upstream
            .list_resource_templates(request)
            .await
            .map_err(relayed)
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        self.remember(&cx);
        self.upstream
            .read_resource(request)
            .await
            .map(Into::into)
            .map_err(relayed)
    }

    #[allow(deprecated)]
    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.remember(&cx);
        self.upstream.set_level(request).await.map_err(relayed)
    }
}

impl ClientHandler for Upstream {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _cx: NotificationContext<RoleClient>,
    ) {
        let mut relay = self.relay.lock().await;
        let Some(progress) = relay.get_mut(&params.progress_token) else {
            return;
        };
        let n = params.progress;
        if n.fract() == 0.0 && n >= progress.next as f64 {
            progress.held.insert(n as u64, params);
            progress.send_due().await;
        } else {
            // Not one of Iris's numbered steps: as it comes.
            progress.send(params).await;
        }
    }

    #[allow(deprecated)]
    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _cx: NotificationContext<RoleClient>,
    ) {
        let peer = self.downstream.lock().ok().and_then(|d| d.clone());
        if let Some(peer) = peer {
            let _ = peer.notify_logging_message(params).await;
        }
    }
}
