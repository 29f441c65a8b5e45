//! A cluster (issue: Redis for events, limits and notices), in one run:
//! (1) chunk latency from the echo agent writing a chunk to a WebSocket
//! client subscribed to its team, on the node running the turn and on the
//! other node of a two-node cluster — the same turn, both clients at once;
//! (2) the rate-limited request path (`GET /health` with no credential,
//! counted against the address) with the limit decided in Redis against
//! in-process, interleaved; (3) with team ownership (`cluster.secret`), a
//! blocking message to the echo team through its owner against the same
//! through the other node (forwarded to the owner), interleaved.
//!
//! Redis: `IRIS_BENCH_REDIS` (default `redis://127.0.0.1:6379`); the two
//! nodes share a SQLite file.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use iris_core::Iris;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::stats::{summarize, us};

const MESSAGE: &str = "[[stamps=300]] [[delay=3]]";

fn redis() -> String {
    std::env::var("IRIS_BENCH_REDIS")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into())
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// A node in `dir` on the database `db`, linked to `redis` when given.
async fn node(
    dir: &std::path::Path,
    db: &str,
    redis: Option<&str>,
    id: &str,
) -> anyhow::Result<Arc<Iris>> {
    node_on(dir, db, redis, id, None).await
}

/// [`node`]; with `port`, on that port, owning teams (`cluster.secret`).
async fn node_on(
    dir: &std::path::Path,
    db: &str,
    redis: Option<&str>,
    id: &str,
    port: Option<u16>,
) -> anyhow::Result<Arc<Iris>> {
    std::fs::create_dir_all(dir)?;
    let mut cluster = redis
        .map(|r| format!("cluster:\n  redisUrl: {r}\n  nodeId: {id}\n"))
        .unwrap_or_default();
    if let Some(p) = port {
        cluster += &format!(
            "  advertiseUrl: http://127.0.0.1:{p}\n  secret: a-benchmark-secret-of-32-characters-or-more\n"
        );
    }
    let yaml = format!(
        "api:\n  port: {}\n  requireAuth: false\n{}\n{cluster}teams:\n  demo:\n    path: .\n    agent: echo\n",
        port.unwrap_or(0),
        crate::setup::UNREACHABLE
    );
    let iris = crate::setup::iris_on(dir, &yaml, false, db).await?;
    if redis.is_some() {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !iris.node().redis().is_some_and(|r| r.link.up) {
            anyhow::ensure!(Instant::now() < deadline, "{id}: Redis does not answer");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(iris)
}

/// A WebSocket subscribed to the team `demo` on `addr`.
async fn watcher(
    addr: std::net::SocketAddr,
) -> anyhow::Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
> {
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/api/v1/stream")).await?;
    let sub = json!({"type": "subscribe", "team": "demo"}).to_string();
    ws.send(Message::Text(sub.into())).await?;
    while let Some(m) = ws.next().await {
        if let Message::Text(t) = m?
            && t.as_str().contains("subscribed")
        {
            return Ok(ws);
        }
    }
    anyhow::bail!("the subscription was not confirmed")
}

/// Chunk latencies one watcher sees until the turn completes.
async fn latencies(
    mut ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> anyhow::Result<Vec<Duration>> {
    let mut out = Vec::new();
    while let Some(m) = ws.next().await {
        let Message::Text(t) = m? else { continue };
        let v: Value = serde_json::from_str(t.as_str())?;
        match v["type"].as_str() {
            Some("chunk") => {
                if let Ok(stamp) = v["text"].as_str().unwrap_or_default().trim().parse::<i64>() {
                    out.push(Duration::from_micros((now_us() - stamp).max(0) as u64));
                }
            }
            Some("complete") => break,
            _ => {}
        }
    }
    Ok(out)
}

/// `n` sequential `GET /health` without a credential: their latencies.
async fn health_path(
    client: &reqwest::Client,
    base: &str,
    n: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let r = client.get(format!("{base}/health")).send().await?;
        anyhow::ensure!(r.status().is_success(), "GET /health: {}", r.status());
        r.bytes().await?;
        out.push(t.elapsed());
    }
    Ok(out)
}

pub async fn run(rounds: usize) -> anyhow::Result<()> {
    let redis = redis();
    let scratch = tempfile::tempdir()?;
    let db = iris_storage::sqlite_url(&scratch.path().join("iris.db"));
    let a = node(&scratch.path().join("a"), &db, Some(&redis), "bench-a").await?;
    let b = node(&scratch.path().join("b"), &db, Some(&redis), "bench-b").await?;
    let local = node(
        &scratch.path().join("local"),
        &iris_storage::sqlite_url(&scratch.path().join("local.db")),
        None,
        "local",
    )
    .await?;
    let (sa, sb, sl) = (
        iris_server::start(a.clone(), None).await?,
        iris_server::start(b.clone(), None).await?,
        iris_server::start(local.clone(), None).await?,
    );
    let client = reqwest::Client::new();

    // (1) One turn on A, watched from A and from B at once.
    let (mut same, mut other) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (wa, wb) = (watcher(sa.addr).await?, watcher(sb.addr).await?);
        let on_a = tokio::spawn(latencies(wa));
        let on_b = tokio::spawn(latencies(wb));
        let r = client
            .post(format!("http://{}/api/v1/teams/quick-tell", sa.addr))
            .json(&json!({"toTeam": "demo", "message": MESSAGE}))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "quick-tell: {}", r.status());
        same.extend(on_a.await??);
        other.extend(on_b.await??);
    }
    let (s, o) = (summarize(&mut same), summarize(&mut other));
    println!("chunk latency, agent write to WebSocket client ({rounds} turns of 300 chunks)");
    println!(
        "  same node        : median {:8.1} us  p99 {:8.1} us  ({} chunks)",
        us(s.median),
        us(s.p99),
        same.len()
    );
    println!(
        "  other node       : median {:8.1} us  p99 {:8.1} us  ({} chunks)  x{:.2} median",
        us(o.median),
        us(o.p99),
        other.len(),
        o.median.as_secs_f64() / s.median.as_secs_f64().max(1e-9)
    );

    // (2) The rate-limited path, in-process against Redis, interleaved.
    let per = (rounds * 400).max(400);
    let (mut inproc, mut inredis) = (Vec::new(), Vec::new());
    for _ in 0..4 {
        inproc.extend(health_path(&client, &format!("http://{}", sl.addr), per).await?);
        inredis.extend(health_path(&client, &format!("http://{}", sa.addr), per).await?);
    }
    let (l, r) = (summarize(&mut inproc), summarize(&mut inredis));
    println!(
        "rate-limited request (GET /health, counted against the address; {} each, sequential)",
        inproc.len()
    );
    println!(
        "  in-process limit : median {:8.1} us  p99 {:8.1} us",
        us(l.median),
        us(l.p99)
    );
    println!(
        "  limit in Redis   : median {:8.1} us  p99 {:8.1} us  (+{:.1} us median)",
        us(r.median),
        us(r.p99),
        us(r.median) - us(l.median)
    );
    for s in [sa, sb, sl] {
        s.stop().await;
    }
    for i in [a, b, local] {
        i.shutdown().await;
    }

    // (3) A blocking message through the team's owner, and through the
    // other node (forwarded), interleaved.
    let free = || -> anyhow::Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    let (pc, pd) = (free()?, free()?);
    let odb = iris_storage::sqlite_url(&scratch.path().join("owned.db"));
    let c = node_on(
        &scratch.path().join("c"),
        &odb,
        Some(&redis),
        "bench-c",
        Some(pc),
    )
    .await?;
    let d = node_on(
        &scratch.path().join("d"),
        &odb,
        Some(&redis),
        "bench-d",
        Some(pd),
    )
    .await?;
    let (sc, sd) = (
        iris_server::start(c.clone(), None).await?,
        iris_server::start(d.clone(), None).await?,
    );
    let tell = |addr: std::net::SocketAddr| {
        let client = client.clone();
        async move {
            let t = Instant::now();
            let r = client
                .post(format!("http://{addr}/api/v1/teams/tell"))
                .json(&json!({"toTeam": "demo", "message": "x", "timeout": 0}))
                .send()
                .await?;
            anyhow::ensure!(r.status().is_success(), "tell: {}", r.status());
            r.bytes().await?;
            anyhow::Ok(t.elapsed())
        }
    };
    tell(sc.addr).await?; // C owns `demo` from here on.
    let (mut owner, mut forwarded) = (Vec::new(), Vec::new());
    for _ in 0..(rounds * 100).max(100) {
        owner.push(tell(sc.addr).await?);
        forwarded.push(tell(sd.addr).await?);
    }
    anyhow::ensure!(
        d.pool().processes().is_empty(),
        "the other node ran the team itself: nothing was forwarded"
    );
    let (o, f) = (summarize(&mut owner), summarize(&mut forwarded));
    println!(
        "blocking message with team ownership ({} each, interleaved)",
        owner.len()
    );
    println!(
        "  on the owner     : median {:8.1} us  p99 {:8.1} us",
        us(o.median),
        us(o.p99)
    );
    println!(
        "  forwarded        : median {:8.1} us  p99 {:8.1} us  (+{:.1} us median)",
        us(f.median),
        us(f.p99),
        us(f.median) - us(o.median)
    );
    sc.stop().await;
    sd.stop().await;
    c.shutdown().await;
    d.shutdown().await;
    Ok(())
}
