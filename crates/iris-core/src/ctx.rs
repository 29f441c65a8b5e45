//! The context of one call, as every transport hands it to the core.

use std::sync::Arc;

use iris_auth::{Origin, principal::Principal};

use crate::follow::Follower;

/// Where a sending operation hands the turn it started, followed from its
/// start, for a transport that reports a call's progress while the caller
/// waits (MCP progress notifications) or must stop that turn when the
/// caller gives up (MCP cancellation) — a turn of this node, or of the
/// team's owner when the call was forwarded. The operation's result is
/// unchanged.
pub type TurnWatch = tokio::sync::mpsc::UnboundedSender<Follower>;

/// The context of one call: who, and from where.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub principal: Arc<Principal>,
    pub origin: Origin,
    /// Set by transports that follow the turns a call starts (see
    /// [`TurnWatch`]); `None` for everyone else.
    pub watch: Option<TurnWatch>,
    /// Forwarded here by another node (which authenticated the caller):
    /// carried out here, never forwarded again.
    pub forwarded: bool,
}

impl Ctx {
    /// A call of `principal` from `origin`.
    pub fn new(principal: Arc<Principal>, origin: Origin) -> Self {
        Ctx {
            principal,
            origin,
            watch: None,
            forwarded: false,
        }
    }

    pub fn local() -> Self {
        Ctx::new(Arc::new(Principal::local()), Origin::default())
    }

    pub fn request_id(&self) -> Option<&str> {
        self.origin.request_id.as_deref()
    }
}
