//! Failover (issue: ownership, forwarding and failover): real `iris serve`
//! nodes with team ownership on one SQLite file and the Redis at
//! `IRIS_BENCH_REDIS`. Each round SIGKILLs the node that owns the echo team
//! `demo` and times, from the kill, until a blocking message through the
//! surviving node is answered (it asks every 20 ms): the survivor must take
//! the team over once the lease's TTL has run out, clean up what the dead
//! node left and start the team's process. A fresh node joins for the next
//! round. Reported: each round, the median, and the median against the
//! target (TTL + 2 s) and the TTL itself.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

/// The lease's TTL the nodes use (ms).
const TTL_MS: u64 = 3000;

struct Node {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A node `id` on the database `db`, answering once it is ready.
async fn start(id: &str, db: &str, redis: &str) -> anyhow::Result<Node> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    std::fs::write(
        dir.path().join("config.yaml"),
        format!(
            "api:\n  port: {port}\n  requireAuth: false\n  rateLimit:\n    enabled: false\ncluster:\n  advertiseUrl: http://127.0.0.1:{port}\n  secret: a-benchmark-secret-of-32-characters-or-more\n  leaseTtl: {TTL_MS}\nsettings:\n  shutdownGrace: 200\nteams:\n  demo:\n    path: .\n    agent: echo\n"
        ),
    )?;
    let child = Command::new(crate::setup::iris_bin()?)
        .arg("serve")
        .env("IRIS_HOME", dir.path())
        .env("IRIS_DATABASE_URL", db)
        .env("IRIS_REDIS_URL", redis)
        .env("IRIS_NODE_ID", id)
        .env("IRIS_LOG", "error")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let node = Node {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client.get(format!("{}/ready", node.url)).send().await
            && r.status().is_success()
        {
            return Ok(node);
        }
        anyhow::ensure!(Instant::now() < deadline, "node {id} did not start");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A blocking message to `demo` through `url`: whether it was answered.
async fn tell(client: &reqwest::Client, url: &str) -> bool {
    let r = client
        .post(format!("{url}/api/v1/teams/tell"))
        .json(&json!({"toTeam": "demo", "message": "x", "timeout": 0}))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    matches!(r, Ok(r) if r.status().is_success())
}

pub async fn run(kills: usize) -> anyhow::Result<()> {
    let redis = std::env::var("IRIS_BENCH_REDIS")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let scratch = tempfile::tempdir()?;
    let db = iris_storage::sqlite_url(&scratch.path().join("iris.db"));
    // The first node makes the database; the others join it.
    let client = reqwest::Client::new();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let id = |n: usize| format!("bench-{}-{n}", &run[..6]);
    let mut owner = start(&id(0), &db, &redis).await?;
    anyhow::ensure!(
        tell(&client, &owner.url).await,
        "the first node does not answer"
    );
    let mut survivor = start(&id(1), &db, &redis).await?;
    anyhow::ensure!(
        tell(&client, &survivor.url).await,
        "a message through the other node (forwarded) is not answered"
    );
    let mut times = Vec::with_capacity(kills);
    for round in 0..kills {
        owner.child.kill()?;
        owner.child.wait()?;
        let killed = Instant::now();
        loop {
            if tell(&client, &survivor.url).await {
                break;
            }
            anyhow::ensure!(
                killed.elapsed() < Duration::from_secs(60),
                "round {round}: the team was not taken over within a minute"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = killed.elapsed();
        println!(
            "  kill {}: answered again after {:6.0} ms",
            round + 1,
            took.as_secs_f64() * 1e3
        );
        times.push(took);
        // The survivor owns the team now; a new node joins as the next one.
        owner = survivor;
        survivor = start(&id(round + 2), &db, &redis).await?;
        anyhow::ensure!(
            tell(&client, &survivor.url).await,
            "the new node does not answer"
        );
    }
    times.sort_unstable();
    let median = times[times.len() / 2];
    let ttl = Duration::from_millis(TTL_MS);
    let target = ttl + Duration::from_secs(2);
    println!(
        "failover ({} kills, lease TTL {} ms): median {:.0} ms, min {:.0} ms, max {:.0} ms; median / (TTL + 2 s) = {:.2}, median / TTL = {:.2}",
        times.len(),
        TTL_MS,
        median.as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        median.as_secs_f64() / target.as_secs_f64(),
        median.as_secs_f64() / ttl.as_secs_f64(),
    );
    drop((owner, survivor));
    Ok(())
}
