//! `iris cluster status`: this node and the members of its cluster, read
//! from the database (no server needed), and whether the cluster's Redis
//! answers from here.

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use iris_core::cluster::{Member, Node};
use iris_core::config::{ConfigSource, redact_url};
use iris_storage::Store;
use serde_json::json;

use crate::admin::table;
use crate::commands::load;

#[derive(Subcommand)]
pub enum ClusterAction {
    /// This node's id, the members (up, down, stopped) and Redis.
    Status {
        /// As JSON (times in epoch milliseconds).
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(source: ConfigSource, action: ClusterAction) -> anyhow::Result<ExitCode> {
    let ClusterAction::Status { json: as_json } = action;
    let cfg = load(&source)?;
    let store = Store::connect(&cfg.database_settings())
        .await
        .map_err(|e| anyhow::anyhow!("{} ({})", e, cfg.database_display()))?;
    let now = iris_core::now_ms();
    let members: Vec<Member> = store
        .nodes()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .into_iter()
        .map(|r| Member::of(r, now))
        .collect();
    // Which node owns which team (with cluster.secret).
    let (leases, clock) = store.leases().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let leases: Vec<serde_json::Value> = leases
        .into_iter()
        .map(|l| {
            let mut v = json!(l);
            v["state"] = json!(if l.expires_at >= clock {
                "held"
            } else {
                "expired"
            });
            v
        })
        .collect();
    store.close().await;
    let redis = match &cfg.cluster.redis_url {
        Some(url) => Some(redis_seen(url).await),
        None => None,
    };
    let status = json!({
        "node": Node::resolve_id(&cfg).map_err(|e| anyhow::anyhow!("{e}"))?,
        "redis": redis,
        "members": members,
        "leases": leases,
    });
    if as_json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        println!("node   {}", status["node"].as_str().unwrap_or_default());
        let redis = &status["redis"];
        if redis.is_null() {
            println!("redis  none (cluster.redisUrl is not set: this node alone)");
        } else {
            let open = if redis["open"] == true {
                ", open to clients without a password"
            } else {
                ""
            };
            println!(
                "redis  {} {}{open}",
                redis["url"].as_str().unwrap_or_default(),
                if redis["up"] == true { "up" } else { "DOWN" },
            );
        }
        println!();
        table(
            status["members"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default(),
            &[
                "id",
                "state",
                "version",
                "advertiseUrl",
                "startedAt",
                "heartbeatAt",
            ],
        );
        if !leases.is_empty() {
            println!();
            table(&leases, &["team", "nodeId", "token", "state", "expiresAt"]);
        }
    }
    let up = members.iter().filter(|m| m.state == "up").count();
    let n = members.len();
    eprintln!("{n} member{}, {up} up", if n == 1 { "" } else { "s" });
    Ok(ExitCode::SUCCESS)
}

/// Whether Redis answers from here within 3 s, and lets in clients
/// without a password.
async fn redis_seen(url: &str) -> serde_json::Value {
    let shown = redact_url(url);
    let link = match iris_cluster::Link::connect(url, "status", "cli") {
        Ok(l) => l,
        Err(e) => return json!({"url": shown, "up": false, "error": e.to_string()}),
    };
    let mut state = link.watch();
    let _ = tokio::time::timeout(
        Duration::from_secs(3),
        state.wait_for(|s| s.up && s.open.is_some()),
    )
    .await;
    let s = link.state();
    json!({"url": shown, "up": s.up, "error": s.error, "open": s.open})
}
