//! The context of one call, as every transport hands it to the core.

use std::sync::Arc;

use iris_auth::{Origin, principal::Principal};

/// The context of one call: who, and from where.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub principal: Arc<Principal>,
    pub origin: Origin,
}

impl Ctx {
    pub fn local() -> Self {
        Ctx {
            principal: Arc::new(Principal::local()),
            origin: Origin::default(),
        }
    }

    pub fn request_id(&self) -> Option<&str> {
        self.origin.request_id.as_deref()
    }
}
