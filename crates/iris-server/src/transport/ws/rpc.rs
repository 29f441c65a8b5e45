//! JSON-RPC 2.0 on `/ws` (seed 003): `initialize`, `tools/list`,
//! `tools/call` (`tools/execute`), `subscribe`/`unsubscribe`, `ping`.

use super::*;

impl Connection {
    pub(super) async fn on_rpc(&mut self, msg: serde_json::Map<String, Value>) {
        let id = msg.get("id").cloned();
        let method = msg.get("method").and_then(Value::as_str).map(str::to_owned);
        let valid = msg.get("jsonrpc").and_then(Value::as_str) == Some("2.0");
        let Some(method) = method.filter(|_| valid) else {
            let v = json!({"jsonrpc": "2.0", "id": id.unwrap_or(Value::Null),
                           "error": {"code": -32600, "message": "invalid request: need jsonrpc \"2.0\" and a method"}});
            return self.send(v).await;
        };
        let params = msg.get("params").cloned().unwrap_or_else(|| json!({}));
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
            _ => {
                // tools/call, tools/execute and any operation by name run concurrently.
                let (name, args) = match method.as_str() {
                    "tools/call" | "tools/execute" => (
                        params
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        params
                            .get("arguments")
                            .or_else(|| params.get("parameters"))
                            .cloned()
                            .unwrap_or_else(|| json!({})),
                    ),
                    _ => (method.clone(), params),
                };
                let (state, ctx, out) = (self.state.clone(), self.ctx.clone(), self.out.clone());
                self.spawn_task(async move {
                    let r = state.iris.dispatch(ctx, &name, args).await;
                    if let Some(id) = id {
                        let v = match r {
                            Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
                            Err(e) => json!({"jsonrpc": "2.0", "id": id, "error": e.jsonrpc(None, now_ms())}),
                        };
                        let _ = out.send(v).await;
                    }
                });
                return;
            }
        };
        // Requests without an id are notifications: no answer.
        if let Some(id) = id {
            let v = match result {
                Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
                Err(e) => json!({"jsonrpc": "2.0", "id": id, "error": e.jsonrpc(None, now_ms())}),
            };
            self.send(v).await;
        }
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
