//! JSON-RPC 2.0 on `/ws` (seed 003): `initialize`, `tools/list`,
//! `tools/call` (`tools/execute`), any operation by name,
//! `subscribe`/`unsubscribe`, `ping`; single requests and batches.
//!
//! Request objects are checked as section 4 of the specification asks:
//! `jsonrpc` exactly `"2.0"`, `method` a string, `id` (when present) a
//! string, number or null, `params` (when present) an object or array;
//! anything else is answered with -32600 Invalid Request. A request without
//! `id` is a notification and gets no answer. A batch (section 6) is
//! answered with one array of the answers, in order, leaving out
//! notifications (nothing at all when every member was one); an empty batch
//! is one -32600.

use super::*;

/// What one request object comes to.
enum Plan {
    /// Its answer, made at once (`None`: a notification, no answer).
    Now(Option<Value>),
    /// A call of the registry, run off the connection's loop.
    Call {
        id: Option<Value>,
        name: String,
        args: Value,
    },
}

/// The answer to request `id` with `result`.
fn answer(id: Value, result: Result<Value, IrisError>) -> Value {
    match result {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(e) => json!({"jsonrpc": "2.0", "id": id, "error": e.jsonrpc(None, now_ms())}),
    }
}

fn invalid(problem: &str) -> Value {
    let e = IrisError::new(
        ErrorKind::InvalidRequest,
        format!("invalid request: {problem}"),
    );
    answer(Value::Null, Err(e))
}

/// Run a registry call and make its answer (none for a notification).
async fn call(
    state: AppState,
    ctx: Ctx,
    id: Option<Value>,
    name: String,
    args: Value,
) -> Option<Value> {
    let r = state.iris.dispatch(ctx, &name, args).await;
    id.map(|id| answer(id, r))
}

impl Connection {
    /// A message of the JSON-RPC socket: one request object or a batch.
    pub(super) async fn on_rpc(&mut self, msg: Value) {
        match msg {
            Value::Array(batch) => self.on_batch(batch).await,
            single => match self.plan(single).await {
                Plan::Now(Some(v)) => self.send(v).await,
                Plan::Now(None) => {}
                Plan::Call { id, name, args } => {
                    // Calls run concurrently; their answers come as they end.
                    let (state, ctx, out) =
                        (self.state.clone(), self.ctx.clone(), self.out.clone());
                    self.spawn_task(async move {
                        if let Some(v) = call(state, ctx, id, name, args).await {
                            let _ = out.send(v).await;
                        }
                    });
                }
            },
        }
    }

    async fn on_batch(&mut self, batch: Vec<Value>) {
        if batch.is_empty() {
            return self.send(invalid("an empty batch")).await;
        }
        let mut planned = Vec::with_capacity(batch.len());
        for member in batch {
            planned.push(self.plan(member).await);
        }
        let (state, ctx, out) = (self.state.clone(), self.ctx.clone(), self.out.clone());
        self.spawn_task(async move {
            let answers = futures_util::future::join_all(planned.into_iter().map(|p| {
                let (state, ctx) = (state.clone(), ctx.clone());
                async move {
                    match p {
                        Plan::Now(v) => v,
                        Plan::Call { id, name, args } => call(state, ctx, id, name, args).await,
                    }
                }
            }))
            .await;
            let answers: Vec<Value> = answers.into_iter().flatten().collect();
            if !answers.is_empty() {
                let _ = out.send(Value::Array(answers)).await;
            }
        });
    }

    /// Check one request object and answer it, or say which call it is.
    async fn plan(&mut self, msg: Value) -> Plan {
        let Value::Object(msg) = msg else {
            return Plan::Now(Some(invalid("a request is a JSON object")));
        };
        let id = msg.get("id").cloned();
        if let Some(bad) = id
            .as_ref()
            .filter(|i| !(i.is_string() || i.is_number() || i.is_null()))
        {
            return Plan::Now(Some(invalid(&format!(
                "id must be a string, number or null, not {bad}"
            ))));
        }
        let reject = |problem: &str| {
            let e = IrisError::new(
                ErrorKind::InvalidRequest,
                format!("invalid request: {problem}"),
            );
            Plan::Now(Some(answer(id.clone().unwrap_or(Value::Null), Err(e))))
        };
        if msg.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return reject("need \"jsonrpc\": \"2.0\"");
        }
        let Some(method) = msg.get("method").and_then(Value::as_str).map(str::to_owned) else {
            return reject("need a string \"method\"");
        };
        let params = match msg.get("params") {
            None => json!({}),
            Some(p @ (Value::Object(_) | Value::Array(_))) => p.clone(),
            Some(_) => return reject("\"params\" must be an object or an array"),
        };
        let result = match method.as_str() {
            "initialize" => Ok(json!({
                "protocolVersion": "2.0",
                "serverInfo": {"name": "iris", "version": env!("CARGO_PKG_VERSION")},
                "capabilities": {"tools": true, "subscriptions": ["system", "team:<name>", "session:<id>"]},
            })),
            "ping" => Ok(json!("pong")),
            "tools/list" => Ok(json!({"tools": registry()
                .visible_to(&self.ctx.principal)
                .map(|o| o.describe()).collect::<Vec<_>>()})),
            "subscribe" | "unsubscribe" => self.rpc_subscriptions(&method, &params).await,
            "tools/call" | "tools/execute" if !params.is_object() => Err(IrisError::validation(
                "params",
                "an object `{name, arguments}`",
            )),
            "tools/call" | "tools/execute" => {
                let name = params
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let args = params
                    .get("arguments")
                    .or_else(|| params.get("parameters"))
                    .cloned()
                    .unwrap_or_else(|| json!({}));
                return Plan::Call { id, name, args };
            }
            _ => {
                return Plan::Call {
                    id,
                    name: method,
                    args: params,
                };
            }
        };
        Plan::Now(id.map(|id| answer(id, result)))
    }

    pub(super) async fn rpc_subscriptions(
        &mut self,
        method: &str,
        params: &Value,
    ) -> Result<Value, IrisError> {
        let topics: Vec<String> = params
            .get("events")
            .or_else(|| params.get("topics"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if topics.is_empty() {
            return Err(IrisError::validation(
                "events",
                "a list of topics: system, team:<name>, session:<id>",
            ));
        }
        let topics = topics
            .iter()
            .map(|t| iris_core::bus::canonical_topic(t))
            .collect::<Result<Vec<String>, IrisError>>()?;
        for t in &topics {
            self.toggle(method, t).await?;
        }
        let key = if method == "subscribe" {
            "subscribed"
        } else {
            "unsubscribed"
        };
        Ok(json!({ key: topics }))
    }
}
