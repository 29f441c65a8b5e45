//! The built-in `echo` agent.
//!
//! It speaks Claude Code's stream-json protocol on stdin/stdout, so a team
//! backed by it runs through exactly the code path of a Claude team. It
//! answers each message with the message's own text. Directives in the
//! message make it misbehave on purpose, for tests and demos:
//!
//! | directive | effect |
//! | --- | --- |
//! | `[[delay=MS]]` | wait MS milliseconds before each chunk |
//! | `[[chunks=N]]` | split the reply into N partial deltas (default: one per word) |
//! | `[[tool=NAME]]` | make a tool use of NAME (and get its result) before answering |
//! | `[[ask=NAME]]` | ask permission for a tool use of NAME first (`can_use_tool`; in ACP mode `session/request_permission`) and wait for the answer; allowed, it runs (`NAME done`), denied, its result is the error `denied: <reason>` |
//! | `[[error]]`, `[[error=TEXT]]` | end the turn with an error result |
//! | `[[plan=A\|B]]` | write a plan of those steps (all pending) first, and the same plan completed before the answer ends (stream-json: Iris's own `plan` line; ACP: a `plan` update) |
//! | `[[crash]]` | exit with status 3 after the first chunk |
//! | `[[hang]]` | write the first chunk, then never answer again (not even interrupts) |
//! | `[[big=BYTES]]` | write one stdout line of that many bytes first |
//! | `[[garbage]]` | write a line that is not JSON first |
//! | `[[argv]]` / `[[cwd]]` / `[[env=NAME]]` | reply with the arguments / folder / a variable |
//! | `[[stamps=N]]` | reply with N chunks, each the Unix time in µs when it was written (latency benchmarks) |
//!
//! A slow start is set with the environment variable `IRIS_ECHO_START_DELAY_MS`.
//!
//! With `--acp` it speaks the Agent Client Protocol instead (see
//! [`run_acp`]), with the same directives; `IRIS_ECHO_ACP_SILENT_INIT=1`
//! makes it never answer `initialize`, and `[[badrpc]]` makes it write a
//! JSON line that is not JSON-RPC.

use std::io::{BufRead, Write};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::protocol::user_message_text;

mod acp;

/// Parsed directives of one message.
#[derive(Debug, Default, PartialEq)]
struct Directives {
    delay_ms: u64,
    chunks: Option<usize>,
    tools: Vec<String>,
    ask: Vec<String>,
    plan: Vec<String>,
    badrpc: bool,
    error: Option<String>,
    crash: bool,
    hang: bool,
    big: Option<usize>,
    garbage: bool,
    argv: bool,
    cwd: bool,
    env: Option<String>,
    stamps: Option<usize>,
}

/// Split `[[name=value]]` directives out of a message; returns the rest.
fn parse_directives(text: &str) -> (Directives, String) {
    let mut d = Directives::default();
    let mut rest = String::new();
    let mut s = text;
    while let Some(start) = s.find("[[") {
        let Some(len) = s[start..].find("]]") else {
            break;
        };
        rest.push_str(&s[..start]);
        let body = &s[start + 2..start + len];
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (body.trim(), None),
        };
        let num = || value.and_then(|v| v.parse::<u64>().ok());
        match name {
            "delay" => d.delay_ms = num().unwrap_or(0),
            "chunks" => d.chunks = num().map(|n| n.max(1) as usize),
            "tool" => d.tools.push(value.unwrap_or("Bash").to_owned()),
            "ask" => d.ask.push(value.unwrap_or("Bash").to_owned()),
            "badrpc" => d.badrpc = true,
            "plan" => {
                d.plan = value
                    .unwrap_or_default()
                    .split('|')
                    .map(|s| s.trim().to_owned())
                    .collect()
            }
            "error" => d.error = Some(value.unwrap_or("echo agent was asked to fail").to_owned()),
            "crash" => d.crash = true,
            "hang" => d.hang = true,
            "big" => d.big = num().map(|n| n as usize),
            "garbage" => d.garbage = true,
            "argv" => d.argv = true,
            "cwd" => d.cwd = true,
            "env" => d.env = value.map(str::to_owned),
            "stamps" => d.stamps = num().map(|n| n as usize),
            _ => rest.push_str(&s[start..start + len + 2]),
        }
        s = &s[start + len + 2..];
    }
    rest.push_str(s);
    (d, rest.trim().to_owned())
}

/// Split `text` into `n` pieces on character boundaries.
fn split_chunks(text: &str, n: Option<usize>) -> Vec<String> {
    match n {
        None => {
            let mut out = Vec::new();
            let mut cur = String::new();
            for ch in text.chars() {
                cur.push(ch);
                if ch == ' ' {
                    out.push(std::mem::take(&mut cur));
                }
            }
            if !cur.is_empty() || out.is_empty() {
                out.push(cur);
            }
            out
        }
        Some(n) => {
            let chars: Vec<char> = text.chars().collect();
            let size = chars.len().div_ceil(n).max(1);
            let mut out: Vec<String> = chars.chunks(size).map(|c| c.iter().collect()).collect();
            while out.len() < n {
                out.push(String::new());
            }
            out
        }
    }
}

struct Agent<W: Write> {
    out: W,
    session_id: String,
    resumed: bool,
    forked_from: Option<String>,
    argv: Vec<String>,
    inbox: Receiver<Value>,
    pending: std::collections::VecDeque<Value>,
    turns: u64,
    started: bool,
}

enum Flow {
    Continue,
    Exit(i32),
}

impl<W: Write> Agent<W> {
    fn emit(&mut self, v: Value) {
        let _ = writeln!(self.out, "{v}");
        let _ = self.out.flush();
    }

    fn control_ok(&mut self, request_id: &str) {
        self.emit(json!({"type":"control_response","response":{"subtype":"success","request_id":request_id,"response":{}}}));
    }

    /// Wait `ms`, watching stdin. Returns true if an interrupt arrived.
    fn pause(&mut self, ms: u64) -> bool {
        let deadline = Instant::now() + Duration::from_millis(ms);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // Still look at what is already waiting, without blocking.
                match self.inbox.try_recv() {
                    Ok(v) => {
                        if self.absorb(v) {
                            return true;
                        }
                        continue;
                    }
                    Err(_) => return false,
                }
            }
            match self.inbox.recv_timeout(left) {
                Ok(v) => {
                    if self.absorb(v) {
                        return true;
                    }
                }
                Err(RecvTimeoutError::Timeout) => return false,
                Err(RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(left);
                    return false;
                }
            }
        }
    }

    /// Handle a line that arrived mid-turn: interrupts answer at once, user
    /// messages wait their turn. Returns true for an interrupt.
    fn absorb(&mut self, v: Value) -> bool {
        if v.get("type").and_then(Value::as_str) == Some("control_request") {
            let id = v
                .get("request_id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            self.control_ok(&id);
            return v.pointer("/request/subtype").and_then(Value::as_str) == Some("interrupt");
        }
        self.pending.push_back(v);
        false
    }

    /// Ask whether tool use `id` may run and wait for the answer: allowed,
    /// denied with its reason, or `None` when interrupted meanwhile.
    fn ask(&mut self, tool: &str, id: &str) -> Option<Result<(), String>> {
        let request_id = format!("ask_{id}");
        self.emit(json!({"type":"control_request","request_id":request_id,"request":{
            "subtype":"can_use_tool","tool_name":tool,"input":{"command":"echo"},"tool_use_id":id}}));
        loop {
            let v = self.inbox.recv().ok()?;
            let kind = v.get("type").and_then(Value::as_str).map(str::to_owned);
            if kind.as_deref() == Some("control_response")
                && v.pointer("/response/request_id").and_then(Value::as_str) == Some(&request_id)
            {
                let answer = v.pointer("/response/response").unwrap_or(&Value::Null);
                return Some(match answer.get("behavior").and_then(Value::as_str) {
                    Some("allow") => Ok(()),
                    _ => Err(answer
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("no reason")
                        .to_owned()),
                });
            }
            match kind.as_deref() {
                Some("control_request") => {
                    let interrupted = self.absorb(v);
                    if interrupted {
                        return None;
                    }
                }
                Some("user") => self.pending.push_back(v),
                _ => {}
            }
        }
    }

    /// Write the plan `steps`, each with `status`.
    fn plan(&mut self, steps: &[String], status: &str) {
        if steps.is_empty() {
            return;
        }
        let entries: Vec<Value> = steps
            .iter()
            .map(|s| json!({"content": s, "status": status, "priority": "medium"}))
            .collect();
        self.emit(json!({"type": "plan", "entries": entries}));
    }

    /// The turn ends: an interrupt came.
    fn interrupted(&mut self, started: Instant, words: usize) -> Flow {
        self.result(
            "interrupted",
            true,
            "error_during_execution",
            started,
            words,
        );
        Flow::Continue
    }

    fn result(
        &mut self,
        text: &str,
        is_error: bool,
        subtype: &str,
        started: Instant,
        words: usize,
    ) {
        let session_id = self.session_id.clone();
        self.emit(json!({
            "type": "result",
            "subtype": subtype,
            "is_error": is_error,
            "result": text,
            "session_id": session_id,
            "duration_ms": started.elapsed().as_millis() as u64,
            "num_turns": self.turns,
            "total_cost_usd": 0.0,
            "usage": {"input_tokens": words, "output_tokens": text.split_whitespace().count()},
        }));
    }

    fn turn(&mut self, msg: Value) -> Flow {
        let started = Instant::now();
        let text = user_message_text(&msg).unwrap_or_default();
        let words = text.split_whitespace().count();
        self.turns += 1;
        let session_id = self.session_id.clone();
        if !self.started {
            self.started = true;
            if let Some(ms) = std::env::var("IRIS_ECHO_START_DELAY_MS")
                .ok()
                .and_then(|v| v.parse().ok())
            {
                std::thread::sleep(Duration::from_millis(ms));
            }
            let forked_from = self.forked_from.clone();
            let resumed = self.resumed;
            self.emit(json!({
                "type":"system","subtype":"init","session_id":session_id,
                "model":"echo","tools":[],"resumed":resumed,"forkedFrom":forked_from,
            }));
        }
        let (d, rest) = parse_directives(&text);
        if d.garbage {
            let _ = writeln!(self.out, "this line is not JSON");
        }
        self.plan(&d.plan, "pending");
        if d.badrpc {
            self.emit(json!({"type":"stream_event","event":{"type":"not_rpc"}}));
        }
        if let Some(n) = d.big {
            let pad = "x".repeat(n);
            self.emit(json!({"type":"stream_event","event":{"type":"padding","data":pad}}));
        }
        let reply = if d.argv {
            json!(self.argv).to_string()
        } else if d.cwd {
            std::env::current_dir()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        } else if let Some(name) = &d.env {
            std::env::var(name).unwrap_or_default()
        } else if rest.is_empty() {
            "(empty message)".to_owned()
        } else {
            rest
        };
        let asked = d.ask.iter().map(|t| (t, true));
        for (i, (tool, ask)) in asked.chain(d.tools.iter().map(|t| (t, false))).enumerate() {
            let id = format!("toolu_echo_{}_{i}", self.turns);
            self.emit(json!({"type":"assistant","session_id":session_id,"message":{"role":"assistant","content":[
                {"type":"tool_use","id":id,"name":tool,"input":{"command":"echo"}}]}}));
            let (output, failed) = match ask {
                true => match self.ask(tool, &id) {
                    Some(Ok(())) => (format!("{tool} done"), false),
                    Some(Err(reason)) => (format!("denied: {reason}"), true),
                    None => return self.interrupted(started, words),
                },
                false => (format!("{tool} done"), false),
            };
            self.emit(
                json!({"type":"user","session_id":session_id,"message":{"role":"user","content":[
                {"type":"tool_result","tool_use_id":id,"content":output,"is_error":failed}]}}),
            );
        }
        let chunks = match d.stamps {
            Some(n) => vec![String::new(); n],
            None => split_chunks(&reply, d.chunks),
        };
        let mut stamped = String::new();
        for (i, chunk) in chunks.iter().enumerate() {
            if d.delay_ms > 0 && self.pause(d.delay_ms) {
                return self.interrupted(started, words);
            }
            let stamp;
            let chunk = if d.stamps.is_some() {
                let micros = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|t| t.as_micros())
                    .unwrap_or(0);
                stamp = format!("{micros} ");
                stamped.push_str(&stamp);
                &stamp
            } else {
                chunk
            };
            self.emit(json!({"type":"stream_event","session_id":session_id,"event":{
                "type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":chunk}}}));
            if i == 0 && d.crash {
                return Flow::Exit(3);
            }
            if i == 0 && d.hang {
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
        }
        self.plan(&d.plan, "completed");
        if let Some(err) = d.error {
            self.result(&err, true, "error_during_execution", started, words);
            return Flow::Continue;
        }
        let reply = if d.stamps.is_some() { stamped } else { reply };
        self.emit(
            json!({"type":"assistant","session_id":session_id,"message":{"role":"assistant",
            "content":[{"type":"text","text":reply}]}}),
        );
        self.result(&reply, false, "success", started, words);
        Flow::Continue
    }
}

/// Run the echo agent with the given arguments (those after the subcommand);
/// returns the process exit code.
pub fn run(args: Vec<String>) -> i32 {
    if args.iter().any(|a| a == "--acp") {
        return acp::run(args);
    }
    let value_of = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let fork = args.iter().any(|a| a == "--fork-session");
    let resume = value_of("--resume");
    let session_id = match (fork, value_of("--session-id"), &resume) {
        (false, Some(id), _) => id,
        (false, None, Some(id)) => id.clone(),
        (true, Some(id), _) => id,
        _ => uuid::Uuid::new_v4().to_string(),
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<Value>(&line) {
                Ok(v) => {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
                Err(_) => eprintln!("echo agent: ignoring a line that is not JSON"),
            }
        }
    });
    let stdout = std::io::stdout();
    let mut agent = Agent {
        out: std::io::BufWriter::new(stdout.lock()),
        session_id,
        resumed: resume.is_some() && !fork,
        forked_from: if fork { resume } else { None },
        argv: args.clone(),
        inbox: rx,
        pending: Default::default(),
        turns: 0,
        started: false,
    };
    agent.serve()
}

impl<W: Write> Agent<W> {
    /// Take messages until stdin closes; the exit code.
    fn serve(&mut self) -> i32 {
        let agent = self;
        loop {
            let next = match agent.pending.pop_front() {
                Some(v) => v,
                None => match agent.inbox.recv() {
                    Ok(v) => v,
                    Err(_) => return 0,
                },
            };
            match next.get("type").and_then(Value::as_str) {
                Some("user") => {
                    if let Flow::Exit(code) = agent.turn(next) {
                        return code;
                    }
                }
                Some("control_request") => {
                    let id = next
                        .get("request_id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    agent.control_ok(&id);
                }
                _ => eprintln!("echo agent: ignoring an unknown message"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_are_parsed_and_stripped() {
        let (d, rest) =
            parse_directives("hello [[delay=5]] world [[chunks=3]][[tool=Read]] [[unknown]]");
        assert_eq!(d.delay_ms, 5);
        assert_eq!(d.chunks, Some(3));
        assert_eq!(d.tools, ["Read"]);
        assert_eq!(rest, "hello  world  [[unknown]]");
        let (d, _) = parse_directives("[[error=boom]] [[crash]] [[hang]] [[big=10]] [[env=HOME]]");
        assert_eq!(d.error.as_deref(), Some("boom"));
        assert!(d.crash && d.hang);
        assert_eq!(d.big, Some(10));
        assert_eq!(d.env.as_deref(), Some("HOME"));
    }

    #[test]
    fn chunks_cover_the_text_exactly() {
        assert_eq!(split_chunks("a bc d", None), ["a ", "bc ", "d"]);
        let c = split_chunks("héllo wörld", Some(4));
        assert_eq!(c.len(), 4);
        assert_eq!(c.concat(), "héllo wörld");
        assert_eq!(split_chunks("ab", Some(5)).len(), 5);
    }
}
