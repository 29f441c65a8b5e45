//! The machinery of the operation registry: what an operation is, and how
//! a call of one is checked, run and audited ([`dispatch_op`]). The
//! operations themselves, the registry of this build and `dispatch` by
//! name are `crate::ops`, which depends on this module, not the reverse.
//!
//! Each operation is declared once: name, description, required scope, JSON
//! Schemas of its parameters and result (from the Rust types, by schemars),
//! and one handler. Parameters are validated against the schema before the
//! handler sees them, so every transport reports the same per-field errors.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::auth::Principal;
use crate::ctx::Ctx;
use crate::error::{ErrorKind, IrisError, Result};
use crate::iris::Iris;
use iris_auth::{AuditEvent, Outcome};

/// What a result is turned into: a `Value` for transports that wrap it
/// (JSON-RPC, WebSocket frames), or JSON text for those that send it as is
/// (REST), without building the `Value` first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Value,
    Text,
}

/// A result in the [`Encoding`] asked for.
#[derive(Debug, Clone)]
pub enum Output {
    Value(Value),
    Text(Vec<u8>),
}

impl Output {
    /// The result as a `Value` (parsing text, which the `Value` encoding avoids).
    pub fn into_value(self) -> Result<Value> {
        match self {
            Output::Value(v) => Ok(v),
            Output::Text(t) => {
                serde_json::from_slice(&t).map_err(|e| IrisError::internal("decoding a result", e))
            }
        }
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Output>> + Send>>;
type Handler = Box<dyn Fn(Arc<Iris>, Ctx, Value, Encoding) -> BoxFuture + Send + Sync>;

/// One operation.
pub use crate::ownership::Runs;

pub struct Operation {
    pub name: &'static str,
    pub description: &'static str,
    /// `None`: any authenticated caller.
    pub scope: Option<&'static str>,
    /// Changes state (audited, never retried blindly).
    pub mutating: bool,
    /// Spans every team (keys, users, the audit trail): refused to callers
    /// limited to some teams.
    pub global: bool,
    /// Hands a message to a team: counted against the caller's tighter
    /// message rate, audited with the message's size and hash, and takes
    /// seed 002's `question` for its `message`.
    pub sends_messages: bool,
    /// Where it runs in a cluster whose teams are owned.
    pub runs: Runs,
    pub params_schema: Value,
    pub result_schema: Value,
    validator: jsonschema::Validator,
    /// The schema accepts `{}`: a call without parameters (most `GET`s)
    /// needs no walk through the validator.
    accepts_empty: bool,
    handler: Handler,
}

impl Operation {
    /// Declare an operation from a typed async handler.
    pub fn new<P, R, F, Fut>(
        name: &'static str,
        description: &'static str,
        scope: Option<&'static str>,
        mutating: bool,
        handler: F,
    ) -> Self
    where
        P: DeserializeOwned + JsonSchema + Send + 'static,
        R: Serialize + JsonSchema + 'static,
        // `Copy`: handlers are functions or closures without captures, so
        // each call takes its own copy instead of a clone of a shared `Arc`
        // (a reference count every core writes on every call).
        F: Fn(Arc<Iris>, Ctx, P) -> Fut + Copy + Send + Sync + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
    {
        let params_schema = schemars::schema_for!(P).to_value();
        let result_schema = schemars::schema_for!(R).to_value();
        // The schemas come from our own types; a failure here is a bug
        // caught by the registry's unit test, never by a caller.
        #[allow(clippy::expect_used)]
        let validator =
            jsonschema::validator_for(&params_schema).expect("generated schema compiles");
        let accepts_empty = validator.is_valid(&json!({}));
        Operation {
            name,
            description,
            scope,
            mutating,
            global: false,
            sends_messages: false,
            runs: Runs::Anywhere,
            params_schema,
            result_schema,
            validator,
            accepts_empty,
            handler: Box::new(move |iris, ctx, params, encoding| {
                Box::pin(async move {
                    // `dispatch` has checked the parameters against the
                    // schema, which names each bad field; what is left to
                    // fail here is rare (and would not be worth tracking
                    // the path of every field on every call for).
                    let mut params = params;
                    whole_numbers(&mut params);
                    let p: P = serde_json::from_value(params)
                        .map_err(|e| IrisError::validation("params", e.to_string()))?;
                    let r = handler(iris, ctx, p).await?;
                    match encoding {
                        Encoding::Value => serde_json::to_value(r).map(Output::Value),
                        Encoding::Text => as_text(&r).map(Output::Text),
                    }
                    .map_err(|e| IrisError::internal("encoding a result", e))
                })
            }),
        }
    }

    /// Mark the operation as spanning every team.
    pub fn global(mut self) -> Self {
        self.global = true;
        self
    }

    /// Mark the operation as handing a message to a team.
    pub fn sends_messages(mut self) -> Self {
        self.sends_messages = true;
        self
    }

    /// Mark the operation as carried out where `runs` says.
    pub fn on_owner(mut self, runs: Runs) -> Self {
        self.runs = runs;
        self
    }

    /// Whether `{}` is valid parameters (a call without any skips validation).
    pub fn accepts_empty(&self) -> bool {
        self.accepts_empty
    }

    /// Per-field problems of `params`, empty when valid.
    pub fn validate(&self, params: &Value) -> Map<String, Value> {
        let mut fields = Map::new();
        if self.accepts_empty && params.as_object().is_some_and(Map::is_empty) {
            return fields;
        }
        // The common case, without collecting errors.
        if self.validator.is_valid(params) {
            return fields;
        }
        for err in self.validator.iter_errors(params) {
            let mut path = err
                .instance_path()
                .to_string()
                .trim_start_matches('/')
                .replace('/', ".");
            let message = err.to_string();
            if path.is_empty() {
                // A missing or unknown property is reported on the object itself.
                if let Some(name) = message.split('"').nth(1) {
                    path = name.to_owned();
                }
            }
            fields.entry(path).or_insert(Value::String(message));
        }
        fields
    }

    /// A description for tool listings (`GET /tools`, MCP `tools/list`).
    pub fn describe(&self) -> Value {
        json!({
            "name": self.name,
            "description": self.description,
            "scope": self.scope,
            "mutating": self.mutating,
            "inputSchema": self.params_schema,
            "outputSchema": self.result_schema,
        })
    }
}

/// All operations, in a fixed order, and by name.
pub struct Registry {
    ops: Vec<Operation>,
    /// Names, sorted, with their index: a few short comparisons per call,
    /// cheaper than hashing the name on every request.
    by_name: Vec<(&'static str, usize)>,
}

impl Registry {
    /// A registry of `ops` (names must be unique; the registry's test checks).
    pub fn new(ops: Vec<Operation>) -> Self {
        let mut by_name: Vec<_> = ops.iter().enumerate().map(|(i, o)| (o.name, i)).collect();
        by_name.sort_unstable();
        Registry { ops, by_name }
    }

    pub fn get(&self, name: &str) -> Option<&Operation> {
        let i = self
            .by_name
            .binary_search_by(|(n, _)| (*n).cmp(name))
            .ok()?;
        self.ops.get(self.by_name[i].1)
    }
    pub fn all(&self) -> &[Operation] {
        &self.ops
    }

    /// The operations `principal` may call (the same rule as
    /// [`Iris::permit`]: its scopes, and no team-spanning operation for a
    /// caller limited to some teams): what every tool listing shows
    /// (`GET /api/v1/tools`, JSON-RPC and MCP `tools/list`).
    pub fn visible_to<'a>(
        &'a self,
        principal: &'a Principal,
    ) -> impl Iterator<Item = &'a Operation> {
        self.ops.iter().filter(|o| {
            o.scope.is_none_or(|s| principal.allows(s)) && !(o.global && principal.teams.is_some())
        })
    }
}

/// Run `op` for `ctx`: check the scope and the message rate, validate,
/// handle, audit.
pub async fn dispatch_op(
    iris: Arc<Iris>,
    ctx: Ctx,
    op: &'static Operation,
    params: Value,
    encoding: Encoding,
) -> Result<Output> {
    let handler = move |iris: Arc<Iris>, ctx: Ctx, params: Value| async move {
        // A team owned by another node: carried out there, after this
        // node's checks (scope, rate, parameters) and audit record.
        if let Some(url) = iris.owner_elsewhere(&ctx, op.runs, &params).await? {
            let v = match ctx.watch.clone() {
                None => {
                    iris.ownership()
                        .forward(&url, &ctx, op.name, params)
                        .await?
                }
                Some(watch) => forward_watched(&iris, &ctx, &url, op.name, params, watch).await?,
            };
            return Ok(match encoding {
                Encoding::Value => Output::Value(v),
                Encoding::Text => Output::Text(v.to_string().into_bytes()),
            });
        }
        (op.handler)(iris, ctx, params, encoding).await
    };
    run_checked(iris, ctx, op, params, handler).await
}

/// Forward a call whose caller follows the turns it starts: the owner
/// names each turn as it starts, and it is followed from here (through
/// Redis, as any turn of another node) for `watch`.
async fn forward_watched(
    iris: &Arc<Iris>,
    ctx: &Ctx,
    url: &str,
    operation: &str,
    params: Value,
    watch: crate::ctx::TurnWatch,
) -> Result<Value> {
    let (started, mut turns) = tokio::sync::mpsc::unbounded_channel::<String>();
    let call = iris
        .ownership()
        .forward_watched(url, ctx, operation, params, started);
    tokio::pin!(call);
    let watch = &watch;
    let follow = |id: String| async move {
        // The caller's own turn: no `messages:stream` needed, as for a
        // turn of this node.
        match iris.messaging().follow_unchecked(ctx, &id, None).await {
            Ok(f) => {
                // The watcher may have gone (its caller left).
                let _ = watch.send(f);
            }
            Err(e) => {
                tracing::debug!(message = %id, error = %e.message, "a forwarded call's turn is not followed")
            }
        }
    };
    let result = loop {
        tokio::select! {
            result = &mut call => break result,
            Some(id) = turns.recv() => follow(id).await,
        }
    };
    while let Ok(id) = turns.try_recv() {
        follow(id).await;
    }
    result
}

/// Run `handle` as a call of `op`, with every check and the audit record
/// [`dispatch_op`] gives its handler: for the core's own entry points that
/// need more than the operation's JSON result (a turn to follow).
pub async fn run_checked<T, F, Fut>(
    iris: Arc<Iris>,
    ctx: Ctx,
    op: &'static Operation,
    params: Value,
    handle: F,
) -> Result<T>
where
    F: FnOnce(Arc<Iris>, Ctx, Value) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut params = if params.is_null() { json!({}) } else { params };
    let sends = op.sends_messages;
    if sends {
        alias_question(&mut params);
    }
    if let Some(scope) = op.scope {
        iris.access()
            .permit(&ctx, scope, op.global, op.name, team_of(&params))?;
    }
    // (A call another node forwarded was limited there.)
    if sends
        && !ctx.forwarded
        && let Some(d) = iris.auth().limit_messages(&ctx.principal).await
        && !d.allowed
    {
        return Err(IrisError::new(
            ErrorKind::RateLimited,
            format!(
                "more than {} messages per {}s for this caller",
                d.limit,
                iris.auth().settings.message_rate.window.as_secs()
            ),
        )
        .with_details(
            json!({"retryAfterMs": d.retry_after.as_millis() as u64, "limit": d.limit}),
        ));
    }
    let problems = op.validate(&params);
    if !problems.is_empty() {
        let summary: Vec<String> = problems
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or_default()))
            .collect();
        return Err(IrisError::new(
            ErrorKind::Validation,
            format!("invalid parameters: {}", summary.join("; ")),
        )
        .with_details(json!({"fields": problems})));
    }
    // (A forwarded call was audited where it arrived.)
    if !op.mutating || ctx.forwarded {
        return handle(iris, ctx, params).await;
    }
    let record = AuditRecord::of(&iris, op, &params, sends);
    let result = handle(iris.clone(), ctx.clone(), params).await;
    record.finish(&iris, &ctx, result.as_ref().err());
    result
}

/// Seed 002 names a message's text `question` (`POST /teams/:team/ask`):
/// for the operations that send one, it stands for `message`, on every
/// transport.
fn alias_question(params: &mut Value) {
    if let Some(p) = params.as_object_mut()
        && let Some(q) = p.remove("question")
    {
        p.entry("message").or_insert(q);
    }
}

/// The audit record of a mutating call, made before its handler takes the
/// parameters.
struct AuditRecord {
    operation: &'static str,
    team: Option<String>,
    details: Value,
}

impl AuditRecord {
    fn of(iris: &Iris, op: &Operation, params: &Value, sends: bool) -> Self {
        let mut details = json!({"operation": op.name});
        // (A job's text is its `task`.)
        let text = params.get("message").or_else(|| params.get("task"));
        if sends && let Some(text) = text.and_then(Value::as_str) {
            details["messageBytes"] = json!(text.len());
            details["messageSha256"] = json!(iris_auth::secret::sha256_hex(text));
            if iris.auth().settings.audit_message_text {
                details["message"] = json!(text);
            }
        }
        AuditRecord {
            operation: op.name,
            team: team_of(params).map(str::to_owned),
            details,
        }
    }

    /// Record the call with its outcome.
    fn finish(mut self, iris: &Iris, ctx: &Ctx, error: Option<&IrisError>) {
        let outcome = match error {
            None => Outcome::Success,
            Some(e) => {
                self.details["error"] = json!(e.kind.code());
                Outcome::Failure
            }
        };
        iris.audit(
            ctx,
            AuditEvent::new(format!("operation.{}", self.operation), outcome)
                .team(self.team)
                .details(self.details),
        );
    }
}

/// `r` as JSON text, written into a buffer kept per thread and copied out
/// at its exact length: one allocation of the right size, where writing
/// into a fresh vector took a guessed size and then (as a response body)
/// one more allocation for the unused rest.
fn as_text<R: Serialize>(r: &R) -> serde_json::Result<Vec<u8>> {
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    /// A buffer grown beyond this by one large result is given back.
    const KEPT: usize = 64 * 1024;
    BUFFER.with(|b| {
        // Serialisation does not dispatch, so the buffer is never borrowed twice;
        // if it somehow were, a fresh vector does the same job.
        let Ok(mut buf) = b.try_borrow_mut() else {
            return serde_json::to_vec(r);
        };
        buf.clear();
        let written = serde_json::to_writer(&mut *buf, r).map(|()| buf.to_vec());
        if buf.capacity() > KEPT {
            *buf = Vec::new();
        }
        written
    })
}

/// Turn every number of `v` that has no fractional part (`5.0`) into an
/// integer, in place: JSON Schema counts `5.0` as an integer (2020-12 core,
/// section 4.2.1), so the validator passes it, and
/// serde's integer fields must take it too. Walks without copying.
fn whole_numbers(v: &mut Value) {
    match v {
        Value::Number(n) => {
            if let Some(f) = n
                .as_f64()
                .filter(|f| n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15)
            {
                *v = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers),
        Value::Object(map) => map.values_mut().for_each(whole_numbers),
        _ => {}
    }
}

/// The team an operation's parameters name, for the audit trail.
fn team_of(params: &Value) -> Option<&str> {
    ["toTeam", "team"]
        .iter()
        .find_map(|k| params.get(*k).and_then(Value::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_floats_are_integers() {
        let mut v = json!({"timeout": 1_423_244.0, "a": [2.0, 2.5], "s": "3.0"});
        whole_numbers(&mut v);
        assert_eq!(v, json!({"timeout": 1_423_244, "a": [2, 2.5], "s": "3.0"}));
        assert!(v["timeout"].is_i64());
    }

    /// Every operation carried out on a team's owner names its team (or
    /// its job) among its parameters: else it would run where it landed.
    #[test]
    fn operations_run_on_an_owner_name_what_finds_it() {
        let mut on_owner = Vec::new();
        for op in crate::ops::registry().all() {
            let props = &op.params_schema["properties"];
            let named = match op.runs {
                Runs::Anywhere => continue,
                Runs::OnTeamsOwner => {
                    !props["toTeam"].is_null()
                        || !props["team"].is_null()
                        || !props["sessionId"].is_null()
                }
                Runs::OnJobsOwner => !props["jobId"].is_null(),
            };
            assert!(named, "{} runs on an owner it cannot find", op.name);
            on_owner.push(op.name);
        }
        on_owner.sort_unstable();
        assert_eq!(
            on_owner,
            [
                "ask_message",
                "job_cancel",
                "job_execute",
                "quick_message",
                "send_message",
                "session_cancel",
                "session_delete",
                "session_diff",
                "session_fork",
                "session_reboot",
                "task_push_set",
                "team_launch",
                "team_sleep",
                "team_wake"
            ]
        );
    }
}
