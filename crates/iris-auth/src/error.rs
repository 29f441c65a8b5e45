//! Failures of the auth layer. The core maps each to its one error type
//! (`iris_core::IrisError`), so HTTP and JSON-RPC see the usual table.

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No, or bad, credentials (401).
    #[error("{message}")]
    Unauthorized {
        message: String,
        details: Option<Value>,
    },
    /// Authenticated, not allowed (403).
    #[error("{0}")]
    Forbidden(String),
    /// Bad input: the field and what is wrong with it (400).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// Too many attempts; try again after this many milliseconds (429).
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_ms: u64,
    },
    #[error(transparent)]
    Store(#[from] iris_storage::StoreError),
    #[error("{0}")]
    Internal(String),
}

impl AuthError {
    pub fn unauthorized(message: impl Into<String>) -> Self {
        AuthError::Unauthorized {
            message: message.into(),
            details: None,
        }
    }
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        AuthError::Invalid {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, AuthError>;
