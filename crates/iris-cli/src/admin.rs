//! `iris key …`, `iris user …`, `iris audit …`: each is one operation of
//! the registry, run on the server of this `IRIS_HOME` when one is running
//! (so a revocation takes effect at once) or in this process otherwise.

use std::process::ExitCode;

use clap::Subcommand;
use iris_core::config::ConfigSource;
use serde_json::{Value, json};

use crate::commands::{invoke, load};

#[derive(Subcommand)]
pub enum KeyAction {
    /// Create a key; it is printed once.
    Create {
        #[arg(long)]
        name: String,
        /// Comma-separated scopes or aliases (teams:read,messages:write…).
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
        /// viewer, operator, developer or admin.
        #[arg(long)]
        role: Option<String>,
        /// Limit the key to these teams (comma-separated).
        #[arg(long, value_delimiter = ',')]
        teams: Option<Vec<String>>,
        /// e.g. 30d, 12h.
        #[arg(long)]
        expires_in: Option<String>,
        /// e.g. 100/min.
        #[arg(long)]
        rate_limit: Option<String>,
    },
    /// List keys (never the keys themselves).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id, name or prefix.
    Revoke { key: String },
    /// Replace a key; the old one works for a grace period.
    Rotate {
        key: String,
        /// How long the old key keeps working (e.g. 1h, 0s).
        #[arg(long)]
        grace: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum UserAction {
    Create {
        #[arg(long)]
        username: String,
        #[arg(long)]
        password: String,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        role: Option<String>,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    /// Disable a user (ends their sessions at once).
    Disable {
        user: String,
    },
    Enable {
        user: String,
    },
    ResetPassword {
        user: String,
        #[arg(long)]
        password: String,
    },
}

#[derive(Subcommand)]
pub enum AuditAction {
    /// Records, newest first.
    List {
        /// An action or family (auth, key.create, operation…).
        #[arg(long)]
        action: Option<String>,
        /// user:<id>, key:<id>, or a bare id.
        #[arg(long)]
        actor: Option<String>,
        #[arg(long)]
        team: Option<String>,
        /// success, failure or denied.
        #[arg(long)]
        result: Option<String>,
        /// ISO 8601 time or date.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Check the hash chain; exits non-zero if a record was edited or removed.
    Verify,
}

#[derive(Subcommand)]
pub enum TeamAction {
    /// Create a team at run time (stored; present after a restart).
    Add {
        name: String,
        /// The folder the agent works in (under one of the config's teamRoots).
        #[arg(long)]
        path: String,
        /// One of the config's agentProfiles (`iris call team_profiles` lists them).
        #[arg(long)]
        profile: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Further keys of teams.<name> as a JSON object.
        #[arg(long, default_value = "{}")]
        config: String,
    },
    /// Change a team created at run time: the keys given replace its own.
    Edit {
        name: String,
        /// Keys of teams.<name> as a JSON object.
        #[arg(long)]
        config: String,
    },
    /// Delete a team created at run time.
    Rm {
        name: String,
        /// Stop its processes even while they work.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
pub enum ApprovalAction {
    /// Approvals, newest first (pending ones by default).
    List {
        #[arg(long)]
        team: Option<String>,
        /// pending, allowed, denied, expired, or all.
        #[arg(long, default_value = "pending")]
        status: String,
        #[arg(long)]
        json: bool,
    },
    /// Let the agent use the tool.
    Allow {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Refuse the tool; the agent reads the reason.
    Deny {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

pub(crate) fn print_error(body: &Value) -> ExitCode {
    eprintln!(
        "iris: {}",
        body.pointer("/error/message")
            .or_else(|| body.get("message"))
            .and_then(Value::as_str)
            .unwrap_or("the operation failed")
    );
    if let Some(d) = body.pointer("/error/details").filter(|d| !d.is_null()) {
        eprintln!("{d}");
    }
    ExitCode::FAILURE
}

fn print_key(v: &Value) {
    println!("{}", v["key"].as_str().unwrap_or_default());
    eprintln!(
        "API key `{}` ({}) created; it is shown once, store it now. Scopes: {}",
        v["name"].as_str().unwrap_or_default(),
        v["id"].as_str().unwrap_or_default(),
        v["scopes"]
    );
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Whether a column holds a time (`createdAt`, `timestamp`, `lastLogin`…).
fn is_time(column: &str) -> bool {
    column.ends_with("At") || column == "timestamp" || column == "lastLogin"
}

/// A time as tables print it, one form for all: `2026-12-07 08:51:40 UTC`
/// from epoch milliseconds or an RFC 3339 text (`--json` keeps the raw value).
pub(crate) fn when(v: &Value) -> String {
    const FORM: &str = "%Y-%m-%d %H:%M:%S UTC";
    let at = match v {
        Value::Number(n) => n.as_i64().and_then(chrono::DateTime::from_timestamp_millis),
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc)),
        _ => None,
    };
    match at {
        Some(t) => t.format(FORM).to_string(),
        None => cell(v),
    }
}

pub(crate) fn table(rows: &[Value], columns: &[&str]) {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|c| {
                    if is_time(c) {
                        when(&r[*c])
                    } else {
                        cell(&r[*c])
                    }
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].len())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |vals: Vec<String>| {
        vals.iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!(
        "{}",
        line(columns.iter().map(|c| c.to_uppercase()).collect())
    );
    for r in cells {
        println!("{}", line(r));
    }
}

pub async fn key(source: ConfigSource, action: KeyAction, local: bool) -> anyhow::Result<ExitCode> {
    let (op, params, json_out) = match &action {
        KeyAction::Create {
            name,
            scopes,
            role,
            teams,
            expires_in,
            rate_limit,
        } => (
            "key_create",
            json!({"name": name, "scopes": scopes, "role": role, "teams": teams, "expiresIn": expires_in, "rateLimit": rate_limit}),
            false,
        ),
        KeyAction::List { json } => ("key_list", json!({}), *json),
        KeyAction::Revoke { key } => ("key_revoke", json!({"key": key}), true),
        KeyAction::Rotate { key, grace } => {
            ("key_rotate", json!({"key": key, "grace": grace}), false)
        }
    };
    let result = match invoke(load(&source)?, op, strip_nulls(params), local).await? {
        Ok(v) => v,
        Err(body) => return Ok(print_error(&body)),
    };
    match action {
        KeyAction::Create { .. } | KeyAction::Rotate { .. } => print_key(&result),
        KeyAction::List { .. } if !json_out => table(
            result["keys"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default(),
            &[
                "id",
                "name",
                "prefix",
                "status",
                "scopes",
                "teams",
                "usageCount",
                "lastUsedAt",
            ],
        ),
        _ => println!("{}", serde_json::to_string_pretty(&result)?),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn team(
    source: ConfigSource,
    action: TeamAction,
    local: bool,
) -> anyhow::Result<ExitCode> {
    let object = |text: &str| -> anyhow::Result<serde_json::Map<String, Value>> {
        match serde_json::from_str(text) {
            Ok(Value::Object(m)) => Ok(m),
            _ => anyhow::bail!("--config must be a JSON object"),
        }
    };
    let (op, params) = match action {
        TeamAction::Add {
            name,
            path,
            profile,
            description,
            config,
        } => {
            let mut p = object(&config)?;
            p.insert("name".into(), json!(name));
            p.insert("path".into(), json!(path));
            if let Some(a) = profile {
                p.insert("profile".into(), json!(a));
            }
            if let Some(d) = description {
                p.insert("description".into(), json!(d));
            }
            ("team_create", Value::Object(p))
        }
        TeamAction::Edit { name, config } => {
            let mut p = object(&config)?;
            p.insert("team".into(), json!(name));
            ("team_update", Value::Object(p))
        }
        TeamAction::Rm { name, force } => ("team_delete", json!({"team": name, "force": force})),
    };
    match invoke(load(&source)?, op, params, local).await? {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(body) => Ok(print_error(&body)),
    }
}

pub async fn approvals(
    source: ConfigSource,
    action: ApprovalAction,
    local: bool,
) -> anyhow::Result<ExitCode> {
    let (op, params) = match &action {
        ApprovalAction::List { team, status, .. } => (
            "approval_list",
            json!({"team": team, "status": (status != "all").then_some(status)}),
        ),
        ApprovalAction::Allow { id, reason } => (
            "approval_decide",
            json!({"approvalId": id, "decision": "allow", "reason": reason}),
        ),
        ApprovalAction::Deny { id, reason } => (
            "approval_decide",
            json!({"approvalId": id, "decision": "deny", "reason": reason}),
        ),
    };
    let result = match invoke(load(&source)?, op, strip_nulls(params), local).await? {
        Ok(v) => v,
        Err(body) => return Ok(print_error(&body)),
    };
    match action {
        ApprovalAction::List { json: false, .. } => table(
            result["approvals"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default(),
            &[
                "id",
                "team",
                "toolName",
                "input",
                "status",
                "decidedBy",
                "createdAt",
            ],
        ),
        _ => println!("{}", serde_json::to_string_pretty(&result)?),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn user(
    source: ConfigSource,
    action: UserAction,
    local: bool,
) -> anyhow::Result<ExitCode> {
    let (op, params) = match &action {
        UserAction::Create {
            username,
            password,
            email,
            role,
        } => (
            "user_create",
            json!({"username": username, "password": password, "email": email, "role": role}),
        ),
        UserAction::List { .. } => ("user_list", json!({})),
        UserAction::Disable { user } => {
            ("user_update", json!({"user": user, "status": "disabled"}))
        }
        UserAction::Enable { user } => ("user_update", json!({"user": user, "status": "active"})),
        UserAction::ResetPassword { user, password } => (
            "user_reset_password",
            json!({"user": user, "password": password}),
        ),
    };
    let result = match invoke(load(&source)?, op, strip_nulls(params), local).await? {
        Ok(v) => v,
        Err(body) => return Ok(print_error(&body)),
    };
    match action {
        UserAction::List { json: false } => table(
            result["users"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default(),
            &[
                "id",
                "username",
                "email",
                "roles",
                "status",
                "mfaEnabled",
                "lastLogin",
            ],
        ),
        _ => println!("{}", serde_json::to_string_pretty(&result)?),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn audit(
    source: ConfigSource,
    action: AuditAction,
    local: bool,
) -> anyhow::Result<ExitCode> {
    match action {
        AuditAction::Verify => {
            let v = match invoke(load(&source)?, "audit_verify", json!({}), local).await? {
                Ok(v) => v,
                Err(body) => return Ok(print_error(&body)),
            };
            println!("{}", serde_json::to_string_pretty(&v)?);
            if v["ok"] == json!(true) {
                eprintln!("audit trail intact: {} records", v["records"]);
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!(
                    "audit trail BROKEN: {}",
                    v["problem"].as_str().unwrap_or("?")
                );
                Ok(ExitCode::from(2))
            }
        }
        AuditAction::List {
            action,
            actor,
            team,
            result,
            since,
            limit,
            json,
        } => {
            let params = strip_nulls(json!({"action": action, "userId": actor, "team": team,
                "result": result, "startDate": since, "limit": limit}));
            let v = match invoke(load(&source)?, "audit_list", params, local).await? {
                Ok(v) => v,
                Err(body) => return Ok(print_error(&body)),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                table(
                    v["logs"].as_array().map(Vec::as_slice).unwrap_or_default(),
                    &[
                        "seq",
                        "timestamp",
                        "actor",
                        "action",
                        "team",
                        "result",
                        "severity",
                        "ip",
                    ],
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Leave out unset options (operations reject `null` for typed fields).
pub(crate) fn strip_nulls(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.retain(|_, x| !x.is_null());
    }
    v
}
