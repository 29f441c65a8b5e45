//! Subscriptions to bus topics, for both protocols: each topic is read by
//! its own task that writes to the connection's outgoing queue.

use super::*;

impl Connection {
    pub(super) async fn toggle(&mut self, action: &str, topic: &str) -> Result<(), IrisError> {
        let topic = &iris_core::bus::canonical_topic(topic)?;
        if action == "unsubscribe" {
            if let Some(h) = self.subscriptions.remove(topic) {
                h.abort();
            }
            self.ack(action, topic).await;
            return Ok(());
        }
        if !self.subscriptions.contains_key(topic) {
            // The one rule of every transport (docs/security.md): `system`
            // needs `teams:read` and `messages:read`, team and session
            // topics `messages:stream`; an agent only its own sessions.
            let (_, mut sub) = self.state.iris.subscribe(&self.ctx, topic).await?;
            let (out, proto, followed, name) = (
                self.out.clone(),
                self.proto,
                self.followed.clone(),
                topic.to_owned(),
            );
            let handle = tokio::spawn(async move {
                while let Some(d) = sub.recv().await {
                    let v = match d {
                        Delivery::Event(e) => {
                            let skip = proto == Protocol::Stream
                                && e.turn_id
                                    .as_ref()
                                    .is_some_and(|t| followed.lock().is_ok_and(|f| f.contains(t)));
                            if skip {
                                continue;
                            }
                            event_message(proto, &name, &e)
                        }
                        Delivery::Dropped { missed } => {
                            let notice = json!({"topic": name, "dropped": true, "missed": missed,
                                                "message": "this subscription fell behind and was dropped; subscribe again"});
                            match proto {
                                Protocol::Stream => json!({"type": "dropped", "detail": notice}),
                                Protocol::JsonRpc => {
                                    json!({"jsonrpc": "2.0", "method": "notification", "params": notice})
                                }
                            }
                        }
                    };
                    if out.send(v).await.is_err() {
                        break;
                    }
                }
            });
            self.subscriptions.insert(topic.to_owned(), handle);
        }
        self.ack(action, topic).await;
        Ok(())
    }

    pub(super) async fn ack(&self, action: &str, topic: &str) {
        if self.proto == Protocol::Stream {
            let kind = if action == "subscribe" {
                "subscribed"
            } else {
                "unsubscribed"
            };
            self.send(json!({"type": kind, "topic": topic})).await;
        }
    }
}

/// A bus event as a message of the connection's protocol.
fn event_message(proto: Protocol, topic: &str, e: &Event) -> Value {
    let kind = match e.kind {
        EventKind::Chunk => "chunk",
        EventKind::ToolUse => "tool_use",
        EventKind::ToolResult => "tool_result",
        EventKind::Plan => "plan",
        EventKind::TurnStarted => "start",
        EventKind::TurnCompleted => "complete",
        _ => "event",
    };
    match proto {
        Protocol::Stream => {
            let mut v = e.data.clone();
            if !v.is_object() {
                v = json!({"data": v});
            }
            v["type"] = json!(kind);
            v["event"] = json!(e.kind);
            v["team"] = json!(e.team);
            v["sessionId"] = json!(e.session_id);
            v["messageId"] = json!(e.turn_id);
            v
        }
        Protocol::JsonRpc => {
            json!({"jsonrpc": "2.0", "method": "notification", "params": {"topic": topic, "event": e}})
        }
    }
}
