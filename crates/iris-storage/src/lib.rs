//! Durable state of Iris in SQLite (WAL): sessions, turns and turn events.
//!
//! Records here are plain data; the core decides what they mean. Every
//! timestamp is Unix milliseconds.

mod approvals;
mod audit;
mod error;
mod jobs;
mod keys;
mod sessions;
mod store;
mod teams;
mod turns;
mod users;
mod webhooks;
mod writes;

pub use approvals::{ApprovalRow, Decision};
pub use audit::{AuditFilter, AuditRow, AuditVerdict, AuditWitness, GENESIS};
pub use jobs::{Callback, JOB_BATCH, JobFilter, JobRecord, JobRow, JobWriter, callback_json};
pub use keys::KeyRow;
pub use sessions::SessionRow;
pub use teams::SavedTeam;
pub use turns::{EventRow, HistoryFilter, TurnFinish, TurnRow};
pub use users::{RefreshRow, SignInRow, UserRow};
pub use webhooks::{AttemptOutcome, AttemptRow, DeliveryRow, WebhookRow};
pub use writes::StoreWrite;

/// A storage failure, with what was being done.
pub use error::{Result, StoreError};
pub use store::Store;
