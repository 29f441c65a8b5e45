//! The Agent Client Protocol (ACP, protocol version 1: JSON-RPC 2.0, one
//! message per line on stdio) spoken to an `acp` team's agent.
//!
//! Iris's turn machinery speaks stream-json (see [`crate::protocol`]). An
//! [`AcpClient`] sits between it and an ACP agent and translates both ways,
//! so an ACP agent runs through the same actor, watchdogs, approvals,
//! records and transports as Claude Code:
//!
//! | stream-json from Iris | ACP to the agent |
//! | --- | --- |
//! | (spawn) | `initialize`, then `session/load` (resume, where the agent offers it) or `session/new` |
//! | `user` message | `session/prompt` (queued until the session is open) |
//! | `control_request` interrupt | `session/cancel` (and `cancelled` for a permission still asked) |
//! | `control_response` to `can_use_tool` | the answer to `session/request_permission` (the first allow or reject option) |
//!
//! | ACP from the agent | stream-json to Iris |
//! | --- | --- |
//! | `session/new` / `session/load` answered | `system`/`init` with the agent's session id |
//! | `agent_message_chunk` | a text delta |
//! | `tool_call` | an `assistant` tool use (name: the call's title; input: its raw input) |
//! | `tool_call_update` completed / failed | a `user` tool result with the call's text content |
//! | `plan` | a `plan` line (its entries) |
//! | `session/request_permission` | `control_request` `can_use_tool` |
//! | `session/prompt` answered | `result` (stop reason; usage and cost when reported) |
//!
//! The `agent-client-protocol` crates are not used (docs/agents.md says
//! why: a `!Send` connection that would own the process's stdio beside
//! the actor, and a schema crate that turns on serde_json's
//! `preserve_order` for the whole binary). The messages here are the few
//! of protocol version 1 a client needs, read leniently.

use std::collections::{HashMap, VecDeque};

use serde_json::{Value, json};

use crate::protocol::user_message_text;

/// The protocol version Iris speaks.
pub const PROTOCOL_VERSION: u64 = 1;

/// What a line became: lines for Iris's turn machinery (stream-json) and
/// lines to write to the agent (ACP).
#[derive(Debug, Default, PartialEq)]
pub struct Translated {
    pub to_iris: Vec<String>,
    pub to_agent: Vec<String>,
}

impl Translated {
    fn iris(&mut self, v: Value) {
        self.to_iris.push(v.to_string());
    }

    fn agent(&mut self, v: Value) {
        let mut line = v.to_string();
        line.push('\n');
        self.to_agent.push(line);
    }
}

/// How the session is to be opened.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AcpStart {
    /// The agent's own id of a session to load (`session/load`), when the
    /// agent offers it; otherwise a new session is made.
    pub resume: Option<String>,
    /// MCP servers handed to the agent in `session/new` (ACP's `McpServer`
    /// shapes); http ones only when the agent says it takes them.
    pub mcp_servers: Vec<Value>,
    /// The conversation had begun (a resume or a fork): a new session
    /// loses what was said, which the `init` line says (`lost`).
    pub continues: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// `initialize` sent, not answered.
    Initializing,
    /// `session/new` or `session/load` sent, not answered.
    Opening {
        loading: bool,
    },
    Open,
}

/// A permission request the agent waits on.
struct Asked {
    id: Value,
    options: Vec<Value>,
    /// The tool's input as the agent asked (an approver's edit cannot be
    /// sent back over ACP).
    input: Value,
}

/// One ACP agent's side of the conversation (see the module docs).
pub struct AcpClient {
    cwd: String,
    start: AcpStart,
    phase: Phase,
    session_id: Option<String>,
    next_id: u64,
    /// Ids of Iris's own requests: `initialize`, the session's opening,
    /// the running prompt.
    init_id: u64,
    open_id: u64,
    prompt_id: Option<u64>,
    /// Prompts sent before the session was open.
    waiting: VecDeque<String>,
    asked: HashMap<String, Asked>,
    /// The cost the agent last reported (`usage_update`), in USD.
    cost_usd: Option<f64>,
    model: Option<String>,
    /// The `init` line, said to Iris with every prompt (so each turn
    /// records the agent's session id, as Claude Code's do).
    init: Option<Value>,
    /// `session/cancel` sent; the prompt not yet answered.
    cancelling: bool,
    /// A conversation that had begun was opened as a new session: said
    /// once, with the next `init`.
    lost: bool,
    /// Tool calls of the running prompt that have their result.
    finished: std::collections::HashSet<String>,
}

/// Why the agent's output cannot be taken: the process is replaced.
#[derive(Debug, PartialEq)]
pub struct ProtocolError(pub String);

impl AcpClient {
    pub fn new(cwd: &std::path::Path, start: AcpStart) -> Self {
        AcpClient {
            cwd: cwd.display().to_string(),
            start,
            phase: Phase::Initializing,
            session_id: None,
            next_id: 0,
            init_id: 0,
            open_id: 0,
            prompt_id: None,
            waiting: VecDeque::new(),
            asked: HashMap::new(),
            cost_usd: None,
            model: None,
            init: None,
            cancelling: false,
            lost: false,
            finished: Default::default(),
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn request(&mut self, out: &mut Translated, method: &str, params: Value) -> u64 {
        let id = self.id();
        out.agent(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        id
    }

    /// The first lines to the agent: `initialize`. Iris offers no file
    /// system or terminal of its own: the agent works in its folder.
    pub fn start(&mut self) -> Vec<String> {
        let mut out = Translated::default();
        self.init_id = self.request(
            &mut out,
            "initialize",
            json!({
                "protocolVersion": PROTOCOL_VERSION,
                "clientCapabilities": {"fs": {"readTextFile": false, "writeTextFile": false}, "terminal": false},
                "clientInfo": {"name": "iris", "version": env!("CARGO_PKG_VERSION")},
            }),
        );
        out.to_agent
    }

    /// A stream-json line from Iris, for the agent.
    pub fn outgoing(&mut self, line: &str) -> Translated {
        let mut out = Translated::default();
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            return out;
        };
        match v.get("type").and_then(Value::as_str) {
            Some("user") => {
                let text = user_message_text(&v).unwrap_or_default();
                if self.phase == Phase::Open {
                    self.prompt(&mut out, &text);
                } else {
                    self.waiting.push_back(text);
                }
            }
            Some("control_request") => {
                let request_id = v.get("request_id").cloned().unwrap_or(Value::Null);
                if v.pointer("/request/subtype").and_then(Value::as_str) == Some("interrupt") {
                    self.cancel(&mut out);
                }
                out.iris(json!({"type": "control_response",
                    "response": {"subtype": "success", "request_id": request_id}}));
            }
            Some("control_response") => self.answer_permission(&mut out, &v),
            _ => {}
        }
        out
    }

    fn prompt(&mut self, out: &mut Translated, text: &str) {
        if let Some(mut init) = self.init.clone() {
            if std::mem::take(&mut self.lost) {
                init["lost"] = true.into();
            }
            out.iris(init);
        }
        self.finished.clear();
        let params = json!({
            "sessionId": self.session_id,
            "prompt": [{"type": "text", "text": text}],
        });
        self.prompt_id = Some(self.request(out, "session/prompt", params));
    }

    fn cancel(&mut self, out: &mut Translated) {
        let waiting = std::mem::take(&mut self.waiting);
        if !waiting.is_empty() {
            // Never sent: it ends here, cancelled.
            out.iris(result_line(true, "cancelled", "cancelled", None, None));
        }
        if self.prompt_id.is_none() {
            return;
        }
        // The protocol: answer every permission still asked with
        // `cancelled`, then cancel the prompt.
        for (_, asked) in self.asked.drain() {
            out.agent(json!({"jsonrpc": "2.0", "id": asked.id,
                "result": {"outcome": {"outcome": "cancelled"}}}));
        }
        out.agent(json!({"jsonrpc": "2.0", "method": "session/cancel",
            "params": {"sessionId": self.session_id}}));
        self.cancelling = true;
    }

    fn answer_permission(&mut self, out: &mut Translated, v: &Value) {
        let response = v.get("response").unwrap_or(&Value::Null);
        let Some(request_id) = response.get("request_id").and_then(Value::as_str) else {
            return;
        };
        let Some(asked) = self.asked.remove(request_id) else {
            return;
        };
        let mut allow = response
            .pointer("/response/behavior")
            .and_then(Value::as_str)
            == Some("allow");
        let edited = response
            .pointer("/response/updatedInput")
            .is_some_and(|i| !i.is_null() && *i != asked.input);
        if allow && edited {
            // ACP cannot carry a changed input: rather than run the
            // original, refuse.
            tracing::warn!("an approval changed the tool's input, which ACP cannot send: refused");
            allow = false;
        }
        // Once only: an "always" would silence Iris's later questions.
        let kinds: &[&str] = if allow {
            &["allow_once"]
        } else {
            &["reject_once", "reject_always"]
        };
        let chosen = kinds.iter().find_map(|k| {
            asked
                .options
                .iter()
                .find(|o| o.get("kind").and_then(Value::as_str) == Some(k))
                .and_then(|o| o.get("optionId").cloned())
        });
        let outcome = match chosen {
            Some(option) => json!({"outcome": "selected", "optionId": option}),
            // No option says what Iris decided: withdraw the question.
            None => json!({"outcome": "cancelled"}),
        };
        out.agent(json!({"jsonrpc": "2.0", "id": asked.id, "result": {"outcome": outcome}}));
    }

    /// A line from the agent, for Iris. An `Err` means the agent broke the
    /// protocol: its process is replaced.
    pub fn incoming(&mut self, line: &str) -> Result<Translated, ProtocolError> {
        let mut out = Translated::default();
        if line.trim().is_empty() {
            return Ok(out);
        }
        let v: Value = serde_json::from_str(line)
            .map_err(|e| ProtocolError(format!("the agent wrote a line that is not JSON ({e})")))?;
        if v.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err(ProtocolError(
                "the agent wrote a message that is not JSON-RPC 2.0".into(),
            ));
        }
        let method = v.get("method").and_then(Value::as_str);
        let id = v.get("id").filter(|id| !id.is_null());
        match (method, id) {
            (Some(m), Some(id)) => self.agent_request(&mut out, m, id.clone(), &v),
            (Some(m), None) => self.notification(&mut out, m, &v),
            (None, Some(id)) => self.response(&mut out, id, &v)?,
            // An error about a message it could not read: nothing to
            // answer.
            (None, None) if v.get("error").is_some() => {
                tracing::debug!(error = %v["error"], "an ACP agent reported an error without an id");
            }
            (None, None) => {
                return Err(ProtocolError(
                    "the agent wrote a JSON-RPC message with neither a method nor an id".into(),
                ));
            }
        }
        Ok(out)
    }

    fn response(
        &mut self,
        out: &mut Translated,
        id: &Value,
        v: &Value,
    ) -> Result<(), ProtocolError> {
        let id = id.as_u64();
        let error = v.get("error").map(error_text);
        let result = v.get("result").cloned().unwrap_or(Value::Null);
        if id == Some(self.init_id) && self.phase == Phase::Initializing {
            if let Some(e) = error {
                return Err(ProtocolError(format!(
                    "the agent refused to initialize: {e}"
                )));
            }
            let version = result.get("protocolVersion").and_then(Value::as_u64);
            if version != Some(PROTOCOL_VERSION) {
                return Err(ProtocolError(format!(
                    "the agent speaks ACP version {}, Iris speaks {PROTOCOL_VERSION}",
                    version.map_or("(none)".into(), |v| v.to_string())
                )));
            }
            let caps = result.get("agentCapabilities").unwrap_or(&Value::Null);
            let can_load = caps.get("loadSession").and_then(Value::as_bool) == Some(true);
            let http = caps
                .pointer("/mcpCapabilities/http")
                .and_then(Value::as_bool)
                == Some(true);
            self.start
                .mcp_servers
                .retain(|s| s.get("type").and_then(Value::as_str) != Some("http") || http);
            self.open(out, can_load);
            return Ok(());
        }
        if id == Some(self.open_id)
            && let Phase::Opening { loading } = self.phase
        {
            match error {
                // The agent no longer has it: a new session, said so to Iris
                // as Claude Code says it (the actor starts it afresh).
                Some(_) if loading => {
                    // (Only the message: its data may echo the request,
                    // which carries Iris's MCP credential.)
                    let message = v
                        .pointer("/error/message")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    tracing::warn!(error = %message, "the ACP agent could not load its session; opening a new one");
                    self.start.resume = None;
                    self.open(out, false);
                    return Ok(());
                }
                Some(e) => {
                    return Err(ProtocolError(format!(
                        "the agent refused a new session: {e}"
                    )));
                }
                None => {}
            }
            let session = if loading {
                self.start.resume.clone()
            } else {
                result
                    .get("sessionId")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            let Some(session) = session else {
                return Err(ProtocolError(
                    "the agent opened a session without an id".into(),
                ));
            };
            self.model = result
                .pointer("/models/currentModelId")
                .and_then(Value::as_str)
                .map(str::to_owned);
            self.session_id = Some(session.clone());
            self.phase = Phase::Open;
            // Said with the next prompt, so that it is part of a turn (and
            // recorded: the id Iris resumes with), even when the process
            // was started before any message.
            self.init = Some(
                json!({"type": "system", "subtype": "init", "session_id": session,
                "model": self.model, "resumed": loading}),
            );
            self.lost = self.start.continues && !loading;
            while let Some(text) = self.waiting.pop_front() {
                self.prompt(out, &text);
            }
            return Ok(());
        }
        if id.is_some() && id == self.prompt_id {
            self.prompt_id = None;
            self.asked.clear();
            self.cancelling = false;
            if let Some(e) = error {
                out.iris(result_line(
                    true,
                    "error_during_execution",
                    &e,
                    None,
                    self.cost_usd,
                ));
                return Ok(());
            }
            let stop = result
                .get("stopReason")
                .and_then(Value::as_str)
                .unwrap_or("end_turn");
            let usage = result.get("usage").map(|u| {
                json!({
                    "input_tokens": u.get("inputTokens").and_then(Value::as_u64).unwrap_or(0),
                    "output_tokens": u.get("outputTokens").and_then(Value::as_u64).unwrap_or(0),
                })
            });
            let (is_error, text) = match stop {
                "end_turn" | "max_tokens" | "max_turn_requests" => (false, ""),
                "refusal" => (true, "the agent refused to go on"),
                "cancelled" => (true, "cancelled"),
                other => (true, other),
            };
            out.iris(result_line(is_error, stop, text, usage, self.cost_usd));
        }
        Ok(())
    }

    fn open(&mut self, out: &mut Translated, can_load: bool) {
        let servers = Value::Array(self.start.mcp_servers.clone());
        match self.start.resume.clone().filter(|_| can_load) {
            Some(id) => {
                self.phase = Phase::Opening { loading: true };
                self.open_id = self.request(
                    out,
                    "session/load",
                    json!({"sessionId": id, "cwd": self.cwd, "mcpServers": servers}),
                );
            }
            None => {
                self.phase = Phase::Opening { loading: false };
                self.open_id = self.request(
                    out,
                    "session/new",
                    json!({"cwd": self.cwd, "mcpServers": servers}),
                );
            }
        }
    }

    fn agent_request(&mut self, out: &mut Translated, method: &str, id: Value, v: &Value) {
        let request_id = format!("acp-{id}");
        if method == "session/request_permission"
            && (self.cancelling || self.asked.contains_key(&request_id))
        {
            // Asked while its prompt is being cancelled (or under an id
            // already waiting): withdrawn, never an Iris approval.
            out.agent(json!({"jsonrpc": "2.0", "id": id,
                "result": {"outcome": {"outcome": "cancelled"}}}));
            return;
        }
        if method != "session/request_permission" || self.prompt_id.is_none() {
            let (code, message) = if method == "session/request_permission" {
                (-32602, "no prompt is running".to_owned())
            } else {
                (-32601, format!("Iris does not offer `{method}`"))
            };
            out.agent(json!({"jsonrpc": "2.0", "id": id,
                "error": {"code": code, "message": message}}));
            return;
        }
        let params = v.get("params").unwrap_or(&Value::Null);
        let call = params.get("toolCall").unwrap_or(&Value::Null);
        let options = params
            .get("options")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let input = call.get("rawInput").cloned().unwrap_or_else(|| json!({}));
        out.iris(json!({
            "type": "control_request",
            "request_id": request_id,
            "request": {
                "subtype": "can_use_tool",
                "tool_name": tool_name(call),
                "input": input,
                "tool_use_id": call.get("toolCallId"),
            },
        }));
        self.asked.insert(request_id, Asked { id, options, input });
    }

    fn notification(&mut self, out: &mut Translated, method: &str, v: &Value) {
        if method != "session/update" || self.phase != Phase::Open {
            // Updates while a session loads replay its history: not this turn's.
            return;
        }
        let Some(update) = v.pointer("/params/update") else {
            return;
        };
        let session = self.session_id.clone();
        match update.get("sessionUpdate").and_then(Value::as_str) {
            Some("agent_message_chunk") => {
                if let Some(text) = update.pointer("/content/text").and_then(Value::as_str) {
                    out.iris(json!({"type": "stream_event", "session_id": session,
                        "event": {"type": "content_block_delta", "index": 0,
                                  "delta": {"type": "text_delta", "text": text}}}));
                }
            }
            Some("tool_call") => {
                out.iris(json!({"type": "assistant", "session_id": session,
                "message": {"role": "assistant", "content": [{
                    "type": "tool_use",
                    "id": update.get("toolCallId"),
                    "name": tool_name(update),
                    "input": update.get("rawInput").cloned().unwrap_or_else(|| json!({})),
                }]}}));
                self.tool_done(out, update);
            }
            Some("tool_call_update") => self.tool_done(out, update),
            Some("plan") => {
                let entries = update
                    .get("entries")
                    .filter(|e| e.is_array())
                    .cloned()
                    .unwrap_or_else(|| json!([]));
                out.iris(json!({"type": "plan", "session_id": session, "entries": entries}));
            }
            Some("usage_update") => {
                if let Some(amount) = update.pointer("/cost/amount").and_then(Value::as_f64) {
                    self.cost_usd = Some(amount);
                }
            }
            _ => {}
        }
    }

    /// A tool call that reached `completed` or `failed`: its result.
    fn tool_done(&mut self, out: &mut Translated, update: &Value) {
        let status = update.get("status").and_then(Value::as_str);
        if !matches!(status, Some("completed" | "failed")) {
            return;
        }
        // One result per call, however often the agent repeats its end.
        let call = update
            .get("toolCallId")
            .map(Value::to_string)
            .unwrap_or_default();
        if !self.finished.insert(call) {
            return;
        }
        out.iris(json!({"type": "user", "session_id": self.session_id,
        "message": {"role": "user", "content": [{
            "type": "tool_result",
            "tool_use_id": update.get("toolCallId"),
            "is_error": status == Some("failed"),
            "content": tool_output(update),
        }]}}));
    }
}

/// A tool call's name for Iris: its title, else its kind.
fn tool_name(call: &Value) -> String {
    ["title", "kind"]
        .iter()
        .find_map(|k| {
            call.get(*k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .unwrap_or("tool")
        .to_owned()
}

/// A tool call's output as text: its text content, a diff's path, else
/// its raw output.
fn tool_output(update: &Value) -> String {
    let mut parts = Vec::new();
    for c in update
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match c.get("type").and_then(Value::as_str) {
            Some("content") => {
                if let Some(t) = c.pointer("/content/text").and_then(Value::as_str) {
                    parts.push(t.to_owned());
                }
            }
            Some("diff") => parts.push(format!(
                "[diff of {}]",
                c.get("path").and_then(Value::as_str).unwrap_or("a file")
            )),
            Some(other) => parts.push(format!("[{other}]")),
            None => {}
        }
    }
    if parts.is_empty()
        && let Some(raw) = update.get("rawOutput").filter(|r| !r.is_null())
    {
        return match raw.as_str() {
            Some(s) => s.to_owned(),
            None => raw.to_string(),
        };
    }
    parts.join("\n")
}

fn error_text(e: &Value) -> String {
    let message = e
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("an error");
    match e.get("data").filter(|d| !d.is_null()) {
        Some(d) => format!("{message} ({d})"),
        None => message.to_owned(),
    }
}

fn result_line(
    is_error: bool,
    subtype: &str,
    text: &str,
    usage: Option<Value>,
    cost_usd: Option<f64>,
) -> Value {
    json!({"type": "result", "subtype": subtype, "is_error": is_error, "result": text,
           "usage": usage, "total_cost_usd": cost_usd})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[String]) -> Vec<Value> {
        lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn answer(c: &mut AcpClient, id: u64, result: Value) -> Translated {
        c.incoming(&json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string())
            .unwrap()
    }

    fn open(resume: Option<&str>, can_load: bool) -> (AcpClient, Translated) {
        let mut c = AcpClient::new(
            std::path::Path::new("/work"),
            AcpStart {
                resume: resume.map(str::to_owned),
                continues: resume.is_some(),
                mcp_servers: vec![
                    json!({"type": "http", "name": "iris", "url": "http://x", "headers": []}),
                ],
            },
        );
        let init = parse(&c.start());
        assert_eq!(init[0]["method"], "initialize");
        assert_eq!(init[0]["params"]["protocolVersion"], 1);
        // A prompt before the session is open waits for it.
        let early = c.outgoing(&crate::protocol::user_message_line("first"));
        assert!(early.to_agent.is_empty());
        let t = answer(
            &mut c,
            1,
            json!({"protocolVersion": 1, "agentCapabilities": {"loadSession": can_load}}),
        );
        (c, t)
    }

    #[test]
    fn opens_a_session_then_sends_the_waiting_prompt() {
        let (mut c, t) = open(None, false);
        let sent = parse(&t.to_agent);
        assert_eq!(sent[0]["method"], "session/new");
        assert_eq!(sent[0]["params"]["cwd"], "/work");
        // The agent takes no MCP over http: not offered.
        assert_eq!(sent[0]["params"]["mcpServers"], json!([]));
        let t = answer(&mut c, 2, json!({"sessionId": "s1"}));
        let iris = parse(&t.to_iris);
        assert_eq!(
            (iris[0]["type"].as_str(), iris[0]["session_id"].as_str()),
            (Some("system"), Some("s1"))
        );
        let sent = parse(&t.to_agent);
        assert_eq!(sent[0]["method"], "session/prompt");
        assert_eq!(sent[0]["params"]["prompt"][0]["text"], "first");
        assert_eq!(sent[0]["params"]["sessionId"], "s1");
    }

    #[test]
    fn a_turn_streams_tools_asks_and_ends() {
        let (mut c, _) = open(None, false);
        answer(&mut c, 2, json!({"sessionId": "s1"}));
        let update = |u: Value| {
            json!({"jsonrpc": "2.0", "method": "session/update",
            "params": {"sessionId": "s1", "update": u}})
            .to_string()
        };
        let t = c
            .incoming(&update(json!({"sessionUpdate": "agent_message_chunk",
                "content": {"type": "text", "text": "hi "}})))
            .unwrap();
        let (e, _) = crate::protocol::parse_line(&t.to_iris[0]).unwrap();
        assert_eq!(e, crate::AgentEvent::TextDelta("hi ".into()));
        let t = c
            .incoming(&update(json!({"sessionUpdate": "tool_call", "toolCallId": "c1",
                "title": "List files", "kind": "execute", "status": "pending", "rawInput": {"command": "ls"}})))
            .unwrap();
        let (e, _) = crate::protocol::parse_line(&t.to_iris[0]).unwrap();
        let crate::AgentEvent::Assistant { tool_uses, .. } = e else {
            panic!("{e:?}")
        };
        assert_eq!(
            (tool_uses[0].id.as_str(), tool_uses[0].name.as_str()),
            ("c1", "List files")
        );
        // Its permission, asked and allowed.
        let t = c
            .incoming(&json!({"jsonrpc": "2.0", "id": 9, "method": "session/request_permission",
                "params": {"sessionId": "s1", "toolCall": {"toolCallId": "c1", "title": "List files", "rawInput": {"command": "ls"}},
                  "options": [{"optionId": "no", "name": "No", "kind": "reject_once"},
                              {"optionId": "yes", "name": "Yes", "kind": "allow_once"}]}}).to_string())
            .unwrap();
        let (e, _) = crate::protocol::parse_line(&t.to_iris[0]).unwrap();
        let crate::AgentEvent::PermissionRequest {
            request_id,
            tool_name,
            input,
            ..
        } = e
        else {
            panic!()
        };
        assert_eq!(
            (tool_name.as_str(), &input),
            ("List files", &json!({"command": "ls"}))
        );
        let t = c.outgoing(&crate::protocol::permission_line(
            &request_id,
            true,
            &input,
            "",
        ));
        assert_eq!(
            parse(&t.to_agent)[0],
            json!({"jsonrpc": "2.0", "id": 9,
            "result": {"outcome": {"outcome": "selected", "optionId": "yes"}}})
        );
        let t = c
            .incoming(&update(json!({"sessionUpdate": "tool_call_update", "toolCallId": "c1",
                "status": "failed", "content": [{"type": "content", "content": {"type": "text", "text": "no such"}}]})))
            .unwrap();
        let (e, _) = crate::protocol::parse_line(&t.to_iris[0]).unwrap();
        let crate::AgentEvent::ToolResults(r) = e else {
            panic!()
        };
        assert_eq!((r[0].output.as_str(), r[0].is_error), ("no such", true));
        c.incoming(&update(
            json!({"sessionUpdate": "usage_update", "used": 5, "size": 100,
            "cost": {"amount": 0.25, "currency": "USD"}}),
        ))
        .unwrap();
        let t = answer(&mut c, 3, json!({"stopReason": "end_turn"}));
        let (e, _) = crate::protocol::parse_line(&t.to_iris[0]).unwrap();
        let crate::AgentEvent::Result(r) = e else {
            panic!()
        };
        assert!(!r.is_error);
        assert_eq!(r.cost_usd, Some(0.25));
    }

    #[test]
    fn cancel_withdraws_questions_and_cancels_the_prompt() {
        let (mut c, _) = open(None, false);
        answer(&mut c, 2, json!({"sessionId": "s1"}));
        c.incoming(
            &json!({"jsonrpc": "2.0", "id": "p", "method": "session/request_permission",
            "params": {"toolCall": {"toolCallId": "c1"}, "options": []}})
            .to_string(),
        )
        .unwrap();
        let t = c.outgoing(&crate::protocol::interrupt_line("i1"));
        let sent = parse(&t.to_agent);
        assert_eq!(sent[0]["result"]["outcome"]["outcome"], "cancelled");
        assert_eq!(sent[1]["method"], "session/cancel");
        assert_eq!(parse(&t.to_iris)[0]["response"]["request_id"], "i1");
        let t = answer(&mut c, 3, json!({"stopReason": "cancelled"}));
        assert_eq!(parse(&t.to_iris)[0]["subtype"], "cancelled");
    }

    #[test]
    fn resumes_where_offered_and_loads_quietly() {
        let (mut c, t) = open(Some("old"), true);
        let sent = parse(&t.to_agent);
        assert_eq!(sent[0]["method"], "session/load");
        assert_eq!(sent[0]["params"]["sessionId"], "old");
        assert_eq!(sent[0]["params"]["mcpServers"], json!([]));
        // History replayed while loading is not this turn's.
        let t = c.incoming(&json!({"jsonrpc": "2.0", "method": "session/update", "params": {"sessionId": "old",
            "update": {"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": "before"}}}}).to_string()).unwrap();
        assert!(t.to_iris.is_empty());
        let t = answer(&mut c, 2, Value::Null);
        assert_eq!(parse(&t.to_iris)[0]["session_id"], "old");
        // Not offered: a new session.
        let (_, t) = open(Some("old"), false);
        assert_eq!(parse(&t.to_agent)[0]["method"], "session/new");
    }

    #[test]
    fn a_session_that_cannot_be_loaded_is_new_and_said_lost_once() {
        let (mut c, _) = open(Some("old"), true);
        let t = c
            .incoming(r#"{"jsonrpc":"2.0","id":2,"error":{"code":-32002,"message":"no such session","data":"Bearer secret"}}"#)
            .unwrap();
        assert_eq!(parse(&t.to_agent)[0]["method"], "session/new");
        let t = answer(&mut c, 3, json!({"sessionId": "fresh"}));
        let iris = parse(&t.to_iris);
        assert_eq!(
            (iris[0]["session_id"].as_str(), iris[0]["lost"].as_bool()),
            (Some("fresh"), Some(true))
        );
        let (e, _) = crate::protocol::parse_line(&t.to_iris[0]).unwrap();
        assert!(matches!(e, crate::AgentEvent::Init { lost: true, .. }));
        // The next prompt says the session again, not `lost`.
        answer(&mut c, 4, json!({"stopReason": "end_turn"}));
        let t = c.outgoing(&crate::protocol::user_message_line("again"));
        let iris = parse(&t.to_iris);
        assert_eq!(
            (iris[0]["session_id"].as_str(), iris[0].get("lost")),
            (Some("fresh"), None)
        );
    }

    #[test]
    fn an_edited_input_is_refused_and_asking_while_cancelling_is_withdrawn() {
        let (mut c, _) = open(None, false);
        answer(&mut c, 2, json!({"sessionId": "s1"}));
        let ask = |id: u64| {
            json!({"jsonrpc": "2.0", "id": id, "method": "session/request_permission",
            "params": {"toolCall": {"toolCallId": "c1", "rawInput": {"command": "ls"}},
              "options": [{"optionId": "always", "kind": "allow_always"}, {"optionId": "once", "kind": "allow_once"},
                          {"optionId": "no", "kind": "reject_once"}]}}).to_string()
        };
        c.incoming(&ask(7)).unwrap();
        let t = c.outgoing(&crate::protocol::permission_line(
            "acp-7",
            true,
            &json!({"command": "rm -rf /"}),
            "",
        ));
        assert_eq!(parse(&t.to_agent)[0]["result"]["outcome"]["optionId"], "no");
        c.incoming(&ask(8)).unwrap();
        let t = c.outgoing(&crate::protocol::permission_line(
            "acp-8",
            true,
            &json!({"command": "ls"}),
            "",
        ));
        assert_eq!(
            parse(&t.to_agent)[0]["result"]["outcome"]["optionId"],
            "once",
            "never `always`"
        );
        c.outgoing(&crate::protocol::interrupt_line("i"));
        let t = c.incoming(&ask(9)).unwrap();
        assert!(t.to_iris.is_empty(), "no approval while cancelling");
        assert_eq!(
            parse(&t.to_agent)[0]["result"]["outcome"]["outcome"],
            "cancelled"
        );
    }

    #[test]
    fn broken_protocol_is_an_error_and_unknown_requests_are_refused() {
        let mut c = AcpClient::new(std::path::Path::new("/"), AcpStart::default());
        c.start();
        assert!(c.incoming("not json").is_err());
        assert!(c.incoming(r#"{"type":"result"}"#).is_err());
        assert!(
            c.incoming(r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":2}}"#)
                .is_err()
        );
        let t = c
            .incoming(r#"{"jsonrpc":"2.0","id":4,"method":"fs/read_text_file","params":{}}"#)
            .unwrap();
        assert_eq!(parse(&t.to_agent)[0]["error"]["code"], -32601);
    }
}
