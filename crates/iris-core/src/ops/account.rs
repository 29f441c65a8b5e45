//! The caller's own sign-in sessions (seed 003 `GET /sessions`, `POST
//! /sessions/:id/terminate`): any signed-in caller sees and ends its own;
//! an administrator every one.

use std::sync::Arc;

use iris_storage::SignInRow;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ctx::Ctx;
use crate::iris::Iris;
use crate::ops::system::NoParams;
use crate::registry::Operation;

#[derive(Debug, Serialize, JsonSchema)]
pub struct SignInList {
    /// Live ones, the most recently refreshed first.
    pub sessions: Vec<SignInRow>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TerminateParams {
    /// The sign-in session (its refresh-token family id).
    #[schemars(length(min = 1, max = 128))]
    pub session_id: String,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Terminated {
    pub message: String,
    pub session_id: String,
    pub timestamp: i64,
}

pub(super) fn operations() -> Vec<Operation> {
    vec![
        Operation::new(
            "sign_in_list",
            "The caller's sign-in sessions (every one for an administrator): when each began and was last refreshed.",
            None,
            false,
            |iris: Arc<Iris>, ctx: Ctx, _p: NoParams| async move {
                Ok(SignInList {
                    sessions: iris.auth().sign_ins(&ctx.principal).await?,
                })
            },
        ),
        Operation::new(
            "sign_in_terminate",
            "End a sign-in session: its refresh token stops working (its short-lived access tokens expire on their own).",
            None,
            true,
            |iris: Arc<Iris>, ctx: Ctx, p: TerminateParams| async move {
                iris.auth()
                    .terminate_sign_in(&ctx.principal, &p.session_id, &ctx.origin)
                    .await?;
                Ok(Terminated {
                    message: "Session terminated successfully".into(),
                    session_id: p.session_id,
                    timestamp: crate::clock::now_ms(),
                })
            },
        ),
    ]
}
