//! The core of Iris: everything a transport needs, nothing about transports.
//!
//! [`Iris`] holds the configuration, teams, storage, event bus and process
//! pool. Every operation is declared once in the [`registry()`] and run
//! through [`dispatch`] (or [`Iris::dispatch`]).
//!
//! Layers, each depending only on those before it: `ctx`, `config`, `bus`,
//! `pool`, `auth` (checks on the runtime), `iris` (the runtime),
//! `follow` (a turn's events), `registry` (what an operation is and how a
//! call is checked and audited), `ops` (the operations and `dispatch`).

pub mod auth;
pub mod bus;
mod chain;
pub mod config;
mod ctx;
pub mod error;
pub mod follow;
mod iris;
pub mod jobs;
pub mod logs;
mod ops;
pub mod pool;
pub mod recorder;
pub mod registry;
pub mod reload;
pub mod session_id;
pub mod team;
pub mod worktree;

pub use ctx::{Ctx, TurnWatch};
pub use error::{ErrorKind, IrisError, Result};
pub use follow::{Follower, TurnEvent, TurnStream};
pub use iris::{Iris, Outgoing, StartOptions};
pub use ops::{dispatch, registry};

/// Now, in Unix milliseconds (the timestamp unit of every Iris API).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
