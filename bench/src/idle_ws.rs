//! Memory of idle connections: an `iris serve` process's resident memory
//! before and after 10,000 WebSocket clients connect to `/api/v1/stream`,
//! and (another server, same run) 5,000 Socket.IO clients to `/socket.io`.

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

/// A client connection.
type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn run(count: usize) -> anyhow::Result<()> {
    measure(count, false).await?;
    measure(count / 2, true).await
}

/// One Socket.IO client connected to the `/` namespace (Engine.IO 4 over
/// a WebSocket: `40` connects, the server answers `40{"sid":…}`).
async fn socketio_client(url: String) -> anyhow::Result<Ws> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    ws.send(Message::Text("40".into())).await?;
    while let Some(m) = ws.next().await {
        if let Message::Text(t) = m?
            && t.as_str().starts_with("40")
        {
            return Ok(ws);
        }
    }
    anyhow::bail!("the server closed before connecting the socket")
}

async fn measure(count: usize, socketio: bool) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("config.yaml"),
        "api:\n  port: 0\n  requireAuth: false\n  healthBroadcastInterval: 0\n  rateLimit:\n    perIp: 1000000000/min\n  websocket:\n    maxConnections: 20000\n    idleTimeout: 3600000\n    pingInterval: 600000\nteams:\n  demo:\n    path: .\n    agent: echo\n",
    )?;
    let mut server = std::process::Command::new(crate::setup::iris_bin()?)
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
    let url = match socketio {
        false => format!("ws://127.0.0.1:{}/api/v1/stream", port.trim()),
        true => format!(
            "ws://127.0.0.1:{}/socket.io/?EIO=4&transport=websocket",
            port.trim()
        ),
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(server.id())?;
    let mut conns = Vec::with_capacity(count);
    for batch in 0..count.div_ceil(200) {
        let n = 200.min(count - batch * 200);
        let opened = futures_util::future::join_all((0..n).map(|_| async {
            match socketio {
                false => Ok(tokio_tungstenite::connect_async(url.clone()).await?.0),
                true => socketio_client(url.clone()).await,
            }
        }))
        .await;
        for c in opened {
            conns.push(c?);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(server.id())?;
    let what = if socketio { "Socket.IO" } else { "WebSocket" };
    println!("{count} idle {what} connections to iris serve");
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
