//! Agent drivers: how Iris talks to an agent CLI.
//!
//! This crate knows nothing about teams, sessions or storage. It knows how to
//! build the command line of an agent ([`launch`]), how to read and write the
//! stream-json protocol ([`protocol`]) and translate the Agent Client
//! Protocol to it ([`acp`]), how to own a child process safely
//! ([`process`]), and it carries the built-in `echo` agent ([`echo`]) that
//! speaks the same protocol as Claude Code so tests exercise the real path.

pub mod acp;
pub mod echo;
pub mod launch;
pub mod lines;
pub mod process;
pub mod protocol;
pub mod sandbox;

pub use acp::AcpStart;
pub use launch::{AgentKind, INHERITED_ENV, LaunchSpec, PromptVia, SessionMode, inherited_env};
pub use process::{AgentProcess, LineError, ProcessError};
pub use protocol::{AgentEvent, ToolResult, ToolUse};
pub use sandbox::{Confinement, Support};
