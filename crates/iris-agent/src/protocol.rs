//! The stream-json protocol of Claude Code, which the echo agent speaks too.
//!
//! Input (one JSON object per line on the agent's stdin): user messages and
//! control requests. Output (one JSON object per line on stdout): `system`,
//! `stream_event`, `assistant`, `user`, `result` and `control_response`.

use serde::Serialize;
use serde_json::{Value, json};

/// A tool call the agent made during a turn, with its result once the
/// agent has it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolUse {
    pub id: String,
    pub name: String,
    pub input: Value,
    /// What the tool gave back (at most [`TOOL_OUTPUT_MAX`] bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_error: Option<bool>,
    /// The output was longer than [`TOOL_OUTPUT_MAX`] and was cut.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// From the tool use to its result, as Iris saw them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

impl ToolUse {
    pub fn new(id: String, name: String, input: Value) -> Self {
        ToolUse {
            id,
            name,
            input,
            output: None,
            is_error: None,
            truncated: false,
            duration_ms: None,
        }
    }

    /// Note the tool's result.
    pub fn finish(&mut self, result: &ToolResult, duration_ms: Option<u64>) {
        self.output = Some(result.output.clone());
        self.is_error = Some(result.is_error);
        self.truncated = result.truncated;
        self.duration_ms = duration_ms;
    }
}

/// The most of a tool's output a turn keeps and streams: enough to read
/// what happened, not a whole file dump per event.
pub const TOOL_OUTPUT_MAX: usize = 16 * 1024;

/// What a tool gave back to the agent.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolResult {
    pub tool_use_id: String,
    pub is_error: bool,
    /// Its text, cut at [`TOOL_OUTPUT_MAX`] bytes.
    pub output: String,
    pub truncated: bool,
}

impl ToolResult {
    pub fn new(tool_use_id: String, is_error: bool, output: &str) -> Self {
        let mut end = output.len().min(TOOL_OUTPUT_MAX);
        while !output.is_char_boundary(end) {
            end -= 1;
        }
        ToolResult {
            tool_use_id,
            is_error,
            output: output[..end].to_owned(),
            truncated: end < output.len(),
        }
    }
}

/// One parsed line of agent output.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    /// `system`/`init`: the agent is up and tells its session id.
    Init {
        session_id: Option<String>,
        model: Option<String>,
        /// The agent could not continue the conversation it was asked to
        /// (an ACP agent that could not load it): it starts afresh.
        lost: bool,
    },
    /// A partial text delta (`stream_event` → `content_block_delta`).
    TextDelta(String),
    /// A complete assistant message: its text and tool uses.
    Assistant {
        text: String,
        tool_uses: Vec<ToolUse>,
    },
    /// A `user` message from the agent loop: the results of its tools.
    ToolResults(Vec<ToolResult>),
    /// The agent's plan, whole each time it changes: `[{content, status,
    /// priority}]` (an ACP agent's `plan` update; Iris's own line type,
    /// which Claude Code does not write).
    Plan(Value),
    /// End of the turn.
    Result(TurnResult),
    /// The agent asks whether it may use a tool (a `control_request` of
    /// subtype `can_use_tool`, sent with `--permission-prompt-tool stdio`);
    /// answered with [`permission_line`].
    PermissionRequest {
        request_id: String,
        tool_name: String,
        input: Value,
        tool_use_id: Option<String>,
    },
    /// Answer to a control request (interrupt).
    ControlResponse {
        request_id: String,
        success: bool,
        error: Option<String>,
    },
    /// Any other well-formed line (other stream events, hooks, …).
    Other { kind: String },
}

/// The `result` line that ends a turn.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TurnResult {
    pub is_error: bool,
    pub subtype: Option<String>,
    pub text: Option<String>,
    pub session_id: Option<String>,
    pub usage: Option<Value>,
    pub cost_usd: Option<f64>,
    pub duration_ms: Option<u64>,
    pub num_turns: Option<u64>,
}

/// Why a line could not be understood.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("JSON line without a string `type`")]
    NoType,
}

/// Parse one stdout line. The raw value is returned too, since turns keep
/// their raw events.
pub fn parse_line(line: &str) -> Result<(AgentEvent, Value), ParseError> {
    let raw: Value = serde_json::from_str(line).map_err(|e| ParseError::NotJson(e.to_string()))?;
    let event = interpret(&raw)?;
    Ok((event, raw))
}

/// Interpret an already-parsed line (a stored raw event).
pub fn parse_value(raw: &Value) -> Result<AgentEvent, ParseError> {
    interpret(raw)
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn interpret(raw: &Value) -> Result<AgentEvent, ParseError> {
    let kind = str_at(raw, "type").ok_or(ParseError::NoType)?;
    Ok(match kind {
        "system" if str_at(raw, "subtype") == Some("init") => AgentEvent::Init {
            session_id: str_at(raw, "session_id").map(str::to_owned),
            model: str_at(raw, "model").map(str::to_owned),
            lost: raw.get("lost").and_then(Value::as_bool) == Some(true),
        },
        "stream_event" => {
            let delta = raw
                .get("event")
                .filter(|e| str_at(e, "type") == Some("content_block_delta"))
                .and_then(|e| e.get("delta"))
                .filter(|d| str_at(d, "type") == Some("text_delta"))
                .and_then(|d| str_at(d, "text"));
            match delta {
                Some(text) => AgentEvent::TextDelta(text.to_owned()),
                None => AgentEvent::Other {
                    kind: "stream_event".into(),
                },
            }
        }
        "assistant" => assistant(raw),
        "user" => {
            let results: Vec<ToolResult> = raw
                .pointer("/message/content")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|b| str_at(b, "type") == Some("tool_result"))
                .map(|b| {
                    ToolResult::new(
                        str_at(b, "tool_use_id").unwrap_or_default().to_owned(),
                        b.get("is_error").and_then(Value::as_bool).unwrap_or(false),
                        &block_text(b.get("content")),
                    )
                })
                .collect();
            if results.is_empty() {
                AgentEvent::Other {
                    kind: "user".into(),
                }
            } else {
                AgentEvent::ToolResults(results)
            }
        }
        "plan" => AgentEvent::Plan(raw.get("entries").cloned().unwrap_or_else(|| json!([]))),
        "result" => AgentEvent::Result(TurnResult {
            is_error: raw
                .get("is_error")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            subtype: str_at(raw, "subtype").map(str::to_owned),
            text: str_at(raw, "result").map(str::to_owned),
            session_id: str_at(raw, "session_id").map(str::to_owned),
            usage: raw.get("usage").cloned(),
            cost_usd: raw.get("total_cost_usd").and_then(Value::as_f64),
            duration_ms: raw.get("duration_ms").and_then(Value::as_u64),
            num_turns: raw.get("num_turns").and_then(Value::as_u64),
        }),
        "control_request"
            if raw.pointer("/request/subtype").and_then(Value::as_str) == Some("can_use_tool") =>
        {
            let req = raw.get("request").unwrap_or(&Value::Null);
            AgentEvent::PermissionRequest {
                request_id: str_at(raw, "request_id").unwrap_or_default().to_owned(),
                tool_name: str_at(req, "tool_name").unwrap_or_default().to_owned(),
                input: req.get("input").cloned().unwrap_or_else(|| json!({})),
                tool_use_id: str_at(req, "tool_use_id").map(str::to_owned),
            }
        }
        "control_response" => {
            let resp = raw.get("response").unwrap_or(&Value::Null);
            AgentEvent::ControlResponse {
                request_id: str_at(resp, "request_id").unwrap_or_default().to_owned(),
                success: str_at(resp, "subtype") == Some("success"),
                error: str_at(resp, "error").map(str::to_owned),
            }
        }
        other => AgentEvent::Other {
            kind: other.to_owned(),
        },
    })
}

/// The text of a tool result's `content`: a string, or text blocks (other
/// blocks, such as images, are named, not shown).
fn block_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .map(|b| match str_at(b, "type") {
                Some("text") => str_at(b, "text").unwrap_or_default().to_owned(),
                Some(other) => format!("[{other}]"),
                None => String::new(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn assistant(raw: &Value) -> AgentEvent {
    let mut text = String::new();
    let mut tool_uses = Vec::new();
    let blocks = raw.pointer("/message/content").and_then(Value::as_array);
    for block in blocks.into_iter().flatten() {
        match str_at(block, "type") {
            Some("text") => text.push_str(str_at(block, "text").unwrap_or_default()),
            Some("tool_use") => tool_uses.push(ToolUse::new(
                str_at(block, "id").unwrap_or_default().to_owned(),
                str_at(block, "name").unwrap_or_default().to_owned(),
                block.get("input").cloned().unwrap_or(Value::Null),
            )),
            _ => {}
        }
    }
    AgentEvent::Assistant { text, tool_uses }
}

/// The stdin line that sends a user message.
pub fn user_message_line(text: &str) -> String {
    let v = json!({
        "type": "user",
        "message": {"role": "user", "content": [{"type": "text", "text": text}]},
        "parent_tool_use_id": null,
    });
    let mut line = v.to_string();
    line.push('\n');
    line
}

/// The stdin line that interrupts the running turn (Claude Code's control
/// protocol; the echo agent honours it too).
pub fn interrupt_line(request_id: &str) -> String {
    let v = json!({
        "type": "control_request",
        "request_id": request_id,
        "request": {"subtype": "interrupt"},
    });
    let mut line = v.to_string();
    line.push('\n');
    line
}

/// The stdin line that answers a [`AgentEvent::PermissionRequest`]: allow
/// (with the tool's input, changed or not) or deny with a message the agent
/// reads (Claude Code's control protocol, `behavior: allow | deny`).
pub fn permission_line(request_id: &str, allow: bool, input: &Value, message: &str) -> String {
    let decision = if allow {
        json!({"behavior": "allow", "updatedInput": input})
    } else {
        json!({"behavior": "deny", "message": message})
    };
    let v = json!({
        "type": "control_response",
        "response": {"subtype": "success", "request_id": request_id, "response": decision},
    });
    let mut line = v.to_string();
    line.push('\n');
    line
}

/// Extract the text of a user message line as written by [`user_message_line`]
/// (or a plain string `content`, as other clients send).
pub fn user_message_text(raw: &Value) -> Option<String> {
    let content = raw.pointer("/message/content")?;
    if let Some(s) = content.as_str() {
        return Some(s.to_owned());
    }
    let mut out = String::new();
    for block in content.as_array()? {
        if str_at(block, "type") == Some("text") {
            out.push_str(str_at(block, "text").unwrap_or_default());
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_tool_result_of_a_user_line_with_its_text() {
        let long = "é".repeat(TOOL_OUTPUT_MAX);
        let line = json!({"type":"user","message":{"content":[
            {"type":"tool_result","tool_use_id":"a","content":"file.txt\n","is_error":false},
            {"type":"text","text":"not a result"},
            {"type":"tool_result","tool_use_id":"b","is_error":true,
             "content":[{"type":"text","text":"no such"},{"type":"image"}]},
            {"type":"tool_result","tool_use_id":"c","content":long}]}});
        let (e, _) = parse_line(&line.to_string()).unwrap();
        let AgentEvent::ToolResults(r) = e else {
            panic!("not tool results: {e:?}");
        };
        assert_eq!(r.len(), 3);
        assert_eq!((r[0].tool_use_id.as_str(), r[0].is_error), ("a", false));
        assert_eq!(r[0].output, "file.txt\n");
        assert_eq!(
            (r[1].output.as_str(), r[1].is_error),
            ("no such\n[image]", true)
        );
        // Cut at the cap, on a character boundary.
        assert!(r[2].truncated && !r[0].truncated);
        assert!(r[2].output.len() <= TOOL_OUTPUT_MAX && r[2].output.len() > TOOL_OUTPUT_MAX - 2);
        let (e, _) = parse_line(r#"{"type":"user","message":{"content":"hi"}}"#).unwrap();
        assert!(matches!(e, AgentEvent::Other { .. }));
    }

    #[test]
    fn parses_the_claude_line_kinds() {
        let (e, _) =
            parse_line(r#"{"type":"system","subtype":"init","session_id":"s1","model":"m"}"#)
                .unwrap();
        assert_eq!(
            e,
            AgentEvent::Init {
                session_id: Some("s1".into()),
                model: Some("m".into()),
                lost: false,
            }
        );
        let (e, _) = parse_line(
            r#"{"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"He"}}}"#,
        )
        .unwrap();
        assert_eq!(e, AgentEvent::TextDelta("He".into()));
        let (e, _) = parse_line(
            r#"{"type":"assistant","message":{"content":[{"type":"text","text":"Hi"},{"type":"tool_use","id":"t1","name":"Read","input":{"p":1}}]}}"#,
        )
        .unwrap();
        match e {
            AgentEvent::Assistant { text, tool_uses } => {
                assert_eq!(text, "Hi");
                assert_eq!(tool_uses[0].name, "Read");
                assert_eq!(tool_uses[0].input["p"], 1);
            }
            other => panic!("unexpected {other:?}"),
        }
        let (e, _) = parse_line(
            r#"{"type":"result","subtype":"success","is_error":false,"result":"Hi","total_cost_usd":0.5,"usage":{"input_tokens":3},"duration_ms":12,"num_turns":1,"session_id":"s1"}"#,
        )
        .unwrap();
        match e {
            AgentEvent::Result(r) => {
                assert!(!r.is_error);
                assert_eq!(r.text.as_deref(), Some("Hi"));
                assert_eq!(r.cost_usd, Some(0.5));
                assert_eq!(r.usage.unwrap()["input_tokens"], 3);
            }
            other => panic!("unexpected {other:?}"),
        }
        let (e, _) = parse_line(
            r#"{"type":"control_response","response":{"subtype":"success","request_id":"r1","response":{}}}"#,
        )
        .unwrap();
        assert_eq!(
            e,
            AgentEvent::ControlResponse {
                request_id: "r1".into(),
                success: true,
                error: None
            }
        );
    }

    #[test]
    fn permission_requests_and_answers() {
        let (e, _) = parse_line(
            r#"{"type":"control_request","request_id":"r9","request":{"subtype":"can_use_tool","tool_name":"Bash","input":{"command":"ls"},"tool_use_id":"t1"}}"#,
        )
        .unwrap();
        assert_eq!(
            e,
            AgentEvent::PermissionRequest {
                request_id: "r9".into(),
                tool_name: "Bash".into(),
                input: json!({"command": "ls"}),
                tool_use_id: Some("t1".into()),
            }
        );
        let allow: Value =
            serde_json::from_str(&permission_line("r9", true, &json!({"command": "ls"}), ""))
                .unwrap();
        assert_eq!(allow["response"]["request_id"], "r9");
        assert_eq!(allow["response"]["response"]["behavior"], "allow");
        assert_eq!(
            allow["response"]["response"]["updatedInput"]["command"],
            "ls"
        );
        let deny: Value =
            serde_json::from_str(&permission_line("r9", false, &json!({}), "no")).unwrap();
        assert_eq!(
            deny["response"]["response"],
            json!({"behavior": "deny", "message": "no"})
        );
    }

    #[test]
    fn rejects_non_json_and_untyped_lines() {
        assert!(matches!(parse_line("hello"), Err(ParseError::NotJson(_))));
        assert_eq!(parse_line(r#"{"a":1}"#).unwrap_err(), ParseError::NoType);
        let (e, _) = parse_line(r#"{"type":"weird"}"#).unwrap();
        assert_eq!(
            e,
            AgentEvent::Other {
                kind: "weird".into()
            }
        );
    }

    #[test]
    fn user_message_round_trips() {
        let line = user_message_line("hi \"there\"\nsecond");
        assert!(line.ends_with('\n') && !line.trim_end().contains('\n'));
        let raw: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(user_message_text(&raw).unwrap(), "hi \"there\"\nsecond");
        let plain = json!({"type":"user","message":{"content":"x"}});
        assert_eq!(user_message_text(&plain).unwrap(), "x");
    }
}
