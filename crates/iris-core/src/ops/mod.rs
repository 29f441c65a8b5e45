//! The operations of Iris, one module per area. Each is declared once with
//! [`Operation::new`]; transports never add logic of their own.

mod admin;
mod messages;
mod sessions;
mod system;
mod teams;

use crate::error::{IrisError, Result};
use crate::registry::{Ctx, Operation};

pub(crate) fn all() -> Vec<Operation> {
    let mut ops = Vec::new();
    ops.extend(messages::operations());
    ops.extend(sessions::operations());
    ops.extend(teams::operations());
    ops.extend(system::operations());
    ops.extend(admin::operations());
    ops
}

/// The caller's name for `fromTeam` when none is given.
fn caller(ctx: &Ctx, from: Option<String>) -> String {
    from.filter(|f| !f.is_empty())
        .unwrap_or_else(|| ctx.principal.name.clone())
}

/// A team filter the caller named must be a team it may see.
fn visible(ctx: &Ctx, team: Option<&str>) -> Result<()> {
    match team {
        Some(t) if !ctx.principal.can_see_team(t) => Err(IrisError::team_not_found(t)),
        _ => Ok(()),
    }
}
