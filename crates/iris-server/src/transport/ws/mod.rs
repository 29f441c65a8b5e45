//! WebSockets: `/api/v1/stream` speaks seed 002's message protocol, `/ws`
//! speaks JSON-RPC 2.0 (seed 003). Both are adapters over the core: calls
//! go through `dispatch`, turns are followed through `Iris::follow`, and
//! subscriptions read the event bus. Each connection has a size limit per
//! message, a message rate limit, an idle timeout and server pings; the
//! number of connections is capped.
//!
//! This module is the connection (upgrade, limits, the loop, first-message
//! authentication, stopping); `stream` and `rpc` are the two protocols,
//! `topics` the bus subscriptions both offer.

mod rpc;
mod stream;
mod topics;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use iris_core::auth::Principal;
use iris_core::bus::{Delivery, Event, EventKind};
use iris_core::{Ctx, ErrorKind, IrisError, TurnEvent, now_ms, registry};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::ApiError;
use crate::gate::caller::{Caller, RequestId};
use crate::gate::held::{self, Held};
use crate::lifecycle::{CLOSING, FINISHING};
use crate::state::AppState;

#[derive(Clone, Copy, PartialEq)]
enum Protocol {
    /// `/api/v1/stream`: `{type: …}` messages.
    Stream,
    /// `/ws`: JSON-RPC 2.0.
    JsonRpc,
}

pub fn routes() -> Router<AppState> {
    let mut router = Router::new().route("/ws", get(upgrade_as::<true>));
    for prefix in crate::gate::policy::API_PREFIXES {
        router = router.route(&format!("{prefix}/stream"), get(upgrade_as::<false>));
    }
    router
}

/// `GET` upgrading to a WebSocket: seed 002's messages, or JSON-RPC 2.0
/// when `RPC`.
async fn upgrade_as<const RPC: bool>(
    State(state): State<AppState>,
    rid: RequestId,
    who: Caller,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // A plain GET (no upgrade headers) gets the error body like any other
    // bad request, with the status axum chose (400, 405, 426).
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            let status = rejection.status();
            let e = IrisError::validation("Upgrade", rejection.body_text());
            return ApiError::new(e, &rid).with_status(status).into_response();
        }
    };
    let proto = if RPC {
        Protocol::JsonRpc
    } else {
        Protocol::Stream
    };
    upgrade(state, rid, who, ws, proto)
}

fn upgrade(
    state: AppState,
    rid: RequestId,
    who: Caller,
    ws: WebSocketUpgrade,
    proto: Protocol,
) -> Response {
    // Browsers cannot set headers on a WebSocket: without a credential the
    // connection opens unauthenticated and its first message must carry one.
    let held = match &who.credential {
        Some(c) => match Held::new(state.iris.auth(), c.clone()) {
            Ok(h) => Some(h),
            Err(e) => return ApiError::new(e, &rid).into_response(),
        },
        None => None,
    };
    let (ctx, authenticated) = match who.ctx() {
        Ok(c) => (c, true),
        Err(_) => (
            Ctx::new(Arc::new(Principal::nobody()), who.origin.clone()),
            false,
        ),
    };
    let limits = state.iris.config().api.websocket.clone();
    // Sockets still to send their credential have a cap of their own, so
    // they cannot take the room of authenticated ones.
    let (count, cap, what) = if authenticated {
        (
            &state.ws_connections,
            limits.max_connections,
            "WebSocket connections",
        )
    } else {
        (
            &state.ws_pending,
            limits.max_unauthenticated,
            "WebSocket connections still to authenticate (send the credential in the Authorization header or ?token=)",
        )
    };
    if count.fetch_add(1, Ordering::AcqRel) >= cap {
        count.fetch_sub(1, Ordering::AcqRel);
        return ApiError::new(
            IrisError::new(ErrorKind::ServiceUnavailable, format!("too many {what}")),
            &rid,
        )
        .into_response();
    }
    // Stopping the server waits for this connection too; held from before
    // the upgrade, so there is no moment when neither it nor its HTTP
    // connection is counted.
    let open = state.lifecycle.hold();
    // tungstenite reserves its whole read buffer per connection (128 KiB by
    // default); 4 KiB keeps 10,000 idle clients cheap, larger messages still
    // arrive (the buffer is only the read chunk).
    ws.max_message_size(limits.max_message_bytes)
        .read_buffer_size(4096)
        .on_upgrade(move |socket| async move {
            let _open = open;
            let mut c = Connection::new(state, ctx, proto);
            c.authenticated = authenticated;
            c.held = held;
            c.run(socket).await;
        })
        .into_response()
}

/// Close frame 1001: the server is going away (it is stopping).
fn going_away() -> Message {
    closing(
        axum::extract::ws::close_code::AWAY,
        "the server is shutting down",
    )
}

/// Whether a read failed because a message is larger than
/// `api.websocket.maxMessageBytes` (tungstenite's capacity error).
fn too_big(e: axum::Error) -> bool {
    matches!(
        e.into_inner().downcast_ref::<tungstenite::Error>(),
        Some(tungstenite::Error::Capacity(_))
    )
}

/// A close frame with its code and reason (at most 123 bytes: RFC 6455
/// section 5.5 bounds a control frame's payload to 125).
fn closing(code: u16, reason: &str) -> Message {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(axum::extract::ws::CloseFrame {
        code,
        reason: reason[..end].into(),
    }))
}

struct Connection {
    state: AppState,
    ctx: Ctx,
    proto: Protocol,
    out: mpsc::Sender<Value>,
    out_rx: Option<mpsc::Receiver<Value>>,
    /// An answer of the connection's own loop found the outgoing queue full:
    /// the client does not read what it is sent, and the loop, which is what
    /// empties that queue, must not wait on it. The connection is closed.
    overrun: std::sync::atomic::AtomicBool,
    subscriptions: HashMap<String, JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
    /// Turns this connection follows itself; team subscriptions skip them.
    followed: Arc<Mutex<Followed>>,
    window: (Instant, u32),
    /// False until a first `auth` message proved who this is.
    authenticated: bool,
    /// Its credential, checked again before each message and whenever
    /// credentials change (`None`: the open caller of `requireAuth: false`).
    held: Option<Held>,
    /// Its credential stopped standing: close with this.
    ended: Option<IrisError>,
    /// Set once the server stops: new messages are refused, and the
    /// connection closes as soon as what it follows has ended (at the end
    /// of the grace at the latest).
    finishing: bool,
}

impl Connection {
    fn new(state: AppState, ctx: Ctx, proto: Protocol) -> Self {
        let (out, out_rx) = mpsc::channel(1024);
        Connection {
            state,
            ctx,
            proto,
            out,
            out_rx: Some(out_rx),
            overrun: Default::default(),
            subscriptions: HashMap::new(),
            tasks: Vec::new(),
            followed: Arc::new(Mutex::new(Followed::default())),
            window: (Instant::now(), 0),
            authenticated: true,
            held: None,
            ended: None,
            finishing: false,
        }
    }

    /// Check the credential again (a message arrived, or credentials
    /// changed): the principal as it is now, or `ended` set.
    fn recheck(&mut self) {
        if let Some(h) = self.held.as_mut() {
            match h.check(self.state.iris.auth()) {
                Ok(p) => self.ctx.principal = p,
                Err(e) => self.ended = Some(e),
            }
        }
    }

    async fn run(mut self, socket: WebSocket) {
        let limits = self.state.iris.config().api.websocket.clone();
        let idle = Duration::from_millis(limits.idle_timeout);
        let (mut sink, mut stream) = socket.split();
        let Some(mut out_rx) = self.out_rx.take() else {
            return;
        };
        let mut ping = tokio::time::interval(Duration::from_millis(limits.ping_interval.max(100)));
        ping.tick().await;
        // Idle: no message from the client. Dead: not even a pong.
        let mut last_message = Instant::now();
        let mut last_frame = Instant::now();
        let dead_after = Duration::from_millis(limits.ping_interval.max(100) * 3);
        let auth_timeout = Duration::from_millis(limits.auth_timeout);
        let auth_deadline = tokio::time::sleep(auth_timeout);
        tokio::pin!(auth_deadline);
        let lifecycle = self.state.lifecycle.clone();
        let mut drain = tokio::time::interval(Duration::from_millis(50));
        let mut changes = self.state.iris.auth().changes();
        let mut changes_open = true;
        loop {
            if let Some(e) = self.ended.take() {
                // The error, then 1008 with the reason.
                let v = self.error_value(None, &e);
                let _ = sink.send(Message::Text(v.to_string().into())).await;
                let _ = sink
                    .send(closing(axum::extract::ws::close_code::POLICY, &e.message))
                    .await;
                break;
            }
            if self.overrun.load(std::sync::atomic::Ordering::Relaxed) {
                // 1013 Try Again Later (RFC 6455 section 7.4.1, IANA registry).
                let why = "the client does not read its messages; 1024 are waiting";
                let _ = sink.send(closing(1013, why)).await;
                break;
            }
            if self.finishing && self.tasks.iter().all(JoinHandle::is_finished) && out_rx.is_empty()
            {
                let _ = sink.send(going_away()).await;
                break;
            }
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(Ok(Message::Text(text))) => {
                        (last_message, last_frame) = (Instant::now(), Instant::now());
                        self.on_text(text.as_str(), limits.messages_per_second).await;
                    }
                    Some(Ok(Message::Binary(_))) => {
                        (last_message, last_frame) = (Instant::now(), Instant::now());
                        let problem = "binary messages are not supported; send JSON text";
                        let e = match self.proto {
                            Protocol::JsonRpc => IrisError::new(ErrorKind::InvalidRequest, problem),
                            Protocol::Stream => IrisError::validation("message", problem),
                        };
                        self.reply_error(None, e).await;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => last_frame = Instant::now(),
                    Some(Err(e)) => {
                        // A message over the size limit: say so (1009) before closing.
                        if too_big(e) {
                            let why = format!("a message is larger than {} bytes", limits.max_message_bytes);
                            let _ = sink.send(closing(axum::extract::ws::close_code::SIZE, &why)).await;
                        }
                        break;
                    }
                    Some(Ok(Message::Close(_))) | None => break,
                },
                Some(v) = out_rx.recv() => {
                    if sink.send(Message::Text(v.to_string().into())).await.is_err() {
                        break;
                    }
                }
                () = &mut auth_deadline, if !self.authenticated => {
                    let why = format!("no credential within {} ms of connecting", auth_timeout.as_millis());
                    self.reply_error(None, IrisError::new(ErrorKind::Unauthorized, why.clone())).await;
                    if let Some(v) = out_rx.recv().await {
                        let _ = sink.send(Message::Text(v.to_string().into())).await;
                    }
                    // 1008: policy violation (RFC 6455 section 7.4.1).
                    let _ = sink.send(closing(axum::extract::ws::close_code::POLICY, &why)).await;
                    break;
                }
                changed = changes.changed(), if changes_open && self.held.is_some() => {
                    match changed {
                        Ok(()) => self.recheck(),
                        Err(_) => changes_open = false,
                    }
                }
                () = held::until(self.held.as_ref().and_then(Held::deadline)), if self.held.is_some() => self.recheck(),
                () = lifecycle.reached(FINISHING), if !self.finishing => self.stop_following_topics(),
                () = lifecycle.reached(CLOSING) => {
                    let _ = sink.send(going_away()).await;
                    break;
                }
                // Followers end just after their last message: look again soon.
                _ = drain.tick(), if self.finishing => {}
                _ = ping.tick() => {
                    if last_message.elapsed() > idle || last_frame.elapsed() > dead_after {
                        let _ = sink.send(Message::Close(None)).await;
                        break;
                    }
                    if sink.send(Message::Ping(Default::default())).await.is_err() {
                        break;
                    }
                }
            }
        }
        for (_, h) in self.subscriptions.drain() {
            h.abort();
        }
        // Followers and calls in flight end with the connection; the turns go on.
        for h in self.tasks.drain(..) {
            h.abort();
        }
        let count = if self.authenticated {
            &self.state.ws_connections
        } else {
            &self.state.ws_pending
        };
        count.fetch_sub(1, Ordering::AcqRel);
    }

    /// Stopping began: refuse new messages from now on, and end the topic
    /// subscriptions, which never end by themselves (a busy topic would
    /// keep the queue full until the end of the grace); turns this
    /// connection follows are still seen to their end.
    fn stop_following_topics(&mut self) {
        self.finishing = true;
        for (_, h) in self.subscriptions.drain() {
            h.abort();
        }
    }

    /// Run `work` for this connection (a call in flight, a turn followed),
    /// forgetting those that have ended so a long-lived connection does not
    /// pile up handles.
    fn spawn_task(&mut self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.retain(|h| !h.is_finished());
        self.tasks.push(tokio::spawn(work));
    }

    /// Fixed one-second window; a message counts `weight` (a JSON-RPC
    /// batch, its members).
    fn over_rate(&mut self, per_second: u32, weight: usize) -> bool {
        let now = Instant::now();
        if now.duration_since(self.window.0) >= Duration::from_secs(1) {
            self.window = (now, 0);
        }
        let weight = u32::try_from(weight).unwrap_or(u32::MAX);
        self.window.1 = self.window.1.saturating_add(weight);
        self.window.1 > per_second
    }

    /// Queue an answer of the loop itself: never waits (the loop is what
    /// empties the queue); a full queue closes the connection (`overrun`).
    async fn send(&self, v: Value) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.out.try_send(v) {
            self.overrun
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    async fn reply_error(&self, id: Option<Value>, e: IrisError) {
        let v = self.error_value(id, &e);
        self.send(v).await;
    }

    /// An error as this protocol says it.
    fn error_value(&self, id: Option<Value>, e: &IrisError) -> Value {
        match self.proto {
            Protocol::Stream => {
                json!({"type": "error", "error": e.body(self.ctx.request_id(), now_ms())})
            }
            Protocol::JsonRpc => {
                json!({"jsonrpc": "2.0", "id": id.unwrap_or(Value::Null), "error": e.jsonrpc(None, now_ms())})
            }
        }
    }

    async fn on_text(&mut self, text: &str, per_second: u32) {
        let parsed: Result<Value, _> = serde_json::from_str(text);
        let id = parsed.as_ref().ok().and_then(|v| v.get("id").cloned());
        // A JSON-RPC notification is answered by nothing, errors included
        // (JSON-RPC 2.0 section 4.1).
        let notification = self.proto == Protocol::JsonRpc
            && parsed
                .as_ref()
                .is_ok_and(|v| v.is_object() && v.get("id").is_none());
        // A batch counts as many messages as it has members.
        let weight = match &parsed {
            Ok(Value::Array(members)) if self.proto == Protocol::JsonRpc => members.len().max(1),
            _ => 1,
        };
        let refusal = if self.finishing {
            Some(IrisError::new(
                ErrorKind::ServiceUnavailable,
                "the server is shutting down",
            ))
        } else if self.over_rate(per_second, weight) {
            Some(IrisError::new(
                ErrorKind::RateLimited,
                format!("more than {per_second} messages per second"),
            ))
        } else {
            None
        };
        if let Some(e) = refusal {
            if notification {
                return;
            }
            return self.reply_error(id, e).await;
        }
        // Nothing is carried out for a credential that no longer stands;
        // a changed role applies from this message on.
        self.recheck();
        if self.ended.is_some() {
            return;
        }
        let msg = match parsed {
            Ok(v) => v,
            Err(e) => {
                let e = IrisError::new(ErrorKind::MalformedJson, format!("not JSON: {e}"));
                return self.reply_error(None, e).await;
            }
        };
        match (self.proto, msg) {
            // JSON-RPC takes batches and answers other shapes itself (-32600).
            (Protocol::JsonRpc, msg) if self.authenticated => self.on_rpc(msg).await,
            (_, Value::Object(m)) if !self.authenticated => self.authenticate(id, m).await,
            (Protocol::Stream, Value::Object(m)) => self.on_stream_message(m).await,
            (_, _) => {
                let e = if self.authenticated {
                    IrisError::validation("message", "must be a JSON object")
                } else {
                    IrisError::new(
                        ErrorKind::Unauthorized,
                        "authenticate first, with one JSON object",
                    )
                };
                self.reply_error(None, e).await
            }
        }
    }

    /// The first message of a connection opened without a credential:
    /// `{"type":"auth","token":…}` or JSON-RPC `auth` with `params.token`.
    async fn authenticate(&mut self, id: Option<Value>, msg: serde_json::Map<String, Value>) {
        let token = match self.proto {
            Protocol::Stream => (msg.get("type").and_then(Value::as_str) == Some("auth"))
                .then(|| msg.get("token").and_then(Value::as_str))
                .flatten(),
            Protocol::JsonRpc => (msg.get("method").and_then(Value::as_str) == Some("auth"))
                .then(|| {
                    msg.get("params")
                        .and_then(|p| p.get("token"))
                        .and_then(Value::as_str)
                })
                .flatten(),
        };
        let Some(token) = token else {
            let e = IrisError::new(
                ErrorKind::Unauthorized,
                "authenticate first: send {\"type\":\"auth\",\"token\":\"…\"} (JSON-RPC: method `auth`, params.token)",
            );
            return self.reply_error(id, e).await;
        };
        match held::late_login(&self.state, &self.ctx.origin, token).await {
            Ok(h) => {
                // Now an authenticated connection: counted as one.
                let limit = self.state.iris.config().api.websocket.max_connections;
                if self.state.ws_connections.fetch_add(1, Ordering::AcqRel) >= limit {
                    self.state.ws_connections.fetch_sub(1, Ordering::AcqRel);
                    let e = IrisError::new(
                        ErrorKind::ServiceUnavailable,
                        "too many WebSocket connections",
                    );
                    self.ended = Some(e);
                    return;
                }
                self.state.ws_pending.fetch_sub(1, Ordering::AcqRel);
                let p = h.principal().clone();
                let who = json!({"authenticated": true, "name": p.name, "kind": p.kind_name(), "scopes": p.scopes});
                self.ctx.principal = p;
                self.authenticated = true;
                self.held = Some(h);
                let v = match self.proto {
                    Protocol::Stream => json!({"type": "authenticated", "principal": who}),
                    Protocol::JsonRpc => {
                        json!({"jsonrpc": "2.0", "id": id.unwrap_or(Value::Null), "result": who})
                    }
                };
                self.send(v).await;
            }
            Err(e) => self.reply_error(id, e).await,
        }
    }
}

/// The last turns a connection followed itself. Kept after a turn ends, as
/// the subscription may still hold some of its events.
#[derive(Default)]
struct Followed {
    ids: HashSet<String>,
    order: std::collections::VecDeque<String>,
}

impl Followed {
    const KEEP: usize = 1024;

    fn add(&mut self, id: &str) {
        if self.ids.insert(id.to_owned()) {
            self.order.push_back(id.to_owned());
            if self.order.len() > Self::KEEP
                && let Some(old) = self.order.pop_front()
            {
                self.ids.remove(&old);
            }
        }
    }

    fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }
}
