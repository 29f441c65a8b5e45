//! A small local stand-in for the Anthropic Messages API, so the real
//! Claude Code CLI can run in tests with `ANTHROPIC_BASE_URL` pointing here.
//!
//! It streams SSE (message_start, content_block_*, message_delta,
//! message_stop). Test messages carry markers `MSG<text>`; the reply is
//! `reply N: text`, N counting the markers in the whole request, so a
//! resumed conversation shows it kept its context. `MSG<api-error …>` gets a
//! 400 error; `MSG<slow …>` streams 60 words 100 ms apart; `MSG<paced …>`
//! streams its reply 40 ms a word; `MSG<tool NAME>` or `MSG<tool NAME
//! JSON>` answers with a use of the tool NAME (input JSON, else `{}`; write
//! `<`, `>` inside it as `\u003c`, `\u003e`) and, once the request carries its
//! result, replies `tool said: <the result's text>`.
//! Plain std networking: one thread per connection, `Connection: close`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

pub struct Stub {
    pub url: String,
    pub requests: Arc<AtomicUsize>,
}

pub fn start() -> Stub {
    listen("", serve)
}

/// A stub on a port of its own: each connection answered by `serve` on a
/// thread of its own; `url` is its address followed by `base`.
pub fn listen(base: &str, serve: fn(TcpStream, &AtomicUsize) -> std::io::Result<()>) -> Stub {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind stub");
    let url = format!("http://{}{base}", listener.local_addr().expect("stub addr"));
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let count = count.clone();
            std::thread::spawn(move || {
                let _ = serve(conn, &count);
            });
        }
    });
    Stub { url, requests }
}

/// The `MSG<…>` markers in `body`, in order.
pub fn markers(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find("MSG<") {
        rest = &rest[i + 4..];
        if let Some(end) = rest.find('>') {
            out.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
    out
}

/// The text of the result of tool use `id` among `blocks`.
fn tool_result_in(blocks: &[Value], id: &str) -> Option<String> {
    let result = blocks
        .iter()
        .find(|b| b["type"] == "tool_result" && b["tool_use_id"] == id)?;
    Some(match &result["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
        other => other.to_string(),
    })
}

/// Answer with a JSON body and `status` (`200 OK`, `400 Bad Request`…).
pub fn json_reply(out: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    write!(
        out,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// One HTTP/1.1 request from `conn`: its request line and body.
pub fn read_request(conn: &TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok((request_line, body))
}

fn serve(conn: TcpStream, count: &AtomicUsize) -> std::io::Result<()> {
    let (request_line, body) = read_request(&conn)?;
    let mut out = conn;
    if !request_line.starts_with("POST /v1/messages") || request_line.contains("count_tokens") {
        let resp = if request_line.contains("count_tokens") {
            r#"{"input_tokens":10}"#
        } else {
            "{}"
        };
        return json_reply(&mut out, "200 OK", resp);
    }
    let n = count.fetch_add(1, Ordering::SeqCst);
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let text = String::from_utf8_lossy(&body);
    let found = markers(&text);
    let last = found.last().cloned().unwrap_or_default();
    if last.starts_with("api-error") {
        let err = json!({"type":"error","error":{"type":"invalid_request_error","message":"stub refuses: api-error requested"}}).to_string();
        return json_reply(&mut out, "400 Bad Request", &err);
    }
    // Tool markers are the user's prompts that start with one; each gets
    // one tool use. While fewer tool uses than such prompts are in the
    // conversation, the newest prompt's tool is used; otherwise the result
    // of the newest tool use is reported. (Counting, not looking at the last
    // message: Claude Code merges a new prompt, older tool results and
    // reminders into one message.)
    let messages = req["messages"].as_array().cloned().unwrap_or_default();
    let blocks = |role: &str| -> Vec<Value> {
        messages
            .iter()
            .filter(|m| m["role"] == role)
            .flat_map(|m| match &m["content"] {
                Value::Array(b) => b.clone(),
                other => vec![json!({"type": "text", "text": other})],
            })
            .collect()
    };
    let (user, assistant) = (blocks("user"), blocks("assistant"));
    let prompts: Vec<&Value> = user
        .iter()
        .filter(|b| {
            b["type"] == "text"
                && b["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("MSG<tool "))
        })
        .collect();
    let uses: Vec<&str> = assistant
        .iter()
        .filter(|b| b["type"] == "tool_use")
        .filter_map(|b| b["id"].as_str())
        .collect();
    let marker = (prompts.len() > uses.len())
        .then(|| {
            prompts
                .last()
                .and_then(|b| markers(&b["text"].to_string()).pop())
        })
        .flatten();
    // A newer prompt that asks no tool (in the last user message) is
    // answered, not the last tool's result (a conversation that goes on
    // after a tool use).
    let newer_prompt = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .is_some_and(|m| {
            markers(&m["content"].to_string())
                .iter()
                .any(|k| !k.starts_with("tool "))
        });
    let tool_result = if marker.is_none() && !newer_prompt {
        uses.last().and_then(|id| tool_result_in(&user, id))
    } else {
        None
    };
    let tool_call =
        marker
            .map(|m| m["tool ".len()..].to_owned())
            .map(|rest| match rest.split_once(' ') {
                Some((name, input)) => {
                    // The marker was read from the JSON body: a string's escapes
                    // are still on it.
                    let text: String = serde_json::from_str(&format!("\"{input}\""))
                        .unwrap_or_else(|_| input.to_owned());
                    (
                        name.to_owned(),
                        serde_json::from_str(&text).unwrap_or_else(|_| json!({})),
                    )
                }
                None => (rest.to_owned(), json!({})),
            });
    let (words, delay): (Vec<String>, u64) = if let Some(result) = &tool_result {
        (vec![format!("tool said: {result}")], 0)
    } else if last.starts_with("slow") {
        ((0..60).map(|i| format!("w{i} ")).collect(), 100)
    } else if last.starts_with("paced") {
        let reply = format!("reply {}: {last}", found.len());
        (reply.split_inclusive(' ').map(str::to_owned).collect(), 40)
    } else if found.is_empty() {
        (vec!["ok".into()], 0)
    } else {
        let reply = format!("reply {}: {last}", found.len());
        (reply.split_inclusive(' ').map(str::to_owned).collect(), 0)
    };
    let model = req.get("model").cloned().unwrap_or(json!("stub"));
    if req.get("stream").and_then(Value::as_bool) != Some(true) {
        let msg = json!({"id":"msg_stub","type":"message","role":"assistant","model":model,
            "content":[{"type":"text","text":words.concat()}],"stop_reason":"end_turn","stop_sequence":null,
            "usage":{"input_tokens":5,"output_tokens":words.len()}})
        .to_string();
        return json_reply(&mut out, "200 OK", &msg);
    }
    write!(
        out,
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n"
    )?;
    let mut event = |name: &str, data: Value| -> std::io::Result<()> {
        write!(out, "event: {name}\ndata: {data}\n\n")?;
        out.flush()
    };
    event(
        "message_start",
        json!({"type":"message_start","message":{"id":"msg_stub","type":"message","role":"assistant",
        "model":model,"content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":5,"output_tokens":1}}}),
    )?;
    if let Some((name, input)) = tool_call {
        event(
            "content_block_start",
            json!({"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":format!("toolu_stub_{n}"),"name":name,"input":{}}}),
        )?;
        event(
            "content_block_delta",
            json!({"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":input.to_string()}}),
        )?;
        event(
            "content_block_stop",
            json!({"type":"content_block_stop","index":0}),
        )?;
        event(
            "message_delta",
            json!({"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":1}}),
        )?;
        return event("message_stop", json!({"type":"message_stop"}));
    }
    event(
        "content_block_start",
        json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
    )?;
    for w in &words {
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        event(
            "content_block_delta",
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":w}}),
        )?;
    }
    event(
        "content_block_stop",
        json!({"type":"content_block_stop","index":0}),
    )?;
    event(
        "message_delta",
        json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":words.len()}}),
    )?;
    event("message_stop", json!({"type":"message_stop"}))
}
