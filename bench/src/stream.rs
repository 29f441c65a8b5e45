//! Streaming latency: from the echo agent writing a chunk (it stamps each
//! chunk with the time it wrote it) to a client receiving it, over SSE,
//! WebSocket and Socket.IO, against reading the same agent's pipe directly.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use iris_agent::AgentProcess;
use iris_agent::protocol::{self, AgentEvent};
use serde_json::{Value, json};

use crate::stats::{summarize, us};

const MESSAGE: &str = "[[stamps=300]] [[delay=3]]";

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn latency(text: &str) -> Option<Duration> {
    let stamp: i64 = text.trim().parse().ok()?;
    Some(Duration::from_micros((now_us() - stamp).max(0) as u64))
}

async fn raw() -> anyhow::Result<Vec<Duration>> {
    let spec = crate::setup::echo_spec()?;
    let mut p = AgentProcess::spawn(&spec, 1 << 20)?;
    p.send(&protocol::user_message_line(MESSAGE)).await?;
    let mut out = Vec::new();
    loop {
        let line = p
            .next_line()
            .await
            .ok_or_else(|| anyhow::anyhow!("echo exited"))??;
        match protocol::parse_line(&line) {
            Ok((AgentEvent::TextDelta(t), _)) => out.extend(latency(&t)),
            Ok((AgentEvent::Result(_), _)) => break,
            _ => {}
        }
    }
    p.shutdown(Duration::from_secs(1)).await;
    Ok(out)
}

async fn sse(base: &str) -> anyhow::Result<Vec<Duration>> {
    let mut resp = reqwest::Client::new()
        .post(format!("{base}/api/v1/teams/demo/stream"))
        .json(&json!({"message": MESSAGE}))
        .send()
        .await?;
    let mut buf = String::new();
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            if block.contains("event: chunk")
                && let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: "))
                && let Ok(v) = serde_json::from_str::<Value>(data)
            {
                out.extend(latency(v["text"].as_str().unwrap_or_default()));
            }
        }
    }
    Ok(out)
}

async fn websocket(addr: std::net::SocketAddr) -> anyhow::Result<Vec<Duration>> {
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/api/v1/stream")).await?;
    let msg = json!({"type": "message", "team": "demo", "message": MESSAGE}).to_string();
    ws.send(tokio_tungstenite::tungstenite::Message::Text(msg.into()))
        .await?;
    let mut out = Vec::new();
    while let Some(m) = ws.next().await {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m? {
            let v: Value = serde_json::from_str(t.as_str())?;
            match v["type"].as_str() {
                Some("chunk") => out.extend(latency(v["text"].as_str().unwrap_or_default())),
                Some("complete") | Some("error") => break,
                _ => {}
            }
        }
    }
    Ok(out)
}

/// A Socket.IO client speaking the protocol itself over a WebSocket
/// (Engine.IO 4 frames: `0` open, `2`/`3` ping/pong, `40` connect, `42`
/// events), as socket.io-client does after its upgrade.
async fn socketio(addr: std::net::SocketAddr) -> anyhow::Result<Vec<Duration>> {
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    ws.send(Message::Text("40".into())).await?;
    let tell = json!(["tell:start", {"toTeam": "demo", "message": MESSAGE}]);
    let mut out = Vec::new();
    while let Some(m) = ws.next().await {
        let Message::Text(t) = m? else { continue };
        let t = t.as_str();
        if t == "2" {
            ws.send(Message::Text("3".into())).await?;
        } else if t.starts_with("40") {
            ws.send(Message::Text(format!("42{tell}").into())).await?;
        } else if let Some(event) = t.strip_prefix("42")
            && let Ok(v) = serde_json::from_str::<Value>(event)
        {
            match v[0].as_str() {
                Some("tell:chunk") => {
                    out.extend(latency(v[1]["chunk"].as_str().unwrap_or_default()))
                }
                Some("tell:complete") | Some("tell:error") => break,
                _ => {}
            }
        }
    }
    Ok(out)
}

pub async fn run(rounds: usize) -> anyhow::Result<()> {
    let (iris, _dir) = crate::http::open().await?;
    let server = iris_server::start(iris.clone(), None).await?;
    let base = format!("http://{}", server.addr);
    let (mut r, mut s, mut w, mut io) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        r.extend(raw().await?);
        s.extend(sse(&base).await?);
        w.extend(websocket(server.addr).await?);
        io.extend(socketio(server.addr).await?);
    }
    let (r, s, w, io) = (
        summarize(&mut r),
        summarize(&mut s),
        summarize(&mut w),
        summarize(&mut io),
    );
    println!("chunk latency, agent write to client read ({rounds} turns of 300 chunks each)");
    println!(
        "  raw pipe   : median {:8.1} us  p99 {:8.1} us",
        us(r.median),
        us(r.p99)
    );
    println!(
        "  SSE        : median {:8.1} us  p99 {:8.1} us",
        us(s.median),
        us(s.p99)
    );
    println!(
        "  WebSocket  : median {:8.1} us  p99 {:8.1} us",
        us(w.median),
        us(w.p99)
    );
    println!(
        "  Socket.IO  : median {:8.1} us  p99 {:8.1} us",
        us(io.median),
        us(io.p99)
    );
    server.stop().await;
    iris.shutdown().await;
    Ok(())
}
