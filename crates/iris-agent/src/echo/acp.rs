//! The echo agent's ACP mode (`agent-echo --acp`): the same agent and
//! directives, its stream-json turned into Agent Client Protocol messages
//! on stdout, and ACP requests on stdin turned into what it reads.
//!
//! It answers `initialize` (offering `session/load` and MCP over http),
//! `session/new`, `session/load`, `session/prompt` (streaming
//! `session/update`s: message chunks, tool calls and their updates, usage)
//! and `session/cancel`; `[[ask=NAME]]` becomes `session/request_permission`
//! with an allow and a reject option.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::Agent;

/// What the reader of stdin and the writer of stdout share.
#[derive(Default)]
struct Shared {
    session_id: Option<String>,
    /// The running `session/prompt`'s request id.
    prompt: Option<Value>,
    /// Permission requests sent: JSON-RPC id → the agent's request id.
    asks: HashMap<String, String>,
    next: u64,
}

type Out = Arc<Mutex<std::io::Stdout>>;

fn write(out: &Out, v: &Value) {
    if let Ok(mut o) = out.lock() {
        let _ = writeln!(o, "{v}");
        let _ = o.flush();
    }
}

fn answer(out: &Out, id: &Value, result: Value) {
    write(out, &json!({"jsonrpc": "2.0", "id": id, "result": result}));
}

pub(super) fn run(args: Vec<String>) -> i32 {
    let out: Out = Arc::new(Mutex::new(std::io::stdout()));
    let shared = Arc::new(Mutex::new(Shared::default()));
    let silent_init = std::env::var("IRIS_ECHO_ACP_SILENT_INIT").is_ok_and(|v| v == "1");
    let (tx, rx) = mpsc::channel();
    {
        let out = out.clone();
        let shared = shared.clone();
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    eprintln!("echo agent: ignoring a line that is not JSON");
                    continue;
                };
                let Some(to_agent) = read(&v, &out, &shared, silent_init) else {
                    continue;
                };
                if tx.send(to_agent).is_err() {
                    break;
                }
            }
        });
    }
    let mut agent = Agent {
        out: Translator {
            buf: Vec::new(),
            out,
            shared,
        },
        session_id: String::new(),
        resumed: false,
        forked_from: None,
        argv: args,
        inbox: rx,
        pending: Default::default(),
        turns: 0,
        started: false,
    };
    agent.serve()
}

/// One ACP message from the client: answered here, or what the agent reads.
fn read(v: &Value, out: &Out, shared: &Mutex<Shared>, silent_init: bool) -> Option<Value> {
    let id = v.get("id").cloned().filter(|i| !i.is_null());
    let params = v.get("params").cloned().unwrap_or(Value::Null);
    let Ok(mut s) = shared.lock() else {
        return None;
    };
    match (v.get("method").and_then(Value::as_str), id) {
        (Some("initialize"), Some(id)) => {
            if !silent_init {
                answer(
                    out,
                    &id,
                    json!({"protocolVersion": 1, "authMethods": [],
                    "agentCapabilities": {"loadSession": true, "mcpCapabilities": {"http": true, "sse": false},
                                          "promptCapabilities": {"image": false, "audio": false, "embeddedContext": false}},
                    "agentInfo": {"name": "iris-echo", "version": env!("CARGO_PKG_VERSION")}}),
                );
            }
            None
        }
        (Some("session/new"), Some(id)) => {
            let session = uuid::Uuid::new_v4().to_string();
            s.session_id = Some(session.clone());
            answer(out, &id, json!({"sessionId": session}));
            None
        }
        (Some("session/load"), Some(id)) => {
            s.session_id = params
                .get("sessionId")
                .and_then(Value::as_str)
                .map(str::to_owned);
            answer(out, &id, Value::Null);
            None
        }
        (Some("session/prompt"), Some(id)) => {
            s.prompt = Some(id);
            let text: String = params
                .get("prompt")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect();
            Some(json!({"type": "user", "message": {"role": "user", "content": text}}))
        }
        (Some("session/cancel"), None) => Some(json!({"type": "control_request",
            "request_id": "acp_cancel", "request": {"subtype": "interrupt"}})),
        (Some(method), Some(id)) => {
            write(
                out,
                &json!({"jsonrpc": "2.0", "id": id,
                "error": {"code": -32601, "message": format!("method not found: {method}")}}),
            );
            None
        }
        (None, Some(id)) => {
            // The answer to a permission request.
            let request_id = s.asks.remove(&id.to_string())?;
            let chosen = v
                .pointer("/result/outcome/optionId")
                .and_then(Value::as_str);
            let answer = match chosen {
                Some("allow") => json!({"behavior": "allow"}),
                Some(_) => json!({"behavior": "deny", "message": "the client rejected it"}),
                None => json!({"behavior": "deny", "message": "the client cancelled the question"}),
            };
            Some(json!({"type": "control_response",
                "response": {"subtype": "success", "request_id": request_id, "response": answer}}))
        }
        _ => None,
    }
}

/// The agent's stdout: each stream-json line it writes, as ACP.
struct Translator {
    buf: Vec<u8>,
    out: Out,
    shared: Arc<Mutex<Shared>>,
}

impl Write for Translator {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]).into_owned();
            self.line(&line);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Translator {
    fn update(&self, session: &Option<String>, update: Value) {
        write(
            &self.out,
            &json!({"jsonrpc": "2.0", "method": "session/update",
                "params": {"sessionId": session, "update": update}}),
        );
    }

    fn line(&mut self, line: &str) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            // `[[garbage]]`: as it is.
            if let Ok(mut o) = self.out.lock() {
                let _ = writeln!(o, "{line}");
                let _ = o.flush();
            }
            return;
        };
        let Ok(mut s) = self.shared.lock() else {
            return;
        };
        let session = s.session_id.clone();
        match v.get("type").and_then(Value::as_str) {
            Some("stream_event") => match v.pointer("/event/type").and_then(Value::as_str) {
                Some("content_block_delta") => {
                    let text = v.pointer("/event/delta/text").cloned().unwrap_or(json!(""));
                    self.update(
                        &session,
                        json!({"sessionUpdate": "agent_message_chunk",
                            "content": {"type": "text", "text": text}}),
                    );
                }
                Some("padding") => self.update(
                    &session,
                    json!({"sessionUpdate": "agent_thought_chunk",
                        "content": {"type": "text", "text": v.pointer("/event/data")}}),
                ),
                // `[[badrpc]]`: JSON, but not JSON-RPC.
                Some("not_rpc") => write(&self.out, &json!({"type": "not_rpc"})),
                _ => {}
            },
            Some("assistant") => {
                for block in v
                    .pointer("/message/content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|b| b.get("type").and_then(Value::as_str) == Some("tool_use"))
                {
                    self.update(
                        &session,
                        json!({"sessionUpdate": "tool_call", "toolCallId": block.get("id"),
                            "title": block.get("name"), "kind": "other", "status": "in_progress",
                            "rawInput": block.get("input")}),
                    );
                }
            }
            Some("user") => {
                for block in v
                    .pointer("/message/content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let failed = block.get("is_error").and_then(Value::as_bool) == Some(true);
                    self.update(
                        &session,
                        json!({"sessionUpdate": "tool_call_update", "toolCallId": block.get("tool_use_id"),
                            "status": if failed { "failed" } else { "completed" },
                            "content": [{"type": "content", "content": {"type": "text", "text": block.get("content")}}]}),
                    );
                }
            }
            Some("plan") => self.update(
                &session,
                json!({"sessionUpdate": "plan", "entries": v.get("entries")}),
            ),
            Some("control_request") => {
                let req = v.get("request").unwrap_or(&Value::Null);
                s.next += 1;
                let id = format!("perm-{}", s.next);
                let request_id = v
                    .get("request_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                s.asks.insert(json!(id).to_string(), request_id.to_owned());
                write(
                    &self.out,
                    &json!({"jsonrpc": "2.0", "id": id, "method": "session/request_permission",
                    "params": {"sessionId": session,
                        "toolCall": {"toolCallId": req.get("tool_use_id"), "title": req.get("tool_name"),
                                     "rawInput": req.get("input")},
                        "options": [{"optionId": "allow", "name": "Allow", "kind": "allow_once"},
                                    {"optionId": "reject", "name": "Reject", "kind": "reject_once"}]}}),
                );
            }
            Some("result") => {
                let Some(id) = s.prompt.take() else {
                    return;
                };
                let text = v.get("result").and_then(Value::as_str).unwrap_or_default();
                let usage = v.get("usage").cloned().unwrap_or(Value::Null);
                let (input, output) = (
                    usage
                        .get("input_tokens")
                        .and_then(Value::as_u64)
                        .unwrap_or(0),
                    usage
                        .get("output_tokens")
                        .and_then(Value::as_u64)
                        .unwrap_or(0),
                );
                self.update(
                    &session,
                    json!({"sessionUpdate": "usage_update", "used": input + output, "size": 200000,
                        "cost": {"amount": v.get("total_cost_usd").and_then(Value::as_f64).unwrap_or(0.0), "currency": "USD"}}),
                );
                let is_error = v.get("is_error").and_then(Value::as_bool) == Some(true);
                let reply = if is_error && text == "interrupted" {
                    json!({"jsonrpc": "2.0", "id": id, "result": {"stopReason": "cancelled"}})
                } else if is_error {
                    json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32603, "message": text}})
                } else {
                    json!({"jsonrpc": "2.0", "id": id, "result": {"stopReason": "end_turn",
                        "usage": {"inputTokens": input, "outputTokens": output, "totalTokens": input + output}}})
                };
                write(&self.out, &reply);
            }
            _ => {}
        }
    }
}
