//! HTTP benchmarks, load from `wrk` (a second process) on loopback:
//! `GET /api/v1/status` on Iris against a bare hyper server returning the
//! same JSON, and `POST /api/v1/teams/demo/ask` to a warm echo team.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Command;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// A bare hyper server answering every request with `body`.
pub async fn bare(body: Bytes) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
                    let body = body.clone();
                    async move {
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(body))
                                .unwrap_or_default(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok((addr, task))
}

/// The same body from a one-route axum router: how much of the gap is the framework.
async fn plain_axum(body: Bytes) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // The baseline has no gate on purpose.
    let app = axum::Router::new().route(
        "/api/v1/status",
        axum::routing::get(move || {
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, task))
}

pub struct WrkResult {
    pub rps: f64,
    pub p99_ms: f64,
    /// CPU per request, µs: this process (the servers) in user and kernel
    /// mode, and wrk (user + kernel).
    pub server_user_us: f64,
    pub server_sys_us: f64,
    pub wrk_us: f64,
}

/// User and system CPU seconds of this process or of its waited-for children.
fn cpu(who: libc::c_int) -> (f64, f64) {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut u) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(u.ru_utime), secs(u.ru_stime))
}

fn to_ms(v: &str) -> Option<f64> {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => return None,
    })
}

/// Run wrk; `script` is an optional Lua file (for POST bodies), `bearer`
/// an `Authorization` credential.
pub fn wrk(
    url: &str,
    connections: u32,
    seconds: u32,
    script: Option<&std::path::Path>,
    bearer: Option<&str>,
) -> anyhow::Result<WrkResult> {
    // Pinned (`PIN=1`): wrk gets the other CPU, and one thread for it.
    let mut cmd = if crate::setup::pinned() {
        let mut c = Command::new("taskset");
        c.args(["-c", "0", "wrk", "-t1"]);
        c
    } else {
        let mut c = Command::new("wrk");
        c.arg("-t2");
        c
    };
    cmd.args([
        &format!("-c{connections}"),
        &format!("-d{seconds}s"),
        "--latency",
    ]);
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    if let Some(b) = bearer {
        cmd.arg("-H").arg(format!("Authorization: Bearer {b}"));
    }
    let (su0, ss0) = cpu(libc::RUSAGE_SELF);
    let (wu0, ws0) = cpu(libc::RUSAGE_CHILDREN);
    let out = cmd.arg(url).output().map_err(|e| {
        anyhow::anyhow!("wrk is needed (apt-get install wrk; PIN=1 also runs taskset): {e}")
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("unexpected wrk output:\n{text}"))?;
    let p99_ms = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(|v| to_ms(v.trim()))
        .ok_or_else(|| anyhow::anyhow!("no 99% line in wrk output:\n{text}"))?;
    if text.contains("Non-2xx") {
        anyhow::bail!("wrk saw error responses:\n{text}");
    }
    let (su1, ss1) = cpu(libc::RUSAGE_SELF);
    let (wu1, ws1) = cpu(libc::RUSAGE_CHILDREN);
    let requests: f64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in"))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or(rps * seconds as f64);
    let per = |secs: f64| secs * 1e6 / requests.max(1.0);
    Ok(WrkResult {
        rps,
        p99_ms,
        server_user_us: per(su1 - su0),
        server_sys_us: per(ss1 - ss0),
        wrk_us: per((wu1 - wu0) + (ws1 - ws0)),
    })
}

/// The Iris the HTTP benchmarks serve: one echo team, `requireAuth: false`
/// (the per-address bucket), limits out of reach.
pub async fn open() -> anyhow::Result<(std::sync::Arc<iris_core::Iris>, tempfile::TempDir)> {
    crate::setup::iris_with_echo(&format!(
        "  maxProcesses: 4\napi:\n  port: 0\n  requireAuth: false\n{}",
        crate::setup::UNREACHABLE
    ))
    .await
}

/// The same Iris with authentication required: an API key (returned), its
/// rate limit, audit on.
pub async fn secured()
-> anyhow::Result<(std::sync::Arc<iris_core::Iris>, tempfile::TempDir, String)> {
    let (secured, dir) = crate::setup::iris_with_echo(&format!(
        "  maxProcesses: 4\napi:\n  port: 0\n{}",
        crate::setup::UNREACHABLE
    ))
    .await?;
    let (key, _) = secured
        .auth()
        .create_key(
            iris_core::auth::NewKey::with_role("bench", "viewer"),
            &iris_core::auth::Principal::local(),
            &Default::default(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((secured, dir, key))
}

pub async fn run(seconds: u32) -> anyhow::Result<()> {
    let (iris, dir) = open().await?;
    let server = iris_server::start(iris.clone(), None).await?;
    let (secured, _sdir, key) = secured().await?;
    let secured_server = iris_server::start(secured.clone(), None).await?;
    let base = format!("http://{}", server.addr);
    let status_url = format!("{base}/api/v1/status");
    let body = reqwest::get(&status_url).await?.bytes().await?;
    let (bare_addr, bare_task) = bare(Bytes::from(body.to_vec())).await?;
    let (axum_addr, axum_task) = plain_axum(Bytes::from(body.to_vec())).await?;
    let (floor_addr, floor_task) = crate::floor::serve().await?;
    let bare_url = format!("http://{bare_addr}/api/v1/status");
    // wrk blocks; run it off the runtime so the servers keep serving.
    let run_wrk =
        |url: String, c: u32, script: Option<std::path::PathBuf>, bearer: Option<String>| {
            tokio::task::spawn_blocking(move || {
                wrk(&url, c, seconds, script.as_deref(), bearer.as_deref())
            })
        };
    let servers = [
        (
            "plain axum",
            format!("http://{axum_addr}/api/v1/status"),
            None,
        ),
        ("floor", format!("http://{floor_addr}/api/v1/status"), None),
        ("iris open", status_url, None),
        (
            "iris + key",
            format!("http://{}/api/v1/status", secured_server.addr),
            Some(key),
        ),
    ];
    // `ROUNDS=N`: the set N times over. Within a round bare hyper runs first
    // and last and the ratios are to the mean of the two: the machine's
    // speed drifts within a minute, and short interleaved rounds compare
    // servers measured close together.
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
        .max(1);
    println!("GET /api/v1/status, 64 connections, {seconds}s each (wrk), {rounds} round(s)");
    // Per server: (ratio to bare, result) of each round.
    let mut seen: Vec<Vec<(f64, WrkResult)>> = (0..=servers.len()).map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        let first = run_wrk(bare_url.clone(), 64, None, None).await??;
        let mut results = Vec::new();
        for (_, url, bearer) in &servers {
            results.push(run_wrk(url.clone(), 64, None, bearer.clone()).await??);
        }
        let last = run_wrk(bare_url.clone(), 64, None, None).await??;
        let b = WrkResult {
            rps: (first.rps + last.rps) / 2.0,
            p99_ms: (first.p99_ms + last.p99_ms) / 2.0,
            server_user_us: (first.server_user_us + last.server_user_us) / 2.0,
            server_sys_us: (first.server_sys_us + last.server_sys_us) / 2.0,
            wrk_us: (first.wrk_us + last.wrk_us) / 2.0,
        };
        let mut line = format!(
            "  round {round}: bare {:.0} req/s (first {:.0}, last {:.0}), p99 {:.2} ms",
            b.rps, first.rps, last.rps, b.p99_ms
        );
        for ((name, _, _), r) in servers.iter().zip(&results) {
            line += &format!(" | {name} {:.2}x {:.2} ms", r.rps / b.rps, r.p99_ms);
        }
        println!("{line}");
        for (i, r) in results.into_iter().enumerate() {
            seen[i + 1].push((r.rps / b.rps, r));
        }
        seen[0].push((1.0, b));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let names = std::iter::once("bare hyper").chain(servers.iter().map(|(n, _, _)| *n));
    println!("Medians over the rounds (ratios to the same round's bare hyper):");
    for (name, runs) in names.clone().zip(&seen) {
        let of = |f: fn(&WrkResult) -> f64| median(runs.iter().map(|(_, r)| f(r)).collect());
        println!(
            "  {name:<10} : {:10.0} req/s  p99 {:6.2} ms  ({:.2}x of bare)",
            of(|r| r.rps),
            of(|r| r.p99_ms),
            median(runs.iter().map(|(x, _)| *x).collect()),
        );
    }
    println!("  (floor: bare hyper doing only the contract's per-request work, see floor.rs)");
    println!("  (iris + key: requireAuth, an API key, rate limiting and audit on)");
    println!("CPU per request, µs, medians (server user + kernel | wrk)");
    for (name, runs) in names.zip(&seen) {
        let of = |f: fn(&WrkResult) -> f64| median(runs.iter().map(|(_, r)| f(r)).collect());
        println!(
            "  {name:<10} : {:5.2} + {:5.2} | {:5.2}",
            of(|r| r.server_user_us),
            of(|r| r.server_sys_us),
            of(|r| r.wrk_us)
        );
    }
    if std::env::var_os("HEALTHZ").is_some() {
        let h = run_wrk(format!("{base}/healthz"), 64, None, None).await??;
        let bare = median(seen[0].iter().map(|(_, r)| r.rps).collect());
        println!(
            "  iris /healthz : {:10.0} req/s ({:.2}x of the median bare)",
            h.rps,
            h.rps / bare
        );
    }

    let lua = dir.path().join("ask.lua");
    std::fs::write(
        &lua,
        "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = '{\"question\": \"benchmark\", \"timeout\": 0}'\n",
    )?;
    // One conversation answers one turn at a time, so few connections.
    let ask = run_wrk(format!("{base}/api/v1/teams/demo/ask"), 4, Some(lua), None).await??;
    println!("POST /api/v1/teams/demo/ask (warm echo), 4 connections, {seconds}s");
    println!(
        "  iris       : {:10.0} req/s  p99 {:6.2} ms",
        ask.rps, ask.p99_ms
    );
    bare_task.abort();
    axum_task.abort();
    floor_task.abort();
    server.stop().await;
    secured_server.stop().await;
    iris.shutdown().await;
    secured.shutdown().await;
    Ok(())
}
