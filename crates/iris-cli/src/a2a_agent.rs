//! `iris agent-a2a --card URL`: the process of an `a2a` team. It speaks
//! stream-json to Iris on stdio, like every persistent agent (so the actor,
//! queue, watchdogs, approvals and records apply unchanged), and A2A 1.0
//! (JSON-RPC) over HTTP to the remote agent its card names:
//!
//! | Iris (stdin / stdout)        | the remote agent                                   |
//! |------------------------------|----------------------------------------------------|
//! | a user message               | `SendStreamingMessage` (or `SendMessage`) in the conversation's context |
//! | text deltas                  | artifact updates (the answer), a direct message    |
//! | `result`                     | the task's end: completed, failed, rejected, canceled |
//! | `can_use_tool` → its answer  | input-required with a data part `{toolName, input}` → a message on the task with `{decision, reason}` |
//! | the answer is the question   | input-required in words: the next message continues that task |
//! | an error `result`            | auth-required, a refused credential, a broken protocol |
//! | `interrupt`                  | `CancelTask`                                       |
//! | `system` `init` (`session_id`, `open_task`) | the remote's context id and a task waiting for the caller's words (given back in `IRIS_A2A_CONTEXT`, `IRIS_A2A_TASK` when the bridge starts again) |
//!
//! The card and the endpoint are reached through the webhooks' SSRF guard
//! (hosts in `IRIS_A2A_ALLOW_HOSTS` may be internal); the credential comes
//! from `IRIS_A2A_CREDENTIAL` and goes as a bearer token. See docs/a2a.md.

use std::time::Duration;

use iris_agent::launch::{A2A_ALLOW_HOSTS_VAR, A2A_CONTEXT_VAR, A2A_CREDENTIAL_VAR, A2A_TASK_VAR};
use iris_agent::protocol;
use iris_webhooks::AllowHosts;
use iris_webhooks::guard::{GuardedResolver, check_url, redirect_policy};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines, Stdin};

type Input = Lines<BufReader<Stdin>>;

/// Longest a remote answer may stay silent between two events.
const SILENCE: Duration = Duration::from_secs(3600);
/// Longest one call answered at once may take (a task's get, a cancel).
const CALL_LIMIT: Duration = Duration::from_secs(60);
/// How long a cancelled task is followed to its end before the turn ends
/// anyway.
const CANCEL_GRACE: Duration = Duration::from_secs(10);

pub fn run(args: Vec<String>) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agent-a2a: starting the runtime: {e}");
            return 1;
        }
    };
    rt.block_on(serve(args))
}

/// The value after the last `flag` (Iris puts its own last).
fn value_of(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .rposition(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// A variable of the bridge's environment, when set and not empty.
fn given(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.is_empty())
}

/// The card's URL: as given when it names a JSON file, else the agent's
/// well-known card under it.
fn card_url(given: &str) -> String {
    if given.ends_with(".json") {
        given.to_owned()
    } else {
        format!(
            "{}/.well-known/agent-card.json",
            given.trim_end_matches('/')
        )
    }
}

async fn serve(args: Vec<String>) -> i32 {
    let Some(card) = value_of(&args, "--card") else {
        eprintln!("agent-a2a: --card URL is required");
        return 2;
    };
    let allow: Vec<String> = std::env::var(A2A_ALLOW_HOSTS_VAR)
        .unwrap_or_default()
        .split(',')
        .filter(|h| !h.trim().is_empty())
        .map(|h| h.trim().to_owned())
        .collect();
    let guard = std::sync::Arc::new(AllowHosts::new(&allow));
    let http = match reqwest::Client::builder()
        // A proxy would connect for us, past the resolver's check.
        .no_proxy()
        .dns_resolver(std::sync::Arc::new(GuardedResolver {
            allow: guard.clone(),
        }))
        .redirect(redirect_policy(guard.clone()))
        .connect_timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("agent-a2a: building the HTTP client: {e}");
            return 1;
        }
    };
    let mut bridge = Bridge {
        http,
        guard,
        card_url: card_url(&card),
        credential: given(A2A_CREDENTIAL_VAR),
        endpoint: None,
        streaming: false,
        context: given(A2A_CONTEXT_VAR),
        open_task: given(A2A_TASK_VAR),
        task: None,
        asked: 0,
        next_id: 0,
        seen: Default::default(),
    };
    let mut input = BufReader::new(tokio::io::stdin()).lines();
    loop {
        let line = match input.next_line().await {
            Ok(Some(l)) => l,
            _ => return 0,
        };
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            eprintln!("agent-a2a: ignoring a line that is not JSON");
            continue;
        };
        match v["type"].as_str() {
            Some("user") => {
                let text = protocol::user_message_text(&v).unwrap_or_default();
                bridge.turn(&text, &mut input).await;
            }
            // Nothing runs: an interrupt has nothing to stop.
            Some("control_request") => answer_control(&v),
            _ => {}
        }
    }
}

fn emit(v: Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn answer_control(v: &Value) {
    emit(json!({"type": "control_response", "response": {
        "subtype": "success", "request_id": v["request_id"], "response": {}}}));
}

fn delta(text: &str) {
    if !text.is_empty() {
        emit(
            json!({"type": "stream_event", "event": {"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": text}}}),
        );
    }
}

fn result(is_error: bool, text: &str) {
    emit(
        json!({"type": "result", "subtype": if is_error { "error" } else { "success" },
                "is_error": is_error, "result": text}),
    );
}

/// The text parts of a message, a line each.
fn texts(parts: &Value) -> String {
    text_parts(parts).collect::<Vec<_>>().join("\n")
}

/// The text of an artifact: its parts in a row (appended pieces of one
/// answer).
fn artifact_text(parts: &Value) -> String {
    text_parts(parts).collect()
}

fn text_parts(parts: &Value) -> impl Iterator<Item = &str> {
    parts
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["text"].as_str())
}

/// What one exchange with the remote ended in.
enum Step {
    /// The task ended: ok or not, with its words.
    Ended { ok: bool, text: String },
    /// It asks in words: the caller's next message continues `task`.
    Question { task: String, text: String },
    /// It asks permission for a tool: an Iris approval.
    Approval {
        task: String,
        tool: String,
        input: Value,
    },
}

struct Bridge {
    http: reqwest::Client,
    guard: std::sync::Arc<AllowHosts>,
    card_url: String,
    credential: Option<String>,
    /// The JSON-RPC URL from the card, once read.
    endpoint: Option<String>,
    streaming: bool,
    /// The remote's context of this conversation.
    context: Option<String>,
    /// A task of the remote that asked the caller a question.
    open_task: Option<String>,
    /// The remote task of the exchange under way, once named (cancelled
    /// when the exchange fails).
    task: Option<String>,
    asked: u64,
    next_id: u64,
    /// The artifact text seen of each task (so a snapshot's repeat is not
    /// said again).
    seen: std::collections::HashMap<String, String>,
}

impl Bridge {
    fn authorized(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credential {
            Some(c) => r.bearer_auth(c),
            None => r,
        }
    }

    /// Read the card once: the JSON-RPC endpoint of A2A 1.x and whether it
    /// streams.
    async fn load_card(&mut self) -> Result<String, String> {
        if let Some(e) = &self.endpoint {
            return Ok(e.clone());
        }
        let url = &self.card_url;
        check_url(url, &self.guard)
            .await
            .map_err(|e| format!("the remote agent's card URL {url} is refused: {e}"))?;
        let r = self
            .authorized(self.http.get(url))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| format!("reading the remote agent's card at {url}: {e}"))?;
        refused(&r, "its card")?;
        if !r.status().is_success() {
            return Err(format!(
                "the remote agent's card at {url} answered HTTP {}",
                r.status().as_u16()
            ));
        }
        let card: Value = r
            .json()
            .await
            .map_err(|e| format!("the remote agent's card at {url} is not JSON: {e}"))?;
        let endpoint = card["supportedInterfaces"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| {
                i["protocolBinding"] == "JSONRPC"
                    && i["protocolVersion"]
                        .as_str()
                        .is_some_and(|v| v.starts_with("1."))
            })
            .and_then(|i| i["url"].as_str())
            .ok_or_else(|| {
                format!("the remote agent's card at {url} offers no A2A 1.x JSON-RPC interface (A2A 0.3 agents are not served)")
            })?
            .to_owned();
        check_url(&endpoint, &self.guard)
            .await
            .map_err(|e| format!("the remote agent's endpoint {endpoint} is refused: {e}"))?;
        self.streaming = card["capabilities"]["streaming"] == true;
        self.endpoint = Some(endpoint.clone());
        Ok(endpoint)
    }

    /// One user message, to its `result`.
    async fn turn(&mut self, text: &str, input: &mut Input) {
        let endpoint = match self.load_card().await {
            Ok(e) => e,
            Err(e) => return result(true, &e),
        };
        let mut message = json!({"messageId": uuid::Uuid::new_v4().to_string(),
                                 "role": "ROLE_USER", "parts": [{"text": text}]});
        if let Some(c) = &self.context {
            message["contextId"] = c.as_str().into();
        }
        if let Some(t) = self.open_task.take() {
            message["taskId"] = t.into();
            // Answered now: a restarted bridge must not answer it again.
            self.say_state();
        }
        let mut answer = String::new();
        loop {
            self.task = None;
            let step = match self.exchange(&endpoint, &message, &mut answer, input).await {
                Ok(s) => s,
                Err(e) => {
                    // Nobody follows the remote task any more: stop it.
                    if let Some(t) = self.task.take()
                        && let Err(c) = self.cancel(&endpoint, &t).await
                    {
                        eprintln!("agent-a2a: cancelling task {t} after an error: {c}");
                    }
                    return result(true, &e);
                }
            };
            match step {
                Step::Ended { ok, text } => {
                    if !ok {
                        return result(true, &text);
                    }
                    if answer.is_empty() {
                        delta(&text);
                        answer = text;
                    }
                    return result(false, &answer);
                }
                Step::Question { task, text } => {
                    delta(&text);
                    answer.push_str(&text);
                    self.open_task = Some(task);
                    self.say_state();
                    return result(false, &answer);
                }
                Step::Approval {
                    task,
                    tool,
                    input: asked,
                } => {
                    let Some((allow, reason)) = self.permission(&tool, &asked, input).await else {
                        let _ = self.cancel(&endpoint, &task).await;
                        return result(true, "cancelled");
                    };
                    let decision = if allow { "allow" } else { "deny" };
                    let mut data = json!({"decision": decision});
                    if !reason.is_empty() {
                        data["reason"] = reason.into();
                    }
                    message = json!({"messageId": uuid::Uuid::new_v4().to_string(),
                        "role": "ROLE_USER", "taskId": task,
                        "parts": [{"text": decision}, {"data": data}]});
                    if let Some(c) = &self.context {
                        message["contextId"] = c.as_str().into();
                    }
                }
            }
        }
    }

    /// Ask Iris (an approval) whether the remote may use `tool`; `None` if
    /// the turn was interrupted meanwhile (or Iris went away).
    async fn permission(
        &mut self,
        tool: &str,
        asked: &Value,
        input: &mut Input,
    ) -> Option<(bool, String)> {
        self.asked += 1;
        let id = format!("a2a-{}", self.asked);
        emit(
            json!({"type": "control_request", "request_id": id, "request": {
            "subtype": "can_use_tool", "tool_name": tool, "input": asked}}),
        );
        loop {
            let line = input.next_line().await.ok().flatten()?;
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            match v["type"].as_str() {
                Some("control_response") if v["response"]["request_id"] == id.as_str() => {
                    let r = &v["response"]["response"];
                    return Some((
                        r["behavior"] == "allow",
                        r["message"].as_str().unwrap_or_default().to_owned(),
                    ));
                }
                Some("control_request") => {
                    answer_control(&v);
                    if v["request"]["subtype"] == "interrupt" {
                        return None;
                    }
                }
                _ => {}
            }
        }
    }

    fn rpc(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        json!({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
    }

    /// POST a JSON-RPC call; `limited`: one answered at once (a stream is
    /// not limited).
    async fn post(
        &self,
        endpoint: &str,
        body: &Value,
        limited: bool,
    ) -> Result<reqwest::Response, String> {
        let mut request = self
            .authorized(self.http.post(endpoint))
            .header("A2A-Version", "1.0")
            .json(body);
        if limited {
            request = request.timeout(CALL_LIMIT);
        }
        let r = request
            .send()
            .await
            .map_err(|e| format!("calling the remote agent at {endpoint}: {e}"))?;
        refused(&r, "the call")?;
        if !r.status().is_success() {
            return Err(format!(
                "the remote agent at {endpoint} answered HTTP {}",
                r.status().as_u16()
            ));
        }
        Ok(r)
    }

    /// A JSON-RPC call answered with one JSON body: its result.
    async fn call(&mut self, endpoint: &str, method: &str, params: Value) -> Result<Value, String> {
        let body = self.rpc(method, params);
        let r = self.post(endpoint, &body, true).await?;
        let v: Value = r
            .json()
            .await
            .map_err(|e| format!("the remote agent's answer is not JSON: {e}"))?;
        rpc_result(v)
    }

    async fn cancel(&mut self, endpoint: &str, task: &str) -> Result<Value, String> {
        self.call(endpoint, "CancelTask", json!({"id": task})).await
    }

    /// Send `message` and follow the answer to an end, a question or a
    /// permission asked; an interrupt on stdin (or Iris going away)
    /// cancels the remote task.
    async fn exchange(
        &mut self,
        endpoint: &str,
        message: &Value,
        answer: &mut String,
        input: &mut Input,
    ) -> Result<Step, String> {
        let (method, params) = if self.streaming {
            ("SendStreamingMessage", json!({"message": message}))
        } else {
            // Answered at once with the task, then followed with GetTask:
            // an interrupt is heard meanwhile.
            (
                "SendMessage",
                json!({"message": message, "configuration": {"returnImmediately": true}}),
            )
        };
        let body = self.rpc(method, params);
        let response = self.post(endpoint, &body, !self.streaming).await?;
        let mut events = Events::new(response, self.streaming).await?;
        let mut task: Option<String> = None;
        // Interrupted (and when): the remote task is cancelled, then
        // followed a little longer to its end.
        let mut cancelled: Option<tokio::time::Instant> = None;
        // Interrupted before the remote named its task: cancel it once named.
        let mut cancel_when_named = false;
        let gone = || {
            Ok(Step::Ended {
                ok: false,
                text: "cancelled".into(),
            })
        };
        loop {
            tokio::select! {
                ev = tokio::time::timeout(SILENCE, events.next()) => {
                    let ev = ev.map_err(|_| "the remote agent fell silent".to_owned())??;
                    let Some(ev) = ev else {
                        if cancelled.is_some_and(|at| at.elapsed() > CANCEL_GRACE) {
                            return gone();
                        }
                        // Not an end yet (a blocking answer, or a stream
                        // cut short): follow the task.
                        if let Some(t) = &task {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            let got = self.call(endpoint, "GetTask", json!({"id": t})).await?;
                            events = Events::Once(Some(json!({"task": got})));
                            continue;
                        }
                        if cancelled.is_some() {
                            return gone();
                        }
                        return Err("the remote agent's answer ended before its task did".into());
                    };
                    let step = self.on_response(&ev, answer, &mut task);
                    self.task.clone_from(&task);
                    if cancel_when_named && let Some(t) = task.clone() {
                        cancel_when_named = false;
                        if let Err(e) = self.cancel(endpoint, &t).await {
                            eprintln!("agent-a2a: cancelling task {t}: {e}");
                            return gone();
                        }
                    }
                    match step {
                        // Interrupted: whatever it says now (a question, a
                        // permission) is not asked of anyone.
                        Some(Step::Ended { ok: true, .. } | Step::Question { .. } | Step::Approval { .. })
                            if cancelled.is_some() => return gone(),
                        Some(step) => return Ok(step),
                        None => {}
                    }
                }
                line = input.next_line() => {
                    let Some(line) = line.ok().flatten() else {
                        if let Some(t) = task.clone() {
                            let _ = self.cancel(endpoint, &t).await;
                        }
                        return Err("Iris closed the bridge's input".into());
                    };
                    let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
                    if v["type"] == "control_request" {
                        answer_control(&v);
                        if v["request"]["subtype"] == "interrupt" && cancelled.is_none() {
                            cancelled = Some(tokio::time::Instant::now());
                            match task.clone() {
                                Some(t) => {
                                    if let Err(e) = self.cancel(endpoint, &t).await {
                                        eprintln!("agent-a2a: cancelling task {t}: {e}");
                                        return gone();
                                    }
                                }
                                None => cancel_when_named = true,
                            }
                        }
                    }
                }
            }
        }
    }

    /// Note the remote's context; a new one is said to Iris (it is given
    /// back when the conversation's bridge starts again).
    fn note_context(&mut self, c: &Value) {
        if let Some(c) = c.as_str().filter(|c| !c.is_empty())
            && self.context.as_deref() != Some(c)
        {
            self.context = Some(c.to_owned());
            self.say_state();
        }
    }

    /// Tell Iris the remote's context and the task waiting for the
    /// caller's words, if any (recorded with the turn; given back as
    /// `IRIS_A2A_CONTEXT` and `IRIS_A2A_TASK` when the bridge starts again).
    fn say_state(&self) {
        emit(
            json!({"type": "system", "subtype": "init", "session_id": self.context,
                    "open_task": self.open_task}),
        );
    }

    /// One `StreamResponse` (or a blocking send's result).
    fn on_response(
        &mut self,
        r: &Value,
        answer: &mut String,
        task: &mut Option<String>,
    ) -> Option<Step> {
        if let Some(t) = r.get("task") {
            self.note_context(&t["contextId"]);
            *task = t["id"].as_str().map(str::to_owned);
            let id = task.clone().unwrap_or_default();
            // The task's whole text: what this bridge has not yet seen of
            // it is new (a snapshot repeats what came before).
            let full: String = t["artifacts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| artifact_text(&a["parts"]))
                .collect();
            let seen = self.seen.entry(id.clone()).or_default();
            if full.len() > seen.len() && full.starts_with(seen.as_str()) {
                let new = full[seen.len()..].to_owned();
                delta(&new);
                answer.push_str(&new);
                *seen = full;
            } else if !full.is_empty() && full != *seen {
                // Replaced, not extended: the answer is the new text (what
                // was streamed of the old cannot be taken back; the turn's
                // answer is this).
                *answer = full.clone();
                *seen = full;
            }
            return self.on_status(&t["status"], &id, answer);
        }
        if let Some(m) = r.get("message") {
            self.note_context(&m["contextId"]);
            let text = texts(&m["parts"]);
            delta(&text);
            answer.push_str(&text);
            return Some(Step::Ended {
                ok: true,
                text: answer.clone(),
            });
        }
        if let Some(a) = r.get("artifactUpdate") {
            self.note_context(&a["contextId"]);
            *task = a["taskId"].as_str().map(str::to_owned).or(task.take());
            let text = artifact_text(&a["artifact"]["parts"]);
            delta(&text);
            answer.push_str(&text);
            self.seen
                .entry(task.clone().unwrap_or_default())
                .or_default()
                .push_str(&text);
            return None;
        }
        if let Some(s) = r.get("statusUpdate") {
            self.note_context(&s["contextId"]);
            *task = s["taskId"].as_str().map(str::to_owned).or(task.take());
            return self.on_status(&s["status"], task.as_deref().unwrap_or_default(), answer);
        }
        None
    }

    fn on_status(&self, status: &Value, task: &str, answer: &str) -> Option<Step> {
        let state = status["state"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches("TASK_STATE_")
            .to_ascii_lowercase()
            .replace('_', "-");
        let text = texts(&status["message"]["parts"]);
        Some(match state.as_str() {
            "completed" => Step::Ended {
                ok: true,
                text: if answer.is_empty() {
                    text
                } else {
                    answer.to_owned()
                },
            },
            "failed" | "rejected" => Step::Ended {
                ok: false,
                text: if text.is_empty() {
                    format!("the remote agent's task {state}")
                } else {
                    text
                },
            },
            "canceled" | "cancelled" => Step::Ended {
                ok: false,
                text: "cancelled".into(),
            },
            "auth-required" => Step::Ended {
                ok: false,
                text: format!(
                    "the remote agent needs authentication (auth-required){}{text}",
                    if text.is_empty() { "" } else { ": " }
                ),
            },
            "input-required" => {
                let asked = status["message"]["parts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find_map(|p| p["data"].get("toolName").map(|_| &p["data"]));
                match asked {
                    Some(d) => Step::Approval {
                        task: task.to_owned(),
                        tool: d["toolName"].as_str().unwrap_or("a tool").to_owned(),
                        input: d.get("input").cloned().unwrap_or_else(|| json!({})),
                    },
                    None => Step::Question {
                        task: task.to_owned(),
                        text: if text.is_empty() {
                            // A question in data only: shown as it is.
                            status["message"]["parts"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|p| p.get("data").map(Value::to_string))
                                .collect::<Vec<_>>()
                                .join("\n")
                        } else {
                            text
                        },
                    },
                }
            }
            _ => return None,
        })
    }
}

/// A refused credential, said clearly.
fn refused(r: &reqwest::Response, what: &str) -> Result<(), String> {
    let code = r.status().as_u16();
    if code == 401 || code == 403 {
        return Err(format!(
            "the remote agent refused the credential for {what} (HTTP {code}): set the profile's `credential`"
        ));
    }
    Ok(())
}

/// A JSON-RPC answer's result, or its error in words.
fn rpc_result(v: Value) -> Result<Value, String> {
    if let Some(e) = v.get("error") {
        return Err(format!(
            "the remote agent answered error {}: {}",
            e["code"],
            e["message"].as_str().unwrap_or("(no message)")
        ));
    }
    v.get("result")
        .cloned()
        .ok_or_else(|| "the remote agent's answer has no result".to_owned())
}

/// The answers of one send: the events of an SSE stream, or one result.
enum Events {
    Stream {
        response: reqwest::Response,
        buf: Vec<u8>,
        done: bool,
    },
    Once(Option<Value>),
}

impl Events {
    /// A stream, or the one answer read now (before anything waits on
    /// Iris's input beside it).
    async fn new(response: reqwest::Response, streaming: bool) -> Result<Self, String> {
        let sse = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/event-stream"));
        if streaming && sse {
            return Ok(Events::Stream {
                response,
                buf: Vec::new(),
                done: false,
            });
        }
        // A blocking answer, or a streamed send refused with one JSON body.
        let v: Value = tokio::time::timeout(CALL_LIMIT, response.json())
            .await
            .map_err(|_| "the remote agent did not answer".to_owned())?
            .map_err(|e| format!("the remote agent's answer is not JSON: {e}"))?;
        Ok(Events::Once(Some(rpc_result(v)?)))
    }

    /// The next result; `None` at the end.
    async fn next(&mut self) -> Result<Option<Value>, String> {
        match self {
            Events::Once(v) => Ok(v.take()),
            Events::Stream {
                response,
                buf,
                done,
            } => loop {
                if let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                    // A whole event, decoded at once (a character split
                    // across two reads stays whole).
                    let block: Vec<u8> = buf.drain(..end + 2).collect();
                    let block = String::from_utf8_lossy(&block);
                    let data: Vec<&str> = block
                        .lines()
                        .filter_map(|l| l.strip_prefix("data:"))
                        .map(|d| d.strip_prefix(' ').unwrap_or(d))
                        .collect();
                    if data.is_empty() {
                        continue;
                    }
                    let v: Value = serde_json::from_str(&data.join("\n")).map_err(|e| {
                        format!("the remote agent's stream sent an event that is not JSON: {e}")
                    })?;
                    return rpc_result(v).map(Some);
                }
                if *done {
                    return Ok(None);
                }
                match response.chunk().await {
                    Ok(Some(bytes)) => buf.extend(bytes.iter().filter(|b| **b != b'\r')),
                    Ok(None) => *done = true,
                    Err(e) => return Err(format!("reading the remote agent's stream: {e}")),
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_card_url_is_the_given_file_or_the_well_known_one() {
        assert_eq!(
            card_url("http://h:1/a2a/x/"),
            "http://h:1/a2a/x/.well-known/agent-card.json"
        );
        assert_eq!(card_url("http://h/card.json"), "http://h/card.json");
    }

    #[test]
    fn errors_and_results_are_told_apart() {
        assert_eq!(
            rpc_result(json!({"jsonrpc": "2.0", "id": 1, "result": {"a": 1}})).unwrap(),
            json!({"a": 1})
        );
        let e = rpc_result(json!({"error": {"code": -32001, "message": "no task"}})).unwrap_err();
        assert!(e.contains("-32001") && e.contains("no task"), "{e}");
    }

    fn bridge() -> Bridge {
        Bridge {
            http: reqwest::Client::new(),
            guard: std::sync::Arc::new(AllowHosts::new(&[])),
            card_url: String::new(),
            credential: None,
            endpoint: None,
            streaming: true,
            context: None,
            open_task: None,
            task: None,
            asked: 0,
            next_id: 0,
            seen: Default::default(),
        }
    }

    #[test]
    fn a_snapshot_says_only_what_is_new_of_its_task() {
        let mut b = bridge();
        let (mut answer, mut task) = (String::new(), None);
        let snap = |text: &str, state: &str| {
            json!({"task": {"id": "t1", "contextId": "c1", "status": {"state": state},
                            "artifacts": [{"parts": [{"text": text}]}]}})
        };
        assert!(
            b.on_response(
                &snap("remote 1:", "TASK_STATE_WORKING"),
                &mut answer,
                &mut task
            )
            .is_none()
        );
        let end = b.on_response(
            &snap("remote 1: hi", "TASK_STATE_COMPLETED"),
            &mut answer,
            &mut task,
        );
        assert_eq!(answer, "remote 1: hi");
        assert!(matches!(end, Some(Step::Ended { ok: true, text }) if text == "remote 1: hi"));
        assert_eq!(b.context.as_deref(), Some("c1"));
        // The same task continued in a later turn: its earlier text is not
        // this turn's answer.
        let mut later = String::new();
        b.on_response(
            &snap("remote 1: hi", "TASK_STATE_COMPLETED"),
            &mut later,
            &mut task,
        );
        assert_eq!(later, "");
        // An artifact replaced, not extended: the answer is the new text.
        let mut replaced = String::new();
        b.on_response(
            &snap("working...", "TASK_STATE_WORKING"),
            &mut replaced,
            &mut task,
        );
        let end = b.on_response(
            &snap("done", "TASK_STATE_COMPLETED"),
            &mut replaced,
            &mut task,
        );
        assert!(matches!(end, Some(Step::Ended { ok: true, text }) if text == "done"));
    }

    #[test]
    fn states_become_steps() {
        let b = bridge();
        let step = |s: Value| b.on_status(&s, "t1", "");
        assert!(step(json!({"state": "TASK_STATE_WORKING"})).is_none());
        assert!(matches!(
            step(json!({"state": "TASK_STATE_AUTH_REQUIRED", "message": {"parts": [{"text": "log in"}]}})),
            Some(Step::Ended { ok: false, text }) if text.contains("auth-required") && text.contains("log in")
        ));
        assert!(matches!(
            step(json!({"state": "TASK_STATE_INPUT_REQUIRED", "message": {"parts": [{"text": "Which file?"}]}})),
            Some(Step::Question { task, text }) if task == "t1" && text == "Which file?"
        ));
        assert!(matches!(
            step(json!({"state": "TASK_STATE_INPUT_REQUIRED", "message": {"parts": [
                {"text": "may I?"}, {"data": {"toolName": "Bash", "input": {"command": "ls"}}}]}})),
            Some(Step::Approval { tool, input, .. }) if tool == "Bash" && input["command"] == "ls"
        ));
        assert!(matches!(
            step(json!({"state": "TASK_STATE_FAILED", "message": {"parts": [{"text": "boom"}]}})),
            Some(Step::Ended { ok: false, text }) if text == "boom"
        ));
    }
}
