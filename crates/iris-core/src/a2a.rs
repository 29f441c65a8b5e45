//! The A2A view of Iris's turns: a turn is a task, its conversation the
//! context, its answer the artifact. Shared by the A2A transport (tasks it
//! answers) and the push notifications the webhook deliverer sends (one per
//! state change of a task that has a push config). See docs/a2a.md.

use serde_json::{Value, json};

use crate::bus::{Event, EventKind};
use crate::clock::iso8601;

/// A turn's status as an A2A task state.
pub fn state_of(status: &str) -> &'static str {
    match status {
        "queued" => "TASK_STATE_SUBMITTED",
        "running" => "TASK_STATE_WORKING",
        "completed" => "TASK_STATE_COMPLETED",
        "cancelled" => "TASK_STATE_CANCELED",
        _ => "TASK_STATE_FAILED",
    }
}

/// An agent message of task `id`.
fn agent_message(id: &str, suffix: &str, context: &Value, text: &str) -> Value {
    json!({"messageId": format!("{id}-{suffix}"), "contextId": context, "taskId": id,
           "role": "ROLE_AGENT", "parts": [{"text": text}]})
}

/// The answer as the task's artifact.
fn answer_artifact(id: &str, answer: &str) -> Value {
    json!({"artifactId": format!("{id}-answer"), "name": "answer", "parts": [{"text": answer}]})
}

/// A turn record (`get_message`'s shape) as an A2A task: its id, its
/// conversation as the context, its state, the answer as the artifact, the
/// two messages as history.
pub fn task_of(m: &Value) -> Value {
    let state = state_of(m["status"].as_str().unwrap_or_default());
    let id = m["id"].as_str().unwrap_or_default();
    let context = m["sessionId"].clone();
    let at = m["completedAt"]
        .as_i64()
        .or_else(|| m["createdAt"].as_i64())
        .unwrap_or_default();
    let user = json!({"messageId": format!("{id}-request"), "contextId": context, "taskId": id,
                      "role": "ROLE_USER", "parts": [{"text": m["request"]}]});
    let mut status = json!({"state": state, "timestamp": iso8601(at)});
    let mut history = vec![user];
    let mut artifacts = Vec::new();
    // The answer (for a turn that failed, what it had written) is the
    // artifact; a failure's reason is the status message.
    if let Some(answer) = m["response"].as_str().filter(|a| !a.is_empty()) {
        let agent = agent_message(id, "answer", &context, answer);
        status["message"] = agent.clone();
        history.push(agent);
        artifacts.push(answer_artifact(id, answer));
    }
    if let Some(error) = m["error"].as_str().filter(|e| !e.is_empty()) {
        status["message"] = agent_message(id, "error", &context, error);
    }
    json!({"id": id, "contextId": context, "status": status, "artifacts": artifacts,
           "history": history, "metadata": {"team": m["toTeam"], "caller": m["fromTeam"]}})
}

/// Mark `task` as waiting for the caller's answer to approval `a`: the
/// request in text and as a data part.
pub fn waiting_for(task: &mut Value, a: &Value) {
    let id = task["id"].as_str().unwrap_or_default().to_owned();
    task["status"]["state"] = "TASK_STATE_INPUT_REQUIRED".into();
    let mut message = agent_message(
        &id,
        a["id"].as_str().unwrap_or_default(),
        &task["contextId"],
        &format!(
            "The agent asks to use {}. Answer on this task with a data part {{\"decision\": \"allow\" | \"deny\", \"reason\": …}}.",
            a["toolName"].as_str().unwrap_or("a tool")
        ),
    );
    if let Some(parts) = message["parts"].as_array_mut() {
        parts.push(json!({"data": {"approvalId": a["id"], "toolName": a["toolName"], "input": a["input"]}}));
    }
    task["status"]["message"] = message;
}

/// The push notification (an A2A `StreamResponse` holding the task) for a
/// bus event that changes a task's state: started (working), waiting on an
/// approval (input-required), going on once it is decided (working),
/// ended (with the answer as the artifact).
/// `None` for every other event.
pub fn push_of(e: &Event) -> Option<Value> {
    let id = e.turn_id.as_deref()?;
    let context = json!(e.session_id);
    // When it happened (deliveries may arrive out of order).
    let now = iso8601(e.at);
    let mut task = json!({"id": id, "contextId": context, "artifacts": [],
                          "status": {"state": "TASK_STATE_WORKING", "timestamp": now},
                          "metadata": {"team": e.team}});
    match e.kind {
        // Started, or going on after a permission was decided. (An expiry
        // is not said: most come with the turn's end, which follows.)
        EventKind::TurnStarted | EventKind::ApprovalResolved => {}
        EventKind::ApprovalRequested => waiting_for(&mut task, &e.data),
        EventKind::TurnCompleted => {
            let d = &e.data;
            task["status"]["state"] = state_of(d["status"].as_str().unwrap_or_default()).into();
            if let Some(answer) = d["response"].as_str().filter(|a| !a.is_empty()) {
                task["status"]["message"] = agent_message(id, "answer", &context, answer);
                task["artifacts"] = json!([answer_artifact(id, answer)]);
            }
            if let Some(error) = d["error"].as_str().filter(|e| !e.is_empty()) {
                task["status"]["message"] = agent_message(id, "error", &context, error);
            }
        }
        _ => return None,
    }
    Some(json!({"task": task}))
}
