//! `iris jobs`: hand a team a task, list jobs, read one, cancel one, see
//! its webhook deliveries. Talks to the running server (jobs run there).

use std::process::ExitCode;

use clap::Subcommand;
use iris_core::config::ConfigSource;
use serde_json::json;

use crate::admin::{print_error, strip_nulls, table};
use crate::commands::{invoke, load};

#[derive(Subcommand)]
pub enum JobAction {
    /// Queue a task for a team; prints the job id at once.
    Run {
        team: String,
        task: String,
        /// high, normal or low.
        #[arg(long, default_value = "normal")]
        priority: String,
        /// Report the end to this URL (a signed POST).
        #[arg(long)]
        callback: Option<String>,
        /// Longest the job may run once started (ms).
        #[arg(long)]
        timeout: Option<i64>,
        /// The same key and task return the first job instead of a new one.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Jobs, newest first.
    List {
        #[arg(long)]
        team: Option<String>,
        /// queued, running, completed, failed, cancelled or timed_out.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One job, as JSON.
    Get { id: String },
    /// Remove a queued job or interrupt a running one.
    Cancel { id: String },
    /// The webhook deliveries of a job, with their attempts.
    Deliveries { id: String },
}

pub async fn jobs(
    source: ConfigSource,
    action: JobAction,
    local: bool,
) -> anyhow::Result<ExitCode> {
    let (op, params) = match &action {
        JobAction::Run {
            team,
            task,
            priority,
            callback,
            timeout,
            idempotency_key,
        } => (
            "job_execute",
            json!({"team": team, "task": task, "priority": priority, "timeout": timeout,
                   "callback": callback.as_ref().map(|u| json!({"url": u})),
                   "idempotencyKey": idempotency_key}),
        ),
        JobAction::List { team, status, .. } => {
            ("job_list", json!({"team": team, "status": status}))
        }
        JobAction::Get { id } => ("job_get", json!({"jobId": id})),
        JobAction::Cancel { id } => ("job_cancel", json!({"jobId": id})),
        JobAction::Deliveries { id } => ("job_deliveries", json!({"jobId": id})),
    };
    let result = match invoke(load(&source)?, op, strip_nulls(params), local).await? {
        Ok(v) => v,
        Err(body) => return Ok(print_error(&body)),
    };
    match action {
        JobAction::List { json: false, .. } => table(
            result["jobs"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default(),
            &[
                "jobId",
                "team",
                "status",
                "priority",
                "position",
                "createdAt",
                "completedAt",
            ],
        ),
        JobAction::Run { .. } => println!("{}", result["jobId"].as_str().unwrap_or_default()),
        _ => println!("{}", serde_json::to_string_pretty(&result)?),
    }
    Ok(ExitCode::SUCCESS)
}
