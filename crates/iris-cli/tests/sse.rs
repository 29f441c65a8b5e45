//! Server-Sent Events over a real socket: a turn streamed as it happens,
//! tool uses and errors, and resuming with Last-Event-ID after a disconnect.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// A minimal SSE reader over a streaming response.
struct Reader {
    resp: reqwest::Response,
    buf: String,
}

#[derive(Debug, Clone)]
struct Ev {
    event: String,
    id: Option<String>,
    data: Value,
}

impl Reader {
    async fn next(&mut self) -> Option<Ev> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = (String::from("message"), None, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some(Ev {
                    event,
                    id,
                    data: serde_json::from_str(&data).unwrap_or(Value::Null),
                });
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.resp.chunk())
                .await
                .ok()?
                .ok()??;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

async fn setup() -> (Harness, iris_server::Running, String) {
    let h = start(
        "api:\n  port: 0\n  requireAuth: false\nteams:\n  demo:\n    path: .\n    agent: echo\n",
    )
    .await;
    let server = iris_server::start(h.iris.clone(), None).await.unwrap();
    let base = format!("http://{}/api/v1", server.addr);
    (h, server, base)
}

/// Follow message `id` again, resuming after the event numbered `last`.
async fn resume(base: &str, id: &str, last: &str) -> Reader {
    let resp = reqwest::Client::new()
        .get(format!("{base}/messages/{id}/stream"))
        .header("Last-Event-ID", last)
        .send()
        .await
        .unwrap();
    Reader {
        resp,
        buf: String::new(),
    }
}

async fn post_stream(base: &str, body: Value) -> Reader {
    let resp = reqwest::Client::new()
        .post(format!("{base}/teams/demo/stream"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    Reader {
        resp,
        buf: String::new(),
    }
}

#[tokio::test]
async fn a_turn_streams_start_chunks_and_complete_as_they_happen() {
    let (h, server, base) = setup().await;
    let started = Instant::now();
    let mut r = post_stream(
        &base,
        json!({"message": "one two three four [[delay=150]]"}),
    )
    .await;
    let start = r.next().await.unwrap();
    assert_eq!(start.event, "start");
    assert!(
        start.data["messageId"]
            .as_str()
            .unwrap()
            .starts_with("msg_")
    );
    let first = r.next().await.unwrap();
    assert_eq!(first.event, "chunk");
    let first_at = started.elapsed();
    let mut text = first.data["text"].as_str().unwrap().to_owned();
    let mut ids = vec![first.id.unwrap().parse::<u64>().unwrap()];
    let complete = loop {
        let e = r.next().await.unwrap();
        match e.event.as_str() {
            "chunk" => {
                text.push_str(e.data["text"].as_str().unwrap());
                ids.push(e.id.unwrap().parse().unwrap());
            }
            "complete" => break e,
            other => panic!("unexpected {other}"),
        }
    };
    assert!(
        first_at < started.elapsed() - Duration::from_millis(300),
        "the first chunk came well before the end"
    );
    assert_eq!(text, "one two three four");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(complete.data["response"], "one two three four");
    assert_eq!(complete.data["status"], "completed");
    assert!(r.next().await.is_none(), "the stream ends with the turn");
    server.stop().await;
    h.stop().await;
}

#[tokio::test]
async fn tool_uses_and_failures_are_events() {
    let (h, server, base) = setup().await;
    let mut r = post_stream(&base, json!({"question": "x [[tool=Read]]"})).await;
    let mut kinds = Vec::new();
    let mut id = String::new();
    while let Some(e) = r.next().await {
        match e.event.as_str() {
            "start" => id = e.data["messageId"].as_str().unwrap().to_owned(),
            "tool_use" => assert_eq!(e.data["tool"], "Read"),
            "tool_result" => {
                assert_eq!(e.data["output"], "Read done", "{:?}", e.data);
                assert_eq!(e.data["isError"], false);
                assert!(e.data["durationMs"].is_u64(), "{:?}", e.data);
            }
            _ => {}
        }
        kinds.push(e.event);
    }
    assert_eq!(
        kinds,
        ["start", "tool_use", "tool_result", "chunk", "complete"]
    );
    // Replayed from the database once the turn has ended: the same pieces,
    // the result's duration from the stored times.
    let mut r = resume(&base, &id, "0").await;
    let mut replayed = Vec::new();
    while let Some(e) = r.next().await {
        if e.event == "tool_result" {
            assert_eq!(e.data["output"], "Read done");
            assert!(e.data["durationMs"].is_u64(), "{:?}", e.data);
        }
        replayed.push(e.event);
    }
    assert_eq!(replayed, ["tool_use", "tool_result", "chunk", "complete"]);
    let mut r = post_stream(&base, json!({"message": "[[error=broken]]"})).await;
    let mut last = None;
    while let Some(e) = r.next().await {
        last = Some(e);
    }
    let last = last.unwrap();
    assert_eq!(last.event, "error");
    assert_eq!(last.data["error"], "broken");
    assert_eq!(last.data["code"], "PROCESS_ERROR");
    server.stop().await;
    h.stop().await;
}

#[tokio::test]
async fn a_disconnect_does_not_cancel_and_last_event_id_resumes() {
    let (h, server, base) = setup().await;
    let words: Vec<String> = (0..12).map(|i| format!("w{i}")).collect();
    let message = format!("{} [[delay=40]]", words.join(" "));
    let mut r = post_stream(&base, json!({"message": message})).await;
    let id = r.next().await.unwrap().data["messageId"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut seen = String::new();
    let mut last = 0u64;
    for _ in 0..3 {
        let e = r.next().await.unwrap();
        seen.push_str(e.data["text"].as_str().unwrap());
        last = e.id.unwrap().parse().unwrap();
    }
    drop(r); // the client goes away mid-turn
    // Resume while it is still running, then again after it ended.
    for round in 0..2 {
        if round == 1 {
            eventually("turn completed", || h.iris.pool().live_turn(&id).is_none()).await;
        }
        let mut r = resume(&base, &id, &last.to_string()).await;
        let mut rest = String::new();
        let mut end = None;
        while let Some(e) = r.next().await {
            match e.event.as_str() {
                "chunk" => rest.push_str(e.data["text"].as_str().unwrap()),
                "start" => panic!("no start when resuming"),
                _ => end = Some(e),
            }
        }
        assert_eq!(
            format!("{seen}{rest}"),
            words.join(" "),
            "round {round}: nothing lost or repeated"
        );
        assert_eq!(end.unwrap().data["status"], "completed");
    }
    // `Last-Event-ID: 0` names the start event: what follows it, not the start again.
    let mut r = resume(&base, &id, "0").await;
    let mut names = Vec::new();
    let mut all = String::new();
    while let Some(e) = r.next().await {
        if e.event == "chunk" {
            all.push_str(e.data["text"].as_str().unwrap());
        }
        names.push(e.event);
    }
    assert!(!names.iter().any(|n| n == "start"), "{names:?}");
    assert_eq!(names.last().map(String::as_str), Some("complete"));
    assert_eq!(all, words.join(" "));
    let bad = reqwest::Client::new()
        .get(format!("{base}/messages/{id}/stream"))
        .header("Last-Event-ID", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let missing = reqwest::get(format!("{base}/messages/msg_nope/stream"))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    server.stop().await;
    h.stop().await;
}
