//! The core of Iris: everything a transport needs, nothing about transports.
//!
//! Layers, each using only those below it (docs/architecture.md draws them):
//!
//! 1. foundation — `clock`, `error` (the one error table), `ctx` (who calls),
//!    `session_id`, `auth` (iris-auth's types), `config`, `logs`,
//!    `recorder` (ordered writes), `bus` (the [`bus::Events`] service),
//!    `cluster` (this node, its link to the others, the cluster's
//!    events), `worktree`, `a2a` (a turn as an A2A task);
//! 2. a team — `team` (its configuration and how its agent starts);
//! 3. services holding state, one interface each — [`pool::Pool`] (agent
//!    processes and their turns), [`teams::Teams`] (teams and what they may
//!    run), [`sandbox::Sandbox`] (what an agent process may reach, by its
//!    team), `follow` (a turn's events);
//! 4. services built on those — [`access::Access`] (permissions),
//!    [`accounts::Accounts`] (sign-in, MFA),
//!    [`conversations::Conversations`] (sessions, worktrees),
//!    [`messaging::Messaging`] (a message becomes a turn; team-to-team
//!    chains), [`jobs::Jobs`] (the scheduler, webhooks), `reload`;
//!    `ownership` (which node runs a team; calls forwarded to it);
//! 5. [`Iris`], the front door, which starts and wires the services;
//! 6. `registry` (what an operation is; how a call is checked, run and
//!    audited) and `ops` (the operations, [`registry()`], [`dispatch`]).

pub mod a2a;
pub mod access;
pub mod accounts;
pub mod auth;
pub mod bus;
mod clock;
pub mod cluster;
pub mod config;
pub mod conversations;
mod ctx;
pub mod error;
pub mod follow;
mod iris;
pub mod jobs;
pub mod logs;
pub mod messaging;
mod ops;
pub mod ownership;
pub mod pool;
pub mod recorder;
pub mod registry;
pub mod reload;
pub mod sandbox;
mod services;
pub mod session_id;
pub mod team;
pub mod teams;
pub mod worktree;

pub use clock::{iso8601, now_ms};
pub use ctx::{Ctx, TurnWatch};
pub use error::{ErrorKind, IrisError, Result};
pub use follow::{Follower, TurnEvent, TurnStream};
pub use iris::{Health, Iris, StartOptions};
pub use messaging::Outgoing;
pub use ops::{dispatch, registry};
