//! Memory of idle WebSocket connections: an `iris serve` process's resident
//! memory before and after 10,000 clients connect to `/api/v1/stream`.

use std::time::Duration;

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS"))
}

pub async fn run(count: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("config.yaml"),
        "api:\n  port: 0\n  requireAuth: false\n  rateLimit:\n    perIp: 1000000000/min\n  websocket:\n    maxConnections: 20000\n    idleTimeout: 3600000\n    pingInterval: 600000\nteams:\n  demo:\n    path: .\n    agent: echo\n",
    )?;
    let mut server = std::process::Command::new(crate::iris_bin()?)
        .arg("serve")
        .env("IRIS_HOME", dir.path())
        .env("IRIS_LOG", "warn")
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let port_file = dir.path().join(".http.port");
    let mut port = String::new();
    for _ in 0..400 {
        port = std::fs::read_to_string(&port_file).unwrap_or_default();
        if !port.trim().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let url = format!("ws://127.0.0.1:{}/api/v1/stream", port.trim());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(server.id())?;
    let mut conns = Vec::with_capacity(count);
    for batch in 0..count.div_ceil(200) {
        let n = 200.min(count - batch * 200);
        let opened = futures_util::future::join_all(
            (0..n).map(|_| tokio_tungstenite::connect_async(url.clone())),
        )
        .await;
        for c in opened {
            conns.push(c?.0);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(server.id())?;
    println!("{count} idle WebSocket connections to iris serve");
    println!(
        "  resident memory: {:.1} MB before, {:.1} MB after: +{:.1} MB ({:.1} KB per connection)",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after - before) as f64 / 1024.0,
        (after - before) as f64 / count as f64
    );
    drop(conns);
    let _ = server.kill();
    let _ = server.wait();
    Ok(())
}
