//! A small local stand-in for an OpenAI-compatible chat completions API
//! (`POST /v1/chat/completions`), so agents that speak it (Qwen Code) run
//! in tests with their base URL pointing here. The same markers as the
//! Messages API stub ([`super::anthropic_stub`]): `MSG<text>` is answered
//! `reply N: text` (N counting the markers of the user's messages, so a
//! resumed conversation shows it kept its context); `MSG<slow …>` streams
//! 60 words 100 ms apart; `MSG<tool NAME JSON>` answers with a call of
//! the function NAME with those arguments and, once the conversation
//! carries its result, replies `tool said: <the result's text>`.
//! Streamed (`stream: true`, as server-sent events ending `[DONE]`) or not.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::anthropic_stub::{Stub, json_reply, listen, markers, read_request};

/// The stub; its `url` is the base URL, with `/v1`.
pub fn start() -> Stub {
    listen("/v1", serve)
}

/// A message's text: a string, or its text parts.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
        _ => String::new(),
    }
}

fn serve(conn: TcpStream, count: &AtomicUsize) -> std::io::Result<()> {
    let (request_line, body) = read_request(&conn)?;
    let mut out = conn;
    if !request_line.starts_with("POST") || !request_line.contains("/chat/completions") {
        let resp = r#"{"object":"list","data":[{"id":"stub-model","object":"model"}]}"#;
        return json_reply(&mut out, "200 OK", resp);
    }
    let n = count.fetch_add(1, Ordering::SeqCst);
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let messages = req["messages"].as_array().cloned().unwrap_or_default();
    let users: Vec<String> = messages
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| text_of(&m["content"]))
        .collect();
    let found: Vec<String> = users.iter().flat_map(|u| markers(u)).collect();
    let last = found.last().cloned().unwrap_or_default();
    // The conversation's last message: a tool's result to report, or the
    // user's prompt (with a tool to call, when it asks for one).
    let tail = messages.last().cloned().unwrap_or(Value::Null);
    let (words, delay, call): (Vec<String>, u64, Option<(String, String)>) =
        if tail["role"] == "tool" {
            (
                vec![format!("tool said: {}", text_of(&tail["content"]).trim())],
                0,
                None,
            )
        } else if let Some(rest) = last.strip_prefix("tool ") {
            let (name, args) = rest.split_once(' ').unwrap_or((rest, "{}"));
            (Vec::new(), 0, Some((name.to_owned(), args.to_owned())))
        } else if last.starts_with("slow") {
            ((0..60).map(|i| format!("w{i} ")).collect(), 100, None)
        } else if found.is_empty() {
            (vec!["ok".into()], 0, None)
        } else {
            let reply = format!("reply {}: {last}", found.len());
            (
                reply.split_inclusive(' ').map(str::to_owned).collect(),
                0,
                None,
            )
        };
    let model = req["model"].clone();
    let usage = json!({"prompt_tokens": 10, "completion_tokens": words.len(), "total_tokens": 10 + words.len()});
    let id = format!("chatcmpl-stub-{n}");
    if req["stream"] != true {
        let message = match &call {
            Some((name, args)) => json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": format!("call_{n}"), "type": "function", "function": {"name": name, "arguments": args}}]}),
            None => json!({"role": "assistant", "content": words.concat()}),
        };
        let finish = if call.is_some() { "tool_calls" } else { "stop" };
        let body = json!({"id": id, "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage})
        .to_string();
        return json_reply(&mut out, "200 OK", &body);
    }
    write!(
        out,
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n"
    )?;
    let mut chunk = |delta: Value, finish: Value| -> std::io::Result<()> {
        let data = json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        write!(out, "data: {data}\n\n")?;
        out.flush()
    };
    match &call {
        Some((name, args)) => {
            chunk(
                json!({"role": "assistant", "tool_calls": [{"index": 0, "id": format!("call_{n}"),
                    "type": "function", "function": {"name": name, "arguments": ""}}]}),
                Value::Null,
            )?;
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": args}}]}),
                Value::Null,
            )?;
            chunk(json!({}), json!("tool_calls"))?;
        }
        None => {
            chunk(json!({"role": "assistant", "content": ""}), Value::Null)?;
            for w in &words {
                if delay > 0 {
                    std::thread::sleep(Duration::from_millis(delay));
                }
                chunk(json!({"content": w}), Value::Null)?;
            }
            chunk(json!({}), json!("stop"))?;
        }
    }
    let data = json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
        "choices": [], "usage": usage});
    write!(out, "data: {data}\n\ndata: [DONE]\n\n")?;
    out.flush()
}
