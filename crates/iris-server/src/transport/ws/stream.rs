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
            let turn = match state.iris.send_and_follow(&ctx, Value::Object(params)).await {
                Ok(t) => t,
                Err(e) => {
                    let _ = out.send(json!({"type": "error", "error": e.body(None, now_ms())})).await;
                    return;
                }
            };
            let (id, team, session) = turn.ids();
            let id = id.to_owned();
            if let Ok(mut f) = followed.lock() {
                f.add(&id);
            }
            let _ = out
                .send(json!({"type": "start", "messageId": id, "team": team, "sessionId": session}))
                .await;
            let tracker = match turn {
                TurnStream::Live(t) => t,
                TurnStream::Stored { row, .. } => {
                    let _ = out.send(json!({"type": "complete", "messageId": id, "status": row.status,
                                            "response": row.response})).await;
                    return;
                }
            };
            let mut after = 0;
            loop {
                match tracker.next_after(after).await {
                    FollowStep::Items(items) => {
                        for item in items {
                            after = item.seq;
                            let mut v = item.data.clone();
                            v["type"] = match item.kind {
                                StreamKind::Chunk => "chunk",
                                StreamKind::ToolUse => "tool_use",
                            }
                            .into();
                            v["messageId"] = json!(id);
                            v["seq"] = json!(item.seq);
                            if out.send(v).await.is_err() {
                                return;
                            }
                        }
                    }
                    FollowStep::Done(o) => {
                        let ok = matches!(o.status, iris_core::pool::turn::TurnStatus::Completed | iris_core::pool::turn::TurnStatus::Cancelled);
                        let v = if ok {
                            json!({"type": "complete", "messageId": id, "status": o.status, "response": o.response,
                                   "duration": o.duration_ms, "usage": o.usage})
                        } else {
                            json!({"type": "error", "messageId": id, "status": o.status,
                                   "error": o.error, "partialResponse": o.response})
                        };
                        let _ = out.send(v).await;
                        break;
                    }
                }
            }
        });
        Ok(())
    }
}
