//! Permission approvals: what agents of `grantPermission: ask` teams wait
//! for (see `pool/permission.rs`): `approval_list`, `approval_get`,
//! `approval_decide`. Scope `approvals:manage`; a caller limited to some
//! teams sees and decides only theirs.

use std::sync::Arc;

use iris_storage::{ApprovalRow, Decision};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::system::Pagination;
use crate::auth::scope;
use crate::ctx::Ctx;
use crate::error::{IrisError, Result};
use crate::iris::Iris;
use crate::registry::Operation;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListParams {
    /// Only this team's.
    #[serde(default)]
    pub team: Option<String>,
    /// Only those one message's turn asked.
    #[serde(default)]
    #[schemars(length(min = 1, max = 64))]
    pub message_id: Option<String>,
    /// pending, allowed, denied or expired.
    #[serde(default)]
    #[schemars(regex(pattern = r"^(pending|allowed|denied|expired)$"))]
    pub status: Option<String>,
    #[serde(default = "super::one")]
    #[schemars(range(min = 1))]
    pub page: i64,
    #[serde(default = "super::fifty")]
    #[schemars(range(min = 1, max = 1000))]
    pub limit: i64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ApprovalList {
    /// Newest first.
    pub approvals: Vec<ApprovalRow>,
    pub pagination: Pagination,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetParams {
    #[schemars(length(min = 1, max = 64))]
    pub approval_id: String,
}

/// allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Deny,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DecideParams {
    #[schemars(length(min = 1, max = 64))]
    pub approval_id: String,
    pub decision: Verdict,
    /// Why; the agent reads it (with a denial above all).
    #[serde(default)]
    #[schemars(length(max = 2000))]
    pub reason: Option<String>,
    /// The input the tool runs with instead of the one asked for (with
    /// `allow`); for a tool that asks the user a question, the answer.
    #[serde(default)]
    pub updated_input: Option<serde_json::Map<String, serde_json::Value>>,
}

/// An approval the caller may see.
async fn visible(iris: &Iris, ctx: &Ctx, id: &str) -> Result<ApprovalRow> {
    iris.store()
        .approval(id)
        .await?
        .filter(|a| ctx.principal.can_see_team(&a.team))
        .ok_or_else(|| IrisError::not_found(format!("no approval `{id}`")))
}

async fn decide(iris: &Iris, ctx: &Ctx, p: DecideParams) -> Result<ApprovalRow> {
    if p.decision == Verdict::Deny && p.updated_input.is_some() {
        return Err(IrisError::validation(
            "updatedInput",
            "only with decision allow (a denied tool does not run)",
        ));
    }
    let row = visible(iris, ctx, &p.approval_id).await?;
    let taken = |row: &ApprovalRow| {
        IrisError::conflict(format!("approval `{}` is already {}", row.id, row.status))
            .with_details(json!({"approvalId": row.id, "status": row.status}))
    };
    if row.status != "pending" {
        return Err(taken(&row));
    }
    let here = iris.pool().awaits(&row.id);
    // A process of another running node of the cluster waits for it: the
    // decision is written here and that node hands it on (told at once,
    // or within a second from the database).
    let elsewhere = !here
        && match iris.store().approval_node(&row.id).await? {
            Some(owner) if Some(owner.as_str()) != iris.store().node() => {
                iris.node().is_live(&owner).await
            }
            _ => false,
        };
    if !here && !elsewhere {
        // Its process is gone (a crash, a stop): nobody can use the answer.
        let gone = Decision {
            status: "expired",
            reason: Some("the agent's process is gone".into()),
            updated_input: None,
            decided_by: "process".into(),
            at: crate::clock::now_ms(),
        };
        iris.store().decide_approval(&row.id, &gone).await?;
        let row = visible(iris, ctx, &row.id).await?;
        return Err(taken(&row));
    }
    let allow = p.decision == Verdict::Allow;
    let decision = Decision {
        status: if allow { "allowed" } else { "denied" },
        reason: p.reason,
        updated_input: p.updated_input.map(serde_json::Value::Object),
        decided_by: ctx.principal.actor(),
        at: crate::clock::now_ms(),
    };
    if !iris.store().decide_approval(&row.id, &decision).await? {
        let row = visible(iris, ctx, &row.id).await?;
        return Err(taken(&row));
    }
    let row = visible(iris, ctx, &row.id).await?;
    if here {
        iris.pool().hand_on(&row);
    } else {
        iris.node()
            .tell(crate::cluster::Notice::Approval(row.id.clone()))
            .await;
    }
    Ok(row)
}

pub(super) fn operations() -> Vec<Operation> {
    vec![
        Operation::new(
            "approval_list",
            "Permission approvals, newest first: what agents asked to use, and what was decided (filter by team, message and status).",
            Some(scope::APPROVALS_MANAGE),
            false,
            |iris: Arc<Iris>, ctx: Ctx, p: ListParams| async move {
                super::visible(&ctx, p.team.as_deref())?;
                let (approvals, total) = iris
                    .store()
                    .approvals(
                        ctx.principal.teams.as_deref(),
                        p.team.as_deref(),
                        p.message_id.as_deref(),
                        p.status.as_deref(),
                        p.limit,
                        Pagination::offset(p.page, p.limit),
                    )
                    .await?;
                Ok(ApprovalList {
                    approvals,
                    pagination: Pagination::of(p.page, p.limit, total),
                })
            },
        ),
        Operation::new(
            "approval_get",
            "One permission approval: the tool, its input, and its state.",
            Some(scope::APPROVALS_MANAGE),
            false,
            |iris: Arc<Iris>, ctx: Ctx, p: GetParams| async move {
                visible(&iris, &ctx, &p.approval_id).await
            },
        ),
        Operation::new(
            "approval_decide",
            "Allow or deny a pending permission approval (once; a second decision is CONFLICT). With allow, updatedInput changes what the tool runs with.",
            Some(scope::APPROVALS_MANAGE),
            true,
            |iris: Arc<Iris>, ctx: Ctx, p: DecideParams| async move { decide(&iris, &ctx, p).await },
        ),
    ]
}
