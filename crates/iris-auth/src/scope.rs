//! Scopes (`resource:action`, DESIGN section 7), the permission names of
//! seeds 000/001 accepted as aliases, and roles as named scope sets.

use crate::error::{AuthError, Result};

pub const TEAMS_READ: &str = "teams:read";
pub const TEAMS_WRITE: &str = "teams:write";
pub const MESSAGES_READ: &str = "messages:read";
pub const MESSAGES_WRITE: &str = "messages:write";
pub const MESSAGES_STREAM: &str = "messages:stream";
pub const PROCESSES_READ: &str = "processes:read";
pub const PROCESSES_MANAGE: &str = "processes:manage";
pub const CACHE_READ: &str = "cache:read";
pub const CACHE_WRITE: &str = "cache:write";
pub const AUDIT_READ: &str = "audit:read";
/// Decide whether agents may use tools (permission approvals).
pub const APPROVALS_MANAGE: &str = "approvals:manage";
pub const ADMIN: &str = "admin";
pub const ALL: &str = "*";

/// Every scope a key or user may hold.
pub const SCOPES: &[&str] = &[
    TEAMS_READ,
    TEAMS_WRITE,
    MESSAGES_READ,
    MESSAGES_WRITE,
    MESSAGES_STREAM,
    PROCESSES_READ,
    PROCESSES_MANAGE,
    CACHE_READ,
    CACHE_WRITE,
    AUDIT_READ,
    APPROVALS_MANAGE,
    ADMIN,
    ALL,
];

/// Seed 000/001 permission names and what they mean here.
pub const ALIASES: &[(&str, &[&str])] = &[
    ("tell", &[MESSAGES_WRITE, MESSAGES_STREAM]),
    ("team:tell", &[MESSAGES_WRITE, MESSAGES_STREAM]),
    ("wake", &[PROCESSES_MANAGE]),
    ("team:wake", &[PROCESSES_MANAGE]),
    ("sleep", &[PROCESSES_MANAGE]),
    ("team:sleep", &[PROCESSES_MANAGE]),
    ("team:cancel", &[MESSAGES_WRITE]),
    ("team:clear", &[CACHE_WRITE]),
    ("team:compact", &[PROCESSES_MANAGE]),
    ("team:fork", &[TEAMS_WRITE]),
    ("status", &[TEAMS_READ, PROCESSES_READ]),
    ("status:read", &[TEAMS_READ, PROCESSES_READ]),
    ("debug:read", &[PROCESSES_READ]),
];

/// The roles: each is the role before it plus some scopes
/// (viewer ⊂ operator ⊂ developer); admin is every scope.
pub const ROLES: &[(&str, Option<&str>, &[&str])] = &[
    (
        "viewer",
        None,
        &[TEAMS_READ, MESSAGES_READ, PROCESSES_READ, CACHE_READ],
    ),
    (
        "operator",
        Some("viewer"),
        &[MESSAGES_WRITE, MESSAGES_STREAM, PROCESSES_MANAGE],
    ),
    (
        "developer",
        Some("operator"),
        &[TEAMS_WRITE, CACHE_WRITE, APPROVALS_MANAGE],
    ),
    ("admin", None, &[ADMIN]),
];

/// The scopes of role `name`, with those of the roles it builds on.
pub fn role(name: &str) -> Option<Vec<&'static str>> {
    let (_, base, own) = ROLES.iter().find(|(n, _, _)| *n == name)?;
    let mut scopes = base.and_then(role).unwrap_or_default();
    scopes.extend_from_slice(own);
    Some(scopes)
}

/// Canonical scopes for `names` (scopes or aliases), sorted and deduplicated.
pub fn normalize(names: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for raw in names {
        let name = raw.trim();
        if let Some(s) = SCOPES.iter().find(|s| **s == name) {
            out.push((*s).to_owned());
        } else if let Some((_, mapped)) = ALIASES.iter().find(|(a, _)| *a == name) {
            out.extend(mapped.iter().map(|s| (*s).to_owned()));
        } else {
            return Err(AuthError::invalid(
                "scopes",
                format!(
                    "unknown scope `{name}`; known: {} (and the aliases {})",
                    SCOPES.join(", "),
                    ALIASES
                        .iter()
                        .map(|(a, _)| *a)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The scopes of `roles` plus `extra`, canonical.
pub fn resolve(roles: &[String], extra: &[String]) -> Result<Vec<String>> {
    let mut names: Vec<String> = extra.to_vec();
    for r in roles {
        let Some(set) = role(r) else {
            return Err(AuthError::invalid(
                "role",
                format!(
                    "unknown role `{r}`; known: {}",
                    ROLES
                        .iter()
                        .map(|(n, _, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        names.extend(set.iter().map(|s| (*s).to_owned()));
    }
    normalize(&names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_roles_and_unknown_names() {
        let s = normalize(&["tell".into(), "status:read".into(), "cache:read".into()]).unwrap();
        assert_eq!(
            s,
            [
                CACHE_READ,
                MESSAGES_STREAM,
                MESSAGES_WRITE,
                PROCESSES_READ,
                TEAMS_READ
            ]
        );
        assert!(normalize(&["root".into()]).is_err());
        let dev = resolve(&["developer".into()], &[AUDIT_READ.into()]).unwrap();
        assert!(dev.contains(&CACHE_WRITE.to_owned()) && dev.contains(&AUDIT_READ.to_owned()));
        assert!(!dev.contains(&ADMIN.to_owned()));
        assert!(resolve(&["god".into()], &[]).is_err());
        // Every role's scopes are known scopes; roles build on each other.
        for (name, _, _) in ROLES {
            for s in role(name).unwrap() {
                assert!(SCOPES.contains(&s));
            }
        }
        assert_eq!(role("viewer").unwrap().len(), 4);
        assert_eq!(role("operator").unwrap().len(), 7);
        assert_eq!(role("developer").unwrap().len(), 10);
    }
}
