//! The core of Iris: everything a transport needs, nothing about transports.
//!
//! [`Iris`] holds the configuration, teams, storage, event bus and process
//! pool. Every operation is declared once in the [`registry`] and run through
//! [`registry::dispatch`] (or [`Iris::dispatch`]).

pub mod auth;
pub mod bus;
pub mod config;
pub mod error;
mod iris;
pub mod logs;
mod ops;
pub mod pool;
pub mod recorder;
pub mod registry;
pub mod team;

pub use error::{ErrorKind, IrisError, Result};
pub use iris::{Iris, Outgoing, StartOptions, TurnStream};
pub use registry::{Ctx, dispatch, registry};

/// Now, in Unix milliseconds (the timestamp unit of every Iris API).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
