//! The operations of Iris, one module per area, and the registry of this
//! build with `dispatch` by name. Each operation is declared once with
//! [`Operation::new`]; transports never add logic of their own. The
//! operations depend on the core (`Iris`, `registry`); the core does not
//! depend on them.

mod account;
mod admin;
mod approvals;
mod jobs;
mod messages;
mod pushes;
mod sessions;
pub(crate) mod system;
mod team_config;
mod teams;
mod webhooks;

use std::future::Future;
use std::sync::{Arc, LazyLock};

use serde_json::{Value, json};

use crate::ctx::Ctx;
use crate::error::{ErrorKind, IrisError, Result};
use crate::iris::Iris;
use crate::registry::{Encoding, Operation, Output, Registry, dispatch_op};

/// The registry of this build.
pub fn registry() -> &'static Registry {
    static REGISTRY: LazyLock<Registry> = LazyLock::new(|| Registry::new(all()));
    &REGISTRY
}

/// Run `operation` (by name) for `ctx`: what every transport ends in.
pub async fn dispatch(iris: Arc<Iris>, ctx: Ctx, operation: &str, params: Value) -> Result<Value> {
    dispatch_as(iris, ctx, operation, params, Encoding::Value)
        .await?
        .into_value()
}

/// [`dispatch`], with the result in `encoding`.
pub async fn dispatch_as(
    iris: Arc<Iris>,
    ctx: Ctx,
    operation: &str,
    params: Value,
    encoding: Encoding,
) -> Result<Output> {
    let Some(op) = registry().get(operation) else {
        return Err(IrisError::new(
            ErrorKind::MethodNotFound,
            format!("unknown operation `{operation}`"),
        )
        .with_details(json!({"operation": operation})));
    };
    dispatch_op(iris, ctx, op, params, encoding).await
}

impl Iris {
    /// Run one operation (every transport ends here).
    pub async fn dispatch(
        self: &Arc<Self>,
        ctx: Ctx,
        operation: &str,
        params: Value,
    ) -> Result<Value> {
        dispatch(self.clone(), ctx, operation, params).await
    }

    /// [`Iris::dispatch`] of an operation already looked up, with the
    /// result as JSON text, for transports that send it as is. (Not an
    /// `async fn`: its future is the dispatch's own, without a wrapper
    /// holding the arguments a second time.)
    pub fn dispatch_text(
        self: &Arc<Self>,
        ctx: Ctx,
        operation: &'static Operation,
        params: Value,
    ) -> impl Future<Output = Result<Vec<u8>>> + Send + use<> {
        use futures_util::FutureExt;
        dispatch_op(self.clone(), ctx, operation, params, Encoding::Text).map(|out| match out? {
            Output::Text(t) => Ok(t),
            Output::Value(v) => {
                serde_json::to_vec(&v).map_err(|e| IrisError::internal("encoding a result", e))
            }
        })
    }
}

pub(crate) fn all() -> Vec<Operation> {
    let mut ops = Vec::new();
    ops.extend(messages::operations());
    ops.extend(sessions::operations());
    ops.extend(teams::operations());
    ops.extend(team_config::operations());
    ops.extend(system::operations());
    ops.extend(approvals::operations());
    ops.extend(jobs::operations());
    ops.extend(webhooks::operations());
    ops.extend(pushes::operations());
    ops.extend(account::operations());
    ops.extend(admin::operations());
    ops
}

/// The first page, the default of every list's `page`.
fn one() -> i64 {
    1
}

/// The default `limit` of the lists.
fn fifty() -> i64 {
    50
}

/// A team filter the caller named must be a team it may see.
fn visible(ctx: &Ctx, team: Option<&str>) -> Result<()> {
    match team {
        Some(t) if !ctx.principal.can_see_team(t) => Err(IrisError::team_not_found(t)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_has_schemas_and_unique_names() {
        let r = registry();
        let mut names: Vec<&str> = r.all().iter().map(|o| o.name).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "duplicate operation names");
        for op in r.all() {
            assert_eq!(op.params_schema["type"], "object", "{}", op.name);
            assert!(!op.description.is_empty());
        }
        for name in [
            "send_message",
            "ask_message",
            "quick_message",
            "session_cancel",
            "session_reboot",
            "session_delete",
            "session_fork",
            "session_report",
            "team_status",
            "team_wake",
            "team_launch",
            "team_sleep",
            "team_wake_all",
            "list_teams",
            "get_logs",
            "get_date",
        ] {
            assert!(r.get(name).is_some(), "missing {name}");
        }
    }

    #[test]
    fn every_operation_is_documented() {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/operations.md"
        ))
        .unwrap();
        for op in registry().all() {
            assert!(
                doc.contains(&format!("`{}`", op.name)),
                "docs/operations.md lacks `{}`",
                op.name
            );
            if let Some(scope) = op.scope {
                assert!(
                    doc.contains(&format!("`{}` | `{scope}`", op.name)),
                    "scope of `{}` undocumented",
                    op.name
                );
            }
        }
    }

    #[test]
    fn validation_names_each_field() {
        let op = registry().get("send_message").unwrap();
        // No shortcut for an empty call to an operation that needs parameters.
        assert!(!op.accepts_empty());
        assert!(op.validate(&json!({})).contains_key("toTeam"));
        let status = registry().get("get_status").unwrap();
        assert!(status.accepts_empty() && status.validate(&json!({})).is_empty());
        let problems = op.validate(&json!({"message": "", "timeout": -5}));
        assert!(problems.contains_key("toTeam"), "{problems:?}");
        assert!(problems.contains_key("message"), "{problems:?}");
        assert!(problems.contains_key("timeout"), "{problems:?}");
        assert!(
            op.validate(&json!({"toTeam": "demo", "message": "hi"}))
                .is_empty()
        );
        assert!(
            !op.validate(&json!({"toTeam": "demo", "message": "hi", "bogus": 1}))
                .is_empty()
        );
    }
}
