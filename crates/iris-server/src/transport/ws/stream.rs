//! Seed 002's message protocol on `/api/v1/stream`: `message` starts a turn
//! and follows it on this connection, `subscribe`/`unsubscribe` a team or
//! session, `cancel`, `ping`.

use super::*;

impl Connection {
    pub(super) async fn on_stream_message(&mut self, mut msg: serde_json::Map<String, Value>) {
        let kind = msg
            .remove("type")
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let team = msg
            .remove("team")
            .and_then(|v| v.as_str().map(str::to_owned));
        let result = match kind.as_str() {
            "ping" => {
                self.send(json!({"type": "pong", "timestamp": now_ms()}))
                    .await;
                Ok(())
            }
            "subscribe" | "unsubscribe" => {
                match (team, msg.get("sessionId").and_then(Value::as_str)) {
                    (Some(t), _) => self.toggle(&kind, &format!("team:{t}")).await,
                    (None, Some(s)) => self.toggle(&kind, &format!("session:{s}")).await,
                    (None, None) => Err(IrisError::validation(
                        "team",
                        "name a team (or a sessionId)",
                    )),
                }
            }
            "message" => self.start_turn(team, msg),
            "cancel" => {
                let mut params = msg;
                params.insert("toTeam".into(), json!(team.unwrap_or_default()));
                let state = self.state.clone();
                let ctx = self.ctx.clone();
                match state
                    .iris
                    .dispatch(ctx, "session_cancel", Value::Object(params))
                    .await
                {
                    Ok(r) => {
                        self.send(json!({"type": "cancelled", "team": r["team"], "sessionId": r["sessionId"],
                                         "cancelled": r["cancelled"]}))
                            .await;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            "" => Err(IrisError::validation("type", "is required")),
            other => Err(IrisError::validation(
                "type",
                format!("unknown message type `{other}`"),
            )),
        };
        if let Err(e) = result {
            self.reply_error(None, e).await;
        }
    }

    /// Send a message and follow its turn on this connection.
    pub(super) fn start_turn(
        &mut self,
        team: Option<String>,
        mut params: serde_json::Map<String, Value>,
    ) -> Result<(), IrisError> {
        let team = team.ok_or_else(|| IrisError::validation("team", "is required"))?;
        params.insert("toTeam".into(), json!(team));
        let (state, ctx, out, followed) = (
            self.state.clone(),
            self.ctx.clone(),
            self.out.clone(),
            self.followed.clone(),
        );
        self.spawn_task(async move {
            let mut follower = match state
                .iris
                .send_and_follow(&ctx, Value::Object(params))
                .await
            {
                Ok(f) => f,
                Err(e) => {
                    let _ = out
                        .send(json!({"type": "error", "error": e.body(None, now_ms())}))
                        .await;
                    return;
                }
            };
            let id = follower.message_id().to_owned();
            if let Ok(mut f) = followed.lock() {
                f.add(&id);
            }
            while let Some(event) = follower.next().await {
                if out.send(message(&id, &event)).await.is_err() {
                    return;
                }
            }
        });
        Ok(())
    }
}

/// A turn's event as a message of this protocol: its data with `type`
/// (the event's name), `messageId` and, for chunks and tool traffic, `seq`.
fn message(id: &str, event: &TurnEvent) -> Value {
    let mut v = event.data();
    if !v.is_object() {
        v = json!({ "data": v });
    }
    v["type"] = json!(event.name());
    v["messageId"] = json!(id);
    if let Some(seq) = event
        .seq()
        .filter(|_| !matches!(event, TurnEvent::Start { .. }))
    {
        v["seq"] = json!(seq);
    }
    v
}
