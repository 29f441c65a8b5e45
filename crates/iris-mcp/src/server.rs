//! The MCP server handler: who is calling, what the server offers, and the
//! requests it answers, each handed to the registry ([`crate::tools`],
//! [`crate::call`], [`crate::resources`]).

use std::sync::{Arc, Mutex};

use iris_core::{Ctx, Iris, IrisError};
#[allow(deprecated)] // logging: see `set_level`
use rmcp::model::SetLevelRequestParams;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, InitializeResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};

use crate::tools;

/// Who a request runs as.
#[derive(Debug, Clone)]
pub enum Identity {
    /// Every call runs as this caller (`iris mcp` on stdio: the operator
    /// who started it, as `iris call --local` does).
    Fixed(Ctx),
    /// Each HTTP request as its own caller: the gate authenticated it and
    /// left an [`iris_core::Ctx`] in the request's extensions (a session
    /// does not carry a caller from one request to the next).
    PerRequest,
}

/// Iris as an MCP server. One per session (2025-11-25) or per request
/// (2026-07-28, stateless); cheap to make.
#[derive(Clone)]
pub struct IrisMcp {
    pub(crate) iris: Arc<Iris>,
    identity: Identity,
    /// The least severe log level the client asked for with
    /// `logging/setLevel`, as its severity (0 = debug … 7 = emergency);
    /// none until it asks, so no log notification is sent unasked.
    pub(crate) log_level: Arc<Mutex<Option<u8>>>,
}

impl IrisMcp {
    pub fn new(iris: Arc<Iris>, identity: Identity) -> Self {
        IrisMcp {
            iris,
            identity,
            log_level: Arc::new(Mutex::new(None)),
        }
    }

    /// The context of the request `cx` carries.
    ///
    /// # Errors
    /// `UNAUTHORIZED` (as MCP's -32001 … mapped by [`tools::protocol_error`])
    /// when an HTTP request reached the handler without the gate's caller,
    /// which the gate never lets happen.
    pub(crate) fn ctx(&self, cx: &RequestContext<RoleServer>) -> Result<Ctx, McpError> {
        match &self.identity {
            Identity::Fixed(ctx) => Ok(ctx.clone()),
            Identity::PerRequest => cx
                .extensions
                .get::<http::request::Parts>()
                .and_then(|parts| parts.extensions.get::<Ctx>())
                .cloned()
                .ok_or_else(|| {
                    tools::protocol_error(&IrisError::new(
                        iris_core::ErrorKind::Unauthorized,
                        "an MCP request arrived without an authenticated caller",
                    ))
                }),
        }
    }
}

impl ServerHandler for IrisMcp {
    fn get_info(&self) -> InitializeResult {
        #[allow(deprecated)] // logging: see `set_level`
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .enable_logging()
            .build();
        InitializeResult::new(capabilities)
            .with_server_info(
                Implementation::new("iris", env!("CARGO_PKG_VERSION"))
                    .with_title("Iris")
                    .with_description("Coding agents as a programmable service"),
            )
            .with_instructions(
                "Iris runs coding agents, one team per project folder. `list_teams` names them; \
                 `send_message` (or `ask_message`) hands a team a message and returns its answer; \
                 `quick_message` queues one and returns its id for `get_message`.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        cx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let ctx = self.ctx(&cx)?;
        Ok(ListToolsResult::with_all_items(tools::visible(&ctx)))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let ctx = self.ctx(&cx)?;
        let log_level = self.log_level.lock().ok().and_then(|l| *l);
        crate::call::run(&self.iris, log_level, ctx, request, cx)
            .await
            .map(Into::into)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        cx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let ctx = self.ctx(&cx)?;
        crate::resources::list(&self.iris, ctx).await
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        cx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        self.ctx(&cx)?;
        Ok(crate::resources::templates())
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let ctx = self.ctx(&cx)?;
        crate::resources::read(&self.iris, ctx, &request.uri)
            .await
            .map(Into::into)
    }

    /// `logging/setLevel` (2025-11-25 §Logging; deprecated by SEP-2577 and
    /// kept for clients of that revision): from then on, while a
    /// `tools/call` waits for a team, the team's tool uses are sent as
    /// `notifications/message` at `info` and a failed turn at `error`, when
    /// at least as severe as the level asked for.
    #[allow(deprecated)]
    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.ctx(&cx)?;
        let severity = crate::call::severity(request.level);
        if let Ok(mut level) = self.log_level.lock() {
            *level = Some(severity);
        }
        Ok(())
    }
}
