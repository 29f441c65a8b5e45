//! Socket.IO at `/socket.io` (the original Iris plans' event API, seed 001),
//! socketioxide's tower service mounted behind the gate like every route.
//! A thin adapter: sends go through the core's `send_and_follow` (the
//! checks and audit of `quick_message`), room permissions through
//! `Iris::may_watch`, events come from the bus ([`rooms`]).
//!
//! - Authentication in the handshake, `auth: {token}` (or the gate's
//!   `Authorization` header), through the same code as the WebSockets; a
//!   bad or missing one is refused with `connect_error` and its reason.
//! - Events: `cache:subscribe` / `cache:unsubscribe {sessionId}` →
//!   `cache:message {sessionId, message}`; `process:subscribe` /
//!   `process:unsubscribe {team}` → `process:spawned {team, pid}`,
//!   `process:terminated {team}`, `process:error {team, error}` and the
//!   team's `approval:*`, `job:*` and `turn:*`; `health:check` every
//!   `api.healthBroadcastInterval` to the `system` room (and as the answer
//!   to a `health:check` of the client's); `tell:start {toTeam, message,
//!   fromTeam}` → `tell:chunk {messageId, chunk}` … `tell:complete
//!   {messageId, response}` or `tell:error {messageId, error}`.
//! - Acknowledgements answer `{ok: true, …}`, or the error body of DESIGN
//!   section 6; a failure is also emitted as `error` with the body.
//! - Limits like the other WebSockets: message size
//!   (`api.websocket.maxMessageBytes`), events per second
//!   (`api.websocket.messagesPerSecond`), connections (counted with the
//!   WebSockets against `api.websocket.maxConnections`).
//!
//! The adapter (which node a room lives on) is chosen in [`build`] only:
//! the in-memory one today; socketioxide's Redis adapter is the path to
//! many nodes.

mod rooms;

use rooms::Sio;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use iris_core::{Ctx, ErrorKind, IrisError, TurnEvent, now_ms};
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Data, Event, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;

use crate::gate::caller::Caller;
use crate::gate::held::{self, Held};
use crate::lifecycle::FINISHING;
use crate::state::AppState;

/// What a socket carries: its caller and its event budget.
struct Conn {
    ctx: Mutex<Ctx>,
    /// Its credential, checked again before each event and whenever
    /// credentials change (`None`: the open caller of `requireAuth: false`).
    held: Mutex<Option<Held>>,
    /// Events per second it may send (`api.websocket.messagesPerSecond`).
    limit: u32,
    /// Start of the current one-second window, and events in it.
    window: Mutex<(Instant, u32)>,
}

/// The routes: the service at `/socket.io/` (Engine.IO's path).
pub fn routes(state: &AppState) -> Router<AppState> {
    let (svc, io) = builder(state).build_svc();
    let sio = Sio::new(state.clone(), io.clone());
    let on_connect = move |s: SocketRef| connected(sio.clone(), s);
    let authenticate = {
        let state = state.clone();
        move |s: SocketRef, auth: TryData<Value>| authenticate(state.clone(), s, auth.0.ok())
    };
    io.ns("/", on_connect.with(authenticate));
    // Open sockets end when the server stops.
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let lifecycle = state.lifecycle.clone();
        runtime.spawn(async move {
            lifecycle.reached(FINISHING).await;
            io.close().await;
        });
    }
    Router::new()
        .route_service("/socket.io/", svc.clone())
        .route_service("/socket.io", svc)
}

/// The Socket.IO server's configuration: the one place that chooses the
/// adapter (the in-memory one; `with_adapter` takes socketioxide's Redis
/// adapter for many nodes) and the engine's limits.
fn builder(state: &AppState) -> socketioxide::SocketIoBuilder {
    let ws = &state.iris.config().api.websocket;
    SocketIo::builder()
        .req_path("/socket.io")
        .max_payload(ws.max_message_bytes as u64)
        .ping_interval(Duration::from_millis(ws.ping_interval.max(1_000)))
        .connect_timeout(Duration::from_millis(ws.auth_timeout.max(1_000)))
}

/// The connect middleware: who the socket is, or why it may not connect.
async fn authenticate(state: AppState, s: SocketRef, auth: Option<Value>) -> Result<(), String> {
    let caller = s
        .req_parts()
        .extensions
        .get::<Caller>()
        .cloned()
        .ok_or("the request did not pass the gate")?;
    let token = auth
        .as_ref()
        .and_then(|a| a.get("token"))
        .and_then(Value::as_str);
    let auth = state.iris.auth();
    let held = match (token, &caller.credential) {
        (Some(token), _) => Some(
            held::late_login(&state, &caller.origin, token)
                .await
                .map_err(|e| e.message)?,
        ),
        (None, Some(c)) => Some(Held::new(auth, c.clone()).map_err(|e| e.message)?),
        (None, None) => None,
    };
    let principal = match (&held, caller.principal.clone()) {
        (Some(h), _) => h.principal().clone(),
        (None, Some(p)) => p,
        (None, None) if !state.iris.config().api.require_auth => state.open.clone(),
        (None, None) => {
            return Err("authentication required: connect with auth: {token: \"<API key or access token>\"}".into());
        }
    };
    let limit = state.iris.config().api.websocket.max_connections;
    if state.ws_connections.fetch_add(1, Ordering::AcqRel) >= limit {
        state.ws_connections.fetch_sub(1, Ordering::AcqRel);
        return Err(format!(
            "too many connections (api.websocket.maxConnections = {limit})"
        ));
    }
    s.extensions.insert(Arc::new(Conn {
        ctx: Mutex::new(Ctx::new(principal, caller.origin)),
        held: Mutex::new(held),
        limit: state.iris.config().api.websocket.messages_per_second.max(1),
        window: Mutex::new((Instant::now(), 0)),
    }));
    Ok(())
}

impl Conn {
    /// The caller as it stands now; `Err` (and the socket told and
    /// disconnected) when its credential no longer stands.
    fn check(&self, s: &SocketRef, auth: &iris_core::auth::Auth) -> Result<Ctx, ()> {
        let checked = match self.held.lock() {
            Ok(mut held) => match held.as_mut() {
                Some(h) => h.check(auth).map(Some),
                None => Ok(None),
            },
            Err(_) => Ok(None),
        };
        let mut ctx = self.ctx.lock().map_err(drop)?;
        match checked {
            Ok(Some(p)) => ctx.principal = p,
            Ok(None) => {}
            Err(e) => {
                drop(ctx);
                end(s, &e);
                return Err(());
            }
        }
        Ok(ctx.clone())
    }
}

/// A socket whose credential stopped standing: `error` with the reason,
/// then disconnected.
fn end(s: &SocketRef, e: &IrisError) {
    let _ = s.emit("error", &e.body(None, now_ms()));
    let _ = s.clone().disconnect();
}

/// Watch a socket's credential while it is connected: disconnected within
/// a second of its end (revoked, expired, disabled, signed out).
fn watch_credential(sio: &Arc<Sio>, s: &SocketRef) {
    let Some(c) = conn(s) else { return };
    if c.held.lock().map(|h| h.is_none()).unwrap_or(true) {
        return;
    }
    let (s, auth) = (s.clone(), sio.state.iris.auth().clone());
    tokio::spawn(async move {
        let mut changes = auth.changes();
        loop {
            let deadline = c
                .held
                .lock()
                .ok()
                .and_then(|h| h.as_ref().and_then(Held::deadline));
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                () = held::until(deadline) => {}
            }
            if !s.connected() || c.check(&s, &auth).is_err() {
                return;
            }
        }
    });
}

fn conn(s: &SocketRef) -> Option<Arc<Conn>> {
    s.extensions.get::<Arc<Conn>>()
}

/// A connected socket: the `system` room if it may read it, and its events.
async fn connected(sio: Arc<Sio>, s: SocketRef) {
    let Some(c) = conn(&s) else {
        let _ = s.disconnect();
        return;
    };
    let Ok(ctx) = c.check(&s, sio.state.iris.auth()) else {
        return;
    };
    if sio.state.iris.may_watch(&ctx, "system").await.is_ok() {
        s.join("system");
    }
    watch_credential(&sio, &s);
    for (event, room_of) in [
        (
            "cache:subscribe",
            rooms::session_room as fn(&Value) -> Result<String, IrisError>,
        ),
        ("process:subscribe", rooms::team_room),
    ] {
        let sio = sio.clone();
        s.on(
            event,
            move |s: SocketRef, data: TryData<Value>, ack: AckSender| {
                subscribe(sio.clone(), s, data.0.ok(), ack, room_of, true)
            },
        );
    }
    for (event, room_of) in [
        (
            "cache:unsubscribe",
            rooms::session_room as fn(&Value) -> Result<String, IrisError>,
        ),
        ("process:unsubscribe", rooms::team_room),
    ] {
        let sio = sio.clone();
        s.on(
            event,
            move |s: SocketRef, data: TryData<Value>, ack: AckSender| {
                subscribe(sio.clone(), s, data.0.ok(), ack, room_of, false)
            },
        );
    }
    {
        let sio = sio.clone();
        s.on(
            "tell:start",
            move |s: SocketRef, data: TryData<Value>, ack: AckSender| {
                tell(sio.clone(), s, data.0.ok(), ack)
            },
        );
    }
    {
        let sio = sio.clone();
        s.on("health:check", move |s: SocketRef, ack: AckSender| {
            health(sio.clone(), s, ack)
        });
    }
    let auth = sio.state.iris.auth().clone();
    s.on_fallback(
        move |s: SocketRef, Event(name): Event, ack: AckSender, _: Data<Value>| {
            let auth = auth.clone();
            async move {
                if let Some((_, ack)) = admit(&s, ack, &auth) {
                    let e = IrisError::new(
                        ErrorKind::MethodNotFound,
                        format!("unknown event `{name}`"),
                    )
                    .with_details(json!({"event": name}));
                    fail(&s, ack, e);
                }
            }
        },
    );
    s.on_disconnect(move |s: SocketRef| {
        sio.state.ws_connections.fetch_sub(1, Ordering::AcqRel);
        // Its rooms are left after this handler: release the ones it was
        // the last in once that happened.
        let joined: Vec<String> = s.rooms().iter().map(|r| r.to_string()).collect();
        let sio = sio.clone();
        async move {
            tokio::task::yield_now().await;
            for room in joined {
                sio.release(&room);
            }
        }
    });
}

/// The socket's caller, if this event is within its budget and its
/// credential still stands; else the refusal is sent and `None` returned.
fn admit(s: &SocketRef, ack: AckSender, auth: &iris_core::auth::Auth) -> Option<(Ctx, AckSender)> {
    let c = conn(s)?;
    let count = {
        let Ok(mut w) = c.window.lock() else {
            return None;
        };
        if w.0.elapsed() >= Duration::from_secs(1) {
            *w = (Instant::now(), 0);
        }
        w.1 += 1;
        w.1
    };
    let limit = c.limit;
    if count > limit {
        let e = IrisError::new(
            ErrorKind::RateLimited,
            format!("more than {limit} events per second"),
        );
        fail(s, ack, e);
        return None;
    }
    let ctx = c.check(s, auth).ok()?;
    Some((ctx, ack))
}

/// Answer a failed event: the error body as the acknowledgement, and as
/// an `error` event.
fn fail(s: &SocketRef, ack: AckSender, e: IrisError) {
    let body = e.body(None, now_ms());
    let _ = s.emit("error", &body);
    let _ = ack.send(&body);
}

/// `cache:subscribe` and friends: join (or leave) the room the data names,
/// if the caller may read it.
async fn subscribe(
    sio: Arc<Sio>,
    s: SocketRef,
    data: Option<Value>,
    ack: AckSender,
    room_of: fn(&Value) -> Result<String, IrisError>,
    join: bool,
) {
    let Some((ctx, ack)) = admit(&s, ack, sio.state.iris.auth()) else {
        return;
    };
    let room = match room_of(&data.unwrap_or(Value::Null)) {
        Ok(r) => r,
        Err(e) => return fail(&s, ack, e),
    };
    if !join {
        s.leave(room.clone());
        sio.release(&room);
        let _ = ack.send(&json!({"ok": true, "room": room, "subscribed": false}));
        return;
    }
    let room = match sio.state.iris.may_watch(&ctx, &room).await {
        Ok(r) => r,
        Err(e) => return fail(&s, ack, e),
    };
    // Joined first, so a socket leaving at the same time does not stop the
    // feed this one needs (`release` looks for members under the same lock).
    s.join(room.clone());
    sio.ensure(&room);
    let _ = ack.send(&json!({"ok": true, "room": room, "subscribed": true}));
}

/// `tell:start`: send a message and stream its turn to this socket.
async fn tell(sio: Arc<Sio>, s: SocketRef, data: Option<Value>, ack: AckSender) {
    let Some((ctx, ack)) = admit(&s, ack, sio.state.iris.auth()) else {
        return;
    };
    let Some(params) = data.filter(Value::is_object) else {
        return fail(
            &s,
            ack,
            IrisError::validation("data", "must be an object {toTeam, message, fromTeam?}"),
        );
    };
    let mut follower = match sio.state.iris.send_and_follow(&ctx, params).await {
        Ok(f) => f,
        Err(e) => return fail(&s, ack, e),
    };
    let id = follower.message_id().to_owned();
    // The first event names the turn's conversation.
    let start = match follower.next().await {
        Some(e @ TurnEvent::Start { .. }) => e.data(),
        _ => json!({"messageId": id}),
    };
    let _ = ack.send(&json!({"ok": true, "messageId": id, "team": start["team"], "sessionId": start["sessionId"]}));
    tokio::spawn(async move {
        while let Some(event) = follower.next().await {
            let (name, body) = match &event {
                TurnEvent::Start { .. } => continue,
                TurnEvent::Chunk { data, seq } => (
                    "tell:chunk",
                    json!({"messageId": id, "chunk": data.get("text").cloned().unwrap_or(Value::Null), "seq": seq}),
                ),
                TurnEvent::ToolUse { data, seq } => (
                    "tell:tool_use",
                    json!({"messageId": id, "toolUse": data, "seq": seq}),
                ),
                TurnEvent::ToolResult { data, seq } => (
                    "tell:tool_result",
                    json!({"messageId": id, "toolResult": data, "seq": seq}),
                ),
                TurnEvent::Plan { data, seq } => (
                    "tell:plan",
                    json!({"messageId": id, "plan": data["entries"], "seq": seq}),
                ),
                TurnEvent::Complete { .. } => ("tell:complete", event.data()),
                TurnEvent::Error { error, .. } => {
                    let mut body = event.data();
                    body["error"] = error.body(None, now_ms());
                    ("tell:error", body)
                }
            };
            if s.emit(name, &body).is_err() {
                // The socket is gone; the turn goes on.
                return;
            }
        }
    });
}

/// `health:check` from the client: the same report the `system` room gets,
/// to a caller who may be in that room (server-wide figures).
async fn health(sio: Arc<Sio>, s: SocketRef, ack: AckSender) {
    if let Some((ctx, ack)) = admit(&s, ack, sio.state.iris.auth()) {
        match sio.state.iris.may_watch(&ctx, "system").await {
            Ok(_) => {
                let _ = ack.send(&rooms::health_report(&sio.state));
            }
            Err(e) => fail(&s, ack, e),
        }
    }
}
