//! Durable state of Iris, in SQLite (WAL; the embedded default) or
//! Postgres: sessions, turns and their events, jobs, webhooks, approvals,
//! teams, keys, users, sign-ins and the audit chain. The queries are
//! written once; what differs per backend is in `backend`.
//!
//! Records here are plain data; the core decides what they mean. Every
//! timestamp is Unix milliseconds.

mod approvals;
mod audit;
mod backend;
mod copy;
mod error;
mod jobs;
mod keys;
mod leases;
mod nodes;
mod pushes;
mod sessions;
mod sql;
mod store;
mod teams;
#[doc(hidden)]
pub mod testing;
mod transcripts;
mod turns;
mod users;
mod webhooks;
mod writes;

pub use approvals::{ApprovalRow, Decision};
pub use audit::{AuditFilter, AuditRow, AuditVerdict, AuditWitness, GENESIS};
pub use copy::CopyReport;
pub use jobs::{Callback, JOB_BATCH, JobFilter, JobRecord, JobRow, JobWriter, callback_json};
pub use keys::KeyRow;
pub use leases::LeaseRow;
pub use nodes::NodeRow;
pub use pushes::PushConfigRow;
pub use sessions::{ConversationFilter, ConversationRow, SessionRow};
pub use teams::SavedTeam;
pub use transcripts::TranscriptRow;
pub use turns::{EventRow, HistoryFilter, PairRow, TurnFinish, TurnRow};
pub use users::{RefreshRow, SignInRow, UserRow};
pub use webhooks::{AttemptOutcome, AttemptRow, DeliveryRow, WebhookRow};
pub use writes::StoreWrite;

pub use backend::{Backend, DbSettings, postgres_place, sqlite_file, sqlite_url};
/// A storage failure, with what was being done.
pub use error::{Fenced, Patience, Result, StoreError};
pub use store::{PoolState, RESTARTED, Store};
